/*
 * gemm.c - the engine's matrix products (see gemm.h).
 *
 * General products go to OpenBLAS (CPUs without AVX-512, and training); on
 * AVX-512 CPUs inference runs on the engine's own packed kernel below
 * (gemm_avx512.c).  A oneDNN backend used to sit here; the packed kernel
 * overtook its fp32 sgemm, so it was dropped.  Row-major throughout.
 */
#include "gemm.h"

#include <string.h>

#include "status.h"

#include <cblas.h>

void gemm_tt(int m, int n, int k, float alpha, const float *a, int lda, bool a_trans,
             const float *b, int ldb, bool b_trans, float beta, float *c, int ldc)
{
    cblas_sgemm(CblasRowMajor, a_trans ? CblasTrans : CblasNoTrans,
                b_trans ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm(int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
          bool b_trans, float beta, float *c, int ldc)
{
    gemm_tt(m, n, k, alpha, a, lda, false, b, ldb, b_trans, beta, c, ldc);
}

void gemm_ref(int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
              bool b_trans, float beta, float *c, int ldc)
{
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
            double acc = 0;
            for (int p = 0; p < k; p++) {
                float bv = b_trans ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j];
                acc += (double)a[(size_t)i * lda + p] * bv;
            }
            float *dst = &c[(size_t)i * ldc + j];
            *dst = (float)(alpha * acc + (beta == 0.0f ? 0.0 : (double)beta * *dst));
        }
    }
}

void linear_forward(float *y, const float *x, const float *w, const float *bias, int m, int n,
                    int k)
{
    if (bias) {
        /* Seed every row with the bias so the GEMM accumulates onto it (beta = 1),
         * saving a separate pass over y. */
        for (int i = 0; i < m; i++)
            memcpy(y + (size_t)i * n, bias, sizeof(float) * (size_t)n);
        gemm(m, n, k, 1.0f, x, k, w, k, true, 1.0f, y, n);
    } else {
        gemm(m, n, k, 1.0f, x, k, w, k, true, 0.0f, y, n);
    }
}

void bias_grad_accumulate(float *db, const float *y, int m, int n)
{
    /* column blocks so the double accumulators live on the stack */
    enum { BLOCK = 512 };
    double acc[BLOCK];
    for (int j0 = 0; j0 < n; j0 += BLOCK) {
        int width = n - j0 < BLOCK ? n - j0 : BLOCK;
        memset(acc, 0, sizeof acc);
        for (int i = 0; i < m; i++) {
            const float *row = y + (size_t)i * n + j0;
            for (int j = 0; j < width; j++)
                acc[j] += row[j];
        }
        for (int j = 0; j < width; j++)
            db[j0 + j] += (float)acc[j];
    }
}

void linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                     const float *w, int m, int n, int k)
{
    if (dx) /* (m, n) . (n, k) */
        gemm(m, k, n, 1.0f, dy, n, w, k, false, 0.0f, dx, k);
    if (dw) /* (n, m) . (m, k), accumulated */
        gemm_tt(n, k, m, 1.0f, dy, n, true, x, k, false, 1.0f, dw, k);
    if (db)
        bias_grad_accumulate(db, dy, m, n);
}

void gemm_set_threads(int threads)
{
    if (threads < 1)
        threads = 1;
    openblas_set_num_threads(threads);
}

int gemm_get_threads(void)
{
    return openblas_get_num_threads();
}

/* ---- packed weights ---- */

#ifdef VIT_HAVE_AVX512_KERNELS
#include "gemm_avx512.h"
#include "gemm_bf16.h"
#endif
#include "cpu.h"
#include "pool.h"

bool gemm_packed_available(void)
{
    return cpu_has_avx512();
}

gemm_bf16_kind gemm_bf16_available(void)
{
#ifdef VIT_HAVE_AVX512_KERNELS
    if (cpu_has_avx512_bf16())
        return GEMM_BF16_NATIVE;
    if (cpu_has_avx512() && cpu_bf16_emulate_requested())
        return GEMM_BF16_EMULATED;
#endif
    return GEMM_BF16_NONE;
}

#ifdef VIT_HAVE_AVX512_KERNELS

size_t gemm_packed_weight_floats(int n, int k)
{
    return gemm_packed_b_floats(n, k);
}

void gemm_pack_weight(float *dst, const float *w, int n, int k)
{
    gemm_pack_b_nt(dst, w, (size_t)k, n, k);
}

size_t gemm_packed_b_size(int n, int k)
{
    return gemm_packed_b_floats(n, k);
}

void gemm_pack_b(float *dst, const float *b, size_t ldb, bool b_trans, int n, int k)
{
    if (b_trans)
        gemm_pack_b_nt(dst, b, ldb, n, k);
    else
        gemm_pack_b_nn(dst, b, ldb, k, n);
}

