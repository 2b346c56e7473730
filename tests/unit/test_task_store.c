/*
 * test_task_store.c - the runtime task registry (engine/task_store.h).
 *
 * On a tiny backbone (vit-tiny, one block) and a second one of the same
 * shapes but other weights (another fingerprint), with tasks whose labels
 * and head values encode (name, version) so any task handed out can be
 * checked against itself:
 *  1. open: creates the directory; refuses a missing parent, a file, a bad
 *     fingerprint, a zero bound.
 *  2. put / get / list / metadata / delete happy paths, created, file bytes,
 *     resident flags, the metadata a task file carries.
 *  3. errors: unknown name, bad names (../x, A, "", 65 chars, NULL) in every
 *     call, leaving no file; another backbone's task by put and by a file
 *     dropped in the directory; corrupt, truncated and empty bytes in put
 *     leave nothing behind and keep the old version live (also as a fresh
 *     store reads it from disk).
 *  4. versions: put replaces while the old version is held (the old
 *     reference keeps its labels and values, the next get sees the new);
 *     delete while held; close while held.
 *  5. eviction: a bound of 3.5 tasks over 10 loads never goes over, counts
 *     7 evictions, evicts the least recently used (a touched task survives);
 *     tasks in flight are never evicted (over the bound, then back under it
 *     at the next load, or at a get that finds the store over its bound); a
 *     task alone larger than the bound is TOO_LARGE by get and by put.
 *  6. 1000 tasks with a bound of 10: in order and at random the bound holds,
 *     loads - evictions = resident, list shows 1000 sorted names, 10 resident.
 *  7. links and odd files: a symlinked task (to a file outside and to one
 *     inside) is refused by get and metadata and left out of list, delete
 *     removes the link and not its target, put replaces the link; a FIFO
 *     (never blocks), a directory, tmp files and bad names are ignored by
 *     list and refused by get.
 *  8. a load held midway (this test is linked with --wrap=task_load_memory):
 *     meanwhile gets of a resident task and loads of other tasks go on (the
 *     store's lock is not held across a load; a hang here is the failure,
 *     ended by alarm()); a put or delete during the load wins: the load's
 *     caller gets what it read, but the next get sees the new version or
 *     NOT_FOUND.
 *  9. threads (test.sh runs this test under TSan): many gets of one unloaded
 *     task load it once; threads getting, putting and deleting random names
 *     of a small set check every task they get against itself.
 * 10. sync, two stores on one directory as two replicas: a put by one is
 *     read by the other at its first get, but a resident copy stays until
 *     task_store_sync (a reference taken before keeps the old version);
 *     each change is reported once (added, replaced, removed; nothing when
 *     nothing changed) and checked: another backbone's file and a truncated
 *     one are reported with their error, tmp files and bad names not at all;
 *     a file rewritten in place is a replacement; a copy loaded from the
 *     file now there (the store's own put, then a get) is kept; a sync of
 *     one name touches only that name.
 */
#include "task_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "safetensors.h"
#include "test_util.h"

#define STORE_TEST_FILE_MAX (TASK_NAME_MAX + 16) /* "<name>.safetensors" + NUL */

static char tmpdir[] = "/tmp/vitfit-test-task-store-XXXXXX";
static char scratch[4200];  /* task files made outside any store */
static const vit_model *model, *other; /* the backbone and another of the same shapes */
static char fp[65];

/* ---- helpers ------------------------------------------------------------ */

/* A fresh directory path under tmpdir (not created). */
static const char *store_dir(char *buf, size_t n, const char *leaf)
{
    snprintf(buf, n, "%s/%s", tmpdir, leaf);
    return buf;
}

/* Label i of task name, version v. */
static void label_of(char *buf, size_t n, const char *name, int v, int i)
{
    snprintf(buf, n, "%s/v%d/%d", name, v, i);
}

/* Head value j of version v: exact in float for the sizes used here. */
static float head_value(int v, size_t j)
{
    return (float)v + 0.5f * (float)(j % 4096);
}

/* A task of k classes for m whose labels and head encode (name, v). */
static vit_task *make_task(const vit_model *m, const char *name, int k, int v)
{
    char **labels = calloc((size_t)k, sizeof *labels);
    VIT_ASSERT(labels);
    for (int i = 0; i < k; i++) {
        labels[i] = malloc(TASK_NAME_MAX + 32);
        VIT_ASSERT(labels[i]);
        label_of(labels[i], TASK_NAME_MAX + 32, name, v, i);
    }
    vit_task *t;
    vit_error err;
    VIT_ASSERT(task_create(m, k, (const char *const *)labels, &t, &err) == VIT_OK);
    for (int i = 0; i < k; i++)
        free(labels[i]);
    free(labels);
    size_t bias = task_bias_len(m);
    for (size_t j = 0; j < bias; j++)
        t->trainable[j] += 0.125f * (float)(v % 5);
    for (size_t j = bias; j < t->trainable_len; j++)
        t->trainable[j] = head_value(v, j - bias);
    return t;
}

/* Saves a (name, v) task of k classes for m at path (durably, via task_save). */
static void save_task(const vit_model *m, const char *name, int k, int v, const char *path)
{
    vit_task *t = make_task(m, name, k, v);
    static const char *const keys[] = {"note", NULL}, *const values[] = {"made by the test", NULL};
    task_meta meta = {keys, values};
    vit_error err;
    VIT_ASSERT(task_save(m, t, &meta, path, &err) == VIT_OK);
    task_free(t);
}

/* Reads a whole file (caller frees); *len its size. */
static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    VIT_ASSERT(f);
    VIT_ASSERT(fseek(f, 0, SEEK_END) == 0);
    long n = ftell(f);
    VIT_ASSERT(n >= 0 && fseek(f, 0, SEEK_SET) == 0);
    uint8_t *buf = malloc((size_t)n + 1);
    VIT_ASSERT(buf && fread(buf, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* The bytes of a (name, v) task file of k classes for m (caller frees). */
static uint8_t *task_file_bytes(const vit_model *m, const char *name, int k, int v, size_t *len)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/bytes.safetensors", scratch);
    save_task(m, name, k, v, path);
    uint8_t *b = read_file(path, len);
    unlink(path);
    return b;
}

/* Writes bytes to path without fsync (fast: for many files). */
static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    VIT_ASSERT(f && fwrite(data, 1, len, f) == len && fclose(f) == 0);
}

/* Does t hold (name, v) for some v, consistently: its name, every label and
 * every head value?  Returns v, or -1 (and says why) when not. */
static int task_version(const vit_task *t, const char *name)
{
    int v = -1;
    char want[TASK_NAME_MAX + 32];
    if (strcmp(t->name, name) != 0 || t->num_classes < 1 ||
        sscanf(t->labels[0], "%*[^/]/v%d/0", &v) != 1) {
        fprintf(stderr, "task '%s' (asked for '%s'): label 0 '%s' is not ours\n", t->name, name,
                t->num_classes > 0 ? t->labels[0] : "");
        return -1;
    }
    for (int i = 0; i < t->num_classes; i++) {
        label_of(want, sizeof want, name, v, i);
        if (strcmp(t->labels[i], want) != 0) {
            fprintf(stderr, "task '%s': label %d is '%s', want '%s'\n", name, i, t->labels[i],
                    want);
            return -1;
        }
    }
    size_t bias = task_bias_len(model);
    for (size_t j = bias; j < t->trainable_len; j++) {
        if (t->trainable[j] != head_value(v, j - bias)) {
            fprintf(stderr, "task '%s' v%d: head value %zu is %g, want %g\n", name, v, j - bias,
                    (double)t->trainable[j], (double)head_value(v, j - bias));
            return -1;
        }
    }
    return v;
}

