/*
 * dataset_loader.c - the prefetching batch loader: epoch order, train-time
 * augmentation and decoding on worker threads (see dataset.h, "batches").
 *
 * Design
 *   - The loader decodes *items*, not batches: a ring of prefetch * batch_size
 *     item slots; slot p % R holds epoch position p.  Worker threads claim the
 *     next position under the mutex, decode + preprocess it into its slot
 *     without the lock, and mark it done.  The consumer (ds_loader_next) takes
 *     positions strictly in order and assembles batches, so which items are
 *     skipped as bad and which rows a batch gets never depend on timing.  The
 *     epoch order is a Fisher-Yates permutation seeded by (seed, epoch); the
 *     augmentation of an item is seeded by (seed, epoch, dataset index).
 *     Hence 1 or N threads give bit-identical batches.
 *   - Starting an epoch stops claims, waits for in-flight items, then resets
 *     the ring; freeing sets `quit` and joins.  Both are safe mid-epoch.
 */
#include "dataset.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dataset_impl.h"

#define DS_MAX_THREADS 256
#define DS_MAX_PREFETCH 64
#define DS_MAX_BATCH 65536
#define DS_MAX_SIDE 16384             /* crop sizes, as image_resize.c allows */

/* ================================================================ randomness */

/* splitmix64 (ref: Vigna, prng.di.unimi.it/splitmix64.c): a 64-bit state that
 * advances by a constant; each output is a strong mix of it.  Good enough for
 * shuffles and augmentation and trivially seedable from any tuple. */
typedef struct ds_rng {
    uint64_t state;
} ds_rng;

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rng_next(ds_rng *r)
{
    r->state += 0x9E3779B97F4A7C15ull;
    return mix64(r->state);
}

/* A generator for the tuple (seed, a, b): distinct tuples, unrelated streams. */
static ds_rng rng_for(uint64_t seed, uint64_t a, uint64_t b)
{
    ds_rng r = {mix64(mix64(mix64(seed) ^ (a + 0x632BE59BD9B4E019ull)) ^
                      (b + 0xD1B54A32D192ED03ull))};
    return r;
}

/* Uniform double in [0, 1) with 53 random bits. */
static double rng_uniform(ds_rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

/* Uniform integer in [0, n), n >= 1, without modulo bias (rejection). */
static uint64_t rng_below(ds_rng *r, uint64_t n)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % n; /* accept x < limit */
    uint64_t x;
    do
        x = rng_next(r);
    while (x >= limit);
    return x % n;
}

/* ================================================================ augmentation */

ds_augment ds_augment_imagenet(void)
{
    return (ds_augment){.scale_min = 0.08, .scale_max = 1.0, .ratio_min = 3.0 / 4.0,
                        .ratio_max = 4.0 / 3.0, .flip = 0.5};
}

/* torchvision RandomResizedCrop.get_params with a's scale and ratio (ref:
 * torchvision/transforms/transforms.py): 10 tries of a random area fraction
 * and a log-uniform aspect ratio; else a center crop with the ratio clamped.
 * Python's round() is half-to-even, as rint is. */
static void rrc_params(ds_rng *r, const ds_augment *a, int width, int height, int *top,
                       int *left, int *h, int *w)
{
    const double smin = a->scale_min, smax = a->scale_max, rmin = a->ratio_min,
                 rmax = a->ratio_max;
    double area = (double)width * (double)height;
    double lrmin = log(rmin), lrmax = log(rmax);
    for (int attempt = 0; attempt < 10; attempt++) {
        double target = area * (smin + (smax - smin) * rng_uniform(r));
        double ar = exp(lrmin + (lrmax - lrmin) * rng_uniform(r));
        double cw = rint(sqrt(target * ar)), ch = rint(sqrt(target / ar));
        if (cw > 0 && cw <= width && ch > 0 && ch <= height) {
            *w = (int)cw;
            *h = (int)ch;
            *top = (int)rng_below(r, (uint64_t)(height - *h + 1));
            *left = (int)rng_below(r, (uint64_t)(width - *w + 1));
            return;
        }
    }
    double in_ratio = (double)width / (double)height;
    if (in_ratio < rmin) {
        *w = width;
        *h = (int)rint(*w / rmin);
    } else if (in_ratio > rmax) {
        *h = height;
        *w = (int)rint(*h * rmax);
    } else {
        *w = width;
        *h = height;
    }
    /* Rounding cannot leave the image, but keep the invariant explicit. */
    *w = *w < 1 ? 1 : *w > width ? width : *w;
    *h = *h < 1 ? 1 : *h > height ? height : *h;
    *top = (height - *h) / 2;
    *left = (width - *w) / 2;
}

