/*
 * trainer_impl.h - internals of a training run shared by its files: the
 * checkpoint file, between trainer.c (which fills and applies it) and
 * trainer_checkpoint.c (which writes, reads and checks it; trainer.h,
 * "Checkpoints"), and a linear probe's cached features (trainer_features.c).
 */
#ifndef VIT_TRAINER_IMPL_H
#define VIT_TRAINER_IMPL_H

#include <stdbool.h>
#include <stddef.h>

#include "dataset.h"
#include "optim.h"
#include "status.h"
#include "trainer.h"

/* One checkpoint.  The arrays are the run's own buffers (never owned). */
typedef struct trainer_ckpt {
    char backbone[65], dataset[65]; /* fingerprints (hex) */
    long step;                /* steps done */
    long total_steps, warmup_steps; /* the schedule as it stands (re-planning may move them) */
    long per_epoch;           /* batches per epoch, as it stands */
    long skipped_steps, epoch_steps; /* so far; epoch_steps: in the epoch `epoch_loss` sums */
    long optim_steps;         /* the optimizer's t */
    int epoch;                /* the epoch the next step belongs to */
    size_t position;          /* items of that epoch consumed (skipped ones too) */
    double epoch_loss;        /* sum of the losses of the last epoch_steps steps */
    bool head_kept;
    int epochs_run;           /* epochs that ended (validated, when validating) */
    bool has_best;            /* validation has chosen a best state (below) */
    int best_epoch;           /* its epoch (1-based; 0: the state before training, a kept
                                 head's) */
    int bad_epochs;           /* epochs since it (the early-stopping count) */
    double best_top1, best_loss; /* its validation */
    size_t n;                 /* trainable floats */
    float *trainable;         /* (n) */
    float *best;              /* (n) the best state's arena; read and written only when
                                 has_best */
    optim_state opt;          /* m, v: (n) each, or NULL where the optimizer has none */
} trainer_ckpt;

/* Writes c (with cfg's hyper-parameters) to <dir>/TRAINER_CHECKPOINT_FILE
 * atomically, creating dir (one level) if it is missing; path receives the
 * file's name.  VIT_ERR_IO when it cannot be written (nothing replaced). */
vit_status trainer_ckpt_save(const char *dir, const trainer_config *cfg, const trainer_ckpt *c,
                             char *path, size_t path_len, vit_error *err);

/* Reads <dir>'s checkpoint into c.  On entry c->backbone and c->dataset hold
 * the run's fingerprints, c->n its trainable length, c->trainable and c->opt
 * its buffers (c->opt.m / .v NULL where its optimizer has none); on success
 * the arrays and every scalar of c hold the checkpoint's.  Refused:
 * VIT_ERR_NOT_FOUND (no file), VIT_ERR_FORMAT (not a checkpoint, truncated,
 * checksum mismatch, a value out of range), VIT_ERR_MISMATCH (another
 * backbone, data set, hyper-parameter or arena size; the message names it).
 * The arrays may have been written to when it fails. */
vit_status trainer_ckpt_load(const char *dir, const trainer_config *cfg, trainer_ckpt *c,
                             vit_error *err);

/* ---- Cached features (trainer_features.c) ----
 * A linear probe trains the head alone on a frozen backbone: when its items
 * are not augmented, each one's features are the same every epoch.  A
 * trainer_features holds them for one item list (a loader's), computed once,
 * and replays the loader's epochs from them: the same batches (rows and
 * labels), the same epoch positions, the same reports of the items that did
 * not load.  trainer.c decides when to use one (trainer.h,
 * feature_cache_bytes). */
typedef struct trainer_features trainer_features;

/* Computes the features (count, F) of count images (count, 3, H, W) into
 * feat; the caller's forward pass, so that the cache holds its numbers. */
typedef vit_status (*trainer_feature_fn)(void *ctx, const float *images, int count, float *feat,
                                         vit_error *err);

/* Bytes the features of `items` items of F floats take, into *bytes: rows,
 * labels and the bookkeeping; false when that overflows size_t (or F < 1). */
bool trainer_features_bytes(size_t items, int F, size_t *bytes);

/* Loads every item of lo's list once, in list order with the eval transform
 * (lo's shuffle, augment and drop_last are ignored; its batch size, bad-item
 * policy, list and limit kept), and keeps compute's features of the ones
 * that load and the loader's reports of the ones that do not (told again by
 * each replay through lo->on_bad_fn, not now).  VIT_ERR_TOO_LARGE when it
 * all would take more than `budget` bytes; a loader error (DS_BAD_FAIL, out
 * of memory) fails it.  should_stop (may be NULL) is asked between batches:
 * non-zero stops it with *cancelled set, VIT_OK and nothing built.  On
 * success *out is the caller's to free. */
vit_status trainer_features_build(const ds_dataset *d, const ds_loader_options *lo, int F,
                                  trainer_feature_fn compute, void *compute_ctx,
                                  int (*should_stop)(void *ctx), void *stop_ctx,
                                  size_t budget, trainer_features **out, bool *cancelled,
                                  vit_error *err);

void trainer_features_free(trainer_features *f);

/* Items that loaded (rows), items in the list, bytes held. */
size_t trainer_features_rows(const trainer_features *f);
size_t trainer_features_items(const trainer_features *f);
size_t trainer_features_memory(const trainer_features *f);

/* Starts replaying epoch `epoch` at epoch position `position` (items
 * consumed, skipped ones included): in the order loader order_of gives that
 * epoch (ds_loader_order; it must have the same items), or in list order
 * when order_of is NULL.  VIT_ERR_INVALID for a position past the items. */
vit_status trainer_features_start(trainer_features *f, const ds_loader *order_of, int epoch,
                                  size_t position, vit_error *err);

/* The next batch of the epoch as ds_loader_next would fill it: features
 * (count, F), labels (count); *count 0 when the epoch is over.  An item that
 * did not load is reported again (lo->on_bad_fn) and passed over. */
void trainer_features_next(trainer_features *f, float *feat, int *labels, int *count);

/* Items consumed so far in this epoch, skipped ones included. */
size_t trainer_features_position(const trainer_features *f);

#endif
