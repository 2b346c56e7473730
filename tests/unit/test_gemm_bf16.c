/*
 * test_gemm_bf16.c - the bf16 packed GEMM against a reference on
 * bf16-rounded inputs, over every edge of its layout.
 *
 * The reference rounds A and W to bf16 (gemm_bf16_round) and sums their
 * products in double; the kernel sums the same products in fp32, so each
 * output may differ by the fp32 summation bound, (k + 2) u sum|a w| with
 * u = 2^-24, and by no more.  A packing slip (a wrong pair, a lost odd k,
 * truncation instead of rounding to nearest) moves some output by at least
 * one product's bf16 rounding, 2^-9 |a w|, far outside that bound.
 *
 * Shapes hit a partial 14-row tile, a partial 32-column panel, an odd k (a
 * padded pair), k across the 512-deep block, and more rows than a 224-row
 * pass.  Both tile builds run: the emulated one on every AVX-512 CPU, the
 * vdpbf16ps one where the CPU has avx512_bf16, and the two must agree.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "check.h"
#include "cpu.h"
#include "gemm.h"
#include "gemm_bf16.h"
#include "ops.h"
#include "ops_avx512.h"
#include "pool.h"
#include "randinit.h"

/* See check_attention_bf16. */
#define ATTENTION_BF16_TOL 1e-3

static float *random_floats(size_t n, const char *name, uint64_t seed)
{
    float *v = malloc((n ? n : 1) * sizeof *v);
    if (v)
        randinit_fill(v, n, name, seed, 1.0, 0.0);
    return v;
}

static void *aligned(size_t bytes)
{
    return aligned_alloc(64, ((bytes ? bytes : 1) + 63) & ~(size_t)63);
}

/* ---- rounding ---- */

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static void test_rounding(void)
{
    static const struct { uint32_t in, out; } cases[] = {
        {0x3f800000, 0x3f80},          /* 1.0 exact */
        {0x3f808000, 0x3f80},          /* tie, even below: stays */
        {0x3f818000, 0x3f82},          /* tie, odd below: rounds up to even */
        {0x3f808001, 0x3f81},          /* just above the tie: up */
        {0x3f807fff, 0x3f80},          /* just below the tie: down */
        {0xbf818000, 0xbf82},          /* negative ties alike */
        {0x7f7fffff, 0x7f80},          /* FLT_MAX rounds to infinity, as RNE must */
        {0x7f800000, 0x7f80},          /* +inf */
        {0xff800000, 0xff80},          /* -inf */
        {0x00000001, 0x0000},          /* the smallest subnormal rounds to zero */
        {0x80000000, 0x8000},          /* -0 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t got = gemm_bf16_bits(from_bits(cases[i].in));
        CHECKF(got == cases[i].out, "bf16 of 0x%08x: 0x%04x, want 0x%04x", cases[i].in, got,
               cases[i].out);
        CHECK(bits_of(gemm_bf16_round(from_bits(cases[i].in))) == (uint32_t)cases[i].out << 16);
    }
    /* NaN stays NaN, even one whose payload would round up into inf */
    static const uint32_t nans[] = {0x7f800001, 0x7fffffff, 0xff800001, 0x7fc00000};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++)
        CHECKF(isnan(gemm_bf16_round(from_bits(nans[i]))), "NaN 0x%08x became 0x%04x", nans[i],
               gemm_bf16_bits(from_bits(nans[i])));
}

/* ---- the product ---- */

typedef struct bound {
    double worst;     /* largest |got - want| / allowed seen */
    size_t where;
    float got, want;
} bound;

