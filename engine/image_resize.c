/*
 * image_resize.c - PIL-exact resampling and torchvision-style preprocessing
 * (see image.h).
 *
 * Models are trained on tensors made by torchvision transforms from PIL
 * images: Resize -> CenterCrop -> ToTensor -> Normalize, where Resize calls
 * PIL's Image.resize(size, BILINEAR|BICUBIC).  To feed the model the same
 * numbers we reproduce PIL's ImagingResample for 8-bit images to the last
 * bit (ref: Pillow src/libImaging/Resample.c, 9.x):
 *
 *   - separable: a horizontal pass, its result rounded and clamped to uint8,
 *     then a vertical pass (each pass skipped when that side keeps its size);
 *   - for output sample xx: center = (xx + 0.5) * scale with
 *     scale = in / out; when downscaling the filter is stretched by scale
 *     (antialiasing), support = filter_support * max(scale, 1);
 *     inputs [xmin, xmin + count) with xmin = (int)(center - support + 0.5),
 *     end = (int)(center + support + 0.5), clipped to the image;
 *     weight of input x = filter((x - center + 0.5) / max(scale, 1)), then
 *     divided by the sum of the row's weights;
 *   - weights become fixed point with PRECISION_BITS = 22 fractional bits
 *     (rounded away from zero), pixels are accumulated from 1 << 21 (the
 *     rounding half) and shifted back down, clamped to [0, 255];
 *   - bilinear is the triangle filter (support 1), bicubic the Keys cubic
 *     with a = -0.5 (support 2).
 * All of that is done in the same order with the same double arithmetic, so
 * the results match PIL bit for bit (tests/unit/test_image.c checks it).
 *
 * Every output sample depends only on its own coefficients, so we compute
 * just the window that survives the center crop: an image of extreme aspect
 * ratio resized by its shorter side never allocates its full resized size.
 *
 * Floating point: no contraction into FMA (it would change the rounding of
 * the coefficients): GCC in ISO C mode (-std=c11) does not contract, clang
 * is told below.
 */
#include "image.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#define PRECISION_BITS (32 - 8 - 2) /* as PIL: 8 bits of pixel, 2 of headroom */
#define IMG_MAX_OUT_SIDE 16384      /* bound on crop sizes and resize_shorter */

/* ---------------------------------------------------------------- filters */

/* Triangle filter, support 1 (ref: Resample.c bilinear_filter). */
static double bilinear_filter(double x)
{
    if (x < 0.0)
        x = -x;
    if (x < 1.0)
        return 1.0 - x;
    return 0.0;
}

/* Keys cubic convolution with a = -0.5, support 2 (ref: bicubic_filter). */
static double bicubic_filter(double x)
{
    const double a = -0.5;
    if (x < 0.0)
        x = -x;
    if (x < 1.0)
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0)
        return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* ---------------------------------------------------------------- coefficients */

/* Fixed-point filter taps for a run of output samples along one axis. */
typedef struct resample_axis {
    int ksize;     /* taps per output sample (max over the axis) */
    int first;     /* lowest input index any sample reads */
    int last;      /* one past the highest input index any sample reads */
    int *bounds;   /* (n, 2): first input index, number of taps */
    int32_t *k;    /* (n, ksize): weights scaled by 2^PRECISION_BITS */
} resample_axis;

static void axis_free(resample_axis *ax)
{
    free(ax->bounds);
    free(ax->k);
    ax->bounds = NULL;
    ax->k = NULL;
}

/* Computes PIL's taps for output samples [o0, o0 + n) of a resample of
 * in_size inputs to out_size outputs (ref: precompute_coeffs +
 * normalize_coeffs_8bpc, with box = (0, in_size)).  On success ax owns two
 * allocations (free with axis_free); on failure nothing is left allocated. */
