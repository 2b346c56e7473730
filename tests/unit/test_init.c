/*
 * test_init.c - `vitfit init`: seeded preset-shaped checkpoints.
 *
 * Runs the real binary (VITFIT_BIN, run_cli.h) and reads what it wrote back
 * through the other commands, as a user would: the same seed gives the same
 * bytes and the same classify output, another seed other ones; --labels and
 * --classes reach the head and config.json; an existing --out is refused
 * with nothing touched; usage errors exit 2 and create nothing; and (in a
 * build without sanitizers) the ViT-B/16 checkpoint has timm's parameter count and a finite, image-dependent
 * forward pass (random weights that blew up over 12 blocks would show here).
 */
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "run_cli.h"
#include "test_util.h"

static char tmpdir[] = "/tmp/vitfit-test-init-XXXXXX";

static const char *img_a = "@models/fashion-vit-tiny/samples/2_trouser.png";
static const char *img_b = "@tests/data/images/chelsea.png";

/* dir/name into buf. */
static const char *in_tmp(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", tmpdir, name);
    return buf;
}

/* The whole file at path (caller frees), its length in *len; NULL if unreadable. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0, got;
    do {
        if (n == cap) {
            char *grown = realloc(buf, cap = cap ? 2 * cap : 1 << 16);
            if (!grown) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = grown;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
    } while (got > 0);
    fclose(f);
    *len = n;
    return buf;
}

/* 1 when dir/model.safetensors of both checkpoints hold the same bytes. */
static int same_weights(const char *a, const char *b)
{
    char pa[4200], pb[4200];
    size_t la = 0, lb = 0;
    snprintf(pa, sizeof pa, "%s/model.safetensors", a);
    snprintf(pb, sizeof pb, "%s/model.safetensors", b);
    char *x = read_file(pa, &la), *y = read_file(pb, &lb);
    CHECKF(x && y, "cannot read %s or %s", pa, pb);
    int same = x && y && la == lb && memcmp(x, y, la) == 0;
    free(x);
    free(y);
    return same;
}

/* Entries of dir other than . and .. (-1 if it cannot be opened). */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

/* `vitfit init ARGS... --out tmpdir/name`, expected to succeed. */
#define INIT_OK(name, ...)                                                                \
    do {                                                                                  \
        char out_[4096];                                                                  \
        run_result *r_ = run_vitfit("init", "--out", in_tmp(out_, sizeof out_, name),     \
                                    __VA_ARGS__, NULL);                                   \
        CHECKF(r_->status == 0 && strstr(r_->out, "wrote "), "init %s: exit %d: %s%s",     \
               name, r_->status, r_->out, r_->err);                                       \
    } while (0)

/* classify --json --logits on one image; the parsed reply (caller decrefs) or NULL. */
static json_t *classify(const char *model, const char *img, const char *top_k)
{
    run_result *r = run_vitfit("classify", "--model", model, "--json", "--logits", "--top-k",
                               top_k, img, NULL);
    json_error_t jerr;
    json_t *j = r->status == 0 ? json_loads(r->out, 0, &jerr) : NULL;
    CHECKF(j != NULL, "classify --model %s %s: exit %d: %s%s", model, img, r->status, r->out,
           r->err);
    return j;
}

/* Number of logits in a classify reply that are finite; *n gets the total. */
static size_t finite_logits(const json_t *reply, size_t *n)
{
    const json_t *logits = json_object_get(reply, "logits");
    size_t i, finite = 0;
    const json_t *v;
    *n = json_array_size(logits);
    json_array_foreach(logits, i, v)
        finite += json_is_number(v) && isfinite(json_number_value(v));
    return finite;
}

/* inspect --json of a checkpoint (caller decrefs), or NULL. */
static json_t *inspect(const char *dir)
{
    run_result *r = run_vitfit("inspect", "--json", dir, NULL);
    json_error_t jerr;
    json_t *j = r->status == 0 ? json_loads(r->out, 0, &jerr) : NULL;
    CHECKF(j != NULL, "inspect %s: exit %d: %s%s", dir, r->status, r->out, r->err);
    return j;
}

static long long config_int(const json_t *inspected, const char *key)
{
    return (long long)json_integer_value(
        json_object_get(json_object_get(inspected, "config"), key));
}

/* ---- the seed decides the weights, and nothing else does ---------------- */

