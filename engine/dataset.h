/*
 * dataset.h - labelled image sets for fine-tuning and evaluation.
 *
 * Three sources, one interface:
 *   - ImageFolder: a directory of class directories, <root>/<class>/<image>,
 *     classes sorted by name (bytewise), images sorted by name within a class;
 *   - manifests: JSONL lines {"image": path, "label": name} or CSV "image,label"
 *     (a header line "image,label" is skipped), paths relative to the manifest's
 *     directory; classes are the sorted set of labels;
 *   - IDX pairs as Debian's dataset-fashion-mnist ships them: the path of the
 *     images file (*-images-idx3-ubyte or .gz); the labels file is found by
 *     replacing "images-idx3" with "labels-idx1".  Class names default to
 *     "0".."K-1" (K = max label + 1) unless ds_options.class_names is set.
 * A manifest may also name images by http(s) URL when the caller gives a
 * fetch hook (ds_options.fetch); without one such entries are refused.
 * Everything read is untrusted: sizes, counts, magic numbers, label ranges and
 * paths are checked.  Files are confined to a root directory by default (see
 * ds_options.root): a manifest line naming "/etc/passwd" or "../x.png", or a
 * symlink in a folder leading out, is an error that reads nothing outside
 * the root and says the same whether or not the target exists.  Only regular
 * files are read (FIFOs and devices are refused).  Errors name the file (and
 * line) at fault.
 *
 * The loader turns a dataset into batches of preprocessed float tensors on
 * prefetch threads, so decoding overlaps compute.  The order of epoch e is a
 * permutation fixed by (seed, e); augmentation randomness is fixed by (seed,
 * e, item), so results do not depend on thread timing.
 */
#ifndef VIT_DATASET_H
#define VIT_DATASET_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "image.h"
#include "status.h"

typedef struct ds_dataset ds_dataset;

/* Class names -- ImageFolder directory names, manifest labels, the entries
 * of ds_options.class_names and .classes -- must be valid UTF-8 of 1 to
 * DS_MAX_CLASS_NAME bytes without control characters: they become task and
 * checkpoint labels (task.h TASK_MAX_LABEL) and JSON keys, where anything
 * else would fail at the end of a training run or vanish from a report.
 * ds_open refuses a set with any other, naming it. */
#define DS_MAX_CLASS_NAME 1024

/* Most classes a data set may have -- found by a source or given in
 * ds_options.classes / .class_names; ds_open refuses more (VIT_ERR_TOO_LARGE).
 * Real classification sets stay well below: ImageNet-1k 1,000, iNaturalist
 * 2021 10,000, JFT-300M 18,291, ImageNet-21k 21,843 (the largest in common
 * use).  2^15 holds them all with room; the bound matters because a
 * manifest of a few hundred KB can name that many classes, and the head
 * (K x features floats), the logits and every per-class report grow with K.
 * Equal to TASK_MAX_CLASSES (task.h): a training set's classes become a task,
 * a task's classes an eval set's fixed list. */
#define DS_MAX_CLASSES 32768

/* What to do with an item that cannot be read or decoded. */
typedef enum ds_bad_policy { DS_BAD_FAIL, DS_BAD_SKIP } ds_bad_policy;

/* Called for every skipped item (DS_BAD_SKIP) with its name and the reason;
 * may be called from loader threads. */
typedef void (*ds_bad_fn)(void *ctx, const char *item, const char *message);

/* Longest URL a manifest entry may be, in bytes (the server's fetcher,
 * api/fetch.h API_FETCH_MAX_URL, allows the same). */
#define DS_MAX_URL 8192

