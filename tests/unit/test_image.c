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
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

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

/* Issue 13 (attack item 9): only regular files are read.  /dev/null used
 * to be read as an empty image (VIT_ERR_FORMAT "empty"); a FIFO without a
 * writer blocked img_load_file in open() forever (`vitfit classify FIFO`).
 * Both are refused as not regular files, without reading.  The alarm only
 * turns the old endless block into a failure instead of a hung test. */
static void test_load_special_files(void)
{
    img_image img;
    vit_error err = {VIT_OK, ""};
    vit_status s = img_load_file("/dev/null", MAX_BYTES, MAX_PIXELS, &img, &err);
    CHECKF(s == VIT_ERR_IO && strstr(err.message, "not a regular file"), "/dev/null: %s (%s)",
           vit_status_name(s), err.message);

    char dir[] = "/tmp/test_image_XXXXXX", fifo[64];
    VIT_ASSERT(mkdtemp(dir));
    snprintf(fifo, sizeof fifo, "%s/pipe.png", dir);
    VIT_ASSERT(mkfifo(fifo, 0600) == 0);
    alarm(60);
    s = img_load_file(fifo, MAX_BYTES, MAX_PIXELS, &img, &err);
    alarm(0);
    CHECKF(s == VIT_ERR_IO && strstr(err.message, "not a regular file"), "FIFO: %s (%s)",
           vit_status_name(s), err.message);
    unlink(fifo);
    rmdir(dir);
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

/* ---------------------------------------------------------------- crafted files */

/* A growable byte buffer for building files in memory. */
typedef struct bytes {
    uint8_t *p;
    size_t n, cap;
} bytes;

static void put(bytes *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        VIT_ASSERT(b->p);
    }
    if (n)
        memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void put8(bytes *b, unsigned v)
{
    uint8_t c = (uint8_t)v;
    put(b, &c, 1);
}

static void put16(bytes *b, unsigned v)
{
    put8(b, v >> 8);
    put8(b, v);
}

static void put32(bytes *b, uint32_t v)
{
    put16(b, v >> 16);
    put16(b, v & 0xFFFF);
}

/* Decodes b (budget MAX_PIXELS); returns the status, *img filled on success. */
static vit_status decode_bytes(const bytes *b, img_image *img, vit_error *err)
{
    return img_decode(b->p, b->n, MAX_PIXELS, img, err);
}

/* Expects decoding b to fail with `want` and `needle` in the message. */
static void expect_refused(const char *what, const bytes *b, vit_status want, const char *needle)
{
    img_image img = {0};
    vit_error err = {VIT_OK, ""};
    vit_status s = decode_bytes(b, &img, &err);
    CHECKF(s == want && strstr(err.message, needle), "%s: got %s (%s), want %s with \"%s\"",
           what, vit_status_name(s), err.message, vit_status_name(want), needle);
    if (s == VIT_OK)
        img_free(&img);
}

/* Expects b to decode to a w x h image; returns 1 if it did. */
static int expect_decodes(const char *what, const bytes *b, int w, int h, img_image *out)
{
    img_image img = {0};
    vit_error err = {VIT_OK, ""};
    vit_status s = decode_bytes(b, &img, &err);
    CHECKF(s == VIT_OK, "%s: %s", what, err.message);
    CHECKF(s != VIT_OK || (img.width == w && img.height == h), "%s: %dx%d, want %dx%d", what,
           img.width, img.height, w, h);
    if (out)
        *out = img;
    else
        img_free(&img);
    return s == VIT_OK;
}

/* ---- BMP */

static void put16le(bytes *b, unsigned v)
{
    put8(b, v);
    put8(b, v >> 8);
}

static void put32le(bytes *b, uint32_t v)
{
    put16le(b, v & 0xFFFF);
    put16le(b, v >> 16);
}

/* A BITMAPINFOHEADER BMP of w x |h| pixels at bpp bits (8 or 24), its
 * height field h (negative: rows stored top-down).  An 8-bit file gets
 * pal_entries palette entries, entry i = RGB (i + 1, 2 * i, 255 - i).
 * rows holds |h| rows of w * bpp / 8 bytes in the file's row order (B, G, R
 * for 24-bit); the 4-byte row padding is added here. */
static bytes bmp_file(int w, int h, int bpp, int pal_entries, const uint8_t *rows)
{
    int ah = h < 0 ? -h : h;
    size_t row = (size_t)w * (size_t)bpp / 8, pad = (4 - row % 4) % 4;
    uint32_t off = 14 + 40 + 4 * (uint32_t)pal_entries;
    bytes b = {0};
    put(&b, "BM", 2);
    put32le(&b, off + (uint32_t)((row + pad) * (size_t)ah));
    put32le(&b, 0);
    put32le(&b, off);
    put32le(&b, 40);
    put32le(&b, (uint32_t)w);
    put32le(&b, (uint32_t)h);
    put16le(&b, 1);
    put16le(&b, (unsigned)bpp);
    for (int i = 0; i < 6; i++) /* BI_RGB, image size, resolution, colours used/important */
        put32le(&b, 0);
    for (int i = 0; i < pal_entries; i++) {
        uint8_t e[4] = {(uint8_t)(255 - i), (uint8_t)(2 * i), (uint8_t)(i + 1), 0}; /* B, G, R, 0 */
        put(&b, e, 4);
    }
    for (int y = 0; y < ah; y++) {
        put(&b, rows + (size_t)y * row, row);
        put(&b, "\0\0\0", pad);
    }
    return b;
}

/* Issue 13 (attack item 8): a top-down BMP (negative height, as Windows
 * writes DIB sections; PIL reads it) decodes upright: the first row stored
 * is the top row.  Its bottom-up twin (rows stored in reverse) must give
 * the same pixels.  stb's info call reported the height as stored (-2), so
 * such files were refused as "size 3x-2". */
static void test_bmp_topdown(void)
{
    /* 3 x 2, 24-bit: top row red, green, blue; bottom row grey levels. */
    static const uint8_t top[9] = {0, 0, 255, 0, 255, 0, 255, 0, 0};
    static const uint8_t bottom[9] = {10, 10, 10, 20, 20, 20, 30, 30, 30};
    uint8_t down[18], up[18];
    memcpy(down, top, 9);
    memcpy(down + 9, bottom, 9);
    memcpy(up, bottom, 9);
    memcpy(up + 9, top, 9);
    static const uint8_t want[18] = {255, 0, 0, 0, 255, 0, 0, 0, 255,
                                     10, 10, 10, 20, 20, 20, 30, 30, 30};
    bytes fd = bmp_file(3, -2, 24, 0, down), fu = bmp_file(3, 2, 24, 0, up);
    img_image a = {0}, b = {0};
    if (expect_decodes("top-down BMP", &fd, 3, 2, &a))
        CHECKF(memcmp(a.pixels, want, 18) == 0, "top-down BMP: rows not upright");
    if (expect_decodes("bottom-up BMP", &fu, 3, 2, &b))
        CHECKF(memcmp(b.pixels, want, 18) == 0, "bottom-up BMP: rows not upright");
    img_free(&a);
    img_free(&b);
    /* A height of INT32_MIN has no positive counterpart: too large, even
     * without a pixel budget. */
    fd.p[22] = fd.p[23] = fd.p[24] = 0;
    fd.p[25] = 0x80;
    img_image img;
    vit_error err = {VIT_OK, ""};
    vit_status s = img_decode(fd.p, fd.n, SIZE_MAX, &img, &err);
    CHECKF(s == VIT_ERR_TOO_LARGE, "BMP height INT32_MIN: %s (%s)", vit_status_name(s),
           err.message);
    free(fd.p);
    free(fu.p);
}

/* ---- PNG */

/* Appends a PNG chunk (length, type, data, CRC). */
static void png_chunk(bytes *b, const char *type, const void *d, size_t n)
{
    put32(b, (uint32_t)n);
    size_t start = b->n;
    put(b, type, 4);
    put(b, d, n);
    put32(b, (uint32_t)crc32(crc32(0, NULL, 0), b->p + start, (uInt)(n + 4)));
}

/* zlib-compresses raw[0, raw_len) followed by `zeros` zero bytes. */
static bytes zlib_stream(const uint8_t *raw, size_t raw_len, size_t zeros)
{
    bytes out = {0};
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    VIT_ASSERT(deflateInit(&zs, Z_BEST_COMPRESSION) == Z_OK);
    static const uint8_t zero[65536];
    uint8_t buf[65536];
    const uint8_t *in = raw;
    size_t left = raw_len;
    int flush;
    do {
        if (left == 0 && zeros > 0) {
            in = zero;
            left = zeros < sizeof zero ? zeros : sizeof zero;
            zeros -= left;
        }
        zs.next_in = (Bytef *)(uintptr_t)in;
        zs.avail_in = (uInt)left;
        flush = zeros == 0 ? Z_FINISH : Z_NO_FLUSH;
        do {
            zs.next_out = buf;
            zs.avail_out = sizeof buf;
            VIT_ASSERT(deflate(&zs, flush) != Z_STREAM_ERROR);
            put(&out, buf, sizeof buf - zs.avail_out);
        } while (zs.avail_out == 0);
        in += left;
        left = 0;
    } while (flush != Z_FINISH);
    deflateEnd(&zs);
    return out;
}

/* A PNG with this IHDR whose IDAT holds `stream` (split into two IDAT
 * chunks after `split` bytes when split > 0).  Palette images get a full
 * 256-entry PLTE. */
static bytes png_file(uint32_t w, uint32_t h, int depth, int color, int interlace,
                      const bytes *stream, size_t split)
{
    bytes b = {0};
    put(&b, "\x89PNG\r\n\x1A\n", 8);
    uint8_t ihdr[13] = {(uint8_t)(w >> 24), (uint8_t)(w >> 16), (uint8_t)(w >> 8), (uint8_t)w,
                        (uint8_t)(h >> 24), (uint8_t)(h >> 16), (uint8_t)(h >> 8), (uint8_t)h,
                        (uint8_t)depth, (uint8_t)color, 0, 0, (uint8_t)interlace};
    png_chunk(&b, "IHDR", ihdr, 13);
    if (color == 3) {
        uint8_t pal[768];
        for (int i = 0; i < 768; i++)
            pal[i] = (uint8_t)(i * 7);
        png_chunk(&b, "PLTE", pal, sizeof pal);
    }
    if (split > 0 && split < stream->n) {
        png_chunk(&b, "IDAT", stream->p, split);
        png_chunk(&b, "IDAT", stream->p + split, stream->n - split);
    } else {
        png_chunk(&b, "IDAT", stream->p, stream->n);
    }
    png_chunk(&b, "IEND", NULL, 0);
    return b;
}

/* Filtered scanlines (filter type 0 on every row) of a w x h image at bpp
 * bits per pixel, row by row through each of the seven Adam7 passes when
 * interlaced (one pass of all pixels when not).  Pixel bytes come from
 * rgb (bpp 24) or are a byte pattern. */
static bytes png_scanlines(int w, int h, int bpp, int interlace, const img_image *rgb)
{
    static const int x0[7] = {0, 4, 0, 2, 0, 1, 0}, y0[7] = {0, 0, 4, 0, 2, 0, 1};
    static const int dx[7] = {8, 8, 4, 4, 2, 2, 1}, dy[7] = {8, 8, 8, 4, 4, 2, 2};
    bytes raw = {0};
    for (int p = 0; p < (interlace ? 7 : 1); p++) {
        int xs = interlace ? x0[p] : 0, ys = interlace ? y0[p] : 0;
        int sx = interlace ? dx[p] : 1, sy = interlace ? dy[p] : 1;
        int cols = 0;
        for (int x = xs; x < w; x += sx)
            cols++;
        if (cols == 0)
            continue; /* an empty pass has no rows at all */
        for (int y = ys; y < h; y += sy) {
            put8(&raw, 0);
            if (rgb) {
                for (int x = xs; x < w; x += sx)
                    put(&raw, rgb->pixels + ((size_t)y * (size_t)w + (size_t)x) * 3, 3);
            } else {
                for (size_t i = 0; i < ((size_t)cols * (size_t)bpp + 7) / 8; i++)
                    put8(&raw, (unsigned)(raw.n * 37 % 251));
            }
        }
    }
    return raw;
}

/* Issue 13 item 8: the inflated size is capped at what IHDR needs. */
static void test_png_inflate_bound(void)
{
    /* The bomb: a 1x1 RGB PNG (4 bytes of scanline) whose IDAT inflates to
     * 32 MiB of zeros in 32 KB.  stb 2.27 decoded it, buffering all 32 MiB
     * (2 GiB from a 2 MB file the same way). */
    static const uint8_t one_pixel[4] = {0, 10, 20, 30};
    bytes z = zlib_stream(one_pixel, 4, (size_t)32 << 20);
    bytes f = png_file(1, 1, 8, 2, 0, &z, 0);
    fprintf(stderr, "PNG bomb: %zu bytes inflating to 32 MiB\n", f.n);
    expect_refused("1x1 PNG inflating to 32 MiB", &f, VIT_ERR_FORMAT,
                   "inflates to more than its header's dimensions need");
    free(z.p);
    free(f.p);

    /* Every colour type and bit depth, plain and Adam7, on sizes that leave
     * partial bytes and empty passes: exactly the scanline bytes decode, one
     * more byte is refused. */
    static const int kinds[][2] = {{0, 1}, {0, 2}, {0, 4}, {0, 8}, {0, 16}, {2, 8}, {2, 16},
                                   {3, 1}, {3, 2}, {3, 4}, {3, 8}, {4, 8}, {4, 16}, {6, 8},
                                   {6, 16}};
    static const int channels[7] = {1, 0, 3, 1, 2, 0, 4};
    static const int sizes[][2] = {{1, 1}, {3, 5}, {9, 9}, {17, 3}, {2, 13}};
    int shapes = 0;
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            for (int il = 0; il < 2; il++) {
                int color = kinds[k][0], depth = kinds[k][1];
                int w = sizes[s][0], h = sizes[s][1];
                bytes raw = png_scanlines(w, h, channels[color] * depth, il, NULL);
                char what[96];
                snprintf(what, sizeof what, "PNG colour %d, %d-bit, %dx%d%s", color, depth, w, h,
                         il ? ", Adam7" : "");
                bytes exact = zlib_stream(raw.p, raw.n, 0);
                put8(&raw, 0);
                bytes over = zlib_stream(raw.p, raw.n, 0);
                bytes fe = png_file((uint32_t)w, (uint32_t)h, depth, color, il, &exact, 0);
                bytes fo = png_file((uint32_t)w, (uint32_t)h, depth, color, il, &over, 0);
                shapes += expect_decodes(what, &fe, w, h, NULL);
                expect_refused(what, &fo, VIT_ERR_FORMAT, "inflates to more than");
                free(raw.p);
                free(exact.p);
                free(over.p);
                free(fe.p);
                free(fo.p);
            }
        }
    }
    fprintf(stderr, "PNG inflate bound: %d shapes decode at exactly their size, refused at +1\n",
            shapes);

    /* Pixels of an Adam7 RGB file, its zlib header split across two IDAT
     * chunks and trailing bytes after the stream: same pixels as the
     * plain file. */
    img_image src = pattern(11, 7, 5), plain = {0}, il = {0};
    bytes r0 = png_scanlines(11, 7, 24, 0, &src), r1 = png_scanlines(11, 7, 24, 1, &src);
    bytes z0 = zlib_stream(r0.p, r0.n, 0), z1 = zlib_stream(r1.p, r1.n, 0);
    put(&z1, "junk", 4);
    bytes f0 = png_file(11, 7, 8, 2, 0, &z0, 0), f1 = png_file(11, 7, 8, 2, 1, &z1, 1);
    if (expect_decodes("RGB 11x7", &f0, 11, 7, &plain) &&
        expect_decodes("RGB 11x7 Adam7, split header", &f1, 11, 7, &il)) {
        CHECK(memcmp(plain.pixels, src.pixels, 11 * 7 * 3) == 0);
        CHECK(memcmp(il.pixels, src.pixels, 11 * 7 * 3) == 0);
    }
    img_free(&plain);
    img_free(&il);
    img_free(&src);

    /* Malformed chunk streams the guard refuses itself. */
    bytes bad = {0};
    put(&bad, f0.p, 33); /* signature + IHDR */
    put32(&bad, 0x7FFFFFF0u); /* an IDAT claiming 2 GiB: stb 2.27 grew its buffer to that */
    put(&bad, "IDAT", 4);
    put(&bad, z0.p, z0.n);
    expect_refused("IDAT past the end", &bad, VIT_ERR_FORMAT, "runs past the end");
    bad.n = 33;
    png_chunk(&bad, "ZZZZ", "1234", 4);
    png_chunk(&bad, "IDAT", z0.p, z0.n);
    png_chunk(&bad, "IEND", NULL, 0);
    expect_refused("unknown critical chunk", &bad, VIT_ERR_FORMAT, "unknown critical chunk");
    bad.n = 33;
    png_chunk(&bad, "zzzz", "1234", 4); /* ancillary: skipped */
    png_chunk(&bad, "IDAT", z0.p, z0.n - 6);
    png_chunk(&bad, "IEND", NULL, 0);
    expect_refused("stream cut short", &bad, VIT_ERR_FORMAT, "truncated");
    /* Found by fuzz_image: 1-bit grey+alpha (forbidden, yet accepted by
     * stb 2.27) and an IDAT claiming 789 MB; stb reallocated that much.
     * An IHDR the guard cannot size is refused. */
    static const uint8_t ga1[13] = {0, 0, 0, 17, 0, 0, 0, 3, 1, 4, 0, 0, 0};
    bad.n = 8;
    png_chunk(&bad, "IHDR", ga1, 13);
    put32(&bad, 0x2F080014u);
    put(&bad, "IDAT", 4);
    put(&bad, z0.p, z0.n);
    expect_refused("1-bit grey+alpha, IDAT past the end", &bad, VIT_ERR_FORMAT, "bad IHDR");
    static const uint8_t odd[][2] = {{4, 1}, {2, 4}, {6, 2}, {3, 16}, {1, 8}, {5, 8}, {0, 3}};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        uint8_t hdr[13] = {0, 0, 0, 4, 0, 0, 0, 4, odd[i][1], odd[i][0], 0, 0, 0};
        bad.n = 8;
        png_chunk(&bad, "IHDR", hdr, 13);
        png_chunk(&bad, "IDAT", z0.p, z0.n);
        png_chunk(&bad, "IEND", NULL, 0);
        expect_refused("forbidden colour type / bit depth", &bad, VIT_ERR_FORMAT, "IHDR");
    }
    bad.n = 0;
    put(&bad, f0.p, 8);
    png_chunk(&bad, "CgBI", "\x50\x00\x20\x02", 4);
    put(&bad, f0.p + 8, f0.n - 8);
    expect_refused("CgBI", &bad, VIT_ERR_FORMAT, "CgBI");
    free(bad.p);
    free(r0.p);
    free(r1.p);
    free(z0.p);
    free(z1.p);
    free(f0.p);
    free(f1.p);
}

