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
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

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
        /* other spellings: torchvision < 0.13 MLP names, and HF / CLIP towers
         * saved without their "vit." / "visual." prefix */
        {"tests/data/golden/tiny_tv_linear.safetensors",
         "tests/data/golden/tiny_tv_linear.expected.safetensors", VIT_LAYOUT_TORCHVISION, 1, 5,
         0, VIT_ACT_GELU, VIT_POOL_CLS},
        {"tests/data/golden/tiny_hf_bare", "tests/data/golden/tiny_hf_bare/expected.safetensors",
         VIT_LAYOUT_HF, 4, 0, 0, VIT_ACT_GELU, VIT_POOL_CLS},
        {"tests/data/golden/tiny_clip_bare.safetensors",
         "tests/data/golden/tiny_clip_bare.expected.safetensors", VIT_LAYOUT_CLIP, 1, 0, 16,
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

/* End to end: image files -> the preprocessing the checkpoint asks for (its
 * config.json, preprocessor_config.json or layout defaults) -> output, against
 * PIL + torchvision transforms and the reference model
 * (tools/reference/gen_preprocess_goldens.py).  The preprocessed batch is
 * compared first, tightly: a misread crop_pct, interpolation or mean/std moves
 * it by 0.3 or more. */
static void test_preprocess_goldens(void)
{
    static const char *const cases[] = {
        "tests/data/golden/e2e_timm/expected.safetensors",
        "tests/data/golden/e2e_hf/expected.safetensors",
        "tests/data/golden/e2e_clip.expected.safetensors",
        "tests/data/golden/e2e_tv.expected.safetensors",
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char path[4096];
        vit_error err = {0};
        st_file *f = NULL;
        CHECKF(st_open(test_path(path, sizeof path, cases[c]), &f, &err) == VIT_OK, "%s",
               err.message);
        if (!f)
            continue;
        const char *model_rel = st_metadata(f, "model"), *images = st_metadata(f, "images");
        json_t *list = images ? json_loads(images, 0, NULL) : NULL;
        size_t in_n = 0, out_n = 0;
        float *want_in = test_read_tensor(f, "input", &in_n);
        float *want_out = test_read_tensor(f, "output", &out_n);
        vit_model *m = NULL;
        CHECKF(model_rel && json_is_array(list) && want_in && want_out, "%s: bad golden",
               cases[c]);
        if (model_rel)
            CHECKF(vit_model_load(test_path(path, sizeof path, model_rel), &m, &err) == VIT_OK,
                   "%s: %s", model_rel, err.message);
        int B = json_is_array(list) ? (int)json_array_size(list) : 0;
        size_t per = m ? (size_t)3 * m->cfg.image_size * m->cfg.image_size : 0;
        if (m && want_in && want_out && B > 0 && in_n == per * (size_t)B &&
            out_n == (size_t)B * vit_config_output_dim(&m->cfg)) {
            float *x = calloc(in_n, sizeof *x), *y = calloc(out_n, sizeof *y);
            for (int b = 0; b < B; b++) {
                const char *image = json_string_value(json_array_get(list, (size_t)b));
                img_image img = {0};
                vit_status st = image ? img_load_file(test_path(path, sizeof path, image),
                                                      1 << 22, 1 << 22, &img, &err)
                                      : VIT_ERR_FORMAT;
                if (st == VIT_OK)
                    st = img_to_tensor(&img, &m->cfg.preprocess, x + (size_t)b * per, &err);
                CHECKF(st == VIT_OK, "%s: %s", image ? image : "?", err.message);
                img_free(&img);
            }
            char what[160];
            snprintf(what, sizeof what, "%s: preprocessed input", model_rel);
            check_close(what, x, want_in, in_n, 1e-5, 0.0);
            vit_state *s = NULL;
            snprintf(what, sizeof what, "%s: output from image files", model_rel);
            if (vit_state_create(m, B, 2, &s, &err) == VIT_OK &&
                vit_forward(m, s, x, B, y, &err) == VIT_OK)
                check_close(what, y, want_out, out_n, 1e-4, 0.0);
            else
                CHECKF(0, "%s: forward failed: %s", model_rel, err.message);
            vit_state_free(s);
            free(x);
            free(y);
        } else {
            CHECKF(0, "%s: golden and model disagree in size", cases[c]);
        }
        vit_model_free(m);
        free(want_in);
        free(want_out);
        json_decref(list);
        st_close(f);
    }
}

/* Reads a whole file into a malloc'd buffer (caller frees); NULL on error. */
static char *slurp(const char *rel, size_t *len)
{
    char path[4096];
    FILE *fp = fopen(test_path(path, sizeof path, rel), "rb");
    char *buf = NULL;
    long n = -1;
    if (fp && fseek(fp, 0, SEEK_END) == 0 && (n = ftell(fp)) >= 0 && fseek(fp, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)n + 1)) && fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (fp)
        fclose(fp);
    if (buf)
        buf[n] = '\0'; /* so text files can be searched */
    *len = buf ? (size_t)n : 0;
    return buf;
}

/* vit_model_load_memory on a directory's bytes equals vit_model_load on it. */
static void test_load_memory(void)
{
    size_t wlen, clen;
    char *weights = slurp("tests/data/golden/e2e_hf/model.safetensors", &wlen);
    char *config = slurp("tests/data/golden/e2e_hf/config.json", &clen);
    vit_side_files side = {.config = config, .config_len = clen};
    side.preprocessor = slurp("tests/data/golden/e2e_hf/preprocessor_config.json",
                              &side.preprocessor_len);
    vit_model *a = NULL, *b = NULL;
    vit_error err = {0};
    char path[4096];
    CHECK(weights && config && side.preprocessor);
    CHECKF(vit_model_load_memory(weights, wlen, &side, &a, &err) == VIT_OK, "%s", err.message);
    CHECKF(vit_model_load(test_path(path, sizeof path, "tests/data/golden/e2e_hf"), &b, &err) ==
               VIT_OK,
           "%s", err.message);
    if (a && b) {
        CHECK(memcmp(&a->cfg, &b->cfg, sizeof a->cfg) == 0 && a->layout == b->layout);
        CHECK(a->frozen_len == b->frozen_len && a->trainable_len == b->trainable_len);
        CHECK(memcmp(a->frozen, b->frozen, a->frozen_len * sizeof(float)) == 0);
        CHECK(memcmp(a->trainable, b->trainable, a->trainable_len * sizeof(float)) == 0);
        CHECK(a->labels && strcmp(a->labels[3], "rocket") == 0 && a->cfg.preprocess.std[0] < 0.3f);
    }
    vit_model_free(a);
    vit_model_free(b);
    a = NULL;
    CHECK(vit_model_load_memory(weights, wlen, NULL, &a, &err) == VIT_OK && a &&
          a->cfg.preprocess.std[0] == 0.5f); /* no side files: layout defaults */
    vit_model_free(a);
    a = (vit_model *)&side; /* must be reset to NULL on failure */
    CHECK(vit_model_load_memory(weights, wlen / 2, NULL, &a, &err) == VIT_ERR_FORMAT && !a);
    free(weights);
    free(config);
    free((char *)side.preprocessor);
}

/* ---- labels that cannot be shown as they are (issue 13, review item 10) ---- */

/* Loads dir's weights (e2e_timm or e2e_hf) with its config.json, where
 * `from` (which must occur) is replaced by `to`, and labels.txt `labels` (or
 * none); returns the status, the message in err. */
