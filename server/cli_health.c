/*
 * cli_health.c - `vitfit health`: asks a running server whether it is alive
 * (/healthz) or ready (/readyz); exit 0 when it answers 200.
 *
 * For probes that run a command rather than an HTTP GET (Docker's
 * HEALTHCHECK, a Kubernetes exec probe): the runtime image then needs no
 * curl or wget beside vitfit, which links libcurl already.  Any other answer,
 * a refused connection or the timeout is exit 1 with one line saying which.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "cli.h"

#define HEALTH_DEFAULT_PORT 8080
#define HEALTH_DEFAULT_TIMEOUT_MS 3000

static void health_usage(FILE *out)
{
    fprintf(out,
            "usage: vitfit health [--host HOST] [--port N] [--ready] [--timeout-ms N]\n"
            "  --host        the server's address (default 127.0.0.1; [::1] for IPv6)\n"
            "  --port        its port (default %d)\n"
            "  --ready       ask /readyz (model loaded, accepting work) instead of /healthz\n"
            "                (the process is alive)\n"
            "  --timeout-ms  give up after this long (default %d)\n"
            "exit 0: the server answered 200; 1: anything else (printed)\n",
            HEALTH_DEFAULT_PORT, HEALTH_DEFAULT_TIMEOUT_MS);
}

/* The reply body is not needed: the status says it all. */
static size_t discard(char *data, size_t size, size_t n, void *user)
{
    (void)data, (void)user;
    return size * n;
}

/* GETs url; returns the HTTP status, or 0 with why in msg. */
static long probe(const char *url, long timeout_ms, char *msg, size_t msglen)
{
    CURL *h = curl_easy_init();
    if (!h) {
        snprintf(msg, msglen, "could not start libcurl");
        return 0;
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    long status = 0;
    CURLcode rc = CURLE_OK;
#define SET(opt, val) \
    if (rc == CURLE_OK) \
    rc = curl_easy_setopt(h, opt, val)
    SET(CURLOPT_URL, url);
    SET(CURLOPT_PROTOCOLS_STR, "http");
    SET(CURLOPT_TIMEOUT_MS, timeout_ms);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_NOPROXY, "*"); /* a probe of this host never goes through a proxy */
    SET(CURLOPT_WRITEFUNCTION, discard);
    SET(CURLOPT_ERRORBUFFER, errbuf);
#undef SET
    if (rc == CURLE_OK)
        rc = curl_easy_perform(h);
    if (rc == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    else
        snprintf(msg, msglen, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
    curl_easy_cleanup(h);
    return status;
}

int cli_health(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'H'},       {"port", required_argument, NULL, 'p'},
        {"ready", no_argument, NULL, 'r'},            {"timeout-ms", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},             {NULL, 0, NULL, 0},
    };
    const char *host = "127.0.0.1";
    long port = HEALTH_DEFAULT_PORT, timeout_ms = HEALTH_DEFAULT_TIMEOUT_MS;
    bool ready = false;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'H': host = optarg; break;
        case 'r': ready = true; break;
        case 'h': health_usage(stdout); return CLI_OK;
        case 'p':
            if (!cli_parse_int(optarg, 1, 65535, &port))
                return cli_usage_error("health", "--port needs an integer in [1, 65535], got '%s'",
                                       optarg);
            break;
        case 't':
            if (!cli_parse_int(optarg, 1, 600000, &timeout_ms))
                return cli_usage_error("health",
                                       "--timeout-ms needs an integer in [1, 600000], got '%s'",
                                       optarg);
            break;
        default:
            return cli_usage_error("health", "unknown or incomplete option '%s'",
                                   argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_usage_error("health", "unexpected argument '%s'", argv[optind]);
    if (!host[0] || strpbrk(host, "/?#@ \t\r\n"))
        return cli_usage_error("health", "--host needs a host name or address, got '%s'", host);
    char url[320];
    int len = snprintf(url, sizeof url, "http://%s:%ld/%s", host, port,
                       ready ? "readyz" : "healthz");
    if (len < 0 || (size_t)len >= sizeof url)
        return cli_usage_error("health", "--host is too long");
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "vitfit health: could not initialise libcurl\n");
        return CLI_FAIL;
    }
    char msg[CURL_ERROR_SIZE + 64] = "";
    long status = probe(url, timeout_ms, msg, sizeof msg);
    curl_global_cleanup();
    if (status == 200) {
        printf("%s: ok\n", url);
        return CLI_OK;
    }
    if (status)
        fprintf(stderr, "vitfit health: %s answered HTTP %ld\n", url, status);
    else
        fprintf(stderr, "vitfit health: %s: %s\n", url, msg);
    return CLI_FAIL;
}
