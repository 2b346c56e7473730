/*
 * test_fetch.c - api_fetch against misbehaving HTTP servers on loopback
 * (api/fetch.h, tests/loopback_http.h).  Every server is one this test
 * starts on 127.0.0.1 or ::1; nothing else is ever connected to.  Results
 * are checked by code, bytes and the servers' connection counts, never by
 * timings: a server that should have been cut off runs for ~10 s and then
 * succeeds, so a bound that is not enforced shows up as the wrong code.
 *
 *  1. A body fetched whole (allow_private on); the bytes equal, one accept.
 *  2. The same server refused with allow_private off, under every spelling
 *     of its address (127.0.0.1, localhost, 0x7f.1, 2130706433, 017700000001,
 *     [::ffff:127.0.0.1], [::1]): FORBIDDEN, a message naming the address
 *     connected to (only the open-socket callback writes it), and zero
 *     accepts; with allow_private on the same spellings reach the server.
 *  3. Each redirect hop checked on its own: a policy that admits server A's
 *     port but not B's makes A's redirect to B FORBIDDEN with B never
 *     accepting; admitting both, the body arrives.  api_fetch_address_allowed
 *     (the callback's decision) on sockaddrs built in memory.
 *  4. Timeouts: a server dripping one byte per 50 ms, and one that waits
 *     before its status line, both end in TIMEOUT.
 *  5. Size: an endless body without Content-Length is TOO_LARGE and the
 *     server sees its connection cut (a failed write); a Content-Length over
 *     max_bytes is TOO_LARGE before any body (the server sends none and
 *     would idle past the timeout); exactly max_bytes is OK, one more is not.
 *  6. Redirect chains: max_redirects hops OK (one accept per hop), one more
 *     FAILED; max_redirects 0.  Redirects to file:, ftp:, gopher:, dict: are
 *     FORBIDDEN and the ftp target server never accepts.
 *  7. Final statuses other than 2xx (404, 500, 403, a 300 without Location)
 *     are FAILED with the status in the message, a 404 with an endless body
 *     too (not TOO_LARGE: error bodies are not read); 204 is OK with an empty
 *     (but allocated) body, 299 OK.
 *  8. Bad URLs (schemes, no host, userinfo, fragment, spaces and control
 *     bytes, over 8 KiB) are BAD_URL and never connect, allow_private on
 *     (it opens addresses, never URLs or schemes: the redirects of 6 are
 *     refused with it on too); 8192 bytes is fine; messages never quote a
 *     URL's path or query.
 *  9. What is sent: GET, User-Agent vitfit/0.1, Accept-Encoding identity,
 *     no cookies or credentials; a gzip body is delivered as sent (not
 *     decompressed: a bomb stays small); http_proxy & co. in the environment
 *     are ignored (the "proxy" server never accepts).
 * 10. api_fetch_reply's status and code for each result.
 * 11. Four threads fetching at once (for TSan).
 */
#include "fetch.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <curl/curl.h>

#include "check.h"
#include "loopback_http.h"

#define MSG 512

/* Limits for tests: generous, for a loaded machine and sanitizers; the
 * cases that expect a timeout set their own short one. */
static api_fetch_limits limits(bool allow_private)
{
    api_fetch_limits l = {.connect_timeout_ms = 5000, .timeout_ms = 10000, .max_bytes = 1 << 20,
                          .max_redirects = 3, .allow_private = allow_private};
    return l;
}

/* A deterministic "image" of n bytes. */
static uint8_t *pattern(size_t n)
{
    uint8_t *p = malloc(n);
    uint32_t x = 12345;
    for (size_t i = 0; i < n && p; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (uint8_t)(x >> 16);
    }
    return p;
}

/* api_fetch with the result, message and body checked in one place: expects
 * want; on OK, compares the body with (expect, expect_len) when expect is
 * not NULL.  Frees the body.  Returns the result. */
static api_fetch_result fetch_expect(const char *what, const char *url, const api_fetch_limits *lim,
                                     api_fetch_result want, const void *expect, size_t expect_len,
                                     char *msg)
{
    uint8_t *data = (uint8_t *)1;
    size_t len = 99;
    api_fetch_result r = api_fetch(url, lim, &data, &len, msg, MSG);
    CHECKF(r == want, "%s: got result %d, want %d (%s)", what, r, want, msg);
    if (r == API_FETCH_OK) {
        CHECKF(data != NULL, "%s: OK with a NULL body", what);
        if (expect)
            CHECKF(len == expect_len && memcmp(data, expect, len) == 0,
                   "%s: body of %zu bytes differs from the %zu expected", what, len, expect_len);
    } else {
        CHECKF(data == NULL && len == 0, "%s: failed but data %p len %zu", what, (void *)data, len);
        CHECKF(msg[0] != '\0', "%s: no message", what);
        fprintf(stderr, "  %.60s: %s\n", what, msg);
    }
    free(r == API_FETCH_OK ? data : NULL);
    return r;
}

