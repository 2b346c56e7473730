/*
 * task_watch.c - the task directory watcher (task_watch.h).
 *
 * One thread polls two descriptors: the inotify descriptor (when there is
 * one) and the read end of a pipe that task_watch_stop writes to; the poll's
 * timeout is the time to the next rescan.  Every sync runs on this thread,
 * so the store's syncs never contend.
 */
#define _GNU_SOURCE /* inotify_init1's flags */
#include "task_watch.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

#define SUFFIX ".safetensors"
#define SUFFIX_LEN (sizeof SUFFIX - 1)

struct task_watch {
    task_watch_config cfg;
    char *dir;
    int ifd;                  /* inotify; -1: rescans only */
    int wd;                   /* the watch on dir; -1: none now (the directory went) */
    int parent_wd;            /* the watch on dir's parent, for dir's own name; -1: none */
    char *parent, *base;      /* dir's parent and last component */
    int said;                 /* the directory's state last logged: 0 usable, 1 missing,
                                 2 not usable */
    int wake[2];              /* task_watch_stop writes to wake[1] */
    pthread_t thread;
    atomic_long rescans, events;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void say(const task_watch *w, const char *msg, const char *detail)
{
    if (w->cfg.log)
        w->cfg.log(w->cfg.ctx, msg, detail);
}

/* task_store_sync's reports, as log lines. */
static void on_change(void *ctx, const char *name, task_store_change change, vit_status st,
                      const vit_error *err)
{
    const task_watch *w = ctx;
    char detail[sizeof err->message + 160];
    if (st != VIT_OK) {
        snprintf(detail, sizeof detail, "%s; requests for task '%s' fail until the file is "
                 "replaced", err ? err->message : vit_status_name(st), name);
        say(w, "task file not usable", detail);
        return;
    }
    static const char *const what[] = {"task added", "task replaced", "task removed"};
    snprintf(detail, sizeof detail, "'%s' (seen in the task directory)", name);
    say(w, what[change], detail);
}

#define PARENT_MASK (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ONLYDIR)
#define WATCH_MASK                                                                          \
    (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | \
     IN_ONLYDIR)

/* Watches the directory the path names now; false (errno set) when it cannot. */
static bool add_watch(task_watch *w)
{
    w->wd = w->ifd >= 0 ? inotify_add_watch(w->ifd, w->dir, WATCH_MASK) : -1;
    return w->wd >= 0;
}

/* Moves a watch to what path names now: inotify_add_watch gives the same
 * descriptor for the inode already watched, another for a new one (the
 * old is then dropped); -1 when it cannot watch (the path is gone). */
static int rewatch(task_watch *w, int wd, const char *path, uint32_t mask)
{
    int now = inotify_add_watch(w->ifd, path, mask);
    if (wd >= 0 && wd != now)
        inotify_rm_watch(w->ifd, wd);
    return now;
}

/* Watches the task directory (when it is there) and its parent as their
 * paths name them now.  A request's get or put may have switched the store
 * to a new directory before this thread heard of it, and the data dir
 * itself may have been made again: at every full sync, the watches are put
 * where the paths point. */
static void follow_watches(task_watch *w, bool dir_there)
{
    if (w->ifd < 0)
        return;
    w->parent_wd = rewatch(w, w->parent_wd, w->parent, PARENT_MASK);
    if (dir_there) {
        w->wd = rewatch(w, w->wd, w->dir, WATCH_MASK);
    } else if (w->wd >= 0) {
        inotify_rm_watch(w->ifd, w->wd);
        w->wd = -1;
    }
}

/* A full sync, after making sure the store reads the directory its path
 * names (task_store_reopen): an operator may have removed tasks/, moved it,
 * made it again or restored it, and both the store's descriptor and the
 * inotify watch would stay on the old one.  No directory is no tasks (the
 * sync drops them; an unusable one is not synced, and every request for a
 * task fails until it is mended); nothing here makes it again -- a put does, and an
 * operator restoring tasks/ must not find one made in its way. */
static void sync_all(task_watch *w)
{
    vit_error err = {0};
    bool reopened = false;
    vit_status st = task_store_reopen(w->cfg.store, false, &reopened, &err);
    int state = st == VIT_OK ? 0 : st == VIT_ERR_NOT_FOUND ? 1 : 2;
    if (state != w->said || reopened) { /* once per change: /readyz says it while it lasts */
        if (state == 0)
            say(w, "task directory reopened", w->dir);
        else if (state == 1)
            say(w, "task directory missing", "no tasks until it is there again (a PUT or a job "
                "makes it)");
        else
            say(w, "warning", err.message);
        w->said = state;
    }
    follow_watches(w, state == 0);
    if (state != 2 && task_store_sync(w->cfg.store, NULL, on_change, w, &err) != VIT_OK)
        say(w, "warning", err.message);
    atomic_fetch_add(&w->rescans, 1);
}

/* A change notification for directory entry `file`: the name it is about,
 * synced when it is a task file's. */
static void sync_file(task_watch *w, const char *file)
{
    size_t n = strlen(file);
    char name[TASK_NAME_MAX + 1];
    if (n <= SUFFIX_LEN || n - SUFFIX_LEN > TASK_NAME_MAX ||
        strcmp(file + n - SUFFIX_LEN, SUFFIX) != 0)
        return; /* temporary files and everything else */
    memcpy(name, file, n - SUFFIX_LEN);
    name[n - SUFFIX_LEN] = '\0';
    if (!task_name_valid(name))
        return;
    vit_error err = {0};
    if (task_store_sync(w->cfg.store, name, on_change, w, &err) != VIT_OK)
        say(w, "warning", err.message);
    atomic_fetch_add(&w->events, 1);
}

/* Reads every pending inotify event; returns whether a full sync is due (the
 * queue overflowed, or the watch ended). */
static bool drain_events(task_watch *w)
{
    bool full = false;
    /* aligned as the events in it must be */
    char buf[16 * (sizeof(struct inotify_event) + NAME_MAX + 1)]
        __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(w->ifd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *e = (const struct inotify_event *)p;
            p += sizeof *e + e->len;
            if (e->mask & IN_Q_OVERFLOW) {
                full = true;
            } else if (e->wd == w->parent_wd && w->parent_wd >= 0) {
                if (e->mask & IN_IGNORED)
                    w->parent_wd = -1;
                else if (e->len > 0 && strcmp(e->name, w->base) == 0)
                    full = true; /* the directory itself made, removed or renamed */
            } else if (e->wd != w->wd || w->wd < 0) {
                continue; /* a directory left behind: its last events */
            } else if (e->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF)) {
                if (e->mask & IN_MOVE_SELF) /* still exists elsewhere: stop watching it */
                    inotify_rm_watch(w->ifd, w->wd);
                w->wd = -1;
                full = true;
            } else if (e->len > 0) {
                sync_file(w, e->name);
            }
        }
    }
    return full;
}

