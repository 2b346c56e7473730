/*
 * cli_train.c - `vitfit train` and `vitfit eval`.
 *
 * train fine-tunes a task on a data set (BitFit by default) and writes it
 * atomically to --out only when the run succeeds: a task bias-set file for
 * bitfit/linear, a checkpoint directory for full.  Progress lines go to
 * stderr every --log-every steps; the summary (a JSON object) to stdout.
 *
 * Classes are matched by name: an eval set is opened with the training set's
 * (train) or the task's / model's (eval) class list, so its classes index the
 * head's rows whatever their sorted order; a class the head does not know is
 * an error naming it, and head classes the eval set lacks are listed
 * ("absent_classes" in the JSON, a note on stderr).  IDX sets without
 * --class-names have only label numbers: the list then names them by
 * position.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "dataset.h"
#include "task.h"
#include "trainer.h"
#include "vit.h"

static void train_usage(FILE *out)
{
    fprintf(out,
            "usage: vitfit train [--model DIR|hf:ORG/NAME[@REV]] --train DATASET --out FILE|DIR\n"
            "         [--eval DATASET] [OPTIONS]\n"
            "DATASET: an ImageFolder directory, a .jsonl or .csv manifest, or an IDX images file\n"
            "(*-images-idx3-ubyte[.gz]).\n"
            "\n"
            "What to train\n"
            "  --model DIR            the backbone: a checkpoint directory or file, or hf:...\n"
            "                         (default: %s)\n"
            "  --train DATASET        the training images (required)\n"
            "  --out FILE|DIR         a task file (.safetensors) for bitfit and linear, a new\n"
            "                         checkpoint directory for full (required)\n"
            "  --eval DATASET         measure each epoch on it and keep the best (default: none;\n"
            "                         then --validation-split of --train is held out)\n"
            "  --method M             bitfit (biases + head), linear (head only) or full\n"
            "                         (default bitfit)\n"
            "  --head H               auto, keep (the model's head: rows by class name where the\n"
            "                         names match, else by number) or new (default auto: keep\n"
            "                         when the classes match by name, else new)\n"
            "  --from-scratch         re-initialise every weight first, keeping only the\n"
            "                         architecture of --model (full only; default off)\n"
            "  --class-names A,B,...  names of an IDX set's labels 0, 1, ... (default: by number)\n"
            "  --limit-train N        use the first N training images (default: all)\n"
            "  --limit-eval N         use the first N evaluation images (default: all)\n"
            "  --skip-bad             skip images that do not decode, each named on stderr\n"
            "                         (default: fail on the first)\n"
            "  --allow-outside-root   let a data set's files lie outside its folder (default off)\n"
            "\n"
            "Schedule and optimiser\n"
            "  --epochs N             passes over --train (default 10)\n"
            "  --max-steps N          stop after N steps instead (default: epochs x batches)\n"
            "  --batch-size N         images per step (default 32)\n"
            "  --lr X                 peak learning rate (default by method: bitfit 1e-2,\n"
            "                         linear 2e-2, full 1e-3)\n"
            "  --min-lr X             learning rate at the last step (default 0)\n"
            "  --warmup-epochs X      linear warm-up before the cosine decay (default 1)\n"
            "  --weight-decay X       decoupled weight decay (default by method: bitfit 5e-5,\n"
            "                         linear 0, full 0.05)\n"
            "  --optimizer O          adamw or sgd (default adamw)\n"
            "  --momentum X           sgd's momentum (default 0.9)\n"
            "  --label-smoothing X    (default 0)\n"
            "  --clip-grad X          clip the gradient's global norm to X (default 0: off)\n"
            "  --seed N               shuffling, augmentation, split and new head (default 0)\n"
            "  --no-shuffle           keep the data set's order (default: shuffled each epoch)\n"
            "  --augment A            auto, none, light or strong (default auto: none when the\n"
            "                         images are smaller than the model's input, else light, a crop\n"
            "                         keeping 75-90%% of each side; strong is ImageNet's crop of\n"
            "                         8-100%% of the area with flips)\n"
            "  --no-augment           the same as --augment none\n"
            "\n"
            "Validation\n"
            "  --validation-split X   without --eval, hold out this share of --train (seeded, per\n"
            "                         class) to validate each epoch; 0: train on all, no validation\n"
            "                         (default 0.1)\n"
            "  --early-stopping-patience N\n"
            "                         end the run after N epochs without a better top-1 (default 3;\n"
            "                         0: off).  With a validation set --out is the best epoch's\n"
            "\n"
            "Running\n"
            "  --threads N            compute threads (default: the CPUs this process may use)\n"
            "  --loader-threads N     image decoding threads (default 2)\n"
            "  --feature-cache-mb N   linear without augmentation computes each image's features\n"
            "                         once when they fit in N MiB (default 1024; 0: recompute them\n"
            "                         every epoch; same results either way)\n"
            "  --checkpoint-dir DIR   write a checkpoint there after every epoch (default: none)\n"
            "  --checkpoint-every-steps N\n"
            "                         and every N steps (default 0: epochs only)\n"
            "  --resume DIR           continue that run with the same options, model and data\n"
            "                         (bitfit and linear), ending with the same task as the\n"
            "                         uninterrupted run; keeps checkpointing into DIR (default:\n"
            "                         a new run)\n"
            "  --log-every N          a progress line every N steps (default 50; 0: none)\n"
            "  --json                 print progress and the summary as JSON lines\n"
            "\n"
            "--eval's classes are matched to --train's by name.  With --skip-bad the images that\n"
            "decode are counted first, so the schedule ends (at --min-lr) on the last step that\n"
            "runs.  A warm-up not shorter than the run is cut to leave that last step.  An\n"
            "evaluation that fails after training still writes --out (and the summary, with\n"
            "\"eval_error\"), then exits 1.  The summary's \"eval\" is the best epoch's, on --eval\n"
            "or on the split (\"eval_on\": \"eval\" | \"validation\").\n",
            cfg_default_model());
}

static void eval_usage(FILE *out)
{
    fprintf(out,
            "usage: vitfit eval [--model DIR|hf:ORG/NAME[@REV]] --data DATASET [OPTIONS]\n"
            "  --model DIR            a checkpoint directory or file, or hf:...\n"
            "                         (default: %s)\n"
            "  --data DATASET         an ImageFolder directory, a .jsonl or .csv manifest, or an\n"
            "                         IDX images file (required)\n"
            "  --task FILE            measure this task (default: the model's own head)\n"
            "  --class-names A,B,...  names of an IDX set's labels 0, 1, ... (default: by number)\n"
            "  --limit N              use the first N images (default: all)\n"
            "  --skip-bad             skip images that do not decode, each named on stderr and\n"
            "                         counted in \"skipped\" (default: fail on the first)\n"
            "  --allow-outside-root   let the data set's files lie outside its folder (default off)\n"
            "  --batch-size N         images per forward pass (default 32)\n"
            "  --threads N            compute threads (default: the CPUs this process may use)\n"
            "  --loader-threads N     image decoding threads (default 2)\n"
            "  --precision P          fp32 or bf16 matrix products (default fp32; bf16 needs\n"
            "                         avx512_bf16)\n"
            "  --json                 print the result as one JSON object\n"
            "The data set's classes are matched to the task's (or model's) labels by name.\n",
            cfg_default_model());
}

/* Splits "a,b,c" into a NULL-terminated array (caller frees with free_names). */
static char **split_names(const char *list)
{
    size_t n = 1;
    for (const char *p = list; *p; p++)
        n += *p == ',';
    char **names = calloc(n + 1, sizeof *names);
    if (!names)
        return NULL;
    const char *start = list;
    for (size_t i = 0; i < n; i++) {
        const char *end = strchr(start, ',');
        size_t len = end ? (size_t)(end - start) : strlen(start);
        if (!(names[i] = strndup(start, len)))
            break;
        start = end ? end + 1 : start + len;
    }
    return names;
}

