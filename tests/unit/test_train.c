/*
 * test_train.c - the backward pass: every op against finite differences, and
 * whole-model gradients against PyTorch autograd goldens
 * (tools/reference/gen_grad_goldens.py) for bitfit, linear and full: the
 * loss, the logits, every gradient the method trains (a golden lacking one
 * fails) and the gradient with respect to the input images ("dinput").
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "gemm.h"
#include "ops.h"
#include "randinit.h"
#include "safetensors.h"
#include "test_util.h"
#include "vit.h"
#include "vit_train.h"

/* ---- finite differences on single ops ----
 * Each op is checked through the scalar L = sum(out * r) for a fixed random r,
 * so dL/dout = r.  Central differences of the float kernel, summed in double,
 * with a step large enough to rise above float rounding. */

typedef struct fd_case {
    const char *name;
    float *x;              /* perturbed input */
    size_t n;
    const float *analytic; /* dL/dx from the backward kernel */
    double (*loss)(void *ctx);
    void *ctx;
} fd_case;

static void fd_check(const fd_case *c, double step, double tol)
{
    double worst = 0;
    size_t worst_i = 0;
    double scale = 0;
    for (size_t i = 0; i < c->n; i++)
        scale = fmax(scale, fabs(c->analytic[i]));
    for (size_t i = 0; i < c->n; i++) {
        float saved = c->x[i];
        c->x[i] = saved + (float)step;
        double up = c->loss(c->ctx);
        c->x[i] = saved - (float)step;
        double down = c->loss(c->ctx);
        c->x[i] = saved;
        double numeric = (up - down) / (2 * step);
        double err = fabs(numeric - c->analytic[i]) / (scale + 1e-12);
        if (err > worst) {
            worst = err;
            worst_i = i;
        }
    }
    CHECKF(worst <= tol, "%s: finite differences disagree at [%zu] by %.3g of max |grad| %.3g",
           c->name, worst_i, worst, scale);
    fprintf(stderr, "%s: finite differences ok, worst %.2g of max |grad|\n", c->name, worst);
}

