/*
 * vit_names.c - checkpoint layouts as tables: canonical name <- source name.
 *
 * Adding a layout means adding a table here, never an if-chain in the loader.
 * A canonical name may have several rows: alternatives are tried in order
 * (torchvision's mlp.0 vs older linear_1), and VIT_NAME_PART rows assemble one
 * canonical tensor from slices (HF's separate query, key and value).
 */
#include <string.h>

#include "vit_impl.h"

#define COPY(c, s) {c, s, VIT_NAME_COPY, 0, 1}
#define PART(c, s, i, n) {c, s, VIT_NAME_PART, i, n}
#define TRANSPOSE(c, s) {c, s, VIT_NAME_TRANSPOSE, 0, 1}

/* ref: timm vision_transformer.py VisionTransformer (names are canonical) */
static const vit_name_row timm_rows[] = {
    COPY("patch_embed.proj.weight", "patch_embed.proj.weight"),
    COPY("patch_embed.proj.bias", "patch_embed.proj.bias"),
    COPY("cls_token", "cls_token"),
    COPY("pos_embed", "pos_embed"),
    COPY("norm_pre.weight", "norm_pre.weight"),
    COPY("norm_pre.bias", "norm_pre.bias"),
    COPY("blocks.{i}.norm1.weight", "blocks.{i}.norm1.weight"),
    COPY("blocks.{i}.norm1.bias", "blocks.{i}.norm1.bias"),
    COPY("blocks.{i}.attn.qkv.weight", "blocks.{i}.attn.qkv.weight"),
    COPY("blocks.{i}.attn.qkv.bias", "blocks.{i}.attn.qkv.bias"),
    COPY("blocks.{i}.attn.proj.weight", "blocks.{i}.attn.proj.weight"),
    COPY("blocks.{i}.attn.proj.bias", "blocks.{i}.attn.proj.bias"),
    COPY("blocks.{i}.norm2.weight", "blocks.{i}.norm2.weight"),
    COPY("blocks.{i}.norm2.bias", "blocks.{i}.norm2.bias"),
    COPY("blocks.{i}.mlp.fc1.weight", "blocks.{i}.mlp.fc1.weight"),
    COPY("blocks.{i}.mlp.fc1.bias", "blocks.{i}.mlp.fc1.bias"),
    COPY("blocks.{i}.mlp.fc2.weight", "blocks.{i}.mlp.fc2.weight"),
    COPY("blocks.{i}.mlp.fc2.bias", "blocks.{i}.mlp.fc2.bias"),
    COPY("norm.weight", "norm.weight"),
    COPY("norm.weight", "fc_norm.weight"), /* global_pool='avg' */
    COPY("norm.bias", "norm.bias"),
    COPY("norm.bias", "fc_norm.bias"),
    COPY("proj.weight", "proj.weight"), /* vitfit's own CLIP-style saves */
    COPY("head.weight", "head.weight"),
    COPY("head.bias", "head.bias"),
};

/* ref: HF transformers modeling_vit.py ViTForImageClassification */
static const vit_name_row hf_rows[] = {
    COPY("patch_embed.proj.weight", "vit.embeddings.patch_embeddings.projection.weight"),
    COPY("patch_embed.proj.bias", "vit.embeddings.patch_embeddings.projection.bias"),
    COPY("cls_token", "vit.embeddings.cls_token"),
    COPY("pos_embed", "vit.embeddings.position_embeddings"),
    COPY("blocks.{i}.norm1.weight", "vit.encoder.layer.{i}.layernorm_before.weight"),
    COPY("blocks.{i}.norm1.bias", "vit.encoder.layer.{i}.layernorm_before.bias"),
    PART("blocks.{i}.attn.qkv.weight", "vit.encoder.layer.{i}.attention.attention.query.weight", 0, 3),
    PART("blocks.{i}.attn.qkv.weight", "vit.encoder.layer.{i}.attention.attention.key.weight", 1, 3),
    PART("blocks.{i}.attn.qkv.weight", "vit.encoder.layer.{i}.attention.attention.value.weight", 2, 3),
    PART("blocks.{i}.attn.qkv.bias", "vit.encoder.layer.{i}.attention.attention.query.bias", 0, 3),
    PART("blocks.{i}.attn.qkv.bias", "vit.encoder.layer.{i}.attention.attention.key.bias", 1, 3),
    PART("blocks.{i}.attn.qkv.bias", "vit.encoder.layer.{i}.attention.attention.value.bias", 2, 3),
    COPY("blocks.{i}.attn.proj.weight", "vit.encoder.layer.{i}.attention.output.dense.weight"),
    COPY("blocks.{i}.attn.proj.bias", "vit.encoder.layer.{i}.attention.output.dense.bias"),
    COPY("blocks.{i}.norm2.weight", "vit.encoder.layer.{i}.layernorm_after.weight"),
    COPY("blocks.{i}.norm2.bias", "vit.encoder.layer.{i}.layernorm_after.bias"),
    COPY("blocks.{i}.mlp.fc1.weight", "vit.encoder.layer.{i}.intermediate.dense.weight"),
    COPY("blocks.{i}.mlp.fc1.bias", "vit.encoder.layer.{i}.intermediate.dense.bias"),
    COPY("blocks.{i}.mlp.fc2.weight", "vit.encoder.layer.{i}.output.dense.weight"),
    COPY("blocks.{i}.mlp.fc2.bias", "vit.encoder.layer.{i}.output.dense.bias"),
    COPY("norm.weight", "vit.layernorm.weight"),
    COPY("norm.bias", "vit.layernorm.bias"),
    COPY("head.weight", "classifier.weight"),
    COPY("head.bias", "classifier.bias"),
};

