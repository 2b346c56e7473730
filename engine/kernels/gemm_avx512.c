/*
 * gemm_avx512.c - packing and the 14 x 32 register-tile kernel (see
 * gemm_avx512.h).  Compiled with -mavx512f and friends; nothing here runs
 * unless cpu_has_avx512().
 *
 * Packed layouts:
 *   B: for each KC block (p0 = 0, KC, ...): for each panel j of NR columns:
 *      kc rows of NR floats (columns past n are zero).
 *   A: for each sliver s of MR rows: kc columns of MR floats (rows past m are
 *      zero), so the kernel reads one float per row per k, in order.
 */
#include "gemm_avx512.h"

#include <immintrin.h>
#include <string.h>

#include "gemm_tile.h"

_Static_assert(GEMM_NR == 32, "gemm_tile.h stores 32-column panels");

static int panels_of(int n)
{
    return (n + GEMM_NR - 1) / GEMM_NR;
}

size_t gemm_packed_b_floats(int n, int k)
{
    return (size_t)panels_of(n) * GEMM_NR * (size_t)k;
}

size_t gemm_packed_b_block(int n, int p0)
{
    return (size_t)p0 * panels_of(n) * GEMM_NR;
}

size_t gemm_packed_a_floats(int m)
{
    return (size_t)((m + GEMM_MR - 1) / GEMM_MR) * GEMM_MR * GEMM_KC;
}

void gemm_pack_b_nt(float *dst, const float *w, size_t ldw, int n, int k)
{
    gemm_pack_b_nt_panels(dst, w, ldw, n, k, 0, panels_of(n));
}

void gemm_pack_b_nt_panels(float *dst, const float *w, size_t ldw, int n, int k, int j0, int j1)
{
    for (int p0 = 0; p0 < k; p0 += GEMM_KC) {
        int kc = k - p0 < GEMM_KC ? k - p0 : GEMM_KC;
        float *block = dst + gemm_packed_b_block(n, p0);
        for (int j = j0; j < j1; j++) {
            float *panel = block + (size_t)j * kc * GEMM_NR;
            for (int c = 0; c < GEMM_NR; c++) {
                int col = j * GEMM_NR + c;
                const float *src = w + (size_t)col * ldw + p0;
                for (int p = 0; p < kc; p++)
                    panel[(size_t)p * GEMM_NR + c] = col < n ? src[p] : 0.0f;
            }
        }
    }
}

void gemm_pack_b_nn(float *dst, const float *b, size_t ldb, int k, int n)
{
    gemm_pack_b_nn_panels(dst, b, ldb, k, n, 0, panels_of(n));
}

void gemm_pack_b_nn_panels(float *dst, const float *b, size_t ldb, int k, int n, int j0, int j1)
{
    for (int p0 = 0; p0 < k; p0 += GEMM_KC) {
        int kc = k - p0 < GEMM_KC ? k - p0 : GEMM_KC;
        float *block = dst + gemm_packed_b_block(n, p0);
        for (int j = j0; j < j1; j++) {
            float *panel = block + (size_t)j * kc * GEMM_NR;
            __mmask16 m0, m1;
            gemm_panel_masks(n, j, &m0, &m1);
            for (int p = 0; p < kc; p++) {
                const float *src = b + (size_t)(p0 + p) * ldb + (size_t)j * GEMM_NR;
                _mm512_storeu_ps(panel + (size_t)p * GEMM_NR, _mm512_maskz_loadu_ps(m0, src));
                _mm512_storeu_ps(panel + (size_t)p * GEMM_NR + 16,
                                 _mm512_maskz_loadu_ps(m1, src + 16));
            }
        }
    }
}

