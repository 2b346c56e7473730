/*
 * test_vit.c - the ViT forward pass against PyTorch goldens, plus its kernels
 * against naive references and the loader's error paths.
 *
 * Goldens come from tools/reference/gen_vit_goldens.py (torch 1.13, float64):
 * tiny models in the timm, HF, torchvision and OpenAI CLIP layouts, and the
 * full ViT-B/16 through torchvision's own vit_b_16 with randinit weights that
 * this test regenerates (so no 340 MB file is committed).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "gemm.h"
#include "ops.h"
#include "randinit.h"
#include "safetensors.h"
#include "test_util.h"
#include "vit.h"

/* ---- kernels vs naive references ---- */

static void test_gemm(void)
{
    int m = 37, n = 29, k = 53;
    float *a = malloc(sizeof(float) * m * (k + 3)), *b = malloc(sizeof(float) * n * k);
    float *c = malloc(sizeof(float) * m * n), *r = malloc(sizeof(float) * m * n);
    randinit_fill(a, (size_t)m * (k + 3), "a", 1, 1.0, 0.0);
    randinit_fill(b, (size_t)n * k, "b", 1, 1.0, 0.0);
    for (int trans = 0; trans < 2; trans++) {
        randinit_fill(c, (size_t)m * n, "c", 1, 1.0, 0.0);
        memcpy(r, c, sizeof(float) * m * n);
        int ldb = trans ? k : n;
        gemm(m, n, k, 0.5f, a, k + 3, b, ldb, trans, 1.0f, c, n);
        gemm_ref(m, n, k, 0.5f, a, k + 3, b, ldb, trans, 1.0f, r, n);
        check_close(trans ? "gemm (B transposed)" : "gemm", c, r, (size_t)m * n, 1e-5, 1e-5);
    }
    free(a);
    free(b);
    free(c);
    free(r);
}

/* Attention in double, straight from the definition. */
static void attention_naive(float *out, const float *qkv, int B, int N, int C, int NH)
{
    int hs = C / NH;
    double *p = malloc(sizeof(double) * N);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < N; i++) {
                const float *q = qkv + ((size_t)b * N + i) * 3 * C + h * hs;
                double max = -INFINITY, sum = 0;
                for (int j = 0; j < N; j++) {
                    const float *k = qkv + ((size_t)b * N + j) * 3 * C + C + h * hs;
                    double s = 0;
                    for (int d = 0; d < hs; d++)
                        s += (double)q[d] * k[d];
                    p[j] = s / sqrt((double)hs);
                    if (p[j] > max)
                        max = p[j];
                }
                for (int j = 0; j < N; j++)
                    sum += (p[j] = exp(p[j] - max));
                for (int d = 0; d < hs; d++) {
                    double acc = 0;
                    for (int j = 0; j < N; j++)
                        acc += p[j] / sum * qkv[((size_t)b * N + j) * 3 * C + 2 * C + h * hs + d];
                    out[((size_t)b * N + i) * C + h * hs + d] = (float)acc;
                }
            }
    free(p);
}

static void test_attention(void)
{
    int B = 2, N = 11, C = 24, NH = 3;
    float *qkv = malloc(sizeof(float) * B * N * 3 * C);
    float *out = malloc(sizeof(float) * B * N * C), *want = malloc(sizeof(float) * B * N * C);
    float *scores = malloc(sizeof(float) * N * N);
    randinit_fill(qkv, (size_t)B * N * 3 * C, "qkv", 7, 2.0, 0.0);
    attention_forward(out, scores, 0, qkv, B, N, C, NH);
    attention_naive(want, qkv, B, N, C, NH);
    check_close("attention", out, want, (size_t)B * N * C, 1e-5, 1e-4);
    free(qkv);
    free(out);
    free(want);
    free(scores);
}

