/*
 * test_image.c - image decoding and preprocessing vs PIL / torchvision.
 *
 * Goldens come from tools/reference/gen_image_goldens.py and live in
 * tests/data/images/goldens.safetensors as U8 (3, H, W) tensors:
 *   decode/<file>  PIL's Image.open(file).convert("RGB")
 *   exif/<file>    PIL's ImageOps.exif_transpose of the same
 *   resize/<case>  torchvision Resize + CenterCrop (before ToTensor)
 * with the cases described by JSON strings in __metadata__.
 *
 * What must hold:
 *   - PNG and BMP decode bit-exact; JPEG within a few levels (libjpeg and
 *     stb_image use different IDCT/upsampling; the max is printed);
 *   - resize + crop from PIL's own decoded pixels bit-exact (0 levels), and
 *     img_to_tensor within 2/255 of the golden after de-normalizing;
 *   - EXIF orientations 2..8 give PIL's geometry;
 *   - every bad input gets its status and a message, limits are enforced,
 *     and concurrent decodes keep their own stb failure reasons.
 * Paths are relative to $VITFIT_SOURCE_ROOT (meson sets it; default ".").
 */
#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "image.h"
#include "safetensors.h"

#define MAX_BYTES (16u << 20)
#define MAX_PIXELS (64u << 20)

static const char *source_root(void)
{
    const char *r = getenv("VITFIT_SOURCE_ROOT");
    return r && *r ? r : ".";
}

/* Full path of a fixture under tests/data/images (static buffer per call site
 * is not enough for two at once, so callers pass their own). */
static const char *fixture(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/tests/data/images/%s", source_root(), name);
    return buf;
}

static vit_status load(const char *name, img_image *img, vit_error *err)
{
    char p[4096];
    return img_load_file(fixture(p, sizeof p, name), MAX_BYTES, MAX_PIXELS, img, err);
}

/* Reads golden tensor `name` (U8, (3, H, W)) into a new HWC img_image.
 * Returns 0 (and counts a failure) if absent or malformed. */
static int golden_image(const st_file *st, const char *name, img_image *out)
{
    const st_tensor *t = st_find(st, name);
    CHECKF(t != NULL, "golden %s missing", name);
    if (!t)
        return 0;
    CHECKF(t->ndim == 3 && t->shape[0] == 3, "golden %s has a bad shape", name);
    if (t->ndim != 3 || t->shape[0] != 3)
        return 0;
    int h = (int)t->shape[1], w = (int)t->shape[2];
    float *chw = malloc(t->numel * sizeof *chw);
    out->pixels = malloc(t->numel);
    VIT_ASSERT(chw && out->pixels);
    vit_error err;
    vit_status s = st_read_f32(st, t, chw, &err);
    CHECKF(s == VIT_OK, "reading %s: %s", name, err.message);
    size_t plane = (size_t)w * (size_t)h;
    for (int c = 0; c < 3; c++)
        for (size_t i = 0; i < plane; i++)
            out->pixels[3 * i + (size_t)c] = (uint8_t)chw[(size_t)c * plane + i];
    free(chw);
    out->width = w;
    out->height = h;
    return s == VIT_OK;
}

/* Max |a - b| over two equally sized RGB images, in uint8 levels; also the
 * mean through *mean if not NULL.  Returns 256 on a size mismatch. */
static int max_diff(const img_image *a, const img_image *b, double *mean)
{
    if (a->width != b->width || a->height != b->height)
        return 256;
    size_t n = (size_t)a->width * (size_t)a->height * 3;
    int m = 0;
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a->pixels[i] - (int)b->pixels[i]);
        sum += d;
        if (d > m)
            m = d;
    }
    if (mean)
        *mean = sum / (double)n;
    return m;
}

/* Parses metadata key `key` (a JSON array string) of the goldens file. */
static json_t *meta_array(const st_file *st, const char *key)
{
    const char *s = st_metadata(st, key);
    CHECKF(s != NULL, "goldens: __metadata__.%s missing", key);
    if (!s)
        return NULL;
    json_error_t jerr;
    json_t *j = json_loads(s, 0, &jerr);
    CHECKF(j && json_is_array(j), "goldens: __metadata__.%s: %s", key, jerr.text);
    return j;
}

