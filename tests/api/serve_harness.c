/*
 * serve_harness.c - the API tests' server process, HTTP client, tasks and
 * references (see serve_harness.h for the contract of each function).
 *
 * The server runs as a child process from posix_spawn: stdout a pipe (its
 * one "listening on" line, then nothing), stderr a file (its log).  Every
 * wait is a poll or a waitpid loop with a deadline.
 */
#define _GNU_SOURCE /* pipe2, O_CLOEXEC */
#include "serve_harness.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "openapi_check.h"
#include "task.h"
#include "test_util.h"

extern char **environ;

double serve_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static const char *vitfit_bin(void)
{
    const char *bin = getenv("VITFIT_BIN");
    return bin && *bin ? bin : "vitfit";
}

/* ---- replies against api/openapi.yaml ---------------------------------- */

/* Every reply serve_request receives is checked against the document
 * (openapi_check.h); a mismatch is printed at once and counted apart from
 * check.h's counters, which are not safe to bump from the client threads
 * some tests run.  serve_harness_failures adds them up. */
static pthread_once_t doc_once = PTHREAD_ONCE_INIT;
static json_t *the_doc;             /* read-only once loaded */
static char doc_error[512];
static atomic_int replies_checked, replies_failed, replies_cut; /* cut: not complete */
static pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;
static json_t *replies_seen;        /* "METHOD template status" -> count */

static void doc_load(void)
{
    char path[1024];
    the_doc = openapi_yaml_load(test_path(path, sizeof path, "api/openapi.yaml"), doc_error,
                                sizeof doc_error);
}

/* Checks the reply r to q; only complete exchanges (a reply curl cut short
 * is the test's business, and its body may be partial). */
static void reply_check(const serve_req *q, const serve_resp *r)
{
    if (r->status == 0)
        return;
    if (r->cc != CURLE_OK) {
        atomic_fetch_add(&replies_cut, 1);
        return;
    }
    pthread_once(&doc_once, doc_load);
    atomic_fetch_add(&replies_checked, 1);
    if (!the_doc) {
        if (atomic_fetch_add(&replies_failed, 1) == 0)
            fprintf(stderr, "openapi: cannot read the document: %s\n", doc_error);
        return;
    }
    const char *method = q->method ? q->method : q->body || q->mime ? "POST" : "GET";
    openapi_reply rep = {.method = method, .path = q->path, .status = (int)r->status,
                         .head = r->head, .body = r->body, .body_len = r->body_len};
    char key[320], why[2048];
    if (!openapi_check_reply(the_doc, &rep, key, sizeof key, why, sizeof why)) {
        atomic_fetch_add(&replies_failed, 1);
        fprintf(stderr, "openapi: reply not as api/openapi.yaml documents it: %s\n", why);
    }
    pthread_mutex_lock(&seen_lock);
    if (!replies_seen)
        replies_seen = json_object();
    json_t *n = json_object_get(replies_seen, key);
    json_object_set_new(replies_seen, key, json_integer(n ? json_integer_value(n) + 1 : 1));
    pthread_mutex_unlock(&seen_lock);
}

int serve_harness_failures(void)
{
    fprintf(stderr, "harness: %d checks, %d failed\n", check_count, check_failures);
    int checked = atomic_load(&replies_checked), failed = atomic_load(&replies_failed);
    fprintf(stderr, "openapi: %d replies checked against api/openapi.yaml, %d failed; %zu "
                    "distinct (method, path, status); %d not checked (cut short)\n",
            checked, failed, json_object_size(replies_seen), atomic_load(&replies_cut));
    /* VIT_TEST_OPENAPI_SEEN=FILE: append what was seen (documentation coverage) */
    const char *seen_file = getenv("VIT_TEST_OPENAPI_SEEN");
    FILE *f = seen_file && *seen_file ? fopen(seen_file, "a") : NULL;
    const char *key;
    json_t *count;
    json_object_foreach(replies_seen, key, count)
        if (f)
            fprintf(f, "%s\t%" JSON_INTEGER_FORMAT "\n", key, json_integer_value(count));
    if (f)
        fclose(f);
    json_decref(replies_seen);
    replies_seen = NULL;
    return check_failures + failed;
}

