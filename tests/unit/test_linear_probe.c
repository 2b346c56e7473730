/*
 * test_linear_probe.c - a linear probe's cached features (trainer.h,
 * trainer_run; engine/trainer_features.c), on real images (Debian's
 * Fashion-MNIST) and the bundled models/fashion-vit-tiny.
 *
 * The reference of every comparison is the same run with the cache off
 * (feature_cache_bytes 0): per-step losses, per-epoch train loss and
 * validation scores, best epoch, early stopping, the trained arena and the
 * final evaluation must be equal bit for bit, and so must the reports of
 * items that do not load (names, messages, order).
 *
 * 1. ds_loader_order is the order the loader delivers (shuffled, an item
 *    list, a later epoch); the training forward pass's features of an image
 *    are the same in batches of 1, 5 and 16 (the premise of bit-identity).
 * 2. Cached equals uncached: a validation split, label smoothing, weight
 *    decay, clipping, warm-up and early stopping; and an eval set with the
 *    checkpoint's head kept (its state validated as epoch 0) and SGD.  The
 *    cached run says (cfg->log) that it kept both feature sets, the other
 *    says nothing.
 * 3. The cache is used: a folder whose images are deleted after the first
 *    epoch still trains and validates to the end on the cache; without it
 *    the second epoch fails.
 * 4. Not used: strong augmentation (linear), bitfit and full say nothing
 *    and equal their cache-off runs (a cache wrongly used there would
 *    differ, or fail: the head-only forward refuses other methods); a
 *    single-epoch run keeps nothing.
 * 5. The limit: below the training items' need nothing is kept (logged);
 *    between that and training + validation only the training items'.
 *    Both equal the uncached run.
 * 6. Resume: interrupted mid-epoch and resumed from the checkpoint (the
 *    cache rebuilt), the run ends bit-identical to the uninterrupted one.
 * 7. Items that do not load (--skip-bad): training and validation reports
 *    repeat every epoch as without the cache; under DS_BAD_FAIL a bad
 *    validation image fails the validation (not the run) as before.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "dataset.h"
#include "test_util.h"
#include "trainer.h"
#include "trainer_impl.h"
#include "vit.h"
#include "vit_train.h"

#define FASHION_TRAIN "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
#define FASHION_TEST "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"

static char tmpdir[64];
static const char *const fashion_names[] = {"T-shirt/top", "Trouser", "Pullover", "Dress",
                                            "Coat", "Sandal", "Shirt", "Sneaker",
                                            "Bag", "Ankle boot", NULL};

static ds_dataset *open_set(const char *path)
{
    ds_options o = {.class_names = fashion_names, .allow_outside_root = true};
    ds_dataset *d = NULL;
    vit_error err = {0};
    CHECKF(ds_open(path, &o, &d, &err) == VIT_OK, "%s: %s", path, err.message);
    return d;
}

/* ---- one run, recorded --------------------------------------------------- */

#define MAX_STEPS 512
#define MAX_EPOCHS 16

/* What a run told its callbacks and returned. */
typedef struct record {
    long stop_after;          /* > 0: cancel once this many steps are done */
    const char *delete_dir;   /* not NULL: delete its images after epoch 1 */
    long steps;
    double loss[MAX_STEPS];   /* each step's (log_every 1) */
    int epochs;
    trainer_epoch_info info[MAX_EPOCHS];
    int logs, kept_train, kept_val, over_limit, val_not_kept;
    char bad[8192];           /* every bad-item report: "name|message;" */
    size_t bad_len;
    int nbad;
    /* the result */
    vit_status status;
    char error[512];
    trainer_result res;       /* its task's arena copied out below; eval kept */
    float *arena;
    size_t n;
} record;

static void on_progress(void *ctx, const trainer_progress *p)
{
    record *r = ctx;
    if (p->step >= 1 && p->step <= MAX_STEPS)
        r->loss[p->step - 1] = p->loss;
    r->steps = p->step;
}

static int on_stop(void *ctx)
{
    record *r = ctx;
    return r->stop_after > 0 && r->steps >= r->stop_after;
}

static void delete_images(const char *dir);

static void on_epoch(void *ctx, const trainer_epoch_info *e)
{
    record *r = ctx;
    if (r->epochs < MAX_EPOCHS)
        r->info[r->epochs] = *e;
    r->epochs++;
    if (r->delete_dir && e->epoch == 1)
        delete_images(r->delete_dir);
}

