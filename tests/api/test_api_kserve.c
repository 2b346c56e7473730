/*
 * test_api_kserve.c - the Open Inference Protocol (KServe V2) routes of the
 * real `vitfit serve` (api/kserve.h), against the native API's answers.
 *
 * Server A (API key, private URLs allowed, 8 images per request, a 4 MiB
 * body cap) and server B (no key, --default-task alpha) share a data_dir
 * with tasks made by the engine (alpha: 10 classes, beta: 4) and a task
 * file that is not one (broken).  Every reply is also checked against
 * api/openapi.yaml by the harness.  Checked:
 *
 *  1. GET /v2: name, the version `vitfit --version` prints, the extension;
 *     HEAD; 401 without the key, in the protocol's error shape.
 *  2. /v2/health/live and /v2/health/ready answer without a key; HEAD.
 *  3. Model metadata and readiness of a task and of _backbone; an unknown
 *     name, one no task can have, an over-long one (404 model_not_found)
 *     and the broken file (answered as an infer with it is).
 *  4. Infer equals POST /v1/classify for the same images and task: every
 *     model, six images (PNG, JPEG, BMP) in one batch, top_k default, 3 and
 *     over K (clamped): shapes [6, k], labels equal, scores equal to the
 *     bit.  _backbone on server B is the backbone's head, not its
 *     default_task.
 *  5. Requests shaped like the protocol's examples: "id" echoed (none: the
 *     X-Request-Id), one output asked for, outputs reordered, an empty
 *     outputs list, nested data of shape [N, 1], a custom parameter ignored.
 *  6. Binary tensor data as tritonclient sends it (no Content-Type,
 *     Inference-Header-Content-Length): binary input, binary outputs, each
 *     alone; decoded, the native labels and float scores.
 *  7. A BYTES element that is an image URL is fetched (a loopback origin)
 *     and equals the native answer; an origin's 404 is 422 fetch_failed.
 *  8. Every refusal of the request, of its images and of the binary data,
 *     400/404/405/413/415/422, in the shape {"error": "...", "code"} with
 *     the native code; unrouted /v2 paths answer 404 in the same shape.
 *  9. /metrics counts the V2 route; SIGTERM answers a held V2 infer 503
 *     shutting_down with Retry-After (the drain, as for /v1/classify).
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "loopback_http.h"
#include "serve_harness.h"
#include "test_util.h"

#define API_KEY "kserve-Key_0123456789"

static const int all_images[SERVE_NIMG] = {0, 1, 2, 3, 4, 5};

static char data_dir[256];
static serve_images img;
static uint8_t *png;
static size_t png_len;

static serve_proc A, B;
static CURL *h;

/* ---- helpers ------------------------------------------------------------ */

static const char *jstr(const json_t *j)
{
    return json_is_string(j) ? json_string_value(j) : "";
}

/* POSTs body[0..len) to /v2/models/<model>/infer on p; ct NULL: no
 * Content-Type (as tritonclient sends); extra: more header lines. */
static void infer_raw(const serve_proc *p, const char *model, const void *body, size_t len,
                      const char *ct, const char *const *extra, const char *request_id,
                      serve_resp *r)
{
    char path[256];
    snprintf(path, sizeof path, "/v2/models/%s/infer", model);
    serve_request(p, h,
                  &(serve_req){.path = path, .content_type = ct, .body = body, .len = len,
                               .extra = extra, .request_id = request_id},
                  r);
}

/* POSTs the JSON j (decref'd here) as application/json. */
static void infer_json(const serve_proc *p, const char *model, json_t *j, serve_resp *r)
{
    char *body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    VIT_ASSERT(body);
    infer_raw(p, model, body, strlen(body), "application/json", NULL, NULL, r);
    free(body);
}

/* The protocol's request for images imgs[0..n) in base64: one input
 * "image", BYTES, shape [n]; top_k in the parameters when > 0. */
static json_t *v2_request(const int *imgs, int n, int top_k)
{
    json_t *data = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(data, json_string(img.b64[imgs[i]]));
    json_t *j = json_pack("{s:[{s:s,s:[i],s:s,s:o}]}", "inputs", "name", "image", "shape", n,
                          "datatype", "BYTES", "data", data);
    if (top_k > 0)
        json_object_set_new(j, "parameters", json_pack("{s:i}", "top_k", top_k));
    VIT_ASSERT(j);
    return j;
}

/* The native answer: POST /v1/classify {"images", "task"?, "top_k"} on p;
 * its "results" (a new reference), NULL after a failed CHECK. */
static json_t *native(const serve_proc *p, const char *task, const int *imgs, int n, int top_k)
{
    json_t *images = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(images, json_string(img.b64[imgs[i]]));
    json_t *j = json_pack("{s:o,s:i}", "images", images, "top_k", top_k);
    if (task)
        json_object_set_new(j, "task", json_string(task));
    char *body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    serve_resp r;
    serve_request(p, h,
                  &(serve_req){.path = "/v1/classify", .content_type = "application/json",
                               .body = body, .len = strlen(body)},
                  &r);
    free(body);
    json_t *reply = serve_check_ok("native /v1/classify", &r);
    serve_resp_free(&r);
    json_t *results = json_incref(json_object_get(reply, "results"));
    json_decref(reply);
    CHECKF(json_array_size(results) == (size_t)n, "native: %zu results, want %d",
           json_array_size(results), n);
    return results;
}

/* The output named name in a V2 reply, or NULL. */
static json_t *output_named(const json_t *reply, const char *name)
{
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(reply, "outputs"), i, o) {
        if (strcmp(jstr(json_object_get(o, "name")), name) == 0)
            return o;
    }
    return NULL;
}

/* Checks output o (JSON data) against the native results: datatype, shape
 * [n, k], and each element equal (labels as strings, scores as the same
 * double). */
