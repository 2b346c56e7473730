/*
 * test_team_share.c - items shared among a team's members (vit_team_share,
 * vit_team_take): every item taken exactly once, a member's own items in
 * order, a late member's items taken by the others from the back, and a slot
 * reused across barriers inside one region.  Counted, not timed: the late
 * member sleeps long enough that the others must have finished their own.
 *
 * 1. One member (a NULL team or a team of 1) walks [0, n) in order.
 * 2. Teams of 2..4, n from 0 to well past the members: exactly once each.
 * 3. Every member shares, they meet at a barrier, then member 1 sleeps:
 *    member 0 takes its own part in order, then member 1's from the end;
 *    member 1 wakes to an empty part.
 * 4. 200 steps in one region, the slot alternating with the step's parity
 *    and a barrier between steps (as gemm.c's passes use them): each step's
 *    items exactly once, none taken in another step.
 * 5. Many short regions on more members than CPUs, for ThreadSanitizer.
 * 6. Parts published ahead of a region with no barrier (vit_team_share_ahead,
 *    as attention and LayerNorm use them): one or two late members of 2 or
 *    3 have all their items taken by member 0.
 * 7. 64 members, and ranges past 16 bits.
 */
#define _GNU_SOURCE /* nanosleep */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "pool.h"

enum { MAX_ITEMS = 1024, MAX_MEMBERS = 4, STEPS = 200, STEP_ITEMS = 37 };

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static void test_single_member(void)
{
    vit_team *team = NULL;
    vit_error err;
    CHECK(vit_team_create(1, &team, &err) == VIT_OK);
    vit_team *teams[2] = {NULL, team};
    for (int k = 0; k < 2; k++)
        for (int n = 0; n < 5; n++) {
            vit_share s = vit_team_share(teams[k], 0, 0, 1, n);
            int got = 0, item;
            while (vit_team_take(&s, &item)) {
                CHECKF(item == got, "one member, n %d: item %d where %d was due", n, item, got);
                got++;
            }
            CHECKF(got == n, "one member took %d of %d items", got, n);
            CHECK(!vit_team_take(&s, &item)); /* stays empty */
        }
    vit_team_free(team);
}

typedef struct once_job {
    vit_team *team;
    int n, slot;
    int late_ms;                    /* members 1..late_members sleep this long after sharing */
    int late_members;
    bool ahead;                     /* parts published by vit_team_share_ahead, no barrier */
    atomic_int taken[MAX_ITEMS];    /* times each item was taken */
    int order[MAX_MEMBERS][MAX_ITEMS]; /* items in the order each member took them */
    int count[MAX_MEMBERS];
} once_job;

static void once_region(void *p, int member, int threads)
{
    once_job *j = p;
    vit_share s;
    if (j->ahead) {
        s = vit_team_shared(j->team, j->slot, member, threads, j->n);
        if (member >= 1 && member <= j->late_members)
            sleep_ms(j->late_ms);
    } else {
        s = vit_team_share(j->team, j->slot, member, threads, j->n);
        if (j->late_ms > 0) {
            /* every part shared before anyone takes, as gemm.c's passes do;
             * a part not yet shared would look empty to the others */
            vit_team_barrier(j->team);
            if (member >= 1 && member <= j->late_members)
                sleep_ms(j->late_ms);
        }
    }
    for (int item; vit_team_take(&s, &item);) {
        if (item < 0 || item >= j->n) {
            CHECKF(0, "item %d outside [0, %d)", item, j->n);
            continue;
        }
        atomic_fetch_add(&j->taken[item], 1);
        j->order[member][j->count[member]++] = item;
    }
}

typedef struct wide_job {
    vit_team *team;
    int n;
    atomic_int *taken;
} wide_job;

static void wide_region(void *p, int member, int threads)
{
    wide_job *w = p;
    vit_share s = vit_team_share(w->team, 1, member, threads, w->n);
    vit_team_barrier(w->team);
    for (int item; vit_team_take(&s, &item);)
        if (item >= 0 && item < w->n)
            atomic_fetch_add(&w->taken[item], 1);
}

