/*
 * test_last_block.c - a class-token model's last block runs past its keys
 * and values on the class tokens' rows only (block_forward_last_class in
 * vit_forward.c, block_backward_last_class in vit_train.c).
 *
 * The reference is the same model one block deeper, that block all zeros:
 * it adds exactly 0 to the residual stream and passes the gradient through
 * unchanged, and since it is now the last, the model's own last block runs
 * on every row there.  Against it, to float rounding (the class query's
 * attention sums in another order):
 *   - inference logits, image by image with each image's task biases in one
 *     mixed batch, at every batch from 1 to 17, on the OpenBLAS path and the
 *     packed path with teams of 1 to 3, in fp32 and in bf16 (whose full
 *     block rounds attention's operands: within 1% of the largest logit);
 *   - a head-less model's features;
 *   - a training step's logits, loss, every gradient and the images'
 *     gradient, for bitfit, linear and full on both paths, on one state
 *     reused across batches;
 *   - on odd shapes: 5 heads of 8 with 10 tokens; ln_pre, a projection and
 *     QuickGELU; a mean-pooled model, which must run every row.
 * The profile's multiply-adds pin the cut itself: the last block's MLP ran
 * on B rows, not B*N, and the pass did vit_config_forward_macs per image.
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

enum { MAX_B = 17, MAX_OUT = 64, TASKS = 2 };

/* 5 heads of 8, 10 tokens, an MLP of 72 */
static vit_config base_config(void)
{
    vit_config c = train_check_config();
    c.image_size = 12, c.patch_size = 4, c.width = 40, c.depth = 2;
    c.heads = 5, c.mlp_dim = 72, c.num_classes = 7;
    c.preprocess.crop_h = c.preprocess.crop_w = 12;
    return c;
}

/* m with one more block, all zeros, after its own (see the top). */
static vit_model *deeper_copy(vit_model *m)
{
    vit_config c = m->cfg;
    c.depth++;
    vit_model *d = NULL;
    vit_error err = {0};
    if (vit_model_create(&c, &d, &err) != VIT_OK) {
        CHECKF(0, "the deeper model: %s", err.message);
        return NULL;
    }
    memset(d->frozen, 0, sizeof(float) * d->frozen_len);
    memset(d->trainable, 0, sizeof(float) * d->trainable_len);
    for (size_t i = 0; i < m->num_params; i++) {
        const vit_param *p = &m->params[i];
        vit_param *q = vit_model_find(d, p->name);
        CHECKF(q && q->numel == p->numel, "the deeper model has no %s", p->name);
        if (q && q->numel == p->numel)
            memcpy(q->data, p->data, sizeof(float) * p->numel);
    }
    return d;
}

/* m's task arena laid out for d, the extra block's biases 0. */
static float *deeper_arena(vit_model *m, vit_model *d, const float *arena)
{
    float *out = calloc(d->trainable_len, sizeof *out);
    for (size_t i = 0; out && i < m->num_params; i++) {
        const vit_param *p = &m->params[i];
        const vit_param *q = vit_model_find(d, p->name);
        if (p->trainable && q)
            memcpy(out + (q->data - d->trainable), arena + (p->data - m->trainable),
                   sizeof(float) * p->numel);
    }
    return out;
}

/* fc2's multiply-adds in one forward of B images: every row in each block
 * but a class-token model's last, which runs its B class rows. */
static double fc2_macs(const vit_config *c, int B)
{
    double rows = (double)B * vit_config_tokens(c), per_row = (double)c->width * c->mlp_dim;
    double last = c->pool == VIT_POOL_CLS ? B : rows;
    return ((c->depth - 1) * rows + last) * per_row;
}