/* ref: torchvision models/vision_transformer.py VisionTransformer (0.14) */
static const vit_name_row torchvision_rows[] = {
    COPY("patch_embed.proj.weight", "conv_proj.weight"),
    COPY("patch_embed.proj.bias", "conv_proj.bias"),
    COPY("cls_token", "class_token"),
    COPY("pos_embed", "encoder.pos_embedding"),
    COPY("blocks.{i}.norm1.weight", "encoder.layers.encoder_layer_{i}.ln_1.weight"),
    COPY("blocks.{i}.norm1.bias", "encoder.layers.encoder_layer_{i}.ln_1.bias"),
    COPY("blocks.{i}.attn.qkv.weight", "encoder.layers.encoder_layer_{i}.self_attention.in_proj_weight"),
    COPY("blocks.{i}.attn.qkv.bias", "encoder.layers.encoder_layer_{i}.self_attention.in_proj_bias"),
    COPY("blocks.{i}.attn.proj.weight", "encoder.layers.encoder_layer_{i}.self_attention.out_proj.weight"),
    COPY("blocks.{i}.attn.proj.bias", "encoder.layers.encoder_layer_{i}.self_attention.out_proj.bias"),
    COPY("blocks.{i}.norm2.weight", "encoder.layers.encoder_layer_{i}.ln_2.weight"),
    COPY("blocks.{i}.norm2.bias", "encoder.layers.encoder_layer_{i}.ln_2.bias"),
    COPY("blocks.{i}.mlp.fc1.weight", "encoder.layers.encoder_layer_{i}.mlp.0.weight"),
    COPY("blocks.{i}.mlp.fc1.weight", "encoder.layers.encoder_layer_{i}.mlp.linear_1.weight"),
    COPY("blocks.{i}.mlp.fc1.bias", "encoder.layers.encoder_layer_{i}.mlp.0.bias"),
    COPY("blocks.{i}.mlp.fc1.bias", "encoder.layers.encoder_layer_{i}.mlp.linear_1.bias"),
    COPY("blocks.{i}.mlp.fc2.weight", "encoder.layers.encoder_layer_{i}.mlp.3.weight"),
    COPY("blocks.{i}.mlp.fc2.weight", "encoder.layers.encoder_layer_{i}.mlp.linear_2.weight"),
    COPY("blocks.{i}.mlp.fc2.bias", "encoder.layers.encoder_layer_{i}.mlp.3.bias"),
    COPY("blocks.{i}.mlp.fc2.bias", "encoder.layers.encoder_layer_{i}.mlp.linear_2.bias"),
    COPY("norm.weight", "encoder.ln.weight"),
    COPY("norm.bias", "encoder.ln.bias"),
    COPY("head.weight", "heads.head.weight"),
    COPY("head.bias", "heads.head.bias"),
};

