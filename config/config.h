/*
 * config.h - the typed configuration of `vitfit serve` (DESIGN.md section 5,
 * STYLE.md 12).
 *
 * Every setting is one key of vit_cfg and one row of the table in config.c
 * ({name, type, default, min, max, field, help}); parsing, --help, the JSON
 * view and the example file's check all read that table, so adding a key is
 * one struct field plus one row.
 *
 * Layers, later winning: built-in defaults < the JSON config file (--config F,
 * else $VITFIT_CONFIG) < VITFIT_* environment variables < flags.  One name
 * rule: the key queue_capacity is the flag --queue-capacity (VALUE as the next
 * argument or after '=') and the variable VITFIT_QUEUE_CAPACITY.
 *
 * Nothing is guessed: an unknown key, flag or VITFIT_* variable, a value of
 * the wrong type, out of range, with trailing characters, or too long for its
 * field is an error naming the key and where it came from.  A handful of
 * VITFIT_* variables belong to the rest of vitfit and are passed over (the
 * list is in config.c and in cfg_print_help's text).
 *
 * The struct is filled once at start and read-only afterwards.  No global
 * state; nothing here exits.
 */
#ifndef VIT_CONFIG_CONFIG_H
#define VIT_CONFIG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

/* cfg_load's results. */
enum {
    CFG_OK = 0,
    CFG_HELP = 1,   /* --help or -h was given: print cfg_print_help, exit 0 */
    CFG_ERROR = -1, /* err holds one sentence naming the key and its source */
};

/* Field sizes of the string keys, terminating NUL included: a longer value
 * is refused, never truncated. */
#define CFG_PATH_SIZE 4096
#define CFG_HOST_SIZE 256
#define CFG_SECRET_SIZE 256
#define CFG_TASK_SIZE 65 /* a task name: ^[a-z0-9][a-z0-9._-]{0,63}$ */
#define CFG_URL_SIZE 1024

/* How the server writes its log lines. */
typedef enum cfg_log_format { CFG_LOG_JSON, CFG_LOG_TEXT } cfg_log_format;

/* What this replica does (several may share one data_dir). */
typedef enum cfg_role {
    CFG_ROLE_ALL,   /* classify and train */
    CFG_ROLE_SERVE, /* classify; fine-tune jobs submitted here are trained by another replica */
    CFG_ROLE_TRAIN, /* train fine-tune jobs; classify answers 503 not_serving */
} cfg_role;

/* What classify's matrix products multiply (engine: vit_precision, same order). */
typedef enum cfg_precision { CFG_PRECISION_FP32, CFG_PRECISION_BF16 } cfg_precision;

/* The settings of `vitfit serve`.  Strings are NUL-padded to their field's
 * size, so two configs with the same settings compare equal with memcmp.
 * See the table in config.c (or `vitfit serve --help`) for each key's
 * meaning, default and range. */
typedef struct vit_cfg {
    char host[CFG_HOST_SIZE];          /* listen address */
    int port;                          /* 0 = any free port */
    char model[CFG_PATH_SIZE];         /* backbone checkpoint (dir or file) */
    char data_dir[CFG_PATH_SIZE];      /* tasks/, datasets/, jobs/ live here */
    char hub_url[CFG_URL_SIZE];        /* where hf:ORG/NAME models come from */
    char cache[CFG_PATH_SIZE];         /* downloaded models; "" = ~/.cache/vitfit */
    bool hub_offline;                  /* hf: models from the cache only */
    int64_t hub_max_bytes;             /* largest file downloaded from the hub */
    int workers;                       /* inference workers */
    int threads_per_worker;            /* 0 = usable CPUs / workers */
    bool oversubscribe;                /* allow workers x threads > CPUs */
    cfg_precision precision;           /* fp32 or bf16 matrix products */
    int max_batch;                     /* images per forward pass */
    int max_batch_delay_ms;            /* wait for a batch to fill */
    int queue_capacity;                /* images waiting for a worker */
    int max_images_per_request;
    int request_timeout_ms;
    int64_t max_body_bytes;
    int64_t max_image_pixels;          /* width x height before decoding */
    int max_connections;
    int connection_timeout_s;          /* idle HTTP connection */
    int http_threads;
    int decode_threads;
    int max_concurrent_fetches;        /* image URLs fetched at once */
    int url_connect_timeout_ms;
    int url_timeout_ms;
    int64_t url_max_bytes;
    int url_max_redirects;
    bool allow_private_urls;           /* fetch from private/loopback addresses */
    char default_task[CFG_TASK_SIZE];  /* "" = the backbone's own head */
    int task_memory_mb;                /* loaded task bias sets, in total */
    int task_reload_ms;                /* rescan of tasks/ for other replicas' changes */
    int max_running_jobs;              /* fine-tune jobs training at once */
    int max_queued_jobs;               /* waiting jobs beyond this: 429 */
    int serve_reserved_threads;        /* CPUs training leaves to classify */
    int job_checkpoint_every_steps;    /* 0: after every epoch only */
    int job_lease_ms;                  /* an unrenewed job lease is taken over after this */
    cfg_role role;                     /* all, serve or train */
    char api_key[CFG_SECRET_SIZE];     /* "" = no auth; never printed */
    int drain_timeout_ms;              /* finish in-flight work on shutdown */
    cfg_log_format log_format;
} vit_cfg;

