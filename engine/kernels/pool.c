/*
 * pool.c - thread team with spin-then-sleep hand-off (see pool.h).
 *
 * Every wait in the team -- a helper waiting for the next region, a member
 * at the barrier, the caller waiting for the helpers to finish a region --
 * is one pattern: spin for a short bounded time on a word, since the answer
 * usually comes within microseconds when every member has a CPU, and then
 * sleep on a futex on that word.  Never spinning unboundedly (nor yielding
 * in a loop) matters when members outnumber the CPUs (taskset, a container's
 * CPU quota, several workers): a spinning member then burns the very CPU
 * the member it waits for needs, which made a 2-thread team pinned to one
 * CPU up to 100x slower than one thread.
 *
 * Lost wake-ups are excluded by the classic store/load pairing, all
 * sequentially consistent: a sleeper increments the word's `sleepers` and
 * then re-reads the word; a waker changes the word and then reads
 * `sleepers`.  One of the two must see the other's write, and FUTEX_WAIT
 * itself re-checks the word in the kernel.  A waker with no sleepers skips
 * the system call, so the all-spinning case costs no more than before.
 *
 * How long to spin adapts per team.  On a VM a futex wake-up costs tens of
 * microseconds (the sleeper's vCPU halts and must be scheduled again), and a
 * ViT-B forward pass has some 180 waits, most of them 10-100 us imbalances
 * at a barrier: a short fixed spin slept through nearly all of them.  So
 * when each member may have a CPU of its own (the team no larger than the
 * usable CPUs when it was made), a sleep that ended soon doubles the spin
 * budget, up to SPIN_MAX -- but only if, since the budget last grew, some
 * wait's answer was posted from a CPU other than the waiter's: members that
 * share one CPU (pinned there after the team was made, placed together by
 * the scheduler, or several teams on too few CPUs) cannot overlap, since the
 * member awaited cannot run while the waiter spins, and without that check
 * their short sleeps kept each other spinning at SPIN_MAX (3-11x slower,
 * review 13b).  (Two teams whose members are spread over the same two CPUs
 * still look overlapped; review 13d measured them spinning 17% more CPU
 * for the same wall time.)  Any other sleep, and any long one (the member awaited was
 * not running), puts the budget back to SPIN_MIN.  A team with more members
 * than CPUs keeps SPIN_MIN.
 */
#define _GNU_SOURCE /* sched_getcpu */
#include "pool.h"

#include "cpu.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

/* Spin iterations (one pause each: 26 ns on the EPYC hosts measured, ~40 ns
 * on current Xeons) before sleeping, at least and at most (see above);
 * SPIN_MIN is short next to a time slice when members share a CPU. */
#ifndef VIT_TEAM_SPIN
#define VIT_TEAM_SPIN 256
#endif
enum {
    TEAM_MAX = 64, /* members of a team (pool.h) */
    SPIN_MIN = VIT_TEAM_SPIN,
    SPIN_MAX = 16 * VIT_TEAM_SPIN,
    /* a sleep shorter than this would mostly have been caught by spinning
     * up to SPIN_MAX; a longer one means the awaited member was not running */
    SHORT_SLEEP_NS = 200 * 1000,
};

/* A word members wait on, with the count of those asleep on it; on a cache
 * line of its own, so a member polling one word does not steal the line of
 * another. */
typedef struct wait_word {
    _Alignas(64) atomic_uint value;
    atomic_uint sleepers;
    atomic_int poster_cpu; /* the CPU of the member that last changed value */
} wait_word;

/* A member's part of a shared range: next item in the low half, end in the
 * high half, so the owner (taking next) and a thief (taking end - 1) agree
 * through one compare-and-swap. */
typedef struct share_part {
    _Alignas(64) _Atomic unsigned long long bounds;
} share_part;

