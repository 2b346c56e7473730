/*
 * fetch.c - one image URL fetched through libcurl within hard bounds (fetch.h).
 *
 * The order of a fetch: check_url refuses what must never reach libcurl
 * (bytes, length, scheme, userinfo, fragment) using curl's own URL parser;
 * then one easy handle is set up with every option that bounds the transfer
 * (each setopt checked: an option this libcurl does not know must stop the
 * fetch, not silently drop a guard), performed, and its outcome mapped to an
 * api_fetch_result.  Two callbacks do the enforcing while curl runs:
 *   open_socket  sees every address before a socket is made for it and
 *                refuses the forbidden ones (remembering that it did, so the
 *                resulting "couldn't connect" reads as FORBIDDEN);
 *   on_body      appends the body to a buffer capped at max_bytes and stops
 *                the transfer at the first byte beyond it.
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "fetch.h"

_Static_assert(sizeof(curl_off_t) == sizeof(int64_t), "curl_off_t is 64-bit");

#define FETCH_USER_AGENT "vitfit/0.1"
#define FETCH_ORIGIN_MAX 120 /* bytes of scheme://host:port quoted in a message */

/* The state of one fetch, shared with the callbacks. */
typedef struct fetch_ctx {
    const api_fetch_limits *lim;
    api_fetch_policy_fn *policy; /* the open-socket decision */
    void *policy_ctx;
    uint8_t *buf;                /* the body so far: len bytes of cap */
    size_t len, cap;
    bool too_large;              /* on_body saw more than max_bytes */
    bool nomem;                  /* on_body could not grow buf */
    bool cancelled;              /* on_progress saw lim->cancel set */
    int refused;                 /* connects refused by policy */
    char refused_addr[INET6_ADDRSTRLEN];
    url_guard_class refused_class; /* of the first refused address */
} fetch_ctx;

/* Writes one sentence into msg (if there is room for any) and returns res. */
static api_fetch_result fail(char *msg, size_t msglen, api_fetch_result res, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static api_fetch_result fail(char *msg, size_t msglen, api_fetch_result res, const char *fmt, ...)
{
    if (msg && msglen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, msglen, fmt, ap);
        va_end(ap);
    }
    return res;
}

/* ---- the URL ---------------------------------------------------------------- */

/* Whether part of h is present (curl_url_get answers it), freeing the copy. */
static bool has_part(CURLU *h, CURLUPart part)
{
    char *s = NULL;
    CURLUcode rc = curl_url_get(h, part, &s, 0);
    curl_free(s);
    return rc == CURLUE_OK;
}

/* Checks url and, when acceptable, returns API_FETCH_OK with *out = curl's
 * normalised copy of it (curl_free) and origin = "scheme://host[:port]"
 * (truncated to fit, for messages).  Otherwise BAD_URL and a message that
 * does not quote the URL (it may hold credentials). */
