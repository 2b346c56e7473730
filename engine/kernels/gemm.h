/*
 * gemm.h - every matrix product of the engine goes through here.
 *
 * One seam for every backend -- OpenBLAS, the packed fp32 kernel, the bf16
 * kernel -- so the model code never sees which one runs.  Matrices are
 * row-major; `b_trans` means B is stored (n, k) -- PyTorch's (out, in)
 * weight layout -- so a linear layer is gemm(x, W^T).
 */
#ifndef VIT_GEMM_H
#define VIT_GEMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* C (m, n) = alpha * A (m, k) . op(B) + beta * C, with leading dimensions. */
void gemm(int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
          bool b_trans, float beta, float *c, int ldc);

/* C (m, n) = alpha * op(A) . op(B) + beta * C; op(A) is (m, k): A is stored
 * (k, m) when a_trans.  Backward passes need A^T (weight gradients). */
void gemm_tt(int m, int n, int k, float alpha, const float *a, int lda, bool a_trans,
             const float *b, int ldb, bool b_trans, float beta, float *c, int ldc);

/* Naive reference of the same contract, for tests. */
void gemm_ref(int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
              bool b_trans, float beta, float *c, int ldc);

/* y (m, n) = x (m, k) . W^T + bias, with W (n, k) and bias (n) or NULL. */
void linear_forward(float *y, const float *x, const float *w, const float *bias, int m, int n,
                    int k);

/* Backward of linear_forward for rows x: dx (m, k) = dy W (overwritten) when
 * dx is not NULL; dw (n, k) += dy^T x when dw is not NULL; db (n) += column
 * sums of dy when db is not NULL.  BitFit passes dw = NULL, so x may be NULL. */
void linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                     const float *w, int m, int n, int k);

/* db (n) += column sums of y (m, n), accumulated in double. */
void bias_grad_accumulate(float *db, const float *y, int m, int n);

/* ---- packed weights on AVX-512 CPUs (gemm_avx512.c) ----
 * Frozen weights are packed once into the kernel's panel layout; a product
 * then only packs its activations.  A team's members split the output's
 * column panels, so each reads only its share of the weights. */

typedef struct vit_team vit_team;

/* What the packed GEMM applies to each output value after the last product. */
typedef enum gemm_post {
    GEMM_POST_NONE,
    GEMM_POST_GELU,       /* exact-erf GELU */
    GEMM_POST_QUICK_GELU, /* x * sigmoid(1.702 x) */
} gemm_post;

/* How the packed GEMM starts each output row before accumulating: row r
 * takes bias[r / rows_per_bias] (NULL entries: zero), copied (add false) or
 * added to what C holds (add true).  A NULL gemm_bias means C = A.B. */
typedef struct gemm_bias {
    const float *const *bias;
    int rows_per_bias;
    bool add;
} gemm_bias;

/* True when this CPU runs the packed kernels (see cpu_has_avx512). */
bool gemm_packed_available(void);

/* Floats of W (n, k) packed by gemm_pack_weight. */
size_t gemm_packed_weight_floats(int n, int k);

/* Packs W (n, k), PyTorch's (out, in) layout, for y = x W^T. */
void gemm_pack_weight(float *dst, const float *w, int n, int k);

/* Floats of a packed operand B of an (m, n) = (m, k) . (k, n) product. */
size_t gemm_packed_b_size(int n, int k);

/* Packs B for gemm_packed: B is stored (n, k) when b_trans (a weight, or the
 * keys of attention), else (k, n); ldb is its row stride. */
void gemm_pack_b(float *dst, const float *b, size_t ldb, bool b_trans, int n, int k);

/* Scratch floats that suffice for every product of 1..m rows (monotonic in
 * m), so one buffer sized for the largest product serves all smaller ones. */
size_t gemm_packed_scratch_floats(int m);

/* C (m, n) = init + A (m, k) . B with B packed (W^T for a weight); post
 * applied last.  Runs on every member of team (NULL: the calling thread
 * alone).  m and k are at least 1 (asserted: the bias reaches C with the
 * first block of products).  scratch holds scratch_floats floats, at least
 * gemm_packed_scratch_floats(m) (asserted). */
void gemm_packed(vit_team *team, int m, int n, int k, const float *a, size_t lda,
                 const float *w_packed, float *c, size_t ldc, const gemm_bias *init,
                 gemm_post post, float *scratch, size_t scratch_floats);

/* Scratch floats gemm_packed_raw needs for an (m, n, k) product: B's
 * packing plus gemm_packed_scratch_floats(m). */
size_t gemm_packed_raw_scratch_floats(int m, int n, int k);

/* gemm_packed with neither operand packed beforehand: C (m, n) = init +
 * op(A) . op(B), post applied last.  op(A) is (m, k), stored (k, m) when
 * a_trans; op(B) is (k, n), stored (n, k) when b_trans (a weight as y = x
 * W^T) else (k, n) (a weight as dx = dy W).  Each member packs the column
 * panels of B it multiplies, once per call, into the front of scratch; for
 * products with m >> n, k (the backward pass's dx at B*N rows) that costs a
 * small fraction of the product.  scratch holds scratch_floats floats, at
 * least gemm_packed_raw_scratch_floats(m, n, k) (asserted). */