/* Train-time transform of one image into out (3, crop_h, crop_w):
 * RandomResizedCrop(crop size, a's scale and ratio, pp->interp) ->
 * RandomHorizontalFlip(a->flip) -> ToTensor -> Normalize(pp->mean, pp->std),
 * all randomness from r (the flip's draw is taken whatever a->flip). */
static vit_status augment_image(const img_image *img, const img_preprocess *pp,
                                const ds_augment *a, ds_rng *r, float *out, vit_error *err)
{
    int top, left, h, w;
    rrc_params(r, a, img->width, img->height, &top, &left, &h, &w);
    int flip = rng_uniform(r) < a->flip;

    img_image crop = *img; /* the whole image needs no copy */
    uint8_t *owned = NULL;
    if (w != img->width || h != img->height) {
        owned = malloc((size_t)w * (size_t)h * 3); /* <= the image's own size */
        if (!owned)
            return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for a %dx%d crop", w, h);
        for (int y = 0; y < h; y++)
            memcpy(owned + (size_t)y * (size_t)w * 3,
                   img->pixels + ((size_t)(top + y) * (size_t)img->width + (size_t)left) * 3,
                   (size_t)w * 3);
        crop.width = w;
        crop.height = h;
        crop.pixels = owned;
    }
    img_image res;
    vit_status s = img_resize(&crop, pp->crop_w, pp->crop_h, pp->interp, &res, err);
    free(owned);
    if (s != VIT_OK)
        return s;
    /* ToTensor + Normalize in float32 exactly as img_to_tensor does. */
    size_t W = (size_t)res.width, H = (size_t)res.height, plane = W * H;
    for (int c = 0; c < 3; c++) {
        float mean = pp->mean[c], std = pp->std[c];
        float *o = out + (size_t)c * plane;
        for (size_t y = 0; y < H; y++)
            for (size_t x = 0; x < W; x++) {
                size_t sx = flip ? W - 1 - x : x;
                o[y * W + x] =
                    ((float)res.pixels[(y * W + sx) * 3 + (size_t)c] / 255.0f - mean) / std;
            }
    }
    img_free(&res);
    return VIT_OK;
}

/* ================================================================ loader */

/* One decoded item of the ring.  Owned by the worker that claimed it until
 * `done`, then by the consumer until it advances past it. */
typedef struct ds_slot {
    float *data;       /* (3, H, W) */
    size_t index;      /* dataset index */
    int done;          /* guarded by the loader mutex */
    vit_status status; /* item result */
    bool stopped;      /* the item's fetch was abandoned: never skipped */
    char message[512]; /* why it failed */
} ds_slot;

struct ds_loader {
    const ds_dataset *d;
    ds_loader_options o;
    size_t count;            /* items per epoch: dataset items 0..count-1 */
    size_t item_floats;      /* 3 * crop_h * crop_w */
    size_t nslots;           /* prefetch * batch_size */
    ds_slot *slots;          /* (nslots) */
    float *slot_data;        /* (nslots, item_floats) */
    size_t *order;           /* (count) dataset index of each epoch position */
    size_t *items;           /* (count) the items of an epoch (o.items' copy), or NULL: 0.. */
    pthread_t *threads;      /* (nthreads) */
    int nthreads;            /* started threads */
    pthread_mutex_t mu;      /* guards everything below and slot.done */
    pthread_cond_t work_cv;  /* workers: a position became claimable, or quit */
    pthread_cond_t done_cv;  /* consumer / start_epoch: a slot finished */
    int quit;                /* workers exit */
    int active;              /* an epoch is running: workers may claim */
    int started;             /* some epoch was started */
    int epoch;
    size_t claim;            /* next position a worker takes */
    size_t consumed;         /* next position the consumer takes */
    size_t in_flight;        /* positions claimed but not done */
};

