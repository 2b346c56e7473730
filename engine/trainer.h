/*
 * trainer.h - fine-tuning runs and evaluation.
 *
 * trainer_run trains a task on a dataset: BitFit (every bias + a head),
 * linear (head only) or full (everything).  The backbone is never modified:
 * bitfit and linear train a view that shares its frozen arena; full trains a
 * private copy.  Steps are deterministic for a given seed, data and thread
 * count.  A cancel callback is checked between steps; progress is reported
 * through a callback (the CLI prints it, the job runner will record it).
 */
#ifndef VIT_TRAINER_H
#define VIT_TRAINER_H

#include <stdbool.h>
#include <stdint.h>

#include "dataset.h"
#include "optim.h"
#include "status.h"
#include "task.h"
#include "vit.h"
#include "vit_train.h"

/* Where the head comes from.  "Match by name": every class of the training
 * set is one of the checkpoint's labels (in any order; a subset is fine);
 * the kept head then takes, for each class, the row of the label with its
 * name. */
typedef enum trainer_head {
    TRAINER_HEAD_AUTO, /* keep the checkpoint's head if the classes match by name, else new */
    TRAINER_HEAD_KEEP, /* keep it: rows by name if the classes match by name, else by
                          position (the classes must then match in number) */
    TRAINER_HEAD_NEW,  /* a fresh seeded head for the data set's classes */
} trainer_head;

typedef struct trainer_progress {
    long step, total_steps;
    long warmup_steps;
    long skipped_steps;       /* updates dropped for non-finite gradients, so far */
    int epoch, epochs;
    double loss;              /* mean over the steps since the last report */
    double lr;
    double images_per_second; /* over the steps since the last report */
    double eta_seconds;
} trainer_progress;

/* Train-time augmentation (trainer_augment_policy says what each means). */
typedef enum trainer_augment {
    TRAINER_AUGMENT_AUTO,   /* chosen from the training images: none or light */
    TRAINER_AUGMENT_NONE,   /* the eval transform only */
    TRAINER_AUGMENT_LIGHT,  /* a crop relative to the source's size, no flip */
    TRAINER_AUGMENT_STRONG, /* ImageNet's: RandomResizedCrop(0.08-1, 3/4-4/3) + flip */
} trainer_augment;

/* "auto", "none", "light", "strong"; "?" for anything else. */
const char *trainer_augment_name(trainer_augment a);

/* Parses one of those names into *out; false (and *out unchanged) otherwise. */
bool trainer_augment_parse(const char *s, trainer_augment *out);

/* What augmentation `a` means for training images whose shorter side is
 * typically `source_side` pixels and a model input of `input_side` (both
 * > 0): true and *out set when items are augmented, false for none.
 *   none:   false.
 *   strong: ds_augment_imagenet().
 *   light:  a crop that keeps at least `keep` of each side, aspect ratio
 *           0.9-1.1, no flip; keep = 0.9 for a source not larger than the
 *           input (its pixels are all the detail there is), falling
 *           linearly to 0.75 for one of twice the input or more.
 *   auto:   none when the source is smaller than the input (a crop of an
 *           upscaled low-resolution image removes detail the model needs,
 *           and rescales the object: the study lost 31 points to
 *           it), light otherwise.  Never a flip: mirrored letters, digits
 *           and arrows are other classes; flips are asked for (strong). */
bool trainer_augment_policy(trainer_augment a, int source_side, int input_side, ds_augment *out);

/* The end of one epoch (cfg->epoch_end is told). */
typedef struct trainer_epoch_info {
    int epoch, epochs;        /* epochs completed (1-based), planned */
    long step, total_steps;
    double train_loss;        /* mean over the epoch's steps */
    bool has_val;             /* the epoch was validated (below) */
    double val_top1, val_top5, val_loss; /* on the validation set */
    int best_epoch;           /* the best so far (0: none, or the state before training
                                 when the head was kept: trainer_run) */
    bool is_best;             /* this epoch is the best so far */
    bool stopping;            /* early stopping ends the run after this epoch */
} trainer_epoch_info;

/* The schedule of a run, as planned before its first step. */
typedef struct trainer_plan {
    long total_steps, warmup_steps;
    long warmup_asked;        /* warmup_epochs in steps: more than warmup_steps when the
                                 warm-up was cut to end the run at min_lr */
    long batches_per_epoch;
} trainer_plan;

/* A checkpoint trainer_run has just written (cfg->checkpoint is told). */
typedef struct trainer_checkpoint_info {
    const char *path;         /* the file, <checkpoint_dir>/TRAINER_CHECKPOINT_FILE */
    long step, total_steps;   /* steps done when it was written */
    int epoch;                /* the epoch the next step belongs to (0-based) */
    bool end_of_epoch;        /* written because an epoch ended (else: every N steps) */
} trainer_checkpoint_info;

