/*
 * test_gemm.c - the packed AVX-512 GEMM, its thread team and the attention
 * built on them, against the naive references.
 *
 * Shapes are chosen to hit every edge of the kernel: rows that leave a
 * partial 14-row tile, columns that leave a partial 32-column panel, depths
 * beyond one 256-deep block with a remainder (and two blocks, whose A the
 * driver packs whole), and more rows than one 224-row pass.  A team of 2 must give the bits a single thread gives (each
 * output column is computed by one member in the same order), and a team of
 * 4 on this 2-core machine exercises the futex sleep paths.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "check.h"
#include "gemm.h"
#include "gemm_avx512.h"
#include "ops.h"
#include "pool.h"
#include "randinit.h"

/* ---- the team on its own ---- */

typedef struct team_probe {
    vit_team *team;
    int rounds;
    int *slots;     /* (threads) written before each barrier */
    int errors[64]; /* per member: wrong values seen after a barrier */
    int visits[64]; /* per member: regions run */
} team_probe;

/* Each round every member writes its slot, meets the others, and checks that
 * every slot holds this round's value: a barrier that let anyone through
 * early would show a stale slot. */
static void probe_region(void *p, int member, int threads)
{
    team_probe *t = p;
    t->visits[member]++;
    for (int r = 1; r <= t->rounds; r++) {
        __atomic_store_n(&t->slots[member], r, __ATOMIC_RELAXED);
        vit_team_barrier(t->team);
        for (int i = 0; i < threads; i++)
            if (__atomic_load_n(&t->slots[i], __ATOMIC_RELAXED) < r)
                t->errors[member]++;
        vit_team_barrier(t->team); /* nobody starts round r+1 before all have checked */
    }
}

static void test_team(int threads)
{
    vit_error err = {0};
    vit_team *team = (vit_team *)&err; /* must be reset to NULL on failure */
    CHECK(vit_team_create(0, &team, &err) == VIT_ERR_INVALID && team == NULL);
    CHECK(vit_team_create(65, &team, &err) == VIT_ERR_INVALID && team == NULL);
    CHECKF(vit_team_create(threads, &team, &err) == VIT_OK, "%s", err.message);
    if (!team)
        return;
    CHECK(vit_team_threads(team) == threads);
    int slots[64] = {0};
    team_probe probe = {.team = team, .rounds = 50, .slots = slots};
    enum { REGIONS = 20 };
    for (int i = 0; i < REGIONS; i++) {
        memset(slots, 0, sizeof slots);
        vit_team_run(team, probe_region, &probe);
    }
    int errors = 0;
    for (int i = 0; i < threads; i++) {
        errors += probe.errors[i];
        CHECKF(probe.visits[i] == REGIONS, "member %d ran %d of %d regions", i, probe.visits[i],
               REGIONS);
    }
    CHECKF(errors == 0, "team of %d: %d stale values after a barrier", threads, errors);
    vit_team_free(team);

    int b, e, covered = 0;
    for (int i = 0; i < threads; i++) { /* split: contiguous, disjoint, complete */
        vit_team_split(1001, i, threads, &b, &e);
        CHECK(b == covered && e >= b);
        covered = e;
    }
    CHECK(covered == 1001);
}

/* ---- packed GEMM vs gemm_ref ---- */

static float *random_floats(size_t n, const char *name, uint64_t seed)
{
    float *v = malloc(n * sizeof *v);
    if (v)
        randinit_fill(v, n, name, seed, 1.0, 0.0);
    return v;
}

static float *packed_alloc(size_t floats)
{
    return aligned_alloc(64, ((floats ? floats : 1) * sizeof(float) + 63) & ~(size_t)63);
}

