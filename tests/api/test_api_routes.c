/*
 * test_api_routes.c - every route, input form and documented error of the
 * real `vitfit serve`, against references from `vitfit classify --json`.
 *
 * Server A (API key, private URLs allowed, a 4 MiB body cap, short URL
 * limits) and server B (no key, private URLs refused, --max-image-pixels
 * 1000, --default-task alpha) run on free loopback ports with tasks made by
 * the engine (alpha: 10 classes, beta: 4, gamma: 10; random heads and bias
 * deltas, so every task answers differently).  Checked:
 *
 *  1. /healthz (no key needed, even a wrong one), /readyz, /metrics (every
 *     documented family), /v1/model (counts and fingerprint computed here).
 *  2. Auth: no key, a wrong key, a key one byte short or long, another
 *     scheme: 401 unauthorized with WWW-Authenticate; the right key passes.
 *  3. X-Request-Id: an acceptable one echoed, a bad or too long one
 *     replaced, a new one on every reply (errors too), distinct.
 *  4. Routing: unknown route 404 not_found; wrong method 405 with Allow;
 *     HEAD of each GET route 200 without a body.
 *  5. Tasks: list (sorted, bytes = file size), get, PUT new (201) and
 *     replace (200) - each live for the next classify, equal to the CLI with
 *     that file -, PUT of garbage (400) and of a task made for another
 *     backbone (422 task_mismatch) leave the old version live, bad names
 *     (422 invalid_task_name), DELETE (200, then 404 task_not_found).
 *  6. Classify in every form - JSON with bare base64, data URI and URL;
 *     "images"; "tasks"; multipart; raw image bodies - each reply equal to
 *     `vitfit classify --json` for that image and task (labels equal, scores
 *     within 1e-6), top_k honoured and clamped to K, "task": null for the
 *     backbone's head; "tasks" equal to separate calls; default_task.
 *  7. Every classify error: bad JSON, wrong types, unknown keys, unknown task,
 *     bad task name, invalid base64, a non-image body, an unsupported image,
 *     a truncated JPEG/PNG, an image over the pixel limit (the hard one and a
 *     configured one), a body over the cap (a 300 MiB upload answered 413
 *     after at most a few MB were sent), unsupported media types, a broken
 *     form, bad URLs, a forbidden URL (no connection made), a URL that times
 *     out, one that sends too many bytes, too many redirects, a non-2xx
 *     origin, a redirect to file://.
 *  8. One JSON log line per request with the client's id.
 *  9. Config errors exit 2 naming the key; --help lists every key of
 *     config/vitfit.example.json; SIGTERM and SIGINT exit 0.
 */
#include <ctype.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "loopback_http.h"
#include "serve_harness.h"
#include "task.h"
#include "test_util.h"

#define API_KEY "s3cret-Key_0123456789"

/* The images every classify check uses; refs[t][i] is the CLI's answer for
 * task t (0: the backbone's head, 1..3: alpha, beta, gamma) and image i. */
#define NTASK 4
static const char *const task_names[NTASK] = {NULL, "alpha", "beta", "gamma"};
static const int task_classes[NTASK] = {10, 10, 4, 10};

static char data_dir[256], scratch[256];
static serve_images img;
static char task_file[NTASK][512]; /* [0] unused */
static serve_ref refs[NTASK][SERVE_NIMG];

static serve_proc A, B;
static CURL *h;

/* ---- helpers ------------------------------------------------------------ */

/* The value of a JSON string, "" for anything else. */
static const char *jstr(const json_t *j)
{
    return json_is_string(j) ? json_string_value(j) : "";
}

/* POSTs the JSON object j (decref'd here) to /v1/classify on p. */
static void post_json(const serve_proc *p, json_t *j, serve_resp *r)
{
    char *body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    VIT_ASSERT(body);
    serve_request(p, h, &(serve_req){.path = "/v1/classify", .content_type = "application/json",
                                     .body = body, .len = strlen(body)},
                  r);
    free(body);
}

/* POSTs a raw body string as JSON. */
static void post_text(const serve_proc *p, const char *body, serve_resp *r)
{
    serve_request(p, h, &(serve_req){.path = "/v1/classify", .content_type = "application/json",
                                     .body = body, .len = strlen(body)},
                  r);
}

/* Checks that reply object got equals refs[t][i] for top_k entries. */
static void check_reply(const char *what, const json_t *got, int t, int i, int top_k)
{
    char why[256];
    bool ok = serve_result_matches(got, task_names[t], &refs[t][i], top_k, why, sizeof why);
    CHECKF(ok, "%s: %s", what, why);
}

/* Classifies image i with task t (JSON, bare base64, top_k) and checks the
 * single reply against ref (refs[t][i] when ref is NULL). */
static void check_classify(const char *what, const serve_proc *p, int t, int i, int top_k,
                           const serve_ref *ref)
{
    json_t *req = json_pack("{ss}", "image", img.b64[i]);
    if (task_names[t])
        json_object_set_new(req, "task", json_string(task_names[t]));
    if (top_k)
        json_object_set_new(req, "top_k", json_integer(top_k));
    serve_resp r;
    post_json(p, req, &r);
    json_t *j = serve_check_ok(what, &r);
    if (j) {
        char why[256];
        bool ok = serve_result_matches(j, task_names[t], ref ? ref : &refs[t][i],
                                       top_k ? top_k : 5, why, sizeof why);
        CHECKF(ok, "%s: %s", what, why);
    }
    json_decref(j);
    serve_resp_free(&r);
}

/* Classifies image i with task `name` (bare base64) and checks the reply
 * against ref. */
static void check_classify_named(const char *what, const char *name, int i, const serve_ref *ref)
{
    serve_resp r;
    post_json(&A, json_pack("{sssssi}", "image", img.b64[i], "task", name, "top_k", 10), &r);
    json_t *j = serve_check_ok(what, &r);
    if (j) {
        char why[256];
        CHECKF(serve_result_matches(j, name, ref, 10, why, sizeof why), "%s: %s", what, why);
    }
    json_decref(j);
    serve_resp_free(&r);
}

/* A simple request; checks the error it answers. */
static void expect_error(const char *what, const serve_proc *p, const serve_req *q, int status,
                         const char *codes)
{
    serve_resp r;
    serve_request(p, h, q, &r);
    serve_check_error(what, &r, status, codes);
    serve_resp_free(&r);
}

/* Does the comma-separated Allow value list method? */
static bool allow_has(const char *allow, const char *method)
{
    size_t n = strlen(method);
    for (const char *s = allow; s && *s;) {
        while (*s == ' ' || *s == ',')
            s++;
        size_t ln = strcspn(s, ", ");
        if (ln == n && strncmp(s, method, n) == 0)
            return true;
        s += ln;
    }
    return false;
}

/* Is s a request id a server may make or echo: 1-64 of [A-Za-z0-9-_.:/+=]? */
static bool id_acceptable(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("-_.:/+=", *s))
            return false;
    return true;
}

/* ---- 1. operations ------------------------------------------------------ */