static vit_status axis_init(resample_axis *ax, int in_size, int out_size, int o0, int n,
                            img_interp interp, vit_error *err)
{
    memset(ax, 0, sizeof *ax);
    double (*filter)(double) = interp == IMG_BICUBIC ? bicubic_filter : bilinear_filter;
    double filter_support = interp == IMG_BICUBIC ? 2.0 : 1.0;

    /* PIL keeps the box in floats: in1 - in0 is float, exact below 2^24. */
    float in0 = 0.0f, in1 = (float)in_size;
    double scale = (double)(in1 - in0) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = filter_support * filterscale;
    double kd = ceil(support) * 2 + 1;
    if (kd > INT_MAX / 4)
        return vit_error_set(err, VIT_ERR_TOO_LARGE, "resize from %d to %d needs too many taps",
                             in_size, out_size);
    int ksize = (int)kd;

    size_t nk = (size_t)n;
    if (nk > SIZE_MAX / (size_t)ksize / sizeof(int32_t) || nk > SIZE_MAX / 2 / sizeof(int))
        return vit_error_set(err, VIT_ERR_TOO_LARGE, "resize coefficient table overflows");
    ax->k = malloc(nk * (size_t)ksize * sizeof(int32_t));
    ax->bounds = malloc(nk * 2 * sizeof(int));
    double *w = malloc((size_t)ksize * sizeof(double));
    if (!ax->k || !ax->bounds || !w) {
        free(w);
        axis_free(ax);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for resize coefficients");
    }

    ax->ksize = ksize;
    ax->first = in_size;
    ax->last = 0;
    double ss = 1.0 / filterscale;
    for (int i = 0; i < n; i++) {
        int xx = o0 + i;
        double center = in0 + (xx + 0.5) * scale;
        double ww = 0.0;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0)
            xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size)
            xmax = in_size;
        xmax -= xmin; /* now the tap count, <= ksize */
        if (xmax < 0)
            xmax = 0;
        for (int x = 0; x < xmax; x++) {
            double v = filter((x + xmin - center + 0.5) * ss);
            w[x] = v;
            ww += v;
        }
        for (int x = 0; x < xmax; x++) {
            if (ww != 0.0)
                w[x] /= ww;
        }
        int32_t *k = ax->k + (size_t)i * (size_t)ksize;
        for (int x = 0; x < ksize; x++) {
            double v = x < xmax ? w[x] : 0.0;
            /* Round half away from zero, as normalize_coeffs_8bpc. */
            k[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS))
                         : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
        }
        ax->bounds[2 * i] = xmin;
        ax->bounds[2 * i + 1] = xmax;
        if (xmax > 0) {
            if (xmin < ax->first)
                ax->first = xmin;
            if (xmin + xmax > ax->last)
                ax->last = xmin + xmax;
        }
    }
    if (ax->first > ax->last)
        ax->first = ax->last = 0;
    free(w);
    return VIT_OK;
}

/* Fixed-point accumulator -> pixel (ref: clip8: lookup of in >> 22, clamped). */
static uint8_t clip8(int64_t acc)
{
    if (acc < 0)
        return 0;
    acc >>= PRECISION_BITS;
    return acc > 255 ? 255 : (uint8_t)acc;
}

/* ---------------------------------------------------------------- resampling */

/* A read-only window onto RGB rows: pixel (x, y) is at base + y*stride + 3x. */
typedef struct rgb_view {
    const uint8_t *base;
    size_t stride; /* bytes per row */
} rgb_view;

/* Horizontal pass: for each of nrows rows of src, writes ax's n output
 * samples (n = width of dst) into dst rows of dst_stride bytes. */
static void resample_rows(rgb_view src, int nrows, const resample_axis *ax, int n, uint8_t *dst,
                          size_t dst_stride)
{
    for (int y = 0; y < nrows; y++) {
        const uint8_t *row = src.base + (size_t)y * src.stride;
        uint8_t *out = dst + (size_t)y * dst_stride;
        for (int i = 0; i < n; i++) {
            int xmin = ax->bounds[2 * i], cnt = ax->bounds[2 * i + 1];
            const int32_t *k = ax->k + (size_t)i * (size_t)ax->ksize;
            const uint8_t *p = row + (size_t)xmin * 3;
            int64_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
            for (int x = 0; x < cnt; x++) {
                s0 += (int64_t)p[3 * x + 0] * k[x];
                s1 += (int64_t)p[3 * x + 1] * k[x];
                s2 += (int64_t)p[3 * x + 2] * k[x];
            }
            out[3 * i + 0] = clip8(s0);
            out[3 * i + 1] = clip8(s1);
            out[3 * i + 2] = clip8(s2);
        }
    }
}

/* Vertical pass: writes ax's n output rows of width pixels into dst.  Input
 * row r of the axis is src row r - row0 (src holds only the rows needed). */