/* Whether ::1 can be listened on here (IPv6 cases are skipped if not). */
static bool have_ipv6(void)
{
    loopback_http_behaviour b = {.kind = LOOPBACK_HTTP_BODY};
    loopback_http *s = loopback_http_start(&b, AF_INET6);
    bool ok = s != NULL;
    loopback_http_stop(s);
    return ok;
}

/* ---- 1, 2: a body, and the guard ---- */

static void test_ok_and_forbidden(bool ipv6)
{
    size_t n = 100000;
    uint8_t *img = pattern(n);
    loopback_http_behaviour b = {.kind = LOOPBACK_HTTP_BODY, .body = img, .body_len = n,
                                 .content_type = "image/png"};
    loopback_http *s = loopback_http_start(&b, AF_INET);
    CHECK(s != NULL);
    if (!s)
        return;
    int port = loopback_http_port(s);
    char url[256], msg[MSG];
    api_fetch_limits on = limits(true), off = limits(false);

    loopback_http_url(s, "/cat.png", url, sizeof url);
    fetch_expect("200 body", url, &on, API_FETCH_OK, img, n, msg);
    CHECKF(loopback_http_accepts(s) == 1, "accepts %u", loopback_http_accepts(s));

    const char *spellings[] = {"127.0.0.1", "localhost", "0x7f.1", "2130706433", "017700000001",
                               "127.1", "[::ffff:127.0.0.1]"};
    size_t ns = sizeof spellings / sizeof spellings[0];
    for (size_t i = 0; i < ns; i++) {
        snprintf(url, sizeof url, "http://%s:%d/cat.png", spellings[i], port);
        fetch_expect(url, url, &off, API_FETCH_FORBIDDEN, NULL, 0, msg);
        /* the message comes from the open-socket callback: it names the
         * address of the socket, not the host of the URL */
        CHECKF(strstr(msg, "connects to ") && strstr(msg, "loopback address"), "%s: message '%s'",
               url, msg);
    }
    CHECKF(loopback_http_accepts(s) == 1, "refused fetches reached the server: accepts %u",
           loopback_http_accepts(s));
    for (size_t i = 0; i < ns; i++) {
        if (!ipv6 && spellings[i][0] == '[')
            continue;
        snprintf(url, sizeof url, "http://%s:%d/cat.png", spellings[i], port);
        fetch_expect(url, url, &on, API_FETCH_OK, img, n, msg);
    }
    unsigned want = 1 + (unsigned)ns - (ipv6 ? 0 : 1);
    CHECKF(loopback_http_accepts(s) == want, "accepts %u, want %u", loopback_http_accepts(s), want);
    loopback_http_stop(s);

    if (ipv6) {
        loopback_http *s6 = loopback_http_start(&b, AF_INET6);
        CHECK(s6 != NULL);
        if (s6) {
            loopback_http_url(s6, "/x", url, sizeof url);
            fetch_expect("[::1] off", url, &off, API_FETCH_FORBIDDEN, NULL, 0, msg);
            CHECKF(strstr(msg, "connects to ::1, a loopback address") != NULL, "message '%s'", msg);
            CHECK(loopback_http_accepts(s6) == 0);
            fetch_expect("[::1] on", url, &on, API_FETCH_OK, img, n, msg);
            CHECK(loopback_http_accepts(s6) == 1);
            loopback_http_stop(s6);
        }
    } else {
        fprintf(stderr, "note: no ::1 here; IPv6 cases skipped\n");
    }
    free(img);
}

/* ---- 3: every hop ---- */

/* A policy admitting connects to one port only (any loopback address). */
static bool only_port(void *ctx, const struct sockaddr *sa, socklen_t len)
{
    int port = *(const int *)ctx;
    if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in a;
        memcpy(&a, sa, sizeof a);
        return ntohs(a.sin_port) == port;
    }
    return false;
}

static bool any_port(void *ctx, const struct sockaddr *sa, socklen_t len)
{
    (void)ctx;
    (void)sa;
    (void)len;
    return true;
}

