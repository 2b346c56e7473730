/*
 * pool.c - thread team with spin-then-sleep hand-off (see pool.h).
 *
 * Helpers wait for `generation` to move.  They first spin for a bounded
 * number of pause instructions, since the next region usually starts within
 * microseconds, and then sleep on the condition variable so an idle worker
 * costs nothing.  The lost-wakeup race is closed by re-checking the
 * generation under the mutex before waiting and by the caller taking the
 * mutex to broadcast after it moves the generation.
 */
#include "pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* About 100-300 us of spinning on current x86 cores. */
enum { SPIN_LIMIT = 1 << 13 };

/* The words members spin on sit on cache lines of their own, so a member
 * arriving at the barrier does not steal the line the others poll. */
struct vit_team {
    int threads;
    pthread_t *helpers;          /* threads - 1 */
    pthread_mutex_t mu;
    pthread_cond_t wake;
    vit_team_fn fn;              /* the current region; published by generation */
    void *ctx;
    atomic_int stop;
    _Alignas(64) atomic_uint generation; /* bumped once per region */
    _Alignas(64) atomic_int running;     /* helpers still inside the current region */
    _Alignas(64) atomic_int barrier_waiting; /* members at the barrier */
    _Alignas(64) atomic_uint barrier_phase;  /* bumped when the last member arrives */
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

/* Spins, then yields, until *word != seen. */
static void wait_change(atomic_uint *word, unsigned seen)
{
    for (int i = 0; atomic_load_explicit(word, memory_order_acquire) == seen; i++) {
        if (i < SPIN_LIMIT)
            cpu_relax();
        else
            sched_yield(); /* more busy threads than cores: let the others run */
    }
}

static void *helper_main(void *p)
{
    helper_arg *arg = p;
    vit_team *t = arg->team;
    int member = arg->member;
    free(arg);
    unsigned seen = 0;
    for (;;) {
        unsigned gen;
        int spins = 0;
        while ((gen = atomic_load_explicit(&t->generation, memory_order_acquire)) == seen &&
               spins++ < SPIN_LIMIT)
            cpu_relax();
        if (gen == seen) {
            pthread_mutex_lock(&t->mu);
            while ((gen = atomic_load_explicit(&t->generation, memory_order_acquire)) == seen)
                pthread_cond_wait(&t->wake, &t->mu);
            pthread_mutex_unlock(&t->mu);
        }
        seen = gen;
        if (atomic_load_explicit(&t->stop, memory_order_acquire))
            return NULL;
        t->fn(t->ctx, member, t->threads);
        atomic_fetch_sub_explicit(&t->running, 1, memory_order_release);
    }
}

/* Publishes a region (or the stop request) to the helpers. */
static void publish(vit_team *t)
{
    atomic_fetch_add_explicit(&t->generation, 1, memory_order_release);
    pthread_mutex_lock(&t->mu);
    pthread_cond_broadcast(&t->wake);
    pthread_mutex_unlock(&t->mu);
}

vit_status vit_team_create(int threads, vit_team **out, vit_error *err)
{
    *out = NULL;
    if (threads < 1 || threads > 64)
        return vit_error_set(err, VIT_ERR_INVALID, "threads %d is outside [1, 64]", threads);
    vit_team *t = aligned_alloc(64, (sizeof *t + 63) & ~(size_t)63);
    if (t)
        memset(t, 0, sizeof *t);
    if (!t || (threads > 1 && !(t->helpers = calloc((size_t)threads - 1, sizeof *t->helpers)))) {
        free(t);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for a thread team");
    }
    t->threads = 1; /* counts started members, so a failed start can unwind */
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->wake, NULL);
    for (int i = 1; i < threads; i++) {
        helper_arg *arg = malloc(sizeof *arg);
        if (arg) {
            arg->team = t;
            arg->member = i;
        }
        if (!arg || pthread_create(&t->helpers[i - 1], NULL, helper_main, arg) != 0) {
            free(arg);
            vit_team_free(t);
            return vit_error_set(err, VIT_ERR_NOMEM, "cannot start thread %d of %d", i + 1,
                                 threads);
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
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->wake);
    free(t->helpers);
    free(t);
}

int vit_team_threads(const vit_team *t)
{
    return t->threads;
}

void vit_team_run(vit_team *t, vit_team_fn fn, void *ctx)
{
    if (t->threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    t->fn = fn;
    t->ctx = ctx;
    atomic_store_explicit(&t->running, t->threads - 1, memory_order_relaxed);
    publish(t);
    fn(ctx, 0, t->threads);
    for (int i = 0; atomic_load_explicit(&t->running, memory_order_acquire) > 0; i++) {
        if (i < SPIN_LIMIT)
            cpu_relax();
        else
            sched_yield();
    }
}

void vit_team_barrier(vit_team *t)
{
    if (t->threads == 1)
        return;
    unsigned phase = atomic_load_explicit(&t->barrier_phase, memory_order_acquire);
    if (atomic_fetch_add_explicit(&t->barrier_waiting, 1, memory_order_acq_rel) ==
        t->threads - 1) {
        atomic_store_explicit(&t->barrier_waiting, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&t->barrier_phase, 1, memory_order_release);
        return;
    }
    wait_change(&t->barrier_phase, phase);
}

void vit_team_split(int n, int member, int threads, int *begin, int *end)
{
    *begin = (int)((long long)n * member / threads);
    *end = (int)((long long)n * (member + 1) / threads);
}
