/*
 * ops_avx512.h - AVX-512 versions of the forward pass's element-wise kernels.
 *
 * Same contracts as their ops.h namesakes; call them only when
 * cpu_has_avx512() says the CPU can run them.  Results agree with the scalar
 * kernels within a few float ulps, not bit for bit.
 */
#ifndef VIT_OPS_AVX512_H
#define VIT_OPS_AVX512_H

#include <stddef.h>

void gelu_forward_avx512(float *out, const float *x, size_t n);
void quick_gelu_forward_avx512(float *out, const float *x, size_t n);

/* In place, row-wise stable softmax of scale * x over the first n columns of
 * each row (rows, ld); columns n..ld-1 are left alone. */
void softmax_rows_forward_avx512(float *x, size_t rows, int n, size_t ld, float scale);

void layernorm_forward_avx512(float *out, float *mean, float *rstd, const float *x,
                              const float *w, const float *b, size_t rows, int C, float eps);

#endif
