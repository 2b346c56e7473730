/*
 * test_threads.c - CPUs and threads: how many CPUs the process may use, the
 * team's waits when its members outnumber the CPUs, and clean failures when a
 * thread cannot start.
 *
 * 1. cpu_max_cpus / cpu_usable_from on synthetic cgroup cpu.max texts and
 *    affinity counts (the pure half of cpu_usable_count), and cpu_usable_in
 *    walking fake cgroup v2, hybrid and v1 trees built in a temporary
 *    directory (every ancestor's quota counts; "cpuacct" is not "cpu").
 * 2. Failed starts, injected by a wrapped pthread_create
 *    (fail_pthread_create.h): vit_team_create whose Nth helper fails returns
 *    an error and leaves no thread running; a test-only build of `vitfit`
 *    with the same wrap (argv[1]) runs `bench --workers 3` with each of its
 *    thread starts failing in turn and must exit 1 with one line (it used
 *    to hang on a barrier waiting for the missing worker).
 * 3. The spin budget: its adaptation rule, and the range a team gets from
 *    the CPUs it may use.
 * 4. Pinned to one CPU (sched_setaffinity, which is what `taskset -c` does):
 *    cpu_usable_count() is 1, the real `vitfit bench` defaults to 1 thread,
 *    and a 2-thread team completes every one of many regions with its waits
 *    going to sleep (counted, not timed) and its spin never adapting.  Runs
 *    last: every thread started after the pin inherits it.
 */
#define _GNU_SOURCE /* sched_setaffinity; nftw (test_rm_tree) */
#include <dirent.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "cpu.h"
#include "fail_pthread_create.h"
#include "gemm.h"
#include "pool.h"
#include "run_cli.h"
#include "test_util.h"

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

