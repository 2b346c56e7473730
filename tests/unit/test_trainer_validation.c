/*
 * test_trainer_validation.c - what makes the defaults give a good task
 * without tuning (issue 9 item 7), on real images (Debian's Fashion-MNIST,
 * the bundled models/fashion-vit-tiny):
 *
 * - ds_split: deterministic for a seed, another seed another split; train
 *   and validation disjoint and together every item, ascending; per class
 *   round(fraction * n) held out, never a class's last item.
 * - ds_loader over an item list: exactly those items, in that order; an
 *   item out of range and an augmentation out of range are refused.
 * - trainer_augment_policy / _name / _parse and trainer_defaults_for: the
 *   documented choices (auto: none below the model's input, light from it;
 *   flips only for strong); trainer_run's `auto` on 28-pixel Fashion-MNIST
 *   and on large photos.
 * - Best epoch and early stopping: a run whose validation worsens (it
 *   trains on labels shifted by one class, starting from the bundled head,
 *   and validates on the true labels) keeps its first epoch -- the task it
 *   returns evaluates to that epoch's top-1, not the last's -- and stops
 *   after `patience` worse epochs; with patience 0 it runs every epoch and
 *   still keeps the best.  A validation split trains only on the rest (the
 *   step count) and validates on the held-out items.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "dataset.h"
#include "test_util.h"
#include "trainer.h"
#include "vit.h"

#define FASHION_TEST "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"

static const char *const fashion_names[] = {"T-shirt/top", "Trouser", "Pullover", "Dress",
                                            "Coat", "Sandal", "Shirt", "Sneaker",
                                            "Bag", "Ankle boot", NULL};
/* label i named as class i + 1: training on it teaches the wrong class */
static const char *const shifted_names[] = {"Trouser", "Pullover", "Dress", "Coat",
                                            "Sandal", "Shirt", "Sneaker", "Bag",
                                            "Ankle boot", "T-shirt/top", NULL};

static ds_dataset *open_idx(const char *const *names)
{
    ds_options o = {.class_names = names, .allow_outside_root = true};
    ds_dataset *d = NULL;
    vit_error err = {0};
    CHECKF(ds_open(FASHION_TEST, &o, &d, &err) == VIT_OK, "%s", err.message);
    return d;
}

/* ---- the split ---------------------------------------------------------- */

static void test_split(const ds_dataset *d)
{
    enum { N = 500 };
    size_t *t = NULL, *v = NULL, nt = 0, nv = 0;
    vit_error err = {0};
    CHECKF(ds_split(d, N, 0.2, 7, &t, &nt, &v, &nv, &err) == VIT_OK, "%s", err.message);
    if (!t || !v)
        return;
    CHECKF(nt + nv == N, "%zu + %zu items, want %d", nt, nv, N);
    /* disjoint, every item once, ascending */
    char seen[N] = {0};
    int twice = 0, order = 0;
    for (size_t i = 0; i < nt; i++) {
        twice += t[i] >= N || seen[t[i]]++;
        order += i > 0 && t[i] <= t[i - 1];
    }
    for (size_t i = 0; i < nv; i++) {
        twice += v[i] >= N || seen[v[i]]++;
        order += i > 0 && v[i] <= v[i - 1];
    }
    CHECKF(twice == 0 && order == 0, "%d items repeated or out of range, %d out of order",
           twice, order);
    /* stratified: per class round(0.2 * n) held out */
    int per_class[10] = {0}, held[10] = {0};
    for (size_t i = 0; i < N; i++)
        per_class[ds_label(d, i)]++;
    for (size_t i = 0; i < nv; i++)
        held[ds_label(d, v[i])]++;
    for (int c = 0; c < 10; c++)
        CHECKF(held[c] == (int)floor(0.2 * per_class[c] + 0.5),
               "class %d: %d of %d held out, want round(20%%)", c, held[c], per_class[c]);
    /* the same arguments, the same split; another seed, another one */
    size_t *t2 = NULL, *v2 = NULL, nt2 = 0, nv2 = 0;
    CHECK(ds_split(d, N, 0.2, 7, &t2, &nt2, &v2, &nv2, &err) == VIT_OK);
    CHECKF(nv2 == nv && v2 && memcmp(v2, v, nv * sizeof *v) == 0, "seed 7 twice: other split");
    free(t2);
    free(v2);
    CHECK(ds_split(d, N, 0.2, 8, &t2, &nt2, &v2, &nv2, &err) == VIT_OK);
    CHECKF(nv2 == nv && v2 && memcmp(v2, v, nv * sizeof *v) != 0, "seed 8: seed 7's split");
    free(t2);
    free(v2);
    free(t);
    free(v);
    /* a class's last item stays in training: 15 items, half held out */
    CHECK(ds_split(d, 15, 0.5, 1, &t, &nt, &v, &nv, &err) == VIT_OK);
    int train_of[10] = {0}, all_of[10] = {0};
    for (size_t i = 0; i < 15; i++)
        all_of[ds_label(d, i)]++;
    for (size_t i = 0; t && i < nt; i++)
        train_of[ds_label(d, t[i])]++;
    for (int c = 0; c < 10; c++)
        CHECKF(all_of[c] == 0 || train_of[c] >= 1, "class %d: %d items, none left to train",
               c, all_of[c]);
    free(t);
    free(v);
    /* nothing held out at 0; out of range refused */
    CHECK(ds_split(d, 50, 0.0, 1, &t, &nt, &v, &nv, &err) == VIT_OK && nv == 0 && nt == 50);
    free(t);
    free(v);
    const double bad[] = {1.0, -0.1, NAN};
    for (int i = 0; i < 3; i++)
        CHECKF(ds_split(d, 50, bad[i], 1, &t, &nt, &v, &nv, &err) == VIT_ERR_INVALID,
               "fraction %g accepted", bad[i]);
}

