/*
 * vit_train.c - training forward (keeping activations), cross-entropy and the
 * backward pass for bitfit, linear and full fine-tuning (see vit_train.h).
 *
 * Legend: B batch, N tokens, GG patches, P patch, C width, NH heads, M mlp
 * width, F feature width, K classes.
 *
 * The forward pass is vit_forward_acts with per-block slots; this file only
 * decides which slots exist.  Backward walks the same graph in reverse; each
 * parameter's gradient is found by the parameter's offset in its arena, so a
 * frozen parameter has no gradient unless the caller passed gfrozen.  A
 * class-token model's last block ran on the class rows only past its keys
 * and values, and its backward does the same (block_backward_last_class).
 *
 * Two paths, as for inference (vit_forward.c).  On AVX-512 CPUs the state
 * owns a thread team and both passes run on the packed kernels: the input
 * gradients dx = dy W as gemm_packed_raw with W (n, k) as the B operand in
 * its stored orientation (packed per call by the members that multiply it:
 * O(n k) against the product's O(B N n k)), weight gradients (full) as dy^T
 * x with A packed from its transposed source, bias gradients as column sums
 * split by columns, LayerNorm, the activation and attention split by rows or
 * by (image, head).  No OpenBLAS call runs in a step there.  Elsewhere
 * (VITFIT_NO_AVX512, CPUs without AVX-512, VIT_PATH_PORTABLE) the OpenBLAS
 * path with OpenBLAS's own threads (vit_set_threads) runs.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "gemm.h"
#include "ops.h"
#include "ops_avx512.h"
#include "vit_impl.h"
#include "vit_train.h"

struct vit_train_state {
    vit_method method;
    vit_path path;        /* VIT_PATH_PACKED or VIT_PATH_PORTABLE */
    vit_team *team;       /* the packed path's threads, else NULL */
    const float **row_bias; /* (max_batch) */
    int max_batch;
    int batch;            /* rows of the last forward */
    int dpatch_batch;     /* rows whose patch-embedding output gradient dln holds (0: none) */
    vit_acts acts;
    /* backward scratch */
    float *dx;            /* (B,N,C) gradient of the residual stream */
    float *dln;           /* (B,N,C) gradient of a LayerNorm output */
    float *dattn;         /* (B,N,C) */
    float *dqkv;          /* (B,N,3C) */
    float *dh;            /* (B,N,M) */
    float *dprobs;        /* (2,N,N) attention recompute + its gradient */
    float *dfeat;         /* (B,F) */
    float *dpooled_ln;    /* (B,C) */
    float *dpooled;       /* (B,C) */
    float **out_rows;     /* (max_batch) row pointers into the caller's logits */
    float *block;         /* one allocation for everything above */
    size_t floats;        /* its size */
};

const char *vit_method_name(vit_method method)
{
    switch (method) {
    case VIT_METHOD_BITFIT: return "bitfit";
    case VIT_METHOD_LINEAR: return "linear";
    case VIT_METHOD_FULL: return "full";
    }
    return "?";
}

int vit_method_parse(const char *name, vit_method *out)
{
    static const vit_method all[] = {VIT_METHOD_BITFIT, VIT_METHOD_LINEAR, VIT_METHOD_FULL};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(name, vit_method_name(all[i])) == 0) {
            *out = all[i];
            return 1;
        }
    return 0;
}

/* The state's buffers share one allocation, so ASan alone would not see one
 * overflow into the next (as vit_forward.c's states): under ASan each buffer
 * is followed by a poisoned gap. */
#if defined(__SANITIZE_ADDRESS__)
#define TRAIN_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TRAIN_ASAN 1
#endif
#endif
#ifdef TRAIN_ASAN
#include <sanitizer/asan_interface.h>
enum { TRAIN_GAP = 16 }; /* floats */
#else
enum { TRAIN_GAP = 0 };
#endif

/* Floats a buffer takes in the block: 64-byte aligned, an ASan gap after. */
static size_t slot_floats(size_t n)
{
    return ((n + 15) & ~(size_t)15) + TRAIN_GAP;
}

/* A planned buffer: where its pointer goes and how many floats it needs. */
typedef struct plan_entry {
    float **slot;
    size_t n;
} plan_entry;

typedef struct plan {
    plan_entry *items;
    size_t count, cap;
    int failed;
} plan;

static void plan_add(plan *p, float **slot, size_t n)
{
    if (p->failed)
        return;
    if (p->count == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        plan_entry *items = realloc(p->items, cap * sizeof *items);
        if (!items) {
            p->failed = 1;
            return;
        }
        p->items = items;
        p->cap = cap;
    }
    p->items[p->count++] = (plan_entry){slot, n};
}

vit_status vit_train_state_create(const vit_model *m, vit_method method, int max_batch,
                                  int threads, vit_train_state **out, vit_error *err)
{
    return vit_train_state_create_path(m, method, max_batch, threads, VIT_PATH_AUTO, out, err);
}

