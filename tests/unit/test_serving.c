/*
 * test_serving.c - what the server will ask of the engine: batches whose
 * images belong to different tasks, run by several worker threads at once
 * over one shared model while tasks are replaced and freed.
 *
 * Every result is compared with the same image run alone through a view of
 * the backbone with that image's task.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gemm.h"
#include "randinit.h"
#include "task.h"
#include "test_util.h"
#include "vit.h"

enum { NUM_TASKS = 3, BATCH = 8, ROUNDS = 12, MAX_K = 16 };
static const int task_classes[NUM_TASKS] = {3, 10, 5};

/* A task with its own biases (the backbone's, shifted) and head. */
static vit_task *make_task(const vit_model *m, int t)
{
    vit_error err = {0};
    const char *names[MAX_K + 1] = {0};
    char buf[MAX_K][32];
    for (int k = 0; k < task_classes[t]; k++) {
        snprintf(buf[k], sizeof buf[k], "t%d_c%d", t, k);
        names[k] = buf[k];
    }
    vit_task *task = NULL;
    CHECKF(task_create(m, task_classes[t], names, &task, &err) == VIT_OK, "%s", err.message);
    if (!task)
        return NULL;
    float *shift = malloc(sizeof(float) * task->trainable_len);
    char name[32];
    snprintf(name, sizeof name, "task%d", t);
    randinit_fill(shift, task->trainable_len, name, 11, 0.2, 0.0);
    for (size_t i = 0; i < task->trainable_len; i++)
        task->trainable[i] += shift[i];
    free(shift);
    snprintf(task->name, sizeof task->name, "%s", name);
    return task;
}

/* Logits of image b alone with task t (NULL: the backbone). */
static void reference(const vit_model *m, const vit_task *t, const float *image, float *out)
{
    vit_error err = {0};
    vit_model *view = NULL;
    vit_state *s = NULL;
    const vit_model *use = m;
    if (t) {
        CHECK(vit_model_view(m, t->num_classes, t->trainable, &view, &err) == VIT_OK);
        use = view;
    }
    CHECK(use && vit_state_create(use, 1, 1, &s, &err) == VIT_OK);
    if (s)
        CHECK(vit_forward(use, s, image, 1, out, &err) == VIT_OK);
    vit_state_free(s);
    vit_model_free(view);
}

typedef struct fixture {
    vit_model *m;
    vit_task *tasks[NUM_TASKS];
    float *images;                 /* (BATCH, 3, H, W) */
    float ref[NUM_TASKS + 1][BATCH][MAX_K]; /* [task or NUM_TASKS = backbone][image] */
    size_t per_image;
} fixture;

static int k_of(const fixture *f, int which)
{
    return which < NUM_TASKS ? task_classes[which] : f->m->cfg.num_classes;
}

/* Runs one mixed batch (assignment[b] = task index or NUM_TASKS) on s and
 * returns the worst |diff| against the single-image references. */
static double run_mixed(const fixture *f, vit_state *s, const vit_task *const *tasks,
                        const int *assignment)
{
    float out[BATCH][MAX_K];
    float *rows[BATCH];
    for (int b = 0; b < BATCH; b++)
        rows[b] = out[b];
    vit_error err = {0};
    if (task_forward(f->m, s, f->images, BATCH, tasks, rows, &err) != VIT_OK) {
        CHECKF(0, "task_forward: %s", err.message);
        return INFINITY;
    }
    double worst = 0;
    for (int b = 0; b < BATCH; b++)
        for (int k = 0; k < k_of(f, assignment[b]); k++)
            worst = fmax(worst, fabs((double)out[b][k] - f->ref[assignment[b]][b][k]));
    return worst;
}

static void assign(const fixture *f, const int *assignment, const vit_task **tasks)
{
    for (int b = 0; b < BATCH; b++)
        tasks[b] = assignment[b] < NUM_TASKS ? f->tasks[assignment[b]] : NULL;
}

static void test_mixed_batch(fixture *f)
{
    vit_error err = {0};
    vit_state *s = NULL;
    CHECK(vit_state_create(f->m, BATCH, 2, &s, &err) == VIT_OK);
    static const int mixes[][BATCH] = {
        {0, 3, 1, 1, 2, 0, 3, 2}, /* every task and the backbone, interleaved */
        {1, 1, 1, 1, 1, 1, 1, 1}, /* one task */
        {3, 3, 3, 3, 3, 3, 3, 3}, /* the backbone alone */
        {2, 0, 2, 0, 2, 0, 2, 0},
    };
    for (size_t i = 0; i < sizeof mixes / sizeof mixes[0]; i++) {
        const vit_task *tasks[BATCH];
        assign(f, mixes[i], tasks);
        double worst = run_mixed(f, s, tasks, mixes[i]);
        CHECKF(worst <= 1e-5, "mix %zu: max |diff| %g vs images run alone", i, worst);
        /* the packed path computes every row in the same order whatever its
         * neighbours, so there it must not differ by a single bit */
        CHECKF(!gemm_packed_available() || worst == 0,
               "mix %zu: packed path differs by %g from images run alone", i, worst);
        fprintf(stderr, "mixed batch %zu: max |diff| %g vs images run alone%s\n", i, worst,
                worst == 0 ? " (bit-identical)" : "");
    }
    /* a task made for another model is refused */
    vit_task bogus = *f->tasks[0];
    bogus.trainable_len += 1;
    const vit_task *tasks[BATCH] = {&bogus};
    float out[BATCH][MAX_K];
    float *rows[BATCH];
    for (int b = 0; b < BATCH; b++)
        rows[b] = out[b];
    CHECK(task_forward(f->m, s, f->images, 1, tasks, rows, &err) == VIT_ERR_MISMATCH);
    vit_state_free(s);
}

