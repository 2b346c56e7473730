/*
 * test_vit_bf16.c - the forward pass with bf16 matrix products
 * (vit_model_pack_precision) against the fp32 PyTorch goldens, within a
 * stated bf16 tolerance, and against the fp32 forward of the same model.
 *
 * bf16 keeps 8 significant bits, so each product operand carries up to
 * 2^-9 relative rounding.  Measured: the tiny goldens (2 blocks) within
 * 0.54% of the largest output, ViT-B/16 (12 blocks, seeded weights) within
 * 0.81% of the largest logit; the bounds, 1.5% and 2%, leave room for
 * another CPU's rounding, and a product slipping
 * into bf16 layout (a wrong pair, a lost odd k) moves logits by tens of
 * percent.  A bf16 run that equals the fp32 run bit for bit fails too: it
 * would mean the bf16 kernel never ran.
 *
 * Also the release of the unpacked weights (one copy: the packed one) in
 * both precisions.  On CPUs without avx512_bf16 the emulated kernel runs
 * (same numbers); on CPUs without AVX-512 (or VITFIT_NO_AVX512) bf16 must be
 * refused.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "check.h"
#include "cpu.h"
#include "gemm.h"
#include "randinit.h"
#include "safetensors.h"
#include "task.h"
#include "test_util.h"
#include "vit.h"
#include "vit_train.h"

/* max |got - want| / max |want| over n values; the worst index in *at */
static double rel_error(const float *got, const float *want, size_t n, size_t *at)
{
    double scale = 0, worst = 0;
    for (size_t i = 0; i < n; i++)
        scale = fmax(scale, fabs(want[i]));
    *at = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]);
        if (!(e <= worst)) {
            worst = isnan(e) ? INFINITY : e;
            *at = i;
        }
    }
    return scale > 0 ? worst / scale : worst;
}

/* Forward of B images through m on a fresh state; out holds B outputs. */
static int forward(vit_model *m, const float *input, int B, float *out)
{
    vit_error err = {0};
    vit_state *s = NULL;
    int ok = vit_state_create(m, B, 2, &s, &err) == VIT_OK &&
             vit_forward(m, s, input, B, out, &err) == VIT_OK;
    CHECKF(ok, "forward: %s", err.message);
    /* never a silent fall back to the portable path: it too differs from
     * packed fp32 in bits, and by far less than the bf16 tolerances */
    CHECK(!s || vit_state_path(s) == VIT_PATH_PACKED);
    vit_state_free(s);
    return ok;
}

/* The golden input through m in fp32 and then in bf16. */
static void check_golden(const char *model_rel, const char *expected_rel, double bound)
{
    char path[4096];
    vit_error err = {0};
    vit_model *m = NULL;
    st_file *f = NULL;
    CHECKF(vit_model_load(test_path(path, sizeof path, model_rel), &m, &err) == VIT_OK, "%s: %s",
           model_rel, err.message);
    CHECKF(st_open(test_path(path, sizeof path, expected_rel), &f, &err) == VIT_OK, "%s",
           err.message);
    size_t in_n = 0, out_n = 0;
    float *input = f ? test_read_tensor(f, "input", &in_n) : NULL;
    float *want = f ? test_read_tensor(f, "output", &out_n) : NULL;
    const st_tensor *t = f ? st_find(f, "output") : NULL;
    int B = t ? (int)t->shape[0] : 0;
    float *fp32 = calloc(out_n ? out_n : 1, sizeof *fp32);
    float *bf16 = calloc(out_n ? out_n : 1, sizeof *bf16);
    if (m && input && want && B > 0 && fp32 && bf16 &&
        out_n == (size_t)B * vit_config_output_dim(&m->cfg) && forward(m, input, B, fp32)) {
        CHECKF(vit_model_pack_precision(m, VIT_PRECISION_BF16, &err) == VIT_OK, "%s",
               err.message);
        CHECK(m->precision == VIT_PRECISION_BF16 && m->w.blocks[0].qkv_wb &&
              !m->w.blocks[0].qkv_wp);
        if (forward(m, input, B, bf16)) {
            size_t at;
            double e = rel_error(bf16, want, out_n, &at);
            printf("%s: bf16 vs golden: max error %.4f of the largest output (element %zu)\n",
                   model_rel, e, at);
            CHECKF(e <= bound, "%s: bf16 error %.4f of scale > %.3f at %zu (%g vs %g)", model_rel,
                   e, bound, at, bf16[at], want[at]);
            CHECKF(memcmp(bf16, fp32, out_n * sizeof *bf16) != 0,
                   "%s: bf16 output equals fp32 bit for bit: the bf16 kernel did not run",
                   model_rel);
        }
        /* and back: fp32 again gives the fp32 bits */
        float *again = calloc(out_n, sizeof *again);
        CHECK(vit_model_pack_precision(m, VIT_PRECISION_FP32, &err) == VIT_OK);
        if (again && forward(m, input, B, again))
            CHECK(memcmp(again, fp32, out_n * sizeof *again) == 0);
        free(again);
    } else {
        CHECKF(0, "%s: could not run the golden", model_rel);
    }
    free(input), free(want), free(fp32), free(bf16);
    st_close(f);
    vit_model_free(m);
}

