/*
 * simd_avx512.h - AVX-512 exp, GELU and QuickGELU on 16 floats at a time.
 *
 * Header-only (static inline) so the element-wise kernels (ops_avx512.c) and
 * the GEMM kernel's fused epilogue (gemm_avx512.c) share one implementation
 * and inline it into their loops.  Include it only from files compiled with
 * -mavx512f -mavx512dq -mfma (engine/meson.build's avx512_args).
 *
 * Accuracy is the point of this file, not speed at any price: no -ffast-math
 * style shortcuts, NaN in gives NaN out, and overflow and underflow land on
 * the limits (inf, 0) instead of NaN.
 *
 * exp: Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, Cephes' expf
 * polynomial for e^r (about 1 ulp), then e^r * 2^n by vscalefps, which rounds
 * once even when the result is subnormal and saturates to inf or 0.
 *
 * GELU (exact erf form): with a = |x| and Q(a) = 0.5 erfc(a / sqrt 2),
 *   x >= 0: GELU = x - x Q(a)      x < 0: GELU = x Q(a)
 * so the negative side, which is a small difference 1 + erf(...) in the
 * textbook formula, is computed directly and keeps its relative accuracy.
 * Q(a) = R(a) exp(-a^2/2) where R (a scaled erfc, smooth and between 0.02
 * and 0.5) is a degree-7 polynomial on each of 16 unit intervals of a; the
 * interval's coefficients come from one vpermps per coefficient, so there is
 * no branch.  Its variable u = a - (k + 0.5) is exact, unlike a rational
 * transform such as t = c / (c + a), whose own rounding would be amplified.
 * a^2 is carried as a rounded square plus its FMA-exact error, because at
 * a = 14 an argument of -98 rounded to float would already cost 4e-6 of
 * relative error in exp.  Measured against double erf (test_ops_avx512, 2M
 * points on [-12, 12]): max |error| 2.4e-7 and max relative error 2.5e-7
 * (a few float ulps) wherever the result is a normal float; results in the
 * subnormal range (x below about -13.1) keep only their absolute accuracy.
 */
#ifndef VIT_SIMD_AVX512_H
#define VIT_SIMD_AVX512_H

#if !defined(__AVX512F__) || !defined(__AVX512DQ__) || !defined(__FMA__)
#error "simd_avx512.h needs -mavx512f -mavx512dq -mfma (see engine/meson.build)"
#endif

#include <immintrin.h>

/* p(r) * 2^n for |r| <= ln2/2 (a little more is harmless): Cephes expf's
 * polynomial, e^r = 1 + r + r^2 P(r).  n is an integer-valued float; any
 * value works, scalef saturating to inf or 0. */
static inline __m512 simd_exp_reduced_ps(__m512 n, __m512 r)
{
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);
    p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* exp(hi + lo) for finite hi and |lo| no more than a few ulps of hi: lo
 * carries the rounding error of a product (x*x or c*x) that the caller
 * computed as hi + lo with an FMA.  Leaves range limits to the caller: any
 * finite hi is fine (large |hi| saturates to inf or 0). */
static inline __m512 simd_exp_hilo_ps(__m512 hi, __m512 lo)
{
    /* ln2 split in two (Cody-Waite): ln2_hi has 9 significant bits, so
     * n * ln2_hi is exact for |n| < 2^15 and r keeps the bits of hi that a
     * single float ln2 would lose */
    const __m512 ln2_hi = _mm512_set1_ps(0.693359375f);
    const __m512 ln2_lo = _mm512_set1_ps(-2.12194440e-4f);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(hi, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, ln2_hi, hi);
    r = _mm512_fnmadd_ps(n, ln2_lo, r);
    r = _mm512_add_ps(r, lo);
    return simd_exp_reduced_ps(n, r);
}

/* e^x over the whole float range: about 1 ulp (Cephes measures 1.7e-7
 * relative), subnormal results rounded once, inf above 88.72, 0 below
 * -103.98, NaN in gives NaN out. */
