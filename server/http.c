/*
 * http.c - the libmicrohttpd front end: routes, auth, bodies, suspend/resume.
 *
 * The access handler is a small state machine per request (libmicrohttpd's
 * suspend_resume_epoll / largepost pattern):
 *   first call   allocate the srv_request, route it, check method, auth,
 *                readiness, the declared Content-Length and (for classify) a
 *                full queue -- everything that needs no body is answered here,
 *                before a byte of the body is read;
 *   body chunks  appended under the max_body_bytes cap (multipart through
 *                MHD_PostProcessor); over the cap: 413;
 *   final call   cheap routes answer inline; classify and the task routes go
 *                to the prepare pool and the connection is suspended;
 *   resumed      the pipeline filled r->reply: send it.
 * The completion callback logs one line, counts the request in /metrics and
 * drops the connection's reference.  No HTTP thread decodes, fetches, loads
 * a task or waits on the model.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "finetune.h"
#include "http.h"
#include "jobs.h"
#include "model_info.h"
#include "pipeline.h"
#include "routes.h"
#include "sse.h"
#include "tasks.h"
#include "web.h"

struct srv_http {
    srv *s;
    struct MHD_Daemon *daemon;
    atomic_int active;    /* suspended requests not yet finished */
    uint64_t id_base;     /* random: request ids differ across restarts */
};

/* ---- requests ---- */

double srv_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void request_free(srv_request *r)
{
    free(r->body);
    for (int i = 0; i < r->num_parts; i++) {
        free((char *)r->parts[i].name);
        free((uint8_t *)r->parts[i].data);
    }
    free(r->parts);
    free(r->query_task);
    free(r->query_tasks);
    free(r->query_top_k);
    free(r->query_after);
    free(r->query_limit);
    for (int k = 0; r->logits && k < r->creq.num_images * r->num_tasks; k++)
        free(r->logits[k]);
    free(r->logits);
    api_classify_req_free(&r->creq); /* after the rows: it zeroes num_images */
    api_kserve_infer_free(&r->kreq);
    for (int j = 0; r->tasks && j < r->num_tasks; j++)
        if (r->tasks[j])
            task_free(r->tasks[j]);
    free(r->tasks);
    free(r->tensor);
    api_reply_free(&r->reply);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

void srv_request_unref(srv_request *r)
{
    if (r && atomic_fetch_sub(&r->refs, 1) == 1)
        request_free(r);
}

void srv_request_fail(srv_request *r, int status, const char *code, const char *fmt, ...)
{
    char message[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&r->lock);
    if (!r->failed) {
        r->failed = true;
        api_error(&r->reply, status, code, "%s", message);
        if ((status == 429 || status == 503) && r->reply.retry_after_s <= 0)
            r->reply.retry_after_s = 1; /* every 429 and 503 says when to come back */
    }
    pthread_mutex_unlock(&r->lock);
}

void srv_request_finish(srv_request *r)
{
    srv_http *h = r->server->http;
    srv_pipeline_prepared(r->server->pipe, r);
    pthread_mutex_lock(&r->lock);
    if (r->reply.status == 0)
        api_error(&r->reply, 500, "internal", "the request ended without a reply");
    r->done = true;
    pthread_mutex_unlock(&r->lock);
    MHD_resume_connection(r->conn);
    atomic_fetch_sub(&h->active, 1);
    srv_request_unref(r); /* the pipeline's reference */
}

/* ---- replies ---- */

static enum MHD_Result send_reply(srv_request *r)
{
    api_reply *rep = &r->reply;
    /* every error of a V2 route, wherever it was decided, in the
     * protocol's shape */
    if (r->kserve_errors)
        api_kserve_error_body(rep);
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        rep->body_len, rep->body ? rep->body : (char *)"", MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    bool ok = MHD_add_response_header(resp, "X-Request-Id", r->id) == MHD_YES &&
              MHD_add_response_header(resp, "Cache-Control", "no-store") == MHD_YES;
    if (ok && rep->content_type)
        ok = MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, rep->content_type) ==
             MHD_YES;
    if (ok && rep->retry_after_s > 0) {
        char v[16];
        snprintf(v, sizeof v, "%d", rep->retry_after_s);
        ok = MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, v) == MHD_YES;
    }
    if (ok && rep->location[0])
        ok = MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, rep->location) == MHD_YES;
    if (ok && rep->allow[0])
        ok = MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, rep->allow) == MHD_YES;
    if (ok && rep->infer_header_len > 0) {
        char v[24];
        snprintf(v, sizeof v, "%zu", rep->infer_header_len);
        ok = MHD_add_response_header(resp, "Inference-Header-Content-Length", v) == MHD_YES;
    }
    if (ok && rep->status == 401)
        ok = MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer") == MHD_YES;
    enum MHD_Result res = ok ? MHD_queue_response(r->conn, (unsigned)rep->status, resp) : MHD_NO;
    MHD_destroy_response(resp);
    return res;
}