/* C = init + A W^T (+ GELU) in bf16 vs the reference on rounded inputs. */
static void check_product(vit_team *team, int m, int n, int k, int mode)
{
    size_t mk = (size_t)m * k, nk = (size_t)n * k, mn = (size_t)m * n;
    float *a = random_floats(mk, "a", (uint64_t)(m * 131 + k));
    float *w = random_floats(nk, "w", (uint64_t)(n * 7 + k));
    float *bias = random_floats((size_t)n * 2, "bias", 3);
    float *got = random_floats(mn, "c", 5); /* garbage unless adding */
    float *start = malloc(mn * sizeof *start);
    uint16_t *wp = aligned(gemm_packed_weight_bf16_elems(n, k) * sizeof(uint16_t));
    size_t scratch_floats = gemm_packed_scratch_floats(m);
    float *scratch = aligned(scratch_floats * sizeof(float));
    if (!a || !w || !bias || !got || !start || !wp || !scratch) {
        CHECK(!"out of memory");
        goto out;
    }
    memcpy(start, got, mn * sizeof *start);
    gemm_pack_weight_bf16(wp, w, n, k);
    const float *biases[256]; /* rows of image 0 take bias 0, image 1 none, image 2 bias 1 */
    int per = 3;
    for (int i = 0; i < 256; i++)
        biases[i] = i % 3 == 1 ? NULL : bias + (size_t)(i % 2) * n;
    gemm_bias init = {biases, per, mode == 2};
    gemm_post post = mode == 3 ? GEMM_POST_GELU : GEMM_POST_NONE;
    gemm_packed_bf16(team, m, n, k, a, (size_t)k, wp, got, (size_t)n, mode >= 1 ? &init : NULL,
                     post, scratch, scratch_floats);
    bound b = {0};
    for (int r = 0; r < m; r++)
        for (int j = 0; j < n; j++) {
            double sum = 0, mag = 0;
            for (int p = 0; p < k; p++) {
                double prod = (double)gemm_bf16_round(a[(size_t)r * k + p]) *
                              gemm_bf16_round(w[(size_t)j * k + p]);
                sum += prod;
                mag += fabs(prod);
            }
            const float *bi = mode >= 1 ? biases[r / per] : NULL;
            double before = (mode == 2 ? start[(size_t)r * n + j] : 0) + (bi ? bi[j] : 0);
            double want = sum + before;
            /* fp32 sums of k products onto the start value, then GELU (few ulps) */
            double allowed = (k + 2) * 0x1p-24 * (mag + fabs(before)) + 1e-30;
            if (post == GEMM_POST_GELU) {
                float g = (float)want;
                gelu_forward(&g, &g, 1);
                want = g;
                allowed = 1.2 * allowed + 4e-7 * (fabs(want) + 1e-3);
            }
            double err = fabs((double)got[(size_t)r * n + j] - want) / allowed;
            if (!(err <= b.worst)) {
                b.worst = isnan(err) ? INFINITY : err;
                b.where = (size_t)r * n + j;
                b.got = got[b.where];
                b.want = (float)want;
            }
        }
    static const char *modes[] = {"C = AB", "C = bias + AB", "C += bias + AB", "gelu(bias+AB)"};
    CHECKF(b.worst <= 1.0, "bf16 %dx%dx%d %s (team %d): element %zu is %.9g, want %.9g (%.2f x "
           "the bound)", m, n, k, modes[mode], team ? vit_team_threads(team) : 1, b.where, b.got,
           b.want, b.worst);
out:
    free(a), free(w), free(bias), free(got), free(start), free(wp), free(scratch);
}

/* A team's split must not change a bit: each column is one member's. */
static void check_team_bits(vit_team *team)
{
    int m = 197, n = 2 * 768 + 17, k = 1100;
    float *a = random_floats((size_t)m * k, "a", 1), *w = random_floats((size_t)n * k, "w", 2);
    float *c1 = calloc((size_t)m * n, sizeof *c1), *c2 = calloc((size_t)m * n, sizeof *c2);
    uint16_t *wp = aligned(gemm_packed_weight_bf16_elems(n, k) * sizeof(uint16_t));
    size_t sf = gemm_packed_scratch_floats(m);
    float *scratch = aligned(sf * sizeof(float));
    if (a && w && c1 && c2 && wp && scratch) {
        gemm_pack_weight_bf16(wp, w, n, k);
        gemm_packed_bf16(NULL, m, n, k, a, (size_t)k, wp, c1, (size_t)n, NULL, GEMM_POST_NONE,
                         scratch, sf);
        gemm_packed_bf16(team, m, n, k, a, (size_t)k, wp, c2, (size_t)n, NULL, GEMM_POST_NONE,
                         scratch, sf);
        CHECKF(memcmp(c1, c2, (size_t)m * n * sizeof *c1) == 0,
               "a team of %d changed the bf16 result of one thread", vit_team_threads(team));
    } else {
        CHECK(!"out of memory");
    }
    free(a), free(w), free(c1), free(c2), free(wp), free(scratch);
}

/* B (k, n) packed as is must equal its transpose packed as a weight, both
 * read with row strides wider than a row (attention packs heads out of the
 * fused qkv rows) and with NaN among the values. */
static void check_pack_nn(void)
{
    static const int shapes[][3] = {{1, 1, 0},   {3, 33, 5},   {511, 32, 0},
                                    {513, 65, 3}, {1025, 7, 1}, {197, 64, 128}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int k = shapes[s][0], n = shapes[s][1], pad = shapes[s][2];
        size_t ldb = (size_t)n + pad, ldt = (size_t)k + pad;
        float *b = random_floats((size_t)k * ldb, "b", (uint64_t)s);
        float *bt = random_floats((size_t)n * ldt, "bt", (uint64_t)s);
        size_t elems = gemm_packed_b_bf16_elems(n, k);
        uint16_t *p1 = aligned(elems * 2), *p2 = aligned(elems * 2);
        if (!b || !bt || !p1 || !p2) {
            CHECK(!"out of memory");
        } else {
            b[(size_t)(k - 1) * ldb] = NAN;
            for (int p = 0; p < k; p++)
                for (int j = 0; j < n; j++)
                    bt[(size_t)j * ldt + p] = b[(size_t)p * ldb + j];
            memset(p1, 0xab, elems * 2);
            memset(p2, 0xcd, elems * 2); /* padding must be written, not left */
            gemm_pack_b_bf16(p1, b, ldb, false, n, k);
            gemm_pack_b_bf16(p2, bt, ldt, true, n, k);
            CHECKF(memcmp(p1, p2, elems * 2) == 0, "bf16 pack nn != nt for k %d n %d ld +%d", k,
                   n, pad);
            /* and each element is the scalar rounding of its value */
            size_t bad = 0;
            for (int p = 0; p < k; p++)
                for (int j = 0; j < n; j++) {
                    int p0 = p / GEMM_BF16_KC * GEMM_BF16_KC;
                    int kc = k - p0 < GEMM_BF16_KC ? k - p0 : GEMM_BF16_KC;
                    size_t panel = (size_t)(kc + 1) / 2 * 2 * GEMM_NR;
                    size_t at = gemm_bf16_packed_b_block(n, p0) + (size_t)(j / GEMM_NR) * panel +
                                (size_t)(p % GEMM_BF16_KC / 2) * 2 * GEMM_NR +
                                2 * (size_t)(j % GEMM_NR) + (size_t)(p % 2);
                    bad += p1[at] != gemm_bf16_bits(b[(size_t)p * ldb + j]);
                }
            CHECKF(bad == 0, "%zu packed bf16 values are not their value rounded (k %d n %d)",
                   bad, k, n);
        }
        free(b), free(bt), free(p1), free(p2);
    }
}

