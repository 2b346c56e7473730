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

#ifdef VIT_BF16_TILE_NATIVE
#define BLOCK_PANELS gemm_bf16_block_panels_native

/* acc += the pair products of a and b, lane by lane. */
static inline __m512 pair_dot(__m512 acc, __m512i a, __m512i b)
{
    return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
}
#else
#define BLOCK_PANELS gemm_bf16_block_panels_emulated

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
 * 32-column panel, pairs of k at a time. */
static inline __attribute__((always_inline)) void
tile(const int MR, const uint32_t *ap, const uint16_t *bp, int pairs, float *c, size_t ldc,
     __mmask16 m0, __mmask16 m1, bool load_c, const float *const *bias_rows, size_t bias_col,
     gemm_post post)
{
    __m512 acc0[GEMM_MR], acc1[GEMM_MR];
#pragma GCC unroll 14
    for (int i = 0; i < MR; i++) {
        acc0[i] = _mm512_setzero_ps();
        acc1[i] = _mm512_setzero_ps();
    }
    for (int q = 0; q < pairs; q++) {
        __m512i b0 = _mm512_load_si512(bp);
        __m512i b1 = _mm512_load_si512(bp + 32);
#pragma GCC unroll 14
        for (int i = 0; i < MR; i++) {
            __m512i av = _mm512_set1_epi32((int)ap[i]);
            acc0[i] = pair_dot(acc0[i], av, b0);
            acc1[i] = pair_dot(acc1[i], av, b1);
        }
        ap += GEMM_MR;
        bp += 2 * GEMM_NR;
    }
#pragma GCC unroll 14
    for (int i = 0; i < MR; i++)
        gemm_tile_store_row(c + (size_t)i * ldc, acc0[i], acc1[i], m0, m1, load_c,
                            bias_rows != NULL,
                            bias_rows && bias_rows[i] ? bias_rows[i] + bias_col : NULL, post);
}

#define TILE_CASE(R)                                                                   \
    case R:                                                                            \
        tile(R, ap, bp, pairs, c, ldc, m0, m1, load_c, bias_rows, bias_col, post);     \
        break;

static void tile_rows(int rows, const uint32_t *ap, const uint16_t *bp, int pairs, float *c,
                      size_t ldc, __mmask16 m0, __mmask16 m1, bool load_c,
                      const float *const *bias_rows, size_t bias_col, gemm_post post)
{
    GEMM_TILE_SWITCH(rows, TILE_CASE)
}

void BLOCK_PANELS(const void *ap_block, const void *bp_block, int m, int n, int kc, int j0,
                  int j1, float *c, size_t ldc, const gemm_seed *seed, gemm_post post)
{
    const uint32_t *ap = ap_block;
    const uint16_t *bp_all = bp_block;
    int pairs = (kc + 1) / 2;
    for (int j = j0; j < j1; j++) {
        __mmask16 m0, m1;
        gemm_panel_masks(n, j, &m0, &m1);
        const uint16_t *bp = bp_all + (size_t)j * pairs * 2 * GEMM_NR;
        for (int r = 0; r < m; r += GEMM_MR) {
            int rows = m - r < GEMM_MR ? m - r : GEMM_MR;
            tile_rows(rows, ap + (size_t)(r / GEMM_MR) * pairs * GEMM_MR, bp, pairs,
                      c + (size_t)r * ldc + (size_t)j * GEMM_NR, ldc, m0, m1, seed->load_c,
                      seed->bias_rows ? seed->bias_rows + r : NULL, (size_t)j * GEMM_NR, post);
        }
    }
}