static void on_log(void *ctx, const char *message)
{
    record *r = ctx;
    r->logs++;
    r->kept_train += strstr(message, "training items were computed once") != NULL;
    r->kept_val += strstr(message, "validation items were computed once") != NULL;
    r->over_limit += strstr(message, "more than the feature cache limit") != NULL;
    r->val_not_kept += strstr(message, "recomputed at every validation") != NULL;
}

static void on_bad(void *ctx, const char *item, const char *message)
{
    record *r = ctx;
    int n = snprintf(r->bad + r->bad_len, sizeof r->bad - r->bad_len, "%s|%s;", item, message);
    if (n > 0 && (size_t)n < sizeof r->bad - r->bad_len)
        r->bad_len += (size_t)n;
    r->nbad++;
}

/* A linear probe over the first `items` training images, batch 16, with
 * validation on a 10% split; the callbacks record into a record. */
static trainer_config base_config(size_t items)
{
    trainer_config c = trainer_defaults_for(VIT_METHOD_LINEAR);
    c.epochs = 4;
    c.batch_size = 16;
    c.train_limit = items;
    c.seed = 77;
    c.loader_threads = 2;
    c.log_every = 1;
    c.progress = on_progress;
    c.epoch_end = on_epoch;
    c.should_stop = on_stop;
    c.log = on_log;
    c.on_bad_fn = on_bad;
    c.head = TRAINER_HEAD_NEW;
    return c;
}

/* Runs cfg into *r (cleared first, but for its stop and delete settings). */
static void run(const vit_model *m, const ds_dataset *train, const ds_dataset *eval,
                trainer_config cfg, record *r)
{
    long stop = r->stop_after;
    const char *del = r->delete_dir;
    memset(r, 0, sizeof *r);
    r->stop_after = stop;
    r->delete_dir = del;
    cfg.ctx = r;
    cfg.on_bad_ctx = r;
    vit_error err = {0};
    r->status = trainer_run(m, train, eval, &cfg, &r->res, &err);
    snprintf(r->error, sizeof r->error, "%s", err.message);
    /* a task's arena (bitfit, linear) or the trained model's (full) */
    const float *arena = r->res.task ? r->res.task->trainable
                         : r->res.model ? r->res.model->trainable : NULL;
    if (r->status == VIT_OK && arena) {
        r->n = r->res.task ? r->res.task->trainable_len : r->res.model->trainable_len;
        r->arena = malloc(sizeof(float) * r->n);
        memcpy(r->arena, arena, sizeof(float) * r->n);
    }
}

static void record_free(record *r)
{
    free(r->arena);
    r->arena = NULL;
    if (r->status == VIT_OK)
        trainer_result_free(&r->res);
}

/* Whether a row's features are bit-identical in any batch on this host's
 * training path (test_rows; true on the packed AVX-512 path and OpenBLAS's
 * SkylakeX kernels, false on its Haswell/Zen ones).  Where they are not,
 * even a run without the cache sees an image's features change by a
 * rounding from epoch to epoch (its batch changes), so cached and uncached
 * runs are compared within RTOL instead of bit for bit. */
static bool exact_rows = true;
#define RTOL 1e-4
#define ATOL 1e-6

static bool same_double(double a, double b)
{
    if (!exact_rows)
        return fabs(a - b) <= ATOL + RTOL * fabs(b);
    return memcmp(&a, &b, sizeof a) == 0;
}

static bool same_floats(const float *a, const float *b, size_t n, size_t *at)
{
    for (size_t i = 0; i < n; i++)
        if (exact_rows ? memcmp(&a[i], &b[i], sizeof(float)) != 0
                       : !(fabsf(a[i] - b[i]) <= ATOL + RTOL * fabsf(b[i]))) {
            *at = i;
            return false;
        }
    return true;
}

