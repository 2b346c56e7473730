/*
 * gemm_avx512.h - the AVX-512 packed-panel GEMM kernels (engine-internal).
 *
 * C (m, n) (+)= A (m, k) . B (k, n) in the classic Goto/BLIS scheme: B is
 * packed into column panels of GEMM_NR floats per k, cut into GEMM_KC-deep
 * blocks; A is packed per KC block into slivers of GEMM_MR rows.  A 14 x 32
 * register tile (28 accumulators) updates from one broadcast of A and two
 * 16-float loads of B per k.  Frozen weights are packed once at model load,
 * so a linear layer's forward only packs its (small) activations.
 *
 * These functions carry no threading: gemm.c splits panels among a team's
 * members and calls them between barriers.  Only call them when
 * cpu_has_avx512().
 */
#ifndef VIT_GEMM_AVX512_H
#define VIT_GEMM_AVX512_H

#include <stdbool.h>
#include <stddef.h>

#include "gemm.h"

enum {
    GEMM_MR = 14,  /* rows of the register tile */
    GEMM_NR = 32,  /* columns of the register tile: two zmm */
    GEMM_KC = 256, /* depth of one packed block: a B micro-panel is 32 KB */
    GEMM_MC = 224, /* rows per pass: their packed A block (229 KB) stays in L2 */
};

/* Floats of a packed B for an (n, k) product: panels padded to GEMM_NR. */
size_t gemm_packed_b_floats(int n, int k);

/* Packs W (n, k) with row stride ldw -- PyTorch's (out, in) layout, i.e. B =
 * W^T -- into dst (gemm_packed_b_floats(n, k)). */
void gemm_pack_b_nt(float *dst, const float *w, size_t ldw, int n, int k);

/* Packs B (k, n) with row stride ldb into dst. */
void gemm_pack_b_nn(float *dst, const float *b, size_t ldb, int k, int n);

/* The two above restricted to column panels [j0, j1) (of GEMM_NR columns),
 * written where the whole packing puts them: a team member packs only the
 * panels it multiplies. */
void gemm_pack_b_nt_panels(float *dst, const float *w, size_t ldw, int n, int k, int j0, int j1);
void gemm_pack_b_nn_panels(float *dst, const float *b, size_t ldb, int k, int n, int j0, int j1);
/* Packs panels [j0, j1) of B = W (n, k) itself -- the operand of dx = dy W
 * -- as gemm_pack_b_nn(dst, W, k, n, k) would, reading W from its forward
 * packing wp (gemm_pack_b_nt's layout) instead of the unpacked matrix, so a
 * model that kept only the packed copy can still run its backward pass. */
void gemm_pack_b_nn_from_nt(float *dst, const float *wp, int n, int k, int j0, int j1);

/* Floats of one packed KC block of A with m rows. */
size_t gemm_packed_a_floats(int m);

/* Packs slivers [s0, s1) of rows of A's KC block starting at column p0, kc
 * deep, into dst (laid out for all of A's slivers); rows >= m are zero. */
void gemm_pack_a_block(float *dst, const float *a, size_t lda, int m, int s0, int s1, int p0,
                       int kc);

/* gemm_pack_a_block for A stored transposed, (k, m) with row stride lda:
 * A[i][p] = a[p * lda + i] (a weight gradient's dy^T, attention's P^T). */
void gemm_pack_a_block_t(float *dst, const float *a, size_t lda, int m, int s0, int s1, int p0,
                         int kc);

/* What a block's products are added to as they are stored: what C holds
 * (an earlier KC block, or a residual the caller left there) when load_c,
 * then bias_rows[r], row r's bias (a NULL entry: zero), when bias_rows is
 * set.  The first block's tiles add the bias from the cache themselves, so
 * C is not swept once more just to start it. */
typedef struct gemm_seed {
    bool load_c;
    const float *const *bias_rows;
} gemm_seed;

/* For packed block (p0, kc) of A and B, updates C's rows [0, m) and
 * columns of panels [j0, j1): C = seed + A.B (see gemm_seed); `post` is
 * applied on the final block only (pass GEMM_POST_NONE before). */
void gemm_block_panels(const float *ap, const float *bp_block, int m, int n, int kc, int j0,
                       int j1, float *c, size_t ldc, const gemm_seed *seed, gemm_post post);

/* Offset of KC block p0's panels in a packed B with n columns. */
size_t gemm_packed_b_block(int n, int p0);

/* y (m, n) = x (m, k) . W^T + bias for output columns [j0, j1), W (n, k)
 * unpacked, as dot products: for the few rows of a classification head,
 * where packing W would cost more than the product. */
void gemm_rows_dot(float *y, size_t ldy, const float *x, size_t ldx, const float *w,
                   const float *bias, int m, int k, int j0, int j1);

#endif