/* ---------------------------------------------------------------- decode */

static void test_decode(const st_file *st)
{
    json_t *arr = meta_array(st, "decode");
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e) {
        const char *name = json_string_value(json_object_get(e, "name"));
        const char *file = json_string_value(json_object_get(e, "file"));
        int exact = json_is_true(json_object_get(e, "exact"));
        img_image want = {0}, got = {0};
        vit_error err;
        if (!golden_image(st, name, &want))
            continue;
        vit_status s = load(file, &got, &err);
        CHECKF(s == VIT_OK, "decoding %s: %s", file, err.message);
        if (s == VIT_OK) {
            double mean = 0;
            int d = max_diff(&got, &want, &mean);
            CHECKF(got.width == want.width && got.height == want.height,
                   "%s: %dx%d, PIL %dx%d", file, got.width, got.height, want.width,
                   want.height);
            fprintf(stderr, "decode %-24s %3dx%-3d max diff vs PIL %d levels (mean %.3f)%s\n",
                    file, got.width, got.height, d, mean, exact ? " [must be exact]" : "");
            if (exact)
                CHECKF(d == 0, "%s must decode exactly like PIL, max diff %d", file, d);
            else
                CHECKF(d <= 16 && mean < 1.0, "%s: JPEG decode too far from PIL: max %d, "
                       "mean %.3f", file, d, mean);
        }
        img_free(&got);
        img_free(&want);
    }
    json_decref(arr);
}

static void test_exif(const st_file *st)
{
    json_t *arr = meta_array(st, "exif");
    size_t i;
    json_t *e;
    int worst = 0;
    json_array_foreach(arr, i, e) {
        const char *name = json_string_value(json_object_get(e, "name"));
        const char *file = json_string_value(json_object_get(e, "file"));
        img_image want = {0}, got = {0};
        vit_error err;
        if (!golden_image(st, name, &want))
            continue;
        vit_status s = load(file, &got, &err);
        CHECKF(s == VIT_OK, "decoding %s: %s", file, err.message);
        if (s == VIT_OK) {
            int d = max_diff(&got, &want, NULL);
            CHECKF(got.width == want.width && got.height == want.height,
                   "%s: oriented to %dx%d, PIL %dx%d", file, got.width, got.height,
                   want.width, want.height);
            /* A wrong flip/rotation moves the red and blue corner blocks:
             * differences of ~200 levels.  IDCT differences stay tiny. */
            CHECKF(d <= 8, "%s: max diff vs PIL exif_transpose %d", file, d);
            if (d > worst)
                worst = d;
        }
        img_free(&got);
        img_free(&want);
    }
    fprintf(stderr, "exif orientations 2..8 (+ big-endian 6): max diff vs PIL %d levels\n",
            worst);
    json_decref(arr);
}

/* ---------------------------------------------------------------- resize */