/* Writes text to root/rel, making the directories on the way. */
static void put_file(const char *root, const char *rel, const char *text)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    for (char *s = path + 1; (s = strchr(s, '/')); s++) { /* EEXIST is fine */
        *s = '\0';
        mkdir(path, 0755);
        *s = '/';
    }
    FILE *f = fopen(path, "w");
    CHECKF(f != NULL, "cannot create %s", path);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* cpu_usable_in over fake cgroup trees (an affinity mask of 8 CPUs).  The
 * quotas sit on parents whose children say "max" (as a container's or a
 * systemd slice's do), so reading only the process's own level misses them. */
static void test_cgroup_tree(void)
{
    char root[] = "/tmp/vitfit_cgroup_XXXXXX";
    if (!mkdtemp(root)) {
        CHECKF(0, "mkdtemp failed");
        return;
    }
    char v2[4200], hybrid[4200], v1[4200];
    snprintf(v2, sizeof v2, "%s/v2", root);
    snprintf(hybrid, sizeof hybrid, "%s/hybrid", root);
    snprintf(v1, sizeof v1, "%s/v1", root);

    /* cgroup v2: the mount holds cgroup.controllers; the root has no cpu.max */
    put_file(v2, "cgroup.controllers", "cpuset cpu io memory pids\n");
    put_file(v2, "slice/cpu.max", "150000 100000\n"); /* 1.5 CPUs: 2 */
    put_file(v2, "slice/leaf/cpu.max", "max 100000\n");
    put_file(v2, "slice/leaf/job/cpu.max", "300000 100000\n");
    put_file(v2, "wide/cpu.max", "400000 100000\n");
    put_file(v2, "wide/narrow/cpu.max", "100000 100000\n");
    /* hybrid: the unified tree beside v1, under unified/ */
    put_file(hybrid, "unified/box/cpu.max", "100000 100000\n");
    put_file(hybrid, "box/cpu.max", "garbage\n"); /* not where hybrid looks */
    /* cgroup v1: the cpu controller's CFS quota, -1 meaning none */
    put_file(v1, "cpu/grp/cpu.cfs_quota_us", "250000\n");
    put_file(v1, "cpu/grp/cpu.cfs_period_us", "100000\n");
    put_file(v1, "cpu/grp/sub/cpu.cfs_quota_us", "-1\n");
    put_file(v1, "cpu/grp/sub/cpu.cfs_period_us", "100000\n");

    static const struct {
        int tree; /* 0: v2, 1: hybrid, 2: v1 */
        const char *proc;
        int want;
    } cases[] = {
        {0, "0::/slice/leaf\n", 2},         /* the parent's quota binds the "max" leaf */
        {0, "0::/slice/leaf", 2},           /* no final newline */
        {0, "0::/slice/leaf/job\n", 2},     /* the tightest of three levels */
        {0, "0::/wide/narrow\n", 1},        /* the leaf tighter than its parent */
        {0, "0::/slice\n", 2},
        {0, "0::/\n", 8},                   /* the root: no cpu.max, no limit */
        {0, "0::/gone/away\n", 8},          /* missing directories limit nothing */
        {0, "0::slice/leaf\n", 8},          /* not an absolute path: ignored */
        {0, "garbage\n0:/slice\n", 8},      /* malformed lines ignored */
        {0, "", 8},
        {1, "0::/box\n", 1},                /* hybrid: unified/ */
        {1, "4:cpu,cpuacct:/nothing\n0::/box\n", 1},
        {2, "4:cpu,cpuacct:/grp/sub\n", 3}, /* v1: the parent's 2.5 CPUs */
        {2, "4:cpuacct,cpu:/grp/sub\n", 3}, /* "cpu" second in the list */
        {2, "4:cpu:/grp\n", 3},
        {2, "4:cpuacct:/grp/sub\n", 8},     /* cpuacct is not cpu */
        {2, "4:cpuacct:/grp\n", 8},
        {2, "3:cpuset:/grp\n", 8},          /* nor is cpuset */
        {2, "12:memory:/x\n4:cpu,cpuacct:/grp/sub\n0::/\n", 3},
        {2, "4:cpu,cpuacct:/\n", 8},
    };
    const char *trees[] = {v2, hybrid, v1};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got = cpu_usable_in(8, trees[cases[i].tree], cases[i].proc);
        char shown[128]; /* the text on one line, newlines as | */
        snprintf(shown, sizeof shown, "%s", cases[i].proc);
        for (char *c = shown; (c = strchr(c, '\n'));)
            *c = '|';
        CHECKF(got == cases[i].want, "tree %s, /proc/self/cgroup \"%s\": %d CPUs, want %d",
               cases[i].tree == 0 ? "v2" : cases[i].tree == 1 ? "hybrid" : "v1", shown, got,
               cases[i].want);
    }
    CHECK(cpu_usable_in(8, v2, NULL) == 8);
    CHECK(cpu_usable_in(1, v2, "0::/wide\n") == 1); /* the mask still counts */
    CHECK(cpu_usable_in(8, root, "0::/v2/slice\n") == 8); /* root is not v2's mount */
    test_rm_tree(root);
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

/* ---- 3. the spin budget ---- */

/* The adaptation rule on its own, and the range a team gets: adaptive when
 * each member has a CPU of the process's own. */
static void test_spin_budget(void)
{
    vit_error err = {0};
    vit_team *team = NULL;
    CHECK(vit_team_create(2, &team, &err) == VIT_OK);
    if (!team)
        return;
    vit_team_stats st;
    vit_team_stats_get(team, &st);
    vit_team_free(team);
    int lo = st.spin_min, hi = 16 * lo;
    CHECKF(lo >= 64, "spin_min %d", lo);
    if (cpu_usable_count() >= 2)
        CHECKF(st.spin_max > st.spin_min, "2 members on %d CPUs spin at most %d pauses, the least",
               cpu_usable_count(), st.spin_max);
    else
        CHECKF(st.spin_max == st.spin_min, "2 members on 1 CPU adapt their spin (%d..%d)",
               st.spin_min, st.spin_max);
    /* a short sleep doubles the budget up to the most once members were
     * seen running at once; a long one, or none seen, resets it */
    CHECK(vit_team_next_spin(lo, 20 * 1000, true, hi) == 2 * lo);
    CHECK(vit_team_next_spin(hi / 2, 20 * 1000, true, hi) == hi);
    CHECK(vit_team_next_spin(hi, 20 * 1000, true, hi) == hi);
    CHECK(vit_team_next_spin(3 * lo, 20 * 1000, true, hi) == 6 * lo);
    CHECK(vit_team_next_spin(hi, 5 * 1000 * 1000, true, hi) == lo);
    CHECK(vit_team_next_spin(4 * lo, 1000 * 1000, true, hi) == lo);
    CHECK(vit_team_next_spin(lo, 20 * 1000, false, hi) == lo);
    CHECK(vit_team_next_spin(hi, 20 * 1000, false, hi) == lo);
}

/* ---- 4. one CPU, two threads ---- */

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

/* Sets the affinity of every thread of this process, as `taskset -a -p`
 * does to a running server; false if one could not be set. */
static bool set_all_threads(const cpu_set_t *set)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return false;
    bool ok = true;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] >= '0' && e->d_name[0] <= '9')
            ok &= sched_setaffinity((pid_t)atoi(e->d_name), sizeof *set, set) == 0;
    closedir(d);
    return ok;
}

