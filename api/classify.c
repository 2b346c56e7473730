/*
 * classify.c - POST /v1/classify: the request from JSON, form fields or a raw
 * body, and the reply from the logits (classify.h has the rules and codes).
 *
 * Parsing is a list of checks, each answering its 4xx and returning -1; the
 * cheap ones (keys, types, top_k, task names, counts) run before any image
 * is decoded or copied.  A request under construction lives in the caller's
 * api_classify_req; every failure path frees it, so -1 always leaves it empty.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "classify.h"
#include "task.h"
#include "vit.h"

/* ======================================================================== */
/* the request                                                              */
/* ======================================================================== */

void api_classify_req_free(api_classify_req *q)
{
    for (int i = 0; q->images && i < q->num_images; i++) {
        free(q->images[i].bytes);
        free(q->images[i].url);
    }
    free(q->images);
    for (int i = 0; q->tasks && i < q->num_tasks; i++)
        free(q->tasks[i]);
    free(q->tasks);
    memset(q, 0, sizeof *q);
}

/* Empties q to the defaults a parse starts from. */
static void req_start(api_classify_req *q, const api_classify_limits *lim)
{
    VIT_ASSERT(lim && lim->max_images >= 1 && lim->max_image_bytes >= 1 && lim->max_tasks >= 1 &&
               lim->max_top_k >= 1);
    memset(q, 0, sizeof *q);
    q->top_k = API_CLASSIFY_DEFAULT_TOP_K < lim->max_top_k ? API_CLASSIFY_DEFAULT_TOP_K
                                                           : lim->max_top_k;
}

/* The failure exit of a parse: frees q, returns -1 (r already filled). */
static int req_fail(api_classify_req *q)
{
    api_classify_req_free(q);
    return -1;
}

static int out_of_memory(api_reply *r)
{
    return api_error(r, 500, "internal", "out of memory reading the request");
}

/* Makes room for n images in q (all empty).  0, or -1 with r filled. */
static int images_alloc(api_classify_req *q, int n, api_reply *r)
{
    q->images = calloc((size_t)n, sizeof *q->images);
    if (!q->images)
        return out_of_memory(r);
    q->num_images = n;
    return 0;
}

/* c as text for a message: 'c' when printable ASCII, else \xHH. */
static const char *shown_char(unsigned char c, char buf[8])
{
    if (c >= 0x20 && c < 0x7f && c != '\'')
        snprintf(buf, 8, "'%c'", c);
    else
        snprintf(buf, 8, "\\x%02X", c);
    return buf;
}

/* ======================================================================== */
/* base64                                                                   */
/* ======================================================================== */

/* Value of a base64 character in either alphabet (standard or URL-safe), or
 * -1.  ref: RFC 4648 sections 4 and 5 */
static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

static bool b64_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Decodes the n bytes at s (classify.h: either alphabet, optional but exact
 * padding, whitespace skipped) into a new buffer of at most max bytes.
 * field names the value in messages.  0 with *out (caller frees) and *out_len
 * >= 1; -1 with r filled: invalid_base64, image_too_large (decided from the
 * length, before allocating), or an empty image. */
static int b64_decode(const char *s, size_t n, const char *field, size_t max, uint8_t **out,
                      size_t *out_len, api_reply *r)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t data = 0, pad = 0; /* characters of each kind */
    char shown[8];
    for (size_t i = 0; i < n; i++) {
        if (b64_space(p[i]))
            continue;
        if (p[i] == '=') {
            if (++pad > 2)
                return api_error(r, 400, "invalid_base64",
                                 "%s: invalid base64: more than two '=' at offset %zu", field, i);
        } else if (b64_value(p[i]) < 0) {
            return api_error(r, 400, "invalid_base64",
                             "%s: invalid base64: character %s at offset %zu", field,
                             shown_char(p[i], shown), i);
        } else if (pad) {
            return api_error(r, 400, "invalid_base64",
                             "%s: invalid base64: data after '=' padding at offset %zu", field, i);
        } else {
            data++;
        }
    }
    if (data == 0 && pad == 0)
        return api_error(r, 400, "invalid_request", "%s: empty image", field);
    if (data % 4 == 1 || (pad && (data + pad) % 4 != 0))
        return api_error(r, 400, "invalid_base64",
                         "%s: invalid base64: %zu characters and %zu '=' do not form groups of 4",
                         field, data, pad);
    size_t len = data / 4 * 3 + (data % 4 == 3 ? 2 : data % 4 == 2 ? 1 : 0);
    if (len > max)
        return api_error(r, 413, "image_too_large",
                         "%s: the image is %zu bytes, more than the limit of %zu", field, len, max);
    uint8_t *buf = malloc(len);
    if (!buf)
        return out_of_memory(r);
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_value(p[i]);
        if (v < 0) /* whitespace or padding: checked above */
            continue;
        acc = (acc << 6 | (uint32_t)v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (uint8_t)(acc >> bits);
        }
    }
    VIT_ASSERT(o == len);
    *out = buf;
    *out_len = len;
    return 0;
}

