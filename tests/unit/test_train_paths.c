/*
 * test_train_paths.c - training on the packed path (AVX-512 kernels on the
 * train state's team) against the OpenBLAS path, which test_train holds to
 * PyTorch's goldens: the logits, the loss and every gradient a method
 * computes must agree for bitfit, linear and full, at every batch size from
 * 1 to past two 14-row tiles and at sizes whose B*N rows cross the 224-row
 * pass and the 256-deep block of the weight gradients' products, on odd
 * shapes (width 40 with 8-wide heads, partial 32-column panels, an MLP
 * deeper than one block, ln_pre, a projection, QuickGELU, mean pooling).
 *
 * Teams of 1, 2 and 3 members (3 on this 2-core machine splits columns and
 * rows unevenly), a model with packed weights (vit_model_pack: the forward
 * reads them) and without (every weight packed per call).  Without AVX-512
 * (VITFIT_NO_AVX512=1, the portable stage) the packed path must refuse and
 * AUTO must give the OpenBLAS path.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gemm.h"
#include "randinit.h"
#include "train_check.h"
#include "vit.h"
#include "vit_train.h"

/* One step on s: forward, cross-entropy, backward into fresh gradients. */
typedef struct step_out {
    float *logits, *gtrain, *gfrozen;
    float loss;
    int ok;
} step_out;

static step_out run_step(const vit_model *m, vit_method method, vit_path path, int threads,
                         const float *images, const int *labels, int B)
{
    step_out o = {0};
    vit_error err = {0};
    int K = m->cfg.num_classes;
    bool full = method == VIT_METHOD_FULL;
    o.logits = malloc(sizeof(float) * (size_t)B * K);
    float *dlogits = malloc(sizeof(float) * (size_t)B * K);
    o.gtrain = calloc(m->trainable_len, sizeof(float));
    o.gfrozen = full ? calloc(m->frozen_len, sizeof(float)) : NULL;
    vit_train_state *s = NULL;
    if (!o.logits || !dlogits || !o.gtrain || (full && !o.gfrozen)) {
        CHECKF(0, "out of memory");
    } else if (vit_train_state_create_path(m, method, B, threads, path, &s, &err) != VIT_OK) {
        CHECKF(0, "create: %s", err.message);
    } else {
        CHECKF(vit_train_state_path(s) == path, "asked for path %d, got %d", (int)path,
               (int)vit_train_state_path(s));
        if (vit_train_forward(m, s, images, B, o.logits, &err) == VIT_OK) {
            o.loss = (float)vit_cross_entropy(o.logits, labels, B, K, 0.1f, dlogits);
            o.ok = vit_backward(m, s, dlogits, B, o.gtrain, o.gfrozen, &err) == VIT_OK;
        }
        CHECKF(o.ok, "step: %s", err.message);
    }
    vit_train_state_free(s);
    free(dlogits);
    return o;
}

static void step_free(step_out *o)
{
    free(o->logits);
    free(o->gtrain);
    free(o->gfrozen);
}

static const vit_method methods[] = {VIT_METHOD_BITFIT, VIT_METHOD_LINEAR, VIT_METHOD_FULL};

/* Packed (threads members, m packed or not) against OpenBLAS for every
 * method at batch B; returns the worst relative gradient difference. */
static double compare_at(const shape_case *sc, vit_model *m, int B, int threads)
{
    size_t per_image = (size_t)3 * sc->cfg.image_size * sc->cfg.image_size;
    float *images = malloc(sizeof(float) * per_image * (size_t)B);
    int *labels = malloc(sizeof(int) * (size_t)B);
    double worst = 0;
    if (!images || !labels) {
        CHECKF(0, "out of memory");
        free(images);
        free(labels);
        return 0;
    }
    randinit_fill(images, per_image * (size_t)B, "input", (uint64_t)B, 1.0, 0.0);
    for (int b = 0; b < B; b++)
        labels[b] = (b * 7 + 3) % sc->cfg.num_classes;
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        char what[160];
        snprintf(what, sizeof what, "%s%s b%d t%d [%s]", sc->name,
                 m->w.blocks[0].qkv_wp ? " (packed weights)" : "", B, threads,
                 vit_method_name(methods[i]));
        step_out want = run_step(m, methods[i], VIT_PATH_PORTABLE, 1, images, labels, B);
        step_out got = run_step(m, methods[i], VIT_PATH_PACKED, threads, images, labels, B);
        if (want.ok && got.ok) {
            char w2[200];
            snprintf(w2, sizeof w2, "%s logits", what);
            check_close(w2, got.logits, want.logits, (size_t)B * sc->cfg.num_classes, 1e-4, 1e-4);
            snprintf(w2, sizeof w2, "%s loss", what);
            check_close(w2, &got.loss, &want.loss, 1, 1e-5, 1e-5);
            worst = fmax(worst, train_check_grads(what, m, got.gtrain, got.gfrozen, m,
                                                  want.gtrain, want.gfrozen));
        }
        step_free(&want);
        step_free(&got);
    }
    free(images);
    free(labels);
    return worst;
}

