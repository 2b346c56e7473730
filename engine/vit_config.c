/*
 * vit_config.c - ViT architecture: presets, validation, inference from tensor
 * shapes, config.json in the HF transformers and timm forms, and HF's
 * preprocessor_config.json.
 *
 * The order of authority when loading is: layout defaults < shapes of the
 * tensors < config.json < preprocessor_config.json (preprocessing only).
 * Whatever the config says is checked against the tensors before the model
 * is allocated (vit_load.c), so a config that disagrees with its weights is
 * an error rather than a silent misread.  Config files are untrusted: every
 * number is range-checked before it is converted, and the float fields are
 * validated again as the floats the model will use.
 */
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"
#include "vit_impl.h"

#define VIT_MAX_RESIZE 8192 /* longest shorter-side resize a config may ask for */
#define VIT_MIN_STD 1e-3    /* normalization std bounds (pixels are in [0, 1]) */
#define VIT_MAX_STD 1e3
#define VIT_MAX_MEAN 1e3

/* ---- presets ---- */

typedef struct vit_preset {
    const char *name;
    vit_config cfg;
} vit_preset;

static vit_config preset_config(int image, int patch, int width, int depth, int heads, int mlp,
                                int classes, int proj, float eps, vit_act act, bool ln_pre,
                                bool patch_bias, img_preprocess pre)
{
    vit_config c = {
        .image_size = image, .patch_size = patch, .width = width, .depth = depth,
        .heads = heads, .mlp_dim = mlp, .num_classes = classes, .proj_dim = proj,
        .ln_eps = eps, .act = act, .pool = VIT_POOL_CLS, .ln_pre = ln_pre,
        .patch_bias = patch_bias, .preprocess = pre,
    };
    return c;
}

vit_status vit_config_preset(const char *name, vit_config *out, vit_error *err)
{
    if (strcmp(name, "vit-b16") == 0) {
        /* timm vit_base_patch16_224.augreg_in21k */
        *out = preset_config(224, 16, 768, 12, 12, 3072, 21843, 0, 1e-6f, VIT_ACT_GELU, false,
                             true, img_preprocess_timm_in21k(224));
    } else if (strcmp(name, "vit-l14-clip") == 0) {
        /* OpenAI CLIP ViT-L/14 visual tower */
        *out = preset_config(224, 14, 1024, 24, 16, 4096, 0, 768, 1e-5f, VIT_ACT_QUICK_GELU,
                             true, false, img_preprocess_clip(224));
    } else if (strcmp(name, "vit-tiny") == 0) {
        *out = preset_config(32, 8, 64, 2, 4, 256, 10, 0, 1e-6f, VIT_ACT_GELU, false, true,
                             img_preprocess_timm_in21k(32));
    } else {
        return vit_error_set(err, VIT_ERR_NOT_FOUND,
                             "unknown preset '%s' (known: vit-b16, vit-l14-clip, vit-tiny)", name);
    }
    return VIT_OK;
}

/* ---- derived sizes and validation ---- */

int vit_config_tokens(const vit_config *cfg)
{
    int g = cfg->image_size / cfg->patch_size;
    return g * g + 1;
}

int vit_config_feature_dim(const vit_config *cfg)
{
    return cfg->proj_dim > 0 ? cfg->proj_dim : cfg->width;
}

int vit_config_output_dim(const vit_config *cfg)
{
    return cfg->num_classes > 0 ? cfg->num_classes : vit_config_feature_dim(cfg);
}

size_t vit_config_image_bytes(const vit_config *cfg)
{
    uint64_t N = (uint64_t)vit_config_tokens(cfg), C = (uint64_t)cfg->width;
    uint64_t M = (uint64_t)cfg->mlp_dim, P = (uint64_t)cfg->patch_size;
    uint64_t F = (uint64_t)vit_config_feature_dim(cfg);
    uint64_t floats = N * (6 * C + M)          /* x, ln, qkv (3C), attn; MLP hidden */
                      + (N - 1) * (3 * P * P + C) /* unfolded patches, patch embeddings */
                      + 2 * C + F;              /* pooled, pooled after LN, features */
    return floats <= SIZE_MAX / sizeof(float) ? (size_t)(floats * sizeof(float)) : SIZE_MAX;
}

#define CHECK_RANGE(field, lo, hi)                                                        \
    do {                                                                                  \
        if (cfg->field < (lo) || cfg->field > (hi))                                       \
            return vit_error_set(err, VIT_ERR_INVALID, #field " = %d is outside [%d, %d]", \
                                 (int)cfg->field, (int)(lo), (int)(hi));                  \
    } while (0)

/* Bounds keep every size product of the model far from overflow and the
 * attention scores (N x N) within reason. */