/* ViT-B/16 with the seeded weights of tests/data/golden/vit_b16: the max
 * relative logit error against torchvision's fp32 logits, stated. */
static void check_vit_b16(void)
{
    vit_config cfg;
    vit_error err = {0};
    CHECK(vit_config_preset("vit-b16", &cfg, &err) == VIT_OK);
    cfg.num_classes = 1000;
    vit_model *m = NULL;
    CHECKF(vit_model_create(&cfg, &m, &err) == VIT_OK, "%s", err.message);
    char path[4096];
    st_file *f = NULL;
    CHECKF(st_open(test_path(path, sizeof path, "tests/data/golden/vit_b16.expected.safetensors"),
                   &f, &err) == VIT_OK, "%s", err.message);
    size_t out_n = 0;
    float *want = f ? test_read_tensor(f, "output", &out_n) : NULL;
    int B = 2;
    size_t per_image = (size_t)3 * 224 * 224;
    float *input = malloc(per_image * B * sizeof *input);
    float *got = malloc((size_t)B * 1000 * sizeof *got);
    if (m && want && out_n == (size_t)B * 1000 && input && got) {
        vit_model_randomize(m, 2026);
        randinit_fill(input, per_image * B, "input", 2026, 1.0, 0.0);
        CHECKF(vit_model_pack_precision(m, VIT_PRECISION_BF16, &err) == VIT_OK, "%s",
               err.message);
        if (forward(m, input, B, got)) {
            size_t at;
            double e = rel_error(got, want, out_n, &at);
            printf("vit-b16 (seeded): bf16 vs torchvision fp32: max error %.4f of the largest "
                   "logit (element %zu: %g vs %g)\n", e, at, got[at], want[at]);
            CHECKF(e <= 0.02, "vit-b16 bf16 error %.4f of scale", e);
        }
    } else {
        CHECK(!"vit-b16 setup failed");
    }
    free(want), free(input), free(got);
    st_close(f);
    vit_model_free(m);
}

/* A BitFit step's gradients (gtrain, trainable_len floats) on m, or 0 when
 * the train state is refused (*st says why). */
static int bitfit_grads(vit_model *m, const float *input, int B, float *gtrain, vit_status *st)
{
    vit_error err = {0};
    vit_train_state *ts = NULL;
    int K = m->cfg.num_classes;
    float *logits = calloc((size_t)B * K, sizeof *logits);
    float *dlogits = calloc((size_t)B * K, sizeof *dlogits);
    int labels[8] = {1, 3, 0, 2, 5, 4, 7, 6};
    memset(gtrain, 0, m->trainable_len * sizeof *gtrain);
    *st = vit_train_state_create(m, VIT_METHOD_BITFIT, B, 2, &ts, &err);
    int ok = *st == VIT_OK && logits && dlogits &&
             vit_train_forward(m, ts, input, B, logits, &err) == VIT_OK;
    if (ok) {
        vit_cross_entropy(logits, labels, B, K, 0.0f, dlogits);
        ok = vit_backward(m, ts, dlogits, B, gtrain, NULL, &err) == VIT_OK;
    }
    vit_train_state_free(ts);
    free(logits), free(dlogits);
    return ok;
}

/* One copy of the weights: vit_model_release_unpacked keeps the packed
 * copy's results bit for bit, caches the fingerprint, gives the matrices'
 * pages back (mincore sees none resident), and what needs the unpacked
 * matrices refuses instead of reading zeros. */
