/*
 * test_hub.c - `--model hf:ORG/NAME[@REVISION]` (server/hub.c) end to end:
 * the real `vitfit` binary downloads from loopback servers of this test that
 * serve the model hub's layout (<hub>/ORG/NAME/resolve/REV/FILE), with the
 * weights of a seeded vit-tiny.  The "hub" answers model.safetensors either
 * itself or, like the public hub for LFS files, with a 302 to a "CDN" on
 * another port plus X-Linked-Size and X-Linked-Etag (the sha256).  Both
 * servers record what they were sent, so each case asserts on requests,
 * headers and the files in the cache, never on timings:
 *
 *   - a first download, then the cache (no request), offline mode with and
 *     without the model in the cache (HF_HUB_OFFLINE, VITFIT_HUB_OFFLINE);
 *   - a transfer cut mid-file: the run fails and keeps the .part, the next
 *     run asks for the rest (Range) and the result hashes right; a server
 *     that ignores the Range gets a clean restart;
 *   - refusals that leave nothing behind: a 404 (the cache as it was), no answer,
 *     a file shorter than the hub states, a wrong sha256, a file over
 *     hub_max_bytes, a redirect to plain http elsewhere, a redirect loop;
 *   - HF_TOKEN goes to the hub and never to the CDN, and never into output;
 *   - SIGTERM to `vitfit serve` mid-download: a clean exit, the .part kept;
 *   - malformed names and hub URLs are usage errors (exit 2) with no request.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "loopback_http.h"
#include "run_cli.h"
#include "sha256.h"
#include "test_util.h"
#include "vit.h"

#define REPO "/org/tiny/resolve/main/"
#define CUT_AT 100000 /* bytes of model.safetensors sent before a cut */

static char tmpdir[] = "/tmp/vitfit-test-hub-XXXXXX";
static char cache[512];

/* ---- the model served ------------------------------------------------------- */

typedef struct blob {
    uint8_t *data;
    size_t len;
    char sha[SHA256_HEX_LEN + 1];
} blob;

static blob config_json, weights, other; /* other: another model's weights, as long */
static char config_blob_id[48]; /* git's blob id of config.json: the hub's ETag of it */

/* git's blob id of b (sha1 of "blob <len>\0" + data), by coreutils' sha1sum. */
static void blob_id(const blob *b, char *id, size_t len)
{
    char path[600], cmd[700], out[128] = "";
    snprintf(path, sizeof path, "%s/blob", tmpdir);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f)
        return;
    fprintf(f, "blob %zu%c", b->len, 0);
    fwrite(b->data, 1, b->len, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "sha1sum '%s'", path);
    FILE *p = popen(cmd, "r");
    CHECK(p && fgets(out, sizeof out, p));
    if (p)
        pclose(p);
    snprintf(id, len, "%.40s", out);
    CHECKF(strlen(id) == 40, "sha1sum: '%s'", out);
}

static void read_blob(const char *path, blob *b)
{
    FILE *f = fopen(path, "rb");
    CHECKF(f != NULL, "%s: %s", path, strerror(errno));
    if (!f)
        return;
    fseek(f, 0, SEEK_END);
    b->len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    b->data = malloc(b->len);
    CHECK(b->data && fread(b->data, 1, b->len, f) == b->len);
    fclose(f);
    sha256_hex_of(b->data, b->len, b->sha);
}

/* A seeded vit-tiny saved by the engine: the files the hub serves. */
static void make_model(void)
{
    vit_config cfg;
    vit_error err = {0};
    vit_model *m = NULL;
    char dir[600], path[700];
    snprintf(dir, sizeof dir, "%s/src", tmpdir);
    CHECK(vit_config_preset("vit-tiny", &cfg, &err) == VIT_OK);
    CHECK(vit_model_create(&cfg, &m, &err) == VIT_OK);
    vit_model_randomize(m, 11);
    CHECKF(vit_model_save(m, dir, &err) == VIT_OK, "%s", err.message);
    vit_model_free(m);
    snprintf(path, sizeof path, "%s/config.json", dir);
    read_blob(path, &config_json);
    blob_id(&config_json, config_blob_id, sizeof config_blob_id);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    read_blob(path, &weights);
    CHECK(weights.len > 2 * CUT_AT);
    other.len = weights.len;
    other.data = malloc(other.len);
    CHECK(other.data != NULL);
    if (other.data) {
        memcpy(other.data, weights.data, other.len);
        other.data[other.len - 1] ^= 1;
        sha256_hex_of(other.data, other.len, other.sha);
    }
}

/* ---- the hub and its CDN ---------------------------------------------------- */