/* ======================================================================== */
/* one image value                                                          */
/* ======================================================================== */

/* Length of the URI scheme at the start of s (RFC 3986: a letter, then
 * letters, digits, '+', '-', '.'), when a ':' follows it; else 0. */
static size_t scheme_len(const char *s, size_t n)
{
    if (n == 0 || !isalpha((unsigned char)s[0]))
        return 0;
    for (size_t i = 1; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == ':')
            return i;
        if (!isalnum(c) && c != '+' && c != '-' && c != '.')
            return 0;
    }
    return 0;
}

/* An http(s) URL of n bytes (after the scheme check) into out. */
static int image_url(const char *s, size_t n, size_t scheme, const char *field,
                     api_image_src *out, api_reply *r)
{
    if (n > API_CLASSIFY_MAX_URL)
        return api_error(r, 400, "invalid_url", "%s: the URL is %zu bytes, more than %d", field,
                         n, API_CLASSIFY_MAX_URL);
    if (n < scheme + 3 || memcmp(s + scheme, "://", 3) != 0 || n == scheme + 3)
        return api_error(r, 400, "invalid_url", "%s: '%.*s%s' is not an http(s) URL", field,
                         (int)(n < 32 ? n : 32), s, n > 32 ? "..." : "");
    if (memchr(s, '\0', n))
        return api_error(r, 400, "invalid_url", "%s: the URL holds a NUL byte", field);
    out->url = malloc(n + 1);
    if (!out->url)
        return out_of_memory(r);
    memcpy(out->url, s, n);
    out->url[n] = '\0';
    out->kind = API_IMAGE_URL;
    return 0;
}

/* A data URI, data:[<type>][;param]*;base64,<data>, into out. */
static int image_data_uri(const char *s, size_t n, const char *field, size_t max,
                          api_image_src *out, api_reply *r)
{
    const char *comma = memchr(s, ',', n);
    static const char marker[] = ";base64";
    size_t head = comma ? (size_t)(comma - s) : 0; /* "data:...;base64" */
    size_t m = sizeof marker - 1;
    if (!comma || head < 5 + m || strncasecmp(comma - m, marker, m) != 0)
        return api_error(r, 400, "invalid_data_uri",
                         "%s: a data URI must be data:<type>;base64,<data>", field);
    out->kind = API_IMAGE_BYTES;
    return b64_decode(comma + 1, n - head - 1, field, max, &out->bytes, &out->len, r);
}

/* One "image" string of n bytes (classify.h: URL, data URI or bare base64)
 * into out.  field names it in messages.  0, or -1 with r filled. */
static int image_from_text(const char *s, size_t n, const char *field,
                           const api_classify_limits *lim, api_image_src *out, api_reply *r)
{
    if (n == 0)
        return api_error(r, 400, "invalid_request", "%s: empty image", field);
    size_t scheme = scheme_len(s, n);
    if (scheme == 0) {
        out->kind = API_IMAGE_BYTES;
        return b64_decode(s, n, field, lim->max_image_bytes, &out->bytes, &out->len, r);
    }
    if ((scheme == 4 && strncasecmp(s, "http", 4) == 0) ||
        (scheme == 5 && strncasecmp(s, "https", 5) == 0))
        return image_url(s, n, scheme, field, out, r);
    if (scheme == 4 && strncasecmp(s, "data", 4) == 0)
        return image_data_uri(s, n, field, lim->max_image_bytes, out, r);
    return api_error(r, 400, "url_forbidden",
                     "%s: '%.*s:' URLs are not allowed; only http and https", field,
                     (int)(scheme < 32 ? scheme : 32), s);
}