/* A team made while each member had a CPU, then pinned with them all to
 * one CPU, as `taskset -a -p` does to a running server: the member awaited
 * cannot run while the waiter spins, so no wait sees its answer arrive
 * mid-spin and the spin must stay near its least.  Spinning up to the most
 * on every short sleep made each region ~3x slower, all of it burnt CPU
 * (review 13b); counted here, not timed. */
static void test_pinned_after_start(void)
{
    enum { REGIONS = 2000 };
    cpu_set_t before, one;
    if (cpu_usable_count() < 2 || sched_getaffinity(0, sizeof before, &before) != 0)
        return; /* nothing adapts on one CPU */
    vit_error err = {0};
    vit_team *team = NULL;
    CHECK(vit_team_create(2, &team, &err) == VIT_OK);
    if (!team)
        return;
    CPU_ZERO(&one);
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &before)) {
            CPU_SET(c, &one);
            break;
        }
    CHECK(set_all_threads(&one));
    probe pr = {.team = team};
    vit_team_stats st0, st;
    vit_team_stats_get(team, &st0);
    for (int i = 0; i < REGIONS; i++)
        vit_team_run(team, probe_region, &pr);
    vit_team_stats_get(team, &st);
    CHECK(set_all_threads(&before));
    vit_team_free(team);
    unsigned long waits = st.waits - st0.waits, spun = st.spun - st0.spun;
    unsigned long sleeps = st.sleeps - st0.sleeps;
    CHECKF(waits >= 2ul * REGIONS && spun <= 2ul * (unsigned long)st.spin_min * waits &&
               spun >= (unsigned long)st.spin_min * (sleeps / 2),
           "pinned after the start: %lu waits spun %lu pauses (%.0f each, the least is %d)", waits,
           spun, (double)spun / (double)(waits ? waits : 1), st.spin_min);
    fprintf(stderr, "2 threads pinned after the start: %lu waits, %.0f pauses each\n", waits,
            (double)spun / (double)(waits ? waits : 1));
}

/* Region where member 1 arrives ~20 us after member 0 (busy, wall time). */
static void late_region(void *p, int member, int threads)
{
    probe *pr = p;
    (void)threads;
    pr->visits[member]++;
    if (member == 1) {
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        do
            clock_gettime(CLOCK_MONOTONIC, &t);
        while ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) < 20000);
    }
    vit_team_barrier(pr->team);
}

/* Members on two CPUs of their own, the helper ~20 us late at each barrier
 * (3x the least spin): their sleeps are short and answered from the other
 * CPU, so the spin must grow past its least (it never did when growth waited
 * for an answer arriving mid-spin, review 13c). */
static void test_free_team_grows(void)
{
    cpu_set_t before, mine, other;
    if (cpu_usable_count() < 2 || sched_getaffinity(0, sizeof before, &before) != 0)
        return;
    int cpus[2], n = 0;
    for (int c = 0; c < CPU_SETSIZE && n < 2; c++)
        if (CPU_ISSET(c, &before))
            cpus[n++] = c;
    vit_error err = {0};
    vit_team *team = NULL;
    CHECK(vit_team_create(2, &team, &err) == VIT_OK);
    if (!team || n < 2) {
        vit_team_free(team);
        return;
    }
    CPU_ZERO(&mine);
    CPU_SET(cpus[0], &mine);
    CPU_ZERO(&other);
    CPU_SET(cpus[1], &other);
    CHECK(set_all_threads(&other) && sched_setaffinity(0, sizeof mine, &mine) == 0);
    probe pr = {.team = team};
    vit_team_stats st = {0};
    int most = 0, regions = 0;
    for (; regions < 20000 && most < 4 * st.spin_min + 1; regions++) {
        vit_team_run(team, late_region, &pr);
        vit_team_stats_get(team, &st);
        most = st.spin > most ? st.spin : most;
    }
    CHECK(set_all_threads(&before));
    vit_team_free(team);
    CHECKF(most > 2 * st.spin_min, "two free members, %d regions: the spin reached %d pauses "
           "at most (least %d)", regions, most, st.spin_min);
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
    /* a spinning member would hold the CPU the other needs */
    CHECKF(st.spin_max == st.spin_min, "pinned, the team adapts its spin (%d..%d)", st.spin_min,
           st.spin_max);
    CHECKF(st.spun <= (unsigned long)st.spin_min * st.waits &&
               st.spun >= (unsigned long)st.spin_min * (st.sleeps / 2),
           "pinned, %lu waits (%lu sleeps) spun %lu pauses", st.waits, st.sleeps, st.spun);
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
    test_cgroup_tree();
    test_team_start_failure();
    test_bench_start_failure(argv[1]);
    test_spin_budget();
    test_pinned_after_start();
    test_free_team_grows();
    test_one_cpu();
    return check_result();
}