/* Every packed pair of A is its two values rounded, where the tile reads it:
 * slivers of MR rows, pair q of row i at q * MR + i; rows past m and the odd
 * half past kc zero.  Row strides wider than kc, a block not at column 0 and
 * NaN included. */
static void check_pack_a(void)
{
    static const int shapes[][4] = {/* m, kc, p0, lda */ {1, 1, 0, 1},      {14, 32, 0, 40},
                                    {29, 77, 5, 90},    {15, 64, 64, 200},
                                    {197, 512, 256, 768}, {3, 33, 0, 33}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int m = shapes[s][0], kc = shapes[s][1], p0 = shapes[s][2], lda = shapes[s][3];
        int slivers = (m + GEMM_MR - 1) / GEMM_MR, pairs = (kc + 1) / 2;
        float *a = random_floats((size_t)m * lda, "a", (uint64_t)s + 40);
        uint32_t *packed = aligned((size_t)slivers * pairs * GEMM_MR * 4);
        if (!a || !packed) {
            CHECK(!"out of memory");
            free(a), free(packed);
            continue;
        }
        a[(size_t)(m - 1) * lda + p0 + kc - 1] = NAN;
        memset(packed, 0xab, (size_t)slivers * pairs * GEMM_MR * 4);
        gemm_bf16_pack_a_block(packed, a, (size_t)lda, m, 0, slivers, p0, kc);
        size_t bad = 0;
        for (int r = 0; r < slivers * GEMM_MR; r++)
            for (int q = 0; q < pairs; q++) {
                uint32_t want = 0;
                if (r < m) {
                    const float *src = a + (size_t)r * lda + p0 + 2 * q;
                    want = gemm_bf16_bits(src[0]);
                    if (2 * q + 1 < kc)
                        want |= (uint32_t)gemm_bf16_bits(src[1]) << 16;
                }
                bad += packed[((size_t)(r / GEMM_MR) * pairs + q) * GEMM_MR + r % GEMM_MR] != want;
            }
        CHECKF(bad == 0, "%zu packed A pairs wrong (m %d kc %d p0 %d lda %d)", bad, m, kc, p0,
               lda);
        free(a), free(packed);
    }
}

/* A row whose bias entry is NULL in copy mode starts at zero: the tile adds
 * +0 to its products, so an output of -0 (vdpbf16ps flushes a denormal
 * product to zero keeping its sign) comes out +0, as from a C zeroed and
 * then added to.  Rows 0 and 1 take a NULL and a real bias.  Native only:
 * the emulation keeps the denormal. */
static void check_null_bias_adds_zero(void)
{
    enum { M = 2, N = 3, K = 2 };
    /* row 0, columns 0 and 1: products of 2^-70 and -2^-70, below bf16's
     * normal range */
    const float a[M * K] = {0x1p-70f, 0x1p-70f, 1.0f, 2.0f};
    const float w[N * K] = {-0x1p-70f, 0.0f, -0x1p-70f, -0x1p-70f, 0.5f, 0.25f};
    const float bias[N] = {1.0f, 2.0f, 3.0f};
    const float *rows[M] = {NULL, bias};
    gemm_bias init = {rows, 1, false};
    size_t sf = gemm_packed_scratch_floats(M);
    float *scratch = aligned(sf * sizeof(float));
    uint16_t *wp = aligned(gemm_packed_weight_bf16_elems(N, K) * 2);
    float c[M * N];
    if (!scratch || !wp) {
        CHECK(!"out of memory");
    } else {
        gemm_pack_weight_bf16(wp, w, N, K);
        memset(c, 0x7f, sizeof c);
        gemm_packed_bf16(NULL, M, N, K, a, K, wp, c, N, &init, GEMM_POST_NONE, scratch, sf);
        for (int j = 0; j < 2; j++)
            CHECKF(c[j] == 0.0f && !signbit(c[j]), "NULL bias row, column %d: %a, not +0", j,
                   (double)c[j]);
        CHECKF(c[2] == 0x1.8p-71f, "NULL bias row, column 2: %a", (double)c[2]);
        /* the real bias row: products of 2^-70 vanish next to it */
        CHECKF(c[N] == 1.0f && c[N + 1] == 2.0f && c[N + 2] == 4.0f, "bias row: %g %g %g",
               (double)c[N], (double)c[N + 1], (double)c[N + 2]);
    }
    free(scratch), free(wp);
}