_Static_assert(GEMM_MC % GEMM_MR == 0, "a pass is whole slivers");

/* Rows per pass: at most GEMM_MC, whole slivers, and the passes near equal,
 * since every pass streams all of the member's weight panels once (1576
 * rows go as 7 x 210 + 106, not 7 x 224 + 8).  Not monotonic in m: 224 rows
 * make one 224-row pass, 238 rows two of 126. */
static int pass_rows(int m)
{
    int slivers = (m + GEMM_MR - 1) / GEMM_MR, per_pass = GEMM_MC / GEMM_MR;
    int passes = (slivers + per_pass - 1) / per_pass;
    return (slivers + passes - 1) / passes * GEMM_MR;
}

/* Scratch one product of m rows uses: double-buffered packed blocks of one
 * pass's rows. */
static size_t scratch_need(int m)
{
    return 2 * gemm_packed_a_floats(pass_rows(m));
}

size_t gemm_packed_scratch_floats(int m)
{
    /* The worst case over every row count up to m, not pass_rows(m): a state
     * sized for its largest product also runs smaller ones (the patch GEMM,
     * a partial batch) whose passes can be longer.  A pass never exceeds
     * min(m, GEMM_MC) rows rounded up to a sliver, and a product of that many
     * rows takes exactly that, so this is the maximum. */
    return 2 * gemm_packed_a_floats(m < GEMM_MC ? m : GEMM_MC);
}

/* What the driver below needs of a kernel: its block depth, its A packing,
 * its panel update and where a block's B panels start.  The fp32 and the bf16
 * kernels share the driver; their packed A blocks of a pass have equal size
 * (bf16: twice the depth at half the bytes), so one scratch serves both. */
typedef struct packed_kernel {
    int kc;
    size_t (*sliver_bytes)(int kc); /* one packed sliver of A, kc deep */
    void (*pack_a)(void *dst, const float *a, size_t lda, int m, int s0, int s1, int p0, int kc);
    void (*panels)(const void *ap, const void *bp_block, int m, int n, int kc, int j0, int j1,
                   float *c, size_t ldc, const gemm_seed *seed, gemm_post post);
    const void *(*b_block)(const void *bp, int n, int p0);
    /* bf16 only (else NULL): the tile over several KC blocks at once, from
     * A packed over all of them (gemm_bf16.h) */
    void (*panels_k)(const uint32_t *ap, size_t a_sliver_words, const uint16_t *bp, int n,
                     int kk, int m, int j0, int j1, const gemm_bf16_dst *dst,
                     const gemm_seed *seed, gemm_post post);
} packed_kernel;

_Static_assert(GEMM_BF16_KC * sizeof(uint16_t) == GEMM_KC * sizeof(float),
               "a packed bf16 A block is the size of an fp32 one");

static size_t fp32_sliver_bytes(int kc)
{
    return (size_t)kc * GEMM_MR * sizeof(float);
}

/* bf16 slivers hold k in 32-bit pairs, an odd kc padded */
static size_t bf16_sliver_bytes(int kc)
{
    return (size_t)(kc + 1) / 2 * GEMM_MR * sizeof(uint32_t);
}

static void fp32_pack_a(void *dst, const float *a, size_t lda, int m, int s0, int s1, int p0,
                        int kc)
{
    gemm_pack_a_block(dst, a, lda, m, s0, s1, p0, kc);
}

static void fp32_panels(const void *ap, const void *bp_block, int m, int n, int kc, int j0,
                        int j1, float *c, size_t ldc, const gemm_seed *seed, gemm_post post)
{
    gemm_block_panels(ap, bp_block, m, n, kc, j0, j1, c, ldc, seed, post);
}

/* A stored transposed, (k, m): a weight gradient's dy^T, attention's P^T */
static void fp32_pack_a_t(void *dst, const float *a, size_t lda, int m, int s0, int s1, int p0,
                          int kc)
{
    gemm_pack_a_block_t(dst, a, lda, m, s0, s1, p0, kc);
}

static const void *fp32_b_block(const void *bp, int n, int p0)
{
    return (const float *)bp + gemm_packed_b_block(n, p0);
}

static const void *bf16_b_block(const void *bp, int n, int p0)
{
    return (const uint16_t *)bp + gemm_bf16_packed_b_block(n, p0);
}

/* One KC block of a bf16 product into fp32 C. */
#define BF16_BLOCK_PANELS(name, tile)                                                          \
    static void name(const void *ap, const void *bp_block, int m, int n, int kc, int j0,     \
                     int j1, float *c, size_t ldc, const gemm_seed *seed, gemm_post post)    \
    {                                                                                          \
        gemm_bf16_dst dst = {.c = c, .ldc = ldc};                                              \
        tile(ap, bf16_sliver_bytes(kc) / sizeof(uint32_t), bp_block, n, kc, m, j0, j1, &dst,  \
             seed, post);                                                                      \
    }

