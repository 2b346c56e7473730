/*
 * beneath.h - opening untrusted paths beneath a root directory, never outside it.
 *
 * A beneath_root is a directory held open by descriptor.  The paths handed to
 * beneath_open / beneath_walk are untrusted (a manifest line, an uploaded
 * file's name, a job's data set): they are walked one component at a time
 * from the root's descriptor with openat(O_NOFOLLOW), never given whole to
 * the kernel, so nothing outside the root is ever looked up:
 *   - a relative path starts at the root; an absolute one must begin with the
 *     root's canonical path or the path it was opened by (compared lexically)
 *     and goes on from there;
 *   - "." is skipped; ".." returns to the directory the walk came from, and
 *     above the root it is an escape (BENEATH_OUTSIDE); when the root is "/"
 *     it stays at the top, as the kernel does;
 *   - a symlink (which O_NOFOLLOW refuses with ELOOP) is read with readlinkat
 *     and its target spliced into the rest of the path: a relative target goes
 *     on from the link's directory, an absolute one must name a place under
 *     the root (as above) and goes on from there; at most BENEATH_MAX_LINKS
 *     links per walk;
 *   - a walk is bounded in work, as the kernel's is (its cached lookups are
 *     ~30x cheaper than our system calls per component): at most
 *     BENEATH_MAX_STEPS components (".", ".." and names, those of link
 *     targets included), BENEATH_MAX_BYTES bytes parsed (the path below the
 *     root plus the link targets spliced in) and a symlink-free result
 *     shorter than PATH_MAX; and many walks (a manifest's lines) share a
 *     beneath_budget, so N paths cost O(N) steps, not N times the per-walk
 *     bound;
 *   - only regular files and directories are opened: FIFOs, devices and
 *     sockets are refused from fstatat before any open (so a FIFO is never
 *     opened and never blocks), and O_NONBLOCK keeps one swapped in after
 *     that check from blocking the open (fstat of the descriptor refuses it).
 * Hence "outside" is decided from names inside the root alone: the result and
 * the message for a path that leads out are the same whether or not anything
 * exists out there.  Run the walk at every use, not once at a check: a file
 * swapped for a symlink in between is then refused when it is read.
 *
 * Known limits:
 *   - a directory the walk holds that is renamed out of the root meanwhile
 *     lets the rest of that walk run outside (openat2's RESOLVE_BENEATH
 *     closes this in the kernel); it takes write access inside and outside
 *     the root;
 *   - hard links cannot be detected: a file outside the root hard-linked
 *     into it is the same inode as any file inside, and no walk of names
 *     (nor openat2) can tell them apart, so it is read.  Making one takes
 *     write access to a directory inside the root, both ends on one file
 *     system and, with fs.protected_hardlinks=1 (the default), owning the
 *     file outside or having read-write access to it.  So an operator
 *     whose roots untrusted users can write into (the server's data_dir,
 *     uploads, job directories) must put data_dir on a file system (volume,
 *     mount) of its own that holds nothing else worth reading; otherwise no
 *     untrusted user (nor anything acting for one) may write beneath a root.
 *     st_nlink > 1 is not refused: `cp -al` trees and deduplicated data sets
 *     are hard links.
 * Why not openat2(RESOLVE_BENEATH): it refuses absolute symlinks under the
 * root that this contract accepts, opens devices (O_NONBLOCK or not) before
 * their type can be seen, and does not say which path it resolved; and the
 * work bound is needed anyway (the kernel's own walk of 40 chained links of
 * 4 KB "d/../" each takes 3.3 ms, and a manifest can name it on every line).
 *
 * Messages (beneath_error) name the root by the label given at
 * beneath_root_open ("data set root", "task store", ...):
 *   BENEATH_OUTSIDE   VIT_ERR_INVALID    "<subject> is outside the <label>"
 *   BENEATH_MISSING   VIT_ERR_NOT_FOUND  "<subject> not found (<strerror>)"
 *   BENEATH_NOT_TYPE  VIT_ERR_INVALID    "<subject> is not a regular file" (or "directory")
 *   BENEATH_LOOP      VIT_ERR_INVALID    "<subject>: too many levels of symbolic links"
 *   BENEATH_TOO_LONG  VIT_ERR_TOO_LARGE  "<subject>: the path takes too many steps to resolve
 *                                         (over 1024 components or 16384 bytes, symbolic
 *                                         links included)"
 *   BENEATH_BUDGET    VIT_ERR_TOO_LARGE  "<subject>: the paths beneath the <label> take too
 *                                         many steps to resolve in all (symbolic link chains?)"
 *   BENEATH_LINK_BUDGET VIT_ERR_TOO_LARGE "<subject>: the paths beneath the <label> follow
 *                                         too many symbolic links in all (link chains?)"
 *   BENEATH_NOMEM     VIT_ERR_NOMEM      "out of memory opening <subject>"
 *   BENEATH_ERRNO     VIT_ERR_IO         "cannot open <subject>: <strerror>"
 * This module knows nothing of what the files are for.  No global state: a
 * root may be used from several threads at once (walks only read it); a
 * beneath_budget is the caller's, one per thread.
 */
