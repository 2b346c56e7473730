/*
 * dataset_manifest.c - data sets listed by a manifest: JSONL lines
 * {"image": path, "label": name} or CSV "image,label" (see dataset.h).
 *
 * Design
 *   - The manifest is read line by line; every item is checked as it is
 *     read: its image is opened beneath the data set root now (beneath_open,
 *     relative paths from the manifest's directory), so a missing file or an
 *     escape names the manifest line at fault.  URLs are refused (for now).
 *   - Without a fixed class list the labels are kept per item and become the
 *     sorted set of classes at the end; with one, each label is looked up as
 *     it is read.
 *   - Both parsers refuse what they cannot read unambiguously: JSON with a
 *     key twice, a CSV field with text after its closing quote, a NUL byte.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "beneath.h"
#include "dataset_impl.h"

/* ================================================================ helpers */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b); /* bytewise (unsigned char) */
}

static int is_url(const char *s)
{
    return strncasecmp(s, "http://", 7) == 0 || strncasecmp(s, "https://", 8) == 0;
}

/* A sorted list of entry names (owned strings). */
typedef struct name_list {
    char **v;
    size_t n, cap;
} name_list;

static void name_list_free(name_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

static int name_list_add(name_list *l, const char *s)
{
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 64, bytes;
        if (!ds_mul_ok(ncap, sizeof *l->v, &bytes))
            return 0;
        char **nv = realloc(l->v, bytes);
        if (!nv)
            return 0;
        l->v = nv;
        l->cap = ncap;
    }
    if (!(l->v[l->n] = strdup(s)))
        return 0;
    l->n++;
    return 1;
}

/* ================================================================ parsing */

/* Splits a CSV line in place into fields (RFC 4180 subset on one line:
 * fields separated by ','; a field that starts with '"' is quoted, '""' inside
 * it is one '"').  Stores up to max field pointers, sets *nfields to the full
 * count.  Returns NULL or a static reason. */
static const char *csv_split(char *line, char **fields, int max, int *nfields)
{
    char *r = line, *w = line;
    int n = 0;
    for (;;) {
        char *start = w;
        if (*r == '"') {
            r++;
            for (;;) {
                if (*r == '\0')
                    return "unterminated quoted field";
                if (*r == '"') {
                    if (r[1] == '"') {
                        *w++ = '"';
                        r += 2;
                        continue;
                    }
                    r++;
                    break;
                }
                *w++ = *r++;
            }
            if (*r != ',' && *r != '\0')
                return "unexpected character after a closing quote";
        } else {
            while (*r != ',' && *r != '\0')
                *w++ = *r++;
        }
        char sep = *r;
        *w = '\0'; /* w <= r: at worst overwrites the separator, saved above */
        if (n < max)
            fields[n] = start;
        n++;
        if (sep == '\0')
            break;
        r++;
        w = r;
    }
    *nfields = n;
    return NULL;
}

/* Is the line only spaces, tabs and '\r'? */
static int is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return 0;
    return 1;
}

/* One manifest line's item, checked and added.  Labels are resolved now with
 * a fixed class list (index != NULL); otherwise the label string is kept in
 * *labels_out for the sorted-unique pass. */
typedef struct manifest_ctx {
    ds_dataset *d;
    const char *file;     /* manifest path, for messages */
    const char *dir_rel;  /* manifest directory, relative to the root */
    const ds_class_entry *index;
    name_list labels;     /* per-item label strings (no fixed list) */
} manifest_ctx;

static vit_status manifest_item(manifest_ctx *m, size_t line, const char *image,
                                const char *label, vit_error *err)
{
    char where[PATH_MAX + 32];
    snprintf(where, sizeof where, "%s:%zu", m->file, line);
    if (image[0] == '\0')
        return vit_error_set(err, VIT_ERR_FORMAT, "%s: empty image path", where);
    if (label[0] == '\0')
        return vit_error_set(err, VIT_ERR_FORMAT, "%s: empty label", where);
    char what[PATH_MAX + 48];
    snprintf(what, sizeof what, "%s: label", where);
    vit_status s = ds_check_class_name(label, what, err);
    if (s != VIT_OK)
        return s;
    if (is_url(image))
        return vit_error_set(err, VIT_ERR_UNSUPPORTED,
                             "%s: URLs in manifests are not supported yet ('%.200s')", where,
                             image);
    int cls = 0;
    if (m->index) {
        cls = ds_class_lookup(m->index, m->d->num_classes, label);
        if (cls == DS_CLASS_UNKNOWN)
            return vit_error_set(err, VIT_ERR_INVALID, "%s: unknown label '%.200s' at line %zu",
                                 m->file, label, line);
        if (cls == DS_CLASS_AMBIGUOUS)
            return vit_error_set(err, VIT_ERR_INVALID,
                                 "%s: label '%.200s' at line %zu is ambiguous: the class list "
                                 "names it twice",
                                 m->file, label, line);
    }
    /* Relative paths start at the manifest's directory; absolute ones must
     * name a place under the root (the walk checks both). */
    char *rel = image[0] == '/' ? strdup(image) : ds_join_rel(m->dir_rel, image);
    if (!rel)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    char *canon = NULL, subject[PATH_MAX + 64];
    int fd;
    struct stat st;
    snprintf(subject, sizeof subject, "%s:%zu: image '%s'", m->file, line, image);
    s = beneath_open(m->d->root, rel, BENEATH_WANT_FILE, subject, &fd, &st, &canon, err);
    free(rel);
    if (s != VIT_OK)
        return s;
    close(fd);
    char *name = beneath_path(m->d->root, canon);
    free(canon);
    if (!name)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    s = ds_add_item(m->d, name, cls, err);
    free(name);
    if (s == VIT_OK && !m->index && !name_list_add(&m->labels, label))
        s = vit_error_set(err, VIT_ERR_NOMEM, "out of memory for labels");
    return s;
}