static size_t max_size(size_t a, size_t b)
{
    return a > b ? a : b;
}

/* Floats of the packed path's GEMM scratch: every product of a step through
 * gemm_packed_raw (the forward's per-call packing when m has no packed
 * weights, the backward's dx, and full's dW) or gemm_packed. */
static size_t train_gemm_floats(const vit_config *c, vit_method method, int B)
{
    int N = vit_config_tokens(c), C = c->width, M = c->mlp_dim, F = vit_config_feature_dim(c);
    int K = c->num_classes, PP = 3 * c->patch_size * c->patch_size, R = B * N;
    int rows = R;
    int dims[] = {3 * C, M, F, K, PP};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        rows = dims[i] > rows ? dims[i] : rows;
    /* (n, k) of every packed B: the forward's W^T, dx's W, dW's x */
    int shapes[][2] = {
        {3 * C, C}, {C, C}, {M, C}, {C, M}, {C, PP}, /* forward, y = x W^T */
        {C, 3 * C}, {C, M}, {M, C}, {F, K}, {C, F}, /* dx = dy W */
        {F, B},                                     /* the head's dW, every method */
        {C, R}, {M, R}, {PP, B * (N - 1)}, {C, B},  /* full: the backbone's dW = dy^T x */
    };
    int count = method == VIT_METHOD_FULL ? 15 : 11;
    size_t b = 0;
    for (int i = 0; i < count; i++)
        b = max_size(b, gemm_packed_b_size(shapes[i][0], shapes[i][1]));
    return b + gemm_packed_scratch_floats(rows);
}

