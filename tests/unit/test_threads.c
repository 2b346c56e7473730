/*
 * test_threads.c - CPUs and threads: how many CPUs the process may use, the
 * team's waits when its members outnumber the CPUs, and clean failures when a
 * thread cannot start.
 *
 * 1. cpu_max_cpus / cpu_usable_from on synthetic cgroup cpu.max texts and
 *    affinity counts (the pure half of cpu_usable_count).
 * 2. Failed starts, injected by a wrapped pthread_create
 *    (fail_pthread_create.h): vit_team_create whose Nth helper fails returns
 *    an error and leaves no thread running; a test-only build of `vitfit`
 *    with the same wrap (argv[1]) runs `bench --workers 3` with each of its
 *    thread starts failing in turn and must exit 1 with one line (it used
 *    to hang on a barrier waiting for the missing worker).
 * 3. Pinned to one CPU (sched_setaffinity, which is what `taskset -c` does):
 *    cpu_usable_count() is 1, the real `vitfit bench` defaults to 1 thread,
 *    and a 2-thread team completes every one of many regions with its waits
 *    going to sleep (counted, not timed).  Runs last: every thread started
 *    after the pin inherits it.
 */
#define _GNU_SOURCE /* sched_setaffinity */
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cpu.h"
#include "fail_pthread_create.h"
#include "gemm.h"
#include "pool.h"
#include "run_cli.h"

/* ---- 1. the decision on synthetic inputs ---- */