static double dot(const float *a, const float *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

enum { LN_ROWS = 3, LN_C = 12 };
typedef struct ln_ctx {
    float x[LN_ROWS * LN_C], w[LN_C], b[LN_C], r[LN_ROWS * LN_C], out[LN_ROWS * LN_C];
} ln_ctx;

static double ln_loss(void *p)
{
    ln_ctx *c = p;
    layernorm_forward(c->out, NULL, NULL, c->x, c->w, c->b, LN_ROWS, LN_C, 1e-5f);
    return dot(c->out, c->r, LN_ROWS * LN_C);
}

static void test_layernorm_fd(void)
{
    ln_ctx c;
    randinit_fill(c.x, LN_ROWS * LN_C, "x", 1, 2.0, 0.3);
    randinit_fill(c.w, LN_C, "w", 1, 0.5, 1.0);
    randinit_fill(c.b, LN_C, "b", 1, 0.5, 0.0);
    randinit_fill(c.r, LN_ROWS * LN_C, "r", 1, 1.0, 0.0);
    float mean[LN_ROWS], rstd[LN_ROWS], dx[LN_ROWS * LN_C] = {0}, dw[LN_C] = {0}, db[LN_C] = {0};
    layernorm_forward(c.out, mean, rstd, c.x, c.w, c.b, LN_ROWS, LN_C, 1e-5f);
    layernorm_backward(dx, dw, db, c.r, c.x, mean, rstd, c.w, LN_ROWS, LN_C);
    fd_check(&(fd_case){"layernorm dx", c.x, LN_ROWS * LN_C, dx, ln_loss, &c}, 1e-2, 2e-3);
    fd_check(&(fd_case){"layernorm dw", c.w, LN_C, dw, ln_loss, &c}, 1e-2, 2e-3);
    fd_check(&(fd_case){"layernorm db", c.b, LN_C, db, ln_loss, &c}, 1e-2, 2e-3);
}

enum { ACT_N = 64 };
typedef struct act_ctx {
    float x[ACT_N], r[ACT_N], out[ACT_N];
    int quick;
} act_ctx;

static double act_loss(void *p)
{
    act_ctx *c = p;
    if (c->quick)
        quick_gelu_forward(c->out, c->x, ACT_N);
    else
        gelu_forward(c->out, c->x, ACT_N);
    return dot(c->out, c->r, ACT_N);
}

static void test_activation_fd(void)
{
    for (int quick = 0; quick < 2; quick++) {
        act_ctx c = {.quick = quick};
        randinit_fill(c.x, ACT_N, "x", 2, 4.0, 0.0);
        randinit_fill(c.r, ACT_N, "r", 2, 1.0, 0.0);
        float dx[ACT_N];
        if (quick)
            quick_gelu_backward(dx, c.r, c.x, ACT_N);
        else
            gelu_backward(dx, c.r, c.x, ACT_N);
        fd_check(&(fd_case){quick ? "quick_gelu" : "gelu", c.x, ACT_N, dx, act_loss, &c}, 1e-2,
                 2e-3);
    }
}

enum { AT_B = 2, AT_N = 5, AT_C = 8, AT_NH = 2 };
typedef struct attn_ctx {
    float qkv[AT_B * AT_N * 3 * AT_C], r[AT_B * AT_N * AT_C], out[AT_B * AT_N * AT_C];
    float probs[AT_B * AT_NH * AT_N * AT_N];
} attn_ctx;

static double attn_loss(void *p)
{
    attn_ctx *c = p;
    attention_forward(c->out, c->probs, AT_N * AT_N, c->qkv, AT_B, AT_N, AT_C, AT_NH);
    return dot(c->out, c->r, AT_B * AT_N * AT_C);
}

static void test_attention_fd(void)
{
    attn_ctx c;
    randinit_fill(c.qkv, sizeof c.qkv / sizeof(float), "qkv", 3, 2.0, 0.0);
    randinit_fill(c.r, sizeof c.r / sizeof(float), "r", 3, 1.0, 0.0);
    attn_loss(&c);
    float dqkv[AT_B * AT_N * 3 * AT_C], scratch[2 * AT_N * AT_N];
    attention_backward(dqkv, scratch, c.r, c.qkv, AT_B, AT_N, AT_C, AT_NH);
    fd_check(&(fd_case){"attention dqkv", c.qkv, sizeof c.qkv / sizeof(float), dqkv, attn_loss, &c},
             1e-2, 3e-3);
}

enum { LIN_M = 4, LIN_N = 6, LIN_K = 5 };
typedef struct lin_ctx {
    float x[LIN_M * LIN_K], w[LIN_N * LIN_K], b[LIN_N], r[LIN_M * LIN_N], out[LIN_M * LIN_N];
} lin_ctx;

static double lin_loss(void *p)
{
    lin_ctx *c = p;
    linear_forward(c->out, c->x, c->w, c->b, LIN_M, LIN_N, LIN_K);
    return dot(c->out, c->r, LIN_M * LIN_N);
}

static void test_linear_fd(void)
{
    lin_ctx c;
    randinit_fill(c.x, LIN_M * LIN_K, "x", 4, 1.0, 0.0);
    randinit_fill(c.w, LIN_N * LIN_K, "w", 4, 1.0, 0.0);
    randinit_fill(c.b, LIN_N, "b", 4, 1.0, 0.0);
    randinit_fill(c.r, LIN_M * LIN_N, "r", 4, 1.0, 0.0);
    float dx[LIN_M * LIN_K], dw[LIN_N * LIN_K] = {0}, db[LIN_N] = {0};
    linear_backward(dx, dw, db, c.r, c.x, c.w, LIN_M, LIN_N, LIN_K);
    fd_check(&(fd_case){"linear dx", c.x, LIN_M * LIN_K, dx, lin_loss, &c}, 1e-2, 1e-3);
    fd_check(&(fd_case){"linear dw", c.w, LIN_N * LIN_K, dw, lin_loss, &c}, 1e-2, 1e-3);
    fd_check(&(fd_case){"linear db", c.b, LIN_N, db, lin_loss, &c}, 1e-2, 1e-3);
}

enum { CE_B = 3, CE_K = 7 };
typedef struct ce_ctx {
    float z[CE_B * CE_K];
    int y[CE_B];
    float ls;
} ce_ctx;

static double ce_loss(void *p)
{
    ce_ctx *c = p;
    float scratch[CE_B * CE_K];
    return vit_cross_entropy(c->z, c->y, CE_B, CE_K, c->ls, scratch);
}

static void test_cross_entropy_fd(void)
{
    for (int smooth = 0; smooth < 2; smooth++) {
        ce_ctx c = {.y = {2, 0, 6}, .ls = smooth ? 0.1f : 0.0f};
        randinit_fill(c.z, CE_B * CE_K, "z", 5, 3.0, 0.0);
        float dz[CE_B * CE_K];
        vit_cross_entropy(c.z, c.y, CE_B, CE_K, c.ls, dz);
        fd_check(&(fd_case){smooth ? "cross-entropy (smoothing 0.1)" : "cross-entropy", c.z,
                            CE_B * CE_K, dz, ce_loss, &c},
                 1e-2, 1e-3);
    }
    /* a huge logit must not overflow */
    float z[3] = {1000.0f, 0.0f, -1000.0f}, dz[3];
    int y = 0;
    double loss = vit_cross_entropy(z, &y, 1, 3, 0.0f, dz);
    CHECKF(isfinite(loss) && loss < 1e-6 && fabs(dz[0]) < 1e-6, "stable CE: loss %g", loss);
}

/* ---- whole model vs PyTorch ---- */

/* Reads the config a golden file carries in __metadata__["config"]. */
static int golden_config(const st_file *f, vit_config *cfg)
{
    json_error_t jerr;
    const char *text = st_metadata(f, "config");
    json_t *j = text ? json_loads(text, 0, &jerr) : NULL;
    if (!j)
        return 0;
    vit_error err;
    vit_config_preset("vit-tiny", cfg, &err);
#define INT(key, field) cfg->field = (int)json_integer_value(json_object_get(j, key))
    INT("image_size", image_size);
    INT("patch_size", patch_size);
    INT("width", width);
    INT("depth", depth);
    INT("heads", heads);
    INT("mlp_dim", mlp_dim);
    INT("num_classes", num_classes);
    INT("proj_dim", proj_dim);
#undef INT
    cfg->ln_eps = (float)json_number_value(json_object_get(j, "ln_eps"));
    const char *act = json_string_value(json_object_get(j, "act"));
    const char *pool = json_string_value(json_object_get(j, "pool"));
    cfg->act = act && strcmp(act, "quick_gelu") == 0 ? VIT_ACT_QUICK_GELU : VIT_ACT_GELU;
    cfg->pool = pool && strcmp(pool, "mean") == 0 ? VIT_POOL_MEAN : VIT_POOL_CLS;
    cfg->ln_pre = json_is_true(json_object_get(j, "ln_pre"));
    cfg->patch_bias = json_is_true(json_object_get(j, "patch_bias"));
    cfg->preprocess.crop_h = cfg->preprocess.crop_w = cfg->image_size;
    json_decref(j);
    return 1;
}

static long meta_long(const st_file *f, const char *key)
{
    const char *v = st_metadata(f, key);
    return v ? strtol(v, NULL, 10) : -1;
}

/* The input gradient (vit_input_grad) against the golden's "dinput", which
 * every "grads": "all" golden holds; a linear probe has none and must say so. */
static void check_input_grad(const char *rel, const st_file *f, const vit_model *m,
                             const vit_train_state *s, vit_method method, int B, size_t per_image)
{
    char what[256];
    vit_error err = {0};
    snprintf(what, sizeof what, "%s [%s] dinput", rel, vit_method_name(method));
    float *got = malloc(per_image * B * sizeof *got);
    VIT_ASSERT(got);
    vit_status st = vit_input_grad(m, s, got, &err);
    if (method == VIT_METHOD_LINEAR) {
        CHECKF(st == VIT_ERR_INVALID, "%s: a linear probe's backward gives no input gradient", what);
        free(got);
        return;
    }
    CHECKF(st == VIT_OK, "%s: %s", what, err.message);
    const char *grads = st_metadata(f, "grads");
    const st_tensor *t = st_find(f, "dinput");
    CHECKF(t || !grads || strcmp(grads, "all") != 0, "%s: an \"all\" golden without dinput", what);
    if (st == VIT_OK && t) {
        size_t n = 0;
        float *want = test_read_tensor(f, "dinput", &n);
        CHECKF(want && n == per_image * B && t->ndim == 4 && t->shape[1] == 3 &&
                   t->shape[2] == m->cfg.image_size && t->shape[3] == m->cfg.image_size,
               "%s: shape", what);
        double max_ref = 0;
        for (size_t j = 0; want && j < n; j++)
            max_ref = fmax(max_ref, fabs(want[j]));
        if (want && n == per_image * B)
            check_close(what, got, want, n, 1e-4 * max_ref + 1e-9, 1e-3);
        free(want);
    }
    free(got);
}

/* Runs forward + CE + backward under `method` and compares with the golden's
 * loss, logits, every gradient of the parameters the method trains (all of
 * them must be there) and its dinput.  rel: under the source root, or an
 * absolute path. */
static void check_grad_golden(const char *rel, vit_method method, double rtol)
{
    char path[4096];
    vit_error err = {0};
    st_file *f = NULL;
    const char *full = rel[0] == '/' ? rel : test_path(path, sizeof path, rel);
    CHECKF(st_open(full, &f, &err) == VIT_OK, "%s", err.message);
    if (!f)
        return;
    vit_config cfg;
    json_error_t jerr;
    json_t *labels_json = json_loads(st_metadata(f, "labels") ? st_metadata(f, "labels") : "", 0,
                                     &jerr);
    long seed = meta_long(f, "seed");
    const char *ls_text = st_metadata(f, "label_smoothing");
    float ls = ls_text ? strtof(ls_text, NULL) : 0.0f;
    int B = (int)json_array_size(labels_json);
    CHECKF(golden_config(f, &cfg) && seed >= 0 && B > 0, "%s: metadata", rel);
    vit_model *m = NULL;
    if (B > 0 && vit_model_create(&cfg, &m, &err) != VIT_OK)
        CHECKF(0, "%s: %s", rel, err.message);
    if (!m) {
        json_decref(labels_json);
        st_close(f);
        return;
    }
    vit_model_randomize(m, (uint64_t)seed);
    int K = cfg.num_classes;
    size_t per_image = (size_t)3 * cfg.image_size * cfg.image_size;
    float *images = malloc(per_image * B * sizeof *images);
    float *logits = malloc((size_t)B * K * sizeof *logits);
    float *dlogits = malloc((size_t)B * K * sizeof *dlogits);
    float *gtrain = calloc(m->trainable_len, sizeof *gtrain);
    float *gfrozen = method == VIT_METHOD_FULL ? calloc(m->frozen_len, sizeof *gfrozen) : NULL;
    int labels[64];
    for (int b = 0; b < B && b < 64; b++)
        labels[b] = (int)json_integer_value(json_array_get(labels_json, (size_t)b));
    randinit_fill(images, per_image * B, "input", (uint64_t)seed, 1.0, 0.0);
    vit_train_state *s = NULL;
    char what[256];
    if (vit_train_state_create(m, method, B, 2, &s, &err) == VIT_OK &&
        vit_train_forward(m, s, images, B, logits, &err) == VIT_OK) {
        float loss = (float)vit_cross_entropy(logits, labels, B, K, ls, dlogits);
        size_t n = 0;
        float *want = test_read_tensor(f, "logits", &n);
        snprintf(what, sizeof what, "%s [%s] logits", rel, vit_method_name(method));
        CHECKF(want && n == (size_t)B * K, "%s: golden has no logits of (%d, %d)", what, B, K);
        if (want && n == (size_t)B * K)
            check_close(what, logits, want, n, 1e-4, 1e-4);
        free(want);
        want = test_read_tensor(f, "loss", &n);
        snprintf(what, sizeof what, "%s [%s] loss", rel, vit_method_name(method));
        CHECKF(want && n == 1, "%s: golden has no loss", what);
        if (want && n == 1)
            check_close(what, &loss, want, 1, 1e-5, 1e-5);
        free(want);
        CHECKF(vit_backward(m, s, dlogits, B, gtrain, gfrozen, &err) == VIT_OK, "%s", err.message);
        /* every gradient the method trains must be in the golden: a missing
         * one is a broken golden, never a reason to compare less */
        int compared = 0;
        for (size_t i = 0; i < m->num_params; i++) {
            const vit_param *p = &m->params[i];
            bool trained = method == VIT_METHOD_FULL ||
                           (method == VIT_METHOD_BITFIT && p->trainable) ||
                           strncmp(p->name, "head.", 5) == 0;
            char name[96];
            snprintf(name, sizeof name, "grad.%s", p->name);
            snprintf(what, sizeof what, "%s [%s] %s", rel, vit_method_name(method), p->name);
            if (!trained)
                continue;
            if (!st_find(f, name)) {
                CHECKF(0, "%s: the golden has no '%s'", what, name);
                continue;
            }
            float *g = test_read_tensor(f, name, &n);
            float *got = p->trainable ? gtrain + (p->data - m->trainable)
                                      : gfrozen + (p->data - m->frozen);
            double max_ref = 0;
            for (size_t j = 0; g && j < n; j++)
                max_ref = fmax(max_ref, fabs(g[j]));
            CHECKF(g && n == p->numel, "%s: size", what);
            if (g && n == p->numel)
                check_close(what, got, g, n, 1e-4 * max_ref + 1e-9, rtol);
            free(g);
            compared++;
        }
        CHECKF(compared > 0, "%s: no gradients compared", rel);
        /* ... and every gradient in the golden must belong to a parameter */
        for (size_t i = 0; i < st_count(f); i++) {
            const char *tn = st_tensor_at(f, i)->name;
            CHECKF(strncmp(tn, "grad.", 5) != 0 || vit_model_find(m, tn + 5),
                   "%s: golden tensor '%s' names no parameter of the model", rel, tn);
        }
        check_input_grad(rel, f, m, s, method, B, per_image);
        /* parameters a method does not train get no gradient at all */
        if (method == VIT_METHOD_LINEAR) {
            size_t head = vit_model_bias_count(m);
            for (size_t j = 0; j < head; j++)
                if (gtrain[j] != 0.0f) {
                    CHECKF(0, "linear probe touched bias gradient %zu", j);
                    break;
                }
        }
    } else {
        CHECKF(0, "%s: %s", rel, err.message);
    }
    vit_train_state_free(s);
    free(images);
    free(logits);
    free(dlogits);
    free(gtrain);
    free(gfrozen);
    json_decref(labels_json);
    vit_model_free(m);
    st_close(f);
}

/* ---- the golden comparison itself must fail on a broken golden ---- */

/* How to derive a broken golden from a good one. */
typedef struct golden_edit {
    const char *drop;    /* tensor left out */
    const char *nudge;   /* tensor whose largest value moves by 1% */
} golden_edit;

/* Copies golden src to dst with one edit. */
static void write_golden(const char *src, const char *dst, const golden_edit *e)
{
    st_file *f;
    vit_error err;
    VIT_ASSERT(st_open(src, &f, &err) == VIT_OK);
    st_writer *w = st_writer_create();
    VIT_ASSERT(w);
    for (size_t i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_tensor_at(f, i);
        if (e->drop && strcmp(t->name, e->drop) == 0)
            continue;
        float *data = malloc((t->numel ? t->numel : 1) * sizeof *data);
        VIT_ASSERT(data && st_read_f32(f, t, data, &err) == VIT_OK);
        if (e->nudge && strcmp(t->name, e->nudge) == 0) {
            size_t big = 0;
            for (size_t j = 1; j < t->numel; j++)
                if (fabsf(data[j]) > fabsf(data[big]))
                    big = j;
            data[big] *= 1.01f;
        }
        VIT_ASSERT(st_writer_add_f32(w, t->name, t->ndim, t->shape, data, &err) == VIT_OK);
        free(data);
    }
    for (size_t i = 0; i < st_metadata_count(f); i++) {
        const char *k, *v;
        VIT_ASSERT(st_metadata_at(f, i, &k, &v));
        VIT_ASSERT(st_writer_set_metadata(w, k, v, &err) == VIT_OK);
    }
    VIT_ASSERT(st_writer_save(w, dst, &err) == VIT_OK);
    st_writer_free(w);
    st_close(f);
}

/* check_grad_golden on a broken copy of grad_tiny_vitb must count a failure
 * (which is then taken back, so that only this check decides). */
static void expect_golden_rejected(const char *why, const golden_edit *e, vit_method method)
{
    char src[4096], dst[] = "/tmp/vitfit-test-golden-XXXXXX";
    int fd = mkstemp(dst);
    VIT_ASSERT(fd >= 0);
    close(fd);
    write_golden(test_path(src, sizeof src, "tests/data/golden/grad_tiny_vitb.safetensors"), dst, e);
    fprintf(stderr, "broken golden (%s): the failure below is expected\n", why);
    int failures = check_failures, count = check_count;
    check_grad_golden(dst, method, 1e-3);
    int rejected = check_failures > failures;
    check_failures = failures;
    check_count = count;
    CHECKF(rejected, "a golden with %s passed [%s]", why, vit_method_name(method));
    unlink(dst);
}

static void test_broken_goldens(void)
{
    expect_golden_rejected("a bias gradient missing",
                           &(golden_edit){.drop = "grad.blocks.1.mlp.fc1.bias"}, VIT_METHOD_BITFIT);
    expect_golden_rejected("a weight gradient missing",
                           &(golden_edit){.drop = "grad.blocks.0.attn.proj.weight"}, VIT_METHOD_FULL);
    expect_golden_rejected("head.weight's gradient missing",
                           &(golden_edit){.drop = "grad.head.weight"}, VIT_METHOD_LINEAR);
    expect_golden_rejected("no logits", &(golden_edit){.drop = "logits"}, VIT_METHOD_LINEAR);
    expect_golden_rejected("no loss", &(golden_edit){.drop = "loss"}, VIT_METHOD_LINEAR);
    expect_golden_rejected("no dinput", &(golden_edit){.drop = "dinput"}, VIT_METHOD_BITFIT);
    expect_golden_rejected("dinput off by 1%", &(golden_edit){.nudge = "dinput"},
                           VIT_METHOD_FULL);
    expect_golden_rejected("a gradient off by 1%",
                           &(golden_edit){.nudge = "grad.blocks.0.norm1.bias"}, VIT_METHOD_BITFIT);
}

int main(void)
{
    vit_set_threads(2);
    test_layernorm_fd();
    test_activation_fd();
    test_attention_fd();
    test_linear_fd();
    test_cross_entropy_fd();
    static const vit_method all[] = {VIT_METHOD_FULL, VIT_METHOD_BITFIT, VIT_METHOD_LINEAR};
    for (size_t i = 0; i < 3; i++) {
        check_grad_golden("tests/data/golden/grad_tiny_vitb.safetensors", all[i], 1e-3);
        check_grad_golden("tests/data/golden/grad_tiny_clip.safetensors", all[i], 1e-3);
        check_grad_golden("tests/data/golden/grad_tiny_meanpool.safetensors", all[i], 1e-3);
    }
    check_grad_golden("tests/data/golden/grad_tiny_vitb_ls.safetensors", VIT_METHOD_BITFIT, 1e-3);
    check_grad_golden("tests/data/golden/grad_vitb16.safetensors", VIT_METHOD_BITFIT, 1e-3);
    test_broken_goldens();
    return check_result();
}