/* Everything run `got` produced equals `want`'s, bit for bit. */
static void check_same(const record *got, const record *want, const char *what)
{
    CHECKF(got->status == want->status, "%s: status %s vs %s (%s | %s)", what,
           vit_status_name(got->status), vit_status_name(want->status), got->error,
           want->error);
    if (got->status != VIT_OK || want->status != VIT_OK)
        return;
    CHECKF(got->steps == want->steps && got->res.steps == want->res.steps,
           "%s: %ld steps vs %ld", what, got->res.steps, want->res.steps);
    for (long s = 0; s < got->steps && s < want->steps && s < MAX_STEPS; s++)
        if (!same_double(got->loss[s], want->loss[s])) {
            CHECKF(0, "%s: step %ld loss %.17g vs %.17g", what, s + 1, got->loss[s],
                   want->loss[s]);
            break;
        }
    CHECKF(got->epochs == want->epochs, "%s: %d epochs vs %d", what, got->epochs, want->epochs);
    for (int e = 0; e < got->epochs && e < want->epochs && e < MAX_EPOCHS; e++) {
        const trainer_epoch_info *a = &got->info[e], *b = &want->info[e];
        CHECKF(same_double(a->train_loss, b->train_loss) && a->has_val == b->has_val &&
                   same_double(a->val_top1, b->val_top1) &&
                   same_double(a->val_top5, b->val_top5) &&
                   same_double(a->val_loss, b->val_loss) && a->best_epoch == b->best_epoch &&
                   a->is_best == b->is_best && a->stopping == b->stopping,
               "%s: epoch %d: train loss %.17g vs %.17g, val %.17g/%.17g vs %.17g/%.17g, best "
               "%d vs %d", what, e + 1, a->train_loss, b->train_loss, a->val_top1,
               a->val_loss, b->val_top1, b->val_loss, a->best_epoch, b->best_epoch);
    }
    CHECKF(got->n == want->n && got->arena && want->arena, "%s: arenas of %zu and %zu floats",
           what, got->n, want->n);
    size_t i = 0;
    if (got->arena && want->arena && got->n == want->n)
        CHECKF(same_floats(got->arena, want->arena, got->n, &i), "%s: arena[%zu] %.9g vs %.9g",
               what, i, got->arena[i], want->arena[i]);
    const trainer_result *a = &got->res, *b = &want->res;
    CHECKF(same_double(a->final_loss, b->final_loss), "%s: final loss %.17g vs %.17g", what,
           a->final_loss, b->final_loss);
    CHECKF(a->best_epoch == b->best_epoch && a->epochs_run == b->epochs_run &&
               a->stopped_early == b->stopped_early && a->has_eval == b->has_eval &&
               a->cancelled == b->cancelled && a->eval_status == b->eval_status,
           "%s: best %d/%d, epochs %d/%d, stopped %d/%d, has_eval %d/%d, eval status %s/%s",
           what, a->best_epoch, b->best_epoch, a->epochs_run, b->epochs_run, a->stopped_early,
           b->stopped_early, a->has_eval, b->has_eval, vit_status_name(a->eval_status),
           vit_status_name(b->eval_status));
    CHECKF(strcmp(a->eval_error.message, b->eval_error.message) == 0,
           "%s: eval error '%s' vs '%s'", what, a->eval_error.message, b->eval_error.message);
    if (a->has_eval && b->has_eval) {
        CHECKF(a->eval.count == b->eval.count && a->eval.skipped == b->eval.skipped &&
                   same_double(a->eval.top1, b->eval.top1) &&
                   same_double(a->eval.top5, b->eval.top5) &&
                   same_double(a->eval.loss, b->eval.loss) &&
                   a->eval.num_cells == b->eval.num_cells,
               "%s: eval %ld/%ld items, %ld/%ld skipped, top-1 %.17g/%.17g, loss %.17g/%.17g",
               what, a->eval.count, b->eval.count, a->eval.skipped, b->eval.skipped,
               a->eval.top1, b->eval.top1, a->eval.loss, b->eval.loss);
        for (i = 0; i < a->eval.num_cells && i < b->eval.num_cells; i++)
            CHECKF(memcmp(&a->eval.confusion[i], &b->eval.confusion[i],
                          sizeof a->eval.confusion[i]) == 0,
                   "%s: confusion cell %zu differs", what, i);
    }
    CHECKF(got->nbad == want->nbad && got->bad_len == want->bad_len &&
               memcmp(got->bad, want->bad, got->bad_len) == 0,
           "%s: %d bad-item reports vs %d:\n%.300s\nvs\n%.300s", what, got->nbad, want->nbad,
           got->bad, want->bad);
}

/* Runs cfg with the cache (cfg's limit) and without; checks they agree;
 * *cached keeps the cached run's record (caller frees). */
