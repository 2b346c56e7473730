/*
 * test_dataset_urls.c - manifests whose entries are http(s) URLs, fetched
 * through ds_options.fetch (dataset.h).
 *
 * The engine makes no request itself: a hook here serves bytes from memory
 * by URL (no network at all; the URLs name 127.0.0.1 only) and counts its
 * calls, so the tests see what the engine asks for and when:
 *   - without a hook, a URL entry is refused as before;
 *   - with one, ds_open keeps URL entries as items without calling it (only
 *     check_url, once per entry) and refuses a URL over DS_MAX_URL, with a
 *     space, or refused by check_url, naming the line;
 *   - names and fingerprints are the URLs; the fingerprint is stable across
 *     opens and changes with a URL or a label;
 *   - ds_load_image decodes served bytes like a file's (pixels compared),
 *     passes max_image_bytes to the hook and refuses more bytes or pixels;
 *   - the loader: a failing URL fails the batch (DS_BAD_FAIL) or is skipped
 *     and reported by its URL (DS_BAD_SKIP); a fetch the hook abandons as
 *     stopped fails the batch under both policies.
 */
#define _XOPEN_SOURCE 700 /* nftw (test_rm_tree), mkdtemp */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "dataset.h"
#include "test_scratch.h"
#include "test_util.h"

/* A 2x2 24-bit BMP: blue, green / red, white (rows bottom-up). */
static const uint8_t bmp_a[70] = {
    'B', 'M', 70, 0, 0, 0, 0, 0, 0, 0, 54, 0, 0, 0,
    40, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 1, 0, 24, 0, 0, 0, 0, 0,
    16, 0, 0, 0, 0x13, 0x0B, 0, 0, 0x13, 0x0B, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    255, 0, 0, 0, 255, 0, 0, 0,
    0, 0, 255, 255, 255, 255, 0, 0,
};

/* A 1x1 24-bit BMP: one grey (0x40) pixel. */
static const uint8_t bmp_b[58] = {
    'B', 'M', 58, 0, 0, 0, 0, 0, 0, 0, 54, 0, 0, 0,
    40, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 24, 0, 0, 0, 0, 0,
    4, 0, 0, 0, 0x13, 0x0B, 0, 0, 0x13, 0x0B, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0x40, 0x40, 0x40, 0,
};

#define U(path) "http://127.0.0.1:9/" path

/* ------------------------------------------------------------ the hook */

/* What the hook does for a URL: serve bytes, fail, or report a stop. */
typedef struct served {
    const char *url;
    const uint8_t *bytes;
    size_t len;
    int stop;              /* 1: abandoned as stopped */
} served;

static const served table[] = {
    {U("a.bmp"), bmp_a, sizeof bmp_a, 0},
    {"HTTPS://127.0.0.1:9/b.bmp", bmp_b, sizeof bmp_b, 0},
    {U("stop.bmp"), NULL, 0, 1},
    {U("garbage"), (const uint8_t *)"not an image", 12, 0},
    /* U("missing.bmp") and anything else: 404 */
};

typedef struct hook_log {
    atomic_int fetches;    /* fetch calls */
    atomic_int checks;     /* check_url calls */
    size_t last_max;       /* max_bytes of the last fetch */
    int grow;              /* serve this many bytes more than the table says (zeros) */
} hook_log;

static vit_status mem_fetch(void *ctx, const char *url, size_t max_bytes, uint8_t **data,
                            size_t *len, bool *stopped, vit_error *err)
{
    hook_log *h = ctx;
    atomic_fetch_add(&h->fetches, 1);
    h->last_max = max_bytes;
    *data = NULL;
    *len = 0;
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (strcmp(table[i].url, url) != 0)
            continue;
        if (table[i].stop) {
            *stopped = true;
            return vit_error_set(err, VIT_ERR_IO, "the fetch was cancelled");
        }
        size_t n = table[i].len + (size_t)h->grow;
        uint8_t *p = calloc(n, 1);
        if (!p)
            return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
        memcpy(p, table[i].bytes, table[i].len);
        *data = p;
        *len = n;
        return VIT_OK;
    }
    return vit_error_set(err, VIT_ERR_NOT_FOUND, "HTTP 404 from the server");
}

