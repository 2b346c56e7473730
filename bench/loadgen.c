/*
 * loadgen.c - vitfit-loadgen: a small closed-loop HTTP load generator for
 * benchmarking `vitfit serve` on this machine (bench/serve_load.sh).
 *
 * C client threads, each with one libcurl easy handle reused for every
 * request (so one keep-alive connection per client), send the same request
 * back to back: a POST of --body (or a GET without one).  Requests are
 * numbered from one shared counter; the first --warmup are not measured, then
 * the clock starts and requests run until --requests have been sent or
 * --duration seconds have passed, whichever comes first (a request already
 * sent when time runs out is finished and counted).
 *
 * Prints one JSON line:
 *   {"concurrency", "requests" (measured, sent), "ok" (2xx),
 *    "errors": {"<status>": n, "transport": n},
 *    "seconds" (clock start to the last reply), "rps" (ok / seconds),
 *    "latency_ms": {"p50", "p90", "p99", "mean", "max"} (of the 2xx replies)}
 * and exits 0, or 1 when no measured request succeeded (2 for bad usage).
 *
 * A benchmark of a local server, never a tool to point at others: the URL's
 * host must be 127.0.0.1, [::1] or localhost, and redirects are not followed.
 */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#define LG_MAX_CONCURRENCY 1024
#define LG_MAX_REQUESTS 1000000
#define LG_MAX_DURATION 600.0
#define LG_MAX_BODY ((size_t)256 << 20)
#define LG_MAX_HEADERS 32
#define LG_TIMEOUT_MS 120000L /* one request, connection included */

typedef struct lg_opts {
    const char *url, *body_path, *content_type;
    const char *headers[LG_MAX_HEADERS];
    int num_headers;
    long concurrency, requests, warmup;
    double duration;
} lg_opts;

/* What every client thread shares: the request, the ticket counter, the
 * start line, and one result slot per measured request. */
typedef struct lg_run {
    const lg_opts *o;
    const char *body;           /* NULL: GET */
    size_t body_len;
    struct curl_slist *headers; /* read-only once the threads start */
    atomic_long warm_next;      /* next warm-up request: [0, warmup) */
    atomic_long next;           /* next measured request: [0, requests) */
    /* start line: clients finish their warm-up, then wait for go */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int warmed;                 /* clients done with the warm-up */
    int go;                     /* 0 wait, 1 measure, -1 give up */
    double deadline;            /* monotonic seconds; set before go = 1 */
    double *latency;            /* (requests) seconds of each measured request */
    int *status;                /* (requests) HTTP status, -1 for a transport failure,
                                   0 while not sent */
    char first_error[CURL_ERROR_SIZE + 64];
    atomic_int error_noted;
} lg_run;

static double lg_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Prints one usage line on stderr; returns the usage exit code 2. */
__attribute__((format(printf, 1, 2))) static int lg_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "vitfit-loadgen: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see 'vitfit-loadgen --help')\n");
    va_end(ap);
    return 2;
}

static void lg_help(void)
{
    printf("usage: vitfit-loadgen --url http://127.0.0.1:PORT/PATH [--concurrency C]\n"
           "                      [--requests N] [--duration S] [--warmup N]\n"
           "                      [--body FILE [--content-type T]] [--header 'K: V']...\n"
           "  --concurrency  client threads, one keep-alive connection each (default 1, <= %d)\n"
           "  --requests     measured requests in all (default 1000, or %d with --duration)\n"
           "  --duration     stop sending after S seconds (default and most %g)\n"
           "  --warmup       requests sent first and not measured (default 0)\n"
           "  --body         POST this file's bytes (default: GET); at most 256 MiB\n"
           "  --content-type of the body (default image/png)\n"
           "  --header       an extra request header, e.g. 'Authorization: Bearer KEY'\n"
           "Prints one JSON line; exits 1 if no measured request got a 2xx reply.\n"
           "The host must be 127.0.0.1, [::1] or localhost.\n",
           LG_MAX_CONCURRENCY, LG_MAX_REQUESTS, LG_MAX_DURATION);
}

static int lg_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return 0;
    *out = v;
    return 1;
}

/* 1 when s has no control characters (a CR or LF would add header lines). */
static int lg_printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