static void compare(const vit_model *m, const ds_dataset *train, const ds_dataset *eval,
                    trainer_config cfg, record *cached, const char *what)
{
    record *plain = calloc(1, sizeof *plain);
    run(m, train, eval, cfg, cached);
    cfg.feature_cache_bytes = 0;
    run(m, train, eval, cfg, plain);
    check_same(cached, plain, what);
    CHECKF(plain->logs == 0, "%s: the run without a cache logged %d lines", what, plain->logs);
    record_free(plain);
    free(plain);
}

/* ---- 1. the epoch order ------------------------------------------------- */

static void test_order(const ds_dataset *d)
{
    size_t items[60];
    for (size_t i = 0; i < 60; i++)
        items[i] = 3 * i + 1;
    ds_loader_options lo = {.batch_size = 7, .shuffle = true, .seed = 99, .threads = 2,
                            .prefetch = 2, .preprocess = img_preprocess_hf(32),
                            .items = items, .num_items = 60};
    ds_loader *l = NULL;
    vit_error err = {0};
    CHECKF(ds_loader_create(d, &lo, &l, &err) == VIT_OK, "%s", err.message);
    if (!l)
        return;
    size_t order[60], got[60], n = 0;
    float *images = malloc(sizeof(float) * 7 * 3 * 32 * 32);
    int labels[7];
    for (int epoch = 2; epoch <= 3; epoch++) {
        ds_loader_order(l, epoch, order);
        CHECK(ds_loader_start_epoch(l, epoch, &err) == VIT_OK);
        n = 0;
        for (;;) {
            int count = 0;
            CHECK(ds_loader_next(l, images, labels, got + n, &count, &err) == VIT_OK);
            if (count == 0)
                break;
            n += (size_t)count;
        }
        CHECKF(n == 60, "epoch %d: %zu items", epoch, n);
        int moved = 0;
        for (size_t p = 0; p < n; p++) {
            CHECKF(got[p] == items[order[p]], "epoch %d position %zu: item %zu, order says %zu",
                   epoch, p, got[p], items[order[p]]);
            moved += order[p] != p;
        }
        CHECKF(moved > 30, "epoch %d: only %d items moved: not shuffled?", epoch, moved);
    }
    free(images);
    ds_loader_free(l);
}

/* ---- 1b. the premise: a row's features do not depend on its batch -------- */

/* The training forward pass's features of 16 images, run as one batch, as
 * 16 batches of 1 and as batches of 5, 5, 5, 1: equal bit for bit.  Kept
 * features equal recomputed ones only so (the cache fills its rows in list
 * order, an epoch shuffles them into other batches). */
static void test_rows(const vit_model *m, const ds_dataset *d)
{
    enum { N = 16 };
    int F = vit_config_feature_dim(&m->cfg);
    size_t per = (size_t)3 * m->cfg.image_size * m->cfg.image_size;
    ds_loader_options lo = {.batch_size = N, .threads = 1, .prefetch = 1,
                            .preprocess = m->cfg.preprocess};
    ds_loader *l = NULL;
    vit_model *t = NULL;
    vit_train_state *s = NULL;
    vit_error err = {0};
    float *images = malloc(sizeof(float) * N * per), *logits = malloc(sizeof(float) * N * 10);
    float *whole = malloc(sizeof(float) * N * F);
    int labels[N], count = 0;
    CHECK(ds_loader_create(d, &lo, &l, &err) == VIT_OK && ds_loader_start_epoch(l, 0, &err) ==
          VIT_OK && ds_loader_next(l, images, labels, NULL, &count, &err) == VIT_OK &&
          count == N);
    CHECK(vit_model_derive(m, 10, false, &t, &err) == VIT_OK);
    CHECK(t && vit_train_state_create(t, VIT_METHOD_LINEAR, N, 2, &s, &err) == VIT_OK);
    if (s && count == N) {
        CHECK(vit_train_forward(t, s, images, N, logits, &err) == VIT_OK);
        memcpy(whole, vit_train_features(s), sizeof(float) * N * F);
        static const int splits[2][N + 1] = {{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0},
                                             {5, 5, 5, 1, 0}};
        for (int k = 0; k < 2; k++)
            for (int i = 0, at = 0; splits[k][i]; at += splits[k][i++]) {
                int b = splits[k][i];
                CHECK(vit_train_forward(t, s, images + (size_t)at * per, b, logits, &err) ==
                      VIT_OK);
                if (exact_rows && memcmp(vit_train_features(s), whole + (size_t)at * F,
                                         sizeof(float) * (size_t)b * F) != 0) {
                    fprintf(stderr, "note: the features of images %d..%d differ in a batch "
                            "of %d from a batch of %d on this training path (BLAS): cached "
                            "and uncached runs are compared within rtol %g, not bit for "
                            "bit\n", at, at + b - 1, b, N, RTOL);
                    exact_rows = false;
                }
            }
    }
    vit_train_state_free(s);
    vit_model_free(t);
    ds_loader_free(l);
    free(images);
    free(logits);
    free(whole);
}