/* Issue 13 (attack item 2): stb 2.27 keeps palettes in uninitialised stack
 * arrays, so an index past the stored palette decoded to stack garbage.
 * Such indices now read as PIL reads them for PNG: grey (i, i, i).  A
 * 16x16 image holds every index 0..255. */
static void test_short_palette(void)
{
    uint8_t idx[256];
    for (int i = 0; i < 256; i++)
        idx[i] = (uint8_t)i;
    /* PNG, 8-bit palette, PLTE with one entry. */
    bytes raw = {0};
    for (int y = 0; y < 16; y++) {
        put8(&raw, 0);
        put(&raw, idx + 16 * y, 16);
    }
    bytes z = zlib_stream(raw.p, raw.n, 0);
    bytes f = {0};
    put(&f, "\x89PNG\r\n\x1A\n", 8);
    static const uint8_t ihdr[13] = {0, 0, 0, 16, 0, 0, 0, 16, 8, 3, 0, 0, 0};
    png_chunk(&f, "IHDR", ihdr, 13);
    png_chunk(&f, "PLTE", "\x10\x20\x30", 3);
    png_chunk(&f, "IDAT", z.p, z.n);
    png_chunk(&f, "IEND", NULL, 0);
    img_image img = {0};
    if (expect_decodes("PNG, 1-entry palette, indices 0..255", &f, 16, 16, &img)) {
        int bad = -1;
        for (int i = 0; i < 256 && bad < 0; i++) {
            const uint8_t *px = img.pixels + 3 * i;
            uint8_t r = i ? (uint8_t)i : 0x10, g = i ? (uint8_t)i : 0x20, b = i ? (uint8_t)i : 0x30;
            if (px[0] != r || px[1] != g || px[2] != b)
                bad = i;
        }
        CHECKF(bad < 0, "PNG short palette: index %d decodes to (%d, %d, %d)", bad,
               bad < 0 ? 0 : img.pixels[3 * bad], bad < 0 ? 0 : img.pixels[3 * bad + 1],
               bad < 0 ? 0 : img.pixels[3 * bad + 2]);
    }
    img_free(&img);
    free(f.p);

    /* Issue 13 (attack 2, item 1): each short PLTE was padded to 768
     * bytes, and stb takes any number of PLTEs anywhere: 3-byte PLTEs grew
     * the padded copy 52x the file (1 MB -> 53 MB).  One PLTE, before the
     * data, as the PNG spec and libpng require. */
    for (int after = 0; after < 2; after++) {
        f = (bytes){0};
        put(&f, "\x89PNG\r\n\x1A\n", 8);
        png_chunk(&f, "IHDR", ihdr, 13);
        png_chunk(&f, "PLTE", "\x10\x20\x30", 3);
        if (after)
            png_chunk(&f, "IDAT", z.p, z.n);
        png_chunk(&f, "PLTE", "\x40\x50\x60", 3);
        if (!after)
            png_chunk(&f, "IDAT", z.p, z.n);
        png_chunk(&f, "IEND", NULL, 0);
        expect_refused(after ? "PNG, PLTE after IDAT" : "PNG, two PLTEs", &f, VIT_ERR_FORMAT,
                       after ? "PLTE chunk after the image data" : "more than one PLTE");
        free(f.p);
    }
    free(z.p);
    free(raw.p);

    /* BMP, 8-bit, two palette entries (bottom-up: file row 0 is the
     * image's bottom row). */
    uint8_t rows[256];
    for (int y = 0; y < 16; y++)
        memcpy(rows + 16 * y, idx + 16 * (15 - y), 16);
    bytes b = bmp_file(16, 16, 8, 2, rows);
    if (expect_decodes("BMP, 2-entry palette, indices 0..255", &b, 16, 16, &img)) {
        int bad = -1;
        for (int i = 0; i < 256 && bad < 0; i++) {
            const uint8_t *px = img.pixels + 3 * i;
            uint8_t r = i < 2 ? (uint8_t)(i + 1) : (uint8_t)i;
            uint8_t g = i < 2 ? (uint8_t)(2 * i) : (uint8_t)i;
            uint8_t bl = i < 2 ? (uint8_t)(255 - i) : (uint8_t)i;
            if (px[0] != r || px[1] != g || px[2] != bl)
                bad = i;
        }
        CHECKF(bad < 0, "BMP short palette: index %d decodes to (%d, %d, %d)", bad,
               bad < 0 ? 0 : img.pixels[3 * bad], bad < 0 ? 0 : img.pixels[3 * bad + 1],
               bad < 0 ? 0 : img.pixels[3 * bad + 2]);
    }
    img_free(&img);
    /* Pixel data starting inside the header: stb computed a negative
     * palette size and read no entry at all. */
    b.p[10] = b.p[11] = b.p[12] = b.p[13] = 0;
    expect_refused("BMP pixel data at offset 0", &b, VIT_ERR_FORMAT, "inside the header");
    free(b.p);
}

