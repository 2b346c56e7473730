/*
 * hub_fetch.c - one file from the model hub over libcurl (hub_impl.h).
 *
 * Redirects are followed here, one request per hop, not by libcurl: each
 * hop's URL is checked (https, or http between loopback addresses), the
 * token is attached only when the hop goes to the hub's own scheme, host and
 * port (libcurl >= 7.58 would also drop a custom Authorization header on a
 * cross-host redirect, but only under FOLLOWLOCATION, and only by host until
 * 7.83; doing it here does not depend on either), and what the hub states
 * about the file -- X-Linked-Size, and a sha256 in X-Linked-Etag (or ETag)
 * -- is read from the hub's answers only, never from the CDN's, nor from a
 * hop back to the hub that the CDN chose (once a hop leaves the hub's
 * origin, every later one is foreign).  The first statement holds: another
 * one is refused, and so is a body from outside the hub without both.
 *
 * Bytes go to <file>.part with pwrite at their offset.  A .part left by an
 * earlier run is resumed with "Range: bytes=N-": a 206 that starts at N is
 * appended; a 200 (a server that ignores Range) starts the file over; a 416
 * or a 206 at another offset truncates it and asks again from byte 0, once.
 * A 206 must run to the file's end; an answer with no length (neither
 * Content-Length, chunked, HTTP/2 nor a stated size) or with a
 * Content-Encoding is refused: a cut or a compressed body would pass for
 * the file.  The response is checked as soon as its headers arrive (a
 * length over the cap or different from the hub's statement is refused
 * before any byte is written) and again at the end (the size announced,
 * the size stated, then sha256 over the whole file -- or, for a file the
 * hub serves itself with no sha256, the git blob id its ETag names); then
 * the file is fsynced and renamed to its final name.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "hub_impl.h"
#include "sha256.h"

#define CONNECT_TIMEOUT_S 30L
#define STALL_BYTES 1024L     /* a transfer slower than this many bytes/s ... */
#define STALL_SECONDS 60L     /* ... for this long is dropped (and resumable) */
#define MAX_DISCARD (1 << 20) /* body bytes of a redirect or an error answer */
#define MAX_URL 8192          /* a redirect target (signed CDN URLs are long) */
#define MAX_TOKEN 4096
#define USER_AGENT "vitfit/0.1 (model download)"
#define BLOB_HEX_LEN 40       /* git's blob id: a sha1 in hex */

_Static_assert(sizeof(curl_off_t) == sizeof(int64_t), "curl_off_t is 64-bit");

/* ---- origins ------------------------------------------------------------ */

