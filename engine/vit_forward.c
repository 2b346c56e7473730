/*
 * vit_forward.c - batched fp32 ViT forward pass.
 *
 * Legend: B batch, N tokens, G grid, P patch, C width, NH heads, M mlp width,
 * F feature width (D with a projection, else C), K classes.
 *
 * All matrix products go through gemm.h.  The pass writes into a vit_acts
 * (vit_impl.h): for inference every block shares one set of scratch buffers in
 * a vit_state sized once for max_batch, so the forward call never allocates;
 * training hands in per-block slots instead and the same code keeps what the
 * backward pass needs.  The residual stream x is updated in place: a linear
 * layer that feeds the residual seeds x with its bias and lets the GEMM
 * accumulate onto it (beta = 1).
 *
 * Two paths.  On AVX-512 CPUs with a packed model (vit_model_pack) a
 * vit_state runs inference on its thread team: packed GEMMs (fp32, or bf16
 * operands with fp32 accumulation by the model's precision) with the bias
 * adds and the GELU inside them, attention heads as packed GEMMs, LayerNorm
 * split by rows, and in bf16 LayerNorm's and MLP-in's outputs written as
 * their readers' packed inputs (block_forward_packed, block_forward_bf16);
 * a training state's forward takes the
 * same kernels and keeps its activations (block_forward_train).  Everywhere
 * else -- CPUs without AVX-512, VITFIT_NO_AVX512 -- the OpenBLAS path
 * (block_forward) runs, for inference and training alike.
 *
 * A class-token model runs its last block past the keys and values for the
 * class tokens' rows only (block_forward_last_class), on either path and in
 * training too: nothing else reaches the head.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attention.h"
#include "cpu.h"
#include "gemm.h"
#include "ops.h"
#include "ops_avx512.h"
#include "vit_impl.h"

/* The state's buffers share one allocation, so ASan alone would not see one
 * overflow into the next (the packed GEMM's scratch once ran 28 KB into the
 * attention's).  Under ASan each buffer is followed by a poisoned gap. */
#if defined(__SANITIZE_ADDRESS__)
#define STATE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define STATE_ASAN 1
#endif
#endif
#ifdef STATE_ASAN
#include <sanitizer/asan_interface.h>
enum { STATE_GAP = 16 }; /* floats */
#else
enum { STATE_GAP = 0 };
#endif

