/*
 * task_store.c - the runtime task registry (task_store.h says what it
 * promises; this block says how).
 *
 * State under s->lock: a hash table (chained, FNV-1a, grown by doubling) of
 * entries by name, and an LRU list of the resident ones, newest first.  An
 * entry exists only while its task is resident or being loaded, so names that
 * are asked for but do not exist leave nothing behind.
 *
 * An entry is loading (its loader reads the file with the lock released),
 * then resident (e->task holds the store's reference) or gone.  Threads that
 * keep an entry's pointer across an unlock "pin" it: the loader, and every
 * get waiting on s->loaded for that load.  Removing an entry from the table
 * (eviction, put, delete, a failed load) never frees a pinned one; the last
 * unpin does.  Entries and tasks that leave are collected on a local
 * "graveyard" list and freed after the lock is released, so nothing is freed
 * while it is held (big tasks take a while to free).
 *
 * Waiters share the loader's outcome: a failed load's status and message are
 * kept in the entry for them.  A put or delete that happens during a load
 * marks it stale and takes it out of the table: the loader then gives the
 * task it read to its own caller (that get overlapped the put) but does not
 * install it, and its waiters look again, finding the new version or loading
 * it.  put/delete change the directory *before* they invalidate, so whatever
 * a later get loads is the new file.
 *
 * Eviction: only a resident task whose reference count is 1 (the store's
 * own) is idle.  Under s->lock that count cannot rise (every reference is
 * taken from the store under the lock, or retained by a thread that already
 * holds one), so an idle task stays idle while it is evicted.
 *
 * Files are mapped read-only (as st_open maps model files): a file of the
 * directory truncated in place while it is read would raise SIGBUS; the
 * store itself only ever replaces files by rename.
 *
 * Sync: each resident entry keeps the identity of the file it was loaded
 * from (file_id, taken with fstat on the descriptor it read), and the store
 * keeps the identities the last task_store_sync listed (`seen`, under
 * sync_lock).  A sync compares the directory with both: `seen` says what
 * changed (for the reports, and to mark loads in progress of a changed name
 * stale), the entries' own ids say which resident copies are out of date --
 * so a copy loaded from the very file now there (this process's own put,
 * then a get) is kept, whatever order the notifications come in.
 */
#include "task_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "safetensors.h"

#define STORE_SUFFIX ".safetensors"
#define STORE_SUFFIX_LEN (sizeof STORE_SUFFIX - 1)
#define STORE_FILE_MAX (TASK_NAME_MAX + sizeof STORE_SUFFIX) /* "<name>.safetensors" + NUL */
#define STORE_TMP_MAX (TASK_NAME_MAX + 16)                   /* ".tmp-<name>-XXXXXX" + NUL */
#define STORE_BUCKETS_MIN 64

/* Which version of a file: a rename puts another inode in place, a rewrite
 * in place changes the size or the times. */
typedef struct file_id {
    uint64_t dev, ino, size;
    int64_t mtime_s, mtime_ns, ctime_s, ctime_ns;
} file_id;

/* One task file as a sync listed it. */
typedef struct store_seen {
    char name[TASK_NAME_MAX + 1];
    file_id fid;
} store_seen;

/* One task known by name: loading, or resident. */
typedef struct store_entry {
    char name[TASK_NAME_MAX + 1];
    vit_task *task;              /* the store's reference once loaded (NULL while loading) */
    size_t bytes;                /* task_store_task_bytes(task), counted while in the table */
    file_id fid;                 /* the file it was loaded from (once resident) */
    struct store_entry *hnext;   /* hash chain; the graveyard's link once out of the table */
    struct store_entry *newer;   /* LRU list (resident entries only) */
    struct store_entry *older;
    int pins;                    /* threads holding the pointer across an unlock */
    bool in_table;               /* found by name */
    bool loading;                /* its loader has not finished */
    bool stale;                  /* a put/delete came during the load: do not install */
    vit_status status;           /* the load's outcome, for its waiters */
    vit_error error;             /* its message when status != VIT_OK */
} store_entry;

/* What the store's path named at its last look (follow_dir). */
enum { DIR_OK, DIR_MISSING, DIR_BROKEN };

struct task_store {
    const vit_model *m;          /* not owned */
    char fingerprint[65];
    char *dir;                   /* as given, for messages */
    int dirfd;                   /* the directory, held open; follow_dir swaps what it
                                    refers to (dup2, under write_lock), never its number */
    atomic_int dir_state;        /* what dir named at the last look: DIR_* */
    size_t bound;                /* memory_bytes */

    pthread_mutex_t lock;        /* everything below but tmp_seq */
    pthread_cond_t loaded;       /* broadcast when a load ends or turns stale */
    pthread_mutex_t write_lock;  /* serialises puts' renames and deletes' unlinks */

    store_entry **buckets;       /* hash table of entries in the table */
    size_t nbuckets, count;
    store_entry *newest, *oldest; /* LRU list of resident entries */
    size_t resident_bytes, resident_count;
    uint64_t loads, evictions, load_failures, sync_drops;

    pthread_mutex_t sync_lock;   /* serialises task_store_sync; guards seen */
    store_seen *seen;            /* the task files the last sync listed, by name */
    size_t nseen;

    atomic_uint tmp_seq;         /* makes temporary file names */
};

/* ======================================================================== */
/* helpers                                                                  */
/* ======================================================================== */

/* Refuses a name that is not a task name; shows at most 64 printable bytes. */
static vit_status bad_name(const char *name, vit_error *err)
{
    char shown[TASK_NAME_MAX + 4];
    size_t i = 0;
    for (; name && name[i] && i < TASK_NAME_MAX; i++)
        shown[i] = name[i] >= 0x20 && name[i] < 0x7f ? name[i] : '?';
    shown[i] = '\0';
    return vit_error_set(err, VIT_ERR_INVALID,
                         "'%s%s' is not a task name (1 to %d of a-z 0-9 . _ -, starting with a "
                         "letter or digit)",
                         shown, name && name[i] ? "..." : "", TASK_NAME_MAX);
}

/* "<name>.safetensors" into file (STORE_FILE_MAX bytes); name is valid. */
static void file_name(char file[STORE_FILE_MAX], const char *name)
{
    snprintf(file, STORE_FILE_MAX, "%s" STORE_SUFFIX, name);
}

