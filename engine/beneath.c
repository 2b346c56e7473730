/*
 * beneath.c - opening untrusted paths beneath a root directory (see beneath.h
 * for the contract).
 *
 * Design
 *   - A root is a descriptor of its directory plus two spellings of its path:
 *     the canonical one (realpath) and the one it was opened by, made
 *     absolute and lexically normalized.  An absolute path (given, or a
 *     symlink's target) is under the root when it begins with either; that
 *     is a comparison of names, so nothing outside is looked at.
 *   - A walk (bn_walk) holds a descriptor of every directory from the root
 *     down to where it is, so ".." is a pop, never a lookup, and knows the
 *     symlink-free path of where it is (canon).  A symlink restarts the rest
 *     of the path from its target: relative targets from the current
 *     directory, absolute ones from the root (popping everything).
 *   - Types are checked twice: fstatat(AT_SYMLINK_NOFOLLOW) before the open
 *     (a FIFO or device is never opened), fstat of the descriptor after it
 *     (a FIFO swapped in between is caught; O_NONBLOCK kept its open from
 *     blocking).
 */
#include "beneath.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A directory that paths are opened beneath. */
struct beneath_root {
    int fd;      /* the directory, opened by beneath_root_open */
    char *real;  /* its canonical path: names of what is opened, absolute paths */
    char *lex;   /* the path as given, absolute and lexically normalized */
    int clamp;   /* the root is "/": ".." at the top stays there */
    char *label; /* names the root in messages, e.g. "data set root" */
};

/* ================================================================ path helpers */

char *beneath_join(const char *a, const char *b)
{
    if (b[0] == '/')
        return strdup(b);
    size_t la = strlen(a), lb = strlen(b);
    char *p = malloc(la + lb + 2);
    if (!p)
        return NULL;
    memcpy(p, a, la);
    p[la] = '/';
    memcpy(p + la + 1, b, lb + 1);
    return p;
}

/* Returns a malloc'd absolute form of path (cwd prepended when relative, not
 * normalized: ".." is left for the walk to resolve); NULL on OOM or if getcwd
 * fails. */
static char *path_absolute(const char *path)
{
    if (path[0] == '/')
        return strdup(path);
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd))
        return NULL;
    return beneath_join(cwd, path);
}

/* Returns a malloc'd absolute, lexically normalized form of path: "." and
 * empty components dropped, ".." removes the previous component (never above
 * "/").  Symlinks are not looked at.  NULL on OOM or if getcwd fails. */
static char *path_lexical(const char *path)
{
    char *abs = path_absolute(path);
    if (!abs)
        return NULL;
    size_t len = strlen(abs);
    char *out = malloc(len + 2);
    if (!out) {
        free(abs);
        return NULL;
    }
    size_t o = 0;
    for (char *p = abs; *p;) {
        while (*p == '/')
            p++;
        char *e = p;
        while (*e && *e != '/')
            e++;
        size_t n = (size_t)(e - p);
        if (n == 0 || (n == 1 && p[0] == '.')) {
            /* skip */
        } else if (n == 2 && p[0] == '.' && p[1] == '.') {
            while (o > 0 && out[o - 1] != '/')
                o--;
            if (o > 0)
                o--; /* drop the separator too */
        } else {
            out[o++] = '/';
            memcpy(out + o, p, n);
            o += n;
        }
        p = e;
    }
    if (o == 0)
        out[o++] = '/';
    out[o] = '\0';
    free(abs);
    return out;
}

/* ================================================================ the root */

vit_status beneath_root_open(const char *dir, const char *label, beneath_root **out,
                             vit_error *err)
{
    *out = NULL;
    beneath_root *r = calloc(1, sizeof *r);
    if (!r || !(r->label = strdup(label))) {
        free(r);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory resolving %s", dir);
    }
    r->fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (r->fd < 0) {
        int e = errno;
        beneath_root_close(r);
        return vit_error_set(err, e == ENOENT ? VIT_ERR_NOT_FOUND : VIT_ERR_IO, "%s %s: %s",
                             label, dir, strerror(e));
    }
    r->real = realpath(dir, NULL);
    if (!r->real) {
        int e = errno;
        beneath_root_close(r);
        return vit_error_set(err, e == ENOMEM ? VIT_ERR_NOMEM : VIT_ERR_IO, "%s %s: %s", label,
                             dir, strerror(e));
    }
    r->lex = path_lexical(dir);
    if (!r->lex) {
        beneath_root_close(r);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory resolving %s", dir);
    }
    r->clamp = strcmp(r->real, "/") == 0;
    *out = r;
    return VIT_OK;
}

