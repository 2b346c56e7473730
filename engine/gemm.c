/*
 * gemm.c - the engine's matrix products (see gemm.h).
 *
 * Two backends behind one interface, chosen at build time (meson option
 * gemm_backend): OpenBLAS (default) and oneDNN's sgemm, whose AVX-512 kernels
 * run about twice as fast as OpenBLAS's here (the environment pins OpenBLAS
 * to its Haswell/AVX2 kernels).  Row-major throughout.
 */
#include "gemm.h"

#include <string.h>

#include "status.h"

#ifdef VIT_GEMM_ONEDNN
#include <oneapi/dnnl/dnnl.h>
/* libgomp's, which oneDNN's OpenMP runtime threads by; declared here so the
 * engine itself needs no -fopenmp. */
void omp_set_num_threads(int n);
int omp_get_max_threads(void);
#else
#include <cblas.h>
#endif

void gemm_tt(int m, int n, int k, float alpha, const float *a, int lda, bool a_trans,
             const float *b, int ldb, bool b_trans, float beta, float *c, int ldc)
{
#ifdef VIT_GEMM_ONEDNN
    dnnl_status_t st = dnnl_sgemm(a_trans ? 'T' : 'N', b_trans ? 'T' : 'N', m, n, k, alpha, a, lda,
                                  b, ldb, beta, c, ldc);
    VIT_ASSERT(st == dnnl_success); /* only invalid shapes fail: a bug in the caller */
#else
    cblas_sgemm(CblasRowMajor, a_trans ? CblasTrans : CblasNoTrans,
                b_trans ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
}

void gemm(int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
          bool b_trans, float beta, float *c, int ldc)
{
    gemm_tt(m, n, k, alpha, a, lda, false, b, ldb, b_trans, beta, c, ldc);
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

void bias_grad_accumulate(float *db, const float *y, int m, int n)
{
    /* column blocks so the double accumulators live on the stack */
    enum { BLOCK = 512 };
    double acc[BLOCK];
    for (int j0 = 0; j0 < n; j0 += BLOCK) {
        int width = n - j0 < BLOCK ? n - j0 : BLOCK;
        memset(acc, 0, sizeof acc);
        for (int i = 0; i < m; i++) {
            const float *row = y + (size_t)i * n + j0;
            for (int j = 0; j < width; j++)
                acc[j] += row[j];
        }
        for (int j = 0; j < width; j++)
            db[j0 + j] += (float)acc[j];
    }
}

void linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                     const float *w, int m, int n, int k)
{
    if (dx) /* (m, n) . (n, k) */
        gemm(m, k, n, 1.0f, dy, n, w, k, false, 0.0f, dx, k);
    if (dw) /* (n, m) . (m, k), accumulated */
        gemm_tt(n, k, m, 1.0f, dy, n, true, x, k, false, 1.0f, dw, k);
    if (db)
        bias_grad_accumulate(db, dy, m, n);
}

void gemm_set_threads(int threads)
{
    if (threads < 1)
        threads = 1;
#ifdef VIT_GEMM_ONEDNN
    omp_set_num_threads(threads);
#else
    openblas_set_num_threads(threads);
#endif
}

int gemm_get_threads(void)
{
#ifdef VIT_GEMM_ONEDNN
    return omp_get_max_threads();
#else
    return openblas_get_num_threads();
#endif
}