static void test_layernorm_and_softmax(void)
{
    int rows = 5, C = 77;
    float *x = malloc(sizeof(float) * rows * C), *out = malloc(sizeof(float) * rows * C);
    float *want = malloc(sizeof(float) * rows * C), w[77], b[77];
    randinit_fill(x, (size_t)rows * C, "x", 3, 4.0, 100.0); /* large offset: cancellation */
    randinit_fill(w, C, "w", 3, 0.1, 1.0);
    randinit_fill(b, C, "b", 3, 0.1, 0.0);
    for (int r = 0; r < rows; r++) {
        double mean = 0, var = 0;
        for (int i = 0; i < C; i++)
            mean += x[r * C + i];
        mean /= C;
        for (int i = 0; i < C; i++)
            var += (x[r * C + i] - mean) * (x[r * C + i] - mean);
        var /= C;
        for (int i = 0; i < C; i++)
            want[r * C + i] = (float)((x[r * C + i] - mean) / sqrt(var + 1e-6) * w[i] + b[i]);
    }
    layernorm_forward(out, NULL, NULL, x, w, b, (size_t)rows, C, 1e-6f);
    check_close("layernorm", out, want, (size_t)rows * C, 1e-5, 1e-4);

    float logits[4] = {1000.0f, 1001.0f, -5.0f, 1000.5f}, probs[4];
    vit_softmax(logits, 4, probs);
    double sum = 0;
    for (int i = 0; i < 4; i++)
        sum += probs[i];
    CHECKF(fabs(sum - 1.0) < 1e-6, "softmax sums to %g", sum);
    CHECKF(probs[1] > probs[3] && probs[3] > probs[0] && probs[2] < 1e-30,
           "softmax order %g %g %g %g", probs[0], probs[1], probs[2], probs[3]);
    CHECK(isfinite(probs[0]));
    free(x);
    free(out);
    free(want);
}

/* ---- goldens ---- */

/* Runs a model on the golden input and compares with the golden output. */
static void check_golden_model(const char *what, vit_model *m, const char *expected_rel,
                               double atol)
{
    char path[4096];
    vit_error err = {0};
    st_file *f = NULL;
    CHECKF(st_open(test_path(path, sizeof path, expected_rel), &f, &err) == VIT_OK, "%s",
           err.message);
    if (!f)
        return;
    size_t in_n = 0, out_n = 0;
    float *input = test_read_tensor(f, "input", &in_n);
    float *want = test_read_tensor(f, "output", &out_n);
    const st_tensor *t = st_find(f, "output");
    int B = t ? (int)t->shape[0] : 0;
    CHECK(input && want && B > 0);
    if (input && want && B > 0) {
        size_t per_image = (size_t)3 * m->cfg.image_size * m->cfg.image_size;
        CHECKF(in_n == per_image * (size_t)B, "%s: input has %zu values, model wants %zu", what,
               in_n, per_image * (size_t)B);
        CHECKF(out_n == (size_t)B * vit_config_output_dim(&m->cfg), "%s: output size %zu", what,
               out_n);
        float *got = calloc(out_n, sizeof *got);
        vit_state *s = NULL;
        if (in_n == per_image * (size_t)B && out_n == (size_t)B * vit_config_output_dim(&m->cfg) &&
            vit_state_create(m, B, 2, &s, &err) == VIT_OK &&
            vit_forward(m, s, input, B, got, &err) == VIT_OK)
            check_close(what, got, want, out_n, atol, 0.0);
        else
            CHECKF(0, "%s: forward failed: %s", what, err.message);
        vit_state_free(s);
        free(got);
    }
    free(input);
    free(want);
    st_close(f);
}

typedef struct golden_case {
    const char *model;    /* checkpoint dir or file, relative to the source root */
    const char *expected; /* safetensors with input and output */
    vit_layout layout;
    int heads, classes, proj;
    vit_act act;
    vit_pool pool;
} golden_case;

