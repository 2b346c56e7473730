/*
 * jobs.h - fine-tune jobs: a FIFO of requests, runner threads that train
 * them with the engine's trainer, a directory per job so a restart loses at
 * most the steps since the last checkpoint, and the finished task put into
 * the live task store.
 *
 * A job lives in <data_dir>/jobs/<id>/:
 *   job.json      the job object (JOBS contract), rewritten atomically (tmp +
 *                 fsync + rename) on every change of state, and at most every
 *                 few seconds for progress;
 *   events.jsonl  one event per line, appended and fsynced; an event's id is
 *                 its line number, so the file alone is the cursor's truth;
 *   checkpoint/   the trainer's checkpoint (trainer.h), written after every
 *                 epoch and every checkpoint_every_steps; removed when the
 *                 job ends.
 * Ids are "ftjob-" + 16 hex digits that begin with the creation time in
 * milliseconds, so their order is the order of creation, across restarts.
 *
 * jobs_open reloads every job directory: queued jobs stay queued, a job that
 * was running is queued again at its place and, when a runner takes it,
 * continues from its checkpoint (a "resumed" event) -- the trainer makes that
 * bit-identical to a run that never stopped -- and finished jobs are listed
 * as they ended.  A directory whose job.json does not read is skipped, with
 * a log line.  jobs_stop interrupts the running jobs between two steps
 * without cancelling them (an "interrupted" event; they resume at the next
 * start).
 *
 * Replicas: several servers may share one data_dir (one volume).  Any of
 * them accepts a job; each job is run by one replica at a time, the holder
 * of its lease (job_lease.h: <job>/lease.<G>, claimed with O_EXCL, renewed
 * every lease_ms / 4), and only the holder writes job.json and events.jsonl
 * (a job's creator writes them first, in a directory renamed into jobs/
 * whole).  A replica that dies stops renewing; after lease_ms another one
 * claims the job and resumes it from its checkpoint, as after a restart.
 * Every replica lists every job: a sync thread picks up the directories
 * others create and rereads the job.json of jobs others run (at every tick
 * of lease_ms / 4), and GET, list and cancel reread them first, so every
 * replica answers with the record on disk -- the holder's own answer may be
 * newer by the progress of the last PROGRESS_SAVE_S seconds.  A cancel that
 * reaches a replica not running the job claims it when it can (a queued
 * job: ended at once) and otherwise leaves a <job>/cancel file that the
 * holder sees at its next renew.  A replica of role serve (run_jobs false)
 * runs no job; it still accepts, lists and cancels them.
 *
 * Threads: jobs_start starts max_running_jobs runners and the sync thread.
 * Everything a request can read (status, progress, metrics) is under one
 * lock and published there by the runner; file writes happen outside it.
 * The handlers (jobs_submit, jobs_get, ...) may run on any thread.
 */
#ifndef VIT_SERVER_JOBS_H
#define VIT_SERVER_JOBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api.h"
#include "fetch.h"
#include "finetune.h"
#include "status.h"
#include "task_store.h"
#include "vit.h"

typedef struct jobs jobs;

typedef struct jobs_config {
    const char *data_dir;         /* jobs/ and datasets/ live here */
    const vit_model *model;       /* the backbone; outlives the jobs */
    const char *model_path;       /* its checkpoint: a job trains on an fp32 copy loaded from
                                     it when `model` kept only a bf16 packing */
    task_store *tasks;            /* where finished tasks go */
    int max_running;              /* runner threads */
    int max_queued;               /* queued jobs beyond this: 429 */
    int train_threads;            /* the trainer's BLAS threads */
    long checkpoint_every_steps;  /* 0: after every epoch only */
    bool run_jobs;                /* false (role serve): no runner; other replicas train */
    long lease_ms;                /* job_lease_ms: an unrenewed lease is taken over after it */
    bool lease_remote_only;       /* judge other processes' leases by their renewals only, as
                                     if every replica ran on another host (tests) */
    api_fetch_limits fetch;       /* a manifest's URLs (url_* keys, allow_private_urls);
                                     .cancel is set by the runner (the server stopping) */
    /* one line per state change (may be NULL); detail may be NULL */
    void (*log)(void *ctx, const char *id, const char *status, const char *detail);
    /* an event was appended (may be NULL): wake the event streams */
    void (*notify)(void *ctx);
    void *ctx;
} jobs_config;

/* Creates <data_dir>/jobs and reloads the jobs in it (see the top). */
vit_status jobs_open(const jobs_config *c, jobs **out, vit_error *err);

/* Starts the runner threads (none when run_jobs is false) and the sync thread. */
vit_status jobs_start(jobs *j, vit_error *err);

/* Interrupts running jobs (they stay resumable; their leases are released
 * for another replica) and joins the threads. */
void jobs_stop(jobs *j);

/* jobs_stop, then frees everything; NULL is a no-op. */
void jobs_close(jobs *j);

/* The routes.  Each fills r: the job object or a list, or the error shape. */
int jobs_submit(jobs *j, const api_finetune_spec *spec, api_reply *r); /* 201, 409, 429 */
/* jobs_submit's refusals (409 task_in_progress, 429 queue_full) without
 * submitting: the cheap checks, before the data sets are opened. */
int jobs_admissible(jobs *j, const api_finetune_spec *spec, api_reply *r);
int jobs_get(jobs *j, const char *id, api_reply *r);                     /* 200, 404 */
int jobs_cancel(jobs *j, const char *id, api_reply *r);                  /* 200, 404, 409 */
/* status, limit, after: the query's values or NULL */
int jobs_list(jobs *j, const char *status, const char *limit, const char *after, api_reply *r);
/* after, limit: the query's values or NULL */
int jobs_events(jobs *j, const char *id, const char *after, const char *limit, api_reply *r);

/* Where an event stream stands in a job's events.jsonl: so each look reads
 * only what was appended since the last (a long job's file is megabytes,
 * and every event wakes every stream).  Start with {.after = the client's
 * cursor}; offset and lines are jobs_event_frames's. */
typedef struct jobs_cursor {
    long after;                   /* the last event id framed (or the client's cursor) */
    uint64_t offset;              /* bytes of events.jsonl gone through */
    long lines;                   /* lines in those bytes */
} jobs_cursor;

/* For an event stream: the events of job id after cur->after, as
 * text/event-stream frames in *buf (malloc'd, *len bytes; caller frees);
 * *cur moves past them; *ended whether the job has finished and every event
 * up to its final one is framed.  VIT_ERR_NOT_FOUND for an unknown job. */
vit_status jobs_event_frames(jobs *j, const char *id, jobs_cursor *cur, char **buf, size_t *len,
                             bool *ended, vit_error *err);

/* Whether job id exists. */
bool jobs_exists(jobs *j, const char *id);

/* Gauges and counters for /metrics. */
typedef struct jobs_stats {
    long by_status[5];            /* queued, running, succeeded, failed, cancelled */
    long finished_total[5];       /* state changes to the final three since start */
    double images_per_second;     /* the running jobs' last reports, summed */
    double train_seconds;         /* seconds of training done since start */
} jobs_stats;

extern const char *const jobs_status_names[5];

void jobs_stats_get(jobs *j, jobs_stats *out);

#endif
