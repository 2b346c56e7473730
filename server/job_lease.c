/*
 * job_lease.c - a fine-tune job's lease (job_lease.h says what and why).
 *
 * A lease file is a few text lines, written once by its creator:
 *
 *   vitfit-job-lease 1
 *   owner <owner id>          or    released <owner id>
 *   host <hostname>
 *   boot_id <this kernel's boot id>
 *   pidns <pid namespace inode>
 *   pid <pid>
 *   start <the process's start time, in clock ticks since boot>
 *
 * A file that does not read like that (its creator has not written it yet,
 * or died first) names no one: it goes stale by the watch like any other.
 */
#include "job_lease.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LEASE_PREFIX "lease."
#define LEASE_GEN_MAX 999999999999L  /* 12 digits: more than any job will see */
#define LEASE_FILE_MAX 1024          /* bytes of a lease file read */
#define LEASE_HEAD "vitfit-job-lease 1\n"

struct job_lease {
    char *dir;                       /* the job's directory, by path */
    int dirfd;                       /* and as claimed */
    int fd;                          /* our lease file, for the renews */
    long gen;
    long skipped;                    /* a non-regular generation claimed past, or 0 */
    char owner[JOB_LEASE_OWNER_MAX]; /* for the "released" generation */
    bool lost;                       /* another replica took it over */
};

/* What a lease file says. */
typedef struct lease_holder {
    bool known;                      /* the file read as a lease */
    bool released;
    char owner[JOB_LEASE_OWNER_MAX];
    char boot_id[40];
    uint64_t pidns, start;
    long pid;
} lease_holder;

/* ---- this process ---- */

/* state and start time (field 22) of /proc/<pid>/stat; false when it does
 * not read (errno says why). */
static bool proc_stat(long pid, char *state, uint64_t *start)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    int saved = errno;
    close(fd);
    if (n <= 0) {
        errno = n < 0 ? saved : EIO;
        return false;
    }
    buf[n] = '\0';
    /* "pid (comm) state ...": comm may hold spaces and ')', so from the last ')' */
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ') {
        errno = EIO;
        return false;
    }
    p += 2;
    *state = *p;
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (!p) {
            errno = EIO;
            return false;
        }
        p++;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(p, &end, 10);
    if (errno || end == p) {
        errno = EIO;
        return false;
    }
    *start = v;
    return true;
}

/* The first line of a small file into buf, without its newline; "" when
 * it does not read. */
static void read_line(const char *path, char *buf, size_t len)
{
    buf[0] = '\0';
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    if (!fgets(buf, (int)len, f))
        buf[0] = '\0';
    fclose(f);
    buf[strcspn(buf, "\n")] = '\0';
}

/* Letters, digits, '.', '-' and '_' of s (others '_'): one word of a lease file. */
static void word(char *s)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '-' || *s == '_'))
            *s = '_';
}