/* Issue 13 (attack item 3): the decoder's memory is bounded from the PNG
 * header (bit depth, channels, interlacing), not only its pixels: a 16-bit
 * RGBA Adam7 PNG makes stb hold ~20 bytes a pixel (a 381 KB file claiming
 * 49 megapixels: 965 MB at the default budget).  The limit is 12 bytes per
 * pixel of max_pixels, so every 8-bit image of max_pixels loads. */
static void test_png_byte_budget(void)
{
    struct {
        int w, h, depth, color, il;
        size_t max_pixels;
        vit_status want;
    } cases[] = {
        {64, 64, 16, 6, 1, 64 * 64, VIT_ERR_TOO_LARGE},     /* ~20 bytes a pixel */
        {64, 64, 16, 6, 1, 2 * 64 * 64, VIT_OK},            /* the same, half the budget used */
        /* Its need, counted: inflated 32,888 + image 32,768 + Adam7 pass 7
         * (64 x 32 pixels) 16,384 = 82,040 bytes; 12 x 6,836 is 8 short. */
        {64, 64, 16, 6, 1, 6836, VIT_ERR_TOO_LARGE},
        {64, 64, 16, 6, 1, 6837, VIT_OK},
        {64, 64, 16, 6, 0, 64 * 64, VIT_ERR_TOO_LARGE},     /* ~16 */
        {64, 64, 16, 2, 0, 2 * 64 * 64, VIT_OK},
        {64, 64, 8, 6, 1, 64 * 64, VIT_OK},                 /* 8-bit RGBA Adam7 at the budget */
        {1, 4096, 8, 6, 1, 4096, VIT_OK},                   /* the worst 8-bit shape: ~11 */
        {4096, 1, 8, 6, 1, 4096, VIT_OK},
        {64, 64, 8, 4, 1, 64 * 64, VIT_OK},
        /* Issue 13 (attack 2, item 3): 1x1 RGBA Adam7 needs 13 bytes
         * (inflated 5, image 4, pass 1 4): the 4 KiB floor lets it load. */
        {1, 1, 8, 6, 1, 1, VIT_OK},
    };
    static const int channels[7] = {1, 0, 3, 1, 2, 0, 4};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bytes raw = png_scanlines(cases[i].w, cases[i].h, channels[cases[i].color] * cases[i].depth,
                                  cases[i].il, NULL);
        bytes z = zlib_stream(raw.p, raw.n, 0);
        bytes f = png_file((uint32_t)cases[i].w, (uint32_t)cases[i].h, cases[i].depth,
                           cases[i].color, cases[i].il, &z, 0);
        img_image img = {0};
        vit_error err = {VIT_OK, ""};
        vit_status s = img_decode(f.p, f.n, cases[i].max_pixels, &img, &err);
        CHECKF(s == cases[i].want &&
                   (s == VIT_OK || (strstr(err.message, "needs") && strstr(err.message, "12 bytes"))),
               "PNG %dx%d %d-bit colour %d%s, max_pixels %zu: %s (%s), want %s", cases[i].w,
               cases[i].h, cases[i].depth, cases[i].color, cases[i].il ? " Adam7" : "",
               cases[i].max_pixels, vit_status_name(s), err.message,
               vit_status_name(cases[i].want));
        img_free(&img);
        free(raw.p);
        free(z.p);
        free(f.p);
    }
}