static inline __m512 simd_exp_ps(__m512 x)
{
    /* Clamping keeps n * ln2 finite (x = +-inf would otherwise give
     * inf - inf); both bounds are already past overflow and underflow.
     * vmaxps/vminps return their second operand when either is NaN, so x
     * goes second to let a NaN through. */
    x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
    x = _mm512_min_ps(_mm512_set1_ps(89.0f), x);
    const __m512 ln2_hi = _mm512_set1_ps(0.693359375f);
    const __m512 ln2_lo = _mm512_set1_ps(-2.12194440e-4f);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, ln2_hi, x);
    r = _mm512_fnmadd_ps(n, ln2_lo, r);
    return simd_exp_reduced_ps(n, r);
}

/* For a = |x| in [0, 14.5]: returns R(a) and sets *g = exp(-a^2/2), so that
 * Q(a) = 0.5 erfc(a / sqrt 2) = R(a) g (the method at the top of the file).
 * Shared by GELU and its derivative. */
static inline __m512 simd_gelu_rg_ps(__m512 a, __m512 *g_out)
{
    /* R(a) = Q(a) exp(a^2/2) on [k, k+1), k = 0..15, as a degree-7
     * polynomial in u = a - (k + 0.5); row j holds the u^(7-j) coefficient
     * of every interval: mpmath.chebyfit(lambda u: R(k + 0.5 + u),
     * [-0.5, 0.5], 8) at 40 digits, rounded to float.  Relative fitting
     * error < 5e-8 on [0, 1), far smaller beyond. */
    _Alignas(64) static const float coef[8][16] = {
        {-1.072079940e-03f, -1.054245071e-04f, -1.486995872e-05f, -2.798033066e-06f,
         -6.622305384e-07f, -1.882368810e-07f, -6.200550844e-08f, -2.302794978e-08f,
         -9.439983263e-09f, -4.201602886e-09f, -2.004277551e-09f, -1.014208788e-09f,
         -5.399201259e-10f, -3.003614478e-10f, -1.736495841e-10f, -1.038556179e-10f},
        {3.245274819e-03f, 3.822495376e-04f, 6.399428289e-05f, 1.412180367e-05f,
         3.869238021e-06f, 1.257234586e-06f, 4.679245034e-07f, 1.943107195e-07f,
         8.824685446e-08f, 4.316273749e-08f, 2.246624566e-08f, 1.232727405e-08f,
         7.076964344e-09f, 4.224991298e-09f, 2.610004882e-09f, 1.661525196e-09f},
        {-8.692261693e-03f, -1.265745741e-03f, -2.573691405e-04f, -6.771515468e-05f,
         -2.173429356e-05f, -8.142341652e-06f, -3.445589809e-06f, -1.607324648e-06f,
         -8.115631431e-07f, -4.373952920e-07f, -2.489390115e-07f, -1.483627536e-07f,
         -9.197462992e-08f, -5.899122971e-08f, -3.897455270e-08f, -2.642910358e-08f},
        {2.280361882e-02f, 4.108182196e-03f, 1.017340876e-03f, 3.201117687e-04f,
         1.206864819e-04f, 5.224309785e-05f, 2.517955581e-05f, 1.321270100e-05f,
         7.424765901e-06f, 4.413014114e-06f, 2.748124181e-06f, 1.779886392e-06f,
         1.192021689e-06f, 8.216677635e-07f, 5.807565144e-07f, 4.196008470e-07f},
        {-5.491530972e-02f, -1.249701735e-02f, -3.831132012e-03f, -1.459153815e-03f,
         -6.518066797e-04f, -3.280621991e-04f, -1.808995796e-04f, -1.071335822e-04f,
         -6.716903057e-05f, -4.411092664e-05f, -3.010015066e-05f, -2.121058441e-05f,
         -1.536018547e-05f, -1.138749395e-05f, -8.615855551e-06f, -6.635966635e-06f},
        {1.187775096e-01f, 3.518698207e-02f, 1.364823877e-02f, 6.387654225e-03f,
         3.415910675e-03f, 2.013323147e-03f, 1.276568023e-03f, 8.563535135e-04f,
         6.006361360e-04f, 4.367059864e-04f, 3.270441341e-04f, 2.510412922e-04f,
         1.967704179e-04f, 1.570178461e-04f, 1.272529351e-04f, 1.045358882e-04f},
        {-2.241328600e-01f, -9.027127972e-02f, -4.561395193e-02f, -2.673424268e-02f,
         -1.732701592e-02f, -1.205746326e-02f, -8.840390671e-03f, -6.744052015e-03f,
         -5.306914214e-03f, -4.281039635e-03f, -3.524263853e-03f, -2.950606609e-03f,
         -2.505710779e-03f, -2.153903403e-03f, -1.871015126e-03f, -1.640214167e-03f},
        {3.496188245e-01f, 2.057806661e-01f, 1.413313313e-01f, 1.063451536e-01f,
         8.480339210e-02f, 7.034269402e-02f, 6.001567534e-02f, 5.229309712e-02f,
         4.631004308e-02f, 4.154328850e-02f, 3.765885872e-02f, 3.443405859e-02f,
         3.171492557e-02f, 2.939173163e-02f, 2.738422519e-02f, 2.563239137e-02f},
    };
    __m512 k = _mm512_roundscale_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512i idx = _mm512_cvttps_epi32(k); /* NaN gives 0x80000000: vpermps reads 4 bits */
    __m512 u = _mm512_sub_ps(a, _mm512_add_ps(k, _mm512_set1_ps(0.5f)));
    __m512 r = _mm512_permutexvar_ps(idx, _mm512_load_ps(coef[0]));
    for (int j = 1; j < 8; j++)
        r = _mm512_fmadd_ps(r, u, _mm512_permutexvar_ps(idx, _mm512_load_ps(coef[j])));

    /* exp(-a^2/2) with a^2 = s + e exactly */
    __m512 s = _mm512_mul_ps(a, a);
    __m512 e = _mm512_fmsub_ps(a, a, s);
    const __m512 mhalf = _mm512_set1_ps(-0.5f);
    *g_out = simd_exp_hilo_ps(_mm512_mul_ps(s, mhalf), _mm512_mul_ps(e, mhalf));

    return r;
}

