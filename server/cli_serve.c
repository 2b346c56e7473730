/*
 * cli_serve.c - `vitfit serve`: the HTTP service.
 *
 * Start-up order: config (errors name the key, exit 2) -> HTTP listening
 * (/healthz answers, the rest 503 "not_ready") -> model loaded and packed,
 * fingerprinted -> task store opened -> workers started -> ready, and one
 * line on stdout: "vitfit: listening on http://HOST:PORT".  Then the main
 * thread waits for SIGTERM or SIGINT; every other thread has them blocked.
 *
 * Shutdown: stop accepting, answer new requests on open connections 503,
 * let what was admitted finish until drain_timeout_ms, answer what is still
 * queued 503, join everything, exit 0.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cli.h"
#include "cpu.h"
#include "http.h"
#include "pipeline.h"
#include "srv.h"

extern char **environ;

/* One structured line on stderr (the request log's format). */
static void log_event(const srv *s, const char *msg, const char *detail)
{
    if (s->cfg.log_format == CFG_LOG_TEXT) {
        fprintf(stderr, "vitfit: %s%s%s\n", msg, detail ? ": " : "", detail ? detail : "");
        return;
    }
    json_t *j = json_pack("{s:s,s:o*}", "msg", msg, "detail", detail ? api_json_text(detail) : NULL);
    char *line = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (line)
        fprintf(stderr, "%s\n", line);
    free(line);
    json_decref(j);
}

static bool host_is_loopback(const char *host)
{
    return strcmp(host, "localhost") == 0 || strncmp(host, "127.", 4) == 0 ||
           strcmp(host, "::1") == 0;
}

/* Threads per worker as configured, or the usable CPUs shared out. */
static int worker_threads(const vit_cfg *c)
{
    if (c->threads_per_worker > 0)
        return c->threads_per_worker;
    int t = (int)cli_default_threads() / c->workers;
    return t < 1 ? 1 : t;
}

/* Model, task store, pipeline: everything `ready` waits for. */
static vit_status load(srv *s, vit_error *err)
{
    vit_status st = vit_model_load(s->cfg.model, &s->model, err);
    if (st != VIT_OK)
        return vit_error_prefix(err, "model %s", s->cfg.model);
    if ((st = vit_model_pack(s->model, err)) != VIT_OK ||
        (st = vit_model_fingerprint(s->model, s->fingerprint, err)) != VIT_OK)
        return st;
    if (mkdir(s->cfg.data_dir, 0755) != 0 && errno != EEXIST)
        return vit_error_set(err, VIT_ERR_IO, "data_dir %s: %s", s->cfg.data_dir, strerror(errno));
    char dir[sizeof s->cfg.data_dir + 8];
    snprintf(dir, sizeof dir, "%s/tasks", s->cfg.data_dir);
    st = task_store_open(s->model, s->fingerprint, dir, (size_t)s->cfg.task_memory_mb << 20,
                         &s->tasks, err);
    if (st != VIT_OK)
        return st;
    return srv_pipeline_start(s, &s->pipe, err);
}

static void teardown(srv *s)
{
    if (s->pipe) {
        srv_pipeline_stop(s->pipe);
    }
    srv_http_stop(s->http);
    srv_pipeline_free(s->pipe);
    task_store_close(s->tasks);
    vit_model_free(s->model);
    api_metrics_free(s->metrics);
    curl_global_cleanup();
}

int cli_serve(int argc, char **argv)
{
    static srv s; /* one per process; static keeps its ~10 KB of config off the stack */
    char msg[512];
    int rc = cfg_load(&s.cfg, argc - 1, argv + 1, environ, msg, sizeof msg);
    if (rc == CFG_HELP) {
        cfg_print_help(stdout);
        return CLI_OK;
    }
    if (rc != CFG_OK) {
        fprintf(stderr, "vitfit serve: %s (see 'vitfit serve --help')\n", msg);
        return CLI_USAGE;
    }
    int threads = worker_threads(&s.cfg);
    long usable = cli_default_threads();
    if ((long)s.cfg.workers * threads > usable && !s.cfg.oversubscribe) {
        fprintf(stderr,
                "vitfit serve: workers x threads_per_worker = %d x %d is more than the %ld usable "
                "CPUs (set oversubscribe to allow it)\n",
                s.cfg.workers, threads, usable);
        return CLI_USAGE;
    }

    /* Signals are taken by sigwait in this thread only: block them before
     * any thread starts, so every thread inherits the mask. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "vitfit: cannot initialise libcurl\n");
        return CLI_FAIL;
    }
    s.metrics = api_metrics_create(s.cfg.workers);
    vit_error err = {0};
    int port = 0;
    if (!s.metrics) {
        vit_error_set(&err, VIT_ERR_NOMEM, "out of memory");
        teardown(&s);
        return cli_fail(&err);
    }
    if (srv_http_start(&s, &s.http, &port, &err) != VIT_OK) {
        teardown(&s);
        return cli_fail(&err);
    }
    if (!host_is_loopback(s.cfg.host) && !s.cfg.api_key[0])
        log_event(&s, "warning",
                  "listening beyond loopback without an api_key: anyone who can reach the port "
                  "can classify, upload and delete tasks");
    if (load(&s, &err) != VIT_OK) {
        log_event(&s, "start failed", err.message);
        teardown(&s);
        return cli_fail(&err);
    }
    atomic_store(&s.ready, true);
    bool v6 = strchr(s.cfg.host, ':') != NULL;
    char where[300];
    snprintf(where, sizeof where, "http://%s%s%s:%d", v6 ? "[" : "", s.cfg.host, v6 ? "]" : "",
             port);
    log_event(&s, "ready", where);
    printf("vitfit: listening on %s\n", where);
    fflush(stdout);

    int sig = 0;
    while (sigwait(&stop_signals, &sig) != 0)
        ;
    log_event(&s, "draining", sig == SIGINT ? "SIGINT" : "SIGTERM");
    atomic_store(&s.draining, true);
    srv_http_quiesce(s.http);
    double deadline = srv_now() + s.cfg.drain_timeout_ms * 1e-3;
    while (srv_http_active(s.http) > 0 && srv_now() < deadline) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    srv_pipeline_stop(s.pipe);
    /* the last replies are queued on their connections: give them a moment */
    for (int i = 0; i < 50 && srv_http_active(s.http) > 0; i++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    struct timespec grace = {0, 100 * 1000000L};
    nanosleep(&grace, NULL);
    log_event(&s, "stopped", NULL);
    teardown(&s);
    return CLI_OK;
}