/* ---- JPEG */

/* Bit writer for entropy-coded data: MSB first, 0xFF stuffed with 0x00,
 * padded with 1 bits. */
typedef struct bitw {
    bytes *b;
    unsigned acc, n;
} bitw;

static void put_bits(bitw *w, uint32_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        w->acc = (w->acc << 1) | ((v >> i) & 1);
        if (++w->n == 8) {
            put8(w->b, w->acc);
            if (w->acc == 0xFF)
                put8(w->b, 0);
            w->acc = w->n = 0;
        }
    }
}

static void flush_bits(bitw *w)
{
    while (w->n)
        put_bits(w, 1, 1);
}

/* Appends a DHT segment defining table 0 of class tc (0 DC, 1 AC) with
 * counts[i] codes of length i + 1 for the symbols syms, in order. */
static void jpeg_dht(bytes *b, int tc, const uint8_t counts[16], const uint8_t *syms)
{
    unsigned n = 0;
    for (int i = 0; i < 16; i++)
        n += counts[i];
    put16(b, 0xFFC4);
    put16(b, 2 + 17 + n);
    put8(b, (unsigned)(tc << 4));
    put(b, counts, 16);
    put(b, syms, n);
}

/* Starts a JPEG: SOI; DQT table 0 with every entry q (16-bit entries if
 * q16); SOF0 (SOF2 if progressive) w x h with ncomp components, ids 1..n,
 * sampling factors hv[i], all on table 0; DHT with DC table 0 and AC table 0
 * each holding a single 1-bit code ("0") for dc_sym and for EOB. */
