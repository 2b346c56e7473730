/*
 * status.h - the engine's error model.
 *
 * Everything a user, a file or the network can cause is reported by returning a
 * vit_status and filling a vit_error with one human sentence.  Bugs (broken
 * invariants) use VIT_ASSERT and abort with file:line.  Nothing in engine/ ever
 * calls exit().
 */
#ifndef VIT_STATUS_H
#define VIT_STATUS_H

#include <stdio.h>
#include <stdlib.h>

typedef enum vit_status {
    VIT_OK = 0,
    VIT_ERR_INVALID,     /* bad argument or value (caller's fault) */
    VIT_ERR_IO,          /* open/read/write/mmap failed */
    VIT_ERR_NOMEM,       /* allocation failed */
    VIT_ERR_FORMAT,      /* malformed file or data */
    VIT_ERR_UNSUPPORTED, /* well-formed but not something we handle */
    VIT_ERR_TOO_LARGE,   /* over a configured or hard size limit */
    VIT_ERR_NOT_FOUND,   /* missing file, tensor or key */
    VIT_ERR_MISMATCH,    /* shapes or fingerprints disagree */
} vit_status;

/* An error report: the status plus one sentence for a log line or a JSON reply. */
typedef struct vit_error {
    vit_status code;
    char message[512];
} vit_error;

/* Fills err (if not NULL) and returns code, so callers can write
 * `return vit_error_set(err, VIT_ERR_IO, "cannot open %s", path);`. */
vit_status vit_error_set(vit_error *err, vit_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes an existing message with context ("loading model.safetensors: ..."). */
vit_status vit_error_prefix(vit_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Short stable name of a status, e.g. "format". */
const char *vit_status_name(vit_status code);

/* Broken invariant: a bug in vitfit, not a user error. */
#define VIT_ASSERT(cond)                                                        \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                     \
            abort();                                                            \
        }                                                                       \
    } while (0)

#endif