static void test_cpu_max(void)
{
    static const struct {
        const char *text;
        int cpus;
    } cases[] = {
        {"100000 100000", 1}, {"150000 100000", 2}, {"50000 100000", 1}, {"1 100000", 1},
        {"200000 100000\n", 2}, {"400000 100000", 4}, {"max 100000", 0}, {"max", 0},
        {"max\n", 0}, {"", -1}, {"\n", -1}, {"100000", -1}, {"0 100000", -1},
        {"100000 0", -1}, {"-100000 100000", -1}, {"100000 -1", -1}, {"100000  100000", -1},
        {"100000 100000 x", -1}, {"maximum", -1}, {"max 0", -1}, {"1.5 1", -1},
        {"99999999999999999999 100000", -1}, {" 100000 100000", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECKF(cpu_max_cpus(cases[i].text) == cases[i].cpus, "cpu_max_cpus(\"%s\") = %d, want %d",
               cases[i].text, cpu_max_cpus(cases[i].text), cases[i].cpus);
    CHECK(cpu_max_cpus(NULL) == -1);

    /* the affinity count, lowered by the tightest quota of any level */
    const char *one[] = {"100000 100000"}, *two[] = {"150000 100000"};
    const char *unlimited[] = {"max 100000"}, *bare_max[] = {"max"}, *bad[] = {"garbage"};
    const char *levels[] = {"max 100000", "300000 100000", NULL, "150000 100000", "junk"};
    CHECK(cpu_usable_from(8, one, 1) == 1);
    CHECK(cpu_usable_from(8, two, 1) == 2);
    CHECK(cpu_usable_from(1, two, 1) == 1); /* the mask is tighter */
    CHECK(cpu_usable_from(8, unlimited, 1) == 8);
    CHECK(cpu_usable_from(3, bare_max, 1) == 3);
    CHECK(cpu_usable_from(6, bad, 1) == 6); /* malformed: falls back to the mask */
    CHECK(cpu_usable_from(8, levels, 5) == 2);
    CHECK(cpu_usable_from(8, NULL, 0) == 8);
    CHECK(cpu_usable_from(0, NULL, 0) == 1 && cpu_usable_from(-3, two, 1) == 1);

    /* the real reader agrees with this process's mask (no quota is larger) */
    cpu_set_t set;
    CHECK(sched_getaffinity(0, sizeof set, &set) == 0);
    int mask = CPU_COUNT(&set), usable = cpu_usable_count();
    CHECKF(usable >= 1 && usable <= mask, "cpu_usable_count() = %d with %d CPUs in the mask",
           usable, mask);
    fprintf(stderr, "cpu_usable_count: %d (affinity mask: %d)\n", usable, mask);
}

/* ---- 2. failed starts ---- */

static void nothing(void *ctx, int member, int threads)
{
    (void)member, (void)threads;
    atomic_fetch_add((atomic_int *)ctx, 1);
}

static void test_team_start_failure(void)
{
    for (int nth = 1; nth <= 4; nth++) {
        vit_error err = {0};
        vit_team *team = (vit_team *)&err;
        fail_pthread_create_arm(nth);
        vit_status st = vit_team_create(4, &team, &err); /* 3 helpers */
        int calls = fail_pthread_create_calls();
        fail_pthread_create_arm(0);
        if (nth <= 3) {
            CHECKF(st == VIT_ERR_NOMEM && team == NULL, "helper %d failing: status %d", nth,
                   (int)st);
            CHECKF(calls == nth, "helper %d failing: %d starts tried", nth, calls);
            CHECKF(fail_pthread_create_live() == 0,
                   "helper %d failing: %d started helpers left running", nth,
                   fail_pthread_create_live());
            fprintf(stderr, "team of 4, start %d failing: %s\n", nth, err.message);
        } else {
            CHECKF(st == VIT_OK && team && vit_team_threads(team) == 4, "status %d", (int)st);
            CHECK(fail_pthread_create_live() == 3);
            atomic_int ran = 0;
            if (team)
                vit_team_run(team, nothing, &ran);
            CHECK(atomic_load(&ran) == 4);
            vit_team_free(team);
            CHECK(fail_pthread_create_live() == 0);
        }
    }
}

/* `vitfit bench --workers 3 --threads T` makes 3 thread starts for the
 * workers from the main thread, then T - 1 team helpers inside each worker
 * (on the packed path: the portable one has no team).
 * Each start fails in turn; the run goes through coreutils' `timeout`, so the
 * old hang (a barrier waiting for the missing worker) ends as exit 124
 * instead of leaving a stuck process. */
static void test_bench_start_failure(const char *failstart_bin)
{
    char saved[4096] = "";
    const char *bin = getenv("VITFIT_BIN");
    if (bin)
        snprintf(saved, sizeof saved, "%s", bin);
    setenv("VITFIT_BIN", "/usr/bin/timeout", 1);
    for (int threads = 1; threads <= 2; threads++) {
        int starts = 3 + (gemm_packed_available() ? 3 * (threads - 1) : 0);
        for (int nth = 0; nth <= starts + 1; nth++) {
            char n[16], t[16];
            snprintf(n, sizeof n, "%d", nth);
            snprintf(t, sizeof t, "%d", threads);
            setenv("VITFIT_TEST_FAIL_THREAD", n, 1);
            run_result *r = run_vitfit("-k", "5", "30", failstart_bin, "bench", "--preset",
                                       "vit-tiny", "--workers", "3", "--threads", t, "--iters",
                                       "2", "--warmup", "1", "--json", NULL);
            if (nth == 0 || nth > starts) { /* nothing fails */
                CHECKF(r->status == 0 && strstr(r->out, "\"workers\":3"),
                       "threads %d, start %d: exit %d: %s", threads, nth, r->status, r->err);
                continue;
            }
            CHECKF(r->status == 1 && count_lines(r->err) == 1 &&
                       strncmp(r->err, "vitfit: ", 8) == 0 && r->out[0] == '\0',
                   "threads %d, start %d failing: exit %d (124: hung), stdout '%s', stderr '%s'",
                   threads, nth, r->status, r->out, r->err);
            fprintf(stderr, "bench --workers 3 --threads %d, start %d failing: exit %d, %s",
                    threads, nth, r->status, r->err);
        }
    }
    unsetenv("VITFIT_TEST_FAIL_THREAD");
    if (bin)
        setenv("VITFIT_BIN", saved, 1);
    else
        unsetenv("VITFIT_BIN");
}

/* ---- 3. one CPU, two threads ---- */

typedef struct probe {
    vit_team *team;
    int visits[2];
} probe;

/* Two barriers per region, so the members wait on each other inside it too. */
static void probe_region(void *p, int member, int threads)
{
    probe *pr = p;
    (void)threads;
    pr->visits[member]++;
    vit_team_barrier(pr->team);
    vit_team_barrier(pr->team);
}

/* The tightest CPU in this thread's mask, or -1. */
static int pin_to_one_cpu(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return -1;
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (CPU_ISSET(c, &set)) {
            CPU_ZERO(&set);
            CPU_SET(c, &set);
            return sched_setaffinity(0, sizeof set, &set) == 0 ? c : -1;
        }
    }
    return -1;
}

/* The `threads` bench reports when not told, with `workers` workers. */
static int bench_default_threads(int workers)
{
    char w[16];
    snprintf(w, sizeof w, "%d", workers);
    run_result *r = run_vitfit("bench", "--preset", "vit-tiny", "--iters", "1", "--warmup", "0",
                               "--workers", w, "--json", NULL);
    const char *t = strstr(r->out, "\"threads\":");
    CHECKF(r->status == 0 && t, "bench: exit %d, %s%s", r->status, r->out, r->err);
    return r->status == 0 && t ? atoi(t + strlen("\"threads\":")) : -1;
}

static void test_one_cpu(void)
{
    int usable = cpu_usable_count(), all = usable > 64 ? 64 : usable;
    CHECKF(bench_default_threads(1) == all, "bench should default to the %d usable CPUs", all);
    CHECKF(bench_default_threads(2) == (all / 2 > 1 ? all / 2 : 1),
           "2 workers should share the %d usable CPUs", all);
    int cpu = pin_to_one_cpu();
    CHECKF(cpu >= 0, "cannot pin this test to one CPU");
    if (cpu < 0)
        return;
    CHECKF(cpu_usable_count() == 1, "pinned to CPU %d: cpu_usable_count() = %d", cpu,
           cpu_usable_count());
    /* the CLI's default follows (the child inherits the mask, as under taskset) */
    int threads = bench_default_threads(1);
    CHECKF(threads == 1, "pinned to one CPU, bench defaults to %d threads", threads);

    enum { REGIONS = 3000, WAITS_PER_REGION = 4 }; /* region start, 2 barriers, join */
    vit_error err = {0};
    vit_team *team = NULL;
    CHECK(vit_team_create(2, &team, &err) == VIT_OK);
    if (!team)
        return;
    probe pr = {.team = team};
    for (int i = 0; i < REGIONS; i++)
        vit_team_run(team, probe_region, &pr);
    vit_team_stats st;
    vit_team_stats_get(team, &st);
    vit_team_free(team);
    CHECKF(pr.visits[0] == REGIONS && pr.visits[1] == REGIONS, "visits %d, %d of %d",
           pr.visits[0], pr.visits[1], REGIONS);
    CHECKF(st.regions == REGIONS, "%lu regions counted", st.regions);
    /* Sharing one CPU, a waiting member can only get its answer once it
     * sleeps, so the waits must have slept -- and each at most about once:
     * a futex wait that returned at once (wrong value) would spin in the
     * kernel instead, counting far more. */
    CHECKF(st.sleeps > 0, "2 threads on 1 CPU: %lu regions without a single sleep", st.regions);
    CHECKF(st.sleeps <= 2ul * WAITS_PER_REGION * REGIONS, "%lu sleeps for %d regions",
           st.sleeps, REGIONS);
    fprintf(stderr, "2 threads pinned to CPU %d: %lu regions, %lu sleeps\n", cpu, st.regions,
            st.sleeps);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_threads VITFIT_FAILSTART_BINARY\n");
        return 2;
    }
    test_cpu_max();
    test_team_start_failure();
    test_bench_start_failure(argv[1]);
    test_one_cpu();
    return check_result();
}