static void test_seeds(void)
{
    fprintf(stderr, "seeds\n");
    char a[4096], b[4096], c[4096];
    INIT_OK("s1a", "--preset", "vit-tiny", "--seed", "1");
    INIT_OK("s1b", "--preset", "vit-tiny", "--seed", "1");
    INIT_OK("s2", "--preset", "vit-tiny", "--seed", "2");
    INIT_OK("s0", "--preset", "vit-tiny"); /* --seed defaults to 0 */
    INIT_OK("s0b", "--seed", "0", "--preset", "vit-tiny");
    in_tmp(a, sizeof a, "s1a");
    in_tmp(b, sizeof b, "s1b");
    in_tmp(c, sizeof c, "s2");
    CHECKF(same_weights(a, b), "seed 1 twice: different weights");
    CHECKF(!same_weights(a, c), "seeds 1 and 2: the same weights");
    CHECKF(same_weights(in_tmp(a, sizeof a, "s0"), in_tmp(b, sizeof b, "s0b")),
           "no --seed and --seed 0: different weights");
    CHECKF(!same_weights(a, c), "seeds 0 and 2: the same weights");

    /* the same through classify: identical replies for one seed, others for another */
    json_t *ra = classify(in_tmp(a, sizeof a, "s1a"), img_a, "10");
    json_t *rb = classify(in_tmp(b, sizeof b, "s1b"), img_a, "10");
    json_t *rc = classify(in_tmp(c, sizeof c, "s2"), img_a, "10");
    if (ra && rb && rc) {
        CHECKF(json_equal(ra, rb), "seed 1 twice: classify replies differ");
        CHECKF(!json_equal(json_object_get(ra, "logits"), json_object_get(rc, "logits")),
               "seeds 1 and 2: the same logits");
        size_t n, finite = finite_logits(ra, &n);
        CHECKF(n == 10 && finite == n, "vit-tiny: %zu of %zu logits finite, want 10", finite, n);
        /* labels default to class_0 .. class_9: all ten, each once */
        int seen[10] = {0};
        size_t i;
        const json_t *v;
        json_array_foreach(json_object_get(ra, "labels"), i, v) {
            int k = -1;
            const char *s = json_string_value(v);
            CHECKF(s && sscanf(s, "class_%d", &k) == 1 && k >= 0 && k < 10 && !seen[k]++,
                   "label %zu is '%s', want one of class_0..class_9 once", i, s ? s : "?");
        }
        CHECKF(i == 10, "%zu labels, want 10", i);
    }
    json_decref(ra);
    json_decref(rb);
    json_decref(rc);

    json_t *j = inspect(in_tmp(a, sizeof a, "s1a"));
    if (j) {
        CHECK(strcmp(json_string_value(json_object_get(j, "layout")), "timm") == 0);
        CHECKF(config_int(j, "num_classes") == 10 && config_int(j, "width") == 64 &&
                   config_int(j, "depth") == 2 && config_int(j, "image_size") == 32,
               "vit-tiny checkpoint has another shape: %lld classes, width %lld, depth %lld",
               config_int(j, "num_classes"), config_int(j, "width"), config_int(j, "depth"));
    }
    json_decref(j);
    CHECK(run_vitfit("inspect", in_tmp(a, sizeof a, "s1a"), NULL)->status == 0);
}

/* ---- the head: --labels and --classes ----------------------------------- */

/* The labels of a classify reply, sorted and joined with ','. */
static void sorted_labels(const json_t *reply, char *out, size_t len)
{
    const json_t *labels = json_object_get(reply, "labels");
    size_t n = json_array_size(labels);
    const char *names[16] = {0};
    for (size_t i = 0; i < n && i < 16; i++)
        names[i] = json_string_value(json_array_get(labels, i));
    for (size_t i = 1; i < n && i < 16; i++) /* insertion sort */
        for (size_t k = i; k > 0 && names[k] && names[k - 1] && strcmp(names[k - 1], names[k]) > 0; k--) {
            const char *t = names[k];
            names[k] = names[k - 1];
            names[k - 1] = t;
        }
    out[0] = '\0';
    for (size_t i = 0; i < n && i < 16; i++)
        snprintf(out + strlen(out), len - strlen(out), "%s%s", i ? "," : "", names[i] ? names[i] : "?");
}

