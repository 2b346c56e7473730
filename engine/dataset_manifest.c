/*
 * dataset_manifest.c - data sets listed by a manifest: JSONL lines
 * {"image": path, "label": name} or CSV "image,label" (see dataset.h).
 *
 * Design
 *   - The manifest is read line by line; every item is checked as it is
 *     read: its image is opened beneath the data set root now (beneath_open,
 *     relative paths from the manifest's directory), so a missing file or an
 *     escape names the manifest line at fault.  An http(s) entry is a URL
 *     item when the caller gave a fetch hook: its text is checked (length,
 *     bytes, the caller's check_url) and nothing is fetched or looked up;
 *     without a hook it is refused.
 *   - Without a fixed class list each distinct label is kept once (a hash
 *     set) and items keep its number; the sorted set becomes the classes at
 *     the end.  With one, each label is looked up as it is read.
 *   - Memory stays in proportion to the manifest: a line is at most
 *     DS_MANIFEST_MAX_LINE bytes, an item keeps its path (bounded in all,
 *     DS_NAMES_START) and a label number, never a copy of its label.
 *   - Both parsers refuse what they cannot read unambiguously: JSON with a
 *     key twice, a CSV field with text after its closing quote, a NUL byte.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "beneath.h"
#include "dataset_impl.h"

/* ================================================================ helpers */

static int cmp_class_name(const void *a, const void *b)
{
    /* bytewise (unsigned char) */
    return strcmp(((const ds_class_entry *)a)->name, ((const ds_class_entry *)b)->name);
}

static int is_url(const char *s)
{
    return strncasecmp(s, "http://", 7) == 0 || strncasecmp(s, "https://", 8) == 0;
}

/* The distinct labels of a manifest, in order of first use, with a hash
 * index: an item keeps only the number of its label (in d->labels), so
 * "a,x" on a million lines holds "x" once, not a million copies.
 * The labels are the manifest writer's to choose, so the hash is keyed
 * (SipHash-1-3, a key drawn per table): with an unkeyed one (FNV-1a) 32,768
 * labels precomputed to agree in their low 17 bits put every label in one
 * probe run, and a 1 MB CSV took 17 s (n^2 / 2 compares) instead of 0.2 s. */
typedef struct label_set {
    char **names;    /* (n) owned, in order of first use; room for nslots / 2 */
    size_t n;
    size_t *slots;   /* (nslots) index + 1 into names, 0 when empty; open addressing */
    size_t nslots;   /* a power of two, over twice n */
    uint64_t key[2]; /* SipHash key, drawn when slots are first made */
    uint64_t probes; /* slots looked at (label_slot), for ds_options.label_probes */
} label_set;

static void label_set_free(label_set *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->names[i]);
    free(l->names);
    free(l->slots);
    memset(l, 0, sizeof *l);
}

#define SIP_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIP_ROUND(v0, v1, v2, v3)                                                                  \
    do {                                                                                           \
        v0 += v1, v1 = SIP_ROTL(v1, 13), v1 ^= v0, v0 = SIP_ROTL(v0, 32);                          \
        v2 += v3, v3 = SIP_ROTL(v3, 16), v3 ^= v2;                                                 \
        v0 += v3, v3 = SIP_ROTL(v3, 21), v3 ^= v0;                                                 \
        v2 += v1, v1 = SIP_ROTL(v1, 17), v1 ^= v2, v2 = SIP_ROTL(v2, 32);                          \
    } while (0)

/* SipHash-1-3 of s[0..len) under key k (ref: Aumasson & Bernstein, "SipHash:
 * a fast short-input PRF", reference siphash.c with cROUNDS 1, dROUNDS 3). */
static uint64_t siphash13(const uint64_t k[2], const unsigned char *s, size_t len)
{
    uint64_t v0 = 0x736f6d6570736575ull ^ k[0], v1 = 0x646f72616e646f6dull ^ k[1];
    uint64_t v2 = 0x6c7967656e657261ull ^ k[0], v3 = 0x7465646279746573ull ^ k[1];
    uint64_t b = (uint64_t)len << 56;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t m = 0;
        for (int j = 0; j < 8; j++) /* little-endian, whatever the host */
            m |= (uint64_t)s[i + j] << (8 * j);
        v3 ^= m;
        SIP_ROUND(v0, v1, v2, v3);
        v0 ^= m;
    }
    for (int j = 0; i + j < len; j++)
        b |= (uint64_t)s[i + j] << (8 * j);
    v3 ^= b;
    SIP_ROUND(v0, v1, v2, v3);
    v0 ^= b;
    v2 ^= 0xff;
    for (int r = 0; r < 3; r++)
        SIP_ROUND(v0, v1, v2, v3);
    return v0 ^ v1 ^ v2 ^ v3;
}