static api_fetch_result check_url(const char *url, char **out, char *origin, size_t originlen,
                                  char *msg, size_t msglen)
{
    size_t n = url ? strnlen(url, API_FETCH_MAX_URL + 1) : 0;
    if (n == 0)
        return fail(msg, msglen, API_FETCH_BAD_URL, "the URL is empty");
    if (n > API_FETCH_MAX_URL)
        return fail(msg, msglen, API_FETCH_BAD_URL, "the URL is longer than %d bytes",
                    API_FETCH_MAX_URL);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= 0x20 || c == 0x7f)
            return fail(msg, msglen, API_FETCH_BAD_URL,
                        "the URL has a space or control character at byte %zu", i);
        if (c == '#')
            return fail(msg, msglen, API_FETCH_BAD_URL, "the URL has a fragment (#...)");
    }

    /* "scheme://authority": curl would read "http:/x" and "http:///x" as
     * http://x/, which is not what anyone wrote */
    const char *colon = strchr(url, ':');
    bool web = colon && ((colon - url == 4 && strncasecmp(url, "http", 4) == 0) ||
                         (colon - url == 5 && strncasecmp(url, "https", 5) == 0));
    if (web && (strncmp(colon, "://", 3) != 0 || colon[3] == '/' || colon[3] == '\\'))
        return fail(msg, msglen, API_FETCH_BAD_URL, "the URL has no host (scheme://host/...)");

    CURLU *h = curl_url();
    if (!h)
        return fail(msg, msglen, API_FETCH_FAILED, "out of memory parsing the URL");
    api_fetch_result res = API_FETCH_BAD_URL;
    char *scheme = NULL, *host = NULL, *port = NULL, *full = NULL;
    CURLUcode rc = curl_url_set(h, CURLUPART_URL, url, 0);
    if (rc != CURLUE_OK) {
        fail(msg, msglen, res, "the URL is not a valid absolute http(s) URL (%s)",
             curl_url_strerror(rc));
        goto done;
    }
    if (curl_url_get(h, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) {
        fail(msg, msglen, res, "the URL has no scheme; use http:// or https://");
        goto done;
    }
    if (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0) {
        fail(msg, msglen, res, "only http and https URLs are allowed, not %.16s:", scheme);
        goto done;
    }
    if (has_part(h, CURLUPART_USER) || has_part(h, CURLUPART_PASSWORD) ||
        has_part(h, CURLUPART_OPTIONS)) {
        fail(msg, msglen, res, "the URL has credentials (user@ or user:password@), which are not allowed");
        goto done;
    }
    if (curl_url_get(h, CURLUPART_HOST, &host, 0) != CURLUE_OK || host[0] == '\0') {
        fail(msg, msglen, res, "the URL has no host");
        goto done;
    }
    if (curl_url_get(h, CURLUPART_URL, &full, 0) != CURLUE_OK) {
        fail(msg, msglen, res, "the URL cannot be put back together");
        goto done;
    }
    if (curl_url_get(h, CURLUPART_PORT, &port, 0) != CURLUE_OK)
        port = NULL;
    int w = snprintf(origin, originlen, "%s://%s%s%s", scheme, host, port ? ":" : "",
                     port ? port : "");
    if (w < 0 || (size_t)w >= originlen) /* "..." marks a cut host */
        memcpy(origin + originlen - 4, "...", 4);
    *out = full;
    full = NULL;
    res = API_FETCH_OK;
done:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(full);
    curl_url_cleanup(h);
    return res;
}

/* ---- the callbacks ------------------------------------------------------------ */

bool api_fetch_address_allowed(const struct sockaddr *sa, socklen_t len, bool allow_private,
                               url_guard_class *cls)
{
    url_guard_class c = url_guard_classify(sa, len);
    if (cls)
        *cls = c;
    return url_guard_allowed(c, allow_private);
}

/* The policy api_fetch uses: ctx points to lim->allow_private. */
static bool guard_policy(void *ctx, const struct sockaddr *sa, socklen_t len)
{
    return api_fetch_address_allowed(sa, len, *(const bool *)ctx, NULL);
}

/* CURLOPT_OPENSOCKETFUNCTION: called with the address before every connect.
 * A refused address gets no socket (CURL_SOCKET_BAD: curl tries the host's
 * next address, if any, else fails with "couldn't connect"); the first
 * refused one is remembered for the message. */
static curl_socket_t open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    fetch_ctx *f = clientp;
    socklen_t len = (socklen_t)a->addrlen;
    if (purpose != CURLSOCKTYPE_IPCXN || !f->policy(f->policy_ctx, &a->addr, len)) {
        if (f->refused++ == 0) {
            f->refused_class = url_guard_classify(&a->addr, len);
            struct sockaddr_storage ss;
            memset(&ss, 0, sizeof ss);
            memcpy(&ss, &a->addr, len < sizeof ss ? len : sizeof ss);
            const void *ip = ss.ss_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr
                                                      : (const void *)&((struct sockaddr_in *)&ss)->sin_addr;
            if ((ss.ss_family != AF_INET && ss.ss_family != AF_INET6) ||
                !inet_ntop(ss.ss_family, ip, f->refused_addr, sizeof f->refused_addr))
                snprintf(f->refused_addr, sizeof f->refused_addr, "an address of family %d",
                         a->family);
        }
        return CURL_SOCKET_BAD;
    }
    int type = a->socktype;
#ifdef SOCK_CLOEXEC
    type |= SOCK_CLOEXEC;
#endif
    return socket(a->family, type, a->protocol);
}

/* CURLOPT_WRITEFUNCTION: appends to f->buf, never past max_bytes.  Returning
 * less than given makes curl stop with CURLE_WRITE_ERROR and close the
 * connection. */
