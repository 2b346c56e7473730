/* fail_pthread_create.c - see fail_pthread_create.h. */
#include "fail_pthread_create.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

int __real_pthread_create(pthread_t *thread, const pthread_attr_t *attr,
                          void *(*fn)(void *), void *arg);
int __wrap_pthread_create(pthread_t *thread, const pthread_attr_t *attr,
                          void *(*fn)(void *), void *arg);

static atomic_int calls;   /* since arming */
static atomic_int live;    /* threads started through here, still in their start routine */
static atomic_int fail_at; /* 0: never */
static atomic_int armed;   /* set by arming or by the environment */

void fail_pthread_create_arm(int nth)
{
    atomic_store(&armed, 1);
    atomic_store(&calls, 0);
    atomic_store(&fail_at, nth);
}

int fail_pthread_create_calls(void)
{
    return atomic_load(&calls);
}

int fail_pthread_create_live(void)
{
    return atomic_load(&live);
}

typedef struct trampoline {
    void *(*fn)(void *);
    void *arg;
} trampoline;

/* Counts the thread as live while its start routine runs. */
static void *run(void *p)
{
    trampoline t = *(trampoline *)p;
    free(p);
    void *ret = t.fn(t.arg);
    atomic_fetch_sub(&live, 1);
    return ret;
}

int __wrap_pthread_create(pthread_t *thread, const pthread_attr_t *attr,
                          void *(*fn)(void *), void *arg)
{
    if (!atomic_exchange(&armed, 1)) { /* the first call of a binary nobody armed */
        const char *nth = getenv("VITFIT_TEST_FAIL_THREAD");
        if (nth)
            atomic_store(&fail_at, atoi(nth));
    }
    if (atomic_fetch_add(&calls, 1) + 1 == atomic_load(&fail_at))
        return EAGAIN;
    trampoline *t = malloc(sizeof *t);
    if (!t)
        return EAGAIN;
    *t = (trampoline){fn, arg};
    atomic_fetch_add(&live, 1);
    int rc = __real_pthread_create(thread, attr, run, t);
    if (rc != 0) {
        atomic_fetch_sub(&live, 1);
        free(t);
    }
    return rc;
}
