/*
 * trainer.c - the fine-tuning loop and evaluation (see trainer.h).
 *
 * One step: zero gradients, training forward, cross-entropy, backward,
 * gradient norm (a non-finite one drops the update), optional clipping,
 * learning rate from the schedule, optimizer update.  The optimizer sees flat
 * arenas: the trainable one (biases + head) always, the frozen one too for
 * full fine-tuning, each with a weight-decay mask.
 *
 * Classes are matched by name wherever two lists meet: an eval set against
 * the model's (or the training set's) classes, a training set against the
 * checkpoint's head.  Position is used only where no names exist.
 */
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "randinit.h"
#include "trainer.h"
#include "trainer_impl.h"

#include "gemm.h"

/* A data set's class names become task labels (finish): every name ds_open
 * accepts must be one task_create and task_save accept. */
_Static_assert(DS_MAX_CLASS_NAME <= TASK_MAX_LABEL, "class names must fit task labels");
/* ... and its classes a task (finish), whose classes an eval set's list
 * (cli_train.c): the two bounds are one. */
_Static_assert(DS_MAX_CLASSES == TASK_MAX_CLASSES, "a data set's classes must fit a task");

/* Per-method learning rate and weight decay (AdamW, batch 32, cosine over
 * 10 epochs), from the public recipes, then checked on the bundled backbone
 * by bench/defaults_study.sh (digits and letters were still improving at
 * epoch 10 with the recipes' lower ends; the numbers are in the study):
 *   bitfit: lr 1e-2, decay 5e-5 on the head -- BitFit/PETL ViT runs on
 *     VTAB train biases at 1e-3..1e-2; 5e-3 left digits 3.5 and letters
 *     3.3 points below 1e-2, 2e-2 gained under a point more;
 *   linear: lr 2e-2, decay 0 -- MAE's linear probe takes base lr 0.1 per
 *     256 images (1.25e-2 at batch 32) without weight decay; a head alone
 *     is convex: 5e-3 was 5 points below, 5e-2 at most 2.2 above;
 *   full: lr 1e-3, decay 0.05 -- DeiT/MAE fine-tuning use AdamW with decay
 *     0.05 at base lr 5e-4 per 512/256 images, which ViT-B at batch 32
 *     turns into 3e-5..6e-5; the small 32-pixel backbone wants far more in
 *     10 epochs (letters: 3e-4 47%, 5e-4 54%, 1e-3 59%), and 5e-3 -- the
 *     old default of every method -- destroys the pre-trained features.
 *     A large backbone probably wants less: the study has none.
 * Augmentation auto, validation 10% and patience 3 are the same for every
 * method (trainer.h). */
trainer_config trainer_defaults_for(vit_method m)
{
    trainer_config c = {
        .method = m,
        .epochs = 10,
        .batch_size = 32,
        .lr = 1e-2,
        .min_lr = 0.0,
        .weight_decay = 5e-5,
        .warmup_epochs = 1.0,
        .optimizer = OPTIM_ADAMW,
        .momentum = 0.9,
        .label_smoothing = 0.0,
        .seed = 0,
        .augment = TRAINER_AUGMENT_AUTO,
        .shuffle = true,
        .loader_threads = 2,
        .validation_split = 0.1,
        .early_stopping_patience = 3,
        .head = TRAINER_HEAD_AUTO,
        .on_bad = DS_BAD_FAIL,
        .feature_cache_bytes = TRAINER_FEATURE_CACHE_DEFAULT,
        .log_every = 50,
    };
    if (m == VIT_METHOD_LINEAR) {
        c.lr = 2e-2;
        c.weight_decay = 0.0;
    } else if (m == VIT_METHOD_FULL) {
        c.lr = 1e-3;
        c.weight_decay = 0.05;
    }
    return c;
}

trainer_config trainer_defaults(void)
{
    return trainer_defaults_for(VIT_METHOD_BITFIT);
}

static const char *const augment_names[] = {
    [TRAINER_AUGMENT_AUTO] = "auto", [TRAINER_AUGMENT_NONE] = "none",
    [TRAINER_AUGMENT_LIGHT] = "light", [TRAINER_AUGMENT_STRONG] = "strong",
};

const char *trainer_augment_name(trainer_augment a)
{
    return (unsigned)a < sizeof augment_names / sizeof *augment_names ? augment_names[a] : "?";
}

bool trainer_augment_parse(const char *s, trainer_augment *out)
{
    for (size_t i = 0; s && i < sizeof augment_names / sizeof *augment_names; i++)
        if (strcmp(s, augment_names[i]) == 0) {
            *out = (trainer_augment)i;
            return true;
        }
    return false;
}

bool trainer_augment_policy(trainer_augment a, int source_side, int input_side, ds_augment *out)
{
    if (a == TRAINER_AUGMENT_AUTO)
        a = source_side < input_side ? TRAINER_AUGMENT_NONE : TRAINER_AUGMENT_LIGHT;
    if (a == TRAINER_AUGMENT_STRONG) {
        *out = ds_augment_imagenet();
        return true;
    }
    if (a != TRAINER_AUGMENT_LIGHT)
        return false;
    /* the side kept: 0.9 up to the input's size, 0.75 from twice it */
    double x = (double)source_side / (double)(input_side > 0 ? input_side : 1);
    double keep = x <= 1 ? 0.9 : x >= 2 ? 0.75 : 0.9 - 0.15 * (x - 1);
    *out = (ds_augment){.scale_min = keep * keep, .scale_max = 1.0, .ratio_min = 0.9,
                        .ratio_max = 1.0 / 0.9, .flip = 0.0};
    return true;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void eval_result_free(eval_result *r)
{
    free(r->class_count);
    free(r->class_correct);
    free(r->confusion);
    r->class_count = r->class_correct = NULL;
    r->confusion = NULL;
    r->num_cells = 0;
}

void trainer_result_free(trainer_result *r)
{
    task_free(r->task);
    vit_model_free(r->model);
    eval_result_free(&r->eval);
    memset(r, 0, sizeof *r);
}

/* ---- classes by name ---------------------------------------------------- */

/* A model class name with its index, for a sorted lookup. */
typedef struct name_entry {
    const char *name;
    int index;
} name_entry;

static int cmp_name_entry(const void *a, const void *b)
{
    const name_entry *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->index > y->index) - (x->index < y->index);
}

/* Maps every class c of data set d (`what_d` in messages) to the index
 * map[c] of the class with the same name among names[0..K), the classes of
 * `what_names`.  A class of d that is not exactly one of them -- or names
 * two of them (duplicated labels, e.g. ImageNet's two "crane"s) -- is
 * VIT_ERR_MISMATCH naming it.  Identical lists map to themselves
 * (duplicates and all).  names == NULL: nothing to match names with, so
 * classes go by position and the counts must agree.  map holds
 * ds_num_classes(d) ints. */