/* ref: OpenAI CLIP model.py VisionTransformer */
static const vit_name_row clip_rows[] = {
    COPY("patch_embed.proj.weight", "visual.conv1.weight"),
    COPY("cls_token", "visual.class_embedding"),
    COPY("pos_embed", "visual.positional_embedding"),
    COPY("norm_pre.weight", "visual.ln_pre.weight"),
    COPY("norm_pre.bias", "visual.ln_pre.bias"),
    COPY("blocks.{i}.norm1.weight", "visual.transformer.resblocks.{i}.ln_1.weight"),
    COPY("blocks.{i}.norm1.bias", "visual.transformer.resblocks.{i}.ln_1.bias"),
    COPY("blocks.{i}.attn.qkv.weight", "visual.transformer.resblocks.{i}.attn.in_proj_weight"),
    COPY("blocks.{i}.attn.qkv.bias", "visual.transformer.resblocks.{i}.attn.in_proj_bias"),
    COPY("blocks.{i}.attn.proj.weight", "visual.transformer.resblocks.{i}.attn.out_proj.weight"),
    COPY("blocks.{i}.attn.proj.bias", "visual.transformer.resblocks.{i}.attn.out_proj.bias"),
    COPY("blocks.{i}.norm2.weight", "visual.transformer.resblocks.{i}.ln_2.weight"),
    COPY("blocks.{i}.norm2.bias", "visual.transformer.resblocks.{i}.ln_2.bias"),
    COPY("blocks.{i}.mlp.fc1.weight", "visual.transformer.resblocks.{i}.mlp.c_fc.weight"),
    COPY("blocks.{i}.mlp.fc1.bias", "visual.transformer.resblocks.{i}.mlp.c_fc.bias"),
    COPY("blocks.{i}.mlp.fc2.weight", "visual.transformer.resblocks.{i}.mlp.c_proj.weight"),
    COPY("blocks.{i}.mlp.fc2.bias", "visual.transformer.resblocks.{i}.mlp.c_proj.bias"),
    COPY("norm.weight", "visual.ln_post.weight"),
    COPY("norm.bias", "visual.ln_post.bias"),
    TRANSPOSE("proj.weight", "visual.proj"), /* stored (C, D): x @ proj */
    /* a classification head is not part of CLIP; a fine-tuned one uses timm's names */
    COPY("head.weight", "head.weight"),
    COPY("head.bias", "head.bias"),
};

/* ref: HF transformers modeling_clip.py CLIPModel (vision_model.*, visual_projection) and
 * convert_clip_original_pytorch_to_hf.py: one file holds both towers, text_model.* is
 * never read; visual_projection is OpenAI's visual.proj transposed, i.e. (D, C) already. */
static const vit_name_row hf_clip_rows[] = {
    COPY("patch_embed.proj.weight", "vision_model.embeddings.patch_embedding.weight"),
    COPY("cls_token", "vision_model.embeddings.class_embedding"),
    COPY("pos_embed", "vision_model.embeddings.position_embedding.weight"),
    COPY("norm_pre.weight", "vision_model.pre_layrnorm.weight"), /* sic: upstream's spelling */
    COPY("norm_pre.bias", "vision_model.pre_layrnorm.bias"),
    COPY("blocks.{i}.norm1.weight", "vision_model.encoder.layers.{i}.layer_norm1.weight"),
    COPY("blocks.{i}.norm1.bias", "vision_model.encoder.layers.{i}.layer_norm1.bias"),
    PART("blocks.{i}.attn.qkv.weight", "vision_model.encoder.layers.{i}.self_attn.q_proj.weight", 0, 3),
    PART("blocks.{i}.attn.qkv.weight", "vision_model.encoder.layers.{i}.self_attn.k_proj.weight", 1, 3),
    PART("blocks.{i}.attn.qkv.weight", "vision_model.encoder.layers.{i}.self_attn.v_proj.weight", 2, 3),
    PART("blocks.{i}.attn.qkv.bias", "vision_model.encoder.layers.{i}.self_attn.q_proj.bias", 0, 3),
    PART("blocks.{i}.attn.qkv.bias", "vision_model.encoder.layers.{i}.self_attn.k_proj.bias", 1, 3),
    PART("blocks.{i}.attn.qkv.bias", "vision_model.encoder.layers.{i}.self_attn.v_proj.bias", 2, 3),
    COPY("blocks.{i}.attn.proj.weight", "vision_model.encoder.layers.{i}.self_attn.out_proj.weight"),
    COPY("blocks.{i}.attn.proj.bias", "vision_model.encoder.layers.{i}.self_attn.out_proj.bias"),
    COPY("blocks.{i}.norm2.weight", "vision_model.encoder.layers.{i}.layer_norm2.weight"),
    COPY("blocks.{i}.norm2.bias", "vision_model.encoder.layers.{i}.layer_norm2.bias"),
    COPY("blocks.{i}.mlp.fc1.weight", "vision_model.encoder.layers.{i}.mlp.fc1.weight"),
    COPY("blocks.{i}.mlp.fc1.bias", "vision_model.encoder.layers.{i}.mlp.fc1.bias"),
    COPY("blocks.{i}.mlp.fc2.weight", "vision_model.encoder.layers.{i}.mlp.fc2.weight"),
    COPY("blocks.{i}.mlp.fc2.bias", "vision_model.encoder.layers.{i}.mlp.fc2.bias"),
    COPY("norm.weight", "vision_model.post_layernorm.weight"),
    COPY("norm.bias", "vision_model.post_layernorm.bias"),
    COPY("proj.weight", "visual_projection.weight"), /* CLIPVisionModel saves have none */
};

