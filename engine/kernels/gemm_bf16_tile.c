/*
 * gemm_bf16_tile.c - the 14 x 32 bf16 register tile (see gemm_bf16.h).
 *
 * Built twice by engine/kernels/meson.build: with -mavx512bf16 and
 * VIT_BF16_TILE_NATIVE defined (gemm_bf16_block_panels_native: one vdpbf16ps per
 * accumulator per pair of k), and without (..._emulated: the same pair
 * products as two fp32 FMAs).  Everything but the pair product is this one
 * source, so the emulated build, which runs on every AVX-512 CPU, tests the
 * native build's indexing, masking and epilogue too.
 *
 * vdpbf16ps adds the odd element's product first, then the even one's, each
 * rounded to fp32 (it also treats denormal inputs and results as zero); the
 * emulation keeps that order, and the products themselves are exact in fp32.
 */
#include "gemm_bf16.h"

#include <immintrin.h>

#include "gemm_tile.h"
#include "status.h"

#ifdef VIT_BF16_TILE_NATIVE
#define PANELS gemm_bf16_panels_native

/* acc += the pair products of a and b, lane by lane. */
static inline __m512 pair_dot(__m512 acc, __m512i a, __m512i b)
{
    return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
}
#else
#define PANELS gemm_bf16_panels_emulated

static inline __m512 pair_dot(__m512 acc, __m512i a, __m512i b)
{
    const __m512i high = _mm512_set1_epi32((int)0xffff0000u);
    __m512 a_odd = _mm512_castsi512_ps(_mm512_and_si512(a, high));
    __m512 b_odd = _mm512_castsi512_ps(_mm512_and_si512(b, high));
    __m512 a_even = _mm512_castsi512_ps(_mm512_slli_epi32(a, 16));
    __m512 b_even = _mm512_castsi512_ps(_mm512_slli_epi32(b, 16));
    acc = _mm512_fmadd_ps(a_odd, b_odd, acc);
    return _mm512_fmadd_ps(a_even, b_even, acc);
}
#endif

/* The register tile: MR rows (a constant in every caller) times one
 * 32-column panel, pairs of k at a time, every KC block of the kk values in
 * the same accumulators. */
static inline __attribute__((always_inline)) void
tile(const int MR, const bool NEXT, const uint32_t *ap, const uint16_t *bp, int n, int kk, int j,
     const gemm_bf16_dst *dst, size_t row, __mmask16 m0, __mmask16 m1, bool load_c,
     const float *const *bias_rows, gemm_post post)
{
    __m512 acc0[GEMM_MR], acc1[GEMM_MR];
#pragma GCC unroll 14
    for (int i = 0; i < MR; i++) {
        acc0[i] = _mm512_setzero_ps();
        acc1[i] = _mm512_setzero_ps();
    }
    for (int p = 0; p < kk; p += GEMM_BF16_KC) {
        int pairs = ((kk - p < GEMM_BF16_KC ? kk - p : GEMM_BF16_KC) + 1) / 2;
        const uint16_t *b = bp + gemm_bf16_packed_b_block(n, p) + (size_t)j * pairs * 2 * GEMM_NR;
        const uint32_t *a = ap + (size_t)p / 2 * GEMM_MR;
        for (int q = 0; q < pairs; q++) {
            __m512i b0 = _mm512_load_si512(b);
            __m512i b1 = _mm512_load_si512(b + 32);
#pragma GCC unroll 14
            for (int i = 0; i < MR; i++) {
                __m512i av = _mm512_set1_epi32((int)a[i]);
                acc0[i] = pair_dot(acc0[i], av, b0);
                acc1[i] = pair_dot(acc1[i], av, b1);
            }
            a += GEMM_MR;
            b += 2 * GEMM_NR;
        }
    }
    size_t col = (size_t)j * GEMM_NR;
    if (NEXT) {
        _Alignas(64) float vals[GEMM_MR][GEMM_NR];
#pragma GCC unroll 14
        for (int i = 0; i < MR; i++) {
            gemm_tile_row(NULL, &acc0[i], &acc1[i], m0, m1, false, bias_rows != NULL,
                          gemm_tile_bias(bias_rows, i, col), post);
            _mm512_store_ps(vals[i], _mm512_maskz_mov_ps(m0, acc0[i]));
            _mm512_store_ps(vals[i] + 16, _mm512_maskz_mov_ps(m1, acc1[i]));
        }
        gemm_bf16_pack_rows32(vals, MR, dst->next + row / GEMM_MR * dst->next_sliver_words, n, j);
        return;
    }
    float *c = dst->c + row * dst->ldc + col;
#pragma GCC unroll 14
    for (int i = 0; i < MR; i++)
        gemm_tile_store_row(c + (size_t)i * dst->ldc, acc0[i], acc1[i], m0, m1, load_c,
                            bias_rows != NULL,
                            gemm_tile_bias(bias_rows, i, col), post);
}

#define TILE_CASE(R)                                                                   \
    case R:                                                                            \
        tile(R, false, ap, bp, n, kk, j, dst, row, m0, m1, load_c, bias_rows, post);   \
        break;
#define TILE_NEXT_CASE(R)                                                              \
    case R:                                                                            \
        tile(R, true, ap, bp, n, kk, j, dst, row, m0, m1, load_c, bias_rows, post);    \
        break;

/* One function per store, so each inlined tile has one epilogue: with both,
 * gcc spilled accumulators in the pair loop. */
typedef void tile_rows_fn(int rows, const uint32_t *ap, const uint16_t *bp, int n, int kk, int j,
                          const gemm_bf16_dst *dst, size_t row, __mmask16 m0, __mmask16 m1,
                          bool load_c, const float *const *bias_rows, gemm_post post);

static void tile_rows(int rows, const uint32_t *ap, const uint16_t *bp, int n, int kk, int j,
                      const gemm_bf16_dst *dst, size_t row, __mmask16 m0, __mmask16 m1,
                      bool load_c, const float *const *bias_rows, gemm_post post)
{
    GEMM_TILE_SWITCH(rows, TILE_CASE)
}

static void tile_rows_next(int rows, const uint32_t *ap, const uint16_t *bp, int n, int kk,
                           int j, const gemm_bf16_dst *dst, size_t row, __mmask16 m0,
                           __mmask16 m1, bool load_c, const float *const *bias_rows,
                           gemm_post post)
{
    GEMM_TILE_SWITCH(rows, TILE_NEXT_CASE)
}

void PANELS(const uint32_t *ap, size_t a_sliver_words, const uint16_t *bp, int n, int kk, int m,
            int j0, int j1, const gemm_bf16_dst *dst, const gemm_seed *seed, gemm_post post)
{
    VIT_ASSERT(dst->c || !seed->load_c);
    tile_rows_fn *tiles = dst->c ? tile_rows : tile_rows_next;
    for (int j = j0; j < j1; j++) {
        __mmask16 m0, m1;
        gemm_panel_masks(n, j, &m0, &m1);
        for (int r = 0; r < m; r += GEMM_MR) {
            int rows = m - r < GEMM_MR ? m - r : GEMM_MR;
            tiles(rows, ap + (size_t)(r / GEMM_MR) * a_sliver_words, bp, n, kk, j, dst,
                  (size_t)r, m0, m1, seed->load_c, seed->bias_rows ? seed->bias_rows + r : NULL,
                  post);
        }
    }
}
