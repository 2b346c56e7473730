/*
 * job_lease.h - which replica runs a fine-tune job: a lease in the job's
 * directory, claimed with O_EXCL, renewed while the job runs, and taken over
 * by another replica when its holder stops renewing it.
 *
 * Files: <job dir>/lease.<G>, G = 1, 2, ... a generation.  The lease is the
 * file of the highest generation; its content, written once by its creator
 * (and fsynced, so another NFS client reads it), names the holder -- or says
 * "released".  Generations are never removed while the job lives (only
 * job_lease_remove_all does, once the job has ended), so a name once
 * created can never be created again.
 *
 * Claim: list the generations; the newest one, G, must be released or stale
 * (below), or there must be none (G = 0); then create lease.<G+1> with
 * O_CREAT | O_EXCL.  Whoever creates it holds the lease.  Two replicas that
 * both judged G stale race on that one name and exactly one wins -- no
 * rename, no lock: exclusive create is the one thing the file system must
 * get right (NFS v3 and later do; flock there is not reliable).  A replica
 * working from an old listing tries a generation that exists and fails.
 *
 * Renew: futimens on the holder's own descriptor (the file's mtime moves),
 * then a look at the job's directory as its path names it now: when a
 * newer lease (a regular file of a generation above G) exists, the
 * holder's file was removed, or the path names no directory or another
 * file at lease.G (the directory moved away, restored from a copy), the
 * holder has lost the job and must stop writing; whoever claims it next
 * (this process too) resumes it.  Why mtime through the descriptor rather than rewriting the file
 * (tmp + rename): a renew can only ever touch the holder's own file, so a
 * holder that stalled past the lease can never put its lease back over its
 * successor's, and there is no moment when the lease is missing or half
 * written; it is one metadata write (on NFS one SETATTR, stamped with the
 * server's clock).
 *
 * Stale: a watcher judges the newest lease by its own monotonic clock, never
 * by comparing a file time with its wall clock (replicas' clocks differ):
 * the lease is stale once this watcher has seen it unchanged -- generation,
 * inode, size, mtime -- for lease_ms.  So a replica that has just started
 * watches a lease for lease_ms before it takes a job over.  One shortcut: a
 * holder on this very kernel and pid namespace (same boot id and pid
 * namespace) whose process has gone (no such pid, a zombie, or the pid now
 * belongs to a process that started at another time) is stale at once --
 * that is a server restarting on its own data_dir after a crash -- and so
 * is a lease naming the claiming process itself, which it has let go of
 * (callers never claim a job they hold).
 *
 * Release: a holder that stops with the job unfinished (the server drains)
 * creates lease.<G+1> saying "released", so another replica may claim it
 * (as G+2) at once.  When the job has ended, job_lease_end removes the
 * lease files -- after job.json says so: a replica that claims a finished
 * job reads job.json, finds it finished and lets go.
 *
 * Junk: an entry named like a generation that is not a regular file (a
 * directory, FIFO, symlink) uses its name up but names no one: the lease is
 * the newest regular file, judged as above, and a claim of a free or stale
 * one goes past the junk (job_lease_skipped says so); a holder is not
 * displaced by junk, only by a newer regular lease.
 *
 * Limits (every lease without a fencing store has them): a holder that
 * stalls for longer than lease_ms (a stopped process, a partitioned node)
 * may still write until it next looks -- its holder looks (job_lease_held)
 * right before each step another holder's work must not be overwritten by
 * (publishing the task, the end record, removing files), which leaves the
 * window between that look and the step itself.  On
 * NFS, a client's cache of negative lookups can delay that; mount the data
 * volume with lookupcache=positive (or none).
 *
 * No global state.  A job_lease belongs to one thread at a time (the caller
 * serialises renew, release and drop of one lease).
 */
#ifndef VIT_SERVER_JOB_LEASE_H
#define VIT_SERVER_JOB_LEASE_H

#include <stdbool.h>
#include <stdint.h>

#include "status.h"

#define JOB_LEASE_OWNER_MAX 160

/* Who this process is, as its leases name it. */
typedef struct job_lease_self {
    char owner[JOB_LEASE_OWNER_MAX]; /* "<host>/<pid>/<start ns>/<16 hex>": unique per process */
    char host[64];
    char boot_id[40];                /* this kernel's boot id; "" when unknown */
    uint64_t pidns;                  /* inode of /proc/self/ns/pid; 0 when unknown */
    long pid;
    uint64_t start_ticks;            /* the process's start time (/proc/PID/stat, field 22) */
    bool local_check;                /* judge holders on this kernel by their pid (the shortcut
                                        above); false makes every holder "remote" (tests) */
} job_lease_self;

/* Fills me for this process (local_check true).  VIT_ERR_IO when no random
 * bits can be had for the owner id. */
vit_status job_lease_self_init(job_lease_self *me, vit_error *err);

/* What one watcher saw of a job's newest lease, and since when.  Zero it
 * before the first claim; pass the same one to every claim of that job. */
typedef struct job_lease_watch {
    long gen;                        /* the newest generation seen; 0: none */
    uint64_t dev, ino, size;
    int64_t mtime_s, mtime_ns;
    double since;                    /* monotonic seconds: seen like that since */
} job_lease_watch;

typedef struct job_lease job_lease;

/* Tries to claim the job whose directory is dir for me (see the top): w is
 * this process's watch of that job, now its monotonic clock in seconds.
 * VIT_OK with *out the held lease (free it with job_lease_release or
 * job_lease_drop), or VIT_OK with *out NULL when another holds it (a live
 * lease, or another replica won the race).  Errors: VIT_ERR_NOT_FOUND (no
 * such directory), VIT_ERR_IO, VIT_ERR_NOMEM. */
vit_status job_lease_claim(const char *dir, const job_lease_self *me, long lease_ms,
                           job_lease_watch *w, double now, job_lease **out, vit_error *err);

/* The lease's generation. */
long job_lease_gen(const job_lease *l);

/* The generation this claim went past because the entry there was not a
 * regular file (a directory, FIFO or symlink named lease.<G> cannot be a
 * lease: it names no one), or 0.  For the caller's log. */
long job_lease_skipped(const job_lease *l);

/* Renews l (its mtime) and says whether it is still held: false once another
 * replica has taken the job over or the file was removed (and from then on).
 * A failed renew that cannot tell (an I/O error) keeps it held: the next
 * renew tries again. */
bool job_lease_renew(job_lease *l);

/* Whether l is still held, without renewing it (the job's directory opened
 * by its path and listed; see Renew above). */
bool job_lease_held(job_lease *l);

/* Hands the job back unfinished: creates the "released" generation (unless
 * the lease was lost), then frees l.  NULL is a no-op. */
void job_lease_release(job_lease *l);

/* Frees l, leaving the files as they are (after job_lease_remove_all, or a
 * lost lease).  NULL is a no-op. */
void job_lease_drop(job_lease *l);

/* The job has ended (job.json says so) and l's holder lets go: when l is
 * still held, removes its lease files -- every generation up to l's own,
 * never a newer one -- and returns how many; -1 when it was lost (a holder
 * that stalled past its lease must not remove its successor's).  Frees l. */
int job_lease_end(job_lease *l);

/* Removes every lease file of the job in dir, held or not: for a job whose
 * record says it ended when this process starts (a crash between the end
 * and the let-go).  Returns how many were removed. */
int job_lease_remove_all(const char *dir);

/* Whether the job in dir has any lease file (held, released or stale). */
bool job_lease_any(const char *dir);

#endif