/* Decodes + transforms dataset item idx for `epoch` into out; *stopped: a
 * URL item's fetch was abandoned (ds_fetch_fn). */
static vit_status load_item(const ds_loader *l, size_t idx, int epoch, float *out,
                            bool *stopped, vit_error *err)
{
    img_image img;
    vit_status s = ds_load_item(l->d, idx, &img, stopped, err);
    if (s != VIT_OK)
        return s;
    if (l->o.augment) {
        ds_rng r = rng_for(l->o.seed, (uint64_t)epoch + 1, (uint64_t)idx);
        s = augment_image(&img, &l->o.preprocess, &l->o.aug, &r, out, err);
    } else {
        s = img_to_tensor(&img, &l->o.preprocess, out, err);
    }
    img_free(&img);
    return s;
}

/* Worker: claim the next position in the window, decode it, mark it done. */
static void *worker_main(void *arg)
{
    ds_loader *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->quit && !(l->active && l->claim < l->count &&
                             l->claim < l->consumed + l->nslots))
            pthread_cond_wait(&l->work_cv, &l->mu);
        if (l->quit)
            break;
        size_t pos = l->claim++;
        size_t idx = l->order[pos];
        int epoch = l->epoch;
        ds_slot *slot = &l->slots[pos % l->nslots];
        l->in_flight++;
        pthread_mutex_unlock(&l->mu);

        vit_error e = {0};
        bool stopped = false;
        vit_status s = load_item(l, idx, epoch, slot->data, &stopped, &e);
        slot->index = idx;
        slot->status = s;
        slot->stopped = s != VIT_OK && stopped;
        if (s != VIT_OK) {
            char name[DS_ITEM_NAME_MAX];
            ds_item_name(l->d, idx, name, sizeof name);
            /* a URL item's message starts with its URL, cut to fit */
            if (!ds_item_is_url(l->d, idx) && !strstr(e.message, name))
                vit_error_prefix(&e, "%s", name);
            memcpy(slot->message, e.message, sizeof slot->message);
        }

        pthread_mutex_lock(&l->mu);
        slot->done = 1;
        l->in_flight--;
        pthread_cond_broadcast(&l->done_cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static void stop_threads(ds_loader *l)
{
    pthread_mutex_lock(&l->mu);
    l->quit = 1;
    pthread_cond_broadcast(&l->work_cv);
    pthread_mutex_unlock(&l->mu);
    for (int i = 0; i < l->nthreads; i++)
        pthread_join(l->threads[i], NULL);
    l->nthreads = 0;
}

vit_status ds_loader_create(const ds_dataset *d, const ds_loader_options *o, ds_loader **out,
                            vit_error *err)
{
    if (!d || !o || !out)
        return vit_error_set(err, VIT_ERR_INVALID, "ds_loader_create: NULL argument");
    *out = NULL;
    if (o->batch_size < 1 || o->batch_size > DS_MAX_BATCH)
        return vit_error_set(err, VIT_ERR_INVALID, "batch_size %d is outside 1..%d",
                             o->batch_size, DS_MAX_BATCH);
    if (o->threads < 1 || o->threads > DS_MAX_THREADS)
        return vit_error_set(err, VIT_ERR_INVALID, "threads %d is outside 1..%d", o->threads,
                             DS_MAX_THREADS);
    if (o->prefetch < 1 || o->prefetch > DS_MAX_PREFETCH)
        return vit_error_set(err, VIT_ERR_INVALID, "prefetch %d is outside 1..%d", o->prefetch,
                             DS_MAX_PREFETCH);
    const img_preprocess *pp = &o->preprocess;
    if (pp->crop_h < 1 || pp->crop_w < 1 || pp->crop_h > DS_MAX_SIDE || pp->crop_w > DS_MAX_SIDE)
        return vit_error_set(err, VIT_ERR_INVALID, "crop size %dx%d is outside 1..%d",
                             pp->crop_h, pp->crop_w, DS_MAX_SIDE);
    if (pp->interp != IMG_BILINEAR && pp->interp != IMG_BICUBIC)
        return vit_error_set(err, VIT_ERR_INVALID, "unknown interpolation %d", (int)pp->interp);
    for (int c = 0; c < 3; c++)
        if (!isfinite(pp->mean[c]) || !isfinite(pp->std[c]) || pp->std[c] == 0.0f)
            return vit_error_set(err, VIT_ERR_INVALID, "bad mean/std for channel %d", c);
    if (o->on_bad != DS_BAD_FAIL && o->on_bad != DS_BAD_SKIP)
        return vit_error_set(err, VIT_ERR_INVALID, "unknown bad-item policy %d", (int)o->on_bad);
    ds_augment aug = o->aug;
    if (aug.scale_min == 0 && aug.scale_max == 0 && aug.ratio_min == 0 && aug.ratio_max == 0 &&
        aug.flip == 0)
        aug = ds_augment_imagenet();
    /* written so that NaN fails each test */
    if (o->augment && !(aug.scale_min > 0 && aug.scale_min <= aug.scale_max &&
                        aug.scale_max <= 1 && aug.ratio_min > 0 &&
                        aug.ratio_min <= aug.ratio_max && aug.ratio_max < 1e6 &&
                        aug.flip >= 0 && aug.flip <= 1))
        return vit_error_set(err, VIT_ERR_INVALID,
                             "augmentation scale %g-%g, ratio %g-%g, flip %g is out of range",
                             aug.scale_min, aug.scale_max, aug.ratio_min, aug.ratio_max, aug.flip);
    if (o->items && o->num_items == 0)
        return vit_error_set(err, VIT_ERR_INVALID, "an empty item list");
    for (size_t i = 0; o->items && i < o->num_items; i++)
        if (o->items[i] >= d->n)
            return vit_error_set(err, VIT_ERR_INVALID, "item %zu is past the data set's %zu",
                                 o->items[i], d->n);

    ds_loader *l = calloc(1, sizeof *l);
    if (!l)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    l->d = d;
    l->o = *o;
    l->o.aug = aug;
    l->o.items = NULL; /* the loader's copy is l->items */
    /* >= 1: ds_open refuses empty sets */
    l->count = o->items ? o->num_items : o->limit && o->limit < d->n ? o->limit : d->n;
    l->item_floats = (size_t)3 * (size_t)pp->crop_h * (size_t)pp->crop_w;
    l->nslots = (size_t)o->prefetch * (size_t)o->batch_size;
    size_t total, order_bytes;
    if (!ds_mul_ok(l->nslots, l->item_floats, &total) || !ds_mul_ok(total, sizeof(float), &total) ||
        !ds_mul_ok(l->count, sizeof *l->order, &order_bytes)) {
        free(l);
        return vit_error_set(err, VIT_ERR_TOO_LARGE, "prefetch buffers overflow");
    }
    l->slots = calloc(l->nslots, sizeof *l->slots);
    l->slot_data = malloc(total);
    l->order = malloc(order_bytes);
    l->threads = calloc((size_t)o->threads, sizeof *l->threads);
    if (o->items && (l->items = malloc(order_bytes)))
        memcpy(l->items, o->items, order_bytes);
    if (!l->slots || !l->slot_data || !l->order || !l->threads || (o->items && !l->items)) {
        size_t nslots = l->nslots, floats = l->item_floats;
        free(l->items);
        free(l->slots);
        free(l->slot_data);
        free(l->order);
        free(l->threads);
        free(l);
        return vit_error_set(err, VIT_ERR_NOMEM,
                             "out of memory for %zu prefetch slots of %zu floats", nslots,
                             floats);
    }
    for (size_t i = 0; i < l->nslots; i++)
        l->slots[i].data = l->slot_data + i * l->item_floats;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->work_cv, NULL);
    pthread_cond_init(&l->done_cv, NULL);
    for (int i = 0; i < o->threads; i++) {
        int rc = pthread_create(&l->threads[i], NULL, worker_main, l);
        if (rc != 0) {
            ds_loader_free(l);
            return vit_error_set(err, VIT_ERR_NOMEM, "cannot start a loader thread: %s",
                                 strerror(rc));
        }
        l->nthreads++;
    }
    *out = l;
    return VIT_OK;
}

