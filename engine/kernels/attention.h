/*
 * attention.h - multi-head self-attention on the packed AVX-512 GEMM, one
 * (image, head) pair per task across a thread team.
 *
 * Same result as ops.h attention_forward (within float rounding): no
 * attention matrix is kept; the backward pass recomputes them from qkv.  Call only when
 * gemm_packed_available().
 */
#ifndef VIT_ATTENTION_H
#define VIT_ATTENTION_H

#include <stdbool.h>
#include <stddef.h>

#include "pool.h"

/* Scratch floats one team member needs for N tokens, width C, NH heads. */
size_t attention_scratch_floats(int N, int C, int NH);

/* out (B, N, C) = concat_h softmax(q_h k_h^T / sqrt(hs)) v_h from qkv (B, N,
 * 3C) as ops.h lays it out; scratch holds attention_scratch_floats() per
 * member of team.  bf16: both products take bf16-rounded operands (q, k, the
 * probabilities and v) with fp32 accumulation, as a bf16 model's linear
 * layers do; the softmax stays fp32.  Only where gemm_bf16_available(). */
void attention_forward_team(vit_team *team, float *out, const float *qkv, int B, int N, int C,
                            int NH, bool bf16, float *scratch);

/* Scratch floats one team member needs for attention_backward_team. */
size_t attention_backward_scratch_floats(int N, int C, int NH);

/* Backward of attention_forward_team, as ops.h attention_backward: dqkv (B,
 * N, 3C) overwritten from dout (B, N, C) and the saved qkv, the attention
 * matrices recomputed per (image, head); members take whole (image, head)
 * pairs.  scratch holds attention_backward_scratch_floats() per member. */
void attention_backward_team(vit_team *team, float *dqkv, const float *dout, const float *qkv,
                             int B, int N, int C, int NH, float *scratch);

#endif