static bytes jpeg_begin(int progressive, int w, int h, int ncomp, const int hv[][2], int q16,
                        unsigned q, int dc_sym)
{
    bytes b = {0};
    put16(&b, 0xFFD8);
    put16(&b, 0xFFDB);
    put16(&b, q16 ? 2 + 129 : 2 + 65);
    put8(&b, q16 ? 0x10 : 0x00);
    for (int i = 0; i < 64; i++) {
        if (q16)
            put16(&b, q);
        else
            put8(&b, q);
    }
    put16(&b, progressive ? 0xFFC2 : 0xFFC0);
    put16(&b, (unsigned)(8 + 3 * ncomp));
    put8(&b, 8);
    put16(&b, (unsigned)h);
    put16(&b, (unsigned)w);
    put8(&b, (unsigned)ncomp);
    for (int i = 0; i < ncomp; i++) {
        put8(&b, (unsigned)(i + 1));
        put8(&b, (unsigned)(hv[i][0] << 4 | hv[i][1]));
        put8(&b, 0);
    }
    static const uint8_t one_code[16] = {1}; /* one code of length 1: "0" */
    uint8_t dc = (uint8_t)dc_sym, eob = 0x00;
    jpeg_dht(&b, 0, one_code, &dc);
    jpeg_dht(&b, 1, one_code, &eob);
    return b;
}

/* Appends an SOS over components ids[0..n) (tables 0/0) and its data. */
static void jpeg_scan(bytes *b, const int *ids, int n, int ss, int se, int ahal,
                      const bytes *data)
{
    put16(b, 0xFFDA);
    put16(b, (unsigned)(6 + 2 * n));
    put8(b, (unsigned)n);
    for (int i = 0; i < n; i++) {
        put8(b, (unsigned)ids[i]);
        put8(b, 0);
    }
    put8(b, (unsigned)ss);
    put8(b, (unsigned)se);
    put8(b, (unsigned)ahal);
    if (data)
        put(b, data->p, data->n);
}

/* Entropy data of `blocks` blocks each coding DC category 15 with value
 * +32767 (all ones), then EOB when ac (baseline). */
static bytes dc_max_blocks(int blocks, int ac)
{
    bytes d = {0};
    bitw w = {&d, 0, 0};
    for (int i = 0; i < blocks; i++) {
        put_bits(&w, 0, 1);      /* DC code: category 15 */
        put_bits(&w, 0x7FFF, 15); /* +32767 */
        if (ac)
            put_bits(&w, 0, 1); /* EOB */
    }
    flush_bits(&w);
    return d;
}

/* Issue 13 item 10: stb 2.27's DC arithmetic overflows int on such files
 * (UBSan: "signed integer overflow: 65534 * 65535"); they are refused. */
static void test_jpeg_dc_overflow(void)
{
    static const int one[1][2] = {{1, 1}};
    static const int y[1] = {1};
    /* Baseline, 16-bit DQT of 0xFFFF, two blocks of +32767: the second
     * block's DC is 65534 * 65535. */
    bytes f = jpeg_begin(0, 16, 8, 1, one, 1, 0xFFFF, 15);
    bytes d = dc_max_blocks(2, 1);
    jpeg_scan(&f, y, 1, 0, 63, 0, &d);
    put16(&f, 0xFFD9);
    fprintf(stderr, "JPEG DC overflow: %zu bytes\n", f.n);
    expect_refused("16-bit DQT, DC 65534 * 65535", &f, VIT_ERR_FORMAT,
                   "DC coefficient out of range");
    free(d.p);
    /* One block fewer stays in range (32767 * 65535 < 2^31) and decodes. */
    f.n = 0;
    free(f.p);
    f = jpeg_begin(0, 8, 8, 1, one, 1, 0xFFFF, 15);
    d = dc_max_blocks(1, 1);
    jpeg_scan(&f, y, 1, 0, 63, 0, &d);
    put16(&f, 0xFFD9);
    expect_decodes("16-bit DQT, DC 32767 * 65535", &f, 8, 8, NULL);
    free(d.p);
    free(f.p);

    /* A zero quantiser: the product never overflows, the predictor does,
     * after 65,538 blocks of +32767 (16384 x 264 pixels). */
    f = jpeg_begin(0, 16384, 264, 1, one, 0, 0, 15);
    d = dc_max_blocks(2048 * 33, 1);
    jpeg_scan(&f, y, 1, 0, 63, 0, &d);
    put16(&f, 0xFFD9);
    expect_refused("DC predictor past INT_MAX", &f, VIT_ERR_FORMAT, "DC coefficient out of range");
    free(d.p);
    free(f.p);

    /* Progressive DC scan with Al = 13: 9 blocks of +32767 make
     * 294903 << 13, past 2^31. */
    f = jpeg_begin(1, 72, 8, 1, one, 0, 1, 15);
    d = dc_max_blocks(9, 0);
    jpeg_scan(&f, y, 1, 0, 0, 13, &d);
    put16(&f, 0xFFD9);
    expect_refused("progressive DC << 13", &f, VIT_ERR_FORMAT, "DC coefficient out of range");
    free(d.p);
    free(f.p);
    f = jpeg_begin(1, 64, 8, 1, one, 0, 1, 15); /* 8 blocks: 262136 << 13 fits */
    d = dc_max_blocks(8, 0);
    jpeg_scan(&f, y, 1, 0, 0, 13, &d);
    put16(&f, 0xFFD9);
    expect_decodes("progressive DC 262136 << 13", &f, 64, 8, NULL);
    free(d.p);
    free(f.p);
}

/* stb 2.27 keeps consuming bits after a marker has ended the scan data,
 * driving its bit count negative; its next refill then shifts by 39
 * (UBSan: "shift exponent 39 is too large").  Here the second block's DC
 * code is 16 bits long and uses up the data, its 15 value bits are read
 * past the end.  Found while checking the guard against stb; refused as
 * data ending inside a block. */
static void test_jpeg_bit_underflow(void)
{
    static const int one[1][2] = {{1, 1}};
    static const int y[1] = {1};
    static const uint8_t dc_counts[16] = {[0] = 1, [15] = 1}, dc_syms[2] = {0, 15};
    static const uint8_t ac_counts[16] = {[14] = 1}, ac_syms[1] = {0x00};
    bytes f = jpeg_begin(0, 16, 8, 1, one, 0, 1, 0);
    jpeg_dht(&f, 0, dc_counts, dc_syms); /* DC: "0" = 0, "1000000000000000" = 15 */
    jpeg_dht(&f, 1, ac_counts, ac_syms); /* AC: fifteen 0 bits = EOB */
    /* Block 1: DC "0" + EOB (16 bits); block 2: the 16-bit DC code, then
     * the data ends where its 15 value bits should be. */
    static const uint8_t data[4] = {0x00, 0x00, 0x80, 0x00};
    bytes d = {0};
    put(&d, data, 4);
    jpeg_scan(&f, y, 1, 0, 63, 0, &d);
    put16(&f, 0xFFD9);
    expect_refused("data ending inside a block", &f, VIT_ERR_FORMAT,
                   "scan data runs out");
    free(d.p);
    free(f.p);
}

