/*
 * test_api_finetune.c - fine-tune jobs over HTTP (issue 9), against the
 * contract in JOBS_API.md, on the real `vitfit serve` on loopback.
 *
 * The data are real: small ImageFolders of Fashion-MNIST PNGs (and JSONL /
 * CSV manifests of the same files) written under each server's data_dir by
 * fmnist_fixture.c; the backbone is models/fashion-vit-tiny, so a job of
 * a few hundred images takes about a second.  Sections (each can be skipped
 * with TEST_API_FINETUNE_SKIP=name,name,... e.g. for a TSan run):
 *
 *  bf16        a --precision bf16 server (one copy of the weights, bf16 only)
 *              trains the happy path's job on an fp32 copy of the backbone:
 *              the same loss and score as the fp32 server, to the last digit;
 *              the task classifies there; after config.json changes on disk
 *              a job fails (its copy would be another model)
 *  tamper      a job directory damaged while the server was stopped (the
 *              attack review's repros): bad event types, a lost final event,
 *              a leftover checkpoint, a cancel asked before the stop, a FIFO
 *              events.jsonl, a symlinked job directory
 *  validation  every documented error of POST /v1/finetune, each with its
 *              status, code and "field"; 404 job_not_found on every job
 *              route; the path escapes ("../x", "fm/../../x", an absolute
 *              path, a symlink in datasets/ to a directory outside data_dir,
 *              a class directory symlinked out, a manifest line "../..")
 *              refused with 422 dataset_outside while inotify watches the
 *              outside trees: any open or read of them there fails the test
 *              (the same watch sees the server open fm/train for a valid
 *              job, so it is known to see the server's reads).
 *  happy       POST with only task + train (+ epochs, batch_size): 201, the
 *              Location header, the queued job object field by field; polled
 *              to succeeded; every field of the final object (hyper-
 *              parameters filled in, times ordered, progress and metrics
 *              consistent, result.file/bytes equal to the file on disk);
 *              job.json and events.jsonl on disk equal to the API's; no
 *              checkpoint left; classify with the new task equals `vitfit
 *              classify --task <that file>`; GET /v1/tasks/<name> (labels,
 *              metadata naming the job); a second job for the name: 409
 *              task_exists.
 *  events      the JSON event list: ids 1..n, created first, succeeded
 *              last, an epoch_end per epoch; ?after= and ?limit= paging
 *              equal to the whole; bad after/limit 422; the SSE stream of a
 *              finished job (framing, ids, data equal to the JSON events,
 *              closed after the final event), from ?after= and from
 *              Last-Event-ID.
 *  live        a job on a CSV manifest with a JSONL eval set, method linear,
 *              followed live over SSE from its creation to succeeded.
 *  failed      a set with an undecodable image: without skip_bad the job
 *              fails (error code and message, a failed event, no task);
 *              with skip_bad it succeeds with a skipped_image event.
 *  cancel      a long job running (max_running_jobs 1): task_in_progress for
 *              its task; a queued job (overwrite of an existing task)
 *              stays queued, a second job for that task 409, a third job
 *              429 queue_full with Retry-After (max_queued_jobs 1); a stream
 *              of classify requests succeeds while the long job trains
 *              (counted, each reply equal to the CLI's); cancel of the
 *              queued job (never started, the old task file unchanged),
 *              of the running one (cancelled, a cancelled event last, no
 *              task file, no checkpoint), of finished jobs 409 job_finished.
 *  list        GET /v1/finetune: every job newest first; ?status= for each
 *              status; ?limit= + ?after= paging equal to the whole, has_more
 *              right on each page; bad status/limit/after 422; /metrics
 *              job gauges equal to the list's counts.
 *  restart     SIGTERM, start again on the same data_dir: every finished
 *              job listed as it was, its events unchanged; the new task
 *              still classifies.  Then SIGTERM with a job running and one
 *              queued: the running one's last event is interrupted, and
 *              after the next start it runs again with one resumed event
 *              while the queued one stays queued.
 *  crash       an uninterrupted job on a fresh data_dir, then the same job
 *              (same seed) with --job-checkpoint-every-steps on another:
 *              killed with SIGKILL right after its first checkpoint event
 *              (and checked to be mid-run on disk), the server started
 *              again: a resumed event, succeeded, and a task file whose
 *              tensors are bit-identical to the uninterrupted run's.
 *
 * Every wait is a poll with a deadline that fails printing the job's last
 * state; nothing asserts on time.
 */
#define _GNU_SOURCE /* inotify, mkfifo */
#include <ctype.h>
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "cpu.h"
#include "gemm.h"
#include "fmnist_fixture.h"
#include "safetensors.h"
#include "serve_harness.h"
#include "test_util.h"

#define WAIT_S 300.0 /* bound on any one wait for a job (ASan runs are slow) */

static fm_source src;
static CURL *h;
static char d1[256];       /* data_dir of the main server */
static char outside[256];  /* a tree outside every data_dir */
static serve_proc S1;

/* The classes every set uses: Fashion-MNIST labels and folder names, in the
 * names' byte order (which is the order the task's labels take). */
static const int fm_classes[3] = {8, 7, 1};
static const char *const fm_names[3] = {"bag", "sneaker", "trouser"};

/* What the main server has seen created, oldest first. */
#define MAX_JOBS 32
static struct {
    char id[64];
    char status[16]; /* the status it must end in */
} jobs[MAX_JOBS];
static int njobs;

static const char *const job_statuses[5] = {"queued", "running", "succeeded", "failed",
                                            "cancelled"};

/* ---- small helpers ------------------------------------------------------- */

static const char *jstr(const json_t *j)
{
    return json_is_string(j) ? json_string_value(j) : "";
}

/* The whole JSON value as compact text for messages (a static buffer, so one
 * per message). */
static const char *jdump(const json_t *j)
{
    static char buf[4][2048];
    static int k;
    char *b = buf[k++ & 3];
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    snprintf(b, sizeof buf[0], "%.2000s", s ? s : "(null)");
    free(s);
    return b;
}

/* Where a and b first differ: a dotted path ("metrics.train_loss",
 * "data[2]") into buf, "" when they are equal.  Returns buf. */
static const char *json_diff_path(const json_t *a, const json_t *b, char *buf, size_t len)
{
    buf[0] = 0;
    if (json_equal(a, b))
        return buf;
    if (json_is_object(a) && json_is_object(b)) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)a, k, v) {
            json_t *w = json_object_get(b, k);
            if (!w || !json_equal(v, w)) {
                char sub[256];
                json_diff_path(v, w, sub, sizeof sub);
                snprintf(buf, len, "%s%s%s", k, *sub && *sub != '[' ? "." : "", sub);
                return buf;
            }
        }
        json_object_foreach((json_t *)b, k, v) {
            if (!json_object_get(a, k)) {
                snprintf(buf, len, "%s (only in the second)", k);
                return buf;
            }
        }
    }
    if (json_is_array(a) && json_is_array(b) && json_array_size(a) == json_array_size(b)) {
        for (size_t i = 0; i < json_array_size(a); i++) {
            if (!json_equal(json_array_get(a, i), json_array_get(b, i))) {
                char sub[256];
                json_diff_path(json_array_get(a, i), json_array_get(b, i), sub, sizeof sub);
                snprintf(buf, len, "[%zu]%s%s", i, *sub && *sub != '[' ? "." : "", sub);
                return buf;
            }
        }
    }
    return buf; /* a and b themselves: "" */
}

/* The value at a json_diff_path path of j (objects and arrays), NULL when
 * absent. */
static json_t *json_at(json_t *j, const char *path)
{
    char key[128];
    while (j && *path) {
        if (*path == '.')
            path++;
        if (*path == '[') {
            char *end;
            long i = strtol(path + 1, &end, 10);
            j = json_array_get(j, (size_t)i);
            path = *end == ']' ? end + 1 : end;
            continue;
        }
        size_t n = strcspn(path, ".[ ");
        snprintf(key, sizeof key, "%.*s", (int)(n < sizeof key ? n : sizeof key - 1), path);
        j = json_object_get(j, key);
        path += n;
        if (*path == ' ')
            break;
    }
    return j;
}

static bool one_of(const char *s, const char *list)
{
    size_t n = strlen(s);
    for (const char *p = list; *p;) {
        const char *bar = strchr(p, '|');
        size_t ln = bar ? (size_t)(bar - p) : strlen(p);
        if (ln == n && strncmp(p, s, n) == 0)
            return true;
        p += ln + (bar ? 1 : 0);
    }
    return false;
}

static bool skipped(const char *section)
{
    const char *env = getenv("TEST_API_FINETUNE_SKIP");
    if (!env)
        return false;
    size_t n = strlen(section);
    for (const char *p = env; *p;) {
        size_t ln = strcspn(p, ",");
        if (ln == n && strncmp(p, section, n) == 0) {
            fprintf(stderr, "== %s: skipped (TEST_API_FINETUNE_SKIP)\n", section);
            return true;
        }
        p += ln + (p[ln] ? 1 : 0);
    }
    return false;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static void remember_job(const char *id, const char *final_status)
{
    VIT_ASSERT(njobs < MAX_JOBS);
    snprintf(jobs[njobs].id, sizeof jobs[njobs].id, "%s", id);
    snprintf(jobs[njobs].status, sizeof jobs[njobs].status, "%s", final_status);
    njobs++;
}

/* ---- requests ------------------------------------------------------------ */

/* POSTs raw bytes to /v1/finetune with content type ct (NULL: none). */
static void ft_post_raw(const serve_proc *p, const char *body, size_t len, const char *ct,
                        serve_resp *r)
{
    serve_request(p, h, &(serve_req){.path = "/v1/finetune", .content_type = ct, .body = body,
                                     .len = len},
                  r);
}

/* POSTs the JSON object j (decref'd here) to /v1/finetune. */
static void ft_post(const serve_proc *p, json_t *j, serve_resp *r)
{
    char *body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    VIT_ASSERT(body);
    ft_post_raw(p, body, strlen(body), "application/json", r);
    free(body);
}

/* GET path; the parsed 200 body (caller decrefs) or NULL after a failed
 * check naming what. */
static json_t *get_ok(const serve_proc *p, const char *what, const char *path)
{
    serve_resp r;
    serve_request(p, h, &(serve_req){.path = path}, &r);
    json_t *j = serve_check_ok(what, &r);
    serve_resp_free(&r);
    return j;
}

static json_t *get_job(const serve_proc *p, const char *id)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/finetune/%s", id);
    return get_ok(p, path, path);
}

static void ft_cancel(const serve_proc *p, const char *id, serve_resp *r);

/* A request that should have been refused made a job (r: its 201): cancel
 * it at once, so one wrong answer does not cascade through the sections
 * after it (a job running where none should, a list one longer). */
static void cancel_stray(const char *what, const serve_resp *r)
{
    json_t *j = serve_json(r);
    const char *id = jstr(json_object_get(j, "id"));
    if (*id && S1.pid) {
        serve_resp c;
        ft_cancel(&S1, id, &c);
        fprintf(stderr, "  %s made job %s: cancelled it (%ld)\n", what, id, c.status);
        if (c.status == 200)
            remember_job(id, "cancelled");
        serve_resp_free(&c);
    }
    json_decref(j);
}

/* Checks r is the error status/code (codes: '|'-separated, NULL: any) whose
 * error.field is one of fields ('|'-separated; NULL: not checked). */
static void check_ft_error(const char *what, const serve_resp *r, int status, const char *codes,
                           const char *fields)
{
    serve_check_error(what, r, status, codes);
    if (r->status == 201)
        cancel_stray(what, r);
    if (!fields)
        return;
    json_t *j = serve_json(r);
    json_t *f = json_object_get(json_object_get(j, "error"), "field");
    CHECKF(json_is_string(f) && one_of(json_string_value(f), fields),
           "%s: error.field is %s, want %s", what, json_is_string(f) ? json_string_value(f) : jdump(f),
           fields);
    json_decref(j);
}

/* POSTs j (decref'd) and checks the error. */
static void ft_expect(const char *what, const serve_proc *p, json_t *j, int status,
                      const char *codes, const char *fields)
{
    serve_resp r;
    VIT_ASSERT(j);
    ft_post(p, j, &r);
    check_ft_error(what, &r, status, codes, fields);
    serve_resp_free(&r);
}

/* GET path and check the error. */
static void get_expect(const char *what, const serve_proc *p, const char *method,
                       const char *path, int status, const char *codes, const char *fields)
{
    serve_resp r;
    serve_request(p, h, &(serve_req){.method = method, .path = path}, &r);
    check_ft_error(what, &r, status, codes, fields);
    serve_resp_free(&r);
}

/* POSTs j (decref'd) expecting 201; returns the job (caller decrefs) and
 * its id in id[64], or NULL after a failed check. */
static json_t *ft_create(const char *what, const serve_proc *p, json_t *j, char id[64])
{
    serve_resp r;
    ft_post(p, j, &r);
    json_t *job = r.status == 201 ? serve_json(&r) : NULL;
    CHECKF(r.status == 201 && json_is_object(job), "%s: status %ld, want 201; body %.600s", what,
           r.status, r.body ? r.body : "");
    id[0] = 0;
    if (job) {
        snprintf(id, 64, "%s", jstr(json_object_get(job, "id")));
        char loc[256], want[128];
        snprintf(want, sizeof want, "/v1/finetune/%s", id);
        CHECKF(serve_header(&r, "Location", loc, sizeof loc) && strcmp(loc, want) == 0,
               "%s: Location header is %s, want %s", what,
               serve_header(&r, "Location", loc, sizeof loc) ? loc : "(absent)", want);
        CHECKF(strcmp(jstr(json_object_get(job, "status")), "queued") == 0,
               "%s: the 201 answer's status is %s, want queued", what,
               jdump(json_object_get(job, "status")));
    }
    serve_resp_free(&r);
    return job;
}

/* POST /v1/finetune/{id}/cancel; the response in *r. */
static void ft_cancel(const serve_proc *p, const char *id, serve_resp *r)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/finetune/%s/cancel", id);
    serve_request(p, h, &(serve_req){.method = "POST", .path = path}, r);
}

static bool is_final(const char *status)
{
    return one_of(status, "succeeded|failed|cancelled");
}

/* Polls job id until its status is `until` ("final": any final one) and,
 * when min_step > 0, progress.step >= min_step.  Returns the last job seen
 * (caller decrefs; NULL when none could be read); a failed check printing
 * that state when the deadline passed first. */
static json_t *ft_wait(const serve_proc *p, const char *id, const char *until, long min_step,
                       double timeout_s)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/finetune/%s", id);
    double deadline = serve_now_ms() + timeout_s * 1e3;
    json_t *last = NULL;
    for (;;) {
        serve_resp r;
        serve_request(p, h, &(serve_req){.path = path}, &r);
        json_t *j = r.status == 200 ? serve_json(&r) : NULL;
        serve_resp_free(&r);
        if (j) {
            json_decref(last);
            last = j;
            const char *st = jstr(json_object_get(j, "status"));
            json_int_t step =
                json_integer_value(json_object_get(json_object_get(j, "progress"), "step"));
            bool status_ok = strcmp(until, "final") == 0 ? is_final(st) : strcmp(st, until) == 0;
            if (status_ok && step >= min_step)
                return last;
            if (strcmp(until, "final") != 0 && is_final(st)) {
                CHECKF(0, "job %s ended (%s) while waiting for %s: %s", id, st, until,
                       jdump(last));
                return last;
            }
        }
        if (serve_now_ms() > deadline) {
            CHECKF(0, "job %s: not %s (step >= %ld) within %.0f s; last state: %s", id, until,
                   min_step, timeout_s, jdump(last));
            return last;
        }
        sleep_ms(30);
    }
}

/* Every event of job id through the JSON route, paged with ?after= (limit
 * per page); NULL after a failed check. */
