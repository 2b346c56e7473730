/*
 * test_job_fetch.c - a fine-tune job's URL fetcher (server/job_fetch.h)
 * against loopback HTTP servers this test starts (127.0.0.1 only), and the
 * job's data sets opened with it (api_finetune_open / api_finetune_check).
 *
 * Every claim is a count the servers or the files show, never a timing:
 *   - a URL is requested once per job: the second call, a second fetcher on
 *     the same job directory (a resumed run) and four threads asking at once
 *     all read fetched/<sha256 of the URL>, whose bytes are the body's;
 *   - a 404 and an oversized body fail with a message saying so, and the
 *     failure is kept (asked again: no new request);
 *   - the job's bounds (bytes, URLs) refuse without a request and keep
 *     nothing;
 *   - cache entries are never followed out of the job directory: a symlink
 *     planted as an entry or as fetched/ itself, a FIFO, are refused and the
 *     file outside is not read;
 *   - cancel: a draining server's flag stops a fetch in flight (the server
 *     holds it open forever otherwise), the job's cancel stops the next one;
 *     both report *stopped and keep nothing;
 *   - api_finetune_check opens a manifest of URLs without a request and
 *     refuses a URL api_fetch would refuse; api_finetune_open with the
 *     fetcher loads the image (decoded) once per job; without it URLs are
 *     refused.
 */
#define _XOPEN_SOURCE 700 /* nftw (test_rm_tree), mkdtemp */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "check.h"
#include "dataset.h"
#include "finetune.h"
#include "job_fetch.h"
#include "loopback_http.h"
#include "sha256.h"
#include "test_scratch.h"
#include "test_util.h"

/* A 2x2 24-bit BMP. */
static const uint8_t bmp[70] = {
    'B', 'M', 70, 0, 0, 0, 0, 0, 0, 0, 54, 0, 0, 0,
    40, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 1, 0, 24, 0, 0, 0, 0, 0,
    16, 0, 0, 0, 0x13, 0x0B, 0, 0, 0x13, 0x0B, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    255, 0, 0, 0, 255, 0, 0, 0,
    0, 0, 255, 255, 255, 255, 0, 0,
};

/* ------------------------------------------------------------ helpers */

/* The bytes of <tmp>/rel (malloc'd, *len), or NULL when it cannot be read. */
static uint8_t *read_rel(const char *rel, size_t *len)
{
    char p[512];
    tpath(p, sizeof p, rel);
    FILE *f = fopen(p, "rb");
    if (!f)
        return NULL;
    uint8_t *buf = malloc(1 << 16);
    *len = buf ? fread(buf, 1, 1 << 16, f) : 0;
    fclose(f);
    return buf;
}

static int exists_rel(const char *rel)
{
    char p[512];
    struct stat st;
    tpath(p, sizeof p, rel);
    return lstat(p, &st) == 0;
}

static void key_of(const char *url, char key[65])
{
    sha256_ctx c;
    uint8_t d[SHA256_DIGEST_LEN];
    sha256_init(&c);
    sha256_update(&c, url, strlen(url));
    sha256_final(&c, d);
    sha256_hex(d, key);
}

static api_fetch_limits limits(size_t max_bytes)
{
    return (api_fetch_limits){.connect_timeout_ms = 60000, .timeout_ms = 60000,
                              .max_bytes = max_bytes, .max_redirects = 2,
                              .allow_private = true};
}

/* A fetcher on job directory <tmp>/rel (made when missing). */
static job_fetch *open_job(const char *rel, job_fetch_config c)
{
    char dir[512];
    mkdir_rel(rel);
    tpath(dir, sizeof dir, rel);
    c.job_dir = dir;
    job_fetch *f = NULL;
    vit_error err = {0};
    vit_status s = job_fetch_open(&c, &f, &err);
    CHECKF(s == VIT_OK, "job_fetch_open %s: %s", rel, err.message);
    return f;
}

