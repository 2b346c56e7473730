/*
 * gemm_bf16_pack.c - rounding fp32 operands to bf16 into the packed layouts
 * of gemm_bf16.h.  Compiled with the AVX-512 flags; runs only when
 * cpu_has_avx512().
 *
 * Rounding is to nearest, ties to even, as vcvtne2ps2bf16 does; a NaN stays
 * a (quiet) NaN instead of rounding up into an infinity.  It is done with
 * integer arithmetic (gemm_bf16_bits, and its 16-lane form below), so CPUs
 * without avx512_bf16 round identically.
 */
#include "gemm_bf16.h"

#include <immintrin.h>

#include "gemm_tile.h"

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

/* 32 consecutive floats rounded to bf16, as 16 pairs (even k in the low half). */
static inline void bf16_round_pairs(uint32_t pairs[16], const float *src)
{
    _mm256_storeu_si256((__m256i *)pairs, bf16_round16(_mm512_loadu_ps(src)));
    _mm256_storeu_si256((__m256i *)pairs + 1, bf16_round16(_mm512_loadu_ps(src + 16)));
}

/* Pairs of 16 columns from two rows, masked: (even[c], odd[c]) per lane. */
static inline __m512i bf16_pair_rows(const float *even, const float *odd, __mmask16 cols)
{
    __m512i lo = _mm512_srli_epi32(bf16_round_high(_mm512_maskz_loadu_ps(cols, even)), 16);
    if (!odd)
        return lo; /* an odd block's padding half */
    __m512i hi = bf16_round_high(_mm512_maskz_loadu_ps(cols, odd));
    return _mm512_or_si512(lo, _mm512_and_si512(hi, _mm512_set1_epi32((int)0xffff0000u)));
}

static int panels_of(int n)
{
    return (n + GEMM_NR - 1) / GEMM_NR;
}

static int pairs_of(int kc)
{
    return (kc + 1) / 2;
}

size_t gemm_bf16_packed_b_elems(int n, int k)
{
    /* every block's depth rounded up to pairs: only the last block can be odd */
    return (size_t)panels_of(n) * GEMM_NR * 2 * (size_t)pairs_of(k);
}

size_t gemm_bf16_packed_b_block(int n, int p0)
{
    return (size_t)p0 * panels_of(n) * GEMM_NR; /* p0 is a multiple of KC: even */
}

/* B = W^T: each column's k run is contiguous in W, so a column is rounded 32
 * k at a time and its 16 pairs stored down the panel (stride 32 pairs). */
void gemm_bf16_pack_b_nt(uint16_t *dst, const float *w, size_t ldw, int n, int k)
{
    for (int p0 = 0; p0 < k; p0 += GEMM_BF16_KC) {
        int kc = k - p0 < GEMM_BF16_KC ? k - p0 : GEMM_BF16_KC, pairs = pairs_of(kc);
        uint16_t *block = dst + gemm_bf16_packed_b_block(n, p0);
        for (int j = 0; j < panels_of(n); j++) {
            uint32_t *panel = (uint32_t *)(block + (size_t)j * pairs * 2 * GEMM_NR);
            for (int c = 0; c < GEMM_NR; c++) {
                int col = j * GEMM_NR + c;
                const float *src = w + (size_t)col * ldw + p0;
                int q = 0;
                if (col < n)
                    for (; 2 * q + 32 <= kc; q += 16) {
                        uint32_t tmp[16];
                        bf16_round_pairs(tmp, src + 2 * q);
                        for (int t = 0; t < 16; t++)
                            panel[(size_t)(q + t) * GEMM_NR + c] = tmp[t];
                    }
                for (; q < pairs; q++) {
                    uint32_t pair = 0;
                    if (col < n) {
                        pair = gemm_bf16_bits(src[2 * q]);
                        if (2 * q + 1 < kc)
                            pair |= (uint32_t)gemm_bf16_bits(src[2 * q + 1]) << 16;
                    }
                    panel[(size_t)q * GEMM_NR + c] = pair;
                }
            }
        }
    }
}

