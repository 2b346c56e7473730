/*
 * finetune.c - a fine-tune job's request: parse, validate, describe
 * (finetune.h).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "beneath.h"
#include "dataset.h"
#include "fetch.h"
#include "finetune.h"

/* The hyper-parameters: one row each, so parsing, ranges and the job
 * object's "hyperparameters" read one table. */
typedef enum hp_type { HP_INT, HP_LONG, HP_REAL, HP_SEED, HP_AUGMENT, HP_BOOL } hp_type;

typedef struct hp_row {
    const char *name;
    hp_type type;
    double min, max;        /* inclusive; reals and integers */
    size_t offset;          /* in api_finetune_spec */
} hp_row;

#define HP(name, type, lo, hi) {#name, type, lo, hi, offsetof(api_finetune_spec, name)}

static const hp_row hp_rows[] = {
    HP(epochs, HP_INT, 1, 1000),
    HP(batch_size, HP_INT, 1, 1024),
    HP(lr, HP_REAL, 1e-9, 10),
    HP(min_lr, HP_REAL, 0, 10),
    HP(weight_decay, HP_REAL, 0, 10),
    HP(warmup_epochs, HP_REAL, 0, 1000),
    HP(seed, HP_SEED, 0, 9007199254740991.0), /* 2^53 - 1: exact in every JSON reader */
    HP(augment, HP_AUGMENT, 0, 0),
    HP(label_smoothing, HP_REAL, 0, 0.99),
    HP(validation_split, HP_REAL, 0, 0.5),
    HP(early_stopping_patience, HP_INT, 0, 1000),
    HP(max_steps, HP_LONG, 0, 1e9),
    HP(skip_bad, HP_BOOL, 0, 0),
    HP(overwrite, HP_BOOL, 0, 0),
};
#define HP_COUNT (sizeof hp_rows / sizeof hp_rows[0])

static const hp_row *hp_find(const char *name)
{
    for (size_t i = 0; i < HP_COUNT; i++)
        if (strcmp(hp_rows[i].name, name) == 0)
            return &hp_rows[i];
    return NULL;
}

/* Defaults: the trainer's for the method (trainer_defaults_for), so a job
 * and `vitfit train` given only a data set run the same recipe. */
static void spec_defaults(api_finetune_spec *s, vit_method method)
{
    trainer_config c = trainer_defaults_for(method);
    s->method = method;
    s->epochs = c.epochs;
    s->batch_size = c.batch_size;
    s->lr = c.lr;
    s->min_lr = c.min_lr;
    s->weight_decay = c.weight_decay;
    s->warmup_epochs = c.warmup_epochs;
    s->label_smoothing = c.label_smoothing;
    s->seed = c.seed;
    snprintf(s->augment, sizeof s->augment, "%s", trainer_augment_name(c.augment));
    s->validation_split = c.validation_split;
    s->early_stopping_patience = c.early_stopping_patience;
    s->max_steps = c.max_steps;
}

static int field_error(api_reply *r, const char *field, const char *fmt, const char *detail)
{
    return api_error_field(r, 422, "invalid_field", field, fmt, field, detail);
}

/* Sets one hyper-parameter from v; 0 or -1 with r filled. */
static int hp_set(const hp_row *h, const json_t *v, api_finetune_spec *s, api_reply *r)
{
    char *at = (char *)s + h->offset;
    char range[96];
    if (h->type == HP_REAL)
        snprintf(range, sizeof range, "%g to %g", h->min, h->max);
    else
        snprintf(range, sizeof range, "%.0f to %.0f", h->min, h->max);
    switch (h->type) {
    case HP_BOOL:
        if (!json_is_boolean(v))
            return field_error(r, h->name, "'%s' must be true or false%s", "");
        *(bool *)at = json_is_true(v);
        return 0;
    case HP_AUGMENT: {
        trainer_augment a;
        const char *name = json_string_value(v);
        if (!name || strlen(name) >= sizeof s->augment || !trainer_augment_parse(name, &a))
            return field_error(r, h->name, "'%s' must be one of %s",
                               "\"auto\", \"none\", \"light\", \"strong\"");
        snprintf(s->augment, sizeof s->augment, "%s", trainer_augment_name(a));
        return 0;
    }
    case HP_INT:
    case HP_LONG:
    case HP_SEED: {
        if (!json_is_integer(v))
            return field_error(r, h->name, "'%s' must be an integer from %s", range);
        json_int_t n = json_integer_value(v);
        if ((double)n < h->min || (double)n > h->max)
            return field_error(r, h->name, "'%s' must be an integer from %s", range);
        if (h->type == HP_INT)
            *(int *)at = (int)n;
        else if (h->type == HP_LONG)
            *(long *)at = (long)n;
        else
            *(uint64_t *)at = (uint64_t)n;
        return 0;
    }
    case HP_REAL: {
        if (!json_is_number(v))
            return field_error(r, h->name, "'%s' must be a number from %s", range);
        double x = json_number_value(v);
        if (!isfinite(x) || x < h->min || x > h->max)
            return field_error(r, h->name, "'%s' must be a number from %s", range);
        *(double *)at = x;
        return 0;
    }
    }
    return api_error(r, 500, "internal", "unknown hyper-parameter type");
}