static vit_status class_map(const char *const *names, int K, const ds_dataset *d, int *map,
                            const char *what_d, const char *what_names, vit_error *err)
{
    int Kd = ds_num_classes(d);
    bool same = Kd == K;
    for (int c = 0; same && names && c < K; c++)
        same = strcmp(names[c], ds_class_name(d, c)) == 0;
    if (same || !names) {
        if (!same)
            return vit_error_set(err, VIT_ERR_MISMATCH,
                                 "%s has %d classes, %s %d (and names none of them)", what_d,
                                 Kd, what_names, K);
        for (int c = 0; c < Kd; c++)
            map[c] = c;
        return VIT_OK;
    }
    name_entry *index = malloc((size_t)(K > 0 ? K : 1) * sizeof *index);
    if (!index)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory matching classes");
    for (int k = 0; k < K; k++)
        index[k] = (name_entry){names[k], k};
    qsort(index, (size_t)K, sizeof *index, cmp_name_entry);
    vit_status st = VIT_OK;
    for (int c = 0; c < Kd && st == VIT_OK; c++) {
        const char *want = ds_class_name(d, c);
        int lo = 0, hi = K; /* first entry with name >= want */
        while (lo < hi) {
            int mid = lo + (hi - lo) / 2;
            if (strcmp(index[mid].name, want) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo == K || strcmp(index[lo].name, want) != 0)
            st = vit_error_set(err, VIT_ERR_MISMATCH,
                               "class '%.200s' of %s is not one of the %d classes of %s", want,
                               what_d, K, what_names);
        else if (lo + 1 < K && strcmp(index[lo + 1].name, want) == 0)
            st = vit_error_set(err, VIT_ERR_MISMATCH,
                               "class '%.200s' of %s names several classes of %s", want, what_d,
                               what_names);
        else
            map[c] = index[lo].index;
    }
    free(index);
    return st;
}

/* class_map of the data set onto the model's K classes named names, into a
 * new array (*out, caller frees; NULL on failure). */
static vit_status eval_class_map(const char *const *names, int K, const ds_dataset *d, int **out,
                                 vit_error *err)
{
    int Kd = ds_num_classes(d);
    *out = malloc((size_t)(Kd > 0 ? Kd : 1) * sizeof **out);
    if (!*out)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for evaluation");
    vit_status st = class_map(names, K, d, *out, "the data set", "the model", err);
    if (st != VIT_OK) {
        free(*out);
        *out = NULL;
    }
    return st;
}

/* Copies the data set's class names into a NULL-terminated array of
 * borrowed pointers (caller frees the array only); NULL when out of memory. */
static const char **class_names(const ds_dataset *d)
{
    int K = ds_num_classes(d);
    const char **names = calloc((size_t)K + 1, sizeof *names);
    if (names)
        for (int k = 0; k < K; k++)
            names[k] = ds_class_name(d, k);
    return names;
}

/* ---- evaluation --------------------------------------------------------- */

static int cmp_cell(const void *a, const void *b)
{
    const eval_cell *x = a, *y = b;
    if (x->truth != y->truth)
        return (x->truth > y->truth) - (x->truth < y->truth);
    return (x->pred > y->pred) - (x->pred < y->pred);
}

long eval_confusion_at(const eval_result *r, int truth, int pred)
{
    eval_cell key = {truth, pred, 0};
    const eval_cell *c = r->confusion ? bsearch(&key, r->confusion, r->num_cells,
                                                sizeof key, cmp_cell)
                                      : NULL;
    return c ? c->count : 0;
}

/* The confusion cells of an evaluation as it runs.  Each item appends its
 * (truth, pred) cell; a full buffer is compacted (sorted, equal cells
 * merged) and grows only when that leaves it more than half full.  So its
 * capacity stays below 4x the distinct cells seen (or the first CELLS_START):
 * bounded by the items evaluated, never by K^2 (trainer.h). */
#define CELLS_START 256

typedef struct cell_buffer {
    eval_cell *v;
    size_t n, cap;
} cell_buffer;

static void cells_compact(cell_buffer *b)
{
    if (b->n == 0)
        return;
    qsort(b->v, b->n, sizeof *b->v, cmp_cell);
    size_t out = 0;
    for (size_t i = 1; i < b->n; i++) {
        if (cmp_cell(&b->v[i], &b->v[out]) == 0)
            b->v[out].count += b->v[i].count;
        else
            b->v[++out] = b->v[i];
    }
    b->n = out + 1;
}

static vit_status cells_add(cell_buffer *b, int truth, int pred, vit_error *err)
{
    if (b->n == b->cap) {
        cells_compact(b);
        if (b->cap == 0 || b->n > b->cap / 2) {
            size_t cap = b->cap ? 2 * b->cap : CELLS_START;
            eval_cell *v = cap > SIZE_MAX / sizeof *v ? NULL : realloc(b->v, cap * sizeof *v);
            if (!v)
                return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for the confusion "
                                     "matrix (%zu cells)", cap);
            b->v = v;
            b->cap = cap;
        }
    }
    b->v[b->n++] = (eval_cell){truth, pred, 1};
    return VIT_OK;
}

/* Rank of the true class among the logits (0 = predicted). */
static int rank_of(const float *logits, int K, int label)
{
    int rank = 0;
    for (int k = 0; k < K; k++)
        if (logits[k] > logits[label] || (logits[k] == logits[label] && k < label))
            rank++;
    return rank;
}

/* An evaluation as it runs: the sums trainer_evaluate and a linear probe's
 * cached validation (validate_cached) keep over their batches. */
typedef struct eval_run {
    int K;
    float *scratch;           /* (batch, K) cross-entropy's gradient, unused */
    double loss_sum;
    long top1, top5;
    cell_buffer cells;
    eval_result *out;
} eval_run;

/* Starts an evaluation of K classes in batches of up to batch_size into out
 * (zeroed first). */
static vit_status eval_begin(eval_run *e, int K, int batch_size, eval_result *out,
                             vit_error *err)
{
    memset(out, 0, sizeof *out);
    *e = (eval_run){.K = K, .out = out};
    e->scratch = malloc((size_t)K * batch_size * sizeof *e->scratch);
    out->class_count = calloc((size_t)K, sizeof *out->class_count);
    out->class_correct = calloc((size_t)K, sizeof *out->class_correct);
    if (!e->scratch || !out->class_count || !out->class_correct)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for evaluation");
    return VIT_OK;
}

/* Scores one batch: logits (count, K) of items of the model's classes
 * labels (count). */
static vit_status eval_batch(eval_run *e, const float *logits, const int *labels, int count,
                             vit_error *err)
{
    int K = e->K;
    eval_result *out = e->out;
    /* a NaN logit ranks first (every comparison is false): refuse to
     * report accuracies or a loss from non-finite scores */
    for (size_t i = 0; i < (size_t)count * K; i++)
        if (!isfinite(logits[i]))
            return vit_error_set(err, VIT_ERR_FORMAT,
                                 "the model gave a non-finite score (NaN or inf) for item %ld: "
                                 "its weights or preprocessing settings are broken",
                                 out->count + (long)(i / (size_t)K));
    /* the batch's mean loss, weighted by its size: a short last batch
     * counts for its items, not as much as a full one */
    e->loss_sum += vit_cross_entropy(logits, labels, count, K, 0.0f, e->scratch) * count;
    vit_status st = VIT_OK;
    for (int b = 0; b < count && st == VIT_OK; b++) {
        const float *row = logits + (size_t)b * K;
        int rank = rank_of(row, K, labels[b]);
        int pred = 0; /* the first of tied maxima, as torch.argmax */
        for (int k = 1; k < K; k++)
            if (row[k] > row[pred])
                pred = k;
        e->top1 += rank == 0;
        e->top5 += rank < 5;
        out->class_count[labels[b]]++;
        out->class_correct[labels[b]] += pred == labels[b];
        st = cells_add(&e->cells, labels[b], pred, err); /* row = true class */
    }
    out->count += count;
    return st;
}

/* Ends the evaluation begun by eval_begin: st is how its batches went, of
 * `planned` items (every one not scored was skipped).  On failure (st or
 * none scored) the result is freed. */
static vit_status eval_end(eval_run *e, vit_status st, size_t planned, vit_error *err)
{
    eval_result *out = e->out;
    int K = e->K;
    free(e->scratch);
    e->scratch = NULL;
    /* every item the loader did not deliver was skipped (DS_BAD_SKIP) */
    out->skipped = (long)planned - out->count;
    if (st == VIT_OK && out->count == 0)
        st = vit_error_set(err, VIT_ERR_INVALID, "none of the %zu items of the eval set could be "
                           "loaded", planned);
    cells_compact(&e->cells);
    out->confusion = e->cells.v; /* sorted, one entry per cell */
    out->num_cells = e->cells.n;
    if (st != VIT_OK) {
        eval_result_free(out);
        return st;
    }
    out->num_classes = K;
    for (int k = 0; k < K; k++)
        out->absent += out->class_count[k] == 0;
    if (out->count > 0) {
        out->top1 = (double)e->top1 / out->count;
        out->top5 = (double)e->top5 / out->count;
        out->loss = e->loss_sum / out->count;
    }
    return VIT_OK;
}

/* Items an evaluation of d with o plans to score. */
static size_t eval_planned(const ds_dataset *d, const eval_options *o)
{
    return o->items ? o->num_items : o->limit && o->limit < ds_size(d) ? o->limit : ds_size(d);
}

/* The loader options of an evaluation of m with o. */
static ds_loader_options eval_loader_options(const vit_model *m, const eval_options *o)
{
    ds_loader_options lo = {
        .batch_size = o->batch_size, .shuffle = false, .augment = false, .seed = 0,
        .threads = o->loader_threads > 0 ? o->loader_threads : 1, .prefetch = 2,
        .preprocess = m->cfg.preprocess, .on_bad = o->on_bad, .on_bad_fn = o->on_bad_fn,
        .on_bad_ctx = o->on_bad_ctx, .limit = o->limit, .items = o->items,
        .num_items = o->num_items,
    };
    return lo;
}

/* Threads of an evaluation's forward state. */
static int eval_threads(void)
{
    return gemm_get_threads() < 64 ? gemm_get_threads() : 64;
}