/* job_fetch_get with the engine's default max (64 MiB). */
static vit_status get(job_fetch *f, const char *url, uint8_t **data, size_t *len, bool *stopped,
                      vit_error *err)
{
    *stopped = false;
    memset(err, 0, sizeof *err);
    return job_fetch_get(f, url, (size_t)64 << 20, data, len, stopped, err);
}

static loopback_http *serve(int status, const void *body, size_t len)
{
    loopback_http_behaviour b = {.kind = LOOPBACK_HTTP_BODY, .status = status, .body = body,
                                 .body_len = len};
    loopback_http *s = loopback_http_start(&b, AF_INET);
    CHECK(s != NULL);
    return s;
}

/* ------------------------------------------------------------ tests */

static void test_cached_once(void)
{
    loopback_http *s = serve(200, bmp, sizeof bmp);
    if (!s)
        return;
    char url[128], key[65], rel[256];
    loopback_http_url(s, "/cat.bmp?x=1", url, sizeof url);
    key_of(url, key);
    job_fetch *f = open_job("job1", (job_fetch_config){.limits = limits(1 << 20)});
    if (!f) {
        loopback_http_stop(s);
        return;
    }
    for (int i = 0; i < 3; i++) {
        uint8_t *data;
        size_t len;
        bool stopped;
        vit_error err;
        vit_status st = get(f, url, &data, &len, &stopped, &err);
        CHECKF(st == VIT_OK && len == sizeof bmp && memcmp(data, bmp, len) == 0 && !stopped,
               "call %d: %s (%s), %zu bytes", i, vit_status_name(st), err.message, len);
        free(data);
    }
    CHECKF(loopback_http_requests(s) == 1, "the server saw %u requests, want 1",
           loopback_http_requests(s));
    job_fetch_stats js;
    job_fetch_stats_get(f, &js);
    CHECKF(js.requests == 1 && js.hits == 2 && js.urls == 1 && js.bytes == sizeof bmp,
           "stats: %zu requests, %zu hits, %zu urls, %llu bytes", js.requests, js.hits, js.urls,
           (unsigned long long)js.bytes);
    job_fetch_close(f);
    /* the body on disk, under the sha256 of the URL */
    snprintf(rel, sizeof rel, "job1/fetched/%s", key);
    size_t n = 0;
    uint8_t *kept = read_rel(rel, &n);
    CHECKF(kept && n == sizeof bmp && memcmp(kept, bmp, n) == 0, "fetched/%s: %zu bytes", key,
           n);
    free(kept);

    /* a resumed run: a new fetcher on the same job reads it, counts it */
    f = open_job("job1", (job_fetch_config){.limits = limits(1 << 20)});
    if (f) {
        job_fetch_stats_get(f, &js);
        CHECKF(js.urls == 1 && js.bytes == sizeof bmp && js.requests == 0,
               "reopened: %zu urls, %llu bytes", js.urls, (unsigned long long)js.bytes);
        uint8_t *data;
        size_t len;
        bool stopped;
        vit_error err;
        vit_status st = get(f, url, &data, &len, &stopped, &err);
        CHECKF(st == VIT_OK && len == sizeof bmp, "resumed: %s", err.message);
        free(data);
        job_fetch_close(f);
    }
    CHECKF(loopback_http_requests(s) == 1, "after a resume the server saw %u requests",
           loopback_http_requests(s));
    /* another job fetches it again: the cache is per job */
    f = open_job("job1b", (job_fetch_config){.limits = limits(1 << 20)});
    if (f) {
        uint8_t *data;
        size_t len;
        bool stopped;
        vit_error err;
        CHECK(get(f, url, &data, &len, &stopped, &err) == VIT_OK);
        free(data);
        job_fetch_close(f);
    }
    CHECK(loopback_http_requests(s) == 2);
    loopback_http_stop(s);
}

typedef struct racer {
    job_fetch *f;
    const char *url;
    int ok;
} racer;

