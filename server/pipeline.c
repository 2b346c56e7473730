/*
 * pipeline.c - prepare pool, fetch pool, row queue and batching workers.
 *
 * Design.  A classify request becomes rows, one per (image, task): the
 * image is decoded and preprocessed once, and each of its tasks is one row of
 * a mixed batch (task_forward shares the GEMMs; only biases and head differ
 * per row).  Rows from any request and any task queue together; a free worker
 * takes up to max_batch of them, waiting at most max_batch_delay_ms after the
 * oldest arrived when fewer are queued.  The last row of a request builds its
 * reply and resumes the connection.
 *
 * Three bounded stages, each answering 429 when full instead of blocking:
 *   prepare pool (decode_threads): parse the body, decode, preprocess, look up
 *     tasks, queue rows -- CPU work kept off the HTTP threads;
 *   fetch pool (max_concurrent_fetches): image URLs, so that slow servers tie
 *     up at most these threads and never the prepare pool or HTTP threads;
 *   row queue (queue_capacity rows) in front of the workers.
 * A request admitted to a stage holds a reference; a request whose deadline
 * passed is answered 504 where it is next looked at, one whose client has gone
 * is dropped before it costs a forward pass.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "cli.h"
#include "fetch.h"
#include "image.h"
#include "pipeline.h"

/* ---- a bounded pool of threads running request jobs ---- */

typedef struct srv_job {
    srv_job_fn fn;
    srv_request *req;
} srv_job;

typedef struct srv_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    srv_job *ring;      /* cap entries */
    int cap, head, count;
    bool stop;
    pthread_t *threads;
    int nthreads;
    cli_gate gate;
} srv_pool;

/* One queued row and when it was queued (the batching delay counts from the
 * oldest). */
typedef struct srv_queued_row {
    srv_row row;
    double queued_at;
} srv_queued_row;

typedef struct srv_worker {
    struct srv_pipeline *p;
    int index;
    vit_state *state;
    float *batch;              /* (max_batch, 3, H, W) */
    const vit_task **tasks;    /* max_batch */
    float **out;               /* max_batch */
    srv_row *rows;             /* max_batch */
} srv_worker;

struct srv_pipeline {
    srv *s;
    srv_pool prepare, fetch;

    pthread_mutex_t mu;         /* the row queue */
    pthread_cond_t cv;
    srv_queued_row *queue;      /* ring of queue_capacity */
    int cap, head, count;
    bool stop;

    atomic_bool cancel;         /* drain deadline passed: in-flight fetches stop */
    int preparing;              /* classify requests admitted, rows not yet queued (mu) */
    double row_seconds;         /* moving average of forward seconds per row (mu) */

    srv_worker *workers;
    pthread_t *threads;
    int nworkers;
    cli_gate gate;
    size_t per_image;           /* floats of one preprocessed image */
};

static void *pool_main(void *arg)
{
    srv_pool *pool = arg;
    if (!cli_gate_pass(&pool->gate))
        return NULL;
    pthread_mutex_lock(&pool->mu);
    for (;;) {
        while (pool->count == 0 && !pool->stop)
            pthread_cond_wait(&pool->cv, &pool->mu);
        if (pool->count == 0)
            break; /* stopping and nothing left */
        srv_job job = pool->ring[pool->head];
        pool->head = (pool->head + 1) % pool->cap;
        pool->count--;
        pthread_mutex_unlock(&pool->mu);
        job.fn(job.req);
        pthread_mutex_lock(&pool->mu);
    }
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

static vit_status pool_start(srv_pool *pool, int threads, int cap, vit_error *err)
{
    memset(pool, 0, sizeof *pool);
    size_t n = (size_t)(unsigned)threads; /* config bounds: 1..256 */
    pool->ring = calloc((size_t)(unsigned)cap, sizeof *pool->ring);
    pool->threads = calloc(n, sizeof *pool->threads);
    if (!pool->ring || !pool->threads) {
        free(pool->ring);
        free(pool->threads);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for a thread pool");
    }
    pool->cap = cap;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->cv, NULL);
    /* arg_size 0: every thread gets the pool itself */
    vit_status st = cli_start_threads(pool->threads, threads, pool_main, pool, 0, &pool->gate, err);
    if (st != VIT_OK) {
        cli_gate_destroy(&pool->gate);
        pthread_mutex_destroy(&pool->mu);
        pthread_cond_destroy(&pool->cv);
        free(pool->ring);
        free(pool->threads);
        return st;
    }
    pool->nthreads = threads;
    return VIT_OK;
}

