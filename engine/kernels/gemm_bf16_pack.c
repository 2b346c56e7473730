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

/* 16 floats rounded to bf16, as 16 uint16. */
static inline __m256i bf16_round16(__m512 x)
{
    __m512i u = _mm512_castps_si512(x);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i rounded = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    __m512i quiet = _mm512_or_si512(u, _mm512_set1_epi32(0x400000));
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    rounded = _mm512_mask_mov_epi32(rounded, nan, quiet);
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(rounded, 16));
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

void gemm_bf16_pack_b_nt(uint16_t *dst, const float *w, size_t ldw, int n, int k)
{
    for (int p0 = 0; p0 < k; p0 += GEMM_BF16_KC) {
        int kc = k - p0 < GEMM_BF16_KC ? k - p0 : GEMM_BF16_KC, pairs = pairs_of(kc);
        uint16_t *block = dst + gemm_bf16_packed_b_block(n, p0);
        for (int j = 0; j < panels_of(n); j++) {
            uint16_t *panel = block + (size_t)j * pairs * 2 * GEMM_NR;
            for (int c = 0; c < GEMM_NR; c++) {
                int col = j * GEMM_NR + c;
                const float *src = w + (size_t)col * ldw + p0;
                for (int p = 0; p < 2 * pairs; p++)
                    panel[(size_t)(p / 2) * 2 * GEMM_NR + 2 * c + p % 2] =
                        col < n && p < kc ? gemm_bf16_bits(src[p]) : 0;
            }
        }
    }
}

void gemm_bf16_pack_b_nn(uint16_t *dst, const float *b, size_t ldb, int k, int n)
{
    for (int p0 = 0; p0 < k; p0 += GEMM_BF16_KC) {
        int kc = k - p0 < GEMM_BF16_KC ? k - p0 : GEMM_BF16_KC, pairs = pairs_of(kc);
        uint16_t *block = dst + gemm_bf16_packed_b_block(n, p0);
        for (int j = 0; j < panels_of(n); j++) {
            uint16_t *panel = block + (size_t)j * pairs * 2 * GEMM_NR;
            int cols = n - j * GEMM_NR < GEMM_NR ? n - j * GEMM_NR : GEMM_NR;
            for (int p = 0; p < 2 * pairs; p++) {
                uint16_t *out = panel + (size_t)(p / 2) * 2 * GEMM_NR + p % 2;
                for (int c = 0; c < GEMM_NR; c++)
                    out[2 * c] = 0;
                if (p >= kc)
                    continue; /* an odd block's padding half */
                const float *src = b + (size_t)(p0 + p) * ldb + (size_t)j * GEMM_NR;
                for (int c = 0; c < cols; c++)
                    out[2 * c] = gemm_bf16_bits(src[c]);
            }
        }
    }
}

void gemm_bf16_pack_a_block(void *dst, const float *a, size_t lda, int m, int s0, int s1, int p0,
                            int kc)
{
    int pairs = pairs_of(kc);
    uint32_t *out = dst;
    for (int s = s0; s < s1; s++) {
        uint32_t *sliver = out + (size_t)s * pairs * GEMM_MR;
        int r0 = s * GEMM_MR;
        int rows = m - r0 < GEMM_MR ? m - r0 : GEMM_MR;
        /* 32 columns (16 pairs) of every row at a time: contiguous loads,
         * stride-MR stores */
        int q = 0;
        for (; 2 * q + 32 <= kc; q += 16) {
            for (int i = 0; i < rows; i++) {
                const float *src = a + (size_t)(r0 + i) * lda + p0 + 2 * q;
                uint32_t tmp[16];
                _mm256_storeu_si256((__m256i *)tmp, bf16_round16(_mm512_loadu_ps(src)));
                _mm256_storeu_si256((__m256i *)tmp + 1, bf16_round16(_mm512_loadu_ps(src + 16)));
                for (int t = 0; t < 16; t++)
                    sliver[(size_t)(q + t) * GEMM_MR + i] = tmp[t];
            }
            for (int i = rows; i < GEMM_MR; i++)
                for (int t = 0; t < 16; t++)
                    sliver[(size_t)(q + t) * GEMM_MR + i] = 0;
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