/* Outputs of B images, image b with arenas[b]'s task, on a fresh state. */
static int infer(const vit_model *m, vit_path path, int threads, const float *images, int B,
                 const float *const *arenas, float *logits, vit_profile *prof)
{
    int dim = vit_config_output_dim(&m->cfg), classes[MAX_B];
    float *outs[MAX_B];
    for (int b = 0; b < B; b++)
        classes[b] = dim, outs[b] = logits + b * dim;
    vit_error err = {0};
    vit_state *s = NULL;
    int ok = vit_state_create_path(m, B, threads, path, &s, &err) == VIT_OK;
    if (ok) {
        vit_state_set_profile(s, prof);
        ok = vit_forward_rows(m, s, images, B, arenas, classes, outs, &err) == VIT_OK;
    }
    CHECKF(ok, "inference: %s", err.message);
    vit_state_free(s);
    return ok;
}

/* tolerance: of the largest output (bf16), else 1e-5 absolute and relative */
static void check_inference(const shape_case *sc, vit_model *m, vit_model *d, vit_path path,
                            int threads, const float *images, const float *const *arenas,
                            const float *const *deep_arenas, double tolerance)
{
    int dim = vit_config_output_dim(&sc->cfg);
    float got[MAX_B * MAX_OUT], want[MAX_B * MAX_OUT];
    for (int B = 1; B <= MAX_B; B++) {
        vit_profile prof = {0}, unused = {0};
        if (!infer(m, path, threads, images, B, arenas, got, &prof) ||
            !infer(d, path, threads, images, B, deep_arenas, want, &unused))
            continue;
        char what[200];
        snprintf(what, sizeof what, "%s, inference, %s path%s, %d threads, batch %d", sc->name,
                 path == VIT_PATH_PACKED ? "packed" : "OpenBLAS", tolerance ? " (bf16)" : "",
                 threads, B);
        double largest = 0;
        for (int i = 0; i < B * dim; i++)
            largest = fmax(largest, fabs(want[i]));
        if (tolerance)
            check_close(what, got, want, (size_t)B * dim, tolerance * largest, 0);
        else
            check_close(what, got, want, (size_t)B * dim, 1e-5, 1e-5);
        CHECKF(prof.macs[VIT_OP_FC2_GEMM] == fc2_macs(&sc->cfg, B),
               "%s, batch %d: fc2 did %.0f multiply-adds, expected %.0f", sc->name, B,
               prof.macs[VIT_OP_FC2_GEMM], fc2_macs(&sc->cfg, B));
        double total = 0; /* what bench's GFLOP/s counts */
        for (int op = 0; op < VIT_OP_COUNT; op++)
            total += prof.macs[op];
        CHECKF(total == B * vit_config_forward_macs(&sc->cfg),
               "%s, batch %d: the pass did %.0f multiply-adds, vit_config_forward_macs says %.0f",
               sc->name, B, total, B * vit_config_forward_macs(&sc->cfg));
    }
}

typedef struct step_out {
    float logits[MAX_B * MAX_OUT], *gtrain, *gfrozen, *dimages;
    double loss;
    vit_profile prof;
    int ok;
} step_out;

/* One step on m: forward, cross-entropy, backward into fresh gradients, the
 * images' gradient; on s when it is not NULL (a state reused across
 * batches), else on a fresh state sized for B. */
static step_out run_step(const vit_model *m, vit_train_state *s, vit_method method,
                         vit_path path, const float *images, const int *labels, int B)
{
    step_out o = {.ok = 0};
    vit_error err = {0};
    float dlogits[MAX_B * MAX_OUT];
    bool full = method == VIT_METHOD_FULL, into_blocks = method != VIT_METHOD_LINEAR;
    size_t image = (size_t)3 * m->cfg.image_size * m->cfg.image_size;
    vit_train_state *fresh = NULL;
    o.gtrain = calloc(m->trainable_len, sizeof(float));
    o.gfrozen = full ? calloc(m->frozen_len, sizeof(float)) : NULL;
    o.dimages = into_blocks ? malloc(sizeof(float) * image * (size_t)B) : NULL;
    if (!o.gtrain || (full && !o.gfrozen) || (into_blocks && !o.dimages)) {
        CHECKF(0, "out of memory");
        return o;
    }
    if (!s && vit_train_state_create_path(m, method, B, 2, path, &fresh, &err) == VIT_OK)
        s = fresh;
    if (s) {
        vit_train_state_set_profile(s, &o.prof);
        if (vit_train_forward(m, s, images, B, o.logits, &err) == VIT_OK) {
            o.loss = vit_cross_entropy(o.logits, labels, B, m->cfg.num_classes, 0.1f, dlogits);
            o.ok = vit_backward(m, s, dlogits, B, o.gtrain, o.gfrozen, &err) == VIT_OK &&
                   (!into_blocks || vit_input_grad(m, s, o.dimages, &err) == VIT_OK);
        }
        vit_train_state_set_profile(s, NULL);
    }
    CHECKF(o.ok, "step: %s", err.message);
    vit_train_state_free(fresh);
    return o;
}