/* B as it is: a pair row of the panel is two rows of B, interleaved. */
void gemm_bf16_pack_b_nn(uint16_t *dst, const float *b, size_t ldb, int k, int n)
{
    for (int p0 = 0; p0 < k; p0 += GEMM_BF16_KC) {
        int kc = k - p0 < GEMM_BF16_KC ? k - p0 : GEMM_BF16_KC, pairs = pairs_of(kc);
        uint16_t *block = dst + gemm_bf16_packed_b_block(n, p0);
        for (int j = 0; j < panels_of(n); j++) {
            uint32_t *panel = (uint32_t *)(block + (size_t)j * pairs * 2 * GEMM_NR);
            __mmask16 m0, m1;
            gemm_panel_masks(n, j, &m0, &m1);
            for (int q = 0; q < pairs; q++) {
                const float *even = b + (size_t)(p0 + 2 * q) * ldb + (size_t)j * GEMM_NR;
                const float *odd = 2 * q + 1 < kc ? even + ldb : NULL;
                _mm512_storeu_si512(panel + (size_t)q * GEMM_NR, bf16_pair_rows(even, odd, m0));
                _mm512_storeu_si512(panel + (size_t)q * GEMM_NR + 16,
                                   bf16_pair_rows(even + 16, odd ? odd + 16 : NULL, m1));
            }
        }
    }
}

/* 32 consecutive floats rounded to bf16, as 16 pairs in one vector. */
static inline __m512i bf16_pair_vector(const float *src)
{
    return _mm512_inserti64x4(_mm512_castsi256_si512(bf16_round16(_mm512_loadu_ps(src))),
                              bf16_round16(_mm512_loadu_ps(src + 16)), 1);
}

/* x[i][t] -> x[t][i] for 16 vectors of 16 32-bit lanes: pairs within each
 * 128-bit lane, then quads, then the lanes themselves. */
static inline void transpose16(__m512i x[16])
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

void gemm_bf16_pack_a_block(void *dst, const float *a, size_t lda, int m, int s0, int s1, int p0,
                            int kc)
{
    _Static_assert(GEMM_MR <= 16, "a sliver's rows fit one vector");
    const __mmask16 sliver_rows = (__mmask16)((1u << GEMM_MR) - 1);
    int pairs = pairs_of(kc);
    uint32_t *out = dst;
    for (int s = s0; s < s1; s++) {
        uint32_t *sliver = out + (size_t)s * pairs * GEMM_MR;
        int r0 = s * GEMM_MR;
        int rows = m - r0 < GEMM_MR ? m - r0 : GEMM_MR;
        /* 16 pairs of every row at a time, turned in registers into the
         * sliver's 16 runs of MR pairs (rows past m are zero) */
        int q = 0;
        for (; 2 * q + 32 <= kc; q += 16) {
            __m512i v[16];
            for (int i = 0; i < 16; i++)
                v[i] = i < rows ? bf16_pair_vector(a + (size_t)(r0 + i) * lda + p0 + 2 * q)
                                : _mm512_setzero_si512();
            transpose16(v);
            for (int t = 0; t < 16; t++)
                _mm512_mask_storeu_epi32(sliver + (size_t)(q + t) * GEMM_MR, sliver_rows, v[t]);
        }
        for (; q < pairs; q++)
            for (int i = 0; i < GEMM_MR; i++) {
                uint32_t pair = 0;
                if (i < rows) {
                    const float *src = a + (size_t)(r0 + i) * lda + p0 + 2 * q;
                    pair = gemm_bf16_bits(src[0]);
                    if (2 * q + 1 < kc)
                        pair |= (uint32_t)gemm_bf16_bits(src[1]) << 16;
                }
                sliver[(size_t)q * GEMM_MR + i] = pair;
            }
    }
}