static void test_operations(void)
{
    fprintf(stderr, "== operations\n");
    serve_resp r;
    char buf[256];
    /* /healthz needs no key, and a wrong one does not matter */
    const char *auths[] = {"", "Bearer wrong"};
    for (int i = 0; i < 2; i++) {
        serve_request(&A, h, &(serve_req){.path = "/healthz", .auth = auths[i]}, &r);
        json_t *j = serve_check_ok("GET /healthz", &r);
        CHECKF(strcmp(jstr(json_object_get(j, "status")), "ok") == 0, "/healthz body %s", r.body);
        CHECKF(serve_header(&r, "X-Request-Id", buf, sizeof buf) && id_acceptable(buf),
               "/healthz: no acceptable X-Request-Id");
        json_decref(j);
        serve_resp_free(&r);
    }
    serve_request(&A, h, &(serve_req){.path = "/readyz", .auth = ""}, &r);
    json_t *j = serve_check_ok("GET /readyz (no key)", &r);
    CHECKF(j && strcmp(jstr(json_object_get(j, "status")), "ready") == 0,
           "/readyz body %s", r.body);
    json_decref(j);
    serve_resp_free(&r);

    /* one classify first, so the per-task families have a sample */
    check_classify("classify before /metrics", &A, 1, 0, 3, NULL);
    serve_request(&A, h, &(serve_req){.path = "/metrics"}, &r);
    CHECKF(r.status == 200, "/metrics: status %ld", r.status);
    CHECKF(serve_header(&r, "Content-Type", buf, sizeof buf) && strncmp(buf, "text/plain", 10) == 0,
           "/metrics Content-Type %s", buf);
    static const char *const families[] = {
        "vitfit_http_requests_total", "vitfit_http_request_duration_seconds_bucket",
        "vitfit_http_request_duration_seconds_sum", "vitfit_http_request_duration_seconds_count",
        "vitfit_batch_size_bucket", "vitfit_images_total", "vitfit_rejected_total",
        "vitfit_url_fetches_total", "vitfit_worker_busy_seconds_total", "vitfit_queue_depth",
        "vitfit_active_requests", "vitfit_ready", "vitfit_task_loads_total",
        "vitfit_task_evictions_total", "vitfit_task_resident_bytes", "vitfit_tasks_resident",
    };
    for (size_t i = 0; i < sizeof families / sizeof *families; i++) {
        char type_line[160];
        const char *fam = families[i];
        CHECKF(r.body && strstr(r.body, fam), "/metrics lacks %s", fam);
        /* every family has a # TYPE line (histogram series under the base name) */
        char base[128];
        snprintf(base, sizeof base, "%s", fam);
        char *suffix = strstr(base, "_bucket");
        if (!suffix)
            suffix = strstr(base, "_sum");
        if (!suffix)
            suffix = strstr(base, "_count");
        if (suffix)
            *suffix = 0;
        snprintf(type_line, sizeof type_line, "# TYPE %s ", base);
        CHECKF(r.body && strstr(r.body, type_line), "/metrics lacks \"%s\"", type_line);
    }
    CHECKF(r.body && strstr(r.body, "vitfit_ready 1"), "/metrics: vitfit_ready is not 1");
    CHECKF(r.body && strstr(r.body, "vitfit_images_total{task=\"alpha\"}"),
           "/metrics: no images_total for task alpha");
    serve_resp_free(&r);
    expect_error("GET /metrics without the key", &A, &(serve_req){.path = "/metrics", .auth = ""},
                 401, "unauthorized");

    serve_request(&A, h, &(serve_req){.path = "/v1/model"}, &r);
    j = serve_check_ok("GET /v1/model", &r);
    const vit_model *m = serve_model();
    char fp[65];
    vit_error err = {0};
    VIT_ASSERT(vit_model_fingerprint(m, fp, &err) == VIT_OK);
    if (j) {
        CHECKF(json_is_string(json_object_get(j, "architecture")), "/v1/model: no architecture");
        CHECKF(json_is_string(json_object_get(j, "layout")), "/v1/model: no layout");
        CHECKF(json_integer_value(json_object_get(j, "image_size")) == 32,
               "/v1/model: image_size %s", r.body);
        CHECKF(json_integer_value(json_object_get(j, "num_classes")) == 10,
               "/v1/model: num_classes");
        CHECKF(json_integer_value(json_object_get(j, "parameters")) ==
                   (json_int_t)vit_model_param_count(m),
               "/v1/model: parameters %" JSON_INTEGER_FORMAT ", want %zu",
               json_integer_value(json_object_get(j, "parameters")), vit_model_param_count(m));
        CHECKF(json_integer_value(json_object_get(j, "bias_parameters")) ==
                   (json_int_t)vit_model_bias_count(m),
               "/v1/model: bias_parameters");
        CHECKF(json_is_object(json_object_get(j, "preprocessing")), "/v1/model: preprocessing");
        CHECKF(strcmp(jstr(json_object_get(j, "fingerprint")), fp) == 0,
               "/v1/model: fingerprint %s, want %s",
               json_string_value(json_object_get(j, "fingerprint")), fp);
        CHECKF(json_is_boolean(json_object_get(j, "packed")), "/v1/model: packed");
        CHECKF(strcmp(jstr(json_object_get(j, "precision")), "fp32") == 0,
               "/v1/model: precision %s", jstr(json_object_get(j, "precision")));
        json_t *labels = json_object_get(j, "labels");
        CHECKF(json_array_size(labels) == 10, "/v1/model: labels");
        for (int i = 0; i < 10 && json_array_size(labels) == 10; i++)
            CHECKF(strcmp(jstr(json_array_get(labels, (size_t)i)),
                          m->labels[i]) == 0,
                   "/v1/model: labels[%d]", i);
    }
    json_decref(j);
    serve_resp_free(&r);
}

/* ---- 2. auth ------------------------------------------------------------ */

static void test_auth(void)
{
    fprintf(stderr, "== auth\n");
    static const char *const bad[] = {
        "",                                 /* none */
        "Bearer wrong",                     /* wrong */
        ("Bearer " API_KEY "x"),            /* one byte long */
        "Bearer s3cret-Key_012345678",      /* one byte short */
        ("Basic " API_KEY),                 /* another scheme */
        API_KEY,                            /* no scheme */
        "Bearer",                           /* nothing after */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char what[128];
        snprintf(what, sizeof what, "GET /v1/tasks, Authorization \"%.30s\"", bad[i]);
        serve_resp r;
        serve_request(&A, h, &(serve_req){.path = "/v1/tasks", .auth = bad[i]}, &r);
        serve_check_error(what, &r, 401, "unauthorized");
        char www[128];
        CHECKF(serve_header(&r, "WWW-Authenticate", www, sizeof www) && strstr(www, "Bearer"),
               "%s: no WWW-Authenticate: Bearer", what);
        serve_resp_free(&r);
    }
    /* a classify is refused before its body matters */
    expect_error("POST /v1/classify without a key", &A,
                 &(serve_req){.path = "/v1/classify", .auth = "", .content_type = "application/json",
                              .body = "{}", .len = 2},
                 401, "unauthorized");
    serve_resp r;
    serve_request(&A, h, &(serve_req){.path = "/v1/tasks"}, &r);
    json_decref(serve_check_ok("GET /v1/tasks with the key", &r));
    serve_resp_free(&r);
    /* server B has no key: everything open */
    serve_request(&B, h, &(serve_req){.path = "/v1/tasks"}, &r);
    json_decref(serve_check_ok("GET /v1/tasks on a server without a key", &r));
    serve_resp_free(&r);
}

/* ---- 3. request ids ----------------------------------------------------- */

static void test_request_ids(void)
{
    fprintf(stderr, "== request ids\n");
    serve_resp r;
    char id[128], id2[128];
    const char *mine = "abc-DEF_1.2:3/4+5=";
    serve_request(&A, h, &(serve_req){.path = "/v1/tasks", .request_id = mine}, &r);
    CHECKF(serve_header(&r, "X-Request-Id", id, sizeof id) && strcmp(id, mine) == 0,
           "client's acceptable id not echoed: %s", serve_header(&r, "X-Request-Id", id, sizeof id));
    serve_resp_free(&r);
    serve_request(&A, h, &(serve_req){.path = "/nowhere", .request_id = mine}, &r);
    CHECKF(r.status == 404 && serve_header(&r, "X-Request-Id", id, sizeof id) &&
               strcmp(id, mine) == 0,
           "id not echoed on a 404");
    serve_resp_free(&r);
    serve_request(&A, h, &(serve_req){.path = "/v1/tasks", .auth = "", .request_id = mine}, &r);
    CHECKF(r.status == 401 && serve_header(&r, "X-Request-Id", id, sizeof id) &&
               strcmp(id, mine) == 0,
           "id not echoed on a 401");
    serve_resp_free(&r);
    char long_id[80];
    memset(long_id, 'a', 65);
    long_id[65] = 0;
    const char *refused[] = {"bad id", long_id, "semi;colon", "quote\"d", "<script>"};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        serve_request(&A, h, &(serve_req){.path = "/healthz", .request_id = refused[i]}, &r);
        bool got = serve_header(&r, "X-Request-Id", id, sizeof id) != NULL;
        CHECKF(got && strcmp(id, refused[i]) != 0 && id_acceptable(id),
               "unacceptable id \"%s\": reply id \"%s\"", refused[i], got ? id : "(none)");
        serve_resp_free(&r);
    }
    memset(long_id, 'b', 64);
    long_id[64] = 0;
    serve_request(&A, h, &(serve_req){.path = "/healthz", .request_id = long_id}, &r);
    CHECKF(serve_header(&r, "X-Request-Id", id, sizeof id) && strcmp(id, long_id) == 0,
           "a 64-byte id not echoed");
    serve_resp_free(&r);
    serve_request(&A, h, &(serve_req){.path = "/healthz"}, &r);
    bool a = serve_header(&r, "X-Request-Id", id, sizeof id) != NULL;
    serve_resp_free(&r);
    serve_request(&A, h, &(serve_req){.path = "/healthz"}, &r);
    bool b = serve_header(&r, "X-Request-Id", id2, sizeof id2) != NULL;
    serve_resp_free(&r);
    CHECKF(a && b && id_acceptable(id) && id_acceptable(id2) && strcmp(id, id2) != 0,
           "two new ids \"%s\" and \"%s\" are not distinct acceptable ids", a ? id : "",
           b ? id2 : "");
}

/* ---- 4. routing --------------------------------------------------------- */