static json_t *ft_events(const serve_proc *p, const char *id, int limit)
{
    json_t *all = json_array();
    json_int_t after = 0;
    for (int page = 0; page < 10000; page++) {
        char path[192];
        snprintf(path, sizeof path, "/v1/finetune/%s/events?after=%" JSON_INTEGER_FORMAT
                 "&limit=%d", id, after, limit);
        json_t *j = get_ok(p, path, path);
        json_t *data = json_object_get(j, "data");
        json_t *more = json_object_get(j, "has_more");
        bool shape = j && strcmp(jstr(json_object_get(j, "object")), "list") == 0 &&
                     json_is_array(data) && json_is_boolean(more) &&
                     json_array_size(data) <= (size_t)limit;
        CHECKF(shape, "%s: not {\"object\": \"list\", \"data\": [<= %d], \"has_more\"}: %s", path,
               limit, jdump(j));
        if (!shape) {
            json_decref(j);
            json_decref(all);
            return NULL;
        }
        CHECKF(!json_is_true(more) || json_array_size(data) == (size_t)limit,
               "%s: has_more with a short page (%zu of %d)", path, json_array_size(data), limit);
        json_array_extend(all, data);
        bool go_on = json_is_true(more) && json_array_size(data) > 0;
        if (go_on)
            after = json_integer_value(json_object_get(json_array_get(data,
                                                                      json_array_size(data) - 1),
                                                       "id"));
        json_decref(j);
        if (!go_on)
            return all;
    }
    CHECKF(0, "%s: more than 10000 pages of events", id);
    return all;
}

/* Every event of job id, which has reached a final status: the server
 * writes a job's final event (and job.json) before the status changes, so
 * the last event must already be the final one. */
static json_t *ft_final_events(const serve_proc *p, const char *id, int limit)
{
    json_t *ev = ft_events(p, id, limit);
    json_t *last = json_array_get(ev, json_array_size(ev) - 1);
    const char *t = jstr(json_object_get(last, "type"));
    CHECKF(strcmp(t, "succeeded") == 0 || strcmp(t, "failed") == 0 ||
               strcmp(t, "cancelled") == 0,
           "job %s has a final status but its last event is '%s'", id, t);
    return ev;
}

/* The number of events of type t in array ev. */
static int count_type(const json_t *ev, const char *t)
{
    int n = 0;
    size_t i;
    json_t *e;
    json_array_foreach(ev, i, e) n += strcmp(jstr(json_object_get(e, "type")), t) == 0;
    return n;
}

/* The result (or error) a final event carries: data.<key>, or data itself
 * when it has no such key (the contract says "succeeded (result)" without
 * fixing which). */
static json_t *event_part(const json_t *e, const char *key)
{
    json_t *d = json_object_get(e, "data");
    json_t *v = json_object_get(d, key);
    return v ? v : d;
}

/* Checks the event list of a job: ids 1..n in order, each event's shape,
 * `created` first, and, when final is not NULL, exactly one final event,
 * of type final, last. */
static void check_events(const char *what, const json_t *ev, const char *final)
{
    static const char *types = "created|started|resumed|progress|epoch_end|checkpoint|"
                               "skipped_image|interrupted|succeeded|failed|cancelled";
    size_t n = json_array_size(ev), i;
    json_t *e;
    CHECKF(n >= 2, "%s: %zu events", what, n);
    double prev_t = 0;
    json_array_foreach(ev, i, e) {
        json_t *id = json_object_get(e, "id"), *t = json_object_get(e, "type"),
               *at = json_object_get(e, "created_at"), *msg = json_object_get(e, "message"),
               *data = json_object_get(e, "data");
        bool ok = json_is_integer(id) && json_integer_value(id) == (json_int_t)(i + 1) &&
                  json_is_string(t) && one_of(json_string_value(t), types) &&
                  json_is_number(at) && json_number_value(at) > 1e9 &&
                  json_number_value(at) >= prev_t && json_is_string(msg) &&
                  (json_is_object(data) || json_is_null(data));
        CHECKF(ok, "%s: event %zu (want id %zu, a known type, created_at not decreasing, a "
                   "message, data an object): %s", what, i, i + 1, jdump(e));
        prev_t = json_number_value(at);
        bool last = i + 1 == n;
        const char *type = jstr(t);
        if (i == 0)
            CHECKF(strcmp(type, "created") == 0, "%s: the first event is %s", what, type);
        if (final && is_final(type))
            CHECKF(last && strcmp(type, final) == 0, "%s: event %zu is %s (want one %s, last)",
                   what, i, type, final);
        if (final && last)
            CHECKF(strcmp(type, final) == 0, "%s: the last event is %s, want %s", what, type,
                   final);
    }
}

/* Checks the shape of a job object and what its status implies. */
static void check_job_shape(const char *what, const json_t *j)
{
    int before = check_failures;
    const char *st = jstr(json_object_get(j, "status"));
    CHECKF(strncmp(jstr(json_object_get(j, "id")), "ftjob-", 6) == 0, "%s: id", what);
    CHECKF(strcmp(jstr(json_object_get(j, "object")), "finetune.job") == 0, "%s: object", what);
    CHECKF(one_of(st, "queued|running|succeeded|failed|cancelled"), "%s: status %s", what, st);
    CHECKF(json_is_string(json_object_get(j, "task")), "%s: task", what);
    CHECKF(one_of(jstr(json_object_get(j, "method")), "bitfit|linear|full"), "%s: method", what);
    CHECKF(json_is_string(json_object_get(j, "train")), "%s: train", what);
    json_t *ev = json_object_get(j, "eval");
    CHECKF(json_is_string(ev) || json_is_null(ev), "%s: eval", what);

    json_t *hp = json_object_get(j, "hyperparameters");
    CHECKF(json_is_object(hp), "%s: hyperparameters", what);
    static const struct {
        const char *key;
        char kind; /* i: integer >= lo, n: number >= lo (< hi when hi > 0), b: bool, s: string */
        double lo, hi;
    } keys[] = {
        {"epochs", 'i', 1, 0},         {"batch_size", 'i', 1, 0},
        {"lr", 'n', 1e-12, 0},         {"min_lr", 'n', 0, 0},
        {"weight_decay", 'n', 0, 0},   {"warmup_epochs", 'n', 0, 0},
        {"seed", 'i', 0, 0},           {"augment", 's', 0, 0},
        {"label_smoothing", 'n', 0, 1}, {"validation_split", 'n', 0, 1},
        {"early_stopping_patience", 'i', 0, 0}, {"max_steps", 'i', 0, 0},
        {"skip_bad", 'b', 0, 0},       {"overwrite", 'b', 0, 0},
    };
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
        json_t *v = json_object_get(hp, keys[k].key);
        bool ok;
        switch (keys[k].kind) {
        case 'i':
            ok = json_is_integer(v) && (double)json_integer_value(v) >= keys[k].lo;
            break;
        case 'n':
            ok = json_is_number(v) && json_number_value(v) >= keys[k].lo &&
                 (keys[k].hi == 0 || json_number_value(v) < keys[k].hi);
            break;
        case 'b':
            ok = json_is_boolean(v);
            break;
        default:
            ok = json_is_string(v) && one_of(json_string_value(v), "none|light|strong|auto");
        }
        CHECKF(ok, "%s: hyperparameters.%s is %s", what, keys[k].key, jdump(v));
    }

    json_t *c = json_object_get(j, "created_at"), *s = json_object_get(j, "started_at"),
           *f = json_object_get(j, "finished_at");
    CHECKF(json_is_integer(c) && json_integer_value(c) > 1000000000, "%s: created_at %s", what,
           jdump(c));
    CHECKF(json_is_integer(s) || json_is_null(s), "%s: started_at %s", what, jdump(s));
    CHECKF(json_is_integer(f) || json_is_null(f), "%s: finished_at %s", what, jdump(f));
    if (json_is_integer(s))
        CHECKF(json_integer_value(s) >= json_integer_value(c), "%s: started before created",
               what);
    if (json_is_integer(f))
        CHECKF(json_integer_value(f) >= json_integer_value(json_is_integer(s) ? s : c),
               "%s: finished before started/created", what);

    json_t *pr = json_object_get(j, "progress");
    json_t *pe = json_object_get(pr, "epoch"), *pes = json_object_get(pr, "epochs"),
           *ps = json_object_get(pr, "step"), *pt = json_object_get(pr, "total_steps"),
           *pi = json_object_get(pr, "images_per_second"), *pa = json_object_get(pr, "eta_seconds");
    CHECKF(json_is_object(pr) && json_is_integer(pe) && json_integer_value(pe) >= 0 &&
               json_is_integer(pes) &&
               json_integer_value(pes) == json_integer_value(json_object_get(hp, "epochs")) &&
               json_integer_value(pe) <= json_integer_value(pes) && json_is_integer(ps) &&
               json_integer_value(ps) >= 0 && (json_is_integer(pt) || json_is_null(pt)) &&
               (json_is_null(pt) || json_integer_value(ps) <= json_integer_value(pt)) &&
               (json_is_number(pi) || json_is_null(pi)) &&
               (json_is_number(pa) || json_is_null(pa)),
           "%s: progress %s", what, jdump(pr));

    json_t *m = json_object_get(j, "metrics");
    CHECKF(json_is_object(m), "%s: metrics", what);
    static const char *const mk[] = {"train_loss", "eval_top1", "eval_top5"};
    for (int k = 0; k < 3; k++) {
        json_t *v = json_object_get(m, mk[k]);
        CHECKF(v && (json_is_number(v) || json_is_null(v)), "%s: metrics.%s is %s", what, mk[k],
               jdump(v));
    }
    json_t *be = json_object_get(m, "best_epoch");
    CHECKF(be && (json_is_integer(be) || json_is_null(be)), "%s: metrics.best_epoch %s", what,
           jdump(be));

    json_t *err = json_object_get(j, "error"), *res = json_object_get(j, "result");
    CHECKF(err && (json_is_null(err) ||
                   (json_is_object(err) && *jstr(json_object_get(err, "code")) &&
                    *jstr(json_object_get(err, "message")))),
           "%s: error %s", what, jdump(err));
    CHECKF(res && (json_is_null(res) ||
                   (json_is_object(res) && *jstr(json_object_get(res, "task")) &&
                    *jstr(json_object_get(res, "file")) &&
                    json_is_integer(json_object_get(res, "bytes")))),
           "%s: result %s", what, jdump(res));

    /* what the status implies */
    if (strcmp(st, "queued") == 0)
        CHECKF(json_is_null(s) && json_is_null(f), "%s: queued with times set", what);
    if (strcmp(st, "running") == 0)
        CHECKF(json_is_integer(s) && json_is_null(f), "%s: running: started_at %s, finished_at "
               "%s", what, jdump(s), jdump(f));
    if (is_final(st))
        CHECKF(json_is_integer(f), "%s: %s without finished_at", what, st);
    if (strcmp(st, "succeeded") == 0)
        CHECKF(json_is_integer(s) && json_is_object(res) && json_is_null(err),
               "%s: succeeded: started_at %s, result %s, error %s", what, jdump(s), jdump(res),
               jdump(err));
    else
        CHECKF(json_is_null(res), "%s: %s with a result", what, st);
    if (strcmp(st, "failed") == 0)
        CHECKF(json_is_object(err), "%s: failed without an error", what);
    else
        CHECKF(json_is_null(err), "%s: %s with an error", what, st);
    if (check_failures != before)
        fprintf(stderr, "  the job: %s\n", jdump(j));
}

/* ---- inotify: proof that nothing outside is read ------------------------- */

static int watch_fd = -1;

static int watch_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_D && inotify_add_watch(watch_fd, path, IN_OPEN | IN_ACCESS) < 0)
        fprintf(stderr, "inotify_add_watch %s: %s\n", path, strerror(errno));
    return 0;
}

/* Watches every directory of the tree at dir (not following symlinks) for
 * opens and reads of it and of the files in it. */
static void watch_tree(const char *dir)
{
    if (watch_fd < 0)
        watch_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    VIT_ASSERT(watch_fd >= 0);
    nftw(dir, watch_one, 16, FTW_PHYS);
}

/* Reads every pending event; returns how many there were, printing them
 * under `what` when print is set. */
static int watch_drain(const char *what, bool print)
{
    int n = 0;
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t got = read(watch_fd, buf, sizeof buf);
        if (got <= 0)
            return n;
        for (char *q = buf; q < buf + got;) {
            struct inotify_event *e = (struct inotify_event *)q;
            if (print)
                fprintf(stderr, "  %s: inotify: %s%s of %s\n", what,
                        e->mask & IN_OPEN ? "open" : "read", e->mask & IN_ISDIR ? " (dir)" : "",
                        e->len ? e->name : "(the watched directory)");
            n++;
            q += sizeof *e + e->len;
        }
    }
}

/* ---- SSE ----------------------------------------------------------------- */

/* One event-stream read. */
typedef struct sse_read {
    const char *stop_type; /* stop reading after an event of this type (NULL: read to the end) */
    char *buf;             /* bytes not parsed yet ('\r' dropped) */
    size_t n, cap;
    json_t *events;        /* [{"id": N, "event": T, "data": {...}}, ...] */
    int bad;               /* framing errors (printed) */
    int comments;
    bool stopped;          /* stop_type seen */
} sse_read;

/* Parses one block (the lines of one event, without the blank line). */
static void sse_block(sse_read *s, char *block)
{
    char *id = NULL, *ev = NULL, data[65536];
    size_t dn = 0;
    bool has_data = false, only_comments = true;
    for (char *line = strtok(block, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == ':') {
            s->comments++;
            continue;
        }
        only_comments = false;
        char *colon = strchr(line, ':');
        char *val = colon ? colon + 1 : line + strlen(line);
        if (colon)
            *colon = 0;
        if (*val == ' ')
            val++;
        if (strcmp(line, "id") == 0) {
            id = val;
        } else if (strcmp(line, "event") == 0) {
            ev = val;
        } else if (strcmp(line, "data") == 0) {
            size_t vl = strlen(val);
            if (dn + vl + 2 < sizeof data) {
                if (has_data)
                    data[dn++] = '\n';
                memcpy(data + dn, val, vl);
                dn += vl;
            }
            has_data = true;
        } else if (strcmp(line, "retry") != 0) {
            fprintf(stderr, "  SSE: unexpected field \"%s\"\n", line);
            s->bad++;
        }
    }
    if (only_comments)
        return;
    data[dn] = 0;
    json_t *d = has_data ? json_loads(data, 0, NULL) : NULL;
    char *end = NULL;
    long idv = id ? strtol(id, &end, 10) : -1;
    bool ok = id && end && *end == 0 && idv > 0 && ev && *ev && json_is_object(d) &&
              json_integer_value(json_object_get(d, "id")) == idv &&
              strcmp(jstr(json_object_get(d, "type")), ev) == 0;
    if (!ok) {
        fprintf(stderr, "  SSE: a bad event: id \"%s\", event \"%s\", data %s\n", id ? id : "-",
                ev ? ev : "-", has_data ? data : "(none)");
        s->bad++;
    }
    json_array_append_new(s->events, json_pack("{sIssso}", "id", (json_int_t)idv, "event",
                                               ev ? ev : "", "data", d ? d : json_null()));
    if (s->stop_type && ev && strcmp(ev, s->stop_type) == 0)
        s->stopped = true;
}

static size_t sse_write(char *data, size_t size, size_t nmemb, void *ud)
{
    sse_read *s = ud;
    size_t n = size * nmemb;
    if (s->n + n + 1 > s->cap) {
        size_t cap = (s->n + n + 1) * 2;
        char *q = cap < ((size_t)64 << 20) ? realloc(s->buf, cap) : NULL;
        if (!q)
            return 0;
        s->buf = q;
        s->cap = cap;
    }
    for (size_t i = 0; i < n; i++)
        if (data[i] != '\r')
            s->buf[s->n++] = data[i];
    s->buf[s->n] = 0;
    char *sep;
    while (!s->stopped && (sep = strstr(s->buf, "\n\n")) != NULL) {
        *sep = 0;
        size_t used = (size_t)(sep + 2 - s->buf);
        char *block = strdup(s->buf);
        VIT_ASSERT(block);
        sse_block(s, block);
        free(block);
        memmove(s->buf, s->buf + used, s->n - used + 1);
        s->n -= used;
    }
    return s->stopped ? 0 : n; /* 0: curl stops with CURLE_WRITE_ERROR */
}

