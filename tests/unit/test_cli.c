/*
 * test_cli.c - the `vitfit` binary end to end: exit codes, one-line errors,
 * JSON output, the bundled default model against its PyTorch predictions,
 * several images in one call (each result must be that image's own), and
 * models whose scores are not finite (an error, never a printed result).
 *
 * Runs the real binary (VITFIT_BIN) through run_cli.h.
 */
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "run_cli.h"
#include "test_util.h"
#include "cpu.h"
#include "gemm.h"
#include "vit.h"

static char tmpdir[] = "/tmp/vitfit-test-cli-XXXXXX";

/* Exit code `code` with exactly one line on stderr. */
static void expect_one_line_error(const run_result *r, int code, const char *what)
{
    CHECKF(r->status == code, "%s: exit %d, want %d (stderr: %s)", what, r->status, code, r->err);
    CHECKF(count_lines(r->err) == 1 && strncmp(r->err, "vitfit", 6) == 0,
           "%s: stderr should be one 'vitfit...' line, got: %s", what, r->err);
    fprintf(stderr, "  %s -> %s", what, r->err);
}

/* Without --model, classify and eval use the bundled model, found from any
 * working directory (tests run in the build directory, where the relative
 * models/fashion-vit-tiny does not exist). */
static void test_default_model(void)
{
    char best[64] = "";
    run_result *r = run_vitfit("classify", "@models/fashion-vit-tiny/samples/2_trouser.png", NULL);
    const char *first = strchr(r->out, '\n');
    CHECKF(r->status == 0 && first && sscanf(first, " %*f %63[^\n]", best) == 1 &&
               strcmp(best, "Trouser") == 0,
           "classify without --model: exit %d, best '%s'\n%s%s", r->status, best, r->out, r->err);
    r = run_vitfit("eval", "--data", "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz",
                   "--limit", "20", "--json", NULL);
    CHECKF(r->status == 0 && strstr(r->out, "\"count\":20"), "eval without --model: exit %d\n%s%s",
           r->status, r->out, r->err);
}

static void test_usage_errors(void)
{
    expect_one_line_error(run_vitfit("frobnicate", NULL), 2, "unknown command");
    expect_one_line_error(run_vitfit("eval", "--limit", "5", NULL), 2, "eval without --data");
    expect_one_line_error(run_vitfit("classify", "--model", "@models/fashion-vit-tiny", NULL), 2,
                          "classify without images");
    expect_one_line_error(run_vitfit("classify", "--model", "@models/fashion-vit-tiny", "--top-k",
                                     "zero", "@tests/data/images/chelsea.png", NULL),
                          2, "bad --top-k");
    expect_one_line_error(run_vitfit("bench", "--preset", "vit-b16", "--batch", "0", NULL), 2,
                          "bench --batch 0");
    expect_one_line_error(run_vitfit("inspect", NULL), 2, "inspect without a file");
    /* serve: config errors name the key and exit 2 before anything starts */
    expect_one_line_error(run_vitfit("serve", "--max-bach", "4", NULL), 2, "serve unknown flag");
    CHECK(strstr(run_vitfit("serve", "--max-bach", "4", NULL)->err, "max-bach") != NULL);
    expect_one_line_error(run_vitfit("serve", "--max-batch", "0", NULL), 2, "serve --max-batch 0");
    CHECK(strstr(run_vitfit("serve", "--max-batch", "0", NULL)->err, "--max-batch") != NULL);
    expect_one_line_error(run_vitfit("serve", "--workers", "64", "--threads-per-worker", "256",
                                     NULL),
                          2, "serve oversubscribed");
    {
        run_result *r = run_vitfit("serve", "--help", NULL);
        CHECK(r->status == 0);
        static const char *const keys[] = {"--queue-capacity", "VITFIT_QUEUE_CAPACITY",
                                           "--max-body-bytes", "--api-key", "--default-task",
                                           "--task-memory-mb", "--drain-timeout-ms"};
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            CHECKF(strstr(r->out, keys[i]) != NULL, "serve --help lacks %s", keys[i]);
    }
    CHECK(run_vitfit(NULL)->status == 2);
    CHECK(run_vitfit("--help", NULL)->status == 0);
    CHECK(run_vitfit("classify", "--help", NULL)->status == 0);
}

