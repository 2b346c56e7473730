/*
 * dataset.c - the data set itself: the builder every source fills (item
 * list, classes), ImageFolder directories, ds_open and the accessors,
 * ds_load_image (see dataset.h for the contract).  Manifests are read by
 * dataset_manifest.c, IDX pairs by dataset_idx.c, batches made by
 * dataset_loader.c.
 *
 * Design
 *   - ds_open reads the whole item list up front.  An image file item is a
 *     name (its symlink-free path below the root) and a class index; names
 *     live in one string pool (offsets, so the pool may grow while it is
 *     built), bounded in all by DS_NAMES_START.  An IDX item is a label byte
 *     and its pixels, decoded into memory once; its name "<idx file>#<i>" is
 *     made when asked.  Class names are separate strings.  Image files are
 *     decoded on demand by ds_load_image.  A dataset is
 *     immutable after ds_open, so loader threads read it without locks.
 *   - Paths from manifests and folders are untrusted: every file is opened
 *     beneath the data set root with beneath_open (beneath.h: a walk from a
 *     descriptor of the root that never looks outside it), at ds_open and
 *     again when an image is read.  Items keep their symlink-free path under
 *     the root.
 *   - A manifest's URL entries are items only when the caller gave a fetch
 *     hook (ds_options.fetch; refused otherwise): their name is the URL, a
 *     byte per item (is_url, made when the first one is added) tells them
 *     apart, and ds_load_image asks the hook for their bytes -- the engine
 *     opens no socket.
 */
#include "dataset.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "beneath.h"
#include "sha256.h"
#include "vit.h"
#include "dataset_impl.h"

#define DS_DEFAULT_MAX_IMAGE_BYTES ((size_t)64 << 20)
#define DS_DEFAULT_MAX_PIXELS ((size_t)50000000)
#define DS_DEFAULT_MAX_ITEMS ((size_t)10000000)
/* Decoded IDX payload per file.  Real IDX sets are tens of MB (Fashion-MNIST
 * and MNIST train images: 47 MB; EMNIST letters: 98 MB), while gzip inflates
 * zeros ~1000-fold, so the old 1 GiB let a 1 MB .gz take 1.1 GB of memory.
 * 128 MiB holds those sets with room to spare and keeps the worst 128 KB .gz
 * at 128 MiB; bigger sets (EMNIST byclass, 547 MB) set max_idx_bytes. */
#define DS_DEFAULT_MAX_IDX_BYTES ((size_t)128 << 20)

/* Names the data set root in beneath_* messages ("... is outside the data set root"). */
#define DS_ROOT_LABEL "data set root"

/* ================================================================ helpers */

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

char *ds_join_rel(const char *a, const char *b)
{
    return a[0] ? beneath_join(a, b) : strdup(b);
}

/* ================================================================ builder */

size_t ds_names_limit(size_t items)
{
    size_t allowed;
    if (!ds_mul_ok(items, DS_NAME_PER_ITEM, &allowed) || allowed > SIZE_MAX - DS_NAMES_START)
        return SIZE_MAX; /* more than memory can hold anyway */
    return DS_NAMES_START + allowed;
}

