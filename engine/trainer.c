/*
 * trainer.c - the fine-tuning loop and evaluation (see trainer.h).
 *
 * One step: zero gradients, training forward, cross-entropy, backward,
 * optional clipping, learning rate from the schedule, optimizer update.  The
 * optimizer sees flat arenas: the trainable one (biases + head) always, the
 * frozen one too for full fine-tuning, each with a weight-decay mask.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "randinit.h"
#include "trainer.h"

#include "gemm.h"

trainer_config trainer_defaults(void)
{
    trainer_config c = {
        .method = VIT_METHOD_BITFIT,
        .epochs = 10,
        .batch_size = 32,
        .lr = 5e-3,
        .min_lr = 0.0,
        .weight_decay = 5e-5,
        .warmup_epochs = 1.0,
        .optimizer = OPTIM_ADAMW,
        .momentum = 0.9,
        .label_smoothing = 0.0,
        .seed = 0,
        .augment = true,
        .shuffle = true,
        .loader_threads = 2,
        .head = TRAINER_HEAD_AUTO,
        .on_bad = DS_BAD_FAIL,
        .log_every = 50,
    };
    return c;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void eval_result_free(eval_result *r)
{
    free(r->confusion);
    r->confusion = NULL;
}

void trainer_result_free(trainer_result *r)
{
    task_free(r->task);
    vit_model_free(r->model);
    eval_result_free(&r->eval);
    memset(r, 0, sizeof *r);
}

/* Rank of the true class among the logits (0 = predicted). */
static int rank_of(const float *logits, int K, int label)
{
    int rank = 0;
    for (int k = 0; k < K; k++)
        if (logits[k] > logits[label] || (logits[k] == logits[label] && k < label))
            rank++;
    return rank;
}

vit_status trainer_evaluate(const vit_model *m, const ds_dataset *d, size_t limit, int batch_size,
                            int loader_threads, eval_result *out, vit_error *err)
{
    memset(out, 0, sizeof *out);
    int K = m->cfg.num_classes;
    if (K < 1)
        return vit_error_set(err, VIT_ERR_INVALID, "evaluation needs a classification head");
    if (ds_num_classes(d) != K)
        return vit_error_set(err, VIT_ERR_MISMATCH, "the data set has %d classes, the model %d",
                             ds_num_classes(d), K);
    ds_loader_options lo = {
        .batch_size = batch_size, .shuffle = false, .augment = false, .seed = 0,
        .threads = loader_threads, .prefetch = 2, .preprocess = m->cfg.preprocess,
        .on_bad = DS_BAD_FAIL, .limit = limit,
    };
    size_t per_image = (size_t)3 * m->cfg.image_size * m->cfg.image_size;
    float *images = malloc(per_image * (size_t)batch_size * sizeof *images);
    float *logits = malloc((size_t)K * batch_size * sizeof *logits);
    float *scratch = malloc((size_t)K * batch_size * sizeof *scratch);
    int *labels = malloc((size_t)batch_size * sizeof *labels);
    out->confusion = calloc((size_t)K * K, sizeof *out->confusion);
    ds_loader *loader = NULL;
    vit_state *s = NULL;
    vit_status st = VIT_OK;
    if (!images || !logits || !scratch || !labels || !out->confusion)
        st = vit_error_set(err, VIT_ERR_NOMEM, "out of memory for evaluation");
    if (st == VIT_OK)
        st = vit_state_create(m, batch_size, gemm_get_threads() < 64 ? gemm_get_threads() : 64,
                              &s, err);
    if (st == VIT_OK)
        st = ds_loader_create(d, &lo, &loader, err);
    if (st == VIT_OK)
        st = ds_loader_start_epoch(loader, 0, err);
    double loss_sum = 0;
    long top1 = 0, top5 = 0;
    while (st == VIT_OK) {
        int count = 0;
        st = ds_loader_next(loader, images, labels, NULL, &count, err);
        if (st != VIT_OK || count == 0)
            break;
        st = vit_forward(m, s, images, count, logits, err);
        if (st != VIT_OK)
            break;
        /* a NaN logit ranks first (every comparison is false): refuse to
         * report accuracies or a loss from non-finite scores */
        for (size_t i = 0; st == VIT_OK && i < (size_t)count * K; i++)
            if (!isfinite(logits[i]))
                st = vit_error_set(err, VIT_ERR_FORMAT,
                                   "the model gave a non-finite score (NaN or inf) for item %ld: "
                                   "its weights or preprocessing settings are broken",
                                   out->count + (long)(i / (size_t)K));
        if (st != VIT_OK)
            break;
        loss_sum += vit_cross_entropy(logits, labels, count, K, 0.0f, scratch) * count;
        for (int b = 0; b < count; b++) {
            const float *row = logits + (size_t)b * K;
            int rank = rank_of(row, K, labels[b]);
            int pred = 0;
            for (int k = 1; k < K; k++)
                if (row[k] > row[pred])
                    pred = k;
            top1 += rank == 0;
            top5 += rank < 5;
            out->confusion[(size_t)labels[b] * K + pred]++;
        }
        out->count += count;
    }
    ds_loader_free(loader);
    vit_state_free(s);
    free(images);
    free(logits);
    free(scratch);
    free(labels);
    if (st != VIT_OK) {
        eval_result_free(out);
        return st;
    }
    out->num_classes = K;
    if (out->count > 0) {
        out->top1 = (double)top1 / out->count;
        out->top5 = (double)top5 / out->count;
        out->loss = loss_sum / out->count;
    }
    return VIT_OK;
}

