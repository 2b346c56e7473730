/*
 * test_api_hub.c - the checkpoints users will try, as the model hub holds
 * them, through `--model hf:ORG/NAME`: written by this test with seeded
 * weights at their real shapes and served from loopback in the hub's
 * layout (weights behind a 302 to a "CDN", with X-Linked-Size and the
 * sha256 in X-Linked-Etag, as the hub answers LFS files):
 *
 *   google/vit-base-patch16-224        HF ViTForImageClassification (vit.*, q/k/v apart,
 *                                      classifier), id2label, preprocessor_config.json
 *   google/vit-base-patch16-224-in21k  HF ViTModel (no prefix, a pooler, no head)
 *   timm/vit_base_patch16_224.augreg2_in21k_ft_in1k
 *                                      timm names, the timm hub config (architecture,
 *                                      pretrained_cfg, label_names + label_descriptions)
 *   openai/clip-vit-large-patch14      HF CLIPModel: vision_model.* + visual_projection
 *                                      beside a text tower that must be ignored,
 *                                      vision_config; 2 of its 24 blocks (the rest of the
 *                                      shapes real) to keep the test short
 *
 * The names, configs and preprocessing below are written from the upstream
 * sources (transformers modeling_vit.py / modeling_clip.py and
 * convert_clip_original_pytorch_to_hf.py, timm _hub.py save_config_for_hf),
 * not from vitfit's tables, so a wrong table row fails here.  For each
 * checkpoint: `vitfit classify --model hf:...` downloads it (headless ones
 * with a task made for the same weights), the snapshot it left is loaded
 * here and must equal the model the test wrote tensor for tensor, with the
 * expected config, preprocessing and labels, and the CLI's top-5 must be
 * this process's forward pass of that snapshot.  The timm checkpoint is
 * downloaded by `vitfit serve --model hf:...` instead, which must answer
 * /v1/model and classify; then README.md's hub commands run on it, from the
 * cache.  Two meson tests run this file: api_hub (argument "hf": the two HF
 * ViT checkpoints) and api_hub_serve ("serve": timm's and CLIP's).
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "image.h"
#include "loopback_http.h"
#include "safetensors.h"
#include "serve_harness.h"
#include "sha256.h"
#include "task.h"
#include "test_util.h"
#include "vit.h"

#define IMAGE "tests/data/images/chelsea.png"
#define TOP_K 5

static char tmpdir[] = "/tmp/vitfit-test-api-hub-XXXXXX";
static char cache[512], image_path[4096];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- the hub: one repository at a time ------------------------------------- */

/* The repository being served (under mu): its path prefix and files. */
static struct {
    pthread_mutex_t mu;
    char prefix[256];            /* "/ORG/NAME/resolve/main/" */
    const char *config, *preprocessor; /* JSON texts (preprocessor may be NULL) */
    uint8_t *weights;
    size_t weights_len;
    char sha[SHA256_HEX_LEN + 1];
    int hub_requests, cdn_requests;
} repo = {.mu = PTHREAD_MUTEX_INITIALIZER};

static loopback_http *hub, *cdn;
static char hub_url[64], cdn_url[64];

static void on_hub(loopback_http_conn *c, const loopback_http_request *req, void *ctx)
{
    (void)ctx;
    pthread_mutex_lock(&repo.mu);
    repo.hub_requests++;
    size_t n = strlen(repo.prefix);
    const char *file = strncmp(req->target, repo.prefix, n) == 0 ? req->target + n : "";
    const char *text = strcmp(file, "config.json") == 0                ? repo.config
                       : strcmp(file, "preprocessor_config.json") == 0 ? repo.preprocessor
                                                                       : NULL;
    char extra[512] = "";
    if (strcmp(file, "model.safetensors") == 0)
        snprintf(extra, sizeof extra,
                 "Location: %s/repos/%s?X-Amz-Signature=abc\r\nX-Linked-Size: %zu\r\n"
                 "X-Linked-Etag: \"%s\"\r\n",
                 cdn_url, repo.sha, repo.weights_len, repo.sha);
    pthread_mutex_unlock(&repo.mu);
    if (text)
        loopback_http_respond(c, 200, "application/json", NULL, text, strlen(text));
    else if (extra[0])
        loopback_http_respond(c, 302, "text/plain", extra, "", 0);
    else
        loopback_http_respond(c, 404, "application/json", NULL, "{}", 2);
}

static void on_cdn(loopback_http_conn *c, const loopback_http_request *req, void *ctx)
{
    (void)ctx;
    pthread_mutex_lock(&repo.mu);
    repo.cdn_requests++;
    bool ok = strncmp(req->target, "/repos/", 7) == 0 &&
              strncmp(req->target + 7, repo.sha, SHA256_HEX_LEN) == 0;
    pthread_mutex_unlock(&repo.mu);
    if (ok) /* the bytes are not changed while a request may read them */
        loopback_http_respond(c, 200, NULL, NULL, repo.weights, repo.weights_len);
    else
        loopback_http_respond(c, 404, NULL, NULL, "", 0);
}

