/*
 * test_ops_avx512.c - the AVX-512 element-wise kernels vs double references
 * and vs their scalar namesakes in ops.c.
 *
 * 1. GELU: a dense sweep of [-12, 12] plus special values (+-0, subnormals,
 *    +-inf, NaN, +-FLT_MAX) against 0.5 x erfc(-x / sqrt 2) in double: max
 *    |error| <= 5e-7, relative error <= 3e-6 where |GELU| > 1e-3 and <= 1e-6
 *    wherever GELU is a normal float (measured: 2.4e-7 and 2.5e-7); the
 *    exact limits at +-inf, -0 and NaN; then against the scalar gelu_forward,
 *    every tail length, a long odd length, and out == x.
 * 2. QuickGELU against x / (1 + exp(-1.702f x)) in double and the scalar kernel.
 * 3. Softmax rows of 1, 5, 16, 17 and 197 columns in rows of 224 floats with
 *    scale 0.125 against double: rows sum to 1, the padding is untouched,
 *    inputs near 1e4 and 1e30 neither overflow nor lose the max.
 * 4. LayerNorm against the scalar layernorm_forward for C = 1, 8, 24, 768,
 *    1000: outputs, mean and rstd, NULL statistics, out == x.
 *
 * 5. The backward kernels: GELU' and QuickGELU' against their derivatives
 *    in double over [-12, 12] and the special values (dout = 1), then times
 *    dout in place against the scalar kernels; LayerNorm's input gradient
 *    against the scalar layernorm_backward (dx accumulated); the column sums
 *    and LayerNorm's gain gradient against double sums over column ranges
 *    that start and end inside a vector; softmax's backward against the
 *    formula in double.
 *
 * This file is compiled without AVX-512 flags, so it can only reach the
 * kernels through ops_avx512.h and runs them only when cpu_has_avx512() says
 * so; otherwise it exits 77, which meson reports as SKIP (not as a pass).
 * Inputs come from a fixed LCG, so every run sees the same numbers.
 */
#include "ops_avx512.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cpu.h"
#include "ops.h"

/* ---------------------------------------------------------------- helpers */

static uint64_t lcg_state = 0x9E3779B97F4A7C15ull;

/* Uniform in [lo, hi), 24 random bits. */
static float lcg_uniform(float lo, float hi)
{
    lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (hi - lo) * (float)((double)(lcg_state >> 40) / 16777216.0);
}

static float *alloc_floats(size_t n)
{
    float *p = malloc(n * sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory (%zu floats)\n", n);
        exit(2);
    }
    return p;
}

/* Exact-erf GELU in double; written with erfc so the negative side is not a
 * cancelling 1 + erf. */
static double gelu_ref(double x)
{
    if (isinf(x))
        return x > 0 ? x : 0.0; /* the limits; the formula gives NaN for -inf */
    return 0.5 * x * erfc(-x * M_SQRT1_2);
}

/* QuickGELU with the kernels' float constant 1.702f, in double. */
static double quick_gelu_ref(double x)
{
    if (isinf(x))
        return x > 0 ? x : 0.0;
    return x / (1.0 + exp(-(double)1.702f * x));
}

/* Max |got - ref| and max relative error (where |ref| > rel_floor) over n
 * values; NaN must match NaN.  Prints both with the worst input and fails
 * the check when either exceeds its bound. */