/* True when the data set's classes are the backbone's labels, same order. */
static bool classes_match(const vit_model *m, const ds_dataset *d)
{
    if (!m->labels || m->cfg.num_classes != ds_num_classes(d))
        return false;
    for (int k = 0; k < m->cfg.num_classes; k++)
        if (strcmp(m->labels[k], ds_class_name(d, k)) != 0)
            return false;
    return true;
}

/* The model being trained: a view sharing the backbone (bitfit, linear) or a
 * private copy (full), with the head chosen by cfg->head. */
static vit_status make_train_model(const vit_model *backbone, const ds_dataset *train,
                                   const trainer_config *cfg, vit_model **out, vit_error *err)
{
    int K = ds_num_classes(train);
    bool keep = cfg->head == TRAINER_HEAD_KEEP ||
                (cfg->head == TRAINER_HEAD_AUTO && classes_match(backbone, train));
    if (keep && backbone->cfg.num_classes != K)
        return vit_error_set(err, VIT_ERR_MISMATCH,
                             "--head keep: the checkpoint's head has %d classes, the data set %d",
                             backbone->cfg.num_classes, K);
    vit_status st = vit_model_derive(backbone, K, cfg->method == VIT_METHOD_FULL, out, err);
    if (st != VIT_OK)
        return st;
    vit_model *m = *out;
    if (cfg->from_scratch) /* randinit's rule: weights ~ std 0.02, LN gains near 1 */
        vit_model_randomize(m, cfg->seed);
    vit_param *hw = vit_model_find(m, "head.weight"), *hb = vit_model_find(m, "head.bias");
    if (keep) {
        memcpy(hw->data, backbone->w.head_w, sizeof(float) * hw->numel);
        memcpy(hb->data, backbone->w.head_b, sizeof(float) * hb->numel);
    } else {
        /* torch.nn.Linear's default range U(-1/sqrt(F), 1/sqrt(F)), seeded; zero bias */
        double bound = 1.0 / sqrt((double)vit_config_feature_dim(&m->cfg));
        randinit_fill(hw->data, hw->numel, "head.weight", cfg->seed, bound, 0.0);
        memset(hb->data, 0, sizeof(float) * hb->numel);
    }
    return VIT_OK;
}

/* Weight decay masks: the head weight in the trainable arena; for full, every
 * matrix of the frozen arena too (never biases, LayerNorm gains or embeddings). */
static void decay_masks(const vit_model *m, uint8_t *mask_train, uint8_t *mask_frozen)
{
    for (size_t i = 0; i < m->num_params; i++) {
        const vit_param *p = &m->params[i];
        bool matrix = p->ndim >= 2 && strcmp(p->name, "pos_embed") && strcmp(p->name, "cls_token");
        if (p->trainable)
            memset(mask_train + (p->data - m->trainable), matrix, p->numel);
        else if (mask_frozen)
            memset(mask_frozen + (p->data - m->frozen), matrix, p->numel);
    }
}

/* Everything one run allocates, freed in one place. */
typedef struct run_state {
    vit_model *m;
    vit_train_state *ts;
    ds_loader *loader;
    optim *opt_train, *opt_frozen;
    float *gtrain, *gfrozen, *images, *logits, *dlogits;
    uint8_t *mask_train, *mask_frozen;
    int *labels;
} run_state;

static void run_free(run_state *r)
{
    vit_train_state_free(r->ts);
    ds_loader_free(r->loader);
    optim_free(r->opt_train);
    optim_free(r->opt_frozen);
    free(r->gtrain);
    free(r->gfrozen);
    free(r->images);
    free(r->logits);
    free(r->dlogits);
    free(r->mask_train);
    free(r->mask_frozen);
    free(r->labels);
    vit_model_free(r->m);
}

