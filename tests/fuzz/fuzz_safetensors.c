/*
 * fuzz_safetensors.c - libFuzzer entry point for the safetensors reader.
 *
 * Any byte string must either be rejected with a message or open into a
 * table whose every tensor can be read without touching memory outside the
 * input.  Each input is also opened under small st_limits: those may refuse
 * more, never accept what the default limits refuse, and never open more
 * tensors than they allow.  Files that open are also written back with st_writer and reopened:
 * the copy must hold the same names, shapes, float bits and metadata, which
 * exercises the writer on hostile names and values too.  A broken property
 * aborts, so the fuzzer records it as a crash.
 *
 * Seeds: tests/fuzz/corpus/safetensors (made by make_bad_safetensors.py).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

#define FUZZ_MAX_NUMEL (16u * 1024u * 1024u) /* skip larger tensors: bounded memory */

/* Writes every float-readable tensor of f (and its metadata) with st_writer,
 * reopens the bytes and checks that they survived. */
static void round_trip(const st_file *f, float *const *values)
{
    vit_error err;
    st_writer *w = st_writer_create();
    if (!w)
        return;
    size_t n = st_count(f);
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_tensor_at(f, i);
        if (values[i])
            VIT_ASSERT(st_writer_add_f32(w, t->name, t->ndim, t->shape, values[i], &err) ==
                       VIT_OK);
    }
    const char *key, *value;
    for (size_t i = 0; st_metadata_at(f, i, &key, &value); i++)
        VIT_ASSERT(st_writer_set_metadata(w, key, value, &err) == VIT_OK);

    void *buf;
    size_t len;
    st_file *g = NULL;
    VIT_ASSERT(st_writer_serialize(w, &buf, &len, &err) == VIT_OK);
    VIT_ASSERT(st_open_memory(buf, len, &g, &err) == VIT_OK);
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_tensor_at(f, i);
        if (!values[i])
            continue;
        const st_tensor *u = st_find(g, t->name);
        VIT_ASSERT(u && u->dtype == ST_F32 && u->ndim == t->ndim && u->numel == t->numel);
        VIT_ASSERT(memcmp(u->shape, t->shape, (size_t)t->ndim * sizeof t->shape[0]) == 0);
        VIT_ASSERT(t->numel == 0 ||
                   memcmp(st_data(g, u), values[i], t->numel * sizeof(float)) == 0);
    }
    VIT_ASSERT(st_metadata_count(g) == st_metadata_count(f));
    for (size_t i = 0; st_metadata_at(f, i, &key, &value); i++) {
        const char *copy = st_metadata(g, key);
        VIT_ASSERT(copy && strcmp(copy, value) == 0);
    }
    st_close(g);
    free(buf);
    st_writer_free(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    st_file *f = NULL;
    vit_error err;
    /* tighter caps (a task file's, scaled down) only ever refuse more: what
     * opens under them opens the same under a checkpoint's */
    st_limits small = {.max_header = 2048, .max_tensors = 4};
    size_t small_count = SIZE_MAX;
    if (st_open_memory_limited(data, size, &small, &f, &err) == VIT_OK) {
        small_count = st_count(f);
        VIT_ASSERT(small_count <= small.max_tensors);
        st_close(f);
    } else {
        VIT_ASSERT(f == NULL && err.message[0] != '\0');
    }
    f = NULL;
    if (st_open_memory(data, size, &f, &err) != VIT_OK) {
        VIT_ASSERT(f == NULL && err.message[0] != '\0' && small_count == SIZE_MAX);
        return 0;
    }
    VIT_ASSERT(small_count == SIZE_MAX || small_count == st_count(f));
    size_t n = st_count(f);
    float **values = calloc(n ? n : 1, sizeof *values);
    int readable_all = values != NULL;
    for (size_t i = 0; i < n && values; i++) {
        const st_tensor *t = st_tensor_at(f, i);
        VIT_ASSERT(st_find(f, t->name) == t);
        VIT_ASSERT(t->nbytes == t->numel * st_dtype_size(t->dtype));
        if (t->numel > FUZZ_MAX_NUMEL) {
            readable_all = 0;
            continue;
        }
        float *dst = malloc(t->numel ? t->numel * sizeof *dst : 1);
        if (!dst) {
            readable_all = 0;
            continue;
        }
        if (st_read_f32(f, t, dst, &err) == VIT_OK) {
            values[i] = dst;
        } else {
            VIT_ASSERT(err.code == VIT_ERR_UNSUPPORTED);
            free(dst);
        }
    }
    const char *key, *value;
    size_t nmeta = 0;
    for (; st_metadata_at(f, nmeta, &key, &value); nmeta++) {
        const char *found = st_metadata(f, key); /* keys are unique */
        VIT_ASSERT(found && strcmp(found, value) == 0);
    }
    VIT_ASSERT(nmeta == st_metadata_count(f));
    if (readable_all)
        round_trip(f, values);
    for (size_t i = 0; i < n && values; i++)
        free(values[i]);
    free(values);
    st_close(f);
    return 0;
}
