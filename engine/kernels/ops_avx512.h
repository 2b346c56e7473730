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
#include <stdint.h>

void gelu_forward_avx512(float *out, const float *x, size_t n);
void quick_gelu_forward_avx512(float *out, const float *x, size_t n);

/* In place, row-wise stable softmax of scale * x over the first n columns of
 * each row (rows, ld); columns n..ld-1 are left alone. */
void softmax_rows_forward_avx512(float *x, size_t rows, int n, size_t ld, float scale);

void layernorm_forward_avx512(float *out, float *mean, float *rstd, const float *x,
                              const float *w, const float *b, size_t rows, int C, float eps);

/* The same LayerNorm of x (m, C), row r with bias[r / rows_per_bias], for
 * slivers [s0, s1) of a bf16 packed A with k = C (gemm.h:
 * gemm_bf16_a_slivers, gemm_bf16_a_words): the values
 * layernorm_forward_avx512 gives, rounded as packing them would, for a bf16
 * product to read without packing. */
void layernorm_bf16_slivers_avx512(uint32_t *a_packed, const float *x, int m, int C,
                                   const float *w, const float *const *bias, int rows_per_bias,
                                   float eps, int s0, int s1);

/* ---- backward (training on the packed path) ---- */

/* dx (n) = dout * GELU'(x) / QuickGELU'(x); dx may alias dout. */
void gelu_backward_avx512(float *dx, const float *dout, const float *x, size_t n);
void quick_gelu_backward_avx512(float *dx, const float *dout, const float *x, size_t n);

/* The input gradient of ops.h layernorm_backward alone: dx (rows, C) +=
 * dLN/dx . dout (no parameter gradients; see the two below). */
void layernorm_backward_rows_avx512(float *dx, const float *dout, const float *x,
                                    const float *mean, const float *rstd, const float *w,
                                    size_t rows, int C);

/* db[j] += sum over the rows of y[r][j] (y (rows, ld)), columns [j0, j1),
 * accumulated in double: a bias gradient, or a LayerNorm's bias gradient. */
void colsum_accumulate_avx512(float *db, const float *y, size_t rows, size_t ld, int j0, int j1);

/* dw[j] += sum_r dout[r][j] xhat[r][j], columns [j0, j1), in double: a
 * LayerNorm's gain gradient from its saved input and statistics. */
void layernorm_gain_grad_avx512(float *dw, const float *dout, const float *x, const float *mean,
                                const float *rstd, size_t rows, int C, int j0, int j1);

/* In place on one head: dp (rows, n) row stride ld becomes scale * p (dp -
 * rowsum(dp p)), the gradient of the scores from that of the probabilities
 * p = softmax(scores) (the row sums in double). */
void softmax_backward_rows_avx512(float *dp, const float *p, size_t rows, int n, size_t ld,
                                  float scale);

#endif
