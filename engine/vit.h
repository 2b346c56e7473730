/*
 * vit.h - Vision Transformer model: config, weights, loading, forward pass.
 *
 * Legend for shape comments: B batch, N tokens (= G*G + 1 with the class
 * token), G grid side (image / patch), P patch side, C width, NH heads,
 * hs = C / NH, M mlp width, D projection width (CLIP), K classes.
 *
 * Canonical tensor names (timm-style; every checkpoint layout is mapped onto
 * these by the tables in vit_names.c):
 *   cls_token                 (1, 1, C)
 *   pos_embed                 (1, N, C)
 *   patch_embed.proj.weight   (C, 3, P, P)     patch_embed.proj.bias (C)  [optional]
 *   norm_pre.weight / .bias   (C)              [CLIP ln_pre]
 *   blocks.{i}.norm1.weight / .bias            (C)
 *   blocks.{i}.attn.qkv.weight (3C, C)  .bias (3C)   rows: q, k, v
 *   blocks.{i}.attn.proj.weight (C, C)  .bias (C)
 *   blocks.{i}.norm2.weight / .bias            (C)
 *   blocks.{i}.mlp.fc1.weight (M, C)    .bias (M)
 *   blocks.{i}.mlp.fc2.weight (C, M)    .bias (C)
 *   norm.weight / .bias       (C)              final LN (CLIP ln_post; after pooling when pool=mean)
 *   proj.weight               (D, C)           [CLIP projection, no bias]
 *   head.weight (K, F)  head.bias (K)          [absent: feature extractor]
 * Linear weights keep PyTorch's (out, in) layout.
 *
 * Parameters live in two arenas (STYLE.md 3): `frozen` holds weights, LN gains
 * and embeddings; `trainable` holds every bias and the head, so BitFit's
 * gradients and optimizer state are exactly the size of that arena.
 *
 * A vit_model is immutable after loading and may be shared by threads; each
 * thread runs the forward pass with its own vit_state.
 */
#ifndef VIT_VIT_H
#define VIT_VIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "image.h"
#include "status.h"

typedef enum vit_act { VIT_ACT_GELU, VIT_ACT_QUICK_GELU } vit_act;

/* What the packed matrix products multiply: fp32, or operands rounded to
 * bf16 with fp32 accumulation (the linear layers and attention's two
 * products; LayerNorm, softmax, GELU, the residual stream and the head stay
 * fp32). */
typedef enum vit_precision { VIT_PRECISION_FP32, VIT_PRECISION_BF16 } vit_precision;
typedef enum vit_pool { VIT_POOL_CLS, VIT_POOL_MEAN } vit_pool;

/* Checkpoint naming conventions we read. */
typedef enum vit_layout {
    VIT_LAYOUT_TIMM,
    VIT_LAYOUT_HF,          /* HF transformers ViTModel / ViTForImageClassification */
    VIT_LAYOUT_TORCHVISION, /* torchvision.models.vit_b_16 and friends */
    VIT_LAYOUT_CLIP,        /* OpenAI CLIP visual tower */
    VIT_LAYOUT_HF_CLIP,     /* HF transformers CLIPModel / CLIPVisionModel: vision tower */
    VIT_LAYOUT_COUNT,
} vit_layout;

typedef struct vit_config {
    int image_size;      /* input side, pixels */
    int patch_size;      /* P */
    int width;           /* C */
    int depth;           /* number of blocks */
    int heads;           /* NH */
    int mlp_dim;         /* M */
    int num_classes;     /* K; 0 = no head (feature extractor) */
    int proj_dim;        /* D; 0 = no projection */
    float ln_eps;
    vit_act act;
    vit_pool pool;
    bool ln_pre;         /* LayerNorm before the blocks (CLIP) */
    bool patch_bias;     /* patch embedding has a bias (not in CLIP) */
    img_preprocess preprocess;
} vit_config;

/* One canonical parameter tensor. */
typedef struct vit_param {
    char name[64];
    int ndim;
    int64_t shape[4];
    size_t numel;
    bool trainable;      /* lives in the trainable arena (biases, head) */
    float *data;         /* points into one of the two arenas */
} vit_param;

