/*
 * test_openapi_routes.c - the router's routes and api/openapi.yaml's paths
 * and methods are the same set.
 *
 * The route table is the real one: server/routes.c is compiled in.  Checked:
 *  1. every (label, method) of the table is an operation of the document,
 *     and every operation of the document is a row of the table;
 *  2. each label is the path its row matches: filled in ({name} -> a name),
 *     it routes back to that row (srv_route_find), so comparing labels
 *     compares what the router serves;
 *  3. the comparison can fail: run on a copy of the document with one
 *     operation taken away and one added, it reports exactly those two.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "openapi_check.h"
#include "routes.h"


static const char *const methods[] = {"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD",
                                      "PATCH", "TRACE"};
#define N_METHODS (sizeof methods / sizeof methods[0])

static void lower(const char *s, char *out, size_t len)
{
    size_t i = 0;
    for (; s[i] && i + 1 < len; i++)
        out[i] = (char)tolower((unsigned char)s[i]);
    out[i] = '\0';
}

/* The row of the table whose label is path and whose Allow lists method. */
static const srv_route_spec *table_row(const char *path, const char *method)
{
    for (size_t i = 0; i < srv_route_count; i++)
        if (strcmp(srv_routes[i].label, path) == 0 && srv_route_allows(&srv_routes[i], method))
            return &srv_routes[i];
    return NULL;
}

/* Compares the table with doc's paths; prints each difference (when
 * verbose) and returns how many there are. */
static int compare(const json_t *doc, bool verbose)
{
    int diffs = 0;
    const json_t *paths = json_object_get(doc, "paths");
    /* the table in the document */
    for (size_t i = 0; i < srv_route_count; i++) {
        const srv_route_spec *rs = &srv_routes[i];
        for (size_t m = 0; m < N_METHODS; m++) {
            if (!srv_route_allows(rs, methods[m]))
                continue;
            char op[16];
            lower(methods[m], op, sizeof op);
            if (!json_object_get(json_object_get(paths, rs->label), op)) {
                diffs++;
                if (verbose)
                    fprintf(stderr, "  the router serves %s %s; api/openapi.yaml does not list it\n",
                            methods[m], rs->label);
            }
        }
    }
    /* the document in the table */
    const char *path;
    const json_t *item;
    json_object_foreach((json_t *)paths, path, item) {
        for (size_t m = 0; m < N_METHODS; m++) {
            char op[16];
            lower(methods[m], op, sizeof op);
            if (!json_object_get(item, op) || table_row(path, methods[m]))
                continue;
            diffs++;
            if (verbose)
                fprintf(stderr, "  api/openapi.yaml lists %s %s; the router has no such route\n",
                        methods[m], path);
        }
    }
    return diffs;
}

/* The label with every {param} replaced by "x1". */
static void fill_in(const char *label, char *out, size_t len)
{
    size_t o = 0;
    for (const char *p = label; *p && o + 3 < len;) {
        if (*p == '{') {
            const char *close = strchr(p, '}');
            if (!close)
                break;
            memcpy(out + o, "x1", 2);
            o += 2;
            p = close + 1;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
}

int main(void)
{
    const char *root = getenv("VITFIT_SOURCE_ROOT");
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/api/openapi.yaml", root ? root : ".");
    json_t *doc = openapi_yaml_load(path, err, sizeof err);
    CHECKF(doc != NULL, "%s", err);
    if (!doc)
        return check_result();

    /* 1. the same set */
    fprintf(stderr, "comparing %zu rows of server/routes.c with %zu paths of api/openapi.yaml\n",
            srv_route_count, json_object_size(json_object_get(doc, "paths")));
    int diffs = compare(doc, true);
    CHECKF(diffs == 0, "%d differences between the router and the document", diffs);

    /* 2. each label is the path its row routes */
    for (size_t i = 0; i < srv_route_count; i++) {
        char url[256], name[65];
        bool bad;
        fill_in(srv_routes[i].label, url, sizeof url);
        const srv_route_spec *rs = srv_route_find(url, name, 64, &bad);
        CHECKF(rs == &srv_routes[i] && !bad, "label %s (as %s) routes to %s, not its own row",
               srv_routes[i].label, url, rs ? rs->label : "nothing");
        CHECKF(openapi_match_path(doc, url) &&
                   strcmp(openapi_match_path(doc, url), srv_routes[i].label) == 0,
               "the document matches %s to %s, not %s", url,
               openapi_match_path(doc, url) ? openapi_match_path(doc, url) : "nothing",
               srv_routes[i].label);
    }

    /* 3. the comparison fails when the sets differ: one operation of the
     * table removed from a copy, one the table lacks added */
    json_t *copy = json_deep_copy(doc);
    json_t *paths = json_object_get(copy, "paths");
    json_object_del(json_object_get(paths, srv_routes[0].label), "get");
    json_object_set_new(json_object_get(paths, srv_routes[0].label), "patch", json_object());
    fprintf(stderr, "a copy without GET %s and with PATCH %s (two differences expected):\n",
            srv_routes[0].label, srv_routes[0].label);
    int seeded = compare(copy, true);
    CHECKF(seeded == 2, "the comparison found %d differences in the altered copy, want 2",
           seeded);
    json_decref(copy);

    json_decref(doc);
    return check_result();
}