/* What the servers do and what they saw (under state_mu). */
typedef struct hub_state {
    /* behaviour */
    bool lfs;              /* model.safetensors: 302 to the CDN with X-Linked-* */
    bool ignore_range;     /* answer 200 with everything, whatever Range says */
    bool cut_once;         /* the next full answer of the weights stops after CUT_AT bytes */
    bool stall;            /* the weights: CUT_AT bytes, then nothing until the server stops */
    size_t short_by;       /* serve the weights this many bytes short (a matching length) */
    bool wrong_sha;        /* X-Linked-Etag names another file */
    const char *redirect;  /* model.safetensors: 302 to this instead (hub) */
    bool cdn_bounce;       /* the CDN: 302 back into the hub, to /bounce (another model's file) */
    bool partial206;       /* the weights: a 206 of bytes 0-99 to a request without Range */
    bool close_cut;        /* the weights: no Content-Length, CUT_AT bytes, then the close */
    bool gzip;             /* the weights: with "Content-Encoding: gzip" */
    bool no_etag;          /* lfs: X-Linked-Size alone, no X-Linked-Etag nor ETag */
    const char *linked_etag; /* lfs: this X-Linked-Etag, and no ETag */
    const char *commit;    /* X-Repo-Commit on the hub's answers for the repo */
    const char *commit_next; /* the commit once config.json was served (a moving branch) */
    bool config_damaged;   /* config.json: one byte changed, the ETag of the right one */
    /* records */
    int hub_requests, cdn_requests, hub_weights, cdn_weights;
    int hub_auth, cdn_auth;  /* requests that carried Authorization */
    char hub_auth_value[128];
    char last_range[64];     /* the last Range header received for the weights */
    int ranges;
    int hub_configs;         /* config.json requests */
    int bounces, bounce_auth; /* requests to /bounce, and those with Authorization */
} hub_state;

static hub_state state;
static pthread_mutex_t state_mu = PTHREAD_MUTEX_INITIALIZER;
static loopback_http *hub, *cdn;
static char hub_url[64], cdn_url[64];

static void reset_state(void)
{
    pthread_mutex_lock(&state_mu);
    memset(&state, 0, sizeof state);
    pthread_mutex_unlock(&state_mu);
}

/* The weights (or a prefix) with Range support, 200 or 206; hdr: header
 * lines to add ("" for none). */
static void serve_weights(loopback_http_conn *c, const loopback_http_request *req,
                          const char *hdr)
{
    char range[64];
    const char *r = loopback_http_header(req, "Range", range, sizeof range);
    pthread_mutex_lock(&state_mu);
    snprintf(state.last_range, sizeof state.last_range, "%s", r ? r : "");
    state.ranges += r != NULL;
    bool ignore = state.ignore_range, cut = state.cut_once, stall = state.stall;
    bool partial = state.partial206, close_cut = state.close_cut, gzip = state.gzip;
    size_t len = weights.len - state.short_by;
    pthread_mutex_unlock(&state_mu);
    char extra[256];
    if (partial && !r) { /* the first 100 bytes of the file, as if asked for */
        snprintf(extra, sizeof extra, "%sContent-Range: bytes 0-99/%zu\r\n", hdr, len);
        loopback_http_respond(c, 206, NULL, extra, weights.data, 100);
        return;
    }
    if (close_cut) { /* no length: only the closed connection ends the body */
        loopback_http_printf(c, "HTTP/1.1 200 OK\r\n%sConnection: close\r\n\r\n", hdr);
        loopback_http_write(c, weights.data, CUT_AT);
        return;
    }
    if (gzip) { /* stored as it came, it would not be the file */
        snprintf(extra, sizeof extra, "%sContent-Encoding: gzip\r\n", hdr);
        loopback_http_respond(c, 200, NULL, extra, weights.data, len);
        return;
    }
    unsigned long long from = 0;
    if (r && !ignore && sscanf(r, "bytes=%llu-", &from) == 1) {
        if (from >= len) {
            loopback_http_respond(c, 416, NULL, NULL, "", 0);
            return;
        }
        snprintf(extra, sizeof extra, "%sContent-Range: bytes %llu-%zu/%zu\r\n", hdr, from,
                 len - 1, len);
        loopback_http_respond(c, 206, NULL, extra, weights.data + from, len - from);
        return;
    }
    if (stall) { /* a transfer that hangs: only a stop ends it */
        loopback_http_printf(c, "HTTP/1.1 200 OK\r\n%sContent-Length: %zu\r\n\r\n", hdr, len);
        loopback_http_write(c, weights.data, CUT_AT);
        loopback_http_sleep(c, 120000);
        return;
    }
    if (cut) { /* the whole length promised, CUT_AT bytes sent, then the connection closes */
        pthread_mutex_lock(&state_mu);
        state.cut_once = false;
        pthread_mutex_unlock(&state_mu);
        loopback_http_printf(c, "HTTP/1.1 200 OK\r\n%sContent-Type: application/octet-stream\r\n"
                                "Content-Length: %zu\r\nConnection: close\r\n\r\n", hdr, len);
        loopback_http_write(c, weights.data, CUT_AT);
        return;
    }
    loopback_http_respond(c, 200, NULL, hdr, weights.data, len);
}