/* ds_add_item and ds_add_url_item: is_url marks the item a URL. */
static vit_status add_item(ds_dataset *d, const char *name, int label, int is_url,
                           vit_error *err)
{
    if (d->n >= d->max_items)
        return vit_error_set(err, VIT_ERR_TOO_LARGE, "data set has more than %zu items",
                             d->max_items);
    size_t len = strlen(name) + 1;
    if (len > SIZE_MAX - d->pool_len)
        return vit_error_set(err, VIT_ERR_NOMEM, "name pool overflows");
    if (d->pool_len + len > ds_names_limit(d->n + 1))
        return vit_error_set(err, VIT_ERR_TOO_LARGE,
                             "the paths of %zu items take %zu bytes, over the limit of %zu "
                             "(1 MiB + %d bytes a path; symbolic links to deep directories?)",
                             d->n + 1, d->pool_len + len, ds_names_limit(d->n + 1),
                             DS_NAME_PER_ITEM);
    if (d->n == d->cap) {
        size_t ncap = d->cap ? d->cap * 2 : 256, b1, b2;
        if (!ds_mul_ok(ncap, sizeof *d->name_off, &b1) || !ds_mul_ok(ncap, sizeof *d->labels, &b2))
            return vit_error_set(err, VIT_ERR_NOMEM, "item list overflows");
        size_t *no = realloc(d->name_off, b1);
        if (!no)
            return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for the item list");
        d->name_off = no;
        int *nl = realloc(d->labels, b2);
        if (!nl)
            return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for the item list");
        d->labels = nl;
        if (d->is_url) {
            uint8_t *nu = realloc(d->is_url, ncap);
            if (!nu)
                return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for the item list");
            memset(nu + d->cap, 0, ncap - d->cap);
            d->is_url = nu;
        }
        d->cap = ncap;
    }
    if (is_url && !d->is_url && !(d->is_url = calloc(d->cap, 1)))
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for the item list");
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
    if (d->is_url)
        d->is_url[d->n] = (uint8_t)(is_url != 0);
    d->pool_len += len;
    d->n++;
    return VIT_OK;
}

vit_status ds_add_item(ds_dataset *d, const char *name, int label, vit_error *err)
{
    return add_item(d, name, label, 0, err);
}

vit_status ds_add_url_item(ds_dataset *d, const char *url, int label, vit_error *err)
{
    return add_item(d, url, label, 1, err);
}

/* Why `name` cannot be a class name (dataset.h), or NULL when it can: the
 * rules of every other label (vit_label_problem), so a name that passes is
 * a JSON string and safe on a terminal. */
static const char *class_name_problem(const char *name)
{
    size_t n = strlen(name), at;
    if (n == 0)
        return "is empty";
    if (n > DS_MAX_CLASS_NAME)
        return "is too long";
    const char *problem = vit_label_problem(name, n, &at);
    if (!problem)
        return NULL;
    return strcmp(problem, "invalid UTF-8") == 0 ? "is not valid UTF-8"
                                                 : "contains a control character";
}

/* Copies name into buf (cap >= 8) for a message: printable ASCII as is,
 * every other byte as \xNN, cut with "..." when long. */
static void show_name(char *buf, size_t cap, const char *name)
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        char piece[8];
        int len = *p >= 0x20 && *p < 0x7f && *p != '\\'
                      ? snprintf(piece, sizeof piece, "%c", *p)
                      : snprintf(piece, sizeof piece, "\\x%02x", *p);
        if (o + (size_t)len + 4 > cap) {
            memcpy(buf + o, "...", 4);
            return;
        }
        memcpy(buf + o, piece, (size_t)len);
        o += (size_t)len;
    }
    buf[o] = '\0';
}

vit_status ds_check_class_name(const char *name, const char *what, vit_error *err)
{
    const char *why = class_name_problem(name);
    if (!why)
        return VIT_OK;
    char shown[96];
    show_name(shown, sizeof shown, name);
    return vit_error_set(err, VIT_ERR_INVALID,
                         "%s '%s' %s: a class name must be UTF-8 text of 1 to %d bytes without "
                         "control characters (it becomes a task label and a JSON key)",
                         what, shown, why, DS_MAX_CLASS_NAME);
}

vit_status ds_set_classes(ds_dataset *d, const char *const *names, size_t n, const char *what,
                          vit_error *err)
{
    if (n > DS_MAX_CLASSES)
        return vit_error_set(err, VIT_ERR_TOO_LARGE, "%zu classes, over the limit of %d", n,
                             DS_MAX_CLASSES);
    /* Checked here, where every source's names pass, so that no class name
     * can fail later: at the end of a training run (task_save refuses such a
     * label) or silently (a JSON report or config.json dropping it). */
    for (size_t i = 0; i < n; i++) {
        vit_status s = ds_check_class_name(names[i], what, err);
        if (s != VIT_OK)
            return s;
    }
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

/* By name, then by class index, so the entries of a repeated name are
 * adjacent and in class order. */
static int cmp_class_entry(const void *a, const void *b)
{
    const ds_class_entry *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->index > y->index) - (x->index < y->index);
}

