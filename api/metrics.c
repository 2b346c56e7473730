/*
 * metrics.c - counters and histograms for GET /metrics (metrics.h).
 *
 * Series are kept in small arrays searched linearly: a dozen routes, a few
 * reasons, at most API_METRICS_MAX_TASKS task names.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include "metrics.h"

#define LABEL_MAX 72

static const double latency_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                         0.25,  0.5,    1,     2.5,  5,     10,   30};
#define NLAT (sizeof latency_buckets / sizeof latency_buckets[0])
static const double batch_buckets[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
#define NBATCH (sizeof batch_buckets / sizeof batch_buckets[0])

/* A counter keyed by one or two label values. */
typedef struct series {
    char a[LABEL_MAX];
    char b[16];
    uint64_t count;
} series;

typedef struct family {
    series *v;
    size_t n, cap, max;
} family;

/* A histogram per route. */
typedef struct histogram {
    char label[LABEL_MAX];
    uint64_t buckets[NLAT];
    uint64_t count;
    double sum;
} histogram;

struct api_metrics {
    pthread_mutex_t mu;
    family requests;      /* route, status */
    family images;        /* task */
    family rejected;      /* reason */
    family fetches;       /* outcome */
    histogram *latency;   /* per route */
    size_t nlatency, caplatency;
    uint64_t batch_buckets[NBATCH];
    uint64_t batch_count, batch_rows;
    uint64_t batches;
    double *busy;         /* seconds per worker */
    int workers;
};

api_metrics *api_metrics_create(int workers)
{
    api_metrics *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->busy = calloc((size_t)(workers > 0 ? workers : 1), sizeof *m->busy);
    if (!m->busy) {
        free(m);
        return NULL;
    }
    m->workers = workers;
    m->requests.max = 1024;
    m->images.max = API_METRICS_MAX_TASKS;
    m->rejected.max = 64;
    m->fetches.max = 64;
    pthread_mutex_init(&m->mu, NULL);
    return m;
}

void api_metrics_free(api_metrics *m)
{
    if (!m)
        return;
    free(m->requests.v);
    free(m->images.v);
    free(m->rejected.v);
    free(m->fetches.v);
    free(m->latency);
    free(m->busy);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* Adds n to the series (a, b), creating it while the family has room; past
 * its cap new label sets count under a = "_other". */
static void family_add(family *f, const char *a, const char *b, uint64_t n)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->v[i].a, a) == 0 && strcmp(f->v[i].b, b) == 0) {
            f->v[i].count += n;
            return;
        }
    if (f->n >= f->max && strcmp(a, "_other") != 0) {
        family_add(f, "_other", b, n);
        return;
    }
    if (f->n == f->cap) {
        size_t want = f->cap ? 2 * f->cap : 16;
        series *grown = realloc(f->v, want * sizeof *grown);
        if (!grown)
            return; /* a lost count, not a failed request */
        f->v = grown;
        f->cap = want;
    }
    series *s = f->v + f->n++;
    memset(s, 0, sizeof *s);
    memcpy(s->a, a, strnlen(a, sizeof s->a - 1));
    memcpy(s->b, b, strnlen(b, sizeof s->b - 1));
    s->count = n;
}

void api_metrics_request(api_metrics *m, const char *route, int status, double seconds)
{
    char code[16];
    snprintf(code, sizeof code, "%d", status);
    pthread_mutex_lock(&m->mu);
    family_add(&m->requests, route, code, 1);
    histogram *h = NULL;
    for (size_t i = 0; i < m->nlatency && !h; i++)
        if (strcmp(m->latency[i].label, route) == 0)
            h = &m->latency[i];
    if (!h && m->nlatency < 64) {
        if (m->nlatency == m->caplatency) {
            size_t want = m->caplatency ? 2 * m->caplatency : 8;
            histogram *grown = realloc(m->latency, want * sizeof *grown);
            if (grown) {
                m->latency = grown;
                m->caplatency = want;
            }
        }
        if (m->latency && m->nlatency < m->caplatency) {
            h = m->latency + m->nlatency++;
            memset(h, 0, sizeof *h);
            size_t n = strnlen(route, sizeof h->label - 1);
            memcpy(h->label, route, n); /* memset left the terminator */
        }
    }
    if (h) {
        for (size_t i = 0; i < NLAT; i++)
            if (seconds <= latency_buckets[i])
                h->buckets[i]++;
        h->count++;
        h->sum += seconds;
    }
    pthread_mutex_unlock(&m->mu);
}

