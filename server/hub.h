/*
 * hub.h - `--model hf:ORG/NAME[@REVISION]`: a checkpoint downloaded from a
 * model hub into a local cache, then loaded like any checkpoint directory.
 *
 * The hub is addressed the way the public one lays out its files:
 *
 *     <hub_url>/<ORG>/<NAME>/resolve/<REVISION>/<FILE>
 *
 * for config.json and model.safetensors (required) and
 * preprocessor_config.json (when the hub has it).  They land in
 *
 *     <cache>/hub/<ORG>/<NAME>/snapshots/<REVISION>/     complete, verified
 *     <cache>/hub/<ORG>/<NAME>/incomplete/<REVISION>/    a download under way
 *
 * and only the first is ever handed to the loader: files are fetched into
 * the second (<FILE>.part, resumed with an HTTP Range after an interrupted
 * run), checked against the size and sha256 the hub states, fsynced and
 * renamed; the whole directory is renamed into snapshots/ once every file is
 * there.  A revision already in snapshots/ is used without asking the hub
 * (pin @COMMIT for a fixed model; delete the directory to fetch `main`
 * again).  Two processes downloading the same model take turns (a lock file
 * in <cache>/hub/<ORG>/<NAME>).
 *
 * Safety: ORG, NAME and REVISION are checked strictly (letters, digits,
 * '.', '_', '-'; no ".."; bounded) before they become paths or URLs; the
 * hub must be https (plain http only to a loopback address, for tests), and
 * so must every redirect; at most HUB_MAX_REDIRECTS are followed, by this
 * code rather than libcurl's, so that the token (HF_TOKEN, sent as
 * "Authorization: Bearer") goes only to the hub's own scheme, host and port
 * -- never to the CDN a weights file redirects to, nor back to the hub
 * after a hop elsewhere -- and the size and hash are taken from the hub's
 * answers only (its first statement holds; a file from another server needs
 * both).  A body must be as long as its answer announces, uncompressed.
 * When the hub names the commit it serves (X-Repo-Commit), a download whose
 * revision moves to another commit starts over: a snapshot holds files of
 * one commit.  The token is never logged or put in a message.  Every file
 * is bounded (max_bytes; JSON files 16 MiB).
 */
#ifndef VIT_SERVER_HUB_H
#define VIT_SERVER_HUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define HUB_PREFIX "hf:"
#define HUB_MAX_REDIRECTS 5
#define HUB_MAX_NAME 96     /* ORG and NAME, bytes (the public hub's limit) */
#define HUB_MAX_REVISION 128

/* A parsed hf:ORG/NAME[@REVISION]. */
typedef struct hub_ref {
    char org[HUB_MAX_NAME + 1];
    char name[HUB_MAX_NAME + 1];
    char revision[HUB_MAX_REVISION + 1]; /* "main" when none is given */
} hub_ref;

/* How hub_resolve works; the caller keeps every string alive for the call. */
typedef struct hub_options {
    const char *url;       /* hub base URL ("https://huggingface.co") */
    const char *cache;     /* cache directory; NULL or "": $HOME/.cache/vitfit */
    bool offline;          /* the cache only, never the network */
    int64_t max_bytes;     /* largest file fetched */
    const char *token;     /* sent to the hub only; NULL or "": none */
    bool progress;         /* draw a progress bar on stderr (a terminal) */
    void (*log)(void *ctx, const char *line); /* one line per event; NULL: quiet */
    bool (*stop)(void *ctx); /* polled while fetching: true aborts (the .part stays) */
    void *ctx;             /* for log and stop */
} hub_options;

/* Whether model names a hub checkpoint ("hf:..."), well-formed or not. */
bool hub_is_ref(const char *model);

/* Parses "hf:ORG/NAME[@REVISION]" into ref.  VIT_ERR_INVALID, naming the
 * rule broken, for anything else. */
vit_status hub_parse(const char *model, hub_ref *ref, vit_error *err);

/* What hub_resolve checks before any request -- the name, hub URL, token
 * and limit -- without touching the cache or the network: a server checks
 * its settings at start, before a download in the background can fail on
 * them.  VIT_ERR_INVALID naming the problem. */
vit_status hub_check(const char *model, const hub_options *o, vit_error *err);

/* The local checkpoint directory of model ("hf:ORG/NAME[@REVISION]") into
 * dir[len]: the cached snapshot, downloaded first unless it is there.
 * Errors: VIT_ERR_INVALID for a bad name, hub URL or token (nothing is
 * fetched); VIT_ERR_NOT_FOUND when the hub has no such model, revision or
 * required file (404), or, offline, when the cache lacks it; VIT_ERR_IO for
 * an interrupted transfer (its .part files stay: run again to resume) and
 * other refusals -- a size or sha256 that differs from the hub's statement,
 * a file over max_bytes, a redirect that is not allowed; after those the
 * partial download is deleted.  The caller has called curl_global_init. */
vit_status hub_resolve(const char *model, const hub_options *o, char *dir, size_t len,
                       vit_error *err);

#endif
