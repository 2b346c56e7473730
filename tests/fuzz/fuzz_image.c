/*
 * fuzz_image.c - libFuzzer target for image decoding and preprocessing.
 *
 * Feeds arbitrary bytes to img_decode (pixel budget 512 x 512, input bound
 * 4 MiB, like an upload limit) and, when that succeeds, runs the whole
 * preprocessing path on a small preset, so the sniffing, the EXIF walk, the
 * guards of image_stb.c, stb and the resampler all see hostile input.  Any
 * crash, sanitizer report or leak is a bug; error returns are the expected
 * outcome for most inputs.
 *
 * Resource bombs count as findings too: test.sh runs this target with
 * -rss_limit_mb=512 -malloc_limit_mb=256 -timeout=5, so the budget must keep
 * everything the decoder accepts far inside those.  At 512 x 512 pixels:
 * decoding work is bounded by the JPEG guard (16 block decodes per block,
 * one if sequential, and no bit read past the end of the data: the old
 * worst case, 16 passes over zero-filled data, took 0.28 s under clang
 * ASan+UBSan here, 18 s at a 4096 x 4096 budget, and is refused now), and
 * decoder memory by img_decode's byte budget, 12 bytes a pixel = 3 MiB for
 * the pixel buffers (a 16-bit RGBA Adam7 PNG needs 20 a pixel: refused
 * from 400 x 400 on; a progressive CMYK JPEG 15: from 468 x 468 on), far
 * under -malloc_limit_mb=256 with the 4 MiB input (a palette PNG's padded
 * copy: one PLTE, at most 772 bytes more).
 * So a timeout or an RSS/malloc limit hit here means work or memory out of
 * proportion to the image: a bomb.
 *
 *   CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined
 *   ./build-fuzz/tests/fuzz/fuzz_image -dict=tests/fuzz/image.dict \
 *       -rss_limit_mb=512 -malloc_limit_mb=256 -timeout=5 -max_total_time=120 \
 *       tests/fuzz/corpus/image
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "image.h"

#define FUZZ_MAX_PIXELS ((size_t)512 * 512)
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