static void step_free(step_out *o)
{
    free(o->gtrain);
    free(o->gfrozen);
    free(o->dimages);
}

/* Attention's backward multiply-adds in a step of B images: every block's
 * N x N, but a class-token model's last, whose one query row is N. */
static double bwd_attention_macs(const vit_config *c, int B)
{
    double N = vit_config_tokens(c), per_block = 4.0 * B * N * N * c->width;
    return (c->depth - 1) * per_block + (c->pool == VIT_POOL_CLS ? per_block / N : per_block);
}

/* Steps of every method on m, one state reused over the batches, against
 * d's on fresh states. */
static void check_training(const shape_case *sc, vit_model *m, vit_model *d, vit_path path,
                           const float *images)
{
    static const vit_method methods[] = {VIT_METHOD_BITFIT, VIT_METHOD_LINEAR, VIT_METHOD_FULL};
    static const int batches[] = {MAX_B, 1, 14, 3};
    size_t image = (size_t)3 * sc->cfg.image_size * sc->cfg.image_size;
    int labels[MAX_B];
    for (int b = 0; b < MAX_B; b++)
        labels[b] = (b * 5 + 2) % sc->cfg.num_classes;
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        vit_error err = {0};
        vit_train_state *s = NULL;
        if (vit_train_state_create_path(m, methods[i], MAX_B, 2, path, &s, &err) != VIT_OK) {
            CHECKF(0, "%s: %s", sc->name, err.message);
            continue;
        }
        for (size_t j = 0; j < sizeof batches / sizeof batches[0]; j++) {
            int B = batches[j];
            step_out got = run_step(m, s, methods[i], path, images, labels, B);
            step_out want = run_step(d, NULL, methods[i], path, images, labels, B);
            if (got.ok && want.ok) {
                char what[200], w2[240];
                snprintf(what, sizeof what, "%s, %s step, %s path, batch %d", sc->name,
                         vit_method_name(methods[i]),
                         path == VIT_PATH_PACKED ? "packed" : "OpenBLAS", B);
                snprintf(w2, sizeof w2, "%s: logits", what);
                check_close(w2, got.logits, want.logits, (size_t)B * sc->cfg.num_classes, 1e-5,
                            1e-5);
                CHECKF(fabs(got.loss - want.loss) <= 1e-5 * fabs(want.loss), "%s: loss %g, %g",
                       what, got.loss, want.loss);
                train_check_grads(what, m, got.gtrain, got.gfrozen, d, want.gtrain,
                                  want.gfrozen);
                if (got.dimages) {
                    double max_ref = 0;
                    for (size_t k = 0; k < image * (size_t)B; k++)
                        max_ref = fmax(max_ref, fabs(want.dimages[k]));
                    snprintf(w2, sizeof w2, "%s: the images' gradient", what);
                    check_close(w2, got.dimages, want.dimages, image * (size_t)B,
                                1e-4 * max_ref + 1e-9, 1e-3);
                    CHECKF(got.prof.macs[VIT_OP_BWD_ATTENTION] ==
                               bwd_attention_macs(&sc->cfg, B),
                           "%s: attention's backward did %.0f multiply-adds, expected %.0f",
                           what, got.prof.macs[VIT_OP_BWD_ATTENTION],
                           bwd_attention_macs(&sc->cfg, B));
                }
                CHECKF(got.prof.macs[VIT_OP_FC2_GEMM] == fc2_macs(&sc->cfg, B),
                       "%s: the forward's fc2 did %.0f multiply-adds, expected %.0f", what,
                       got.prof.macs[VIT_OP_FC2_GEMM], fc2_macs(&sc->cfg, B));
            }
            step_free(&got);
            step_free(&want);
        }
        vit_train_state_free(s);
    }
}

