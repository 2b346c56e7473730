/*
 * http.h - the libmicrohttpd front end of `vitfit serve`.
 */
#ifndef VIT_SERVER_HTTP_H
#define VIT_SERVER_HTTP_H

#include "srv.h"

/* Listens on cfg.host:cfg.port (port 0: any free port, written to *port)
 * with libmicrohttpd's internal polling threads (epoll where available),
 * the connection limit and timeout of the config.  Requests are answered
 * from the moment it returns: /healthz at once, the rest 503 until s->ready. */
vit_status srv_http_start(srv *s, srv_http **out, int *port, vit_error *err);

/* Stops accepting connections (open ones may finish). */
void srv_http_quiesce(srv_http *h);

/* Requests admitted to the pipeline and not yet answered. */
int srv_http_active(srv_http *h);

/* Closes every connection and joins the HTTP threads. */
void srv_http_stop(srv_http *h);

#endif
