/* cli_common.c - small helpers shared by the subcommands (see cli.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/resource.h>
#include <time.h>

#include <curl/curl.h>

#include "cli.h"
#include "cpu.h"
#include "utf8.h"

extern char **environ;

int cli_fail(const vit_error *err)
{
    fprintf(stderr, "vitfit: %s\n", err->message);
    return CLI_FAIL;
}

int cli_usage_error(const char *command, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "vitfit %s: ", command);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see 'vitfit %s --help')\n", command);
    va_end(ap);
    return CLI_USAGE;
}

/* huggingface_hub's reading of a boolean variable. */
static bool env_true(const char *name)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    const char *v = getenv(name);
    for (size_t i = 0; v && i < sizeof yes / sizeof yes[0]; i++)
        if (strcasecmp(v, yes[i]) == 0)
            return true;
    return false;
}

void cli_hub_options(const vit_cfg *c, hub_options *o)
{
    *o = (hub_options){
        .url = c->hub_url,
        .cache = c->cache,
        .offline = c->hub_offline || env_true("HF_HUB_OFFLINE"),
        .max_bytes = c->hub_max_bytes,
        .token = getenv("HF_TOKEN"),
        .progress = isatty(STDERR_FILENO) == 1,
    };
}

static void hub_log(void *ctx, const char *line)
{
    (void)ctx;
    fprintf(stderr, "vitfit: %s\n", line);
}

int cli_model_path(const char *model, char *path, size_t len)
{
    if (!hub_is_ref(model)) {
        if (strlen(model) >= len) {
            fprintf(stderr, "vitfit: the model path is over %zu bytes\n", len - 1);
            return CLI_USAGE;
        }
        memcpy(path, model, strlen(model) + 1);
        return CLI_OK;
    }
    vit_cfg *c = malloc(sizeof *c); /* the hub settings are config keys, like serve's */
    char msg[512];
    if (!c) {
        fprintf(stderr, "vitfit: out of memory\n");
        return CLI_FAIL;
    }
    if (cfg_load(c, 0, NULL, environ, msg, sizeof msg) != CFG_OK) {
        fprintf(stderr, "vitfit: %s\n", msg);
        free(c);
        return CLI_USAGE;
    }
    hub_options o;
    cli_hub_options(c, &o);
    o.log = hub_log;
    vit_error err = {0};
    bool curl_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
    vit_status st = curl_ok ? hub_resolve(model, &o, path, len, &err)
                            : vit_error_set(&err, VIT_ERR_IO, "cannot initialise libcurl");
    if (curl_ok)
        curl_global_cleanup();
    free(c);
    if (st != VIT_OK) {
        fprintf(stderr, "vitfit: %s\n", err.message);
        return st == VIT_ERR_INVALID ? CLI_USAGE : CLI_FAIL;
    }
    return CLI_OK;
}

int cli_parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < lo || v > hi)
        return 0;
    *out = v;
    return 1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double cli_median(double *v, size_t n)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

size_t cli_peak_rss(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (size_t)ru.ru_maxrss * 1024; /* Linux reports KiB */
}

size_t cli_current_rss(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, resident = 0;
    int got = f ? fscanf(f, "%lu %lu", &size, &resident) : 0;
    if (f)
        fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    return got == 2 && page > 0 ? (size_t)resident * (size_t)page : 0;
}

int cli_print_json(json_t *j, int precise)
{
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(precise ? 9 : 6)) : NULL;
    json_decref(j);
    if (!text) { /* a report with a gap, or "{}", would pass for a success */
        fprintf(stderr, "vitfit: cannot produce the JSON report\n");
        return CLI_FAIL;
    }
    int ok = printf("%s\n", text) >= 0 && fflush(stdout) == 0;
    free(text);
    if (!ok)
        fprintf(stderr, "vitfit: cannot write the JSON report: %s\n", strerror(errno));
    return ok ? CLI_OK : CLI_FAIL;
}

char *cli_text(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    char *out = malloc(3 * n + 1), *o = out; /* U+FFFD is 3 bytes for 1 */
    if (!out)
        return NULL;
    for (size_t i = 0; i < n;) {
        size_t len = utf8_sequence(p + i, n - i, NULL);
        if (len) {
            memcpy(o, p + i, len);
            o += len;
            i += len;
        } else {
            memcpy(o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    *o = '\0';
    return out;
}

json_t *cli_json_text(const char *s)
{
    char *text = s ? cli_text(s) : NULL;
    json_t *j = text ? json_string(text) : NULL;
    free(text);
    return j;
}

long cli_default_threads(void)
{
    /* the CPUs this process may use (affinity mask, cgroup quota), not the
     * machine's: more busy threads than CPUs collapses throughput */
    long cpus = cpu_usable_count();
    return cpus < 1 ? 1 : cpus > 64 ? 64 : cpus;
}

/* ---- starting a group of worker threads (see cli.h) ---- */

static void gate_set(cli_gate *g, int state)
{
    pthread_mutex_lock(&g->mu);
    g->state = state;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

bool cli_gate_pass(cli_gate *g)
{
    pthread_mutex_lock(&g->mu);
    while (g->state == 0)
        pthread_cond_wait(&g->cv, &g->mu);
    bool go = g->state > 0;
    pthread_mutex_unlock(&g->mu);
    return go;
}

vit_status cli_start_threads(pthread_t *threads, int n, void *(*fn)(void *), void *args,
                             size_t arg_size, cli_gate *g, vit_error *err)
{
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->state = 0;
    for (int i = 0; i < n; i++) {
        int rc = pthread_create(&threads[i], NULL, fn, (char *)args + (size_t)i * arg_size);
        if (rc != 0) {
            gate_set(g, -1); /* the started ones return without working */
            for (int j = 0; j < i; j++)
                pthread_join(threads[j], NULL);
            return vit_error_set(err, VIT_ERR_NOMEM, "cannot start worker %d of %d: %s", i + 1,
                                 n, strerror(rc));
        }
    }
    gate_set(g, 1);
    return VIT_OK;
}

void cli_gate_destroy(cli_gate *g)
{
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
}