/* Raw image bytes (a file field, a raw body) copied into out. */
static int image_from_bytes(const uint8_t *data, size_t len, const char *field,
                            const api_classify_limits *lim, api_image_src *out, api_reply *r)
{
    if (len == 0)
        return api_error(r, 400, "invalid_request", "%s: empty image", field);
    if (len > lim->max_image_bytes)
        return api_error(r, 413, "image_too_large",
                         "%s: the image is %zu bytes, more than the limit of %zu", field, len,
                         lim->max_image_bytes);
    out->bytes = malloc(len);
    if (!out->bytes)
        return out_of_memory(r);
    memcpy(out->bytes, data, len);
    out->len = len;
    out->kind = API_IMAGE_BYTES;
    return 0;
}

/* ======================================================================== */
/* task names and top_k                                                     */
/* ======================================================================== */

/* Appends the task name s[0..n) to q after checking it: the count against
 * lim->max_tasks (413 too_many_tasks), the name (422 invalid_task_name), and
 * that q does not hold it yet (422 duplicate_task).  0, or -1 with r filled. */
static int task_add(api_classify_req *q, const char *s, size_t n, const char *field,
                    const api_classify_limits *lim, api_reply *r)
{
    if (q->num_tasks >= lim->max_tasks)
        return api_error(r, 413, "too_many_tasks", "more than %d tasks in one request",
                         lim->max_tasks);
    char name[TASK_NAME_MAX + 1];
    bool ok = n <= TASK_NAME_MAX && !memchr(s, '\0', n);
    if (ok) {
        memcpy(name, s, n);
        name[n] = '\0';
        ok = task_name_valid(name);
    }
    if (!ok)
        return api_error(r, 422, "invalid_task_name",
                         "%s: '%.*s' is not a task name (1 to %d of a-z 0-9 . _ -, starting with "
                         "a letter or digit)",
                         field, (int)(n < 64 ? n : 64), s, TASK_NAME_MAX);
    for (int i = 0; i < q->num_tasks; i++)
        if (strcmp(q->tasks[i], name) == 0)
            return api_error(r, 422, "duplicate_task", "%s: task '%s' is named twice", field,
                             name);
    if ((q->num_tasks & (q->num_tasks - 1)) == 0) { /* 0, 1, 2, 4...: grow */
        size_t cap = q->num_tasks ? 2 * (size_t)q->num_tasks : 1;
        char **grown = realloc(q->tasks, cap * sizeof *grown);
        if (!grown)
            return out_of_memory(r);
        q->tasks = grown;
    }
    q->tasks[q->num_tasks] = strdup(name);
    if (!q->tasks[q->num_tasks])
        return out_of_memory(r);
    q->num_tasks++;
    return 0;
}

/* Appends each name of the comma-separated list s[0..n) (spaces around a
 * name trimmed; an empty name is refused) to q. */
static int task_add_list(api_classify_req *q, const char *s, size_t n,
                         const api_classify_limits *lim, api_reply *r)
{
    for (size_t at = 0, index = 0;; index++) {
        const char *comma = memchr(s + at, ',', n - at);
        size_t end = comma ? (size_t)(comma - s) : n, b = at, e = end;
        while (b < e && s[b] == ' ')
            b++;
        while (e > b && s[e - 1] == ' ')
            e--;
        char field[32];
        snprintf(field, sizeof field, "tasks[%zu]", index);
        if (task_add(q, s + b, e - b, field, lim, r) != 0)
            return -1;
        if (!comma)
            return 0;
        at = end + 1;
    }
}

/* top_k from a JSON integer v. */
static int top_k_check(long long v, const char *shown, const api_classify_limits *lim,
                       api_classify_req *q, api_reply *r)
{
    if (v < 1 || v > lim->max_top_k)
        return api_error(r, 422, "invalid_top_k", "top_k: %s is not in [1, %d]", shown,
                         lim->max_top_k);
    q->top_k = (int)v;
    return 0;
}

/* top_k from the text s[0..n) of a form field or query argument: an
 * optional sign and decimal digits, nothing else. */
