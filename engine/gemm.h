/*
 * gemm.h - every matrix product of the engine goes through here.
 *
 * One seam so another backend (bf16 on avx512_bf16, oneDNN) can replace
 * OpenBLAS without touching the model code.  Matrices are row-major; `b_trans`
 * means B is stored (n, k) -- PyTorch's (out, in) weight layout -- so a linear
 * layer is gemm(x, W^T).
 */
#ifndef VIT_GEMM_H
#define VIT_GEMM_H

#include <stdbool.h>

/* C (m, n) = alpha * A (m, k) . op(B) + beta * C, with leading dimensions. */
void gemm(int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
          bool b_trans, float beta, float *c, int ldc);

/* Naive reference of the same contract, for tests. */
void gemm_ref(int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
              bool b_trans, float beta, float *c, int ldc);

/* y (m, n) = x (m, k) . W^T + bias, with W (n, k) and bias (n) or NULL. */
void linear_forward(float *y, const float *x, const float *w, const float *bias, int m, int n,
                    int k);

/* Threads OpenBLAS may use (process-wide setting of the library). */
void gemm_set_threads(int threads);
int gemm_get_threads(void);

#endif