static vit_status run_setup(const vit_model *backbone, const ds_dataset *train,
                            const trainer_config *cfg, run_state *r, vit_error *err)
{
    vit_status st = make_train_model(backbone, train, cfg, &r->m, err);
    if (st != VIT_OK)
        return st;
    vit_model *m = r->m;
    bool full = cfg->method == VIT_METHOD_FULL;
    int B = cfg->batch_size, K = m->cfg.num_classes;
    size_t per_image = (size_t)3 * m->cfg.image_size * m->cfg.image_size;
    optim_config oc = {
        .kind = cfg->optimizer, .weight_decay = (float)cfg->weight_decay, .beta1 = 0.9f,
        .beta2 = 0.999f, .eps = 1e-8f, .momentum = (float)cfg->momentum,
    };
    r->gtrain = calloc(m->trainable_len, sizeof *r->gtrain);
    r->mask_train = calloc(m->trainable_len, 1);
    r->images = malloc(per_image * (size_t)B * sizeof *r->images);
    r->logits = malloc((size_t)K * B * sizeof *r->logits);
    r->dlogits = malloc((size_t)K * B * sizeof *r->dlogits);
    r->labels = malloc((size_t)B * sizeof *r->labels);
    if (full) {
        r->gfrozen = calloc(m->frozen_len, sizeof *r->gfrozen);
        r->mask_frozen = calloc(m->frozen_len, 1);
    }
    if (!r->gtrain || !r->mask_train || !r->images || !r->logits || !r->dlogits || !r->labels ||
        (full && (!r->gfrozen || !r->mask_frozen)))
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for training buffers");
    decay_masks(m, r->mask_train, r->mask_frozen);
    ds_loader_options lo = {
        .batch_size = B, .shuffle = cfg->shuffle, .augment = cfg->augment, .drop_last = false,
        .seed = cfg->seed, .threads = cfg->loader_threads > 0 ? cfg->loader_threads : 1,
        .prefetch = 2, .preprocess = m->cfg.preprocess, .on_bad = cfg->on_bad,
        .on_bad_fn = cfg->on_bad_fn, .on_bad_ctx = cfg->on_bad_ctx, .limit = cfg->train_limit,
    };
    st = vit_train_state_create(m, cfg->method, B, &r->ts, err);
    if (st == VIT_OK)
        st = optim_create(&oc, m->trainable_len, &r->opt_train, err);
    if (st == VIT_OK && full)
        st = optim_create(&oc, m->frozen_len, &r->opt_frozen, err);
    if (st == VIT_OK)
        st = ds_loader_create(train, &lo, &r->loader, err);
    return st;
}

/* Copies labels of the data set into a NULL-terminated array of borrowed names. */
static const char **class_names(const ds_dataset *d)
{
    int K = ds_num_classes(d);
    const char **names = calloc((size_t)K + 1, sizeof *names);
    if (names)
        for (int k = 0; k < K; k++)
            names[k] = ds_class_name(d, k);
    return names;
}

/* Turns the trained model into the run's product: a task (bitfit, linear)
 * or the model itself (full). */
static vit_status finish(const vit_model *backbone, const ds_dataset *train,
                         const trainer_config *cfg, run_state *r, trainer_result *out,
                         vit_error *err)
{
    const char **names = class_names(train);
    if (!names)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    vit_status st = VIT_OK;
    if (cfg->method == VIT_METHOD_FULL) {
        st = vit_model_set_labels(r->m, names, err);
        if (st == VIT_OK) {
            out->model = r->m;
            r->m = NULL;
        }
    } else {
        st = task_create(backbone, r->m->cfg.num_classes, names, &out->task, err);
        if (st == VIT_OK) {
            memcpy(out->task->trainable, r->m->trainable, sizeof(float) * r->m->trainable_len);
            snprintf(out->task->method, sizeof out->task->method, "%s",
                     vit_method_name(cfg->method));
        }
    }
    free(names);
    return st;
}