static vit_status load_edited(const char *dir, const char *from, const char *to,
                              const char *labels, vit_error *err)
{
    char rel[256];
    size_t wlen, clen;
    snprintf(rel, sizeof rel, "tests/data/golden/%s/model.safetensors", dir);
    char *weights = slurp(rel, &wlen);
    snprintf(rel, sizeof rel, "tests/data/golden/%s/config.json", dir);
    char *config = slurp(rel, &clen);
    VIT_ASSERT(weights && config);
    char *at = strstr(config, from), *edited = malloc(clen + strlen(to) + 1);
    VIT_ASSERT(at && edited);
    size_t head = (size_t)(at - config);
    memcpy(edited, config, head);
    strcpy(edited + head, to);
    strcat(edited + head, at + strlen(from));
    vit_side_files side = {.config = edited, .config_len = strlen(edited)};
    if (labels) /* read when config.json names no labels */
        side.labels = labels, side.labels_len = strlen(labels);
    vit_model *m = (vit_model *)&side; /* must be reset to NULL on failure */
    vit_status st = vit_model_load_memory(weights, wlen, &side, &m, err);
    if (st == VIT_OK)
        vit_model_free(m);
    else
        CHECK(m == NULL);
    free(weights);
    free(config);
    free(edited);
    return st;
}

static void test_labels(void)
{
    fprintf(stderr, "labels with control characters or invalid UTF-8\n");
    static const struct { const char *s; int bad; size_t at; } cases[] = {
        {"tench", 0, 0}, {"", 0, 0}, {"caf\xc3\xa9 cr\xc3\xa8me", 0, 0}, {"\xe7\x8c\xab", 0, 0},
        {"\xf0\x9f\x90\xb1 cat", 0, 0},     /* U+1F431: 4 bytes */
        {"a\xc2\xa0" "b", 0, 0},             /* U+00A0, just past C1 */
        {"\xef\xbf\xbd", 0, 0},              /* U+FFFD */
        {"\xf4\x8f\xbf\xbf", 0, 0},         /* U+10FFFF, the last code point */
        {"\xed\x9f\xbf", 0, 0},              /* U+D7FF, just below the surrogates */
        {"a\nb", 1, 1}, {"\x1b[31mred", 1, 0}, {"ab\x7f", 1, 2}, {"\t", 1, 0}, {"a\rb", 1, 1},
        {"x\xc2\x9b" "31m", 1, 1},           /* U+009B, a C1 CSI */
        {"\xc2\x80", 1, 0}, {"\xc2\x9f", 1, 0},  /* C1 ends */
        {"ab\xe2\x80\xa8", 1, 2},           /* U+2028 line separator */
        {"\xe2\x80\xa9", 1, 0}, {"\xe2\x80\xae" "gpj.exe", 1, 0}, /* U+2029, U+202E */
        {"\xe2\x80\xaa", 1, 0}, {"\xe2\x81\xa6", 1, 0}, {"\xe2\x81\xa9", 1, 0},
        {"caf\xe9", 2, 3},                     /* Latin-1 */
        {"\xc0\xaf", 2, 0}, {"\xc1\xbf", 2, 0}, {"\xe0\x80\xaf", 2, 0}, /* overlong */
        {"\xe0\x9f\xbf", 2, 0}, {"\xf0\x8f\xbf\xbf", 2, 0},          /* overlong */
        {"\xed\xa0\x80", 2, 0}, {"\xed\xbf\xbf", 2, 0},                /* surrogates */
        {"\xf4\x90\x80\x80", 2, 0}, {"\xf5\x80\x80\x80", 2, 0},      /* past U+10FFFF */
        {"ab\xe2\x82", 2, 2}, {"\xe2\x82x", 2, 0}, {"\xf0\x9f\x90", 2, 0}, /* cut short */
        {"\x80", 2, 0}, {"\xbf", 2, 0}, {"\xff", 2, 0}, {"\xfe", 2, 0},
    };
    int wrong = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t at = 99;
        const char *p = vit_label_problem(cases[i].s, strlen(cases[i].s), &at);
        const char *want = cases[i].bad == 0   ? NULL
                           : cases[i].bad == 1 ? "a control character"
                                               : "invalid UTF-8";
        if (!(want ? p && strcmp(p, want) == 0 && at == cases[i].at : !p)) {
            fprintf(stderr, "  case %zu: got %s at %zu, want %s at %zu\n", i, p ? p : "ok", at,
                    want ? want : "ok", cases[i].at);
            wrong++;
        }
    }
    CHECKF(wrong == 0, "%d of the vit_label_problem cases wrong", wrong);
    /* the length is honoured: a NUL inside counts, bytes past it do not */
    size_t at;
    CHECK(vit_label_problem("ab\0c", 4, &at) && at == 2);
    CHECK(vit_label_problem("ab\ncd", 2, &at) == NULL);

    /* every loader refuses them: config.json label_names (the review's
     * repro/model/evil_labels), id2label, labels.txt */
    vit_error err = {0};
    static const struct { const char *dir, *from, *to, *labels, *needle; } loads[] = {
        {"e2e_timm", "\"coffee\"", "\"Trouser\\n  0.0001  (spoofed line)\\u001b[31mRED\"", NULL,
         "label 1 has a control character at byte 7"},
        {"e2e_timm", "\"rocket\"", "\"rock\\u009bet\"", NULL,
         "label 3 has a control character at byte 4"},
        {"e2e_hf", "\"camera\"", "\"cam\\u001bera\"", NULL,
         "id2label entry 2 has a control character at byte 3"},
        {"e2e_hf", "\"id2label\"", "\"id2label_\"", "cat\ncoffee\ncam\x1b[2Jera\nrocket\n",
         "labels.txt: line 3 has a control character at byte 3"},
        {"e2e_hf", "\"id2label\"", "\"id2label_\"", "cat\ncoffee\ncamera\nrock\xe9t\n",
         "labels.txt: line 4 has invalid UTF-8 at byte 4"},
    };
    for (size_t i = 0; i < sizeof loads / sizeof loads[0]; i++) {
        vit_status st = load_edited(loads[i].dir, loads[i].from, loads[i].to, loads[i].labels, &err);
        fprintf(stderr, "  %s -> %s: %s\n", loads[i].needle, vit_status_name(st),
                st == VIT_OK ? "loaded" : err.message);
        CHECKF(st == VIT_ERR_FORMAT && strstr(err.message, loads[i].needle), "want \"%s\"",
               loads[i].needle);
    }
    /* and labels that are fine load */
    CHECKF(load_edited("e2e_timm", "\"coffee\"", "\"caf\\u00e9, cr\\u00e8me \xe2\x98\x95\"", NULL,
                       &err) == VIT_OK,
           "UTF-8 label: %s", err.message);
    CHECKF(load_edited("e2e_hf", "\"id2label\"", "\"id2label_\"", "cat\r\ncaf\xc3\xa9\n\ncamera\nrocket",
                       &err) == VIT_OK,
           "labels.txt: %s", err.message);

    /* vit_model_set_labels (the trainer names a head after class folders) */
    vit_config c;
    vit_model *m = NULL;
    CHECK(vit_config_preset("vit-tiny", &c, &err) == VIT_OK);
    c.num_classes = 2;
    CHECK(vit_model_create(&c, &m, &err) == VIT_OK);
    const char *good[] = {"a", "b"}, *bad[] = {"c", "\xff"};
    CHECK(vit_model_set_labels(m, good, &err) == VIT_OK);
    CHECKF(vit_model_set_labels(m, bad, &err) == VIT_ERR_INVALID &&
               strstr(err.message, "label 1 has invalid UTF-8"),
           "%s", err.message);
    CHECK(strcmp(m->labels[1], "b") == 0); /* left as it was */
    vit_model_free(m);
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
        /* float values: bounded before any float->int cast, and checked as the
         * floats the model will use (issue 13, items 3 and 4) */
        {"{\"pretrained_cfg\": {\"crop_pct\": 1e-30, \"vitfit_resize\": 36}}", VIT_ERR_INVALID,
         "crop_pct 1e-30 (resize overflows int) beside an explicit resize"},
        {"{\"pretrained_cfg\": {\"crop_pct\": 1e-30}}", VIT_ERR_INVALID, "crop_pct 1e-30"},
        {"{\"pretrained_cfg\": {\"crop_pct\": 0.003}}", VIT_ERR_INVALID, "crop_pct resizing past 8192"},
        {"{\"pretrained_cfg\": {\"crop_pct\": 5}}", VIT_ERR_INVALID, "crop_pct above 4"},
        {"{\"pretrained_cfg\": {\"crop_pct\": 0}}", VIT_ERR_INVALID, "crop_pct 0"},
        {"{\"model_args\": {\"img_size\": 2}, \"pretrained_cfg\": {\"crop_pct\": 4}}", VIT_ERR_INVALID,
         "crop_pct resizing to 0 pixels"},
        {"{\"pretrained_cfg\": {\"std\": [1e-45, 0.5, 0.5]}}", VIT_ERR_INVALID, "std subnormal as a float"},
        {"{\"pretrained_cfg\": {\"std\": [0.5, 1e-300, 0.5]}}", VIT_ERR_INVALID, "std 0 as a float"},
        {"{\"pretrained_cfg\": {\"std\": [0.5, 0.5, 1e300]}}", VIT_ERR_INVALID, "std beyond float"},
        {"{\"pretrained_cfg\": {\"std\": [1e30, 0.5, 0.5]}}", VIT_ERR_INVALID, "std 1e30"},
        {"{\"pretrained_cfg\": {\"std\": [0.5, -0.5, 0.5]}}", VIT_ERR_INVALID, "negative std"},
        {"{\"pretrained_cfg\": {\"mean\": [1e30, 0.5, 0.5]}}", VIT_ERR_INVALID, "mean 1e30"},
        {"{\"pretrained_cfg\": {\"mean\": [0.5, 1e300, 0.5]}}", VIT_ERR_INVALID, "mean beyond float"},
        {"{\"pretrained_cfg\": {\"mean\": [0.5, 0.5, \"x\"]}}", VIT_ERR_FORMAT, "mean not a number"},
        {"{\"model_args\": {\"norm_eps\": 1e-45}}", VIT_ERR_INVALID, "eps subnormal as a float"},
        {"{\"model_args\": {\"norm_eps\": 1e300}}", VIT_ERR_INVALID, "eps beyond float"},
        {"{\"hidden_size\": 64, \"layer_norm_eps\": 1e-300}", VIT_ERR_INVALID, "eps 0 as a float"},
        {"{\"hidden_size\": 64, \"layer_norm_eps\": 1}", VIT_ERR_INVALID, "eps 1"},
        {"{\"model_args\": {\"mlp_ratio\": 1e30}}", VIT_ERR_INVALID, "mlp_ratio 1e30"},
        {"{\"model_args\": {\"mlp_ratio\": 1e300}}", VIT_ERR_INVALID, "mlp_ratio beyond float"},
        {"{\"model_args\": {\"mlp_ratio\": -4}}", VIT_ERR_INVALID, "negative mlp_ratio"},
        /* an architecture far larger than the tensors: refused by comparing
         * with them, before any allocation (item 1) */
        {"{\"model_args\": {\"depth\": 256}}", VIT_ERR_NOT_FOUND, "256 blocks claimed, 2 stored"},
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