static void test_routing(void)
{
    fprintf(stderr, "== routing\n");
    expect_error("GET /nope", &A, &(serve_req){.path = "/nope"}, 404, "not_found");
    expect_error("GET /v1", &A, &(serve_req){.path = "/v1"}, 404, "not_found");
    expect_error("GET /v1/tasks/alpha/more", &A, &(serve_req){.path = "/v1/tasks/alpha/more"}, 404,
                 "not_found");
    expect_error("GET /v3/classify", &A, &(serve_req){.path = "/v3/classify"}, 404, "not_found");
    struct {
        const char *method, *path, *allow1, *allow2;
    } cases[] = {
        {"GET", "/v1/classify", "POST", NULL},
        {"PUT", "/v1/classify", "POST", NULL},
        {"DELETE", "/healthz", "GET", NULL},
        {"POST", "/readyz", "GET", NULL},
        {"POST", "/metrics", "GET", NULL},
        {"DELETE", "/v1/model", "GET", NULL},
        {"POST", "/v1/tasks", "GET", NULL},
        {"PATCH", "/v1/tasks/alpha", "PUT", "DELETE"},
        {"POST", "/v1/tasks/alpha", "GET", "PUT"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char what[96], allow[128];
        snprintf(what, sizeof what, "%s %s", cases[i].method, cases[i].path);
        serve_resp r;
        serve_request(&A, h, &(serve_req){.method = cases[i].method, .path = cases[i].path}, &r);
        serve_check_error(what, &r, 405, "method_not_allowed");
        bool got = serve_header(&r, "Allow", allow, sizeof allow) != NULL;
        CHECKF(got && allow_has(allow, cases[i].allow1) &&
                   (!cases[i].allow2 || allow_has(allow, cases[i].allow2)) &&
                   !allow_has(allow, cases[i].method),
               "%s: Allow \"%s\"", what, got ? allow : "(none)");
        serve_resp_free(&r);
    }
    /* HEAD: every GET route's status and headers, no body (the harness
     * checks each reply against api/openapi.yaml's HEAD operation) */
    static const char *const heads[] = {"/healthz", "/readyz", "/metrics", "/v1/model",
                                        "/v1/tasks", "/v1/tasks/alpha", "/v1/finetune"};
    for (size_t i = 0; i < sizeof heads / sizeof *heads; i++) {
        serve_resp r;
        char ct[128];
        serve_request(&A, h, &(serve_req){.method = "HEAD", .path = heads[i]}, &r);
        CHECKF(r.status == 200 && r.body_len == 0 &&
                   serve_header(&r, "Content-Type", ct, sizeof ct),
               "HEAD %s: status %ld, %zu body bytes", heads[i], r.status, r.body_len);
        serve_resp_free(&r);
    }
}

/* ---- 5. tasks ----------------------------------------------------------- */

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* PUTs the file at path as task name; returns the status (body in *r). */
static long put_task(const serve_proc *p, const char *name, const void *body, size_t len,
                     serve_resp *r)
{
    char path[160];
    snprintf(path, sizeof path, "/v1/tasks/%s", name);
    serve_request(p, h, &(serve_req){.method = "PUT", .path = path,
                                     .content_type = "application/octet-stream", .body = body,
                                     .len = len},
                  r);
    return r->status;
}

/* Checks a task object as GET /v1/tasks/{name} and PUT answer it. */
static void check_task_object(const char *what, const json_t *j, const char *name, int k,
                              const char *prefix, const char *file)
{
    char fp[65];
    vit_error err = {0};
    VIT_ASSERT(vit_model_fingerprint(serve_model(), fp, &err) == VIT_OK);
    CHECKF(strcmp(jstr(json_object_get(j, "name")), name) == 0, "%s: name",
           what);
    CHECKF(json_integer_value(json_object_get(j, "num_classes")) == k, "%s: num_classes", what);
    json_t *labels = json_object_get(j, "labels");
    CHECKF(json_array_size(labels) == (size_t)k, "%s: %zu labels", what, json_array_size(labels));
    for (int i = 0; i < k && json_array_size(labels) == (size_t)k; i++) {
        char want[64];
        snprintf(want, sizeof want, "%s-%d", prefix, i);
        CHECKF(strcmp(jstr(json_array_get(labels, (size_t)i)), want) == 0,
               "%s: labels[%d]", what, i);
    }
    CHECKF(strcmp(jstr(json_object_get(j, "method")), "bitfit") == 0,
           "%s: method", what);
    CHECKF(strcmp(jstr(json_object_get(j, "base_model")), fp) == 0,
           "%s: base_model", what);
    CHECKF(json_integer_value(json_object_get(j, "bytes")) == file_size(file),
           "%s: bytes %" JSON_INTEGER_FORMAT ", file %ld", what,
           json_integer_value(json_object_get(j, "bytes")), file_size(file));
    CHECKF(json_is_integer(json_object_get(j, "resident_bytes")), "%s: resident_bytes", what);
    json_t *meta = json_object_get(j, "metadata");
    CHECKF(json_is_object(meta), "%s: metadata is not an object", what);
    CHECKF(strcmp(jstr(json_object_get(meta, "purpose")), "api-test") == 0,
           "%s: metadata lacks the file's \"purpose\": \"api-test\"", what);
}

static void test_tasks(void)
{
    fprintf(stderr, "== tasks\n");
    serve_resp r;
    serve_request(&A, h, &(serve_req){.path = "/v1/tasks"}, &r);
    json_t *j = serve_check_ok("GET /v1/tasks", &r);
    json_t *list = json_object_get(j, "tasks");
    CHECKF(json_array_size(list) == 3, "GET /v1/tasks: %zu tasks, want 3: %s",
           json_array_size(list), r.body);
    for (size_t i = 0; i < json_array_size(list) && i < 3; i++) {
        json_t *e = json_array_get(list, i);
        const char *name = json_string_value(json_object_get(e, "name"));
        CHECKF(name && strcmp(name, task_names[i + 1]) == 0, "tasks[%zu] is %s, want %s (sorted)",
               i, name ? name : "?", task_names[i + 1]);
        CHECKF(json_integer_value(json_object_get(e, "bytes")) == file_size(task_file[i + 1]),
               "tasks[%zu].bytes", i);
        CHECKF(json_is_boolean(json_object_get(e, "resident")), "tasks[%zu].resident", i);
        CHECKF(json_is_integer(json_object_get(e, "resident_bytes")), "tasks[%zu].resident_bytes",
               i);
    }
    json_decref(j);
    serve_resp_free(&r);

    serve_request(&A, h, &(serve_req){.path = "/v1/tasks/beta"}, &r);
    j = serve_check_ok("GET /v1/tasks/beta", &r);
    if (j)
        check_task_object("GET /v1/tasks/beta", j, "beta", 4, "beta", task_file[2]);
    json_decref(j);
    serve_resp_free(&r);
    expect_error("GET /v1/tasks/nope", &A, &(serve_req){.path = "/v1/tasks/nope"}, 404,
                 "task_not_found");
    serve_request(&A, h, &(serve_req){.path = "/v1/tasks/BAD%21"}, &r);
    CHECKF(r.status == 404 || r.status == 422, "GET /v1/tasks/BAD!: status %ld", r.status);
    serve_check_error("GET /v1/tasks/BAD%21", &r, (int)r.status,
                      "invalid_task_name|task_not_found");
    serve_resp_free(&r);

    /* PUT new, replace; each live for the next request */
    char v1[512], v2[512], foreign[512], disk[600];
    snprintf(v1, sizeof v1, "%s/delta-v1.safetensors", scratch);
    snprintf(v2, sizeof v2, "%s/delta-v2.safetensors", scratch);
    VIT_ASSERT(serve_make_task(serve_model(), v1, 10, "delta", 41));
    VIT_ASSERT(serve_make_task(serve_model(), v2, 7, "delta2", 42));
    serve_ref ref1, ref2;
    const char *img0[] = {img.path[0]};
    VIT_ASSERT(serve_reference(v1, img0, 1, &ref1) && serve_reference(v2, img0, 1, &ref2));
    size_t n1, n2;
    uint8_t *b1 = serve_read_file(v1, &n1), *b2 = serve_read_file(v2, &n2);
    VIT_ASSERT(b1 && b2);
    snprintf(disk, sizeof disk, "%s/tasks/delta.safetensors", data_dir);

    CHECKF(put_task(&A, "delta", b1, n1, &r) == 201, "PUT new task: status %ld, body %s",
           r.status, r.body);
    j = serve_json(&r);
    if (r.status == 201)
        check_task_object("PUT delta (new)", j, "delta", 10, "delta", v1);
    json_decref(j);
    serve_resp_free(&r);
    CHECKF(file_size(disk) == (long)n1, "PUT: %s has %ld bytes, want %zu", disk, file_size(disk),
           n1);
    check_classify_named("classify with the PUT task", "delta", 0, &ref1);

    CHECKF(put_task(&A, "delta", b2, n2, &r) == 200, "PUT replacing: status %ld, body %s",
           r.status, r.body);
    j = serve_json(&r);
    if (r.status == 200)
        check_task_object("PUT delta (replaced)", j, "delta", 7, "delta2", v2);
    json_decref(j);
    serve_resp_free(&r);
    check_classify_named("classify with the replaced task", "delta", 0, &ref2);

    /* refused PUTs leave the live version alone */
    static const char garbage[] = "this is not a safetensors file at all";
    put_task(&A, "delta", garbage, sizeof garbage - 1, &r);
    serve_check_error("PUT garbage", &r, 400, NULL);
    serve_resp_free(&r);
    uint8_t cut[64];
    memcpy(cut, b2, sizeof cut);
    put_task(&A, "delta", cut, sizeof cut, &r);
    serve_check_error("PUT a truncated task file", &r, 400, NULL);
    serve_resp_free(&r);
    put_task(&A, "delta", "", 0, &r);
    serve_check_error("PUT an empty body", &r, 400, NULL);
    serve_resp_free(&r);

    vit_model *other = NULL;
    char other_dir[1024];
    vit_error err = {0};
    VIT_ASSERT(vit_model_load(test_path(other_dir, sizeof other_dir, "tests/data/golden/tiny_timm"),
                              &other, &err) == VIT_OK);
    snprintf(foreign, sizeof foreign, "%s/foreign.safetensors", scratch);
    VIT_ASSERT(serve_make_task(other, foreign, 3, "foreign", 7));
    vit_model_free(other);
    size_t nf;
    uint8_t *bf = serve_read_file(foreign, &nf);
    VIT_ASSERT(bf);
    put_task(&A, "delta", bf, nf, &r);
    serve_check_error("PUT a task of another backbone", &r, 422, "task_mismatch");
    serve_resp_free(&r);
    put_task(&A, "fresh", bf, nf, &r);
    serve_check_error("PUT a new task of another backbone", &r, 422, "task_mismatch");
    serve_resp_free(&r);
    expect_error("the refused new task does not exist", &A,
                 &(serve_req){.path = "/v1/tasks/fresh"}, 404, "task_not_found");
    free(bf);
    CHECKF(file_size(disk) == (long)n2, "refused PUTs changed %s", disk);
    check_classify_named("classify after refused PUTs (old version live)", "delta", 0, &ref2);

    static const char *const bad_names[] = {"Upper", "sp%20ace", "-dash", ".hidden", "x%00y",
                                            "a%2Fb"};
    for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++) {
        char what[96];
        snprintf(what, sizeof what, "PUT /v1/tasks/%s", bad_names[i]);
        put_task(&A, bad_names[i], b1, n1, &r);
        if (strcmp(bad_names[i], "a%2Fb") == 0) /* decoded to a/b: routed as an unknown path */
            serve_check_error(what, &r, r.status == 404 ? 404 : 422,
                              "invalid_task_name|not_found");
        else
            serve_check_error(what, &r, 422, "invalid_task_name");
        serve_resp_free(&r);
    }
    /* what a name cut at an encoded NUL would have created: remove it, so the
     * listing below counts only what this test made (the check above fails) */
    serve_request(&A, h, &(serve_req){.method = "DELETE", .path = "/v1/tasks/x"}, &r);
    CHECKF(r.status == 404, "PUT /v1/tasks/x%%00y created task \"x\" (DELETE x: %ld)", r.status);
    serve_resp_free(&r);
    char long_name[80];
    memset(long_name, 'n', 65);
    long_name[65] = 0;
    put_task(&A, long_name, b1, n1, &r);
    serve_check_error("PUT a 65-byte name", &r, 422, "invalid_task_name");
    serve_resp_free(&r);

    /* DELETE */
    serve_request(&A, h, &(serve_req){.method = "DELETE", .path = "/v1/tasks/delta"}, &r);
    j = serve_check_ok("DELETE /v1/tasks/delta", &r);
    CHECKF(j && strcmp(jstr(json_object_get(j, "deleted")), "delta") == 0,
           "DELETE body %s", r.body);
    json_decref(j);
    serve_resp_free(&r);
    CHECKF(file_size(disk) < 0, "DELETE left %s", disk);
    expect_error("GET a deleted task", &A, &(serve_req){.path = "/v1/tasks/delta"}, 404,
                 "task_not_found");
    expect_error("DELETE it again", &A,
                 &(serve_req){.method = "DELETE", .path = "/v1/tasks/delta"}, 404,
                 "task_not_found");
    post_json(&A, json_pack("{ssss}", "image", img.b64[0], "task", "delta"), &r);
    serve_check_error("classify with a deleted task", &r, 404, "task_not_found");
    serve_resp_free(&r);
    serve_request(&A, h, &(serve_req){.path = "/v1/tasks"}, &r);
    j = serve_check_ok("GET /v1/tasks after the delete", &r);
    CHECKF(json_array_size(json_object_get(j, "tasks")) == 3, "after DELETE: %s", r.body);
    json_decref(j);
    serve_resp_free(&r);
    free(b1);
    free(b2);
}

