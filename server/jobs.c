/*
 * jobs.c - fine-tune jobs: queue, runners, files, reload (jobs.h).
 *
 * Lock order: a job's file_lock, then jobs.lock.  file_lock serialises the
 * job's two files (so an older snapshot of job.json never lands after a
 * newer one, and event ids stay line numbers); jobs.lock guards every field
 * a request reads.  No file is written under jobs.lock but a new job's,
 * which nothing else can see yet.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "beneath.h"
#include "jobs.h"
#include "trainer.h"

enum { JOB_QUEUED, JOB_RUNNING, JOB_SUCCEEDED, JOB_FAILED, JOB_CANCELLED };

const char *const jobs_status_names[5] = {"queued", "running", "succeeded", "failed",
                                          "cancelled"};

#define JOB_ID_LEN 22                  /* "ftjob-" + 16 hex */
#define JOB_FILE_MAX (1 << 20)         /* job.json */
#define EVENTS_FILE_MAX (64u << 20)    /* events.jsonl */
#define PROGRESS_EVENT_S 5.0           /* a "progress" event at most this often */
#define PROGRESS_SAVE_S 2.0            /* job.json rewritten for progress at most this often */
#define EVENTS_LIST_MAX 1000

typedef struct job {
    char id[JOB_ID_LEN + 1];
    char *dir;                         /* <data_dir>/jobs/<id> */
    api_finetune_spec spec;
    int status;
    atomic_bool cancel;                /* cancel between two steps */
    long long created_at, started_at, finished_at; /* Unix seconds; 0: not yet */
    int epoch, epochs;                 /* epochs completed, planned */
    long step, total_steps;            /* total_steps < 0: not planned yet */
    long batches_per_epoch;
    double images_per_second, eta_seconds; /* NAN: unknown */
    double train_loss, eval_top1, eval_top5; /* NAN: unknown */
    int best_epoch;                    /* 0: unknown */
    char error_code[48], error_message[512];
    char result_file[TASK_NAME_MAX + 32];
    long long result_bytes;
    pthread_mutex_t file_lock;
    long events;                       /* lines in events.jsonl (under file_lock) */
    /* the runner's own (no lock: one runner per job) */
    double loss_sum;                   /* since the last progress event */
    long loss_steps;
    double epoch_loss_sum;
    long epoch_loss_steps;
    double last_event, last_save;      /* monotonic seconds */
} job;

struct jobs {
    jobs_config cfg;
    char *jobs_dir, *datasets_dir;
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
};

static double monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bool finished(int status)
{
    return status >= JOB_SUCCEEDED;
}

static char *path_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", a, b);
    return p;
}

static void job_free(job *jb)
{
    if (!jb)
        return;
    pthread_mutex_destroy(&jb->file_lock);
    free(jb->dir);
    free(jb);
}

static job *job_new(jobs *j, const char *id)
{
    job *jb = calloc(1, sizeof *jb);
    if (!jb)
        return NULL;
    snprintf(jb->id, sizeof jb->id, "%s", id);
    if (!(jb->dir = path_join(j->jobs_dir, id))) {
        free(jb);
        return NULL;
    }
    pthread_mutex_init(&jb->file_lock, NULL);
    atomic_init(&jb->cancel, false);
    jb->total_steps = -1;
    jb->images_per_second = jb->eta_seconds = NAN;
    jb->train_loss = jb->eval_top1 = jb->eval_top5 = NAN;
    return jb;
}

/* ---- the job object ---- */

static json_t *real_or_null(double x)
{
    return isfinite(x) ? json_real(x) : json_null();
}

static json_t *time_or_null(long long t)
{
    return t > 0 ? json_integer(t) : json_null();
}

/* The job object (JOBS contract); call under jobs.lock. */
static json_t *job_json(const job *jb)
{
    const api_finetune_spec *s = &jb->spec;
    json_t *error = jb->status == JOB_FAILED
                        ? json_pack("{s:s,s:o}", "code", jb->error_code, "message",
                                    api_json_text(jb->error_message))
                        : json_null();
    json_t *result = jb->status == JOB_SUCCEEDED
                         ? json_pack("{s:s,s:s,s:I}", "task", s->task, "file", jb->result_file,
                                     "bytes", (json_int_t)jb->result_bytes)
                         : json_null();
    return json_pack(
        "{s:s,s:s,s:s,s:s,s:s,s:s,s:o,s:o,s:o,s:o,s:o,"
        "s:{s:i,s:i,s:I,s:o,s:o,s:o},s:{s:o,s:o,s:o,s:o},s:o,s:o}",
        "id", jb->id, "object", "finetune.job", "status", jobs_status_names[jb->status], "task",
        s->task, "method", vit_method_name(s->method), "train", s->train, "eval",
        s->eval[0] ? json_string(s->eval) : json_null(), "hyperparameters",
        api_finetune_hyperparameters(s), "created_at", time_or_null(jb->created_at),
        "started_at", time_or_null(jb->started_at), "finished_at",
        time_or_null(jb->finished_at), "progress", "epoch", jb->epoch, "epochs",
        jb->epochs ? jb->epochs : s->epochs, "step", (json_int_t)jb->step, "total_steps",
        jb->total_steps >= 0 ? json_integer(jb->total_steps) : json_null(),
        "images_per_second", real_or_null(jb->images_per_second), "eta_seconds",
        real_or_null(jb->eta_seconds), "metrics", "train_loss", real_or_null(jb->train_loss),
        "eval_top1", real_or_null(jb->eval_top1), "eval_top5", real_or_null(jb->eval_top5),
        "best_epoch", jb->best_epoch > 0 ? json_integer(jb->best_epoch) : json_null(), "error",
        error, "result", result);
}