/* ---- files -------------------------------------------------------------- */

uint8_t *serve_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return NULL;
    }
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap = (n + 65536 + 1) * 2;
            uint8_t *b = realloc(buf, cap);
            if (!b) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = b;
        }
        size_t got = fread(buf + n, 1, 65536, f);
        n += got;
        if (got < 65536)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

bool serve_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return false;
    bool ok = fwrite(data, 1, len, f) == len;
    return fclose(f) == 0 && ok;
}

char *serve_base64(const void *data, size_t len)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const uint8_t *p = data;
    char *out = malloc((len + 2) / 3 * 4 + 1), *o = out;
    if (!out)
        return NULL;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = al[v >> 18];
        *o++ = al[(v >> 12) & 63];
        *o++ = al[(v >> 6) & 63];
        *o++ = al[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0);
        *o++ = al[v >> 18];
        *o++ = al[(v >> 12) & 63];
        *o++ = i + 1 < len ? al[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    *o = 0;
    return out;
}

bool serve_tmpdir(const char *what, char *buf, size_t len)
{
    snprintf(buf, len, "/tmp/vitfit-api-%s-XXXXXX", what);
    if (!mkdtemp(buf))
        return false;
    char tasks[512];
    snprintf(tasks, sizeof tasks, "%s/tasks", buf);
    return mkdir(tasks, 0700) == 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void serve_rmtree(const char *path)
{
    if (path && strncmp(path, "/tmp/vitfit-api-", 16) == 0) /* never anything else */
        nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- processes ---------------------------------------------------------- */

/* The last bytes (up to 6000) of the log file, to stderr. */
static void print_log_tail(const char *path)
{
    size_t n;
    uint8_t *log = serve_read_file(path, &n);
    if (!log)
        return;
    size_t from = n > 6000 ? n - 6000 : 0;
    fprintf(stderr, "---- server log %s (last %zu of %zu bytes) ----\n%s\n---- end of log ----\n",
            path, n - from, n, (char *)log + from);
    free(log);
}

/* Waits for pid up to timeout_ms; SIGKILLs it after.  Exit code, 128 + signal,
 * or -2 on timeout. */
static int wait_child(pid_t pid, long timeout_ms)
{
    double deadline = serve_now_ms() + (double)timeout_ms;
    int ws;
    for (;;) {
        pid_t w = waitpid(pid, &ws, WNOHANG);
        if (w == pid)
            break;
        if (w < 0 && errno != EINTR)
            return -1;
        if (serve_now_ms() > deadline) {
            fprintf(stderr, "process %d did not exit within %ld ms: killing it\n", (int)pid,
                    timeout_ms);
            kill(pid, SIGKILL);
            while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
            }
            return -2;
        }
        sleep_ms(5);
    }
    if (WIFEXITED(ws))
        return WEXITSTATUS(ws);
    if (WIFSIGNALED(ws))
        return 128 + WTERMSIG(ws);
    return -1;
}

bool serve_start(serve_proc *p, const char *data_dir, const char *api_key,
                 const char *const *extra)
{
    memset(p, 0, sizeof *p);
    p->out_fd = -1;
    char model[1024];
    test_path(model, sizeof model, SERVE_MODEL);
    const char *argv[96];
    int argc = 0;
    argv[argc++] = vitfit_bin();
    argv[argc++] = "serve";
    argv[argc++] = "--model";
    argv[argc++] = model;
    argv[argc++] = "--data-dir";
    argv[argc++] = data_dir;
    argv[argc++] = "--port";
    argv[argc++] = "0";
    if (api_key && *api_key) {
        argv[argc++] = "--api-key";
        argv[argc++] = api_key;
        snprintf(p->api_key, sizeof p->api_key, "%s", api_key);
    }
    for (int i = 0; extra && extra[i] && argc < 94; i++)
        argv[argc++] = extra[i];
    argv[argc] = NULL;

    snprintf(p->log_path, sizeof p->log_path, "/tmp/vitfit-api-log-XXXXXX");
    int log_fd = mkostemp(p->log_path, O_CLOEXEC);
    int pipefd[2];
    if (log_fd < 0 || pipe2(pipefd, O_CLOEXEC) != 0) {
        fprintf(stderr, "serve_start: cannot make the log file or pipe\n");
        if (log_fd >= 0)
            close(log_fd);
        return false;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
    posix_spawn_file_actions_adddup2(&fa, log_fd, 2);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pipefd[1]);
    close(log_fd);
    if (rc != 0) {
        fprintf(stderr, "serve_start: cannot run %s: %s\n", argv[0], strerror(rc));
        close(pipefd[0]);
        return false;
    }
    p->pid = pid;
    p->out_fd = pipefd[0];

    /* the one line, within 120 s (model load under ASan is slow, never this slow) */
    char line[512];
    size_t n = 0;
    double deadline = serve_now_ms() + 120000;
    bool have_line = false;
    while (!have_line && n + 1 < sizeof line) {
        double left = deadline - serve_now_ms();
        if (left <= 0)
            break;
        struct pollfd pf = {.fd = p->out_fd, .events = POLLIN};
        int pr = poll(&pf, 1, (int)left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            break;
        ssize_t got = read(p->out_fd, line + n, 1); /* byte by byte: leave the rest in the pipe */
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break; /* EOF: it exited */
        if (line[n] == '\n')
            have_line = true;
        else
            n++;
    }
    line[n] = 0;
    int port = 0;
    char tail;
    if (!have_line ||
        sscanf(line, "vitfit: listening on http://127.0.0.1:%d%c", &port, &tail) != 1 ||
        port <= 0 || port > 65535) {
        fprintf(stderr, "serve_start: no \"vitfit: listening on http://127.0.0.1:PORT\" line; "
                        "stdout so far: \"%s\"\n", line);
        int st = serve_stop(p, SIGKILL, 10000);
        fprintf(stderr, "serve_start: the server ended with %d\n", st);
        return false;
    }
    p->port = port;
    snprintf(p->base, sizeof p->base, "http://127.0.0.1:%d", port);
    return true;
}

/* Does the log hold a sanitizer report? */
static bool log_has_report(const char *path)
{
    size_t n;
    uint8_t *log = serve_read_file(path, &n);
    if (!log)
        return false;
    const char *s = (const char *)log;
    bool bad = strstr(s, "AddressSanitizer") || strstr(s, "LeakSanitizer") ||
               strstr(s, "ThreadSanitizer") || strstr(s, "UndefinedBehaviorSanitizer") ||
               strstr(s, "runtime error:");
    free(log);
    return bad;
}

int serve_stop(serve_proc *p, int sig, long timeout_ms)
{
    if (!p->pid)
        return -1;
    if (sig)
        kill(p->pid, sig);
    int st = wait_child(p->pid, timeout_ms);
    p->pid = 0;
    /* stdout after the "listening" line: nothing (the process is gone, so
     * read sees EOF after whatever it wrote) */
    char rest[256];
    ssize_t n = 0, got;
    if (p->out_fd >= 0) {
        fcntl(p->out_fd, F_SETFL, O_NONBLOCK);
        while (n < (ssize_t)sizeof rest - 1 && (got = read(p->out_fd, rest + n,
                                                            sizeof rest - 1 - (size_t)n)) > 0)
            n += got;
        close(p->out_fd);
        p->out_fd = -1;
    }
    rest[n] = 0;
    bool report = log_has_report(p->log_path);
    CHECKF(st != CHECK_EXIT_ASAN && st != CHECK_EXIT_TSAN && !report,
           "vitfit serve: exit %d with a sanitizer report", st);
    if (sig != SIGKILL)
        CHECKF(n == 0, "vitfit serve wrote more than its one line on stdout: \"%s\"", rest);
    if (st != 0 || report)
        print_log_tail(p->log_path);
    unlink(p->log_path);
    return st;
}

int serve_run_cli(const char *const *args, char *out, size_t out_len, char *err, size_t err_len,
                  long timeout_ms)
{
    const char *argv[128];
    int argc = 0;
    argv[argc++] = vitfit_bin();
    for (int i = 0; args[i] && argc < 127; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;
    return serve_run(argv, out, out_len, err, err_len, timeout_ms);
}

int serve_run(const char *const *argv, char *out, size_t out_len, char *err, size_t err_len,
              long timeout_ms)
{
    char out_path[] = "/tmp/vitfit-api-out-XXXXXX", err_path[] = "/tmp/vitfit-api-err-XXXXXX";
    int out_fd = mkostemp(out_path, O_CLOEXEC), err_fd = mkostemp(err_path, O_CLOEXEC);
    int st = -1;
    if (out_fd >= 0 && err_fd >= 0) {
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
        posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
        pid_t pid;
        if (posix_spawn(&pid, argv[0], &fa, NULL, (char *const *)argv, environ) == 0)
            st = wait_child(pid, timeout_ms);
        posix_spawn_file_actions_destroy(&fa);
    }
    if (out_fd >= 0)
        close(out_fd);
    if (err_fd >= 0)
        close(err_fd);
    char *bufs[2] = {out, err};
    size_t lens[2] = {out_len, err_len};
    const char *paths[2] = {out_path, err_path};
    for (int i = 0; i < 2; i++) {
        size_t n = 0;
        uint8_t *data = serve_read_file(paths[i], &n);
        if (bufs[i] && lens[i]) {
            size_t m = data ? (n < lens[i] - 1 ? n : lens[i] - 1) : 0;
            if (m)
                memcpy(bufs[i], data, m);
            bufs[i][m] = 0;
        }
        free(data);
        unlink(paths[i]);
    }
    CHECKF(st != CHECK_EXIT_ASAN && st != CHECK_EXIT_TSAN, "%s %s: a sanitizer report (exit %d)",
           argv[0], argv[1] ? argv[1] : "", st);
    return st;
}

/* ---- HTTP --------------------------------------------------------------- */

/* A growing buffer for curl's callbacks, capped so a runaway reply fails. */
typedef struct grow_buf {
    char *p;
    size_t n, cap;
} grow_buf;

#define SERVE_MAX_REPLY ((size_t)64 << 20)

static bool grow_append(grow_buf *b, const char *data, size_t n)
{
    if (b->n + n + 1 > SERVE_MAX_REPLY)
        return false;
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->n + n + 1) * 2;
        char *q = realloc(b->p, cap);
        if (!q)
            return false;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = 0;
    return true;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    return grow_append(ud, data, size * nmemb) ? size * nmemb : 0;
}

/* Keeps only the last response's headers (a 100 Continue or a redirect
 * starts a new block with its status line). */
static size_t on_header(char *data, size_t size, size_t nmemb, void *ud)
{
    grow_buf *b = ud;
    size_t n = size * nmemb;
    if (n >= 5 && memcmp(data, "HTTP/", 5) == 0)
        b->n = 0;
    return grow_append(b, data, n) ? n : 0;
}

void serve_images_load(serve_images *im)
{
    static const char *const rel[SERVE_NIMG] = {
        "models/fashion-vit-tiny/samples/0_ankle_boot.png",
        "models/fashion-vit-tiny/samples/1_pullover.png",
        "models/fashion-vit-tiny/samples/2_trouser.png",
        "tests/data/images/chelsea.png",
        "tests/data/images/coffee.jpg",
        "tests/data/images/rocket.bmp",
    };
    for (int i = 0; i < SERVE_NIMG; i++) {
        test_path(im->path[i], sizeof im->path[i], rel[i]);
        im->data[i] = serve_read_file(im->path[i], &im->len[i]);
        VIT_ASSERT(im->data[i]);
        im->b64[i] = serve_base64(im->data[i], im->len[i]);
        VIT_ASSERT(im->b64[i]);
    }
}

void serve_images_free(serve_images *im)
{
    for (int i = 0; i < SERVE_NIMG; i++) {
        free(im->data[i]);
        free(im->b64[i]);
    }
}

static void *pending_run(void *arg)
{
    serve_pending *pe = arg;
    CURL *h = curl_easy_init();
    VIT_ASSERT(h);
    serve_request(pe->p, h, &pe->q, &pe->r);
    curl_easy_cleanup(h);
    return NULL;
}

void serve_request_start(serve_pending *pe, const serve_proc *p, const serve_req *q)
{
    *pe = (serve_pending){.p = p, .q = *q};
    VIT_ASSERT(pthread_create(&pe->thread, NULL, pending_run, pe) == 0);
}

void serve_request_join(serve_pending *pe)
{
    VIT_ASSERT(pthread_join(pe->thread, NULL) == 0);
}

bool serve_request(const serve_proc *p, CURL *h, const serve_req *q, serve_resp *r)
{
    memset(r, 0, sizeof *r);
    grow_buf body = {0}, head = {0};
    grow_append(&body, "", 0);
    grow_append(&head, "", 0);
    char url[1024], line[512];
    snprintf(url, sizeof url, "%s%s", p->base, q->path);
    curl_easy_reset(h);
    struct curl_slist *hdrs = NULL;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROXY, ""); /* loopback only, whatever the environment says */
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, q->timeout_ms > 0 ? q->timeout_ms : 60000L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &head);
    if (q->mime) {
        curl_easy_setopt(h, CURLOPT_MIMEPOST, q->mime);
    } else if (q->body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->len);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, q->body);
    }
    if (q->method) {
        if (strcmp(q->method, "HEAD") == 0)
            curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        else
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, q->method);
    }
    if (q->content_type) {
        snprintf(line, sizeof line, "Content-Type: %s", q->content_type);
        hdrs = curl_slist_append(hdrs, line);
    } else if (q->body && !q->mime) {
        hdrs = curl_slist_append(hdrs, "Content-Type:"); /* not curl's form default */
    }
    if (q->expect_100) {
        hdrs = curl_slist_append(hdrs, "Expect: 100-continue");
        curl_easy_setopt(h, CURLOPT_EXPECT_100_TIMEOUT_MS, 10000L);
    } else {
        hdrs = curl_slist_append(hdrs, "Expect:"); /* no 100-continue round trip */
    }
    if (q->auth) {
        if (*q->auth) {
            snprintf(line, sizeof line, "Authorization: %s", q->auth);
            hdrs = curl_slist_append(hdrs, line);
        }
    } else if (p->api_key[0]) {
        snprintf(line, sizeof line, "Authorization: Bearer %s", p->api_key);
        hdrs = curl_slist_append(hdrs, line);
    }
    if (q->request_id) {
        snprintf(line, sizeof line, "X-Request-Id: %s", q->request_id);
        hdrs = curl_slist_append(hdrs, line);
    }
    for (int i = 0; q->extra && q->extra[i]; i++)
        hdrs = curl_slist_append(hdrs, q->extra[i]);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    double t0 = serve_now_ms();
    r->cc = curl_easy_perform(h);
    r->seconds = (serve_now_ms() - t0) / 1e3;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hdrs);
    r->body = body.p;
    r->body_len = body.n;
    r->head = head.p;
    r->head_len = head.n;
    if (r->cc != CURLE_OK && r->status == 0)
        return false;
    reply_check(q, r);
    return r->status != 0;
}

