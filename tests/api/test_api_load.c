/*
 * test_api_load.c - `vitfit serve` under load: many clients, replaced and
 * deleted tasks, overload, a thousand tasks in a small memory bound, and
 * SIGTERM with requests in flight.  Every reply is checked against
 * `vitfit classify --json` for its image and task.
 *
 *  a. Concurrency: CLIENTS threads send REQUESTS requests (JSON single
 *     images, "images", "tasks", raw bodies) across five tasks; after a
 *     third have completed the main thread replaces task "repl" (PUT with
 *     other weights and labels) and deletes task "del".  A "repl" reply
 *     must equal the old or the new reference (the new one for a request
 *     sent after the PUT returned), a "del" request may only fail with 404
 *     task_not_found (and must, when sent after the DELETE returned);
 *     nothing else may fail.
 *  b. Overload: --queue-capacity 2, one single-threaded worker, 16 clients
 *     each sending 2-image requests: some get 429 overloaded with a
 *     Retry-After, each within 5 s (a hang bound, not a benchmark), the
 *     rest are correct 200s; nothing else; afterwards a request is answered
 *     correctly and /metrics counts the rejections.
 *  c. 1000 tasks (10 distinct weight sets, copied) with --task-memory-mb
 *     set to hold about 50 of them (the per-task size from GET
 *     /v1/tasks/{name} on a first server): each task classified once and
 *     checked, the resident bytes in /metrics never over the bound when
 *     sampled, evictions counted, evicted tasks reload correctly.
 *  d. SIGTERM while 8 requests wait on a slow URL: all 8 complete with
 *     correct 200s and the server exits 0.  With a drain timeout shorter
 *     than the wait, they are answered 503 instead and it still exits 0.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "loopback_http.h"
#include "serve_harness.h"
#include "test_util.h"

#define NIMG 4
static const char *const image_rel[NIMG] = {
    "models/fashion-vit-tiny/samples/0_ankle_boot.png",
    "models/fashion-vit-tiny/samples/1_pullover.png",
    "models/fashion-vit-tiny/samples/9_sneaker.png",
    "tests/data/images/chelsea.png",
};
static char image_path[NIMG][1024];
static uint8_t *image_data[NIMG];
static size_t image_len[NIMG];
static char *image_b64[NIMG];

/* ---- helpers ------------------------------------------------------------ */

static const char *jstr(const json_t *j)
{
    return json_is_string(j) ? json_string_value(j) : "";
}

/* Sum of every sample of metric `name` (exact family name, any labels) in
 * a Prometheus text body; -1 when there is none. */
static double metric_value(const char *body, const char *name)
{
    size_t n = strlen(name);
    double sum = -1;
    for (const char *s = body; s && *s;) {
        const char *eol = strchr(s, '\n');
        if (strncmp(s, name, n) == 0 && (s[n] == ' ' || s[n] == '{')) {
            const char *v = s[n] == '{' ? strchr(s + n, '}') : s + n;
            if (v && (!eol || v < eol)) {
                v += *v == '}';
                double x = strtod(v, NULL);
                sum = (sum < 0 ? 0 : sum) + x;
            }
        }
        s = eol ? eol + 1 : s + strlen(s);
    }
    return sum;
}

/* GET /metrics; the body (caller frees) or NULL. */
static char *get_metrics(const serve_proc *p, CURL *h)
{
    serve_resp r;
    serve_request(p, h, &(serve_req){.path = "/metrics"}, &r);
    char *body = r.status == 200 ? r.body : NULL;
    if (body)
        r.body = NULL;
    else
        fprintf(stderr, "GET /metrics: %ld\n", r.status);
    serve_resp_free(&r);
    return body;
}

/* POST of a JSON object (decref'd here) to /v1/classify. */
static void post_json(const serve_proc *p, CURL *h, json_t *j, long timeout_ms, serve_resp *r)
{
    char *body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    VIT_ASSERT(body);
    serve_request(p, h, &(serve_req){.path = "/v1/classify", .content_type = "application/json",
                                     .body = body, .len = strlen(body), .timeout_ms = timeout_ms},
                  r);
    free(body);
}

static long put_file(const serve_proc *p, CURL *h, const char *name, const char *file)
{
    size_t n;
    uint8_t *data = serve_read_file(file, &n);
    VIT_ASSERT(data);
    char path[128];
    snprintf(path, sizeof path, "/v1/tasks/%s", name);
    serve_resp r;
    serve_request(p, h, &(serve_req){.method = "PUT", .path = path,
                                     .content_type = "application/octet-stream", .body = data,
                                     .len = n},
                  &r);
    long st = r.status;
    if (st != 200 && st != 201)
        fprintf(stderr, "PUT %s: %ld %s\n", name, st, r.body);
    serve_resp_free(&r);
    free(data);
    return st;
}