/* One worker's scratch for one model and up to max_batch images. */
struct vit_state {
    int max_batch;
    vit_path path;       /* VIT_PATH_PACKED or VIT_PATH_PORTABLE, fixed at creation */
    int depth;           /* blocks the state was sized for */
    vit_acts acts;       /* every block points at the same scratch */
    vit_block_acts shared;
    float **out_rows;    /* (max_batch) row pointers into a caller's contiguous output */
    const float **row_bias; /* (max_batch) */
    vit_team *team;
    float *block;        /* the single allocation all buffers point into */
    size_t block_floats;
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void vit_profile_start(vit_acts *a)
{
    if (a->profile)
        a->mark = now_seconds();
}

void vit_profile_mark(vit_acts *a, vit_op op, double macs)
{
    if (!a->profile)
        return;
    double t = now_seconds();
    a->profile->seconds[op] += t - a->mark;
    a->profile->macs[op] += macs;
    a->mark = t;
}

/* ---- per-image biases ----
 * Every bias lives in a trainable arena, and a task's arena has the model's
 * layout, so image b's copy of bias p is the same offset into its own arena.
 * With a->arenas == NULL every image reads m's own. */

static const float *image_bias(const vit_model *m, const vit_acts *a, const float *p, int b)
{
    if (!p || !a->arenas || !a->arenas[b])
        return p;
    return a->arenas[b] + (p - m->trainable);
}

/* y (B*R, n) = each image's bias (or 0), so a GEMM can accumulate onto it. */
static void seed_bias_rows(const vit_model *m, const vit_acts *a, float *y, const float *bias,
                           int B, int R, int n)
{
    for (int b = 0; b < B; b++) {
        const float *ib = image_bias(m, a, bias, b);
        for (int r = 0; r < R; r++) {
            float *row = y + ((size_t)b * R + r) * n;
            if (ib)
                memcpy(row, ib, sizeof(float) * (size_t)n);
            else
                memset(row, 0, sizeof(float) * (size_t)n);
        }
    }
}

/* y (B*R, n) = x (B*R, k) W^T + each image's bias; W (n, k) shared. */
static void linear_rows(const vit_model *m, const vit_acts *a, float *y, const float *x,
                        const float *w, const float *bias, int B, int R, int n, int k)
{
    seed_bias_rows(m, a, y, bias, B, R, n);
    gemm(B * R, n, k, 1.0f, x, k, w, k, true, 1.0f, y, n);
}

/* The packed path's linear layer: y (B*R, n) = x W^T + each image's bias,
 * or y += that when `add` (a residual branch), with W packed in fp32 (wp) or
 * bf16 (wb; the other NULL); post applied to the result.  The bias is laid
 * down by the GEMM's own threads on the columns each of them computes. */
static void packed_rows(const vit_model *m, const vit_acts *a, float *y, const float *x,
                        const float *wp, const uint16_t *wb, const float *bias, bool add,
                        gemm_post post, int B, int R, int n, int k)
{
    for (int b = 0; b < B; b++)
        a->row_bias[b] = image_bias(m, a, bias, b);
    gemm_bias init = {a->row_bias, R, add};
    if (wb)
        gemm_packed_bf16(a->team, B * R, n, k, x, (size_t)k, wb, y, (size_t)n, &init, post,
                         a->gemm_scratch, a->gemm_scratch_floats);
    else
        gemm_packed(a->team, B * R, n, k, x, (size_t)k, wp, y, (size_t)n, &init, post,
                    a->gemm_scratch, a->gemm_scratch_floats);
}

/* y (B*R, n) += each image's bias. */
static void add_bias_rows(const vit_model *m, const vit_acts *a, float *y, const float *bias,
                          int B, int R, int n)
{
    for (int b = 0; b < B; b++)
        bias_add_forward(y + (size_t)b * R * n, image_bias(m, a, bias, b), (size_t)R, n);
}

/* LayerNorm of B*R rows with each image's bias (gains are frozen, shared). */
static void layernorm_rows(const vit_model *m, const vit_acts *a, float *out, float *mean,
                           float *rstd, const float *x, const float *w, const float *bias, int B,
                           int R, int C, float eps)
{
    for (int b = 0; b < B; b++) {
        size_t first = (size_t)b * R;
        (a->avx512 ? layernorm_forward_avx512 : layernorm_forward)(
            out + first * C, mean ? mean + first : NULL, rstd ? rstd + first : NULL,
            x + first * C, w, image_bias(m, a, bias, b), (size_t)R, C, eps);
    }
}

typedef struct layernorm_job {
    float *out, *mean, *rstd;
    const float *x, *w;
    const float *const *bias; /* per image */
    int B, R, C;
    float eps;
    vit_team *team;
    int chunks; /* of LAYERNORM_CHUNK_ROWS rows, shared ahead */
} layernorm_job;

enum { LAYERNORM_CHUNK_ROWS = 16 };

/* Chunks of rows, taken as the members come (see vit_team_take), each cut at
 * image boundaries for the biases. */
static void layernorm_region(void *p, int member, int threads)
{
    const layernorm_job *j = p;
    int rows = j->B * j->R;
    vit_share share = vit_team_shared(j->team, 0, member, threads, j->chunks);
    for (int chunk; vit_team_take(&share, &chunk);) {
        int r0 = chunk * LAYERNORM_CHUNK_ROWS;
        int r1 = rows - r0 < LAYERNORM_CHUNK_ROWS ? rows : r0 + LAYERNORM_CHUNK_ROWS;
        while (r0 < r1) {
            int b = r0 / j->R, end = (b + 1) * j->R < r1 ? (b + 1) * j->R : r1;
            size_t off = (size_t)r0 * j->C;
            layernorm_forward_avx512(j->out + off, j->mean ? j->mean + r0 : NULL,
                                     j->rstd ? j->rstd + r0 : NULL, j->x + off, j->w,
                                     j->bias[b], (size_t)(end - r0), j->C, j->eps);
            r0 = end;
        }
    }
}

/* layernorm_rows on the team with the AVX-512 kernel. */
static void layernorm_rows_team(const vit_model *m, const vit_acts *a, float *out, float *mean,
                                float *rstd, const float *x, const float *w, const float *bias,
                                int B, int R, int C, float eps)
{
    for (int b = 0; b < B; b++)
        a->row_bias[b] = image_bias(m, a, bias, b);
    int chunks = (B * R + LAYERNORM_CHUNK_ROWS - 1) / LAYERNORM_CHUNK_ROWS;
    layernorm_job j = {out, mean, rstd, x, w, a->row_bias, B, R, C, eps, a->team, chunks};
    vit_team_share_ahead(a->team, 0, chunks);
    vit_team_run(a->team, layernorm_region, &j);
}

const char *vit_op_name(vit_op op)
{
    static const char *names[VIT_OP_COUNT] = {
        "patch_unfold", "patch_gemm", "embed_add", "layernorm", "qkv_gemm", "attention",
        "proj_gemm", "fc1_gemm", "activation", "fc2_gemm", "bias_add", "pool_head",
        "bwd_head", "bwd_dx_gemm", "bwd_dw_gemm", "bwd_bias_grad", "bwd_attention",
        "bwd_layernorm", "bwd_activation", "bwd_embed",
    };
    return op >= 0 && op < VIT_OP_COUNT ? names[op] : "?";
}

vit_status vit_state_create(const vit_model *m, int max_batch, int threads, vit_state **out,
                            vit_error *err)
{
    return vit_state_create_path(m, max_batch, threads, VIT_PATH_AUTO, out, err);
}

/* ---- state layout ----
 * A state is one allocation cut into these buffers, in this order.  Each
 * holds max_batch images' worth of floats (per_image) plus scratch that does
 * not grow with the batch (fixed).  state_plan sizes them for both
 * vit_state_bytes and vit_state_create_path, so what a caller budgets is
 * what a state takes. */
enum {
    SB_X, SB_LN, SB_QKV, SB_ATTN, SB_PROBS, SB_HIDDEN, SB_PATCHES, SB_PATCH_OUT, SB_POOLED,
    SB_POOLED_LN, SB_FEAT, SB_GEMM_SCRATCH, SB_ATTN_SCRATCH, SB_COUNT
};

/* Floats a buffer takes in the block: 64-byte aligned, an ASan gap after. */
static uint64_t state_slot_floats(uint64_t n)
{
    return ((n + 15) & ~(uint64_t)15) + STATE_GAP;
}

/* Checks create's arguments, resolves the path (*packed) and sizes every
 * buffer (n[i] floats) and the whole block (*bytes), allocating nothing.
 * Fails with VIT_ERR_TOO_LARGE when the block would pass VIT_MAX_STATE_BYTES
 * or size_t; *bytes is set to what was asked for when it fits. */
static vit_status state_plan(const vit_model *m, int max_batch, int threads, vit_path path,
                             size_t n[SB_COUNT], bool *packed, size_t *bytes, vit_error *err)
{
    *bytes = 0;
    if (max_batch < 1 || max_batch > 4096)
        return vit_error_set(err, VIT_ERR_INVALID, "max_batch %d is outside [1, 4096]", max_batch);
    if (threads < 1 || threads > 64)
        return vit_error_set(err, VIT_ERR_INVALID, "threads %d is outside [1, 64]", threads);
    if (path != VIT_PATH_AUTO && path != VIT_PATH_PACKED && path != VIT_PATH_PORTABLE)
        return vit_error_set(err, VIT_ERR_INVALID, "unknown forward path %d", (int)path);
    /* the packed path needs the packed weights and a CPU (and environment)
     * that allows the AVX-512 kernels now, not only when the model was packed */
    bool can_pack = m->w.blocks && (m->w.blocks[0].qkv_wp || m->w.blocks[0].qkv_wb) &&
                    gemm_packed_available() &&
                    (!m->w.blocks[0].qkv_wb || gemm_bf16_available() != GEMM_BF16_NONE);
    if (path == VIT_PATH_PACKED && !can_pack)
        return vit_error_set(err, VIT_ERR_UNSUPPORTED,
                             "the packed path needs a packed model and an AVX-512 CPU");
    *packed = path != VIT_PATH_PORTABLE && can_pack;
    if (!*packed && m->unpacked_released)
        return vit_error_set(err, VIT_ERR_UNSUPPORTED,
                             "the portable path multiplies the unpacked weights, which this "
                             "model released (one copy of the weights: the packed one)");
    const vit_config *c = &m->cfg;
    /* In 64 bits: the config bounds keep each per-image term below 2^31
     * floats (vit_config_validate), so B times it stays below 2^43. */
    uint64_t B = (uint64_t)max_batch, N = (uint64_t)vit_config_tokens(c);
    uint64_t C = (uint64_t)c->width, GG = N - 1, P = (uint64_t)c->patch_size;
    uint64_t M = (uint64_t)c->mlp_dim, F = (uint64_t)vit_config_feature_dim(c);
    uint64_t per_image[SB_COUNT] = {
        [SB_X] = N * C, [SB_LN] = N * C, [SB_QKV] = N * 3 * C, [SB_ATTN] = N * C,
        [SB_HIDDEN] = N * M, [SB_PATCHES] = GG * 3 * P * P, [SB_PATCH_OUT] = GG * C,
        [SB_POOLED] = C, [SB_POOLED_LN] = C, [SB_FEAT] = F,
    };
    /* The GEMM scratch serves every product of up to B*N rows: the patch
     * GEMM's B*(N-1) and any batch below max_batch. */
    /* bf16 keeps LayerNorm's and MLP-in's outputs packed for the products
     * that read them (block_forward_bf16): whole slivers of rows, so a
     * little more than B*N*C and B*N*M */
    uint64_t ln_words = *packed ? gemm_bf16_a_words((int)(B * N), (int)C) : 0;
    uint64_t hidden_words = *packed ? gemm_bf16_a_words((int)(B * N), (int)M) : 0;
    uint64_t fixed[SB_COUNT] = {
        [SB_PROBS] = N * N, /* one attention matrix, reused for every (b, h) */
        [SB_LN] = ln_words > B * N * C ? ln_words - B * N * C : 0,
        [SB_HIDDEN] = hidden_words > B * N * M ? hidden_words - B * N * M : 0,
        [SB_GEMM_SCRATCH] = *packed ? gemm_packed_scratch_floats((int)(B * N)) : 0,
        [SB_ATTN_SCRATCH] = *packed ? (uint64_t)threads *
                                          attention_scratch_floats((int)N, (int)C, c->heads)
                                    : 0,
    };
    uint64_t image = 0, total = 0;
    for (int i = 0; i < SB_COUNT; i++) {
        image += per_image[i];
        total += state_slot_floats(B * per_image[i] + fixed[i]);
    }
    /* the per-image terms are the ones vit_config_validate bounded */
    VIT_ASSERT(image * sizeof(float) == vit_config_image_bytes(c));
    uint64_t total_bytes = total * sizeof(float);
    if (total_bytes <= SIZE_MAX)
        *bytes = (size_t)total_bytes;
    if (total_bytes > VIT_MAX_STATE_BYTES || total_bytes > SIZE_MAX)
        return vit_error_set(err, VIT_ERR_TOO_LARGE,
                             "a forward state for batch %d needs %llu bytes (%llu per image), "
                             "more than the limit of %llu",
                             max_batch, (unsigned long long)total_bytes,
                             (unsigned long long)(image * sizeof(float)),
                             (unsigned long long)(total_bytes > SIZE_MAX ? SIZE_MAX
                                                                         : VIT_MAX_STATE_BYTES));
    for (int i = 0; i < SB_COUNT; i++)
        n[i] = (size_t)(B * per_image[i] + fixed[i]);
    return VIT_OK;
}

vit_status vit_state_bytes(const vit_model *m, int max_batch, int threads, vit_path path,
                           size_t *out, vit_error *err)
{
    size_t n[SB_COUNT];
    bool packed;
    return state_plan(m, max_batch, threads, path, n, &packed, out, err);
}

vit_status vit_state_create_path(const vit_model *m, int max_batch, int threads, vit_path path,
                                 vit_state **out, vit_error *err)
{
    *out = NULL;
    size_t n[SB_COUNT], bytes;
    bool packed;
    vit_status st = state_plan(m, max_batch, threads, path, n, &packed, &bytes, err);
    if (st != VIT_OK)
        return st;
    const vit_config *c = &m->cfg;
    size_t B = (size_t)max_batch;
    vit_state *s = calloc(1, sizeof *s);
    if (!s)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for a forward state");
    vit_block_acts *sh = &s->shared;
    vit_acts *a = &s->acts;
    float **slots[SB_COUNT] = {
        [SB_X] = &a->x, [SB_LN] = &sh->ln1, [SB_QKV] = &sh->qkv, [SB_ATTN] = &sh->attn,
        [SB_PROBS] = &sh->probs, [SB_HIDDEN] = &sh->h_pre, [SB_PATCHES] = &a->patches,
        [SB_PATCH_OUT] = &a->patch_out, [SB_POOLED] = &a->pooled, [SB_POOLED_LN] = &a->pooled_ln,
        [SB_FEAT] = &a->feat, [SB_GEMM_SCRATCH] = &a->gemm_scratch,
        [SB_ATTN_SCRATCH] = &a->attn_scratch,
    };
    a->blocks = calloc((size_t)c->depth, sizeof *a->blocks);
    s->out_rows = calloc(B, sizeof *s->out_rows);
    s->row_bias = calloc(B, sizeof *s->row_bias);
    if (!a->blocks || !s->out_rows || !s->row_bias || !(s->block = vit_alloc_large(bytes))) {
        vit_state_free(s);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for a batch-%d state (%zu bytes)",
                             max_batch, bytes);
    }
    st = packed ? vit_team_create(threads, &s->team, err) : VIT_OK;
    if (st != VIT_OK) {
        vit_state_free(s);
        return st;
    }
    float *p = s->block;
    for (int i = 0; i < SB_COUNT; i++) {
        *slots[i] = p;
        p += state_slot_floats(n[i]);
#ifdef STATE_ASAN
        ASAN_POISON_MEMORY_REGION(*slots[i] + n[i], sizeof(float) * (size_t)(p - (*slots[i] + n[i])));
#endif
    }
    s->block_floats = bytes / sizeof(float);
    sh->ln2 = sh->ln1;
    sh->h_act = sh->h_pre;
    for (int l = 0; l < c->depth; l++)
        a->blocks[l] = *sh;
    s->max_batch = max_batch;
    s->path = packed ? VIT_PATH_PACKED : VIT_PATH_PORTABLE;
    s->depth = c->depth;
    a->row_bias = s->row_bias;
    a->team = packed ? s->team : NULL;
    a->gemm_scratch_floats = n[SB_GEMM_SCRATCH];
    a->portable = path == VIT_PATH_PORTABLE;
    if (!packed) {
        a->gemm_scratch = NULL;
        a->gemm_scratch_floats = 0;
        a->attn_scratch = NULL;
    }
    *out = s;
    return VIT_OK;
}