void gemm_pack_a_block(float *dst, const float *a, size_t lda, int m, int s0, int s1, int p0,
                       int kc)
{
    for (int s = s0; s < s1; s++) {
        float *sliver = dst + (size_t)s * kc * GEMM_MR;
        int r0 = s * GEMM_MR;
        int rows = m - r0 < GEMM_MR ? m - r0 : GEMM_MR;
        /* 16 columns of every row at a time: contiguous loads, stride-MR stores */
        int p = 0;
        for (; p + 16 <= kc; p += 16) {
            for (int i = 0; i < rows; i++) {
                float tmp[16];
                _mm512_storeu_ps(tmp, _mm512_loadu_ps(a + (size_t)(r0 + i) * lda + p0 + p));
                for (int q = 0; q < 16; q++)
                    sliver[(size_t)(p + q) * GEMM_MR + i] = tmp[q];
            }
            for (int i = rows; i < GEMM_MR; i++)
                for (int q = 0; q < 16; q++)
                    sliver[(size_t)(p + q) * GEMM_MR + i] = 0.0f;
        }
        for (; p < kc; p++)
            for (int i = 0; i < GEMM_MR; i++)
                sliver[(size_t)p * GEMM_MR + i] =
                    i < rows ? a[(size_t)(r0 + i) * lda + p0 + p] : 0.0f;
    }
}

void gemm_pack_a_block_t(float *dst, const float *a, size_t lda, int m, int s0, int s1, int p0,
                         int kc)
{
    for (int s = s0; s < s1; s++) {
        float *sliver = dst + (size_t)s * kc * GEMM_MR;
        int r0 = s * GEMM_MR;
        int rows = m - r0 < GEMM_MR ? m - r0 : GEMM_MR;
        /* column p of the sliver is MR consecutive floats of source row p0 + p */
        __mmask16 keep = (__mmask16)((1u << rows) - 1);
        const float *src = a + (size_t)p0 * lda + r0;
        for (int p = 0; p < kc; p++)
            _mm512_mask_storeu_ps(sliver + (size_t)p * GEMM_MR, (__mmask16)((1u << GEMM_MR) - 1),
                                  _mm512_maskz_loadu_ps(keep, src + (size_t)p * lda));
    }
}

/* The register tile: rows [0, MR) of C (MR a constant in every caller, so
 * the accumulators stay in registers) times one NR-column panel, masked to
 * the panel's valid columns. */
static inline __attribute__((always_inline)) void
tile(const int MR, const float *ap, const float *bp, int kc, float *c, size_t ldc,
     __mmask16 m0, __mmask16 m1, bool load_c, const float *const *bias_rows, size_t bias_col,
     gemm_post post)
{
    __m512 acc0[GEMM_MR], acc1[GEMM_MR];
    /* fully unrolled over the tile's rows so the accumulators live in zmm registers */
#pragma GCC unroll 14
    for (int i = 0; i < MR; i++) {
        acc0[i] = _mm512_setzero_ps();
        acc1[i] = _mm512_setzero_ps();
    }
    for (int p = 0; p < kc; p++) {
        __m512 b0 = _mm512_load_ps(bp);
        __m512 b1 = _mm512_load_ps(bp + 16);
#pragma GCC unroll 14
        for (int i = 0; i < MR; i++) {
            __m512 av = _mm512_set1_ps(ap[i]);
            acc0[i] = _mm512_fmadd_ps(av, b0, acc0[i]);
            acc1[i] = _mm512_fmadd_ps(av, b1, acc1[i]);
        }
        ap += GEMM_MR;
        bp += GEMM_NR;
    }
#pragma GCC unroll 14
    for (int i = 0; i < MR; i++)
        gemm_tile_store_row(c + (size_t)i * ldc, acc0[i], acc1[i], m0, m1, load_c,
                            bias_rows != NULL,
                            gemm_tile_bias(bias_rows, i, bias_col), post);
}

#define TILE_CASE(R)                                                                   \
    case R:                                                                            \
        tile(R, ap, bp, kc, c, ldc, m0, m1, load_c, bias_rows, bias_col, post);        \
        break;

