/*
 * dataset.c - labelled image sets (ImageFolder, JSONL/CSV manifests, IDX) and
 * the prefetching batch loader (see dataset.h for the contract).
 *
 * Design
 *   - ds_open reads the whole item list up front: every item is a name (an
 *     image path, or "<idx file>#<i>") and a class index.  Names live in one
 *     string pool (offsets, so the pool may grow while it is built); class
 *     names are separate strings.  IDX pixels are decoded into memory once;
 *     image files are decoded on demand by ds_load_image.  A dataset is
 *     immutable after ds_open, so loader threads read it without locks.
 *   - Paths from manifests and folders are untrusted: URLs are refused (for
 *     now), and every file is opened beneath the data set root with
 *     beneath_open (beneath.h: a walk from a descriptor of the root that
 *     never looks outside it), at ds_open and again when an image is read.
 *     Items keep their symlink-free path under the root.  IDX sizes are
 *     bounded from the header, before any buffer exists.
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

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <zlib.h>

#include "beneath.h"

#define DS_DEFAULT_MAX_IMAGE_BYTES ((size_t)64 << 20)
#define DS_DEFAULT_MAX_PIXELS ((size_t)50000000)
#define DS_DEFAULT_MAX_ITEMS ((size_t)10000000)
#define DS_DEFAULT_MAX_IDX_BYTES ((size_t)1 << 30) /* decoded IDX payload */
#define DS_MAX_CLASSES 1000000        /* bound on fixed class lists */
#define DS_IDX_MAX_PLANE ((size_t)4096 * 4096) /* rows * cols of one IDX image */
#define DS_IDX_IMAGES_MAGIC 0x00000803u /* ubyte, 3 dims: n, rows, cols */
#define DS_IDX_LABELS_MAGIC 0x00000801u /* ubyte, 1 dim: n */
#define DS_MAX_THREADS 256
#define DS_MAX_PREFETCH 64
#define DS_MAX_BATCH 65536
#define DS_MAX_SIDE 16384             /* crop sizes, as image_resize.c allows */

typedef enum ds_kind { DS_KIND_FILES, DS_KIND_IDX } ds_kind;

/* Names the data set root in beneath_* messages ("... is outside the data set root"). */
#define DS_ROOT_LABEL "data set root"

struct ds_dataset {
    ds_kind kind;
    size_t n;              /* items */
    char *pool;            /* item names, NUL-terminated, back to back */
    size_t pool_len, pool_cap;
    size_t *name_off;      /* (n) offset of item i's name in pool */
    int *labels;           /* (n) class index of item i */
    size_t cap;            /* allocated length of name_off / labels */
    char **classes;        /* (num_classes) owned names, in class order */
    int num_classes;
    uint8_t *grey;         /* IDX: (n, rows, cols) pixels; else NULL */
    int rows, cols;        /* IDX image size */
    size_t max_image_bytes, max_pixels, max_items, max_idx_bytes;
    beneath_root *root;    /* files: item i is opened as name(i) + rel_off beneath it */
    size_t rel_off;        /* names are beneath_path(root, path relative to the root) */
};

/* ================================================================ helpers */

/* a * b into *out; 0 on overflow. */
static int mul_ok(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return 0;
    *out = a * b;
    return 1;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b); /* bytewise (unsigned char) */
}

/* Returns a malloc'd "a/b" (or b alone when b is absolute); NULL on OOM. */
static char *path_join(const char *a, const char *b)
{
    if (b[0] == '/')
        return strdup(b);
    size_t la = strlen(a), lb = strlen(b);
    char *p = malloc(la + lb + 2);
    if (!p)
        return NULL;
    memcpy(p, a, la);
    p[la] = '/';
    memcpy(p + la + 1, b, lb + 1);
    return p;
}

/* Returns a malloc'd copy of the directory part of path ("." if none). */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    size_t n = (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, path, n);
        d[n] = '\0';
    }
    return d;
}

/* Case-insensitive suffix test. */
static int ends_with_ci(const char *s, const char *suffix)
{
    size_t ls = strlen(s), lx = strlen(suffix);
    if (ls < lx)
        return 0;
    for (size_t i = 0; i < lx; i++)
        if (tolower((unsigned char)s[ls - lx + i]) != tolower((unsigned char)suffix[i]))
            return 0;
    return 1;
}

/* ImageFolder only counts files with these extensions as images. */
static int has_image_ext(const char *name)
{
    return ends_with_ci(name, ".jpg") || ends_with_ci(name, ".jpeg") ||
           ends_with_ci(name, ".png") || ends_with_ci(name, ".bmp");
}

static int is_url(const char *s)
{
    return strncasecmp(s, "http://", 7) == 0 || strncasecmp(s, "https://", 8) == 0;
}

/* Returns a malloc'd "a/b", or b alone when a is empty; NULL on OOM. */
static char *join_rel(const char *a, const char *b)
{
    return a[0] ? path_join(a, b) : strdup(b);
}

/* ================================================================ builder */

/* Adds an item (name, label) to d, enforcing max_items. */
static vit_status add_item(ds_dataset *d, const char *name, int label, vit_error *err)
{
    if (d->n >= d->max_items)
        return vit_error_set(err, VIT_ERR_TOO_LARGE, "data set has more than %zu items",
                             d->max_items);
    if (d->n == d->cap) {
        size_t ncap = d->cap ? d->cap * 2 : 256, b1, b2;
        if (!mul_ok(ncap, sizeof *d->name_off, &b1) || !mul_ok(ncap, sizeof *d->labels, &b2))
            return vit_error_set(err, VIT_ERR_NOMEM, "item list overflows");
        size_t *no = realloc(d->name_off, b1);
        if (!no)
            return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for the item list");
        d->name_off = no;
        int *nl = realloc(d->labels, b2);
        if (!nl)
            return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for the item list");
        d->labels = nl;
        d->cap = ncap;
    }
    size_t len = strlen(name) + 1;
    if (len > SIZE_MAX - d->pool_len)
        return vit_error_set(err, VIT_ERR_NOMEM, "name pool overflows");
    if (d->pool_len + len > d->pool_cap) {
        size_t ncap = d->pool_cap ? d->pool_cap : 4096;
        while (ncap < d->pool_len + len) {
            if (ncap > SIZE_MAX / 2)
                return vit_error_set(err, VIT_ERR_NOMEM, "name pool overflows");
            ncap *= 2;
        }
        char *np = realloc(d->pool, ncap);
        if (!np)
            return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for item names");
        d->pool = np;
        d->pool_cap = ncap;
    }
    memcpy(d->pool + d->pool_len, name, len);
    d->name_off[d->n] = d->pool_len;
    d->labels[d->n] = label;
    d->pool_len += len;
    d->n++;
    return VIT_OK;
}

