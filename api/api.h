/*
 * api.h - what every route handler shares: the reply it fills and the error
 * model (DESIGN.md section 4).
 *
 * A handler never writes to a socket.  It fills an api_reply -- status, one
 * body, the few headers a reply may need -- and the front end (server/http.c)
 * sends it.  Every failure is {"error": {"code": "snake_case", "message":
 * "human sentence"}} with a 4xx/5xx status; api_error builds it, so no
 * handler formats an error body by hand.
 */
#ifndef VIT_API_API_H
#define VIT_API_API_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "status.h"

/* One HTTP reply.  The body is owned (api_reply_free). */
typedef struct api_reply {
    int status;               /* HTTP status code; 0 = not filled yet */
    const char *content_type; /* a static string */
    char *body;               /* malloc'd; NULL for no body */
    size_t body_len;
    int retry_after_s;        /* > 0: send Retry-After (429, 503) */
    char allow[64];           /* non-empty: send Allow (405) */
    char location[96];        /* non-empty: send Location (201) */
    size_t infer_header_len;  /* > 0: send Inference-Header-Content-Length (KServe V2 binary
                                 data: the body's JSON part) */
} api_reply;

#define API_JSON_TYPE "application/json; charset=utf-8"

/* An empty reply (status 0, no body). */
void api_reply_init(api_reply *r);
/* Frees the body and empties r. */
void api_reply_free(api_reply *r);

/* Fills r with status and the error body {"error": {"code", "message"}};
 * any previous body is freed.  code is a snake_case constant; the message is
 * formatted from fmt and made valid UTF-8.  Returns -1, so a handler can
 * `return api_error(r, 400, "bad_json", "...")`. */
int api_error(api_reply *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* api_error with a third member, "field": the request's key at fault (a
 * validation error names the field, as hosted APIs' "param" does). */
int api_error_field(api_reply *r, int status, const char *code, const char *field,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Fills r with status and j serialised compactly (takes the reference to j;
 * j == NULL, or a failed dump, becomes a 500 "internal" error).  Returns 0 on
 * success, -1 when it answered the 500. */
int api_json(api_reply *r, int status, json_t *j);

/* The HTTP status and error code that an engine failure maps to when the
 * client's input caused it (a bad image, a bad task file): INVALID/FORMAT ->
 * 400/422-ish codes, TOO_LARGE -> 413, NOT_FOUND -> 404, NOMEM/IO -> 500...
 * See api.c for the table. */
int api_status_of(vit_status st);
const char *api_code_of(vit_status st);

/* api_error(r, api_status_of(err->code), api_code_of(err->code), "%s", message). */
int api_engine_error(api_reply *r, const vit_error *err);

/* A JSON string of s in which bytes that are not valid UTF-8 become U+FFFD;
 * NULL only when out of memory or s is NULL. */
json_t *api_json_text(const char *s);

#endif