static void test_every_hop(void)
{
    size_t n = 5000;
    uint8_t *img = pattern(n);
    loopback_http_behaviour bb = {.kind = LOOPBACK_HTTP_BODY, .body = img, .body_len = n};
    loopback_http *b = loopback_http_start(&bb, AF_INET);
    char burl[128], aurl[128], msg[MSG];
    loopback_http_url(b, "/final", burl, sizeof burl);
    loopback_http_behaviour ab = {.kind = LOOPBACK_HTTP_REDIRECT, .location = burl};
    loopback_http *a = loopback_http_start(&ab, AF_INET);
    loopback_http_url(a, "/start", aurl, sizeof aurl);
    api_fetch_limits lim = limits(false);
    int a_port = loopback_http_port(a);

    uint8_t *data;
    size_t len;
    api_fetch_result r = api_fetch_with_policy(aurl, &lim, only_port, &a_port, &data, &len, msg, MSG);
    CHECKF(r == API_FETCH_FORBIDDEN, "redirect to a refused port: result %d (%s)", r, msg);
    CHECKF(strstr(msg, "connects to 127.0.0.1") != NULL, "message '%s'", msg);
    CHECKF(loopback_http_accepts(a) == 1 && loopback_http_accepts(b) == 0,
           "accepts: a %u (want 1), b %u (want 0)", loopback_http_accepts(a), loopback_http_accepts(b));

    r = api_fetch_with_policy(aurl, &lim, any_port, NULL, &data, &len, msg, MSG);
    CHECKF(r == API_FETCH_OK && len == n && memcmp(data, img, n) == 0, "both admitted: result %d (%s)",
           r, msg);
    if (r == API_FETCH_OK)
        free(data);
    CHECK(loopback_http_accepts(a) == 2 && loopback_http_accepts(b) == 1);
    loopback_http_stop(a);
    loopback_http_stop(b);
    free(img);

    /* the callback's decision, on addresses built in memory */
    struct sockaddr_in v4;
    memset(&v4, 0, sizeof v4);
    v4.sin_family = AF_INET;
    url_guard_class c;
    inet_pton(AF_INET, "127.0.0.1", &v4.sin_addr);
    CHECK(!api_fetch_address_allowed((struct sockaddr *)&v4, sizeof v4, false, &c) && c == URL_GUARD_LOOPBACK);
    CHECK(api_fetch_address_allowed((struct sockaddr *)&v4, sizeof v4, true, &c));
    inet_pton(AF_INET, "169.254.169.254", &v4.sin_addr);
    CHECK(!api_fetch_address_allowed((struct sockaddr *)&v4, sizeof v4, false, &c) && c == URL_GUARD_LINK_LOCAL);
    inet_pton(AF_INET, "224.0.0.1", &v4.sin_addr);
    CHECK(!api_fetch_address_allowed((struct sockaddr *)&v4, sizeof v4, true, &c) && c == URL_GUARD_MULTICAST);
    inet_pton(AF_INET, "8.8.8.8", &v4.sin_addr);
    CHECK(api_fetch_address_allowed((struct sockaddr *)&v4, sizeof v4, false, NULL));
    struct sockaddr_in6 v6;
    memset(&v6, 0, sizeof v6);
    v6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "::ffff:10.0.0.1", &v6.sin6_addr);
    CHECK(!api_fetch_address_allowed((struct sockaddr *)&v6, sizeof v6, false, &c) && c == URL_GUARD_PRIVATE);
    inet_pton(AF_INET6, "2001:4860::8888", &v6.sin6_addr);
    CHECK(api_fetch_address_allowed((struct sockaddr *)&v6, sizeof v6, false, &c) && c == URL_GUARD_PUBLIC);
}

/* ---- 4: time ---- */

static void test_timeouts(void)
{
    char url[128], msg[MSG];
    api_fetch_limits lim = limits(true);
    lim.timeout_ms = 300;
    uint8_t *body = pattern(200);

    /* 200 bytes, one per 50 ms: 10 s unbounded */
    loopback_http_behaviour drip = {.kind = LOOPBACK_HTTP_DRIP, .body = body, .body_len = 200,
                                    .drip_ms = 50};
    loopback_http *s = loopback_http_start(&drip, AF_INET);
    loopback_http_url(s, "/slow", url, sizeof url);
    fetch_expect("drip", url, &lim, API_FETCH_TIMEOUT, NULL, 0, msg);
    CHECK(loopback_http_requests(s) == 1);
    loopback_http_stop(s);

    /* 10 s before the status line */
    loopback_http_behaviour late = {.kind = LOOPBACK_HTTP_BODY, .body = body, .body_len = 200,
                                    .delay_ms = 10000};
    s = loopback_http_start(&late, AF_INET);
    loopback_http_url(s, "/late", url, sizeof url);
    fetch_expect("late headers", url, &lim, API_FETCH_TIMEOUT, NULL, 0, msg);
    CHECK(strstr(msg, "in time") != NULL);
    loopback_http_stop(s);
    free(body);
}

