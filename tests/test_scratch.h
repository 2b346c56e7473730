/*
 * test_scratch.h - a test's scratch directory under /tmp and files relative to
 * it.
 *
 * test_scratch_create makes tmp_root; tpath, mkdir_rel, write_rel and
 * write_text take paths relative to it and count a CHECK for what they make,
 * so a tree that could not be built fails the test instead of skewing it.
 * Removing the tree is test_rm_tree(tmp_root) (test_util.h).
 */
#ifndef VIT_TESTS_SCRATCH_H
#define VIT_TESTS_SCRATCH_H

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"

static char tmp_root[256]; /* the scratch directory */

/* Makes a fresh /tmp/vitfit_test_<name>_XXXXXX as tmp_root; false, with the
 * reason on stderr, when it cannot. */
static inline bool test_scratch_create(const char *name)
{
    snprintf(tmp_root, sizeof tmp_root, "/tmp/vitfit_test_%s_XXXXXX", name);
    if (!mkdtemp(tmp_root)) {
        perror("mkdtemp");
        return false;
    }
    return true;
}

/* <tmp>/<rel> into buf. */
static inline void tpath(char *buf, size_t n, const char *rel)
{
    snprintf(buf, n, "%s/%s", tmp_root, rel);
}

/* Makes directory <tmp>/<rel>; one that exists already is fine. */
static inline void mkdir_rel(const char *rel)
{
    char p[1024];
    tpath(p, sizeof p, rel);
    CHECKF(mkdir(p, 0755) == 0 || errno == EEXIST, "mkdir %s: %s", p, strerror(errno));
}

/* Writes data[0..len) to <tmp>/<rel>, replacing what was there. */
static inline void write_rel(const char *rel, const void *data, size_t len)
{
    char p[1024];
    tpath(p, sizeof p, rel);
    FILE *f = fopen(p, "wb");
    CHECKF(f != NULL, "cannot write %s: %s", p, strerror(errno));
    if (!f)
        return;
    CHECK(fwrite(data, 1, len, f) == len);
    fclose(f);
}

/* write_rel of a string, without its NUL. */
static inline void write_text(const char *rel, const char *text)
{
    write_rel(rel, text, strlen(text));
}

#endif