/* C = init + A W^T (+ GELU), on the team, vs the reference. */
static void check_packed(vit_team *team, int m, int n, int k, int mode)
{
    float *a = random_floats((size_t)m * k, "a", (uint64_t)(m * 131 + k));
    float *w = random_floats((size_t)n * k, "w", (uint64_t)(n * 7 + k));
    float *bias = random_floats((size_t)n * 2, "bias", 3);
    float *got = random_floats((size_t)m * n, "c", 5); /* garbage unless adding */
    float *want = malloc((size_t)m * n * sizeof *want);
    float *wp = packed_alloc(gemm_packed_weight_floats(n, k));
    size_t scratch_floats = gemm_packed_scratch_floats(m);
    float *scratch = packed_alloc(scratch_floats);
    if (!a || !w || !bias || !got || !want || !wp || !scratch) {
        CHECK(!"out of memory");
        goto out;
    }
    gemm_pack_weight(wp, w, n, k);
    /* rows of "image" 0 take bias 0, image 1 none, image 2 bias 1, ... */
    const float *biases[256]; /* up to 768 rows */
    int per = 3;
    for (int i = 0; i < 256; i++)
        biases[i] = i % 3 == 1 ? NULL : bias + (size_t)(i % 2) * n;
    gemm_bias init = {biases, per, mode == 2};
    gemm_post post = mode == 3 ? GEMM_POST_GELU : GEMM_POST_NONE;
    memcpy(want, got, (size_t)m * n * sizeof *want);
    gemm_ref(m, n, k, 1.0f, a, k, w, k, true, mode == 2 ? 1.0f : 0.0f, want, n);
    if (mode >= 1)
        for (int r = 0; r < m; r++)
            for (int j = 0; j < n && biases[r / per]; j++)
                want[(size_t)r * n + j] += biases[r / per][j];
    if (post == GEMM_POST_GELU)
        gelu_forward(want, want, (size_t)m * n);
    gemm_packed(team, m, n, k, a, (size_t)k, wp, got, (size_t)n, mode >= 1 ? &init : NULL, post,
                scratch, scratch_floats);
    char what[96];
    static const char *modes[] = {"C = AB", "C = bias + AB", "C += bias + AB", "gelu(bias+AB)"};
    snprintf(what, sizeof what, "packed %dx%dx%d %s", m, n, k, modes[mode]);
    check_close(what, got, want, (size_t)m * n, 2e-6 * sqrt((double)k), 1e-5);
out:
    free(a), free(w), free(bias), free(got), free(want), free(wp), free(scratch);
}

/* The team's split must not change a single bit: n wide splits the columns
 * among the members, n narrow (a tiny ViT's width) their rows. */
static void check_team_bits(vit_team *team, int n)
{
    int m = 197, k = 600;
    float *a = random_floats((size_t)m * k, "a", 1);
    float *w = random_floats((size_t)n * k, "w", 2);
    float *c1 = calloc((size_t)m * n, sizeof *c1), *c2 = calloc((size_t)m * n, sizeof *c2);
    float *wp = packed_alloc(gemm_packed_weight_floats(n, k));
    size_t sf = gemm_packed_scratch_floats(m);
    float *scratch = packed_alloc(sf);
    if (a && w && c1 && c2 && wp && scratch) {
        gemm_pack_weight(wp, w, n, k);
        gemm_packed(NULL, m, n, k, a, (size_t)k, wp, c1, (size_t)n, NULL, GEMM_POST_NONE, scratch,
                    sf);
        gemm_packed(team, m, n, k, a, (size_t)k, wp, c2, (size_t)n, NULL, GEMM_POST_NONE, scratch,
                    sf);
        CHECKF(memcmp(c1, c2, (size_t)m * n * sizeof *c1) == 0,
               "a team of %d changed the result of one thread", vit_team_threads(team));
    } else {
        CHECK(!"out of memory");
    }
    free(a), free(w), free(c1), free(c2), free(wp), free(scratch);
}

/* One scratch buffer sized for the largest product must serve every smaller
 * one: pass lengths are not monotonic in the row count (224 rows make one
 * 224-row pass, 238 rows two of 126), so a buffer sized from the largest
 * product's pass overflowed on smaller products (the patch GEMM, a partial
 * batch).  Runs every row count 1..M on a buffer of exactly
 * gemm_packed_scratch_floats(M) floats (ASan sees any write past it; the
 * assert in gemm_packed fires in any build) and checks each product's rows
 * against the full product's, bit for bit. */