static void check_vs_ref(const char *what, const float *x, const float *got, size_t n,
                         double (*ref)(double), double max_abs, double rel_floor,
                         double max_rel)
{
    double worst_abs = 0, worst_rel = 0;
    size_t at_abs = 0, at_rel = 0, nan_bad = 0, nan_at = 0;
    for (size_t i = 0; i < n; i++) {
        double want = ref(x[i]);
        if (isnan(want) || isnan(got[i])) {
            if (isnan(want) != isnan(got[i]) && nan_bad++ == 0)
                nan_at = i;
            continue;
        }
        if (isinf(want) || isinf(got[i])) {
            if (want != (double)got[i] && nan_bad++ == 0)
                nan_at = i;
            continue;
        }
        double d = fabs((double)got[i] - want);
        if (d > worst_abs) {
            worst_abs = d;
            at_abs = i;
        }
        if (fabs(want) > rel_floor && d / fabs(want) > worst_rel) {
            worst_rel = d / fabs(want);
            at_rel = i;
        }
    }
    fprintf(stderr, "%s: %zu values, max |err| %.3g at x=%.9g, max rel err %.3g at x=%.9g (|ref| > %g)\n",
            what, n, worst_abs, x[at_abs], worst_rel, x[at_rel], rel_floor);
    CHECKF(worst_abs <= max_abs, "%s: |err| %.3g > %.3g at [%zu] x=%.9g got %.9g want %.9g", what,
           worst_abs, max_abs, at_abs, x[at_abs], got[at_abs], ref(x[at_abs]));
    CHECKF(worst_rel <= max_rel, "%s: rel err %.3g > %.3g at [%zu] x=%.9g got %.9g want %.9g",
           what, worst_rel, max_rel, at_rel, x[at_rel], got[at_rel], ref(x[at_rel]));
    CHECKF(nan_bad == 0, "%s: %zu NaN/inf mismatches, first [%zu] x=%.9g got %.9g want %.9g", what,
           nan_bad, nan_at, x[nan_at], got[nan_at], ref(x[nan_at]));
}

/* Inputs a kernel must survive: zeros, subnormals, huge, infinite, NaN, and
 * the points where GELU's result becomes subnormal or its interval changes. */
static const float special[] = {
    0.0f, -0.0f, 1e-45f, -1e-45f, 1e-38f, -1e-38f, 1e-30f, -1e-30f, 1e-7f, -1e-7f,
    0.5f, -0.5f, 1.0f, -1.0f, 3.0f, -3.0f, 13.0f, -13.0f, 14.0f, -14.0f, 14.5f, -14.5f,
    20.0f, -20.0f, 100.0f, -100.0f, 1e10f, -1e10f, 1e30f, -1e30f, FLT_MAX, -FLT_MAX,
    INFINITY, -INFINITY, NAN, -NAN,
};
#define N_SPECIAL (sizeof special / sizeof special[0])

/* ---------------------------------------------------------------- GELU */

static void test_gelu(void)
{
    const size_t n_sweep = 2000000;
    size_t n = n_sweep + N_SPECIAL;
    float *x = alloc_floats(n), *got = alloc_floats(n), *want = alloc_floats(n);
    for (size_t i = 0; i < n_sweep; i++)
        x[i] = (float)(-12.0 + 24.0 * (double)i / (double)(n_sweep - 1));
    memcpy(x + n_sweep, special, sizeof special);

    gelu_forward_avx512(got, x, n);
    check_vs_ref("gelu vs double", x, got, n, gelu_ref, 5e-7, 1e-3, 3e-6);
    /* the whole normal range, subnormal results (|x| > ~13) excluded */
    check_vs_ref("gelu vs double, rel. where |ref| > FLT_MIN", x, got, n, gelu_ref, 5e-7,
                 FLT_MIN * 1e4, 1e-6);

    /* exact limits and signs where the double formula cannot be trusted */
    for (size_t i = n_sweep; i < n; i++) {
        float v = x[i], g = got[i];
        if (isnan(v))
            CHECKF(isnan(g), "gelu(NaN) = %g", g);
        else if (v >= 14.5f)
            CHECKF(g == v, "gelu(%g) = %.9g, want x", v, g);
        else if (v <= -14.5f)
            CHECKF(g == 0.0f && signbit(g), "gelu(%g) = %g, want -0", v, g);
    }
    CHECK(got[n_sweep + 1] == 0.0f && signbit(got[n_sweep + 1])); /* gelu(-0) = -0 */

    /* the scalar kernel (glibc erff) on the same inputs */
    gelu_forward(want, x, n_sweep);
    check_close("gelu vs scalar gelu_forward", got, want, n_sweep, 1e-6, 0);

    /* a length that ends in a partial vector, and in place */
    size_t odd = 1000003;
    float *y = alloc_floats(odd + 16);
    for (size_t i = 0; i < odd + 16; i++)
        y[i] = lcg_uniform(-8.0f, 8.0f);
    float guard = y[odd];
    memcpy(got, y, odd * sizeof(float));
    gelu_forward_avx512(want, y, odd);
    gelu_forward_avx512(y, y, odd);
    CHECKF(memcmp(y, want, odd * sizeof(float)) == 0, "gelu in place differs from out of place");
    CHECKF(y[odd] == guard, "gelu wrote past n");
    gelu_forward(want, got, odd);
    check_close("gelu n=1000003 in place vs scalar", y, want, odd, 1e-6, 0);
    for (size_t len = 1; len <= 33; len++) { /* every tail length */
        float in[48], out[48];
        for (size_t i = 0; i < 48; i++) {
            in[i] = lcg_uniform(-4.0f, 4.0f);
            out[i] = 777.0f;
        }
        gelu_forward_avx512(out, in, len);
        for (size_t i = 0; i < 48; i++) {
            if (i < len)
                CHECKF(fabs(out[i] - gelu_ref(in[i])) <= 5e-7, "len %zu [%zu] x=%.9g got %.9g want %.9g",
                       len, i, in[i], out[i], gelu_ref(in[i]));
            else
                CHECKF(out[i] == 777.0f, "len %zu wrote [%zu]", len, i);
        }
    }
    free(y);
    free(x);
    free(got);
    free(want);
}