/* ---- 5: size ---- */

static void test_sizes(void)
{
    char url[128], msg[MSG];
    api_fetch_limits lim = limits(true);
    lim.max_bytes = 100000;

    loopback_http_behaviour endless = {.kind = LOOPBACK_HTTP_ENDLESS};
    loopback_http *s = loopback_http_start(&endless, AF_INET);
    loopback_http_url(s, "/endless", url, sizeof url);
    fetch_expect("endless", url, &lim, API_FETCH_TOO_LARGE, NULL, 0, msg);
    CHECKF(loopback_http_wait_closed(s, 1, 10000), "the endless server still writes");
    CHECKF(loopback_http_cuts(s) == 1, "cuts %u: the server did not see the connection cut",
           loopback_http_cuts(s));
    loopback_http_stop(s);

    /* a Content-Length over the cap, and no body ever: refused at the header
     * (unbounded, this would be a TIMEOUT) */
    lim.timeout_ms = 2000;
    const uint64_t declared[] = {100001, (uint64_t)1 << 40};
    for (int i = 0; i < 2; i++) {
        loopback_http_behaviour liar = {.kind = LOOPBACK_HTTP_DECLARE, .declared_length = declared[i]};
        s = loopback_http_start(&liar, AF_INET);
        loopback_http_url(s, "/big", url, sizeof url);
        fetch_expect("declared too large", url, &lim, API_FETCH_TOO_LARGE, NULL, 0, msg);
        CHECK(strstr(msg, "larger than 100000 bytes") != NULL);
        loopback_http_stop(s);
    }

    /* the edge: exactly max_bytes is fine, one more is not */
    uint8_t *img = pattern(100001);
    for (size_t n = 100000; n <= 100001; n++) {
        loopback_http_behaviour b = {.kind = LOOPBACK_HTTP_BODY, .body = img, .body_len = n};
        s = loopback_http_start(&b, AF_INET);
        loopback_http_url(s, "/edge", url, sizeof url);
        fetch_expect(n == 100000 ? "max_bytes" : "max_bytes + 1", url, &lim,
                     n == 100000 ? API_FETCH_OK : API_FETCH_TOO_LARGE, img, n, msg);
        loopback_http_stop(s);
    }
    free(img);
}

/* ---- 6: redirects ---- */

static void test_redirects(void)
{
    char url[256], msg[MSG];
    uint8_t *img = pattern(3000);
    loopback_http_behaviour chain = {.kind = LOOPBACK_HTTP_CHAIN, .body = img, .body_len = 3000};
    loopback_http *s = loopback_http_start(&chain, AF_INET);
    api_fetch_limits lim = limits(true);

    loopback_http_url(s, "/3", url, sizeof url);
    fetch_expect("3 redirects, 3 allowed", url, &lim, API_FETCH_OK, img, 3000, msg);
    CHECKF(loopback_http_accepts(s) == 4, "accepts %u, want 4", loopback_http_accepts(s));
    loopback_http_url(s, "/4", url, sizeof url);
    fetch_expect("4 redirects, 3 allowed", url, &lim, API_FETCH_FAILED, NULL, 0, msg);
    CHECKF(strstr(msg, "too many redirects") != NULL, "message '%s'", msg);
    CHECKF(loopback_http_accepts(s) == 8, "accepts %u, want 8", loopback_http_accepts(s));
    lim.max_redirects = 0;
    fetch_expect("1 redirect, none allowed", url, &lim, API_FETCH_FAILED, NULL, 0, msg);
    loopback_http_url(s, "/0", url, sizeof url);
    fetch_expect("no redirect, none allowed", url, &lim, API_FETCH_OK, img, 3000, msg);
    loopback_http_stop(s);

    /* redirects away from http(s) */
    loopback_http_behaviour tb = {.kind = LOOPBACK_HTTP_BODY, .body = img, .body_len = 3000};
    loopback_http *target = loopback_http_start(&tb, AF_INET);
    char ftp[128], http[128];
    snprintf(ftp, sizeof ftp, "ftp://127.0.0.1:%d/x", loopback_http_port(target));
    loopback_http_url(target, "/ok", http, sizeof http);
    const char *locations[] = {"file:///etc/passwd", ftp, "gopher://127.0.0.1:1/", "dict://127.0.0.1:1/x",
                               http};
    lim = limits(true);
    for (int i = 0; i < 5; i++) {
        loopback_http_behaviour rb = {.kind = LOOPBACK_HTTP_REDIRECT, .location = locations[i]};
        s = loopback_http_start(&rb, AF_INET);
        loopback_http_url(s, "/go", url, sizeof url);
        api_fetch_result want = i < 4 ? API_FETCH_FORBIDDEN : API_FETCH_OK;
        fetch_expect(locations[i], url, &lim, want, img, 3000, msg);
        if (i < 4)
            CHECKF(strstr(msg, "not http or https") != NULL, "%s: message '%s'", locations[i], msg);
        loopback_http_stop(s);
        CHECKF(loopback_http_accepts(target) == (i < 4 ? 0u : 1u), "after %s: target accepts %u",
               locations[i], loopback_http_accepts(target));
    }
    loopback_http_stop(target);
    free(img);
}

