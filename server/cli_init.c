/*
 * cli_init.c - `vitfit init`: a checkpoint of a preset's shapes with seeded
 * random weights.
 *
 * For measuring and testing where the real sizes matter (a ViT-B/16-shaped
 * model to load-test `vitfit serve` with) without downloading one.  The
 * weights come from vit_model_randomize (randinit.h: uniform, +-0.035 for
 * matrices, +-0.02 for biases, 1 +- 0.1 for LayerNorm gains), which keeps a
 * 12- or 24-block pre-norm forward pass finite; they carry no knowledge, so
 * the scores are near-uniform.  The same preset, classes and seed give the
 * same bytes.  The directory is written by vit_model_save (timm layout,
 * config.json with label_names): it must not exist, and a failed write
 * leaves nothing behind.
 */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "vit.h"

#define INIT_MAX_CLASSES 1000000 /* vit_config_validate's bound */

static void init_usage(FILE *out)
{
    fprintf(out,
            "usage: vitfit init --preset vit-b16|vit-l14-clip|vit-tiny --out DIR\n"
            "                   [--seed N] [--classes K] [--labels NAME,NAME,...]\n"
            "  --preset   the architecture (see 'vitfit inspect --preset NAME')\n"
            "  --out      checkpoint directory to create (model.safetensors + config.json);\n"
            "             it must not exist\n"
            "  --seed     seed of the random weights (default 0): same seed, same weights\n"
            "  --classes  head size (default: the preset's -- vit-b16 21843, vit-tiny 10,\n"
            "             vit-l14-clip 0); 0 = no head (a backbone for tasks)\n"
            "  --labels   class names, comma-separated (default class_0, class_1, ...);\n"
            "             their count is the head size unless --classes says the same\n");
}

typedef struct init_opts {
    const char *preset, *out, *labels;
    long seed;
    long classes; /* -1: the preset's, or the number of --labels */
} init_opts;

/* Parses the command line into o; 0 to go on, -1 after --help, else the
 * usage exit code (the message printed). */
static int parse_init(int argc, char **argv, init_opts *o)
{
    static const struct option longopts[] = {
        {"preset", required_argument, NULL, 'p'}, {"out", required_argument, NULL, 'o'},
        {"seed", required_argument, NULL, 's'},   {"classes", required_argument, NULL, 'K'},
        {"labels", required_argument, NULL, 'L'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *o = (init_opts){.seed = 0, .classes = -1};
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'p': o->preset = optarg; break;
        case 'o': o->out = optarg; break;
        case 'L': o->labels = optarg; break;
        case 'h': init_usage(stdout); return -1;
        case 's':
            if (!cli_parse_int(optarg, 0, INT64_MAX, &o->seed))
                return cli_usage_error("init", "--seed needs a non-negative integer, got '%s'",
                                       optarg);
            break;
        case 'K':
            if (!cli_parse_int(optarg, 0, INIT_MAX_CLASSES, &o->classes))
                return cli_usage_error("init", "--classes needs an integer in [0, %d], got '%s'",
                                       INIT_MAX_CLASSES, optarg);
            break;
        default:
            return cli_usage_error("init", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_usage_error("init", "unexpected argument '%s'", argv[optind]);
    if (!o->preset)
        return cli_usage_error("init", "--preset is required");
    if (!o->out || !o->out[0])
        return cli_usage_error("init", "--out is required");
    vit_config cfg;
    vit_error err;
    if (vit_config_preset(o->preset, &cfg, &err) != VIT_OK)
        return cli_usage_error("init", "%s", err.message);
    if (o->labels) {
        long n = 1;
        size_t len = strlen(o->labels);
        for (const char *s = o->labels; *s; s++)
            n += *s == ',';
        if (!len || o->labels[0] == ',' || o->labels[len - 1] == ',' || strstr(o->labels, ",,"))
            return cli_usage_error("init", "--labels has an empty name");
        if (o->classes == 0)
            return cli_usage_error("init", "--labels with --classes 0 (no head has no labels)");
        if (o->classes > 0 && n != o->classes)
            return cli_usage_error("init", "--labels names %ld classes, --classes says %ld", n,
                                   o->classes);
        if (n > INIT_MAX_CLASSES)
            return cli_usage_error("init", "--labels names more than %d classes",
                                   INIT_MAX_CLASSES);
        o->classes = n;
    }
    if (o->classes < 0)
        o->classes = cfg.num_classes;
    return 0;
}

/* K class names: the comma-separated list of K non-empty names (checked by
 * parse_init; copied into one buffer that *storage owns, commas cut to NULs)
 * or class_0 .. class_{K-1}.  *names and *storage are the caller's to free
 * (also on failure); VIT_ERR_NOMEM with err set. */
static vit_status make_labels(const char *list, int K, char ***names, char **storage,
                              vit_error *err)
{
    *names = calloc((size_t)K, sizeof **names);
    size_t len = list ? strlen(list) + 1 : (size_t)K * sizeof "class_1000000";
    *storage = malloc(len);
    if (!*names || !*storage)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for %d labels", K);
    if (!list) {
        char *p = *storage;
        for (int k = 0; k < K; k++) {
            (*names)[k] = p;
            p += snprintf(p, sizeof "class_1000000", "class_%d", k) + 1;
        }
        return VIT_OK;
    }
    memcpy(*storage, list, len);
    char *p = *storage;
    for (int k = 0; k < K; k++) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        (*names)[k] = p;
        p = comma ? comma + 1 : p + strlen(p);
    }
    return VIT_OK;
}

int cli_init(int argc, char **argv)
{
    init_opts o;
    int rc = parse_init(argc, argv, &o);
    if (rc)
        return rc < 0 ? CLI_OK : rc;

    vit_error err = {0};
    struct stat sb;
    if (lstat(o.out, &sb) == 0) { /* before the work; vit_model_save checks again */
        fprintf(stderr, "vitfit: %s already exists; not overwriting it\n", o.out);
        return CLI_FAIL;
    }
    vit_config cfg;
    vit_model *m = NULL;
    char **names = NULL, *storage = NULL;
    vit_status st = vit_config_preset(o.preset, &cfg, &err);
    cfg.num_classes = (int)o.classes;
    if (st == VIT_OK)
        st = vit_model_create(&cfg, &m, &err);
    if (st == VIT_OK && cfg.num_classes > 0) {
        st = make_labels(o.labels, cfg.num_classes, &names, &storage, &err);
        if (st == VIT_OK)
            st = vit_model_set_labels(m, (const char *const *)names, &err);
    }
    if (st == VIT_OK) {
        vit_model_randomize(m, (uint64_t)o.seed);
        st = vit_model_save(m, o.out, &err);
    }
    if (st == VIT_OK)
        printf("wrote %s: %s, %zu parameters, %d classes, seed %ld\n", o.out, o.preset,
               vit_model_param_count(m), cfg.num_classes, o.seed);
    free(names);
    free(storage);
    vit_model_free(m);
    return st == VIT_OK ? CLI_OK : cli_fail(&err);
}