static const packed_kernel fp32_kernel = {GEMM_KC, fp32_sliver_bytes, fp32_pack_a, fp32_panels,
                                          fp32_b_block, NULL};
static const packed_kernel fp32_kernel_at = {GEMM_KC, fp32_sliver_bytes, fp32_pack_a_t,
                                             fp32_panels, fp32_b_block, NULL};
#ifdef VIT_HAVE_BF16_NATIVE
BF16_BLOCK_PANELS(bf16_native_block, gemm_bf16_panels_native)
static const packed_kernel bf16_native = {GEMM_BF16_KC, bf16_sliver_bytes, gemm_bf16_pack_a_block,
                                          bf16_native_block, bf16_b_block,
                                          gemm_bf16_panels_native};
#else
static const packed_kernel bf16_native = {0}; /* never chosen: cpu_has_avx512_bf16() is false */
#endif
BF16_BLOCK_PANELS(bf16_emulated_block, gemm_bf16_panels_emulated)
static const packed_kernel bf16_emulated = {GEMM_BF16_KC, bf16_sliver_bytes,
                                            gemm_bf16_pack_a_block, bf16_emulated_block,
                                            bf16_b_block, gemm_bf16_panels_emulated};

/* Whether a product runs with its A packed over both of its blocks at once
 * and each tile summing them before it stores: bf16 products two blocks
 * deep (their packed A fills both block buffers; ViT-B's k = 768).  Their C
 * is then written once, and the sums are the same in either driver.  One
 * block deep, the blocked loops already sum it in one tile and keep their
 * two alternating buffers. */
static bool two_blocks_summed(const packed_kernel *kern, int k)
{
    return kern->panels_k && k > kern->kc && k <= 2 * kern->kc;
}

/* Words of one sliver of a bf16 A packed over all of k. */
static size_t bf16_sliver_words(int k)
{
    return bf16_sliver_bytes(k) / sizeof(uint32_t);
}

typedef struct packed_job {
    const packed_kernel *kernel;
    vit_team *team;
    int m, n, k;
    const float *a;
    size_t lda;
    const void *bp;
    const float *b_raw;   /* fp32 B unpacked (gemm_packed_raw), packed into b_dst, or NULL */
    size_t ldb;
    bool b_trans;         /* b_raw stored (n, k) */
    const float *b_fwd;   /* or: B = W (k, n) itself, read from W's forward packing */
    float *b_dst;
    float *c;
    size_t ldc;
    const uint32_t *a_packed; /* bf16: A packed whole beforehand (a unused) */
    uint32_t *next;       /* bf16 with a_packed: the result into a next product's packed A */
    const gemm_bias *init;
    gemm_post post;
    float *scratch;
} packed_job;

/* Where rows i0.. of a full-k bf16 product go. */
static gemm_bf16_dst bf16_dst(const packed_job *j, int i0)
{
    if (j->next)
        return (gemm_bf16_dst){.next = j->next + (size_t)i0 / GEMM_MR * bf16_sliver_words(j->n),
                               .next_sliver_words = bf16_sliver_words(j->n)};
    return (gemm_bf16_dst){.c = j->c + (size_t)i0 * j->ldc, .ldc = j->ldc};
}

/* Packs the slivers [s0, s1) of rows i0.. of A, all of k, into ap. */
static void bf16_pack_full(const packed_job *j, uint32_t *ap, const float *a, int rows, int s0,
                           int s1)
{
    for (int p0 = 0; p0 < j->k; p0 += j->kernel->kc) {
        int kc = j->k - p0 < j->kernel->kc ? j->k - p0 : j->kernel->kc;
        gemm_bf16_pack_a_slivers(ap + (size_t)p0 / 2 * GEMM_MR, bf16_sliver_words(j->k), a,
                                 j->lda, rows, s0, s1, p0, kc);
    }
}

/* How the first KC block of rows [i0, i0 + rows) starts C: as init says (see
 * gemm_bias), added by the tiles as they store; NULL init: C = A.B.  Each
 * row's bias is looked up here once per pass, into bias_rows (GEMM_MC). */
static gemm_seed first_seed(const packed_job *j, int i0, int rows, const float **bias_rows)
{
    const gemm_bias *in = j->init;
    if (!in)
        return (gemm_seed){.load_c = false};
    VIT_ASSERT(rows <= GEMM_MC);
    for (int r = 0; r < rows; r++)
        bias_rows[r] = in->bias[(i0 + r) / in->rows_per_bias];
    return (gemm_seed){.load_c = in->add, .bias_rows = bias_rows};
}

/* Every later block adds to what the earlier ones stored. */
static const gemm_seed later_seed = {.load_c = true};

/* Packs panels [q0, q1) of an unpacked B (gemm_packed_raw, gemm_packed_dx);
 * members pack disjoint shares. */