static void test_tiny_goldens(void)
{
    static const golden_case cases[] = {
        {"tests/data/golden/tiny_timm", "tests/data/golden/tiny_timm/expected.safetensors",
         VIT_LAYOUT_TIMM, 4, 10, 0, VIT_ACT_GELU, VIT_POOL_CLS},
        {"tests/data/golden/tiny_timm_meanpool",
         "tests/data/golden/tiny_timm_meanpool/expected.safetensors", VIT_LAYOUT_TIMM, 4, 10, 0,
         VIT_ACT_GELU, VIT_POOL_MEAN},
        {"tests/data/golden/tiny_hf", "tests/data/golden/tiny_hf/expected.safetensors",
         VIT_LAYOUT_HF, 4, 10, 0, VIT_ACT_GELU, VIT_POOL_CLS},
        {"tests/data/golden/tiny_tv.safetensors", "tests/data/golden/tiny_tv.expected.safetensors",
         VIT_LAYOUT_TORCHVISION, 2, 10, 0, VIT_ACT_GELU, VIT_POOL_CLS},
        {"tests/data/golden/tiny_clip.safetensors",
         "tests/data/golden/tiny_clip.expected.safetensors", VIT_LAYOUT_CLIP, 2, 0, 32,
         VIT_ACT_QUICK_GELU, VIT_POOL_CLS},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const golden_case *g = &cases[i];
        char path[4096];
        vit_error err = {0};
        vit_model *m = NULL;
        vit_status st = vit_model_load(test_path(path, sizeof path, g->model), &m, &err);
        CHECKF(st == VIT_OK, "%s: %s", g->model, err.message);
        if (st != VIT_OK)
            continue;
        CHECKF(m->layout == g->layout, "%s: layout %s", g->model, vit_layout_name(m->layout));
        CHECKF(m->cfg.heads == g->heads, "%s: heads %d", g->model, m->cfg.heads);
        CHECKF(m->cfg.num_classes == g->classes, "%s: classes %d", g->model, m->cfg.num_classes);
        CHECKF(m->cfg.proj_dim == g->proj, "%s: proj %d", g->model, m->cfg.proj_dim);
        CHECKF(m->cfg.act == g->act && m->cfg.pool == g->pool, "%s: act/pool", g->model);
        check_golden_model(g->model, m, g->expected, 1e-4);
        vit_model_free(m);
    }
}

/* Full-shape ViT-B/16 against torchvision's vit_b_16 with the same weights. */
static void test_vit_b16_full(void)
{
    vit_config cfg;
    vit_error err = {0};
    CHECK(vit_config_preset("vit-b16", &cfg, &err) == VIT_OK);
    cfg.num_classes = 1000; /* torchvision's head */
    vit_model *m = NULL;
    CHECKF(vit_model_create(&cfg, &m, &err) == VIT_OK, "%s", err.message);
    if (!m)
        return;
    CHECKF(vit_model_param_count(m) == 86567656, "ViT-B/16 has %zu parameters",
           vit_model_param_count(m));
    CHECKF(vit_model_bias_count(m) == 102912, "ViT-B/16 has %zu bias parameters",
           vit_model_bias_count(m));
    vit_model_randomize(m, 2026);
    CHECKF(vit_model_pack(m, &err) == VIT_OK, "%s", err.message);

    char path[4096];
    st_file *f = NULL;
    CHECKF(st_open(test_path(path, sizeof path, "tests/data/golden/vit_b16.expected.safetensors"),
                   &f, &err) == VIT_OK, "%s", err.message);
    size_t out_n = 0;
    float *want = f ? test_read_tensor(f, "output", &out_n) : NULL;
    int B = 2;
    CHECK(want && out_n == (size_t)B * 1000);
    size_t per_image = (size_t)3 * 224 * 224;
    float *input = malloc(per_image * B * sizeof *input);
    float *got = malloc((size_t)B * 1000 * sizeof *got);
    randinit_fill(input, per_image * B, "input", 2026, 1.0, 0.0);
    vit_state *s = NULL;
    if (want && out_n == (size_t)B * 1000 && vit_state_create(m, B, 2, &s, &err) == VIT_OK &&
        vit_forward(m, s, input, B, got, &err) == VIT_OK) {
        check_close("vit-b16 logits vs torchvision", got, want, out_n, 1e-3, 0.0);
        for (int b = 0; b < B; b++) {
            int top_got[5], top_want[5];
            for (int j = 0; j < 5; j++) { /* selection of the 5 largest */
                int bg = -1, bw = -1;
                for (int i = 0; i < 1000; i++) {
                    int used_g = 0, used_w = 0;
                    for (int t = 0; t < j; t++) {
                        used_g |= top_got[t] == i;
                        used_w |= top_want[t] == i;
                    }
                    if (!used_g && (bg < 0 || got[b * 1000 + i] > got[b * 1000 + bg]))
                        bg = i;
                    if (!used_w && (bw < 0 || want[b * 1000 + i] > want[b * 1000 + bw]))
                        bw = i;
                }
                top_got[j] = bg;
                top_want[j] = bw;
                CHECKF(bg == bw, "image %d: top-%d class %d, torchvision says %d", b, j + 1, bg, bw);
            }
        }
    } else {
        CHECKF(0, "vit-b16 forward: %s", err.message);
    }
    vit_state_free(s);
    free(input);
    free(got);
    free(want);
    st_close(f);
    vit_model_free(m);
}