/* ---- the loader over an item list --------------------------------------- */

static void test_loader_items(const ds_dataset *d, const vit_model *m)
{
    const size_t items[] = {5, 2, 9, 2};
    ds_loader_options o = {.batch_size = 8, .threads = 2, .prefetch = 1,
                           .preprocess = m->cfg.preprocess, .items = items, .num_items = 4,
                           .limit = 1 /* ignored: items win */};
    ds_loader *l = NULL;
    vit_error err = {0};
    CHECKF(ds_loader_create(d, &o, &l, &err) == VIT_OK, "%s", err.message);
    if (l) {
        size_t per = (size_t)3 * m->cfg.image_size * m->cfg.image_size;
        float *img = malloc(8 * per * sizeof *img);
        int labels[8], count = 0;
        size_t idx[8] = {0};
        CHECK(ds_loader_items(l) == 4 && ds_loader_batches(l) == 1);
        CHECK(ds_loader_start_epoch(l, 0, &err) == VIT_OK);
        CHECK(ds_loader_next(l, img, labels, idx, &count, &err) == VIT_OK);
        CHECKF(count == 4 && idx[0] == 5 && idx[1] == 2 && idx[2] == 9 && idx[3] == 2,
               "got %d items: %zu %zu %zu %zu", count, idx[0], idx[1], idx[2], idx[3]);
        CHECK(labels[0] == ds_label(d, 5) && labels[2] == ds_label(d, 9));
        free(img);
        ds_loader_free(l);
    }
    const size_t past[] = {1, 10000};
    o.items = past;
    o.num_items = 2;
    CHECK(ds_loader_create(d, &o, &l, &err) == VIT_ERR_INVALID && strstr(err.message, "10000"));
    o.items = items;
    o.augment = true;
    o.aug = (ds_augment){.scale_min = 0.9, .scale_max = 0.5, .ratio_min = 1, .ratio_max = 1};
    CHECK(ds_loader_create(d, &o, &l, &err) == VIT_ERR_INVALID);
    o.aug = (ds_augment){.scale_min = 0.5, .scale_max = 1, .ratio_min = 1, .ratio_max = 1,
                         .flip = 1.5};
    CHECK(ds_loader_create(d, &o, &l, &err) == VIT_ERR_INVALID);
}

/* ---- policy and defaults ------------------------------------------------ */

static int near(double a, double b) { return fabs(a - b) < 1e-12; }