static void pack_b_share(const packed_job *j, int q0, int q1)
{
    if (j->b_raw && j->b_trans)
        gemm_pack_b_nt_panels(j->b_dst, j->b_raw, j->ldb, j->n, j->k, q0, q1);
    else if (j->b_raw)
        gemm_pack_b_nn_panels(j->b_dst, j->b_raw, j->ldb, j->k, j->n, q0, q1);
    else if (j->b_fwd)
        gemm_pack_b_nn_from_nt(j->b_dst, j->b_fwd, j->k, j->n, q0, q1);
}

/* One member's share, the columns split.  Rows go in passes of GEMM_MC so the
 * C rows a pass updates stay in cache across all KC blocks (at batch 8 C is
 * ~20 MB, and sweeping it once per block went to DRAM).  Per (pass, block)
 * the members pack their slivers of A, meet at the barrier (the packed block
 * is then complete), and multiply it into the column panels: each its own
 * part first, then, done early, the last panels of a slower member's part
 * (vit_team_take).  A member that woke late, or shares its CPU with another
 * process, then leaves the others a panel or two to wait for, not its whole
 * part (at batch 1 they waited 4% of the time).  Two A buffers alternate, so
 * one barrier per block suffices: a member packing step s+2 has passed
 * barrier s+1, which every member reaches only after finishing step s.  The
 * panels' shares alternate likewise (vit_team_share's rule). */
static void packed_region(void *p, int member, int threads)
{
    const packed_job *j = p;
    const packed_kernel *kern = j->kernel;
    int panels = (j->n + GEMM_NR - 1) / GEMM_NR;
    int q0, q1;
    vit_team_split(panels, member, threads, &q0, &q1);
    /* any member may multiply any panel, but only after the barrier that
     * follows the first A packing, when every member's B panels are done */
    pack_b_share(j, q0, q1);
    int pass = pass_rows(j->m);
    size_t half = gemm_packed_a_floats(pass);
    /* A product two blocks deep (ViT-B's QKV, projection and MLP-in, k =
     * 768) has all of a pass's A in the two buffers at once, so a member
     * finishes each of its panels over both blocks before the next: its C
     * columns (at batch 1, 1.2 MB of MLP-in output per member) are then
     * written once, from cache, instead of swept once per block through
     * L3.  bf16 sums both blocks in the tile's registers. */
    bool whole_k = j->k > kern->kc && j->k <= 2 * kern->kc;
    bool summed = two_blocks_summed(kern, j->k);
    int step = 0;
    for (int i0 = 0; i0 < j->m; i0 += pass) {
        int rows = j->m - i0 < pass ? j->m - i0 : pass;
        int s0, s1;
        vit_team_split((rows + GEMM_MR - 1) / GEMM_MR, member, threads, &s0, &s1);
        /* rows i0.. of A: columns i0.. of its transposed storage */
        const float *a = kern == &fp32_kernel_at ? j->a + i0 : j->a + (size_t)i0 * j->lda;
        float *c = j->c + (size_t)i0 * j->ldc;
        const float *bias_rows[GEMM_MC];
        gemm_seed first = first_seed(j, i0, rows, bias_rows);
        if (whole_k) {
            /* the buffers are the last pass's until every member is done
             * with it */
            if (i0 > 0 && threads > 1)
                vit_team_barrier(j->team);
            vit_share share = vit_team_share(j->team, step & 1, member, threads, panels);
            if (summed)
                bf16_pack_full(j, (uint32_t *)j->scratch, a, rows, s0, s1);
            else
                for (int b = 0; b < 2; b++) {
                    int p0 = b * kern->kc, kc = j->k - p0 < kern->kc ? j->k - p0 : kern->kc;
                    kern->pack_a(j->scratch + (size_t)b * half, a, j->lda, rows, s0, s1, p0, kc);
                }
            if (threads > 1)
                vit_team_barrier(j->team);
            gemm_bf16_dst dst = summed ? bf16_dst(j, i0) : (gemm_bf16_dst){0};
            for (int q; vit_team_take(&share, &q);) {
                if (summed) {
                    kern->panels_k((const uint32_t *)j->scratch, bf16_sliver_words(j->k), j->bp,
                                   j->n, j->k, rows, q, q + 1, &dst, &first, j->post);
                    continue;
                }
                for (int b = 0; b < 2; b++) {
                    int p0 = b * kern->kc, kc = j->k - p0 < kern->kc ? j->k - p0 : kern->kc;
                    kern->panels(j->scratch + (size_t)b * half, kern->b_block(j->bp, j->n, p0),
                                 rows, j->n, kc, q, q + 1, c, j->ldc,
                                 b > 0 ? &later_seed : &first, b == 1 ? j->post : GEMM_POST_NONE);
                }
            }
            step++;
            continue;
        }
        for (int p0 = 0; p0 < j->k; p0 += kern->kc, step++) {
            int kc = j->k - p0 < kern->kc ? j->k - p0 : kern->kc;
            float *ap = j->scratch + (size_t)(step & 1) * half;
            vit_share share = vit_team_share(j->team, step & 1, member, threads, panels);
            kern->pack_a(ap, a, j->lda, rows, s0, s1, p0, kc);
            if (threads > 1)
                vit_team_barrier(j->team);
            bool last = p0 + kc >= j->k;
            for (int q; vit_team_take(&share, &q);)
                kern->panels(ap, kern->b_block(j->bp, j->n, p0), rows, j->n, kc, q, q + 1, c,
                             j->ldc, p0 > 0 ? &later_seed : &first,
                             last ? j->post : GEMM_POST_NONE);
        }
    }
}