/* The error code of a reply ("" when none). */
static void error_code(const serve_resp *r, char *buf, size_t len)
{
    json_t *j = serve_json(r);
    snprintf(buf, len, "%s", jstr(json_object_get(json_object_get(j, "error"), "code")));
    json_decref(j);
}

/* ---- a. concurrency ------------------------------------------------------ */

#define CLIENTS 12
#define REQUESTS 300
#define NTASK 5 /* t0 t1 t2 repl del */
static const char *const names[NTASK] = {"t0", "t1", "t2", "repl", "del"};
static const int classes[NTASK] = {10, 10, 4, 10, 10};
static serve_ref refs[NTASK][NIMG], repl_v2[NIMG];

typedef struct load_state {
    const serve_proc *p;
    atomic_int next;        /* next request number */
    atomic_int done;        /* requests completed */
    atomic_int put_done;    /* the replacing PUT returned */
    atomic_int delete_done; /* the DELETE returned */
    atomic_int failures;
    atomic_int repl_old, repl_new, del_ok, del_404, images;
} load_state;

/* Records a failure (printed for the first 20). */
static void load_fail(load_state *st, int n, const char *fmt, const char *a, const char *b)
{
    int k = atomic_fetch_add(&st->failures, 1);
    if (k < 20) {
        fprintf(stderr, "request %d: ", n);
        fprintf(stderr, fmt, a, b);
        fputc('\n', stderr);
    }
}

/* Checks one result for task index t, image i; put_before / delete_before:
 * the PUT / DELETE had returned before the request was sent. */
static void load_check_result(load_state *st, int n, const json_t *got, int t, int i,
                              bool put_before)
{
    char why[256], why2[256];
    atomic_fetch_add(&st->images, 1);
    if (t == 3) {
        bool old = !put_before && serve_result_matches(got, names[t], &refs[t][i], 10, why,
                                                       sizeof why);
        bool now = serve_result_matches(got, names[t], &repl_v2[i], 10, why2, sizeof why2);
        if (old)
            atomic_fetch_add(&st->repl_old, 1);
        else if (now)
            atomic_fetch_add(&st->repl_new, 1);
        else
            load_fail(st, n, "repl: neither version: %s / %s", put_before ? "(sent after the PUT)"
                                                                          : why, why2);
        return;
    }
    if (t == 4)
        atomic_fetch_add(&st->del_ok, 1);
    if (!serve_result_matches(got, names[t], &refs[t][i], 10, why, sizeof why))
        load_fail(st, n, "task %s: %s", names[t], why);
}

static void *load_client(void *arg)
{
    load_state *st = arg;
    CURL *h = curl_easy_init();
    VIT_ASSERT(h);
    for (int n; (n = atomic_fetch_add(&st->next, 1)) < REQUESTS;) {
        bool put_before = atomic_load(&st->put_done), delete_before = atomic_load(&st->delete_done);
        int t = n % NTASK, i = (n / NTASK) % NIMG, form = (n / 7) % 4;
        serve_resp r;
        /* form 0/1: JSON single; 2: raw body; 3: "tasks" of two (t and t0) or "images" */
        int tasks_form = form == 3 && t != 0 && n % 2;
        int images_form = form == 3 && !tasks_form;
        if (form == 2) {
            char path[96];
            snprintf(path, sizeof path, "/v1/classify?task=%s&top_k=10", names[t]);
            serve_request(st->p, h, &(serve_req){.path = path, .content_type = "image/png",
                                                 .body = image_data[i], .len = image_len[i]},
                          &r);
        } else if (tasks_form) {
            post_json(st->p, h, json_pack("{sss[ss]si}", "image", image_b64[i], "tasks", names[t],
                                          "t0", "top_k", 10),
                      0, &r);
        } else if (images_form) {
            post_json(st->p, h, json_pack("{s[ss]sssi}", "images", image_b64[i],
                                          image_b64[(i + 1) % NIMG], "task", names[t], "top_k", 10),
                      0, &r);
        } else {
            post_json(st->p, h, json_pack("{sssssi}", "image", image_b64[i], "task", names[t],
                                          "top_k", 10),
                      0, &r);
        }
        char code[64];
        error_code(&r, code, sizeof code);
        if (t == 4 && r.status == 404 && strcmp(code, "task_not_found") == 0) {
            atomic_fetch_add(&st->del_404, 1);
        } else if (r.status != 200) {
            char what[96];
            snprintf(what, sizeof what, "%ld %s (curl: %s)", r.status, code,
                     curl_easy_strerror(r.cc));
            load_fail(st, n, "task %s: %s", names[t], what);
        } else {
            json_t *j = serve_json(&r);
            if (t == 4 && delete_before)
                load_fail(st, n, "task %s answered %s after its DELETE", names[t], "200");
            if (tasks_form) {
                json_t *res = json_object_get(j, "results");
                if (json_array_size(res) != 2)
                    load_fail(st, n, "tasks form: %s%s", "not 2 results", "");
                else {
                    load_check_result(st, n, json_array_get(res, 0), t, i, put_before);
                    load_check_result(st, n, json_array_get(res, 1), 0, i, put_before);
                }
            } else if (images_form) {
                json_t *res = json_object_get(j, "results");
                if (json_array_size(res) != 2)
                    load_fail(st, n, "images form: %s%s", "not 2 results", "");
                else {
                    load_check_result(st, n, json_array_get(res, 0), t, i, put_before);
                    load_check_result(st, n, json_array_get(res, 1), t, (i + 1) % NIMG,
                                      put_before);
                }
            } else {
                load_check_result(st, n, j, t, i, put_before);
            }
            json_decref(j);
        }
        serve_resp_free(&r);
        atomic_fetch_add(&st->done, 1);
    }
    curl_easy_cleanup(h);
    return NULL;
}