static void on_hub(loopback_http_conn *c, const loopback_http_request *req, void *ctx)
{
    (void)ctx;
    char auth[128];
    const char *a = loopback_http_header(req, "Authorization", auth, sizeof auth);
    pthread_mutex_lock(&state_mu);
    state.hub_requests++;
    if (a) {
        state.hub_auth++;
        snprintf(state.hub_auth_value, sizeof state.hub_auth_value, "%s", a);
    }
    bool lfs = state.lfs, wrong = state.wrong_sha, no_etag = state.no_etag;
    const char *redirect = state.redirect, *linked_etag = state.linked_etag;
    char commit[128] = "";
    if (state.commit)
        snprintf(commit, sizeof commit, "X-Repo-Commit: %s\r\n", state.commit);
    pthread_mutex_unlock(&state_mu);
    if (strcmp(req->target, "/bounce") == 0) { /* another model's file, and its statement */
        char extra[256];
        pthread_mutex_lock(&state_mu);
        state.bounces++;
        state.bounce_auth += a != NULL;
        pthread_mutex_unlock(&state_mu);
        snprintf(extra, sizeof extra, "X-Linked-Size: %zu\r\nX-Linked-Etag: \"%s\"\r\n",
                 other.len, other.sha);
        loopback_http_respond(c, 200, NULL, extra, other.data, other.len);
        return;
    }
    if (strncmp(req->target, REPO, strlen(REPO)) != 0) {
        loopback_http_respond(c, 404, "application/json", NULL, "{\"error\":\"no repo\"}", 19);
        return;
    }
    const char *file = req->target + strlen(REPO);
    if (strcmp(file, "config.json") == 0) {
        /* a small file's tag is git's blob id of it */
        char extra[256];
        snprintf(extra, sizeof extra, "%sETag: \"%s\"\r\n", commit, config_blob_id);
        pthread_mutex_lock(&state_mu);
        bool damaged = state.config_damaged;
        state.hub_configs++;
        if (state.commit_next) { /* the branch moves right after */
            state.commit = state.commit_next;
            state.commit_next = NULL;
        }
        pthread_mutex_unlock(&state_mu);
        uint8_t *body = malloc(config_json.len);
        if (body) {
            memcpy(body, config_json.data, config_json.len);
            if (damaged)
                body[config_json.len / 2] ^= 0x20;
            loopback_http_respond(c, 200, "application/json", extra, body, config_json.len);
        }
        free(body);
        return;
    }
    if (strcmp(file, "model.safetensors") != 0) {
        loopback_http_respond(c, 404, "application/json", NULL, "{\"error\":\"no file\"}", 19);
        return;
    }
    pthread_mutex_lock(&state_mu);
    state.hub_weights++;
    pthread_mutex_unlock(&state_mu);
    if (redirect) {
        char extra[640];
        snprintf(extra, sizeof extra, "%sLocation: %s\r\n", commit, redirect);
        loopback_http_respond(c, 302, "text/plain", extra, "", 0);
    } else if (lfs) {
        char extra[640], loc[128], tags[256];
        snprintf(loc, sizeof loc, "%s/cdn/model.safetensors?sig=1", cdn_url);
        if (no_etag)
            tags[0] = '\0';
        else if (linked_etag)
            snprintf(tags, sizeof tags, "X-Linked-Etag: %s\r\n", linked_etag);
        else
            snprintf(tags, sizeof tags, "X-Linked-Etag: \"%s\"\r\nETag: W/\"%s\"\r\n",
                     wrong ? "0000000000000000000000000000000000000000000000000000000000000000"
                           : weights.sha,
                     weights.sha);
        snprintf(extra, sizeof extra, "%sLocation: %s\r\nX-Linked-Size: %zu\r\n%s", commit, loc,
                 weights.len, tags);
        loopback_http_respond(c, 302, "text/plain", extra, "", 0);
    } else {
        serve_weights(c, req, commit);
    }
}

static void on_cdn(loopback_http_conn *c, const loopback_http_request *req, void *ctx)
{
    (void)ctx;
    char auth[128];
    pthread_mutex_lock(&state_mu);
    state.cdn_requests++;
    if (loopback_http_header(req, "Authorization", auth, sizeof auth))
        state.cdn_auth++;
    pthread_mutex_unlock(&state_mu);
    if (strncmp(req->target, "/cdn/model.safetensors", 22) != 0) {
        loopback_http_respond(c, 404, NULL, NULL, "", 0);
        return;
    }
    pthread_mutex_lock(&state_mu);
    state.cdn_weights++;
    bool bounce = state.cdn_bounce;
    pthread_mutex_unlock(&state_mu);
    if (bounce) { /* a compromised CDN sends the client back into the hub, where it chooses */
        char extra[160];
        snprintf(extra, sizeof extra, "Location: %s/bounce\r\n", hub_url);
        loopback_http_respond(c, 302, "text/plain", extra, "", 0);
        return;
    }
    serve_weights(c, req, "");
}

static int hub_count(int *field)
{
    pthread_mutex_lock(&state_mu);
    int v = *field;
    pthread_mutex_unlock(&state_mu);
    return v;
}

/* ---- the cache -------------------------------------------------------------------- */

static void remove_tree(const char *path)
{
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    CHECK(system(cmd) == 0);
}

/* Regular files under the cache (the lock file included). */
static int cache_files(void)
{
    char cmd[700], out[64] = "";
    snprintf(cmd, sizeof cmd, "find '%s' -type f 2>/dev/null | wc -l", cache);
    FILE *p = popen(cmd, "r");
    if (p) {
        if (!fgets(out, sizeof out, p))
            out[0] = '\0';
        pclose(p);
    }
    return atoi(out);
}