static void test_resize_goldens(const st_file *st)
{
    json_t *arr = meta_array(st, "cases");
    size_t i;
    json_t *e;
    int worst_exact = 0, worst_e2e = 0;
    double worst_tensor = 0;
    json_array_foreach(arr, i, e) {
        const char *name = json_string_value(json_object_get(e, "name"));
        const char *source = json_string_value(json_object_get(e, "source"));
        const char *interp = json_string_value(json_object_get(e, "interp"));
        img_preprocess cfg = img_preprocess_hf(1);
        cfg.resize_shorter = (int)json_integer_value(json_object_get(e, "resize_shorter"));
        cfg.crop_h = (int)json_integer_value(json_object_get(e, "crop_h"));
        cfg.crop_w = (int)json_integer_value(json_object_get(e, "crop_w"));
        cfg.interp = strcmp(interp, "bicubic") == 0 ? IMG_BICUBIC : IMG_BILINEAR;
        /* Unusual mean/std so that de-normalizing is really exercised. */
        const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
        memcpy(cfg.mean, mean, sizeof mean);
        memcpy(cfg.std, std, sizeof std);

        char dname[256];
        snprintf(dname, sizeof dname, "decode/%s", source);
        img_image src = {0}, want = {0}, got = {0}, file_img = {0};
        vit_error err;
        if (!golden_image(st, dname, &src) || !golden_image(st, name, &want)) {
            img_free(&src);
            img_free(&want);
            continue;
        }

        /* 1. From PIL's decoded pixels: must be bit-exact. */
        vit_status s = img_resize_crop(&src, &cfg, &got, &err);
        CHECKF(s == VIT_OK, "%s: %s", name, err.message);
        int d = s == VIT_OK ? max_diff(&got, &want, NULL) : 256;
        CHECKF(d == 0, "%s: resize+crop differs from PIL by %d levels", name, d);
        if (d > worst_exact)
            worst_exact = d;

        /* 2. The float tensor, de-normalized back to levels. */
        size_t plane = (size_t)cfg.crop_w * (size_t)cfg.crop_h;
        float *t = malloc(plane * 3 * sizeof *t), *ref = malloc(plane * 3 * sizeof *ref);
        VIT_ASSERT(t && ref);
        s = img_to_tensor(&src, &cfg, t, &err);
        CHECKF(s == VIT_OK, "%s: img_to_tensor: %s", name, err.message);
        for (int c = 0; c < 3; c++)
            for (size_t k = 0; k < plane; k++) {
                float *v = &t[(size_t)c * plane + k];
                *v = (*v * cfg.std[c] + cfg.mean[c]) * 255.0f;
                ref[(size_t)c * plane + k] = want.pixels[3 * k + (size_t)c];
            }
        char what[300];
        snprintf(what, sizeof what, "%s tensor (levels)", name);
        double td = check_close(what, t, ref, plane * 3, 2.0, 0);
        if (td > worst_tensor)
            worst_tensor = td;

        /* 3. End to end from the file with our own decoder (JPEG sources
         *    differ by the decoder difference; reported, loosely bounded). */
        s = load(source, &file_img, &err);
        CHECKF(s == VIT_OK, "%s: %s", source, err.message);
        img_image e2e = {0};
        if (s == VIT_OK && img_resize_crop(&file_img, &cfg, &e2e, &err) == VIT_OK) {
            double mean_d = 0;
            int d2 = max_diff(&e2e, &want, &mean_d);
            fprintf(stderr, "resize %-30s %3dx%-3d from PIL pixels: %d levels; from file: "
                    "%d levels (mean %.3f)\n", name + 7, cfg.crop_w, cfg.crop_h, d, d2,
                    mean_d);
            CHECKF(d2 <= 16 && mean_d < 1.0, "%s end to end: max %d mean %.3f", name, d2,
                   mean_d);
            if (d2 > worst_e2e)
                worst_e2e = d2;
        }
        img_free(&e2e);
        img_free(&file_img);
        free(t);
        free(ref);
        img_free(&src);
        img_free(&want);
        img_free(&got);
    }
    fprintf(stderr, "resize goldens: max diff %d levels from PIL pixels, tensor %.3g levels, "
            "%d levels end to end\n", worst_exact, worst_tensor, worst_e2e);
    json_decref(arr);
}

/* Deterministic test picture with edges and gradients. */
static img_image pattern(int w, int h, unsigned seed)
{
    img_image img = {w, h, malloc((size_t)w * (size_t)h * 3)};
    VIT_ASSERT(img.pixels);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < (size_t)w * (size_t)h * 3; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        img.pixels[i] = (uint8_t)(((i / 3) % (size_t)w) * 255 / (size_t)w / 2 + (x & 127));
    }
    return img;
}

/* The cropped window must equal cropping the full resize (the window
 * optimisation must not change a single pixel), including padding. */