#define ROWS(t) t, sizeof t / sizeof t[0]

static const vit_layout_desc layouts[VIT_LAYOUT_COUNT] = {
    {VIT_LAYOUT_TIMM, "timm", "patch_embed.proj.weight", NULL, ROWS(timm_rows), 1e-6f,
     VIT_ACT_GELU},
    {VIT_LAYOUT_HF, "hf", "vit.embeddings.patch_embeddings.projection.weight", "vit.",
     ROWS(hf_rows), 1e-12f, VIT_ACT_GELU},
    {VIT_LAYOUT_TORCHVISION, "torchvision", "conv_proj.weight", NULL, ROWS(torchvision_rows),
     1e-6f, VIT_ACT_GELU},
    {VIT_LAYOUT_CLIP, "clip", "visual.conv1.weight", "visual.", ROWS(clip_rows), 1e-5f,
     VIT_ACT_QUICK_GELU},
    {VIT_LAYOUT_HF_CLIP, "hf-clip", "vision_model.embeddings.patch_embedding.weight", NULL,
     ROWS(hf_clip_rows), 1e-5f, VIT_ACT_QUICK_GELU},
};

const vit_layout_desc *vit_layout_get(vit_layout layout)
{
    VIT_ASSERT(layout >= 0 && layout < VIT_LAYOUT_COUNT);
    return &layouts[layout];
}

const char *vit_layout_name(vit_layout layout)
{
    return layout >= 0 && layout < VIT_LAYOUT_COUNT ? layouts[layout].name : "unknown";
}

void vit_name_expand(char *buf, size_t len, const char *pattern, int block)
{
    const char *mark = strstr(pattern, "{i}");
    if (!mark) {
        snprintf(buf, len, "%s", pattern);
        return;
    }
    snprintf(buf, len, "%.*s%d%s", (int)(mark - pattern), pattern, block, mark + 3);
}

const st_tensor *vit_layout_source(const vit_layout_desc *d, const st_file *f, const char *name)
{
    const st_tensor *t = st_find(f, name);
    size_t plen = d->optional_prefix ? strlen(d->optional_prefix) : 0;
    if (!t && plen && strncmp(name, d->optional_prefix, plen) == 0)
        t = st_find(f, name + plen);
    return t;
}

const st_tensor *vit_layout_find(const vit_layout_desc *d, const st_file *f,
                                 const char *pattern, int block)
{
    for (size_t r = 0; r < d->num_rows; r++) {
        const vit_name_row *row = &d->rows[r];
        if (strcmp(row->canonical, pattern) != 0 || row->part != 0)
            continue;
        char name[256];
        vit_name_expand(name, sizeof name, row->source, block);
        const st_tensor *t = vit_layout_source(d, f, name);
        if (t)
            return t;
    }
    return NULL;
}

vit_status vit_layout_detect(const st_file *f, const vit_layout_desc **out, vit_error *err)
{
    for (int l = 0; l < VIT_LAYOUT_COUNT; l++) {
        if (vit_layout_source(&layouts[l], f, layouts[l].probe)) {
            *out = &layouts[l];
            return VIT_OK;
        }
    }
    return vit_error_set(err, VIT_ERR_UNSUPPORTED,
                         "not a ViT checkpoint in a known layout (timm, HF transformers ViT or "
                         "CLIP, torchvision or OpenAI CLIP): no patch embedding tensor found");
}
