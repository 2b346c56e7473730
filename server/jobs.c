/*
 * jobs.c - fine-tune jobs: the list of jobs, reload at start, start and
 * stop, and the routes (jobs.h; the record and the runner are in
 * job_record.c and job_run.c).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "beneath.h"
#include "jobs_impl.h"

#define LEASE_LOST                                                                          \
    "lost the job's lease (another replica took it over, or its directory was moved or "  \
    "restored): stopping it here; whoever claims it next resumes it"

const char *const jobs_status_names[5] = {"queued", "running", "succeeded", "failed",
                                          "cancelled"};

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

/* ---- what other replicas did: new jobs, their records ---- */

/* Whether a directory that did not read was logged already (with that
 * job.json); remembers it when not.  Under jobs.lock. */
static bool skipped_before(jobs *j, const char *id, const job_stamp *record)
{
    for (size_t i = 0; i < j->nskipped; i++)
        if (strcmp(j->skipped[i].id, id) == 0) {
            bool same = job_stamp_equal(&j->skipped[i].record, record);
            j->skipped[i].record = *record;
            return same;
        }
    if (j->nskipped == j->capskipped) {
        size_t want = j->capskipped ? 2 * j->capskipped : 8;
        job_skipped *grown = realloc(j->skipped, want * sizeof *grown);
        if (!grown)
            return false; /* logged again next time: no harm */
        j->skipped = grown;
        j->capskipped = want;
    }
    snprintf(j->skipped[j->nskipped].id, sizeof j->skipped->id, "%s", id);
    j->skipped[j->nskipped++].record = *record;
    return false;
}

static bool take_now(jobs *j, job *jb);

/* Brings job `id` up to date with its directory: a job not known yet is
 * read and listed (created by another replica, or at the start); a known
 * one that this process does not hold and that has not ended is read again
 * when its job.json changed.  Returns the job (NULL when there is none or it
 * does not read: then logged once when log_skipped) and sets *changed when
 * anything a reader sees changed.  tidy (the sync thread): a job whose
 * holder died after writing its end is claimed, once its lease is stale,
 * to finish it. */
static job *sync_one(jobs *j, const char *id, bool log_skipped, bool tidy, bool *changed)
{
    if (!id || !id_syntax(id))
        return NULL;
    pthread_mutex_lock(&j->lock);
    job *jb = find(j, id);
    bool look = !jb || (!job_finished(jb->status) && !jb->owned && !jb->claiming);
    char *dir = jb ? NULL : job_path(j->jobs_dir, id);
    pthread_mutex_unlock(&j->lock);
    if (!look)
        return jb;
    if (!jb) {
        /* a job is a directory of its own: a symlink there could point the
         * runner (and its clean-up) anywhere */
        struct stat sb;
        bool is_dir = dir && lstat(dir, &sb) == 0 && S_ISDIR(sb.st_mode);
        bool there = dir && (is_dir || errno != ENOENT);
        char *file = is_dir ? job_path(dir, "job.json") : NULL;
        job_stamp stamp = job_stamp_of(file);
        free(file);
        free(dir);
        char why[512];
        job *fresh = is_dir ? job_load(j, id, false, why, sizeof why) : NULL;
        if (!is_dir)
            snprintf(why, sizeof why, "not a directory (or a symlink)");
        if (!fresh) {
            if (there && log_skipped) {
                pthread_mutex_lock(&j->lock);
                bool before = skipped_before(j, id, &stamp);
                pthread_mutex_unlock(&j->lock);
                if (!before && j->cfg.log)
                    j->cfg.log(j->cfg.ctx, id, "skipped", why);
            }
            return NULL;
        }
        pthread_mutex_lock(&j->lock);
        jb = find(j, id); /* another thread may have listed it meanwhile */
        if (!jb && insert(j, fresh)) {
            jb = fresh;
            fresh = NULL;
            *changed = true;
        }
        pthread_mutex_unlock(&j->lock);
        job_free(fresh);
        return jb;
    }
    char *file = job_path(jb->dir, "job.json"), *events = job_path(jb->dir, "events.jsonl");
    job_stamp now = job_stamp_of(file), ev = job_stamp_of(events);
    free(file);
    free(events);
    bool marked = job_cancel_marked(jb);
    pthread_mutex_lock(&j->lock);
    bool reread = !job_stamp_equal(&now, &jb->record);
    if (!job_stamp_equal(&ev, &jb->events_seen)) { /* its streams have news */
        jb->events_seen = ev;
        *changed = true;
    }
    pthread_mutex_unlock(&j->lock);
    char why[512];
    job *fresh = reread ? job_load(j, id, false, why, sizeof why) : NULL;
    bool ending = fresh && job_finished(fresh->status) && job_lease_any(jb->dir);
    if (ending) {
        /* its holder has written the end to job.json but has not let go
         * yet: the final event, the clean-up and the lease files come after
         * (job_run.c, job_end), so the end is shown once they are gone --
         * whoever sees a job ended here finds all of it.  A holder that died
         * in between is finished by whoever claims the lease (the sync
         * thread, once it is stale) */
        job_free(fresh);
        fresh = NULL;
    }
    pthread_mutex_lock(&j->lock);
    if (!jb->owned && !jb->claiming) { /* a claim since the look reads it itself */
        if (fresh) {
            job_adopt(jb, fresh);
            *changed = true;
        }
        if (marked && !job_finished(jb->status) && !atomic_exchange(&jb->cancel, true))
            *changed = true;
    }
    pthread_mutex_unlock(&j->lock);
    job_free(fresh);
    if (ending && tidy && take_now(j, jb)) { /* ended: its let-go removes the leases */
        job_let_go(j, jb);
        *changed = true;
    }
    return jb;
}