static void test_window_consistency(void)
{
    const int sizes[][2] = {{37, 23}, {23, 37}, {5, 90}, {64, 64}, {1, 1}, {2, 300}};
    const int cfgs[][3] = {{16, 16, 16}, {40, 30, 50}, {0, 13, 17}, {9, 20, 7}, {100, 64, 64}};
    int bad = 0;
    for (size_t a = 0; a < sizeof sizes / sizeof sizes[0]; a++) {
        img_image img = pattern(sizes[a][0], sizes[a][1], (unsigned)a);
        for (size_t b = 0; b < sizeof cfgs / sizeof cfgs[0]; b++) {
            for (int ip = 0; ip < 2; ip++) {
                img_preprocess cfg = img_preprocess_hf(1);
                cfg.resize_shorter = cfgs[b][0];
                cfg.crop_h = cfgs[b][1];
                cfg.crop_w = cfgs[b][2];
                cfg.interp = ip ? IMG_BICUBIC : IMG_BILINEAR;
                int w = img.width, h = img.height, rw, rh;
                if (cfg.resize_shorter == 0) {
                    rw = cfg.crop_w;
                    rh = cfg.crop_h;
                } else if (w <= h) {
                    rw = cfg.resize_shorter;
                    rh = (int)((double)cfg.resize_shorter * h / w);
                } else {
                    rh = cfg.resize_shorter;
                    rw = (int)((double)cfg.resize_shorter * w / h);
                }
                img_image full = {0}, crop = {0};
                vit_error err;
                CHECK(img_resize(&img, rw, rh, cfg.interp, &full, &err) == VIT_OK);
                CHECK(img_resize_crop(&img, &cfg, &crop, &err) == VIT_OK);
                /* torchvision: pad (c - r) // 2 before, else round-half-even offset. */
                for (int y = 0; y < cfg.crop_h; y++)
                    for (int x = 0; x < cfg.crop_w; x++)
                        for (int c = 0; c < 3; c++) {
                            int oy = cfg.crop_h > rh ? -((cfg.crop_h - rh) / 2)
                                                     : (int)nearbyint((rh - cfg.crop_h) / 2.0);
                            int ox = cfg.crop_w > rw ? -((cfg.crop_w - rw) / 2)
                                                     : (int)nearbyint((rw - cfg.crop_w) / 2.0);
                            int sy = y + oy, sx = x + ox, v = 0;
                            if (sy >= 0 && sy < rh && sx >= 0 && sx < rw)
                                v = full.pixels[((size_t)sy * (size_t)rw + (size_t)sx) * 3 +
                                                (size_t)c];
                            if (crop.pixels[((size_t)y * (size_t)cfg.crop_w + (size_t)x) * 3 +
                                            (size_t)c] != v)
                                bad++;
                        }
                img_free(&full);
                img_free(&crop);
            }
        }
        img_free(&img);
    }
    CHECKF(bad == 0, "%d pixels of the cropped window differ from the cropped full resize",
           bad);

    /* An extreme aspect ratio: shorter side 224 of a 1 x 4000 strip would be a
     * 224 x 896000 resize; only the crop is computed. */
    img_image strip = pattern(1, 4000, 7);
    img_preprocess cfg = img_preprocess_clip(224);
    float *t = malloc((size_t)3 * 224 * 224 * sizeof *t);
    VIT_ASSERT(t);
    vit_error err;
    CHECK(img_to_tensor(&strip, &cfg, t, &err) == VIT_OK);
    free(t);
    img_free(&strip);

    /* Same size: no resampling at all (PIL returns a copy). */
    img_image img = pattern(30, 20, 3), same = {0};
    CHECK(img_resize(&img, 30, 20, IMG_BICUBIC, &same, &err) == VIT_OK);
    CHECK(same.pixels && memcmp(same.pixels, img.pixels, 30 * 20 * 3) == 0);
    img_free(&same);
    img_free(&img);
}

