/*
 * job_run.c - the runner threads: a queued job is trained with the engine's
 * trainer (checkpointing into <job>/checkpoint, resuming from it after a
 * restart), its progress published under jobs.lock, its task put into the
 * live store, and its end recorded (jobs_impl.h).
 */
#include <dirent.h>
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
#include "job_fetch.h"
#include "trainer.h"
#include "jobs_impl.h"

/* ---- ending a job ---- */

/* Removes <dir>/checkpoint and what it holds (one level: the trainer's files). */
static void remove_checkpoint(const job *jb)
{
    char *ck = job_path(jb->dir, "checkpoint");
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

void job_cleanup(jobs *j, job *jb)
{
    remove_checkpoint(jb);
    char *mark = job_path(jb->dir, "cancel");
    if (mark)
        unlink(mark); /* a cancel asked of another replica: answered */
    free(mark);
    vit_error ferr = {0};
    if (job_fetch_remove(jb->dir, &ferr) != VIT_OK)
        job_log(j, jb, "warning", ferr.message);
}

void job_end(jobs *j, job *jb, int status, const char *code, const char *message,
             const char *event, json_t *data)
{
    if (!job_still_held(j, jb)) { /* another replica has the job and its record now */
        json_decref(data);
        job_log(j, jb, "warning", "the job's lease was lost: stopped here without writing its "
                "end (whoever holds it now writes it)");
        return;
    }
    if (status == JOB_FAILED && !data)
        data = json_pack("{s:{s:s,s:o}}", "error", "code", code, "message",
                         api_json_text(message));
    pthread_mutex_lock(&jb->file_lock);
    pthread_mutex_lock(&j->lock);
    if (status == JOB_FAILED) { /* shown only once the status says failed */
        snprintf(jb->error_code, sizeof jb->error_code, "%s", code);
        snprintf(jb->error_message, sizeof jb->error_message, "%s", message);
    }
    long long finished_at = job_finished(status) ? (long long)job_wall() : 0;
    json_t *snap = job_json_as(jb, status, finished_at);
    pthread_mutex_unlock(&j->lock);
    if (job_write(jb, snap) != 0)
        job_log(j, jb, "warning", "cannot write job.json");
    job_event_append_locked(j, jb, event, message, data);
    if (job_finished(status)) /* the record says so: what it needed can go */
        job_cleanup(j, jb);
    pthread_mutex_lock(&j->lock);
    jb->status = status;
    if (job_finished(status)) {
        jb->finished_at = finished_at;
        j->finished_total[status]++;
        jb->images_per_second = jb->eta_seconds = NAN;
    }
    pthread_mutex_unlock(&j->lock);
    pthread_mutex_unlock(&jb->file_lock);
    if (j->cfg.notify)
        j->cfg.notify(j->cfg.ctx);
    job_log(j, jb, jobs_status_names[status], message);
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
    return atomic_load(&c->jb->cancel) || atomic_load(&c->j->stopping) ||
           atomic_load(&c->jb->lease_lost);
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
    double now = job_monotonic();
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
    if (now - jb->last_save >= PROGRESS_SAVE_S) {
        job_save(c->j, jb);
        jb->last_save = now;
    }
}

/* An epoch ended (and was validated, when there is a validation set). */
static void on_epoch_end(void *ctx, const trainer_epoch_info *e)
{
    run_ctx *c = ctx;
    job *jb = c->jb;
    pthread_mutex_lock(&c->j->lock);
    jb->epoch = e->epoch;
    jb->epochs = e->epochs;
    jb->train_loss = e->train_loss;
    if (e->has_val) {
        jb->eval_top1 = e->val_top1;
        jb->eval_top5 = e->val_top5;
        jb->best_epoch = e->best_epoch;
        snprintf(jb->eval_on, sizeof jb->eval_on, "%s", jb->spec.eval[0] ? "eval" : "validation");
    }
    pthread_mutex_unlock(&c->j->lock);
    char msg[200];
    if (e->has_val)
        snprintf(msg, sizeof msg, "epoch %d/%d: train loss %.4f, validation top-1 %.4f%s%s",
                 e->epoch, e->epochs, e->train_loss, e->val_top1, e->is_best ? " (best)" : "",
                 e->stopping ? "; early stopping" : "");
    else
        snprintf(msg, sizeof msg, "epoch %d/%d: train loss %.4f", e->epoch, e->epochs,
                 e->train_loss);
    json_t *data = json_pack("{s:i,s:i,s:I,s:I,s:f,s:b}", "epoch", e->epoch, "epochs", e->epochs,
                             "step", (json_int_t)e->step, "total_steps",
                             (json_int_t)e->total_steps, "train_loss", e->train_loss,
                             "stopping", e->stopping);
    if (data && e->has_val) {
        json_object_set_new(data, "eval_top1", json_real(e->val_top1));
        json_object_set_new(data, "eval_top5", json_real(e->val_top5));
        json_object_set_new(data, "eval_loss", job_json_real(e->val_loss));
        json_object_set_new(data, "best_epoch", json_integer(e->best_epoch));
        json_object_set_new(data, "is_best", json_boolean(e->is_best));
    }
    job_event(c->j, jb, "epoch_end", msg, data);
}

static void on_checkpoint(void *ctx, const trainer_checkpoint_info *info)
{
    run_ctx *c = ctx;
    job *jb = c->jb;
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
    /* a set of bad files is told each epoch: the first ones are listed, the
     * rest counted, so events.jsonl stays small */
    long n = atomic_fetch_add(&c->jb->skipped, 1) + 1;
    char file[1024], reason[1024];
    snprintf(file, sizeof file, "%s", item);
    snprintf(reason, sizeof reason, "%s", message);
    api_finetune_strip_prefix(file, c->j->datasets_real);
    api_finetune_strip_prefix(reason, c->j->datasets_real);
    if (n < JOB_SKIPPED_EVENTS_MAX)
        job_event(c->j, c->jb, "skipped_image", reason,
                  json_pack("{s:o,s:o}", "file", api_json_text(file), "reason",
                            api_json_text(reason)));
    else if (n == JOB_SKIPPED_EVENTS_MAX)
        job_event(c->j, c->jb, "skipped_image",
                  "more images were skipped; they are counted, not listed",
                  json_pack("{s:I}", "skipped", (json_int_t)n));
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
    char steps[32], loss[32], top1[32], top5[32], best[16], epochs[16];
    snprintf(steps, sizeof steps, "%ld", res->steps);
    snprintf(loss, sizeof loss, "%.6f", res->final_loss);
    fmt_real(top1, sizeof top1, res->has_eval, res->eval.top1);
    fmt_real(top5, sizeof top5, res->has_eval, res->eval.top5);
    snprintf(best, sizeof best, "%d", res->best_epoch);
    snprintf(epochs, sizeof epochs, "%d", res->epochs_run);
    /* the scores are the saved (best) state's, on the eval set or the
     * validation split held out of train */
    const char *eval_on = !res->has_eval ? "" : res->eval_is_validation ? "validation" : "eval";
    const char *keys[] = {"job_id", "train_data", "eval_data", "hyperparameters", "steps",
                          "epochs_run", "train_loss", "eval_top1", "eval_top5", "eval_on",
                          "best_epoch", "stopped_early", "augment_used", NULL};
    const char *values[] = {jb->id, s->train, s->eval, hyper_text ? hyper_text : "{}", steps,
                            epochs, loss, top1, top5, eval_on, res->has_eval ? best : "",
                            res->stopped_early ? "true" : "false",
                            trainer_augment_name(res->augment_used), NULL};
    task_meta meta = {keys, values};
    char *tmp = job_path(jb->dir, "task.safetensors");
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
    if (st == VIT_OK && !job_still_held(j, jb)) /* the job's successor publishes its own */
        st = vit_error_set(&err, VIT_ERR_IO, "the job's lease was lost before its task was stored");
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
    if (res->has_eval) { /* the saved state's: the best epoch's */
        jb->eval_top1 = res->eval.top1;
        jb->eval_top5 = res->eval.top5;
        jb->best_epoch = res->best_epoch;
        snprintf(jb->eval_on, sizeof jb->eval_on, "%s", eval_on);
    }
    jb->step = res->steps;
    jb->total_steps = res->total_steps;
    jb->epoch = res->epochs_run;
    pthread_mutex_unlock(&j->lock);
    return 0;
}

/* The backbone a job trains on.  Training runs in fp32 (bf16 training is
 * not offered), so when the served model kept only a bf16 packing (one copy
 * of the weights) the job loads an fp32 copy of the same checkpoint for its
 * run -- the caller frees *copy -- and checks that it is the backbone the
 * server serves: a checkpoint replaced on disk since the start is refused.
 * Otherwise *copy stays NULL and the served model is shared. */
static vit_status training_backbone(const jobs *j, const job *jb, vit_model **copy,
                                    vit_error *err)
{
    *copy = NULL;
    const vit_model *served = j->cfg.model;
    if (!served->unpacked_released || served->precision == VIT_PRECISION_FP32)
        return VIT_OK;
    vit_load_options lo = {.precision = VIT_PRECISION_FP32, .one_copy = true};
    vit_status st = vit_model_load_with(j->cfg.model_path, &lo, copy, err);
    if (st != VIT_OK) { /* its message names the server's files: the log's, not the client's */
        if (j->cfg.log)
            j->cfg.log(j->cfg.ctx, jb->id, "warning", err->message);
        return vit_error_set(err, st,
                             "cannot load an fp32 copy of the backbone for training (%s; the "
                             "server log says why)",
                             vit_status_name(st));
    }
    /* the same model: its weights (the fingerprint) and what config.json and
     * labels.txt decide -- architecture, preprocessing, the head's labels */
    char fp[65];
    bool same = (st = vit_model_fingerprint(*copy, fp, err)) == VIT_OK &&
                strcmp(fp, served->fingerprint) == 0 &&
                vit_config_equal(&(*copy)->cfg, &served->cfg);
    for (int k = 0; same && k < served->cfg.num_classes; k++)
        same = served->labels && (*copy)->labels &&
               strcmp(served->labels[k], (*copy)->labels[k]) == 0;
    if (st == VIT_OK && !same)
        st = vit_error_set(err, VIT_ERR_MISMATCH,
                           "the model checkpoint changed on disk since the server started; "
                           "restart the server to train on it");
    if (st != VIT_OK) {
        vit_model_free(*copy);
        *copy = NULL;
    }
    return st;
}

static void run_job(jobs *j, job *jb, bool resumed)
{
    char *ck = job_path(jb->dir, "checkpoint");
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
                  json_pack("{s:b,s:s}", "from_checkpoint", have_ck, "replica", j->self.owner));
    else /* which replica trains it: its lease's owner id (host/pid/start/random) */
        job_event(j, jb, "started", "training started",
                  json_pack("{s:s}", "replica", j->self.owner));
    job_save(j, jb);
    job_log(j, jb, "running", resumed ? "resumed" : "started");

    /* a manifest's URLs: fetched once per job into <dir>/fetched (job_fetch.h) */
    job_fetch_config fc = {.job_dir = jb->dir, .limits = j->cfg.fetch, .job_cancel = &jb->cancel};
    fc.limits.cancel = &j->stopping;
    job_fetch *fetcher = NULL;
    vit_error ferr = {0};
    if (job_fetch_open(&fc, &fetcher, &ferr) != VIT_OK) {
        job_end(j, jb, JOB_FAILED, "internal", ferr.message, "failed", NULL);
        free(ck);
        return;
    }
    api_finetune_env env = {.datasets_dir = j->datasets_dir, .tasks = j->cfg.tasks,
                            .fetch = job_fetch_get, .fetch_ctx = fetcher};
    ds_dataset *train = NULL, *eval = NULL;
    api_reply rep;
    api_reply_init(&rep);
    char code[48], msg[512];
    if (api_finetune_open(&env, &jb->spec, &train, &eval, &rep) != 0) {
        reply_error(&rep, code, sizeof code, msg, sizeof msg);
        api_reply_free(&rep);
        job_fetch_close(fetcher);
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
    c.epoch_end = on_epoch_end;
    c.on_bad_fn = on_bad_image;
    c.on_bad_ctx = &ctx;
    c.ctx = &ctx;
    jb->last_event = jb->last_save = job_monotonic();
    vit_set_threads(j->cfg.train_threads);
    trainer_result res = {0};
    vit_error err = {0};
    vit_model *copy = NULL;
    vit_status st = training_backbone(j, jb, &copy, &err);
    bool backbone_failed = st != VIT_OK; /* not a resume's failure, even with a checkpoint */
    if (st == VIT_OK)
        st = trainer_run(copy ? copy : j->cfg.model, train, eval, &c, &res, &err);
    vit_model_free(copy);
    ds_close(eval);
    ds_close(train);
    job_fetch_close(fetcher);
    /* a URL fetch abandoned because the job is stopping fails the run (a
     * stopped fetch is never a skipped image): it is a cancel, not a failure */
    if (st != VIT_OK && (atomic_load(&jb->cancel) || atomic_load(&j->stopping))) {
        st = VIT_OK;
        res.cancelled = true;
    }
    pthread_mutex_lock(&j->lock);
    j->train_seconds += res.seconds;
    pthread_mutex_unlock(&j->lock);
    if (st != VIT_OK) {
        /* the client is told paths below the data set and job directories */
        api_finetune_strip_prefix(err.message, j->datasets_real);
        api_finetune_strip_prefix(err.message, jb->dir);
        bool resume =
            have_ck && !backbone_failed && (st == VIT_ERR_MISMATCH || st == VIT_ERR_FORMAT);
        job_end(j, jb, JOB_FAILED, resume ? "resume_failed" : "training_failed", err.message,
                "failed", NULL);
    } else if (atomic_load(&jb->cancel)) { /* asked for while it ran: no task, even a
                                               finished one (the answer said cancelled) */
        job_end(j, jb, JOB_CANCELLED, NULL, "cancelled", "cancelled",
                json_pack("{s:I}", "step", (json_int_t)res.steps));
    } else if (atomic_load(&jb->lease_lost)) { /* taken over: its new holder ends it */
        job_log(j, jb, "warning", "the job's lease was lost: stopped here without writing its "
                "end (whoever holds it now writes it)");
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
        json_t *metrics = json_pack("{s:o,s:o,s:o}", "train_loss", job_json_real(jb->train_loss),
                                    "eval_top1", job_json_real(jb->eval_top1), "eval_top5",
                                    job_json_real(jb->eval_top5));
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

/* The first job a runner may try to claim, in creation order: unfinished,
 * not this process's, not being claimed here, not tried within the last
 * tick; under jobs.lock. */
static job *next_claimable(jobs *j, double now)
{
    for (size_t i = 0; i < j->n; i++) {
        job *jb = j->all[i];
        if (!job_finished(jb->status) && !jb->owned && !jb->claiming && jb->next_claim <= now)
            return jb;
    }
    return NULL;
}


void *jobs_runner(void *arg)
{
    jobs *j = arg;
    pthread_mutex_lock(&j->lock);
    while (!atomic_load(&j->stopping)) {
        job *jb = next_claimable(j, job_monotonic());
        if (!jb) {
            job_wait_tick(j);
            continue;
        }
        jb->claiming = true; /* job_take clears it */
        pthread_mutex_unlock(&j->lock);
        if (job_take(j, jb)) {
            pthread_mutex_lock(&j->lock);
            bool ended = job_finished(jb->status), cancel = atomic_load(&jb->cancel);
            bool resumed = jb->started_at > 0, stop = atomic_load(&j->stopping);
            if (!ended && !cancel && !stop) {
                jb->status = JOB_RUNNING;
                if (!resumed)
                    jb->started_at = (long long)job_wall();
            }
            pthread_mutex_unlock(&j->lock);
            if (!ended && cancel)
                job_end(j, jb, JOB_CANCELLED, NULL,
                        resumed ? "cancelled while it waited to resume"
                                : "cancelled before it started",
                        "cancelled", NULL);
            else if (!ended && !stop)
                run_job(j, jb, resumed);
            job_let_go(j, jb);
        }
        pthread_mutex_lock(&j->lock);
    }
    pthread_mutex_unlock(&j->lock);
    return NULL;
}