static file_id file_id_of(const struct stat *sb)
{
    return (file_id){.dev = (uint64_t)sb->st_dev, .ino = (uint64_t)sb->st_ino,
                     .size = (uint64_t)sb->st_size, .mtime_s = (int64_t)sb->st_mtim.tv_sec,
                     .mtime_ns = (int64_t)sb->st_mtim.tv_nsec,
                     .ctime_s = (int64_t)sb->st_ctim.tv_sec,
                     .ctime_ns = (int64_t)sb->st_ctim.tv_nsec};
}

static bool file_id_equal(const file_id *a, const file_id *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime_s == b->mtime_s && a->mtime_ns == b->mtime_ns && a->ctime_s == b->ctime_s &&
           a->ctime_ns == b->ctime_ns;
}

/* fsyncs the directory so that a rename or unlink survives a crash;
 * file systems that cannot sync directories (EINVAL) are accepted. */
static int sync_dir(int dfd)
{
    return fsync(dfd) == 0 || errno == EINVAL ? 0 : -1;
}

/* Whether a missing path could be made by mkdir: nothing at the path (not
 * even a dangling symlink), and its parent a directory. */
static bool mendable(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) == 0)
        return false;
    char parent[PATH_MAX];
    size_t n = strlen(path);
    if (n >= sizeof parent)
        return false;
    memcpy(parent, path, n + 1);
    while (n > 1 && parent[n - 1] == '/')
        parent[--n] = '\0';
    char *slash = strrchr(parent, '/');
    if (!slash)
        return true; /* relative to the working directory, which exists */
    if (slash == parent)
        slash[1] = '\0';
    else
        *slash = '\0';
    return stat(parent, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* Makes s->dirfd the directory s->dir names now (task_store.h, "The
 * directory"): the same one is left alone; another (the path removed and
 * made again, restored, or an NFS handle gone stale) is switched to with
 * dup2, under write_lock so that no put renames across the switch.  A
 * missing path is made when `create` (a put), else it is VIT_ERR_NOT_FOUND:
 * no tasks.  Something there that is not a usable directory is VIT_ERR_IO,
 * and the store reports it (task_store_dir_usable).  *switched (may be NULL): it switched. */
static vit_status follow_dir(task_store *s, bool create, bool *switched, vit_error *err)
{
    if (switched)
        *switched = false;
    int fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && create && (mkdir(s->dir, 0755) == 0 || errno == EEXIST))
        fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    /* missing, and a put can make it: not a dangling symlink, not in a
     * data dir that is gone itself -- those no put can mend */
    if (fd < 0 && errno == ENOENT && !create && mendable(s->dir)) {
        atomic_store(&s->dir_state, DIR_MISSING);
        return vit_error_set(err, VIT_ERR_NOT_FOUND, "the task directory %s does not exist",
                             s->dir);
    }
    if (fd < 0) {
        int e = errno;
        atomic_store(&s->dir_state, DIR_BROKEN);
        /* the server's state, not a request's fault: I/O, whatever the cause */
        return vit_error_set(err, VIT_ERR_IO, "the task directory %s cannot be opened: %s",
                             s->dir, strerror(e));
    }
    struct stat held, named;
    if (fstat(fd, &named) != 0) {
        int e = errno;
        close(fd);
        atomic_store(&s->dir_state, DIR_BROKEN);
        return vit_error_set(err, VIT_ERR_IO, "the task directory %s cannot be read: %s", s->dir,
                             strerror(e));
    }
    /* a removed directory keeps its inode while it is held open, with no
     * links; a held handle an NFS server no longer knows fails to stat */
    bool same = fstat(s->dirfd, &held) == 0 && held.st_dev == named.st_dev &&
                held.st_ino == named.st_ino && held.st_nlink > 0;
    int rc = 0;
    if (!same) {
        VIT_ASSERT(pthread_mutex_lock(&s->write_lock) == 0);
        rc = dup2(fd, s->dirfd);
        VIT_ASSERT(pthread_mutex_unlock(&s->write_lock) == 0);
    }
    int e = errno;
    close(fd);
    if (rc < 0) {
        atomic_store(&s->dir_state, DIR_BROKEN);
        return vit_error_set(err, VIT_ERR_IO, "cannot switch to the task directory %s: %s",
                             s->dir, strerror(e));
    }
    if (switched)
        *switched = !same;
    atomic_store(&s->dir_state, DIR_OK);
    return VIT_OK;
}

/* follow_dir for a call about task `name`: no directory is no such task. */
static vit_status follow_dir_for(task_store *s, const char *name, vit_error *err)
{
    vit_error derr;
    vit_status st = follow_dir(s, false, NULL, &derr);
    if (st == VIT_ERR_NOT_FOUND)
        return vit_error_set(err, VIT_ERR_NOT_FOUND, "no task '%s' (%s)", name, derr.message);
    if (st != VIT_OK && err)
        *err = derr;
    return st;
}

/* Whether the directory held in dfd is still the one the store's path
 * names: for a put about to rename into it. */
static bool still_named(const task_store *s, int dfd)
{
    struct stat held, named;
    return fstat(dfd, &held) == 0 && stat(s->dir, &named) == 0 && held.st_dev == named.st_dev &&
           held.st_ino == named.st_ino && held.st_nlink > 0;
}

size_t task_store_task_bytes(const vit_task *t)
{
    size_t bytes = sizeof *t + t->trainable_len * sizeof *t->trainable;
    if (t->labels) {
        bytes += (size_t)t->num_classes * sizeof *t->labels;
        for (int i = 0; i < t->num_classes; i++)
            bytes += t->labels[i] ? strlen(t->labels[i]) + 1 : 0;
    }
    return bytes;
}

/* ======================================================================== */
/* the table, the LRU list and the graveyard (all under s->lock)            */
/* ======================================================================== */

static size_t hash_name(const char *name)
{
    uint64_t h = 14695981039346656037u; /* FNV-1a */
    for (; *name; name++)
        h = (h ^ (unsigned char)*name) * 1099511628211u;
    return (size_t)h;
}

static store_entry *table_find(const task_store *s, const char *name)
{
    for (store_entry *e = s->buckets[hash_name(name) & (s->nbuckets - 1)]; e; e = e->hnext)
        if (strcmp(e->name, name) == 0)
            return e;
    return NULL;
}

