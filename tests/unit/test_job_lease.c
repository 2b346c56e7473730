/*
 * test_job_lease.c - the lease that says which replica runs a fine-tune job
 * (server/job_lease.h), without servers: several "replicas" are several
 * job_lease_self values in this process (judged remote: local_check off, as
 * replicas on other hosts are), plus forked children for the local
 * shortcut.  The watch's clock is passed in, so staleness is tested with
 * made-up times, never by sleeping through a lease.
 *
 *  1. claim: a fresh directory gives generation 1, naming its holder; a
 *     second replica is refused while the lease is fresh; the holder's
 *     lease once dropped (orphaned, as by a restore) is claimed again by
 *     its own process at once; names that are not generations (lease.0,
 *     lease.01, lease.x, ...) are ignored; a directory lease.7 and a
 *     symlink lease.9 use their names up but name no one: the claim goes
 *     past them (generation 10, job_lease_skipped 9); junk just above a
 *     live holder's lease, or above it with a gap, neither displaces the
 *     holder nor lets a claim through until the lease is stale, and the
 *     claim past it then takes the job over; junk at lease.999999999998
 *     (no room for a claim and its release) is an error at the first look
 *     and quiet at the next ones; a holder whose job directory is moved
 *     away and put back as a copy has lost its lease; no directory:
 *     NOT_FOUND.
 *  2. renew and staleness: a lease renewed (its mtime moves) is never stale
 *     however long the watcher watches; one left alone for lease_ms of the
 *     watcher's clock is taken over as generation 2, and its old holder's
 *     renew and held then say false (and stay false).
 *  3. release: the holder hands the job back ("released", generation 2);
 *     another claims it at once (generation 3); remove_all removes every
 *     lease file and nothing else, and a holder whose file was removed has
 *     lost it.  job_lease_end: a holder that lost its lease to a successor
 *     removes nothing (-1); the successor's end removes its generation and
 *     the older ones, but never a newer one.
 *  4. a lease file that names no one (its creator died before writing it):
 *     no shortcut, stale after lease_ms like any other.
 *  5. races: 8 threads claim a free job at once, and 8 claim a stale one
 *     at once (all watching it stale), 100 rounds each: exactly one wins
 *     every round, with the generation expected.
 *  6. a holder on this kernel (forked children): alive and not renewing, it
 *     is not taken over before lease_ms; dead (reaped, or a zombie not yet
 *     reaped) it is taken over at once -- but not by a replica judging
 *     holders remote, which waits for lease_ms.
 */
#define _GNU_SOURCE /* mkdtemp */
#include "job_lease.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "test_util.h"

#define LEASE_MS 1000

static char root[] = "/tmp/vitfit-test-job-lease-XXXXXX";

/* ---- helpers ------------------------------------------------------------ */

/* A fresh job directory under root. */
static const char *job_dir(char *buf, size_t n, const char *leaf)
{
    snprintf(buf, n, "%s/%s", root, leaf);
    VIT_ASSERT(mkdir(buf, 0755) == 0);
    return buf;
}

/* A replica: a self of its own, judged remote by the others' checks. */
static job_lease_self replica(void)
{
    job_lease_self me;
    vit_error err;
    VIT_ASSERT(job_lease_self_init(&me, &err) == VIT_OK);
    me.local_check = false;
    return me;
}

/* Claims with a fresh watch at time `now`. */
static job_lease *claim_at(const char *dir, const job_lease_self *me, job_lease_watch *w,
                           double now)
{
    job_lease *l = NULL;
    vit_error err = {0};
    vit_status st = job_lease_claim(dir, me, LEASE_MS, w, now, &l, &err);
    CHECKF(st == VIT_OK, "claim in %s: %s", dir, err.message);
    return l;
}

/* The text of <dir>/<name> into buf ("" when it does not read). */
static const char *file_text(const char *dir, const char *name, char *buf, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return buf;
    size_t got = fread(buf, 1, n - 1, f);
    buf[got] = '\0';
    fclose(f);
    return buf;
}