vit_status vit_train_state_create_path(const vit_model *m, vit_method method, int max_batch,
                                       int threads, vit_path path, vit_train_state **out,
                                       vit_error *err)
{
    *out = NULL;
    if (max_batch < 1 || max_batch > 4096)
        return vit_error_set(err, VIT_ERR_INVALID, "batch size %d is outside [1, 4096]", max_batch);
    if (threads < 1 || threads > 64)
        return vit_error_set(err, VIT_ERR_INVALID, "threads %d is outside [1, 64]", threads);
    if (path != VIT_PATH_AUTO && path != VIT_PATH_PACKED && path != VIT_PATH_PORTABLE)
        return vit_error_set(err, VIT_ERR_INVALID, "unknown training path %d", (int)path);
    if (path == VIT_PATH_PACKED && !gemm_packed_available())
        return vit_error_set(err, VIT_ERR_UNSUPPORTED, "the packed path needs an AVX-512 CPU");
    bool packed = path != VIT_PATH_PORTABLE && gemm_packed_available();
    /* a model that kept only its packed weights trains from them: on the
     * packed path, and only from an fp32 packing (training is fp32) */
    if (m->unpacked_released && (!packed || m->precision != VIT_PRECISION_FP32))
        return vit_error_set(err, VIT_ERR_UNSUPPORTED,
                             "this model kept only its %s packed weights (one copy); training "
                             "needs them in fp32 on the packed path (an AVX-512 CPU)",
                             vit_precision_name(m->precision));
    const vit_config *c = &m->cfg;
    size_t B = (size_t)max_batch, N = (size_t)vit_config_tokens(c), C = (size_t)c->width;
    size_t GG = N - 1, P = (size_t)c->patch_size, M = (size_t)c->mlp_dim;
    size_t F = (size_t)vit_config_feature_dim(c);
    size_t rows = B * N;
    vit_train_state *s = calloc(1, sizeof *s);
    vit_block_acts *blocks = calloc((size_t)c->depth, sizeof *blocks);
    plan p = {0};
    if (!s || !blocks) {
        free(s);
        free(blocks);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for a training state");
    }
    s->method = method;
    s->path = packed ? VIT_PATH_PACKED : VIT_PATH_PORTABLE;
    s->max_batch = max_batch;
    vit_acts *a = &s->acts;
    a->blocks = blocks;
    bool keep = method != VIT_METHOD_LINEAR; /* backward goes into the blocks */
    bool full = method == VIT_METHOD_FULL;

    /* buffers every method needs */
    vit_block_acts shared = {0};
    plan_add(&p, &a->x, rows * C);
    plan_add(&p, &a->patches, B * GG * 3 * P * P);
    plan_add(&p, &a->patch_out, B * GG * C);
    plan_add(&p, &shared.ln1, rows * C);
    plan_add(&p, &shared.qkv, rows * 3 * C);
    plan_add(&p, &shared.probs, N * N);
    plan_add(&p, &shared.attn, rows * C);
    plan_add(&p, &shared.h_pre, rows * M);
    plan_add(&p, &a->pooled, B * C);
    plan_add(&p, &a->pooled_ln, B * C);
    plan_add(&p, &a->feat, B * F);
    plan_add(&p, &s->dfeat, B * F);
    size_t gemm_floats = 0, attn_floats = 0;
    if (packed) {
        int n = (int)N;
        gemm_floats = train_gemm_floats(c, method, max_batch);
        attn_floats = (size_t)threads *
                      max_size(attention_scratch_floats(n, (int)C, c->heads),
                               keep ? attention_backward_scratch_floats(n, (int)C, c->heads) : 0);
        plan_add(&p, &a->gemm_scratch, gemm_floats);
        plan_add(&p, &a->attn_scratch, attn_floats);
    }
    if (keep) {
        plan_add(&p, &a->norm_mean, B);
        plan_add(&p, &a->norm_rstd, B);
        plan_add(&p, &s->dx, rows * C);
        plan_add(&p, &s->dln, rows * C);
        plan_add(&p, &s->dattn, rows * C);
        plan_add(&p, &s->dqkv, rows * 3 * C);
        plan_add(&p, &s->dh, rows * M);
        plan_add(&p, &s->dprobs, 2 * N * N);
        plan_add(&p, &s->dpooled_ln, B * C);
        plan_add(&p, &s->dpooled, B * C);
        if (c->ln_pre) {
            plan_add(&p, &a->x_embed, rows * C);
            plan_add(&p, &a->pre_mean, rows);
            plan_add(&p, &a->pre_rstd, rows);
        }
        for (int l = 0; l < c->depth; l++) {
            vit_block_acts *k = &blocks[l];
            /* rows past attention's keys and values: a class-token model's
             * last block has only the class rows (block_forward_last_class) */
            size_t past = l == c->depth - 1 && c->pool == VIT_POOL_CLS ? B : rows;
            plan_add(&p, &k->x_in, rows * C);
            plan_add(&p, &k->x_mid, past * C);
            plan_add(&p, &k->ln1_mean, rows);
            plan_add(&p, &k->ln1_rstd, rows);
            plan_add(&p, &k->ln2_mean, past);
            plan_add(&p, &k->ln2_rstd, past);
            plan_add(&p, &k->qkv, rows * 3 * C);
            plan_add(&p, &k->h_pre, past * M);
            if (full) { /* inputs of the linear layers, for weight gradients */
                plan_add(&p, &k->ln1, rows * C);
                plan_add(&p, &k->attn, past * C);
                plan_add(&p, &k->ln2, past * C);
                plan_add(&p, &k->h_act, past * M);
            }
        }
    }
    size_t total = 0, bytes;
    for (size_t i = 0; i < p.count; i++)
        total += slot_floats(p.items[i].n);
    s->out_rows = calloc(B, sizeof *s->out_rows);
    s->row_bias = calloc(B, sizeof *s->row_bias);
    if (p.failed || !s->out_rows || !s->row_bias || !vit_mul_size(total, sizeof(float), &bytes) ||
        !(s->block = vit_alloc_large(bytes))) {
        free(s->out_rows);
        free(s->row_bias);
        free(p.items);
        free(blocks);
        free(s);
        return vit_error_set(err, VIT_ERR_NOMEM,
                             "out of memory for %s training activations at batch %d (%zu floats)",
                             vit_method_name(method), max_batch, total);
    }
    float *cursor = s->block;
    for (size_t i = 0; i < p.count; i++) {
        *p.items[i].slot = cursor;
        cursor += slot_floats(p.items[i].n);
#ifdef TRAIN_ASAN
        ASAN_POISON_MEMORY_REGION(*p.items[i].slot + p.items[i].n,
                                  sizeof(float) * (size_t)(cursor - (*p.items[i].slot + p.items[i].n)));
#endif
    }
    free(p.items);
    s->floats = total;
    /* what a block does not keep comes from the shared scratch */
    for (int l = 0; l < c->depth; l++) {
        vit_block_acts *k = &blocks[l];
        k->ln1 = k->ln1 ? k->ln1 : shared.ln1;
        k->ln2 = k->ln2 ? k->ln2 : shared.ln1;
        k->qkv = k->qkv ? k->qkv : shared.qkv;
        k->attn = k->attn ? k->attn : shared.attn;
        if (!keep) {            /* linear: nothing kept, activation in place */
            k->h_pre = shared.h_pre;
            k->h_act = k->h_pre;
        } else if (!full) {     /* bitfit: keep the pre-activation, act into scratch */
            k->h_act = shared.h_pre;
        }
        k->probs = shared.probs; /* backward recomputes them from qkv */
        k->probs_stride = 0;
    }
    if (packed) {
        vit_status st = vit_team_create(threads, &s->team, err);
        if (st != VIT_OK) {
            vit_train_state_free(s);
            return st;
        }
        a->team = s->team;
        a->train = true;
        a->row_bias = s->row_bias;
        a->gemm_scratch_floats = gemm_floats;
    }
    *out = s;
    return VIT_OK;
}

