/*
 * gemm_bf16_simd.h - rounding 16 fp32 lanes to bf16 and turning 16 x 16
 * 32-bit blocks, shared by A's packing (gemm_bf16_pack.c) and the tile's
 * stores into a next product's packed A (gemm_bf16_tile.c).  Header-only;
 * include only from files compiled with the AVX-512 flags.
 *
 * Rounding is to nearest, ties to even, as vcvtne2ps2bf16 does; a NaN stays
 * a (quiet) NaN instead of rounding up into an infinity.  It is integer
 * arithmetic, not that instruction, so CPUs without avx512_bf16 round
 * identically and denormals are kept (vdpbf16ps then reads them as zero).
 */
#ifndef VIT_GEMM_BF16_SIMD_H
#define VIT_GEMM_BF16_SIMD_H

#include <immintrin.h>

/* 16 floats rounded to bf16, each in the high half of its 32-bit lane (the
 * low half is left over from the rounding). */
static inline __m512i bf16_round_high(__m512 x)
{
    __m512i u = _mm512_castps_si512(x);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i rounded = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    __m512i quiet = _mm512_or_si512(u, _mm512_set1_epi32(0x400000));
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    return _mm512_mask_mov_epi32(rounded, nan, quiet);
}

/* 16 floats rounded to bf16, as 16 uint16. */
static inline __m256i bf16_round16(__m512 x)
{
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(bf16_round_high(x), 16));
}

/* 32 consecutive values (lo: the first 16) rounded to bf16, as 16 pairs in
 * one vector: lane t holds values 2t and 2t + 1, the even one in the low
 * half. */
static inline __m512i bf16_pairs(__m512 lo, __m512 hi)
{
    return _mm512_inserti64x4(_mm512_castsi256_si512(bf16_round16(lo)), bf16_round16(hi), 1);
}

/* x[i][t] -> x[t][i] for 16 vectors of 16 32-bit lanes: pairs within each
 * 128-bit lane, then quads, then the lanes themselves. */
static inline void bf16_transpose16(__m512i x[16])
{
    __m512i a[16], b[16];
    for (int i = 0; i < 16; i += 2) {
        a[i] = _mm512_unpacklo_epi32(x[i], x[i + 1]);
        a[i + 1] = _mm512_unpackhi_epi32(x[i], x[i + 1]);
    }
    /* b[4m + e], 128-bit lane L: rows 4m..4m+3 at t = 4L + e */
    for (int m = 0; m < 16; m += 4) {
        b[m] = _mm512_unpacklo_epi64(a[m], a[m + 2]);
        b[m + 1] = _mm512_unpackhi_epi64(a[m], a[m + 2]);
        b[m + 2] = _mm512_unpacklo_epi64(a[m + 1], a[m + 3]);
        b[m + 3] = _mm512_unpackhi_epi64(a[m + 1], a[m + 3]);
    }
    for (int e = 0; e < 4; e++) {
        __m512i c0 = _mm512_shuffle_i32x4(b[e], b[4 + e], 0x88); /* lanes 0, 2 */
        __m512i c1 = _mm512_shuffle_i32x4(b[e], b[4 + e], 0xdd); /* lanes 1, 3 */
        __m512i d0 = _mm512_shuffle_i32x4(b[8 + e], b[12 + e], 0x88);
        __m512i d1 = _mm512_shuffle_i32x4(b[8 + e], b[12 + e], 0xdd);
        x[e] = _mm512_shuffle_i32x4(c0, d0, 0x88);
        x[4 + e] = _mm512_shuffle_i32x4(c1, d1, 0x88);
        x[8 + e] = _mm512_shuffle_i32x4(c0, d0, 0xdd);
        x[12 + e] = _mm512_shuffle_i32x4(c1, d1, 0xdd);
    }
}

#endif