void serve_resp_free(serve_resp *r)
{
    free(r->body);
    free(r->head);
    memset(r, 0, sizeof *r);
}

const char *serve_header(const serve_resp *r, const char *name, char *buf, size_t len)
{
    return openapi_header_value(r->head, name, buf, len);
}

json_t *serve_json(const serve_resp *r)
{
    if (!r->body)
        return NULL;
    return json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, NULL);
}

/* Is s a snake_case code: [a-z][a-z0-9_]* ? */
static bool snake_case(const char *s)
{
    if (!s || !(*s >= 'a' && *s <= 'z'))
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}

/* Is code one of the '|'-separated codes? */
static bool code_in(const char *code, const char *codes)
{
    size_t n = strlen(code);
    for (const char *s = codes; *s;) {
        const char *bar = strchr(s, '|');
        size_t ln = bar ? (size_t)(bar - s) : strlen(s);
        if (ln == n && strncmp(s, code, n) == 0)
            return true;
        s += ln + (bar ? 1 : 0);
    }
    return false;
}

/* The first 300 bytes of the body, for messages. */
static const char *body_start(const serve_resp *r, char *buf, size_t len)
{
    snprintf(buf, len, "%.300s", r->body ? r->body : "(none)");
    return buf;
}

bool serve_check_error(const char *what, const serve_resp *r, int status, const char *codes)
{
    int before = check_failures;
    char b[400], ct[128], id[128];
    CHECKF(r->status == status, "%s: status %ld, want %d (curl: %s); body %s", what, r->status,
           status, curl_easy_strerror(r->cc), body_start(r, b, sizeof b));
    json_t *j = serve_json(r);
    json_t *e = json_object_get(j, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    CHECKF(json_is_object(j) && json_object_size(j) == 1 && json_is_object(e),
           "%s: body is not {\"error\": {...}}: %s", what, body_start(r, b, sizeof b));
    CHECKF(snake_case(code), "%s: error.code \"%s\" is not a snake_case string", what,
           code ? code : "(missing)");
    CHECKF(msg && *msg, "%s: error.message missing or empty", what);
    if (codes && code)
        CHECKF(code_in(code, codes), "%s: error.code \"%s\", want %s (message: %s)", what, code,
               codes, msg ? msg : "");
    CHECKF(serve_header(r, "Content-Type", ct, sizeof ct) &&
               strncmp(ct, "application/json", 16) == 0,
           "%s: Content-Type of an error is not JSON", what);
    CHECKF(serve_header(r, "X-Request-Id", id, sizeof id) && *id, "%s: no X-Request-Id", what);
    fprintf(stderr, "  %-44s -> %ld %s: %s\n", what, r->status, code ? code : "?",
            msg ? msg : "");
    json_decref(j);
    return check_failures == before;
}

json_t *serve_check_ok(const char *what, const serve_resp *r)
{
    char b[400];
    json_t *j = r->status == 200 ? serve_json(r) : NULL;
    CHECKF(r->status == 200 && j, "%s: status %ld (curl: %s), body %s", what, r->status,
           curl_easy_strerror(r->cc), body_start(r, b, sizeof b));
    return j;
}

/* ---- tasks and references ----------------------------------------------- */

static vit_model *the_model;

const vit_model *serve_model(void)
{
    if (!the_model) {
        char path[1024];
        vit_error err = {0};
        if (vit_model_load(test_path(path, sizeof path, SERVE_MODEL), &the_model, &err) != VIT_OK)
            fprintf(stderr, "cannot load %s: %s\n", path, err.message);
    }
    return the_model;
}

void serve_model_free(void)
{
    vit_model_free(the_model);
    the_model = NULL;
}

/* splitmix64: a uniform double in [-1, 1) from *s. */
static double rand_sym(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) / (double)(1ull << 52) - 1.0;
}