/* ---------------------------------------------------------------- QuickGELU */

static void test_quick_gelu(void)
{
    const size_t n_sweep = 500000;
    size_t n = n_sweep + N_SPECIAL;
    float *x = alloc_floats(n), *got = alloc_floats(n), *want = alloc_floats(n);
    for (size_t i = 0; i < n_sweep; i++)
        x[i] = (float)(-60.0 + 120.0 * (double)i / (double)(n_sweep - 1));
    memcpy(x + n_sweep, special, sizeof special);

    quick_gelu_forward_avx512(got, x, n);
    check_vs_ref("quick_gelu vs double", x, got, n, quick_gelu_ref, 4e-6, FLT_MIN * 1e4, 1e-6);
    for (size_t i = n_sweep; i < n; i++)
        if (isinf(x[i]))
            CHECKF(got[i] == (x[i] > 0 ? x[i] : 0.0f), "quick_gelu(%g) = %g", x[i], got[i]);

    /* the scalar kernel rounds -1.702 x before its expf: up to |1.702 x|
     * half-ulps of relative error, so compare on [-12, 12] */
    size_t m = 100001;
    for (size_t i = 0; i < m; i++)
        x[i] = lcg_uniform(-12.0f, 12.0f);
    quick_gelu_forward_avx512(got, x, m);
    quick_gelu_forward(want, x, m);
    check_close("quick_gelu vs scalar quick_gelu_forward", got, want, m, 1e-30, 4e-6);
    quick_gelu_forward_avx512(x, x, m); /* in place */
    CHECKF(memcmp(x, got, m * sizeof(float)) == 0, "quick_gelu in place differs");
    free(x);
    free(got);
    free(want);
}

/* ---------------------------------------------------------------- softmax */

/* Softmax of scale * row over n columns in double, into want. */
static void softmax_ref(float *want, const float *row, int n, float scale)
{
    double max = row[0], sum = 0;
    for (int i = 1; i < n; i++)
        if (row[i] > max)
            max = row[i];
    double e[256];
    for (int i = 0; i < n; i++) {
        e[i] = exp((double)scale * ((double)row[i] - max));
        sum += e[i];
    }
    for (int i = 0; i < n; i++)
        want[i] = (float)(e[i] / sum);
}

