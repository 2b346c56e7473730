/*
 * fuzz_task.c - libFuzzer target for task files (task_load_fingerprint).
 *
 * The input is the bytes of a task file.  The backbone is fixed: a tiny timm
 * model (8 px, patch 4, width 8, 2 blocks, 3 classes, randinit seed 7) built
 * once in memory, with its fingerprint computed once, as a server does.  Each
 * input is written to a memfd and loaded through /proc/self/fd/N, so the path
 * a server takes runs whole: st_open_limited with a task's caps, the mmap,
 * metadata, fingerprint, names, shapes, labels, values.
 *
 * A refused input must leave *out NULL and say why.  A task that loads must
 * be usable: K >= 1 labels, each at most TASK_MAX_LABEL bytes and shown as is
 * (vit_label_problem), an arena of exactly the backbone's biases and a
 * (K, F) + (K) head, every value finite, and one image through task_forward
 * gives K logits, finite when every value of the task is below 1e4.  A broken property aborts, so the fuzzer records it.
 * Memory stays small: a task holds only what its file's data section holds,
 * and the header is capped before it is parsed.
 *
 * Seeds (tests/fuzz/corpus/task) are written by this file itself, when
 * VITFIT_FUZZ_TASK_SEEDS names a directory (the empty input starts it):
 *   VITFIT_FUZZ_TASK_SEEDS=tests/fuzz/corpus/task build/tests/fuzz/fuzz_task /dev/null
 *   CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined
 *   ./build-fuzz/tests/fuzz/fuzz_task -dict=tests/fuzz/task.dict \
 *       -rss_limit_mb=512 -malloc_limit_mb=256 -timeout=5 tests/fuzz/corpus/task
 */
#define _GNU_SOURCE /* memfd_create */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "safetensors.h"
#include "task.h"
#include "vit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static vit_model *model;   /* the fixed backbone */
static vit_state *state;   /* batch 1, for task_forward */
static char fingerprint[65];
static int memfd = -1;     /* holds the current input */
static char memfd_path[64];

/* Writes the seed files into dir: a good task of 3 and of 1 classes, and
 * near misses (a label with a control character, more labels than classes,
 * a stray tensor, a missing bias, a NaN, another backbone). */