static void resample_cols(rgb_view src, int row0, int width, const resample_axis *ax, int n,
                          uint8_t *dst, size_t dst_stride)
{
    for (int i = 0; i < n; i++) {
        int ymin = ax->bounds[2 * i] - row0, cnt = ax->bounds[2 * i + 1];
        const int32_t *k = ax->k + (size_t)i * (size_t)ax->ksize;
        uint8_t *out = dst + (size_t)i * dst_stride;
        for (int x = 0; x < width; x++) {
            const uint8_t *p = src.base + (size_t)ymin * src.stride + (size_t)x * 3;
            int64_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
            for (int y = 0; y < cnt; y++) {
                const uint8_t *q = p + (size_t)y * src.stride;
                s0 += (int64_t)q[0] * k[y];
                s1 += (int64_t)q[1] * k[y];
                s2 += (int64_t)q[2] * k[y];
            }
            out[3 * x + 0] = clip8(s0);
            out[3 * x + 1] = clip8(s1);
            out[3 * x + 2] = clip8(s2);
        }
    }
}

/* Writes the window [x0, x0 + ww) x [y0, y0 + wh) of img resized (PIL) to
 * rw x rh into dst (wh rows of dst_stride bytes).  The window must lie inside
 * the resized image.  Allocates only temporaries. */
static vit_status resample_window(const img_image *img, int rw, int rh, int x0, int y0, int ww,
                                  int wh, img_interp interp, uint8_t *dst, size_t dst_stride,
                                  vit_error *err)
{
    int need_h = rw != img->width, need_v = rh != img->height;
    resample_axis ah = {0}, av = {0};
    uint8_t *tmp = NULL;
    vit_status s = VIT_OK;

    /* Rows of the input the vertical pass reads (all of the window's rows
     * when there is no vertical pass). */
    int row0 = y0, row1 = y0 + wh;
    if (need_v) {
        s = axis_init(&av, img->height, rh, y0, wh, interp, err);
        if (s != VIT_OK)
            return s;
        row0 = av.first;
        row1 = av.last;
    }

    rgb_view src = {img->pixels + (size_t)row0 * (size_t)img->width * 3 + (size_t)x0 * 3,
                    (size_t)img->width * 3};
    if (need_h) {
        s = axis_init(&ah, img->width, rw, x0, ww, interp, err);
        if (s != VIT_OK)
            goto done;
        size_t rows = (size_t)(row1 - row0), stride = (size_t)ww * 3;
        if (rows > 0 && stride > SIZE_MAX / rows) {
            s = vit_error_set(err, VIT_ERR_TOO_LARGE, "resize buffer overflows");
            goto done;
        }
        tmp = malloc(rows > 0 ? rows * stride : 1);
        if (!tmp) {
            s = vit_error_set(err, VIT_ERR_NOMEM, "out of memory resizing");
            goto done;
        }
        rgb_view in = {img->pixels + (size_t)row0 * (size_t)img->width * 3,
                       (size_t)img->width * 3};
        resample_rows(in, row1 - row0, &ah, ww, tmp, stride);
        src.base = tmp;
        src.stride = stride;
    }

    if (need_v) {
        resample_cols(src, row0, ww, &av, wh, dst, dst_stride);
    } else {
        for (int y = 0; y < wh; y++)
            memcpy(dst + (size_t)y * dst_stride, src.base + (size_t)y * src.stride,
                   (size_t)ww * 3);
    }
done:
    free(tmp);
    axis_free(&ah);
    axis_free(&av);
    return s;
}

/* Checks that img is a usable RGB image. */
static vit_status check_image(const img_image *img, vit_error *err)
{
    if (!img || !img->pixels || img->width <= 0 || img->height <= 0)
        return vit_error_set(err, VIT_ERR_INVALID, "empty or NULL image");
    if ((size_t)img->width > SIZE_MAX / 3 / (size_t)img->height)
        return vit_error_set(err, VIT_ERR_TOO_LARGE, "image %dx%d is too large", img->width,
                             img->height);
    return VIT_OK;
}

