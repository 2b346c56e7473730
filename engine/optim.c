/*
 * optim.c - AdamW, SGD with momentum, gradient clipping, the LR schedule.
 *
 * Each optimizer is one flat loop over the trainable arena (STYLE.md 3): the
 * state is one or two float arrays of the same length n, plus the step count.
 * The element-wise update mirrors torch.optim (1.13, single-tensor path)
 * operation by operation, so one step agrees with PyTorch to float rounding:
 *
 *   AdamW (torch.optim.AdamW)                 SGD (torch.optim.SGD)
 *     p *= 1 - lr*wd          (if decayed)      g' = g + wd*p      (if decayed)
 *     m  = b1*m + (1-b1)*g                      buf = g' at t=1, else mu*buf + g'
 *     v  = b2*v + (1-b2)*g*g                    p  -= lr * buf     (mu = 0: p -= lr*g')
 *     p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
 *
 * Scalar factors (bias corrections, step sizes) are computed in double and
 * rounded to float once, as PyTorch does with its Python-float scalars; the
 * per-element arithmetic is float, except that torch's `x.add_(y, alpha=a)`
 * rounds x + a*y once (its CPU kernel fuses it), which madd() reproduces.
 * The only reduction here, the gradient norm, is accumulated in double.
 */
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Optimizer state: the config, the step count and the moment buffers. */
struct optim {
    optim_config cfg;
    size_t n;   /* parameters */
    long t;     /* steps taken */
    float *m;   /* (n) AdamW first moment / SGD momentum buffer; NULL for plain SGD */
    float *v;   /* (n) AdamW second moment; NULL for SGD */
};

vit_status optim_create(const optim_config *cfg, size_t n, optim **out, vit_error *err)
{
    VIT_ASSERT(cfg && out);
    *out = NULL;
    if (cfg->kind != OPTIM_ADAMW && cfg->kind != OPTIM_SGD)
        return vit_error_set(err, VIT_ERR_INVALID, "unknown optimizer kind %d", (int)cfg->kind);
    if (!(cfg->weight_decay >= 0) || !isfinite(cfg->weight_decay))
        return vit_error_set(err, VIT_ERR_INVALID, "weight decay must be >= 0, got %g",
                             (double)cfg->weight_decay);
    if (cfg->kind == OPTIM_ADAMW) {
        if (!(cfg->beta1 >= 0 && cfg->beta1 < 1) || !(cfg->beta2 >= 0 && cfg->beta2 < 1))
            return vit_error_set(err, VIT_ERR_INVALID, "AdamW betas must be in [0, 1), got %g, %g",
                                 (double)cfg->beta1, (double)cfg->beta2);
        if (!(cfg->eps >= 0) || !isfinite(cfg->eps))
            return vit_error_set(err, VIT_ERR_INVALID, "AdamW eps must be >= 0, got %g",
                                 (double)cfg->eps);
    } else if (!(cfg->momentum >= 0 && cfg->momentum < 1)) {
        return vit_error_set(err, VIT_ERR_INVALID, "SGD momentum must be in [0, 1), got %g",
                             (double)cfg->momentum);
    }

    optim *o = calloc(1, sizeof *o);
    if (!o)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    o->cfg = *cfg;
    o->n = n;
    size_t len = n ? n : 1;
    int ok = 1;
    if (cfg->kind == OPTIM_ADAMW) {
        o->m = calloc(len, sizeof *o->m);
        o->v = calloc(len, sizeof *o->v);
        ok = o->m && o->v;
    } else if (cfg->momentum != 0) {
        o->m = calloc(len, sizeof *o->m);
        ok = o->m != NULL;
    }
    if (!ok) {
        optim_free(o);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for optimizer state of %zu floats",
                             n);
    }
    *out = o;
    return VIT_OK;
}

void optim_free(optim *o)
{
    if (!o)
        return;
    free(o->m);
    free(o->v);
    free(o);
}

long optim_steps(const optim *o)
{
    return o->t;
}

optim_state optim_state_view(optim *o)
{
    optim_state s = {.n = o->n, .m = o->m, .v = o->v};
    return s;
}

vit_status optim_set_steps(optim *o, long t, vit_error *err)
{
    if (t < 0)
        return vit_error_set(err, VIT_ERR_INVALID, "optimizer step count %ld is negative", t);
    o->t = t;
    return VIT_OK;
}

/* c + a*b rounded once (via double: the product of two floats is exact in
 * double), like torch's fused add(alpha=) kernel; plain `c + a*b` in float
 * can differ by one ulp. */
static inline float madd(float c, float a, float b)
{
    return (float)((double)c + (double)a * (double)b);
}

