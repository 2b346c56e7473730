/*
 * task_store.h - the runtime task registry: tasks on disk, loaded on demand,
 * bounded in memory, replaced and removed while requests use them.
 *
 * A store sits over one directory (<data_dir>/tasks) of task files,
 * <name>.safetensors, made for one backbone.  Nothing is read at open: a task
 * is loaded on its first task_store_get and stays resident until it is
 * evicted, replaced or deleted.  Every get hands out a reference of its own
 * (vit_task is reference-counted), so a caller keeps the version it got for
 * as long as it needs it, whatever happens to the store meanwhile.
 *
 * Memory: memory_bytes bounds the resident tasks (task_store_task_bytes
 * each).  A load makes room by evicting the least recently used *idle*
 * resident tasks (those no caller holds a reference to); a task in flight is
 * never evicted, so while callers hold many references the resident bytes may
 * exceed the bound -- the excess is evicted as soon as those tasks are idle
 * again, at the next get that finds the store over its bound.  Not counted:
 * tasks being loaded (each is counted once it is in), and old versions still
 * held by callers after a put or delete (they are no longer resident).
 *
 * Files are untrusted.  A name must pass task_name_valid before it touches a
 * path; files are opened with openat(O_NOFOLLOW | O_NONBLOCK) relative to the
 * directory's descriptor and must be regular files (checked before the open
 * and again on the descriptor), then go through task_load_memory's checks.
 * Symbolic links are never followed: a symlinked <name>.safetensors is
 * refused by get and metadata (VIT_ERR_INVALID), left out of list, and
 * removed (the link, never its target) by delete or replaced by put.
 *
 * The directory: the store follows its path, not the directory it first
 * opened.  An operator may remove tasks/, move it away, make it again or
 * restore it from a backup, and several replicas share it, so every call
 * that reads or writes the directory (a get that loads, put, delete, list,
 * sync) first makes sure it uses the directory the path names now, and
 * switches when it is another (a symlink at the path is followed there, as
 * at open).  No path means no tasks: gets and deletes answer NOT_FOUND, the
 * list is empty, a sync drops every resident task, and a put makes the
 * directory again -- unless no put could (a dangling symlink at the path,
 * the parent gone): that, like a path naming a file, is an unusable
 * directory, and every call that needs it fails with VIT_ERR_IO.  A put renames into its directory only while the path
 * still names it, so a task it reports stored is in the directory the path
 * names.
 *
 * Concurrency: one mutex guards the table of resident and loading tasks; no
 * file is read or written while it is held.  A get that finds its task being
 * loaded by another thread waits for that load (one load per task at a time)
 * and shares its outcome.  put and delete change the directory first, then
 * drop the resident copy and mark a load in progress as stale, so a get that
 * begins after they return never sees the old version; gets running
 * alongside them may return either.  puts and deletes are serialised among
 * themselves (a second mutex, never held by get) only around the rename or
 * unlink, so *created and NOT_FOUND are exact.
 *
 * Other writers: several processes (replicas) may share the directory, and
 * an operator may copy files in.  A resident task is served without looking
 * at the disk, so what another process did is seen at the next
 * task_store_sync: it drops every resident task whose file is no longer the
 * one it was loaded from (another device, inode, size, mtime or ctime) and
 * checks each added or replaced file.  Tasks not resident are read from the
 * directory as it is at their next get anyway.
 *
 * No global state; no HTTP.  The store does not own the model: m must
 * outlive it (and every task taken from it).
 */
#ifndef VIT_TASK_STORE_H
#define VIT_TASK_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "task.h"
#include "vit.h"

typedef struct task_store task_store;

/* Opens the store over dir (created 0755 when missing; its parent must exist)
 * for backbone m, whose vit_model_fingerprint is `fingerprint` (64 hex
 * digits; copied).  memory_bytes (> 0) bounds the resident tasks.  Nothing is
 * loaded.  Errors: VIT_ERR_INVALID (bad fingerprint, memory_bytes 0, dir not a
 * directory), VIT_ERR_NOT_FOUND (dir's parent missing), VIT_ERR_IO,
 * VIT_ERR_NOMEM.  Close with task_store_close. */
vit_status task_store_open(const vit_model *m, const char *fingerprint, const char *dir,
                           size_t memory_bytes, task_store **out, vit_error *err);

/* Drops the store's references and frees it; NULL is a no-op.  No call on s
 * may be in progress; references callers took stay valid (task_free them). */
void task_store_close(task_store *s);

/* A new reference to task `name` (caller task_free()s it): the resident one,
 * else loaded from <dir>/<name>.safetensors, evicting idle tasks (least
 * recently used first) until it fits.  Errors: VIT_ERR_INVALID (bad name, a
 * symlink or a non-regular file), VIT_ERR_NOT_FOUND (no such file),
 * VIT_ERR_MISMATCH (made for another backbone), VIT_ERR_TOO_LARGE (the task
 * alone is over memory_bytes), and whatever task_load says of a corrupt file.
 * Threads asking for a task another thread is loading wait for that load and
 * get its task or its error. */
vit_status task_store_get(task_store *s, const char *name, vit_task **out, vit_error *err);

/* Stores bytes[0..len) as task `name`: written to a temporary file in the
 * directory (".tmp-<name>-XXXXXX"), fsynced, loaded and checked like a get
 * would (for this backbone; not larger than memory_bytes), then renamed to
 * <name>.safetensors and the directory fsynced.  The next get returns the new
 * version (it is loaded then: put does not make it resident); references
 * already taken keep the old one.  On failure nothing is left in the
 * directory and the old version stays live -- but for a failed fsync of the
 * directory after the rename (VIT_ERR_IO "stored ... but cannot sync"): the
 * new version is then in place and live.  *created (may be NULL): no task
 * file of that name existed (a symlink there is not one).  Errors as get's,
 * plus VIT_ERR_IO for the writes. */