vit_status vit_config_validate(const vit_config *cfg, vit_error *err)
{
    CHECK_RANGE(image_size, 1, 4096);
    CHECK_RANGE(patch_size, 1, 1024);
    CHECK_RANGE(width, 1, 8192);
    CHECK_RANGE(depth, 1, 256);
    CHECK_RANGE(heads, 1, 256);
    CHECK_RANGE(mlp_dim, 1, 65536);
    CHECK_RANGE(num_classes, 0, 1000000);
    CHECK_RANGE(proj_dim, 0, 8192);
    if (cfg->image_size % cfg->patch_size)
        return vit_error_set(err, VIT_ERR_INVALID, "image_size %d is not a multiple of patch_size %d",
                             cfg->image_size, cfg->patch_size);
    if (cfg->image_size / cfg->patch_size > 64)
        return vit_error_set(err, VIT_ERR_INVALID, "more than 64x64 patches (%d/%d)",
                             cfg->image_size, cfg->patch_size);
    if (cfg->width % cfg->heads)
        return vit_error_set(err, VIT_ERR_INVALID, "width %d is not divisible by %d heads",
                             cfg->width, cfg->heads);
    /* What a forward pass holds per image follows from the config alone, not
     * from the checkpoint's size (vit.h: VIT_MAX_IMAGE_BYTES); the ranges
     * above keep these products below 2^33. */
    uint64_t tokens = (uint64_t)vit_config_tokens(cfg);
    uint64_t image = vit_config_image_bytes(cfg), attention = tokens * tokens * sizeof(float);
    if (image + attention > VIT_MAX_IMAGE_BYTES)
        return vit_error_set(err, VIT_ERR_TOO_LARGE,
                             "the forward pass would need %llu bytes per image (%llu tokens of "
                             "width %d, MLP %d, patch %d, and a %llux%llu attention matrix), "
                             "more than the limit of %zu",
                             (unsigned long long)(image + attention), (unsigned long long)tokens,
                             cfg->width, cfg->mlp_dim, cfg->patch_size,
                             (unsigned long long)tokens, (unsigned long long)tokens,
                             VIT_MAX_IMAGE_BYTES);
    /* Floats are checked as stored (after narrowing from JSON's doubles): a
     * subnormal eps or std, or one that overflowed to inf, would pass a check
     * made before the cast and turn every score into NaN. */
    if (!(isnormal(cfg->ln_eps) && cfg->ln_eps > 0.0f && cfg->ln_eps < 1.0f))
        return vit_error_set(err, VIT_ERR_INVALID,
                             "layer_norm_eps %g is not a normal float in (0, 1)",
                             (double)cfg->ln_eps);
    const img_preprocess *p = &cfg->preprocess;
    if (p->crop_h != cfg->image_size || p->crop_w != cfg->image_size)
        return vit_error_set(err, VIT_ERR_INVALID,
                             "preprocessing crop %dx%d does not match image_size %d", p->crop_w,
                             p->crop_h, cfg->image_size);
    if (p->resize_shorter < 0 || p->resize_shorter > VIT_MAX_RESIZE)
        return vit_error_set(err, VIT_ERR_INVALID, "resize size %d is outside [0, %d]",
                             p->resize_shorter, VIT_MAX_RESIZE);
    /* Inputs are in [0, 1] before normalization, so these bounds keep
     * (x - mean) / std finite and within a few million for any pixel. */
    for (int c = 0; c < 3; c++) {
        if (!(p->std[c] >= VIT_MIN_STD && p->std[c] <= VIT_MAX_STD))
            return vit_error_set(err, VIT_ERR_INVALID,
                                 "normalization std[%d] = %g is outside [%g, %g]", c,
                                 (double)p->std[c], VIT_MIN_STD, VIT_MAX_STD);
        if (!(fabsf(p->mean[c]) <= VIT_MAX_MEAN))
            return vit_error_set(err, VIT_ERR_INVALID,
                                 "normalization mean[%d] = %g is outside [-%g, %g]", c,
                                 (double)p->mean[c], VIT_MAX_MEAN, VIT_MAX_MEAN);
    }
    return VIT_OK;
}

/* ---- inference from shapes ---- */

/* Preprocessing a layout's checkpoints are usually trained with. */
static img_preprocess default_preprocess(vit_layout layout, int size)
{
    switch (layout) {
    case VIT_LAYOUT_HF:
        return img_preprocess_hf(size);
    case VIT_LAYOUT_CLIP:
    case VIT_LAYOUT_HF_CLIP:
        return img_preprocess_clip(size);
    case VIT_LAYOUT_TORCHVISION: {
        /* torchvision's ViT weights: resize 256 bilinear, crop 224, ImageNet stats */
        img_preprocess p = img_preprocess_modelscope();
        p.resize_shorter = size * 256 / 224;
        p.crop_h = p.crop_w = size;
        return p;
    }
    case VIT_LAYOUT_TIMM:
    default:
        return img_preprocess_timm_in21k(size);
    }
}

static int64_t numel_of(const st_tensor *t)
{
    return (int64_t)t->numel;
}

