/*
 * trainer_checkpoint.c - a training run's checkpoint file: write, read, check
 * (see trainer.h, "Checkpoints", and trainer_impl.h).
 *
 * The file is a safetensors file: tensors "trainable" (n), "optim.m",
 * "optim.v" when the optimizer keeps them, and "best" (the best epoch's
 * arena) when validation has chosen one; every scalar a "__metadata__"
 * string, in a fixed table of keys (hyper-parameters, then the run's
 * position and its validation: epochs run, best epoch, its top-1 and loss,
 * the epochs since it).  "sha256" is the hash of every table entry ("key\0value\0", in
 * table order) followed by the tensors' bytes, so a flipped bit anywhere
 * -- a digit of a step count as much as a moment -- is refused, not resumed
 * from.  Doubles are written with 17 significant digits, which strtod reads
 * back to the same double; hyper-parameters are compared as those strings.
 */
#include <errno.h>
#include <stdarg.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "safetensors.h"
#include "sha256.h"
#include "trainer_impl.h"

#define CKPT_FORMAT "vitfit-trainer-checkpoint"
#define CKPT_VERSION "2" /* 2: validation, best epoch and early stopping */
#define CKPT_MAX_KEYS 48
#define CKPT_VALUE_MAX 80
/* A checkpoint's header: 4 tensors and ~45 short strings fit in a few KB. */
#define CKPT_LIMITS ((st_limits){.max_header = 64u << 10, .max_tensors = 4})

/* One metadata entry. */
typedef struct ckpt_entry {
    const char *key;
    char value[CKPT_VALUE_MAX];
    bool hyper;               /* a hyper-parameter: must equal the run's */
} ckpt_entry;

typedef struct ckpt_table {
    ckpt_entry e[CKPT_MAX_KEYS];
    int n;
} ckpt_table;

static void put(ckpt_table *t, bool hyper, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void put(ckpt_table *t, bool hyper, const char *key, const char *fmt, ...)
{
    VIT_ASSERT(t->n < CKPT_MAX_KEYS);
    ckpt_entry *e = &t->e[t->n++];
    e->key = key;
    e->hyper = hyper;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->value, sizeof e->value, fmt, ap);
    va_end(ap);
}

static const char *head_name(trainer_head h)
{
    return h == TRAINER_HEAD_KEEP ? "keep" : h == TRAINER_HEAD_NEW ? "new" : "auto";
}

/* The hyper-parameters that shape a run's steps, as strings (what is written,
 * and what a resumed run must equal). */
static void hyper_table(const trainer_config *cfg, ckpt_table *t)
{
    put(t, true, "method", "%s", vit_method_name(cfg->method));
    put(t, true, "epochs", "%d", cfg->epochs);
    put(t, true, "max_steps", "%ld", cfg->max_steps);
    put(t, true, "batch_size", "%d", cfg->batch_size);
    put(t, true, "lr", "%.17g", cfg->lr);
    put(t, true, "min_lr", "%.17g", cfg->min_lr);
    put(t, true, "weight_decay", "%.17g", cfg->weight_decay);
    put(t, true, "warmup_epochs", "%.17g", cfg->warmup_epochs);
    put(t, true, "optimizer", "%s", cfg->optimizer == OPTIM_SGD ? "sgd" : "adamw");
    put(t, true, "momentum", "%.17g", cfg->momentum);
    put(t, true, "label_smoothing", "%.17g", cfg->label_smoothing);
    put(t, true, "clip_grad_norm", "%.17g", cfg->clip_grad_norm);
    put(t, true, "seed", "%llu", (unsigned long long)cfg->seed);
    put(t, true, "augment", "%s", trainer_augment_name(cfg->augment));
    put(t, true, "shuffle", "%s", cfg->shuffle ? "true" : "false");
    put(t, true, "train_limit", "%zu", cfg->train_limit);
    put(t, true, "head", "%s", head_name(cfg->head));
    put(t, true, "from_scratch", "%s", cfg->from_scratch ? "true" : "false");
    put(t, true, "on_bad", "%s", cfg->on_bad == DS_BAD_SKIP ? "skip" : "fail");
    put(t, true, "validation_split", "%.17g", cfg->validation_split);
    put(t, true, "early_stopping_patience", "%d", cfg->early_stopping_patience);
    put(t, true, "eval_limit", "%zu", cfg->eval_limit);
}