vit_path vit_train_state_path(const vit_train_state *s)
{
    return s->path;
}

void vit_train_state_set_profile(vit_train_state *s, vit_profile *p)
{
    s->acts.profile = p;
}

void vit_train_state_free(vit_train_state *s)
{
    if (!s)
        return;
    vit_team_free(s->team);
#ifdef TRAIN_ASAN
    if (s->block)
        ASAN_UNPOISON_MEMORY_REGION(s->block, sizeof(float) * s->floats);
#endif
    free(s->block);
    free(s->acts.blocks);
    free(s->out_rows);
    free(s->row_bias);
    free(s);
}

size_t vit_train_state_bytes(const vit_train_state *s)
{
    return s->floats * sizeof(float);
}

vit_status vit_train_forward(const vit_model *m, vit_train_state *s, const float *images,
                             int batch, float *logits, vit_error *err)
{
    if (batch < 1 || batch > s->max_batch)
        return vit_error_set(err, VIT_ERR_INVALID, "batch %d is outside [1, %d]", batch,
                             s->max_batch);
    if (m->cfg.num_classes < 1)
        return vit_error_set(err, VIT_ERR_INVALID, "training needs a classification head");
    for (int b = 0; b < batch; b++)
        s->out_rows[b] = logits + (size_t)b * m->cfg.num_classes;
    vit_forward_acts(m, &s->acts, images, batch, s->out_rows);
    s->batch = batch;
    s->dpatch_batch = 0;
    return VIT_OK;
}

vit_status vit_train_forward_head(const vit_model *m, vit_train_state *s, const float *feat,
                                  int batch, float *logits, vit_error *err)
{
    if (s->method != VIT_METHOD_LINEAR)
        return vit_error_set(err, VIT_ERR_INVALID,
                             "a forward from features trains the head alone (linear), not %s",
                             vit_method_name(s->method));
    if (batch < 1 || batch > s->max_batch)
        return vit_error_set(err, VIT_ERR_INVALID, "batch %d is outside [1, %d]", batch,
                             s->max_batch);
    if (m->cfg.num_classes < 1)
        return vit_error_set(err, VIT_ERR_INVALID, "training needs a classification head");
    size_t F = (size_t)vit_config_feature_dim(&m->cfg);
    /* where vit_forward_acts leaves them, so that vit_backward reads them */
    memcpy(s->acts.feat, feat, sizeof(float) * (size_t)batch * F);
    for (int b = 0; b < batch; b++)
        s->out_rows[b] = logits + (size_t)b * m->cfg.num_classes;
    vit_head_acts(m, &s->acts, s->acts.feat, batch, s->out_rows);
    s->batch = batch;
    s->dpatch_batch = 0;
    return VIT_OK;
}

const float *vit_train_features(const vit_train_state *s)
{
    return s->acts.feat;
}

/* ref: torch.nn.functional.cross_entropy(reduction="mean", label_smoothing=ls):
 * per row, loss = (1 - ls) * -log p[y] + ls * mean_k(-log p[k]);
 * dlogits = (softmax - ((1 - ls) onehot(y) + ls / K)) / B. */
double vit_cross_entropy(const float *logits, const int *labels, int batch, int K,
                         float label_smoothing, float *dlogits)
{
    double total = 0, ls = label_smoothing;
    for (int b = 0; b < batch; b++) {
        const float *z = logits + (size_t)b * K;
        float *dz = dlogits + (size_t)b * K;
        double max = z[0];
        for (int k = 1; k < K; k++)
            if (z[k] > max)
                max = z[k];
        double sum = 0, sum_z = 0;
        for (int k = 0; k < K; k++) {
            sum += exp((double)z[k] - max);
            sum_z += z[k];
        }
        double log_sum = max + log(sum); /* log-sum-exp */
        double nll = log_sum - z[labels[b]];
        double smooth = log_sum - sum_z / K; /* mean_k -log p[k] */
        total += (1.0 - ls) * nll + ls * smooth;
        for (int k = 0; k < K; k++) {
            double p = exp((double)z[k] - log_sum);
            double target = ls / K + (k == labels[b] ? 1.0 - ls : 0.0);
            dz[k] = (float)((p - target) / batch);
        }
    }
    return total / batch;
}

/* Gradient slot of a parameter: the same offset in gtrain or gfrozen, or
 * NULL when that arena is not being trained. */
static float *grad_of(const vit_model *m, const float *param, float *gtrain, float *gfrozen)
{
    if (!param)
        return NULL;
    if (param >= m->trainable && param < m->trainable + m->trainable_len)
        return gtrain + (param - m->trainable);
    if (gfrozen && param >= m->frozen && param < m->frozen + m->frozen_len)
        return gfrozen + (param - m->frozen);
    return NULL;
}