static void check_release(vit_precision precision)
{
    vit_config cfg;
    vit_error err = {0};
    vit_model *m = NULL, *view = NULL, *copy = NULL;
    CHECK(vit_config_preset("vit-tiny", &cfg, &err) == VIT_OK);
    cfg.width = 128; /* fc1 is 256 KB: pages wholly inside it */
    cfg.mlp_dim = 512;
    cfg.heads = 4;
    CHECKF(vit_model_create(&cfg, &m, &err) == VIT_OK, "%s", err.message);
    if (!m)
        return;
    vit_model_randomize(m, 7);
    CHECKF(vit_model_pack_precision(m, precision, &err) == VIT_OK, "%s", err.message);
    int B = 3;
    size_t per_image = (size_t)3 * cfg.image_size * cfg.image_size;
    size_t out_n = (size_t)B * vit_config_output_dim(&m->cfg);
    float *input = malloc(per_image * B * sizeof *input);
    float *before = calloc(out_n, sizeof *before), *after = calloc(out_n, sizeof *after);
    char fp_before[65], fp_after[65];
    if (!input || !before || !after) {
        CHECK(!"out of memory");
        goto out;
    }
    randinit_fill(input, per_image * B, "input", 7, 1.0, 0.0);
    CHECK(vit_model_fingerprint(m, fp_before, &err) == VIT_OK && forward(m, input, B, before));
    float *g_before = calloc(m->trainable_len, sizeof *g_before);
    float *g_after = calloc(m->trainable_len, sizeof *g_after);
    vit_status tst;
    CHECK(g_before && g_after && bitfit_grads(m, input, B, g_before, &tst));
    const float *fc1 = m->w.blocks[0].fc1_w;
    size_t fc1_bytes = sizeof(float) * (size_t)cfg.mlp_dim * cfg.width;
    /* a live view would read the released pages: releasing and repacking wait
     * for it, and a view itself cannot be repacked or released */
    vit_model *early = NULL;
    CHECKF(vit_model_derive(m, 4, false, &early, &err) == VIT_OK, "%s", err.message);
    CHECK(vit_model_release_unpacked(m, &err) == VIT_ERR_INVALID && !m->unpacked_released &&
          m->w.blocks[0].fc1_w);
    vit_precision other =
        precision == VIT_PRECISION_FP32 ? VIT_PRECISION_BF16 : VIT_PRECISION_FP32;
    CHECK(vit_model_pack_precision(m, other, &err) == VIT_ERR_INVALID && m->precision == precision);
    CHECK(early && vit_model_pack_precision(early, other, &err) == VIT_ERR_INVALID);
    CHECK(early && vit_model_release_unpacked(early, &err) == VIT_ERR_INVALID);
    vit_model_free(early);
    CHECKF(vit_model_release_unpacked(m, &err) == VIT_OK, "%s", err.message);
    CHECK(m->unpacked_released && !m->w.blocks[0].fc1_w && !m->w.patch_w &&
          !vit_model_find(m, "blocks.0.mlp.fc1.weight")->data &&
          vit_model_find(m, "blocks.0.norm1.weight")->data);
    /* the released pages are no longer resident */
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)fc1 + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
    uintptr_t hi = ((uintptr_t)fc1 + fc1_bytes) & ~((uintptr_t)page - 1);
    unsigned char vec[128];
    size_t pages = (hi - lo) / (size_t)page;
    CHECKF(pages >= 1 && pages <= sizeof vec && mincore((void *)lo, hi - lo, vec) == 0,
           "mincore over %zu pages", pages);
    int resident = 0;
    for (size_t i = 0; i < pages && pages <= sizeof vec; i++)
        resident += vec[i] & 1;
    CHECKF(resident == 0, "%d of %zu released pages still resident", resident, pages);
    CHECK(vit_model_fingerprint(m, fp_after, &err) == VIT_OK &&
          strcmp(fp_before, fp_after) == 0);
    CHECK(forward(m, input, B, after) && memcmp(before, after, out_n * sizeof *after) == 0);
    /* BitFit trains from the fp32 packing: the same gradients, bit for bit
     * (dx's weights gathered from the packed copy); a bf16-only model refuses */
    if (g_before && g_after && precision == VIT_PRECISION_FP32)
        CHECK(bitfit_grads(m, input, B, g_after, &tst) &&
              memcmp(g_before, g_after, m->trainable_len * sizeof *g_after) == 0);
    else if (g_after)
        CHECK(!bitfit_grads(m, input, B, g_after, &tst) && tst == VIT_ERR_UNSUPPORTED);
    /* a view made afterwards shares the packing and the release */
    CHECKF(vit_model_derive(m, 5, false, &view, &err) == VIT_OK, "%s", err.message);
    CHECK(view && view->unpacked_released && !view->w.blocks[1].qkv_w &&
          strcmp(view->fingerprint, fp_before) == 0);
    /* what needs the unpacked matrices refuses */
    vit_state *s = (vit_state *)1;
    CHECK(vit_state_create_path(m, 1, 1, VIT_PATH_PORTABLE, &s, &err) == VIT_ERR_UNSUPPORTED &&
          s == NULL && strstr(err.message, "released"));
    CHECK(vit_model_derive(m, 5, true, &copy, &err) == VIT_ERR_UNSUPPORTED && copy == NULL);
    CHECK(vit_model_save(m, "/nonexistent-vitfit-dir/x", &err) == VIT_ERR_UNSUPPORTED);
    CHECK(vit_model_release_unpacked(view, &err) == VIT_OK); /* already released: no-op */
    CHECK(vit_model_pack_precision(m, other, &err) == VIT_ERR_INVALID); /* the view lives */
    free(g_before), free(g_after);
