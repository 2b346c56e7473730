/*
 * job_fetch.h - the URL fetcher of one fine-tune job: a manifest's http(s)
 * entries fetched once per job and kept in the job's directory.
 *
 * A data set opened for a job with this fetcher as its hook
 * (ds_options.fetch via api_finetune_env.fetch) keeps its URL entries as
 * items; the loader asks for an item's bytes every epoch.  job_fetch_get
 * answers from <job_dir>/fetched/ when it can, and otherwise fetches the URL
 * with api_fetch -- the guarded fetcher of classify: the url_* limits,
 * allow_private_urls, http(s) only, every connect's address checked -- and
 * stores the answer there before handing it over:
 *   fetched/<sha256 of the URL>          the body, as received;
 *   fetched/<sha256 of the URL>.failed   why the fetch failed (a 404, a
 *                                        timeout, a body over the limit...).
 * Both are written atomically (a temp file, fsync, rename), so every epoch,
 * and a run resumed after a crash or a restart, sees the same bytes -- or
 * the same failure -- for a URL: each URL is requested at most once per job,
 * and a skipped image stays skipped.  Only a fetch abandoned because the job
 * is stopping is not kept: it says nothing about the URL (ds_fetch_fn's
 * *stopped; the loader never skips such an item).
 *
 * The cache is only ever opened beneath the job directory: fetched/ and its
 * files are opened relative to a descriptor of the job directory without
 * following symlinks, and only regular files are read, so a planted link
 * leads nowhere.  A cached body longer than the fetch limit is refused.
 *
 * Bounds per job, counted over what fetched/ holds (so a resumed run goes
 * on from what the job had spent): at most max_urls URLs requested and
 * max_total_bytes of bodies received.  A URL past either bound fails (its
 * item is bad: skipped under skip_bad) without a request and is not kept,
 * as the bound, not the URL, refused it.
 *
 * Cancel: limits.cancel (the server draining) stops a fetch in flight;
 * job_cancel (the job's own cancel) is looked at before each request.
 * Either way the call returns with *stopped set.
 *
 * Thread safety: job_fetch_get may run on several loader threads at once;
 * two calls for the same URL wait for each other, so it is still requested
 * once.  Needs curl_global_init (api/fetch.h).
 */
#ifndef VIT_SERVER_JOB_FETCH_H
#define VIT_SERVER_JOB_FETCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fetch.h"
#include "status.h"

/* Bytes of bodies one job may fetch in all. */
#define JOB_FETCH_MAX_TOTAL_BYTES ((uint64_t)1 << 30)
/* URLs one job may request in all (a manifest of a million URLs is a crawl,
 * not a data set for a server's job). */
#define JOB_FETCH_MAX_URLS ((size_t)100000)

typedef struct job_fetch job_fetch;

typedef struct job_fetch_config {
    const char *job_dir;           /* <data_dir>/jobs/<id>; must exist */
    api_fetch_limits limits;       /* per URL: url_* keys, allow_private_urls; .cancel:
                                      the server draining (may be NULL) */
    const atomic_bool *job_cancel; /* the job's cancel, checked before each request (may
                                      be NULL) */
    uint64_t max_total_bytes;      /* 0: JOB_FETCH_MAX_TOTAL_BYTES */
    size_t max_urls;               /* 0: JOB_FETCH_MAX_URLS */
} job_fetch_config;

/* Opens (creating it when missing) <job_dir>/fetched and counts what it
 * holds; removes temp files a crash left there.  VIT_ERR_IO when the job
 * directory or fetched/ cannot be opened as a directory (fetched/ a symlink
 * included). */
vit_status job_fetch_open(const job_fetch_config *c, job_fetch **out, vit_error *err);

/* Frees f; NULL is a no-op.  No job_fetch_get may be running. */
void job_fetch_close(job_fetch *f);

/* The ds_fetch_fn (dataset.h) of a job: ctx is the job_fetch.  At most
 * max_bytes (and limits.max_bytes) of body.  On VIT_OK *data holds *len
 * bytes (caller frees).  Errors: VIT_ERR_INVALID (a URL api_fetch refuses,
 * a forbidden address), VIT_ERR_TOO_LARGE (a body over the limit, or the
 * job's bytes spent), VIT_ERR_IO (no answer, a non-2xx status, a timeout,
 * the cache unwritable), VIT_ERR_NOMEM; *stopped with any of them when the
 * job is stopping.  Messages name the URL's origin only (api_fetch.h: a
 * path or query may hold a token); the data set adds the URL. */
vit_status job_fetch_get(void *ctx, const char *url, size_t max_bytes, uint8_t **data,
                         size_t *len, bool *stopped, vit_error *err);

/* Removes <job_dir>/fetched and the files in it (one level; a symlink is
 * removed, never followed) when the job has ended and no fetcher is open
 * on it.  VIT_OK when there is none. */
vit_status job_fetch_remove(const char *job_dir, vit_error *err);

/* What a fetcher has done (for logs and tests). */
typedef struct job_fetch_stats {
    size_t requests;    /* URLs requested by this job_fetch (api_fetch calls) */
    size_t hits;        /* answers read from fetched/ */
    size_t urls;        /* URLs the job has spent, fetched/ at open included */
    uint64_t bytes;     /* body bytes the job has spent, fetched/ at open included */
} job_fetch_stats;

void job_fetch_stats_get(job_fetch *f, job_fetch_stats *out);

#endif