/* ---- 6. classify forms -------------------------------------------------- */

static void test_forms(loopback_http *png_server)
{
    fprintf(stderr, "== classify forms\n");
    serve_resp r;
    json_t *j;
    /* bare base64, every image and task, top_k 3 and 10 */
    for (int t = 0; t < NTASK; t++)
        for (int i = 0; i < SERVE_NIMG; i++) {
            char what[96];
            snprintf(what, sizeof what, "JSON base64, task %s, image %d",
                     task_names[t] ? task_names[t] : "(none)", i);
            check_classify(what, &A, t, i, i % 2 ? 10 : 3, NULL);
        }
    /* default top_k 5, clamped to beta's 4 classes */
    check_classify("JSON base64, default top_k", &A, 1, 1, 0, NULL);
    check_classify("JSON base64, default top_k on K = 4", &A, 2, 1, 0, NULL);
    post_json(&A, json_pack("{sssssi}", "image", img.b64[2], "task", "beta", "top_k", 1000), &r);
    j = serve_check_ok("top_k 1000 on K = 4", &r);
    if (j)
        check_reply("top_k 1000 on K = 4", j, 2, 2, 1000);
    json_decref(j);
    serve_resp_free(&r);
    /* "task": null counts as absent */
    post_json(&A, json_pack("{sssn}", "image", img.b64[1], "task"), &r);
    j = serve_check_ok("\"task\": null", &r);
    if (j)
        check_reply("\"task\": null", j, 0, 1, 5);
    json_decref(j);
    serve_resp_free(&r);

    /* data URI */
    size_t dn = strlen(img.b64[3]) + 64;
    char *data_uri = malloc(dn);
    VIT_ASSERT(data_uri);
    snprintf(data_uri, dn, "data:image/png;base64,%s", img.b64[3]);
    post_json(&A, json_pack("{sssssi}", "image", data_uri, "task", "gamma", "top_k", 10), &r);
    j = serve_check_ok("JSON data URI", &r);
    if (j)
        check_reply("JSON data URI", j, 3, 3, 10);
    json_decref(j);
    serve_resp_free(&r);
    free(data_uri);

    /* "images": results in order */
    json_t *imgs = json_array();
    for (int i = 0; i < SERVE_NIMG; i++)
        json_array_append_new(imgs, json_string(img.b64[(i + 2) % SERVE_NIMG]));
    post_json(&A, json_pack("{soss}", "images", imgs, "task", "alpha"), &r);
    j = serve_check_ok("JSON images", &r);
    json_t *results = json_object_get(j, "results");
    CHECKF(json_array_size(results) == SERVE_NIMG, "images: %zu results", json_array_size(results));
    for (int i = 0; i < SERVE_NIMG && json_array_size(results) == SERVE_NIMG; i++) {
        char what[64];
        snprintf(what, sizeof what, "images: results[%d]", i);
        check_reply(what, json_array_get(results, (size_t)i), 1, (i + 2) % SERVE_NIMG, 5);
    }
    json_decref(j);
    serve_resp_free(&r);

    /* "tasks": one result per task, equal to separate calls */
    for (int i = 0; i < 2; i++) {
        json_t *names = json_pack("[sss]", "gamma", "alpha", "beta");
        const int order[] = {3, 1, 2};
        post_json(&A, json_pack("{sssosi}", "image", img.b64[i * 3], "tasks", names, "top_k", 10),
                  &r);
        j = serve_check_ok("JSON tasks", &r);
        results = json_object_get(j, "results");
        CHECKF(json_array_size(results) == 3, "tasks: %zu results", json_array_size(results));
        for (int k = 0; k < 3 && json_array_size(results) == 3; k++) {
            char what[64];
            snprintf(what, sizeof what, "tasks: results[%d] (%s)", k, task_names[order[k]]);
            json_t *got = json_array_get(results, (size_t)k);
            check_reply(what, got, order[k], i * 3, 10);
            /* the same task alone: equal labels and scores, bit for bit */
            serve_resp one;
            post_json(&A, json_pack("{sssssi}", "image", img.b64[i * 3], "task",
                                    task_names[order[k]], "top_k", 10),
                      &one);
            json_t *alone = serve_check_ok("the same task alone", &one);
            CHECKF(alone && json_equal(json_object_get(alone, "labels"),
                                       json_object_get(got, "labels")) &&
                       json_equal(json_object_get(alone, "scores"), json_object_get(got, "scores")),
                   "%s differs from a separate call:\n  tasks form: %s\n  alone:      %s", what,
                   r.body, one.body);
            json_decref(alone);
            serve_resp_free(&one);
        }
        json_decref(j);
        serve_resp_free(&r);
    }

    /* multipart: file field image, fields task, top_k */
    for (int i = 0; i < SERVE_NIMG; i += 2) {
        curl_mime *mime = curl_mime_init(h);
        curl_mimepart *part = curl_mime_addpart(mime);
        curl_mime_name(part, "image");
        curl_mime_data(part, (const char *)img.data[i], img.len[i]);
        curl_mime_filename(part, "upload.bin");
        curl_mime_type(part, "application/octet-stream");
        part = curl_mime_addpart(mime);
        curl_mime_name(part, "task");
        curl_mime_data(part, "beta", CURL_ZERO_TERMINATED);
        part = curl_mime_addpart(mime);
        curl_mime_name(part, "top_k");
        curl_mime_data(part, "2", CURL_ZERO_TERMINATED);
        serve_request(&A, h, &(serve_req){.path = "/v1/classify", .mime = mime}, &r);
        curl_mime_free(mime);
        char what[64];
        snprintf(what, sizeof what, "multipart, image %d", i);
        j = serve_check_ok(what, &r);
        if (j)
            check_reply(what, j, 2, i, 2);
        json_decref(j);
        serve_resp_free(&r);
    }
    /* multipart without task: the backbone's head */
    curl_mime *mime = curl_mime_init(h);
    curl_mimepart *part = curl_mime_addpart(mime);
    curl_mime_name(part, "image");
    curl_mime_data(part, (const char *)img.data[1], img.len[1]);
    curl_mime_filename(part, "pullover.png");
    curl_mime_type(part, "image/png");
    serve_request(&A, h, &(serve_req){.path = "/v1/classify", .mime = mime}, &r);
    curl_mime_free(mime);
    j = serve_check_ok("multipart, no task", &r);
    if (j)
        check_reply("multipart, no task", j, 0, 1, 5);
    json_decref(j);
    serve_resp_free(&r);

    /* raw image body (image/png, ...) with ?task=&top_k= */
    static const char *const types[SERVE_NIMG] = {"image/png", "image/png", "image/png",
                                            "image/png", "image/jpeg", "image/bmp"};
    for (int i = 0; i < SERVE_NIMG; i++) {
        char what[64];
        snprintf(what, sizeof what, "raw %s, image %d", types[i], i);
        serve_request(&A, h, &(serve_req){.path = "/v1/classify?task=gamma&top_k=7",
                                          .content_type = types[i], .body = img.data[i],
                                          .len = img.len[i]},
                      &r);
        j = serve_check_ok(what, &r);
        if (j)
            check_reply(what, j, 3, i, 7);
        json_decref(j);
        serve_resp_free(&r);
    }
    serve_request(&A, h, &(serve_req){.path = "/v1/classify", .content_type = "image/png",
                                      .body = img.data[0], .len = img.len[0]},
                  &r);
    j = serve_check_ok("raw, no query", &r);
    if (j)
        check_reply("raw, no query", j, 0, 0, 5);
    json_decref(j);
    serve_resp_free(&r);

    /* URL (loopback, private URLs allowed on A) */
    char url[256];
    loopback_http_url(png_server, "/chelsea.png", url, sizeof url);
    post_json(&A, json_pack("{sssssi}", "image", url, "task", "alpha", "top_k", 10), &r);
    j = serve_check_ok("JSON URL", &r);
    if (j)
        check_reply("JSON URL", j, 1, 3, 10);
    json_decref(j);
    serve_resp_free(&r);

    /* server B: default_task alpha; a URL there is refused (below) */
    post_json(&B, json_pack("{ss}", "image", img.b64[0]), &r);
    j = serve_check_ok("default_task", &r);
    if (j)
        check_reply("default_task", j, 1, 0, 5);
    json_decref(j);
    serve_resp_free(&r);
    post_json(&B, json_pack("{ssss}", "image", img.b64[0], "task", "beta"), &r);
    j = serve_check_ok("default_task overridden", &r);
    if (j)
        check_reply("default_task overridden", j, 2, 0, 5);
    json_decref(j);
    serve_resp_free(&r);
}