/* ---- a result kept packed for the next product ---- */

/* A (m, k) packed whole, as gemm_packed_bf16_a reads it. */
static uint32_t *pack_whole(const float *a, int m, int k)
{
    size_t words = gemm_bf16_a_words(m, k);
    uint32_t *ap = aligned(words * sizeof *ap);
    if (!ap)
        return NULL;
    int slivers = (m + GEMM_MR - 1) / GEMM_MR;
    for (int p0 = 0; p0 < k; p0 += GEMM_BF16_KC)
        gemm_bf16_pack_a_slivers(ap + (size_t)p0 / 2 * GEMM_MR, (size_t)(k + 1) / 2 * GEMM_MR, a,
                                 (size_t)k, m, 0, slivers,
                                 p0, k - p0 < GEMM_BF16_KC ? k - p0 : GEMM_BF16_KC);
    return ap;
}

/* A bf16 product from a packed A into a next one: gemm_packed_bf16_a_to_a
 * must write exactly what packing gemm_packed_bf16_a's fp32 result gives
 * (the same tile sums), every word of the buffer, rows past m and an odd
 * n's padded half zero; up to two blocks deep that result equals
 * gemm_packed_bf16's on fp32 A bit for bit (both sum all of k in the tile),
 * and so does the next product's.  With a team or without. */
static void check_chain(vit_team *team, int m, int n, int k, int n2)
{
    float *a = random_floats((size_t)m * k, "a", (uint64_t)m), *w = random_floats((size_t)n * k,
                                                                                 "w", 4);
    float *w2 = random_floats((size_t)n2 * n, "w2", 6), *bias = random_floats((size_t)n, "b", 7);
    float *h = malloc((size_t)m * n * sizeof *h), *h_ref = malloc((size_t)m * n * sizeof *h_ref);
    float *want = random_floats((size_t)m * n2, "c", 8);
    float *got = malloc((size_t)m * n2 * sizeof *got);
    uint16_t *wp = aligned(gemm_packed_weight_bf16_elems(n, k) * 2);
    uint16_t *wp2 = aligned(gemm_packed_weight_bf16_elems(n2, n) * 2);
    size_t words = gemm_bf16_a_words(m, n), sf = gemm_packed_scratch_floats(m);
    uint32_t *next = aligned(words * sizeof *next), *ap = a ? pack_whole(a, m, k) : NULL;
    float *scratch = aligned(sf * sizeof(float));
    uint32_t *want_next = NULL;
    int threads = team ? vit_team_threads(team) : 1;
    if (!a || !w || !w2 || !bias || !h || !h_ref || !want || !got || !wp || !wp2 || !next ||
        !ap || !scratch) {
        CHECK(!"out of memory");
        goto out;
    }
    memcpy(got, want, (size_t)m * n2 * sizeof *got); /* the same start to add to */
    if (m > 1) { /* row 1 infinite: padded columns still hold zeros, not inf x 0 */
        a[k] = INFINITY;
        ap[GEMM_MR > 1 ? 1 : 0] = (uint32_t)gemm_bf16_bits(INFINITY) |
                                  (ap[GEMM_MR > 1 ? 1 : 0] & 0xffff0000u);
    }
    gemm_pack_weight_bf16(wp, w, n, k);
    gemm_pack_weight_bf16(wp2, w2, n2, n);
    const float *rows[1] = {bias};
    gemm_bias init = {rows, m, false};
    gemm_packed_bf16_a(team, m, n, k, ap, wp, h, (size_t)n, &init, GEMM_POST_GELU);
    memset(next, 0xab, words * sizeof *next);
    gemm_packed_bf16_a_to_a(team, m, n, k, ap, wp, next, &init, GEMM_POST_GELU);
    want_next = pack_whole(h, m, n);
    CHECKF(want_next && memcmp(next, want_next, words * sizeof *next) == 0,
           "bf16 %dx%dx%d into the next A (team %d) differs from packing its fp32 result", m, n,
           k, threads);
    if (k <= 2 * GEMM_BF16_KC) {
        gemm_packed_bf16(team, m, n, k, a, (size_t)k, wp, h_ref, (size_t)n, &init,
                         GEMM_POST_GELU, scratch, sf);
        CHECKF(memcmp(h, h_ref, (size_t)m * n * sizeof *h) == 0,
               "bf16 %dx%dx%d on a packed A (team %d) differs from packing it per call", m, n, k,
               threads);
    }
    /* the next product: C += A W2^T with no bias */
    gemm_bias add = {(const float *const[]){NULL}, m, true};
    gemm_packed_bf16(team, m, n2, n, h, (size_t)n, wp2, want, (size_t)n2, &add, GEMM_POST_NONE,
                     scratch, sf);
    gemm_packed_bf16_a(team, m, n2, n, next, wp2, got, (size_t)n2, &add, GEMM_POST_NONE);
    if (n <= 2 * GEMM_BF16_KC) {
        CHECKF(memcmp(got, want, (size_t)m * n2 * sizeof *got) == 0,
               "bf16 %dx%dx%d on the packed A (team %d) differs from packing it per call", m, n2,
               n, threads);
        goto out;
    }
    /* deeper than two blocks the per-call product adds block by block: each
     * result is within (n + 2) u sum|products| of the exact sum */
    for (int r = 0; r < m; r++)
        for (int j = 0; j < n2; j++) {
            double size = 0;
            for (int p = 0; p < n; p++)
                size += fabs((double)gemm_bf16_round(h[(size_t)r * n + p]) *
                             gemm_bf16_round(w2[(size_t)j * n + p]));
            size_t at = (size_t)r * n2 + j;
            double bound = 2 * (n + 2) * 0x1p-24 * (size + fabs(want[at])) + 1e-30;
            bool both_nan = isnan(got[at]) && isnan(want[at]); /* row 1 */
            if (!(fabs((double)got[at] - want[at]) <= bound) && !both_nan) {
                CHECKF(0, "bf16 on a packed A %dx%dx%d: [%d][%d] %.9g vs %.9g", m, n2, n, r, j,
                       got[at], want[at]);
                goto out;
            }
        }
out:
    free(a), free(w), free(w2), free(bias), free(h), free(h_ref), free(want), free(got);
    free(wp), free(wp2), free(next), free(ap), free(scratch), free(want_next);
}

