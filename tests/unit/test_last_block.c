/*
 * test_last_block.c - inference runs a class-token model's last block on the
 * class tokens' rows only (block_forward_last_class in vit_forward.c); the
 * training forward runs every row of it.  Their logits must agree to float
 * rounding -- the class query's attention sums in another order -- image by
 * image, with each image's task biases in one mixed batch:
 *   - on the OpenBLAS path, and on the packed path with teams of 1 to 3;
 *   - at every batch from 1 to 17 (partial and whole 14-row tiles);
 *   - on odd shapes: 5 heads of 8 with 10 tokens; ln_pre, a projection and
 *     QuickGELU; a mean-pooled model, which must run every row.
 * The profile's multiply-adds pin the cut itself: the last block's MLP ran
 * on B rows, not B*N.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gemm.h"
#include "randinit.h"
#include "vit.h"
#include "vit_train.h"

enum { MAX_B = 17, MAX_K = 16, TASKS = 2 };

typedef struct shape_case {
    const char *name;
    vit_config cfg;
} shape_case;

static vit_config base_config(void)
{
    vit_config c;
    vit_error err;
    vit_config_preset("vit-tiny", &c, &err);
    c.image_size = 12, c.patch_size = 4, c.width = 40, c.depth = 2;
    c.heads = 5, c.mlp_dim = 72, c.num_classes = 7;
    c.preprocess.crop_h = c.preprocess.crop_w = 12;
    c.ln_eps = 1e-6f;
    c.act = VIT_ACT_GELU;
    c.pool = VIT_POOL_CLS;
    c.ln_pre = false;
    c.patch_bias = true;
    c.proj_dim = 0;
    return c;
}

/* Image b's logits from the training forward, which runs every row of every
 * block: its task's view of m alone, on the OpenBLAS path. */
static int reference(const vit_model *m, const float *arena, const float *image, float *out)
{
    vit_error err = {0};
    vit_model *view = NULL;
    vit_train_state *ts = NULL;
    int ok = vit_model_view(m, m->cfg.num_classes, arena ? arena : m->trainable, &view, &err) ==
                 VIT_OK &&
             vit_train_state_create_path(view, VIT_METHOD_LINEAR, 1, 1, VIT_PATH_PORTABLE, &ts,
                                         &err) == VIT_OK &&
             vit_train_forward(view, ts, image, 1, out, &err) == VIT_OK;
    CHECKF(ok, "reference forward: %s", err.message);
    vit_train_state_free(ts);
    vit_model_free(view);
    return ok;
}

/* fc2's multiply-adds in one forward of B images: every row in each block
 * but a class-token model's last, which runs its B class rows. */
static double fc2_macs(const vit_config *c, int B)
{
    double rows = (double)B * vit_config_tokens(c), per_row = (double)c->width * c->mlp_dim;
    double last = c->pool == VIT_POOL_CLS ? B : rows;
    return ((c->depth - 1) * rows + last) * per_row;
}

static void check_path(const shape_case *sc, const vit_model *m, vit_path path, int threads,
                       const float *images, const float *const *arenas, const float *want)
{
    int K = sc->cfg.num_classes, classes[MAX_B];
    float got[MAX_B * MAX_K], *outs[MAX_B];
    for (int b = 0; b < MAX_B; b++)
        classes[b] = K, outs[b] = got + b * K;
    for (int B = 1; B <= MAX_B; B++) {
        vit_error err = {0};
        vit_state *s = NULL;
        vit_profile prof = {0};
        int ok = vit_state_create_path(m, B, threads, path, &s, &err) == VIT_OK;
        if (ok) {
            vit_state_set_profile(s, &prof);
            ok = vit_forward_rows(m, s, images, B, arenas, classes, outs, &err) == VIT_OK;
        }
        CHECKF(ok, "%s: %s", sc->name, err.message);
        vit_state_free(s);
        if (!ok)
            continue;
        char what[200];
        snprintf(what, sizeof what, "%s, %s path, %d threads, batch %d", sc->name,
                 path == VIT_PATH_PACKED ? "packed" : "OpenBLAS", threads, B);
        check_close(what, got, want, (size_t)B * K, 1e-5, 1e-5);
        CHECKF(prof.macs[VIT_OP_FC2_GEMM] == fc2_macs(&sc->cfg, B),
               "%s, batch %d: fc2 did %.0f multiply-adds, expected %.0f", sc->name, B,
               prof.macs[VIT_OP_FC2_GEMM], fc2_macs(&sc->cfg, B));
    }
}

static void test_shape(const shape_case *sc)
{
    vit_error err = {0};
    vit_model *m = NULL;
    size_t per_image = (size_t)3 * sc->cfg.image_size * sc->cfg.image_size;
    float *images = malloc(sizeof(float) * per_image * MAX_B), *tasks[TASKS] = {NULL};
    const float *arenas[MAX_B];
    float want[MAX_B * MAX_K];
    if (!images || sc->cfg.num_classes > MAX_K || vit_model_create(&sc->cfg, &m, &err) != VIT_OK) {
        CHECKF(0, "%s: %s", sc->name, err.message);
        goto out;
    }
    vit_model_randomize(m, 7);
    randinit_fill(images, per_image * MAX_B, "input", 3, 1.0, 0.0);
    for (int t = 0; t < TASKS; t++) {
        tasks[t] = malloc(m->trainable_len * sizeof *tasks[t]);
        if (!tasks[t])
            goto out;
        memcpy(tasks[t], m->trainable, m->trainable_len * sizeof *tasks[t]);
        /* every bias and the head: a task's own */
        randinit_fill(tasks[t], m->trainable_len, "task", (uint64_t)t, 0.5, 0.0);
    }
    for (int b = 0; b < MAX_B; b++) {
        arenas[b] = b % (TASKS + 1) ? tasks[b % (TASKS + 1) - 1] : NULL;
        if (!reference(m, arenas[b], images + per_image * b, want + b * sc->cfg.num_classes))
            goto out;
    }
    check_path(sc, m, VIT_PATH_PORTABLE, 1, images, arenas, want);
    if (gemm_packed_available()) {
        CHECKF(vit_model_pack(m, &err) == VIT_OK, "%s: pack: %s", sc->name, err.message);
        for (int threads = 1; threads <= 3; threads++)
            check_path(sc, m, VIT_PATH_PACKED, threads, images, arenas, want);
    }
    fprintf(stderr, "%s: inference equals the training forward, batches 1-%d\n", sc->name,
            MAX_B);
out:
    for (int t = 0; t < TASKS; t++)
        free(tasks[t]);
    free(images);
    vit_model_free(m);
}

int main(void)
{
    vit_set_threads(1);
    shape_case odd = {"class token (C 40, 5 heads of 8, N 10)", base_config()};
    shape_case clip = {"clip-like (ln_pre, proj, QuickGELU, N 17)", base_config()};
    clip.cfg.image_size = 20, clip.cfg.patch_size = 5, clip.cfg.width = 48, clip.cfg.depth = 1;
    clip.cfg.heads = 4, clip.cfg.mlp_dim = 100, clip.cfg.num_classes = 3, clip.cfg.proj_dim = 20;
    clip.cfg.ln_pre = true, clip.cfg.patch_bias = false, clip.cfg.act = VIT_ACT_QUICK_GELU;
    clip.cfg.preprocess.crop_h = clip.cfg.preprocess.crop_w = 20;
    shape_case mean = {"mean-pooled (every row)", base_config()};
    mean.cfg.pool = VIT_POOL_MEAN;
    test_shape(&odd);
    test_shape(&clip);
    test_shape(&mean);
    return check_result();
}