vit_status job_lease_self_init(job_lease_self *me, vit_error *err)
{
    memset(me, 0, sizeof *me);
    me->local_check = true;
    me->pid = (long)getpid();
    if (gethostname(me->host, sizeof me->host) != 0)
        snprintf(me->host, sizeof me->host, "unknown");
    me->host[sizeof me->host - 1] = '\0';
    word(me->host);
    read_line("/proc/sys/kernel/random/boot_id", me->boot_id, sizeof me->boot_id);
    word(me->boot_id);
    struct stat sb;
    if (stat("/proc/self/ns/pid", &sb) == 0)
        me->pidns = (uint64_t)sb.st_ino;
    char state;
    if (!proc_stat(me->pid, &state, &me->start_ticks))
        me->start_ticks = 0;
    uint64_t rnd;
    if (getrandom(&rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        return vit_error_set(err, VIT_ERR_IO, "cannot read random bits for the job lease owner "
                             "id: %s", strerror(errno));
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(me->owner, sizeof me->owner, "%.63s/%ld/%lld%09ld/%016llx", me->host, me->pid,
             (long long)ts.tv_sec, ts.tv_nsec, (unsigned long long)rnd);
    return VIT_OK;
}

/* ---- lease files ---- */

/* The generation of directory entry name ("lease.<G>"), or 0. */
static long gen_of(const char *name)
{
    if (strncmp(name, LEASE_PREFIX, sizeof LEASE_PREFIX - 1) != 0)
        return 0;
    const char *d = name + sizeof LEASE_PREFIX - 1;
    size_t n = strspn(d, "0123456789");
    if (n == 0 || n > 12 || d[n] != '\0' || d[0] == '0')
        return 0;
    return strtol(d, NULL, 10);
}

static void gen_name(char buf[32], long gen)
{
    snprintf(buf, 32, LEASE_PREFIX "%ld", gen);
}

/* The newest generation in the directory (0: none) into *top, and the
 * newest that is a regular file into *top_file.  Any entry with a
 * generation's name uses the name up (it cannot be created again), but
 * only a regular file can be a lease: a directory, FIFO or link there is
 * junk, which names no one. */
static vit_status newest_gen(int dfd, long *top, long *top_file, vit_error *err)
{
    *top = *top_file = 0;
    int d2 = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = d2 >= 0 ? fdopendir(d2) : NULL;
    if (!d) {
        if (d2 >= 0)
            close(d2);
        return vit_error_set(err, VIT_ERR_IO, "cannot list a job directory: %s", strerror(errno));
    }
    struct dirent *e;
    struct stat sb;
    while ((e = readdir(d))) {
        long g = gen_of(e->d_name);
        if (g > *top)
            *top = g;
        if (g > *top_file && fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISREG(sb.st_mode))
            *top_file = g;
    }
    closedir(d);
    return VIT_OK;
}

/* Reads lease.<gen>: what it says into *h, its fstat into *sb.  -1 with
 * errno when it cannot be opened (ENOENT: gone meanwhile). */
static int read_holder(int dfd, long gen, lease_holder *h, struct stat *sb)
{
    memset(h, 0, sizeof *h);
    char name[32];
    gen_name(name, gen);
    int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char buf[LEASE_FILE_MAX + 1];
    size_t len = 0;
    ssize_t n;
    bool ok = fstat(fd, sb) == 0 && S_ISREG(sb->st_mode);
    while (ok && len < LEASE_FILE_MAX && (n = read(fd, buf + len, LEASE_FILE_MAX - len)) > 0)
        len += (size_t)n;
    close(fd);
    if (!ok) {
        errno = EIO;
        return -1;
    }
    buf[len] = '\0';
    if (strncmp(buf, LEASE_HEAD, sizeof LEASE_HEAD - 1) != 0)
        return 0; /* not written yet, or not ours: names no one */
    bool owner = false, complete = false;
    for (char *line = buf + sizeof LEASE_HEAD - 1, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
        *nl = '\0';
        char *val = strchr(line, ' ');
        if (!val)
            continue;
        *val++ = '\0';
        if (strcmp(line, "owner") == 0 || strcmp(line, "released") == 0) {
            snprintf(h->owner, sizeof h->owner, "%s", val);
            h->released = line[0] == 'r';
            owner = true;
        } else if (strcmp(line, "boot_id") == 0) {
            snprintf(h->boot_id, sizeof h->boot_id, "%s", val);
        } else if (strcmp(line, "pidns") == 0) {
            h->pidns = strtoull(val, NULL, 10);
        } else if (strcmp(line, "pid") == 0) {
            h->pid = strtol(val, NULL, 10);
        } else if (strcmp(line, "start") == 0) {
            h->start = strtoull(val, NULL, 10);
            complete = true; /* the last line: the file was written whole */
        }
    }
    h->known = owner && (h->released || complete);
    return 0;
}

/* Whether holder h is a process of this kernel and pid namespace that has
 * gone (job_lease.h, "Stale").  False whenever that cannot be known. */
static bool holder_gone(const job_lease_self *me, const lease_holder *h)
{
    if (!me->local_check || !h->known || h->released || !me->boot_id[0] || !me->pidns ||
        strcmp(h->boot_id, me->boot_id) != 0 || h->pidns != me->pidns || h->pid <= 0)
        return false;
    if (h->pid == me->pid) /* our pid, another owner: the process that wrote it is gone */
        return strcmp(h->owner, me->owner) != 0;
    if (kill((pid_t)h->pid, 0) != 0 && errno == ESRCH)
        return true;
    char state;
    uint64_t start;
    if (!proc_stat(h->pid, &state, &start)) /* hidden by hidepid, say: it may live */
        return false;
    /* a pid reused by a process that started at another time (start 0: its
     * holder could not read its own, so only its absence tells) */
    return state == 'Z' || state == 'X' || (h->start != 0 && start != h->start);
}

/* The text of a lease file for me: a holder's, or "released". */
static int lease_text(char *buf, size_t len, const job_lease_self *me, bool released)
{
    if (released)
        return snprintf(buf, len, LEASE_HEAD "released %s\n", me->owner);
    return snprintf(buf, len,
                    LEASE_HEAD "owner %s\nhost %s\nboot_id %s\npidns %llu\npid %ld\nstart %llu\n",
                    me->owner, me->host, me->boot_id[0] ? me->boot_id : "-",
                    (unsigned long long)me->pidns, me->pid,
                    (unsigned long long)me->start_ticks);
}

/* Creates lease.<gen> exclusively with text (fsynced, so that another NFS
 * client reads it whole).  The descriptor, or -1 with errno (EEXIST: another
 * replica created it first). */
static int create_gen(int dfd, long gen, const char *text)
{
    if (gen > LEASE_GEN_MAX) { /* a name no one would read as a generation */
        errno = EOVERFLOW;
        return -1;
    }
    char name[32];
    gen_name(name, gen);
    int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    if (off < len || fsync(fd) != 0) {
        int saved = errno ? errno : EIO;
        /* never held: no one could have judged it stale yet */
        unlinkat(dfd, name, 0);
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

/* ---- the lease ---- */

vit_status job_lease_claim(const char *dir, const job_lease_self *me, long lease_ms,
                           job_lease_watch *w, double now, job_lease **out, vit_error *err)
{
    *out = NULL;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        return vit_error_set(err, errno == ENOENT ? VIT_ERR_NOT_FOUND : VIT_ERR_IO,
                             "cannot open the job directory %s: %s", dir, strerror(errno));
    long top, top_file;
    vit_status st = newest_gen(dfd, &top, &top_file, err);
    if (st != VIT_OK) {
        close(dfd);
        return st;
    }
    if (top >= LEASE_GEN_MAX - 1) { /* a claim needs room for its release too */
        close(dfd);
        if (w->gen == top) /* said at the first look: the job waits, and says so once */
            return VIT_OK;
        *w = (job_lease_watch){.gen = top};
        return vit_error_set(err, VIT_ERR_IO, "%s: lease.%ld is the last generation a lease may "
                             "have (no job claims that many times: it was put there by hand); "
                             "the job cannot be claimed until its lease.* files are removed",
                             dir, top);
    }
    /* the lease is the newest regular file; junk above it (a directory,
     * FIFO, link named like a generation) names no one, but uses its name
     * up: a claim goes past it, once the lease below is free or stale */
    long skipped = top != top_file ? top : 0;
    if (top_file > 0) {
        lease_holder h;
        struct stat sb;
        if (read_holder(dfd, top_file, &h, &sb) != 0) { /* gone meanwhile: changing, look again */
            memset(w, 0, sizeof *w);
            close(dfd);
            return VIT_OK;
        }
        /* a lease naming this process is one it has let go of -- a caller
         * never claims a job it holds -- as when a restore of the job's
         * directory put its old lease file back: free at once, or the job
         * would wait for ever on a single replica */
        bool ours = h.known && !h.released && strcmp(h.owner, me->owner) == 0;
        bool free_now = h.released || ours || holder_gone(me, &h);
        if (!free_now) {
            bool same = w->gen == top_file && w->dev == (uint64_t)sb.st_dev &&
                        w->ino == (uint64_t)sb.st_ino && w->size == (uint64_t)sb.st_size &&
                        w->mtime_s == (int64_t)sb.st_mtim.tv_sec &&
                        w->mtime_ns == (int64_t)sb.st_mtim.tv_nsec;
            if (!same) { /* renewed, or new: watch it from now */
                *w = (job_lease_watch){.gen = top_file, .dev = (uint64_t)sb.st_dev,
                                       .ino = (uint64_t)sb.st_ino, .size = (uint64_t)sb.st_size,
                                       .mtime_s = (int64_t)sb.st_mtim.tv_sec,
                                       .mtime_ns = (int64_t)sb.st_mtim.tv_nsec, .since = now};
            }
            if (!same || (now - w->since) * 1000.0 < (double)lease_ms) {
                close(dfd);
                return VIT_OK; /* held */
            }
            /* stale: unchanged for lease_ms by our clock */
        }
    }
    char text[512];
    lease_text(text, sizeof text, me, false);
    int fd = create_gen(dfd, top + 1, text);
    if (fd < 0) {
        int e = errno;
        close(dfd);
        if (e == EEXIST) /* another replica was first */
            return VIT_OK;
        return vit_error_set(err, VIT_ERR_IO, "cannot create a lease in %s: %s", dir,
                             strerror(e));
    }
    job_lease *l = calloc(1, sizeof *l);
    if (l && !(l->dir = strdup(dir))) {
        free(l);
        l = NULL;
    }
    if (!l) { /* hand it back at once */
        char rel[256];
        lease_text(rel, sizeof rel, me, true);
        int r = create_gen(dfd, top + 2, rel);
        if (r >= 0)
            close(r);
        close(fd);
        close(dfd);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    }
    l->dirfd = dfd;
    l->fd = fd;
    l->gen = top + 1;
    l->skipped = skipped;
    snprintf(l->owner, sizeof l->owner, "%s", me->owner);
    memset(w, 0, sizeof *w);
    *out = l;
    return VIT_OK;
}

long job_lease_gen(const job_lease *l)
{
    return l->gen;
}

long job_lease_skipped(const job_lease *l)
{
    return l->skipped;
}

bool job_lease_held(job_lease *l)
{
    if (l->lost)
        return false;
    struct stat own, named;
    if (fstat(l->fd, &own) != 0) /* cannot tell: held, as after a failed renew */
        return true;
    if (own.st_nlink == 0) { /* removed: the job ended elsewhere */
        l->lost = true;
        return false;
    }
    /* the job's directory as its path names it now: one moved away and put
     * back as a copy (a restore) holds a lease file that is not ours, and a
     * successor's lease beside it */
    int dfd = open(l->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) {
        /* the path names no directory (gone, a file, a link): lost; an
         * error that cannot tell (EMFILE, EACCES) keeps it, as a failed
         * renew does */
        if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP)
            l->lost = true;
        return !l->lost;
    }
    char name[32];
    gen_name(name, l->gen);
    if (fstatat(dfd, name, &named, AT_SYMLINK_NOFOLLOW) != 0
            ? errno == ENOENT
            : named.st_dev != own.st_dev || named.st_ino != own.st_ino) {
        l->lost = true;
    } else {
        /* any newer lease, not only the next: a claimer past junk names a
         * generation beyond ours + 1.  Junk itself (not a regular file) is
         * no one's lease and takes nothing over.  A listing that fails
         * cannot tell: still held */
        long top, top_file;
        vit_error err;
        if (newest_gen(dfd, &top, &top_file, &err) == VIT_OK && top_file > l->gen)
            l->lost = true; /* taken over */
    }
    close(dfd);
    return !l->lost;
}

bool job_lease_renew(job_lease *l)
{
    if (l->lost)
        return false;
    futimens(l->fd, NULL); /* a failure is seen as staleness by the others, in time */
    return job_lease_held(l);
}

void job_lease_drop(job_lease *l)
{
    if (!l)
        return;
    close(l->fd);
    close(l->dirfd);
    free(l->dir);
    free(l);
}

void job_lease_release(job_lease *l)
{
    if (!l)
        return;
    long top, top_file;
    vit_error err;
    if (job_lease_held(l) && newest_gen(l->dirfd, &top, &top_file, &err) == VIT_OK) {
        char text[256];
        snprintf(text, sizeof text, LEASE_HEAD "released %s\n", l->owner);
        /* past junk above ours, if any: that name is used up */
        int fd = create_gen(l->dirfd, top + 1, text);
        if (fd >= 0)
            close(fd);
    }
    job_lease_drop(l);
}

int job_lease_end(job_lease *l)
{
    if (!l)
        return -1;
    int removed = -1;
    if (job_lease_held(l)) {
        /* the older generations first and ours last, so that the newest
         * lease stays ours until the end; never a newer one: a successor
         * that claimed since the look above reads job.json, finds the job
         * ended and removes its own */
        removed = 0;
        int d2 = openat(l->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = d2 >= 0 ? fdopendir(d2) : NULL;
        if (!d && d2 >= 0)
            close(d2);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            long g = gen_of(e->d_name);
            if (g > 0 && g < l->gen && unlinkat(dirfd(d), e->d_name, 0) == 0)
                removed++;
        }
        if (d)
            closedir(d);
        char own[32];
        gen_name(own, l->gen);
        removed += unlinkat(l->dirfd, own, 0) == 0;
    }
    job_lease_drop(l);
    return removed;
}

int job_lease_remove_all(const char *dir)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!d) {
        if (dfd >= 0)
            close(dfd);
        return 0;
    }
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (gen_of(e->d_name) > 0 && unlinkat(dirfd(d), e->d_name, 0) == 0)
            removed++;
    closedir(d);
    return removed;
}

bool job_lease_any(const char *dir)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        return false;
    long top = 0, top_file = 0;
    vit_error err;
    bool any = newest_gen(dfd, &top, &top_file, &err) == VIT_OK && top_file > 0;
    close(dfd);
    return any;
}