static int top_k_text(const char *s, size_t n, const api_classify_limits *lim,
                      api_classify_req *q, api_reply *r)
{
    size_t i = n > 0 && (s[0] == '-' || s[0] == '+') ? 1 : 0;
    bool digits = i < n;
    long long v = 0;
    for (; digits && i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            digits = false;
        else if (v <= (long long)lim->max_top_k) /* saturates past any limit */
            v = v * 10 + (s[i] - '0');
    }
    if (!digits)
        return api_error(r, 400, "invalid_request", "top_k: '%.*s' is not an integer",
                         (int)(n < 32 ? n : 32), s);
    if (s[0] == '-')
        v = -v;
    char shown[40];
    snprintf(shown, sizeof shown, "%.*s", (int)(n < 32 ? n : 32), s);
    return top_k_check(v, shown, lim, q, r);
}

/* ======================================================================== */
/* JSON                                                                     */
/* ======================================================================== */

/* The value of key in o, NULL when absent or null. */
static json_t *member(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_null(v) ? NULL : v;
}

static const char *const json_keys[] = {"image", "images", "task", "tasks", "top_k"};

/* Counts the values of a JSON text (commas and openings outside strings, a
 * bound on what jansson would allocate) and its deepest nesting, stopping as
 * soon as either passes its cap.  Why before parsing: 32 MiB of "[0,0,..."
 * is 16M values, ~700 MB of jansson objects and seconds of CPU, for a request
 * that may name at most a few dozen.  Returns false when over a cap. */
static bool json_shape_within(const char *s, size_t len, size_t max_values, int max_depth)
{
    size_t values = 1;
    int depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = false;
            continue;
        }
        if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max_depth)
                return false;
            values++;
        } else if (c == ']' || c == '}') {
            depth--;
        } else if (c == ',') {
            if (++values > max_values)
                return false;
        }
    }
    return true;
}

int api_classify_from_json(api_classify_req *q, const char *body, size_t len,
                           const api_classify_limits *lim, api_reply *r)
{
    req_start(q, lim);
    /* a valid request holds its images, its tasks and a few keys */
    size_t max_values = (size_t)lim->max_images + (size_t)lim->max_tasks + 16;
    if (!json_shape_within(body, len, max_values, 8))
        return api_error(r, 413, "too_many_values",
                         "the JSON body holds more values (or deeper nesting) than a request of "
                         "%d images and %d tasks can",
                         lim->max_images, lim->max_tasks);
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return api_error(r, 400, "bad_json", "the body is not JSON: line %d, column %d: %s",
                         jerr.line, jerr.column, jerr.text);
    int rc = -1;
    if (!json_is_object(root)) {
        api_error(r, 400, "bad_json", "the body must be a JSON object");
        goto done;
    }
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
        size_t k = 0, nk = sizeof json_keys / sizeof json_keys[0];
        while (k < nk && strcmp(key, json_keys[k]) != 0)
            k++;
        if (k == nk) {
            api_error(r, 400, "invalid_request",
                      "unknown key '%.64s' (known: image, images, task, tasks, top_k)", key);
            goto done;
        }
    }
    json_t *image = member(root, "image"), *images = member(root, "images");
    json_t *task = member(root, "task"), *tasks = member(root, "tasks");
    json_t *top_k = member(root, "top_k");
    if ((image != NULL) == (images != NULL)) {
        api_error(r, 400, "invalid_request", "%s", image ? "give \"image\" or \"images\", not both"
                                                   : "no \"image\" (or \"images\") in the request");
        goto done;
    }
    if (task && tasks) {
        api_error(r, 400, "invalid_request", "give \"task\" or \"tasks\", not both");
        goto done;
    }

    if (top_k) {
        char shown[32];
        if (!json_is_integer(top_k)) {
            api_error(r, 400, "invalid_request", "top_k: must be an integer");
            goto done;
        }
        snprintf(shown, sizeof shown, "%" JSON_INTEGER_FORMAT, json_integer_value(top_k));
        if (top_k_check(json_integer_value(top_k), shown, lim, q, r) != 0)
            goto done;
    }

    if (task) {
        if (!json_is_string(task)) {
            api_error(r, 400, "invalid_request", "task: must be a string");
            goto done;
        }
        if (task_add(q, json_string_value(task), json_string_length(task), "task", lim, r) != 0)
            goto done;
    } else if (tasks) {
        if (!json_is_array(tasks)) {
            api_error(r, 400, "invalid_request", "tasks: must be an array of strings");
            goto done;
        }
        if (json_array_size(tasks) == 0) {
            api_error(r, 400, "invalid_request", "tasks: empty array");
            goto done;
        }
        if (json_array_size(tasks) > (size_t)lim->max_tasks) {
            api_error(r, 413, "too_many_tasks", "tasks: %zu tasks, more than %d",
                      json_array_size(tasks), lim->max_tasks);
            goto done;
        }
        size_t i;
        json_t *t;
        json_array_foreach(tasks, i, t) {
            char field[32];
            snprintf(field, sizeof field, "tasks[%zu]", i);
            if (!json_is_string(t)) {
                api_error(r, 400, "invalid_request", "%s: must be a string", field);
                goto done;
            }
            if (task_add(q, json_string_value(t), json_string_length(t), field, lim, r) != 0)
                goto done;
        }
        q->tasks_form = true;
    }

    if (image) {
        if (!json_is_string(image)) {
            api_error(r, 400, "invalid_request", "image: must be a string (a URL or base64)");
            goto done;
        }
        if (images_alloc(q, 1, r) != 0 ||
            image_from_text(json_string_value(image), json_string_length(image), "image", lim,
                            &q->images[0], r) != 0)
            goto done;
    } else {
        if (!json_is_array(images)) {
            api_error(r, 400, "invalid_request", "images: must be an array of strings");
            goto done;
        }
        size_t n = json_array_size(images);
        if (n == 0) {
            api_error(r, 400, "invalid_request", "images: empty array");
            goto done;
        }
        if (n > (size_t)lim->max_images) {
            api_error(r, 413, "too_many_images", "images: %zu images, more than %d", n,
                      lim->max_images);
            goto done;
        }
        if (images_alloc(q, (int)n, r) != 0)
            goto done;
        for (size_t i = 0; i < n; i++) {
            json_t *v = json_array_get(images, i);
            char field[32];
            snprintf(field, sizeof field, "images[%zu]", i);
            if (!json_is_string(v)) {
                api_error(r, 400, "invalid_request", "%s: must be a string (a URL or base64)",
                          field);
                goto done;
            }
            if (image_from_text(json_string_value(v), json_string_length(v), field, lim,
                                &q->images[i], r) != 0)
                goto done;
        }
        q->images_form = true;
    }
    rc = 0;