/* Doubles the buckets when the chains grow long; on OOM keeps them (chains
 * only get longer). */
static void table_grow(task_store *s)
{
    if (s->count <= 2 * s->nbuckets || s->nbuckets > SIZE_MAX / 2 / sizeof *s->buckets)
        return;
    size_t n = 2 * s->nbuckets;
    store_entry **b = calloc(n, sizeof *b);
    if (!b)
        return;
    for (size_t i = 0; i < s->nbuckets; i++) {
        for (store_entry *e = s->buckets[i], *next; e; e = next) {
            next = e->hnext;
            size_t h = hash_name(e->name) & (n - 1);
            e->hnext = b[h];
            b[h] = e;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->nbuckets = n;
}

static void table_insert(task_store *s, store_entry *e)
{
    size_t h = hash_name(e->name) & (s->nbuckets - 1);
    e->hnext = s->buckets[h];
    s->buckets[h] = e;
    e->in_table = true;
    s->count++;
    table_grow(s);
}

static void table_unlink(task_store *s, store_entry *e)
{
    store_entry **p = &s->buckets[hash_name(e->name) & (s->nbuckets - 1)];
    while (*p != e) {
        VIT_ASSERT(*p);
        p = &(*p)->hnext;
    }
    *p = e->hnext;
    e->hnext = NULL;
    e->in_table = false;
    s->count--;
}

static void lru_unlink(task_store *s, store_entry *e)
{
    if (e->newer)
        e->newer->older = e->older;
    else
        s->newest = e->older;
    if (e->older)
        e->older->newer = e->newer;
    else
        s->oldest = e->newer;
    e->newer = e->older = NULL;
}

static void lru_push_newest(task_store *s, store_entry *e)
{
    e->newer = NULL;
    e->older = s->newest;
    if (s->newest)
        s->newest->newer = e;
    else
        s->oldest = e;
    s->newest = e;
}

/* Puts e on the graveyard list when nothing holds it any more. */
static void entry_bury_if_free(store_entry *e, store_entry **grave)
{
    if (!e->in_table && e->pins == 0) {
        e->hnext = *grave;
        *grave = e;
    }
}

/* Takes e out of the table (and out of the resident set if it is resident);
 * it is freed now (via the graveyard) or by its last unpin. */
static void entry_remove(task_store *s, store_entry *e, store_entry **grave)
{
    VIT_ASSERT(e->in_table);
    table_unlink(s, e);
    if (e->task) {
        lru_unlink(s, e);
        s->resident_bytes -= e->bytes;
        s->resident_count--;
    }
    entry_bury_if_free(e, grave);
}

static void entry_unpin(store_entry *e, store_entry **grave)
{
    VIT_ASSERT(e->pins > 0);
    e->pins--;
    entry_bury_if_free(e, grave);
}

/* Frees what entry_remove / entry_unpin collected; called without the lock. */
static void graveyard_free(store_entry *grave)
{
    while (grave) {
        store_entry *next = grave->hnext;
        task_free(grave->task);
        free(grave);
        grave = next;
    }
}

/* Evicts idle resident tasks, oldest first, until `need` more bytes fit
 * under the bound (need <= bound) or no idle task is left. */
static void make_room(task_store *s, size_t need, store_entry **grave)
{
    for (store_entry *e = s->oldest, *newer; e && s->resident_bytes > s->bound - need;
         e = newer) {
        newer = e->newer;
        if (atomic_load_explicit(&e->task->refs, memory_order_acquire) == 1) {
            entry_remove(s, e, grave);
            s->evictions++;
        }
    }
}

/* After a put or delete of name changed the directory: drops the resident
 * copy, or marks a load in progress stale (its waiters look again). */
static void invalidate(task_store *s, const char *name, store_entry **grave)
{
    store_entry *e = table_find(s, name);
    if (!e)
        return;
    if (e->loading) {
        e->stale = true;
        table_unlink(s, e); /* pinned by its loader: not freed here */
        pthread_cond_broadcast(&s->loaded);
    } else {
        entry_remove(s, e, grave);
    }
}

static void store_lock(task_store *s)
{
    VIT_ASSERT(pthread_mutex_lock(&s->lock) == 0);
}

static void store_unlock(task_store *s)
{
    VIT_ASSERT(pthread_mutex_unlock(&s->lock) == 0);
}

/* ======================================================================== */
/* files (no lock held)                                                     */
/* ======================================================================== */

/* Opens task file `file` of the directory for reading: a regular file, never
 * through a symlink, never blocking on a FIFO (task_store.h).  On success *fd
 * (caller closes) and *st, its fstat. */
static vit_status open_task_file(task_store *s, const char *name, const char *file,
                                 int *fd, struct stat *st, vit_error *err)
{
    *fd = -1;
    vit_status dst = follow_dir_for(s, name, err);
    if (dst != VIT_OK)
        return dst;
    struct stat pre;
    if (fstatat(s->dirfd, file, &pre, AT_SYMLINK_NOFOLLOW) != 0)
        return errno == ENOENT
                   ? vit_error_set(err, VIT_ERR_NOT_FOUND, "no task '%s' in %s", name, s->dir)
                   : vit_error_set(err, VIT_ERR_IO, "cannot stat task file '%s' in %s: %s",
                                   file, s->dir, strerror(errno));
    if (S_ISLNK(pre.st_mode))
        return vit_error_set(err, VIT_ERR_INVALID,
                             "task file '%s' in %s is a symbolic link; the task store does not "
                             "follow links", file, s->dir);
    if (!S_ISREG(pre.st_mode))
        return vit_error_set(err, VIT_ERR_INVALID, "task file '%s' in %s is not a regular file",
                             file, s->dir);
    int f = openat(s->dirfd, file, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (f < 0) {
        if (errno == ENOENT)
            return vit_error_set(err, VIT_ERR_NOT_FOUND, "no task '%s' in %s", name, s->dir);
        if (errno == ELOOP)
            return vit_error_set(err, VIT_ERR_INVALID,
                                 "task file '%s' in %s is a symbolic link; the task store does "
                                 "not follow links", file, s->dir);
        return vit_error_set(err, VIT_ERR_IO, "cannot open task file '%s' in %s: %s", file,
                             s->dir, strerror(errno));
    }
    /* swapped for something else since the fstatat (a rename's new file is
     * fine; a FIFO or device is not) */
    if (fstat(f, st) != 0) {
        vit_error_set(err, VIT_ERR_IO, "cannot stat task file '%s' in %s: %s", file, s->dir,
                      strerror(errno));
        close(f);
        return VIT_ERR_IO;
    }
    if (!S_ISREG(st->st_mode)) {
        close(f);
        return vit_error_set(err, VIT_ERR_INVALID, "task file '%s' in %s is not a regular file",
                             file, s->dir);
    }
    if ((uintmax_t)st->st_size > SIZE_MAX) {
        close(f);
        return vit_error_set(err, VIT_ERR_TOO_LARGE, "task file '%s' in %s is too large",
                             file, s->dir);
    }
    *fd = f;
    return VIT_OK;
}

/* Reads the len bytes of fd into a new buffer (NULL for an empty file: the
 * parser then says it is empty).  Read, not mapped: another process may
 * truncate the file while it is parsed (an operator's cp over a task, a
 * replica's write), and a mapped page that vanished kills the reader with
 * SIGBUS.  A file past the store's bound, plus room for a header, cannot be
 * a task the store would keep, so it is refused before anything is read. */
static vit_status read_task_file(const task_store *s, int fd, size_t len, const char *file,
                                 void **buf, vit_error *err)
{
    enum { HEADER_ROOM = 16u << 20 };
    *buf = NULL;
    if (len == 0)
        return VIT_OK;
    if (len > s->bound && len - s->bound > HEADER_ROOM)
        return vit_error_set(err, VIT_ERR_TOO_LARGE,
                             "task file '%s' in %s has %zu bytes, over the task store's bound "
                             "of %zu",
                             file, s->dir, len, s->bound);
    char *p = malloc(len);
    if (!p)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory reading task file '%s'", file);
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(fd, p + got, len - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            free(p);
            return vit_error_set(err, VIT_ERR_IO, "cannot read task file '%s' in %s: %s", file,
                                 s->dir, n < 0 ? strerror(errno) : "it shrank while read");
        }
        got += (size_t)n;
    }
    *buf = p;
    return VIT_OK;
}

/* Loads task file fd of len bytes (`file` names it; the task gets its name
 * from it) with every check of task_load. */
static vit_status load_fd(const task_store *s, int fd, size_t len, const char *file,
                          vit_task **out, vit_error *err)
{
    void *buf;
    vit_status st = read_task_file(s, fd, len, file, &buf, err);
    if (st != VIT_OK)
        return st;
    st = task_load_memory(s->m, s->fingerprint, buf, len, file, out, err);
    free(buf);
    return st;
}

/* Loads task `name` from the directory; *fid: the file it read. */
static vit_status load_task(task_store *s, const char *name, vit_task **out, file_id *fid,
                            vit_error *err)
{
    char file[STORE_FILE_MAX];
    file_name(file, name);
    int fd;
    struct stat st;
    vit_status r = open_task_file(s, name, file, &fd, &st, err);
    if (r != VIT_OK)
        return r;
    *fid = file_id_of(&st);
    r = load_fd(s, fd, (size_t)st.st_size, file, out, err);
    close(fd);
    return r;
}

/* ======================================================================== */
/* open / close                                                             */
/* ======================================================================== */

static int is_hex64(const char *fp)
{
    size_t n = 0;
    for (; fp[n]; n++)
        if (!((fp[n] >= '0' && fp[n] <= '9') || (fp[n] >= 'a' && fp[n] <= 'f')))
            return 0;
    return n == 64;
}

vit_status task_store_open(const vit_model *m, const char *fingerprint, const char *dir,
                           size_t memory_bytes, task_store **out, vit_error *err)
{
    VIT_ASSERT(m && fingerprint && dir && out);
    *out = NULL;
    if (!is_hex64(fingerprint))
        return vit_error_set(err, VIT_ERR_INVALID,
                             "task store: the backbone fingerprint must be 64 hex digits");
    if (memory_bytes == 0)
        return vit_error_set(err, VIT_ERR_INVALID, "task store: the memory bound must be > 0");
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return vit_error_set(err, errno == ENOENT ? VIT_ERR_NOT_FOUND : VIT_ERR_IO,
                             "cannot create the task directory %s: %s", dir, strerror(errno));
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return vit_error_set(err, errno == ENOTDIR ? VIT_ERR_INVALID : VIT_ERR_IO,
                             "cannot open the task directory %s: %s", dir, strerror(errno));

    task_store *s = calloc(1, sizeof *s);
    if (!s) {
        close(dfd);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    }
    s->m = m;
    memcpy(s->fingerprint, fingerprint, 65);
    s->dirfd = dfd;
    s->bound = memory_bytes;
    s->nbuckets = STORE_BUCKETS_MIN;
    s->dir = strdup(dir);
    s->buckets = calloc(s->nbuckets, sizeof *s->buckets);
    atomic_init(&s->tmp_seq, 0);
    atomic_init(&s->dir_state, DIR_OK);
    if (!s->dir || !s->buckets) {
        free(s->dir);
        free(s->buckets);
        free(s);
        close(dfd);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    }
    int locks = 0;
    if (pthread_mutex_init(&s->lock, NULL) == 0 && ++locks &&
        pthread_mutex_init(&s->write_lock, NULL) == 0 && ++locks &&
        pthread_cond_init(&s->loaded, NULL) == 0 && ++locks &&
        pthread_mutex_init(&s->sync_lock, NULL) == 0 && ++locks) {
        *out = s;
        return VIT_OK;
    }
    if (locks >= 3)
        pthread_cond_destroy(&s->loaded);
    if (locks >= 2)
        pthread_mutex_destroy(&s->write_lock);
    if (locks >= 1)
        pthread_mutex_destroy(&s->lock);
    free(s->dir);
    free(s->buckets);
    free(s);
    close(dfd);
    return vit_error_set(err, VIT_ERR_NOMEM, "task store: cannot create its locks");
}

void task_store_close(task_store *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nbuckets; i++) {
        for (store_entry *e = s->buckets[i], *next; e; e = next) {
            next = e->hnext;
            VIT_ASSERT(!e->loading); /* no call may be in progress */
            task_free(e->task);
            free(e);
        }
    }
    free(s->buckets);
    free(s->seen);
    pthread_mutex_destroy(&s->sync_lock);
    pthread_cond_destroy(&s->loaded);
    pthread_mutex_destroy(&s->write_lock);
    pthread_mutex_destroy(&s->lock);
    close(s->dirfd);
    free(s->dir);
    free(s);
}

/* ======================================================================== */
/* get                                                                      */
/* ======================================================================== */

vit_status task_store_get(task_store *s, const char *name, vit_task **out, vit_error *err)
{
    VIT_ASSERT(s && out);
    *out = NULL;
    if (!task_name_valid(name))
        return bad_name(name, err);

    store_entry *grave = NULL, *e;
    store_lock(s);
    while ((e = table_find(s, name)) != NULL) {
        if (!e->loading) { /* resident */
            *out = task_retain(e->task); /* under the lock: the store's reference pins it */
            lru_unlink(s, e);
            lru_push_newest(s, e);
            if (s->resident_bytes > s->bound) /* callers held tasks past the bound */
                make_room(s, 0, &grave);
            store_unlock(s);
            graveyard_free(grave);
            return VIT_OK;
        }
        /* another thread is loading it: wait, then share its outcome */
        e->pins++;
        while (e->loading && !e->stale)
            VIT_ASSERT(pthread_cond_wait(&s->loaded, &s->lock) == 0);
        vit_status st = e->stale ? VIT_OK : e->status;
        if (st != VIT_OK && err)
            *err = e->error;
        entry_unpin(e, &grave);
        if (st != VIT_OK) {
            store_unlock(s);
            graveyard_free(grave);
            return st;
        }
        /* loaded (and maybe evicted since), or stale: look again */
    }

    /* not known: this thread loads it, with the lock released */
    e = calloc(1, sizeof *e);
    if (!e) {
        store_unlock(s);
        graveyard_free(grave);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    }
    snprintf(e->name, sizeof e->name, "%s", name);
    e->loading = true;
    e->pins = 1;
    table_insert(s, e);
    store_unlock(s);

    vit_error lerr = {0};
    vit_task *t = NULL;
    file_id fid = {0};
    vit_status st = load_task(s, name, &t, &fid, &lerr);
    size_t bytes = t ? task_store_task_bytes(t) : 0;
    if (st == VIT_OK && bytes > s->bound) {
        st = vit_error_set(&lerr, VIT_ERR_TOO_LARGE,
                           "task '%s' takes %zu bytes in memory, over the task store's bound "
                           "of %zu", name, bytes, s->bound);
        task_free(t);
        t = NULL;
    }

    store_lock(s);
    e->loading = false;
    e->status = st;
    if (st != VIT_OK) {
        e->error = lerr;
        if (st != VIT_ERR_NOT_FOUND)
            s->load_failures++;
        if (e->in_table)
            entry_remove(s, e, &grave);
    } else {
        s->loads++;
        if (e->in_table) { /* not stale: make it resident */
            make_room(s, bytes, &grave);
            e->task = t;
            e->bytes = bytes;
            e->fid = fid;
            lru_push_newest(s, e);
            s->resident_bytes += bytes;
            s->resident_count++;
            t = task_retain(t); /* the caller's reference */
        } /* stale: the caller gets the only reference */
    }
    pthread_cond_broadcast(&s->loaded);
    entry_unpin(e, &grave);
    store_unlock(s);
    graveyard_free(grave);
    if (st != VIT_OK) {
        if (err)
            *err = lerr;
        return st;
    }
    *out = t;
    return VIT_OK;
}

/* ======================================================================== */
/* put / delete                                                             */
/* ======================================================================== */

/* Creates ".tmp-<name>-XXXXXX" in the directory (0644, exclusive, never
 * through a link); its name into tmp.  Returns the descriptor or -1. */
static int make_tmp(task_store *s, int dfd, const char *name, char tmp[STORE_TMP_MAX])
{
    static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    for (int attempt = 0; attempt < 100; attempt++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_nsec * 2654435761u ^ (uint64_t)getpid() << 32 ^
                     atomic_fetch_add(&s->tmp_seq, 1) * 0x9e3779b97f4a7c15u;
        char suffix[7];
        for (int i = 0; i < 6; i++, x /= 36)
            suffix[i] = digits[x % 36];
        suffix[6] = '\0';
        snprintf(tmp, STORE_TMP_MAX, ".tmp-%s-%s", name, suffix);
        int fd = openat(dfd, tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd >= 0 || errno != EEXIST)
            return fd;
    }
    errno = EEXIST;
    return -1;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

vit_status task_store_put(task_store *s, const char *name, const void *bytes, size_t len,
                          bool *created, vit_error *err)
{
    VIT_ASSERT(s && (bytes || len == 0));
    if (created)
        *created = false;
    if (!task_name_valid(name))
        return bad_name(name, err);
    char file[STORE_FILE_MAX], tmp[STORE_TMP_MAX];
    file_name(file, name);

    /* 0. the directory the path names now (made when missing: storing a
     * task needs it, as at open), held by a descriptor of this put's own,
     * so that a switch meanwhile cannot move its files between directories */
    vit_status st = follow_dir(s, true, NULL, err);
    if (st != VIT_OK)
        return st;
    int dfd = fcntl(s->dirfd, F_DUPFD_CLOEXEC, 0);
    if (dfd < 0)
        return vit_error_set(err, VIT_ERR_IO, "cannot hold the task directory %s: %s", s->dir,
                             strerror(errno));

    /* 1. the bytes into a temporary file, durably (0644: not a secret) */
    int fd = make_tmp(s, dfd, name, tmp);
    if (fd < 0) {
        st = vit_error_set(err, VIT_ERR_IO, "cannot create a temporary file for task '%s' in "
                           "%s: %s", name, s->dir, strerror(errno));
        close(dfd);
        return st;
    }
    if (fchmod(fd, 0644) != 0 || write_all(fd, bytes, len) != 0 || fsync(fd) != 0)
        st = vit_error_set(err, VIT_ERR_IO, "cannot write task '%s' to %s: %s", name, s->dir,
                           strerror(errno));

    /* 2. what was written must load as a task of this backbone that fits */
    vit_task *t = NULL;
    if (st == VIT_OK)
        st = load_fd(s, fd, len, file, &t, err);
    if (st == VIT_OK && task_store_task_bytes(t) > s->bound)
        st = vit_error_set(err, VIT_ERR_TOO_LARGE,
                           "task '%s' takes %zu bytes in memory, over the task store's bound "
                           "of %zu", name, task_store_task_bytes(t), s->bound);
    task_free(t);
    if (close(fd) != 0 && st == VIT_OK)
        st = vit_error_set(err, VIT_ERR_IO, "cannot write task '%s' to %s: %s", name, s->dir,
                           strerror(errno));
    if (st != VIT_OK) {
        unlinkat(dfd, tmp, 0);
        close(dfd);
        return st;
    }

    /* 3. in place, then live -- in the directory the path names: one moved
     * away or removed meanwhile would take the task with it, after a reply
     * that it was stored */
    VIT_ASSERT(pthread_mutex_lock(&s->write_lock) == 0);
    struct stat old;
    bool existed = fstatat(dfd, file, &old, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(old.st_mode);
    if (!still_named(s, dfd))
        st = vit_error_set(err, VIT_ERR_IO, "the task directory %s was moved or removed while "
                           "task '%s' was written; it was not stored", s->dir, name);
    else if (renameat(dfd, tmp, dfd, file) != 0)
        st = vit_error_set(err, VIT_ERR_IO, "cannot rename %s/%s to %s: %s", s->dir, tmp, file,
                           strerror(errno));
    if (st != VIT_OK) {
        unlinkat(dfd, tmp, 0);
        VIT_ASSERT(pthread_mutex_unlock(&s->write_lock) == 0);
        close(dfd);
        return st;
    }
    if (sync_dir(dfd) != 0) /* in place all the same: still made live below */
        st = vit_error_set(err, VIT_ERR_IO, "stored task '%s' but cannot sync %s: %s", name,
                           s->dir, strerror(errno));
    store_entry *grave = NULL;
    store_lock(s);
    invalidate(s, name, &grave);
    store_unlock(s);
    VIT_ASSERT(pthread_mutex_unlock(&s->write_lock) == 0);
    close(dfd);
    graveyard_free(grave);
    if (created)
        *created = !existed;
    return st;
}

bool task_store_exists(task_store *s, const char *name)
{
    VIT_ASSERT(s);
    if (!task_name_valid(name))
        return false;
    char file[STORE_FILE_MAX];
    file_name(file, name);
    struct stat sb;
    return follow_dir(s, false, NULL, NULL) == VIT_OK &&
           fstatat(s->dirfd, file, &sb, AT_SYMLINK_NOFOLLOW) == 0;
}

vit_status task_store_delete(task_store *s, const char *name, vit_error *err)
{
    VIT_ASSERT(s);
    if (!task_name_valid(name))
        return bad_name(name, err);
    char file[STORE_FILE_MAX];
    file_name(file, name);
    vit_status st = follow_dir_for(s, name, err);
    if (st != VIT_OK)
        return st;

    VIT_ASSERT(pthread_mutex_lock(&s->write_lock) == 0);
    struct stat sb;
    bool removed = false;
    if (fstatat(s->dirfd, file, &sb, AT_SYMLINK_NOFOLLOW) != 0)
        st = errno == ENOENT
                 ? vit_error_set(err, VIT_ERR_NOT_FOUND, "no task '%s' in %s", name, s->dir)
                 : vit_error_set(err, VIT_ERR_IO, "cannot stat task file '%s' in %s: %s", file,
                                 s->dir, strerror(errno));
    else if (!S_ISREG(sb.st_mode) && !S_ISLNK(sb.st_mode))
        st = vit_error_set(err, VIT_ERR_INVALID, "task file '%s' in %s is not a regular file",
                           file, s->dir);
    else if (unlinkat(s->dirfd, file, 0) != 0)
        st = errno == ENOENT
                 ? vit_error_set(err, VIT_ERR_NOT_FOUND, "no task '%s' in %s", name, s->dir)
                 : vit_error_set(err, VIT_ERR_IO, "cannot remove task file '%s' in %s: %s",
                                 file, s->dir, strerror(errno));
    else {
        removed = true;
        if (sync_dir(s->dirfd) != 0) /* removed all the same: dropped below */
            st = vit_error_set(err, VIT_ERR_IO, "removed task '%s' but cannot sync %s: %s",
                               name, s->dir, strerror(errno));
    }
    store_entry *grave = NULL;
    if (removed) {
        store_lock(s);
        invalidate(s, name, &grave);
        store_unlock(s);
    }
    VIT_ASSERT(pthread_mutex_unlock(&s->write_lock) == 0);
    graveyard_free(grave);
    return st;
}

/* ======================================================================== */
/* list / metadata / stats                                                  */
/* ======================================================================== */

static int seen_by_name(const void *a, const void *b)
{
    return strcmp(((const store_seen *)a)->name, ((const store_seen *)b)->name);
}

/* Whether directory entry `file` is a task file: "<valid name>.safetensors";
 * its name into name. */
static bool task_file_name(const char *file, char name[TASK_NAME_MAX + 1])
{
    size_t len = strlen(file);
    if (len <= STORE_SUFFIX_LEN || len - STORE_SUFFIX_LEN > TASK_NAME_MAX ||
        strcmp(file + len - STORE_SUFFIX_LEN, STORE_SUFFIX) != 0)
        return false;
    memcpy(name, file, len - STORE_SUFFIX_LEN);
    name[len - STORE_SUFFIX_LEN] = '\0';
    return task_name_valid(name);
}

/* The task files of the directory (regular files with a task file's name;
 * see task_store_list), sorted by name: *out malloc'd (caller frees; NULL
 * when *n is 0).  No lock held.  Errors: VIT_ERR_IO, VIT_ERR_NOMEM. */
static vit_status scan_dir(task_store *s, store_seen **out, size_t *n, vit_error *err)
{
    *out = NULL;
    *n = 0;
    vit_status fst = follow_dir(s, false, NULL, err);
    if (fst == VIT_ERR_NOT_FOUND)
        return VIT_OK; /* no directory: no tasks */
    if (fst != VIT_OK)
        return fst;
    int dfd = openat(s->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!d) {
        vit_status st = vit_error_set(err, VIT_ERR_IO, "cannot read the task directory %s: %s",
                                      s->dir, strerror(errno));
        if (dfd >= 0)
            close(dfd);
        return st;
    }
    store_seen *list = NULL;
    size_t count = 0, cap = 0;
    vit_status st = VIT_OK;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno != 0)
                st = vit_error_set(err, VIT_ERR_IO, "cannot read the task directory %s: %s",
                                   s->dir, strerror(errno));
            break;
        }
        char name[TASK_NAME_MAX + 1];
        struct stat sb;
        if (!task_file_name(de->d_name, name) ||
            fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(sb.st_mode))
            continue; /* a bad name, gone meanwhile, a link or not a file */
        if (count == cap) {
            size_t ncap = cap ? 2 * cap : 16;
            store_seen *grown =
                ncap <= SIZE_MAX / sizeof *list ? realloc(list, ncap * sizeof *list) : NULL;
            if (!grown) {
                st = vit_error_set(err, VIT_ERR_NOMEM, "out of memory listing %s", s->dir);
                break;
            }
            list = grown;
            cap = ncap;
        }
        store_seen *e = &list[count++];
        memcpy(e->name, name, sizeof name);
        e->fid = file_id_of(&sb);
    }
    closedir(d);
    if (st != VIT_OK) {
        free(list);
        return st;
    }
    if (count > 1)
        qsort(list, count, sizeof *list, seen_by_name);
    *out = list;
    *n = count;
    return VIT_OK;
}