/* Reads the event stream of GET path (Accept: text/event-stream, plus
 * last_event_id when not NULL) until the server closes it or, with
 * stop_type, until such an event arrives; bounded by timeout_s.  Fills s
 * (caller: json_decref(s->events), free(s->buf)).  Returns the HTTP status
 * and the Content-Type in ct; *cc what curl ended with. */
static long sse_get(const serve_proc *p, const char *path, const char *last_event_id,
                    double timeout_s, sse_read *s, char *ct, size_t ct_len, CURLcode *cc)
{
    s->events = json_array();
    CURL *c = curl_easy_init();
    VIT_ASSERT(c);
    char url[512], lei[128];
    snprintf(url, sizeof url, "%s%s", p->base, path);
    struct curl_slist *hd = curl_slist_append(NULL, "Accept: text/event-stream");
    if (last_event_id) {
        snprintf(lei, sizeof lei, "Last-Event-ID: %s", last_event_id);
        hd = curl_slist_append(hd, lei);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(timeout_s * 1e3));
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sse_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    *cc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    char *type = NULL;
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &type);
    snprintf(ct, ct_len, "%s", type ? type : "");
    curl_easy_cleanup(c);
    curl_slist_free_all(hd);
    if (!s->stopped && s->n > 0 && strspn(s->buf, "\n") != s->n) {
        fprintf(stderr, "  SSE %s: %zu bytes after the last complete event: %.200s\n", path,
                s->n, s->buf);
        s->bad++;
    }
    return status;
}

/* Checks a stream read to its end: 200, text/event-stream, curl ended
 * cleanly (the server closed it), no framing error, and its events equal
 * want (the JSON route's events, by id, type and the whole object). */
static void check_sse_equals(const char *what, long status, const char *ct, CURLcode cc,
                             const sse_read *s, const json_t *want)
{
    CHECKF(status == 200, "%s: status %ld", what, status);
    CHECKF(strncmp(ct, "text/event-stream", 17) == 0, "%s: Content-Type \"%s\"", what, ct);
    CHECKF(cc == CURLE_OK, "%s: the stream did not end cleanly: %s", what,
           curl_easy_strerror(cc));
    CHECKF(s->bad == 0, "%s: %d framing errors", what, s->bad);
    size_t n = json_array_size(s->events);
    CHECKF(n == json_array_size(want), "%s: %zu events, want %zu", what, n,
           json_array_size(want));
    /* every frame: its id and event line those of the JSON route's event
     * at that place (so ids increase one by one, and the last is final);
     * the whole data object equal, up to the first difference */
    bool same_so_far = true;
    for (size_t i = 0; i < n && i < json_array_size(want); i++) {
        json_t *frame = json_array_get(s->events, i);
        json_t *got = json_object_get(frame, "data");
        json_t *w = json_array_get(want, i);
        CHECKF(json_integer_value(json_object_get(frame, "id")) ==
                       json_integer_value(json_object_get(w, "id")) &&
                   strcmp(jstr(json_object_get(frame, "event")),
                          jstr(json_object_get(w, "type"))) == 0,
               "%s: frame %zu is id %s, event %s; the JSON route's event there is id %s, %s",
               what, i, jdump(json_object_get(frame, "id")),
               jdump(json_object_get(frame, "event")), jdump(json_object_get(w, "id")),
               jdump(json_object_get(w, "type")));
        if (!same_so_far)
            continue;
        same_so_far = json_equal(got, w);
        char at[256];
        json_diff_path(got, w, at, sizeof at);
        CHECKF(same_so_far, "%s: event %zu (id %s) differs from the JSON route's at %s: %s in "
               "the stream, %s from the JSON route (later events: ids and types only)", what, i,
               jdump(json_object_get(got, "id")), at, jdump(json_at(got, at)),
               jdump(json_at(w, at)));
    }
}

/* ---- data sets ----------------------------------------------------------- */

/* Writes the data sets of the main server under dir/datasets (and a valid
 * ImageFolder at dir/x, outside datasets/ but inside data_dir). */
static void write_main_sets(const char *dir)
{
    char p[512], q[512];
    snprintf(p, sizeof p, "%s/datasets/fm", dir);
    VIT_ASSERT(fm_mkdirs(p));
    /* fm/train (40 per class) and fm/test (20 per class), with manifests */
    const char *parts[2] = {"train", "test"};
    for (int k = 0; k < 2; k++) {
        char jl[512], cs[512], folder[512];
        snprintf(jl, sizeof jl, "%s/datasets/fm/%s.jsonl", dir, parts[k]);
        snprintf(cs, sizeof cs, "%s/datasets/fm/%s.csv", dir, parts[k]);
        snprintf(folder, sizeof folder, "%s/datasets/fm/%s", dir, parts[k]);
        FILE *fj = fopen(jl, "w"), *fc = fopen(cs, "w");
        VIT_ASSERT(fj && fc);
        fprintf(fc, "image,label\n");
        fm_folder_spec spec = {.dir = folder, .classes = fm_classes, .names = fm_names,
                               .nclasses = 3, .per_class = k == 0 ? 40 : 20,
                               .skip = k == 0 ? 0 : 40, .jsonl = fj, .csv = fc,
                               .manifest_prefix = parts[k]};
        VIT_ASSERT(fm_write_folder(&src, &spec));
        VIT_ASSERT(fclose(fj) == 0 && fclose(fc) == 0);
    }
    /* one class only */
    snprintf(p, sizeof p, "%s/datasets/one", dir);
    VIT_ASSERT(fm_write_folder(&src, &(fm_folder_spec){.dir = p, .classes = fm_classes,
                                                      .names = fm_names, .nclasses = 1,
                                                      .per_class = 10}));
    /* empty: no class at all; emptyclass: two class directories without images */
    snprintf(p, sizeof p, "%s/datasets/empty", dir);
    VIT_ASSERT(fm_mkdirs(p));
    snprintf(p, sizeof p, "%s/datasets/emptyclass/bag", dir);
    VIT_ASSERT(fm_mkdirs(p));
    snprintf(p, sizeof p, "%s/datasets/emptyclass/sneaker", dir);
    VIT_ASSERT(fm_mkdirs(p));
    /* a manifest that is not one, and one naming a missing file */
    snprintf(p, sizeof p, "%s/datasets/bad.jsonl", dir);
    VIT_ASSERT(serve_write_file(p, "this is not json\n{\"image\": 3}\n", 30));
    snprintf(p, sizeof p, "%s/datasets/missing.jsonl", dir);
    const char *miss = "{\"image\": \"fm/train/bag/8.png\", \"label\": \"bag\"}\n"
                       "{\"image\": \"fm/train/bag/nope.png\", \"label\": \"bag\"}\n"
                       "{\"image\": \"fm/train/trouser/8.png\", \"label\": \"trouser\"}\n";
    VIT_ASSERT(serve_write_file(p, miss, strlen(miss)));
    /* extra: a test set with a class ("coat") that fm/train lacks */
    static const int extra_cls[4] = {8, 4, 7, 1};
    static const char *const extra_names[4] = {"bag", "coat", "sneaker", "trouser"};
    snprintf(p, sizeof p, "%s/datasets/extra/test", dir);
    VIT_ASSERT(fm_write_folder(&src, &(fm_folder_spec){.dir = p, .classes = extra_cls,
                                                      .names = extra_names, .nclasses = 4,
                                                      .per_class = 5, .skip = 40}));
    /* mixed: 3 x 12 images and one that does not decode */
    snprintf(p, sizeof p, "%s/datasets/mixed", dir);
    VIT_ASSERT(fm_write_folder(&src, &(fm_folder_spec){.dir = p, .classes = fm_classes,
                                                      .names = fm_names, .nclasses = 3,
                                                      .per_class = 12}));
    snprintf(p, sizeof p, "%s/datasets/mixed/bag/broken.png", dir);
    size_t len;
    uint8_t *png = fm_png(&src, fm_nth_of_class(&src, 8, 0), &len);
    VIT_ASSERT(png && len > 60);
    VIT_ASSERT(serve_write_file(p, png, 60)); /* the signature, IHDR and a cut IDAT */
    free(png);
    /* leaky: an ImageFolder whose "bag" class directory is a symlink out of
     * data_dir; leak.jsonl: a manifest with a line climbing out */
    snprintf(p, sizeof p, "%s/datasets/leaky", dir);
    VIT_ASSERT(fm_write_folder(&src, &(fm_folder_spec){.dir = p, .classes = fm_classes + 1,
                                                      .names = fm_names + 1, .nclasses = 2,
                                                      .per_class = 5}));
    snprintf(p, sizeof p, "%s/datasets/leaky/bag", dir);
    snprintf(q, sizeof q, "%s/set/bag", outside);
    VIT_ASSERT(symlink(q, p) == 0);
    snprintf(p, sizeof p, "%s/datasets/leak.jsonl", dir);
    const char *leak = "{\"image\": \"fm/train/bag/0.png\", \"label\": \"bag\"}\n"
                       "{\"image\": \"../x/sneaker/0.png\", \"label\": \"sneaker\"}\n"
                       "{\"image\": \"fm/train/trouser/0.png\", \"label\": \"trouser\"}\n";
    VIT_ASSERT(serve_write_file(p, leak, strlen(leak)));
    /* evil: a symlink in datasets/ to a valid ImageFolder outside data_dir */
    snprintf(p, sizeof p, "%s/datasets/evil", dir);
    snprintf(q, sizeof q, "%s/set", outside);
    VIT_ASSERT(symlink(q, p) == 0);
    /* x: a valid ImageFolder inside data_dir, outside datasets/ */
    snprintf(p, sizeof p, "%s/x", dir);
    VIT_ASSERT(fm_write_folder(&src, &(fm_folder_spec){.dir = p, .classes = fm_classes,
                                                      .names = fm_names, .nclasses = 3,
                                                      .per_class = 10}));
}

/* ---- validation ---------------------------------------------------------- */

/* {"task": task, "train": train} plus one more key (NULL: none) set to v
 * (taken). */
static json_t *body2(const char *task, const char *train, const char *key, json_t *v)
{
    json_t *j = json_object();
    if (task)
        json_object_set_new(j, "task", json_string(task));
    if (train)
        json_object_set_new(j, "train", json_string(train));
    if (key)
        json_object_set_new(j, key, v);
    return j;
}