/* Teams of 2..4 repeating products must give one thread's bits every time:
 * a member packing the next pass over a buffer another still reads, or two
 * members' slices of the scratch overlapping, shows as a bit that differs
 * in some run.  Column and row splits, one and two blocks deep, fp32 and
 * packed A, fp32 and packed results. */
static void check_team_repeats(void)
{
    static const int shapes[][3] = {{239, 77, 1024}, {450, 1024, 768}, {239, 96, 300}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        float *a = random_floats((size_t)m * k, "a", 31);
        float *w = random_floats((size_t)n * k, "w", 32);
        uint16_t *wp = aligned(gemm_packed_weight_bf16_elems(n, k) * 2);
        uint32_t *ap = a ? pack_whole(a, m, k) : NULL;
        size_t words = gemm_bf16_a_words(m, n), sf = gemm_packed_scratch_floats(m);
        float *c1 = malloc((size_t)m * n * sizeof *c1), *c2 = malloc((size_t)m * n * sizeof *c2);
        uint32_t *n1 = aligned(words * 4), *n2 = aligned(words * 4);
        float *scratch = aligned(sf * sizeof(float));
        if (!a || !w || !wp || !ap || !c1 || !c2 || !n1 || !n2 || !scratch) {
            CHECK(!"out of memory");
            goto next;
        }
        gemm_pack_weight_bf16(wp, w, n, k);
        gemm_packed_bf16(NULL, m, n, k, a, (size_t)k, wp, c1, (size_t)n, NULL, GEMM_POST_GELU,
                         scratch, sf);
        gemm_packed_bf16_a_to_a(NULL, m, n, k, ap, wp, n1, NULL, GEMM_POST_GELU);
        for (int threads = 2; threads <= 4; threads++) {
            vit_error err = {0};
            vit_team *t = NULL;
            CHECKF(vit_team_create(threads, &t, &err) == VIT_OK, "%s", err.message);
            int differ = 0;
            for (int run = 0; t && run < 10; run++) {
                gemm_packed_bf16(t, m, n, k, a, (size_t)k, wp, c2, (size_t)n, NULL,
                                 GEMM_POST_GELU, scratch, sf);
                gemm_packed_bf16_a_to_a(t, m, n, k, ap, wp, n2, NULL, GEMM_POST_GELU);
                differ += memcmp(c1, c2, (size_t)m * n * sizeof *c1) != 0;
                differ += memcmp(n1, n2, words * 4) != 0;
            }
            CHECKF(differ == 0, "bf16 %dx%dx%d on a team of %d: %d of 20 results differ from "
                   "one thread's", m, n, k, threads, differ);
            vit_team_free(t);
        }
    next:
        free(a), free(w), free(wp), free(ap), free(c1), free(c2), free(n1), free(n2);
        free(scratch);
    }
}

/* A NaN row's outputs through the GELU must not depend on how many rows the
 * product has (each tile height is compiled apart, and the GELU combines
 * NaNs): row 0 all -NaN, m from 1 to 16, into fp32 rows and into a next
 * packed A, QuickGELU too. */