/* The full table of checkpoint c of a run of cfg. */
static void full_table(const trainer_config *cfg, const trainer_ckpt *c, ckpt_table *t)
{
    t->n = 0;
    put(t, false, "format", "%s", CKPT_FORMAT);
    put(t, false, "version", "%s", CKPT_VERSION);
    put(t, false, "backbone", "%s", c->backbone);
    put(t, false, "dataset", "%s", c->dataset);
    hyper_table(cfg, t);
    put(t, false, "step", "%ld", c->step);
    put(t, false, "total_steps", "%ld", c->total_steps);
    put(t, false, "warmup_steps", "%ld", c->warmup_steps);
    put(t, false, "per_epoch", "%ld", c->per_epoch);
    put(t, false, "skipped_steps", "%ld", c->skipped_steps);
    put(t, false, "epoch_steps", "%ld", c->epoch_steps);
    put(t, false, "optim_steps", "%ld", c->optim_steps);
    put(t, false, "epoch", "%d", c->epoch);
    put(t, false, "position", "%zu", c->position);
    put(t, false, "epoch_loss", "%.17g", c->epoch_loss);
    put(t, false, "head_kept", "%s", c->head_kept ? "true" : "false");
    put(t, false, "trainable_len", "%zu", c->n);
    put(t, false, "epochs_run", "%d", c->epochs_run);
    put(t, false, "has_best", "%s", c->has_best ? "true" : "false");
    put(t, false, "best_epoch", "%d", c->best_epoch);
    put(t, false, "bad_epochs", "%d", c->bad_epochs);
    put(t, false, "best_top1", "%.17g", c->best_top1);
    put(t, false, "best_loss", "%.17g", c->best_loss);
}

/* sha256 (hex) over the table's entries and the tensors. */
static void checksum(const ckpt_table *t, const trainer_ckpt *c, char hex[65])
{
    sha256_ctx h;
    sha256_init(&h);
    for (int i = 0; i < t->n; i++) {
        sha256_update(&h, t->e[i].key, strlen(t->e[i].key) + 1);
        sha256_update(&h, t->e[i].value, strlen(t->e[i].value) + 1);
    }
    sha256_update(&h, c->trainable, c->n * sizeof(float));
    if (c->opt.m)
        sha256_update(&h, c->opt.m, c->n * sizeof(float));
    if (c->opt.v)
        sha256_update(&h, c->opt.v, c->n * sizeof(float));
    if (c->has_best)
        sha256_update(&h, c->best, c->n * sizeof(float));
    uint8_t d[SHA256_DIGEST_LEN];
    sha256_final(&h, d);
    sha256_hex(d, hex);
}

static vit_status ckpt_path(const char *dir, char *path, size_t len, vit_error *err)
{
    int w = snprintf(path, len, "%s/%s", dir, TRAINER_CHECKPOINT_FILE);
    if (w < 0 || (size_t)w >= len)
        return vit_error_set(err, VIT_ERR_INVALID, "checkpoint directory name is too long");
    return VIT_OK;
}

bool trainer_checkpoint_exists(const char *dir)
{
    char path[PATH_MAX];
    struct stat sb;
    return dir && ckpt_path(dir, path, sizeof path, NULL) == VIT_OK && stat(path, &sb) == 0 &&
           S_ISREG(sb.st_mode);
}

vit_status trainer_ckpt_save(const char *dir, const trainer_config *cfg, const trainer_ckpt *c,
                             char *path, size_t path_len, vit_error *err)
{
    vit_status st = ckpt_path(dir, path, path_len, err);
    if (st != VIT_OK)
        return st;
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return vit_error_set(err, VIT_ERR_IO, "cannot create checkpoint directory '%s': %s", dir,
                             strerror(errno));
    ckpt_table t;
    full_table(cfg, c, &t);
    char sum[65];
    checksum(&t, c, sum);
    st_writer *w = st_writer_create();
    if (!w)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory writing a checkpoint");
    int64_t shape[1] = {(int64_t)c->n};
    st = st_writer_add_f32(w, "trainable", 1, shape, c->trainable, err);
    if (st == VIT_OK && c->opt.m)
        st = st_writer_add_f32(w, "optim.m", 1, shape, c->opt.m, err);
    if (st == VIT_OK && c->opt.v)
        st = st_writer_add_f32(w, "optim.v", 1, shape, c->opt.v, err);
    if (st == VIT_OK && c->has_best)
        st = st_writer_add_f32(w, "best", 1, shape, c->best, err);
    for (int i = 0; st == VIT_OK && i < t.n; i++)
        st = st_writer_set_metadata(w, t.e[i].key, t.e[i].value, err);
    if (st == VIT_OK)
        st = st_writer_set_metadata(w, "sha256", sum, err);
    if (st == VIT_OK)
        st = st_writer_save(w, path, err);
    st_writer_free(w);
    if (st != VIT_OK)
        vit_error_prefix(err, "writing checkpoint %s", path);
    return st;
}