static void test_concurrency(const char *data_dir, const char *scratch)
{
    fprintf(stderr, "== a. concurrency: %d requests from %d clients\n", REQUESTS, CLIENTS);
    const char *paths[NIMG];
    for (int i = 0; i < NIMG; i++)
        paths[i] = image_path[i];
    char files[NTASK][512], v2[512];
    for (int t = 0; t < NTASK; t++) {
        snprintf(files[t], sizeof files[t], "%s/tasks/%s.safetensors", data_dir, names[t]);
        VIT_ASSERT(serve_make_task(serve_model(), files[t], classes[t], names[t],
                                   100 + (uint64_t)t));
        VIT_ASSERT(serve_reference(files[t], paths, NIMG, refs[t]));
    }
    snprintf(v2, sizeof v2, "%s/repl-v2.safetensors", scratch);
    VIT_ASSERT(serve_make_task(serve_model(), v2, 10, "replnew", 777));
    VIT_ASSERT(serve_reference(v2, paths, NIMG, repl_v2));

    serve_proc p;
    const char *extra[] = {"--workers", "2", "--threads-per-worker", "1", "--max-batch", "8",
                           "--max-batch-delay-ms", "2", "--queue-capacity", "512", NULL};
    if (!serve_start(&p, data_dir, "load-key", extra)) {
        CHECKF(false, "the server did not start");
        return;
    }
    load_state st = {.p = &p};
    pthread_t th[CLIENTS];
    double t0 = serve_now_ms();
    for (int c = 0; c < CLIENTS; c++)
        VIT_ASSERT(pthread_create(&th[c], NULL, load_client, &st) == 0);
    CURL *h = curl_easy_init();
    VIT_ASSERT(h);
    /* a third done, then replace and delete (bounded: 5 min) */
    while (atomic_load(&st.done) < REQUESTS / 3 && serve_now_ms() - t0 < 300000)
        usleep(2000);
    long put = put_file(&p, h, "repl", v2);
    atomic_store(&st.put_done, 1);
    serve_resp r;
    serve_request(&p, h, &(serve_req){.method = "DELETE", .path = "/v1/tasks/del"}, &r);
    atomic_store(&st.delete_done, 1);
    int done_at_swap = atomic_load(&st.done);
    CHECKF(put == 200, "PUT replacing repl: %ld", put);
    CHECKF(r.status == 200, "DELETE del: %ld %s", r.status, r.body);
    serve_resp_free(&r);
    for (int c = 0; c < CLIENTS; c++)
        pthread_join(th[c], NULL);
    double secs = (serve_now_ms() - t0) / 1e3;
    fprintf(stderr, "  %d requests (%d images) in %.1f s; swap after %d; repl old %d new %d; "
                    "del ok %d, 404 %d; %d failures\n",
            REQUESTS, atomic_load(&st.images), secs, done_at_swap, atomic_load(&st.repl_old),
            atomic_load(&st.repl_new), atomic_load(&st.del_ok), atomic_load(&st.del_404),
            atomic_load(&st.failures));
    CHECKF(atomic_load(&st.failures) == 0, "%d requests failed", atomic_load(&st.failures));
    CHECKF(atomic_load(&st.done) == REQUESTS, "%d of %d requests done", atomic_load(&st.done),
           REQUESTS);
    CHECKF(atomic_load(&st.repl_old) > 0 && atomic_load(&st.repl_new) > 0,
           "repl replies: %d old, %d new (want both versions seen)", atomic_load(&st.repl_old),
           atomic_load(&st.repl_new));
    CHECKF(atomic_load(&st.del_ok) > 0 && atomic_load(&st.del_404) > 0,
           "del replies: %d ok, %d 404 (want both)", atomic_load(&st.del_ok),
           atomic_load(&st.del_404));
    /* the swap is on disk and in the listing */
    serve_request(&p, h, &(serve_req){.path = "/v1/tasks"}, &r);
    json_t *j = serve_check_ok("GET /v1/tasks after the load", &r);
    json_t *list = json_object_get(j, "tasks");
    CHECKF(json_array_size(list) == 4, "after the load: %s", r.body);
    json_decref(j);
    serve_resp_free(&r);
    char *m = get_metrics(&p, h);
    double imgs = m ? metric_value(m, "vitfit_images_total") : -1;
    CHECKF(imgs >= atomic_load(&st.images), "vitfit_images_total %.0f < %d images answered", imgs,
           atomic_load(&st.images));
    double batches = m ? metric_value(m, "vitfit_batch_size_count") : -1,
           rows = m ? metric_value(m, "vitfit_batch_size_sum") : -1;
    fprintf(stderr, "  batches %.0f, rows %.0f (mean batch %.2f)\n", batches, rows,
            batches > 0 ? rows / batches : 0);
    free(m);
    curl_easy_cleanup(h);
    int ex = serve_stop(&p, SIGTERM, 60000);
    CHECKF(ex == 0, "concurrency server: exit %d", ex);
}