/* A fresh key for a table: getrandom(2), or (no entropy to be had: an old
 * kernel, a seccomp filter) the clock, pid and addresses mixed by SipHash,
 * which the manifest's writer cannot know in advance either. */
static void label_key(uint64_t key[2])
{
    if (getrandom(key, 2 * sizeof *key, GRND_NONBLOCK) == (ssize_t)(2 * sizeof *key))
        return;
    static const uint64_t fixed[2] = {0x0123456789abcdefull, 0xfedcba9876543210ull};
    struct timespec ts = {0, 0};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t seed[4] = {(uint64_t)ts.tv_sec, (uint64_t)ts.tv_nsec, (uint64_t)getpid(),
                        (uint64_t)(uintptr_t)key ^ (uint64_t)(uintptr_t)&ts};
    key[0] = siphash13(fixed, (const unsigned char *)seed, sizeof seed);
    seed[0] ^= key[0];
    key[1] = siphash13(fixed, (const unsigned char *)seed, sizeof seed);
}

/* The slot of `s` in l->slots: where it is, or the empty slot it would take. */
static size_t label_slot(label_set *l, const char *s)
{
    size_t mask = l->nslots - 1;
    size_t k = (size_t)siphash13(l->key, (const unsigned char *)s, strlen(s)) & mask;
    l->probes++;
    while (l->slots[k] && strcmp(l->names[l->slots[k] - 1], s) != 0) {
        k = (k + 1) & mask;
        l->probes++;
    }
    return k;
}

/* The number of label s, added when new.  -1 on OOM, -2 when s would be the
 * (DS_MAX_CLASSES + 1)th distinct label. */