void gemm_packed_raw(vit_team *team, int m, int n, int k, const float *a, size_t lda,
                     bool a_trans, const float *b, size_t ldb, bool b_trans, float *c,
                     size_t ldc, const gemm_bias *init, gemm_post post, float *scratch,
                     size_t scratch_floats);

/* dx (m, n) = dy (m, k) . W with W (k, n) given only by its forward packing
 * w_packed (gemm_pack_weight(w_packed, W, k, n)): the input gradient of a
 * linear layer whose unpacked weight was released.  Each member repacks the
 * panels of W it multiplies, as gemm_packed_raw does; same scratch
 * (gemm_packed_raw_scratch_floats(m, n, k)). */
void gemm_packed_dx(vit_team *team, int m, int n, int k, const float *dy, size_t ldy,
                    const float *w_packed, float *c, size_t ldc, float *scratch,
                    size_t scratch_floats);

/* y (m, n) = x (m, k) . W^T + bias (or NULL) with W (n, k) unpacked, the
 * members of team splitting the n outputs: for a head's few rows. */
void gemm_rows_team(vit_team *team, float *y, const float *x, const float *w, const float *bias,
                    int m, int n, int k);

/* ---- bf16 products (gemm_bf16_pack.c, gemm_bf16_tile.c) ----
 * The same products with both operands rounded to bf16 and fp32
 * accumulation: weights packed to bf16 once (half the bytes), activations
 * rounded as they are packed.  On CPUs with avx512_bf16 one vdpbf16ps does
 * two multiply-adds per lane where an FMA does one. */

/* Which kernel bf16 products run on. */
typedef enum gemm_bf16_kind {
    GEMM_BF16_NONE,     /* no AVX-512 (or VITFIT_NO_AVX512): bf16 is unavailable */
    GEMM_BF16_NATIVE,   /* vdpbf16ps */
    GEMM_BF16_EMULATED, /* AVX-512 without avx512_bf16, and VITFIT_BF16_EMULATE=1: the
                           same products (denormals not flushed), by fp32 FMAs, slower than
                           fp32 -- for tests and checks */
} gemm_bf16_kind;

/* The bf16 kernel this process may use (see cpu_bf16_kind). */
gemm_bf16_kind gemm_bf16_available(void);

/* x rounded to bf16 (to nearest, ties to even; NaN stays NaN), as its bits:
 * the upper half of x's fp32 bits after rounding. */
static inline uint16_t gemm_bf16_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* x rounded to bf16 and back: what a bf16 product sees of x (references). */
static inline float gemm_bf16_round(float x)
{
    uint32_t u = (uint32_t)gemm_bf16_bits(x) << 16;
    float r;
    memcpy(&r, &u, sizeof r);
    return r;
}

/* bf16 elements of W (n, k) packed by gemm_pack_weight_bf16. */
size_t gemm_packed_weight_bf16_elems(int n, int k);

/* Packs W (n, k), PyTorch's (out, in) layout, for y = x W^T in bf16. */
void gemm_pack_weight_bf16(uint16_t *dst, const float *w, int n, int k);

/* bf16 elements of a packed B of an (m, n) = (m, k) . (k, n) product. */
size_t gemm_packed_b_bf16_elems(int n, int k);

/* gemm_pack_b into the bf16 layout. */
void gemm_pack_b_bf16(uint16_t *dst, const float *b, size_t ldb, bool b_trans, int n, int k);

/* gemm_packed with a bf16-packed B: A is rounded to bf16 as it is packed.
 * Same scratch (gemm_packed_scratch_floats), init and post. */
void gemm_packed_bf16(vit_team *team, int m, int n, int k, const float *a, size_t lda,
                      const uint16_t *w_packed, float *c, size_t ldc, const gemm_bias *init,
                      gemm_post post, float *scratch, size_t scratch_floats);

/* ---- bf16 activations kept packed for the product that reads them ----
 * LayerNorm's output is only QKV's or MLP-in's input, and MLP-in's only
 * MLP-out's.  Written straight into the reader's packed A (rounded to bf16
 * as packing would round them), they are never stored in fp32 nor packed
 * again, and the reading product runs with no packing and no barrier. */

/* 32-bit words of an (m, k) A packed whole for a bf16 product. */
size_t gemm_bf16_a_words(int m, int k);

/* Slivers of such an A: groups of rows its producers write one at a time. */
int gemm_bf16_a_slivers(int m);

/* gemm_packed_bf16 on an A packed whole beforehand (m, k; by a LayerNorm,
 * ops_avx512.h, or gemm_packed_bf16_a_to_a): no scratch; each output tile
 * sums all of k before its one store. */
void gemm_packed_bf16_a(vit_team *team, int m, int n, int k, const uint32_t *a_packed,
                        const uint16_t *w_packed, float *c, size_t ldc, const gemm_bias *init,
                        gemm_post post);

/* gemm_packed_bf16_a with its result, init + A.B with post applied,
 * rounded to bf16 into next (gemm_bf16_a_words(m, n) words), the packed A of
 * a product whose k is n, instead of fp32 rows; init may not add. */
void gemm_packed_bf16_a_to_a(vit_team *team, int m, int n, int k, const uint32_t *a_packed,
                             const uint16_t *w_packed, uint32_t *next, const gemm_bias *init,
                             gemm_post post);

/* Threads OpenBLAS may use (process-wide setting of the library). */
void gemm_set_threads(int threads);
int gemm_get_threads(void);

#endif