/* A string member of req at most max bytes, without NUL or control bytes:
 * 1 when present and copied, 0 when absent (or null), -1 with r filled. */
static int string_member(const json_t *req, const char *key, char *out, size_t size,
                         api_reply *r)
{
    const json_t *v = json_object_get(req, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return api_error_field(r, 422, "invalid_field", key, "'%s' must be a string", key);
    size_t n = json_string_length(v);
    const char *text = json_string_value(v);
    if (n == 0 || n >= size)
        return api_error_field(r, 422, "invalid_field", key,
                               "'%s' must be 1 to %zu bytes long", key, size - 1);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f)
            return api_error_field(r, 422, "invalid_field", key,
                                   "'%s' must not hold control characters", key);
    memcpy(out, text, n + 1);
    return 1;
}

static bool top_level_key(const char *key)
{
    static const char *const keys[] = {"task", "train", "eval", "method", "hyperparameters"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (strcmp(key, keys[i]) == 0)
            return true;
    return false;
}

int api_finetune_parse(const json_t *req, api_finetune_spec *out, api_reply *r)
{
    memset(out, 0, sizeof *out);
    if (!json_is_object(req))
        return api_error(r, 400, "bad_json", "the body must be a JSON object");
    /* the method first: the other defaults depend on it */
    vit_method method = VIT_METHOD_BITFIT;
    const json_t *m = json_object_get(req, "method");
    if (m && !json_is_null(m)) {
        if (!json_is_string(m) || !vit_method_parse(json_string_value(m), &method))
            return api_error_field(r, 422, "invalid_method", "method",
                                   "'method' must be \"bitfit\" or \"linear\"");
        if (method == VIT_METHOD_FULL)
            return api_error_field(
                r, 422, "method_disabled", "method",
                "'full' fine-tuning makes a new backbone, which this server cannot serve "
                "beside the one it runs; use 'vitfit train --method full'");
    }
    spec_defaults(out, method);

    const json_t *hyper = json_object_get(req, "hyperparameters");
    if (hyper && !json_is_null(hyper) && !json_is_object(hyper))
        return api_error_field(r, 422, "invalid_field", "hyperparameters",
                               "'hyperparameters' must be an object");
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)req, key, v) {
        if (top_level_key(key))
            continue;
        const hp_row *h = hp_find(key);
        if (!h)
            return api_error_field(r, 422, "unknown_field", key, "unknown field '%.100s'", key);
        if (json_object_get(hyper, key))
            return api_error_field(r, 422, "invalid_field", key,
                                   "'%s' is given twice: at the top and in 'hyperparameters'",
                                   key);
        if (hp_set(h, v, out, r) != 0)
            return -1;
    }
    json_object_foreach((json_t *)hyper, key, v) {
        const hp_row *h = hp_find(key);
        if (!h)
            return api_error_field(r, 422, "unknown_field", key,
                                   "unknown field 'hyperparameters.%.100s'", key);
        if (hp_set(h, v, out, r) != 0)
            return -1;
    }
    if (out->min_lr > out->lr)
        return api_error_field(r, 422, "invalid_field", "min_lr",
                               "'min_lr' (%g) must not be above 'lr' (%g)", out->min_lr, out->lr);
    if (out->warmup_epochs > out->epochs)
        return api_error_field(r, 422, "invalid_field", "warmup_epochs",
                               "'warmup_epochs' (%g) must not be above 'epochs' (%d)",
                               out->warmup_epochs, out->epochs);

    const json_t *task = json_object_get(req, "task");
    if (!task || json_is_null(task))
        return api_error_field(r, 422, "missing_field", "task", "'task' is required");
    if (!json_is_string(task))
        return api_error_field(r, 422, "invalid_field", "task", "'task' must be a string");
    if (json_string_length(task) > TASK_NAME_MAX ||
        strlen(json_string_value(task)) != json_string_length(task) ||
        !task_name_valid(json_string_value(task)))
        return api_error_field(r, 422, "invalid_task_name", "task",
                               "task names match ^[a-z0-9][a-z0-9._-]{0,63}$");
    snprintf(out->task, sizeof out->task, "%s", json_string_value(task));
    int got;
    if ((got = string_member(req, "train", out->train, sizeof out->train, r)) < 0)
        return -1;
    if (got == 0)
        return api_error_field(r, 422, "missing_field", "train",
                               "'train' (a data set under <data_dir>/datasets) is required");
    if (string_member(req, "eval", out->eval, sizeof out->eval, r) < 0)
        return -1;
    return 0;
}