static bool host_is_loopback(const char *host)
{
    if (strcasecmp(host, "localhost") == 0 || strcmp(host, "[::1]") == 0 ||
        strcmp(host, "::1") == 0)
        return true;
    struct in_addr a;
    return inet_pton(AF_INET, host, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

vit_status hub_origin_parse(const char *url, hub_origin *o, vit_error *err)
{
    memset(o, 0, sizeof *o);
    CURLU *h = curl_url();
    if (!h)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    char *scheme = NULL, *host = NULL, *port = NULL, *user = NULL;
    vit_status st = VIT_OK;
    CURLUcode rc = curl_url_set(h, CURLUPART_URL, url, 0);
    if (rc != CURLUE_OK)
        st = vit_error_set(err, VIT_ERR_INVALID, "not a URL (%s)", curl_url_strerror(rc));
    else if (curl_url_get(h, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
             (strcmp(scheme, "https") != 0 && strcmp(scheme, "http") != 0))
        st = vit_error_set(err, VIT_ERR_INVALID, "the scheme '%.16s' is not https",
                           scheme ? scheme : "");
    else if (curl_url_get(h, CURLUPART_USER, &user, 0) == CURLUE_OK)
        st = vit_error_set(err, VIT_ERR_INVALID, "a URL with a user name is not allowed");
    else if (curl_url_get(h, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
             curl_url_get(h, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK)
        st = vit_error_set(err, VIT_ERR_INVALID, "a URL without a host or port");
    else if (strlen(host) >= sizeof o->host)
        st = vit_error_set(err, VIT_ERR_INVALID, "a host name over %zu bytes",
                           sizeof o->host - 1);
    if (st == VIT_OK) {
        snprintf(o->scheme, sizeof o->scheme, "%s", scheme);
        snprintf(o->host, sizeof o->host, "%s", host);
        o->port = strtol(port, NULL, 10);
        o->loopback = host_is_loopback(host);
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(user);
    curl_url_cleanup(h);
    return st;
}

static bool same_origin(const hub_origin *a, const hub_origin *b)
{
    return strcmp(a->scheme, b->scheme) == 0 && strcasecmp(a->host, b->host) == 0 &&
           a->port == b->port;
}

/* ---- one transfer ----------------------------------------------------------- */

/* The state of one file's transfer across its hops. */
typedef struct xfer {
    const hub_file_job *j;
    int fd;                  /* the .part */
    int64_t offset;          /* bytes in the .part before this response's body */
    int64_t got;             /* body bytes of this response written */
    int64_t discarded;       /* body bytes of a redirect or error answer dropped */
    bool from_hub;           /* this hop goes to the hub's origin, and no earlier one left it */
    bool left_hub;           /* a hop went elsewhere: every later hop is foreign */
    /* the current response */
    long status;
    int64_t length;          /* Content-Length, or -1 */
    int64_t range_start;     /* Content-Range "bytes START-END/TOTAL", or -1 */
    int64_t range_end;
    int64_t range_total;
    bool chunked;            /* Transfer-Encoding: chunked (its end is marked) */
    bool http2;              /* HTTP/2 or later (its end is marked too) */
    bool encoded;            /* a Content-Encoding other than identity */
    int64_t expect_total;    /* the file's size this answer announces, or -1 */
    bool to_file;            /* a 200/206 accepted: its body goes to the .part */
    bool restart;            /* a 206 at the wrong offset: truncate, ask from 0 */
    /* what the hub stated about the file */
    int64_t stated_size;     /* X-Linked-Size, or -1 */
    char stated_sha[SHA256_HEX_LEN + 1]; /* lower-case hex, or "" */
    char commit[HUB_COMMIT_SIZE]; /* X-Repo-Commit of the hub's answers, or "" */
    char etag_blob[BLOB_HEX_LEN + 1];   /* this answer's ETag when a git blob id, or "" */
    char stated_blob[BLOB_HEX_LEN + 1]; /* that of the hub's answer holding the body, or "" */
    /* a refusal decided in a callback (HUB_DONE: none) */
    hub_outcome fail;
    vit_error *err;
    /* the progress bar */
    double started, drawn_at;
    int64_t started_bytes;
    bool drawn;
} xfer;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A decimal int64 in s (all of it, spaces around allowed); -1 if not one. */
static int64_t parse_size(const char *s)
{
    while (*s == ' ')
        s++;
    if (*s < '0' || *s > '9')
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    while (*end == ' ')
        end++;
    return errno || *end ? -1 : (int64_t)v;
}

/* The hash in an entity tag -- want hex digits, in quotes, maybe weak: a
 * sha256 (64) is the hub's tag of an LFS file, a sha1 (40) git's blob id of
 * a small one -- into hex, lower-cased; false for another tag. */
static bool tag_hex(const char *tag, size_t want, char *hex)
{
    if (strncmp(tag, "W/", 2) == 0)
        tag += 2;
    if (*tag == '"')
        tag++;
    size_t n = 0;
    for (; n < want && tag[n]; n++) {
        char ch = tag[n];
        if (ch >= 'A' && ch <= 'F')
            ch = (char)(ch - 'A' + 'a');
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')))
            return false;
        hex[n] = ch;
    }
    if (n != want || !(tag[n] == '"' || tag[n] == '\0'))
        return false;
    hex[n] = '\0';
    return true;
}

/* Refuses the transfer from a callback: kind and message kept for
 * hub_fetch_file; returns 0, which makes libcurl stop. */
__attribute__((format(printf, 3, 4)))
static size_t refuse(xfer *x, hub_outcome kind, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char msg[sizeof x->err->message];
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    vit_error_set(x->err, VIT_ERR_IO, "%s", msg);
    x->fail = kind;
    return 0;
}

/* X-Repo-Commit: the commit the hub serves the revision from.  A file of
 * another commit than the one the download began with (a moving branch) is
 * HUB_MOVED, before any of its bytes land; false then. A value that is not
 * a commit id is ignored, as a hub that sends none. */
static bool take_commit(xfer *x, const char *value)
{
    size_t n = strspn(value, "0123456789abcdef");
    if (n == 0 || n >= HUB_COMMIT_SIZE || value[n])
        return true;
    const char *before = x->commit[0] ? x->commit : x->j->commit ? x->j->commit : "";
    if (*before && strcmp(before, value) != 0) {
        refuse(x, HUB_MOVED, "%s: the revision moved on the hub (commit %.12s, then %.12s)",
               x->j->file, before, value);
        snprintf(x->commit, sizeof x->commit, "%s", value);
        return false;
    }
    snprintf(x->commit, sizeof x->commit, "%s", value);
    return true;
}

/* All headers of a 200 or 206 are in: accept its body or refuse it. */
static size_t headers_done(xfer *x)
{
    const hub_file_job *j = x->j;
    int64_t total = -1;
    if (x->encoded) /* stored as it came, it would not be the file */
        return refuse(x, HUB_FAILED, "%s: the answer is compressed (Content-Encoding): refused",
                      j->file);
    if (x->status == 200) {
        if (x->offset > 0) { /* the server ignored the Range: start over */
            if (ftruncate(x->fd, 0) != 0)
                return refuse(x, HUB_RETRY, "%s: cannot truncate %s: %s", j->file, j->part_path,
                              strerror(errno));
            x->offset = 0;
        }
        total = x->length;
    } else { /* 206 */
        if (x->range_start != x->offset) {
            x->restart = true;
            return 0;
        }
        /* the rest of the file and nothing less: a part that stops early
         * would otherwise be taken for the whole */
        total = x->range_total;
        if (x->range_end != total - 1 || (x->length >= 0 && x->length != total - x->offset))
            return refuse(x, HUB_FAILED, "%s: a partial answer (bytes %" PRId64 "-%" PRId64
                          "/%" PRId64 ") that does not run to the file's end: refused", j->file,
                          x->range_start, x->range_end, total);
    }
    if (total < 0 && x->stated_size < 0 && !x->chunked && !x->http2)
        return refuse(x, HUB_FAILED, "%s: the answer has no length (no Content-Length, not "
                      "chunked): a cut could not be told from its end: refused", j->file);
    x->expect_total = total;
    if (total > j->max_bytes)
        return refuse(x, HUB_FAILED, "%s is %" PRId64 " bytes, over the limit of %" PRId64
                      " (hub_max_bytes)", j->file, total, j->max_bytes);
    if (x->stated_size > j->max_bytes)
        return refuse(x, HUB_FAILED, "%s is %" PRId64 " bytes, over the limit of %" PRId64
                      " (hub_max_bytes)", j->file, x->stated_size, j->max_bytes);
    if (total >= 0 && x->stated_size >= 0 && total != x->stated_size)
        return refuse(x, HUB_FAILED, "%s: the download is %" PRId64 " bytes but the hub states %"
                      PRId64 ": refused", j->file, total, x->stated_size);
    /* the hub's own answer with the body names it by its git blob id (not
     * a CDN's, nor a redirect's: the tag must be of these bytes) */
    memcpy(x->stated_blob, x->from_hub ? x->etag_blob : "", x->from_hub ? sizeof x->etag_blob : 1);
    x->to_file = true;
    x->started = x->drawn_at = now_s();
    x->started_bytes = x->offset;
    return 1;
}

/* CURLOPT_HEADERFUNCTION: one header line of the current hop's response. */
static size_t on_header(char *buf, size_t size, size_t n, void *ud)
{
    xfer *x = ud;
    size_t len = size * n;
    if (len >= 5 && memcmp(buf, "HTTP/", 5) == 0) { /* a status line: a new response */
        char status[64]; /* libcurl's buffer is not promised to end in a NUL */
        size_t sl = len < sizeof status ? len : sizeof status - 1;
        memcpy(status, buf, sl);
        status[sl] = '\0';
        const char *sp = strchr(status, ' ');
        x->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        x->http2 = status[5] >= '2' && status[5] <= '9';
        x->length = x->range_start = x->range_end = x->range_total = x->expect_total = -1;
        x->chunked = x->encoded = x->to_file = false;
        x->etag_blob[0] = '\0';
        return len;
    }
    if (len <= 2 && (buf[0] == '\r' || buf[0] == '\n')) /* the end of the headers */
        return (x->status == 200 || x->status == 206) && headers_done(x) == 0 ? 0 : len;
    char line[1024];
    if (len >= sizeof line)
        return len; /* no header we read is that long */
    memcpy(line, buf, len);
    line[len] = '\0';
    line[strcspn(line, "\r\n")] = '\0';
    for (size_t e = strlen(line); e > 0 && (line[e - 1] == ' ' || line[e - 1] == '\t');)
        line[--e] = '\0';
    char *colon = strchr(line, ':');
    if (!colon)
        return len;
    *colon = '\0';
    const char *value = colon + 1;
    while (*value == ' ' || *value == '\t')
        value++;
    if (strcasecmp(line, "Content-Length") == 0) {
        x->length = parse_size(value);
    } else if (strcasecmp(line, "Content-Range") == 0) {
        long long a, b, t;
        if (sscanf(value, "bytes %lld-%lld/%lld", &a, &b, &t) == 3 && a >= 0 && b >= a && t > b) {
            x->range_start = a;
            x->range_end = b;
            x->range_total = t;
        }
    } else if (strcasecmp(line, "Transfer-Encoding") == 0) {
        size_t n = strlen(value); /* chunked is the last coding when present */
        x->chunked = n >= 7 && strcasecmp(value + n - 7, "chunked") == 0;
    } else if (strcasecmp(line, "Content-Encoding") == 0) {
        x->encoded = *value && strcasecmp(value, "identity") != 0;
    } else if (!x->from_hub) {
        return len; /* what the file is, only the hub says: not the CDN, nor a hop after it */
    } else if (strcasecmp(line, "X-Linked-Size") == 0) {
        /* the first statement holds: a later hop may not swap in another file */
        int64_t v = parse_size(value);
        if (v < 0 || (x->stated_size >= 0 && v != x->stated_size))
            return refuse(x, HUB_FAILED, "%s: the hub's X-Linked-Size '%.32s' is %s: refused",
                          x->j->file, value, v < 0 ? "not a size" : "not the one it stated first");
        x->stated_size = v;
    } else if (strcasecmp(line, "X-Linked-Etag") == 0) {
        char hex[SHA256_HEX_LEN + 1];
        if (!tag_hex(value, SHA256_HEX_LEN, hex) || (x->stated_sha[0] && strcmp(hex, x->stated_sha) != 0))
            return refuse(x, HUB_FAILED, "%s: the hub's X-Linked-Etag is %s: refused", x->j->file,
                          x->stated_sha[0] ? "not the sha256 it stated first" : "not a sha256");
        memcpy(x->stated_sha, hex, sizeof hex);
    } else if (strcasecmp(line, "ETag") == 0) {
        char hex[SHA256_HEX_LEN + 1];
        if (!x->stated_sha[0] && tag_hex(value, SHA256_HEX_LEN, hex)) /* the first holds */
            memcpy(x->stated_sha, hex, sizeof hex);
        else if (tag_hex(value, BLOB_HEX_LEN, hex))
            memcpy(x->etag_blob, hex, BLOB_HEX_LEN + 1);
    } else if (strcasecmp(line, "X-Repo-Commit") == 0) {
        return take_commit(x, value) ? len : 0;
    }
    return len;
}

/* CURLOPT_WRITEFUNCTION: body bytes, to the .part at their offset. */
static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    xfer *x = ud;
    const hub_file_job *j = x->j;
    size_t len = size * n;
    if (!x->to_file) { /* a redirect's or an error's body: dropped, within reason */
        x->discarded += (int64_t)len;
        if (x->discarded > MAX_DISCARD)
            return refuse(x, HUB_FAILED, "%s: the hub's answer (HTTP %ld) is over %d bytes",
                          j->file, x->status, MAX_DISCARD);
        return len;
    }
    int64_t end = x->offset + x->got + (int64_t)len;
    if (end > j->max_bytes)
        return refuse(x, HUB_FAILED, "%s is over the limit of %" PRId64 " bytes (hub_max_bytes)",
                      j->file, j->max_bytes);
    if (x->stated_size >= 0 && end > x->stated_size)
        return refuse(x, HUB_FAILED, "%s: more bytes arrived than the hub states (%" PRId64 ")",
                      j->file, x->stated_size);
    for (size_t done = 0; done < len;) {
        ssize_t w = pwrite(x->fd, p + done, len - done, (off_t)(x->offset + x->got));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return refuse(x, HUB_RETRY, "%s: cannot write %s: %s", j->file, j->part_path,
                          w < 0 ? strerror(errno) : "no progress");
        done += (size_t)w;
        x->got += w;
    }
    return len;
}

/* Draws the progress bar (at most 5 times a second unless final). */
static void draw(xfer *x, bool final)
{
    double t = now_s();
    if (!final && t - x->drawn_at < 0.2)
        return;
    x->drawn_at = t;
    x->drawn = true;
    int64_t have = x->offset + x->got;
    int64_t total = x->stated_size >= 0   ? x->stated_size
                    : x->range_total >= 0 ? x->range_total
                    : x->length >= 0      ? x->offset + x->length
                                          : -1;
    double rate = t > x->started ? (double)(have - x->started_bytes) / (t - x->started) : 0;
    if (total > 0)
        fprintf(stderr, "\r%-28.28s %5.1f%%  %8.1f / %.1f MB  %6.1f MB/s ", x->j->file,
                100.0 * (double)have / (double)total, (double)have / 1e6, (double)total / 1e6,
                rate / 1e6);
    else
        fprintf(stderr, "\r%-28.28s %8.1f MB  %6.1f MB/s ", x->j->file, (double)have / 1e6,
                rate / 1e6);
    fflush(stderr);
}

/* CURLOPT_XFERINFOFUNCTION: the stop check and the progress bar. */
static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    xfer *x = ud;
    const hub_options *o = x->j->o;
    if (o->stop && o->stop(o->ctx)) {
        refuse(x, HUB_RETRY, "%s: the download was stopped", x->j->file);
        return 1;
    }
    if (o->progress && x->to_file)
        draw(x, false);
    return 0;
}

/* The request headers of one hop: no compression, the token for the hub
 * only, the Range of a resumed file.  NULL when out of memory. */
static struct curl_slist *request_headers(const xfer *x, bool with_token)
{
    struct curl_slist *h = curl_slist_append(NULL, "Accept-Encoding: identity"), *t;
    char line[MAX_TOKEN + 32];
    if (h && x->offset > 0) {
        snprintf(line, sizeof line, "Range: bytes=%" PRId64 "-", x->offset);
        if (!(t = curl_slist_append(h, line)))
            goto fail;
        h = t;
    }
    if (h && with_token) {
        snprintf(line, sizeof line, "Authorization: Bearer %s", x->j->o->token);
        t = curl_slist_append(h, line);
        explicit_bzero(line, sizeof line);
        if (!t)
            goto fail;
        h = t;
    }
    return h;
fail:
    curl_slist_free_all(h);
    return NULL;
}

/* Sets up c for one hop to url; CURLE_OK or the first option refused. */
static CURLcode setup(CURL *c, const char *url, const hub_origin *at, xfer *x,
                      struct curl_slist *headers, char *errbuf)
{
    CURLcode rc = CURLE_OK;
#define SET(opt, val)                              \
    do {                                           \
        if (rc == CURLE_OK)                        \
            rc = curl_easy_setopt(c, opt, val);    \
    } while (0)
    SET(CURLOPT_URL, url);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, 0L); /* hops are followed by hub_fetch_file */
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
    SET(CURLOPT_LOW_SPEED_LIMIT, STALL_BYTES);
    SET(CURLOPT_LOW_SPEED_TIME, STALL_SECONDS);
    SET(CURLOPT_HTTPGET, 1L);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, x);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, x);
    SET(CURLOPT_NOPROGRESS, 0L);
    SET(CURLOPT_XFERINFOFUNCTION, on_progress);
    SET(CURLOPT_XFERINFODATA, x);
    SET(CURLOPT_HTTP_CONTENT_DECODING, 0L);
    SET(CURLOPT_NETRC, (long)CURL_NETRC_IGNORED);
    SET(CURLOPT_USERAGENT, USER_AGENT);
    SET(CURLOPT_HTTPHEADER, headers);
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
    SET(CURLOPT_ERRORBUFFER, errbuf);
    if (at->loopback)
        SET(CURLOPT_PROXY, ""); /* a loopback hub (tests) is never reached through a proxy */
#undef SET
    return rc;
}

/* ---- git's blob id -------------------------------------------------------- */

/* SHA-1 (FIPS 180-4), only for the hub's ETag of a small (non-LFS) file,
 * which is git's blob id: sha1("blob <size>\0" + content).  It catches a
 * wrong or damaged file; the LFS weights are checked by their sha256. */
typedef struct blob_sha1 {
    uint32_t h[5];
    uint64_t len;    /* bytes hashed */
    uint8_t buf[64]; /* a block being filled */
    size_t n;
} blob_sha1;

static uint32_t rol32(uint32_t v, int k)
{
    return v << k | v >> (32 - k);
}

static void sha1_block(blob_sha1 *c, const uint8_t *p)
{
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = c->h[0], b = c->h[1], d = c->h[3], e = c->h[4], cc = c->h[2];
    for (int i = 0; i < 80; i++) {
        uint32_t f = i < 20   ? (b & cc) | (~b & d)
                     : i < 40 ? b ^ cc ^ d
                     : i < 60 ? (b & cc) | (b & d) | (cc & d)
                              : b ^ cc ^ d;
        uint32_t k = i < 20 ? 0x5A827999u : i < 40 ? 0x6ED9EBA1u : i < 60 ? 0x8F1BBCDCu
                                                                          : 0xCA62C1D6u;
        uint32_t t = rol32(a, 5) + f + e + k + w[i];
        e = d, d = cc, cc = rol32(b, 30), b = a, a = t;
    }
    c->h[0] += a, c->h[1] += b, c->h[2] += cc, c->h[3] += d, c->h[4] += e;
}

static void sha1_init(blob_sha1 *c)
{
    *c = (blob_sha1){.h = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u}};
}