/* get name and return its version (-1 on any failure, with the message). */
static int get_version(task_store *s, const char *name)
{
    vit_task *t;
    vit_error err;
    vit_status st = task_store_get(s, name, &t, &err);
    if (st != VIT_OK) {
        fprintf(stderr, "get '%s': %s: %s\n", name, vit_status_name(st), err.message);
        return -1;
    }
    int v = task_version(t, name);
    task_free(t);
    return v;
}

/* Checks a failed call's status and that its message holds needle. */
static void check_fail(const char *what, vit_status got, const vit_error *err, vit_status want,
                       const char *needle)
{
    fprintf(stderr, "  %-40s -> %s: %s\n", what, vit_status_name(got),
            got == VIT_OK ? "(ok)" : err->message);
    CHECKF(got == want, "%s: got %s, want %s", what, vit_status_name(got),
           vit_status_name(want));
    if (got != VIT_OK && needle)
        CHECKF(strstr(err->message, needle) != NULL, "%s: message lacks \"%s\"", what, needle);
}

/* Removes a flat directory and what it holds. */
static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[4400];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) != 0)
            rmdir(path);
    }
    closedir(d);
    VIT_ASSERT(rmdir(dir) == 0);
}

static task_store *open_store(const char *dir, size_t bound)
{
    task_store *s;
    vit_error err;
    if (task_store_open(model, fp, dir, bound, &s, &err) != VIT_OK) {
        fprintf(stderr, "task_store_open %s: %s\n", dir, err.message);
        abort();
    }
    return s;
}

static task_store_stats stats(task_store *s)
{
    task_store_stats st;
    task_store_stats_get(s, &st);
    return st;
}

/* Is name resident, according to task_store_list? */
static int listed_resident(task_store *s, const char *name)
{
    task_store_entry *list;
    size_t n;
    vit_error err;
    VIT_ASSERT(task_store_list(s, &list, &n, &err) == VIT_OK);
    int r = -1;
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i].name, name) == 0)
            r = list[i].resident;
    free(list);
    return r;
}

/* Bytes a (name, v) task of k classes costs in the store. */
static size_t bytes_of(const char *name, int k)
{
    vit_task *t = make_task(model, name, k, 0);
    size_t b = task_store_task_bytes(t);
    task_free(t);
    return b;
}

/* ---- 1. open ------------------------------------------------------------ */

static void test_open(void)
{
    fprintf(stderr, "open\n");
    char dir[4200], path[4400];
    task_store *s;
    vit_error err;
    store_dir(dir, sizeof dir, "fresh");
    CHECK(task_store_open(model, fp, dir, 1 << 20, &s, &err) == VIT_OK);
    struct stat sb;
    CHECKF(stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode) && (sb.st_mode & 0777) == (0755 & ~0022u),
           "%s not made as a 0755 directory (mode %o)", dir, (unsigned)sb.st_mode);
    task_store_close(s);
    CHECK(task_store_open(model, fp, dir, 1 << 20, &s, &err) == VIT_OK); /* exists: fine */
    task_store_close(s);
    remove_dir(dir);

    snprintf(path, sizeof path, "%s/no/such/dir", tmpdir);
    check_fail("open: missing parent", task_store_open(model, fp, path, 1, &s, &err), &err,
               VIT_ERR_NOT_FOUND, "no/such/dir");
    snprintf(path, sizeof path, "%s/a-file", tmpdir);
    write_file(path, "x", 1);
    check_fail("open: a file", task_store_open(model, fp, path, 1, &s, &err), &err,
               VIT_ERR_INVALID, "a-file");
    unlink(path);
    check_fail("open: short fingerprint", task_store_open(model, "abc", tmpdir, 1, &s, &err),
               &err, VIT_ERR_INVALID, "fingerprint");
    check_fail("open: zero bound", task_store_open(model, fp, tmpdir, 0, &s, &err), &err,
               VIT_ERR_INVALID, "bound");
}

/* ---- 2. happy paths ----------------------------------------------------- */

static void test_basics(void)
{
    fprintf(stderr, "basics\n");
    char dir[4200];
    task_store *s = open_store(store_dir(dir, sizeof dir, "basics"), 1 << 24);
    vit_error err;
    task_store_entry *list;
    size_t n = 99;
    CHECK(task_store_list(s, &list, &n, &err) == VIT_OK && n == 0);
    free(list);

    size_t len;
    uint8_t *v1 = task_file_bytes(model, "cats", 3, 1, &len);
    bool created = false;
    CHECK(task_store_put(s, "cats", v1, len, &created, &err) == VIT_OK && created);
    CHECKF(stats(s).loads == 0 && stats(s).resident_count == 0,
           "put made the task resident (loads %llu)", (unsigned long long)stats(s).loads);
    CHECKF(listed_resident(s, "cats") == 0, "cats listed as %d", listed_resident(s, "cats"));
    CHECK(get_version(s, "cats") == 1);
    CHECK(get_version(s, "cats") == 1);
    task_store_stats st = stats(s);
    CHECKF(st.loads == 1 && st.resident_count == 1 && st.resident_bytes == bytes_of("cats", 3),
           "loads %llu resident %zu bytes %zu (want 1, 1, %zu)", (unsigned long long)st.loads,
           st.resident_count, st.resident_bytes, bytes_of("cats", 3));

    /* a second task dropped in the directory; list is sorted, sizes right */
    char path[4400];
    snprintf(path, sizeof path, "%s/a-dog.v2_x.safetensors", dir);
    save_task(model, "a-dog.v2_x", 5, 7, path);
    struct stat sb;
    VIT_ASSERT(stat(path, &sb) == 0);
    CHECK(task_store_list(s, &list, &n, &err) == VIT_OK);
    CHECKF(n == 2 && !strcmp(list[0].name, "a-dog.v2_x") && !strcmp(list[1].name, "cats"),
           "list: %zu entries, first '%s'", n, n ? list[0].name : "");
    if (n == 2) {
        CHECKF(list[0].file_bytes == (uint64_t)sb.st_size && !list[0].resident &&
                   list[0].resident_bytes == 0,
               "a-dog: %llu bytes resident %d", (unsigned long long)list[0].file_bytes,
               list[0].resident);
        CHECKF(list[1].file_bytes == len && list[1].resident &&
                   list[1].resident_bytes == bytes_of("cats", 3),
               "cats: %llu bytes (want %zu) resident %d %zu", (unsigned long long)list[1].file_bytes,
               len, list[1].resident, list[1].resident_bytes);
    }
    free(list);
    CHECK(get_version(s, "a-dog.v2_x") == 7);

    /* metadata: what the file carries, in one allocation */
    char **kv;
    uint64_t fb = 0;
    CHECK(task_store_metadata(s, "cats", &kv, &fb, &err) == VIT_OK);
    CHECKF(fb == len, "metadata file bytes %llu want %zu", (unsigned long long)fb, len);
    int seen = 0;
    for (size_t i = 0; kv && kv[i]; i += 2) {
        VIT_ASSERT(kv[i + 1]);
        if (!strcmp(kv[i], "labels"))
            seen |= 1 * !strcmp(kv[i + 1], "[\"cats/v1/0\",\"cats/v1/1\",\"cats/v1/2\"]");
        if (!strcmp(kv[i], "base_model"))
            seen |= 2 * !strcmp(kv[i + 1], fp);
        if (!strcmp(kv[i], "note"))
            seen |= 4 * !strcmp(kv[i + 1], "made by the test");
        if (!strcmp(kv[i], "method"))
            seen |= 8 * !strcmp(kv[i + 1], "bitfit");
        if (!strcmp(kv[i], "num_classes"))
            seen |= 16 * !strcmp(kv[i + 1], "3");
    }
    CHECKF(seen == 31, "metadata: found %#x of 0x1f", seen);
    free(kv);

    /* put again: not created; replaces */
    uint8_t *v2 = task_file_bytes(model, "cats", 4, 2, &len);
    CHECK(task_store_put(s, "cats", v2, len, &created, &err) == VIT_OK && !created);
    CHECK(get_version(s, "cats") == 2);

    /* delete: gone from disk, memory and list */
    CHECK(task_store_delete(s, "cats", &err) == VIT_OK);
    st = stats(s);
    CHECKF(st.resident_count == 1 && st.resident_bytes == bytes_of("a-dog.v2_x", 5),
           "after delete: resident %zu bytes %zu", st.resident_count, st.resident_bytes);
    vit_task *t;
    check_fail("get after delete", task_store_get(s, "cats", &t, &err), &err, VIT_ERR_NOT_FOUND,
               "cats");
    check_fail("delete again", task_store_delete(s, "cats", &err), &err, VIT_ERR_NOT_FOUND,
               "cats");
    CHECK(task_store_list(s, &list, &n, &err) == VIT_OK && n == 1);
    free(list);
    CHECKF(test_dir_entries(dir) == 1, "%d files left in %s", test_dir_entries(dir), dir);
    free(v1);
    free(v2);
    task_store_close(s);
    remove_dir(dir);
}

