/*
 * test_task_watch.c - the task directory watcher (server/task_watch.h): two
 * task stores on one directory stand for two replicas; A writes, B is
 * watched, and what B serves must follow A's writes.
 *
 *  1. inotify (the rescan set to 10 minutes, so only a notification can
 *     do it): a task B has resident, replaced by A, is served in its new
 *     version by B; removed by A, B answers NOT_FOUND; a file of another
 *     backbone moved in is logged as not usable (and B refuses it); a
 *     temporary file is never mentioned.  Every wait is bounded (10 s) and
 *     the time each change took is printed.
 *  2. rescans only (no inotify, as on a network file system; every 100 ms):
 *     the same replacement and removal are seen, by rescans (no event
 *     counted).
 *  3. the baseline: files there before the watcher started are not
 *     reported.
 *  4. the directory replaced: the store on its own (no watcher: each step
 *     checked as it happens) -- the path renamed away and made again: the
 *     store follows it, and a put lands in the directory the path names;
 *     removed: no tasks, no directory made by gets, lists, deletes or
 *     syncs, until a put makes it; a plain file there, a dangling symlink,
 *     or the data dir itself gone: not usable, puts fail.  Then the watcher (inotify, rescans every 300 ms): tasks/
 *     renamed away and made again with a new version of a task B holds
 *     resident, and B serves the new version; removed, and its task goes
 *     at once (the parent's event) and nothing makes it again; moved back,
 *     and the task is served again.
 */
#define _GNU_SOURCE /* mkdtemp */
#include "task_watch.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

#define WAIT_MS 10000

static char root[] = "/tmp/vitfit-test-task-watch-XXXXXX";
static vit_model *model, *other;
static char fp[65];

/* ---- the log ---- */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_text[16384];

static void on_log(void *ctx, const char *msg, const char *detail)
{
    (void)ctx;
    pthread_mutex_lock(&log_lock);
    size_t n = strlen(log_text);
    snprintf(log_text + n, sizeof log_text - n, "%s: %s\n", msg, detail ? detail : "");
    pthread_mutex_unlock(&log_lock);
    fprintf(stderr, "    log: %s: %s\n", msg, detail ? detail : "");
}

static bool log_has(const char *needle)
{
    pthread_mutex_lock(&log_lock);
    bool yes = strstr(log_text, needle) != NULL;
    pthread_mutex_unlock(&log_lock);
    return yes;
}

static void log_clear(void)
{
    pthread_mutex_lock(&log_lock);
    log_text[0] = '\0';
    pthread_mutex_unlock(&log_lock);
}

/* ---- tasks ---- */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A task file for m at path whose labels say version v ("v<v>-<i>"). */
static void save_version(const vit_model *m, int v, const char *path)
{
    char l0[32], l1[32];
    snprintf(l0, sizeof l0, "v%d-0", v);
    snprintf(l1, sizeof l1, "v%d-1", v);
    const char *labels[] = {l0, l1};
    vit_task *t;
    vit_error err;
    VIT_ASSERT(task_create(m, 2, labels, &t, &err) == VIT_OK);
    VIT_ASSERT(task_save(m, t, NULL, path, &err) == VIT_OK);
    task_free(t);
}