/* One member's share, the rows split: the member multiplies its own rows into
 * every panel, a chunk at a time, packing each chunk's A into its own slice
 * of the scratch, so after B is packed it never waits on the others.  A chunk
 * is a pass's rows over the members, which keeps its C rows in cache and
 * the slices inside the scratch a pass needs. */
static void packed_region_by_rows(void *p, int member, int threads)
{
    const packed_job *j = p;
    const packed_kernel *kern = j->kernel;
    int panels = (j->n + GEMM_NR - 1) / GEMM_NR;
    if (j->b_raw || j->b_fwd) {
        int q0, q1;
        vit_team_split(panels, member, threads, &q0, &q1);
        pack_b_share(j, q0, q1);
        if (threads > 1)
            vit_team_barrier(j->team);
    }
    int chunk = pass_rows(j->m) / GEMM_MR / threads; /* >= 1: split_by_rows */
    /* a summed product's slice holds both blocks: the scratch has room */
    bool summed = two_blocks_summed(kern, j->k);
    size_t slice_bytes = (size_t)chunk * kern->sliver_bytes(kern->kc) * (summed ? 2 : 1);
    void *slice = (char *)j->scratch + (size_t)member * slice_bytes;
    int s0, s1;
    vit_team_split((j->m + GEMM_MR - 1) / GEMM_MR, member, threads, &s0, &s1);
    for (int s = s0; s < s1; s += chunk) {
        int i0 = s * GEMM_MR;
        int i1 = (s + chunk < s1 ? s + chunk : s1) * GEMM_MR;
        int rows = (i1 < j->m ? i1 : j->m) - i0;
        const float *a = kern == &fp32_kernel_at ? j->a + i0 : j->a + (size_t)i0 * j->lda;
        float *c = j->c + (size_t)i0 * j->ldc;
        const float *bias_rows[GEMM_MC];
        gemm_seed first = first_seed(j, i0, rows, bias_rows);
        int slivers = (rows + GEMM_MR - 1) / GEMM_MR;
        if (summed) {
            gemm_bf16_dst dst = bf16_dst(j, i0);
            bf16_pack_full(j, slice, a, rows, 0, slivers);
            kern->panels_k(slice, bf16_sliver_words(j->k), j->bp, j->n, j->k, rows, 0, panels,
                           &dst, &first, j->post);
            continue;
        }
        for (int p0 = 0; p0 < j->k; p0 += kern->kc) {
            int kc = j->k - p0 < kern->kc ? j->k - p0 : kern->kc;
            kern->pack_a(slice, a, j->lda, rows, 0, slivers, p0, kc);
            bool last = p0 + kc >= j->k;
            kern->panels(slice, kern->b_block(j->bp, j->n, p0), rows, j->n, kc, 0, panels, c,
                         j->ldc, p0 > 0 ? &later_seed : &first, last ? j->post : GEMM_POST_NONE);
        }
    }
}

/* Whether members split a product's rows rather than its columns.  By rows,
 * every member streams all of B instead of its share, which costs little
 * while a KC block of packed B stays in a core's L2; in exchange no member
 * waits at a barrier per block, nor idles on an uneven column split: a tiny
 * ViT's products are 3 to 12 panels wide, and a weight gradient's (dW =
 * dy^T x) 3 to 12 panels wide and dozens of blocks deep. */
static bool split_by_rows(const packed_kernel *kern, int threads, int m, int n, int k)
{
    enum { B_BLOCK_BUDGET = 256 * 1024 };
    int depth = k < kern->kc ? k : kern->kc;
    size_t panels = (size_t)(n + GEMM_NR - 1) / GEMM_NR;
    size_t b_block = kern->sliver_bytes(depth) / GEMM_MR * GEMM_NR * panels;
    return threads > 1 && pass_rows(m) / GEMM_MR >= threads && b_block <= B_BLOCK_BUDGET;
}