/* ---- the backward's steps on either path ---- */


/* A member's share of n columns, cut at multiples of 16. */
static void column_split(int n, int member, int threads, int *j0, int *j1)
{
    int v0, v1;
    vit_team_split((n + 15) / 16, member, threads, &v0, &v1);
    *j0 = v0 * 16 < n ? v0 * 16 : n;
    *j1 = v1 * 16 < n ? v1 * 16 : n;
}

typedef struct colsum_job {
    float *db;
    const float *y;
    int m, n;
} colsum_job;

static void colsum_region(void *p, int member, int threads)
{
    const colsum_job *j = p;
    int j0, j1;
    column_split(j->n, member, threads, &j0, &j1);
    colsum_accumulate_avx512(j->db, j->y, (size_t)j->m, (size_t)j->n, j0, j1);
}

/* dx (m, k) = dy (m, n) . W (n, k) on the team.  The one place that says
 * where the input gradients' weights come from: W's fp32 original in its
 * stored (n, k) orientation, which is B itself, packed per call by the
 * members that multiply its panels (measured: 0.3% of the product at 6304
 * rows, so no second packed copy of the backbone is kept for it); or, when
 * the model released its originals (one copy of the weights), the same
 * panels gathered from W's forward packing wp. */
static void dx_gemm(vit_acts *a, float *dx, const float *dy, const float *w, const float *wp,
                    int m, int n, int k)
{
    if (w)
        gemm_packed_raw(a->team, m, k, n, dy, (size_t)n, false, w, (size_t)k, false, dx,
                        (size_t)k, NULL, GEMM_POST_NONE, a->gemm_scratch,
                        a->gemm_scratch_floats);
    else
        gemm_packed_dx(a->team, m, k, n, dy, (size_t)n, wp, dx, (size_t)k, a->gemm_scratch,
                       a->gemm_scratch_floats);
}

/* ref: gemm.h linear_backward, on the team: dx (m, k) = dy (m, n) . W (n,
 * k) (dx_gemm); dw (n, k) += dy^T x with A packed from dy's columns; db (n)
 * += column sums of dy, split by columns.  Each part skipped when its output
 * is NULL. */
static void linear_backward_team(vit_acts *a, float *dx, float *dw, float *db, const float *dy,
                                 const float *x, const float *w, const float *wp, int m, int n,
                                 int k)
{
    if (dx) {
        dx_gemm(a, dx, dy, w, wp, m, n, k);
        vit_profile_mark(a, VIT_OP_BWD_DX_GEMM, (double)m * n * k);
    }
    if (dw) {
        static const float *const none[1] = {NULL};
        gemm_bias accumulate = {none, n, true};
        gemm_packed_raw(a->team, n, k, m, dy, (size_t)n, true, x, (size_t)k, false, dw,
                        (size_t)k, &accumulate, GEMM_POST_NONE, a->gemm_scratch,
                        a->gemm_scratch_floats);
        vit_profile_mark(a, VIT_OP_BWD_DW_GEMM, (double)m * n * k);
    }
    if (db) {
        colsum_job j = {db, dy, m, n};
        vit_team_run(a->team, colsum_region, &j);
        vit_profile_mark(a, VIT_OP_BWD_BIAS_GRAD, 0);
    }
}

/* linear_backward on the state's path. */
static void lin_bwd(vit_train_state *s, float *dx, float *dw, float *db, const float *dy,
                    const float *x, const float *w, const float *wp, int m, int n, int k)
{
    if (s->team) {
        linear_backward_team(&s->acts, dx, dw, db, dy, x, w, wp, m, n, k);
        return;
    }
    linear_backward(dx, dw, db, dy, x, w, m, n, k);
    vit_profile_mark(&s->acts, dw ? VIT_OP_BWD_DW_GEMM : VIT_OP_BWD_DX_GEMM,
                 (double)m * n * k * (dw ? 2 : 1));
}

typedef struct ln_bwd_job {
    float *dx, *dw, *db;
    const float *dout, *x, *mean, *rstd, *w;
    int rows, C;
} ln_bwd_job;

/* A member's rows of dx, and its columns of the parameter gradients. */
static void ln_bwd_region(void *p, int member, int threads)
{
    const ln_bwd_job *j = p;
    int r0, r1, j0, j1;
    vit_team_split(j->rows, member, threads, &r0, &r1);
    size_t off = (size_t)r0 * j->C;
    layernorm_backward_rows_avx512(j->dx + off, j->dout + off, j->x + off, j->mean + r0,
                                   j->rstd + r0, j->w, (size_t)(r1 - r0), j->C);
    column_split(j->C, member, threads, &j0, &j1);
    if (j->db)
        colsum_accumulate_avx512(j->db, j->dout, (size_t)j->rows, (size_t)j->C, j0, j1);
    if (j->dw)
        layernorm_gain_grad_avx512(j->dw, j->dout, j->x, j->mean, j->rstd, (size_t)j->rows, j->C,
                                   j0, j1);
}