/* ---- 3. errors ---------------------------------------------------------- */

static void test_errors(void)
{
    fprintf(stderr, "errors\n");
    char dir[4200], path[4400];
    task_store *s = open_store(store_dir(dir, sizeof dir, "errors"), 1 << 24);
    vit_error err;
    vit_task *t = NULL;
    size_t len;
    uint8_t *good = task_file_bytes(model, "x", 2, 3, &len);
    bool created;
    CHECK(task_store_put(s, "x", good, len, &created, &err) == VIT_OK);

    check_fail("get unknown", task_store_get(s, "nope", &t, &err), &err, VIT_ERR_NOT_FOUND,
               "nope");
    CHECK(t == NULL);
    char **kv = NULL;
    check_fail("metadata unknown", task_store_metadata(s, "nope", &kv, NULL, &err), &err,
               VIT_ERR_NOT_FOUND, "nope");
    CHECK(kv == NULL);

    char long_name[TASK_NAME_MAX + 2];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    const char *bad[] = {"../x", "A", "", long_name, "x/y", ".hidden", NULL};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char what[120];
        snprintf(what, sizeof what, "bad name '%.20s'", bad[i] ? bad[i] : "(null)");
        check_fail(what, task_store_get(s, bad[i], &t, &err), &err, VIT_ERR_INVALID,
                   "not a task name");
        check_fail(what, task_store_put(s, bad[i], good, len, &created, &err), &err,
                   VIT_ERR_INVALID, "not a task name");
        check_fail(what, task_store_delete(s, bad[i], &err), &err, VIT_ERR_INVALID,
                   "not a task name");
        check_fail(what, task_store_metadata(s, bad[i], &kv, NULL, &err), &err, VIT_ERR_INVALID,
                   "not a task name");
    }
    CHECKF(test_dir_entries(dir) == 1, "%d files in %s after bad names", test_dir_entries(dir), dir);
    CHECKF(access(store_dir(path, sizeof path, "x.safetensors"), F_OK) != 0,
           "'../x' reached %s", path);

    /* another backbone's task: by put (nothing left, x still v3) ... */
    size_t olen;
    uint8_t *foreign = task_file_bytes(other, "x", 2, 9, &olen);
    check_fail("put: other backbone", task_store_put(s, "x", foreign, olen, &created, &err),
               &err, VIT_ERR_MISMATCH, "backbone");
    check_fail("put new: other backbone", task_store_put(s, "y", foreign, olen, &created, &err),
               &err, VIT_ERR_MISMATCH, "backbone");
    CHECKF(test_dir_entries(dir) == 1, "%d files in %s after a refused put", test_dir_entries(dir), dir);
    CHECK(get_version(s, "x") == 3);
    /* ... and dropped in the directory */
    snprintf(path, sizeof path, "%s/foreign.safetensors", dir);
    write_file(path, foreign, olen);
    uint64_t failures = stats(s).load_failures;
    check_fail("get: other backbone", task_store_get(s, "foreign", &t, &err), &err,
               VIT_ERR_MISMATCH, "backbone");
    CHECKF(stats(s).load_failures == failures + 1, "load_failures %llu want %llu",
           (unsigned long long)stats(s).load_failures, (unsigned long long)failures + 1);
    check_fail("get: other backbone again", task_store_get(s, "foreign", &t, &err), &err,
               VIT_ERR_MISMATCH, "backbone");
    unlink(path);

    /* corrupt bytes: nothing left behind, x still v3, also for a fresh store */
    uint8_t *junk = malloc(len);
    VIT_ASSERT(junk);
    memcpy(junk, good, len);
    memset(junk + 8, '{', 16); /* the header's JSON broken */
    check_fail("put: corrupt header", task_store_put(s, "x", junk, len, &created, &err), &err,
               VIT_ERR_FORMAT, "x.safetensors");
    check_fail("put: truncated", task_store_put(s, "x", good, len - 5, &created, &err), &err,
               VIT_ERR_FORMAT, NULL);
    check_fail("put: empty", task_store_put(s, "x", "", 0, &created, &err), &err,
               VIT_ERR_FORMAT, NULL);
    memcpy(junk, good, len);
    memcpy(junk + len - 4, "\x00\x00\xc0\x7f", 4); /* a NaN in the last tensor */
    check_fail("put: NaN value", task_store_put(s, "x", junk, len, &created, &err), &err,
               VIT_ERR_FORMAT, "non-finite");
    CHECKF(test_dir_entries(dir) == 1, "%d files in %s after corrupt puts", test_dir_entries(dir), dir);
    CHECK(get_version(s, "x") == 3);
    task_store *fresh = open_store(dir, 1 << 24);
    CHECK(get_version(fresh, "x") == 3);
    task_store_close(fresh);
    free(junk);
    free(foreign);
    free(good);
    task_store_close(s);
    remove_dir(dir);
}

/* ---- 4. versions while held --------------------------------------------- */

static void test_versions(void)
{
    fprintf(stderr, "versions\n");
    char dir[4200];
    task_store *s = open_store(store_dir(dir, sizeof dir, "versions"), 1 << 24);
    vit_error err;
    size_t l1, l2;
    uint8_t *v1 = task_file_bytes(model, "t", 3, 1, &l1), *v2 = task_file_bytes(model, "t", 6, 2, &l2);
    bool created;
    CHECK(task_store_put(s, "t", v1, l1, &created, &err) == VIT_OK);
    vit_task *old, *cur;
    CHECK(task_store_get(s, "t", &old, &err) == VIT_OK);
    CHECK(task_store_put(s, "t", v2, l2, &created, &err) == VIT_OK && !created);
    CHECKF(task_version(old, "t") == 1 && old->num_classes == 3, "held old reference changed");
    CHECK(task_store_get(s, "t", &cur, &err) == VIT_OK);
    CHECKF(task_version(cur, "t") == 2 && cur->num_classes == 6, "get after put: not v2");
    CHECKF(stats(s).resident_bytes == bytes_of("t", 6) && stats(s).resident_count == 1,
           "resident %zu bytes: the replaced version is still counted", stats(s).resident_bytes);
    task_free(old);

    /* delete while held: the holder finishes on it */
    CHECK(task_store_delete(s, "t", &err) == VIT_OK);
    CHECKF(stats(s).resident_count == 0 && stats(s).resident_bytes == 0,
           "deleted task still resident (%zu)", stats(s).resident_count);
    vit_task *t;
    check_fail("get after delete (held)", task_store_get(s, "t", &t, &err), &err,
               VIT_ERR_NOT_FOUND, NULL);
    CHECKF(task_version(cur, "t") == 2, "held reference changed by delete");
    task_free(cur);

    /* close while held */
    CHECK(task_store_put(s, "t", v1, l1, &created, &err) == VIT_OK && created);
    CHECK(task_store_get(s, "t", &cur, &err) == VIT_OK);
    task_store_close(s);
    CHECKF(task_version(cur, "t") == 1, "reference changed by close");
    task_free(cur);
    free(v1);
    free(v2);
    remove_dir(dir);
}

