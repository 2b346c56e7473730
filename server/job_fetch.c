/*
 * job_fetch.c - a fine-tune job's URL fetcher with its answers kept on disk
 * (job_fetch.h).
 *
 * Design
 *   - One answer per URL per job.  The key is the hex sha256 of the URL as
 *     the manifest wrote it; the body goes to fetched/<key>, a failure to
 *     fetched/<key>.failed ("<vit_status> <message>").  A call looks there
 *     first; a miss requests the URL and writes the answer (temp file,
 *     fsync, rename, fsync of the directory) before returning it, so what a
 *     later call -- another epoch, a resumed run -- reads is what this one
 *     returned.
 *   - Everything is opened relative to a descriptor of fetched/, itself
 *     opened from the job directory with O_NOFOLLOW, and every cache file
 *     with O_NOFOLLOW and checked to be regular: nothing outside the job
 *     directory is read, whatever was planted in it.
 *   - Calls for the same key wait for each other (an in-flight list under
 *     the lock); the request itself runs without the lock.  The job's
 *     budget (URLs, bytes) is reserved under the lock before a request --
 *     a body may take min(limit, what is left) bytes -- and settled after.
 */
#include "job_fetch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "beneath.h"
#include "dataset.h"
#include "sha256.h"

#define JF_DIR "fetched"
#define JF_FAILED_SUFFIX ".failed"
#define JF_TMP_PREFIX ".tmp-"
#define JF_FAILED_MAX 1024 /* bytes of a .failed file */
#define JF_KEY_LEN 64      /* hex sha256 */

_Static_assert(DS_MAX_URL == API_FETCH_MAX_URL, "a manifest URL is one api_fetch takes");

struct job_fetch {
    job_fetch_config cfg;
    int dirfd;                  /* <job_dir>/fetched */
    pthread_mutex_t lock;       /* guards everything below */
    pthread_cond_t settled;     /* a key left the in-flight list */
    char (*busy)[JF_KEY_LEN + 1]; /* (nbusy) keys being looked up or fetched */
    size_t nbusy, capbusy;
    size_t urls;                /* URLs the job has spent */
    uint64_t bytes;             /* body bytes the job has spent */
    uint64_t reserved;          /* bytes reserved by requests in flight */
    size_t requests, hits;
    unsigned long tmp_seq;      /* names temp files apart */
};

/* ---- helpers ---- */

static void url_key(const char *url, char key[JF_KEY_LEN + 1])
{
    sha256_ctx c;
    uint8_t digest[SHA256_DIGEST_LEN];
    sha256_init(&c);
    sha256_update(&c, url, strlen(url));
    sha256_final(&c, digest);
    sha256_hex(digest, key);
}

