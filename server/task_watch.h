/*
 * task_watch.h - keeps this process's task store in step with the task
 * directory that other replicas (and operators) write to.
 *
 * A thread that calls task_store_sync: for one name as soon as inotify tells
 * of a change to <name>.safetensors in the directory (a rename into it, a
 * file closed after writing, a removal), and for the whole directory every
 * rescan_ms -- inotify sees only what this machine does, so on a network
 * file system (NFS, CephFS, ...) other hosts' changes arrive by the rescan,
 * within rescan_ms.  Temporary files (".tmp-<name>-XXXXXX") are not task
 * files and are never looked at; each added or replaced file is checked by
 * the store (task_store_sync) and one that does not load -- another
 * backbone's, a corrupt or truncated one -- is logged, and its requests fail
 * with the reason until it is replaced; it never takes down the server or
 * serves part of a task.
 *
 * The directory itself may be removed, moved away, made again or restored
 * (an operator's "rm -rf tasks", a backup put back): the store follows its
 * path (task_store.h, "The directory"), and the watcher watches the parent
 * for the directory's own name, so such a change is seen at once, not at
 * the next rescan -- a missing directory drops every task; nothing here
 * makes it again (a put does).
 *
 * The directory as it is at task_watch_start is the baseline: files that
 * were there are not reported (nor checked: a get says what is wrong with
 * one).
 */
#ifndef VIT_SERVER_TASK_WATCH_H
#define VIT_SERVER_TASK_WATCH_H

#include <stdbool.h>

#include "status.h"
#include "task_store.h"

typedef struct task_watch task_watch;

typedef struct task_watch_config {
    task_store *store;
    const char *dir;             /* the store's directory, for inotify */
    int rescan_ms;               /* a full sync at least this often (task_reload_ms), >= 1 */
    bool no_inotify;             /* rescans only, as on a network file system (tests) */
    /* one line per change (may be NULL): msg a short phrase, detail may be NULL */
    void (*log)(void *ctx, const char *msg, const char *detail);
    void *ctx;
} task_watch_config;

/* Takes the baseline (one sync) and starts the thread.  Without inotify (no
 * watch could be added) it logs why and relies on the rescans.  Errors:
 * VIT_ERR_IO (the directory does not read, no thread), VIT_ERR_NOMEM. */
vit_status task_watch_start(const task_watch_config *c, task_watch **out, vit_error *err);

/* Stops the thread and frees w; NULL is a no-op. */
void task_watch_stop(task_watch *w);

/* Syncs done since start (the baseline not counted): whole-directory and
 * single-name ones.  For tests and logs. */
void task_watch_counts(task_watch *w, long *rescans, long *events);

#endif