/* sync_one for every job directory (and every job listed but not held
 * here); notifies the streams and wakes the runners when anything changed. */
static vit_status sync_all(jobs *j, bool log_skipped, vit_error *err)
{
    DIR *d = opendir(j->jobs_dir);
    if (!d)
        return vit_error_set(err, VIT_ERR_IO, "cannot read %s: %s", j->jobs_dir, strerror(errno));
    bool changed = false;
    struct dirent *e;
    while ((e = readdir(d)))
        if (id_syntax(e->d_name))
            sync_one(j, e->d_name, log_skipped, log_skipped, &changed);
    closedir(d);
    if (changed) {
        pthread_mutex_lock(&j->lock);
        pthread_cond_broadcast(&j->wake);
        pthread_mutex_unlock(&j->lock);
        if (j->cfg.notify)
            j->cfg.notify(j->cfg.ctx);
    }
    return VIT_OK;
}

/* ---- the lease: taking a job, letting it go ---- */

bool job_take(jobs *j, job *jb)
{
    job_lease *l = NULL;
    vit_error err = {0};
    double now = job_monotonic();
    vit_status st = job_lease_claim(jb->dir, &j->self, j->cfg.lease_ms, &jb->watch, now, &l, &err);
    if (st != VIT_OK && st != VIT_ERR_NOT_FOUND) /* gone: nothing to say every few ticks */
        job_log(j, jb, "warning", err.message);
    if (l && job_lease_skipped(l)) {
        char note[128];
        snprintf(note, sizeof note, "lease.%ld in the job's directory is not a regular file "
                 "(put there by hand?); claimed past it", job_lease_skipped(l));
        job_log(j, jb, "warning", note);
    }
    job *fresh = NULL;
    if (l) { /* ours: the record as its last holder left it */
        char why[512];
        fresh = job_load(j, jb->id, true, why, sizeof why);
        if (!fresh) {
            job_log(j, jb, "warning", why);
            job_lease_release(l);
            l = NULL;
        }
    }
    bool marked = l && job_cancel_marked(jb);
    pthread_mutex_lock(&j->lease_lock);
    pthread_mutex_lock(&j->lock);
    jb->claiming = false;
    if (!l) {
        jb->next_claim = now + (st == VIT_OK ? j->tick : 10 * j->tick);
    } else {
        job_adopt(jb, fresh);
        jb->events = fresh->events; /* counted and cut: we append now */
        if (marked && !job_finished(jb->status))
            atomic_store(&jb->cancel, true);
        jb->lease = l;
        jb->owned = true;
        atomic_store(&jb->lease_lost, false);
    }
    pthread_mutex_unlock(&j->lock);
    pthread_mutex_unlock(&j->lease_lock);
    job_free(fresh);
    return l != NULL;
}