vit_status vit_config_infer(const vit_layout_desc *d, const st_file *f, vit_config *cfg,
                            vit_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    const st_tensor *patch_w = vit_layout_find(d, f, "patch_embed.proj.weight", 0);
    const st_tensor *pos = vit_layout_find(d, f, "pos_embed", 0);
    const st_tensor *fc1 = vit_layout_find(d, f, "blocks.{i}.mlp.fc1.weight", 0);
    if (!patch_w || patch_w->ndim != 4 || patch_w->shape[1] != 3 ||
        patch_w->shape[2] != patch_w->shape[3])
        return vit_error_set(err, VIT_ERR_FORMAT,
                             "%s checkpoint: patch embedding weight missing or not (C, 3, P, P)",
                             d->name);
    if (patch_w->shape[0] < 1 || patch_w->shape[0] > 8192 || patch_w->shape[2] < 1 ||
        patch_w->shape[2] > 1024)
        return vit_error_set(err, VIT_ERR_FORMAT, "patch embedding weight has an implausible shape");
    cfg->width = (int)patch_w->shape[0];
    cfg->patch_size = (int)patch_w->shape[2];
    if (!pos || numel_of(pos) % cfg->width)
        return vit_error_set(err, VIT_ERR_FORMAT,
                             "%s checkpoint: position embedding missing or not a multiple of width %d",
                             d->name, cfg->width);
    int64_t tokens = numel_of(pos) / cfg->width;
    int64_t grid = (int64_t)llround(sqrt((double)(tokens - 1)));
    if (tokens < 2 || grid * grid != tokens - 1 || grid > 64)
        return vit_error_set(err, VIT_ERR_FORMAT,
                             "position embedding has %lld tokens, not 1 + a square grid",
                             (long long)tokens);
    cfg->image_size = (int)grid * cfg->patch_size;
    if (!fc1 || numel_of(fc1) % cfg->width || numel_of(fc1) / cfg->width > 65536)
        return vit_error_set(err, VIT_ERR_FORMAT, "%s checkpoint: block 0 MLP weight missing",
                             d->name);
    cfg->mlp_dim = (int)(numel_of(fc1) / cfg->width);
    int depth = 0;
    while (depth < 256 && vit_layout_find(d, f, "blocks.{i}.mlp.fc1.weight", depth))
        depth++;
    cfg->depth = depth;
    /* Heads are not visible in any shape; 64-wide heads is the rule of ViT-B/L/H and of
     * OpenAI CLIP (heads = width // 64).  config.json overrides it. */
    cfg->heads = cfg->width % 64 == 0 ? cfg->width / 64 : 1;
    cfg->patch_bias = vit_layout_find(d, f, "patch_embed.proj.bias", 0) != NULL;
    cfg->ln_pre = vit_layout_find(d, f, "norm_pre.weight", 0) != NULL;
    const st_tensor *proj = vit_layout_find(d, f, "proj.weight", 0);
    if (proj) {
        if (numel_of(proj) % cfg->width || numel_of(proj) / cfg->width > 8192)
            return vit_error_set(err, VIT_ERR_FORMAT, "projection has an implausible shape");
        cfg->proj_dim = (int)(numel_of(proj) / cfg->width);
    }
    const st_tensor *head_b = vit_layout_find(d, f, "head.bias", 0);
    if (head_b) {
        if (head_b->numel > 1000000)
            return vit_error_set(err, VIT_ERR_FORMAT, "head has more than 1000000 classes");
        cfg->num_classes = (int)head_b->numel;
    }
    /* timm names the final norm fc_norm when it follows average pooling */
    cfg->pool = d->layout == VIT_LAYOUT_TIMM && st_find(f, "fc_norm.weight") ? VIT_POOL_MEAN
                                                                             : VIT_POOL_CLS;
    cfg->ln_eps = d->default_eps;
    cfg->act = d->default_act;
    cfg->preprocess = default_preprocess(d->layout, cfg->image_size);
    return VIT_OK;
}

/* ---- config.json ---- */

/* The optional-key readers below return one of these; absent keys keep *out. */
enum { KEY_OK, KEY_BAD_TYPE, KEY_BAD_RANGE };

/* Reads an optional non-negative integer key (an integral real counts). */
static int json_int(json_t *obj, const char *key, int *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return KEY_OK;
    if (json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) <= 1 << 30) {
        *out = (int)json_integer_value(v);
        return KEY_OK;
    }
    if (json_is_real(v) && json_real_value(v) >= 0 && json_real_value(v) <= 1 << 30 &&
        json_real_value(v) == floor(json_real_value(v))) {
        *out = (int)json_real_value(v);
        return KEY_OK;
    }
    return json_is_number(v) ? KEY_BAD_RANGE : KEY_BAD_TYPE;
}

/* Reads number v into *out if it lies in [lo, hi].  Every float a config
 * stores or divides by is range-checked this way before any conversion: a
 * double outside float's range makes the narrowing cast undefined. */
static int number_in(json_t *v, double lo, double hi, double *out)
{
    if (!json_is_number(v))
        return KEY_BAD_TYPE;
    double d = json_number_value(v);
    if (!(d >= lo && d <= hi))
        return KEY_BAD_RANGE;
    *out = d;
    return KEY_OK;
}

