/*
 * hub_impl.h - what hub.c (names, cache, the download as a whole) and
 * hub_fetch.c (one file over HTTP) share; never included outside server/.
 */
#ifndef VIT_SERVER_HUB_IMPL_H
#define VIT_SERVER_HUB_IMPL_H

#include "hub.h"

/* Scheme, host and port of a URL: what "the hub's own server" means when
 * deciding where the token may go. */
typedef struct hub_origin {
    char scheme[8];  /* "https" or "http" */
    char host[256];  /* as libcurl normalises it ("[::1]" for IPv6) */
    long port;       /* explicit or the scheme's default */
    bool loopback;   /* localhost, 127.0.0.0/8 or ::1 */
} hub_origin;

/* Parses url's origin; VIT_ERR_INVALID (naming what) for a URL libcurl
 * cannot parse, one with user:password, or a scheme other than http(s). */
vit_status hub_origin_parse(const char *url, hub_origin *o, vit_error *err);

/* A commit id (git's sha1 or sha256 in hex) and its NUL. */
#define HUB_COMMIT_SIZE 65

/* How a file's transfer ended. */
typedef enum hub_outcome {
    HUB_DONE,   /* verified and renamed to its final name */
    HUB_ABSENT, /* an optional file the hub does not have (404) */
    HUB_RETRY,  /* interrupted or refused for now (network, 5xx, stop): the .part stays */
    HUB_FAILED, /* refused for good (404, 401, size, sha256, limits): drop the download */
    HUB_MOVED,  /* the hub serves the revision from another commit than job->commit */
} hub_outcome;

/* One file to fetch. */
typedef struct hub_file_job {
    const char *url;        /* the hub's resolve URL of the file */
    const hub_origin *hub;  /* the hub's origin: the token goes there only */
    const char *file;       /* "model.safetensors", for messages */
    const char *part_path;  /* where bytes accumulate (resumed if present) */
    const char *final_path; /* where the verified file is renamed */
    int64_t max_bytes;      /* the file's cap */
    bool optional;          /* a 404 is HUB_ABSENT, not an error */
    const char *commit;     /* the commit the download began with (X-Repo-Commit), or "" */
    char *commit_seen;      /* [HUB_COMMIT_SIZE]: the hub's X-Repo-Commit, or "" (may be NULL) */
    const hub_options *o;
} hub_file_job;

/* Fetches one file (see hub.h for the rules): on HUB_DONE it is at
 * final_path, fsynced; on HUB_RETRY the .part holds what arrived; on
 * HUB_FAILED or HUB_MOVED the .part is deleted.  err says why for the last two. */
hub_outcome hub_fetch_file(const hub_file_job *j, vit_error *err);

#endif
