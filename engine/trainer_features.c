/*
 * trainer_features.c - a linear probe's features, computed once (see
 * trainer_impl.h, "Cached features").
 *
 * With the backbone frozen and no augmentation, the features the head reads
 * are the same every epoch: one pass computes them (by the caller's
 * function, so the numbers are the ones its forward pass gives), and every
 * epoch after replays the loader from them.  The replay is the loader's own
 * walk (ds_loader_next) over kept rows: the epoch order is
 * ds_loader_order's, a batch takes the next batch_size items that loaded,
 * an item that did not load is reported again (the name and message the
 * loader gave the first time) and counted as consumed, so batches, labels,
 * epoch positions and reports equal the loader's.
 *
 * Memory: one row of F floats, a label and a slot per item, plus the
 * reports of the items that did not load; trainer_features_bytes says what
 * a set takes and the build keeps the reports within the caller's budget.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "trainer_impl.h"

/* An item that did not load, as the loader reported it. */
typedef struct bad_item {
    char *name, *message;
} bad_item;

struct trainer_features {
    int F;                    /* floats per row */
    int batch;                /* items per batch, as the loader's batch_size */
    size_t items;             /* the item list's length (an epoch's items) */
    size_t good;              /* rows: items that loaded */
    float *feat;              /* (good, F) their features, in list order */
    int *labels;              /* (good) their labels (the data set's classes) */
    size_t *slot;             /* (items) by list index: 2 * row for an item that loaded,
                                 2 * k + 1 for bad[k] */
    bad_item *bad;            /* (nbad) the items that did not load, in list order */
    size_t nbad, bad_cap;
    size_t report_bytes;      /* their names and messages */
    size_t report_budget;     /* most bytes they may take (the build's budget) */
    bool report_failed;       /* a report did not fit (or no memory for it) */
    ds_bad_fn on_bad_fn;      /* told again of each bad item an epoch passes */
    void *on_bad_ctx;
    size_t *order;            /* (items) the epoch's order: list indices */
    size_t pos;               /* epoch position of the next item */
};

bool trainer_features_bytes(size_t items, int F, size_t *bytes)
{
    size_t per = (size_t)(F > 0 ? F : 0) * sizeof(float) + sizeof(int) + 2 * sizeof(size_t);
    if (F <= 0 || (items && per > SIZE_MAX / items))
        return false;
    *bytes = per * items;
    return true;
}

void trainer_features_free(trainer_features *f)
{
    if (!f)
        return;
    for (size_t k = 0; k < f->nbad; k++) {
        free(f->bad[k].name);
        free(f->bad[k].message);
    }
    free(f->bad);
    free(f->feat);
    free(f->labels);
    free(f->slot);
    free(f->order);
    free(f);
}

/* The build's on_bad_fn: keeps the report for the replays (not passed on:
 * every epoch, the first included, is told from the replay). */
static void keep_report(void *ctx, const char *item, const char *message)
{
    trainer_features *f = ctx;
    if (f->report_failed)
        return;
    size_t ln = strlen(item) + 1, lm = strlen(message) + 1;
    if (ln + lm > f->report_budget - f->report_bytes) {
        f->report_failed = true;
        return;
    }
    if (f->nbad == f->bad_cap) {
        size_t cap = f->bad_cap ? 2 * f->bad_cap : 16;
        bad_item *b = cap > SIZE_MAX / sizeof *b ? NULL : realloc(f->bad, cap * sizeof *b);
        if (!b) {
            f->report_failed = true;
            return;
        }
        f->bad = b;
        f->bad_cap = cap;
    }
    bad_item *b = &f->bad[f->nbad];
    b->name = malloc(ln);
    b->message = malloc(lm);
    if (!b->name || !b->message) {
        free(b->name);
        free(b->message);
        f->report_failed = true;
        return;
    }
    memcpy(b->name, item, ln);
    memcpy(b->message, message, lm);
    f->nbad++;
    f->report_bytes += ln + lm;
}