static void test_bad_files(void)
{
    static const char *bad_safetensors[] = {
        "@tests/data/safetensors/bad_truncated.safetensors",
        "@tests/data/safetensors/bad_header_len.safetensors",
        "@tests/data/safetensors/bad_dtype.safetensors",
        "@tests/data/safetensors/bad_overlap.safetensors",
        "@tests/data/safetensors/bad_json.safetensors",
        "@tests/data/safetensors/bad_mismatch.safetensors",
    };
    for (size_t i = 0; i < sizeof bad_safetensors / sizeof bad_safetensors[0]; i++) {
        expect_one_line_error(run_vitfit("inspect", bad_safetensors[i], NULL), 1, bad_safetensors[i]);
        expect_one_line_error(run_vitfit("classify", "--model", bad_safetensors[i],
                                         "@tests/data/images/chelsea.png", NULL),
                              1, bad_safetensors[i]);
    }
    static const char *bad_images[] = {
        "@tests/data/images/corrupt.jpg",  "@tests/data/images/truncated.png",
        "@tests/data/images/huge.png",     "@tests/data/images/sample.gif",
        "@tests/data/images/empty.jpg",    "@tests/data/images/not_image.txt",
        "@tests/data/images/no_such_file.png",
    };
    for (size_t i = 0; i < sizeof bad_images / sizeof bad_images[0]; i++)
        expect_one_line_error(run_vitfit("classify", "--model", "@models/fashion-vit-tiny",
                                         bad_images[i], NULL),
                              1, bad_images[i]);
    run_result *r = run_vitfit("classify", "--model", "@models/fashion-vit-tiny", "--max-pixels",
                               "100", "@tests/data/images/chelsea.png", NULL);
    expect_one_line_error(r, 1, "--max-pixels 100");
    CHECK(strstr(r->err, "limit") != NULL);
    r = run_vitfit("classify", "--model", "@tests/data/golden/tiny_clip.safetensors",
                   "@tests/data/images/chelsea.png", NULL);
    expect_one_line_error(r, 1, "classify with a feature extractor");
    CHECK(strstr(r->err, "head") != NULL);
}

/* The bundled model's predictions equal PyTorch's (samples/expected.json). */
static void test_bundled_model(void)
{
    char path[4096];
    json_error_t jerr;
    json_t *expected = json_load_file(
        test_path(path, sizeof path, "models/fashion-vit-tiny/samples/expected.json"), 0, &jerr);
    CHECKF(expected != NULL, "expected.json: %s", jerr.text);
    if (!expected)
        return;
    json_t *files = json_object_get(expected, "samples");
    CHECKF(json_is_array(files) && json_array_size(files) > 0, "expected.json has no samples");
    size_t i;
    json_t *sample;
    json_array_foreach(files, i, sample) {
        const char *file = json_string_value(json_object_get(sample, "file"));
        char rel[1024];
        snprintf(rel, sizeof rel, "@models/fashion-vit-tiny/samples/%s", file ? file : "?");
        run_result *r = run_vitfit("classify", "--model", "@models/fashion-vit-tiny", "--json",
                                   "--logits", rel, NULL);
        CHECKF(r->status == 0, "classify %s: exit %d: %s", rel, r->status, r->err);
        json_t *got = json_loads(r->out, 0, &jerr);
        CHECKF(got != NULL, "classify %s: output is not JSON: %s", rel, r->out);
        if (!got)
            continue;
        json_t *top5 = json_object_get(sample, "top5");
        json_t *want_labels = json_object_get(top5, "labels");
        json_t *want_scores = json_object_get(top5, "scores");
        json_t *want_logits = json_object_get(sample, "logits");
        json_t *got_labels = json_object_get(got, "labels");
        json_t *got_scores = json_object_get(got, "scores");
        json_t *got_logits = json_object_get(got, "logits");
        CHECKF(json_array_size(got_labels) == 5 && json_array_size(got_scores) == 5,
               "%s: want top 5", rel);
        CHECKF(json_equal(json_array_get(got_labels, 0), json_array_get(want_labels, 0)),
               "%s: top-1 %s, PyTorch says %s", rel,
               json_string_value(json_array_get(got_labels, 0)),
               json_string_value(json_array_get(want_labels, 0)));
        float g[1024], w[1024];
        size_t n = json_array_size(want_logits);
        CHECKF(n > 0 && n <= 1024 && json_array_size(got_logits) == n, "%s: logits size", rel);
        for (size_t k = 0; k < n && k < 1024; k++) {
            g[k] = (float)json_number_value(json_array_get(got_logits, k));
            w[k] = (float)json_number_value(json_array_get(want_logits, k));
        }
        if (n <= 1024)
            check_close(rel, g, w, n, 1e-3, 1e-4);
        for (size_t k = 0; k < 5; k++) {
            g[k] = (float)json_number_value(json_array_get(got_scores, k));
            w[k] = (float)json_number_value(json_array_get(want_scores, k));
        }
        check_close("top-5 scores", g, w, 5, 1e-4, 0);
        json_decref(got);
    }
    json_decref(expected);

    /* several images: {"results": [...]} with one entry per image, in order */
    run_result *r = run_vitfit("classify", "--model", "@models/fashion-vit-tiny", "--json",
                               "--top-k", "3", "@tests/data/images/chelsea.png",
                               "@tests/data/images/camera_grey.png", NULL);
    json_t *got = json_loads(r->out, 0, &jerr);
    json_t *results = json_object_get(got, "results");
    CHECKF(r->status == 0 && json_array_size(results) == 2, "two images: %s %s", r->out, r->err);
    CHECK(json_array_size(json_object_get(json_array_get(results, 1), "labels")) == 3);
    json_decref(got);
    r = run_vitfit("classify", "--model", "@models/fashion-vit-tiny",
                   "@tests/data/images/chelsea.png", NULL);
    CHECKF(r->status == 0 && count_lines(r->out) == 6, "text output: %s", r->out);
}

