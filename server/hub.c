/*
 * hub.c - hf:ORG/NAME[@REVISION] to a verified checkpoint directory in the
 * cache (hub.h): names, cache layout, the lock, the download as a whole.
 * One file's transfer is hub_fetch.c's.
 *
 * The download is all or nothing for the loader: files collect in
 * incomplete/<REVISION>/ and the directory is renamed to
 * snapshots/<REVISION>/ only when every required file is there and
 * verified.  An interrupted download keeps incomplete/ (its .part files are
 * resumed next time); a refused one (404, 401, a wrong size or sha256, a
 * limit) removes it, the lock file and every directory it left empty, so a
 * failed first download leaves the cache as it found it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hub_impl.h"

#define MAX_JSON_BYTES ((int64_t)16 << 20) /* the loader's cap on config files */
#define MAX_TOKEN_BYTES 4000
#define PATH_SIZE 4096
#define COMMIT_FILE ".commit" /* in the stage: the commit its files are from */
#define MAX_MOVES 2           /* a revision that moves more often mid-download fails */

/* The files of a checkpoint, in the order they are fetched (the small ones
 * first: a missing model is found out before gigabytes move). */
static const struct hub_file {
    const char *name;
    bool optional;
    bool json;
} hub_files[] = {
    {"config.json", false, true},
    {"preprocessor_config.json", true, true},
    {"model.safetensors", false, false},
};
#define NFILES (sizeof hub_files / sizeof hub_files[0])

/* ---- names -------------------------------------------------------------- */

bool hub_is_ref(const char *model)
{
    return model && strncmp(model, HUB_PREFIX, strlen(HUB_PREFIX)) == 0;
}

static bool alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* Why s[0..n) cannot be an ORG, NAME or REVISION (at most max bytes), or
 * NULL.  These become a URL's path and directory names: letters, digits,
 * '.', '_' and '-' only, starting with a letter or digit, no "..". */