void beneath_root_close(beneath_root *r)
{
    if (!r)
        return;
    if (r->fd >= 0)
        close(r->fd);
    free(r->real);
    free(r->lex);
    free(r->label);
    free(r);
}

const char *beneath_root_path(const beneath_root *r) { return r->real; }

char *beneath_path(const beneath_root *r, const char *rel)
{
    if (!r->clamp)
        return beneath_join(r->real, rel);
    size_t n = strlen(rel);
    char *p = malloc(n + 2);
    if (p) {
        p[0] = '/';
        memcpy(p + 1, rel, n + 1);
    }
    return p;
}

/* The part of absolute path `abs` below the root (leading '/' skipped), or
 * NULL when abs does not start with the root's real or given path.  Purely
 * lexical: ".." left in the rest is resolved (and refused above the root) by
 * the walk. */
static const char *strip_root(const beneath_root *r, const char *abs)
{
    const char *rest = NULL;
    if (r->clamp) {
        rest = abs;
    } else {
        const char *forms[2] = {r->real, r->lex};
        for (int i = 0; i < 2 && !rest; i++) {
            size_t n = strlen(forms[i]);
            if (strncmp(abs, forms[i], n) == 0 && (abs[n] == '/' || abs[n] == '\0'))
                rest = abs + n;
        }
    }
    while (rest && *rest == '/')
        rest++;
    return rest;
}

beneath_result beneath_relative(const beneath_root *r, const char *path, char **rel)
{
    *rel = NULL;
    char *abs = path_absolute(path);
    if (!abs)
        return BENEATH_NOMEM;
    const char *rest = strip_root(r, abs);
    *rel = rest ? strdup(rest) : NULL;
    free(abs);
    if (!rest)
        return BENEATH_OUTSIDE;
    return *rel ? BENEATH_OK : BENEATH_NOMEM;
}

/* ================================================================ the walk */

/* The directories a walk holds: fds[0] is the root's (borrowed), fds[1..depth]
 * are owned; canon is their names joined by '/', ends[i] its length at depth i. */
typedef struct bn_walk {
    int *fds;
    size_t *ends;
    size_t depth, cap;
    char *canon;
    size_t canon_len, canon_cap;
} bn_walk;

/* Appends "/name" (or "name" at the start) to w->canon; 0 on OOM, -1 when
 * canon would reach PATH_MAX (no path the kernel could open by name is that
 * long; stored item names stay bounded). */
static int bn_append(bn_walk *w, const char *name)
{
    size_t n = strlen(name), need = w->canon_len + n + 2;
    if (need > PATH_MAX)
        return -1;
    if (need > w->canon_cap) {
        size_t ncap = w->canon_cap ? w->canon_cap : 256;
        while (ncap < need)
            ncap *= 2;
        char *nc = realloc(w->canon, ncap);
        if (!nc)
            return 0;
        w->canon = nc;
        w->canon_cap = ncap;
    }
    if (w->canon_len > 0)
        w->canon[w->canon_len++] = '/';
    memcpy(w->canon + w->canon_len, name, n + 1);
    w->canon_len += n;
    return 1;
}

/* Enters directory fd (takes ownership) named `name` (NULL: the root).
 * Returns 1, 0 on OOM, -1 when canon would grow too long (bn_append). */