static void run_job(packed_job *j)
{
    int threads = j->team ? vit_team_threads(j->team) : 1;
    if (threads == 1)
        packed_region(j, 0, 1);
    else if (split_by_rows(j->kernel, threads, j->m, j->n, j->k))
        vit_team_run(j->team, packed_region_by_rows, j);
    else
        vit_team_run(j->team, packed_region, j);
}

static void packed_run(const packed_kernel *kernel, vit_team *team, int m, int n, int k,
                       const float *a, size_t lda, const void *bp, float *c, size_t ldc,
                       const gemm_bias *init, gemm_post post, float *scratch,
                       size_t scratch_floats)
{
    /* the caller's buffer must hold what gemm_packed_scratch_floats promised */
    VIT_ASSERT(m >= 1 && k >= 1 && scratch_need(m) <= scratch_floats);
    packed_job j = {.kernel = kernel, .team = team, .m = m, .n = n, .k = k, .a = a, .lda = lda,
                    .bp = bp, .c = c, .ldc = ldc, .init = init, .post = post, .scratch = scratch};
    run_job(&j);
}

void gemm_packed(vit_team *team, int m, int n, int k, const float *a, size_t lda,
                 const float *w_packed, float *c, size_t ldc, const gemm_bias *init,
                 gemm_post post, float *scratch, size_t scratch_floats)
{
    packed_run(&fp32_kernel, team, m, n, k, a, lda, w_packed, c, ldc, init, post, scratch,
               scratch_floats);
}

size_t gemm_packed_raw_scratch_floats(int m, int n, int k)
{
    return gemm_packed_b_floats(n, k) + gemm_packed_scratch_floats(m);
}

void gemm_packed_raw(vit_team *team, int m, int n, int k, const float *a, size_t lda,
                     bool a_trans, const float *b, size_t ldb, bool b_trans, float *c,
                     size_t ldc, const gemm_bias *init, gemm_post post, float *scratch,
                     size_t scratch_floats)
{
    size_t b_floats = gemm_packed_b_floats(n, k);
    VIT_ASSERT(m >= 1 && k >= 1 && b_floats + scratch_need(m) <= scratch_floats);
    /* B first: its size is a multiple of GEMM_NR floats, so A's blocks stay
     * 64-byte aligned */
    packed_job j = {.kernel = a_trans ? &fp32_kernel_at : &fp32_kernel, .team = team, .m = m,
                    .n = n, .k = k, .a = a, .lda = lda, .bp = scratch, .b_raw = b, .ldb = ldb,
                    .b_trans = b_trans, .b_dst = scratch, .c = c, .ldc = ldc, .init = init,
                    .post = post, .scratch = scratch + b_floats};
    run_job(&j);
}

void gemm_packed_dx(vit_team *team, int m, int n, int k, const float *dy, size_t ldy,
                    const float *w_packed, float *c, size_t ldc, float *scratch,
                    size_t scratch_floats)
{
    size_t b_floats = gemm_packed_b_floats(n, k);
    VIT_ASSERT(m >= 1 && k >= 1 && b_floats + scratch_need(m) <= scratch_floats);
    packed_job j = {.kernel = &fp32_kernel, .team = team, .m = m, .n = n, .k = k, .a = dy,
                    .lda = ldy, .bp = scratch, .b_fwd = w_packed, .b_dst = scratch, .c = c,
                    .ldc = ldc, .post = GEMM_POST_NONE, .scratch = scratch + b_floats};
    run_job(&j);
}

static const packed_kernel *bf16_kernel(void)
{
    gemm_bf16_kind kind = gemm_bf16_available();
    VIT_ASSERT(kind != GEMM_BF16_NONE);
    return kind == GEMM_BF16_NATIVE ? &bf16_native : &bf16_emulated;
}

void gemm_packed_bf16(vit_team *team, int m, int n, int k, const float *a, size_t lda,
                      const uint16_t *w_packed, float *c, size_t ldc, const gemm_bias *init,
                      gemm_post post, float *scratch, size_t scratch_floats)
{
    packed_run(bf16_kernel(), team, m, n, k, a, lda, w_packed, c, ldc, init, post, scratch,
               scratch_floats);
}

size_t gemm_bf16_a_words(int m, int k)
{
    return (size_t)((m + GEMM_MR - 1) / GEMM_MR) * bf16_sliver_words(k);
}

int gemm_bf16_a_slivers(int m)
{
    return (m + GEMM_MR - 1) / GEMM_MR;
}

/* gemm_packed_bf16_a's items: the rows in chunks of a pass, each chunk's
 * panels in turn, so a member's run of items keeps one chunk of A (at most
 * GEMM_MC rows: 1.4 MB at k = 3072) in cache while the weights stream. */
