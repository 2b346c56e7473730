/*
 * test_optim.c - optimizers, gradient clipping and the LR schedule vs PyTorch.
 *
 * 1. Three consecutive steps of AdamW, SGD with momentum and plain SGD, with
 *    a per-step learning rate and weight decay on a mask only, against
 *    torch.optim (tests/data/golden/optim.safetensors, written by
 *    tools/reference/gen_optim_goldens.py; its header lists the settings).
 *    Plain SGD must also equal p - lr*g computed here, step by step.
 * 2. optim_clip_grad_norm vs torch.nn.utils.clip_grad_norm_, and the no-op
 *    case (norm under the limit: grads untouched, bit for bit); a non-finite
 *    norm (an inf or NaN gradient) leaves every gradient as it was, with
 *    max_norm = INFINITY (read the norm only) or a finite one.
 * 3. sched_lr: warm-up ramp, cosine midpoint, the last step (total - 1) ==
 *    min_lr, the edge cases total == warmup, a one-step cosine after a warm-up
 *    (min_lr: the run's last step) and total == 1 (lr).
 * 4. optim_create rejects nonsense configs with VIT_ERR_INVALID.
 */
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "test_util.h"

/* Hyper-parameters the goldens were made with (see gen_optim_goldens.py). */
static const float lr_adamw[3] = {1e-3f, 5e-4f, 2e-4f};
static const float lr_sgd[3] = {0.1f, 0.05f, 0.02f};

/* Loaded golden tensors; N parameters. */
typedef struct goldens {
    size_t n;
    float *params, *grads, *mask, *adamw, *sgd, *plain, *clip_in, *clip_out, *clip_norm;
} goldens;

static int load_goldens(goldens *g)
{
    char path[4096];
    vit_error err;
    st_file *f;
    if (st_open(test_path(path, sizeof path, "tests/data/golden/optim.safetensors"), &f, &err)) {
        fprintf(stderr, "%s\n", err.message);
        return 0;
    }
    size_t n3, k;
    g->params = test_read_tensor(f, "params", &g->n);
    g->grads = test_read_tensor(f, "grads", &n3);
    g->mask = test_read_tensor(f, "mask", &k);
    g->adamw = test_read_tensor(f, "adamw", NULL);
    g->sgd = test_read_tensor(f, "sgd", NULL);
    g->plain = test_read_tensor(f, "plain", NULL);
    g->clip_in = test_read_tensor(f, "clip_in", NULL);
    g->clip_out = test_read_tensor(f, "clip_out", NULL);
    g->clip_norm = test_read_tensor(f, "clip_norm", NULL);
    st_close(f);
    return g->params && g->grads && g->mask && g->adamw && g->sgd && g->plain && g->clip_in &&
           g->clip_out && g->clip_norm && n3 == 3 * g->n && k == g->n;
}

static void free_goldens(goldens *g)
{
    free(g->params);
    free(g->grads);
    free(g->mask);
    free(g->adamw);
    free(g->sgd);
    free(g->plain);
    free(g->clip_in);
    free(g->clip_out);
    free(g->clip_norm);
}

/* Runs 3 steps of cfg from the golden params and compares each step with
 * want (3, N).  Returns the number of elements that differ bit-wise from
 * torch after the last step (reported, not asserted). */
static int run_steps(const char *what, const goldens *g, const optim_config *cfg,
                     const uint8_t *mask, const float *lrs, const float *want, double atol,
                     double rtol)
{
    size_t n = g->n;
    float *p = malloc(n * sizeof *p);
    optim *o;
    vit_error err;
    VIT_ASSERT(p);
    memcpy(p, g->params, n * sizeof *p);
    CHECK(optim_create(cfg, n, &o, &err) == VIT_OK);
    CHECK(optim_steps(o) == 0);
    int differ = 0;
    for (int s = 0; s < 3; s++) {
        optim_step(o, p, g->grads + (size_t)s * n, mask, lrs[s]);
        char label[64];
        snprintf(label, sizeof label, "%s step %d", what, s + 1);
        check_close(label, p, want + (size_t)s * n, n, atol, rtol);
    }
    for (size_t i = 0; i < n; i++)
        differ += memcmp(&p[i], &want[2 * n + i], sizeof(float)) != 0;
    fprintf(stderr, "%s: %d of %zu values not bit-identical to torch\n", what, differ, n);
    CHECK(optim_steps(o) == 3);
    optim_free(o);
    free(p);
    return differ;
}