static void test_policy(void)
{
    ds_augment a;
    CHECK(!trainer_augment_policy(TRAINER_AUGMENT_NONE, 300, 32, &a));
    CHECK(trainer_augment_policy(TRAINER_AUGMENT_STRONG, 8, 32, &a) && near(a.scale_min, 0.08) &&
          near(a.scale_max, 1) && near(a.flip, 0.5) && near(a.ratio_min, 0.75));
    /* light: keep 0.9 of each side up to the input's size, 0.75 from twice it */
    CHECK(trainer_augment_policy(TRAINER_AUGMENT_LIGHT, 28, 32, &a));
    CHECKF(near(a.scale_min, 0.81) && near(a.scale_max, 1) && a.flip == 0 &&
               near(a.ratio_min, 0.9) && near(a.ratio_max, 1 / 0.9),
           "light 28/32: scale %g ratio %g-%g flip %g", a.scale_min, a.ratio_min, a.ratio_max,
           a.flip);
    CHECK(trainer_augment_policy(TRAINER_AUGMENT_LIGHT, 48, 32, &a) &&
          near(a.scale_min, 0.825 * 0.825));
    CHECK(trainer_augment_policy(TRAINER_AUGMENT_LIGHT, 500, 224, &a) &&
          near(a.scale_min, 0.75 * 0.75));
    /* auto: none for sources below the input, light (no flip) from it */
    CHECK(!trainer_augment_policy(TRAINER_AUGMENT_AUTO, 8, 32, &a));
    CHECK(!trainer_augment_policy(TRAINER_AUGMENT_AUTO, 28, 32, &a));
    CHECK(!trainer_augment_policy(TRAINER_AUGMENT_AUTO, 223, 224, &a));
    CHECK(trainer_augment_policy(TRAINER_AUGMENT_AUTO, 32, 32, &a) && near(a.scale_min, 0.81) &&
          a.flip == 0);
    CHECK(trainer_augment_policy(TRAINER_AUGMENT_AUTO, 480, 224, &a) &&
          near(a.scale_min, 0.5625) && a.flip == 0);
    /* names */
    const char *names[] = {"auto", "none", "light", "strong"};
    for (int i = 0; i < 4; i++) {
        trainer_augment p = TRAINER_AUGMENT_STRONG;
        CHECKF(trainer_augment_parse(names[i], &p) && (int)p == i &&
                   strcmp(trainer_augment_name(p), names[i]) == 0,
               "%s", names[i]);
    }
    trainer_augment p = TRAINER_AUGMENT_LIGHT;
    CHECK(!trainer_augment_parse("ImageNet", &p) && !trainer_augment_parse(NULL, &p) &&
          p == TRAINER_AUGMENT_LIGHT);
    CHECK(strcmp(trainer_augment_name((trainer_augment)9), "?") == 0);
    /* per-method defaults: full below BitFit's lr, with a real decay */
    trainer_config b = trainer_defaults_for(VIT_METHOD_BITFIT), d = trainer_defaults();
    trainer_config l = trainer_defaults_for(VIT_METHOD_LINEAR);
    trainer_config f = trainer_defaults_for(VIT_METHOD_FULL);
    CHECK(d.method == VIT_METHOD_BITFIT && d.lr == b.lr && d.weight_decay == b.weight_decay &&
          d.validation_split == b.validation_split && d.augment == TRAINER_AUGMENT_AUTO);
    CHECK(l.method == VIT_METHOD_LINEAR && f.method == VIT_METHOD_FULL);
    CHECKF(f.lr <= b.lr / 10 && f.weight_decay == 0.05 && l.weight_decay == 0 && l.lr >= b.lr,
           "full lr %g wd %g, linear wd %g", f.lr, f.weight_decay, l.weight_decay);
    CHECK(b.validation_split == 0.1 && b.early_stopping_patience == 3 && b.epochs == 10);
}