/* One tile of `rows` (1..MR) rows: a constant-row kernel per case. */
static void tile_rows(int rows, const float *ap, const float *bp, int kc, float *c, size_t ldc,
                      __mmask16 m0, __mmask16 m1, bool load_c, const float *const *bias_rows,
                      size_t bias_col, gemm_post post)
{
    GEMM_TILE_SWITCH(rows, TILE_CASE)
}

void gemm_block_panels(const float *ap, const float *bp_block, int m, int n, int kc, int j0,
                       int j1, float *c, size_t ldc, const gemm_seed *seed, gemm_post post)
{
    /* each 32 KB B micro-panel stays in L1 across the slivers of A */
    for (int j = j0; j < j1; j++) {
        __mmask16 m0, m1;
        gemm_panel_masks(n, j, &m0, &m1);
        const float *bp = bp_block + (size_t)j * kc * GEMM_NR;
        for (int r = 0; r < m; r += GEMM_MR) {
            int rows = m - r < GEMM_MR ? m - r : GEMM_MR;
            const float *ap_s = ap + (size_t)(r / GEMM_MR) * kc * GEMM_MR;
            tile_rows(rows, ap_s, bp, kc, c + (size_t)r * ldc + (size_t)j * GEMM_NR, ldc, m0, m1,
                      seed->load_c, seed->bias_rows ? seed->bias_rows + r : NULL,
                      (size_t)j * GEMM_NR, post);
        }
    }
}

void gemm_rows_dot(float *y, size_t ldy, const float *x, size_t ldx, const float *w,
                   const float *bias, int m, int k, int j0, int j1)
{
    for (int j = j0; j < j1; j++) {
        const float *wr = w + (size_t)j * k;
        for (int r = 0; r < m; r++) {
            const float *xr = x + (size_t)r * ldx;
            __m512 acc = _mm512_setzero_ps();
            int p = 0;
            for (; p + 16 <= k; p += 16)
                acc = _mm512_fmadd_ps(_mm512_loadu_ps(xr + p), _mm512_loadu_ps(wr + p), acc);
            if (p < k) {
                __mmask16 tail = (__mmask16)((1u << (k - p)) - 1);
                acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, xr + p),
                                      _mm512_maskz_loadu_ps(tail, wr + p), acc);
            }
            y[(size_t)r * ldy + j] = _mm512_reduce_add_ps(acc) + (bias ? bias[j] : 0.0f);
        }
    }
}

void gemm_pack_b_nn_from_nt(float *dst, const float *wp, int n, int k, int j0, int j1)
{
    int out_panels = panels_of(k);
    for (int p0 = 0; p0 < n; p0 += GEMM_KC) { /* blocks over W's rows: dx's depth */
        int kc = n - p0 < GEMM_KC ? n - p0 : GEMM_KC;
        float *block = dst + gemm_packed_b_block(k, p0);
        for (int j = j0; j < j1 && j < out_panels; j++) {
            float *panel = block + (size_t)j * kc * GEMM_NR;
            for (int c = 0; c < GEMM_NR; c++) {
                int col = j * GEMM_NR + c; /* a column of W: an output of dx */
                if (col >= k) {
                    for (int p = 0; p < kc; p++)
                        panel[(size_t)p * GEMM_NR + c] = 0.0f;
                    continue;
                }
                /* W[r][col] in the forward packing: its KC block over W's
                 * columns, its 32-row panel, row r % 32 within it */
                int q0 = col / GEMM_KC * GEMM_KC, qc = k - q0 < GEMM_KC ? k - q0 : GEMM_KC;
                const float *src = wp + gemm_packed_b_block(n, q0) + (size_t)(col - q0) * GEMM_NR;
                for (int p = 0; p < kc; p++) {
                    int r = p0 + p;
                    panel[(size_t)p * GEMM_NR + c] =
                        src[(size_t)(r / GEMM_NR) * qc * GEMM_NR + r % GEMM_NR];
                }
            }
        }
    }
}