static void *race(void *arg)
{
    racer *r = arg;
    uint8_t *data;
    size_t len;
    bool stopped = false;
    vit_error err;
    r->ok = job_fetch_get(r->f, r->url, 1 << 20, &data, &len, &stopped, &err) == VIT_OK &&
            len == sizeof bmp && memcmp(data, bmp, len) == 0;
    free(data);
    return NULL;
}

static void test_threads_once(void)
{
    /* a slow body keeps the first request in flight while the others ask */
    loopback_http_behaviour b = {.kind = LOOPBACK_HTTP_DRIP, .body = bmp, .body_len = sizeof bmp,
                                 .drip_ms = 2};
    loopback_http *s = loopback_http_start(&b, AF_INET);
    CHECK(s != NULL);
    job_fetch *f = open_job("job_threads", (job_fetch_config){.limits = limits(1 << 20)});
    if (!s || !f) {
        job_fetch_close(f);
        loopback_http_stop(s);
        return;
    }
    char url[128];
    loopback_http_url(s, "/slow.bmp", url, sizeof url);
    pthread_t th[4];
    racer r[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (racer){f, url, 0};
        pthread_create(&th[i], NULL, race, &r[i]);
    }
    int ok = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ok += r[i].ok;
    }
    CHECKF(ok == 4, "%d of 4 threads got the body", ok);
    CHECKF(loopback_http_requests(s) == 1, "4 threads made %u requests",
           loopback_http_requests(s));
    job_fetch_close(f);
    loopback_http_stop(s);
}

static void test_failures(void)
{
    loopback_http *nf = serve(404, "no", 2);
    uint8_t big[4096];
    memset(big, 'x', sizeof big);
    loopback_http *bs = serve(200, big, sizeof big);
    job_fetch *f = open_job("job2", (job_fetch_config){.limits = limits(1024)});
    if (!nf || !bs || !f)
        goto done;
    char url[128], key[65], rel[256];
    uint8_t *data;
    size_t len;
    bool stopped;
    vit_error err;
    loopback_http_url(nf, "/gone.png", url, sizeof url);
    for (int i = 0; i < 2; i++) {
        vit_status st = get(f, url, &data, &len, &stopped, &err);
        CHECKF(st == VIT_ERR_IO && strstr(err.message, "answered 404") && data == NULL &&
                   !stopped,
               "404, call %d: %s (%s)", i, vit_status_name(st), err.message);
    }
    CHECKF(loopback_http_requests(nf) == 1, "a 404 was asked %u times",
           loopback_http_requests(nf));
    key_of(url, key);
    snprintf(rel, sizeof rel, "job2/fetched/%s.failed", key);
    CHECKF(exists_rel(rel), "no record of the 404 at %s", rel);

    /* over the URL limit (1024) and over the engine's max_bytes (100) */
    loopback_http_url(bs, "/big.png", url, sizeof url);
    vit_status st = get(f, url, &data, &len, &stopped, &err);
    CHECKF(st == VIT_ERR_TOO_LARGE && strstr(err.message, "larger than 1024 bytes"),
           "oversized: %s (%s)", vit_status_name(st), err.message);
    st = get(f, url, &data, &len, &stopped, &err);
    CHECKF(st == VIT_ERR_TOO_LARGE && strstr(err.message, "larger than 1024 bytes"),
           "oversized, again: %s (%s)", vit_status_name(st), err.message);
    CHECKF(loopback_http_accepts(bs) == 1, "an oversized body was asked %u times",
           loopback_http_accepts(bs));
    loopback_http_url(bs, "/big2.png", url, sizeof url);
    stopped = false;
    st = job_fetch_get(f, url, 100, &data, &len, &stopped, &err);
    CHECKF(st == VIT_ERR_TOO_LARGE && strstr(err.message, "larger than 100 bytes"),
           "max_bytes 100: %s (%s)", vit_status_name(st), err.message);
    /* a URL api_fetch refuses */
    st = get(f, "http://user:pw@127.0.0.1:1/x.png", &data, &len, &stopped, &err);
    CHECKF(st == VIT_ERR_INVALID && strstr(err.message, "credentials"), "userinfo: %s (%s)",
           vit_status_name(st), err.message);
done:
    job_fetch_close(f);
    loopback_http_stop(nf);
    loopback_http_stop(bs);
}