/* ---- hostile checkpoint directories ---- */

/* Under ASan, an allocation that cannot be satisfied returns NULL as malloc
 * does (instead of aborting), so the out-of-memory path is what gets tested;
 * under UBSan, undefined behaviour (a float->int overflow from a config value)
 * fails the test instead of printing a line. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}
const char *__ubsan_default_options(void);
const char *__ubsan_default_options(void)
{
    return "halt_on_error=1:print_stacktrace=1";
}

/* Caps the address space at its current size plus extra_mb, so that an
 * allocation too large for the machine fails the same way under every
 * overcommit setting. */
static void cap_address_space(long extra_mb)
{
    FILE *fp = fopen("/proc/self/status", "r");
    char line[256];
    long vm_kb = -1;
    while (fp && fgets(line, sizeof line, fp))
        if (sscanf(line, "VmSize: %ld kB", &vm_kb) == 1)
            break;
    if (fp)
        fclose(fp);
    if (vm_kb > 0) {
        struct rlimit rl;
        getrlimit(RLIMIT_AS, &rl);
        rl.rlim_cur = (rlim_t)(vm_kb + extra_mb * 1024) * 1024;
        setrlimit(RLIMIT_AS, &rl);
    }
}

/* Runs fn(arg) in a child process and returns its exit code, or -1 when the
 * child did not exit by itself.  The alarm is only a safety net for a call
 * that would block forever (a FIFO): the test then fails instead of hanging;
 * what is asserted is the status the child returns.  as_extra_mb > 0 caps
 * the child's address space (cap_address_space). */
static int run_in_child(int (*fn)(const void *), const void *arg, long as_extra_mb)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(20);
        if (as_extra_mb > 0)
            cap_address_space(as_extra_mb);
        int code = fn(arg);
        fflush(stderr);
        _exit(code);
    }
    int wstatus = 0;
    if (pid < 0 || waitpid(pid, &wstatus, 0) != pid)
        return -1;
    if (WIFSIGNALED(wstatus))
        fprintf(stderr, "  child killed by signal %d%s\n", WTERMSIG(wstatus),
                WTERMSIG(wstatus) == SIGALRM ? " (it blocked)" : "");
    return WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
}

/* Child: loads the checkpoint at path and returns the status. */
static int child_load(const void *path)
{
    vit_error err = {0};
    vit_model *m = NULL;
    vit_status st = vit_model_load(path, &m, &err);
    fprintf(stderr, "  -> %s: %s\n", vit_status_name(st), st == VIT_OK ? "loaded" : err.message);
    vit_model_free(m);
    return (int)st;
}

/* Loads path in a child and expects status want. */
static void expect_child_load(const char *path, vit_status want, const char *what,
                              long as_extra_mb)
{
    fprintf(stderr, "  %s\n", what);
    int got = run_in_child(child_load, path, as_extra_mb);
    CHECKF(got == (int)want, "%s: got %s, want %s", what,
           got < 0 ? "no exit (hung or crashed)" : vit_status_name((vit_status)got),
           vit_status_name(want));
}

static void write_file(const char *path, const char *data, size_t len)
{
    FILE *fp = fopen(path, "wb");
    CHECK(fp != NULL);
    if (fp) {
        CHECK(fwrite(data, 1, len, fp) == len);
        fclose(fp);
    }
}

/* A sparse file of len bytes: cheap to make, large to read. */
static void write_sparse(const char *path, off_t len)
{
    FILE *fp = fopen(path, "wb");
    CHECK(fp && ftruncate(fileno(fp), len) == 0);
    if (fp)
        fclose(fp);
}

/* Side files that are not regular files, too large, or malformed must give a
 * prompt error (issue 13, item 2): a FIFO or /dev/zero used to block or loop
 * forever, NUL bytes and blank lines slipped past the labels cap, and an
 * over-long label line was split in two. */
