/*
 * check.h - the tests' tiny assertion kit.
 *
 * A failed CHECK prints file:line and the expression and counts a failure;
 * the test's main returns check_result(), non-zero if anything failed, so a
 * mismatch can never pass silently.  check_close compares arrays with
 * |got - want| <= atol + rtol * |want| and prints the worst element.
 */
#ifndef VIT_TESTS_CHECK_H
#define VIT_TESTS_CHECK_H

#include <math.h>
#include <stdio.h>
#include <string.h>

static int check_failures;
static int check_count;

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

/* Compares n floats; prints the worst offender and the max |diff|.  Returns
 * the max |diff| so callers can report it. */
static inline double check_close(const char *what, const float *got, const float *want,
                                  size_t n, double atol, double rtol)
{
    double max_diff = 0, worst_excess = -1;
    size_t worst = 0;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (!(d == d) || isnan(got[i]))
            d = INFINITY;
        if (d > max_diff)
            max_diff = d;
        double excess = d - (atol + rtol * fabs((double)want[i]));
        if (excess > worst_excess) {
            worst_excess = excess;
            worst = i;
        }
        if (excess > 0)
            bad++;
    }
    check_count++;
    if (bad) {
        fprintf(stderr, "%s: %d of %zu values off; worst [%zu] got %.8g want %.8g (max |diff| %.3g, atol %g rtol %g)\n",
                what, bad, n, worst, got[worst], want[worst], max_diff, atol, rtol);
        check_failures++;
    } else {
        fprintf(stderr, "%s: ok, max |diff| %.3g over %zu values\n", what, max_diff, n);
    }
    return max_diff;
}

static inline int check_result(void)
{
    fprintf(stderr, "%d checks, %d failed\n", check_count, check_failures);
    return check_failures ? 1 : 0;
}

#endif