/* The entry of `name` in a sorted listing, or NULL. */
static const store_seen *seen_find(const store_seen *list, size_t n, const char *name)
{
    store_seen key;
    snprintf(key.name, sizeof key.name, "%s", name);
    return n ? bsearch(&key, list, n, sizeof *list, seen_by_name) : NULL;
}

vit_status task_store_list(task_store *s, task_store_entry **out, size_t *n, vit_error *err)
{
    VIT_ASSERT(s && out && n);
    *out = NULL;
    *n = 0;
    store_seen *files;
    size_t count;
    vit_status st = scan_dir(s, &files, &count, err);
    if (st != VIT_OK)
        return st;
    task_store_entry *list = count ? calloc(count, sizeof *list) : NULL;
    if (count && !list) {
        free(files);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory listing %s", s->dir);
    }
    for (size_t i = 0; i < count; i++) {
        memcpy(list[i].name, files[i].name, sizeof list[i].name);
        list[i].file_bytes = files[i].fid.size;
    }
    free(files);
    store_lock(s);
    for (size_t i = 0; i < count; i++) {
        const store_entry *e = table_find(s, list[i].name);
        if (e && !e->loading) {
            list[i].resident = true;
            list[i].resident_bytes = e->bytes;
        }
    }
    store_unlock(s);
    *out = list;
    *n = count;
    return VIT_OK;
}