done:
    json_decref(root);
    return rc == 0 ? 0 : req_fail(q);
}

/* ======================================================================== */
/* multipart/form-data and raw bodies                                       */
/* ======================================================================== */

/* Is the form part p named name? */
static bool part_is(const api_form_part *p, const char *name)
{
    return p->name && strcmp(p->name, name) == 0;
}

int api_classify_from_form(api_classify_req *q, const api_form_part *parts, int n,
                           const api_classify_limits *lim, api_reply *r)
{
    req_start(q, lim);
    int num_images = 0, task_fields = 0;
    const api_form_part *tasks = NULL, *top_k = NULL;
    /* the cheap fields first: names, task names, top_k */
    for (int i = 0; i < n; i++) {
        const api_form_part *p = &parts[i];
        if (part_is(p, "image")) {
            num_images++;
        } else if (part_is(p, "task")) {
            if (p->len == 0)
                continue;
            task_fields++;
            if (task_add(q, (const char *)p->data, p->len, "task", lim, r) != 0)
                return req_fail(q);
        } else if (part_is(p, "tasks") || part_is(p, "top_k")) {
            const api_form_part **once = part_is(p, "tasks") ? &tasks : &top_k;
            if (*once) {
                api_error(r, 400, "invalid_request", "the field \"%s\" is given twice", p->name);
                return req_fail(q);
            }
            *once = p;
        } else {
            api_error(r, 400, "invalid_request",
                      "unknown form field '%.64s' (known: image, task, tasks, top_k)",
                      p->name ? p->name : "");
            return req_fail(q);
        }
    }
    if (tasks && tasks->len > 0) {
        if (task_fields > 0) {
            api_error(r, 400, "invalid_request", "give \"task\" or \"tasks\", not both");
            return req_fail(q);
        }
        if (task_add_list(q, (const char *)tasks->data, tasks->len, lim, r) != 0)
            return req_fail(q);
        q->tasks_form = true;
    }
    if (task_fields > 1)
        q->tasks_form = true;
    if (top_k && top_k->len > 0 &&
        top_k_text((const char *)top_k->data, top_k->len, lim, q, r) != 0)
        return req_fail(q);

    /* then the images */
    if (num_images == 0) {
        api_error(r, 400, "invalid_request", "no \"image\" field in the form");
        return req_fail(q);
    }
    if (num_images > lim->max_images) {
        api_error(r, 413, "too_many_images", "%d image fields, more than %d", num_images,
                  lim->max_images);
        return req_fail(q);
    }
    if (images_alloc(q, num_images, r) != 0)
        return req_fail(q);
    for (int i = 0, k = 0; i < n; i++) {
        const api_form_part *p = &parts[i];
        if (!part_is(p, "image"))
            continue;
        char field[32];
        if (num_images > 1)
            snprintf(field, sizeof field, "image[%d]", k);
        else
            snprintf(field, sizeof field, "image");
        const char *text = (const char *)p->data;
        size_t scheme = p->is_file ? 0 : scheme_len(text, p->len);
        bool is_text = scheme > 0 && ((p->len >= scheme + 3 &&
                                       memcmp(text + scheme, "://", 3) == 0) ||
                                      (scheme == 4 && strncasecmp(text, "data", 4) == 0));
        /* no image format starts with "xyz://" or "data:": a text field's
         * URL is never mistaken for an upload's bytes, nor the reverse */
        int rc = is_text ? image_from_text(text, p->len, field, lim, &q->images[k], r)
                         : image_from_bytes(p->data, p->len, field, lim, &q->images[k], r);
        if (rc != 0)
            return req_fail(q);
        k++;
    }
    q->images_form = num_images > 1;
    return 0;
}