/* ---- the first call: everything that needs no body ---- */

/* A request id the client may choose: short and printable, as it is echoed
 * in a header and logged. */
static bool id_acceptable(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)id[i]) && !strchr("-_.:/+=", id[i]))
            return false;
    return true;
}

/* Compares a presented key with the configured one in time that does not
 * depend on where they differ. */
static bool key_matches(const char *given, const char *key)
{
    size_t gl = strlen(given), kl = strlen(key);
    unsigned diff = (unsigned)(gl != kl);
    for (size_t i = 0; i < kl; i++)
        diff |= (unsigned char)key[i] ^ (unsigned char)(i < gl ? given[i] : 0);
    return diff == 0;
}

/* The embedded files: public (the page asks for the key itself), and served
 * while the model loads. */
static bool is_static(srv_route route)
{
    return route == SRV_ROUTE_PAGE || route == SRV_ROUTE_WEB || route == SRV_ROUTE_OPENAPI;
}

static bool authorized(srv_request *r)
{
    const char *key = r->server->cfg.api_key;
    if (!key[0] || r->route == SRV_ROUTE_HEALTHZ || r->route == SRV_ROUTE_READYZ ||
        r->route == SRV_ROUTE_KSERVE_LIVE || r->route == SRV_ROUTE_KSERVE_READY ||
        is_static(r->route))
        return true;
    const char *auth = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Authorization");
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
        return false;
    auth += 7;
    while (*auth == ' ')
        auth++;
    return key_matches(auth, key);
}

static char *dup_arg(struct MHD_Connection *c, const char *key)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, key);
    return v ? strdup(v) : NULL;
}

static enum MHD_Result on_form_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *filename, const char *content_type,
                                     const char *transfer_encoding, const char *data,
                                     uint64_t off, size_t size);

/* How the classify body is read, from its Content-Type; false after a 415. */
static bool classify_body_kind(srv_request *r)
{
    const char *ct = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Type");
    /* `curl -d '{...}'` labels JSON as a urlencoded form (and some clients
     * text/plain): read those as JSON too, they are never image bytes */
    if (!ct || strncasecmp(ct, "application/json", 16) == 0 ||
        strncasecmp(ct, "application/x-www-form-urlencoded", 33) == 0 ||
        strncasecmp(ct, "text/plain", 10) == 0) {
        r->body_kind = SRV_BODY_JSON;
        return true;
    }
    if (strncasecmp(ct, "multipart/form-data", 19) == 0) {
        r->body_kind = SRV_BODY_FORM;
        r->pp = MHD_create_post_processor(r->conn, 64 * 1024, on_form_field, r);
        if (!r->pp) {
            api_error(&r->reply, 400, "bad_form", "multipart/form-data without a usable boundary");
            return false;
        }
        return true;
    }
    if (strncasecmp(ct, "image/", 6) == 0 || strncasecmp(ct, "application/octet-stream", 24) == 0) {
        r->body_kind = SRV_BODY_RAW;
        r->query_task = dup_arg(r->conn, "task");
        r->query_tasks = dup_arg(r->conn, "tasks");
        r->query_top_k = dup_arg(r->conn, "top_k");
        return true;
    }
    api_error(&r->reply, 415, "unsupported_media_type",
              "Content-Type '%.64s' is not application/json, multipart/form-data or image/*", ct);
    return false;
}

/* How a V2 infer body is read: JSON, or with Inference-Header-Content-Length
 * a JSON header and binary tensor data (api/kserve.h); false after a 4xx. */
static bool kserve_body_kind(srv_request *r)
{
    const char *ct = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Type");
    const char *hl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                 "Inference-Header-Content-Length");
    /* tritonclient sends no Content-Type, others JSON or octet-stream (with
     * binary data); as for classify, what `curl -d` and some clients label
     * JSON as is read as JSON too */
    if (ct && strncasecmp(ct, "application/json", 16) != 0 &&
        strncasecmp(ct, "application/octet-stream", 24) != 0 &&
        strncasecmp(ct, "application/x-www-form-urlencoded", 33) != 0 &&
        strncasecmp(ct, "text/plain", 10) != 0) {
        api_error(&r->reply, 415, "unsupported_media_type",
                  "Content-Type '%.64s': an inference request is application/json (or "
                  "application/octet-stream with Inference-Header-Content-Length)",
                  ct);
        return false;
    }
    r->infer_header_len = -1;
    if (hl) {
        char *end;
        errno = 0;
        long long n = strtoll(hl, &end, 10);
        if (*hl < '0' || *hl > '9' || errno || *end || n > r->server->cfg.max_body_bytes) {
            api_error(&r->reply, 400, "invalid_request",
                      "Inference-Header-Content-Length '%.32s' is not a length within the "
                      "body",
                      hl);
            return false;
        }
        r->infer_header_len = n;
    }
    r->body_kind = SRV_BODY_KSERVE;
    return true;
}

