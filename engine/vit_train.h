/*
 * vit_train.h - the training half of the model: a forward pass that keeps its
 * activations, cross-entropy, and the backward pass.
 *
 * Three methods share one code path and differ in what they train and so in
 * what the forward pass must keep (STYLE.md 5):
 *   bitfit  every bias of the backbone + the head.  No weight gradient is
 *           computed, so the inputs of linear layers are not kept; per block
 *           only the residual inputs of the two LayerNorms (and their
 *           statistics), qkv and the fc1 output stay (the attention matrices
 *           are recomputed from qkv; a class-token model's last block keeps
 *           its class rows alone past qkv).
 *   linear  the head only (a linear probe): nothing before the features is kept.
 *   full    every parameter; also keeps the inputs of every linear layer.
 * Gradients live in arrays laid out exactly like the model's two arenas:
 * `gtrain` mirrors the trainable arena (biases + head) and `gfrozen` the
 * frozen one (only `full` passes it).  Backward adds into them; the caller
 * zeroes them once per step.
 */
#ifndef VIT_VIT_TRAIN_H
#define VIT_VIT_TRAIN_H

#include "status.h"
#include "vit.h"

typedef enum vit_method { VIT_METHOD_BITFIT, VIT_METHOD_LINEAR, VIT_METHOD_FULL } vit_method;

const char *vit_method_name(vit_method method);
/* Parses "bitfit" | "linear" | "full"; returns 0 if unknown. */
int vit_method_parse(const char *name, vit_method *out);

typedef struct vit_train_state vit_train_state;

/* Activation memory for batches up to max_batch under a method, and on the
 * packed path (AVX-512 CPUs) a team of `threads` (1..64) that runs the
 * state's forward and backward passes; elsewhere OpenBLAS runs them with its
 * own threads (vit_set_threads).  Same as vit_train_state_create_path with
 * VIT_PATH_AUTO. */
vit_status vit_train_state_create(const vit_model *m, vit_method method, int max_batch,
                                  int threads, vit_train_state **out, vit_error *err);

/* vit_train_state_create on a chosen path: VIT_PATH_PACKED fails with
 * VIT_ERR_UNSUPPORTED when gemm_packed_available() does not hold;
 * VIT_PATH_PORTABLE takes the OpenBLAS path on any CPU (tests compare the
 * two).  The packed path does not need m packed (vit_model_pack): weights
 * without a packed copy are packed per GEMM call. */
vit_status vit_train_state_create_path(const vit_model *m, vit_method method, int max_batch,
                                       int threads, vit_path path, vit_train_state **out,
                                       vit_error *err);

/* The path s runs: VIT_PATH_PACKED or VIT_PATH_PORTABLE. */
vit_path vit_train_state_path(const vit_train_state *s);

/* Accumulates per-op times of s's forward and backward passes into p (the
 * backward's ops are the VIT_OP_BWD_* kinds); NULL stops. */
void vit_train_state_set_profile(vit_train_state *s, vit_profile *p);
void vit_train_state_free(vit_train_state *s);
/* Bytes of activations and scratch the state holds (for bench and reports). */
size_t vit_train_state_bytes(const vit_train_state *s);

/* Forward pass that keeps what backward needs; logits (B, K). */
vit_status vit_train_forward(const vit_model *m, vit_train_state *s, const float *images,
                             int batch, float *logits, vit_error *err);

/* The features (B, F) of the last vit_train_forward on s: the pooled, normed
 * (and projected) rows the head reads.  Valid until the next forward. */
const float *vit_train_features(const vit_train_state *s);

/* A linear probe's forward from features kept earlier: logits (B, K) from
 * feat (B, F) as vit_train_forward's last step computes them (same kernels,
 * same results for the same rows), and vit_backward then trains the head on
 * them.  Only for a state of method linear (VIT_ERR_INVALID otherwise): the
 * backbone's activations are not there for a deeper backward. */
vit_status vit_train_forward_head(const vit_model *m, vit_train_state *s, const float *feat,
                                  int batch, float *logits, vit_error *err);

/* Mean cross-entropy over the batch with label smoothing (torch semantics);
 * writes dlogits (B, K) = dLoss/dlogits and returns the loss (double sums). */
double vit_cross_entropy(const float *logits, const int *labels, int batch, int K,
                         float label_smoothing, float *dlogits);

/* Backward from dlogits through the last vit_train_forward on s; adds into
 * gtrain (trainable_len floats) and, for full, gfrozen (frozen_len floats). */
vit_status vit_backward(const vit_model *m, vit_train_state *s, const float *dlogits, int batch,
                        float *gtrain, float *gfrozen, vit_error *err);

/* Gradient of the loss with respect to the images of the last
 * vit_train_forward, dimages (B, 3, H, W), from the last vit_backward on s
 * (bitfit or full: a linear probe's backward stops at the features, so
 * VIT_ERR_INVALID).  Overwrites dimages; allocates B*3*H*W floats of scratch
 * for the call.  For saliency and the gradient goldens' "dinput". */
vit_status vit_input_grad(const vit_model *m, const vit_train_state *s, float *dimages,
                          vit_error *err);

#endif