vit_path vit_state_path(const vit_state *s)
{
    return s->path;
}

void vit_state_free(vit_state *s)
{
    if (!s)
        return;
    vit_team_free(s->team);
#ifdef STATE_ASAN
    if (s->block)
        ASAN_UNPOISON_MEMORY_REGION(s->block, sizeof(float) * s->block_floats);
#endif
    free(s->block);
    free(s->acts.blocks);
    free(s->out_rows);
    free(s->row_bias);
    free(s);
}

void vit_state_set_profile(vit_state *s, vit_profile *p)
{
    s->acts.profile = p;
}

typedef struct layernorm_bf16_job {
    uint32_t *out;
    const float *x, *w;
    const float *const *bias;
    int m, R, C;
    float eps;
    vit_team *team;
} layernorm_bf16_job;

static void layernorm_bf16_region(void *p, int member, int threads)
{
    const layernorm_bf16_job *j = p;
    vit_share share = vit_team_shared(j->team, 0, member, threads, gemm_bf16_a_slivers(j->m));
    for (int s; vit_team_take(&share, &s);)
        layernorm_bf16_slivers_avx512(j->out, j->x, j->m, j->C, j->w, j->bias, j->R, j->eps, s,
                                      s + 1);
}

/* LayerNorm of B*R rows into the packed A of the bf16 product that reads
 * them (gemm_bf16_a_words(B R, C) words), slivers shared on the team. */
