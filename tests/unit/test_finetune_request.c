/*
 * test_finetune_request.c - a fine-tune job's request (api/finetune.h)
 * without a server: parsing, defaults, every refusal with its status, code
 * and field, and the data set checks beneath <data_dir>/datasets.
 *
 * 1. Parsing: the defaults are the trainer's; each hyper-parameter at the
 *    top and inside "hyperparameters"; every wrong type, range edge, unknown
 *    key, key given twice, missing key, bad task name and method.
 * 2. Data sets, on a real directory tree: ImageFolder, manifest and IDX
 *    accepted; missing, "..", absolute, symlinks leading out (absolute and
 *    relative targets), a FIFO, an empty folder, one class, an eval set
 *    naming a class train lacks, all refused with the right code and field.
 *    The escapes point at a FIFO outside: opening it would block the test
 *    (meson's timeout fails it), so a refusal proves nothing outside was
 *    opened.
 * 3. Task collisions: an existing task file is refused unless overwrite.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "finetune.h"
#include "test_util.h"

static char root[256]; /* the test's directory: no message may name it */

/* Checks r against an expected refusal; returns whether it matched. */
static bool refused_(int line, const char *what, int rc, api_reply *r, int status,
                     const char *code, const char *field)
{
    json_t *j = r->body ? json_loadb(r->body, r->body_len, 0, NULL) : NULL;
    json_t *e = json_object_get(j, "error");
    const char *got_code = json_string_value(json_object_get(e, "code"));
    const char *got_field = json_string_value(json_object_get(e, "field"));
    bool ok = rc == -1 && r->status == status && got_code && strcmp(got_code, code) == 0 &&
              (field ? got_field && strcmp(got_field, field) == 0 : got_field == NULL);
    CHECKF(ok, "line %d, %s: rc %d, status %d, body %s (want %d %s field %s)", line, what, rc,
           r->status, r->body ? r->body : "(none)", status, code, field ? field : "(none)");
    const char *msg = json_string_value(json_object_get(e, "message"));
    CHECKF(!root[0] || !msg || !strstr(msg, root), "line %d, %s: the message names the "
           "server's directory: %s", line, what, msg);
    if (ok)
        fprintf(stderr, "  %-44s -> %d %s: %s\n", what, status, code, msg);
    json_decref(j);
    api_reply_free(r);
    return ok;
}
#define REFUSED(what, rc, r, status, code, field) \
    refused_(__LINE__, what, rc, r, status, code, field)

static int parse(const char *body, api_finetune_spec *s, api_reply *r)
{
    api_reply_init(r);
    return api_finetune_parse_body(body, strlen(body), s, r);
}