/* ---- 2. cached equals uncached ------------------------------------------ */

static void test_equal(const vit_model *m, const ds_dataset *train, const ds_dataset *test)
{
    /* a split of a training set, every option that shapes the steps */
    trainer_config c = base_config(200);
    c.label_smoothing = 0.1;
    c.weight_decay = 0.05;
    c.clip_grad_norm = 0.5;
    c.warmup_epochs = 1.5;
    c.min_lr = 1e-4;
    c.epochs = 6;
    c.early_stopping_patience = 2;
    record *r = calloc(1, sizeof *r);
    compare(m, train, NULL, c, r, "split");
    CHECKF(r->res.augment_used == TRAINER_AUGMENT_NONE, "auto chose %s for 28-pixel images",
           trainer_augment_name(r->res.augment_used));
    CHECKF(r->kept_train == 1 && r->kept_val == 1, "split: kept training features %d times, "
           "validation %d times", r->kept_train, r->kept_val);
    CHECKF(r->steps > 20 && r->res.has_eval, "split: %ld steps, has_eval %d", r->steps,
           r->res.has_eval);
    record_free(r);

    /* an eval set, the checkpoint's head kept (epoch 0 validated), SGD, no shuffle */
    c = base_config(180);
    c.head = TRAINER_HEAD_AUTO;
    c.optimizer = OPTIM_SGD;
    c.lr = 0.05;
    c.shuffle = false;
    c.eval_limit = 70;
    c.epochs = 3;
    compare(m, train, test, c, r, "eval set");
    CHECKF(r->res.head_kept && r->kept_train == 1 && r->kept_val == 1,
           "eval set: head kept %d, kept training features %d times, validation %d times",
           r->res.head_kept, r->kept_train, r->kept_val);
    CHECKF(r->res.has_eval && r->res.eval.count == 70, "eval set: has_eval %d, %ld items",
           r->res.has_eval, r->res.eval.count);
    record_free(r);
    free(r);
}

/* ---- 3. the cache is what later epochs read ------------------------------ */

/* Writes image i of d as a 24-bit BMP. */
static void write_bmp(const ds_dataset *d, size_t i, const char *path)
{
    img_image img;
    vit_error err = {0};
    VIT_ASSERT(ds_load_image(d, i, &img, &err) == VIT_OK);
    int w = img.width, h = img.height, row = (w * 3 + 3) & ~3;
    uint8_t head[54] = {'B', 'M'};
    uint32_t size = 54 + (uint32_t)(row * h), v;
    memcpy(head + 2, &size, 4);
    head[10] = 54;
    head[14] = 40;
    v = (uint32_t)w;
    memcpy(head + 18, &v, 4);
    v = (uint32_t)h;
    memcpy(head + 22, &v, 4);
    head[26] = 1;
    head[28] = 24;
    FILE *f = fopen(path, "wb");
    VIT_ASSERT(f);
    fwrite(head, 1, 54, f);
    for (int y = h - 1; y >= 0; y--) {
        for (int x = 0; x < w; x++) {
            const uint8_t *p = img.pixels + ((size_t)y * w + x) * 3;
            fputc(p[2], f);
            fputc(p[1], f);
            fputc(p[0], f);
        }
        for (int x = w * 3; x < row; x++)
            fputc(0, f);
    }
    fclose(f);
    img_free(&img);
}

/* <tmpdir>/<name>/<class>/NN.bmp: per_class Fashion-MNIST test images of
 * each class (by label), and `bad` files that are not images in the first
 * classes' folders. */
