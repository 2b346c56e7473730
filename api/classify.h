/*
 * classify.h - POST /v1/classify without the I/O: the request, parsed from
 * each of its three forms, and the reply, built from the logits (DESIGN.md
 * section 4, issue 8 items 4 and 5).
 *
 * The server reads the body (JSON, multipart fields, or a raw image body),
 * calls one api_classify_from_* to get an api_classify_req, fetches URLs,
 * decodes, runs the model, and then builds each result with
 * api_classify_result and the body with api_classify_reply.  Nothing here
 * touches a socket, a file, the model or a global: any thread may call it.
 *
 *   api_classify_req q;
 *   if (api_classify_from_json(&q, body, len, &lim, &reply) != 0)
 *       return;                       // reply holds the 4xx
 *   ...  results[i * T + j] = api_classify_result(name, labels, row, K, q.top_k);
 *   api_json(&reply, 200, api_classify_reply(&q, results, T));
 *   api_classify_req_free(&q);
 *
 * ---- What a request may hold, and what each refusal answers ----
 * Every refusal fills the api_reply with {"error": {"code", "message"}}; the
 * message names the field ("images[3]: invalid base64 ...").
 *
 *   400 bad_json          the body is not JSON, or not an object (the message
 *                         carries jansson's line:column); duplicate keys too
 *   400 invalid_request   an unknown key or form field; "image" and "images"
 *                         both or neither; "task" and "tasks" both; a value
 *                         of the wrong type (image not a string, top_k not a
 *                         JSON integer, tasks not an array of strings); an
 *                         empty "images" or "tasks" array; an empty image;
 *                         a form top_k that is not a decimal integer; a form
 *                         field given twice that may appear once; an empty
 *                         raw body
 *   400 invalid_base64    a character outside the alphabet, misplaced or
 *                         excess '=' padding, a length that no encoding has
 *   400 invalid_data_uri  a data: URI that is not data:[<type>];base64,<data>
 *   400 invalid_url       an http(s) URL over API_CLASSIFY_MAX_URL bytes, or
 *                         not http(s)://<something> ("http:x", "https://")
 *   400 url_forbidden     any other scheme ("file:", "ftp://", "gopher://")
 *   413 too_many_images   more images than lim->max_images
 *   413 too_many_tasks    more task names than lim->max_tasks
 *   413 image_too_large   an image of more than lim->max_image_bytes decoded
 *                         bytes (base64: known from its length, refused
 *                         before anything is allocated)
 *   422 invalid_top_k     top_k outside [1, lim->max_top_k]
 *   422 invalid_task_name a name task_name_valid refuses (engine/task.h)
 *   422 duplicate_task    one task named twice (it would run twice for
 *                         nothing, and a client that sends it has a bug)
 *
 * An "image" string is, in this order of tests:
 *   - http:// or https:// (scheme case-insensitive): a URL, kept verbatim for
 *     the fetcher, which parses and guards it (only its scheme and length are
 *     checked here);
 *   - another scheme (letters, digits, '+', '-', '.' then ':'): "data:" is a
 *     data URI, anything else is url_forbidden -- a ':' is never base64, so
 *     this takes nothing from base64;
 *   - otherwise bare base64.
 * Base64 (also inside data URIs): the standard alphabet and the URL-safe one
 * ('-' for '+', '_' for '/'), either, per character; '=' padding optional,
 * but when present it must be right (only at the end, completing a group of
 * 4); ASCII whitespace (space, tab, CR, LF) anywhere is skipped, as encoders
 * wrap lines; unused bits of the last character are ignored, as most
 * decoders do.  A data URI's media type is not checked (browsers send
 * application/octet-stream for files they do not know): the decoder judges
 * the bytes.
 *
 * JSON: a key whose value is null counts as absent (clients that serialise
 * every optional field send "task": null).  Forms and raw query arguments:
 * an empty task / tasks / top_k value counts as absent (HTML forms send empty
 * fields).  "tasks" as a form field or query argument is comma-separated,
 * with spaces around each name trimmed.
 */
#ifndef VIT_API_CLASSIFY_H
#define VIT_API_CLASSIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "api.h"

#define API_CLASSIFY_DEFAULT_TOP_K 5
#define API_CLASSIFY_MAX_URL 8192 /* bytes in an image URL */

/* The server's bounds on one request (from its config).  Each must be >= 1. */
typedef struct api_classify_limits {
    int max_images;         /* images per request */
    size_t max_image_bytes; /* decoded bytes of one image */
    int max_tasks;          /* task names per request, e.g. 32 */
    int max_top_k;          /* largest top_k accepted */
} api_classify_limits;

typedef enum api_image_kind { API_IMAGE_BYTES, API_IMAGE_URL } api_image_kind;

/* One image of a request: its encoded file bytes, or a URL to fetch. */
typedef struct api_image_src {
    api_image_kind kind;
    uint8_t *bytes; /* BYTES: owned, len >= 1 bytes (not decoded: a PNG, a JPEG...) */
    size_t len;
    char *url;      /* URL: owned, NUL-terminated, scheme http or https, <= API_CLASSIFY_MAX_URL */
} api_image_src;