/* Fetches the bytes of an image a manifest names by http(s) URL
 * (ds_options.fetch): the engine makes no network request itself.  On
 * VIT_OK *data holds *len bytes (malloc'd; the data set frees it).  At most
 * max_bytes (the data set's max_image_bytes) are wanted: more is an error
 * the hook may report without reading them (a longer answer is refused
 * anyway).  Otherwise an error status and one sentence in err (*data NULL):
 * the item does not load, like an unreadable file (DS_BAD_FAIL fails the
 * batch, DS_BAD_SKIP skips it and tells on_bad_fn) -- unless the hook sets
 * *stopped (it starts false): the fetch was abandoned because the caller is
 * stopping (a server draining, a job cancelled), which says nothing about
 * the item, so a loader never skips it but fails the batch under either
 * policy.  Called from loader threads, several at once, for the same URL
 * too; never at ds_open. */
typedef vit_status (*ds_fetch_fn)(void *ctx, const char *url, size_t max_bytes, uint8_t **data,
                                  size_t *len, bool *stopped, vit_error *err);

/* Checks a manifest's URL entry at ds_open without fetching it (may be
 * NULL): an error refuses the manifest, naming its line. */
typedef vit_status (*ds_url_check_fn)(void *ctx, const char *url, vit_error *err);

typedef struct ds_options {
    const char *root;          /* every file must lie under this directory; NULL: the
                                  data set's own (see below) */
    bool allow_outside_root;   /* true: no confinement at all (root is ignored) */
    size_t max_image_bytes;    /* per image file; 0: 64 MiB */
    size_t max_pixels;         /* per image; 0: 50M */
    size_t max_items;          /* refuse larger sets; 0: 10M */
    size_t max_idx_bytes;      /* IDX payload (decompressed) per file; 0: 128 MiB */
    struct beneath_stats *walk_stats; /* not NULL: receives what ds_open's path walks did
                                         (beneath.h), on failure too; for logs and tests */
    uint64_t *label_probes;    /* not NULL: receives the hash-table slots a manifest's labels
                                  looked at (about 2 per line, whatever the labels), on
                                  failure too; for tests */
    const char *const *class_names; /* NULL-terminated names for IDX labels, or NULL
                                       (an error for a folder or manifest) */
    const char *const *classes; /* NULL-terminated fixed class list, or NULL (see below) */
    ds_fetch_fn fetch;         /* not NULL: a manifest's http(s) entries are URL items,
                                  fetched through it by ds_load_image (see below);
                                  NULL: such entries are refused at ds_open */
    ds_url_check_fn check_url; /* with fetch: checks each URL entry at ds_open (may be NULL) */
    void *fetch_ctx;           /* passed to fetch and check_url */
} ds_options;

/* ds_options.root: the directory every file of the data set must resolve
 * under, symlinks included; the data set path itself must lie under it too
 * (a relative path is taken from the current directory, as always; a path
 * outside is refused as such, never "not found").
 * When NULL the data set is its own root: an ImageFolder directory itself, or
 * the directory a manifest or IDX file sits in (its own path is then taken as
 * given).  Files are opened beneath the root by a walk that never looks
 * outside it, at ds_open and again at ds_load_image, so a file swapped for a
 * symlink in between is refused too.  allow_outside_root lifts all of this
 * (for a trusted command line; a service must not set it).
 *
 * ds_options.classes: when set, the classes are exactly these names in this
 * order (an eval set must use the training set's classes); a folder or
 * manifest label that is not among them is an error ("unknown label 'x' at
 * line N"), a listed class may have no items.  For IDX sets it names the
 * labels like class_names (class_names wins when both are set).  Names must
 * be non-empty; they may repeat (a model's labels can: ImageNet-1k has two
 * "crane"s), which only matters when a folder or manifest label is looked up
 * in the list: a label matching a repeated name is ambiguous, an error
 * naming it.  IDX labels are numbers and named by position, never looked
 * up, so a repeated name there is harmless.
 *
 * ds_options.fetch: a manifest entry starting "http://" or "https://" (any
 * case) is then a URL item.  ds_open checks its text only -- at most
 * DS_MAX_URL bytes, no space or control byte, then check_url when set -- and
 * never fetches it: nothing is looked up on disk or on the network for it.
 * Its name (ds_item_name, ds_fingerprint) is the URL as written.
 * ds_load_image calls fetch(fetch_ctx, url, max_image_bytes, ...) and
 * decodes the bytes with a file's limits (max_image_bytes, max_pixels).
 * The hook must stay valid until ds_close. */