vit_status trainer_evaluate(const vit_model *m, const char *const *class_names_in,
                            const ds_dataset *d, const eval_options *o, eval_result *out,
                            vit_error *err)
{
    memset(out, 0, sizeof *out);
    int batch_size = o->batch_size;
    size_t planned = eval_planned(d, o);
    int K = m->cfg.num_classes;
    if (K < 1)
        return vit_error_set(err, VIT_ERR_INVALID, "evaluation needs a classification head");
    if (batch_size < 1)
        return vit_error_set(err, VIT_ERR_INVALID, "batch size must be positive");
    const char *const *names = class_names_in ? class_names_in : (const char *const *)m->labels;
    int *map;
    vit_status st = eval_class_map(names, K, d, &map, err);
    if (st != VIT_OK)
        return st;
    ds_loader_options lo = eval_loader_options(m, o);
    size_t per_image = (size_t)3 * m->cfg.image_size * m->cfg.image_size;
    float *images = malloc(per_image * (size_t)batch_size * sizeof *images);
    float *logits = malloc((size_t)K * batch_size * sizeof *logits);
    int *labels = malloc((size_t)batch_size * sizeof *labels);
    eval_run e;
    ds_loader *loader = NULL;
    vit_state *s = NULL;
    st = eval_begin(&e, K, batch_size, out, err);
    if (st == VIT_OK && (!images || !logits || !labels))
        st = vit_error_set(err, VIT_ERR_NOMEM, "out of memory for evaluation");
    if (st == VIT_OK)
        st = vit_state_create(m, batch_size, eval_threads(), &s, err);
    if (st == VIT_OK)
        st = ds_loader_create(d, &lo, &loader, err);
    if (st == VIT_OK)
        st = ds_loader_start_epoch(loader, 0, err);
    while (st == VIT_OK) {
        int count = 0;
        st = ds_loader_next(loader, images, labels, NULL, &count, err);
        if (st != VIT_OK || count == 0)
            break;
        for (int b = 0; b < count; b++) /* data set class -> the model's class of that name */
            labels[b] = map[labels[b]];
        st = vit_forward(m, s, images, count, logits, err);
        if (st == VIT_OK)
            st = eval_batch(&e, logits, labels, count, err);
    }
    ds_loader_free(loader);
    vit_state_free(s);
    free(images);
    free(logits);
    free(labels);
    free(map);
    return eval_end(&e, st, planned, err);
}

/* ---- the model being trained -------------------------------------------- */

/* The model being trained: a view sharing the backbone (bitfit, linear) or a
 * private copy (full), with the head chosen by cfg->head (trainer.h).
 * *kept tells whether the checkpoint's head was kept. */
static vit_status make_train_model(const vit_model *backbone, const ds_dataset *train,
                                   const trainer_config *cfg, vit_model **out, bool *kept,
                                   vit_error *err)
{
    int K = ds_num_classes(train), Kb = backbone->cfg.num_classes;
    int *rows = malloc((size_t)(K > 0 ? K : 1) * sizeof *rows);
    if (!rows)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    /* every training class is one of the checkpoint's labels: rows by name */
    bool by_name = Kb > 0 && backbone->labels &&
                   class_map((const char *const *)backbone->labels, Kb, train, rows, "", "", NULL) ==
                       VIT_OK;
    bool keep = cfg->head == TRAINER_HEAD_KEEP || (cfg->head == TRAINER_HEAD_AUTO && by_name);
    if (keep && !by_name) {
        if (Kb != K) {
            free(rows);
            return vit_error_set(err, VIT_ERR_MISMATCH,
                                 "--head keep: the checkpoint's head has %d classes, the data "
                                 "set %d",
                                 Kb, K);
        }
        for (int c = 0; c < K; c++)
            rows[c] = c;
    }
    vit_status st = vit_model_derive(backbone, K, cfg->method == VIT_METHOD_FULL, out, err);
    if (st != VIT_OK) {
        free(rows);
        return st;
    }
    vit_model *m = *out;
    if (cfg->from_scratch) /* randinit's rule: weights ~ std 0.02, LN gains near 1 */
        vit_model_randomize(m, cfg->seed);
    vit_param *hw = vit_model_find(m, "head.weight"), *hb = vit_model_find(m, "head.bias");
    size_t F = (size_t)vit_config_feature_dim(&m->cfg);
    if (keep) {
        for (int c = 0; c < K; c++) {
            memcpy(hw->data + (size_t)c * F, backbone->w.head_w + (size_t)rows[c] * F,
                   sizeof(float) * F);
            hb->data[c] = backbone->w.head_b[rows[c]];
        }
    } else {
        /* torch.nn.Linear's default range U(-1/sqrt(F), 1/sqrt(F)), seeded; zero bias */
        double bound = 1.0 / sqrt((double)F);
        randinit_fill(hw->data, hw->numel, "head.weight", cfg->seed, bound, 0.0);
        memset(hb->data, 0, sizeof(float) * hb->numel);
    }
    *kept = keep;
    free(rows);
    return VIT_OK;
}

/* Weight decay masks: the head weight in the trainable arena; for full, every
 * matrix of the frozen arena too (never biases, LayerNorm gains or embeddings). */
static void decay_masks(const vit_model *m, uint8_t *mask_train, uint8_t *mask_frozen)
{
    for (size_t i = 0; i < m->num_params; i++) {
        const vit_param *p = &m->params[i];
        bool matrix = p->ndim >= 2 && strcmp(p->name, "pos_embed") && strcmp(p->name, "cls_token");
        if (p->trainable)
            memset(mask_train + (p->data - m->trainable), matrix, p->numel);
        else if (mask_frozen)
            memset(mask_frozen + (p->data - m->frozen), matrix, p->numel);
    }
}

/* ---- one run ------------------------------------------------------------ */

/* Everything one run allocates, freed in one place. */
typedef struct run_state {
    vit_model *m;
    vit_train_state *ts;
    ds_loader *loader;
    optim *opt_train, *opt_frozen;
    float *gtrain, *gfrozen, *images, *logits, *dlogits;
    uint8_t *mask_train, *mask_frozen;
    int *labels;
    bool head_kept;
    bool augment;             /* items are augmented by aug */
    ds_augment aug;
    size_t *train_items, ntrain; /* a validation split's training items, or NULL: all */
    size_t *val_items, nval;  /* its validation items */
    float *best_train, *best_frozen; /* the best epoch's arenas (best_frozen: full only) */
    eval_result best_eval;    /* its validation, when this run made it */
    bool has_best_eval;
    /* a linear probe's cached features (cache_features; NULL: recomputed) */
    trainer_features *feats;  /* of the training items */
    trainer_features *val_feats; /* of the validation items, once the first validation
                                    built them */
    bool val_cache;           /* build val_feats at the next validation */
    size_t val_budget;        /* bytes val_feats may take */
    float *feat_batch;        /* (B, F) a batch's features */
    vit_model *feat_view;     /* m without its head: vit_forward gives features */
    vit_state *val_state;     /* forward state of val_feats and of the validations on them */
} run_state;

static void run_free(run_state *r)
{
    vit_train_state_free(r->ts);
    ds_loader_free(r->loader);
    optim_free(r->opt_train);
    optim_free(r->opt_frozen);
    free(r->gtrain);
    free(r->gfrozen);
    free(r->images);
    free(r->logits);
    free(r->dlogits);
    free(r->mask_train);
    free(r->mask_frozen);
    free(r->labels);
    free(r->train_items);
    free(r->val_items);
    free(r->best_train);
    free(r->best_frozen);
    eval_result_free(&r->best_eval);
    trainer_features_free(r->feats);
    trainer_features_free(r->val_feats);
    free(r->feat_batch);
    vit_state_free(r->val_state);
    vit_model_free(r->feat_view);
    vit_model_free(r->m);
}

/* The loader options of the training epochs. */
static ds_loader_options train_loader_options(const run_state *r, const trainer_config *cfg)
{
    ds_loader_options lo = {
        .batch_size = cfg->batch_size, .shuffle = cfg->shuffle, .augment = r->augment,
        .aug = r->aug, .drop_last = false, .seed = cfg->seed,
        .threads = cfg->loader_threads > 0 ? cfg->loader_threads : 1, .prefetch = 2,
        .preprocess = r->m->cfg.preprocess, .on_bad = cfg->on_bad, .on_bad_fn = cfg->on_bad_fn,
        .on_bad_ctx = cfg->on_bad_ctx, .limit = cfg->train_limit, .items = r->train_items,
        .num_items = r->ntrain,
    };
    return lo;
}

