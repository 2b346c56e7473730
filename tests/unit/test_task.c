/*
 * test_task.c - SHA-256, the backbone fingerprint and task bias-set files.
 *
 * 1. sha256 against the FIPS 180-2 / NIST examples ("", "abc", the 448-bit
 *    message, one million 'a'), fed whole and in awkward pieces.
 * 2. For two tiny backbones - the golden timm checkpoint (with its own head)
 *    and a CLIP-like model from vit_model_create + vit_model_randomize (ln_pre,
 *    no patch bias, projection, no head): create a task, perturb biases and
 *    head, save, load back and compare bit for bit; the stored tensors are
 *    exactly task - backbone; the metadata is what task.h says; arbitrary
 *    (not small) bias changes round-trip within an ulp; the backbone's arenas
 *    are byte-identical before and after everything.
 * 3. The fingerprint matches one computed independently with Python's
 *    hashlib for tiny_timm, follows every backbone tensor but not the head,
 *    and a changed backbone makes loading fail with VIT_ERR_MISMATCH.
 * 4. Broken files - missing / reshaped / extra tensors, bad or miscounted
 *    labels, bad base_model, NaN, huge K, corrupt bytes - give the right
 *    status and a message naming the file and the problem.
 * 5. task_name_valid, task_create's argument checks, reserved metadata keys,
 *    saving for the wrong model, and saving into a missing directory (fails,
 *    leaves nothing).
 * 6. A delta that overflows float when added to the backbone's bias is
 *    refused; a large one that does not is accepted.
 * 7. task_slot: reference counts of get / exchange / set, a task kept alive
 *    by its reader across a clear, and readers against writers replacing and
 *    clearing the slot concurrently (test.sh runs this test under TSan).
 */
#include "task.h"

#include <dirent.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "safetensors.h"
#include "sha256.h"
#include "test_util.h"

static char tmpdir[] = "/tmp/vitfit-test-task-XXXXXX";

/* ---- helpers ------------------------------------------------------------ */

/* Path of a file in the temporary directory, written into buf. */
static const char *tmp_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", tmpdir, name);
    return buf;
}

/* Checks a failed call: status want, one line naming the file (needle_file)
 * and the problem (needle).  Prints the message so a reader sees the wording. */
static void check_error(const char *what, vit_status got, const vit_error *err, vit_status want,
                        const char *needle_file, const char *needle)
{
    fprintf(stderr, "  %-28s -> %s: %s\n", what, vit_status_name(got),
            got == VIT_OK ? "(ok)" : err->message);
    CHECKF(got == want, "%s: got %s, want %s", what, vit_status_name(got), vit_status_name(want));
    if (got == VIT_OK)
        return;
    CHECKF(err->code == got, "%s: err->code %d != status %d", what, err->code, got);
    CHECKF(strchr(err->message, '\n') == NULL, "%s: message has a newline", what);
    if (needle_file)
        CHECKF(strstr(err->message, needle_file) != NULL, "%s: message lacks the file '%s'",
               what, needle_file);
    if (needle)
        CHECKF(strstr(err->message, needle) != NULL, "%s: message lacks \"%s\"", what, needle);
}

/* How to derive a broken file from a good one (see rewrite()). */
typedef struct edit {
    const char *drop;          /* tensor left out */
    const char *grow;          /* tensor whose first dimension gets one more */
    const char *add;           /* extra tensor of one float */
    const char *nan_in;        /* tensor whose first value becomes NaN */
    const char *big_in;        /* tensor whose first value becomes big_value */
    float big_value;
    const char *meta_key;      /* metadata key replaced (or dropped if value NULL) */
    const char *meta_value;
} edit;

/* Copies task file src to dst (in tmpdir) with one edit applied. */
static void rewrite(const char *src, const char *dst, const edit *e)
{
    st_file *f;
    vit_error err;
    VIT_ASSERT(st_open(src, &f, &err) == VIT_OK);
    st_writer *w = st_writer_create();
    VIT_ASSERT(w);
    for (size_t i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_tensor_at(f, i);
        if (e->drop && strcmp(t->name, e->drop) == 0)
            continue;
        int64_t shape[ST_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        size_t n = t->numel;
        if (e->grow && strcmp(t->name, e->grow) == 0) {
            n += n / (size_t)shape[0];
            shape[0]++;
        }
        float *data = calloc(n, sizeof *data);
        VIT_ASSERT(data && st_read_f32(f, t, data, &err) == VIT_OK);
        if (e->nan_in && strcmp(t->name, e->nan_in) == 0)
            data[0] = NAN;
        if (e->big_in && strcmp(t->name, e->big_in) == 0)
            data[0] = e->big_value;
        VIT_ASSERT(st_writer_add_f32(w, t->name, t->ndim, shape, data, &err) == VIT_OK);
        free(data);
    }
    if (e->add) {
        float one = 1;
        int64_t shape[1] = {1};
        VIT_ASSERT(st_writer_add_f32(w, e->add, 1, shape, &one, &err) == VIT_OK);
    }
    for (size_t i = 0; i < st_metadata_count(f); i++) {
        const char *k, *v;
        VIT_ASSERT(st_metadata_at(f, i, &k, &v));
        if (e->meta_key && strcmp(k, e->meta_key) == 0)
            continue;
        VIT_ASSERT(st_writer_set_metadata(w, k, v, &err) == VIT_OK);
    }
    if (e->meta_key && e->meta_value)
        VIT_ASSERT(st_writer_set_metadata(w, e->meta_key, e->meta_value, &err) == VIT_OK);
    VIT_ASSERT(st_writer_save(w, dst, &err) == VIT_OK);
    st_writer_free(w);
    st_close(f);
}

/* Writes raw bytes to path. */
static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *fp = fopen(path, "wb");
    VIT_ASSERT(fp && fwrite(data, 1, len, fp) == len && fclose(fp) == 0);
}