static void layernorm_bf16_team(const vit_model *m, const vit_acts *a, uint32_t *out,
                                const float *x, const float *w, const float *bias, int B, int R,
                                int C, float eps)
{
    for (int b = 0; b < B; b++)
        a->row_bias[b] = image_bias(m, a, bias, b);
    layernorm_bf16_job j = {out, x, w, a->row_bias, B * R, R, C, eps, a->team};
    vit_team_share_ahead(a->team, 0, gemm_bf16_a_slivers(B * R));
    vit_team_run(a->team, layernorm_bf16_region, &j);
}

/* y = x_packed W^T + each image's bias (or y += that when add), or with y
 * NULL the same into next_packed, post applied: a bf16 product whose input
 * a LayerNorm or an earlier product left packed. */
static void packed_rows_bf16(const vit_model *m, const vit_acts *a, float *y,
                             uint32_t *next_packed, const uint32_t *x_packed, const uint16_t *wb,
                             const float *bias, bool add, gemm_post post, int B, int R, int n,
                             int k)
{
    for (int b = 0; b < B; b++)
        a->row_bias[b] = image_bias(m, a, bias, b);
    gemm_bias init = {a->row_bias, R, add};
    if (y)
        gemm_packed_bf16_a(a->team, B * R, n, k, x_packed, wb, y, (size_t)n, &init, post);
    else
        gemm_packed_bf16_a_to_a(a->team, B * R, n, k, x_packed, wb, next_packed, &init, post);
}

/* block_forward_packed in bf16: LayerNorm's outputs go straight into the
 * packed A of QKV and MLP-in, MLP-in's into MLP-out's (gemm.h), so those
 * three products neither pack nor meet at a barrier.  The buffers ln and
 * h_act hold bf16 pairs here (sized by state_plan). */
static void block_forward_bf16(const vit_model *m, const vit_block_weights *w, vit_acts *a,
                               vit_block_acts *k, int B)
{
    const vit_config *c = &m->cfg;
    int N = vit_config_tokens(c), C = c->width, M = c->mlp_dim;
    double r = (double)B * N;
    uint32_t *ln = (uint32_t *)k->ln1, *hidden = (uint32_t *)k->h_act;
    layernorm_bf16_team(m, a, ln, a->x, w->norm1_w, w->norm1_b, B, N, C, c->ln_eps);
    vit_profile_mark(a, VIT_OP_LAYERNORM, 0);
    packed_rows_bf16(m, a, k->qkv, NULL, ln, w->qkv_wb, w->qkv_b, false, GEMM_POST_NONE, B, N,
                     3 * C, C);                                               /* (B,N,3C) */
    vit_profile_mark(a, VIT_OP_QKV_GEMM, r * 3 * C * C);
    attention_forward_team(a->team, k->attn, k->qkv, B, N, C, c->heads, true, a->attn_scratch);
    vit_profile_mark(a, VIT_OP_ATTENTION, 2.0 * B * N * N * C);
    packed_rows(m, a, a->x, k->attn, NULL, w->proj_wb, w->proj_b, true, GEMM_POST_NONE, B, N, C,
                C);                                                           /* x += proj */
    vit_profile_mark(a, VIT_OP_PROJ_GEMM, r * C * C);
    layernorm_bf16_team(m, a, ln, a->x, w->norm2_w, w->norm2_b, B, N, C, c->ln_eps);
    vit_profile_mark(a, VIT_OP_LAYERNORM, 0);
    gemm_post act = c->act == VIT_ACT_GELU ? GEMM_POST_GELU : GEMM_POST_QUICK_GELU;
    packed_rows_bf16(m, a, NULL, hidden, ln, w->fc1_wb, w->fc1_b, false, act, B, N, M, C);
    vit_profile_mark(a, VIT_OP_FC1_GEMM, r * C * M);
    packed_rows_bf16(m, a, a->x, NULL, hidden, w->fc2_wb, w->fc2_b, true, GEMM_POST_NONE, B, N, C,
                     M);                                                      /* x += mlp */
    vit_profile_mark(a, VIT_OP_FC2_GEMM, r * C * M);
}

/* block_forward on packed weights and the state's team: the bias adds ride
 * on the GEMMs, the activation is fused into fc1's tile stores, and the
 * element-wise work is split across the team.  Inference only (nothing kept
 * for a backward pass).  fp32 here; bf16 weights go to block_forward_bf16. */