static void test_inspect_and_bench(void)
{
    json_error_t jerr;
    run_result *r = run_vitfit("inspect", "--json", "--preset", "vit-b16", NULL);
    json_t *j = json_loads(r->out, 0, &jerr);
    CHECKF(r->status == 0 && j, "inspect --preset: %s", r->err);
    CHECKF(json_integer_value(json_object_get(j, "bias_parameters")) == 102912,
           "ViT-B/16 bias parameters: %s", r->out);
    json_decref(j);

    r = run_vitfit("inspect", "@tests/data/golden/tiny_hf", NULL);
    CHECKF(r->status == 0 && strstr(r->out, "layout:           hf") &&
               strstr(r->out, "vit.encoder.layer.1.attention.attention.query.weight"),
           "inspect tiny_hf: %s", r->out);
    r = run_vitfit("inspect", "@tests/data/safetensors/good.safetensors", NULL);
    CHECKF(r->status == 0 && strstr(r->out, "tensors"), "inspect a non-model file: %s %s", r->out,
           r->err);

    r = run_vitfit("bench", "--preset", "vit-tiny", "--batch", "2", "--threads", "2", "--iters",
                   "2", "--json", NULL);
    j = json_loads(r->out, 0, &jerr);
    CHECKF(r->status == 0 && j, "bench: %s", r->err);
    CHECK(json_real_value(json_object_get(j, "images_per_second")) > 0);
    CHECK(json_real_value(json_object_get(j, "gflop_per_second")) > 0);
    CHECK(json_integer_value(json_object_get(j, "batch")) == 2);
    CHECK(json_integer_value(json_object_get(j, "threads")) == 2);
    json_decref(j);

    /* one estimator for any number of workers: images_per_second is the
     * images run over the wall time they took (it was batch / median for
     * one worker, the wall-clock rate for several), the median batch time
     * is the latency */
    for (int w = 1; w <= 2; w++) {
        char workers[8];
        snprintf(workers, sizeof workers, "%d", w);
        r = run_vitfit("bench", "--preset", "vit-tiny", "--batch", "3", "--threads", "1",
                       "--workers", workers, "--iters", "4", "--json", NULL);
        j = json_loads(r->out, 0, &jerr);
        double ips = json_real_value(json_object_get(j, "images_per_second"));
        double wall = json_real_value(json_object_get(j, "wall_seconds"));
        double median = json_real_value(json_object_get(j, "median_batch_seconds"));
        json_int_t images = json_integer_value(json_object_get(j, "images"));
        CHECKF(r->status == 0 && images == 3 * 4 * w && wall > 0 && median > 0 &&
                   fabs(ips * wall - (double)images) <= 1e-3 * (double)images &&
                   fabs(json_real_value(json_object_get(j, "ms_per_image")) - 1000 * median / 3) <=
                       1e-4 * 1000 * median,
               "bench --workers %d: exit %d: %s %s", w, r->status, r->out, r->err);
        json_decref(j);
    }

    /* two workers at once, each timing one-task against mixed-task batches */
    r = run_vitfit("bench", "--preset", "vit-tiny", "--batch", "3", "--threads", "1", "--workers",
                   "2", "--mixed", "3", "--classes", "4", "--iters", "2", "--json", NULL);
    j = json_loads(r->out, 0, &jerr);
    CHECKF(r->status == 0 && j, "bench --workers --mixed: %s", r->err);
    CHECK(json_integer_value(json_object_get(j, "workers")) == 2);
    CHECK(json_real_value(json_object_get(j, "images_per_second")) > 0);
    json_t *mixed = json_object_get(j, "mixed");
    CHECK(json_integer_value(json_object_get(mixed, "tasks")) == 3);
    CHECK(json_real_value(json_object_get(mixed, "mixed_over_single")) > 0);
    json_decref(j);

    /* --classes swaps the head for forward timing; --profile times one worker only */
    r = run_vitfit("bench", "--preset", "vit-tiny", "--classes", "7", "--iters", "1", "--profile",
                   "--json", NULL);
    j = json_loads(r->out, 0, &jerr);
    CHECKF(r->status == 0 && j && json_object_get(j, "profile"), "bench --classes: %s", r->err);
    json_decref(j);
    r = run_vitfit("bench", "--preset", "vit-tiny", "--workers", "2", "--profile", NULL);
    CHECKF(r->status == 2 && count_lines(r->err) == 1, "--profile with --workers: %s", r->err);
    r = run_vitfit("bench", "--preset", "vit-tiny", "--threads", "65", NULL);
    CHECKF(r->status == 2 && count_lines(r->err) == 1, "--threads 65: %s", r->err);
}

