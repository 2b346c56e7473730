/*
 * web_assets.c - lookup of the embedded static files (web_assets.h).
 */
#include <string.h>

#include "web_assets.h"

const api_web_asset *api_web_asset_find(const char *path)
{
    for (size_t i = 0; path && i < api_web_assets_count; i++)
        if (strcmp(api_web_assets[i].path, path) == 0)
            return &api_web_assets[i];
    return NULL;
}

bool api_web_etag_matches(const char *inm, const char *etag)
{
    if (!inm || !etag)
        return false;
    size_t elen = strlen(etag);
    for (const char *p = inm; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        size_t n = strcspn(p, ",");
        const char *tag = p;
        p += n;
        while (n > 0 && (tag[n - 1] == ' ' || tag[n - 1] == '\t'))
            n--;
        if (n == 1 && tag[0] == '*')
            return true;
        if (n >= 2 && tag[0] == 'W' && tag[1] == '/')
            tag += 2, n -= 2;
        if (n == elen && memcmp(tag, etag, n) == 0)
            return true;
    }
    return false;
}
