/*
 * gemm_tile.h - the register tiles' shared epilogue: how a finished tile row
 * of accumulators reaches C (engine-internal, header-only).
 *
 * The fp32 (gemm_avx512.c) and bf16 (gemm_bf16_tile.c) kernels accumulate in
 * fp32 zmm registers alike, so they leave the tile the same way: add what C
 * holds (a bias seeded by the driver, or an earlier KC block), apply the
 * fused activation on the last block, store the panel's valid columns.
 * Include only from files compiled with the AVX-512 flags.
 */
#ifndef VIT_GEMM_TILE_H
#define VIT_GEMM_TILE_H

#include <immintrin.h>
#include <stddef.h>

#include "gemm.h"
#include "simd_avx512.h"

/* One quiet NaN for every NaN an activation gives: the GELU's operations
 * combine two NaNs, whose result's sign the compiler's operand order picks,
 * and each tile height is compiled apart, so an image's NaN output would
 * change sign with the row count of the batch it rides in. */
static inline __m512 gemm_tile_canonical_nan(__m512 v)
{
    __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    return _mm512_mask_mov_ps(v, nan, _mm512_castsi512_ps(_mm512_set1_epi32(0x7fc00000)));
}

static inline __m512 gemm_tile_post(__m512 v, gemm_post post)
{
    switch (post) {
    case GEMM_POST_GELU:
        return gemm_tile_canonical_nan(simd_gelu_ps(v));
    case GEMM_POST_QUICK_GELU:
        return gemm_tile_canonical_nan(simd_quick_gelu_ps(v));
    default:
        return v;
    }
}

/* One tile row of 32 columns (two halves, masked to the panel's valid
 * columns m0, m1) as it leaves the tile: v plus a seed, then post.  The
 * seed is what C holds at row when load_c, plus the panel's bias when bias
 * is not NULL (C + bias first, as a residual plus its bias); a row that is
 * `seeded` with neither adds zero, as C set to zero and then added to did
 * (-0 becomes +0). */
static inline __attribute__((always_inline)) void
gemm_tile_row(const float *row, __m512 *v0, __m512 *v1, __mmask16 m0, __mmask16 m1, bool load_c,
              bool seeded, const float *bias, gemm_post post)
{
    if (load_c || seeded) {
        __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
        if (load_c) {
            s0 = _mm512_maskz_loadu_ps(m0, row);
            s1 = _mm512_maskz_loadu_ps(m1, row + 16);
        }
        if (bias && load_c) {
            s0 = _mm512_add_ps(s0, _mm512_maskz_loadu_ps(m0, bias));
            s1 = _mm512_add_ps(s1, _mm512_maskz_loadu_ps(m1, bias + 16));
        } else if (bias) {
            s0 = _mm512_maskz_loadu_ps(m0, bias);
            s1 = _mm512_maskz_loadu_ps(m1, bias + 16);
        }
        *v0 = _mm512_add_ps(*v0, s0);
        *v1 = _mm512_add_ps(*v1, s1);
    }
    if (post != GEMM_POST_NONE) {
        *v0 = gemm_tile_post(*v0, post);
        *v1 = gemm_tile_post(*v1, post);
    }
}

/* Tile row i's bias from column col on, or NULL: bias_rows (per row, NULL
 * entries allowed) may itself be NULL. */
static inline const float *gemm_tile_bias(const float *const *bias_rows, int i, size_t col)
{
    return bias_rows && bias_rows[i] ? bias_rows[i] + col : NULL;
}

/* Stores one tile row at row: gemm_tile_row's value, valid columns only. */
static inline __attribute__((always_inline)) void
gemm_tile_store_row(float *row, __m512 v0, __m512 v1, __mmask16 m0, __mmask16 m1, bool load_c,
                    bool seeded, const float *bias, gemm_post post)
{
    gemm_tile_row(row, &v0, &v1, m0, m1, load_c, seeded, bias, post);
    _mm512_mask_storeu_ps(row, m0, v0);
    _mm512_mask_storeu_ps(row + 16, m1, v1);
}

/* Lanes of panel j's two 16-column halves that hold one of the n columns
 * (both kernels' panels are 32 columns wide). */
static inline void gemm_panel_masks(int n, int j, __mmask16 *m0, __mmask16 *m1)
{
    int cols = n - j * 32 < 32 ? n - j * 32 : 32;
    *m0 = (__mmask16)(cols >= 16 ? 0xffff : (1u << cols) - 1);
    *m1 = (__mmask16)(cols >= 32 ? 0xffff : cols <= 16 ? 0 : (1u << (cols - 16)) - 1);
}

/* switch (rows) over the 14 register-tile heights, CASE(R) per height, so
 * each case calls a tile whose row count is a compile-time constant. */
#define GEMM_TILE_SWITCH(rows, CASE)                                                    \
    switch (rows) {                                                                  \
        CASE(14) CASE(13) CASE(12) CASE(11) CASE(10) CASE(9) CASE(8)                 \
        CASE(7) CASE(6) CASE(5) CASE(4) CASE(3) CASE(2) CASE(1)                      \
    default:                                                                         \
        break;                                                                       \
    }

#endif