/* ---- b. overload --------------------------------------------------------- */

#define OVER_CLIENTS 16
#define OVER_EACH 8

typedef struct over_state {
    const serve_proc *p;
    atomic_int ok, rejected, other, bad_retry, slow_429;
    _Atomic double max_429_s;
} over_state;

static void *over_client(void *arg)
{
    over_state *st = arg;
    CURL *h = curl_easy_init();
    VIT_ASSERT(h);
    for (int k = 0; k < OVER_EACH; k++) {
        serve_resp r;
        post_json(st->p, h, json_pack("{s[ss]sssi}", "images", image_b64[0], image_b64[3], "task",
                                      "t1", "top_k", 10),
                  60000, &r);
        char code[64], retry[32];
        error_code(&r, code, sizeof code);
        if (r.status == 200) {
            json_t *j = serve_json(&r);
            json_t *res = json_object_get(j, "results");
            char why[256] = "not 2 results";
            bool good = json_array_size(res) == 2 &&
                        serve_result_matches(json_array_get(res, 0), "t1", &refs[1][0], 10, why,
                                             sizeof why) &&
                        serve_result_matches(json_array_get(res, 1), "t1", &refs[1][3], 10, why,
                                             sizeof why);
            if (good) {
                atomic_fetch_add(&st->ok, 1);
            } else {
                fprintf(stderr, "overload: a wrong 200: %s\n", why);
                atomic_fetch_add(&st->other, 1);
            }
            json_decref(j);
        } else if (r.status == 429 && strcmp(code, "overloaded") == 0) {
            atomic_fetch_add(&st->rejected, 1);
            const char *ra = serve_header(&r, "Retry-After", retry, sizeof retry);
            if (!ra || atoi(ra) < 1)
                atomic_fetch_add(&st->bad_retry, 1);
            if (r.seconds >= 5.0)
                atomic_fetch_add(&st->slow_429, 1);
            double m = atomic_load(&st->max_429_s);
            while (r.seconds > m && !atomic_compare_exchange_weak(&st->max_429_s, &m, r.seconds)) {
            }
        } else {
            fprintf(stderr, "overload: status %ld code \"%s\" (curl: %s): %.200s\n", r.status, code,
                    curl_easy_strerror(r.cc), r.body ? r.body : "");
            atomic_fetch_add(&st->other, 1);
        }
        serve_resp_free(&r);
    }
    curl_easy_cleanup(h);
    return NULL;
}