vit_status task_store_put(task_store *s, const char *name, const void *bytes, size_t len,
                          bool *created, vit_error *err);

/* Whether the directory holds an entry <name>.safetensors of any kind (a
 * symlink or directory there counts: a put would replace it). */
bool task_store_exists(task_store *s, const char *name);

/* Removes <name>.safetensors (a symlink there: the link) and drops the
 * resident copy; references already taken finish on it.  VIT_ERR_NOT_FOUND
 * when there is none, VIT_ERR_INVALID for a bad name or a non-regular file
 * (a directory, a FIFO), VIT_ERR_IO. */
vit_status task_store_delete(task_store *s, const char *name, vit_error *err);

/* One task file of the directory. */
typedef struct task_store_entry {
    char name[TASK_NAME_MAX + 1];
    uint64_t file_bytes;   /* size of <name>.safetensors */
    bool resident;         /* loaded now */
    size_t resident_bytes; /* task_store_task_bytes when resident, else 0 */
} task_store_entry;

/* The task files of the directory, sorted by name: regular files named
 * <name>.safetensors with a valid name; temporary files, symlinks, other
 * kinds of file and bad names are left out.  Files are not opened (a listed
 * one may still fail to load).  *out is malloc'd (caller frees; NULL when
 * *n is 0).  Errors: VIT_ERR_IO, VIT_ERR_NOMEM. */
vit_status task_store_list(task_store *s, task_store_entry **out, size_t *n, vit_error *err);

/* The __metadata__ of task file `name` as read from its safetensors header
 * (checked as a task file's header is; tensors are not read): *kv is a
 * NULL-terminated array key0, value0, key1, value1, ..., NULL in one
 * allocation (caller free()s *kv only), in the header's order.  *file_bytes
 * (may be NULL) gets the file's size.  Errors as get's but for MISMATCH and
 * TOO_LARGE of the task (the backbone is not checked here). */
vit_status task_store_metadata(task_store *s, const char *name, char ***kv,
                               uint64_t *file_bytes, vit_error *err);

/* What task_store_sync saw happen to one task file since the last sync. */
typedef enum task_store_change {
    TASK_STORE_ADDED,     /* a file of that name appeared (at the first sync: every file) */
    TASK_STORE_REPLACED,  /* another file is there now, or the same one changed */
    TASK_STORE_REMOVED,   /* the file went (or is no longer a regular file) */
} task_store_change;

/* One report of task_store_sync.  For ADDED and REPLACED, st and err say
 * whether the file loads as a task of this backbone (the checks of get:
 * format, fingerprint, shapes, values, the memory bound); for REMOVED, st
 * is VIT_OK.  err is NULL when st is VIT_OK. */
typedef void (*task_store_sync_fn)(void *ctx, const char *name, task_store_change change,
                                   vit_status st, const vit_error *err);

/* Brings the store in step with the directory as others changed it (see
 * the top): lists it (name NULL) or looks at <name>.safetensors only (a
 * valid name, e.g. from a change notification), compares what it finds with
 * what the previous sync found, and
 *   - drops every resident task (of that name) whose file changed or went,
 *     and marks loads in progress of a changed name stale -- references
 *     already taken keep the old version, as after a put;
 *   - checks each added or replaced file by loading it (then freeing it:
 *     nothing new becomes resident) and calls fn (may be NULL) once per
 *     change, with the outcome.
 * Temporary files, bad names, symlinks and other kinds of file are not task
 * files (as in task_store_list).  Syncs are serialised among themselves;
 * gets, puts and deletes run alongside.  Errors: VIT_ERR_IO (the directory
 * does not read; nothing changed), VIT_ERR_INVALID (a bad name),
 * VIT_ERR_NOMEM. */
vit_status task_store_sync(task_store *s, const char *name, task_store_sync_fn fn, void *ctx,
                           vit_error *err);

/* Makes the store's directory the one its path names now, as every get
 * that reads a file, put, delete, list and sync does first (see "The
 * directory" above): for a watcher that wants to know (*reopened, may be
 * NULL: it switched) or make a missing one (`create`).  Errors:
 * VIT_ERR_NOT_FOUND (no such path, and a put could make it: no tasks),
 * VIT_ERR_IO (not a directory it can open, or one no put can make). */
vit_status task_store_reopen(task_store *s, bool create, bool *reopened, vit_error *err);

/* False while the path names something that is not a usable directory (a
 * file, a directory that cannot be opened) at the store's last look: tasks
 * can then be neither read nor stored (a dangling symlink or a data dir
 * that is gone counts: no put can make them).  A missing path is usable: no
 * tasks, and a put makes it. */
bool task_store_dir_usable(task_store *s);

/* Counters since open. */
typedef struct task_store_stats {
    uint64_t loads;         /* tasks loaded by get (puts' checks not counted) */
    uint64_t evictions;     /* idle tasks evicted to respect the bound */
    uint64_t load_failures; /* gets whose file existed but did not load (corrupt, other
                               backbone, too large, symlink, I/O); NOT_FOUND not counted */
    uint64_t sync_drops;    /* resident tasks dropped by task_store_sync: their file changed */
    size_t resident_bytes;  /* task_store_task_bytes summed over the resident tasks */
    size_t resident_count;
} task_store_stats;

void task_store_stats_get(task_store *s, task_store_stats *out);

/* Bytes one loaded task costs, what the bound counts: the struct, the
 * trainable arena, the label pointer array and each label's bytes. */
size_t task_store_task_bytes(const vit_task *t);

#endif