static bool exists(const char *rel)
{
    char path[900];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", cache, rel);
    return stat(path, &sb) == 0;
}

static long long file_size(const char *rel)
{
    char path[900];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", cache, rel);
    return stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
}

/* The cached weights hash to the served ones. */
static bool cached_weights_match(void)
{
    char path[900];
    blob b = {0};
    snprintf(path, sizeof path, "%s/hub/org/tiny/snapshots/main/model.safetensors", cache);
    read_blob(path, &b);
    bool same = b.data && strcmp(b.sha, weights.sha) == 0;
    free(b.data);
    return same;
}

/* A fresh cache and environment: the hub's URL, no token, online. */
static void fresh(void)
{
    remove_tree(cache);
    reset_state();
    setenv("VITFIT_CACHE", cache, 1);
    setenv("VITFIT_HUB_URL", hub_url, 1);
    unsetenv("HF_TOKEN");
    unsetenv("HF_HUB_OFFLINE");
    unsetenv("VITFIT_HUB_OFFLINE");
    unsetenv("VITFIT_HUB_MAX_BYTES");
}

static run_result *inspect(const char *model)
{
    return run_vitfit("inspect", "--json", model, NULL);
}

/* ---- cases ---------------------------------------------------------------------------- */

static void test_download_cache_offline(void)
{
    fresh();
    run_result *r = inspect("hf:org/tiny");
    CHECKF(r->status == 0, "first download: exit %d: %s", r->status, r->err);
    json_t *j = json_loads(r->out, 0, NULL), *c = json_object_get(j, "config");
    CHECKF(c && json_integer_value(json_object_get(c, "width")) == 64 &&
               json_integer_value(json_object_get(c, "depth")) == 2,
           "inspect: %s", r->out);
    json_decref(j);
    CHECK(strchr(r->err, '\r') == NULL); /* no progress bar off a terminal */
    CHECK(cached_weights_match());
    CHECK(exists("hub/org/tiny/snapshots/main/config.json"));
    CHECK(!exists("hub/org/tiny/snapshots/main/preprocessor_config.json")); /* a 404: optional */
    CHECK(!exists("hub/org/tiny/incomplete"));
    CHECKF(hub_count(&state.hub_requests) == 3, "%d requests", state.hub_requests);

    /* in the cache: no request at all, online or offline */
    r = inspect("hf:org/tiny@main");
    CHECK(r->status == 0);
    setenv("HF_HUB_OFFLINE", "1", 1);
    r = inspect("hf:org/tiny");
    CHECKF(r->status == 0, "offline with the model cached: %s", r->err);
    CHECK(hub_count(&state.hub_requests) == 3);

    /* offline without it: a clear error, still no request */
    r = inspect("hf:org/tiny@v2");
    CHECKF(r->status == 1 && strstr(r->err, "offline") && strstr(r->err, "not in the cache"),
           "offline, not cached: exit %d: %s", r->status, r->err);
    unsetenv("HF_HUB_OFFLINE");
    setenv("VITFIT_HUB_OFFLINE", "true", 1);
    r = inspect("hf:org/other");
    CHECKF(r->status == 1 && strstr(r->err, "offline"), "VITFIT_HUB_OFFLINE: %s", r->err);
    CHECK(hub_count(&state.hub_requests) == 3);
    CHECK(!exists("hub/org/other"));
    unsetenv("VITFIT_HUB_OFFLINE");

    /* another revision is another directory */
    r = inspect("hf:org/tiny@v2");
    CHECKF(r->status == 1 && strstr(r->err, "404"), "a missing revision: %s", r->err);
    CHECK(exists("hub/org/tiny/snapshots/main/model.safetensors"));
    CHECK(!exists("hub/org/tiny/snapshots/v2") && !exists("hub/org/tiny/incomplete"));
}

/* Cut mid-file, then resumed: through the CDN (lfs) or from the hub. */
static void test_resume(bool lfs, bool ignore_range)
{
    const char *what = lfs ? "resume via the CDN" : ignore_range ? "Range ignored" : "resume";
    fresh();
    state.lfs = lfs;
    state.cut_once = true;
    run_result *r = inspect("hf:org/tiny");
    CHECKF(r->status == 1 && strstr(r->err, "run the command again to resume"),
           "%s: the cut run: exit %d: %s", what, r->status, r->err);
    CHECKF(file_size("hub/org/tiny/incomplete/main/model.safetensors.part") == CUT_AT,
           "%s: .part holds %lld bytes", what,
           file_size("hub/org/tiny/incomplete/main/model.safetensors.part"));
    CHECK(exists("hub/org/tiny/incomplete/main/config.json")); /* done before the cut */
    CHECK(!exists("hub/org/tiny/snapshots"));                   /* nothing for the loader */
    int config_requests = hub_count(&state.hub_requests) - hub_count(&state.hub_weights);

    pthread_mutex_lock(&state_mu);
    state.ignore_range = ignore_range;
    pthread_mutex_unlock(&state_mu);
    r = inspect("hf:org/tiny");
    CHECKF(r->status == 0, "%s: the second run: exit %d: %s", what, r->status, r->err);
    char want[64];
    snprintf(want, sizeof want, "bytes=%d-", CUT_AT);
    CHECKF(hub_count(&state.ranges) == 1 && strcmp(state.last_range, want) == 0,
           "%s: Range '%s' (%d)", what, state.last_range, state.ranges);
    CHECKF(cached_weights_match(), "%s: the resumed file's sha256 differs", what);
    CHECK(!exists("hub/org/tiny/incomplete"));
    /* config.json was kept, not fetched again (preprocessor_config.json is asked again) */
    CHECK(hub_count(&state.hub_requests) - hub_count(&state.hub_weights) == config_requests + 1);
    if (lfs)
        CHECK(hub_count(&state.cdn_weights) == 2);
}