/* ---- 1. steps vs torch.optim -------------------------------------------- */

static void test_steps(const goldens *g)
{
    size_t n = g->n;
    uint8_t *mask = malloc(n);
    VIT_ASSERT(mask);
    size_t decayed = 0;
    for (size_t i = 0; i < n; i++)
        decayed += mask[i] = g->mask[i] != 0;
    CHECKF(decayed > n / 5 && decayed < n / 2, "mask decays %zu of %zu", decayed, n);

    /* Parameters are O(1), updates O(lr): 1e-6 relative is ~1 float ulp of
     * the parameter, several orders below one step's change. */
    optim_config adamw = {.kind = OPTIM_ADAMW, .weight_decay = 0.05f, .beta1 = 0.9f,
                          .beta2 = 0.999f, .eps = 1e-8f};
    run_steps("adamw", g, &adamw, mask, lr_adamw, g->adamw, 1e-7, 1e-6);

    optim_config sgd = {.kind = OPTIM_SGD, .weight_decay = 1e-4f, .momentum = 0.9f};
    run_steps("sgd momentum", g, &sgd, mask, lr_sgd, g->sgd, 1e-7, 1e-6);

    optim_config plain = {.kind = OPTIM_SGD};
    int differ = run_steps("plain sgd", g, &plain, mask, lr_sgd, g->plain, 1e-7, 1e-6);
    CHECKF(differ == 0, "plain SGD should be bit-identical to torch (%d differ)", differ);

    /* Plain SGD is p - lr*g, whatever the mask (wd 0): computed here in double
     * from the same float lr, then rounded once. */
    float *p = malloc(n * sizeof *p), *want = malloc(n * sizeof *want);
    VIT_ASSERT(p && want);
    memcpy(p, g->params, n * sizeof *p);
    memcpy(want, g->params, n * sizeof *want);
    optim *o;
    vit_error err;
    CHECK(optim_create(&plain, n, &o, &err) == VIT_OK);
    for (int s = 0; s < 3; s++) {
        const float *gr = g->grads + (size_t)s * n;
        optim_step(o, p, gr, NULL, lr_sgd[s]);
        for (size_t i = 0; i < n; i++)
            want[i] = (float)((double)want[i] - (double)lr_sgd[s] * (double)gr[i]);
    }
    CHECK(memcmp(p, want, n * sizeof *p) == 0);
    check_close("plain sgd == p - lr*g", p, want, n, 0, 0);
    optim_free(o);

    /* AdamW with weight_decay 0 ignores the mask; a NULL mask decays all. */
    optim_config a0 = adamw;
    a0.weight_decay = 0;
    float *q = malloc(n * sizeof *q);
    VIT_ASSERT(q);
    memcpy(p, g->params, n * sizeof *p);
    memcpy(q, g->params, n * sizeof *q);
    optim *o1, *o2;
    CHECK(optim_create(&a0, n, &o1, &err) == VIT_OK);
    CHECK(optim_create(&a0, n, &o2, &err) == VIT_OK);
    optim_step(o1, p, g->grads, mask, 1e-3f);
    optim_step(o2, q, g->grads, NULL, 1e-3f);
    CHECK(memcmp(p, q, n * sizeof *p) == 0);
    optim_free(o1);
    optim_free(o2);

    /* First AdamW step moves every parameter by ~lr (sign of g), plus decay. */
    memcpy(p, g->params, n * sizeof *p);
    CHECK(optim_create(&adamw, n, &o1, &err) == VIT_OK);
    optim_step(o1, p, g->grads, NULL, 1e-3f);
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double decayed_p = (double)g->params[i] * (1.0 - 1e-3 * 0.05);
        double step = decayed_p - p[i];
        double want_step = g->grads[i] > 0 ? 1e-3 : -1e-3;
        if (fabs(g->grads[i]) > 1e-4) /* eps matters below that */
            worst = fmax(worst, fabs(step - want_step));
    }
    CHECKF(worst < 1e-6, "first AdamW step is not lr*sign(g): worst %g", worst);
    optim_free(o1);

    free(q);
    free(p);
    free(want);
    free(mask);
}