void job_let_go(jobs *j, job *jb)
{
    pthread_mutex_lock(&j->lease_lock);
    pthread_mutex_lock(&j->lock);
    job_lease *l = jb->lease;
    jb->lease = NULL;
    jb->owned = false;
    bool ended = job_finished(jb->status);
    jb->record = (job_stamp){0}; /* another's from now on: read it again */
    jb->images_per_second = jb->eta_seconds = NAN;
    pthread_mutex_unlock(&j->lock);
    pthread_mutex_unlock(&j->lease_lock);
    if (atomic_load(&jb->lease_lost)) {
        job_lease_drop(l);
    } else if (ended) { /* job.json says so: what it needed, then the leases, can go */
        /* looked at now, not at the last renew: a holder that stalled past
         * its lease must not remove what its successor works with */
        if (job_lease_held(l))
            job_cleanup(j, jb); /* done already, unless its last holder died ending it */
        job_lease_end(l);
    } else {
        job_lease_release(l);
    }
    pthread_mutex_lock(&j->lock);
    pthread_cond_broadcast(&j->wake); /* released: a runner here may take it */
    pthread_mutex_unlock(&j->lock);
}

bool job_still_held(jobs *j, job *jb)
{
    pthread_mutex_lock(&j->lease_lock);
    bool held = jb->lease && job_lease_held(jb->lease);
    pthread_mutex_unlock(&j->lease_lock);
    if (!held && !atomic_exchange(&jb->lease_lost, true))
        job_log(j, jb, "warning", LEASE_LOST);
    return held;
}

/* Claims jb now (not waiting for a runner) when no thread here is at it;
 * true when this thread holds it. */
static bool take_now(jobs *j, job *jb)
{
    pthread_mutex_lock(&j->lock);
    bool can = !jb->owned && !jb->claiming && !job_finished(jb->status);
    if (can)
        jb->claiming = true;
    pthread_mutex_unlock(&j->lock);
    return can && job_take(j, jb);
}

/* Waits on jobs.wake for up to a tick (a job submitted here wakes it at
 * once; others' jobs and stale leases are found at the next look); under
 * jobs.lock. */
void job_wait_tick(jobs *j)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    double t = (double)until.tv_sec + 1e-9 * (double)until.tv_nsec + j->tick;
    until.tv_sec = (time_t)t;
    until.tv_nsec = (long)((t - (double)until.tv_sec) * 1e9);
    pthread_cond_timedwait(&j->wake, &j->lock, &until);
}

/* ---- the sync thread ---- */

/* Renews the leases this process holds (a lost one stops its job), and
 * notices cancel files others left for them. */
static void renew_all(jobs *j)
{
    pthread_mutex_lock(&j->lease_lock);
    pthread_mutex_lock(&j->lock);
    size_t n = 0;
    for (size_t i = 0; i < j->n; i++)
        n += j->all[i]->lease != NULL;
    job **held = n ? malloc(n * sizeof *held) : NULL;
    n = 0;
    for (size_t i = 0; held && i < j->n; i++)
        if (j->all[i]->lease)
            held[n++] = j->all[i];
    pthread_mutex_unlock(&j->lock);
    size_t nmarked = 0;
    for (size_t i = 0; i < n; i++) {
        job *jb = held[i];
        if (!job_lease_renew(jb->lease)) {
            if (!atomic_exchange(&jb->lease_lost, true))
                job_log(j, jb, "warning", LEASE_LOST);
            continue;
        }
        if (!atomic_load(&jb->cancel) && job_cancel_marked(jb))
            held[nmarked++] = jb; /* seen after the lease is let go of */
    }
    pthread_mutex_unlock(&j->lease_lock);
    for (size_t i = 0; i < nmarked; i++) {
        job *jb = held[i];
        if (!atomic_exchange(&jb->cancel, true)) {
            job_log(j, jb, "cancel", "asked through another replica");
            job_save(j, jb); /* recorded, as a cancel asked here is */
        }
    }
    free(held);
}

static void *jobs_syncer(void *arg)
{
    jobs *j = arg;
    pthread_mutex_lock(&j->lock);
    while (!j->syncer_stop) {
        pthread_mutex_unlock(&j->lock);
        renew_all(j);
        vit_error err = {0};
        if (sync_all(j, true, &err) != VIT_OK && j->cfg.log)
            j->cfg.log(j->cfg.ctx, "-", "warning", err.message);
        pthread_mutex_lock(&j->lock);
        if (j->syncer_stop)
            break;
        job_wait_tick(j);
    }
    pthread_mutex_unlock(&j->lock);
    return NULL;
}

/* ---- open, start, stop ---- */