static void test_head(void)
{
    fprintf(stderr, "labels and classes\n");
    char dir[4096], got[512];
    INIT_OK("labels", "--preset", "vit-tiny", "--labels", "cat,dog,bird");
    INIT_OK("labels3", "--preset", "vit-tiny", "--labels", "cat,dog,bird", "--classes", "3");
    INIT_OK("classes5", "--preset", "vit-tiny", "--classes", "5");
    INIT_OK("classes0", "--preset", "vit-tiny", "--classes", "0");

    json_t *r = classify(in_tmp(dir, sizeof dir, "labels"), img_b, "5");
    sorted_labels(r, got, sizeof got);
    CHECKF(strcmp(got, "bird,cat,dog") == 0, "--labels cat,dog,bird: classify says %s", got);
    double sum = 0;
    for (size_t i = 0; i < json_array_size(json_object_get(r, "scores")); i++)
        sum += json_number_value(json_array_get(json_object_get(r, "scores"), i));
    CHECKF(fabs(sum - 1) < 1e-5, "3 classes: scores sum to %g", sum);
    json_decref(r);
    r = classify(in_tmp(dir, sizeof dir, "labels3"), img_b, "5");
    sorted_labels(r, got, sizeof got);
    CHECKF(strcmp(got, "bird,cat,dog") == 0, "--labels with --classes 3: classify says %s", got);
    json_decref(r);

    r = classify(in_tmp(dir, sizeof dir, "classes5"), img_b, "10");
    sorted_labels(r, got, sizeof got);
    CHECKF(strcmp(got, "class_0,class_1,class_2,class_3,class_4") == 0,
           "--classes 5: classify says %s", got);
    json_decref(r);

    json_t *j = inspect(in_tmp(dir, sizeof dir, "classes0"));
    CHECKF(j && config_int(j, "num_classes") == 0, "--classes 0: %lld classes",
           config_int(j, "num_classes"));
    json_decref(j);
    run_result *rr = run_vitfit("classify", "--model", dir, img_b, NULL);
    CHECKF(rr->status == 1 && strstr(rr->err, "head"), "--classes 0, classify: exit %d: %s",
           rr->status, rr->err);
}

/* ---- refusals ----------------------------------------------------------- */