/* Makes an ImageFolder of large photos in dir: two classes, three each. */
static int make_photo_folder(const char *dir)
{
    static const char *const cls[] = {"cat", "cup"};
    static const char *const src[] = {"tests/data/images/chelsea.png",
                                      "tests/data/images/coffee.jpg"};
    char path[4096], target[4096];
    if (mkdir(dir, 0700) != 0)
        return 0;
    for (int c = 0; c < 2; c++) {
        snprintf(path, sizeof path, "%s/%s", dir, cls[c]);
        if (mkdir(path, 0700) != 0)
            return 0;
        for (int i = 0; i < 3; i++) {
            snprintf(path, sizeof path, "%s/%s/%d%s", dir, cls[c], i, c ? ".jpg" : ".png");
            if (symlink(test_path(target, sizeof target, src[c]), path) != 0)
                return 0;
        }
    }
    return 1;
}

static void test_auto_choice(const vit_model *m, const ds_dataset *fashion, const char *tmp)
{
    trainer_config c = trainer_defaults();
    c.max_steps = 1;
    c.epochs = 1;
    c.batch_size = 2;
    c.train_limit = 8;
    c.loader_threads = 1;
    c.log_every = 0;
    c.validation_split = 0;
    trainer_result r;
    vit_error err = {0};
    CHECKF(trainer_run(m, fashion, NULL, &c, &r, &err) == VIT_OK, "%s", err.message);
    CHECKF(r.augment_used == TRAINER_AUGMENT_NONE, "auto on 28-pixel images chose %s",
           trainer_augment_name(r.augment_used));
    trainer_result_free(&r);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/photos", tmp);
    CHECK(make_photo_folder(dir));
    ds_options o = {.allow_outside_root = true};
    ds_dataset *photos = NULL;
    CHECKF(ds_open(dir, &o, &photos, &err) == VIT_OK, "%s", err.message);
    if (photos) {
        CHECKF(trainer_run(m, photos, NULL, &c, &r, &err) == VIT_OK, "%s", err.message);
        CHECKF(r.augment_used == TRAINER_AUGMENT_LIGHT, "auto on photos chose %s",
               trainer_augment_name(r.augment_used));
        trainer_result_free(&r);
        /* asked for, kept */
        c.augment = TRAINER_AUGMENT_STRONG;
        CHECK(trainer_run(m, photos, NULL, &c, &r, &err) == VIT_OK &&
              r.augment_used == TRAINER_AUGMENT_STRONG);
        trainer_result_free(&r);
    }
    ds_close(photos);
}

/* ---- best epoch and early stopping -------------------------------------- */

typedef struct epochs_seen {
    int n;
    trainer_epoch_info e[16];
} epochs_seen;

static void on_epoch(void *ctx, const trainer_epoch_info *e)
{
    epochs_seen *s = ctx;
    if (s->n < 16)
        s->e[s->n] = *e;
    s->n++;
}

/* Top-1 (and *loss) of task t on eval (its first `limit` items). */
static double task_top1(const vit_model *m, const vit_task *t, const ds_dataset *eval,
                        size_t limit, double *loss)
{
    vit_model *view = NULL;
    vit_error err = {0};
    eval_result r = {0};
    double top1 = -1;
    eval_options eo = {.limit = limit, .batch_size = 16, .loader_threads = 1}; /* the runs' */
    if (vit_model_view(m, t->num_classes, t->trainable, &view, &err) == VIT_OK &&
        trainer_evaluate(view, (const char *const *)t->labels, eval, &eo, &r, &err) == VIT_OK)
        top1 = r.top1;
    *loss = r.loss;
    CHECKF(top1 >= 0, "evaluating the task: %s", err.message);
    eval_result_free(&r);
    vit_model_free(view);
    return top1;
}

/* The worsening run: trains a new head on shifted labels, validates on the
 * true ones: each epoch learns the wrong classes better. */
static trainer_config worsening_config(epochs_seen *seen)
{
    trainer_config c = trainer_defaults();
    c.epochs = 4;
    c.batch_size = 16;
    c.train_limit = 160;
    c.eval_limit = 200;
    c.lr = 2e-3;
    c.warmup_epochs = 0;
    c.augment = TRAINER_AUGMENT_NONE;
    c.loader_threads = 1;
    c.head = TRAINER_HEAD_NEW;
    c.log_every = 0;
    c.early_stopping_patience = 1;
    c.epoch_end = on_epoch;
    c.ctx = seen;
    return c;
}