/* Pointers into the arenas, by role; set up by vit_model_create. */
typedef struct vit_block_weights {
    const float *norm1_w, *norm1_b;  /* (C) */
    const float *qkv_w, *qkv_b;      /* (3C, C), (3C) */
    const float *proj_w, *proj_b;    /* (C, C), (C) */
    const float *norm2_w, *norm2_b;  /* (C) */
    const float *fc1_w, *fc1_b;      /* (M, C), (M) */
    const float *fc2_w, *fc2_b;      /* (C, M), (C) */
    /* the four matrices packed for the AVX-512 GEMM (gemm.h): in fp32 (_wp)
     * or in bf16 (_wb) by the model's precision; the others NULL */
    const float *qkv_wp, *proj_wp, *fc1_wp, *fc2_wp;
    const uint16_t *qkv_wb, *proj_wb, *fc1_wb, *fc2_wb;
} vit_block_weights;

typedef struct vit_weights {
    const float *patch_w, *patch_b;       /* (C, 3*P*P), (C) or NULL */
    const float *patch_wp;                /* patch_w packed in fp32, or NULL */
    const uint16_t *patch_wb;             /* patch_w packed in bf16, or NULL */
    const float *cls_token;               /* (C) */
    const float *pos_embed;               /* (N, C) */
    const float *norm_pre_w, *norm_pre_b; /* (C) or NULL */
    vit_block_weights *blocks;            /* depth entries */
    const float *norm_w, *norm_b;         /* (C) */
    const float *proj_w;                  /* (D, C) or NULL */
    const float *head_w, *head_b;         /* (K, F) and (K), or NULL */
} vit_weights;

typedef struct vit_model {
    vit_config cfg;
    vit_layout layout;       /* layout the checkpoint was read from */
    vit_param *params;       /* canonical tensors, in forward order */
    size_t num_params;
    float *frozen;           /* arena: weights, gains, embeddings */
    size_t frozen_len;       /* floats */
    float *trainable;        /* arena: biases + head */
    size_t trainable_len;    /* floats */
    size_t bias_len;         /* floats of the bias section at the start of `trainable` */
    bool owns_frozen;        /* false for views sharing another model's backbone */
    bool owns_trainable;     /* false for views over a task's arena */
    void *packed;            /* the frozen matrices in GEMM panel layout, or NULL */
    size_t packed_len;       /* bytes */
    vit_precision precision; /* of the packed matrices' products */
    bool owns_packed;        /* false when shared with the model it derives from */
    bool unpacked_released;  /* the packed matrices' unpacked copies are gone (NULL) */
    const struct vit_model *shares; /* the model whose frozen arena and packing this view
                                       shares (NULL: it owns them) */
    _Atomic int views;       /* live views sharing this model's arena: packing and
                                releasing refuse while there are any */
    char fingerprint[65];    /* vit_model_fingerprint, cached once the frozen arena is
                                final (vit_model_release_unpacked), else "" */
    vit_weights w;
    char **labels;           /* num_classes names, or NULL */
} vit_model;

/* ---- config ---- */

/* Presets: "vit-b16", "vit-l14-clip", "vit-tiny".  Returns VIT_ERR_NOT_FOUND
 * for other names. */
vit_status vit_config_preset(const char *name, vit_config *out, vit_error *err);
int vit_config_tokens(const vit_config *cfg);       /* N */
int vit_config_feature_dim(const vit_config *cfg);  /* F: D if projected, else C */
int vit_config_output_dim(const vit_config *cfg);   /* K, or F without a head */
/* Checks that the config is internally consistent and within sane bounds,
 * the forward activations of one image included (VIT_MAX_IMAGE_BYTES: a
 * larger one is VIT_ERR_TOO_LARGE). */
vit_status vit_config_validate(const vit_config *cfg, vit_error *err);
/* Field by field (padding never compared): the architecture, head size and
 * preprocessing agree. */
bool vit_config_equal(const vit_config *a, const vit_config *b);

/* Bytes of activations one image adds to a forward state (vit_state): the
 * residual stream, LayerNorm output, q/k/v, attention output and MLP hidden
 * layer of one block (inference reuses them for every block), the unfolded
 * patches and their embeddings, the pooled features.  In floats:
 *   N (6C + M) + (N-1)(3 P^2 + C) + 2C + F.
 * ViT-B/16 at 224 px: 7.2e6 bytes (6.9 MiB).  cfg must pass the range checks
 * of vit_config_validate (every product then fits easily). */
size_t vit_config_image_bytes(const vit_config *cfg);

/* Cap on vit_config_image_bytes plus one N x N attention matrix (each thread
 * of a forward pass keeps one): what a checkpoint may ask a forward pass to
 * hold per image.  A checkpoint's size says nothing about it -- 428 KB of
 * width-1 weights can describe 4097 tokens with a 65536-wide MLP, 1.3 GiB per
 * image -- so vit_config_validate refuses more.  Real models pass with room:
 * ViT-B/16 at 224 px needs 7.1 MiB, ViT-L/14 at 336 px 27.4 MiB, ViT-H/14 at
 * 224 px 14.6 MiB and at 518 px 83.8 MiB, ViT-B/16 on the largest grid
 * (64 x 64 patches, 1024 px) 208 MiB. */