/* Sets d's classes to copies of names[0..n). */
static vit_status set_classes(ds_dataset *d, const char *const *names, size_t n, vit_error *err)
{
    if (n > DS_MAX_CLASSES)
        return vit_error_set(err, VIT_ERR_TOO_LARGE, "%zu classes, over the limit of %d", n,
                             DS_MAX_CLASSES);
    d->classes = calloc(n ? n : 1, sizeof *d->classes);
    if (!d->classes)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for class names");
    for (size_t i = 0; i < n; i++) {
        d->classes[i] = strdup(names[i]);
        if (!d->classes[i]) {
            d->num_classes = (int)i;
            return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for class names");
        }
    }
    d->num_classes = (int)n;
    return VIT_OK;
}

/* A name -> class lookup: class names sorted bytewise with their index. */
typedef struct class_entry {
    const char *name;
    int index;
} class_entry;

static int cmp_class_entry(const void *a, const void *b)
{
    return strcmp(((const class_entry *)a)->name, ((const class_entry *)b)->name);
}

/* Builds a sorted lookup over d->classes (caller frees *out).  Duplicate
 * names are an error (a fixed list must name each class once). */
static vit_status class_index_build(const ds_dataset *d, class_entry **out, vit_error *err)
{
    size_t n = (size_t)d->num_classes;
    class_entry *t = calloc(n ? n : 1, sizeof *t);
    if (!t)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for the class index");
    for (size_t i = 0; i < n; i++) {
        t[i].name = d->classes[i];
        t[i].index = (int)i;
    }
    qsort(t, n, sizeof *t, cmp_class_entry);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(t[i - 1].name, t[i].name) == 0) {
            vit_status s = vit_error_set(err, VIT_ERR_INVALID,
                                         "class '%.200s' is listed twice", t[i].name);
            free(t);
            return s;
        }
    }
    *out = t;
    return VIT_OK;
}

/* Index of class `name`, or -1. */
static int class_lookup(const class_entry *t, int n, const char *name)
{
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(t[mid].name, name);
        if (c == 0)
            return t[mid].index;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* Counts a NULL-terminated list and checks its names are non-empty. */
static vit_status fixed_list_count(const char *const *names, const char *what, size_t *n,
                                   vit_error *err)
{
    size_t k = 0;
    while (names[k]) {
        if (names[k][0] == '\0')
            return vit_error_set(err, VIT_ERR_INVALID, "%s: name %zu is empty", what, k);
        if (++k > DS_MAX_CLASSES)
            return vit_error_set(err, VIT_ERR_TOO_LARGE, "%s: more than %d names", what,
                                 DS_MAX_CLASSES);
    }
    if (k == 0)
        return vit_error_set(err, VIT_ERR_INVALID, "%s is empty", what);
    *n = k;
    return VIT_OK;
}

/* Installs opt->classes as d's classes and builds the lookup in *index. */
static vit_status use_fixed_classes(ds_dataset *d, const char *const *classes,
                                    class_entry **index, vit_error *err)
{
    size_t n = 0;
    vit_status s = fixed_list_count(classes, "class list", &n, err);
    if (s == VIT_OK)
        s = set_classes(d, classes, n, err);
    if (s == VIT_OK)
        s = class_index_build(d, index, err);
    return s;
}

/* ================================================================ ImageFolder */

/* A sorted list of entry names (owned strings). */
typedef struct name_list {
    char **v;
    size_t n, cap;
} name_list;

static void name_list_free(name_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

static int name_list_add(name_list *l, const char *s)
{
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 64, bytes;
        if (!mul_ok(ncap, sizeof *l->v, &bytes))
            return 0;
        char **nv = realloc(l->v, bytes);
        if (!nv)
            return 0;
        l->v = nv;
        l->cap = ncap;
    }
    if (!(l->v[l->n] = strdup(s)))
        return 0;
    l->n++;
    return 1;
}

/* Directory entries: the name as listed and the symlink-free path relative
 * to the root that it leads to. */
typedef struct dir_entry {
    char *name;
    char *canon;
} dir_entry;

typedef struct entry_list {
    dir_entry *v;
    size_t n, cap;
} entry_list;

static void entry_list_free(entry_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].name);
        free(l->v[i].canon);
    }
    free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

/* Adds (a copy of name, canon: taken over); 0 on OOM (canon is freed). */
static int entry_list_add(entry_list *l, const char *name, char *canon)
{
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 64, bytes;
        dir_entry *nv = mul_ok(ncap, sizeof *l->v, &bytes) ? realloc(l->v, bytes) : NULL;
        if (!nv) {
            free(canon);
            return 0;
        }
        l->v = nv;
        l->cap = ncap;
    }
    if (!(l->v[l->n].name = strdup(name))) {
        free(canon);
        return 0;
    }
    l->v[l->n].canon = canon;
    l->n++;
    return 1;
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const dir_entry *)a)->name, ((const dir_entry *)b)->name);
}

/* Lists the non-hidden entries of directory dir_rel (relative to the root;
 * `shown` names it in messages) that lead to directories (want_dirs) or to
 * regular files with an image extension (!want_dirs), sorted bytewise by
 * name.  Symlinks are followed beneath the root; one leading out of it is an
 * error (never looked at, so the same error whatever it points to).  *other
 * counts the remaining non-hidden entries.  `cap` bounds the entries kept. */
