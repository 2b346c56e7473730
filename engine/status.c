/* status.c - vit_error helpers (see status.h). */
#include "status.h"

#include <stdarg.h>
#include <string.h>

vit_status vit_error_set(vit_error *err, vit_status code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

vit_status vit_error_prefix(vit_error *err, const char *fmt, ...)
{
    if (!err)
        return VIT_ERR_INVALID;
    char prefix[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    char old[sizeof err->message];
    memcpy(old, err->message, sizeof old);
    /* truncation of an over-long message is acceptable; keep the prefix */
    int n = snprintf(err->message, sizeof err->message, "%s: ", prefix);
    if (n > 0 && (size_t)n < sizeof err->message)
        snprintf(err->message + n, sizeof err->message - (size_t)n, "%.*s",
                 (int)(sizeof err->message - (size_t)n - 1), old);
    return err->code;
}

const char *vit_status_name(vit_status code)
{
    switch (code) {
    case VIT_OK: return "ok";
    case VIT_ERR_INVALID: return "invalid";
    case VIT_ERR_IO: return "io";
    case VIT_ERR_NOMEM: return "nomem";
    case VIT_ERR_FORMAT: return "format";
    case VIT_ERR_UNSUPPORTED: return "unsupported";
    case VIT_ERR_TOO_LARGE: return "too_large";
    case VIT_ERR_NOT_FOUND: return "not_found";
    case VIT_ERR_MISMATCH: return "mismatch";
    }
    return "unknown";
}