static void sha1_update(blob_sha1 *c, const void *data, size_t len)
{
    const uint8_t *p = data;
    c->len += len;
    while (len > 0) {
        size_t take = 64 - c->n < len ? 64 - c->n : len;
        memcpy(c->buf + c->n, p, take);
        c->n += take, p += take, len -= take;
        if (c->n == 64) {
            sha1_block(c, c->buf);
            c->n = 0;
        }
    }
}

static void sha1_final_hex(blob_sha1 *c, char hex[BLOB_HEX_LEN + 1])
{
    uint64_t bits = c->len * 8;
    static const uint8_t one = 0x80, zero = 0;
    sha1_update(c, &one, 1);
    while (c->n != 56)
        sha1_update(c, &zero, 1);
    uint8_t be[8];
    for (int i = 0; i < 8; i++)
        be[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha1_update(c, be, 8);
    for (int i = 0; i < 5; i++)
        snprintf(hex + 8 * i, 9, "%08x", (unsigned)c->h[i]);
}

/* ---- the end of a transfer ------------------------------------------------- */

/* Hashes the first size bytes of fd: their sha256 into hex, or with blob
 * set git's blob id of them into hex. */
static int hash_file(int fd, int64_t size, bool blob, char hex[SHA256_HEX_LEN + 1])
{
    enum { CHUNK = 1 << 20 };
    unsigned char *buf = malloc(CHUNK);
    if (!buf)
        return -1;
    sha256_ctx c;
    blob_sha1 g;
    sha256_init(&c);
    sha1_init(&g);
    if (blob) {
        char head[32];
        int n = snprintf(head, sizeof head, "blob %" PRId64, size);
        sha1_update(&g, head, (size_t)n + 1); /* with its NUL */
    }
    int64_t at = 0;
    while (at < size) {
        size_t want = size - at < CHUNK ? (size_t)(size - at) : CHUNK;
        ssize_t r = pread(fd, buf, want, (off_t)at);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            free(buf);
            return -1;
        }
        if (blob)
            sha1_update(&g, buf, (size_t)r);
        else
            sha256_update(&c, buf, (size_t)r);
        at += r;
    }
    free(buf);
    if (blob) {
        sha1_final_hex(&g, hex);
        return 0;
    }
    uint8_t digest[SHA256_DIGEST_LEN];
    sha256_final(&c, digest);
    sha256_hex(digest, hex);
    return 0;
}

