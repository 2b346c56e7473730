/*
 * run_cli.h - runs the real `vitfit` binary (VITFIT_BIN) from a test, with
 * stdout and stderr captured through temporary files.
 */
#ifndef VIT_TESTS_RUN_CLI_H
#define VIT_TESTS_RUN_CLI_H

#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "test_util.h"

extern char **environ;

typedef struct run_result {
    int status;        /* exit code, or -1 if it did not exit normally */
    char out[1 << 16]; /* stdout (truncated) */
    char err[1 << 14]; /* stderr (truncated) */
} run_result;

static inline void slurp(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "rb");
    size_t n = f ? fread(buf, 1, len - 1, f) : 0;
    buf[n] = '\0';
    if (f)
        fclose(f);
}

/* Runs vitfit with a NULL-terminated argument list; paths starting with '@'
 * are made absolute under the source root. */
static inline run_result *run_vitfit(const char *first, ...)
{
    static run_result r;
    char *argv[64];
    char storage[64][1024];
    int argc = 0;
    const char *bin = getenv("VITFIT_BIN");
    argv[argc++] = (char *)(bin ? bin : "vitfit");
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && argc < 63; a = va_arg(ap, const char *)) {
        if (a[0] == '@')
            test_path(storage[argc], sizeof storage[argc], a + 1);
        else
            snprintf(storage[argc], sizeof storage[argc], "%s", a);
        argv[argc] = storage[argc];
        argc++;
    }
    va_end(ap);
    argv[argc] = NULL;

    char out_path[] = "/tmp/vitfit_cli_out_XXXXXX", err_path[] = "/tmp/vitfit_cli_err_XXXXXX";
    int out_fd = mkstemp(out_path), err_fd = mkstemp(err_path);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
    pid_t pid;
    r.status = -1;
    if (posix_spawn(&pid, argv[0], &fa, NULL, argv, environ) == 0) {
        int ws;
        if (waitpid(pid, &ws, 0) == pid && WIFEXITED(ws))
            r.status = WEXITSTATUS(ws);
    }
    posix_spawn_file_actions_destroy(&fa);
    close(out_fd);
    close(err_fd);
    slurp(out_path, r.out, sizeof r.out);
    slurp(err_path, r.err, sizeof r.err);
    unlink(out_path);
    unlink(err_path);
    /* a sanitizer report fails the test whatever exit code it expects */
    CHECKF(r.status != CHECK_EXIT_ASAN && r.status != CHECK_EXIT_TSAN,
           "%s %s: exit %d, a sanitizer report:\n%s", argv[0], argc > 1 ? argv[1] : "", r.status,
           r.err);
    return &r;
}

static inline int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

#endif