/* Checks that need only the headers; fills r->reply when one fails. */
static void check_headers(srv_request *r, const srv_route_spec *rs, bool bad_name)
{
    srv *s = r->server;
    if (!rs) {
        api_error(&r->reply, 404, "not_found", "no route for this path");
        return;
    }
    if (!srv_route_allows(rs, r->method)) {
        api_error(&r->reply, 405, "method_not_allowed", "%s is not allowed here (allowed: %s)",
                  r->method, rs->allow);
        snprintf(r->reply.allow, sizeof r->reply.allow, "%s", rs->allow);
        return;
    }
    if (!authorized(r)) {
        api_error(&r->reply, 401, "unauthorized",
                  "missing or wrong API key: send 'Authorization: Bearer <key>'");
        return;
    }
    if (bad_name && r->route == SRV_ROUTE_WEB) {
        api_error(&r->reply, 404, "not_found", "no such file");
        return;
    }
    if (bad_name && srv_route_kserve(r->route)) {
        api_error(&r->reply, 404, "model_not_found", "no model of that name");
        return;
    }
    if (bad_name && r->route == SRV_ROUTE_TASK) {
        api_error(&r->reply, 422, "invalid_task_name",
                  "task names match ^[a-z0-9][a-z0-9._-]{0,63}$");
        return;
    }
    if (bad_name) {
        api_error(&r->reply, 404, "job_not_found", "no fine-tune job of that id");
        return;
    }
    if (r->declared_len > s->cfg.max_body_bytes) {
        api_error(&r->reply, 413, "body_too_large",
                  "the body (%lld bytes) is over max_body_bytes (%" PRId64 ")", r->declared_len,
                  s->cfg.max_body_bytes);
        return;
    }
    if (r->route == SRV_ROUTE_HEALTHZ || r->route == SRV_ROUTE_KSERVE_LIVE ||
        r->route == SRV_ROUTE_METRICS || is_static(r->route))
        return;
    if (atomic_load(&s->draining)) {
        api_error(&r->reply, 503, "shutting_down", "the server is shutting down");
        r->reply.retry_after_s = 1;
        return;
    }
    if (r->route != SRV_ROUTE_READYZ && r->route != SRV_ROUTE_KSERVE_READY &&
        !atomic_load(&s->ready)) {
        api_error(&r->reply, 503, "not_ready", "the model is still loading");
        r->reply.retry_after_s = 1;
        return;
    }
    bool inference = r->route == SRV_ROUTE_CLASSIFY || r->route == SRV_ROUTE_KSERVE_INFER;
    if ((inference || r->route == SRV_ROUTE_KSERVE_MODEL_READY) &&
        s->cfg.role == CFG_ROLE_TRAIN) {
        /* the routes exist (one route table, one API document) but this
         * replica does not serve them -- 503, which a client or load
         * balancer retries elsewhere, not 404, which says the URL is wrong;
         * a model is not "ready" where its infer would answer this */
        api_error(&r->reply, 503, "not_serving",
                  "this replica has role 'train': it runs fine-tune jobs and does not "
                  "classify; send classify requests to a replica of role 'serve' or 'all'");
        r->reply.retry_after_s = 1;
        return;
    }
    if (inference) {
        if (srv_pipeline_full(s->pipe)) {
            api_metrics_rejected(s->metrics, "queue_full");
            api_error(&r->reply, 429, "overloaded", "the request queue is full; retry later");
            r->reply.retry_after_s = 1;
            return;
        }
        if (r->route == SRV_ROUTE_CLASSIFY)
            classify_body_kind(r);
        else
            kserve_body_kind(r);
    }
    if (r->route == SRV_ROUTE_FINETUNE && strcmp(r->method, "POST") == 0) {
        /* application/json only: a web page may send a form or text/plain to
         * any origin without asking, and must not start jobs on a local
         * server that has no API key */
        const char *ct = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Type");
        if (!ct || strncasecmp(ct, "application/json", 16) != 0 ||
            (ct[16] && ct[16] != ';' && ct[16] != ' ')) {
            api_error(&r->reply, 415, "unsupported_media_type",
                      "Content-Type '%.64s': a fine-tune job is application/json",
                      ct ? ct : "(none)");
            return;
        }
        if (r->declared_len > API_FT_BODY_MAX) {
            api_error(&r->reply, 413, "body_too_large",
                      "a fine-tune job's body is at most %d bytes", API_FT_BODY_MAX);
            return;
        }
        r->body_kind = SRV_BODY_JSON;
    }
}