static void test_overload(const char *data_dir)
{
    fprintf(stderr, "== b. overload: --queue-capacity 2, %d clients x %d requests of 2 images\n",
            OVER_CLIENTS, OVER_EACH);
    serve_proc p;
    const char *extra[] = {"--queue-capacity", "2", "--workers", "1", "--threads-per-worker", "1",
                           "--max-batch", "2", "--max-batch-delay-ms", "0",
                           "--request-timeout-ms", "30000", NULL};
    if (!serve_start(&p, data_dir, NULL, extra)) {
        CHECKF(false, "the server did not start");
        return;
    }
    over_state st = {.p = &p};
    pthread_t th[OVER_CLIENTS];
    double t0 = serve_now_ms();
    for (int c = 0; c < OVER_CLIENTS; c++)
        VIT_ASSERT(pthread_create(&th[c], NULL, over_client, &st) == 0);
    for (int c = 0; c < OVER_CLIENTS; c++)
        pthread_join(th[c], NULL);
    fprintf(stderr, "  %.1f s: %d ok, %d x 429 (slowest %.3f s), %d other\n",
            (serve_now_ms() - t0) / 1e3, atomic_load(&st.ok), atomic_load(&st.rejected),
            atomic_load(&st.max_429_s), atomic_load(&st.other));
    CHECKF(atomic_load(&st.rejected) > 0, "no 429 from a queue of 2 under %d clients",
           OVER_CLIENTS);
    CHECKF(atomic_load(&st.ok) > 0, "no request succeeded");
    CHECKF(atomic_load(&st.other) == 0, "%d replies neither a correct 200 nor a 429 overloaded",
           atomic_load(&st.other));
    CHECKF(atomic_load(&st.bad_retry) == 0, "%d 429s without a Retry-After >= 1",
           atomic_load(&st.bad_retry));
    CHECKF(atomic_load(&st.slow_429) == 0, "%d 429s took 5 s or more", atomic_load(&st.slow_429));
    CHECKF(atomic_load(&st.ok) + atomic_load(&st.rejected) + atomic_load(&st.other) ==
               OVER_CLIENTS * OVER_EACH,
           "replies missing");
    /* still correct afterwards, and the rejections are counted */
    CURL *h = curl_easy_init();
    VIT_ASSERT(h);
    serve_resp r;
    post_json(&p, h, json_pack("{sssssi}", "image", image_b64[2], "task", "t2", "top_k", 10), 0,
              &r);
    json_t *j = serve_check_ok("classify after the overload", &r);
    char why[256];
    CHECKF(j && serve_result_matches(j, "t2", &refs[2][2], 10, why, sizeof why),
           "after the overload: %s", why);
    json_decref(j);
    serve_resp_free(&r);
    /* A request counts as active until libmicrohttpd reports it completed, which may come
     * a moment after its client has read the reply: idle within 2 s, not at once. */
    char *m = NULL;
    double depth = -1, active = -1;
    for (int tries = 0; tries < 20; tries++) {
        free(m);
        m = get_metrics(&p, h);
        depth = m ? metric_value(m, "vitfit_queue_depth") : -1;
        active = m ? metric_value(m, "vitfit_active_requests") : -1;
        if (depth == 0 && active <= 1)
            break;
        usleep(100 * 1000);
    }
    double rej = m ? metric_value(m, "vitfit_rejected_total") : -1;
    CHECKF(rej >= atomic_load(&st.rejected), "vitfit_rejected_total %.0f < %d 429s", rej,
           atomic_load(&st.rejected));
    CHECKF(depth == 0, "vitfit_queue_depth %.0f when idle", depth);
    CHECKF(active <= 1, "vitfit_active_requests %.0f when idle (the /metrics request itself)",
           active);
    free(m);
    curl_easy_cleanup(h);
    int ex = serve_stop(&p, SIGTERM, 60000);
    CHECKF(ex == 0, "overload server: exit %d", ex);
}

/* ---- c. a thousand tasks ------------------------------------------------- */

#define MANY 1000
#define VERSIONS 10
#define MANY_CLIENTS 4
static serve_ref many_refs[VERSIONS][NIMG];

typedef struct many_state {
    const serve_proc *p;
    atomic_int next, failures;
    double bound;            /* bytes */
    atomic_int over_bound;   /* samples of resident bytes over the bound */
    _Atomic double max_resident;
    int offset, count;       /* tasks [offset, offset + count) */
} many_state;

static void *many_client(void *arg)
{
    many_state *st = arg;
    CURL *h = curl_easy_init();
    VIT_ASSERT(h);
    for (int n; (n = atomic_fetch_add(&st->next, 1)) < st->count;) {
        int k = st->offset + n, v = k % VERSIONS, i = k % NIMG;
        char name[32];
        snprintf(name, sizeof name, "task%04d", k);
        serve_resp r;
        post_json(st->p, h, json_pack("{sssssi}", "image", image_b64[i], "task", name, "top_k", 10),
                  0, &r);
        json_t *j = r.status == 200 ? serve_json(&r) : NULL;
        char why[256] = "";
        if (!j || !serve_result_matches(j, name, &many_refs[v][i], 10, why, sizeof why)) {
            if (atomic_fetch_add(&st->failures, 1) < 10)
                fprintf(stderr, "%s: status %ld %s %.200s\n", name, r.status, why,
                        r.body ? r.body : "");
        }
        json_decref(j);
        serve_resp_free(&r);
        if (n % 50 == 0) {
            char *m = get_metrics(st->p, h);
            double res = m ? metric_value(m, "vitfit_task_resident_bytes") : -1;
            if (res < 0 || res > st->bound)
                atomic_fetch_add(&st->over_bound, 1);
            double mx = atomic_load(&st->max_resident);
            while (res > mx && !atomic_compare_exchange_weak(&st->max_resident, &mx, res)) {
            }
            free(m);
        }
    }
    curl_easy_cleanup(h);
    return NULL;
}