static void test_shape(const shape_case *sc)
{
    vit_error err = {0};
    vit_model *m = NULL, *d = NULL;
    size_t per_image = (size_t)3 * sc->cfg.image_size * sc->cfg.image_size;
    float *images = malloc(sizeof(float) * per_image * MAX_B);
    float *tasks[TASKS] = {NULL}, *deep_tasks[TASKS] = {NULL};
    const float *arenas[MAX_B], *deep_arenas[MAX_B];
    bool head = sc->cfg.num_classes > 0; /* else features: no task, no training */
    if (!images || vit_config_output_dim(&sc->cfg) > MAX_OUT ||
        vit_model_create(&sc->cfg, &m, &err) != VIT_OK) {
        CHECKF(0, "%s: %s", sc->name, err.message);
        goto out;
    }
    vit_model_randomize(m, 7);
    if (!(d = deeper_copy(m)))
        goto out;
    randinit_fill(images, per_image * MAX_B, "input", 3, 1.0, 0.0);
    for (int t = 0; t < TASKS; t++) {
        tasks[t] = malloc(m->trainable_len * sizeof *tasks[t]);
        if (!tasks[t])
            goto out;
        /* every bias and the head: a task's own */
        randinit_fill(tasks[t], m->trainable_len, "task", (uint64_t)t, 0.5, 0.0);
        if (!(deep_tasks[t] = deeper_arena(m, d, tasks[t])))
            goto out;
    }
    for (int b = 0; b < MAX_B; b++) {
        int t = head ? b % (TASKS + 1) : 0;
        arenas[b] = t ? tasks[t - 1] : NULL;
        deep_arenas[b] = t ? deep_tasks[t - 1] : NULL;
    }
    if (head)
        check_training(sc, m, d, VIT_PATH_PORTABLE, images);
    check_inference(sc, m, d, VIT_PATH_PORTABLE, 1, images, arenas, deep_arenas, 0);
    if (gemm_packed_available()) {
        if (head) /* every weight packed per call */
            check_training(sc, m, d, VIT_PATH_PACKED, images);
        CHECKF(vit_model_pack(m, &err) == VIT_OK && vit_model_pack(d, &err) == VIT_OK,
               "%s: pack: %s", sc->name, err.message);
        for (int threads = 1; threads <= 3; threads++)
            check_inference(sc, m, d, VIT_PATH_PACKED, threads, images, arenas, deep_arenas, 0);
        if (head)
            check_training(sc, m, d, VIT_PATH_PACKED, images);
    }
    if (gemm_bf16_available() != GEMM_BF16_NONE) {
        CHECKF(vit_model_pack_precision(m, VIT_PRECISION_BF16, &err) == VIT_OK &&
                   vit_model_pack_precision(d, VIT_PRECISION_BF16, &err) == VIT_OK,
               "%s: bf16: %s", sc->name, err.message);
        for (int threads = 1; threads <= 3; threads += 2)
            check_inference(sc, m, d, VIT_PATH_PACKED, threads, images, arenas, deep_arenas,
                            1e-2);
    }
    fprintf(stderr, "%s: the last block on the class rows equals it on every row\n", sc->name);
out:
    for (int t = 0; t < TASKS; t++) {
        free(tasks[t]);
        free(deep_tasks[t]);
    }
    free(images);
    vit_model_free(d);
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
    shape_case features = {"head-less (features)", base_config()};
    features.cfg.num_classes = 0;
    test_shape(&odd);
    test_shape(&clip);
    test_shape(&mean);
    test_shape(&features);
    return check_result();
}