static void prepacked_region(void *p, int member, int threads)
{
    const packed_job *j = p;
    int panels = (j->n + GEMM_NR - 1) / GEMM_NR, pass = pass_rows(j->m);
    int chunks = (j->m + pass - 1) / pass;
    size_t sliver_words = bf16_sliver_words(j->k);
    vit_share share = vit_team_shared(j->team, 0, member, threads, chunks * panels);
    for (int t; vit_team_take(&share, &t);) {
        int i0 = t / panels * pass, q = t % panels;
        int rows = j->m - i0 < pass ? j->m - i0 : pass;
        const float *bias_rows[GEMM_MC];
        gemm_seed first = first_seed(j, i0, rows, bias_rows);
        gemm_bf16_dst dst = bf16_dst(j, i0);
        j->kernel->panels_k(j->a_packed + (size_t)i0 / GEMM_MR * sliver_words, sliver_words,
                            j->bp, j->n, j->k, rows, q, q + 1, &dst, &first, j->post);
    }
}

static void prepacked_run(vit_team *team, int m, int n, int k, const uint32_t *a_packed,
                          const uint16_t *w_packed, float *c, size_t ldc, uint32_t *next,
                          const gemm_bias *init, gemm_post post)
{
    VIT_ASSERT(m >= 1 && k >= 1);
    packed_job j = {.kernel = bf16_kernel(), .team = team, .m = m, .n = n, .k = k,
                    .a_packed = a_packed, .bp = w_packed, .c = c, .ldc = ldc, .next = next,
                    .init = init, .post = post};
    int panels = (n + GEMM_NR - 1) / GEMM_NR, pass = pass_rows(m);
    int items = (m + pass - 1) / pass * panels;
    /* published before the region, so a member that starts late has its
     * items taken too; no barrier: no member packs anything */
    vit_team_share_ahead(team, 0, items);
    if (!team || vit_team_threads(team) == 1)
        prepacked_region(&j, 0, 1);
    else
        vit_team_run(team, prepacked_region, &j);
}

void gemm_packed_bf16_a(vit_team *team, int m, int n, int k, const uint32_t *a_packed,
                        const uint16_t *w_packed, float *c, size_t ldc, const gemm_bias *init,
                        gemm_post post)
{
    prepacked_run(team, m, n, k, a_packed, w_packed, c, ldc, NULL, init, post);
}

void gemm_packed_bf16_a_to_a(vit_team *team, int m, int n, int k, const uint32_t *a_packed,
                             const uint16_t *w_packed, uint32_t *next, const gemm_bias *init,
                             gemm_post post)
{
    VIT_ASSERT(!init || !init->add); /* there is no C to add to */
    prepacked_run(team, m, n, k, a_packed, w_packed, NULL, 0, next, init, post);
}

size_t gemm_packed_weight_bf16_elems(int n, int k)
{
    return gemm_bf16_packed_b_elems(n, k);
}

void gemm_pack_weight_bf16(uint16_t *dst, const float *w, int n, int k)
{
    gemm_bf16_pack_b_nt(dst, w, (size_t)k, n, k);
}

size_t gemm_packed_b_bf16_elems(int n, int k)
{
    return gemm_bf16_packed_b_elems(n, k);
}

void gemm_pack_b_bf16(uint16_t *dst, const float *b, size_t ldb, bool b_trans, int n, int k)
{
    if (b_trans)
        gemm_bf16_pack_b_nt(dst, b, ldb, n, k);
    else
        gemm_bf16_pack_b_nn(dst, b, ldb, k, n);
}

typedef struct rows_job {
    float *y;
    const float *x, *w, *bias;
    int m, n, k;
} rows_job;

static void rows_region(void *p, int member, int threads)
{
    const rows_job *j = p;
    int j0, j1;
    vit_team_split(j->n, member, threads, &j0, &j1);
    gemm_rows_dot(j->y, (size_t)j->n, j->x, (size_t)j->k, j->w, j->bias, j->m, j->k, j0, j1);
}

void gemm_rows_team(vit_team *team, float *y, const float *x, const float *w, const float *bias,
                    int m, int n, int k)
{
    rows_job j = {y, x, w, bias, m, n, k};
    vit_team_run(team, rows_region, &j);
}

#else /* no AVX-512 kernels in this build: gemm_packed_available() is false */

size_t gemm_packed_weight_floats(int n, int k)
{
    (void)n, (void)k;
    VIT_ASSERT(!"packed GEMM not built");
    return 0;
}

void gemm_pack_weight(float *dst, const float *w, int n, int k)
{
    (void)dst, (void)w, (void)n, (void)k;
    VIT_ASSERT(!"packed GEMM not built");
}

size_t gemm_packed_b_size(int n, int k)
{
    (void)n, (void)k;
    VIT_ASSERT(!"packed GEMM not built");
    return 0;
}

void gemm_pack_b(float *dst, const float *b, size_t ldb, bool b_trans, int n, int k)
{
    (void)dst, (void)b, (void)ldb, (void)b_trans, (void)n, (void)k;
    VIT_ASSERT(!"packed GEMM not built");
}

