/*
 * vit_impl.h - internals shared by the vit_*.c files; never included outside engine/.
 */
#ifndef VIT_VIT_IMPL_H
#define VIT_VIT_IMPL_H

#include <jansson.h>

#include "pool.h"
#include "safetensors.h"
#include "vit.h"

/* How one canonical tensor (or a slice of it) is found in a checkpoint. */
typedef enum vit_name_op {
    VIT_NAME_COPY,      /* same data, shapes equal up to leading 1s */
    VIT_NAME_TRANSPOSE, /* 2-D source stored (in, out) */
    VIT_NAME_PART,      /* rows part/parts of the canonical tensor (HF q, k, v) */
} vit_name_op;

typedef struct vit_name_row {
    const char *canonical; /* may contain "{i}" for the block index */
    const char *source;    /* same; written with the layout's full prefix */
    vit_name_op op;
    int part, parts;       /* for VIT_NAME_PART */
} vit_name_row;

/* Everything that differs between checkpoint layouts, as data. */
typedef struct vit_layout_desc {
    vit_layout layout;
    const char *name;           /* "timm", "hf", "torchvision", "clip" */
    const char *probe;          /* a tensor only this layout has (full prefix) */
    const char *optional_prefix;/* a prefix that bare saves drop ("vit.", "visual.") */
    const vit_name_row *rows;
    size_t num_rows;
    float default_eps;
    vit_act default_act;
} vit_layout_desc;

const vit_layout_desc *vit_layout_get(vit_layout layout);

/* Finds a source tensor by its full name, or without the layout's optional
 * prefix ("vit.", "visual.") as bare saves store it.  NULL if absent. */
const st_tensor *vit_layout_source(const vit_layout_desc *d, const st_file *f, const char *name);

/* Finds the source of canonical `pattern` (e.g. "blocks.{i}.mlp.fc1.weight",
 * block = i): the first alternative present, or part 0 of a split tensor. */
const st_tensor *vit_layout_find(const vit_layout_desc *d, const st_file *f,
                                 const char *pattern, int block);

/* Expands "{i}" in pattern to block into buf. */
void vit_name_expand(char *buf, size_t len, const char *pattern, int block);

/* Detects the layout by its probe tensor. */
vit_status vit_layout_detect(const st_file *f, const vit_layout_desc **out, vit_error *err);

/* The canonical parameter table of cfg (names, shapes, arena membership;
 * data pointers NULL) without the arenas: what the loader compares with a
 * checkpoint before it commits memory.  Validates cfg first.  On success the
 * caller frees *params. */
vit_status vit_params_plan(const vit_config *cfg, vit_param **params, size_t *count,
                           vit_error *err);

/* Fills cfg from tensor shapes plus layout defaults. */
vit_status vit_config_infer(const vit_layout_desc *d, const st_file *f, vit_config *cfg,
                            vit_error *err);

/* Overrides cfg from a parsed config.json (HF or timm form) and returns
 * labels (caller frees with vit_labels_free) when the file names them. */
vit_status vit_config_apply_json(json_t *root, vit_config *cfg, char ***labels, int *num_labels,
                                 vit_error *err);

/* Overrides cfg->preprocess from a parsed HF preprocessor_config.json. */
vit_status vit_config_apply_preprocessor_json(json_t *root, vit_config *cfg, vit_error *err);

void vit_labels_free(char **labels, int n);

/* vit_model_load after the reads: builds a model from an open weights file
 * and the side files' bytes.  Detects the layout; the config comes from the
 * tensor shapes < config.json < preprocessor_config.json and is checked
 * against the tensors before the arenas are allocated; labels come from
 * config.json, else labels.txt, else "class_<k>".  Packs the weights. */
vit_status vit_model_from_parts(const st_file *f, const vit_side_files *side,
                                const vit_load_options *opt, vit_model **out, vit_error *err);

/* Checks that f holds, through layout d, a tensor of the right shape for
 * every canonical parameter of cfg, allocating nothing for the weights.
 * VIT_ERR_NOT_FOUND names the first missing tensor, VIT_ERR_MISMATCH the
 * first with a wrong shape. */
vit_status vit_check_tensors(const vit_config *cfg, const vit_layout_desc *d, const st_file *f,
                             vit_error *err);

/* Copies every canonical parameter of m from f through layout d. */
vit_status vit_load_tensors(vit_model *m, const vit_layout_desc *d, const st_file *f,
                            vit_error *err);