/* Reads an optional number key in [lo, hi]. */
static int json_double(json_t *obj, const char *key, double lo, double hi, double *out)
{
    json_t *v = json_object_get(obj, key);
    return v ? number_in(v, lo, hi, out) : KEY_OK;
}

/* Reads an optional float: finite and within float's range.  Tighter bounds
 * are vit_config_validate's, on the narrowed value the model will use. */
static int json_float(json_t *obj, const char *key, float *out)
{
    double d;
    json_t *v = json_object_get(obj, key);
    int r = v ? number_in(v, -FLT_MAX, FLT_MAX, &d) : KEY_OK;
    if (v && r == KEY_OK)
        *out = (float)d;
    return r;
}

/* Reads an optional 3-float array (mean/std); a single number stands for all
 * three (HF processors allow that). */
static int json_float3(json_t *obj, const char *key, float out[3])
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return KEY_OK;
    if (!json_is_number(v) && (!json_is_array(v) || json_array_size(v) != 3))
        return KEY_BAD_TYPE;
    float tmp[3];
    for (size_t i = 0; i < 3; i++) {
        double d;
        int r = number_in(json_is_array(v) ? json_array_get(v, i) : v, -FLT_MAX, FLT_MAX, &d);
        if (r != KEY_OK)
            return r;
        tmp[i] = (float)d;
    }
    memcpy(out, tmp, sizeof tmp);
    return KEY_OK;
}

/* Error for a reader's result r on key (r != KEY_OK). */
static vit_status key_error(vit_error *err, const char *file, const char *key, int r)
{
    if (r == KEY_BAD_RANGE)
        return vit_error_set(err, VIT_ERR_INVALID, "%s: '%s' is out of range", file, key);
    return vit_error_set(err, VIT_ERR_FORMAT, "%s: '%s' has the wrong type", file, key);
}

static vit_status parse_act(const char *s, vit_act *act, vit_error *err)
{
    if (strcmp(s, "gelu") == 0 || strcmp(s, "gelu_python") == 0)
        *act = VIT_ACT_GELU;
    else if (strcmp(s, "quick_gelu") == 0)
        *act = VIT_ACT_QUICK_GELU;
    else
        return vit_error_set(err, VIT_ERR_UNSUPPORTED,
                             "config.json: hidden_act '%s' is not supported (gelu, quick_gelu)", s);
    return VIT_OK;
}

const char *vit_label_problem(const char *s, size_t len, size_t *at)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        *at = i;
        uint32_t cp;
        size_t n = utf8_sequence(u + i, len - i, &cp);
        if (n == 0)
            return "invalid UTF-8";
        if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 ||
            cp == 0x2029 || (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069))
            return "a control character";
        i += n;
    }
    return NULL;
}

/* Checks label i of a config.json list (vit_label_problem). */
static vit_status check_label(const char *what, size_t i, const char *label, vit_error *err)
{
    size_t at;
    const char *problem = vit_label_problem(label, strlen(label), &at);
    if (problem)
        return vit_error_set(err, VIT_ERR_FORMAT, "config.json: %s %zu has %s at byte %zu", what,
                             i, problem, at);
    return VIT_OK;
}

void vit_labels_free(char **labels, int n)
{
    if (!labels)
        return;
    for (int i = 0; i < n; i++)
        free(labels[i]);
    free(labels);
}

/* Copies a JSON array of strings (timm label_names). */
static vit_status labels_from_array(json_t *arr, char ***labels, int *n, vit_error *err)
{
    size_t count = json_array_size(arr);
    if (count == 0 || count > 1000000)
        return vit_error_set(err, VIT_ERR_FORMAT, "config.json: label list has %zu entries", count);
    char **out = calloc(count, sizeof *out);
    if (!out)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory reading labels");
    for (size_t i = 0; i < count; i++) {
        json_t *s = json_array_get(arr, i);
        if (!json_is_string(s) || !(out[i] = strdup(json_string_value(s)))) {
            vit_labels_free(out, (int)count);
            return vit_error_set(err, VIT_ERR_FORMAT, "config.json: label %zu is not a string", i);
        }
        vit_status st = check_label("label", i, out[i], err);
        if (st != VIT_OK) {
            vit_labels_free(out, (int)count);
            return st;
        }
    }
    *labels = out;
    *n = (int)count;
    return VIT_OK;
}

/* Copies HF id2label {"0": "name", ...} (or timm's label_names in that form:
 * what names the key); ids must be exactly 0..n-1. */