/* ======================================================================== */
/* sync: what other processes did to the directory                          */
/* ======================================================================== */

vit_status task_store_reopen(task_store *s, bool create, bool *reopened, vit_error *err)
{
    VIT_ASSERT(s);
    return follow_dir(s, create, reopened, err);
}

bool task_store_dir_usable(task_store *s)
{
    return atomic_load(&s->dir_state) != DIR_BROKEN;
}


/* One change a sync found. */
typedef struct sync_change {
    char name[TASK_NAME_MAX + 1];
    task_store_change change;
} sync_change;

/* The changes from the sorted listing `was` to the sorted listing `now`,
 * appended to out (room for nwas + nnow). */
static size_t diff_listings(const store_seen *was, size_t nwas, const store_seen *now,
                            size_t nnow, sync_change *out)
{
    size_t i = 0, k = 0, n = 0;
    while (i < nwas || k < nnow) {
        int c = i == nwas ? 1 : k == nnow ? -1 : strcmp(was[i].name, now[k].name);
        if (c < 0) {
            out[n] = (sync_change){.change = TASK_STORE_REMOVED};
            memcpy(out[n++].name, was[i++].name, sizeof out->name);
        } else if (c > 0) {
            out[n] = (sync_change){.change = TASK_STORE_ADDED};
            memcpy(out[n++].name, now[k++].name, sizeof out->name);
        } else {
            if (!file_id_equal(&was[i].fid, &now[k].fid)) {
                out[n] = (sync_change){.change = TASK_STORE_REPLACED};
                memcpy(out[n++].name, now[k].name, sizeof out->name);
            }
            i++;
            k++;
        }
    }
    return n;
}