/* ---- 5. eviction -------------------------------------------------------- */

/* n task files t0..t(n-1) of k classes (version = index) written into dir. */
static void fill_dir(const char *dir, int n, int k)
{
    char path[4400], name[32];
    size_t len;
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "t%d", i);
        uint8_t *b = task_file_bytes(model, name, k, i, &len);
        snprintf(path, sizeof path, "%s/%s.safetensors", dir, name);
        write_file(path, b, len);
        free(b);
    }
}

static void test_eviction(void)
{
    fprintf(stderr, "eviction\n");
    char dir[4200], name[32];
    store_dir(dir, sizeof dir, "evict");
    VIT_ASSERT(mkdir(dir, 0755) == 0);
    fill_dir(dir, 10, 4);
    size_t one = bytes_of("t0", 4), bound = 3 * one + one / 2; /* names t0..t9: same size */
    task_store *s = open_store(dir, bound);
    vit_error err;

    /* ten loads in turn: never over the bound, 7 evictions */
    for (int i = 0; i < 10; i++) {
        snprintf(name, sizeof name, "t%d", i);
        CHECK(get_version(s, name) == i);
        task_store_stats st = stats(s);
        CHECKF(st.resident_bytes <= bound && st.resident_count == (size_t)(i < 3 ? i + 1 : 3) &&
                   st.resident_bytes == st.resident_count * one,
               "after t%d: %zu bytes in %zu tasks, bound %zu", i, st.resident_bytes,
               st.resident_count, bound);
    }
    task_store_stats st = stats(s);
    CHECKF(st.loads == 10 && st.evictions == 7, "loads %llu evictions %llu (want 10, 7)",
           (unsigned long long)st.loads, (unsigned long long)st.evictions);
    CHECK(listed_resident(s, "t7") == 1 && listed_resident(s, "t8") == 1 &&
          listed_resident(s, "t9") == 1 && listed_resident(s, "t6") == 0);

    /* LRU: resident t7 t8 t9; touch t7; loading t0 evicts t8, the oldest */
    CHECK(get_version(s, "t7") == 7);
    CHECK(get_version(s, "t0") == 0);
    CHECKF(listed_resident(s, "t7") == 1 && listed_resident(s, "t8") == 0 &&
               listed_resident(s, "t9") == 1 && listed_resident(s, "t0") == 1,
           "LRU: t7 %d t8 %d t9 %d t0 %d (want 1 0 1 1)", listed_resident(s, "t7"),
           listed_resident(s, "t8"), listed_resident(s, "t9"), listed_resident(s, "t0"));
    CHECK(stats(s).loads == 11 && stats(s).evictions == 8); /* the hit on t7 was no load */

    /* in flight: hold all three resident (t7 t9 t0), load t1: over the bound,
     * nothing evicted */
    vit_task *held[3];
    const char *hold[3] = {"t7", "t9", "t0"};
    for (int i = 0; i < 3; i++)
        CHECK(task_store_get(s, hold[i], &held[i], &err) == VIT_OK);
    CHECK(get_version(s, "t1") == 1);
    st = stats(s);
    CHECKF(st.resident_count == 4 && st.resident_bytes == 4 * one && st.resident_bytes > bound &&
               st.evictions == 8,
           "in flight: %zu tasks, %zu bytes, %llu evictions (want 4, %zu, 8)", st.resident_count,
           st.resident_bytes, (unsigned long long)st.evictions, 4 * one);
    for (int i = 0; i < 3; i++)
        CHECKF(task_version(held[i], hold[i]) >= 0, "held %s damaged", hold[i]);
    /* still held: loading t2 may evict only t1 (idle) */
    CHECK(get_version(s, "t2") == 2);
    st = stats(s);
    CHECKF(st.resident_count == 4 && st.evictions == 9 && listed_resident(s, "t1") == 0,
           "held: %zu tasks, %llu evictions, t1 %d (want 4, 9, 0)", st.resident_count,
           (unsigned long long)st.evictions, listed_resident(s, "t1"));
    for (int i = 0; i < 3; i++)
        task_free(held[i]);
    /* released: the next load evicts down to the bound (t7 and t9, the oldest) */
    CHECK(get_version(s, "t3") == 3);
    st = stats(s);
    CHECKF(st.resident_count == 3 && st.resident_bytes <= bound && st.evictions == 11 &&
               listed_resident(s, "t7") == 0 && listed_resident(s, "t9") == 0 &&
               listed_resident(s, "t0") == 1 && listed_resident(s, "t2") == 1,
           "released: %zu tasks, %zu bytes, %llu evictions (want 3, <= %zu, 11)",
           st.resident_count, st.resident_bytes, (unsigned long long)st.evictions, bound);

    /* over the bound again, then released: a mere get (a hit) trims */
    for (int i = 0; i < 3; i++)
        CHECK(task_store_get(s, i == 0 ? "t0" : i == 1 ? "t2" : "t3", &held[i], &err) == VIT_OK);
    CHECK(get_version(s, "t4") == 4);
    CHECK(stats(s).resident_count == 4);
    for (int i = 0; i < 3; i++)
        task_free(held[i]);
    CHECK(get_version(s, "t4") == 4);
    st = stats(s);
    CHECKF(st.resident_count == 3 && st.resident_bytes <= bound && st.loads == 15 &&
               listed_resident(s, "t0") == 0 && listed_resident(s, "t4") == 1,
           "hit over the bound: %zu tasks, %zu bytes, %llu loads, t0 %d", st.resident_count,
           st.resident_bytes, (unsigned long long)st.loads, listed_resident(s, "t0"));

    /* a task alone larger than the bound: TOO_LARGE by get (nothing evicted)
     * and by put (nothing stored) */
    char path[4400];
    size_t len;
    uint8_t *big = task_file_bytes(model, "big", 64, 1, &len);
    CHECKF(bytes_of("big", 64) > bound, "the big task (%zu bytes) fits the bound %zu",
           bytes_of("big", 64), bound);
    snprintf(path, sizeof path, "%s/big.safetensors", dir);
    write_file(path, big, len);
    uint64_t ev = stats(s).evictions, failures = stats(s).load_failures;
    vit_task *t;
    check_fail("get: larger than the bound", task_store_get(s, "big", &t, &err), &err,
               VIT_ERR_TOO_LARGE, "bound");
    st = stats(s);
    CHECKF(st.evictions == ev && st.resident_count == 3 && st.load_failures == failures + 1,
           "TOO_LARGE evicted %llu, resident %zu, failures %llu",
           (unsigned long long)(st.evictions - ev), st.resident_count,
           (unsigned long long)st.load_failures);
    unlink(path);
    bool created;
    check_fail("put: larger than the bound", task_store_put(s, "big", big, len, &created, &err),
               &err, VIT_ERR_TOO_LARGE, "bound");
    CHECKF(access(path, F_OK) != 0 && test_dir_entries(dir) == 10, "put TOO_LARGE left files (%d)",
           test_dir_entries(dir));
    free(big);
    task_store_close(s);
    remove_dir(dir);
}

/* ---- 6. a thousand tasks ------------------------------------------------ */

