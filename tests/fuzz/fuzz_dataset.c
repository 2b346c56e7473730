/*
 * fuzz_dataset.c - libFuzzer target for data set parsing (manifests, IDX,
 * paths beneath the root).
 *
 * The first input byte, mod 6, picks what the rest becomes, in a fresh temp
 * directory that is also the data set root (which holds one
 * valid 2x2 BMP, "a.bmp", so manifests can name a real image):
 *   0: a JSONL manifest m.jsonl;
 *   1: a CSV manifest m.csv;
 *   2: an IDX pair: bytes 1-2 (little endian) split the rest into
 *      f-images-idx3-ubyte and f-labels-idx1-ubyte (raw or gzip: the data
 *      decides);
 *   5: the same pair gzipped here (f-*-ubyte.gz), so mutations of the
 *      plain bytes reach the gzip path (a fuzzed .gz rarely stays valid);
 *   3, 4: symlinks, then a JSONL manifest (3) or the root as an ImageFolder
 *      (4): lines "name<TAB>target" up to an empty line make img/<name> a
 *      symlink to target (name reduced to [a-z0-9._-], at most 32 bytes;
 *      a target starting with '@' is the temp directory's path + the rest,
 *      so links can name the root absolutely), the rest is m.jsonl.
 * When data[0] / 6 is odd, manifests (modes 0, 1, 3) are opened with a
 * fetch hook, so http(s) lines become URL items: the hook serves the BMP
 * from memory for a URL holding "ok", reports a stop for one holding
 * "stop", and fails the rest; its URL check refuses one holding "bad".
 * Nothing goes to the network.  Without the hook such lines are refused.
 * Every legitimate input is cheap: at most FUZZ_MAX_ITEMS items (each a walk
 * of a few steps; walks are bounded per data set, see beneath.h), IDX
 * payloads of 4 MiB, images of 1 MiB, 2 items decoded.
 * ds_open must either fail with a message or give a consistent data set
 * whose every file lies under the root; on success the first and last images
 * are loaded and one augmented batch is run through a one-thread loader.
 * Crashes, sanitizer reports, leaks, and resource bombs (test.sh runs this
 * with -rss_limit_mb=512 -malloc_limit_mb=256 -timeout=5) are bugs: the
 * limits below keep every legitimate input far inside those bounds.
 * The engine never opens anything outside the temp directory (it is the
 * root, and targets leading out are refused unread), and the clean-up does
 * not follow links.
 *
 *   CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined
 *   ./build-fuzz/tests/fuzz/fuzz_dataset -max_total_time=120 -dict=tests/fuzz/dataset.dict \
 *       tests/fuzz/corpus/dataset
 * FUZZ_DATASET_VERBOSE=1 prints what ds_open made of each input (seeds).
 */
#define _XOPEN_SOURCE 700 /* nftw (test_rm_tree), mkdtemp */
#include <stddef.h>
#include <stdint.h>
#include <strings.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "dataset.h"
#include "test_util.h"

#define FUZZ_MAX_BYTES ((size_t)1 << 20)
#define FUZZ_MAX_ITEMS 10000 /* ~30 ms of walks under ASan */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A 2x2 24-bit BMP. */
static const uint8_t tiny_bmp[70] = {
    'B', 'M', 70, 0, 0, 0, 0, 0, 0, 0, 54, 0, 0, 0,             /* file header */
    40, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 1, 0, 24, 0, 0, 0, 0, 0, /* info header */
    16, 0, 0, 0, 0x13, 0x0B, 0, 0, 0x13, 0x0B, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    255, 0, 0, 0, 255, 0, 0, 0, /* row 0: blue, green, pad */
    0, 0, 255, 255, 255, 255, 0, 0, /* row 1: red, white, pad */
};

/* The fetch hook (see the top): bytes from memory, never a request. */
static vit_status fuzz_fetch(void *ctx, const char *url, size_t max_bytes, uint8_t **data,
                             size_t *len, bool *stopped, vit_error *err)
{
    (void)ctx;
    if (strstr(url, "stop")) {
        *stopped = true;
        return vit_error_set(err, VIT_ERR_IO, "stopped");
    }
    if (!strstr(url, "ok") || max_bytes < sizeof tiny_bmp)
        return vit_error_set(err, VIT_ERR_NOT_FOUND, "answered 404");
    if (!(*data = malloc(sizeof tiny_bmp)))
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    memcpy(*data, tiny_bmp, sizeof tiny_bmp);
    *len = sizeof tiny_bmp;
    return VIT_OK;
}