/* Drops the resident copies that `now` (the directory, or the one name
 * `only` of it) says are out of date, and marks loads in progress of the
 * changed names stale; under s->lock. */
static void drop_changed(task_store *s, const char *only, const store_seen *now, size_t nnow,
                         const sync_change *changes, size_t nchanges, store_entry **grave)
{
    for (store_entry *e = s->oldest, *newer; e; e = newer) {
        newer = e->newer;
        if (only && strcmp(e->name, only) != 0)
            continue;
        const store_seen *f = seen_find(now, nnow, e->name);
        if (!f || !file_id_equal(&f->fid, &e->fid)) {
            entry_remove(s, e, grave);
            s->sync_drops++;
        }
    }
    for (size_t i = 0; i < nchanges; i++) {
        store_entry *e = table_find(s, changes[i].name);
        if (e && e->loading) /* it may be reading the old file: its waiters look again */
            invalidate(s, changes[i].name, grave);
    }
}

/* `seen` with the one name's entry set to now[0..nnow) (nnow 0 or 1); under
 * sync_lock.  False when out of memory (seen unchanged). */
static bool seen_update_one(task_store *s, const char *name, const store_seen *now, size_t nnow)
{
    size_t at = 0;
    while (at < s->nseen && strcmp(s->seen[at].name, name) < 0)
        at++;
    bool there = at < s->nseen && strcmp(s->seen[at].name, name) == 0;
    if (there && nnow) {
        s->seen[at] = now[0];
    } else if (there) {
        memmove(s->seen + at, s->seen + at + 1, (s->nseen - at - 1) * sizeof *s->seen);
        s->nseen--;
    } else if (nnow) {
        store_seen *grown = s->nseen < SIZE_MAX / sizeof *grown - 1
                                ? realloc(s->seen, (s->nseen + 1) * sizeof *grown)
                                : NULL;
        if (!grown)
            return false;
        s->seen = grown;
        memmove(s->seen + at + 1, s->seen + at, (s->nseen - at) * sizeof *s->seen);
        s->seen[at] = now[0];
        s->nseen++;
    }
    return true;
}

