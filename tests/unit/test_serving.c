/*
 * test_serving.c - what the server will ask of the engine: batches whose
 * images belong to different tasks, run by several worker threads at once
 * over one shared model while tasks are replaced and freed.
 *
 * Every result is compared with the same image run alone through a view of
 * the backbone with that image's task, on the same forward path.  Both paths
 * run in the plain suite: the packed one (on AVX-512 CPUs) and the portable
 * one, chosen explicitly with vit_state_create_path rather than through the
 * environment; which path a state took is asserted against what this CPU,
 * this build and VITFIT_NO_AVX512 allow.  Batches write their logits both
 * to padded rows and to contiguous ones, where neighbouring images of
 * different tasks with equal class counts must not share a head.  Finally
 * every batch size 1..max_batch runs on one state (the partial batches a
 * server sees), each image against its single-image result.
 */
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gemm.h"
#include "randinit.h"
#include "task.h"
#include "test_util.h"
#include "vit.h"

/* Tasks 0 and 3 have heads of the same size: only the task tells them apart. */
enum { NUM_TASKS = 4, BACKBONE = NUM_TASKS, BATCH = 8, ROUNDS = 12, MAX_K = 16 };
static const int task_classes[NUM_TASKS] = {3, 10, 5, 3};

/* The two forward paths, by index into the fixture's references. */
enum { PACKED, PORTABLE, PATHS };
static const vit_path path_of[PATHS] = {VIT_PATH_PACKED, VIT_PATH_PORTABLE};
static const char *const path_name[PATHS] = {"packed", "portable"};

/* What the packed path needs, decided without asking the engine (whose
 * answer is under test): kernels in this build, an AVX-512 CPU, and no
 * VITFIT_NO_AVX512 in the environment. */
static bool packed_expected(void)
{
#if defined(__x86_64__) && defined(VIT_HAVE_AVX512_KERNELS)
    const char *off = getenv("VITFIT_NO_AVX512");
    if (off && *off && *off != '0')
        return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
#else
    return false;
#endif
}

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

/* Logits of one image alone with task t (NULL: the backbone) on path p. */
static void reference(const vit_model *m, const vit_task *t, const float *image, int p,
                      float *out)
{
    vit_error err = {0};
    vit_model *view = NULL;
    vit_state *s = NULL;
    const vit_model *use = m;
    if (t) {
        CHECK(vit_model_view(m, t->num_classes, t->trainable, &view, &err) == VIT_OK);
        use = view;
    }
    CHECK(use && vit_state_create_path(use, 1, 1, path_of[p], &s, &err) == VIT_OK);
    if (s)
        CHECK(vit_forward(use, s, image, 1, out, &err) == VIT_OK);
    vit_state_free(s);
    vit_model_free(view);
}

typedef struct fixture {
    vit_model *m;
    vit_task *tasks[NUM_TASKS];
    float *images;                 /* (BATCH, 3, H, W) */
    bool paths[PATHS];             /* which paths this machine runs */
    float ref[PATHS][NUM_TASKS + 1][BATCH][MAX_K]; /* [path][task or BACKBONE][image] */
    size_t per_image;
} fixture;

static int k_of(const fixture *f, int which)
{
    return which < NUM_TASKS ? task_classes[which] : f->m->cfg.num_classes;
}

/* Runs one mixed batch (assignment[b] = task index or BACKBONE) on s, which
 * runs path p, and returns the worst |diff| against the single-image
 * references.  Rows are padded to MAX_K or, when contiguous, packed one
 * after another as a server's reply buffer would be; nothing may be written
 * past the last row. */
