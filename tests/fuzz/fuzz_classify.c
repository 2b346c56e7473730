/*
 * fuzz_classify.c - libFuzzer target for POST /v1/classify's JSON body
 * (api_classify_from_json) and the reply built from what it accepted.
 *
 * The input is the body.  The limits are small (4 images of at most 4096
 * decoded bytes, 4 tasks, top_k <= 10), so an input near a limit is cheap to
 * reach and nothing grows past them.  A property that breaks aborts, so the
 * fuzzer records it:
 *   - refused: rc -1, the request emptied, a 4xx status (or 500 "internal"
 *     when memory ran out) and a body that is the error shape
 *     {"error": {"code", "message"}} with non-empty strings;
 *   - accepted: 1..4 images, each either 1..4096 bytes or an http(s) URL of
 *     at most API_CLASSIFY_MAX_URL bytes; 0..4 task names, each valid and no
 *     two equal; top_k in [1, 10]; one image unless images_form; at most one
 *     task unless tasks_form; then a result per image and task (fixed
 *     logits) goes through api_classify_reply, whose shape is checked, and
 *     the reply serialises.
 * Leaks show under ASan (LeakSanitizer), which the fuzz build uses.
 *
 *   CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined
 *   ./build-fuzz/tests/fuzz/fuzz_classify -dict=tests/fuzz/classify.dict \
 *       -rss_limit_mb=512 -timeout=5 -max_total_time=60 tests/fuzz/corpus/classify
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "classify.h"
#include "task.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const api_classify_limits lim = {
    .max_images = 4, .max_image_bytes = 4096, .max_tasks = 4, .max_top_k = 10};

/* A refusal: the error shape, with a status that fits. */
static void check_refused(const api_classify_req *q, const api_reply *r)
{
    VIT_ASSERT(q->images == NULL && q->num_images == 0 && q->tasks == NULL &&
               q->num_tasks == 0);
    VIT_ASSERT((r->status >= 400 && r->status < 500) || r->status == 500);
    VIT_ASSERT(r->body && r->body_len == strlen(r->body));
    json_t *j = json_loadb(r->body, r->body_len, 0, NULL);
    json_t *e = json_object_get(j, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    VIT_ASSERT(json_object_size(j) == 1 && json_object_size(e) == 2);
    VIT_ASSERT(code && code[0] && msg && msg[0]);
    VIT_ASSERT(r->status != 500 || strcmp(code, "internal") == 0);
    json_decref(j);
}

/* An accepted request: everything within the limits, as classify.h says. */
static void check_accepted(const api_classify_req *q)
{
    VIT_ASSERT(q->num_images >= 1 && q->num_images <= lim.max_images && q->images);
    VIT_ASSERT(q->images_form || q->num_images == 1);
    for (int i = 0; i < q->num_images; i++) {
        const api_image_src *s = &q->images[i];
        if (s->kind == API_IMAGE_BYTES) {
            VIT_ASSERT(s->bytes && s->len >= 1 && s->len <= lim.max_image_bytes && !s->url);
        } else {
            VIT_ASSERT(s->kind == API_IMAGE_URL && s->url && !s->bytes);
            size_t n = strlen(s->url);
            VIT_ASSERT(n <= API_CLASSIFY_MAX_URL);
            VIT_ASSERT((n > 7 && strncasecmp(s->url, "http://", 7) == 0) ||
                       (n > 8 && strncasecmp(s->url, "https://", 8) == 0));
        }
    }
    VIT_ASSERT(q->num_tasks >= 0 && q->num_tasks <= lim.max_tasks);
    VIT_ASSERT(q->tasks_form ? q->num_tasks >= 1 : q->num_tasks <= 1);
    for (int i = 0; i < q->num_tasks; i++) {
        VIT_ASSERT(task_name_valid(q->tasks[i]));
        for (int k = 0; k < i; k++)
            VIT_ASSERT(strcmp(q->tasks[i], q->tasks[k]) != 0);
    }
    VIT_ASSERT(q->top_k >= 1 && q->top_k <= lim.max_top_k);
}

/* Results for q (three classes, fixed logits) through api_classify_reply:
 * the reply has the shape classify.h gives for q's flags. */
static void check_reply(const api_classify_req *q)
{
    static const char *const labels[] = {"cat", "dog", "caf\xc3\xa9"};
    int T = q->num_tasks > 0 ? q->num_tasks : 1;
    size_t n = (size_t)q->num_images * (size_t)T;
    json_t **results = malloc(n * sizeof *results);
    VIT_ASSERT(results);
    for (size_t i = 0; i < n; i++) {
        const float logits[3] = {(float)(i % 3), 1.0f, -1.0f};
        results[i] = api_classify_result(q->num_tasks ? q->tasks[i % (size_t)T] : NULL, labels,
                                         logits, 3, q->top_k);
        VIT_ASSERT(results[i]);
    }
    json_t *reply = api_classify_reply(q, results, T);
    free(results);
    VIT_ASSERT(reply);
    json_t *list = json_object_get(reply, "results");
    if (!q->images_form && !q->tasks_form) {
        VIT_ASSERT(!list && json_array_size(json_object_get(reply, "labels")) ==
                                (size_t)(q->top_k < 3 ? q->top_k : 3));
    } else {
        VIT_ASSERT(json_array_size(list) == (size_t)(q->images_form ? q->num_images : T));
        if (q->images_form && q->tasks_form)
            for (int i = 0; i < q->num_images; i++)
                VIT_ASSERT(json_array_size(json_object_get(json_array_get(list, i), "results")) ==
                           (size_t)T);
    }
    char *text = json_dumps(reply, JSON_COMPACT);
    VIT_ASSERT(text);
    free(text);
    json_decref(reply);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    api_classify_req q;
    api_reply r;
    api_reply_init(&r);
    if (api_classify_from_json(&q, (const char *)data, size, &lim, &r) != 0) {
        check_refused(&q, &r);
    } else {
        VIT_ASSERT(r.status == 0 && r.body == NULL);
        check_accepted(&q);
        check_reply(&q);
        api_classify_req_free(&q);
    }
    api_reply_free(&r);
    return 0;
}