static void run_once(vit_team *team, once_job *j, int n, int slot, int late_ms)
{
    memset(j, 0, sizeof *j);
    j->team = team;
    j->n = n;
    j->slot = slot;
    j->late_ms = late_ms;
    j->late_members = 1;
    vit_team_run(team, once_region, j);
}

/* Parts published ahead (no barrier in the region): members 1..late sleep at
 * the start, so member 0 must take all of theirs too. */
static void test_share_ahead(void)
{
    static once_job job;
    for (int threads = 2; threads <= 3; threads++)
        for (int late = 1; late < threads; late++) {
            vit_team *team = NULL;
            vit_error err;
            CHECK(vit_team_create(threads, &team, &err) == VIT_OK);
            memset(&job, 0, sizeof job);
            job.team = team;
            job.n = 64;
            job.late_ms = 200;
            job.late_members = late;
            job.ahead = true;
            vit_team_share_ahead(team, 0, job.n);
            vit_team_run(team, once_region, &job);
            int others = 0;
            for (int m = 1; m <= late; m++)
                others += job.count[m];
            CHECKF(others == 0, "%d members, %d late, shared ahead: the late took %d items",
                   threads, late, others);
            for (int item = 0; item < job.n; item++)
                CHECKF(atomic_load(&job.taken[item]) == 1, "ahead: item %d taken %d times",
                       item, atomic_load(&job.taken[item]));
            vit_team_free(team);
        }
}

/* 64 members (the most a team has) on however few CPUs, and a range past
 * 16 bits: exactly once each. */
static void test_wide(void)
{
    enum { BIG = 70000 };
    static atomic_int taken[BIG];
    const int sizes[][2] = {{64, 1000}, {2, BIG}, {5, BIG}};
    for (size_t c = 0; c < sizeof sizes / sizeof sizes[0]; c++) {
        int threads = sizes[c][0], n = sizes[c][1];
        vit_team *team = NULL;
        vit_error err;
        CHECK(vit_team_create(threads, &team, &err) == VIT_OK);
        if (!team)
            continue;
        for (int i = 0; i < n; i++)
            atomic_store(&taken[i], 0);
        wide_job w = {team, n, taken};
        vit_team_run(team, wide_region, &w);
        int bad = 0;
        for (int i = 0; i < n; i++)
            bad += atomic_load(&taken[i]) != 1;
        CHECKF(bad == 0, "%d members, n %d: %d items not taken exactly once", threads, n, bad);
        vit_team_free(team);
    }
}

static void test_exactly_once(void)
{
    static once_job job;
    for (int threads = 2; threads <= MAX_MEMBERS; threads++) {
        vit_team *team = NULL;
        vit_error err;
        CHECK(vit_team_create(threads, &team, &err) == VIT_OK);
        const int sizes[] = {0, 1, 2, 3, threads - 1, threads, threads + 1, 7, 64, 97, MAX_ITEMS};
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
            for (int slot = 0; slot < VIT_TEAM_SLOTS; slot++) {
                int n = sizes[i];
                run_once(team, &job, n, slot, 0);
                int total = 0;
                for (int m = 0; m < threads; m++)
                    total += job.count[m];
                CHECKF(total == n, "%d members, n %d, slot %d: %d items taken", threads, n, slot,
                       total);
                for (int item = 0; item < n; item++)
                    CHECKF(atomic_load(&job.taken[item]) == 1,
                           "%d members, n %d: item %d taken %d times", threads, n, item,
                           atomic_load(&job.taken[item]));
            }
        vit_team_free(team);
    }
}