/* ---- files ---- */

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* Writes snapshot (consumed) as <dir>/job.json: tmp, fsync, rename. */
static int job_write(const job *jb, json_t *snapshot)
{
    char *text = snapshot ? json_dumps(snapshot, JSON_INDENT(1) | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(snapshot);
    char *tmp = path_join(jb->dir, ".job.json.tmp"), *final = path_join(jb->dir, "job.json");
    int rc = -1;
    if (text && tmp && final) {
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0) {
            bool ok = write_all(fd, text, strlen(text)) == 0 && write_all(fd, "\n", 1) == 0 &&
                      fsync(fd) == 0;
            ok = close(fd) == 0 && ok;
            if (ok && rename(tmp, final) == 0) {
                sync_dir(jb->dir);
                rc = 0;
            } else {
                unlink(tmp);
            }
        }
    }
    free(text);
    free(tmp);
    free(final);
    return rc;
}

/* job.json from the state as it is now. */
static void job_save(jobs *j, job *jb)
{
    pthread_mutex_lock(&jb->file_lock);
    pthread_mutex_lock(&j->lock);
    json_t *snap = job_json(jb);
    pthread_mutex_unlock(&j->lock);
    if (job_write(jb, snap) != 0 && j->cfg.log)
        j->cfg.log(j->cfg.ctx, jb->id, "warning", "cannot write job.json");
    jb->last_save = monotonic();
    pthread_mutex_unlock(&jb->file_lock);
}

/* Counts the complete lines of events.jsonl and cuts a torn last line (a
 * crash mid-append); returns the count, or -1 when it cannot be read. */
static long events_recover(const job *jb)
{
    char *path = path_join(jb->dir, "events.jsonl");
    if (!path)
        return -1;
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    free(path);
    if (fd < 0)
        return errno == ENOENT ? 0 : -1;
    long lines = 0;
    off_t pos = 0, good = 0;
    char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] == '\n') {
                lines++;
                good = pos + i + 1;
            }
        pos += n;
    }
    if (n == 0 && pos != good && ftruncate(fd, good) != 0)
        lines = -1;
    close(fd);
    return n < 0 ? -1 : lines;
}

/* Appends an event (data consumed, may be NULL) under the job's file_lock,
 * which the caller holds; ids are line numbers. */
static void event_append_locked(jobs *j, job *jb, const char *type, const char *message,
                                json_t *data)
{
    long *count = &jb->events;
    json_t *e = json_pack("{s:I,s:s,s:f,s:o,s:o}", "id", (json_int_t)(*count + 1), "type", type,
                          "created_at", wall(), "message", api_json_text(message ? message : ""),
                          "data", data ? data : json_object());
    char *line = e ? json_dumps(e, JSON_COMPACT | JSON_REAL_PRECISION(12)) : NULL;
    json_decref(e);
    char *path = path_join(jb->dir, "events.jsonl");
    bool ok = false;
    if (line && path) {
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd >= 0) {
            size_t n = strlen(line);
            line[n] = '\n'; /* the NUL is not written */
            ok = write_all(fd, line, n + 1) == 0 && fdatasync(fd) == 0;
            close(fd);
        }
    }
    if (ok)
        (*count)++;
    else if (j->cfg.log)
        j->cfg.log(j->cfg.ctx, jb->id, "warning", "cannot append to events.jsonl");
    free(line);
    free(path);
}

static void job_event(jobs *j, job *jb, const char *type, const char *message, json_t *data)
{
    pthread_mutex_lock(&jb->file_lock);
    event_append_locked(j, jb, type, message, data);
    pthread_mutex_unlock(&jb->file_lock);
    if (j->cfg.notify)
        j->cfg.notify(j->cfg.ctx);
}

static void job_log(jobs *j, const job *jb, const char *status, const char *detail)
{
    if (j->cfg.log)
        j->cfg.log(j->cfg.ctx, jb->id, status, detail);
}

/* ---- lookup ---- */