/* Queues a job; false when the pool is full or stopping. */
static bool pool_push(srv_pool *pool, srv_job_fn fn, srv_request *r)
{
    pthread_mutex_lock(&pool->mu);
    bool ok = !pool->stop && pool->count < pool->cap;
    if (ok) {
        pool->ring[(pool->head + pool->count) % pool->cap] = (srv_job){fn, r};
        pool->count++;
        pthread_cond_signal(&pool->cv);
    }
    pthread_mutex_unlock(&pool->mu);
    return ok;
}

/* Stops the pool: jobs still queued are answered 503 without running;
 * running ones finish; then joins. */
static void pool_stop(srv_pool *pool)
{
    if (!pool->threads)
        return;
    pthread_mutex_lock(&pool->mu);
    pool->stop = true;
    while (pool->count > 0) {
        srv_job job = pool->ring[pool->head];
        pool->head = (pool->head + 1) % pool->cap;
        pool->count--;
        pthread_mutex_unlock(&pool->mu);
        srv_request_fail(job.req, 503, "shutting_down", "the server is shutting down");
        srv_request_finish(job.req);
        pthread_mutex_lock(&pool->mu);
    }
    pthread_cond_broadcast(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
    for (int i = 0; i < pool->nthreads; i++)
        pthread_join(pool->threads[i], NULL);
    cli_gate_destroy(&pool->gate);
    pthread_mutex_destroy(&pool->mu);
    pthread_cond_destroy(&pool->cv);
    free(pool->ring);
    free(pool->threads);
    pool->threads = NULL;
}

/* ---- classify: prepare, fetch, decode ---- */

/* The client closed its end (EOF or reset) while the request waited: its
 * rows need not run.  MSG_PEEK leaves pipelined bytes for MHD. */
static bool client_gone(const srv_request *r)
{
    if (r->fd < 0)
        return false;
    char c;
    ssize_t n = recv(r->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0)
        return true;
    return n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

static bool expired(srv_request *r)
{
    if (srv_now() <= r->deadline)
        return false;
    srv_request_fail(r, 504, "timeout", "the request waited longer than request_timeout_ms (%d)",
                     r->server->cfg.request_timeout_ms);
    return true;
}

/* Moves a reply filled by a parser into r as its failure. */
static void fail_with(srv_request *r, api_reply *tmp)
{
    pthread_mutex_lock(&r->lock);
    if (!r->failed) {
        api_reply_free(&r->reply);
        r->reply = *tmp;
        r->failed = true;
        api_reply_init(tmp);
    }
    pthread_mutex_unlock(&r->lock);
    api_reply_free(tmp);
}

/* The prefix a per-image error carries when the request has several. */
static void image_prefix(const srv_request *r, int i, char *buf, size_t n)
{
    if (r->route == SRV_ROUTE_KSERVE_INFER) /* the V2 request's name for it */
        snprintf(buf, n, "inputs[0] element %d: ", i);
    else if (r->creq.images_form)
        snprintf(buf, n, "images[%d]: ", i);
    else
        buf[0] = '\0';
}

static void decode_and_queue(srv_request *r);
static bool resolve_tasks(srv_request *r);

/* The label of a fetch outcome in /metrics. */
static const char *fetch_result_name(api_fetch_result res)
{
    switch (res) {
    case API_FETCH_OK:
        return "ok";
    case API_FETCH_BAD_URL:
        return "bad_url";
    case API_FETCH_FORBIDDEN:
        return "forbidden";
    case API_FETCH_FAILED:
        return "failed";
    case API_FETCH_TIMEOUT:
        return "timeout";
    case API_FETCH_TOO_LARGE:
        return "too_large";
    }
    return "other";
}

/* Answers 429 with Retry-After: a stage was full. */
static void fail_overloaded(srv_request *r, const char *reason, const char *message)
{
    api_metrics_rejected(r->server->metrics, reason);
    srv_request_fail(r, 429, "overloaded", "%s", message);
    pthread_mutex_lock(&r->lock);
    if (r->reply.status == 429)
        r->reply.retry_after_s = 1;
    pthread_mutex_unlock(&r->lock);
}

static void fetch_job(srv_request *r)
{
    srv *s = r->server;
    /* All of a request's images are held until they are decoded together:
     * its URLs share one budget of max_body_bytes, as an upload would, so 32
     * URLs of url_max_bytes each cannot hold 32 x 16 MiB. */
    size_t budget = (size_t)s->cfg.max_body_bytes;
    for (int i = 0; i < r->creq.num_images; i++)
        if (r->creq.images[i].kind == API_IMAGE_BYTES)
            budget -= r->creq.images[i].len < budget ? r->creq.images[i].len : budget;
    for (int i = 0; i < r->creq.num_images; i++) {
        api_image_src *src = &r->creq.images[i];
        if (src->kind != API_IMAGE_URL)
            continue;
        if (expired(r)) {
            srv_request_finish(r);
            return;
        }
        double left_ms = (r->deadline - srv_now()) * 1e3;
        size_t max_bytes = (size_t)s->cfg.url_max_bytes;
        if (budget < max_bytes)
            max_bytes = budget > 0 ? budget : 1;
        api_fetch_limits lim = {
            .connect_timeout_ms = s->cfg.url_connect_timeout_ms,
            .timeout_ms = left_ms < s->cfg.url_timeout_ms ? (long)left_ms + 1 : s->cfg.url_timeout_ms,
            .max_bytes = max_bytes,
            .max_redirects = s->cfg.url_max_redirects,
            .allow_private = s->cfg.allow_private_urls,
            .cancel = &s->pipe->cancel,
        };
        uint8_t *data = NULL;
        size_t len = 0;
        char msg[512], prefix[32];
        api_fetch_result res = api_fetch(src->url, &lim, &data, &len, msg, sizeof msg);
        api_metrics_fetch(s->metrics, fetch_result_name(res));
        if (res != API_FETCH_OK && atomic_load(&s->pipe->cancel)) {
            srv_request_fail(r, 503, "shutting_down", "the server is shutting down");
            srv_request_finish(r);
            return;
        }
        if (res == API_FETCH_TOO_LARGE && max_bytes < (size_t)s->cfg.url_max_bytes) {
            srv_request_fail(r, 413, "image_too_large",
                             "the request's images together are over max_body_bytes (%lld)",
                             (long long)s->cfg.max_body_bytes);
            srv_request_finish(r);
            return;
        }
        if (res == API_FETCH_TIMEOUT && srv_now() >= r->deadline) {
            srv_request_fail(r, 504, "timeout",
                             "the request took longer than request_timeout_ms (%d) fetching "
                             "its image",
                             s->cfg.request_timeout_ms);
            srv_request_finish(r);
            return;
        }
        if (res != API_FETCH_OK) {
            api_reply tmp;
            api_reply_init(&tmp);
            image_prefix(r, i, prefix, sizeof prefix);
            api_fetch_reply(&tmp, res, prefix, msg);
            fail_with(r, &tmp);
            srv_request_finish(r);
            return;
        }
        budget -= len < budget ? len : budget;
        free(src->url);
        src->url = NULL;
        src->kind = API_IMAGE_BYTES;
        src->bytes = data;
        src->len = len;
    }
    decode_and_queue(r);
}

/* Parses the body into r->creq; false after failing r. */
static bool parse_classify(srv_request *r)
{
    srv *s = r->server;
    api_classify_limits lim = {
        .max_images = s->cfg.max_images_per_request,
        .max_image_bytes = (size_t)s->cfg.max_body_bytes,
        .max_tasks = 32,
        .max_top_k = 1000000,
    };
    api_reply tmp;
    api_reply_init(&tmp);
    int rc;
    switch (r->body_kind) {
    case SRV_BODY_JSON:
        rc = api_classify_from_json(&r->creq, r->body ? r->body : "", r->body_len, &lim, &tmp);
        break;
    case SRV_BODY_FORM:
        rc = api_classify_from_form(&r->creq, r->parts, r->num_parts, &lim, &tmp);
        break;
    case SRV_BODY_RAW:
        rc = api_classify_from_raw(&r->creq, (const uint8_t *)(r->body ? r->body : ""),
                                   r->body_len, r->query_task, r->query_tasks, r->query_top_k,
                                   &lim, &tmp);
        break;
    case SRV_BODY_KSERVE: /* the model is the URL's (checked on the HTTP thread) */
        rc = api_kserve_infer_parse(&r->creq, &r->kreq, r->body ? r->body : "", r->body_len,
                                    r->infer_header_len, r->task_name, &lim, &tmp);
        break;
    default:
        rc = api_error(&tmp, 415, "unsupported_media_type",
                       "send JSON, multipart/form-data or an image/* body");
    }
    /* the parsed request owns copies: the body can go now */
    free(r->body);
    r->body = NULL;
    r->body_len = r->body_cap = 0;
    if (rc != 0) {
        fail_with(r, &tmp);
        return false;
    }
    api_reply_free(&tmp);
    return true;
}

void srv_classify_job(srv_request *r)
{
    srv *s = r->server;
    if (expired(r) || !parse_classify(r)) {
        srv_request_finish(r);
        return;
    }
    /* known from the parse: refuse before any fetch or decode */
    int tasks = r->creq.num_tasks > 0 ? r->creq.num_tasks : 1;
    if (r->creq.num_images * tasks > s->pipe->cap) {
        srv_request_fail(r, 413, "too_many_rows",
                         "%d images x %d tasks is more than queue_capacity (%d) rows",
                         r->creq.num_images, tasks, s->pipe->cap);
        srv_request_finish(r);
        return;
    }
    /* an unknown task is answered now, not after its URLs were fetched */
    if (!resolve_tasks(r)) {
        srv_request_finish(r);
        return;
    }
    for (int i = 0; i < r->creq.num_images; i++) {
        if (r->creq.images[i].kind != API_IMAGE_URL)
            continue;
        /* waiting on the network is not "being prepared": workers must not
         * hold batches for a fetch that may take url_timeout_ms */
        srv_pipeline_prepared(s->pipe, r);
        if (!pool_push(&s->pipe->fetch, fetch_job, r)) {
            fail_overloaded(r, "fetch_pool_full", "too many image URLs are being fetched; retry");
            srv_request_finish(r);
        }
        return;
    }
    decode_and_queue(r);
}

/* Looks up the request's tasks (taking a reference to each); false after
 * failing r. */
static bool resolve_tasks(srv_request *r)
{
    srv *s = r->server;
    int n = r->creq.num_tasks;
    const char *only = NULL;
    if (n == 0) {
        n = 1;
        /* a V2 request names its model: none is the backbone's head */
        only = s->cfg.default_task[0] && r->route != SRV_ROUTE_KSERVE_INFER ? s->cfg.default_task
                                                                             : NULL;
    }
    r->tasks = calloc((size_t)n, sizeof *r->tasks);
    if (!r->tasks) {
        srv_request_fail(r, 500, "out_of_memory", "out of memory");
        return false;
    }
    r->num_tasks = n;
    for (int j = 0; j < n; j++) {
        const char *name = r->creq.num_tasks ? r->creq.tasks[j] : only;
        if (!name) {
            if (vit_config_output_dim(&s->model->cfg) <= 0 || s->model->cfg.num_classes <= 0) {
                srv_request_fail(r, 422, "no_task",
                                 "the backbone has no classification head: name a task");
                return false;
            }
            continue; /* NULL: the backbone's own head */
        }
        vit_error err = {0};
        vit_status st = task_store_get(s->tasks, name, &r->tasks[j], &err);
        if (st == VIT_ERR_NOT_FOUND) {
            srv_request_fail(r, 404, "task_not_found", "task '%s' does not exist", name);
            return false;
        }
        if (st == VIT_ERR_INVALID) {
            srv_request_fail(r, 422, "invalid_task_name", "%s", err.message);
            return false;
        }
        if (st != VIT_OK) {
            srv_request_fail(r, st == VIT_ERR_NOMEM || st == VIT_ERR_IO ? 500 : 422,
                             "task_unusable", "%s", err.message);
            return false;
        }
    }
    return true;
}

/* Decodes and preprocesses every image into r->tensor; false after failing r. */
static bool decode_images(srv_request *r)
{
    srv *s = r->server;
    size_t per_image = s->pipe->per_image;
    int n = r->creq.num_images;
    r->tensor = malloc((size_t)n * per_image * sizeof *r->tensor); /* n <= 256, per_image < 2^28 */
    if (!r->tensor) {
        srv_request_fail(r, 500, "out_of_memory", "out of memory for %d images", n);
        return false;
    }
    for (int i = 0; i < n; i++) {
        api_image_src *src = &r->creq.images[i];
        VIT_ASSERT(src->kind == API_IMAGE_BYTES);
        img_image img;
        vit_error err = {0};
        vit_status st = img_decode(src->bytes, src->len, (size_t)s->cfg.max_image_pixels, &img, &err);
        free(src->bytes); /* decoded (or refused): the encoded bytes are done */
        src->bytes = NULL;
        src->len = 0;
        if (st == VIT_OK) {
            st = img_to_tensor(&img, &s->model->cfg.preprocess, r->tensor + (size_t)i * per_image,
                               &err);
            img_free(&img);
        }
        if (st != VIT_OK) {
            char prefix[32];
            image_prefix(r, i, prefix, sizeof prefix);
            int status = st == VIT_ERR_TOO_LARGE     ? 413
                         : st == VIT_ERR_UNSUPPORTED ? 415
                         : st == VIT_ERR_NOMEM       ? 500
                                                     : 400;
            const char *code = st == VIT_ERR_TOO_LARGE     ? "image_too_large"
                               : st == VIT_ERR_UNSUPPORTED ? "unsupported_image"
                               : st == VIT_ERR_NOMEM       ? "out_of_memory"
                                                           : "bad_image";
            srv_request_fail(r, status, code, "%s%s", prefix, err.message);
            return false;
        }
    }
    return true;
}

/* Logit buffers for every row; false after failing r. */
static bool alloc_logits(srv_request *r)
{
    const vit_model *m = r->server->model;
    int rows = r->creq.num_images * r->num_tasks;
    r->logits = calloc((size_t)rows, sizeof *r->logits);
    if (!r->logits)
        goto nomem;
    for (int i = 0; i < r->creq.num_images; i++)
        for (int j = 0; j < r->num_tasks; j++) {
            int K = r->tasks[j] ? r->tasks[j]->num_classes : vit_config_output_dim(&m->cfg);
            if (!(r->logits[i * r->num_tasks + j] = malloc((size_t)K * sizeof(float))))
                goto nomem;
        }
    return true;
nomem:
    srv_request_fail(r, 500, "out_of_memory", "out of memory for the logits");
    return false;
}

/* r has left the prepare stage (rows queued, or answered without): one less
 * image batch that a waiting worker could expect.  Caller holds p->mu. */
static void prepared_locked(srv_pipeline *p, srv_request *r)
{
    if (!r->preparing)
        return;
    r->preparing = false;
    p->preparing--;
    pthread_cond_broadcast(&p->cv);
}

void srv_pipeline_prepared(srv_pipeline *p, srv_request *r)
{
    if (!p || !r->preparing)
        return; /* the flag is only ever set and cleared by the thread preparing r */
    pthread_mutex_lock(&p->mu);
    prepared_locked(p, r);
    pthread_mutex_unlock(&p->mu);
}

/* Queues all of r's rows or none: false when the queue cannot take them
 * (a request larger than the whole queue is admitted when it is empty). */
static bool queue_rows(srv_pipeline *p, srv_request *r, int rows)
{
    pthread_mutex_lock(&p->mu);
    prepared_locked(p, r);
    bool ok = !p->stop && (p->count + rows <= p->cap || p->count == 0) && rows <= p->cap;
    if (ok) {
        atomic_store(&r->rows_pending, rows);
        double now = srv_now();
        int k = 0;
        for (int i = 0; i < r->creq.num_images; i++)
            for (int j = 0; j < r->num_tasks; j++, k++)
                p->queue[(p->head + p->count + k) % p->cap] =
                    (srv_queued_row){.row = {r, i, j}, .queued_at = now};
        p->count += rows;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return ok;
}

static void decode_and_queue(srv_request *r)
{
    srv *s = r->server;
    if (expired(r) || !decode_images(r) || !alloc_logits(r)) {
        srv_request_finish(r);
        return;
    }
    int rows = r->creq.num_images * r->num_tasks;
    if (rows > s->pipe->cap) {
        srv_request_fail(r, 413, "too_many_rows",
                         "%d images x %d tasks is more than queue_capacity (%d) rows", r->creq.num_images,
                         r->num_tasks, s->pipe->cap);
        srv_request_finish(r);
        return;
    }
    if (!queue_rows(s->pipe, r, rows)) {
        fail_overloaded(r, "queue_full", "the request queue is full; retry later");
        srv_request_finish(r);
    }
}

/* ---- workers ---- */

/* Builds the success reply from every row's logits. */
static void complete(srv_request *r)
{
    srv *s = r->server;
    int rows = r->creq.num_images * r->num_tasks;
    json_t **results = calloc((size_t)rows, sizeof *results);
    bool ok = results != NULL;
    for (int i = 0; ok && i < r->creq.num_images; i++)
        for (int j = 0; ok && j < r->num_tasks; j++) {
            const vit_task *t = r->tasks[j];
            const char *const *labels =
                (const char *const *)(t ? t->labels : s->model->labels);
            int K = t ? t->num_classes : vit_config_output_dim(&s->model->cfg);
            results[i * r->num_tasks + j] = api_classify_result(
                t ? t->name : NULL, labels, r->logits[i * r->num_tasks + j], K, r->creq.top_k);
            ok = results[i * r->num_tasks + j] != NULL;
        }
    if (!ok) {
        for (int k = 0; results && k < rows; k++)
            json_decref(results[k]);
        free(results);
        srv_request_fail(r, 500, "non_finite", "the model produced a non-finite score");
        return;
    }
    if (r->route == SRV_ROUTE_KSERVE_INFER) { /* the same results, in V2 tensors */
        api_reply tmp;
        api_reply_init(&tmp);
        api_kserve_infer_reply(&r->kreq, r->task_name, r->id, results, rows, &tmp);
        for (int k = 0; k < rows; k++)
            json_decref(results[k]);
        free(results);
        pthread_mutex_lock(&r->lock);
        if (!r->failed) {
            api_reply_free(&r->reply);
            r->reply = tmp;
            api_reply_init(&tmp);
        }
        pthread_mutex_unlock(&r->lock);
        api_reply_free(&tmp);
        return;
    }
    json_t *reply = api_classify_reply(&r->creq, results, r->num_tasks);
    free(results);
    pthread_mutex_lock(&r->lock);
    if (!r->failed)
        api_json(&r->reply, 200, reply);
    else
        json_decref(reply);
    pthread_mutex_unlock(&r->lock);
}

/* One row of r is done (run or skipped); the last one answers. */
static void row_done(srv_request *r)
{
    if (atomic_fetch_sub(&r->rows_pending, 1) != 1)
        return;
    pthread_mutex_lock(&r->lock);
    bool failed = r->failed;
    pthread_mutex_unlock(&r->lock);
    if (!failed)
        complete(r);
    srv_request_finish(r);
}

static bool request_failed(srv_request *r)
{
    pthread_mutex_lock(&r->lock);
    bool failed = r->failed;
    pthread_mutex_unlock(&r->lock);
    return failed;
}

/* Takes up to max_batch rows; 0 when stopping with nothing left.
 *
 * When fewer than max_batch rows are queued it may wait for more, but only
 * while other requests are still being prepared (their rows are coming: with
 * none, waiting only adds latency -- one client alone never waits), and for
 * at most max_batch_delay_ms after the oldest row arrived and a quarter of
 * what a full batch costs (so a model whose forward pass takes a millisecond
 * never waits long for a slightly larger batch).  Closed-loop clients show
 * why it matters: their next requests arrive together when a batch ends,
 * and a worker that runs the first one alone makes the rest wait a whole
 * forward pass -- half the throughput of ViT-B/16 at 8 clients. */
static int take_rows(srv_pipeline *p, srv_row *rows)
{
    const vit_cfg *cfg = &p->s->cfg;
    pthread_mutex_lock(&p->mu);
    while (p->count == 0 && !p->stop)
        pthread_cond_wait(&p->cv, &p->mu);
    double delay = cfg->max_batch_delay_ms * 1e-3, full = p->row_seconds * cfg->max_batch / 4;
    if (delay > full)
        delay = full;
    if (p->count > 0 && p->count < cfg->max_batch && p->preparing > 0 && delay > 0 && !p->stop) {
        double until = p->queue[p->head].queued_at + delay;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double wait = until - srv_now();
        if (wait > 0) {
            ts.tv_sec += (time_t)wait;
            ts.tv_nsec += (long)((wait - floor(wait)) * 1e9);
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            while (p->count < cfg->max_batch && p->preparing > 0 && !p->stop &&
                   pthread_cond_timedwait(&p->cv, &p->mu, &ts) != ETIMEDOUT)
                ;
        }
    }
    int n = p->count < cfg->max_batch ? p->count : cfg->max_batch;
    for (int i = 0; i < n; i++)
        rows[i] = p->queue[(p->head + i) % p->cap].row;
    p->head = (p->head + n) % p->cap;
    p->count -= n;
    pthread_mutex_unlock(&p->mu);
    return n;
}

static void *worker_main(void *arg)
{
    srv_worker *w = arg;
    srv_pipeline *p = w->p;
    srv *s = p->s;
    if (!cli_gate_pass(&p->gate))
        return NULL;
    for (;;) {
        int taken = take_rows(p, w->rows);
        if (taken == 0)
            break;
        /* drop rows nobody waits for any more before they cost a forward pass */
        int b = 0;
        for (int i = 0; i < taken; i++) {
            srv_row row = w->rows[i];
            srv_request *r = row.req;
            if (request_failed(r) || expired(r)) {
                row_done(r);
                continue;
            }
            if (client_gone(r)) {
                srv_request_fail(r, 499, "client_closed", "the client closed the connection");
                api_metrics_rejected(s->metrics, "client_closed");
                row_done(r);
                continue;
            }
            memcpy(w->batch + (size_t)b * p->per_image,
                   r->tensor + (size_t)row.image * p->per_image, p->per_image * sizeof(float));
            w->tasks[b] = r->tasks[row.task];
            w->out[b] = r->logits[row.image * r->num_tasks + row.task];
            w->rows[b++] = row;
        }
        if (b == 0)
            continue;
        double t0 = srv_now();
        vit_error err = {0};
        vit_status st = task_forward(s->model, w->state, w->batch, b, w->tasks, w->out, &err);
        double took = srv_now() - t0;
        api_metrics_batch(s->metrics, w->index, b, took);
        pthread_mutex_lock(&p->mu);
        p->row_seconds = p->row_seconds > 0 ? 0.8 * p->row_seconds + 0.2 * took / b : took / b;
        pthread_mutex_unlock(&p->mu);
        for (int i = 0; i < b; i++) {
            srv_request *r = w->rows[i].req;
            const vit_task *t = w->tasks[i];
            api_metrics_images(s->metrics, t ? t->name : NULL, 1);
            if (st != VIT_OK)
                srv_request_fail(r, 500, "inference_failed", "%s", err.message);
            pthread_mutex_lock(&r->lock);
            if (b > r->batch_size)
                r->batch_size = b;
            pthread_mutex_unlock(&r->lock);
            row_done(r);
        }
    }
    return NULL;
}

/* ---- start, stop ---- */

static void free_workers(srv_pipeline *p)
{
    for (int i = 0; p->workers && i < p->nworkers; i++) {
        srv_worker *w = &p->workers[i];
        vit_state_free(w->state);
        free(w->batch);
        free(w->tasks);
        free(w->out);
        free(w->rows);
    }
    free(p->workers);
    p->workers = NULL;
}

int srv_worker_threads(const vit_cfg *cfg)
{
    if (cfg->threads_per_worker > 0)
        return cfg->threads_per_worker;
    int t = (int)cli_default_threads() / cfg->workers;
    return t < 1 ? 1 : t;
}

static vit_status make_workers(srv_pipeline *p, vit_error *err)
{
    const vit_cfg *cfg = &p->s->cfg;
    int mb = cfg->max_batch;
    p->nworkers = cfg->workers;
    p->workers = calloc((size_t)p->nworkers, sizeof *p->workers);
    if (!p->workers)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for the workers");
    int threads = srv_worker_threads(cfg);
    for (int i = 0; i < p->nworkers; i++) {
        srv_worker *w = &p->workers[i];
        w->p = p;
        w->index = i;
        w->batch = malloc((size_t)mb * p->per_image * sizeof *w->batch);
        w->tasks = calloc((size_t)mb, sizeof *w->tasks);
        w->out = calloc((size_t)mb, sizeof *w->out);
        w->rows = calloc((size_t)mb, sizeof *w->rows);
        if (!w->batch || !w->tasks || !w->out || !w->rows)
            return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for worker %d", i);
        vit_status st = vit_state_create(p->s->model, mb, threads, &w->state, err);
        if (st != VIT_OK)
            return vit_error_prefix(err, "worker %d", i);
    }
    return VIT_OK;
}

vit_status srv_pipeline_start(srv *s, srv_pipeline **out, vit_error *err)
{
    *out = NULL;
    const vit_cfg *cfg = &s->cfg;
    srv_pipeline *p = calloc(1, sizeof *p);
    if (!p)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for the pipeline");
    p->s = s;
    const img_preprocess *pre = &s->model->cfg.preprocess;
    p->per_image = (size_t)3 * (size_t)pre->crop_h * (size_t)pre->crop_w;
    p->cap = cfg->queue_capacity;
    p->queue = calloc((size_t)p->cap, sizeof *p->queue);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    vit_status st = p->queue ? make_workers(p, err)
                             : vit_error_set(err, VIT_ERR_NOMEM, "out of memory for the queue");
    if (st == VIT_OK) {
        size_t n = (size_t)(unsigned)p->nworkers; /* 1..64 (config bounds) */
        p->threads = calloc(n, sizeof *p->threads);
        if (!p->threads)
            st = vit_error_set(err, VIT_ERR_NOMEM, "out of memory for the workers");
        else /* thread i gets &p->workers[i] */
            st = cli_start_threads(p->threads, p->nworkers, worker_main, p->workers,
                                   sizeof *p->workers, &p->gate, err);
        if (st != VIT_OK) {
            free(p->threads);
            p->threads = NULL;
        }
    }
    if (st == VIT_OK && (st = pool_start(&p->fetch, cfg->max_concurrent_fetches,
                                         cfg->queue_capacity, err)) == VIT_OK) {
        if ((st = pool_start(&p->prepare, cfg->decode_threads, cfg->queue_capacity, err)) != VIT_OK)
            pool_stop(&p->fetch);
    }
    if (st != VIT_OK) {
        if (p->threads) { /* workers are running: stop them */
            pthread_mutex_lock(&p->mu);
            p->stop = true;
            pthread_cond_broadcast(&p->cv);
            pthread_mutex_unlock(&p->mu);
            for (int i = 0; i < p->nworkers; i++)
                pthread_join(p->threads[i], NULL);
            cli_gate_destroy(&p->gate);
            free(p->threads);
        }
        free_workers(p);
        free(p->queue);
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
        free(p);
        return st;
    }
    *out = p;
    return VIT_OK;
}

bool srv_pipeline_submit(srv_pipeline *p, srv_request *r, srv_job_fn fn)
{
    atomic_fetch_add(&r->refs, 1);
    if (fn == srv_classify_job) { /* its rows are coming: workers may wait for them */
        pthread_mutex_lock(&p->mu);
        p->preparing++;
        r->preparing = true;
        pthread_mutex_unlock(&p->mu);
    }
    if (pool_push(&p->prepare, fn, r))
        return true;
    srv_pipeline_prepared(p, r);
    atomic_fetch_sub(&r->refs, 1); /* the caller still holds its own */
    return false;
}

int srv_pipeline_queue_depth(srv_pipeline *p)
{
    pthread_mutex_lock(&p->mu);
    int n = p->count;
    pthread_mutex_unlock(&p->mu);
    return n;
}

int srv_pipeline_preparing(srv_pipeline *p)
{
    pthread_mutex_lock(&p->mu);
    int n = p->preparing;
    pthread_mutex_unlock(&p->mu);
    return n;
}

bool srv_pipeline_full(srv_pipeline *p)
{
    return srv_pipeline_queue_depth(p) >= p->cap;
}

void srv_pipeline_stop(srv_pipeline *p)
{
    /* the drain time is over: fetches still running stop within a second */
    atomic_store(&p->cancel, true);
    pool_stop(&p->prepare);
    pool_stop(&p->fetch);
    /* rows still queued are answered 503; workers finish their batch */
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    while (p->count > 0) {
        srv_row row = p->queue[p->head].row;
        p->head = (p->head + 1) % p->cap;
        p->count--;
        pthread_mutex_unlock(&p->mu);
        srv_request_fail(row.req, 503, "shutting_down", "the server is shutting down");
        row_done(row.req);
        pthread_mutex_lock(&p->mu);
    }
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (p->threads) {
        for (int i = 0; i < p->nworkers; i++)
            pthread_join(p->threads[i], NULL);
        cli_gate_destroy(&p->gate);
        free(p->threads);
        p->threads = NULL;
    }
}

void srv_pipeline_free(srv_pipeline *p)
{
    if (!p)
        return;
    free_workers(p);
    free(p->queue);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}