/* Removes every file in tmpdir (flat). */
static void tmp_clear(void)
{
    DIR *d = opendir(tmpdir);
    VIT_ASSERT(d);
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            unlink(tmp_path(path, sizeof path, e->d_name));
    closedir(d);
}

/* ---- 1. sha256 ---------------------------------------------------------- */

static void check_digest(const char *what, const char *got, const char *want)
{
    CHECKF(strcmp(got, want) == 0, "%s: got %s want %s", what, got, want);
}

static void test_sha256(void)
{
    char hex[SHA256_HEX_LEN + 1];
    sha256_hex_of("", 0, hex);
    check_digest("empty", hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha256_hex_of("abc", 3, hex);
    check_digest("abc", hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    static const char m448[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    const char *want448 = "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1";
    sha256_hex_of(m448, strlen(m448), hex);
    check_digest("448-bit", hex, want448);

    /* the same message in every split: exercises the partial-block paths */
    for (size_t cut = 0; cut <= strlen(m448); cut++) {
        sha256_ctx c;
        uint8_t d[SHA256_DIGEST_LEN];
        sha256_init(&c);
        sha256_update(&c, m448, cut);
        sha256_update(&c, m448 + cut, strlen(m448) - cut);
        sha256_final(&c, d);
        sha256_hex(d, hex);
        CHECKF(strcmp(hex, want448) == 0, "448-bit split at %zu", cut);
    }

    /* one million 'a', fed in uneven pieces (1, 63, 64, 65, 1000, ...) */
    char *a = malloc(1000000);
    VIT_ASSERT(a);
    memset(a, 'a', 1000000);
    const char *want_a = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
    sha256_hex_of(a, 1000000, hex);
    check_digest("million a", hex, want_a);
    static const size_t pieces[] = {1, 63, 64, 65, 1000, 4096, 7};
    sha256_ctx c;
    uint8_t d[SHA256_DIGEST_LEN];
    sha256_init(&c);
    size_t done = 0;
    for (size_t i = 0; done < 1000000; i++) {
        size_t n = pieces[i % 7];
        if (n > 1000000 - done)
            n = 1000000 - done;
        sha256_update(&c, a + done, n);
        done += n;
    }
    sha256_final(&c, d);
    sha256_hex(d, hex);
    check_digest("million a in pieces", hex, want_a);
    free(a);
}

/* ---- 2. round trip ------------------------------------------------------ */

/* A copy of both arenas, to prove the backbone is never written. */
typedef struct snapshot {
    float *frozen, *trainable;
} snapshot;

static snapshot take_snapshot(const vit_model *m)
{
    snapshot s = {malloc(m->frozen_len * sizeof(float) + 1),
                  malloc(m->trainable_len * sizeof(float) + 1)};
    VIT_ASSERT(s.frozen && s.trainable);
    memcpy(s.frozen, m->frozen, m->frozen_len * sizeof(float));
    memcpy(s.trainable, m->trainable, m->trainable_len * sizeof(float));
    return s;
}

static int snapshot_same(const vit_model *m, const snapshot *s)
{
    return memcmp(s->frozen, m->frozen, m->frozen_len * sizeof(float)) == 0 &&
           memcmp(s->trainable, m->trainable, m->trainable_len * sizeof(float)) == 0;
}

static void snapshot_free(snapshot *s)
{
    free(s->frozen);
    free(s->trainable);
}

/* Deterministic value in [-1, 1) for index i. */
static float wave(size_t i, double f)
{
    return (float)sin((double)i * f + 0.3);
}

/* Moves each bias of t by at most its own magnitude (or by up to 0.05 where
 * the backbone bias is 0), so t - b is exact and the round trip bit-exact;
 * fills the head with a pattern. */
static void perturb(const vit_model *m, vit_task *t)
{
    size_t bias_len = task_bias_len(m);
    for (size_t i = 0; i < bias_len; i++) {
        float b = m->trainable[i];
        t->trainable[i] = b != 0 ? b + b * 0.9f * wave(i, 0.37) : 0.05f * wave(i, 0.11);
    }
    for (size_t i = bias_len; i < t->trainable_len; i++)
        t->trainable[i] = 0.1f * wave(i, 1.7);
}

/* Labels used throughout: K = 3, one with non-ASCII and JSON-special bytes. */
static const char *const labels3[] = {"cat", "dog", "h\xc3\xa9ron \"grey\"\\"};

/* Canonical name of the first bias tensor of m (for single-tensor checks). */
static const char *some_bias(const vit_model *m)
{
    return m->cfg.patch_bias ? "patch_embed.proj.bias" : "blocks.0.mlp.fc1.bias";
}

static void test_round_trip(const char *what, vit_model *m)
{
    fprintf(stderr, "round trip: %s\n", what);
    vit_error err;
    char fp[65], fp2[65], path[4096];
    snapshot snap = take_snapshot(m);
    CHECK(vit_model_fingerprint(m, fp, &err) == VIT_OK);
    CHECK(vit_model_fingerprint(m, fp2, &err) == VIT_OK);
    CHECK(strcmp(fp, fp2) == 0 && strlen(fp) == 64);
    fprintf(stderr, "  fingerprint %s\n", fp);

    /* create: backbone biases, zero head */
    size_t bias_len = task_bias_len(m);
    int f = vit_config_feature_dim(&m->cfg);
    CHECK(bias_len == vit_model_bias_count(m) && bias_len > 0);
    vit_task *t;
    CHECK(task_create(m, 3, labels3, &t, &err) == VIT_OK);
    CHECK(t->num_classes == 3 && t->trainable_len == bias_len + 3 * (size_t)f + 3);
    CHECK(memcmp(t->trainable, m->trainable, bias_len * sizeof(float)) == 0);
    int zero_head = 1;
    for (size_t i = bias_len; i < t->trainable_len; i++)
        zero_head &= t->trainable[i] == 0;
    CHECK(zero_head);
    CHECK(strcmp(t->method, "bitfit") == 0);
    CHECK(strcmp(t->labels[2], labels3[2]) == 0 && t->labels[2] != labels3[2]);

    /* save + load: bit-exact */
    perturb(m, t);
    snprintf(t->method, sizeof t->method, "linear");
    const char *keys[] = {"lr", "top1", NULL};
    const char *values[] = {"0.005", "0.91", NULL};
    task_meta extra = {keys, values};
    tmp_path(path, sizeof path, "my-task.v1.safetensors");
    CHECKF(task_save(m, t, &extra, path, &err) == VIT_OK, "%s", err.message);
    CHECK(test_dir_entries(tmpdir) == 1); /* no temporary left behind */
    vit_task *back;
    vit_status s = task_load(m, path, &back, &err);
    CHECKF(s == VIT_OK, "%s", err.message);
    if (s == VIT_OK) {
        CHECK(back->num_classes == 3 && back->trainable_len == t->trainable_len);
        CHECK(memcmp(back->trainable, t->trainable, t->trainable_len * sizeof(float)) == 0);
        check_close("  loaded vs saved", back->trainable, t->trainable, t->trainable_len, 0, 0);
        for (int i = 0; i < 3; i++)
            CHECKF(strcmp(back->labels[i], labels3[i]) == 0, "label %d '%s'", i, back->labels[i]);
        CHECKF(strcmp(back->name, "my-task.v1") == 0, "name '%s'", back->name);
        CHECK(strcmp(back->method, "linear") == 0);
        CHECK(strcmp(back->base_model, fp) == 0);
        task_free(back);
    }

    /* the same through a precomputed fingerprint */
    CHECK(task_load_fingerprint(m, fp, path, &back, &err) == VIT_OK);
    task_free(back);

    /* what is on disk: deltas, the head as is, the metadata of task.h */
    st_file *sf;
    CHECK(st_open(path, &sf, &err) == VIT_OK);
    const vit_param *bp = vit_model_find(m, some_bias(m));
    VIT_ASSERT(bp);
    size_t off = (size_t)(bp->data - m->trainable), n;
    float *delta = test_read_tensor(sf, bp->name, &n);
    VIT_ASSERT(delta && n == bp->numel);
    int exact = 1, nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        float want = t->trainable[off + i] - bp->data[i];
        exact &= memcmp(&delta[i], &want, sizeof want) == 0;
        nonzero += delta[i] != 0;
    }
    CHECKF(exact, "%s: stored values are not task - backbone", bp->name);
    CHECK(nonzero > 0);
    free(delta);
    float *hw = test_read_tensor(sf, "head.weight", &n);
    const st_tensor *hwt = st_find(sf, "head.weight");
    CHECK(hw && n == 3 * (size_t)f && hwt->ndim == 2 && hwt->shape[0] == 3 && hwt->shape[1] == f);
    CHECK(hw && memcmp(hw, t->trainable + bias_len, n * sizeof(float)) == 0);
    free(hw);
    CHECK(st_find(sf, "head.bias") && st_find(sf, "head.bias")->shape[0] == 3);
    CHECK(st_count(sf) == 2 + (size_t)(m->cfg.patch_bias + m->cfg.ln_pre + 1 + 6 * m->cfg.depth));
    CHECK(strcmp(st_metadata(sf, "labels"), "[\"cat\",\"dog\",\"h\xc3\xa9ron \\\"grey\\\"\\\\\"]") ==
          0);
    fprintf(stderr, "  labels metadata: %s\n", st_metadata(sf, "labels"));
    CHECK(strcmp(st_metadata(sf, "base_model"), fp) == 0);
    CHECK(strcmp(st_metadata(sf, "method"), "linear") == 0);
    CHECK(strcmp(st_metadata(sf, "num_classes"), "3") == 0);
    CHECK(strcmp(st_metadata(sf, "lr"), "0.005") == 0 && strcmp(st_metadata(sf, "top1"), "0.91") == 0);
    const char *created = st_metadata(sf, "created");
    CHECKF(created && strlen(created) == 20 && created[4] == '-' && created[10] == 'T' &&
               created[19] == 'Z',
           "created '%s'", created ? created : "(none)");
    st_close(sf);

    /* arbitrary bias values (not near the backbone's): within an ulp */
    for (size_t i = 0; i < bias_len; i++)
        t->trainable[i] = wave(i, 2.9) * (i % 3 ? 1.0f : 1e-4f);
    CHECK(task_save(m, t, NULL, path, &err) == VIT_OK);
    CHECK(task_load(m, path, &back, &err) == VIT_OK);
    double worst = 0;
    for (size_t i = 0; i < bias_len; i++) {
        double scale = fmax(fabs(t->trainable[i]), fabs(m->trainable[i]));
        worst = fmax(worst, fabs((double)back->trainable[i] - t->trainable[i]) / scale);
    }
    CHECKF(worst <= ldexp(1, -22), "arbitrary biases: worst error %g of max(|t|,|b|)", worst);
    fprintf(stderr, "  arbitrary biases: worst error %.3g x max(|task|,|backbone|)\n", worst);
    CHECK(memcmp(back->trainable + bias_len, t->trainable + bias_len,
                 (t->trainable_len - bias_len) * sizeof(float)) == 0);
    task_free(back);

    CHECK(snapshot_same(m, &snap));
    task_free(t);
    snapshot_free(&snap);
    tmp_clear();
}

/* ---- 3. fingerprint ----------------------------------------------------- */

static void test_fingerprint(vit_model *m)
{
    fprintf(stderr, "fingerprint\n");
    vit_error err;
    char fp[65], fp2[65], path[4096];
    vit_model_fingerprint(m, fp, &err);
    vit_task *t, *back;
    CHECK(task_create(m, 3, labels3, &t, &err) == VIT_OK);
    perturb(m, t);
    tmp_path(path, sizeof path, "fp.safetensors");
    CHECK(task_save(m, t, NULL, path, &err) == VIT_OK);

    /* one frozen weight: new fingerprint, the task no longer loads */
    float *w = m->frozen + m->frozen_len / 2, old = *w;
    *w = nextafterf(old, INFINITY);
    vit_model_fingerprint(m, fp2, &err);
    CHECK(strcmp(fp, fp2) != 0);
    back = (vit_task *)&back; /* poison: must come back NULL */
    vit_status s = task_load(m, path, &back, &err);
    check_error("changed weight", s, &err, VIT_ERR_MISMATCH, "fp.safetensors",
                "task was made for backbone");
    CHECK(back == NULL);
    char want[128];
    snprintf(want, sizeof want, "backbone %.12s but this model is %.12s", fp, fp2);
    CHECKF(strstr(err.message, want) != NULL, "message lacks \"%s\"", want);
    *w = old;
    vit_model_fingerprint(m, fp2, &err);
    CHECK(strcmp(fp, fp2) == 0);
    CHECK(task_load(m, path, &back, &err) == VIT_OK);
    task_free(back);

    /* one backbone bias: new fingerprint too */
    float *b = m->trainable, oldb = *b;
    *b += 1;
    vit_model_fingerprint(m, fp2, &err);
    CHECK(strcmp(fp, fp2) != 0);
    *b = oldb;

    /* the backbone's own head does not count */
    vit_param *head = vit_model_find(m, "head.bias");
    if (head) {
        float oldh = head->data[0];
        head->data[0] += 1;
        vit_model_fingerprint(m, fp2, &err);
        CHECK(strcmp(fp, fp2) == 0);
        head->data[0] = oldh;
    }

    /* name bytes count, not only data: the fingerprint is not the plain sha256
     * of the arenas */
    char plain[65];
    sha256_hex_of(m->frozen, m->frozen_len * sizeof(float), plain);
    CHECK(strcmp(plain, fp) != 0);
    task_free(t);
    tmp_clear();
}

/* ---- 4. broken files ---------------------------------------------------- */

static void expect_load_error(const vit_model *m, const char *what, const char *file,
                              vit_status want, const char *needle)
{
    char path[4096];
    vit_error err = {0};
    vit_task *t = (vit_task *)&t;
    vit_status s = task_load(m, tmp_path(path, sizeof path, file), &t, &err);
    check_error(what, s, &err, want, file, needle);
    CHECKF(t == NULL, "%s: *out not NULL on failure", what);
    if (s == VIT_OK)
        task_free(t);
}

static void test_bad_files(const vit_model *m)
{
    fprintf(stderr, "broken task files\n");
    vit_error err;
    char good[4096], path[4096];
    vit_task *t;
    CHECK(task_create(m, 3, labels3, &t, &err) == VIT_OK);
    perturb(m, t);
    tmp_path(good, sizeof good, "good.safetensors");
    CHECK(task_save(m, t, NULL, good, &err) == VIT_OK);
    task_free(t);

    static const struct {
        const char *what, *file;
        edit e;
        vit_status want;
        const char *needle;
    } cases[] = {
        {"missing bias", "missing.safetensors", {.drop = "blocks.1.attn.qkv.bias"},
         VIT_ERR_NOT_FOUND, "'blocks.1.attn.qkv.bias'"},
        {"missing head.weight", "nohead.safetensors", {.drop = "head.weight"}, VIT_ERR_NOT_FOUND,
         "'head.weight'"},
        {"missing head.bias", "nohb.safetensors", {.drop = "head.bias"}, VIT_ERR_NOT_FOUND,
         "'head.bias'"},
        {"wrong bias shape", "shape.safetensors", {.grow = "blocks.0.norm1.bias"},
         VIT_ERR_MISMATCH, "'blocks.0.norm1.bias' has shape [65], expected [64]"},
        {"head.weight rows != K", "hw.safetensors", {.grow = "head.weight"}, VIT_ERR_MISMATCH,
         "'head.weight'"},
        {"extra tensor", "extra.safetensors", {.add = "blocks.0.attn.bogus.bias"},
         VIT_ERR_FORMAT, "unexpected tensor 'blocks.0.attn.bogus.bias'"},
        {"a weight, not a bias", "weight.safetensors", {.add = "blocks.0.norm1.weight"},
         VIT_ERR_FORMAT, "'blocks.0.norm1.weight'"},
        {"labels not JSON", "json.safetensors", {.meta_key = "labels", .meta_value = "[\"a\","},
         VIT_ERR_FORMAT, "\"labels\" is not valid JSON"},
        {"labels not an array", "obj.safetensors",
         {.meta_key = "labels", .meta_value = "{\"a\":1}"}, VIT_ERR_FORMAT, "not a JSON array"},
        {"label not a string", "num.safetensors",
         {.meta_key = "labels", .meta_value = "[\"a\",2,\"c\"]"}, VIT_ERR_FORMAT,
         "label 1 is not a string"},
        {"label count", "count.safetensors",
         {.meta_key = "labels", .meta_value = "[\"a\",\"b\"]"}, VIT_ERR_FORMAT,
         "names 2 classes but head.bias has 3"},
        {"no labels", "nolabels.safetensors", {.meta_key = "labels"}, VIT_ERR_FORMAT,
         "no \"labels\" metadata"},
        {"no base_model", "nobase.safetensors", {.meta_key = "base_model"}, VIT_ERR_FORMAT,
         "no \"base_model\" metadata"},
        {"bad base_model", "badbase.safetensors",
         {.meta_key = "base_model", .meta_value = "not\x01hex"}, VIT_ERR_FORMAT,
         "'not?hex', not a sha256"},
        {"other backbone", "other.safetensors",
         {.meta_key = "base_model",
          .meta_value = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"},
         VIT_ERR_MISMATCH, "made for backbone 001122334455 but this model is "},
        {"num_classes disagrees", "nc.safetensors",
         {.meta_key = "num_classes", .meta_value = "4"}, VIT_ERR_FORMAT, "\"num_classes\" is '4'"},
        {"NaN delta", "nan.safetensors", {.nan_in = "norm.bias"}, VIT_ERR_FORMAT,
         "'norm.bias' holds a non-finite value"},
        {"NaN head", "nanhead.safetensors", {.nan_in = "head.weight"}, VIT_ERR_FORMAT,
         "'head.weight' holds a non-finite value"},
        /* labels reach JSON replies and terminals (repro/model/evil_labels) */
        {"label with a newline", "nl.safetensors",
         {.meta_key = "labels", .meta_value = "[\"a\",\"b\\n  0.99  spoofed\",\"c\"]"},
         VIT_ERR_FORMAT, "label 1 has a control character at byte 1"},
        {"label with an escape", "esc.safetensors",
         {.meta_key = "labels", .meta_value = "[\"a\",\"b\",\"\\u001b[31mred\"]"},
         VIT_ERR_FORMAT, "label 2 has a control character at byte 0"},
        {"label with a C1 control", "c1.safetensors",
         {.meta_key = "labels", .meta_value = "[\"a\\u009b31m\",\"b\",\"c\"]"},
         VIT_ERR_FORMAT, "label 0 has a control character at byte 1"},
        {"label with a bidi override", "bidi.safetensors",
         {.meta_key = "labels", .meta_value = "[\"a\",\"\\u202egpj.exe\",\"c\"]"},
         VIT_ERR_FORMAT, "label 1 has a control character at byte 0"},
        /* more labels than classes: refused before jansson parses them */
        {"more labels than classes", "more.safetensors",
         {.meta_key = "labels", .meta_value = "[\"a,\",\"b\",\"c\",\"\"]"},
         VIT_ERR_FORMAT, "names more than the 3 classes"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rewrite(good, tmp_path(path, sizeof path, cases[i].file), &cases[i].e);
        expect_load_error(m, cases[i].what, cases[i].file, cases[i].want, cases[i].needle);
    }

    /* a label longer than TASK_MAX_LABEL */
    char *long_labels = malloc(TASK_MAX_LABEL + 32);
    VIT_ASSERT(long_labels);
    snprintf(long_labels, 16, "[\"a\",\"b\",\"");
    size_t L = strlen(long_labels);
    memset(long_labels + L, 'x', TASK_MAX_LABEL + 1);
    strcpy(long_labels + L + TASK_MAX_LABEL + 1, "\"]");
    edit le = {.meta_key = "labels", .meta_value = long_labels};
    rewrite(good, tmp_path(path, sizeof path, "longlabel.safetensors"), &le);
    expect_load_error(m, "label too long", "longlabel.safetensors", VIT_ERR_TOO_LARGE,
                      "label 2 is longer than");
    free(long_labels);

    /* a label of UTF-8 and the commas of a label are fine */
    edit ue = {.meta_key = "labels", .meta_value = "[\"caf\u00e9, cr\u00e8me\",\"b,c\",\"\u732b\"]"};
    rewrite(good, tmp_path(path, sizeof path, "utf8.safetensors"), &ue);
    CHECKF(task_load(m, path, &t, &err) == VIT_OK && strcmp(t->labels[0], "caf\u00e9, cr\u00e8me") == 0 &&
               strcmp(t->labels[2], "\u732b") == 0,
           "UTF-8 labels: %s", err.message);
    task_free(t);

    /* A header far larger than a task's (repro/model/gen_st_header.py made
     * 100 MB of empty tensors; st_open took 2.1 GB to parse it): refused by
     * the task caps before the header is parsed.  Too many tensors ... */
    {
        st_file *f;
        VIT_ASSERT(st_open(good, &f, &err) == VIT_OK);
        st_writer *w = st_writer_create();
        VIT_ASSERT(w);
        for (size_t i = 0; i < st_count(f); i++) {
            const st_tensor *tt = st_tensor_at(f, i);
            float *data = calloc(tt->numel, sizeof *data);
            VIT_ASSERT(data && st_read_f32(f, tt, data, &err) == VIT_OK);
            VIT_ASSERT(st_writer_add_f32(w, tt->name, tt->ndim, tt->shape, data, &err) == 0);
            free(data);
        }
        for (size_t i = 0; i < st_metadata_count(f); i++) {
            const char *k, *v;
            VIT_ASSERT(st_metadata_at(f, i, &k, &v));
            VIT_ASSERT(st_writer_set_metadata(w, k, v, &err) == VIT_OK);
        }
        size_t biases = st_count(f) - 2;
        st_close(f);
        for (int i = 0; i < 4000; i++) {
            char name[32];
            int64_t zero[1] = {0};
            snprintf(name, sizeof name, "extra.%d", i);
            VIT_ASSERT(st_writer_add_f32(w, name, 1, zero, (float[1]){0}, &err) == VIT_OK);
        }
        VIT_ASSERT(st_writer_save(w, tmp_path(path, sizeof path, "many.safetensors"), &err) == 0);
        char needle[64];
        snprintf(needle, sizeof needle, "at most %zu tensors", biases + 2 + 8);
        expect_load_error(m, "4000 extra tensors", "many.safetensors", VIT_ERR_TOO_LARGE, needle);

        /* ... or a header over 8 MiB (here: metadata) */
        st_writer_free(w);
        w = st_writer_create();
        char *big = malloc((8u << 20) + 1);
        VIT_ASSERT(w && big);
        memset(big, 'x', 8u << 20);
        big[8u << 20] = '\0';
        VIT_ASSERT(st_writer_set_metadata(w, "notes", big, &err) == VIT_OK);
        VIT_ASSERT(st_writer_save(w, tmp_path(path, sizeof path, "bighdr.safetensors"), &err) == 0);
        expect_load_error(m, "8 MiB header", "bighdr.safetensors", VIT_ERR_TOO_LARGE,
                          "limit of 8388608 bytes");
        st_writer_free(w);
        free(big);
    }

    /* K over the bound is refused before head.weight is even looked at */
    {
        st_writer *w = st_writer_create();
        size_t k = TASK_MAX_CLASSES + 1;
        float *zeros = calloc(k, sizeof *zeros);
        int64_t shape[1] = {(int64_t)k};
        char fp[65];
        vit_model_fingerprint(m, fp, &err);
        VIT_ASSERT(w && zeros && st_writer_add_f32(w, "head.bias", 1, shape, zeros, &err) == 0);
        st_writer_set_metadata(w, "labels", "[]", &err);
        st_writer_set_metadata(w, "base_model", fp, &err);
        VIT_ASSERT(st_writer_save(w, tmp_path(path, sizeof path, "hugek.safetensors"), &err) == 0);
        st_writer_free(w);
        free(zeros);
        char want[64];
        snprintf(want, sizeof want, "%d classes", TASK_MAX_CLASSES + 1);
        expect_load_error(m, "K too large", "hugek.safetensors", VIT_ERR_TOO_LARGE, want);
    }

    /* corrupt and truncated bytes, a missing file */
    write_bytes(tmp_path(path, sizeof path, "garbage.safetensors"), "\x10\0\0\0\0\0\0\0{\"a\":", 13);
    expect_load_error(m, "corrupt header", "garbage.safetensors", VIT_ERR_FORMAT, NULL);
    {
        FILE *fp = fopen(good, "rb");
        VIT_ASSERT(fp);
        char buf[1 << 16];
        size_t n = fread(buf, 1, sizeof buf, fp);
        fclose(fp);
        write_bytes(tmp_path(path, sizeof path, "truncated.safetensors"), buf, n / 2);
    }
    expect_load_error(m, "truncated", "truncated.safetensors", VIT_ERR_FORMAT, NULL);
    write_bytes(tmp_path(path, sizeof path, "empty.safetensors"), "", 0);
    expect_load_error(m, "empty file", "empty.safetensors", VIT_ERR_FORMAT, NULL);
    expect_load_error(m, "no such file", "absent.safetensors", VIT_ERR_NOT_FOUND, NULL);

    /* a good file under a name that is not a task name: loads, name "" */
    rewrite(good, tmp_path(path, sizeof path, "Bad Name.safetensors"), &(edit){0});
    CHECK(task_load(m, path, &t, &err) == VIT_OK);
    CHECKF(t->name[0] == '\0', "name '%s'", t->name);
    task_free(t);
    tmp_clear();
}

/* ---- 5. names, arguments, saving failures ------------------------------- */

static void test_names(void)
{
    char n64[66], n65[67];
    memset(n64, 'a', 64);
    n64[64] = '\0';
    memset(n65, 'b', 65);
    n65[65] = '\0';
    const char *good[] = {"a", "0", "my-task.v2_1", "imagenet-1k", "9.9", n64};
    const char *bad[] = {"", "-a", ".a", "_a", "A", "Task", "a b", "a/b", "../x",
                         "h\xc3\xa9ron", "a\n", n65};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        CHECKF(task_name_valid(good[i]), "'%s' should be valid", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECKF(!task_name_valid(bad[i]), "'%s' should be invalid", bad[i]);
    CHECK(!task_name_valid(NULL));
}

static void test_arguments(const vit_model *m, const vit_model *other)
{
    fprintf(stderr, "arguments and save failures\n");
    vit_error err;
    vit_task *t = (vit_task *)&t;
    const char *one[] = {"x"};
    const char *null_label[] = {"x", NULL};
    const char *not_utf8[] = {"x", "\xff\xfe"};
    check_error("K = 0", task_create(m, 0, one, &t, &err), &err, VIT_ERR_INVALID, NULL, NULL);
    CHECK(t == NULL);
    check_error("K too large", task_create(m, TASK_MAX_CLASSES + 1, one, &t, &err), &err,
                VIT_ERR_INVALID, NULL, NULL);
    check_error("labels NULL", task_create(m, 1, NULL, &t, &err), &err, VIT_ERR_INVALID, NULL,
                NULL);
    check_error("label NULL", task_create(m, 2, null_label, &t, &err), &err, VIT_ERR_INVALID,
                NULL, "label 1");
    check_error("label not UTF-8", task_create(m, 2, not_utf8, &t, &err), &err, VIT_ERR_INVALID,
                NULL, "label 1");

    char path[4096];
    CHECK(task_create(m, 1, one, &t, &err) == VIT_OK);

    /* extra metadata may not replace the task's own keys */
    const char *keys[] = {"epochs", "labels", NULL};
    const char *values[] = {"3", "[\"evil\"]", NULL};
    task_meta extra = {keys, values};
    check_error("reserved key", task_save(m, t, &extra, tmp_path(path, sizeof path, "r.safetensors"),
                                          &err),
                &err, VIT_ERR_INVALID, "r.safetensors", "'labels' is reserved");
    CHECK(test_dir_entries(tmpdir) == 0);

    /* a task of one model saved against another */
    check_error("wrong model", task_save(other, t, NULL, path, &err), &err, VIT_ERR_MISMATCH,
                "r.safetensors", "this model needs");
    CHECK(test_dir_entries(tmpdir) == 0);

    /* a missing directory: fails, creates nothing */
    char missing[4096];
    snprintf(missing, sizeof missing, "%s/no-such-dir/t.safetensors", tmpdir);
    check_error("missing directory", task_save(m, t, NULL, missing, &err), &err, VIT_ERR_IO,
                "no-such-dir", NULL);
    struct stat sb;
    CHECK(stat(tmp_path(path, sizeof path, "no-such-dir"), &sb) != 0);
    CHECK(test_dir_entries(tmpdir) == 0);

    /* a save over an existing file replaces it */
    tmp_path(path, sizeof path, "t.safetensors");
    write_bytes(path, "old", 3);
    CHECK(task_save(m, t, NULL, path, &err) == VIT_OK);
    vit_task *back;
    CHECK(task_load(m, path, &back, &err) == VIT_OK && back->num_classes == 1);
    CHECK(strcmp(back->labels[0], "x") == 0 && strcmp(back->name, "t") == 0);
    task_free(back);
    CHECK(test_dir_entries(tmpdir) == 1);
    task_free(t);
    task_free(NULL);
    tmp_clear();
}

/* ---- 6. deltas that overflow -------------------------------------------- */

/* Every stored delta is finite, but backbone + delta need not be: with a
 * backbone bias of 2e38 a delta of 3e38 sums to inf (FLT_MAX is 3.4e38). */
static void test_delta_overflow(vit_model *m)
{
    fprintf(stderr, "deltas that overflow\n");
    vit_error err;
    char good[4096], path[4096];
    const char *name = "blocks.0.norm1.bias";
    vit_param *bias = vit_model_find(m, name);
    VIT_ASSERT(bias);
    float old = bias->data[0];
    bias->data[0] = 2e38f; /* the backbone itself may hold large values */
    vit_task *t;
    CHECK(task_create(m, 3, labels3, &t, &err) == VIT_OK);
    tmp_path(good, sizeof good, "big.safetensors");
    CHECK(task_save(m, t, NULL, good, &err) == VIT_OK);
    task_free(t);

    rewrite(good, tmp_path(path, sizeof path, "overflow.safetensors"),
            &(edit){.big_in = name, .big_value = 3e38f});
    expect_load_error(m, "delta overflows", "overflow.safetensors", VIT_ERR_FORMAT,
                      "'blocks.0.norm1.bias' overflows when added to the backbone");
    /* the other sign (a new backbone value: a new fingerprint, so save again) */
    bias->data[0] = -2e38f;
    CHECK(task_create(m, 3, labels3, &t, &err) == VIT_OK);
    CHECK(task_save(m, t, NULL, good, &err) == VIT_OK);
    task_free(t);
    rewrite(good, tmp_path(path, sizeof path, "negoverflow.safetensors"),
            &(edit){.big_in = name, .big_value = -FLT_MAX});
    expect_load_error(m, "delta overflows (negative)", "negoverflow.safetensors", VIT_ERR_FORMAT,
                      "overflows when added to the backbone");

    /* large but representable: loads, value exact */
    bias->data[0] = 2e38f;
    CHECK(task_create(m, 3, labels3, &t, &err) == VIT_OK);
    CHECK(task_save(m, t, NULL, good, &err) == VIT_OK);
    task_free(t);
    rewrite(good, tmp_path(path, sizeof path, "large.safetensors"),
            &(edit){.big_in = name, .big_value = 1e38f});
    vit_status s = task_load(m, path, &t, &err);
    CHECKF(s == VIT_OK, "large delta: %s", err.message);
    if (s == VIT_OK) {
        CHECKF(t->trainable[bias->data - m->trainable] == 2e38f + 1e38f, "large delta: %g",
               t->trainable[bias->data - m->trainable]);
        task_free(t);
    }
    bias->data[0] = old;
    tmp_clear();
}

/* ---- 7. shared slots ---------------------------------------------------- */

static int refs_of(vit_task *t)
{
    return atomic_load(&t->refs);
}

static void test_slot_counts(const vit_model *m)
{
    fprintf(stderr, "task_slot: reference counts\n");
    vit_error err;
    const char *one[] = {"x"};
    task_slot slot;
    CHECK(task_slot_init(&slot, &err) == VIT_OK);
    CHECK(task_slot_get(&slot) == NULL);

    vit_task *a, *b;
    CHECK(task_create(m, 1, one, &a, &err) == VIT_OK);
    CHECK(task_create(m, 1, one, &b, &err) == VIT_OK);
    task_slot_set(&slot, a); /* the slot now owns a's only reference */
    CHECK(refs_of(a) == 1);
    vit_task *got = task_slot_get(&slot);
    CHECKF(got == a && refs_of(a) == 2, "get: %p (want %p), refs %d (want 2)", (void *)got,
           (void *)a, refs_of(a));
    vit_task *old = task_slot_exchange(&slot, b);
    CHECKF(old == a && refs_of(a) == 2, "exchange returned %p, refs %d", (void *)old, refs_of(a));
    task_free(old);
    CHECK(refs_of(a) == 1);
    /* the reader's reference outlives the slot's: a is still whole */
    CHECK(strcmp(got->labels[0], "x") == 0 && got->num_classes == 1);
    task_free(got);

    got = task_slot_get(&slot);
    CHECK(got == b && refs_of(b) == 2);
    task_slot_set(&slot, NULL); /* cleared while got is in use */
    CHECK(refs_of(b) == 1 && task_slot_get(&slot) == NULL);
    CHECK(strcmp(got->labels[0], "x") == 0);
    task_free(got);
    task_slot_destroy(&slot); /* empty: nothing to drop */

    CHECK(task_slot_init(&slot, &err) == VIT_OK);
    CHECK(task_create(m, 1, one, &a, &err) == VIT_OK);
    task_slot_set(&slot, a);
    task_slot_destroy(&slot); /* drops a (ASan's leak check would see it otherwise) */
}

enum { SLOT_WRITERS = 2, SLOT_READERS = 2, SLOT_SWAPS = 1000, SLOT_READS = 5000 };

typedef struct slot_test {
    task_slot slot;
    const vit_model *m;
    pthread_barrier_t start;  /* every thread begins together */
    atomic_int readers_left;  /* writers go on until the readers are done */
    atomic_long reads, empty, swaps, inconsistent, failed_creates;
} slot_test;

/* Each task a writer publishes has head.weight[0] == head.bias[K-1] == its
 * stamp, so a reader sees a torn or freed task as a mismatch (and ASan/TSan
 * see the access itself). */
static void *slot_writer(void *arg)
{
    slot_test *st = arg;
    const char *one[] = {"x"};
    size_t bias_len = task_bias_len(st->m);
    pthread_barrier_wait(&st->start);
    for (int i = 0; i < SLOT_SWAPS || atomic_load(&st->readers_left) > 0; i++) {
        vit_task *t;
        vit_error err;
        if (task_create(st->m, 1, one, &t, &err) != VIT_OK) {
            atomic_fetch_add(&st->failed_creates, 1);
            continue;
        }
        float stamp = (float)(i + 1);
        t->trainable[bias_len] = stamp;
        t->trainable[t->trainable_len - 1] = stamp;
        if (i % 8 == 7) {
            task_slot_set(&st->slot, NULL); /* remove ... */
            task_free(t);
        } else if (i % 2) {
            task_slot_set(&st->slot, t); /* ... replace and free the old one ... */
        } else {
            vit_task *old = task_slot_exchange(&st->slot, t); /* ... or keep it a moment */
            if (old && old->trainable[bias_len] != old->trainable[old->trainable_len - 1])
                atomic_fetch_add(&st->inconsistent, 1);
            task_free(old);
        }
        atomic_fetch_add(&st->swaps, 1);
    }
    return NULL;
}

static void *slot_reader(void *arg)
{
    slot_test *st = arg;
    size_t bias_len = task_bias_len(st->m);
    pthread_barrier_wait(&st->start);
    for (int got = 0; got < SLOT_READS;) { /* reads of a task, empty slots aside */
        vit_task *t = task_slot_get(&st->slot);
        if (!t) {
            atomic_fetch_add(&st->empty, 1);
            continue;
        }
        if (t->trainable[bias_len] != t->trainable[t->trainable_len - 1] ||
            t->trainable[bias_len] < 1 || strcmp(t->labels[0], "x") != 0 || refs_of(t) < 1)
            atomic_fetch_add(&st->inconsistent, 1);
        atomic_fetch_add(&st->reads, 1);
        got++;
        task_free(t);
    }
    atomic_fetch_sub(&st->readers_left, 1);
    return NULL;
}

static void test_slot_threads(const vit_model *m)
{
    fprintf(stderr, "task_slot: %d writers replacing, %d readers reading\n", SLOT_WRITERS,
            SLOT_READERS);
    vit_error err;
    slot_test st = {.m = m};
    CHECK(task_slot_init(&st.slot, &err) == VIT_OK);
    atomic_init(&st.readers_left, SLOT_READERS);
    VIT_ASSERT(pthread_barrier_init(&st.start, NULL, SLOT_WRITERS + SLOT_READERS) == 0);
    pthread_t threads[SLOT_WRITERS + SLOT_READERS];
    for (int i = 0; i < SLOT_WRITERS + SLOT_READERS; i++)
        VIT_ASSERT(pthread_create(&threads[i], NULL, i < SLOT_WRITERS ? slot_writer : slot_reader,
                                  &st) == 0);
    for (int i = 0; i < SLOT_WRITERS + SLOT_READERS; i++)
        pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&st.start);
    long reads = atomic_load(&st.reads), empty = atomic_load(&st.empty);
    long bad = atomic_load(&st.inconsistent);
    fprintf(stderr, "  %ld reads of a task, %ld of an empty slot, %ld swaps\n", reads, empty,
            atomic_load(&st.swaps));
    CHECKF(bad == 0, "%ld reads saw a torn or freed task", bad);
    CHECK(reads == SLOT_READERS * SLOT_READS);
    CHECK(atomic_load(&st.failed_creates) == 0);
    vit_task *last = task_slot_get(&st.slot);
    CHECK(!last || refs_of(last) == 2);
    task_free(last);
    task_slot_destroy(&st.slot);
}

/* ---- main --------------------------------------------------------------- */

int main(void)
{
    VIT_ASSERT(mkdtemp(tmpdir));
    test_sha256();
    test_names();

    char path[4096];
    vit_error err;
    vit_model *timm = NULL, *clip = NULL;
    if (vit_model_load(test_path(path, sizeof path, "tests/data/golden/tiny_timm"), &timm, &err)) {
        fprintf(stderr, "cannot load tiny_timm: %s\n", err.message);
        return 1;
    }

    /* a CLIP-like tiny model: ln_pre, no patch bias, projection (F = D), no head */
    vit_config cfg;
    VIT_ASSERT(vit_config_preset("vit-tiny", &cfg, &err) == VIT_OK);
    cfg.depth = 1;
    cfg.ln_pre = true;
    cfg.patch_bias = false;
    cfg.proj_dim = 16;
    cfg.num_classes = 0;
    cfg.act = VIT_ACT_QUICK_GELU;
    if (vit_model_create(&cfg, &clip, &err)) {
        fprintf(stderr, "cannot create the CLIP-like model: %s\n", err.message);
        return 1;
    }
    vit_model_randomize(clip, 7);

    /* The fingerprint's definition, pinned: Python's hashlib.sha256 over
     * name + NUL + little-endian f32 data of every non-head tensor of
     * tiny_timm/model.safetensors in canonical order gives this digest. */
    char fp[65];
    vit_model_fingerprint(timm, fp, &err);
    check_digest("tiny_timm fingerprint", fp,
                 "daa03ec5b177995806da33828635bbba33352b21d05440caa3471a581ccf469b");

    test_round_trip("tiny_timm (golden checkpoint)", timm);
    test_round_trip("CLIP-like (random)", clip);
    test_fingerprint(timm);
    test_fingerprint(clip);
    test_bad_files(timm);
    test_arguments(timm, clip);
    test_delta_overflow(timm);
    test_delta_overflow(clip);
    test_slot_counts(timm);
    test_slot_threads(timm);

    vit_model_free(timm);
    vit_model_free(clip);
    rmdir(tmpdir);
    return check_result();
}
