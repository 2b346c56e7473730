/*
 * test_check.c - tests the tests' assertion kit (tests/check.h).
 *
 * Every other test trusts CHECK and check_close to fail on a mismatch; this
 * one proves they do, on exactly the inputs that used to slip through: a NaN
 * reference (|got - NaN| is NaN, and NaN > tol is false), +inf against -inf
 * and inf against a finite value (inf - inf is NaN again), and a NaN result.
 * Each probe runs check_close, reads whether it counted a failure, then undoes
 * that count so only this file's own CHECKs decide the exit code.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>

#include "check.h"

/* Runs check_close_ex on n values and reports whether it failed, leaving the
 * global counters as they were. */
static int close_fails(const float *got, const float *want, size_t n, double atol, double rtol,
                       int flags)
{
    int failures = check_failures, count = check_count;
    check_close_ex("  probe", got, want, n, atol, rtol, flags);
    int failed = check_failures != failures;
    check_failures = failures;
    check_count = count;
    return failed;
}

/* One element: does check_close (no leniency) fail for got against want? */
static int fails1(float got, float want, double atol, double rtol)
{
    return close_fails(&got, &want, 1, atol, rtol, 0);
}

static void test_non_finite(void)
{
    const float inf = INFINITY, nan = NAN;
    /* tolerances as the suite uses them, and a loose one */
    static const double tols[][2] = {{0, 0}, {1e-4, 1e-4}, {1e-3, 0}, {0, 1e-3}, {1, 1}};
    for (size_t i = 0; i < sizeof tols / sizeof tols[0]; i++) {
        double a = tols[i][0], r = tols[i][1];
        CHECKF(fails1(1.0f, nan, a, r), "NaN expected, 1 got: must fail (atol %g rtol %g)", a, r);
        CHECKF(fails1(nan, nan, a, r), "NaN vs NaN without CHECK_NAN_EQUAL must fail (%g %g)", a, r);
        CHECKF(fails1(nan, 1.0f, a, r), "NaN got must fail (%g %g)", a, r);
        CHECKF(fails1(inf, nan, a, r), "inf vs NaN must fail (%g %g)", a, r);
        CHECKF(fails1(-inf, inf, a, r), "-inf vs +inf must fail (%g %g)", a, r);
        CHECKF(fails1(inf, -inf, a, r), "+inf vs -inf must fail (%g %g)", a, r);
        CHECKF(fails1(FLT_MAX, inf, a, r), "FLT_MAX vs inf must fail (%g %g)", a, r);
        CHECKF(fails1(inf, FLT_MAX, a, r), "inf vs FLT_MAX must fail (%g %g)", a, r);
        CHECKF(fails1(inf, 0.0f, a, r), "inf vs 0 must fail (%g %g)", a, r);
        CHECKF(!fails1(inf, inf, a, r), "+inf vs +inf must pass (%g %g)", a, r);
        CHECKF(!fails1(-inf, -inf, a, r), "-inf vs -inf must pass (%g %g)", a, r);
    }
    /* the explicit opt-in: NaN matches NaN, and nothing else */
    float nan1 = nan, one = 1.0f;
    CHECK(!close_fails(&nan1, &nan1, 1, 0, 0, CHECK_NAN_EQUAL));
    CHECK(close_fails(&one, &nan1, 1, 1, 1, CHECK_NAN_EQUAL));
    CHECK(close_fails(&nan1, &one, 1, 1, 1, CHECK_NAN_EQUAL));

    /* one bad value among many good ones is enough, wherever it sits */
    enum { N = 17 };
    for (int at = 0; at < N; at++) {
        float got[N], want[N];
        for (int j = 0; j < N; j++)
            got[j] = want[j] = (float)j * 0.5f - 3.0f;
        want[at] = nan;
        CHECKF(close_fails(got, want, N, 1e-3, 1e-3, 0), "NaN expected at [%d] of %d", at, N);
        want[at] = inf;
        got[at] = -inf;
        CHECKF(close_fails(got, want, N, 1e-3, 1e-3, 0), "+inf vs -inf at [%d] of %d", at, N);
        got[at] = inf;
        CHECKF(!close_fails(got, want, N, 1e-3, 1e-3, 0), "equal infinities at [%d]", at);
    }

    /* the return value reports the mismatch too */
    float g = 1.0f, w = nan;
    int failures = check_failures, count = check_count;
    double d = check_close("  probe (return value)", &g, &w, 1, 0, 0);
    check_failures = failures;
    check_count = count;
    CHECKF(isinf(d), "max |diff| against NaN should be inf, got %g", d);
}

static void test_finite(void)
{
    /* the tolerance is atol + rtol * |want|, inclusive */
    CHECK(!fails1(1.0f, 1.0f, 0, 0));
    CHECK(!fails1(0.0f, -0.0f, 0, 0));
    CHECK(!fails1(1.5f, 1.0f, 0.5, 0));
    CHECK(fails1(1.5f, 1.0f, 0.25, 0));
    CHECK(!fails1(110.0f, 100.0f, 0, 0.1));
    CHECK(fails1(111.0f, 100.0f, 0, 0.1));
    CHECK(!fails1(111.0f, 100.0f, 1, 0.1));
    CHECK(fails1(nextafterf(1.0f, 2.0f), 1.0f, 0, 0));
    /* relative to want, not to got */
    CHECK(fails1(-100.0f, 1.0f, 0, 1.5));
    /* nothing to compare passes */
    CHECK(!close_fails(NULL, NULL, 0, 0, 0, 0));
}

static void test_counters(void)
{
    int failures = check_failures, count = check_count;
    volatile int one = 1;
    fprintf(stderr, "a planted failure and its count follow (expected):\n");
    CHECK(one == 2); /* a planted failure: counted ... */
    int counted = check_failures == failures + 1 && check_count == count + 1;
    int result = check_result(); /* ... and turns the exit code non-zero */
    check_failures = failures;   /* undo it */
    CHECKF(counted, "a failed CHECK was not counted");
    CHECKF(result != 0, "check_result() returned 0 after a failure");
    CHECKF(check_failures > 0 || check_result() == 0, "check_result() with no failures");
}

int main(void)
{
    test_non_finite();
    test_finite();
    test_counters();
    return check_result();
}
