/*
 * test_api_web.c - the static routes of the real `vitfit serve`: the try-it
 * page at /, its assets at /web/{file} and the OpenAPI document at
 * /openapi.yaml, embedded in the binary at build time (tools/embed_files.c).
 * The page's behaviour in a browser is tests/web/web_page.mjs.
 *
 * One server with an API key.  Checked:
 *  1. each file, GET without a key and with a wrong one: 200, the bytes of
 *     the file in the source tree, its Content-Type, X-Content-Type-Options
 *     nosniff, the Content-Security-Policy default-src 'self', Cache-Control
 *     no-cache, a strong ETag (the same on every request, different per
 *     file), X-Request-Id; while the API itself answers 401 without the key;
 *  2. HEAD: the same headers and Content-Length, no body;
 *  3. If-None-Match: the ETag, W/ + the ETag, a list holding it, "*" -> 304
 *     with the ETag and no body (HEAD too); another tag -> 200 with the body;
 *  4. what is not there: /web/ + unknown, empty, nested, over-long names,
 *     /index.html, /web/index.html -> 404 not_found in the error shape; other
 *     methods -> 405 with Allow: GET, HEAD;
 *  5. the page itself: every local src/href in index.html is served (200),
 *     and it holds no inline script, event handler or style attribute --
 *     what the policy would block in a browser.
 */
#include <ctype.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "serve_harness.h"
#include "test_util.h"

#define API_KEY "web-Key_0123456789"

static serve_proc S;
static CURL *h;

/* The embedded files: URL path, source file, Content-Type. */
static const struct {
    const char *path, *file, *type;
} assets[] = {
    {"/", "api/web/index.html", "text/html; charset=utf-8"},
    {"/web/app.js", "api/web/app.js", "text/javascript; charset=utf-8"},
    {"/web/app.css", "api/web/app.css", "text/css; charset=utf-8"},
    {"/openapi.yaml", "api/openapi.yaml", "application/yaml; charset=utf-8"},
};
#define NASSETS (sizeof assets / sizeof assets[0])

static char etags[NASSETS][64];

/* The header's value, "" when absent. */
static const char *header(const serve_resp *r, const char *name, char *buf, size_t len)
{
    return serve_header(r, name, buf, len) ? buf : "";
}

/* A strong ETag: "<16 hex digits>". */
static bool etag_ok(const char *e)
{
    if (strlen(e) != 18 || e[0] != '"' || e[17] != '"')
        return false;
    for (int i = 1; i < 17; i++)
        if (!isxdigit((unsigned char)e[i]))
            return false;
    return true;
}

/* The headers every static reply carries; the ETag into etag (>= 64). */
static void check_static_headers(const char *what, const serve_resp *r, char *etag)
{
    char v[256];
    CHECKF(strcmp(header(r, "X-Content-Type-Options", v, sizeof v), "nosniff") == 0,
           "%s: X-Content-Type-Options \"%s\"", what, v);
    header(r, "Content-Security-Policy", v, sizeof v);
    CHECKF(strncmp(v, "default-src 'self'", 18) == 0 && !strstr(v, "unsafe") &&
               strstr(v, "frame-ancestors 'none'"),
           "%s: Content-Security-Policy \"%s\"", what, v);
    CHECKF(strcmp(header(r, "Cache-Control", v, sizeof v), "no-cache") == 0,
           "%s: Cache-Control \"%s\"", what, v);
    CHECKF(*header(r, "X-Request-Id", v, sizeof v), "%s: no X-Request-Id", what);
    header(r, "ETag", etag, 64);
    CHECKF(etag_ok(etag), "%s: ETag \"%s\"", what, etag);
}

/* ---- 1, 2: GET and HEAD ------------------------------------------------- */