#define VIT_MAX_IMAGE_BYTES ((size_t)256 << 20)
const char *vit_layout_name(vit_layout layout);
/* Multiply-accumulates of one forward pass for one image (all GEMMs,
 * attention included), every block on every token as the model defines it:
 * 17.56e9 for ViT-B/16 at 224. */
double vit_config_macs(const vit_config *cfg);

/* Those vit_forward does: a class-token model's last block runs past its keys
 * and values on the class token alone (16.48e9 for ViT-B/16 at 224). */
double vit_config_forward_macs(const vit_config *cfg);

/* ---- model ---- */

/* Allocates a model with zeroed parameters for cfg (arenas + param table). */
vit_status vit_model_create(const vit_config *cfg, vit_model **out, vit_error *err);
void vit_model_free(vit_model *m);

/* A model for num_classes classes that shares base's frozen arena (read-only;
 * base must outlive it) and owns a new trainable arena: the bias section is
 * copied from base, the head starts at zero.  copy_frozen gives it a private
 * copy of the frozen arena instead (full fine-tuning). */
vit_status vit_model_derive(const vit_model *base, int num_classes, bool copy_frozen,
                            vit_model **out, vit_error *err);

/* A view of base with a borrowed trainable arena laid out for num_classes (a
 * task's biases and head); nothing is copied.  Both base and the arena must
 * outlive the view. */
vit_status vit_model_view(const vit_model *base, int num_classes, const float *trainable,
                          vit_model **out, vit_error *err);

vit_param *vit_model_find(vit_model *m, const char *canonical_name);

/* Replaces m's class names with copies of names[0..num_classes); a name
 * vit_label_problem refuses is VIT_ERR_INVALID and m is left as it was. */
vit_status vit_model_set_labels(vit_model *m, const char *const *names, vit_error *err);

/* Why class label s[0..len) cannot be shown as it is, or NULL when it can:
 * "invalid UTF-8" (overlong forms, surrogates and code points past U+10FFFF
 * included) or "a control character" (C0, DEL, C1, the line and paragraph
 * separators and the bidirectional overrides), with the byte offset in *at.
 * Labels end up in JSON replies, terminals and task files: a newline or an
 * escape sequence in one forges output lines or recolours a terminal, and
 * bytes that are not UTF-8 cannot be written as JSON at all.  Every loader of
 * labels (config.json, labels.txt, task files) refuses such a label. */
const char *vit_label_problem(const char *s, size_t len, size_t *at);

/* Writes m as a checkpoint directory in the timm layout (model.safetensors +
 * config.json with label_names) that vit_model_load reads back.  dir must not
 * exist; everything is written into a temporary directory first and renamed
 * into place, so a failed save leaves nothing behind. */
vit_status vit_model_save(const vit_model *m, const char *dir, vit_error *err);

/* Fills every parameter with randinit_tensor(seed); used by bench and tests. */
void vit_model_randomize(vit_model *m, uint64_t seed);

/* Packs the frozen matrices for the fast GEMM when the CPU has it (a no-op
 * otherwise, or when already packed).  Call once the weights are final:
 * vit_model_load does; after it the frozen arena must not change.  Models
 * derived with a shared backbone share the packing; full fine-tuning copies
 * the backbone and leaves it unpacked.  Costs one more copy of the matrices. */
vit_status vit_model_pack(vit_model *m, vit_error *err);

/* Packs m's matrices for precision, replacing a packing in the other one
 * (freed first: if the new one cannot be allocated, m is left unpacked and
 * runs the portable path).  bf16 needs the AVX-512 kernels and avx512_bf16
 * (or VITFIT_BF16_EMULATE=1): VIT_ERR_UNSUPPORTED otherwise, m unchanged.
 * fp32 is vit_model_pack.  Views share the packing, so a model with live
 * views, or a view, is refused (VIT_ERR_INVALID); states made from m before
 * a repack must not be used after it. */
vit_status vit_model_pack_precision(vit_model *m, vit_precision precision, vit_error *err);

/* One copy of the weights: drops the unpacked copies of the matrices m has
 * packed (their pages go back to the system; their pointers in m->w and
 * m->params become NULL), after caching the fingerprint they hash to.  What
 * still needs them then refuses with VIT_ERR_UNSUPPORTED instead of reading
 * zeros: the portable forward path, full fine-tuning (vit_model_derive with
 * copy_frozen), vit_model_save, vit_input_grad.  Views derived afterwards
 * share the release.  VIT_ERR_INVALID unless m is packed and owns its
 * frozen arena. */