/* ---- 7: statuses ---- */

/* 404 with a body that never ends. */
static void endless_404(loopback_http_conn *c, const loopback_http_request *req, void *ctx)
{
    (void)req;
    (void)ctx;
    static const char chunk[16384];
    if (loopback_http_printf(c, "HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n") == 0)
        while (loopback_http_write(c, chunk, sizeof chunk) == 0)
            ;
}

static void test_statuses(void)
{
    char url[128], msg[MSG];
    api_fetch_limits lim = limits(true);
    const int statuses[] = {404, 500, 403};
    for (int i = 0; i < 3; i++) {
        loopback_http_behaviour b = {.kind = LOOPBACK_HTTP_BODY, .status = statuses[i],
                                     .body = "nope", .body_len = 4};
        loopback_http *s = loopback_http_start(&b, AF_INET);
        loopback_http_url(s, "/missing", url, sizeof url);
        fetch_expect("error status", url, &lim, API_FETCH_FAILED, NULL, 0, msg);
        char want[32];
        snprintf(want, sizeof want, "answered %d", statuses[i]);
        CHECKF(strstr(msg, want) != NULL, "message '%s' lacks '%s'", msg, want);
        loopback_http_stop(s);
    }
    /* a 300 without Location is final: not 2xx */
    loopback_http_behaviour multi = {.kind = LOOPBACK_HTTP_BODY, .status = 300, .body = "x", .body_len = 1};
    loopback_http *m = loopback_http_start(&multi, AF_INET);
    loopback_http_url(m, "/choices", url, sizeof url);
    fetch_expect("300", url, &lim, API_FETCH_FAILED, NULL, 0, msg);
    CHECKF(strstr(msg, "answered 300") != NULL, "message '%s'", msg);
    loopback_http_stop(m);
    multi.status = 299;
    m = loopback_http_start(&multi, AF_INET);
    loopback_http_url(m, "/odd", url, sizeof url);
    fetch_expect("299", url, &lim, API_FETCH_OK, "x", 1, msg);
    loopback_http_stop(m);

    /* an error status is reported as such, not read: a 404 with an endless
     * body is "answered 404", not too large */
    loopback_http_behaviour big404 = {.kind = LOOPBACK_HTTP_HANDLER, .handler = endless_404};
    m = loopback_http_start(&big404, AF_INET);
    loopback_http_url(m, "/gone", url, sizeof url);
    lim.max_bytes = 100000;
    fetch_expect("404, endless body", url, &lim, API_FETCH_FAILED, NULL, 0, msg);
    CHECKF(strstr(msg, "answered 404") != NULL, "message '%s'", msg);
    loopback_http_stop(m);
    lim = limits(true);

    loopback_http_behaviour empty = {.kind = LOOPBACK_HTTP_BODY, .status = 204};
    loopback_http *s = loopback_http_start(&empty, AF_INET);
    loopback_http_url(s, "/empty", url, sizeof url);
    fetch_expect("204", url, &lim, API_FETCH_OK, "", 0, msg);
    loopback_http_stop(s);
}

/* ---- 8: bad URLs ---- */

