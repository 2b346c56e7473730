/*
 * vit_model.c - the parameter table and its two arenas.
 *
 * vit_model_create lays out every canonical tensor of a config in forward
 * order: weights, LayerNorm gains and embeddings in the `frozen` arena, biases
 * and the head in the `trainable` arena (STYLE.md 3).  Each arena is a single
 * allocation; params[] and the role pointers in `w` point into them.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gemm.h"
#include "randinit.h"
#include "task.h"
#include "vit_impl.h"

void *vit_alloc_large(size_t bytes)
{
    enum { HUGE_PAGE = 2 << 20 };
    if (bytes < HUGE_PAGE)
        return aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    size_t rounded = (bytes + HUGE_PAGE - 1) & ~(size_t)(HUGE_PAGE - 1);
    if (rounded < bytes)
        return NULL;
    void *p = aligned_alloc(HUGE_PAGE, rounded);
#ifdef MADV_HUGEPAGE
    if (p)
        madvise(p, rounded, MADV_HUGEPAGE); /* advice only: 4 KiB pages still work */
#endif
    return p;
}

int vit_mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return 0;
    *out = a * b;
    return 1;
}

/* Growable param table under construction. */
typedef struct param_list {
    vit_param *items;
    size_t count, cap;
} param_list;

static int param_add(param_list *l, bool trainable, const char *name, int ndim, int64_t d0,
                     int64_t d1, int64_t d2, int64_t d3)
{
    if (l->count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        vit_param *items = realloc(l->items, cap * sizeof *items);
        if (!items)
            return 0;
        l->items = items;
        l->cap = cap;
    }
    vit_param *p = &l->items[l->count++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    int64_t dims[4] = {d0, d1, d2, d3};
    p->numel = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = dims[i];
        p->numel *= (size_t)dims[i]; /* bounded by vit_config_validate */
    }
    p->trainable = trainable;
    return 1;
}

/* The canonical tensor list of a config, in forward order (see vit.h). */
static int build_params(const vit_config *c, param_list *l)
{
    char n[64];
    int C = c->width, P = c->patch_size, N = vit_config_tokens(c), M = c->mlp_dim;
    int ok = param_add(l, false, "patch_embed.proj.weight", 4, C, 3, P, P);
    if (c->patch_bias)
        ok &= param_add(l, true, "patch_embed.proj.bias", 1, C, 0, 0, 0);
    ok &= param_add(l, false, "cls_token", 3, 1, 1, C, 0);
    ok &= param_add(l, false, "pos_embed", 3, 1, N, C, 0);
    if (c->ln_pre) {
        ok &= param_add(l, false, "norm_pre.weight", 1, C, 0, 0, 0);
        ok &= param_add(l, true, "norm_pre.bias", 1, C, 0, 0, 0);
    }
    for (int i = 0; i < c->depth && ok; i++) {
#define ADD(tr, suffix, nd, a, b)                                   \
    (snprintf(n, sizeof n, "blocks.%d.%s", i, suffix),              \
     param_add(l, tr, n, nd, a, b, 0, 0))
        ok &= ADD(false, "norm1.weight", 1, C, 0);
        ok &= ADD(true, "norm1.bias", 1, C, 0);
        ok &= ADD(false, "attn.qkv.weight", 2, 3 * C, C);
        ok &= ADD(true, "attn.qkv.bias", 1, 3 * C, 0);
        ok &= ADD(false, "attn.proj.weight", 2, C, C);
        ok &= ADD(true, "attn.proj.bias", 1, C, 0);
        ok &= ADD(false, "norm2.weight", 1, C, 0);
        ok &= ADD(true, "norm2.bias", 1, C, 0);
        ok &= ADD(false, "mlp.fc1.weight", 2, M, C);
        ok &= ADD(true, "mlp.fc1.bias", 1, M, 0);
        ok &= ADD(false, "mlp.fc2.weight", 2, C, M);
        ok &= ADD(true, "mlp.fc2.bias", 1, C, 0);
#undef ADD
    }
    ok &= param_add(l, false, "norm.weight", 1, C, 0, 0, 0);
    ok &= param_add(l, true, "norm.bias", 1, C, 0, 0, 0);
    if (c->proj_dim > 0)
        ok &= param_add(l, false, "proj.weight", 2, c->proj_dim, C, 0, 0);
    if (c->num_classes > 0) {
        ok &= param_add(l, true, "head.weight", 2, c->num_classes, vit_config_feature_dim(c), 0,
                        0);
        ok &= param_add(l, true, "head.bias", 1, c->num_classes, 0, 0, 0);
    }
    return ok;
}