/* Refuses any URL holding "refused". */
static vit_status mem_check(void *ctx, const char *url, vit_error *err)
{
    hook_log *h = ctx;
    atomic_fetch_add(&h->checks, 1);
    if (strstr(url, "refused"))
        return vit_error_set(err, VIT_ERR_INVALID, "not an acceptable URL (test)");
    return VIT_OK;
}

static ds_options url_options(hook_log *h)
{
    return (ds_options){.fetch = mem_fetch, .check_url = mem_check, .fetch_ctx = h};
}

/* ds_open of <tmp>/rel: the status, *out on success, the message in err. */
static vit_status open_rel(const char *rel, const ds_options *opt, ds_dataset **out,
                           vit_error *err)
{
    char p[1024];
    tpath(p, sizeof p, rel);
    memset(err, 0, sizeof *err);
    *out = NULL;
    return ds_open(p, opt, out, err);
}

static const char *name_of(const ds_dataset *d, size_t i)
{
    static char buf[DS_ITEM_NAME_MAX];
    return ds_item_name(d, i, buf, sizeof buf);
}

/* ------------------------------------------------------------ tests */

/* The mixed manifest every test reads: a file and URLs, two classes. */
static const char mixed_jsonl[] =
    "{\"image\": \"a.bmp\", \"label\": \"x\"}\n"
    "{\"image\": \"" U("a.bmp") "\", \"label\": \"y\"}\n"
    "{\"image\": \"" U("missing.bmp") "\", \"label\": \"x\"}\n"
    "{\"image\": \"HTTPS://127.0.0.1:9/b.bmp\", \"label\": \"y\"}\n";

static void test_no_hook_refused(void)
{
    ds_dataset *d;
    vit_error err;
    ds_options none = {0};
    vit_status s = open_rel("mixed.jsonl", &none, &d, &err);
    CHECKF(s == VIT_ERR_UNSUPPORTED, "got %s (%s)", vit_status_name(s), err.message);
    CHECKF(strstr(err.message, "mixed.jsonl:2") && strstr(err.message, "not supported"),
           "message: %s", err.message);
    CHECK(d == NULL);
    /* check_url alone is no hook: still refused */
    hook_log h = {0};
    ds_options check_only = {.check_url = mem_check, .fetch_ctx = &h};
    s = open_rel("mixed.csv", &check_only, &d, &err);
    CHECKF(s == VIT_ERR_UNSUPPORTED, "csv: got %s (%s)", vit_status_name(s), err.message);
    CHECK(atomic_load(&h.checks) == 0);
}

static void test_open_names(void)
{
    hook_log h = {0};
    ds_options opt = url_options(&h);
    ds_dataset *d;
    vit_error err;
    vit_status s = open_rel("mixed.jsonl", &opt, &d, &err);
    CHECKF(s == VIT_OK, "open: %s", err.message);
    if (s != VIT_OK)
        return;
    CHECKF(atomic_load(&h.fetches) == 0, "ds_open fetched %d times", atomic_load(&h.fetches));
    CHECKF(atomic_load(&h.checks) == 3, "check_url called %d times, want 3",
           atomic_load(&h.checks));
    CHECK(ds_size(d) == 4);
    CHECK(ds_num_classes(d) == 2);
    CHECK(ds_label(d, 0) == 0 && ds_label(d, 1) == 1 && ds_label(d, 2) == 0 &&
          ds_label(d, 3) == 1);
    const char *n0 = name_of(d, 0);
    CHECKF(n0 && strlen(n0) > 6 && strcmp(n0 + strlen(n0) - 6, "/a.bmp") == 0 &&
               n0[0] == '/',
           "file item name %s", n0 ? n0 : "(null)");
    CHECKF(strcmp(name_of(d, 1), U("a.bmp")) == 0, "url item name %s", name_of(d, 1));
    CHECKF(strcmp(name_of(d, 2), U("missing.bmp")) == 0, "url item name %s", name_of(d, 2));
    CHECKF(strcmp(name_of(d, 3), "HTTPS://127.0.0.1:9/b.bmp") == 0, "url item name %s",
           name_of(d, 3));
    char buf[8];
    CHECK(ds_item_name(d, 1, buf, sizeof buf) == buf && strcmp(buf, "http://") == 0);
    CHECK(ds_memory(d) > 0);
    ds_close(d);

    /* the CSV spelling of the same set: same items, same fingerprint as JSONL */
    ds_dataset *c;
    s = open_rel("mixed.csv", &opt, &c, &err);
    CHECKF(s == VIT_OK, "csv open: %s", err.message);
    if (s == VIT_OK) {
        CHECK(ds_size(c) == 4);
        CHECK(strcmp(name_of(c, 3), "HTTPS://127.0.0.1:9/b.bmp") == 0);
        ds_close(c);
    }
    CHECK(atomic_load(&h.fetches) == 0);
}