static void test_get_head(void)
{
    fprintf(stderr, "== GET and HEAD\n");
    for (size_t i = 0; i < NASSETS; i++) {
        char path[1024], what[128], v[256], etag[64];
        size_t len;
        uint8_t *want = serve_read_file(test_path(path, sizeof path, assets[i].file), &len);
        VIT_ASSERT(want);
        /* no key, a wrong key, the right key: the same reply */
        const char *auths[] = {"", "Bearer wrong", NULL};
        for (int a = 0; a < 3; a++) {
            snprintf(what, sizeof what, "GET %s (%s)", assets[i].path,
                     a == 0 ? "no key" : a == 1 ? "a wrong key" : "the key");
            serve_resp r;
            serve_request(&S, h, &(serve_req){.path = assets[i].path, .auth = auths[a]}, &r);
            CHECKF(r.status == 200, "%s: status %ld", what, r.status);
            CHECKF(r.body_len == len && memcmp(r.body, want, len) == 0,
                   "%s: %zu bytes, not the %zu of %s", what, r.body_len, len, assets[i].file);
            CHECKF(strcmp(header(&r, "Content-Type", v, sizeof v), assets[i].type) == 0,
                   "%s: Content-Type \"%s\", want \"%s\"", what, v, assets[i].type);
            check_static_headers(what, &r, etag);
            if (a == 0)
                snprintf(etags[i], sizeof etags[i], "%s", etag);
            else
                CHECKF(strcmp(etag, etags[i]) == 0, "%s: ETag %s, before %s", what, etag, etags[i]);
            serve_resp_free(&r);
        }
        for (size_t j = 0; j < i; j++)
            CHECKF(strcmp(etags[i], etags[j]) != 0, "%s and %s share the ETag %s", assets[i].path,
                   assets[j].path, etags[i]);

        snprintf(what, sizeof what, "HEAD %s", assets[i].path);
        serve_resp r;
        serve_request(&S, h, &(serve_req){.method = "HEAD", .path = assets[i].path, .auth = ""},
                      &r);
        char cl[32];
        snprintf(cl, sizeof cl, "%zu", len);
        CHECKF(r.status == 200 && r.body_len == 0, "%s: status %ld, %zu body bytes", what, r.status,
               r.body_len);
        CHECKF(strcmp(header(&r, "Content-Length", v, sizeof v), cl) == 0,
               "%s: Content-Length \"%s\", want %s", what, v, cl);
        CHECKF(strcmp(header(&r, "Content-Type", v, sizeof v), assets[i].type) == 0,
               "%s: Content-Type \"%s\"", what, v);
        check_static_headers(what, &r, etag);
        CHECKF(strcmp(etag, etags[i]) == 0, "%s: ETag %s, GET's %s", what, etag, etags[i]);
        serve_resp_free(&r);
        free(want);
    }
    /* the API still wants the key */
    serve_resp r;
    serve_request(&S, h, &(serve_req){.path = "/v1/tasks", .auth = ""}, &r);
    serve_check_error("GET /v1/tasks without the key", &r, 401, "unauthorized");
    serve_resp_free(&r);
}

/* ---- 3: conditional requests -------------------------------------------- */

static void test_not_modified(void)
{
    fprintf(stderr, "== If-None-Match\n");
    for (size_t i = 0; i < NASSETS; i++) {
        char line[4][160];
        snprintf(line[0], sizeof line[0], "If-None-Match: %s", etags[i]);
        snprintf(line[1], sizeof line[1], "If-None-Match: W/%s", etags[i]);
        snprintf(line[2], sizeof line[2], "If-None-Match: \"0000000000000000\", W/\"x\",%s",
                 etags[i]);
        snprintf(line[3], sizeof line[3], "If-None-Match: *");
        for (int k = 0; k < 5; k++) {
            const char *hdr[] = {line[k < 4 ? k : 0], NULL};
            const char *method = k == 4 ? "HEAD" : "GET";
            char what[800], v[64], etag[64];
            snprintf(what, sizeof what, "%s %s with %s", method, assets[i].path, hdr[0]);
            serve_resp r;
            serve_request(&S, h, &(serve_req){.method = method, .path = assets[i].path, .auth = "",
                                              .extra = hdr},
                          &r);
            CHECKF(r.status == 304 && r.body_len == 0, "%s: status %ld, %zu body bytes", what,
                   r.status, r.body_len);
            check_static_headers(what, &r, etag);
            CHECKF(strcmp(etag, etags[i]) == 0, "%s: ETag %s", what, etag);
            CHECKF(!*header(&r, "Content-Type", v, sizeof v), "%s: a 304 with Content-Type %s",
                   what, v);
            serve_resp_free(&r);
        }
        /* another file's tag, and a tag that only starts like this one */
        char other[160], prefix[160];
        snprintf(other, sizeof other, "If-None-Match: %s", etags[(i + 1) % NASSETS]);
        snprintf(prefix, sizeof prefix, "If-None-Match: %.17s", etags[i]);
        const char *const stale[] = {other, prefix};
        for (int k = 0; k < 2; k++) {
            const char *hdr[] = {stale[k], NULL};
            char what[256];
            snprintf(what, sizeof what, "GET %s with %s", assets[i].path, stale[k]);
            serve_resp r;
            serve_request(&S, h, &(serve_req){.path = assets[i].path, .auth = "", .extra = hdr},
                          &r);
            CHECKF(r.status == 200 && r.body_len > 0, "%s: status %ld, %zu body bytes", what,
                   r.status, r.body_len);
            serve_resp_free(&r);
        }
    }
}

/* ---- 4: what is not there ----------------------------------------------- */

