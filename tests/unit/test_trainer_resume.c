/*
 * test_trainer_resume.c - checkpoints and resume of trainer_run on real
 * images (Debian's Fashion-MNIST, the bundled models/fashion-vit-tiny).
 *
 * - A run interrupted after step k (cancel callback) and resumed from its
 *   checkpoint ends with a trainable arena bit-identical to the uninterrupted
 *   run with the same seed, with augmentation and shuffling on: bitfit and
 *   linear, checkpoints every epoch only (the resume repeats the steps since
 *   the last epoch) and every N steps (the resume starts mid-epoch).
 * - Writing checkpoints does not change the run; they come when promised.
 * - Across validation, best epoch and early stopping: a run that trains on
 *   shifted labels and validates on the true ones (its best epoch is the
 *   first, early stopping ends it two epochs later), interrupted in the
 *   best epoch's successor, mid-epoch and in the epoch it stops after, and
 *   resumed, ends with the same task, best epoch, epochs, stop and scores
 *   bit for bit; resuming its last checkpoint stops at once with the same.
 * - A damaged or truncated checkpoint, another backbone, another data set,
 *   another hyper-parameter, a missing checkpoint and full fine-tuning are
 *   refused with the right status and a message saying why.
 */
#include <limits.h>
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

#define FASHION_TEST "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
#define FASHION_TRAIN "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"

enum { ITEMS = 96, BATCH = 16, EPOCHS = 3, STEPS = EPOCHS * ITEMS / BATCH /* 18 */ };

static char tmpdir[64];
static const char *const fashion_names[] = {"T-shirt/top", "Trouser", "Pullover", "Dress",
                                            "Coat", "Sandal", "Shirt", "Sneaker",
                                            "Bag", "Ankle boot", NULL};

static ds_dataset *open_idx(const char *path)
{
    ds_options o = {.class_names = fashion_names, .allow_outside_root = true};
    ds_dataset *d = NULL;
    vit_error err = {0};
    CHECKF(ds_open(path, &o, &d, &err) == VIT_OK, "%s: %s", path, err.message);
    return d;
}

/* Follows the steps (progress every step); stops once `after` are done. */
typedef struct run_ctx {
    long step, after;
    int written, written_epoch_end;
    long written_steps[64];
} run_ctx;

static int stop_after(void *ctx)
{
    run_ctx *c = ctx;
    return c->after > 0 && c->step >= c->after;
}

static void on_progress(void *ctx, const trainer_progress *p)
{
    ((run_ctx *)ctx)->step = p->step;
}

static void on_checkpoint(void *ctx, const trainer_checkpoint_info *info)
{
    run_ctx *c = ctx;
    if (c->written < 64)
        c->written_steps[c->written] = info->step;
    c->written++;
    c->written_epoch_end += info->end_of_epoch;
}

static trainer_config base_config(vit_method method)
{
    trainer_config cfg = trainer_defaults();
    cfg.method = method;
    cfg.epochs = EPOCHS;
    cfg.batch_size = BATCH;
    cfg.train_limit = ITEMS;
    cfg.seed = 1234;
    cfg.augment = TRAINER_AUGMENT_STRONG;
    cfg.validation_split = 0;
    cfg.early_stopping_patience = 0;
    cfg.shuffle = true;
    cfg.loader_threads = 2;
    cfg.log_every = 1;
    cfg.progress = on_progress;
    cfg.head = TRAINER_HEAD_NEW;
    cfg.should_stop = stop_after;
    cfg.checkpoint = on_checkpoint;
    return cfg;
}

/* Runs cfg; returns the trained arena (caller frees) or NULL, *n its length. */
static float *run(const vit_model *m, const ds_dataset *d, trainer_config cfg, run_ctx *ctx,
                  trainer_result *res_out, vit_status want, const char *what)
{
    cfg.ctx = ctx;
    trainer_result res;
    vit_error err = {0};
    vit_status st = trainer_run(m, d, NULL, &cfg, &res, &err);
    CHECKF(st == want, "%s: status %s, want %s: %s", what, vit_status_name(st),
           vit_status_name(want), err.message);
    if (st != VIT_OK)
        return NULL;
    float *arena = NULL;
    if (!res.cancelled && res.task) {
        arena = malloc(sizeof(float) * res.task->trainable_len);
        memcpy(arena, res.task->trainable, sizeof(float) * res.task->trainable_len);
    }
    if (res_out)
        *res_out = (trainer_result){.steps = res.steps, .total_steps = res.total_steps,
                                    .final_loss = res.final_loss, .cancelled = res.cancelled};
    trainer_result_free(&res);
    return arena;
}