static void free_names(char **names)
{
    for (size_t i = 0; names && names[i]; i++)
        free(names[i]);
    free(names);
}

static void report_bad(void *ctx, const char *item, const char *message)
{
    (void)ctx;
    fprintf(stderr, "vitfit: skipping %s: %s\n", item, message);
}

static void report_log(void *ctx, const char *message)
{
    (void)ctx;
    fprintf(stderr, "vitfit: %s\n", message);
}

/* Does the data set at path name its classes itself (a folder, a manifest),
 * so that --class-names cannot apply to it? */
static int names_own_classes(const char *path)
{
    ds_source src = ds_source_of(path);
    return src == DS_SOURCE_FOLDER || src == DS_SOURCE_MANIFEST;
}

/* Opens a data set the way both commands do.  class_names (--class-names,
 * may be NULL) go to an IDX set only; classes (may be NULL): the fixed
 * class list the set must use (ds_options.classes).  Its files stay under
 * its own root unless allow_outside (--allow-outside-root). */
static vit_status open_dataset(const char *path, char **class_names, const char *const *classes,
                               int allow_outside, ds_dataset **out, vit_error *err)
{
    if (names_own_classes(path))
        class_names = NULL; /* the caller made sure they name another set's labels */
    ds_options o = {.class_names = (const char *const *)class_names,
                    .classes = classes,
                    .allow_outside_root = allow_outside != 0};
    vit_status st = ds_open(path, &o, out, err);
    return st;
}

/* A class name with its index, for finding repeated names. */
typedef struct named_class {
    const char *name;
    int k;
} named_class;

static int cmp_named_class(const void *a, const void *b)
{
    return strcmp(((const named_class *)a)->name, ((const named_class *)b)->name);
}

/* repeated[k] = 1 when names[k] is also the name of another of the K classes
 * (a head may repeat a label: ImageNet-1k's two "crane"s); 0 on OOM. */
static int find_repeated(const char *const *names, int K, char *repeated)
{
    named_class *v = malloc((size_t)(K > 0 ? K : 1) * sizeof *v);
    if (!v)
        return 0;
    for (int k = 0; k < K; k++)
        v[k] = (named_class){names[k], k};
    qsort(v, (size_t)K, sizeof *v, cmp_named_class);
    for (int k = 0; k < K; k++)
        repeated[k] = 0;
    for (int i = 1; i < K; i++)
        if (strcmp(v[i - 1].name, v[i].name) == 0)
            repeated[v[i - 1].k] = repeated[v[i].k] = 1;
    free(v);
    return 1;
}