/* ---- several images in one call ---------------------------------------- */

/* Images of different content and format: more than one batch of the CLI
 * (8), so the second batch and the slots past 0 are both exercised. */
#define MULTI 11
static const char *const multi_images[MULTI] = {
    "@models/fashion-vit-tiny/samples/0_ankle_boot.png", "@models/fashion-vit-tiny/samples/13_dress.png",
    "@models/fashion-vit-tiny/samples/1_pullover.png",   "@models/fashion-vit-tiny/samples/2_trouser.png",
    "@models/fashion-vit-tiny/samples/4_shirt.png",      "@models/fashion-vit-tiny/samples/6_coat.png",
    "@models/fashion-vit-tiny/samples/8_sandal.png",     "@models/fashion-vit-tiny/samples/9_sneaker.png",
    "@tests/data/images/chelsea.png",                    "@tests/data/images/coffee.jpg",
    "@tests/data/images/rocket.bmp",
};

/* The "logits" array of a result object as floats; returns how many. */
static size_t logits_of(const json_t *result, float *out, size_t cap)
{
    const json_t *arr = json_object_get(result, "logits");
    size_t n = json_array_size(arr);
    for (size_t i = 0; i < n && i < cap; i++)
        out[i] = (float)json_number_value(json_array_get(arr, i));
    return n;
}

static void test_multi_image(void)
{
    fprintf(stderr, "several images in one call\n");
    enum { K = 10 };
    json_error_t jerr;
    float alone[MULTI][K];
    char top1[MULTI][64];
    for (int i = 0; i < MULTI; i++) {
        run_result *r = run_vitfit("classify", "--model", "@models/fashion-vit-tiny", "--json",
                                   "--logits", multi_images[i], NULL);
        json_t *j = json_loads(r->out, 0, &jerr);
        CHECKF(r->status == 0 && j, "%s alone: exit %d: %s", multi_images[i], r->status, r->err);
        CHECKF(logits_of(j, alone[i], K) == K, "%s alone: logits", multi_images[i]);
        snprintf(top1[i], sizeof top1[i], "%s",
                 json_string_value(json_array_get(json_object_get(j, "labels"), 0)) ?: "?");
        json_decref(j);
    }
    /* the images really differ, so a result copied from another image shows */
    for (int i = 0; i < MULTI; i++)
        for (int j = i + 1; j < MULTI; j++) {
            double d = 0;
            for (int k = 0; k < K; k++)
                d = fmax(d, fabs((double)alone[i][k] - alone[j][k]));
            CHECKF(d > 1e-2, "%s and %s give the same logits", multi_images[i], multi_images[j]);
        }

    run_result *r = run_vitfit("classify", "--model", "@models/fashion-vit-tiny", "--json",
                               "--logits", "--top-k", "3", multi_images[0], multi_images[1],
                               multi_images[2], multi_images[3], multi_images[4], multi_images[5],
                               multi_images[6], multi_images[7], multi_images[8], multi_images[9],
                               multi_images[10], NULL);
    json_t *got = json_loads(r->out, 0, &jerr);
    json_t *results = json_object_get(got, "results");
    CHECKF(r->status == 0 && json_array_size(results) == MULTI, "%d images: exit %d: %s", MULTI,
           r->status, r->err);
    for (int i = 0; i < MULTI && (size_t)i < json_array_size(results); i++) {
        json_t *res = json_array_get(results, (size_t)i);
        char path[4096], what[4200];
        test_path(path, sizeof path, multi_images[i] + 1);
        const char *image = json_string_value(json_object_get(res, "image"));
        CHECKF(image && strcmp(image, path) == 0, "result %d is for '%s', not '%s'", i,
               image ? image : "(none)", path);
        float together[K];
        CHECKF(logits_of(res, together, K) == K, "result %d: logits", i);
        snprintf(what, sizeof what, "  result %d of %d (%s) vs alone", i, MULTI, multi_images[i]);
        check_close(what, together, alone[i], K, 1e-4, 1e-4);
        const char *label = json_string_value(json_array_get(json_object_get(res, "labels"), 0));
        CHECKF(label && strcmp(label, top1[i]) == 0, "result %d: top-1 '%s', alone '%s'", i,
               label ? label : "(none)", top1[i]);
    }
    json_decref(got);

    /* text output: one block per image, in order, each with its own top-1 */
    r = run_vitfit("classify", "--model", "@models/fashion-vit-tiny", "--top-k", "1",
                   multi_images[0], multi_images[1], multi_images[2], multi_images[3],
                   multi_images[4], multi_images[5], multi_images[6], multi_images[7],
                   multi_images[8], multi_images[9], multi_images[10], NULL);
    CHECKF(r->status == 0 && count_lines(r->out) == 2 * MULTI, "text, %d images: %s %s", MULTI,
           r->out, r->err);
    const char *line = r->out;
    for (int i = 0; i < MULTI && line; i++) {
        char path[4096], want[4200];
        test_path(path, sizeof path, multi_images[i] + 1);
        snprintf(want, sizeof want, "%s\n", path);
        CHECKF(strncmp(line, want, strlen(want)) == 0, "text block %d does not start with %s", i,
               path);
        const char *score_line = strchr(line, '\n');
        const char *next = score_line ? strchr(score_line + 1, '\n') : NULL;
        int has_label = 0;
        if (score_line && next) {
            size_t len = strlen(top1[i]);
            has_label = (size_t)(next - score_line) > len &&
                        strncmp(next - len, top1[i], len) == 0;
        }
        CHECKF(has_label, "text block %d (%s): top-1 is not '%s'", i, path, top1[i]);
        line = next ? next + 1 : NULL;
    }
}