/* Is name a key (64 lower-case hex digits), optionally followed by suffix? */
static bool is_key_name(const char *name, const char *suffix)
{
    for (int i = 0; i < JF_KEY_LEN; i++) {
        char ch = name[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')))
            return false;
    }
    return strcmp(name + JF_KEY_LEN, suffix) == 0;
}

static bool stopping(const job_fetch *f)
{
    return (f->cfg.limits.cancel && atomic_load(f->cfg.limits.cancel)) ||
           (f->cfg.job_cancel && atomic_load(f->cfg.job_cancel));
}

static vit_status stopped_error(bool *stopped, vit_error *err)
{
    *stopped = true;
    return vit_error_set(err, VIT_ERR_IO, "the fetch was abandoned: the job is stopping");
}

/* The status a failed api_fetch gives the item. */
static vit_status status_of(api_fetch_result r)
{
    switch (r) {
    case API_FETCH_OK:
        return VIT_OK;
    case API_FETCH_BAD_URL:
    case API_FETCH_FORBIDDEN:
        return VIT_ERR_INVALID;
    case API_FETCH_TOO_LARGE:
        return VIT_ERR_TOO_LARGE;
    case API_FETCH_FAILED:
    case API_FETCH_TIMEOUT:
        return VIT_ERR_IO;
    }
    return VIT_ERR_IO;
}

/* Opens cache file `name` for reading: 1 with *fd and *size, 0 when there is
 * none, -1 (err filled) when the entry is not a regular file or unreadable. */
static int open_cached(const job_fetch *f, const char *name, int *fd, size_t *size,
                       vit_error *err)
{
    *fd = openat(f->dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (*fd < 0) {
        if (errno == ENOENT)
            return 0;
        vit_error_set(err, VIT_ERR_IO, "the job's copy of the URL cannot be read: %s",
                      errno == ELOOP ? "it is a symbolic link" : strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(*fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(*fd);
        *fd = -1;
        vit_error_set(err, VIT_ERR_IO, "the job's copy of the URL is not a regular file");
        return -1;
    }
    *size = (size_t)st.st_size;
    return 1;
}

/* Looks key up in fetched/: 1 when answered (VIT_OK with *data and *len, or
 * the cached failure in *st and err), 0 when not cached. */
static int lookup(job_fetch *f, const char *key, size_t cap, uint8_t **data, size_t *len,
                  vit_status *st, vit_error *err)
{
    int fd;
    size_t size = 0;
    int got = open_cached(f, key, &fd, &size, err);
    if (got < 0) {
        *st = VIT_ERR_IO;
        return 1;
    }
    if (got > 0) {
        if (size > cap)
            *st = vit_error_set(err, VIT_ERR_TOO_LARGE,
                                "the job's copy of the URL is %zu bytes, over the limit of %zu",
                                size, cap);
        else
            *st = beneath_read_capped(fd, size, cap, "the job's copy of the URL", data, len,
                                      err);
        close(fd);
        return 1;
    }
    char name[JF_KEY_LEN + sizeof JF_FAILED_SUFFIX];
    snprintf(name, sizeof name, "%s%s", key, JF_FAILED_SUFFIX);
    if ((got = open_cached(f, name, &fd, &size, err)) == 0)
        return 0;
    if (got < 0) {
        *st = VIT_ERR_IO;
        return 1;
    }
    char text[JF_FAILED_MAX + 1];
    ssize_t n = read(fd, text, JF_FAILED_MAX);
    close(fd);
    text[n > 0 ? n : 0] = '\0';
    char *rest = NULL;
    long code = strtol(text, &rest, 10);
    if (n <= 0 || rest == text || *rest != ' ' || code <= VIT_OK || code > VIT_ERR_MISMATCH) {
        *st = vit_error_set(err, VIT_ERR_IO, "the job's record of a failed fetch is damaged");
        return 1;
    }
    rest[strcspn(rest, "\n")] = '\0';
    *st = vit_error_set(err, (vit_status)code, "%s", rest + 1);
    return 1;
}

/* Writes len bytes of p to fetched/<name> atomically (temp file, fsync,
 * rename, fsync of the directory). */
static vit_status store(job_fetch *f, const char *name, const void *p, size_t len,
                        vit_error *err)
{
    char tmp[JF_KEY_LEN + 64];
    pthread_mutex_lock(&f->lock);
    unsigned long seq = f->tmp_seq++;
    pthread_mutex_unlock(&f->lock);
    snprintf(tmp, sizeof tmp, "%s%.*s-%lu", JF_TMP_PREFIX, JF_KEY_LEN, name, seq);
    int fd = openat(f->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return vit_error_set(err, VIT_ERR_IO, "cannot keep the fetched image in the job: %s",
                             strerror(errno));
    const uint8_t *b = p;
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, b + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        done += (size_t)w;
    }
    int e = done == len ? 0 : (errno ? errno : EIO);
    if (!e && fsync(fd) != 0)
        e = errno;
    close(fd);
    if (!e && renameat(f->dirfd, tmp, f->dirfd, name) != 0)
        e = errno;
    if (e) {
        unlinkat(f->dirfd, tmp, 0);
        return vit_error_set(err, VIT_ERR_IO, "cannot keep the fetched image in the job: %s",
                             strerror(e));
    }
    fsync(f->dirfd);
    return VIT_OK;
}

/* Adds key to the in-flight list after waiting for any call holding it. */
static vit_status claim(job_fetch *f, const char *key, vit_error *err)
{
    pthread_mutex_lock(&f->lock);
    for (;;) {
        bool held = false;
        for (size_t i = 0; i < f->nbusy && !held; i++)
            held = strcmp(f->busy[i], key) == 0;
        if (!held)
            break;
        pthread_cond_wait(&f->settled, &f->lock);
    }
    if (f->nbusy == f->capbusy) {
        size_t ncap = f->capbusy ? 2 * f->capbusy : 8;
        void *nb = realloc(f->busy, ncap * sizeof *f->busy);
        if (!nb) {
            pthread_mutex_unlock(&f->lock);
            return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
        }
        f->busy = nb;
        f->capbusy = ncap;
    }
    memcpy(f->busy[f->nbusy++], key, JF_KEY_LEN + 1);
    pthread_mutex_unlock(&f->lock);
    return VIT_OK;
}

static void release(job_fetch *f, const char *key)
{
    pthread_mutex_lock(&f->lock);
    for (size_t i = 0; i < f->nbusy; i++)
        if (strcmp(f->busy[i], key) == 0) {
            memcpy(f->busy[i], f->busy[--f->nbusy], JF_KEY_LEN + 1);
            break;
        }
    pthread_cond_broadcast(&f->settled);
    pthread_mutex_unlock(&f->lock);
}

/* Requests url (key claimed, not cached) within cap bytes and the job's
 * budget, and keeps the answer. */
static vit_status fetch_and_keep(job_fetch *f, const char *url, const char *key, size_t cap,
                                 uint8_t **data, size_t *len, bool *stopped, vit_error *err)
{
    if (stopping(f))
        return stopped_error(stopped, err);
    uint64_t limit = f->cfg.max_total_bytes;
    pthread_mutex_lock(&f->lock);
    uint64_t spent = f->bytes + f->reserved, left = spent < limit ? limit - spent : 0;
    if (f->urls >= f->cfg.max_urls || left == 0) {
        bool count = f->urls >= f->cfg.max_urls;
        size_t urls = f->urls;
        pthread_mutex_unlock(&f->lock);
        if (count)
            return vit_error_set(err, VIT_ERR_TOO_LARGE,
                                 "not fetched: the job has requested %zu URLs, its limit", urls);
        return vit_error_set(err, VIT_ERR_TOO_LARGE,
                             "not fetched: the job's URLs have taken %llu bytes, its limit",
                             (unsigned long long)limit);
    }
    size_t take = (uint64_t)cap < left ? cap : (size_t)left;
    f->reserved += take;
    f->urls++;
    f->requests++;
    pthread_mutex_unlock(&f->lock);

    api_fetch_limits lim = f->cfg.limits;
    lim.max_bytes = take;
    char msg[400];
    api_fetch_result res = api_fetch(url, &lim, data, len, msg, sizeof msg);

    pthread_mutex_lock(&f->lock);
    f->reserved -= take;
    if (res == API_FETCH_OK)
        f->bytes += *len;
    pthread_mutex_unlock(&f->lock);

    if (res == API_FETCH_OK) {
        vit_status st = store(f, key, *data, *len, err);
        if (st != VIT_OK) { /* an answer that is not kept could differ next epoch */
            free(*data);
            *data = NULL;
            *len = 0;
        }
        return st;
    }
    if (stopping(f))
        return stopped_error(stopped, err);
    if (res == API_FETCH_TOO_LARGE && take < cap) /* the budget refused it, not the URL */
        return vit_error_set(err, VIT_ERR_TOO_LARGE,
                             "not fetched whole: the job's URLs together passed %llu bytes, "
                             "its limit",
                             (unsigned long long)limit);
    vit_status st = status_of(res);
    char record[JF_FAILED_MAX], name[JF_KEY_LEN + sizeof JF_FAILED_SUFFIX];
    snprintf(record, sizeof record, "%d %s\n", (int)st, msg); /* msg < 400 bytes: fits */
    snprintf(name, sizeof name, "%s%s", key, JF_FAILED_SUFFIX);
    vit_error kept = {0};
    if (store(f, name, record, strlen(record), &kept) != VIT_OK)
        return vit_error_set(err, VIT_ERR_IO, "%s (and %s)", msg, kept.message);
    return vit_error_set(err, st, "%s", msg);
}

/* ---- the interface ---- */

vit_status job_fetch_get(void *ctx, const char *url, size_t max_bytes, uint8_t **data,
                         size_t *len, bool *stopped, vit_error *err)
{
    job_fetch *f = ctx;
    *data = NULL;
    *len = 0;
    size_t cap = max_bytes < f->cfg.limits.max_bytes ? max_bytes : f->cfg.limits.max_bytes;
    if (cap == 0)
        return vit_error_set(err, VIT_ERR_INVALID, "job_fetch_get: no byte may be fetched");
    char key[JF_KEY_LEN + 1];
    url_key(url, key);
    vit_status st = claim(f, key, err);
    if (st != VIT_OK)
        return st;
    if (lookup(f, key, cap, data, len, &st, err)) {
        pthread_mutex_lock(&f->lock);
        f->hits++;
        pthread_mutex_unlock(&f->lock);
    } else {
        st = fetch_and_keep(f, url, key, cap, data, len, stopped, err);
    }
    release(f, key);
    return st;
}

/* Counts what fetched/ holds (URLs, body bytes) and removes temp files. */
static vit_status scan(job_fetch *f, vit_error *err)
{
    int fd = dup(f->dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return vit_error_set(err, VIT_ERR_IO, "cannot list the job's fetched images: %s",
                             strerror(errno));
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, JF_TMP_PREFIX, strlen(JF_TMP_PREFIX)) == 0) {
            unlinkat(f->dirfd, e->d_name, 0); /* a write a crash cut short */
            continue;
        }
        bool body = is_key_name(e->d_name, ""), failed = is_key_name(e->d_name, JF_FAILED_SUFFIX);
        struct stat st;
        if ((!body && !failed) || fstatat(f->dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISREG(st.st_mode))
            continue;
        f->urls++;
        if (body)
            f->bytes += (uint64_t)st.st_size;
    }
    closedir(d);
    return VIT_OK;
}

vit_status job_fetch_open(const job_fetch_config *c, job_fetch **out, vit_error *err)
{
    *out = NULL;
    VIT_ASSERT(c && c->job_dir && c->limits.max_bytes > 0);
    job_fetch *f = calloc(1, sizeof *f);
    if (!f)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    f->cfg = *c;
    f->cfg.job_dir = NULL; /* not kept: only the descriptor below */
    if (!f->cfg.max_total_bytes)
        f->cfg.max_total_bytes = JOB_FETCH_MAX_TOTAL_BYTES;
    if (!f->cfg.max_urls)
        f->cfg.max_urls = JOB_FETCH_MAX_URLS;
    f->dirfd = -1;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->settled, NULL);
    vit_status st = VIT_OK;
    int jfd = open(c->job_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (jfd < 0) {
        st = vit_error_set(err, VIT_ERR_IO, "cannot open the job directory %s: %s", c->job_dir,
                           strerror(errno));
    } else {
        if (mkdirat(jfd, JF_DIR, 0700) != 0 && errno != EEXIST)
            st = vit_error_set(err, VIT_ERR_IO, "cannot create %s/%s: %s", c->job_dir, JF_DIR,
                               strerror(errno));
        else if ((f->dirfd = openat(jfd, JF_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
                                                     O_CLOEXEC)) < 0) {
            int e = errno;
            struct stat ls;
            bool link = fstatat(jfd, JF_DIR, &ls, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(ls.st_mode);
            st = vit_error_set(err, VIT_ERR_IO, "cannot open %s/%s as a directory: %s",
                               c->job_dir, JF_DIR, link ? "it is a symbolic link" : strerror(e));
        }
        close(jfd);
    }
    if (st == VIT_OK)
        st = scan(f, err);
    if (st != VIT_OK) {
        job_fetch_close(f);
        return st;
    }
    *out = f;
    return VIT_OK;
}

void job_fetch_close(job_fetch *f)
{
    if (!f)
        return;
    if (f->dirfd >= 0)
        close(f->dirfd);
    free(f->busy);
    pthread_cond_destroy(&f->settled);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

vit_status job_fetch_remove(const char *job_dir, vit_error *err)
{
    int jfd = open(job_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (jfd < 0)
        return vit_error_set(err, VIT_ERR_IO, "cannot open the job directory %s: %s", job_dir,
                             strerror(errno));
    vit_status st = VIT_OK;
    int dfd = openat(jfd, JF_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!d) {
        if (dfd >= 0)
            close(dfd);
        /* none, or not a directory (a symlink): only the name goes */
        if (unlinkat(jfd, JF_DIR, 0) != 0 && errno != ENOENT && errno != EISDIR)
            st = vit_error_set(err, VIT_ERR_IO, "cannot remove %s/%s: %s", job_dir, JF_DIR,
                               strerror(errno));
        close(jfd);
        return st;
    }
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            unlinkat(dirfd(d), e->d_name, 0);
    closedir(d);
    if (unlinkat(jfd, JF_DIR, AT_REMOVEDIR) != 0 && errno != ENOENT)
        st = vit_error_set(err, VIT_ERR_IO, "cannot remove %s/%s: %s", job_dir, JF_DIR,
                           strerror(errno));
    close(jfd);
    return st;
}

void job_fetch_stats_get(job_fetch *f, job_fetch_stats *out)
{
    pthread_mutex_lock(&f->lock);
    *out = (job_fetch_stats){.requests = f->requests, .hits = f->hits, .urls = f->urls,
                             .bytes = f->bytes};
    pthread_mutex_unlock(&f->lock);
}