/* ---- the table (read-only; for tests and documentation tools) ---------- */

typedef enum cfg_type {
    CFG_INT,    /* int field, bounds [min, max] */
    CFG_INT64,  /* int64_t field, bounds [min, max] */
    CFG_BOOL,   /* bool field: true/false, 1/0, yes/no */
    CFG_STRING, /* char[size] field */
    CFG_ENUM,   /* int-sized enum field: one of choices[] (index = value) */
} cfg_type;

/* cfg_key.flags */
#define CFG_REQUIRED 1u /* string: must not be empty */
#define CFG_SECRET 2u   /* string: never printed, echoed in errors or shown */

/* One row of the table: one key. */
typedef struct cfg_key {
    const char *name;                  /* snake_case key = JSON key */
    cfg_type type;
    const char *def;                   /* default, as text (parsed like a flag) */
    int64_t min, max;                  /* CFG_INT / CFG_INT64 bounds */
    size_t offset;                     /* offsetof(vit_cfg, field) */
    size_t size;                       /* sizeof the field */
    const char *const *choices;        /* CFG_ENUM: names, NULL-terminated */
    unsigned flags;                    /* CFG_REQUIRED | CFG_SECRET */
    const char *(*check)(const char *); /* string: NULL if fine, else why not */
    const char *help;                  /* one line for --help */
} cfg_key;

/* The table: *n rows, in the order --help and cfg_to_json list them. */
const cfg_key *cfg_keys(size_t *n);

/* ---- loading ------------------------------------------------------------ */

/* Fills c with every key's default. */
void cfg_defaults(vit_cfg *c);

/* The model every command uses when none is named: the bundled default
 * model's absolute path, fixed at build time (meson option default_model). */
const char *cfg_default_model(void);

/* Builds c from defaults < JSON file < VITFIT_* environment < flags; later
 * wins.  The file comes from --config F (or $VITFIT_CONFIG; --config wins).
 * argv are the arguments after "serve" (argv[0] is the first flag; argc may
 * be 0).  envp is the environment, "NAME=VALUE" strings ending with NULL
 * (pass `environ`; tests pass their own; NULL = none).
 * Returns CFG_OK with c filled; CFG_HELP when --help or -h was given (even
 * beside a bad flag): the caller prints cfg_print_help and exits 0; or
 * CFG_ERROR with one sentence in err (no newline) naming the key and the
 * source, e.g. "--max-batch: 0 is below the minimum 1".  On anything but
 * CFG_OK, c holds the defaults.  err may be NULL when errlen is 0. */
int cfg_load(vit_cfg *c, int argc, char *const *argv, char *const *envp, char *err,
             size_t errlen);

/* Writes the usage text: the layers and the name rule, then every key with
 * its flag, environment variable, type, default, range and help line, and
 * the VITFIT_* variables that are not config keys. */
void cfg_print_help(FILE *out);

/* Every key of c as a JSON object (the key names of the file), for logging
 * and GET endpoints: integers, booleans, strings, the enum by name; api_key
 * is "***" when set and "" otherwise.  Bytes of a string that are not UTF-8
 * show as '?'.  Caller owns the result; NULL when out of memory. */
json_t *cfg_to_json(const vit_cfg *c);

#endif
