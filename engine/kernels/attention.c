/*
 * attention.c - attention heads as packed GEMMs (see attention.h).
 *
 * Per (image, head): S = q k^T, P = softmax(S / sqrt(hs)), O = P v.  Both
 * products run on the register-tile kernel: k_h is packed as a transposed
 * operand straight from the fused qkv rows, v_h as a plain one, so no head is
 * copied out first.  Members take whole (image, head) pairs, which at batch 1
 * still gives 12 tasks for 2 threads, a part each and then what is left of a
 * slower member's (vit_team_take), and each keeps its S in its own cache.
 */
#include "attention.h"

#include <math.h>

#include "gemm.h"
#include "status.h"
#include "ops_avx512.h"

/* S rows padded to a 64-byte multiple so every row starts aligned. */
static size_t s_stride(int N)
{
    return ((size_t)N + 15) & ~(size_t)15;
}

size_t attention_scratch_floats(int N, int C, int NH)
{
    int hs = C / NH;
    /* pack_head puts a bf16 packing where the fp32 one would go */
    VIT_ASSERT(gemm_packed_b_bf16_elems(N, hs) <= 2 * gemm_packed_b_size(N, hs) &&
               gemm_packed_b_bf16_elems(hs, N) <= 2 * gemm_packed_b_size(hs, N));
    return gemm_packed_b_size(N, hs) + gemm_packed_b_size(hs, N) + (size_t)N * s_stride(N) +
           gemm_packed_scratch_floats(N);
}

typedef struct attention_job {
    float *out;
    const float *qkv;
    int B, N, C, NH;
    bool bf16;
    float *scratch;
    vit_team *team;
} attention_job;

/* C (m, n) = A (m, k) . B with B packed by pack_b (fp32 or bf16 layout into
 * the same region: a bf16 packing takes at most half of the fp32 one's bytes). */
static void head_product(const attention_job *j, int m, int n, int k, const float *a,
                         size_t lda, float *b_packed, float *c, size_t ldc, float *scratch,
                         size_t scratch_floats)
{
    if (j->bf16)
        gemm_packed_bf16(NULL, m, n, k, a, lda, (const uint16_t *)b_packed, c, ldc, NULL,
                         GEMM_POST_NONE, scratch, scratch_floats);
    else
        gemm_packed(NULL, m, n, k, a, lda, b_packed, c, ldc, NULL, GEMM_POST_NONE, scratch,
                    scratch_floats);
}

static void pack_head(const attention_job *j, float *dst, const float *b, size_t ldb,
                      bool b_trans, int n, int k)
{
    if (j->bf16)
        gemm_pack_b_bf16((uint16_t *)dst, b, ldb, b_trans, n, k);
    else
        gemm_pack_b(dst, b, ldb, b_trans, n, k);
}

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
    vit_share share = vit_team_shared(j->team, 0, member, threads, j->B * j->NH);
    for (int t; vit_team_take(&share, &t);) {
        int b = t / j->NH, h = t % j->NH;
        const float *q = j->qkv + (size_t)b * N * ld + (size_t)h * hs;
        const float *k = q + C, *v = q + 2 * (size_t)C;
        pack_head(j, kp, k, ld, true, N, hs);                                  /* k^T (hs, N) */
        head_product(j, N, N, hs, q, ld, kp, s, ls, gemm_scratch, gemm_floats);
        softmax_rows_forward_avx512(s, (size_t)N, N, ls, scale);               /* P (N, N) */
        pack_head(j, vp, v, ld, false, hs, N);                                 /* v (N, hs) */
        float *o = j->out + (size_t)b * N * C + (size_t)h * hs;
        head_product(j, N, hs, N, s, ls, vp, o, (size_t)C, gemm_scratch, gemm_floats);

    }
}

void attention_forward_team(vit_team *team, float *out, const float *qkv, int B, int N, int C,
                            int NH, bool bf16, float *scratch)
{
    attention_job j = {out, qkv, B, N, C, NH, bf16, scratch, team};
    vit_team_share_ahead(team, 0, B * NH);
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