static const float *param_data(vit_model *m, const char *name)
{
    vit_param *p = vit_model_find(m, name);
    return p ? p->data : NULL;
}

/* Points the role pointers of m->w at the arenas. */
static void bind_weights(vit_model *m)
{
    vit_weights *w = &m->w;
    char n[64];
    w->patch_w = param_data(m, "patch_embed.proj.weight");
    w->patch_b = param_data(m, "patch_embed.proj.bias");
    w->cls_token = param_data(m, "cls_token");
    w->pos_embed = param_data(m, "pos_embed");
    w->norm_pre_w = param_data(m, "norm_pre.weight");
    w->norm_pre_b = param_data(m, "norm_pre.bias");
    for (int i = 0; i < m->cfg.depth; i++) {
        vit_block_weights *b = &w->blocks[i];
#define GET(field, suffix) \
    (snprintf(n, sizeof n, "blocks.%d.%s", i, suffix), b->field = param_data(m, n))
        GET(norm1_w, "norm1.weight");
        GET(norm1_b, "norm1.bias");
        GET(qkv_w, "attn.qkv.weight");
        GET(qkv_b, "attn.qkv.bias");
        GET(proj_w, "attn.proj.weight");
        GET(proj_b, "attn.proj.bias");
        GET(norm2_w, "norm2.weight");
        GET(norm2_b, "norm2.bias");
        GET(fc1_w, "mlp.fc1.weight");
        GET(fc1_b, "mlp.fc1.bias");
        GET(fc2_w, "mlp.fc2.weight");
        GET(fc2_b, "mlp.fc2.bias");
#undef GET
    }
    w->norm_w = param_data(m, "norm.weight");
    w->norm_b = param_data(m, "norm.bias");
    w->proj_w = param_data(m, "proj.weight");
    w->head_w = param_data(m, "head.weight");
    w->head_b = param_data(m, "head.bias");
}

/* Zeroed arena of n floats (at least one).  calloc, not memset: a large
 * arena comes straight from mmap as zero pages, which loading overwrites
 * once instead of twice. */
static float *arena_alloc(size_t n)
{
    return calloc(n ? n : 1, sizeof(float));
}

vit_status vit_params_plan(const vit_config *cfg, vit_param **params, size_t *count,
                           vit_error *err)
{
    *params = NULL;
    *count = 0;
    vit_status st = vit_config_validate(cfg, err);
    if (st != VIT_OK)
        return st;
    param_list l = {0};
    if (!build_params(cfg, &l)) {
        free(l.items);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory building the parameter table");
    }
    *params = l.items;
    *count = l.count;
    return VIT_OK;
}

/* Builds the param table for cfg and binds it to the given arenas, allocating
 * (zeroed) the ones passed as NULL; *_owned tells vit_model_free what to free. */
static vit_status model_assemble(const vit_config *cfg, float *frozen, float *trainable,
                                 vit_model **out, vit_error *err)
{
    *out = NULL;
    param_list l = {0};
    vit_status st = vit_params_plan(cfg, &l.items, &l.count, err);
    if (st != VIT_OK)
        return st;
    vit_model *m = calloc(1, sizeof *m);
    if (!m) {
        free(l.items);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory building the parameter table");
    }
    m->cfg = *cfg;
    m->params = l.items;
    m->num_params = l.count;
    for (size_t i = 0; i < l.count; i++) {
        if (l.items[i].trainable)
            m->trainable_len += l.items[i].numel;
        else
            m->frozen_len += l.items[i].numel;
    }
    m->owns_frozen = frozen == NULL;
    m->owns_trainable = trainable == NULL;
    m->frozen = frozen ? frozen : arena_alloc(m->frozen_len);
    m->trainable = trainable ? trainable : arena_alloc(m->trainable_len);
    m->w.blocks = calloc((size_t)cfg->depth, sizeof *m->w.blocks);
    if (!m->frozen || !m->trainable || !m->w.blocks) {
        size_t total = m->frozen_len + m->trainable_len; /* read before m is freed */
        vit_model_free(m);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory allocating %zu parameters",
                             total);
    }
    size_t fo = 0, to = 0;
    for (size_t i = 0; i < l.count; i++) {
        vit_param *p = &l.items[i];
        if (p->trainable) {
            p->data = m->trainable + to;
            to += p->numel;
        } else {
            p->data = m->frozen + fo;
            fo += p->numel;
        }
    }
    bind_weights(m);
    m->bias_len = vit_model_bias_count(m);
    *out = m;
    return VIT_OK;
}

vit_status vit_model_create(const vit_config *cfg, vit_model **out, vit_error *err)
{
    return model_assemble(cfg, NULL, NULL, out, err);
}