/* ops.h layernorm_backward on the state's path. */
static void ln_bwd(vit_train_state *s, float *dx, float *dw, float *db, const float *dout,
                   const float *x, const float *mean, const float *rstd, const float *w,
                   size_t rows, int C)
{
    if (s->team) {
        ln_bwd_job j = {dx, dw, db, dout, x, mean, rstd, w, (int)rows, C};
        vit_team_run(s->team, ln_bwd_region, &j);
    } else {
        layernorm_backward(dx, dw, db, dout, x, mean, rstd, w, rows, C);
    }
    vit_profile_mark(&s->acts, VIT_OP_BWD_LAYERNORM, 0);
}

typedef struct act_bwd_job {
    float *d;
    const float *x;
    size_t n;
    vit_act act;
} act_bwd_job;

static void act_bwd_region(void *p, int member, int threads)
{
    const act_bwd_job *j = p;
    size_t vectors = (j->n + 15) / 16, per = vectors / (size_t)threads;
    size_t extra = vectors % (size_t)threads, mm = (size_t)member;
    size_t v0 = mm * per + (mm < extra ? mm : extra), v1 = v0 + per + (mm < extra ? 1 : 0);
    size_t i0 = v0 * 16 < j->n ? v0 * 16 : j->n, i1 = v1 * 16 < j->n ? v1 * 16 : j->n;
    (j->act == VIT_ACT_GELU ? gelu_backward_avx512 : quick_gelu_backward_avx512)(
        j->d + i0, j->d + i0, j->x + i0, i1 - i0);
}

/* d (n) *= act'(x) on the state's path. */
static void act_bwd(vit_train_state *s, vit_act act, float *d, const float *x, size_t n)
{
    if (s->team) {
        act_bwd_job j = {d, x, n, act};
        vit_team_run(s->team, act_bwd_region, &j);
    } else if (act == VIT_ACT_GELU) {
        gelu_backward(d, d, x, n);
    } else {
        quick_gelu_backward(d, d, x, n);
    }
    vit_profile_mark(&s->acts, VIT_OP_BWD_ACTIVATION, 0);
}

/* ref: the inverse of block_forward in vit_forward.c (block_forward_train on
 * the packed path).  s->dx holds dLoss/dx_out on entry and dLoss/dx_in on
 * return. */
static void block_backward(const vit_model *m, const vit_block_weights *w,
                           const vit_block_acts *k, vit_train_state *s, int B, float *gtrain,
                           float *gfrozen)
{
    const vit_config *c = &m->cfg;
    int N = vit_config_tokens(c), C = c->width, M = c->mlp_dim, R = B * N;
    size_t rows = (size_t)R;
    vit_acts *a = &s->acts;
#define G(p) grad_of(m, (p), gtrain, gfrozen)
    /* x_out = x_mid + fc2(act(fc1(ln2(x_mid)))) */
    lin_bwd(s, s->dh, G(w->fc2_w), G(w->fc2_b), s->dx, k->h_act, w->fc2_w, w->fc2_wp, R, C, M);
    act_bwd(s, c->act, s->dh, k->h_pre, rows * (size_t)M);
    lin_bwd(s, s->dln, G(w->fc1_w), G(w->fc1_b), s->dh, k->ln2, w->fc1_w, w->fc1_wp, R, M, C);
    ln_bwd(s, s->dx, G(w->norm2_w), G(w->norm2_b), s->dln, k->x_mid, k->ln2_mean, k->ln2_rstd,
           w->norm2_w, rows, C);                                               /* dx = dx_mid */
    /* x_mid = x_in + proj(attn(ln1(x_in))) */
    lin_bwd(s, s->dattn, G(w->proj_w), G(w->proj_b), s->dx, k->attn, w->proj_w, w->proj_wp, R, C, C);
    if (s->team)
        attention_backward_team(s->team, s->dqkv, s->dattn, k->qkv, B, N, C, c->heads,
                                a->attn_scratch);
    else
        attention_backward(s->dqkv, s->dprobs, s->dattn, k->qkv, B, N, C, c->heads);
    vit_profile_mark(a, VIT_OP_BWD_ATTENTION, 4.0 * B * N * N * C);
    lin_bwd(s, s->dln, G(w->qkv_w), G(w->qkv_b), s->dqkv, k->ln1, w->qkv_w, w->qkv_wp, R, 3 * C, C);
    ln_bwd(s, s->dx, G(w->norm1_w), G(w->norm1_b), s->dln, k->x_in, k->ln1_mean, k->ln1_rstd,
           w->norm1_w, rows, C);                                               /* dx = dx_in */
#undef G
}