static void check_scratch_every_m(vit_team *team)
{
    enum { M = 3 * 224 + 17 }; /* past three full 224-row passes */
    int n = 33, k = 517; /* two column panels (both members work); full KC blocks in both
                          * halves of the double buffer, and a short third */
    for (int m = 2; m <= 5000; m++)
        if (gemm_packed_scratch_floats(m) < gemm_packed_scratch_floats(m - 1)) {
            CHECKF(0, "gemm_packed_scratch_floats(%d) < (%d): not monotonic", m, m - 1);
            break;
        }
    float *a = random_floats((size_t)M * k, "a", 21), *w = random_floats((size_t)n * k, "w", 22);
    float *full = malloc((size_t)M * n * sizeof *full), *got = malloc((size_t)M * n * sizeof *got);
    float *want = malloc((size_t)M * n * sizeof *want);
    float *wp = packed_alloc(gemm_packed_weight_floats(n, k));
    size_t sf = gemm_packed_scratch_floats(M);
    float *scratch = malloc(sf * sizeof *scratch); /* exact size: no slack for ASan to miss */
    if (a && w && full && got && want && wp && scratch) {
        gemm_pack_weight(wp, w, n, k);
        gemm_packed(team, M, n, k, a, (size_t)k, wp, full, (size_t)n, NULL, GEMM_POST_NONE,
                    scratch, sf);
        gemm_ref(M, n, k, 1.0f, a, k, w, k, true, 0.0f, want, n);
        check_close("packed product of M rows", full, want, (size_t)M * n, 2e-6 * sqrt(k), 1e-5);
        int bad = 0;
        for (int m = 1; m <= M; m++) {
            gemm_packed(team, m, n, k, a, (size_t)k, wp, got, (size_t)n, NULL, GEMM_POST_NONE,
                        scratch, sf);
            if (memcmp(got, full, (size_t)m * n * sizeof *got) != 0 && bad++ < 5)
                fprintf(stderr, "packed product of %d rows differs from the first %d of %d\n", m,
                        m, M);
        }
        CHECKF(bad == 0, "%d of %d row counts differ from the full product", bad, M);
        fprintf(stderr, "packed products of 1..%d rows on one %zu-float scratch: %s\n", M, sf,
                bad ? "FAILED" : "ok");
    } else {
        CHECK(!"out of memory");
    }
    free(a), free(w), free(full), free(got), free(want), free(wp), free(scratch);
}

/* B stored (k, n) instead of (n, k), through a strided view. */
static void check_pack_nn(void)
{
    int m = 23, n = 45, k = 70, ldb = 50;
    float *a = random_floats((size_t)m * k, "a", 9);
    float *b = random_floats((size_t)k * ldb, "b", 10);
    float *got = calloc((size_t)m * n, sizeof *got), *want = calloc((size_t)m * n, sizeof *want);
    float *bp = packed_alloc(gemm_packed_b_size(n, k));
    size_t sf = gemm_packed_scratch_floats(m);
    float *scratch = packed_alloc(sf);
    if (a && b && got && want && bp && scratch) {
        gemm_pack_b(bp, b, (size_t)ldb, false, n, k);
        gemm_packed(NULL, m, n, k, a, (size_t)k, bp, got, (size_t)n, NULL, GEMM_POST_NONE, scratch,
                    sf);
        gemm_ref(m, n, k, 1.0f, a, k, b, ldb, false, 0.0f, want, n);
        check_close("packed B (k, n) with ldb > n", got, want, (size_t)m * n, 1e-5, 1e-5);
    } else {
        CHECK(!"out of memory");
    }
    free(a), free(b), free(got), free(want), free(bp), free(scratch);
}

/* A head's few rows as dot products. */
static void check_rows(vit_team *team)
{
    int m = 3, n = 1000, k = 77;
    float *x = random_floats((size_t)m * k, "x", 4), *w = random_floats((size_t)n * k, "w", 6);
    float *bias = random_floats((size_t)n, "b", 8);
    float *got = calloc((size_t)m * n, sizeof *got), *want = calloc((size_t)m * n, sizeof *want);
    if (x && w && bias && got && want) {
        gemm_rows_team(team, got, x, w, bias, m, n, k);
        for (int r = 0; r < m; r++)
            memcpy(want + (size_t)r * n, bias, sizeof(float) * (size_t)n);
        gemm_ref(m, n, k, 1.0f, x, k, w, k, true, 1.0f, want, n);
        check_close("head rows as dot products", got, want, (size_t)m * n, 1e-5, 1e-5);
    } else {
        CHECK(!"out of memory");
    }
    free(x), free(w), free(bias), free(got), free(want);
}