/* Classifies tasks [offset, offset + count) from MANY_CLIENTS threads. */
static void many_run(many_state *st, int offset, int count)
{
    st->offset = offset;
    st->count = count;
    atomic_store(&st->next, 0);
    pthread_t th[MANY_CLIENTS];
    for (int c = 0; c < MANY_CLIENTS; c++)
        VIT_ASSERT(pthread_create(&th[c], NULL, many_client, st) == 0);
    for (int c = 0; c < MANY_CLIENTS; c++)
        pthread_join(th[c], NULL);
}

static void test_many_tasks(const char *scratch)
{
    fprintf(stderr, "== c. %d tasks in a small --task-memory-mb\n", MANY);
    char dir[256];
    VIT_ASSERT(serve_tmpdir("many", dir, sizeof dir));
    const char *paths[NIMG];
    for (int i = 0; i < NIMG; i++)
        paths[i] = image_path[i];
    uint8_t *bytes[VERSIONS];
    size_t lens[VERSIONS];
    for (int v = 0; v < VERSIONS; v++) {
        char f[512];
        snprintf(f, sizeof f, "%s/version%d.safetensors", scratch, v);
        VIT_ASSERT(serve_make_task(serve_model(), f, 10, "many", 5000 + (uint64_t)v));
        VIT_ASSERT(serve_reference(f, paths, NIMG, many_refs[v]));
        bytes[v] = serve_read_file(f, &lens[v]);
        VIT_ASSERT(bytes[v]);
    }
    for (int k = 0; k < MANY; k++) {
        char f[512];
        snprintf(f, sizeof f, "%s/tasks/task%04d.safetensors", dir, k);
        VIT_ASSERT(serve_write_file(f, bytes[k % VERSIONS], lens[k % VERSIONS]));
    }
    for (int v = 0; v < VERSIONS; v++)
        free(bytes[v]);

    /* first server: the size of one resident task, and the listing */
    CURL *h = curl_easy_init();
    VIT_ASSERT(h);
    serve_proc p;
    long per_task = -1;
    if (serve_start(&p, dir, NULL, NULL)) {
        serve_resp r;
        post_json(&p, h, json_pack("{ssss}", "image", image_b64[0], "task", "task0000"), 0, &r);
        CHECKF(r.status == 200, "classify task0000: %ld", r.status);
        serve_resp_free(&r);
        serve_request(&p, h, &(serve_req){.path = "/v1/tasks/task0000"}, &r);
        json_t *j = serve_check_ok("GET /v1/tasks/task0000", &r);
        per_task = (long)json_integer_value(json_object_get(j, "resident_bytes"));
        json_decref(j);
        serve_resp_free(&r);
        serve_request(&p, h, &(serve_req){.path = "/v1/tasks"}, &r);
        j = serve_check_ok("GET /v1/tasks (1000)", &r);
        json_t *list = json_object_get(j, "tasks");
        CHECKF(json_array_size(list) == MANY, "listing has %zu tasks", json_array_size(list));
        int sorted = 1;
        for (size_t k = 1; k < json_array_size(list); k++)
            sorted &= strcmp(jstr(json_object_get(json_array_get(list, k - 1), "name")),
                             jstr(json_object_get(json_array_get(list, k), "name"))) < 0;
        CHECKF(sorted, "the listing of 1000 tasks is not sorted by name");
        json_decref(j);
        serve_resp_free(&r);
        int ex = serve_stop(&p, SIGTERM, 60000);
        CHECKF(ex == 0, "first many-task server: exit %d", ex);
    } else {
        CHECKF(false, "the first many-task server did not start");
    }
    CHECKF(per_task > 0, "resident_bytes of a loaded task: %ld", per_task);
    if (per_task <= 0) {
        curl_easy_cleanup(h);
        serve_rmtree(dir);
        return;
    }
    long mb = (50 * per_task + (1L << 20) - 1) >> 20;
    if (mb < 1)
        mb = 1;
    long fits = (mb << 20) / per_task;
    fprintf(stderr, "  a resident task takes %ld bytes: --task-memory-mb %ld holds %ld\n",
            per_task, mb, fits);
    CHECKF(fits < MANY / 2, "the bound holds %ld of %d tasks: the test would not evict", fits,
           MANY);
    char mbs[32];
    snprintf(mbs, sizeof mbs, "%ld", mb);
    const char *extra[] = {"--task-memory-mb", mbs, "--max-batch", "4", NULL};
    if (!serve_start(&p, dir, NULL, extra)) {
        CHECKF(false, "the bounded many-task server did not start");
        curl_easy_cleanup(h);
        serve_rmtree(dir);
        return;
    }
    many_state st = {.p = &p, .bound = (double)(mb << 20)};
    double t0 = serve_now_ms();
    many_run(&st, 0, MANY);
    char *m = get_metrics(&p, h);
    double ev1 = m ? metric_value(m, "vitfit_task_evictions_total") : -1;
    double loads1 = m ? metric_value(m, "vitfit_task_loads_total") : -1;
    free(m);
    many_run(&st, 0, 40); /* the first ones were evicted: they come back */
    fprintf(stderr, "  1040 classifies in %.1f s\n", (serve_now_ms() - t0) / 1e3);
    m = get_metrics(&p, h);
    double ev = m ? metric_value(m, "vitfit_task_evictions_total") : -1,
           loads = m ? metric_value(m, "vitfit_task_loads_total") : -1,
           res = m ? metric_value(m, "vitfit_task_resident_bytes") : -1,
           count = m ? metric_value(m, "vitfit_tasks_resident") : -1;
    free(m);
    fprintf(stderr, "  loads %.0f, evictions %.0f (after the first pass %.0f/%.0f), resident %.0f "
                    "bytes in %.0f tasks (max sampled %.0f, bound %.0f)\n",
            loads, ev, loads1, ev1, res, count, atomic_load(&st.max_resident), st.bound);
    CHECKF(atomic_load(&st.failures) == 0, "%d of 1040 classifies wrong",
           atomic_load(&st.failures));
    CHECKF(ev1 > 0 && ev > ev1, "evictions %.0f then %.0f: want > 0 and growing", ev1, ev);
    CHECKF(loads1 >= MANY && loads >= MANY + 40, "task loads %.0f then %.0f", loads1, loads);
    CHECKF(res >= 0 && res <= st.bound, "vitfit_task_resident_bytes %.0f over the bound %.0f", res,
           st.bound);
    CHECKF(atomic_load(&st.over_bound) == 0, "%d samples of resident bytes over the bound",
           atomic_load(&st.over_bound));
    CHECKF(count >= 1 && count <= fits + 1, "vitfit_tasks_resident %.0f (bound holds %ld)", count,
           fits);
    curl_easy_cleanup(h);
    int ex = serve_stop(&p, SIGTERM, 60000);
    CHECKF(ex == 0, "bounded many-task server: exit %d", ex);
    serve_rmtree(dir);
}

