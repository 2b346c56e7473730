/*
 * kserve.c - the Open Inference Protocol (KServe V2) encoding (kserve.h).
 *
 * Parsing is a list of checks, each answering its 4xx in the native error
 * shape (the server rewrites a V2 route's errors with api_kserve_error_body
 * as it sends them, so every error of the route is converted in one place,
 * also those decided before or after this file: 401, 413, 429, 503...).
 * The images go through classify.c's readers, so a V2 element is read and
 * refused exactly as a native "images" element; the reply only lays out the
 * native result objects, so its numbers are the native ones.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kserve.h"
#include "task.h"

#ifndef VITFIT_VERSION
#define VITFIT_VERSION "0.0.0"
#endif

static const char *const output_names[2] = {"labels", "scores"};
static const char *const output_types[2] = {"BYTES", "FP32"};

void api_kserve_infer_free(api_kserve_infer *v)
{
    free(v->id);
    memset(v, 0, sizeof *v);
}

static int out_of_memory(api_reply *r)
{
    return api_error(r, 500, "internal", "out of memory reading the request");
}

/* The value of key in o, NULL when absent or null. */
static json_t *member(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_null(v) ? NULL : v;
}

/* Refuses a key of object o that is not one of keys[0..n); what names o in
 * the message.  0, or -1 with r filled. */
static int known_keys(json_t *o, const char *const *keys, size_t n, const char *what,
                      const char *known, api_reply *r)
{
    const char *key;
    json_t *value;
    json_object_foreach(o, key, value) {
        size_t k = 0;
        while (k < n && strcmp(key, keys[k]) != 0)
            k++;
        if (k == n)
            return api_error(r, 400, "invalid_request", "%s: unknown key '%.64s' (known: %s)",
                             what, key, known);
    }
    return 0;
}

/* ======================================================================== */
/* metadata and readiness                                                   */
/* ======================================================================== */

int api_kserve_server_metadata(api_reply *r)
{
    return api_json(r, 200, json_pack("{s:s,s:s,s:[s]}", "name", "vitfit", "version",
                                      VITFIT_VERSION, "extensions", "binary_tensor_data"));
}

int api_kserve_model_check(const vit_model *m, const char *name, api_reply *r)
{
    if (strcmp(name, API_KSERVE_BACKBONE) == 0) {
        if (m->cfg.num_classes <= 0)
            return api_error(r, 404, "model_not_found",
                             "the backbone has no classification head: name a task");
        return 0;
    }
    if (!task_name_valid(name))
        return api_error(r, 404, "model_not_found",
                         "no model '%.64s': the models are the server's tasks and '%s' (the "
                         "backbone's own head)",
                         name, API_KSERVE_BACKBONE);
    return 0;
}

/* Loads task name to prove it usable; fails r as an infer naming it would
 * (server/pipeline.c resolve_tasks), so "ready" and infer agree. */
static int task_usable(task_store *s, const char *name, api_reply *r)
{
    if (strcmp(name, API_KSERVE_BACKBONE) == 0)
        return 0;
    vit_task *t = NULL;
    vit_error err = {0};
    vit_status st = task_store_get(s, name, &t, &err);
    if (st == VIT_OK) {
        task_free(t);
        return 0;
    }
    if (st == VIT_ERR_NOT_FOUND)
        return api_error(r, 404, "model_not_found", "no model '%s': no such task", name);
    if (st == VIT_ERR_INVALID)
        return api_error(r, 422, "invalid_task_name", "%s", err.message);
    return api_error(r, st == VIT_ERR_NOMEM || st == VIT_ERR_IO ? 500 : 422, "task_unusable", "%s",
                     err.message);
}

/* One tensor's metadata: {"name", "datatype", "shape": [-1 ...]}. */
static json_t *tensor_meta(const char *name, const char *datatype, int rank)
{
    return json_pack(rank == 1 ? "{s:s,s:s,s:[i]}" : "{s:s,s:s,s:[i,i]}", "name", name,
                     "datatype", datatype, "shape", -1, -1);
}