static vit_status list_dir(const beneath_root *root, const char *dir_rel, const char *shown,
                           int want_dirs, size_t cap, entry_list *out, size_t *other,
                           vit_error *err)
{
    *other = 0;
    int fd, eno;
    struct stat st;
    char subject[PATH_MAX + 64];
    snprintf(subject, sizeof subject, "directory %s", shown);
    vit_status s = beneath_open(root, dir_rel, BENEATH_WANT_DIR, subject, &fd, &st, NULL, err);
    if (s != VIT_OK)
        return s;
    DIR *dh = fdopendir(fd);
    if (!dh) {
        int e = errno;
        close(fd);
        return vit_error_set(err, VIT_ERR_IO, "cannot list %s: %s", shown, strerror(e));
    }
    struct dirent *e;
    while ((e = readdir(dh))) {
        if (e->d_name[0] == '.')
            continue;
        if (!want_dirs && !has_image_ext(e->d_name)) {
            (*other)++;
            continue;
        }
        char *rel = join_rel(dir_rel, e->d_name), *canon = NULL;
        if (!rel) {
            s = vit_error_set(err, VIT_ERR_NOMEM, "out of memory listing %s", shown);
            break;
        }
        int efd;
        beneath_result b = beneath_walk(root, rel, BENEATH_WANT_ANY, &efd, &st, &canon, &eno);
        free(rel);
        if (efd >= 0)
            close(efd);
        if (b == BENEATH_OUTSIDE || b == BENEATH_NOMEM) {
            snprintf(subject, sizeof subject, "%s/%s", shown, e->d_name);
            s = beneath_error(root, b, eno, BENEATH_WANT_ANY, subject, err);
            break;
        }
        int match = b == BENEATH_OK && (want_dirs ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode));
        if (!match) { /* a dangling link, a FIFO, unreadable, ... */
            free(canon);
            (*other)++;
            continue;
        }
        if (out->n >= cap) {
            free(canon);
            s = vit_error_set(err, VIT_ERR_TOO_LARGE, "%s has more than %zu entries", shown, cap);
            break;
        }
        if (!entry_list_add(out, e->d_name, canon)) {
            s = vit_error_set(err, VIT_ERR_NOMEM, "out of memory listing %s", shown);
            break;
        }
    }
    closedir(dh);
    if (s == VIT_OK && out->n > 1)
        qsort(out->v, out->n, sizeof *out->v, cmp_entry);
    return s;
}

/* Reads <folder>/<class>/<image>; folder_rel is the folder relative to the
 * root, `path` as the caller named it. */
static vit_status open_folder(ds_dataset *d, const char *path, const char *folder_rel,
                              const ds_options *opt, vit_error *err)
{
    entry_list cls = {0}, files = {0};
    class_entry *index = NULL;
    char *cdir = NULL, *name = NULL;
    size_t other = 0;
    vit_status s = list_dir(d->root, folder_rel, path, 1, DS_MAX_CLASSES, &cls, &other, err);
    if (s != VIT_OK)
        goto done;
    if (cls.n == 0) {
        if (other > 0)
            s = vit_error_set(err, VIT_ERR_FORMAT,
                              "%s has files but no class subdirectories: an ImageFolder data "
                              "set is <root>/<class>/<image>",
                              path);
        else
            s = vit_error_set(err, VIT_ERR_FORMAT, "%s has no class directories", path);
        goto done;
    }
    if (opt->classes) {
        s = use_fixed_classes(d, opt->classes, &index, err);
    } else {
        char **names = malloc(cls.n * sizeof *names);
        if (!names) {
            s = vit_error_set(err, VIT_ERR_NOMEM, "out of memory for class names");
            goto done;
        }
        for (size_t c = 0; c < cls.n; c++)
            names[c] = cls.v[c].name;
        s = set_classes(d, (const char *const *)names, cls.n, err);
        free(names);
    }
    if (s != VIT_OK)
        goto done;

    for (size_t c = 0; c < cls.n; c++) {
        int label = (int)c;
        if (index) {
            label = class_lookup(index, d->num_classes, cls.v[c].name);
            if (label < 0) {
                s = vit_error_set(err, VIT_ERR_INVALID,
                                  "%s: unknown label '%.200s' (class directory not in the "
                                  "class list)",
                                  path, cls.v[c].name);
                goto done;
            }
        }
        free(cdir);
        if (!(cdir = path_join(path, cls.v[c].name))) {
            s = vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
            goto done;
        }
        entry_list_free(&files);
        s = list_dir(d->root, cls.v[c].canon, cdir, 0, d->max_items, &files, &other, err);
        if (s != VIT_OK)
            goto done;
        if (files.n == 0) {
            s = vit_error_set(err, VIT_ERR_FORMAT,
                              "class directory %s has no images (.jpg, .jpeg, .png, .bmp)",
                              cdir);
            goto done;
        }
        for (size_t i = 0; i < files.n; i++) {
            free(name);
            if (!(name = beneath_path(d->root, files.v[i].canon))) {
                s = vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
                goto done;
            }
            s = add_item(d, name, label, err);
            if (s != VIT_OK)
                goto done;
        }
    }
done:
    free(name);
    free(cdir);
    free(index);
    entry_list_free(&cls);
    entry_list_free(&files);
    return s;
}

/* ================================================================ manifests */

/* Splits a CSV line in place into fields (RFC 4180 subset on one line:
 * fields separated by ','; a field that starts with '"' is quoted, '""' inside
 * it is one '"').  Stores up to max field pointers, sets *nfields to the full
 * count.  Returns NULL or a static reason. */
static const char *csv_split(char *line, char **fields, int max, int *nfields)
{
    char *r = line, *w = line;
    int n = 0;
    for (;;) {
        char *start = w;
        if (*r == '"') {
            r++;
            for (;;) {
                if (*r == '\0')
                    return "unterminated quoted field";
                if (*r == '"') {
                    if (r[1] == '"') {
                        *w++ = '"';
                        r += 2;
                        continue;
                    }
                    r++;
                    break;
                }
                *w++ = *r++;
            }
            if (*r != ',' && *r != '\0')
                return "unexpected character after a closing quote";
        } else {
            while (*r != ',' && *r != '\0')
                *w++ = *r++;
        }
        char sep = *r;
        *w = '\0'; /* w <= r: at worst overwrites the separator, saved above */
        if (n < max)
            fields[n] = start;
        n++;
        if (sep == '\0')
            break;
        r++;
        w = r;
    }
    *nfields = n;
    return NULL;
}

/* Is the line only spaces, tabs and '\r'? */
static int is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return 0;
    return 1;
}

/* One manifest line's item, checked and added.  Labels are resolved now with
 * a fixed class list (index != NULL); otherwise the label string is kept in
 * *labels_out for the sorted-unique pass. */
typedef struct manifest_ctx {
    ds_dataset *d;
    const char *file;     /* manifest path, for messages */
    const char *dir_rel;  /* manifest directory, relative to the root */
    const class_entry *index;
    name_list labels;     /* per-item label strings (no fixed list) */
} manifest_ctx;

