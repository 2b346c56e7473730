/*
 * trainer_impl.h - the checkpoint file of a training run, between trainer.c
 * (which fills and applies it) and trainer_checkpoint.c (which writes, reads
 * and checks it).  See trainer.h, "Checkpoints".
 */
#ifndef VIT_TRAINER_IMPL_H
#define VIT_TRAINER_IMPL_H

#include <stdbool.h>
#include <stddef.h>

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

#endif