int api_finetune_parse_body(const char *body, size_t len, api_finetune_spec *out, api_reply *r)
{
    if (len > API_FT_BODY_MAX)
        return api_error(r, 413, "body_too_large",
                         "a fine-tune job's body is at most %d bytes (this one: %zu)",
                         API_FT_BODY_MAX, len);
    json_error_t jerr;
    json_t *req = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES, &jerr);
    if (!req)
        return api_error(r, 400, "bad_json", "the body is not valid JSON: %s (line %d)",
                         jerr.text, jerr.line);
    int rc = api_finetune_parse(req, out, r);
    json_decref(req);
    return rc;
}

/* A path the client may name: relative and without "..", checked on its
 * text before anything is looked up. */
static bool path_stays_below(const char *path)
{
    if (path[0] == '/')
        return false;
    for (const char *p = path; *p;) {
        size_t n = strcspn(p, "/");
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return false;
        p += n;
        while (*p == '/')
            p++;
    }
    return true;
}

void api_finetune_strip_prefix(char *msg, const char *prefix)
{
    size_t n = strlen(prefix);
    if (n == 0)
        return;
    for (char *p = strstr(msg, prefix); p; p = strstr(p, prefix)) {
        size_t cut = n + (p[n] == '/');
        memmove(p, p + cut, strlen(p + cut) + 1);
    }
}

/* ds_options.check_url: the URL checks of api_fetch, nothing sent. */
static vit_status url_check(void *ctx, const char *url, vit_error *err)
{
    (void)ctx;
    char msg[256];
    api_fetch_result res = api_fetch_check_url(url, msg, sizeof msg);
    if (res == API_FETCH_OK)
        return VIT_OK;
    return vit_error_set(err, res == API_FETCH_BAD_URL ? VIT_ERR_INVALID : VIT_ERR_NOMEM, "%s",
                         msg);
}

/* The fetch hook of api_finetune_check: a data set opened to be validated
 * keeps its URL entries as items, and ds_open never calls the hook, so this
 * runs only if that promise broke -- then it fetches nothing either. */
static vit_status no_fetch(void *ctx, const char *url, size_t max_bytes, uint8_t **data,
                           size_t *len, bool *stopped, vit_error *err)
{
    (void)ctx, (void)url, (void)max_bytes, (void)stopped;
    *data = NULL;
    *len = 0;
    return vit_error_set(err, VIT_ERR_INVALID, "URLs are not fetched while a job is validated");
}

/* Opens data set `path` (the value of `field`) beneath root; classes: the
 * training set's, for an eval set (NULL for the training set). */
static int open_dataset(const api_finetune_env *env, beneath_root *root, const char *field,
                        const char *path, const char *const *classes, ds_dataset **out,
                        api_reply *r)
{
    *out = NULL;
    if (!path_stays_below(path))
        return api_error_field(r, 422, "dataset_outside", field,
                               "'%s' must be a path below <data_dir>/datasets, without '..'",
                               field);
    int fd = -1, eno = 0;
    struct stat st;
    beneath_result res = beneath_walk(root, path, BENEATH_WANT_ANY, NULL, &fd, &st, NULL, &eno);
    if (fd >= 0)
        close(fd);
    switch (res) {
    case BENEATH_OK:
        break;
    case BENEATH_OUTSIDE:
        return api_error_field(r, 422, "dataset_outside", field,
                               "'%s' leads outside <data_dir>/datasets", field);
    case BENEATH_MISSING:
        return api_error_field(r, 422, "dataset_not_found", field,
                               "'%s': no data set '%.200s' under <data_dir>/datasets", field,
                               path);
    default: {
        vit_error err = {0};
        beneath_error(root, res, eno, BENEATH_WANT_ANY, path, &err);
        api_finetune_strip_prefix(err.message, beneath_root_path(root));
        return api_error_field(r, 422, "invalid_dataset", field, "'%s': %s", field,
                               err.message);
    }
    }
    char *full = beneath_path(root, path);
    if (!full)
        return api_error(r, 500, "out_of_memory", "out of memory");
    ds_options opt = {.root = env->datasets_dir, .classes = classes};
    if (env->fetch) {
        opt.fetch = env->fetch;
        opt.check_url = url_check;
        opt.fetch_ctx = env->fetch_ctx;
    }
    vit_error err = {0};
    vit_status s = ds_open(full, &opt, out, &err);
    free(full);
    if (s != VIT_OK) {
        api_finetune_strip_prefix(err.message, beneath_root_path(root));
        api_finetune_strip_prefix(err.message, env->datasets_dir);
        return api_error_field(r, 422, "invalid_dataset", field, "'%s': %s", field,
                               err.message);
    }
    if (ds_size(*out) == 0) {
        ds_close(*out);
        *out = NULL;
        return api_error_field(r, 422, "invalid_dataset", field, "'%s' holds no images", field);
    }
    int k = ds_num_classes(*out);
    if (!classes && k < 2) {
        ds_close(*out);
        *out = NULL;
        return api_error_field(r, 422, "invalid_dataset", field,
                               "'%s' has %d class; a task needs at least 2", field, k);
    }
    return 0;
}