static void test_parse(void)
{
    api_finetune_spec s;
    api_reply r;
    CHECK(parse("{\"task\": \"shoes\", \"train\": \"fm/train\"}", &s, &r) == 0);
    trainer_config d = trainer_defaults();
    CHECK(strcmp(s.task, "shoes") == 0 && strcmp(s.train, "fm/train") == 0 && s.eval[0] == 0);
    CHECK(s.method == VIT_METHOD_BITFIT && s.epochs == d.epochs && s.batch_size == d.batch_size);
    CHECK(s.lr == d.lr && s.weight_decay == d.weight_decay && s.seed == d.seed);
    CHECK(!s.overwrite && !s.skip_bad && s.max_steps == 0);

    const char *all = "{\"task\":\"a.b-c_1\",\"train\":\"t\",\"eval\":\"e\",\"method\":\"linear\","
                      "\"overwrite\":true,\"skip_bad\":true,\"epochs\":3,\"batch_size\":16,"
                      "\"lr\":0.25,\"min_lr\":0.125,\"weight_decay\":0.5,\"warmup_epochs\":1.5,"
                      "\"seed\":9007199254740991,\"augment\":\"strong\",\"label_smoothing\":0.1,"
                      "\"validation_split\":0.5,\"early_stopping_patience\":4,\"max_steps\":77}";
    CHECK(parse(all, &s, &r) == 0);
    CHECK(s.method == VIT_METHOD_LINEAR && s.overwrite && s.skip_bad && s.epochs == 3 &&
          s.batch_size == 16 && s.lr == 0.25 && s.min_lr == 0.125 && s.weight_decay == 0.5 &&
          s.warmup_epochs == 1.5 && s.seed == 9007199254740991ull &&
          strcmp(s.augment, "strong") == 0 && s.label_smoothing == 0.1 &&
          s.validation_split == 0.5 && s.early_stopping_patience == 4 && s.max_steps == 77 &&
          strcmp(s.eval, "e") == 0);
    CHECK(parse("{\"task\":\"a\",\"train\":\"t\",\"hyperparameters\":{\"epochs\":2,"
                "\"augment\":\"none\"}}", &s, &r) == 0);
    CHECK(s.epochs == 2 && strcmp(s.augment, "none") == 0);
    /* what the job object shows is what it runs: the stored request reads back */
    json_t *stored = api_finetune_request(&s);
    api_finetune_spec back;
    api_reply_init(&r);
    CHECK(stored && api_finetune_parse(stored, &back, &r) == 0 && back.epochs == 2 &&
          strcmp(back.augment, "none") == 0 && strcmp(back.task, "a") == 0);
    json_decref(stored);

    struct {
        const char *body;
        int status;
        const char *code, *field;
    } bad[] = {
        {"", 400, "bad_json", NULL},
        {"[1]", 400, "bad_json", NULL},
        {"{\"task\":\"a\",\"task\":\"b\",\"train\":\"t\"}", 400, "bad_json", NULL},
        {"{\"train\":\"t\"}", 422, "missing_field", "task"},
        {"{\"task\":\"a\"}", 422, "missing_field", "train"},
        {"{\"task\":\"a\",\"train\":null}", 422, "missing_field", "train"},
        {"{\"task\":\"Shoes\",\"train\":\"t\"}", 422, "invalid_task_name", "task"},
        {"{\"task\":\"-a\",\"train\":\"t\"}", 422, "invalid_task_name", "task"},
        {"{\"task\":7,\"train\":\"t\"}", 422, "invalid_field", "task"},
        {"{\"task\":\"\",\"train\":\"t\"}", 422, "invalid_task_name", "task"},
        {"{\"task\":\"a\\n\",\"train\":\"t\"}", 422, "invalid_task_name", "task"},
        {"{\"task\":\"a\\u0000b\",\"train\":\"t\"}", 400, "bad_json", NULL}, /* NUL: never parsed */
        {"{\"task\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\","
         "\"train\":\"t\"}", 422, "invalid_task_name", "task"},
        {"{\"task\":\"a\",\"train\":\"\"}", 422, "invalid_field", "train"},
        {"{\"task\":\"a\",\"train\":\"t\\u0001\"}", 422, "invalid_field", "train"},
        {"{\"task\":\"a\",\"train\":\"t\",\"eval\":5}", 422, "invalid_field", "eval"},
        {"{\"task\":\"a\",\"train\":\"t\",\"method\":\"lora\"}", 422, "invalid_method", "method"},
        {"{\"task\":\"a\",\"train\":\"t\",\"method\":\"full\"}", 422, "method_disabled",
         "method"},
        {"{\"task\":\"a\",\"train\":\"t\",\"colour\":1}", 422, "unknown_field", "colour"},
        {"{\"task\":\"a\",\"train\":\"t\",\"hyperparameters\":{\"colour\":1}}", 422,
         "unknown_field", "colour"},
        {"{\"task\":\"a\",\"train\":\"t\",\"hyperparameters\":[1]}", 422, "invalid_field",
         "hyperparameters"},
        {"{\"task\":\"a\",\"train\":\"t\",\"epochs\":2,\"hyperparameters\":{\"epochs\":2}}", 422,
         "invalid_field", "epochs"},
        {"{\"task\":\"a\",\"train\":\"t\",\"epochs\":0}", 422, "invalid_field", "epochs"},
        {"{\"task\":\"a\",\"train\":\"t\",\"epochs\":1001}", 422, "invalid_field", "epochs"},
        {"{\"task\":\"a\",\"train\":\"t\",\"epochs\":2.5}", 422, "invalid_field", "epochs"},
        {"{\"task\":\"a\",\"train\":\"t\",\"epochs\":\"2\"}", 422, "invalid_field", "epochs"},
        {"{\"task\":\"a\",\"train\":\"t\",\"batch_size\":0}", 422, "invalid_field", "batch_size"},
        {"{\"task\":\"a\",\"train\":\"t\",\"batch_size\":1025}", 422, "invalid_field",
         "batch_size"},
        {"{\"task\":\"a\",\"train\":\"t\",\"lr\":0}", 422, "invalid_field", "lr"},
        {"{\"task\":\"a\",\"train\":\"t\",\"lr\":11}", 422, "invalid_field", "lr"},
        {"{\"task\":\"a\",\"train\":\"t\",\"lr\":true}", 422, "invalid_field", "lr"},
        {"{\"task\":\"a\",\"train\":\"t\",\"lr\":0.1,\"min_lr\":0.2}", 422, "invalid_field",
         "min_lr"},
        {"{\"task\":\"a\",\"train\":\"t\",\"weight_decay\":-1e-9}", 422, "invalid_field",
         "weight_decay"},
        {"{\"task\":\"a\",\"train\":\"t\",\"epochs\":2,\"warmup_epochs\":2.5}", 422,
         "invalid_field", "warmup_epochs"},
        {"{\"task\":\"a\",\"train\":\"t\",\"seed\":-1}", 422, "invalid_field", "seed"},
        {"{\"task\":\"a\",\"train\":\"t\",\"seed\":9007199254740992}", 422, "invalid_field",
         "seed"},
        {"{\"task\":\"a\",\"train\":\"t\",\"augment\":\"heavy\"}", 422, "invalid_field",
         "augment"},
        {"{\"task\":\"a\",\"train\":\"t\",\"label_smoothing\":1}", 422, "invalid_field",
         "label_smoothing"},
        {"{\"task\":\"a\",\"train\":\"t\",\"validation_split\":0.6}", 422, "invalid_field",
         "validation_split"},
        {"{\"task\":\"a\",\"train\":\"t\",\"early_stopping_patience\":-1}", 422, "invalid_field",
         "early_stopping_patience"},
        {"{\"task\":\"a\",\"train\":\"t\",\"max_steps\":1000000001}", 422, "invalid_field",
         "max_steps"},
        {"{\"task\":\"a\",\"train\":\"t\",\"overwrite\":1}", 422, "invalid_field", "overwrite"},
        {"{\"task\":\"a\",\"train\":\"t\",\"skip_bad\":\"yes\"}", 422, "invalid_field",
         "skip_bad"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        REFUSED(bad[i].body, parse(bad[i].body, &s, &r), &r, bad[i].status, bad[i].code,
                bad[i].field);
    /* a path of API_FT_PATH_MAX bytes is the longest */
    char body[API_FT_PATH_MAX + 64], path[API_FT_PATH_MAX + 2];
    memset(path, 'p', sizeof path - 1);
    path[API_FT_PATH_MAX] = 0;
    snprintf(body, sizeof body, "{\"task\":\"a\",\"train\":\"%s\"}", path);
    CHECK(parse(body, &s, &r) == 0);
    path[API_FT_PATH_MAX] = 'p';
    path[API_FT_PATH_MAX + 1] = 0;
    snprintf(body, sizeof body, "{\"task\":\"a\",\"train\":\"%s\"}", path);
    REFUSED("train of API_FT_PATH_MAX + 1 bytes", parse(body, &s, &r), &r, 422, "invalid_field",
            "train");
    /* the body cap comes before parsing */
    size_t big = API_FT_BODY_MAX + 1;
    char *huge = malloc(big + 1);
    VIT_ASSERT(huge);
    memset(huge, ' ', big);
    huge[big] = 0;
    huge[0] = '{';
    huge[big - 1] = '}';
    api_reply_init(&r);
    REFUSED("a body of API_FT_BODY_MAX + 1 bytes",
            api_finetune_parse_body(huge, big, &s, &r), &r, 413, "body_too_large", NULL);
    free(huge);
}

/* ---- data sets ---------------------------------------------------------- */

static void mkdirs(const char *rel)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    for (char *s = p + strlen(root) + 1; (s = strchr(s, '/')); s++) {
        *s = 0;
        mkdir(p, 0755);
        *s = '/';
    }
    VIT_ASSERT(mkdir(p, 0755) == 0 || errno == EEXIST);
}

static void copy_sample(const char *sample, const char *rel)
{
    char src[1024], dst[512];
    test_path(src, sizeof src, sample);
    snprintf(dst, sizeof dst, "%s/%s", root, rel);
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    VIT_ASSERT(in && out);
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        VIT_ASSERT(fwrite(buf, 1, n, out) == n);
    fclose(in);
    VIT_ASSERT(fclose(out) == 0);
}

static void write_text(const char *rel, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    FILE *f = fopen(p, "w");
    VIT_ASSERT(f && fputs(text, f) >= 0 && fclose(f) == 0);
}

static int check_sets(const api_finetune_env *env, const char *train, const char *eval,
                      bool overwrite, api_reply *r)
{
    api_finetune_spec s;
    char body[1024];
    snprintf(body, sizeof body, "{\"task\":\"shoes\",\"train\":\"%s\"%s%s%s,\"overwrite\":%s}",
             train, eval ? ",\"eval\":\"" : "", eval ? eval : "", eval ? "\"" : "",
             overwrite ? "true" : "false");
    api_reply_init(r);
    if (api_finetune_parse_body(body, strlen(body), &s, r) != 0)
        return -2;
    return api_finetune_check(env, &s, r);
}

static void test_datasets(task_store *tasks)
{
    char datasets[300], outside[300], fifo[320], link[400];
    snprintf(datasets, sizeof datasets, "%s/data/datasets", root);
    api_finetune_env env = {.datasets_dir = datasets, .tasks = tasks};
    api_reply r;
    REFUSED("no datasets directory", check_sets(&env, "fm", NULL, false, &r), &r, 422,
            "dataset_not_found", "train");

    static const char *const samples[] = {"0_ankle_boot", "8_sandal", "9_sneaker", "2_trouser"};
    mkdirs("data/datasets/fm/train/boot");
    mkdirs("data/datasets/fm/train/sandal");
    mkdirs("data/datasets/fm/test/boot");
    mkdirs("data/datasets/fm/odd/hat");
    mkdirs("data/datasets/one/only");
    mkdirs("data/datasets/empty");
    char rel[256], sample[256];
    for (int i = 0; i < 4; i++) {
        snprintf(sample, sizeof sample, "models/fashion-vit-tiny/samples/%s.png", samples[i]);
        snprintf(rel, sizeof rel, "data/datasets/fm/train/%s/%d.png", i < 2 ? "boot" : "sandal",
                 i);
        copy_sample(sample, rel);
        snprintf(rel, sizeof rel, "data/datasets/fm/test/boot/%d.png", i);
        copy_sample(sample, rel);
        snprintf(rel, sizeof rel, "data/datasets/fm/odd/hat/%d.png", i);
        copy_sample(sample, rel);
        snprintf(rel, sizeof rel, "data/datasets/one/only/%d.png", i);
        copy_sample(sample, rel);
    }
    write_text("data/datasets/fm/train.csv",
               "image,label\ntrain/boot/0.png,boot\ntrain/sandal/2.png,sandal\n");
    write_text("data/datasets/fm/notes.txt", "not a data set\n");
    /* outside: a directory of images and a FIFO */
    mkdirs("outside/boot");
    mkdirs("outside/sandal");
    copy_sample("models/fashion-vit-tiny/samples/0_ankle_boot.png", "outside/boot/0.png");
    copy_sample("models/fashion-vit-tiny/samples/8_sandal.png", "outside/sandal/0.png");
    snprintf(outside, sizeof outside, "%s/outside", root);
    snprintf(fifo, sizeof fifo, "%s/outside/fifo", root);
    VIT_ASSERT(mkfifo(fifo, 0600) == 0);
    snprintf(link, sizeof link, "%s/abs-link", datasets);
    VIT_ASSERT(symlink(outside, link) == 0);
    snprintf(link, sizeof link, "%s/rel-link", datasets);
    VIT_ASSERT(symlink("../../outside", link) == 0);
    snprintf(link, sizeof link, "%s/fifo-link", datasets);
    VIT_ASSERT(symlink(fifo, link) == 0);
    snprintf(link, sizeof link, "%s/fm/inner-link", datasets);
    VIT_ASSERT(symlink("train", link) == 0); /* a symlink that stays inside is fine */
    snprintf(link, sizeof link, "%s/fifo", datasets);
    VIT_ASSERT(mkfifo(link, 0600) == 0);

    CHECK(check_sets(&env, "fm/train", "fm/test", false, &r) == 0);
    api_reply_free(&r);
    CHECK(check_sets(&env, "fm/train.csv", NULL, false, &r) == 0);
    api_reply_free(&r);
    CHECK(check_sets(&env, "./fm//inner-link/", NULL, false, &r) == 0);
    api_reply_free(&r);

    REFUSED("missing", check_sets(&env, "fm/nope", NULL, false, &r), &r, 422,
            "dataset_not_found", "train");
    REFUSED("missing eval", check_sets(&env, "fm/train", "nope", false, &r), &r, 422,
            "dataset_not_found", "eval");
    REFUSED("..", check_sets(&env, "fm/../fm/train", NULL, false, &r), &r, 422,
            "dataset_outside", "train");
    REFUSED("../ above", check_sets(&env, "../datasets/fm/train", NULL, false, &r), &r, 422,
            "dataset_outside", "train");
    char abs_path[400];
    snprintf(abs_path, sizeof abs_path, "%s/fm/train", datasets);
    REFUSED("absolute (even inside)", check_sets(&env, abs_path, NULL, false, &r), &r, 422,
            "dataset_outside", "train");
    REFUSED("symlink to an absolute path outside", check_sets(&env, "abs-link", NULL, false, &r),
            &r, 422, "dataset_outside", "train");
    REFUSED("symlink to ../../outside", check_sets(&env, "rel-link", NULL, false, &r), &r, 422,
            "dataset_outside", "train");
    REFUSED("through a symlink out", check_sets(&env, "abs-link/boot", NULL, false, &r), &r, 422,
            "dataset_outside", "train");
    REFUSED("symlink to a FIFO outside", check_sets(&env, "fifo-link", NULL, false, &r), &r, 422,
            "dataset_outside", "train");
    REFUSED("eval through a symlink out", check_sets(&env, "fm/train", "abs-link", false, &r),
            &r, 422, "dataset_outside", "eval");
    REFUSED("a FIFO inside", check_sets(&env, "fifo", NULL, false, &r), &r, 422,
            "invalid_dataset", "train");
    REFUSED("an empty folder", check_sets(&env, "empty", NULL, false, &r), &r, 422,
            "invalid_dataset", "train");
    REFUSED("one class", check_sets(&env, "one", NULL, false, &r), &r, 422, "invalid_dataset",
            "train");
    REFUSED("not a data set", check_sets(&env, "fm/notes.txt", NULL, false, &r), &r, 422,
            "invalid_dataset", "train");
    REFUSED("eval with a class train lacks", check_sets(&env, "fm/train", "fm/odd", false, &r),
            &r, 422, "invalid_dataset", "eval");

    /* a task of that name exists: refused unless overwrite */
    char task_file[400];
    snprintf(task_file, sizeof task_file, "%s/data/tasks/shoes.safetensors", root);
    FILE *f = fopen(task_file, "w");
    VIT_ASSERT(f && fclose(f) == 0);
    REFUSED("task exists", check_sets(&env, "fm/train", NULL, false, &r), &r, 409,
            "task_exists", "task");
    CHECK(check_sets(&env, "fm/train", NULL, true, &r) == 0);
    api_reply_free(&r);
    unlink(task_file);
}

int main(void)
{
    test_parse();

    snprintf(root, sizeof root, "/tmp/vitfit-test-ftreq-XXXXXX");
    VIT_ASSERT(mkdtemp(root));
    mkdirs("data/tasks");
    char model_dir[1024], tasks_dir[300], fp[65];
    vit_model *m = NULL;
    vit_error err = {0};
    VIT_ASSERT(vit_model_load(test_path(model_dir, sizeof model_dir, "models/fashion-vit-tiny"),
                              &m, &err) == VIT_OK);
    VIT_ASSERT(vit_model_fingerprint(m, fp, &err) == VIT_OK);
    snprintf(tasks_dir, sizeof tasks_dir, "%s/data/tasks", root);
    task_store *tasks = NULL;
    VIT_ASSERT(task_store_open(m, fp, tasks_dir, 64u << 20, &tasks, &err) == VIT_OK);
    test_datasets(tasks);
    task_store_close(tasks);
    vit_model_free(m);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", root);
    return check_result();
}
