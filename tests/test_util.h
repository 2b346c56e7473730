/*
 * test_util.h - helpers shared by the tests: fixture paths, tensor reads,
 * directory listings and removing a scratch tree.
 */
#ifndef VIT_TESTS_UTIL_H
#define VIT_TESTS_UTIL_H

#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

/* Absolute path of a file under the source tree (VITFIT_SOURCE_ROOT). */
static inline const char *test_path(char *buf, size_t len, const char *rel)
{
    const char *root = getenv("VITFIT_SOURCE_ROOT");
    snprintf(buf, len, "%s/%s", root ? root : ".", rel);
    return buf;
}

/* Reads tensor `name` of an open file as floats (caller frees); NULL and a
 * message on failure.  *numel receives the element count. */
static inline float *test_read_tensor(const st_file *f, const char *name, size_t *numel)
{
    const st_tensor *t = st_find(f, name);
    if (!t) {
        fprintf(stderr, "fixture has no tensor '%s'\n", name);
        return NULL;
    }
    float *data = malloc((t->numel ? t->numel : 1) * sizeof *data);
    vit_error err;
    if (!data || st_read_f32(f, t, data, &err) != VIT_OK) {
        fprintf(stderr, "reading '%s' failed\n", name);
        free(data);
        return NULL;
    }
    if (numel)
        *numel = t->numel;
    return data;
}

/* Entries of a directory besides "." and ".."; -1 when it cannot be read. */
static inline int test_dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

/* nftw and its flags are X/Open, beyond this build's -D_DEFAULT_SOURCE: only a
 * test that defines _XOPEN_SOURCE >= 500 or _GNU_SOURCE gets test_rm_tree, so
 * including this header asks nothing of the others. */
#if defined(_GNU_SOURCE) || (defined(_XOPEN_SOURCE) && _XOPEN_SOURCE >= 500)
static inline int test_rm_entry(const char *path, const struct stat *st, int flag,
                                struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Removes the tree at path, best effort.  Children go before their directory
 * (FTW_DEPTH), and symlinks are removed, never followed (FTW_PHYS): a test's
 * links may point out of its scratch directory. */
static inline void test_rm_tree(const char *path)
{
    nftw(path, test_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}
#endif

#endif
