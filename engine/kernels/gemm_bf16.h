/*
 * gemm_bf16.h - the bf16 packed-panel GEMM kernels (engine-internal).
 *
 * The fp32 kernel's scheme (gemm_avx512.h) with bf16 operands: A and B are
 * rounded to bf16 (round to nearest even) when packed, products accumulate
 * in fp32.  vdpbf16ps multiplies a pair of bf16 values in each 32-bit lane
 * and adds both products to the lane's fp32 accumulator, so the packed
 * layouts hold k in pairs:
 *   B: for each KC block: for each panel j of 32 columns: for each pair q of
 *      the block's k: 32 columns x (B[2q][col], B[2q+1][col]), 128 bytes.
 *   A: for each sliver of GEMM_MR rows: for each pair q: GEMM_MR 32-bit
 *      pairs (A[row][2q], A[row][2q+1]), broadcast one at a time.  Packed
 *      a block at a time, or whole: each sliver's pairs over all of k.
 * An odd k is padded with a zero pair half on both sides.  With KC = 512 k
 * values a B micro-panel is 32 KB and a pass's packed A block as large as
 * the fp32 kernel's, so the driver (gemm.c) and its scratch serve both.
 * A tile sums every block it is given in registers before its one store,
 * so a product up to two blocks deep (k <= 1024, A whole in the scratch)
 * gives the same bits wherever its blocks split, and its store can round
 * the result straight into the packed A of the product that reads it next.
 *
 * Two builds of the same tile source (gemm_bf16_tile.c): `native` uses
 * vdpbf16ps and runs only on CPUs with avx512_bf16; `emulated` computes the
 * same pair products with two fp32 FMAs each (exact: a bf16 product fits in
 * fp32), for CPUs without the instruction -- a test and measurement path,
 * several times slower than fp32.
 */
#ifndef VIT_GEMM_BF16_H
#define VIT_GEMM_BF16_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gemm.h"
#include "gemm_avx512.h"

enum {
    GEMM_BF16_KC = 2 * GEMM_KC, /* k values per packed block (pairs: GEMM_KC) */
};

/* bf16 elements of a packed B for an (n, k) product. */
size_t gemm_bf16_packed_b_elems(int n, int k);

/* Offset, in bf16 elements, of KC block p0's panels in a packed B with n
 * columns.  Inline: the register tile steps through the blocks with it, and
 * a call there would make gcc spill every accumulator (all caller-saved). */
static inline size_t gemm_bf16_packed_b_block(int n, int p0)
{
    /* p0 is a multiple of KC: even, so every block before it is whole pairs */
    return (size_t)p0 * (size_t)((n + GEMM_NR - 1) / GEMM_NR) * GEMM_NR;
}

/* Packs W (n, k), row stride ldw (B = W^T), into dst. */
void gemm_bf16_pack_b_nt(uint16_t *dst, const float *w, size_t ldw, int n, int k);

/* Packs B (k, n), row stride ldb, into dst. */
void gemm_bf16_pack_b_nn(uint16_t *dst, const float *b, size_t ldb, int k, int n);

/* Packs slivers [s0, s1) of A's KC block at column p0, kc deep, into dst (as
 * gemm_pack_a_block; dst holds 32-bit pairs). */
void gemm_bf16_pack_a_block(void *dst, const float *a, size_t lda, int m, int s0, int s1, int p0,
                            int kc);

/* The same into slivers sliver_words apart: a sliver of an A packed over
 * all of its k (gemm_bf16_a_words) holds every block's pairs in turn. */
void gemm_bf16_pack_a_slivers(uint32_t *dst, size_t sliver_words, const float *a, size_t lda,
                              int m, int s0, int s1, int p0, int kc);

/* Columns [32 j, 32 j + 32) of up to GEMM_MR rows of an (m, n) matrix into
 * its sliver of a bf16 A packed whole (k = n): vals holds them in fp32
 * (64-byte aligned, columns past n zero), each row's 32 values are rounded
 * to 16 pairs and turned so that each pair's rows lie together, and pairs
 * [16 j, 16 j + 16) inside n's are stored; rows past `rows` are written as
 * zeros.  What a tile's store to a next product and a LayerNorm into one
 * do. */
void gemm_bf16_pack_rows32(const float vals[GEMM_MR][GEMM_NR], int rows, uint32_t *sliver, int n,
                           int j);

/* Where a tile's results go: fp32 rows of C (c, ldc), or, with c NULL,
 * rounded to bf16 into the packed A of the product that reads them next
 * (its k is this product's n): `next` is the sliver holding the first row,
 * next_sliver_words the sliver length, pairs of n times GEMM_MR.  The next
 * product's rows past m and its padded pair half are written as zeros. */
typedef struct gemm_bf16_dst {
    float *c;
    size_t ldc;
    uint32_t *next;
    size_t next_sliver_words;
} gemm_bf16_dst;

/* For rows [0, m) (m a multiple of GEMM_MR but for the last sliver) and the
 * panels [j0, j1) of n columns: dst = seed + A.B (see gemm_seed), post
 * applied, over the kk values of k from B's block bp on (a KC block's
 * start; every KC block in the range is summed in registers before the one
 * store).  A's sliver s is at ap + s * a_sliver_words, the range's pairs in
 * order from its start.  vdpbf16ps (native) or its emulation.  A seed that
 * loads C needs an fp32 dst. */
void gemm_bf16_panels_native(const uint32_t *ap, size_t a_sliver_words, const uint16_t *bp, int n,
                             int kk, int m, int j0, int j1, const gemm_bf16_dst *dst,
                             const gemm_seed *seed, gemm_post post);
void gemm_bf16_panels_emulated(const uint32_t *ap, size_t a_sliver_words, const uint16_t *bp,
                               int n, int kk, int m, int j0, int j1, const gemm_bf16_dst *dst,
                               const gemm_seed *seed, gemm_post post);

#endif