static vit_status manifest_item(manifest_ctx *m, size_t line, const char *image,
                                const char *label, vit_error *err)
{
    char where[PATH_MAX + 32];
    snprintf(where, sizeof where, "%s:%zu", m->file, line);
    if (image[0] == '\0')
        return vit_error_set(err, VIT_ERR_FORMAT, "%s: empty image path", where);
    if (label[0] == '\0')
        return vit_error_set(err, VIT_ERR_FORMAT, "%s: empty label", where);
    if (is_url(image))
        return vit_error_set(err, VIT_ERR_UNSUPPORTED,
                             "%s: URLs in manifests are not supported yet ('%.200s')", where,
                             image);
    int cls = 0;
    if (m->index) {
        cls = class_lookup(m->index, m->d->num_classes, label);
        if (cls < 0)
            return vit_error_set(err, VIT_ERR_INVALID, "%s: unknown label '%.200s' at line %zu",
                                 m->file, label, line);
    }
    /* Relative paths start at the manifest's directory; absolute ones must
     * name a place under the root (the walk checks both). */
    char *rel = image[0] == '/' ? strdup(image) : join_rel(m->dir_rel, image);
    if (!rel)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    char *canon = NULL, subject[PATH_MAX + 64];
    int fd;
    struct stat st;
    snprintf(subject, sizeof subject, "%s:%zu: image '%s'", m->file, line, image);
    vit_status s = beneath_open(m->d->root, rel, BENEATH_WANT_FILE, subject, &fd, &st, &canon,
                                err);
    free(rel);
    if (s != VIT_OK)
        return s;
    close(fd);
    char *name = beneath_path(m->d->root, canon);
    free(canon);
    if (!name)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    s = add_item(m->d, name, cls, err);
    free(name);
    if (s == VIT_OK && !m->index && !name_list_add(&m->labels, label))
        s = vit_error_set(err, VIT_ERR_NOMEM, "out of memory for labels");
    return s;
}

/* Parses one non-blank JSONL line. */
static vit_status jsonl_line(manifest_ctx *m, size_t line, const char *text, size_t len,
                             vit_error *err)
{
    json_error_t jerr;
    /* Duplicate keys are refused, as the other parsers refuse them: which
     * "image" would count is not something a manifest should leave open. */
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!o)
        return vit_error_set(err, VIT_ERR_FORMAT, "%s:%zu: bad JSON: %s", m->file, line,
                             jerr.text);
    vit_status s;
    const char *image = json_string_value(json_object_get(o, "image"));
    const char *label = json_string_value(json_object_get(o, "label"));
    if (!json_is_object(o))
        s = vit_error_set(err, VIT_ERR_FORMAT, "%s:%zu: expected a JSON object", m->file, line);
    else if (!image)
        s = vit_error_set(err, VIT_ERR_FORMAT, "%s:%zu: missing string \"image\"", m->file,
                          line);
    else if (!label)
        s = vit_error_set(err, VIT_ERR_FORMAT, "%s:%zu: missing string \"label\"", m->file,
                          line);
    else
        s = manifest_item(m, line, image, label, err);
    json_decref(o);
    return s;
}

/* Parses one non-blank CSV line (the header was handled by the caller). */
static vit_status csv_line(manifest_ctx *m, size_t line, char *text, int *header_ok,
                           vit_error *err)
{
    char *f[2];
    int nf = 0;
    const char *why = csv_split(text, f, 2, &nf);
    if (why)
        return vit_error_set(err, VIT_ERR_FORMAT, "%s:%zu: %s", m->file, line, why);
    if (nf != 2)
        return vit_error_set(err, VIT_ERR_FORMAT, "%s:%zu: expected 2 columns (image,label), got %d",
                             m->file, line, nf);
    if (*header_ok) {
        *header_ok = 0;
        if (strcmp(f[0], "image") == 0 && strcmp(f[1], "label") == 0)
            return VIT_OK;
    }
    return manifest_item(m, line, f[0], f[1], err);
}

/* Sorted unique labels become the classes; items get their indices. */
static vit_status manifest_classes(manifest_ctx *m, vit_error *err)
{
    ds_dataset *d = m->d;
    size_t n = m->labels.n;
    char **sorted = malloc((n ? n : 1) * sizeof *sorted);
    if (!sorted)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for labels");
    if (n > 0)
        memcpy(sorted, m->labels.v, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < n; i++)
        if (u == 0 || strcmp(sorted[u - 1], sorted[i]) != 0)
            sorted[u++] = sorted[i];
    vit_status s = set_classes(d, (const char *const *)sorted, u, err);
    free(sorted);
    class_entry *index = NULL;
    if (s == VIT_OK)
        s = class_index_build(d, &index, err);
    for (size_t i = 0; s == VIT_OK && i < n; i++) {
        d->labels[i] = class_lookup(index, d->num_classes, m->labels.v[i]);
        VIT_ASSERT(d->labels[i] >= 0);
    }
    free(index);
    return s;
}

/* Reads a JSONL (csv == 0) or CSV manifest from fd (not taken over), named
 * `path` in messages, whose directory is dir_rel under the root. */
static vit_status open_manifest(ds_dataset *d, int fd, const char *path, const char *dir_rel,
                                int csv, const ds_options *opt, vit_error *err)
{
    manifest_ctx m = {.d = d, .file = path, .dir_rel = dir_rel};
    class_entry *index = NULL;
    char *line = NULL;
    size_t line_cap = 0;
    vit_status s = VIT_OK;
    int dfd = dup(fd);
    FILE *f = dfd >= 0 ? fdopen(dfd, "rb") : NULL;
    if (!f) {
        s = vit_error_set(err, VIT_ERR_IO, "cannot read %s: %s", path, strerror(errno));
        if (dfd >= 0)
            close(dfd);
        goto done;
    }
    if (opt->classes) {
        s = use_fixed_classes(d, opt->classes, &index, err);
        if (s != VIT_OK)
            goto done;
        m.index = index;
    }
    int header_ok = 1;
    size_t lineno = 0;
    ssize_t got;
    errno = 0;
    while ((got = getline(&line, &line_cap, f)) >= 0) {
        lineno++;
        size_t len = (size_t)got;
        char *text = line;
        if (lineno == 1 && len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) {
            text += 3; /* UTF-8 byte order mark, as spreadsheets write it */
            len -= 3;
        }
        while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
            text[--len] = '\0';
        if (is_blank(text, len))
            continue;
        if (memchr(text, '\0', len)) {
            s = vit_error_set(err, VIT_ERR_FORMAT, "%s:%zu: NUL byte in line", path, lineno);
            goto done;
        }
        s = csv ? csv_line(&m, lineno, text, &header_ok, err)
                : jsonl_line(&m, lineno, text, len, err);
        if (s != VIT_OK)
            goto done;
    }
    if (ferror(f)) {
        s = vit_error_set(err, errno == ENOMEM ? VIT_ERR_NOMEM : VIT_ERR_IO,
                          "reading %s failed: %s", path, strerror(errno));
        goto done;
    }
    if (d->n == 0) {
        s = vit_error_set(err, VIT_ERR_FORMAT, "manifest %s lists no images", path);
        goto done;
    }
    if (!m.index)
        s = manifest_classes(&m, err);
done:
    if (f)
        fclose(f);
    free(line);
    free(index);
    name_list_free(&m.labels);
    return s;
}