vit_status vit_model_release_unpacked(vit_model *m, vit_error *err);

/* vit_model_pack_precision that keeps one copy of the weights throughout:
 * each matrix's unpacked pages are released as soon as it is packed (then
 * as vit_model_release_unpacked), so packing never holds two copies of the
 * backbone.  A model already packed in precision is released only. */
vit_status vit_model_pack_release(vit_model *m, vit_precision precision, vit_error *err);

/* "fp32" | "bf16"; parse returns 0 for anything else. */
const char *vit_precision_name(vit_precision precision);
int vit_precision_parse(const char *name, vit_precision *out);

/* Loads a checkpoint: a directory (model.safetensors + optional config.json,
 * preprocessor_config.json and labels.txt) or a single .safetensors file.
 * Layout and config are detected; labels come from config.json (id2label /
 * label_names), else labels.txt.  Every file is untrusted: FIFOs and devices
 * are refused, side files are capped (16 MiB of JSON, 64 MiB of labels), and
 * the config is checked against the tensors before the model is allocated. */
vit_status vit_model_load(const char *path, vit_model **out, vit_error *err);

/* How vit_model_load_with packs what it loads (vit_model_load: fp32, both
 * copies kept). */
typedef struct vit_load_options {
    vit_precision precision;
    bool one_copy;           /* vit_model_pack_release instead of vit_model_pack_precision */
} vit_load_options;

/* vit_model_load, packed as opt says (NULL: as vit_model_load).  The
 * checkpoint's pages are given back tensor by tensor as they are copied, so
 * with one_copy a load peaks near one copy of the weights plus the largest
 * matrix. */
vit_status vit_model_load_with(const char *path, const vit_load_options *opt, vit_model **out,
                               vit_error *err);

/* The optional side files of a checkpoint directory, as bytes (NULL: absent). */
typedef struct vit_side_files {
    const char *config;       /* config.json */
    size_t config_len;
    const char *preprocessor; /* preprocessor_config.json */
    size_t preprocessor_len;
    const char *labels;       /* labels.txt */
    size_t labels_len;
} vit_side_files;

/* vit_model_load on bytes (an upload, a fuzzer's input): weights[0..len) is
 * a safetensors image, side may be NULL.  Nothing is read from disk and the
 * model keeps no pointer into the buffers. */
vit_status vit_model_load_memory(const void *weights, size_t len, const vit_side_files *side,
                                 vit_model **out, vit_error *err);

size_t vit_model_param_count(const vit_model *m);
/* Bias parameters of the backbone (every *.bias except the head's). */
size_t vit_model_bias_count(const vit_model *m);

/* ---- forward ---- */

typedef struct vit_state vit_state;

/* Scratch memory for batches up to max_batch, and a team of `threads`
 * threads (the caller included) that runs this state's forward passes; one
 * state per worker.  W workers with T threads each keep W*T threads busy. */
vit_status vit_state_create(const vit_model *m, int max_batch, int threads, vit_state **out,
                            vit_error *err);
void vit_state_free(vit_state *s);

/* The two implementations of the forward pass (vit_forward.c). */
typedef enum vit_path {
    VIT_PATH_AUTO,     /* packed when possible, else portable (vit_state_create) */
    VIT_PATH_PACKED,   /* packed weights, AVX-512 kernels, the state's own team */
    VIT_PATH_PORTABLE, /* OpenBLAS GEMMs (also training's path); chosen explicitly, the
                        * scalar element-wise kernels too, as without AVX-512 */
} vit_path;

/* vit_state_create on a chosen path.  The state's size is checked before
 * anything is allocated (vit_state_bytes: VIT_ERR_TOO_LARGE past
 * VIT_MAX_STATE_BYTES, with the bytes per image in the message).  AUTO
 * takes the packed path when m is packed (vit_model_pack) and
 * gemm_packed_available() holds now (it does not under VITFIT_NO_AVX512);
 * PACKED fails with VIT_ERR_UNSUPPORTED otherwise; PORTABLE always works, on
 * any model, so one process can compare both. */
vit_status vit_state_create_path(const vit_model *m, int max_batch, int threads, vit_path path,
                                 vit_state **out, vit_error *err);

/* Cap on the bytes of one forward state (VIT_ERR_TOO_LARGE past it).  A
 * state larger than this is a mistake on any machine vitfit targets; a
 * server budgets its workers' states well below it with vit_state_bytes. */