/* ---- non-finite scores -------------------------------------------------- */

/* Copies file src (under the source root) to dst. */
static void copy_file(const char *src_rel, const char *dst)
{
    char src[4096], buf[1 << 16];
    FILE *in = fopen(test_path(src, sizeof src, src_rel), "rb"), *out = fopen(dst, "wb");
    VIT_ASSERT(in && out);
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        VIT_ASSERT(fwrite(buf, 1, n, out) == n);
    fclose(in);
    VIT_ASSERT(fclose(out) == 0);
}

/* Saves the bundled backbone with a 2-class head "a", "b" into dir: every
 * head weight is `fill`, and weight [0] is `first` -- a huge finite fill makes
 * the logits overflow to inf (no file check can see that), a NaN is a NaN. */
static void save_broken_model(const char *dir, float fill, float first)
{
    char path[4096];
    vit_error err;
    vit_model *base, *m;
    VIT_ASSERT(vit_model_load(test_path(path, sizeof path, "models/fashion-vit-tiny"), &base,
                              &err) == VIT_OK);
    VIT_ASSERT(vit_model_derive(base, 2, false, &m, &err) == VIT_OK);
    const char *const labels[] = {"a", "b"};
    VIT_ASSERT(vit_model_set_labels(m, labels, &err) == VIT_OK);
    vit_param *hw = vit_model_find(m, "head.weight");
    VIT_ASSERT(hw);
    for (size_t i = 0; i < hw->numel; i++)
        hw->data[i] = fill;
    hw->data[0] = first;
    VIT_ASSERT(vit_model_save(m, dir, &err) == VIT_OK);
    vit_model_free(m);
    vit_model_free(base);
}

/* Exit 1, one 'vitfit' line on stderr, nothing on stdout. */
static void expect_refused(const run_result *r, const char *what)
{
    CHECKF(r->status == 1, "%s: exit %d, want 1 (stdout: %.200s)", what, r->status, r->out);
    CHECKF(count_lines(r->err) == 1 && strncmp(r->err, "vitfit", 6) == 0,
           "%s: stderr should be one 'vitfit...' line, got: %s", what, r->err);
    CHECKF(r->out[0] == '\0', "%s: printed a result: %.200s", what, r->out);
    fprintf(stderr, "  %s -> exit %d: %s", what, r->status, r->err);
}