int api_kserve_model_metadata(const vit_model *m, task_store *s, const char *name, api_reply *r)
{
    if (api_kserve_model_check(m, name, r) != 0 || task_usable(s, name, r) != 0)
        return -1;
    return api_json(
        r, 200,
        json_pack("{s:s,s:s,s:[o],s:[o,o]}", "name", name, "platform", "vitfit_safetensors",
                  "inputs", tensor_meta(API_KSERVE_INPUT, "BYTES", 1), "outputs",
                  tensor_meta(output_names[API_KSERVE_LABELS], output_types[API_KSERVE_LABELS], 2),
                  tensor_meta(output_names[API_KSERVE_SCORES], output_types[API_KSERVE_SCORES],
                              2)));
}

int api_kserve_model_ready(const vit_model *m, task_store *s, const char *name, api_reply *r)
{
    if (api_kserve_model_check(m, name, r) != 0 || task_usable(s, name, r) != 0)
        return -1;
    return api_json(r, 200, json_pack("{s:s,s:b}", "name", name, "ready", 1));
}

/* ======================================================================== */
/* the infer request                                                        */
/* ======================================================================== */

/* A boolean parameter of params (named what in messages): *out unchanged
 * when absent or null.  0, or -1. */
static int bool_param(json_t *params, const char *key, const char *what, bool *out, api_reply *r)
{
    json_t *b = member(params, key);
    if (!b)
        return 0;
    if (!json_is_boolean(b))
        return api_error(r, 400, "invalid_request", "%s.%s: must be a boolean", what, key);
    *out = json_is_true(b);
    return 0;
}

/* The "parameters" member of o (named what in messages): NULL when absent
 * or null; *bad set (r filled) when it is not an object. */
static json_t *params_of(json_t *o, const char *what, bool *bad, api_reply *r)
{
    json_t *p = member(o, "parameters");
    if (p && !json_is_object(p)) {
        api_error(r, 400, "invalid_request", "%s: must be an object", what);
        *bad = true;
        return NULL;
    }
    return p;
}

/* The input's shape: [N] or [N, 1], N in [1, max_images], into *n. */
static int input_shape(json_t *shape, const api_classify_limits *lim, size_t *n, api_reply *r)
{
    size_t rank = json_array_size(shape);
    if (!json_is_array(shape) || rank < 1 || rank > 2)
        return api_error(r, 400, "invalid_request",
                         "inputs[0].shape: must be [batch] or [batch, 1] (one image per element)");
    json_int_t d[2] = {0, 1};
    for (size_t i = 0; i < rank; i++) {
        json_t *v = json_array_get(shape, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return api_error(r, 400, "invalid_request",
                             "inputs[0].shape[%zu]: must be an integer >= 0", i);
        d[i] = json_integer_value(v);
    }
    if (d[1] != 1)
        return api_error(r, 400, "invalid_request",
                         "inputs[0].shape: [%" JSON_INTEGER_FORMAT ", %" JSON_INTEGER_FORMAT
                         "]: each image is one element: [batch] or [batch, 1]",
                         d[0], d[1]);
    if (d[0] == 0)
        return api_error(r, 400, "invalid_request", "inputs[0].shape: an empty batch");
    if (d[0] > lim->max_images)
        return api_error(r, 413, "too_many_images",
                         "inputs[0].shape: %" JSON_INTEGER_FORMAT " images, more than %d", d[0],
                         lim->max_images);
    *n = (size_t)d[0];
    return 0;
}

/* The strings of a "data" array a, flattened in row-major order (nested at
 * most depth - 1 levels), into out[0..*count); at most max of them.
 * Borrowed from a.  0, or -1 with r filled. */
static int data_strings(json_t *a, int depth, json_t **out, size_t *count, size_t max,
                        api_reply *r)
{
    size_t i;
    json_t *e;
    json_array_foreach(a, i, e) {
        if (json_is_array(e)) {
            if (depth <= 1)
                return api_error(r, 400, "invalid_request",
                                 "inputs[0].data: nested deeper than its shape");
            if (data_strings(e, depth - 1, out, count, max, r) != 0)
                return -1;
            continue;
        }
        if (!json_is_string(e))
            return api_error(r, 400, "invalid_request",
                             "inputs[0].data[%zu]: must be a string (base64, a data: URI or a "
                             "URL): BYTES elements are strings in JSON",
                             *count);
        if (*count == max)
            return api_error(r, 400, "invalid_request",
                             "inputs[0].data: more elements than its shape (%zu)", max);
        out[(*count)++] = e;
    }
    return 0;
}

/* The n images of the JSON "data" array into q->images. */
static int json_images(json_t *data, int rank, size_t n, const api_classify_limits *lim,
                       api_classify_req *q, api_reply *r)
{
    if (!json_is_array(data))
        return api_error(r, 400, "invalid_request", "inputs[0].data: must be an array");
    json_t **items = calloc(n, sizeof *items);
    if (!items)
        return out_of_memory(r);
    size_t count = 0;
    int rc = data_strings(data, rank, items, &count, n, r);
    if (rc == 0 && count != n)
        rc = api_error(r, 400, "invalid_request",
                       "inputs[0].data: %zu elements, but its shape says %zu", count, n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char field[48];
        snprintf(field, sizeof field, "inputs[0].data[%zu]", i);
        rc = api_classify_image_text(json_string_value(items[i]), json_string_length(items[i]),
                                     field, lim, &q->images[i], r);
    }
    free(items);
    return rc;
}

/* The n images of the binary tensor data p[0..len) (each a 4-byte
 * little-endian length, then that many bytes) into q->images; nothing may
 * follow the last.  ref: the binary tensor data extension, BYTES */
static int binary_images(const uint8_t *p, size_t len, size_t n, const api_classify_limits *lim,
                         api_classify_req *q, api_reply *r)
{
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        char field[48];
        snprintf(field, sizeof field, "inputs[0] binary element %zu", i);
        if (len - at < 4)
            return api_error(r, 400, "invalid_request",
                             "%s: the binary data ends before its 4-byte length", field);
        uint32_t el = (uint32_t)p[at] | (uint32_t)p[at + 1] << 8 | (uint32_t)p[at + 2] << 16 |
                      (uint32_t)p[at + 3] << 24;
        at += 4;
        if (el > len - at)
            return api_error(r, 400, "invalid_request",
                             "%s: %u bytes announced, only %zu left in the binary data", field,
                             (unsigned)el, len - at);
        if (api_classify_image_bytes(p + at, el, field, lim, &q->images[i], r) != 0)
            return -1;
        at += el;
    }
    if (at != len)
        return api_error(r, 400, "invalid_request",
                         "inputs[0]: %zu bytes of binary data after its %zu elements", len - at,
                         n);
    return 0;
}