static bool exists(const char *dir, const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct stat sb;
    return lstat(path, &sb) == 0;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void rm_rf(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    VIT_ASSERT(system(cmd) == 0);
}

/* ---- 1. claim ----------------------------------------------------------- */

static void test_claim(void)
{
    fprintf(stderr, "claim\n");
    char dir[300], text[1024];
    job_dir(dir, sizeof dir, "claim");
    job_lease_self a = replica(), b = replica();
    CHECK(strcmp(a.owner, b.owner) != 0);
    job_lease_watch wa = {0}, wb = {0}, wa2 = {0};
    job_lease *la = claim_at(dir, &a, &wa, 0);
    CHECKF(la && job_lease_gen(la) == 1, "a fresh job: generation %ld",
           la ? job_lease_gen(la) : -1);
    file_text(dir, "lease.1", text, sizeof text);
    CHECKF(strstr(text, a.owner) && strncmp(text, "vitfit-job-lease 1\nowner ", 25) == 0,
           "lease.1 names its holder: %s", text);
    CHECKF(!claim_at(dir, &b, &wb, 0), "b took a fresh lease");
    CHECKF(!claim_at(dir, &b, &wb, 0.5), "b took a lease seen for half of lease_ms");
    CHECK(job_lease_held(la));
    /* a lease naming this process that it no longer holds (lost to a
     * restore of the job's directory, say) is claimed again at once */
    job_lease_drop(la);
    la = claim_at(dir, &a, &wa2, 0.001);
    CHECKF(la && job_lease_gen(la) == 2, "its own orphaned lease: generation %ld",
           la ? job_lease_gen(la) : -1);
    CHECKF(!claim_at(dir, &b, &wb, 0.002), "b took the lease a claimed again");
    job_lease_drop(la);

    /* names that are not generations */
    char junk[300], path[400];
    job_dir(junk, sizeof junk, "junk");
    static const char *const names[] = {"lease.0", "lease.01", "lease.x", "lease.", "lease.-1",
                                        "lease.1.tmp", "xlease.5"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(path, sizeof path, "%s/%s", junk, names[i]);
        FILE *f = fopen(path, "w");
        VIT_ASSERT(f && fclose(f) == 0);
    }
    snprintf(path, sizeof path, "%s/lease.7", junk);
    VIT_ASSERT(mkdir(path, 0755) == 0); /* a directory named like a generation */
    snprintf(path, sizeof path, "%s/lease.9", junk);
    VIT_ASSERT(symlink("lease.x", path) == 0); /* and a symlink */
    job_lease_watch w = {0};
    job_lease *l = claim_at(junk, &a, &w, 0);
    CHECKF(l && job_lease_gen(l) == 10 && job_lease_skipped(l) == 9,
           "past junk at the top: generation %ld, skipped %ld", l ? job_lease_gen(l) : -1,
           l ? job_lease_skipped(l) : -1);
    job_lease_drop(l);
    vit_status st;
    vit_error err = {0};

    /* junk above a live holder's lease, next to it or with a gap (the
     * reviews' repros: a directory lease.2, a FIFO lease.3): the holder
     * keeps the job and no claim goes past the junk until the lease is
     * stale; then the claim takes the generation past the junk, and the
     * holder sees it has lost the job */
    for (int gap = 0; gap <= 1; gap++) {
        char above[300];
        job_dir(above, sizeof above, gap ? "junk-gap" : "junk-above");
        job_lease_watch wa3 = {0}, wb3 = {0};
        job_lease *held = claim_at(above, &a, &wa3, 0);
        VIT_ASSERT(held && job_lease_gen(held) == 1);
        snprintf(path, sizeof path, "%s/lease.%d", above, 2 + gap);
        VIT_ASSERT(gap ? mkfifo(path, 0644) == 0 : mkdir(path, 0755) == 0);
        CHECKF(job_lease_held(held), "junk at lease.%d displaced the holder", 2 + gap);
        CHECKF(!claim_at(above, &b, &wb3, 0), "a claim went past junk over a live lease");
        CHECK(job_lease_renew(held));
        CHECKF(!claim_at(above, &b, &wb3, 0.5), "a claim went past junk over a live lease");
        l = claim_at(above, &b, &wb3, 0.5 + 2 * LEASE_MS / 1000.0);
        CHECKF(l && job_lease_gen(l) == 3 + gap && job_lease_skipped(l) == 2 + gap,
               "junk above a stale lease: generation %ld, skipped %ld",
               l ? job_lease_gen(l) : -1, l ? job_lease_skipped(l) : -1);
        CHECKF(!job_lease_held(held), "the holder did not see the claim past the junk");
        job_lease_drop(l);
        job_lease_drop(held);
    }

    /* the job's directory moved away and put back as a copy (a restore)
     * while held: the lease file there is not the holder's, which has lost
     * it (else a replica watching the copy's unchanged lease.1 would claim
     * it and both would run the job) */
    char moved[300], away[320], cmd[1400];
    job_dir(moved, sizeof moved, "moved");
    job_lease_watch wm = {0};
    job_lease *hm = claim_at(moved, &a, &wm, 0);
    VIT_ASSERT(hm);
    CHECK(job_lease_held(hm));
    snprintf(away, sizeof away, "%s.away", moved);
    snprintf(cmd, sizeof cmd, "mv '%s' '%s' && cp -a '%s' '%s'", moved, away, away, moved);
    VIT_ASSERT(system(cmd) == 0);
    CHECKF(!job_lease_held(hm), "a holder whose job directory was replaced by a copy holds it");
    job_lease_drop(hm);
    /* a plain file in the directory's place: lost too */
    job_lease_watch wf = {0};
    hm = claim_at(moved, &a, &wf, 0.001); /* its own orphan: free at once */
    VIT_ASSERT(hm);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && touch '%s'", moved, moved);
    VIT_ASSERT(system(cmd) == 0);
    CHECKF(!job_lease_held(hm), "a holder whose job directory became a file holds it");
    job_lease_drop(hm);

    /* the last generation but one (junk there, as the review planted): no
     * claim, since its release would need a 13-digit name no one reads --
     * said once, then the job waits quietly */
    char last[300];
    job_dir(last, sizeof last, "last-gen");
    snprintf(path, sizeof path, "%s/lease.999999999998", last);
    VIT_ASSERT(mkdir(path, 0755) == 0);
    job_lease_watch wl = {0};
    st = job_lease_claim(last, &a, LEASE_MS, &wl, 0, &l, &err);
    CHECKF(st == VIT_ERR_IO && !l && strstr(err.message, "last generation"),
           "the last generation, first look: %s %s", vit_status_name(st), err.message);
    err.message[0] = '\0';
    for (int k = 1; k <= 3; k++) {
        st = job_lease_claim(last, &a, LEASE_MS, &wl, k * 100.0, &l, &err);
        CHECKF(st == VIT_OK && !l && !err.message[0], "the last generation, look %d: %s %s", k,
               vit_status_name(st), err.message);
    }

    snprintf(path, sizeof path, "%s/none", root);
    st = job_lease_claim(path, &a, LEASE_MS, &w, 0, &l, &err);
    CHECKF(st == VIT_ERR_NOT_FOUND && !l, "no directory: %s", vit_status_name(st));
}

/* ---- 2. renew and staleness -------------------------------------------- */

static void test_stale(void)
{
    fprintf(stderr, "renew and staleness\n");
    char dir[300];
    job_dir(dir, sizeof dir, "stale");
    job_lease_self a = replica(), b = replica();
    job_lease_watch wa = {0}, wb = {0};
    job_lease *la = claim_at(dir, &a, &wa, 0);
    VIT_ASSERT(la);
    /* renewed between each look: never stale, whatever the watcher's clock says */
    double t = 0;
    for (int i = 0; i < 5; i++, t += 0.9) {
        CHECKF(!claim_at(dir, &b, &wb, t), "b took a renewed lease at t=%.1f", t);
        sleep_ms(5); /* so that the renew's mtime differs */
        CHECK(job_lease_renew(la));
    }
    CHECKF(!claim_at(dir, &b, &wb, t + 0.5), "b took a lease renewed 0.5 s ago");
    /* left alone for lease_ms by b's clock: taken over */
    job_lease *lb = claim_at(dir, &b, &wb, t + 0.5 + LEASE_MS / 1000.0);
    CHECKF(lb && job_lease_gen(lb) == 2, "a stale lease: b got generation %ld",
           lb ? job_lease_gen(lb) : -1);
    CHECKF(!job_lease_held(la) && !job_lease_renew(la) && !job_lease_held(la),
           "the old holder still thinks it holds the lease");
    CHECK(job_lease_renew(lb) && job_lease_held(lb));
    /* the old holder's late renew touched its own file only */
    CHECK(exists(dir, "lease.1") && exists(dir, "lease.2") && !exists(dir, "lease.3"));
    job_lease_watch wa2 = {0};
    CHECKF(!claim_at(dir, &a, &wa2, 1000), "a took b's fresh lease back");
    job_lease_release(la); /* lost: no "released" generation */
    CHECK(!exists(dir, "lease.3"));
    job_lease_drop(lb);
}

/* ---- 3. release and removal -------------------------------------------- */

static void test_release(void)
{
    fprintf(stderr, "release and removal\n");
    char dir[300], text[1024];
    job_dir(dir, sizeof dir, "release");
    FILE *f = fopen(strcat(strcpy(text, dir), "/job.json"), "w");
    VIT_ASSERT(f && fputs("{}\n", f) >= 0 && fclose(f) == 0);
    job_lease_self a = replica(), b = replica();
    job_lease_watch wa = {0}, wb = {0};
    job_lease *la = claim_at(dir, &a, &wa, 0);
    VIT_ASSERT(la);
    CHECK(!claim_at(dir, &b, &wb, 0));
    job_lease_release(la);
    file_text(dir, "lease.2", text, sizeof text);
    CHECKF(strncmp(text, "vitfit-job-lease 1\nreleased ", 28) == 0, "lease.2: %s", text);
    job_lease *lb = claim_at(dir, &b, &wb, 0.001); /* at once: no lease_ms to wait */
    CHECKF(lb && job_lease_gen(lb) == 3, "after a release: generation %ld",
           lb ? job_lease_gen(lb) : -1);
    CHECK(test_dir_entries(dir) == 4); /* job.json, lease.1..3: generations stay */
    int removed = job_lease_remove_all(dir);
    CHECKF(removed == 3 && test_dir_entries(dir) == 1 && exists(dir, "job.json"),
           "remove_all removed %d, %d entries left", removed, test_dir_entries(dir));
    CHECKF(!job_lease_held(lb), "a holder whose file was removed still holds it");
    job_lease_drop(lb);
    /* claimed again after the removal: generation 1 */
    job_lease_watch w = {0};
    job_lease *l = claim_at(dir, &a, &w, 0);
    CHECK(l && job_lease_gen(l) == 1);

    /* the end: a holder that stalled past its lease (a took it over as 2)
     * removes nothing; a's end removes 1 and 2 but not a successor's 3 */
    job_lease_watch wt = {0};
    CHECK(!claim_at(dir, &b, &wt, 0));
    job_lease *taken = claim_at(dir, &b, &wt, 2 * LEASE_MS / 1000.0 + 1);
    VIT_ASSERT(taken && job_lease_gen(taken) == 2);
    CHECKF(job_lease_end(l) == -1 && exists(dir, "lease.1") && exists(dir, "lease.2"),
           "the stale holder's end removed files");
    FILE *g = fopen(strcat(strcpy(text, dir), "/lease.3"), "w"); /* a successor, made by hand */
    VIT_ASSERT(g && fclose(g) == 0);
    CHECK(!job_lease_held(taken)); /* lease.3 says so: the end removes nothing */
    CHECK(job_lease_end(taken) == -1 && test_dir_entries(dir) == 4);
    unlink(text);
    job_lease_watch wc = {0};
    job_lease *c = claim_at(dir, &a, &wc, 0.001); /* 2 is b's, never renewed: stale later */
    CHECK(!c);
    c = claim_at(dir, &a, &wc, 2 * LEASE_MS / 1000.0 + 1);
    VIT_ASSERT(c && job_lease_gen(c) == 3);
    char next[400];
    snprintf(next, sizeof next, "%s/lease.4", dir);
    g = fopen(next, "w"); /* a successor since the last renew */
    VIT_ASSERT(g && fclose(g) == 0);
    CHECK(job_lease_end(c) == -1); /* seen at the look: lost */
    unlink(next);
    job_lease_watch wd = {0};
    c = claim_at(dir, &b, &wd, 0.001);
    CHECK(!c); /* lease.3 is a's, never renewed */
    c = claim_at(dir, &b, &wd, 2 * LEASE_MS / 1000.0 + 1);
    VIT_ASSERT(c && job_lease_gen(c) == 4);
    int ended = job_lease_end(c);
    CHECKF(ended == 4 && test_dir_entries(dir) == 1, "the end removed %d, %d entries left", ended,
           test_dir_entries(dir));
}

/* ---- 4. a lease that names no one -------------------------------------- */

static void test_unnamed(void)
{
    fprintf(stderr, "a lease that names no one\n");
    char dir[300], path[400];
    job_dir(dir, sizeof dir, "unnamed");
    snprintf(path, sizeof path, "%s/lease.1", dir);
    FILE *f = fopen(path, "w");
    VIT_ASSERT(f && fputs("vitfit-job-lease 1\nowner x/1/2/3\n", f) >= 0 && fclose(f) == 0);
    job_lease_self a;
    vit_error err;
    VIT_ASSERT(job_lease_self_init(&a, &err) == VIT_OK); /* local checks on */
    job_lease_watch w = {0};
    CHECK(!claim_at(dir, &a, &w, 0));
    CHECK(!claim_at(dir, &a, &w, 0.9));
    job_lease *l = claim_at(dir, &a, &w, 1.0);
    CHECKF(l && job_lease_gen(l) == 2, "a half-written lease after lease_ms: %ld",
           l ? job_lease_gen(l) : -1);
    job_lease_drop(l);
}

/* ---- 5. races ----------------------------------------------------------- */

typedef struct racer {
    const char *dir;
    job_lease_self me;
    job_lease_watch w;
    double now;
    pthread_barrier_t *go;
    job_lease *got;
    vit_status st;                 /* checked by the main thread (check.h counts are not atomic) */
    char why[sizeof(vit_error){0}.message];
} racer;

static void *race_run(void *arg)
{
    racer *r = arg;
    vit_error err = {0};
    pthread_barrier_wait(r->go);
    r->st = job_lease_claim(r->dir, &r->me, LEASE_MS, &r->w, r->now, &r->got, &err);
    snprintf(r->why, sizeof r->why, "%s", err.message);
    return NULL;
}

#define RACERS 8
#define ROUNDS 100

/* RACERS threads claim dir at once; returns how many won (the winner's
 * lease into *winner, the others' none). */
static int race(const char *dir, racer *rs, double now, job_lease **winner)
{
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, RACERS);
    pthread_t th[RACERS];
    for (int i = 0; i < RACERS; i++) {
        rs[i].dir = dir;
        rs[i].now = now;
        rs[i].go = &go;
        rs[i].got = NULL;
        VIT_ASSERT(pthread_create(&th[i], NULL, race_run, &rs[i]) == 0);
    }
    int won = 0;
    *winner = NULL;
    for (int i = 0; i < RACERS; i++) {
        pthread_join(th[i], NULL);
        CHECKF(rs[i].st == VIT_OK, "a racing claim: %s", rs[i].why);
        if (rs[i].got) {
            won++;
            if (*winner)
                job_lease_drop(rs[i].got);
            else
                *winner = rs[i].got;
        }
    }
    pthread_barrier_destroy(&go);
    return won;
}