/* The typical shorter side of the training images: the median over up to 15
 * items spread evenly over the training items (decoded once, before
 * training; items that do not load are passed over).  0 when none loads. */
#define SIDE_SAMPLES 15

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static int source_side(const ds_dataset *train, const trainer_config *cfg, const run_state *r)
{
    size_t n = r->train_items ? r->ntrain
               : cfg->train_limit && cfg->train_limit < ds_size(train) ? cfg->train_limit
                                                                         : ds_size(train);
    int sides[SIDE_SAMPLES], got = 0;
    size_t want = n < SIDE_SAMPLES ? n : SIDE_SAMPLES;
    for (size_t i = 0; i < want; i++) {
        size_t k = i * n / want, item = r->train_items ? r->train_items[k] : k;
        img_image img;
        vit_error e = {0};
        if (ds_load_image(train, item, &img, &e) != VIT_OK)
            continue;
        sides[got++] = img.width < img.height ? img.width : img.height;
        img_free(&img);
    }
    if (got == 0)
        return 0;
    qsort(sides, (size_t)got, sizeof *sides, cmp_int);
    return sides[got / 2];
}

/* The data-dependent choices made before the model exists: the validation
 * split (no eval set, validation_split > 0) and what `auto` augmentation
 * means for these images. */
static vit_status run_data(const vit_model *backbone, const ds_dataset *train,
                           const ds_dataset *eval, const trainer_config *cfg, run_state *r,
                           trainer_augment *used, vit_error *err)
{
    if (!eval && cfg->validation_split > 0) {
        vit_status st = ds_split(train, cfg->train_limit, cfg->validation_split, cfg->seed,
                                 &r->train_items, &r->ntrain, &r->val_items, &r->nval, err);
        if (st != VIT_OK)
            return st;
        if (r->nval == 0) { /* nothing held out: train on everything, no validation */
            free(r->train_items);
            free(r->val_items);
            r->train_items = r->val_items = NULL;
            r->ntrain = 0;
        }
    }
    /* auto and light look at the images (no image loads: as the input,
     * which auto takes as light) */
    int input = backbone->cfg.image_size, side = 0;
    if (cfg->augment == TRAINER_AUGMENT_AUTO || cfg->augment == TRAINER_AUGMENT_LIGHT)
        side = source_side(train, cfg, r);
    r->augment = trainer_augment_policy(cfg->augment, side > 0 ? side : input, input, &r->aug);
    *used = cfg->augment != TRAINER_AUGMENT_AUTO ? cfg->augment
            : r->augment                         ? TRAINER_AUGMENT_LIGHT
                                                 : TRAINER_AUGMENT_NONE;
    return VIT_OK;
}

static vit_status run_setup(const vit_model *backbone, const ds_dataset *train,
                            const trainer_config *cfg, run_state *r, vit_error *err)
{
    vit_status st = make_train_model(backbone, train, cfg, &r->m, &r->head_kept, err);
    if (st != VIT_OK)
        return st;
    vit_model *m = r->m;
    bool full = cfg->method == VIT_METHOD_FULL;
    int B = cfg->batch_size, K = m->cfg.num_classes;
    size_t per_image = (size_t)3 * m->cfg.image_size * m->cfg.image_size;
    optim_config oc = {
        .kind = cfg->optimizer, .weight_decay = (float)cfg->weight_decay, .beta1 = 0.9f,
        .beta2 = 0.999f, .eps = 1e-8f, .momentum = (float)cfg->momentum,
    };
    r->gtrain = calloc(m->trainable_len, sizeof *r->gtrain);
    r->mask_train = calloc(m->trainable_len, 1);
    r->images = malloc(per_image * (size_t)B * sizeof *r->images);
    r->logits = malloc((size_t)K * B * sizeof *r->logits);
    r->dlogits = malloc((size_t)K * B * sizeof *r->dlogits);
    r->labels = malloc((size_t)B * sizeof *r->labels);
    if (full) {
        r->gfrozen = calloc(m->frozen_len, sizeof *r->gfrozen);
        r->mask_frozen = calloc(m->frozen_len, 1);
    }
    if (!r->gtrain || !r->mask_train || !r->images || !r->logits || !r->dlogits || !r->labels ||
        (full && (!r->gfrozen || !r->mask_frozen)))
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for training buffers");
    decay_masks(m, r->mask_train, r->mask_frozen);
    ds_loader_options lo = train_loader_options(r, cfg);
    st = vit_train_state_create(m, cfg->method, B, gemm_get_threads() < 64 ? gemm_get_threads() : 64,
                                &r->ts, err);
    if (st == VIT_OK)
        st = optim_create(&oc, m->trainable_len, &r->opt_train, err);
    if (st == VIT_OK && full)
        st = optim_create(&oc, m->frozen_len, &r->opt_frozen, err);
    if (st == VIT_OK)
        st = ds_loader_create(train, &lo, &r->loader, err);
    return st;
}

/* Batches of one training epoch.  With DS_BAD_FAIL every item loads or the
 * run fails, so it is the loader's count.  With DS_BAD_SKIP the epochs skip
 * the items that fail, so counting items would size the schedule for steps
 * that never come (the cosine would stop half-way down): one pass decodes
 * every item first -- no shuffle, no augmentation, no forward pass, skipped
 * items not reported (the first epoch reports them) -- and counts those that
 * load.  Decoding is a small part of a training epoch's cost, and an exact
 * count from step 0 keeps warm-up and cosine exact (the alternative,
 * re-planning when an epoch ends short, bends the curve mid-run and learns
 * too late in a one-epoch run).  *cancelled: should_stop fired. */
static vit_status batches_per_epoch(const ds_dataset *train, const trainer_config *cfg,
                                    run_state *r, size_t *out, bool *cancelled, vit_error *err)
{
    *out = ds_loader_batches(r->loader);
    if (cfg->on_bad != DS_BAD_SKIP)
        return VIT_OK;
    ds_loader_options lo = train_loader_options(r, cfg);
    lo.shuffle = false;
    lo.augment = false;
    lo.on_bad_fn = NULL;
    ds_loader *l = NULL;
    size_t good = 0;
    vit_status st = ds_loader_create(train, &lo, &l, err);
    if (st == VIT_OK)
        st = ds_loader_start_epoch(l, 0, err);
    while (st == VIT_OK) {
        if (cfg->should_stop && cfg->should_stop(cfg->ctx)) {
            *cancelled = true;
            break;
        }
        int count = 0;
        st = ds_loader_next(l, r->images, r->labels, NULL, &count, err);
        if (st != VIT_OK || count == 0)
            break;
        good += (size_t)count;
    }
    ds_loader_free(l);
    if (st == VIT_OK && !*cancelled && good == 0)
        st = vit_error_set(err, VIT_ERR_INVALID, "no item of the training set could be loaded");
    *out = (good + (size_t)cfg->batch_size - 1) / (size_t)cfg->batch_size;
    return st;
}

/* Turns the trained model into the run's product: a task (bitfit, linear)
 * or the model itself (full). */
static vit_status finish(const vit_model *backbone, const trainer_config *cfg,
                         const char *const *names, run_state *r, trainer_result *out,
                         vit_error *err)
{
    vit_status st = VIT_OK;
    if (cfg->method == VIT_METHOD_FULL) {
        st = vit_model_set_labels(r->m, names, err);
        if (st == VIT_OK) {
            out->model = r->m;
            r->m = NULL;
        }
    } else {
        st = task_create(backbone, r->m->cfg.num_classes, names, &out->task, err);
        if (st == VIT_OK) {
            memcpy(out->task->trainable, r->m->trainable, sizeof(float) * r->m->trainable_len);
            snprintf(out->task->method, sizeof out->task->method, "%s",
                     vit_method_name(cfg->method));
        }
    }
    return st;
}

/* Loss and throughput since the last progress report. */
typedef struct progress_window {
    long step0;               /* the run's first step (a resumed run's is not 0) */
    long steps, images;
    double loss, t_start, t_last;
} progress_window;

static void report_progress(const trainer_config *cfg, progress_window *w, long step,
                            const sched_config *sched, long skipped, int epoch, float lr)
{
    if (!cfg->progress || w->steps == 0)
        return;
    double t = now_seconds();
    trainer_progress p = {
        .step = step, .total_steps = sched->total_steps, .warmup_steps = sched->warmup_steps,
        .skipped_steps = skipped, .epoch = epoch + 1, .epochs = cfg->epochs,
        .loss = w->loss / w->steps, .lr = lr,
        .images_per_second = w->images / fmax(t - w->t_last, 1e-9),
        .eta_seconds = (double)(sched->total_steps - step) * (t - w->t_start) /
                       (double)(step > w->step0 ? step - w->step0 : 1),
    };
    cfg->progress(cfg->ctx, &p);
    w->loss = 0;
    w->steps = w->images = 0;
    w->t_last = t;
}

