/*
 * test_beneath.c - opening untrusted paths beneath a root (engine/beneath.h).
 *
 * A scratch tree is built in a temp directory:
 *   <tmp>/root/            the root under test ("test root" in messages)
 *       a.txt              "alpha"
 *       sub/b.txt          "bravo"
 *       sub/deep/c.txt     "charlie"
 *   <tmp>/out/secret.txt   outside the root ("secret")
 *   <tmp>/out/sub/b.txt    a look-alike of root/sub/b.txt ("outside")
 * and symlinks, a FIFO and a swapped directory are added per test.  Each
 * test checks the result code, the symlink-free path (canon) of what was
 * opened and the bytes read from the descriptor, so a walk that opens the
 * wrong file fails too.  The work a walk does is counted (beneath_budget):
 * the tests assert exact step counts and that chains of symlinks end at the
 * per-walk and shared bounds.  The data set tests (test_dataset.c) cover the
 * same walk through ds_open / ds_load_image.
 */
#define _XOPEN_SOURCE 700 /* nftw (test_rm_tree) */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "beneath.h"
#include "check.h"
#include "test_scratch.h"
#include "test_util.h"

/* ------------------------------------------------------------ file helpers */

/* Makes <tmp>/<rel> a symlink to target (taken as is). */
static void symlink_rel(const char *target, const char *rel)
{
    char p[1024];
    tpath(p, sizeof p, rel);
    CHECKF(symlink(target, p) == 0, "symlink %s -> %s: %s", p, target, strerror(errno));
}

static void unlink_rel(const char *rel)
{
    char p[1024];
    tpath(p, sizeof p, rel);
    CHECKF(unlink(p) == 0, "unlink %s: %s", p, strerror(errno));
}

static const char *result_name(beneath_result r)
{
    switch (r) {
    case BENEATH_OK: return "ok";
    case BENEATH_OUTSIDE: return "outside";
    case BENEATH_MISSING: return "missing";
    case BENEATH_NOT_TYPE: return "not-type";
    case BENEATH_LOOP: return "loop";
    case BENEATH_TOO_LONG: return "too-long";
    case BENEATH_BUDGET: return "budget";
    case BENEATH_LINK_BUDGET: return "link-budget";
    case BENEATH_ERRNO: return "errno";
    case BENEATH_NOMEM: return "nomem";
    }
    return "?";
}

/* ------------------------------------------------------------ walk helpers */

/* Walks `path` beneath r and checks the result is `want_res`.  On success it
 * also checks canon (when want_canon is not NULL) and the first bytes of the
 * file (when want_text is not NULL), and that a failure leaves fd -1 and
 * canon NULL. */
static void expect_walk(const beneath_root *r, const char *path, beneath_want want,
                        beneath_result want_res, const char *want_canon, const char *want_text)
{
    int fd = 123, eno = -1;
    struct stat st;
    char *canon = (char *)"garbage";
    beneath_result res = beneath_walk(r, path, want, NULL, &fd, &st, &canon, &eno);
    CHECKF(res == want_res, "walk '%s': got %s (errno %d), want %s", path, result_name(res), eno,
           result_name(want_res));
    if (res != BENEATH_OK) {
        CHECKF(fd == -1 && canon == NULL, "walk '%s' failed but left fd %d canon %p", path, fd,
               (void *)canon);
        return;
    }
    CHECKF(!want_canon || strcmp(canon, want_canon) == 0, "walk '%s': canon '%s', want '%s'",
           path, canon, want_canon);
    if (want_text) {
        char buf[64] = {0};
        ssize_t n = read(fd, buf, sizeof buf - 1);
        CHECKF(n >= 0 && strcmp(buf, want_text) == 0, "walk '%s' read '%s', want '%s'", path,
               buf, want_text);
        CHECK(S_ISREG(st.st_mode) && st.st_size == (off_t)strlen(want_text));
    }
    free(canon);
    close(fd);
}

/* Walks `path` expecting failure; writes beneath_error's message (subject
 * "item") into msg and returns the status. */
static vit_status walk_message(const beneath_root *r, const char *path, beneath_want want,
                               char *msg, size_t len)
{
    int fd, eno;
    struct stat st;
    beneath_result res = beneath_walk(r, path, want, NULL, &fd, &st, NULL, &eno);
    CHECKF(res != BENEATH_OK, "walk '%s' succeeded", path);
    if (res == BENEATH_OK) {
        close(fd);
        snprintf(msg, len, "(opened)");
        return VIT_OK;
    }
    vit_error err = {0};
    vit_status s = beneath_error(r, res, eno, want, "item", &err);
    CHECK(err.code == s);
    snprintf(msg, len, "%s", err.message);
    return s;
}

static beneath_root *open_root_ok(const char *dir, const char *label)
{
    beneath_root *r = NULL;
    vit_error err = {0};
    vit_status s = beneath_root_open(dir, label, &r, &err);
    CHECKF(s == VIT_OK && r, "beneath_root_open %s: %s", dir, err.message);
    return s == VIT_OK ? r : NULL;
}

/* ------------------------------------------------------------ tests */