/* The first index where a and b differ bitwise, or -1. */
static long first_diff(const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0)
            return (long)i;
    return -1;
}

static void rm_dir(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, TRAINER_CHECKPOINT_FILE);
    unlink(path);
    rmdir(dir);
}

/* The key property: interrupted after `stop` steps with checkpoints every
 * `every` steps (0: epochs only), then resumed: bit-identical arena. */
static void check_resume(const vit_model *m, const ds_dataset *d, vit_method method, long every,
                         long stop, const float *want, size_t n, double want_loss)
{
    char dir[256], what[128];
    snprintf(dir, sizeof dir, "%s/ck-%s-%ld-%ld", tmpdir, vit_method_name(method), every, stop);
    snprintf(what, sizeof what, "%s every %ld stop %ld", vit_method_name(method), every, stop);
    trainer_config cfg = base_config(method);
    cfg.checkpoint_dir = dir;
    cfg.checkpoint_every_steps = every;
    run_ctx c1 = {.after = stop};
    trainer_result r1;
    run(m, d, cfg, &c1, &r1, VIT_OK, what);
    CHECKF(r1.cancelled && r1.steps == stop, "%s: cancelled %d after %ld steps", what,
           r1.cancelled, r1.steps);
    /* the last checkpoint is the last multiple of `every`, or of an epoch */
    long epoch_steps = ITEMS / BATCH, last = stop / epoch_steps * epoch_steps;
    if (every > 0 && stop / every * every > last)
        last = stop / every * every;
    CHECKF(c1.written > 0 && c1.written_steps[c1.written - 1] == last,
           "%s: last checkpoint at step %ld, want %ld", what,
           c1.written ? c1.written_steps[c1.written - 1] : -1, last);
    cfg.resume_dir = dir;
    run_ctx c2 = {0};
    trainer_result r2;
    float *got = run(m, d, cfg, &c2, &r2, VIT_OK, what);
    CHECKF(r2.steps == STEPS && !r2.cancelled, "%s: resumed run ended at step %ld", what,
           r2.steps);
    if (got) {
        long i = first_diff(got, want, n);
        CHECKF(i < 0, "%s: arena differs at %ld: %.9g vs %.9g", what, i, i < 0 ? 0 : got[i],
               i < 0 ? 0 : want[i]);
        CHECKF(memcmp(&r2.final_loss, &want_loss, sizeof want_loss) == 0,
               "%s: final loss %.17g vs %.17g", what, r2.final_loss, want_loss);
    }
    free(got);
    rm_dir(dir);
}