/* Serves org/name with these files (weights taken over: freed at the next). */
static void publish(const char *org, const char *name, const char *config,
                    const char *preprocessor, uint8_t *weights, size_t len)
{
    pthread_mutex_lock(&repo.mu);
    free(repo.weights);
    snprintf(repo.prefix, sizeof repo.prefix, "/%s/%s/resolve/main/", org, name);
    repo.config = config;
    repo.preprocessor = preprocessor;
    repo.weights = weights;
    repo.weights_len = len;
    if (weights)
        sha256_hex_of(weights, len, repo.sha);
    pthread_mutex_unlock(&repo.mu);
}

static int count(int *field)
{
    pthread_mutex_lock(&repo.mu);
    int v = *field;
    pthread_mutex_unlock(&repo.mu);
    return v;
}

/* ---- models and their files ---------------------------------------------------- */

/* A seeded model of cfg (every tensor from randinit, seed). */
static vit_model *seeded(const vit_config *cfg, uint64_t seed)
{
    vit_model *m = NULL;
    vit_error err = {0};
    CHECKF(vit_model_create(cfg, &m, &err) == VIT_OK, "%s", err.message);
    if (m)
        vit_model_randomize(m, seed);
    return m;
}

/* One tensor into w; the shape as given (the layout's own, e.g. (C) for a
 * token the canonical arena keeps as (1, 1, C)). */
static void add(st_writer *w, const char *name, const float *data, int ndim, int64_t d0,
                int64_t d1, int64_t d2, int64_t d3)
{
    int64_t shape[4] = {d0, d1, d2, d3};
    vit_error err = {0};
    CHECKF(st_writer_add_f32(w, name, ndim, shape, data, &err) == VIT_OK, "%s: %s", name,
           err.message);
}

/* A canonical parameter by name. */
static const vit_param *param(vit_model *m, const char *name)
{
    const vit_param *p = vit_model_find(m, name);
    CHECKF(p != NULL, "no parameter %s", name);
    return p;
}

/* The weights of m in one of the layouts below, serialized. */
typedef enum layout { HF_VIT, HF_VIT_BARE, TIMM, HF_CLIP } layout;

/* ref: transformers modeling_vit.py (ViTEmbeddings, ViTLayer: attention.attention.{query,key,
 * value}, attention.output.dense, intermediate.dense, output.dense, layernorm_before/after;
 * ViTModel.layernorm, .pooler; ViTForImageClassification.vit / .classifier) and
 * modeling_clip.py (CLIPVisionEmbeddings, pre_layrnorm, CLIPEncoderLayer: self_attn.{q,k,v,out}_proj,
 * layer_norm1/2, mlp.fc1/fc2; post_layernorm; CLIPModel.visual_projection, bias-free). */
