/*
 * ops.h - the element-wise and small kernels of the ViT forward and backward
 * passes.
 *
 * Each kernel writes its output first in the argument list (llm.c style).
 * Backward kernels *add* into parameter gradients (the caller zeroes them once
 * per step) and either overwrite or add into activation gradients as each
 * contract says; a NULL gradient output is skipped (BitFit computes no weight
 * gradients).  Reductions (LayerNorm statistics, softmax sums, gradient column
 * sums) accumulate in double.
 */
#ifndef VIT_OPS_H
#define VIT_OPS_H

#include <stddef.h>

/* out (rows, C) = LN(x) * w + b, statistics per row; out may alias x.
 * mean and rstd (rows) receive the statistics when not NULL. */
void layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w,
                       const float *b, size_t rows, int C, float eps);

/* dx (rows, C) += dLN/dx . dout; dw (C) += sum dout * xhat (if dw); db (C) +=
 * sum dout (if db).  x, mean, rstd as saved by layernorm_forward. */
void layernorm_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                        const float *mean, const float *rstd, const float *w, size_t rows, int C);

/* out (n) = GELU(x) with the exact erf form: 0.5 x (1 + erf(x / sqrt 2)); out may alias x. */
void gelu_forward(float *out, const float *x, size_t n);
/* dx (n) = dout * GELU'(x); dx may alias dout. */
void gelu_backward(float *dx, const float *dout, const float *x, size_t n);
/* out (n) = x * sigmoid(1.702 x) (OpenAI CLIP's QuickGELU); out may alias x. */
void quick_gelu_forward(float *out, const float *x, size_t n);
void quick_gelu_backward(float *dx, const float *dout, const float *x, size_t n);

/* In place, row-wise stable softmax of x (rows, n). */
void softmax_rows_forward(float *x, size_t rows, int n);

/* Unfolds images (B, 3, H, W) into patches (B*G*G, 3*P*P), columns ordered
 * (channel, ky, kx) to match a conv weight (C, 3, P, P) flattened. */
void patch_unfold_forward(float *patches, const float *images, int B, int image_size, int P);

/* Multi-head self-attention core.
 * qkv (B, N, 3C) rows [q | k | v], heads interleaved as PyTorch reshapes them
 * (head h uses columns h*hs .. h*hs+hs of each part).
 * out (B, N, C) = concat_h softmax(q_h k_h^T / sqrt(hs)) v_h
 * probs: the (N, N) attention matrix of (b, h) goes to probs + (b*NH + h) *
 * probs_stride; stride 0 reuses one scratch matrix (inference). */
void attention_forward(float *out, float *probs, size_t probs_stride, const float *qkv, int B,
                       int N, int C, int NH);

/* The first token's row of attention_forward for every image: out (B, C)
 * from qkv (B, N, 3C), p scratch for N floats.  What a class-token model's
 * last block needs, since no other row of it reaches the head. */
void attention_first_query(float *out, float *p, const float *qkv, int B, int N, int C, int NH);

/* Backward of attention_first_query: dqkv (B, N, 3C) overwritten from dout
 * (B, C) and qkv; scratch holds 2 * N floats.  Only the first token's rows
 * of dq are not zero. */
void attention_first_query_backward(float *dqkv, float *scratch, const float *dout,
                                    const float *qkv, int B, int N, int C, int NH);

/* Backward of attention_forward: dqkv (B, N, 3C) overwritten from dout (B, N,
 * C) and the saved qkv.  The attention matrices are recomputed per head, so
 * nothing but qkv has to be kept; scratch holds 2 * N * N floats. */
void attention_backward(float *dqkv, float *scratch, const float *dout, const float *qkv, int B,
                        int N, int C, int NH);

/* y (rows, n) += bias (n) broadcast. */
void bias_add_forward(float *y, const float *bias, size_t rows, int n);

#endif