static void test_method(const vit_model *m, const ds_dataset *d, vit_method method)
{
    trainer_config cfg = base_config(method);
    run_ctx c0 = {0};
    trainer_result r0;
    float *want = run(m, d, cfg, &c0, &r0, VIT_OK, "uninterrupted");
    if (!want)
        return;
    size_t n = m->trainable_len; /* a task's arena: the backbone's biases + a 10-class head */
    CHECKF(r0.steps == STEPS, "uninterrupted run: %ld steps", r0.steps);

    /* writing checkpoints changes nothing, and they come when promised:
     * steps 4, 6 (epoch), 8, 12 (epoch; not twice), 16, 18 (epoch) */
    char dir[256];
    snprintf(dir, sizeof dir, "%s/ck-%s-plain", tmpdir, vit_method_name(method));
    cfg.checkpoint_dir = dir;
    cfg.checkpoint_every_steps = 4;
    run_ctx c1 = {0};
    trainer_result r1;
    float *with = run(m, d, cfg, &c1, &r1, VIT_OK, "with checkpoints");
    if (with) {
        long i = first_diff(with, want, n);
        CHECKF(i < 0, "%s: checkpointing changed the arena at %ld", vit_method_name(method), i);
    }
    static const long expect[] = {4, 6, 8, 12, 16, 18};
    CHECKF(c1.written == 6 && c1.written_epoch_end == 3, "%d checkpoints (%d at epoch ends)",
           c1.written, c1.written_epoch_end);
    for (int i = 0; i < 6 && i < c1.written; i++)
        CHECKF(c1.written_steps[i] == expect[i], "checkpoint %d at step %ld, want %ld", i,
               c1.written_steps[i], expect[i]);
    /* resuming a finished run's checkpoint gives the same product at once */
    cfg.resume_dir = dir;
    run_ctx c2 = {0};
    float *again = run(m, d, cfg, &c2, NULL, VIT_OK, "resume a finished run");
    if (again)
        CHECKF(first_diff(again, want, n) < 0, "resuming the last checkpoint changed the arena");
    free(with);
    free(again);
    rm_dir(dir);

    check_resume(m, d, method, 0, 8, want, n, r0.final_loss);  /* back to step 6 */
    check_resume(m, d, method, 4, 10, want, n, r0.final_loss); /* back to 8: mid-epoch */
    check_resume(m, d, method, 5, 11, want, n, r0.final_loss); /* back to 10: mid-epoch 1 */
    free(want);
}

/* ---- resume across validation, best epoch and early stopping ---- */

static const char *const shifted_names[] = {"Trouser", "Pullover", "Dress", "Coat",
                                            "Sandal", "Shirt", "Sneaker", "Bag",
                                            "Ankle boot", "T-shirt/top", NULL};

/* What an early-stopping run ended with. */
typedef struct es_result {
    float *arena;             /* owned */
    long steps;
    int best_epoch, epochs_run;
    bool stopped, cancelled, has_eval;
    double top1, loss;
} es_result;

static es_result run_es(const vit_model *m, const ds_dataset *train, const ds_dataset *eval,
                        trainer_config cfg, run_ctx *ctx, const char *what)
{
    cfg.ctx = ctx;
    trainer_result res;
    vit_error err = {0};
    es_result out = {0};
    vit_status st = trainer_run(m, train, eval, &cfg, &res, &err);
    CHECKF(st == VIT_OK, "%s: %s", what, err.message);
    if (st != VIT_OK)
        return out;
    out = (es_result){.steps = res.steps, .best_epoch = res.best_epoch,
                      .epochs_run = res.epochs_run, .stopped = res.stopped_early,
                      .cancelled = res.cancelled, .has_eval = res.has_eval,
                      .top1 = res.eval.top1, .loss = res.eval.loss};
    if (!res.cancelled && res.task) {
        out.arena = malloc(sizeof(float) * res.task->trainable_len);
        memcpy(out.arena, res.task->trainable, sizeof(float) * res.task->trainable_len);
    }
    trainer_result_free(&res);
    return out;
}

static void same_es(const es_result *got, const es_result *want, size_t n, const char *what)
{
    CHECKF(got->arena && !got->cancelled, "%s: no product", what);
    if (got->arena) {
        long i = first_diff(got->arena, want->arena, n);
        CHECKF(i < 0, "%s: arena differs at %ld", what, i);
    }
    CHECKF(got->best_epoch == want->best_epoch && got->epochs_run == want->epochs_run &&
               got->stopped == want->stopped && got->steps == want->steps &&
               got->has_eval == want->has_eval,
           "%s: best %d, %d epochs, stopped %d, %ld steps (want %d, %d, %d, %ld)", what,
           got->best_epoch, got->epochs_run, got->stopped, got->steps, want->best_epoch,
           want->epochs_run, want->stopped, want->steps);
    CHECKF(memcmp(&got->top1, &want->top1, sizeof got->top1) == 0 &&
               memcmp(&got->loss, &want->loss, sizeof got->loss) == 0,
           "%s: eval %.17g / %.17g, want %.17g / %.17g", what, got->top1, got->loss, want->top1,
           want->loss);
}