#define VIT_MAX_STATE_BYTES ((uint64_t)64 << 30)

/* Bytes that vit_state_create_path(m, max_batch, threads, path) would
 * allocate for its buffers, into *out: max_batch times
 * vit_config_image_bytes (plus alignment) and the scratch that does not grow
 * with the batch (one attention matrix, or on the packed path the GEMM's
 * panels and an attention workspace per thread).  Nothing is allocated.
 * Fails as vit_state_create_path would on the same arguments, with
 * VIT_ERR_TOO_LARGE past VIT_MAX_STATE_BYTES (or what size_t can hold);
 * *out is then the bytes that were asked for, when they fit in size_t. */
vit_status vit_state_bytes(const vit_model *m, int max_batch, int threads, vit_path path,
                           size_t *out, vit_error *err);

/* The path s runs: VIT_PATH_PACKED or VIT_PATH_PORTABLE, never AUTO. */
vit_path vit_state_path(const vit_state *s);

/* images: (B, 3, H, W) normalized; out: (B, vit_config_output_dim).
 * Logits with a head, pooled (projected) features without one. */
vit_status vit_forward(const vit_model *m, vit_state *s, const float *images, int batch,
                       float *out, vit_error *err);

/* The head of vit_forward alone: out (B, K) from features feat (B, F) that
 * vit_forward gave earlier on a head-less view of m (vit_model_view with 0
 * classes), on the same path and kernels as the last step of vit_forward on
 * s, so bit-identical to the logits vit_forward(m, s, ...) gives for those
 * images in the same batches.  m needs a head.  For callers that keep
 * features across passes (a linear probe, trainer.c). */
vit_status vit_forward_head(const vit_model *m, vit_state *s, const float *feat, int batch,
                            float *out, vit_error *err);

/* Where forward time goes, by op kind (vitfit bench --profile). */
typedef enum vit_op {
    VIT_OP_PATCH_UNFOLD,
    VIT_OP_PATCH_GEMM,
    VIT_OP_EMBED_ADD,
    VIT_OP_LAYERNORM,
    VIT_OP_QKV_GEMM,
    VIT_OP_ATTENTION,
    VIT_OP_PROJ_GEMM,
    VIT_OP_FC1_GEMM,
    VIT_OP_ACTIVATION,
    VIT_OP_FC2_GEMM,
    VIT_OP_BIAS_ADD,
    VIT_OP_POOL_HEAD,
    /* the backward pass (vit_train_state_set_profile) */
    VIT_OP_BWD_HEAD,       /* head, projection, final LayerNorm, pooling */
    VIT_OP_BWD_DX_GEMM,    /* input gradients dx = dy W of the linear layers */
    VIT_OP_BWD_DW_GEMM,    /* weight gradients (full) */
    VIT_OP_BWD_BIAS_GRAD,  /* bias gradients: column sums */
    VIT_OP_BWD_ATTENTION,
    VIT_OP_BWD_LAYERNORM,
    VIT_OP_BWD_ACTIVATION,
    VIT_OP_BWD_EMBED,      /* ln_pre, embeddings, patch embedding's gradients */
    VIT_OP_COUNT,
} vit_op;

typedef struct vit_profile {
    double seconds[VIT_OP_COUNT]; /* accumulated over forward calls */
    double macs[VIT_OP_COUNT];    /* multiply-accumulates, for GFLOP/s per kind */
    bool fused;                   /* packed path: GELU and bias adds ran inside the GEMMs */
} vit_profile;

const char *vit_op_name(vit_op op);

/* Starts accumulating per-op times of forward calls on s into p (NULL stops). */
void vit_state_set_profile(vit_state *s, vit_profile *p);

/* Mixed-task forward: the GEMMs are shared by the whole batch, while image b
 * takes every bias (LayerNorm biases included) and its head from arenas[b]:
 * a trainable arena laid out like m's, i.e. a task's (task.h), whose head
 * has classes[b] rows; arenas[b] == NULL uses m's own.  out[b] receives
 * classes[b] logits (or m's output dim for NULL).  Equals running each image
 * alone with its task.  The arenas must stay alive for the call. */
vit_status vit_forward_rows(const vit_model *m, vit_state *s, const float *images, int batch,
                            const float *const *arenas, const int *classes, float *const *out,
                            vit_error *err);

/* Numerically stable softmax of n values (max subtracted, sum in double). */
void vit_softmax(const float *logits, int n, float *probs);

/* Threads used by GEMMs (OpenBLAS) for this process. */
void vit_set_threads(int threads);

#endif
