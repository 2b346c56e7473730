/* gemm.c - OpenBLAS-backed matrix products (see gemm.h). */
#include "gemm.h"

#include <cblas.h>
#include <string.h>

void gemm(int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
          bool b_trans, float beta, float *c, int ldc)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, b_trans ? CblasTrans : CblasNoTrans, m, n, k, alpha,
                a, lda, b, ldb, beta, c, ldc);
}

void gemm_ref(int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
              bool b_trans, float beta, float *c, int ldc)
{
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
            double acc = 0;
            for (int p = 0; p < k; p++) {
                float bv = b_trans ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j];
                acc += (double)a[(size_t)i * lda + p] * bv;
            }
            float *dst = &c[(size_t)i * ldc + j];
            *dst = (float)(alpha * acc + (beta == 0.0f ? 0.0 : (double)beta * *dst));
        }
    }
}

void linear_forward(float *y, const float *x, const float *w, const float *bias, int m, int n,
                    int k)
{
    if (bias) {
        /* Seed every row with the bias so the GEMM accumulates onto it (beta = 1),
         * saving a separate pass over y. */
        for (int i = 0; i < m; i++)
            memcpy(y + (size_t)i * n, bias, sizeof(float) * (size_t)n);
        gemm(m, n, k, 1.0f, x, k, w, k, true, 1.0f, y, n);
    } else {
        gemm(m, n, k, 1.0f, x, k, w, k, true, 0.0f, y, n);
    }
}

void gemm_set_threads(int threads)
{
    if (threads < 1)
        threads = 1;
    openblas_set_num_threads(threads);
}

int gemm_get_threads(void)
{
    return openblas_get_num_threads();
}
