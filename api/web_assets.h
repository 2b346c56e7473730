/*
 * web_assets.h - the static files `vitfit serve` answers from its own binary:
 * the try-it page (api/web/) and the OpenAPI document (api/openapi.yaml).
 *
 * The table api_web_assets[] is generated at build time by
 * tools/embed_files.c (api/meson.build lists the files and their URL paths);
 * nothing is read from disk at run time.  server/web.c sends an asset with
 * its headers; the lookup and the If-None-Match test live here, with no
 * HTTP library, so they read as the contract they are.
 */
#ifndef VIT_API_WEB_ASSETS_H
#define VIT_API_WEB_ASSETS_H

#include <stdbool.h>
#include <stddef.h>

/* One embedded file.  Everything is static: never freed. */
typedef struct api_web_asset {
    const char *path;          /* URL path: "/", "/web/app.js", "/openapi.yaml" */
    const char *content_type;  /* "text/html; charset=utf-8" ... */
    const char *etag;          /* strong, quoted: "\"0123456789abcdef\"" (hash of the bytes) */
    const unsigned char *data;
    size_t len;
} api_web_asset;

extern const api_web_asset api_web_assets[];
extern const size_t api_web_assets_count;

/* The asset served at URL path `path` (exact match, no query), or NULL. */
const api_web_asset *api_web_asset_find(const char *path);

/* Whether an If-None-Match header value (NULL: absent) matches etag, so the
 * reply is 304 Not Modified: "*", or a comma-separated list of entity tags
 * of which one equals etag under the weak comparison (RFC 9110 section
 * 8.8.3.2: a W/ prefix is ignored).  Malformed entries match nothing. */
bool api_web_etag_matches(const char *if_none_match, const char *etag);

#endif
