/*
 * cli_classify.c - `vitfit classify`: images in, labels with softmax scores out.
 *
 * The output has the shape of the original pipeline: {"labels": [...],
 * "scores": [...]} best first (top 5 by default); several images give
 * {"results": [...]}.  Images are decoded and preprocessed with the model's
 * own settings and run through the model in batches.  Every image is
 * classified before anything is printed, and a NaN or infinite score is an
 * error (exit 1, one line on stderr), never a printed result.
 */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "classify.h"
#include "cli.h"
#include "task.h"
#include "vit.h"

#define CLASSIFY_BATCH 8
#define MAX_IMAGE_BYTES (64u << 20)
#define DEFAULT_MAX_PIXELS 50000000L

static void classify_usage(FILE *out)
{
    fprintf(out,
            "usage: vitfit classify [--model DIR|FILE|hf:ORG/NAME[@REV]] [--task FILE] [--top-k K]\n"
            "                       [--json] [--logits] [--threads N] [--precision P]\n"
            "                       [--max-pixels N] IMAGE...\n"
            "  --model       checkpoint directory (model.safetensors + config.json) or file, or\n"
            "                hf:ORG/NAME[@REVISION] from the model hub (downloaded once, cached)\n"
            "                (default: %s)\n"
            "  --task        a task bias-set file made for this model (vitfit train)\n"
            "  --top-k       how many labels to print, best first (default 5)\n"
            "  --json        print one JSON object on stdout\n"
            "  --logits      add the raw logits (all classes) to the JSON output\n"
            "  --threads     compute threads (default: the CPUs this process may use)\n"
            "  --precision   fp32 or bf16 matrix products (default fp32; bf16 needs avx512_bf16)\n"
            "  --max-pixels  refuse larger images (default %ld)\n",
            cfg_default_model(), DEFAULT_MAX_PIXELS);
}

typedef struct classify_opts {
    const char *model;
    const char *task;
    long top_k;
    long threads;
    long max_pixels;
    vit_precision precision;
    int json;
    int logits;
} classify_opts;

/* Are all n values finite?  A NaN or inf score is never printed as a result
 * (a NaN sorts anywhere and JSON cannot even hold it). */