/* ================================================================ IDX */

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Reads exactly n bytes from g into buf; `what` and `offset` (where buf
 * starts in the data) are for messages.  A short read is FORMAT "truncated",
 * a gzip error FORMAT "corrupt". */
static vit_status gz_read_exact(gzFile g, const char *path, const char *what, size_t offset,
                                uint8_t *buf, size_t n, vit_error *err)
{
    size_t done = 0;
    while (done < n) {
        size_t want = n - done > ((size_t)1 << 20) ? (size_t)1 << 20 : n - done;
        int got = gzread(g, buf + done, (unsigned)want);
        if (got < 0) {
            int zerr = 0;
            const char *msg = gzerror(g, &zerr);
            return vit_error_set(err, VIT_ERR_FORMAT, "%s: corrupt %s: %s", path, what,
                                 msg ? msg : "read error");
        }
        if (got == 0)
            return vit_error_set(err, VIT_ERR_FORMAT,
                                 "%s is truncated: its %s ends after %zu bytes, %zu expected",
                                 path, what, offset + done, offset + n);
        done += (size_t)got;
    }
    return VIT_OK;
}

/* Reads an IDX ubyte file from fd (taken over; raw or gzip, told apart by
 * zlib from its magic), named `path` in messages: the magic must be `magic`,
 * which has `ndims` dimensions (1 or 3) written to dims.  The count dims[0]
 * must be 1..max_items and, when expect_n is not 0, equal it; an image plane
 * (dims[1] * dims[2]) is 1..4096^2 bytes.  The payload (product of dims) is
 * read into a malloc'd *data (caller frees).
 * Memory is bounded where the size is first known, at the header: a payload
 * over max_bytes is refused before any buffer exists, for gzip files too,
 * whose decompressed size nothing else bounds (a 2 MB .gz can inflate to
 * GBs).  The buffer then grows with the data actually read, so a header that
 * lies cannot make us allocate much more than the file holds.  Data beyond
 * what the header promises (raw or decompressed) is refused, and so a gzip
 * stream is read to its end, where zlib checks its CRC. */
