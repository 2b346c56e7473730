/*
 * optim.h - optimizers and the learning-rate schedule for fine-tuning.
 *
 * Optimizers update one flat parameter array (STYLE.md 3: the trainable arena)
 * from a gradient array of the same size; their state is the same size again.
 * Semantics follow torch.optim exactly so that one step can be compared with
 * PyTorch:
 *   AdamW (torch.optim.AdamW): p *= 1 - lr*wd; m = b1 m + (1-b1) g;
 *     v = b2 v + (1-b2) g^2; p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
 *   SGD (torch.optim.SGD, dampening 0, no nesterov): g += wd p;
 *     buf = g at t=1 else momentum buf + g; p -= lr buf
 * Weight decay applies only where decay_mask[i] is non-zero (by default the
 * head weight, never biases).  Sums are accumulated in double.
 */
#ifndef VIT_OPTIM_H
#define VIT_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef enum optim_kind { OPTIM_ADAMW, OPTIM_SGD } optim_kind;

typedef struct optim_config {
    optim_kind kind;
    float weight_decay;
    float beta1, beta2, eps; /* AdamW; defaults 0.9, 0.999, 1e-8 */
    float momentum;          /* SGD; 0 = plain SGD */
} optim_config;

typedef struct optim optim;

/* Optimizer for n parameters; state zeroed (step 0). */
vit_status optim_create(const optim_config *cfg, size_t n, optim **out, vit_error *err);
void optim_free(optim *o);

/* One update of params (n) from grads (n) at learning rate lr.  decay_mask
 * (n) selects the parameters weight decay applies to; NULL = all of them. */
void optim_step(optim *o, float *params, const float *grads, const uint8_t *decay_mask, float lr);

/* Steps taken so far. */
long optim_steps(const optim *o);

/* The optimizer's state, for checkpoints: pointers into o (writable, valid
 * until optim_free).  m: AdamW's first moment or SGD's momentum buffer (NULL
 * for plain SGD); v: AdamW's second moment (NULL for SGD); each n floats. */
typedef struct optim_state {
    size_t n;
    float *m, *v;
} optim_state;
optim_state optim_state_view(optim *o);

/* Sets the step count (a resumed run: the moments are restored through
 * optim_state_view).  t < 0 is VIT_ERR_INVALID. */
vit_status optim_set_steps(optim *o, long t, vit_error *err);

/* L2 norm of grads (n), accumulated in double; reads only.  Not finite when
 * any gradient is inf or NaN (or the sum overflows). */
double optim_grad_norm(const float *grads, size_t n);

/* torch.nn.utils.clip_grad_norm_: scales grads so their L2 norm is at most
 * max_norm (coefficient max_norm / (norm + 1e-6), applied only if < 1).
 * Returns the norm before clipping.  Unlike torch (which multiplies every
 * gradient by the resulting NaN), a non-finite norm leaves grads untouched:
 * the caller checks the returned norm and skips the step (trainer.c does).
 * max_norm = INFINITY never scales. */
double optim_clip_grad_norm(float *grads, size_t n, double max_norm);

/* Cosine schedule with linear warm-up, stepped per iteration, over the whole
 * run (T = total_steps, W = warmup_steps):
 *   step < W:            lr * (step + 1) / W
 *   W <= step <= T - 1:  min_lr + (lr - min_lr) * 0.5 * (1 + cos(pi * (step - W) / (T - 1 - W)))
 * so the first step after warm-up runs at lr and the last step of the run
 * (T - 1) at exactly min_lr: the curve finishes inside the run instead of one
 * step after it.  A cosine phase of one step (T - 1 == W) is both: it runs
 * at min_lr when there was a warm-up (whose last step, W - 1, already ran at
 * lr), at lr when there was none (a one-step run, T == 1: nothing to anneal
 * from).  trainer.c caps W at T - 1, so a run's last step is at min_lr
 * whenever it has more than one step.
 */
typedef struct sched_config {
    double lr;
    double min_lr;
    long warmup_steps;
    long total_steps;
} sched_config;

/* Steps < 0 count as 0; steps >= total_steps give min_lr (so does every step
 * after warm-up when total_steps <= warmup_steps). */
double sched_lr(const sched_config *s, long step);

#endif
