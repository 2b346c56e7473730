/*
 * dataset_impl.h - internals shared by the dataset*.c files; never included
 * outside engine/.
 *
 * A ds_dataset is built by ds_open (dataset.c) from one source: dataset.c
 * reads ImageFolder directories itself, dataset_manifest.c JSONL/CSV
 * manifests, dataset_idx.c IDX pairs; the sources fill it through the
 * builder functions below.  dataset_loader.c only reads a finished one.
 */
#ifndef VIT_DATASET_IMPL_H
#define VIT_DATASET_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "beneath.h"
#include "dataset.h"

/* The path-walk budget of one ds_open (beneath_budget): every walk (a
 * manifest line, a folder entry) may take DS_WALK_PER_ITEM steps on average,
 * plus a start-up allowance that lets a small set hold a few paths up to the
 * per-walk bound (BENEATH_MAX_STEPS).  A legitimate item takes 2-10 steps;
 * a set of N items thus costs at most DS_WALK_START + 32 N steps (each a
 * few system calls), however its symlinks are chained. */
#define DS_WALK_PER_ITEM 32
#define DS_WALK_START ((uint64_t)64 * BENEATH_MAX_STEPS)

/* Symlinks followed by one ds_open's walks: DS_LINK_START + 2 per walk.
 * A legitimate item follows at most a linked class (or data) directory and
 * a linked file; a small set may chain more.  Why apart from the steps: a
 * link costs three system calls before its target is walked, and a 5-byte
 * manifest line naming a 30-link chain in its own directory (31 steps, under
 * the 32 an item) cost ~95 calls: 9.2 s for a 1 MB manifest. */
#define DS_LINK_PER_ITEM 2
#define DS_LINK_START 1024

/* The names of a data set's items are bounded in all, like its walks: N
 * items may hold DS_NAMES_START + DS_NAME_PER_ITEM * N bytes of names (paths
 * relative to the root), and one name is below PATH_MAX (the walk's bound on
 * its result).  Why: a name is the symlink-free path an entry leads to, so a
 * 4-byte manifest line or a directory entry can name a 4 KB path through a
 * symlink to a deep directory, on every line; N lines then held 1,000 times
 * their size.  Real data sets average well below 256 bytes per path below
 * their root; the start-up allowance lets a small one hold long paths. */
#define DS_NAMES_START ((size_t)1 << 20)
#define DS_NAME_PER_ITEM 256

typedef enum ds_kind { DS_KIND_FILES, DS_KIND_IDX } ds_kind;

struct ds_dataset {
    ds_kind kind;
    size_t n;              /* items */
    /* DS_KIND_FILES */
    char *pool;            /* item names (paths relative to the root), NUL-terminated,
                              back to back */
    size_t pool_len, pool_cap;
    size_t *name_off;      /* (n) offset of item i's name in pool */
    int *labels;           /* (n) class index of item i */
    uint8_t *is_url;       /* (n) 1: item i's name is a URL, fetched through fetch;
                              NULL while no item is one */
    size_t cap;            /* allocated length of name_off / labels / is_url */
    beneath_root *root;    /* item i is opened as its name beneath it */
    /* DS_KIND_IDX: nothing per item but its label and pixels; names are made
     * on demand ("<idx_path>#<i>"), so a header claiming 10M items of one
     * pixel costs 2 bytes an item, not a 40-byte string */
    char *idx_path;        /* the images file as named to ds_open */
    uint8_t *idx_labels;   /* (n) class index of item i */
    uint8_t *grey;         /* (n, rows, cols) pixels */
    int rows, cols;        /* IDX image size */
    char **classes;        /* (num_classes) owned names, in class order */
    int num_classes;
    size_t max_image_bytes, max_pixels, max_items, max_idx_bytes;
    ds_fetch_fn fetch;     /* ds_options.fetch: loads URL items */
    void *fetch_ctx;
    beneath_budget walks;  /* shared by ds_open's walks (not ds_load_image's: threads) */
};

/* a * b into *out; 0 on overflow. */
static inline int ds_mul_ok(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return 0;
    *out = a * b;
    return 1;
}