size_t gemm_packed_scratch_floats(int m)
{
    (void)m;
    VIT_ASSERT(!"packed GEMM not built");
    return 0;
}

void gemm_rows_team(vit_team *team, float *y, const float *x, const float *w, const float *bias,
                    int m, int n, int k)
{
    (void)team, (void)y, (void)x, (void)w, (void)bias, (void)m, (void)n, (void)k;
    VIT_ASSERT(!"packed GEMM not built");
}

size_t gemm_packed_raw_scratch_floats(int m, int n, int k)
{
    (void)m, (void)n, (void)k;
    VIT_ASSERT(!"packed GEMM not built");
    return 0;
}

void gemm_packed_raw(vit_team *team, int m, int n, int k, const float *a, size_t lda,
                     bool a_trans, const float *b, size_t ldb, bool b_trans, float *c,
                     size_t ldc, const gemm_bias *init, gemm_post post, float *scratch,
                     size_t scratch_floats)
{
    (void)team, (void)m, (void)n, (void)k, (void)a, (void)lda, (void)a_trans, (void)b;
    (void)ldb, (void)b_trans, (void)c, (void)ldc, (void)init, (void)post, (void)scratch;
    (void)scratch_floats;
    VIT_ASSERT(!"packed GEMM not built");
}

void gemm_packed_dx(vit_team *team, int m, int n, int k, const float *dy, size_t ldy,
                    const float *w_packed, float *c, size_t ldc, float *scratch,
                    size_t scratch_floats)
{
    (void)team, (void)m, (void)n, (void)k, (void)dy, (void)ldy, (void)w_packed, (void)c;
    (void)ldc, (void)scratch, (void)scratch_floats;
    VIT_ASSERT(!"packed GEMM not built");
}

size_t gemm_packed_weight_bf16_elems(int n, int k)
{
    (void)n, (void)k;
    VIT_ASSERT(!"packed GEMM not built");
    return 0;
}

void gemm_pack_weight_bf16(uint16_t *dst, const float *w, int n, int k)
{
    (void)dst, (void)w, (void)n, (void)k;
    VIT_ASSERT(!"packed GEMM not built");
}

size_t gemm_packed_b_bf16_elems(int n, int k)
{
    (void)n, (void)k;
    VIT_ASSERT(!"packed GEMM not built");
    return 0;
}

void gemm_pack_b_bf16(uint16_t *dst, const float *b, size_t ldb, bool b_trans, int n, int k)
{
    (void)dst, (void)b, (void)ldb, (void)b_trans, (void)n, (void)k;
    VIT_ASSERT(!"packed GEMM not built");
}

void gemm_packed_bf16(vit_team *team, int m, int n, int k, const float *a, size_t lda,
                      const uint16_t *w_packed, float *c, size_t ldc, const gemm_bias *init,
                      gemm_post post, float *scratch, size_t scratch_floats)
{
    (void)team, (void)m, (void)n, (void)k, (void)a, (void)lda, (void)w_packed, (void)c;
    (void)ldc, (void)init, (void)post, (void)scratch, (void)scratch_floats;
    VIT_ASSERT(!"packed GEMM not built");
}

size_t gemm_bf16_a_words(int m, int k)
{
    (void)m, (void)k;
    return 0;
}

int gemm_bf16_a_slivers(int m)
{
    (void)m;
    return 0;
}

void gemm_packed_bf16_a(vit_team *team, int m, int n, int k, const uint32_t *a_packed,
                        const uint16_t *w_packed, float *c, size_t ldc, const gemm_bias *init,
                        gemm_post post)
{
    (void)team, (void)m, (void)n, (void)k, (void)a_packed, (void)w_packed, (void)c, (void)ldc;
    (void)init, (void)post;
    VIT_ASSERT(!"packed GEMM not built");
}

void gemm_packed_bf16_a_to_a(vit_team *team, int m, int n, int k, const uint32_t *a_packed,
                             const uint16_t *w_packed, uint32_t *next, const gemm_bias *init,
                             gemm_post post)
{
    (void)team, (void)m, (void)n, (void)k, (void)a_packed, (void)w_packed, (void)next;
    (void)init, (void)post;
    VIT_ASSERT(!"packed GEMM not built");
}

void gemm_packed(vit_team *team, int m, int n, int k, const float *a, size_t lda,
                 const float *w_packed, float *c, size_t ldc, const gemm_bias *init,
                 gemm_post post, float *scratch, size_t scratch_floats)
{
    (void)team, (void)m, (void)n, (void)k, (void)a, (void)lda, (void)w_packed, (void)c;
    (void)ldc, (void)init, (void)post, (void)scratch, (void)scratch_floats;
    VIT_ASSERT(!"packed GEMM not built");
}

#endif