static void test_thousand(void)
{
    fprintf(stderr, "1000 tasks\n");
    enum { N = 1000, KEEP = 10 };
    char dir[4200], name[32];
    store_dir(dir, sizeof dir, "thousand");
    VIT_ASSERT(mkdir(dir, 0755) == 0);
    fill_dir(dir, N, 2);
    size_t one = bytes_of("t0", 2); /* t0..t999 differ in size by label lengths */
    size_t bound = KEEP * one + 16;
    task_store *s = open_store(dir, bound);

    int bad = 0;
    size_t max_resident = 0;
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "t%d", i);
        bad += get_version(s, name) != i;
        task_store_stats st = stats(s);
        if (st.resident_bytes > max_resident)
            max_resident = st.resident_bytes;
        bad += st.loads - st.evictions != st.resident_count;
    }
    task_store_stats st = stats(s);
    CHECKF(bad == 0 && max_resident <= bound && st.loads == N && st.evictions >= N - KEEP - 1 &&
               st.resident_count <= KEEP,
           "in order: %d bad, max %zu bytes (bound %zu), %llu loads %llu evictions %zu resident",
           bad, max_resident, bound, (unsigned long long)st.loads,
           (unsigned long long)st.evictions, st.resident_count);

    /* at random (a fixed LCG), with a few hits among the misses */
    uint32_t x = 12345;
    uint64_t hits = 0;
    for (int i = 0; i < 3000; i++) {
        x = x * 1664525u + 1013904223u;
        int j = (x >> 8) % (i % 3 == 0 ? 12 : N);
        snprintf(name, sizeof name, "t%d", j);
        uint64_t before = stats(s).loads;
        bad += get_version(s, name) != j;
        hits += stats(s).loads == before;
        st = stats(s);
        if (st.resident_bytes > max_resident)
            max_resident = st.resident_bytes;
        bad += st.loads - st.evictions != st.resident_count;
    }
    st = stats(s);
    CHECKF(bad == 0 && max_resident <= bound && st.loads + hits == N + 3000 && hits > 0,
           "at random: %d bad, max %zu bytes (bound %zu), %llu loads + %llu hits",
           bad, max_resident, bound, (unsigned long long)st.loads, (unsigned long long)hits);

    task_store_entry *list;
    size_t n;
    vit_error err;
    CHECK(task_store_list(s, &list, &n, &err) == VIT_OK);
    size_t resident = 0, sorted = 1, bytes = 0;
    for (size_t i = 0; i < n; i++) {
        resident += list[i].resident;
        bytes += list[i].resident_bytes;
        if (i && strcmp(list[i - 1].name, list[i].name) >= 0)
            sorted = 0;
    }
    CHECKF(n == N && sorted && resident == st.resident_count && bytes == st.resident_bytes,
           "list: %zu names (sorted %zu), %zu resident of %zu bytes (stats %zu, %zu)", n, sorted,
           resident, bytes, st.resident_count, st.resident_bytes);
    free(list);
    task_store_close(s);
    remove_dir(dir);
}

/* ---- 7. links and odd files --------------------------------------------- */

static void test_links(void)
{
    fprintf(stderr, "links and odd files\n");
    char dir[4200], path[4400], target[4400];
    store_dir(dir, sizeof dir, "links");
    VIT_ASSERT(mkdir(dir, 0755) == 0);
    task_store *s = open_store(dir, 1 << 24);
    vit_error err;
    vit_task *t;
    char **kv;

    /* a valid task outside the store, and one inside; links to each */
    snprintf(target, sizeof target, "%s/out.safetensors", scratch);
    save_task(model, "out", 2, 5, target);
    snprintf(path, sizeof path, "%s/out.safetensors", dir);
    VIT_ASSERT(symlink(target, path) == 0);
    snprintf(path, sizeof path, "%s/in.safetensors", dir);
    save_task(model, "in", 2, 6, path);
    snprintf(path, sizeof path, "%s/alias.safetensors", dir);
    VIT_ASSERT(symlink("in.safetensors", path) == 0);
    uint64_t failures = stats(s).load_failures;
    check_fail("get: link out of the store", task_store_get(s, "out", &t, &err), &err,
               VIT_ERR_INVALID, "symbolic link");
    check_fail("get: link inside the store", task_store_get(s, "alias", &t, &err), &err,
               VIT_ERR_INVALID, "symbolic link");
    check_fail("metadata: link", task_store_metadata(s, "out", &kv, NULL, &err), &err,
               VIT_ERR_INVALID, "symbolic link");
    CHECKF(stats(s).load_failures == failures + 2, "links not counted as load failures");
    CHECK(get_version(s, "in") == 6);

    /* a FIFO (must not block), a directory, tmp files, bad names, other files */
    snprintf(path, sizeof path, "%s/fifo.safetensors", dir);
    VIT_ASSERT(mkfifo(path, 0644) == 0);
    snprintf(path, sizeof path, "%s/sub.safetensors", dir);
    VIT_ASSERT(mkdir(path, 0755) == 0);
    const char *junk[] = {".tmp-in-abc123", ".tmp-in-abc123.safetensors", "Upper.safetensors",
                          "notes.txt", ".safetensors", "in.safetensors.bak"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, junk[i]);
        write_file(path, "junk", 4);
    }
    check_fail("get: FIFO", task_store_get(s, "fifo", &t, &err), &err, VIT_ERR_INVALID,
               "not a regular file");
    check_fail("metadata: FIFO", task_store_metadata(s, "fifo", &kv, NULL, &err), &err,
               VIT_ERR_INVALID, "not a regular file");
    check_fail("get: directory", task_store_get(s, "sub", &t, &err), &err, VIT_ERR_INVALID,
               "not a regular file");
    check_fail("delete: directory", task_store_delete(s, "sub", &err), &err, VIT_ERR_INVALID,
               "not a regular file");
    check_fail("delete: FIFO", task_store_delete(s, "fifo", &err), &err, VIT_ERR_INVALID,
               "not a regular file");
    task_store_entry *list;
    size_t n;
    CHECK(task_store_list(s, &list, &n, &err) == VIT_OK);
    CHECKF(n == 1 && !strcmp(list[0].name, "in"), "list: %zu entries, first '%s' (want 'in')", n,
           n ? list[0].name : "");
    free(list);

    /* delete removes the link, never its target; put replaces a link */
    CHECK(task_store_delete(s, "alias", &err) == VIT_OK);
    snprintf(path, sizeof path, "%s/alias.safetensors", dir);
    struct stat sb;
    CHECK(lstat(path, &sb) != 0);
    CHECK(get_version(s, "in") == 6);
    size_t len;
    uint8_t *b = task_file_bytes(model, "out", 2, 8, &len);
    bool created = false;
    CHECK(task_store_put(s, "out", b, len, &created, &err) == VIT_OK && created);
    snprintf(path, sizeof path, "%s/out.safetensors", dir);
    CHECK(lstat(path, &sb) == 0 && S_ISREG(sb.st_mode));
    CHECK(get_version(s, "out") == 8);
    vit_task *outside;
    CHECK(task_load(model, target, &outside, &err) == VIT_OK);
    CHECKF(outside && task_version(outside, "out") == 5, "the link's target was changed");
    task_free(outside);
    free(b);
    unlink(target);
    task_store_close(s);
    remove_dir(dir);
}

/* ---- 8. a load held midway --------------------------------------------- */

/* task_load_memory, wrapped: once armed for a file, the next load of it
 * announces itself and waits until released. */
vit_status __real_task_load_memory(const vit_model *m, const char *fingerprint, const void *data,
                                   size_t len, const char *path, vit_task **out, vit_error *err);
vit_status __wrap_task_load_memory(const vit_model *m, const char *fingerprint, const void *data,
                                   size_t len, const char *path, vit_task **out, vit_error *err);

