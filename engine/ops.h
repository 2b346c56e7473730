/*
 * ops.h - the element-wise and small kernels of the ViT forward pass.
 *
 * Each kernel writes its output first in the argument list (llm.c style).
 * Reductions (LayerNorm statistics, softmax sums) accumulate in double so the
 * result does not depend on the width.  `*_ref` kernels are plain versions kept
 * for tests beside any optimised one.
 */
#ifndef VIT_OPS_H
#define VIT_OPS_H

#include <stddef.h>

/* out (rows, C) = LN(x) * w + b, statistics per row; out may alias x. */
void layernorm_forward(float *out, const float *x, const float *w, const float *b, size_t rows,
                       int C, float eps);

/* x (n) = GELU(x) with the exact erf form: 0.5 x (1 + erf(x / sqrt 2)). */
void gelu_forward(float *x, size_t n);
/* x (n) = x * sigmoid(1.702 x) (OpenAI CLIP's QuickGELU). */
void quick_gelu_forward(float *x, size_t n);

/* In place, row-wise stable softmax of x (rows, n). */
void softmax_rows_forward(float *x, size_t rows, int n);

/* Unfolds images (B, 3, H, W) into patches (B*G*G, 3*P*P), columns ordered
 * (channel, ky, kx) to match a conv weight (C, 3, P, P) flattened. */
void patch_unfold_forward(float *patches, const float *images, int B, int image_size, int P);

/* Multi-head self-attention core.
 * qkv (B, N, 3C) rows [q | k | v], heads interleaved as PyTorch reshapes them
 * (head h uses columns h*hs .. h*hs+hs of each part).
 * out (B, N, C) = concat_h softmax(q_h k_h^T / sqrt(hs)) v_h
 * scores: scratch (N, N). */
void attention_forward(float *out, float *scores, const float *qkv, int B, int N, int C,
                       int NH);

/* y (rows, n) += bias (n) broadcast. */
void bias_add_forward(float *y, const float *bias, size_t rows, int n);

#endif
