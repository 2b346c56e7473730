/*
 * cli_serve.c - `vitfit serve`: the HTTP service.
 *
 * Start-up order: config (errors name the key, exit 2) -> HTTP listening
 * (/healthz answers, the rest 503 "not_ready") -> model loaded and packed,
 * fingerprinted -> task store opened and watched -> workers started -> ready, and one
 * line on stdout: "vitfit: listening on http://HOST:PORT".  Then the main
 * thread waits for SIGTERM or SIGINT.
 *
 * Shutdown: stop accepting, answer new requests on open connections 503,
 * let what was admitted finish until drain_timeout_ms, answer what is still
 * queued 503, join everything, exit 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
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
#include "jobs.h"
#include "pipeline.h"
#include "srv.h"
#include "sse.h"
#include "task_watch.h"

extern char **environ;

/* The write end of the pipe the stop signals write to: a signal handler can
 * reach nothing else, so this one process-wide descriptor is the exception
 * to "no globals".  Why a handler, not sigwait with the signals blocked:
 * threads that libraries start before main (OpenBLAS's) have them unblocked,
 * and a SIGTERM the kernel hands to one of those would kill the process
 * instead of draining it. */
static int stop_fd = -1;

static void on_stop_signal(int sig)
{
    unsigned char b = (unsigned char)sig;
    ssize_t n = write(stop_fd, &b, 1); /* async-signal-safe; a full pipe already says stop */
    (void)n;
}

/* Routes SIGTERM and SIGINT to on_stop_signal; returns the read end of the
 * pipe, or -1. */
static int catch_stop_signals(void)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    for (int i = 0; i < 2; i++) /* the handler must never block on a full pipe */
        if (fcntl(fds[i], F_SETFL, O_NONBLOCK) != 0 || fcntl(fds[i], F_SETFD, FD_CLOEXEC) != 0) {
            close(fds[0]);
            close(fds[1]);
            return -1;
        }
    stop_fd = fds[1];
    struct sigaction sa = {.sa_handler = on_stop_signal, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0) {
        close(fds[0]);
        close(fds[1]);
        stop_fd = -1;
        return -1;
    }
    return fds[0];
}

/* A stop signal that has arrived already, or 0 (does not block). */
static int stop_signal_pending(int fd)
{
    unsigned char b = 0;
    return read(fd, &b, 1) == 1 ? b : 0;
}

/* Blocks until a stop signal arrives; returns it. */
static int wait_stop_signal(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    unsigned char b = 0;
    for (;;) {
        if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
            return SIGTERM;
        if (read(fd, &b, 1) == 1)
            return b;
    }
}

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

/* jobs_config.log: one line per change of a job's state. */
static void log_job(void *ctx, const char *id, const char *status, const char *detail)
{
    const srv *s = ctx;
    if (s->cfg.log_format == CFG_LOG_TEXT) {
        fprintf(stderr, "vitfit: job %s %s%s%s\n", id, status, detail ? ": " : "",
                detail ? detail : "");
        return;
    }
    json_t *j = json_pack("{s:s,s:s,s:s,s:o*}", "msg", "job", "id", id, "status", status,
                          "detail", detail ? api_json_text(detail) : NULL);
    char *line = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (line)
        fprintf(stderr, "%s\n", line);
    free(line);
    json_decref(j);
}

static void notify_streams(void *ctx)
{
    srv *s = ctx;
    sse_hub_notify(s->sse);
}