static void test_shape(const shape_case *sc, const int *batches, size_t nb, bool pack)
{
    vit_error err = {0};
    vit_model *m = NULL;
    if (vit_model_create(&sc->cfg, &m, &err) != VIT_OK) {
        CHECKF(0, "%s: %s", sc->name, err.message);
        return;
    }
    vit_model_randomize(m, 7);
    if (pack)
        CHECKF(vit_model_pack(m, &err) == VIT_OK && m->w.blocks[0].qkv_wp, "%s: pack: %s",
               sc->name, err.message);
    double worst = 0;
    for (size_t i = 0; i < nb; i++)
        worst = fmax(worst, compare_at(sc, m, batches[i], 1 + (int)(i % 3)));
    fprintf(stderr, "%s%s: packed vs OpenBLAS over %zu batch sizes, worst gradient diff %.2g of "
                    "max |grad|\n",
            sc->name, pack ? " (packed weights)" : "", nb, worst);
    vit_model_free(m);
}

/* Without AVX-512 the packed path is refused and AUTO is the OpenBLAS path. */
static void test_no_packed(void)
{
    vit_config cfg = train_check_config();
    vit_model *m = NULL;
    vit_error err = {0};
    if (vit_model_create(&cfg, &m, &err) != VIT_OK) {
        CHECKF(0, "%s", err.message);
        return;
    }
    vit_train_state *s = (vit_train_state *)&err;
    CHECK(vit_train_state_create_path(m, VIT_METHOD_BITFIT, 2, 2, VIT_PATH_PACKED, &s, &err) ==
              VIT_ERR_UNSUPPORTED &&
          s == NULL);
    CHECK(vit_train_state_create(m, VIT_METHOD_BITFIT, 2, 2, &s, &err) == VIT_OK && s &&
          vit_train_state_path(s) == VIT_PATH_PORTABLE);
    vit_train_state_free(s);
    vit_model_free(m);
    fprintf(stderr, "no AVX-512: the packed training path is refused, AUTO is OpenBLAS\n");
}

static void test_bad_arguments(void)
{
    vit_config cfg = train_check_config();
    vit_model *m = NULL;
    vit_error err = {0};
    if (vit_model_create(&cfg, &m, &err) != VIT_OK) {
        CHECKF(0, "%s", err.message);
        return;
    }
    vit_train_state *s = (vit_train_state *)&err;
    CHECK(vit_train_state_create(m, VIT_METHOD_BITFIT, 2, 0, &s, &err) == VIT_ERR_INVALID &&
          s == NULL);
    CHECK(vit_train_state_create(m, VIT_METHOD_BITFIT, 2, 65, &s, &err) == VIT_ERR_INVALID);
    CHECK(vit_train_state_create_path(m, VIT_METHOD_BITFIT, 2, 2, (vit_path)9, &s, &err) ==
          VIT_ERR_INVALID);
    vit_model_free(m);
}

int main(void)
{
    vit_set_threads(1);
    test_bad_arguments();
    if (!gemm_packed_available()) {
        test_no_packed();
        return check_result();
    }
    shape_case odd = {"odd (C 40, hs 8, N 10)", train_check_config()};
    odd.cfg.image_size = 12, odd.cfg.patch_size = 4, odd.cfg.width = 40, odd.cfg.depth = 2;
    odd.cfg.heads = 5, odd.cfg.mlp_dim = 72, odd.cfg.num_classes = 7;
    odd.cfg.preprocess.crop_h = odd.cfg.preprocess.crop_w = 12;
    shape_case clip = {"clip-like (ln_pre, proj, QuickGELU, N 17)", train_check_config()};
    clip.cfg.image_size = 20, clip.cfg.patch_size = 5, clip.cfg.width = 48, clip.cfg.depth = 1;
    clip.cfg.heads = 4, clip.cfg.mlp_dim = 100, clip.cfg.num_classes = 3, clip.cfg.proj_dim = 20;
    clip.cfg.ln_pre = true, clip.cfg.patch_bias = false, clip.cfg.act = VIT_ACT_QUICK_GELU;
    clip.cfg.preprocess.crop_h = clip.cfg.preprocess.crop_w = 20;
    shape_case mean = {"meanpool (M 300, N 17)", train_check_config()};
    mean.cfg.image_size = 16, mean.cfg.patch_size = 4, mean.cfg.width = 64, mean.cfg.depth = 1;
    mean.cfg.heads = 2, mean.cfg.mlp_dim = 300, mean.cfg.num_classes = 10;
    mean.cfg.pool = VIT_POOL_MEAN;
    mean.cfg.preprocess.crop_h = mean.cfg.preprocess.crop_w = 16;

    /* B*N for odd: 10..300 -- whole and partial 14-row tiles, 224 (the
     * pass) crossed at b23, 256 (a dW block's depth) at b26 */
    int all[32];
    size_t n = 0;
    for (int b = 1; b <= 30; b++)
        all[n++] = b;
    test_shape(&odd, all, n, false);
    int few[] = {1, 2, 13, 14, 15, 16};
    test_shape(&odd, few, sizeof few / sizeof few[0], true);
    test_shape(&clip, few, sizeof few / sizeof few[0], false);
    int mean_b[] = {1, 3, 14, 17};
    test_shape(&mean, mean_b, sizeof mean_b / sizeof mean_b[0], false);
    test_shape(&mean, mean_b, 2, true);
    return check_result();
}