/* ---- d. SIGTERM with requests in flight ------------------------------------ */

#define INFLIGHT 8

typedef struct flight_state {
    const serve_proc *p;
    const char *url;
    atomic_int ok, unavailable, other;
} flight_state;

static void *flight_client(void *arg)
{
    flight_state *st = arg;
    CURL *h = curl_easy_init();
    VIT_ASSERT(h);
    serve_resp r;
    post_json(st->p, h, json_pack("{sssssi}", "image", st->url, "task", "t1", "top_k", 10), 60000,
              &r);
    json_t *j = r.status == 200 ? serve_json(&r) : NULL;
    char why[256] = "", code[64], retry[16];
    error_code(&r, code, sizeof code);
    if (j && serve_result_matches(j, "t1", &refs[1][0], 10, why, sizeof why)) {
        atomic_fetch_add(&st->ok, 1);
    } else if (r.status == 503 && code[0] && serve_header(&r, "Retry-After", retry, sizeof retry)) {
        /* shutting_down once the drain ran out: the client may retry elsewhere */
        atomic_fetch_add(&st->unavailable, 1);
    } else {
        fprintf(stderr, "in flight: status %ld %s (curl: %s) %.200s\n", r.status, why,
                curl_easy_strerror(r.cc), r.body ? r.body : "");
        atomic_fetch_add(&st->other, 1);
    }
    json_decref(j);
    serve_resp_free(&r);
    curl_easy_cleanup(h);
    return NULL;
}

/* Starts a server, sends INFLIGHT URL requests whose origin waits delay_ms,
 * SIGTERMs the server once all have reached the origin, and returns the
 * outcome counts and the exit code. */