/* The job of that id, or NULL; under jobs.lock. */
static job *find(jobs *j, const char *id)
{
    if (!id)
        return NULL;
    size_t lo = 0, hi = j->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(j->all[mid]->id, id);
        if (c == 0)
            return j->all[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static bool id_syntax(const char *id)
{
    if (strlen(id) != JOB_ID_LEN || strncmp(id, "ftjob-", 6) != 0)
        return false;
    for (const char *p = id + 6; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

/* Inserts jb in id order; under jobs.lock.  False when out of memory. */
static bool insert(jobs *j, job *jb)
{
    if (j->n == j->cap) {
        size_t want = j->cap ? 2 * j->cap : 16;
        job **grown = realloc(j->all, want * sizeof *grown);
        if (!grown)
            return false;
        j->all = grown;
        j->cap = want;
    }
    size_t at = j->n;
    while (at > 0 && strcmp(j->all[at - 1]->id, jb->id) > 0)
        at--;
    memmove(j->all + at + 1, j->all + at, (j->n - at) * sizeof *j->all);
    j->all[at] = jb;
    j->n++;
    return true;
}

/* ---- ending a job ---- */

/* Removes <dir>/checkpoint and what it holds (one level: the trainer's files). */
static void remove_checkpoint(const job *jb)
{
    char *ck = path_join(jb->dir, "checkpoint");
    if (!ck)
        return;
    DIR *d = opendir(ck);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
                unlinkat(dirfd(d), e->d_name, 0);
        closedir(d);
    }
    rmdir(ck);
    free(ck);
}

/* Sets jb's final status (or queued again, after an interruption); under
 * jobs.lock.  code/message: the failure, for JOB_FAILED. */
static void job_set_status(jobs *j, job *jb, int status, const char *code, const char *message)
{
    jb->status = status;
    if (finished(status)) {
        jb->finished_at = (long long)wall();
        j->finished_total[status]++;
        jb->images_per_second = jb->eta_seconds = NAN;
    }
    if (status == JOB_FAILED) {
        snprintf(jb->error_code, sizeof jb->error_code, "%s", code);
        snprintf(jb->error_message, sizeof jb->error_message, "%s", message);
    }
}

/* After a change of status: the files, the event, the log line. */
static void job_publish(jobs *j, job *jb, const char *event, const char *message, json_t *data)
{
    pthread_mutex_lock(&j->lock);
    int status = jb->status;
    pthread_mutex_unlock(&j->lock);
    if (finished(status))
        remove_checkpoint(jb);
    job_save(j, jb);
    job_event(j, jb, event, message, data);
    job_log(j, jb, jobs_status_names[status], message);
}

static void job_end(jobs *j, job *jb, int status, const char *code, const char *message,
                    const char *event, json_t *data)
{
    pthread_mutex_lock(&j->lock);
    job_set_status(j, jb, status, code, message);
    pthread_mutex_unlock(&j->lock);
    job_publish(j, jb, event, message, data);
}

/* The code and message of an api_reply's error body. */
static void reply_error(const api_reply *r, char *code, size_t code_len, char *msg,
                        size_t msg_len)
{
    json_t *b = r->body ? json_loadb(r->body, r->body_len, 0, NULL) : NULL;
    const char *c = json_string_value(json_object_get(json_object_get(b, "error"), "code"));
    const char *m = json_string_value(json_object_get(json_object_get(b, "error"), "message"));
    snprintf(code, code_len, "%s", c ? c : "internal");
    snprintf(msg, msg_len, "%s", m ? m : "unknown error");
    json_decref(b);
}

/* ---- training ---- */

/* The trainer's callbacks see this. */
typedef struct run_ctx {
    jobs *j;
    job *jb;
} run_ctx;

static int on_should_stop(void *ctx)
{
    run_ctx *c = ctx;
    return atomic_load(&c->jb->cancel) || atomic_load(&c->j->stopping);
}

static void on_plan(void *ctx, const trainer_plan *p)
{
    run_ctx *c = ctx;
    pthread_mutex_lock(&c->j->lock);
    c->jb->total_steps = p->total_steps;
    c->jb->batches_per_epoch = p->batches_per_epoch;
    pthread_mutex_unlock(&c->j->lock);
}

static void on_progress(void *ctx, const trainer_progress *p)
{
    run_ctx *c = ctx;
    job *jb = c->jb;
    pthread_mutex_lock(&c->j->lock);
    jb->step = p->step;
    jb->total_steps = p->total_steps;
    jb->epochs = p->epochs;
    jb->images_per_second = p->images_per_second;
    jb->eta_seconds = p->eta_seconds;
    if (jb->batches_per_epoch > 0)
        jb->epoch = (int)(p->step / jb->batches_per_epoch);
    pthread_mutex_unlock(&c->j->lock);
    jb->loss_sum += p->loss;
    jb->loss_steps++;
    jb->epoch_loss_sum += p->loss;
    jb->epoch_loss_steps++;
    double now = monotonic();
    if (now - jb->last_event >= PROGRESS_EVENT_S || p->step == p->total_steps) {
        double loss = jb->loss_sum / (double)jb->loss_steps;
        char msg[160];
        snprintf(msg, sizeof msg, "step %ld/%ld, loss %.4f, %.1f images/s", p->step,
                 p->total_steps, loss, p->images_per_second);
        job_event(c->j, jb, "progress", msg,
                  json_pack("{s:I,s:I,s:i,s:f,s:f,s:f}", "step", (json_int_t)p->step,
                            "total_steps", (json_int_t)p->total_steps, "epoch", p->epoch,
                            "loss", loss, "images_per_second", p->images_per_second,
                            "eta_seconds", p->eta_seconds));
        jb->loss_sum = 0;
        jb->loss_steps = 0;
        jb->last_event = now;
    }
    if (now - jb->last_save >= PROGRESS_SAVE_S)
        job_save(c->j, jb);
}

static void on_checkpoint(void *ctx, const trainer_checkpoint_info *info)
{
    run_ctx *c = ctx;
    job *jb = c->jb;
    if (info->end_of_epoch && jb->epoch_loss_steps > 0) {
        double loss = jb->epoch_loss_sum / (double)jb->epoch_loss_steps;
        pthread_mutex_lock(&c->j->lock);
        jb->train_loss = loss;
        jb->epoch = info->epoch;
        pthread_mutex_unlock(&c->j->lock);
        char msg[96];
        snprintf(msg, sizeof msg, "epoch %d ended, train loss %.4f", info->epoch, loss);
        job_event(c->j, jb, "epoch_end", msg,
                  json_pack("{s:i,s:I,s:f}", "epoch", info->epoch, "step",
                            (json_int_t)info->step, "train_loss", loss));
        jb->epoch_loss_sum = 0;
        jb->epoch_loss_steps = 0;
    }
    char msg[96];
    snprintf(msg, sizeof msg, "checkpoint at step %ld", info->step);
    job_event(c->j, jb, "checkpoint", msg,
              json_pack("{s:I,s:i,s:b}", "step", (json_int_t)info->step, "epoch", info->epoch,
                        "end_of_epoch", info->end_of_epoch));
    job_save(c->j, jb);
}

/* A skipped image (skip_bad); may run on loader threads. */
static void on_bad_image(void *ctx, const char *item, const char *message)
{
    run_ctx *c = ctx;
    job_event(c->j, c->jb, "skipped_image", message,
              json_pack("{s:o,s:o}", "file", api_json_text(item), "reason",
                        api_json_text(message)));
}

/* Whether task `name` is one this job stored already (a crash after the put,
 * before job.json said so). */
static bool task_is_ours(jobs *j, const job *jb)
{
    char **kv = NULL;
    vit_error err = {0};
    if (task_store_metadata(j->cfg.tasks, jb->spec.task, &kv, NULL, &err) != VIT_OK)
        return false;
    bool ours = false;
    for (size_t i = 0; kv[i] && kv[i + 1]; i += 2)
        if (strcmp(kv[i], "job_id") == 0 && strcmp(kv[i + 1], jb->id) == 0)
            ours = true;
    free(kv);
    return ours;
}

static void fmt_real(char *buf, size_t n, bool has, double x)
{
    if (has)
        snprintf(buf, n, "%.6f", x);
    else
        buf[0] = '\0';
}

/* Saves the trained task into the live store; 0, or -1 with code/message. */
static int store_result(jobs *j, job *jb, const trainer_result *res, char *code, size_t code_len,
                        char *msg, size_t msg_len)
{
    const api_finetune_spec *s = &jb->spec;
    snprintf(res->task->name, sizeof res->task->name, "%s", s->task);
    if (!s->overwrite && task_store_exists(j->cfg.tasks, s->task) && !task_is_ours(j, jb)) {
        snprintf(code, code_len, "task_exists");
        snprintf(msg, msg_len, "task '%s' was created while the job ran (set \"overwrite\" to "
                 "replace it)", s->task);
        return -1;
    }
    json_t *hyper = api_finetune_hyperparameters(s);
    char *hyper_text = hyper ? json_dumps(hyper, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(hyper);
    char steps[32], loss[32], top1[32], top5[32], best[16];
    snprintf(steps, sizeof steps, "%ld", res->steps);
    snprintf(loss, sizeof loss, "%.6f", res->final_loss);
    fmt_real(top1, sizeof top1, res->has_eval, res->eval.top1);
    fmt_real(top5, sizeof top5, res->has_eval, res->eval.top5);
    snprintf(best, sizeof best, "%d", jb->best_epoch);
    const char *keys[] = {"job_id", "train_data", "eval_data", "hyperparameters", "steps",
                          "train_loss", "eval_top1", "eval_top5", NULL};
    const char *values[] = {jb->id, s->train, s->eval, hyper_text ? hyper_text : "{}", steps,
                            loss, top1, top5, NULL};
    task_meta meta = {keys, values};
    char *tmp = path_join(jb->dir, "task.safetensors");
    vit_error err = {0};
    vit_status st = tmp ? task_save(j->cfg.model, res->task, &meta, tmp, &err)
                        : vit_error_set(&err, VIT_ERR_NOMEM, "out of memory");
    free(hyper_text);
    uint8_t *bytes = NULL;
    size_t len = 0;
    if (st == VIT_OK) {
        int fd = open(tmp, O_RDONLY | O_CLOEXEC);
        struct stat sb;
        if (fd < 0 || fstat(fd, &sb) != 0)
            st = vit_error_set(&err, VIT_ERR_IO, "cannot read the saved task: %s",
                               strerror(errno));
        else
            st = beneath_read_capped(fd, (size_t)sb.st_size, (size_t)1 << 32, "the saved task",
                                     &bytes, &len, &err);
        if (fd >= 0)
            close(fd);
    }
    if (st == VIT_OK)
        st = task_store_put(j->cfg.tasks, s->task, bytes, len, NULL, &err);
    free(bytes);
    if (tmp)
        unlink(tmp);
    free(tmp);
    if (st != VIT_OK) {
        snprintf(code, code_len, "task_store_failed");
        snprintf(msg, msg_len, "%s", err.message);
        return -1;
    }
    pthread_mutex_lock(&j->lock);
    snprintf(jb->result_file, sizeof jb->result_file, "tasks/%s.safetensors", s->task);
    jb->result_bytes = (long long)len;
    if (res->has_eval) {
        jb->eval_top1 = res->eval.top1;
        jb->eval_top5 = res->eval.top5;
    }
    jb->train_loss = res->final_loss;
    jb->step = res->steps;
    jb->total_steps = res->total_steps;
    jb->epoch = jb->epochs ? jb->epochs : s->epochs;
    pthread_mutex_unlock(&j->lock);
    return 0;
}

static void run_job(jobs *j, job *jb, bool resumed)
{
    char *ck = path_join(jb->dir, "checkpoint");
    if (!ck) {
        job_end(j, jb, JOB_FAILED, "internal", "out of memory", "failed", NULL);
        return;
    }
    bool have_ck = trainer_checkpoint_exists(ck);
    if (resumed && task_is_ours(j, jb)) { /* it finished before the crash */
        pthread_mutex_lock(&j->lock);
        snprintf(jb->result_file, sizeof jb->result_file, "tasks/%s.safetensors",
                 jb->spec.task);
        pthread_mutex_unlock(&j->lock);
        job_end(j, jb, JOB_SUCCEEDED, NULL, "the task was stored before the restart",
                "succeeded", NULL);
        free(ck);
        return;
    }
    if (resumed)
        job_event(j, jb, "resumed",
                  have_ck ? "resumed from the last checkpoint"
                          : "no checkpoint was written: starting again from step 0",
                  json_pack("{s:b}", "from_checkpoint", have_ck));
    else
        job_event(j, jb, "started", "training started", NULL);
    job_save(j, jb);
    job_log(j, jb, "running", resumed ? "resumed" : "started");

    api_finetune_env env = {.datasets_dir = j->datasets_dir, .tasks = j->cfg.tasks};
    ds_dataset *train = NULL, *eval = NULL;
    api_reply rep;
    api_reply_init(&rep);
    char code[48], msg[512];
    if (api_finetune_open(&env, &jb->spec, &train, &eval, &rep) != 0) {
        reply_error(&rep, code, sizeof code, msg, sizeof msg);
        api_reply_free(&rep);
        job_end(j, jb, JOB_FAILED, code, msg, "failed", NULL);
        free(ck);
        return;
    }
    run_ctx ctx = {j, jb};
    trainer_config c = api_finetune_trainer_config(&jb->spec);
    c.loader_threads = 1;
    c.log_every = 1;
    c.progress = on_progress;
    c.plan = on_plan;
    c.should_stop = on_should_stop;
    c.checkpoint_dir = ck;
    c.checkpoint_every_steps = j->cfg.checkpoint_every_steps;
    c.resume_dir = have_ck ? ck : NULL;
    c.checkpoint = on_checkpoint;
    c.on_bad_fn = on_bad_image;
    c.on_bad_ctx = &ctx;
    c.ctx = &ctx;
    jb->last_event = jb->last_save = monotonic();
    vit_set_threads(j->cfg.train_threads);
    trainer_result res = {0};
    vit_error err = {0};
    vit_status st = trainer_run(j->cfg.model, train, eval, &c, &res, &err);
    ds_close(eval);
    ds_close(train);
    pthread_mutex_lock(&j->lock);
    j->train_seconds += res.seconds;
    pthread_mutex_unlock(&j->lock);
    if (st != VIT_OK) {
        job_end(j, jb, JOB_FAILED, have_ck && st == VIT_ERR_MISMATCH ? "resume_failed"
                                                                      : "training_failed",
                err.message, "failed", NULL);
    } else if (res.cancelled && atomic_load(&jb->cancel)) {
        job_end(j, jb, JOB_CANCELLED, NULL, "cancelled", "cancelled",
                json_pack("{s:I}", "step", (json_int_t)res.steps));
    } else if (res.cancelled) { /* the server is stopping: resume at the next start */
        job_end(j, jb, JOB_QUEUED, NULL,
                "the server stopped; the job resumes from its last checkpoint at the next start",
                "interrupted", json_pack("{s:I}", "step", (json_int_t)res.steps));
    } else if (store_result(j, jb, &res, code, sizeof code, msg, sizeof msg) != 0) {
        job_end(j, jb, JOB_FAILED, code, msg, "failed", NULL);
    } else {
        pthread_mutex_lock(&j->lock);
        json_t *result = json_pack("{s:s,s:s,s:I}", "task", jb->spec.task, "file",
                                   jb->result_file, "bytes", (json_int_t)jb->result_bytes);
        json_t *metrics = json_pack("{s:o,s:o,s:o}", "train_loss", real_or_null(jb->train_loss),
                                    "eval_top1", real_or_null(jb->eval_top1), "eval_top5",
                                    real_or_null(jb->eval_top5));
        pthread_mutex_unlock(&j->lock);
        if (res.eval_status != VIT_OK) /* the task is good; its scores are unknown */
            job_event(j, jb, "warning", res.eval_error.message, NULL);
        char done[160];
        snprintf(done, sizeof done, "task '%s' is ready", jb->spec.task);
        job_end(j, jb, JOB_SUCCEEDED, NULL, done, "succeeded",
                json_pack("{s:o,s:o}", "result", result, "metrics", metrics));
    }
    trainer_result_free(&res);
    free(ck);
}

/* The first queued job, in creation order; under jobs.lock. */
static job *next_queued(jobs *j)
{
    for (size_t i = 0; i < j->n; i++)
        if (j->all[i]->status == JOB_QUEUED)
            return j->all[i];
    return NULL;
}

static void *runner(void *arg)
{
    jobs *j = arg;
    pthread_mutex_lock(&j->lock);
    for (;;) {
        job *jb = NULL;
        while (!atomic_load(&j->stopping) && !(jb = next_queued(j)))
            pthread_cond_wait(&j->wake, &j->lock);
        if (atomic_load(&j->stopping))
            break;
        bool resumed = jb->started_at > 0;
        jb->status = JOB_RUNNING;
        if (!resumed)
            jb->started_at = (long long)wall();
        pthread_mutex_unlock(&j->lock);
        run_job(j, jb, resumed);
        pthread_mutex_lock(&j->lock);
    }
    pthread_mutex_unlock(&j->lock);
    return NULL;
}

/* ---- reload ---- */

static const char *str_or(const char *s)
{
    return s ? s : "";
}

static long long json_time(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (long long)json_integer_value(v) : 0;
}

static double json_real_or_nan(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* Reads <jobs_dir>/<id>/job.json into a new job; NULL (and why) when it
 * does not read as one. */
static job *job_load(jobs *j, const char *id, char *why, size_t why_len)
{
    job *jb = job_new(j, id);
    if (!jb) {
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    char *path = path_join(jb->dir, "job.json");
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK) : -1;
    free(path);
    struct stat sb;
    uint8_t *text = NULL;
    size_t len = 0;
    vit_error err = {0};
    if (fd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) ||
        beneath_read_capped(fd, (size_t)sb.st_size, JOB_FILE_MAX, "job.json", &text, &len,
                            &err) != VIT_OK) {
        snprintf(why, why_len, "cannot read job.json: %.300s",
                 err.message[0] ? err.message : strerror(errno));
        if (fd >= 0)
            close(fd);
        job_free(jb);
        return NULL;
    }
    close(fd);
    json_error_t jerr;
    json_t *o = json_loadb((const char *)text, len, 0, &jerr);
    free(text);
    const char *status = json_string_value(json_object_get(o, "status"));
    int st = -1;
    for (int i = 0; status && i < 5; i++)
        if (strcmp(status, jobs_status_names[i]) == 0)
            st = i;
    json_t *req = o ? json_pack("{s:O*,s:O*,s:O*,s:O*,s:O*}", "task", json_object_get(o, "task"),
                                "train", json_object_get(o, "train"), "eval",
                                json_object_get(o, "eval"), "method",
                                json_object_get(o, "method"), "hyperparameters",
                                json_object_get(o, "hyperparameters"))
                    : NULL;
    api_reply rep;
    api_reply_init(&rep);
    bool ok = st >= 0 && req && api_finetune_parse(req, &jb->spec, &rep) == 0 &&
              strcmp(str_or(json_string_value(json_object_get(o, "id"))), id) == 0;
    if (!ok) {
        snprintf(why, why_len, "job.json is not a job of this server%s%.200s",
                 rep.body ? ": " : "", rep.body ? rep.body : "");
        api_reply_free(&rep);
        json_decref(req);
        json_decref(o);
        job_free(jb);
        return NULL;
    }
    json_decref(req);
    jb->status = st == JOB_RUNNING ? JOB_QUEUED : st; /* a run the crash cut: again, resumed */
    jb->created_at = json_time(o, "created_at");
    jb->started_at = json_time(o, "started_at");
    jb->finished_at = json_time(o, "finished_at");
    if (st == JOB_RUNNING && jb->started_at == 0)
        jb->started_at = jb->created_at ? jb->created_at : 1;
    const json_t *p = json_object_get(o, "progress"), *m = json_object_get(o, "metrics");
    jb->epoch = (int)json_integer_value(json_object_get(p, "epoch"));
    jb->epochs = (int)json_integer_value(json_object_get(p, "epochs"));
    jb->step = (long)json_integer_value(json_object_get(p, "step"));
    const json_t *total = json_object_get(p, "total_steps");
    jb->total_steps = json_is_integer(total) ? (long)json_integer_value(total) : -1;
    jb->train_loss = json_real_or_nan(m, "train_loss");
    jb->eval_top1 = json_real_or_nan(m, "eval_top1");
    jb->eval_top5 = json_real_or_nan(m, "eval_top5");
    jb->best_epoch = (int)json_integer_value(json_object_get(m, "best_epoch"));
    const json_t *e = json_object_get(o, "error"), *r = json_object_get(o, "result");
    snprintf(jb->error_code, sizeof jb->error_code, "%s",
             str_or(json_string_value(json_object_get(e, "code"))));
    snprintf(jb->error_message, sizeof jb->error_message, "%s",
             str_or(json_string_value(json_object_get(e, "message"))));
    snprintf(jb->result_file, sizeof jb->result_file, "%s",
             str_or(json_string_value(json_object_get(r, "file"))));
    jb->result_bytes = (long long)json_integer_value(json_object_get(r, "bytes"));
    json_decref(o);
    if ((jb->events = events_recover(jb)) < 0) {
        snprintf(why, why_len, "cannot read events.jsonl");
        job_free(jb);
        return NULL;
    }
    return jb;
}

static vit_status reload(jobs *j, vit_error *err)
{
    DIR *d = opendir(j->jobs_dir);
    if (!d)
        return vit_error_set(err, VIT_ERR_IO, "cannot read %s: %s", j->jobs_dir, strerror(errno));
    struct dirent *e;
    vit_status st = VIT_OK;
    while (st == VIT_OK && (e = readdir(d))) {
        if (!id_syntax(e->d_name))
            continue;
        char why[512];
        job *jb = job_load(j, e->d_name, why, sizeof why);
        if (!jb) {
            if (j->cfg.log)
                j->cfg.log(j->cfg.ctx, e->d_name, "skipped", why);
            continue;
        }
        if (!insert(j, jb)) {
            job_free(jb);
            st = vit_error_set(err, VIT_ERR_NOMEM, "out of memory reloading jobs");
        }
    }
    closedir(d);
    return st;
}

vit_status jobs_open(const jobs_config *c, jobs **out, vit_error *err)
{
    *out = NULL;
    jobs *j = calloc(1, sizeof *j);
    if (!j)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    j->cfg = *c;
    pthread_mutex_init(&j->lock, NULL);
    pthread_cond_init(&j->wake, NULL);
    atomic_init(&j->stopping, false);
    j->jobs_dir = path_join(c->data_dir, "jobs");
    j->datasets_dir = path_join(c->data_dir, "datasets");
    vit_status st = VIT_OK;
    if (!j->jobs_dir || !j->datasets_dir)
        st = vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    else if (mkdir(j->jobs_dir, 0755) != 0 && errno != EEXIST)
        st = vit_error_set(err, VIT_ERR_IO, "cannot create %s: %s", j->jobs_dir, strerror(errno));
    else if (mkdir(j->datasets_dir, 0755) != 0 && errno != EEXIST)
        st = vit_error_set(err, VIT_ERR_IO, "cannot create %s: %s", j->datasets_dir,
                           strerror(errno));
    if (st == VIT_OK)
        st = reload(j, err);
    if (st != VIT_OK) {
        jobs_close(j);
        return st;
    }
    *out = j;
    return VIT_OK;
}

vit_status jobs_start(jobs *j, vit_error *err)
{
    j->threads = calloc((size_t)j->cfg.max_running, sizeof *j->threads);
    if (!j->threads)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    for (int i = 0; i < j->cfg.max_running; i++) {
        int rc = pthread_create(&j->threads[i], NULL, runner, j);
        if (rc != 0) {
            jobs_stop(j);
            return vit_error_set(err, VIT_ERR_IO, "cannot start a job runner: %s", strerror(rc));
        }
        j->nthreads++;
    }
    return VIT_OK;
}

void jobs_stop(jobs *j)
{
    if (!j)
        return;
    pthread_mutex_lock(&j->lock);
    atomic_store(&j->stopping, true);
    pthread_cond_broadcast(&j->wake);
    pthread_mutex_unlock(&j->lock);
    for (int i = 0; i < j->nthreads; i++)
        pthread_join(j->threads[i], NULL);
    j->nthreads = 0;
}

void jobs_close(jobs *j)
{
    if (!j)
        return;
    jobs_stop(j);
    for (size_t i = 0; i < j->n; i++)
        job_free(j->all[i]);
    free(j->all);
    free(j->threads);
    free(j->jobs_dir);
    free(j->datasets_dir);
    pthread_cond_destroy(&j->wake);
    pthread_mutex_destroy(&j->lock);
    free(j);
}

/* ---- the routes ---- */

static int not_found(api_reply *r, const char *id)
{
    return api_error(r, 404, "job_not_found", "no fine-tune job '%.40s'", id ? id : "");
}

/* A new id: creation milliseconds (never going back) + random bits. */
static void new_id(jobs *j, char id[JOB_ID_LEN + 1])
{
    long long ms = (long long)(wall() * 1e3);
    if (ms <= j->last_id_ms)
        ms = j->last_id_ms + 1;
    j->last_id_ms = ms;
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd)
        rnd = (uint32_t)(monotonic() * 1e9);
    snprintf(id, JOB_ID_LEN + 1, "ftjob-%011llx%05x", ms & 0xFFFFFFFFFFFll, rnd & 0xFFFFF);
}

int jobs_submit(jobs *j, const api_finetune_spec *spec, api_reply *r)
{
    pthread_mutex_lock(&j->lock);
    long queued = 0;
    for (size_t i = 0; i < j->n; i++) {
        const job *o = j->all[i];
        if (o->status == JOB_QUEUED)
            queued++;
        if (!finished(o->status) && strcmp(o->spec.task, spec->task) == 0) {
            pthread_mutex_unlock(&j->lock);
            return api_error_field(r, 409, "task_in_progress", "task",
                                   "job %s already trains task '%s'", o->id, spec->task);
        }
    }
    if (queued >= j->cfg.max_queued) {
        pthread_mutex_unlock(&j->lock);
        api_error(r, 429, "queue_full", "%ld fine-tune jobs are queued (max_queued_jobs); "
                  "retry later", queued);
        r->retry_after_s = 30;
        return -1;
    }
    char id[JOB_ID_LEN + 1];
    new_id(j, id);
    job *jb = job_new(j, id);
    if (!jb) {
        pthread_mutex_unlock(&j->lock);
        return api_error(r, 500, "out_of_memory", "out of memory");
    }
    jb->spec = *spec;
    jb->status = JOB_QUEUED;
    jb->created_at = (long long)wall();
    /* its files (and first event) before anyone can see it: a listed job
     * always has them, and a runner can take it the moment it is listed */
    int rc = -1;
    if (mkdir(jb->dir, 0755) != 0)
        api_error(r, 500, "io_error", "cannot create the job's directory: %s", strerror(errno));
    else if (job_write(jb, job_json(jb)) != 0)
        api_error(r, 500, "io_error", "cannot write the job's job.json");
    else if (event_append_locked(j, jb, "created", "job created", NULL), jb->events != 1)
        api_error(r, 500, "io_error", "cannot write the job's events.jsonl");
    else if (!insert(j, jb))
        api_error(r, 500, "out_of_memory", "out of memory");
    else
        rc = api_json(r, 201, job_json(jb));
    if (rc != 0) {
        if (jb->dir) {
            static const char *const files[] = {"job.json", "events.jsonl"};
            for (size_t i = 0; i < 2; i++) {
                char *f = path_join(jb->dir, files[i]);
                if (f)
                    unlink(f);
                free(f);
            }
            rmdir(jb->dir);
        }
        pthread_mutex_unlock(&j->lock);
        job_free(jb);
        return -1;
    }
    pthread_cond_signal(&j->wake);
    pthread_mutex_unlock(&j->lock);
    job_log(j, jb, "queued", spec->task);
    return 0;
}

int jobs_get(jobs *j, const char *id, api_reply *r)
{
    pthread_mutex_lock(&j->lock);
    job *jb = find(j, id);
    json_t *o = jb ? job_json(jb) : NULL;
    pthread_mutex_unlock(&j->lock);
    return jb ? api_json(r, 200, o) : not_found(r, id);
}

bool jobs_exists(jobs *j, const char *id)
{
    pthread_mutex_lock(&j->lock);
    bool yes = find(j, id) != NULL;
    pthread_mutex_unlock(&j->lock);
    return yes;
}

int jobs_cancel(jobs *j, const char *id, api_reply *r)
{
    pthread_mutex_lock(&j->lock);
    job *jb = find(j, id);
    if (!jb) {
        pthread_mutex_unlock(&j->lock);
        return not_found(r, id);
    }
    if (finished(jb->status)) {
        const char *status = jobs_status_names[jb->status];
        pthread_mutex_unlock(&j->lock);
        return api_error(r, 409, "job_finished", "job %s has %s already", id, status);
    }
    atomic_store(&jb->cancel, true); /* a runner stops it between two steps */
    bool queued = jb->status == JOB_QUEUED;
    if (queued) /* no runner has it, and none takes it now */
        job_set_status(j, jb, JOB_CANCELLED, NULL, NULL);
    pthread_mutex_unlock(&j->lock);
    if (queued)
        job_publish(j, jb, "cancelled", "cancelled before it started", NULL);
    return jobs_get(j, id, r);
}

/* A query's integer in [lo, hi]: false when it is not one. */
static bool query_long(const char *s, long lo, long hi, long *out)
{
    if (!s || !*s || strlen(s) > 18)
        return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

int jobs_list(jobs *j, const char *status, const char *limit, const char *after, api_reply *r)
{
    int want = -1;
    if (status) {
        for (int i = 0; i < 5; i++)
            if (strcmp(status, jobs_status_names[i]) == 0)
                want = i;
        if (want < 0)
            return api_error_field(r, 422, "invalid_field", "status",
                                   "'status' must be queued, running, succeeded, failed or "
                                   "cancelled");
    }
    long max = 20;
    if (limit && !query_long(limit, 1, 100, &max))
        return api_error_field(r, 422, "invalid_field", "limit",
                               "'limit' must be an integer from 1 to 100");
    json_t *data = json_array();
    pthread_mutex_lock(&j->lock);
    size_t start = j->n; /* newest first: walk down from here */
    if (after) {
        job *a = find(j, after);
        if (!a) {
            pthread_mutex_unlock(&j->lock);
            json_decref(data);
            return api_error_field(r, 422, "invalid_field", "after",
                                   "'after' names no job ('%.40s')", after);
        }
        while (start > 0 && j->all[start - 1] != a)
            start--;
        start--; /* the jobs after it in this order: the older ones */
    }
    bool more = false;
    for (size_t i = start; data && i > 0; i--) {
        const job *jb = j->all[i - 1];
        if (want >= 0 && jb->status != want)
            continue;
        if ((long)json_array_size(data) == max) {
            more = true;
            break;
        }
        if (json_array_append_new(data, job_json(jb)) != 0) {
            json_decref(data);
            data = NULL;
        }
    }
    pthread_mutex_unlock(&j->lock);
    return api_json(r, 200, data ? json_pack("{s:s,s:o,s:b}", "object", "list", "data", data,
                                             "has_more", more)
                                 : NULL);
}

/* events.jsonl of job id, whole (malloc'd, NUL-terminated); *ended: the job
 * has finished.  NULL with err set when the job is unknown or unreadable. */
static char *read_events(jobs *j, const char *id, size_t *len, bool *ended, vit_error *err)
{
    pthread_mutex_lock(&j->lock);
    job *jb = find(j, id);
    char *path = jb ? path_join(jb->dir, "events.jsonl") : NULL;
    if (ended)
        *ended = jb && finished(jb->status);
    pthread_mutex_unlock(&j->lock);
    if (!jb) {
        vit_error_set(err, VIT_ERR_NOT_FOUND, "no fine-tune job '%.40s'", id ? id : "");
        return NULL;
    }
    if (!path) {
        vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    free(path);
    struct stat sb;
    uint8_t *text = NULL;
    *len = 0;
    if (fd < 0 && errno == ENOENT) { /* no event yet */
        text = calloc(1, 1);
        if (!text)
            vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
        return (char *)text;
    }
    if (fd < 0 || fstat(fd, &sb) != 0)
        vit_error_set(err, VIT_ERR_IO, "cannot read the job's events: %s", strerror(errno));
    else if (beneath_read_capped(fd, (size_t)sb.st_size, EVENTS_FILE_MAX, "events.jsonl",
                                 &text, len, err) == VIT_OK) {
        char *grown = realloc(text, *len + 1);
        if (grown) {
            grown[*len] = '\0';
            text = (uint8_t *)grown;
        } else {
            free(text);
            text = NULL;
            vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
        }
    }
    if (fd >= 0)
        close(fd);
    return (char *)text;
}

/* Calls fn on each complete line (event id = line number) after `after`;
 * stops when fn returns false. */
static void each_event(char *text, size_t len, long after,
                       bool (*fn)(void *ctx, long id, const char *line, size_t n), void *ctx)
{
    long id = 0;
    for (size_t at = 0; at < len;) {
        char *nl = memchr(text + at, '\n', len - at);
        if (!nl)
            break; /* a line being written */
        id++;
        if (id > after && !fn(ctx, id, text + at, (size_t)(nl - (text + at))))
            break;
        at = (size_t)(nl - text) + 1;
    }
}

typedef struct list_ctx {
    json_t *data;
    long max;
    bool more;
} list_ctx;

static bool list_event(void *ctx, long id, const char *line, size_t n)
{
    (void)id;
    list_ctx *c = ctx;
    if ((long)json_array_size(c->data) == c->max) {
        c->more = true;
        return false;
    }
    json_t *e = json_loadb(line, n, 0, NULL);
    if (e)
        json_array_append_new(c->data, e);
    return true;
}

int jobs_events(jobs *j, const char *id, const char *after, const char *limit, api_reply *r)
{
    long from = 0, max = 100;
    if (after && !query_long(after, 0, LONG_MAX / 2, &from))
        return api_error_field(r, 422, "invalid_field", "after",
                               "'after' must be an event id (an integer >= 0)");
    if (limit && !query_long(limit, 1, EVENTS_LIST_MAX, &max))
        return api_error_field(r, 422, "invalid_field", "limit",
                               "'limit' must be an integer from 1 to %d", EVENTS_LIST_MAX);
    vit_error err = {0};
    size_t len;
    char *text = read_events(j, id, &len, NULL, &err);
    if (!text)
        return err.code == VIT_ERR_NOT_FOUND ? not_found(r, id) : api_engine_error(r, &err);
    list_ctx c = {json_array(), max, false};
    if (c.data)
        each_event(text, len, from, list_event, &c);
    free(text);
    return api_json(r, 200, c.data ? json_pack("{s:s,s:o,s:b}", "object", "list", "data", c.data,
                                               "has_more", c.more)
                                   : NULL);
}

typedef struct frame_ctx {
    char *buf;
    size_t len, cap;
    long last;
    bool final, oom;
} frame_ctx;

static bool frame_event(void *ctx, long id, const char *line, size_t n)
{
    frame_ctx *c = ctx;
    json_t *e = json_loadb(line, n, 0, NULL);
    const char *type = json_string_value(json_object_get(e, "type"));
    char head[96];
    int h = snprintf(head, sizeof head, "id: %ld\nevent: %s\ndata: ", id, type ? type : "event");
    c->final = type && (strcmp(type, "succeeded") == 0 || strcmp(type, "failed") == 0 ||
                        strcmp(type, "cancelled") == 0);
    json_decref(e);
    size_t need = c->len + (size_t)h + n + 3;
    if (need > c->cap) {
        size_t want = c->cap ? 2 * c->cap : 4096;
        while (want < need)
            want *= 2;
        char *grown = realloc(c->buf, want);
        if (!grown) {
            c->oom = true;
            return false;
        }
        c->buf = grown;
        c->cap = want;
    }
    memcpy(c->buf + c->len, head, (size_t)h);
    c->len += (size_t)h;
    memcpy(c->buf + c->len, line, n); /* one line: JSON escapes every newline */
    c->len += n;
    memcpy(c->buf + c->len, "\n\n", 2);
    c->len += 2;
    c->last = id;
    return true;
}

vit_status jobs_event_frames(jobs *j, const char *id, long after, char **buf, size_t *len,
                             long *last, bool *ended, vit_error *err)
{
    *buf = NULL;
    *len = 0;
    *last = after;
    *ended = false;
    size_t n;
    bool job_finished;
    char *text = read_events(j, id, &n, &job_finished, err);
    if (!text)
        return err->code;
    frame_ctx c = {0};
    c.last = after;
    each_event(text, n, after, frame_event, &c);
    /* the last line of the file, framed now or before, decides the end */
    bool final_seen = c.final;
    if (c.last == after && job_finished) {
        size_t start = n > 0 ? n - 1 : 0; /* the last line begins after the newline before */
        while (start > 0 && text[start - 1] != '\n')
            start--;
        const char *line = text + start;
        final_seen = strstr(line, "\"type\":\"succeeded\"") || strstr(line, "\"type\":\"failed\"") ||
                     strstr(line, "\"type\":\"cancelled\"");
    }
    free(text);
    if (c.oom) {
        free(c.buf);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    }
    *buf = c.buf;
    *len = c.len;
    *last = c.last;
    *ended = job_finished && final_seen;
    return VIT_OK;
}

void jobs_stats_get(jobs *j, jobs_stats *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&j->lock);
    for (size_t i = 0; i < j->n; i++) {
        const job *jb = j->all[i];
        out->by_status[jb->status]++;
        if (jb->status == JOB_RUNNING && isfinite(jb->images_per_second))
            out->images_per_second += jb->images_per_second;
    }
    memcpy(out->finished_total, j->finished_total, sizeof out->finished_total);
    out->train_seconds = j->train_seconds;
    pthread_mutex_unlock(&j->lock);
}