/* The declared Content-Length, or -1 when there is none or it is not a
 * plain decimal number (read once: the header checks and the choice of when
 * to answer both use it). */
static long long declared_length(struct MHD_Connection *c)
{
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    if (!cl || *cl < '0' || *cl > '9')
        return -1;
    char *end;
    errno = 0;
    long long n = strtoll(cl, &end, 10);
    return errno || *end ? -1 : n;
}

static srv_request *request_new(srv_http *h, struct MHD_Connection *conn, const char *url,
                                 const char *method)
{
    srv *s = h->s;
    srv_request *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    atomic_init(&r->refs, 1);
    pthread_mutex_init(&r->lock, NULL);
    api_reply_init(&r->reply);
    r->server = s;
    r->conn = conn;
    r->started = srv_now();
    r->deadline = r->started + s->cfg.request_timeout_ms * 1e-3;
    snprintf(r->method, sizeof r->method, "%s", method);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    r->fd = ci ? ci->connect_fd : -1;
    r->declared_len = declared_length(conn);
    const char *id = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
    if (id && id_acceptable(id))
        snprintf(r->id, sizeof r->id, "%s", id);
    else
        snprintf(r->id, sizeof r->id, "%016" PRIx64,
                 h->id_base ^ ((uint64_t)atomic_fetch_add(&s->next_id, 1) * 0x9E3779B97F4A7C15u));
    bool bad_name;
    const srv_route_spec *rs = srv_route_find(url, r->task_name, TASK_NAME_MAX, &bad_name);
    r->route = rs ? rs->route : SRV_ROUTE_NONE;
    /* a V2 client reads "error" as a string, on paths vitfit does not route
     * too (a model version, the repository extension) */
    r->kserve_errors = srv_route_kserve(r->route) || strcmp(url, "/v2") == 0 ||
                       strncmp(url, "/v2/", 4) == 0;
    check_headers(r, rs, bad_name);
    return r;
}

/* ---- bodies ---- */

/* Appends a chunk under the cap; false when the body is over it. */
static bool body_append(srv_request *r, const char *data, size_t size)
{
    size_t cap = (size_t)r->server->cfg.max_body_bytes;
    if (size > cap - r->body_len)
        return false;
    if (r->body_len + size > r->body_cap) {
        size_t want = r->body_cap ? r->body_cap : 64 * 1024;
        while (want < r->body_len + size)
            want = want > cap / 2 ? cap : want * 2;
        char *grown = realloc(r->body, want + 1);
        if (!grown)
            return false;
        r->body = grown;
        r->body_cap = want;
    }
    memcpy(r->body + r->body_len, data, size);
    r->body_len += size;
    r->body[r->body_len] = '\0';
    return true;
}

static enum MHD_Result on_form_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *filename, const char *content_type,
                                     const char *transfer_encoding, const char *data,
                                     uint64_t off, size_t size)
{
    (void)kind, (void)content_type, (void)transfer_encoding;
    srv_request *r = cls;
    size_t cap = (size_t)r->server->cfg.max_body_bytes;
    if (!key)
        key = ""; /* a part without name=: the parser refuses the empty name */
    api_form_part *last = r->num_parts ? &r->parts[r->num_parts - 1] : NULL;
    if (!(last && off > 0 && strcmp(last->name, key) == 0)) {
        if (r->num_parts == 64)
            return MHD_NO; /* no classify form has more fields */
        if (r->num_parts == r->cap_parts) {
            int want = r->cap_parts ? 2 * r->cap_parts : 4;
            api_form_part *grown = realloc(r->parts, (size_t)want * sizeof *grown);
            if (!grown)
                return MHD_NO;
            r->parts = grown;
            r->cap_parts = want;
        }
        last = &r->parts[r->num_parts];
        *last = (api_form_part){.name = strdup(key), .is_file = filename != NULL};
        if (!last->name)
            return MHD_NO;
        r->num_parts++;
    }
    if (size == 0)
        return MHD_YES;
    r->body_len += size; /* the form's bytes count against the cap as a body's */
    if (r->body_len > cap)
        return MHD_NO;
    uint8_t *grown = realloc((uint8_t *)last->data, last->len + size);
    if (!grown)
        return MHD_NO;
    memcpy(grown + last->len, data, size);
    last->data = grown;
    last->len += size;
    return MHD_YES;
}

/* Whether an error decided from the headers is sent at once, before the
 * body: when there is no body, when the client waits for our go-ahead
 * (Expect: 100-continue, so it has sent nothing), or when the body is
 * declared over twice the cap.  Otherwise the body is read and dropped first
 * (bounded: see on_request), so the reply is not lost to a reset. */