static void test_hostile_files(void)
{
    fprintf(stderr, "hostile checkpoint directories\n");
    char tmpl[] = "/tmp/vitfit_hostile_XXXXXX";
    char *dir = mkdtemp(tmpl);
    CHECK(dir != NULL);
    if (!dir)
        return;
    char model[4096], cfg[4096], pre[4096], labels[4096];
    snprintf(model, sizeof model, "%s/model.safetensors", dir);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    snprintf(pre, sizeof pre, "%s/preprocessor_config.json", dir);
    snprintf(labels, sizeof labels, "%s/labels.txt", dir);
    write_variant(model, NULL, NULL); /* tiny timm weights, 10 classes, no config */

    static const struct { const char *name; } side[] = {
        {"config.json"}, {"preprocessor_config.json"}, {"labels.txt"},
    };
    for (size_t i = 0; i < sizeof side / sizeof side[0]; i++) {
        char path[4096], what[128];
        snprintf(path, sizeof path, "%s/%s", dir, side[i].name);
        CHECK(mkfifo(path, 0600) == 0);
        snprintf(what, sizeof what, "%s is a FIFO", side[i].name);
        expect_child_load(dir, VIT_ERR_IO, what, 0);
        unlink(path);
        CHECK(symlink("/dev/zero", path) == 0);
        snprintf(what, sizeof what, "%s -> /dev/zero", side[i].name);
        expect_child_load(dir, VIT_ERR_IO, what, 0);
        unlink(path);
        CHECK(mkdir(path, 0700) == 0);
        snprintf(what, sizeof what, "%s is a directory", side[i].name);
        expect_child_load(dir, VIT_ERR_IO, what, 0);
        rmdir(path);
    }
    write_sparse(cfg, ((off_t)16 << 20) + 1);
    expect_child_load(dir, VIT_ERR_TOO_LARGE, "config.json of 16 MiB + 1", 0);
    unlink(cfg);
    write_sparse(pre, ((off_t)16 << 20) + 1);
    expect_child_load(dir, VIT_ERR_TOO_LARGE, "preprocessor_config.json of 16 MiB + 1", 0);
    unlink(pre);
    write_sparse(labels, ((off_t)64 << 20) + 1);
    expect_child_load(dir, VIT_ERR_TOO_LARGE, "labels.txt of 64 MiB + 1", 0);

    /* 8 labels and one of 5000 bytes: the old reader split it into two and
     * loaded 10 labels for the 10 classes without a word */
    char text[6000];
    size_t n = 0;
    for (int k = 0; k < 8; k++)
        n += (size_t)snprintf(text + n, sizeof text - n, "label %d\n", k);
    memset(text + n, 'x', 5000);
    n += 5000;
    text[n++] = '\n';
    write_file(labels, text, n);
    expect_child_load(dir, VIT_ERR_FORMAT, "labels.txt line of 5000 bytes", 0);
    write_file(labels, "a\nb\0c\nd\n", 8);
    expect_child_load(dir, VIT_ERR_FORMAT, "labels.txt with a NUL byte", 0);
    write_file(labels, "0\n1\n2\n3\n4\n5\n6\n7\n8\ncaf\xe9\n", 22);
    expect_child_load(dir, VIT_ERR_FORMAT, "labels.txt in Latin-1", 0);
    /* the label count at its edge: 1000000 lines parse (and then disagree
     * with the 10-class head), 1000001 are refused while parsing */
    {
        size_t lines = 1000001;
        char *many = malloc(2 * lines);
        VIT_ASSERT(many);
        for (size_t i = 0; i < lines; i++)
            many[2 * i] = 'a', many[2 * i + 1] = '\n';
        write_file(labels, many, 2 * (lines - 1));
        expect_child_load(dir, VIT_ERR_MISMATCH, "labels.txt of 1000000 labels", 0);
        write_file(labels, many, 2 * lines);
        expect_child_load(dir, VIT_ERR_TOO_LARGE, "labels.txt of 1000001 labels", 0);
        free(many);
    }
    /* a side file longer than fstat said (it grew while read; /proc files
     * report 0 bytes): refused, not read on */
    unlink(labels);
    if (symlink("/proc/self/status", labels) == 0) {
        expect_child_load(dir, VIT_ERR_IO, "labels.txt -> /proc/self/status (size 0, not empty)",
                          0);
        unlink(labels);
    }
    /* 4095 bytes, CRLF ends, blank lines and no final newline are fine */
    n = 0;
    for (int k = 0; k < 9; k++)
        n += (size_t)snprintf(text + n, sizeof text - n, "label %d\r\n\n", k);
    memset(text + n, 'y', 4095);
    n += 4095;
    write_file(labels, text, n);
    vit_error err = {0};
    vit_model *m = NULL;
    CHECKF(vit_model_load(dir, &m, &err) == VIT_OK, "labels.txt edge cases: %s", err.message);
    if (m) {
        CHECK(strcmp(m->labels[0], "label 0") == 0 && strcmp(m->labels[8], "label 8") == 0);
        CHECK(strlen(m->labels[9]) == 4095 && m->labels[9][0] == 'y');
    }
    vit_model_free(m);
    unlink(labels);

    /* a config.json claiming a huge architecture is compared with the small
     * tensors before anything is allocated: in a child whose address space
     * is capped 512 MiB above its size, the claim must be refused as a
     * mismatch; trying the arenas first fails with out of memory (and the old
     * code then read the freed model: issue 13, item 1) */
    static const char huge[] = "{\"hidden_size\": 8192, \"num_hidden_layers\": 256, "
                               "\"num_attention_heads\": 64, \"intermediate_size\": 65536, "
                               "\"image_size\": 224, \"patch_size\": 16}";
    write_file(cfg, huge, sizeof huge - 1);
    expect_child_load(dir, VIT_ERR_MISMATCH, "config.json claiming 3.5e11 parameters", 512);
    /* the same claim at 4096 px asks 1.9 GB of activations per image: refused
     * by the config check itself, before the tensors are even compared */
    static const char wide[] = "{\"hidden_size\": 8192, \"num_hidden_layers\": 256, "
                               "\"num_attention_heads\": 64, \"intermediate_size\": 65536, "
                               "\"image_size\": 4096, \"patch_size\": 64}";
    write_file(cfg, wide, sizeof wide - 1);
    expect_child_load(dir, VIT_ERR_TOO_LARGE, "config.json claiming 4096 px, width 8192", 512);
    unlink(cfg);

    /* the weights file itself */
    unlink(model);
    CHECK(mkfifo(model, 0600) == 0);
    expect_child_load(dir, VIT_ERR_IO, "model.safetensors is a FIFO", 0);
    expect_child_load(model, VIT_ERR_IO, "a FIFO given as the model file", 0);
    unlink(model);
    CHECK(symlink("/dev/zero", model) == 0);
    expect_child_load(dir, VIT_ERR_IO, "model.safetensors -> /dev/zero", 0);
    unlink(model);
    CHECK(rmdir(dir) == 0);
}

/* HF preprocessor_config.json forms on the 32 px tiny timm weights: what
 * torchvision-style preprocessing can express is read exactly, the rest is
 * refused (the end-to-end golden e2e_hf covers the common form). */
