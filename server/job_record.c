/*
 * job_record.c - one fine-tune job's record: the job object, job.json
 * (rewritten atomically) and events.jsonl (appended; an event's id is its
 * line number), and reading them back at start (jobs_impl.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "beneath.h"
#include "jobs_impl.h"

double job_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double job_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

bool job_finished(int status)
{
    return status >= JOB_SUCCEEDED;
}

char *job_path(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", a, b);
    return p;
}

void job_free(job *jb)
{
    if (!jb)
        return;
    pthread_mutex_destroy(&jb->file_lock);
    free(jb->dir);
    free(jb);
}

job *job_new(jobs *j, const char *id)
{
    job *jb = calloc(1, sizeof *jb);
    if (!jb)
        return NULL;
    snprintf(jb->id, sizeof jb->id, "%s", id);
    if (!(jb->dir = job_path(j->jobs_dir, id))) {
        free(jb);
        return NULL;
    }
    pthread_mutex_init(&jb->file_lock, NULL);
    atomic_init(&jb->cancel, false);
    atomic_init(&jb->skipped, 0);
    atomic_init(&jb->lease_lost, false);
    jb->total_steps = -1;
    jb->images_per_second = jb->eta_seconds = NAN;
    jb->train_loss = jb->eval_top1 = jb->eval_top5 = NAN;
    jb->best_epoch = -1;
    return jb;
}

/* ---- the job object ---- */

json_t *job_json_real(double x)
{
    return isfinite(x) ? json_real(x) : json_null();
}

static json_t *time_or_null(long long t)
{
    return t > 0 ? json_integer(t) : json_null();
}

json_t *job_json(const job *jb)
{
    return job_json_as(jb, jb->status, jb->finished_at);
}