static void check_nan_rows(void)
{
    enum { K = 40, N = 33, M_MAX = 16 };
    float *a = random_floats((size_t)M_MAX * K, "a", 41);
    float *w = random_floats((size_t)N * K, "w", 42);
    uint16_t *wp = aligned(gemm_packed_weight_bf16_elems(N, K) * 2);
    float *c = malloc((size_t)M_MAX * N * sizeof *c), first[N];
    uint32_t *next = aligned(gemm_bf16_a_words(M_MAX, N) * 4), first_next[(N + 1) / 2];
    float *scratch = aligned(gemm_packed_scratch_floats(M_MAX) * sizeof(float));
    if (!a || !w || !wp || !c || !next || !scratch) {
        CHECK(!"out of memory");
        goto out;
    }
    for (int p = 0; p < K; p++)
        a[p] = -NAN;
    gemm_pack_weight_bf16(wp, w, N, K);
    for (int post = GEMM_POST_GELU; post <= GEMM_POST_QUICK_GELU; post++)
        for (int m = 1; m <= M_MAX; m++) {
            uint32_t *ap = pack_whole(a, m, K);
            if (!ap) {
                CHECK(!"out of memory");
                break;
            }
            gemm_packed_bf16(NULL, m, N, K, a, K, wp, c, N, NULL, (gemm_post)post, scratch,
                             gemm_packed_scratch_floats(M_MAX));
            gemm_packed_bf16_a_to_a(NULL, m, N, K, ap, wp, next, NULL, (gemm_post)post);
            /* row 0's pairs: word i of every pair run of the first sliver */
            uint32_t row0[(N + 1) / 2];
            for (int q = 0; q < (N + 1) / 2; q++)
                row0[q] = next[(size_t)q * GEMM_MR];
            if (m == 1) {
                memcpy(first, c, sizeof first);
                memcpy(first_next, row0, sizeof row0);
            }
            CHECKF(memcmp(first, c, sizeof first) == 0 &&
                       memcmp(first_next, row0, sizeof row0) == 0,
                   "a NaN row through %s: its bits change with %d rows",
                   post == GEMM_POST_GELU ? "GELU" : "QuickGELU", m);
            free(ap);
        }
out:
    free(a), free(w), free(wp), free(c), free(next), free(scratch);
}

/* A LayerNorm into a packed A: exactly layernorm_forward_avx512's values
 * rounded as packing rounds them, each image's rows with its own bias,
 * every word written, a range of slivers at a time. */
static void check_layernorm_packed(int m, int C, int R)
{
    int images = (m + R - 1) / R, slivers = gemm_bf16_a_slivers(m);
    float *x = random_floats((size_t)m * C, "x", (uint64_t)C);
    float *g = random_floats((size_t)C, "g", 1);
    float *b = random_floats((size_t)C * images, "b", 2), *y = malloc((size_t)m * C * sizeof *y);
    const float **bias = malloc((size_t)images * sizeof *bias);
    size_t words = gemm_bf16_a_words(m, C);
    uint32_t *got = aligned(words * sizeof *got), *want = NULL;
    if (!x || !g || !b || !y || !bias || !got) {
        CHECK(!"out of memory");
        goto out;
    }
    for (int i = 0; i < images; i++) {
        bias[i] = b + (size_t)i * C;
        int r0 = i * R, rows = m - r0 < R ? m - r0 : R;
        layernorm_forward_avx512(y + (size_t)r0 * C, NULL, NULL, x + (size_t)r0 * C, g, bias[i],
                                 (size_t)rows, C, 1e-6f);
    }
    want = pack_whole(y, m, C);
    memset(got, 0xab, words * sizeof *got);
    layernorm_bf16_slivers_avx512(got, x, m, C, g, bias, R, 1e-6f, 0, slivers / 2);
    layernorm_bf16_slivers_avx512(got, x, m, C, g, bias, R, 1e-6f, slivers / 2, slivers);
    CHECKF(want && memcmp(got, want, words * sizeof *got) == 0,
           "LayerNorm of %d x %d (%d rows an image) into a packed A differs from packing it", m,
           C, R);
out:
    free(x), free(g), free(b), free(y), free(bias), free(got), free(want);
}

/* gemm_packed_bf16_a many blocks deep against the reference on rounded
 * inputs, its team's split not changing a bit. */
static void check_packed_a_deep(vit_team *team, int m, int n, int k)
{
    float *a = random_floats((size_t)m * k, "a", 21), *w = random_floats((size_t)n * k, "w", 22);
    float *c1 = calloc((size_t)m * n, sizeof *c1), *c2 = calloc((size_t)m * n, sizeof *c2);
    uint16_t *wp = aligned(gemm_packed_weight_bf16_elems(n, k) * 2);
    uint32_t *ap = a ? pack_whole(a, m, k) : NULL;
    if (!a || !w || !c1 || !c2 || !wp || !ap) {
        CHECK(!"out of memory");
    } else {
        gemm_pack_weight_bf16(wp, w, n, k);
        gemm_packed_bf16_a(NULL, m, n, k, ap, wp, c1, (size_t)n, NULL, GEMM_POST_NONE);
        gemm_packed_bf16_a(team, m, n, k, ap, wp, c2, (size_t)n, NULL, GEMM_POST_NONE);
        CHECKF(memcmp(c1, c2, (size_t)m * n * sizeof *c1) == 0,
               "bf16 on a packed A: a team of %d changed the result", vit_team_threads(team));
        double worst = 0;
        for (int r = 0; r < m; r++)
            for (int j = 0; j < n; j++) {
                double sum = 0, size = 0;
                for (int p = 0; p < k; p++) {
                    double prod = (double)gemm_bf16_round(a[(size_t)r * k + p]) *
                                  gemm_bf16_round(w[(size_t)j * k + p]);
                    sum += prod;
                    size += fabs(prod);
                }
                double err = fabs(c1[(size_t)r * n + j] - sum) / ((k + 2) * 0x1p-24 * size + 1e-30);
                worst = err > worst ? err : worst;
            }
        CHECKF(worst <= 1.0, "bf16 %dx%dx%d on a packed A: %.2f x the fp32 summation bound", m,
               n, k, worst);
    }
    free(a), free(w), free(c1), free(c2), free(wp), free(ap);
}

