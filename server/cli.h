/*
 * cli.h - the `vitfit` subcommands and their shared helpers.
 *
 * Each cli_<command> takes the arguments after the command name and returns
 * the process exit code: 0 success, 2 bad usage, 1 any other error, after
 * printing one clear line on stderr.
 */
#ifndef VIT_SERVER_CLI_H
#define VIT_SERVER_CLI_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "config.h"
#include "hub.h"
#include "status.h"

enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

int cli_serve(int argc, char **argv);
int cli_classify(int argc, char **argv);
int cli_inspect(int argc, char **argv);
int cli_bench(int argc, char **argv);
int cli_train(int argc, char **argv);
int cli_eval(int argc, char **argv);
int cli_init(int argc, char **argv);
int cli_health(int argc, char **argv);

/* Prints "vitfit: <message>" and returns CLI_FAIL. */
int cli_fail(const vit_error *err);
/* Prints "vitfit <command>: <message>" plus a usage hint; returns CLI_USAGE. */
int cli_usage_error(const char *command, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prints j as one compact JSON line on stdout (reals to 6 significant digits,
 * or 9 with precise) and drops the reference.  j may be NULL -- a builder
 * that failed: then nothing is printed (never "{}"), one line goes to
 * stderr and the result is CLI_FAIL, as when stdout cannot be written;
 * CLI_OK otherwise.  Callers return it: a report that cannot be produced
 * is a failure of the command. */
int cli_print_json(json_t *j, int precise);

/* Text for a report: a malloc'd copy of s in which every byte that is not
 * part of valid UTF-8 (a Latin-1 file name, say) is replaced by U+FFFD, so
 * that it can be a JSON string (json_string refuses anything else and the
 * key would vanish).  NULL when out of memory. */
char *cli_text(const char *s);

/* json_string(cli_text(s)): a JSON string for any path or name; NULL only
 * when out of memory (or s is NULL). */
json_t *cli_json_text(const char *s);

/* The checkpoint (directory or file) that a --model value names: model
 * itself, or for "hf:ORG/NAME[@REVISION]" its snapshot in the download cache
 * (hub.h), fetched first when it is not there, with the hub settings of the
 * config (file and VITFIT_* variables: hub_url, cache, hub_offline,
 * hub_max_bytes) plus HF_TOKEN and HF_HUB_OFFLINE.  CLI_OK with path[len]
 * filled, else the exit code after one line on stderr: CLI_USAGE for a
 * malformed name or setting, CLI_FAIL for the rest. */
int cli_model_path(const char *model, char *path, size_t len);

/* hub_options from config c and the environment: HF_TOKEN, HF_HUB_OFFLINE
 * (1/true/yes/on, any case) beside c->hub_offline, a progress bar when
 * stderr is a terminal; no log or stop callbacks. */
void cli_hub_options(const vit_cfg *c, hub_options *o);

/* Parses a decimal integer in [lo, hi]; returns 0 if s is not one. */
int cli_parse_int(const char *s, long lo, long hi, long *out);

/* Median of n doubles (sorts in place). */
double cli_median(double *v, size_t n);
/* Monotonic seconds. */
double cli_now(void);
/* Peak resident set size of this process in bytes. */
size_t cli_peak_rss(void);

/* Resident set size now (/proc/self/statm), bytes; 0 if unknown. */
size_t cli_current_rss(void);

/* Default compute threads: the CPUs this process may use (cpu_usable_count:
 * affinity mask and cgroup quota), within [1, 64]. */
long cli_default_threads(void);

/* ---- starting a group of worker threads ----
 * Threads start one at a time, so until the last pthread_create returns
 * nobody knows how many partners there will be: a barrier sized for all of
 * them waits forever for one that failed to start.  Instead each started
 * thread first waits at a gate; the starter opens it once every thread is
 * running, or cancels it after a failed start and joins the ones it has. */
typedef struct cli_gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int state; /* 0 closed, 1 open, -1 cancelled */
} cli_gate;

/* First thing a started thread does: true when all started (go on), false
 * when the start was cancelled (return at once, touching nothing shared). */
bool cli_gate_pass(cli_gate *g);

/* Starts n threads running fn(args + i * arg_size) behind gate g (which it
 * initialises; destroy it with cli_gate_destroy after joining).  All started:
 * opens the gate and returns VIT_OK; the caller joins threads[0..n).  One
 * failed: cancels the gate, joins those already started, and returns an
 * error naming it. */
vit_status cli_start_threads(pthread_t *threads, int n, void *(*fn)(void *), void *args,
                             size_t arg_size, cli_gate *g, vit_error *err);
void cli_gate_destroy(cli_gate *g);

#endif