/* A per_class_accuracy key for class k, whose name the head repeats:
 * "<name>#<k>", with "#<k>" added again while a class already owns it (a
 * few times: names crafted to take every key get a message, not a loop). */
static char *repeated_key(const json_t *taken, const char *name, int k)
{
    char suffix[16];
    snprintf(suffix, sizeof suffix, "#%d", k);
    size_t name_len = strlen(name), suffix_len = strlen(suffix);
    for (size_t copies = 1; copies <= 8; copies++) {
        char *key = malloc(name_len + copies * suffix_len + 1);
        if (!key)
            return NULL;
        memcpy(key, name, name_len);
        for (size_t c = 0; c < copies; c++)
            memcpy(key + name_len + c * suffix_len, suffix, suffix_len);
        key[name_len + copies * suffix_len] = '\0';
        if (!json_object_get(taken, key))
            return key;
        free(key);
    }
    fprintf(stderr, "vitfit: class %d ('%s', a repeated name) has no free per-class key: other "
                    "classes are named '%s%s', '%s%s%s', ...\n",
            k, name, name, suffix, name, suffix, suffix);
    return NULL;
}

/* JSON for an evaluation: counts, accuracies, loss, per-class accuracy,
 * confusion, and the classes no item belonged to; names: the K classes of
 * the head, in its order (the order of r).  per_class_accuracy is keyed by
 * class name; a name the head repeats is keyed "<name>#<k>" for each of its
 * classes k (grown while another class owns that key: repeated_key), so that
 * no class overwrites another.  "confusion" lists the
 * matrix's non-zero cells as [true, predicted, count] (class indices in the
 * head's order, sorted): its size follows the items evaluated, where a dense
 * K x K matrix grew with the square of the class count (trainer.h).  Every
 * builder call is checked: NULL (and nothing) when the report cannot be
 * complete -- out of memory, a name that is not UTF-8, names crafted to take
 * every key repeated_key tries -- never a report with a class missing. */
static json_t *eval_json(const eval_result *r, const char *const *names)
{
    int K = r->num_classes;
    json_t *per_class = json_object(), *confusion = json_array(), *absent = json_array();
    char *repeated = malloc((size_t)(K > 0 ? K : 1));
    int ok = per_class && confusion && absent && repeated && find_repeated(names, K, repeated);
    /* Unique names first, so that a generated key can be checked against
     * every real name: a head may hold both "x" twice and a class named
     * "x#1"; such a key grows by "#<k>" until it is free. */
    for (int pass = 0; ok && pass < 2; pass++)
        for (int k = 0; ok && k < K; k++) {
            if (repeated[k] != pass)
                continue;
            long total = r->class_count[k];
            json_t *value =
                total ? json_real((double)r->class_correct[k] / (double)total) : json_null();
            char *key = pass ? repeated_key(per_class, names[k], k) : strdup(names[k]);
            if (value && key && !json_object_get(per_class, key))
                ok = json_object_set_new(per_class, key, value) == 0; /* takes value */
            else {
                ok = 0;
                json_decref(value);
            }
            free(key);
        }
    for (int k = 0; ok && k < K; k++)
        if (!r->class_count[k])
            ok = json_array_append_new(absent, json_string(names[k])) == 0;
    for (size_t i = 0; ok && i < r->num_cells; i++) {
        const eval_cell *c = &r->confusion[i];
        ok = json_array_append_new(confusion, json_pack("[iiI]", c->truth, c->pred,
                                                        (json_int_t)c->count)) == 0;
    }
    json_t *j = ok ? json_pack("{sI sI sf sf sf sO sO sO}", "count", (json_int_t)r->count,
                               "skipped", (json_int_t)r->skipped, "top1", r->top1, "top5",
                               r->top5, "loss", r->loss, "per_class_accuracy", per_class,
                               "confusion", confusion, "absent_classes", absent)
                   : NULL;
    json_decref(per_class);
    json_decref(confusion);
    json_decref(absent);
    free(repeated);
    return j;
}

/* One stderr line naming the head's classes the evaluation had no item of
 * (up to a few), so a partial eval set is never mistaken for a full one. */
static void note_absent(const eval_result *r, const char *const *names)
{
    if (r->absent == 0)
        return;
    int K = r->num_classes, shown = 0;
    fprintf(stderr, "vitfit: note: %d of %d classes have no eval images (", r->absent, K);
    for (int k = 0; k < K && shown < 5; k++)
        if (!r->class_count[k])
            fprintf(stderr, "%s'%s'", shown++ ? ", " : "", names[k]);
    fprintf(stderr, "%s); accuracies are over the others\n", r->absent > shown ? ", ..." : "");
}

typedef struct train_opts {
    const char *model, *train, *eval, *out, *class_names;
    long threads;
    int json;
    int allow_outside_root;
    trainer_config cfg;
} train_opts;

/* The summary of a finished run (JSON, see README); NULL when it cannot be
 * built (then nothing is printed).  Paths are reported as text even when
 * they are not UTF-8 (cli_text). */
