/*
 * cli_bench.c - `vitfit bench`: forward-pass throughput on this machine.
 *
 * Uses a checkpoint or a preset with deterministic random weights (randinit),
 * runs warm-up iterations, then times `iters` batches and reports the median
 * batch time as images/s and achieved GFLOP/s (2 x MACs).
 */
#include <getopt.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#include "cli.h"
#include "optim.h"
#include "randinit.h"
#include "task.h"
#include "vit.h"
#include "vit_train.h"

static void bench_usage(FILE *out)
{
    fprintf(out,
            "usage: vitfit bench --model DIR|FILE|hf:ORG/NAME[@REV] | --preset NAME [OPTIONS]\n"
            "  --model M        the checkpoint to time: a directory, file or hf:... (required\n"
            "                   without --preset)\n"
            "  --preset NAME    or seeded random weights of a preset's shapes: vit-b16,\n"
            "                   vit-l14-clip or vit-tiny (required without --model)\n"
            "  --batch N        images per forward pass or training step (default 1)\n"
            "  --threads N      compute threads per worker (default: the usable CPUs divided\n"
            "                   among the workers)\n"
            "  --workers W      run W workers at once, each with its own state (default 1)\n"
            "  --iters N        timed iterations; the median is reported (default 5)\n"
            "  --warmup N       untimed iterations first (default 1)\n"
            "  --precision P    fp32 or bf16 matrix products (forward timing; default fp32; bf16\n"
            "                   needs avx512_bf16)\n"
            "  --profile        also report time per op kind (GEMMs by layer, attention,\n"
            "                   LayerNorm...)\n"
            "  --json           print the result as one JSON object\n"
            "  --classes K      head size: of the tasks (--tasks, --mixed) and of the trained head\n"
            "                   (--train), default 10; for forward timing a fresh K-class head\n"
            "                   replaces the model's (default: the model's own head)\n"
            "  --train          time training steps (forward, loss, backward, AdamW) instead\n"
            "  --method M       with --train: bitfit, linear or full (default bitfit)\n"
            "  --path P         with --train: auto (packed kernels where the CPU has AVX-512),\n"
            "                   packed or portable (OpenBLAS) (default auto)\n"
            "  --tasks N        load N task bias sets and report bytes per task (default 0)\n"
            "  --mixed N        also time batches whose images spread over N tasks, against one\n"
            "                   task (default 0: not timed)\n");
}

typedef struct bench_opts {
    const char *model, *preset;
    long batch, threads, iters, warmup;
    int json;
    int profile;
    int train;
    long tasks;
    long workers;
    long mixed;
    vit_method method;
    vit_path path;       /* --path, for --train */
    vit_precision precision;
    long classes;
    int classes_given;   /* --classes on the command line */
    int threads_given;   /* --threads on the command line */
} bench_opts;

