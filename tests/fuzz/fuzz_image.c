/*
 * fuzz_image.c - libFuzzer target for image decoding and preprocessing.
 *
 * Feeds arbitrary bytes to img_decode (pixel budget 4096 x 4096, input bound
 * 4 MiB, like an upload limit) and, when that succeeds, runs the whole
 * preprocessing path on a small preset, so the sniffing, the EXIF walk, stb
 * and the resampler all see hostile input.  Any crash, sanitizer report or
 * leak is a bug; error returns are the expected outcome for most inputs.
 *
 *   CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined
 *   ./build-fuzz/tests/fuzz/fuzz_image -max_total_time=120 tests/fuzz/corpus/image
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "image.h"

#define FUZZ_MAX_PIXELS ((size_t)4096 * 4096)
#define FUZZ_MAX_BYTES ((size_t)4 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_MAX_BYTES)
        return 0;
    img_image img;
    vit_error err;
    vit_status s = img_decode(data, size, FUZZ_MAX_PIXELS, &img, &err);
    if (s != VIT_OK) {
        /* A failure must leave nothing behind and explain itself. */
        VIT_ASSERT(img.pixels == NULL && err.code == s && err.message[0] != '\0');
        return 0;
    }
    VIT_ASSERT(img.pixels && img.width > 0 && img.height > 0);
    VIT_ASSERT((size_t)img.width * (size_t)img.height <= FUZZ_MAX_PIXELS);

    /* Both interpolations and both resize modes, on small outputs. */
    float out[3 * 32 * 32];
    img_preprocess cfg = img_preprocess_hf(32);
    s = img_to_tensor(&img, &cfg, out, &err);
    VIT_ASSERT(s == VIT_OK || s == VIT_ERR_NOMEM);
    cfg = img_preprocess_clip(24);
    s = img_to_tensor(&img, &cfg, out, &err);
    VIT_ASSERT(s == VIT_OK || s == VIT_ERR_NOMEM);
    for (size_t i = 0; i < 3 * 24 * 24; i++)
        VIT_ASSERT(out[i] == out[i]); /* no NaN */
    img_free(&img);
    return 0;
}