static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    fetch_ctx *f = ud;
    size_t max = f->lim->max_bytes;
    if (size != 1 && nmemb > SIZE_MAX / size) { /* curl documents size == 1 */
        f->too_large = true;
        return 0;
    }
    size_t n = size * nmemb;
    if (n > max - f->len) {
        f->too_large = true;
        return 0;
    }
    if (n > f->cap - f->len) {
        size_t want = f->len + n; /* <= max */
        size_t cap = f->cap > max / 2 ? max : f->cap * 2;
        if (cap < want)
            cap = want;
        if (cap < 16384)
            cap = max < 16384 ? max : 16384;
        uint8_t *grown = realloc(f->buf, cap);
        if (!grown) {
            f->nomem = true;
            return 0;
        }
        f->buf = grown;
        f->cap = cap;
    }
    memcpy(f->buf + f->len, p, n);
    f->len += n;
    return n;
}

/* ---- the transfer -------------------------------------------------------------- */

/* CURLOPT_XFERINFOFUNCTION: curl calls it about once a second while it waits
 * and after every chunk; a non-zero return aborts the transfer. */
static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    fetch_ctx *f = ud;
    if (f->lim->cancel && atomic_load(f->lim->cancel)) {
        f->cancelled = true;
        return 1;
    }
    return 0;
}

/* Sets every option of one fetch on c; CURLE_OK or the first failure. */
static CURLcode setup(CURL *c, const char *url, fetch_ctx *f, struct curl_slist *headers)
{
    const api_fetch_limits *lim = f->lim;
    CURLcode rc = CURLE_OK;
#define SET(opt, val)                                       \
    do {                                                    \
        if (rc == CURLE_OK)                                 \
            rc = curl_easy_setopt(c, opt, val);             \
    } while (0)
    SET(CURLOPT_URL, url);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, 1L);
    SET(CURLOPT_MAXREDIRS, (long)lim->max_redirects);
    SET(CURLOPT_CONNECTTIMEOUT_MS, lim->connect_timeout_ms);
    SET(CURLOPT_TIMEOUT_MS, lim->timeout_ms);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_HTTPGET, 1L);
    SET(CURLOPT_FAILONERROR, 1L);           /* >= 400: stop at the status line */
    SET(CURLOPT_MAXFILESIZE_LARGE,          /* a larger Content-Length: refused at once */
        lim->max_bytes > (size_t)INT64_MAX ? (curl_off_t)INT64_MAX : (curl_off_t)lim->max_bytes);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, f);
    SET(CURLOPT_OPENSOCKETFUNCTION, open_socket);
    SET(CURLOPT_OPENSOCKETDATA, f);
    SET(CURLOPT_NOPROGRESS, 0L);
    SET(CURLOPT_XFERINFOFUNCTION, on_progress);
    SET(CURLOPT_XFERINFODATA, f);
    SET(CURLOPT_PROXY, "");                 /* never http_proxy & co. from the environment */
    SET(CURLOPT_NETRC, (long)CURL_NETRC_IGNORED);
    SET(CURLOPT_HTTP_CONTENT_DECODING, 0L); /* bytes as sent: no decompression bomb */
    SET(CURLOPT_HTTPHEADER, headers);
    SET(CURLOPT_USERAGENT, FETCH_USER_AGENT);
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
#undef SET
    return rc;
}

/* Maps the outcome of curl_easy_perform (rc, and what the callbacks saw)
 * to a result and message. */
static api_fetch_result outcome(CURL *c, CURLcode rc, const fetch_ctx *f, const char *origin,
                                char *msg, size_t msglen)
{
    const api_fetch_limits *lim = f->lim;
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (f->nomem)
        return fail(msg, msglen, API_FETCH_FAILED, "out of memory reading the image from %s", origin);
    if (f->cancelled)
        return fail(msg, msglen, API_FETCH_FAILED, "fetching from %s was cancelled", origin);
    if (f->too_large || rc == CURLE_FILESIZE_EXCEEDED)
        return fail(msg, msglen, API_FETCH_TOO_LARGE, "the image at %s is larger than %zu bytes",
                    origin, lim->max_bytes);
    if (f->refused && rc != CURLE_OK)
        return fail(msg, msglen, API_FETCH_FORBIDDEN,
                    "%s connects to %s, a %s address, which image URLs may not reach", origin,
                    f->refused_addr, url_guard_class_name(f->refused_class));
    switch (rc) {
    case CURLE_OK:
        if (status < 200 || status > 299)
            return fail(msg, msglen, API_FETCH_FAILED, "%s answered %ld", origin, status);
        return API_FETCH_OK;
    case CURLE_UNSUPPORTED_PROTOCOL: /* the URL was http(s): a redirect went elsewhere */
        return fail(msg, msglen, API_FETCH_FORBIDDEN,
                    "%s redirected to a URL that is not http or https", origin);
    case CURLE_OPERATION_TIMEDOUT:
        return fail(msg, msglen, API_FETCH_TIMEOUT,
                    "%s did not deliver the image in time (connect %ld ms, total %ld ms)", origin,
                    lim->connect_timeout_ms, lim->timeout_ms);
    case CURLE_TOO_MANY_REDIRECTS:
        return fail(msg, msglen, API_FETCH_FAILED, "%s made too many redirects (more than %d)",
                    origin, lim->max_redirects);
    case CURLE_HTTP_RETURNED_ERROR:
        return fail(msg, msglen, API_FETCH_FAILED, "%s answered %ld", origin, status);
    case CURLE_COULDNT_RESOLVE_HOST:
        return fail(msg, msglen, API_FETCH_FAILED, "the host of %s could not be resolved", origin);
    case CURLE_COULDNT_CONNECT:
        return fail(msg, msglen, API_FETCH_FAILED, "could not connect to %s", origin);
    default:
        return fail(msg, msglen, API_FETCH_FAILED, "fetching from %s failed: %s", origin,
                    curl_easy_strerror(rc));
    }
}