static int parse_bench(int argc, char **argv, bench_opts *o)
{
    static const struct option longopts[] = {
        {"model", required_argument, NULL, 'm'},  {"preset", required_argument, NULL, 'p'},
        {"batch", required_argument, NULL, 'b'},  {"threads", required_argument, NULL, 't'},
        {"iters", required_argument, NULL, 'i'},  {"warmup", required_argument, NULL, 'w'},
        {"json", no_argument, NULL, 'j'},         {"help", no_argument, NULL, 'h'},
        {"profile", no_argument, NULL, 'P'},     {"train", no_argument, NULL, 'T'},
        {"method", required_argument, NULL, 'M'}, {"classes", required_argument, NULL, 'K'},
        {"tasks", required_argument, NULL, 'N'},  {"workers", required_argument, NULL, 'W'},
        {"mixed", required_argument, NULL, 'X'},  {"precision", required_argument, NULL, 'R'},
        {"path", required_argument, NULL, 'A'},
        {NULL, 0, NULL, 0},
    };
    *o = (bench_opts){.batch = 1, .threads = cli_default_threads(), .iters = 5, .warmup = 1, .classes = 10,
                      .workers = 1};
    opterr = 0;
    int c, which = 0;
    long *target;
    while ((c = getopt_long(argc, argv, "", longopts, &which)) != -1) {
        long hi = 4096;
        switch (c) {
        case 'm': o->model = optarg; continue;
        case 'p': o->preset = optarg; continue;
        case 'j': o->json = 1; continue;
        case 'P': o->profile = 1; continue;
        case 'T': o->train = 1; continue;
        case 'R':
            if (!vit_precision_parse(optarg, &o->precision))
                return cli_usage_error("bench", "--precision is fp32 or bf16, got '%s'", optarg);
            continue;
        case 'M':
            if (!vit_method_parse(optarg, &o->method))
                return cli_usage_error("bench", "--method must be bitfit, linear or full");
            continue;
        case 'A':
            if (strcmp(optarg, "auto") == 0)
                o->path = VIT_PATH_AUTO;
            else if (strcmp(optarg, "packed") == 0)
                o->path = VIT_PATH_PACKED;
            else if (strcmp(optarg, "portable") == 0)
                o->path = VIT_PATH_PORTABLE;
            else
                return cli_usage_error("bench", "--path must be auto, packed or portable");
            continue;
        case 'K': target = &o->classes; hi = 100000; o->classes_given = 1; break;
        case 'N': target = &o->tasks; hi = 100000; break;
        case 'W': target = &o->workers; hi = 64; break;
        case 'X': target = &o->mixed; hi = 4096; break;
        case 'h': bench_usage(stdout); return -1;
        case 'b': target = &o->batch; break;
        case 't': target = &o->threads; hi = 64; o->threads_given = 1; break;
        case 'i': target = &o->iters; hi = 100000; break;
        case 'w': target = &o->warmup; hi = 1000; break;
        default:
            return cli_usage_error("bench", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
        if (!cli_parse_int(optarg, c == 'w' ? 0 : 1, hi, target))
            return cli_usage_error("bench", "--%s needs an integer in [%d, %ld], got '%s'",
                                   longopts[which].name, c == 'w' ? 0 : 1, hi, optarg);
    }
    if (!o->model == !o->preset)
        return cli_usage_error("bench", "give exactly one of --model or --preset");
    if (optind != argc)
        return cli_usage_error("bench", "unexpected argument '%s'", argv[optind]);
    if (o->precision != VIT_PRECISION_FP32 && (o->train || o->tasks))
        return cli_usage_error("bench", "--precision times the forward pass (training is fp32)");
    if (o->profile && (o->workers > 1 || o->mixed))
        return cli_usage_error("bench", "--profile times one worker on one task");
    /* W workers x T threads beyond the usable CPUs spin against each other:
     * unless told, the workers share the CPUs */
    if (!o->threads_given && o->workers > 1)
        o->threads = o->threads / o->workers > 1 ? o->threads / o->workers : 1;
    return 0;
}

static double profile_total(const vit_profile *p)
{
    double total = 0;
    for (int op = 0; op < VIT_OP_COUNT; op++)
        total += p->seconds[op];
    return total;
}

static json_t *profile_json(const vit_profile *p, long iters)
{
    json_t *o = json_object();
    for (int op = 0; op < VIT_OP_COUNT; op++) {
        double sec = p->seconds[op];
        json_object_set_new(o, vit_op_name((vit_op)op),
                            json_pack("{sf sf}", "ms_per_batch", 1000.0 * sec / (double)iters,
                                      "gflop_per_second", sec > 0 ? 2.0 * p->macs[op] / sec / 1e9 : 0.0));
    }
    return o;
}

/* Time per op kind, per batch, with its share and achieved GFLOP/s. */
static void print_profile(const vit_profile *p, long iters, vit_precision precision)
{
    double total = profile_total(p);
    printf("%-14s %12s %7s %10s\n", "op", "ms/batch", "share", "GFLOP/s");
    for (int op = 0; op < VIT_OP_COUNT; op++) {
        double sec = p->seconds[op];
        if (op >= VIT_OP_BWD_HEAD && sec == 0)
            continue; /* backward kinds: training only */
        printf("%-14s %12.2f %6.1f%% ", vit_op_name((vit_op)op), 1000.0 * sec / (double)iters,
               total > 0 ? 100.0 * sec / total : 0.0);
        if (p->macs[op] > 0 && sec > 0)
            printf("%10.1f\n", 2.0 * p->macs[op] / sec / 1e9);
        else
            printf("%10s\n", "-");
    }
    if (p->fused)
        printf("(AVX-512 path: fc1_gemm includes the GELU, the *_gemm rows their bias and residual\n"
               " adds, attention its softmax)\n");
    if (p->fused && precision == VIT_PRECISION_BF16)
        printf("(bf16: layernorm includes rounding its output into QKV's and fc1's packed input,\n"
               " fc1_gemm writing fc2's, in every block but a class-token model's last)\n");
}

/* Times training steps: forward, cross-entropy, backward and AdamW over what
 * the method trains, on a K-class head over m's backbone. */
static int bench_train(const bench_opts *o, const vit_model *base)
{
    vit_error err = {0};
    vit_model *m = NULL;
    bool full = o->method == VIT_METHOD_FULL;
    if (vit_model_derive(base, (int)o->classes, full, &m, &err) != VIT_OK)
        return cli_fail(&err);
    int B = (int)o->batch, K = (int)o->classes;
    size_t per_image = (size_t)3 * m->cfg.image_size * m->cfg.image_size;
    float *images = malloc(per_image * (size_t)B * sizeof *images);
    float *logits = malloc((size_t)K * B * sizeof *logits);
    float *dlogits = malloc((size_t)K * B * sizeof *dlogits);
    int *labels = malloc((size_t)B * sizeof *labels);
    float *gtrain = calloc(m->trainable_len, sizeof *gtrain);
    float *gfrozen = full ? calloc(m->frozen_len, sizeof *gfrozen) : NULL;
    uint8_t *mask_train = calloc(m->trainable_len, 1), *mask_frozen = full ? calloc(m->frozen_len, 1) : NULL;
    double *times = malloc((size_t)o->iters * sizeof *times);
    vit_train_state *s = NULL;
    vit_profile profile = {0};
    optim *opt_t = NULL, *opt_f = NULL;
    optim_config oc = {.kind = OPTIM_ADAMW, .weight_decay = 0.05f, .beta1 = 0.9f, .beta2 = 0.999f,
                       .eps = 1e-8f};
    int rc = CLI_OK;
    if (!images || !logits || !dlogits || !labels || !gtrain || !mask_train || !times ||
        (full && (!gfrozen || !mask_frozen))) {
        vit_error_set(&err, VIT_ERR_NOMEM, "out of memory for batch %d", B);
        rc = cli_fail(&err);
    } else if (vit_train_state_create_path(m, o->method, B, (int)o->threads, o->path, &s,
                                           &err) != VIT_OK ||
               optim_create(&oc, m->trainable_len, &opt_t, &err) != VIT_OK ||
               (full && optim_create(&oc, m->frozen_len, &opt_f, &err) != VIT_OK)) {
        rc = cli_fail(&err);
    }
    if (rc == CLI_OK) {
        randinit_fill(images, per_image * (size_t)B, "input", 0, 1.0, 0.0);
        for (int b = 0; b < B; b++)
            labels[b] = b % K;
        for (long i = 0; i < o->warmup + o->iters && rc == CLI_OK; i++) {
            if (i == o->warmup && o->profile) /* forward and backward, after warm-up */
                vit_train_state_set_profile(s, &profile);
            double t0 = cli_now();
            memset(gtrain, 0, sizeof(float) * m->trainable_len);
            if (gfrozen)
                memset(gfrozen, 0, sizeof(float) * m->frozen_len);
            if (vit_train_forward(m, s, images, B, logits, &err) != VIT_OK) {
                rc = cli_fail(&err);
                break;
            }
            vit_cross_entropy(logits, labels, B, K, 0.0f, dlogits);
            if (vit_backward(m, s, dlogits, B, gtrain, gfrozen, &err) != VIT_OK) {
                rc = cli_fail(&err);
                break;
            }
            optim_step(opt_t, m->trainable, gtrain, mask_train, 1e-4f);
            if (opt_f)
                optim_step(opt_f, m->frozen, gfrozen, mask_frozen, 1e-4f);
            if (i >= o->warmup)
                times[i - o->warmup] = cli_now() - t0;
        }
    }
    if (rc == CLI_OK) {
        double median = cli_median(times, (size_t)o->iters);
        size_t rss = cli_peak_rss(), acts = vit_train_state_bytes(s);
        if (o->json) {
            json_t *j = json_pack("{so ss si si si sf sf sI sI}", "model",
                                  cli_json_text(o->preset ? o->preset : o->model), "method",
                                  vit_method_name(o->method), "batch", B, "threads",
                                  (int)o->threads, "iters", (int)o->iters, "median_step_seconds",
                                  median, "images_per_second", B / median, "peak_rss_bytes",
                                  (json_int_t)rss, "activation_bytes", (json_int_t)acts);
            if (j && o->profile)
                json_object_set_new(j, "profile", profile_json(&profile, o->iters));
            rc = cli_print_json(j, 0);
        } else {
            printf("train %s, model %s, batch %d, threads %ld: median %.1f ms/step over %ld iters\n",
                   vit_method_name(o->method), o->preset ? o->preset : o->model, B, o->threads,
                   1000 * median, o->iters);
            printf("%.2f images/s, activations %.0f MiB, peak RSS %.0f MiB, %s path\n",
                   B / median, (double)acts / (1 << 20), (double)rss / (1 << 20),
                   vit_train_state_path(s) == VIT_PATH_PACKED ? "packed" : "OpenBLAS");
            if (o->profile) { /* forward and backward; cross-entropy and AdamW not timed */
                profile.fused = false;
                print_profile(&profile, o->iters, VIT_PRECISION_FP32);
            }
        }
    }
    vit_train_state_free(s);
    optim_free(opt_t);
    optim_free(opt_f);
    free(images);
    free(logits);
    free(dlogits);
    free(labels);
    free(gtrain);
    free(gfrozen);
    free(mask_train);
    free(mask_frozen);
    free(times);
    vit_model_free(m);
    return rc;
}

/* Current resident set size in bytes (VmRSS), or 0. */
static size_t current_rss(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%lu %lu", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

/* Creates N tasks with K-class heads over m's backbone and reports how much
 * resident memory each costs: its parameters plus a small fixed overhead,
 * never a copy of the backbone. */
static int bench_tasks(const bench_opts *o, const vit_model *m)
{
    vit_error err = {0};
    int K = (int)o->classes;
    const char **names = calloc((size_t)K + 1, sizeof *names);
    char (*buf)[16] = calloc((size_t)K, sizeof *buf);
    vit_task **tasks = calloc((size_t)o->tasks, sizeof *tasks);
    int rc = CLI_OK;
    if (!names || !buf || !tasks) {
        vit_error_set(&err, VIT_ERR_NOMEM, "out of memory");
        rc = cli_fail(&err);
    }
    for (int k = 0; rc == CLI_OK && k < K; k++) {
        snprintf(buf[k], sizeof buf[k], "c%d", k);
        names[k] = buf[k];
    }
    size_t before = current_rss();
    for (long i = 0; rc == CLI_OK && i < o->tasks; i++) {
        if (task_create(m, K, names, &tasks[i], &err) != VIT_OK) {
            rc = cli_fail(&err);
            break;
        }
        /* touch every value, as loading a file would */
        randinit_fill(tasks[i]->trainable, tasks[i]->trainable_len, "task", (uint64_t)i, 0.02, 0);
    }
    size_t after = current_rss();
    if (rc == CLI_OK) {
        size_t param_bytes = tasks[0]->trainable_len * sizeof(float);
        double per_task = (double)(after - before) / (double)o->tasks;
        if (o->json) {
            size_t backbone = (m->frozen_len + m->trainable_len) * sizeof(float);
            json_t *j = json_pack("{so si si sI sf sI}", "model",
                                  cli_json_text(o->preset ? o->preset : o->model), "tasks",
                                  (int)o->tasks, "classes", K, "param_bytes_per_task",
                                  (json_int_t)param_bytes, "rss_bytes_per_task", per_task,
                                  "backbone_bytes", (json_int_t)backbone);
            rc = cli_print_json(j, 0);
        } else {
            printf("%ld tasks with %d-class heads: %.0f bytes resident per task, %zu of them "
                   "parameters (backbone: %zu bytes)\n",
                   o->tasks, K, per_task, param_bytes,
                   (m->frozen_len + m->trainable_len) * sizeof(float));
        }
    }
    for (long i = 0; tasks && i < o->tasks; i++)
        task_free(tasks[i]);
    free(tasks);
    free(names);
    free(buf);
    return rc;
}

/* ---- forward-pass timing: W workers, one or many tasks per batch ---- */

/* One worker: its own state and buffers, timing iters batches after warmup.
 * With tasks, iterations alternate a single-task batch (every image on
 * tasks[0]) and a mixed one (image b on tasks[b % ntasks]), so the two are
 * measured under the same machine conditions. */
typedef struct bench_worker {
    const bench_opts *o;
    const vit_model *m;
    vit_task **tasks;            /* o->mixed of them, or NULL */
    cli_gate *gate;              /* passed once every worker is running */
    pthread_barrier_t *start;    /* the W workers begin timing together */
    vit_profile *profile;        /* worker 0 only, or NULL */
    double *times, *mixed_times; /* (iters) batch seconds */
    double began, done;          /* cli_now() after warm-up and after its last batch */
    vit_error err;
    int failed;
} bench_worker;

static void *bench_worker_main(void *arg)
{
    bench_worker *w = arg;
    if (!cli_gate_pass(w->gate))
        return NULL; /* another worker failed to start: nothing was set up */
    const bench_opts *o = w->o;
    const vit_model *m = w->m;
    int B = (int)o->batch;
    size_t per_image = (size_t)3 * m->cfg.image_size * m->cfg.image_size;
    size_t dim = (size_t)(w->tasks ? (int)o->classes : vit_config_output_dim(&m->cfg));
    float *images = malloc(per_image * (size_t)B * sizeof *images);
    float *out = malloc(dim * (size_t)B * sizeof *out);
    float **rows = calloc((size_t)B, sizeof *rows);
    const vit_task **single = calloc((size_t)B, sizeof *single);
    const vit_task **mixed = calloc((size_t)B, sizeof *mixed);
    vit_state *s = NULL;
    if (!images || !out || !rows || !single || !mixed) {
        vit_error_set(&w->err, VIT_ERR_NOMEM, "out of memory for batch %d", B);
        w->failed = 1;
    } else if (vit_state_create(m, B, (int)o->threads, &s, &w->err) != VIT_OK) {
        w->failed = 1;
    }
    if (!w->failed) {
        randinit_fill(images, per_image * (size_t)B, "input", 0, 1.0, 0.0);
        for (int b = 0; b < B; b++) {
            rows[b] = out + (size_t)b * dim;
            if (w->tasks) {
                single[b] = w->tasks[0];
                mixed[b] = w->tasks[b % o->mixed];
            }
        }
    }
    for (long i = 0; i < o->warmup + o->iters; i++) {
        if (i == o->warmup) {
            pthread_barrier_wait(w->start); /* even a failed worker must arrive */
            w->began = cli_now();
            if (w->profile && s)
                vit_state_set_profile(s, w->profile);
        }
        if (w->failed)
            continue;
        for (int pass = 0; pass < (w->tasks ? 2 : 1); pass++) {
            double t0 = cli_now();
            vit_status st = w->tasks ? task_forward(m, s, images, B, pass ? mixed : single,
                                                    rows, &w->err)
                                     : vit_forward(m, s, images, B, out, &w->err);
            if (st != VIT_OK)
                w->failed = 1;
            if (i >= o->warmup)
                (pass ? w->mixed_times : w->times)[i - o->warmup] = cli_now() - t0;
        }
    }
    w->done = cli_now();
    vit_state_free(s);
    free(images);
    free(out);
    free(rows);
    free(single);
    free(mixed);
    return NULL;
}

static int bench_forward(const bench_opts *o, const vit_model *m)
{
    vit_error err = {0};
    int W = (int)o->workers, B = (int)o->batch, K = (int)o->classes;
    long iters = o->iters;
    bench_worker *workers = calloc((size_t)W, sizeof *workers);
    pthread_t *threads = calloc((size_t)W, sizeof *threads);
    double *times = calloc((size_t)W * iters, sizeof *times);
    double *mixed_times = calloc((size_t)W * iters, sizeof *mixed_times);
    vit_task **tasks = o->mixed ? calloc((size_t)o->mixed, sizeof *tasks) : NULL;
    const char **names = calloc((size_t)K, sizeof *names);
    vit_profile profile = {0};
    pthread_barrier_t start;
    int rc = CLI_OK;
    if (!workers || !threads || !times || !mixed_times || (o->mixed && !tasks) || !names) {
        vit_error_set(&err, VIT_ERR_NOMEM, "out of memory");
        rc = cli_fail(&err);
    }
    for (int k = 0; rc == CLI_OK && k < K; k++)
        names[k] = "c";
    for (long t = 0; rc == CLI_OK && t < o->mixed; t++) {
        if (task_create(m, K, names, &tasks[t], &err) != VIT_OK)
            rc = cli_fail(&err);
        else /* distinct biases and heads per task, as trained ones would be */
            randinit_fill(tasks[t]->trainable, tasks[t]->trainable_len, "task", (uint64_t)t,
                          0.02, 0);
    }
    double t_start = 0;
    if (rc == CLI_OK) {
        /* the barrier counts workers only, and every one of them exists once
         * the gate opens; a worker whose state fails still arrives */
        pthread_barrier_init(&start, NULL, (unsigned)W);
        cli_gate gate;
        for (int i = 0; i < W; i++)
            workers[i] = (bench_worker){.o = o, .m = m, .tasks = tasks, .gate = &gate,
                                        .start = &start,
                                        .profile = o->profile && i == 0 ? &profile : NULL,
                                        .times = times + (size_t)i * iters,
                                        .mixed_times = mixed_times + (size_t)i * iters};
        if (cli_start_threads(threads, W, bench_worker_main, workers, sizeof *workers, &gate,
                              &err) != VIT_OK) {
            rc = cli_fail(&err);
        } else {
            for (int i = 0; i < W; i++)
                pthread_join(threads[i], NULL);
        }
        cli_gate_destroy(&gate);
        pthread_barrier_destroy(&start);
    }
    /* the timed span runs from the first worker's start to the last one's end
     * (each reads the clock itself: this thread may not run again until then) */
    double t_end = 0;
    for (int i = 0; rc == CLI_OK && i < W; i++) {
        if (workers[i].failed) {
            rc = cli_fail(&workers[i].err);
            break;
        }
        if (i == 0 || workers[i].began < t_start)
            t_start = workers[i].began;
        if (workers[i].done > t_end)
            t_end = workers[i].done;
    }
    /* Two estimators, the same for any number of workers (W = 1 included),
     * each named for what it measures:
     *   latency    -- the median over every worker's timed single-task
     *                 batches (median_batch_seconds, ms_per_image);
     *   throughput -- every image every worker ran in the timed span (mixed
     *                 batches too) over that wall-clock span
     *                 (images_per_second, and GFLOP/s from it).
     * B / median is not a throughput: it leaves out whatever happens
     * between batches and, with W > 1, how the workers share the CPUs. */
    double span = t_end - t_start;
    if (rc == CLI_OK && !(span > 0)) {
        vit_error_set(&err, VIT_ERR_INVALID, "the timed span is %g s: no throughput", span);
        rc = cli_fail(&err);
    }
    if (rc == CLI_OK) {
        size_t n = (size_t)W * iters;
        double median = cli_median(times, n);
        double mixed_median = o->mixed ? cli_median(mixed_times, n) : 0;
        double passes = o->mixed ? 2.0 : 1.0;
        double images = (double)W * B * (double)iters * passes;
        double ips = images / span;
        double gflops = 2.0 * vit_config_forward_macs(&m->cfg) * ips / 1e9;
        size_t rss = cli_peak_rss();
        const char *name = o->preset ? o->preset : o->model;
        if (o->json) {
            json_t *j = json_pack("{so si si si si sf sf sI sf sf sf sI}", "model",
                                  cli_json_text(name), "batch", B, "threads", (int)o->threads,
                                  "workers", W, "iters", (int)iters, "median_batch_seconds",
                                  median, "ms_per_image", 1000.0 * median / B, "images",
                                  (json_int_t)images, "wall_seconds", span, "images_per_second",
                                  ips, "gflop_per_second", gflops, "peak_rss_bytes",
                                  (json_int_t)rss);
            int ok = j != NULL &&
                     json_object_set_new(j, "precision",
                                         json_string(vit_precision_name(m->precision))) == 0 &&
                     json_object_set_new(j, "rss_bytes",
                                         json_integer((json_int_t)cli_current_rss())) == 0;
            if (ok && o->profile)
                ok = json_object_set_new(j, "profile", profile_json(&profile, iters)) == 0 &&
                     json_object_set_new(j, "profile_fused", json_boolean(profile.fused)) == 0;
            if (ok && o->mixed)
                ok = json_object_set_new(j, "mixed",
                                         json_pack("{si sf sf sf}", "tasks", (int)o->mixed,
                                                   "single_task_batch_seconds", median,
                                                   "mixed_batch_seconds", mixed_median,
                                                   "mixed_over_single",
                                                   mixed_median / median)) == 0;
            if (ok) {
                rc = cli_print_json(j, 0);
            } else { /* json_pack refuses non-finite reals: never print an empty report */
                json_decref(j);
                vit_error_set(&err, VIT_ERR_INVALID, "timings out of range (median %g s)", median);
                rc = cli_fail(&err);
            }
        } else {
            printf("model %s, batch %d, threads %ld x workers %d, %ld iters each: latency median "
                   "%.1f ms/batch (%.2f ms/image)\n", name, B, o->threads, W, iters,
                   1000 * median, 1000 * median / B);
            printf("throughput %.2f images/s (%.0f images in %.3f s wall), %.1f GFLOP/s, peak RSS "
                   "%.0f MiB\n", ips, images, span, gflops, (double)rss / (1 << 20));
            if (o->mixed)
                printf("mixed batches over %ld tasks: median %.1f ms/batch vs %.1f ms on one task "
                       "(x%.3f)\n", o->mixed, 1000 * mixed_median, 1000 * median,
                       mixed_median / median);
            if (o->profile)
                print_profile(&profile, iters, m->precision);
        }
    }
    for (long t = 0; tasks && t < o->mixed; t++)
        task_free(tasks[t]);
    free(tasks);
    free(names);
    free(workers);
    free(threads);
    free(times);
    free(mixed_times);
    return rc;
}

int cli_bench(int argc, char **argv)
{
    bench_opts o;
    int rc = parse_bench(argc, argv, &o);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    vit_set_threads((int)o.threads);

    vit_error err = {0};
    vit_model *m = NULL;
    vit_config cfg;
    /* one copy of the weights where nothing trains: the packed one */
    vit_load_options lo = {.precision = o.precision, .one_copy = !o.train};
    if (o.preset) {
        if (vit_config_preset(o.preset, &cfg, &err) != VIT_OK ||
            vit_model_create(&cfg, &m, &err) != VIT_OK)
            return cli_fail(&err);
        vit_model_randomize(m, 0);
        if ((lo.one_copy ? vit_model_pack_release : vit_model_pack_precision)(m, lo.precision,
                                                                             &err) != VIT_OK) {
            vit_model_free(m);
            return cli_fail(&err);
        }
    } else {
        char model_path[CFG_PATH_SIZE];
        int path_rc = cli_model_path(o.model, model_path, sizeof model_path);
        if (path_rc != CLI_OK)
            return path_rc;
        if (vit_model_load_with(model_path, &lo, &m, &err) != VIT_OK)
            return cli_fail(&err);
    }
    if (o.train || o.tasks) {
        rc = o.train ? bench_train(&o, m) : bench_tasks(&o, m);
        vit_model_free(m);
        return rc;
    }
    /* --classes swaps the head (e.g. 1000 classes, as torchvision's, instead
     * of the preset's 21843) over the same packed backbone */
    vit_model *headed = NULL;
    if (o.classes_given && !o.mixed &&
        vit_model_derive(m, (int)o.classes, false, &headed, &err) != VIT_OK) {
        vit_model_free(m);
        return cli_fail(&err);
    }
    rc = bench_forward(&o, headed ? headed : m);
    vit_model_free(headed);
    vit_model_free(m);
    return rc;
}