static void fingerprint_of(const char *rel, char hex[65])
{
    hook_log h = {0};
    ds_options opt = url_options(&h);
    ds_dataset *d;
    vit_error err;
    hex[0] = '\0';
    if (open_rel(rel, &opt, &d, &err) != VIT_OK) {
        CHECKF(0, "open %s: %s", rel, err.message);
        return;
    }
    ds_fingerprint(d, 0, hex);
    ds_close(d);
    CHECK(atomic_load(&h.fetches) == 0);
}

static void test_fingerprint(void)
{
    char a[65], b[65], c[65], e[65], f[65];
    fingerprint_of("mixed.jsonl", a);
    fingerprint_of("mixed.jsonl", b);
    CHECKF(a[0] && strcmp(a, b) == 0, "fingerprint moved between opens: %s vs %s", a, b);
    fingerprint_of("mixed.csv", c);
    CHECKF(strcmp(a, c) == 0, "jsonl %s vs csv %s", a, c);
    write_text("fp_url.jsonl",
               "{\"image\": \"a.bmp\", \"label\": \"x\"}\n"
               "{\"image\": \"" U("a.bmp?v=2") "\", \"label\": \"y\"}\n"
               "{\"image\": \"" U("missing.bmp") "\", \"label\": \"x\"}\n"
               "{\"image\": \"HTTPS://127.0.0.1:9/b.bmp\", \"label\": \"y\"}\n");
    fingerprint_of("fp_url.jsonl", e);
    CHECKF(e[0] && strcmp(a, e) != 0, "a changed URL kept the fingerprint %s", e);
    write_text("fp_label.jsonl",
               "{\"image\": \"a.bmp\", \"label\": \"x\"}\n"
               "{\"image\": \"" U("a.bmp") "\", \"label\": \"y\"}\n"
               "{\"image\": \"" U("missing.bmp") "\", \"label\": \"y\"}\n"
               "{\"image\": \"HTTPS://127.0.0.1:9/b.bmp\", \"label\": \"y\"}\n");
    fingerprint_of("fp_label.jsonl", f);
    CHECKF(f[0] && strcmp(a, f) != 0, "a changed label kept the fingerprint %s", f);
}

static void test_open_refusals(void)
{
    hook_log h = {0};
    ds_options opt = url_options(&h);
    ds_dataset *d;
    vit_error err;
    write_text("refused.csv", "a.bmp,x\n" U("ok.bmp") ",y\n" U("refused.bmp") ",y\n");
    vit_status s = open_rel("refused.csv", &opt, &d, &err);
    CHECKF(s == VIT_ERR_INVALID && strstr(err.message, "refused.csv:3") &&
               strstr(err.message, "not an acceptable URL (test)"),
           "check_url refusal: %s (%s)", vit_status_name(s), err.message);
    write_text("space.csv", "a.bmp,x\n\"" U("a b.bmp") "\",y\n");
    s = open_rel("space.csv", &opt, &d, &err);
    CHECKF(s == VIT_ERR_INVALID && strstr(err.message, "space.csv:2") &&
               strstr(err.message, "space or control"),
           "space: %s (%s)", vit_status_name(s), err.message);
    /* a URL of DS_MAX_URL bytes is kept, one more byte is refused */
    static char line[DS_MAX_URL + 64], url[DS_MAX_URL + 2];
    for (size_t extra = 0; extra < 2; extra++) {
        size_t n = DS_MAX_URL + extra;
        memset(url, 'q', n);
        memcpy(url, U(""), strlen(U("")));
        url[n] = '\0';
        snprintf(line, sizeof line, "a.bmp,x\n%s,y\n", url);
        write_text("long.csv", line);
        s = open_rel("long.csv", &opt, &d, &err);
        if (extra == 0) {
            CHECKF(s == VIT_OK, "a URL of %zu bytes: %s", n, err.message);
            if (s == VIT_OK) {
                CHECK(strlen(name_of(d, 1)) == DS_MAX_URL);
                ds_close(d);
            }
        } else {
            CHECKF(s == VIT_ERR_INVALID && strstr(err.message, "long.csv:2") &&
                       strstr(err.message, "longer than"),
                   "a URL of %zu bytes: %s (%s)", n, vit_status_name(s), err.message);
        }
    }
    CHECK(atomic_load(&h.fetches) == 0);
}