static void test_bad_urls(void)
{
    loopback_http_behaviour b = {.kind = LOOPBACK_HTTP_BODY, .body = "img", .body_len = 3};
    loopback_http *s = loopback_http_start(&b, AF_INET);
    int port = loopback_http_port(s);
    char msg[MSG];
    api_fetch_limits lim = limits(true);
    char u[20][160];
    int k = 0;
    snprintf(u[k++], 160, "ftp://127.0.0.1:%d/x", port);
    snprintf(u[k++], 160, "file:///etc/passwd");
    snprintf(u[k++], 160, "gopher://127.0.0.1:%d/", port);
    snprintf(u[k++], 160, "data:image/png;base64,iVBORw0KGgo=");
    snprintf(u[k++], 160, "javascript:alert(1)");
    snprintf(u[k++], 160, "127.0.0.1:%d/x", port);          /* no scheme */
    snprintf(u[k++], 160, "//127.0.0.1:%d/x", port);
    snprintf(u[k++], 160, "http://");
    snprintf(u[k++], 160, "http:///x");
    snprintf(u[k++], 160, "http://user:pw@127.0.0.1:%d/x", port);
    snprintf(u[k++], 160, "http://user@127.0.0.1:%d/x", port);
    snprintf(u[k++], 160, "http://:pw@127.0.0.1:%d/x", port);
    snprintf(u[k++], 160, "http://127.0.0.1:%d/a b", port);
    snprintf(u[k++], 160, "http://127.0.0.1:%d/a\tb", port);
    snprintf(u[k++], 160, "http://127.0.0.1:%d/a\x01", port);
    snprintf(u[k++], 160, "http://127.0.0.1:%d/a\x7f", port);
    snprintf(u[k++], 160, "http://127.0.0.1:%d/x#frag", port);
    snprintf(u[k++], 160, " http://127.0.0.1:%d/x", port);
    snprintf(u[k++], 160, "%s", "");
    snprintf(u[k++], 160, "http://127.0.0.1:99999/x");
    for (int i = 0; i < k; i++) {
        fetch_expect(u[i], u[i], &lim, API_FETCH_BAD_URL, NULL, 0, msg);
        /* spaces and control bytes are refused before curl sees them */
        if (strpbrk(u[i], " \t\x01\x7f"))
            CHECKF(strstr(msg, "space or control character") != NULL, "message '%s'", msg);
    }
    uint8_t *d = NULL;
    size_t n = 0;
    CHECK(api_fetch(NULL, &lim, &d, &n, msg, MSG) == API_FETCH_BAD_URL);

    /* length: 8192 bytes is a URL, 8193 is not */
    char *longurl = malloc(API_FETCH_MAX_URL + 2);
    int head = snprintf(longurl, 64, "http://127.0.0.1:%d/", port);
    memset(longurl + head, 'a', API_FETCH_MAX_URL + 1 - (size_t)head);
    longurl[API_FETCH_MAX_URL + 1] = '\0';
    fetch_expect("8193 bytes", longurl, &lim, API_FETCH_BAD_URL, NULL, 0, msg);
    CHECK(strstr(msg, "longer than 8192") != NULL);
    CHECKF(loopback_http_accepts(s) == 0, "bad URLs reached the server: accepts %u",
           loopback_http_accepts(s));
    longurl[API_FETCH_MAX_URL] = '\0';
    fetch_expect("8192 bytes", longurl, &lim, API_FETCH_OK, "img", 3, msg);
    CHECK(loopback_http_accepts(s) == 1);
    free(longurl);

    /* upper-case scheme and a query string are fine */
    char ok[128];
    snprintf(ok, sizeof ok, "HTTP://127.0.0.1:%d/x.png?size=2&token=secret", port);
    fetch_expect("upper-case scheme", ok, &lim, API_FETCH_OK, "img", 3, msg);
    loopback_http_stop(s);

    /* the message never quotes the path or query */
    loopback_http_behaviour nf = {.kind = LOOPBACK_HTTP_BODY, .status = 404};
    s = loopback_http_start(&nf, AF_INET);
    snprintf(ok, sizeof ok, "http://127.0.0.1:%d/private/path?token=secret", loopback_http_port(s));
    fetch_expect("404 with a token", ok, &lim, API_FETCH_FAILED, NULL, 0, msg);
    CHECKF(!strstr(msg, "secret") && !strstr(msg, "private"), "message quotes the URL: '%s'", msg);
    loopback_http_stop(s);
}

/* ---- 9: what goes on the wire ---- */

/* What a handler saw of the last request. */
typedef struct seen {
    pthread_mutex_t mu;
    char method[16], ua[64], ae[64], cookie[64], auth[64];
    bool has_cookie, has_auth;
} seen;