/* ---- 7. classify errors -------------------------------------------------- */

/* The 300 MiB upload: a read callback that counts what it hands to curl. */
typedef struct big_upload {
    size_t supplied, total;
} big_upload;

static size_t big_read(char *buf, size_t size, size_t nitems, void *ud)
{
    big_upload *u = ud;
    size_t n = size * nitems;
    if (n > u->total - u->supplied)
        n = u->total - u->supplied;
    memset(buf, ' ', n);
    u->supplied += n;
    return n;
}

/* POSTs a declared total bytes to /v1/classify with content type ct; with
 * expect, curl waits for 100 Continue.  Returns the status, *supplied the
 * bytes the read callback handed over. */
static long post_big(const serve_proc *p, const char *ct, size_t total, bool expect,
                     size_t *supplied, CURLcode *cc)
{
    CURL *c = curl_easy_init();
    VIT_ASSERT(c);
    big_upload u = {0, total};
    char url[256], line[256];
    snprintf(url, sizeof url, "%s/v1/classify", p->base);
    struct curl_slist *hdrs = NULL;
    snprintf(line, sizeof line, "Content-Type: %s", ct);
    hdrs = curl_slist_append(hdrs, line);
    snprintf(line, sizeof line, "Authorization: Bearer %s", p->api_key);
    hdrs = curl_slist_append(hdrs, line);
    hdrs = curl_slist_append(hdrs, expect ? "Expect: 100-continue" : "Expect:");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)total);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, big_read);
    curl_easy_setopt(c, CURLOPT_READDATA, &u);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 60000L);
    curl_easy_setopt(c, CURLOPT_EXPECT_100_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, NULL); /* body to stdout: none expected large */
    FILE *sink = fopen("/dev/null", "wb");
    curl_easy_setopt(c, CURLOPT_WRITEDATA, sink);
    *cc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    if (sink)
        fclose(sink);
    *supplied = u.supplied;
    return status;
}