/* A 200/206 arrived whole: check size and hash, fsync, rename into place. */
static hub_outcome finish(xfer *x, vit_error *err)
{
    const hub_file_job *j = x->j;
    int64_t size = x->offset + x->got;
    if (x->expect_total >= 0 && size != x->expect_total) {
        vit_error_set(err, VIT_ERR_IO, "%s: %" PRId64 " bytes arrived but the answer announced %"
                      PRId64 ": refused", j->file, size, x->expect_total);
        return HUB_FAILED;
    }
    if (x->stated_size >= 0 && size != x->stated_size) {
        vit_error_set(err, VIT_ERR_IO, "%s: %" PRId64 " bytes arrived but the hub states %" PRId64
                      ": refused", j->file, size, x->stated_size);
        return HUB_FAILED;
    }
    bool blob = !x->stated_sha[0]; /* a sha256 when stated, else git's blob id if given */
    const char *want = blob ? x->stated_blob : x->stated_sha;
    if (want[0]) {
        char hex[SHA256_HEX_LEN + 1];
        if (hash_file(x->fd, size, blob, hex) != 0) {
            vit_error_set(err, VIT_ERR_IO, "%s: cannot read %s back to hash it", j->file,
                          j->part_path);
            return HUB_RETRY;
        }
        if (strcmp(hex, want) != 0) {
            vit_error_set(err, VIT_ERR_IO, "%s: its %s %.12s... differs from the hub's "
                          "%.12s...: refused", j->file, blob ? "git blob id (sha1)" : "sha256",
                          hex, want);
            return HUB_FAILED;
        }
    }
    if (fsync(x->fd) != 0 || rename(j->part_path, j->final_path) != 0) {
        vit_error_set(err, VIT_ERR_IO, "%s: cannot store it: %s", j->file, strerror(errno));
        return HUB_RETRY;
    }
    return HUB_DONE;
}