static void test_preprocessor_config(void)
{
    fprintf(stderr, "preprocessor_config.json\n");
    char tmpl[] = "/tmp/vitfit_pre_XXXXXX";
    char *dir = mkdtemp(tmpl);
    CHECK(dir != NULL);
    if (!dir)
        return;
    char model[4096], pre[4096];
    snprintf(model, sizeof model, "%s/model.safetensors", dir);
    snprintf(pre, sizeof pre, "%s/preprocessor_config.json", dir);
    write_variant(model, NULL, NULL);
    static const struct {
        const char *json;
        vit_status want;
        int resize;         /* expected resize_shorter when OK */
        img_interp interp;
        float std0;
    } cases[] = {
        {"{\"size\": {\"height\": 32, \"width\": 32}, \"resample\": 2, \"image_std\": 0.25}",
         VIT_OK, 0, IMG_BILINEAR, 0.25f},
        {"{\"size\": 32, \"resample\": 3, \"image_mean\": [0.1, 0.2, 0.3], "
         "\"image_std\": [0.2, 0.3, 0.4]}", VIT_OK, 0, IMG_BICUBIC, 0.2f},
        {"{\"size\": {\"shortest_edge\": 36}, \"do_center_crop\": true, "
         "\"crop_size\": {\"height\": 32, \"width\": 32}, \"resample\": 3}", VIT_OK, 36,
         IMG_BICUBIC, 0.5f},
        {"{\"image_processor_type\": \"CLIPImageProcessor\", \"size\": 40, "
         "\"do_center_crop\": true, \"crop_size\": 32}", VIT_OK, 40, IMG_BICUBIC, 0.5f},
        {"{\"size\": 32, \"do_normalize\": false}", VIT_OK, 0, IMG_BICUBIC, 1.0f},
        {"{\"size\": {\"height\": 40, \"width\": 32}}", VIT_ERR_INVALID, 0, IMG_BILINEAR, 0},
        {"{\"size\": 40}", VIT_ERR_UNSUPPORTED, 0, IMG_BILINEAR, 0},
        {"{\"size\": 40, \"do_center_crop\": true, \"crop_size\": 32}", VIT_ERR_UNSUPPORTED, 0,
         IMG_BILINEAR, 0},
        {"{\"size\": {\"shortest_edge\": 36}, \"do_center_crop\": true, \"crop_size\": 28}",
         VIT_ERR_MISMATCH, 0, IMG_BILINEAR, 0},
        {"{\"size\": {\"shortest_edge\": 9000}, \"do_center_crop\": true}", VIT_ERR_INVALID, 0,
         IMG_BILINEAR, 0},
        {"{\"resample\": 1}", VIT_ERR_UNSUPPORTED, 0, IMG_BILINEAR, 0},
        {"{\"do_rescale\": false}", VIT_ERR_UNSUPPORTED, 0, IMG_BILINEAR, 0},
        {"{\"rescale_factor\": 0.5}", VIT_ERR_UNSUPPORTED, 0, IMG_BILINEAR, 0},
        {"{\"image_std\": [0.5, 0, 0.5]}", VIT_ERR_INVALID, 0, IMG_BILINEAR, 0},
        {"{\"image_std\": [0.5, 1e-45, 0.5]}", VIT_ERR_INVALID, 0, IMG_BILINEAR, 0},
        {"{\"image_mean\": [0.5, 0.5]}", VIT_ERR_FORMAT, 0, IMG_BILINEAR, 0},
        {"{\"do_resize\": \"yes\"}", VIT_ERR_FORMAT, 0, IMG_BILINEAR, 0},
        {"[]", VIT_ERR_FORMAT, 0, IMG_BILINEAR, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_file(pre, cases[i].json, strlen(cases[i].json));
        vit_error err = {0};
        vit_model *m = NULL;
        vit_status st = vit_model_load(dir, &m, &err);
        fprintf(stderr, "  %s -> %s\n", cases[i].json, st == VIT_OK ? "ok" : err.message);
        CHECKF(st == cases[i].want, "%s: got %s", cases[i].json, vit_status_name(st));
        if (m && st == VIT_OK) {
            const img_preprocess *p = &m->cfg.preprocess;
            CHECKF(p->resize_shorter == cases[i].resize && p->interp == cases[i].interp &&
                       p->crop_h == 32 && p->crop_w == 32 && p->std[0] == cases[i].std0 &&
                       p->std[2] == (i == 1 ? 0.4f : cases[i].std0),
                   "%s: resize %d interp %d crop %dx%d std %g", cases[i].json,
                   p->resize_shorter, (int)p->interp, p->crop_w, p->crop_h, (double)p->std[0]);
        }
        vit_model_free(m);
    }
    unlink(pre);
    unlink(model);
    CHECK(rmdir(dir) == 0);
}

/* ---- what a forward state may cost (issue 13: tiny checkpoint, huge state) ---- */

/* A config of width 1 whose activations are large: 1024 px in 16 px patches
 * (N = 4097 tokens) and an MLP of `mlp`; its weights take a few hundred KB. */
static vit_config wide_state_config(int image, int patch, int mlp)
{
    vit_config c;
    vit_error err;
    VIT_ASSERT(vit_config_preset("vit-tiny", &c, &err) == VIT_OK);
    c.width = 1, c.heads = 1, c.depth = 1, c.mlp_dim = mlp, c.num_classes = 2;
    c.image_size = image, c.patch_size = patch;
    c.preprocess = img_preprocess_timm_in21k(image);
    return c;
}

/* The review's checkpoint (repro/model/gen_tiny_huge_state.py): width 1,
 * 64 x 64 patches of 64 px (4097 tokens), an MLP of 65536, every tensor
 * present with the right shape.  Serialized into *len bytes (caller frees). */
static void *tiny_huge_state_weights(size_t *len)
{
    static const struct { const char *name; int ndim; int64_t shape[4]; float value; } t[] = {
        {"patch_embed.proj.weight", 4, {1, 3, 64, 64}, 0}, {"patch_embed.proj.bias", 1, {1}, 0},
        {"cls_token", 3, {1, 1, 1}, 0}, {"pos_embed", 3, {1, 4097, 1}, 0},
        {"blocks.0.norm1.weight", 1, {1}, 1}, {"blocks.0.norm1.bias", 1, {1}, 0},
        {"blocks.0.attn.qkv.weight", 2, {3, 1}, 0}, {"blocks.0.attn.qkv.bias", 1, {3}, 0},
        {"blocks.0.attn.proj.weight", 2, {1, 1}, 0}, {"blocks.0.attn.proj.bias", 1, {1}, 0},
        {"blocks.0.norm2.weight", 1, {1}, 1}, {"blocks.0.norm2.bias", 1, {1}, 0},
        {"blocks.0.mlp.fc1.weight", 2, {65536, 1}, 0}, {"blocks.0.mlp.fc1.bias", 1, {65536}, 0},
        {"blocks.0.mlp.fc2.weight", 2, {1, 65536}, 0}, {"blocks.0.mlp.fc2.bias", 1, {1}, 0},
        {"norm.weight", 1, {1}, 1}, {"norm.bias", 1, {1}, 0},
        {"head.weight", 2, {2, 1}, 0}, {"head.bias", 1, {2}, 0},
    };
    vit_error err;
    st_writer *w = st_writer_create();
    float *buf = malloc(65536 * sizeof *buf);
    VIT_ASSERT(w && buf);
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        size_t n = 1;
        for (int d = 0; d < t[i].ndim; d++)
            n *= (size_t)t[i].shape[d];
        for (size_t j = 0; j < n; j++)
            buf[j] = t[i].value;
        VIT_ASSERT(st_writer_add_f32(w, t[i].name, t[i].ndim, t[i].shape, buf, &err) == VIT_OK);
    }
    void *out;
    VIT_ASSERT(st_writer_serialize(w, &out, len, &err) == VIT_OK);
    st_writer_free(w);
    free(buf);
    return out;
}

/* The activation cap of vit_config_validate and the state budget of
 * vit_state_bytes / vit_state_create_path.  Before them, 428 KB of weights
 * made `classify` take 1.5 GB per image, and a state of any size was
 * attempted. */
