/*
 * api.c - the reply and the error model shared by every handler (api.h).
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "utf8.h"

void api_reply_init(api_reply *r)
{
    memset(r, 0, sizeof *r);
}

void api_reply_free(api_reply *r)
{
    free(r->body);
    api_reply_init(r);
}

/* Copy of s with every byte outside valid UTF-8 replaced by U+FFFD: file
 * names and engine messages may quote raw bytes, and jansson refuses them. */
static char *valid_utf8(const char *s)
{
    size_t n = strlen(s), o = 0;
    char *out = malloc(3 * n + 1); /* each bad byte grows to 3 */
    if (!out)
        return NULL;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = utf8_sequence((const unsigned char *)s + i, n - i, &cp);
        if (len == 0) {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, s + i, len);
            o += len;
            i += len;
        }
    }
    out[o] = '\0';
    return out;
}

json_t *api_json_text(const char *s)
{
    if (!s)
        return NULL;
    char *clean = valid_utf8(s);
    json_t *j = clean ? json_string(clean) : NULL;
    free(clean);
    return j;
}

/* The last resort when even an error body cannot be built: a fixed text. */
static void internal_error(api_reply *r)
{
    static const char body[] =
        "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory building the reply\"}}";
    free(r->body);
    r->status = 500;
    r->content_type = API_JSON_TYPE;
    r->body = malloc(sizeof body);
    r->body_len = r->body ? sizeof body - 1 : 0;
    if (r->body)
        memcpy(r->body, body, sizeof body);
}

int api_json(api_reply *r, int status, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(j);
    if (!text) {
        internal_error(r);
        return -1;
    }
    free(r->body);
    r->status = status;
    r->content_type = API_JSON_TYPE;
    r->body = text;
    r->body_len = strlen(text);
    return 0;
}

static int error_reply(api_reply *r, int status, const char *code, const char *field,
                       const char *fmt, va_list ap)
{
    char message[1024];
    vsnprintf(message, sizeof message, fmt, ap);
    json_t *j = json_pack("{s:{s:s,s:o*,s:o*}}", "error", "code", code, "message",
                          api_json_text(message), "field", field ? api_json_text(field) : NULL);
    if (api_json(r, status, j) == 0)
        r->status = status;
    return -1;
}

int api_error(api_reply *r, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = error_reply(r, status, code, NULL, fmt, ap);
    va_end(ap);
    return rc;
}

int api_error_field(api_reply *r, int status, const char *code, const char *field,
                    const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = error_reply(r, status, code, field, fmt, ap);
    va_end(ap);
    return rc;
}

int api_status_of(vit_status st)
{
    switch (st) {
    case VIT_OK:
        return 200;
    case VIT_ERR_INVALID:
    case VIT_ERR_FORMAT:
        return 400;
    case VIT_ERR_UNSUPPORTED:
        return 415;
    case VIT_ERR_TOO_LARGE:
        return 413;
    case VIT_ERR_NOT_FOUND:
        return 404;
    case VIT_ERR_MISMATCH:
        return 422;
    case VIT_ERR_IO:
    case VIT_ERR_NOMEM:
        return 500;
    }
    return 500;
}

const char *api_code_of(vit_status st)
{
    switch (st) {
    case VIT_OK:
        return "ok";
    case VIT_ERR_INVALID:
        return "invalid_request";
    case VIT_ERR_FORMAT:
        return "bad_format";
    case VIT_ERR_UNSUPPORTED:
        return "unsupported_image";
    case VIT_ERR_TOO_LARGE:
        return "too_large";
    case VIT_ERR_NOT_FOUND:
        return "not_found";
    case VIT_ERR_MISMATCH:
        return "mismatch";
    case VIT_ERR_IO:
        return "io_error";
    case VIT_ERR_NOMEM:
        return "out_of_memory";
    }
    return "internal";
}

int api_engine_error(api_reply *r, const vit_error *err)
{
    return api_error(r, api_status_of(err->code), api_code_of(err->code), "%s", err->message);
}