static void test_validation(void)
{
    fprintf(stderr, "== validation\n");
    serve_resp r;
    const serve_proc *p = &S1;

    /* nothing listed yet */
    json_t *l = get_ok(p, "GET /v1/finetune (empty)", "/v1/finetune");
    CHECKF(l && json_array_size(json_object_get(l, "data")) == 0 &&
               json_is_false(json_object_get(l, "has_more")) &&
               strcmp(jstr(json_object_get(l, "object")), "list") == 0,
           "GET /v1/finetune with no job: %s", jdump(l));
    json_decref(l);

    /* the body */
    const char *bad_bodies[] = {"not json", "[1, 2]", "\"shoes\"", "{\"task\": ", "", "null"};
    for (size_t i = 0; i < sizeof bad_bodies / sizeof *bad_bodies; i++) {
        char what[64];
        snprintf(what, sizeof what, "body '%s'", bad_bodies[i]);
        ft_post_raw(p, bad_bodies[i], strlen(bad_bodies[i]), "application/json", &r);
        check_ft_error(what, &r, 400, "bad_json", NULL);
        serve_resp_free(&r);
    }
    const char *ok_body = "{\"task\": \"t1\", \"train\": \"fm/train\"}";
    ft_post_raw(p, ok_body, strlen(ok_body), "text/plain", &r);
    check_ft_error("Content-Type text/plain", &r, 415, "unsupported_media_type", NULL);
    serve_resp_free(&r);
    ft_post_raw(p, ok_body, strlen(ok_body), NULL, &r);
    check_ft_error("no Content-Type", &r, 415, "unsupported_media_type", NULL);
    serve_resp_free(&r);
    {
        size_t n = (size_t)3 << 20; /* over the server's --max-body-bytes 1 MiB */
        char *big = malloc(n);
        VIT_ASSERT(big);
        int k = snprintf(big, n, "{\"task\": \"t1\", \"train\": \"fm/train\", \"x\": \"");
        memset(big + k, 'a', n - (size_t)k - 2);
        memcpy(big + n - 2, "\"}", 2);
        /* with Expect: 100-continue, so the 413 comes before the body is
         * sent (without it a fast refusal can close the connection while
         * curl still sends, and curl reports a send error instead) */
        serve_request(p, h, &(serve_req){.path = "/v1/finetune",
                                         .content_type = "application/json", .body = big,
                                         .len = n, .expect_100 = true},
                      &r);
        check_ft_error("a 3 MiB body", &r, 413, NULL, NULL);
        serve_resp_free(&r);
        free(big);
    }

    /* required keys, unknown keys */
    ft_expect("no task", p, body2(NULL, "fm/train", NULL, NULL), 422, "missing_field", "task");
    ft_expect("no train", p, body2("t1", NULL, NULL, NULL), 422, "missing_field", "train");
    ft_expect("{}", p, json_object(), 422, "missing_field", "task|train");
    ft_expect("unknown key", p, body2("t1", "fm/train", "bogus", json_integer(1)), 422,
              "unknown_field", "bogus");
    ft_expect("unknown key in hyperparameters", p,
              body2("t1", "fm/train", "hyperparameters", json_pack("{si}", "bogus", 1)), 422,
              "unknown_field", "bogus|hyperparameters.bogus");
    ft_expect("a key at the top and in hyperparameters", p,
              json_pack("{sssssis{si}}", "task", "t1", "train", "fm/train", "epochs", 2,
                        "hyperparameters", "epochs", 2),
              422, NULL, "epochs|hyperparameters.epochs");
    ft_expect("hyperparameters not an object", p,
              body2("t1", "fm/train", "hyperparameters", json_string("x")), 422,
              "invalid_field", "hyperparameters");

    /* wrong types and values out of range, each naming its key */
    static const struct {
        const char *key, *json;
    } bad_values[] = {
        {"epochs", "0"},        {"epochs", "-1"},        {"epochs", "2.5"},
        {"epochs", "\"3\""},    {"batch_size", "0"},     {"batch_size", "true"},
        {"lr", "-0.1"},         {"lr", "\"fast\""},      {"lr", "0"},
        {"min_lr", "-1"},       {"weight_decay", "-1"},  {"warmup_epochs", "-1"},
        {"seed", "\"x\""},      {"seed", "1.5"},         {"augment", "\"sideways\""},
        {"augment", "1"},       {"label_smoothing", "1.5"}, {"label_smoothing", "-0.1"},
        {"validation_split", "1.5"}, {"validation_split", "-0.1"},
        {"early_stopping_patience", "-1"}, {"max_steps", "-1"},
        {"skip_bad", "\"yes\""}, {"skip_bad", "1"},      {"overwrite", "1"},
        {"eval", "5"},          {"train", "5"},          {"train", "[\"fm/train\"]"},
    };
    for (size_t i = 0; i < sizeof bad_values / sizeof *bad_values; i++) {
        char what[96], body[256];
        const char *k = bad_values[i].key;
        bool is_train = strcmp(k, "train") == 0;
        snprintf(body, sizeof body, "{\"task\": \"t1\"%s, \"%s\": %s}",
                 is_train ? "" : ", \"train\": \"fm/train\"", k, bad_values[i].json);
        snprintf(what, sizeof what, "%s: %s", k, bad_values[i].json);
        ft_post_raw(p, body, strlen(body), "application/json", &r);
        check_ft_error(what, &r, 422, "invalid_field", k);
        serve_resp_free(&r);
        /* the same inside "hyperparameters" (not the data set keys) */
        if (is_train || strcmp(k, "eval") == 0)
            continue;
        snprintf(body, sizeof body,
                 "{\"task\": \"t1\", \"train\": \"fm/train\", \"hyperparameters\": {\"%s\": %s}}",
                 k, bad_values[i].json);
        snprintf(what, sizeof what, "hyperparameters.%s: %s", k, bad_values[i].json);
        char fields[96];
        snprintf(fields, sizeof fields, "%s|hyperparameters.%s", k, k);
        ft_post_raw(p, body, strlen(body), "application/json", &r);
        check_ft_error(what, &r, 422, "invalid_field", fields);
        serve_resp_free(&r);
    }

    /* task names */
    const char *bad_names[] = {"", "Shoes", "-x", ".x", "a/b", "../x", "a b", "shoes\n",
                               "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
    for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++) {
        char what[128];
        snprintf(what, sizeof what, "task name \"%.20s\"", bad_names[i]);
        ft_expect(what, p, body2(bad_names[i], "fm/train", NULL, NULL), 422, "invalid_task_name",
                  "task");
    }
    ft_expect("task: 5", p, json_pack("{siss}", "task", 5, "train", "fm/train"), 422,
              "invalid_field|invalid_task_name", "task");
    ft_expect("task exists", p, body2("existing", "fm/train", NULL, NULL), 409, "task_exists",
              "task");
    ft_expect("task exists, overwrite false", p,
              body2("existing", "fm/train", "overwrite", json_false()), 409, "task_exists",
              "task");

    /* methods */
    ft_expect("method bogus", p, body2("t1", "fm/train", "method", json_string("bogus")), 422,
              "invalid_method", "method");
    ft_expect("method BitFit", p, body2("t1", "fm/train", "method", json_string("BitFit")), 422,
              "invalid_method", "method");
    ft_expect("method 3", p, body2("t1", "fm/train", "method", json_integer(3)), 422,
              "invalid_field|invalid_method", "method");
    ft_expect("method full (not enabled)", p,
              body2("t1", "fm/train", "method", json_string("full")), 422, "method_disabled",
              "method");

    /* data sets that are not there or not usable */
    ft_expect("train not found", p, body2("t1", "nope/train", NULL, NULL), 422,
              "dataset_not_found", "train");
    ft_expect("eval not found", p, body2("t1", "fm/train", "eval", json_string("nope")), 422,
              "dataset_not_found", "eval");
    ft_expect("train a manifest not found", p, body2("t1", "fm/nope.jsonl", NULL, NULL), 422,
              "dataset_not_found", "train");
    ft_expect("train empty", p, body2("t1", "empty", NULL, NULL), 422, "invalid_dataset",
              "train");
    ft_expect("train with empty classes", p, body2("t1", "emptyclass", NULL, NULL), 422,
              "invalid_dataset", "train");
    ft_expect("train one class", p, body2("t1", "one", NULL, NULL), 422, "invalid_dataset",
              "train");
    ft_expect("train a bad manifest", p, body2("t1", "bad.jsonl", NULL, NULL), 422,
              "invalid_dataset", "train");
    ft_expect("train a manifest naming a missing file", p,
              body2("t1", "missing.jsonl", NULL, NULL), 422, "invalid_dataset", "train");
    ft_expect("eval with a class train lacks", p,
              body2("t1", "fm/train", "eval", json_string("extra/test")), 422, "invalid_dataset",
              "eval");
    ft_expect("eval empty", p, body2("t1", "fm/train", "eval", json_string("empty")), 422,
              "invalid_dataset", "eval");

    /* path escapes: nothing outside datasets/ may be opened or read */
    char abs_set[512], abs_x[512], abs_in[512], watched[512];
    snprintf(abs_set, sizeof abs_set, "%s/set", outside);
    snprintf(abs_in, sizeof abs_in, "%s/datasets/fm/train", d1);
    snprintf(abs_x, sizeof abs_x, "%s/x", d1);
    watch_tree(outside);
    watch_tree(abs_x);
    watch_drain("setup", false);
    struct {
        const char *what;
        json_t *body;
        const char *codes, *field;
    } esc[] = {
        {"train ../x", body2("t1", "../x", NULL, NULL), "dataset_outside", "train"},
        {"train fm/../../x", body2("t1", "fm/../../x", NULL, NULL), "dataset_outside", "train"},
        {"train ./../x", body2("t1", "./../x", NULL, NULL), "dataset_outside", "train"},
        {"train absolute (outside)", body2("t1", abs_set, NULL, NULL), "dataset_outside",
         "train"},
        {"train absolute (data_dir/x)", body2("t1", abs_x, NULL, NULL), "dataset_outside",
         "train"},
        {"train absolute (inside datasets/)", body2("t1", abs_in, NULL, NULL),
         "dataset_outside", "train"},
        {"train a symlink out", body2("t1", "evil", NULL, NULL), "dataset_outside", "train"},
        {"train through a symlink out", body2("t1", "evil/bag", NULL, NULL),
         "dataset_outside|dataset_not_found", "train"},
        {"eval ../x", body2("t1", "fm/train", "eval", json_string("../x")), "dataset_outside",
         "eval"},
        {"eval a symlink out", body2("t1", "fm/train", "eval", json_string("evil")),
         "dataset_outside", "eval"},
        {"eval absolute", body2("t1", "fm/train", "eval", json_string(abs_set)),
         "dataset_outside", "eval"},
        {"train with a class dir symlinked out", body2("t1", "leaky", NULL, NULL),
         "dataset_outside|invalid_dataset", "train"},
        {"train a manifest line ../x", body2("t1", "leak.jsonl", NULL, NULL),
         "dataset_outside|invalid_dataset", "train"},
    };
    for (size_t i = 0; i < sizeof esc / sizeof *esc; i++) {
        ft_expect(esc[i].what, p, esc[i].body, 422, esc[i].codes, esc[i].field);
        int seen = watch_drain(esc[i].what, true);
        CHECKF(seen == 0, "%s: the server opened or read %d things outside datasets/",
               esc[i].what, seen);
    }
    /* the control: the same watch sees the server open a data set it may
     * read (fm/train, for a job that is then refused only for its task) */
    snprintf(watched, sizeof watched, "%s/datasets/fm/train", d1);
    watch_tree(watched);
    watch_drain("setup", false);
    ft_expect("control: a valid train for an existing task", p,
              body2("existing", "fm/train", NULL, NULL), 409, "task_exists", "task");
    ft_expect("control: a valid train, a bad eval", p,
              body2("t1", "fm/train", "eval", json_string("extra/test")), 422,
              "invalid_dataset", "eval");
    int control = watch_drain("control", false);
    CHECKF(control > 0, "the control: no open of fm/train seen, so the watch proves nothing");
    fprintf(stderr, "  control: %d opens/reads of fm/train seen\n", control);

    /* job routes of a job that does not exist */
    const char *ids[] = {"ftjob-0000000000000000", "nope", "ftjob-%2e%2e", "FTJOB-0"};
    for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
        char path[128], what[160];
        snprintf(path, sizeof path, "/v1/finetune/%s", ids[i]);
        snprintf(what, sizeof what, "GET %s", path);
        get_expect(what, p, NULL, path, 404, "job_not_found|not_found", NULL);
        snprintf(path, sizeof path, "/v1/finetune/%s/events", ids[i]);
        snprintf(what, sizeof what, "GET %s", path);
        get_expect(what, p, NULL, path, 404, "job_not_found|not_found", NULL);
        snprintf(path, sizeof path, "/v1/finetune/%s/cancel", ids[i]);
        snprintf(what, sizeof what, "POST %s", path);
        get_expect(what, p, "POST", path, 404, "job_not_found|not_found", NULL);
    }
    get_expect("GET /v1/finetune/ftjob-0000000000000000 (exact code)", p, NULL,
               "/v1/finetune/ftjob-0000000000000000", 404, "job_not_found", NULL);

    /* none of this made a job */
    l = get_ok(p, "GET /v1/finetune (after the errors)", "/v1/finetune");
    CHECKF(l && json_array_size(json_object_get(l, "data")) == 0,
           "refused requests made jobs: %s", jdump(l));
    json_decref(l);
}

/* ---- happy path ---------------------------------------------------------- */

static char happy_id[64];
static json_t *happy_events; /* its events, for the events section */

/* Checks the task file of a finished job against result and GET /v1/tasks. */
static void check_result_file(const char *what, const json_t *job, const char *task)
{
    char file[512], rel[128];
    snprintf(rel, sizeof rel, "tasks/%s.safetensors", task);
    snprintf(file, sizeof file, "%s/%s", d1, rel);
    json_t *res = json_object_get(job, "result");
    CHECKF(strcmp(jstr(json_object_get(res, "task")), task) == 0, "%s: result.task %s", what,
           jdump(res));
    CHECKF(strcmp(jstr(json_object_get(res, "file")), rel) == 0, "%s: result.file %s, want %s",
           what, jdump(json_object_get(res, "file")), rel);
    long size = file_size(file);
    CHECKF(size > 0 && json_integer_value(json_object_get(res, "bytes")) == size,
           "%s: result.bytes %s, the file %s has %ld", what, jdump(json_object_get(res, "bytes")),
           file, size);
}

/* Classifies fm test image `img` (the k-th test image of class c) with
 * task and compares the reply with `vitfit classify --task file`. */
static void check_classify_task(const char *what, const char *task, const char *file, int c,
                                int k)
{
    char img[512];
    snprintf(img, sizeof img, "%s/datasets/fm/test/%s/%d.png", d1, fm_names[c], 40 + k);
    const char *imgs[1] = {img};
    serve_ref ref;
    if (!serve_reference(file, imgs, 1, &ref)) {
        CHECKF(0, "%s: no reference", what);
        return;
    }
    size_t len;
    uint8_t *bytes = serve_read_file(img, &len);
    char *b64 = bytes ? serve_base64(bytes, len) : NULL;
    VIT_ASSERT(b64);
    json_t *req = json_pack("{sssssi}", "image", b64, "task", task, "top_k", 10);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    serve_resp r;
    serve_request(&S1, h, &(serve_req){.path = "/v1/classify", .content_type = "application/json",
                                       .body = body, .len = strlen(body)},
                  &r);
    json_t *j = serve_check_ok(what, &r);
    if (j) {
        char why[256];
        CHECKF(serve_result_matches(j, task, &ref, 10, why, sizeof why), "%s: %s", what, why);
        /* the labels are the data set's classes */
        json_t *labels = json_object_get(j, "labels");
        CHECKF(json_array_size(labels) == 3, "%s: %zu labels", what, json_array_size(labels));
        for (size_t i = 0; i < json_array_size(labels); i++)
            CHECKF(one_of(jstr(json_array_get(labels, i)), "bag|sneaker|trouser"),
                   "%s: label %s", what, jdump(json_array_get(labels, i)));
    }
    json_decref(j);
    serve_resp_free(&r);
    free(body);
    free(b64);
    free(bytes);
}

/* a equals b, but for numbers, which may differ in the 9th significant
 * digit: job.json keeps 17 (a restarted job must run the very
 * hyper-parameters it was given), the API's replies 9. */
static bool json_close(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b)) {
        double x = json_number_value(a), y = json_number_value(b);
        return fabs(x - y) <= 1e-8 * fmax(fabs(x), fabs(y));
    }
    if (json_is_object(a) && json_is_object(b)) {
        if (json_object_size(a) != json_object_size(b))
            return false;
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)a, k, v)
            if (!json_close(v, json_object_get(b, k)))
                return false;
        return true;
    }
    if (json_is_array(a) && json_is_array(b)) {
        if (json_array_size(a) != json_array_size(b))
            return false;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!json_close(json_array_get(a, i), json_array_get(b, i)))
                return false;
        return true;
    }
    return json_equal(a, b);
}

/* job.json and events.jsonl of job id on disk equal job and events (job.json
 * to the API's 9 digits). */