static json_t *train_json(const train_opts *o, const trainer_result *res,
                          const char *const *classes)
{
    json_t *j = json_pack("{so ss sI sI sI ss sf sf}", "out", cli_json_text(o->out), "method",
                          vit_method_name(o->cfg.method), "steps", (json_int_t)res->steps,
                          "warmup_steps", (json_int_t)res->warmup_steps, "skipped_steps",
                          (json_int_t)res->skipped_steps, "head",
                          res->head_kept ? "checkpoint" : "new", "seconds", res->seconds,
                          "final_train_loss", res->final_loss);
    int ok = j != NULL;
    if (ok)
        ok = json_object_set_new(j, "best_epoch", json_integer(res->best_epoch)) == 0 &&
             json_object_set_new(j, "epochs_run", json_integer(res->epochs_run)) == 0 &&
             json_object_set_new(j, "stopped_early", json_boolean(res->stopped_early)) == 0 &&
             json_object_set_new(j, "augment",
                                 json_string(trainer_augment_name(res->augment_used))) == 0 &&
             json_object_set_new(j, "lr", json_real(o->cfg.lr)) == 0 &&
             json_object_set_new(j, "weight_decay", json_real(o->cfg.weight_decay)) == 0;
    if (ok && res->has_eval)
        ok = json_object_set_new(j, "eval", eval_json(&res->eval, classes)) == 0 &&
             json_object_set_new(j, "eval_on", json_string(res->eval_is_validation
                                                               ? "validation"
                                                               : "eval")) == 0;
    if (ok && res->eval_status != VIT_OK)
        ok = json_object_set_new(j, "eval_error", cli_json_text(res->eval_error.message)) == 0;
    if (!ok) {
        json_decref(j);
        return NULL;
    }
    return j;
}

static void print_progress(void *ctx, const trainer_progress *p)
{
    const train_opts *o = ctx;
    if (o->json) {
        fprintf(stderr,
                "{\"step\":%ld,\"total_steps\":%ld,\"epoch\":%d,\"loss\":%.6f,\"lr\":%.6g,"
                "\"images_per_second\":%.2f,\"eta_seconds\":%.0f}\n",
                p->step, p->total_steps, p->epoch, p->loss, p->lr, p->images_per_second,
                p->eta_seconds);
    } else {
        fprintf(stderr, "step %ld/%ld  epoch %d/%d  loss %.4f  lr %.3g  %.1f img/s  eta %.0fs\n",
                p->step, p->total_steps, p->epoch, p->epochs, p->loss, p->lr,
                p->images_per_second, p->eta_seconds);
    }
}

/* One line per epoch: its mean loss and validation, and the best so far. */
static void print_epoch(void *ctx, const trainer_epoch_info *e)
{
    const train_opts *o = ctx;
    if (o->cfg.log_every == 0)
        return;
    if (o->json) {
        fprintf(stderr, "{\"epoch_end\":%d,\"epochs\":%d,\"train_loss\":%.6f", e->epoch,
                e->epochs, e->train_loss);
        if (e->has_val)
            fprintf(stderr, ",\"val_top1\":%.6f,\"val_top5\":%.6f,\"val_loss\":%.6f",
                    e->val_top1, e->val_top5, e->val_loss);
        fprintf(stderr, ",\"best_epoch\":%d,\"stopping\":%s}\n", e->best_epoch,
                e->stopping ? "true" : "false");
    } else if (e->has_val) {
        fprintf(stderr, "epoch %d/%d  train loss %.4f  val top-1 %.2f%%  loss %.4f%s%s\n",
                e->epoch, e->epochs, e->train_loss, 100 * e->val_top1, e->val_loss,
                e->is_best ? "  (best)" : "", e->stopping ? "  early stop" : "");
    } else {
        fprintf(stderr, "epoch %d/%d  train loss %.4f\n", e->epoch, e->epochs, e->train_loss);
    }
}

/* A note when the warm-up was cut to leave the run's last step for the
 * decay (trainer.h): the run then does not do what --warmup-epochs said. */
static void print_plan(void *ctx, const trainer_plan *p)
{
    const train_opts *o = ctx;
    if (p->warmup_asked > p->warmup_steps)
        fprintf(stderr,
                "vitfit: note: the warm-up (--warmup-epochs %g = %ld steps) is not shorter than "
                "the run (%ld steps): it is cut to %ld steps, so that the last step runs at "
                "--min-lr\n",
                o->cfg.warmup_epochs, p->warmup_asked, p->total_steps, p->warmup_steps);
}

/* Parses a double option in [lo, hi]. */
static int parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return 0;
    *out = v;
    return 1;
}