static bool all_finite(const float *x, int n)
{
    for (int i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return false;
    return true;
}

/* One image's result as JSON: {"labels", "scores"[, "logits"]}; NULL when
 * it cannot be built whole (every builder call is checked: a label or score
 * that failed must not just be missing). */
static json_t *result_json(const vit_model *m, const float *logits, const float *probs,
                           const int *idx, int k, int with_logits)
{
    json_t *obj = json_object(), *labels = json_array(), *scores = json_array();
    int ok = obj && json_object_set_new(obj, "labels", labels) == 0 &&
             json_object_set_new(obj, "scores", scores) == 0;
    for (int j = 0; ok && j < k; j++)
        ok = json_array_append_new(labels, cli_json_text(m->labels[idx[j]])) == 0 &&
             json_array_append_new(scores, json_real(probs[idx[j]])) == 0;
    if (ok && with_logits) {
        json_t *raw = json_array();
        ok = json_object_set_new(obj, "logits", raw) == 0;
        for (int i = 0; ok && i < m->cfg.num_classes; i++)
            ok = json_array_append_new(raw, json_real(logits[i])) == 0;
    }
    if (!ok) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

static int parse_classify(int argc, char **argv, classify_opts *o)
{
    static const struct option longopts[] = {
        {"model", required_argument, NULL, 'm'},   {"top-k", required_argument, NULL, 'k'},
        {"task", required_argument, NULL, 'T'},
        {"threads", required_argument, NULL, 't'}, {"max-pixels", required_argument, NULL, 'p'},
        {"json", no_argument, NULL, 'j'},          {"logits", no_argument, NULL, 'l'},
        {"precision", required_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    *o = (classify_opts){.top_k = 5, .threads = cli_default_threads(),
                         .max_pixels = DEFAULT_MAX_PIXELS};
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'T': o->task = optarg; break;
        case 'j': o->json = 1; break;
        case 'l': o->logits = 1; break;
        case 'h': classify_usage(stdout); return -1;
        case 'P':
            if (!vit_precision_parse(optarg, &o->precision))
                return cli_usage_error("classify", "--precision is fp32 or bf16, got '%s'", optarg);
            break;
        case 'k':
            if (!cli_parse_int(optarg, 1, 1000000, &o->top_k))
                return cli_usage_error("classify", "--top-k needs a positive integer, got '%s'", optarg);
            break;
        case 't':
            if (!cli_parse_int(optarg, 1, 64, &o->threads))
                return cli_usage_error("classify", "--threads needs an integer in [1, 64], got '%s'", optarg);
            break;
        case 'p':
            if (!cli_parse_int(optarg, 1, 1L << 40, &o->max_pixels))
                return cli_usage_error("classify", "--max-pixels needs a positive integer, got '%s'", optarg);
            break;
        default:
            return cli_usage_error("classify", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (!o->model)
        o->model = cfg_default_model();
    if (optind >= argc)
        return cli_usage_error("classify", "no IMAGE given");
    return 0;
}

/* Loads and preprocesses images [first, first+n) of paths into batch. */
static vit_status prepare_batch(const vit_model *m, char **paths, int n, long max_pixels,
                                float *batch, vit_error *err)
{
    size_t per_image = (size_t)3 * m->cfg.image_size * m->cfg.image_size;
    for (int i = 0; i < n; i++) {
        img_image img;
        vit_status st = img_load_file(paths[i], MAX_IMAGE_BYTES, (size_t)max_pixels, &img, err);
        if (st == VIT_OK) {
            st = img_to_tensor(&img, &m->cfg.preprocess, batch + (size_t)i * per_image, err);
            img_free(&img);
        }
        if (st != VIT_OK)
            return st;
    }
    return VIT_OK;
}

int cli_classify(int argc, char **argv)
{
    classify_opts o;
    int rc = parse_classify(argc, argv, &o);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    vit_set_threads((int)o.threads);

    vit_error err = {0};
    vit_model *backbone = NULL, *m = NULL;
    vit_task *task = NULL;
    /* one copy of the weights, the packed one: classify never trains */
    vit_load_options lo = {.precision = o.precision, .one_copy = true};
    char model_path[CFG_PATH_SIZE];
    if ((rc = cli_model_path(o.model, model_path, sizeof model_path)) != CLI_OK)
        return rc;
    if (vit_model_load_with(model_path, &lo, &backbone, &err) != VIT_OK)
        return cli_fail(&err);
    if (o.task) { /* the task's biases and head over the shared backbone */
        if (task_load(backbone, o.task, &task, &err) != VIT_OK ||
            vit_model_view(backbone, task->num_classes, task->trainable, &m, &err) != VIT_OK ||
            vit_model_set_labels(m, (const char *const *)task->labels, &err) != VIT_OK) {
            vit_model_free(m);
            task_free(task);
            vit_model_free(backbone);
            return cli_fail(&err);
        }
    } else if (backbone->cfg.num_classes == 0) {
        fprintf(stderr, "vitfit: %s has no classification head (it is a feature extractor); "
                        "classifying needs a task with a head (--task)\n", o.model);
        vit_model_free(backbone);
        return CLI_FAIL;
    }
    bool is_view = m != NULL;
    if (!is_view)
        m = backbone;
    int K = m->cfg.num_classes;
    int k = o.top_k < K ? (int)o.top_k : K;
    char **paths = argv + optind;
    int count = argc - optind;
    size_t per_image = (size_t)3 * m->cfg.image_size * m->cfg.image_size;
    float *batch = malloc(per_image * CLASSIFY_BATCH * sizeof *batch);
    float *logits = malloc((size_t)K * (size_t)count * sizeof *logits); /* every image's row */
    float *probs = malloc((size_t)K * sizeof *probs); /* one row at a time */
    int *idx = malloc((size_t)k * sizeof *idx);
    vit_state *s = NULL;
    json_t *results = json_array();
    rc = CLI_OK;
    if (!batch || !logits || !probs || !idx || !results) {
        vit_error_set(&err, VIT_ERR_NOMEM, "out of memory");
        rc = cli_fail(&err);
    } else if (vit_state_create(m, CLASSIFY_BATCH, (int)o.threads, &s, &err) != VIT_OK) {
        rc = cli_fail(&err);
    }
    /* every image first, then the output: a failure on any image prints no
     * result at all, so nothing on stdout ever passes for a success */
    for (int first = 0; rc == CLI_OK && first < count; first += CLASSIFY_BATCH) {
        int n = count - first < CLASSIFY_BATCH ? count - first : CLASSIFY_BATCH;
        if (prepare_batch(m, paths + first, n, o.max_pixels, batch, &err) != VIT_OK ||
            vit_forward(m, s, batch, n, logits + (size_t)first * K, &err) != VIT_OK) {
            rc = cli_fail(&err);
            break;
        }
    }
    for (int i = 0; rc == CLI_OK && i < count; i++) {
        const float *row = logits + (size_t)i * K;
        vit_softmax(row, K, probs);
        if (!all_finite(row, K) || !all_finite(probs, K)) {
            fprintf(stderr, "vitfit: %s: the model gave non-finite scores (NaN or inf): its "
                            "weights or preprocessing settings are broken\n", paths[i]);
            rc = CLI_FAIL;
        }
    }
    for (int i = 0; rc == CLI_OK && i < count; i++) {
        const float *row = logits + (size_t)i * K, *p = probs;
        vit_softmax(row, K, probs);
        if (api_classify_top_k(p, K, k, idx) != 0) {
            fprintf(stderr, "vitfit: out of memory ranking the scores\n");
            rc = CLI_FAIL;
            break;
        }
        if (o.json) {
            /* the path as text even when it is not UTF-8 (cli_text), never
             * a result without its "image" */
            json_t *r = result_json(m, row, p, idx, k, o.logits);
            int ok = json_array_append_new(results, r) == 0; /* takes r, even on failure */
            if (ok && count > 1)
                ok = json_object_set_new(r, "image", cli_json_text(paths[i])) == 0;
            if (!ok) {
                json_decref(results);
                results = NULL; /* cli_print_json reports it */
                break;
            }
        } else {
            printf("%s\n", paths[i]);
            for (int j = 0; j < k; j++)
                printf("  %.4f  %s\n", p[idx[j]], m->labels[idx[j]]);
        }
    }
    if (rc == CLI_OK && o.json) {
        json_t *out = !results   ? NULL
                      : count == 1 ? json_incref(json_array_get(results, 0))
                                   : json_pack("{sO}", "results", results);
        rc = cli_print_json(out, 1);
    }
    json_decref(results);
    vit_state_free(s);
    free(batch);
    free(logits);
    free(probs);
    free(idx);
    if (is_view)
        vit_model_free(m);
    task_free(task);
    vit_model_free(backbone);
    return rc;
}
