/*
 * loopback_http.h - a tiny threaded HTTP/1.1 server on 127.0.0.1 or ::1, for tests.
 *
 * Tests of code that makes HTTP requests (the image fetcher, the server's
 * URL inputs) need servers that misbehave on purpose: slow, endless, lying
 * about their length, redirecting in circles.  This is one, small enough to
 * read in a sitting.  It listens on an ephemeral loopback port only (tests
 * never send traffic anywhere else), answers every request with one
 * behaviour, and counts what happened, so a test asserts on counts, never
 * on timings:
 *
 *     loopback_http_behaviour b = {.kind = LOOPBACK_HTTP_BODY, .body = png, .body_len = n};
 *     loopback_http *s = loopback_http_start(&b, AF_INET);
 *     char url[128];
 *     loopback_http_url(s, "/cat.png", url, sizeof url);
 *     ... fetch url ...
 *     CHECK(loopback_http_accepts(s) == 1);
 *     loopback_http_stop(s);
 *
 * Model: one accept thread; one thread per connection, which reads one
 * request (head up to 16 KiB, a Content-Length body up to 1 MiB), answers
 * it with "Connection: close" and closes: one request per connection, so
 * accepts == connections == requests for a well-behaved client, and each
 * redirect hop is a new connection.  Every wait (reading, writing, sleeping,
 * accepting) also watches one "stop" pipe, so loopback_http_stop returns
 * promptly even while a connection is mid-drip or a client has stopped
 * reading, and joins every thread it started (no leaks under ASan, no
 * races under TSan: counters are read under the server's mutex).
 * SIGPIPE is never raised (MSG_NOSIGNAL).
 *
 * Not thread-safe to stop while another thread calls functions on the same
 * server; everything else (counters, url, port) may be called from any thread.
 */
#ifndef VIT_TESTS_LOOPBACK_HTTP_H
#define VIT_TESTS_LOOPBACK_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct loopback_http loopback_http;           /* a running server */
typedef struct loopback_http_conn loopback_http_conn; /* one connection, for handlers */

/* One parsed request, valid during the handler call. */
typedef struct loopback_http_request {
    const char *method;  /* "GET" */
    const char *target;  /* the request-target as sent: "/a/b?x=1" */
    const char *headers; /* the header lines as sent, each ending "\r\n" */
    const uint8_t *body; /* Content-Length bytes (NULL when none) */
    size_t body_len;
} loopback_http_request;

/* What the server answers to every request. */
typedef enum loopback_http_kind {
    LOOPBACK_HTTP_BODY,     /* `status` (0: 200) with Content-Length and `body` */
    LOOPBACK_HTTP_DRIP,     /* 200, Content-Length body_len, then `body` one byte every drip_ms */
    LOOPBACK_HTTP_ENDLESS,  /* 200 without a length, then bytes until the client leaves */
    LOOPBACK_HTTP_DECLARE,  /* 200 with Content-Length `declared_length`, then no body at
                               all: the connection idles until the client leaves or stop */
    LOOPBACK_HTTP_CHAIN,    /* target "/N", N >= 1: 302 to "/N-1"; "/0": as BODY;
                               other targets: 404 */
    LOOPBACK_HTTP_REDIRECT, /* `status` (0: 302) with "Location: `location`" */
    LOOPBACK_HTTP_HANDLER,  /* handler(c, req, ctx) writes the whole answer */
} loopback_http_kind;

/* Writes the answer to req on c, with loopback_http_respond or the
 * write/printf/sleep calls below.  Runs on the connection's thread: several
 * may run at once.  The connection closes when it returns. */
typedef void loopback_http_handler(loopback_http_conn *c, const loopback_http_request *req,
                                   void *ctx);

/* The behaviour of a server; fields a kind does not use are ignored.
 * Strings and body are copied at start. */
typedef struct loopback_http_behaviour {
    loopback_http_kind kind;
    int status;                     /* BODY (0: 200), REDIRECT (0: 302) */
    const char *content_type;       /* BODY/DRIP/ENDLESS/DECLARE; NULL: application/octet-stream */
    const void *body;               /* BODY, DRIP, CHAIN's "/0" */
    size_t body_len;
    const char *location;           /* REDIRECT: any string, e.g. "file:///etc/passwd" */
    long delay_ms;                  /* every kind: pause after reading the request,
                                       before the status line */
    long drip_ms;                   /* DRIP: pause before each byte */
    uint64_t declared_length;       /* DECLARE */
    loopback_http_handler *handler; /* HANDLER */
    void *ctx;                      /* HANDLER: passed to handler */
} loopback_http_behaviour;

/* Starts a server with behaviour b on an ephemeral port of 127.0.0.1
 * (family AF_INET) or ::1 (AF_INET6).  NULL (and a line on stderr) when it
 * cannot: out of memory, no such loopback address (::1 on a host without
 * IPv6 -- a test may then skip its IPv6 cases), thread start failed. */
loopback_http *loopback_http_start(const loopback_http_behaviour *b, int family);

/* Stops accepting, wakes every connection (their writes fail, their sleeps
 * end), joins all threads, frees s.  s may be NULL. */
void loopback_http_stop(loopback_http *s);

/* The port s listens on. */
int loopback_http_port(const loopback_http *s);

/* Writes "http://127.0.0.1:PORT" or "http://[::1]:PORT" followed by path
 * (which should start with '/') into buf (truncated to len). */
void loopback_http_url(const loopback_http *s, const char *path, char *buf, size_t len);

/* Counters since start: connections accepted; requests read whole; answers
 * cut short because the client went away (a write failed with EPIPE or
 * ECONNRESET -- not because of stop); connections finished (closed by the
 * server after answering, or after the client left). */
unsigned loopback_http_accepts(loopback_http *s);
unsigned loopback_http_requests(loopback_http *s);
unsigned loopback_http_cuts(loopback_http *s);
unsigned loopback_http_closed(loopback_http *s);

/* Waits until at least n connections have finished, or timeout_ms passed;
 * true when they have.  For "the server saw the client leave": a client's
 * call returns when it closed its end, a moment before the server's thread
 * notices.  (The timeout is a bound on a hang, not a timing assertion.) */
bool loopback_http_wait_closed(loopback_http *s, unsigned n, long timeout_ms);

/* Waits until at least n requests have been read whole, or timeout_ms
 * passed; true when they have.  For "the server's fetch is in flight" (the
 * origin holds its reply).  A bound on a hang, as above. */
bool loopback_http_wait_requests(loopback_http *s, unsigned n, long timeout_ms);

/* ---- for handlers ---- */

/* Sends n bytes.  0, or -1 when the client has gone (counted as a cut) or
 * the server is stopping; after -1 the handler should return. */
int loopback_http_write(loopback_http_conn *c, const void *p, size_t n);

/* loopback_http_write of a formatted string (at most 8 KiB). */
int loopback_http_printf(loopback_http_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Sleeps ms milliseconds; false when woken early by stop. */
bool loopback_http_sleep(loopback_http_conn *c, long ms);

/* A whole answer: status line, Content-Type (NULL: application/octet-stream),
 * Content-Length n, "Connection: close", any `extra` header lines (each
 * ending "\r\n"; NULL for none), then the body.  0 or -1 as write. */
int loopback_http_respond(loopback_http_conn *c, int status, const char *content_type,
                          const char *extra, const void *body, size_t n);

/* The value of header `name` (case-insensitive) in req, copied into buf
 * (truncated to len, whitespace trimmed); NULL when there is none. */
const char *loopback_http_header(const loopback_http_request *req, const char *name, char *buf,
                                 size_t len);

#endif