/* rows x (n of ld) with values from gen; checks values, row sums and padding. */
static void check_softmax(const char *what, int rows, int n, size_t ld, float scale, float lo,
                          float hi)
{
    float *x = alloc_floats((size_t)rows * ld), *orig = alloc_floats((size_t)rows * ld);
    float *want = alloc_floats((size_t)rows * ld);
    for (size_t i = 0; i < (size_t)rows * ld; i++)
        x[i] = ((i % ld) < (size_t)n) ? lcg_uniform(lo, hi) : 4242.0f + (float)i;
    memcpy(orig, x, (size_t)rows * ld * sizeof(float));
    memcpy(want, x, (size_t)rows * ld * sizeof(float));
    for (int r = 0; r < rows; r++)
        softmax_ref(want + (size_t)r * ld, orig + (size_t)r * ld, n, scale);

    softmax_rows_forward_avx512(x, (size_t)rows, n, ld, scale);
    char label[128];
    snprintf(label, sizeof label, "softmax %s n=%d ld=%zu", what, n, ld);
    check_close(label, x, want, (size_t)rows * ld, 1e-9, 2e-6);

    double worst_sum = 0;
    int pad_bad = 0;
    for (int r = 0; r < rows; r++) {
        const float *row = x + (size_t)r * ld;
        double s = 0;
        for (int i = 0; i < n; i++)
            s += row[i];
        if (fabs(s - 1.0) > worst_sum)
            worst_sum = fabs(s - 1.0);
        if (memcmp(row + n, orig + (size_t)r * ld + n, (ld - (size_t)n) * sizeof(float)))
            pad_bad++;
    }
    CHECKF(worst_sum <= 2e-6, "%s: a row sums to 1 %+.3g", label, worst_sum);
    CHECKF(pad_bad == 0, "%s: padding changed in %d rows", label, pad_bad);
    free(x);
    free(orig);
    free(want);
}

static void test_softmax(void)
{
    const int lens[] = {1, 5, 16, 17, 197};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++)
        check_softmax("logits", 37, lens[k], 224, 0.125f, -40.0f, 40.0f);
    check_softmax("near 1e4", 5, 197, 224, 0.125f, 1e4f, 1e4f + 100.0f);
    check_softmax("near -1e30", 5, 197, 224, 0.125f, -1e30f, -0.99e30f);
    check_softmax("near 1e30", 5, 17, 17, 0.125f, 1e30f, 1.01e30f);

    /* scale 1, ld n: the scalar kernel's contract */
    int rows = 12, n = 197;
    float *a = alloc_floats((size_t)rows * n), *b = alloc_floats((size_t)rows * n);
    for (size_t i = 0; i < (size_t)rows * n; i++)
        a[i] = b[i] = lcg_uniform(-10.0f, 10.0f);
    softmax_rows_forward_avx512(a, (size_t)rows, n, (size_t)n, 1.0f);
    softmax_rows_forward(b, (size_t)rows, n);
    check_close("softmax vs scalar softmax_rows_forward", a, b, (size_t)rows * n, 1e-9, 2e-6);

    /* a row of -inf but one finite value (masked attention): a one-hot row */
    float row[20];
    for (int i = 0; i < 20; i++)
        row[i] = -INFINITY;
    row[7] = 3.0f;
    softmax_rows_forward_avx512(row, 1, 20, 20, 0.125f);
    int onehot = 1;
    for (int i = 0; i < 20; i++)
        onehot &= row[i] == (i == 7 ? 1.0f : 0.0f);
    CHECKF(onehot, "softmax of a row of -inf and one 3.0 is not one-hot");
    free(a);
    free(b);
}

/* ---------------------------------------------------------------- LayerNorm */

static void test_layernorm(void)
{
    const int widths[] = {1, 8, 24, 768, 1000};
    const size_t rows = 7;
    const float eps = 1e-6f;
    for (size_t k = 0; k < sizeof widths / sizeof widths[0]; k++) {
        int C = widths[k];
        size_t n = rows * (size_t)C;
        float *x = alloc_floats(n), *got = alloc_floats(n), *want = alloc_floats(n);
        float *w = alloc_floats((size_t)C), *b = alloc_floats((size_t)C);
        float mean_got[7], rstd_got[7], mean_want[7], rstd_want[7];
        for (size_t r = 0; r < rows; r++) { /* rows with offsets, so mean matters */
            float off = lcg_uniform(-50.0f, 50.0f), spread = lcg_uniform(0.01f, 5.0f);
            for (int i = 0; i < C; i++)
                x[r * (size_t)C + i] = off + spread * lcg_uniform(-1.0f, 1.0f);
        }
        for (int i = 0; i < C; i++) {
            w[i] = lcg_uniform(0.5f, 1.5f);
            b[i] = lcg_uniform(-0.5f, 0.5f);
        }
        char label[96];
        snprintf(label, sizeof label, "layernorm C=%d", C);

        layernorm_forward(want, mean_want, rstd_want, x, w, b, rows, C, eps);
        layernorm_forward_avx512(got, mean_got, rstd_got, x, w, b, rows, C, eps);
        check_close(label, got, want, n, 1e-6, 1e-5);
        check_close("  mean", mean_got, mean_want, rows, 1e-7, 1e-6);
        check_close("  rstd", rstd_got, rstd_want, rows, 0, 1e-6);

        memset(got, 0, n * sizeof(float));
        layernorm_forward_avx512(got, NULL, NULL, x, w, b, rows, C, eps);
        check_close("  NULL mean/rstd", got, want, n, 1e-6, 1e-5);
        layernorm_forward_avx512(x, mean_got, NULL, x, w, b, rows, C, eps); /* in place */
        check_close("  in place", x, want, n, 1e-6, 1e-5);
        free(x);
        free(got);
        free(want);
        free(w);
        free(b);
    }
}

