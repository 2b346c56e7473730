/*
 * check.h - the tests' tiny assertion kit.
 *
 * A failed CHECK prints file:line and the expression and counts a failure;
 * the test's main returns check_result(), non-zero if anything failed, so a
 * mismatch can never pass silently.  check_close compares arrays with
 * |got - want| <= atol + rtol * |want| and prints the worst element; a NaN
 * on either side fails (check_close_ex can let NaN match NaN), an infinity
 * matches only the same infinity.  tests/unit/test_check.c tests this kit.
 */
#ifndef VIT_TESTS_CHECK_H
#define VIT_TESTS_CHECK_H

#include <math.h>
#include <stdio.h>
#include <string.h>

static int check_failures;
static int check_count;

/* Exit codes of a sanitizer report, set in meson's test environment
 * (tests/meson.build) and by test.sh: never a code a test expects, so a child
 * process exiting with one failed on a sanitizer report (run_cli.h checks). */
#define CHECK_EXIT_ASAN 86 /* ASan, UBSan or LSan: one runtime, one code */
#define CHECK_EXIT_TSAN 66

#define CHECK(cond)                                                                    \
    do {                                                                               \
        check_count++;                                                                 \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
            check_failures++;                                                          \
        }                                                                              \
    } while (0)

/* CHECK with a printf-style explanation. */
#define CHECKF(cond, ...)                                                              \
    do {                                                                               \
        check_count++;                                                                 \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);   \
            fprintf(stderr, __VA_ARGS__);                                              \
            fputc('\n', stderr);                                                       \
            check_failures++;                                                          \
        }                                                                              \
    } while (0)

/* How check_close_ex treats non-finite values (flags, or-ed). */
#define CHECK_NAN_EQUAL 1 /* a NaN where NaN is expected counts as equal */

/* Distance of got from want, for check_close_ex: 0 when they agree exactly
 * (infinities of the same sign included), INFINITY when they can never agree
 * (a NaN on either side - unless both are NaN and flags has CHECK_NAN_EQUAL -
 * or an infinity against anything but the same infinity), else |got - want|.
 * Why so strict: |got - want| alone is NaN for these, and NaN compares false
 * against any tolerance, so a NaN reference or inf-vs-inf used to pass. */
static inline double check_distance(float got, float want, int flags)
{
    if (isnan(got) || isnan(want))
        return isnan(got) && isnan(want) && (flags & CHECK_NAN_EQUAL) ? 0.0 : INFINITY;
    if (isinf(got) || isinf(want))
        return got == want ? 0.0 : INFINITY;
    return fabs((double)got - (double)want);
}

/* Compares n floats: element i passes when check_distance(got, want) <=
 * atol + rtol * |want| (a non-finite want contributes no tolerance).  Prints
 * the worst offender and counts one check; returns the max distance so
 * callers can report it.  flags: CHECK_NAN_EQUAL or 0. */
static inline double check_close_ex(const char *what, const float *got, const float *want,
                                    size_t n, double atol, double rtol, int flags)
{
    double max_diff = 0, worst_excess = -INFINITY;
    size_t worst = 0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = check_distance(got[i], want[i], flags);
        double tol = atol + (isfinite(want[i]) ? rtol * fabs((double)want[i]) : 0.0);
        if (d > max_diff)
            max_diff = d;
        double excess = d - tol; /* never NaN: d is never NaN, tol is finite */
        if (excess > worst_excess) {
            worst_excess = excess;
            worst = i;
        }
        if (!(d <= tol)) /* written so that a NaN tolerance fails too */
            bad++;
    }
    check_count++;
    if (bad) {
        fprintf(stderr, "%s: %zu of %zu values off; worst [%zu] got %.8g want %.8g (max |diff| %.3g, atol %g rtol %g)\n",
                what, bad, n, worst, got[worst], want[worst], max_diff, atol, rtol);
        check_failures++;
    } else {
        fprintf(stderr, "%s: ok, max |diff| %.3g over %zu values\n", what, max_diff, n);
    }
    return max_diff;
}

/* check_close_ex with no leniency: NaN anywhere fails, inf equals only the
 * same inf. */
static inline double check_close(const char *what, const float *got, const float *want,
                                 size_t n, double atol, double rtol)
{
    return check_close_ex(what, got, want, n, atol, rtol, 0);
}

static inline int check_result(void)
{
    fprintf(stderr, "%d checks, %d failed\n", check_count, check_failures);
    return check_failures ? 1 : 0;
}

#endif