out:
    free(input), free(before), free(after);
    vit_model_free(view);
    vit_model_free(m);
}

/* The small model both bit checks below use, seeded and packed in bf16:
 * 5 tokens, so a 14-row sliver holds parts of three images; NULL on failure. */
static vit_model *small_bf16_model(uint64_t seed)
{
    vit_config cfg;
    vit_error err = {0};
    vit_model *m = NULL;
    CHECK(vit_config_preset("vit-tiny", &cfg, &err) == VIT_OK);
    cfg.image_size = 16, cfg.patch_size = 8, cfg.width = 64, cfg.heads = 2, cfg.mlp_dim = 135;
    cfg.depth = 2, cfg.num_classes = 7;
    cfg.preprocess.crop_h = cfg.preprocess.crop_w = cfg.image_size;
    CHECKF(vit_model_create(&cfg, &m, &err) == VIT_OK, "%s", err.message);
    if (!m)
        return NULL;
    vit_model_randomize(m, seed);
    CHECKF(vit_model_pack_precision(m, VIT_PRECISION_BF16, &err) == VIT_OK, "%s", err.message);
    return m;
}

/* One image's logits alone on m, or on a view of m over arena (a task's
 * biases and head) when arena is not NULL. */
static int forward_one(const vit_model *m, const float *arena, const float *image, float *out)
{
    vit_error err = {0};
    vit_model *view = NULL;
    vit_state *s = NULL;
    const vit_model *use = m;
    if (arena && vit_model_view(m, m->cfg.num_classes, arena, &view, &err) == VIT_OK)
        use = view;
    int ok = (!arena || view) && vit_state_create(use, 1, 1, &s, &err) == VIT_OK &&
             vit_forward(use, s, image, 1, out, &err) == VIT_OK;
    CHECKF(ok, "forward of one image: %s", err.message);
    vit_state_free(s);
    vit_model_free(view);
    return ok;
}

/* In bf16 each image's logits must not depend on the batch it rides in nor
 * on the team's size, to the bit: rows of the packed activations (14-row
 * slivers that several images share, LayerNorm's with each image's bias)
 * never mix, and every tile sums its k in one order.  Batches 1..7 of a
 * small model (5 tokens: images straddle slivers), teams of 1..3, on one
 * state sized for the largest batch, against states for one image: a
 * sliver of 5 rows takes more than 5 rows' room, which the state must
 * hold (under ASan a poisoned gap follows each buffer). */
static void check_batch_bits(void)
{
    vit_error err = {0};
    vit_model *m = small_bf16_model(11);
    enum { MAX_B = 7 };
    size_t per_image = m ? (size_t)3 * m->cfg.image_size * m->cfg.image_size : 0;
    float *input = malloc(per_image * MAX_B * sizeof *input + 1);
    float alone[MAX_B][7], got[MAX_B][7];
    if (!m || !input) {
        CHECK(!"setup failed");
        goto out;
    }
    randinit_fill(input, per_image * MAX_B, "input", 11, 1.0, 0.0);
    for (int b = 0; b < MAX_B; b++)
        if (!forward_one(m, NULL, input + per_image * b, alone[b]))
            goto out;
    for (int threads = 1; threads <= 3; threads++) {
        vit_state *s = NULL;
        CHECKF(vit_state_create(m, MAX_B, threads, &s, &err) == VIT_OK, "%s", err.message);
        for (int B = 1; s && B <= MAX_B; B++) {
            CHECK(vit_forward(m, s, input, B, &got[0][0], &err) == VIT_OK);
            CHECKF(memcmp(got, alone, sizeof got[0] * B) == 0,
                   "bf16 logits of a batch of %d on %d threads differ from batch 1's", B,
                   threads);
        }
        vit_state_free(s);
    }
out:
    free(input);
    vit_model_free(m);
}