static vit_status fuzz_check_url(void *ctx, const char *url, vit_error *err)
{
    (void)ctx;
    VIT_ASSERT(strlen(url) <= DS_MAX_URL);
    return strstr(url, "bad") ? vit_error_set(err, VIT_ERR_INVALID, "refused") : VIT_OK;
}

static int write_file(const char *dir, const char *name, const uint8_t *d, size_t n)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (!f)
        return 0;
    int ok = fwrite(d, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

/* Writes d[0..n) gzip-compressed (level 1: the fuzzer's time is for the
 * engine). */
static int write_gz(const char *dir, const char *name, const uint8_t *d, size_t n)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    gzFile g = gzopen(p, "wb1");
    if (!g)
        return 0;
    int ok = n == 0 || gzwrite(g, d, (unsigned)n) == (int)n;
    return gzclose(g) == Z_OK && ok;
}

/* Makes the links of modes 3 and 4 from "name\ttarget" lines in data[0..n);
 * returns how many bytes they used (through the empty line). */
static size_t make_links(const char *dir, const uint8_t *data, size_t n)
{
    char img[512];
    snprintf(img, sizeof img, "%s/img", dir);
    mkdir(img, 0755);
    size_t i = 0;
    while (i < n) {
        const uint8_t *nl = memchr(data + i, '\n', n - i);
        size_t end = nl ? (size_t)(nl - data) : n;
        if (end == i)
            return i + 1; /* the empty line */
        const uint8_t *tab = memchr(data + i, '\t', end - i);
        if (tab) {
            char name[33], target[600], path[600];
            size_t k = 0;
            for (const uint8_t *p = data + i; p < tab && k < 32; p++)
                if ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '.' ||
                    *p == '_' || *p == '-')
                    name[k++] = (char)*p;
            name[k] = '\0';
            size_t tl = (size_t)(data + end - tab - 1);
            if (k > 0 && strcmp(name, ".") && strcmp(name, "..") && tl < 256 &&
                !memchr(tab + 1, '\0', tl)) {
                if (tl > 0 && tab[1] == '@')
                    snprintf(target, sizeof target, "%s/%.*s", dir, (int)tl - 1,
                             (const char *)tab + 2);
                else
                    snprintf(target, sizeof target, "%.*s", (int)tl, (const char *)tab + 1);
                snprintf(path, sizeof path, "%s/%s", img, name);
                if (target[0])
                    (void)!symlink(target, path);
            }
        }
        i = end + 1;
    }
    return n;
}

/* Checks an opened data set and pushes a little of it through a loader.
 * Files must lie under `root` (the real temp directory); with a fetch hook
 * (urls) items may be http(s) URLs instead. */