static void test_non_finite_scores(void)
{
    fprintf(stderr, "models with non-finite scores\n");
    char model[4096], data[1024], path[4096];
    snprintf(data, sizeof data, "%s/data", tmpdir);
    VIT_ASSERT(mkdir(data, 0700) == 0);
    snprintf(path, sizeof path, "%s/a", data);
    VIT_ASSERT(mkdir(path, 0700) == 0);
    snprintf(path, sizeof path, "%s/a/x.png", data);
    copy_file("models/fashion-vit-tiny/samples/2_trouser.png", path);
    snprintf(path, sizeof path, "%s/b", data);
    VIT_ASSERT(mkdir(path, 0700) == 0);
    snprintf(path, sizeof path, "%s/b/y.png", data);
    copy_file("models/fashion-vit-tiny/samples/8_sandal.png", path);

    static const struct {
        const char *name;
        float fill, first;
    } broken[] = {
        {"overflow", 3e38f, 3e38f}, /* finite weights, infinite logits */
        {"nan", 0.01f, NAN},       /* one NaN weight */
    };
    const char *img = "@models/fashion-vit-tiny/samples/4_shirt.png";
    const char *img2 = "@models/fashion-vit-tiny/samples/1_pullover.png";
    for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++) {
        char what[128];
        snprintf(model, sizeof model, "%s/%s", tmpdir, broken[i].name);
        save_broken_model(model, broken[i].fill, broken[i].first);
#define REFUSED(label, ...)                                                     \
        do {                                                                    \
            snprintf(what, sizeof what, "%s: %s", broken[i].name, label);       \
            expect_refused(run_vitfit(__VA_ARGS__, NULL), what);                \
        } while (0)
        REFUSED("classify", "classify", "--model", model, img);
        REFUSED("classify --json", "classify", "--model", model, "--json", img);
        REFUSED("classify --json --logits", "classify", "--model", model, "--json", "--logits",
                img);
        REFUSED("classify, 2 images", "classify", "--model", model, img, img2);
        REFUSED("classify --json, 2 images", "classify", "--model", model, "--json", img, img2);
        REFUSED("eval", "eval", "--model", model, "--data", data, "--threads", "1");
        REFUSED("eval --json", "eval", "--model", model, "--data", data, "--json", "--threads",
                "1");
#undef REFUSED
    }

    /* the same data set with a healthy head is scored (so the refusals above
     * are about the scores, not the set-up) */
    snprintf(model, sizeof model, "%s/healthy", tmpdir);
    save_broken_model(model, 0.01f, 0.02f);
    run_result *r = run_vitfit("eval", "--model", model, "--data", data, "--json", NULL);
    CHECKF(r->status == 0 && strstr(r->out, "\"count\":2"), "healthy eval: exit %d: %s %s",
           r->status, r->out, r->err);
    r = run_vitfit("classify", "--model", model, "--json", "--logits", img, NULL);
    CHECKF(r->status == 0 && strstr(r->out, "\"logits\""), "healthy classify: exit %d: %s",
           r->status, r->err);
}

/* ---- paths that are not UTF-8 -------------------------------------------- */

/* A Latin-1 file name is reported as text with U+FFFD for the bad byte; it
 * used to vanish ("image" missing from that result; inspect's "file"). */
static void test_non_utf8_paths(void)
{
    fprintf(stderr, "paths that are not UTF-8\n");
    char img[4096], want[4200], st_path[4096];
    snprintf(img, sizeof img, "%s/caf\xe9.png", tmpdir);
    copy_file("models/fashion-vit-tiny/samples/2_trouser.png", img);
    run_result *r = run_vitfit("classify", "--model", "@models/fashion-vit-tiny", "--json",
                               "--top-k", "1", img, "@models/fashion-vit-tiny/samples/1_pullover.png",
                               NULL);
    json_error_t jerr;
    json_t *j = json_loads(r->out, 0, &jerr);
    snprintf(want, sizeof want, "%s/caf\xef\xbf\xbd.png", tmpdir);
    const char *got =
        json_string_value(json_object_get(json_array_get(json_object_get(j, "results"), 0), "image"));
    CHECKF(r->status == 0 && got && strcmp(got, want) == 0,
           "classify, a non-UTF-8 path: exit %d: %s %s", r->status, r->out, r->err);
    json_decref(j);

    snprintf(st_path, sizeof st_path, "%s/caf\xe9.safetensors", tmpdir);
    copy_file("tests/data/safetensors/good.safetensors", st_path);
    r = run_vitfit("inspect", "--json", st_path, NULL);
    j = json_loads(r->out, 0, &jerr);
    snprintf(want, sizeof want, "%s/caf\xef\xbf\xbd.safetensors", tmpdir);
    got = json_string_value(json_object_get(j, "file"));
    CHECKF(r->status == 0 && got && strcmp(got, want) == 0,
           "inspect, a non-UTF-8 path: exit %d: %s %s", r->status, r->out, r->err);
    json_decref(j);
}

/* Removes tmpdir and everything in it (test files only). */
static void remove_tmpdir(void)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
}

/* Reads a JSON array of numbers into out (at most cap); returns its size. */
static size_t json_floats(json_t *a, float *out, size_t cap)
{
    size_t n = json_array_size(a);
    for (size_t k = 0; k < n && k < cap; k++)
        out[k] = (float)json_number_value(json_array_get(a, k));
    return n;
}

/* --precision on classify, eval and bench: bf16 runs (emulated where the CPU
 * lacks avx512_bf16), gives the bundled samples' top-1 with logits near
 * fp32's but not equal to them (the bf16 kernel ran), and is refused with a
 * clear message where it cannot run. */