/* The one input: its name, type, shape, and images (JSON or binary). */
static int parse_input(json_t *inputs, const char *bin, size_t bin_len, bool has_bin,
                       const api_classify_limits *lim, api_classify_req *q, api_reply *r)
{
    static const char *const keys[] = {"name", "shape", "datatype", "parameters", "data"};
    if (!json_is_array(inputs) || json_array_size(inputs) != 1)
        return api_error(r, 400, "invalid_request",
                         "inputs: must be an array of one input, '%s' (BYTES, one encoded "
                         "image per element)",
                         API_KSERVE_INPUT);
    json_t *in = json_array_get(inputs, 0);
    if (!json_is_object(in))
        return api_error(r, 400, "invalid_request", "inputs[0]: must be an object");
    if (known_keys(in, keys, sizeof keys / sizeof *keys, "inputs[0]",
                   "name, shape, datatype, parameters, data", r) != 0)
        return -1;
    json_t *name = member(in, "name"), *type = member(in, "datatype");
    if (!json_is_string(name) || strcmp(json_string_value(name), API_KSERVE_INPUT) != 0)
        return api_error(r, 400, "invalid_request",
                         "inputs[0].name: '%.64s' is not an input of this model (its input is "
                         "'%s')",
                         json_is_string(name) ? json_string_value(name) : "", API_KSERVE_INPUT);
    if (!json_is_string(type) || strcmp(json_string_value(type), "BYTES") != 0)
        return api_error(r, 400, "invalid_request",
                         "inputs[0].datatype: '%.32s', but the input '%s' is BYTES (encoded "
                         "images)",
                         json_is_string(type) ? json_string_value(type) : "", API_KSERVE_INPUT);
    size_t n = 0;
    json_t *shape = member(in, "shape");
    if (input_shape(shape, lim, &n, r) != 0)
        return -1;
    bool bad = false;
    json_t *params = params_of(in, "inputs[0].parameters", &bad, r);
    if (bad)
        return -1;
    json_t *size = member(params, "binary_data_size"), *data = member(in, "data");
    if (size && data)
        return api_error(r, 400, "invalid_request",
                         "inputs[0]: give \"data\" or parameters.binary_data_size, not both");
    if (!size && !data)
        return api_error(r, 400, "invalid_request", "inputs[0]: no \"data\"");
    if (!size && has_bin && bin_len > 0)
        return api_error(r, 400, "invalid_request",
                         "%zu bytes of binary data follow the JSON, but no input has "
                         "parameters.binary_data_size",
                         bin_len);
    q->images = calloc(n, sizeof *q->images);
    if (!q->images)
        return out_of_memory(r);
    q->num_images = (int)n;
    q->images_form = true;
    if (data)
        return json_images(data, (int)json_array_size(shape), n, lim, q, r);
    if (!has_bin)
        return api_error(r, 400, "invalid_request",
                         "inputs[0].parameters.binary_data_size without binary data: send the "
                         "Inference-Header-Content-Length header");
    if (!json_is_integer(size) || json_integer_value(size) < 0 ||
        (unsigned long long)json_integer_value(size) != (unsigned long long)bin_len)
        return api_error(r, 400, "invalid_request",
                         "inputs[0].parameters.binary_data_size: must be the %zu bytes that "
                         "follow the JSON",
                         bin_len);
    return binary_images((const uint8_t *)bin, bin_len, n, lim, q, r);
}