static uint8_t *serialize(vit_model *m, layout l, size_t *len)
{
    const vit_config *c = &m->cfg;
    int64_t C = c->width, M = c->mlp_dim, P = c->patch_size, N = vit_config_tokens(c);
    st_writer *w = st_writer_create();
    char name[256];
    const char *pre = l == HF_VIT ? "vit." : "";
    if (l == TIMM) { /* timm's names are the canonical ones */
        for (size_t i = 0; i < m->num_params; i++) {
            const vit_param *p = &m->params[i];
            add(w, p->name, p->data, p->ndim, p->shape[0], p->shape[1], p->shape[2], p->shape[3]);
        }
    } else if (l == HF_VIT || l == HF_VIT_BARE) {
#define HF(suffix, canon, ...)                                                \
    do {                                                                      \
        snprintf(name, sizeof name, "%s" suffix, pre);                        \
        add(w, name, param(m, canon)->data, __VA_ARGS__);                     \
    } while (0)
        HF("embeddings.cls_token", "cls_token", 3, 1, 1, C, 0);
        HF("embeddings.position_embeddings", "pos_embed", 3, 1, N, C, 0);
        HF("embeddings.patch_embeddings.projection.weight", "patch_embed.proj.weight", 4, C, 3,
           P, P);
        HF("embeddings.patch_embeddings.projection.bias", "patch_embed.proj.bias", 1, C, 0, 0, 0);
        for (int b = 0; b < c->depth; b++) {
            static const char *const hf_names[][2] = {
                {"layernorm_before", "norm1"}, {"attention.output.dense", "attn.proj"},
                {"layernorm_after", "norm2"},  {"intermediate.dense", "mlp.fc1"},
                {"output.dense", "mlp.fc2"},
            };
            static const char *const qkv[] = {"query", "key", "value"};
            char canon[96];
            for (int t = 0; t < 3; t++) {
                snprintf(canon, sizeof canon, "blocks.%d.attn.qkv.weight", b);
                snprintf(name, sizeof name, "%sencoder.layer.%d.attention.attention.%s.weight",
                         pre, b, qkv[t]);
                add(w, name, param(m, canon)->data + t * C * C, 2, C, C, 0, 0);
                snprintf(canon, sizeof canon, "blocks.%d.attn.qkv.bias", b);
                snprintf(name, sizeof name, "%sencoder.layer.%d.attention.attention.%s.bias", pre,
                         b, qkv[t]);
                add(w, name, param(m, canon)->data + t * C, 1, C, 0, 0, 0);
            }
            for (size_t k = 0; k < sizeof hf_names / sizeof hf_names[0]; k++)
                for (int wb = 0; wb < 2; wb++) {
                    snprintf(canon, sizeof canon, "blocks.%d.%s.%s", b, hf_names[k][1],
                             wb ? "bias" : "weight");
                    snprintf(name, sizeof name, "%sencoder.layer.%d.%s.%s", pre, b,
                             hf_names[k][0], wb ? "bias" : "weight");
                    const vit_param *p = param(m, canon);
                    add(w, name, p->data, p->ndim, p->shape[0], p->shape[1], 0, 0);
                }
        }
        HF("layernorm.weight", "norm.weight", 1, C, 0, 0, 0);
        HF("layernorm.bias", "norm.bias", 1, C, 0, 0, 0);
        if (c->num_classes > 0) {
            add(w, "classifier.weight", param(m, "head.weight")->data, 2, c->num_classes, C, 0, 0);
            add(w, "classifier.bias", param(m, "head.bias")->data, 1, c->num_classes, 0, 0, 0);
        }
        if (l == HF_VIT_BARE) { /* ViTModel's pooler: not part of a ViT's forward here */
            float *pool = calloc((size_t)(C * C), sizeof *pool);
            add(w, "pooler.dense.weight", pool, 2, C, C, 0, 0);
            add(w, "pooler.dense.bias", pool, 1, C, 0, 0, 0);
            free(pool);
        }
#undef HF
    } else { /* HF_CLIP */
        add(w, "vision_model.embeddings.class_embedding", param(m, "cls_token")->data, 1, C, 0,
            0, 0);
        add(w, "vision_model.embeddings.position_embedding.weight", param(m, "pos_embed")->data,
            2, N, C, 0, 0);
        add(w, "vision_model.embeddings.patch_embedding.weight",
            param(m, "patch_embed.proj.weight")->data, 4, C, 3, P, P);
        add(w, "vision_model.pre_layrnorm.weight", param(m, "norm_pre.weight")->data, 1, C, 0, 0, 0);
        add(w, "vision_model.pre_layrnorm.bias", param(m, "norm_pre.bias")->data, 1, C, 0, 0, 0);
        for (int b = 0; b < c->depth; b++) {
            static const char *const clip_names[][2] = {
                {"layer_norm1", "norm1"}, {"self_attn.out_proj", "attn.proj"},
                {"layer_norm2", "norm2"}, {"mlp.fc1", "mlp.fc1"}, {"mlp.fc2", "mlp.fc2"},
            };
            static const char *const qkv[] = {"q_proj", "k_proj", "v_proj"};
            char canon[96];
            for (int t = 0; t < 3; t++) {
                snprintf(canon, sizeof canon, "blocks.%d.attn.qkv.weight", b);
                snprintf(name, sizeof name, "vision_model.encoder.layers.%d.self_attn.%s.weight",
                         b, qkv[t]);
                add(w, name, param(m, canon)->data + t * C * C, 2, C, C, 0, 0);
                snprintf(canon, sizeof canon, "blocks.%d.attn.qkv.bias", b);
                snprintf(name, sizeof name, "vision_model.encoder.layers.%d.self_attn.%s.bias", b,
                         qkv[t]);
                add(w, name, param(m, canon)->data + t * C, 1, C, 0, 0, 0);
            }
            for (size_t k = 0; k < sizeof clip_names / sizeof clip_names[0]; k++)
                for (int wb = 0; wb < 2; wb++) {
                    snprintf(canon, sizeof canon, "blocks.%d.%s.%s", b, clip_names[k][1],
                             wb ? "bias" : "weight");
                    snprintf(name, sizeof name, "vision_model.encoder.layers.%d.%s.%s", b,
                             clip_names[k][0], wb ? "bias" : "weight");
                    const vit_param *p = param(m, canon);
                    add(w, name, p->data, p->ndim, p->shape[0], p->shape[1], 0, 0);
                }
        }
        add(w, "vision_model.post_layernorm.weight", param(m, "norm.weight")->data, 1, C, 0, 0, 0);
        add(w, "vision_model.post_layernorm.bias", param(m, "norm.bias")->data, 1, C, 0, 0, 0);
        add(w, "visual_projection.weight", param(m, "proj.weight")->data, 2, c->proj_dim, C, 0, 0);
        /* the text tower and the logit scale: present, never read (small stand-ins with
         * the real names; the tower is 12 blocks of width 768 in the real file) */
        float *text = calloc(768 * 768, sizeof *text);
        add(w, "text_model.embeddings.token_embedding.weight", text, 2, 64, 768, 0, 0);
        add(w, "text_model.embeddings.position_embedding.weight", text, 2, 77, 768, 0, 0);
        add(w, "text_model.encoder.layers.0.self_attn.q_proj.weight", text, 2, 768, 768, 0, 0);
        add(w, "text_model.encoder.layers.0.self_attn.q_proj.bias", text, 1, 768, 0, 0, 0);
        add(w, "text_model.final_layer_norm.weight", text, 1, 768, 0, 0, 0);
        add(w, "text_model.final_layer_norm.bias", text, 1, 768, 0, 0, 0);
        add(w, "text_projection.weight", text, 2, 768, 768, 0, 0);
        add(w, "logit_scale", text, 0, 0, 0, 0, 0);
        free(text);
    }
    (void)M;
    void *out = NULL;
    vit_error err = {0};
    CHECKF(st_writer_serialize(w, &out, len, &err) == VIT_OK, "%s", err.message);
    st_writer_free(w);
    return out;
}

/* ---- configs as the hub holds them ----------------------------------------------- */