static const char *bad_part(const char *s, size_t n, size_t max)
{
    if (n == 0)
        return "is empty";
    if (n > max)
        return "is too long";
    if (!alnum(s[0]))
        return "must start with a letter or digit";
    for (size_t i = 0; i < n; i++)
        if (!alnum(s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
            return "may hold only letters, digits, '.', '_' and '-'";
    for (size_t i = 0; i + 1 < n; i++)
        if (s[i] == '.' && s[i + 1] == '.')
            return "must not contain '..'";
    if (s[n - 1] == '.')
        return "must not end with '.'";
    return NULL;
}

/* model quoted for a message: printable ASCII, at most 80 bytes. */
static const char *shown(const char *model, char *buf, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; model[i] && o + 4 < len && i < 80; i++)
        buf[o++] = model[i] >= ' ' && model[i] < 0x7f ? model[i] : '?';
    if (strlen(model) > 80 && o + 4 < len)
        buf[o++] = '.', buf[o++] = '.', buf[o++] = '.';
    buf[o] = '\0';
    return buf;
}

/* A URL quoted for a message: shown(), with any user:password replaced. */
static const char *shown_url(const char *url, char *buf, size_t len)
{
    char tmp[256];
    const char *sep = strstr(url, "://");
    const char *host = sep ? sep + 3 : url;
    size_t authority = strcspn(host, "/?#");
    const char *at = NULL;
    for (size_t i = 0; i < authority; i++)
        if (host[i] == '@')
            at = host + i;
    if (at)
        snprintf(tmp, sizeof tmp, "%.*s***@%s", (int)(host - url), url, at + 1);
    else
        snprintf(tmp, sizeof tmp, "%s", url);
    return shown(tmp, buf, len);
}

vit_status hub_parse(const char *model, hub_ref *ref, vit_error *err)
{
    memset(ref, 0, sizeof *ref);
    char q[96];
    if (!hub_is_ref(model))
        return vit_error_set(err, VIT_ERR_INVALID, "'%s' is not a hub model (hf:ORG/NAME[@REVISION])",
                             shown(model ? model : "", q, sizeof q));
    const char *id = model + strlen(HUB_PREFIX);
    const char *at = strchr(id, '@');
    size_t id_len = at ? (size_t)(at - id) : strlen(id);
    const char *rev = at ? at + 1 : "main";
    const char *slash = memchr(id, '/', id_len);
    const char *why = NULL, *what = NULL;
    if (at && strchr(rev, '@'))
        why = "has more than one '@'";
    else if (!slash)
        why = "needs ORG/NAME";
    else if (memchr(slash + 1, '/', id_len - (size_t)(slash - id) - 1))
        why = "has more than one '/' (a file inside a model cannot be named)";
    else if ((why = bad_part(id, (size_t)(slash - id), HUB_MAX_NAME)))
        what = "ORG";
    else if ((why = bad_part(slash + 1, id_len - (size_t)(slash - id) - 1, HUB_MAX_NAME)))
        what = "NAME";
    else if ((why = bad_part(rev, strlen(rev), HUB_MAX_REVISION)))
        what = "REVISION";
    if (why)
        return vit_error_set(err, VIT_ERR_INVALID, "'%s': %s%s%s (hf:ORG/NAME[@REVISION])",
                             shown(model, q, sizeof q), what ? what : "", what ? " " : "", why);
    memcpy(ref->org, id, (size_t)(slash - id));
    memcpy(ref->name, slash + 1, id_len - (size_t)(slash - id) - 1);
    memcpy(ref->revision, rev, strlen(rev));
    return VIT_OK;
}

/* ---- the cache ------------------------------------------------------------ */

/* Where one model's files live. */
typedef struct hub_paths {
    char root[PATH_SIZE];       /* the cache */
    char hub[PATH_SIZE];        /* <root>/hub */
    char org[PATH_SIZE];        /* <root>/hub/ORG */
    char repo[PATH_SIZE];       /* <root>/hub/ORG/NAME */
    char snapshots[PATH_SIZE];  /* <repo>/snapshots */
    char snapshot[PATH_SIZE];   /* <repo>/snapshots/REVISION: what the loader gets */
    char incomplete[PATH_SIZE]; /* <repo>/incomplete */
    char stage[PATH_SIZE];      /* <repo>/incomplete/REVISION: a download under way */
    char lock[PATH_SIZE];       /* <repo>/.lock */
    bool made_root;             /* this call created root (so may remove it) */
} hub_paths;

__attribute__((format(printf, 3, 4)))
static int path_fmt(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, len, fmt, ap);
    va_end(ap);
    return n >= 0 && (size_t)n < len ? 0 : -1;
}

static vit_status make_paths(const hub_ref *ref, const hub_options *o, hub_paths *p,
                             vit_error *err)
{
    memset(p, 0, sizeof *p);
    const char *home = getenv("HOME");
    int bad = 0;
    if (o->cache && *o->cache)
        bad = path_fmt(p->root, sizeof p->root, "%s", o->cache);
    else if (home && *home)
        bad = path_fmt(p->root, sizeof p->root, "%s/.cache/vitfit", home);
    else
        return vit_error_set(err, VIT_ERR_INVALID,
                             "no cache directory for downloaded models: set cache "
                             "(VITFIT_CACHE) or HOME");
    bad = bad || path_fmt(p->hub, sizeof p->hub, "%s/hub", p->root) ||
          path_fmt(p->org, sizeof p->org, "%s/%s", p->hub, ref->org) ||
          path_fmt(p->repo, sizeof p->repo, "%s/%s", p->org, ref->name) ||
          path_fmt(p->snapshots, sizeof p->snapshots, "%s/snapshots", p->repo) ||
          path_fmt(p->snapshot, sizeof p->snapshot, "%s/%s", p->snapshots, ref->revision) ||
          path_fmt(p->incomplete, sizeof p->incomplete, "%s/incomplete", p->repo) ||
          path_fmt(p->stage, sizeof p->stage, "%s/%s", p->incomplete, ref->revision) ||
          path_fmt(p->lock, sizeof p->lock, "%s/.lock", p->repo);
    if (bad)
        return vit_error_set(err, VIT_ERR_INVALID, "the cache path is too long");
    return VIT_OK;
}

