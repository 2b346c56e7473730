/*
 * cli_inspect.c - `vitfit inspect`: what is in a checkpoint or safetensors file.
 *
 * For a ViT checkpoint: its layout, architecture, parameter and bias-parameter
 * counts and preprocessing; for any safetensors file: metadata and the tensor
 * list.  --preset describes a built-in architecture without a file.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "safetensors.h"
#include "vit.h"

static void inspect_usage(FILE *out)
{
    fprintf(out, "usage: vitfit inspect [--json] MODEL_DIR|FILE.safetensors|hf:ORG/NAME[@REVISION]\n"
                 "       vitfit inspect [--json] --preset vit-b16|vit-l14-clip|vit-tiny\n"
                 "  --preset NAME  describe a preset's architecture (default: the checkpoint given)\n"
                 "  --json         print one JSON object (default: text)\n");
}

static json_t *config_json(const vit_config *c)
{
    const img_preprocess *p = &c->preprocess;
    return json_pack(
        "{si si si si si si si si si sf ss ss sb sb s{si si si ss s[fff] s[fff]}}",
        "image_size", c->image_size, "patch_size", c->patch_size, "width", c->width, "depth",
        c->depth, "heads", c->heads, "mlp_dim", c->mlp_dim, "tokens", vit_config_tokens(c),
        "num_classes", c->num_classes, "proj_dim", c->proj_dim, "layer_norm_eps",
        (double)c->ln_eps, "activation", c->act == VIT_ACT_GELU ? "gelu" : "quick_gelu",
        "pool", c->pool == VIT_POOL_CLS ? "cls" : "mean", "ln_pre", c->ln_pre, "patch_bias",
        c->patch_bias, "preprocess", "resize_shorter", p->resize_shorter, "crop_h", p->crop_h,
        "crop_w", p->crop_w, "interpolation", p->interp == IMG_BICUBIC ? "bicubic" : "bilinear",
        "mean", (double)p->mean[0], (double)p->mean[1], (double)p->mean[2], "std",
        (double)p->std[0], (double)p->std[1], (double)p->std[2]);
}

static json_t *model_json(const vit_model *m, const char *layout)
{
    json_t *o = json_object();
    json_object_set_new(o, "layout", json_string(layout));
    json_object_set_new(o, "config", config_json(&m->cfg));
    json_object_set_new(o, "parameters", json_integer((json_int_t)vit_model_param_count(m)));
    json_object_set_new(o, "bias_parameters", json_integer((json_int_t)vit_model_bias_count(m)));
    json_object_set_new(o, "gmacs_per_image", json_real(vit_config_macs(&m->cfg) / 1e9));
    json_object_set_new(o, "activation_bytes_per_image",
                        json_integer((json_int_t)vit_config_image_bytes(&m->cfg)));
    return o;
}

static json_t *file_json(const st_file *f)
{
    json_t *tensors = json_array(), *meta = json_object();
    for (size_t i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_tensor_at(f, i);
        json_t *shape = json_array();
        for (int d = 0; d < t->ndim; d++)
            json_array_append_new(shape, json_integer(t->shape[d]));
        json_array_append_new(tensors, json_pack("{ss ss so}", "name", t->name, "dtype",
                                                 st_dtype_name(t->dtype), "shape", shape));
    }
    const char *key, *value;
    for (size_t i = 0; st_metadata_at(f, i, &key, &value); i++)
        json_object_set_new(meta, key, json_string(value));
    return json_pack("{so so}", "metadata", meta, "tensors", tensors);
}

static void print_model(const json_t *o)
{
    const json_t *c = json_object_get(o, "config");
    const json_t *p = json_object_get(c, "preprocess");
#define I(obj, key) (long long)json_integer_value(json_object_get(obj, key))
#define S(obj, key) json_string_value(json_object_get(obj, key))
    printf("layout:           %s\n", S(o, "layout"));
    printf("architecture:     ViT image %lld, patch %lld, width %lld, depth %lld, heads %lld, "
           "mlp %lld, tokens %lld\n",
           I(c, "image_size"), I(c, "patch_size"), I(c, "width"), I(c, "depth"), I(c, "heads"),
           I(c, "mlp_dim"), I(c, "tokens"));
    printf("                  LayerNorm eps %g, %s, pool %s, ln_pre %s, patch bias %s\n",
           json_real_value(json_object_get(c, "layer_norm_eps")), S(c, "activation"),
           S(c, "pool"), json_is_true(json_object_get(c, "ln_pre")) ? "yes" : "no",
           json_is_true(json_object_get(c, "patch_bias")) ? "yes" : "no");
    if (I(c, "proj_dim"))
        printf("projection:       %lld\n", I(c, "proj_dim"));
    if (I(c, "num_classes"))
        printf("head:             %lld classes\n", I(c, "num_classes"));
    else
        printf("head:             none (feature extractor)\n");
    long long params = I(o, "parameters"), biases = I(o, "bias_parameters");
    printf("parameters:       %lld\n", params);
    printf("bias parameters:  %lld (%.3f%%)\n", biases, params ? 100.0 * biases / params : 0.0);
    printf("compute:          %.2f GMAC per image\n",
           json_real_value(json_object_get(o, "gmacs_per_image")));
    printf("activations:      %.1f MiB per image (forward state, attention matrix aside)\n",
           (double)I(o, "activation_bytes_per_image") / (1 << 20));
    printf("preprocess:       %s, resize %lld, crop %lldx%lld\n", S(p, "interpolation"),
           I(p, "resize_shorter"), I(p, "crop_w"), I(p, "crop_h"));
#undef I
#undef S
}

/* Prints s with control characters (C0 and DEL) as '?': metadata is the
 * file's text and must not move the cursor or recolour the terminal. */