/* Loads URL item i and compares its pixels with the file item f of the same
 * image (decoded from disk). */
static void test_load_image(void)
{
    hook_log h = {0};
    ds_options opt = url_options(&h);
    opt.max_image_bytes = 4096;
    ds_dataset *d;
    vit_error err;
    if (open_rel("mixed.jsonl", &opt, &d, &err) != VIT_OK) {
        CHECKF(0, "open: %s", err.message);
        return;
    }
    img_image file, url, b;
    vit_status s1 = ds_load_image(d, 0, &file, &err);
    CHECKF(s1 == VIT_OK, "file: %s", err.message);
    vit_status s2 = ds_load_image(d, 1, &url, &err);
    CHECKF(s2 == VIT_OK, "url: %s", err.message);
    CHECKF(h.last_max == 4096, "the hook was asked for %zu bytes, want max_image_bytes",
           h.last_max);
    if (s1 == VIT_OK && s2 == VIT_OK) {
        CHECK(url.width == 2 && url.height == 2);
        CHECK(file.width == url.width && file.height == url.height &&
              memcmp(file.pixels, url.pixels, 2 * 2 * 3) == 0);
        /* pixel (0,0) is red: rows are bottom-up in the BMP */
        CHECKF(url.pixels[0] == 255 && url.pixels[1] == 0 && url.pixels[2] == 0,
               "pixel 0 = %d,%d,%d", url.pixels[0], url.pixels[1], url.pixels[2]);
    }
    img_free(&file);
    img_free(&url);
    vit_status s3 = ds_load_image(d, 3, &b, &err);
    CHECKF(s3 == VIT_OK && b.width == 1 && b.height == 1 && b.pixels[0] == 0x40,
           "b.bmp: %s", err.message);
    if (s3 == VIT_OK)
        img_free(&b);
    CHECK(atomic_load(&h.fetches) == 2);

    /* a 404: the URL and the hook's reason */
    vit_status s = ds_load_image(d, 2, &b, &err);
    CHECKF(s == VIT_ERR_NOT_FOUND && strstr(err.message, U("missing.bmp")) &&
               strstr(err.message, "HTTP 404"),
           "404: %s (%s)", vit_status_name(s), err.message);
    CHECK(b.pixels == NULL);

    /* more bytes than max_image_bytes: refused whatever the hook did */
    h.grow = 4096;
    s = ds_load_image(d, 1, &b, &err);
    CHECKF(s == VIT_ERR_TOO_LARGE && strstr(err.message, "over the limit of 4096"),
           "too many bytes: %s (%s)", vit_status_name(s), err.message);
    h.grow = 0;
    ds_close(d);

    /* more pixels than max_pixels: the decoder refuses (a file's limit) */
    opt.max_pixels = 3;
    if (open_rel("mixed.jsonl", &opt, &d, &err) == VIT_OK) {
        s = ds_load_image(d, 1, &b, &err);
        CHECKF(s != VIT_OK && strstr(err.message, U("a.bmp")), "max_pixels: %s (%s)",
               vit_status_name(s), err.message);
        s = ds_load_image(d, 3, &b, &err); /* 1 pixel: fine */
        CHECKF(s == VIT_OK, "1 pixel under max_pixels 3: %s", err.message);
        if (s == VIT_OK)
            img_free(&b);
        ds_close(d);
    }
    /* bytes that are no image */
    write_text("garbage.csv", "a.bmp,x\n" U("garbage") ",y\n");
    opt.max_pixels = 0;
    if (open_rel("garbage.csv", &opt, &d, &err) == VIT_OK) {
        s = ds_load_image(d, 1, &b, &err);
        CHECKF(s != VIT_OK && strstr(err.message, U("garbage")), "garbage: %s (%s)",
               vit_status_name(s), err.message);
        ds_close(d);
    }
}

typedef struct bad_log {
    int calls;
    char item[256], message[512];
} bad_log;