/* The requested outputs (absent, null or empty: both, labels first), each
 * binary when it says so, else as binary_default. */
static int parse_outputs(json_t *outs, bool binary_default, api_kserve_infer *v, api_reply *r)
{
    static const char *const keys[] = {"name", "parameters"};
    v->binary[API_KSERVE_LABELS] = v->binary[API_KSERVE_SCORES] = binary_default;
    if (outs && !json_is_array(outs))
        return api_error(r, 400, "invalid_request", "outputs: must be an array");
    if (!outs || json_array_size(outs) == 0) {
        v->num_outputs = 2;
        v->outputs[0] = API_KSERVE_LABELS;
        v->outputs[1] = API_KSERVE_SCORES;
        return 0;
    }
    size_t i;
    json_t *o;
    json_array_foreach(outs, i, o) {
        char what[32];
        snprintf(what, sizeof what, "outputs[%zu]", i);
        if (!json_is_object(o))
            return api_error(r, 400, "invalid_request", "%s: must be an object", what);
        if (known_keys(o, keys, 2, what, "name, parameters", r) != 0)
            return -1;
        json_t *name = member(o, "name");
        const char *s = json_is_string(name) ? json_string_value(name) : "";
        int which = strcmp(s, output_names[0]) == 0 ? 0 : strcmp(s, output_names[1]) == 0 ? 1 : -1;
        if (which < 0)
            return api_error(r, 400, "invalid_request",
                             "%s.name: '%.64s' is not an output of this model (labels, scores)",
                             what, s);
        for (int j = 0; j < v->num_outputs; j++)
            if ((int)v->outputs[j] == which)
                return api_error(r, 400, "invalid_request", "%s: '%s' is asked for twice", what,
                                 s);
        char pwhat[48];
        snprintf(pwhat, sizeof pwhat, "outputs[%zu].parameters", i);
        bool bad = false;
        json_t *params = params_of(o, pwhat, &bad, r);
        if (bad || bool_param(params, "binary_data", pwhat, &v->binary[which], r) != 0)
            return -1;
        v->outputs[v->num_outputs++] = (api_kserve_output)which;
    }
    return 0;
}

/* top_k and binary_data_output from the request's parameters. */
static int parse_params(json_t *params, const api_classify_limits *lim, api_classify_req *q,
                        bool *binary_default, api_reply *r)
{
    json_t *k = member(params, "top_k");
    if (k) {
        if (!json_is_integer(k))
            return api_error(r, 400, "invalid_request", "parameters.top_k: must be an integer");
        json_int_t v = json_integer_value(k);
        if (v < 1 || v > lim->max_top_k)
            return api_error(r, 400, "invalid_top_k",
                             "parameters.top_k: %" JSON_INTEGER_FORMAT " is not in [1, %d]", v,
                             lim->max_top_k);
        q->top_k = (int)v;
    }
    return bool_param(params, "binary_data_output", "parameters", binary_default, r);
}

