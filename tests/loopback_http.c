/*
 * loopback_http.c - the test HTTP server (loopback_http.h).
 *
 * Threads: the accept thread, and one thread per connection.  Connections
 * sit in a list owned by the server; the accept thread joins the finished
 * ones as it goes (so a long test does not pile up threads), stop joins the
 * rest.  Every blocking call is a poll() on the socket *and* the read end of
 * the stop pipe: stop writes one byte there and never reads it, so the pipe
 * stays readable and every present and future wait ends at once.
 */
#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "loopback_http.h"

#define LH_HEAD_MAX 16384         /* request line + headers */
#define LH_BODY_MAX (1024 * 1024) /* request body */

struct loopback_http_conn {
    loopback_http *server;
    int fd;
    bool cut;                      /* a write failed: the client left */
    bool done;                     /* the thread has finished (under server->mu) */
    pthread_t thread;
    struct loopback_http_conn *next;
};

struct loopback_http {
    int family;
    int listen_fd;
    int port;
    int stop_pipe[2];              /* [0] polled by every wait; stop writes [1] */
    pthread_t accept_thread;
    loopback_http_behaviour b;     /* strings and body copied: */
    char *content_type, *location;
    uint8_t *body;

    pthread_mutex_t mu;            /* guards everything below */
    pthread_cond_t closed_cv;      /* signalled when a connection finishes */
    loopback_http_conn *conns;     /* live and finished-but-unjoined connections */
    unsigned accepts, requests, cuts, closed;
};

/* ---- waiting -------------------------------------------------------------- */

/* Milliseconds on the monotonic clock. */
static long long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Waits up to ms (-1: forever) for events on fd (fd < 0: none).  1 when fd is
 * ready, 0 on timeout, -1 when stop was signalled. */