static void block_forward_packed(const vit_model *m, const vit_block_weights *w, vit_acts *a,
                                 vit_block_acts *k, int B)
{
    if (w->qkv_wb) {
        block_forward_bf16(m, w, a, k, B);
        return;
    }
    const vit_config *c = &m->cfg;
    int N = vit_config_tokens(c), C = c->width, M = c->mlp_dim;
    double r = (double)B * N;
    layernorm_rows_team(m, a, k->ln1, NULL, NULL, a->x, w->norm1_w, w->norm1_b, B, N, C,
                        c->ln_eps);
    vit_profile_mark(a, VIT_OP_LAYERNORM, 0);
    packed_rows(m, a, k->qkv, k->ln1, w->qkv_wp, w->qkv_wb, w->qkv_b, false, GEMM_POST_NONE, B,
                N, 3 * C, C);                                                 /* (B,N,3C) */
    vit_profile_mark(a, VIT_OP_QKV_GEMM, r * 3 * C * C);
    attention_forward_team(a->team, k->attn, k->qkv, B, N, C, c->heads,
                           false, a->attn_scratch);
    vit_profile_mark(a, VIT_OP_ATTENTION, 2.0 * B * N * N * C);
    packed_rows(m, a, a->x, k->attn, w->proj_wp, w->proj_wb, w->proj_b, true, GEMM_POST_NONE, B,
                N, C, C);                                                     /* x += proj */
    vit_profile_mark(a, VIT_OP_PROJ_GEMM, r * C * C);
    layernorm_rows_team(m, a, k->ln2, NULL, NULL, a->x, w->norm2_w, w->norm2_b, B, N, C,
                        c->ln_eps);
    vit_profile_mark(a, VIT_OP_LAYERNORM, 0);
    gemm_post act = c->act == VIT_ACT_GELU ? GEMM_POST_GELU : GEMM_POST_QUICK_GELU;
    packed_rows(m, a, k->h_act, k->ln2, w->fc1_wp, w->fc1_wb, w->fc1_b, false, act, B, N, M,
                C);                                                           /* (B,N,M) */
    vit_profile_mark(a, VIT_OP_FC1_GEMM, r * C * M);
    packed_rows(m, a, a->x, k->h_act, w->fc2_wp, w->fc2_wb, w->fc2_b, true, GEMM_POST_NONE, B,
                N, C, M);                                                     /* x += mlp */
    vit_profile_mark(a, VIT_OP_FC2_GEMM, r * C * M);
}

/* ---- the training forward on the packed path ----
 * A vit_train_state's acts (a->train) run the packed kernels on its team
 * like inference, but keep what the backward pass reads (vit_train.c).  A
 * model without packed weights (full fine-tuning changes them every step)
 * has each weight packed by the GEMM's own members per call. */

/* packed_rows on the fp32 packing, or with w_packed NULL (no packing, or
 * only a bf16 one) the same product on W (n, k) packed per call;
 * a->gemm_scratch is sized for that (vit_train.c). */
static void train_rows(const vit_model *m, const vit_acts *a, float *y, const float *x,
                       const float *w, const float *w_packed, const float *bias, bool add,
                       gemm_post post, int B, int R, int n, int k)
{
    if (w_packed) { /* fp32 only: training does not run on bf16 weights */
        packed_rows(m, a, y, x, w_packed, NULL, bias, add, post, B, R, n, k);
        return;
    }
    for (int b = 0; b < B; b++)
        a->row_bias[b] = image_bias(m, a, bias, b);
    gemm_bias init = {a->row_bias, R, add};
    gemm_packed_raw(a->team, B * R, n, k, x, (size_t)k, false, w, (size_t)k, true, y, (size_t)n,
                    &init, post, a->gemm_scratch, a->gemm_scratch_floats);
}

typedef struct elementwise_job {
    float *out;
    const float *x;
    size_t n;
    vit_act act; /* for activation_region */
} elementwise_job;

/* A member's share of n floats, cut at multiples of 16 (whole vectors). */
static void elementwise_split(size_t n, int member, int threads, size_t *i0, size_t *i1)
{
    size_t vectors = (n + 15) / 16, per = vectors / (size_t)threads, extra = vectors % (size_t)threads;
    size_t m = (size_t)member, v0 = m * per + (m < extra ? m : extra);
    size_t v1 = v0 + per + (m < extra ? 1 : 0);
    *i0 = v0 * 16 < n ? v0 * 16 : n;
    *i1 = v1 * 16 < n ? v1 * 16 : n;
}

static void copy_region(void *p, int member, int threads)
{
    const elementwise_job *j = p;
    size_t i0, i1;
    elementwise_split(j->n, member, threads, &i0, &i1);
    memcpy(j->out + i0, j->x + i0, sizeof(float) * (i1 - i0));
}

static void activation_region(void *p, int member, int threads)
{
    const elementwise_job *j = p;
    size_t i0, i1;
    elementwise_split(j->n, member, threads, &i0, &i1);
    (j->act == VIT_ACT_GELU ? gelu_forward_avx512 : quick_gelu_forward_avx512)(
        j->out + i0, j->x + i0, i1 - i0);
}

/* out (n) = x on the team. */
static void copy_team(vit_team *team, float *out, const float *x, size_t n)
{
    elementwise_job j = {out, x, n, VIT_ACT_GELU};
    vit_team_run(team, copy_region, &j);
}

/* block_forward_packed keeping what vit_train.c's backward reads: x_in,
 * x_mid, both LayerNorms' statistics, qkv, the pre-activation h_pre (the
 * activation runs apart, into h_act, unless h_act == h_pre: nothing kept)
 * and, for full fine-tuning, the inputs of the linear layers (their slots
 * are per block then). */
static void block_forward_train(const vit_model *m, const vit_block_weights *w, vit_acts *a,
                                vit_block_acts *k, int B)
{
    const vit_config *c = &m->cfg;
    int N = vit_config_tokens(c), C = c->width, M = c->mlp_dim;
    size_t rows = (size_t)B * N;
    double r = (double)rows;
    if (k->x_in)
        copy_team(a->team, k->x_in, a->x, rows * C);
    layernorm_rows_team(m, a, k->ln1, k->ln1_mean, k->ln1_rstd, a->x, w->norm1_w, w->norm1_b, B,
                        N, C, c->ln_eps);
    vit_profile_mark(a, VIT_OP_LAYERNORM, 0);
    train_rows(m, a, k->qkv, k->ln1, w->qkv_w, w->qkv_wp, w->qkv_b, false, GEMM_POST_NONE, B, N,
               3 * C, C);                                                     /* (B,N,3C) */
    vit_profile_mark(a, VIT_OP_QKV_GEMM, r * 3 * C * C);
    attention_forward_team(a->team, k->attn, k->qkv, B, N, C, c->heads, false,
                           a->attn_scratch);
    vit_profile_mark(a, VIT_OP_ATTENTION, 2.0 * B * N * N * C);
    train_rows(m, a, a->x, k->attn, w->proj_w, w->proj_wp, w->proj_b, true, GEMM_POST_NONE, B, N,
               C, C);                                                         /* x += proj */
    vit_profile_mark(a, VIT_OP_PROJ_GEMM, r * C * C);
    if (k->x_mid)
        copy_team(a->team, k->x_mid, a->x, rows * C);
    layernorm_rows_team(m, a, k->ln2, k->ln2_mean, k->ln2_rstd, a->x, w->norm2_w, w->norm2_b, B,
                        N, C, c->ln_eps);
    vit_profile_mark(a, VIT_OP_LAYERNORM, 0);
    gemm_post act = c->act == VIT_ACT_GELU ? GEMM_POST_GELU : GEMM_POST_QUICK_GELU;
    bool fuse = k->h_act == k->h_pre; /* the pre-activation is not kept */
    train_rows(m, a, k->h_pre, k->ln2, w->fc1_w, w->fc1_wp, w->fc1_b, false,
               fuse ? act : GEMM_POST_NONE, B, N, M, C);                      /* (B,N,M) */
    vit_profile_mark(a, VIT_OP_FC1_GEMM, r * C * M);
    if (!fuse) {
        elementwise_job j = {k->h_act, k->h_pre, rows * (size_t)M, c->act};
        vit_team_run(a->team, activation_region, &j);
        vit_profile_mark(a, VIT_OP_ACTIVATION, 0);
    }
    train_rows(m, a, a->x, k->h_act, w->fc2_w, w->fc2_wp, w->fc2_b, true, GEMM_POST_NONE, B, N, C,
               M);                                                            /* x += mlp */
    vit_profile_mark(a, VIT_OP_FC2_GEMM, r * C * M);
}

