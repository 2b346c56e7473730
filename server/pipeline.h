/*
 * pipeline.h - the work behind the HTTP threads: a prepare pool, a fetch
 * pool, the row queue and the workers that batch rows through the model.
 *
 * Every stage is bounded; a full one answers 429 at once (never blocks the
 * thread that asked).  See srv.h for the path of a request.
 */
#ifndef VIT_SERVER_PIPELINE_H
#define VIT_SERVER_PIPELINE_H

#include <stdbool.h>

#include "srv.h"

/* A job run in the prepare pool; it must end by finishing the request
 * (srv_request_finish) or by handing it to the next stage. */
typedef void (*srv_job_fn)(srv_request *r);

/* Threads of each worker's team: threads_per_worker, or (0) the usable CPUs
 * shared out among the workers, at least 1. */
int srv_worker_threads(const vit_cfg *cfg);

/* Starts the pools and cfg.workers workers, each with a vit_state of
 * threads_per_worker threads for max_batch images (s->model must be loaded).
 * On failure nothing is left running. */
vit_status srv_pipeline_start(srv *s, srv_pipeline **out, vit_error *err);

/* Queues fn(r) in the prepare pool; false when it is full or stopping (the
 * caller answers 429 or 503).  On true the pipeline holds a reference to r
 * until the job finishes it. */
bool srv_pipeline_submit(srv_pipeline *p, srv_request *r, srv_job_fn fn);

/* The classify job: parse, fetch, decode, resolve tasks, queue the rows;
 * the workers finish the request. */
void srv_classify_job(srv_request *r);

/* r leaves the prepare stage without queueing rows (srv_request_finish
 * calls it): workers stop expecting its rows.  No-op when it is not there. */
void srv_pipeline_prepared(srv_pipeline *p, srv_request *r);

/* Classify requests being prepared (parsed, decoded; not those fetching). */
int srv_pipeline_preparing(srv_pipeline *p);

/* Rows waiting for a worker, and whether one more image would still fit. */
int srv_pipeline_queue_depth(srv_pipeline *p);
bool srv_pipeline_full(srv_pipeline *p);

/* Stops: fetches in flight are cancelled, whatever is still queued is
 * answered 503, running jobs and batches finish; joins every thread.  The
 * caller first waits (drain_timeout_ms) for admitted requests to finish.
 * Safe to call again. */
void srv_pipeline_stop(srv_pipeline *p);
void srv_pipeline_free(srv_pipeline *p);

#endif