static double run_mixed(const fixture *f, vit_state *s, int p, const vit_task *const *tasks,
                        const int *assignment, bool contiguous)
{
    float out[BATCH * MAX_K + 1];
    float *rows[BATCH];
    size_t used = 0;
    for (int b = 0; b < BATCH; b++) {
        rows[b] = out + (contiguous ? used : (size_t)b * MAX_K);
        used += (size_t)k_of(f, assignment[b]);
    }
    size_t end = contiguous ? used : (size_t)BATCH * MAX_K;
    for (size_t i = 0; i <= BATCH * MAX_K; i++)
        out[i] = -12345.0f;
    vit_error err = {0};
    if (task_forward(f->m, s, f->images, BATCH, tasks, rows, &err) != VIT_OK) {
        CHECKF(0, "task_forward: %s", err.message);
        return INFINITY;
    }
    double worst = 0;
    for (int b = 0; b < BATCH; b++)
        for (int k = 0; k < k_of(f, assignment[b]); k++)
            worst = fmax(worst, fabs((double)rows[b][k] - f->ref[p][assignment[b]][b][k]));
    if (contiguous && out[end] != -12345.0f)
        worst = INFINITY; /* wrote past the last image's row */
    return worst;
}

static void assign(const fixture *f, const int *assignment, const vit_task **tasks)
{
    for (int b = 0; b < BATCH; b++)
        tasks[b] = assignment[b] < NUM_TASKS ? f->tasks[assignment[b]] : NULL;
}