static int wait_fd(loopback_http *s, int fd, short events, long ms)
{
    long long end = ms < 0 ? 0 : now_ms() + ms;
    for (;;) {
        struct pollfd p[2] = {{.fd = s->stop_pipe[0], .events = POLLIN},
                              {.fd = fd, .events = events}};
        long left = ms < 0 ? -1 : (long)(end - now_ms());
        if (ms >= 0 && left < 0)
            left = 0;
        int r = poll(p, fd >= 0 ? 2 : 1, left > 1000000 ? 1000000 : (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 || (p[0].revents & POLLIN))
            return -1;
        if (fd >= 0 && p[1].revents)
            return 1;
        if (ms >= 0 && now_ms() >= end)
            return 0;
    }
}

bool loopback_http_sleep(loopback_http_conn *c, long ms)
{
    return wait_fd(c->server, -1, 0, ms) == 0;
}

/* ---- writing ---------------------------------------------------------------- */

int loopback_http_write(loopback_http_conn *c, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        if (c->cut || wait_fd(c->server, c->fd, POLLOUT, -1) < 0)
            return -1;
        ssize_t w = send(c->fd, b, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            continue;
        if (w <= 0) {
            c->cut = true;
            pthread_mutex_lock(&c->server->mu);
            c->server->cuts++;
            pthread_mutex_unlock(&c->server->mu);
            return -1;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

int loopback_http_printf(loopback_http_conn *c, const char *fmt, ...)
{
    char buf[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    return loopback_http_write(c, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* The reason phrase of a status (any text is valid HTTP; these read well). */
static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    }
    return "Status";
}

static const char *type_or_default(const char *t)
{
    return t ? t : "application/octet-stream";
}

int loopback_http_respond(loopback_http_conn *c, int status, const char *content_type,
                          const char *extra, const void *body, size_t n)
{
    if (loopback_http_printf(c,
                             "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                             "Connection: close\r\n%s\r\n",
                             status, reason(status), type_or_default(content_type), n,
                             extra ? extra : "") < 0)
        return -1;
    return n ? loopback_http_write(c, body, n) : 0;
}

/* ---- requests ----------------------------------------------------------------- */

const char *loopback_http_header(const loopback_http_request *req, const char *name, char *buf,
                                 size_t len)
{
    size_t nl = strlen(name);
    for (const char *line = req->headers; line && *line;) {
        const char *eol = strstr(line, "\r\n");
        if (!eol)
            break;
        if ((size_t)(eol - line) > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0) {
            const char *v = line + nl + 1, *e = eol;
            while (v < e && (*v == ' ' || *v == '\t'))
                v++;
            while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            size_t n = (size_t)(e - v);
            if (len == 0)
                return buf;
            if (n >= len)
                n = len - 1;
            memcpy(buf, v, n);
            buf[n] = '\0';
            return buf;
        }
        line = eol + 2;
    }
    return NULL;
}

/* Reads one request from c into head (NUL-terminated, parsed in place) and,
 * when it has a Content-Length, *body (malloc'd).  0 on success; -1 when the
 * client left, sent garbage (answered 400/413/431 where possible) or stop. */
static int read_request(loopback_http_conn *c, char *head, loopback_http_request *req,
                        uint8_t **body)
{
    size_t have = 0;
    char *end = NULL;
    while (!end) {
        if (have == LH_HEAD_MAX - 1) {
            loopback_http_respond(c, 431, "text/plain", NULL, NULL, 0);
            return -1;
        }
        if (wait_fd(c->server, c->fd, POLLIN, -1) < 0)
            return -1;
        ssize_t r = recv(c->fd, head + have, LH_HEAD_MAX - 1 - have, 0);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r <= 0)
            return -1;
        have += (size_t)r;
        head[have] = '\0';
        end = strstr(head, "\r\n\r\n");
    }
    size_t head_len = (size_t)(end - head) + 4;
    end[2] = '\0'; /* headers keep their last "\r\n" */

    /* request line: METHOD SP TARGET SP VERSION CRLF */
    char *sp1 = strchr(head, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    char *eol = strstr(head, "\r\n");
    if (!sp1 || !sp2 || !eol || sp2 > eol) {
        loopback_http_respond(c, 400, "text/plain", NULL, NULL, 0);
        return -1;
    }
    *sp1 = '\0';
    *sp2 = '\0';
    *eol = '\0';
    req->method = head;
    req->target = sp1 + 1;
    req->headers = eol + 2;
    req->body = NULL;
    req->body_len = 0;

    char v[32];
    if (loopback_http_header(req, "Content-Length", v, sizeof v)) {
        char *e;
        unsigned long long n = strtoull(v, &e, 10);
        if (*e || n > LH_BODY_MAX) {
            loopback_http_respond(c, 413, "text/plain", NULL, NULL, 0);
            return -1;
        }
        *body = malloc(n ? n : 1);
        if (!*body)
            return -1;
        size_t got = have - head_len < n ? have - head_len : n;
        memcpy(*body, head + head_len, got);
        while (got < n) {
            if (wait_fd(c->server, c->fd, POLLIN, -1) < 0)
                return -1;
            ssize_t r = recv(c->fd, *body + got, n - got, 0);
            if (r < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (r <= 0)
                return -1;
            got += (size_t)r;
        }
        req->body = *body;
        req->body_len = n;
    }
    return 0;
}

/* ---- the behaviours --------------------------------------------------------------- */

/* Waits until the client closes its end (or stop), reading and dropping
 * whatever it sends. */
static void idle_until_gone(loopback_http_conn *c)
{
    char sink[512];
    while (wait_fd(c->server, c->fd, POLLIN, -1) > 0) {
        ssize_t r = recv(c->fd, sink, sizeof sink, 0);
        if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN))
            return;
    }
}

/* Answers req on c as the server's behaviour says. */
static void answer(loopback_http_conn *c, const loopback_http_request *req)
{
    loopback_http *s = c->server;
    const loopback_http_behaviour *b = &s->b;
    if (b->delay_ms > 0 && !loopback_http_sleep(c, b->delay_ms))
        return;
    switch (b->kind) {
    case LOOPBACK_HTTP_BODY:
        loopback_http_respond(c, b->status ? b->status : 200, b->content_type, NULL, s->body,
                              b->body_len);
        return;
    case LOOPBACK_HTTP_DRIP:
        if (loopback_http_printf(c,
                                 "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                                 "Connection: close\r\n\r\n",
                                 type_or_default(b->content_type), b->body_len) < 0)
            return;
        for (size_t i = 0; i < b->body_len; i++)
            if (!loopback_http_sleep(c, b->drip_ms) || loopback_http_write(c, s->body + i, 1) < 0)
                return;
        return;
    case LOOPBACK_HTTP_ENDLESS: {
        if (loopback_http_printf(c, "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nConnection: close\r\n\r\n",
                                 type_or_default(b->content_type)) < 0)
            return;
        static const uint8_t chunk[16384]; /* zeros */
        while (loopback_http_write(c, chunk, sizeof chunk) == 0)
            ;
        return;
    }
    case LOOPBACK_HTTP_DECLARE:
        if (loopback_http_printf(c,
                                 "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %llu\r\n"
                                 "Connection: close\r\n\r\n",
                                 type_or_default(b->content_type),
                                 (unsigned long long)b->declared_length) == 0)
            idle_until_gone(c);
        return;
    case LOOPBACK_HTTP_CHAIN: {
        const char *t = req->target;
        char *e = NULL;
        unsigned long n = t[0] == '/' && t[1] >= '0' && t[1] <= '9' ? strtoul(t + 1, &e, 10) : 0;
        if (!e || *e) {
            loopback_http_respond(c, 404, "text/plain", NULL, "no such hop\n", 12);
        } else if (n == 0) {
            loopback_http_respond(c, 200, b->content_type, NULL, s->body, b->body_len);
        } else {
            char loc[64];
            snprintf(loc, sizeof loc, "Location: /%lu\r\n", n - 1);
            loopback_http_respond(c, 302, "text/plain", loc, NULL, 0);
        }
        return;
    }
    case LOOPBACK_HTTP_REDIRECT: {
        size_t n = strlen(s->location ? s->location : "") + 16;
        char *loc = malloc(n);
        if (!loc)
            return;
        snprintf(loc, n, "Location: %s\r\n", s->location ? s->location : "");
        loopback_http_respond(c, b->status ? b->status : 302, "text/plain", loc, NULL, 0);
        free(loc);
        return;
    }
    case LOOPBACK_HTTP_HANDLER:
        b->handler(c, req, b->ctx);
        return;
    }
}

/* A connection's thread: read one request, answer it, close. */
static void *conn_main(void *arg)
{
    loopback_http_conn *c = arg;
    loopback_http *s = c->server;
    char *head = malloc(LH_HEAD_MAX);
    uint8_t *body = NULL;
    loopback_http_request req;
    if (head && read_request(c, head, &req, &body) == 0) {
        pthread_mutex_lock(&s->mu);
        s->requests++;
        pthread_mutex_unlock(&s->mu);
        answer(c, &req);
    }
    free(head);
    free(body);
    close(c->fd);
    pthread_mutex_lock(&s->mu);
    c->done = true;
    s->closed++;
    pthread_cond_broadcast(&s->closed_cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- the server ---------------------------------------------------------------------- */

/* Joins and frees the connections that have finished (all of them when
 * `all`, waiting for each). */
static void reap(loopback_http *s, bool all)
{
    for (;;) {
        loopback_http_conn *found = NULL;
        pthread_mutex_lock(&s->mu);
        for (loopback_http_conn **pp = &s->conns; *pp; pp = &(*pp)->next)
            if (all || (*pp)->done) {
                found = *pp;
                *pp = found->next;
                break;
            }
        pthread_mutex_unlock(&s->mu);
        if (!found)
            return;
        pthread_join(found->thread, NULL);
        free(found);
    }
}

static void *accept_main(void *arg)
{
    loopback_http *s = arg;
    while (wait_fd(s, s->listen_fd, POLLIN, -1) > 0) {
        reap(s, false);
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        loopback_http_conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->server = s;
        c->fd = fd;
        pthread_mutex_lock(&s->mu);
        s->accepts++;
        c->next = s->conns;
        s->conns = c;
        if (pthread_create(&c->thread, NULL, conn_main, c) != 0) {
            s->conns = c->next;
            close(fd);
            free(c);
        }
        pthread_mutex_unlock(&s->mu);
    }
    return NULL;
}

/* strdup that keeps NULL. */
static bool copy_string(const char *in, char **out)
{
    *out = in ? strdup(in) : NULL;
    return !in || *out;
}

loopback_http *loopback_http_start(const loopback_http_behaviour *b, int family)
{
    loopback_http *s = calloc(1, sizeof *s);
    if (!s) {
        fprintf(stderr, "loopback_http: out of memory\n");
        return NULL;
    }
    s->family = family;
    s->listen_fd = -1;
    s->stop_pipe[0] = s->stop_pipe[1] = -1;
    s->b = *b;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->closed_cv, NULL);
    const char *why = NULL;
    if (!copy_string(b->content_type, &s->content_type) || !copy_string(b->location, &s->location) ||
        !(s->body = malloc(b->body_len ? b->body_len : 1))) {
        why = "out of memory";
        goto fail;
    }
    if (b->body_len)
        memcpy(s->body, b->body, b->body_len);
    s->b.content_type = s->content_type;
    s->b.location = s->location;
    s->b.body = s->body;

    if (pipe(s->stop_pipe) != 0) {
        why = "pipe failed";
        goto fail;
    }
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        sl = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sl = sizeof *a;
        s->family = AF_INET;
    }
    s->listen_fd = socket(s->family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s->listen_fd < 0 || bind(s->listen_fd, (struct sockaddr *)&ss, sl) != 0 ||
        listen(s->listen_fd, 64) != 0 || getsockname(s->listen_fd, (struct sockaddr *)&ss, &sl) != 0) {
        why = strerror(errno);
        goto fail;
    }
    s->port = ntohs(family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                       : ((struct sockaddr_in *)&ss)->sin_port);
    if (pthread_create(&s->accept_thread, NULL, accept_main, s) != 0) {
        why = "pthread_create failed";
        goto fail;
    }
    return s;
fail:
    fprintf(stderr, "loopback_http: cannot start a server on %s: %s\n",
            family == AF_INET6 ? "[::1]" : "127.0.0.1", why);
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    for (int i = 0; i < 2; i++)
        if (s->stop_pipe[i] >= 0)
            close(s->stop_pipe[i]);
    pthread_cond_destroy(&s->closed_cv);
    pthread_mutex_destroy(&s->mu);
    free(s->content_type);
    free(s->location);
    free(s->body);
    free(s);
    return NULL;
}

void loopback_http_stop(loopback_http *s)
{
    if (!s)
        return;
    ssize_t w;
    do
        w = write(s->stop_pipe[1], "x", 1);
    while (w < 0 && errno == EINTR);
    pthread_join(s->accept_thread, NULL);
    reap(s, true);
    close(s->listen_fd);
    close(s->stop_pipe[0]);
    close(s->stop_pipe[1]);
    pthread_cond_destroy(&s->closed_cv);
    pthread_mutex_destroy(&s->mu);
    free(s->content_type);
    free(s->location);
    free(s->body);
    free(s);
}

int loopback_http_port(const loopback_http *s)
{
    return s->port;
}

void loopback_http_url(const loopback_http *s, const char *path, char *buf, size_t len)
{
    snprintf(buf, len, s->family == AF_INET6 ? "http://[::1]:%d%s" : "http://127.0.0.1:%d%s",
             s->port, path ? path : "");
}

/* One counter, read under the mutex. */
static unsigned counter(loopback_http *s, const unsigned *field)
{
    pthread_mutex_lock(&s->mu);
    unsigned v = *field;
    pthread_mutex_unlock(&s->mu);
    return v;
}

unsigned loopback_http_accepts(loopback_http *s) { return counter(s, &s->accepts); }
unsigned loopback_http_requests(loopback_http *s) { return counter(s, &s->requests); }
unsigned loopback_http_cuts(loopback_http *s) { return counter(s, &s->cuts); }
unsigned loopback_http_closed(loopback_http *s) { return counter(s, &s->closed); }

bool loopback_http_wait_requests(loopback_http *s, unsigned n, long timeout_ms)
{
    struct timespec step = {0, 10000000L}; /* the counter has no condition of its own */
    for (long waited = 0; loopback_http_requests(s) < n && waited < timeout_ms; waited += 10)
        nanosleep(&step, NULL);
    return loopback_http_requests(s) >= n;
}

bool loopback_http_wait_closed(loopback_http *s, unsigned n, long timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->mu);
    while (s->closed < n)
        if (pthread_cond_timedwait(&s->closed_cv, &s->mu, &until) != 0)
            break;
    bool ok = s->closed >= n;
    pthread_mutex_unlock(&s->mu);
    return ok;
}
