/*
 * fuzz_config.c - libFuzzer target for a checkpoint directory's side files.
 *
 * The input is split at NUL bytes into config.json, preprocessor_config.json
 * and labels.txt (a missing or empty part is an absent file; NUL never occurs
 * in valid JSON and labels.txt refuses it).  The weights are fixed: a tiny timm
 * checkpoint (8 px, patch 4, width 8, 2 blocks, 3 classes) built once in
 * memory.  Each input goes through vit_model_load_memory -- layout, config,
 * the check against the tensors, labels, arenas, copy, packing -- as
 * vit_model_load runs it after reading the files.
 *
 * Whatever loads must be a usable model: its config validates, the labels
 * match the head, and a small image preprocessed as the config says and run
 * forward gives finite outputs (a config that yields NaN scores is a bug).
 * Memory stays small for every input because the config is compared with the
 * fixed tensors before anything is allocated for it.
 *
 *   CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined
 *   ./build-fuzz/tests/fuzz/fuzz_config -dict=tests/fuzz/config.dict \
 *       -max_total_time=120 tests/fuzz/corpus/config
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"
#include "vit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void *weights;     /* the fixed checkpoint, serialized */
static size_t weights_len;

/* Builds the fixed checkpoint once: canonical (= timm) names, randinit values. */
static void make_weights(void)
{
    vit_config c;
    vit_error err;
    VIT_ASSERT(vit_config_preset("vit-tiny", &c, &err) == VIT_OK);
    c.image_size = 8, c.patch_size = 4, c.width = 8, c.depth = 2, c.heads = 2;
    c.mlp_dim = 16, c.num_classes = 3;
    c.preprocess = img_preprocess_timm_in21k(8);
    vit_model *m = NULL;
    VIT_ASSERT(vit_model_create(&c, &m, &err) == VIT_OK);
    vit_model_randomize(m, 7);
    st_writer *w = st_writer_create();
    VIT_ASSERT(w);
    for (size_t i = 0; i < m->num_params; i++) {
        const vit_param *p = &m->params[i];
        VIT_ASSERT(st_writer_add_f32(w, p->name, p->ndim, p->shape, p->data, &err) == VIT_OK);
    }
    VIT_ASSERT(st_writer_serialize(w, &weights, &weights_len, &err) == VIT_OK);
    st_writer_free(w);
    vit_model_free(m);
}

/* Takes the bytes up to the next NUL (or the end) as one side file; an empty
 * part is an absent file. */
static const char *next_part(const uint8_t **data, size_t *size, size_t *len)
{
    *len = 0;
    if (*size == 0)
        return NULL;
    const uint8_t *start = *data, *nul = memchr(start, '\0', *size);
    *len = nul ? (size_t)(nul - start) : *size;
    *data += *len + (nul != NULL);
    *size -= *len + (nul != NULL);
    return *len ? (const char *)start : NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!weights)
        make_weights();
    if (size > 64 * 1024) /* side files are small; keep runs fast */
        return 0;
    vit_side_files side = {0};
    side.config = next_part(&data, &size, &side.config_len);
    side.preprocessor = next_part(&data, &size, &side.preprocessor_len);
    side.labels = next_part(&data, &size, &side.labels_len);

    vit_model *m = NULL;
    vit_error err;
    vit_status s = vit_model_load_memory(weights, weights_len, &side, &m, &err);
    if (s != VIT_OK) {
        VIT_ASSERT(m == NULL && err.code == s && err.message[0] != '\0');
        return 0;
    }
    const vit_config *c = &m->cfg;
    VIT_ASSERT(vit_config_validate(c, &err) == VIT_OK);
    VIT_ASSERT(c->width == 8 && c->patch_size == 4 && c->image_size == 8);
    if (c->num_classes > 0)
        for (int k = 0; k < c->num_classes; k++)
            VIT_ASSERT(m->labels && m->labels[k]);

    /* a 5 x 3 image through the config's preprocessing and the model */
    uint8_t pixels[5 * 3 * 3];
    for (size_t i = 0; i < sizeof pixels; i++)
        pixels[i] = (uint8_t)(i * 37);
    img_image img = {5, 3, pixels};
    float x[3 * 8 * 8], y[8];
    vit_state *st = NULL;
    VIT_ASSERT(img_to_tensor(&img, &c->preprocess, x, &err) == VIT_OK);
    VIT_ASSERT(vit_state_create(m, 1, 1, &st, &err) == VIT_OK);
    VIT_ASSERT(vit_forward(m, st, x, 1, y, &err) == VIT_OK);
    for (int i = 0; i < vit_config_output_dim(c); i++)
        VIT_ASSERT(isfinite(y[i]));
    vit_state_free(st);
    vit_model_free(m);
    return 0;
}