/* Allocates a w x h RGB image (zeroed) into *out. */
static vit_status alloc_image(int w, int h, img_image *out, vit_error *err)
{
    out->width = out->height = 0;
    out->pixels = NULL;
    if (w <= 0 || h <= 0 || (size_t)w > SIZE_MAX / 3 / (size_t)h)
        return vit_error_set(err, VIT_ERR_INVALID, "bad image size %dx%d", w, h);
    out->pixels = calloc((size_t)w * (size_t)h, 3);
    if (!out->pixels)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for a %dx%d image", w, h);
    out->width = w;
    out->height = h;
    return VIT_OK;
}

vit_status img_resize(const img_image *img, int w, int h, img_interp interp, img_image *out,
                      vit_error *err)
{
    if (!out)
        return vit_error_set(err, VIT_ERR_INVALID, "img_resize: NULL output");
    out->width = out->height = 0;
    out->pixels = NULL;
    vit_status s = check_image(img, err);
    if (s != VIT_OK)
        return s;
    if (interp != IMG_BILINEAR && interp != IMG_BICUBIC)
        return vit_error_set(err, VIT_ERR_INVALID, "unknown interpolation %d", (int)interp);
    s = alloc_image(w, h, out, err);
    if (s != VIT_OK)
        return s;
    s = resample_window(img, w, h, 0, 0, w, h, interp, out->pixels, (size_t)w * 3, err);
    if (s != VIT_OK)
        img_free(out);
    return s;
}

/* ---------------------------------------------------------------- torchvision */

/* torchvision CenterCrop offset along one axis of size r for a crop of c:
 * int(round((r - c) / 2.0)) with Python's round-half-to-even; when the crop
 * is larger, torchvision zero-pads (c - r) // 2 before the image, which is
 * an offset of minus that. */
static int crop_offset(int r, int c)
{
    if (c > r)
        return -((c - r) / 2);
    int d = r - c, q = d / 2;
    if (d % 2 == 1 && q % 2 == 1) /* d / 2 == q + 0.5: round to the even one */
        q++;
    return q;
}

/* Checks a preprocessing config. */
static vit_status check_cfg(const img_preprocess *cfg, vit_error *err)
{
    if (!cfg)
        return vit_error_set(err, VIT_ERR_INVALID, "NULL preprocessing config");
    if (cfg->crop_h < 1 || cfg->crop_w < 1 || cfg->crop_h > IMG_MAX_OUT_SIDE ||
        cfg->crop_w > IMG_MAX_OUT_SIDE)
        return vit_error_set(err, VIT_ERR_INVALID, "crop size %dx%d is outside 1..%d",
                             cfg->crop_h, cfg->crop_w, IMG_MAX_OUT_SIDE);
    if (cfg->resize_shorter < 0 || cfg->resize_shorter > IMG_MAX_OUT_SIDE)
        return vit_error_set(err, VIT_ERR_INVALID, "resize_shorter %d is outside 0..%d",
                             cfg->resize_shorter, IMG_MAX_OUT_SIDE);
    if (cfg->interp != IMG_BILINEAR && cfg->interp != IMG_BICUBIC)
        return vit_error_set(err, VIT_ERR_INVALID, "unknown interpolation %d",
                             (int)cfg->interp);
    for (int c = 0; c < 3; c++) {
        if (!isfinite(cfg->mean[c]) || !isfinite(cfg->std[c]) || cfg->std[c] == 0.0f)
            return vit_error_set(err, VIT_ERR_INVALID, "bad mean/std for channel %d", c);
    }
    return VIT_OK;
}

/* torchvision Resize output size (ref: torchvision 0.14
 * _compute_resized_output_size): shorter side -> size, longer side ->
 * int(size * long / short) (true division, truncated). */
static vit_status resized_size(const img_image *img, const img_preprocess *cfg, int *rw, int *rh,
                               vit_error *err)
{
    if (cfg->resize_shorter == 0) {
        *rw = cfg->crop_w;
        *rh = cfg->crop_h;
        return VIT_OK;
    }
    int w = img->width, h = img->height;
    int shorter = w <= h ? w : h, longer = w <= h ? h : w;
    /* Exact: both operands are integers below 2^53. */
    double nl = (double)((int64_t)cfg->resize_shorter * longer) / shorter;
    if (nl >= (double)INT_MAX)
        return vit_error_set(err, VIT_ERR_TOO_LARGE,
                             "resizing a %dx%d image to shorter side %d overflows", w, h,
                             cfg->resize_shorter);
    int new_long = (int)nl;
    *rw = w <= h ? cfg->resize_shorter : new_long;
    *rh = w <= h ? new_long : cfg->resize_shorter;
    return VIT_OK;
}

