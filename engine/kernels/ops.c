/* ops.c - element-wise kernels of the forward pass (see ops.h). */
#include "ops.h"

#include <math.h>
#include <string.h>

#include "gemm.h"

/* ref: torch.nn.functional.layer_norm (biased variance, eps inside the sqrt) */
void layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w,
                       const float *b, size_t rows, int C, float eps)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * (size_t)C;
        float *orow = out + r * (size_t)C;
        double sum = 0;
        for (int i = 0; i < C; i++)
            sum += xr[i];
        double mu = sum / C;
        double var = 0;
        for (int i = 0; i < C; i++) {
            double d = xr[i] - mu;
            var += d * d;
        }
        var /= C;
        float rs = (float)(1.0 / sqrt(var + eps));
        float fmean = (float)mu;
        for (int i = 0; i < C; i++)
            orow[i] = (xr[i] - fmean) * rs * w[i] + b[i];
        if (mean)
            mean[r] = fmean;
        if (rstd)
            rstd[r] = rs;
    }
}

/* With xhat = (x - mean) * rstd and g = dout * w:
 *   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) */
void layernorm_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                        const float *mean, const float *rstd, const float *w, size_t rows, int C)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * (size_t)C, *dy = dout + r * (size_t)C;
        float *dxr = dx + r * (size_t)C;
        float mu = mean[r], rs = rstd[r];
        double sum_g = 0, sum_gx = 0;
        for (int i = 0; i < C; i++) {
            double xhat = (double)(xr[i] - mu) * rs;
            double g = (double)dy[i] * w[i];
            sum_g += g;
            sum_gx += g * xhat;
        }
        double mean_g = sum_g / C, mean_gx = sum_gx / C;
        for (int i = 0; i < C; i++) {
            double xhat = (double)(xr[i] - mu) * rs;
            double g = (double)dy[i] * w[i];
            dxr[i] += (float)(rs * (g - mean_g - xhat * mean_gx));
        }
    }
    if (db)
        for (size_t r = 0; r < rows; r++)
            for (int i = 0; i < C; i++)
                db[i] += dout[r * (size_t)C + i];
    if (dw)
        for (size_t r = 0; r < rows; r++)
            for (int i = 0; i < C; i++)
                dw[i] += dout[r * (size_t)C + i] * (x[r * (size_t)C + i] - mean[r]) * rstd[r];
}

void gelu_forward(float *out, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = 0.5f * x[i] * (1.0f + erff(x[i] * (float)M_SQRT1_2));
}

void gelu_backward(float *dx, const float *dout, const float *x, size_t n)
{
    const float inv_sqrt_2pi = 0.3989422804014327f;
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float cdf = 0.5f * (1.0f + erff(v * (float)M_SQRT1_2));
        float pdf = inv_sqrt_2pi * expf(-0.5f * v * v);
        dx[i] = dout[i] * (cdf + v * pdf);
    }
}

void quick_gelu_forward(float *out, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
}

void quick_gelu_backward(float *dx, const float *dout, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + expf(-1.702f * x[i]));
        dx[i] = dout[i] * (s + 1.702f * x[i] * s * (1.0f - s));
    }
}

void softmax_rows_forward(float *x, size_t rows, int n)
{
    for (size_t r = 0; r < rows; r++) {
        float *row = x + r * (size_t)n;
        float max = row[0];
        for (int i = 1; i < n; i++)
            if (row[i] > max)
                max = row[i];
        double sum = 0;
        for (int i = 0; i < n; i++) {
            row[i] = expf(row[i] - max);
            sum += row[i];
        }
        float inv = (float)(1.0 / sum);
        for (int i = 0; i < n; i++)
            row[i] *= inv;
    }
}