static void test_budget(void)
{
    uint8_t body[200];
    memset(body, 'b', sizeof body);
    loopback_http *s = serve(200, body, sizeof body);
    job_fetch *f = open_job("job3", (job_fetch_config){.limits = limits(1 << 20),
                                                       .max_total_bytes = 300});
    if (!s || !f)
        goto done;
    char url[128], key[65], rel[256];
    uint8_t *data;
    size_t len;
    bool stopped;
    vit_error err;
    loopback_http_url(s, "/1", url, sizeof url);
    CHECK(get(f, url, &data, &len, &stopped, &err) == VIT_OK && len == 200);
    free(data);
    loopback_http_url(s, "/2", url, sizeof url); /* 100 bytes left: cut */
    vit_status st = get(f, url, &data, &len, &stopped, &err);
    CHECKF(st == VIT_ERR_TOO_LARGE && strstr(err.message, "300 bytes, its limit"),
           "over the job's bytes: %s (%s)", vit_status_name(st), err.message);
    key_of(url, key);
    snprintf(rel, sizeof rel, "job3/fetched/%s.failed", key);
    CHECKF(!exists_rel(rel), "a refusal of the budget was kept as the URL's");
    job_fetch_close(f);

    /* the count: 2 URLs; the third is refused without a request */
    f = open_job("job4", (job_fetch_config){.limits = limits(1 << 20), .max_urls = 2});
    if (!f)
        goto done;
    unsigned before = loopback_http_requests(s);
    for (int i = 0; i < 3; i++) {
        char path[16];
        snprintf(path, sizeof path, "/n%d", i);
        loopback_http_url(s, path, url, sizeof url);
        st = get(f, url, &data, &len, &stopped, &err);
        free(data);
        if (i < 2)
            CHECKF(st == VIT_OK, "URL %d: %s", i, err.message);
        else
            CHECKF(st == VIT_ERR_TOO_LARGE && strstr(err.message, "requested 2 URLs"),
                   "URL 3: %s (%s)", vit_status_name(st), err.message);
    }
    CHECKF(loopback_http_requests(s) - before == 2, "%u requests for 2 URLs allowed",
           loopback_http_requests(s) - before);
    job_fetch_close(f);
    /* a resumed job counts what it spent: its 2 URLs are on disk */
    f = open_job("job4", (job_fetch_config){.limits = limits(1 << 20), .max_urls = 2});
    if (f) {
        loopback_http_url(s, "/n3", url, sizeof url);
        st = get(f, url, &data, &len, &stopped, &err);
        CHECKF(st == VIT_ERR_TOO_LARGE, "resumed, URL 4: %s", vit_status_name(st));
    }
    CHECK(loopback_http_requests(s) - before == 2);
done:
    job_fetch_close(f);
    loopback_http_stop(s);
}