api_fetch_result api_fetch_with_policy(const char *url, const api_fetch_limits *lim,
                                       api_fetch_policy_fn *policy, void *ctx, uint8_t **data,
                                       size_t *len, char *msg, size_t msglen)
{
    VIT_ASSERT(lim && policy && data && len);
    VIT_ASSERT(lim->connect_timeout_ms > 0 && lim->timeout_ms > 0 && lim->max_bytes > 0 &&
               lim->max_redirects >= 0);
    *data = NULL;
    *len = 0;
    if (msg && msglen)
        msg[0] = '\0';

    char origin[FETCH_ORIGIN_MAX];
    char *full = NULL;
    api_fetch_result res = check_url(url, &full, origin, sizeof origin, msg, msglen);
    if (res != API_FETCH_OK)
        return res;

    fetch_ctx f = {.lim = lim, .policy = policy, .policy_ctx = ctx};
    CURL *c = curl_easy_init();
    struct curl_slist *headers = curl_slist_append(NULL, "Accept-Encoding: identity");
    if (!c || !headers) {
        res = fail(msg, msglen, API_FETCH_FAILED, "out of memory setting up the fetch");
    } else {
        CURLcode rc = setup(c, full, &f, headers);
        if (rc != CURLE_OK)
            res = fail(msg, msglen, API_FETCH_FAILED, "libcurl refused a fetch option: %s",
                       curl_easy_strerror(rc));
        else
            res = outcome(c, curl_easy_perform(c), &f, origin, msg, msglen);
    }
    curl_easy_cleanup(c);
    curl_slist_free_all(headers);
    curl_free(full);
    if (res != API_FETCH_OK) {
        free(f.buf);
        return res;
    }
    if (!f.buf) { /* an empty body: still a buffer, so callers free one way */
        f.buf = malloc(1);
        if (!f.buf)
            return fail(msg, msglen, API_FETCH_FAILED, "out of memory");
    }
    *data = f.buf;
    *len = f.len;
    return API_FETCH_OK;
}

api_fetch_result api_fetch_check_url(const char *url, char *msg, size_t msglen)
{
    char origin[FETCH_ORIGIN_MAX];
    char *full = NULL;
    if (msg && msglen)
        msg[0] = '\0';
    api_fetch_result res = check_url(url, &full, origin, sizeof origin, msg, msglen);
    curl_free(full);
    return res;
}

api_fetch_result api_fetch(const char *url, const api_fetch_limits *lim, uint8_t **data,
                           size_t *len, char *msg, size_t msglen)
{
    VIT_ASSERT(lim);
    bool allow_private = lim->allow_private;
    return api_fetch_with_policy(url, lim, guard_policy, &allow_private, data, len, msg, msglen);
}

int api_fetch_reply(api_reply *r, api_fetch_result res, const char *prefix, const char *msg)
{
    static const struct {
        int status;
        const char *code;
    } map[] = {
        [API_FETCH_BAD_URL] = {400, "invalid_url"},
        [API_FETCH_FORBIDDEN] = {400, "url_forbidden"},
        [API_FETCH_FAILED] = {422, "fetch_failed"},
        [API_FETCH_TIMEOUT] = {422, "fetch_timeout"},
        [API_FETCH_TOO_LARGE] = {413, "image_too_large"},
    };
    VIT_ASSERT(res > API_FETCH_OK && res <= API_FETCH_TOO_LARGE);
    return api_error(r, map[res].status, map[res].code, "%s%s", prefix ? prefix : "",
                     msg ? msg : "");
}
