/*
 * pool.h - a worker's own small thread team for one forward pass.
 *
 * The forward pass alternates short parallel regions (a GEMM, the attention
 * heads, a LayerNorm over rows) with tiny serial steps, hundreds of times per
 * image, so the team is built for low hand-off latency: the caller runs as
 * member 0, and members can meet at a barrier inside a region.  Every wait
 * (for a region, at the barrier, for the helpers to finish) spins briefly and
 * then sleeps on a futex, so a team with more members than free CPUs slows
 * down gracefully instead of spinning against itself; a team whose members
 * each have a CPU adapts how long it spins to how long its waits last.  A team of 1 has no
 * helper threads and runs every region inline.
 *
 * One team per vit_state: a worker's GEMM and element-wise threads are the
 * same threads, so W workers with T threads each keep W*T threads busy.
 */
#ifndef VIT_POOL_H
#define VIT_POOL_H

#include <stdbool.h>

#include "status.h"

typedef struct vit_team vit_team;

/* The body of a parallel region: runs once on each of `threads` members. */
typedef void (*vit_team_fn)(void *ctx, int member, int threads);

/* Starts threads-1 helper threads (threads in [1, 64]).  Caller frees with
 * vit_team_free. */
vit_status vit_team_create(int threads, vit_team **out, vit_error *err);

/* Stops and joins the helpers.  NULL is ignored. */
void vit_team_free(vit_team *t);

int vit_team_threads(const vit_team *t);

/* What a team has done since it was created, for tests and diagnostics. */
typedef struct vit_team_stats {
    unsigned long regions; /* vit_team_run calls */
    unsigned long sleeps;  /* waits that went to sleep (futex) after spinning */
    int spin_min, spin_max; /* the range of a wait's spin budget, in pauses */
    int spin;               /* the budget now */
    unsigned long waits;    /* waits of any member: for a region, at a barrier, for the end */
    unsigned long spun;     /* pause iterations spun in them before the answer or a sleep */
} vit_team_stats;

/* Reads t's counters; call between regions, from the thread that runs them. */
void vit_team_stats_get(const vit_team *t, vit_team_stats *out);

/* A wait's next spin budget (pause iterations, spin_max at most) after one
 * spun `budget` in vain and then slept slept_ns: doubled after a short sleep
 * if members were seen to run at once (`overlapped`: some wait's answer was
 * posted from another CPU), else back to the least (pool.c).  Pure, for
 * tests. */
int vit_team_next_spin(int budget, long long slept_ns, bool overlapped, int spin_max);

/* Runs fn(ctx, member, threads) on every member, the caller as member 0, and
 * returns when all have finished.  Not reentrant: one region at a time. */
void vit_team_run(vit_team *t, vit_team_fn fn, void *ctx);

/* Inside a region: returns once every member has called it. */
void vit_team_barrier(vit_team *t);

/* Splits [0, n) into `threads` contiguous near-equal parts; member's part is
 * [*begin, *end). */
void vit_team_split(int n, int member, int threads, int *begin, int *end);

/* ---- sharing a region's items: each member owns a part, and a member done
 * with its own takes from the others' ends ----
 * Items [0, n) are split as vit_team_split splits them; a member takes its
 * own from the front, in order, so the parts a member owns stay with it from
 * one use to the next (the C columns a GEMM member updates block after block
 * stay in its cache), and only the last few of a slower member's items move.
 * A member that starts late (a helper waking from a futex sleep), or runs on
 * a CPU the host is also giving to someone else, then costs the region a
 * fraction of one item instead of the rest of its part.
 *
 * Slots: two independent sets of parts, so that a region can share items
 * again while a slower member is still taking from its last share.  A member
 * publishes its part of a slot (vit_team_share) before it takes from it; the
 * others take from that part once they see it, so a region meets at a
 * barrier between sharing and taking when every member must see every part
 * (a part not yet shared looks empty: every use leaves its parts empty).
 * Before a member shares a slot again, every member must be done taking from
 * its last use: a barrier between them, or the region's end.  gemm.c's
 * passes alternate the slots with a barrier per step. */
enum { VIT_TEAM_SLOTS = 2 };

/* A member's view of one use of a slot. */
typedef struct vit_share {
    vit_team *team;
    int slot, member, threads;
    int next, end; /* the whole range, walked here, when the team has one member */
} vit_share;

/* Publishes member's part of [0, n) in slot and returns member's view of it
 * (a NULL team, or one member: [0, n) walked in order, nothing shared). */
vit_share vit_team_share(vit_team *t, int slot, int member, int threads, int n);

/* For a region without a barrier between sharing and taking: the caller,
 * between regions, publishes every member's part of [0, n) in slot, so a
 * member that starts late has its part taken by the others too (a part a
 * member publishes itself stays invisible until it starts).  Inside the next
 * region each member then calls vit_team_shared instead of vit_team_share. */
void vit_team_share_ahead(vit_team *t, int slot, int n);

/* Member's view of the parts vit_team_share_ahead published. */
vit_share vit_team_shared(vit_team *t, int slot, int member, int threads, int n);

/* The next item for s's member: its own part's next, else one from the end
 * of another member's.  False when every part is empty. */
bool vit_team_take(vit_share *s, int *item);

#endif