vit_status task_store_sync(task_store *s, const char *name, task_store_sync_fn fn, void *ctx,
                           vit_error *err)
{
    VIT_ASSERT(s);
    if (name && !task_name_valid(name))
        return bad_name(name, err);
    store_seen *now = NULL, one;
    size_t nnow = 0;
    vit_status st = VIT_OK;
    if (name) {
        char file[STORE_FILE_MAX];
        file_name(file, name);
        struct stat sb;
        int rc = fstatat(s->dirfd, file, &sb, AT_SYMLINK_NOFOLLOW);
        if (rc == 0 && S_ISREG(sb.st_mode)) {
            snprintf(one.name, sizeof one.name, "%s", name);
            one.fid = file_id_of(&sb);
            now = &one;
            nnow = 1;
        } else if (rc != 0 && errno != ENOENT) {
            return vit_error_set(err, VIT_ERR_IO, "cannot stat task file '%s' in %s: %s", file,
                                 s->dir, strerror(errno));
        } /* else gone, or not a regular file: not a task file */
    } else if ((st = scan_dir(s, &now, &nnow, err)) != VIT_OK) {
        return st;
    }

    VIT_ASSERT(pthread_mutex_lock(&s->sync_lock) == 0);
    const store_seen *was = s->seen;
    size_t nwas = s->nseen;
    if (name) { /* the one name's entry of the last listing */
        was = seen_find(s->seen, s->nseen, name);
        nwas = was != NULL;
    }
    sync_change *changes = malloc((nwas + nnow + 1) * sizeof *changes);
    if (!changes) {
        VIT_ASSERT(pthread_mutex_unlock(&s->sync_lock) == 0);
        if (now != &one)
            free(now);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory syncing %s", s->dir);
    }
    size_t nchanges = diff_listings(was, nwas, now, nnow, changes);

    store_entry *grave = NULL;
    store_lock(s);
    drop_changed(s, name, now, nnow, changes, nchanges, &grave);
    store_unlock(s);
    graveyard_free(grave);

    if (name) {
        if (!seen_update_one(s, name, now, nnow))
            st = vit_error_set(err, VIT_ERR_NOMEM, "out of memory syncing %s", s->dir);
    } else {
        free(s->seen);
        s->seen = now; /* the store keeps the listing */
        s->nseen = nnow;
        now = NULL;
    }

    /* each added or replaced file is checked as a get would load it */
    for (size_t i = 0; i < nchanges && fn; i++) {
        vit_error cerr = {0};
        vit_status cst = VIT_OK;
        if (changes[i].change != TASK_STORE_REMOVED) {
            vit_task *t = NULL;
            file_id fid;
            cst = load_task(s, changes[i].name, &t, &fid, &cerr);
            if (cst == VIT_OK && task_store_task_bytes(t) > s->bound)
                cst = vit_error_set(&cerr, VIT_ERR_TOO_LARGE,
                                    "task '%s' takes %zu bytes in memory, over the task store's "
                                    "bound of %zu", changes[i].name, task_store_task_bytes(t),
                                    s->bound);
            task_free(t);
        }
        fn(ctx, changes[i].name, changes[i].change, cst, cst == VIT_OK ? NULL : &cerr);
    }
    VIT_ASSERT(pthread_mutex_unlock(&s->sync_lock) == 0);
    free(changes);
    if (now != &one)
        free(now);
    return st;
}