/* A refinement scan reads one correction bit for each coefficient an
 * earlier scan made nonzero, so the guard must know them to follow stb's
 * bits.  Scan 1 (AC, Al = 1) makes 14 coefficients of block 1 nonzero; in
 * scan 2 (refinement) block 1 is an EOB code and their 14 correction bits,
 * block 2 a 16-bit EOB-run code whose 14 extra bits are missing: data
 * ending inside a block, refused.  Skipping the correction bits, the
 * guard would read them as codes and miss it. */
static void test_jpeg_refinement_bits(void)
{
    static const int two[1][2] = {{1, 1}};
    static const int y[1] = {1};
    /* AC table: "0" = run 0 size 1, "10" = EOB, "1100000000000000" = EOB run 2^14. */
    static const uint8_t ac_counts[16] = {[0] = 1, [1] = 1, [15] = 1};
    static const uint8_t ac_syms[3] = {0x01, 0x00, 0xE0};
    bytes f = jpeg_begin(1, 16, 8, 1, two, 0, 1, 0);
    jpeg_dht(&f, 1, ac_counts, ac_syms);
    bytes d1 = {0}, d2 = {0};
    bitw w = {&d1, 0, 0};
    for (int i = 0; i < 14; i++)
        put_bits(&w, 0x1, 2); /* "0" + value bit 1: +1 (x2 at Al = 1) */
    put_bits(&w, 0x2, 2);     /* EOB */
    put_bits(&w, 0x2, 2);     /* block 2: EOB */
    flush_bits(&w);
    w.b = &d2;
    put_bits(&w, 0x2, 2);     /* block 1: EOB, then its 14 correction bits, */
    put_bits(&w, 0x2AAA, 14); /* 1010...: read as codes they are EOBs */
    put_bits(&w, 0xC000, 16); /* block 2: EOB run 2^14 - 1 + 14 bits, which end */
    flush_bits(&w);
    VIT_ASSERT(d1.n == 4 && d2.n == 4);
    jpeg_scan(&f, y, 1, 1, 63, 0x01, &d1);
    jpeg_scan(&f, y, 1, 1, 63, 0x10, &d2);
    put16(&f, 0xFFD9);
    expect_refused("refinement data ending inside a block", &f, VIT_ERR_FORMAT,
                   "scan data runs out");
    free(d1.p);
    free(d2.p);
    free(f.p);
}

/* The guard follows stb through restart intervals: predictors reset at
 * each RSTn (four blocks of +32767 under a 0xFFFF quantiser then never
 * overflow), and without the markers stb ends the scan after the first
 * interval, so the second block (which would overflow) is never decoded. */
static void test_jpeg_restarts(void)
{
    static const int one[1][2] = {{1, 1}};
    static const int y[1] = {1};
    for (int markers = 1; markers >= 0; markers--) {
        int blocks = markers ? 4 : 2;
        bytes f = jpeg_begin(0, 8 * blocks, 8, 1, one, 1, 0xFFFF, 15);
        put16(&f, 0xFFDD); /* DRI: restart every block */
        put16(&f, 4);
        put16(&f, 1);
        bytes d = {0};
        bitw w = {&d, 0, 0};
        for (int i = 0; i < blocks; i++) {
            put_bits(&w, 0, 1);
            put_bits(&w, 0x7FFF, 15);
            put_bits(&w, 0, 1);
            flush_bits(&w);
            if (markers && i + 1 < blocks)
                put16(&d, 0xFFD0 + (unsigned)(i % 8));
        }
        jpeg_scan(&f, y, 1, 0, 63, 0, &d);
        put16(&f, 0xFFD9);
        expect_decodes(markers ? "DC +32767 x 4 with restarts" : "DRI without RST markers", &f,
                       8 * blocks, 8, NULL);
        free(d.p);
        free(f.p);
    }
}

/* Progressive files as encoders write them (libjpeg's default script via
 * PIL: 10 scans, successive approximation, EOB runs) pass the guard and
 * decode close to their source. */
static void test_jpeg_progressive(void)
{
    const char *files[] = {"chelsea_prog.jpg", "chelsea_prog444.jpg", "chelsea_prog_grey.jpg"};
    img_image src = {0};
    vit_error err;
    CHECK(load("chelsea.png", &src, &err) == VIT_OK);
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        img_image img = {0};
        vit_status s = load(files[i], &img, &err);
        CHECKF(s == VIT_OK, "%s: %s", files[i], err.message);
        if (s != VIT_OK)
            continue;
        double mean = 0;
        int d = 256;
        if (i < 2) {
            d = max_diff(&img, &src, &mean);
        } else { /* against the luma of the source, as PIL's convert("L") */
            img_image grey = {src.width, src.height, malloc((size_t)src.width * (size_t)src.height * 3)};
            VIT_ASSERT(grey.pixels);
            for (size_t k = 0; k < (size_t)src.width * (size_t)src.height; k++) {
                const uint8_t *p = src.pixels + 3 * k;
                uint8_t l = (uint8_t)((p[0] * 19595 + p[1] * 38470 + p[2] * 7471 + 0x8000) >> 16);
                grey.pixels[3 * k] = grey.pixels[3 * k + 1] = grey.pixels[3 * k + 2] = l;
            }
            d = max_diff(&img, &grey, &mean);
            img_free(&grey);
        }
        fprintf(stderr, "progressive %-22s max diff vs source %d levels (mean %.2f)\n", files[i], d,
                mean);
        CHECKF(mean < 4.0, "%s: mean diff %.2f vs its source", files[i], mean);
        img_free(&img);
    }
    img_free(&src);
}

/* Entropy data of `blocks` blocks of `bits` zero bits each, padded with 1
 * bits: with jpeg_begin's tables ("0" = DC 0, "0" = EOB) a baseline block
 * is 2 bits (DC, EOB), a progressive DC block or AC block 1 bit. */
static bytes zero_blocks(int blocks, int bits)
{
    bytes d = {0};
    bitw w = {&d, 0, 0};
    for (int i = 0; i < blocks * bits; i++)
        put_bits(&w, 0, 1);
    flush_bits(&w);
    return d;
}

/* Issue 13 item 9 and its follow-up: scan limits.  Every scan here holds
 * the data its blocks need, so only the limits can refuse. */
