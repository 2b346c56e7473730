/*
 * dataset_idx.c - data sets in IDX files, as Debian's dataset-fashion-mnist
 * ships them: an images file (*-images-idx3-ubyte, raw or gzipped) and the
 * labels file next to it (see dataset.h).
 *
 * Design
 *   - Both files are read whole at ds_open; the pixels and label bytes stay
 *     in memory (ds_dataset.grey, idx_labels) and are all that is kept per
 *     item, so nothing is opened later and memory is what the files hold.  The labels file is
 *     opened beneath the data set root (beneath_open): a symlink leading out
 *     is refused like any other.
 *   - Sizes are bounded from the header, before any buffer exists (a small
 *     .gz can inflate to GBs), and what is read must be exactly what the
 *     header promises.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "beneath.h"
#include "dataset_impl.h"

#define DS_IDX_MAX_PLANE ((size_t)4096 * 4096) /* rows * cols of one IDX image */
#define DS_IDX_IMAGES_MAGIC 0x00000803u /* ubyte, 3 dims: n, rows, cols */
#define DS_IDX_LABELS_MAGIC 0x00000801u /* ubyte, 1 dim: n */

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

/* Reads an IDX ubyte file from fd (taken over; a regular file of `size`
 * bytes, as its opener checked; raw or gzip, told apart by
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
static vit_status idx_read(int fd, off_t size, const char *path, uint32_t magic, int ndims,
                           size_t max_items, size_t max_bytes, size_t expect_n, uint32_t dims[3],
                           uint8_t **data, size_t *len, vit_error *err)
{
    *data = NULL;
    *len = 0;
    if (lseek(fd, 0, SEEK_SET) != 0) {
        int e = errno;
        close(fd);
        return vit_error_set(err, VIT_ERR_IO, "cannot read %s: %s", path, strerror(e));
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
        if (dims[1] == 0 || dims[2] == 0 || !ds_mul_ok(dims[1], dims[2], &plane) ||
            plane > DS_IDX_MAX_PLANE) {
            s = vit_error_set(err, VIT_ERR_TOO_LARGE,
                              "%s: image size %ux%u is outside 1..4096x4096 pixels", path,
                              dims[1], dims[2]);
            goto fail;
        }
        if (!ds_mul_ok(total, plane, &total)) {
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
    if (gzdirect(g) && (uint64_t)size - hlen != (uint64_t)total) {
        long long have = (long long)size - (long long)hlen;
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

vit_status ds_open_idx(ds_dataset *d, int fd, off_t size, const char *path, const char *dir_rel,
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
        s = ds_fixed_list_count(names, "class names", &nnames, err);
    if (s == VIT_OK) {
        char *lrel = ds_join_rel(dir_rel, lbase), subject[PATH_MAX + 64];
        int lfd = -1;
        struct stat st;
        snprintf(subject, sizeof subject, "labels file %s", lpath);
        s = lrel ? beneath_open(d->root, lrel, BENEATH_WANT_FILE, &d->walks, subject, &lfd, &st,
                                NULL, err)
                 : beneath_error(d->root, BENEATH_NOMEM, 0, BENEATH_WANT_FILE, subject, err);
        free(lrel);
        if (s == VIT_OK) {
            s = idx_read(lfd, st.st_size, lpath, DS_IDX_LABELS_MAGIC, 1, d->max_items,
                         d->max_idx_bytes, 0, ldims, &lab, &nlab, err);
        }
    }
    if (s == VIT_OK) {
        int ifd = dup(fd);
        s = ifd < 0 ? vit_error_set(err, VIT_ERR_IO, "cannot read %s: %s", path, strerror(errno))
                    : idx_read(ifd, size, path, DS_IDX_IMAGES_MAGIC, 3, d->max_items,
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
        /* names go by position, so a repeated one (a model's labels may
         * repeat) is no ambiguity here */
        s = ds_set_classes(d, names, nnames,
                           opt->class_names ? "class names: name" : "class list: name", err);
    } else {
        /* Default names "0".."K-1", K = max label + 1 (labels are bytes). */
        char numbers[256][4], *ptrs[256];
        for (int c = 0; c <= max_label; c++) {
            /* %hhu: at most "255", which gcc can see (with "%d" it warns at -O0) */
            snprintf(numbers[c], sizeof numbers[c], "%hhu", (unsigned char)c);
            ptrs[c] = numbers[c];
        }
        s = ds_set_classes(d, (const char *const *)ptrs, (size_t)max_label + 1, "label", err);
    }
    if (s != VIT_OK)
        goto done;

    /* The label bytes are the items: nothing else is kept per item (names
     * are made by ds_item_name from idx_path). */
    if (!(d->idx_path = strdup(path))) {
        s = vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
        goto done;
    }
    d->idx_labels = lab;
    lab = NULL;
    d->n = nlab;
done:
    free(lab);
    free(lpath);
    return s;
}

int ds_sniff_idx_images(int fd)
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