static bool answer_before_body(srv_request *r)
{
    const char *expect = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Expect");
    if (expect && strcasecmp(expect, "100-continue") == 0)
        return true;
    const char *te = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Transfer-Encoding");
    if (te && strncasecmp(te, "chunked", 7) == 0)
        return false;
    return r->declared_len <= 0 || r->declared_len > 2 * r->server->cfg.max_body_bytes;
}


static bool takes_body(const srv_request *r)
{
    return r->route == SRV_ROUTE_CLASSIFY || r->route == SRV_ROUTE_KSERVE_INFER ||
           (r->route == SRV_ROUTE_TASK && strcmp(r->method, "PUT") == 0) ||
           (r->route == SRV_ROUTE_FINETUNE && strcmp(r->method, "POST") == 0);
}

/* ---- the final call ---- */

static void task_job(srv_request *r)
{
    srv *s = r->server;
    api_reply tmp;
    api_reply_init(&tmp);
    if (strcmp(r->method, "PUT") == 0)
        api_task_put(s->tasks, r->task_name, r->body ? r->body : "", r->body_len, &tmp);
    else if (strcmp(r->method, "DELETE") == 0)
        api_task_delete(s->tasks, r->task_name, &tmp);
    else
        api_task_get(s->tasks, r->task_name, &tmp);
    pthread_mutex_lock(&r->lock);
    api_reply_free(&r->reply);
    r->reply = tmp;
    pthread_mutex_unlock(&r->lock);
    srv_request_finish(r);
}

/* GET /v2/models/{model} and its /ready: the task is loaded (file I/O), so
 * in the prepare pool. */
static void kserve_model_job(srv_request *r)
{
    srv *s = r->server;
    api_reply tmp;
    api_reply_init(&tmp);
    if (r->route == SRV_ROUTE_KSERVE_MODEL)
        api_kserve_model_metadata(s->model, s->tasks, r->task_name, &tmp);
    else
        api_kserve_model_ready(s->model, s->tasks, r->task_name, &tmp);
    pthread_mutex_lock(&r->lock);
    api_reply_free(&r->reply);
    r->reply = tmp;
    pthread_mutex_unlock(&r->lock);
    srv_request_finish(r);
}

/* POST /v1/finetune, cancel and the events as JSON: parsing, the data
 * sets' check and the job's files are I/O, so they run in the prepare pool. */
static void finetune_job(srv_request *r)
{
    srv *s = r->server;
    api_reply tmp;
    api_reply_init(&tmp);
    if (r->route == SRV_ROUTE_FINETUNE) {
        /* Opening a data set reads its whole listing (a manifest of a
         * million lines: seconds): one check at a time, so submissions never
         * hold more than one of the threads classify prepares on, and the
         * cheap refusals (queue full, task in progress) come first. */
        api_finetune_spec spec;
        api_finetune_env env = {.datasets_dir = s->datasets_dir, .tasks = s->tasks};
        if (api_finetune_parse_body(r->body, r->body_len, &spec, &tmp) == 0 &&
            jobs_admissible(s->jobs, &spec, &tmp) == 0) {
            if (atomic_exchange(&s->validating, true)) {
                api_error(&tmp, 429, "busy",
                          "another fine-tune job's data sets are being checked; retry");
                tmp.retry_after_s = 1;
            } else {
                if (api_finetune_check(&env, &spec, &tmp) == 0)
                    jobs_submit(s->jobs, &spec, &tmp);
                atomic_store(&s->validating, false);
            }
        }
    } else if (r->route == SRV_ROUTE_FINETUNE_CANCEL) {
        jobs_cancel(s->jobs, r->task_name, &tmp);
    } else {
        jobs_events(s->jobs, r->task_name, r->query_after, r->query_limit, &tmp);
    }
    pthread_mutex_lock(&r->lock);
    api_reply_free(&r->reply);
    r->reply = tmp;
    pthread_mutex_unlock(&r->lock);
    srv_request_finish(r);
}

static bool wants_event_stream(struct MHD_Connection *c)
{
    const char *accept = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Accept");
    return accept && strstr(accept, "text/event-stream") != NULL;
}

/* The cursor of an event stream: ?after=, else Last-Event-ID, else 0; -1
 * when one is given and is not a count. */
static long stream_cursor(struct MHD_Connection *c)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after");
    if (!v)
        v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Last-Event-ID");
    if (!v)
        return 0;
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    return *v >= '0' && *v <= '9' && !errno && !*end && n < LONG_MAX / 2 ? n : -1;
}