static void test_errors(void)
{
    fprintf(stderr, "== classify errors\n");
    serve_resp r;
    char body[512];

    /* JSON shape and types */
    static const struct {
        const char *body;
        int status;
        const char *codes;
    } json_cases[] = {
        {"{", 400, "bad_json"},
        {"", 400, "bad_json|invalid_request"},
        {"not json", 400, "bad_json"},
        {"[1, 2]", 400, "bad_json|invalid_request"},
        {"\"image\"", 400, "bad_json|invalid_request"},
        {"{\"image\": \"AAAA\", \"image\": \"AAAA\"}", 400, "bad_json|invalid_request"},
        {"{}", 400, "invalid_request"},
        {"{\"image\": 5}", 400, "invalid_request"},
        {"{\"image\": null}", 400, "invalid_request"},
        {"{\"image\": [\"x\"]}", 400, "invalid_request"},
        {"{\"image\": \"\"}", 400, "invalid_request"},
        {"{\"images\": \"x\"}", 400, "invalid_request"},
        {"{\"images\": []}", 400, "invalid_request"},
        {"{\"images\": [1]}", 400, "invalid_request"},
        {"{\"image\": \"%s\", \"top_k\": \"3\"}", 400, "invalid_request"},
        {"{\"image\": \"%s\", \"top_k\": 2.5}", 400, "invalid_request"},
        {"{\"image\": \"%s\", \"top_k\": 0}", 422, "invalid_top_k"},
        {"{\"image\": \"%s\", \"top_k\": -1}", 422, "invalid_top_k"},
        {"{\"image\": \"%s\", \"task\": 7}", 400, "invalid_request"},
        {"{\"image\": \"%s\", \"tasks\": \"alpha\"}", 400, "invalid_request"},
        {"{\"image\": \"%s\", \"tasks\": []}", 400, "invalid_request"},
        {"{\"image\": \"%s\", \"tasks\": [\"alpha\", 3]}", 400, "invalid_request"},
        {"{\"image\": \"%s\", \"task\": \"alpha\", \"tasks\": [\"beta\"]}", 400, "invalid_request"},
        {"{\"image\": \"%s\", \"images\": [\"%s\"]}", 400, "invalid_request"},
        {"{\"image\": \"%s\", \"colour\": \"red\"}", 400, "invalid_request"},
        {"{\"image\": \"%s\", \"task\": \"nope\"}", 404, "task_not_found"},
        {"{\"image\": \"%s\", \"tasks\": [\"alpha\", \"nope\"]}", 404, "task_not_found"},
        {"{\"image\": \"%s\", \"task\": \"Bad Name!\"}", 422, "invalid_task_name"},
        {"{\"image\": \"%s\", \"tasks\": [\"alpha\", \"../x\"]}", 422, "invalid_task_name"},
        {"{\"image\": \"@@@@\"}", 400, "invalid_base64"},
        {"{\"image\": \"QUJD=A\"}", 400, "invalid_base64"},
        {"{\"image\": \"A\"}", 400, "invalid_base64"},
        {"{\"image\": \"data:image/png;base64,@@@@\"}", 400, "invalid_base64"},
        {"{\"image\": \"data:image/png,rawtext\"}", 400, "invalid_data_uri|invalid_base64"},
        {"{\"image\": \"ftp://127.0.0.1/x.png\"}", 400, "url_forbidden"},
        {"{\"image\": \"file:///etc/passwd\"}", 400, "url_forbidden"},
        {"{\"image\": \"http://\"}", 400, "invalid_url"},
    };
    for (size_t i = 0; i < sizeof json_cases / sizeof *json_cases; i++) {
        const char *b = json_cases[i].body;
        VIT_ASSERT(b); /* gcc 12's -fsanitize build cannot tell, and warns of a NULL format */
        char *full = NULL;
        if (strstr(b, "%s")) {
            size_t n = strlen(b) + 2 * strlen(img.b64[0]) + 1;
            full = malloc(n);
            VIT_ASSERT(full);
            snprintf(full, n, b, img.b64[0], img.b64[0]);
            b = full;
        }
        char what[96];
        snprintf(what, sizeof what, "JSON %.50s", json_cases[i].body);
        post_text(&A, b, &r);
        serve_check_error(what, &r, json_cases[i].status, json_cases[i].codes);
        serve_resp_free(&r);
        free(full);
    }

    /* images that are not images, or not decodable */
    static const struct {
        const char *file;
        size_t cut;   /* > 0: only the first cut bytes */
        int status;
        const char *codes;
    } img_cases[] = {
        {"tests/data/images/not_image.txt", 0, 415, "unsupported_image"},
        {"tests/data/images/sample.gif", 0, 415, "unsupported_image"},
        {"tests/data/images/empty.jpg", 0, 400, "invalid_request|bad_image"},
        {"tests/data/images/truncated.jpg", 0, 400, "bad_image"},
        {"tests/data/images/truncated.png", 0, 400, "bad_image"},
        {"tests/data/images/truncated.bmp", 0, 400, "bad_image"},
        {"tests/data/images/coffee.jpg", 600, 400, "bad_image"},
        {"tests/data/images/corrupt.jpg", 0, 400, "bad_image"},
        {"tests/data/images/huge.png", 0, 413, "image_too_large"},
    };
    for (size_t i = 0; i < sizeof img_cases / sizeof *img_cases; i++) {
        char path[1024], what[128];
        size_t n;
        uint8_t *data = serve_read_file(test_path(path, sizeof path, img_cases[i].file), &n);
        VIT_ASSERT(data);
        if (img_cases[i].cut && img_cases[i].cut < n)
            n = img_cases[i].cut;
        char *b64 = serve_base64(data, n);
        VIT_ASSERT(b64);
        snprintf(what, sizeof what, "JSON image %s%s", img_cases[i].file,
                 img_cases[i].cut ? " (cut)" : "");
        if (n == 0) {
            post_json(&A, json_pack("{ss}", "image", b64), &r);
            serve_check_error(what, &r, img_cases[i].status, img_cases[i].codes);
            serve_resp_free(&r);
        } else {
            post_json(&A, json_pack("{ss}", "image", b64), &r);
            serve_check_error(what, &r, img_cases[i].status, img_cases[i].codes);
            serve_resp_free(&r);
            snprintf(what, sizeof what, "raw image %s%s", img_cases[i].file,
                     img_cases[i].cut ? " (cut)" : "");
            serve_request(&A, h, &(serve_req){.path = "/v1/classify", .content_type = "image/jpeg",
                                              .body = data, .len = n},
                          &r);
            serve_check_error(what, &r, img_cases[i].status, img_cases[i].codes);
            serve_resp_free(&r);
        }
        /* one bad image among good ones fails the whole request */
        if (i == 3) {
            json_t *imgs = json_pack("[sss]", img.b64[0], b64, img.b64[1]);
            post_json(&A, json_pack("{so}", "images", imgs), &r);
            serve_check_error("images with one truncated JPEG", &r, 400, "bad_image");
            serve_resp_free(&r);
        }
        free(b64);
        free(data);
    }
    /* a configured pixel limit (server B: 1000 pixels): chelsea (26,600) over, 28x28 under */
    post_json(&B, json_pack("{ss}", "image", img.b64[3]), &r);
    serve_check_error("image over --max-image-pixels", &r, 413, "image_too_large");
    serve_resp_free(&r);
    serve_request(&B, h, &(serve_req){.path = "/v1/classify", .content_type = "image/png",
                                      .body = img.data[3], .len = img.len[3]},
                  &r);
    serve_check_error("raw image over --max-image-pixels", &r, 413, "image_too_large");
    serve_resp_free(&r);

    /* media types and forms */
    expect_error("text/html", &A,
                 &(serve_req){.path = "/v1/classify", .content_type = "text/html", .body = "hello",
                              .len = 5},
                 415, "unsupported_media_type");
    /* text/plain and urlencoded (curl -d) bodies are read as JSON */
    expect_error("text/plain, not JSON", &A,
                 &(serve_req){.path = "/v1/classify", .content_type = "text/plain", .body = "hello",
                              .len = 5},
                 400, "bad_json");
    char *curl_d = malloc(strlen(img.b64[0]) + 32);
    VIT_ASSERT(curl_d);
    sprintf(curl_d, "{\"image\": \"%s\"}", img.b64[0]);
    serve_request(&A, h, &(serve_req){.path = "/v1/classify",
                                      .content_type = "application/x-www-form-urlencoded",
                                      .body = curl_d, .len = strlen(curl_d)},
                  &r);
    free(curl_d);
    json_t *jd = serve_check_ok("JSON sent as a urlencoded form", &r);
    if (jd)
        check_reply("JSON sent as a urlencoded form", jd, 0, 0, 5);
    json_decref(jd);
    serve_resp_free(&r);
    /* no Content-Type: taken as JSON (curl -d without -H) or refused */
    serve_request(&A, h, &(serve_req){.path = "/v1/classify", .body = img.data[0],
                                      .len = img.len[0]},
                  &r);
    serve_check_error("no Content-Type", &r, r.status == 415 ? 415 : 400,
                      "unsupported_media_type|bad_json");
    serve_resp_free(&r);
    expect_error("application/xml", &A,
                 &(serve_req){.path = "/v1/classify", .content_type = "application/xml",
                              .body = "<a/>", .len = 4},
                 415, "unsupported_media_type");
    static const char broken_form[] = "--XYZ\r\nContent-Disposition: form-data; name=\"image\"; "
                                      "filename=\"a.png\"\r\n\r\nnot closed";
    snprintf(body, sizeof body, "%s", broken_form);
    expect_error("multipart without its closing boundary", &A,
                 &(serve_req){.path = "/v1/classify",
                              .content_type = "multipart/form-data; boundary=XYZ", .body = body,
                              .len = strlen(body)},
                 400, "bad_form|invalid_request");
    expect_error("multipart without a boundary", &A,
                 &(serve_req){.path = "/v1/classify", .content_type = "multipart/form-data",
                              .body = "--x\r\n\r\n--x--\r\n", .len = 14},
                 400, "bad_form");
    curl_mime *mime = curl_mime_init(h);
    curl_mimepart *part = curl_mime_addpart(mime);
    curl_mime_name(part, "task");
    curl_mime_data(part, "alpha", CURL_ZERO_TERMINATED);
    serve_request(&A, h, &(serve_req){.path = "/v1/classify", .mime = mime}, &r);
    curl_mime_free(mime);
    serve_check_error("multipart without an image", &r, 400, "invalid_request|bad_form");
    serve_resp_free(&r);
    mime = curl_mime_init(h);
    part = curl_mime_addpart(mime);
    curl_mime_name(part, "image");
    curl_mime_data(part, (const char *)img.data[0], img.len[0]);
    curl_mime_filename(part, "a.png");
    part = curl_mime_addpart(mime);
    curl_mime_name(part, "top_k");
    curl_mime_data(part, "three", CURL_ZERO_TERMINATED);
    serve_request(&A, h, &(serve_req){.path = "/v1/classify", .mime = mime}, &r);
    curl_mime_free(mime);
    serve_check_error("multipart top_k not a number", &r, 400, "invalid_request");
    serve_resp_free(&r);
    mime = curl_mime_init(h);
    part = curl_mime_addpart(mime);
    curl_mime_name(part, "image");
    curl_mime_data(part, (const char *)img.data[0], img.len[0]);
    curl_mime_filename(part, "a.png");
    part = curl_mime_addpart(mime);
    curl_mime_name(part, "task");
    curl_mime_data(part, "nope", CURL_ZERO_TERMINATED);
    serve_request(&A, h, &(serve_req){.path = "/v1/classify", .mime = mime}, &r);
    curl_mime_free(mime);
    serve_check_error("multipart unknown task", &r, 404, "task_not_found");
    serve_resp_free(&r);
    expect_error("raw, unknown task", &A,
                 &(serve_req){.path = "/v1/classify?task=nope", .content_type = "image/png",
                              .body = img.data[0], .len = img.len[0]},
                 404, "task_not_found");
    expect_error("raw, top_k=abc", &A,
                 &(serve_req){.path = "/v1/classify?top_k=abc", .content_type = "image/png",
                              .body = img.data[0], .len = img.len[0]},
                 400, "invalid_request");
    expect_error("raw, empty body", &A,
                 &(serve_req){.path = "/v1/classify", .content_type = "image/png", .body = "",
                              .len = 0},
                 400, "invalid_request|bad_image");

    /* body over the cap (A: 4 MiB): a declared 5 MiB JSON body, then 300 MiB streamed */
    size_t five = (size_t)5 << 20;
    char *big = malloc(five);
    VIT_ASSERT(big);
    memset(big, ' ', five);
    big[0] = '{';
    big[five - 1] = '}';
    post_json(&A, json_pack("{ss}", "image", "AAAA"), &r); /* warm connection */
    serve_resp_free(&r);
    serve_request(&A, h, &(serve_req){.path = "/v1/classify", .content_type = "application/json",
                                      .body = big, .len = five},
                  &r);
    serve_check_error("5 MiB JSON body over a 4 MiB cap", &r, 413, "body_too_large");
    serve_resp_free(&r);
    free(big);
    for (int expect = 0; expect < 2; expect++) {
        static const char *const cts[] = {"application/json", "image/png"};
        for (int c = 0; c < 2; c++) {
            size_t supplied = 0;
            CURLcode cc;
            double t0 = serve_now_ms();
            long st = post_big(&A, cts[c], (size_t)300 << 20, expect, &supplied, &cc);
            fprintf(stderr, "  300 MiB %s upload%s -> %ld (curl: %s) after %zu bytes, %.0f ms\n",
                    cts[c], expect ? " with Expect: 100-continue" : "", st,
                    curl_easy_strerror(cc), supplied, serve_now_ms() - t0);
            /* With Expect: 100-continue the client waits for our go-ahead, so the
             * 413 always arrives.  Without it the client is still sending when
             * the server answers and closes: the kernel resets a socket closed
             * with unread data, and the reset can overtake the 413 (seen under
             * TSan).  Then what must hold is that the upload was cut early. */
            bool cut = !expect && st == 0 && (cc == CURLE_SEND_ERROR || cc == CURLE_RECV_ERROR);
            CHECKF(st == 413 || cut, "300 MiB %s upload%s: status %ld (curl: %s), want 413%s",
                   cts[c], expect ? " (Expect)" : "", st, curl_easy_strerror(cc),
                   expect ? "" : " or a reset");
            CHECKF(supplied <= ((size_t)16 << 20),
                   "300 MiB upload: %zu bytes sent before the answer (want a few MB at most)",
                   supplied);
        }
    }
    /* still answering */
    check_classify("classify after the big uploads", &A, 1, 2, 5, NULL);
}

