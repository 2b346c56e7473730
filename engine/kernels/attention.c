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