/* The outcome of a hop whose answer was not a 200/206 or a redirect. */
static hub_outcome http_error(const hub_file_job *j, long status, vit_error *err)
{
    if (status == 404) {
        if (j->optional)
            return HUB_ABSENT;
        vit_error_set(err, VIT_ERR_NOT_FOUND, "%s: not found on the hub (HTTP 404): no such "
                      "model, revision or file", j->file);
        return HUB_FAILED;
    }
    if (status == 401 || status == 403) {
        vit_error_set(err, VIT_ERR_IO, "%s: the hub refused it (HTTP %ld): the model does not "
                      "exist, or it is private or gated and needs HF_TOKEN (%s)", j->file, status,
                      j->o->token && *j->o->token ? "set, but not accepted" : "not set");
        return HUB_FAILED;
    }
    vit_error_set(err, VIT_ERR_IO, "%s: the hub answered HTTP %ld", j->file, status);
    return status == 429 || status >= 500 ? HUB_RETRY : HUB_FAILED;
}

hub_outcome hub_fetch_file(const hub_file_job *j, vit_error *err)
{
    const hub_options *o = j->o;
    int fd = open(j->part_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0644);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        vit_error_set(err, VIT_ERR_IO, "%s: cannot open %s: %s", j->file, j->part_path,
                      fd < 0 ? strerror(errno) : "not a regular file");
        if (fd >= 0)
            close(fd);
        return HUB_FAILED;
    }
    xfer x = {.j = j, .fd = fd, .offset = sb.st_size, .stated_size = -1, .expect_total = -1,
              .fail = HUB_DONE, .err = err};
    if (x.offset > j->max_bytes && ftruncate(fd, 0) == 0)
        x.offset = 0;
    if (x.offset > 0 && o->log) {
        char line[256];
        snprintf(line, sizeof line, "resuming %s at byte %" PRId64, j->file, x.offset);
        o->log(o->ctx, line);
    }
    CURL *c = curl_easy_init();
    char *url = malloc(MAX_URL);
    hub_outcome out = HUB_RETRY;
    if (!c || !url) {
        vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
        goto done;
    }
    snprintf(url, MAX_URL, "%s", j->url);
    int redirects = 0, restarts = 0;
    for (;;) {
        hub_origin at;
        if (hub_origin_parse(url, &at, err) != VIT_OK) {
            vit_error_prefix(err, "%s: %s", j->file, redirects ? "a redirect" : "the hub URL");
            err->code = VIT_ERR_IO; /* the hub's doing, not a usage error */
            out = HUB_FAILED;
            break;
        }
        if (strcmp(at.scheme, "https") != 0 && !(at.loopback && j->hub->loopback)) {
            vit_error_set(err, VIT_ERR_IO, "%s: refusing plain http to %s (https only; http "
                          "only between loopback addresses)", j->file, at.host);
            out = HUB_FAILED;
            break;
        }
        /* a hop back to the hub after the CDN is the CDN's choice, not the hub's: no
         * token for it, and nothing it says about the file counts */
        x.left_hub = x.left_hub || !same_origin(&at, j->hub);
        x.from_hub = !x.left_hub;
        if (!x.from_hub && (x.stated_size < 0 || !x.stated_sha[0])) {
            /* the hub vouches for what another server sends only by its size and hash */
            vit_error_set(err, VIT_ERR_IO, "%s: a redirect to %s without the hub's size and "
                          "sha256 of the file (X-Linked-Size, X-Linked-Etag): refused", j->file,
                          at.host);
            out = HUB_FAILED;
            break;
        }
        x.status = 0;
        x.got = x.discarded = 0;
        x.to_file = x.restart = false;
        char errbuf[CURL_ERROR_SIZE] = "";
        struct curl_slist *headers = request_headers(&x, x.from_hub && o->token && *o->token);
        curl_easy_reset(c);
        CURLcode rc = headers ? setup(c, url, &at, &x, headers, errbuf) : CURLE_OUT_OF_MEMORY;
        if (rc == CURLE_OK)
            rc = curl_easy_perform(c);
        curl_slist_free_all(headers);
        if (x.drawn) {
            draw(&x, true);
            fputc('\n', stderr);
            x.drawn = false;
        }
        if (x.fail != HUB_DONE) {
            out = x.fail;
            break;
        }
        if (x.restart || (x.status == 416 && x.offset > 0)) { /* the .part is no good: once more */
            if (++restarts > 1 || ftruncate(fd, 0) != 0) {
                vit_error_set(err, VIT_ERR_IO, "%s: the hub does not serve the range asked for",
                              j->file);
                out = HUB_FAILED;
                break;
            }
            x.offset = 0;
            continue;
        }
        if (rc != CURLE_OK) {
            const char *why = errbuf[0] ? errbuf : curl_easy_strerror(rc);
            if (x.status == 0)
                vit_error_set(err, VIT_ERR_IO, "%s: no answer from %s (%s)", j->file, at.host,
                              why);
            else
                vit_error_set(err, VIT_ERR_IO, "%s: the transfer stopped after %" PRId64
                              " bytes (%s); run the command again to resume", j->file,
                              x.offset + x.got, why);
            out = HUB_RETRY;
            break;
        }
        if (x.status == 301 || x.status == 302 || x.status == 303 || x.status == 307 ||
            x.status == 308) {
            char *next = NULL;
            curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &next);
            if (!next || ++redirects > HUB_MAX_REDIRECTS || strlen(next) >= MAX_URL) {
                vit_error_set(err, VIT_ERR_IO, "%s: %s", j->file,
                              !next ? "a redirect without a Location"
                                    : "too many redirects (or one too long)");
                out = HUB_FAILED;
                break;
            }
            if (x.stated_size > j->max_bytes) { /* refused before the CDN is asked */
                vit_error_set(err, VIT_ERR_IO, "%s is %" PRId64 " bytes, over the limit of %"
                              PRId64 " (hub_max_bytes)", j->file, x.stated_size, j->max_bytes);
                out = HUB_FAILED;
                break;
            }
            memmove(url, next, strlen(next) + 1);
            continue;
        }
        if (x.status == 200 || x.status == 206)
            out = finish(&x, err);
        else
            out = http_error(j, x.status, err);
        break;
    }
done:
    if (j->commit_seen)
        memcpy(j->commit_seen, x.commit, sizeof x.commit);
    if (out == HUB_FAILED || out == HUB_MOVED || out == HUB_ABSENT ||
        (out == HUB_RETRY && fstat(fd, &sb) == 0 && sb.st_size == 0))
        unlink(j->part_path); /* nothing to resume */
    close(fd);
    free(url);
    curl_easy_cleanup(c);
    return out;
}