static const char *write_folder(const ds_dataset *d, char *buf, size_t len, const char *name,
                                int per_class, int bad)
{
    snprintf(buf, len, "%s/%s", tmpdir, name);
    mkdir(buf, 0755);
    int have[10] = {0};
    char dir[512], file[600];
    for (int c = 0; c < 10; c++) {
        snprintf(dir, sizeof dir, "%s/c%d", buf, c);
        mkdir(dir, 0755);
    }
    for (size_t i = 0; i < ds_size(d); i++) {
        int c = ds_label(d, i);
        if (have[c] >= per_class)
            continue;
        snprintf(file, sizeof file, "%s/c%d/%02d.bmp", buf, c, have[c]++);
        write_bmp(d, i, file);
    }
    for (int k = 0; k < bad; k++) {
        snprintf(file, sizeof file, "%s/c%d/%02d-bad.png", buf, k % 10, k);
        FILE *f = fopen(file, "w");
        VIT_ASSERT(f);
        fputs("not an image", f);
        fclose(f);
    }
    return buf;
}

/* Removes every file of a write_folder folder (and, with rmdirs, it). */
static void remove_folder(const char *dir, bool rmdirs)
{
    char sub[512], file[600];
    for (int c = 0; c < 10; c++) {
        snprintf(sub, sizeof sub, "%s/c%d", dir, c);
        for (int i = 0; i < 100; i++) {
            snprintf(file, sizeof file, "%s/%02d.bmp", sub, i);
            unlink(file);
            snprintf(file, sizeof file, "%s/%02d-bad.png", sub, i);
            unlink(file);
        }
        if (rmdirs)
            rmdir(sub);
    }
    if (rmdirs)
        rmdir(dir);
}

static void delete_images(const char *dir)
{
    remove_folder(dir, false);
}

static ds_dataset *open_folder(const char *path)
{
    ds_options o = {0};
    ds_dataset *d = NULL;
    vit_error err = {0};
    CHECKF(ds_open(path, &o, &d, &err) == VIT_OK, "%s: %s", path, err.message);
    return d;
}

static void test_used(const vit_model *m, const ds_dataset *test)
{
    char dir[256];
    trainer_config c = base_config(0);
    c.validation_split = 0.25;
    c.epochs = 3;
    c.early_stopping_patience = 0;
    c.augment = TRAINER_AUGMENT_NONE;
    record *r = calloc(1, sizeof *r);
    /* with the cache: epochs 2 and 3 and their validations read no file */
    write_folder(test, dir, sizeof dir, "gone", 8, 0);
    ds_dataset *d = open_folder(dir);
    r->delete_dir = dir;
    if (d)
        run(m, d, NULL, c, r);
    CHECKF(r->status == VIT_OK && r->res.epochs_run == 3 && r->res.has_eval &&
               r->res.eval_status == VIT_OK && r->epochs == 3 && r->info[2].has_val,
           "cached run without its files: %s (%s), %d epochs, has_eval %d, eval %s",
           vit_status_name(r->status), r->error, r->res.epochs_run, r->res.has_eval,
           vit_status_name(r->res.eval_status));
    record_free(r);
    ds_close(d);
    remove_folder(dir, true);
    /* without it the second epoch reads them */
    write_folder(test, dir, sizeof dir, "gone", 8, 0);
    d = open_folder(dir);
    c.feature_cache_bytes = 0;
    if (d)
        run(m, d, NULL, c, r);
    CHECKF(r->status != VIT_OK && r->epochs == 1,
           "uncached run without its files: %s after %d epochs", vit_status_name(r->status),
           r->epochs);
    record_free(r);
    ds_close(d);
    remove_folder(dir, true);
    free(r);
}

/* ---- 4. where the cache does not apply ---------------------------------- */