void ds_loader_free(ds_loader *l)
{
    if (!l)
        return;
    stop_threads(l);
    pthread_cond_destroy(&l->done_cv);
    pthread_cond_destroy(&l->work_cv);
    pthread_mutex_destroy(&l->mu);
    free(l->slots);
    free(l->slot_data);
    free(l->order);
    free(l->items);
    free(l->threads);
    free(l);
}

vit_status ds_loader_start_epoch(ds_loader *l, int epoch, vit_error *err)
{
    return ds_loader_start_epoch_at(l, epoch, 0, err);
}

/* Shuffles v[0..n) as epoch `epoch` of a loader with o's seed orders its
 * items: Fisher-Yates seeded by (seed, epoch); nothing without o->shuffle. */
static void epoch_shuffle(const ds_loader_options *o, int epoch, size_t *v, size_t n)
{
    if (!o->shuffle || n < 2)
        return;
    ds_rng r = rng_for(o->seed, 0x5348554646ull /* "SHUFF" */, (uint64_t)epoch);
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)rng_below(&r, (uint64_t)i + 1);
        size_t t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

void ds_loader_order(const ds_loader *l, int epoch, size_t *out)
{
    for (size_t i = 0; i < l->count; i++)
        out[i] = i;
    epoch_shuffle(&l->o, epoch, out, l->count);
}