static void test_early_stopping_resume(const vit_model *m, const ds_dataset *truth)
{
    ds_options o = {.class_names = shifted_names, .allow_outside_root = true};
    ds_dataset *shifted = NULL;
    vit_error err = {0};
    CHECKF(ds_open(FASHION_TEST, &o, &shifted, &err) == VIT_OK, "%s", err.message);
    if (!shifted)
        return;
    trainer_config cfg = base_config(VIT_METHOD_BITFIT);
    cfg.epochs = 6;
    cfg.eval_limit = 64;
    cfg.early_stopping_patience = 2;
    cfg.lr = 2e-3;
    run_ctx c0 = {0};
    es_result want = run_es(m, shifted, truth, cfg, &c0, "early stopping, uninterrupted");
    /* the premise: best epoch 1, stopped after epoch 3 (step 18 of 36) */
    CHECKF(want.arena && want.best_epoch == 1 && want.epochs_run == 3 && want.stopped &&
               want.steps == 18 && want.has_eval,
           "early stopping run: best %d, %d epochs, stopped %d at step %ld", want.best_epoch,
           want.epochs_run, want.stopped, want.steps);
    size_t n = m->trainable_len;
    static const long every[] = {0, 4, 5, 0};
    static const long stop[] = {8, 10, 13, 16};
    for (int k = 0; want.arena && k < 4; k++) {
        char dir[256], what[128];
        snprintf(dir, sizeof dir, "%s/ck-es-%d", tmpdir, k);
        snprintf(what, sizeof what, "early stopping: every %ld, stop %ld", every[k], stop[k]);
        trainer_config c = cfg;
        c.checkpoint_dir = dir;
        c.checkpoint_every_steps = every[k];
        run_ctx c1 = {.after = stop[k]};
        es_result r1 = run_es(m, shifted, truth, c, &c1, what);
        CHECKF(r1.cancelled && r1.steps == stop[k], "%s: cancelled %d at %ld", what,
               r1.cancelled, r1.steps);
        free(r1.arena);
        c.resume_dir = dir;
        run_ctx c2 = {0};
        es_result r2 = run_es(m, shifted, truth, c, &c2, what);
        same_es(&r2, &want, n, what);
        free(r2.arena);
        if (k == 3) {
            /* the last checkpoint is the stopped run's: resuming it stops at once */
            run_ctx c3 = {0};
            es_result r3 = run_es(m, shifted, truth, c, &c3, "resume the stopped run");
            same_es(&r3, &want, n, "resume the stopped run");
            CHECKF(c3.step == 0, "the stopped run took steps again (to %ld)", c3.step);
            free(r3.arena);
        }
        rm_dir(dir);
    }
    free(want.arena);
    ds_close(shifted);
}

/* Writes a checkpoint of a short run into dir (interrupted after 4 steps). */
static void make_checkpoint(const vit_model *m, const ds_dataset *d, const char *dir)
{
    trainer_config cfg = base_config(VIT_METHOD_BITFIT);
    cfg.checkpoint_dir = dir;
    cfg.checkpoint_every_steps = 2;
    run_ctx c = {.after = 4};
    run(m, d, cfg, &c, NULL, VIT_OK, "make checkpoint");
}

/* The first occurrence of text in buf[0..n), or NULL. */
static char *find_bytes(char *buf, size_t n, const char *text)
{
    size_t k = strlen(text);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(buf + i, text, k) == 0)
            return buf + i;
    return NULL;
}

static long file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

/* Resumes from dir with cfg changed by the caller; checks status and message. */
static void refused(const vit_model *m, const ds_dataset *d, trainer_config cfg, const char *dir,
                    vit_status want, const char *needle, const char *what)
{
    cfg.resume_dir = dir;
    run_ctx c = {0};
    cfg.ctx = &c;
    trainer_result res;
    vit_error err = {0};
    vit_status st = trainer_run(m, d, NULL, &cfg, &res, &err);
    CHECKF(st == want, "%s: status %s, want %s (%s)", what, vit_status_name(st),
           vit_status_name(want), err.message);
    CHECKF(strstr(err.message, needle) != NULL, "%s: message '%s' lacks '%s'", what, err.message,
           needle);
    if (st == VIT_OK)
        trainer_result_free(&res);
}

