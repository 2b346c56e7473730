/*
 * test_bench_threads.c - `vitfit bench`'s threads per worker when not told.
 *
 * W workers share the usable CPUs: without --threads each gets CPUs / W
 * threads, at least 1; --threads wins.  The CPU count is faked to 8 with a
 * test build of vitfit (argv[1]; fake_cpus.c, $VITFIT_TEST_CPUS), so the
 * division is checked on any machine: on 2 CPUs, 2 / 2 and "always 1" agree.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "run_cli.h"

/* The "threads" of `bench --workers W` (threads: NULL, or --threads). */
static int bench_threads(int workers, const char *threads)
{
    char w[16];
    snprintf(w, sizeof w, "%d", workers);
    run_result *r = threads ? run_vitfit("bench", "--preset", "vit-tiny", "--iters", "1",
                                         "--warmup", "0", "--workers", w, "--threads", threads,
                                         "--json", NULL)
                            : run_vitfit("bench", "--preset", "vit-tiny", "--iters", "1",
                                         "--warmup", "0", "--workers", w, "--json", NULL);
    const char *t = strstr(r->out, "\"threads\":");
    CHECKF(r->status == 0 && t, "bench --workers %d: exit %d, %s%s", workers, r->status, r->out,
           r->err);
    return r->status == 0 && t ? atoi(t + strlen("\"threads\":")) : -1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_bench_threads VITFIT_FAKECPUS_BINARY\n");
        return 2;
    }
    setenv("VITFIT_BIN", argv[1], 1);
    setenv("VITFIT_TEST_CPUS", "8", 1);
    static const struct {
        int workers;
        const char *threads;
        int want;
    } cases[] = {
        {1, NULL, 8}, {2, NULL, 4}, {3, NULL, 2}, {16, NULL, 1}, {2, "3", 3},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got = bench_threads(cases[i].workers, cases[i].threads);
        CHECKF(got == cases[i].want, "8 CPUs, --workers %d%s%s: %d threads each, want %d",
               cases[i].workers, cases[i].threads ? " --threads " : "",
               cases[i].threads ? cases[i].threads : "", got, cases[i].want);
    }
    return check_result();
}