static vit_status idx_read(int fd, const char *path, uint32_t magic, int ndims,
                           size_t max_items, size_t max_bytes, size_t expect_n, uint32_t dims[3],
                           uint8_t **data, size_t *len, vit_error *err)
{
    *data = NULL;
    *len = 0;
    struct stat st;
    if (fstat(fd, &st) != 0 || lseek(fd, 0, SEEK_SET) != 0) {
        int e = errno;
        close(fd);
        return vit_error_set(err, VIT_ERR_IO, "cannot read %s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return vit_error_set(err, VIT_ERR_IO, "%s is not a regular file", path);
    }
    gzFile g = gzdopen(fd, "rb");
    if (!g) {
        close(fd);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory opening %s", path);
    }
    uint8_t hdr[16], *buf = NULL;
    size_t hlen = 4 + 4 * (size_t)ndims;
    vit_status s = gz_read_exact(g, path, "header", 0, hdr, hlen, err);
    if (s != VIT_OK)
        goto fail;
    uint32_t got = be32(hdr);
    if (got != magic) {
        s = vit_error_set(err, VIT_ERR_FORMAT, "%s: bad IDX magic 0x%08x (expected 0x%08x, %s)",
                          path, got, magic,
                          magic == DS_IDX_IMAGES_MAGIC ? "ubyte images n x rows x cols"
                                                       : "ubyte labels");
        goto fail;
    }
    for (int i = 0; i < ndims; i++)
        dims[i] = be32(hdr + 4 + 4 * i);
    if (dims[0] == 0 || dims[0] > max_items) {
        s = vit_error_set(err, dims[0] ? VIT_ERR_TOO_LARGE : VIT_ERR_FORMAT,
                          "%s: %u items (allowed 1..%zu)", path, dims[0], max_items);
        goto fail;
    }
    if (expect_n && dims[0] != expect_n) {
        s = vit_error_set(err, VIT_ERR_MISMATCH, "%s has %u images but the labels file has %zu",
                          path, dims[0], expect_n);
        goto fail;
    }
    size_t total = dims[0]; /* payload bytes */
    if (ndims == 3) {
        size_t plane;
        if (dims[1] == 0 || dims[2] == 0 || !mul_ok(dims[1], dims[2], &plane) ||
            plane > DS_IDX_MAX_PLANE) {
            s = vit_error_set(err, VIT_ERR_TOO_LARGE,
                              "%s: image size %ux%u is outside 1..4096x4096 pixels", path,
                              dims[1], dims[2]);
            goto fail;
        }
        if (!mul_ok(total, plane, &total)) {
            s = vit_error_set(err, VIT_ERR_TOO_LARGE, "%s: image data size overflows", path);
            goto fail;
        }
    }
    if (total > max_bytes) {
        s = vit_error_set(err, VIT_ERR_TOO_LARGE,
                          "%s: the header promises %zu data bytes, over the limit of %zu "
                          "(max_idx_bytes)",
                          path, total, max_bytes);
        goto fail;
    }
    if (gzdirect(g) && (uint64_t)st.st_size - hlen != (uint64_t)total) {
        long long have = (long long)st.st_size - (long long)hlen;
        s = vit_error_set(err, VIT_ERR_FORMAT,
                          (uint64_t)have < (uint64_t)total
                              ? "%s is truncated: the header promises %zu data bytes, the file "
                                "has %lld"
                              : "%s: the header promises %zu data bytes, the file has %lld",
                          path, total, have);
        goto fail;
    }
    size_t cap = total < ((size_t)1 << 20) ? total : (size_t)1 << 20, have = 0;
    buf = malloc(cap);
    if (!buf) {
        s = vit_error_set(err, VIT_ERR_NOMEM, "out of memory reading %s", path);
        goto fail;
    }
    while (have < total) {
        if (have == cap) {
            size_t ncap = cap <= total / 2 ? cap * 2 : total;
            uint8_t *nb = realloc(buf, ncap);
            if (!nb) {
                s = vit_error_set(err, VIT_ERR_NOMEM, "out of memory reading %zu bytes of %s",
                                  ncap, path);
                goto fail;
            }
            buf = nb;
            cap = ncap;
        }
        s = gz_read_exact(g, path, "data", have, buf + have, cap - have, err);
        if (s != VIT_OK)
            goto fail;
        have = cap;
    }
    uint8_t extra;
    int more = gzread(g, &extra, 1);
    if (more != 0) {
        int zerr = 0;
        const char *msg = more < 0 ? gzerror(g, &zerr) : NULL;
        s = more < 0 ? vit_error_set(err, VIT_ERR_FORMAT, "%s: corrupt data: %s", path,
                                     msg ? msg : "read error")
                     : vit_error_set(err, VIT_ERR_FORMAT,
                                     "%s holds more than the %zu data bytes its header promises",
                                     path, total);
        goto fail;
    }
    gzclose(g);
    *data = buf;
    *len = total;
    return VIT_OK;
fail:
    free(buf);
    gzclose(g);
    return s;
}

/* Opens an IDX pair from the images file (fd, not taken over, named `path`
 * in messages; dir_rel its directory under the root). */
static vit_status open_idx(ds_dataset *d, int fd, const char *path, const char *dir_rel,
                           const ds_options *opt, vit_error *err)
{
    /* The labels file: the last "images-idx3" in the file name becomes
     * "labels-idx1" (same length), in the same directory. */
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *hit = NULL;
    for (const char *p = strstr(base, "images-idx3"); p; p = strstr(p + 1, "images-idx3"))
        hit = p;
    if (!hit)
        return vit_error_set(err, VIT_ERR_INVALID,
                             "cannot find the labels file for %s: an IDX images file name "
                             "must contain 'images-idx3'",
                             path);
    char *lpath = strdup(path);
    if (!lpath)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    memcpy(lpath + (hit - path), "labels-idx1", 11);
    const char *lbase = lpath + (base - path);

    uint8_t *lab = NULL;
    size_t nlab = 0;
    uint32_t ldims[3] = {0}, idims[3] = {0};
    const char *const *names = opt->class_names ? opt->class_names : opt->classes;
    size_t nnames = 0;
    vit_status s = VIT_OK;
    if (names)
        s = fixed_list_count(names, "class names", &nnames, err);
    if (s == VIT_OK) {
        char *lrel = join_rel(dir_rel, lbase), subject[PATH_MAX + 64];
        int lfd = -1;
        struct stat st;
        snprintf(subject, sizeof subject, "labels file %s", lpath);
        s = lrel ? beneath_open(d->root, lrel, BENEATH_WANT_FILE, subject, &lfd, &st, NULL, err)
                 : beneath_error(d->root, BENEATH_NOMEM, 0, BENEATH_WANT_FILE, subject, err);
        free(lrel);
        if (s == VIT_OK) {
            s = idx_read(lfd, lpath, DS_IDX_LABELS_MAGIC, 1, d->max_items, d->max_idx_bytes, 0,
                         ldims, &lab, &nlab, err);
        }
    }
    if (s == VIT_OK) {
        int ifd = dup(fd);
        s = ifd < 0 ? vit_error_set(err, VIT_ERR_IO, "cannot read %s: %s", path, strerror(errno))
                    : idx_read(ifd, path, DS_IDX_IMAGES_MAGIC, 3, d->max_items,
                               d->max_idx_bytes, nlab, idims, &d->grey, &(size_t){0}, err);
    }
    if (s != VIT_OK)
        goto done;
    d->rows = (int)idims[1];
    d->cols = (int)idims[2];

    int max_label = 0;
    for (size_t i = 0; i < nlab; i++) {
        if (names && lab[i] >= nnames) {
            s = vit_error_set(err, VIT_ERR_INVALID,
                              "%s: label %u of item %zu is out of range for %zu class names",
                              lpath, lab[i], i, nnames);
            goto done;
        }
        if (lab[i] > max_label)
            max_label = lab[i];
    }
    if (names) {
        s = set_classes(d, names, nnames, err);
        if (s == VIT_OK) {
            class_entry *index = NULL;
            s = class_index_build(d, &index, err); /* rejects duplicates */
            free(index);
        }
    } else {
        /* Default names "0".."K-1", K = max label + 1 (labels are bytes). */
        char numbers[256][4], *ptrs[256];
        for (int c = 0; c <= max_label; c++) {
            /* %hhu: at most "255", which gcc can see (with "%d" it warns at -O0) */
            snprintf(numbers[c], sizeof numbers[c], "%hhu", (unsigned char)c);
            ptrs[c] = numbers[c];
        }
        s = set_classes(d, (const char *const *)ptrs, (size_t)max_label + 1, err);
    }
    if (s != VIT_OK)
        goto done;

    /* Names "<images file>#<i>" for messages. */
    size_t plen = strlen(path);
    char *name = malloc(plen + 24);
    if (!name) {
        s = vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < nlab && s == VIT_OK; i++) {
        snprintf(name, plen + 24, "%s#%zu", path, i);
        s = add_item(d, name, lab[i], err);
    }
    free(name);
done:
    free(lab);
    free(lpath);
    return s;
}

/* ================================================================ ds_open */

/* Does the file fd (offset at 0) start with the IDX images magic (raw or
 * gzipped)?  Leaves the offset at 0. */
static int sniff_idx_images(int fd)
{
    int dfd = dup(fd);
    gzFile g = dfd >= 0 ? gzdopen(dfd, "rb") : NULL;
    if (!g) {
        if (dfd >= 0)
            close(dfd);
        return 0;
    }
    uint8_t m[4];
    int ok = gzread(g, m, 4) == 4 && be32(m) == DS_IDX_IMAGES_MAGIC;
    gzclose(g);
    return lseek(fd, 0, SEEK_SET) == 0 && ok;
}

/* Sets up d's root for the data set at `path` and opens the data set itself
 * (*fd, *st), with *rel its path relative to the root (malloc'd, "" for the
 * root itself):
 *   - allow_outside_root: the root is "/" (no confinement);
 *   - opt->root: that directory; the data set must be under it, which is
 *     decided by the walk (never "not found" for a path outside);
 *   - neither: the data set confines itself: a directory is its own root, a
 *     manifest or IDX file the directory it sits in.  Its own path is the
 *     caller's and opened as given. */
static vit_status open_root(ds_dataset *d, const char *path, const ds_options *opt, int *fd,
                            struct stat *st, char **rel, vit_error *err)
{
    *fd = -1;
    *rel = NULL;
    vit_status s;
    if (opt->allow_outside_root || opt->root) {
        s = beneath_root_open(opt->allow_outside_root ? "/" : opt->root, DS_ROOT_LABEL, &d->root,
                              err);
        if (s != VIT_OK)
            return s;
        beneath_result r = beneath_relative(d->root, path, rel);
        if (r == BENEATH_OUTSIDE)
            return vit_error_set(err, VIT_ERR_INVALID, "data set %s is outside the data set root",
                                 path);
        if (r != BENEATH_OK)
            return vit_error_set(err, VIT_ERR_NOMEM, "out of memory resolving %s", path);
        char subject[PATH_MAX + 64];
        snprintf(subject, sizeof subject, "data set %s", path);
        return beneath_open(d->root, *rel, BENEATH_WANT_ANY, subject, fd, st, NULL, err);
    }
    *fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (*fd < 0 || fstat(*fd, st) != 0)
        return vit_error_set(err, errno == ENOENT ? VIT_ERR_NOT_FOUND : VIT_ERR_IO,
                             "data set %s: %s", path, strerror(errno));
    if (S_ISDIR(st->st_mode)) {
        s = beneath_root_open(path, DS_ROOT_LABEL, &d->root, err);
        *rel = strdup("");
    } else if (S_ISREG(st->st_mode)) {
        char *dir = dir_of(path);
        s = dir ? beneath_root_open(dir, DS_ROOT_LABEL, &d->root, err)
                : vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
        free(dir);
        const char *slash = strrchr(path, '/');
        *rel = strdup(slash ? slash + 1 : path);
    } else {
        return vit_error_set(err, VIT_ERR_INVALID, "data set %s is not a file or directory",
                             path);
    }
    if (s == VIT_OK && !*rel)
        s = vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    return s;
}

vit_status ds_open(const char *path, const ds_options *opt, ds_dataset **out, vit_error *err)
{
    if (!path || !out)
        return vit_error_set(err, VIT_ERR_INVALID, "ds_open: NULL argument");
    *out = NULL;
    ds_options none = {0};
    if (!opt)
        opt = &none;
    ds_dataset *d = calloc(1, sizeof *d);
    if (!d)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    d->max_image_bytes = opt->max_image_bytes ? opt->max_image_bytes : DS_DEFAULT_MAX_IMAGE_BYTES;
    if (d->max_image_bytes > SIZE_MAX / 4)
        d->max_image_bytes = SIZE_MAX / 4; /* beneath_read_capped adds to it */
    d->max_pixels = opt->max_pixels ? opt->max_pixels : DS_DEFAULT_MAX_PIXELS;
    d->max_items = opt->max_items ? opt->max_items : DS_DEFAULT_MAX_ITEMS;
    d->max_idx_bytes = opt->max_idx_bytes ? opt->max_idx_bytes : DS_DEFAULT_MAX_IDX_BYTES;

    int fd = -1;
    struct stat st;
    char *rel = NULL, *dir_rel = NULL;
    vit_status s = open_root(d, path, opt, &fd, &st, &rel, err);
    if (s != VIT_OK)
        goto done;
    /* item names are beneath_path(root, rel): rel starts after the root's
     * path and one '/' (no '/' is added to the root "/") */
    const char *top = beneath_root_path(d->root);
    d->rel_off = strcmp(top, "/") == 0 ? 1 : strlen(top) + 1;
    if (!S_ISDIR(st.st_mode) && !(dir_rel = dir_of(rel))) {
        s = vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (S_ISDIR(st.st_mode)) {
        d->kind = DS_KIND_FILES;
        s = open_folder(d, path, rel, opt, err);
    } else if (ends_with_ci(path, ".jsonl")) {
        d->kind = DS_KIND_FILES;
        s = open_manifest(d, fd, path, dir_rel, 0, opt, err);
    } else if (ends_with_ci(path, ".csv")) {
        d->kind = DS_KIND_FILES;
        s = open_manifest(d, fd, path, dir_rel, 1, opt, err);
    } else if (strstr(path, "images-idx3") || sniff_idx_images(fd)) {
        d->kind = DS_KIND_IDX;
        s = open_idx(d, fd, path, dir_rel, opt, err);
    } else {
        s = vit_error_set(err, VIT_ERR_UNSUPPORTED,
                          "%s is not a data set: expected a directory (<class>/<image>), a "
                          ".jsonl or .csv manifest, or an IDX images file",
                          path);
    }
done:
    if (fd >= 0)
        close(fd);
    free(rel);
    free(dir_rel);
    if (s != VIT_OK) {
        ds_close(d);
        return s;
    }
    if (d->kind == DS_KIND_IDX) {
        beneath_root_close(d->root); /* IDX pixels are in memory: nothing is opened later */
        d->root = NULL;
    }
    *out = d;
    return VIT_OK;
}

void ds_close(ds_dataset *d)
{
    if (!d)
        return;
    for (int i = 0; i < d->num_classes; i++)
        free(d->classes[i]);
    free(d->classes);
    free(d->pool);
    free(d->name_off);
    free(d->labels);
    free(d->grey);
    beneath_root_close(d->root);
    free(d);
}

size_t ds_size(const ds_dataset *d) { return d ? d->n : 0; }

int ds_num_classes(const ds_dataset *d) { return d ? d->num_classes : 0; }

const char *ds_class_name(const ds_dataset *d, int cls)
{
    if (!d || cls < 0 || cls >= d->num_classes)
        return NULL;
    return d->classes[cls];
}

int ds_label(const ds_dataset *d, size_t i)
{
    if (!d || i >= d->n)
        return -1;
    return d->labels[i];
}

const char *ds_item_name(const ds_dataset *d, size_t i)
{
    if (!d || i >= d->n)
        return NULL;
    return d->pool + d->name_off[i];
}

/* Opens image file `name` beneath d's root again (the walk of ds_open, so a
 * file swapped for a symlink or a FIFO since then is refused, not followed),
 * reads at most max_image_bytes of it and decodes it. */
static vit_status load_file(const ds_dataset *d, const char *name, img_image *out,
                            vit_error *err)
{
    int fd;
    struct stat st;
    char subject[PATH_MAX + 64];
    snprintf(subject, sizeof subject, "image %s", name);
    vit_status s =
        beneath_open(d->root, name + d->rel_off, BENEATH_WANT_FILE, subject, &fd, &st, NULL, err);
    if (s != VIT_OK)
        return s;
    if ((uint64_t)st.st_size > d->max_image_bytes) {
        close(fd);
        return vit_error_set(err, VIT_ERR_TOO_LARGE, "%s is %lld bytes, over the limit of %zu",
                             name, (long long)st.st_size, d->max_image_bytes);
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    s = beneath_read_capped(fd, (size_t)st.st_size, d->max_image_bytes, name, &buf, &len, err);
    close(fd);
    if (s != VIT_OK)
        return s;
    s = img_decode(buf, len, d->max_pixels, out, err);
    free(buf);
    if (s != VIT_OK)
        return vit_error_prefix(err, "%s", name);
    return VIT_OK;
}

vit_status ds_load_image(const ds_dataset *d, size_t i, img_image *out, vit_error *err)
{
    if (!d || !out)
        return vit_error_set(err, VIT_ERR_INVALID, "ds_load_image: NULL argument");
    out->width = out->height = 0;
    out->pixels = NULL;
    if (i >= d->n)
        return vit_error_set(err, VIT_ERR_INVALID, "item %zu is out of range (%zu items)", i,
                             d->n);
    if (d->kind == DS_KIND_FILES)
        return load_file(d, d->pool + d->name_off[i], out, err);
    /* IDX: grey plane replicated to RGB (sizes were bounded at open). */
    size_t plane = (size_t)d->rows * (size_t)d->cols;
    uint8_t *px = malloc(plane * 3);
    if (!px)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for item %zu", i);
    const uint8_t *g = d->grey + i * plane;
    for (size_t k = 0; k < plane; k++)
        px[3 * k] = px[3 * k + 1] = px[3 * k + 2] = g[k];
    out->width = d->cols;
    out->height = d->rows;
    out->pixels = px;
    return VIT_OK;
}

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

/* torchvision RandomResizedCrop.get_params with scale (0.08, 1) and ratio
 * (3/4, 4/3) (ref: torchvision/transforms/transforms.py): 10 tries of a
 * random area fraction and a log-uniform aspect ratio; else a center crop
 * with the ratio clamped.  Python's round() is half-to-even, as rint is. */
static void rrc_params(ds_rng *r, int width, int height, int *top, int *left, int *h, int *w)
{
    const double smin = 0.08, smax = 1.0, rmin = 3.0 / 4.0, rmax = 4.0 / 3.0;
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
 * RandomResizedCrop(crop size, pp->interp) -> RandomHorizontalFlip(0.5) ->
 * ToTensor -> Normalize(pp->mean, pp->std), all randomness from r. */
static vit_status augment_image(const img_image *img, const img_preprocess *pp, ds_rng *r,
                                float *out, vit_error *err)
{
    int top, left, h, w;
    rrc_params(r, img->width, img->height, &top, &left, &h, &w);
    int flip = rng_uniform(r) < 0.5;

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

/* Decodes + transforms dataset item idx for `epoch` into out. */
static vit_status load_item(const ds_loader *l, size_t idx, int epoch, float *out,
                            vit_error *err)
{
    img_image img;
    vit_status s = ds_load_image(l->d, idx, &img, err);
    if (s != VIT_OK)
        return s;
    if (l->o.augment) {
        ds_rng r = rng_for(l->o.seed, (uint64_t)epoch + 1, (uint64_t)idx);
        s = augment_image(&img, &l->o.preprocess, &r, out, err);
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
        vit_status s = load_item(l, idx, epoch, slot->data, &e);
        slot->index = idx;
        slot->status = s;
        if (s != VIT_OK) {
            const char *name = ds_item_name(l->d, idx);
            if (!strstr(e.message, name))
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

    ds_loader *l = calloc(1, sizeof *l);
    if (!l)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    l->d = d;
    l->o = *o;
    l->count = o->limit && o->limit < d->n ? o->limit : d->n; /* >= 1: ds_open refuses empty sets */
    l->item_floats = (size_t)3 * (size_t)pp->crop_h * (size_t)pp->crop_w;
    l->nslots = (size_t)o->prefetch * (size_t)o->batch_size;
    size_t total, order_bytes;
    if (!mul_ok(l->nslots, l->item_floats, &total) || !mul_ok(total, sizeof(float), &total) ||
        !mul_ok(l->count, sizeof *l->order, &order_bytes)) {
        free(l);
        return vit_error_set(err, VIT_ERR_TOO_LARGE, "prefetch buffers overflow");
    }
    l->slots = calloc(l->nslots, sizeof *l->slots);
    l->slot_data = malloc(total);
    l->order = malloc(order_bytes);
    l->threads = calloc((size_t)o->threads, sizeof *l->threads);
    if (!l->slots || !l->slot_data || !l->order || !l->threads) {
        size_t nslots = l->nslots, floats = l->item_floats;
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
    free(l->threads);
    free(l);
}

vit_status ds_loader_start_epoch(ds_loader *l, int epoch, vit_error *err)
{
    if (!l)
        return vit_error_set(err, VIT_ERR_INVALID, "ds_loader_start_epoch: NULL loader");
    if (epoch < 0)
        return vit_error_set(err, VIT_ERR_INVALID, "epoch %d is negative", epoch);
    pthread_mutex_lock(&l->mu);
    /* Stop claims and let in-flight items land before the ring is reused. */
    l->active = 0;
    while (l->in_flight > 0)
        pthread_cond_wait(&l->done_cv, &l->mu);
    size_t n = l->count;
    for (size_t i = 0; i < n; i++)
        l->order[i] = i;
    if (l->o.shuffle && n > 1) { /* Fisher-Yates, seeded by (seed, epoch) */
        ds_rng r = rng_for(l->o.seed, 0x5348554646ull /* "SHUFF" */, (uint64_t)epoch);
        for (size_t i = n - 1; i > 0; i--) {
            size_t j = (size_t)rng_below(&r, (uint64_t)i + 1);
            size_t t = l->order[i];
            l->order[i] = l->order[j];
            l->order[j] = t;
        }
    }
    for (size_t i = 0; i < l->nslots; i++)
        l->slots[i].done = 0;
    l->epoch = epoch;
    l->claim = l->consumed = 0;
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
        } else if (l->o.on_bad == DS_BAD_SKIP && slot->status != VIT_ERR_NOMEM) {
            if (l->o.on_bad_fn)
                l->o.on_bad_fn(l->o.on_bad_ctx, ds_item_name(l->d, slot->index), slot->message);
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
