/*
 * vit_save.c - writes a model as a timm-layout checkpoint directory.
 *
 * model.safetensors holds every canonical tensor (canonical names are timm's,
 * plus proj.weight for CLIP-style models; a mean-pooled model's final norm is
 * timm's fc_norm); config.json is timm's hub form with a few vitfit keys
 * (model_args.act_layer, norm_eps, mlp_dim, pretrained_cfg.vitfit_resize) so
 * that every setting round-trips through vit_model_load exactly.
 */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vit_impl.h"

/* config.json for m, or NULL with err set: a label that is not a JSON
 * string (not UTF-8) is an error, never dropped -- a checkpoint whose
 * label_names lost one no longer loads ("labels named but the head has K
 * classes"). */
static vit_status config_to_json(const vit_model *m, json_t **out, vit_error *err)
{
    *out = NULL;
    const vit_config *c = &m->cfg;
    const img_preprocess *p = &c->preprocess;
    double crop_pct = p->resize_shorter > 0 ? (double)c->image_size / p->resize_shorter : 1.0;
    json_t *j = json_pack(
        "{ss si si ss"
        " s{si si si si si sf si ss sf sb sb}"
        " s{s[iii] ss sf ss si s[fff] s[fff] si}}",
        "architecture", "vitfit_vit", "num_classes", c->num_classes, "num_features",
        vit_config_feature_dim(c), "global_pool", c->pool == VIT_POOL_MEAN ? "avg" : "token",
        "model_args", "img_size", c->image_size, "patch_size", c->patch_size, "embed_dim",
        c->width, "depth", c->depth, "num_heads", c->heads, "mlp_ratio",
        (double)c->mlp_dim / c->width, "mlp_dim", c->mlp_dim, "act_layer",
        c->act == VIT_ACT_GELU ? "gelu" : "quick_gelu", "norm_eps", (double)c->ln_eps,
        "pre_norm", c->ln_pre, "patch_bias", c->patch_bias,
        "pretrained_cfg", "input_size", 3, c->image_size, c->image_size, "interpolation",
        p->interp == IMG_BICUBIC ? "bicubic" : "bilinear", "crop_pct", crop_pct, "crop_mode",
        p->resize_shorter > 0 ? "center" : "squash", "vitfit_resize", p->resize_shorter, "mean",
        (double)p->mean[0], (double)p->mean[1], (double)p->mean[2], "std", (double)p->std[0],
        (double)p->std[1], (double)p->std[2], "num_classes", c->num_classes);
    if (!j)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    if (m->labels) {
        json_t *labels = json_array();
        int ok = labels && json_object_set_new(j, "label_names", labels) == 0;
        for (int k = 0; ok && k < c->num_classes; k++) {
            json_t *name = json_string(m->labels[k]);
            if (!name) {
                json_decref(j);
                return vit_error_set(err, VIT_ERR_INVALID,
                                     "label %d is not valid UTF-8: config.json cannot hold it",
                                     k);
            }
            ok = json_array_append_new(labels, name) == 0;
        }
        if (!ok) {
            json_decref(j);
            return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
        }
    }
    *out = j;
    return VIT_OK;
}

/* Writes text to path (a fresh file in a private directory). */
static vit_status write_text(const char *path, const char *text, vit_error *err)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return vit_error_set(err, VIT_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    size_t len = strlen(text);
    int ok = fwrite(text, 1, len, f) == len && fputc('\n', f) != EOF && fflush(f) == 0 &&
             fsync(fileno(f)) == 0;
    ok &= fclose(f) == 0;
    return ok ? VIT_OK : vit_error_set(err, VIT_ERR_IO, "cannot write %s", path);
}

static vit_status write_weights(const vit_model *m, const char *path, vit_error *err)
{
    st_writer *w = st_writer_create();
    if (!w)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    vit_status st = st_writer_set_metadata(w, "format", "pt", err);
    for (size_t i = 0; st == VIT_OK && i < m->num_params; i++) {
        const vit_param *p = &m->params[i];
        char name[80];
        if (m->cfg.pool == VIT_POOL_MEAN && strncmp(p->name, "norm.", 5) == 0)
            snprintf(name, sizeof name, "fc_%s", p->name);
        else
            snprintf(name, sizeof name, "%s", p->name);
        st = st_writer_add_f32(w, name, p->ndim, p->shape, p->data, err);
    }
    if (st == VIT_OK)
        st = st_writer_save(w, path, err);
    st_writer_free(w);
    return st;
}

vit_status vit_model_save(const vit_model *m, const char *dir, vit_error *err)
{
    if (m->unpacked_released)
        return vit_error_set(err, VIT_ERR_UNSUPPORTED,
                             "this model released its unpacked weights; save from a loaded copy");
    struct stat sb;
    if (stat(dir, &sb) == 0)
        return vit_error_set(err, VIT_ERR_INVALID, "%s already exists; not overwriting it", dir);
    char tmp[4096], weights[4200], config[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", dir) >= sizeof tmp)
        return vit_error_set(err, VIT_ERR_INVALID, "output path is too long");
    if (!mkdtemp(tmp))
        return vit_error_set(err, VIT_ERR_IO, "cannot create a directory next to %s: %s", dir,
                             strerror(errno));
    snprintf(weights, sizeof weights, "%s/model.safetensors", tmp);
    snprintf(config, sizeof config, "%s/config.json", tmp);
    json_t *cfg = NULL;
    vit_status st = config_to_json(m, &cfg, err);
    char *text = st == VIT_OK ? json_dumps(cfg, JSON_INDENT(2)) : NULL;
    if (st == VIT_OK && !text)
        st = vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    if (st == VIT_OK)
        st = write_weights(m, weights, err);
    if (st == VIT_OK)
        st = write_text(config, text, err);
    if (st == VIT_OK && rename(tmp, dir) != 0)
        st = vit_error_set(err, VIT_ERR_IO, "cannot rename %s to %s: %s", tmp, dir, strerror(errno));
    if (st != VIT_OK) {
        unlink(weights);
        unlink(config);
        rmdir(tmp);
    }
    free(text);
    json_decref(cfg);
    return st;
}