/* HF id2label for k classes: "0": "class 0, name 0" ...; appended to buf. */
static void append_id2label(char *buf, size_t len, int k)
{
    size_t o = strlen(buf);
    o += (size_t)snprintf(buf + o, len - o, "\"id2label\": {");
    for (int i = 0; i < k && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s\"%d\": \"class %d, name %d\"", i ? ", " : "",
                              i, i, i);
    snprintf(buf + o, len - o, "},\n");
}

static char config_text[4][160000];

/* google/vit-base-patch16-224: ViTForImageClassification. */
static const char *hf_config(int classes, int depth)
{
    char *b = config_text[classes ? 0 : 1];
    snprintf(b, sizeof config_text[0],
             "{\n  \"_name_or_path\": \"google/vit-base-patch16-224%s\",\n"
             "  \"architectures\": [\"%s\"],\n  \"attention_probs_dropout_prob\": 0.0,\n"
             "  \"hidden_act\": \"gelu\",\n  \"hidden_dropout_prob\": 0.0,\n"
             "  \"hidden_size\": 768,\n",
             classes ? "" : "-in21k", classes ? "ViTForImageClassification" : "ViTModel");
    if (classes)
        append_id2label(b, sizeof config_text[0], classes);
    size_t o = strlen(b);
    snprintf(b + o, sizeof config_text[0] - o,
             "  \"image_size\": 224,\n  \"initializer_range\": 0.02,\n"
             "  \"intermediate_size\": 3072,\n  \"layer_norm_eps\": 1e-12,\n"
             "  \"model_type\": \"vit\",\n  \"num_attention_heads\": 12,\n"
             "  \"num_channels\": 3,\n  \"num_hidden_layers\": %d,\n  \"patch_size\": 16,\n"
             "  \"qkv_bias\": true,\n  \"transformers_version\": \"4.13.0.dev0\"\n}\n", depth);
    return b;
}

static const char hf_preprocessor[] =
    "{\n  \"do_normalize\": true,\n  \"do_resize\": true,\n"
    "  \"feature_extractor_type\": \"ViTFeatureExtractor\",\n"
    "  \"image_mean\": [0.5, 0.5, 0.5],\n  \"image_std\": [0.5, 0.5, 0.5],\n"
    "  \"resample\": 2,\n  \"size\": 224\n}\n";

/* timm/vit_base_patch16_224.augreg2_in21k_ft_in1k (timm's save_config_for_hf form). */
static const char *timm_config(int depth)
{
    char *b = config_text[2];
    size_t len = sizeof config_text[2], o = 0;
    o += (size_t)snprintf(b + o, len - o,
                          "{\n  \"architecture\": \"vit_base_patch16_224\",\n"
                          "  \"num_classes\": 1000,\n  \"num_features\": 768,\n"
                          "  \"global_pool\": \"token\",\n");
    if (depth != 12) /* a shortened test model says so, as timm's exports of one would */
        o += (size_t)snprintf(b + o, len - o, "  \"model_args\": {\"depth\": %d},\n", depth);
    o += (size_t)snprintf(b + o, len - o, "  \"label_names\": [");
    for (int i = 0; i < 1000; i++)
        o += (size_t)snprintf(b + o, len - o, "%s\"n%08d\"", i ? ", " : "", 1440764 + i);
    o += (size_t)snprintf(b + o, len - o, "],\n  \"label_descriptions\": {");
    for (int i = 0; i < 1000; i++)
        o += (size_t)snprintf(b + o, len - o, "%s\"n%08d\": \"thing %d, its other name\"",
                              i ? ", " : "", 1440764 + i, i);
    snprintf(b + o, len - o,
             "},\n  \"pretrained_cfg\": {\n    \"tag\": \"augreg2_in21k_ft_in1k\",\n"
             "    \"custom_load\": false,\n    \"input_size\": [3, 224, 224],\n"
             "    \"fixed_input_size\": true,\n    \"interpolation\": \"bicubic\",\n"
             "    \"crop_pct\": 0.9,\n    \"crop_mode\": \"center\",\n"
             "    \"mean\": [0.5, 0.5, 0.5],\n    \"std\": [0.5, 0.5, 0.5],\n"
             "    \"num_classes\": 1000,\n    \"pool_size\": null,\n"
             "    \"first_conv\": \"patch_embed.proj\",\n    \"classifier\": \"head\"\n  }\n}\n");
    return b;
}