/* Opening a root: its canonical path, the label in messages, what is refused. */
static void test_root_open(void)
{
    char dir[1024], real[PATH_MAX], link[1024];
    tpath(dir, sizeof dir, "root");
    CHECK(realpath(dir, real) != NULL);
    beneath_root *r = open_root_ok(dir, "test root");
    if (r) {
        CHECKF(strcmp(beneath_root_path(r), real) == 0, "root path %s, want %s",
               beneath_root_path(r), real);
        char *p = beneath_path(r, "sub/b.txt"), want[PATH_MAX + 16];
        snprintf(want, sizeof want, "%s/sub/b.txt", real);
        CHECKF(p && strcmp(p, want) == 0, "beneath_path: %s, want %s", p, want);
        free(p);
        beneath_root_close(r);
    }
    /* a root named through a symlink: its canonical path is the target's */
    tpath(link, sizeof link, "rootlink");
    CHECK(symlink("root", link) == 0);
    r = open_root_ok(link, "test root");
    if (r) {
        CHECKF(strcmp(beneath_root_path(r), real) == 0, "root via link: %s", beneath_root_path(r));
        beneath_root_close(r);
    }

    vit_error err = {0};
    r = (beneath_root *)&err; /* must be reset to NULL on failure */
    char missing[1024];
    tpath(missing, sizeof missing, "no-such-dir");
    vit_status s = beneath_root_open(missing, "test root", &r, &err);
    CHECKF(s == VIT_ERR_NOT_FOUND && r == NULL &&
               strncmp(err.message, "test root ", 10) == 0 &&
               strstr(err.message, "no-such-dir: No such file or directory"),
           "missing root: %s %s", vit_status_name(s), err.message);
    char file[1024];
    tpath(file, sizeof file, "root/a.txt");
    s = beneath_root_open(file, "test root", &r, &err);
    CHECKF(s == VIT_ERR_IO && r == NULL && strstr(err.message, "Not a directory"),
           "file as root: %s %s", vit_status_name(s), err.message);
    beneath_root_close(NULL); /* a no-op */
}

/* Relative paths start at the root; ".", "..", repeated '/' resolve inside. */
static void test_relative(const beneath_root *r)
{
    expect_walk(r, "a.txt", BENEATH_WANT_FILE, BENEATH_OK, "a.txt", "alpha");
    expect_walk(r, "sub/b.txt", BENEATH_WANT_FILE, BENEATH_OK, "sub/b.txt", "bravo");
    expect_walk(r, "./sub//deep/../deep/./c.txt", BENEATH_WANT_FILE, BENEATH_OK,
                "sub/deep/c.txt", "charlie");
    expect_walk(r, "sub/../a.txt", BENEATH_WANT_ANY, BENEATH_OK, "a.txt", "alpha");
    expect_walk(r, "", BENEATH_WANT_DIR, BENEATH_OK, "", NULL);
    expect_walk(r, "sub/deep/", BENEATH_WANT_DIR, BENEATH_OK, "sub/deep", NULL);
    expect_walk(r, "sub", BENEATH_WANT_ANY, BENEATH_OK, "sub", NULL);
    /* what the end must be */
    expect_walk(r, "sub", BENEATH_WANT_FILE, BENEATH_NOT_TYPE, NULL, NULL);
    expect_walk(r, "a.txt", BENEATH_WANT_DIR, BENEATH_NOT_TYPE, NULL, NULL);
    expect_walk(r, "nothing.txt", BENEATH_WANT_FILE, BENEATH_MISSING, NULL, NULL);
    expect_walk(r, "nothing/a.txt", BENEATH_WANT_FILE, BENEATH_MISSING, NULL, NULL);
    expect_walk(r, "a.txt/x", BENEATH_WANT_FILE, BENEATH_MISSING, NULL, NULL);

    char msg[600];
    vit_status s = walk_message(r, "sub", BENEATH_WANT_FILE, msg, sizeof msg);
    CHECKF(s == VIT_ERR_INVALID && strcmp(msg, "item is not a regular file") == 0, "%s", msg);
    s = walk_message(r, "a.txt", BENEATH_WANT_DIR, msg, sizeof msg);
    CHECKF(s == VIT_ERR_INVALID && strcmp(msg, "item is not a directory") == 0, "%s", msg);
    s = walk_message(r, "nothing.txt", BENEATH_WANT_FILE, msg, sizeof msg);
    CHECKF(s == VIT_ERR_NOT_FOUND && strcmp(msg, "item not found (No such file or directory)") == 0,
           "%s", msg);

    /* beneath_open: the walk and its message in one call */
    int fd = -1;
    struct stat st;
    char *canon = NULL;
    vit_error err = {0};
    s = beneath_open(r, "sub/deep/c.txt", BENEATH_WANT_FILE, NULL, "c", &fd, &st, &canon, &err);
    CHECKF(s == VIT_OK && fd >= 0 && canon && strcmp(canon, "sub/deep/c.txt") == 0, "%s",
           err.message);
    if (fd >= 0)
        close(fd);
    free(canon);
    s = beneath_open(r, "sub/nothing", BENEATH_WANT_FILE, NULL, "the thing", &fd, &st, NULL,
                     &err);
    CHECKF(s == VIT_ERR_NOT_FOUND && fd == -1 && strstr(err.message, "the thing not found"),
           "%s", err.message);
}

/* ".." above the root is an escape, decided without looking outside: a
 * target that exists reads the same as one that does not. */