static void on_bad(void *ctx, const char *item, const char *message)
{
    bad_log *b = ctx;
    if (b->calls++ == 0) {
        snprintf(b->item, sizeof b->item, "%s", item);
        snprintf(b->message, sizeof b->message, "%s", message);
    }
}

/* One batch of all items of <tmp>/rel in order (threads loader threads):
 * the status, the rows, the message. */
static vit_status one_batch(const char *rel, ds_bad_policy policy, int threads, int *count,
                            bad_log *bad, hook_log *h, vit_error *err)
{
    ds_options opt = url_options(h);
    ds_dataset *d;
    *count = -1;
    vit_status s = open_rel(rel, &opt, &d, err);
    if (s != VIT_OK)
        return s;
    ds_loader_options o = {
        .batch_size = 8, .threads = threads, .prefetch = 1,
        .preprocess = img_preprocess_hf(4), .on_bad = policy,
        .on_bad_fn = on_bad, .on_bad_ctx = bad,
    };
    ds_loader *l = NULL;
    static float images[8 * 3 * 4 * 4];
    int labels[8];
    s = ds_loader_create(d, &o, &l, err);
    if (s == VIT_OK)
        s = ds_loader_start_epoch(l, 0, err);
    if (s == VIT_OK)
        s = ds_loader_next(l, images, labels, NULL, count, err);
    ds_loader_free(l);
    ds_close(d);
    return s;
}

static void test_loader_policies(void)
{
    for (int threads = 1; threads <= 2; threads++) {
        hook_log h = {0};
        bad_log bad = {0};
        vit_error err;
        int count;
        vit_status s = one_batch("mixed.jsonl", DS_BAD_FAIL, threads, &count, &bad, &h, &err);
        CHECKF(s == VIT_ERR_NOT_FOUND && strstr(err.message, U("missing.bmp")) &&
                   strstr(err.message, "HTTP 404"),
               "FAIL, %d threads: %s (%s)", threads, vit_status_name(s), err.message);
        CHECK(bad.calls == 0);

        memset(&bad, 0, sizeof bad);
        s = one_batch("mixed.jsonl", DS_BAD_SKIP, threads, &count, &bad, &h, &err);
        CHECKF(s == VIT_OK && count == 3, "SKIP, %d threads: %s, %d rows (%s)", threads,
               vit_status_name(s), count, err.message);
        CHECKF(bad.calls == 1 && strcmp(bad.item, U("missing.bmp")) == 0 &&
                   strstr(bad.message, "HTTP 404"),
               "SKIP reported %d items, first '%s': '%s'", bad.calls, bad.item, bad.message);

        /* a stopped fetch is not a bad item: the batch fails under both policies */
        for (int p = 0; p < 2; p++) {
            memset(&bad, 0, sizeof bad);
            s = one_batch("stop.jsonl", p ? DS_BAD_SKIP : DS_BAD_FAIL, threads, &count, &bad,
                          &h, &err);
            CHECKF(s != VIT_OK && strstr(err.message, "cancelled") &&
                       strstr(err.message, U("stop.bmp")),
                   "stop, policy %d, %d threads: %s, %d rows (%s)", p, threads,
                   vit_status_name(s), count, err.message);
            CHECKF(bad.calls == 0, "a stopped fetch was reported as bad (%s)", bad.item);
        }
    }
}

int main(void)
{
    if (!test_scratch_create("dsurls"))
        return 1;
    write_rel("a.bmp", bmp_a, sizeof bmp_a);
    write_text("mixed.jsonl", mixed_jsonl);
    write_text("mixed.csv", "image,label\n"
                            "a.bmp,x\n" U("a.bmp") ",y\n" U("missing.bmp") ",x\n"
                            "HTTPS://127.0.0.1:9/b.bmp,y\n");
    write_text("stop.jsonl", "{\"image\": \"a.bmp\", \"label\": \"x\"}\n"
                             "{\"image\": \"" U("stop.bmp") "\", \"label\": \"y\"}\n"
                             "{\"image\": \"" U("a.bmp") "\", \"label\": \"y\"}\n");
    test_no_hook_refused();
    test_open_names();
    test_fingerprint();
    test_open_refusals();
    test_load_image();
    test_loader_policies();
    test_rm_tree(tmp_root);
    return check_result();
}