/* out (n) = act(x) on the calling thread, where the activation does not
 * ride on fc1's tiles.  Training takes this too: the vector GELU saves it
 * seconds a step at batch 32. */
static void activation_rows(vit_acts *a, vit_act act, float *out, const float *x, size_t n)
{
    if (act == VIT_ACT_GELU)
        (a->avx512 ? gelu_forward_avx512 : gelu_forward)(out, x, n);
    else
        (a->avx512 ? quick_gelu_forward_avx512 : quick_gelu_forward)(out, x, n);
    vit_profile_mark(a, VIT_OP_ACTIVATION, 0);
}

/* ref: timm vision_transformer.py Block.forward (pre-LN) */
static void block_forward(const vit_model *m, const vit_block_weights *w, vit_acts *a,
                          vit_block_acts *k, int B)
{
    const vit_config *c = &m->cfg;
    int N = vit_config_tokens(c), C = c->width, M = c->mlp_dim;
    size_t rows = (size_t)B * N;
    double r = (double)rows;
    if (k->x_in)
        memcpy(k->x_in, a->x, sizeof(float) * rows * C);
    layernorm_rows(m, a, k->ln1, k->ln1_mean, k->ln1_rstd, a->x, w->norm1_w, w->norm1_b, B, N, C,
                   c->ln_eps);
    vit_profile_mark(a, VIT_OP_LAYERNORM, 0);
    linear_rows(m, a, k->qkv, k->ln1, w->qkv_w, w->qkv_b, B, N, 3 * C, C);    /* (B,N,3C) */
    vit_profile_mark(a, VIT_OP_QKV_GEMM, r * 3 * C * C);
    attention_forward(k->attn, k->probs, k->probs_stride, k->qkv, B, N, C, c->heads);
    vit_profile_mark(a, VIT_OP_ATTENTION, 2.0 * B * N * N * C);
    add_bias_rows(m, a, a->x, w->proj_b, B, N, C);                            /* x += proj */
    vit_profile_mark(a, VIT_OP_BIAS_ADD, 0);
    gemm((int)rows, C, C, 1.0f, k->attn, C, w->proj_w, C, true, 1.0f, a->x, C);
    vit_profile_mark(a, VIT_OP_PROJ_GEMM, r * C * C);

    if (k->x_mid)
        memcpy(k->x_mid, a->x, sizeof(float) * rows * C);
    layernorm_rows(m, a, k->ln2, k->ln2_mean, k->ln2_rstd, a->x, w->norm2_w, w->norm2_b, B, N, C,
                   c->ln_eps);
    vit_profile_mark(a, VIT_OP_LAYERNORM, 0);
    linear_rows(m, a, k->h_pre, k->ln2, w->fc1_w, w->fc1_b, B, N, M, C);      /* (B,N,M) */
    vit_profile_mark(a, VIT_OP_FC1_GEMM, r * C * M);
    activation_rows(a, c->act, k->h_act, k->h_pre, rows * (size_t)M);
    add_bias_rows(m, a, a->x, w->fc2_b, B, N, C);                             /* x += mlp */
    vit_profile_mark(a, VIT_OP_BIAS_ADD, 0);
    gemm((int)rows, C, M, 1.0f, k->h_act, M, w->fc2_w, M, true, 1.0f, a->x, C);
    vit_profile_mark(a, VIT_OP_FC2_GEMM, r * C * M);
}

/* One linear layer of block_forward_last_class on the acts' path: y = x W^T
 * + each image's bias (y += that when add), post applied.  The OpenBLAS
 * path applies no post: its caller runs the activation apart. */
static void class_rows_linear(const vit_model *m, const vit_acts *a, float *y, const float *x,
                              const float *w, const float *wp, const uint16_t *wb,
                              const float *bias, bool add, gemm_post post, int B, int R, int n,
                              int k)
{
    if (a->team && a->train) {
        train_rows(m, a, y, x, w, wp, bias, add, post, B, R, n, k);
    } else if (a->team) {
        packed_rows(m, a, y, x, wp, wb, bias, add, post, B, R, n, k);
    } else if (add) {
        VIT_ASSERT(post == GEMM_POST_NONE);
        add_bias_rows(m, a, y, bias, B, R, n);
        gemm(B * R, n, k, 1.0f, x, k, w, k, true, 1.0f, y, n);
    } else {
        VIT_ASSERT(post == GEMM_POST_NONE);
        linear_rows(m, a, y, x, w, bias, B, R, n, k);
    }
}

/* The last block of a class-token model, for the class tokens' rows only:
 * the pooling reads nothing else, and every product and LayerNorm past
 * attention's keys and values (which need all N tokens) is row by row, so
 * those run on B rows instead of B*N: 76% of the block's multiply-adds for
 * ViT-B/16, 6% of its forward pass (vit_config_forward_macs).  The
 * class rows' residual stream is a->pooled, which head_forward then reads.
 * Training keeps what vit_train.c's block_backward_last_class reads, in
 * the slots the method gives the block (vit_train_state_create_path): x_in,
 * LayerNorm 1's statistics and qkv for every row; x_mid, LayerNorm 2's
 * statistics and h_pre for the class rows, and for full fine-tuning the
 * inputs of proj, fc1 and fc2 too. */