static void test_precision(void)
{
    run_result *r = run_vitfit("classify", "--model", "@models/fashion-vit-tiny", "--precision",
                               "fp16", "@models/fashion-vit-tiny/samples/2_trouser.png", NULL);
    CHECKF(r->status == 2 && strstr(r->err, "fp32 or bf16"), "--precision fp16: %d %s",
           r->status, r->err);
    if (!gemm_packed_available()) { /* the portable stage */
        r = run_vitfit("classify", "--model", "@models/fashion-vit-tiny", "--precision", "bf16",
                       "@models/fashion-vit-tiny/samples/2_trouser.png", NULL);
        CHECKF(r->status == 1 && strstr(r->err, "AVX-512"), "bf16 without AVX-512: %d %s",
               r->status, r->err);
        return;
    }
    if (!cpu_has_avx512_bf16()) {
        unsetenv("VITFIT_BF16_EMULATE");
        r = run_vitfit("classify", "--model", "@models/fashion-vit-tiny", "--precision", "bf16",
                       "@models/fashion-vit-tiny/samples/2_trouser.png", NULL);
        CHECKF(r->status == 1 && strstr(r->err, "avx512_bf16") && r->out[0] == '\0',
               "bf16 without avx512_bf16: %d %s", r->status, r->err);
        setenv("VITFIT_BF16_EMULATE", "1", 1);
    }
    static const char *samples[] = {"0_ankle_boot.png", "2_trouser.png", "13_dress.png"};
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "@models/fashion-vit-tiny/samples/%s", samples[i]);
        json_error_t jerr;
        float logits[2][16];
        const char *top[2] = {NULL, NULL};
        json_t *got[2] = {NULL, NULL};
        size_t n[2] = {0, 0};
        for (int p = 0; p < 2; p++) {
            r = run_vitfit("classify", "--model", "@models/fashion-vit-tiny", "--json", "--logits",
                           "--precision", p ? "bf16" : "fp32", rel, NULL);
            CHECKF(r->status == 0, "classify %s %s: %d %s", rel, p ? "bf16" : "fp32", r->status,
                   r->err);
            got[p] = json_loads(r->out, 0, &jerr);
            n[p] = json_floats(json_object_get(got[p], "logits"), logits[p], 16);
            top[p] = json_string_value(json_array_get(json_object_get(got[p], "labels"), 0));
        }
        CHECKF(top[0] && top[1] && strcmp(top[0], top[1]) == 0, "%s: bf16 top-1 %s, fp32 %s", rel,
               top[1] ? top[1] : "?", top[0] ? top[0] : "?");
        CHECKF(n[0] == 10 && n[1] == 10, "%s: logits %zu and %zu", rel, n[0], n[1]);
        if (n[0] == 10 && n[1] == 10) {
            float scale = 0;
            for (int k = 0; k < 10; k++)
                scale = fmaxf(scale, fabsf(logits[0][k]));
            check_close("bf16 logits vs fp32", logits[1], logits[0], 10, 0.02 * scale, 0);
            CHECKF(memcmp(logits[0], logits[1], sizeof logits[0]) != 0,
                   "%s: bf16 logits equal fp32's: bf16 did not run", rel);
        }
        json_decref(got[0]);
        json_decref(got[1]);
    }
    r = run_vitfit("bench", "--preset", "vit-tiny", "--precision", "bf16", "--iters", "2",
                   "--json", NULL);
    json_error_t jerr;
    json_t *j = json_loads(r->out, 0, &jerr);
    CHECKF(r->status == 0 && strcmp(json_string_value(json_object_get(j, "precision"))
                                        ? json_string_value(json_object_get(j, "precision"))
                                        : "", "bf16") == 0,
           "bench --precision bf16: %d %s %s", r->status, r->out, r->err);
    json_decref(j);
    r = run_vitfit("eval", "--model", "@models/fashion-vit-tiny", "--data",
                   "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz", "--limit", "100",
                   "--precision", "bf16", "--json", NULL);
    j = json_loads(r->out, 0, &jerr);
    CHECKF(r->status == 0 && json_number_value(json_object_get(j, "top1")) > 0.6,
           "eval --precision bf16: %d %s %s", r->status, r->out, r->err);
    json_decref(j);
}

/* ---- --help ---- */

#define HELP_MAX (1 << 16)

/* The name of the flag a help line describes ("  --batch N  ..." or "  --host TEXT
 * (VITFIT_HOST)"), copied to name; *takes_value when a placeholder (N, DIR,
 * A,B,...) follows it.  0 when the line describes no flag. */
static int help_flag_line(const char *line, char *name, size_t len, int *takes_value)
{
    if (line[0] != ' ' || line[1] != ' ')
        return 0;
    const char *p = line + strspn(line, " ");
    if (strncmp(p, "--", 2) != 0 || p[2] < 'a' || p[2] > 'z')
        return 0;
    size_t n = 2 + strspn(p + 2, "abcdefghijklmnopqrstuvwxyz0123456789-");
    if (n >= len)
        return 0;
    memcpy(name, p, n);
    name[n] = '\0';
    const char *v = p + n;
    *takes_value = (v[0] == ' ' || v[0] == '=') && v[1] >= 'A' && v[1] <= 'Z';
    return 1;
}

/* Is --name (with its dashes) described on a line of its own in help? */
static int help_describes(const char *help, const char *name)
{
    char flag[64];
    int value;
    for (const char *line = help; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL)
        if (help_flag_line(line, flag, sizeof flag, &value) && strcmp(flag, name) == 0)
            return 1;
    return 0;
}