/* Mixed tasks in one bf16 batch (vit_forward_rows): every bias, LayerNorm's
 * and the products' alike, is the image's own task's, so each image's logits
 * equal, to the bit, those of a view of the model over its task alone.
 * Images take no task or one of three; batches of 7, teams of 1 and 2. */
static void check_task_bits(void)
{
    vit_error err = {0};
    enum { B = 7, TASKS = 3, K = 7 };
    vit_model *m = small_bf16_model(12);
    size_t per_image = m ? (size_t)3 * m->cfg.image_size * m->cfg.image_size : 0;
    float *input = malloc(per_image * B * sizeof *input + 1), *tasks[TASKS] = {NULL};
    float alone[B][K], got[B][K];
    const float *arenas[B];
    int classes[B];
    float *outs[B];
    if (!m || !input)
        goto out;
    randinit_fill(input, per_image * B, "input", 12, 1.0, 0.0);
    for (int t = 0; t < TASKS; t++) {
        tasks[t] = malloc(m->trainable_len * sizeof *tasks[t]);
        if (!tasks[t])
            goto out;
        memcpy(tasks[t], m->trainable, m->trainable_len * sizeof *tasks[t]);
        randinit_fill(tasks[t], m->bias_len, "task", (uint64_t)t, 0.5, 0.0); /* its biases */
    }
    for (int b = 0; b < B; b++) {
        arenas[b] = b % (TASKS + 1) ? tasks[b % (TASKS + 1) - 1] : NULL;
        classes[b] = K;
        outs[b] = got[b];
        if (!forward_one(m, arenas[b], input + per_image * b, alone[b]))
            goto out;
    }
    for (int threads = 1; threads <= 2; threads++) {
        vit_state *s = NULL;
        memset(got, 0, sizeof got);
        CHECK(vit_state_create(m, B, threads, &s, &err) == VIT_OK &&
              vit_forward_rows(m, s, input, B, arenas, classes, outs, &err) == VIT_OK);
        for (int b = 0; b < B; b++)
            CHECKF(memcmp(got[b], alone[b], sizeof got[b]) == 0,
                   "bf16 image %d (task %d) in a mixed batch on %d threads differs from its "
                   "task alone", b, b % (TASKS + 1), threads);
        vit_state_free(s);
    }
out:
    for (int t = 0; t < TASKS; t++)
        free(tasks[t]);
    free(input);
    vit_model_free(m);
}

int main(int argc, char **argv)
{
    (void)argc, (void)argv;
    vit_config cfg;
    vit_error err = {0};
    vit_model *m = NULL;
    CHECK(vit_config_preset("vit-tiny", &cfg, &err) == VIT_OK &&
          vit_model_create(&cfg, &m, &err) == VIT_OK);
    if (!gemm_packed_available()) {
        /* no AVX-512 (or VITFIT_NO_AVX512): bf16 is refused, fp32 is a no-op */
        CHECK(m && vit_model_pack_precision(m, VIT_PRECISION_BF16, &err) ==
                       VIT_ERR_UNSUPPORTED);
        CHECK(m && vit_model_pack_precision(m, VIT_PRECISION_FP32, &err) == VIT_OK &&
              !m->packed);
        vit_model_free(m);
        return check_result();
    }
    if (!cpu_has_avx512_bf16()) {
        unsetenv("VITFIT_BF16_EMULATE");
        CHECK(m && vit_model_pack_precision(m, VIT_PRECISION_BF16, &err) ==
                       VIT_ERR_UNSUPPORTED && strstr(err.message, "avx512_bf16"));
        setenv("VITFIT_BF16_EMULATE", "1", 1);
    }
    vit_model_free(m);
    check_release(VIT_PRECISION_FP32);
    check_release(VIT_PRECISION_BF16);
    check_batch_bits();
    check_task_bits();
    check_golden("tests/data/golden/tiny_timm", "tests/data/golden/tiny_timm/expected.safetensors",
                 0.015);
    check_golden("tests/data/golden/tiny_hf", "tests/data/golden/tiny_hf/expected.safetensors",
                 0.015);
    check_golden("tests/data/golden/tiny_clip.safetensors",
                 "tests/data/golden/tiny_clip.expected.safetensors", 0.015);
    check_golden("tests/data/golden/tiny_timm_meanpool",
                 "tests/data/golden/tiny_timm_meanpool/expected.safetensors", 0.015);
    const char *sanitize = getenv("VIT_TEST_SANITIZE"); /* tests/meson.build */
    if (!sanitize || strcmp(sanitize, "none") == 0)
        check_vit_b16(); /* minutes under a sanitizer; the release stage runs it */
    return check_result();
}