struct vit_team {
    int threads;
    pthread_t *helpers;          /* threads - 1 */
    vit_team_fn fn;              /* the current region; published by generation */
    void *ctx;
    atomic_int stop;
    unsigned long regions;       /* regions run (the caller's count) */
    atomic_ulong sleeps;         /* futex waits entered, by any member */
    int spin_max;                /* SPIN_MAX, or SPIN_MIN when members share CPUs */
    atomic_int spin;             /* the current spin budget */
    atomic_bool overlapped;      /* a wait's answer came from another CPU */
    atomic_ulong waits, spun;    /* waits, and pauses spun in them, by any member */
    wait_word generation;        /* bumped once per region */
    wait_word running;           /* helpers still inside the current region */
    wait_word barrier_phase;     /* bumped when the last member arrives */
    _Alignas(64) atomic_int barrier_waiting; /* members at the barrier */
    share_part parts[VIT_TEAM_SLOTS][TEAM_MAX]; /* vit_team_share, per member */
};

typedef struct helper_arg {
    vit_team *team;
    int member;
} helper_arg;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Sleeps while w->value == seen (it may return early: callers re-check). */
static void futex_wait(wait_word *w, unsigned seen)
{
#ifdef __linux__
    syscall(SYS_futex, (unsigned *)&w->value, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
#else
    (void)w, (void)seen;
    sched_yield();
#endif
}

/* Wakes every sleeper on w; call after changing w->value. */
static void wake_all(wait_word *w)
{
    if (atomic_load(&w->sleepers) == 0) /* seq_cst: pairs with the sleeper's increment */
        return;
#ifdef __linux__
    syscall(SYS_futex, (unsigned *)&w->value, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#endif
}

int vit_team_next_spin(int budget, long long slept_ns, bool overlapped, int spin_max)
{
    if (slept_ns >= SHORT_SLEEP_NS || !overlapped)
        return SPIN_MIN; /* the member awaited was not running, or shares this CPU */
    return budget >= spin_max / 2 ? spin_max : 2 * budget;
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Notes, in an adapting team, that w's value is about to be changed from
 * this CPU. */
static void post_from_here(const vit_team *t, wait_word *w)
{
    if (t->spin_max > SPIN_MIN)
        atomic_store_explicit(&w->poster_cpu, sched_getcpu(), memory_order_relaxed);
}

/* After a wait on w saw its answer: the members overlap if it was posted
 * from another CPU (sched_getcpu reads the kernel's rseq area: a load). */
static void note_overlap(vit_team *t, wait_word *w)
{
    int from = atomic_load_explicit(&w->poster_cpu, memory_order_relaxed);
    if (from >= 0 && from != sched_getcpu() &&
        !atomic_load_explicit(&t->overlapped, memory_order_relaxed))
        atomic_store_explicit(&t->overlapped, true, memory_order_relaxed);
}

/* Returns the first value of w that differs from `seen`, spinning up to the
 * team's budget and then sleeping; a sleep adapts the budget (see above). */
static unsigned wait_change(vit_team *t, wait_word *w, unsigned seen)
{
    unsigned v;
    bool adapt = t->spin_max > SPIN_MIN;
    int budget = atomic_load_explicit(&t->spin, memory_order_relaxed), i = 0;
    atomic_fetch_add_explicit(&t->waits, 1, memory_order_relaxed);
    for (; i < budget; i++) {
        if ((v = atomic_load_explicit(&w->value, memory_order_acquire)) != seen) {
            if (adapt)
                note_overlap(t, w);
            atomic_fetch_add_explicit(&t->spun, (unsigned long)i, memory_order_relaxed);
            return v;
        }
        cpu_relax();
    }
    atomic_fetch_add_explicit(&t->spun, (unsigned long)i, memory_order_relaxed);
    long long start = adapt ? now_ns() : 0;
    atomic_fetch_add(&w->sleepers, 1);
    while ((v = atomic_load(&w->value)) == seen) {
        atomic_fetch_add_explicit(&t->sleeps, 1, memory_order_relaxed);
        futex_wait(w, seen);
    }
    atomic_fetch_sub(&w->sleepers, 1);
    if (adapt) {
        note_overlap(t, w);
        /* members race on these read-modify-writes; any budget in range will do */
        bool overlapped = atomic_exchange_explicit(&t->overlapped, false, memory_order_relaxed);
        atomic_store_explicit(&t->spin,
                              vit_team_next_spin(budget, now_ns() - start, overlapped, t->spin_max),
                              memory_order_relaxed);
    }
    return v;
}

static void *helper_main(void *p)
{
    helper_arg *arg = p;
    vit_team *t = arg->team;
    int member = arg->member;
    free(arg);
    unsigned seen = 0;
    for (;;) {
        seen = wait_change(t, &t->generation, seen);
        if (atomic_load_explicit(&t->stop, memory_order_acquire))
            return NULL;
        t->fn(t->ctx, member, t->threads);
        /* with several helpers the CPU kept may be another helper's: a hint */
        post_from_here(t, &t->running);
        if (atomic_fetch_sub(&t->running.value, 1) == 1) /* the last one out */
            wake_all(&t->running);
    }
}

/* Publishes a region (or the stop request) to the helpers. */
static void publish(vit_team *t)
{
    post_from_here(t, &t->generation);
    atomic_fetch_add(&t->generation.value, 1);
    wake_all(&t->generation);
}

vit_status vit_team_create(int threads, vit_team **out, vit_error *err)
{
    *out = NULL;
    if (threads < 1 || threads > TEAM_MAX)
        return vit_error_set(err, VIT_ERR_INVALID, "threads %d is outside [1, %d]", threads,
                             TEAM_MAX);
    vit_team *t = aligned_alloc(64, (sizeof *t + 63) & ~(size_t)63);
    if (t)
        memset(t, 0, sizeof *t);
    if (!t || (threads > 1 && !(t->helpers = calloc((size_t)threads - 1, sizeof *t->helpers)))) {
        free(t);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for a thread team");
    }
    t->threads = 1; /* counts started members, so a failed start can unwind */
    t->spin_max = threads <= cpu_usable_count() ? SPIN_MAX : SPIN_MIN;
    atomic_init(&t->spin, SPIN_MIN);
    atomic_init(&t->overlapped, false);
    atomic_init(&t->waits, 0);
    atomic_init(&t->spun, 0);
    for (int i = 1; i < threads; i++) {
        helper_arg *arg = malloc(sizeof *arg);
        if (arg) {
            arg->team = t;
            arg->member = i;
        }
        int rc = arg ? pthread_create(&t->helpers[i - 1], NULL, helper_main, arg) : ENOMEM;
        if (rc != 0) {
            free(arg);
            vit_team_free(t); /* stops and joins the i - 1 helpers already running */
            return vit_error_set(err, VIT_ERR_NOMEM, "cannot start thread %d of %d: %s", i + 1,
                                 threads, strerror(rc));
        }
        t->threads = i + 1;
    }
    *out = t;
    return VIT_OK;
}

void vit_team_free(vit_team *t)
{
    if (!t)
        return;
    atomic_store_explicit(&t->stop, 1, memory_order_release);
    publish(t);
    for (int i = 1; i < t->threads; i++)
        pthread_join(t->helpers[i - 1], NULL);
    free(t->helpers);
    free(t);
}

int vit_team_threads(const vit_team *t)
{
    return t->threads;
}

void vit_team_stats_get(const vit_team *t, vit_team_stats *out)
{
    out->regions = t->regions;
    out->sleeps = atomic_load_explicit(&t->sleeps, memory_order_relaxed);
    out->spin_min = SPIN_MIN;
    out->spin_max = t->spin_max;
    out->waits = atomic_load_explicit(&t->waits, memory_order_relaxed);
    out->spun = atomic_load_explicit(&t->spun, memory_order_relaxed);
    out->spin = atomic_load_explicit(&t->spin, memory_order_relaxed);
}

void vit_team_run(vit_team *t, vit_team_fn fn, void *ctx)
{
    t->regions++;
    if (t->threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    t->fn = fn;
    t->ctx = ctx;
    atomic_store_explicit(&t->running.value, (unsigned)t->threads - 1, memory_order_relaxed);
    publish(t);
    fn(ctx, 0, t->threads);
    for (unsigned left; (left = atomic_load_explicit(&t->running.value, memory_order_acquire));)
        wait_change(t, &t->running, left);
}

void vit_team_barrier(vit_team *t)
{
    if (t->threads == 1)
        return;
    unsigned phase = atomic_load_explicit(&t->barrier_phase.value, memory_order_acquire);
    if (atomic_fetch_add_explicit(&t->barrier_waiting, 1, memory_order_acq_rel) ==
        t->threads - 1) {
        atomic_store_explicit(&t->barrier_waiting, 0, memory_order_relaxed);
        post_from_here(t, &t->barrier_phase);
        atomic_fetch_add(&t->barrier_phase.value, 1);
        wake_all(&t->barrier_phase);
        return;
    }
    wait_change(t, &t->barrier_phase, phase);
}

void vit_team_split(int n, int member, int threads, int *begin, int *end)
{
    *begin = (int)((long long)n * member / threads);
    *end = (int)((long long)n * (member + 1) / threads);
}

static unsigned long long part_bounds(unsigned next, unsigned end)
{
    return (unsigned long long)end << 32 | next;
}

static void publish_part(vit_team *t, int slot, int member, int n)
{
    int begin, end;
    vit_team_split(n, member, t->threads, &begin, &end);
    atomic_store_explicit(&t->parts[slot][member].bounds,
                          part_bounds((unsigned)begin, (unsigned)end), memory_order_release);
}

vit_share vit_team_shared(vit_team *t, int slot, int member, int threads, int n)
{
    VIT_ASSERT(slot >= 0 && slot < VIT_TEAM_SLOTS && n >= 0);
    VIT_ASSERT(!t || threads == t->threads);
    return (vit_share){t, slot, member, threads, 0, n};
}

vit_share vit_team_share(vit_team *t, int slot, int member, int threads, int n)
{
    vit_share s = vit_team_shared(t, slot, member, threads, n);
    if (t && threads > 1)
        publish_part(t, slot, member, n);
    return s;
}

void vit_team_share_ahead(vit_team *t, int slot, int n)
{
    VIT_ASSERT(slot >= 0 && slot < VIT_TEAM_SLOTS && n >= 0);
    if (!t || t->threads == 1)
        return;
    for (int m = 0; m < t->threads; m++)
        publish_part(t, slot, m, n); /* vit_team_run's publish orders these */
}

/* Takes the front (owner) or the back (thief) of part p into *item. */
static bool take_from(share_part *p, bool front, int *item)
{
    unsigned long long b = atomic_load_explicit(&p->bounds, memory_order_acquire);
    for (;;) {
        unsigned next = (unsigned)b, end = (unsigned)(b >> 32);
        if (next >= end)
            return false;
        unsigned long long want = front ? part_bounds(next + 1, end) : part_bounds(next, end - 1);
        if (atomic_compare_exchange_weak_explicit(&p->bounds, &b, want, memory_order_acq_rel,
                                                  memory_order_acquire)) {
            *item = (int)(front ? next : end - 1);
            return true;
        }
    }
}

bool vit_team_take(vit_share *s, int *item)
{
    if (!s->team || s->threads == 1) {
        if (s->next >= s->end)
            return false;
        *item = s->next++;
        return true;
    }
    vit_team *t = s->team;
    if (take_from(&t->parts[s->slot][s->member], true, item))
        return true;
    for (int i = 1; i < s->threads; i++)
        if (take_from(&t->parts[s->slot][(s->member + i) % s->threads], false, item))
            return true;
    return false;
}