static pthread_mutex_t hold_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hold_cond = PTHREAD_COND_INITIALIZER;
static char hold_file[STORE_TEST_FILE_MAX];
static enum { HOLD_IDLE, HOLD_ARMED, HOLD_HOLDING, HOLD_RELEASED } hold_state;

vit_status __wrap_task_load_memory(const vit_model *m, const char *fingerprint, const void *data,
                                   size_t len, const char *path, vit_task **out, vit_error *err)
{
    pthread_mutex_lock(&hold_lock);
    if (hold_state == HOLD_ARMED && strcmp(path, hold_file) == 0) {
        hold_state = HOLD_HOLDING;
        pthread_cond_broadcast(&hold_cond);
        while (hold_state != HOLD_RELEASED)
            pthread_cond_wait(&hold_cond, &hold_lock);
        hold_state = HOLD_IDLE;
    }
    pthread_mutex_unlock(&hold_lock);
    return __real_task_load_memory(m, fingerprint, data, len, path, out, err);
}

/* Arms the hold for the next load of `file` (e.g. "s.safetensors"). */
static void hold_arm(const char *file)
{
    pthread_mutex_lock(&hold_lock);
    VIT_ASSERT(hold_state == HOLD_IDLE);
    snprintf(hold_file, sizeof hold_file, "%s", file);
    hold_state = HOLD_ARMED;
    pthread_mutex_unlock(&hold_lock);
}

/* Waits until a load is held. */
static void hold_wait(void)
{
    pthread_mutex_lock(&hold_lock);
    while (hold_state != HOLD_HOLDING)
        pthread_cond_wait(&hold_cond, &hold_lock);
    pthread_mutex_unlock(&hold_lock);
}

static void hold_release(void)
{
    pthread_mutex_lock(&hold_lock);
    VIT_ASSERT(hold_state == HOLD_HOLDING);
    hold_state = HOLD_RELEASED;
    pthread_cond_broadcast(&hold_cond);
    pthread_mutex_unlock(&hold_lock);
}

typedef struct held_get {
    task_store *s;
    const char *name;
    int version; /* what the get returned: its version, or -1 */
} held_get;

static void *held_get_run(void *arg)
{
    held_get *h = arg;
    h->version = get_version(h->s, h->name);
    return NULL;
}

/* put (version v, k classes) of name into s; fails the test on error. */
static void put_version(task_store *s, const char *name, int k, int v)
{
    size_t len;
    uint8_t *b = task_file_bytes(model, name, k, v, &len);
    vit_error err;
    bool created;
    vit_status st = task_store_put(s, name, b, len, &created, &err);
    CHECKF(st == VIT_OK, "put %s v%d: %s", name, v, err.message);
    free(b);
}

static void test_held_load(void)
{
    fprintf(stderr, "a load held midway\n");
    char dir[4200];
    task_store *s = open_store(store_dir(dir, sizeof dir, "held"), 1 << 24);
    put_version(s, "s", 2, 1);
    put_version(s, "r", 2, 4);
    put_version(s, "u", 2, 5);
    CHECK(get_version(s, "r") == 4); /* resident */
    alarm(120); /* a get that waited on the held load would hang: fail instead */

    /* a put during the load */
    held_get h = {s, "s", -2};
    pthread_t th;
    hold_arm("s.safetensors");
    VIT_ASSERT(pthread_create(&th, NULL, held_get_run, &h) == 0);
    hold_wait();
    CHECK(get_version(s, "r") == 4); /* a resident task, during the load */
    CHECK(get_version(s, "u") == 5); /* another task's load, during the load */
    put_version(s, "s", 3, 2);
    hold_release();
    pthread_join(th, NULL);
    CHECKF(h.version == 1, "the held get returned v%d, want v1 (what it read)", h.version);
    CHECKF(get_version(s, "s") == 2, "after a put during a load, get does not see the new version");
    task_store_stats st = stats(s);
    CHECKF(st.loads == 4 && st.resident_count == 3, "loads %llu resident %zu (want 4, 3)",
           (unsigned long long)st.loads, st.resident_count);

    /* a delete during the load */
    put_version(s, "s", 2, 3); /* not resident now */
    hold_arm("s.safetensors");
    h.version = -2;
    VIT_ASSERT(pthread_create(&th, NULL, held_get_run, &h) == 0);
    hold_wait();
    vit_error err;
    CHECK(task_store_delete(s, "s", &err) == VIT_OK);
    hold_release();
    pthread_join(th, NULL);
    CHECKF(h.version == 3, "the held get returned v%d, want v3", h.version);
    vit_task *t;
    check_fail("get after a delete during its load", task_store_get(s, "s", &t, &err), &err,
               VIT_ERR_NOT_FOUND, NULL);
    st = stats(s);
    CHECKF(st.resident_count == 2 && listed_resident(s, "s") == -1,
           "a deleted task's load was made resident (%zu resident)", st.resident_count);
    alarm(0);
    task_store_close(s);
    remove_dir(dir);
}

/* ---- 9. threads --------------------------------------------------------- */

enum { ONCE_THREADS = 8, ONCE_ROUNDS = 3 };

typedef struct once_state {
    task_store *s;
    pthread_barrier_t start, done;
    atomic_int started; /* threads about to call get, this round */
    atomic_int bad;     /* gets that failed or returned another version */
} once_state;

static void *once_thread(void *arg)
{
    once_state *o = arg;
    for (int r = 0; r < ONCE_ROUNDS; r++) {
        pthread_barrier_wait(&o->start);
        atomic_fetch_add(&o->started, 1);
        if (get_version(o->s, "shared") != r)
            atomic_fetch_add(&o->bad, 1);
        pthread_barrier_wait(&o->done);
    }
    return NULL;
}

/* Many threads ask at once for a task nobody has loaded: one load a round.
 * Each round the main thread puts a new version (dropping the resident one)
 * and holds the first load of it until every thread has called get; while
 * it is held no other load may happen (a thread that loaded for itself
 * would not wait: the hold is one-shot).  The pause before the check only
 * gives a broken store time to show itself; a correct one passes whatever
 * its length. */
static void test_load_once(void)
{
    fprintf(stderr, "one load for many gets\n");
    char dir[4200];
    task_store *s = open_store(store_dir(dir, sizeof dir, "once"), 1 << 26);
    once_state o = {.s = s};
    atomic_init(&o.started, 0);
    atomic_init(&o.bad, 0);
    VIT_ASSERT(pthread_barrier_init(&o.start, NULL, ONCE_THREADS + 1) == 0);
    VIT_ASSERT(pthread_barrier_init(&o.done, NULL, ONCE_THREADS + 1) == 0);
    pthread_t th[ONCE_THREADS];
    for (int i = 0; i < ONCE_THREADS; i++)
        VIT_ASSERT(pthread_create(&th[i], NULL, once_thread, &o) == 0);
    alarm(120);
    for (int r = 0; r < ONCE_ROUNDS; r++) {
        put_version(s, "shared", 50, r);
        hold_arm("shared.safetensors");
        atomic_store(&o.started, 0);
        pthread_barrier_wait(&o.start);
        hold_wait();
        while (atomic_load(&o.started) < ONCE_THREADS)
            usleep(1000);
        usleep(50 * 1000);
        CHECKF(stats(s).loads == (uint64_t)r, "round %d: %llu loads while the first was held", r,
               (unsigned long long)stats(s).loads - (uint64_t)r);
        hold_release();
        pthread_barrier_wait(&o.done);
        CHECKF(stats(s).loads == (uint64_t)r + 1, "round %d: %llu loads, want %d", r,
               (unsigned long long)stats(s).loads, r + 1);
    }
    alarm(0);
    for (int i = 0; i < ONCE_THREADS; i++)
        pthread_join(th[i], NULL);
    CHECKF(atomic_load(&o.bad) == 0, "%d gets failed or returned another version",
           atomic_load(&o.bad));
    pthread_barrier_destroy(&o.start);
    pthread_barrier_destroy(&o.done);
    task_store_close(s);
    remove_dir(dir);
}

