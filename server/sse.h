/*
 * sse.h - a fine-tune job's events as a live text/event-stream
 * (GET /v1/finetune/{id}/events with Accept: text/event-stream).
 *
 * A stream is a libmicrohttpd response whose content reader frames the
 * job's events after a cursor (jobs_event_frames).  When there is nothing
 * new it suspends its connection and returns 0 -- the pattern microhttpd.h
 * prescribes instead of a busy loop -- and sse_hub_notify (a job appended an
 * event) or the hub's ticker (every few seconds, for the keep-alive comment
 * and to notice a client that left) resumes it.  The stream ends after the
 * job's final event, when the server drains, or when the client goes.
 * Streams are bounded in number (SSE_MAX_STREAMS: 503 beyond).
 */
#ifndef VIT_SERVER_SSE_H
#define VIT_SERVER_SSE_H

#include <stdbool.h>

#include <microhttpd.h>

#include "jobs.h"
#include "status.h"

#define SSE_MAX_STREAMS 64
#define SSE_KEEPALIVE_S 15.0

typedef struct sse_hub sse_hub;

vit_status sse_hub_create(jobs *j, sse_hub **out, vit_error *err);

/* A job appended an event: every waiting stream looks again. */
void sse_hub_notify(sse_hub *h);

/* Ends every stream at its next wake-up and wakes them all (drain). */
void sse_hub_close_streams(sse_hub *h);

/* The number of streams open. */
int sse_hub_streams(sse_hub *h);

/* Stops the ticker and frees the hub; the streams must have ended (the
 * daemon stopped).  NULL is a no-op. */
void sse_hub_free(sse_hub *h);

/* Queues on conn a 200 text/event-stream response for job id's events after
 * `after`, with header X-Request-Id: request_id.  MHD_NO when the response
 * cannot be made; *full when SSE_MAX_STREAMS are open (nothing queued). */
enum MHD_Result sse_respond(sse_hub *h, struct MHD_Connection *conn, const char *id, long after,
                            const char *request_id, bool *full);

#endif