static int bn_push(bn_walk *w, int fd, const char *name)
{
    if (w->cap == 0 || w->depth + 1 >= w->cap) {
        size_t ncap = w->cap ? w->cap * 2 : 16;
        int *nf = realloc(w->fds, ncap * sizeof *nf);
        if (nf)
            w->fds = nf;
        size_t *ne = nf ? realloc(w->ends, ncap * sizeof *ne) : NULL;
        if (!ne)
            return 0;
        w->ends = ne;
        w->cap = ncap;
    }
    if (!name) {
        w->depth = 0;
        w->fds[0] = fd;
        w->ends[0] = 0;
        return 1;
    }
    int a = bn_append(w, name);
    if (a <= 0)
        return a;
    w->depth++;
    w->fds[w->depth] = fd;
    w->ends[w->depth] = w->canon_len;
    return 1;
}

/* Leaves the current directory for its parent on the walk. */
static void bn_pop(bn_walk *w)
{
    close(w->fds[w->depth]);
    w->depth--;
    w->canon_len = w->ends[w->depth];
    if (w->canon)
        w->canon[w->canon_len] = '\0';
}

static void bn_free(bn_walk *w)
{
    while (w->depth > 0)
        bn_pop(w);
    free(w->fds);
    free(w->ends);
    free(w->canon);
}

/* Charges one step of a walk: against the walk's own bound and, when the
 * walk has one, the shared budget.  BENEATH_OK, or why the walk must end (a
 * step refused is not counted: `steps` is what was done). */
static beneath_result bn_step(beneath_stats *mine, beneath_budget *b)
{
    if (mine->steps >= BENEATH_MAX_STEPS)
        return BENEATH_TOO_LONG;
    if (b) {
        if (b->credit == 0)
            return BENEATH_BUDGET;
        b->credit--;
    }
    mine->steps++;
    return BENEATH_OK;
}

/* The walk itself (see beneath.h and the design notes at the top).
 * Cost: every component taken (".", "..", a name; those of link targets
 * too) is a step, and a name costs a few system calls, so a walk is bounded
 * by BENEATH_MAX_STEPS, its links by BENEATH_MAX_LINKS and the bytes it
 * parses (path + link targets) by BENEATH_MAX_BYTES; many walks share
 * `budget` (see beneath_budget).  Why: 40 chained links of 4 KB "d/../"
 * each made one path 64,000 steps (~80 ms), and a manifest repeats it. */