static void test_not_used(const vit_model *m, const ds_dataset *train)
{
    record *r = calloc(1, sizeof *r);
    trainer_config c = base_config(96);
    c.epochs = 3;
    c.augment = TRAINER_AUGMENT_STRONG;
    compare(m, train, NULL, c, r, "augmented linear");
    CHECKF(r->logs == 0, "augmented linear logged %d lines", r->logs);
    record_free(r);
    c.augment = TRAINER_AUGMENT_NONE;
    c.method = VIT_METHOD_BITFIT;
    compare(m, train, NULL, c, r, "bitfit");
    CHECKF(r->logs == 0, "bitfit logged %d lines", r->logs);
    record_free(r);
    c.method = VIT_METHOD_FULL;
    c.epochs = 2;
    c.lr = 1e-4;
    compare(m, train, NULL, c, r, "full");
    CHECKF(r->logs == 0, "full logged %d lines", r->logs);
    record_free(r);
    /* one epoch: each item is forwarded once either way */
    c = base_config(96);
    c.epochs = 1;
    compare(m, train, NULL, c, r, "one epoch");
    CHECKF(r->logs == 0 && r->res.has_eval, "one epoch logged %d lines (has_eval %d)", r->logs,
           r->res.has_eval);
    record_free(r);
    free(r);
}

/* ---- 5. the limit --------------------------------------------------------- */

static void test_limit(const vit_model *m, const ds_dataset *train)
{
    record *r = calloc(1, sizeof *r);
    trainer_config c = base_config(160);
    c.epochs = 3;
    int F = vit_config_feature_dim(&m->cfg);
    /* the run's split: 10% of each class held out */
    size_t *ti = NULL, *vi = NULL, nt = 0, nv = 0, ntrain = 0, nval = 0;
    vit_error err = {0};
    CHECK(ds_split(train, c.train_limit, c.validation_split, c.seed, &ti, &nt, &vi, &nv, &err) ==
          VIT_OK);
    free(ti);
    free(vi);
    CHECK(trainer_features_bytes(nt, F, &ntrain) && trainer_features_bytes(nv, F, &nval));
    c.feature_cache_bytes = ntrain - 1;
    compare(m, train, NULL, c, r, "under the training items' need");
    CHECKF(r->over_limit == 1 && r->kept_train == 0 && r->kept_val == 0,
           "under the limit: %d over-limit lines, kept %d/%d", r->over_limit, r->kept_train,
           r->kept_val);
    record_free(r);
    c.feature_cache_bytes = ntrain + nval - 1;
    compare(m, train, NULL, c, r, "training items only");
    CHECKF(r->kept_train == 1 && r->kept_val == 0 && r->val_not_kept == 1,
           "training only: kept %d/%d, %d validation fallbacks", r->kept_train, r->kept_val,
           r->val_not_kept);
    record_free(r);
    c.feature_cache_bytes = ntrain + nval;
    compare(m, train, NULL, c, r, "both, just");
    CHECKF(r->kept_train == 1 && r->kept_val == 1, "both: kept %d/%d", r->kept_train,
           r->kept_val);
    record_free(r);
    free(r);
}

/* ---- 6. resume ------------------------------------------------------------ */

static void test_resume(const vit_model *m, const ds_dataset *train)
{
    char dir[256];
    snprintf(dir, sizeof dir, "%s/ck", tmpdir);
    trainer_config c = base_config(160);
    c.epochs = 4;
    c.early_stopping_patience = 0;
    record *whole = calloc(1, sizeof *whole), *r = calloc(1, sizeof *r);
    /* both runs train on kept features from the same list-order pass: bit
     * for bit the same on any path */
    bool rows = exact_rows;
    exact_rows = true;
    run(m, train, NULL, c, whole);
    CHECKF(whole->status == VIT_OK && whole->kept_train == 1, "uninterrupted: %s, kept %d",
           whole->error, whole->kept_train);
    /* 144 items: 9 steps an epoch; stop at 13 (checkpoint at 12, mid-epoch 2) */
    c.checkpoint_dir = dir;
    c.checkpoint_every_steps = 4;
    r->stop_after = 13;
    run(m, train, NULL, c, r);
    CHECKF(r->status == VIT_OK && r->res.cancelled && r->res.steps == 13,
           "interrupted: %s, cancelled %d at %ld", r->error, r->res.cancelled, r->res.steps);
    record_free(r);
    c.resume_dir = dir;
    r->stop_after = 0;
    run(m, train, NULL, c, r);
    CHECKF(r->status == VIT_OK && r->kept_train == 1 && r->kept_val == 1,
           "resumed: %s, kept %d/%d", r->error, r->kept_train, r->kept_val);
    /* the resumed run's record starts at step 13: compare what both have */
    CHECKF(r->res.steps == whole->res.steps, "resumed: %ld steps vs %ld", r->res.steps,
           whole->res.steps);
    for (long s = 12; s < r->steps && s < MAX_STEPS; s++)
        CHECKF(same_double(r->loss[s], whole->loss[s]), "resumed step %ld: %.17g vs %.17g",
               s + 1, r->loss[s], whole->loss[s]);
    size_t at = 0;
    CHECKF(r->arena && whole->arena && r->n == whole->n &&
               same_floats(r->arena, whole->arena, r->n, &at),
           "resumed arena differs from the uninterrupted one at %zu", at);
    CHECKF(same_double(r->res.final_loss, whole->res.final_loss) &&
               r->res.best_epoch == whole->res.best_epoch &&
               same_double(r->res.eval.top1, whole->res.eval.top1) &&
               same_double(r->res.eval.loss, whole->res.eval.loss),
           "resumed: final loss %.17g vs %.17g, best %d vs %d", r->res.final_loss,
           whole->res.final_loss, r->res.best_epoch, whole->res.best_epoch);
    record_free(r);
    record_free(whole);
    free(r);
    free(whole);
    exact_rows = rows;
    char file[300];
    snprintf(file, sizeof file, "%s/%s", dir, TRAINER_CHECKPOINT_FILE);
    unlink(file);
    rmdir(dir);
}