/* Opens a dataset (see above for what path may be).  Item lists are read now;
 * images are decoded later, on demand.  An empty class directory, a manifest
 * line without image or label (or with a key twice), a missing image file
 * (manifests and folders are checked at open), a path outside the root, an
 * IDX file with a wrong magic, a count mismatch, more or less data than its
 * header promises, or a payload over max_idx_bytes are errors. */
vit_status ds_open(const char *path, const ds_options *opt, ds_dataset **out, vit_error *err);
void ds_close(ds_dataset *d);

/* What ds_open would read at path, by the same rule (a directory is an
 * ImageFolder, a .jsonl or .csv name a manifest, anything else an IDX images
 * file or nothing it reads), without reading it: lets a command line check
 * its options before opening.  DS_SOURCE_NONE: path cannot be stat'ed. */
typedef enum ds_source {
    DS_SOURCE_NONE,
    DS_SOURCE_FOLDER,
    DS_SOURCE_MANIFEST,
    DS_SOURCE_OTHER, /* IDX, or not a data set */
} ds_source;
ds_source ds_source_of(const char *path);

size_t ds_size(const ds_dataset *d);
int ds_num_classes(const ds_dataset *d);
const char *ds_class_name(const ds_dataset *d, int cls);
int ds_label(const ds_dataset *d, size_t i);
/* Writes a name for item i into buf (cap bytes, truncated to fit; made on
 * demand, nothing is kept per item): the image's absolute symlink-free path,
 * the URL of a URL item, or "<idx file>#<index>".  Returns buf; NULL when i
 * is out of range (or buf is NULL or cap 0).  DS_ITEM_NAME_MAX bytes always
 * hold a whole name. */
#define DS_ITEM_NAME_MAX (2 * PATH_MAX + 32)
const char *ds_item_name(const ds_dataset *d, size_t i, char *buf, size_t cap);

/* sha256 (hex) of what decides a training run's data, over its first `limit`
 * items (0: all): the kind, the class names in order, the item count, and per
 * item its label and its name relative to the data set's root (so moving the
 * whole set keeps it) or its URL; for IDX sets the pixels themselves (they
 * are in memory) instead of names.  Image files are not read nor URLs
 * fetched: an image rewritten in place under the same name keeps the
 * fingerprint. */
void ds_fingerprint(const ds_dataset *d, size_t limit, char hex[65]);

/* Bytes of memory the data set holds for its items and classes (names,
 * labels, IDX pixels; not its fixed-size parts): for logs and limits. */
size_t ds_memory(const ds_dataset *d);

/* A seeded, stratified hold-out split of items 0..limit-1 (0: all): from
 * each class of n items, round(fraction * n) items -- at most n - 1, so
 * every class keeps a training item -- go to *val, the rest to *train; both
 * lists ascending, disjoint, together every item.  The items a class holds
 * out are a Fisher-Yates draw seeded by (seed, class): the same arguments
 * give the same split.  *nval may be 0 (fraction 0, or classes of one
 * item).  0 <= fraction < 1.  The caller frees *train and *val. */
vit_status ds_split(const ds_dataset *d, size_t limit, double fraction, uint64_t seed,
                    size_t **train, size_t *ntrain, size_t **val, size_t *nval, vit_error *err);

/* Decodes item i into an RGB image (IDX grey is replicated to RGB).  Image
 * files are opened beneath the root again and read up to max_image_bytes;
 * URL items are fetched through ds_options.fetch. */
vit_status ds_load_image(const ds_dataset *d, size_t i, img_image *out, vit_error *err);

/* ---- batches ---- */