/* openai/clip-vit-large-patch14 (CLIPModel), with `depth` vision blocks. */
static const char *clip_config(int depth)
{
    char *b = config_text[3];
    snprintf(b, sizeof config_text[3],
             "{\n  \"_name_or_path\": \"clip-vit-large-patch14/\",\n"
             "  \"architectures\": [\"CLIPModel\"],\n  \"initializer_factor\": 1.0,\n"
             "  \"logit_scale_init_value\": 2.6592,\n  \"model_type\": \"clip\",\n"
             "  \"projection_dim\": 768,\n"
             "  \"text_config\": {\"hidden_act\": \"quick_gelu\", \"hidden_size\": 768,\n"
             "    \"id2label\": {\"0\": \"LABEL_0\", \"1\": \"LABEL_1\"},\n"
             "    \"intermediate_size\": 3072, \"layer_norm_eps\": 1e-05,\n"
             "    \"max_position_embeddings\": 77, \"model_type\": \"clip_text_model\",\n"
             "    \"num_attention_heads\": 12, \"num_hidden_layers\": 12,\n"
             "    \"projection_dim\": 768, \"vocab_size\": 49408},\n"
             "  \"text_config_dict\": {\"hidden_size\": 768, \"intermediate_size\": 3072,\n"
             "    \"num_attention_heads\": 12, \"num_hidden_layers\": 12, \"projection_dim\": 768},\n"
             "  \"torch_dtype\": \"float32\",\n  \"transformers_version\": null,\n"
             "  \"vision_config\": {\"dropout\": 0.0, \"hidden_act\": \"quick_gelu\",\n"
             "    \"hidden_size\": 1024,\n"
             "    \"id2label\": {\"0\": \"LABEL_0\", \"1\": \"LABEL_1\"},\n"
             "    \"image_size\": 224, \"initializer_factor\": 1.0,\n"
             "    \"intermediate_size\": 4096, \"layer_norm_eps\": 1e-05,\n"
             "    \"model_type\": \"clip_vision_model\", \"num_attention_heads\": 16,\n"
             "    \"num_channels\": 3, \"num_hidden_layers\": %d, \"patch_size\": 14,\n"
             "    \"projection_dim\": 768},\n"
             "  \"vision_config_dict\": {\"hidden_size\": 1024, \"intermediate_size\": 4096,\n"
             "    \"num_attention_heads\": 16, \"num_hidden_layers\": %d, \"patch_size\": 14,\n"
             "    \"projection_dim\": 768}\n}\n",
             depth, depth);
    return b;
}

static const char clip_preprocessor[] =
    "{\n  \"crop_size\": 224,\n  \"do_center_crop\": true,\n  \"do_normalize\": true,\n"
    "  \"do_resize\": true,\n  \"feature_extractor_type\": \"CLIPFeatureExtractor\",\n"
    "  \"image_mean\": [0.48145466, 0.4578275, 0.40821073],\n"
    "  \"image_std\": [0.26862954, 0.26130258, 0.27577711],\n"
    "  \"resample\": 3,\n  \"size\": 224\n}\n";

/* ---- checks ------------------------------------------------------------------------- */

/* The snapshot directory of org/name in the cache. */
static void snapshot_dir(const char *org, const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "%s/hub/%s/%s/snapshots/main", cache, org, name);
}

/* Loads the snapshot and checks it against the model written: every
 * tensor, the config (preprocessing included) and the labels.  The loaded
 * model (caller frees), or NULL after a failed check. */
static vit_model *check_snapshot(const char *what, const char *dir, vit_model *want,
                                 vit_layout layout, char *const *labels)
{
    vit_model *m = NULL;
    vit_error err = {0};
    CHECKF(vit_model_load(dir, &m, &err) == VIT_OK, "%s: %s", what, err.message);
    if (!m)
        return NULL;
    CHECKF(m->layout == layout, "%s: layout %s", what, vit_layout_name(m->layout));
    const vit_config *a = &m->cfg, *b = &want->cfg;
    CHECKF(vit_config_equal(a, b),
           "%s: config: %dx%d w%d d%d h%d m%d k%d p%d eps %g act %d pool %d pre %d bias %d | "
           "resize %d crop %d interp %d mean %g std %g; want resize %d interp %d mean %g std %g "
           "eps %g",
           what, a->image_size, a->patch_size, a->width, a->depth, a->heads, a->mlp_dim,
           a->num_classes, a->proj_dim, (double)a->ln_eps, a->act, a->pool, a->ln_pre,
           a->patch_bias, a->preprocess.resize_shorter, a->preprocess.crop_h, a->preprocess.interp,
           (double)a->preprocess.mean[0], (double)a->preprocess.std[0],
           b->preprocess.resize_shorter, b->preprocess.interp, (double)b->preprocess.mean[0],
           (double)b->preprocess.std[0], (double)b->ln_eps);
    bool same = m->num_params == want->num_params;
    for (size_t i = 0; same && i < m->num_params; i++) {
        const vit_param *p = &m->params[i], *q = &want->params[i];
        same = strcmp(p->name, q->name) == 0 && p->numel == q->numel &&
               memcmp(p->data, q->data, p->numel * sizeof(float)) == 0;
        CHECKF(same, "%s: tensor %s differs from what was written", what, p->name);
    }
    for (int k = 0; labels && m->labels && k < a->num_classes; k++)
        if (strcmp(m->labels[k], labels[k]) != 0) {
            CHECKF(0, "%s: label %d is '%s', want '%s'", what, k, m->labels[k], labels[k]);
            break;
        }
    CHECKF(!labels == !m->labels, "%s: labels %s", what, m->labels ? "present" : "absent");
    return m;
}

/* The top-k of this process's forward pass of image through m (with the
 * task at task_path, if any), as a reference. */
