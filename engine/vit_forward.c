/*
 * vit_forward.c - batched fp32 ViT forward pass.
 *
 * Legend: B batch, N tokens, G grid, P patch, C width, NH heads, M mlp width,
 * F feature width (D with a projection, else C), K classes.
 *
 * All matrix products go through gemm.h; every activation buffer lives in a
 * vit_state sized once for max_batch, so the forward call never allocates.
 * The residual stream x is updated in place: a linear layer that feeds the
 * residual seeds x with its bias and lets the GEMM accumulate onto it (beta=1).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gemm.h"
#include "ops.h"
#include "vit_impl.h"

/* Per-thread scratch for one model and up to max_batch images. */
struct vit_state {
    int max_batch;
    int num_blocks_cfg; /* depth the state was sized for (sanity) */
    float *x;       /* (B, N, C)  residual stream */
    float *ln;      /* (B, N, C)  LayerNorm output */
    float *qkv;     /* (B, N, 3C) */
    float *attn;    /* (B, N, C)  attention output before its projection */
    float *scores;  /* (N, N)     one head's attention matrix */
    float *hidden;  /* (B, N, M)  MLP hidden */
    float *patches; /* (B*G*G, 3*P*P) unfolded input */
    float *pooled;  /* (B, C) */
    float *feat;    /* (B, F) */
    void *block;    /* the single allocation all of the above point into */
    vit_profile *profile; /* NULL unless profiling */
    double mark;          /* time of the last profile_mark */
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Charges the time since the previous mark to op (no-op unless profiling). */
static void profile_mark(vit_state *s, vit_op op, double macs)
{
    if (!s->profile)
        return;
    double t = now_seconds();
    s->profile->seconds[op] += t - s->mark;
    s->profile->macs[op] += macs;
    s->mark = t;
}

void vit_state_set_profile(vit_state *s, vit_profile *p)
{
    s->profile = p;
}

const char *vit_op_name(vit_op op)
{
    static const char *names[VIT_OP_COUNT] = {
        "patch_unfold", "patch_gemm", "embed_add", "layernorm", "qkv_gemm", "attention",
        "proj_gemm", "fc1_gemm", "activation", "fc2_gemm", "bias_add", "pool_head",
    };
    return op >= 0 && op < VIT_OP_COUNT ? names[op] : "?";
}

vit_status vit_state_create(const vit_model *m, int max_batch, vit_state **out, vit_error *err)
{
    *out = NULL;
    if (max_batch < 1 || max_batch > 4096)
        return vit_error_set(err, VIT_ERR_INVALID, "max_batch %d is outside [1, 4096]", max_batch);
    const vit_config *c = &m->cfg;
    size_t B = (size_t)max_batch, N = (size_t)vit_config_tokens(c), C = (size_t)c->width;
    size_t G = (size_t)(c->image_size / c->patch_size), P = (size_t)c->patch_size;
    size_t M = (size_t)c->mlp_dim, F = (size_t)vit_config_feature_dim(c);
    /* sizes in floats; the config bounds keep each product far below SIZE_MAX */
    size_t sizes[] = {B * N * C, B * N * C, B * N * 3 * C, B * N * C, N * N,
                      B * N * M, B * G * G * 3 * P * P, B * C, B * F};
    size_t total = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        total += (sizes[i] + 15) & ~(size_t)15; /* keep every buffer 64-byte aligned */
    vit_state *s = calloc(1, sizeof *s);
    size_t bytes;
    if (!s || !vit_mul_size(total, sizeof(float), &bytes) ||
        !(s->block = aligned_alloc(64, bytes))) {
        free(s);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for a batch-%d state (%zu floats)",
                             max_batch, total);
    }
    float *p = s->block;
    float **slots[] = {&s->x, &s->ln, &s->qkv, &s->attn, &s->scores,
                       &s->hidden, &s->patches, &s->pooled, &s->feat};
    for (size_t i = 0; i < sizeof slots / sizeof slots[0]; i++) {
        *slots[i] = p;
        p += (sizes[i] + 15) & ~(size_t)15;
    }
    s->max_batch = max_batch;
    s->num_blocks_cfg = c->depth;
    *out = s;
    return VIT_OK;
}

void vit_state_free(vit_state *s)
{
    if (!s)
        return;
    free(s->block);
    free(s);
}

/* ref: timm vision_transformer.py Block.forward (pre-LN) */
static void block_forward(const vit_config *c, const vit_block_weights *w, vit_state *s, int B)
{
    int N = vit_config_tokens(c), C = c->width, M = c->mlp_dim;
    size_t rows = (size_t)B * N;
    double r = (double)rows;
    layernorm_forward(s->ln, s->x, w->norm1_w, w->norm1_b, rows, C, c->ln_eps);
    profile_mark(s, VIT_OP_LAYERNORM, 0);
    linear_forward(s->qkv, s->ln, w->qkv_w, w->qkv_b, (int)rows, 3 * C, C);   /* (B,N,3C) */
    profile_mark(s, VIT_OP_QKV_GEMM, r * 3 * C * C);
    attention_forward(s->attn, s->scores, s->qkv, B, N, C, c->heads);         /* (B,N,C) */
    profile_mark(s, VIT_OP_ATTENTION, 2.0 * B * N * N * C);
    bias_add_forward(s->x, w->proj_b, rows, C);                               /* x += proj */
    profile_mark(s, VIT_OP_BIAS_ADD, 0);
    gemm((int)rows, C, C, 1.0f, s->attn, C, w->proj_w, C, true, 1.0f, s->x, C);
    profile_mark(s, VIT_OP_PROJ_GEMM, r * C * C);

    layernorm_forward(s->ln, s->x, w->norm2_w, w->norm2_b, rows, C, c->ln_eps);
    profile_mark(s, VIT_OP_LAYERNORM, 0);
    linear_forward(s->hidden, s->ln, w->fc1_w, w->fc1_b, (int)rows, M, C);    /* (B,N,M) */
    profile_mark(s, VIT_OP_FC1_GEMM, r * C * M);
    if (c->act == VIT_ACT_GELU)
        gelu_forward(s->hidden, rows * (size_t)M);
    else
        quick_gelu_forward(s->hidden, rows * (size_t)M);
    profile_mark(s, VIT_OP_ACTIVATION, 0);
    bias_add_forward(s->x, w->fc2_b, rows, C);                                /* x += mlp */
    profile_mark(s, VIT_OP_BIAS_ADD, 0);
    gemm((int)rows, C, M, 1.0f, s->hidden, M, w->fc2_w, M, true, 1.0f, s->x, C);
    profile_mark(s, VIT_OP_FC2_GEMM, r * C * M);
}