#ifndef VIT_BENEATH_H
#define VIT_BENEATH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "status.h"

#define BENEATH_MAX_LINKS 40    /* symlinks followed per walk, as Linux's MAXSYMLINKS */
#define BENEATH_MAX_STEPS 1024  /* components per walk, link targets included */
#define BENEATH_MAX_BYTES 16384 /* path below the root + link targets, per walk (4 PATH_MAX) */

typedef struct beneath_root beneath_root;

/* What walks did (summed over the walks given one beneath_budget). */
typedef struct beneath_stats {
    uint64_t walks; /* walks started */
    uint64_t steps; /* components taken: ".", ".." and names, link targets' included */
    uint64_t links; /* symlinks followed */
    uint64_t bytes; /* bytes parsed: paths below the root and link targets */
} beneath_stats;

/* Work shared by many walks (say those of one data set), so that N paths
 * cost O(N) and never N times the per-walk bound: each walk first adds
 * per_walk to credit, then every step takes one from it; a walk that finds
 * it empty ends with BENEATH_BUDGET.  W walks take at most
 * credit + W * per_walk steps in all (credit as set before the first).
 * Symlinks followed have a budget of their own, in the same way, when
 * links_per_walk is not 0 (BENEATH_LINK_BUDGET): a link costs three system
 * calls before its target's steps, so a 30-link chain to a file in the same
 * directory is 31 cheap-looking steps but ~95 calls, and a manifest of
 * 5-byte lines naming it cost 9 s a megabyte within a 32-step share.
 * `used` sums what they did.  Not locked: one budget per thread. */
typedef struct beneath_budget {
    uint64_t credit;         /* steps left; set it to a start-up allowance */
    uint64_t per_walk;       /* the average number of steps a walk may take */
    uint64_t link_credit;    /* symlinks left to follow (when links_per_walk > 0) */
    uint64_t links_per_walk; /* the average number of links a walk may follow; 0: links
                                are bounded per walk only (BENEATH_MAX_LINKS) */
    beneath_stats used;      /* totals, for limits, logs and tests */
} beneath_budget;

/* How a walk ended. */
typedef enum beneath_result {
    BENEATH_OK,
    BENEATH_OUTSIDE,  /* the path leads out of the root */
    BENEATH_MISSING,  /* a component does not exist (or is not a directory) */
    BENEATH_NOT_TYPE, /* the end is not a regular file (or not a directory when one is wanted) */
    BENEATH_LOOP,     /* more than BENEATH_MAX_LINKS symlinks */
    BENEATH_TOO_LONG, /* over BENEATH_MAX_STEPS or BENEATH_MAX_BYTES, or a result >= PATH_MAX */
    BENEATH_BUDGET,   /* the shared beneath_budget ran out (steps) */
    BENEATH_LINK_BUDGET, /* the shared beneath_budget ran out (symlinks followed) */
    BENEATH_ERRNO,    /* another failure; the errno is returned beside it */
    BENEATH_NOMEM,
} beneath_result;