void api_metrics_batch(api_metrics *m, int worker, int rows, double seconds)
{
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < NBATCH; i++)
        if (rows <= batch_buckets[i])
            m->batch_buckets[i]++;
    m->batch_count++;
    m->batch_rows += (uint64_t)rows;
    if (worker >= 0 && worker < m->workers)
        m->busy[worker] += seconds;
    pthread_mutex_unlock(&m->mu);
}

void api_metrics_images(api_metrics *m, const char *task, int n)
{
    pthread_mutex_lock(&m->mu);
    family_add(&m->images, task ? task : "", "", (uint64_t)n);
    pthread_mutex_unlock(&m->mu);
}

void api_metrics_rejected(api_metrics *m, const char *reason)
{
    pthread_mutex_lock(&m->mu);
    family_add(&m->rejected, reason, "", 1);
    pthread_mutex_unlock(&m->mu);
}

void api_metrics_fetch(api_metrics *m, const char *outcome)
{
    pthread_mutex_lock(&m->mu);
    family_add(&m->fetches, outcome, "", 1);
    pthread_mutex_unlock(&m->mu);
}

/* ---- rendering ---- */

typedef struct text {
    char *buf;
    size_t len, cap;
    bool failed;
} text;

static void put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text *t, const char *fmt, ...)
{
    if (t->failed)
        return;
    if (!t->buf) { /* a first buffer: vsnprintf into NULL + 0 is undefined */
        t->cap = 16384;
        if (!(t->buf = malloc(t->cap))) {
            t->failed = true;
            return;
        }
    }
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = true;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t want = 2 * t->cap + (size_t)n + 1;
        char *grown = realloc(t->buf, want);
        if (!grown) {
            t->failed = true;
            return;
        }
        t->buf = grown;
        t->cap = want;
    }
}