/* Checks one command's help: every --flag it mentions has a line of its own,
 * and each flag that takes a value says its default (or that it is
 * required) before the next flag's line or a blank line. */
static void check_help_text(const char *cmd, const char *help)
{
    for (const char *p = strstr(help, "--"); p; p = strstr(p + 2, "--")) {
        if (p[2] < 'a' || p[2] > 'z' || (p > help && p[-1] != ' ' && p[-1] != '[' &&
                                          p[-1] != '\n' && p[-1] != '(' && p[-1] != '|'))
            continue;
        char name[64];
        size_t n = 2 + strspn(p + 2, "abcdefghijklmnopqrstuvwxyz0123456789-");
        if (n >= sizeof name)
            continue;
        memcpy(name, p, n);
        name[n] = '\0';
        if (strcmp(name, "--help") != 0)
            CHECKF(help_describes(help, name), "vitfit %s --help mentions %s but has no line "
                   "describing it", cmd, name);
    }
    char flag[64];
    int value;
    for (const char *line = help; line && *line;) {
        const char *next = strchr(line, '\n');
        next = next ? next + 1 : NULL;
        if (help_flag_line(line, flag, sizeof flag, &value) && value) {
            /* the flag's block: up to the next flag line or a blank line */
            const char *end = next;
            char other[64];
            int v2;
            while (end && *end && *end != '\n' && !help_flag_line(end, other, sizeof other, &v2)) {
                end = strchr(end, '\n');
                end = end ? end + 1 : NULL;
            }
            size_t blen = end ? (size_t)(end - line) : strlen(line);
            char *block = strndup(line, blen);
            VIT_ASSERT(block);
            CHECKF(strstr(block, "default") || strstr(block, "required"),
                   "vitfit %s --help: %s takes a value but states no default:\n%s", cmd, flag,
                   block);
            free(block);
        }
        line = next;
    }
}

/* Every subcommand's --help describes each of its flags on a line of its own,
 * with its default; and every long option a subcommand's source accepts (its
 * getopt table) is among them, so a new flag cannot go undocumented. */
static void test_help(void)
{
    static const struct {
        const char *cmd, *source; /* source: its getopt table (NULL: serve's are config keys) */
    } cmds[] = {
        {"serve", NULL},
        {"classify", "server/cli_classify.c"},
        {"train", "server/cli_train.c"},
        {"eval", "server/cli_train.c"},
        {"inspect", "server/cli_inspect.c"},
        {"bench", "server/cli_bench.c"},
        {"init", "server/cli_init.c"},
        {"health", "server/cli_health.c"},
    };
    enum { NCMD = sizeof cmds / sizeof cmds[0] };
    static char helps[NCMD][HELP_MAX];
    for (size_t i = 0; i < NCMD; i++) {
        run_result *r = run_vitfit(cmds[i].cmd, "--help", NULL);
        CHECKF(r->status == 0 && r->out[0], "vitfit %s --help: exit %d", cmds[i].cmd, r->status);
        snprintf(helps[i], HELP_MAX, "%s", r->out);
        check_help_text(cmds[i].cmd, helps[i]);
    }
    for (size_t i = 0; i < NCMD; i++) {
        if (!cmds[i].source)
            continue;
        char path[4096], src[1 << 17];
        slurp(test_path(path, sizeof path, cmds[i].source), src, sizeof src);
        CHECKF(src[0], "cannot read %s", path);
        int options = 0;
        for (const char *p = strstr(src, "{\""); p; p = strstr(p + 2, "{\"")) {
            char name[64] = "--";
            size_t n = strspn(p + 2, "abcdefghijklmnopqrstuvwxyz0123456789-");
            const char *after = p + 2 + n;
            if (n == 0 || n + 3 > sizeof name || strncmp(after, "\", ", 3) != 0 ||
                !strstr(after, "_argument") || strstr(after, "_argument") - after > 20)
                continue; /* not an option table entry */
            memcpy(name + 2, p + 2, n);
            name[n + 2] = '\0';
            options++;
            if (strcmp(name, "--help") == 0)
                continue;
            int described = 0; /* by any command of that source */
            for (size_t j = 0; j < NCMD; j++)
                if (cmds[j].source && strcmp(cmds[j].source, cmds[i].source) == 0)
                    described |= help_describes(helps[j], name);
            CHECKF(described, "%s accepts %s, which no --help describes", cmds[i].source, name);
        }
        CHECKF(options > 1, "%s: found no getopt table", cmds[i].source);
    }
}

int main(void)
{
    VIT_ASSERT(mkdtemp(tmpdir));
    test_default_model();
    test_usage_errors();
    test_bad_files();
    test_bundled_model();
    test_inspect_and_bench();
    test_multi_image();
    test_non_finite_scores();
    test_non_utf8_paths();
    test_precision();
    test_help();
    remove_tmpdir();
    return check_result();
}
