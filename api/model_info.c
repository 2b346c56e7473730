/*
 * model_info.c - GET /v1/model (model_info.h).
 */
#include "model_info.h"

static json_t *floats3(const float v[3])
{
    return json_pack("[f,f,f]", (double)v[0], (double)v[1], (double)v[2]);
}

static json_t *labels_json(const vit_model *m)
{
    json_t *a = json_array();
    for (int i = 0; a && m->labels && i < m->cfg.num_classes; i++)
        if (json_array_append_new(a, api_json_text(m->labels[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

json_t *api_model_json(const vit_model *m, const char *fingerprint)
{
    const vit_config *c = &m->cfg;
    const img_preprocess *p = &c->preprocess;
    json_t *pre = json_pack("{s:i,s:[i,i],s:s,s:o*,s:o*}", "resize_shorter", p->resize_shorter,
                            "crop", p->crop_h, p->crop_w, "interpolation",
                            p->interp == IMG_BICUBIC ? "bicubic" : "bilinear", "mean",
                            floats3(p->mean), "std", floats3(p->std));
    return json_pack("{s:s,s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:s,s:s,s:b,s:f,s:I,s:I,s:I,"
                     "s:o*,s:s,s:b,s:s,s:o*}",
                     "architecture", "vit", "layout", vit_layout_name(m->layout), "image_size",
                     c->image_size, "patch_size", c->patch_size, "width", c->width, "depth",
                     c->depth, "heads", c->heads, "mlp_dim", c->mlp_dim, "num_classes",
                     c->num_classes, "proj_dim", c->proj_dim, "activation",
                     c->act == VIT_ACT_GELU ? "gelu" : "quick_gelu", "pool",
                     c->pool == VIT_POOL_CLS ? "cls" : "mean", "ln_pre", c->ln_pre, "ln_eps",
                     (double)c->ln_eps, "parameters", (json_int_t)vit_model_param_count(m),
                     "bias_parameters", (json_int_t)vit_model_bias_count(m),
                     "trainable_parameters", (json_int_t)m->trainable_len, "preprocessing", pre,
                     "fingerprint", fingerprint, "packed", m->packed != NULL, "precision",
                     vit_precision_name(m->precision), "labels",
                     labels_json(m));
}

int api_model_reply(const vit_model *m, const char *fingerprint, api_reply *r)
{
    return api_json(r, 200, api_model_json(m, fingerprint));
}