typedef struct trainer_config {
    vit_method method;
    int epochs;
    long max_steps;           /* > 0: stop after this many steps (and size the schedule to it) */
    int batch_size;
    double lr, min_lr;        /* peak and final learning rate: 0 <= min_lr <= lr */
    double weight_decay;      /* on the head weight (and, for full, on every matrix) */
    double warmup_epochs;     /* linear warm-up, in epochs (fractions allowed); at most
                                 total steps - 1, so the last step runs at min_lr */
    optim_kind optimizer;
    double momentum;          /* SGD */
    double label_smoothing;
    double clip_grad_norm;    /* 0: off */
    uint64_t seed;
    trainer_augment augment;
    bool shuffle;
    int loader_threads;
    size_t train_limit, eval_limit; /* use only the first N items (0: all) */
    double validation_split;  /* eval == NULL: hold this fraction of the training items out
                                 (seeded by seed, stratified: ds_split) as the validation
                                 set; 0: none.  0 <= x < 1 */
    int early_stopping_patience; /* stop after this many epochs in a row without a better
                                    validation top-1; 0: never (needs validation) */
    trainer_head head;
    bool from_scratch;        /* full only: re-initialise every weight (seeded) first */
    ds_bad_policy on_bad;     /* DS_BAD_SKIP: a counting pass sizes the schedule first */
    ds_bad_fn on_bad_fn;
    void *on_bad_ctx;
    size_t feature_cache_bytes; /* linear, no augmentation: the frozen backbone's features
                                   of the training (and validation) items are computed
                                   once and kept, if they fit in this many bytes, else
                                   recomputed every epoch (logged); 0: never kept.  The
                                   run's numbers are the same either way (trainer_run) */
    long log_every;           /* steps between progress reports (0: none) */
    void (*log)(void *ctx, const char *message); /* one line about how the run goes (may
                                                    be NULL) */
    void (*progress)(void *ctx, const trainer_progress *p);
    void (*plan)(void *ctx, const trainer_plan *p); /* once, before step 0 (may be NULL) */
    int (*should_stop)(void *ctx); /* non-zero: cancel between steps */
    /* Checkpoints (see "Checkpoints" below).  bitfit and linear only. */
    const char *checkpoint_dir;   /* not NULL: write a checkpoint there after every epoch */
    long checkpoint_every_steps;  /* > 0: also after every this many steps (0: epochs only) */
    const char *resume_dir;       /* not NULL: continue the run checkpointed there */
    void (*checkpoint)(void *ctx, const trainer_checkpoint_info *c); /* after each write */
    void (*epoch_end)(void *ctx, const trainer_epoch_info *e); /* after each epoch (may be
                                                                  NULL) */
    void *ctx;
} trainer_config;

/* ---- Checkpoints ----
 * A checkpoint holds everything a run needs to continue bit-identically: the
 * trainable arena, the optimizer state and step count, the schedule as it
 * stands (step, total and warm-up steps, batches per epoch), the data-order
 * position (epoch and items consumed in it: the loader's order and
 * augmentation are pure functions of (seed, epoch, item), so no RNG state
 * needs saving beyond the seed), validation as it stands (epochs run, the
 * best state's arena -- "best", when there is one -- its epoch and scores,
 * the epochs since it: a resumed run keeps the same best and stops when the
 * uninterrupted one would), the hyper-parameters that shape the run
 * (augment, validation_split, early_stopping_patience and eval_limit among
 * them; the eval set itself is not fingerprinted), and
 * fingerprints of the backbone (vit_model_fingerprint) and of the training
 * set (ds_fingerprint, over train_limit items).  It is one safetensors file,
 * <dir>/TRAINER_CHECKPOINT_FILE: tensors "trainable", "optim.m", "optim.v"
 * (the ones the optimizer has), scalars as "__metadata__" strings, and
 * "sha256" over all of it; written to a temporary file, fsynced, renamed over
 * the previous one, the directory fsynced.  A run given resume_dir refuses
 * (VIT_ERR_MISMATCH, naming what differs) another backbone, data set or
 * hyper-parameter, and a damaged file (VIT_ERR_FORMAT); loader_threads,
 * log_every and the callbacks may differ.  Resuming with the same checkpoint
 * directory continues to write there.  Full fine-tuning has no checkpoints
 * yet (VIT_ERR_UNSUPPORTED): its state is the whole model and two moments of
 * it, 1 GB for ViT-B. */
#define TRAINER_CHECKPOINT_FILE "checkpoint.safetensors"

/* feature_cache_bytes of trainer_defaults_for: 1 GiB, Fashion-MNIST's 60,000
 * training images under ViT-B/16 (768 floats each) take 186 MB. */
#define TRAINER_FEATURE_CACHE_DEFAULT ((size_t)1 << 30)

