/*
 * routes.c - the route table and its lookups (routes.h).
 */
#include <string.h>

#include "routes.h"

const srv_route_spec srv_routes[] = {
    {SRV_ROUTE_HEALTHZ, "/healthz", "", "GET, HEAD", "/healthz"},
    {SRV_ROUTE_READYZ, "/readyz", "", "GET, HEAD", "/readyz"},
    {SRV_ROUTE_METRICS, "/metrics", "", "GET, HEAD", "/metrics"},
    {SRV_ROUTE_MODEL, "/v1/model", "", "GET, HEAD", "/v1/model"},
    {SRV_ROUTE_CLASSIFY, "/v1/classify", "", "POST", "/v1/classify"},
    {SRV_ROUTE_TASKS, "/v1/tasks", "", "GET, HEAD", "/v1/tasks"},
    {SRV_ROUTE_TASK, "/v1/tasks/", "", "GET, HEAD, PUT, DELETE", "/v1/tasks/{name}"},
    {SRV_ROUTE_FINETUNE, "/v1/finetune", "", "GET, HEAD, POST", "/v1/finetune"},
    {SRV_ROUTE_FINETUNE_JOB, "/v1/finetune/", "", "GET, HEAD", "/v1/finetune/{id}"},
    {SRV_ROUTE_FINETUNE_CANCEL, "/v1/finetune/", "/cancel", "POST", "/v1/finetune/{id}/cancel"},
    {SRV_ROUTE_FINETUNE_EVENTS, "/v1/finetune/", "/events", "GET, HEAD",
     "/v1/finetune/{id}/events"},
    {SRV_ROUTE_PAGE, "/", "", "GET, HEAD", "/"},
    {SRV_ROUTE_WEB, "/web/", "", "GET, HEAD", "/web/{file}"},
    {SRV_ROUTE_OPENAPI, "/openapi.yaml", "", "GET, HEAD", "/openapi.yaml"},
    {SRV_ROUTE_KSERVE_SERVER, "/v2", "", "GET, HEAD", "/v2"},
    {SRV_ROUTE_KSERVE_LIVE, "/v2/health/live", "", "GET, HEAD", "/v2/health/live"},
    {SRV_ROUTE_KSERVE_READY, "/v2/health/ready", "", "GET, HEAD", "/v2/health/ready"},
    {SRV_ROUTE_KSERVE_MODEL, "/v2/models/", "", "GET, HEAD", "/v2/models/{model}"},
    {SRV_ROUTE_KSERVE_MODEL_READY, "/v2/models/", "/ready", "GET, HEAD",
     "/v2/models/{model}/ready"},
    {SRV_ROUTE_KSERVE_INFER, "/v2/models/", "/infer", "POST", "/v2/models/{model}/infer"},
};

const size_t srv_route_count = sizeof srv_routes / sizeof srv_routes[0];

const srv_route_spec *srv_route_find(const char *url, char *name, size_t name_max, bool *bad_name)
{
    *bad_name = false;
    for (size_t i = 0; i < srv_route_count; i++) {
        const srv_route_spec *rs = &srv_routes[i];
        size_t n = strlen(rs->path);
        if (n == 1 || rs->path[n - 1] != '/') {
            if (strcmp(url, rs->path) == 0)
                return rs;
            continue;
        }
        if (strncmp(url, rs->path, n) != 0 || url[n] == '\0')
            continue;
        size_t len = strcspn(url + n, "/");
        if (len == 0 || strcmp(url + n + len, rs->suffix) != 0)
            continue;
        /* the name is checked by the handler; here only its length */
        if (len > name_max)
            *bad_name = true;
        else
            memcpy(name, url + n, len), name[len] = '\0';
        return rs;
    }
    return NULL;
}

bool srv_route_allows(const srv_route_spec *rs, const char *method)
{
    /* Allow lists are "A, B, C": compare whole tokens */
    size_t n = strlen(method);
    for (const char *p = rs->allow; *p;) {
        size_t len = strcspn(p, ",");
        if (len == n && strncmp(p, method, n) == 0)
            return true;
        p += len;
        while (*p == ',' || *p == ' ')
            p++;
    }
    return false;
}

const char *srv_route_label(srv_route route)
{
    for (size_t i = 0; i < srv_route_count; i++)
        if (srv_routes[i].route == route)
            return srv_routes[i].label;
    return "unknown";
}

bool srv_route_kserve(srv_route route)
{
    switch (route) {
    case SRV_ROUTE_KSERVE_SERVER:
    case SRV_ROUTE_KSERVE_LIVE:
    case SRV_ROUTE_KSERVE_READY:
    case SRV_ROUTE_KSERVE_MODEL:
    case SRV_ROUTE_KSERVE_MODEL_READY:
    case SRV_ROUTE_KSERVE_INFER:
        return true;
    default:
        return false;
    }
}