/* The fine-tune jobs (reloaded from data_dir/jobs) and their event streams. */
static vit_status open_jobs(srv *s, vit_error *err)
{
    snprintf(s->datasets_dir, sizeof s->datasets_dir, "%s/datasets", s->cfg.data_dir);
    long usable = cli_default_threads();
    /* a trainer serves no classify: it keeps no CPU for it */
    long train = usable - (s->cfg.role == CFG_ROLE_TRAIN ? 0 : s->cfg.serve_reserved_threads);
    /* tests only: every other process's lease judged by its renewals, as
     * replicas on other hosts are (no shortcut for a dead local pid) */
    const char *remote = getenv("VITFIT_TEST_LEASE_REMOTE");
    jobs_config jc = {
        .data_dir = s->cfg.data_dir,
        .model = s->model,
        .model_path = s->model_path,
        .tasks = s->tasks,
        .max_running = s->cfg.max_running_jobs,
        .max_queued = s->cfg.max_queued_jobs,
        .train_threads = train < 1 ? 1 : (int)train,
        .checkpoint_every_steps = s->cfg.job_checkpoint_every_steps,
        .run_jobs = s->cfg.role != CFG_ROLE_SERVE,
        .lease_ms = s->cfg.job_lease_ms,
        .lease_remote_only = remote && strcmp(remote, "1") == 0,
        .fetch = {.connect_timeout_ms = s->cfg.url_connect_timeout_ms,
                  .timeout_ms = s->cfg.url_timeout_ms,
                  .max_bytes = (size_t)s->cfg.url_max_bytes,
                  .max_redirects = s->cfg.url_max_redirects,
                  .allow_private = s->cfg.allow_private_urls},
        .log = log_job,
        .notify = notify_streams,
        .ctx = s,
    };
    vit_status st = jobs_open(&jc, &s->jobs, err);
    if (st == VIT_OK)
        st = sse_hub_create(s->jobs, &s->sse, err);
    return st;
}

static bool host_is_loopback(const char *host)
{
    return strcmp(host, "localhost") == 0 || strncmp(host, "127.", 4) == 0 ||
           strcmp(host, "::1") == 0;
}

/* hub_options.log: download events as log lines. */
static void log_download(void *ctx, const char *line)
{
    log_event(ctx, "model download", line);
}

/* hub_options.stop: a stop signal has arrived (left in the pipe for
 * wait_stop_signal and stop_signal_pending). */
static bool stop_requested(void *ctx)
{
    const srv *s = ctx;
    struct pollfd pfd = {.fd = s->stop_signals, .events = POLLIN};
    return poll(&pfd, 1, 0) > 0;
}

/* s->model_path: cfg.model, or for an hf: model its snapshot in the cache,
 * downloaded first when need be (while /healthz answers and the rest 503). */
static vit_status resolve_model(srv *s, vit_error *err)
{
    if (!hub_is_ref(s->cfg.model)) {
        snprintf(s->model_path, sizeof s->model_path, "%s", s->cfg.model);
        return VIT_OK;
    }
    hub_options o;
    cli_hub_options(&s->cfg, &o);
    o.log = log_download;
    o.stop = stop_requested;
    o.ctx = s;
    return hub_resolve(s->cfg.model, &o, s->model_path, sizeof s->model_path, err);
}

/* task_watch_config.log: changes to tasks/ made by others. */
static void log_task_watch(void *ctx, const char *msg, const char *detail)
{
    log_event(ctx, msg, detail);
}

/* Model, task store, pipeline: everything `ready` waits for. */
static vit_status load(srv *s, vit_error *err)
{
    /* one copy of the weights, the packed one: fine-tune jobs train from it
     * (fp32), or from an fp32 copy loaded for the job (bf16; job_run.c) */
    vit_load_options lo = {.precision = s->cfg.precision == CFG_PRECISION_BF16
                                            ? VIT_PRECISION_BF16
                                            : VIT_PRECISION_FP32,
                           .one_copy = true};
    vit_status st = resolve_model(s, err);
    if (st != VIT_OK)
        return st;
    st = vit_model_load_with(s->model_path, &lo, &s->model, err);
    if (st != VIT_OK)
        return vit_error_prefix(err, "model %s", s->cfg.model);
    if ((st = vit_model_fingerprint(s->model, s->fingerprint, err)) != VIT_OK)
        return st;
    if (mkdir(s->cfg.data_dir, 0755) != 0 && errno != EEXIST)
        return vit_error_set(err, VIT_ERR_IO, "data_dir %s: %s", s->cfg.data_dir, strerror(errno));
    char dir[sizeof s->cfg.data_dir + 8];
    snprintf(dir, sizeof dir, "%s/tasks", s->cfg.data_dir);
    st = task_store_open(s->model, s->fingerprint, dir, (size_t)s->cfg.task_memory_mb << 20,
                         &s->tasks, err);
    if (st != VIT_OK)
        return st;
    /* other replicas (and operators) change tasks/ too: seen within task_reload_ms */
    task_watch_config wc = {.store = s->tasks, .dir = dir, .rescan_ms = s->cfg.task_reload_ms,
                            .log = log_task_watch, .ctx = s};
    if ((st = task_watch_start(&wc, &s->task_watch, err)) != VIT_OK ||
        (st = open_jobs(s, err)) != VIT_OK)
        return st;
    return srv_pipeline_start(s, &s->pipe, err);
}

