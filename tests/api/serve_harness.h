/*
 * serve_harness.h - what the API tests share: the real `vitfit serve` started
 * on a free loopback port, an HTTP client over libcurl, tasks made with the
 * engine, and reference answers from `vitfit classify --json`.
 *
 *     serve_proc p;
 *     const char *extra[] = {"--queue-capacity", "8", NULL};
 *     CHECK(serve_start(&p, data_dir, "key", extra));   // waits for "listening on"
 *     serve_resp r;
 *     serve_request(&p, h, &(serve_req){.path = "/v1/tasks"}, &r);
 *     ...
 *     CHECK(serve_stop(&p, SIGTERM, 30000) == 0);       // exit code; checks the log
 *
 * Everything is bounded: a server that never prints its "listening" line, a
 * request that never completes and a server that never exits each fail after
 * a timeout (a hang check, never a timing assertion) instead of hanging the
 * suite.  The server's stderr (its log) goes to a file; serve_stop fails on
 * a sanitizer report in it and prints its tail whenever the exit was not
 * the expected one.  Only 127.0.0.1 is ever contacted.
 *
 * Thread safety: serve_request may run on many threads at once, each with
 * its own CURL handle; everything else belongs to the main thread.
 */
#ifndef VIT_TESTS_API_SERVE_HARNESS_H
#define VIT_TESTS_API_SERVE_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include <curl/curl.h>
#include <jansson.h>

#include "vit.h"

#define SERVE_MODEL "models/fashion-vit-tiny" /* under the source root */
#define SERVE_MAX_CLASSES 16                  /* classes of any task the tests make */
#define SERVE_MAX_LABEL 128

/* A running `vitfit serve`. */
typedef struct serve_proc {
    pid_t pid;              /* 0 when not running */
    int out_fd;             /* read end of its stdout */
    int port;               /* from its "listening on" line */
    char base[64];          /* "http://127.0.0.1:PORT" */
    char log_path[256];     /* its stderr */
    char api_key[128];      /* sent as "Bearer <key>" by default; "" for none */
} serve_proc;

/* Starts VITFIT_BIN serve --model <root>/SERVE_MODEL --data-dir data_dir
 * --port 0 [--api-key api_key] extra... (extra: NULL-terminated, may be
 * NULL) and waits up to 120 s for its one stdout line "vitfit: listening on
 * http://127.0.0.1:PORT".  True when it is up; false (and the log printed)
 * otherwise, with nothing left running. */
bool serve_start(serve_proc *p, const char *data_dir, const char *api_key,
                 const char *const *extra);

/* Sends sig (0: none, just wait) and waits up to timeout_ms for the exit;
 * SIGKILLs it after that.  Returns the exit code, 128 + signal when a signal
 * ended it, -2 after a timeout.  Fails a CHECK on a sanitizer exit code or
 * report in the log, or on a second line on stdout; prints the log's tail
 * whenever the result is not 0. */
int serve_stop(serve_proc *p, int sig, long timeout_ms);

/* Runs argv[0] (a path) with argv (NULL-terminated) to completion, stdout
 * and stderr into out/err (truncated, NUL-terminated; either may be NULL);
 * returns the exit code (-1 when it did not exit normally, -2 after
 * timeout_ms, when it is killed). */
int serve_run(const char *const *argv, char *out, size_t out_len, char *err, size_t err_len,
              long timeout_ms);

/* serve_run of VITFIT_BIN with args (NULL-terminated). */
int serve_run_cli(const char *const *args, char *out, size_t out_len, char *err, size_t err_len,
                  long timeout_ms);

/* ---- the images the API tests classify ---------------------------------- */

/* Three Fashion-MNIST samples (PNG) and three photos (PNG, JPEG, BMP), read
 * from the source tree: as files, bytes and base64. */
enum { SERVE_NIMG = 6 };
typedef struct serve_images {
    char path[SERVE_NIMG][1024];
    uint8_t *data[SERVE_NIMG];
    size_t len[SERVE_NIMG];
    char *b64[SERVE_NIMG];
} serve_images;

void serve_images_load(serve_images *im);
void serve_images_free(serve_images *im);

/* ---- HTTP --------------------------------------------------------------- */

/* One request to the server. */
typedef struct serve_req {
    const char *method;       /* NULL: GET, or POST when there is a body or a form */
    const char *path;         /* "/v1/classify?task=a" */
    const char *content_type; /* NULL: no Content-Type header */
    const void *body;         /* request body (len bytes), or NULL */
    size_t len;
    curl_mime *mime;          /* a multipart form (made with the same handle), or NULL */
    const char *auth;         /* NULL: "Bearer <api_key>" when the server has one; "": no
                                 Authorization; else the header's whole value */
    const char *request_id;   /* X-Request-Id to send, or NULL */
    const char *const *extra; /* more header lines ("Name: value"), NULL-terminated, or NULL */
    long timeout_ms;          /* whole request; 0: 60 s */
    bool expect_100;          /* send "Expect: 100-continue" and wait up to 10 s for it, so
                                 a server refusing on the headers (413) answers before the
                                 body is sent; default: no Expect */
} serve_req;