/* The metadata of an open header as one allocation (task_store.h). */
static vit_status copy_metadata(const st_file *f, const char *name, char ***kv, vit_error *err)
{
    size_t count = st_metadata_count(f), strings = 0;
    for (size_t i = 0; i < count; i++) {
        const char *k, *v;
        VIT_ASSERT(st_metadata_at(f, i, &k, &v));
        strings += strlen(k) + strlen(v) + 2; /* bounded by the header's size */
    }
    size_t ptrs = (2 * count + 1) * sizeof(char *);
    char **out = malloc(ptrs + strings);
    if (!out)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for the metadata of task '%s'",
                             name);
    char *p = (char *)out + ptrs;
    for (size_t i = 0; i < count; i++) {
        const char *kv2[2];
        st_metadata_at(f, i, &kv2[0], &kv2[1]);
        for (int j = 0; j < 2; j++) {
            size_t n = strlen(kv2[j]) + 1;
            memcpy(p, kv2[j], n);
            out[2 * i + (size_t)j] = p;
            p += n;
        }
    }
    out[2 * count] = NULL;
    *kv = out;
    return VIT_OK;
}

vit_status task_store_metadata(task_store *s, const char *name, char ***kv,
                               uint64_t *file_bytes, vit_error *err)
{
    VIT_ASSERT(s && kv);
    *kv = NULL;
    if (!task_name_valid(name))
        return bad_name(name, err);
    char file[STORE_FILE_MAX];
    file_name(file, name);
    int fd;
    struct stat sb;
    vit_status st = open_task_file(s, name, file, &fd, &sb, err);
    if (st != VIT_OK)
        return st;
    size_t len = (size_t)sb.st_size;
    void *bytes;
    st = read_task_file(s, fd, len, file, &bytes, err);
    close(fd);
    if (st != VIT_OK)
        return st;
    st_limits limits;
    task_file_limits(s->m, &limits);
    st_file *f;
    st = st_open_memory_limited(bytes, len, &limits, &f, err);
    if (st != VIT_OK) {
        if (err)
            vit_error_prefix(err, "task '%s'", file);
    } else {
        st = copy_metadata(f, name, kv, err);
        st_close(f);
    }
    free(bytes);
    if (st == VIT_OK && file_bytes)
        *file_bytes = (uint64_t)len;
    return st;
}

void task_store_stats_get(task_store *s, task_store_stats *out)
{
    VIT_ASSERT(s && out);
    store_lock(s);
    out->loads = s->loads;
    out->evictions = s->evictions;
    out->load_failures = s->load_failures;
    out->sync_drops = s->sync_drops;
    out->resident_bytes = s->resident_bytes;
    out->resident_count = s->resident_count;
    store_unlock(s);
}