static void test_missing(void)
{
    fprintf(stderr, "== not found, not allowed\n");
    char longname[200];
    memset(longname, 0, sizeof longname);
    memcpy(longname, "/web/", 5);
    memset(longname + 5, 'a', 90);
    const char *const missing[] = {"/web/nope.js", "/web/", "/web/app.js/x", "/web/.",
                                   "/web/APP.JS", "/index.html", "/web/index.html",
                                   "/web/app.css.map", "/openapi.json", longname};
    for (size_t i = 0; i < sizeof missing / sizeof *missing; i++) {
        char what[256];
        snprintf(what, sizeof what, "GET %.80s", missing[i]);
        serve_resp r;
        serve_request(&S, h, &(serve_req){.path = missing[i], .auth = ""}, &r);
        serve_check_error(what, &r, 404, "not_found");
        serve_resp_free(&r);
    }
    const char *const methods[] = {"POST", "PUT", "DELETE", "PATCH"};
    for (size_t i = 0; i < NASSETS; i++)
        for (size_t m = 0; m < sizeof methods / sizeof *methods; m++) {
            char what[128], allow[64];
            snprintf(what, sizeof what, "%s %s", methods[m], assets[i].path);
            serve_resp r;
            serve_request(&S, h, &(serve_req){.method = methods[m], .path = assets[i].path},
                          &r);
            serve_check_error(what, &r, 405, "method_not_allowed");
            CHECKF(strcmp(header(&r, "Allow", allow, sizeof allow), "GET, HEAD") == 0,
                   "%s: Allow \"%s\"", what, allow);
            serve_resp_free(&r);
        }
}

/* ---- 5: the page's references and its inline content -------------------- */

static void test_page(void)
{
    fprintf(stderr, "== the page\n");
    char path[1024];
    size_t len;
    char *html = (char *)serve_read_file(test_path(path, sizeof path, "api/web/index.html"), &len);
    VIT_ASSERT(html);
    int refs = 0;
    for (const char *p = html; (p = strpbrk(p, "sh")) != NULL; p++) {
        size_t skip = strncmp(p, "src=\"", 5) == 0 ? 5 : strncmp(p, "href=\"", 6) == 0 ? 6 : 0;
        if (!skip || (p > html && isalnum((unsigned char)p[-1])))
            continue;
        const char *v = p + skip, *end = strchr(v, '"');
        VIT_ASSERT(end);
        char ref[256];
        snprintf(ref, sizeof ref, "%.*s", (int)(end - v), v);
        CHECKF(ref[0] == '/' && ref[1] != '/', "index.html refers to \"%s\", not to a local path",
               ref);
        serve_resp r;
        serve_request(&S, h, &(serve_req){.path = ref, .auth = ""}, &r);
        CHECKF(r.status == 200, "index.html's %s: status %ld", ref, r.status);
        serve_resp_free(&r);
        refs++;
    }
    CHECKF(refs >= 3, "index.html refers to %d files (the script, the style sheet, ...)", refs);
    /* what the policy blocks: inline scripts, on* handlers, style attributes */
    for (const char *p = html; (p = strstr(p, "<script")) != NULL; p++) {
        char tag[256];
        snprintf(tag, sizeof tag, "%.*s", (int)strcspn(p, ">"), p);
        CHECKF(strstr(tag, " src=\"/") != NULL, "an inline script in index.html: %s", tag);
    }
    for (const char *p = html; (p = strpbrk(p, " \n")) != NULL; p++) {
        size_t n = strspn(p + 1, "abcdefghijklmnopqrstuvwxyz");
        bool blocked = p[1 + n] == '=' && ((n > 2 && strncmp(p + 1, "on", 2) == 0) ||
                                           (n == 5 && strncmp(p + 1, "style", 5) == 0));
        CHECKF(!blocked, "index.html has an attribute the policy blocks: %.40s", p + 1);
    }
    CHECKF(!strstr(html, "<style"), "an inline <style> in index.html");
    free(html);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_ALL);
    h = curl_easy_init();
    VIT_ASSERT(h);
    char data_dir[256];
    VIT_ASSERT(serve_tmpdir("web", data_dir, sizeof data_dir));
    bool up = serve_start(&S, data_dir, API_KEY, NULL);
    CHECKF(up, "the server did not start");
    if (up) {
        test_get_head();
        test_not_modified();
        test_missing();
        test_page();
        int st = serve_stop(&S, SIGTERM, 60000);
        CHECKF(st == 0, "the server after SIGTERM: exit %d", st);
    }
    curl_easy_cleanup(h);
    curl_global_cleanup();
    serve_rmtree(data_dir);
    int hf = serve_harness_failures();
    return check_result() || hf;
}