/* The order of an epoch depends only on (seed, epoch) and an item's
 * augmentation on (seed, epoch, index), so starting at `position` gives the
 * batches the epoch would have given from there (a resumed run). */
vit_status ds_loader_start_epoch_at(ds_loader *l, int epoch, size_t position, vit_error *err)
{
    if (!l)
        return vit_error_set(err, VIT_ERR_INVALID, "ds_loader_start_epoch: NULL loader");
    if (epoch < 0)
        return vit_error_set(err, VIT_ERR_INVALID, "epoch %d is negative", epoch);
    if (position > l->count)
        return vit_error_set(err, VIT_ERR_INVALID, "position %zu is past the epoch's %zu items",
                             position, l->count);
    pthread_mutex_lock(&l->mu);
    /* Stop claims and let in-flight items land before the ring is reused. */
    l->active = 0;
    while (l->in_flight > 0)
        pthread_cond_wait(&l->done_cv, &l->mu);
    size_t n = l->count;
    for (size_t i = 0; i < n; i++)
        l->order[i] = l->items ? l->items[i] : i;
    epoch_shuffle(&l->o, epoch, l->order, n);
    for (size_t i = 0; i < l->nslots; i++)
        l->slots[i].done = 0;
    l->epoch = epoch;
    l->claim = l->consumed = position;
    l->active = l->started = 1;
    pthread_cond_broadcast(&l->work_cv);
    pthread_mutex_unlock(&l->mu);
    return VIT_OK;
}

vit_status ds_loader_next(ds_loader *l, float *images, int *labels, size_t *indices, int *count,
                          vit_error *err)
{
    if (count)
        *count = 0;
    if (!l || !images || !labels || !count)
        return vit_error_set(err, VIT_ERR_INVALID, "ds_loader_next: NULL argument");
    int got = 0;
    vit_status s = VIT_OK;
    pthread_mutex_lock(&l->mu);
    if (!l->started) {
        pthread_mutex_unlock(&l->mu);
        return vit_error_set(err, VIT_ERR_INVALID, "ds_loader_next before ds_loader_start_epoch");
    }
    while (got < l->o.batch_size && l->consumed < l->count) {
        ds_slot *slot = &l->slots[l->consumed % l->nslots];
        while (!slot->done)
            pthread_cond_wait(&l->done_cv, &l->mu);
        /* The slot is ours until consumed advances: no lock for the copy. */
        pthread_mutex_unlock(&l->mu);
        if (slot->status == VIT_OK) {
            memcpy(images + (size_t)got * l->item_floats, slot->data,
                   l->item_floats * sizeof *images);
            labels[got] = ds_label(l->d, slot->index);
            if (indices)
                indices[got] = slot->index;
            got++;
        } else if (l->o.on_bad == DS_BAD_SKIP && slot->status != VIT_ERR_NOMEM &&
                   !slot->stopped) {
            if (l->o.on_bad_fn) {
                char name[DS_ITEM_NAME_MAX];
                l->o.on_bad_fn(l->o.on_bad_ctx, ds_item_name(l->d, slot->index, name, sizeof name),
                               slot->message);
            }
        } else {
            s = vit_error_set(err, slot->status, "%s", slot->message);
        }
        pthread_mutex_lock(&l->mu);
        slot->done = 0;
        l->consumed++;
        pthread_cond_broadcast(&l->work_cv);
        if (s != VIT_OK)
            break;
    }
    pthread_mutex_unlock(&l->mu);
    if (s != VIT_OK)
        return s;
    if (got < l->o.batch_size && l->o.drop_last)
        got = 0; /* the final short batch */
    *count = got;
    return VIT_OK;
}