/* Where the CPU has vdpbf16ps: the native tile and its emulation on the same
 * A, packed over all of k (two blocks summed in the tile's registers).  The
 * instruction rounds after each of a pair's two products as the emulation
 * does; its denormal flushing does not show at these magnitudes, so the two
 * must agree within a few fp32 roundings. */
static void check_native_vs_emulated(void)
{
#ifdef VIT_HAVE_BF16_NATIVE
    int m = 29, n = 65, k = 1024;
    float *a = random_floats((size_t)m * k, "a", 9), *w = random_floats((size_t)n * k, "w", 8);
    uint16_t *wp = aligned(gemm_packed_weight_bf16_elems(n, k) * 2);
    uint32_t *ap = aligned(gemm_bf16_a_words(m, k) * sizeof(uint32_t));
    float *c1 = calloc((size_t)m * n, sizeof *c1), *c2 = calloc((size_t)m * n, sizeof *c2);
    if (!a || !w || !wp || !ap || !c1 || !c2) {
        CHECK(!"out of memory");
    } else {
        gemm_pack_weight_bf16(wp, w, n, k);
        int slivers = (m + GEMM_MR - 1) / GEMM_MR, panels = (n + GEMM_NR - 1) / GEMM_NR;
        size_t sliver_words = (size_t)k / 2 * GEMM_MR;
        for (int p0 = 0; p0 < k; p0 += GEMM_BF16_KC)
            gemm_bf16_pack_a_slivers(ap + (size_t)p0 / 2 * GEMM_MR, sliver_words, a, (size_t)k,
                                     m, 0, slivers, p0, GEMM_BF16_KC);
        gemm_seed seed = {.load_c = false};
        gemm_bf16_dst d1 = {.c = c1, .ldc = (size_t)n}, d2 = {.c = c2, .ldc = (size_t)n};
        gemm_bf16_panels_native(ap, sliver_words, wp, n, k, m, 0, panels, &d1, &seed,
                                GEMM_POST_NONE);
        gemm_bf16_panels_emulated(ap, sliver_words, wp, n, k, m, 0, panels, &d2, &seed,
                                  GEMM_POST_NONE);
        check_close("vdpbf16ps vs its emulation", c1, c2, (size_t)m * n, 1e-5, 1e-5);
    }
    free(a), free(w), free(wp), free(ap), free(c1), free(c2);
#endif
}

/* bf16 attention against the same attention in double on bf16-rounded q, k,
 * probabilities and v: the largest error over the largest |output| of its
 * (image, head), and where it is. */
static double attention_bf16_error(const float *got, const float *qkv, int B, int N, int C,
                                   int NH)
{
    int hs = C / NH;
    size_t ld = 3 * (size_t)C;
    double scale = 1.0 / sqrt((double)hs), worst = 0;
    double *p = malloc((size_t)N * sizeof *p), *o = malloc((size_t)N * hs * sizeof *o);
    if (!p || !o) {
        free(p), free(o);
        return INFINITY;
    }
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *q = qkv + (size_t)b * N * ld + (size_t)h * hs;
            const float *k = q + C, *v = q + 2 * (size_t)C;
            double omax = 0, emax = 0;
            for (int i = 0; i < N; i++) {
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < N; j++) {
                    double d = 0;
                    for (int t = 0; t < hs; t++)
                        d += (double)gemm_bf16_round(q[(size_t)i * ld + t]) *
                             gemm_bf16_round(k[(size_t)j * ld + t]);
                    p[j] = d * scale;
                    mx = p[j] > mx ? p[j] : mx;
                }
                for (int j = 0; j < N; j++)
                    sum += p[j] = exp(p[j] - mx);
                for (int t = 0; t < hs; t++) {
                    double acc = 0;
                    for (int j = 0; j < N; j++)
                        acc += (double)gemm_bf16_round((float)(p[j] / sum)) *
                               gemm_bf16_round(v[(size_t)j * ld + t]);
                    o[(size_t)i * hs + t] = acc;
                    omax = fabs(acc) > omax ? fabs(acc) : omax;
                }
            }
            for (int i = 0; i < N; i++)
                for (int t = 0; t < hs; t++) {
                    double e = fabs(got[((size_t)b * N + i) * C + (size_t)h * hs + t] -
                                    o[(size_t)i * hs + t]);
                    emax = e > emax ? e : emax;
                }
            double rel = emax / (omax > 0 ? omax : 1);
            worst = rel > worst ? rel : worst;
        }
    free(p), free(o);
    return worst;
}

/* Attention with bf16 products: within a few bf16 roundings of a probability
 * of the bf16 reference (where the kernel's fp32 softmax rounds a value the
 * other way), and measurably off the fp32 attention's result, so a bf16 flag
 * that did nothing would fail. */