static int parse_train(int argc, char **argv, train_opts *o)
{
    enum {
        O_MODEL = 256, O_TRAIN, O_EVAL, O_OUT, O_METHOD, O_EPOCHS, O_MAX_STEPS, O_BATCH, O_LR,
        O_MIN_LR, O_WD, O_WARMUP, O_OPT, O_MOMENTUM, O_LS, O_CLIP, O_SEED, O_NO_AUG,
        O_NO_SHUFFLE, O_HEAD, O_THREADS, O_LOADER, O_LIMIT_TRAIN, O_LIMIT_EVAL, O_CLASSES,
        O_SKIP_BAD, O_LOG, O_JSON, O_HELP, O_SCRATCH, O_OUTSIDE, O_RESUME, O_CKPT_DIR,
        O_CKPT_EVERY, O_AUGMENT, O_VAL_SPLIT, O_PATIENCE, O_FEATURE_CACHE,
    };
    static const struct option longopts[] = {
        {"model", required_argument, NULL, O_MODEL}, {"train", required_argument, NULL, O_TRAIN},
        {"eval", required_argument, NULL, O_EVAL}, {"out", required_argument, NULL, O_OUT},
        {"method", required_argument, NULL, O_METHOD}, {"epochs", required_argument, NULL, O_EPOCHS},
        {"max-steps", required_argument, NULL, O_MAX_STEPS},
        {"resume", required_argument, NULL, O_RESUME},
        {"checkpoint-dir", required_argument, NULL, O_CKPT_DIR},
        {"checkpoint-every-steps", required_argument, NULL, O_CKPT_EVERY},
        {"batch-size", required_argument, NULL, O_BATCH}, {"lr", required_argument, NULL, O_LR},
        {"min-lr", required_argument, NULL, O_MIN_LR},
        {"weight-decay", required_argument, NULL, O_WD},
        {"warmup-epochs", required_argument, NULL, O_WARMUP},
        {"optimizer", required_argument, NULL, O_OPT},
        {"momentum", required_argument, NULL, O_MOMENTUM},
        {"label-smoothing", required_argument, NULL, O_LS},
        {"clip-grad", required_argument, NULL, O_CLIP}, {"seed", required_argument, NULL, O_SEED},
        {"no-augment", no_argument, NULL, O_NO_AUG}, {"no-shuffle", no_argument, NULL, O_NO_SHUFFLE},
        {"augment", required_argument, NULL, O_AUGMENT},
        {"validation-split", required_argument, NULL, O_VAL_SPLIT},
        {"early-stopping-patience", required_argument, NULL, O_PATIENCE},
        {"head", required_argument, NULL, O_HEAD}, {"threads", required_argument, NULL, O_THREADS},
        {"loader-threads", required_argument, NULL, O_LOADER},
        {"limit-train", required_argument, NULL, O_LIMIT_TRAIN},
        {"limit-eval", required_argument, NULL, O_LIMIT_EVAL},
        {"class-names", required_argument, NULL, O_CLASSES},
        {"skip-bad", no_argument, NULL, O_SKIP_BAD}, {"log-every", required_argument, NULL, O_LOG},
        {"json", no_argument, NULL, O_JSON}, {"help", no_argument, NULL, O_HELP},
        {"from-scratch", no_argument, NULL, O_SCRATCH},
        {"allow-outside-root", no_argument, NULL, O_OUTSIDE},
        {"feature-cache-mb", required_argument, NULL, O_FEATURE_CACHE},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof *o);
    o->cfg = trainer_defaults();
    o->threads = cli_default_threads();
    trainer_config *c = &o->cfg;
    opterr = 0;
    int ch, which = 0, lr_given = 0, wd_given = 0;
    while ((ch = getopt_long(argc, argv, "", longopts, &which)) != -1) {
        long v = 0;
        int ok = 1;
        switch (ch) {
        case O_MODEL: o->model = optarg; break;
        case O_TRAIN: o->train = optarg; break;
        case O_EVAL: o->eval = optarg; break;
        case O_OUT: o->out = optarg; break;
        case O_CLASSES: o->class_names = optarg; break;
        case O_NO_AUG: c->augment = TRAINER_AUGMENT_NONE; break;
        case O_AUGMENT: ok = trainer_augment_parse(optarg, &c->augment); break;
        case O_VAL_SPLIT: ok = parse_double(optarg, 0, 0.9, &c->validation_split); break;
        case O_PATIENCE: ok = cli_parse_int(optarg, 0, 100000, &v); c->early_stopping_patience = (int)v; break;
        case O_NO_SHUFFLE: c->shuffle = false; break;
        case O_SKIP_BAD: c->on_bad = DS_BAD_SKIP; break;
        case O_SCRATCH: c->from_scratch = true; break;
        case O_JSON: o->json = 1; break;
        case O_OUTSIDE: o->allow_outside_root = 1; break;
        case O_HELP: train_usage(stdout); return -1;
        case O_METHOD: ok = vit_method_parse(optarg, &c->method); break;
        case O_OPT:
            ok = strcmp(optarg, "adamw") == 0 || strcmp(optarg, "sgd") == 0;
            c->optimizer = strcmp(optarg, "sgd") == 0 ? OPTIM_SGD : OPTIM_ADAMW;
            break;
        case O_HEAD:
            ok = !strcmp(optarg, "auto") || !strcmp(optarg, "keep") || !strcmp(optarg, "new");
            c->head = !strcmp(optarg, "keep") ? TRAINER_HEAD_KEEP
                      : !strcmp(optarg, "new") ? TRAINER_HEAD_NEW : TRAINER_HEAD_AUTO;
            break;
        case O_EPOCHS: ok = cli_parse_int(optarg, 1, 100000, &v); c->epochs = (int)v; break;
        case O_MAX_STEPS: ok = cli_parse_int(optarg, 1, 1L << 40, &c->max_steps); break;
        case O_RESUME: c->resume_dir = optarg; break;
        case O_CKPT_DIR: c->checkpoint_dir = optarg; break;
        case O_CKPT_EVERY: ok = cli_parse_int(optarg, 0, 1L << 40, &c->checkpoint_every_steps); break;
        case O_BATCH: ok = cli_parse_int(optarg, 1, 4096, &v); c->batch_size = (int)v; break;
        case O_SEED: ok = cli_parse_int(optarg, 0, 1L << 62, &v); c->seed = (uint64_t)v; break;
        case O_THREADS: ok = cli_parse_int(optarg, 1, 64, &o->threads); break;
        case O_LOADER: ok = cli_parse_int(optarg, 1, 64, &v); c->loader_threads = (int)v; break;
        case O_LIMIT_TRAIN: ok = cli_parse_int(optarg, 1, 1L << 40, &v); c->train_limit = (size_t)v; break;
        case O_LIMIT_EVAL: ok = cli_parse_int(optarg, 1, 1L << 40, &v); c->eval_limit = (size_t)v; break;
        case O_LOG: ok = cli_parse_int(optarg, 0, 1L << 40, &c->log_every); break;
        case O_FEATURE_CACHE:
            ok = cli_parse_int(optarg, 0, 1L << 24, &v);
            c->feature_cache_bytes = (size_t)v << 20;
            break;
        case O_LR: ok = parse_double(optarg, 1e-12, 100, &c->lr); lr_given = 1; break;
        case O_MIN_LR: ok = parse_double(optarg, 0, 100, &c->min_lr); break;
        case O_WD: ok = parse_double(optarg, 0, 10, &c->weight_decay); wd_given = 1; break;
        case O_WARMUP: ok = parse_double(optarg, 0, 1e6, &c->warmup_epochs); break;
        case O_MOMENTUM: ok = parse_double(optarg, 0, 1, &c->momentum); break;
        case O_LS: ok = parse_double(optarg, 0, 1, &c->label_smoothing); break;
        case O_CLIP: ok = parse_double(optarg, 0, 1e9, &c->clip_grad_norm); break;
        default:
            return cli_usage_error("train", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
        if (!ok)
            return cli_usage_error("train", "bad value '%s' for --%s", optarg, longopts[which].name);
    }
    if (optind != argc)
        return cli_usage_error("train", "unexpected argument '%s'", argv[optind]);
    if (!o->model)
        o->model = cfg_default_model();
    if (!o->train || !o->out)
        return cli_usage_error("train", "--train and --out are required");
    /* the method's learning rate and weight decay, unless given */
    trainer_config method_defaults = trainer_defaults_for(c->method);
    if (!lr_given)
        c->lr = method_defaults.lr;
    if (!wd_given)
        c->weight_decay = method_defaults.weight_decay;
    if (c->from_scratch && c->method != VIT_METHOD_FULL)
        return cli_usage_error("train", "--from-scratch needs --method full");
    if ((c->checkpoint_dir || c->resume_dir) && c->method == VIT_METHOD_FULL)
        return cli_usage_error("train", "--checkpoint-dir and --resume are not supported for "
                                        "--method full yet");
    if (c->checkpoint_every_steps > 0 && !c->checkpoint_dir && !c->resume_dir)
        return cli_usage_error("train", "--checkpoint-every-steps needs --checkpoint-dir");
    if (c->resume_dir && !c->checkpoint_dir)
        c->checkpoint_dir = c->resume_dir; /* keep checkpointing the resumed run */
    if (c->min_lr > c->lr)
        return cli_usage_error("train", "--min-lr %g is above --lr %g: the schedule decays from "
                               "--lr to --min-lr", c->min_lr, c->lr);
    return 0;
}

/* Fails early (before any training) when --out cannot be written. */
static int check_out(const train_opts *o, char *task_name, size_t len)
{
    struct stat sb;
    if (stat(o->out, &sb) == 0 && (o->cfg.method == VIT_METHOD_FULL || S_ISDIR(sb.st_mode))) {
        fprintf(stderr, "vitfit: %s already exists\n", o->out);
        return 0;
    }
    char *copy = strdup(o->out);
    if (!copy)
        return 0;
    char *dir = dirname(copy);
    int writable = access(dir, W_OK) == 0;
    if (!writable)
        fprintf(stderr, "vitfit: cannot write into %s: %s\n", dir, strerror(errno));
    free(copy);
    if (!writable)
        return 0;
    if (o->cfg.method != VIT_METHOD_FULL) {
        char *copy2 = strdup(o->out);
        const char *base = copy2 ? basename(copy2) : "";
        size_t n = strlen(base);
        if (n > 12 && strcmp(base + n - 12, ".safetensors") == 0)
            n -= 12;
        snprintf(task_name, len, "%.*s", (int)n, base);
        free(copy2);
        if (!task_name_valid(task_name)) {
            fprintf(stderr,
                    "vitfit: task name '%s' (from --out) must match ^[a-z0-9][a-z0-9._-]{0,63}$\n",
                    task_name);
            return 0;
        }
    }
    return 1;
}

int cli_train(int argc, char **argv)
{
    train_opts o;
    int rc = parse_train(argc, argv, &o);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    /* --class-names names IDX label numbers (of --train, --eval or both) */
    if (o.class_names && names_own_classes(o.train) && (!o.eval || names_own_classes(o.eval)))
        return cli_usage_error("train", "--class-names names the label numbers of an IDX set, "
                               "and neither --train nor --eval is one");
    char task_name[TASK_NAME_MAX + 16] = "";
    if (!check_out(&o, task_name, sizeof task_name))
        return CLI_FAIL;
    vit_set_threads((int)o.threads);
    o.cfg.progress = print_progress;
    o.cfg.plan = print_plan;
    o.cfg.epoch_end = print_epoch;
    o.cfg.ctx = &o;
    o.cfg.on_bad_fn = report_bad;
    o.cfg.log = report_log;

    vit_error err = {0};
    vit_model *m = NULL;
    ds_dataset *train = NULL, *eval = NULL;
    char **names = o.class_names ? split_names(o.class_names) : NULL;
    const char **train_classes = NULL;
    trainer_result res = {0};
    char model_path[CFG_PATH_SIZE];
    int path_rc = cli_model_path(o.model, model_path, sizeof model_path);
    if (path_rc != CLI_OK) {
        free_names(names);
        return path_rc;
    }
    vit_status st = vit_model_load(model_path, &m, &err);
    if (st == VIT_OK)
        st = open_dataset(o.train, names, NULL, o.allow_outside_root, &train, &err);
    if (st == VIT_OK) {
        int K = ds_num_classes(train);
        if (!(train_classes = calloc((size_t)K + 1, sizeof *train_classes)))
            st = vit_error_set(&err, VIT_ERR_NOMEM, "out of memory");
        for (int k = 0; st == VIT_OK && k < K; k++)
            train_classes[k] = ds_class_name(train, k);
    }
    if (st == VIT_OK && o.eval) {
        st = open_dataset(o.eval, names, train_classes, o.allow_outside_root, &eval, &err);
        if (st != VIT_OK)
            vit_error_prefix(&err, "--eval");
    }
    if (st == VIT_OK)
        st = trainer_run(m, train, eval, &o.cfg, &res, &err);
    if (st == VIT_OK && res.skipped_steps > 0)
        fprintf(stderr, "vitfit: warning: %ld of %ld steps had inf/NaN gradients and changed "
                        "nothing\n", res.skipped_steps, res.steps);
    if (st == VIT_OK && res.has_eval)
        note_absent(&res.eval, train_classes);
    if (st == VIT_OK && res.task) {
        snprintf(res.task->name, sizeof res.task->name, "%s", task_name);
        char steps[32], loss[32], seed[32], lr[32];
        snprintf(steps, sizeof steps, "%ld", res.steps);
        snprintf(loss, sizeof loss, "%.6f", res.final_loss);
        snprintf(seed, sizeof seed, "%llu", (unsigned long long)o.cfg.seed);
        snprintf(lr, sizeof lr, "%g", o.cfg.lr);
        char top1[32] = "";
        if (res.has_eval)
            snprintf(top1, sizeof top1, "%.6f", res.eval.top1);
        /* metadata is JSON: a path that is not UTF-8 is kept as text
         * (cli_text), or the save -- after the whole run -- would fail */
        char *train_data = cli_text(o.train);
        const char *keys[] = {"steps", "train_loss", "seed", "lr", "train_data",
                              res.has_eval ? "eval_top1" : NULL, NULL};
        const char *values[] = {steps, loss, seed, lr, train_data, top1, NULL};
        task_meta meta = {keys, values};
        st = train_data ? task_save(m, res.task, &meta, o.out, &err)
                        : vit_error_set(&err, VIT_ERR_NOMEM, "out of memory");
        free(train_data);
    } else if (st == VIT_OK && res.model) {
        st = vit_model_save(res.model, o.out, &err);
    }
    /* The run is saved.  A summary that cannot be printed, or an evaluation
     * that failed after training (trainer.h: the run is kept), is still a
     * failure of the command: exit 1, after one line naming it. */
    rc = CLI_OK;
    if (st == VIT_OK)
        rc = cli_print_json(train_json(&o, &res, train_classes), 0);
    if (st == VIT_OK && res.eval_status != VIT_OK) {
        fprintf(stderr, "vitfit: the evaluation after training failed (%s was written): %s\n",
                o.out, res.eval_error.message);
        rc = CLI_FAIL;
    }
    trainer_result_free(&res);
    free(train_classes);
    ds_close(train);
    ds_close(eval);
    free_names(names);
    vit_model_free(m);
    return st != VIT_OK ? cli_fail(&err) : rc;
}

int cli_eval(int argc, char **argv)
{
    enum { O_MODEL = 256, O_TASK, O_DATA, O_BATCH, O_THREADS, O_LOADER, O_LIMIT, O_CLASSES, O_JSON, O_HELP,
           O_OUTSIDE, O_SKIP_BAD, O_PRECISION };
    static const struct option longopts[] = {
        {"model", required_argument, NULL, O_MODEL}, {"task", required_argument, NULL, O_TASK},
        {"data", required_argument, NULL, O_DATA}, {"batch-size", required_argument, NULL, O_BATCH},
        {"threads", required_argument, NULL, O_THREADS},
        {"loader-threads", required_argument, NULL, O_LOADER},
        {"limit", required_argument, NULL, O_LIMIT},
        {"class-names", required_argument, NULL, O_CLASSES}, {"json", no_argument, NULL, O_JSON},
        {"help", no_argument, NULL, O_HELP},
        {"allow-outside-root", no_argument, NULL, O_OUTSIDE},
        {"skip-bad", no_argument, NULL, O_SKIP_BAD},
        {"precision", required_argument, NULL, O_PRECISION}, {NULL, 0, NULL, 0},
    };
    const char *model = NULL, *task_path = NULL, *data = NULL, *class_list = NULL;
    vit_precision precision = VIT_PRECISION_FP32;
    long batch = 32, threads = cli_default_threads(), loader_threads = 2, limit = 0;
    int as_json = 0, allow_outside = 0, skip_bad = 0, ch, which = 0, ok;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "", longopts, &which)) != -1) {
        ok = 1;
        switch (ch) {
        case O_MODEL: model = optarg; break;
        case O_TASK: task_path = optarg; break;
        case O_DATA: data = optarg; break;
        case O_CLASSES: class_list = optarg; break;
        case O_JSON: as_json = 1; break;
        case O_OUTSIDE: allow_outside = 1; break;
        case O_SKIP_BAD: skip_bad = 1; break;
        case O_HELP: eval_usage(stdout); return CLI_OK;
        case O_BATCH: ok = cli_parse_int(optarg, 1, 4096, &batch); break;
        case O_THREADS: ok = cli_parse_int(optarg, 1, 64, &threads); break;
        case O_LOADER: ok = cli_parse_int(optarg, 1, 64, &loader_threads); break;
        case O_LIMIT: ok = cli_parse_int(optarg, 1, 1L << 40, &limit); break;
        case O_PRECISION: ok = vit_precision_parse(optarg, &precision); break;
        default:
            return cli_usage_error("eval", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
        if (!ok)
            return cli_usage_error("eval", "bad value '%s' for --%s", optarg, longopts[which].name);
    }
    if (!model)
        model = cfg_default_model();
    if (!data || optind != argc)
        return cli_usage_error("eval", "--data is required (and nothing else)");
    if (class_list && names_own_classes(data))
        return cli_usage_error("eval", "--class-names names the label numbers of an IDX set; %s "
                               "names its classes itself", data);
    vit_set_threads((int)threads);
    vit_error err = {0};
    vit_model *m = NULL, *view = NULL;
    vit_task *task = NULL;
    ds_dataset *d = NULL;
    eval_result r = {0};
    char **names = class_list ? split_names(class_list) : NULL;
    /* one copy of the weights, the packed one: evaluating never trains */
    vit_load_options lo = {.precision = precision, .one_copy = true};
    char model_path[CFG_PATH_SIZE];
    int path_rc = cli_model_path(model, model_path, sizeof model_path);
    if (path_rc != CLI_OK) {
        free_names(names);
        return path_rc;
    }
    vit_status st = vit_model_load_with(model_path, &lo, &m, &err);
    if (st == VIT_OK && task_path) {
        st = task_load(m, task_path, &task, &err);
        if (st == VIT_OK)
            st = vit_model_view(m, task->num_classes, task->trainable, &view, &err);
    }
    /* the head's class names: the task's, else the checkpoint's labels, as a
     * NULL-terminated list for ds_options.classes */
    char **labels = task ? task->labels : m ? m->labels : NULL;
    int K = task ? task->num_classes : m ? m->cfg.num_classes : 0;
    const char **classes = NULL;
    if (st == VIT_OK && (!labels || K < 1))
        st = vit_error_set(&err, VIT_ERR_INVALID, "%s has no classification head to evaluate",
                           model);
    if (st == VIT_OK && !(classes = calloc((size_t)K + 1, sizeof *classes)))
        st = vit_error_set(&err, VIT_ERR_NOMEM, "out of memory");
    for (int k = 0; st == VIT_OK && k < K; k++)
        classes[k] = labels[k];
    if (st == VIT_OK) {
        st = open_dataset(data, names, classes, allow_outside, &d, &err);
        if (st != VIT_OK)
            vit_error_prefix(&err, "--data");
    }
    eval_options eo = {.limit = (size_t)limit, .batch_size = (int)batch,
                       .loader_threads = (int)loader_threads,
                       .on_bad = skip_bad ? DS_BAD_SKIP : DS_BAD_FAIL, .on_bad_fn = report_bad};
    if (st == VIT_OK)
        st = trainer_evaluate(view ? view : m, classes, d, &eo, &r, &err);
    if (st == VIT_OK)
        note_absent(&r, classes);
    int rc = CLI_OK;
    if (st == VIT_OK) {
        if (as_json)
            rc = cli_print_json(eval_json(&r, classes), 0);
        else
            printf("%ld images: top-1 %.2f%%, top-5 %.2f%%, loss %.4f%s\n", r.count,
                   100 * r.top1, 100 * r.top5, r.loss,
                   r.skipped ? " (unreadable images skipped: see stderr)" : "");
    }
    eval_result_free(&r);
    ds_close(d);
    free(classes);
    free_names(names);
    vit_model_free(view);
    task_free(task);
    vit_model_free(m);
    return st == VIT_OK ? rc : cli_fail(&err);
}