/* ---- 2. gradient clipping ----------------------------------------------- */

static void test_clip(const goldens *g)
{
    size_t n = g->n;
    float *x = malloc(n * sizeof *x);
    VIT_ASSERT(x);
    memcpy(x, g->clip_in, n * sizeof *x);
    double norm = optim_clip_grad_norm(x, n, 1.0);
    CHECKF(fabs(norm - g->clip_norm[0]) <= 1e-6 * g->clip_norm[0], "norm %.9g, torch %.9g", norm,
           (double)g->clip_norm[0]);
    check_close("clip_grad_norm vs torch", x, g->clip_out, n, 1e-8, 1e-6);
    double after = 0;
    for (size_t i = 0; i < n; i++)
        after += (double)x[i] * x[i];
    CHECKF(fabs(sqrt(after) - 1.0) < 1e-5, "norm after clipping %.9g", sqrt(after));

    /* Under the limit: untouched, bit for bit. */
    memcpy(x, g->clip_in, n * sizeof *x);
    double n2 = optim_clip_grad_norm(x, n, 1e3);
    CHECK(fabs(n2 - norm) < 1e-12);
    CHECK(memcmp(x, g->clip_in, n * sizeof *x) == 0);

    /* A hand-made case: (3, 4) has norm 5; clip to 1 gives (0.6, 0.8). */
    float v[2] = {3, 4};
    CHECK(optim_clip_grad_norm(v, 2, 1.0) == 5.0);
    CHECKF(fabs(v[0] - 0.6) < 1e-6 && fabs(v[1] - 0.8) < 1e-6, "got (%g, %g)", (double)v[0],
           (double)v[1]);
    CHECK(optim_clip_grad_norm(v, 0, 1.0) == 0.0);

    /* Reading the norm with max_norm = INFINITY changes nothing. */
    memcpy(x, g->clip_in, n * sizeof *x);
    CHECK(fabs(optim_clip_grad_norm(x, n, INFINITY) - norm) < 1e-12);
    CHECK(memcmp(x, g->clip_in, n * sizeof *x) == 0);
    CHECK(fabs(optim_grad_norm(g->clip_in, n) - norm) < 1e-12);

    /* One inf (or NaN) gradient: torch's formula gives coef = inf/inf = NaN
     * (max_norm inf) or 0 (finite max_norm) and scaling would turn every
     * finite gradient into NaN.  The norm is reported as non-finite and the
     * gradients stay as they were, for the caller to drop the step. */
    const float bad[2] = {INFINITY, NAN};
    const double maxes[2] = {INFINITY, 1.0};
    for (int b = 0; b < 2; b++) {
        for (int k = 0; k < 2; k++) {
            memcpy(x, g->clip_in, n * sizeof *x);
            x[7] = bad[b];
            double nb = optim_clip_grad_norm(x, n, maxes[k]);
            int finite_kept = 1;
            for (size_t i = 0; i < n; i++)
                if (i != 7 && memcmp(&x[i], &g->clip_in[i], sizeof *x) != 0)
                    finite_kept = 0;
            CHECKF(!isfinite(nb) && finite_kept,
                   "gradient %g, max_norm %g: norm %g, other gradients %s", (double)bad[b],
                   maxes[k], nb, finite_kept ? "kept" : "changed (e.g. to NaN)");
            CHECK(!isfinite(optim_grad_norm(x, n)));
        }
    }
    free(x);
}

/* ---- 3. schedule -------------------------------------------------------- */

static void check_lr(const sched_config *s, long step, double want)
{
    double got = sched_lr(s, step);
    CHECKF(fabs(got - want) <= 1e-12 + 1e-12 * fabs(want),
           "lr %g min %g warmup %ld total %ld step %ld: got %.15g want %.15g", s->lr, s->min_lr,
           s->warmup_steps, s->total_steps, step, got, want);
}

