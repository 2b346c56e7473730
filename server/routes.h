/*
 * routes.h - the route table of `vitfit serve`: every path, the methods each
 * allows, and how a URL finds its route.
 *
 * One table (routes.c), read by the HTTP front end (http.c) and compiled into
 * the test that checks api/openapi.yaml documents exactly these routes and
 * methods (tests/api/test_openapi_routes.c).  A new route goes into the
 * table, the dispatch in http.c and the document, or that test fails.
 * No dependency but libc, so the test needs nothing else of the server.
 */
#ifndef VIT_SERVER_ROUTES_H
#define VIT_SERVER_ROUTES_H

#include <stdbool.h>
#include <stddef.h>

/* The routes; SRV_ROUTE_NONE is an unknown path. */
typedef enum srv_route {
    SRV_ROUTE_NONE,
    SRV_ROUTE_HEALTHZ,
    SRV_ROUTE_READYZ,
    SRV_ROUTE_METRICS,
    SRV_ROUTE_MODEL,
    SRV_ROUTE_CLASSIFY,
    SRV_ROUTE_TASKS,
    SRV_ROUTE_TASK,
    SRV_ROUTE_FINETUNE,         /* /v1/finetune: list, create */
    SRV_ROUTE_FINETUNE_JOB,     /* /v1/finetune/{id} */
    SRV_ROUTE_FINETUNE_CANCEL,  /* /v1/finetune/{id}/cancel */
    SRV_ROUTE_FINETUNE_EVENTS,  /* /v1/finetune/{id}/events */
    SRV_ROUTE_PAGE,             /* /: the try-it page (embedded, server/web.c) */
    SRV_ROUTE_WEB,              /* /web/{file}: its assets */
    SRV_ROUTE_OPENAPI,          /* /openapi.yaml */
    SRV_ROUTE_KSERVE_SERVER,    /* /v2: Open Inference Protocol (KServe V2), api/kserve.h */
    SRV_ROUTE_KSERVE_LIVE,      /* /v2/health/live */
    SRV_ROUTE_KSERVE_READY,     /* /v2/health/ready */
    SRV_ROUTE_KSERVE_MODEL,     /* /v2/models/{model}: a task, or _backbone */
    SRV_ROUTE_KSERVE_MODEL_READY, /* /v2/models/{model}/ready */
    SRV_ROUTE_KSERVE_INFER,     /* /v2/models/{model}/infer */
    SRV_ROUTE_COUNT,
} srv_route;

/* One row of the table. */
typedef struct srv_route_spec {
    srv_route route;
    const char *path;   /* exact path ("/" too), or a prefix ending in '/' for {name} */
    const char *suffix; /* after {name}: "" for none, else "/cancel" ... */
    const char *allow;  /* the Allow header of a 405: "GET, HEAD" */
    const char *label;  /* in logs and /metrics; the path template of api/openapi.yaml */
} srv_route_spec;

extern const srv_route_spec srv_routes[];
extern const size_t srv_route_count;

/* The route of url (a path, no query), or NULL.  A {name} segment of at
 * most name_max bytes is copied into name (name_max + 1 bytes); a longer
 * one sets *bad_name and is not copied (the handler answers it). */
const srv_route_spec *srv_route_find(const char *url, char *name, size_t name_max, bool *bad_name);

/* Whether method is one of rs's Allow list (whole tokens). */
bool srv_route_allows(const srv_route_spec *rs, const char *method);

/* The label of route, "unknown" for none. */
const char *srv_route_label(srv_route route);

/* Whether route is one of the Open Inference Protocol's (/v2/...), whose
 * errors take the protocol's shape. */
bool srv_route_kserve(srv_route route);

#endif