/* The team's attention against ops.h attention_forward. */
static void check_attention(vit_team *team, int B, int N, int C, int NH)
{
    float *qkv = random_floats((size_t)B * N * 3 * C, "qkv", (uint64_t)N);
    float *got = calloc((size_t)B * N * C, sizeof *got), *want = calloc((size_t)B * N * C, sizeof *want);
    float *probs = calloc((size_t)N * N, sizeof *probs);
    float *scratch = packed_alloc((size_t)vit_team_threads(team) * attention_scratch_floats(N, C, NH));
    if (qkv && got && want && probs && scratch) {
        for (size_t i = 0; i < (size_t)B * N * 3 * C; i++)
            qkv[i] *= 3.0f; /* peaked softmax rows */
        attention_forward(want, probs, 0, qkv, B, N, C, NH);
        attention_forward_team(team, got, qkv, B, N, C, NH, false, scratch);
        char what[96];
        snprintf(what, sizeof what, "attention B=%d N=%d C=%d heads=%d", B, N, C, NH);
        check_close(what, got, want, (size_t)B * N * C, 2e-6, 1e-5);
    } else {
        CHECK(!"out of memory");
    }
    free(qkv), free(got), free(want), free(probs), free(scratch);
}

/* gemm_packed_raw: op(A) . op(B) with either operand transposed in memory
 * and padded leading dimensions, C = AB or C += AB (a weight gradient's
 * accumulation), against gemm_ref on the transposes spelled out. */
static void check_raw(vit_team *team, int m, int n, int k, bool a_trans, bool b_trans, bool add)
{
    size_t lda = (size_t)(a_trans ? m : k) + 3, ldb = (size_t)(b_trans ? k : n) + 5;
    size_t ldc = (size_t)n + 2;
    float *a = random_floats((size_t)(a_trans ? k : m) * lda, "a", (uint64_t)(m + 3 * k));
    float *b = random_floats((size_t)(b_trans ? n : k) * ldb, "b", (uint64_t)(n + 5 * k));
    float *got = random_floats((size_t)m * ldc, "c", 9);
    float *want = malloc((size_t)m * ldc * sizeof *want);
    float *at = malloc((size_t)m * k * sizeof *at); /* op(A) as (m, k) */
    size_t scratch_floats = gemm_packed_raw_scratch_floats(m, n, k);
    float *scratch = packed_alloc(scratch_floats);
    if (!a || !b || !got || !want || !at || !scratch) {
        CHECK(!"out of memory");
        goto out;
    }
    for (int i = 0; i < m; i++)
        for (int p = 0; p < k; p++)
            at[(size_t)i * k + p] = a_trans ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
    memcpy(want, got, (size_t)m * ldc * sizeof *want);
    gemm_ref(m, n, k, 1.0f, at, k, b, (int)ldb, b_trans, add ? 1.0f : 0.0f, want, (int)ldc);
    static const float *const none[1] = {NULL};
    gemm_bias acc = {none, m, true};
    gemm_packed_raw(team, m, n, k, a, lda, a_trans, b, ldb, b_trans, got, ldc, add ? &acc : NULL,
                    GEMM_POST_NONE, scratch, scratch_floats);
    char what[128];
    snprintf(what, sizeof what, "raw %dx%dx%d A%s B%s %s", m, n, k, a_trans ? "^T" : "",
             b_trans ? "^T" : "", add ? "C +=" : "C =");
    /* the padding columns of C must be untouched */
    check_close(what, got, want, (size_t)m * ldc, 2e-6 * sqrt((double)k), 1e-5);
out:
    free(a), free(b), free(got), free(want), free(at), free(scratch);
}

/* The team's attention backward against ops.h attention_backward. */
static void check_attention_backward(vit_team *team, int B, int N, int C, int NH)
{
    size_t n3 = (size_t)B * N * 3 * C, n1 = (size_t)B * N * C;
    float *qkv = random_floats(n3, "qkv", (uint64_t)N + 1);
    float *dout = random_floats(n1, "dout", (uint64_t)C);
    float *got = random_floats(n3, "got", 1), *want = calloc(n3, sizeof *want);
    float *probs = calloc(2 * (size_t)N * N, sizeof *probs);
    float *scratch =
        packed_alloc((size_t)vit_team_threads(team) * attention_backward_scratch_floats(N, C, NH));
    if (qkv && dout && got && want && probs && scratch) {
        for (size_t i = 0; i < n3; i++)
            qkv[i] *= 2.0f;
        attention_backward(want, probs, dout, qkv, B, N, C, NH);
        attention_backward_team(team, got, dout, qkv, B, N, C, NH, scratch);
        char what[96];
        snprintf(what, sizeof what, "attention backward B=%d N=%d C=%d heads=%d", B, N, C, NH);
        double max_ref = 0;
        for (size_t i = 0; i < n3; i++)
            max_ref = fmax(max_ref, fabs(want[i]));
        check_close(what, got, want, n3, 1e-5 * max_ref, 1e-4);
    } else {
        CHECK(!"out of memory");
    }
    free(qkv), free(dout), free(got), free(want), free(probs), free(scratch);
}