/* One frozen matrix the packed path multiplies: where its unpacked source
 * and its packed copies are pointed to from m->w, and its shape (n, k). */
typedef struct packed_matrix {
    const float **w;
    const float **fp32;
    const uint16_t **bf16;
    int n, k;
} packed_matrix;

/* How many matrices the packed path multiplies: the patch embedding, then
 * each block's four (depth is bounded by the config). */
static size_t packed_matrix_count(const vit_model *m)
{
    return 1 + 4 * (size_t)m->cfg.depth;
}

/* The i-th of them. */
static packed_matrix packed_matrix_at(vit_model *m, size_t i)
{
    const vit_config *c = &m->cfg;
    int C = c->width, M = c->mlp_dim;
    if (i == 0)
        return (packed_matrix){&m->w.patch_w, &m->w.patch_wp, &m->w.patch_wb, C,
                               3 * c->patch_size * c->patch_size};
    vit_block_weights *b = &m->w.blocks[(i - 1) / 4];
    switch ((i - 1) % 4) {
    case 0: return (packed_matrix){&b->qkv_w, &b->qkv_wp, &b->qkv_wb, 3 * C, C};
    case 1: return (packed_matrix){&b->proj_w, &b->proj_wp, &b->proj_wb, C, C};
    case 2: return (packed_matrix){&b->fc1_w, &b->fc1_wp, &b->fc1_wb, M, C};
    default: return (packed_matrix){&b->fc2_w, &b->fc2_wp, &b->fc2_wb, C, M};
    }
}

static void forget_unpacked(vit_model *m);

/* The frozen arena does not depend on the head (the head is trainable), so a
 * model with another class count can share it as is. */
static vit_status derive(const vit_model *base, int num_classes, bool copy_frozen,
                         const float *trainable, vit_model **out, vit_error *err)
{
    *out = NULL;
    if (copy_frozen && base->unpacked_released)
        return vit_error_set(err, VIT_ERR_UNSUPPORTED,
                             "full fine-tuning needs the backbone's unpacked weights, which this "
                             "process released to keep one copy of them");
    vit_config cfg = base->cfg;
    cfg.num_classes = num_classes;
    vit_model *m = NULL;
    vit_status st = model_assemble(&cfg, copy_frozen ? NULL : base->frozen,
                                   (float *)trainable, &m, err);
    if (st != VIT_OK)
        return st;
    VIT_ASSERT(m->frozen_len == base->frozen_len);
    if (copy_frozen)
        memcpy(m->frozen, base->frozen, sizeof(float) * base->frozen_len);
    if (!trainable) /* bias section first in both arenas; the new head stays zero */
        memcpy(m->trainable, base->trainable, sizeof(float) * vit_model_bias_count(base));
    m->layout = base->layout;
    if (!copy_frozen) { /* counted on the arena's owner: packing and releasing wait for none */
        vit_model *owner = (vit_model *)(base->shares ? base->shares : base);
        m->shares = owner;
        atomic_fetch_add(&owner->views, 1);
    }
    if (!copy_frozen && base->packed) { /* same frozen arena, same packing */
        m->packed = base->packed;
        m->packed_len = base->packed_len;
        m->precision = base->precision;
        for (size_t i = 0; i < packed_matrix_count(m); i++) {
            /* base's slots are only read */
            packed_matrix to = packed_matrix_at(m, i);
            packed_matrix from = packed_matrix_at((vit_model *)base, i);
            *to.fp32 = *from.fp32;
            *to.bf16 = *from.bf16;
        }
        memcpy(m->fingerprint, base->fingerprint, sizeof m->fingerprint);
        if (base->unpacked_released) {
            forget_unpacked(m);
            m->unpacked_released = true;
        }
    }
    *out = m;
    return VIT_OK;
}

vit_status vit_model_derive(const vit_model *base, int num_classes, bool copy_frozen,
                            vit_model **out, vit_error *err)
{
    return derive(base, num_classes, copy_frozen, NULL, out, err);
}

vit_status vit_model_view(const vit_model *base, int num_classes, const float *trainable,
                          vit_model **out, vit_error *err)
{
    return derive(base, num_classes, false, trainable, out, err);
}

void vit_model_free(vit_model *m)
{
    if (!m)
        return;
    if (m->shares)
        atomic_fetch_sub(&((vit_model *)m->shares)->views, 1);
    if (m->owns_frozen)
        free(m->frozen);
    if (m->owns_trainable)
        free(m->trainable);
    if (m->owns_packed)
        free(m->packed);
    free(m->w.blocks);
    free(m->params);
    if (m->labels)
        vit_labels_free(m->labels, m->cfg.num_classes);
    free(m);
}