static void test_confined(void)
{
    loopback_http *s = serve(200, bmp, sizeof bmp);
    if (!s)
        return;
    char url[128], key[65], rel[256], target[512];
    uint8_t *data;
    size_t len;
    bool stopped;
    vit_error err;
    write_rel("secret.bin", "SECRET-BYTES", 12);
    tpath(target, sizeof target, "secret.bin");
    loopback_http_url(s, "/planted.bmp", url, sizeof url);
    key_of(url, key);

    /* an entry that is a symlink out of the job */
    job_fetch *f = open_job("job5", (job_fetch_config){.limits = limits(1 << 20)});
    snprintf(rel, sizeof rel, "job5/fetched/%s", key);
    char link[512];
    tpath(link, sizeof link, rel);
    CHECK(symlink(target, link) == 0);
    if (f) {
        vit_status st = get(f, url, &data, &len, &stopped, &err);
        CHECKF(st != VIT_OK && data == NULL && strstr(err.message, "symbolic link"),
               "planted link: %s (%s)", vit_status_name(st), err.message);
        if (st == VIT_OK)
            free(data);
        job_fetch_close(f);
    }
    /* a failure record that is a symlink out of the job */
    snprintf(rel, sizeof rel, "job5/fetched/%s", key);
    unlink(link);
    snprintf(rel, sizeof rel, "job5/fetched/%s.failed", key);
    tpath(link, sizeof link, rel);
    write_rel("secret.failed", "2 SECRET-RECORD\n", 16);
    tpath(target, sizeof target, "secret.failed");
    CHECK(symlink(target, link) == 0);
    f = open_job("job5", (job_fetch_config){.limits = limits(1 << 20)});
    if (f) {
        vit_status st = get(f, url, &data, &len, &stopped, &err);
        CHECKF(st != VIT_OK && !strstr(err.message, "SECRET") &&
                   strstr(err.message, "symbolic link"),
               "planted record link: %s (%s)", vit_status_name(st), err.message);
        job_fetch_stats js;
        job_fetch_stats_get(f, &js);
        CHECKF(js.urls == 0, "a planted link was counted as a URL (%zu)", js.urls);
        job_fetch_close(f);
    }
    unlink(link);
    /* a FIFO entry: refused, no hang */
    snprintf(rel, sizeof rel, "job5/fetched/%s", key);
    tpath(link, sizeof link, rel);
    CHECK(mkfifo(link, 0600) == 0);
    f = open_job("job5", (job_fetch_config){.limits = limits(1 << 20)});
    if (f) {
        vit_status st = get(f, url, &data, &len, &stopped, &err);
        CHECKF(st != VIT_OK && strstr(err.message, "not a regular file"), "FIFO: %s (%s)",
               vit_status_name(st), err.message);
        job_fetch_close(f);
    }
    CHECKF(loopback_http_requests(s) == 0, "the planted entries were fetched over (%u)",
           loopback_http_requests(s));

    /* fetched/ itself a symlink to a directory outside: refused at open */
    mkdir_rel("outside");
    mkdir_rel("job6");
    tpath(target, sizeof target, "outside");
    tpath(link, sizeof link, "job6/fetched");
    CHECK(symlink(target, link) == 0);
    char dir[512];
    tpath(dir, sizeof dir, "job6");
    job_fetch_config c = {.job_dir = dir, .limits = limits(1 << 20)};
    job_fetch *g = NULL;
    vit_status st = job_fetch_open(&c, &g, &err);
    CHECKF(st == VIT_ERR_IO && g == NULL && strstr(err.message, "symbolic link"),
           "fetched/ a symlink: %s (%s)", vit_status_name(st), err.message);
    job_fetch_close(g);

    /* temp files a crash left are removed at open, not counted */
    write_rel("job1/fetched/.tmp-deadbeef-7", "half", 4);
    f = open_job("job1", (job_fetch_config){.limits = limits(1 << 20)});
    CHECK(!exists_rel("job1/fetched/.tmp-deadbeef-7"));
    if (f) {
        job_fetch_stats js;
        job_fetch_stats_get(f, &js);
        CHECKF(js.urls == 1, "job1 after a crash: %zu urls", js.urls);
        job_fetch_close(f);
    }
    /* the job ended: its fetched/ goes, a symlinked one as a link only */
    vit_error rerr = {0};
    tpath(dir, sizeof dir, "job1");
    CHECKF(job_fetch_remove(dir, &rerr) == VIT_OK && !exists_rel("job1/fetched"),
           "remove job1: %s", rerr.message);
    CHECK(job_fetch_remove(dir, &rerr) == VIT_OK); /* none: fine */
    tpath(dir, sizeof dir, "job6");
    write_rel("outside/keep", "k", 1);
    CHECKF(job_fetch_remove(dir, &rerr) == VIT_OK && !exists_rel("job6/fetched") &&
               exists_rel("outside/keep"),
           "remove job6: %s", rerr.message);
    loopback_http_stop(s);
}

