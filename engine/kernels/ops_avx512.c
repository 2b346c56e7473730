/*
 * ops_avx512.c - AVX-512 GELU, QuickGELU, softmax and LayerNorm forward
 * kernels (see ops_avx512.h; the scalar originals are in ops.c).
 *
 * Compiled only into engine_avx512 with -mavx512f/vl/bw/dq -mfma, and called
 * only after cpu_has_avx512().  Every loop runs 16 floats per vector and ends
 * in one masked vector, so any length works without a scalar tail and
 * without touching memory past the end.  The reductions keep the scalar
 * kernels' numerics: LayerNorm's mean and variance and softmax's sum are
 * accumulated in double (STYLE rule 8), softmax subtracts the row max, and
 * LayerNorm's output is the scalar kernel's float expression operation for
 * operation, so the two paths differ only where a double sum's order does.
 */
#include "ops_avx512.h"

#include <math.h>

#include "gemm_bf16.h"
#include "simd_avx512.h"
#include "status.h"

/* Lanes 0..k-1 of a vector for the last k (1..16) elements of a row. */
static inline __mmask16 tail_mask(size_t k)
{
    return (__mmask16)(k >= 16 ? 0xFFFFu : (1u << k) - 1u);
}

/* Adds the 16 floats of v, widened to double, into two accumulators. */
static inline void acc_pd(__m512d *lo, __m512d *hi, __m512 v)
{
    *lo = _mm512_add_pd(*lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    *hi = _mm512_add_pd(*hi, _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
}

/* out (n) = GELU(x), exact erf (simd_gelu_ps); out may alias x, since each
 * vector is loaded before the same vector is stored. */
void gelu_forward_avx512(float *out, const float *x, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(out + i, simd_gelu_ps(_mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(out + i, m, simd_gelu_ps(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

/* out (n) = x sigmoid(1.702 x) (simd_quick_gelu_ps); out may alias x. */
void quick_gelu_forward_avx512(float *out, const float *x, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(out + i, simd_quick_gelu_ps(_mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(out + i, m,
                              simd_quick_gelu_ps(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

/* Three passes over a row that sits in L1: the max of scale * x; e_i =
 * exp(scale * x_i - max) stored in place while their double sum accumulates;
 * e_i times the float reciprocal of the sum, as the scalar kernel does.
 * scale * x_i - max is one FMA, so it is rounded once and the max element
 * gets exp(~0) = 1.  Any sign of scale works; scale * x must stay finite. */
void softmax_rows_forward_avx512(float *x, size_t rows, int n, size_t ld, float scale)
{
    if (n <= 0)
        return;
    const __m512 vscale = _mm512_set1_ps(scale);
    for (size_t r = 0; r < rows; r++) {
        float *row = x + r * ld;

        __m512 vmax = _mm512_set1_ps(-INFINITY);
        int i = 0;
        for (; i + 16 <= n; i += 16)
            vmax = _mm512_max_ps(vmax, _mm512_mul_ps(vscale, _mm512_loadu_ps(row + i)));
        __mmask16 m = tail_mask((size_t)(n - i));
        if (i < n)
            vmax = _mm512_mask_max_ps(vmax, m, vmax,
                                      _mm512_mul_ps(vscale, _mm512_maskz_loadu_ps(m, row + i)));
        const __m512 neg_max = _mm512_set1_ps(-_mm512_reduce_max_ps(vmax));

        __m512d sum_lo = _mm512_setzero_pd(), sum_hi = _mm512_setzero_pd();
        for (i = 0; i + 16 <= n; i += 16) {
            __m512 e = simd_exp_ps(_mm512_fmadd_ps(vscale, _mm512_loadu_ps(row + i), neg_max));
            _mm512_storeu_ps(row + i, e);
            acc_pd(&sum_lo, &sum_hi, e);
        }
        if (i < n) {
            __m512 e = simd_exp_ps(
                _mm512_fmadd_ps(vscale, _mm512_maskz_loadu_ps(m, row + i), neg_max));
            e = _mm512_maskz_mov_ps(m, e); /* lanes past n add nothing */
            _mm512_mask_storeu_ps(row + i, m, e);
            acc_pd(&sum_lo, &sum_hi, e);
        }
        double sum = _mm512_reduce_add_pd(_mm512_add_pd(sum_lo, sum_hi));

        const __m512 inv = _mm512_set1_ps((float)(1.0 / sum));
        for (i = 0; i + 16 <= n; i += 16)
            _mm512_storeu_ps(row + i, _mm512_mul_ps(_mm512_loadu_ps(row + i), inv));
        if (i < n)
            _mm512_mask_storeu_ps(row + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, row + i), inv));
    }
}

/* Sum of a row's C floats in double; four accumulators (32 floats per step)
 * so the adds do not wait on each other. */
static double row_sum(const float *x, int C)
{
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    __m512d s2 = _mm512_setzero_pd(), s3 = _mm512_setzero_pd();
    int i = 0;
    for (; i + 32 <= C; i += 32) {
        acc_pd(&s0, &s1, _mm512_loadu_ps(x + i));
        acc_pd(&s2, &s3, _mm512_loadu_ps(x + i + 16));
    }
    for (; i < C; i += 16) /* at most two vectors, the last one masked */
        acc_pd(&s0, &s1, _mm512_maskz_loadu_ps(tail_mask((size_t)(C - i)), x + i));
    return _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(s0, s1), _mm512_add_pd(s2, s3)));
}

/* Adds (v - mu)^2, widened to double, into two accumulators; lanes outside
 * m add nothing. */
static inline void acc_sq_dev_pd(__m512d *lo, __m512d *hi, __m512 v, __m512d mu, __mmask16 m)
{
    __m512d dlo = _mm512_maskz_sub_pd((__mmask8)m, _mm512_cvtps_pd(_mm512_castps512_ps256(v)), mu);
    __m512d dhi = _mm512_maskz_sub_pd((__mmask8)(m >> 8),
                                      _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)), mu);
    *lo = _mm512_fmadd_pd(dlo, dlo, *lo);
    *hi = _mm512_fmadd_pd(dhi, dhi, *hi);
}

/* Sum over the row of (x_i - mu)^2 in double (the two-pass variance). */
static double row_sq_dev(const float *x, int C, double mu)
{
    const __m512d vmu = _mm512_set1_pd(mu);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    __m512d s2 = _mm512_setzero_pd(), s3 = _mm512_setzero_pd();
    int i = 0;
    for (; i + 32 <= C; i += 32) {
        acc_sq_dev_pd(&s0, &s1, _mm512_loadu_ps(x + i), vmu, 0xFFFF);
        acc_sq_dev_pd(&s2, &s3, _mm512_loadu_ps(x + i + 16), vmu, 0xFFFF);
    }
    for (; i < C; i += 16) {
        __mmask16 m = tail_mask((size_t)(C - i));
        acc_sq_dev_pd(&s0, &s1, _mm512_maskz_loadu_ps(m, x + i), vmu, m);
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(s0, s1), _mm512_add_pd(s2, s3)));
}

/* A row's LayerNorm statistics: its mean and 1 / sqrt(var + eps), summed in
 * double and rounded once to float.  Both forward kernels take them from
 * here, so their outputs are the same bits. */
static void row_stats(const float *x, int C, float eps, float *mean, float *rstd)
{
    double mu = row_sum(x, C) / C;
    double var = row_sq_dev(x, C, mu) / C;
    *rstd = (float)(1.0 / sqrt(var + eps));
    *mean = (float)mu;
}

/* ((x - mean) * rstd) * w + b, rounded after each operation: the one
 * expression both forward kernels normalise with. */
static inline __m512 layernorm_vec(__m512 x, __m512 mean, __m512 rstd, __m512 w, __m512 b)
{
    return _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps(x, mean), rstd), w), b);
}

/* ref: torch.nn.functional.layer_norm, as layernorm_forward in ops.c.  The
 * output is ((x - mean) * rstd) * w + b with a rounding after each operation
 * and no FMA, exactly the scalar kernel's expression, so with the same float
 * mean and rstd both paths give the same bits.  out may alias x: each vector
 * of x is read before the same vector of out is written. */
void layernorm_forward_avx512(float *out, float *mean, float *rstd, const float *x,
                              const float *w, const float *b, size_t rows, int C, float eps)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * (size_t)C;
        float *orow = out + r * (size_t)C;
        float fmean, rs;
        row_stats(xr, C, eps, &fmean, &rs);

        const __m512 vmean = _mm512_set1_ps(fmean), vrs = _mm512_set1_ps(rs);
        int i = 0;
        for (; i + 16 <= C; i += 16)
            _mm512_storeu_ps(orow + i, layernorm_vec(_mm512_loadu_ps(xr + i), vmean, vrs,
                                                     _mm512_loadu_ps(w + i),
                                                     _mm512_loadu_ps(b + i)));
        if (i < C) {
            __mmask16 m = tail_mask((size_t)(C - i));
            _mm512_mask_storeu_ps(orow + i, m,
                                  layernorm_vec(_mm512_maskz_loadu_ps(m, xr + i), vmean, vrs,
                                                _mm512_maskz_loadu_ps(m, w + i),
                                                _mm512_maskz_loadu_ps(m, b + i)));
        }
        if (mean)
            mean[r] = fmean;
        if (rstd)
            rstd[r] = rs;
    }
}