static void test_races(void)
{
    fprintf(stderr, "races: %d claimers, %d rounds\n", RACERS, ROUNDS);
    racer rs[RACERS];
    for (int i = 0; i < RACERS; i++)
        rs[i].me = replica();
    job_lease_self holder = replica();
    int bad_free = 0, bad_stale = 0;
    for (int round = 0; round < ROUNDS; round++) {
        char dir[300], leaf[32];
        snprintf(leaf, sizeof leaf, "race-%d", round);
        job_dir(dir, sizeof dir, leaf);
        /* a free job */
        for (int i = 0; i < RACERS; i++)
            rs[i].w = (job_lease_watch){0};
        job_lease *w1;
        int won = race(dir, rs, 0, &w1);
        if (won != 1 || job_lease_gen(w1) != 1)
            bad_free++;
        job_lease_drop(w1);
        /* a stale one: each racer has watched it for lease_ms */
        job_lease_remove_all(dir);
        job_lease_watch hw = {0};
        job_lease *h = claim_at(dir, &holder, &hw, 0);
        VIT_ASSERT(h);
        for (int i = 0; i < RACERS; i++) {
            rs[i].w = (job_lease_watch){0};
            job_lease *none = claim_at(dir, &rs[i].me, &rs[i].w, 0);
            VIT_ASSERT(!none);
        }
        job_lease *w2;
        won = race(dir, rs, LEASE_MS / 1000.0, &w2);
        if (won != 1 || job_lease_gen(w2) != 2 || job_lease_held(h))
            bad_stale++;
        job_lease_drop(w2);
        job_lease_drop(h);
        rm_rf(dir);
    }
    CHECKF(bad_free == 0, "%d of %d rounds on a free job had no or several winners",
           bad_free, ROUNDS);
    CHECKF(bad_stale == 0, "%d of %d rounds on a stale lease had no or several winners",
           bad_stale, ROUNDS);
}