static void test_state_budget(void)
{
    fprintf(stderr, "forward state budget\n");
    vit_config c;
    vit_error err = {0};

    /* ViT-B/16 at 224, by hand: N = 197, C = 768, M = 3072, P = 16, F = C:
     * 197 * (6*768 + 3072) + 196 * (3*256 + 768) + 3*768 = 1816320 floats */
    CHECK(vit_config_preset("vit-b16", &c, &err) == VIT_OK);
    CHECKF(vit_config_image_bytes(&c) == 4 * (size_t)1816320, "ViT-B/16: %zu bytes per image",
           vit_config_image_bytes(&c));
    /* real models pass with room: ViT-L/14 at 336 px, ViT-H/14 at 224 px */
    CHECK(vit_config_preset("vit-l14-clip", &c, &err) == VIT_OK);
    c.image_size = 336;
    c.preprocess = img_preprocess_clip(336);
    CHECKF(vit_config_validate(&c, &err) == VIT_OK, "ViT-L/14 at 336: %s", err.message);
    fprintf(stderr, "  ViT-L/14 at 336 px: %zu bytes per image\n", vit_config_image_bytes(&c));
    c.image_size = 224, c.width = 1280, c.heads = 16, c.mlp_dim = 5120, c.depth = 32;
    c.preprocess = img_preprocess_clip(224);
    CHECKF(vit_config_validate(&c, &err) == VIT_OK, "ViT-H/14 at 224: %s", err.message);
    fprintf(stderr, "  ViT-H/14 at 224 px: %zu bytes per image\n", vit_config_image_bytes(&c));

    /* the review's config: 1.3 GiB per image */
    c = wide_state_config(4096, 64, 65536);
    vit_status st = vit_config_validate(&c, &err);
    fprintf(stderr, "  width 1, 4097 tokens, MLP 65536 -> %s: %s\n", vit_status_name(st),
            err.message);
    CHECK(st == VIT_ERR_TOO_LARGE && strstr(err.message, "per image"));

    /* the boundary, attention matrix included: with N = 4097, C = 1, P = 16
     * the bytes are 4 * (4097 (6 + M) + 4096 * 769 + 3) + 4 * 4097^2
     * = 16388 M + 79839272, which is <= 256 MiB up to M = 11508 */
    c = wide_state_config(1024, 16, 11508);
    CHECKF(vit_config_validate(&c, &err) == VIT_OK, "M = 11508: %s", err.message);
    CHECK((size_t)16388 * 11508 + 79839272 <= VIT_MAX_IMAGE_BYTES);
    c = wide_state_config(1024, 16, 11509);
    CHECK(vit_config_validate(&c, &err) == VIT_ERR_TOO_LARGE);

    /* the review's checkpoint: every tensor is there with the right shape,
     * so only the activation check can refuse it */
    size_t len;
    void *weights = tiny_huge_state_weights(&len);
    vit_model *m = (vit_model *)&c;
    st = vit_model_load_memory(weights, len, NULL, &m, &err);
    fprintf(stderr, "  the %zu-byte checkpoint -> %s: %s\n", len, vit_status_name(st),
            st == VIT_OK ? "loaded" : err.message);
    CHECK(st == VIT_ERR_TOO_LARGE && m == NULL);
    vit_model_free(st == VIT_OK ? m : NULL);
    free(weights);

    /* vit_state_bytes: max_batch images plus scratch that does not grow */
    CHECK(vit_config_preset("vit-tiny", &c, &err) == VIT_OK);
    CHECK(vit_model_create(&c, &m, &err) == VIT_OK);
    size_t one = 0, two = 0, image = vit_config_image_bytes(&c);
    size_t n_tok = (size_t)vit_config_tokens(&c);
    CHECK(vit_state_bytes(m, 1, 1, VIT_PATH_PORTABLE, &one, &err) == VIT_OK);
    CHECK(vit_state_bytes(m, 2, 1, VIT_PATH_PORTABLE, &two, &err) == VIT_OK);
    fprintf(stderr, "  vit-tiny: %zu bytes per image, state %zu (batch 1), %zu (batch 2)\n",
            image, one, two);
    CHECK(one >= image + n_tok * n_tok * sizeof(float));
    /* each of 13 buffers rounds to 16 floats: at most 15 floats each either way */
    CHECKF(two - one + 13 * 15 * 4 >= image && two - one <= image + 13 * 15 * 4,
           "batch 2 - batch 1 = %zu bytes, per image %zu", two - one, image);
    CHECK(vit_state_bytes(m, 0, 1, VIT_PATH_PORTABLE, &one, &err) == VIT_ERR_INVALID);
    CHECK(vit_state_bytes(m, 1, 65, VIT_PATH_AUTO, &one, &err) == VIT_ERR_INVALID);
    vit_model_free(m);

    /* a state too large for any machine is refused before it is allocated
     * (the old code asked the allocator for 770 GB) */
    c = wide_state_config(1024, 16, 11508);
    CHECK(vit_model_create(&c, &m, &err) == VIT_OK);
    image = vit_config_image_bytes(&c);
    size_t asked = 0;
    CHECK(vit_state_bytes(m, 4096, 1, VIT_PATH_PORTABLE, &asked, &err) == VIT_ERR_TOO_LARGE);
    CHECKF(asked >= 4096 * image && asked > VIT_MAX_STATE_BYTES, "asked %zu", asked);
    vit_state *s = (vit_state *)&c; /* must be reset to NULL on failure */
    st = vit_state_create_path(m, 4096, 1, VIT_PATH_PORTABLE, &s, &err);
    fprintf(stderr, "  batch 4096 of %zu bytes per image -> %s: %s\n", image,
            vit_status_name(st), err.message);
    char per[64];
    snprintf(per, sizeof per, "(%zu per image)", image);
    CHECKF(st == VIT_ERR_TOO_LARGE && s == NULL && strstr(err.message, per),
           "want TOO_LARGE naming \"%s\"", per);
    if (st == VIT_OK)
        vit_state_free(s);
    /* around the limit, the status follows the bytes */
    int bad = 0, last_ok = 0;
    for (int b = 300; b <= 400; b++) {
        size_t bytes = 0;
        vit_status got = vit_state_bytes(m, b, 1, VIT_PATH_PORTABLE, &bytes, &err);
        bad += got != (bytes <= VIT_MAX_STATE_BYTES ? VIT_OK : VIT_ERR_TOO_LARGE);
        if (got == VIT_OK)
            last_ok = b;
    }
    CHECKF(bad == 0 && last_ok > 300 && last_ok < 400, "%d disagreements, last ok batch %d", bad,
           last_ok);
    vit_model_free(m);
}

/* The largest config vit_config_validate allows at 224 px (~3.5e11
 * parameters, 1.4 TB) cannot be allocated: vit_model_create must say so and
 * return nothing.  (At 4096 px the activations are refused first.) */
static int child_create_huge(const void *unused)
{
    (void)unused;
    vit_config c;
    vit_error err = {0};
    vit_config_preset("vit-tiny", &c, &err);
    c.width = 8192, c.depth = 256, c.heads = 64, c.mlp_dim = 65536;
    c.image_size = 224, c.patch_size = 16, c.num_classes = 1000000;
    c.preprocess.crop_h = c.preprocess.crop_w = 224;
    c.preprocess.resize_shorter = 256;
    vit_model *m = NULL;
    vit_status st = vit_model_create(&c, &m, &err);
    fprintf(stderr, "  -> %s: %s\n", vit_status_name(st), err.message);
    if (st == VIT_ERR_NOMEM && (m != NULL || !strstr(err.message, "out of memory allocating")))
        return 100;
    vit_model_free(m);
    return (int)st;
}