/* One sliver: rows (1..GEMM_MR) rows of x, row r with bias b[r]. */
static void layernorm_bf16_sliver(uint32_t *sliver, const float *x, const float *w,
                                  const float *const *b, int rows, int C, float eps)
{
    float mean[GEMM_MR], rs[GEMM_MR];
    for (int r = 0; r < rows; r++)
        row_stats(x + (size_t)r * C, C, eps, &mean[r], &rs[r]);
    for (int j = 0; j < (C + GEMM_NR - 1) / GEMM_NR; j++) {
        _Alignas(64) float vals[GEMM_MR][GEMM_NR];
        for (int r = 0; r < rows; r++)
            for (int h = 0; h < GEMM_NR; h += 16) {
                int c0 = j * GEMM_NR + h;
                __mmask16 m = c0 + 16 <= C ? (__mmask16)0xffff
                                           : c0 < C ? tail_mask((size_t)(C - c0)) : 0;
                __m512 y = layernorm_vec(_mm512_maskz_loadu_ps(m, x + (size_t)r * C + c0),
                                         _mm512_set1_ps(mean[r]), _mm512_set1_ps(rs[r]),
                                         _mm512_maskz_loadu_ps(m, w + c0),
                                         _mm512_maskz_loadu_ps(m, b[r] + c0));
                _mm512_store_ps(vals[r] + h, _mm512_maskz_mov_ps(m, y));
            }
        gemm_bf16_pack_rows32(vals, rows, sliver, C, j);
    }
}