/* A refused download: exit 1 naming why, and the cache as it was (empty). */
static void expect_refused(const char *what, const char *model, const char *why)
{
    run_result *r = inspect(model);
    CHECKF(r->status == 1 && strstr(r->err, why), "%s: exit %d, want 1 and '%s': %s", what,
           r->status, why, r->err);
    CHECKF(cache_files() == 0 && !exists("hub"), "%s: %d files left in the cache", what,
           cache_files());
}

static void test_refusals(void)
{
    fresh();
    expect_refused("404", "hf:org/missing", "404");
    CHECK(hub_count(&state.hub_requests) == 1);

    fresh();
    state.lfs = true;
    state.short_by = 1000;
    expect_refused("shorter than stated", "hf:org/tiny", "states");

    fresh();
    state.lfs = true;
    state.wrong_sha = true;
    expect_refused("wrong sha256", "hf:org/tiny", "sha256");
    CHECK(hub_count(&state.cdn_weights) == 1); /* it was fetched, then refused */

    fresh();
    setenv("VITFIT_HUB_MAX_BYTES", "4096", 1);
    expect_refused("over hub_max_bytes", "hf:org/tiny", "limit");
    unsetenv("VITFIT_HUB_MAX_BYTES");
    fresh();
    state.lfs = true;
    setenv("VITFIT_HUB_MAX_BYTES", "4096", 1);
    expect_refused("stated over hub_max_bytes", "hf:org/tiny", "limit");
    CHECK(hub_count(&state.cdn_requests) == 0); /* refused on X-Linked-Size alone */
    unsetenv("VITFIT_HUB_MAX_BYTES");

    /* a hub that does not answer: nothing to resume, nothing kept (its port is one this
     * test listened on and closed) */
    fresh();
    loopback_http_behaviour gone_b = {.kind = LOOPBACK_HTTP_BODY};
    loopback_http *gone = loopback_http_start(&gone_b, AF_INET);
    char gone_url[64] = "";
    if (gone)
        loopback_http_url(gone, "", gone_url, sizeof gone_url);
    loopback_http_stop(gone);
    setenv("VITFIT_HUB_URL", gone_url, 1);
    expect_refused("no hub", "hf:org/tiny", "no answer");

    fresh();
    state.redirect = "http://192.0.2.1/model.safetensors"; /* TEST-NET: never contacted */
    expect_refused("plain http elsewhere", "hf:org/tiny", "plain http");
    fresh();
    state.redirect = "file:///etc/passwd";
    expect_refused("file: redirect", "hf:org/tiny", "https");

    fresh();
    static char self[128];
    snprintf(self, sizeof self, "%s" REPO "model.safetensors", hub_url);
    state.redirect = self;
    expect_refused("a redirect loop", "hf:org/tiny", "too many redirects");
    CHECKF(hub_count(&state.hub_weights) == 6, "%d hops", state.hub_weights);
}

static void test_token(void)
{
    static const char secret[] = "hf_SeCrEt0123456789";
    fresh();
    state.lfs = true;
    setenv("HF_TOKEN", secret, 1);
    run_result *r = inspect("hf:org/tiny");
    CHECKF(r->status == 0, "with a token: %s", r->err);
    CHECK(cached_weights_match());
    char want[64];
    snprintf(want, sizeof want, "Bearer %s", secret);
    CHECKF(hub_count(&state.hub_auth) == hub_count(&state.hub_requests) &&
               strcmp(state.hub_auth_value, want) == 0,
           "hub: %d of %d requests had the token ('%s')", state.hub_auth, state.hub_requests,
           state.hub_auth_value);
    CHECKF(hub_count(&state.cdn_requests) == 1 && hub_count(&state.cdn_auth) == 0,
           "the CDN got the token on %d of %d requests", state.cdn_auth, state.cdn_requests);
    CHECK(strstr(r->err, secret) == NULL && strstr(r->out, secret) == NULL);

    /* failures never show it either */
    r = inspect("hf:org/missing");
    CHECK(r->status == 1 && strstr(r->err, "404") && !strstr(r->err, secret));
    setenv("HF_TOKEN", "two words", 1);
    r = inspect("hf:org/missing2");
    CHECKF(r->status == 2 && strstr(r->err, "HF_TOKEN") && !strstr(r->err, "two words"),
           "a token with a space: exit %d: %s", r->status, r->err);
    unsetenv("HF_TOKEN");
}