size_t ds_loader_batches(const ds_loader *l)
{
    if (!l)
        return 0;
    size_t n = l->count, b = (size_t)l->o.batch_size;
    return l->o.drop_last ? n / b : (n + b - 1) / b;
}

size_t ds_loader_position(ds_loader *l)
{
    if (!l)
        return 0;
    pthread_mutex_lock(&l->mu);
    size_t pos = l->consumed;
    pthread_mutex_unlock(&l->mu);
    return pos;
}

size_t ds_loader_items(const ds_loader *l)
{
    return l ? l->count : 0;
}

/* ================================================================ split */

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return (x > y) - (x < y);
}

vit_status ds_split(const ds_dataset *d, size_t limit, double fraction, uint64_t seed,
                    size_t **train, size_t *ntrain, size_t **val, size_t *nval, vit_error *err)
{
    *train = *val = NULL;
    *ntrain = *nval = 0;
    if (!(fraction >= 0 && fraction < 1))
        return vit_error_set(err, VIT_ERR_INVALID, "validation fraction %g is outside [0, 1)",
                             fraction);
    size_t n = limit && limit < d->n ? limit : d->n;
    int K = d->num_classes;
    /* items grouped by class (a counting sort): class c's are by_class[start[c]..start[c+1]) */
    size_t *start = calloc((size_t)K + 1, sizeof *start);
    size_t *fill = calloc((size_t)K + 1, sizeof *fill);
    size_t *by_class = malloc((n ? n : 1) * sizeof *by_class);
    size_t *t = malloc((n ? n : 1) * sizeof *t), *v = malloc((n ? n : 1) * sizeof *v);
    if (!start || !fill || !by_class || !t || !v) {
        free(start);
        free(fill);
        free(by_class);
        free(t);
        free(v);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory splitting %zu items", n);
    }
    for (size_t i = 0; i < n; i++)
        start[ds_label(d, i) + 1]++;
    for (int c = 0; c < K; c++)
        start[c + 1] += start[c];
    for (size_t i = 0; i < n; i++) {
        int c = ds_label(d, i);
        by_class[start[c] + fill[c]++] = i;
    }
    size_t nt = 0, nv = 0;
    for (int c = 0; c < K; c++) {
        size_t *items = by_class + start[c], m = start[c + 1] - start[c];
        size_t k = (size_t)floor(fraction * (double)m + 0.5);
        if (m > 0 && k > m - 1)
            k = m - 1;
        /* the first k of a seeded Fisher-Yates shuffle of the class's items */
        ds_rng r = rng_for(seed, 0x53504C4954ull /* "SPLIT" */, (uint64_t)c);
        for (size_t i = 0; i < k; i++) {
            size_t j = i + (size_t)rng_below(&r, (uint64_t)(m - i));
            size_t x = items[i];
            items[i] = items[j];
            items[j] = x;
        }
        for (size_t i = 0; i < m; i++) {
            if (i < k)
                v[nv++] = items[i];
            else
                t[nt++] = items[i];
        }
    }
    qsort(t, nt, sizeof *t, cmp_size);
    qsort(v, nv, sizeof *v, cmp_size);
    free(start);
    free(fill);
    free(by_class);
    *train = t;
    *ntrain = nt;
    *val = v;
    *nval = nv;
    return VIT_OK;
}