beneath_result beneath_walk(const beneath_root *r, const char *path, beneath_want want,
                            beneath_budget *budget, int *fd, struct stat *st, char **canon,
                            int *eno)
{
    *fd = -1;
    *eno = 0;
    if (canon)
        *canon = NULL;
    beneath_stats mine = {.walks = 1};
    if (budget) { /* this walk's shares, saturating */
        budget->credit += budget->per_walk <= UINT64_MAX - budget->credit
                              ? budget->per_walk
                              : UINT64_MAX - budget->credit;
        budget->link_credit += budget->links_per_walk <= UINT64_MAX - budget->link_credit
                                   ? budget->links_per_walk
                                   : UINT64_MAX - budget->link_credit;
    }
    beneath_result res = BENEATH_OK;
    bn_walk w = {0};
    char *rest = NULL;
    const char *start = path;
    if (path[0] == '/' && !(start = strip_root(r, path))) {
        res = BENEATH_OUTSIDE;
        goto out;
    }
    mine.bytes = strlen(start); /* bytes parsed: the root's own prefix is not */
    if (mine.bytes > BENEATH_MAX_BYTES) {
        res = BENEATH_TOO_LONG;
        goto out;
    }
    rest = strdup(start);
    if (!rest || !bn_push(&w, r->fd, NULL)) {
        res = BENEATH_NOMEM;
        goto out;
    }
    char *p = rest;
    for (;;) {
        while (*p == '/')
            p++;
        int top = w.fds[w.depth];
        if (*p == '\0') { /* the path ends at a directory the walk holds */
            *fd = openat(top, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (*fd < 0 || fstat(*fd, st) != 0) {
                *eno = errno;
                res = BENEATH_ERRNO;
            }
            break;
        }
        if ((res = bn_step(&mine, budget)) != BENEATH_OK)
            break;
        char *next = p;
        while (*next && *next != '/')
            next++;
        if (*next)
            *next++ = '\0'; /* p is the component, next the rest */
        int final = 1;
        for (const char *t = next; *t && final; t++)
            final = *t == '/';
        if (strcmp(p, ".") == 0) {
            p = next;
            continue;
        }
        if (strcmp(p, "..") == 0) {
            if (w.depth > 0) {
                bn_pop(&w);
            } else if (!r->clamp) {
                res = BENEATH_OUTSIDE;
                break;
            }
            p = next;
            continue;
        }
        /* Refuse FIFOs, devices and sockets before opening them. */
        struct stat pre;
        if (fstatat(top, p, &pre, AT_SYMLINK_NOFOLLOW) != 0) {
            *eno = errno;
            res = errno == ENOENT || errno == ENOTDIR ? BENEATH_MISSING : BENEATH_ERRNO;
            break;
        }
        if (!S_ISREG(pre.st_mode) && !S_ISDIR(pre.st_mode) && !S_ISLNK(pre.st_mode)) {
            *eno = ENOTDIR;
            res = final ? BENEATH_NOT_TYPE : BENEATH_MISSING;
            break;
        }
        int f = openat(top, p, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (f < 0 && errno == ELOOP) { /* a symlink: go on from its target */
            if (++mine.links > BENEATH_MAX_LINKS) {
                res = BENEATH_LOOP;
                break;
            }
            if (budget && budget->links_per_walk) { /* the shared link budget (beneath.h) */
                if (budget->link_credit == 0) {
                    mine.links--; /* as a step: a link refused is not counted */
                    res = BENEATH_LINK_BUDGET;
                    break;
                }
                budget->link_credit--;
            }
            char target[PATH_MAX];
            ssize_t n = readlinkat(top, p, target, sizeof target);
            if (n <= 0 || (size_t)n >= sizeof target) { /* n == 0: an empty link */
                *eno = n < 0 ? errno : n == 0 ? ENOENT : ENAMETOOLONG;
                res = n == 0 ? BENEATH_MISSING : BENEATH_ERRNO;
                break;
            }
            target[n] = '\0';
            const char *t = target;
            if (t[0] == '/') {
                if (!(t = strip_root(r, target))) {
                    res = BENEATH_OUTSIDE;
                    break;
                }
                while (w.depth > 0)
                    bn_pop(&w);
            }
            size_t lt = strlen(t), ln = strlen(next);
            mine.bytes += lt; /* so the rest, and this copy, stay below BENEATH_MAX_BYTES + 41 */
            if (mine.bytes > BENEATH_MAX_BYTES) {
                res = BENEATH_TOO_LONG;
                break;
            }
            char *nr = malloc(lt + ln + 2);
            if (!nr) {
                res = BENEATH_NOMEM;
                break;
            }
            memcpy(nr, t, lt);
            nr[lt] = '/';
            memcpy(nr + lt + 1, next, ln + 1);
            free(rest);
            rest = p = nr;
            continue;
        }
        if (f < 0) {
            *eno = errno;
            res = errno == ENOENT || errno == ENOTDIR ? BENEATH_MISSING : BENEATH_ERRNO;
            break;
        }
        struct stat fs;
        if (fstat(f, &fs) != 0) {
            *eno = errno;
            close(f);
            res = BENEATH_ERRNO;
            break;
        }
        if (!final) {
            if (!S_ISDIR(fs.st_mode)) {
                close(f);
                *eno = ENOTDIR;
                res = BENEATH_MISSING;
                break;
            }
            int pushed = bn_push(&w, f, p);
            if (pushed <= 0) {
                close(f);
                res = pushed < 0 ? BENEATH_TOO_LONG : BENEATH_NOMEM;
                break;
            }
            p = next;
            continue;
        }
        int appended = bn_append(&w, p);
        if (appended <= 0) {
            close(f);
            res = appended < 0 ? BENEATH_TOO_LONG : BENEATH_NOMEM;
            break;
        }
        *fd = f;
        *st = fs;
        break;
    }
    if (res == BENEATH_OK) {
        int type_ok = want == BENEATH_WANT_FILE  ? S_ISREG(st->st_mode)
                      : want == BENEATH_WANT_DIR ? S_ISDIR(st->st_mode)
                                            : S_ISREG(st->st_mode) || S_ISDIR(st->st_mode);
        if (!type_ok)
            res = BENEATH_NOT_TYPE;
    }
    if (res == BENEATH_OK && canon && !(*canon = strdup(w.canon ? w.canon : "")))
        res = BENEATH_NOMEM;
out:
    if (res != BENEATH_OK && *fd >= 0) {
        close(*fd);
        *fd = -1;
    }
    if (budget) {
        budget->used.walks += mine.walks;
        budget->used.steps += mine.steps;
        budget->used.links += mine.links;
        budget->used.bytes += mine.bytes;
    }
    bn_free(&w);
    free(rest);
    return res;
}

vit_status beneath_error(const beneath_root *r, beneath_result res, int eno, beneath_want want,
                         const char *subject, vit_error *err)
{
    switch (res) {
    case BENEATH_OUTSIDE:
        return vit_error_set(err, VIT_ERR_INVALID, "%s is outside the %s", subject, r->label);
    case BENEATH_MISSING:
        return vit_error_set(err, VIT_ERR_NOT_FOUND, "%s not found (%s)", subject,
                             strerror(eno ? eno : ENOENT));
    case BENEATH_NOT_TYPE:
        return vit_error_set(err, VIT_ERR_INVALID, "%s is not a %s", subject,
                             want == BENEATH_WANT_DIR ? "directory" : "regular file");
    case BENEATH_LOOP:
        return vit_error_set(err, VIT_ERR_INVALID, "%s: too many levels of symbolic links",
                             subject);
    case BENEATH_TOO_LONG:
        return vit_error_set(err, VIT_ERR_TOO_LARGE,
                             "%s: the path takes too many steps to resolve (over %d components "
                             "or %d bytes, symbolic links included)",
                             subject, BENEATH_MAX_STEPS, BENEATH_MAX_BYTES);
    case BENEATH_BUDGET:
        return vit_error_set(err, VIT_ERR_TOO_LARGE,
                             "%s: the paths beneath the %s take too many steps to resolve in "
                             "all (symbolic link chains?)",
                             subject, r->label);
    case BENEATH_LINK_BUDGET:
        return vit_error_set(err, VIT_ERR_TOO_LARGE,
                             "%s: the paths beneath the %s follow too many symbolic links in "
                             "all (link chains?)",
                             subject, r->label);
    case BENEATH_NOMEM:
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory opening %s", subject);
    default:
        return vit_error_set(err, VIT_ERR_IO, "cannot open %s: %s", subject, strerror(eno));
    }
}

vit_status beneath_open(const beneath_root *r, const char *path, beneath_want want,
                        beneath_budget *budget, const char *subject, int *fd, struct stat *st,
                        char **canon, vit_error *err)
{
    int eno;
    beneath_result res = beneath_walk(r, path, want, budget, fd, st, canon, &eno);
    return res == BENEATH_OK ? VIT_OK : beneath_error(r, res, eno, want, subject, err);
}

/* ================================================================ capped reads */

vit_status beneath_read_capped(int fd, size_t size_hint, size_t cap, const char *name,
                               uint8_t **out, size_t *len, vit_error *err)
{
    *out = NULL;
    *len = 0;
    size_t bufcap = (size_hint < cap ? size_hint : cap) + 1, n = 0; /* +1: sees growth */
    uint8_t *buf = malloc(bufcap);
    if (!buf)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory reading %s", name);
    for (;;) {
        if (n == bufcap) {
            if (n > cap) {
                free(buf);
                return vit_error_set(err, VIT_ERR_TOO_LARGE, "%s is over the limit of %zu bytes",
                                     name, cap);
            }
            size_t ncap = bufcap > (cap + 1) / 2 ? cap + 1 : bufcap * 2;
            uint8_t *nb = realloc(buf, ncap);
            if (!nb) {
                free(buf);
                return vit_error_set(err, VIT_ERR_NOMEM, "out of memory reading %s", name);
            }
            buf = nb;
            bufcap = ncap;
        }
        ssize_t got = read(fd, buf + n, bufcap - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            int e = errno;
            free(buf);
            return vit_error_set(err, VIT_ERR_IO, "reading %s failed: %s", name, strerror(e));
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    *out = buf;
    *len = n;
    return VIT_OK;
}

