/*
 * fuzz_finetune.c - libFuzzer target for POST /v1/finetune's body
 * (api_finetune_parse_body) and the job's request as it is stored and read
 * back at a restart (api_finetune_request -> api_finetune_parse).
 *
 * The input is the body.  A property that breaks aborts:
 *   - refused: rc -1, a 4xx status and the error shape {"error": {"code",
 *     "message", "field"?}} with non-empty strings (500 "internal" only when
 *     memory ran out);
 *   - accepted: a valid task name, non-empty train, every hyper-parameter in
 *     its documented range, method bitfit or linear; and the stored request
 *     parses back to the same spec, field by field (a job resumed after a
 *     restart runs exactly what was asked).
 *
 *   CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined
 *   ./build-fuzz/tests/fuzz/fuzz_finetune -rss_limit_mb=512 -timeout=5 \
 *       -max_total_time=60 tests/fuzz/corpus/finetune
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "finetune.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_refused(const api_reply *r)
{
    VIT_ASSERT((r->status >= 400 && r->status < 500) || r->status == 500);
    json_t *j = r->body ? json_loadb(r->body, r->body_len, 0, NULL) : NULL;
    json_t *e = json_object_get(j, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    VIT_ASSERT(json_object_size(j) == 1 && code && code[0] && msg && msg[0]);
    json_t *field = json_object_get(e, "field");
    VIT_ASSERT(json_object_size(e) == (field ? 3u : 2u));
    /* the key at fault, as sent: empty only for an unknown key "" */
    VIT_ASSERT(!field || (json_is_string(field) && (json_string_length(field) > 0 ||
                                                    strcmp(code, "unknown_field") == 0)));
    VIT_ASSERT(r->status != 500 || strcmp(code, "internal") == 0 ||
               strcmp(code, "out_of_memory") == 0);
    json_decref(j);
}

static void check_accepted(const api_finetune_spec *s)
{
    VIT_ASSERT(task_name_valid(s->task));
    VIT_ASSERT(s->train[0] && strlen(s->train) <= API_FT_PATH_MAX);
    VIT_ASSERT(strlen(s->eval) <= API_FT_PATH_MAX);
    VIT_ASSERT(s->method == VIT_METHOD_BITFIT || s->method == VIT_METHOD_LINEAR);
    VIT_ASSERT(s->epochs >= 1 && s->epochs <= 1000 && s->batch_size >= 1 &&
               s->batch_size <= 1024);
    VIT_ASSERT(isfinite(s->lr) && s->lr > 0 && s->min_lr >= 0 && s->min_lr <= s->lr);
    VIT_ASSERT(s->weight_decay >= 0 && s->warmup_epochs >= 0 && s->warmup_epochs <= s->epochs);
    VIT_ASSERT(s->label_smoothing >= 0 && s->label_smoothing < 1);
    VIT_ASSERT(s->validation_split >= 0 && s->validation_split <= 0.5);
    VIT_ASSERT(s->early_stopping_patience >= 0 && s->max_steps >= 0);
    VIT_ASSERT(s->seed <= 9007199254740991ull);
}

static bool same_spec(const api_finetune_spec *a, const api_finetune_spec *b)
{
    return strcmp(a->task, b->task) == 0 && strcmp(a->train, b->train) == 0 &&
           strcmp(a->eval, b->eval) == 0 && a->method == b->method &&
           a->overwrite == b->overwrite && a->skip_bad == b->skip_bad &&
           a->epochs == b->epochs && a->batch_size == b->batch_size && a->lr == b->lr &&
           a->min_lr == b->min_lr && a->weight_decay == b->weight_decay &&
           a->warmup_epochs == b->warmup_epochs && a->label_smoothing == b->label_smoothing &&
           a->validation_split == b->validation_split && a->seed == b->seed &&
           strcmp(a->augment, b->augment) == 0 &&
           a->early_stopping_patience == b->early_stopping_patience &&
           a->max_steps == b->max_steps;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    api_finetune_spec spec, back;
    api_reply r;
    api_reply_init(&r);
    int rc = api_finetune_parse_body((const char *)data, size, &spec, &r);
    if (rc != 0) {
        check_refused(&r);
        api_reply_free(&r);
        return 0;
    }
    VIT_ASSERT(r.status == 0 && r.body == NULL);
    check_accepted(&spec);
    json_t *stored = api_finetune_request(&spec);
    if (stored) { /* NULL only when out of memory */
        /* as job.json holds it (server/job_record.c: 17 digits), read back */
        char *text = json_dumps(stored, JSON_COMPACT | JSON_REAL_PRECISION(17));
        json_decref(stored);
        json_t *loaded = text ? json_loads(text, 0, NULL) : NULL;
        free(text);
        if (loaded) {
            rc = api_finetune_parse(loaded, &back, &r);
            VIT_ASSERT(rc == 0 && same_spec(&spec, &back));
            json_decref(loaded);
        }
    }
    api_reply_free(&r);
    return 0;
}
