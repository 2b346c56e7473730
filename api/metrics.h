/*
 * metrics.h - the server's counters and histograms, rendered as Prometheus
 * text (GET /metrics).
 *
 * The server records events as they happen (one mutex; every update is a few
 * additions); gauges that other parts own -- queue depth, resident tasks --
 * are read when the page is rendered.  Label sets are bounded: routes and
 * reasons are fixed strings, task names are capped at API_METRICS_MAX_TASKS
 * series (the rest count under task="_other"), so a client cannot grow the
 * page without bound by inventing names.
 */
#ifndef VIT_API_METRICS_H
#define VIT_API_METRICS_H

#include <stdbool.h>

#include "api.h"
#include "task_store.h"

#define API_METRICS_MAX_TASKS 2048

typedef struct api_metrics api_metrics;

/* Gauges read at render time. */
typedef struct api_metrics_gauges {
    int queue_depth;        /* rows waiting for a worker */
    int active_requests;    /* admitted to the pipeline, not answered */
    int preparing;          /* classify requests parsing/decoding (not fetching) */
    bool ready;
    task_store_stats tasks; /* loads, evictions, resident bytes and count */
    /* fine-tune jobs, by status: queued, running, succeeded, failed, cancelled */
    long jobs[5];
    long jobs_finished_total[5];  /* since start (the last three) */
    double train_images_per_second; /* the running jobs' */
    double train_seconds_total;   /* seconds of training since start */
    int event_streams;            /* open text/event-stream responses */
} api_metrics_gauges;

/* NULL when out of memory.  workers: how many busy-time series to keep. */
api_metrics *api_metrics_create(int workers);
void api_metrics_free(api_metrics *m);

/* A request answered: counted by route and status, its latency observed. */
void api_metrics_request(api_metrics *m, const char *route, int status, double seconds);
/* A batch of `rows` rows ran on worker `worker` in `seconds`. */
void api_metrics_batch(api_metrics *m, int worker, int rows, double seconds);
/* n images classified with task (NULL: the backbone's own head). */
void api_metrics_images(api_metrics *m, const char *task, int n);
/* A request refused for load (reason: queue_full, client_closed, ...). */
void api_metrics_rejected(api_metrics *m, const char *reason);
/* An image URL fetched (outcome: ok, timeout, forbidden, ...). */
void api_metrics_fetch(api_metrics *m, const char *outcome);

/* Fills r with the text exposition format (version 0.0.4).  Returns 0, or -1
 * after a 500. */
int api_metrics_reply(api_metrics *m, const api_metrics_gauges *g, api_reply *r);

#endif