/* ---- activations of one forward pass (vit_forward.c) ---- */

/* Where a block writes its activations.  Inference points every block at the
 * same scratch and keeps nothing; training (vit_train.c) gives each block its
 * own slots for what its backward pass reads.  NULL slots are not kept. */
typedef struct vit_block_acts {
    float *x_in;          /* (B,N,C) residual entering the block, or NULL */
    float *x_mid;         /* (B,N,C) residual after attention, or NULL */
    float *ln1, *ln2;     /* (B,N,C) LayerNorm outputs */
    float *ln1_mean, *ln1_rstd, *ln2_mean, *ln2_rstd; /* (B*N) each, or NULL */
    float *qkv;           /* (B,N,3C) */
    float *probs;         /* attention matrices, (N,N) per (b,h) */
    size_t probs_stride;  /* N*N to keep every (b,h), 0 to reuse one matrix */
    float *attn;          /* (B,N,C) attention output before its projection */
    float *h_pre;         /* (B,N,M) fc1 output */
    float *h_act;         /* (B,N,M) activation output; == h_pre computes in place */
} vit_block_acts;

typedef struct vit_acts {
    float *x;             /* (B,N,C) residual stream, updated in place */
    float *patches;       /* (B*G*G, 3*P*P) unfolded input */
    float *patch_out;     /* (B*G*G, C) patch embeddings */
    float *x_embed;       /* (B,N,C) tokens before ln_pre, or NULL */
    float *pre_mean, *pre_rstd; /* (B*N) ln_pre statistics, or NULL */
    vit_block_acts *blocks;     /* depth entries */
    float *pooled;        /* (B,C) pooled tokens before the final LN */
    float *pooled_ln;     /* (B,C) after the final LN */
    float *norm_mean, *norm_rstd; /* (B) final LN statistics, or NULL */
    float *feat;          /* (B,F) projected features (== pooled_ln without projection) */
    vit_profile *profile; /* NULL unless profiling */
    double mark;          /* time of the last profile mark */
    /* Mixed-task batches: image b takes its biases and head from arenas[b]
     * (a trainable arena laid out like m's, with a head of classes[b] rows;
     * NULL: m's own).  arenas == NULL: every image uses m's own. */
    const float *const *arenas;
    const int *classes;
    /* The packed path: a vit_state's inference, or a vit_train_state's
     * forward and backward (train; see block_forward_train). */
    vit_team *team;           /* the state's threads */
    bool train;               /* keep activations: block_forward_train */
    float *gemm_scratch;      /* gemm_packed_scratch_floats(B*N): any product of <= B*N rows;
                               * for training also gemm_packed_raw's per-call packing */
    size_t gemm_scratch_floats;
    float *attn_scratch;      /* attention_scratch_floats() per team member */
    const float **row_bias;   /* (B) per-image bias pointers of the current op */
    bool avx512;              /* the element-wise kernels may use AVX-512 */
    bool portable;            /* forced onto the portable path: scalar element-wise kernels */
} vit_acts;

/* Charges the time since a's previous mark to op, with macs multiply-adds
 * (no-op unless a->profile is set): the forward and backward passes' profile. */
void vit_profile_mark(vit_acts *a, vit_op op, double macs);

/* Starts a's profile clock (no-op unless a->profile is set). */
void vit_profile_start(vit_acts *a);

/* The forward pass over a; image b's logits (or features without a head) go
 * to out[b]. */
void vit_forward_acts(const vit_model *m, vit_acts *a, const float *images, int B,
                      float *const *out);

/* The last step of vit_forward_acts alone: image b's logits (or, without a
 * head, its features copied) to out[b] from its features feat (B, F), on a's
 * path and per-image heads.  Consecutive images with the same head and
 * adjacent outputs share one GEMM.  Callers that keep features (a linear
 * probe's cache) get the logits the whole pass would give. */
void vit_head_acts(const vit_model *m, vit_acts *a, const float *feat, int B, float *const *out);

/* A 64-byte aligned buffer of `bytes` (free with free()), backed by 2 MiB
 * pages where the kernel allows: the forward pass sweeps tens of MB of
 * activations and weights per layer, and 4 KiB pages would miss the TLB on
 * nearly every row.  NULL when out of memory. */
void *vit_alloc_large(size_t bytes);

/* Size helpers that refuse overflow: return 0 on overflow. */
int vit_mul_size(size_t a, size_t b, size_t *out);

#endif
