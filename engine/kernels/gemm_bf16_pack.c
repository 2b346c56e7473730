/*
 * gemm_bf16_pack.c - rounding fp32 operands to bf16 into the packed layouts
 * of gemm_bf16.h.  Compiled with the AVX-512 flags; runs only when
 * cpu_has_avx512().  Rounding as gemm_bf16_bits (and its 16-lane form in
 * gemm_bf16_simd.h), so CPUs without avx512_bf16 round identically.
 */
#include "gemm_bf16.h"

#include <immintrin.h>

#include "gemm_bf16_simd.h"
#include "gemm_tile.h"

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
    return bf16_pairs(_mm512_loadu_ps(src), _mm512_loadu_ps(src + 16));
}

void gemm_bf16_pack_a_slivers(uint32_t *dst, size_t sliver_words, const float *a, size_t lda,
                              int m, int s0, int s1, int p0, int kc)
{
    _Static_assert(GEMM_MR <= 16, "a sliver's rows fit one vector");
    const __mmask16 sliver_rows = (__mmask16)((1u << GEMM_MR) - 1);
    int pairs = pairs_of(kc);
    for (int s = s0; s < s1; s++) {
        uint32_t *sliver = dst + (size_t)s * sliver_words;
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
            bf16_transpose16(v);
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

void gemm_bf16_pack_a_block(void *dst, const float *a, size_t lda, int m, int s0, int s1, int p0,
                            int kc)
{
    gemm_bf16_pack_a_slivers(dst, (size_t)pairs_of(kc) * GEMM_MR, a, lda, m, s0, s1, p0, kc);
}

void gemm_bf16_pack_rows32(const float vals[GEMM_MR][GEMM_NR], int rows, uint32_t *sliver, int n,
                           int j)
{
    __m512i v[16];
    for (int i = 0; i < 16; i++)
        v[i] = i < rows ? bf16_pairs(_mm512_load_ps(vals[i]), _mm512_load_ps(vals[i] + 16))
                        : _mm512_setzero_si512();
    bf16_transpose16(v);
    const __mmask16 sliver_rows = (__mmask16)((1u << GEMM_MR) - 1);
    int pairs = pairs_of(n) - 16 * j;
    for (int t = 0; t < 16 && t < pairs; t++)
        _mm512_mask_storeu_epi32(sliver + (size_t)(16 * j + t) * GEMM_MR, sliver_rows, v[t]);
}