static bool reference(vit_model *m, const char *task_path, serve_ref *ref)
{
    vit_error err = {0};
    vit_task *task = NULL;
    vit_model *view = NULL, *run = m;
    img_image img = {0};
    vit_state *s = NULL;
    size_t per_image = (size_t)3 * m->cfg.image_size * m->cfg.image_size;
    float *input = malloc(per_image * sizeof *input);
    bool ok = input && img_load_file(image_path, 64u << 20, 1u << 26, &img, &err) == VIT_OK &&
              img_to_tensor(&img, &m->cfg.preprocess, input, &err) == VIT_OK;
    if (ok && task_path) {
        ok = task_load(m, task_path, &task, &err) == VIT_OK &&
             vit_model_view(m, task->num_classes, task->trainable, &view, &err) == VIT_OK;
        run = view;
    }
    int K = ok ? vit_config_output_dim(&run->cfg) : 0;
    float *logits = calloc((size_t)(K > 0 ? K : 1), sizeof *logits);
    float *probs = calloc((size_t)(K > 0 ? K : 1), sizeof *probs);
    ok = ok && logits && probs && vit_state_create(run, 1, 2, &s, &err) == VIT_OK &&
         vit_forward(run, s, input, 1, logits, &err) == VIT_OK;
    CHECKF(ok, "reference forward: %s", err.message);
    if (ok) {
        vit_softmax(logits, K, probs);
        char *const *labels = task ? task->labels : m->labels;
        ref->k = K < TOP_K ? K : TOP_K;
        for (int j = 0; j < ref->k; j++) {
            int best = -1;
            for (int i = 0; i < K; i++)
                if (probs[i] >= 0 && (best < 0 || probs[i] > probs[best]))
                    best = i;
            snprintf(ref->labels[j], sizeof ref->labels[j], "%s", labels[best]);
            ref->scores[j] = probs[best];
            probs[best] = -1;
        }
    }
    vit_state_free(s);
    free(logits), free(probs), free(input);
    img_free(&img);
    vit_model_free(view);
    task_free(task);
    return ok;
}

/* `vitfit classify --json` output (one image) equals ref. */
static void check_same_top(const char *what, const char *out, const serve_ref *ref)
{
    json_t *j = json_loads(out, 0, NULL);
    json_t *labels = json_object_get(j, "labels"), *scores = json_object_get(j, "scores");
    CHECKF(json_array_size(labels) == (size_t)ref->k && json_array_size(scores) == (size_t)ref->k,
           "%s: %s", what, out);
    for (int i = 0; i < ref->k && i < (int)json_array_size(labels); i++) {
        const char *l = json_string_value(json_array_get(labels, (size_t)i));
        double s = json_number_value(json_array_get(scores, (size_t)i));
        CHECKF(l && strcmp(l, ref->labels[i]) == 0 && fabs(s - ref->scores[i]) <= 1e-5,
               "%s: #%d is %s %.6f, want %s %.6f", what, i, l ? l : "?", s, ref->labels[i],
               ref->scores[i]);
    }
    json_decref(j);
}

/* classify --model hf:org/name [--task task]: the download, then the checks. */
static void check_classify(const char *what, const char *org, const char *name,
                           vit_model *want, vit_layout layout, char *const *labels,
                           const char *task)
{
    char model[256], dir[700], out[1 << 16], err[1 << 14];
    snprintf(model, sizeof model, "hf:%s/%s", org, name);
    const char *args_task[] = {"classify", "--model", model, "--task", task, "--json", "--top-k",
                               "5", image_path, NULL};
    const char *args[] = {"classify", "--model", model, "--json", "--top-k", "5", image_path,
                          NULL};
    double t0 = now_s();
    int rc = serve_run_cli(task ? args_task : args, out, sizeof out, err, sizeof err, 300000);
    double t1 = now_s();
    CHECKF(rc == 0, "%s: classify exit %d: %s", what, rc, err);
    CHECKF(strstr(err, "downloading") != NULL, "%s: no download was reported: %s", what, err);
    snapshot_dir(org, name, dir, sizeof dir);
    vit_model *m = check_snapshot(what, dir, want, layout, labels);
    double t2 = now_s();
    serve_ref ref;
    if (m && rc == 0 && reference(m, task, &ref))
        check_same_top(what, out, &ref);
    printf("%s: classify %.1f s, snapshot %.1f s, reference %.1f s\n", what, t1 - t0, t2 - t1, now_s() - t2);
    vit_model_free(m);
}

/* A vit-b16 config with k classes, eps and preprocessing as the hub's files say. */
static vit_config vit_b16(int classes, float eps, img_preprocess pre)
{
    vit_config c;
    vit_error err = {0};
    CHECK(vit_config_preset("vit-b16", &c, &err) == VIT_OK);
    c.num_classes = classes;
    c.ln_eps = eps;
    c.preprocess = pre;
    return c;
}

/* Labels "class k, name k" (HF) or "thing k, its other name" (timm descriptions). */
static char **make_labels(const char *fmt, int k)
{
    char **l = calloc((size_t)k + 1, sizeof *l);
    for (int i = 0; l && i < k; i++) {
        char buf[64];
        snprintf(buf, sizeof buf, fmt, i, i);
        l[i] = strdup(buf);
    }
    return l;
}

static void free_labels(char **l)
{
    for (int i = 0; l && l[i]; i++)
        free(l[i]);
    free(l);
}

/* A task for m's backbone in tmpdir; its path. */
static const char *task_for(vit_model *m, const char *file)
{
    static char path[700];
    snprintf(path, sizeof path, "%s/%s", tmpdir, file);
    CHECK(serve_make_task(m, path, 7, "kind", 3));
    return path;
}

/* ---- the checkpoints ------------------------------------------------------------------ */

/* Blocks of the ViT-B/16 models: all 12 in a plain build; 2 under a
 * sanitizer, where a full forward pass takes minutes (the names and every
 * other shape stay real). */