static void write_seeds(const char *dir)
{
    vit_error err;
    static const char *const labels3[] = {"cat", "caf\xc3\xa9, cr\xc3\xa8me", "\xe7\x8c\xab"};
    static const char *const labels1[] = {"only"};
    struct { const char *file; int k; const char *const *labels; } good[] = {
        {"good3.safetensors", 3, labels3}, {"good1.safetensors", 1, labels1},
    };
    char path[4096];
    for (size_t g = 0; g < sizeof good / sizeof good[0]; g++) {
        vit_task *t;
        VIT_ASSERT(task_create(model, good[g].k, good[g].labels, &t, &err) == VIT_OK);
        for (size_t i = 0; i < t->trainable_len; i++)
            t->trainable[i] += 0.01f * (float)(i % 7) - 0.03f;
        snprintf(path, sizeof path, "%s/%s", dir, good[g].file);
        VIT_ASSERT(task_save(model, t, NULL, path, &err) == VIT_OK);
        task_free(t);
    }
    /* near misses, rewritten from good3 */
    static const struct {
        const char *file, *meta_key, *meta_value, *drop, *add, *nan_in;
    } edits[] = {
        {"label_esc.safetensors", .meta_key = "labels",
         .meta_value = "[\"cat\",\"\\u001b[31mred\",\"dog\"]"},
        {"label_nl.safetensors", .meta_key = "labels",
         .meta_value = "[\"cat\",\"a\\nb\",\"dog\"]"},
        {"labels4.safetensors", .meta_key = "labels", .meta_value = "[\"a\",\"b\",\"c\",\"d\"]"},
        {"other_base.safetensors", .meta_key = "base_model",
         .meta_value = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"},
        {"missing.safetensors", .drop = "blocks.1.attn.qkv.bias"},
        {"extra.safetensors", .add = "blocks.0.attn.bogus.bias"},
        {"nan.safetensors", .nan_in = "norm.bias"},
    };
    snprintf(path, sizeof path, "%s/good3.safetensors", dir);
    st_file *f;
    VIT_ASSERT(st_open(path, &f, &err) == VIT_OK);
    for (size_t e = 0; e < sizeof edits / sizeof edits[0]; e++) {
        st_writer *w = st_writer_create();
        VIT_ASSERT(w);
        for (size_t i = 0; i < st_count(f); i++) {
            const st_tensor *t = st_tensor_at(f, i);
            if (edits[e].drop && strcmp(t->name, edits[e].drop) == 0)
                continue;
            float *v = malloc(t->numel * sizeof *v + 1);
            VIT_ASSERT(v && st_read_f32(f, t, v, &err) == VIT_OK);
            if (edits[e].nan_in && strcmp(t->name, edits[e].nan_in) == 0)
                v[0] = NAN;
            VIT_ASSERT(st_writer_add_f32(w, t->name, t->ndim, t->shape, v, &err) == VIT_OK);
            free(v);
        }
        if (edits[e].add) {
            int64_t one[1] = {1};
            VIT_ASSERT(st_writer_add_f32(w, edits[e].add, 1, one, (float[1]){1}, &err) == 0);
        }
        const char *k, *v;
        for (size_t i = 0; st_metadata_at(f, i, &k, &v); i++)
            if (!edits[e].meta_key || strcmp(k, edits[e].meta_key) != 0)
                VIT_ASSERT(st_writer_set_metadata(w, k, v, &err) == VIT_OK);
        if (edits[e].meta_key)
            VIT_ASSERT(st_writer_set_metadata(w, edits[e].meta_key, edits[e].meta_value, &err) ==
                       VIT_OK);
        snprintf(path, sizeof path, "%s/%s", dir, edits[e].file);
        VIT_ASSERT(st_writer_save(w, path, &err) == VIT_OK);
        st_writer_free(w);
    }
    st_close(f);
}

/* Builds the backbone, its fingerprint, a state and the memfd, once. */
static void init(void)
{
    vit_config c;
    vit_error err;
    VIT_ASSERT(vit_config_preset("vit-tiny", &c, &err) == VIT_OK);
    c.image_size = 8, c.patch_size = 4, c.width = 8, c.depth = 2, c.heads = 2;
    c.mlp_dim = 16, c.num_classes = 3;
    c.preprocess = img_preprocess_timm_in21k(8);
    VIT_ASSERT(vit_model_create(&c, &model, &err) == VIT_OK);
    vit_model_randomize(model, 7);
    VIT_ASSERT(vit_model_fingerprint(model, fingerprint, &err) == VIT_OK);
    VIT_ASSERT(vit_state_create(model, 1, 1, &state, &err) == VIT_OK);
    memfd = memfd_create("fuzz_task", MFD_CLOEXEC);
    VIT_ASSERT(memfd >= 0);
    snprintf(memfd_path, sizeof memfd_path, "/proc/self/fd/%d", memfd);
    const char *seeds = getenv("VITFIT_FUZZ_TASK_SEEDS");
    if (seeds)
        write_seeds(seeds);
}

/* Puts the input in the memfd; false if it could not. */
static int put_input(const uint8_t *data, size_t size)
{
    if (ftruncate(memfd, 0) != 0)
        return 0;
    for (size_t done = 0; done < size;) {
        ssize_t n = pwrite(memfd, data + done, size - done, (off_t)done);
        if (n <= 0)
            return 0;
        done += (size_t)n;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!model)
        init();
    if (!put_input(data, size))
        return 0;
    vit_task *t = (vit_task *)&t; /* must be reset to NULL on failure */
    vit_error err;
    vit_status s = task_load_fingerprint(model, fingerprint, memfd_path, &t, &err);
    if (s != VIT_OK) {
        VIT_ASSERT(t == NULL && err.code == s && err.message[0] != '\0');
        VIT_ASSERT(strchr(err.message, '\n') == NULL);
        return 0;
    }
    int k = t->num_classes;
    size_t F = (size_t)vit_config_feature_dim(&model->cfg);
    VIT_ASSERT(k >= 1 && k <= TASK_MAX_CLASSES && t->labels);
    VIT_ASSERT(t->trainable_len == task_bias_len(model) + (size_t)k * (F + 1));
    VIT_ASSERT(strcmp(t->base_model, fingerprint) == 0);
    for (int i = 0; i < k; i++) {
        size_t at, len = strlen(t->labels[i]);
        VIT_ASSERT(len <= TASK_MAX_LABEL && vit_label_problem(t->labels[i], len, &at) == NULL);
    }
    float max_abs = 0;
    for (size_t i = 0; i < t->trainable_len; i++) {
        VIT_ASSERT(isfinite(t->trainable[i]));
        max_abs = fmaxf(max_abs, fabsf(t->trainable[i]));
    }

    /* one image through the task */
    float x[3 * 8 * 8];
    for (size_t i = 0; i < sizeof x / sizeof x[0]; i++)
        x[i] = (float)(i % 11) / 5.0f - 1.0f;
    float *logits = malloc((size_t)k * sizeof *logits);
    VIT_ASSERT(logits);
    const vit_task *tasks[1] = {t};
    float *out[1] = {logits};
    VIT_ASSERT(task_forward(model, state, x, 1, tasks, out, &err) == VIT_OK);
    /* values near FLT_MAX may overflow on the way (inf - inf is NaN): only
     * a task of ordinary values must give finite logits */
    for (int i = 0; i < k && max_abs <= 1e4f; i++)
        VIT_ASSERT(isfinite(logits[i]));
    free(logits);
    task_free(t);
    return 0;
}