/* GELU(x) = 0.5 x (1 + erf(x / sqrt 2)), exact-erf form (see the top of the
 * file for the method and the measured error).  Large negative x gives -0,
 * large positive x gives x, +-inf gives -0 / +inf, NaN gives NaN. */
static inline __m512 simd_gelu_ps(__m512 x)
{
    const __m512 sign = _mm512_set1_ps(-0.0f);
    /* Past a = 14.5 the result is x or -0 in float (x Q(a) < 2^-150), so
     * clamping only keeps a^2 and the products finite for +-inf and FLT_MAX.
     * NaN survives as vminps's second operand. */
    __m512 a = _mm512_min_ps(_mm512_set1_ps(14.5f), _mm512_andnot_ps(sign, x));
    __m512 xc = _mm512_or_ps(a, _mm512_and_ps(x, sign)); /* x clamped to [-14.5, 14.5] */

    __m512 g;
    __m512 r = simd_gelu_rg_ps(a, &g);

    /* x R first, then times g: when g is subnormal this loses less than
     * forming Q = R g on its own. */
    __m512 xr = _mm512_mul_ps(xc, r);
    __m512 pos = _mm512_fnmadd_ps(xr, g, x); /* x - x Q, rounded once */
    __m512 neg = _mm512_mul_ps(xr, g);       /* x Q */
    /* the sign bit, not x < 0, picks the side, so GELU(-0) = -0 */
    __mmask16 is_neg = _mm512_movepi32_mask(_mm512_castps_si512(x));
    return _mm512_mask_blend_ps(is_neg, pos, neg);
}