void layernorm_bf16_slivers_avx512(uint32_t *a_packed, const float *x, int m, int C,
                                   const float *w, const float *const *bias, int rows_per_bias,
                                   float eps, int s0, int s1)
{
    size_t sliver_words = gemm_bf16_a_words(GEMM_MR, C);
    for (int s = s0; s < s1; s++) {
        int r0 = s * GEMM_MR, rows = m - r0 < GEMM_MR ? m - r0 : GEMM_MR;
        VIT_ASSERT(rows >= 1);
        const float *b[GEMM_MR];
        for (int r = 0; r < rows; r++)
            b[r] = bias[(r0 + r) / rows_per_bias];
        layernorm_bf16_sliver(a_packed + (size_t)s * sliver_words, x + (size_t)r0 * C, w, b, rows,
                              C, eps);
    }
}

/* ---- backward kernels ---- */

/* dx (n) = dout * GELU'(x); dx may alias dout. */
void gelu_backward_avx512(float *dx, const float *dout, const float *x, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dx + i, _mm512_mul_ps(_mm512_loadu_ps(dout + i),
                                               simd_gelu_grad_ps(_mm512_loadu_ps(x + i))));
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(dx + i, m,
                              _mm512_mul_ps(_mm512_maskz_loadu_ps(m, dout + i),
                                            simd_gelu_grad_ps(_mm512_maskz_loadu_ps(m, x + i))));
    }
}

/* dx (n) = dout * QuickGELU'(x); dx may alias dout. */
void quick_gelu_backward_avx512(float *dx, const float *dout, const float *x, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dx + i,
                         _mm512_mul_ps(_mm512_loadu_ps(dout + i),
                                       simd_quick_gelu_grad_ps(_mm512_loadu_ps(x + i))));
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(
            dx + i, m,
            _mm512_mul_ps(_mm512_maskz_loadu_ps(m, dout + i),
                          simd_quick_gelu_grad_ps(_mm512_maskz_loadu_ps(m, x + i))));
    }
}

/* Adds the double lanes of lo and hi (16 floats' worth) into dst[0..cols). */
static void add_pd_to(float *dst, __m512d lo, __m512d hi, int cols)
{
    _Alignas(64) double tmp[16];
    _mm512_store_pd(tmp, lo);
    _mm512_store_pd(tmp + 8, hi);
    for (int i = 0; i < cols; i++)
        dst[i] += (float)tmp[i];
}

/* The row part of ops.c layernorm_backward, its sums in double: with xhat =
 * (x - mean) rstd and g = dout w, dx += rstd (g - mean(g) - xhat
 * mean(g xhat)), the last expression in float. */
