/*
 * fetch.h - fetching an image URL through libcurl, safe by default.
 *
 * A classify request may name its image by http(s) URL; the server then
 * makes a request on the client's behalf.  api_fetch bounds everything such a
 * request could abuse:
 *   - the URL: parsed with libcurl's own URL parser (curl_url), so what is
 *     checked is what curl will fetch; only http and https; no userinfo
 *     (credentials in a URL end up in logs and are a classic confusion
 *     trick: "http://trusted.com@evil.com/"), no fragment, no control bytes
 *     or spaces, at most API_FETCH_MAX_URL bytes -- all API_FETCH_BAD_URL;
 *   - where it connects: every connect (each redirect hop, each address of a
 *     host with several) goes through libcurl's open-socket callback, which
 *     classifies the address the socket is about to connect to (url_guard.h)
 *     and refuses loopback, private, link-local, multicast, unspecified and
 *     reserved ones unless lim->allow_private: DNS answers, numeric spellings
 *     (http://0x7f.1/, http://[::ffff:127.0.0.1]/) and redirects cannot
 *     slip past, because the check is on the address, not the name.  A
 *     refused connect is API_FETCH_FORBIDDEN, and no packet was sent to it;
 *   - redirects: at most lim->max_redirects, only to http and https (a
 *     redirect to file:, ftp:, gopher: ... is API_FETCH_FORBIDDEN; more
 *     redirects than allowed is API_FETCH_FAILED, "too many redirects");
 *   - time: lim->connect_timeout_ms per connect, lim->timeout_ms for the
 *     whole transfer, redirects included (API_FETCH_TIMEOUT);
 *   - bytes: a Content-Length over lim->max_bytes is refused before any of
 *     the body is read, and the body is counted in the write callback, which
 *     cuts the connection the moment it passes lim->max_bytes whether or not
 *     a length was sent (API_FETCH_TOO_LARGE);
 *   - everything else a URL could switch on: proxies from the environment
 *     (http_proxy etc.) are ignored, no cookies, no .netrc, no compression
 *     ("Accept-Encoding: identity", and content decoding off, so a small
 *     gzip body cannot expand into a huge one), no signals (CURLOPT_NOSIGNAL),
 *     TLS certificates verified (libcurl's default), User-Agent "vitfit/0.1".
 *
 * A response with a final status other than 2xx is API_FETCH_FAILED.
 *
 * Thread safety: api_fetch may run on many threads at once (each call owns
 * its curl handle), PROVIDED the program called
 * curl_global_init(CURL_GLOBAL_DEFAULT) once, before starting threads, and
 * calls curl_global_cleanup() once at exit after they are gone.  libcurl
 * would otherwise initialise itself lazily inside the first call, which is
 * not thread-safe.
 */
#ifndef VIT_API_FETCH_H
#define VIT_API_FETCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api.h"
#include "url_guard.h"

/* Longest URL accepted, in bytes. */
#define API_FETCH_MAX_URL 8192

/* The bounds of one fetch (config keys url_*, allow_private_urls).
 * connect_timeout_ms, timeout_ms and max_bytes must be > 0 and
 * max_redirects >= 0 (0: no redirect is followed); api_fetch asserts it. */
typedef struct api_fetch_limits {
    long connect_timeout_ms; /* each connect (TCP + TLS handshake) */
    long timeout_ms;         /* the whole transfer, redirects included */
    size_t max_bytes;        /* body bytes; a larger body is TOO_LARGE */
    int max_redirects;       /* redirects followed; one more is FAILED */
    bool allow_private;      /* let loopback, private, link-local through */
    const atomic_bool *cancel; /* non-NULL: the fetch stops (FAILED, "cancelled") soon after
                                * it becomes true -- a server draining on SIGTERM */
} api_fetch_limits;

typedef enum api_fetch_result {
    API_FETCH_OK,
    API_FETCH_BAD_URL,   /* not an acceptable http(s) URL */
    API_FETCH_FORBIDDEN, /* an address or a redirect scheme the guard refused */
    API_FETCH_FAILED,    /* could not resolve/connect, non-2xx, too many redirects, ... */
    API_FETCH_TIMEOUT,   /* connect or total timeout */
    API_FETCH_TOO_LARGE, /* body (or its Content-Length) over max_bytes */
} api_fetch_result;

/* Blocking GET of an http(s) URL within lim.  On API_FETCH_OK *data holds
 * the body (malloc'd, never NULL even for an empty body; caller frees) and
 * *len its size.  Otherwise *data is NULL, *len 0, and msg holds one sentence
 * saying why (no secrets: the URL is quoted only as its scheme, host and
 * port, never its path or query, which may carry tokens).  msg may be NULL
 * when msglen is 0.  Thread-safe given curl_global_init (see above).
 * url must be a C string: a caller holding a length (a JSON string) must
 * refuse one with an embedded NUL itself, or it is cut at the NUL. */
api_fetch_result api_fetch(const char *url, const api_fetch_limits *lim, uint8_t **data,
                           size_t *len, char *msg, size_t msglen);

/* The URL checks of api_fetch alone (the first bullet at the top): no name
 * is resolved and nothing is sent.  API_FETCH_OK, or API_FETCH_BAD_URL with
 * why in msg (API_FETCH_FAILED when out of memory).  Thread-safe given
 * curl_global_init. */
api_fetch_result api_fetch_check_url(const char *url, char *msg, size_t msglen);

/* The decision the open-socket callback makes for each address curl is
 * about to connect to: url_guard_allowed(url_guard_classify(sa, len),
 * allow_private).  *cls (if not NULL) receives the class. */
bool api_fetch_address_allowed(const struct sockaddr *sa, socklen_t len, bool allow_private,
                               url_guard_class *cls);

/* An address policy: true to let a connect to sa go ahead.  api_fetch uses
 * api_fetch_address_allowed with lim->allow_private. */
typedef bool api_fetch_policy_fn(void *ctx, const struct sockaddr *sa, socklen_t len);

/* api_fetch with the open-socket decision made by policy(ctx, ...) instead
 * of the guard (lim->allow_private is then unused).  For tests: every test
 * server is on loopback, so only a policy that tells two loopback ports
 * apart can show that a redirect hop is checked on its own. */
api_fetch_result api_fetch_with_policy(const char *url, const api_fetch_limits *lim,
                                       api_fetch_policy_fn *policy, void *ctx, uint8_t **data,
                                       size_t *len, char *msg, size_t msglen);

/* Fills r with the error for a failed fetch and returns -1:
 *   BAD_URL   400 "invalid_url"      FORBIDDEN 400 "url_forbidden"
 *   FAILED    422 "fetch_failed"     TIMEOUT   422 "fetch_timeout"
 *   TOO_LARGE 413 "image_too_large"
 * with message prefix + msg (prefix may be NULL, e.g. "images[2]: ").
 * res must not be API_FETCH_OK (a bug: asserted). */
int api_fetch_reply(api_reply *r, api_fetch_result res, const char *prefix, const char *msg);

#endif