static void test_jpeg_scan_limits(void)
{
    static const int one[1][2] = {{1, 1}};
    static const int y[1] = {1};
    bytes d2 = zero_blocks(1, 2), d1 = zero_blocks(1, 1);

    /* Sequential: each component in one scan, so each block decoded once;
     * a second scan over the same component (the 17-scan bomb's shape)
     * is refused. */
    for (int scans = 1; scans <= 2; scans++) {
        bytes f = jpeg_begin(0, 8, 8, 1, one, 0, 1, 0);
        for (int i = 0; i < scans; i++)
            jpeg_scan(&f, y, 1, 0, 63, 0, &d2);
        put16(&f, 0xFFD9);
        if (scans == 1)
            expect_decodes("1 baseline scan", &f, 8, 8, NULL);
        else
            expect_refused("2 baseline scans of one component", &f, VIT_ERR_TOO_LARGE,
                           "more than once");
        free(f.p);
    }
    /* Progressive: an 8x8 grey image has one block; DC + 15 AC scans decode
     * it 16 times (the limit), a 17th scan is refused. */
    for (int ac = 15; ac <= 16; ac++) {
        bytes f = jpeg_begin(1, 8, 8, 1, one, 0, 1, 0);
        jpeg_scan(&f, y, 1, 0, 0, 0, &d1);
        for (int i = 0; i < ac; i++)
            jpeg_scan(&f, y, 1, 1, 63, 0, &d1);
        put16(&f, 0xFFD9);
        if (ac == 15)
            expect_decodes("progressive, 16 scans", &f, 8, 8, NULL);
        else
            expect_refused("progressive, 17 scans", &f, VIT_ERR_TOO_LARGE,
                           "more than 16 times over");
        free(f.p);
    }

    /* Count: a 32x32 four-component progressive file whose last component
     * is sampled 1x1 against 4x4 (49 blocks, one interleaved DC scan over
     * all; AC scans of the last cost one block each, far inside 16 x 49):
     * 500 scans decode, 501 are refused. */
    static const int four[4][2] = {{4, 4}, {4, 4}, {4, 4}, {1, 1}};
    static const int all4[4] = {1, 2, 3, 4}, k[1] = {4};
    bytes d49 = zero_blocks(49, 1);
    for (int scans = 500; scans <= 501; scans++) {
        bytes f = jpeg_begin(1, 32, 32, 4, four, 0, 1, 0);
        jpeg_scan(&f, all4, 4, 0, 0, 0, &d49);
        for (int i = 1; i < scans; i++)
            jpeg_scan(&f, k, 1, 1, 63, 0, &d1);
        put16(&f, 0xFFD9);
        if (scans == 500)
            expect_decodes("500 scans", &f, 32, 32, NULL);
        else
            expect_refused("501 scans", &f, VIT_ERR_TOO_LARGE, "more than 500 scans");
        free(f.p);
    }

    /* The limits are planned from the markers before any scan is decoded:
     * here the first scan would be refused while decoding (its DC
     * overflows), yet the extra scans after it are what is reported.  (The
     * 17-scan bomb used to be refused only after 16 scans of work.) */
    bytes dc = dc_max_blocks(2, 1);
    bytes f = jpeg_begin(0, 16, 8, 1, one, 1, 0xFFFF, 15);
    jpeg_scan(&f, y, 1, 0, 63, 0, &dc);
    jpeg_scan(&f, y, 1, 0, 63, 0, &dc);
    put16(&f, 0xFFD9);
    expect_refused("DC overflow in scan 1 of 2", &f, VIT_ERR_TOO_LARGE, "more than once");
    free(f.p);
    bytes dcp = dc_max_blocks(9, 0);
    f = jpeg_begin(1, 72, 8, 1, one, 0, 1, 15);
    jpeg_scan(&f, y, 1, 0, 0, 13, &dcp); /* overflows: see test_jpeg_dc_overflow */
    for (int i = 0; i < 16 * 9; i++)
        jpeg_scan(&f, y, 1, 1, 63, 0, &d1);
    put16(&f, 0xFFD9);
    expect_refused("DC overflow in scan 1, then 16 passes of AC", &f, VIT_ERR_TOO_LARGE,
                   "more than 16 times over");
    free(f.p);
    free(dc.p);
    free(dcp.p);
    free(d49.p);
    free(d1.p);
    free(d2.p);
}

/* Issue 13 (attack 2, item 2): stb's JPEG memory is in the decoder byte
 * budget (12 bytes a pixel of max_pixels), planned from the SOF before
 * anything is allocated: a progressive CMYK file holds 15 bytes a pixel
 * (planes 4, coefficients 8, RGB output 3; the 4.7 KB bomb claiming
 * 7000x7000 pixels: 719 MB), a progressive 4:4:4 YCbCr one exactly 12, so
 * it still loads at max_pixels; so does one whose MCU padding takes it
 * over 12 bytes a pixel of its own (the padding is granted). */
static void test_jpeg_byte_budget(void)
{
    static const int hv[4][2] = {{1, 1}, {1, 1}, {1, 1}, {1, 1}};
    static const int ids[4] = {1, 2, 3, 4};
    struct {
        int w, ncomp;
        size_t max_pixels;
        vit_status want;
    } cases[] = {
        /* 32x32 CMYK: 64 blocks x (64 + 128) + 3 x 1024 = 15,360 bytes;
         * 12 x 1,279 is 12 short. */
        {32, 4, 1279, VIT_ERR_TOO_LARGE},
        {32, 4, 1280, VIT_OK},
        {32, 3, 32 * 32, VIT_OK}, /* 48 x 192 + 3,072 = 12,288 = 12 x 1,024 */
        /* 33x33 YCbCr pads to 40x40: 75 x 192 + 3,267 = 17,667 bytes, over
         * 12 x 1,089 = 13,068; the 511 padding pixels grant 6,132. */
        {33, 3, 33 * 33, VIT_OK},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int w = cases[i].w, n = cases[i].ncomp, mcus = (w + 7) / 8;
        bytes d = zero_blocks(mcus * mcus * n, 1); /* one interleaved DC scan */
        bytes f = jpeg_begin(1, w, w, n, hv, 0, 1, 0);
        jpeg_scan(&f, ids, n, 0, 0, 0, &d);
        put16(&f, 0xFFD9);
        img_image img = {0};
        vit_error err = {VIT_OK, ""};
        vit_status s = img_decode(f.p, f.n, cases[i].max_pixels, &img, &err);
        CHECKF(s == cases[i].want &&
                   (s == VIT_OK || (strstr(err.message, "needs 15360 bytes") &&
                                    strstr(err.message, "12 bytes"))),
               "progressive JPEG %dx%d, %d components, max_pixels %zu: %s (%s), want %s", w, w,
               n, cases[i].max_pixels, vit_status_name(s), err.message,
               vit_status_name(cases[i].want));
        img_free(&img);
        free(f.p);
        free(d.p);
    }
}

/* Issue 13 follow-up (attack item 1): stb reads zero bits past the end of
 * a scan's data, so a scan with no data decodes every block; a 362-byte
 * baseline file claiming 7000x7000 pixels and 16 scans decoded for 30 s.
 * Refused now, (1) before decoding when a scan's data is shorter than its
 * blocks can possibly take, (2) while decoding at the first block that
 * reads past the end of the data. */