/* Is there a checkpoint file in dir?  (Says nothing about whether it loads.) */
bool trainer_checkpoint_exists(const char *dir);

/* Defaults that give a good task without tuning, for method m: AdamW,
 * batch 32, 10 epochs, cosine with a 1-epoch warm-up, augmentation auto, 10%
 * of the training set held out for validation (when no eval set is given),
 * the best epoch kept, early stopping after 3 epochs without progress; and
 * per method (trainer.c says where each comes from):
 *   bitfit: lr 1e-2, weight decay 5e-5;
 *   linear: lr 2e-2, weight decay 0;
 *   full:   lr 1e-3, weight decay 0.05.
 * trainer_defaults() is trainer_defaults_for(VIT_METHOD_BITFIT). */
trainer_config trainer_defaults_for(vit_method m);
trainer_config trainer_defaults(void);

/* How trainer_evaluate reads a data set. */
typedef struct eval_options {
    size_t limit;             /* use only the first N items (0: all) */
    const size_t *items;      /* not NULL: only these items (num_items), not `limit` */
    size_t num_items;
    int batch_size;
    int loader_threads;
    ds_bad_policy on_bad;     /* DS_BAD_SKIP: an item that does not load is skipped (and
                                 counted in eval_result.skipped); DS_BAD_FAIL: an error */
    ds_bad_fn on_bad_fn;      /* told of every skipped item; may be NULL */
    void *on_bad_ctx;
} eval_options;

/* One non-zero cell of a confusion matrix: `count` evaluated items of true
 * class `truth` were predicted as class `pred` (the model's indices). */
typedef struct eval_cell {
    int truth, pred;
    long count;
} eval_cell;

/* An evaluation, in the model's class order (K = the model's classes).
 * Ties between logits go to the lower class index, as torch.argmax and a
 * stable sort do: the prediction is the first of the tied maxima, and the
 * true class ranks behind a tied class before it, ahead of one after it.
 *
 * The confusion matrix is kept sparse: its cells that are not zero, at most
 * one per evaluated item.  Dense, it grows with K^2 whatever the number of
 * items (ImageNet-21k's 21,843 classes: 477M cells, 3.8 GB of longs; a
 * 5000-class manifest of 59 KB made `eval --json` print 50 MB of zeros). */
typedef struct eval_result {
    long count;               /* items evaluated */
    long skipped;             /* items skipped because they did not load (DS_BAD_SKIP) */
    double top1, top5, loss;  /* over all `count` items; loss = mean per item */
    int num_classes;          /* K */
    int absent;               /* classes of the model no evaluated item belongs to */
    long *class_count;        /* (K) evaluated items of each true class; owned */
    long *class_correct;      /* (K) of those, predicted right (top-1); owned */
    eval_cell *confusion;     /* (num_cells) the non-zero cells, row = true class, sorted by
                                 (truth, pred); owned */
    size_t num_cells;         /* <= count and <= K * K */
} eval_result;

void eval_result_free(eval_result *r);

/* The count of confusion cell (truth, pred) of r: 0 when it is not stored. */
long eval_confusion_at(const eval_result *r, int truth, int pred);

/* Evaluates model m (with its head) on the first o->limit items of d (0:
 * all) with the model's own preprocessing; an item that does not load fails
 * the evaluation or is skipped and counted (o->on_bad), and when none loads
 * that is an error too.  The data set's classes are matched to
 * the model's by name: class_names are the model's K class names (NULL: its
 * labels, m->labels).  A data set class that is not exactly one of them is
 * an error (VIT_ERR_MISMATCH naming it); model classes the data set lacks
 * are allowed and counted in out->absent (class_count 0, no confusion cell).
 * Only when neither names nor labels exist are classes taken by position
 * (the counts must then be equal). */
vit_status trainer_evaluate(const vit_model *m, const char *const *class_names,
                            const ds_dataset *d, const eval_options *o, eval_result *out,
                            vit_error *err);

typedef struct trainer_result {
    vit_task *task;           /* bitfit / linear: the trained task (caller frees) */
    vit_model *model;         /* full: the trained model (caller frees; shares nothing) */
    long steps;               /* steps taken (== total_steps unless cancelled) */
    long total_steps, warmup_steps; /* the schedule as it ended */
    long skipped_steps;       /* updates dropped because a gradient was inf/NaN */
    bool head_kept;           /* the head started from the checkpoint's */
    double final_loss;        /* mean loss of the last epoch's steps */
    double seconds;
    bool cancelled;
    bool has_eval;
    eval_result eval;         /* of the product's state (the best epoch's when validated): on
                                 the eval set when one was given, else on the held-out
                                 validation split (eval_is_validation) */
    bool eval_is_validation;  /* eval is on the validation split, not an eval set */
    int best_epoch;           /* the epoch (1-based) whose state is the product; 0: the
                                 state before training (a kept head no epoch beat; has_eval)
                                 or no validation (the last state; !has_eval) */
    int epochs_run;           /* epochs completed (fewer than planned: early stopping,
                                 max_steps or a cancel) */
    bool stopped_early;       /* early stopping ended the run */
    trainer_augment augment_used; /* what `auto` chose (else the asked policy) */
    vit_status eval_status;   /* not VIT_OK: the eval after training failed (eval_error says
                                 why; has_eval is false), the run's product is still here */
    vit_error eval_error;
} trainer_result;