bool serve_make_task(const vit_model *m, const char *path, int k, const char *prefix,
                     uint64_t seed)
{
    if (!m || k < 1 || k > SERVE_MAX_CLASSES)
        return false;
    char names[SERVE_MAX_CLASSES][64];
    const char *labels[SERVE_MAX_CLASSES];
    for (int i = 0; i < k; i++) {
        snprintf(names[i], sizeof names[i], "%s-%d", prefix, i);
        labels[i] = names[i];
    }
    vit_task *t = NULL;
    vit_error err = {0};
    if (task_create(m, k, labels, &t, &err) != VIT_OK) {
        fprintf(stderr, "task_create: %s\n", err.message);
        return false;
    }
    uint64_t s = seed * 0x100000001B3ull + 12345;
    size_t nb = task_bias_len(m);
    for (size_t i = 0; i < t->trainable_len; i++) {
        if (i < nb)
            t->trainable[i] += (float)(0.1 * rand_sym(&s)); /* bias deltas */
        else
            t->trainable[i] = (float)(0.6 * rand_sym(&s)); /* head */
    }
    static const char *const keys[] = {"purpose", NULL}, *const values[] = {"api-test", NULL};
    task_meta meta = {keys, values};
    bool ok = task_save(m, t, &meta, path, &err) == VIT_OK;
    if (!ok)
        fprintf(stderr, "task_save %s: %s\n", path, err.message);
    task_free(t);
    return ok;
}