vit_param *vit_model_find(vit_model *m, const char *canonical_name)
{
    for (size_t i = 0; i < m->num_params; i++)
        if (strcmp(m->params[i].name, canonical_name) == 0)
            return &m->params[i];
    return NULL;
}

void vit_model_randomize(vit_model *m, uint64_t seed)
{
    for (size_t i = 0; i < m->num_params; i++)
        randinit_tensor(m->params[i].data, m->params[i].numel, m->params[i].name, seed);
}

const char *vit_precision_name(vit_precision precision)
{
    return precision == VIT_PRECISION_BF16 ? "bf16" : "fp32";
}

int vit_precision_parse(const char *name, vit_precision *out)
{
    if (strcmp(name, "fp32") == 0)
        *out = VIT_PRECISION_FP32;
    else if (strcmp(name, "bf16") == 0)
        *out = VIT_PRECISION_BF16;
    else
        return 0;
    return 1;
}

/* Bytes of one matrix packed in precision, 64-byte aligned so each panel
 * set starts on a cache line. */
static size_t packed_bytes(const packed_matrix *it, vit_precision precision)
{
    size_t bytes = precision == VIT_PRECISION_BF16
                       ? gemm_packed_weight_bf16_elems(it->n, it->k) * sizeof(uint16_t)
                       : gemm_packed_weight_floats(it->n, it->k) * sizeof(float);
    return (bytes + 63) & ~(size_t)63;
}

/* Gives back the whole pages inside an unpacked matrix: its neighbours
 * (LayerNorm gains, embeddings) share the pages at its ends. */
static void drop_pages(const float *w, size_t floats)
{
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t mask = page > 0 ? (uintptr_t)page - 1 : 4095;
    uintptr_t lo = ((uintptr_t)w + mask) & ~mask, hi = ((uintptr_t)(w + floats)) & ~mask;
    if (hi > lo)
        madvise((void *)lo, hi - lo, MADV_DONTNEED); /* advice: on failure the pages stay */
}

/* vit_model_pack_precision, and with `release` vit_model_pack_release: each
 * matrix's unpacked pages go back as soon as it is packed, so the model
 * never holds both copies of more than one matrix. */
static vit_status pack(vit_model *m, vit_precision precision, bool release, vit_error *err)
{
    if (!gemm_packed_available()) {
        if (precision == VIT_PRECISION_FP32)
            return VIT_OK; /* the portable path multiplies the unpacked weights */
        return vit_error_set(err, VIT_ERR_UNSUPPORTED,
                             "bf16 needs a CPU with AVX-512 (this one has none, or "
                             "VITFIT_NO_AVX512 is set)");
    }
    if (precision == VIT_PRECISION_BF16 && gemm_bf16_available() == GEMM_BF16_NONE)
        return vit_error_set(err, VIT_ERR_UNSUPPORTED,
                             "bf16 needs a CPU with avx512_bf16 (vdpbf16ps); this one has "
                             "AVX-512 without it: use precision fp32 (VITFIT_BF16_EMULATE=1 "
                             "emulates it, slower than fp32, for checks only)");
    if (m->packed && m->precision == precision)
        return release ? vit_model_release_unpacked(m, err) : VIT_OK;
    if (m->shares || atomic_load(&m->views) > 0)
        return vit_error_set(err, VIT_ERR_INVALID,
                             "%s: pack the backbone before deriving views from it",
                             m->shares ? "a view shares its backbone's packing"
                                       : "views share this model's packing");
    if (m->unpacked_released)
        return vit_error_set(err, VIT_ERR_UNSUPPORTED,
                             "cannot repack in %s: the unpacked weights were released",
                             vit_precision_name(precision));
    if (release && !m->owns_frozen)
        return vit_error_set(err, VIT_ERR_INVALID,
                             "only a model that owns its weights can release them");
    if (release) {
        vit_status st = vit_model_fingerprint(m, m->fingerprint, err);
        if (st != VIT_OK)
            return st;
    }
    size_t count = packed_matrix_count(m), total = 0;
    for (size_t i = 0; i < count; i++) {
        packed_matrix it = packed_matrix_at(m, i);
        size_t bytes = packed_bytes(&it, precision);
        if (total + bytes < total) {
            m->fingerprint[0] = '\0';
            return vit_error_set(err, VIT_ERR_NOMEM, "packed weights overflow size_t");
        }
        total += bytes;
    }
    /* the old packing goes first (never three copies at once); until the new
     * one is complete the model is unpacked */
    for (size_t i = 0; i < count; i++) {
        packed_matrix it = packed_matrix_at(m, i);
        *it.fp32 = NULL;
        *it.bf16 = NULL;
    }
    free(m->packed);
    m->packed = NULL;
    m->packed_len = 0;
    char *p = vit_alloc_large(total);
    if (!p) {
        m->fingerprint[0] = '\0';
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory packing %zu bytes of weights",
                             total);
    }
    m->packed = p;
    m->packed_len = total;
    m->owns_packed = true;
    m->precision = precision;
    for (size_t i = 0; i < count; i++) {
        packed_matrix it = packed_matrix_at(m, i);
        if (precision == VIT_PRECISION_BF16) {
            gemm_pack_weight_bf16((uint16_t *)p, *it.w, it.n, it.k);
            *it.bf16 = (const uint16_t *)p;
        } else {
            gemm_pack_weight((float *)p, *it.w, it.n, it.k);
            *it.fp32 = (const float *)p;
        }
        if (release)
            drop_pages(*it.w, (size_t)it.n * it.k);
        p += packed_bytes(&it, precision);
    }
    if (release) {
        forget_unpacked(m);
        m->unpacked_released = true;
    }
    return VIT_OK;
}