static void test_create_nomem(void)
{
    fprintf(stderr, "vit_model_create out of memory\n");
    int got = run_in_child(child_create_huge, NULL, 512);
    CHECKF(got == VIT_ERR_NOMEM, "huge vit_model_create: child returned %d", got);
}

static void test_config(void)
{
    vit_config c;
    vit_error err = {0};
    CHECK(vit_config_preset("vit-b16", &c, &err) == VIT_OK);
    CHECKF(fabs(vit_config_macs(&c) - 17.58e9) < 0.05e9, "ViT-B/16 MACs %.4g", vit_config_macs(&c));
    CHECKF(fabs(vit_config_forward_macs(&c) - 16.48e9) < 0.01e9, "ViT-B/16 forward MACs %.4g",
           vit_config_forward_macs(&c)); /* the last block's class row past its keys and values */
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

    /* the resize bound at its edge (configs given through the API) */
    CHECK(vit_config_preset("vit-tiny", &c, &err) == VIT_OK);
    c.preprocess.resize_shorter = 8192;
    CHECKF(vit_config_validate(&c, &err) == VIT_OK, "resize 8192: %s", err.message);
    c.preprocess.resize_shorter = 8193;
    CHECK(vit_config_validate(&c, &err) == VIT_ERR_INVALID && strstr(err.message, "resize"));
    c.preprocess.resize_shorter = -1;
    CHECK(vit_config_validate(&c, &err) == VIT_ERR_INVALID);

    /* the patch grid at its edge: 64 x 64 patches, not 65 x 65 (vit-tiny's
     * width 64 stays well inside the activation cap at both: only the grid
     * bound refuses the second) */
    CHECK(vit_config_preset("vit-tiny", &c, &err) == VIT_OK);
    c.patch_size = 16, c.image_size = 1024;
    c.preprocess = img_preprocess_timm_in21k(1024);
    CHECKF(vit_config_validate(&c, &err) == VIT_OK, "64x64 patches: %s", err.message);
    c.image_size = 1040;
    c.preprocess = img_preprocess_timm_in21k(1040);
    CHECK(vit_config_image_bytes(&c) + 4 * (size_t)4226 * 4226 < VIT_MAX_IMAGE_BYTES);
    CHECKF(vit_config_validate(&c, &err) == VIT_ERR_INVALID && strstr(err.message, "64x64"),
           "65x65 patches: %s", err.message);
}

/* A timm checkpoint of config c (canonical names, randinit values),
 * serialized into *len bytes (caller frees). */
static void *config_weights(const vit_config *c, size_t *len)
{
    vit_error err;
    vit_model *m = NULL;
    VIT_ASSERT(vit_model_create(c, &m, &err) == VIT_OK);
    vit_model_randomize(m, 5);
    st_writer *w = st_writer_create();
    VIT_ASSERT(w);
    for (size_t i = 0; i < m->num_params; i++) {
        const vit_param *p = &m->params[i];
        VIT_ASSERT(st_writer_add_f32(w, p->name, p->ndim, p->shape, p->data, &err) == VIT_OK);
    }
    void *out;
    VIT_ASSERT(st_writer_serialize(w, &out, len, &err) == VIT_OK);
    st_writer_free(w);
    vit_model_free(m);
    return out;
}

/* ---- the hub's forms: HF CLIPModel and timm's label names (issue 11) ---- */

/* A tiny CLIP-shaped model in HF CLIPModel's names (ref: transformers
 * modeling_clip.py and convert_clip_original_pytorch_to_hf.py): q/k/v apart,
 * "pre_layrnorm", visual_projection (D, C), and a text tower beside it that
 * the loader must not read.  Serialized into *len bytes (caller frees). */
static void *hf_clip_weights(const vit_model *m, size_t *len)
{
    static const char *const rename[][2] = {
        {"patch_embed.proj.weight", "vision_model.embeddings.patch_embedding.weight"},
        {"cls_token", "vision_model.embeddings.class_embedding"},
        {"pos_embed", "vision_model.embeddings.position_embedding.weight"},
        {"norm_pre.", "vision_model.pre_layrnorm."},
        {"norm.", "vision_model.post_layernorm."},
        {"proj.weight", "visual_projection.weight"},
    };
    static const char *const block[][2] = {
        {"norm1", "layer_norm1"}, {"norm2", "layer_norm2"}, {"attn.proj", "self_attn.out_proj"},
        {"mlp.fc1", "mlp.fc1"},   {"mlp.fc2", "mlp.fc2"},
    };
    vit_error err;
    st_writer *w = st_writer_create();
    VIT_ASSERT(w);
    int64_t C = m->cfg.width;
    for (size_t i = 0; i < m->num_params; i++) {
        const vit_param *p = &m->params[i];
        char name[160] = "";
        int b, n = 0;
        if (sscanf(p->name, "blocks.%d.%n", &b, &n) == 1 && n > 0) {
            const char *rest = p->name + n;
            if (strncmp(rest, "attn.qkv.", 9) == 0) { /* three tensors of C rows */
                static const char *const qkv[] = {"q_proj", "k_proj", "v_proj"};
                for (int t = 0; t < 3; t++) {
                    snprintf(name, sizeof name, "vision_model.encoder.layers.%d.self_attn.%s.%s",
                             b, qkv[t], rest + 9);
                    int64_t shape[2] = {C, C};
                    VIT_ASSERT(st_writer_add_f32(w, name, p->ndim, shape,
                                                 p->data + (size_t)t * p->numel / 3,
                                                 &err) == VIT_OK);
                }
                continue;
            }
            for (size_t k = 0; k < sizeof block / sizeof block[0]; k++)
                if (strncmp(rest, block[k][0], strlen(block[k][0])) == 0 &&
                    rest[strlen(block[k][0])] == '.')
                    snprintf(name, sizeof name, "vision_model.encoder.layers.%d.%s%s", b,
                             block[k][1], rest + strlen(block[k][0]));
        } else {
            for (size_t k = 0; k < sizeof rename / sizeof rename[0]; k++)
                if (strncmp(p->name, rename[k][0], strlen(rename[k][0])) == 0)
                    snprintf(name, sizeof name, "%s%s", rename[k][1],
                             p->name + strlen(rename[k][0]));
        }
        VIT_ASSERT(name[0]);
        VIT_ASSERT(st_writer_add_f32(w, name, p->ndim, p->shape, p->data, &err) == VIT_OK);
    }
    float text[16] = {0};
    int64_t ts[2] = {4, 4};
    VIT_ASSERT(st_writer_add_f32(w, "text_model.embeddings.token_embedding.weight", 2, ts, text,
                                 &err) == VIT_OK);
    VIT_ASSERT(st_writer_add_f32(w, "text_projection.weight", 2, ts, text, &err) == VIT_OK);
    void *out;
    VIT_ASSERT(st_writer_serialize(w, &out, len, &err) == VIT_OK);
    st_writer_free(w);
    return out;
}