/* ---- 6. a holder on this kernel ----------------------------------------- */

/* Forks a child that claims dir as itself (local checks on) and tells over
 * a pipe; it then waits for a byte on another pipe (or its end) and exits
 * without releasing.  *to_child: the write end that lets it go. */
static pid_t child_holder(const char *dir, int *to_child)
{
    int up[2], down[2];
    VIT_ASSERT(pipe(up) == 0 && pipe(down) == 0);
    pid_t pid = fork();
    VIT_ASSERT(pid >= 0);
    if (pid == 0) {
        close(up[0]);
        close(down[1]);
        job_lease_self me;
        vit_error err;
        job_lease_watch w = {0};
        job_lease *l = NULL;
        char ok = job_lease_self_init(&me, &err) == VIT_OK &&
                  job_lease_claim(dir, &me, LEASE_MS, &w, 0, &l, &err) == VIT_OK && l;
        if (write(up[1], &ok, 1) != 1)
            _exit(2);
        char b;
        while (read(down[0], &b, 1) < 0 && errno == EINTR)
            ;
        _exit(0); /* never released: a crash */
    }
    close(up[1]);
    close(down[0]);
    char ok = 0;
    VIT_ASSERT(read(up[0], &ok, 1) == 1 && ok);
    close(up[0]);
    *to_child = down[1];
    return pid;
}