static int vit_b_depth(void)
{
    const char *sanitize = getenv("VIT_TEST_SANITIZE"); /* tests/meson.build */
    return !sanitize || strcmp(sanitize, "none") == 0 ? 12 : 2;
}

/* google/vit-base-patch16-224, then the in21k checkpoint: the same
 * backbone without its head (ViTModel). */
static void test_hf(void)
{
    vit_config cfg = vit_b16(1000, 1e-12f, img_preprocess_hf(224));
    cfg.depth = vit_b_depth();
    vit_model *m = seeded(&cfg, 101), *bare = NULL;
    char **labels = make_labels("class %d, name %d", 1000);
    size_t len = 0;
    uint8_t *w = m ? serialize(m, HF_VIT, &len) : NULL;
    publish("google", "vit-base-patch16-224", hf_config(1000, cfg.depth), hf_preprocessor, w,
            len);
    int before = count(&repo.cdn_requests);
    check_classify("google/vit-base-patch16-224", "google", "vit-base-patch16-224", m,
                   VIT_LAYOUT_HF, labels, NULL);
    CHECK(count(&repo.cdn_requests) == before + 1); /* the weights came from the CDN */

    vit_error err = {0};
    CHECKF(!m || vit_model_derive(m, 0, false, &bare, &err) == VIT_OK, "%s", err.message);
    w = bare ? serialize(bare, HF_VIT_BARE, &len) : NULL;
    publish("google", "vit-base-patch16-224-in21k", hf_config(0, cfg.depth), hf_preprocessor, w,
            len);
    const char *task = bare ? task_for(bare, "in21k.safetensors") : NULL;
    if (task)
        check_classify("google/vit-base-patch16-224-in21k", "google",
                       "vit-base-patch16-224-in21k", bare, VIT_LAYOUT_HF, NULL, task);
    vit_model_free(bare);
    free_labels(labels);
    vit_model_free(m);
}

static void test_clip(void)
{
    vit_config cfg;
    vit_error err = {0};
    CHECK(vit_config_preset("vit-l14-clip", &cfg, &err) == VIT_OK);
    cfg.depth = 2;
    vit_model *m = seeded(&cfg, 103);
    size_t len = 0;
    uint8_t *w = m ? serialize(m, HF_CLIP, &len) : NULL;
    publish("openai", "clip-vit-large-patch14", clip_config(2), clip_preprocessor, w, len);
    const char *task = m ? task_for(m, "clip.safetensors") : NULL;
    if (task)
        check_classify("openai/clip-vit-large-patch14", "openai", "clip-vit-large-patch14", m,
                       VIT_LAYOUT_HF_CLIP, NULL, task);
    vit_model_free(m);
}

/* The commands of README.md's block after "<!-- hub-example -->" (lines
 * ending in '\\' joined), build/server/vitfit replaced by VITFIT_BIN, each run
 * with /bin/sh in the source tree: each must succeed from the cache (no
 * request to the hub) and print want. */
static void run_readme(const char *want)
{
    char path[4096];
    FILE *f = fopen(test_path(path, sizeof path, "README.md"), "r");
    static char text[1 << 18];
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f)
        fclose(f);
    text[n] = '\0';
    const char *mark = strstr(text, "<!-- hub-example -->");
    const char *body = mark ? strstr(mark, "```sh\n") : NULL;
    const char *end = body ? strstr(body + 6, "```") : NULL;
    CHECKF(body && end, "README.md has no hub-example block");
    if (!body || !end)
        return;
    static char block[8192];
    size_t len = (size_t)(end - body - 6) < sizeof block - 1 ? (size_t)(end - body - 6)
                                                              : sizeof block - 1;
    memcpy(block, body + 6, len);
    block[len] = '\0';
    int hub_before = count(&repo.hub_requests), commands = 0;
    char root[4096];
    test_path(root, sizeof root, ".");
    for (char *line = strtok(block, "\n"); line; line = strtok(NULL, "\n")) {
        static char cmd[8192], run[12288];
        snprintf(cmd, sizeof cmd, "%s", line);
        while (cmd[0] && cmd[strlen(cmd) - 1] == '\\') { /* a continuation */
            char *next = strtok(NULL, "\n");
            cmd[strlen(cmd) - 1] = ' ';
            if (!next)
                break;
            strncat(cmd, next, sizeof cmd - strlen(cmd) - 1);
        }
        char *bin = strstr(cmd, "build/server/vitfit");
        CHECKF(bin != NULL, "README hub command without vitfit: %s", cmd);
        if (!bin)
            continue;
        *bin = '\0';
        snprintf(run, sizeof run, "cd '%s' && %s'%s'%s", root, cmd, getenv("VITFIT_BIN"),
                 bin + strlen("build/server/vitfit"));
        static char out[1 << 16], err[1 << 14];
        const char *argv[] = {"/bin/sh", "-c", run, NULL};
        int rc = serve_run(argv, out, sizeof out, err, sizeof err, 300000);
        CHECKF(rc == 0, "README: %s: exit %d: %s", run, rc, err);
        if (strstr(run, " classify "))
            CHECKF(strstr(out, want) != NULL, "README: %s printed %s, not %s", run, out, want);
        commands++;
    }
    CHECK(commands == 2);
    CHECK(count(&repo.hub_requests) == hub_before);
}

