/*
 * fuzz_kserve.c - libFuzzer target for POST /v2/models/{model}/infer's body
 * (api_kserve_infer_parse, api/kserve.h), the reply built from what it
 * accepted, and the conversion of its refusals to the protocol's shape.
 *
 * The input is the body; its first NUL byte, when there is one, ends the
 * JSON part (as Inference-Header-Content-Length would) and is dropped, the
 * bytes after it being the binary tensor data.  The model is "alpha", or
 * "_backbone" for inputs of odd length.  The limits are small (4 images of
 * at most 4096 bytes, top_k <= 10).  A property that breaks aborts:
 *   - refused: rc -1, the request emptied, a 4xx (or 500 "internal") in the
 *     native error shape, which api_kserve_error_body turns into exactly
 *     {"error": non-empty string, "code": non-empty string}, same status;
 *   - accepted: 1..4 images, each 1..4096 bytes or an http(s) URL; the task
 *     is the model (none for _backbone); top_k in [1, 10]; 1 or 2 distinct
 *     outputs; then api_kserve_infer_reply over fixed results (3 classes)
 *     is a 200 whose JSON (or JSON part, when an output is binary) has the
 *     outputs asked for, each [images, min(top_k, 3)], and whose binary
 *     sizes add up to the body.
 *
 *   CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined
 *   ./build-fuzz/tests/fuzz/fuzz_kserve -dict=tests/fuzz/kserve.dict \
 *       -rss_limit_mb=512 -timeout=5 -max_total_time=60 tests/fuzz/corpus/kserve
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kserve.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const api_classify_limits lim = {
    .max_images = 4, .max_image_bytes = 4096, .max_tasks = 4, .max_top_k = 10};

static void check_refused(const api_classify_req *q, const api_kserve_infer *v, api_reply *r)
{
    VIT_ASSERT(q->images == NULL && q->num_images == 0 && q->tasks == NULL && !v->id);
    VIT_ASSERT((r->status >= 400 && r->status < 500) || r->status == 500);
    json_t *j = json_loadb(r->body, r->body_len, 0, NULL);
    json_t *e = json_object_get(j, "error");
    VIT_ASSERT(json_string_length(json_object_get(e, "code")) > 0 &&
               json_string_length(json_object_get(e, "message")) > 0);
    json_decref(j);
    int status = r->status;
    api_kserve_error_body(r);
    VIT_ASSERT(r->status == status);
    j = json_loadb(r->body, r->body_len, 0, NULL);
    VIT_ASSERT(json_object_size(j) == 2 && json_string_length(json_object_get(j, "error")) > 0 &&
               json_string_length(json_object_get(j, "code")) > 0);
    json_decref(j);
    api_kserve_error_body(r); /* twice: the protocol's shape is left alone */
    VIT_ASSERT(r->status == status);
}

static void check_accepted(const api_classify_req *q, const api_kserve_infer *v,
                           const char *model)
{
    VIT_ASSERT(q->num_images >= 1 && q->num_images <= lim.max_images && q->images);
    for (int i = 0; i < q->num_images; i++) {
        const api_image_src *s = &q->images[i];
        if (s->kind == API_IMAGE_BYTES)
            VIT_ASSERT(s->bytes && s->len >= 1 && s->len <= lim.max_image_bytes && !s->url);
        else
            VIT_ASSERT(s->kind == API_IMAGE_URL && s->url && !s->bytes &&
                       strlen(s->url) <= API_CLASSIFY_MAX_URL &&
                       (strncasecmp(s->url, "http://", 7) == 0 ||
                        strncasecmp(s->url, "https://", 8) == 0));
    }
    if (strcmp(model, API_KSERVE_BACKBONE) == 0)
        VIT_ASSERT(q->num_tasks == 0 && !q->tasks);
    else
        VIT_ASSERT(q->num_tasks == 1 && strcmp(q->tasks[0], model) == 0);
    VIT_ASSERT(!q->tasks_form);
    VIT_ASSERT(q->top_k >= 1 && q->top_k <= lim.max_top_k);
    VIT_ASSERT(v->num_outputs == 1 || (v->num_outputs == 2 && v->outputs[0] != v->outputs[1]));
}

static void check_reply(const api_classify_req *q, const api_kserve_infer *v, const char *model)
{
    static const char *const labels[] = {"cat", "dog", "caf\xc3\xa9"};
    int n = q->num_images;
    json_t *results[4];
    for (int i = 0; i < n; i++) {
        const float logits[3] = {(float)(i % 3), 1.0f, -1.0f};
        results[i] = api_classify_result(NULL, labels, logits, 3, q->top_k);
        VIT_ASSERT(results[i]);
    }
    api_reply r;
    api_reply_init(&r);
    VIT_ASSERT(api_kserve_infer_reply(v, model, "req-1", results, n, &r) == 0 && r.status == 200);
    size_t hlen = r.infer_header_len ? r.infer_header_len : r.body_len;
    VIT_ASSERT(hlen <= r.body_len);
    json_t *j = json_loadb(r.body, hlen, 0, NULL);
    json_t *outs = json_object_get(j, "outputs");
    VIT_ASSERT(json_array_size(outs) == (size_t)v->num_outputs);
    size_t k = (size_t)(q->top_k < 3 ? q->top_k : 3), binary = 0;
    for (int t = 0; t < v->num_outputs; t++) {
        json_t *o = json_array_get(outs, (size_t)t), *shape = json_object_get(o, "shape");
        VIT_ASSERT(json_integer_value(json_array_get(shape, 0)) == n &&
                   json_integer_value(json_array_get(shape, 1)) == (json_int_t)k);
        json_t *size = json_object_get(json_object_get(o, "parameters"), "binary_data_size");
        VIT_ASSERT(v->binary[v->outputs[t]] == (size != NULL));
        if (size)
            binary += (size_t)json_integer_value(size);
        else
            VIT_ASSERT(json_array_size(json_object_get(o, "data")) == (size_t)n * k);
    }
    VIT_ASSERT((r.infer_header_len > 0) == (binary > 0) && hlen + binary == r.body_len);
    json_decref(j);
    api_reply_free(&r);
    for (int i = 0; i < n; i++)
        json_decref(results[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    long long json_len = nul ? (long long)(nul - data) : -1;
    char *body = malloc(size ? size : 1);
    VIT_ASSERT(body);
    size_t len = size;
    if (nul) { /* the separator dropped */
        memcpy(body, data, (size_t)json_len);
        memcpy(body + json_len, nul + 1, size - (size_t)json_len - 1);
        len = size - 1;
    } else if (size) {
        memcpy(body, data, size);
    }
    const char *model = size % 2 ? API_KSERVE_BACKBONE : "alpha";
    api_classify_req q;
    api_kserve_infer v;
    api_reply r;
    api_reply_init(&r);
    if (api_kserve_infer_parse(&q, &v, body, len, json_len, model, &lim, &r) != 0) {
        check_refused(&q, &v, &r);
    } else {
        VIT_ASSERT(r.status == 0 && r.body == NULL);
        check_accepted(&q, &v, model);
        check_reply(&q, &v, model);
        api_classify_req_free(&q);
        api_kserve_infer_free(&v);
    }
    api_reply_free(&r);
    free(body);
    return 0;
}