/* Fills out from one {"labels": [...], "scores": [...]} object. */
static bool ref_from_json(const json_t *o, serve_ref *out)
{
    json_t *labels = json_object_get(o, "labels"), *scores = json_object_get(o, "scores");
    size_t n = json_array_size(labels);
    if (n < 1 || n > SERVE_MAX_CLASSES || json_array_size(scores) != n)
        return false;
    out->k = (int)n;
    for (size_t i = 0; i < n; i++) {
        const char *l = json_string_value(json_array_get(labels, i));
        json_t *sc = json_array_get(scores, i);
        if (!l || !json_is_number(sc))
            return false;
        snprintf(out->labels[i], sizeof out->labels[i], "%s", l);
        out->scores[i] = json_number_value(sc);
    }
    return true;
}

bool serve_reference(const char *task_file, const char *const *images, int n, serve_ref *out)
{
    char model[1024];
    test_path(model, sizeof model, SERVE_MODEL);
    const char *args[120];
    int a = 0;
    args[a++] = "classify";
    args[a++] = "--model";
    args[a++] = model;
    if (task_file) {
        args[a++] = "--task";
        args[a++] = task_file;
    }
    args[a++] = "--json";
    args[a++] = "--top-k";
    args[a++] = "1000";
    for (int i = 0; i < n && a < 119; i++)
        args[a++] = images[i];
    args[a] = NULL;
    static char outbuf[1 << 20], errbuf[1 << 14];
    int st = serve_run_cli(args, outbuf, sizeof outbuf, errbuf, sizeof errbuf, 300000);
    if (st != 0) {
        fprintf(stderr, "vitfit classify (reference) exit %d: %s\n", st, errbuf);
        return false;
    }
    json_t *j = json_loads(outbuf, 0, NULL);
    bool ok = j != NULL;
    for (int i = 0; ok && i < n; i++) {
        const json_t *o = n == 1 ? j : json_array_get(json_object_get(j, "results"), (size_t)i);
        ok = ref_from_json(o, &out[i]);
    }
    if (!ok)
        fprintf(stderr, "vitfit classify (reference): unexpected output %.300s\n", outbuf);
    json_decref(j);
    return ok;
}