/* 1 when url is http(s) to a loopback host: parsed by libcurl itself, so
 * the host checked is the host it will connect to. */
static int lg_loopback_url(const char *url)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    int ok = u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
             (strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0) &&
             (strcmp(host, "127.0.0.1") == 0 || strcmp(host, "[::1]") == 0 ||
              strcasecmp(host, "localhost") == 0);
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return ok;
}

static int lg_parse(int argc, char **argv, lg_opts *o)
{
    static const struct option longopts[] = {
        {"url", required_argument, NULL, 'u'},          {"concurrency", required_argument, NULL, 'c'},
        {"requests", required_argument, NULL, 'n'},     {"duration", required_argument, NULL, 'd'},
        {"body", required_argument, NULL, 'b'},         {"content-type", required_argument, NULL, 't'},
        {"header", required_argument, NULL, 'H'},       {"warmup", required_argument, NULL, 'w'},
        {"help", no_argument, NULL, 'h'},               {NULL, 0, NULL, 0},
    };
    *o = (lg_opts){.content_type = "image/png", .concurrency = 1, .requests = -1,
                   .duration = LG_MAX_DURATION};
    int c, duration_given = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'u': o->url = optarg; break;
        case 'b': o->body_path = optarg; break;
        case 'h': lg_help(); return -1;
        case 't':
            if (!*optarg || !lg_printable(optarg))
                return lg_usage("bad --content-type '%s'", optarg);
            o->content_type = optarg;
            break;
        case 'H':
            if (o->num_headers == LG_MAX_HEADERS)
                return lg_usage("more than %d --header options", LG_MAX_HEADERS);
            if (!strchr(optarg, ':') || optarg[0] == ':' || !lg_printable(optarg))
                return lg_usage("--header needs 'Name: value' without control characters, got '%s'",
                                optarg);
            o->headers[o->num_headers++] = optarg;
            break;
        case 'c':
            if (!lg_long(optarg, 1, LG_MAX_CONCURRENCY, &o->concurrency))
                return lg_usage("--concurrency needs an integer in [1, 1024], got '%s'", optarg);
            break;
        case 'n':
            if (!lg_long(optarg, 1, LG_MAX_REQUESTS, &o->requests))
                return lg_usage("--requests needs an integer in [1, 1000000], got '%s'", optarg);
            break;
        case 'w':
            if (!lg_long(optarg, 0, LG_MAX_REQUESTS, &o->warmup))
                return lg_usage("--warmup needs an integer in [0, 1000000], got '%s'", optarg);
            break;
        case 'd':
            errno = 0;
            o->duration = strtod(optarg, &end);
            if (errno || end == optarg || *end || !(o->duration > 0) ||
                o->duration > LG_MAX_DURATION)
                return lg_usage("--duration needs seconds in (0, 600], got '%s'", optarg);
            duration_given = 1;
            break;
        default:
            return lg_usage("unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return lg_usage("unexpected argument '%s'", argv[optind]);
    if (!o->url)
        return lg_usage("--url is required");
    if (!lg_loopback_url(o->url))
        return lg_usage("--url must be http(s)://127.0.0.1, [::1] or localhost, got '%s'", o->url);
    if (o->requests < 0)
        o->requests = duration_given ? LG_MAX_REQUESTS : 1000;
    return 0;
}

/* Reads a regular file of at most LG_MAX_BODY bytes (caller frees); NULL
 * with a message on stderr.  An empty file is a valid empty body. */
static char *lg_read_body(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct stat sb;
    if (!f || fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode) ||
        (size_t)sb.st_size > LG_MAX_BODY) {
        fprintf(stderr, "vitfit-loadgen: %s: %s\n", path,
                !f ? strerror(errno) : "not a regular file of at most 256 MiB");
        if (f)
            fclose(f);
        return NULL;
    }
    char *buf = malloc((size_t)sb.st_size + 1);
    size_t n = buf ? fread(buf, 1, (size_t)sb.st_size, f) : 0;
    fclose(f);
    if (!buf || n != (size_t)sb.st_size) {
        fprintf(stderr, "vitfit-loadgen: cannot read %s\n", path);
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* The reply body is read and dropped. */
static size_t lg_discard(char *data, size_t size, size_t n, void *user)
{
    (void)data;
    (void)user;
    return size * n;
}

/* Sends one request on h; the HTTP status, or -1 when none arrived (the
 * first such failure's message kept in run->first_error). */
static int lg_request(lg_run *run, CURL *h, char *errbuf)
{
    errbuf[0] = '\0';
    CURLcode rc = curl_easy_perform(h);
    long code = 0;
    if (rc == CURLE_OK && curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK &&
        code > 0)
        return (int)code;
    if (atomic_exchange(&run->error_noted, 1) == 0)
        snprintf(run->first_error, sizeof run->first_error, "%s",
                 errbuf[0] ? errbuf : curl_easy_strerror(rc));
    return -1;
}

/* A client thread: warm-up tickets, the start line, then measured tickets
 * until they run out or the deadline passes. */
static void *lg_client(void *arg)
{
    lg_run *run = arg;
    const lg_opts *o = run->o;
    char errbuf[CURL_ERROR_SIZE];
    CURL *h = curl_easy_init();
    if (h) {
        curl_easy_setopt(h, CURLOPT_URL, o->url);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(h, CURLOPT_PROXY, ""); /* never through $http_proxy */
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, LG_TIMEOUT_MS);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, lg_discard);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, run->headers);
        if (run->body) {
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, run->body);
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)run->body_len);
        }
    }
    long t;
    while (h && atomic_fetch_add(&run->warm_next, 1) < o->warmup)
        lg_request(run, h, errbuf);

    pthread_mutex_lock(&run->mu);
    run->warmed++;
    pthread_cond_broadcast(&run->cv);
    while (run->go == 0)
        pthread_cond_wait(&run->cv, &run->mu);
    int go = run->go;
    double deadline = run->deadline;
    pthread_mutex_unlock(&run->mu);

    while (h && go > 0 && lg_now() < deadline &&
           (t = atomic_fetch_add(&run->next, 1)) < o->requests) {
        double t0 = lg_now();
        int status = lg_request(run, h, errbuf);
        run->latency[t] = lg_now() - t0;
        run->status[t] = status;
    }
    if (h)
        curl_easy_cleanup(h);
    else if (atomic_exchange(&run->error_noted, 1) == 0)
        snprintf(run->first_error, sizeof run->first_error, "cannot create a curl handle");
    return NULL;
}