/* The hub's statement of a file is its first one: a CDN that sends the
 * client back into the hub, to a path it chooses, gets no token sent there,
 * and the X-Linked-* of that hop (another model's file) do not count. */
static void test_cdn_bounce(void)
{
    static const char secret[] = "hf_BoUnCe0123456789";
    fresh();
    state.lfs = true;
    state.cdn_bounce = true;
    setenv("HF_TOKEN", secret, 1);
    expect_refused("a CDN that redirects back into the hub", "hf:org/tiny", "sha256");
    CHECKF(hub_count(&state.bounces) == 1 && hub_count(&state.bounce_auth) == 0,
           "the hop back into the hub: %d requests, %d with the token", state.bounces,
           state.bounce_auth);
    unsetenv("HF_TOKEN");
}

/* Bodies that are not the whole file, when the hub states no size: each
 * refused, nothing cached. */
static void test_truncated(void)
{
    fresh();
    state.partial206 = true;
    expect_refused("a 206 of 100 bytes to a plain request", "hf:org/tiny", "does not run to");
    fresh();
    state.close_cut = true;
    expect_refused("a close-delimited body cut short", "hf:org/tiny", "no length");
    fresh();
    state.gzip = true;
    expect_refused("a gzip body", "hf:org/tiny", "Content-Encoding");
    fresh();
    state.config_damaged = true; /* as long as the right one: only its blob id tells */
    expect_refused("config.json that is not the hub's blob", "hf:org/tiny", "git blob id");
}

/* A body from the CDN needs the hub's sha256 and size; a malformed
 * X-Linked-Etag is refused, not ignored. */
static void test_cdn_unverified(void)
{
    fresh();
    state.lfs = true;
    state.no_etag = true;
    expect_refused("the CDN's body without a stated sha256", "hf:org/tiny", "sha256");
    CHECK(hub_count(&state.cdn_weights) == 0); /* refused on its headers */
    fresh();
    state.lfs = true;
    state.linked_etag = "\"0123-not-a-sha256\"";
    expect_refused("a malformed X-Linked-Etag", "hf:org/tiny", "not a sha256");
}

#define COMMIT_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define COMMIT_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

/* A branch that moves (X-Repo-Commit) never yields a snapshot of two
 * commits: a stage of another commit is not resumed, and a move between
 * two files of one run starts the download over. */
static void test_moving_branch(void)
{
    fresh();
    state.commit = COMMIT_A;
    state.cut_once = true;
    run_result *r = inspect("hf:org/tiny");
    CHECKF(r->status == 1 && file_size("hub/org/tiny/incomplete/main/model.safetensors.part") ==
                                 CUT_AT,
           "the cut run: exit %d: %s", r->status, r->err);
    pthread_mutex_lock(&state_mu);
    state.commit = COMMIT_B;
    pthread_mutex_unlock(&state_mu);
    r = inspect("hf:org/tiny");
    CHECKF(r->status == 0 && strstr(r->err, "moved"), "after the move: exit %d: %s", r->status,
           r->err);
    /* the Range asked is answered from commit B: dropped, and the file asked whole */
    CHECKF(hub_count(&state.ranges) == 1 && state.last_range[0] == '\0',
           "commit A's bytes were resumed (Range '%s')", state.last_range);
    CHECKF(hub_count(&state.hub_configs) == 2, "config.json asked %d times", state.hub_configs);
    CHECK(cached_weights_match());
    CHECK(!exists("hub/org/tiny/incomplete") && !exists("hub/org/tiny/snapshots/main/.commit"));

    fresh();
    state.commit = COMMIT_A;
    state.commit_next = COMMIT_B; /* config.json from A, the weights from B */
    r = inspect("hf:org/tiny");
    CHECKF(r->status == 0 && strstr(r->err, "moved"), "moved mid-run: exit %d: %s", r->status,
           r->err);
    CHECKF(hub_count(&state.hub_configs) == 2, "config.json asked %d times", state.hub_configs);
    CHECK(cached_weights_match());
}

/* The model's lock, held by this test as another vitfit would; -1 if not. */
static int hold_lock(void)
{
    char path[700];
    snprintf(path, sizeof path, "mkdir -p '%s/hub/org/tiny'", cache);
    CHECK(system(path) == 0);
    snprintf(path, sizeof path, "%s/hub/org/tiny/.lock", cache);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    CHECK(fd >= 0 && flock(fd, LOCK_EX) == 0);
    return fd;
}

/* vitfit with argv[1..], its stderr to log_path. */
static pid_t spawn_vitfit(char **argv, const char *log_path)
{
    const char *bin = getenv("VITFIT_BIN");
    argv[0] = (char *)(bin ? bin : "vitfit");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid = -1;
    CHECK(posix_spawn(&pid, argv[0], &fa, NULL, argv, environ) == 0);
    posix_spawn_file_actions_destroy(&fa);
    return pid;
}

/* Until log_path holds what (a hang check: 60 s). */
static bool wait_log(const char *log_path, const char *what)
{
    char log[4096] = "";
    for (int waited = 0; waited < 600; waited++) {
        slurp(log_path, log, sizeof log);
        if (strstr(log, what))
            return true;
        usleep(100000);
    }
    return false;
}