json_t *job_json_as(const job *jb, int status, long long finished_at)
{
    const api_finetune_spec *s = &jb->spec;
    bool ended = job_finished(status);
    json_t *error = status == JOB_FAILED
                        ? json_pack("{s:s,s:o}", "code", jb->error_code, "message",
                                    api_json_text(jb->error_message))
                        : json_null();
    json_t *result = status == JOB_SUCCEEDED
                         ? json_pack("{s:s,s:s,s:I}", "task", s->task, "file", jb->result_file,
                                     "bytes", (json_int_t)jb->result_bytes)
                         : json_null();
    return json_pack(
        "{s:s,s:s,s:s,s:s,s:s,s:s,s:o,s:o,s:o,s:o,s:o,"
        "s:{s:i,s:i,s:I,s:o,s:o,s:o},s:{s:o,s:o,s:o,s:o,s:o},s:o,s:o,s:b}",
        "id", jb->id, "object", "finetune.job", "status", jobs_status_names[status], "task",
        s->task, "method", vit_method_name(s->method), "train", s->train, "eval",
        s->eval[0] ? json_string(s->eval) : json_null(), "hyperparameters",
        api_finetune_hyperparameters(s), "created_at", time_or_null(jb->created_at),
        "started_at", time_or_null(jb->started_at), "finished_at",
        time_or_null(finished_at), "progress", "epoch", jb->epoch, "epochs",
        jb->epochs ? jb->epochs : s->epochs, "step", (json_int_t)jb->step, "total_steps",
        jb->total_steps >= 0 ? json_integer(jb->total_steps) : json_null(),
        "images_per_second", job_json_real(ended ? NAN : jb->images_per_second), "eta_seconds",
        job_json_real(ended ? NAN : jb->eta_seconds), "metrics", "train_loss", job_json_real(jb->train_loss),
        "eval_top1", job_json_real(jb->eval_top1), "eval_top5", job_json_real(jb->eval_top5),
        "best_epoch", jb->best_epoch >= 0 ? json_integer(jb->best_epoch) : json_null(),
        "eval_on", jb->eval_on[0] ? json_string(jb->eval_on) : json_null(), "error", error,
        "result", result, "cancel_requested", !ended && atomic_load(&jb->cancel));
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
int job_write(const job *jb, json_t *snapshot)
{
    /* 17 digits: the hyper-parameters read back at a restart are the very doubles
     * the job ran with (a resumed run must match its checkpoint) */
    char *text =
        snapshot ? json_dumps(snapshot, JSON_INDENT(1) | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(snapshot);
    char *tmp = job_path(jb->dir, ".job.json.tmp"), *final = job_path(jb->dir, "job.json");
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
void job_save(jobs *j, job *jb)
{
    if (atomic_load(&jb->lease_lost)) /* another replica writes it now */
        return;
    pthread_mutex_lock(&jb->file_lock);
    pthread_mutex_lock(&j->lock);
    json_t *snap = job_json(jb);
    pthread_mutex_unlock(&j->lock);
    if (job_write(jb, snap) != 0 && j->cfg.log)
        j->cfg.log(j->cfg.ctx, jb->id, "warning", "cannot write job.json");
    pthread_mutex_unlock(&jb->file_lock);
}

/* Counts the complete lines of events.jsonl and cuts a torn last line (a
 * crash mid-append); returns the count, or -1 when it cannot be read.
 * Without recover only checks that it is a regular file (returns 0): its
 * holder may be appending to it. */
static long events_recover(const job *jb, bool recover)
{
    char *path = job_path(jb->dir, "events.jsonl");
    if (!path)
        return -1;
    int fd = open(path, (recover ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    free(path);
    if (fd < 0)
        return errno == ENOENT ? 0 : -1;
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) { /* a FIFO would block the start */
        close(fd);
        return -1;
    }
    if (!recover) {
        close(fd);
        return 0;
    }
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
void job_event_append_locked(jobs *j, job *jb, const char *type, const char *message,
                                json_t *data)
{
    long *count = &jb->events;
    json_t *e = json_pack("{s:I,s:s,s:f,s:o,s:o}", "id", (json_int_t)(*count + 1), "type", type,
                          "created_at", job_wall(), "message", api_json_text(message ? message : ""),
                          "data", data ? data : json_object());
    char *line = e ? json_dumps(e, JSON_COMPACT | JSON_REAL_PRECISION(12)) : NULL;
    json_decref(e);
    char *path = job_path(jb->dir, "events.jsonl");
    bool ok = false;
    if (line && path) {
        /* non-blocking and a regular file only: a FIFO planted in the shared
         * directory would otherwise hold the trainer, and its lease, forever */
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK,
                      0644);
        struct stat sb;
        if (fd >= 0 && fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode)) {
            size_t n = strlen(line);
            line[n] = '\n'; /* the NUL is not written */
            ok = write_all(fd, line, n + 1) == 0 && fdatasync(fd) == 0;
        }
        if (fd >= 0)
            close(fd);
    }
    if (ok)
        (*count)++;
    else if (j->cfg.log)
        j->cfg.log(j->cfg.ctx, jb->id, "warning", "cannot append to events.jsonl");
    free(line);
    free(path);
}

void job_event(jobs *j, job *jb, const char *type, const char *message, json_t *data)
{
    if (atomic_load(&jb->lease_lost)) { /* another replica writes them now */
        json_decref(data);
        return;
    }
    pthread_mutex_lock(&jb->file_lock);
    job_event_append_locked(j, jb, type, message, data);
    pthread_mutex_unlock(&jb->file_lock);
    if (j->cfg.notify)
        j->cfg.notify(j->cfg.ctx);
}

void job_log(jobs *j, const job *jb, const char *status, const char *detail)
{
    if (j->cfg.log)
        j->cfg.log(j->cfg.ctx, jb->id, status, detail);
}

/* ---- reading a record back ---- */

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

job_stamp job_stamp_of(const char *path)
{
    struct stat sb;
    if (!path || stat(path, &sb) != 0)
        return (job_stamp){0};
    return (job_stamp){.dev = (uint64_t)sb.st_dev, .ino = (uint64_t)sb.st_ino,
                       .size = (uint64_t)sb.st_size, .mtime_s = (int64_t)sb.st_mtim.tv_sec,
                       .mtime_ns = (int64_t)sb.st_mtim.tv_nsec};
}

bool job_stamp_equal(const job_stamp *a, const job_stamp *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime_s == b->mtime_s && a->mtime_ns == b->mtime_ns;
}

void job_adopt(job *dst, const job *src)
{
    dst->status = src->status;
    atomic_store(&dst->cancel, atomic_load(&src->cancel));
    dst->created_at = src->created_at;
    dst->started_at = src->started_at;
    dst->finished_at = src->finished_at;
    dst->epoch = src->epoch;
    dst->epochs = src->epochs;
    dst->step = src->step;
    dst->total_steps = src->total_steps;
    dst->images_per_second = src->images_per_second;
    dst->eta_seconds = src->eta_seconds;
    dst->train_loss = src->train_loss;
    dst->eval_top1 = src->eval_top1;
    dst->eval_top5 = src->eval_top5;
    dst->best_epoch = src->best_epoch;
    memcpy(dst->eval_on, src->eval_on, sizeof dst->eval_on);
    memcpy(dst->error_code, src->error_code, sizeof dst->error_code);
    memcpy(dst->error_message, src->error_message, sizeof dst->error_message);
    memcpy(dst->result_file, src->result_file, sizeof dst->result_file);
    dst->result_bytes = src->result_bytes;
    dst->record = src->record;
}

bool job_cancel_marked(const job *jb)
{
    char *path = job_path(jb->dir, "cancel");
    struct stat sb;
    bool yes = path && lstat(path, &sb) == 0;
    free(path);
    return yes;
}

int job_cancel_mark(const job *jb)
{
    char *path = job_path(jb->dir, "cancel");
    int fd = path ? open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644) : -1;
    free(path);
    if (fd < 0)
        return -1;
    /* fsynced: the holder may be another NFS client */
    int rc = fsync(fd);
    close(fd);
    return rc == 0 ? 0 : -1;
}

/* Reads <jobs_dir>/<id>/job.json into a new job; NULL (and why) when it
 * does not read as one. */
job *job_load(jobs *j, const char *id, bool recover, char *why, size_t why_len)
{
    job *jb = job_new(j, id);
    if (!jb) {
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    char *path = job_path(jb->dir, "job.json");
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK) : -1;
    free(path);
    struct stat sb;
    if (fd >= 0 && fstat(fd, &sb) == 0) /* the version read: a rewrite renames another in */
        jb->record = (job_stamp){.dev = (uint64_t)sb.st_dev, .ino = (uint64_t)sb.st_ino,
                                 .size = (uint64_t)sb.st_size,
                                 .mtime_s = (int64_t)sb.st_mtim.tv_sec,
                                 .mtime_ns = (int64_t)sb.st_mtim.tv_nsec};
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
    jb->status = st; /* running: somewhere, or cut by a crash (its lease says which) */
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
    const json_t *best = json_object_get(m, "best_epoch");
    jb->best_epoch = json_is_integer(best) ? (int)json_integer_value(best) : -1;
    snprintf(jb->eval_on, sizeof jb->eval_on, "%s",
             str_or(json_string_value(json_object_get(m, "eval_on"))));
    const json_t *e = json_object_get(o, "error"), *r = json_object_get(o, "result");
    snprintf(jb->error_code, sizeof jb->error_code, "%s",
             str_or(json_string_value(json_object_get(e, "code"))));
    snprintf(jb->error_message, sizeof jb->error_message, "%s",
             str_or(json_string_value(json_object_get(e, "message"))));
    snprintf(jb->result_file, sizeof jb->result_file, "%s",
             str_or(json_string_value(json_object_get(r, "file"))));
    jb->result_bytes = (long long)json_integer_value(json_object_get(r, "bytes"));
    if (json_is_true(json_object_get(o, "cancel_requested")) && !job_finished(jb->status))
        atomic_store(&jb->cancel, true); /* ended as cancelled by whoever claims it */
    json_decref(o);
    if ((jb->events = events_recover(jb, recover)) < 0) {
        snprintf(why, why_len, "cannot read events.jsonl");
        job_free(jb);
        return NULL;
    }
    return jb;
}