enum { MIX_THREADS = 6, MIX_ITERS = 250, MIX_NAMES = 6, MIX_VERSIONS = 4 };

typedef struct mix_state {
    task_store *s;
    uint8_t *bytes[MIX_NAMES][MIX_VERSIONS]; /* task files, ready to put */
    size_t len[MIX_NAMES][MIX_VERSIONS];
    pthread_barrier_t start;
} mix_state;

typedef struct mix_thread {
    mix_state *st;
    unsigned seed;
    int gets, found, puts, deletes, bad; /* this thread's counts */
} mix_thread;

static const char *mix_name(int i)
{
    static const char *const names[MIX_NAMES] = {"m0", "m1", "m2", "m3", "m4", "m5"};
    return names[i];
}

static void *mix_run(void *arg)
{
    mix_thread *me = arg;
    mix_state *ms = me->st;
    uint32_t x = me->seed;
    pthread_barrier_wait(&ms->start);
    for (int it = 0; it < MIX_ITERS; it++) {
        x = x * 1664525u + 1013904223u;
        int op = (int)(x >> 24) % 10, n = (int)(x >> 8) % MIX_NAMES;
        int v = (int)(x >> 16) % MIX_VERSIONS;
        vit_error err;
        if (op < 7) { /* get: the task must be wholly one version of its name */
            vit_task *t = NULL;
            vit_status s = task_store_get(ms->s, mix_name(n), &t, &err);
            me->gets++;
            if (s == VIT_OK) {
                me->found++;
                me->bad += task_version(t, mix_name(n)) < 0;
                task_free(t);
            } else if (s != VIT_ERR_NOT_FOUND) {
                fprintf(stderr, "get %s: %s\n", mix_name(n), err.message);
                me->bad++;
            }
        } else if (op < 9) {
            bool created;
            vit_status s = task_store_put(ms->s, mix_name(n), ms->bytes[n][v], ms->len[n][v],
                                          &created, &err);
            me->puts++;
            if (s != VIT_OK) {
                fprintf(stderr, "put %s: %s\n", mix_name(n), err.message);
                me->bad++;
            }
        } else {
            vit_status s = task_store_delete(ms->s, mix_name(n), &err);
            me->deletes++;
            if (s != VIT_OK && s != VIT_ERR_NOT_FOUND) {
                fprintf(stderr, "delete %s: %s\n", mix_name(n), err.message);
                me->bad++;
            }
        }
    }
    return NULL;
}

/* Threads get, put and delete names of a small set at random with a bound
 * of about three tasks (so evictions race too); every task got is checked. */
static void test_mix(void)
{
    fprintf(stderr, "threads: get / put / delete\n");
    char dir[4200];
    mix_state ms;
    memset(&ms, 0, sizeof ms);
    for (int n = 0; n < MIX_NAMES; n++)
        for (int v = 0; v < MIX_VERSIONS; v++)
            ms.bytes[n][v] = task_file_bytes(model, mix_name(n), 3 + 5 * v, 10 * n + v,
                                             &ms.len[n][v]);
    size_t bound = 3 * bytes_of("m0", 3 + 5 * (MIX_VERSIONS - 1));
    ms.s = open_store(store_dir(dir, sizeof dir, "mix"), bound);
    VIT_ASSERT(pthread_barrier_init(&ms.start, NULL, MIX_THREADS) == 0);
    pthread_t th[MIX_THREADS];
    mix_thread mt[MIX_THREADS];
    for (int i = 0; i < MIX_THREADS; i++) {
        mt[i] = (mix_thread){.st = &ms, .seed = 977u * (unsigned)i + 1};
        VIT_ASSERT(pthread_create(&th[i], NULL, mix_run, &mt[i]) == 0);
    }
    int gets = 0, found = 0, puts = 0, deletes = 0, bad = 0;
    for (int i = 0; i < MIX_THREADS; i++) {
        pthread_join(th[i], NULL);
        gets += mt[i].gets;
        found += mt[i].found;
        puts += mt[i].puts;
        deletes += mt[i].deletes;
        bad += mt[i].bad;
    }
    task_store_stats st = stats(ms.s);
    fprintf(stderr, "  %d gets (%d found), %d puts, %d deletes; %llu loads, %llu evictions\n",
            gets, found, puts, deletes, (unsigned long long)st.loads,
            (unsigned long long)st.evictions);
    CHECKF(bad == 0, "%d operations failed or returned a wrong task", bad);
    CHECKF(found > 0 && puts > 0 && deletes > 0, "the mix did not exercise every call");
    CHECKF(st.load_failures == 0, "%llu load failures", (unsigned long long)st.load_failures);
    /* afterwards: the store agrees with the directory, name by name */
    for (int n = 0; n < MIX_NAMES; n++) {
        char path[4400];
        snprintf(path, sizeof path, "%s/%s.safetensors", dir, mix_name(n));
        int on_disk = access(path, F_OK) == 0;
        vit_task *t = NULL;
        vit_error err;
        vit_status s = task_store_get(ms.s, mix_name(n), &t, &err);
        CHECKF(on_disk ? s == VIT_OK && task_version(t, mix_name(n)) >= 0
                       : s == VIT_ERR_NOT_FOUND,
               "%s: on disk %d, get %s", mix_name(n), on_disk, vit_status_name(s));
        task_free(t);
    }
    CHECKF(stats(ms.s).resident_bytes <= bound, "resident %zu bytes over the bound %zu when idle",
           stats(ms.s).resident_bytes, bound);
    int files = test_dir_entries(dir), tasks = 0;
    for (int n = 0; n < MIX_NAMES; n++) {
        char path[4400];
        snprintf(path, sizeof path, "%s/%s.safetensors", dir, mix_name(n));
        tasks += access(path, F_OK) == 0;
    }
    CHECKF(files == tasks, "%d temporary files left in %s", files - tasks, dir);
    pthread_barrier_destroy(&ms.start);
    task_store_close(ms.s);
    for (int n = 0; n < MIX_NAMES; n++)
        for (int v = 0; v < MIX_VERSIONS; v++)
            free(ms.bytes[n][v]);
    remove_dir(dir);
}

/* ---- main --------------------------------------------------------------- */

/* ---- 10. sync ------------------------------------------------------------ */

/* What task_store_sync reported. */
typedef struct sync_log {
    int n;
    char name[16][TASK_NAME_MAX + 1];
    task_store_change change[16];
    vit_status st[16];
} sync_log;

static void on_sync(void *ctx, const char *name, task_store_change change, vit_status st,
                    const vit_error *err)
{
    sync_log *l = ctx;
    fprintf(stderr, "    sync: %s %s %s%s%s\n", name,
            change == TASK_STORE_ADDED      ? "added"
            : change == TASK_STORE_REPLACED ? "replaced"
                                            : "removed",
            vit_status_name(st), err ? ": " : "", err ? err->message : "");
    CHECKF((st == VIT_OK) == (err == NULL), "sync report of %s: status %s with err %p", name,
           vit_status_name(st), (const void *)err);
    if (l->n < 16) {
        snprintf(l->name[l->n], sizeof l->name[0], "%s", name);
        l->change[l->n] = change;
        l->st[l->n] = st;
    }
    l->n++;
}

/* Syncs s (name NULL: the directory) and checks that it reported exactly
 * want_n changes, the first of them (name0, change0, st0) when want_n > 0. */