static void test_late_member(void)
{
    static once_job job;
    for (int threads = 2; threads <= 3; threads++) {
        vit_team *team = NULL;
        vit_error err;
        CHECK(vit_team_create(threads, &team, &err) == VIT_OK);
        int n = 60;
        run_once(team, &job, n, 1, 200);
        int b1, e1;
        vit_team_split(n, 1, threads, &b1, &e1);
        /* member 1 shared before it slept, so the others took all of its part */
        CHECKF(job.count[1] == 0, "%d members: the late member still found %d of its items",
               threads, job.count[1]);
        int b0, e0;
        vit_team_split(n, 0, threads, &b0, &e0);
        /* member 0's own part first, in order (a third member may take the
         * end of it, or all of it while member 0 waits for a CPU) */
        int own = 0;
        while (own < job.count[0] && job.order[0][own] == b0 + own)
            own++;
        bool own_first = threads > 2 || own == e0 - b0;
        for (int k = own; k < job.count[0]; k++)
            own_first &= job.order[0][k] < b0 || job.order[0][k] >= e0;
        CHECKF(own_first, "%d members: member 0 did not take its own part first, in order",
               threads);
        /* what it took of member 1's part came from the end, descending */
        int last = e1;
        for (int k = own; k < job.count[0]; k++) {
            int item = job.order[0][k];
            if (item >= b1 && item < e1) {
                CHECKF(item < last, "%d members: stolen item %d after %d (want descending)",
                       threads, item, last);
                last = item;
            }
        }
        for (int item = 0; item < n; item++)
            CHECKF(atomic_load(&job.taken[item]) == 1, "%d members, late: item %d taken %d times",
                   threads, item, atomic_load(&job.taken[item]));
        vit_team_free(team);
    }
}

typedef struct steps_job {
    vit_team *team;
    atomic_int taken[STEPS][STEP_ITEMS];
    atomic_int wrong_step; /* an item seen in a step other than its own */
} steps_job;

/* A slot shared again before every member was done with its last use would
 * show as an item taken twice in one step and never in another. */
static void steps_region(void *p, int member, int threads)
{
    steps_job *j = p;
    for (int step = 0; step < STEPS; step++) {
        /* a different size each step, so an item from the wrong step shows */
        int n = STEP_ITEMS - step % 5;
        vit_share s = vit_team_share(j->team, step & 1, member, threads, n);
        vit_team_barrier(j->team);
        for (int item; vit_team_take(&s, &item);) {
            if (item >= n)
                atomic_fetch_add(&j->wrong_step, 1);
            else
                atomic_fetch_add(&j->taken[step][item], 1);
        }
    }
}

static void test_slot_reuse(void)
{
    static steps_job job;
    for (int threads = 2; threads <= MAX_MEMBERS; threads++) {
        vit_team *team = NULL;
        vit_error err;
        CHECK(vit_team_create(threads, &team, &err) == VIT_OK);
        memset(&job, 0, sizeof job);
        job.team = team;
        vit_team_run(team, steps_region, &job);
        CHECKF(atomic_load(&job.wrong_step) == 0, "%d members: %d items from another step",
               threads, atomic_load(&job.wrong_step));
        int bad = 0;
        for (int step = 0; step < STEPS; step++)
            for (int item = 0; item < STEP_ITEMS - step % 5; item++)
                bad += atomic_load(&job.taken[step][item]) != 1;
        CHECKF(bad == 0, "%d members: %d (step, item) pairs not taken exactly once", threads,
               bad);
        vit_team_free(team);
    }
}

static void test_many_regions(void)
{
    static once_job job;
    vit_team *team = NULL;
    vit_error err;
    CHECK(vit_team_create(MAX_MEMBERS, &team, &err) == VIT_OK);
    int bad = 0;
    for (int r = 0; r < 500; r++) {
        int n = r % 41;
        run_once(team, &job, n, r % VIT_TEAM_SLOTS, 0);
        for (int item = 0; item < n; item++)
            bad += atomic_load(&job.taken[item]) != 1;
    }
    CHECKF(bad == 0, "500 regions: %d items not taken exactly once", bad);
    vit_team_free(team);
}

int main(void)
{
    test_single_member();
    test_exactly_once();
    test_late_member();
    test_share_ahead();
    test_wide();
    test_slot_reuse();
    test_many_regions();
    return check_result();
}