/* Parses one non-blank JSONL line. */
static vit_status jsonl_line(manifest_ctx *m, size_t line, const char *text, size_t len,
                             vit_error *err)
{
    json_error_t jerr;
    /* Duplicate keys are refused, as the other parsers refuse them: which
     * "image" would count is not something a manifest should leave open. */
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!o)
        return vit_error_set(err, VIT_ERR_FORMAT, "%s:%zu: bad JSON: %s", m->file, line,
                             jerr.text);
    vit_status s;
    const char *image = json_string_value(json_object_get(o, "image"));
    const char *label = json_string_value(json_object_get(o, "label"));
    if (!json_is_object(o))
        s = vit_error_set(err, VIT_ERR_FORMAT, "%s:%zu: expected a JSON object", m->file, line);
    else if (!image)
        s = vit_error_set(err, VIT_ERR_FORMAT, "%s:%zu: missing string \"image\"", m->file,
                          line);
    else if (!label)
        s = vit_error_set(err, VIT_ERR_FORMAT, "%s:%zu: missing string \"label\"", m->file,
                          line);
    else
        s = manifest_item(m, line, image, label, err);
    json_decref(o);
    return s;
}

/* Parses one non-blank CSV line (the header was handled by the caller). */
static vit_status csv_line(manifest_ctx *m, size_t line, char *text, int *header_ok,
                           vit_error *err)
{
    char *f[2];
    int nf = 0;
    const char *why = csv_split(text, f, 2, &nf);
    if (why)
        return vit_error_set(err, VIT_ERR_FORMAT, "%s:%zu: %s", m->file, line, why);
    if (nf != 2)
        return vit_error_set(err, VIT_ERR_FORMAT, "%s:%zu: expected 2 columns (image,label), got %d",
                             m->file, line, nf);
    if (*header_ok) {
        *header_ok = 0;
        if (strcmp(f[0], "image") == 0 && strcmp(f[1], "label") == 0)
            return VIT_OK;
    }
    return manifest_item(m, line, f[0], f[1], err);
}

/* Sorted unique labels become the classes; items get their indices. */
static vit_status manifest_classes(manifest_ctx *m, vit_error *err)
{
    ds_dataset *d = m->d;
    size_t n = m->labels.n;
    char **sorted = malloc((n ? n : 1) * sizeof *sorted);
    if (!sorted)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for labels");
    if (n > 0)
        memcpy(sorted, m->labels.v, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < n; i++)
        if (u == 0 || strcmp(sorted[u - 1], sorted[i]) != 0)
            sorted[u++] = sorted[i];
    vit_status s = ds_set_classes(d, (const char *const *)sorted, u, "label", err);
    free(sorted);
    ds_class_entry *index = NULL;
    if (s == VIT_OK)
        s = ds_class_index_build(d, &index, err);
    for (size_t i = 0; s == VIT_OK && i < n; i++) {
        d->labels[i] = ds_class_lookup(index, d->num_classes, m->labels.v[i]);
        VIT_ASSERT(d->labels[i] >= 0);
    }
    free(index);
    return s;
}

vit_status ds_open_manifest(ds_dataset *d, int fd, const char *path, const char *dir_rel, int csv,
                            const ds_options *opt, vit_error *err)
{
    manifest_ctx m = {.d = d, .file = path, .dir_rel = dir_rel};
    ds_class_entry *index = NULL;
    char *line = NULL;
    size_t line_cap = 0;
    vit_status s = VIT_OK;
    int dfd = dup(fd);
    FILE *f = dfd >= 0 ? fdopen(dfd, "rb") : NULL;
    if (!f) {
        s = vit_error_set(err, VIT_ERR_IO, "cannot read %s: %s", path, strerror(errno));
        if (dfd >= 0)
            close(dfd);
        goto done;
    }
    if (opt->classes) {
        s = ds_use_fixed_classes(d, opt->classes, &index, err);
        if (s != VIT_OK)
            goto done;
        m.index = index;
    }
    int header_ok = 1;
    size_t lineno = 0;
    ssize_t got;
    errno = 0;
    while ((got = getline(&line, &line_cap, f)) >= 0) {
        lineno++;
        size_t len = (size_t)got;
        char *text = line;
        if (lineno == 1 && len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) {
            text += 3; /* UTF-8 byte order mark, as spreadsheets write it */
            len -= 3;
        }
        while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
            text[--len] = '\0';
        if (is_blank(text, len))
            continue;
        if (memchr(text, '\0', len)) {
            s = vit_error_set(err, VIT_ERR_FORMAT, "%s:%zu: NUL byte in line", path, lineno);
            goto done;
        }
        s = csv ? csv_line(&m, lineno, text, &header_ok, err)
                : jsonl_line(&m, lineno, text, len, err);
        if (s != VIT_OK)
            goto done;
    }
    if (ferror(f)) {
        s = vit_error_set(err, errno == ENOMEM ? VIT_ERR_NOMEM : VIT_ERR_IO,
                          "reading %s failed: %s", path, strerror(errno));
        goto done;
    }
    if (d->n == 0) {
        s = vit_error_set(err, VIT_ERR_FORMAT, "manifest %s lists no images", path);
        goto done;
    }
    if (!m.index)
        s = manifest_classes(&m, err);
done:
    if (f)
        fclose(f);
    free(line);
    free(index);
    name_list_free(&m.labels);
    return s;
}