int api_classify_from_raw(api_classify_req *q, const uint8_t *body, size_t len, const char *task,
                          const char *tasks, const char *top_k, const api_classify_limits *lim,
                          api_reply *r)
{
    req_start(q, lim);
    bool has_task = task && task[0], has_tasks = tasks && tasks[0];
    if (has_task && has_tasks) {
        api_error(r, 400, "invalid_request", "give the query argument task or tasks, not both");
        return req_fail(q);
    }
    if (has_task && task_add(q, task, strlen(task), "task", lim, r) != 0)
        return req_fail(q);
    if (has_tasks) {
        if (task_add_list(q, tasks, strlen(tasks), lim, r) != 0)
            return req_fail(q);
        q->tasks_form = true;
    }
    if (top_k && top_k[0] && top_k_text(top_k, strlen(top_k), lim, q, r) != 0)
        return req_fail(q);
    if (len == 0) {
        api_error(r, 400, "invalid_request", "the body is empty: send the image's bytes");
        return req_fail(q);
    }
    if (images_alloc(q, 1, r) != 0 || image_from_bytes(body, len, "body", lim, &q->images[0], r))
        return req_fail(q);
    return 0;
}

/* ======================================================================== */
/* for the other encodings (classify.h)                                     */
/* ======================================================================== */

int api_classify_image_text(const char *s, size_t n, const char *field,
                            const api_classify_limits *lim, api_image_src *out, api_reply *r)
{
    return image_from_text(s, n, field, lim, out, r);
}

int api_classify_image_bytes(const uint8_t *data, size_t len, const char *field,
                             const api_classify_limits *lim, api_image_src *out, api_reply *r)
{
    return image_from_bytes(data, len, field, lim, out, r);
}

bool api_json_shape_within(const char *s, size_t len, size_t max_values, int max_depth)
{
    return json_shape_within(s, len, max_values, max_depth);
}

/* ======================================================================== */
/* the reply                                                                */
/* ======================================================================== */

/* One class in the running top k. */
typedef struct ranked {
    float p;
    int i;
} ranked;

/* Best first; ties: the lower index first. */
static int ranked_cmp(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->p != y->p)
        return x->p > y->p ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

/* The k most probable of probs[0..K) into top[0..k), best first, ties to the
 * lower index.  One pass, each new entrant inserted in place: O(K) when few
 * enter, O(K k) at worst, so past a few dozen a sort takes over. */