/* ---- concurrency: two workers, one model, tasks swapped under them ---- */

typedef struct registry {
    pthread_mutex_t mu;
    vit_task *slot[NUM_TASKS]; /* current version of each task */
} registry;

typedef struct worker {
    fixture *f;
    registry *reg;
    int id;
    double worst;
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    vit_error err = {0};
    vit_state *s = NULL;
    if (vit_state_create(w->f->m, BATCH, 2, &s, &err) != VIT_OK) /* 2 workers x 2 threads */
        return NULL;
    for (int round = 0; round < ROUNDS; round++) {
        int assignment[BATCH];
        const vit_task *tasks[BATCH];
        vit_task *held[BATCH] = {0};
        pthread_mutex_lock(&w->reg->mu); /* retain what this batch uses */
        for (int b = 0; b < BATCH; b++) {
            assignment[b] = (b + round + w->id) % (NUM_TASKS + 1);
            held[b] = assignment[b] < NUM_TASKS ? task_retain(w->reg->slot[assignment[b]]) : NULL;
            tasks[b] = held[b];
        }
        pthread_mutex_unlock(&w->reg->mu);
        double worst = run_mixed(w->f, s, tasks, assignment);
        if (worst > w->worst)
            w->worst = worst;
        for (int b = 0; b < BATCH; b++)
            task_free(held[b]);
    }
    vit_state_free(s);
    return NULL;
}

/* Replaces every task with an identical copy, dropping the registry's
 * reference to the old one while workers may still hold it. */
static void swap_tasks(fixture *f, registry *reg)
{
    for (int t = 0; t < NUM_TASKS; t++) {
        vit_task *copy = make_task(f->m, t);
        if (!copy)
            continue;
        pthread_mutex_lock(&reg->mu);
        vit_task *old = reg->slot[t];
        reg->slot[t] = copy;
        pthread_mutex_unlock(&reg->mu);
        task_free(old);
    }
}

static void test_concurrent_workers(fixture *f)
{
    registry reg = {.mu = PTHREAD_MUTEX_INITIALIZER};
    for (int t = 0; t < NUM_TASKS; t++)
        reg.slot[t] = task_retain(f->tasks[t]);
    worker w[2] = {{f, &reg, 0, 0}, {f, &reg, 1, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        CHECK(pthread_create(&th[i], NULL, worker_main, &w[i]) == 0);
    for (int i = 0; i < 3; i++)
        swap_tasks(f, &reg);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    for (int t = 0; t < NUM_TASKS; t++)
        task_free(reg.slot[t]);
    for (int i = 0; i < 2; i++) {
        CHECKF(w[i].worst <= 1e-5, "worker %d: max |diff| %g", i, w[i].worst);
        CHECKF(!gemm_packed_available() || w[i].worst == 0, "worker %d: packed path differs by %g",
               i, w[i].worst);
        fprintf(stderr, "worker %d: %d mixed batches, max |diff| %g vs images run alone\n", i,
                ROUNDS, w[i].worst);
    }
}

int main(void)
{
    vit_set_threads(1);
    fixture f = {0};
    char path[4096];
    vit_error err = {0};
    CHECKF(vit_model_load(test_path(path, sizeof path, "tests/data/golden/tiny_timm"), &f.m, &err) ==
               VIT_OK, "%s", err.message);
    if (!f.m)
        return check_result();
    f.per_image = (size_t)3 * f.m->cfg.image_size * f.m->cfg.image_size;
    f.images = malloc(sizeof(float) * f.per_image * BATCH);
    randinit_fill(f.images, f.per_image * BATCH, "input", 3, 1.0, 0.0);
    for (int t = 0; t < NUM_TASKS; t++)
        f.tasks[t] = make_task(f.m, t);
    for (int which = 0; which <= NUM_TASKS; which++)
        for (int b = 0; b < BATCH; b++)
            reference(f.m, which < NUM_TASKS ? f.tasks[which] : NULL, f.images + b * f.per_image,
                      f.ref[which][b]);
    test_mixed_batch(&f);
    test_concurrent_workers(&f);
    for (int t = 0; t < NUM_TASKS; t++)
        task_free(f.tasks[t]);
    free(f.images);
    vit_model_free(f.m);
    return check_result();
}