/* pid's exit code (128+signal), or -1 (then killed) if it runs past a hang check of 30 s. */
static int wait_exit(pid_t pid)
{
    int ws = 0;
    for (int waited = 0; waited < 300; waited++) {
        if (waitpid(pid, &ws, WNOHANG) == pid)
            return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
        usleep(100000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &ws, 0);
    return -1;
}

/* SIGTERM to a serve that waits for another vitfit's download: it stops. */
static void test_serve_stopped_waiting(void)
{
    fresh();
    int lock = hold_lock();
    char data[600], log_path[600], log[4096] = "";
    snprintf(data, sizeof data, "%s/data", tmpdir);
    snprintf(log_path, sizeof log_path, "%s/serve-wait.log", tmpdir);
    char *argv[] = {NULL, "serve", "--model", "hf:org/tiny", "--data-dir", data, "--port", "0",
                    "--log-format", "text", NULL};
    pid_t pid = spawn_vitfit(argv, log_path);
    CHECKF(wait_log(log_path, "waiting for another vitfit"), "serve never waited for the lock");
    kill(pid, SIGTERM);
    int code = wait_exit(pid);
    slurp(log_path, log, sizeof log);
    CHECKF(code == 0 && strstr(log, "stopped"), "serve stopped while waiting: exit %d, log: %s",
           code, log);
    CHECK(hub_count(&state.hub_requests) == 0);
    close(lock);
}

/* A process waiting for the lock while the holder's refused download
 * removes the model's directory (the lock file with it) goes on. */
static void test_lock_dir_removed(void)
{
    fresh();
    int lock = hold_lock();
    char log_path[600], log[4096] = "", hub_dir[600];
    snprintf(log_path, sizeof log_path, "%s/inspect-wait.log", tmpdir);
    char *argv[] = {NULL, "inspect", "--json", "hf:org/tiny", NULL};
    pid_t pid = spawn_vitfit(argv, log_path);
    CHECKF(wait_log(log_path, "waiting for another vitfit"), "inspect never waited for the lock");
    snprintf(hub_dir, sizeof hub_dir, "%s/hub", cache);
    remove_tree(hub_dir); /* what a refused download leaves: nothing */
    close(lock);
    int code = wait_exit(pid);
    slurp(log_path, log, sizeof log);
    CHECKF(code == 0, "after the holder's cleanup: exit %d: %s", code, log);
    CHECK(cached_weights_match());
}

/* A symlink planted in the stage is not committed into the snapshot. */
static void test_planted_symlink(void)
{
    fresh();
    char cmd[700], src[700], link[700];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/hub/org/tiny/incomplete/main'", cache);
    CHECK(system(cmd) == 0);
    snprintf(src, sizeof src, "%s/src/config.json", tmpdir);
    snprintf(link, sizeof link, "%s/hub/org/tiny/incomplete/main/config.json", cache);
    CHECK(symlink(src, link) == 0);
    run_result *r = inspect("hf:org/tiny");
    CHECKF(r->status == 0, "a planted symlink: exit %d: %s", r->status, r->err);
    struct stat sb;
    snprintf(link, sizeof link, "%s/hub/org/tiny/snapshots/main/config.json", cache);
    CHECKF(lstat(link, &sb) == 0 && S_ISREG(sb.st_mode), "the snapshot's config.json is %s",
           S_ISLNK(sb.st_mode) ? "a symlink" : "not a regular file");
    CHECK(hub_count(&state.hub_configs) == 1);

    /* a snapshot of symlinks is not used, nor downloaded over: said so, no request */
    fresh();
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/hub/org/tiny/snapshots/main'", cache);
    CHECK(system(cmd) == 0);
    static const char *const files[] = {"config.json", "model.safetensors"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(src, sizeof src, "%s/src/%s", tmpdir, files[i]);
        snprintf(link, sizeof link, "%s/hub/org/tiny/snapshots/main/%s", cache, files[i]);
        CHECK(symlink(src, link) == 0);
    }
    r = inspect("hf:org/tiny");
    CHECKF(r->status == 1 && strstr(r->err, "not a complete snapshot"),
           "a snapshot of symlinks: exit %d: %s", r->status, r->err);
    CHECK(hub_count(&state.hub_requests) == 0);
}

static char long_name[128];

/* SIGTERM while `vitfit serve` downloads: it stops at once (exit 0, "stopped"
 * in its log), keeping the .part for the next start. */
static void test_serve_stopped(void)
{
    fresh();
    state.stall = true;
    char data[600], log_path[600];
    snprintf(data, sizeof data, "%s/data", tmpdir);
    snprintf(log_path, sizeof log_path, "%s/serve.log", tmpdir);
    const char *bin = getenv("VITFIT_BIN");
    char *argv[] = {(char *)(bin ? bin : "vitfit"), "serve", "--model", "hf:org/tiny",
                    "--data-dir", data, "--port", "0", "--log-format", "text", NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    CHECK(posix_spawn(&pid, argv[0], &fa, NULL, argv, environ) == 0);
    posix_spawn_file_actions_destroy(&fa);
    /* a hang check, not a timing assertion: the .part fills within seconds */
    int waited = 0;
    while (file_size("hub/org/tiny/incomplete/main/model.safetensors.part") < CUT_AT &&
           waited++ < 600)
        usleep(100000);
    CHECKF(file_size("hub/org/tiny/incomplete/main/model.safetensors.part") == CUT_AT,
           "the download never started");
    kill(pid, SIGTERM);
    int ws = 0, code = -1;
    for (waited = 0; waited < 600; waited++) {
        if (waitpid(pid, &ws, WNOHANG) == pid) {
            code = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
            break;
        }
        usleep(100000);
    }
    if (code == -1) {
        kill(pid, SIGKILL);
        waitpid(pid, &ws, 0);
    }
    char log[4096] = "";
    slurp(log_path, log, sizeof log);
    CHECKF(code == 0 && strstr(log, "stopped") && strstr(log, "the download was stopped"),
           "serve stopped mid-download: exit %d, log: %s", code, log);
    CHECK(file_size("hub/org/tiny/incomplete/main/model.safetensors.part") == CUT_AT);
    CHECK(!exists("hub/org/tiny/snapshots"));
}

static void test_bad_names(void)
{
    static const char *const bad[] = {
        "hf:", "hf:org", "hf:/name", "hf:org/", "hf:org/name/extra", "hf:../name",
        "hf:org/..", "hf:org/na..me", "hf:org/name@", "hf:org/name@a/b", "hf:org/name@..",
        "hf:org/name@a@b", "hf:-org/name", "hf:org/.name", "hf:org/name.", "hf:org/na me",
        "hf:org/n\xc3\xa4me", "hf:org/name@main\n", long_name,
    };
    memset(long_name, 0, sizeof long_name);
    memcpy(long_name, "hf:org/", 7);
    memset(long_name + 7, 'a', 97); /* one over the limit */
    fresh();
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        run_result *r = inspect(bad[i]);
        CHECKF(r->status == 2 && strstr(r->err, "hf:ORG/NAME"), "'%s': exit %d: %s", bad[i],
               r->status, r->err);
    }
    /* the same refusal from every command that takes --model */
    run_result *r = run_vitfit("classify", "--model", "hf:org/../x", "@tests/data/images/chelsea.png",
                               NULL);
    CHECKF(r->status == 2, "classify: exit %d: %s", r->status, r->err);
    r = run_vitfit("serve", "--model", "hf:org/../x", "--port", "0", NULL);
    CHECKF(r->status == 2 && strstr(r->err, "hf:ORG/NAME"), "serve: exit %d: %s", r->status,
           r->err);
    /* 96 bytes is the most a name may have */
    long_name[7 + 96] = '\0';
    r = inspect(long_name);
    CHECKF(r->status == 1 && strstr(r->err, "404"), "a 96-byte name: %s", r->err);

    /* hub URLs: https, or http to a loopback address only */
    setenv("VITFIT_HUB_URL", "http://example.com", 1);
    r = inspect("hf:org/tiny");
    CHECKF(r->status == 2 && strstr(r->err, "not https"), "http hub: exit %d: %s", r->status,
           r->err);
    setenv("VITFIT_HUB_URL", "ftp://example.com", 1);
    r = inspect("hf:org/tiny");
    CHECKF(r->status == 2 && strstr(r->err, "VITFIT_HUB_URL"), "ftp hub: exit %d: %s",
           r->status, r->err);
    /* a password in the hub URL is not repeated */
    setenv("VITFIT_HUB_URL", "https://u:hunter2@hub.example", 1);
    r = inspect("hf:org/tiny");
    CHECKF(r->status == 2 && !strstr(r->err, "hunter2") && strstr(r->err, "***@hub.example"),
           "hub URL with a password: exit %d: %s", r->status, r->err);
    CHECK(hub_count(&state.hub_requests) == 1); /* only the 96-byte name was asked for */
    CHECK(cache_files() == 0);
}

int main(void)
{
    CHECK(mkdtemp(tmpdir) != NULL);
    snprintf(cache, sizeof cache, "%s/cache", tmpdir);
    make_model();
    loopback_http_behaviour hb = {.kind = LOOPBACK_HTTP_HANDLER, .handler = on_hub};
    loopback_http_behaviour cb = {.kind = LOOPBACK_HTTP_HANDLER, .handler = on_cdn};
    hub = loopback_http_start(&hb, AF_INET);
    cdn = loopback_http_start(&cb, AF_INET);
    CHECK(hub && cdn);
    if (hub && cdn && weights.data) {
        loopback_http_url(hub, "", hub_url, sizeof hub_url);
        loopback_http_url(cdn, "", cdn_url, sizeof cdn_url);
        test_download_cache_offline();
        test_resume(false, false);
        test_resume(true, false);
        test_resume(false, true);
        test_refusals();
        test_token();
        test_cdn_bounce();
        test_truncated();
        test_cdn_unverified();
        test_moving_branch();
        test_serve_stopped_waiting();
        test_lock_dir_removed();
        test_planted_symlink();
        test_serve_stopped();
        test_bad_names();
    }
    loopback_http_stop(hub);
    loopback_http_stop(cdn);
    free(config_json.data);
    free(weights.data);
    free(other.data);
    remove_tree(tmpdir);
    return check_result();
}