static void sync_expect(const char *what, task_store *s, const char *name, int want_n,
                        const char *name0, task_store_change change0, vit_status st0)
{
    sync_log l = {0};
    vit_error err;
    vit_status st = task_store_sync(s, name, on_sync, &l, &err);
    CHECKF(st == VIT_OK, "%s: sync: %s", what, err.message);
    CHECKF(l.n == want_n, "%s: %d changes reported, want %d", what, l.n, want_n);
    if (want_n > 0 && l.n > 0)
        CHECKF(strcmp(l.name[0], name0) == 0 && l.change[0] == change0 && l.st[0] == st0,
               "%s: reported %s change %d %s, want %s change %d %s", what, l.name[0],
               (int)l.change[0], vit_status_name(l.st[0]), name0, (int)change0,
               vit_status_name(st0));
}

static void test_sync(void)
{
    fprintf(stderr, "sync: two stores on one directory\n");
    char dir[4200], path[4400];
    store_dir(dir, sizeof dir, "sync");
    task_store *a = open_store(dir, 1 << 20), *b = open_store(dir, 1 << 20);
    sync_expect("the baseline of an empty directory", b, NULL, 0, NULL, 0, 0);

    put_version(a, "t1", 3, 1);
    CHECK(get_version(b, "t1") == 1); /* not resident in b: read from the directory */
    put_version(a, "t1", 3, 2);
    CHECKF(get_version(b, "t1") == 1, "b serves its resident copy until it syncs");
    vit_task *old;
    vit_error err;
    VIT_ASSERT(task_store_get(b, "t1", &old, &err) == VIT_OK);
    sync_expect("t1 put twice by a", b, NULL, 1, "t1", TASK_STORE_ADDED, VIT_OK);
    CHECKF(get_version(b, "t1") == 2, "after the sync b reads a's second version");
    CHECKF(task_version(old, "t1") == 1, "a reference taken before the sync keeps version 1");
    task_free(old);
    CHECKF(stats(b).sync_drops == 1, "b dropped %llu copies, want 1",
           (unsigned long long)stats(b).sync_drops);
    sync_expect("nothing changed", b, NULL, 0, NULL, 0, 0);
    CHECK(stats(b).sync_drops == 1 && listed_resident(b, "t1") == 1);

    /* the store's own put, then its get: that copy is the file's and stays */
    sync_expect("a's baseline", a, NULL, 1, "t1", TASK_STORE_ADDED, VIT_OK);
    put_version(a, "t1", 3, 3);
    CHECK(get_version(a, "t1") == 3);
    sync_expect("a's own put", a, NULL, 1, "t1", TASK_STORE_REPLACED, VIT_OK);
    CHECKF(stats(a).sync_drops == 0 && listed_resident(a, "t1") == 1,
           "a dropped its copy of its own put (%llu drops)",
           (unsigned long long)stats(a).sync_drops);

    /* removed by a: b serves its copy until it syncs, then NOT_FOUND */
    CHECK(get_version(b, "t1") == 2);
    VIT_ASSERT(task_store_delete(a, "t1", &err) == VIT_OK);
    CHECK(get_version(b, "t1") == 2);
    sync_expect("t1 deleted by a", b, NULL, 1, "t1", TASK_STORE_REMOVED, VIT_OK);
    vit_task *t = NULL;
    CHECK(task_store_get(b, "t1", &t, &err) == VIT_ERR_NOT_FOUND && !t);
    sync_expect("t1 gone", b, NULL, 0, NULL, 0, 0);

    /* one name: only that name is looked at */
    put_version(a, "t2", 2, 1);
    put_version(a, "t3", 2, 1);
    CHECK(get_version(b, "t2") == 1 && get_version(b, "t3") == 1);
    put_version(a, "t2", 2, 2);
    put_version(a, "t3", 2, 2);
    sync_expect("one name, t2", b, "t2", 1, "t2", TASK_STORE_ADDED, VIT_OK);
    CHECK(get_version(b, "t2") == 2);
    CHECKF(get_version(b, "t3") == 1, "a sync of t2 dropped t3");
    sync_expect("one name again, t2", b, "t2", 0, NULL, 0, 0);
    sync_expect("then the directory", b, NULL, 1, "t3", TASK_STORE_ADDED, VIT_OK);
    CHECK(get_version(b, "t3") == 2);

    /* rewritten in place (same inode, other bytes): a replacement */
    VIT_ASSERT(get_version(b, "t2") == 2);
    size_t len;
    uint8_t *bytes = task_file_bytes(model, "t2", 3, 7, &len);
    snprintf(path, sizeof path, "%s/t2.safetensors", dir);
    struct stat before, after;
    VIT_ASSERT(stat(path, &before) == 0);
    write_file(path, bytes, len);
    VIT_ASSERT(stat(path, &after) == 0 && after.st_ino == before.st_ino);
    free(bytes);
    sync_expect("t2 rewritten in place", b, NULL, 1, "t2", TASK_STORE_REPLACED, VIT_OK);
    CHECK(get_version(b, "t2") == 7);

    /* files that do not load are reported with why; others not at all */
    snprintf(path, sizeof path, "%s/alien.safetensors", scratch);
    save_task(other, "alien", 2, 1, path);
    char dest[4400];
    snprintf(dest, sizeof dest, "%s/alien.safetensors", dir);
    VIT_ASSERT(rename(path, dest) == 0);
    sync_expect("another backbone's task", b, NULL, 1, "alien", TASK_STORE_ADDED,
                VIT_ERR_MISMATCH);
    bytes = task_file_bytes(model, "cut", 2, 1, &len);
    snprintf(path, sizeof path, "%s/cut.safetensors", dir);
    write_file(path, bytes, len / 2);
    free(bytes);
    sync_log l = {0};
    VIT_ASSERT(task_store_sync(b, NULL, on_sync, &l, &err) == VIT_OK);
    CHECKF(l.n == 1 && strcmp(l.name[0], "cut") == 0 && l.st[0] != VIT_OK,
           "a truncated task: %d reports, the first %s %s", l.n, l.n ? l.name[0] : "-",
           l.n ? vit_status_name(l.st[0]) : "-");
    snprintf(path, sizeof path, "%s/.tmp-t9-abc123", dir);
    write_file(path, "x", 1);
    snprintf(path, sizeof path, "%s/Bad.safetensors", dir);
    write_file(path, "x", 1);
    snprintf(path, sizeof path, "%s/t9.safetensors.tmp", dir);
    write_file(path, "x", 1);
    sync_expect("tmp files and bad names", b, NULL, 0, NULL, 0, 0);
    CHECK(task_store_sync(b, "../t2", NULL, NULL, &err) == VIT_ERR_INVALID);

    task_store_close(a);
    task_store_close(b);
    remove_dir(dir);
}

int main(void)
{
    VIT_ASSERT(mkdtemp(tmpdir));
    snprintf(scratch, sizeof scratch, "%s/scratch", tmpdir);
    VIT_ASSERT(mkdir(scratch, 0755) == 0);

    vit_config cfg;
    vit_error err;
    VIT_ASSERT(vit_config_preset("vit-tiny", &cfg, &err) == VIT_OK);
    cfg.depth = 1;
    vit_model *m, *o;
    if (vit_model_create(&cfg, &m, &err) || vit_model_create(&cfg, &o, &err)) {
        fprintf(stderr, "cannot create the tiny models: %s\n", err.message);
        return 1;
    }
    vit_model_randomize(m, 1);
    vit_model_randomize(o, 2);
    model = m;
    other = o;
    vit_model_fingerprint(m, fp, &err);

    test_open();
    test_basics();
    test_errors();
    test_versions();
    test_eviction();
    test_thousand();
    test_links();
    test_held_load();
    test_load_once();
    test_mix();
    test_sync();

    vit_model_free(m);
    vit_model_free(o);
    remove_dir(scratch);
    VIT_ASSERT(rmdir(tmpdir) == 0);
    return check_result();
}