static void record(loopback_http_conn *c, const loopback_http_request *req, void *ctx)
{
    seen *w = ctx;
    pthread_mutex_lock(&w->mu);
    snprintf(w->method, sizeof w->method, "%s", req->method);
    if (!loopback_http_header(req, "User-Agent", w->ua, sizeof w->ua))
        w->ua[0] = '\0';
    if (!loopback_http_header(req, "Accept-Encoding", w->ae, sizeof w->ae))
        w->ae[0] = '\0';
    w->has_cookie = loopback_http_header(req, "Cookie", w->cookie, sizeof w->cookie) != NULL;
    w->has_auth = loopback_http_header(req, "Authorization", w->auth, sizeof w->auth) != NULL;
    pthread_mutex_unlock(&w->mu);
    loopback_http_respond(c, 200, "image/png", "Set-Cookie: a=b\r\n", "ok", 2);
}

/* Answers with a gzip-encoded body (the bytes in ctx). */
typedef struct blob {
    const uint8_t *p;
    size_t n;
} blob;

static void send_gzip(loopback_http_conn *c, const loopback_http_request *req, void *ctx)
{
    (void)req;
    const blob *g = ctx;
    loopback_http_respond(c, 200, "image/png", "Content-Encoding: gzip\r\n", g->p, g->n);
}

/* gzip of n zero bytes (caller frees); *out_n its size. */
static uint8_t *gzip_zeros(size_t n, size_t *out_n)
{
    uint8_t *zeros = calloc(1, n);
    size_t cap = n / 100 + 4096;
    uint8_t *out = malloc(cap);
    z_stream z;
    memset(&z, 0, sizeof z);
    if (!zeros || !out || deflateInit2(&z, 9, Z_DEFLATED, 31, 9, Z_DEFAULT_STRATEGY) != Z_OK) {
        free(zeros);
        free(out);
        return NULL;
    }
    z.next_in = zeros;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    int rc = deflate(&z, Z_FINISH);
    *out_n = z.total_out;
    deflateEnd(&z);
    free(zeros);
    if (rc != Z_STREAM_END) {
        free(out);
        return NULL;
    }
    return out;
}

static void test_wire(void)
{
    char url[128], msg[MSG];
    api_fetch_limits lim = limits(true);
    seen w;
    memset(&w, 0, sizeof w);
    pthread_mutex_init(&w.mu, NULL);
    loopback_http_behaviour hb = {.kind = LOOPBACK_HTTP_HANDLER, .handler = record, .ctx = &w};
    loopback_http *s = loopback_http_start(&hb, AF_INET);
    loopback_http_url(s, "/h", url, sizeof url);
    fetch_expect("headers", url, &lim, API_FETCH_OK, "ok", 2, msg);
    fetch_expect("headers again (a cookie would be sent now)", url, &lim, API_FETCH_OK, "ok", 2, msg);
    pthread_mutex_lock(&w.mu);
    CHECKF(strcmp(w.method, "GET") == 0, "method '%s'", w.method);
    CHECKF(strcmp(w.ua, "vitfit/0.1") == 0, "User-Agent '%s'", w.ua);
    CHECKF(strcmp(w.ae, "identity") == 0, "Accept-Encoding '%s'", w.ae);
    CHECKF(!w.has_cookie && !w.has_auth, "cookie '%s' auth '%s'", w.cookie, w.auth);
    pthread_mutex_unlock(&w.mu);
    loopback_http_stop(s);
    pthread_mutex_destroy(&w.mu);

    /* a gzip body comes through as sent: 4 MiB of zeros stay ~4 KiB */
    blob g;
    uint8_t *gz = gzip_zeros(4 << 20, &g.n);
    CHECK(gz != NULL);
    if (gz) {
        g.p = gz;
        loopback_http_behaviour gb = {.kind = LOOPBACK_HTTP_HANDLER, .handler = send_gzip, .ctx = &g};
        s = loopback_http_start(&gb, AF_INET);
        loopback_http_url(s, "/bomb", url, sizeof url);
        lim.max_bytes = 100000;
        fetch_expect("gzip body", url, &lim, API_FETCH_OK, gz, g.n, msg);
        loopback_http_stop(s);
        free(gz);
    }

    /* proxies in the environment are ignored */
    loopback_http_behaviour pb = {.kind = LOOPBACK_HTTP_BODY, .body = "proxy", .body_len = 5};
    loopback_http_behaviour ob = {.kind = LOOPBACK_HTTP_BODY, .body = "origin", .body_len = 6};
    loopback_http *proxy = loopback_http_start(&pb, AF_INET);
    loopback_http *origin = loopback_http_start(&ob, AF_INET);
    char purl[128];
    loopback_http_url(proxy, "/", purl, sizeof purl);
    const char *vars[] = {"http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"};
    for (int i = 0; i < 6; i++)
        setenv(vars[i], purl, 1);
    unsetenv("no_proxy");
    unsetenv("NO_PROXY");
    loopback_http_url(origin, "/x", url, sizeof url);
    lim = limits(true);
    fetch_expect("with http_proxy set", url, &lim, API_FETCH_OK, "origin", 6, msg);
    CHECKF(loopback_http_accepts(proxy) == 0 && loopback_http_accepts(origin) == 1,
           "proxy accepts %u (want 0), origin %u (want 1)", loopback_http_accepts(proxy),
           loopback_http_accepts(origin));
    for (int i = 0; i < 6; i++)
        unsetenv(vars[i]);
    loopback_http_stop(proxy);
    loopback_http_stop(origin);
}