static void test_presets(void)
{
    img_preprocess p = img_preprocess_timm_in21k(224);
    CHECK(p.resize_shorter == 248 && p.crop_h == 224 && p.crop_w == 224);
    CHECK(p.interp == IMG_BICUBIC && p.mean[1] == 0.5f && p.std[2] == 0.5f);
    CHECK(img_preprocess_timm_in21k(384).resize_shorter == 426);
    p = img_preprocess_modelscope();
    CHECK(p.resize_shorter == 256 && p.crop_h == 224 && p.interp == IMG_BILINEAR);
    CHECK(p.mean[0] == 0.485f && p.std[2] == 0.225f);
    p = img_preprocess_clip(336);
    CHECK(p.resize_shorter == 336 && p.crop_w == 336 && p.interp == IMG_BICUBIC);
    CHECK(p.mean[0] == 0.48145466f && p.std[1] == 0.26130258f);
    p = img_preprocess_hf(224);
    CHECK(p.resize_shorter == 0 && p.crop_h == 224 && p.interp == IMG_BILINEAR);

    /* Bad configs and arguments. */
    img_image img = pattern(8, 8, 1), out = {0};
    float t[3 * 4 * 4];
    vit_error err;
    p = img_preprocess_hf(4);
    p.std[1] = 0;
    CHECK(img_to_tensor(&img, &p, t, &err) == VIT_ERR_INVALID);
    p = img_preprocess_hf(0);
    CHECK(img_to_tensor(&img, &p, t, &err) == VIT_ERR_INVALID);
    p = img_preprocess_hf(4);
    p.resize_shorter = -1;
    CHECK(img_to_tensor(&img, &p, t, &err) == VIT_ERR_INVALID);
    CHECK(img_resize(&img, 0, 4, IMG_BILINEAR, &out, &err) == VIT_ERR_INVALID);
    CHECK(out.pixels == NULL);
    img_image empty = {0};
    CHECK(img_resize(&empty, 4, 4, IMG_BILINEAR, &out, &err) == VIT_ERR_INVALID);
    img_free(&img);
}

/* ---------------------------------------------------------------- errors */

/* Loads a fixture expecting status `want` and a message containing `needle`. */
static void expect_fail(const char *file, vit_status want, const char *needle)
{
    img_image img = {1, 1, NULL};
    vit_error err = {VIT_OK, ""};
    vit_status s = load(file, &img, &err);
    CHECKF(s == want, "%s: got %s (%s), want %s", file, vit_status_name(s), err.message,
           vit_status_name(want));
    CHECKF(err.message[0] && strstr(err.message, needle), "%s: message \"%s\" lacks \"%s\"",
           file, err.message, needle);
    CHECKF(img.pixels == NULL && img.width == 0, "%s: output not cleared", file);
    fprintf(stderr, "  %-16s -> %-11s %s\n", file, vit_status_name(s), err.message);
    img_free(&img);
}

/* Decodes bytes expecting status `want` and `needle` in the message. */
static void expect_mem(const char *what, const void *data, size_t len, vit_status want,
                       const char *needle)
{
    img_image img;
    vit_error err = {VIT_OK, ""};
    vit_status s = img_decode(data, len, MAX_PIXELS, &img, &err);
    CHECKF(s == want, "%s: got %s (%s)", what, vit_status_name(s), err.message);
    CHECKF(strstr(err.message, needle), "%s: message \"%s\" lacks \"%s\"", what, err.message,
           needle);
    if (s == VIT_OK)
        img_free(&img);
}

