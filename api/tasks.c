/*
 * tasks.c - the task routes (tasks.h): thin handlers over the task store.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tasks.h"

/* The store's refusal as the client sees it. */
static int task_error(api_reply *r, const char *name, const vit_error *err)
{
    switch (err->code) {
    case VIT_ERR_NOT_FOUND:
        return api_error(r, 404, "task_not_found", "task '%s' does not exist", name);
    case VIT_ERR_INVALID:
        return api_error(r, 422, "invalid_task_name", "%s", err->message);
    case VIT_ERR_MISMATCH:
        return api_error(r, 422, "task_mismatch", "%s", err->message);
    case VIT_ERR_FORMAT:
    case VIT_ERR_UNSUPPORTED:
        return api_error(r, 400, "bad_task_file", "%s", err->message);
    case VIT_ERR_TOO_LARGE:
        return api_error(r, 413, "task_too_large", "%s", err->message);
    default:
        return api_engine_error(r, err);
    }
}

int api_tasks_list(task_store *s, api_reply *r)
{
    task_store_entry *e = NULL;
    size_t n = 0;
    vit_error err = {0};
    if (task_store_list(s, &e, &n, &err) != VIT_OK)
        return api_engine_error(r, &err);
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++) {
        json_t *o = json_pack("{s:s,s:I,s:b,s:I}", "name", e[i].name, "bytes",
                              (json_int_t)e[i].file_bytes, "resident", e[i].resident,
                              "resident_bytes", (json_int_t)e[i].resident_bytes);
        if (json_array_append_new(list, o) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    free(e);
    return api_json(r, 200, list ? json_pack("{s:o}", "tasks", list) : NULL);
}

/* The description of a task: from the loaded task and its file's metadata. */
static json_t *describe(task_store *s, const char *name, vit_error *err)
{
    vit_task *t = NULL;
    if (task_store_get(s, name, &t, err) != VIT_OK)
        return NULL;
    char **kv = NULL;
    uint64_t bytes = 0;
    if (task_store_metadata(s, name, &kv, &bytes, err) != VIT_OK) {
        task_free(t);
        return NULL;
    }
    json_t *labels = json_array(), *meta = json_object();
    bool ok = labels && meta;
    for (int i = 0; ok && i < t->num_classes; i++)
        ok = json_array_append_new(labels, api_json_text(t->labels[i])) == 0;
    for (size_t i = 0; ok && kv[i] && kv[i + 1]; i += 2)
        if (strcmp(kv[i], "labels") != 0) /* already above, as an array */
            ok = json_object_set_new(meta, kv[i], api_json_text(kv[i + 1])) == 0;
    json_t *j = ok ? json_pack("{s:s,s:i,s:o,s:s,s:s,s:I,s:I,s:o}", "name", t->name, "num_classes",
                               t->num_classes, "labels", labels, "method", t->method,
                               "base_model", t->base_model, "bytes", (json_int_t)bytes,
                               "resident_bytes", (json_int_t)task_store_task_bytes(t),
                               "metadata", meta)
                   : NULL;
    if (!j) {
        json_decref(labels);
        json_decref(meta);
        vit_error_set(err, VIT_ERR_NOMEM, "out of memory describing task '%s'", name);
    }
    free(kv);
    task_free(t);
    return j;
}

int api_task_get(task_store *s, const char *name, api_reply *r)
{
    vit_error err = {0};
    json_t *j = describe(s, name, &err);
    return j ? api_json(r, 200, j) : task_error(r, name, &err);
}

int api_task_put(task_store *s, const char *name, const void *body, size_t len, api_reply *r)
{
    vit_error err = {0};
    bool created = false;
    if (len == 0)
        return api_error(r, 400, "bad_task_file", "the body is empty: send a task .safetensors file");
    /* The engine judges a header length over its cap before one past the
     * end (TOO_LARGE for a file on disk); in a complete body, a length past
     * its end is simply a malformed upload. */
    if (len >= 8) {
        const unsigned char *b = body;
        uint64_t hlen = 0;
        for (int i = 7; i >= 0; i--)
            hlen = hlen << 8 | b[i];
        if (hlen > len - 8)
            return api_error(r, 400, "bad_task_file",
                             "not a safetensors file: its header length (%llu) runs past the "
                             "%zu bytes sent",
                             (unsigned long long)hlen, len);
    }
    if (task_store_put(s, name, body, len, &created, &err) != VIT_OK)
        return task_error(r, name, &err);
    json_t *j = describe(s, name, &err);
    return j ? api_json(r, created ? 201 : 200, j) : task_error(r, name, &err);
}

int api_task_delete(task_store *s, const char *name, api_reply *r)
{
    vit_error err = {0};
    if (task_store_delete(s, name, &err) != VIT_OK)
        return task_error(r, name, &err);
    return api_json(r, 200, json_pack("{s:s}", "deleted", name));
}