static void header(text *t, const char *name, const char *type, const char *help)
{
    put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Label values are fixed strings, task names ([a-z0-9._-]) and numbers;
 * anything else is escaped as the format asks. */
static const char *escaped(const char *s, char *buf, size_t n)
{
    size_t o = 0;
    for (; *s && o + 3 < n; s++) {
        if (*s == '\\' || *s == '"') {
            buf[o++] = '\\';
            buf[o++] = *s;
        } else if (*s == '\n') {
            buf[o++] = '\\';
            buf[o++] = 'n';
        } else {
            buf[o++] = *s;
        }
    }
    buf[o] = '\0';
    return buf;
}

static void counter_family(text *t, const family *f, const char *name, const char *help,
                           const char *label_a, const char *label_b)
{
    char ea[2 * LABEL_MAX + 1];
    header(t, name, "counter", help);
    for (size_t i = 0; i < f->n; i++) {
        if (label_b)
            put(t, "%s{%s=\"%s\",%s=\"%s\"} %llu\n", name, label_a,
                escaped(f->v[i].a, ea, sizeof ea), label_b, f->v[i].b,
                (unsigned long long)f->v[i].count);
        else
            put(t, "%s{%s=\"%s\"} %llu\n", name, label_a, escaped(f->v[i].a, ea, sizeof ea),
                (unsigned long long)f->v[i].count);
    }
}

int api_metrics_reply(api_metrics *m, const api_metrics_gauges *g, api_reply *r)
{
    text t = {0};
    char ea[2 * LABEL_MAX + 1];
    pthread_mutex_lock(&m->mu);
    counter_family(&t, &m->requests, "vitfit_http_requests_total",
                   "HTTP requests answered, by route and status.", "route", "status");
    header(&t, "vitfit_http_request_duration_seconds", "histogram",
           "Time from the first header to the completed reply, by route.");
    for (size_t i = 0; i < m->nlatency; i++) {
        const histogram *h = &m->latency[i];
        escaped(h->label, ea, sizeof ea);
        for (size_t b = 0; b < NLAT; b++)
            put(&t, "vitfit_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
                ea, latency_buckets[b], (unsigned long long)h->buckets[b]);
        put(&t, "vitfit_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n", ea,
            (unsigned long long)h->count);
        put(&t, "vitfit_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n", ea, h->sum);
        put(&t, "vitfit_http_request_duration_seconds_count{route=\"%s\"} %llu\n", ea,
            (unsigned long long)h->count);
    }
    header(&t, "vitfit_batch_size", "histogram", "Rows per forward pass.");
    for (size_t b = 0; b < NBATCH; b++)
        put(&t, "vitfit_batch_size_bucket{le=\"%g\"} %llu\n", batch_buckets[b],
            (unsigned long long)m->batch_buckets[b]);
    put(&t, "vitfit_batch_size_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)m->batch_count);
    put(&t, "vitfit_batch_size_sum %llu\n", (unsigned long long)m->batch_rows);
    put(&t, "vitfit_batch_size_count %llu\n", (unsigned long long)m->batch_count);
    counter_family(&t, &m->images, "vitfit_images_total",
                   "Images classified, by task (\"\": the backbone's own head).", "task", NULL);
    counter_family(&t, &m->rejected, "vitfit_rejected_total",
                   "Requests refused or dropped for load, by reason.", "reason", NULL);
    counter_family(&t, &m->fetches, "vitfit_url_fetches_total", "Image URLs fetched, by outcome.",
                   "outcome", NULL);
    header(&t, "vitfit_worker_busy_seconds_total", "counter",
           "Seconds each worker spent in forward passes.");
    for (int w = 0; w < m->workers; w++)
        put(&t, "vitfit_worker_busy_seconds_total{worker=\"%d\"} %.6f\n", w, m->busy[w]);
    pthread_mutex_unlock(&m->mu);

    header(&t, "vitfit_queue_depth", "gauge", "Rows waiting for a worker.");
    put(&t, "vitfit_queue_depth %d\n", g->queue_depth);
    header(&t, "vitfit_active_requests", "gauge", "Requests in the pipeline, not yet answered.");
    put(&t, "vitfit_active_requests %d\n", g->active_requests);
    header(&t, "vitfit_requests_preparing", "gauge",
           "Classify requests being parsed and decoded (workers may wait for their rows).");
    put(&t, "vitfit_requests_preparing %d\n", g->preparing);
    header(&t, "vitfit_ready", "gauge", "1 once the model is loaded and the workers run.");
    put(&t, "vitfit_ready %d\n", g->ready ? 1 : 0);
    header(&t, "vitfit_task_loads_total", "counter", "Task files loaded into memory.");
    put(&t, "vitfit_task_loads_total %llu\n", (unsigned long long)g->tasks.loads);
    header(&t, "vitfit_task_evictions_total", "counter",
           "Idle tasks dropped from memory to stay within task_memory_mb.");
    put(&t, "vitfit_task_evictions_total %llu\n", (unsigned long long)g->tasks.evictions);
    header(&t, "vitfit_task_load_failures_total", "counter", "Task files that failed to load.");
    put(&t, "vitfit_task_load_failures_total %llu\n", (unsigned long long)g->tasks.load_failures);
    header(&t, "vitfit_task_resident_bytes", "gauge", "Bytes of the tasks held in memory.");
    put(&t, "vitfit_task_resident_bytes %zu\n", g->tasks.resident_bytes);
    header(&t, "vitfit_tasks_resident", "gauge", "Tasks held in memory.");
    put(&t, "vitfit_tasks_resident %zu\n", g->tasks.resident_count);
    static const char *const job_status[5] = {"queued", "running", "succeeded", "failed",
                                              "cancelled"};
    header(&t, "vitfit_finetune_jobs", "gauge",
           "Fine-tune jobs in data_dir/jobs (every replica sharing it counts them all), by "
           "status.");
    for (int i = 0; i < 5; i++)
        put(&t, "vitfit_finetune_jobs{status=\"%s\"} %ld\n", job_status[i], g->jobs[i]);
    header(&t, "vitfit_finetune_jobs_finished_total", "counter",
           "Fine-tune jobs this replica ended since its start, by final status.");
    for (int i = 2; i < 5; i++)
        put(&t, "vitfit_finetune_jobs_finished_total{status=\"%s\"} %ld\n", job_status[i],
            g->jobs_finished_total[i]);
    header(&t, "vitfit_finetune_images_per_second", "gauge",
           "Training throughput of the fine-tune jobs this replica runs, summed.");
    put(&t, "vitfit_finetune_images_per_second %.3f\n", g->train_images_per_second);
    header(&t, "vitfit_finetune_job_seconds_total", "counter",
           "Seconds fine-tune jobs have trained since start.");
    put(&t, "vitfit_finetune_job_seconds_total %.3f\n", g->train_seconds_total);
    header(&t, "vitfit_event_streams", "gauge", "Open fine-tune event streams.");
    put(&t, "vitfit_event_streams %d\n", g->event_streams);

    if (t.failed) {
        free(t.buf);
        return api_error(r, 500, "out_of_memory", "out of memory rendering the metrics");
    }
    free(r->body);
    r->status = 200;
    r->content_type = "text/plain; version=0.0.4; charset=utf-8";
    r->body = t.buf;
    r->body_len = t.len;
    return 0;
}
