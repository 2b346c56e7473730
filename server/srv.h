/*
 * srv.h - the running `vitfit serve`: what its parts share.
 *
 * One srv holds everything a request can touch: the config (read-only after
 * start), the model and its fingerprint (immutable once ready), the task
 * store, the metrics, the pipeline (server/pipeline.c) and the HTTP daemon
 * (server/http.c).  A request (srv_request) travels
 *
 *   HTTP thread: headers, body (capped), route, auth  --suspend-->
 *   prepare pool: parse, fetch URLs (fetch pool), decode, preprocess, tasks
 *   row queue -> worker: batch of rows, task_forward, replies  --resume-->
 *   HTTP thread: send the reply; completion callback: log, metrics, free.
 *
 * so no HTTP thread parses a large body, decodes an image, fetches a URL or
 * waits on the model, and every queue on the way is bounded and answers 429
 * at once when full.
 */
#ifndef VIT_SERVER_SRV_H
#define VIT_SERVER_SRV_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>

#include "api.h"
#include "classify.h"
#include "config.h"
#include "kserve.h"
#include "metrics.h"
#include "routes.h"
#include "task.h"
#include "task_store.h"
#include "vit.h"

typedef struct srv_pipeline srv_pipeline;
typedef struct srv_http srv_http;
typedef struct jobs jobs;
typedef struct sse_hub sse_hub;
typedef struct task_watch task_watch;

typedef struct srv {
    vit_cfg cfg;              /* read-only after start */
    char model_path[CFG_PATH_SIZE]; /* cfg.model, or an hf: model's cached snapshot */
    int stop_signals;         /* read end of the stop-signal pipe (cli_serve.c) */
    vit_model *model;         /* NULL until loaded; immutable once `ready` */
    char fingerprint[65];
    task_store *tasks;
    task_watch *task_watch;   /* keeps tasks in step with tasks/ (server/task_watch.c) */
    api_metrics *metrics;
    srv_pipeline *pipe;
    srv_http *http;
    jobs *jobs;               /* fine-tune jobs (server/jobs.c) */
    sse_hub *sse;             /* their live event streams (server/sse.c) */
    char datasets_dir[CFG_PATH_SIZE + 16]; /* <data_dir>/datasets */
    atomic_bool ready;        /* model loaded, packed, workers started */
    atomic_bool draining;     /* SIGTERM seen: new work gets 503 */
    atomic_bool validating;   /* a fine-tune request's data sets are being opened */
    atomic_uint_fast64_t next_id; /* request ids when the client sends none */
} srv;

/* How a classify body arrived. */
typedef enum srv_body_kind {
    SRV_BODY_NONE,
    SRV_BODY_JSON,
    SRV_BODY_FORM,
    SRV_BODY_RAW,
    SRV_BODY_KSERVE, /* a V2 infer request: JSON, or JSON + binary tensor data */
} srv_body_kind;

/* One row of the model's batch: image `image` of req through task `task`. */
typedef struct srv_row {
    struct srv_request *req;
    int image;
    int task;
} srv_row;

/* One HTTP request, from its first header to its completion callback.
 * Reference-counted: the connection holds one reference until MHD's
 * completion callback, the pipeline one while it works on the request. */
typedef struct srv_request {
    atomic_int refs;
    srv *server;
    struct MHD_Connection *conn;
    int fd;                      /* the client's socket, to notice it has gone */
    char id[72];                 /* X-Request-Id */
    srv_route route;
    bool kserve_errors;          /* errors in the V2 protocol's shape: a V2 route, or an
                                  * unrouted path under /v2 */
    char method[8];
    char task_name[TASK_NAME_MAX + 1]; /* {name} of /v1/tasks/{name}, {id} of /v1/finetune/{id},
                                          {model} of /v2/models/{model} */
    double started;              /* monotonic seconds */
    double deadline;             /* started + request_timeout */

    /* the body, capped at max_body_bytes while it streams in */
    srv_body_kind body_kind;
    char *body;
    size_t body_len, body_cap;
    size_t body_seen;            /* bytes received, kept or not */
    long long declared_len;      /* Content-Length; -1 when absent or unreadable */
    struct MHD_PostProcessor *pp;    /* multipart classify */
    api_form_part *parts;            /* form fields, data owned (uint8_t *) */
    int num_parts, cap_parts;
    char *query_task, *query_tasks, *query_top_k; /* raw classify's query */
    char *query_after, *query_limit; /* a job's events page */
    long long infer_header_len;  /* V2 infer: Inference-Header-Content-Length, -1 when absent */

    /* classify work (prepare pool, then workers) */
    api_classify_req creq;
    api_kserve_infer kreq;       /* a V2 infer's id and outputs (SRV_ROUTE_KSERVE_INFER) */
    vit_task **tasks;            /* creq's tasks resolved (NULL entry: the backbone head) */
    int num_tasks;               /* tasks used per image (>= 1) */
    float *tensor;               /* (num_images, 3, H, W) */
    float **logits;              /* one row per (image, task), each of its task's K */
    atomic_int rows_pending;
    int batch_size;              /* largest batch one of its rows ran in (log) */
    bool preparing;              /* counted in the pipeline's `preparing` (pipeline.c) */

    /* the reply: filled once (first failure or the result), sent on resume */
    pthread_mutex_t lock;
    api_reply reply;
    bool failed;
    bool suspended;
    bool done;                   /* reply ready to queue */
    bool stream;                 /* answered with a text/event-stream (sse.c) */
    const struct api_web_asset *asset; /* answered with an embedded file (web.c) */
} srv_request;

/* Monotonic seconds. */
double srv_now(void);

/* Drops a reference; the last one frees the request. */
void srv_request_unref(srv_request *r);

/* Fails r with an error reply unless it already has one (first error wins).
 * Safe from any thread. */
void srv_request_fail(srv_request *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Hands the finished request back to the HTTP side: resumes the suspended
 * connection so the reply in r->reply is sent.  Called exactly once per
 * suspended request, by whoever finishes it (pipeline thread or shutdown). */
void srv_request_finish(srv_request *r);

#endif