static void check_attention_bf16(vit_team *team, int B, int N, int C, int NH)
{
    size_t n_qkv = (size_t)B * N * 3 * C, n_out = (size_t)B * N * C;
    float *qkv = random_floats(n_qkv, "qkv", (uint64_t)N);
    float *got = calloc(n_out, sizeof *got), *fp32 = calloc(n_out, sizeof *fp32);
    float *scratch = aligned((size_t)vit_team_threads(team) * attention_scratch_floats(N, C, NH) *
                             sizeof(float));
    if (qkv && got && fp32 && scratch) {
        for (size_t i = 0; i < n_qkv; i++)
            qkv[i] *= 3.0f; /* peaked softmax rows */
        attention_forward_team(team, got, qkv, B, N, C, NH, true, scratch);
        attention_forward_team(team, fp32, qkv, B, N, C, NH, false, scratch);
        double e_bf16 = attention_bf16_error(got, qkv, B, N, C, NH);
        double e_fp32 = attention_bf16_error(fp32, qkv, B, N, C, NH);
        printf("bf16 attention B=%d N=%d C=%d heads=%d: %.2e of the largest output off the bf16 "
               "reference (fp32 attention: %.2e)\n", B, N, C, NH, e_bf16, e_fp32);
        CHECKF(e_bf16 <= ATTENTION_BF16_TOL, "bf16 attention B=%d N=%d: error %.3g > %.3g", B,
               N, e_bf16, ATTENTION_BF16_TOL);
        CHECKF(e_fp32 > ATTENTION_BF16_TOL, "fp32 attention within the bf16 bound (%.3g): the "
               "test cannot tell them apart", e_fp32);
    } else {
        CHECK(!"out of memory");
    }
    free(qkv), free(got), free(fp32), free(scratch);
}

int main(void)
{
    test_rounding();
    gemm_set_threads(1);
    if (!gemm_packed_available()) {
        if (check_failures)
            return check_result();
        printf("bf16 GEMM: this CPU has no AVX-512 (or VITFIT_NO_AVX512 is set): SKIP\n");
        return 77;
    }
    bool native = cpu_has_avx512_bf16();
    if (!native) /* the emulated tile: same packing, same driver */
        setenv("VITFIT_BF16_EMULATE", "1", 1);
    CHECK(gemm_bf16_available() == (native ? GEMM_BF16_NATIVE : GEMM_BF16_EMULATED));
    printf("bf16 kernel: %s\n", native ? "vdpbf16ps" : "emulated (no avx512_bf16 here)");
    vit_error err = {0};
    vit_team *team = NULL;
    CHECKF(vit_team_create(2, &team, &err) == VIT_OK, "%s", err.message);
    if (!team)
        return check_result();
    static const int ms[] = {1, 2, 13, 14, 15, 28, 29, 197, 239};
    static const int ns[] = {1, 16, 17, 32, 33, 77};
    static const int ks[] = {1, 2, 3, 17, 511, 512, 513, 1025};
    int combo = 0;
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
        for (size_t j = 0; j < sizeof ns / sizeof ns[0]; j++, combo++)
            check_product(combo % 2 ? team : NULL, ms[i], ns[j],
                          ks[(i + j) % (sizeof ks / sizeof ks[0])], combo % 4);
    check_product(team, 450, 96, 768, 3); /* two passes, 768 deep (ViT-B's C) */
    check_product(team, 3, 1000, 1537, 2);
    check_team_bits(team);
    /* m: one row, a partial sliver, two passes; n: odd (a padded pair, its
     * last column in either half of a panel), a partial panel, ViT-B's MLP,
     * deeper than two blocks; k: one block, two, ViT-B's MLP-out */
    static const int chain[][4] = {{1, 1, 1, 3},         {15, 33, 17, 5},   {197, 77, 513, 40},
                                   {239, 1024, 768, 65}, {450, 96, 64, 33}, {29, 1025, 100, 17},
                                   {197, 3072, 768, 96}, {30, 50, 3072, 20}, {16, 49, 40, 9}};
    for (size_t i = 0; i < sizeof chain / sizeof chain[0]; i++) {
        check_chain(NULL, chain[i][0], chain[i][1], chain[i][2], chain[i][3]);
        check_chain(team, chain[i][0], chain[i][1], chain[i][2], chain[i][3]);
    }
    check_team_repeats();
    check_nan_rows();
    check_layernorm_packed(1, 1, 1);
    check_layernorm_packed(15, 33, 5);    /* a partial sliver, images inside slivers */
    check_layernorm_packed(394, 768, 197); /* ViT-B/16 at batch 2 */
    check_layernorm_packed(29, 100, 10);   /* C not a multiple of 32 */
    check_packed_a_deep(team, 43, 70, 3072 + 5);
    check_packed_a_deep(team, 1, 3, 1);
    check_pack_nn();
    check_pack_a();
    check_attention_bf16(team, 1, 197, 768, 12); /* ViT-B/16's heads */
    check_attention_bf16(team, 2, 17, 96, 3);    /* partial tiles and panels, an odd k */
    if (native) {
        check_native_vs_emulated();
        check_null_bias_adds_zero();
    }
    vit_team_free(team);
    return check_result();
}