void patch_unfold_forward(float *patches, const float *images, int B, int image_size, int P)
{
    int G = image_size / P;
    size_t plane = (size_t)image_size * image_size;
    size_t cols = (size_t)3 * P * P;
    for (int b = 0; b < B; b++) {
        const float *img = images + (size_t)b * 3 * plane;
        for (int gy = 0; gy < G; gy++) {
            for (int gx = 0; gx < G; gx++) {
                float *dst = patches + ((size_t)b * G * G + (size_t)gy * G + gx) * cols;
                for (int c = 0; c < 3; c++) {
                    for (int ky = 0; ky < P; ky++) {
                        const float *src = img + c * plane +
                                           (size_t)(gy * P + ky) * image_size + (size_t)gx * P;
                        memcpy(dst, src, sizeof(float) * (size_t)P);
                        dst += P;
                    }
                }
            }
        }
    }
}

/* Where head h of image b starts in fused qkv rows (B, N, 3C): off[0] its q
 * columns, off[1] its k, off[2] its v; a dqkv laid out alike the same. */
static void head_offsets(size_t off[3], int b, int h, int N, int C, int hs)
{
    size_t row0 = (size_t)b * N * 3 * C, col = (size_t)h * hs;
    off[0] = row0 + col;
    off[1] = row0 + (size_t)C + col;
    off[2] = row0 + 2 * (size_t)C + col;
}

/* softmax(q k^T * scale) of one head into p (N, N); q and k are read in place
 * from the fused qkv rows through the leading dimension 3C. */
static void attention_probs(float *p, const float *q, const float *k, int N, int hs, int ld)
{
    gemm(N, N, hs, 1.0f / sqrtf((float)hs), q, ld, k, ld, true, 0.0f, p, N);
    softmax_rows_forward(p, (size_t)N, N);
}

/* ref: timm vision_transformer.py Attention.forward (non-fused path); no head
 * is ever copied out of the fused qkv rows. */
void attention_forward(float *out, float *probs, size_t probs_stride, const float *qkv, int B,
                       int N, int C, int NH)
{
    int hs = C / NH;
    int ld = 3 * C;
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            size_t at[3];
            head_offsets(at, b, h, N, C, hs);
            float *p = probs + ((size_t)b * NH + h) * probs_stride;
            attention_probs(p, qkv + at[0], qkv + at[1], N, hs, ld);           /* (N, N) */
            float *o = out + (size_t)b * N * C + (size_t)h * hs;
            gemm(N, hs, N, 1.0f, p, N, qkv + at[2], ld, false, 0.0f, o, C);    /* (N, hs) */
        }
    }
}

/* p (N) = softmax(q k_j^T * scale) for the one query row q of a head whose
 * keys are k's rows (leading dimension ld). */
static void first_query_probs(float *p, const float *q, const float *k, int N, int hs, size_t ld)
{
    float scale = 1.0f / sqrtf((float)hs);
    for (int j = 0; j < N; j++) {
        const float *kj = k + (size_t)j * ld;
        float s = 0;
        for (int i = 0; i < hs; i++)
            s += q[i] * kj[i];
        p[j] = scale * s;
    }
    softmax_rows_forward(p, 1, N);
}

void attention_first_query(float *out, float *p, const float *qkv, int B, int N, int C, int NH)
{
    int hs = C / NH;
    size_t ld = 3 * (size_t)C;
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            size_t at[3];
            head_offsets(at, b, h, N, C, hs);
            const float *v = qkv + at[2];
            first_query_probs(p, qkv + at[0], qkv + at[1], N, hs, ld);
            float *o = out + (size_t)b * C + (size_t)h * hs;
            memset(o, 0, sizeof(float) * (size_t)hs);
            for (int j = 0; j < N; j++) {
                const float *vj = v + (size_t)j * ld;
                for (int i = 0; i < hs; i++)
                    o[i] += p[j] * vj[i];
            }
        }
    }
}

/* attention_backward's formulas for one query row: dP and dS are rows,
 * dv_j = p_j dO and dk_j = dS_j q * scale are rank one, and only the first
 * token's dq is not zero. */
