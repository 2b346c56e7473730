/*
 * image_impl.h - internal seam between image.c and image_stb.c.
 *
 * image_stb.c is the only translation unit that includes stb_image.h; these
 * few functions are all the rest of the image module sees of it.  Not part of
 * the engine's public API: nothing outside engine/image*.c includes this.
 */
#ifndef VIT_IMAGE_IMPL_H
#define VIT_IMAGE_IMPL_H

#include <stddef.h>
#include <stdint.h>

/* stb_image is compiled to refuse any side longer than this (corrupt or
 * hostile headers); image.c reports it as VIT_ERR_TOO_LARGE. */
#define IMG_STB_MAX_SIDE 16384

/* Decoder memory per pixel of the caller's pixel budget (see img_decode),
 * and the least budget whatever max_pixels (tiny images' fixed costs). */
#define IMG_DECODE_BYTES_PER_PIXEL 12
#define IMG_DECODE_MIN_BYTES 4096

/* Result of an stb call: ok == 1 on success; otherwise reason is a static
 * failure string (stb's, e.g. "bad huffman code", or one of our guards'),
 * never NULL; too_large is 1 when the dimensions or the decoding work are
 * over a limit, nomem 1 when memory ran out. */
typedef struct img_stb_result {
    int ok;
    int too_large;
    int nomem;
    const char *reason;
} img_stb_result;

/* The formats stb is built for; image.c has already sniffed which one. */
typedef enum img_stb_format { IMG_STB_JPEG, IMG_STB_PNG, IMG_STB_BMP } img_stb_format;

/* Reads width, height and channel count from the header of a `format` file
 * without decoding.  Asking the one format's reader (rather than stb's
 * try-every-format stbi_info) keeps its specific failure reason. */
img_stb_result img_stb_info(img_stb_format format, const uint8_t *data, size_t len, int *w,
                            int *h, int *channels);

/* Decodes to 8-bit RGB (grey replicated, alpha dropped).  Before stb runs,
 * the guards of image_stb.c refuse what stb 2.27 would decode unsafely or
 * at a cost out of proportion to the image (PNG data inflating past what
 * the header's dimensions need; JPEG scan bombs, DC overflow, scan data
 * running out, bad DHT), and a PNG or JPEG whose decoding needs more than
 * max_bytes of pixel memory (too_large, with the need in *need_bytes;
 * otherwise *need_bytes is 0 or the file's need; a JPEG's MCU padding is
 * granted IMG_DECODE_BYTES_PER_PIXEL a pixel on top of max_bytes).  Palettes shorter than
 * their indices are padded as PIL reads them (grey i for index i).  On
 * success *pixels is a malloc'd buffer of (*w) * (*h) * 3 bytes that the
 * caller releases with free(); on failure *pixels is NULL. */
img_stb_result img_stb_decode_rgb(const uint8_t *data, size_t len, uint64_t max_bytes,
                                  uint64_t *need_bytes, uint8_t **pixels, int *w, int *h);

#endif