/* Is parameter i decayed?  A NULL mask decays every parameter (one torch
 * param group). */
static inline int decayed(const uint8_t *mask, size_t i)
{
    return mask == NULL || mask[i] != 0;
}

/* ref: torch/optim/adamw.py _single_tensor_adamw (1.13) */
static void adamw_step(optim *o, float *p, const float *g, const uint8_t *mask, float lr)
{
    const optim_config *c = &o->cfg;
    double t = (double)o->t;
    double bc1 = 1.0 - pow((double)c->beta1, t);
    double bc2_sqrt = sqrt(1.0 - pow((double)c->beta2, t));
    float decay = (float)(1.0 - (double)lr * (double)c->weight_decay);
    float b1 = c->beta1, b2 = c->beta2, one_b1 = (float)(1.0 - c->beta1),
          one_b2 = (float)(1.0 - c->beta2);
    float step_size = (float)((double)lr / bc1);
    float bc2s = (float)bc2_sqrt, eps = c->eps;
    int any_decay = c->weight_decay != 0;
    float *m = o->m, *v = o->v;
    for (size_t i = 0; i < o->n; i++) {
        if (any_decay && decayed(mask, i))
            p[i] *= decay;
        m[i] = madd(b1 * m[i], one_b1, g[i]);
        v[i] = b2 * v[i] + one_b2 * g[i] * g[i];
        float denom = sqrtf(v[i]) / bc2s + eps;
        p[i] -= step_size * (m[i] / denom);
    }
}

/* ref: torch/optim/sgd.py _single_tensor_sgd (1.13), dampening 0, no nesterov */
static void sgd_step(optim *o, float *p, const float *g, const uint8_t *mask, float lr)
{
    const optim_config *c = &o->cfg;
    float wd = c->weight_decay, mu = c->momentum;
    float *buf = o->m;
    int first = o->t == 1;
    for (size_t i = 0; i < o->n; i++) {
        float d = g[i];
        if (wd != 0 && decayed(mask, i))
            d = madd(d, wd, p[i]);
        if (buf) {
            buf[i] = first ? d : mu * buf[i] + d;
            d = buf[i];
        }
        p[i] = madd(p[i], -lr, d);
    }
}

void optim_step(optim *o, float *params, const float *grads, const uint8_t *decay_mask, float lr)
{
    VIT_ASSERT(o && (o->n == 0 || (params && grads)));
    o->t++;
    if (o->cfg.kind == OPTIM_ADAMW)
        adamw_step(o, params, grads, decay_mask, lr);
    else
        sgd_step(o, params, grads, decay_mask, lr);
}

double optim_grad_norm(const float *grads, size_t n)
{
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)grads[i] * (double)grads[i];
    return sqrt(sum);
}

/* ref: torch/nn/utils/clip_grad.py clip_grad_norm_ (norm_type 2) */
double optim_clip_grad_norm(float *grads, size_t n, double max_norm)
{
    double norm = optim_grad_norm(grads, n);
    /* A non-finite norm would make coef NaN (inf / inf with max_norm = inf)
     * or 0, and scaling would turn every finite gradient into NaN (or 0 *
     * inf = NaN): no clipping can repair such gradients, so leave them for
     * the caller to drop the step. */
    if (!isfinite(norm))
        return norm;
    double coef = max_norm / (norm + 1e-6);
    /* torch multiplies by min(coef, 1); skipping the no-op keeps the grads
     * bit-identical. */
    if (coef < 1.0) {
        float c = (float)coef;
        for (size_t i = 0; i < n; i++)
            grads[i] *= c;
    }
    return norm;
}

/* See optim.h.  Steps before 0 count as 0; steps at or past total_steps (and
 * every step after warm-up when total_steps <= warmup_steps, where there is
 * no cosine phase) give min_lr.  The cosine runs over the steps W..T-1, its
 * span T-1-W steps, so that step T-1 -- the last update the run makes --
 * lands on min_lr (dividing by T-W would leave the last step above it). */
double sched_lr(const sched_config *s, long step)
{
    long warmup = s->warmup_steps > 0 ? s->warmup_steps : 0;
    if (step < 0)
        step = 0;
    if (step < warmup)
        return s->lr * (double)(step + 1) / (double)warmup;
    if (step >= s->total_steps || s->total_steps <= warmup)
        return s->min_lr;
    long span = s->total_steps - 1 - warmup;
    if (span == 0) /* one step after warm-up: the run's last (optim.h) */
        return warmup > 0 ? s->min_lr : s->lr;
    double progress = (double)(step - warmup) / (double)span;
    return s->min_lr + (s->lr - s->min_lr) * 0.5 * (1.0 + cos(M_PI * progress));
}