/* Whether path is itself (not through a symlink) a regular file. */
static bool regular_file(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* A complete snapshot: a directory (not a symlink) holding a regular
 * config.json and model.safetensors -- never a file planted elsewhere. */
static bool snapshot_ready(const hub_paths *p)
{
    char path[PATH_SIZE + 32];
    struct stat sb;
    if (lstat(p->snapshot, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return false;
    snprintf(path, sizeof path, "%s/model.safetensors", p->snapshot);
    if (!regular_file(path))
        return false;
    snprintf(path, sizeof path, "%s/config.json", p->snapshot);
    return regular_file(path);
}

/* mkdir that accepts an existing directory; *made tells which it was. */
static int make_dir(const char *path, bool *made)
{
    if (made)
        *made = false;
    if (mkdir(path, 0755) == 0) {
        if (made)
            *made = true;
        return 0;
    }
    struct stat sb;
    return errno == EEXIST && stat(path, &sb) == 0 && S_ISDIR(sb.st_mode) ? 0 : -1;
}

/* make_dir for a directory of the cache's own layout: one that is there
 * must be a directory itself, not a symlink to one elsewhere. */
static int make_subdir(const char *path)
{
    if (mkdir(path, 0755) == 0)
        return 0;
    struct stat sb;
    return errno == EEXIST && lstat(path, &sb) == 0 && S_ISDIR(sb.st_mode) ? 0 : -1;
}

/* mkdir -p of the cache root (p->made_root: its last component was new). */
static int make_root(hub_paths *p)
{
    char path[PATH_SIZE];
    snprintf(path, sizeof path, "%s", p->root);
    for (char *s = path + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        int rc = make_dir(path, NULL);
        *s = '/';
        if (rc != 0)
            return -1;
    }
    return make_dir(path, &p->made_root);
}

static void sync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* Takes the model's lock (waiting for another process that holds it); the
 * descriptor, or -1 with err set.  A lock file removed while this process
 * waited for it (a refused download cleans up, the repo directory with it)
 * is made and opened again.  The wait polls, so that a stop request (a
 * SIGTERM to serve) ends it; a blocking flock would sit through it. */
static int lock_repo(const hub_paths *p, const hub_options *o, vit_error *err)
{
    for (int attempt = 0; attempt < 100; attempt++) {
        int fd = open(p->lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0644);
        if (fd < 0 && errno == ENOENT && make_dir(p->root, NULL) == 0 &&
            make_subdir(p->hub) == 0 && make_subdir(p->org) == 0 && make_subdir(p->repo) == 0)
            continue; /* removed by the process this one waited for */
        if (fd < 0)
            break;
        int rc = flock(fd, LOCK_EX | LOCK_NB);
        if (rc != 0 && errno == EWOULDBLOCK) {
            if (o->log)
                o->log(o->ctx, "waiting for another vitfit that is downloading this model");
            while ((rc = flock(fd, LOCK_EX | LOCK_NB)) != 0 &&
                   (errno == EWOULDBLOCK || errno == EINTR)) {
                if (o->stop && o->stop(o->ctx)) {
                    close(fd);
                    vit_error_set(err, VIT_ERR_IO, "the download was stopped while waiting for "
                                  "another vitfit downloading this model");
                    return -1;
                }
                struct timespec ts = {0, 200 * 1000 * 1000};
                nanosleep(&ts, NULL);
            }
        }
        struct stat held, now;
        if (rc == 0 && fstat(fd, &held) == 0 && stat(p->lock, &now) == 0 &&
            held.st_ino == now.st_ino && held.st_dev == now.st_dev)
            return fd;
        close(fd);
        if (rc != 0)
            break;
    }
    vit_error_set(err, VIT_ERR_IO, "cannot lock %s: %s", p->lock, strerror(errno));
    return -1;
}

/* Removes the model's directories that are empty -- the stage first: when
 * it goes, so does the lock file -- and the cache root if this call made
 * it and nothing else is in it. */
static void remove_empty(const hub_paths *p)
{
    char path[PATH_SIZE + 64];
    bool staged = false; /* a file to resume: then its commit stays recorded */
    for (size_t i = 0; i < NFILES && !staged; i++) {
        snprintf(path, sizeof path, "%s/%s", p->stage, hub_files[i].name);
        staged = lstat(path, &(struct stat){0}) == 0;
        snprintf(path, sizeof path, "%s/%s.part", p->stage, hub_files[i].name);
        staged = staged || lstat(path, &(struct stat){0}) == 0;
    }
    snprintf(path, sizeof path, "%s/" COMMIT_FILE, p->stage);
    if (!staged)
        unlink(path);
    if (rmdir(p->stage) != 0)
        return; /* a download to resume */
    rmdir(p->incomplete);
    unlink(p->lock);
    rmdir(p->repo);
    rmdir(p->org);
    rmdir(p->hub);
    if (p->made_root)
        rmdir(p->root);
}

/* Removes the staged files (and the commit they were from). */
static void drop_staged(const hub_paths *p)
{
    char path[PATH_SIZE + 64];
    for (size_t i = 0; i < NFILES; i++) {
        snprintf(path, sizeof path, "%s/%s", p->stage, hub_files[i].name);
        unlink(path);
        snprintf(path, sizeof path, "%s/%s.part", p->stage, hub_files[i].name);
        unlink(path);
    }
    snprintf(path, sizeof path, "%s/" COMMIT_FILE, p->stage);
    unlink(path);
}

/* After a refused download: removes its staged files, then what is empty. */
static void drop_download(const hub_paths *p)
{
    drop_staged(p);
    remove_empty(p);
}

/* The commit recorded in the stage into commit (HUB_COMMIT_SIZE), or "". */
static void read_commit(const hub_paths *p, char *commit)
{
    char path[PATH_SIZE + 64];
    commit[0] = '\0';
    snprintf(path, sizeof path, "%s/" COMMIT_FILE, p->stage);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
    if (fd < 0)
        return;
    ssize_t n = read(fd, commit, HUB_COMMIT_SIZE - 1);
    close(fd);
    commit[n > 0 ? n : 0] = '\0';
    if (n <= 0 || strspn(commit, "0123456789abcdef") != (size_t)n)
        commit[0] = '\0';
}

/* Records commit as the one the stage's files are from. */
static int write_commit(const hub_paths *p, const char *commit)
{
    char path[PATH_SIZE + 64];
    snprintf(path, sizeof path, "%s/" COMMIT_FILE, p->stage);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0644);
    if (fd < 0)
        return -1;
    size_t n = strlen(commit);
    int rc = write(fd, commit, n) == (ssize_t)n ? 0 : -1;
    return close(fd) == 0 ? rc : -1;
}

/* ---- resolving ---------------------------------------------------------------- */

/* Checks the hub URL (and its origin into *hub) and the token before any
 * request: VIT_ERR_INVALID naming the setting.  The token is never quoted. */
static vit_status check_settings(const hub_options *o, hub_origin *hub, vit_error *err)
{
    char q[96];
    if (!o->url || !*o->url)
        return vit_error_set(err, VIT_ERR_INVALID, "hub_url is empty");
    if (hub_origin_parse(o->url, hub, err) != VIT_OK)
        return vit_error_prefix(err, "hub_url '%s'", shown_url(o->url, q, sizeof q));
    if (strcmp(hub->scheme, "https") != 0 && !hub->loopback)
        return vit_error_set(err, VIT_ERR_INVALID,
                             "hub_url '%s' is not https (plain http only to a loopback "
                             "address)", shown_url(o->url, q, sizeof q));
    if (strchr(o->url, '?') || strchr(o->url, '#'))
        return vit_error_set(err, VIT_ERR_INVALID, "hub_url '%s' has a query or fragment",
                             shown_url(o->url, q, sizeof q));
    if (o->token && *o->token) {
        size_t n = strlen(o->token);
        bool ok = n <= MAX_TOKEN_BYTES;
        for (size_t i = 0; ok && i < n; i++)
            ok = o->token[i] > ' ' && o->token[i] < 0x7f;
        if (!ok)
            return vit_error_set(err, VIT_ERR_INVALID,
                                 "HF_TOKEN is not a token (spaces, control characters or over "
                                 "%d bytes)", MAX_TOKEN_BYTES);
    }
    if (o->max_bytes < 1)
        return vit_error_set(err, VIT_ERR_INVALID, "hub_max_bytes must be positive");
    return VIT_OK;
}

vit_status hub_check(const char *model, const hub_options *o, vit_error *err)
{
    hub_ref ref;
    hub_origin hub;
    vit_status st = hub_parse(model, &ref, err);
    return st != VIT_OK ? st : check_settings(o, &hub, err);
}

/* Fetches every file of ref into p->stage (the lock held).  The stage holds
 * files of one commit: when the hub names the commit (X-Repo-Commit) and it
 * is not the one the stage began with -- a branch moved between files, or
 * between an interrupted run and this one -- the stage starts over. */
static vit_status fetch_all(const hub_ref *ref, const hub_options *o, const hub_origin *hub,
                            const hub_paths *p, bool *refused, vit_error *err)
{
    size_t base_len = strlen(o->url);
    while (base_len > 0 && o->url[base_len - 1] == '/')
        base_len--;
    *refused = false;
    char commit[HUB_COMMIT_SIZE], seen[HUB_COMMIT_SIZE];
    read_commit(p, commit);
    int moves = 0;
    for (size_t i = 0; i < NFILES; i++) {
        const struct hub_file *f = &hub_files[i];
        char url[PATH_SIZE], part[PATH_SIZE + 64], final[PATH_SIZE + 64];
        struct stat sb;
        if (path_fmt(final, sizeof final, "%s/%s", p->stage, f->name) ||
            path_fmt(part, sizeof part, "%s/%s.part", p->stage, f->name) ||
            path_fmt(url, sizeof url, "%.*s/%s/%s/resolve/%s/%s", (int)base_len, o->url,
                     ref->org, ref->name, ref->revision, f->name))
            return vit_error_set(err, VIT_ERR_INVALID, "the hub URL or cache path is too long");
        if (lstat(final, &sb) == 0) {
            if (S_ISREG(sb.st_mode))
                continue; /* verified by an earlier, interrupted run */
            unlink(final); /* not put there by a download: fetched anew */
        }
        int64_t cap = f->json && MAX_JSON_BYTES < o->max_bytes ? MAX_JSON_BYTES : o->max_bytes;
        hub_file_job j = {.url = url, .hub = hub, .file = f->name, .part_path = part,
                          .final_path = final, .max_bytes = cap, .optional = f->optional,
                          .commit = commit, .commit_seen = seen, .o = o};
        seen[0] = '\0';
        hub_outcome out = hub_fetch_file(&j, err);
        if (out == HUB_MOVED && ++moves <= MAX_MOVES) {
            if (o->log) {
                char line[160];
                snprintf(line, sizeof line, "the revision moved on the hub (now commit %.12s): "
                         "downloading it again", seen);
                o->log(o->ctx, line);
            }
            drop_staged(p);
            commit[0] = '\0';
            i = (size_t)-1; /* from the first file again */
        }
        if (!commit[0] && seen[0]) { /* the first the hub named: what the stage is from */
            memcpy(commit, seen, sizeof commit);
            if (write_commit(p, commit) != 0)
                return vit_error_set(err, VIT_ERR_IO, "cannot write %s/" COMMIT_FILE ": %s",
                                     p->stage, strerror(errno));
        }
        if (out == HUB_MOVED && moves <= MAX_MOVES)
            continue;
        switch (out) {
        case HUB_DONE:
            sync_dir(p->stage);
            break;
        case HUB_ABSENT:
            break;
        case HUB_RETRY:
            return VIT_ERR_IO;
        case HUB_MOVED: /* handled above, or moving too often */
        case HUB_FAILED:
            *refused = true;
            return err->code == VIT_OK ? VIT_ERR_IO : err->code;
        }
    }
    return VIT_OK;
}

vit_status hub_resolve(const char *model, const hub_options *o, char *dir, size_t len,
                       vit_error *err)
{
    hub_ref ref;
    hub_paths *p = malloc(sizeof *p); /* 36 KB of paths: not on a thread's stack */
    if (!p)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    vit_status st = hub_parse(model, &ref, err);
    if (st == VIT_OK)
        st = make_paths(&ref, o, p, err);
    if (st != VIT_OK) {
        free(p);
        return st;
    }
    char spec[HUB_MAX_NAME * 2 + HUB_MAX_REVISION + 8];
    snprintf(spec, sizeof spec, "hf:%s/%s@%s", ref.org, ref.name, ref.revision);
    hub_origin hub;
    int lock = -1;
    bool refused = false;
    if (snapshot_ready(p))
        goto found;
    struct stat sb;
    if (lstat(p->snapshot, &sb) == 0) { /* a download would not be renamed over it */
        st = vit_error_set(err, VIT_ERR_IO, "%s: %s is not a complete snapshot (a directory with "
                           "config.json and model.safetensors as regular files, no symlinks): "
                           "remove it to download the model again", spec, p->snapshot);
        goto out;
    }
    if (o->offline) {
        st = vit_error_set(err, VIT_ERR_NOT_FOUND,
                           "%s is not in the cache (%s) and offline mode is on (hub_offline, "
                           "HF_HUB_OFFLINE): download it once without it", spec, p->snapshot);
        goto out;
    }
    if ((st = check_settings(o, &hub, err)) != VIT_OK)
        goto out;
    if (make_root(p) != 0 || make_subdir(p->hub) != 0 || make_subdir(p->org) != 0 ||
        make_subdir(p->repo) != 0) {
        st = vit_error_set(err, VIT_ERR_IO, "cannot create the cache directory %s: %s", p->repo,
                           strerror(errno));
        goto out;
    }
    if ((lock = lock_repo(p, o, err)) < 0) {
        st = VIT_ERR_IO;
        goto out;
    }
    if (snapshot_ready(p)) /* another process finished it while this one waited */
        goto found;
    if (make_subdir(p->incomplete) != 0 || make_subdir(p->stage) != 0) {
        st = vit_error_set(err, VIT_ERR_IO, "cannot create %s: %s", p->stage, strerror(errno));
        goto out;
    }
    if (o->log) {
        char line[PATH_SIZE + sizeof spec + 32];
        snprintf(line, sizeof line, "downloading %s into %s", spec, p->snapshot);
        o->log(o->ctx, line);
    }
    if ((st = fetch_all(&ref, o, &hub, p, &refused, err)) != VIT_OK) {
        vit_error_prefix(err, "%s", spec);
        goto out;
    }
    char commit_file[PATH_SIZE + 16];
    snprintf(commit_file, sizeof commit_file, "%s/" COMMIT_FILE, p->stage);
    unlink(commit_file); /* the snapshot holds the checkpoint's files only */
    if (make_subdir(p->snapshots) != 0 || rename(p->stage, p->snapshot) != 0) {
        st = vit_error_set(err, VIT_ERR_IO, "%s: cannot move the download into %s: %s", spec,
                           p->snapshot, strerror(errno));
        goto out;
    }
    sync_dir(p->snapshots);
    sync_dir(p->incomplete);
    rmdir(p->incomplete); /* when no other revision is under way */
found:
    if (strlen(p->snapshot) >= len)
        st = vit_error_set(err, VIT_ERR_INVALID, "the cache path %s is too long", p->snapshot);
    else
        memcpy(dir, p->snapshot, strlen(p->snapshot) + 1);
out:
    if (refused)
        drop_download(p);
    else if (lock >= 0 && st != VIT_OK)
        remove_empty(p); /* e.g. the hub could not be reached: nothing to resume */
    if (lock >= 0)
        close(lock); /* releases the flock */
    free(p);
    return st;
}