/* block_backward for block_forward_last_class: s->dpooled holds dLoss/dx_out
 * of the class rows (no other row reaches the head), and s->dx receives
 * dLoss/dx_in of every row. */
static void block_backward_last_class(const vit_model *m, const vit_block_weights *w,
                                      const vit_block_acts *k, vit_train_state *s, int B,
                                      float *gtrain, float *gfrozen)
{
    const vit_config *c = &m->cfg;
    int N = vit_config_tokens(c), C = c->width, M = c->mlp_dim, R = B * N;
    vit_acts *a = &s->acts;
    float *dcls = s->dpooled; /* (B,C) */
#define G(p) grad_of(m, (p), gtrain, gfrozen)
    /* x_out = x_mid + fc2(act(fc1(ln2(x_mid)))), class rows */
    lin_bwd(s, s->dh, G(w->fc2_w), G(w->fc2_b), dcls, k->h_act, w->fc2_w, w->fc2_wp, B, C, M);
    act_bwd(s, c->act, s->dh, k->h_pre, (size_t)B * M);
    lin_bwd(s, s->dln, G(w->fc1_w), G(w->fc1_b), s->dh, k->ln2, w->fc1_w, w->fc1_wp, B, M, C);
    ln_bwd(s, dcls, G(w->norm2_w), G(w->norm2_b), s->dln, k->x_mid, k->ln2_mean, k->ln2_rstd,
           w->norm2_w, (size_t)B, C);                                     /* dcls = dx_mid */
    /* x_mid = x_in + proj(attn(ln1(x_in))), the class rows' attention */
    lin_bwd(s, s->dattn, G(w->proj_w), G(w->proj_b), dcls, k->attn, w->proj_w, w->proj_wp, B, C,
            C);
    attention_first_query_backward(s->dqkv, s->dprobs, s->dattn, k->qkv, B, N, C, c->heads);
    vit_profile_mark(a, VIT_OP_BWD_ATTENTION, 4.0 * B * N * C);
    lin_bwd(s, s->dln, G(w->qkv_w), G(w->qkv_b), s->dqkv, k->ln1, w->qkv_w, w->qkv_wp, R, 3 * C,
            C);
    memset(s->dx, 0, sizeof(float) * (size_t)R * C); /* dx_mid: the class rows' alone */
    for (int b = 0; b < B; b++)
        memcpy(s->dx + (size_t)b * N * C, dcls + (size_t)b * C, sizeof(float) * (size_t)C);
    ln_bwd(s, s->dx, G(w->norm1_w), G(w->norm1_b), s->dln, k->x_in, k->ln1_mean, k->ln1_rstd,
           w->norm1_w, (size_t)R, C);                                     /* dx = dx_in */
#undef G
}

