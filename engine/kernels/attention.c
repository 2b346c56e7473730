/*
 * attention.c - attention heads as packed GEMMs (see attention.h).
 *
 * Per (image, head): S = q k^T, P = softmax(S / sqrt(hs)), O = P v.  Both
 * products run on the register-tile kernel: k_h is packed as a transposed
 * operand straight from the fused qkv rows, v_h as a plain one, so no head is
 * copied out first.  Members take whole (image, head) pairs, which at batch 1
 * still gives 12 tasks for 2 threads, and each keeps its S in its own cache.
 */
#include "attention.h"

#include <math.h>

#include "gemm.h"
#include "ops_avx512.h"

/* S rows padded to a 64-byte multiple so every row starts aligned. */
static size_t s_stride(int N)
{
    return ((size_t)N + 15) & ~(size_t)15;
}

size_t attention_scratch_floats(int N, int C, int NH)
{
    int hs = C / NH;
    return gemm_packed_b_size(N, hs) + gemm_packed_b_size(hs, N) + (size_t)N * s_stride(N) +
           gemm_packed_scratch_floats(N);
}

typedef struct attention_job {
    float *out;
    const float *qkv;
    int B, N, C, NH;
    float *scratch;
} attention_job;

/* ref: timm vision_transformer.py Attention.forward (non-fused path) */
static void attention_region(void *p, int member, int threads)
{
    const attention_job *j = p;
    int N = j->N, C = j->C, hs = C / j->NH;
    size_t ld = 3 * (size_t)C, ls = s_stride(N);
    float *kp = j->scratch + (size_t)member * attention_scratch_floats(N, C, j->NH);
    float *vp = kp + gemm_packed_b_size(N, hs);
    float *s = vp + gemm_packed_b_size(hs, N);
    float *gemm_scratch = s + (size_t)N * ls;
    size_t gemm_floats = gemm_packed_scratch_floats(N);
    float scale = 1.0f / sqrtf((float)hs);
    int t0, t1;
    vit_team_split(j->B * j->NH, member, threads, &t0, &t1);
    for (int t = t0; t < t1; t++) {
        int b = t / j->NH, h = t % j->NH;
        const float *q = j->qkv + (size_t)b * N * ld + (size_t)h * hs;
        const float *k = q + C, *v = q + 2 * (size_t)C;
        gemm_pack_b(kp, k, ld, true, N, hs);                                   /* k^T (hs, N) */
        gemm_packed(NULL, N, N, hs, q, ld, kp, s, ls, NULL, GEMM_POST_NONE, gemm_scratch,
                    gemm_floats);
        softmax_rows_forward_avx512(s, (size_t)N, N, ls, scale);               /* P (N, N) */
        gemm_pack_b(vp, v, ld, false, hs, N);                                  /* v (N, hs) */
        float *o = j->out + (size_t)b * N * C + (size_t)h * hs;
        gemm_packed(NULL, N, hs, N, s, ls, vp, o, (size_t)C, NULL, GEMM_POST_NONE,
                    gemm_scratch, gemm_floats);                                /* (N, hs) */
    }
}

void attention_forward_team(vit_team *team, float *out, const float *qkv, int B, int N, int C,
                            int NH, float *scratch)
{
    attention_job j = {out, qkv, B, N, C, NH, scratch};
    vit_team_run(team, attention_region, &j);
}

/* ---- backward ---- */

/* Scratch floats of one member's gemm_packed_raw calls in the backward. */
static size_t backward_gemm_floats(int N, int hs)
{
    size_t a = gemm_packed_raw_scratch_floats(N, N, hs);
    size_t b = gemm_packed_raw_scratch_floats(N, hs, N);
    return a > b ? a : b;
}

size_t attention_backward_scratch_floats(int N, int C, int NH)
{
    return 2 * (size_t)N * s_stride(N) + backward_gemm_floats(N, C / NH);
}

typedef struct attention_bwd_job {
    float *dqkv;
    const float *dout, *qkv;
    int B, N, C, NH;
    float *scratch;
} attention_bwd_job;

/* ref: ops.c attention_backward, per (image, head) on the packed kernel:
 * P recomputed as attention_region computes it, dP = dO v^T, dv = P^T dO,
 * dS = scale P (dP - rowsum(dP P)), dq = dS k, dk = dS^T q. */
static void attention_bwd_region(void *p, int member, int threads)
{
    const attention_bwd_job *j = p;
    int N = j->N, C = j->C, hs = C / j->NH;
    size_t ld = 3 * (size_t)C, ls = s_stride(N);
    float *P = j->scratch + (size_t)member * attention_backward_scratch_floats(N, C, j->NH);
    float *dP = P + (size_t)N * ls;
    float *gs = dP + (size_t)N * ls;
    size_t gfloats = backward_gemm_floats(N, hs);
    float scale = 1.0f / sqrtf((float)hs);
    int t0, t1;
    vit_team_split(j->B * j->NH, member, threads, &t0, &t1);
    for (int t = t0; t < t1; t++) {
        int b = t / j->NH, h = t % j->NH;
        const float *q = j->qkv + (size_t)b * N * ld + (size_t)h * hs;
        const float *k = q + C, *v = q + 2 * (size_t)C;
        float *dq = j->dqkv + (size_t)b * N * ld + (size_t)h * hs;
        float *dk = dq + C, *dv = dq + 2 * (size_t)C;
        const float *dO = j->dout + (size_t)b * N * C + (size_t)h * hs;
        gemm_packed_raw(NULL, N, N, hs, q, ld, false, k, ld, true, P, ls, NULL, GEMM_POST_NONE,
                        gs, gfloats);                                         /* q k^T */
        softmax_rows_forward_avx512(P, (size_t)N, N, ls, scale);              /* P */
        gemm_packed_raw(NULL, N, N, hs, dO, (size_t)C, false, v, ld, true, dP, ls, NULL,
                        GEMM_POST_NONE, gs, gfloats);                         /* dP */
        gemm_packed_raw(NULL, N, hs, N, P, ls, true, dO, (size_t)C, false, dv, ld, NULL,
                        GEMM_POST_NONE, gs, gfloats);                         /* dv */
        softmax_backward_rows_avx512(dP, P, (size_t)N, N, ls, scale);         /* dS */
        gemm_packed_raw(NULL, N, hs, N, dP, ls, false, k, ld, false, dq, ld, NULL,
                        GEMM_POST_NONE, gs, gfloats);                         /* dq */
        gemm_packed_raw(NULL, N, hs, N, dP, ls, true, q, ld, false, dk, ld, NULL,
                        GEMM_POST_NONE, gs, gfloats);                         /* dk */
    }
}

void attention_backward_team(vit_team *team, float *dqkv, const float *dout, const float *qkv,
                             int B, int N, int C, int NH, float *scratch)
{
    attention_bwd_job j = {dqkv, dout, qkv, B, N, C, NH, scratch};
    vit_team_run(team, attention_bwd_region, &j);
}
