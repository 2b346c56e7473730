/*
 * cli.h - the `vitfit` subcommands and their shared helpers.
 *
 * Each cli_<command> takes the arguments after the command name and returns
 * the process exit code: 0 success, 2 bad usage, 1 any other error, after
 * printing one clear line on stderr.
 */
#ifndef VIT_SERVER_CLI_H
#define VIT_SERVER_CLI_H

#include <stddef.h>

#include <jansson.h>

#include "status.h"

enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

int cli_classify(int argc, char **argv);
int cli_inspect(int argc, char **argv);
int cli_bench(int argc, char **argv);
int cli_train(int argc, char **argv);
int cli_eval(int argc, char **argv);

/* Prints "vitfit: <message>" and returns CLI_FAIL. */
int cli_fail(const vit_error *err);
/* Prints "vitfit <command>: <message>" plus a usage hint; returns CLI_USAGE. */
int cli_usage_error(const char *command, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prints j as one compact JSON line on stdout (reals to 6 significant digits,
 * or 9 with precise) and drops the reference. */
void cli_print_json(json_t *j, int precise);

/* Parses a decimal integer in [lo, hi]; returns 0 if s is not one. */
int cli_parse_int(const char *s, long lo, long hi, long *out);

/* Median of n doubles (sorts in place). */
double cli_median(double *v, size_t n);
/* Monotonic seconds. */
double cli_now(void);
/* Peak resident set size of this process in bytes. */
size_t cli_peak_rss(void);

/* Default compute threads: the online cores, within [1, 64]. */
long cli_default_threads(void);

#endif