static void metrics_reply(srv_request *r)
{
    srv *s = r->server;
    api_metrics_gauges g = {
        .queue_depth = atomic_load(&s->ready) ? srv_pipeline_queue_depth(s->pipe) : 0,
        .active_requests = srv_http_active(s->http),
        .preparing = atomic_load(&s->ready) ? srv_pipeline_preparing(s->pipe) : 0,
        .ready = atomic_load(&s->ready),
    };
    if (s->tasks)
        task_store_stats_get(s->tasks, &g.tasks);
    if (s->jobs) {
        jobs_stats js;
        jobs_stats_get(s->jobs, &js);
        memcpy(g.jobs, js.by_status, sizeof g.jobs);
        memcpy(g.jobs_finished_total, js.finished_total, sizeof g.jobs_finished_total);
        g.train_images_per_second = js.images_per_second;
        g.train_seconds_total = js.train_seconds;
    }
    g.event_streams = sse_hub_streams(s->sse);
    api_metrics_reply(s->metrics, &g, &r->reply);
}

/* The 503 of a readiness probe when this replica should get no traffic:
 * still loading (the model, tasks, jobs), or its task directory's path names
 * something it cannot use (a file, a directory it may not open: every task
 * request would fail).  A missing tasks/ is not that: it holds no tasks, and
 * a PUT makes it.  Returns whether it answered. */
static bool answer_not_ready(srv *s, api_reply *reply)
{
    const char *why = NULL;
    if (!atomic_load(&s->ready))
        why = "the model is still loading";
    else if (s->tasks && !task_store_dir_usable(s->tasks))
        why = "the task directory is not a directory that can be opened: tasks can be neither "
              "read nor stored (see the log)";
    if (!why)
        return false;
    api_error(reply, 503, "not_ready", "%s", why);
    reply->retry_after_s = 1;
    return true;
}

/* Answers a request whose body is complete: inline, or suspended while the
 * prepare pool works on it.  Returns whether the connection was suspended. */
static bool dispatch(srv_http *h, srv_request *r)
{
    srv *s = h->s;
    srv_job_fn job = NULL;
    switch (r->route) {
    case SRV_ROUTE_HEALTHZ:
        api_json(&r->reply, 200, json_pack("{s:s}", "status", "ok"));
        return false;
    case SRV_ROUTE_READYZ:
        if (!answer_not_ready(s, &r->reply))
            api_json(&r->reply, 200, json_pack("{s:s}", "status", "ready"));
        return false;
    case SRV_ROUTE_METRICS:
        metrics_reply(r);
        return false;
    case SRV_ROUTE_MODEL:
        api_model_reply(s->model, s->fingerprint, &r->reply);
        return false;
    case SRV_ROUTE_TASKS:
        api_tasks_list(s->tasks, &r->reply);
        return false;
    case SRV_ROUTE_TASK:
        job = task_job;
        break;
    case SRV_ROUTE_FINETUNE:
        if (strcmp(r->method, "POST") == 0) {
            job = finetune_job;
            break;
        }
        jobs_list(s->jobs, MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "status"),
                  MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "limit"),
                  MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "after"),
                  &r->reply);
        return false;
    case SRV_ROUTE_FINETUNE_JOB:
        jobs_get(s->jobs, r->task_name, &r->reply);
        return false;
    case SRV_ROUTE_FINETUNE_CANCEL:
        job = finetune_job;
        break;
    case SRV_ROUTE_FINETUNE_EVENTS:
        if (!wants_event_stream(r->conn)) {
            r->query_after = dup_arg(r->conn, "after");
            r->query_limit = dup_arg(r->conn, "limit");
            job = finetune_job;
            break;
        }
        r->stream = true;
        return false;
    case SRV_ROUTE_CLASSIFY:
        job = srv_classify_job;
        break;
    case SRV_ROUTE_KSERVE_SERVER:
        api_kserve_server_metadata(&r->reply);
        return false;
    case SRV_ROUTE_KSERVE_LIVE:
        api_json(&r->reply, 200, json_pack("{s:b}", "live", 1));
        return false;
    case SRV_ROUTE_KSERVE_READY:
        if (!answer_not_ready(s, &r->reply))
            api_json(&r->reply, 200, json_pack("{s:b}", "ready", 1));
        return false;
    case SRV_ROUTE_KSERVE_MODEL:
    case SRV_ROUTE_KSERVE_MODEL_READY:
    case SRV_ROUTE_KSERVE_INFER:
        /* a name that cannot be a model is answered here, nothing queued */
        if (api_kserve_model_check(s->model, r->task_name, &r->reply) != 0)
            return false;
        job = r->route == SRV_ROUTE_KSERVE_INFER ? srv_classify_job : kserve_model_job;
        break;
    case SRV_ROUTE_PAGE:
    case SRV_ROUTE_WEB:
    case SRV_ROUTE_OPENAPI: {
        char path[sizeof "/web/" + TASK_NAME_MAX];
        snprintf(path, sizeof path, "/web/%s", r->task_name);
        /* "/" and "/openapi.yaml": the label is the path */
        r->asset = api_web_asset_find(r->route == SRV_ROUTE_WEB ? path : srv_route_label(r->route));
        if (!r->asset)
            api_error(&r->reply, 404, "not_found", "no such file");
        return false;
    }
    default:
        api_error(&r->reply, 500, "internal", "unrouted request");
        return false;
    }
    /* suspend first: the job may finish (and resume) before submit returns */
    atomic_fetch_add(&h->active, 1);
    r->suspended = true;
    MHD_suspend_connection(r->conn);
    if (!srv_pipeline_submit(s->pipe, r, job)) {
        if (atomic_load(&s->draining)) {
            api_error(&r->reply, 503, "shutting_down", "the server is shutting down");
        } else {
            api_metrics_rejected(s->metrics, "prepare_pool_full");
            api_error(&r->reply, 429, "overloaded",
                      "too many requests are being prepared; retry later");
        }
        r->reply.retry_after_s = 1;
        atomic_fetch_add(&r->refs, 1); /* srv_request_finish drops a pipeline reference */
        srv_request_finish(r);
    }
    return true;
}