/* ---- loader errors ---- */

/* Writes the tiny timm checkpoint to dir with one tensor dropped or reshaped. */
static void write_variant(const char *dst, const char *drop, const char *reshape)
{
    char path[4096];
    vit_error err = {0};
    st_file *f = NULL;
    CHECKF(st_open(test_path(path, sizeof path, "tests/data/golden/tiny_timm/model.safetensors"),
                   &f, &err) == VIT_OK, "%s", err.message);
    if (!f)
        return;
    st_writer *w = st_writer_create();
    for (size_t i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_tensor_at(f, i);
        if (drop && strcmp(t->name, drop) == 0)
            continue;
        float *data = test_read_tensor(f, t->name, NULL);
        int64_t shape[ST_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        int ndim = t->ndim;
        if (reshape && strcmp(t->name, reshape) == 0) { /* same bytes, wrong shape */
            shape[0] = (int64_t)t->numel;
            ndim = 1;
        }
        CHECK(data && st_writer_add_f32(w, t->name, ndim, shape, data, &err) == VIT_OK);
        free(data);
    }
    CHECKF(st_writer_save(w, dst, &err) == VIT_OK, "%s", err.message);
    st_writer_free(w);
    st_close(f);
}

static void expect_load_error(const char *path, vit_status want, const char *what)
{
    vit_error err = {0};
    vit_model *m = NULL;
    vit_status st = vit_model_load(path, &m, &err);
    CHECKF(st == want && m == NULL, "%s: got %s (%s)", what, vit_status_name(st), err.message);
    fprintf(stderr, "  %s -> %s\n", what, err.message);
    vit_model_free(m);
}

static void test_load_errors(void)
{
    char tmpl[] = "/tmp/vitfit_test_XXXXXX";
    char *dir = mkdtemp(tmpl);
    CHECK(dir != NULL);
    if (!dir)
        return;
    char path[4096];
    snprintf(path, sizeof path, "%s/missing.safetensors", dir);
    write_variant(path, "blocks.1.attn.proj.bias", NULL);
    expect_load_error(path, VIT_ERR_NOT_FOUND, "missing tensor");
    unlink(path);
    snprintf(path, sizeof path, "%s/reshaped.safetensors", dir);
    write_variant(path, NULL, "blocks.0.mlp.fc2.weight");
    expect_load_error(path, VIT_ERR_MISMATCH, "wrong shape");
    unlink(path);

    /* a valid safetensors file that is not a ViT */
    snprintf(path, sizeof path, "%s/other.safetensors", dir);
    st_writer *w = st_writer_create();
    float one = 1.0f;
    int64_t shape[1] = {1};
    vit_error err = {0};
    CHECK(st_writer_add_f32(w, "features.0.weight", 1, shape, &one, &err) == VIT_OK);
    CHECK(st_writer_save(w, path, &err) == VIT_OK);
    st_writer_free(w);
    expect_load_error(path, VIT_ERR_UNSUPPORTED, "not a ViT");
    unlink(path);

    /* a directory whose config.json is broken, or disagrees with the weights */
    char model[4096], cfg[4096];
    snprintf(model, sizeof model, "%s/model.safetensors", dir);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    write_variant(model, NULL, NULL);
    static const struct { const char *json; vit_status want; const char *what; } configs[] = {
        {"{\"hidden_size\": 64, \"num_attention_heads\": ", VIT_ERR_FORMAT, "truncated config.json"},
        {"[1, 2]", VIT_ERR_FORMAT, "config.json not an object"},
        {"{\"hidden_size\": \"wide\"}", VIT_ERR_FORMAT, "config.json wrong type"},
        {"{\"hidden_size\": 96}", VIT_ERR_MISMATCH, "config.json width disagrees with weights"},
        {"{\"hidden_size\": 64, \"num_attention_heads\": 5}", VIT_ERR_INVALID, "heads not dividing width"},
        {"{\"hidden_size\": 64, \"hidden_act\": \"relu\"}", VIT_ERR_UNSUPPORTED, "unknown activation"},
        {"{\"hidden_size\": 64, \"id2label\": {\"0\": \"a\", \"1\": \"b\"}}", VIT_ERR_MISMATCH, "labels vs head"},
        {"{\"hidden_size\": 64, \"id2label\": {\"0\": \"a\", \"0\": \"b\"}}", VIT_ERR_FORMAT, "duplicate keys"},
    };
    for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++) {
        FILE *fp = fopen(cfg, "w");
        CHECK(fp != NULL);
        if (!fp)
            continue;
        fputs(configs[i].json, fp);
        fclose(fp);
        expect_load_error(dir, configs[i].want, configs[i].what);
    }
    unlink(cfg);
    unlink(model);
    expect_load_error(dir, VIT_ERR_NOT_FOUND, "directory without model.safetensors");
    rmdir(dir);
    expect_load_error("/nonexistent/model", VIT_ERR_NOT_FOUND, "no such path");
}