static void top_k_select(const float *probs, int K, int k, ranked *top)
{
    if (k > 32) {
        /* insertion costs O(K k): past a few dozen, sort everything (top
         * then has room for only k, so sort a scratch copy) */
        ranked *all = malloc((size_t)K * sizeof *all);
        if (all) {
            for (int i = 0; i < K; i++)
                all[i] = (ranked){probs[i], i};
            qsort(all, (size_t)K, sizeof *all, ranked_cmp);
            memcpy(top, all, (size_t)k * sizeof *top);
            free(all);
            return;
        }
    }
    int count = 0;
    for (int i = 0; i < K; i++) {
        float p = probs[i];
        if (count == k && !(p > top[k - 1].p)) /* equal: the earlier index stays */
            continue;
        int at = count < k ? count : k - 1;
        while (at > 0 && top[at - 1].p < p) {
            top[at] = top[at - 1];
            at--;
        }
        top[at] = (ranked){p, i};
        if (count < k)
            count++;
    }
}

int api_classify_top_k(const float *probs, int K, int k, int *idx)
{
    VIT_ASSERT(probs && idx && K >= 1 && k >= 1 && k <= K);
    ranked *top = malloc((size_t)k * sizeof *top);
    if (!top)
        return -1;
    top_k_select(probs, K, k, top);
    for (int j = 0; j < k; j++)
        idx[j] = top[j].i;
    free(top);
    return 0;
}

json_t *api_classify_result(const char *task, const char *const *labels, const float *logits,
                            int K, int top_k)
{
    VIT_ASSERT(labels && logits && K >= 1 && top_k >= 1);
    int k = top_k < K ? top_k : K;
    for (int i = 0; i < K; i++)
        if (!isfinite(logits[i]))
            return NULL;
    float *probs = malloc((size_t)K * sizeof *probs);
    ranked *top = malloc((size_t)k * sizeof *top);
    json_t *obj = NULL;
    if (!probs || !top)
        goto done;
    vit_softmax(logits, K, probs);
    for (int i = 0; i < K; i++)
        if (!isfinite(probs[i]))
            goto done;
    top_k_select(probs, K, k, top);
    /* each json_*_new call takes its value, also on failure (or when obj
     * is NULL), so nothing leaks whatever fails */
    obj = json_object();
    json_t *lab = json_array(), *sc = json_array();
    bool ok = json_object_set_new(obj, "task", task ? api_json_text(task) : json_null()) == 0;
    ok = json_object_set_new(obj, "labels", lab) == 0 && ok;
    ok = json_object_set_new(obj, "scores", sc) == 0 && ok;
    for (int j = 0; ok && j < k; j++)
        ok = json_array_append_new(lab, api_json_text(labels[top[j].i])) == 0 &&
             json_array_append_new(sc, json_real(top[j].p)) == 0;
    if (!ok) {
        json_decref(obj);
        obj = NULL;
    }
done:
    free(probs);
    free(top);
    return obj;
}

/* A new {"results": [items[0..n)]}, taking each item's reference (also on
 * failure); NULL when an item is NULL or memory ran out. */
static json_t *results_of(json_t **items, int n)
{
    json_t *arr = json_array();
    bool ok = arr != NULL;
    for (int i = 0; i < n; i++) {
        if (ok && items[i])
            ok = json_array_append_new(arr, items[i]) == 0; /* takes it, even on failure */
        else
            ok = false, json_decref(items[i]);
        items[i] = NULL;
    }
    if (!ok) {
        json_decref(arr);
        return NULL;
    }
    json_t *obj = json_object();
    if (json_object_set_new(obj, "results", arr) != 0) { /* takes arr, even with obj NULL */
        json_decref(obj);
        return NULL;
    }
    return obj;
}

json_t *api_classify_reply(const api_classify_req *q, json_t **results, int num_tasks_used)
{
    int T = num_tasks_used, I = q->num_images;
    VIT_ASSERT(I >= 1 && T >= 1 && results);
    VIT_ASSERT(q->images_form || I == 1);
    VIT_ASSERT(q->tasks_form ? T == q->num_tasks : T == 1);
    if (!q->images_form && !q->tasks_form)
        return results[0]; /* the reference passes to the caller */
    if (!q->images_form)
        return results_of(results, T);
    if (!q->tasks_form)
        return results_of(results, I);
    /* each image's {"results": [per task]}, then the outer list */
    json_t **per_image = calloc((size_t)I, sizeof *per_image);
    if (!per_image) {
        for (size_t i = 0; i < (size_t)I * (size_t)T; i++)
            json_decref(results[i]);
        return NULL;
    }
    for (int i = 0; i < I; i++)
        per_image[i] = results_of(results + (size_t)i * T, T);
    json_t *out = results_of(per_image, I);
    free(per_image);
    return out;
}