static void test_best_epoch(const vit_model *m, const ds_dataset *shifted,
                            const ds_dataset *truth)
{
    epochs_seen seen = {0};
    trainer_config c = worsening_config(&seen);
    trainer_result r;
    vit_error err = {0};
    CHECKF(trainer_run(m, shifted, truth, &c, &r, &err) == VIT_OK, "%s", err.message);
    if (!r.task)
        return;
    /* the premise: validation worsened after epoch 1 (top-1 lower, or the
     * same with a higher loss), and the two states score apart */
    CHECKF(seen.n == 2 && seen.e[0].has_val &&
               (seen.e[1].val_top1 < seen.e[0].val_top1 ||
                (seen.e[1].val_top1 == seen.e[0].val_top1 &&
                 seen.e[1].val_loss > seen.e[0].val_loss)),
           "%d epochs, top-1 %.4f then %.4f, loss %.4f then %.4f: the run did not worsen as "
           "planned",
           seen.n, seen.e[0].val_top1, seen.n > 1 ? seen.e[1].val_top1 : -1, seen.e[0].val_loss,
           seen.n > 1 ? seen.e[1].val_loss : -1);
    CHECKF(r.best_epoch == 1 && r.epochs_run == 2 && r.stopped_early,
           "best %d, run %d, stopped %d (want 1, 2, 1)", r.best_epoch, r.epochs_run,
           r.stopped_early);
    CHECK(seen.e[0].is_best && !seen.e[1].is_best && seen.e[1].stopping &&
          seen.e[1].best_epoch == 1 && seen.e[0].epoch == 1 && seen.e[1].epoch == 2);
    CHECKF(r.has_eval && !r.eval_is_validation && r.eval.top1 == seen.e[0].val_top1 &&
               r.eval.count == 200,
           "result eval %.4f over %ld, epoch 1's %.4f", r.eval.top1, r.eval.count,
           seen.e[0].val_top1);
    /* the task itself is epoch 1's: it evaluates to epoch 1's scores */
    double loss = 0, got = task_top1(m, r.task, truth, 200, &loss);
    CHECKF(got == seen.e[0].val_top1 && loss == seen.e[0].val_loss,
           "the task scores %.4f (loss %.6f), epoch 1 %.4f (%.6f), epoch 2 %.4f (%.6f)", got,
           loss, seen.e[0].val_top1, seen.e[0].val_loss, seen.e[1].val_top1,
           seen.e[1].val_loss);
    double stopped_top1 = seen.e[1].val_top1;
    trainer_result_free(&r);

    /* patience 0: every epoch runs, the best is still kept */
    seen.n = 0;
    c.early_stopping_patience = 0;
    CHECKF(trainer_run(m, shifted, truth, &c, &r, &err) == VIT_OK, "%s", err.message);
    CHECKF(seen.n == 4 && r.epochs_run == 4 && !r.stopped_early && r.best_epoch == 1,
           "patience 0: %d epochs, best %d", r.epochs_run, r.best_epoch);
    CHECKF(seen.n >= 2 && seen.e[1].val_top1 == stopped_top1, "epoch 2 is not the same run's");
    if (r.task)
        CHECK(task_top1(m, r.task, truth, 200, &loss) == seen.e[0].val_top1 &&
              loss == seen.e[0].val_loss);
    trainer_result_free(&r);

    /* the bundled head kept: the state before training competes (epoch 0),
     * and wins; the task is the bundled model's */
    seen.n = 0;
    c.head = TRAINER_HEAD_KEEP;
    c.early_stopping_patience = 2;
    CHECKF(trainer_run(m, shifted, truth, &c, &r, &err) == VIT_OK, "%s", err.message);
    eval_result base = {0};
    eval_options eo = {.limit = 200, .batch_size = 16, .loader_threads = 1};
    CHECK(trainer_evaluate(m, NULL, truth, &eo, &base, &err) == VIT_OK);
    CHECKF(r.best_epoch == 0 && r.has_eval && r.epochs_run == 2 && r.stopped_early &&
               seen.n == 2 && !seen.e[0].is_best && !seen.e[1].is_best &&
               seen.e[1].val_top1 < base.top1,
           "kept head: best %d, has_eval %d, %d epochs, stopped %d", r.best_epoch, r.has_eval,
           r.epochs_run, r.stopped_early);
    CHECKF(r.eval.top1 == base.top1, "kept head: result eval %.4f, the bundled model %.4f",
           r.eval.top1, base.top1);
    /* The task lists the classes in the data set's order, not the model's:
     * the same head with its rows permuted, so each image's softmax sums
     * its classes in another order and the loss may differ in the last bits. */
    if (r.task)
        CHECKF(task_top1(m, r.task, truth, 200, &loss) == base.top1 &&
                   fabs(loss - base.loss) <= 1e-12 * base.loss,
               "the kept task: loss %.17g, the bundled model's %.17g", loss, base.loss);
    eval_result_free(&base);
    trainer_result_free(&r);
    c.head = TRAINER_HEAD_NEW;

    /* no validation (no eval set, no split): the last state, no eval */
    seen.n = 0;
    c.validation_split = 0;
    c.early_stopping_patience = 3;
    CHECKF(trainer_run(m, shifted, NULL, &c, &r, &err) == VIT_OK, "%s", err.message);
    CHECK(r.best_epoch == 0 && !r.has_eval && r.epochs_run == 4 && seen.n == 4 &&
          !seen.e[0].has_val && !r.stopped_early);
    trainer_result_free(&r);
}