bool serve_result_matches(const json_t *got, const char *task, const serve_ref *want, int top_k,
                          char *why, size_t why_len)
{
    *why = 0;
    if (!json_is_object(got)) {
        snprintf(why, why_len, "not an object");
        return false;
    }
    json_t *jt = json_object_get(got, "task");
    if (task ? !(json_is_string(jt) && strcmp(json_string_value(jt), task) == 0)
             : !json_is_null(jt)) {
        snprintf(why, why_len, "task is %s, want %s",
                 json_is_string(jt) ? json_string_value(jt) : jt ? "non-string" : "absent",
                 task ? task : "null");
        return false;
    }
    json_t *labels = json_object_get(got, "labels"), *scores = json_object_get(got, "scores");
    size_t k = (size_t)(top_k < want->k ? top_k : want->k);
    if (json_array_size(labels) != k || json_array_size(scores) != k) {
        snprintf(why, why_len, "%zu labels and %zu scores, want %zu", json_array_size(labels),
                 json_array_size(scores), k);
        return false;
    }
    for (size_t i = 0; i < k; i++) {
        const char *l = json_string_value(json_array_get(labels, i));
        json_t *s = json_array_get(scores, i);
        if (!l || strcmp(l, want->labels[i]) != 0) {
            snprintf(why, why_len, "labels[%zu] is \"%s\", want \"%s\"", i, l ? l : "?",
                     want->labels[i]);
            return false;
        }
        double v = json_is_number(s) ? json_number_value(s) : NAN;
        if (!(fabs(v - want->scores[i]) <= 1e-6)) {
            snprintf(why, why_len, "scores[%zu] (%s) is %.9g, want %.9g", i, l, v,
                     want->scores[i]);
            return false;
        }
    }
    return true;
}
