/*
 * finetune.h - what a fine-tune job asks for (POST /v1/finetune): parsing,
 * validation before queueing, and the job's hyper-parameters as JSON.
 *
 * A request is checked in two steps.  api_finetune_parse reads the JSON --
 * known keys only, types and ranges, every default filled in from the
 * trainer's per-method defaults -- and needs nothing but the body; it also
 * re-reads a job.json's request part when the server restarts.
 * api_finetune_check then looks at the world: the task name is free (or
 * `overwrite` is set), and the data sets resolve beneath
 * <data_dir>/datasets -- no absolute path, no "..", no symlink leading out,
 * decided from names inside that directory alone, so nothing outside it is
 * ever read -- and open as a non-empty set of at least two classes (an eval
 * set naming a class the training set lacks is refused too).
 *
 * Every refusal is an api_reply with the error shape and a "field" member
 * naming the request key at fault (JOBS contract: 422 invalid_field,
 * unknown_field, missing_field, invalid_task_name, invalid_method,
 * method_disabled, dataset_not_found, dataset_outside, invalid_dataset;
 * 409 task_exists; 400 bad_json).
 */
#ifndef VIT_API_FINETUNE_H
#define VIT_API_FINETUNE_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "api.h"
#include "dataset.h"
#include "task.h"
#include "task_store.h"
#include "trainer.h"

/* The largest request body: a job is a few hundred bytes of JSON, and
 * parsing a body of max_body_bytes could allocate many times its size
 * (json_loadb builds a node per value). */
#define API_FT_BODY_MAX 65536

/* A data set path below <data_dir>/datasets, as the client wrote it. */
#define API_FT_PATH_MAX 1024

/* The augmentation policies a job may name (the trainer's, by name). */
#define API_FT_AUGMENT_MAX 8

/* One job's request, every default filled in. */
typedef struct api_finetune_spec {
    char task[TASK_NAME_MAX + 1];
    char train[API_FT_PATH_MAX + 1];
    char eval[API_FT_PATH_MAX + 1];   /* "" when none */
    vit_method method;
    bool overwrite;                   /* replace a task of that name when the job succeeds */
    bool skip_bad;                    /* skip images that do not load, each an event */
    int epochs, batch_size;
    double lr, min_lr, weight_decay, warmup_epochs, label_smoothing, validation_split;
    uint64_t seed;
    char augment[API_FT_AUGMENT_MAX]; /* "auto", "none", "light", "strong" */
    int early_stopping_patience;
    long max_steps;                   /* 0: epochs decide */
} api_finetune_spec;

/* What api_finetune_check looks at. */
typedef struct api_finetune_env {
    const char *datasets_dir;         /* <data_dir>/datasets */
    task_store *tasks;
    /* api_finetune_open: fetches a manifest's http(s) entries (a job's
     * fetcher, server/job_fetch.h), whose syntax is checked at open as
     * api_fetch checks it; NULL: such entries are refused.
     * api_finetune_check ignores it and never fetches. */
    ds_fetch_fn fetch;
    void *fetch_ctx;
} api_finetune_env;

/* Reads request `req` (a JSON object: the body of POST /v1/finetune, or the
 * request part of a stored job) into *out.  Returns 0, or -1 with r filled
 * (422 naming the field; 400 bad_json when req is not an object). */
int api_finetune_parse(const json_t *req, api_finetune_spec *out, api_reply *r);

/* api_finetune_parse of body[0..len) (any bytes); over API_FT_BODY_MAX:
 * 413 body_too_large, before it is parsed. */
int api_finetune_parse_body(const char *body, size_t len, api_finetune_spec *out, api_reply *r);

/* Checks *spec against the world (see the top); 0 or -1 with r filled.
 * A manifest's URL entries are checked as URLs (api_fetch_check_url) and
 * never fetched, whatever env->fetch. */
int api_finetune_check(const api_finetune_env *env, const api_finetune_spec *spec, api_reply *r);

/* Opens the data sets of *spec as api_finetune_check does (without its task
 * check): *train, and *eval when spec names one (else NULL); the caller
 * closes them.  0, or -1 with r filled. */
int api_finetune_open(const api_finetune_env *env, const api_finetune_spec *spec,
                      ds_dataset **train, ds_dataset **eval, api_reply *r);

/* Removes every "<prefix>/" (and a bare prefix) from msg in place: engine
 * messages name files by their absolute path, and a client is told them
 * relative to the data set directory, never where the server keeps it. */
void api_finetune_strip_prefix(char *msg, const char *prefix);

/* {"epochs": .., ..., "skip_bad": .., "overwrite": ..}: every hyper-parameter
 * of the job (new reference; NULL when out of memory). */
json_t *api_finetune_hyperparameters(const api_finetune_spec *spec);

/* The request as api_finetune_parse reads it back (task, train, eval,
 * method, hyperparameters): what a job stores to be run again. */
json_t *api_finetune_request(const api_finetune_spec *spec);

/* The trainer configuration that runs *spec (callbacks and threads unset). */
trainer_config api_finetune_trainer_config(const api_finetune_spec *spec);

#endif
