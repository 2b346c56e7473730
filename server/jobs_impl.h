/*
 * jobs_impl.h - what the three files of the job runner share (jobs.h):
 *   jobs.c        the list of jobs, reload, start and stop, the routes;
 *   job_record.c  one job's record: the job object, job.json, events.jsonl;
 *   job_run.c     the runner threads: training a job and ending it;
 *   job_lease.c   the lease that says which replica runs a job.
 *
 * Lock order: a job's file_lock, then jobs.lock; jobs.lease_lock, then
 * jobs.lock (file_lock and lease_lock are never held together).  file_lock
 * serialises the job's two files (so an older snapshot of job.json never
 * lands after a newer one, and event ids stay line numbers); jobs.lock
 * guards every field a request reads; lease_lock guards the jobs' lease
 * pointers, so the sync thread's renews never race a runner letting go.  No
 * file is written under jobs.lock but a new job's, which nothing else can
 * see yet.
 *
 * Who writes a job's files: the thread that holds its lease (owned), and
 * nobody once lease_lost is set; a job this process does not hold is only
 * read (refreshed from job.json).
 */
#ifndef VIT_SERVER_JOBS_IMPL_H
#define VIT_SERVER_JOBS_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <jansson.h>

#include "job_lease.h"
#include "jobs.h"

enum { JOB_QUEUED, JOB_RUNNING, JOB_SUCCEEDED, JOB_FAILED, JOB_CANCELLED };

#define JOB_ID_LEN 22                  /* "ftjob-" + 16 hex */
#define JOB_FILE_MAX (1 << 20)         /* job.json */
#define EVENTS_FILE_MAX (64u << 20)    /* events.jsonl */
#define PROGRESS_EVENT_S 5.0           /* a "progress" event at most this often */
#define PROGRESS_SAVE_S 2.0            /* job.json rewritten for progress at most this often */
#define EVENTS_LIST_MAX 1000
#define JOB_SKIPPED_EVENTS_MAX 100     /* skipped_image events per job; the rest counted */

/* Which version of a file (job.json, events.jsonl): each rewrite renames a
 * new inode into place, each append grows it. */
typedef struct job_stamp {
    uint64_t dev, ino, size;
    int64_t mtime_s, mtime_ns;
} job_stamp;

typedef struct job {
    char id[JOB_ID_LEN + 1];
    char *dir;                         /* <data_dir>/jobs/<id> */
    api_finetune_spec spec;
    int status;
    atomic_bool cancel;                /* cancel between two steps */
    atomic_long skipped;               /* images skipped (skip_bad) in this process */
    long long created_at, started_at, finished_at; /* Unix seconds; 0: not yet */
    int epoch, epochs;                 /* epochs completed, planned */
    long step, total_steps;            /* total_steps < 0: not planned yet */
    long batches_per_epoch;
    double images_per_second, eta_seconds; /* NAN: unknown */
    double train_loss, eval_top1, eval_top5; /* NAN: unknown */
    int best_epoch;                    /* < 0: unknown; 0: the state before training */
    char eval_on[16];                  /* the final scores' set: "validation", "eval", "" */
    char error_code[48], error_message[512];
    char result_file[TASK_NAME_MAX + 32];
    long long result_bytes;
    pthread_mutex_t file_lock;
    long events;                       /* lines in events.jsonl (under file_lock) */
    /* replicas (jobs.h) */
    job_lease *lease;                  /* held by this process (under jobs.lease_lock) */
    bool owned;                        /* lease != NULL, for readers of jobs.lock */
    bool claiming;                     /* a thread of this process is claiming it (jobs.lock) */
    atomic_bool lease_lost;            /* taken over by another replica: write nothing more */
    job_lease_watch watch;             /* what we saw of its lease (the claiming thread's) */
    double next_claim;                 /* monotonic seconds: no claim before (jobs.lock) */
    job_stamp record, events_seen;     /* job.json, events.jsonl as last read (jobs.lock) */
    /* the runner's own (no lock: one runner per job) */
    double loss_sum;                   /* since the last progress event */
    long loss_steps;
    double last_event, last_save;      /* monotonic seconds: the last progress event and
                                          progress save (the runner's alone) */
} job;

struct jobs {
    jobs_config cfg;
    char *jobs_dir, *datasets_dir;
    char *datasets_real;               /* datasets_dir's canonical path ("" if none yet) */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    job **all;                         /* sorted by id: creation order */
    size_t n, cap;
    atomic_bool stopping;
    pthread_t *threads;
    int nthreads;
    long finished_total[5];
    double train_seconds;
    long long last_id_ms;
    /* replicas */
    job_lease_self self;               /* this process, as its leases name it */
    pthread_mutex_t lease_lock;        /* every job's lease pointer */
    double tick;                       /* seconds between renews and syncs: lease_ms / 4 */
    pthread_t syncer;
    bool syncer_started;
    bool syncer_stop;                  /* under lock; signalled on wake */
    struct job_skipped *skipped;       /* directories that did not read, logged once each */
    size_t nskipped, capskipped;
};