int api_kserve_infer_parse(api_classify_req *q, api_kserve_infer *v, const char *body,
                           size_t len, long long json_len, const char *model,
                           const api_classify_limits *lim, api_reply *r)
{
    static const char *const keys[] = {"id", "parameters", "inputs", "outputs"};
    VIT_ASSERT(lim && lim->max_images >= 1 && lim->max_top_k >= 1);
    memset(q, 0, sizeof *q);
    memset(v, 0, sizeof *v);
    q->top_k = API_CLASSIFY_DEFAULT_TOP_K < lim->max_top_k ? API_CLASSIFY_DEFAULT_TOP_K
                                                           : lim->max_top_k;
    bool has_bin = json_len >= 0;
    if (has_bin && (unsigned long long)json_len > len)
        return api_error(r, 400, "invalid_request",
                         "Inference-Header-Content-Length (%lld) is more than the %zu bytes of "
                         "the body",
                         json_len, len);
    size_t hlen = has_bin ? (size_t)json_len : len;
    /* a valid request holds its images (nested one level at most), its
     * outputs and a few keys and parameters */
    if (!api_json_shape_within(body, hlen, 2 * (size_t)lim->max_images + 64, 8))
        return api_error(r, 413, "too_many_values",
                         "the JSON holds more values (or deeper nesting) than a request of %d "
                         "images can",
                         lim->max_images);
    json_error_t jerr;
    json_t *root = json_loadb(body, hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return api_error(r, 400, "bad_json", "the body is not JSON: line %d, column %d: %s",
                         jerr.line, jerr.column, jerr.text);
    int rc = -1;
    bool bad = false, binary_default = false;
    if (!json_is_object(root)) {
        api_error(r, 400, "bad_json", "the body must be a JSON object");
        goto done;
    }
    if (known_keys(root, keys, sizeof keys / sizeof *keys, "the request",
                   "id, parameters, inputs, outputs", r) != 0)
        goto done;
    json_t *id = member(root, "id");
    if (id && !json_is_string(id)) {
        api_error(r, 400, "invalid_request", "id: must be a string");
        goto done;
    }
    json_t *params = params_of(root, "parameters", &bad, r);
    if (bad || parse_params(params, lim, q, &binary_default, r) != 0 ||
        parse_outputs(member(root, "outputs"), binary_default, v, r) != 0)
        goto done;
    if (!member(root, "inputs")) {
        api_error(r, 400, "invalid_request", "no \"inputs\" in the request");
        goto done;
    }
    if (parse_input(member(root, "inputs"), body + hlen, len - hlen, has_bin, lim, q, r) != 0)
        goto done;
    if (id && !(v->id = strdup(json_string_value(id)))) {
        out_of_memory(r);
        goto done;
    }
    if (strcmp(model, API_KSERVE_BACKBONE) != 0) { /* else no task: the backbone's head */
        q->tasks = malloc(sizeof *q->tasks);
        if (!q->tasks || !(q->tasks[0] = strdup(model))) {
            out_of_memory(r);
            goto done;
        }
        q->num_tasks = 1;
    }
    rc = 0;
done:
    json_decref(root);
    if (rc != 0) {
        api_classify_req_free(q);
        api_kserve_infer_free(v);
    }
    return rc;
}

/* ======================================================================== */
/* the infer reply                                                          */
/* ======================================================================== */

static void put_u32le(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}

/* The binary tensor data of output o over the n results' arrays (k values
 * each): length-prefixed strings, or little-endian float32.  The scores are
 * the native float probabilities (json_real of a float): the cast back is
 * exact.  Caller frees; NULL when out of memory. */
static uint8_t *binary_output(api_kserve_output o, json_t *const *results, int n, size_t k,
                              size_t *out_len)
{
    size_t len = 0;
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < k; j++)
            len += o == API_KSERVE_SCORES
                       ? 4
                       : 4 + json_string_length(
                                 json_array_get(json_object_get(results[i], "labels"), j));
    uint8_t *buf = malloc(len ? len : 1), *p = buf;
    if (!buf)
        return NULL;
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < k; j++) {
            json_t *v = json_array_get(json_object_get(results[i], output_names[o]), j);
            if (o == API_KSERVE_SCORES) {
                float f = (float)json_real_value(v);
                uint32_t bits;
                memcpy(&bits, &f, 4);
                put_u32le(p, bits);
                p += 4;
            } else {
                size_t sl = json_string_length(v);
                put_u32le(p, (uint32_t)sl);
                memcpy(p + 4, json_string_value(v), sl);
                p += 4 + sl;
            }
        }
    *out_len = len;
    return buf;
}