/* GELU'(x) = Phi(x) + x phi(x) with Phi the normal CDF and phi its density:
 * Phi = 1 - Q(|x|) for x >= 0 and Q(|x|) below, phi = exp(-x^2/2) /
 * sqrt(2 pi), from the same R and g as simd_gelu_ps.  For GELU's backward
 * pass; NaN gives NaN. */
static inline __m512 simd_gelu_grad_ps(__m512 x)
{
    const __m512 sign = _mm512_set1_ps(-0.0f);
    __m512 a = _mm512_min_ps(_mm512_set1_ps(14.5f), _mm512_andnot_ps(sign, x));
    __m512 g;
    __m512 r = simd_gelu_rg_ps(a, &g); /* before g is read */
    __m512 q = _mm512_mul_ps(r, g);
    __mmask16 is_neg = _mm512_movepi32_mask(_mm512_castps_si512(x));
    __m512 cdf = _mm512_mask_blend_ps(is_neg, _mm512_sub_ps(_mm512_set1_ps(1.0f), q), q);
    __m512 pdf = _mm512_mul_ps(g, _mm512_set1_ps(0.3989422804014327f));
    __m512 xc = _mm512_or_ps(a, _mm512_and_ps(x, sign)); /* keeps inf * 0 out */
    return _mm512_fmadd_ps(xc, pdf, cdf);
}

/* QuickGELU(x) = x sigmoid(1.702 x), 1.702 being the float 1.702f the scalar
 * kernel uses.  With e = exp(-1.702 |x|) <= 1, sigmoid is 1 / (1 + e) for
 * x >= 0 and e / (1 + e) for x < 0, so nothing overflows and large negative
 * x keeps its relative accuracy down to the subnormals.  Gives x for large
 * positive x, -0 for large negative x including -inf (the scalar kernel
 * gives NaN there), NaN for NaN. */
static inline __m512 simd_quick_gelu_ps(__m512 x)
{
    const __m512 sign = _mm512_set1_ps(-0.0f);
    const __m512 c = _mm512_set1_ps(-1.702f);
    /* |x| e < 2^-150 past |x| = 65: the clamp only keeps -inf * 0 out */
    __m512 a = _mm512_min_ps(_mm512_set1_ps(65.0f), _mm512_andnot_ps(sign, x));
    __m512 hi = _mm512_mul_ps(a, c);
    __m512 lo = _mm512_fmsub_ps(a, c, hi); /* -1.702 a = hi + lo exactly */
    __m512 e = simd_exp_hilo_ps(hi, lo);
    __mmask16 is_neg = _mm512_movepi32_mask(_mm512_castps_si512(x));
    __m512 xc = _mm512_or_ps(a, _mm512_and_ps(x, sign));
    __m512 num = _mm512_mask_mul_ps(x, is_neg, xc, e);
    return _mm512_div_ps(num, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

/* d/dx x sigmoid(1.702 x) = s + 1.702 x s (1 - s), with s (1 - s) = e / (1 +
 * e)^2 for e = exp(-1.702 |x|) on both sides, so nothing overflows. */
static inline __m512 simd_quick_gelu_grad_ps(__m512 x)
{
    const __m512 sign = _mm512_set1_ps(-0.0f);
    const __m512 c = _mm512_set1_ps(-1.702f);
    __m512 a = _mm512_min_ps(_mm512_set1_ps(65.0f), _mm512_andnot_ps(sign, x));
    __m512 hi = _mm512_mul_ps(a, c);
    __m512 lo = _mm512_fmsub_ps(a, c, hi);
    __m512 e = simd_exp_hilo_ps(hi, lo);
    __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
    __mmask16 is_neg = _mm512_movepi32_mask(_mm512_castps_si512(x));
    __m512 sig = _mm512_mask_mul_ps(inv, is_neg, e, inv);
    __m512 ss = _mm512_mul_ps(_mm512_mul_ps(e, inv), inv);
    __m512 xc = _mm512_or_ps(a, _mm512_and_ps(x, sign)); /* keeps inf * 0 out */
    return _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(1.702f), xc), ss, sig);
}

#endif