static void test_validation_split(const vit_model *m, const ds_dataset *d)
{
    epochs_seen seen = {0};
    trainer_config c = worsening_config(&seen);
    c.epochs = 2;
    c.validation_split = 0.25;
    c.early_stopping_patience = 0;
    size_t *t = NULL, *v = NULL, nt = 0, nv = 0;
    vit_error err = {0};
    CHECK(ds_split(d, c.train_limit, 0.25, c.seed, &t, &nt, &v, &nv, &err) == VIT_OK);
    trainer_result r;
    CHECKF(trainer_run(m, d, NULL, &c, &r, &err) == VIT_OK, "%s", err.message);
    long per_epoch = (long)((nt + 15) / 16);
    CHECKF(r.total_steps == 2 * per_epoch && r.has_eval && r.eval_is_validation &&
               r.eval.count == (long)nv && r.best_epoch >= 1,
           "split: %ld steps (want %ld), eval over %ld (want %zu), best %d", r.total_steps,
           2 * per_epoch, r.eval.count, nv, r.best_epoch);
    trainer_result_free(&r);
    free(t);
    free(v);
    /* out of range refused */
    c.validation_split = 1.0;
    CHECK(trainer_run(m, d, NULL, &c, &r, &err) == VIT_ERR_INVALID);
    c.validation_split = 0.1;
    c.early_stopping_patience = -1;
    CHECK(trainer_run(m, d, NULL, &c, &r, &err) == VIT_ERR_INVALID);
}

int main(void)
{
    char tmp[] = "/tmp/vitfit-validation-XXXXXX";
    if (!mkdtemp(tmp))
        return 1;
    char model_dir[4096];
    test_path(model_dir, sizeof model_dir, "models/fashion-vit-tiny");
    vit_model *m = NULL;
    vit_error err = {0};
    CHECKF(vit_model_load(model_dir, &m, &err) == VIT_OK, "%s", err.message);
    ds_dataset *truth = open_idx(fashion_names), *shifted = open_idx(shifted_names);
    test_policy();
    if (m && truth && shifted) {
        test_split(truth);
        test_loader_items(truth, m);
        test_auto_choice(m, truth, tmp);
        /* the training runs: two minutes under a sanitizer, where api_finetune's jobs
         * run the same trainer; the plain build runs them */
        const char *sanitize = getenv("VIT_TEST_SANITIZE"); /* tests/meson.build */
        if (!sanitize || strcmp(sanitize, "none") == 0) {
            test_best_epoch(m, shifted, truth);
            test_validation_split(m, truth);
        }
    }
    ds_close(truth);
    ds_close(shifted);
    vit_model_free(m);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmp);
    return check_result();
}