vit_status vit_model_pack_precision(vit_model *m, vit_precision precision, vit_error *err)
{
    return pack(m, precision, false, err);
}

vit_status vit_model_pack_release(vit_model *m, vit_precision precision, vit_error *err)
{
    return pack(m, precision, true, err);
}

vit_status vit_model_pack(vit_model *m, vit_error *err)
{
    if (m->packed)
        return VIT_OK;
    return vit_model_pack_precision(m, VIT_PRECISION_FP32, err);
}

/* NULLs the pointers to the unpacked copies of the packed matrices, in
 * m->w and in m->params, so a use of one crashes instead of reading the
 * zero pages vit_model_release_unpacked left. */
static void forget_unpacked(vit_model *m)
{
    for (size_t i = 0; i < packed_matrix_count(m); i++) {
        packed_matrix it = packed_matrix_at(m, i);
        for (size_t j = 0; j < m->num_params; j++)
            if (m->params[j].data == *it.w)
                m->params[j].data = NULL;
        *it.w = NULL;
    }
}

vit_status vit_model_release_unpacked(vit_model *m, vit_error *err)
{
    if (m->unpacked_released)
        return VIT_OK;
    if (!m->packed || !m->owns_frozen || m->shares)
        return vit_error_set(err, VIT_ERR_INVALID,
                             "only a packed model that owns its weights can release them");
    if (atomic_load(&m->views) > 0) /* they would read the released pages */
        return vit_error_set(err, VIT_ERR_INVALID,
                             "views share this model's weights: release before deriving them");
    vit_status st = vit_model_fingerprint(m, m->fingerprint, err);
    if (st != VIT_OK)
        return st;
    for (size_t i = 0; i < packed_matrix_count(m); i++) {
        packed_matrix it = packed_matrix_at(m, i);
        drop_pages(*it.w, (size_t)it.n * it.k);
    }
    forget_unpacked(m);
    m->unpacked_released = true;
    return VIT_OK;
}

size_t vit_model_param_count(const vit_model *m)
{
    return m->frozen_len + m->trainable_len;
}

size_t vit_model_bias_count(const vit_model *m)
{
    size_t n = 0;
    for (size_t i = 0; i < m->num_params; i++) {
        const vit_param *p = &m->params[i];
        size_t len = strlen(p->name);
        if (len >= 5 && strcmp(p->name + len - 5, ".bias") == 0 && strcmp(p->name, "head.bias"))
            n += p->numel;
    }
    return n;
}

vit_status vit_model_set_labels(vit_model *m, const char *const *names, vit_error *err)
{
    int K = m->cfg.num_classes;
    for (int k = 0; k < K; k++) {
        size_t at;
        const char *problem = vit_label_problem(names[k], strlen(names[k]), &at);
        if (problem)
            return vit_error_set(err, VIT_ERR_INVALID, "label %d has %s at byte %zu", k, problem,
                                 at);
    }
    char **labels = calloc((size_t)(K > 0 ? K : 1), sizeof *labels);
    if (!labels)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory copying labels");
    for (int k = 0; k < K; k++) {
        if (!(labels[k] = strdup(names[k]))) {
            vit_labels_free(labels, K);
            return vit_error_set(err, VIT_ERR_NOMEM, "out of memory copying labels");
        }
    }
    vit_labels_free(m->labels, K);
    m->labels = labels;
    return VIT_OK;
}