/* A job directory that did not read, and the job.json it had then. */
typedef struct job_skipped {
    char id[JOB_ID_LEN + 1];
    job_stamp record;
} job_skipped;

/* ---- job_record.c ---- */

double job_monotonic(void);
double job_wall(void);                 /* Unix seconds */
bool job_finished(int status);         /* succeeded, failed or cancelled */
char *job_path(const char *dir, const char *name); /* "dir/name", malloc'd; NULL: OOM */
job *job_new(jobs *j, const char *id); /* queued, nothing known; NULL: OOM */
void job_free(job *jb);
json_t *job_json_real(double x);       /* a number, or null when not finite */
/* The job object (JOBS contract); call under jobs.lock. */
json_t *job_json(const job *jb);
/* job_json as it will be with that status and finished_at (0: none). */
json_t *job_json_as(const job *jb, int status, long long finished_at);
/* Writes snapshot (consumed) as <dir>/job.json: tmp, fsync, rename; 0 or -1. */
int job_write(const job *jb, json_t *snapshot);
/* job.json from the state as it is now (takes file_lock, then jobs.lock). */
void job_save(jobs *j, job *jb);
/* Appends an event (data consumed, may be NULL) under the job's file_lock,
 * which the caller holds (or a job nobody else sees yet): jb->events grows
 * by one when it was written. */
void job_event_append_locked(jobs *j, job *jb, const char *type, const char *message,
                             json_t *data);
/* job_event_append_locked under file_lock, then the notify callback. */
void job_event(jobs *j, job *jb, const char *type, const char *message, json_t *data);
/* The config's log callback, if any. */
void job_log(jobs *j, const job *jb, const char *status, const char *detail);
/* Reads <jobs_dir>/<id>/job.json into a new job; NULL (and why) when it does
 * not read as one (events.jsonl, when there is one, must be a regular file).
 * The job's status is the file's.  recover (the caller holds the lease):
 * a torn last line of events.jsonl (its writer died mid-append) is cut and
 * the lines counted; otherwise events.jsonl is not written and jb->events
 * is 0.  jb->record gets job.json's stamp. */
job *job_load(jobs *j, const char *id, bool recover, char *why, size_t why_len);
/* The stamp of path (zero when it does not stat). */
job_stamp job_stamp_of(const char *path);
bool job_stamp_equal(const job_stamp *a, const job_stamp *b);
/* Copies what job.json says (status, times, progress, metrics, error,
 * result, the cancel request, the stamp) from src into dst; under jobs.lock. */
void job_adopt(job *dst, const job *src);
/* Whether <dir>/cancel exists: a replica that could not claim the job asked
 * its holder to cancel it. */
bool job_cancel_marked(const job *jb);
/* Leaves <dir>/cancel; 0 or -1. */
int job_cancel_mark(const job *jb);

/* ---- jobs.c ---- */

/* Claims jb's lease for this thread; the caller has set jb->claiming under
 * jobs.lock (it is cleared here).  On success the record is read again from
 * disk (recovered: this process now writes it) and adopted, jb->owned is
 * set, and a cancel file sets jb->cancel; returns true.  False when another
 * replica holds it (or it does not read): next_claim is pushed a tick on. */
bool job_take(jobs *j, job *jb);
/* Waits on jobs.wake for up to a tick; under jobs.lock. */
void job_wait_tick(jobs *j);
/* Gives up jb's lease after the thread that took it is done: released for
 * another replica when the job is unfinished, its lease files removed when
 * it has ended, left alone when it was lost.  jb becomes another's job:
 * reread from disk from then on. */
void job_let_go(jobs *j, job *jb);
/* Whether this process still holds jb's lease, looked at now rather than
 * at the last renew (sets lease_lost when not).  Called right before each
 * step that must not follow a takeover: publishing the task, writing the
 * end, removing the job's files -- a holder that stalled past its lease
 * (stopped, swapped out) may run on before its sync thread's next renew. */
bool job_still_held(jobs *j, job *jb);

/* ---- job_run.c ---- */

/* Ends jb with status (or puts it back in the queue, after an
 * interruption): job.json and the event (data consumed; for a failure,
 * {"error": {code, message}} when NULL) are written first, and only then
 * does the status change in memory -- so a client that sees it final finds
 * the files final, and a crash in between never revives an ended job;
 * an ended job's checkpoint and fetched files go before its status changes
 * too.  Then the log line. */
void job_end(jobs *j, job *jb, int status, const char *code, const char *message,
             const char *event, json_t *data);
/* Removes an ended job's checkpoint/ and fetched/ (the task is its product). */
void job_cleanup(jobs *j, job *jb);
/* A runner thread: takes queued jobs in creation order until jobs.stopping. */
void *jobs_runner(void *arg);

#endif