static void test_mixed_batch(fixture *f, int p)
{
    vit_error err = {0};
    vit_state *s = NULL;
    CHECKF(vit_state_create_path(f->m, BATCH, 2, path_of[p], &s, &err) == VIT_OK, "%s",
           err.message);
    if (!s)
        return;
    CHECK(vit_state_path(s) == path_of[p]);
    enum { B_ = BACKBONE };
    static const int mixes[][BATCH] = {
        {0, B_, 1, 1, 2, 0, B_, 2}, /* every task and the backbone, interleaved */
        {1, 1, 1, 1, 1, 1, 1, 1},   /* one task */
        {B_, B_, B_, B_, B_, B_, B_, B_}, /* the backbone alone */
        {2, 0, 2, 0, 2, 0, 2, 0},
        /* neighbours with heads of the same size from different tasks (0 and
         * 3: 3 classes; 1 and the backbone: 10) */
        {0, 3, 0, 3, 3, 0, 1, B_},
        {3, 3, 0, 0, B_, 1, 1, B_},
    };
    for (size_t i = 0; i < sizeof mixes / sizeof mixes[0]; i++) {
        const vit_task *tasks[BATCH];
        assign(f, mixes[i], tasks);
        for (int contiguous = 0; contiguous < 2; contiguous++) {
            double worst = run_mixed(f, s, p, tasks, mixes[i], contiguous);
            CHECKF(worst <= 1e-5, "%s path, mix %zu, %s rows: max |diff| %g vs images run alone",
                   path_name[p], i, contiguous ? "contiguous" : "padded", worst);
            /* the packed path computes every row in the same order whatever
             * its neighbours, so there it must not differ by a single bit */
            CHECKF(p != PACKED || worst == 0,
                   "mix %zu: packed path differs by %g from images run alone", i, worst);
            fprintf(stderr, "%s path, mixed batch %zu, %s rows: max |diff| %g vs images run "
                            "alone%s\n", path_name[p], i, contiguous ? "contiguous" : "padded",
                    worst, worst == 0 ? " (bit-identical)" : "");
        }
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

/* Which path a state runs follows the CPU, the build and VITFIT_NO_AVX512
 * (read when the state is created), and an explicit choice. */
static void test_paths(const vit_model *m, const float *images)
{
    enum { B = 2 };
    float by_choice[B * MAX_K], by_env[B * MAX_K];
    int K = m->cfg.num_classes;
    vit_error err = {0};
    vit_state *s = NULL;
    bool want = packed_expected();
    CHECKF(gemm_packed_available() == want, "gemm_packed_available() says %d, expected %d",
           gemm_packed_available(), want);
    CHECK(vit_state_create(m, 2, 1, &s, &err) == VIT_OK && s);
    CHECKF(s && vit_state_path(s) == (want ? VIT_PATH_PACKED : VIT_PATH_PORTABLE),
           "default path %d, expected %s", s ? (int)vit_state_path(s) : -1,
           want ? "packed" : "portable");
    vit_state_free(s);
    s = NULL;
    CHECK(vit_state_create_path(m, 2, 1, VIT_PATH_PORTABLE, &s, &err) == VIT_OK && s &&
          vit_state_path(s) == VIT_PATH_PORTABLE);
    CHECK(s && vit_forward(m, s, images, B, by_choice, &err) == VIT_OK);
    vit_state_free(s);
    s = NULL;
    vit_status st = vit_state_create_path(m, 2, 1, VIT_PATH_PACKED, &s, &err);
    CHECKF(want ? st == VIT_OK && s && vit_state_path(s) == VIT_PATH_PACKED
                : st == VIT_ERR_UNSUPPORTED && !s,
           "asking for the packed path: status %d", (int)st);
    vit_state_free(s);
    s = NULL;
    CHECK(vit_state_create_path(m, 2, 1, (vit_path)7, &s, &err) == VIT_ERR_INVALID && !s);

    /* VITFIT_NO_AVX512 turns the packed path off for states created while it
     * is set, even over a model packed before */
    const char *was = getenv("VITFIT_NO_AVX512");
    char saved[64] = "";
    if (was)
        snprintf(saved, sizeof saved, "%s", was);
    setenv("VITFIT_NO_AVX512", "1", 1);
    CHECK(!gemm_packed_available());
    CHECK(vit_state_create(m, 2, 1, &s, &err) == VIT_OK && s &&
          vit_state_path(s) == VIT_PATH_PORTABLE);
    CHECK(s && vit_forward(m, s, images, B, by_env, &err) == VIT_OK);
    /* chosen or forced by the environment, the portable path is one code
     * path (OpenBLAS and the scalar kernels): the same bits */
    CHECKF(memcmp(by_choice, by_env, sizeof(float) * (size_t)(B * K)) == 0,
           "the portable path chosen explicitly differs from VITFIT_NO_AVX512's");
    vit_state_free(s);
    s = NULL;
    CHECK(vit_state_create_path(m, 2, 1, VIT_PATH_PACKED, &s, &err) == VIT_ERR_UNSUPPORTED);
    if (was)
        setenv("VITFIT_NO_AVX512", saved, 1);
    else
        unsetenv("VITFIT_NO_AVX512");
    CHECK(gemm_packed_available() == want);
}

/* Every batch size 1..max_batch on one state, each image's row against the
 * image run alone.  vit-tiny's shapes (17 tokens, 16 patches per image) make
 * some smaller products need more GEMM scratch than the largest (a 40-image
 * state's biggest product runs in passes of 182 rows, 13 images' in one of
 * 224): under ASan any write past the state's buffers fails here. */
static void test_every_batch_size(int p)
{
    enum { MAX_BATCH = 40 };
    vit_error err = {0};
    vit_config cfg;
    vit_model *m = NULL;
    vit_state *one = NULL, *s = NULL;
    CHECK(vit_config_preset("vit-tiny", &cfg, &err) == VIT_OK &&
          vit_model_create(&cfg, &m, &err) == VIT_OK);
    if (!m)
        return;
    vit_model_randomize(m, 7);
    CHECK(vit_model_pack(m, &err) == VIT_OK);
    size_t per_image = (size_t)3 * cfg.image_size * cfg.image_size;
    int K = vit_config_output_dim(&cfg);
    float *images = malloc(sizeof(float) * per_image * MAX_BATCH);
    float *want = malloc(sizeof(float) * (size_t)K * MAX_BATCH);
    float *got = malloc(sizeof(float) * (size_t)K * MAX_BATCH);
    if (!images || !want || !got ||
        vit_state_create_path(m, 1, 1, path_of[p], &one, &err) != VIT_OK ||
        vit_state_create_path(m, MAX_BATCH, 2, path_of[p], &s, &err) != VIT_OK) {
        CHECKF(0, "setup: %s", err.message);
        goto out;
    }
    randinit_fill(images, per_image * MAX_BATCH, "input", 5, 1.0, 0.0);
    for (int b = 0; b < MAX_BATCH; b++)
        CHECK(vit_forward(m, one, images + b * per_image, 1, want + (size_t)b * K, &err) ==
              VIT_OK);
    double worst = 0;
    int bad = 0;
    for (int batch = 1; batch <= MAX_BATCH; batch++) {
        CHECK(vit_forward(m, s, images, batch, got, &err) == VIT_OK);
        for (int b = 0; b < batch; b++) {
            double d = 0;
            for (int k = 0; k < K; k++)
                d = fmax(d, fabs((double)got[(size_t)b * K + k] - want[(size_t)b * K + k]));
            if (!(d <= (p == PACKED ? 0.0 : 1e-5)) && bad++ < 5)
                fprintf(stderr, "%s path, batch %d, image %d: max |diff| %g vs alone\n",
                        path_name[p], batch, b, d);
            worst = isnan(d) ? INFINITY : fmax(worst, d);
        }
    }
    CHECKF(bad == 0, "%s path: %d images of batches 1..%d differ from the image run alone",
           path_name[p], bad, MAX_BATCH);
    fprintf(stderr, "%s path, every batch 1..%d on one state: max |diff| %g vs images alone\n",
            path_name[p], MAX_BATCH, worst);
out:
    vit_state_free(one);
    vit_state_free(s);
    vit_model_free(m);
    free(images);
    free(want);
    free(got);
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
    int batches;          /* mixed batches it ran and checked */
    vit_error err;        /* why it could not start */
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    vit_state *s = NULL;
    if (vit_state_create(w->f->m, BATCH, 2, &s, &w->err) != VIT_OK) /* 2 workers x 2 threads */
        return NULL; /* batches stays 0: main fails the test */
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
        int p = vit_state_path(s) == VIT_PATH_PACKED ? PACKED : PORTABLE;
        double worst = run_mixed(w->f, s, p, tasks, assignment, round % 2);
        if (!(worst <= w->worst))
            w->worst = worst;
        w->batches++;
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
    worker w[2] = {{.f = f, .reg = &reg, .id = 0}, {.f = f, .reg = &reg, .id = 1}};
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
        /* a worker that never ran (its state failed) must not pass as worst = 0 */
        CHECKF(w[i].batches == ROUNDS, "worker %d ran %d of %d batches: %s", i, w[i].batches,
               ROUNDS, w[i].err.message);
        CHECKF(w[i].worst <= 1e-5, "worker %d: max |diff| %g", i, w[i].worst);
        CHECKF(!packed_expected() || w[i].worst == 0, "worker %d: packed path differs by %g",
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
    test_paths(f.m, f.images);
    f.paths[PACKED] = packed_expected();
    f.paths[PORTABLE] = true;
    for (int p = 0; p < PATHS; p++)
        for (int which = 0; which <= NUM_TASKS && f.paths[p]; which++)
            for (int b = 0; b < BATCH; b++)
                reference(f.m, which < NUM_TASKS ? f.tasks[which] : NULL,
                          f.images + b * f.per_image, p, f.ref[p][which][b]);
    for (int p = 0; p < PATHS; p++) {
        if (!f.paths[p])
            continue;
        test_mixed_batch(&f, p);
        test_every_batch_size(p);
    }
    test_concurrent_workers(&f);
    for (int t = 0; t < NUM_TASKS; t++)
        task_free(f.tasks[t]);
    free(f.images);
    vit_model_free(f.m);
    return check_result();
}