/* ---- 7b. URL errors ------------------------------------------------------ */

static void url_case(const char *what, const serve_proc *p, const char *url, int status,
                     const char *codes)
{
    serve_resp r;
    double t0 = serve_now_ms();
    post_json(p, json_pack("{ss}", "image", url), &r);
    serve_check_error(what, &r, status, codes);
    CHECKF(serve_now_ms() - t0 < 20000, "%s: %.0f ms (hang bound 20 s)", what,
           serve_now_ms() - t0);
    serve_resp_free(&r);
}

static void test_urls(const uint8_t *png, size_t png_len)
{
    fprintf(stderr, "== URL inputs\n");
    char url[256];
    serve_resp r;

    /* B refuses loopback: never connects */
    loopback_http *ok = loopback_http_start(
        &(loopback_http_behaviour){.kind = LOOPBACK_HTTP_BODY, .body = png, .body_len = png_len,
                                   .content_type = "image/png"},
        AF_INET);
    VIT_ASSERT(ok);
    loopback_http_url(ok, "/boot.png", url, sizeof url);
    url_case("loopback URL, private URLs off", &B, url, 400, "url_forbidden");
    char alt[256];
    snprintf(alt, sizeof alt, "http://localhost:%d/boot.png", loopback_http_port(ok));
    url_case("localhost URL, private URLs off", &B, alt, 400, "url_forbidden");
    snprintf(alt, sizeof alt, "http://2130706433:%d/boot.png", loopback_http_port(ok));
    url_case("127.0.0.1 as one decimal number", &B, alt, 400, "url_forbidden|invalid_url");
    snprintf(alt, sizeof alt, "http://0x7f.1:%d/boot.png", loopback_http_port(ok));
    url_case("127.0.0.1 in hex", &B, alt, 400, "url_forbidden|invalid_url");
    snprintf(alt, sizeof alt, "http://[::ffff:127.0.0.1]:%d/boot.png", loopback_http_port(ok));
    url_case("IPv4-mapped loopback", &B, alt, 400, "url_forbidden|invalid_url");
    CHECKF(loopback_http_accepts(ok) == 0, "a refused URL still reached the server (%u connects)",
           loopback_http_accepts(ok));
    /* A allows it: the same URL answers */
    post_json(&A, json_pack("{sssssi}", "image", url, "task", "beta", "top_k", 10), &r);
    json_t *j = serve_check_ok("loopback URL, private URLs on", &r);
    if (j)
        check_reply("loopback URL, private URLs on", j, 2, 0, 10);
    json_decref(j);
    serve_resp_free(&r);
    CHECKF(loopback_http_requests(ok) == 1, "the URL was fetched %u times, want 1",
           loopback_http_requests(ok));
    /* the same URL twice in "images" */
    post_json(&A, json_pack("{s[ss]}", "images", url, img.b64[1]), &r);
    j = serve_check_ok("images: a URL and base64", &r);
    if (j) {
        check_reply("images[0] (URL)", json_array_get(json_object_get(j, "results"), 0), 0, 0, 5);
        check_reply("images[1] (base64)", json_array_get(json_object_get(j, "results"), 1), 0, 1,
                     5);
    }
    json_decref(j);
    serve_resp_free(&r);
    loopback_http_stop(ok);

    /* A: --url-timeout-ms 1500 --url-max-bytes 100000 --url-max-redirects 2 */
    loopback_http *slow = loopback_http_start(
        &(loopback_http_behaviour){.kind = LOOPBACK_HTTP_BODY, .body = png, .body_len = png_len,
                                   .delay_ms = 8000},
        AF_INET);
    loopback_http *idle = loopback_http_start(
        &(loopback_http_behaviour){.kind = LOOPBACK_HTTP_DECLARE, .declared_length = 5000},
        AF_INET);
    loopback_http *drip = loopback_http_start(
        &(loopback_http_behaviour){.kind = LOOPBACK_HTTP_DRIP, .body = png, .body_len = png_len,
                                   .drip_ms = 50},
        AF_INET);
    loopback_http *endless = loopback_http_start(
        &(loopback_http_behaviour){.kind = LOOPBACK_HTTP_ENDLESS}, AF_INET);
    loopback_http *liar = loopback_http_start(
        &(loopback_http_behaviour){.kind = LOOPBACK_HTTP_DECLARE,
                                   .declared_length = (uint64_t)1 << 30},
        AF_INET);
    loopback_http *chain = loopback_http_start(
        &(loopback_http_behaviour){.kind = LOOPBACK_HTTP_CHAIN, .body = png, .body_len = png_len},
        AF_INET);
    loopback_http *missing = loopback_http_start(
        &(loopback_http_behaviour){.kind = LOOPBACK_HTTP_BODY, .status = 404, .body = "no",
                                   .body_len = 2},
        AF_INET);
    loopback_http *to_file = loopback_http_start(
        &(loopback_http_behaviour){.kind = LOOPBACK_HTTP_REDIRECT, .location = "file:///etc/passwd"},
        AF_INET);
    VIT_ASSERT(slow && idle && drip && endless && liar && chain && missing && to_file);
    loopback_http_url(slow, "/slow.png", url, sizeof url);
    url_case("URL whose server answers after 8 s", &A, url, 422, "fetch_timeout");
    loopback_http_url(idle, "/idle.png", url, sizeof url);
    url_case("URL that sends headers, then nothing", &A, url, 422, "fetch_timeout");
    loopback_http_url(drip, "/drip.png", url, sizeof url);
    url_case("URL that drips its body", &A, url, 422, "fetch_timeout");
    loopback_http_url(endless, "/endless", url, sizeof url);
    url_case("URL that never stops sending", &A, url, 413, "image_too_large");
    loopback_http_url(liar, "/huge", url, sizeof url);
    url_case("URL declaring 1 GiB", &A, url, 413, "image_too_large");
    loopback_http_url(chain, "/5", url, sizeof url);
    url_case("URL with 5 redirects (limit 2)", &A, url, 422, "too_many_redirects|fetch_failed");
    loopback_http_url(chain, "/3", url, sizeof url);
    url_case("URL with 3 redirects (limit 2)", &A, url, 422, "too_many_redirects|fetch_failed");
    loopback_http_url(chain, "/2", url, sizeof url);
    post_json(&A, json_pack("{ss}", "image", url), &r);
    j = serve_check_ok("URL with 2 redirects (limit 2)", &r);
    if (j)
        check_reply("URL with 2 redirects", j, 0, 0, 5);
    json_decref(j);
    serve_resp_free(&r);
    loopback_http_url(missing, "/gone.png", url, sizeof url);
    url_case("URL answering 404", &A, url, 422, "fetch_failed");
    loopback_http_url(to_file, "/r", url, sizeof url);
    url_case("URL redirecting to file://", &A, url, 400, "url_forbidden");
    /* a port nothing listens on (the endless server's, once stopped) */
    loopback_http_url(missing, "/x.png", url, sizeof url);
    loopback_http_stop(missing);
    url_case("URL with nothing listening", &A, url, 422, "fetch_failed");
    /* the server hung up on the endless and the idle servers (no leaked transfer) */
    CHECKF(loopback_http_wait_closed(endless, 1, 10000), "the endless transfer was not closed");
    CHECKF(loopback_http_wait_closed(idle, 1, 10000), "the idle transfer was not closed");
    loopback_http_stop(slow);
    loopback_http_stop(idle);
    loopback_http_stop(drip);
    loopback_http_stop(endless);
    loopback_http_stop(liar);
    loopback_http_stop(chain);
    loopback_http_stop(to_file);
    check_classify("classify after the URL failures", &A, 3, 4, 5, NULL);
}

/* ---- 8. logs ------------------------------------------------------------- */