void trainer_result_free(trainer_result *r);

/* Trains on `train`, validating after every epoch when there is a
 * validation set: `eval` when it is not NULL (its first cfg->eval_limit
 * items), else cfg->validation_split of the training items held out
 * (ds_split; the rest are trained on; none when the split holds nothing
 * out).  The product (task or model) is the state of the best epoch on
 * validation -- the highest top-1, ties to the lower loss, then the earlier
 * epoch -- and out->eval its evaluation there (eval_is_validation says on
 * which set; out->best_epoch which epoch).  A kept head (cfg->head) makes
 * the model a task before any step: that state is validated first and
 * competes as epoch 0, so training never returns a task worse on
 * validation than the one it started from (the Fashion-MNIST run
 * lost 8.6 points to 3 epochs of default BitFit).  With early_stopping_patience P
 * > 0, P epochs in a row without a better one end the run (stopped_early).
 * Without a validation set the product is the last state, best_epoch 0,
 * has_eval false.  An epoch that ends the run early (max_steps) is
 * validated as well.
 *
 * The eval set's classes are matched to the training set's by name (as in
 * trainer_evaluate) before the first step, so a set naming an unknown class
 * fails at once, not after training.  Its images are read at each epoch's
 * end, with the training set's cfg->on_bad policy and report; a validation
 * that fails -- an unreadable image under DS_BAD_FAIL, every item skipped,
 * non-finite scores -- never discards the run: validation stops there, the
 * run goes on, and trainer_run returns VIT_OK with the last state as the
 * product, has_eval false and the failure in eval_status / eval_error, for
 * the caller to save the product and then report the failure.
 *
 * The head, K classes x (F + 1) floats, may not exceed TASK_MAX_HEAD_FLOATS
 * (VIT_ERR_TOO_LARGE before anything is allocated).
 *
 * Schedule: total steps = batches per epoch * epochs (or max_steps), warm-up
 * = warmup_epochs * batches per epoch, cut to total steps - 1 when the run is
 * not longer than that (cfg->plan is told), cosine to min_lr at the last
 * step (optim.h): every run of two or more steps ends at min_lr.  Batches per epoch count the items that
 * load: with DS_BAD_SKIP a counting pass decodes every item once before
 * training; should an epoch still come out shorter (a file changed during
 * the run), the rest of the schedule is re-planned on what it delivered.
 * A step whose gradient norm is inf/NaN while the loss is finite changes no
 * parameter (counted in skipped_steps); a non-finite loss is an error.
 *
 * A linear probe (method linear) whose training items are not augmented
 * (cfg->augment resolves to none) and that has more than one epoch's steps
 * to run computes the features of its training items once, in a pass
 * before its first step (a resumed run: before its first step too), and
 * trains the head on them every epoch; its validation items' features are
 * computed at the first validation and kept too.  The pass decodes and
 * forwards every item once, as an epoch would; the epochs that follow read
 * no image: each costs the head's products alone.  Everything else is as
 * without it: the batches, their order, the steps, checkpoints and resume,
 * validation, the reports of items that do not load (told again each epoch
 * and each validation, as the loader tells them).  The features are the
 * ones the training (and validation) forward pass gives.  Where a row's
 * features do not depend on which images share its batch -- OpenBLAS's
 * SkylakeX kernels (this project's AVX-512 hosts), the packed path -- the
 * run's numbers are bit for bit those of recomputing them; OpenBLAS's
 * Haswell/Zen kernels round a row by its place in the batch, so there a
 * run without the cache already sees each image's features move by a
 * rounding from epoch to epoch, and a cached run differs from it by as
 * much (test_linear_probe: rtol 1e-4 on losses and the head).  The
 * validation items' features are computed in the batches every validation
 * forms: exact on any path.  Only when everything fits in
 * cfg->feature_cache_bytes (cfg->log says when it does not, and the
 * features are recomputed each epoch); a pass that fails (an image that
 * does not load under DS_BAD_FAIL, out of memory) falls back to recomputing
 * (logged), and the run then fails where it would have. */
vit_status trainer_run(const vit_model *backbone, const ds_dataset *train, const ds_dataset *eval,
                       const trainer_config *cfg, trainer_result *out, vit_error *err);

#endif