static vit_status labels_from_id2label(json_t *obj, const char *what, char ***labels, int *n,
                                       vit_error *err)
{
    size_t count = json_object_size(obj);
    if (count == 0 || count > 1000000)
        return vit_error_set(err, VIT_ERR_FORMAT, "config.json: %s has %zu entries", what, count);
    char **out = calloc(count, sizeof *out);
    if (!out)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory reading labels");
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value) {
        char *end;
        long id = strtol(key, &end, 10);
        if (*key == '\0' || *end != '\0' || id < 0 || (size_t)id >= count || out[id] ||
            !json_is_string(value)) {
            vit_labels_free(out, (int)count);
            char shown[24]; /* the key is quoted: keep it short and printable */
            size_t i = 0;
            for (; key[i] && i + 1 < sizeof shown; i++)
                shown[i] = key[i] >= 0x20 && key[i] < 0x7f ? key[i] : '?';
            shown[i] = '\0';
            return vit_error_set(err, VIT_ERR_FORMAT,
                                 "config.json: %s must map ids 0..%zu to strings (bad entry '%s')",
                                 what, count - 1, shown);
        }
        if (!(out[id] = strdup(json_string_value(value)))) {
            vit_labels_free(out, (int)count);
            return vit_error_set(err, VIT_ERR_NOMEM, "out of memory reading labels");
        }
        char entry[32];
        snprintf(entry, sizeof entry, "%s entry", what);
        vit_status st = check_label(entry, (size_t)id, out[id], err);
        if (st != VIT_OK) {
            vit_labels_free(out, (int)count);
            return st;
        }
    }
    *labels = out;
    *n = (int)count;
    return VIT_OK;
}