/* Train-time augmentation: RandomResizedCrop(scale, ratio) to the model's
 * input, then a horizontal flip with probability `flip` (torchvision's
 * transforms with these parameters). */
typedef struct ds_augment {
    double scale_min, scale_max; /* area fraction of the source a crop keeps: 0 < min <= max <= 1 */
    double ratio_min, ratio_max; /* aspect ratio (w/h) of a crop: 0 < min <= max */
    double flip;                 /* probability of a horizontal flip: 0..1 */
} ds_augment;

/* ImageNet's: scale 0.08-1, ratio 3/4-4/3, flip 0.5 (torchvision's defaults). */
ds_augment ds_augment_imagenet(void);

typedef struct ds_loader_options {
    int batch_size;           /* rows per batch */
    bool shuffle;             /* permute per epoch; false: dataset order */
    bool augment;             /* transform each item by `aug` (else the eval transform) */
    ds_augment aug;           /* all zero: ds_augment_imagenet() */
    bool drop_last;           /* drop a final short batch */
    uint64_t seed;
    int threads;              /* prefetch threads (>= 1) */
    int prefetch;             /* batches decoded ahead (>= 1) */
    img_preprocess preprocess;/* eval transform; augment reuses its size, interp, mean/std */
    ds_bad_policy on_bad;
    ds_bad_fn on_bad_fn;      /* report for skipped items, may be NULL */
    void *on_bad_ctx;
    size_t limit;             /* use only items 0..limit-1 of the data set (0: all);
                                 shuffling permutes within them */
    const size_t *items;      /* not NULL: use only these data set indices (num_items of
                                 them, each < ds_size, in this order before shuffling;
                                 copied), and not `limit` */
    size_t num_items;
} ds_loader_options;

typedef struct ds_loader ds_loader;

vit_status ds_loader_create(const ds_dataset *d, const ds_loader_options *o, ds_loader **out,
                            vit_error *err);
void ds_loader_free(ds_loader *l);

/* Starts epoch `epoch` (0-based): fixes its order and starts prefetching. */
vit_status ds_loader_start_epoch(ds_loader *l, int epoch, vit_error *err);

/* Starts epoch `epoch` at epoch position `position` (items consumed so far,
 * skipped ones included; <= ds_loader_items): the batches that follow are
 * exactly those the epoch gives after that many items (a resumed run). */
vit_status ds_loader_start_epoch_at(ds_loader *l, int epoch, size_t position, vit_error *err);

/* The epoch position the next batch starts at: items consumed so far in this
 * epoch, skipped ones included (0 before the first batch). */
size_t ds_loader_position(ds_loader *l);

/* Items per epoch (the data set's, or its limit). */
size_t ds_loader_items(const ds_loader *l);

/* The order of epoch `epoch` without loading anything: out[p] (ds_loader_items
 * entries) is the index into the loader's item list (o->items, else 0..) of
 * the item at epoch position p -- the order ds_loader_start_epoch fixes, a
 * pure function of (seed, epoch).  For a caller that replays epochs from
 * what it kept of the items (a linear probe's cached features). */
void ds_loader_order(const ds_loader *l, int epoch, size_t *out);

/* Fills the next batch of the epoch: images (count, 3, H, W), labels (count),
 * and the dataset indices of the rows (may be NULL).  *count is 0 when the
 * epoch is over.  A bad item fails here (DS_BAD_FAIL) or is skipped and
 * reported (DS_BAD_SKIP; the batch is filled from the following items);
 * a URL item whose fetch the hook abandoned as stopped (ds_fetch_fn) and an
 * out-of-memory fail under both policies.
 * A failed item is consumed: the next call goes on after it.  One consumer
 * thread drives a loader (next / start_epoch / free are not concurrent). */
vit_status ds_loader_next(ds_loader *l, float *images, int *labels, size_t *indices, int *count,
                          vit_error *err);

/* Batches in one epoch (after drop_last). */
size_t ds_loader_batches(const ds_loader *l);

#endif