void attention_first_query_backward(float *dqkv, float *scratch, const float *dout,
                                    const float *qkv, int B, int N, int C, int NH)
{
    int hs = C / NH;
    size_t ld = 3 * (size_t)C;
    float scale = 1.0f / sqrtf((float)hs), *p = scratch, *ds = scratch + N;
    for (size_t r = 0; r < (size_t)B * N; r++) /* dq: the loop below writes every dk, dv */
        memset(dqkv + r * ld, 0, sizeof(float) * (size_t)C);
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            size_t at[3];
            head_offsets(at, b, h, N, C, hs);
            const float *q = qkv + at[0], *k = qkv + at[1], *v = qkv + at[2];
            float *dq = dqkv + at[0], *dk = dqkv + at[1], *dv = dqkv + at[2];
            const float *dO = dout + (size_t)b * C + (size_t)h * hs;
            first_query_probs(p, q, k, N, hs, ld);
            double dot = 0;
            for (int j = 0; j < N; j++) { /* dP, then P . dP */
                const float *vj = v + (size_t)j * ld;
                float s = 0;
                for (int i = 0; i < hs; i++)
                    s += dO[i] * vj[i];
                ds[j] = s;
                dot += (double)s * p[j];
            }
            float fdot = (float)dot;
            for (int j = 0; j < N; j++) {
                ds[j] = p[j] * (ds[j] - fdot);
                const float *kj = k + (size_t)j * ld;
                float *dkj = dk + (size_t)j * ld, *dvj = dv + (size_t)j * ld;
                for (int i = 0; i < hs; i++) {
                    dq[i] += scale * ds[j] * kj[i];
                    dkj[i] = scale * ds[j] * q[i];
                    dvj[i] = p[j] * dO[i];
                }
            }
        }
    }
}

/* Per head, with S = q k^T * scale, P = softmax(S), O = P v:
 *   dP = dO v^T,  dv = P^T dO,  dS = P * (dP - rowsum(dP * P)),
 *   dq = dS k * scale,  dk = dS^T q * scale.
 * P is recomputed exactly as the forward pass computed it (the same calls on
 * the same qkv), so training keeps qkv but never B*NH*N*N probabilities. */
void attention_backward(float *dqkv, float *scratch, const float *dout, const float *qkv, int B,
                        int N, int C, int NH)
{
    int hs = C / NH;
    int ld = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    float *p = scratch, *dprobs = scratch + (size_t)N * N;
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            size_t at[3];
            head_offsets(at, b, h, N, C, hs);
            const float *q = qkv + at[0], *k = qkv + at[1], *v = qkv + at[2];
            float *dq = dqkv + at[0], *dk = dqkv + at[1], *dv = dqkv + at[2];
            const float *dO = dout + (size_t)b * N * C + (size_t)h * hs;
            attention_probs(p, q, k, N, hs, ld);                                   /* P */
            gemm(N, N, hs, 1.0f, dO, C, v, ld, true, 0.0f, dprobs, N);             /* dP */
            gemm_tt(N, hs, N, 1.0f, p, N, true, dO, C, false, 0.0f, dv, ld);       /* dv */
            for (int i = 0; i < N; i++) {                                          /* dS */
                float *dpr = dprobs + (size_t)i * N;
                const float *pr = p + (size_t)i * N;
                double dot = 0;
                for (int j = 0; j < N; j++)
                    dot += (double)dpr[j] * pr[j];
                float fdot = (float)dot;
                for (int j = 0; j < N; j++)
                    dpr[j] = pr[j] * (dpr[j] - fdot);
            }
            gemm(N, hs, N, scale, dprobs, N, k, ld, false, 0.0f, dq, ld);          /* dq */
            gemm_tt(N, hs, N, scale, dprobs, N, true, q, ld, false, 0.0f, dk, ld); /* dk */
        }
    }
}

void bias_add_forward(float *y, const float *bias, size_t rows, int n)
{
    for (size_t r = 0; r < rows; r++) {
        float *row = y + r * (size_t)n;
        for (int i = 0; i < n; i++)
            row[i] += bias[i];
    }
}