/* Waits (bounded) until pid is a zombie: /proc/pid/stat says Z. */
static bool zombie(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    for (int i = 0; i < 500; i++) {
        FILE *f = fopen(path, "r");
        size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
        if (f)
            fclose(f);
        buf[n] = '\0';
        char *p = strrchr(buf, ')');
        if (p && p[1] == ' ' && p[2] == 'Z')
            return true;
        sleep_ms(10);
    }
    return false;
}

static void test_local(void)
{
    fprintf(stderr, "a holder on this kernel\n");
    job_lease_self me, remote = replica();
    vit_error err;
    VIT_ASSERT(job_lease_self_init(&me, &err) == VIT_OK);
    if (!me.boot_id[0] || !me.pidns) {
        fprintf(stderr, "  no boot id or pid namespace here: the shortcut is off; checked "
                "that it stays off\n");
    }
    char dir[300];
    int go;

    /* alive, not renewing: not before lease_ms */
    job_dir(dir, sizeof dir, "local-alive");
    pid_t pid = child_holder(dir, &go);
    job_lease_watch w = {0};
    CHECKF(!claim_at(dir, &me, &w, 0), "took a live local holder's lease at once");
    CHECKF(!claim_at(dir, &me, &w, 0.5), "took a live local holder's lease early");

    /* a zombie (killed, not reaped yet): gone */
    VIT_ASSERT(kill(pid, SIGKILL) == 0);
    bool z = zombie(pid);
    CHECKF(z, "the killed child never showed as a zombie");
    job_lease_watch wr = {0};
    CHECKF(!claim_at(dir, &remote, &wr, 0), "a replica judging holders remote took a dead "
           "holder's lease at once");
    job_lease *l = claim_at(dir, &me, &w, 0.6);
    bool shortcut = me.boot_id[0] && me.pidns;
    CHECKF(shortcut ? l != NULL : l == NULL, "a zombie holder: %s",
           l ? "taken over at once" : "not taken over");
    job_lease_drop(l);
    int status;
    VIT_ASSERT(waitpid(pid, &status, 0) == pid);
    close(go);

    /* reaped (exited): gone */
    job_dir(dir, sizeof dir, "local-dead");
    pid = child_holder(dir, &go);
    close(go); /* the child exits */
    VIT_ASSERT(waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
               WEXITSTATUS(status) == 0);
    w = (job_lease_watch){0};
    l = claim_at(dir, &me, &w, 0);
    CHECKF(shortcut ? l && job_lease_gen(l) == 2 : l == NULL, "a dead holder: %s",
           l ? "taken over at once" : "not taken over");
    job_lease_drop(l);
    wr = (job_lease_watch){0};
    job_dir(dir, sizeof dir, "local-dead-remote");
    pid = child_holder(dir, &go);
    close(go);
    VIT_ASSERT(waitpid(pid, &status, 0) == pid);
    CHECKF(!claim_at(dir, &remote, &wr, 0), "remote judgement took a dead holder's lease at "
           "once");
    l = claim_at(dir, &remote, &wr, LEASE_MS / 1000.0);
    CHECKF(l != NULL, "remote judgement never took a dead holder's lease");
    job_lease_drop(l);
}

int main(void)
{
    VIT_ASSERT(mkdtemp(root));
    test_claim();
    test_stale();
    test_release();
    test_unnamed();
    test_races();
    test_local();
    rm_rf(root);
    return check_result();
}
