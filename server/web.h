/*
 * web.h - sends an embedded static file (api/web_assets.h): the try-it page
 * at /, its assets at /web/{file}, the OpenAPI document at /openapi.yaml.
 */
#ifndef VIT_SERVER_WEB_H
#define VIT_SERVER_WEB_H

#include <microhttpd.h>

#include "web_assets.h"

/* Queues the reply to a GET or HEAD of asset a on conn: 200 with the bytes
 * (HEAD: libmicrohttpd sends the headers only), or 304 with no body when
 * the request's If-None-Match matches the asset's ETag.  Either way with
 * Content-Type, ETag, Cache-Control: no-cache (revalidate: the bytes change
 * with the binary), X-Content-Type-Options: nosniff, the page's
 * Content-Security-Policy and X-Request-Id.  *status is the status queued
 * (for the log and /metrics). */
enum MHD_Result srv_web_send(struct MHD_Connection *conn, const api_web_asset *a,
                             const char *request_id, int *status);

#endif