int api_finetune_open(const api_finetune_env *env, const api_finetune_spec *spec,
                      ds_dataset **train, ds_dataset **eval, api_reply *r)
{
    *train = *eval = NULL;
    beneath_root *root = NULL;
    vit_error err = {0};
    if (beneath_root_open(env->datasets_dir, "data set directory", &root, &err) != VIT_OK)
        return api_error_field(r, 422, "dataset_not_found", "train",
                               "the server has no data set directory (<data_dir>/datasets)");
    const char **classes = NULL;
    int rc = open_dataset(env, root, "train", spec->train, NULL, train, r);
    if (rc == 0 && spec->eval[0]) {
        int k = ds_num_classes(*train);
        classes = calloc((size_t)k + 1, sizeof *classes);
        if (!classes)
            rc = api_error(r, 500, "out_of_memory", "out of memory");
        for (int i = 0; rc == 0 && i < k; i++)
            classes[i] = ds_class_name(*train, i);
        if (rc == 0)
            rc = open_dataset(env, root, "eval", spec->eval, classes, eval, r);
    }
    free(classes);
    beneath_root_close(root);
    if (rc != 0) {
        ds_close(*eval);
        ds_close(*train);
        *train = *eval = NULL;
    }
    return rc;
}

int api_finetune_check(const api_finetune_env *env, const api_finetune_spec *spec, api_reply *r)
{
    if (!spec->overwrite && task_store_exists(env->tasks, spec->task))
        return api_error_field(r, 409, "task_exists", "task",
                               "task '%s' exists; set \"overwrite\": true to replace it when "
                               "the job succeeds",
                               spec->task);
    api_finetune_env validate = *env;
    validate.fetch = no_fetch; /* URL entries: their syntax, nothing fetched */
    validate.fetch_ctx = NULL;
    ds_dataset *train, *eval;
    if (api_finetune_open(&validate, spec, &train, &eval, r) != 0)
        return -1;
    ds_close(eval);
    ds_close(train);
    return 0;
}

json_t *api_finetune_hyperparameters(const api_finetune_spec *s)
{
    json_t *h = json_object();
    for (size_t i = 0; h && i < HP_COUNT; i++) {
        const hp_row *row = &hp_rows[i];
        const char *at = (const char *)s + row->offset;
        json_t *v = NULL;
        switch (row->type) {
        case HP_INT: v = json_integer(*(const int *)at); break;
        case HP_LONG: v = json_integer(*(const long *)at); break;
        case HP_SEED: v = json_integer((json_int_t) * (const uint64_t *)at); break;
        case HP_REAL: v = json_real(*(const double *)at); break;
        case HP_AUGMENT: v = json_string(s->augment); break;
        case HP_BOOL: v = json_boolean(*(const bool *)at); break;
        }
        if (json_object_set_new(h, row->name, v) != 0) {
            json_decref(h);
            return NULL;
        }
    }
    return h;
}

json_t *api_finetune_request(const api_finetune_spec *s)
{
    json_t *h = api_finetune_hyperparameters(s);
    return h ? json_pack("{s:s,s:s,s:s*,s:s,s:o}", "task", s->task, "train", s->train, "eval",
                         s->eval[0] ? s->eval : NULL, "method", vit_method_name(s->method),
                         "hyperparameters", h)
             : NULL;
}

trainer_config api_finetune_trainer_config(const api_finetune_spec *s)
{
    trainer_config c = trainer_defaults_for(s->method);
    c.epochs = s->epochs;
    c.batch_size = s->batch_size;
    c.lr = s->lr;
    c.min_lr = s->min_lr;
    c.weight_decay = s->weight_decay;
    c.warmup_epochs = s->warmup_epochs;
    c.label_smoothing = s->label_smoothing;
    c.seed = s->seed;
    trainer_augment_parse(s->augment, &c.augment); /* one of its names: parsed */
    c.validation_split = s->validation_split;
    c.early_stopping_patience = s->early_stopping_patience;
    c.max_steps = s->max_steps;
    c.on_bad = s->skip_bad ? DS_BAD_SKIP : DS_BAD_FAIL;
    return c;
}