vit_status img_resize_crop(const img_image *img, const img_preprocess *cfg, img_image *out,
                           vit_error *err)
{
    if (!out)
        return vit_error_set(err, VIT_ERR_INVALID, "img_resize_crop: NULL output");
    out->width = out->height = 0;
    out->pixels = NULL;
    vit_status s = check_image(img, err);
    if (s == VIT_OK)
        s = check_cfg(cfg, err);
    int rw = 0, rh = 0;
    if (s == VIT_OK)
        s = resized_size(img, cfg, &rw, &rh, err);
    if (s == VIT_OK)
        s = alloc_image(cfg->crop_w, cfg->crop_h, out, err); /* zeroed = padding */
    if (s != VIT_OK)
        return s;

    /* Crop pixel (i, j) is resized pixel (i + ox, j + oy); only the part
     * inside the resized image is computed, the rest stays zero. */
    int ox = crop_offset(rw, cfg->crop_w), oy = crop_offset(rh, cfg->crop_h);
    int x0 = ox > 0 ? ox : 0, y0 = oy > 0 ? oy : 0;
    int x1 = rw < ox + cfg->crop_w ? rw : ox + cfg->crop_w;
    int y1 = rh < oy + cfg->crop_h ? rh : oy + cfg->crop_h;
    size_t stride = (size_t)cfg->crop_w * 3;
    uint8_t *dst = out->pixels + (size_t)(y0 - oy) * stride + (size_t)(x0 - ox) * 3;
    s = resample_window(img, rw, rh, x0, y0, x1 - x0, y1 - y0, cfg->interp, dst, stride, err);
    if (s != VIT_OK)
        img_free(out);
    return s;
}

vit_status img_to_tensor(const img_image *img, const img_preprocess *cfg, float *out,
                         vit_error *err)
{
    if (!out)
        return vit_error_set(err, VIT_ERR_INVALID, "img_to_tensor: NULL output");
    img_image crop;
    vit_status s = img_resize_crop(img, cfg, &crop, err);
    if (s != VIT_OK)
        return s;
    /* ToTensor then Normalize, both in float32 as torch does:
     * (v / 255 - mean) / std, planar (3, H, W). */
    size_t plane = (size_t)crop.width * (size_t)crop.height;
    for (int c = 0; c < 3; c++) {
        float mean = cfg->mean[c], std = cfg->std[c];
        float *o = out + (size_t)c * plane;
        for (size_t i = 0; i < plane; i++)
            o[i] = ((float)crop.pixels[3 * i + (size_t)c] / 255.0f - mean) / std;
    }
    img_free(&crop);
    return VIT_OK;
}

/* ---------------------------------------------------------------- presets */

/* timm augreg in21k ViTs: crop_pct 0.9 -> Resize(floor(size / 0.9)),
 * bicubic, mean = std = 0.5 (ref: timm transforms_factory, eval). */
img_preprocess img_preprocess_timm_in21k(int size)
{
    img_preprocess p = {(int)floor(size / 0.9), size, size, IMG_BICUBIC,
                        {0.5f, 0.5f, 0.5f}, {0.5f, 0.5f, 0.5f}};
    return p;
}

/* ModelScope / classic ImageNet eval: Resize(256) bilinear, CenterCrop(224). */
img_preprocess img_preprocess_modelscope(void)
{
    img_preprocess p = {256, 224, 224, IMG_BILINEAR,
                        {0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}};
    return p;
}

/* OpenAI CLIP: Resize(size) bicubic, CenterCrop(size), CLIP mean/std. */
img_preprocess img_preprocess_clip(int size)
{
    img_preprocess p = {size, size, size, IMG_BICUBIC,
                        {0.48145466f, 0.4578275f, 0.40821073f},
                        {0.26862954f, 0.26130258f, 0.27577711f}};
    return p;
}

/* Hugging Face ViTImageProcessor: both sides straight to size, bilinear,
 * mean = std = 0.5. */
img_preprocess img_preprocess_hf(int size)
{
    img_preprocess p = {0, size, size, IMG_BILINEAR, {0.5f, 0.5f, 0.5f}, {0.5f, 0.5f, 0.5f}};
    return p;
}