static void test_bad_inputs(void)
{
    fprintf(stderr, "bad inputs:\n");
    expect_fail("sample.gif", VIT_ERR_UNSUPPORTED,
                "GIF images are not supported (JPEG, PNG, BMP only)");
    expect_fail("huge.png", VIT_ERR_TOO_LARGE, "100000x100000 = 10000000000 pixels");
    expect_fail("corrupt.jpg", VIT_ERR_FORMAT, "corrupt JPEG image");
    expect_fail("truncated.png", VIT_ERR_FORMAT, "corrupt PNG image");
    expect_fail("truncated.jpg", VIT_ERR_FORMAT, "truncated");
    expect_fail("truncated.bmp", VIT_ERR_FORMAT, "truncated");
    expect_fail("bad_dht.jpg", VIT_ERR_FORMAT, "bad DHT header"); /* stb 2.27 overflow */
    expect_fail("empty.jpg", VIT_ERR_FORMAT, "empty");
    expect_fail("not_image.txt", VIT_ERR_UNSUPPORTED, "not a JPEG, PNG or BMP image");
    expect_fail("no_such_file.png", VIT_ERR_NOT_FOUND, "no_such_file.png");

    /* huge.png even with an unlimited budget: stb's per-side cap. */
    char p[4096];
    img_image img;
    vit_error err;
    vit_status s = img_load_file(fixture(p, sizeof p, "huge.png"), MAX_BYTES, SIZE_MAX, &img,
                                 &err);
    CHECKF(s == VIT_ERR_TOO_LARGE, "huge.png, no pixel limit: %s", err.message);

    /* Other formats by magic bytes, in memory. */
    expect_mem("webp", "RIFF\x10\0\0\0WEBPVP8 ", 16, VIT_ERR_UNSUPPORTED, "WebP");
    expect_mem("psd", "8BPS\0\1\0\0\0\0\0\0", 12, VIT_ERR_UNSUPPORTED, "PSD");
    expect_mem("hdr", "#?RADIANCE\n", 11, VIT_ERR_UNSUPPORTED, "HDR");
    expect_mem("rgbe", "#?RGBE\n", 7, VIT_ERR_UNSUPPORTED, "HDR");
    expect_mem("tiff", "II*\0\x08\0\0\0", 8, VIT_ERR_UNSUPPORTED, "TIFF");
    expect_mem("tiff-be", "MM\0*\0\0\0\x08", 8, VIT_ERR_UNSUPPORTED, "TIFF");
    expect_mem("ppm", "P6\n2 2\n255\n", 11, VIT_ERR_UNSUPPORTED, "PNM");
    expect_mem("pic", "\x53\x80\xF6\x34" "0000", 8, VIT_ERR_UNSUPPORTED, "PIC");
    expect_mem("gif87", "GIF87a\1\0\1\0", 10, VIT_ERR_UNSUPPORTED, "GIF");
    expect_mem("tga-ish", "\0\0\2\0\0\0\0\0\0\0\0\0\1\0\1\0\x18\0", 18, VIT_ERR_UNSUPPORTED,
               "not a JPEG, PNG or BMP");
    expect_mem("jpeg soi only", "\xFF\xD8\xFF", 3, VIT_ERR_FORMAT, "corrupt JPEG");
    expect_mem("png sig only", "\x89PNG\r\n\x1A\n", 8, VIT_ERR_FORMAT, "corrupt PNG");
    expect_mem("bm", "BM", 2, VIT_ERR_FORMAT, "corrupt BMP");
    expect_mem("null", NULL, 0, VIT_ERR_FORMAT, "empty");
}

static void test_limits(void)
{
    char p[4096];
    const char *files[] = {"chelsea.png", "coffee.jpg", "rocket.bmp"};
    for (size_t i = 0; i < 3; i++) {
        img_image img = {0};
        vit_error err;
        CHECK(load(files[i], &img, &err) == VIT_OK);
        size_t pixels = (size_t)img.width * (size_t)img.height;
        img_free(&img);
        fixture(p, sizeof p, files[i]);
        vit_status s = img_load_file(p, MAX_BYTES, pixels - 1, &img, &err);
        CHECKF(s == VIT_ERR_TOO_LARGE && strstr(err.message, "over the limit of"),
               "%s with max_pixels %zu: %s", files[i], pixels - 1, err.message);
        CHECK(img_load_file(p, MAX_BYTES, pixels, &img, &err) == VIT_OK);
        img_free(&img);

        FILE *f = fopen(p, "rb");
        VIT_ASSERT(f);
        fseek(f, 0, SEEK_END);
        size_t bytes = (size_t)ftell(f);
        fclose(f);
        s = img_load_file(p, bytes - 1, MAX_PIXELS, &img, &err);
        CHECKF(s == VIT_ERR_TOO_LARGE && strstr(err.message, "over the limit of"),
               "%s with max_bytes %zu: %s", files[i], bytes - 1, err.message);
        CHECK(img_load_file(p, bytes, MAX_PIXELS, &img, &err) == VIT_OK);
        img_free(&img);
    }
    /* A directory is not an image. */
    snprintf(p, sizeof p, "%s/tests/data/images", source_root());
    img_image img;
    vit_error err;
    CHECK(img_load_file(p, MAX_BYTES, MAX_PIXELS, &img, &err) == VIT_ERR_IO);
}