/* ref: timm vision_transformer.py VisionTransformer._pos_embed / forward_features */
static void embed_forward(const vit_config *c, const vit_weights *w, vit_state *s,
                          const float *images, int B)
{
    int N = vit_config_tokens(c), C = c->width, P = c->patch_size;
    int GG = N - 1;
    patch_unfold_forward(s->patches, images, B, c->image_size, P);
    profile_mark(s, VIT_OP_PATCH_UNFOLD, 0);
    /* patch embedding as one GEMM: (B*G*G, 3PP) x (C, 3PP)^T; rows land in ln as scratch */
    linear_forward(s->ln, s->patches, w->patch_w, w->patch_b, B * GG, C, 3 * P * P);
    profile_mark(s, VIT_OP_PATCH_GEMM, (double)B * GG * C * 3 * P * P);
    for (int b = 0; b < B; b++) {
        float *xb = s->x + (size_t)b * N * C;
        for (int i = 0; i < C; i++)
            xb[i] = w->cls_token[i] + w->pos_embed[i];
        for (int t = 1; t < N; t++) {
            const float *pe = s->ln + ((size_t)b * GG + (size_t)(t - 1)) * C;
            const float *pos = w->pos_embed + (size_t)t * C;
            float *dst = xb + (size_t)t * C;
            for (int i = 0; i < C; i++)
                dst[i] = pe[i] + pos[i];
        }
    }
    profile_mark(s, VIT_OP_EMBED_ADD, 0);
    if (c->ln_pre) {
        layernorm_forward(s->x, s->x, w->norm_pre_w, w->norm_pre_b, (size_t)B * N, C, c->ln_eps);
        profile_mark(s, VIT_OP_LAYERNORM, 0);
    }
}

/* Final norm + pooling into s->pooled (B, C). */
static void pool_forward(const vit_config *c, const vit_weights *w, vit_state *s, int B)
{
    int N = vit_config_tokens(c), C = c->width;
    for (int b = 0; b < B; b++) {
        const float *xb = s->x + (size_t)b * N * C;
        float *dst = s->pooled + (size_t)b * C;
        if (c->pool == VIT_POOL_CLS) {
            memcpy(dst, xb, sizeof(float) * (size_t)C);
        } else {
            /* ref: timm VisionTransformer.forward_head, global_pool='avg' over patch tokens */
            for (int i = 0; i < C; i++) {
                double sum = 0;
                for (int t = 1; t < N; t++)
                    sum += xb[(size_t)t * C + i];
                dst[i] = (float)(sum / (N - 1));
            }
        }
    }
    /* LayerNorm is per token, so normalising only the pooled row equals
     * normalising all tokens and then taking the class token. */
    layernorm_forward(s->pooled, s->pooled, w->norm_w, w->norm_b, (size_t)B, C, c->ln_eps);
}

vit_status vit_forward(const vit_model *m, vit_state *s, const float *images, int batch,
                       float *out, vit_error *err)
{
    const vit_config *c = &m->cfg;
    if (batch < 1 || batch > s->max_batch)
        return vit_error_set(err, VIT_ERR_INVALID, "batch %d is outside [1, %d]", batch,
                             s->max_batch);
    VIT_ASSERT(s->num_blocks_cfg == c->depth);
    if (s->profile)
        s->mark = now_seconds();
    embed_forward(c, &m->w, s, images, batch);
    for (int i = 0; i < c->depth; i++)
        block_forward(c, &m->w.blocks[i], s, batch);
    pool_forward(c, &m->w, s, batch);

    int C = c->width, F = vit_config_feature_dim(c);
    const float *feat = s->pooled;
    if (c->proj_dim > 0) {
        linear_forward(s->feat, s->pooled, m->w.proj_w, NULL, batch, F, C);  /* (B, D) */
        feat = s->feat;
    }
    if (c->num_classes > 0)
        linear_forward(out, feat, m->w.head_w, m->w.head_b, batch, c->num_classes, F);
    else
        memcpy(out, feat, sizeof(float) * (size_t)batch * F);
    profile_mark(s, VIT_OP_POOL_HEAD,
                 (double)batch * ((c->proj_dim > 0 ? (double)C * F : 0) + (double)c->num_classes * F));
    return VIT_OK;
}

void vit_softmax(const float *logits, int n, float *probs)
{
    memcpy(probs, logits, sizeof(float) * (size_t)n);
    softmax_rows_forward(probs, 1, n);
}

void vit_set_threads(int threads)
{
    gemm_set_threads(threads);
}