/* The warm-up of a run of `total` steps: what the config asks for, at most
 * total - 1 steps.  Recipes (timm's, torchvision's) use a warm-up that is a
 * small prefix of the run and end the run annealed; a warm-up that covers
 * the whole run is nearly always a default meeting a short run (--epochs 1
 * with the default 1-epoch warm-up, or --max-steps), and taking it literally
 * would end the run at its peak lr, never decaying.  So the cap keeps the
 * documented end point: the last step runs at min_lr (optim.h; a one-step
 * run has no warm-up and runs at lr). */
static long cap_warmup(long asked, long total)
{
    long most = total > 1 ? total - 1 : 0;
    return asked < most ? asked : most;
}

/* Sizes the schedule for `per_epoch` batches per epoch (see trainer.h);
 * *asked: the warm-up the config asks for, in steps, before the cap. */
static vit_status plan_schedule(const trainer_config *cfg, size_t per_epoch, sched_config *s,
                                long *asked, vit_error *err)
{
    if (per_epoch > (size_t)(LONG_MAX / cfg->epochs))
        return vit_error_set(err, VIT_ERR_TOO_LARGE, "%zu batches x %d epochs is too many steps",
                             per_epoch, cfg->epochs);
    long total = (long)per_epoch * cfg->epochs;
    if (cfg->max_steps > 0 && cfg->max_steps < total)
        total = cfg->max_steps;
    double w = cfg->warmup_epochs * (double)per_epoch;
    *asked = w < 1e18 ? (long)llround(w) : (long)1e18; /* w >= 0, finite */
    *s = (sched_config){.lr = cfg->lr, .min_lr = cfg->min_lr,
                        .warmup_steps = cap_warmup(*asked, total), .total_steps = total};
    return VIT_OK;
}

/* ---- checkpoints ------------------------------------------------------- */

/* Validation as the run stands: the epochs that ended, the best of them and
 * its scores, the epochs since it. */
typedef struct best_state {
    int epochs_run, best_epoch, bad_epochs;
    bool has_best;            /* best_epoch is one (0: the state before training) */
    double top1, loss;
} best_state;

/* Where the run stands, for a checkpoint: the run's own buffers and the
 * scalars of its loop (trainer_impl.h). */
static trainer_ckpt ckpt_of(run_state *r, const trainer_ckpt *fp, const sched_config *sched,
                            size_t per_epoch, long step, long skipped, long epoch_steps,
                            double epoch_loss, int epoch, size_t position,
                            const best_state *b)
{
    trainer_ckpt c = *fp;
    c.epochs_run = b->epochs_run;
    c.best_epoch = b->best_epoch;
    c.has_best = b->has_best;
    c.bad_epochs = b->bad_epochs;
    c.best_top1 = b->top1;
    c.best_loss = b->loss;
    c.best = r->best_train;
    c.step = step;
    c.total_steps = sched->total_steps;
    c.warmup_steps = sched->warmup_steps;
    c.per_epoch = (long)per_epoch;
    c.skipped_steps = skipped;
    c.epoch_steps = epoch_steps;
    c.optim_steps = optim_steps(r->opt_train);
    c.epoch = epoch;
    c.position = position;
    c.epoch_loss = epoch_loss;
    c.head_kept = r->head_kept;
    c.n = r->m->trainable_len;
    c.trainable = r->m->trainable;
    c.opt = optim_state_view(r->opt_train);
    return c;
}

/* Writes checkpoint c into cfg->checkpoint_dir and tells cfg->checkpoint. */
static vit_status write_checkpoint(const trainer_config *cfg, const trainer_ckpt *c,
                                   bool end_of_epoch, vit_error *err)
{
    char path[4096];
    vit_status st = trainer_ckpt_save(cfg->checkpoint_dir, cfg, c, path, sizeof path, err);
    if (st == VIT_OK && cfg->checkpoint) {
        trainer_checkpoint_info info = {.path = path, .step = c->step,
                                        .total_steps = c->total_steps, .epoch = c->epoch,
                                        .end_of_epoch = end_of_epoch};
        cfg->checkpoint(cfg->ctx, &info);
    }
    return st;
}

/* The fingerprints a checkpoint of this run carries (trainer.h). */
static vit_status run_fingerprints(const vit_model *backbone, const ds_dataset *train,
                                   const trainer_config *cfg, trainer_ckpt *fp, vit_error *err)
{
    memset(fp, 0, sizeof *fp);
    vit_status st = vit_model_fingerprint(backbone, fp->backbone, err);
    if (st == VIT_OK)
        ds_fingerprint(train, cfg->train_limit, fp->dataset);
    return st;
}

/* Restores the run from cfg->resume_dir: the arena and optimizer state into
 * r, the loop's scalars into *c (trainer_impl.h). */
static vit_status resume_run(const trainer_config *cfg, run_state *r, const trainer_ckpt *fp,
                             trainer_ckpt *c, vit_error *err)
{
    *c = *fp;
    c->n = r->m->trainable_len;
    c->trainable = r->m->trainable;
    c->best = r->best_train;
    c->opt = optim_state_view(r->opt_train);
    vit_status st = trainer_ckpt_load(cfg->resume_dir, cfg, c, err);
    if (st == VIT_OK)
        st = optim_set_steps(r->opt_train, c->optim_steps, err);
    if (st == VIT_OK && c->position > ds_loader_items(r->loader))
        st = vit_error_set(err, VIT_ERR_FORMAT,
                           "cannot resume from %s: its epoch position %zu is past the %zu "
                           "items of an epoch",
                           cfg->resume_dir, c->position, ds_loader_items(r->loader));
    r->head_kept = c->head_kept;
    return st;
}

/* ---- a linear probe's cached features ----------------------------------- */