static void test_hub_forms(void)
{
    fprintf(stderr, "HF CLIPModel checkpoints; timm's label_names and label_descriptions\n");
    vit_config c;
    vit_error err = {0};
    CHECK(vit_config_preset("vit-tiny", &c, &err) == VIT_OK);
    c.num_classes = 0;
    c.proj_dim = 16;
    c.ln_pre = true;
    c.patch_bias = false;
    c.act = VIT_ACT_QUICK_GELU;
    c.ln_eps = 1e-5f;
    c.heads = 2; /* not 64-wide: only the config can say so */
    c.preprocess = img_preprocess_clip(32);
    vit_model *m = NULL, *got = NULL;
    CHECK(vit_model_create(&c, &m, &err) == VIT_OK);
    vit_model_randomize(m, 9);
    size_t len;
    void *weights = hf_clip_weights(m, &len);
    static const char config[] =
        "{\"architectures\": [\"CLIPModel\"], \"projection_dim\": 16,"
        " \"text_config\": {\"hidden_size\": 4, \"num_attention_heads\": 1},"
        " \"vision_config\": {\"hidden_size\": 64, \"intermediate_size\": 256,"
        " \"num_attention_heads\": 2, \"num_hidden_layers\": 2, \"patch_size\": 8,"
        " \"image_size\": 32, \"hidden_act\": \"quick_gelu\", \"layer_norm_eps\": 1e-05,"
        " \"id2label\": {\"0\": \"LABEL_0\", \"1\": \"LABEL_1\"}}}";
    static const char pre[] =
        "{\"crop_size\": 32, \"do_center_crop\": true, \"do_normalize\": true,"
        " \"do_resize\": true, \"feature_extractor_type\": \"CLIPFeatureExtractor\","
        " \"image_mean\": [0.48145466, 0.4578275, 0.40821073],"
        " \"image_std\": [0.26862954, 0.26130258, 0.27577711], \"resample\": 3, \"size\": 32}";
    vit_side_files side = {.config = config, .config_len = strlen(config), .preprocessor = pre,
                           .preprocessor_len = strlen(pre)};
    CHECKF(vit_model_load_memory(weights, len, &side, &got, &err) == VIT_OK, "%s", err.message);
    if (got) {
        CHECKF(got->layout == VIT_LAYOUT_HF_CLIP && strcmp(vit_layout_name(got->layout),
                                                           "hf-clip") == 0, "layout %s",
               vit_layout_name(got->layout));
        CHECKF(vit_config_equal(&got->cfg, &m->cfg), "heads %d eps %g act %d proj %d resize %d",
               got->cfg.heads, (double)got->cfg.ln_eps, got->cfg.act, got->cfg.proj_dim,
               got->cfg.preprocess.resize_shorter);
        CHECK(got->labels == NULL); /* vision_config's id2label is not a head's */
        CHECK(got->frozen_len == m->frozen_len && got->trainable_len == m->trainable_len &&
              memcmp(got->frozen, m->frozen, m->frozen_len * sizeof(float)) == 0 &&
              memcmp(got->trainable, m->trainable, m->trainable_len * sizeof(float)) == 0);
    }
    vit_model_free(got);
    got = NULL;
    /* a bad vision_config value is named with where it is */
    static const char bad[] = "{\"vision_config\": {\"num_attention_heads\": \"two\"}}";
    side.config = bad;
    side.config_len = strlen(bad);
    CHECKF(vit_model_load_memory(weights, len, &side, &got, &err) == VIT_ERR_FORMAT &&
               strstr(err.message, "vision_config") && strstr(err.message, "num_attention_heads"),
           "%s", err.message);
    free(weights);
    vit_model_free(m);

    /* timm: label_names as a list or an id -> name dict; label_descriptions name them */
    CHECK(vit_config_preset("vit-tiny", &c, &err) == VIT_OK);
    c.num_classes = 3;
    weights = config_weights(&c, &len);
    static const struct { const char *config; vit_status want; const char *label1; } cases[] = {
        {"{\"architecture\": \"vit_tiny\", \"label_names\": [\"n1\", \"n2\", \"n3\"],"
         " \"label_descriptions\": {\"n1\": \"one\", \"n2\": \"two, 2\", \"n3\": \"three\"}}",
         VIT_OK, "two, 2"},
        {"{\"label_names\": {\"2\": \"n3\", \"0\": \"n1\", \"1\": \"n2\"}}", VIT_OK, "n2"},
        {"{\"label_names\": [\"n1\", \"n2\", \"n3\"], \"label_descriptions\": {\"n1\": \"one\"}}",
         VIT_OK, "n2"}, /* not every label described: the names stay */
        {"{\"label_names\": {\"0\": \"n1\", \"1\": \"n2\", \"3\": \"n4\"}}", VIT_ERR_FORMAT,
         "label_names must map ids 0..2"},
        {"{\"label_names\": [\"n1\", \"n2\", \"n3\"], \"label_descriptions\": {\"n1\": \"a\","
         " \"n2\": \"b\\u001b[2J\", \"n3\": \"c\"}}",
         VIT_ERR_FORMAT, "label description 1 has a control character"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        side = (vit_side_files){.config = cases[i].config, .config_len = strlen(cases[i].config)};
        vit_status st = vit_model_load_memory(weights, len, &side, &got, &err);
        if (cases[i].want == VIT_OK)
            CHECKF(st == VIT_OK && got->labels && strcmp(got->labels[1], cases[i].label1) == 0,
                   "case %zu: %s: %s", i, vit_status_name(st),
                   st == VIT_OK ? got->labels[1] : err.message);
        else
            CHECKF(st == cases[i].want && strstr(err.message, cases[i].label1), "case %zu: %s",
                   i, st == VIT_OK ? "loaded" : err.message);
        vit_model_free(got);
        got = NULL;
    }
    free(weights);
}

/* floor(image_size / crop_pct) must be at least 1: with a 2-pixel model and
 * crop_pct 4 it is 0, which would read as "squash" (resize both sides). */
static void test_crop_pct_zero(void)
{
    fprintf(stderr, "crop_pct resizing to 0 pixels\n");
    vit_config c;
    vit_error err = {0};
    CHECK(vit_config_preset("vit-tiny", &c, &err) == VIT_OK);
    c.image_size = 2, c.patch_size = 2, c.width = 8, c.heads = 2, c.depth = 1, c.mlp_dim = 16;
    c.num_classes = 2;
    c.preprocess = img_preprocess_timm_in21k(2);
    size_t len;
    void *weights = config_weights(&c, &len);
    static const struct { const char *crop; vit_status want; int resize; } cases[] = {
        {"4", VIT_ERR_INVALID, 0}, {"2.5", VIT_ERR_INVALID, 0}, {"2", VIT_OK, 1}, {"1", VIT_OK, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char json[512];
        snprintf(json, sizeof json,
                 "{\"num_classes\": 2, \"model_args\": {\"img_size\": 2, \"patch_size\": 2, "
                 "\"embed_dim\": 8, \"depth\": 1, \"num_heads\": 2, \"mlp_ratio\": 2.0}, "
                 "\"pretrained_cfg\": {\"crop_pct\": %s}}",
                 cases[i].crop);
        vit_side_files side = {.config = json, .config_len = strlen(json)};
        vit_model *m = NULL;
        vit_status st = vit_model_load_memory(weights, len, &side, &m, &err);
        fprintf(stderr, "  crop_pct %s -> %s: %s\n", cases[i].crop, vit_status_name(st),
                st == VIT_OK ? "loaded" : err.message);
        CHECKF(st == cases[i].want, "crop_pct %s", cases[i].crop);
        if (st == VIT_OK) {
            CHECKF(m->cfg.preprocess.resize_shorter == cases[i].resize, "resize %d",
                   m->cfg.preprocess.resize_shorter);
            vit_model_free(m);
        }
    }
    free(weights);
}

int main(void)
{
    vit_set_threads(2);
    test_gemm();
    test_attention();
    test_layernorm_and_softmax();
    test_config();
    test_crop_pct_zero();
    test_hub_forms();
    test_state_budget();
    test_tiny_goldens();
    test_preprocess_goldens();
    test_load_memory();
    test_labels();
    test_load_errors();
    test_hostile_files();
    test_preprocessor_config();
    test_create_nomem();
    test_vit_b16_full();
    return check_result();
}