static void check_output_json(const char *what, const json_t *o, const char *name,
                              const json_t *results, int n, size_t k)
{
    bool labels = strcmp(name, "labels") == 0;
    json_t *shape = json_object_get(o, "shape"), *data = json_object_get(o, "data");
    CHECKF(o != NULL, "%s: no output %s", what, name);
    if (!o)
        return;
    CHECKF(strcmp(jstr(json_object_get(o, "datatype")), labels ? "BYTES" : "FP32") == 0,
           "%s: %s datatype %s", what, name, jstr(json_object_get(o, "datatype")));
    CHECKF(json_array_size(shape) == 2 &&
               json_integer_value(json_array_get(shape, 0)) == n &&
               json_integer_value(json_array_get(shape, 1)) == (json_int_t)k,
           "%s: %s shape is not [%d, %zu]", what, name, n, k);
    CHECKF(json_array_size(data) == (size_t)n * k, "%s: %s has %zu elements, want %zu", what,
           name, json_array_size(data), (size_t)n * k);
    if (json_array_size(data) != (size_t)n * k)
        return;
    for (int i = 0; i < n; i++) {
        json_t *want = json_object_get(json_array_get(results, (size_t)i), name);
        CHECKF(json_array_size(want) == k, "%s: native result %d has %zu %s, want %zu", what, i,
               json_array_size(want), name, k);
        for (size_t j = 0; j < k && j < json_array_size(want); j++) {
            json_t *g = json_array_get(data, (size_t)i * k + j), *w = json_array_get(want, j);
            if (labels)
                CHECKF(json_is_string(g) && strcmp(jstr(g), jstr(w)) == 0,
                       "%s: labels[%d][%zu] is \"%s\", native \"%s\"", what, i, j, jstr(g),
                       jstr(w));
            else
                CHECKF(json_is_number(g) && json_number_value(g) == json_number_value(w),
                       "%s: scores[%d][%zu] is %.9g, native %.9g", what, i, j,
                       json_number_value(g), json_number_value(w));
        }
    }
}

/* Checks a whole JSON reply: model_name, both outputs (labels first) equal
 * to the native results. */
static void check_equal_native(const char *what, const serve_resp *r, const char *model,
                               const json_t *results, int n, size_t k)
{
    json_t *j = serve_check_ok(what, r);
    if (!j)
        return;
    CHECKF(strcmp(jstr(json_object_get(j, "model_name")), model) == 0, "%s: model_name %s",
           what, jstr(json_object_get(j, "model_name")));
    json_t *outs = json_object_get(j, "outputs");
    CHECKF(json_array_size(outs) == 2 &&
               strcmp(jstr(json_object_get(json_array_get(outs, 0), "name")), "labels") == 0,
           "%s: outputs are not [labels, scores]", what);
    check_output_json(what, output_named(j, "labels"), "labels", results, n, k);
    check_output_json(what, output_named(j, "scores"), "scores", results, n, k);
    json_decref(j);
}

/* Checks that r is the protocol's error: status, {"error": non-empty
 * string, "code": code} and nothing else, JSON, an X-Request-Id. */
static bool check_v2_error(const char *what, const serve_resp *r, int status, const char *code)
{
    int before = check_failures;
    char ct[128], id[128];
    CHECKF(r->status == status, "%s: status %ld, want %d; body %.300s", what, r->status, status,
           r->body ? r->body : "");
    json_t *j = serve_json(r);
    const char *msg = json_string_value(json_object_get(j, "error"));
    const char *got = json_string_value(json_object_get(j, "code"));
    CHECKF(json_is_object(j) && json_object_size(j) == 2 && msg && *msg && got,
           "%s: not {\"error\": \"...\", \"code\": \"...\"}: %.300s", what,
           r->body ? r->body : "");
    CHECKF(got && strcmp(got, code) == 0, "%s: code %s, want %s (%s)", what, got ? got : "-",
           code, msg ? msg : "");
    CHECKF(serve_header(r, "Content-Type", ct, sizeof ct) &&
               strncmp(ct, "application/json", 16) == 0,
           "%s: Content-Type of an error is not JSON", what);
    CHECKF(serve_header(r, "X-Request-Id", id, sizeof id) && *id, "%s: no X-Request-Id", what);
    fprintf(stderr, "  %-48s -> %ld %s: %s\n", what, r->status, got ? got : "?", msg ? msg : "");
    json_decref(j);
    return check_failures == before;
}

static void get_expect_error(const serve_proc *p, const char *path, int status, const char *code)
{
    serve_resp r;
    serve_request(p, h, &(serve_req){.path = path}, &r);
    char what[160];
    snprintf(what, sizeof what, "GET %.100s", path);
    check_v2_error(what, &r, status, code);
    serve_resp_free(&r);
}

/* Sends the JSON text body to alpha on A and checks the error. */
static void bad_json_request(const char *what, const char *body, int status, const char *code)
{
    serve_resp r;
    infer_raw(&A, "alpha", body, strlen(body), "application/json", NULL, NULL, &r);
    check_v2_error(what, &r, status, code);
    serve_resp_free(&r);
}

/* Sends request j (decref'd) to alpha on A and checks the error. */
static void bad_request(const char *what, json_t *j, int status, const char *code)
{
    VIT_ASSERT(j);
    char *body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    bad_json_request(what, body, status, code);
    free(body);
}

/* A request for alpha whose input (one image) is changed by key = value
 * (value NULL: key removed). */
static json_t *with_input(const char *key, json_t *value)
{
    json_t *req = v2_request(all_images, 1, 0);
    json_t *in = json_array_get(json_object_get(req, "inputs"), 0);
    if (value)
        json_object_set_new(in, key, value);
    else
        json_object_del(in, key);
    return req;
}

static json_t *with_member(const char *key, json_t *value)
{
    json_t *req = v2_request(all_images, 1, 0);
    json_object_set_new(req, key, value);
    return req;
}

/* ---- binary tensor data --------------------------------------------------- */

typedef struct buf {
    uint8_t *p;
    size_t n;
} buf;