vit_status ds_class_index_build(const ds_dataset *d, ds_class_entry **out, vit_error *err)
{
    size_t n = (size_t)d->num_classes;
    ds_class_entry *t = calloc(n ? n : 1, sizeof *t);
    if (!t)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for the class index");
    for (size_t i = 0; i < n; i++) {
        t[i].name = d->classes[i];
        t[i].index = (int)i;
    }
    qsort(t, n, sizeof *t, cmp_class_entry);
    *out = t;
    return VIT_OK;
}

int ds_class_lookup(const ds_class_entry *t, int n, const char *name)
{
    int lo = 0, hi = n; /* the first entry whose name is >= name */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (strcmp(t[mid].name, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == n || strcmp(t[lo].name, name) != 0)
        return DS_CLASS_UNKNOWN;
    if (lo + 1 < n && strcmp(t[lo + 1].name, name) == 0)
        return DS_CLASS_AMBIGUOUS;
    return t[lo].index;
}

vit_status ds_fixed_list_count(const char *const *names, const char *what, size_t *n,
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

vit_status ds_use_fixed_classes(ds_dataset *d, const char *const *classes,
                                ds_class_entry **index, vit_error *err)
{
    size_t n = 0;
    vit_status s = ds_fixed_list_count(classes, "class list", &n, err);
    if (s == VIT_OK)
        s = ds_set_classes(d, classes, n, "class list: name", err);
    if (s == VIT_OK)
        s = ds_class_index_build(d, index, err);
    return s;
}

/* ================================================================ ImageFolder */

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
        dir_entry *nv = ds_mul_ok(ncap, sizeof *l->v, &bytes) ? realloc(l->v, bytes) : NULL;
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
 * counts the remaining non-hidden entries.  `cap` bounds the entries kept,
 * and their symlink-free paths are bounded in bytes as d's item names will
 * be (ds_names_limit, counting d's items so far): a directory of a million
 * links to one deep directory must not hold a million 4 KB paths. */
static vit_status list_dir(ds_dataset *d, const char *dir_rel, const char *shown, int want_dirs,
                           size_t cap, entry_list *out, size_t *other, vit_error *err)
{
    const beneath_root *root = d->root;
    beneath_budget *budget = &d->walks;
    size_t held = 0; /* bytes of the canon paths in out */
    *other = 0;
    int fd, eno;
    struct stat st;
    char subject[PATH_MAX + 64];
    snprintf(subject, sizeof subject, "directory %s", shown);
    vit_status s =
        beneath_open(root, dir_rel, BENEATH_WANT_DIR, budget, subject, &fd, &st, NULL, err);
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
        char *rel = ds_join_rel(dir_rel, e->d_name), *canon = NULL;
        if (!rel) {
            s = vit_error_set(err, VIT_ERR_NOMEM, "out of memory listing %s", shown);
            break;
        }
        int efd;
        beneath_result b =
            beneath_walk(root, rel, BENEATH_WANT_ANY, budget, &efd, &st, &canon, &eno);
        free(rel);
        if (efd >= 0)
            close(efd);
        if (b == BENEATH_OUTSIDE || b == BENEATH_NOMEM || b == BENEATH_BUDGET ||
            b == BENEATH_LINK_BUDGET) {
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
        held += strlen(canon) + 1;
        size_t limit = ds_names_limit(d->n + out->n + 1);
        if (d->pool_len + held > limit) {
            free(canon);
            s = vit_error_set(err, VIT_ERR_TOO_LARGE,
                              "the paths of the %zu entries of %s take %zu bytes, over the limit "
                              "of %zu (1 MiB + %d bytes a path; symbolic links to deep "
                              "directories?)",
                              out->n + 1, shown, d->pool_len + held, limit, DS_NAME_PER_ITEM);
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
    ds_class_entry *index = NULL;
    char *cdir = NULL;
    size_t other = 0;
    /* every class directory must hold an image: no more classes than items */
    size_t max_classes = d->max_items < DS_MAX_CLASSES ? d->max_items : DS_MAX_CLASSES;
    vit_status s = list_dir(d, folder_rel, path, 1, max_classes, &cls, &other, err);
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
        s = ds_use_fixed_classes(d, opt->classes, &index, err);
    } else {
        char **names = malloc(cls.n * sizeof *names);
        if (!names) {
            s = vit_error_set(err, VIT_ERR_NOMEM, "out of memory for class names");
            goto done;
        }
        for (size_t c = 0; c < cls.n; c++)
            names[c] = cls.v[c].name;
        char what[PATH_MAX + 32];
        snprintf(what, sizeof what, "%s: class directory", path);
        s = ds_set_classes(d, (const char *const *)names, cls.n, what, err);
        free(names);
    }
    if (s != VIT_OK)
        goto done;

    for (size_t c = 0; c < cls.n; c++) {
        int label = (int)c;
        if (index) {
            label = ds_class_lookup(index, d->num_classes, cls.v[c].name);
            if (label == DS_CLASS_UNKNOWN) {
                s = vit_error_set(err, VIT_ERR_INVALID,
                                  "%s: unknown label '%.200s' (class directory not in the "
                                  "class list)",
                                  path, cls.v[c].name);
                goto done;
            }
            if (label == DS_CLASS_AMBIGUOUS) {
                s = vit_error_set(err, VIT_ERR_INVALID,
                                  "%s: class directory '%.200s' is ambiguous: the class list "
                                  "names it twice",
                                  path, cls.v[c].name);
                goto done;
            }
        }
        free(cdir);
        if (!(cdir = beneath_join(path, cls.v[c].name))) {
            s = vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
            goto done;
        }
        entry_list_free(&files);
        s = list_dir(d, cls.v[c].canon, cdir, 0, d->max_items, &files, &other, err);
        if (s != VIT_OK)
            goto done;
        if (files.n == 0) {
            s = vit_error_set(err, VIT_ERR_FORMAT,
                              "class directory %s has no images (.jpg, .jpeg, .png, .bmp)",
                              cdir);
            goto done;
        }
        for (size_t i = 0; i < files.n; i++) {
            s = ds_add_item(d, files.v[i].canon, label, err);
            if (s != VIT_OK)
                goto done;
        }
    }
done:
    free(cdir);
    free(index);
    entry_list_free(&cls);
    entry_list_free(&files);
    return s;
}

/* ================================================================ ds_open */

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
        return beneath_open(d->root, *rel, BENEATH_WANT_ANY, &d->walks, subject, fd, st, NULL,
                            err);
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

/* The source a data set at path is, given whether path is a directory: the
 * one rule ds_open and ds_source_of share. */
static ds_source source_kind(const char *path, int is_dir)
{
    if (is_dir)
        return DS_SOURCE_FOLDER;
    if (ends_with_ci(path, ".jsonl") || ends_with_ci(path, ".csv"))
        return DS_SOURCE_MANIFEST;
    return DS_SOURCE_OTHER;
}

ds_source ds_source_of(const char *path)
{
    struct stat st;
    if (!path || stat(path, &st) != 0)
        return DS_SOURCE_NONE;
    return source_kind(path, S_ISDIR(st.st_mode));
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
    d->fetch = opt->fetch;
    d->fetch_ctx = opt->fetch_ctx;
    d->walks = (beneath_budget){.credit = DS_WALK_START,
                                .per_walk = DS_WALK_PER_ITEM,
                                .link_credit = DS_LINK_START,
                                .links_per_walk = DS_LINK_PER_ITEM};

    int fd = -1;
    struct stat st;
    char *rel = NULL, *dir_rel = NULL;
    vit_status s = open_root(d, path, opt, &fd, &st, &rel, err);
    if (s != VIT_OK)
        goto done;
    if (!S_ISDIR(st.st_mode) && !(dir_rel = dir_of(rel))) {
        s = vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
        goto done;
    }
    ds_source source = source_kind(path, S_ISDIR(st.st_mode));
    if (opt->class_names && source != DS_SOURCE_OTHER) {
        /* a folder's or manifest's classes are named already: names for
         * label numbers would be ignored, silently */
        s = vit_error_set(err, VIT_ERR_INVALID,
                          "class names name the label numbers of an IDX set; %s is %s, whose "
                          "classes are its %s",
                          path,
                          source == DS_SOURCE_FOLDER ? "an ImageFolder directory" : "a manifest",
                          source == DS_SOURCE_FOLDER ? "folder names" : "labels");
        goto done;
    }
    if (source == DS_SOURCE_FOLDER) {
        d->kind = DS_KIND_FILES;
        s = open_folder(d, path, rel, opt, err);
    } else if (source == DS_SOURCE_MANIFEST) {
        d->kind = DS_KIND_FILES;
        s = ds_open_manifest(d, fd, path, dir_rel, ends_with_ci(path, ".csv"), opt, err);
    } else if (strstr(path, "images-idx3") || ds_sniff_idx_images(fd)) {
        d->kind = DS_KIND_IDX;
        s = ds_open_idx(d, fd, st.st_size, path, dir_rel, opt, err);
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
    if (opt->walk_stats)
        *opt->walk_stats = d->walks.used;
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
    free(d->is_url);
    free(d->idx_path);
    free(d->idx_labels);
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
    return d->kind == DS_KIND_IDX ? d->idx_labels[i] : d->labels[i];
}

const char *ds_item_name(const ds_dataset *d, size_t i, char *buf, size_t cap)
{
    if (!d || i >= d->n || !buf || cap == 0)
        return NULL;
    if (d->kind == DS_KIND_IDX) {
        snprintf(buf, cap, "%s#%zu", d->idx_path, i);
    } else if (ds_item_is_url(d, i)) {
        snprintf(buf, cap, "%s", d->pool + d->name_off[i]);
    } else {
        const char *top = beneath_root_path(d->root);
        snprintf(buf, cap, "%s%s%s", top, strcmp(top, "/") == 0 ? "" : "/",
                 d->pool + d->name_off[i]);
    }
    return buf;
}

/* Feeds a 64-bit value, little-endian, to c (the same bytes on every host). */
static void fp_u64(sha256_ctx *c, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    sha256_update(c, b, sizeof b);
}

void ds_fingerprint(const ds_dataset *d, size_t limit, char hex[65])
{
    VIT_ASSERT(d && hex);
    size_t n = limit && limit < d->n ? limit : d->n;
    sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, "vitfit-dataset-v1", 18);
    fp_u64(&c, (uint64_t)d->kind);
    fp_u64(&c, (uint64_t)d->num_classes);
    for (int k = 0; k < d->num_classes; k++)
        sha256_update(&c, d->classes[k], strlen(d->classes[k]) + 1);
    fp_u64(&c, (uint64_t)n);
    if (d->kind == DS_KIND_IDX) {
        fp_u64(&c, (uint64_t)d->rows);
        fp_u64(&c, (uint64_t)d->cols);
        sha256_update(&c, d->idx_labels, n);
        sha256_update(&c, d->grey, n * (size_t)d->rows * (size_t)d->cols);
    } else {
        for (size_t i = 0; i < n; i++) {
            const char *name = d->pool + d->name_off[i];
            fp_u64(&c, (uint64_t)d->labels[i]);
            if (ds_item_is_url(d, i)) /* a mark no path below the root can begin with */
                sha256_update(&c, "\x01url:", 5);
            sha256_update(&c, name, strlen(name) + 1);
        }
    }
    uint8_t digest[SHA256_DIGEST_LEN];
    sha256_final(&c, digest);
    sha256_hex(digest, hex);
}

size_t ds_memory(const ds_dataset *d)
{
    if (!d)
        return 0;
    size_t bytes = d->pool_cap + d->cap * (sizeof *d->name_off + sizeof *d->labels) +
                   (d->is_url ? d->cap : 0);
    if (d->kind == DS_KIND_IDX)
        bytes += strlen(d->idx_path) + 1 + d->n + d->n * (size_t)d->rows * (size_t)d->cols;
    for (int c = 0; c < d->num_classes; c++)
        bytes += sizeof *d->classes + strlen(d->classes[c]) + 1;
    return bytes;
}

/* Opens item i's image file beneath d's root again (the walk of ds_open, so
 * a file swapped for a symlink or a FIFO since then is refused, not
 * followed), reads at most max_image_bytes of it and decodes it. */
static vit_status load_file(const ds_dataset *d, size_t i, img_image *out, vit_error *err)
{
    int fd;
    struct stat st;
    char name[DS_ITEM_NAME_MAX], subject[DS_ITEM_NAME_MAX + 8];
    ds_item_name(d, i, name, sizeof name);
    snprintf(subject, sizeof subject, "image %s", name);
    /* no shared budget: loader threads call this at once (the per-walk bound holds) */
    vit_status s = beneath_open(d->root, d->pool + d->name_off[i], BENEATH_WANT_FILE, NULL,
                                subject, &fd, &st, NULL, err);
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

/* Copies a URL into buf (cap >= 8) for a message, cut with "..." past
 * DS_URL_SHOWN bytes: a message holds 512 and must keep room for why. */
#define DS_URL_SHOWN 160
static const char *show_url(char *buf, size_t cap, const char *url)
{
    size_t n = strlen(url), lim = cap - 4 < DS_URL_SHOWN ? cap - 4 : DS_URL_SHOWN;
    if (n <= lim) {
        memcpy(buf, url, n + 1);
    } else {
        memcpy(buf, url, lim);
        memcpy(buf + lim, "...", 4);
    }
    return buf;
}

/* Fetches URL item i through d->fetch (no more than max_image_bytes) and
 * decodes it; messages start with the URL (cut to DS_URL_SHOWN bytes). */
static vit_status load_url(const ds_dataset *d, size_t i, img_image *out, bool *stopped,
                           vit_error *err)
{
    VIT_ASSERT(d->fetch); /* URL items are only made with a hook */
    const char *url = d->pool + d->name_off[i];
    char shown[DS_URL_SHOWN + 4];
    show_url(shown, sizeof shown, url);
    uint8_t *buf = NULL;
    size_t len = 0;
    vit_error e = {0};
    vit_status s = d->fetch(d->fetch_ctx, url, d->max_image_bytes, &buf, &len, stopped, &e);
    if (s != VIT_OK) {
        free(buf); /* the contract says NULL; a hook that left bytes must not leak them */
        if (e.code == VIT_OK || e.message[0] == '\0') /* a hook that said nothing */
            vit_error_set(&e, s, "the fetch failed (%s)", vit_status_name(s));
        return vit_error_set(err, s, "%s: %s", shown, e.message);
    }
    if (!buf) /* a hook that broke its contract: no bytes is no image */
        return vit_error_set(err, VIT_ERR_IO, "%s: the fetch gave no data", shown);
    if (len > d->max_image_bytes) {
        free(buf);
        return vit_error_set(err, VIT_ERR_TOO_LARGE, "%s is %zu bytes, over the limit of %zu",
                             shown, len, d->max_image_bytes);
    }
    s = img_decode(buf, len, d->max_pixels, out, err);
    free(buf);
    if (s != VIT_OK)
        return vit_error_prefix(err, "%s", shown);
    return VIT_OK;
}

vit_status ds_load_image(const ds_dataset *d, size_t i, img_image *out, vit_error *err)
{
    bool stopped = false;
    return ds_load_item(d, i, out, &stopped, err);
}

vit_status ds_load_item(const ds_dataset *d, size_t i, img_image *out, bool *stopped,
                        vit_error *err)
{
    *stopped = false;
    if (!d || !out)
        return vit_error_set(err, VIT_ERR_INVALID, "ds_load_image: NULL argument");
    out->width = out->height = 0;
    out->pixels = NULL;
    if (i >= d->n)
        return vit_error_set(err, VIT_ERR_INVALID, "item %zu is out of range (%zu items)", i,
                             d->n);
    if (ds_item_is_url(d, i)) {
        vit_status s = load_url(d, i, out, stopped, err);
        if (s == VIT_OK)
            *stopped = false; /* only a failure can be a stop */
        return s;
    }
    if (d->kind == DS_KIND_FILES)
        return load_file(d, i, out, err);
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