static long label_intern(label_set *l, const char *s)
{
    if (l->nslots) {
        size_t k = label_slot(l, s);
        if (l->slots[k])
            return (long)(l->slots[k] - 1);
    }
    if (l->n >= DS_MAX_CLASSES)
        return -2;
    if (2 * (l->n + 1) >= l->nslots) { /* grow and rehash: load stays under 1/2 */
        size_t ns = l->nslots ? 2 * l->nslots : 64;
        size_t *slots = calloc(ns, sizeof *slots);
        char **names = realloc(l->names, ns / 2 * sizeof *names);
        if (names)
            l->names = names;
        if (!slots || !names) {
            free(slots);
            return -1;
        }
        if (!l->nslots)
            label_key(l->key);
        free(l->slots);
        l->slots = slots;
        l->nslots = ns;
        for (size_t i = 0; i < l->n; i++)
            l->slots[label_slot(l, l->names[i])] = i + 1;
    }
    size_t k = label_slot(l, s);
    if (!(l->names[l->n] = strdup(s)))
        return -1;
    l->slots[k] = ++l->n;
    return (long)(l->n - 1);
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

/* A manifest line holds one path (< PATH_MAX), one label and a little
 * syntax; JSON may spell each byte as 6 ("\u00e9").  Longer lines are
 * refused before they are held whole: getline read a 1 GB line into memory,
 * and jansson's values for a long JSON array take several times its size. */
#define DS_MANIFEST_MAX_LINE ((size_t)64 << 10)

/* Reads one line of f (through '\n' or the end) into buf (room for
 * DS_MANIFEST_MAX_LINE + 1 bytes), NUL-terminated; *len excludes the NUL
 * and includes NUL bytes in the line.  Returns 1 for a line, 0 at the end
 * of the file (or on a read error: see ferror), -1 for a line over
 * DS_MANIFEST_MAX_LINE bytes (its rest is not read). */
static int read_line(FILE *f, char *buf, size_t *len)
{
    size_t n = 0;
    int c;
    while ((c = getc_unlocked(f)) != EOF) {
        if (n == DS_MANIFEST_MAX_LINE)
            return -1;
        buf[n++] = (char)c;
        if (c == '\n')
            break;
    }
    buf[n] = '\0';
    *len = n;
    return n > 0;
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
 * a fixed class list (index != NULL); otherwise the item gets the label's
 * number in m->labels, made a class index by manifest_classes. */
typedef struct manifest_ctx {
    ds_dataset *d;
    const char *file;     /* manifest path, for messages */
    const char *dir_rel;  /* manifest directory, relative to the root */
    const ds_class_entry *index;
    const ds_options *opt; /* fetch, check_url, fetch_ctx: URL entries */
    label_set labels;     /* the labels seen (no fixed list); d->labels number them */
} manifest_ctx;

/* Checks URL entry `url` of line `where` (an item only with a fetch hook):
 * at most DS_MAX_URL bytes without a space or control byte, then
 * opt->check_url.  Nothing is fetched. */
static vit_status check_url_entry(const manifest_ctx *m, const char *where, const char *url,
                                  vit_error *err)
{
    if (!m->opt->fetch)
        return vit_error_set(err, VIT_ERR_UNSUPPORTED,
                             "%s: URLs in manifests are not supported yet ('%.200s')", where,
                             url);
    size_t n = strnlen(url, DS_MAX_URL + 1);
    if (n > DS_MAX_URL)
        return vit_error_set(err, VIT_ERR_INVALID, "%s: URL longer than %d bytes", where,
                             DS_MAX_URL);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= 0x20 || c == 0x7f)
            return vit_error_set(err, VIT_ERR_INVALID,
                                 "%s: URL '%.200s' has a space or control character at byte %zu",
                                 where, url, i);
    }
    if (m->opt->check_url) {
        vit_error e = {0};
        vit_status s = m->opt->check_url(m->opt->fetch_ctx, url, &e);
        if (s != VIT_OK)
            return vit_error_set(err, s, "%s: URL '%.200s': %s", where, url,
                                 e.message[0] ? e.message : "refused");
    }
    return VIT_OK;
}

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
    int url = is_url(image);
    if (url && (s = check_url_entry(m, where, image, err)) != VIT_OK)
        return s;
    int cls;
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
    } else {
        long id = label_intern(&m->labels, label);
        if (id == -2)
            return vit_error_set(err, VIT_ERR_TOO_LARGE, "%s: more than %d distinct labels",
                                 where, DS_MAX_CLASSES);
        if (id < 0)
            return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for labels");
        cls = (int)id;
    }
    if (url) { /* kept as written: fetched by ds_load_image, never looked up here */
        s = ds_add_url_item(m->d, image, cls, err);
        if (s != VIT_OK)
            vit_error_prefix(err, "%s", where);
        return s;
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
    s = beneath_open(m->d->root, rel, BENEATH_WANT_FILE, &m->d->walks, subject, &fd, &st, &canon,
                     err);
    free(rel);
    if (s != VIT_OK)
        return s;
    close(fd);
    s = ds_add_item(m->d, canon, cls, err);
    free(canon);
    if (s != VIT_OK)
        vit_error_prefix(err, "%s", where);
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

/* The distinct labels, sorted bytewise, become the classes; items' label
 * numbers become class indices. */
static vit_status manifest_classes(manifest_ctx *m, vit_error *err)
{
    ds_dataset *d = m->d;
    size_t u = m->labels.n;
    ds_class_entry *byname = malloc((u ? u : 1) * sizeof *byname);
    char **sorted = malloc((u ? u : 1) * sizeof *sorted);
    int *rank = malloc((u ? u : 1) * sizeof *rank); /* label number -> class */
    vit_status s = VIT_OK;
    if (!byname || !sorted || !rank) {
        s = vit_error_set(err, VIT_ERR_NOMEM, "out of memory for labels");
        goto done;
    }
    for (size_t i = 0; i < u; i++)
        byname[i] = (ds_class_entry){m->labels.names[i], (int)i};
    qsort(byname, u, sizeof *byname, cmp_class_name);
    for (size_t c = 0; c < u; c++) {
        sorted[c] = (char *)byname[c].name;
        rank[byname[c].index] = (int)c;
    }
    s = ds_set_classes(d, (const char *const *)sorted, u, "label", err);
    for (size_t i = 0; s == VIT_OK && i < d->n; i++) {
        VIT_ASSERT(d->labels[i] >= 0 && (size_t)d->labels[i] < u);
        d->labels[i] = rank[d->labels[i]];
    }
done:
    free(byname);
    free(sorted);
    free(rank);
    return s;
}

vit_status ds_open_manifest(ds_dataset *d, int fd, const char *path, const char *dir_rel, int csv,
                            const ds_options *opt, vit_error *err)
{
    manifest_ctx m = {.d = d, .file = path, .dir_rel = dir_rel, .opt = opt};
    ds_class_entry *index = NULL;
    char *line = malloc(DS_MANIFEST_MAX_LINE + 1);
    vit_status s = VIT_OK;
    if (!line)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory reading %s", path);
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
    size_t len;
    int got;
    errno = 0;
    while ((got = read_line(f, line, &len)) != 0) {
        lineno++;
        if (got < 0) {
            s = vit_error_set(err, VIT_ERR_TOO_LARGE, "%s:%zu: line longer than %zu bytes", path,
                              lineno, DS_MANIFEST_MAX_LINE);
            goto done;
        }
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
    if (opt->label_probes)
        *opt->label_probes = m.labels.probes;
    label_set_free(&m.labels);
    return s;
}