void layernorm_backward_rows_avx512(float *dx, const float *dout, const float *x,
                                    const float *mean, const float *rstd, const float *w,
                                    size_t rows, int C)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * (size_t)C, *dy = dout + r * (size_t)C;
        float *dxr = dx + r * (size_t)C;
        const __m512 vmu = _mm512_set1_ps(mean[r]), vrs = _mm512_set1_ps(rstd[r]);
        __m512d g_lo = _mm512_setzero_pd(), g_hi = _mm512_setzero_pd();
        __m512d gx_lo = _mm512_setzero_pd(), gx_hi = _mm512_setzero_pd();
        for (int i = 0; i < C; i += 16) {
            __mmask16 m = tail_mask((size_t)(C - i));
            __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr + i), vmu), vrs);
            __m512 g = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, dy + i),
                                     _mm512_maskz_loadu_ps(m, w + i));
            acc_pd(&g_lo, &g_hi, g);
            acc_pd(&gx_lo, &gx_hi, _mm512_mul_ps(g, xhat));
        }
        double sum_g = _mm512_reduce_add_pd(_mm512_add_pd(g_lo, g_hi));
        double sum_gx = _mm512_reduce_add_pd(_mm512_add_pd(gx_lo, gx_hi));
        const __m512 mg = _mm512_set1_ps((float)(sum_g / C));
        const __m512 mgx = _mm512_set1_ps((float)(sum_gx / C));
        for (int i = 0; i < C; i += 16) {
            __mmask16 m = tail_mask((size_t)(C - i));
            __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr + i), vmu), vrs);
            __m512 g = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, dy + i),
                                     _mm512_maskz_loadu_ps(m, w + i));
            __m512 d = _mm512_sub_ps(_mm512_sub_ps(g, mg), _mm512_mul_ps(xhat, mgx));
            _mm512_mask_storeu_ps(dxr + i, m,
                                  _mm512_fmadd_ps(vrs, d, _mm512_maskz_loadu_ps(m, dxr + i)));
        }
    }
}

/* db[j] += sum_r y[r][j] for columns [j0, j1) of y (rows, ld), in double,
 * 32 columns per sweep down the rows. */
void colsum_accumulate_avx512(float *db, const float *y, size_t rows, size_t ld, int j0, int j1)
{
    for (int j = j0; j < j1; j += 32) {
        int cols = j1 - j < 32 ? j1 - j : 32;
        __mmask16 m0 = tail_mask((size_t)cols), m1 = cols > 16 ? tail_mask((size_t)(cols - 16)) : 0;
        __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
        __m512d a2 = _mm512_setzero_pd(), a3 = _mm512_setzero_pd();
        const float *col = y + j;
        for (size_t r = 0; r < rows; r++, col += ld) {
            acc_pd(&a0, &a1, _mm512_maskz_loadu_ps(m0, col));
            acc_pd(&a2, &a3, _mm512_maskz_loadu_ps(m1, col + 16));
        }
        add_pd_to(db + j, a0, a1, cols < 16 ? cols : 16);
        if (cols > 16)
            add_pd_to(db + j + 16, a2, a3, cols - 16);
    }
}

/* dw[j] += sum_r dout[r][j] (x[r][j] - mean[r]) rstd[r] for columns [j0, j1)
 * of (rows, C), in double: LayerNorm's gain gradient. */
void layernorm_gain_grad_avx512(float *dw, const float *dout, const float *x, const float *mean,
                                const float *rstd, size_t rows, int C, int j0, int j1)
{
    for (int j = j0; j < j1; j += 16) {
        int cols = j1 - j < 16 ? j1 - j : 16;
        __mmask16 m = tail_mask((size_t)cols);
        __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
        for (size_t r = 0; r < rows; r++) {
            const float *xr = x + r * (size_t)C + j, *dy = dout + r * (size_t)C + j;
            __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr),
                                                      _mm512_set1_ps(mean[r])),
                                        _mm512_set1_ps(rstd[r]));
            acc_pd(&lo, &hi, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, dy), xhat));
        }
        add_pd_to(dw + j, lo, hi, cols);
    }
}

/* Softmax's backward in place on one attention head: dp (rows, n) with row
 * stride ld becomes scale * p (dp - sum_j dp p), the row sums in double. */
void softmax_backward_rows_avx512(float *dp, const float *p, size_t rows, int n, size_t ld,
                                  float scale)
{
    const __m512 vscale = _mm512_set1_ps(scale);
    for (size_t r = 0; r < rows; r++) {
        float *d = dp + r * ld;
        const float *pr = p + r * ld;
        __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
        for (int i = 0; i < n; i += 16) {
            __mmask16 m = tail_mask((size_t)(n - i));
            acc_pd(&lo, &hi, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, d + i),
                                           _mm512_maskz_loadu_ps(m, pr + i)));
        }
        const __m512 dot = _mm512_set1_ps((float)_mm512_reduce_add_pd(_mm512_add_pd(lo, hi)));
        for (int i = 0; i < n; i += 16) {
            __mmask16 m = tail_mask((size_t)(n - i));
            __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, pr + i),
                                     _mm512_sub_ps(_mm512_maskz_loadu_ps(m, d + i), dot));
            _mm512_mask_storeu_ps(d + i, m, _mm512_mul_ps(v, vscale));
        }
    }
}