static int lg_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile p (0-100] of n sorted values. */
static double lg_percentile(const double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t rank = (size_t)ceil(p / 100.0 * (double)n);
    return v[rank < 1 ? 0 : rank > n ? n - 1 : rank - 1];
}

/* The report of the requests in slots [0, slots) over `seconds`; NULL
 * when out of memory.  *ok_out gets the number of 2xx replies. */
static json_t *lg_report(lg_run *run, long slots, double seconds, long *ok_out)
{
    json_t *errors = json_object();
    double *ok_lat = malloc(((size_t)slots + 1) * sizeof *ok_lat), sum = 0;
    size_t ok = 0;
    long n = 0; /* requests sent */
    for (long i = 0; errors && ok_lat && i < slots; i++) {
        int s = run->status[i];
        if (s == 0)
            continue; /* never sent (cannot happen: see main) */
        n++;
        if (s >= 200 && s < 300) {
            ok_lat[ok++] = run->latency[i];
            sum += run->latency[i];
            continue;
        }
        char key[16];
        if (s < 0)
            snprintf(key, sizeof key, "transport");
        else
            snprintf(key, sizeof key, "%d", s);
        json_int_t prev = json_integer_value(json_object_get(errors, key));
        json_object_set_new(errors, key, json_integer(prev + 1));
    }
    if (!errors || !ok_lat) {
        json_decref(errors);
        free(ok_lat);
        return NULL;
    }
    qsort(ok_lat, ok, sizeof *ok_lat, lg_cmp);
    json_t *lat = json_pack("{sf sf sf sf sf}", "p50", 1e3 * lg_percentile(ok_lat, ok, 50),
                            "p90", 1e3 * lg_percentile(ok_lat, ok, 90), "p99",
                            1e3 * lg_percentile(ok_lat, ok, 99), "mean",
                            ok ? 1e3 * sum / (double)ok : 0.0, "max",
                            ok ? 1e3 * ok_lat[ok - 1] : 0.0);
    free(ok_lat);
    *ok_out = (long)ok;
    return json_pack("{si sI sI so sf sf so}", "concurrency", (int)run->o->concurrency,
                     "requests", (json_int_t)n, "ok", (json_int_t)ok, "errors", errors,
                     "seconds", seconds, "rps", seconds > 0 ? (double)ok / seconds : 0.0,
                     "latency_ms", lat);
}