static void test_refusals(void)
{
    fprintf(stderr, "refusals\n");
    char dir[4096], keep[4200];
    /* an existing directory: refused, its file untouched, nothing new beside it */
    in_tmp(dir, sizeof dir, "existing");
    VIT_ASSERT(mkdir(dir, 0700) == 0);
    snprintf(keep, sizeof keep, "%s/model.safetensors", dir);
    FILE *f = fopen(keep, "wb");
    VIT_ASSERT(f && fputs("precious", f) >= 0 && fclose(f) == 0);
    int before = count_entries(tmpdir);
    run_result *r = run_vitfit("init", "--preset", "vit-tiny", "--out", dir, NULL);
    CHECKF(r->status == 1 && count_lines(r->err) == 1 && strstr(r->err, "exists"),
           "existing --out: exit %d: %s", r->status, r->err);
    size_t len = 0;
    char *text = read_file(keep, &len);
    CHECKF(text && len == 8 && memcmp(text, "precious", 8) == 0, "existing --out was overwritten");
    free(text);
    CHECKF(count_entries(dir) == 1, "existing --out: %d entries in it, want 1", count_entries(dir));
    CHECKF(count_entries(tmpdir) == before, "existing --out: %d entries beside it, want %d",
           count_entries(tmpdir), before);
    /* a plain file in the way, and a dangling symbolic link */
    CHECK(run_vitfit("init", "--preset", "vit-tiny", "--out", keep, NULL)->status == 1);
    char link[4200];
    snprintf(link, sizeof link, "%s/dangling", tmpdir);
    VIT_ASSERT(symlink("/nonexistent-vitfit-target", link) == 0);
    CHECK(run_vitfit("init", "--preset", "vit-tiny", "--out", link, NULL)->status == 1);

    /* usage errors: exit 2, one line, nothing created */
    in_tmp(dir, sizeof dir, "never");
    static const char *const bad[][8] = {
        {"--preset", "vit-b32", NULL},
        {"--preset", "", NULL},
        {NULL},
        {"--preset", NULL},
        {"--preset", "vit-tiny", "--seed", "-1", NULL},
        {"--preset", "vit-tiny", "--seed", "x", NULL},
        {"--preset", "vit-tiny", "--classes", "1000001", NULL},
        {"--preset", "vit-tiny", "--classes", "-1", NULL},
        {"--preset", "vit-tiny", "--labels", "a,b", "--classes", "3", NULL},
        {"--preset", "vit-tiny", "--labels", "a", "--classes", "0", NULL},
        {"--preset", "vit-tiny", "--labels", "a,,b", NULL},
        {"--preset", "vit-tiny", "--labels", "a,b,", NULL},
        {"--preset", "vit-tiny", "--labels", "", NULL},
        {"--preset", "vit-tiny", "extra", NULL},
        {"--preset", "vit-tiny", "--frobnicate", NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *const *a = bad[i];
        r = run_vitfit("init", "--out", dir, a[0], a[1], a[2], a[3], a[4], a[5], a[6], NULL);
        CHECKF(r->status == 2 && count_lines(r->err) == 1 && strncmp(r->err, "vitfit init:", 12) == 0,
               "usage error %zu (%s %s %s %s): exit %d: %s", i, a[0] ? a[0] : "", a[0] && a[1] ? a[1] : "",
               a[0] && a[1] && a[2] ? a[2] : "", a[0] && a[1] && a[2] && a[3] ? a[3] : "", r->status, r->err);
        struct stat sb;
        CHECKF(lstat(dir, &sb) != 0, "usage error %zu created %s", i, dir);
    }
    r = run_vitfit("init", "--preset", "vit-tiny", NULL);
    CHECKF(r->status == 2 && strstr(r->err, "--out"), "no --out: exit %d: %s", r->status, r->err);
    /* a label vit_label_problem refuses: a run-time error, nothing written */
    r = run_vitfit("init", "--preset", "vit-tiny", "--out", dir, "--labels", "a,b\x1b[31m", NULL);
    CHECKF(r->status == 1 && count_lines(r->err) == 1, "control character in a label: exit %d: %s",
           r->status, r->err);
    CHECK(count_entries(tmpdir) == before + 1); /* the link; no .tmp directory left */
    r = run_vitfit("init", "--help", NULL);
    CHECKF(r->status == 0 && strstr(r->out, "--preset"), "init --help: exit %d", r->status);
}

/* ---- ViT-B/16 at full size ---------------------------------------------- */

static void test_b16(void)
{
    fprintf(stderr, "vit-b16 (346 MB)\n");
    char dir[4096], weights[4200], config[4200];
    INIT_OK("b16", "--preset", "vit-b16", "--classes", "1000", "--seed", "3");
    in_tmp(dir, sizeof dir, "b16");
    json_t *j = inspect(dir);
    /* timm's vit_base_patch16_224 with a 1000-class head: 86,567,656 */
    long long params = (long long)json_integer_value(json_object_get(j, "parameters"));
    CHECKF(params == 86567656, "vit-b16: %lld parameters, want 86567656", params);
    CHECKF(config_int(j, "num_classes") == 1000 && config_int(j, "width") == 768 &&
               config_int(j, "depth") == 12 && config_int(j, "heads") == 12 &&
               config_int(j, "patch_size") == 16 && config_int(j, "image_size") == 224,
           "vit-b16: wrong shape");
    json_decref(j);
    struct stat sb;
    snprintf(weights, sizeof weights, "%s/model.safetensors", dir);
    CHECKF(stat(weights, &sb) == 0 && sb.st_size > 86567656LL * 4 &&
               sb.st_size < 86567656LL * 4 + (1 << 16),
           "vit-b16: model.safetensors is %lld bytes", (long long)sb.st_size);
    snprintf(config, sizeof config, "%s/config.json", dir);
    json_error_t jerr;
    j = json_load_file(config, 0, &jerr);
    const json_t *names = json_object_get(j, "label_names");
    CHECKF(json_array_size(names) == 1000 &&
               strcmp(json_string_value(json_array_get(names, 999)), "class_999") == 0,
           "vit-b16: config.json has %zu label names", json_array_size(names));
    json_decref(j);

    /* 12 blocks of random weights: finite logits that depend on the image */
    json_t *ra = classify(dir, img_a, "1"), *rb = classify(dir, img_b, "1");
    size_t na = 0, nb = 0, fa = ra ? finite_logits(ra, &na) : 0, fb = rb ? finite_logits(rb, &nb) : 0;
    CHECKF(na == 1000 && fa == na && nb == 1000 && fb == nb,
           "vit-b16: %zu/%zu and %zu/%zu logits finite", fa, na, fb, nb);
    double spread = 0, diff = 0;
    for (size_t i = 0; i < na && i < nb; i++) {
        double x = json_number_value(json_array_get(json_object_get(ra, "logits"), i));
        double y = json_number_value(json_array_get(json_object_get(rb, "logits"), i));
        spread = fmax(spread, fabs(x));
        diff = fmax(diff, fabs(x - y));
    }
    /* not saturated (softmax of logits in the hundreds is one-hot) nor dead */
    CHECKF(spread > 0.1 && spread < 50, "vit-b16: largest |logit| %g", spread);
    CHECKF(diff > 1e-3, "vit-b16: two images give logits within %g of each other", diff);
    json_decref(ra);
    json_decref(rb);
}

/* Removes tmpdir and everything in it (test files only). */
static void remove_tmpdir(void)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
}

int main(void)
{
    VIT_ASSERT(mkdtemp(tmpdir));
    test_seeds();
    test_head();
    test_refusals();
    /* 346 MB written, read and run: the same code as the small presets, at a
     * size that costs a sanitizer stage 20 s; the release stage runs it */
    const char *sanitize = getenv("VIT_TEST_SANITIZE");
    if (!sanitize || strcmp(sanitize, "none") == 0)
        test_b16();
    else
        fprintf(stderr, "vit-b16: left to the plain build (this one: -Db_sanitize=%s)\n",
                sanitize);
    remove_tmpdir();
    return check_result();
}