static void test_refusals(const vit_model *m, const ds_dataset *d)
{
    char dir[256], path[512];
    snprintf(dir, sizeof dir, "%s/ck-refuse", tmpdir);
    snprintf(path, sizeof path, "%s/%s", dir, TRAINER_CHECKPOINT_FILE);
    make_checkpoint(m, d, dir);
    long size = file_size(path);
    CHECKF(size > 1000, "checkpoint is %ld bytes", size);
    FILE *f = fopen(path, "rb");
    char *orig = malloc((size_t)size);
    CHECK(f && fread(orig, 1, (size_t)size, f) == (size_t)size);
    if (f)
        fclose(f);
    trainer_config cfg = base_config(VIT_METHOD_BITFIT);

    /* the intact file resumes (the refusals below are about what changed) */
    refused(m, d, cfg, dir, VIT_OK, "", "intact");

    /* another backbone: one frozen weight changed */
    vit_model *other = NULL;
    vit_error err = {0};
    char model_dir[4096];
    test_path(model_dir, sizeof model_dir, "models/fashion-vit-tiny");
    CHECK(vit_model_load(model_dir, &other, &err) == VIT_OK);
    if (other) {
        other->frozen[0] += 1.0f;
        refused(other, d, cfg, dir, VIT_ERR_MISMATCH, "another backbone", "other backbone");
        vit_model_free(other);
    }
    /* another data set: the same count of other images */
    ds_dataset *d2 = open_idx(FASHION_TRAIN);
    if (d2)
        refused(m, d2, cfg, dir, VIT_ERR_MISMATCH, "another training set", "other data set");
    ds_close(d2);
    /* another hyper-parameter */
    trainer_config c2 = cfg;
    c2.lr = cfg.lr * 2;
    refused(m, d, c2, dir, VIT_ERR_MISMATCH, "lr", "other lr");
    c2 = cfg;
    c2.augment = TRAINER_AUGMENT_NONE;
    refused(m, d, c2, dir, VIT_ERR_MISMATCH, "augment", "no augment");
    c2 = cfg;
    c2.validation_split = 0.2;
    refused(m, d, c2, dir, VIT_ERR_MISMATCH, "validation_split", "another split");
    c2 = cfg;
    c2.early_stopping_patience = 2;
    refused(m, d, c2, dir, VIT_ERR_MISMATCH, "early_stopping_patience", "another patience");
    /* another method: linear's arena has the same size, its hyper-parameter differs */
    c2 = cfg;
    c2.method = VIT_METHOD_LINEAR;
    refused(m, d, c2, dir, VIT_ERR_MISMATCH, "method", "other method");
    /* full: not supported, said so */
    c2 = cfg;
    c2.method = VIT_METHOD_FULL;
    refused(m, d, c2, dir, VIT_ERR_UNSUPPORTED, "full fine-tuning", "full");

    /* a flipped bit in the data (the last byte: a moment) */
    orig[size - 1] ^= 0x10;
    f = fopen(path, "wb");
    CHECK(f && fwrite(orig, 1, (size_t)size, f) == (size_t)size);
    if (f)
        fclose(f);
    refused(m, d, cfg, dir, VIT_ERR_FORMAT, "damaged", "flipped bit in data");
    orig[size - 1] ^= 0x10;
    /* a changed digit in the metadata: "step":"4" becomes "step":"5" */
    char *at = find_bytes(orig, (size_t)size, "\"step\":\"4\"");
    CHECKF(at != NULL, "no step 4 in the header");
    if (at) {
        at[8] = '5';
        f = fopen(path, "wb");
        CHECK(f && fwrite(orig, 1, (size_t)size, f) == (size_t)size);
        if (f)
            fclose(f);
        refused(m, d, cfg, dir, VIT_ERR_FORMAT, "damaged", "changed step");
        at[8] = '4';
    }
    /* truncated: half the file */
    f = fopen(path, "wb");
    CHECK(f && fwrite(orig, 1, (size_t)size / 2, f) == (size_t)size / 2);
    if (f)
        fclose(f);
    refused(m, d, cfg, dir, VIT_ERR_FORMAT, "cannot resume", "truncated");
    /* empty */
    f = fopen(path, "wb");
    if (f)
        fclose(f);
    refused(m, d, cfg, dir, VIT_ERR_FORMAT, "cannot resume", "empty");
    /* none at all */
    unlink(path);
    refused(m, d, cfg, dir, VIT_ERR_NOT_FOUND, "no checkpoint", "missing");
    CHECK(!trainer_checkpoint_exists(dir));
    /* full cannot write them either */
    c2 = cfg;
    c2.method = VIT_METHOD_FULL;
    c2.checkpoint_dir = dir;
    c2.resume_dir = NULL;
    run_ctx c = {0};
    run(m, d, c2, &c, NULL, VIT_ERR_UNSUPPORTED, "full with checkpoint_dir");
    free(orig);
    rm_dir(dir);
}