typedef struct drainer {
    loopback_http *s;
    atomic_bool *flag;
} drainer;

/* Sets the flag once the server has the request (then the fetch is in flight). */
static void *drain_when_asked(void *arg)
{
    drainer *d = arg;
    for (int i = 0; i < 60000 && loopback_http_requests(d->s) == 0; i++)
        usleep(1000);
    atomic_store(d->flag, true);
    return NULL;
}

static void test_cancel(void)
{
    /* a server that promises a body and never sends it: only cancel ends the fetch */
    loopback_http_behaviour b = {.kind = LOOPBACK_HTTP_DECLARE, .declared_length = 100};
    loopback_http *s = loopback_http_start(&b, AF_INET);
    atomic_bool draining, job_cancel;
    atomic_init(&draining, false);
    atomic_init(&job_cancel, false);
    api_fetch_limits lim = limits(1 << 20);
    lim.cancel = &draining;
    job_fetch *f = open_job("job7", (job_fetch_config){.limits = lim, .job_cancel = &job_cancel});
    if (!s || !f)
        goto done;
    char url[128], key[65], rel[256];
    uint8_t *data;
    size_t len;
    bool stopped;
    vit_error err;
    loopback_http_url(s, "/hang.png", url, sizeof url);
    drainer d = {s, &draining};
    pthread_t th;
    pthread_create(&th, NULL, drain_when_asked, &d);
    vit_status st = get(f, url, &data, &len, &stopped, &err);
    pthread_join(th, NULL);
    CHECKF(st != VIT_OK && stopped && data == NULL, "drained mid-fetch: %s, stopped %d (%s)",
           vit_status_name(st), stopped, err.message);
    key_of(url, key);
    snprintf(rel, sizeof rel, "job7/fetched/%s.failed", key);
    CHECKF(!exists_rel(rel), "a cancelled fetch was kept as the URL's failure");
    snprintf(rel, sizeof rel, "job7/fetched/%s", key);
    CHECK(!exists_rel(rel));
    unsigned asked = loopback_http_requests(s);
    /* still draining: no new request at all */
    st = get(f, url, &data, &len, &stopped, &err);
    CHECK(st != VIT_OK && stopped && loopback_http_requests(s) == asked);
    /* the job's own cancel */
    atomic_store(&draining, false);
    atomic_store(&job_cancel, true);
    st = get(f, url, &data, &len, &stopped, &err);
    CHECKF(st != VIT_OK && stopped && loopback_http_requests(s) == asked,
           "job cancelled: %s, stopped %d, %u requests", vit_status_name(st), stopped,
           loopback_http_requests(s));
done:
    job_fetch_close(f);
    loopback_http_stop(s);
}

/* The job's data sets: validation fetches nothing; the run loads through
 * the fetcher once per job. */