static void test_jpeg_data_runs_out(void)
{
    static const int one[1][2] = {{1, 1}}, three[3][2] = {{1, 1}, {1, 1}, {1, 1}};
    static const int y[1] = {1}, ycc[3] = {1, 2, 3};
    /* (1) The bomb's shape at 512x512: one interleaved scan, no data (it
     * needs 2 bits for each of 12,288 blocks); and its 16-scan version. */
    for (int scans = 1; scans <= 16; scans += 15) {
        bytes f = jpeg_begin(0, 512, 512, 3, three, 0, 1, 0);
        for (int i = 0; i < scans; i++)
            jpeg_scan(&f, ycc, 3, 0, 63, 0, NULL);
        put16(&f, 0xFFD9);
        expect_refused("512x512 baseline, empty scans", &f, VIT_ERR_FORMAT,
                       "scan data too short for the blocks it codes");
        free(f.p);
    }
    /* One bit short of 2 bits a block (64 blocks: 15 bytes + 7 bits). */
    bytes d = zero_blocks(64, 2);
    d.n = 15;
    bytes f = jpeg_begin(0, 64, 64, 1, one, 0, 1, 0);
    jpeg_scan(&f, y, 1, 0, 63, 0, &d);
    put16(&f, 0xFFD9);
    expect_refused("baseline data 1 byte short", &f, VIT_ERR_FORMAT, "too short");
    free(f.p);
    d.n = 16; /* exactly enough: decodes */
    f = jpeg_begin(0, 64, 64, 1, one, 0, 1, 0);
    jpeg_scan(&f, y, 1, 0, 63, 0, &d);
    put16(&f, 0xFFD9);
    expect_decodes("baseline data of exactly 2 bits a block", &f, 64, 64, NULL);
    free(f.p);

    /* (2) Enough bytes for the plan, but with an AC table whose "0" is a
     * coefficient (run 0, size 1) a block of zero bits takes 127 of them:
     * the 16 bytes hold one block, the second runs out. */
    static const uint8_t ac_counts[16] = {[0] = 1, [1] = 1}, ac_syms[2] = {0x01, 0x00};
    bytes zeros = {0};
    for (int i = 0; i < 16; i++)
        put8(&zeros, 0);
    f = jpeg_begin(0, 64, 64, 1, one, 0, 1, 0);
    jpeg_dht(&f, 1, ac_counts, ac_syms);
    jpeg_scan(&f, y, 1, 0, 63, 0, &zeros);
    put16(&f, 0xFFD9);
    expect_refused("baseline, 63 coefficients a block from zeros", &f, VIT_ERR_FORMAT,
                   "scan data runs out");
    free(f.p);
    /* The same in a progressive AC scan (the 46-scan bomb's shape): a valid
     * DC scan, then an AC scan of one zero byte, 4 coefficients' worth. */
    bytes dcd = zero_blocks(64, 1);
    zeros.n = 1;
    f = jpeg_begin(1, 64, 64, 1, one, 0, 1, 0);
    jpeg_dht(&f, 1, ac_counts, ac_syms);
    jpeg_scan(&f, y, 1, 0, 0, 0, &dcd);
    jpeg_scan(&f, y, 1, 1, 63, 0, &zeros);
    put16(&f, 0xFFD9);
    expect_refused("progressive AC scan, coefficients from zeros", &f, VIT_ERR_FORMAT,
                   "scan data runs out");
    free(f.p);
    /* Restart intervals: each interval's data must hold its blocks. Two
     * 1-block intervals of 2 bits each decode; with the second interval's
     * byte replaced by nothing (RST0 then EOI) it is refused. */
    for (int cut = 0; cut < 2; cut++) {
        f = jpeg_begin(0, 16, 8, 1, one, 0, 1, 0);
        put16(&f, 0xFFDD);
        put16(&f, 4);
        put16(&f, 1);
        bytes rd = {0};
        put8(&rd, 0x3F); /* "00" + 1-bit padding */
        put16(&rd, 0xFFD0);
        put8(&rd, 0x3F);
        if (cut)
            rd.n = 3;
        jpeg_scan(&f, y, 1, 0, 63, 0, &rd);
        put16(&f, 0xFFD9);
        if (cut)
            expect_refused("second restart interval empty", &f, VIT_ERR_FORMAT,
                           "scan data runs out");
        else
            expect_decodes("two restart intervals", &f, 16, 8, NULL);
        free(rd.p);
        free(f.p);
    }
    free(dcd.p);
    free(zeros.p);
    free(d.p);
}

/* ---- EXIF */

/* Writes v at p, 16 or 32 bits, little-endian if le. */
static void wr16(uint8_t *p, int le, unsigned v)
{
    p[le ? 0 : 1] = (uint8_t)v;
    p[le ? 1 : 0] = (uint8_t)(v >> 8);
}

static void wr32(uint8_t *p, int le, uint32_t v)
{
    wr16(p + (le ? 0 : 2), le, v & 0xFFFF);
    wr16(p + (le ? 2 : 0), le, v >> 16);
}

/* A copy of JPEG src whose EXIF block (the fixtures' 34-byte APP1 with one
 * IFD0 entry) is rewritten: orientation o as a LONG (else a SHORT), in
 * Intel (le) or Motorola byte order. */
static bytes exif_rewritten(const uint8_t *src, size_t n, int le, int as_long, unsigned o)
{
    bytes b = {0};
    put(&b, src, n);
    uint8_t *t = NULL; /* the 26-byte TIFF block after "Exif\0\0" */
    for (size_t i = 0; i + 10 < n && !t; i++)
        if (memcmp(b.p + i, "\xFF\xE1\x00\x22" "Exif\0\0", 10) == 0)
            t = b.p + i + 10;
    VIT_ASSERT(t);
    memset(t, 0, 26);
    t[0] = t[1] = le ? 'I' : 'M';
    wr16(t + 2, le, 42);
    wr32(t + 4, le, 8);        /* IFD0 offset */
    wr16(t + 8, le, 1);        /* one entry: */
    wr16(t + 10, le, 0x0112);  /*   Orientation */
    wr16(t + 12, le, as_long ? 4 : 3);
    wr32(t + 14, le, 1);       /*   count */
    if (as_long)
        wr32(t + 18, le, o);
    else
        wr16(t + 18, le, o);   /*   a SHORT fills the field's first 2 bytes */
    return b;                  /* next-IFD offset (22..25) stays 0 */
}

/* The EXIF orientation stored as a LONG (allowed by TIFF, written by some
 * cameras) or in Intel byte order must turn the picture as the fixtures'
 * Motorola SHORT does. */
static void test_exif_long(void)
{
    size_t n;
    uint8_t *src = slurp("exif_orient_6.jpg", &n);
    img_image want = {0};
    vit_error err;
    CHECK(img_decode(src, n, MAX_PIXELS, &want, &err) == VIT_OK);
    for (int le = 0; le < 2; le++) {
        for (int as_long = 0; as_long < 2; as_long++) {
            bytes b = exif_rewritten(src, n, le, as_long, 6);
            img_image got = {0};
            vit_status s = decode_bytes(&b, &got, &err);
            CHECKF(s == VIT_OK && got.width == want.width && got.height == want.height &&
                       memcmp(got.pixels, want.pixels,
                              (size_t)want.width * (size_t)want.height * 3) == 0,
                   "EXIF orientation 6 as %s in %s byte order: not turned like the SHORT one",
                   as_long ? "LONG" : "SHORT", le ? "Intel" : "Motorola");
            img_free(&got);
            free(b.p);
        }
    }
    img_free(&want);
    free(src);
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
    test_load_special_files();
    test_threads();
    test_png_inflate_bound();
    test_jpeg_dc_overflow();
    test_jpeg_bit_underflow();
    test_jpeg_refinement_bits();
    test_jpeg_restarts();
    test_jpeg_progressive();
    test_jpeg_scan_limits();
    test_jpeg_byte_budget();
    test_jpeg_data_runs_out();
    test_exif_long();
    test_bmp_topdown();
    test_short_palette();
    test_png_byte_budget();
    return check_result();
}