/* A checkpoint edited with a valid sha256 (the file is the user's): a
 * schedule no run of this config reaches -- total steps near LONG_MAX, whose
 * re-planning would overflow -- is refused before any step. */
static void test_forged_schedule(const vit_model *m, const ds_dataset *d)
{
    char dir[256];
    snprintf(dir, sizeof dir, "%s/ck-forged", tmpdir);
    make_checkpoint(m, d, dir);
    trainer_config cfg = base_config(VIT_METHOD_BITFIT);
    cfg.checkpoint_dir = dir;
    cfg.checkpoint_every_steps = 2;
    /* this run's arena and moments, sized from the saved file */
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, TRAINER_CHECKPOINT_FILE);
    st_file *f = NULL;
    vit_error err = {0};
    CHECKF(st_open(path, &f, &err) == VIT_OK, "%s", err.message);
    const char *len = f ? st_metadata(f, "trainable_len") : NULL;
    size_t n = len ? strtoul(len, NULL, 10) : 0;
    st_close(f);
    trainer_ckpt c = {.n = n};
    float *buf = n ? calloc(3 * n, sizeof *buf) : NULL;
    CHECKF(buf, "trainable_len %zu", n);
    if (!buf)
        return;
    c.trainable = buf;
    c.opt = (optim_state){.n = n, .m = buf + n, .v = buf + 2 * n};
    CHECK(vit_model_fingerprint(m, c.backbone, &err) == VIT_OK);
    ds_fingerprint(d, cfg.train_limit, c.dataset);
    CHECKF(trainer_ckpt_load(dir, &cfg, &c, &err) == VIT_OK, "load: %s", err.message);
    const struct {
        const char *what;
        long total, step, epoch_steps, per_epoch;
    } forged[] = {
        {"total near LONG_MAX", LONG_MAX, LONG_MAX - 2, 0, 1000},
        {"longer epochs", c.total_steps, c.step, c.epoch_steps, c.per_epoch + 1},
        {"epoch steps past an epoch", c.total_steps, c.total_steps, c.per_epoch + 1, c.per_epoch},
    };
    trainer_ckpt orig = c;
    for (size_t i = 0; i < sizeof forged / sizeof forged[0]; i++) {
        c = orig;
        c.total_steps = forged[i].total;
        c.step = forged[i].step;
        c.epoch_steps = forged[i].epoch_steps;
        c.per_epoch = forged[i].per_epoch;
        char written[512];
        CHECKF(trainer_ckpt_save(dir, &cfg, &c, written, sizeof written, &err) == VIT_OK, "%s",
               err.message);
        refused(m, d, cfg, dir, VIT_ERR_FORMAT, "schedule", forged[i].what);
    }
    free(buf);
    rm_dir(dir);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/vitfit-resume-XXXXXX");
    if (!mkdtemp(tmpdir))
        return 1;
    char model_dir[4096];
    test_path(model_dir, sizeof model_dir, "models/fashion-vit-tiny");
    vit_model *m = NULL;
    vit_error err = {0};
    CHECKF(vit_model_load(model_dir, &m, &err) == VIT_OK, "%s", err.message);
    ds_dataset *d = open_idx(FASHION_TEST);
    if (m && d) {
        test_method(m, d, VIT_METHOD_BITFIT);
        test_method(m, d, VIT_METHOD_LINEAR);
        test_refusals(m, d);
        test_forged_schedule(m, d);
        test_early_stopping_resume(m, d);
    }
    ds_close(d);
    vit_model_free(m);
    rmdir(tmpdir);
    return check_result();
}