static void test_dotdot(const beneath_root *r)
{
    const char *pairs[][2] = {
        {"../out/secret.txt", "../out/nothing.txt"},
        {"sub/../../out/secret.txt", "sub/../../out/nothing.txt"},
        {"sub/deep/../../../out/secret.txt", "sub/deep/../../../out/nothing.txt"},
        {"..", "../nothing"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        char msg[2][600];
        vit_status s[2];
        for (int k = 0; k < 2; k++) {
            expect_walk(r, pairs[i][k], BENEATH_WANT_ANY, BENEATH_OUTSIDE, NULL, NULL);
            s[k] = walk_message(r, pairs[i][k], BENEATH_WANT_ANY, msg[k], sizeof msg[k]);
        }
        CHECKF(s[0] == VIT_ERR_INVALID && s[1] == VIT_ERR_INVALID, "%s: %s / %s", pairs[i][0],
               vit_status_name(s[0]), vit_status_name(s[1]));
        CHECKF(strcmp(msg[0], "item is outside the test root") == 0 &&
                   strcmp(msg[0], msg[1]) == 0,
               "'%s' vs '%s'", msg[0], msg[1]);
    }
}

/* Absolute paths and symlinks (absolute and relative targets). */
static void test_absolute_and_symlinks(const beneath_root *r)
{
    char real[PATH_MAX], given[1024], p[PATH_MAX + 64], out_secret[1024], out_none[1024];
    tpath(given, sizeof given, "root");
    CHECK(realpath(given, real) != NULL);
    tpath(out_secret, sizeof out_secret, "out/secret.txt");
    tpath(out_none, sizeof out_none, "out/nothing.txt");

    /* absolute paths: under the root by its canonical or given spelling */
    snprintf(p, sizeof p, "%s/sub/b.txt", real);
    expect_walk(r, p, BENEATH_WANT_FILE, BENEATH_OK, "sub/b.txt", "bravo");
    snprintf(p, sizeof p, "%s//a.txt", given);
    expect_walk(r, p, BENEATH_WANT_FILE, BENEATH_OK, "a.txt", "alpha");
    snprintf(p, sizeof p, "%s/sub/../../root/a.txt", given); /* ".." is the walk's to judge */
    expect_walk(r, p, BENEATH_WANT_FILE, BENEATH_OUTSIDE, NULL, NULL);
    expect_walk(r, out_secret, BENEATH_WANT_FILE, BENEATH_OUTSIDE, NULL, NULL);
    expect_walk(r, out_none, BENEATH_WANT_FILE, BENEATH_OUTSIDE, NULL, NULL);
    snprintf(p, sizeof p, "%sx/a.txt", given); /* a sibling that shares the prefix */
    expect_walk(r, p, BENEATH_WANT_FILE, BENEATH_OUTSIDE, NULL, NULL);
    expect_walk(r, "/", BENEATH_WANT_ANY, BENEATH_OUTSIDE, NULL, NULL);

    /* symlinks inside: absolute and relative targets are followed beneath
     * the root, and canon is where they lead */
    snprintf(p, sizeof p, "%s/sub/b.txt", real);
    symlink_rel(p, "root/in_abs");
    symlink_rel("../a.txt", "root/sub/in_rel");
    symlink_rel("deep", "root/sub/deeplink");
    symlink_rel("in_rel", "root/sub/chain");
    expect_walk(r, "in_abs", BENEATH_WANT_FILE, BENEATH_OK, "sub/b.txt", "bravo");
    expect_walk(r, "sub/in_rel", BENEATH_WANT_FILE, BENEATH_OK, "a.txt", "alpha");
    expect_walk(r, "sub/deeplink/c.txt", BENEATH_WANT_FILE, BENEATH_OK, "sub/deep/c.txt",
                "charlie");
    expect_walk(r, "sub/deeplink/../b.txt", BENEATH_WANT_FILE, BENEATH_OK, "sub/b.txt", "bravo");
    expect_walk(r, "sub/chain", BENEATH_WANT_FILE, BENEATH_OK, "a.txt", "alpha");

    /* symlinks out: the same error whether or not the target exists */
    symlink_rel(out_secret, "root/out_abs");
    symlink_rel(out_none, "root/out_abs_none");
    symlink_rel("../../out/secret.txt", "root/sub/out_rel");
    symlink_rel("../../out/nothing.txt", "root/sub/out_rel_none");
    symlink_rel("/", "root/slash");
    const char *pairs[][2] = {{"out_abs", "out_abs_none"}, {"sub/out_rel", "sub/out_rel_none"}};
    for (size_t i = 0; i < 2; i++) {
        char msg[2][600];
        for (int k = 0; k < 2; k++) {
            expect_walk(r, pairs[i][k], BENEATH_WANT_FILE, BENEATH_OUTSIDE, NULL, NULL);
            walk_message(r, pairs[i][k], BENEATH_WANT_FILE, msg[k], sizeof msg[k]);
        }
        CHECKF(strcmp(msg[0], msg[1]) == 0, "existence oracle: '%s' vs '%s'", msg[0], msg[1]);
    }
    expect_walk(r, "slash", BENEATH_WANT_ANY, BENEATH_OUTSIDE, NULL, NULL);

    /* a loop, a dangling link */
    symlink_rel("loop_b", "root/loop_a");
    symlink_rel("loop_a", "root/loop_b");
    symlink_rel("nothing.txt", "root/dangling");
    expect_walk(r, "loop_a", BENEATH_WANT_FILE, BENEATH_LOOP, NULL, NULL);
    char msg[600];
    vit_status s = walk_message(r, "loop_a", BENEATH_WANT_FILE, msg, sizeof msg);
    CHECKF(s == VIT_ERR_INVALID && strcmp(msg, "item: too many levels of symbolic links") == 0,
           "%s", msg);
    expect_walk(r, "dangling", BENEATH_WANT_FILE, BENEATH_MISSING, NULL, NULL);
}

/* A directory on the path swapped for a symlink between two walks: the
 * second walk follows the new link by the same rules (no check-then-use). */
static void test_swapped_directory(const beneath_root *r)
{
    char sub[1024], saved[1024], out_sub[1024];
    tpath(sub, sizeof sub, "root/sub");
    tpath(saved, sizeof saved, "root/sub_saved");
    tpath(out_sub, sizeof out_sub, "out/sub");
    expect_walk(r, "sub/b.txt", BENEATH_WANT_FILE, BENEATH_OK, "sub/b.txt", "bravo");
    CHECK(rename(sub, saved) == 0);
    const char *targets[] = {"../out/sub", out_sub};
    for (int k = 0; k < 2; k++) {
        CHECK(symlink(targets[k], sub) == 0);
        expect_walk(r, "sub/b.txt", BENEATH_WANT_FILE, BENEATH_OUTSIDE, NULL, NULL);
        CHECK(unlink(sub) == 0);
    }
    CHECK(symlink("sub_saved", sub) == 0); /* a swap that stays inside is followed */
    expect_walk(r, "sub/b.txt", BENEATH_WANT_FILE, BENEATH_OK, "sub_saved/b.txt", "bravo");
    CHECK(unlink(sub) == 0);
    CHECK(rename(saved, sub) == 0);
}

/* FIFOs (and devices) are refused from their type, never opened: a walk
 * returns at once, and inotify sees no open of the FIFO.  (A blocking open
 * would hang: the alarm set in main turns that into a failure.) */
static void test_fifo(const beneath_root *r)
{
    char fifo[1024];
    tpath(fifo, sizeof fifo, "root/fifo");
    CHECK(mkfifo(fifo, 0644) == 0);
    symlink_rel("fifo", "root/fifo_link");
    int ino = inotify_init1(IN_NONBLOCK);
    CHECK(ino >= 0 && inotify_add_watch(ino, fifo, IN_OPEN) >= 0);
    expect_walk(r, "fifo", BENEATH_WANT_FILE, BENEATH_NOT_TYPE, NULL, NULL);
    expect_walk(r, "fifo", BENEATH_WANT_ANY, BENEATH_NOT_TYPE, NULL, NULL);
    expect_walk(r, "fifo_link", BENEATH_WANT_FILE, BENEATH_NOT_TYPE, NULL, NULL);
    expect_walk(r, "fifo/x", BENEATH_WANT_FILE, BENEATH_MISSING, NULL, NULL);
    char ev[4096];
    CHECKF(read(ino, ev, sizeof ev) < 0 && errno == EAGAIN, "the FIFO was opened");
    close(ino);
    char msg[600];
    vit_status s = walk_message(r, "fifo", BENEATH_WANT_FILE, msg, sizeof msg);
    CHECKF(s == VIT_ERR_INVALID && strcmp(msg, "item is not a regular file") == 0, "%s", msg);
    unlink_rel("root/fifo_link");
    unlink_rel("root/fifo");

    /* a device, through a root of "/" (no confinement) */
    beneath_root *top = open_root_ok("/", "file system");
    if (top) {
        expect_walk(top, "/dev/null", BENEATH_WANT_FILE, BENEATH_NOT_TYPE, NULL, NULL);
        beneath_root_close(top);
    }
}

/* The root "/": ".." stays at the top, every absolute path is under it. */
static void test_slash_root(void)
{
    beneath_root *top = open_root_ok("/", "file system");
    if (!top)
        return;
    char real[PATH_MAX], given[1024], p[PATH_MAX + 64];
    tpath(given, sizeof given, "root");
    CHECK(realpath(given, real) != NULL);
    CHECK(strcmp(beneath_root_path(top), "/") == 0);
    snprintf(p, sizeof p, "/../..%s/a.txt", real);
    expect_walk(top, p, BENEATH_WANT_FILE, BENEATH_OK, p + 7 /* relative: "/../../" dropped */,
                "alpha");
    snprintf(p, sizeof p, "%s/a.txt", real);
    char *rel = NULL;
    CHECK(beneath_relative(top, p, &rel) == BENEATH_OK && rel && strcmp(rel, p + 1) == 0);
    free(rel);
    char *name = beneath_path(top, "x/y");
    CHECKF(name && strcmp(name, "/x/y") == 0, "%s", name);
    free(name);
    beneath_root_close(top);
}

/* beneath_relative: lexical, from the current directory or absolute. */
static void test_relative_of(const beneath_root *r)
{
    char given[1024], p[PATH_MAX + 64], cwd[PATH_MAX];
    tpath(given, sizeof given, "root");
    struct {
        const char *suffix; /* appended to <tmp>/root */
        beneath_result res;
        const char *rel;
    } cases[] = {
        {"", BENEATH_OK, ""},
        {"/", BENEATH_OK, ""},
        {"/sub/b.txt", BENEATH_OK, "sub/b.txt"},
        {"/sub/../../out", BENEATH_OK, "sub/../../out"}, /* the walk refuses it later */
        {"x/a.txt", BENEATH_OUTSIDE, NULL},              /* a sibling sharing the prefix */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(p, sizeof p, "%s%s", given, cases[i].suffix);
        char *rel = (char *)"garbage";
        beneath_result res = beneath_relative(r, p, &rel);
        CHECKF(res == cases[i].res && (cases[i].rel ? rel && strcmp(rel, cases[i].rel) == 0
                                                    : rel == NULL),
               "relative %s: %s '%s'", p, result_name(res), rel ? rel : "(null)");
        if (res == BENEATH_OK)
            free(rel);
    }
    char *rel = (char *)"garbage";
    CHECK(beneath_relative(r, "/", &rel) == BENEATH_OUTSIDE && rel == NULL);
    /* relative to the current directory */
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    CHECK(chdir(tmp_root) == 0);
    CHECK(beneath_relative(r, "root/sub/deep", &rel) == BENEATH_OK && rel &&
          strcmp(rel, "sub/deep") == 0);
    free(rel);
    CHECK(beneath_relative(r, "out/secret.txt", &rel) == BENEATH_OUTSIDE && rel == NULL);
    CHECK(chdir(cwd) == 0);
}

/* Every failure's status and message (the table in beneath.h). */
static void test_error_table(const beneath_root *r)
{
    struct {
        beneath_result res;
        int eno;
        beneath_want want;
        vit_status code;
        const char *message;
    } cases[] = {
        {BENEATH_OUTSIDE, 0, BENEATH_WANT_FILE, VIT_ERR_INVALID, "x is outside the test root"},
        {BENEATH_MISSING, ENOTDIR, BENEATH_WANT_FILE, VIT_ERR_NOT_FOUND,
         "x not found (Not a directory)"},
        {BENEATH_MISSING, 0, BENEATH_WANT_FILE, VIT_ERR_NOT_FOUND,
         "x not found (No such file or directory)"},
        {BENEATH_NOT_TYPE, 0, BENEATH_WANT_FILE, VIT_ERR_INVALID, "x is not a regular file"},
        {BENEATH_NOT_TYPE, 0, BENEATH_WANT_ANY, VIT_ERR_INVALID, "x is not a regular file"},
        {BENEATH_NOT_TYPE, 0, BENEATH_WANT_DIR, VIT_ERR_INVALID, "x is not a directory"},
        {BENEATH_LOOP, 0, BENEATH_WANT_FILE, VIT_ERR_INVALID,
         "x: too many levels of symbolic links"},
        {BENEATH_TOO_LONG, 0, BENEATH_WANT_FILE, VIT_ERR_TOO_LARGE,
         "x: the path takes too many steps to resolve (over 1024 components or 16384 bytes, "
         "symbolic links included)"},
        {BENEATH_BUDGET, 0, BENEATH_WANT_FILE, VIT_ERR_TOO_LARGE,
         "x: the paths beneath the test root take too many steps to resolve in all (symbolic "
         "link chains?)"},
        {BENEATH_LINK_BUDGET, 0, BENEATH_WANT_FILE, VIT_ERR_TOO_LARGE,
         "x: the paths beneath the test root follow too many symbolic links in all (link "
         "chains?)"},
        {BENEATH_NOMEM, 0, BENEATH_WANT_FILE, VIT_ERR_NOMEM, "out of memory opening x"},
        {BENEATH_ERRNO, EACCES, BENEATH_WANT_FILE, VIT_ERR_IO,
         "cannot open x: Permission denied"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        vit_error err = {0};
        vit_status s = beneath_error(r, cases[i].res, cases[i].eno, cases[i].want, "x", &err);
        CHECKF(s == cases[i].code && err.code == s && strcmp(err.message, cases[i].message) == 0,
               "%s: %s '%s', want %s '%s'", result_name(cases[i].res), vit_status_name(s),
               err.message, vit_status_name(cases[i].code), cases[i].message);
    }
}

/* ------------------------------------------------------------ walk work */

/* Makes <tmp>/<dir>/l0 .. l<n-1>: a chain of symlinks, link i pointing to
 * `pad` repeated reps times then l<i+1> (the last one to `end`).  <dir>/d
 * exists, so "d/../" pads resolve. */
static void make_chain(const char *dir, int n, const char *pad, int reps, const char *end)
{
    char rel[256], target[PATH_MAX];
    snprintf(rel, sizeof rel, "%s/d", dir);
    mkdir_rel(dir);
    mkdir_rel(rel);
    for (int i = 0; i < n; i++) {
        size_t o = 0, lp = strlen(pad);
        for (int k = 0; k < reps && o + lp < sizeof target - 64; k++, o += lp)
            memcpy(target + o, pad, lp);
        if (i + 1 < n)
            snprintf(target + o, sizeof target - o, "l%d", i + 1);
        else
            snprintf(target + o, sizeof target - o, "%s", end);
        snprintf(rel, sizeof rel, "%s/l%d", dir, i);
        symlink_rel(target, rel);
    }
}

/* Walks path with budget b; returns the result, closing what was opened. */
static beneath_result walk_budget(const beneath_root *r, const char *path, beneath_budget *b)
{
    int fd, eno;
    struct stat st;
    beneath_result res = beneath_walk(r, path, BENEATH_WANT_FILE, b, &fd, &st, NULL, &eno);
    if (fd >= 0)
        close(fd);
    return res;
}

/* The counts a walk reports are exact: one step per component (".", ".."
 * and names, link targets' included), one link per symlink followed, the
 * bytes parsed below the root. */
static void test_walk_counts(const beneath_root *r)
{
    char real[PATH_MAX], given[1024], p[PATH_MAX + 64];
    tpath(given, sizeof given, "root");
    CHECK(realpath(given, real) != NULL);
    snprintf(p, sizeof p, "%s/sub/./b.txt", real); /* the root's prefix is not parsed */
    struct {
        const char *path;
        beneath_result res;
        uint64_t steps, links, bytes;
    } cases[] = {
        {"sub/deep/c.txt", BENEATH_OK, 3, 0, 14},
        {"./sub//deep/../deep/./c.txt", BENEATH_OK, 7, 0, 27},
        {p, BENEATH_OK, 3, 0, 11},
        /* sub/chain -> in_rel -> ../a.txt: sub, chain, in_rel, .., a.txt */
        {"sub/chain", BENEATH_OK, 5, 2, 9 + 6 + 8},
        {"sub/nothing/x", BENEATH_MISSING, 2, 0, 13},
        {"../out/secret.txt", BENEATH_OUTSIDE, 1, 0, 17},
        {"", BENEATH_OK, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        beneath_budget b = {.credit = 1000};
        int fd, eno;
        struct stat st;
        beneath_result res =
            beneath_walk(r, cases[i].path, BENEATH_WANT_ANY, &b, &fd, &st, NULL, &eno);
        if (fd >= 0)
            close(fd);
        CHECKF(res == cases[i].res && b.used.walks == 1 && b.used.steps == cases[i].steps &&
                   b.used.links == cases[i].links && b.used.bytes == cases[i].bytes &&
                   b.credit == 1000 - cases[i].steps,
               "'%s': %s, %llu walks %llu steps %llu links %llu bytes, credit %llu; want %s "
               "%llu/%llu/%llu",
               cases[i].path, result_name(res), (unsigned long long)b.used.walks,
               (unsigned long long)b.used.steps, (unsigned long long)b.used.links,
               (unsigned long long)b.used.bytes, (unsigned long long)b.credit,
               result_name(cases[i].res), (unsigned long long)cases[i].steps,
               (unsigned long long)cases[i].links, (unsigned long long)cases[i].bytes);
    }
}

/* One walk is bounded: 40 chained links of 4 KB "d/../" each (64,000
 * components, ~80 ms of system calls before the bound) end after
 * BENEATH_MAX_STEPS steps; so do too many bytes of link targets, a path
 * over BENEATH_MAX_BYTES, and a symlink-free result of PATH_MAX or more. */
static void test_walk_bounds(const beneath_root *r)
{
    /* the reviewer's chain: (4000 - 3) / 5 pads + "l<i+1>", 40 links */
    make_chain("root/bomb", 40, "d/../", 799, "../a.txt");
    beneath_budget b = {.credit = UINT64_MAX / 2};
    beneath_result res = walk_budget(r, "bomb/l0", &b);
    CHECKF(res == BENEATH_TOO_LONG && b.used.steps == BENEATH_MAX_STEPS && b.used.links <= 1,
           "chain of 4 KB links: %s after %llu steps, %llu links", result_name(res),
           (unsigned long long)b.used.steps, (unsigned long long)b.used.links);
    char msg[600];
    vit_status s = walk_message(r, "bomb/l0", BENEATH_WANT_FILE, msg, sizeof msg);
    CHECKF(s == VIT_ERR_TOO_LARGE && strstr(msg, "item: the path takes too many steps"), "%s",
           msg);

    /* a chain that fits: fits, l0, then 39 * (24 + 1) + (24 + 2): 1,003 steps */
    make_chain("root/fits", 40, "d/../", 12, "../a.txt");
    b = (beneath_budget){.credit = UINT64_MAX / 2};
    res = walk_budget(r, "fits/l0", &b);
    CHECKF(res == BENEATH_OK && b.used.steps == 1003 && b.used.links == 40,
           "chain that fits: %s, %llu steps %llu links", result_name(res),
           (unsigned long long)b.used.steps, (unsigned long long)b.used.links);
    expect_walk(r, "fits/l0", BENEATH_WANT_FILE, BENEATH_OK, "a.txt", "alpha");

    /* links: 41 chained (cheap) links are a loop, exactly BENEATH_MAX_LINKS
     * = 40 (Linux's MAXSYMLINKS) are not; the 41st is refused unread */
    make_chain("root/c41", 41, "", 0, "../a.txt");
    b = (beneath_budget){.credit = UINT64_MAX / 2};
    res = walk_budget(r, "c41/l0", &b);
    CHECKF(res == BENEATH_LOOP && b.used.links == 41 && b.used.steps == 42,
           "41 links: %s, %llu links %llu steps", result_name(res),
           (unsigned long long)b.used.links, (unsigned long long)b.used.steps);
    b = (beneath_budget){.credit = UINT64_MAX / 2};
    res = walk_budget(r, "c41/l1", &b);
    CHECKF(res == BENEATH_OK && b.used.links == 40, "40 links: %s, %llu links", result_name(res),
           (unsigned long long)b.used.links);

    /* bytes: 5 links of 15 * (250-byte name + "/../") + next = 3,812 bytes each,
     * 31 steps each: the 5th splice passes 16,384 bytes long before 1,024 steps */
    char name[251], pad[260];
    memset(name, 'n', 250);
    name[250] = '\0';
    snprintf(pad, sizeof pad, "%s/../", name);
    char rel[600];
    snprintf(rel, sizeof rel, "root/wide/%s", name);
    mkdir_rel("root/wide");
    mkdir_rel(rel);
    make_chain("root/wide", 5, pad, 15, "../a.txt");
    b = (beneath_budget){.credit = UINT64_MAX / 2};
    res = walk_budget(r, "wide/l0", &b);
    CHECKF(res == BENEATH_TOO_LONG && b.used.bytes > BENEATH_MAX_BYTES && b.used.steps < 200 &&
               b.used.links == 5,
           "wide links: %s, %llu bytes %llu steps %llu links", result_name(res),
           (unsigned long long)b.used.bytes, (unsigned long long)b.used.steps,
           (unsigned long long)b.used.links);
    /* four of them fit: l1 -> ... -> l4, then ../a.txt */
    expect_walk(r, "wide/l1", BENEATH_WANT_FILE, BENEATH_OK, "a.txt", "alpha");

    /* a path given over BENEATH_MAX_BYTES is refused before any step */
    size_t big = BENEATH_MAX_BYTES + 1;
    char *longp = malloc(big + 1);
    CHECK(longp != NULL);
    if (longp) {
        for (size_t i = 0; i < big; i++)
            longp[i] = i % 2 ? '/' : 'x';
        longp[big - 1] = 'x';
        longp[big] = '\0';
        b = (beneath_budget){.credit = UINT64_MAX / 2};
        res = walk_budget(r, longp, &b);
        CHECKF(res == BENEATH_TOO_LONG && b.used.steps == 0, "long path: %s after %llu steps",
               result_name(res), (unsigned long long)b.used.steps);
        free(longp);
    }
}

/* A symlink-free result of PATH_MAX bytes or more is refused: 17 nested
 * directories of 250-byte names hold "f.txt" 4,272 bytes below the root
 * (made and removed by descriptor: the kernel refuses such paths whole). */
static void test_walk_long_result(const beneath_root *r)
{
    char name[251], top[1024];
    memset(name, 'q', 250);
    name[250] = '\0';
    tpath(top, sizeof top, "root");
    int fds[18], depth = 0;
    fds[0] = open(top, O_RDONLY | O_DIRECTORY);
    CHECK(fds[0] >= 0);
    for (; depth < 17 && fds[depth] >= 0; depth++) {
        CHECK(mkdirat(fds[depth], depth ? name : "tall", 0755) == 0);
        fds[depth + 1] = openat(fds[depth], depth ? name : "tall", O_RDONLY | O_DIRECTORY);
    }
    /* tall/ + 16 names: "tall/" 5 + 16 * 251 + "f.txt" = 4,026 bytes: fits */
    int f = openat(fds[depth], "f.txt", O_WRONLY | O_CREAT, 0644);
    CHECK(f >= 0 && write(f, "foxtrot", 7) == 7);
    close(f);
    char *path = malloc(8192);
    CHECK(path != NULL);
    if (path) {
        size_t o = (size_t)snprintf(path, 8192, "tall/");
        for (int i = 1; i < depth; i++)
            o += (size_t)snprintf(path + o, 8192 - o, "%s/", name);
        snprintf(path + o, 8192 - o, "f.txt");
        expect_walk(r, path, BENEATH_WANT_FILE, BENEATH_OK, path, "foxtrot");
        /* one level more: 4,277 bytes */
        CHECK(mkdirat(fds[depth], name, 0755) == 0);
        int deeper = openat(fds[depth], name, O_RDONLY | O_DIRECTORY);
        f = openat(deeper, "f.txt", O_WRONLY | O_CREAT, 0644);
        CHECK(deeper >= 0 && f >= 0);
        close(f);
        snprintf(path + o, 8192 - o, "%s/f.txt", name);
        expect_walk(r, path, BENEATH_WANT_FILE, BENEATH_TOO_LONG, NULL, NULL);
        CHECK(unlinkat(deeper, "f.txt", 0) == 0 && unlinkat(fds[depth], name, AT_REMOVEDIR) == 0);
        close(deeper);
        free(path);
    }
    CHECK(unlinkat(fds[depth], "f.txt", 0) == 0);
    for (; depth > 0; depth--) {
        close(fds[depth]);
        CHECK(unlinkat(fds[depth - 1], depth > 1 ? name : "tall", AT_REMOVEDIR) == 0);
    }
    close(fds[0]);
}

/* Walks sharing a budget take at most credit + walks * per_walk steps in
 * all: the chain of 1,003 steps that one walk may take cannot be repeated
 * for free (a manifest naming it on every line). */
static void test_walk_budget(const beneath_root *r)
{
    /* exact accounting: credit 0, 4 a walk; "sub/deep/c.txt" is 3 steps,
     * "sub/chain" 5 */
    beneath_budget b = {.credit = 0, .per_walk = 4};
    const char *paths[] = {"sub/deep/c.txt", "sub/chain", "sub/chain", "sub/chain"};
    /* 0+4-3 = 1; 1+4-5 = 0; 0+4: refused at the 5th step (4 taken); again */
    beneath_result want[] = {BENEATH_OK, BENEATH_OK, BENEATH_BUDGET, BENEATH_BUDGET};
    uint64_t credit_after[] = {1, 0, 0, 0}, steps_after[] = {3, 8, 12, 16};
    for (int i = 0; i < 4; i++) {
        beneath_result res = walk_budget(r, paths[i], &b);
        CHECKF(res == want[i] && b.credit == credit_after[i] && b.used.steps == steps_after[i] &&
                   b.used.walks == (uint64_t)i + 1,
               "walk %d '%s': %s, credit %llu, %llu steps", i, paths[i], result_name(res),
               (unsigned long long)b.credit, (unsigned long long)b.used.steps);
    }
    /* a short walk still goes through on its own share */
    CHECK(walk_budget(r, "a.txt", &b) == BENEATH_OK && b.credit == 3);

    /* 300 walks of the 1,003-step chain with a data set's budget: bounded by
     * credit + 32 per walk (4 x 1,003 + 244 + 295 x 32 = 4,096 + 300 x 32,
     * exactly), and refused once that is spent */
    b = (beneath_budget){.credit = 4096, .per_walk = 32};
    int ok = 0, refused = 0;
    for (int i = 0; i < 300; i++) {
        beneath_result res = walk_budget(r, "fits/l0", &b);
        ok += res == BENEATH_OK;
        refused += res == BENEATH_BUDGET;
    }
    CHECKF(b.used.walks == 300 && b.used.steps == 4096 + 32 * 300 && ok == 4 && refused == 296,
           "300 chain walks: %llu steps (bound %d), %d ok, %d refused",
           (unsigned long long)b.used.steps, 4096 + 32 * 300, ok, refused);
    /* credit saturates instead of wrapping */
    b.credit = UINT64_MAX - 1;
    CHECK(walk_budget(r, "fits/l0", &b) == BENEATH_OK && b.credit == UINT64_MAX - 1003);
    /* links followed have a budget of their own (when links_per_walk > 0):
     * "sub/chain" follows 2 (chain -> in_rel -> ../a.txt), "sub/in_rel" 1;
     * a link refused is not counted, and steps stay plentiful */
    b = (beneath_budget){.credit = UINT64_MAX / 2, .links_per_walk = 1};
    const char *lpaths[] = {"sub/chain", "sub/chain", "sub/in_rel", "sub/chain"};
    beneath_result lwant[] = {BENEATH_LINK_BUDGET, BENEATH_LINK_BUDGET, BENEATH_OK,
                              BENEATH_LINK_BUDGET};
    uint64_t links_after[] = {1, 2, 3, 4};
    for (int i = 0; i < 4; i++) {
        beneath_result res = walk_budget(r, lpaths[i], &b);
        CHECKF(res == lwant[i] && b.link_credit == 0 && b.used.links == links_after[i],
               "link walk %d '%s': %s, link credit %llu, %llu links", i, lpaths[i],
               result_name(res), (unsigned long long)b.link_credit,
               (unsigned long long)b.used.links);
    }
    b.link_credit = 1; /* 1 + 1: the chain goes through */
    CHECK(walk_budget(r, "sub/chain", &b) == BENEATH_OK && b.link_credit == 0 &&
          b.used.links == 6);
    /* links_per_walk 0: links are bounded per walk only, whatever link_credit */
    b = (beneath_budget){.credit = UINT64_MAX / 2};
    CHECK(walk_budget(r, "fits/l0", &b) == BENEATH_OK && b.used.links == 40 &&
          b.link_credit == 0);
    /* link credit saturates too */
    b = (beneath_budget){.credit = 4096, .link_credit = UINT64_MAX - 1, .links_per_walk = 2};
    CHECK(walk_budget(r, "fits/l0", &b) == BENEATH_OK && b.link_credit == UINT64_MAX - 40);
}

/* Reads stop at the cap, also when the size given (fstat's) is too small. */
static void test_read_capped(const beneath_root *r)
{
    char text[101];
    for (int i = 0; i < 100; i++)
        text[i] = (char)('a' + i % 26);
    text[100] = '\0';
    write_text("root/hundred.txt", text);
    struct {
        size_t hint, cap;
        vit_status code;
    } cases[] = {
        {100, 100, VIT_OK},          {100, 1000, VIT_OK},         {0, 100, VIT_OK},
        {500, 100, VIT_OK},          {100, 99, VIT_ERR_TOO_LARGE}, {0, 99, VIT_ERR_TOO_LARGE},
        {99, 99, VIT_ERR_TOO_LARGE}, {0, 0, VIT_ERR_TOO_LARGE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int fd = -1;
        struct stat st;
        vit_error err = {0};
        vit_status s = beneath_open(r, "hundred.txt", BENEATH_WANT_FILE, NULL, "hundred", &fd, &st,
                                    NULL, &err);
        CHECKF(s == VIT_OK, "%s", err.message);
        if (s != VIT_OK)
            continue;
        uint8_t *buf = (uint8_t *)"garbage";
        size_t len = 7;
        s = beneath_read_capped(fd, cases[i].hint, cases[i].cap, "hundred.txt", &buf, &len, &err);
        close(fd);
        CHECKF(s == cases[i].code, "hint %zu cap %zu: %s %s", cases[i].hint, cases[i].cap,
               vit_status_name(s), err.message);
        if (s == VIT_OK) {
            CHECKF(len == 100 && memcmp(buf, text, 100) == 0, "hint %zu cap %zu: %zu bytes",
                   cases[i].hint, cases[i].cap, len);
            free(buf);
        } else {
            char want[64];
            snprintf(want, sizeof want, "hundred.txt is over the limit of %zu bytes", cases[i].cap);
            CHECKF(buf == NULL && len == 0 && strcmp(err.message, want) == 0, "%s", err.message);
        }
    }
}

int main(void)
{
    alarm(60); /* a walk that blocks (on a FIFO) fails the test instead of hanging it */
    if (!test_scratch_create("beneath"))
        return 1;
    mkdir_rel("root");
    mkdir_rel("root/sub");
    mkdir_rel("root/sub/deep");
    mkdir_rel("out");
    mkdir_rel("out/sub");
    write_text("root/a.txt", "alpha");
    write_text("root/sub/b.txt", "bravo");
    write_text("root/sub/deep/c.txt", "charlie");
    write_text("out/secret.txt", "secret");
    write_text("out/sub/b.txt", "outside");

    test_root_open();
    char dir[1024];
    tpath(dir, sizeof dir, "root");
    beneath_root *r = open_root_ok(dir, "test root");
    if (r) {
        test_relative(r);
        test_dotdot(r);
        test_absolute_and_symlinks(r);
        test_swapped_directory(r);
        test_fifo(r);
        test_relative_of(r);
        test_error_table(r);
        test_read_capped(r);
        test_walk_counts(r);
        test_walk_bounds(r);
        test_walk_long_result(r);
        test_walk_budget(r);
        beneath_root_close(r);
    }
    test_slash_root();
    test_rm_tree(tmp_root);
    return check_result();
}