/* timm's checkpoint, downloaded by the server itself. */
static void test_timm_serve(void)
{
    vit_config cfg = vit_b16(1000, 1e-6f, img_preprocess_timm_in21k(224));
    cfg.depth = vit_b_depth();
    vit_model *m = seeded(&cfg, 104);
    char **labels = make_labels("thing %d, its other name", 1000);
    size_t len = 0;
    uint8_t *w = m ? serialize(m, TIMM, &len) : NULL;
    publish("timm", "vit_base_patch16_224.augreg2_in21k_ft_in1k", timm_config(cfg.depth), NULL, w, len);
    char data[700], dir[700];
    snprintf(data, sizeof data, "%s/serve-timm", tmpdir);
    serve_proc p;
    const char *extra[] = {"--model", "hf:timm/vit_base_patch16_224.augreg2_in21k_ft_in1k", NULL};
    vit_model *got = NULL;
    char top1[SERVE_MAX_LABEL] = "";
    bool up = serve_start(&p, data, "", extra);
    CHECK(up);
    if (up) {
        snapshot_dir("timm", "vit_base_patch16_224.augreg2_in21k_ft_in1k", dir, sizeof dir);
        got = check_snapshot("timm", dir, m, VIT_LAYOUT_TIMM, labels);
        CURL *h = curl_easy_init();
        serve_resp r;
        serve_request(&p, h, &(serve_req){.path = "/v1/model"}, &r);
        json_t *j = serve_check_ok("/v1/model (timm)", &r);
        json_t *pre = json_object_get(j, "preprocessing");
        CHECKF(j && strcmp(json_string_value(json_object_get(j, "layout")), "timm") == 0 &&
                   json_integer_value(json_object_get(j, "num_classes")) == 1000 &&
                   json_integer_value(json_object_get(pre, "resize_shorter")) == 248 &&
                   strcmp(json_string_value(json_object_get(pre, "interpolation")), "bicubic") ==
                       0 &&
                   strcmp(json_string_value(json_array_get(json_object_get(j, "labels"), 3)),
                          "thing 3, its other name") == 0,
               "/v1/model: %.400s", r.body);
        json_decref(j);
        serve_resp_free(&r);
        /* classify over HTTP: the server's top-5 is this process's forward of the snapshot */
        FILE *f = fopen(image_path, "rb");
        static uint8_t png[1 << 20];
        size_t n = f ? fread(png, 1, sizeof png, f) : 0;
        if (f)
            fclose(f);
        serve_request(&p, h,
                      &(serve_req){.path = "/v1/classify?top_k=5", .content_type = "image/png",
                                   .body = png, .len = n},
                      &r);
        serve_ref ref;
        if (got && reference(got, NULL, &ref)) {
            check_same_top("timm via serve", r.body, &ref);
            snprintf(top1, sizeof top1, "%s", ref.labels[0]);
        }
        serve_resp_free(&r);
        curl_easy_cleanup(h);
        /* the download was logged as such */
        FILE *log = fopen(p.log_path, "r");
        static char text[1 << 16];
        size_t tn = log ? fread(text, 1, sizeof text - 1, log) : 0;
        text[tn] = '\0';
        if (log)
            fclose(log);
        CHECKF(strstr(text, "model download") && strstr(text, "downloading hf:timm/"),
               "serve log: %s", text);
        CHECK(serve_stop(&p, SIGTERM, 60000) == 0);
    }
    vit_model_free(got);
    if (top1[0]) /* the README's commands, on the model the server downloaded */
        run_readme(top1);
    free_labels(labels);
    vit_model_free(m);
}

int main(int argc, char **argv)
{
    /* two meson tests, each under a minute: "hf" (HF's two ViT checkpoints) and "serve"
     * (timm's, downloaded by the server, and CLIP's) */
    const char *part = argc > 1 ? argv[1] : "all";
    CHECK(mkdtemp(tmpdir) != NULL);
    snprintf(cache, sizeof cache, "%s/cache", tmpdir);
    test_path(image_path, sizeof image_path, IMAGE);
    loopback_http_behaviour hb = {.kind = LOOPBACK_HTTP_HANDLER, .handler = on_hub};
    loopback_http_behaviour cb = {.kind = LOOPBACK_HTTP_HANDLER, .handler = on_cdn};
    hub = loopback_http_start(&hb, AF_INET);
    cdn = loopback_http_start(&cb, AF_INET);
    CHECK(hub && cdn);
    if (hub && cdn) {
        loopback_http_url(hub, "", hub_url, sizeof hub_url);
        loopback_http_url(cdn, "", cdn_url, sizeof cdn_url);
        setenv("VITFIT_CACHE", cache, 1);
        setenv("VITFIT_HUB_URL", hub_url, 1);
        unsetenv("HF_TOKEN");
        unsetenv("HF_HUB_OFFLINE");
        double t0 = now_s();
        if (strcmp(part, "serve") != 0)
            test_hf();
        if (strcmp(part, "hf") != 0) {
            test_timm_serve();
            test_clip();
        }
        printf("%s: %.1f s\n", part, now_s() - t0);
    }
    loopback_http_stop(hub);
    loopback_http_stop(cdn);
    publish("", "", NULL, NULL, NULL, 0);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    CHECK(system(cmd) == 0);
    int hf = serve_harness_failures(); /* its checks, and the replies against api/openapi.yaml */
    return check_result() || hf;
}