/* GET /v1/finetune/{id}/events as text/event-stream (sse.c). */
static enum MHD_Result start_stream(srv_http *h, srv_request *r)
{
    srv *s = h->s;
    long after = stream_cursor(r->conn);
    if (after < 0) {
        api_error_field(&r->reply, 422, "invalid_field", "after",
                        "'after' (or Last-Event-ID) must be an event id (an integer >= 0)");
        return send_reply(r);
    }
    if (!jobs_exists(s->jobs, r->task_name)) {
        api_error(&r->reply, 404, "job_not_found", "no fine-tune job '%.40s'", r->task_name);
        return send_reply(r);
    }
    bool full;
    enum MHD_Result res = sse_respond(s->sse, r->conn, r->task_name, after, r->id, &full);
    if (full) {
        api_error(&r->reply, 503, "too_many_streams",
                  "%d event streams are open; poll GET /v1/finetune/{id}/events instead",
                  SSE_MAX_STREAMS);
        r->reply.retry_after_s = 5;
        return send_reply(r);
    }
    r->reply.status = 200; /* for the log line and /metrics */
    return res;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    srv_http *h = cls;
    srv_request *r = *con_cls;
    if (!r) {
        r = request_new(h, conn, url, method);
        if (!r)
            return MHD_NO;
        *con_cls = r;
        if (r->reply.status && answer_before_body(r))
            return send_reply(r); /* answered from the headers; the body is never read */
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t size = *upload_data_size, cap = (size_t)r->server->cfg.max_body_bytes;
        *upload_data_size = 0;
        r->body_seen = size > SIZE_MAX - r->body_seen ? SIZE_MAX : r->body_seen + size;
        /* A body that is answered already, or that the route ignores, is read
         * and dropped -- closing on a client still sending can lose the reply
         * to a reset -- but only up to twice the cap: past that, closing is
         * cheaper than reading on. */
        if (r->reply.status || !takes_body(r))
            return r->body_seen > 2 * cap ? MHD_NO : MHD_YES;
        /* a form counts every byte (preamble and part headers too) */
        bool ok = r->pp ? r->body_seen <= cap && MHD_post_process(r->pp, upload_data, size) == MHD_YES
                        : body_append(r, upload_data, size);
        if (!ok) {
            if (r->pp ? r->body_seen > cap || r->body_len > cap : size > cap - r->body_len)
                api_error(&r->reply, 413, "body_too_large",
                          "the body is over max_body_bytes (%" PRId64 ")",
                          r->server->cfg.max_body_bytes);
            else if (r->pp)
                api_error(&r->reply, 400, "bad_form", "the multipart/form-data body is malformed");
            else
                api_error(&r->reply, 500, "out_of_memory", "out of memory for the body");
            return r->body_seen > 2 * cap ? MHD_NO : MHD_YES; /* answered at the end */
        }
        return MHD_YES;
    }
    if (r->suspended) { /* resumed by srv_request_finish */
        pthread_mutex_lock(&r->lock);
        bool done = r->done;
        pthread_mutex_unlock(&r->lock);
        if (!done)
            return MHD_YES;
        r->suspended = false;
        return send_reply(r);
    }
    if (r->reply.status)
        return send_reply(r);
    if (r->pp) {
        /* MHD_NO: the form ended early (no closing boundary) or was malformed */
        bool complete = MHD_destroy_post_processor(r->pp) == MHD_YES;
        r->pp = NULL;
        if (!complete) {
            api_error(&r->reply, 400, "bad_form",
                      "the multipart/form-data body is incomplete (no closing boundary)");
            return send_reply(r);
        }
    }
    if (dispatch(h, r))
        return MHD_YES;
    if (r->stream && !r->reply.status)
        return start_stream(h, r);
    if (r->asset)
        return srv_web_send(r->conn, r->asset, r->id, &r->reply.status);
    return send_reply(r);
}