/* One line to cfg->log (when set). */
static void run_log(const trainer_config *cfg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void run_log(const trainer_config *cfg, const char *fmt, ...)
{
    if (!cfg->log)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    cfg->log(cfg->ctx, line);
}

/* trainer_feature_fn of the training items: the training forward pass's
 * features (what the head reads in a step). */
static vit_status train_features_of(void *ctx, const float *images, int count, float *feat,
                                    vit_error *err)
{
    run_state *r = ctx;
    vit_status st = vit_train_forward(r->m, r->ts, images, count, r->logits, err);
    if (st == VIT_OK)
        memcpy(feat, vit_train_features(r->ts),
               sizeof(float) * (size_t)count * (size_t)vit_config_feature_dim(&r->m->cfg));
    return st;
}

/* trainer_feature_fn of the validation items: trainer_evaluate's forward
 * pass, on the model without its head. */
static vit_status val_features_of(void *ctx, const float *images, int count, float *feat,
                                  vit_error *err)
{
    run_state *r = ctx;
    return vit_forward(r->feat_view, r->val_state, images, count, feat, err);
}

/* Decides whether the run trains on kept features (trainer.h, trainer_run:
 * a linear probe, no augmentation, more than one epoch's steps left, a
 * cache limit they fit in) and computes those of the training items; the
 * validation items' are computed at the first validation (validate), when
 * they fit in what is left.  Not keeping them is never an error: the run
 * then recomputes them, as without a cache (logged).  *cancelled: should_stop
 * fired during the pass. */
static void cache_features(const ds_dataset *train, const ds_dataset *eval,
                           const trainer_config *cfg, run_state *r, bool validating,
                           long steps_left, size_t per_epoch, bool *cancelled)
{
    if (cfg->method != VIT_METHOD_LINEAR || r->augment || cfg->feature_cache_bytes == 0 ||
        steps_left <= (long)per_epoch)
        return;
    int F = vit_config_feature_dim(&r->m->cfg);
    size_t items = ds_loader_items(r->loader), need = 0, cap = cfg->feature_cache_bytes;
    if (!trainer_features_bytes(items, F, &need) || need > cap) {
        run_log(cfg, "linear probe: the features of %zu training items (%d floats each) need "
                "more than the feature cache limit of %zu bytes: they are recomputed every "
                "epoch", items, F, cap);
        return;
    }
    vit_error e = {0};
    vit_status st = VIT_OK;
    r->feat_batch = malloc((size_t)cfg->batch_size * (size_t)F * sizeof *r->feat_batch);
    if (!r->feat_batch)
        st = vit_error_set(&e, VIT_ERR_NOMEM, "out of memory");
    ds_loader_options lo = train_loader_options(r, cfg);
    if (st == VIT_OK)
        st = trainer_features_build(train, &lo, F, train_features_of, r, cfg->should_stop,
                                    cfg->ctx, cap, &r->feats, cancelled, &e);
    if (st != VIT_OK) {
        run_log(cfg, "linear probe: cannot keep the training items' features (%s): they are "
                "recomputed every epoch", e.message);
        return;
    }
    if (*cancelled)
        return;
    size_t used = trainer_features_memory(r->feats);
    run_log(cfg, "linear probe: the features of %zu training items were computed once "
            "(%.1f MiB); every epoch trains the head on them", items, (double)used / 1048576.0);
    if (!validating)
        return;
    eval_options eo = {.limit = cfg->eval_limit};
    size_t vitems = eval ? eval_planned(eval, &eo) : r->nval, vneed = 0;
    if (trainer_features_bytes(vitems, F, &vneed) && vneed <= cap - used) {
        r->val_cache = true;
        r->val_budget = cap - used;
    } else {
        run_log(cfg, "linear probe: the features of %zu validation items need more than the "
                "%zu bytes the feature cache limit leaves: they are recomputed at every "
                "validation", vitems, cap - used);
    }
}

/* Computes and keeps the features of the validation items (d, eo), as
 * trainer_evaluate would compute them; on failure (logged) validations
 * recompute them. */
static void cache_validation(const trainer_config *cfg, const ds_dataset *d,
                             const eval_options *eo, run_state *r)
{
    vit_error e = {0};
    ds_loader_options lo = eval_loader_options(r->m, eo);
    bool cancelled = false;
    int F = vit_config_feature_dim(&r->m->cfg);
    vit_status st = vit_model_view(r->m, 0, r->m->trainable, &r->feat_view, &e);
    if (st == VIT_OK)
        st = vit_state_create(r->feat_view, eo->batch_size, eval_threads(), &r->val_state, &e);
    if (st == VIT_OK)
        st = trainer_features_build(d, &lo, F, val_features_of, r, NULL, NULL, r->val_budget,
                                    &r->val_feats, &cancelled, &e);
    if (st == VIT_OK) {
        run_log(cfg, "linear probe: the features of %zu validation items were computed once "
                "(%.1f MiB); every validation runs the head on them",
                trainer_features_items(r->val_feats),
                (double)trainer_features_memory(r->val_feats) / 1048576.0);
        return;
    }
    run_log(cfg, "linear probe: cannot keep the validation items' features (%s): they are "
            "recomputed at every validation", e.message);
    vit_state_free(r->val_state);
    vit_model_free(r->feat_view);
    r->val_state = NULL;
    r->feat_view = NULL;
}

/* trainer_evaluate of the model as it stands on the validation items' kept
 * features: the same batches through the same head (vit_forward_head), so
 * the same numbers, and the same reports of items that do not load. */
static vit_status validate_cached(const char *const *names, const ds_dataset *d,
                                  const eval_options *eo, run_state *r, eval_result *out,
                                  vit_error *err)
{
    memset(out, 0, sizeof *out);
    const vit_model *m = r->m;
    int K = m->cfg.num_classes;
    int *map;
    vit_status st = eval_class_map(names, K, d, &map, err);
    if (st != VIT_OK)
        return st;
    eval_run e;
    st = eval_begin(&e, K, eo->batch_size, out, err);
    if (st == VIT_OK)
        st = trainer_features_start(r->val_feats, NULL, 0, 0, err);
    while (st == VIT_OK) {
        int count = 0;
        trainer_features_next(r->val_feats, r->feat_batch, r->labels, &count);
        if (count == 0)
            break;
        for (int b = 0; b < count; b++) /* data set class -> the model's class of that name */
            r->labels[b] = map[r->labels[b]];
        st = vit_forward_head(m, r->val_state, r->feat_batch, count, r->logits, err);
        if (st == VIT_OK)
            st = eval_batch(&e, r->logits, r->labels, count, err);
    }
    free(map);
    return eval_end(&e, st, eval_planned(d, eo), err);
}

/* The next training batch: decoded and (training forward) run through the
 * model, or, on kept features, their rows run through the head alone.
 * Logits into r->logits, labels into r->labels; *count 0 at the epoch's end. */
static vit_status train_batch(run_state *r, int *count, vit_error *err)
{
    if (r->feats) {
        trainer_features_next(r->feats, r->feat_batch, r->labels, count);
        return *count ? vit_train_forward_head(r->m, r->ts, r->feat_batch, *count, r->logits,
                                               err)
                      : VIT_OK;
    }
    vit_status st = ds_loader_next(r->loader, r->images, r->labels, NULL, count, err);
    if (st == VIT_OK && *count)
        st = vit_train_forward(r->m, r->ts, r->images, *count, r->logits, err);
    return st;
}

/* Items consumed in the epoch so far, skipped ones included. */
static size_t train_position(run_state *r)
{
    return r->feats ? trainer_features_position(r->feats) : ds_loader_position(r->loader);
}

/* Evaluates the model as it stands on the validation set: `eval` (its first
 * eval_limit items) or the training set's held-out items. */
static vit_status validate(const trainer_config *cfg, const char *const *names,
                           const ds_dataset *train, const ds_dataset *eval, run_state *r,
                           eval_result *out, vit_error *err)
{
    eval_options eo = {.limit = eval ? cfg->eval_limit : 0,
                       .items = eval ? NULL : r->val_items, .num_items = eval ? 0 : r->nval,
                       .batch_size = cfg->batch_size, .loader_threads = cfg->loader_threads,
                       .on_bad = cfg->on_bad, .on_bad_fn = cfg->on_bad_fn,
                       .on_bad_ctx = cfg->on_bad_ctx};
    if (r->val_cache) { /* a linear probe's first validation: keep the features */
        r->val_cache = false;
        cache_validation(cfg, eval ? eval : train, &eo, r);
    }
    if (r->val_feats)
        return validate_cached(names, eval ? eval : train, &eo, r, out, err);
    return trainer_evaluate(r->m, names, eval ? eval : train, &eo, out, err);
}

/* Copies the model's arenas into the best state (to_best) or back. */
static void best_copy(run_state *r, bool to_best)
{
    vit_model *m = r->m;
    if (to_best) {
        memcpy(r->best_train, m->trainable, sizeof(float) * m->trainable_len);
        if (r->best_frozen)
            memcpy(r->best_frozen, m->frozen, sizeof(float) * m->frozen_len);
    } else {
        memcpy(m->trainable, r->best_train, sizeof(float) * m->trainable_len);
        if (r->best_frozen)
            memcpy(m->frozen, r->best_frozen, sizeof(float) * m->frozen_len);
    }
}

/* Is validation v better than the best so far?  Higher top-1, ties to the
 * lower loss; an equal one is not (the earlier epoch stays). */
static bool better(const best_state *b, const eval_result *v)
{
    return !b->has_best || v->top1 > b->top1 || (v->top1 == b->top1 && v->loss < b->loss);
}

/* Validates the state after best->epochs_run epochs; keeps it when it is
 * the best so far (else counts an epoch without progress), filling info's
 * validation fields.  A validation that fails is the eval's failure, not
 * the run's (trainer.h): recorded in out, the best forgotten, false returned
 * (the run goes on without validation); true otherwise. */
static bool keep_best(const trainer_config *cfg, const char *const *names,
                      const ds_dataset *train, const ds_dataset *eval, run_state *r,
                      best_state *best, trainer_epoch_info *info, trainer_result *out)
{
    eval_result v;
    vit_error verr = {0};
    vit_status vs = validate(cfg, names, train, eval, r, &v, &verr);
    if (vs != VIT_OK) {
        out->eval_status = vs;
        out->eval_error = verr;
        best->best_epoch = best->bad_epochs = 0;
        best->has_best = false;
        return false;
    }
    info->has_val = true;
    info->val_top1 = v.top1;
    info->val_top5 = v.top5;
    info->val_loss = v.loss;
    info->is_best = better(best, &v);
    if (info->is_best) {
        best_copy(r, true);
        best->best_epoch = best->epochs_run;
        best->has_best = true;
        best->bad_epochs = 0;
        best->top1 = v.top1;
        best->loss = v.loss;
        eval_result_free(&r->best_eval);
        r->best_eval = v;
        r->has_best_eval = true;
    } else {
        best->bad_epochs++;
        eval_result_free(&v);
    }
    return true;
}

vit_status trainer_run(const vit_model *backbone, const ds_dataset *train, const ds_dataset *eval,
                       const trainer_config *cfg, trainer_result *out, vit_error *err)
{
    memset(out, 0, sizeof *out);
    if (cfg->batch_size < 1 || cfg->epochs < 1 || !(cfg->lr > 0))
        return vit_error_set(err, VIT_ERR_INVALID, "batch size, epochs and lr must be positive");
    if (!(cfg->min_lr >= 0) || !(cfg->warmup_epochs >= 0) || !isfinite(cfg->warmup_epochs) ||
        !isfinite(cfg->lr))
        return vit_error_set(err, VIT_ERR_INVALID,
                             "min lr and warm-up epochs must be finite and >= 0");
    /* the cosine anneals from lr down to min_lr: above lr it would climb
     * for the whole run instead */
    if (cfg->min_lr > cfg->lr)
        return vit_error_set(err, VIT_ERR_INVALID, "min lr %g is above lr %g", cfg->min_lr,
                             cfg->lr);
    if (cfg->from_scratch && cfg->method != VIT_METHOD_FULL)
        return vit_error_set(err, VIT_ERR_INVALID, "training from scratch needs the full method");
    bool checkpoints = cfg->checkpoint_dir || cfg->resume_dir;
    if (checkpoints && cfg->method == VIT_METHOD_FULL)
        return vit_error_set(err, VIT_ERR_UNSUPPORTED,
                             "checkpoints and resume are not supported for full fine-tuning "
                             "yet (only bitfit and linear)");
    if (cfg->checkpoint_every_steps < 0)
        return vit_error_set(err, VIT_ERR_INVALID, "checkpoint_every_steps %ld is negative",
                             cfg->checkpoint_every_steps);
    if (!(cfg->validation_split >= 0 && cfg->validation_split < 1))
        return vit_error_set(err, VIT_ERR_INVALID, "validation split %g is outside [0, 1)",
                             cfg->validation_split);
    if (cfg->early_stopping_patience < 0)
        return vit_error_set(err, VIT_ERR_INVALID, "early stopping patience %d is negative",
                             cfg->early_stopping_patience);
    if (!trainer_augment_parse(trainer_augment_name(cfg->augment), &(trainer_augment){0}))
        return vit_error_set(err, VIT_ERR_INVALID, "unknown augmentation %d", (int)cfg->augment);
    /* one class: the softmax of a single logit is 1, the loss 0 whatever the
     * weights, so the run would learn nothing and report success */
    if (ds_num_classes(train) < 2)
        return vit_error_set(err, VIT_ERR_INVALID,
                             "the training set has %d class(es) ('%.200s'): a classifier needs "
                             "at least 2",
                             ds_num_classes(train),
                             ds_num_classes(train) > 0 ? ds_class_name(train, 0) : "");
    /* K is bounded by ds_open, F by the config; their product is the head,
     * which a tiny checkpoint projecting to many features and a short
     * manifest naming many classes would blow up: bounded here, where the
     * two first meet, before anything is allocated (task.h) */
    int F = vit_config_feature_dim(&backbone->cfg);
    size_t head = (size_t)ds_num_classes(train) * ((size_t)F + 1);
    if (head > TASK_MAX_HEAD_FLOATS)
        return vit_error_set(err, VIT_ERR_TOO_LARGE,
                             "a head of %d classes x %d features is %zu floats, over the limit "
                             "of %zu",
                             ds_num_classes(train), F, head, TASK_MAX_HEAD_FLOATS);
    const char **names = class_names(train);
    int *eval_map = eval ? malloc((size_t)(ds_num_classes(eval) + 1) * sizeof *eval_map) : NULL;
    if (!names || (eval && !eval_map)) {
        free(names);
        free(eval_map);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    }
    /* a renamed eval class must fail now, not after the whole run */
    vit_status st = VIT_OK;
    if (eval)
        st = class_map(names, ds_num_classes(train), eval, eval_map, "the eval set",
                       "the training set", err);
    free(eval_map);
    run_state r = {0};
    if (st == VIT_OK)
        st = run_data(backbone, train, eval, cfg, &r, &out->augment_used, err);
    if (st == VIT_OK)
        st = run_setup(backbone, train, cfg, &r, err);
    vit_model *m = r.m;
    /* validation: on the eval set, else on the held-out items */
    bool validating = eval || r.val_items;
    if (st == VIT_OK && validating) {
        r.best_train = malloc(sizeof(float) * (m->trainable_len ? m->trainable_len : 1));
        if (cfg->method == VIT_METHOD_FULL)
            r.best_frozen = malloc(sizeof(float) * (m->frozen_len ? m->frozen_len : 1));
        if (!r.best_train || (cfg->method == VIT_METHOD_FULL && !r.best_frozen))
            st = vit_error_set(err, VIT_ERR_NOMEM, "out of memory for the best epoch's state");
    }
    best_state best = {0};
    size_t per_epoch = 0;
    if (st == VIT_OK)
        st = batches_per_epoch(train, cfg, &r, &per_epoch, &out->cancelled, err);
    if (st == VIT_OK && !out->cancelled && per_epoch == 0)
        st = vit_error_set(err, VIT_ERR_INVALID, "the training set is empty");
    sched_config sched = {0};
    long warmup_asked = 0;
    if (st == VIT_OK && !out->cancelled)
        st = plan_schedule(cfg, per_epoch, &sched, &warmup_asked, err);
    /* a resumed run continues where its checkpoint stands: the schedule as
     * it was then (re-planning may have moved it), the data position, the
     * arena and the optimizer */
    trainer_ckpt fp = {0}, at = {0};
    bool resumed = false;
    if (st == VIT_OK && !out->cancelled && checkpoints)
        st = run_fingerprints(backbone, train, cfg, &fp, err);
    if (st == VIT_OK && !out->cancelled && cfg->resume_dir) {
        st = resume_run(cfg, &r, &fp, &at, err);
        /* the file is the user's to edit (its sha256 is a checksum, not a
         * seal): its schedule must be one this run could have reached, as
         * re-planning only ever shortens it -- a forged total near LONG_MAX
         * would overflow the step arithmetic below */
        if (st == VIT_OK && (at.total_steps > sched.total_steps ||
                             at.warmup_steps > sched.warmup_steps ||
                             at.per_epoch > (long)per_epoch || at.epoch_steps > (long)per_epoch))
            st = vit_error_set(err, VIT_ERR_FORMAT,
                               "cannot resume from %s: its schedule (%ld steps, %ld warm-up, %ld "
                               "per epoch, %ld in this epoch) is beyond this run's (%ld, %ld, %zu)",
                               cfg->resume_dir, at.total_steps, at.warmup_steps, at.per_epoch,
                               at.epoch_steps, sched.total_steps, sched.warmup_steps, per_epoch);
        if (st == VIT_OK && (at.best_epoch > at.epochs_run || at.epochs_run > cfg->epochs ||
                             (at.has_best && !validating)))
            st = vit_error_set(err, VIT_ERR_FORMAT,
                               "cannot resume from %s: its best epoch %d is not one of its %d "
                               "epochs run (of %d)",
                               cfg->resume_dir, at.best_epoch, at.epochs_run, cfg->epochs);
        if (st == VIT_OK) {
            resumed = true;
            best = (best_state){.epochs_run = at.epochs_run, .best_epoch = at.best_epoch,
                                .bad_epochs = at.bad_epochs, .has_best = at.has_best,
                                .top1 = at.best_top1, .loss = at.best_loss};
            sched.total_steps = at.total_steps;
            sched.warmup_steps = at.warmup_steps;
            per_epoch = (size_t)at.per_epoch;
            out->skipped_steps = at.skipped_steps;
        }
    }
    if (st == VIT_OK && !out->cancelled && cfg->plan) {
        trainer_plan plan = {.total_steps = sched.total_steps, .warmup_steps = sched.warmup_steps,
                             .warmup_asked = warmup_asked, .batches_per_epoch = (long)per_epoch};
        cfg->plan(cfg->ctx, &plan);
    }
    int K = st == VIT_OK ? m->cfg.num_classes : 0;
    long step = resumed ? at.step : 0, epoch_steps = resumed ? at.epoch_steps : 0;
    double epoch_loss = resumed ? at.epoch_loss : 0;
    float lr = 0;
    progress_window win = {.t_start = now_seconds(), .step0 = step};
    win.t_last = win.t_start;
    if (st == VIT_OK && !out->cancelled)
        cache_features(train, eval, cfg, &r, validating, sched.total_steps - step, per_epoch,
                       &out->cancelled);
    /* a kept head starts as a task already: the state before training
     * competes too, so training never makes the product worse on
     * validation (a run checkpointed after this has it in `best`) */
    if (st == VIT_OK && !out->cancelled && validating && r.head_kept && !resumed) {
        trainer_epoch_info info0 = {0};
        validating = keep_best(cfg, names, train, eval, &r, &best, &info0, out);
    }
    int patience = validating ? cfg->early_stopping_patience : 0;
    /* a run checkpointed as it stopped early stays stopped (one that ran
     * its last epoch simply ended) */
    out->stopped_early = patience > 0 && best.bad_epochs >= patience &&
                         best.epochs_run < cfg->epochs && step < sched.total_steps;
    for (int epoch = resumed ? at.epoch : 0; st == VIT_OK && !out->cancelled &&
                                             !out->stopped_early && epoch < cfg->epochs &&
                                             step < sched.total_steps;
         epoch++) {
        /* the first epoch of a resumed run may start part-way through */
        size_t start = resumed && epoch == at.epoch ? at.position : 0;
        if (start == 0) {
            epoch_loss = 0;
            epoch_steps = 0;
        }
        long left = sched.total_steps - (step - epoch_steps); /* from the epoch's start */
        long planned = left < (long)per_epoch ? left : (long)per_epoch;
        st = r.feats ? trainer_features_start(r.feats, r.loader, epoch, start, err)
                     : ds_loader_start_epoch_at(r.loader, epoch, start, err);
        bool exhausted = false; /* the loader has no batch left this epoch */
        while (st == VIT_OK && step < sched.total_steps) {
            if (cfg->should_stop && cfg->should_stop(cfg->ctx)) {
                out->cancelled = true;
                break;
            }
            int count = 0;
            st = train_batch(&r, &count, err);
            exhausted = st == VIT_OK && count == 0;
            if (st != VIT_OK || count == 0)
                break;
            memset(r.gtrain, 0, sizeof(float) * m->trainable_len);
            if (r.gfrozen)
                memset(r.gfrozen, 0, sizeof(float) * m->frozen_len);
            double loss = vit_cross_entropy(r.logits, r.labels, count, K,
                                            (float)cfg->label_smoothing, r.dlogits);
            if (!isfinite(loss)) {
                st = vit_error_set(err, VIT_ERR_INVALID,
                                   "loss became %g at step %ld (lr %g too high?)", loss, step,
                                   cfg->lr);
                break;
            }
            st = vit_backward(m, r.ts, r.dlogits, count, r.gtrain, r.gfrozen, err);
            if (st != VIT_OK)
                break;
            /* one norm over everything trained, as torch's clip_grad_norm_ over all params */
            double nt = optim_grad_norm(r.gtrain, m->trainable_len);
            double nf = r.gfrozen ? optim_grad_norm(r.gfrozen, m->frozen_len) : 0;
            double norm = sqrt(nt * nt + nf * nf);
            lr = (float)sched_lr(&sched, step);
            if (!isfinite(norm)) {
                /* inf/NaN gradients under a finite loss (an overflow in
                 * backward): any update -- clipped or not -- would write NaN
                 * into the parameters and AdamW's moments for good.  Drop
                 * this update; the schedule moves on; the caller is told. */
                out->skipped_steps++;
            } else {
                if (cfg->clip_grad_norm > 0) {
                    double coef = cfg->clip_grad_norm / (norm + 1e-6);
                    if (coef < 1.0) {
                        for (size_t i = 0; i < m->trainable_len; i++)
                            r.gtrain[i] *= (float)coef;
                        for (size_t i = 0; r.gfrozen && i < m->frozen_len; i++)
                            r.gfrozen[i] *= (float)coef;
                    }
                }
                optim_step(r.opt_train, m->trainable, r.gtrain, r.mask_train, lr);
                if (r.opt_frozen)
                    optim_step(r.opt_frozen, m->frozen, r.gfrozen, r.mask_frozen, lr);
            }
            step++;
            win.loss += loss;
            win.steps++;
            win.images += count;
            epoch_loss += loss;
            epoch_steps++;
            if (cfg->log_every > 0 && (step % cfg->log_every == 0 || step == sched.total_steps))
                report_progress(cfg, &win, step, &sched, out->skipped_steps, epoch, lr);
            /* every N steps, unless the epoch's own checkpoint follows at once */
            if (cfg->checkpoint_dir && cfg->checkpoint_every_steps > 0 &&
                step % cfg->checkpoint_every_steps == 0 && epoch_steps < planned &&
                step < sched.total_steps) {
                trainer_ckpt c = ckpt_of(&r, &fp, &sched, per_epoch, step, out->skipped_steps,
                                         epoch_steps, epoch_loss, epoch,
                                         train_position(&r), &best);
                st = write_checkpoint(cfg, &c, false, err);
            }
        }
        if (st == VIT_OK && !out->cancelled && epoch_steps < planned) {
            /* The epoch delivered fewer batches than counted: items that
             * loaded before fail now (files changed during the run).  Re-plan
             * the remaining epochs on what this one delivered, so the
             * schedule still ends at the run's last step; if this was the
             * last epoch, the run ends here and its total is the truth. */
            per_epoch = (size_t)epoch_steps;
            long rest = (long)(cfg->epochs - epoch - 1) * epoch_steps;
            long total = step + rest;
            if (cfg->max_steps > 0 && cfg->max_steps < total)
                total = cfg->max_steps;
            sched.total_steps = total;
            sched.warmup_steps = cap_warmup(sched.warmup_steps, total);
            if (cfg->log_every > 0 && step == total)
                report_progress(cfg, &win, step, &sched, out->skipped_steps, epoch, lr);
        }
        if (st != VIT_OK || out->cancelled)
            break;
        /* the epoch ended (or the run did): validate, keep the best, count
         * the epochs without progress */
        best.epochs_run++;
        trainer_epoch_info info = {.epoch = best.epochs_run, .epochs = cfg->epochs,
                                   .step = step, .total_steps = sched.total_steps,
                                   .train_loss = epoch_steps ? epoch_loss / epoch_steps : 0};
        if (validating) {
            validating = keep_best(cfg, names, train, eval, &r, &best, &info, out);
            if (!validating)
                patience = 0;
            info.stopping = patience > 0 && best.bad_epochs >= patience &&
                            epoch + 1 < cfg->epochs && step < sched.total_steps;
        }
        info.best_epoch = best.best_epoch;
        if (cfg->checkpoint_dir) {
            /* the next step is the next epoch's first, unless the run
             * stopped mid-epoch at its last */
            if (!exhausted && epoch_steps == planned && step == sched.total_steps)
                exhausted = train_position(&r) == ds_loader_items(r.loader);
            trainer_ckpt c = ckpt_of(&r, &fp, &sched, per_epoch, step, out->skipped_steps,
                                     epoch_steps, epoch_loss, exhausted ? epoch + 1 : epoch,
                                     exhausted ? 0 : train_position(&r), &best);
            st = write_checkpoint(cfg, &c, true, err);
        }
        if (st == VIT_OK && cfg->epoch_end)
            cfg->epoch_end(cfg->ctx, &info);
        out->stopped_early = info.stopping;
    }
    out->steps = step;
    out->total_steps = sched.total_steps;
    out->warmup_steps = sched.warmup_steps;
    out->head_kept = r.head_kept;
    out->final_loss = epoch_steps ? epoch_loss / epoch_steps : 0;
    out->seconds = now_seconds() - win.t_start;
    out->epochs_run = best.epochs_run;
    if (st == VIT_OK && !out->cancelled && validating && best.has_best) {
        /* the product is the best epoch's state, and its validation the
         * result's eval (a resumed run whose best predates the resume
         * evaluates it again: the same numbers, evaluation is deterministic) */
        if (best.best_epoch != best.epochs_run)
            best_copy(&r, false);
        out->best_epoch = best.best_epoch;
        out->eval_is_validation = !eval;
        if (r.has_best_eval) {
            out->eval = r.best_eval;
            memset(&r.best_eval, 0, sizeof r.best_eval);
            r.has_best_eval = false;
            out->eval_status = VIT_OK;
        } else {
            out->eval_status = validate(cfg, names, train, eval, &r, &out->eval,
                                        &out->eval_error);
        }
        out->has_eval = out->eval_status == VIT_OK;
    }
    if (st == VIT_OK && !out->cancelled)
        st = finish(backbone, cfg, names, &r, out, err);
    run_free(&r);
    free(names);
    if (st != VIT_OK)
        trainer_result_free(out);
    return st;
}