static void test_config(void)
{
    vit_config c;
    vit_error err = {0};
    CHECK(vit_config_preset("vit-b16", &c, &err) == VIT_OK);
    CHECKF(fabs(vit_config_macs(&c) - 17.58e9) < 0.05e9, "ViT-B/16 MACs %.4g", vit_config_macs(&c));
    CHECK(vit_config_tokens(&c) == 197);
    CHECK(vit_config_preset("vit-l14-clip", &c, &err) == VIT_OK);
    CHECK(vit_config_tokens(&c) == 257 && c.act == VIT_ACT_QUICK_GELU && c.ln_pre && !c.patch_bias);
    CHECK(vit_config_preset("nope", &c, &err) == VIT_ERR_NOT_FOUND);
    CHECK(vit_config_preset("vit-tiny", &c, &err) == VIT_OK);
    c.patch_size = 5;
    CHECK(vit_config_validate(&c, &err) == VIT_ERR_INVALID);
    CHECK(vit_config_preset("vit-tiny", &c, &err) == VIT_OK);
    c.width = 100000;
    CHECK(vit_config_validate(&c, &err) == VIT_ERR_INVALID);
    vit_model *m = NULL;
    CHECK(vit_model_create(&c, &m, &err) == VIT_ERR_INVALID && m == NULL);

    /* a state's batch and thread budget are bounded before anything is allocated */
    CHECK(vit_config_preset("vit-tiny", &c, &err) == VIT_OK);
    CHECK(vit_model_create(&c, &m, &err) == VIT_OK);
    vit_state *s = (vit_state *)&c; /* must be reset to NULL on failure */
    CHECK(m && vit_state_create(m, 1, 0, &s, &err) == VIT_ERR_INVALID && s == NULL);
    CHECK(m && vit_state_create(m, 1, 65, &s, &err) == VIT_ERR_INVALID && s == NULL);
    CHECK(m && vit_state_create(m, 0, 1, &s, &err) == VIT_ERR_INVALID && s == NULL);
    CHECK(m && vit_state_create(m, 4097, 1, &s, &err) == VIT_ERR_INVALID && s == NULL);
    vit_model_free(m);
}

int main(void)
{
    vit_set_threads(2);
    test_gemm();
    test_attention();
    test_layernorm_and_softmax();
    test_config();
    test_tiny_goldens();
    test_load_errors();
    test_vit_b16_full();
    return check_result();
}