/* ---------------------------------------------------------------- backward */

static double gelu_grad_ref(double x)
{
    if (isinf(x))
        return x > 0 ? 1.0 : 0.0;
    return 0.5 * erfc(-x * M_SQRT1_2) + x * exp(-0.5 * x * x) / sqrt(2 * M_PI);
}

static double quick_gelu_grad_ref(double x)
{
    if (isinf(x))
        return x > 0 ? 1.0 : 0.0;
    double k = (double)1.702f, s = 1.0 / (1.0 + exp(-k * x));
    return s + k * x * s * (1.0 - s);
}

static void test_activation_backward(void)
{
    size_t n = 200000 + N_SPECIAL;
    float *x = alloc_floats(n), *ones = alloc_floats(n), *got = alloc_floats(n);
    for (size_t i = 0; i < n; i++) {
        x[i] = i < N_SPECIAL ? special[i] : -12.0f + 24.0f * (float)(i - N_SPECIAL) / 200000.0f;
        ones[i] = 1.0f;
    }
    /* Phi(x) + x phi(x) cancels where it crosses 0 (x near -0.75), so only
     * the absolute bound holds there: relative error where |ref| > 0.05 */
    gelu_backward_avx512(got, ones, x, n);
    check_vs_ref("gelu_backward_avx512", x, got, n, gelu_grad_ref, 1e-6, 0.05, 1e-5);
    quick_gelu_backward_avx512(got, ones, x, n);
    check_vs_ref("quick_gelu_backward_avx512", x, got, n, quick_gelu_grad_ref, 1e-6, 0.05, 1e-5);
    /* times dout, in place, every tail length, against the scalar kernels */
    size_t m = 1000;
    float *dout = alloc_floats(m), *want = alloc_floats(m), *inplace = alloc_floats(m);
    for (size_t i = 0; i < m; i++) {
        x[i] = lcg_uniform(-6.0f, 6.0f);
        dout[i] = lcg_uniform(-2.0f, 2.0f);
    }
    for (int q = 0; q < 2; q++) {
        for (size_t len = 1; len <= 40; len += 1 + (len > 20) * 6) {
            (q ? quick_gelu_backward : gelu_backward)(want, dout, x, len);
            memcpy(inplace, dout, len * sizeof(float));
            memset(inplace + len, 0x7f, (m - len) * sizeof(float)); /* a canary past the end */
            (q ? quick_gelu_backward_avx512 : gelu_backward_avx512)(inplace, inplace, x, len);
            char what[64];
            snprintf(what, sizeof what, "%s backward, %zu values in place", q ? "quick_gelu" : "gelu",
                     len);
            check_close(what, inplace, want, len, 2e-6, 2e-6);
            CHECKF(((uint32_t *)inplace)[len] == 0x7f7f7f7fu, "%s: wrote past the end", what);
        }
    }
    free(x), free(ones), free(got), free(dout), free(want), free(inplace);
}