static void buf_put(buf *b, const void *d, size_t n)
{
    b->p = realloc(b->p, b->n + n + 1);
    VIT_ASSERT(b->p);
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void buf_u32(buf *b, uint32_t v)
{
    uint8_t le[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    buf_put(b, le, 4);
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The BYTES tensor of images imgs[0..n): length-prefixed raw bytes. */
static buf binary_images(const int *imgs, int n)
{
    buf b = {0};
    for (int i = 0; i < n; i++) {
        buf_u32(&b, (uint32_t)img.len[imgs[i]]);
        buf_put(&b, img.data[imgs[i]], img.len[imgs[i]]);
    }
    return b;
}

/* Sends header (JSON text) + bin as the binary extension does, to model on
 * A; hlen_text overrides the Inference-Header-Content-Length value. */
static void send_binary(const char *model, const char *header, const buf *bin,
                        const char *hlen_text, serve_resp *r)
{
    buf body = {0};
    buf_put(&body, header, strlen(header));
    if (bin->n)
        buf_put(&body, bin->p, bin->n);
    char line[96];
    if (hlen_text)
        snprintf(line, sizeof line, "Inference-Header-Content-Length: %s", hlen_text);
    else
        snprintf(line, sizeof line, "Inference-Header-Content-Length: %zu", strlen(header));
    const char *extra[] = {line, NULL};
    infer_raw(&A, model, body.p, body.n, NULL, extra, NULL, r);
    free(body.p);
}

/* Checks a binary reply: application/octet-stream, the JSON part's length in
 * Inference-Header-Content-Length, and each output (JSON data or binary, in
 * the reply's order) equal to the native results. */
static void check_binary_reply(const char *what, const serve_resp *r, const json_t *results,
                               int n, size_t k, int want_binary)
{
    char ct[128], hl[32];
    CHECKF(r->status == 200, "%s: status %ld: %.300s", what, r->status, r->body ? r->body : "");
    if (r->status != 200)
        return;
    CHECKF(serve_header(r, "Content-Type", ct, sizeof ct) &&
               strcmp(ct, "application/octet-stream") == 0,
           "%s: Content-Type %s", what, ct);
    bool has = serve_header(r, "Inference-Header-Content-Length", hl, sizeof hl) != NULL;
    size_t hlen = has ? (size_t)strtoull(hl, NULL, 10) : 0;
    CHECKF(has && hlen > 0 && hlen < r->body_len, "%s: Inference-Header-Content-Length %s", what,
           has ? hl : "(none)");
    if (!has || hlen == 0 || hlen >= r->body_len)
        return;
    json_t *j = json_loadb(r->body, hlen, 0, NULL);
    CHECKF(json_is_object(j), "%s: the JSON part does not parse", what);
    const uint8_t *at = (const uint8_t *)r->body + hlen;
    const uint8_t *end = (const uint8_t *)r->body + r->body_len;
    int binaries = 0;
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(j, "outputs"), i, o) {
        const char *name = jstr(json_object_get(o, "name"));
        json_t *size = json_object_get(json_object_get(o, "parameters"), "binary_data_size");
        if (!size) {
            check_output_json(what, o, name, results, n, k);
            continue;
        }
        binaries++;
        size_t len = (size_t)json_integer_value(size);
        CHECKF(len <= (size_t)(end - at), "%s: %s: binary_data_size %zu past the body", what, name,
               len);
        if (len > (size_t)(end - at))
            break;
        const uint8_t *p = at, *stop = at + len;
        for (int a = 0; a < n; a++) {
            json_t *want = json_object_get(json_array_get(results, (size_t)a), name);
            for (size_t b = 0; b < k; b++) {
                json_t *w = json_array_get(want, b);
                if (strcmp(name, "scores") == 0) {
                    CHECKF(stop - p >= 4, "%s: scores end early", what);
                    if (stop - p < 4)
                        break;
                    uint32_t bits = get_u32(p);
                    float f;
                    memcpy(&f, &bits, 4);
                    CHECKF(f == (float)json_number_value(w),
                           "%s: scores[%d][%zu] %.9g, native %.9g", what, a, b, (double)f,
                           json_number_value(w));
                    p += 4;
                } else {
                    uint32_t sl = stop - p >= 4 ? get_u32(p) : 0;
                    CHECKF(stop - p >= 4 && sl <= (size_t)(stop - p - 4),
                           "%s: labels end early", what);
                    if (stop - p < 4 || sl > (size_t)(stop - p - 4))
                        break;
                    CHECKF(strlen(jstr(w)) == sl && memcmp(p + 4, jstr(w), sl) == 0,
                           "%s: labels[%d][%zu] is \"%.*s\", native \"%s\"", what, a, b, (int)sl,
                           p + 4, jstr(w));
                    p += 4 + sl;
                }
            }
        }
        CHECKF(p == stop, "%s: %s: %zu bytes left over in its binary data", what, name,
               (size_t)(stop - p));
        at = stop;
    }
    CHECKF(at == end, "%s: %zu bytes after the last binary output", what, (size_t)(end - at));
    CHECKF(binaries == want_binary, "%s: %d binary outputs, want %d", what, binaries, want_binary);
    json_decref(j);
}

/* ---- 1-3. metadata and health --------------------------------------------- */

static void test_server_metadata(void)
{
    fprintf(stderr, "== 1. server metadata\n");
    char version[128] = "";
    const char *args[] = {"--version", NULL};
    CHECK(serve_run_cli(args, version, sizeof version, NULL, 0, 30000) == 0);
    version[strcspn(version, "\n")] = 0; /* "vitfit 0.1.0" */
    serve_resp r;
    serve_request(&A, h, &(serve_req){.path = "/v2"}, &r);
    json_t *j = serve_check_ok("GET /v2", &r);
    char want[160];
    snprintf(want, sizeof want, "vitfit %s", jstr(json_object_get(j, "version")));
    CHECKF(strcmp(jstr(json_object_get(j, "name")), "vitfit") == 0, "/v2: name %s", r.body);
    CHECKF(strcmp(want, version) == 0, "/v2: version %s, but vitfit --version says \"%s\"", want,
           version);
    json_t *ext = json_object_get(j, "extensions");
    CHECKF(json_array_size(ext) == 1 &&
               strcmp(jstr(json_array_get(ext, 0)), "binary_tensor_data") == 0,
           "/v2: extensions %s", r.body);
    json_decref(j);
    serve_resp_free(&r);
    serve_request(&A, h, &(serve_req){.method = "HEAD", .path = "/v2"}, &r);
    CHECKF(r.status == 200 && r.body_len == 0, "HEAD /v2: %ld, %zu bytes", r.status, r.body_len);
    serve_resp_free(&r);
    serve_request(&A, h, &(serve_req){.path = "/v2", .auth = ""}, &r);
    check_v2_error("GET /v2 without the key", &r, 401, "unauthorized");
    char www[64];
    CHECKF(serve_header(&r, "WWW-Authenticate", www, sizeof www) && strcmp(www, "Bearer") == 0,
           "401 without WWW-Authenticate: Bearer");
    serve_resp_free(&r);
}

static void test_health(void)
{
    fprintf(stderr, "== 2. health\n");
    static const char *const paths[] = {"/v2/health/live", "/v2/health/ready"};
    static const char *const keys[] = {"live", "ready"};
    for (int i = 0; i < 2; i++) {
        serve_resp r;
        /* no key needed: they are the Kubernetes probes */
        serve_request(&A, h, &(serve_req){.path = paths[i], .auth = ""}, &r);
        json_t *j = serve_check_ok(paths[i], &r);
        CHECKF(json_is_true(json_object_get(j, keys[i])) && json_object_size(j) == 1,
               "%s: body %s", paths[i], r.body);
        json_decref(j);
        serve_resp_free(&r);
        serve_request(&A, h, &(serve_req){.method = "HEAD", .path = paths[i], .auth = ""}, &r);
        CHECKF(r.status == 200 && r.body_len == 0, "HEAD %s: %ld", paths[i], r.status);
        serve_resp_free(&r);
    }
}

static void test_models(void)
{
    fprintf(stderr, "== 3. model metadata and readiness\n");
    static const char *const models[] = {"alpha", "beta", "_backbone"};
    for (int m = 0; m < 3; m++) {
        char path[128];
        serve_resp r;
        snprintf(path, sizeof path, "/v2/models/%s", models[m]);
        serve_request(&A, h, &(serve_req){.path = path}, &r);
        json_t *j = serve_check_ok(path, &r);
        json_t *want = json_pack(
            "{s:s,s:s,s:[{s:s,s:s,s:[i]}],s:[{s:s,s:s,s:[i,i]},{s:s,s:s,s:[i,i]}]}", "name",
            models[m], "platform", "vitfit_safetensors", "inputs", "name", "image", "datatype",
            "BYTES", "shape", -1, "outputs", "name", "labels", "datatype", "BYTES", "shape", -1,
            -1, "name", "scores", "datatype", "FP32", "shape", -1, -1);
        CHECKF(json_equal(j, want), "%s: %s", path, r.body);
        json_decref(want);
        json_decref(j);
        serve_resp_free(&r);
        snprintf(path, sizeof path, "/v2/models/%s/ready", models[m]);
        serve_request(&A, h, &(serve_req){.path = path}, &r);
        j = serve_check_ok(path, &r);
        CHECKF(strcmp(jstr(json_object_get(j, "name")), models[m]) == 0 &&
                   json_is_true(json_object_get(j, "ready")),
               "%s: %s", path, r.body);
        json_decref(j);
        serve_resp_free(&r);
    }
    char long_name[128];
    memset(long_name, 'a', 65);
    long_name[65] = 0;
    const char *missing[] = {"nope", "Bad-Name", "_other", long_name};
    for (size_t i = 0; i < sizeof missing / sizeof *missing; i++) {
        char path[192];
        snprintf(path, sizeof path, "/v2/models/%s", missing[i]);
        get_expect_error(&A, path, 404, "model_not_found");
        snprintf(path, sizeof path, "/v2/models/%s/ready", missing[i]);
        get_expect_error(&A, path, 404, "model_not_found");
        serve_resp r;
        infer_json(&A, missing[i], v2_request(all_images, 1, 0), &r);
        snprintf(path, sizeof path, "infer %.20s", missing[i]);
        check_v2_error(path, &r, 404, "model_not_found");
        serve_resp_free(&r);
    }
    /* a file that is not a task: not ready, and an infer says why the same way */
    serve_resp r1, r2;
    serve_request(&A, h, &(serve_req){.path = "/v2/models/broken/ready"}, &r1);
    check_v2_error("GET /v2/models/broken/ready", &r1, 422, "task_unusable");
    infer_json(&A, "broken", v2_request(all_images, 1, 0), &r2);
    check_v2_error("infer broken", &r2, 422, "task_unusable");
    serve_resp_free(&r1);
    serve_resp_free(&r2);
    get_expect_error(&A, "/v2/models/broken", 422, "task_unusable");
    /* the model is a task: without one the model goes, as PUT/DELETE make it */
    serve_resp r;
    serve_request(&A, h, &(serve_req){.method = "DELETE", .path = "/v1/tasks/beta"}, &r);
    CHECKF(r.status == 200, "DELETE /v1/tasks/beta: %ld", r.status);
    serve_resp_free(&r);
    get_expect_error(&A, "/v2/models/beta/ready", 404, "model_not_found");
    get_expect_error(&A, "/v2/models/beta", 404, "model_not_found");
}

/* ---- 4. infer equals the native API ---------------------------------------- */

static void test_equals_native(void)
{
    fprintf(stderr, "== 4. infer equals /v1/classify\n");
    static const char *const models[] = {"alpha", "beta", "_backbone"};
    static const char *const tasks[] = {"alpha", "beta", NULL};
    static const int classes[] = {10, 4, 10};
    static const int top_ks[] = {0, 3, 1000};
    for (int m = 0; m < 3; m++)
        for (int t = 0; t < 3; t++) {
            int k = top_ks[t] ? top_ks[t] : 5;
            size_t want_k = (size_t)(k < classes[m] ? k : classes[m]);
            json_t *results = native(&A, tasks[m], all_images, SERVE_NIMG, k);
            serve_resp r;
            infer_json(&A, models[m], v2_request(all_images, SERVE_NIMG, top_ks[t]), &r);
            char what[96];
            snprintf(what, sizeof what, "infer %s, 6 images, top_k %d", models[m], top_ks[t]);
            check_equal_native(what, &r, models[m], results, SERVE_NIMG, want_k);
            fprintf(stderr, "  %-48s -> equal to /v1/classify ([6, %zu])\n", what, want_k);
            serve_resp_free(&r);
            json_decref(results);
        }
    /* B's default_task is alpha: a V2 request names its model, and
     * _backbone is the backbone's head there too */
    json_t *backbone = native(&A, NULL, all_images, 3, 5);
    json_t *alpha = native(&B, NULL, all_images, 3, 5);
    serve_resp r;
    infer_json(&B, "_backbone", v2_request(all_images, 3, 0), &r);
    check_equal_native("infer _backbone on B (default_task alpha)", &r, "_backbone", backbone, 3,
                       5);
    CHECKF(!json_equal(json_object_get(json_array_get(alpha, 0), "scores"),
                       json_object_get(json_array_get(backbone, 0), "scores")),
           "alpha and the backbone answer alike: the check above cannot tell them apart");
    serve_resp_free(&r);
    json_decref(backbone);
    json_decref(alpha);
}

/* ---- 5. the protocol's examples -------------------------------------------- */

static void test_protocol_examples(void)
{
    fprintf(stderr, "== 5. requests shaped like the protocol's examples\n");
    json_t *results = native(&A, "alpha", all_images, 2, 5);
    /* required_api.md's inference example: "id", inputs with name, shape,
     * datatype, data, and one output asked for */
    json_t *req = v2_request(all_images, 2, 0);
    json_object_set_new(req, "id", json_string("42"));
    json_object_set_new(req, "outputs", json_pack("[{s:s}]", "name", "scores"));
    serve_resp r;
    infer_json(&A, "alpha", req, &r);
    json_t *j = serve_check_ok("the protocol's example", &r);
    CHECKF(strcmp(jstr(json_object_get(j, "id")), "42") == 0, "id not echoed: %s", r.body);
    CHECKF(json_array_size(json_object_get(j, "outputs")) == 1 && !output_named(j, "labels"),
           "outputs: [scores] asked for, got %s", r.body);
    CHECKF(!json_object_get(j, "model_version"), "model_version without versions");
    check_output_json("the protocol's example", output_named(j, "scores"), "scores", results, 2, 5);
    json_decref(j);
    serve_resp_free(&r);

    /* no id: the X-Request-Id (the client's, here) */
    req = v2_request(all_images, 2, 0);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    infer_raw(&A, "alpha", body, strlen(body), "application/json", NULL, "trace-7", &r);
    j = serve_check_ok("no id", &r);
    CHECKF(strcmp(jstr(json_object_get(j, "id")), "trace-7") == 0, "no id: id %s, want trace-7",
           jstr(json_object_get(j, "id")));
    json_decref(j);
    serve_resp_free(&r);
    infer_raw(&A, "alpha", body, strlen(body), "application/json", NULL, NULL, &r);
    j = serve_check_ok("no id, no X-Request-Id", &r);
    char id[128];
    CHECKF(serve_header(&r, "X-Request-Id", id, sizeof id) &&
               strcmp(jstr(json_object_get(j, "id")), id) == 0,
           "no id: id %s is not the X-Request-Id", jstr(json_object_get(j, "id")));
    json_decref(j);
    serve_resp_free(&r);
    /* curl -d labels JSON as a form: read as JSON, as for /v1/classify */
    infer_raw(&A, "alpha", body, strlen(body), "application/x-www-form-urlencoded", NULL, NULL,
              &r);
    check_equal_native("Content-Type of curl -d", &r, "alpha", results, 2, 5);
    serve_resp_free(&r);
    free(body);

    /* outputs reordered; an empty list is both; nested data [[..],[..]] of
     * shape [2, 1] (what Triton's clients send for [batch, 1]); a custom
     * parameter (the parameters extension's example) ignored */
    req = v2_request(all_images, 2, 0);
    json_object_set_new(req, "outputs", json_pack("[{s:s},{s:s}]", "name", "scores", "name",
                                                  "labels"));
    infer_json(&A, "alpha", req, &r);
    j = serve_check_ok("outputs [scores, labels]", &r);
    CHECKF(strcmp(jstr(json_object_get(json_array_get(json_object_get(j, "outputs"), 0), "name")),
                  "scores") == 0,
           "outputs not in the order asked: %s", r.body);
    check_output_json("outputs [scores, labels]", output_named(j, "labels"), "labels", results, 2,
                      5);
    json_decref(j);
    serve_resp_free(&r);
    req = json_pack("{s:{s:i},s:[{s:s,s:[i,i],s:s,s:[[s],[s]]}],s:[]}", "parameters",
                    "my_custom_parameter", 42, "inputs", "name", "image", "shape", 2, 1,
                    "datatype", "BYTES", "data", img.b64[0], img.b64[1], "outputs");
    infer_json(&A, "alpha", req, &r);
    check_equal_native("nested data, shape [2, 1], outputs []", &r, "alpha", results, 2, 5);
    serve_resp_free(&r);
    /* data URIs and URL-safe base64 without padding: read as /v1/classify reads them */
    char *uri = malloc(strlen(img.b64[1]) + 32);
    VIT_ASSERT(uri);
    sprintf(uri, "data:image/png;base64,%s", img.b64[1]);
    req = json_pack("{s:[{s:s,s:[i],s:s,s:[s,s]}]}", "inputs", "name", "image", "shape", 2,
                    "datatype", "BYTES", "data", img.b64[0], uri);
    infer_json(&A, "alpha", req, &r);
    check_equal_native("a data: URI element", &r, "alpha", results, 2, 5);
    serve_resp_free(&r);
    free(uri);
    json_decref(results);
}

/* ---- 6. binary tensor data ------------------------------------------------- */

static void test_binary(void)
{
    fprintf(stderr, "== 6. binary tensor data\n");
    const int imgs[3] = {3, 4, 5}; /* PNG, JPEG, BMP */
    json_t *results = native(&A, "alpha", imgs, 3, 4);
    buf bin = binary_images(imgs, 3);
    char header[512];
    serve_resp r;
    /* tritonclient's defaults: binary input, binary outputs */
    snprintf(header, sizeof header,
             "{\"inputs\":[{\"name\":\"image\",\"shape\":[3],\"datatype\":\"BYTES\","
             "\"parameters\":{\"binary_data_size\":%zu}}],\"outputs\":[{\"name\":\"labels\","
             "\"parameters\":{\"binary_data\":true}},{\"name\":\"scores\",\"parameters\":"
             "{\"binary_data\":true}}],\"parameters\":{\"top_k\":4}}",
             bin.n);
    send_binary("alpha", header, &bin, NULL, &r);
    check_binary_reply("binary in, binary out", &r, results, 3, 4, 2);
    serve_resp_free(&r);
    /* binary in, JSON out */
    snprintf(header, sizeof header,
             "{\"inputs\":[{\"name\":\"image\",\"shape\":[3],\"datatype\":\"BYTES\","
             "\"parameters\":{\"binary_data_size\":%zu}}],\"parameters\":{\"top_k\":4}}",
             bin.n);
    send_binary("alpha", header, &bin, NULL, &r);
    check_equal_native("binary in, JSON out", &r, "alpha", results, 3, 4);
    serve_resp_free(&r);
    /* JSON in, every output binary but scores (binary_data_output, then
     * the output's own false) */
    json_t *req = v2_request(imgs, 3, 4);
    json_object_set_new(json_object_get(req, "parameters"), "binary_data_output", json_true());
    json_object_set_new(req, "outputs",
                        json_pack("[{s:s},{s:s,s:{s:b}}]", "name", "labels", "name", "scores",
                                  "parameters", "binary_data", 0));
    infer_json(&A, "alpha", req, &r);
    check_binary_reply("JSON in, labels binary", &r, results, 3, 4, 1);
    serve_resp_free(&r);

    /* refusals of the binary data */
    struct {
        const char *what, *size, *hlen;
        size_t cut, extra;
    } bad[] = {
        {"binary_data_size not the bytes sent", "1", NULL, 0, 0},
        {"a truncated element", NULL, NULL, 10, 0},
        {"bytes after the last element", NULL, NULL, 0, 3},
        {"Inference-Header-Content-Length past the body", NULL, "99999999", 0, 0},
        {"Inference-Header-Content-Length not a number", NULL, "12x", 0, 0},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        buf b = {0};
        buf_put(&b, bin.p, bin.n - bad[i].cut);
        for (size_t e = 0; e < bad[i].extra; e++)
            buf_put(&b, "x", 1);
        char size[32];
        snprintf(size, sizeof size, "%zu", b.n);
        snprintf(header, sizeof header,
                 "{\"inputs\":[{\"name\":\"image\",\"shape\":[3],\"datatype\":\"BYTES\","
                 "\"parameters\":{\"binary_data_size\":%s}}]}",
                 bad[i].size ? bad[i].size : size);
        send_binary("alpha", header, &b, bad[i].hlen, &r);
        check_v2_error(bad[i].what, &r, 400, "invalid_request");
        serve_resp_free(&r);
        free(b.p);
    }
    /* an element that is not an image, and one of 0 bytes */
    buf junk = {0};
    buf_u32(&junk, 5);
    buf_put(&junk, "hello", 5);
    snprintf(header, sizeof header,
             "{\"inputs\":[{\"name\":\"image\",\"shape\":[1],\"datatype\":\"BYTES\","
             "\"parameters\":{\"binary_data_size\":%zu}}]}",
             junk.n);
    send_binary("alpha", header, &junk, NULL, &r);
    check_v2_error("a binary element that is not an image", &r, 415, "unsupported_image");
    serve_resp_free(&r);
    free(junk.p);
    buf empty = {0};
    buf_u32(&empty, 0);
    snprintf(header, sizeof header,
             "{\"inputs\":[{\"name\":\"image\",\"shape\":[1],\"datatype\":\"BYTES\","
             "\"parameters\":{\"binary_data_size\":4}}]}");
    send_binary("alpha", header, &empty, NULL, &r);
    check_v2_error("a binary element of 0 bytes", &r, 400, "invalid_request");
    serve_resp_free(&r);
    free(empty.p);
    /* binary_data_size and data both; binary data no input claims;
     * binary_data_size without the header */
    snprintf(header, sizeof header,
             "{\"inputs\":[{\"name\":\"image\",\"shape\":[1],\"datatype\":\"BYTES\","
             "\"parameters\":{\"binary_data_size\":%zu},\"data\":[\"%s\"]}]}",
             bin.n, "aGVsbG8=");
    send_binary("alpha", header, &bin, NULL, &r);
    check_v2_error("binary_data_size and data", &r, 400, "invalid_request");
    serve_resp_free(&r);
    json_t *claimless = with_input("data", json_pack("[s]", img.b64[0]));
    char *text = json_dumps(claimless, JSON_COMPACT);
    json_decref(claimless);
    send_binary("alpha", text, &bin, NULL, &r);
    free(text);
    check_v2_error("binary data no input claims", &r, 400, "invalid_request");
    serve_resp_free(&r);
    /* (small binary data: the bytes of an image could hold more commas than
     * a request may have values, and be refused 413 before the parse) */
    snprintf(header, sizeof header,
             "{\"inputs\":[{\"name\":\"image\",\"shape\":[1],\"datatype\":\"BYTES\","
             "\"parameters\":{\"binary_data_size\":9}}]}");
    buf whole = {0};
    buf_put(&whole, header, strlen(header));
    buf_u32(&whole, 5);
    buf_put(&whole, "hello", 5);
    infer_raw(&A, "alpha", whole.p, whole.n, "application/octet-stream", NULL, NULL, &r);
    check_v2_error("binary data without the header", &r, 400, "bad_json");
    serve_resp_free(&r);
    free(whole.p);
    free(bin.p);
    json_decref(results);
}

/* ---- 7. URLs ----------------------------------------------------------------- */

static void test_urls(void)
{
    fprintf(stderr, "== 7. an image URL as a BYTES element\n");
    loopback_http *o = loopback_http_start(
        &(loopback_http_behaviour){.kind = LOOPBACK_HTTP_BODY, .body = img.data[0],
                                   .body_len = img.len[0], .content_type = "image/png"},
        AF_INET);
    loopback_http *gone = loopback_http_start(
        &(loopback_http_behaviour){.kind = LOOPBACK_HTTP_BODY, .status = 404, .body = "no",
                                   .body_len = 2},
        AF_INET);
    VIT_ASSERT(o && gone);
    char url[128], url404[128];
    loopback_http_url(o, "/boot.png", url, sizeof url);
    loopback_http_url(gone, "/boot.png", url404, sizeof url404);
    json_t *results = native(&A, "alpha", all_images, 2, 5);
    serve_resp r;
    infer_json(&A, "alpha",
               json_pack("{s:[{s:s,s:[i],s:s,s:[s,s]}]}", "inputs", "name", "image", "shape", 2,
                         "datatype", "BYTES", "data", url, img.b64[1]),
               &r);
    check_equal_native("a URL element", &r, "alpha", results, 2, 5);
    CHECKF(loopback_http_requests(o) == 1, "the origin saw %u requests, want 1",
           loopback_http_requests(o));
    serve_resp_free(&r);
    infer_json(&A, "alpha",
               json_pack("{s:[{s:s,s:[i],s:s,s:[s]}]}", "inputs", "name", "image", "shape", 1,
                         "datatype", "BYTES", "data", url404),
               &r);
    check_v2_error("a URL whose origin answers 404", &r, 422, "fetch_failed");
    serve_resp_free(&r);
    json_decref(results);
    loopback_http_stop(o);
    loopback_http_stop(gone);
}

/* ---- 8. errors ----------------------------------------------------------------- */

static void test_errors(void)
{
    fprintf(stderr, "== 8. errors\n");
    bad_json_request("not JSON", "{\"inputs\": [", 400, "bad_json");
    bad_json_request("not an object", "[1, 2]", 400, "bad_json");
    bad_json_request("a duplicate key", "{\"inputs\": [], \"inputs\": []}", 400, "bad_json");
    bad_json_request("no inputs", "{\"id\": \"1\"}", 400, "invalid_request");
    bad_request("an unknown key", with_member("input", json_array()), 400, "invalid_request");
    bad_request("id not a string", with_member("id", json_integer(42)), 400, "invalid_request");
    bad_request("inputs not an array", with_member("inputs", json_object()), 400,
                "invalid_request");
    bad_request("two inputs", with_member("inputs", json_pack("[{},{}]")), 400, "invalid_request");
    bad_request("an input that is not an object", with_member("inputs", json_pack("[i]", 1)), 400,
                "invalid_request");
    bad_request("another input name", with_input("name", json_string("input0")), 400,
                "invalid_request");
    bad_request("datatype UINT32", with_input("datatype", json_string("UINT32")), 400,
                "invalid_request");
    bad_request("an unknown input key", with_input("contents", json_array()), 400,
                "invalid_request");
    bad_request("no data", with_input("data", NULL), 400, "invalid_request");
    bad_request("no shape", with_input("shape", NULL), 400, "invalid_request");
    bad_request("shape [1, 3]", with_input("shape", json_pack("[i,i]", 1, 3)), 400,
                "invalid_request");
    bad_request("shape [1, 1, 1]", with_input("shape", json_pack("[i,i,i]", 1, 1, 1)), 400,
                "invalid_request");
    bad_request("shape [-1]", with_input("shape", json_pack("[i]", -1)), 400, "invalid_request");
    bad_request("shape [\"1\"]", with_input("shape", json_pack("[s]", "1")), 400,
                "invalid_request");
    bad_request("shape [0]", with_input("shape", json_pack("[i]", 0)), 400, "invalid_request");
    bad_request("shape [2] with one element", with_input("shape", json_pack("[i]", 2)), 400,
                "invalid_request");
    bad_request("an element that is a number", with_input("data", json_pack("[i]", 7)), 400,
                "invalid_request");
    bad_request("nested deeper than shape [1]",
                with_input("data", json_pack("[[s]]", img.b64[0])), 400, "invalid_request");
    bad_request("more elements than shape [1]",
                with_input("data", json_pack("[s,s]", img.b64[0], img.b64[0])), 400,
                "invalid_request");
    bad_request("9 images, over max_images_per_request 8", with_input("shape", json_pack("[i]", 9)),
                413, "too_many_images");
    bad_request("an empty element", with_input("data", json_pack("[s]", "")), 400,
                "invalid_request");
    bad_request("bad base64", with_input("data", json_pack("[s]", "iVBO!!")), 400,
                "invalid_base64");
    bad_request("a data: URI without base64", with_input("data", json_pack("[s]", "data:,xyz")),
                400, "invalid_data_uri");
    bad_request("an ftp URL", with_input("data", json_pack("[s]", "ftp://127.0.0.1/x.png")), 400,
                "url_forbidden");
    bad_request("an http URL without a host", with_input("data", json_pack("[s]", "http://")), 400,
                "invalid_url");
    /* images that do not decode: as /v1/classify answers them */
    static const struct {
        const char *file, *code;
        int status;
    } images[] = {
        {"tests/data/images/not_image.txt", "unsupported_image", 415},
        {"tests/data/images/sample.gif", "unsupported_image", 415},
        {"tests/data/images/truncated.png", "bad_image", 400},
        {"tests/data/images/huge.png", "image_too_large", 413},
    };
    for (size_t i = 0; i < sizeof images / sizeof *images; i++) {
        char path[1024];
        size_t len;
        uint8_t *d = serve_read_file(test_path(path, sizeof path, images[i].file), &len);
        VIT_ASSERT(d);
        char *b64 = serve_base64(d, len);
        bad_request(images[i].file, with_input("data", json_pack("[s]", b64)), images[i].status,
                    images[i].code);
        free(b64);
        free(d);
    }
    bad_request("parameters not an object", with_member("parameters", json_array()), 400,
                "invalid_request");
    bad_request("top_k a string", with_member("parameters", json_pack("{s:s}", "top_k", "3")), 400,
                "invalid_request");
    bad_request("top_k 0", with_member("parameters", json_pack("{s:i}", "top_k", 0)), 400,
                "invalid_top_k");
    bad_request("top_k 1000001", with_member("parameters", json_pack("{s:i}", "top_k", 1000001)),
                400, "invalid_top_k");
    bad_request("binary_data_output not a boolean",
                with_member("parameters", json_pack("{s:i}", "binary_data_output", 1)), 400,
                "invalid_request");
    bad_request("outputs not an array", with_member("outputs", json_object()), 400,
                "invalid_request");
    bad_request("an unknown output", with_member("outputs", json_pack("[{s:s}]", "name", "logits")),
                400, "invalid_request");
    bad_request("an output twice",
                with_member("outputs", json_pack("[{s:s},{s:s}]", "name", "labels", "name",
                                                 "labels")),
                400, "invalid_request");
    bad_request("an unknown output key",
                with_member("outputs", json_pack("[{s:s,s:b}]", "name", "labels", "binary", 1)),
                400, "invalid_request");
    bad_request("binary_data not a boolean",
                with_member("outputs",
                            json_pack("[{s:s,s:{s:s}}]", "name", "labels", "parameters",
                                      "binary_data", "yes")),
                400, "invalid_request");
    /* JSON far bigger than a request of 8 images: refused before parsing */
    size_t n = 200000;
    char *big = malloc(2 * n + 64);
    VIT_ASSERT(big);
    size_t at = (size_t)sprintf(big, "{\"inputs\":[{\"data\":[");
    for (size_t i = 0; i < n; i++)
        big[at++] = '0', big[at++] = ',';
    strcpy(big + at - 1, "]}]}");
    bad_json_request("400 KB of [0,0,...]", big, 413, "too_many_values");
    free(big);

    /* from the headers: the body cap, the media type, the key, the method */
    size_t cap = 5u << 20; /* over A's 4 MiB */
    char *huge = malloc(cap);
    VIT_ASSERT(huge);
    memset(huge, ' ', cap);
    serve_resp r;
    serve_request(&A, h,
                  &(serve_req){.path = "/v2/models/alpha/infer", .content_type = "application/json",
                               .body = huge, .len = cap, .expect_100 = true},
                  &r);
    check_v2_error("a body over max_body_bytes", &r, 413, "body_too_large");
    serve_resp_free(&r);
    free(huge);
    serve_request(&A, h,
                  &(serve_req){.path = "/v2/models/alpha/infer", .content_type = "image/png",
                               .body = img.data[0], .len = img.len[0]},
                  &r);
    check_v2_error("Content-Type image/png", &r, 415, "unsupported_media_type");
    serve_resp_free(&r);
    serve_request(&A, h,
                  &(serve_req){.path = "/v2/models/alpha/infer", .auth = "Bearer wrong",
                               .content_type = "application/json", .body = "{}", .len = 2},
                  &r);
    check_v2_error("infer with a wrong key", &r, 401, "unauthorized");
    serve_resp_free(&r);
    struct {
        const char *method, *path, *allow;
    } methods[] = {
        {"GET", "/v2/models/alpha/infer", "POST"},
        {"POST", "/v2", "GET, HEAD"},
        {"DELETE", "/v2/models/alpha", "GET, HEAD"},
        {"PUT", "/v2/health/ready", "GET, HEAD"},
    };
    for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
        char what[96], allow[64];
        snprintf(what, sizeof what, "%s %s", methods[i].method, methods[i].path);
        serve_request(&A, h, &(serve_req){.method = methods[i].method, .path = methods[i].path},
                      &r);
        check_v2_error(what, &r, 405, "method_not_allowed");
        CHECKF(serve_header(&r, "Allow", allow, sizeof allow) &&
                   strcmp(allow, methods[i].allow) == 0,
               "%s: Allow %s, want %s", what, allow, methods[i].allow);
        serve_resp_free(&r);
    }
    /* paths the protocol has and vitfit does not route: 404 in its shape, as a
     * V2 client reads "error" as a string */
    static const char *const unrouted[] = {"/v2/", "/v2/models/alpha/versions/1/infer",
                                           "/v2/models/", "/v2/repository/index"};
    for (size_t i = 0; i < sizeof unrouted / sizeof *unrouted; i++) {
        serve_request(&A, h, &(serve_req){.path = unrouted[i]}, &r);
        check_v2_error(unrouted[i], &r, 404, "not_found");
        serve_resp_free(&r);
    }
}

/* ---- 9. metrics, the drain ----------------------------------------------------- */

static void test_metrics(void)
{
    fprintf(stderr, "== 9. metrics\n");
    serve_resp r;
    serve_request(&A, h, &(serve_req){.path = "/metrics"}, &r);
    CHECKF(r.status == 200 && r.body &&
               strstr(r.body, "vitfit_http_requests_total{route=\"/v2/models/{model}/infer\","
                              "status=\"200\"}"),
           "/metrics does not count the V2 infers");
    CHECKF(r.body && strstr(r.body, "vitfit_http_requests_total{route=\"/v2/models/{model}/infer\","
                                    "status=\"400\"}"),
           "/metrics does not count the V2 infers' 400s");
    serve_resp_free(&r);
}

static void test_drain(void)
{
    fprintf(stderr, "== 9. SIGTERM during a V2 infer\n");
    loopback_http *o = loopback_http_start(
        &(loopback_http_behaviour){.kind = LOOPBACK_HTTP_BODY, .body = png, .body_len = png_len,
                                   .content_type = "image/png", .delay_ms = 30000},
        AF_INET);
    VIT_ASSERT(o);
    const char *extra[] = {"--allow-private-urls", "--drain-timeout-ms", "300", NULL};
    serve_proc p;
    CHECK(serve_start(&p, data_dir, NULL, extra));
    if (p.pid) {
        char url[128], body[256];
        loopback_http_url(o, "/slow.png", url, sizeof url);
        snprintf(body, sizeof body,
                 "{\"inputs\":[{\"name\":\"image\",\"shape\":[1],\"datatype\":\"BYTES\","
                 "\"data\":[\"%s\"]}]}",
                 url);
        serve_pending c;
        serve_request_start(&c, &p, &(serve_req){.path = "/v2/models/_backbone/infer",
                                                 .content_type = "application/json",
                                                 .body = body, .len = strlen(body),
                                                 .timeout_ms = 30000});
        CHECKF(loopback_http_wait_requests(o, 1, 20000), "the fetch never reached the origin");
        int st = serve_stop(&p, SIGTERM, 10000);
        CHECKF(st == 0, "SIGTERM: exit %d", st);
        serve_request_join(&c);
        check_v2_error("a V2 infer cut by the drain", &c.r, 503, "shutting_down");
        char ra[16];
        CHECKF(serve_header(&c.r, "Retry-After", ra, sizeof ra) && atoi(ra) >= 1,
               "503 without Retry-After");
        serve_resp_free(&c.r);
    }
    loopback_http_stop(o);
}

/* ---- main ------------------------------------------------------------------------ */

int main(void)
{
    curl_global_init(CURL_GLOBAL_ALL);
    h = curl_easy_init();
    VIT_ASSERT(h);
    VIT_ASSERT(serve_tmpdir("kserve", data_dir, sizeof data_dir));
    serve_images_load(&img);
    png = img.data[0];
    png_len = img.len[0];
    char f[512];
    snprintf(f, sizeof f, "%s/tasks/alpha.safetensors", data_dir);
    VIT_ASSERT(serve_make_task(serve_model(), f, 10, "alpha", 21));
    snprintf(f, sizeof f, "%s/tasks/beta.safetensors", data_dir);
    VIT_ASSERT(serve_make_task(serve_model(), f, 4, "beta", 22));
    snprintf(f, sizeof f, "%s/tasks/broken.safetensors", data_dir);
    VIT_ASSERT(serve_write_file(f, "not a safetensors file", 22));

    const char *extra_a[] = {"--allow-private-urls", "--max-images-per-request", "8",
                             "--max-body-bytes", "4194304", NULL};
    const char *extra_b[] = {"--default-task", "alpha", NULL};
    bool up = serve_start(&A, data_dir, API_KEY, extra_a) &&
              serve_start(&B, data_dir, NULL, extra_b);
    CHECKF(up, "the servers did not start");
    if (up) {
        test_server_metadata();
        test_health();
        test_equals_native();
        test_protocol_examples();
        test_binary();
        test_urls();
        test_errors();
        test_models(); /* last of A's: it deletes beta */
        test_metrics();
    }
    if (A.pid)
        CHECKF(serve_stop(&A, SIGTERM, 30000) == 0, "server A did not exit 0");
    if (B.pid)
        CHECKF(serve_stop(&B, SIGTERM, 30000) == 0, "server B did not exit 0");
    if (up)
        test_drain();
    serve_images_free(&img);
    serve_model_free();
    curl_easy_cleanup(h);
    curl_global_cleanup();
    serve_rmtree(data_dir);
    int hf = serve_harness_failures();
    return check_result() || hf;
}