static void test_sched(void)
{
    /* 111 steps: warm-up 0..9, cosine over 10..110 (a span of 100 steps) */
    sched_config s = {.lr = 1e-3, .min_lr = 1e-5, .warmup_steps = 10, .total_steps = 111};
    check_lr(&s, 0, 1e-4);             /* (0+1)/10 */
    check_lr(&s, 4, 5e-4);
    check_lr(&s, 9, 1e-3);             /* last warm-up step reaches lr */
    check_lr(&s, 10, 1e-3);            /* cosine starts at lr */
    check_lr(&s, 60, 1e-5 + (1e-3 - 1e-5) * 0.5); /* midpoint */
    check_lr(&s, 35, 1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + cos(M_PI * 0.25)));
    check_lr(&s, 110, 1e-5);           /* the run's last step: min_lr */
    check_lr(&s, 111, 1e-5);           /* past it: stays at min_lr */
    check_lr(&s, 500, 1e-5);
    check_lr(&s, -3, 1e-4);            /* before the start: as step 0 */
    /* monotone: up during warm-up, down after */
    for (long i = 1; i < 111; i++) {
        double a = sched_lr(&s, i - 1), b = sched_lr(&s, i);
        if (i < 10)
            CHECKF(b > a, "warm-up not increasing at %ld", i);
        else if (i > 10)
            CHECKF(b < a, "cosine not decreasing at %ld", i);
    }

    /* No warm-up: starts at lr, the last of 5 steps at min_lr. */
    sched_config nw = {.lr = 0.1, .min_lr = 0, .warmup_steps = 0, .total_steps = 5};
    check_lr(&nw, 0, 0.1);
    check_lr(&nw, 2, 0.05);
    check_lr(&nw, 4, 0.0);
    check_lr(&nw, 5, 0.0);

    /* A cosine phase of one step (total - 1 == warmup) is the run's last
     * step: min_lr (the warm-up's last step already ran at lr). */
    sched_config c1 = {.lr = 1.0, .min_lr = 0.1, .warmup_steps = 3, .total_steps = 4};
    check_lr(&c1, 2, 1.0);
    check_lr(&c1, 3, 0.1);
    check_lr(&c1, 4, 0.1);

    /* total == warmup: the run is all warm-up; nothing after it but min_lr. */
    sched_config eq = {.lr = 1.0, .min_lr = 0.1, .warmup_steps = 5, .total_steps = 5};
    check_lr(&eq, 0, 0.2);
    check_lr(&eq, 4, 1.0);
    check_lr(&eq, 5, 0.1);
    CHECK(isfinite(sched_lr(&eq, 6)));

    /* total 1: the single step runs at lr, with or without a warm-up step. */
    sched_config one = {.lr = 0.5, .min_lr = 0.0, .warmup_steps = 0, .total_steps = 1};
    check_lr(&one, 0, 0.5);
    check_lr(&one, 1, 0.0);
    one.warmup_steps = 1;
    check_lr(&one, 0, 0.5);
}

/* ---- 4. bad configs ----------------------------------------------------- */

static void test_bad_config(void)
{
    optim *o = (optim *)&o; /* poison: must be reset */
    vit_error err = {0};
    optim_config bad[] = {
        {.kind = OPTIM_ADAMW, .weight_decay = -1, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f},
        {.kind = OPTIM_ADAMW, .beta1 = 1.0f, .beta2 = 0.999f, .eps = 1e-8f},
        {.kind = OPTIM_ADAMW, .beta1 = 0.9f, .beta2 = NAN, .eps = 1e-8f},
        {.kind = OPTIM_SGD, .momentum = -0.5f},
        {.kind = (optim_kind)7},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        vit_status s = optim_create(&bad[i], 10, &o, &err);
        fprintf(stderr, "  bad config %zu -> %s: %s\n", i, vit_status_name(s), err.message);
        CHECK(s == VIT_ERR_INVALID && o == NULL && err.message[0]);
    }
    /* zero parameters is fine */
    optim_config ok = {.kind = OPTIM_ADAMW, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
    CHECK(optim_create(&ok, 0, &o, &err) == VIT_OK);
    optim_step(o, NULL, NULL, NULL, 1e-3f);
    CHECK(optim_steps(o) == 1);
    optim_free(o);
    optim_free(NULL);
}

int main(void)
{
    goldens g = {0};
    if (!load_goldens(&g)) {
        fprintf(stderr, "cannot load tests/data/golden/optim.safetensors\n");
        free_goldens(&g);
        return 1;
    }
    test_steps(&g);
    test_clip(&g);
    test_sched();
    test_bad_config();
    free_goldens(&g);
    return check_result();
}