/* ---- 7. items that do not load -------------------------------------------- */

static void test_bad_items(const vit_model *m, const ds_dataset *test)
{
    char dir[256], edir[256];
    write_folder(test, dir, sizeof dir, "bad", 8, 6);
    ds_dataset *d = open_folder(dir);
    record *r = calloc(1, sizeof *r);
    trainer_config c = base_config(0);
    c.validation_split = 0.3;
    c.epochs = 3;
    c.on_bad = DS_BAD_SKIP;
    if (d)
        compare(m, d, NULL, c, r, "skip bad");
    /* 6 bad files: those in training reported every epoch (3), those held
     * out every validation (3), and at least one of each (seeded split) */
    CHECKF(r->status == VIT_OK && r->kept_train == 1 && r->kept_val == 1 && r->nbad == 18 &&
               r->res.eval.skipped > 0 && r->res.eval.skipped < 6,
           "skip bad: %s, kept %d/%d, %d reports, %ld skipped in validation", r->error,
           r->kept_train, r->kept_val, r->nbad, r->res.eval.skipped);
    record_free(r);
    /* an eval set with a bad image under DS_BAD_FAIL: the validation fails */
    write_folder(test, edir, sizeof edir, "badeval", 3, 1);
    ds_dataset *e = open_folder(edir);
    c.on_bad = DS_BAD_FAIL;
    c.validation_split = 0;
    write_folder(test, dir, sizeof dir, "good", 8, 0);
    ds_dataset *g = open_folder(dir);
    if (g && e)
        compare(m, g, e, c, r, "failing validation");
    CHECKF(r->status == VIT_OK && !r->res.has_eval && r->res.eval_status != VIT_OK &&
               r->kept_train == 1 && r->kept_val == 0,
           "failing validation: %s, has_eval %d, eval %s, kept %d/%d", r->error,
           r->res.has_eval, vit_status_name(r->res.eval_status), r->kept_train, r->kept_val);
    record_free(r);
    free(r);
    ds_close(d);
    ds_close(e);
    ds_close(g);
    snprintf(dir, sizeof dir, "%s/bad", tmpdir);
    remove_folder(dir, true);
    snprintf(dir, sizeof dir, "%s/good", tmpdir);
    remove_folder(dir, true);
    remove_folder(edir, true);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/vitfit-probe-XXXXXX");
    if (!mkdtemp(tmpdir))
        return 1;
    char model_dir[4096];
    test_path(model_dir, sizeof model_dir, "models/fashion-vit-tiny");
    vit_model *m = NULL;
    vit_error err = {0};
    CHECKF(vit_model_load(model_dir, &m, &err) == VIT_OK, "%s", err.message);
    ds_dataset *train = open_set(FASHION_TRAIN), *test = open_set(FASHION_TEST);
    if (m && train && test) {
        test_order(test);
        test_rows(m, test);
        test_equal(m, train, test);
        test_used(m, test);
        test_not_used(m, train);
        test_limit(m, train);
        test_resume(m, train);
        test_bad_items(m, test);
    }
    ds_close(train);
    ds_close(test);
    vit_model_free(m);
    rmdir(tmpdir);
    return check_result();
}