int api_kserve_infer_reply(const api_kserve_infer *v, const char *model, const char *id_fallback,
                           json_t *const *results, int n, api_reply *r)
{
    VIT_ASSERT(results && n >= 1 && v->num_outputs >= 1 && v->num_outputs <= 2);
    size_t k = json_array_size(json_object_get(results[0], "labels"));
    for (int i = 0; i < n; i++)
        VIT_ASSERT(json_array_size(json_object_get(results[i], "labels")) == k &&
                   json_array_size(json_object_get(results[i], "scores")) == k);
    uint8_t *blob[2] = {NULL, NULL};
    size_t blob_len[2] = {0, 0};
    json_t *outs = json_array();
    bool ok = outs != NULL, any_binary = false;
    for (int t = 0; ok && t < v->num_outputs; t++) {
        api_kserve_output o = v->outputs[t];
        json_t *tensor = json_pack("{s:s,s:s,s:[I,I]}", "name", output_names[o], "datatype",
                                   output_types[o], "shape", (json_int_t)n, (json_int_t)k);
        ok = json_array_append_new(outs, tensor) == 0; /* takes tensor, even on failure */
        if (ok && v->binary[o]) {
            any_binary = true;
            blob[t] = binary_output(o, results, n, k, &blob_len[t]);
            ok = blob[t] && json_object_set_new(tensor, "parameters",
                                                json_pack("{s:I}", "binary_data_size",
                                                          (json_int_t)blob_len[t])) == 0;
        } else if (ok) {
            /* the native values themselves, shared: the same numbers, the
             * same text */
            json_t *data = json_array();
            ok = json_object_set_new(tensor, "data", data) == 0;
            for (int i = 0; ok && i < n; i++)
                for (size_t j = 0; ok && j < k; j++)
                    ok = json_array_append(
                             data, json_array_get(json_object_get(results[i], output_names[o]),
                                                  j)) == 0;
        }
    }
    json_t *root = ok ? json_pack("{s:s,s:s,s:O}", "model_name", model, "id",
                                  v->id ? v->id : id_fallback, "outputs", outs)
                      : NULL;
    json_decref(outs);
    int rc;
    if (!any_binary || !root) {
        rc = api_json(r, 200, root);
    } else {
        /* the JSON header, then each binary output in the order asked */
        char *text = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(9));
        json_decref(root);
        size_t tl = text ? strlen(text) : 0, total = tl + blob_len[0] + blob_len[1];
        char *body = text ? malloc(total) : NULL;
        if (!body) {
            free(text);
            rc = api_json(r, 500, NULL); /* the 500 of api_json */
        } else {
            memcpy(body, text, tl);
            size_t at = tl;
            for (int t = 0; t < 2; t++) {
                if (blob[t])
                    memcpy(body + at, blob[t], blob_len[t]);
                at += blob_len[t];
            }
            free(text);
            free(r->body);
            r->status = 200;
            r->content_type = API_KSERVE_BINARY_TYPE;
            r->body = body;
            r->body_len = total;
            r->infer_header_len = tl;
            rc = 0;
        }
    }
    free(blob[0]);
    free(blob[1]);
    return rc;
}

/* ======================================================================== */
/* errors                                                                   */
/* ======================================================================== */

void api_kserve_error_body(api_reply *r)
{
    if (r->status < 400 || !r->body)
        return;
    json_t *j = json_loadb(r->body, r->body_len, 0, NULL);
    json_t *e = json_object_get(j, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *message = json_string_value(json_object_get(e, "message"));
    if (code && message) {
        /* a V2 client asks for models: the pipeline's task_not_found (an
         * infer naming a task that is not there) is the model's */
        if (strcmp(code, "task_not_found") == 0)
            code = "model_not_found";
        api_json(r, r->status, json_pack("{s:s,s:s}", "error", message, "code", code));
    }
    json_decref(j);
}