/* dx's operand W packed from W's forward packing must equal it packed from
 * W itself, panel range by panel range (a model that released its unpacked
 * weights trains from the packed copy). */
static void check_pack_from_nt(void)
{
#ifdef VIT_HAVE_AVX512_KERNELS
    static const int shapes[][2] = {{1, 1}, {33, 257}, {300, 70}, {768, 2304}, {3072, 768}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int n = shapes[s][0], k = shapes[s][1];
        float *w = random_floats((size_t)n * k, "w", (uint64_t)s);
        size_t fwd = gemm_packed_b_floats(n, k), bwd = gemm_packed_b_floats(k, n);
        float *wp = packed_alloc(fwd), *want = packed_alloc(bwd), *got = packed_alloc(bwd);
        if (!w || !wp || !want || !got) {
            CHECK(!"out of memory");
        } else {
            gemm_pack_b_nt(wp, w, (size_t)k, n, k);
            gemm_pack_b_nn(want, w, (size_t)k, n, k);
            memset(got, 0xff, bwd * sizeof *got);
            int panels = (k + GEMM_NR - 1) / GEMM_NR, mid = panels / 2;
            gemm_pack_b_nn_from_nt(got, wp, n, k, 0, mid);
            gemm_pack_b_nn_from_nt(got, wp, n, k, mid, panels);
            CHECKF(memcmp(got, want, bwd * sizeof *got) == 0,
                   "W (%d, %d) packed for dx from its forward packing differs", n, k);
        }
        free(w), free(wp), free(want), free(got);
    }
#endif
}

int main(void)
{
    /* the references run on OpenBLAS, whose uninstrumented threads TSan would
     * report as racing with this test's own */
    gemm_set_threads(1);
    for (int t = 1; t <= 4; t++)
        test_team(t);
    if (!gemm_packed_available()) {
        if (check_failures) /* the team's own tests ran and failed */
            return check_result();
        printf("packed GEMM: this CPU has no AVX-512 (or VITFIT_NO_AVX512 is set): SKIP\n");
        return 77; /* meson's SKIP: a skip must not count as a pass */
    }
    vit_error err = {0};
    vit_team *team = NULL, *big = NULL;
    CHECK(vit_team_create(2, &team, &err) == VIT_OK && vit_team_create(4, &big, &err) == VIT_OK);
    if (!team || !big)
        return check_result();
    static const int shapes[][3] = {
        {1, 1, 1},    {1, 32, 16},   {14, 32, 256}, {15, 33, 257}, {13, 31, 255},
        {197, 96, 64}, {229, 70, 513}, {450, 64, 40}, {3, 1000, 768}, {30, 7, 5},
        {450, 70, 300}, /* two passes of both blocks at once (k in (KC, 2 KC]) */
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int mode = 0; mode < 4; mode++)
            check_packed(i % 2 ? team : big, shapes[i][0], shapes[i][1], shapes[i][2], mode);
    check_packed(NULL, 40, 50, 300, 2);
    check_team_bits(team, 2 * 768 + 17);
    check_team_bits(big, 2 * 768 + 17);
    check_team_bits(team, 96);
    check_team_bits(big, 288);
    check_pack_nn();
    check_pack_from_nt();
    check_scratch_every_m(team);
    check_rows(team);
    check_attention(team, 1, 197, 768, 12);
    check_attention(big, 2, 5, 16, 2);
    check_attention(team, 1, 300, 64, 4); /* more keys than one 256-deep block */
    static const int raw_shapes[][3] = {
        {1, 1, 1}, {15, 33, 257}, {13, 31, 255}, {229, 70, 300}, {40, 64, 513}, {197, 64, 197},
    };
    for (size_t i = 0; i < sizeof raw_shapes / sizeof raw_shapes[0]; i++)
        for (int mode = 0; mode < 8; mode++)
            check_raw(mode % 3 == 0 ? NULL : mode % 3 == 1 ? team : big, raw_shapes[i][0],
                      raw_shapes[i][1], raw_shapes[i][2], mode & 1, mode & 2, mode & 4);
    check_attention_backward(team, 1, 197, 192, 3);
    check_attention_backward(big, 2, 5, 16, 2);
    check_attention_backward(team, 1, 300, 64, 4);
    vit_team_free(team);
    vit_team_free(big);
    return check_result();
}