/* ---- 10: replies ---- */

static void test_reply(void)
{
    static const struct {
        api_fetch_result res;
        int status;
        const char *code;
    } t[] = {
        {API_FETCH_BAD_URL, 400, "invalid_url"},     {API_FETCH_FORBIDDEN, 400, "url_forbidden"},
        {API_FETCH_FAILED, 422, "fetch_failed"},     {API_FETCH_TIMEOUT, 422, "fetch_timeout"},
        {API_FETCH_TOO_LARGE, 413, "image_too_large"},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        api_reply r;
        api_reply_init(&r);
        CHECK(api_fetch_reply(&r, t[i].res, "images[1]: ", "it went wrong") == -1);
        CHECKF(r.status == t[i].status, "result %d: status %d, want %d", t[i].res, r.status, t[i].status);
        json_error_t je;
        json_t *j = json_loadb(r.body, r.body_len, 0, &je);
        const char *code = NULL, *message = NULL;
        json_unpack(j, "{s:{s:s,s:s}}", "error", "code", &code, "message", &message);
        CHECKF(code && strcmp(code, t[i].code) == 0, "result %d: code %s, want %s", t[i].res,
               code ? code : "(none)", t[i].code);
        CHECKF(message && strcmp(message, "images[1]: it went wrong") == 0, "message '%s'",
               message ? message : "(none)");
        json_decref(j);
        api_reply_free(&r);
    }
    api_reply r;
    api_reply_init(&r);
    api_fetch_reply(&r, API_FETCH_TIMEOUT, NULL, "slow");
    CHECK(r.body && strstr(r.body, "\"message\":\"slow\"") != NULL);
    api_reply_free(&r);
}

/* ---- 11: threads ---- */

typedef struct worker {
    const char *url;
    const uint8_t *want;
    size_t n;
    int ok;
} worker;

static void *fetch_many(void *arg)
{
    worker *w = arg;
    api_fetch_limits lim = limits(true);
    char msg[MSG];
    for (int i = 0; i < 5; i++) {
        uint8_t *d;
        size_t n;
        if (api_fetch(w->url, &lim, &d, &n, msg, MSG) == API_FETCH_OK) {
            w->ok += n == w->n && memcmp(d, w->want, n) == 0;
            free(d);
        }
    }
    return NULL;
}

static void test_threads(void)
{
    size_t n = 200000;
    uint8_t *img = pattern(n);
    loopback_http_behaviour b = {.kind = LOOPBACK_HTTP_BODY, .body = img, .body_len = n};
    loopback_http *s = loopback_http_start(&b, AF_INET);
    char url[128];
    loopback_http_url(s, "/t", url, sizeof url);
    pthread_t th[4];
    worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (worker){.url = url, .want = img, .n = n};
        pthread_create(&th[i], NULL, fetch_many, &w[i]);
    }
    int ok = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ok += w[i].ok;
    }
    CHECKF(ok == 20, "%d of 20 concurrent fetches right", ok);
    CHECK(loopback_http_accepts(s) == 20);
    loopback_http_stop(s);
    free(img);
}

int main(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "curl_global_init failed\n");
        return 1;
    }
    bool ipv6 = have_ipv6();
    test_ok_and_forbidden(ipv6);
    test_every_hop();
    test_timeouts();
    test_sizes();
    test_redirects();
    test_statuses();
    test_bad_urls();
    test_wire();
    test_reply();
    test_threads();
    curl_global_cleanup();
    return check_result();
}