int main(int argc, char **argv)
{
    lg_opts o;
    int rc = lg_parse(argc, argv, &o);
    if (rc)
        return rc < 0 ? 0 : rc;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "vitfit-loadgen: curl_global_init failed\n");
        return 1;
    }
    static lg_run run; /* zeroed; big enough to keep off the stack */
    run.o = &o;
    atomic_init(&run.warm_next, 0);
    atomic_init(&run.next, 0);
    atomic_init(&run.error_noted, 0);
    pthread_mutex_init(&run.mu, NULL);
    pthread_cond_init(&run.cv, NULL);
    char *body = o.body_path ? lg_read_body(o.body_path, &run.body_len) : NULL;
    run.body = body;
    char ct[512];
    snprintf(ct, sizeof ct, "Content-Type: %s", o.content_type);
    struct curl_slist *hs = NULL;
    int ok = !o.body_path || body;
    /* "Expect:" turns off 100-continue: one round trip per request, as a
     * client that knows the server would send it */
    if (ok && o.body_path)
        ok = (hs = curl_slist_append(hs, ct)) && (hs = curl_slist_append(hs, "Expect:"));
    for (int i = 0; ok && i < o.num_headers; i++) {
        struct curl_slist *grown = curl_slist_append(hs, o.headers[i]);
        ok = grown != NULL;
        hs = grown ? grown : hs;
    }
    run.headers = hs;
    run.latency = ok ? calloc((size_t)o.requests, sizeof *run.latency) : NULL;
    run.status = ok ? calloc((size_t)o.requests, sizeof *run.status) : NULL;
    pthread_t *threads = ok ? calloc((size_t)o.concurrency, sizeof *threads) : NULL;
    if (ok && (!run.latency || !run.status || !threads)) {
        fprintf(stderr, "vitfit-loadgen: out of memory\n");
        ok = 0;
    }
    long started = 0;
    for (; ok && started < o.concurrency; started++) {
        int e = pthread_create(&threads[started], NULL, lg_client, &run);
        if (e) {
            fprintf(stderr, "vitfit-loadgen: cannot start client %ld: %s\n", started + 1,
                    strerror(e));
            ok = 0;
            break;
        }
    }
    /* the start line: every client warmed up (or told to give up) */
    pthread_mutex_lock(&run.mu);
    while (ok && run.warmed < o.concurrency)
        pthread_cond_wait(&run.cv, &run.mu);
    double t0 = lg_now();
    run.deadline = t0 + o.duration;
    run.go = ok ? 1 : -1;
    pthread_cond_broadcast(&run.cv);
    pthread_mutex_unlock(&run.mu);
    for (long i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    double seconds = lg_now() - t0;

    rc = 1;
    if (ok) {
        /* every slot handed out is filled before its thread exits;
         * lg_report counts those (status != 0) */
        long claimed = atomic_load(&run.next), n_ok = 0;
        json_t *report = lg_report(&run, claimed < o.requests ? claimed : o.requests, seconds,
                                   &n_ok);
        char *text = report ? json_dumps(report, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
        json_decref(report);
        if (text && printf("%s\n", text) >= 0 && fflush(stdout) == 0)
            rc = n_ok > 0 ? 0 : 1;
        else
            fprintf(stderr, "vitfit-loadgen: cannot write the report\n");
        free(text);
        if (n_ok == 0)
            fprintf(stderr, "vitfit-loadgen: no request succeeded%s%s\n",
                    run.first_error[0] ? ": " : "", run.first_error);
    }
    free(threads);
    free(run.latency);
    free(run.status);
    curl_slist_free_all(hs);
    free(body);
    pthread_mutex_destroy(&run.mu);
    pthread_cond_destroy(&run.cv);
    curl_global_cleanup();
    return rc;
}