static void exercise(ds_dataset *d, const char *root, int urls)
{
    size_t n = ds_size(d), rl = strlen(root);
    int k = ds_num_classes(d);
    VIT_ASSERT(n > 0 && k > 0);
    for (size_t i = 0; i < n; i++) {
        VIT_ASSERT(ds_label(d, i) >= 0 && ds_label(d, i) < k);
        char buf[DS_ITEM_NAME_MAX];
        const char *name = ds_item_name(d, i, buf, sizeof buf);
        VIT_ASSERT(name != NULL);
        if (urls && (strncasecmp(name, "http://", 7) == 0 || strncasecmp(name, "https://", 8) == 0))
            VIT_ASSERT(strlen(name) <= DS_MAX_URL && !strchr(name, ' '));
        else
            VIT_ASSERT(strncmp(name, root, rl) == 0 && name[rl] == '/');
    }
    char fp[65];
    ds_fingerprint(d, 0, fp);
    VIT_ASSERT(strlen(fp) == 64);
    for (int c = 0; c < k; c++)
        VIT_ASSERT(ds_class_name(d, c) != NULL);
    vit_error err;
    size_t probe[2] = {0, n - 1};
    for (int j = 0; j < 2; j++) {
        img_image img;
        if (ds_load_image(d, probe[j], &img, &err) == VIT_OK) {
            VIT_ASSERT(img.width > 0 && img.height > 0 && img.pixels);
            img_free(&img);
        }
    }
    ds_loader_options o = {
        .batch_size = 2,
        .shuffle = true,
        .augment = true,
        .seed = 1,
        .threads = 1,
        .prefetch = 1,
        .preprocess = img_preprocess_hf(8),
        .on_bad = DS_BAD_SKIP,
    };
    ds_loader *l = NULL;
    if (ds_loader_create(d, &o, &l, &err) != VIT_OK)
        return;
    float images[2 * 3 * 8 * 8];
    int labels[2], count = 0;
    if (ds_loader_start_epoch(l, 0, &err) == VIT_OK &&
        ds_loader_next(l, images, labels, NULL, &count, &err) == VIT_OK) {
        VIT_ASSERT(count >= 0 && count <= 2);
        for (int r = 0; r < count; r++)
            VIT_ASSERT(labels[r] >= 0 && labels[r] < k);
    }
    ds_loader_free(l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > FUZZ_MAX_BYTES)
        return 0;
    char dir[] = "/tmp/vitfit_fuzz_ds_XXXXXX";
    if (!mkdtemp(dir))
        return 0;
    const char *target = NULL;
    int ok = write_file(dir, "a.bmp", tiny_bmp, sizeof tiny_bmp);
    int mode = data[0] % 6;
    switch (mode) {
    case 0:
        ok = ok && write_file(dir, "m.jsonl", data + 1, size - 1);
        target = "m.jsonl";
        break;
    case 1:
        ok = ok && write_file(dir, "m.csv", data + 1, size - 1);
        target = "m.csv";
        break;
    case 2:
    case 5: {
        size_t split = size >= 3 ? (size_t)data[1] | (size_t)data[2] << 8 : 0;
        const uint8_t *rest = data + (size >= 3 ? 3 : size);
        size_t rlen = size >= 3 ? size - 3 : 0;
        if (split > rlen)
            split = rlen;
        if (mode == 2) {
            ok = ok && write_file(dir, "f-images-idx3-ubyte", rest, split) &&
                 write_file(dir, "f-labels-idx1-ubyte", rest + split, rlen - split);
            target = "f-images-idx3-ubyte";
        } else {
            ok = ok && write_gz(dir, "f-images-idx3-ubyte.gz", rest, split) &&
                 write_gz(dir, "f-labels-idx1-ubyte.gz", rest + split, rlen - split);
            target = "f-images-idx3-ubyte.gz";
        }
        break;
    }
    default: {
        size_t used = make_links(dir, data + 1, size - 1);
        ok = ok && write_file(dir, "m.jsonl", data + 1 + used, size - 1 - used);
        target = mode == 3 ? "m.jsonl" : ".";
        break;
    }
    }
    char *real = realpath(dir, NULL);
    if (ok && real) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, target);
        ds_options opt = {
            .root = dir,
            .max_image_bytes = (size_t)1 << 20,
            .max_pixels = (size_t)1 << 20,
            .max_items = FUZZ_MAX_ITEMS,
            .max_idx_bytes = (size_t)4 << 20,
        };
        int urls = (data[0] / 6) % 2 == 1 && (mode == 0 || mode == 1 || mode == 3);
        if (urls) {
            opt.fetch = fuzz_fetch;
            opt.check_url = fuzz_check_url;
        }
        ds_dataset *d = NULL;
        vit_error err;
        memset(&err, 0, sizeof err);
        vit_status s = ds_open(path, &opt, &d, &err);
        if (getenv("FUZZ_DATASET_VERBOSE")) /* what a seed reaches, for writing seeds */
            fprintf(stderr, "mode %d: %s (%zu items)\n", mode, s == VIT_OK ? "ok" : err.message,
                    ds_size(d));
        if (s != VIT_OK) {
            VIT_ASSERT(d == NULL && err.code == s && err.message[0] != '\0');
        } else {
            VIT_ASSERT(d != NULL);
            exercise(d, real, urls);
            ds_close(d);
        }
    }
    free(real);
    test_rm_tree(dir);
    return 0;
}