vit_status vit_backward(const vit_model *m, vit_train_state *s, const float *dlogits, int batch,
                        float *gtrain, float *gfrozen, vit_error *err)
{
    const vit_config *c = &m->cfg;
    const vit_weights *w = &m->w;
    vit_acts *a = &s->acts;
    if (batch != s->batch)
        return vit_error_set(err, VIT_ERR_INVALID, "backward of batch %d after a forward of %d",
                             batch, s->batch);
    if (s->method == VIT_METHOD_FULL && !gfrozen)
        return vit_error_set(err, VIT_ERR_INVALID, "full fine-tuning needs frozen gradients");
    if (s->method != VIT_METHOD_FULL)
        gfrozen = NULL;
    int B = batch, N = vit_config_tokens(c), C = c->width, F = vit_config_feature_dim(c);
    int K = c->num_classes, GG = N - 1, P = c->patch_size;
#define G(p) grad_of(m, (p), gtrain, gfrozen)
    vit_profile_start(a);
    /* head: logits = feat W^T + b */
    lin_bwd(s, s->method == VIT_METHOD_LINEAR ? NULL : s->dfeat, G(w->head_w), G(w->head_b),
            dlogits, a->feat, w->head_w, NULL, B, K, F);
    vit_profile_mark(a, VIT_OP_BWD_HEAD, 0);
    if (s->method == VIT_METHOD_LINEAR)
        return VIT_OK;
    /* projection (CLIP): feat = pooled_ln P^T */
    if (c->proj_dim > 0)
        lin_bwd(s, s->dpooled_ln, G(w->proj_w), NULL, s->dfeat, a->pooled_ln, w->proj_w, NULL, B, F, C);
    else
        memcpy(s->dpooled_ln, s->dfeat, sizeof(float) * (size_t)B * C);
    memset(s->dpooled, 0, sizeof(float) * (size_t)B * C);
    layernorm_backward(s->dpooled, G(w->norm_w), G(w->norm_b), s->dpooled_ln, a->pooled,
                       a->norm_mean, a->norm_rstd, w->norm_w, (size_t)B, C);
    /* pooling: a class-token model's last block reads dpooled itself
     * (block_backward_last_class); the mean spreads it over the patch tokens */
    bool class_last = c->pool == VIT_POOL_CLS;
    if (!class_last)
        memset(s->dx, 0, sizeof(float) * (size_t)B * N * C);
    for (int b = 0; b < B && !class_last; b++) {
        const float *dp = s->dpooled + (size_t)b * C;
        float *dxb = s->dx + (size_t)b * N * C;
        for (int t = 1; t < N; t++)
            for (int i = 0; i < C; i++)
                dxb[(size_t)t * C + i] = dp[i] / (float)(N - 1);
    }
    vit_profile_mark(a, VIT_OP_BWD_HEAD, 0);
    for (int l = c->depth - 1; l >= 0; l--) {
        if (class_last && l == c->depth - 1)
            block_backward_last_class(m, &w->blocks[l], &a->blocks[l], s, B, gtrain, gfrozen);
        else
            block_backward(m, &w->blocks[l], &a->blocks[l], s, B, gtrain, gfrozen);
    }
    /* ln_pre (CLIP): x = LN(x_embed) */
    if (c->ln_pre) {
        memset(s->dln, 0, sizeof(float) * (size_t)B * N * C);
        ln_bwd(s, s->dln, G(w->norm_pre_w), G(w->norm_pre_b), s->dx, a->x_embed, a->pre_mean,
               a->pre_rstd, w->norm_pre_w, (size_t)B * N, C);
        memcpy(s->dx, s->dln, sizeof(float) * (size_t)B * N * C);
    }
    /* embeddings: x[b,0] = cls + pos[0]; x[b,t] = patch_out[b,t-1] + pos[t] */
    float *dcls = G(w->cls_token), *dpos = G(w->pos_embed);
    for (int b = 0; b < B; b++) {
        const float *dxb = s->dx + (size_t)b * N * C;
        if (dcls)
            for (int i = 0; i < C; i++)
                dcls[i] += dxb[i];
        if (dpos)
            for (size_t i = 0; i < (size_t)N * C; i++)
                dpos[i] += dxb[i];
        /* patch tokens become the patch embedding's output gradient, in place */
        memmove(s->dln + (size_t)b * GG * C, dxb + C, sizeof(float) * (size_t)GG * C);
    }
    vit_profile_mark(a, VIT_OP_BWD_EMBED, 0);
    lin_bwd(s, NULL, G(w->patch_w), G(w->patch_b), s->dln, a->patches, w->patch_w, w->patch_wp,
            B * GG, C, 3 * P * P);
    vit_profile_mark(a, VIT_OP_BWD_EMBED, 0);
    s->dpatch_batch = B; /* dln keeps dL/dpatch_out for vit_input_grad */
#undef G
    return VIT_OK;
}

/* ref: x.grad after loss.backward() in tools/reference/gen_grad_goldens.py:
 * dpatches = dpatch_out . W (the patch embedding's dx, which vit_backward
 * skips), then folded back through patch_unfold_forward's layout. */
vit_status vit_input_grad(const vit_model *m, const vit_train_state *s, float *dimages,
                          vit_error *err)
{
    if (s->dpatch_batch == 0 || s->dpatch_batch != s->batch)
        return vit_error_set(err, VIT_ERR_INVALID,
                             "the input gradient needs a bitfit or full vit_backward after the "
                             "last forward");
    if (!m->w.patch_w)
        return vit_error_set(err, VIT_ERR_UNSUPPORTED,
                             "the input gradient needs the unpacked patch embedding, which this "
                             "model released");
    const vit_config *c = &m->cfg;
    int B = s->batch, P = c->patch_size, G = c->image_size / P, C = c->width;
    size_t GG = (size_t)G * G, cols = (size_t)3 * P * P;
    size_t plane = (size_t)c->image_size * c->image_size;
    float *dpatches = malloc((size_t)B * GG * cols * sizeof *dpatches); /* (B*GG, 3PP) */
    if (!dpatches)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for the input gradient");
    linear_backward(dpatches, NULL, NULL, s->dln, NULL, m->w.patch_w, (int)((size_t)B * GG), C,
                    (int)cols);
    for (int b = 0; b < B; b++)
        for (int gy = 0; gy < G; gy++)
            for (int gx = 0; gx < G; gx++) {
                const float *src = dpatches + ((size_t)b * GG + (size_t)gy * G + gx) * cols;
                for (int ch = 0; ch < 3; ch++)
                    for (int ky = 0; ky < P; ky++) {
                        float *dst = dimages + ((size_t)b * 3 + ch) * plane +
                                     (size_t)(gy * P + ky) * c->image_size + (size_t)gx * P;
                        memcpy(dst, src, sizeof(float) * (size_t)P);
                        src += P;
                    }
            }
    free(dpatches);
    return VIT_OK;
}
