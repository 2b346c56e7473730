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

/* C (m, n) = alpha * op(A) . op(B) + beta * C; op(A) is (m, k): A is stored
 * (k, m) when a_trans.  Backward passes need A^T (weight gradients). */
void gemm_tt(int m, int n, int k, float alpha, const float *a, int lda, bool a_trans,
             const float *b, int ldb, bool b_trans, float beta, float *c, int ldc);

/* Naive reference of the same contract, for tests. */
void gemm_ref(int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
              bool b_trans, float beta, float *c, int ldc);

/* y (m, n) = x (m, k) . W^T + bias, with W (n, k) and bias (n) or NULL. */
void linear_forward(float *y, const float *x, const float *w, const float *bias, int m, int n,
                    int k);

/* Backward of linear_forward for rows x: dx (m, k) = dy W (overwritten) when
 * dx is not NULL; dw (n, k) += dy^T x when dw is not NULL; db (n) += column
 * sums of dy when db is not NULL.  BitFit passes dw = NULL, so x may be NULL. */
void linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                     const float *w, int m, int n, int k);

/* db (n) += column sums of y (m, n), accumulated in double. */
void bias_grad_accumulate(float *db, const float *y, int m, int n);

/* Threads OpenBLAS may use (process-wide setting of the library). */
void gemm_set_threads(int threads);
int gemm_get_threads(void);

#endif