static void test_layernorm_backward(void)
{
    static const int widths[] = {1, 8, 24, 40, 768, 1000};
    for (size_t t = 0; t < sizeof widths / sizeof widths[0]; t++) {
        int C = widths[t];
        size_t rows = 7, n = rows * (size_t)C;
        float *x = alloc_floats(n), *dout = alloc_floats(n), *w = alloc_floats((size_t)C);
        float *mean = alloc_floats(rows), *rstd = alloc_floats(rows), *tmp = alloc_floats(n);
        float *got = alloc_floats(n), *want = alloc_floats(n);
        float *db_got = calloc((size_t)C, sizeof(float)), *db_want = calloc((size_t)C, sizeof(float));
        float *dw_got = calloc((size_t)C, sizeof(float)), *dw_want = calloc((size_t)C, sizeof(float));
        for (size_t i = 0; i < n; i++) {
            x[i] = lcg_uniform(-3.0f, 5.0f);
            dout[i] = lcg_uniform(-1.0f, 1.0f);
            got[i] = want[i] = lcg_uniform(-1.0f, 1.0f); /* dx accumulates */
        }
        for (int i = 0; i < C; i++)
            w[i] = lcg_uniform(0.5f, 1.5f);
        layernorm_forward(tmp, mean, rstd, x, w, w, rows, C, 1e-6f);
        layernorm_backward(want, dw_want, db_want, dout, x, mean, rstd, w, rows, C);
        layernorm_backward_rows_avx512(got, dout, x, mean, rstd, w, rows, C);
        /* the parameter gradients in two column ranges split inside a vector */
        int cut = C / 2 + (C > 3);
        colsum_accumulate_avx512(db_got, dout, rows, (size_t)C, 0, cut);
        colsum_accumulate_avx512(db_got, dout, rows, (size_t)C, cut, C);
        layernorm_gain_grad_avx512(dw_got, dout, x, mean, rstd, rows, C, 0, cut);
        layernorm_gain_grad_avx512(dw_got, dout, x, mean, rstd, rows, C, cut, C);
        char what[64];
        snprintf(what, sizeof what, "layernorm backward dx, C=%d", C);
        check_close(what, got, want, n, 2e-5, 2e-5);
        snprintf(what, sizeof what, "layernorm backward db (column sums), C=%d", C);
        check_close(what, db_got, db_want, (size_t)C, 1e-5, 1e-5);
        snprintf(what, sizeof what, "layernorm backward dw, C=%d", C);
        check_close(what, dw_got, dw_want, (size_t)C, 1e-5, 1e-5);
        free(x), free(dout), free(w), free(mean), free(rstd), free(tmp), free(got), free(want);
        free(db_got), free(db_want), free(dw_got), free(dw_want);
    }
}

static void test_softmax_backward(void)
{
    static const int lens[] = {1, 5, 16, 17, 197};
    size_t ld = 224;
    for (size_t t = 0; t < sizeof lens / sizeof lens[0]; t++) {
        int n = lens[t], rows = 3;
        float *p = alloc_floats((size_t)rows * ld), *dp = alloc_floats((size_t)rows * ld);
        float *want = alloc_floats((size_t)rows * ld);
        for (size_t i = 0; i < (size_t)rows * ld; i++) {
            p[i] = lcg_uniform(-2.0f, 2.0f);
            dp[i] = lcg_uniform(-1.0f, 1.0f);
        }
        softmax_rows_forward_avx512(p, (size_t)rows, n, ld, 1.0f);
        memcpy(want, dp, (size_t)rows * ld * sizeof(float));
        for (int r = 0; r < rows; r++) {
            double dot = 0;
            for (int j = 0; j < n; j++)
                dot += (double)dp[r * ld + j] * p[r * ld + j];
            for (int j = 0; j < n; j++)
                want[r * ld + j] = (float)(0.125 * p[r * ld + j] * (dp[r * ld + j] - dot));
        }
        softmax_backward_rows_avx512(dp, p, (size_t)rows, n, ld, 0.125f);
        char what[64];
        snprintf(what, sizeof what, "softmax backward, %d columns (padding untouched)", n);
        check_close(what, dp, want, (size_t)rows * ld, 1e-7, 1e-5);
        free(p), free(dp), free(want);
    }
}

int main(void)
{
    if (!cpu_has_avx512()) {
        fprintf(stderr, "AVX-512 kernels: this CPU or build has no AVX-512 "
                        "(or VITFIT_NO_AVX512 is set): SKIP\n");
        return 77; /* meson's SKIP: a skip must not count as a pass */
    }
    test_gelu();
    test_quick_gelu();
    test_softmax();
    test_layernorm();
    test_activation_backward();
    test_layernorm_backward();
    test_softmax_backward();
    return check_result();
}