vit_status jobs_open(const jobs_config *c, jobs **out, vit_error *err)
{
    *out = NULL;
    jobs *j = calloc(1, sizeof *j);
    if (!j)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    j->cfg = *c;
    pthread_mutex_init(&j->lock, NULL);
    pthread_mutex_init(&j->lease_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the timed waits' clock */
    pthread_cond_init(&j->wake, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&j->stopping, false);
    if (j->cfg.lease_ms <= 0)
        j->cfg.lease_ms = 15000;
    j->tick = (double)j->cfg.lease_ms / 4000.0; /* renew 4 times a lease: 3 may be late */
    j->jobs_dir = job_path(c->data_dir, "jobs");
    j->datasets_dir = job_path(c->data_dir, "datasets");
    vit_status st = job_lease_self_init(&j->self, err);
    j->self.local_check = !c->lease_remote_only;
    if (st != VIT_OK)
        ;
    else if (!j->jobs_dir || !j->datasets_dir)
        st = vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    else if (mkdir(j->jobs_dir, 0755) != 0 && errno != EEXIST)
        st = vit_error_set(err, VIT_ERR_IO, "cannot create %s: %s", j->jobs_dir, strerror(errno));
    else if (mkdir(j->datasets_dir, 0755) != 0 && errno != EEXIST)
        st = vit_error_set(err, VIT_ERR_IO, "cannot create %s: %s", j->datasets_dir,
                           strerror(errno));
    if (st == VIT_OK && !(j->datasets_real = realpath(j->datasets_dir, NULL)) &&
        !(j->datasets_real = strdup("")))
        st = vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    if (st == VIT_OK)
        st = sync_all(j, true, err);
    for (size_t i = 0; st == VIT_OK && i < j->n; i++) {
        job *jb = j->all[i];
        if (job_finished(jb->status)) { /* a crash may have left them */
            job_cleanup(j, jb);
            job_lease_remove_all(jb->dir);
        } else if (atomic_load(&jb->cancel) && take_now(j, jb)) {
            /* cancelled, then its server stopped (or died): ended by whoever claims it */
            if (!job_finished(jb->status))
                job_end(j, jb, JOB_CANCELLED, NULL, "cancelled (asked before the restart)",
                        "cancelled", NULL);
            job_let_go(j, jb);
        }
    }
    if (st != VIT_OK) {
        jobs_close(j);
        return st;
    }
    *out = j;
    return VIT_OK;
}

vit_status jobs_start(jobs *j, vit_error *err)
{
    int runners = j->cfg.run_jobs ? j->cfg.max_running : 0;
    j->threads = calloc((size_t)runners + 1, sizeof *j->threads);
    if (!j->threads)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    int rc = pthread_create(&j->syncer, NULL, jobs_syncer, j);
    if (rc != 0)
        return vit_error_set(err, VIT_ERR_IO, "cannot start the job sync thread: %s",
                             strerror(rc));
    j->syncer_started = true;
    for (int i = 0; i < runners; i++) {
        rc = pthread_create(&j->threads[i], NULL, jobs_runner, j);
        if (rc != 0) {
            jobs_stop(j);
            return vit_error_set(err, VIT_ERR_IO, "cannot start a job runner: %s",
                                  strerror(rc));
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
    /* the sync thread last: it renews the leases until the runners let go */
    pthread_mutex_lock(&j->lock);
    j->syncer_stop = true;
    pthread_cond_broadcast(&j->wake);
    pthread_mutex_unlock(&j->lock);
    if (j->syncer_started)
        pthread_join(j->syncer, NULL);
    j->syncer_started = false;
}

void jobs_close(jobs *j)
{
    if (!j)
        return;
    jobs_stop(j);
    for (size_t i = 0; i < j->n; i++) {
        job_lease_release(j->all[i]->lease); /* none by now; released if there were */
        job_free(j->all[i]);
    }
    free(j->all);
    free(j->threads);
    free(j->skipped);
    free(j->jobs_dir);
    free(j->datasets_dir);
    free(j->datasets_real);
    pthread_cond_destroy(&j->wake);
    pthread_mutex_destroy(&j->lease_lock);
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
    long long ms = (long long)(job_wall() * 1e3);
    if (ms <= j->last_id_ms)
        ms = j->last_id_ms + 1;
    j->last_id_ms = ms;
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd)
        rnd = (uint32_t)(job_monotonic() * 1e9);
    snprintf(id, JOB_ID_LEN + 1, "ftjob-%011llx%05x", ms & 0xFFFFFFFFFFFll, rnd & 0xFFFFF);
}

/* jobs_submit's refusals; under jobs.lock.  0, or -1 with r filled. */
static int admissible(jobs *j, const api_finetune_spec *spec, api_reply *r)
{
    long queued = 0;
    for (size_t i = 0; i < j->n; i++) {
        const job *o = j->all[i];
        if (o->status == JOB_QUEUED && !atomic_load(&o->cancel))
            queued++;
        if (!job_finished(o->status) && !atomic_load(&o->cancel) &&
            strcmp(o->spec.task, spec->task) == 0)
            return api_error_field(r, 409, "task_in_progress", "task",
                                   "job %s already trains task '%s'", o->id, spec->task);
    }
    if (queued >= j->cfg.max_queued) {
        api_error(r, 429, "queue_full", "%ld fine-tune jobs are queued (max_queued_jobs); "
                  "retry later", queued);
        r->retry_after_s = 30;
        return -1;
    }
    return 0;
}

int jobs_admissible(jobs *j, const api_finetune_spec *spec, api_reply *r)
{
    vit_error err = {0};
    sync_all(j, false, &err); /* the jobs other replicas took: the queue is shared */
    pthread_mutex_lock(&j->lock);
    int rc = admissible(j, spec, r);
    pthread_mutex_unlock(&j->lock);
    return rc;
}

int jobs_submit(jobs *j, const api_finetune_spec *spec, api_reply *r)
{
    pthread_mutex_lock(&j->lock);
    if (admissible(j, spec, r) != 0) {
        pthread_mutex_unlock(&j->lock);
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
    jb->created_at = (long long)job_wall();
    /* its files (and first event) before anyone can see it: they are
     * written in .new-<id> and that directory is renamed to <id> whole, so
     * a listed job always has them -- here and on every replica sharing
     * jobs/ -- and a runner can take it the moment it is listed */
    char tmp_name[JOB_ID_LEN + 8];
    snprintf(tmp_name, sizeof tmp_name, ".new-%s", id);
    char *final_dir = jb->dir, *tmp_dir = job_path(j->jobs_dir, tmp_name);
    jb->dir = tmp_dir; /* job_write and the event write there */
    int rc = -1;
    bool renamed = false;
    if (!tmp_dir)
        api_error(r, 500, "out_of_memory", "out of memory");
    else if (mkdir(tmp_dir, 0755) != 0)
        api_error(r, 500, "io_error", "cannot create the job's directory: %s", strerror(errno));
    else if (job_write(jb, job_json(jb)) != 0)
        api_error(r, 500, "io_error", "cannot write the job's job.json");
    else if (job_event_append_locked(j, jb, "created", "job created", NULL), jb->events != 1)
        api_error(r, 500, "io_error", "cannot write the job's events.jsonl");
    else if (!(renamed = rename(tmp_dir, final_dir) == 0))
        api_error(r, 500, "io_error", "cannot move the job's directory into place: %s",
                  strerror(errno));
    else if ((jb->dir = final_dir), !insert(j, jb))
        api_error(r, 500, "out_of_memory", "out of memory");
    else { /* listed: from here on it runs, whatever the reply */
        char *file = job_path(final_dir, "job.json");
        jb->record = job_stamp_of(file);
        free(file);
        free(tmp_dir);
        tmp_dir = NULL;
        rc = 0;
        if (api_json(r, 201, job_json(jb)) == 0)
            snprintf(r->location, sizeof r->location, "/v1/finetune/%s", jb->id);
    }
    if (rc != 0) {
        char *dir = renamed ? final_dir : tmp_dir;
        if (dir) {
            static const char *const files[] = {"job.json", "events.jsonl"};
            for (size_t i = 0; i < 2; i++) {
                char *f = job_path(dir, files[i]);
                if (f)
                    unlink(f);
                free(f);
            }
            rmdir(dir);
        }
        jb->dir = final_dir;
        free(tmp_dir);
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
    bool changed = false;
    job *jb = sync_one(j, id, false, false, &changed); /* the record on disk, unless it is ours */
    pthread_mutex_lock(&j->lock);
    json_t *o = jb ? job_json(jb) : NULL;
    pthread_mutex_unlock(&j->lock);
    return jb ? api_json(r, 200, o) : not_found(r, id);
}

bool jobs_exists(jobs *j, const char *id)
{
    bool changed = false;
    return sync_one(j, id, false, false, &changed) != NULL;
}

int jobs_cancel(jobs *j, const char *id, api_reply *r)
{
    bool changed = false;
    job *jb = sync_one(j, id, false, false, &changed);
    if (!jb)
        return not_found(r, id);
    pthread_mutex_lock(&j->lock);
    if (job_finished(jb->status)) {
        const char *status = jobs_status_names[jb->status];
        pthread_mutex_unlock(&j->lock);
        return api_error(r, 409, "job_finished", "job %s has %s already", id, status);
    }
    if (jb->owned) {
        /* running here: the runner stops it between two steps and ends it
         * (a second cancel finds the flag set and leaves it to the first) */
        bool first = !atomic_exchange(&jb->cancel, true);
        pthread_mutex_unlock(&j->lock);
        if (first) /* recorded, so a restart before the runner stops does not revive it */
            job_save(j, jb);
        return jobs_get(j, id, r);
    }
    pthread_mutex_unlock(&j->lock);
    if (take_now(j, jb)) { /* no one runs it: this call ends it */
        pthread_mutex_lock(&j->lock);
        int status = jb->status;
        bool started = jb->started_at > 0;
        pthread_mutex_unlock(&j->lock);
        if (job_finished(status)) { /* it ended meanwhile */
            job_let_go(j, jb);
            return api_error(r, 409, "job_finished", "job %s has %s already", id,
                             jobs_status_names[status]);
        }
        job_end(j, jb, JOB_CANCELLED, NULL,
                started ? "cancelled while it waited to resume" : "cancelled before it started",
                "cancelled", NULL);
        job_let_go(j, jb);
        return jobs_get(j, id, r);
    }
    /* another replica runs it (or a thread here is taking it): its holder
     * sees the cancel file at its next renew, or when it takes the job */
    if (job_cancel_mark(jb) != 0)
        return api_error(r, 500, "io_error", "cannot write the job's cancel request");
    pthread_mutex_lock(&j->lock);
    atomic_store(&jb->cancel, true);
    json_t *o = job_json(jb);
    pthread_mutex_unlock(&j->lock);
    return api_json(r, 200, o);
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
    vit_error err = {0};
    sync_all(j, false, &err); /* every replica lists every job */
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
static char *read_events(jobs *j, const char *id, uint64_t *offset, size_t *len, bool *ended,
                         vit_error *err)
{
    pthread_mutex_lock(&j->lock);
    job *jb = find(j, id);
    char *path = jb ? job_path(jb->dir, "events.jsonl") : NULL;
    if (ended)
        *ended = jb && job_finished(jb->status);
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
    if (fd >= 0 && fstat(fd, &sb) == 0 && (uint64_t)sb.st_size < *offset)
        *offset = 0; /* not the file the offset was taken in (cut at a reload) */
    if (fd < 0 || fstat(fd, &sb) != 0 || lseek(fd, (off_t)*offset, SEEK_SET) < 0)
        vit_error_set(err, VIT_ERR_IO, "cannot read the job's events: %s", strerror(errno));
    else if (beneath_read_capped(fd, (size_t)sb.st_size - (size_t)*offset, EVENTS_FILE_MAX,
                                 "events.jsonl", &text, len, err) == VIT_OK) {
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

/* Calls fn on each complete line of text after `after` (event id = line
 * number; text begins after line `first`); stops when fn returns false.
 * Returns the bytes of the lines gone through (*lines of them). */
static size_t each_event(char *text, size_t len, long first, long after, long *lines,
                         bool (*fn)(void *ctx, long id, const char *line, size_t n), void *ctx)
{
    long id = first;
    size_t at = 0;
    while (at < len) {
        char *nl = memchr(text + at, '\n', len - at);
        if (!nl)
            break; /* a line being written */
        if (id + 1 > after && !fn(ctx, id + 1, text + at, (size_t)(nl - (text + at))))
            break;
        id++;
        at = (size_t)(nl - text) + 1;
    }
    *lines = id;
    return at;
}

/* A page of events: the lines of events.jsonl as they are (so the page,
 * the file and the stream carry the same bytes), joined into a JSON array. */
typedef struct list_ctx {
    char *out;                 /* room for every line and the frame around them */
    size_t len;
    long count, max;
    bool more;
} list_ctx;

static bool list_event(void *ctx, long id, const char *line, size_t n)
{
    (void)id;
    list_ctx *c = ctx;
    if (c->count == c->max) {
        c->more = true;
        return false;
    }
    json_t *e = json_loadb(line, n, 0, NULL); /* a damaged line is left out */
    bool ok = json_is_object(e);
    json_decref(e);
    if (!ok)
        return true;
    if (c->count++ > 0)
        c->out[c->len++] = ',';
    memcpy(c->out + c->len, line, n);
    c->len += n;
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
    bool changed = false;
    sync_one(j, id, false, false, &changed); /* a job another replica created just now */
    vit_error err = {0};
    size_t len;
    uint64_t offset = 0;
    long lines;
    char *text = read_events(j, id, &offset, &len, NULL, &err);
    if (!text)
        return err.code == VIT_ERR_NOT_FOUND ? not_found(r, id) : api_engine_error(r, &err);
    static const char head[] = "{\"object\":\"list\",\"data\":[";
    /* the lines, a comma for each newline, the frame: within len + 64 */
    list_ctx c = {.out = malloc(len + 64), .max = max};
    if (!c.out) {
        free(text);
        return api_error(r, 500, "out_of_memory", "out of memory");
    }
    memcpy(c.out, head, sizeof head - 1);
    c.len = sizeof head - 1;
    each_event(text, len, 0, from, &lines, list_event, &c);
    free(text);
    c.len += (size_t)snprintf(c.out + c.len, 32, "],\"has_more\":%s}", c.more ? "true" : "false");
    api_reply_free(r);
    r->status = 200;
    r->content_type = API_JSON_TYPE;
    r->body = c.out;
    r->body_len = c.len;
    return 0;
}

typedef struct frame_ctx {
    char *buf;
    size_t len, cap;
    long last;
    bool oom;
} frame_ctx;

/* An event type as the server writes them: [a-z_]{1,31}.  Anything else (a
 * damaged or tampered file) is framed as "event": a type is copied into the
 * stream's header lines, where a newline would start a field of its own. */
static bool type_ok(const char *t)
{
    size_t n = t ? strspn(t, "abcdefghijklmnopqrstuvwxyz_") : 0;
    return n > 0 && n < 32 && t[n] == '\0';
}

static bool frame_event(void *ctx, long id, const char *line, size_t n)
{
    frame_ctx *c = ctx;
    json_t *e = json_loadb(line, n, 0, NULL);
    const char *type = json_string_value(json_object_get(e, "type"));
    if (!type_ok(type))
        type = "event";
    char head[96];
    int h = snprintf(head, sizeof head, "id: %ld\nevent: %s\ndata: ", id, type);
    VIT_ASSERT(h > 0 && (size_t)h < sizeof head); /* 20 digits and 31 letters at most */
    json_decref(e);
    if (!e) /* a damaged line: not framed as data, which must be JSON */
        return true;
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

vit_status jobs_event_frames(jobs *j, const char *id, jobs_cursor *cur, char **buf, size_t *len,
                             bool *ended, vit_error *err)
{
    *buf = NULL;
    *len = 0;
    *ended = false;
    size_t n;
    bool job_finished;
    uint64_t offset = cur->offset;
    char *text = read_events(j, id, &offset, &n, &job_finished, err);
    if (!text)
        return err->code;
    long first = offset == cur->offset ? cur->lines : 0; /* 0: read from the start again */
    frame_ctx c = {0};
    c.last = cur->after;
    long lines;
    size_t used = each_event(text, n, first, cur->after, &lines, frame_event, &c);
    free(text);
    if (!c.oom) { /* the next look starts where this one stopped */
        cur->offset = offset + used;
        cur->lines = lines;
        cur->after = c.last;
    }
    if (c.oom) {
        free(c.buf);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    }
    *buf = c.buf;
    *len = c.len;
    /* a job's final event is written before its status turns final, and the
     * status was read before the file: every event it will have is framed
     * (even when a crash or a full disk lost the final one) */
    *ended = job_finished;
    return VIT_OK;
}

void jobs_stats_get(jobs *j, jobs_stats *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&j->lock);
    for (size_t i = 0; i < j->n; i++) {
        const job *jb = j->all[i];
        out->by_status[jb->status]++;
        if (jb->owned && jb->status == JOB_RUNNING && isfinite(jb->images_per_second))
            out->images_per_second += jb->images_per_second;
    }
    memcpy(out->finished_total, j->finished_total, sizeof out->finished_total);
    out->train_seconds = j->train_seconds;
    pthread_mutex_unlock(&j->lock);
}