static void check_job_files(const char *what, const char *dir, const char *id, const json_t *job,
                            const json_t *events)
{
    char path[512];
    snprintf(path, sizeof path, "%s/jobs/%s/job.json", dir, id);
    json_error_t je;
    json_t *disk = json_load_file(path, 0, &je);
    char at[256];
    json_diff_path(disk, job, at, sizeof at);
    CHECKF(disk && json_close(disk, job), "%s: %s differs from GET at %s: %s in the file, %s "
           "from GET", what, path, disk ? at : je.text, jdump(json_at(disk, at)),
           jdump(json_at((json_t *)job, at)));
    json_decref(disk);
    snprintf(path, sizeof path, "%s/jobs/%s/events.jsonl", dir, id);
    size_t n;
    char *text = (char *)serve_read_file(path, &n);
    CHECKF(text, "%s: no %s", what, path);
    size_t line_no = 0;
    bool same_so_far = true;
    for (char *line = text ? strtok(text, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        json_t *e = json_loads(line, 0, NULL);
        json_t *want = json_array_get(events, line_no);
        if (same_so_far) {
            char at[256];
            json_diff_path(e, want, at, sizeof at);
            CHECKF(e && json_equal(e, want), "%s: events.jsonl line %zu differs from the API's "
                   "event at %s: %s in the file, %s from the API (later lines not compared)",
                   what, line_no + 1, at, jdump(json_at(e, at)), jdump(json_at(want, at)));
        }
        same_so_far = same_so_far && e && json_equal(e, want);
        json_decref(e);
        line_no++;
    }
    CHECKF(!text || line_no == json_array_size(events), "%s: events.jsonl has %zu lines, the "
           "API %zu events", what, line_no, json_array_size(events));
    free(text);
    snprintf(path, sizeof path, "%s/jobs/%s/checkpoint", dir, id);
    CHECKF(!exists(path), "%s: %s is left after the job ended", what, path);
}

static void test_happy(void)
{
    fprintf(stderr, "== happy path\n");
    json_t *job = ft_create("POST fm-h", &S1,
                            json_pack("{sssssisi}", "task", "fm-h", "train", "fm/train",
                                      "epochs", 2, "batch_size", 16),
                            happy_id);
    if (!job)
        return;
    remember_job(happy_id, "succeeded");
    /* the queued object, field by field */
    check_job_shape("POST fm-h (201)", job);
    CHECKF(strcmp(jstr(json_object_get(job, "task")), "fm-h") == 0 &&
               strcmp(jstr(json_object_get(job, "method")), "bitfit") == 0 &&
               strcmp(jstr(json_object_get(job, "train")), "fm/train") == 0 &&
               json_is_null(json_object_get(job, "eval")),
           "POST fm-h: task/method/train/eval: %s", jdump(job));
    json_t *hp = json_object_get(job, "hyperparameters");
    CHECKF(json_integer_value(json_object_get(hp, "epochs")) == 2 &&
               json_integer_value(json_object_get(hp, "batch_size")) == 16 &&
               json_is_false(json_object_get(hp, "overwrite")) &&
               json_is_false(json_object_get(hp, "skip_bad")) &&
               json_integer_value(json_object_get(hp, "max_steps")) == 0,
           "POST fm-h: hyperparameters do not hold what was sent: %s", jdump(hp));
    json_t *pr = json_object_get(job, "progress");
    CHECKF(json_integer_value(json_object_get(pr, "epoch")) == 0 &&
               json_integer_value(json_object_get(pr, "epochs")) == 2 &&
               json_integer_value(json_object_get(pr, "step")) == 0,
           "POST fm-h: progress of a queued job %s", jdump(pr));
    json_t *m = json_object_get(job, "metrics");
    CHECKF(json_is_null(json_object_get(m, "train_loss")) &&
               json_is_null(json_object_get(m, "eval_top1")) &&
               json_is_null(json_object_get(m, "best_epoch")),
           "POST fm-h: metrics of a queued job %s", jdump(m));
    json_t *hp0 = json_deep_copy(hp);
    json_int_t created = json_integer_value(json_object_get(job, "created_at"));
    json_decref(job);

    job = ft_wait(&S1, happy_id, "final", 0, WAIT_S);
    const char *st = jstr(json_object_get(job, "status"));
    CHECKF(strcmp(st, "succeeded") == 0, "fm-h ended %s: %s", st, jdump(job));
    check_job_shape("fm-h (final)", job);
    CHECKF(json_equal(json_object_get(job, "hyperparameters"), hp0),
           "fm-h: hyperparameters changed from %s to %s", jdump(hp0),
           jdump(json_object_get(job, "hyperparameters")));
    json_decref(hp0);
    CHECKF(json_integer_value(json_object_get(job, "created_at")) == created,
           "fm-h: created_at changed");
    json_t *s = json_object_get(job, "started_at"), *f = json_object_get(job, "finished_at");
    CHECKF(json_is_integer(s) && json_is_integer(f) && created <= json_integer_value(s) &&
               json_integer_value(s) <= json_integer_value(f),
           "fm-h: times created %" JSON_INTEGER_FORMAT ", started %s, finished %s", created,
           jdump(s), jdump(f));
    pr = json_object_get(job, "progress");
    json_int_t step = json_integer_value(json_object_get(pr, "step"));
    json_t *total = json_object_get(pr, "total_steps");
    /* 120 images, 10% held out for validation: 108 for training, 7 batches
     * of 16 per epoch (6 when the last short batch is dropped) */
    CHECKF(json_integer_value(json_object_get(pr, "epoch")) == 2 && json_is_integer(total) &&
               step == json_integer_value(total) && step >= 12 && step <= 16,
           "fm-h: progress after 2 epochs of 108 images in batches of 16: %s", jdump(pr));
    json_t *ips = json_object_get(pr, "images_per_second");
    CHECKF(json_is_null(ips) || (json_is_number(ips) && json_number_value(ips) > 0),
           "fm-h: images_per_second %s", jdump(ips));
    json_t *eta = json_object_get(pr, "eta_seconds");
    CHECKF(json_is_null(eta) || (json_is_number(eta) && json_number_value(eta) >= 0 &&
                                 json_number_value(eta) < 1),
           "fm-h: eta_seconds of a finished job %s", jdump(eta));
    m = json_object_get(job, "metrics");
    json_t *loss = json_object_get(m, "train_loss"), *t1 = json_object_get(m, "eval_top1"),
           *t5 = json_object_get(m, "eval_top5"), *be = json_object_get(m, "best_epoch");
    CHECKF(json_is_number(loss) && json_number_value(loss) > 0 && json_number_value(loss) < 10,
           "fm-h: train_loss %s", jdump(loss));
    /* no eval set: validation metrics exactly when a validation split is
     * held out (the default validation_split); 3 classes, so top-5 is
     * everything (1 or 100, whichever scale top-1 uses) */
    double vs = json_number_value(json_object_get(json_object_get(job, "hyperparameters"),
                                                  "validation_split"));
    if (vs > 0) {
        CHECKF(json_is_number(t1) && json_is_number(t5) && json_number_value(t1) >= 0 &&
                   json_number_value(t1) <= json_number_value(t5) &&
                   (json_number_value(t5) == 1 || json_number_value(t5) == 100),
               "fm-h: eval_top1 %s, eval_top5 %s", jdump(t1), jdump(t5));
        CHECKF(json_is_integer(be) && json_integer_value(be) >= 0 && json_integer_value(be) <= 2,
               "fm-h: best_epoch %s", jdump(be));
    } else {
        fprintf(stderr, "  NOTE: the default validation_split is %g: no validation metrics\n",
                vs);
        CHECKF(json_is_null(t1) && json_is_null(t5),
               "fm-h: eval metrics %s, %s without an eval set or a validation split", jdump(t1),
               jdump(t5));
    }
    check_result_file("fm-h", job, "fm-h");

    /* the events; job.json and events.jsonl on disk */
    happy_events = ft_final_events(&S1, happy_id, 100);
    if (happy_events) {
        check_events("fm-h events", happy_events, "succeeded");
        CHECKF(count_type(happy_events, "started") == 1, "fm-h: %d started events",
               count_type(happy_events, "started"));
        CHECKF(count_type(happy_events, "epoch_end") == 2, "fm-h: %d epoch_end events, want 2",
               count_type(happy_events, "epoch_end"));
        CHECKF(count_type(happy_events, "resumed") == 0 &&
                   count_type(happy_events, "interrupted") == 0,
               "fm-h: resumed or interrupted events in an uninterrupted job");
        /* epoch_end data: epoch (counted from 0 or 1, one more each time),
         * train_loss, eval_top1 (on the validation split) */
        size_t i;
        json_t *e;
        int epoch_no = 0;
        json_int_t base = -1;
        json_array_foreach(happy_events, i, e) {
            if (strcmp(jstr(json_object_get(e, "type")), "epoch_end") != 0)
                continue;
            json_t *d = json_object_get(e, "data");
            json_int_t ep = json_integer_value(json_object_get(d, "epoch"));
            if (base < 0)
                base = ep;
            CHECKF((base == 0 || base == 1) && ep == base + epoch_no &&
                       json_is_number(json_object_get(d, "train_loss")) &&
                       (vs <= 0 || json_is_number(json_object_get(d, "eval_top1"))),
                   "fm-h: epoch_end %d data %s", epoch_no, jdump(d));
            epoch_no++;
        }
        json_t *last = json_array_get(happy_events, json_array_size(happy_events) - 1);
        json_t *res = event_part(last, "result");
        CHECKF(json_equal(res, json_object_get(job, "result")),
               "fm-h: the succeeded event's data %s, the job's result %s",
               jdump(json_object_get(last, "data")), jdump(json_object_get(job, "result")));
        check_job_files("fm-h", d1, happy_id, job, happy_events);
    }

    /* classify with the new task at once; GET /v1/tasks/fm-h */
    char file[512];
    snprintf(file, sizeof file, "%s/tasks/fm-h.safetensors", d1);
    for (int c = 0; c < 3; c++)
        check_classify_task("classify with fm-h", "fm-h", file, c, 0);
    json_t *t = get_ok(&S1, "GET /v1/tasks/fm-h", "/v1/tasks/fm-h");
    if (t) {
        json_t *labels = json_object_get(t, "labels");
        CHECKF(json_integer_value(json_object_get(t, "num_classes")) == 3 &&
                   json_array_size(labels) == 3 &&
                   strcmp(jstr(json_array_get(labels, 0)), "bag") == 0 &&
                   strcmp(jstr(json_array_get(labels, 1)), "sneaker") == 0 &&
                   strcmp(jstr(json_array_get(labels, 2)), "trouser") == 0,
               "GET /v1/tasks/fm-h: classes %s", jdump(t));
        CHECKF(json_integer_value(json_object_get(t, "bytes")) == file_size(file),
               "GET /v1/tasks/fm-h: bytes");
        const char *meta = jdump(json_object_get(t, "metadata"));
        CHECKF(strstr(meta, happy_id) && strstr(meta, "batch_size") && strstr(meta, "top1"),
               "GET /v1/tasks/fm-h: metadata lacks the job id, hyper-parameters or metrics: %s",
               meta);
    }
    json_decref(t);
    t = get_ok(&S1, "GET /v1/tasks", "/v1/tasks");
    CHECKF(t && strstr(jdump(t), "\"fm-h\""), "GET /v1/tasks does not list fm-h: %s", jdump(t));
    json_decref(t);

    /* the name is now taken */
    ft_expect("fm-h again", &S1, body2("fm-h", "fm/train", NULL, NULL), 409, "task_exists",
              "task");
    json_decref(job);
}

/* ---- events -------------------------------------------------------------- */

static void test_events(void)
{
    fprintf(stderr, "== events\n");
    if (!happy_events) {
        CHECKF(0, "events: no finished job to read");
        return;
    }
    const char *id = happy_id;
    size_t n = json_array_size(happy_events);
    char path[256];
    /* paging by 2 equals the whole */
    json_t *paged = ft_events(&S1, id, 2);
    CHECKF(paged && json_equal(paged, happy_events), "events by pages of 2: %s, whole %s",
           jdump(paged), jdump(happy_events));
    json_decref(paged);
    /* default limit (100) and after */
    snprintf(path, sizeof path, "/v1/finetune/%s/events", id);
    json_t *j = get_ok(&S1, path, path);
    CHECKF(j && json_equal(json_object_get(j, "data"), happy_events) &&
               json_is_false(json_object_get(j, "has_more")),
           "%s: %s", path, jdump(j));
    json_decref(j);
    snprintf(path, sizeof path, "/v1/finetune/%s/events?after=2", id);
    j = get_ok(&S1, path, path);
    json_t *d = json_object_get(j, "data");
    CHECKF(json_array_size(d) == n - 2 &&
               json_integer_value(json_object_get(json_array_get(d, 0), "id")) == 3,
           "%s: %s", path, jdump(j));
    json_decref(j);
    snprintf(path, sizeof path, "/v1/finetune/%s/events?after=%zu", id, n);
    j = get_ok(&S1, path, path);
    CHECKF(j && json_array_size(json_object_get(j, "data")) == 0 &&
               json_is_false(json_object_get(j, "has_more")),
           "%s: %s", path, jdump(j));
    json_decref(j);
    snprintf(path, sizeof path, "/v1/finetune/%s/events?limit=1", id);
    j = get_ok(&S1, path, path);
    CHECKF(json_array_size(json_object_get(j, "data")) == 1 &&
               json_is_true(json_object_get(j, "has_more")),
           "%s: %s", path, jdump(j));
    json_decref(j);
    static const char *const bad[][2] = {
        {"after=-1", "after"}, {"after=x", "after"}, {"after=1.5", "after"},
        {"limit=0", "limit"},  {"limit=1001", "limit"}, {"limit=x", "limit"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(path, sizeof path, "/v1/finetune/%s/events?%s", id, bad[i][0]);
        get_expect(path, &S1, NULL, path, 422, "invalid_field", bad[i][1]);
    }

    /* the stream of a finished job: everything, then closed */
    sse_read s = {0};
    char ct[128];
    CURLcode cc;
    snprintf(path, sizeof path, "/v1/finetune/%s/events", id);
    long status = sse_get(&S1, path, NULL, 60, &s, ct, sizeof ct, &cc);
    check_sse_equals("SSE of a finished job", status, ct, cc, &s, happy_events);
    json_decref(s.events);
    free(s.buf);
    /* from ?after=2 */
    json_t *tail = json_array();
    for (size_t i = 2; i < n; i++)
        json_array_append(tail, json_array_get(happy_events, i));
    memset(&s, 0, sizeof s);
    snprintf(path, sizeof path, "/v1/finetune/%s/events?after=2", id);
    status = sse_get(&S1, path, NULL, 60, &s, ct, sizeof ct, &cc);
    check_sse_equals("SSE ?after=2", status, ct, cc, &s, tail);
    json_decref(s.events);
    free(s.buf);
    /* from Last-Event-ID: 3 */
    json_array_remove(tail, 0);
    memset(&s, 0, sizeof s);
    snprintf(path, sizeof path, "/v1/finetune/%s/events", id);
    status = sse_get(&S1, path, "3", 60, &s, ct, sizeof ct, &cc);
    check_sse_equals("SSE Last-Event-ID: 3", status, ct, cc, &s, tail);
    json_decref(s.events);
    free(s.buf);
    json_decref(tail);
}

/* ---- live stream --------------------------------------------------------- */

/* A linear probe of 3 epochs: its later epochs train on cached features
 * (trainer_features.c), so the sanitizer stages run that code here too. */
static void test_live(void)
{
    fprintf(stderr, "== live stream\n");
    char id[64];
    json_t *job = ft_create("POST fm-csv", &S1,
                            json_pack("{sssssssssisi}", "task", "fm-csv", "train", "fm/train.csv",
                                      "eval", "fm/test.jsonl", "method", "linear", "epochs", 3,
                                      "batch_size", 16),
                            id);
    if (!job)
        return;
    remember_job(id, "succeeded");
    json_decref(job);
    sse_read s = {0};
    char path[256], ct[128];
    CURLcode cc;
    snprintf(path, sizeof path, "/v1/finetune/%s/events", id);
    long status = sse_get(&S1, path, NULL, WAIT_S, &s, ct, sizeof ct, &cc);
    job = ft_wait(&S1, id, "final", 0, WAIT_S);
    CHECKF(strcmp(jstr(json_object_get(job, "status")), "succeeded") == 0, "fm-csv: %s",
           jdump(job));
    check_job_shape("fm-csv", job);
    CHECKF(strcmp(jstr(json_object_get(job, "eval")), "fm/test.jsonl") == 0 &&
               strcmp(jstr(json_object_get(job, "method")), "linear") == 0 &&
               strcmp(jstr(json_object_get(job, "train")), "fm/train.csv") == 0,
           "fm-csv: train/eval/method %s", jdump(job));
    json_t *t1 = json_object_get(json_object_get(job, "metrics"), "eval_top1");
    CHECKF(json_is_number(t1), "fm-csv: eval_top1 %s (an eval set was given)", jdump(t1));
    check_result_file("fm-csv", job, "fm-csv");
    json_t *ev = ft_final_events(&S1, id, 100);
    if (ev) {
        check_events("fm-csv events", ev, "succeeded");
        check_sse_equals("SSE followed live", status, ct, cc, &s, ev);
        check_job_files("fm-csv", d1, id, job, ev);
    }
    fprintf(stderr, "  live stream: %zu events, %d comments\n", json_array_size(s.events),
            s.comments);
    json_decref(ev);
    json_decref(job);
    json_decref(s.events);
    free(s.buf);
}

/* ---- failed jobs and skip_bad -------------------------------------------- */

static void test_failed(void)
{
    fprintf(stderr, "== failed and skip_bad\n");
    char id[64], file[512];
    serve_resp r;
    ft_post(&S1, json_pack("{sssssisi}", "task", "fm-mixed", "train", "mixed", "epochs", 1,
                           "batch_size", 8),
            &r);
    if (r.status == 422) {
        /* validation decoded the images: acceptable, but then say so */
        check_ft_error("mixed (validation decodes images)", &r, 422, "invalid_dataset", "train");
        serve_resp_free(&r);
    } else {
        json_t *job = r.status == 201 ? serve_json(&r) : NULL;
        CHECKF(job, "POST mixed: status %ld: %.300s", r.status, r.body ? r.body : "");
        serve_resp_free(&r);
        snprintf(id, sizeof id, "%s", jstr(json_object_get(job, "id")));
        json_decref(job);
        if (*id) {
            remember_job(id, "failed");
            job = ft_wait(&S1, id, "final", 0, WAIT_S);
            CHECKF(strcmp(jstr(json_object_get(job, "status")), "failed") == 0,
                   "mixed without skip_bad: %s", jdump(job));
            check_job_shape("mixed (failed)", job);
            const char *msg = jstr(json_object_get(json_object_get(job, "error"), "message"));
            CHECKF(strstr(msg, "broken.png"), "mixed: the error does not name the file: %s",
                   msg);
            json_t *ev = ft_final_events(&S1, id, 100);
            if (ev) {
                check_events("mixed events", ev, "failed");
                json_t *last = json_array_get(ev, json_array_size(ev) - 1);
                CHECKF(json_equal(event_part(last, "error"), json_object_get(job, "error")),
                       "mixed: the failed event %s, the job's error %s", jdump(last),
                       jdump(json_object_get(job, "error")));
                check_job_files("mixed", d1, id, job, ev);
            }
            json_decref(ev);
            json_decref(job);
            snprintf(file, sizeof file, "%s/tasks/fm-mixed.safetensors", d1);
            CHECKF(!exists(file), "a failed job left %s", file);
        }
    }
    /* skip_bad: the same set succeeds, the broken file an event */
    json_t *job = ft_create("POST mixed skip_bad", &S1,
                            json_pack("{sssssisisb}", "task", "fm-mixed", "train", "mixed",
                                      "epochs", 1, "batch_size", 8, "skip_bad", 1),
                            id);
    if (!job)
        return;
    remember_job(id, "succeeded");
    CHECKF(json_is_true(json_object_get(json_object_get(job, "hyperparameters"), "skip_bad")),
           "skip_bad not in hyperparameters: %s", jdump(job));
    json_decref(job);
    job = ft_wait(&S1, id, "final", 0, WAIT_S);
    CHECKF(strcmp(jstr(json_object_get(job, "status")), "succeeded") == 0,
           "mixed with skip_bad: %s", jdump(job));
    json_t *ev = ft_final_events(&S1, id, 100);
    if (ev) {
        check_events("mixed skip_bad events", ev, "succeeded");
        size_t i;
        json_t *e;
        int skipped_broken = 0;
        json_array_foreach(ev, i, e) {
            if (strcmp(jstr(json_object_get(e, "type")), "skipped_image") != 0)
                continue;
            json_t *d = json_object_get(e, "data");
            CHECKF(strstr(jstr(json_object_get(d, "file")), "broken.png") &&
                       *jstr(json_object_get(d, "reason")),
                   "skipped_image event %s", jdump(e));
            skipped_broken++;
        }
        CHECKF(skipped_broken >= 1, "mixed skip_bad: no skipped_image event: %s", jdump(ev));
    }
    json_decref(ev);
    json_decref(job);
}

/* ---- cancel, queue limits and serving while training ----------------------- */

static double metric_value(const char *text, const char *name);

/* Classifies the ankle-boot sample with the backbone's head n times;
 * returns how many answered 200 with the CLI's reply. */
static int classify_stream(int n, const serve_ref *ref, const char *b64)
{
    int ok = 0;
    json_t *req = json_pack("{sssi}", "image", b64, "top_k", 5);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    for (int i = 0; i < n; i++) {
        serve_resp r;
        serve_request(&S1, h, &(serve_req){.path = "/v1/classify",
                                           .content_type = "application/json", .body = body,
                                           .len = strlen(body)},
                      &r);
        json_t *j = r.status == 200 ? serve_json(&r) : NULL;
        char why[256] = "";
        if (j && serve_result_matches(j, NULL, ref, 5, why, sizeof why))
            ok++;
        else
            fprintf(stderr, "  classify %d while training: %ld %s %.200s\n", i, r.status, why,
                    r.body ? r.body : "");
        json_decref(j);
        serve_resp_free(&r);
    }
    free(body);
    return ok;
}

static void test_cancel(void)
{
    fprintf(stderr, "== cancel, queue limits, classify while training\n");
    char long_id[64], q_id[64], path[512];
    serve_resp r;
    /* the long job: 200 epochs, running until cancelled */
    json_t *job = ft_create("POST fm-long", &S1,
                            json_pack("{sssssisi}", "task", "fm-long", "train", "fm/train",
                                      "epochs", 200, "batch_size", 8),
                            long_id);
    if (!job)
        return;
    remember_job(long_id, "cancelled");
    json_decref(job);
    job = ft_wait(&S1, long_id, "running", 2, WAIT_S);
    json_decref(job);

    ft_expect("a second job for fm-long (running)", &S1, body2("fm-long", "mixed", NULL, NULL),
              409, "task_in_progress", "task");

    /* a queued job: overwrite the existing task */
    char existing[512];
    snprintf(existing, sizeof existing, "%s/tasks/existing.safetensors", d1);
    size_t old_len;
    uint8_t *old = serve_read_file(existing, &old_len);
    VIT_ASSERT(old);
    job = ft_create("POST existing (overwrite)", &S1,
                    json_pack("{sssssb}", "task", "existing", "train", "fm/train.jsonl",
                              "overwrite", 1),
                    q_id);
    if (job) {
        remember_job(q_id, "cancelled");
        CHECKF(json_is_true(json_object_get(json_object_get(job, "hyperparameters"),
                                            "overwrite")),
               "overwrite not in hyperparameters: %s", jdump(job));
        json_decref(job);
        ft_expect("a second job for existing (queued)", &S1,
                  body2("existing", "fm/train", "overwrite", json_true()), 409,
                  "task_in_progress", "task");
        ft_post(&S1, body2("fm-q2", "fm/train", NULL, NULL), &r);
        check_ft_error("a second queued job (max_queued_jobs 1)", &r, 429, "queue_full", NULL);
        char ra[64];
        CHECKF(serve_header(&r, "Retry-After", ra, sizeof ra) && strspn(ra, "0123456789") ==
                                                                      strlen(ra) && *ra,
               "429 queue_full without a Retry-After of seconds");
        serve_resp_free(&r);
    }

    /* classify while fm-long trains */
    char sample[512];
    test_path(sample, sizeof sample, "models/fashion-vit-tiny/samples/0_ankle_boot.png");
    const char *imgs[1] = {sample};
    serve_ref ref;
    VIT_ASSERT(serve_reference(NULL, imgs, 1, &ref));
    size_t len;
    uint8_t *bytes = serve_read_file(sample, &len);
    char *b64 = serve_base64(bytes, len);
    VIT_ASSERT(b64);
    /* requests in tens until the job has made 2 more steps (at least 20
     * requests, at most 2000): each must be right, and the job must still be
     * running at the end, so they overlapped its training */
    json_t *before = get_job(&S1, long_id);
    json_int_t s0 = json_integer_value(json_object_get(json_object_get(before, "progress"), "step"));
    json_int_t s1 = s0;
    CHECKF(strcmp(jstr(json_object_get(before, "status")), "running") == 0,
           "fm-long before the classify stream: %s", jdump(before));
    json_decref(before);
    int n_sent = 0, n_ok = 0;
    char last_status[16] = "running";
    double deadline = serve_now_ms() + WAIT_S * 1e3;
    while (n_sent < 2000 && (n_sent < 20 || s1 < s0 + 2) && serve_now_ms() < deadline) {
        n_ok += classify_stream(10, &ref, b64);
        n_sent += 10;
        json_t *after = get_job(&S1, long_id);
        json_t *apr = json_object_get(after, "progress");
        s1 = json_integer_value(json_object_get(apr, "step"));
        json_t *ips = json_object_get(apr, "images_per_second");
        if (s1 > 0)
            CHECKF(json_is_number(ips) && json_number_value(ips) > 0 &&
                       json_is_integer(json_object_get(apr, "total_steps")),
                   "fm-long running at step %" JSON_INTEGER_FORMAT ": progress %s", s1,
                   jdump(apr));
        snprintf(last_status, sizeof last_status, "%s", jstr(json_object_get(after, "status")));
        json_decref(after);
        if (strcmp(last_status, "running") != 0)
            break;
    }
    CHECKF(strcmp(last_status, "running") == 0 && s1 >= s0 + 2,
           "fm-long was not training through the classify stream: step %" JSON_INTEGER_FORMAT
           " -> %" JSON_INTEGER_FORMAT ", status at the end %s", s0, s1, last_status);
    CHECKF(n_ok == n_sent, "classify while training: %d of %d answered right", n_ok, n_sent);
    /* /metrics while it runs: one running, one queued, a training rate */
    serve_resp mr;
    serve_request(&S1, h, &(serve_req){.path = "/metrics"}, &mr);
    double running = metric_value(mr.body, "vitfit_finetune_jobs{status=\"running\"}");
    double queued = metric_value(mr.body, "vitfit_finetune_jobs{status=\"queued\"}");
    double rate = metric_value(mr.body, "vitfit_finetune_images_per_second");
    CHECKF(mr.status == 200 && running == 1 && queued == (*q_id ? 1 : 0) && rate > 0,
           "/metrics while fm-long runs: %ld, running %g, queued %g, images/s %g", mr.status,
           running, queued, rate);
    serve_resp_free(&mr);
    fprintf(stderr, "  %d classify requests answered while fm-long went from step %"
            JSON_INTEGER_FORMAT " to %" JSON_INTEGER_FORMAT "\n", n_ok, s0, s1);
    free(bytes);
    free(b64);

    /* cancel the queued job */
    if (*q_id) {
        job = get_job(&S1, q_id);
        CHECKF(strcmp(jstr(json_object_get(job, "status")), "queued") == 0,
               "existing (overwrite) behind a running job: %s", jdump(job));
        json_decref(job);
        ft_cancel(&S1, q_id, &r);
        job = serve_check_ok("cancel the queued job", &r);
        serve_resp_free(&r);
        CHECKF(strcmp(jstr(json_object_get(job, "status")), "cancelled") == 0,
               "cancel of a queued job answers %s", jdump(job));
        json_decref(job);
        job = get_job(&S1, q_id);
        check_job_shape("the cancelled queued job", job);
        CHECKF(strcmp(jstr(json_object_get(job, "status")), "cancelled") == 0 &&
                   json_is_null(json_object_get(job, "started_at")) &&
                   json_integer_value(json_object_get(json_object_get(job, "progress"), "step")) ==
                       0,
               "the cancelled queued job: %s", jdump(job));
        json_t *ev = ft_final_events(&S1, q_id, 100);
        if (ev) {
            check_events("the cancelled queued job", ev, "cancelled");
            CHECKF(count_type(ev, "started") == 0, "a never-run job has a started event");
            check_job_files("the cancelled queued job", d1, q_id, job, ev);
        }
        json_decref(ev);
        json_decref(job);
        size_t now_len;
        uint8_t *now = serve_read_file(existing, &now_len);
        CHECKF(now && now_len == old_len && memcmp(now, old, old_len) == 0,
               "a cancelled overwrite job changed %s", existing);
        free(now);
        ft_cancel(&S1, q_id, &r);
        check_ft_error("cancel the cancelled job", &r, 409, "job_finished", NULL);
        serve_resp_free(&r);
    }
    free(old);

    /* three more jobs, each queued and cancelled (for the list), on the
     * manifests and with method linear: accepted at POST */
    static const char *const trains[3] = {"fm/train.jsonl", "fm/test.csv", "fm/train"};
    for (int i = 0; i < 3; i++) {
        char id[64], task[32];
        snprintf(task, sizeof task, "fm-c%d", i);
        job = ft_create(task, &S1,
                        json_pack("{ssssss}", "task", task, "train", trains[i], "method",
                                  i == 2 ? "linear" : "bitfit"),
                        id);
        if (!job)
            continue;
        remember_job(id, "cancelled");
        json_decref(job);
        ft_cancel(&S1, id, &r);
        job = serve_check_ok("cancel a queued job", &r);
        CHECKF(strcmp(jstr(json_object_get(job, "status")), "cancelled") == 0, "%s: %s", task,
               jdump(job));
        json_decref(job);
        serve_resp_free(&r);
    }

    /* cancel the running job */
    ft_cancel(&S1, long_id, &r);
    job = serve_check_ok("cancel the running job", &r);
    serve_resp_free(&r);
    CHECKF(one_of(jstr(json_object_get(job, "status")), "running|cancelled"),
           "cancel of a running job answers %s", jdump(job));
    json_decref(job);
    job = ft_wait(&S1, long_id, "final", 0, 120);
    CHECKF(strcmp(jstr(json_object_get(job, "status")), "cancelled") == 0,
           "fm-long after cancel: %s", jdump(job));
    check_job_shape("fm-long (cancelled)", job);
    CHECKF(json_is_integer(json_object_get(job, "started_at")) &&
               json_integer_value(json_object_get(json_object_get(job, "progress"), "step")) > 0,
           "fm-long: cancelled while running, yet %s", jdump(job));
    json_t *ev = ft_final_events(&S1, long_id, 1000);
    if (ev) {
        check_events("fm-long events", ev, "cancelled");
        CHECKF(count_type(ev, "started") == 1, "fm-long: %d started events",
               count_type(ev, "started"));
        check_job_files("fm-long", d1, long_id, job, ev);
    }
    json_decref(ev);
    json_decref(job);
    snprintf(path, sizeof path, "%s/tasks/fm-long.safetensors", d1);
    CHECKF(!exists(path), "a cancelled job left %s", path);
    ft_cancel(&S1, long_id, &r);
    check_ft_error("cancel fm-long again", &r, 409, "job_finished", NULL);
    serve_resp_free(&r);
    if (*happy_id) {
        ft_cancel(&S1, happy_id, &r);
        check_ft_error("cancel the succeeded job", &r, 409, "job_finished", NULL);
        serve_resp_free(&r);
    }
    /* the task is free again */
    ft_expect("fm-long once more (bad eval, so no job)", &S1,
              body2("fm-long", "fm/train", "eval", json_string("nope")), 422,
              "dataset_not_found", "eval");
}

/* ---- list ---------------------------------------------------------------- */

/* The ids of the list pages of `query` (e.g. "status=cancelled&"), limit
 * per page, walked with after=; checks has_more on each page.  Returns a
 * JSON array of ids (caller decrefs). */
static json_t *list_ids(const char *query, int limit)
{
    json_t *ids = json_array();
    char after[80] = "";
    for (int page = 0; page < 100; page++) {
        char path[256];
        snprintf(path, sizeof path, "/v1/finetune?%slimit=%d%s%s", query, limit,
                 *after ? "&after=" : "", after);
        json_t *j = get_ok(&S1, path, path);
        json_t *data = json_object_get(j, "data");
        CHECKF(j && strcmp(jstr(json_object_get(j, "object")), "list") == 0 &&
                   json_is_array(data) && json_array_size(data) <= (size_t)limit &&
                   json_is_boolean(json_object_get(j, "has_more")),
               "%s: %s", path, jdump(j));
        size_t i;
        json_t *job;
        json_array_foreach(data, i, job) {
            check_job_shape(path, job);
            json_array_append_new(ids, json_string(jstr(json_object_get(job, "id"))));
        }
        bool more = json_is_true(json_object_get(j, "has_more"));
        if (more && json_array_size(data) > 0)
            snprintf(after, sizeof after, "%s",
                     jstr(json_object_get(json_array_get(data, json_array_size(data) - 1), "id")));
        json_decref(j);
        if (!more || !*after)
            return ids;
    }
    CHECKF(0, "list %s: more than 100 pages", query);
    return ids;
}

/* The ids of jobs[] with final status st (NULL: all), newest first. */
static json_t *want_ids(const char *st)
{
    json_t *ids = json_array();
    for (int i = njobs - 1; i >= 0; i--)
        if (!st || strcmp(jobs[i].status, st) == 0)
            json_array_append_new(ids, json_string(jobs[i].id));
    return ids;
}

/* The value of the /metrics sample `name` (exact, with labels), -1 when
 * absent. */
static double metric_value(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *s = text; s && *s;) {
        if (strncmp(s, name, n) == 0 && s[n] == ' ')
            return strtod(s + n + 1, NULL);
        s = strchr(s, '\n');
        s = s ? s + 1 : NULL;
    }
    return -1;
}

static void test_list(void)
{
    fprintf(stderr, "== list, filter, cursor\n");
    json_t *want = want_ids(NULL);
    json_t *got = list_ids("", 100);
    CHECKF(json_equal(got, want), "GET /v1/finetune: ids %s, want (newest first) %s", jdump(got),
           jdump(want));
    json_decref(got);
    /* the default limit (20) holds them all */
    json_t *j = get_ok(&S1, "GET /v1/finetune", "/v1/finetune");
    CHECKF(j && json_array_size(json_object_get(j, "data")) == json_array_size(want) &&
               json_is_false(json_object_get(j, "has_more")),
           "GET /v1/finetune: %zu jobs, want %zu", json_array_size(json_object_get(j, "data")),
           json_array_size(want));
    json_decref(j);
    for (int limit = 1; limit <= 3; limit++) {
        got = list_ids("", limit);
        CHECKF(json_equal(got, want), "pages of %d: %s, want %s", limit, jdump(got), jdump(want));
        json_decref(got);
    }
    /* a page that ends exactly at the last job */
    char path[256];
    snprintf(path, sizeof path, "/v1/finetune?limit=%zu", json_array_size(want));
    j = get_ok(&S1, path, path);
    CHECKF(j && json_is_false(json_object_get(j, "has_more")), "%s: has_more %s", path,
           jdump(json_object_get(j, "has_more")));
    json_decref(j);
    snprintf(path, sizeof path, "/v1/finetune?after=%s", jobs[0].id);
    j = get_ok(&S1, path, path);
    CHECKF(j && json_array_size(json_object_get(j, "data")) == 0 &&
               json_is_false(json_object_get(j, "has_more")),
           "%s (the oldest): %s", path, jdump(j));
    json_decref(j);
    json_decref(want);

    for (int s = 0; s < 5; s++) {
        char q[64];
        snprintf(q, sizeof q, "status=%s&", job_statuses[s]);
        want = want_ids(job_statuses[s]);
        for (int limit = 1; limit <= 100; limit += 99) {
            got = list_ids(q, limit);
            CHECKF(json_equal(got, want), "?%slimit=%d: %s, want %s", q, limit, jdump(got),
                   jdump(want));
            json_decref(got);
        }
        json_decref(want);
    }

    static const char *const bad[][2] = {
        {"status=done", "status"},  {"status=", "status"},     {"status=Queued", "status"},
        {"limit=0", "limit"},       {"limit=101", "limit"},    {"limit=x", "limit"},
        {"limit=-1", "limit"},      {"after=ftjob-0000000000000000", "after"},
        {"after=x", "after"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(path, sizeof path, "/v1/finetune?%s", bad[i][0]);
        get_expect(path, &S1, NULL, path, 422, "invalid_field", bad[i][1]);
    }

    /* /metrics: the job gauges match the list */
    serve_resp r;
    serve_request(&S1, h, &(serve_req){.path = "/metrics"}, &r);
    CHECKF(r.status == 200, "/metrics: %ld", r.status);
    for (int s = 0; s < 5; s++) {
        char name[96];
        snprintf(name, sizeof name, "vitfit_finetune_jobs{status=\"%s\"}", job_statuses[s]);
        want = want_ids(job_statuses[s]);
        double v = metric_value(r.body, name);
        CHECKF(v == (double)json_array_size(want), "/metrics %s is %g, want %zu", name, v,
               json_array_size(want));
        if (s >= 2) {
            snprintf(name, sizeof name, "vitfit_finetune_jobs_finished_total{status=\"%s\"}",
                     job_statuses[s]);
            v = metric_value(r.body, name);
            CHECKF(v == (double)json_array_size(want), "/metrics %s is %g, want %zu", name, v,
                   json_array_size(want));
        }
        json_decref(want);
    }
    CHECKF(metric_value(r.body, "vitfit_finetune_job_seconds_total") > 0,
           "/metrics vitfit_finetune_job_seconds_total is not > 0");
    CHECKF(metric_value(r.body, "vitfit_finetune_images_per_second") == 0,
           "/metrics vitfit_finetune_images_per_second is not 0 with no job running");
    serve_resp_free(&r);
}

/* ---- restart ------------------------------------------------------------- */

static json_t *read_events_file(const char *path);

static const char *const s1_flags[] = {"--max-running-jobs", "1", "--max-queued-jobs", "1",
                                       "--max-body-bytes", "1048576", NULL};

static void test_restart(void)
{
    fprintf(stderr, "== restart\n");
    json_t *before = get_ok(&S1, "GET /v1/finetune?limit=100", "/v1/finetune?limit=100");
    int st = serve_stop(&S1, SIGTERM, 60000);
    CHECKF(st == 0, "the server after SIGTERM: exit %d", st);
    if (!serve_start(&S1, d1, NULL, s1_flags)) {
        CHECKF(0, "the server did not start again on %s", d1);
        json_decref(before);
        return;
    }
    json_t *after = get_ok(&S1, "GET /v1/finetune?limit=100 (restarted)",
                           "/v1/finetune?limit=100");
    CHECKF(before && json_equal(before, after), "the jobs after a restart: %s, before %s",
           jdump(after), jdump(before));
    json_decref(before);
    json_decref(after);
    if (*happy_id) {
        char file[512];
        snprintf(file, sizeof file, "%s/tasks/fm-h.safetensors", d1);
        check_classify_task("classify with fm-h after the restart", "fm-h", file, 1, 1);
        json_t *ev = ft_events(&S1, happy_id, 100);
        CHECKF(happy_events && json_equal(ev, happy_events), "fm-h's events after a restart");
        json_decref(ev);
    }

    /* a graceful restart with a job running and one queued: the running one
     * gets an interrupted event and resumes at the next start (a resumed
     * event), the queued one stays queued behind it */
    char run_id[64], q_id[64], path[512];
    json_t *job = ft_create("POST fm-r1", &S1,
                            json_pack("{sssssisi}", "task", "fm-r1", "train", "fm/train",
                                      "epochs", 200, "batch_size", 8),
                            run_id);
    json_decref(job);
    if (!*run_id)
        return;
    remember_job(run_id, "cancelled");
    json_decref(ft_wait(&S1, run_id, "running", 1, WAIT_S));
    job = ft_create("POST fm-r2", &S1, body2("fm-r2", "fm/train", NULL, NULL), q_id);
    json_decref(job);
    if (*q_id)
        remember_job(q_id, "cancelled");
    st = serve_stop(&S1, SIGTERM, 60000);
    CHECKF(st == 0, "SIGTERM with a job running: exit %d", st);
    snprintf(path, sizeof path, "%s/jobs/%s/events.jsonl", d1, run_id);
    json_t *ev = read_events_file(path);
    const char *last = jstr(json_object_get(json_array_get(ev, json_array_size(ev) - 1), "type"));
    CHECKF(strcmp(last, "interrupted") == 0, "the running job's last event after SIGTERM is %s, "
           "want interrupted", last);
    json_decref(ev);
    if (!serve_start(&S1, d1, NULL, s1_flags)) {
        CHECKF(0, "the server did not start a second time on %s", d1);
        return;
    }
    job = ft_wait(&S1, run_id, "running", 0, WAIT_S);
    json_decref(job);
    if (*q_id) {
        job = get_job(&S1, q_id);
        CHECKF(strcmp(jstr(json_object_get(job, "status")), "queued") == 0,
               "the queued job after a restart: %s", jdump(job));
        json_decref(job);
    }
    /* the resumed event may follow the status by a moment: bounded wait */
    int resumed = 0;
    double deadline = serve_now_ms() + 30000;
    while (resumed == 0 && serve_now_ms() < deadline) {
        ev = ft_events(&S1, run_id, 1000);
        resumed = count_type(ev, "resumed");
        if (resumed) {
            check_events("fm-r1 after a restart", ev, NULL);
            CHECKF(count_type(ev, "interrupted") == 1 && resumed == 1 &&
                       count_type(ev, "started") == 1,
                   "fm-r1 after a restart: %d interrupted, %d resumed, %d started events",
                   count_type(ev, "interrupted"), resumed, count_type(ev, "started"));
        }
        json_decref(ev);
        if (!resumed)
            sleep_ms(20);
    }
    CHECKF(resumed, "fm-r1: no resumed event after the restart");
    serve_resp r;
    if (*q_id) {
        ft_cancel(&S1, q_id, &r);
        serve_resp_free(&r);
    }
    ft_cancel(&S1, run_id, &r);
    serve_resp_free(&r);
    job = ft_wait(&S1, run_id, "final", 0, 120);
    CHECKF(strcmp(jstr(json_object_get(job, "status")), "cancelled") == 0,
           "fm-r1 after cancel: %s", jdump(job));
    json_decref(job);
}

/* ---- crash and resume ---------------------------------------------------- */

static const char *const crash_flags[] = {"--max-running-jobs", "1", "--job-checkpoint-every-steps",
                                          "5", NULL};

/* A fresh data_dir with big/train: 3 classes x 60 images. */
static bool crash_dir(const char *what, char *dir, size_t len)
{
    if (!serve_tmpdir(what, dir, len))
        return false;
    char p[512];
    snprintf(p, sizeof p, "%s/datasets/big/train", dir);
    return fm_write_folder(&src, &(fm_folder_spec){.dir = p, .classes = fm_classes,
                                                  .names = fm_names, .nclasses = 3,
                                                  .per_class = 60});
}

static json_t *crash_body(void)
{
    return json_pack("{sssssisisi}", "task", "crash", "train", "big/train", "epochs", 2,
                     "batch_size", 8, "seed", 7);
}

/* Every tensor of the task files a and b bit-identical (metadata is not
 * compared: job ids and times differ).  True when they are. */
static bool same_tensors(const char *a, const char *b)
{
    st_file *fa = NULL, *fb = NULL;
    vit_error err = {0};
    bool ok = st_open(a, &fa, &err) == VIT_OK;
    CHECKF(ok, "%s: %s", a, err.message);
    ok = ok && st_open(b, &fb, &err) == VIT_OK;
    CHECKF(!fa || fb, "%s: %s", b, err.message);
    if (!ok) {
        st_close(fa);
        return false;
    }
    bool same = st_count(fa) == st_count(fb) && st_count(fa) > 0;
    CHECKF(same, "%s has %zu tensors, %s %zu", a, st_count(fa), b, st_count(fb));
    size_t compared = 0;
    for (size_t i = 0; same && i < st_count(fa); i++) {
        const st_tensor *ta = st_tensor_at(fa, i), *tb = st_find(fb, ta->name);
        same = tb && ta->dtype == tb->dtype && ta->numel == tb->numel && ta->dtype == ST_F32;
        CHECKF(same, "tensor %s: absent or another type or shape in %s", ta->name, b);
        float *x = same ? malloc((ta->numel + 1) * sizeof *x) : NULL;
        float *y = same ? malloc((ta->numel + 1) * sizeof *y) : NULL;
        same = same && x && y && st_read_f32(fa, ta, x, &err) == VIT_OK &&
               st_read_f32(fb, tb, y, &err) == VIT_OK;
        for (size_t k = 0; same && k < ta->numel; k++)
            if (memcmp(&x[k], &y[k], sizeof(float)) != 0) {
                CHECKF(0, "tensor %s differs at %zu: %.9g vs %.9g", ta->name, k, x[k], y[k]);
                same = false;
            }
        compared += same ? ta->numel : 0;
        free(x);
        free(y);
    }
    size_t ntensors = st_count(fa);
    st_close(fa);
    st_close(fb);
    if (same)
        fprintf(stderr, "  %zu tensors, %zu floats bit-identical\n", ntensors, compared);
    return same;
}

/* The events of events.jsonl at path (an array; empty when unreadable). */
static json_t *read_events_file(const char *path)
{
    json_t *ev = json_array();
    size_t n;
    char *text = (char *)serve_read_file(path, &n);
    for (char *line = text ? strtok(text, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        json_t *e = json_loads(line, 0, NULL);
        CHECKF(e, "%s: a line that is not JSON: %.200s", path, line);
        if (e)
            json_array_append_new(ev, e);
    }
    free(text);
    return ev;
}

static void test_crash(void)
{
    fprintf(stderr, "== crash and resume\n");
    char ref_dir[256], dir[256], id[64];
    serve_proc p;
    /* 1. the uninterrupted run */
    VIT_ASSERT(crash_dir("ft-ref", ref_dir, sizeof ref_dir));
    if (!serve_start(&p, ref_dir, NULL, crash_flags)) {
        CHECKF(0, "the reference server did not start");
        serve_rmtree(ref_dir);
        return;
    }
    json_t *job = ft_create("POST crash (reference)", &p, crash_body(), id);
    json_decref(job);
    job = *id ? ft_wait(&p, id, "final", 0, WAIT_S) : NULL;
    CHECKF(strcmp(jstr(json_object_get(job, "status")), "succeeded") == 0,
           "the uninterrupted run: %s", jdump(job));
    json_int_t total =
        json_integer_value(json_object_get(json_object_get(job, "progress"), "total_steps"));
    json_t *ev = *id ? ft_final_events(&p, id, 1000) : NULL;
    int ref_checkpoints = count_type(ev, "checkpoint");
    CHECKF(ref_checkpoints >= 3, "the uninterrupted run wrote %d checkpoint events (every 5 of "
           "%" JSON_INTEGER_FORMAT " steps, and per epoch)", ref_checkpoints, total);
    json_decref(ev);
    json_decref(job);
    int st = serve_stop(&p, SIGTERM, 60000);
    CHECKF(st == 0, "the reference server: exit %d", st);

    /* 2. the same job, killed after its first checkpoint (up to 3 tries: a
     * run that ends before the kill lands proves nothing) */
    bool killed_mid_run = false;
    json_t *before_kill = NULL;
    json_int_t ckpt_step = -1;
    for (int attempt = 0; attempt < 3 && !killed_mid_run; attempt++) {
        VIT_ASSERT(crash_dir("ft-crash", dir, sizeof dir));
        if (!serve_start(&p, dir, NULL, crash_flags)) {
            CHECKF(0, "the crash server did not start");
            serve_rmtree(dir);
            break;
        }
        job = ft_create("POST crash", &p, crash_body(), id);
        json_decref(job);
        if (!*id) {
            serve_stop(&p, SIGKILL, 10000);
            break;
        }
        sse_read s = {.stop_type = "checkpoint"};
        char path[768], ct[128];
        CURLcode cc;
        snprintf(path, sizeof path, "/v1/finetune/%s/events", id);
        sse_get(&p, path, NULL, WAIT_S, &s, ct, sizeof ct, &cc);
        bool saw = s.stopped;
        st = serve_stop(&p, SIGKILL, 10000);
        CHECKF(saw, "no checkpoint event on the stream (%zu events, curl %s)",
               json_array_size(s.events), curl_easy_strerror(cc));
        CHECKF(st == 128 + SIGKILL, "kill -9: exit %d", st);
        json_decref(s.events);
        free(s.buf);
        /* mid-run on disk: a checkpoint event, no final one, no task */
        snprintf(path, sizeof path, "%s/jobs/%s/events.jsonl", dir, id);
        json_decref(before_kill);
        before_kill = read_events_file(path);
        size_t i;
        json_t *e;
        bool final = false;
        json_array_foreach(before_kill, i, e) {
            const char *t = jstr(json_object_get(e, "type"));
            final |= is_final(t);
            if (strcmp(t, "checkpoint") == 0)
                ckpt_step = json_integer_value(json_object_get(json_object_get(e, "data"),
                                                               "step"));
        }
        char task[512];
        snprintf(task, sizeof task, "%s/tasks/crash.safetensors", dir);
        killed_mid_run = saw && !final && ckpt_step > 0 && ckpt_step < total && !exists(task);
        fprintf(stderr, "  attempt %d: killed with %zu events on disk, the last checkpoint at "
                "step %" JSON_INTEGER_FORMAT " of %" JSON_INTEGER_FORMAT "%s\n", attempt,
                json_array_size(before_kill), ckpt_step, total,
                killed_mid_run ? "" : " - not mid-run, again");
        if (!killed_mid_run)
            serve_rmtree(dir);
        if (!saw)
            break;
    }
    CHECKF(killed_mid_run, "no attempt was killed mid-run");
    if (!killed_mid_run) {
        json_decref(before_kill);
        serve_rmtree(ref_dir);
        return;
    }
    char path[512], path_ev[512];
    snprintf(path, sizeof path, "%s/jobs/%s/job.json", dir, id);
    snprintf(path_ev, sizeof path_ev, "%s/jobs/%s/events.jsonl", dir, id);
    json_t *on_disk = json_load_file(path, 0, NULL);
    CHECKF(strcmp(jstr(json_object_get(on_disk, "status")), "running") == 0,
           "job.json after the kill: %s", jdump(on_disk));
    json_decref(on_disk);

    /* 3. start again: the job resumes and succeeds */
    if (!serve_start(&p, dir, NULL, crash_flags)) {
        CHECKF(0, "the crash server did not start again");
    } else {
        job = ft_wait(&p, id, "final", 0, WAIT_S);
        CHECKF(strcmp(jstr(json_object_get(job, "status")), "succeeded") == 0,
               "the resumed job: %s", jdump(job));
        check_job_shape("the resumed job", job);
        ev = ft_final_events(&p, id, 1000);
        if (ev) {
            check_events("the resumed job's events", ev, "succeeded");
            size_t k = json_array_size(before_kill);
            /* the events before the kill are kept as they were (file against
             * file: check_job_files compares the file with the API) */
            json_t *after_file = read_events_file(path_ev);
            for (size_t i = 0; i < k; i++)
                CHECKF(json_equal(json_array_get(after_file, i), json_array_get(before_kill, i)),
                       "event %zu changed across the restart: %s, was %s", i,
                       jdump(json_array_get(after_file, i)), jdump(json_array_get(before_kill, i)));
            json_decref(after_file);
            int resumed = 0;
            size_t i;
            json_t *e;
            json_array_foreach(ev, i, e) {
                if (strcmp(jstr(json_object_get(e, "type")), "resumed") != 0)
                    continue;
                resumed++;
                CHECKF(i >= k, "a resumed event (%zu) among the events before the kill", i);
                json_t *step = json_object_get(json_object_get(e, "data"), "step");
                fprintf(stderr, "  resumed: %s (last checkpoint event before the kill: step %"
                        JSON_INTEGER_FORMAT ")\n", jdump(e), ckpt_step);
                if (step)
                    CHECKF(json_is_integer(step) && json_integer_value(step) >= ckpt_step &&
                               json_integer_value(step) < total,
                           "resumed at step %s; the last checkpoint before the kill was step %"
                           JSON_INTEGER_FORMAT " of %" JSON_INTEGER_FORMAT,
                           jdump(step), ckpt_step, total);
            }
            CHECKF(resumed == 1, "%d resumed events, want 1", resumed);
            /* it went on from the checkpoint, not from step 0: the first
             * checkpoint after the restart is past the last one before */
            json_int_t next_ckpt = -1;
            json_array_foreach(ev, i, e) {
                if (i >= k && next_ckpt < 0 &&
                    strcmp(jstr(json_object_get(e, "type")), "checkpoint") == 0)
                    next_ckpt = json_integer_value(json_object_get(json_object_get(e, "data"),
                                                                   "step"));
            }
            CHECKF(next_ckpt > ckpt_step, "the first checkpoint after the restart is at step %"
                   JSON_INTEGER_FORMAT ", the last before the kill at %" JSON_INTEGER_FORMAT
                   ": the job started over", next_ckpt, ckpt_step);
            check_job_files("the resumed job", dir, id, job, ev);
        }
        json_decref(ev);
        json_decref(job);
        st = serve_stop(&p, SIGTERM, 60000);
        CHECKF(st == 0, "the crash server: exit %d", st);
        char a[512], b[512];
        snprintf(a, sizeof a, "%s/tasks/crash.safetensors", ref_dir);
        snprintf(b, sizeof b, "%s/tasks/crash.safetensors", dir);
        CHECKF(same_tensors(a, b), "the resumed job's task differs from the uninterrupted run's");
    }
    json_decref(before_kill);
    serve_rmtree(dir);
    serve_rmtree(ref_dir);
}

/* ---- main ---------------------------------------------------------------- */

/* ---- tamper: a job directory damaged between two runs ------------------ */

/* Writes job.json for id in dir (made), from the object o with id, status
 * and cancel_requested replaced, the end cleared. */
static void write_job_json(const char *dir, const json_t *o, const char *id, const char *status,
                           bool cancel)
{
    json_t *c = json_deep_copy(o);
    VIT_ASSERT(c);
    json_object_set_new(c, "id", json_string(id));
    json_object_set_new(c, "status", json_string(status));
    json_object_set_new(c, "cancel_requested", json_boolean(cancel));
    json_object_set_new(c, "finished_at", json_null());
    json_object_set_new(c, "result", json_null());
    char path[600];
    VIT_ASSERT(mkdir(dir, 0755) == 0 || errno == EEXIST);
    snprintf(path, sizeof path, "%s/job.json", dir);
    VIT_ASSERT(json_dump_file(c, path, 0) == 0);
    json_decref(c);
}

/* The attack review's repros as regressions (the server is stopped): event
 * types that overflow or inject stream fields, a final event lost by a
 * crash, a checkpoint left by one, a cancel asked before a restart, an
 * events.jsonl that is a FIFO, a job directory that is a symlink out. */
static void test_tamper(void)
{
    fprintf(stderr, "== tamper\n");
    if (!*happy_id) {
        CHECKF(0, "tamper needs the happy section's job");
        return;
    }
    char dir[512], path[700], out_dir[512];
    snprintf(dir, sizeof dir, "%s/jobs/%s", d1, happy_id);
    snprintf(path, sizeof path, "%s/job.json", dir);
    json_t *happy = json_load_file(path, 0, NULL);
    VIT_ASSERT(happy);
    /* the happy job: two bad types appended, its final event no longer last */
    snprintf(path, sizeof path, "%s/events.jsonl", dir);
    FILE *f = fopen(path, "a");
    VIT_ASSERT(f);
    fprintf(f, "{\"id\":900,\"type\":\"%0200d\",\"data\":{}}\n", 0);
    fprintf(f, "{\"id\":901,\"type\":\"x\\nid: 99\",\"data\":{}}\n");
    VIT_ASSERT(fclose(f) == 0);
    snprintf(path, sizeof path, "%s/checkpoint", dir);
    VIT_ASSERT(mkdir(path, 0755) == 0);
    /* a running job whose cancel was asked for before the stop */
    static const char cancelled_id[] = "ftjob-0000000000000001";
    snprintf(path, sizeof path, "%s/jobs/%s", d1, cancelled_id);
    write_job_json(path, happy, cancelled_id, "running", true);
    /* a queued job whose events.jsonl is a FIFO (reading it would block) */
    static const char fifo_id[] = "ftjob-0000000000000002";
    snprintf(path, sizeof path, "%s/jobs/%s", d1, fifo_id);
    write_job_json(path, happy, fifo_id, "queued", false);
    snprintf(path, sizeof path, "%s/jobs/%s/events.jsonl", d1, fifo_id);
    VIT_ASSERT(mkfifo(path, 0600) == 0);
    /* a queued job whose directory is a symlink to a directory outside */
    static const char link_id[] = "ftjob-0000000000000003";
    snprintf(out_dir, sizeof out_dir, "%s/linked-job", outside);
    write_job_json(out_dir, happy, link_id, "queued", false);
    snprintf(path, sizeof path, "%s/checkpoint", out_dir);
    VIT_ASSERT(mkdir(path, 0755) == 0);
    snprintf(path, sizeof path, "%s/checkpoint/precious", out_dir);
    f = fopen(path, "w");
    VIT_ASSERT(f && fclose(f) == 0);
    snprintf(path, sizeof path, "%s/jobs/%s", d1, link_id);
    VIT_ASSERT(symlink(out_dir, path) == 0);
    json_decref(happy);

    if (!serve_start(&S1, d1, NULL, s1_flags)) {
        CHECKF(0, "the server did not start on the tampered %s", d1);
        return;
    }
    json_t *job = get_job(&S1, cancelled_id);
    CHECKF(strcmp(jstr(json_object_get(job, "status")), "cancelled") == 0,
           "a job cancelled before the restart: %s", jdump(job));
    json_decref(job);
    char route[128];
    snprintf(route, sizeof route, "/v1/finetune/%s", fifo_id);
    get_expect("a job whose events.jsonl is a FIFO", &S1, "GET", route, 404, "job_not_found",
               NULL);
    snprintf(route, sizeof route, "/v1/finetune/%s", link_id);
    get_expect("a job directory that is a symlink", &S1, "GET", route, 404, "job_not_found",
               NULL);
    snprintf(path, sizeof path, "%s/checkpoint/precious", out_dir);
    CHECKF(exists(path), "the symlinked job's target was cleaned up: %s is gone", path);
    snprintf(path, sizeof path, "%s/checkpoint", dir);
    CHECKF(!exists(path), "a finished job's leftover checkpoint is still there at start");
    /* its stream: ends (the job is finished), the bad types framed as "event" */
    sse_read sr = {0};
    char ct[128];
    CURLcode cc;
    snprintf(route, sizeof route, "/v1/finetune/%s/events", happy_id);
    long status = sse_get(&S1, route, NULL, 30, &sr, ct, sizeof ct, &cc);
    size_t n = json_array_size(sr.events);
    json_t *a = json_array_get(sr.events, n - 2), *b = json_array_get(sr.events, n - 1);
    CHECKF(status == 200 && cc == CURLE_OK && n >= 3,
           "the tampered job's stream: status %ld, curl %d, %zu events (it must end)", status,
           (int)cc, n);
    CHECKF(strcmp(jstr(json_object_get(a, "event")), "event") == 0 &&
               strcmp(jstr(json_object_get(b, "event")), "event") == 0 &&
               json_integer_value(json_object_get(b, "id")) == (json_int_t)n,
           "the bad types are framed as 'event' with their line's id: %s, %s", jdump(a),
           jdump(b));
    json_decref(sr.events);
    free(sr.buf);
    int st = serve_stop(&S1, SIGTERM, 60000);
    CHECKF(st == 0, "the server after the tampered start: exit %d", st);
}

/* ---- bf16 ----------------------------------------------------------------- */

/* A server with --precision bf16 keeps only its bf16 packing (one copy of the
 * weights), yet fine-tune jobs train in fp32: each loads an fp32 copy of the
 * backbone for its run.  The happy path's job run again there must train
 * the very same task -- its loss and validation score equal to the last
 * digit of job.json -- and the new task classifies on the bf16 server.  Runs
 * where the CPU can run bf16 (emulated without avx512_bf16). */
static void test_bf16(void)
{
    fprintf(stderr, "== bf16 server\n");
    if (!gemm_packed_available()) {
        fprintf(stderr, "  no AVX-512 here: bf16 is refused (test_cli checks that)\n");
        return;
    }
    char d2[512], path[700];
    VIT_ASSERT(serve_tmpdir("ftbf", d2, sizeof d2));
    write_main_sets(d2);
    const char *had = getenv("VITFIT_BF16_EMULATE");
    if (!cpu_has_avx512_bf16())
        setenv("VITFIT_BF16_EMULATE", "1", 1);
    /* its own copy of the model, so its config.json can change under it */
    char model[600], src[600], file[700];
    snprintf(model, sizeof model, "%s/model", d2);
    VIT_ASSERT(mkdir(model, 0755) == 0);
    static const char *const files[] = {"model.safetensors", "config.json"};
    for (int i = 0; i < 2; i++) {
        size_t len;
        test_path(src, sizeof src, "models/fashion-vit-tiny");
        snprintf(file, sizeof file, "%s/%s", src, files[i]);
        uint8_t *bytes = serve_read_file(file, &len);
        snprintf(file, sizeof file, "%s/%s", model, files[i]);
        VIT_ASSERT(bytes && serve_write_file(file, bytes, len));
        free(bytes);
    }
    const char *const flags[] = {"--precision", "bf16", "--max-running-jobs", "1", "--model",
                                 model, NULL};
    serve_proc S2;
    bool started = serve_start(&S2, d2, NULL, flags);
    if (!had)
        unsetenv("VITFIT_BF16_EMULATE");
    CHECKF(started, "the bf16 server did not start");
    if (!started)
        return;
    json_t *info = get_ok(&S2, "GET /v1/model (bf16)", "/v1/model");
    CHECKF(strcmp(jstr(json_object_get(info, "precision")), "bf16") == 0,
           "/v1/model on a bf16 server: %s", jdump(info));
    json_decref(info);
    char id[64];
    json_t *job = ft_create("POST fm-h (bf16 server)", &S2,
                            json_pack("{sssssisi}", "task", "fm-h", "train", "fm/train",
                                      "epochs", 2, "batch_size", 16),
                            id);
    json_decref(job);
    job = ft_wait(&S2, id, "final", 0, WAIT_S);
    CHECKF(strcmp(jstr(json_object_get(job, "status")), "succeeded") == 0,
           "fm-h on the bf16 server: %s", jdump(job));
    /* job.json holds the 17 digits that the API's replies round */
    snprintf(path, sizeof path, "%s/jobs/%s/job.json", d1, happy_id);
    json_t *fp32 = json_load_file(path, 0, NULL);
    snprintf(path, sizeof path, "%s/jobs/%s/job.json", d2, id);
    json_t *bf16 = json_load_file(path, 0, NULL);
    json_t *m1 = json_object_get(fp32, "metrics"), *m2 = json_object_get(bf16, "metrics");
    CHECKF(fp32 && bf16 && json_is_number(json_object_get(m2, "train_loss")) &&
               json_equal(json_object_get(m1, "train_loss"), json_object_get(m2, "train_loss")) &&
               json_equal(json_object_get(m1, "eval_top1"), json_object_get(m2, "eval_top1")),
           "the job trained on the bf16 server differs from the fp32 server's: %s vs %s",
           jdump(m2), jdump(m1));
    json_decref(fp32);
    json_decref(bf16);
    json_decref(job);
    char img[600];
    snprintf(img, sizeof img, "%s/datasets/fm/test/%s/40.png", d2, fm_names[0]);
    size_t len;
    uint8_t *bytes = serve_read_file(img, &len);
    char *b64 = bytes ? serve_base64(bytes, len) : NULL;
    VIT_ASSERT(b64);
    json_t *req = json_pack("{sssssi}", "image", b64, "task", "fm-h", "top_k", 3);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    serve_resp r;
    serve_request(&S2, h, &(serve_req){.path = "/v1/classify", .content_type = "application/json",
                                       .body = body, .len = strlen(body)},
                  &r);
    json_t *res = serve_check_ok("classify with the task trained on the bf16 server", &r);
    CHECKF(res && json_array_size(json_object_get(res, "labels")) == 3,
           "classify on the bf16 server: %s", jdump(res));
    json_decref(res);
    serve_resp_free(&r);
    free(body);
    free(b64);
    free(bytes);
    /* the job's fp32 copy is read from disk: a config.json changed since the
     * start (here the normalisation, the weights untouched) is another model */
    snprintf(file, sizeof file, "%s/config.json", model);
    json_t *cfg = json_load_file(file, 0, NULL);
    json_t *mean = json_object_get(json_object_get(cfg, "pretrained_cfg"), "mean");
    VIT_ASSERT(json_array_size(mean) == 3 && json_array_set_new(mean, 0, json_real(0.2)) == 0 &&
               json_dump_file(cfg, file, 0) == 0);
    json_decref(cfg);
    job = ft_create("POST fm-h2 (config.json changed)", &S2,
                    json_pack("{sssssisi}", "task", "fm-h2", "train", "fm/train", "epochs", 1,
                              "batch_size", 16),
                    id);
    json_decref(job);
    job = ft_wait(&S2, id, "final", 0, WAIT_S);
    json_t *e = json_object_get(job, "error");
    CHECKF(strcmp(jstr(json_object_get(job, "status")), "failed") == 0 &&
               strcmp(jstr(json_object_get(e, "code")), "training_failed") == 0 &&
               strstr(jstr(json_object_get(e, "message")), "changed on disk"),
           "a job after config.json changed: %s", jdump(job));
    json_decref(job);
    int st = serve_stop(&S2, SIGTERM, 60000);
    CHECKF(st == 0, "the bf16 server after SIGTERM: exit %d", st);
    serve_rmtree(d2);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_ALL);
    h = curl_easy_init();
    VIT_ASSERT(h);
    VIT_ASSERT(fm_source_load(&src));
    VIT_ASSERT(serve_tmpdir("ft", d1, sizeof d1));
    VIT_ASSERT(serve_tmpdir("ftout", outside, sizeof outside));
    char set[512];
    snprintf(set, sizeof set, "%s/set", outside);
    VIT_ASSERT(fm_write_folder(&src, &(fm_folder_spec){.dir = set, .classes = fm_classes,
                                                      .names = fm_names, .nclasses = 3,
                                                      .per_class = 10}));
    write_main_sets(d1);
    char existing[512];
    snprintf(existing, sizeof existing, "%s/tasks/existing.safetensors", d1);
    VIT_ASSERT(serve_model());
    VIT_ASSERT(serve_make_task(serve_model(), existing, 3, "old", 3));

    double t0 = serve_now_ms();
    if (serve_start(&S1, d1, NULL, s1_flags)) {
        if (!skipped("validation"))
            test_validation();
        if (!skipped("happy")) {
            test_happy();
            if (!skipped("events"))
                test_events();
        }
        if (!skipped("live"))
            test_live();
        if (!skipped("failed"))
            test_failed();
        if (!skipped("cancel"))
            test_cancel();
        if (!skipped("list"))
            test_list();
        if (!skipped("restart"))
            test_restart();
        int st = serve_stop(&S1, SIGTERM, 60000);
        CHECKF(st == 0, "the server after SIGTERM: exit %d", st);
        if (!skipped("tamper") && !skipped("happy"))
            test_tamper();
        if (!skipped("bf16") && !skipped("happy"))
            test_bf16();
    } else {
        CHECKF(0, "the server did not start");
    }
    if (!skipped("crash"))
        test_crash();
    fprintf(stderr, "the test took %.1f s\n", (serve_now_ms() - t0) / 1e3);

    if (watch_fd >= 0)
        close(watch_fd);
    json_decref(happy_events);
    fm_source_free(&src);
    serve_model_free();
    curl_easy_cleanup(h);
    curl_global_cleanup();
    serve_rmtree(d1);
    serve_rmtree(outside);
    int hf = serve_harness_failures();
    return check_result() || hf;
}