static int sigterm_run(const char *data_dir, const char *drain_ms, long delay_ms, int *ok,
                       int *unavailable, int *other)
{
    loopback_http *slow = loopback_http_start(
        &(loopback_http_behaviour){.kind = LOOPBACK_HTTP_BODY, .body = image_data[0],
                                   .body_len = image_len[0], .content_type = "image/png",
                                   .delay_ms = delay_ms},
        AF_INET);
    VIT_ASSERT(slow);
    char url[256];
    loopback_http_url(slow, "/boot.png", url, sizeof url);
    serve_proc p;
    const char *extra[] = {"--allow-private-urls", "--url-timeout-ms", "30000",
                           "--max-concurrent-fetches", "8", "--request-timeout-ms", "60000",
                           "--drain-timeout-ms", drain_ms, NULL};
    if (!serve_start(&p, data_dir, NULL, extra)) {
        loopback_http_stop(slow);
        CHECKF(false, "the server did not start");
        return -1;
    }
    flight_state st = {.p = &p, .url = url};
    pthread_t th[INFLIGHT];
    for (int c = 0; c < INFLIGHT; c++)
        VIT_ASSERT(pthread_create(&th[c], NULL, flight_client, &st) == 0);
    double t0 = serve_now_ms();
    while (loopback_http_requests(slow) < INFLIGHT && serve_now_ms() - t0 < 60000)
        usleep(2000);
    unsigned seen = loopback_http_requests(slow);
    CHECKF(seen == INFLIGHT, "only %u of %d fetches reached the origin", seen, INFLIGHT);
    kill(p.pid, SIGTERM);
    double t_term = serve_now_ms();
    /* a new request now: refused (connection or 503), or served if the
     * signal was not handled yet; never anything else */
    CURL *h = curl_easy_init();
    VIT_ASSERT(h);
    serve_resp r;
    post_json(&p, h, json_pack("{ss}", "image", image_b64[1]), 10000, &r);
    char code[64];
    error_code(&r, code, sizeof code);
    fprintf(stderr, "  a request just after SIGTERM: %ld %s (curl: %s)\n", r.status, code,
            curl_easy_strerror(r.cc));
    CHECKF(r.status == 0 || r.status == 200 || (r.status == 503 && code[0]),
           "a request during the drain: %ld %s", r.status, code);
    serve_resp_free(&r);
    curl_easy_cleanup(h);
    for (int c = 0; c < INFLIGHT; c++)
        pthread_join(th[c], NULL);
    int ex = serve_stop(&p, 0, 90000);
    fprintf(stderr, "  exit %.2f s after SIGTERM\n", (serve_now_ms() - t_term) / 1e3);
    loopback_http_stop(slow);
    *ok = atomic_load(&st.ok);
    *unavailable = atomic_load(&st.unavailable);
    *other = atomic_load(&st.other);
    fprintf(stderr, "  drain %s ms, origin delay %ld ms: %d ok, %d x 503, %d other; exit %d\n",
            drain_ms, delay_ms, *ok, *unavailable, *other, ex);
    return ex;
}

static void test_sigterm(const char *data_dir)
{
    fprintf(stderr, "== d. SIGTERM with %d requests in flight\n", INFLIGHT);
    int ok, unavailable, other;
    int ex = sigterm_run(data_dir, "60000", 1500, &ok, &unavailable, &other);
    CHECKF(ex == 0, "exit %d after SIGTERM", ex);
    CHECKF(ok == INFLIGHT, "%d of %d in-flight requests completed correctly (%d x 503, %d other)",
           ok, INFLIGHT, unavailable, other);
    /* a drain shorter than the wait: answered 503, still a clean exit */
    ex = sigterm_run(data_dir, "300", 4000, &ok, &unavailable, &other);
    CHECKF(ex == 0, "exit %d after SIGTERM with a short drain", ex);
    /* every fetch was held 4 s by the origin and SIGTERM came as the last
     * one arrived: a reply of 200 means the server kept draining past its
     * 300 ms (counts, not timings: a 200 cannot exist before 4 s) */
    CHECKF(other == 0 && ok + unavailable == INFLIGHT,
           "short drain: %d ok, %d x 503, %d other", ok, unavailable, other);
    CHECKF(unavailable == INFLIGHT,
           "short drain: %d of %d requests completed after the 300 ms drain timeout had passed "
           "(they waited 4 s on their URL): want all answered 503",
           ok, INFLIGHT);
}

/* ---- main ------------------------------------------------------------------ */

int main(void)
{
    curl_global_init(CURL_GLOBAL_ALL);
    VIT_ASSERT(serve_model());
    for (int i = 0; i < NIMG; i++) {
        test_path(image_path[i], sizeof image_path[i], image_rel[i]);
        image_data[i] = serve_read_file(image_path[i], &image_len[i]);
        VIT_ASSERT(image_data[i]);
        image_b64[i] = serve_base64(image_data[i], image_len[i]);
        VIT_ASSERT(image_b64[i]);
    }
    char data_dir[256], scratch[256];
    VIT_ASSERT(serve_tmpdir("load", data_dir, sizeof data_dir));
    VIT_ASSERT(serve_tmpdir("load-scratch", scratch, sizeof scratch));
    double t0 = serve_now_ms();
    test_concurrency(data_dir, scratch);
    double t1 = serve_now_ms();
    test_overload(data_dir);
    double t2 = serve_now_ms();
    test_many_tasks(scratch);
    double t3 = serve_now_ms();
    test_sigterm(data_dir);
    double t4 = serve_now_ms();
    fprintf(stderr, "timings: concurrency %.1f s, overload %.1f s, 1000 tasks %.1f s, "
                    "sigterm %.1f s\n",
            (t1 - t0) / 1e3, (t2 - t1) / 1e3, (t3 - t2) / 1e3, (t4 - t3) / 1e3);
    for (int i = 0; i < NIMG; i++) {
        free(image_data[i]);
        free(image_b64[i]);
    }
    serve_model_free();
    curl_global_cleanup();
    serve_rmtree(data_dir);
    serve_rmtree(scratch);
    int hf = serve_harness_failures();
    return check_result() || hf;
}