/* Parses a whole decimal long in [lo, hi]; 0 if it is not one. */
static int parse_long(const char *s, long lo, long hi, long *out)
{
    if (!s || !*s)
        return 0;
    errno = 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return 0;
    *out = v;
    return 1;
}

/* Reads tensor `name` (n floats) of f into dst; absent or misshapen: FORMAT. */
static vit_status read_tensor(const st_file *f, const char *name, size_t n, float *dst,
                              vit_error *err)
{
    const st_tensor *t = st_find(f, name);
    if (!t)
        return vit_error_set(err, VIT_ERR_FORMAT, "it has no tensor '%s'", name);
    if (t->dtype != ST_F32 || t->ndim != 1 || t->numel != n)
        return vit_error_set(err, VIT_ERR_FORMAT, "its tensor '%s' is not %zu F32 values", name,
                             n);
    return st_read_f32(f, t, dst, err);
}

/* Everything after the file is open (see trainer_ckpt_load). */
static vit_status load_from(const st_file *f, const trainer_config *cfg, trainer_ckpt *c,
                            vit_error *err)
{
    const char *fmt = st_metadata(f, "format"), *ver = st_metadata(f, "version");
    if (!fmt || strcmp(fmt, CKPT_FORMAT) != 0)
        return vit_error_set(err, VIT_ERR_FORMAT, "it is not a vitfit trainer checkpoint");
    if (!ver || strcmp(ver, CKPT_VERSION) != 0)
        return vit_error_set(err, VIT_ERR_UNSUPPORTED, "its version '%.20s' is not %s",
                             ver ? ver : "", CKPT_VERSION);
    /* the whole table must be there before anything is compared */
    ckpt_table want;
    full_table(cfg, c, &want);
    const char *sum = st_metadata(f, "sha256");
    if (!sum)
        return vit_error_set(err, VIT_ERR_FORMAT, "it has no 'sha256'");
    for (int i = 0; i < want.n; i++)
        if (!st_metadata(f, want.e[i].key))
            return vit_error_set(err, VIT_ERR_FORMAT, "it has no '%s'", want.e[i].key);
    /* the tensors, then the checksum over what was read */
    long n_file = 0;
    if (!parse_long(st_metadata(f, "trainable_len"), 0, LONG_MAX, &n_file))
        return vit_error_set(err, VIT_ERR_FORMAT, "its trainable_len is not a count");
    if ((size_t)n_file != c->n)
        return vit_error_set(err, VIT_ERR_MISMATCH,
                             "it holds %ld trainable values, this run has %zu (another model "
                             "or number of classes)",
                             n_file, c->n);
    /* has_best says whether the "best" tensor is there (and summed) */
    long best_epoch = 0;
    const char *has = st_metadata(f, "has_best");
    if (strcmp(has, "true") * strcmp(has, "false") != 0)
        return vit_error_set(err, VIT_ERR_FORMAT, "its has_best is malformed");
    bool has_best = strcmp(has, "true") == 0;
    if (!parse_long(st_metadata(f, "best_epoch"), 0, cfg->epochs, &best_epoch))
        return vit_error_set(err, VIT_ERR_FORMAT, "its best_epoch '%.40s' is out of range",
                             st_metadata(f, "best_epoch"));
    if (has_best && !c->best)
        return vit_error_set(err, VIT_ERR_MISMATCH,
                             "it was made by a run with a validation set (an eval set or a "
                             "validation split), this run has none");
    c->best_epoch = (int)best_epoch;
    c->has_best = has_best;
    vit_status st = read_tensor(f, "trainable", c->n, c->trainable, err);
    if (st == VIT_OK && c->opt.m)
        st = read_tensor(f, "optim.m", c->n, c->opt.m, err);
    if (st == VIT_OK && c->opt.v)
        st = read_tensor(f, "optim.v", c->n, c->opt.v, err);
    if (st == VIT_OK && has_best)
        st = read_tensor(f, "best", c->n, c->best, err);
    if (st != VIT_OK)
        return st;
    ckpt_table got = {.n = want.n};
    for (int i = 0; i < want.n; i++) {
        got.e[i].key = want.e[i].key;
        snprintf(got.e[i].value, sizeof got.e[i].value, "%s", st_metadata(f, want.e[i].key));
        if (strlen(st_metadata(f, want.e[i].key)) >= CKPT_VALUE_MAX)
            return vit_error_set(err, VIT_ERR_FORMAT, "its '%s' is too long", want.e[i].key);
    }
    char have[65];
    checksum(&got, c, have);
    if (strcmp(have, sum) != 0)
        return vit_error_set(err, VIT_ERR_FORMAT,
                             "it is damaged: its content does not match its sha256");
    /* what it was made for */
    if (strcmp(st_metadata(f, "backbone"), c->backbone) != 0)
        return vit_error_set(err, VIT_ERR_MISMATCH,
                             "it was made for another backbone (fingerprint %.16s..., this "
                             "model's %.16s...)",
                             st_metadata(f, "backbone"), c->backbone);
    if (strcmp(st_metadata(f, "dataset"), c->dataset) != 0)
        return vit_error_set(err, VIT_ERR_MISMATCH,
                             "it was made for another training set (fingerprint %.16s..., this "
                             "one's %.16s...)",
                             st_metadata(f, "dataset"), c->dataset);
    for (int i = 0; i < want.n; i++)
        if (want.e[i].hyper && strcmp(want.e[i].value, got.e[i].value) != 0)
            return vit_error_set(err, VIT_ERR_MISMATCH,
                                 "it was made with %s %s, this run asks for %s", want.e[i].key,
                                 got.e[i].value, want.e[i].value);
    /* the run's position, each value in range */
    long step, total, warm, per, skipped, esteps, ot, epoch, pos, run, bad_epochs;
    const char *bad = NULL;
    if (!parse_long(st_metadata(f, "total_steps"), 1, LONG_MAX, &total))
        bad = "total_steps";
    else if (!parse_long(st_metadata(f, "step"), 0, total, &step))
        bad = "step";
    else if (!parse_long(st_metadata(f, "warmup_steps"), 0, total, &warm))
        bad = "warmup_steps";
    else if (!parse_long(st_metadata(f, "per_epoch"), 1, LONG_MAX, &per))
        bad = "per_epoch";
    else if (!parse_long(st_metadata(f, "skipped_steps"), 0, step, &skipped))
        bad = "skipped_steps";
    else if (!parse_long(st_metadata(f, "epoch_steps"), 0, step, &esteps))
        bad = "epoch_steps";
    else if (!parse_long(st_metadata(f, "optim_steps"), 0, step, &ot))
        bad = "optim_steps";
    else if (!parse_long(st_metadata(f, "epoch"), 0, cfg->epochs, &epoch))
        bad = "epoch";
    else if (!parse_long(st_metadata(f, "position"), 0, LONG_MAX, &pos))
        bad = "position";
    else if (!parse_long(st_metadata(f, "epochs_run"), best_epoch, cfg->epochs, &run))
        bad = "epochs_run";
    else if (!parse_long(st_metadata(f, "bad_epochs"), 0, run - best_epoch, &bad_epochs))
        bad = "bad_epochs";
    if (bad)
        return vit_error_set(err, VIT_ERR_FORMAT, "its %s '%.40s' is out of range", bad,
                             st_metadata(f, bad));
    char *end;
    const char *loss = st_metadata(f, "epoch_loss"), *kept = st_metadata(f, "head_kept");
    double eloss = strtod(loss, &end);
    if (*end || !*loss || strcmp(kept, "true") * strcmp(kept, "false") != 0)
        return vit_error_set(err, VIT_ERR_FORMAT, "its epoch_loss or head_kept is malformed");
    const char *t1 = st_metadata(f, "best_top1"), *bl = st_metadata(f, "best_loss");
    char *end1, *end2;
    double top1 = strtod(t1, &end1), bloss = strtod(bl, &end2);
    if (*end1 || !*t1 || *end2 || !*bl || !(top1 >= 0 && top1 <= 1) || !isfinite(bloss))
        return vit_error_set(err, VIT_ERR_FORMAT, "its best_top1 or best_loss is malformed");
    c->step = step;
    c->total_steps = total;
    c->warmup_steps = warm;
    c->per_epoch = per;
    c->skipped_steps = skipped;
    c->epoch_steps = esteps;
    c->optim_steps = ot;
    c->epoch = (int)epoch;
    c->position = (size_t)pos;
    c->epoch_loss = eloss;
    c->head_kept = strcmp(kept, "true") == 0;
    c->epochs_run = (int)run;
    c->bad_epochs = (int)bad_epochs;
    c->best_top1 = top1;
    c->best_loss = bloss;
    return VIT_OK;
}

vit_status trainer_ckpt_load(const char *dir, const trainer_config *cfg, trainer_ckpt *c,
                             vit_error *err)
{
    char path[PATH_MAX];
    vit_status st = ckpt_path(dir, path, sizeof path, err);
    if (st != VIT_OK)
        return st;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return vit_error_set(err, VIT_ERR_NOT_FOUND, "no checkpoint to resume from: %s: %s", path,
                             strerror(errno));
    st_file *f = NULL;
    st_limits lim = CKPT_LIMITS;
    st = st_open_limited(path, &lim, &f, err);
    if (st == VIT_OK)
        st = load_from(f, cfg, c, err);
    st_close(f);
    if (st != VIT_OK)
        vit_error_prefix(err, "cannot resume from %s", path);
    return st;
}