static void test_finetune_open(void)
{
    loopback_http *s = serve(200, bmp, sizeof bmp);
    if (!s)
        return;
    char u1[128], u2[128], text[1024], dsdir[512];
    loopback_http_url(s, "/one.bmp", u1, sizeof u1);
    loopback_http_url(s, "/two.bmp", u2, sizeof u2);
    mkdir_rel("datasets");
    mkdir_rel("datasets/web");
    write_rel("datasets/web/a.bmp", bmp, sizeof bmp);
    snprintf(text, sizeof text, "image,label\na.bmp,cat\n%s,dog\n%s,dog\n", u1, u2);
    write_rel("datasets/web/m.csv", text, strlen(text));
    snprintf(text, sizeof text, "image,label\na.bmp,cat\nhttp://u:p@127.0.0.1:%d/x.bmp,dog\n",
             loopback_http_port(s));
    write_rel("datasets/web/creds.csv", text, strlen(text));
    tpath(dsdir, sizeof dsdir, "datasets");

    job_fetch *f = open_job("job8", (job_fetch_config){.limits = limits(1 << 20)});
    api_finetune_env env = {.datasets_dir = dsdir, .fetch = job_fetch_get, .fetch_ctx = f};
    api_finetune_spec spec = {.overwrite = true}; /* no task store to ask */
    snprintf(spec.task, sizeof spec.task, "web");
    snprintf(spec.train, sizeof spec.train, "web/m.csv");
    api_reply r;
    api_reply_init(&r);
    int rc = api_finetune_check(&env, &spec, &r);
    CHECKF(rc == 0, "check: %d %s", r.status, r.body ? r.body : "");
    api_reply_free(&r);
    CHECKF(loopback_http_requests(s) == 0, "validation made %u requests",
           loopback_http_requests(s));

    snprintf(spec.train, sizeof spec.train, "web/creds.csv");
    rc = api_finetune_check(&env, &spec, &r);
    CHECKF(rc != 0 && r.status == 422 && r.body && strstr(r.body, "invalid_dataset") &&
               strstr(r.body, "creds.csv:3") && strstr(r.body, "credentials"),
           "credentials: %d %s", r.status, r.body ? r.body : "");
    api_reply_free(&r);

    /* validation as POST runs it, with no fetcher at hand: URLs are checked all the same */
    snprintf(spec.train, sizeof spec.train, "web/m.csv");
    api_finetune_env bare = {.datasets_dir = dsdir};
    rc = api_finetune_check(&bare, &spec, &r);
    CHECKF(rc == 0, "check without a fetcher: %d %s", r.status, r.body ? r.body : "");
    api_reply_free(&r);
    CHECK(loopback_http_requests(s) == 0);

    /* no fetcher given to the run: URLs are refused, nothing fetched */
    ds_dataset *train = NULL, *eval = NULL;
    rc = api_finetune_open(&bare, &spec, &train, &eval, &r);
    CHECKF(rc != 0 && r.body && strstr(r.body, "not supported"), "no fetcher: %d %s", r.status,
           r.body ? r.body : "");
    api_reply_free(&r);

    rc = api_finetune_open(&env, &spec, &train, &eval, &r);
    CHECKF(rc == 0 && train && ds_size(train) == 3, "open: %d %s", r.status,
           r.body ? r.body : "");
    api_reply_free(&r);
    CHECK(loopback_http_requests(s) == 0);
    if (train) {
        for (int epoch = 0; epoch < 2; epoch++)
            for (size_t i = 0; i < 3; i++) {
                img_image img;
                vit_error err = {0};
                vit_status st = ds_load_image(train, i, &img, &err);
                CHECKF(st == VIT_OK && img.width == 2 && img.height == 2,
                       "epoch %d item %zu: %s", epoch, i, err.message);
                if (st == VIT_OK)
                    img_free(&img);
            }
        char name[DS_ITEM_NAME_MAX];
        CHECK(strcmp(ds_item_name(train, 1, name, sizeof name), u1) == 0);
    }
    CHECKF(loopback_http_requests(s) == 2, "2 URLs over 2 epochs: %u requests",
           loopback_http_requests(s));
    ds_close(train);
    ds_close(eval);
    job_fetch_close(f);
    loopback_http_stop(s);
}

int main(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "curl_global_init failed\n");
        return 1;
    }
    if (!test_scratch_create("job_fetch"))
        return 1;
    test_cached_once();
    test_threads_once();
    test_failures();
    test_budget();
    test_confined();
    test_cancel();
    test_finetune_open();
    test_rm_tree(tmp_root);
    curl_global_cleanup();
    return check_result();
}