static void block_forward_last_class(const vit_model *m, const vit_block_weights *w, vit_acts *a,
                                     vit_block_acts *k, int B)
{
    const vit_config *c = &m->cfg;
    int N = vit_config_tokens(c), C = c->width, M = c->mlp_dim;
    size_t rows = (size_t)B * N;
    if (k->x_in && a->team)
        copy_team(a->team, k->x_in, a->x, rows * C);
    else if (k->x_in)
        memcpy(k->x_in, a->x, sizeof(float) * rows * C);
    if (a->team && w->qkv_wb && !a->train) {
        layernorm_bf16_team(m, a, (uint32_t *)k->ln1, a->x, w->norm1_w, w->norm1_b, B, N, C,
                            c->ln_eps);
        vit_profile_mark(a, VIT_OP_LAYERNORM, 0);
        packed_rows_bf16(m, a, k->qkv, NULL, (uint32_t *)k->ln1, w->qkv_wb, w->qkv_b, false,
                         GEMM_POST_NONE, B, N, 3 * C, C);
    } else {
        (a->team ? layernorm_rows_team : layernorm_rows)(m, a, k->ln1, k->ln1_mean, k->ln1_rstd,
                                                         a->x, w->norm1_w, w->norm1_b, B, N, C,
                                                         c->ln_eps);
        vit_profile_mark(a, VIT_OP_LAYERNORM, 0);
        class_rows_linear(m, a, k->qkv, k->ln1, w->qkv_w, w->qkv_wp, w->qkv_wb, w->qkv_b, false,
                          GEMM_POST_NONE, B, N, 3 * C, C);
    }
    vit_profile_mark(a, VIT_OP_QKV_GEMM, (double)rows * 3 * C * C);
    attention_first_query(k->attn, k->probs, k->qkv, B, N, C, c->heads);     /* (B,C) */
    vit_profile_mark(a, VIT_OP_ATTENTION, 2.0 * B * N * C);
    float *x = a->pooled; /* (B,C): the class rows from here on */
    for (int b = 0; b < B; b++)
        memcpy(x + (size_t)b * C, a->x + (size_t)b * N * C, sizeof(float) * (size_t)C);
    class_rows_linear(m, a, x, k->attn, w->proj_w, w->proj_wp, w->proj_wb, w->proj_b, true,
                      GEMM_POST_NONE, B, 1, C, C);                            /* x += proj */
    vit_profile_mark(a, VIT_OP_PROJ_GEMM, (double)B * C * C);
    if (k->x_mid)
        memcpy(k->x_mid, x, sizeof(float) * (size_t)B * C);
    (a->team ? layernorm_rows_team : layernorm_rows)(m, a, k->ln2, k->ln2_mean, k->ln2_rstd, x,
                                                     w->norm2_w, w->norm2_b, B, 1, C, c->ln_eps);
    vit_profile_mark(a, VIT_OP_LAYERNORM, 0);
    /* the activation rides on fc1's tiles unless its input is kept or the
     * path has no such tiles */
    bool fuse = a->team && k->h_act == k->h_pre;
    gemm_post act = c->act == VIT_ACT_GELU ? GEMM_POST_GELU : GEMM_POST_QUICK_GELU;
    class_rows_linear(m, a, k->h_pre, k->ln2, w->fc1_w, w->fc1_wp, w->fc1_wb, w->fc1_b, false,
                      fuse ? act : GEMM_POST_NONE, B, 1, M, C);               /* (B,M) */
    vit_profile_mark(a, VIT_OP_FC1_GEMM, (double)B * C * M);
    if (!fuse)
        activation_rows(a, c->act, k->h_act, k->h_pre, (size_t)B * M);
    class_rows_linear(m, a, x, k->h_act, w->fc2_w, w->fc2_wp, w->fc2_wb, w->fc2_b, true,
                      GEMM_POST_NONE, B, 1, C, M);                            /* x += mlp */
    vit_profile_mark(a, VIT_OP_FC2_GEMM, (double)B * C * M);
}

/* ref: timm vision_transformer.py VisionTransformer._pos_embed / forward_features */
static void embed_forward(const vit_model *m, vit_acts *a, const float *images, int B)
{
    const vit_config *c = &m->cfg;
    const vit_weights *w = &m->w;
    int N = vit_config_tokens(c), C = c->width, P = c->patch_size;
    int GG = N - 1;
    patch_unfold_forward(a->patches, images, B, c->image_size, P);
    vit_profile_mark(a, VIT_OP_PATCH_UNFOLD, 0);
    /* patch embedding as one GEMM: (B*G*G, 3PP) x (C, 3PP)^T */
    if (a->team && a->train)
        train_rows(m, a, a->patch_out, a->patches, w->patch_w, w->patch_wp, w->patch_b, false,
                   GEMM_POST_NONE, B, GG, C, 3 * P * P);
    else if (a->team)
        packed_rows(m, a, a->patch_out, a->patches, w->patch_wp, w->patch_wb, w->patch_b, false,
                    GEMM_POST_NONE, B, GG, C, 3 * P * P);
    else
        linear_rows(m, a, a->patch_out, a->patches, w->patch_w, w->patch_b, B, GG, C, 3 * P * P);
    vit_profile_mark(a, VIT_OP_PATCH_GEMM, (double)B * GG * C * 3 * P * P);
    for (int b = 0; b < B; b++) {
        float *xb = a->x + (size_t)b * N * C;
        for (int i = 0; i < C; i++)
            xb[i] = w->cls_token[i] + w->pos_embed[i];
        for (int t = 1; t < N; t++) {
            const float *pe = a->patch_out + ((size_t)b * GG + (size_t)(t - 1)) * C;
            const float *pos = w->pos_embed + (size_t)t * C;
            float *dst = xb + (size_t)t * C;
            for (int i = 0; i < C; i++)
                dst[i] = pe[i] + pos[i];
        }
    }
    vit_profile_mark(a, VIT_OP_EMBED_ADD, 0);
    if (c->ln_pre && a->team) {
        if (a->x_embed) /* training keeps LN_pre's input and statistics */
            copy_team(a->team, a->x_embed, a->x, (size_t)B * N * C);
        layernorm_rows_team(m, a, a->x, a->pre_mean, a->pre_rstd, a->x, w->norm_pre_w,
                            w->norm_pre_b, B, N, C, c->ln_eps);
        vit_profile_mark(a, VIT_OP_LAYERNORM, 0);
    } else if (c->ln_pre) {
        if (a->x_embed)
            memcpy(a->x_embed, a->x, sizeof(float) * (size_t)B * N * C);
        layernorm_rows(m, a, a->x, a->pre_mean, a->pre_rstd, a->x, w->norm_pre_w, w->norm_pre_b,
                       B, N, C, c->ln_eps);
        vit_profile_mark(a, VIT_OP_LAYERNORM, 0);
    }
}

/* Classes of image b's head (0: none, output the features). */
static int image_classes(const vit_model *m, const vit_acts *a, int b)
{
    return a->arenas && a->arenas[b] ? a->classes[b] : m->cfg.num_classes;
}