/* Heads of timm's named ViT sizes, for configs without model_args. */
static int timm_heads_for(const char *architecture)
{
    static const struct { const char *tag; int heads; } sizes[] = {
        {"_tiny_", 3}, {"_small_", 6}, {"_base_", 12}, {"_large_", 16}, {"_huge_", 16},
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (strstr(architecture, sizes[i].tag))
            return sizes[i].heads;
    return 0;
}

#define BAD_KEY(key) key_error(err, "config.json", key, KEY_BAD_TYPE)

/* Runs a reader for key and returns its error from the calling function. */
#define READ(call, key)                                     \
    do {                                                    \
        int r_ = (call);                                    \
        if (r_ != KEY_OK)                                   \
            return key_error(err, "config.json", key, r_);  \
    } while (0)

/* Reads the HF form from obj: the root of a ViT config.json, or the
 * vision_config of a CLIPModel's (file names it in messages). */
static vit_status apply_hf(json_t *obj, const char *file, vit_config *cfg, vit_error *err)
{
    static const struct { const char *key; size_t offset; } ints[] = {
        {"hidden_size", offsetof(vit_config, width)},
        {"num_hidden_layers", offsetof(vit_config, depth)},
        {"num_attention_heads", offsetof(vit_config, heads)},
        {"intermediate_size", offsetof(vit_config, mlp_dim)},
        {"image_size", offsetof(vit_config, image_size)},
        {"patch_size", offsetof(vit_config, patch_size)},
    };
    int old_image = cfg->image_size, r;
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if ((r = json_int(obj, ints[i].key, (int *)((char *)cfg + ints[i].offset))) != KEY_OK)
            return key_error(err, file, ints[i].key, r);
    if ((r = json_float(obj, "layer_norm_eps", &cfg->ln_eps)) != KEY_OK)
        return key_error(err, file, "layer_norm_eps", r);
    json_t *act = json_object_get(obj, "hidden_act");
    if (act) {
        if (!json_is_string(act))
            return key_error(err, file, "hidden_act", KEY_BAD_TYPE);
        vit_status st = parse_act(json_string_value(act), &cfg->act, err);
        if (st != VIT_OK)
            return st;
    }
    if (cfg->image_size != old_image)
        cfg->preprocess = img_preprocess_hf(cfg->image_size);
    return VIT_OK;
}

static vit_status apply_timm(json_t *root, vit_config *cfg, vit_error *err)
{
    json_t *args = json_object_get(root, "model_args");
    json_t *arch = json_object_get(root, "architecture");
    if (json_is_string(arch)) {
        int heads = timm_heads_for(json_string_value(arch));
        if (heads)
            cfg->heads = heads;
    }
    const char *pool = NULL;
    json_t *gp = json_object_get(root, "global_pool");
    if (json_is_object(args)) {
        READ(json_int(args, "img_size", &cfg->image_size), "model_args.img_size");
        READ(json_int(args, "patch_size", &cfg->patch_size), "model_args.patch_size");
        READ(json_int(args, "embed_dim", &cfg->width), "model_args.embed_dim");
        READ(json_int(args, "depth", &cfg->depth), "model_args.depth");
        READ(json_int(args, "num_heads", &cfg->heads), "model_args.num_heads");
        /* bounded so that ratio * width converts to int defined (validate has
         * the real limit on mlp_dim) */
        double ratio = 0;
        READ(json_double(args, "mlp_ratio", 0.0, 65536.0, &ratio), "model_args.mlp_ratio");
        if (ratio > 0) {
            double mlp = round(ratio * cfg->width);
            if (!(mlp <= 1 << 30))
                return key_error(err, "config.json", "model_args.mlp_ratio", KEY_BAD_RANGE);
            cfg->mlp_dim = (int)mlp;
        }
        /* vitfit's own saves spell out what timm implies by architecture name */
        READ(json_int(args, "mlp_dim", &cfg->mlp_dim), "model_args.mlp_dim");
        READ(json_float(args, "norm_eps", &cfg->ln_eps), "model_args.norm_eps");
        json_t *act = json_object_get(args, "act_layer");
        if (act) {
            if (!json_is_string(act))
                return BAD_KEY("model_args.act_layer");
            vit_status st = parse_act(json_string_value(act), &cfg->act, err);
            if (st != VIT_OK)
                return st;
        }
        if (json_object_get(args, "global_pool"))
            gp = json_object_get(args, "global_pool");
    }
    if (gp) {
        if (!json_is_string(gp))
            return BAD_KEY("global_pool");
        pool = json_string_value(gp);
        if (strcmp(pool, "token") == 0)
            cfg->pool = VIT_POOL_CLS;
        else if (strcmp(pool, "avg") == 0)
            cfg->pool = VIT_POOL_MEAN;
        else
            return vit_error_set(err, VIT_ERR_UNSUPPORTED,
                                 "config.json: global_pool '%s' is not supported (token, avg)", pool);
    }
    json_t *pc = json_object_get(root, "pretrained_cfg");
    if (json_is_object(pc)) {
        img_preprocess *p = &cfg->preprocess;
        json_t *size = json_object_get(pc, "input_size");
        if (size) {
            if (!json_is_array(size) || json_array_size(size) != 3 ||
                !json_is_integer(json_array_get(size, 1)))
                return BAD_KEY("pretrained_cfg.input_size");
            json_int_t side = json_integer_value(json_array_get(size, 1));
            if (side != cfg->image_size)
                return vit_error_set(err, VIT_ERR_MISMATCH,
                                     "config.json: input_size %lld disagrees with image size %d",
                                     (long long)side, cfg->image_size);
        }
        double crop_pct = 0.875;
        READ(json_double(pc, "crop_pct", DBL_TRUE_MIN, 4.0, &crop_pct), "pretrained_cfg.crop_pct");
        json_t *interp = json_object_get(pc, "interpolation");
        if (interp) {
            const char *s = json_string_value(interp);
            if (!s)
                return BAD_KEY("pretrained_cfg.interpolation");
            if (strcmp(s, "bicubic") == 0)
                p->interp = IMG_BICUBIC;
            else if (strcmp(s, "bilinear") == 0)
                p->interp = IMG_BILINEAR;
            else
                return vit_error_set(err, VIT_ERR_UNSUPPORTED,
                                     "config.json: interpolation '%s' is not supported", s);
        }
        READ(json_float3(pc, "mean", p->mean), "pretrained_cfg.mean");
        READ(json_float3(pc, "std", p->std), "pretrained_cfg.std");
        /* timm transforms_factory: scale_size = floor(img_size / crop_pct).
         * The result is bounded before the cast: a tiny crop_pct makes it
         * larger than any int (undefined behaviour) or than any sane resize;
         * below 1 it would read as 0, which means "squash" here. */
        double scale = floor((double)cfg->image_size / crop_pct);
        if (!(scale >= 1 && scale <= VIT_MAX_RESIZE))
            return vit_error_set(err, VIT_ERR_INVALID,
                                 "config.json: crop_pct %g resizes to %g pixels, outside [1, %d]",
                                 crop_pct, scale, VIT_MAX_RESIZE);
        p->resize_shorter = (int)scale;
        p->crop_h = p->crop_w = cfg->image_size;
        json_t *mode = json_object_get(pc, "crop_mode");
        if (mode) {
            const char *s = json_string_value(mode);
            if (!s)
                return BAD_KEY("pretrained_cfg.crop_mode");
            if (strcmp(s, "squash") == 0 && crop_pct == 1.0)
                p->resize_shorter = 0; /* both sides straight to the input size */
            else if (strcmp(s, "center") != 0)
                return vit_error_set(err, VIT_ERR_UNSUPPORTED,
                                     "config.json: crop_mode '%s' (crop_pct %g) is not supported",
                                     s, crop_pct);
        }
        /* the exact resize, where floor(size / crop_pct) could round the wrong way */
        READ(json_int(pc, "vitfit_resize", &p->resize_shorter), "pretrained_cfg.vitfit_resize");
    } else {
        cfg->preprocess = img_preprocess_timm_in21k(cfg->image_size);
    }
    return VIT_OK;
}

/* timm's label_descriptions maps each label name to a readable one
 * ("n01440764" -> "tench, Tinca tinca"): when it describes every label, the
 * descriptions become the labels (what a reply shows a person, and what HF's
 * id2label holds for the same classes); otherwise the names stay. */
static vit_status apply_descriptions(json_t *desc, char **labels, int n, vit_error *err)
{
    if (!json_is_object(desc))
        return VIT_OK;
    for (int i = 0; i < n; i++)
        if (!json_is_string(json_object_get(desc, labels[i])))
            return VIT_OK;
    for (int i = 0; i < n; i++) {
        vit_status st = check_label("label description", (size_t)i,
                                    json_string_value(json_object_get(desc, labels[i])), err);
        if (st != VIT_OK)
            return st;
    }
    for (int i = 0; i < n; i++) {
        char *copy = strdup(json_string_value(json_object_get(desc, labels[i])));
        if (!copy)
            return vit_error_set(err, VIT_ERR_NOMEM, "out of memory reading labels");
        free(labels[i]);
        labels[i] = copy;
    }
    return VIT_OK;
}

vit_status vit_config_apply_json(json_t *root, vit_config *cfg, char ***labels, int *num_labels,
                                 vit_error *err)
{
    *labels = NULL;
    *num_labels = 0;
    if (!json_is_object(root))
        return vit_error_set(err, VIT_ERR_FORMAT, "config.json is not a JSON object");
    vit_status st;
    json_t *vision = json_object_get(root, "vision_config");
    if (json_object_get(root, "hidden_size"))
        st = apply_hf(root, "config.json", cfg, err);
    else if (json_is_object(vision)) /* HF CLIPModel: the vision tower's own config */
        st = apply_hf(vision, "config.json: vision_config", cfg, err);
    else
        st = apply_timm(root, cfg, err);
    if (st != VIT_OK)
        return st;
    json_t *names = json_object_get(root, "label_names");
    json_t *id2label = json_object_get(root, "id2label");
    if (json_is_array(names))
        st = labels_from_array(names, labels, num_labels, err);
    else if (json_is_object(names)) /* timm writes a dict when the ids have gaps */
        st = labels_from_id2label(names, "label_names", labels, num_labels, err);
    else if (json_is_object(id2label))
        return labels_from_id2label(id2label, "id2label", labels, num_labels, err);
    else
        return VIT_OK;
    if (st == VIT_OK)
        st = apply_descriptions(json_object_get(root, "label_descriptions"), *labels,
                                *num_labels, err);
    if (st != VIT_OK) {
        vit_labels_free(*labels, *num_labels);
        *labels = NULL;
        *num_labels = 0;
    }
    return st;
}

/* ---- preprocessor_config.json (HF image processors) ---- */

#define PP_FILE "preprocessor_config.json"
#define PP_READ(call, key)                              \
    do {                                                \
        int r_ = (call);                                \
        if (r_ != KEY_OK)                               \
            return key_error(err, PP_FILE, key, r_);    \
    } while (0)

/* Reads an optional boolean key; absent keeps *out. */
static int json_bool(json_t *obj, const char *key, bool *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return KEY_OK;
    if (!json_is_boolean(v))
        return KEY_BAD_TYPE;
    *out = json_is_true(v);
    return KEY_OK;
}

/* Reads an HF size: an integer, {"height": h, "width": w} or
 * {"shortest_edge": s}.  *square is set for the first two forms. */
static int json_hf_size(json_t *obj, const char *key, int *side, bool *square, bool *present)
{
    json_t *v = json_object_get(obj, key);
    *present = v != NULL;
    if (!v)
        return KEY_OK;
    if (json_is_number(v)) {
        *square = true;
        return json_int(obj, key, side);
    }
    if (!json_is_object(v))
        return KEY_BAD_TYPE;
    if (json_object_get(v, "shortest_edge") && json_object_size(v) == 1) {
        *square = false;
        return json_int(v, "shortest_edge", side);
    }
    int h = -1, w = -1;
    int r = json_int(v, "height", &h);
    if (r == KEY_OK)
        r = json_int(v, "width", &w);
    if (r != KEY_OK || json_object_size(v) != 2 || h < 0 || w < 0)
        return r != KEY_OK ? r : KEY_BAD_TYPE;
    if (h != w)
        return KEY_BAD_RANGE; /* a non-square input is not a ViT input */
    *square = true;
    *side = h;
    return KEY_OK;
}

/* Overrides cfg->preprocess from an HF preprocessor_config.json
 * (ViTImageProcessor, CLIPImageProcessor and their FeatureExtractor
 * ancestors).  What torchvision-style preprocessing (image.h) cannot express
 * is refused, never approximated.  Not reproduced: HF's center crop rounds
 * an odd margin down where torchvision rounds it to even, a one-pixel shift
 * that only the shortest_edge + crop form can meet. */
vit_status vit_config_apply_preprocessor_json(json_t *root, vit_config *cfg, vit_error *err)
{
    if (!json_is_object(root))
        return vit_error_set(err, VIT_ERR_FORMAT, PP_FILE " is not a JSON object");
    img_preprocess p = cfg->preprocess;
    bool do_resize = true, do_crop = false, do_rescale = true, do_normalize = true;
    PP_READ(json_bool(root, "do_resize", &do_resize), "do_resize");
    PP_READ(json_bool(root, "do_center_crop", &do_crop), "do_center_crop");
    PP_READ(json_bool(root, "do_rescale", &do_rescale), "do_rescale");
    PP_READ(json_bool(root, "do_normalize", &do_normalize), "do_normalize");
    double rescale = 1.0 / 255.0;
    PP_READ(json_double(root, "rescale_factor", 0.0, 1.0, &rescale), "rescale_factor");
    if (!do_resize || !do_rescale || fabs(rescale * 255.0 - 1.0) > 1e-6)
        return vit_error_set(err, VIT_ERR_UNSUPPORTED,
                             PP_FILE ": only resized input rescaled by 1/255 is supported");

    int size = cfg->image_size, crop = cfg->image_size;
    bool square = true, crop_square = true, has_size, has_crop_size;
    PP_READ(json_hf_size(root, "size", &size, &square, &has_size), "size");
    PP_READ(json_hf_size(root, "crop_size", &crop, &crop_square, &has_crop_size), "crop_size");
    const char *type = json_string_value(json_object_get(root, "image_processor_type"));
    if (!type)
        type = json_string_value(json_object_get(root, "feature_extractor_type"));
    /* A bare integer size means a square resize to most processors, but the
     * shortest side to CLIP's when it crops afterwards. */
    if (has_size && json_is_number(json_object_get(root, "size")) && do_crop && type &&
        strstr(type, "CLIP"))
        square = false;
    if (do_crop && (!crop_square || crop != cfg->image_size))
        return vit_error_set(err, VIT_ERR_MISMATCH,
                             PP_FILE ": crop_size disagrees with image size %d", cfg->image_size);
    if (square && size == cfg->image_size) {
        p.resize_shorter = 0; /* both sides straight to the input size */
    } else if (!square && do_crop) {
        if (size < 1 || size > VIT_MAX_RESIZE)
            return key_error(err, PP_FILE, "size.shortest_edge", KEY_BAD_RANGE);
        p.resize_shorter = size;
    } else {
        return vit_error_set(err, VIT_ERR_UNSUPPORTED,
                             PP_FILE ": resizing to %d (%s) then %s is not supported for "
                             "image size %d",
                             size, square ? "both sides" : "shortest side",
                             do_crop ? "cropping" : "not cropping", cfg->image_size);
    }
    p.crop_h = p.crop_w = cfg->image_size;

    json_t *resample = json_object_get(root, "resample");
    if (resample) {
        /* PIL's codes: 2 = BILINEAR, 3 = BICUBIC */
        if (!json_is_integer(resample))
            return key_error(err, PP_FILE, "resample", KEY_BAD_TYPE);
        if (json_integer_value(resample) == 2)
            p.interp = IMG_BILINEAR;
        else if (json_integer_value(resample) == 3)
            p.interp = IMG_BICUBIC;
        else
            return vit_error_set(err, VIT_ERR_UNSUPPORTED,
                                 PP_FILE ": resample %lld is not supported (2 bilinear, "
                                 "3 bicubic)",
                                 (long long)json_integer_value(resample));
    }
    PP_READ(json_float3(root, "image_mean", p.mean), "image_mean");
    PP_READ(json_float3(root, "image_std", p.std), "image_std");
    if (!do_normalize) {
        for (int c = 0; c < 3; c++) {
            p.mean[c] = 0.0f;
            p.std[c] = 1.0f;
        }
    }
    cfg->preprocess = p;
    return VIT_OK;
}

double vit_config_macs(const vit_config *cfg)
{
    double N = vit_config_tokens(cfg), C = cfg->width, M = cfg->mlp_dim;
    double P = cfg->patch_size, F = vit_config_feature_dim(cfg);
    double patch = (N - 1) * C * 3 * P * P;
    double block = N * C * 3 * C   /* qkv */
                   + 2 * N * N * C /* q k^T and att v over all heads */
                   + N * C * C     /* attention projection */
                   + 2 * N * C * M /* fc1 + fc2 */;
    double tail = (cfg->proj_dim > 0 ? C * F : 0) + (double)cfg->num_classes * F;
    return patch + cfg->depth * block + tail;
}

double vit_config_forward_macs(const vit_config *cfg)
{
    double N = vit_config_tokens(cfg), C = cfg->width, M = cfg->mlp_dim;
    if (cfg->pool != VIT_POOL_CLS)
        return vit_config_macs(cfg);
    /* the other N-1 rows' attention, projection and MLP */
    return vit_config_macs(cfg) - (N - 1) * (2 * N * C + C * C + 2 * C * M);
}

bool vit_config_equal(const vit_config *a, const vit_config *b)
{
    const img_preprocess *p = &a->preprocess, *q = &b->preprocess;
    bool same = a->image_size == b->image_size && a->patch_size == b->patch_size &&
                a->width == b->width && a->depth == b->depth && a->heads == b->heads &&
                a->mlp_dim == b->mlp_dim && a->num_classes == b->num_classes &&
                a->proj_dim == b->proj_dim && a->ln_eps == b->ln_eps && a->act == b->act &&
                a->pool == b->pool && a->ln_pre == b->ln_pre && a->patch_bias == b->patch_bias &&
                p->resize_shorter == q->resize_shorter && p->crop_h == q->crop_h &&
                p->crop_w == q->crop_w && p->interp == q->interp;
    for (int c = 0; same && c < 3; c++)
        same = p->mean[c] == q->mean[c] && p->std[c] == q->std[c];
    return same;
}