vit_status trainer_run(const vit_model *backbone, const ds_dataset *train, const ds_dataset *eval,
                       const trainer_config *cfg, trainer_result *out, vit_error *err)
{
    memset(out, 0, sizeof *out);
    if (cfg->batch_size < 1 || cfg->epochs < 1 || !(cfg->lr > 0))
        return vit_error_set(err, VIT_ERR_INVALID, "batch size, epochs and lr must be positive");
    if (cfg->from_scratch && cfg->method != VIT_METHOD_FULL)
        return vit_error_set(err, VIT_ERR_INVALID, "training from scratch needs the full method");
    run_state r = {0};
    vit_status st = run_setup(backbone, train, cfg, &r, err);
    vit_model *m = r.m;
    size_t per_epoch = st == VIT_OK ? ds_loader_batches(r.loader) : 0;
    if (st == VIT_OK && per_epoch == 0)
        st = vit_error_set(err, VIT_ERR_INVALID, "the training set is empty");
    long total = (long)per_epoch * cfg->epochs;
    if (cfg->max_steps > 0 && cfg->max_steps < total)
        total = cfg->max_steps;
    long warmup = (long)llround(cfg->warmup_epochs * (double)per_epoch);
    if (warmup > total / 2) /* a short run keeps most of its steps at full rate */
        warmup = total / 2;
    sched_config sched = {.lr = cfg->lr, .min_lr = cfg->min_lr, .warmup_steps = warmup,
                          .total_steps = total};
    int K = st == VIT_OK ? m->cfg.num_classes : 0;
    long step = 0, window_steps = 0, window_images = 0;
    double window_loss = 0, epoch_loss = 0, t_start = now_seconds(), t_window = t_start;
    long epoch_steps = 0;
    for (int epoch = 0; st == VIT_OK && epoch < cfg->epochs && step < total; epoch++) {
        st = ds_loader_start_epoch(r.loader, epoch, err);
        epoch_loss = 0;
        epoch_steps = 0;
        while (st == VIT_OK && step < total) {
            if (cfg->should_stop && cfg->should_stop(cfg->ctx)) {
                out->cancelled = true;
                break;
            }
            int count = 0;
            st = ds_loader_next(r.loader, r.images, r.labels, NULL, &count, err);
            if (st != VIT_OK || count == 0)
                break;
            memset(r.gtrain, 0, sizeof(float) * m->trainable_len);
            if (r.gfrozen)
                memset(r.gfrozen, 0, sizeof(float) * m->frozen_len);
            st = vit_train_forward(m, r.ts, r.images, count, r.logits, err);
            if (st != VIT_OK)
                break;
            double loss = vit_cross_entropy(r.logits, r.labels, count, K,
                                            (float)cfg->label_smoothing, r.dlogits);
            if (!isfinite(loss)) {
                st = vit_error_set(err, VIT_ERR_INVALID,
                                   "loss became %g at step %ld (lr %g too high?)", loss, step,
                                   cfg->lr);
                break;
            }
            st = vit_backward(m, r.ts, r.dlogits, count, r.gtrain, r.gfrozen, err);
            if (st != VIT_OK)
                break;
            if (cfg->clip_grad_norm > 0) {
                /* one norm over everything trained, as torch's clip_grad_norm_ over all params */
                double nt = optim_clip_grad_norm(r.gtrain, m->trainable_len, INFINITY);
                double nf = r.gfrozen ? optim_clip_grad_norm(r.gfrozen, m->frozen_len, INFINITY) : 0;
                double norm = sqrt(nt * nt + nf * nf);
                double coef = cfg->clip_grad_norm / (norm + 1e-6);
                if (coef < 1.0) {
                    for (size_t i = 0; i < m->trainable_len; i++)
                        r.gtrain[i] *= (float)coef;
                    for (size_t i = 0; r.gfrozen && i < m->frozen_len; i++)
                        r.gfrozen[i] *= (float)coef;
                }
            }
            float lr = (float)sched_lr(&sched, step);
            optim_step(r.opt_train, m->trainable, r.gtrain, r.mask_train, lr);
            if (r.opt_frozen)
                optim_step(r.opt_frozen, m->frozen, r.gfrozen, r.mask_frozen, lr);
            step++;
            window_loss += loss;
            window_steps++;
            window_images += count;
            epoch_loss += loss;
            epoch_steps++;
            bool last = step == total;
            if (cfg->progress && cfg->log_every > 0 && (step % cfg->log_every == 0 || last)) {
                double t = now_seconds();
                double rate = window_images / fmax(t - t_window, 1e-9);
                trainer_progress p = {
                    .step = step, .total_steps = total, .epoch = epoch + 1, .epochs = cfg->epochs,
                    .loss = window_loss / window_steps, .lr = lr, .images_per_second = rate,
                    .eta_seconds = (double)(total - step) * (t - t_start) / step,
                };
                cfg->progress(cfg->ctx, &p);
                window_loss = 0;
                window_steps = window_images = 0;
                t_window = t;
            }
        }
        if (out->cancelled)
            break;
    }
    out->steps = step;
    out->final_loss = epoch_steps ? epoch_loss / epoch_steps : 0;
    out->seconds = now_seconds() - t_start;
    if (st == VIT_OK && !out->cancelled && eval) {
        st = trainer_evaluate(m, eval, cfg->eval_limit, cfg->batch_size, cfg->loader_threads,
                              &out->eval, err);
        out->has_eval = st == VIT_OK;
    }
    if (st == VIT_OK && !out->cancelled)
        st = finish(backbone, train, cfg, &r, out, err);
    run_free(&r);
    if (st != VIT_OK)
        trainer_result_free(out);
    return st;
}