/* What came back.  serve_resp_free releases it. */
typedef struct serve_resp {
    long status;      /* HTTP status; 0 when there was no response (cc says why) */
    CURLcode cc;
    char *body;       /* NUL-terminated (body_len bytes before the NUL) */
    size_t body_len;
    char *head;       /* the final response's header lines */
    size_t head_len;
    double seconds;   /* wall time of the whole exchange */
} serve_resp;

/* Sends q to p on handle h (curl_easy_reset first, so connections are
 * reused) and fills r.  True when an HTTP response arrived. */
bool serve_request(const serve_proc *p, CURL *h, const serve_req *q, serve_resp *r);
void serve_resp_free(serve_resp *r);

/* A request sent from a thread of its own (with its own handle), for a
 * test that acts while it is in flight: a drain, /metrics during a held
 * fetch.  q's strings must outlive serve_request_join. */
typedef struct serve_pending {
    const serve_proc *p;
    serve_req q;
    serve_resp r;       /* after serve_request_join (serve_resp_free it) */
    pthread_t thread;
} serve_pending;

void serve_request_start(serve_pending *pe, const serve_proc *p, const serve_req *q);
void serve_request_join(serve_pending *pe);

/* The value of response header name (case-insensitive, trimmed) copied into
 * buf; NULL when absent. */
const char *serve_header(const serve_resp *r, const char *name, char *buf, size_t len);

/* The body parsed as JSON (caller decrefs), NULL when it is not JSON. */
json_t *serve_json(const serve_resp *r);

/* Checks (CHECKF, naming what) that r answered status with the error shape
 * {"error": {"code": snake_case, "message": non-empty}}, a JSON content type
 * and an X-Request-Id; codes: NULL for any code, else the accepted codes
 * separated by '|'.  True when every check passed. */
bool serve_check_error(const char *what, const serve_resp *r, int status, const char *codes);

/* Checks that r is a 200 with a JSON body; returns the parsed body (caller
 * decrefs) or NULL after a failed CHECK naming what. */
json_t *serve_check_ok(const char *what, const serve_resp *r);

/* ---- tasks and references ----------------------------------------------- */

/* The bundled model, loaded once (not thread-safe; free with
 * serve_model_free at the end). */
const vit_model *serve_model(void);
void serve_model_free(void);

/* Writes a task file for m at path: k classes (k <= SERVE_MAX_CLASSES)
 * labelled "<prefix>-0".."<prefix>-(k-1)", a head and bias deltas drawn from
 * seed, so tasks of different seeds answer differently.  True on success. */
bool serve_make_task(const vit_model *m, const char *path, int k, const char *prefix,
                     uint64_t seed);

/* One reference answer: every class, best first. */
typedef struct serve_ref {
    int k;
    char labels[SERVE_MAX_CLASSES][SERVE_MAX_LABEL];
    double scores[SERVE_MAX_CLASSES];
} serve_ref;

/* `vitfit classify --model <root>/SERVE_MODEL [--task task_file] --json
 * --top-k 1000` on n image paths; fills out[0..n).  True on success. */
bool serve_reference(const char *task_file, const char *const *images, int n, serve_ref *out);

/* Compares one reply {"task", "labels", "scores"} with want: "task" equals
 * task (NULL: JSON null), top_k entries (min(top_k, want->k)), labels equal
 * and in order, each score within 1e-6.  True when equal; otherwise why
 * holds the first difference. */
bool serve_result_matches(const json_t *got, const char *task, const serve_ref *want, int top_k,
                          char *why, size_t why_len);

/* The harness's own CHECK tally (check.h's counters are per file): a test's
 * main returns check_result() || serve_harness_failures().  Prints the
 * harness's counts. */
int serve_harness_failures(void);

/* ---- files -------------------------------------------------------------- */

/* The whole file (caller frees; *len its size; NUL appended), NULL on error. */
uint8_t *serve_read_file(const char *path, size_t *len);
/* Writes len bytes to path; true on success. */
bool serve_write_file(const char *path, const void *data, size_t len);
/* Standard base64 with padding (caller frees), NULL when out of memory. */
char *serve_base64(const void *data, size_t len);
/* A new directory /tmp/vitfit-api-<what>-XXXXXX with a tasks/ inside;
 * path into buf (>= 64 bytes).  True on success. */
bool serve_tmpdir(const char *what, char *buf, size_t len);
/* Removes a directory tree made by serve_tmpdir. */
void serve_rmtree(const char *path);
/* Milliseconds of a monotonic clock. */
double serve_now_ms(void);

#endif