/* Returns a malloc'd "a/b", or b alone when a is empty; NULL on OOM. */
char *ds_join_rel(const char *a, const char *b);

/* ---- the builder (dataset.c) */

/* Adds an item (name: its path relative to the root; label) to d,
 * enforcing max_items and the bound on name bytes (DS_NAMES_START). */
vit_status ds_add_item(ds_dataset *d, const char *name, int label, vit_error *err);

/* ds_add_item of a URL item (name: the URL as written). */
vit_status ds_add_url_item(ds_dataset *d, const char *url, int label, vit_error *err);

/* Is item i a URL item? */
static inline int ds_item_is_url(const ds_dataset *d, size_t i)
{
    return d->is_url && d->is_url[i];
}

/* ds_load_image for the loader: *stopped is set when a URL item's fetch was
 * abandoned because the caller is stopping (ds_fetch_fn), an error the
 * loader never skips. */
vit_status ds_load_item(const ds_dataset *d, size_t i, img_image *out, bool *stopped,
                        vit_error *err);

/* The bytes (NULs included) the names of `items` items may take in all:
 * DS_NAMES_START + DS_NAME_PER_ITEM * items (saturating). */
size_t ds_names_limit(size_t items);

/* Is name a valid class name (dataset.h: UTF-8, 1..DS_MAX_CLASS_NAME bytes,
 * no control characters)?  If not, VIT_ERR_INVALID with a message starting
 * with `what` (e.g. "<folder>: class directory") and the name, escaped. */
vit_status ds_check_class_name(const char *name, const char *what, vit_error *err);

/* Sets d's classes to copies of names[0..n), each checked by
 * ds_check_class_name (`what` names them in a message). */
vit_status ds_set_classes(ds_dataset *d, const char *const *names, size_t n, const char *what,
                          vit_error *err);

/* A name -> class lookup: class names sorted bytewise with their index. */
typedef struct ds_class_entry {
    const char *name;
    int index;
} ds_class_entry;

/* Builds a sorted lookup over d->classes (caller frees *out).  A name may
 * appear more than once (a model's labels may repeat one: ImageNet-1k has
 * two "crane"s); only looking such a name up is an error (below). */
vit_status ds_class_index_build(const ds_dataset *d, ds_class_entry **out, vit_error *err);

enum { DS_CLASS_UNKNOWN = -1, DS_CLASS_AMBIGUOUS = -2 };

/* Index of class `name` in a lookup of n entries; DS_CLASS_UNKNOWN when no
 * class has that name, DS_CLASS_AMBIGUOUS when several have it (which one
 * an item means cannot be told, so callers refuse it, naming it). */
int ds_class_lookup(const ds_class_entry *t, int n, const char *name);

/* Counts a NULL-terminated list and checks its names are non-empty. */
vit_status ds_fixed_list_count(const char *const *names, const char *what, size_t *n,
                               vit_error *err);

/* Installs opt->classes as d's classes and builds the lookup in *index. */
vit_status ds_use_fixed_classes(ds_dataset *d, const char *const *classes,
                                ds_class_entry **index, vit_error *err);

/* ---- the sources besides ImageFolder */

/* Reads a JSONL (csv == 0) or CSV manifest from fd (not taken over), named
 * `path` in messages, whose directory is dir_rel under the root
 * (dataset_manifest.c). */
vit_status ds_open_manifest(ds_dataset *d, int fd, const char *path, const char *dir_rel, int csv,
                            const ds_options *opt, vit_error *err);

/* Does the file fd (offset at 0) start with the IDX images magic (raw or
 * gzipped)?  Leaves the offset at 0 (dataset_idx.c). */
int ds_sniff_idx_images(int fd);

/* Opens an IDX pair from the images file (fd, a regular file of `size`
 * bytes, not taken over, named `path` in messages; dir_rel its directory
 * under the root) (dataset_idx.c). */
vit_status ds_open_idx(ds_dataset *d, int fd, off_t size, const char *path, const char *dir_rel,
                       const ds_options *opt, vit_error *err);

#endif