/* A puts version v of name (as a replica's PUT does: tmp + rename). */
static void put_version(task_store *a, const char *name, int v)
{
    char path[512];
    snprintf(path, sizeof path, "%s/scratch.safetensors", root);
    save_version(model, v, path);
    FILE *f = fopen(path, "rb");
    VIT_ASSERT(f && fseek(f, 0, SEEK_END) == 0);
    long n = ftell(f);
    VIT_ASSERT(n > 0 && fseek(f, 0, SEEK_SET) == 0);
    char *buf = malloc((size_t)n);
    VIT_ASSERT(buf && fread(buf, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    vit_error err;
    VIT_ASSERT(task_store_put(a, name, buf, (size_t)n, NULL, &err) == VIT_OK);
    free(buf);
}

/* The version B serves for name: v, or -1 for NOT_FOUND, -2 for another error. */
static int served(task_store *s, const char *name)
{
    vit_task *t = NULL;
    vit_error err;
    vit_status st = task_store_get(s, name, &t, &err);
    if (st != VIT_OK)
        return st == VIT_ERR_NOT_FOUND ? -1 : -2;
    int v = -3;
    sscanf(t->labels[0], "v%d-", &v);
    task_free(t);
    return v;
}

/* Waits until s serves `want` for name (bounded); true when it did.
 * Prints how long it took. */
static bool wait_served(const char *what, task_store *s, const char *name, int want)
{
    double t0 = now_ms();
    int got;
    while ((got = served(s, name)) != want && now_ms() - t0 < WAIT_MS)
        sleep_ms(2);
    fprintf(stderr, "  %-44s %s after %.1f ms\n", what, got == want ? "seen" : "NOT seen",
            now_ms() - t0);
    CHECKF(got == want, "%s: B serves %d, want %d after %d ms", what, got, want, WAIT_MS);
    return got == want;
}

static bool wait_log(const char *what, const char *needle)
{
    double t0 = now_ms();
    while (!log_has(needle) && now_ms() - t0 < WAIT_MS)
        sleep_ms(2);
    CHECKF(log_has(needle), "%s: no log line with \"%s\" after %d ms", what, needle, WAIT_MS);
    return log_has(needle);
}

static task_store *open_store(const char *dir)
{
    task_store *s;
    vit_error err;
    VIT_ASSERT(task_store_open(model, fp, dir, 1 << 20, &s, &err) == VIT_OK);
    return s;
}

static task_watch *watch(task_store *s, const char *dir, int rescan_ms, bool no_inotify)
{
    task_watch_config c = {.store = s, .dir = dir, .rescan_ms = rescan_ms,
                           .no_inotify = no_inotify, .log = on_log};
    task_watch *w;
    vit_error err;
    VIT_ASSERT(task_watch_start(&c, &w, &err) == VIT_OK);
    return w;
}

/* ---- 1. inotify ---- */

static void test_inotify(const char *dir)
{
    fprintf(stderr, "inotify (rescans every 10 minutes)\n");
    task_store *a = open_store(dir), *b = open_store(dir);
    task_watch *w = watch(b, dir, 600000, false);
    put_version(a, "t", 1);
    wait_served("added by A", b, "t", 1);
    put_version(a, "t", 2);
    wait_served("replaced by A, resident in B", b, "t", 2);
    wait_log("the replacement", "task replaced: 't'");
    CHECK(served(b, "t") == 2);
    vit_error err;
    VIT_ASSERT(task_store_delete(a, "t", &err) == VIT_OK);
    wait_served("removed by A", b, "t", -1);

    /* a temporary file, then another backbone's task moved in */
    char tmp[512], dest[512];
    snprintf(tmp, sizeof tmp, "%s/.tmp-alien-abc123", dir);
    save_version(other, 1, tmp);
    snprintf(dest, sizeof dest, "%s/alien.safetensors", dir);
    VIT_ASSERT(rename(tmp, dest) == 0);
    wait_log("another backbone's file", "task 'alien'");
    CHECKF(log_has("task file not usable") && log_has("made for backbone"),
           "the log does not say why alien is not usable");
    CHECK(served(b, "alien") == -2);
    CHECKF(!log_has(".tmp") && !log_has("tmp-alien"), "a temporary file was logged");
    long rescans, events;
    task_watch_counts(w, &rescans, &events);
    CHECKF(rescans == 0 && events > 0, "%ld rescans and %ld events: inotify did not do it",
           rescans, events);
    task_watch_stop(w);
    task_store_close(a);
    task_store_close(b);
}

/* ---- 2. rescans only ---- */

static void test_rescans(const char *dir)
{
    fprintf(stderr, "rescans only (every 100 ms, no inotify)\n");
    task_store *a = open_store(dir), *b = open_store(dir);
    put_version(a, "r", 1);
    task_watch *w = watch(b, dir, 100, true);
    CHECK(served(b, "r") == 1);
    put_version(a, "r", 2);
    wait_served("replaced by A, resident in B", b, "r", 2);
    vit_error err;
    VIT_ASSERT(task_store_delete(a, "r", &err) == VIT_OK);
    wait_served("removed by A", b, "r", -1);
    long rescans, events;
    task_watch_counts(w, &rescans, &events);
    CHECKF(rescans > 0 && events == 0, "%ld rescans and %ld events", rescans, events);
    task_watch_stop(w);
    task_store_close(a);
    task_store_close(b);
}

/* ---- 3. the baseline ---- */

static void test_baseline(const char *dir)
{
    fprintf(stderr, "the baseline\n");
    task_store *b = open_store(dir);
    log_clear();
    task_watch *w = watch(b, dir, 50, false);
    sleep_ms(300); /* several rescans */
    CHECKF(!log_has("alien"), "a file there before the start was reported");
    task_watch_stop(w);
    task_store_close(b);
}

/* ---- 4. the directory replaced ---- */

static bool is_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* A store on dir serving version v of name, resident. */
static task_store *store_serving(const char *dir, const char *name, int v)
{
    task_store *s = open_store(dir);
    put_version(s, name, v);
    CHECK(served(s, name) == v);
    return s;
}

static void test_reopen(const char *dir)
{
    fprintf(stderr, "the directory replaced (the store on its own)\n");
    char away[512], path[600], cmd[1800];
    snprintf(away, sizeof away, "%s-away", dir);
    task_store *b = store_serving(dir, "d", 1);
    bool reopened = true;
    vit_error err;
    CHECK(task_store_reopen(b, false, &reopened, &err) == VIT_OK && !reopened);

    /* moved away, made again with another version: the store follows the path */
    VIT_ASSERT(rename(dir, away) == 0 && mkdir(dir, 0755) == 0);
    snprintf(path, sizeof path, "%s/d.safetensors", dir);
    save_version(model, 2, path);
    CHECKF(task_store_reopen(b, false, &reopened, &err) == VIT_OK && reopened,
           "a directory made again under the path: not reopened");
    CHECK(task_store_dir_usable(b));
    VIT_ASSERT(task_store_sync(b, NULL, NULL, NULL, &err) == VIT_OK);
    CHECKF(served(b, "d") == 2, "after the reopen B serves %d, want 2", served(b, "d"));

    /* a put follows the path by itself (no reopen asked first) */
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mv '%s' '%s'", away, dir, away);
    VIT_ASSERT(system(cmd) == 0 && mkdir(dir, 0755) == 0);
    put_version(b, "e", 3);
    snprintf(path, sizeof path, "%s/e.safetensors", dir);
    CHECKF(is_file(path), "a put after the directory was replaced did not land in the new one");

    /* removed: no tasks (once a sync drops the resident ones), and nothing
     * makes the directory again but a put */
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", dir, away);
    VIT_ASSERT(system(cmd) == 0);
    CHECK(task_store_reopen(b, false, &reopened, &err) == VIT_ERR_NOT_FOUND);
    CHECKF(task_store_dir_usable(b), "a missing directory is not a broken one");
    VIT_ASSERT(task_store_sync(b, NULL, NULL, NULL, &err) == VIT_OK);
    CHECKF(served(b, "d") == -1 && served(b, "e") == -1, "tasks of a removed directory served");
    task_store_entry *list = NULL;
    size_t n = 9;
    CHECK(task_store_list(b, &list, &n, &err) == VIT_OK && n == 0);
    free(list);
    CHECK(task_store_delete(b, "d", &err) == VIT_ERR_NOT_FOUND);
    struct stat sb;
    CHECKF(stat(dir, &sb) != 0, "made again by a get, list, delete or sync");
    put_version(b, "f", 4);
    CHECKF(stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode) && served(b, "f") == 4,
           "a put did not make the directory again");

    /* the path a plain file: not usable, whatever create says; puts fail */
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    VIT_ASSERT(system(cmd) == 0);
    FILE *f = fopen(dir, "w");
    VIT_ASSERT(f && fclose(f) == 0);
    CHECK(task_store_reopen(b, true, &reopened, &err) == VIT_ERR_IO);
    CHECK(!task_store_dir_usable(b));
    CHECK(task_store_put(b, "g", "x", 1, NULL, &err) == VIT_ERR_IO);
    CHECK(served(b, "d") == -2); /* an error, not "no such task" */
    VIT_ASSERT(unlink(dir) == 0);
    /* missing in a way no put can mend: a dangling symlink, a parent gone */
    VIT_ASSERT(symlink("nowhere", dir) == 0);
    CHECK(task_store_reopen(b, false, &reopened, &err) == VIT_ERR_IO);
    CHECK(!task_store_dir_usable(b));
    CHECK(task_store_put(b, "g", "x", 1, NULL, &err) == VIT_ERR_IO);
    VIT_ASSERT(unlink(dir) == 0 && mkdir(dir, 0755) == 0);
    CHECK(task_store_reopen(b, false, &reopened, &err) == VIT_OK && task_store_dir_usable(b));
    task_store_close(b);

    char data[700], sub[760];
    snprintf(data, sizeof data, "%s-data", dir);
    snprintf(sub, sizeof sub, "%s/tasks", data);
    VIT_ASSERT(mkdir(data, 0755) == 0);
    task_store *c = open_store(sub);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", data);
    VIT_ASSERT(system(cmd) == 0);
    CHECK(task_store_reopen(c, false, &reopened, &err) == VIT_ERR_IO);
    CHECKF(!task_store_dir_usable(c), "the data dir gone: usable");
    CHECK(task_store_put(c, "g", "x", 1, NULL, &err) == VIT_ERR_IO);
    task_store_close(c);
}

static void test_dir_replaced(const char *dir)
{
    fprintf(stderr, "the directory replaced (the watcher, inotify, rescans every 300 ms)\n");
    char away[512], path[600], cmd[1800];
    snprintf(away, sizeof away, "%s-away", dir);
    snprintf(path, sizeof path, "%s/w.safetensors", dir);
    task_store *b = store_serving(dir, "w", 1);
    log_clear();
    task_watch *w = watch(b, dir, 300, false);
    VIT_ASSERT(rename(dir, away) == 0 && mkdir(dir, 0755) == 0);
    save_version(model, 2, path);
    wait_served("tasks/ made again with a new version", b, "w", 2);
    wait_log("the reopen", "task directory reopened");
    /* and the new directory is watched: a change is seen by inotify */
    long rescans0, events0, rescans, events;
    task_watch_counts(w, &rescans0, &events0);
    save_version(model, 3, path);
    wait_served("then replaced in the new directory", b, "w", 3);
    /* counted after its sync returns, which may be after B serves v3 */
    for (double t0 = now_ms();; sleep_ms(2)) {
        task_watch_counts(w, &rescans, &events);
        if (events > events0 || now_ms() - t0 > WAIT_MS)
            break;
    }
    CHECKF(events > events0, "the new directory is not watched (no event after the reopen)");

    /* removed (held open by the store, so only its parent tells): its task
     * goes at once, and the watcher does not make the directory again */
    log_clear();
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    VIT_ASSERT(system(cmd) == 0);
    wait_served("tasks/ removed", b, "w", -1);
    wait_log("the removal", "task directory missing");
    sleep_ms(700); /* two rescans */
    struct stat sb;
    CHECKF(stat(dir, &sb) != 0, "the watcher made tasks/ again");
    /* restored (moved back): seen at once, through the parent */
    VIT_ASSERT(rename(away, dir) == 0);
    wait_served("tasks/ moved back", b, "w", 1);
    wait_log("the return", "task directory reopened");
    task_watch_stop(w);
    task_store_close(b);
}

int main(void)
{
    VIT_ASSERT(mkdtemp(root));
    vit_config cfg;
    vit_error err;
    VIT_ASSERT(vit_config_preset("vit-tiny", &cfg, &err) == VIT_OK);
    cfg.depth = 1;
    VIT_ASSERT(vit_model_create(&cfg, &model, &err) == VIT_OK);
    VIT_ASSERT(vit_model_create(&cfg, &other, &err) == VIT_OK);
    vit_model_randomize(model, 1);
    vit_model_randomize(other, 2);
    VIT_ASSERT(vit_model_fingerprint(model, fp, &err) == VIT_OK);

    char dir[400];
    snprintf(dir, sizeof dir, "%s/tasks", root);
    VIT_ASSERT(mkdir(dir, 0755) == 0);
    test_inotify(dir);
    test_rescans(dir);
    test_baseline(dir);
    test_reopen(dir);
    test_dir_replaced(dir);

    vit_model_free(model);
    vit_model_free(other);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    VIT_ASSERT(system(cmd) == 0);
    return check_result();
}