/* What the end of a path must be. */
typedef enum beneath_want {
    BENEATH_WANT_ANY,  /* a regular file or a directory */
    BENEATH_WANT_FILE, /* a regular file */
    BENEATH_WANT_DIR,  /* a directory */
} beneath_want;

/* Opens directory `dir` as a root; `label` names it in messages (copied).
 * dir itself is the caller's configuration, not untrusted input: symlinks in
 * it are followed.  Errors: "<label> <dir>: <strerror>" (VIT_ERR_NOT_FOUND
 * when it does not exist, else VIT_ERR_IO), VIT_ERR_NOMEM.  On success the
 * caller closes *out with beneath_root_close. */
vit_status beneath_root_open(const char *dir, const char *label, beneath_root **out,
                             vit_error *err);

/* Closes the root's descriptor and frees it; NULL is a no-op. */
void beneath_root_close(beneath_root *r);

/* The root's canonical (symlink-free, absolute) path; "/" for the whole file
 * system.  Owned by r. */
const char *beneath_root_path(const beneath_root *r);

/* Returns a malloc'd "a/b" (b alone when b is absolute); NULL on OOM. */
char *beneath_join(const char *a, const char *b);

/* Returns the malloc'd absolute name of `rel`, a path relative to the root
 * (as beneath_walk's *canon): the root's canonical path and rel joined by
 * one '/' ("/" + rel when the root is "/").  Purely lexical.  NULL on OOM. */
char *beneath_path(const beneath_root *r, const char *rel);

/* Where `path` (absolute, or relative to the current directory) lies beneath
 * the root, decided lexically (no file is looked at; ".." left in it is for
 * the walk to resolve): on BENEATH_OK *rel is a malloc'd path relative to the
 * root ("" for the root itself; caller frees).  BENEATH_OUTSIDE when path does
 * not begin with the root's canonical or given path; BENEATH_NOMEM on OOM (or
 * when the current directory cannot be read). */
beneath_result beneath_relative(const beneath_root *r, const char *path, char **rel);

/* Walks `path` beneath the root (see the top of this file).  On BENEATH_OK
 * *fd is an open descriptor of the end (O_RDONLY; caller closes), *st its
 * fstat, and *canon (when canon is not NULL) a malloc'd symlink-free path
 * relative to the root ("" for the root itself; caller frees).  On failure
 * *fd is -1, *canon NULL, and *eno the errno that explains it (or 0); pass
 * both to beneath_error for the message.  budget (may be NULL: only the
 * per-walk bounds then) is charged and its `used` updated, on failure too. */
beneath_result beneath_walk(const beneath_root *r, const char *path, beneath_want want,
                            beneath_budget *budget, int *fd, struct stat *st, char **canon,
                            int *eno);

/* Sets err for a failed walk and returns its status (table at the top);
 * `subject` says what was opened, e.g. "m.csv:3: image 'a.png'".  An escape
 * reads the same whatever lies outside (the walk never looked). */
vit_status beneath_error(const beneath_root *r, beneath_result res, int eno, beneath_want want,
                         const char *subject, vit_error *err);

/* beneath_walk, with a failure turned into err by beneath_error. */
vit_status beneath_open(const beneath_root *r, const char *path, beneath_want want,
                        beneath_budget *budget, const char *subject, int *fd, struct stat *st,
                        char **canon, vit_error *err);

/* Reads all of regular file fd (size_hint bytes, by fstat) into a malloc'd
 * *out (caller frees) of *len bytes, refusing more than cap bytes even when
 * the file holds more than its size says (it grew, or is a /proc file):
 * VIT_ERR_TOO_LARGE "<name> is over the limit of <cap> bytes".  Also
 * VIT_ERR_IO, VIT_ERR_NOMEM.  cap must be below SIZE_MAX.  fd stays open. */
vit_status beneath_read_capped(int fd, size_t size_hint, size_t cap, const char *name,
                               uint8_t **out, size_t *len, vit_error *err);

#endif
