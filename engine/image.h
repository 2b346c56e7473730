/*
 * image.h - decode images and turn them into model input.
 *
 * Decoding uses stb_image compiled for JPEG, PNG and BMP only (image_stb.c);
 * every other format, GIF/PSD/PIC/HDR/TGA/PNM included, is refused with a clear
 * error before any decoder runs.  Dimensions are checked with stbi_info before
 * decoding and refused above a caller-given pixel budget.  Grey and alpha
 * images become RGB (alpha dropped, as PIL's convert("RGB") does).  The JPEG
 * EXIF orientation tag is honoured.
 *
 * Preprocessing reproduces torchvision's transforms on PIL images:
 * Resize (PIL Image.resize with antialiasing, bilinear or bicubic), CenterCrop,
 * ToTensor, Normalize.
 */
#ifndef VIT_IMAGE_H
#define VIT_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* An 8-bit RGB image, rows top to bottom, pixels interleaved RGBRGB... */
typedef struct img_image {
    int width;
    int height;
    uint8_t *pixels; /* width * height * 3 bytes, owned (free with img_free) */
} img_image;

/* Decodes JPEG, PNG or BMP bytes.  Refuses more than max_pixels pixels
 * (width * height) with VIT_ERR_TOO_LARGE, other formats with
 * VIT_ERR_UNSUPPORTED, corrupt data with VIT_ERR_FORMAT.  On success *out
 * owns its pixels.
 * Details: the format is sniffed from magic bytes (unknown bytes are
 * VIT_ERR_UNSUPPORTED "not a JPEG, PNG or BMP image"; 0 bytes are
 * VIT_ERR_FORMAT); the size limit is checked from the header before any
 * pixel memory is allocated, and the decoding work stays proportional to
 * it: PNG data inflating past what the header needs is VIT_ERR_FORMAT, a
 * JPEG with more than 500 scans or scans decoding its blocks more than 16
 * times over (once, if sequential) is VIT_ERR_TOO_LARGE, one whose scan
 * data is too short for its blocks or runs out is VIT_ERR_FORMAT (all
 * planned from the markers before decoding); a PNG or JPEG whose decoding
 * needs more than 12 bytes of memory per pixel of max_pixels (at least 4
 * KiB; 16-bit, many channels, interlaced PNGs: up to 20 per pixel of
 * their own, progressive CMYK JPEGs 15) is VIT_ERR_TOO_LARGE, so every
 * 8-bit PNG and every grey or YCbCr JPEG within max_pixels loads; palette
 * indices past a short palette read as grey (i, i, i), as PIL does; a BMP
 * whose pixel data starts inside its header is VIT_ERR_FORMAT; truncated
 * JPEG/BMP/PNG data is VIT_ERR_FORMAT (PIL refuses it too); JPEG EXIF
 * orientations 2..8 (SHORT or LONG, either byte order) are applied like
 * PIL's ImageOps.exif_transpose.  On failure *out is zeroed.  Thread-safe. */
vit_status img_decode(const uint8_t *data, size_t len, size_t max_pixels, img_image *out,
                      vit_error *err);

/* Reads a file (refusing more than max_bytes) and decodes it.  Missing file:
 * VIT_ERR_NOT_FOUND; unreadable, a directory or anything but a regular file
 * (a FIFO, socket or device: refused without blocking or reading):
 * VIT_ERR_IO; over max_bytes: VIT_ERR_TOO_LARGE; then as img_decode.
 * Messages name the path. */
vit_status img_load_file(const char *path, size_t max_bytes, size_t max_pixels, img_image *out,
                         vit_error *err);

void img_free(img_image *img);

typedef enum img_interp { IMG_BILINEAR, IMG_BICUBIC } img_interp;

/* How an image becomes a (3, crop_h, crop_w) float tensor. */
typedef struct img_preprocess {
    int resize_shorter; /* >0: Resize(int): shorter side to this, aspect kept;
                           0: resize both sides straight to (crop_h, crop_w) */
    int crop_h, crop_w; /* CenterCrop size == output size */
    img_interp interp;
    float mean[3];
    float std[3];
} img_preprocess;

/* Presets named in DESIGN.md. */
img_preprocess img_preprocess_timm_in21k(int size); /* bicubic, crop_pct 0.9, mean=std=0.5 */
img_preprocess img_preprocess_modelscope(void);     /* resize 256 bilinear, crop 224, ImageNet */
img_preprocess img_preprocess_clip(int size);       /* bicubic resize to size, crop, CLIP mean/std */
img_preprocess img_preprocess_hf(int size);         /* both sides to size, bilinear, 0.5/0.5 */

/* Resize + crop + normalize img into out, laid out (3, crop_h, crop_w) planar
 * CHW float.  Allocates only temporaries; returns VIT_ERR_NOMEM or
 * VIT_ERR_INVALID (bad cfg). */
vit_status img_to_tensor(const img_image *img, const img_preprocess *cfg, float *out,
                         vit_error *err);

/* Lower-level pieces, exposed for tests. */
/* PIL-compatible resample of an RGB image to (w, h); *out owns its pixels. */
vit_status img_resize(const img_image *img, int w, int h, img_interp interp, img_image *out,
                      vit_error *err);

/* Resize + CenterCrop exactly as img_to_tensor does, stopping at 8-bit RGB:
 * the PIL image torchvision's ToTensor would see.  *out is crop_w x crop_h
 * and owns its pixels (free with img_free); parts of the crop outside the
 * resized image are zero, as torchvision pads them.  Only the cropped window
 * of the resize is computed. */
vit_status img_resize_crop(const img_image *img, const img_preprocess *cfg, img_image *out,
                           vit_error *err);

#endif