/* Grey, grey+alpha, RGBA and palette sources become RGB: R == G == B for
 * grey ones, alpha dropped (checked exactly against PIL in test_decode). */
static void test_channels(void)
{
    const char *grey[] = {"camera_grey.png", "camera_la.png"};
    for (size_t i = 0; i < 2; i++) {
        img_image img = {0};
        vit_error err;
        CHECK(load(grey[i], &img, &err) == VIT_OK);
        int same = 1;
        for (size_t k = 0; k < (size_t)img.width * (size_t)img.height; k++)
            same &= img.pixels[3 * k] == img.pixels[3 * k + 1] &&
                    img.pixels[3 * k] == img.pixels[3 * k + 2];
        CHECKF(same, "%s: grey must replicate into R, G, B", grey[i]);
        img_free(&img);
    }
}

/* ---------------------------------------------------------------- threads */

typedef struct decode_job {
    const uint8_t *good;
    size_t good_len;
    const uint8_t *bad;
    size_t bad_len;
    char first_bad_message[512];
    int mismatches;
} decode_job;

static void *decode_worker(void *arg)
{
    decode_job *job = arg;
    for (int i = 0; i < 40; i++) {
        img_image img;
        vit_error err;
        if (img_decode(job->good, job->good_len, MAX_PIXELS, &img, &err) != VIT_OK)
            job->mismatches++;
        img_free(&img);
        vit_status s = img_decode(job->bad, job->bad_len, MAX_PIXELS, &img, &err);
        if (s != VIT_ERR_FORMAT)
            job->mismatches++;
        if (i == 0)
            memcpy(job->first_bad_message, err.message, sizeof err.message);
        else if (strcmp(err.message, job->first_bad_message) != 0)
            job->mismatches++;
    }
    return NULL;
}

static uint8_t *slurp(const char *name, size_t *len)
{
    char p[4096];
    FILE *f = fopen(fixture(p, sizeof p, name), "rb");
    VIT_ASSERT(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*len ? *len : 1);
    VIT_ASSERT(b && fread(b, 1, *len, f) == *len);
    fclose(f);
    return b;
}

/* stb keeps its failure reason per thread: two kinds of corrupt files decoded
 * concurrently with good ones must each keep their own reason. */
static void test_threads(void)
{
    size_t lj, lp, lcj, ltp;
    uint8_t *jpg = slurp("coffee.jpg", &lj), *png = slurp("chelsea.png", &lp);
    uint8_t *cj = slurp("corrupt.jpg", &lcj), *tp = slurp("truncated.png", &ltp);
    decode_job jobs[4] = {
        {jpg, lj, tp, ltp, "", 0}, {png, lp, cj, lcj, "", 0},
        {png, lp, tp, ltp, "", 0}, {jpg, lj, cj, lcj, "", 0},
    };
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        CHECK(pthread_create(&th[i], NULL, decode_worker, &jobs[i]) == 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++)
        CHECKF(jobs[i].mismatches == 0, "thread %d: %d mismatches (%s)", i, jobs[i].mismatches,
               jobs[i].first_bad_message);
    CHECK(strcmp(jobs[0].first_bad_message, jobs[1].first_bad_message) != 0);
    free(jpg);
    free(png);
    free(cj);
    free(tp);
}

int main(void)
{
    char p[4096];
    st_file *st = NULL;
    vit_error err;
    vit_status s = st_open(fixture(p, sizeof p, "goldens.safetensors"), &st, &err);
    CHECKF(s == VIT_OK, "%s (run from the source tree or set VITFIT_SOURCE_ROOT)",
           err.message);
    if (s != VIT_OK)
        return check_result();
    test_decode(st);
    test_exif(st);
    test_resize_goldens(st);
    st_close(st);
    test_window_consistency();
    test_presets();
    test_channels();
    test_bad_inputs();
    test_limits();
    test_threads();
    return check_result();
}