/* A parsed classify request.  Owns everything it points to. */
typedef struct api_classify_req {
    api_image_src *images; /* in request order */
    int num_images;        /* >= 1 after a successful parse */
    char **tasks;          /* each passed task_name_valid; no two equal */
    int num_tasks;         /* 0: none named (server uses default_task, else the backbone's head) */
    int top_k;             /* in [1, max_top_k]; default 5 (max_top_k if smaller); the server
                              clamps it to K */
    bool images_form;      /* {"images": [...]} (or several form files): reply {"results": [...]} */
    bool tasks_form;       /* {"tasks": [...]} (or several "task" fields): one result per task */
} api_classify_req;

/* Frees everything q owns and empties it (safe on an empty q, twice too). */
void api_classify_req_free(api_classify_req *q);

/* Parses a JSON body of len bytes (need not be NUL-terminated):
 *   {"image": str, "task"?: str, "top_k"?: int}
 * with "images": [str, ...] instead of "image" and/or "tasks": [str, ...]
 * instead of "task".  Returns 0 with q filled (caller frees with
 * api_classify_req_free), or -1 with q empty and r holding the 4xx (or a 500
 * "internal" when memory ran out).  q is overwritten, not freed, on entry. */
int api_classify_from_json(api_classify_req *q, const char *body, size_t len,
                           const api_classify_limits *lim, api_reply *r);

/* One multipart/form-data field as the server's MHD_PostProcessor collected
 * it: name (NUL-terminated), the value's bytes, and whether it came with a
 * filename (a file upload). */
typedef struct api_form_part {
    const char *name;
    const uint8_t *data;
    size_t len;
    bool is_file;
} api_form_part;

/* Builds the request from n form fields:
 *   "image"  one or more (several -> images_form).  A file field's bytes are
 *            the image.  A non-file field is read as a JSON "image" string
 *            when it starts with a URI scheme and "://" (http://, ftp://...)
 *            or with data: (any case), else its bytes are the image, as
 *            `curl -F 'image=<photo.jpg'` sends them (bare base64 is
 *            therefore not a form value);
 *   "task"   repeatable (several -> tasks_form);
 *   "tasks"  once, comma-separated (-> tasks_form); not with "task";
 *   "top_k"  once, a decimal integer.
 * Any other field is refused (400 invalid_request).  Returns and fills as
 * api_classify_from_json; the data is copied. */
int api_classify_from_form(api_classify_req *q, const api_form_part *parts, int n,
                           const api_classify_limits *lim, api_reply *r);

/* Builds the request from a raw image body (Content-Type image/...) of len bytes (copied) and the
 * query arguments task, tasks (comma-separated) and top_k, each NULL when
 * absent.  Returns and fills as api_classify_from_json. */
int api_classify_from_raw(api_classify_req *q, const uint8_t *body, size_t len, const char *task,
                          const char *tasks, const char *top_k, const api_classify_limits *lim,
                          api_reply *r);

/* Indices of the k most probable of probs[0..K) (1 <= k <= K) into
 * idx[0..k), best first, ties to the lower index: the order of every reply
 * (`vitfit classify` uses it too).  0, or -1 when out of memory. */
int api_classify_top_k(const float *probs, int K, int k, int *idx);

/* One result: {"task": task or null, "labels": [...], "scores": [...]}, the
 * min(top_k, K) most probable classes best first (ties: the lower index
 * first), scores = vit_softmax(logits) -- the numbers `vitfit classify
 * --json` prints, bit for bit.  labels[0..K) are shown as valid UTF-8
 * (api_json_text).  K >= 1 and top_k >= 1 (a broken caller aborts).
 * Returns a new reference, or NULL when memory ran out or a logit or
 * probability is not finite (the caller answers 500 "non_finite"). */
json_t *api_classify_result(const char *task, const char *const *labels, const float *logits,
                            int K, int top_k);

/* The reply body for q from its results: results[i * num_tasks_used + j]
 * is image i through task j, num_tasks_used = max(1, q->num_tasks).
 *   one image, no tasks_form   -> results[0] itself
 *   tasks_form                 -> {"results": [per task]}
 *   images_form                -> {"results": [per image]}, each per-image
 *                                 entry the result object, or
 *                                 {"results": [per task]} with tasks_form
 * Takes every reference in results (also on failure; NULL entries allowed).
 * Returns a new reference, or NULL when an entry is NULL or memory ran out. */
json_t *api_classify_reply(const api_classify_req *q, json_t **results, int num_tasks_used);

/* ---- for the other encodings of a classify request (api/kserve.c) ---- */

/* One image string read as a JSON "image" is (a URL, a data URI or bare
 * base64, by the rules above) into out; field names it in messages.  0, or
 * -1 with r filled. */
int api_classify_image_text(const char *s, size_t n, const char *field,
                            const api_classify_limits *lim, api_image_src *out, api_reply *r);

/* Raw image bytes data[0..len) copied into out: empty is 400
 * invalid_request, over lim->max_image_bytes 413 image_too_large.  0, or -1
 * with r filled. */
int api_classify_image_bytes(const uint8_t *data, size_t len, const char *field,
                             const api_classify_limits *lim, api_image_src *out, api_reply *r);

/* Whether the JSON text s[0..len) holds at most max_values values and nests
 * at most max_depth deep, counted without parsing it (a bound on what
 * jansson would allocate; see classify.c). */
bool api_json_shape_within(const char *s, size_t len, size_t max_values, int max_depth);

#endif