static void *watch_thread(void *arg)
{
    task_watch *w = arg;
    double period = w->cfg.rescan_ms * 1e-3, next = now_s() + period;
    for (;;) {
        struct pollfd fds[2] = {{.fd = w->wake[0], .events = POLLIN},
                                {.fd = w->ifd, .events = POLLIN}};
        double left = next - now_s();
        int timeout = left <= 0 ? 0 : (int)(left * 1e3) + 1;
        int rc = poll(fds, w->ifd >= 0 ? 2 : 1, timeout);
        if (rc < 0 && errno != EINTR)
            break;
        if (rc > 0 && fds[0].revents)
            break; /* task_watch_stop */
        bool full = rc > 0 && w->ifd >= 0 && fds[1].revents && drain_events(w);
        if (full || now_s() >= next) {
            sync_all(w);
            next = now_s() + period;
        }
    }
    return NULL;
}

/* w->parent and w->base from w->dir ("data/tasks/" -> "data", "tasks"). */
static int split_path(task_watch *w)
{
    size_t n = strlen(w->dir);
    while (n > 1 && w->dir[n - 1] == '/')
        n--;
    size_t slash = n;
    while (slash > 0 && w->dir[slash - 1] != '/')
        slash--;
    w->base = strndup(w->dir + slash, n - slash);
    w->parent = slash == 0 ? strdup(".") : slash == 1 ? strdup("/") : strndup(w->dir, slash - 1);
    return w->base && w->parent ? 0 : -1;
}

static void free_paths(task_watch *w)
{
    free(w->dir);
    free(w->parent);
    free(w->base);
}

/* Closes what w holds (no thread running) and frees it. */
static void watch_free(task_watch *w)
{
    if (w->ifd >= 0)
        close(w->ifd);
    close(w->wake[0]);
    close(w->wake[1]);
    free_paths(w);
    free(w);
}

vit_status task_watch_start(const task_watch_config *c, task_watch **out, vit_error *err)
{
    *out = NULL;
    VIT_ASSERT(c->store && c->dir && c->rescan_ms >= 1);
    task_watch *w = calloc(1, sizeof *w);
    if (!w || !(w->dir = strdup(c->dir)) || split_path(w) != 0) {
        if (w)
            free_paths(w);
        free(w);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    }
    w->cfg = *c;
    w->cfg.dir = w->dir;
    w->ifd = w->wd = w->parent_wd = -1;
    w->wake[0] = w->wake[1] = -1;
    atomic_init(&w->rescans, 0);
    atomic_init(&w->events, 0);
    if (pipe2(w->wake, O_CLOEXEC) != 0) {
        vit_error_set(err, VIT_ERR_IO, "cannot make the task watcher's pipe: %s",
                      strerror(errno));
        free_paths(w);
        free(w);
        return VIT_ERR_IO;
    }
    /* inotify first, then the baseline: a change in between is seen twice,
     * never missed */
    if (!c->no_inotify) {
        w->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (!add_watch(w)) {
            char why[300];
            snprintf(why, sizeof why, "no inotify watch on %s (%s): task changes are found by "
                     "rescans only, every task_reload_ms", c->dir, strerror(errno));
            say(w, "warning", why);
            if (w->ifd >= 0 && errno != ENOSPC) { /* out of watches may pass: retried */
                close(w->ifd);
                w->ifd = -1;
            }
        }
        /* the directory's own removal, renaming or making again is an event
         * of its parent (its IN_DELETE_SELF waits for the store's
         * descriptor to close); without it the rescans find them */
        if (w->ifd >= 0)
            w->parent_wd = inotify_add_watch(w->ifd, w->parent, PARENT_MASK);
    }
    vit_status st = task_store_sync(c->store, NULL, NULL, NULL, err);
    int rc = st == VIT_OK ? pthread_create(&w->thread, NULL, watch_thread, w) : 0;
    if (st == VIT_OK && rc != 0)
        st = vit_error_set(err, VIT_ERR_IO, "cannot start the task watcher: %s", strerror(rc));
    if (st != VIT_OK) {
        watch_free(w);
        return st;
    }
    *out = w;
    return VIT_OK;
}

void task_watch_stop(task_watch *w)
{
    if (!w)
        return;
    char b = 1;
    while (write(w->wake[1], &b, 1) < 0 && errno == EINTR)
        ;
    pthread_join(w->thread, NULL);
    watch_free(w);
}

void task_watch_counts(task_watch *w, long *rescans, long *events)
{
    *rescans = atomic_load(&w->rescans);
    *events = atomic_load(&w->events);
}