/* ---- completion: one log line, metrics, free ---- */

static void log_request(srv_request *r, int status, double ms)
{
    srv *s = r->server;
    const char *task = r->tasks && r->num_tasks > 0 && r->tasks[0] ? r->tasks[0]->name
                       : r->route == SRV_ROUTE_TASK                  ? r->task_name
                                                                     : "";
    if (s->cfg.log_format == CFG_LOG_TEXT) {
        fprintf(stderr, "%s %s %s %d %.1fms task=%s batch=%d\n", r->id, r->method,
                srv_route_label(r->route), status, ms, task[0] ? task : "-", r->batch_size);
        return;
    }
    json_t *j = json_pack("{s:s,s:s,s:o*,s:s,s:i,s:f,s:s,s:i}", "msg", "request", "id", r->id,
                          "method", api_json_text(r->method), "route", srv_route_label(r->route),
                          "status", status,
                          "ms", ms, "task", task, "batch", r->batch_size);
    char *line = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(4)) : NULL;
    if (line)
        fprintf(stderr, "%s\n", line);
    free(line);
    json_decref(j);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)conn;
    srv_request *r = *con_cls;
    if (!r)
        return;
    *con_cls = NULL;
    if (r->pp) {
        MHD_destroy_post_processor(r->pp);
        r->pp = NULL;
    }
    /* A reply that could not be sent is logged with the status it carried
     * (an oversized chunked upload is cut at the cap: 413), else 499. */
    int status = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK || r->reply.status ? r->reply.status
                                                                                : 499;
    double seconds = srv_now() - r->started;
    api_metrics_request(r->server->metrics, srv_route_label(r->route), status, seconds);
    log_request(r, status, seconds * 1e3);
    srv_request_unref(r);
}

/* ---- daemon ---- */

static int hex_value(char c)
{
    return c >= '0' && c <= '9' ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* MHD_OPTION_UNESCAPE_CALLBACK: %XX decoding of the path and query like
 * libmicrohttpd's own, except that "%00" stays as it is.  A decoded NUL
 * would end the C string a handler sees: PUT /v1/tasks/x%00y would then
 * write the task "x".  Kept literal, such a name is refused. */
static size_t unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls, (void)c;
    char *out = s;
    for (const char *in = s; *in;) {
        int hi, lo;
        if (in[0] == '%' && (hi = hex_value(in[1])) >= 0 && (lo = hex_value(in[2])) >= 0 &&
            (hi | lo) != 0) {
            *out++ = (char)(hi << 4 | lo);
            in += 3;
        } else {
            *out++ = *in++;
        }
    }
    *out = '\0';
    return (size_t)(out - s);
}

vit_status srv_http_start(srv *s, srv_http **out, int *port, vit_error *err)
{
    *out = NULL;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE}, *ai = NULL;
    char service[8];
    snprintf(service, sizeof service, "%d", s->cfg.port);
    int rc = getaddrinfo(s->cfg.host, service, &hints, &ai);
    if (rc != 0)
        return vit_error_set(err, VIT_ERR_INVALID, "host '%s': %s", s->cfg.host, gai_strerror(rc));
    srv_http *h = calloc(1, sizeof *h);
    if (!h) {
        freeaddrinfo(ai);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    }
    h->s = s;
    if (getrandom(&h->id_base, sizeof h->id_base, 0) != (ssize_t)sizeof h->id_base)
        h->id_base = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ull;
    /* poll(), not epoll: libmicrohttpd 0.9.75's edge-triggered epoll misses
     * the end of file of a client that sends part of a request and closes,
     * leaving its socket in CLOSE_WAIT until connection_timeout_s -- 50 such
     * clients held 45 of the connection slots (poll mode: none). */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    struct MHD_OptionItem pool[] = {
        {MHD_OPTION_THREAD_POOL_SIZE, s->cfg.http_threads, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    h->daemon = MHD_start_daemon(
        flags, (uint16_t)s->cfg.port, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR,
        ai->ai_addr, MHD_OPTION_CONNECTION_LIMIT, (unsigned)s->cfg.max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->cfg.connection_timeout_s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
        MHD_OPTION_ARRAY, s->cfg.http_threads > 1 ? pool : pool + 1, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!h->daemon) {
        free(h);
        return vit_error_set(err, VIT_ERR_IO, "cannot listen on %s:%d (in use, or not an address here)",
                             s->cfg.host, s->cfg.port);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    *port = di ? di->port : s->cfg.port;
    *out = h;
    return VIT_OK;
}

void srv_http_quiesce(srv_http *h)
{
    MHD_socket fd = MHD_quiesce_daemon(h->daemon);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
}

int srv_http_active(srv_http *h)
{
    return h ? atomic_load(&h->active) : 0;
}

void srv_http_stop(srv_http *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->daemon);
    free(h);
}