static void teardown(srv *s)
{
    jobs_stop(s->jobs);
    if (s->pipe) {
        srv_pipeline_stop(s->pipe);
    }
    sse_hub_close_streams(s->sse);
    srv_http_stop(s->http);
    sse_hub_free(s->sse);
    jobs_close(s->jobs);
    srv_pipeline_free(s->pipe);
    task_watch_stop(s->task_watch);
    task_store_close(s->tasks);
    vit_model_free(s->model);
    api_metrics_free(s->metrics);
    curl_global_cleanup();
}

int cli_serve(int argc, char **argv)
{
    static srv s; /* one per process; static keeps its ~10 KB of config off the stack */
    char msg[512];
    /* first: a SIGTERM from here on drains (or ends the start-up) cleanly */
    int stop_signals = catch_stop_signals();
    if (stop_signals < 0) {
        fprintf(stderr, "vitfit: cannot install the SIGTERM/SIGINT handlers: %s\n", strerror(errno));
        return CLI_FAIL;
    }
    int rc = cfg_load(&s.cfg, argc - 1, argv + 1, environ, msg, sizeof msg);
    if (rc == CFG_HELP) {
        cfg_print_help(stdout);
        return CLI_OK;
    }
    if (rc != CFG_OK) {
        fprintf(stderr, "vitfit serve: %s (see 'vitfit serve --help')\n", msg);
        return CLI_USAGE;
    }
    s.stop_signals = stop_signals;
    if (hub_is_ref(s.cfg.model)) { /* a bad name or hub setting is a usage error, found now */
        hub_options o;
        cli_hub_options(&s.cfg, &o);
        vit_error herr = {0};
        if (hub_check(s.cfg.model, &o, &herr) != VIT_OK) {
            fprintf(stderr, "vitfit serve: %s (see 'vitfit serve --help')\n", herr.message);
            return CLI_USAGE;
        }
    }
    int threads = srv_worker_threads(&s.cfg);
    long usable = cli_default_threads();
    if ((long)s.cfg.workers * threads > usable && !s.cfg.oversubscribe) {
        fprintf(stderr,
                "vitfit serve: workers x threads_per_worker = %d x %d is more than the %ld usable "
                "CPUs (set oversubscribe to allow it)\n",
                s.cfg.workers, threads, usable);
        return CLI_USAGE;
    }

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
        bool stopped = stop_requested(&s); /* a download cut short by SIGTERM: not a failure */
        log_event(&s, stopped ? "stopped" : "start failed", err.message);
        teardown(&s);
        return stopped ? CLI_OK : cli_fail(&err);
    }
    if (stop_signal_pending(stop_signals)) { /* stopped while loading: never announce ready */
        log_event(&s, "stopped", "a stop signal arrived during start-up");
        teardown(&s);
        return CLI_OK;
    }
    if (jobs_start(s.jobs, &err) != VIT_OK) {
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

    int sig = wait_stop_signal(stop_signals);
    log_event(&s, "draining", sig == SIGINT ? "SIGINT" : "SIGTERM");
    atomic_store(&s.draining, true);
    srv_http_quiesce(s.http);
    sse_hub_close_streams(s.sse);
    jobs_stop(s.jobs); /* a running job stops between two steps, resumable */
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