vit_status trainer_features_build(const ds_dataset *d, const ds_loader_options *lo, int F,
                                  trainer_feature_fn compute, void *compute_ctx,
                                  int (*should_stop)(void *ctx), void *stop_ctx,
                                  size_t budget, trainer_features **out, bool *cancelled,
                                  vit_error *err)
{
    *out = NULL;
    *cancelled = false;
    trainer_features *f = calloc(1, sizeof *f);
    if (!f)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for cached features");
    f->F = F;
    f->batch = lo->batch_size;
    f->on_bad_fn = lo->on_bad_fn;
    f->on_bad_ctx = lo->on_bad_ctx;
    /* the items in list order, as the eval transform gives them */
    ds_loader_options o = *lo;
    o.shuffle = false;
    o.augment = false;
    o.drop_last = false;
    o.on_bad_fn = keep_report;
    o.on_bad_ctx = f;
    ds_loader *l = NULL;
    vit_status st = ds_loader_create(d, &o, &l, err);
    size_t bytes = 0, per_image = 0, B = (size_t)lo->batch_size;
    float *images = NULL;
    int *labels = NULL;
    size_t *indices = NULL;
    if (st == VIT_OK) {
        f->items = ds_loader_items(l);
        per_image = (size_t)3 * (size_t)lo->preprocess.crop_h * (size_t)lo->preprocess.crop_w;
        if (!trainer_features_bytes(f->items, F, &bytes) || bytes > budget)
            st = vit_error_set(err, VIT_ERR_TOO_LARGE,
                               "the features of %zu items of %d floats exceed %zu bytes",
                               f->items, F, budget);
        else if (per_image > SIZE_MAX / sizeof(float) / B) /* as the loader's own ring */
            st = vit_error_set(err, VIT_ERR_TOO_LARGE, "a batch of %zu images overflows", B);
    }
    if (st == VIT_OK) {
        f->report_budget = budget - bytes;
        size_t n = f->items ? f->items : 1;
        /* the products below are bounded by `bytes` and the batch's, both checked */
        f->feat = malloc(n * (size_t)F * sizeof *f->feat);
        f->labels = malloc(n * sizeof *f->labels);
        f->slot = malloc(n * sizeof *f->slot);
        f->order = malloc(n * sizeof *f->order);
        images = malloc(B * per_image * sizeof *images);
        labels = malloc(B * sizeof *labels);
        indices = malloc(B * sizeof *indices);
        if (!f->feat || !f->labels || !f->slot || !f->order || !images || !labels || !indices)
            st = vit_error_set(err, VIT_ERR_NOMEM, "out of memory for the features of %zu "
                               "items (%zu bytes)", f->items, bytes);
    }
    if (st == VIT_OK)
        st = ds_loader_start_epoch(l, 0, err);
    /* list index of position p: the loader's items, else p itself */
    const size_t *list = lo->items;
    size_t pos = 0, k = 0; /* the next list index to place; the next bad report */
    while (st == VIT_OK) {
        if (should_stop && should_stop(stop_ctx)) {
            *cancelled = true;
            break;
        }
        int count = 0;
        st = ds_loader_next(l, images, labels, indices, &count, err);
        if (st != VIT_OK || count == 0)
            break;
        if (f->report_failed) {
            st = vit_error_set(err, VIT_ERR_TOO_LARGE, "the reports of the items that do not "
                               "load exceed the features' memory budget");
            break;
        }
        st = compute(compute_ctx, images, count, f->feat + f->good * (size_t)F, err);
        /* the positions before each delivered item that it passed did not load,
         * and were reported in that order */
        for (int i = 0; st == VIT_OK && i < count; i++) {
            while (pos < f->items && (list ? list[pos] : pos) != indices[i] && k < f->nbad)
                f->slot[pos++] = 2 * k++ + 1;
            if (pos == f->items || (list ? list[pos] : pos) != indices[i]) {
                st = vit_error_set(err, VIT_ERR_INVALID, "cached features: item %zu came "
                                   "out of order", indices[i]);
                break;
            }
            f->slot[pos++] = 2 * f->good;
            f->labels[f->good++] = labels[i];
        }
    }
    if (st == VIT_OK && !*cancelled) {
        while (pos < f->items && k < f->nbad)
            f->slot[pos++] = 2 * k++ + 1;
        if (f->report_failed)
            st = vit_error_set(err, VIT_ERR_TOO_LARGE, "the reports of the items that do not "
                               "load exceed the features' memory budget");
        else if (pos != f->items || k != f->nbad)
            st = vit_error_set(err, VIT_ERR_INVALID, "cached features: %zu of %zu items placed, "
                               "%zu of %zu reports", pos, f->items, k, f->nbad);
    }
    ds_loader_free(l);
    free(images);
    free(labels);
    free(indices);
    if (st != VIT_OK || *cancelled) {
        trainer_features_free(f);
        return st;
    }
    *out = f;
    return VIT_OK;
}

size_t trainer_features_rows(const trainer_features *f)
{
    return f->good;
}

size_t trainer_features_items(const trainer_features *f)
{
    return f->items;
}

size_t trainer_features_memory(const trainer_features *f)
{
    size_t bytes = 0;
    trainer_features_bytes(f->items, f->F, &bytes);
    return bytes + f->report_bytes;
}

vit_status trainer_features_start(trainer_features *f, const ds_loader *order_of, int epoch,
                                  size_t position, vit_error *err)
{
    if (order_of && ds_loader_items(order_of) != f->items)
        return vit_error_set(err, VIT_ERR_INVALID, "cached features of %zu items, an epoch of "
                             "%zu", f->items, ds_loader_items(order_of));
    if (epoch < 0 || position > f->items)
        return vit_error_set(err, VIT_ERR_INVALID, "epoch %d position %zu is past the epoch's "
                             "%zu items", epoch, position, f->items);
    if (order_of)
        ds_loader_order(order_of, epoch, f->order);
    else
        for (size_t i = 0; i < f->items; i++)
            f->order[i] = i;
    f->pos = position;
    return VIT_OK;
}

void trainer_features_next(trainer_features *f, float *feat, int *labels, int *count)
{
    int got = 0;
    size_t F = (size_t)f->F;
    while (got < f->batch && f->pos < f->items) {
        size_t s = f->slot[f->order[f->pos++]];
        if (s % 2 == 0) {
            memcpy(feat + (size_t)got * F, f->feat + s / 2 * F, sizeof(float) * F);
            labels[got++] = f->labels[s / 2];
        } else if (f->on_bad_fn) {
            const bad_item *b = &f->bad[s / 2];
            f->on_bad_fn(f->on_bad_ctx, b->name, b->message);
        }
    }
    *count = got;
}

size_t trainer_features_position(const trainer_features *f)
{
    return f->pos;
}
