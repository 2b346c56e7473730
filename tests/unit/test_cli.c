/*
 * test_cli.c - the `vitfit` binary end to end: exit codes, one-line errors,
 * JSON output, and the bundled default model against its PyTorch predictions.
 *
 * Runs the real binary (VITFIT_BIN) through run_cli.h.
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "run_cli.h"
#include "test_util.h"

/* Exit code `code` with exactly one line on stderr. */
static void expect_one_line_error(const run_result *r, int code, const char *what)
{
    CHECKF(r->status == code, "%s: exit %d, want %d (stderr: %s)", what, r->status, code, r->err);
    CHECKF(count_lines(r->err) == 1 && strncmp(r->err, "vitfit", 6) == 0,
           "%s: stderr should be one 'vitfit...' line, got: %s", what, r->err);
    fprintf(stderr, "  %s -> %s", what, r->err);
}

static void test_usage_errors(void)
{
    expect_one_line_error(run_vitfit("frobnicate", NULL), 2, "unknown command");
    expect_one_line_error(run_vitfit("classify", "@tests/data/images/chelsea.png", NULL), 2,
                          "classify without --model");
    expect_one_line_error(run_vitfit("classify", "--model", "@models/fashion-vit-tiny", NULL), 2,
                          "classify without images");
    expect_one_line_error(run_vitfit("classify", "--model", "@models/fashion-vit-tiny", "--top-k",
                                     "zero", "@tests/data/images/chelsea.png", NULL),
                          2, "bad --top-k");
    expect_one_line_error(run_vitfit("bench", "--preset", "vit-b16", "--batch", "0", NULL), 2,
                          "bench --batch 0");
    expect_one_line_error(run_vitfit("inspect", NULL), 2, "inspect without a file");
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

int main(void)
{
    test_usage_errors();
    test_bad_files();
    test_bundled_model();
    test_inspect_and_bench();
    return check_result();
}