/* Pooling, final norm, projection (into a->feat), then each image's head
 * (vit_head_acts).  A class-token model's class rows are already pooled
 * (block_forward_last_class); a mean-pooled one averages its patch tokens. */
static void head_forward(const vit_model *m, vit_acts *a, int B, float *const *out)
{
    const vit_config *c = &m->cfg;
    const vit_weights *w = &m->w;
    int N = vit_config_tokens(c), C = c->width, F = vit_config_feature_dim(c);
    /* ref: timm VisionTransformer.forward_head, global_pool='avg' over patch tokens */
    for (int b = 0; b < B && c->pool == VIT_POOL_MEAN; b++)
        for (int i = 0; i < C; i++) {
            const float *xb = a->x + (size_t)b * N * C;
            double sum = 0;
            for (int t = 1; t < N; t++)
                sum += xb[(size_t)t * C + i];
            a->pooled[(size_t)b * C + i] = (float)(sum / (N - 1));
        }
    /* LayerNorm is per token, so normalising only the pooled row equals
     * normalising all tokens and then taking the class token. */
    layernorm_rows(m, a, a->pooled_ln, a->norm_mean, a->norm_rstd, a->pooled, w->norm_w, w->norm_b,
                   B, 1, C, c->ln_eps);
    const float *feat = a->pooled_ln;
    if (c->proj_dim > 0) {
        if (a->team)
            gemm_rows_team(a->team, a->feat, a->pooled_ln, w->proj_w, NULL, B, F, C);
        else
            linear_forward(a->feat, a->pooled_ln, w->proj_w, NULL, B, F, C);  /* (B, D) */
        feat = a->feat;
    } else if (a->feat != a->pooled_ln) {
        memcpy(a->feat, a->pooled_ln, sizeof(float) * (size_t)B * C);
    }
    vit_head_acts(m, a, feat, B, out);
    vit_profile_mark(a, VIT_OP_POOL_HEAD,
                 (double)B * ((c->proj_dim > 0 ? (double)C * F : 0) + (double)c->num_classes * F));
}

void vit_head_acts(const vit_model *m, vit_acts *a, const float *feat, int B, float *const *out)
{
    int F = vit_config_feature_dim(&m->cfg);
    for (int b = 0; b < B;) {
        int K = image_classes(m, a, b), e = b + 1;
        const float *arena = a->arenas && a->arenas[b] ? a->arenas[b] : m->trainable;
        while (e < B && image_classes(m, a, e) == K &&
               (a->arenas && a->arenas[e] ? a->arenas[e] : m->trainable) == arena &&
               out[e] == out[e - 1] + K)
            e++;
        const float *fb = feat + (size_t)b * F;
        if (K > 0) { /* the head follows the bias section: weight (K, F), then bias (K) */
            const float *hw = arena + m->bias_len;
            if (a->team)
                gemm_rows_team(a->team, out[b], fb, hw, hw + (size_t)K * F, e - b, K, F);
            else
                linear_forward(out[b], fb, hw, hw + (size_t)K * F, e - b, K, F);
        } else {
            memcpy(out[b], fb, sizeof(float) * (size_t)(e - b) * F);
        }
        b = e;
    }
}

void vit_forward_acts(const vit_model *m, vit_acts *a, const float *images, int B,
                      float *const *out)
{
    a->avx512 = !a->portable && cpu_has_avx512();
    if (a->profile) {
        a->mark = now_seconds();
        a->profile->fused = a->team != NULL;
    }
    embed_forward(m, a, images, B);
    int depth = m->cfg.depth;
    bool class_last = m->cfg.pool == VIT_POOL_CLS; /* block_forward_last_class */
    for (int l = 0; l < depth; l++) {
        if (class_last && l == depth - 1)
            block_forward_last_class(m, &m->w.blocks[l], a, &a->blocks[l], B);
        else if (a->team && a->train)
            block_forward_train(m, &m->w.blocks[l], a, &a->blocks[l], B);
        else if (a->team)
            block_forward_packed(m, &m->w.blocks[l], a, &a->blocks[l], B);
        else
            block_forward(m, &m->w.blocks[l], a, &a->blocks[l], B);
    }
    head_forward(m, a, B, out);
}

vit_status vit_forward(const vit_model *m, vit_state *s, const float *images, int batch,
                       float *out, vit_error *err)
{
    if (batch < 1 || batch > s->max_batch)
        return vit_error_set(err, VIT_ERR_INVALID, "batch %d is outside [1, %d]", batch,
                             s->max_batch);
    VIT_ASSERT(s->depth == m->cfg.depth);
    size_t dim = (size_t)vit_config_output_dim(&m->cfg);
    for (int b = 0; b < batch; b++)
        s->out_rows[b] = out + (size_t)b * dim;
    s->acts.arenas = NULL;
    s->acts.classes = NULL;
    vit_forward_acts(m, &s->acts, images, batch, s->out_rows);
    return VIT_OK;
}

vit_status vit_forward_head(const vit_model *m, vit_state *s, const float *feat, int batch,
                            float *out, vit_error *err)
{
    if (batch < 1 || batch > s->max_batch)
        return vit_error_set(err, VIT_ERR_INVALID, "batch %d is outside [1, %d]", batch,
                             s->max_batch);
    if (m->cfg.num_classes < 1)
        return vit_error_set(err, VIT_ERR_INVALID, "vit_forward_head needs a classification head");
    VIT_ASSERT(s->depth == m->cfg.depth);
    for (int b = 0; b < batch; b++)
        s->out_rows[b] = out + (size_t)b * m->cfg.num_classes;
    s->acts.arenas = NULL;
    s->acts.classes = NULL;
    vit_head_acts(m, &s->acts, feat, batch, s->out_rows);
    return VIT_OK;
}

vit_status vit_forward_rows(const vit_model *m, vit_state *s, const float *images, int batch,
                            const float *const *arenas, const int *classes, float *const *out,
                            vit_error *err)
{
    if (batch < 1 || batch > s->max_batch)
        return vit_error_set(err, VIT_ERR_INVALID, "batch %d is outside [1, %d]", batch,
                             s->max_batch);
    VIT_ASSERT(s->depth == m->cfg.depth);
    for (int b = 0; b < batch; b++)
        if (arenas[b] && (classes[b] < 1 || classes[b] > 1000000))
            return vit_error_set(err, VIT_ERR_INVALID, "image %d: a task head needs 1..1000000 classes", b);
    s->acts.arenas = arenas;
    s->acts.classes = classes;
    vit_forward_acts(m, &s->acts, images, batch, out);
    s->acts.arenas = NULL;
    s->acts.classes = NULL;
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