static void print_text(const char *s)
{
    for (; *s; s++)
        putchar((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s);
}

static void print_file(const json_t *o)
{
    const char *key;
    json_t *value;
    json_t *meta = json_object_get(o, "metadata");
    if (json_object_size(meta)) {
        printf("metadata:\n");
        json_object_foreach(meta, key, value) {
            printf("  ");
            print_text(key);
            printf(" = ");
            print_text(json_string_value(value));
            printf("\n");
        }
    }
    json_t *tensors = json_object_get(o, "tensors");
    printf("tensors (%zu):\n", json_array_size(tensors));
    size_t i;
    json_array_foreach(tensors, i, value) {
        char *shape = json_dumps(json_object_get(value, "shape"), JSON_COMPACT);
        const char *name = json_string_value(json_object_get(value, "name"));
        printf("  ");
        print_text(name);
        printf("%*s %-5s %s\n", strlen(name) < 60 ? (int)(60 - strlen(name)) : 0, "",
               json_string_value(json_object_get(value, "dtype")), shape ? shape : "?");
        free(shape);
    }
}

int cli_inspect(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"json", no_argument, NULL, 'j'},
        {"preset", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int as_json = 0;
    const char *preset = NULL;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'j': as_json = 1; break;
        case 'p': preset = optarg; break;
        case 'h': inspect_usage(stdout); return CLI_OK;
        default: return cli_usage_error("inspect", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (!preset && optind != argc - 1)
        return cli_usage_error("inspect", "give exactly one MODEL_DIR or FILE, or --preset");

    vit_error err = {0};
    vit_model *m = NULL;
    st_file *f = NULL;
    json_t *out = NULL;
    if (preset) {
        vit_config cfg;
        if (vit_config_preset(preset, &cfg, &err) != VIT_OK ||
            vit_model_create(&cfg, &m, &err) != VIT_OK)
            return cli_fail(&err);
        out = model_json(m, "preset");
        json_object_set_new(out, "preset", json_string(preset));
    } else {
        char path[CFG_PATH_SIZE];
        int path_rc = cli_model_path(argv[optind], path, sizeof path);
        if (path_rc != CLI_OK)
            return path_rc;
        char weights[CFG_PATH_SIZE + 32];
        struct stat sb;
        int is_dir = stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
        snprintf(weights, sizeof weights, is_dir ? "%s/model.safetensors" : "%s", path);
        /* a checkpoint's caps (a task file's are smaller, but inspect reads
         * both): a header past them is refused before it is parsed */
        if (st_open_limited(weights, &ST_LIMITS_MODEL, &f, &err) != VIT_OK)
            return cli_fail(&err);
        vit_status st = vit_model_load(path, &m, &err);
        if (st != VIT_OK && st != VIT_ERR_UNSUPPORTED) {
            st_close(f);
            return cli_fail(&err);
        }
        /* not a ViT layout (a task file, say): still list what the file holds */
        out = m ? model_json(m, vit_layout_name(m->layout)) : json_object();
        json_object_set_new(out, "file", cli_json_text(weights)); /* not-UTF-8 paths too */
        json_t *listing = file_json(f);
        json_object_update(out, listing);
        json_decref(listing);
    }
    int rc = CLI_OK;
    if (as_json) {
        rc = cli_print_json(json_incref(out), 1);
    } else {
        if (json_object_get(out, "file"))
            printf("file:             %s\n", json_string_value(json_object_get(out, "file")));
        if (m)
            print_model(out);
        if (f)
            print_file(out);
    }
    json_decref(out);
    st_close(f);
    vit_model_free(m);
    return rc;
}