static void test_logs(void)
{
    fprintf(stderr, "== logs\n");
    const char *id = "log-check-7f3a";
    serve_resp r;
    char *body = NULL;
    json_t *req = json_pack("{ssss}", "image", img.b64[0], "task", "gamma");
    body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    serve_request(&A, h, &(serve_req){.path = "/v1/classify", .content_type = "application/json",
                                      .body = body, .len = strlen(body), .request_id = id},
                  &r);
    free(body);
    CHECKF(r.status == 200, "logged request: %ld", r.status);
    serve_resp_free(&r);
    /* the line may be written just after the reply: look for up to 10 s */
    json_t *line = NULL;
    for (int tries = 0; tries < 200 && !line; tries++) {
        size_t n;
        uint8_t *log = serve_read_file(A.log_path, &n);
        for (char *s = (char *)log, *eol; s && *s && !line; s = eol ? eol + 1 : s + strlen(s)) {
            eol = strchr(s, '\n');
            if (eol)
                *eol = 0;
            if (strstr(s, id)) {
                json_t *o = json_loads(s, 0, NULL);
                if (o && strcmp(jstr(json_object_get(o, "id")), id) == 0)
                    line = o;
                else
                    json_decref(o);
            }
        }
        free(log);
        if (!line)
            usleep(50000);
    }
    CHECKF(line != NULL, "no JSON log line with id %s", id);
    if (line) {
        char *s = json_dumps(line, JSON_COMPACT);
        fprintf(stderr, "  log line: %s\n", s);
        free(s);
        CHECKF(json_is_string(json_object_get(line, "msg")), "log: msg");
        CHECKF(strcmp(jstr(json_object_get(line, "method")), "POST") == 0,
               "log: method");
        CHECKF(strstr(jstr(json_object_get(line, "route")), "classify"),
               "log: route");
        CHECKF(json_integer_value(json_object_get(line, "status")) == 200, "log: status");
        CHECKF(json_is_number(json_object_get(line, "ms")), "log: ms");
        CHECKF(strcmp(jstr(json_object_get(line, "task")), "gamma") == 0,
               "log: task");
        CHECKF(json_integer_value(json_object_get(line, "batch")) >= 1, "log: batch");
    }
    json_decref(line);
}

/* ---- 9. config ----------------------------------------------------------- */

static void test_config(void)
{
    fprintf(stderr, "== config\n");
    char model[1024], out[1 << 16], err[1 << 14];
    test_path(model, sizeof model, SERVE_MODEL);
    static const struct {
        const char *key, *value, *needle;
    } bad[] = {
        {"--queue-capacity", "0", "queue"},
        {"--max-batch", "-3", "max"},
        {"--port", "70000", "port"},
        {"--workers", "many", "workers"},
        {"--log-format", "xml", "log"},
        {"--no-such-key", "1", "no-such-key"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *args[] = {"serve", "--model", model, "--data-dir", data_dir, "--port", "0",
                              bad[i].key, bad[i].value, NULL};
        int st = serve_run_cli(args, out, sizeof out, err, sizeof err, 60000);
        fprintf(stderr, "  serve %s %s -> exit %d: %s", bad[i].key, bad[i].value, st, err);
        CHECKF(st == 2, "serve %s %s: exit %d, want 2", bad[i].key, bad[i].value, st);
        CHECKF(strstr(err, bad[i].needle) != NULL, "serve %s %s: stderr does not name the key",
               bad[i].key, bad[i].value);
        CHECKF(strstr(out, "listening") == NULL, "serve %s: it started", bad[i].key);
    }
    const char *help[] = {"serve", "--help", NULL};
    int st = serve_run_cli(help, out, sizeof out, err, sizeof err, 60000);
    CHECKF(st == 0, "serve --help: exit %d", st);
    char example[1024];
    json_t *ex = json_load_file(test_path(example, sizeof example, "config/vitfit.example.json"), 0,
                                NULL);
    CHECKF(json_object_size(ex) >= 20, "config/vitfit.example.json: %zu keys",
           json_object_size(ex));
    const char *key;
    json_t *value;
    json_object_foreach(ex, key, value)
    {
        char flag[128];
        snprintf(flag, sizeof flag, "--%s", key);
        for (char *c = flag; *c; c++)
            if (*c == '_')
                *c = '-';
        CHECKF(strstr(out, flag) != NULL, "serve --help does not list %s", flag);
    }
    json_decref(ex);
}

/* ---- main ---------------------------------------------------------------- */

/* `vitfit health`, the probe command of the Docker image: 0 for a server
 * that answers 200 (alive, and ready once the model is loaded, without the
 * API key), 1 for another status or no server. */
static void test_health(const serve_proc *p)
{
    char port[16], out[512], err[512];
    snprintf(port, sizeof port, "%d", p->port);
    const char *alive[] = {"health", "--port", port, NULL};
    const char *ready[] = {"health", "--port", port, "--ready", NULL};
    int rc = serve_run_cli(alive, out, sizeof out, err, sizeof err, 20000);
    CHECKF(rc == 0 && strstr(out, "/healthz: ok"), "health: exit %d, out '%s', err '%s'", rc,
           out, err);
    rc = serve_run_cli(ready, out, sizeof out, err, sizeof err, 20000);
    CHECKF(rc == 0 && strstr(out, "/readyz: ok"), "health --ready: exit %d, out '%s', err '%s'",
           rc, out, err);
    /* a container's environment: the port from VITFIT_PORT, a wildcard host read as loopback */
    const char *from_env[] = {"health", "--ready", NULL};
    setenv("VITFIT_PORT", port, 1);
    setenv("VITFIT_HOST", "0.0.0.0", 1);
    rc = serve_run_cli(from_env, out, sizeof out, err, sizeof err, 20000);
    unsetenv("VITFIT_PORT");
    unsetenv("VITFIT_HOST");
    CHECKF(rc == 0 && strstr(out, "http://127.0.0.1:") && strstr(out, "/readyz: ok"),
           "health with VITFIT_PORT=%s VITFIT_HOST=0.0.0.0: exit %d, out '%s', err '%s'", port,
           rc, out, err);
    const char *with_port[] = {"health", "--host", "127.0.0.1:8080", NULL};
    rc = serve_run_cli(with_port, out, sizeof out, err, sizeof err, 20000);
    CHECKF(rc == 2, "health --host with a port: exit %d, want 2 (usage)", rc);
    loopback_http *down = loopback_http_start(
        &(loopback_http_behaviour){.kind = LOOPBACK_HTTP_BODY, .status = 503, .body = "no",
                                   .body_len = 2, .content_type = "text/plain"},
        AF_INET);
    VIT_ASSERT(down);
    snprintf(port, sizeof port, "%d", loopback_http_port(down));
    rc = serve_run_cli(ready, out, sizeof out, err, sizeof err, 20000);
    CHECKF(rc == 1 && strstr(err, "HTTP 503"), "health of a 503: exit %d, err '%s'", rc, err);
    loopback_http_stop(down); /* its port now refuses connections */
    rc = serve_run_cli(alive, out, sizeof out, err, sizeof err, 20000);
    CHECKF(rc == 1 && strstr(err, "vitfit health: http://127.0.0.1:"),
           "health with no server: exit %d, err '%s'", rc, err);
    const char *bad[] = {"health", "--port", "0", NULL};
    rc = serve_run_cli(bad, out, sizeof out, err, sizeof err, 20000);
    CHECKF(rc == 2, "health --port 0: exit %d, want 2 (usage)", rc);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_ALL);
    h = curl_easy_init();
    VIT_ASSERT(h);
    VIT_ASSERT(serve_tmpdir("routes", data_dir, sizeof data_dir));
    VIT_ASSERT(serve_tmpdir("routes-scratch", scratch, sizeof scratch));
    const vit_model *m = serve_model();
    VIT_ASSERT(m);

    serve_images_load(&img);
    const char *paths[SERVE_NIMG];
    for (int i = 0; i < SERVE_NIMG; i++)
        paths[i] = img.path[i];
    for (int t = 0; t < NTASK; t++) {
        if (task_names[t]) {
            snprintf(task_file[t], sizeof task_file[t], "%s/tasks/%s.safetensors", data_dir,
                     task_names[t]);
            VIT_ASSERT(serve_make_task(m, task_file[t], task_classes[t], task_names[t],
                                       (uint64_t)t));
        }
        VIT_ASSERT(serve_reference(task_names[t] ? task_file[t] : NULL, paths, SERVE_NIMG, refs[t]));
    }

    const char *extra_a[] = {"--max-body-bytes", "4194304", "--allow-private-urls",
                             "--url-timeout-ms", "1500", "--url-max-bytes", "100000",
                             "--url-max-redirects", "2", "--log-format", "json", NULL};
    const char *extra_b[] = {"--max-image-pixels", "1000", "--default-task", "alpha", NULL};
    bool up_a = serve_start(&A, data_dir, API_KEY, extra_a);
    bool up_b = up_a && serve_start(&B, data_dir, NULL, extra_b);
    CHECKF(up_a && up_b, "the servers did not start");
    if (up_a && up_b) {
        loopback_http *png_server = loopback_http_start(
            &(loopback_http_behaviour){.kind = LOOPBACK_HTTP_BODY, .body = img.data[3],
                                       .body_len = img.len[3], .content_type = "image/png"},
            AF_INET);
        VIT_ASSERT(png_server);
        double t0 = serve_now_ms();
        test_operations();
        test_auth();
        test_request_ids();
        test_routing();
        test_forms(png_server);
        test_tasks();
        test_errors();
        test_urls(img.data[0], img.len[0]);
        test_logs();
        test_health(&A);
        loopback_http_stop(png_server);
        fprintf(stderr, "requests took %.1f s\n", (serve_now_ms() - t0) / 1e3);
        int st = serve_stop(&B, SIGINT, 60000);
        CHECKF(st == 0, "server B after SIGINT: exit %d", st);
    }
    if (up_a) {
        int st = serve_stop(&A, SIGTERM, 60000);
        CHECKF(st == 0, "server A after SIGTERM: exit %d", st);
    }
    test_config();

    serve_images_free(&img);
    serve_model_free();
    curl_easy_cleanup(h);
    curl_global_cleanup();
    serve_rmtree(data_dir);
    serve_rmtree(scratch);
    int hf = serve_harness_failures();
    return check_result() || hf;
}
