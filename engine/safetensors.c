/*
 * safetensors.c - reader and atomic writer for .safetensors files (see safetensors.h).
 *
 * Layout: u64 little-endian header length L | L bytes of JSON | data section.
 *
 * Reading.  st_open maps the whole file read-only (MAP_PRIVATE) and hands the
 * bytes to the same parser as st_open_memory.  The parser treats every byte as
 * untrusted: L is bounded (the caller's st_limits, never past ST_MAX_HEADER,
 * then against the bytes actually present), the header text is scanned for
 * what parsing it would cost (st_json_census) and refused past the caller's
 * caps before jansson sees it, the JSON goes through jansson with
 * duplicate keys rejected, and each tensor entry is checked field by field
 * (dtype known, shape of non-negative integers, data_offsets ordered and inside
 * the data section, shape x dtype size == byte range with overflow checks).
 * Finally the ranges are sorted by start and checked for overlap.  Only after
 * all of that does the caller get pointers into the data.  Gaps between ranges
 * and unused trailing bytes are tolerated (the reference writer never makes
 * them, but they cannot cause an out-of-bounds read).
 *
 * The parsed jansson tree is kept for the file's lifetime: tensor names,
 * metadata keys and metadata values point into it, so the parser makes no
 * string copies.  jansson keeps object keys in insertion order, so
 * st_tensor_at(i) follows the order of the header text.
 *
 * A mapped file that another process truncates while it is mapped can still
 * raise SIGBUS on access; that is inherent to mmap and not defended here.
 *
 * Error messages are one sentence, quote names through printable_name() so a
 * hostile name cannot inject control characters into a log line, and never
 * end with a period (callers prefix them with context).
 *
 * Writing.  st_writer keeps copies of F32 tensors in insertion order plus a
 * jansson object of metadata strings.  The header is written compact, padded
 * with spaces so the data section starts at a multiple of 8, and the data is
 * laid out in insertion order.  st_writer_save streams header and tensors to a
 * mkstemp file beside the target, fsyncs it, renames it over the target and
 * fsyncs the directory.
 */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Tensor data is copied with memcpy as native floats: the host must be
 * little-endian like the format.  Every compiler we build with defines
 * __BYTE_ORDER__; refuse to build rather than silently byte-swap wrongly. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif
_Static_assert(sizeof(float) == 4, "float must be IEEE-754 binary32");

#define ST_MAX_NAME 255        /* longest tensor name accepted, in bytes */
#define ST_SHOW_NAME 120       /* bytes of a name quoted in an error message */

/* ======================================================================== */
/* dtypes                                                                   */
/* ======================================================================== */

/* One row per dtype of the safetensors spec; indexed by st_dtype. */
static const struct {
    const char *name;
    size_t size;
} dtype_info[] = {
    [ST_F32] = {"F32", 4},  [ST_F16] = {"F16", 2},  [ST_BF16] = {"BF16", 2},
    [ST_F64] = {"F64", 8},  [ST_I8] = {"I8", 1},    [ST_U8] = {"U8", 1},
    [ST_I16] = {"I16", 2},  [ST_U16] = {"U16", 2},  [ST_I32] = {"I32", 4},
    [ST_U32] = {"U32", 4},  [ST_I64] = {"I64", 8},  [ST_U64] = {"U64", 8},
    [ST_BOOL] = {"BOOL", 1},
};
#define ST_NUM_DTYPES (sizeof dtype_info / sizeof dtype_info[0])

size_t st_dtype_size(st_dtype dtype)
{
    return (unsigned)dtype < ST_NUM_DTYPES ? dtype_info[dtype].size : 0;
}

const char *st_dtype_name(st_dtype dtype)
{
    return (unsigned)dtype < ST_NUM_DTYPES ? dtype_info[dtype].name : "?";
}

/* Looks a dtype up by its header spelling (case-sensitive, as in the spec). */
static bool dtype_parse(const char *s, st_dtype *out)
{
    for (size_t i = 0; i < ST_NUM_DTYPES; i++) {
        if (strcmp(s, dtype_info[i].name) == 0) {
            *out = (st_dtype)i;
            return true;
        }
    }
    return false;
}

/* ======================================================================== */
/* message helpers                                                          */
/* ======================================================================== */

/* Copies UTF-8 string s into buf (size n >= 4) for quoting in an error
 * message: control characters become '?', and a string longer than
 * ST_SHOW_NAME bytes is cut at a character boundary and ends in "...".
 * Returns buf. */
static const char *printable_name(char *buf, size_t n, const char *s)
{
    size_t limit = n - 4 < ST_SHOW_NAME ? n - 4 : ST_SHOW_NAME;
    size_t len = strlen(s), i;
    bool cut = len > limit;
    if (cut) {
        len = limit;
        while (len > 0 && ((unsigned char)s[len] & 0xC0) == 0x80)
            len--; /* do not split a multi-byte character */
    }
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (cut)
        memcpy(buf + i, "...", 3), i += 3;
    buf[i] = '\0';
    return buf;
}

/* Like printable_name for text that may hold arbitrary bytes (jansson's
 * error text can echo raw input): everything outside printable ASCII
 * becomes '?'. */
static const char *printable_ascii(char *buf, size_t n, const char *s)
{
    size_t i = 0;
    for (; s[i] && i + 1 < n; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[i] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
    }
    buf[i] = '\0';
    return buf;
}

const char *st_format_shape(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t used = 0;
    used += (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%lld", i ? "," : "",
                                 (long long)shape[i]);
    if (used < n)
        snprintf(buf + used, n - used, "]");
    return buf;
}

/* ======================================================================== */
/* reader                                                                   */
/* ======================================================================== */

/* An open file: the bytes (mapped or borrowed), the parsed header, and the
 * validated tensor table. */
struct st_file {
    void *map;                  /* our mmap of the whole file, or NULL (borrowed buffer) */
    size_t map_len;             /* length of map */
    const uint8_t *data;        /* data section: file + 8 + header length */
    size_t data_size;           /* bytes in the data section */
    json_t *header;             /* parsed header; owns every string below */
    st_tensor *tensors;         /* (ntensors) in header order */
    size_t ntensors;
    const st_tensor **by_name;  /* (ntensors) sorted by name, for st_find */
    const char **meta;          /* (2 * nmeta) key, value, key, value, ... */
    size_t nmeta;
};

/* qsort comparators over arrays of const st_tensor *. */
static int cmp_by_name(const void *a, const void *b)
{
    return strcmp((*(const st_tensor *const *)a)->name, (*(const st_tensor *const *)b)->name);
}

static int cmp_by_offset(const void *a, const void *b)
{
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes)
        return x->nbytes < y->nbytes ? -1 : 1;
    return x < y ? -1 : x > y; /* total order: qsort is not stable */
}

/* Reads a JSON integer that must be >= 0 into *out.  Returns false if v is
 * not an integer (reals such as 3.0 included) or is negative. */
static bool json_nonneg(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

/* Validates one header entry and fills t.  name is the entry's key (owned by
 * the header tree), data_size bounds data_offsets.  t->name is set first so
 * that it is valid even on failure. */
static vit_status parse_tensor(const char *name, const json_t *entry, size_t data_size,
                               st_tensor *t, vit_error *err)
{
    char qn[ST_SHOW_NAME + 8];
    size_t name_len = strlen(name);
    t->name = name;
    if (name_len == 0)
        return vit_error_set(err, VIT_ERR_FORMAT, "header has a tensor with an empty name");
    printable_name(qn, sizeof qn, name);
    if (name_len > ST_MAX_NAME)
        return vit_error_set(err, VIT_ERR_FORMAT,
                             "tensor name '%s' is %zu bytes long; at most %d are allowed", qn,
                             name_len, ST_MAX_NAME);
    if (!json_is_object(entry))
        return vit_error_set(err, VIT_ERR_FORMAT, "tensor '%s': header entry is not an object",
                             qn);

    /* dtype */
    const json_t *jd = json_object_get(entry, "dtype");
    if (!jd)
        return vit_error_set(err, VIT_ERR_FORMAT, "tensor '%s' has no \"dtype\"", qn);
    if (!json_is_string(jd))
        return vit_error_set(err, VIT_ERR_FORMAT, "tensor '%s': \"dtype\" is not a string", qn);
    if (!dtype_parse(json_string_value(jd), &t->dtype)) {
        char qd[40];
        return vit_error_set(err, VIT_ERR_FORMAT, "tensor '%s' has unknown dtype '%s'", qn,
                             printable_name(qd, sizeof qd, json_string_value(jd)));
    }

    /* shape */
    const json_t *js = json_object_get(entry, "shape");
    if (!js)
        return vit_error_set(err, VIT_ERR_FORMAT, "tensor '%s' has no \"shape\"", qn);
    if (!json_is_array(js))
        return vit_error_set(err, VIT_ERR_FORMAT, "tensor '%s': \"shape\" is not an array", qn);
    size_t ndim = json_array_size(js);
    if (ndim > ST_MAX_DIMS)
        return vit_error_set(err, VIT_ERR_UNSUPPORTED,
                             "tensor '%s' has %zu dimensions; at most %d are supported", qn, ndim,
                             ST_MAX_DIMS);
    t->ndim = (int)ndim;
    uint64_t numel = 1;
    bool overflow = false;
    for (size_t i = 0; i < ndim; i++) {
        uint64_t d;
        if (!json_nonneg(json_array_get(js, i), &d))
            return vit_error_set(err, VIT_ERR_FORMAT,
                                 "tensor '%s': shape[%zu] is not a non-negative integer", qn, i);
        t->shape[i] = (int64_t)d;
        if (d != 0 && numel > UINT64_MAX / d)
            overflow = true; /* keep going: a later 0 makes the product 0 */
        else
            numel *= d;
    }
    for (size_t i = 0; i < ndim; i++)
        if (t->shape[i] == 0)
            overflow = false, numel = 0;

    /* data_offsets */
    const json_t *jo = json_object_get(entry, "data_offsets");
    uint64_t begin, end;
    if (!jo)
        return vit_error_set(err, VIT_ERR_FORMAT, "tensor '%s' has no \"data_offsets\"", qn);
    if (!json_is_array(jo) || json_array_size(jo) != 2 ||
        !json_nonneg(json_array_get(jo, 0), &begin) || !json_nonneg(json_array_get(jo, 1), &end))
        return vit_error_set(err, VIT_ERR_FORMAT,
                             "tensor '%s': \"data_offsets\" is not [begin, end] with two "
                             "non-negative integers",
                             qn);
    if (begin > end)
        return vit_error_set(err, VIT_ERR_FORMAT,
                             "tensor '%s': data_offsets [%llu,%llu] end before they begin", qn,
                             (unsigned long long)begin, (unsigned long long)end);
    if (end > data_size)
        return vit_error_set(err, VIT_ERR_FORMAT,
                             "tensor '%s': data_offsets [%llu,%llu] run past the %zu-byte data "
                             "section (truncated file?)",
                             qn, (unsigned long long)begin, (unsigned long long)end, data_size);

    /* shape x dtype size must cover the range exactly */
    char qs[ST_MAX_DIMS * 22 + 4];
    st_format_shape(qs, sizeof qs, t->ndim, t->shape);
    size_t esize = dtype_info[t->dtype].size;
    if (overflow || numel > SIZE_MAX / esize)
        return vit_error_set(err, VIT_ERR_FORMAT,
                             "tensor '%s': shape %s x %s is too large to address", qn, qs,
                             dtype_info[t->dtype].name);
    uint64_t need = numel * esize;
    if (need != end - begin)
        return vit_error_set(err, VIT_ERR_FORMAT,
                             "tensor '%s': shape %s x %s needs %llu bytes but data_offsets span "
                             "%llu",
                             qn, qs, dtype_info[t->dtype].name, (unsigned long long)need,
                             (unsigned long long)(end - begin));
    t->numel = (size_t)numel;
    t->offset = (size_t)begin;
    t->nbytes = (size_t)need;
    return VIT_OK;
}

/* Validates "__metadata__" and records its key/value pointers in f. */
static vit_status parse_metadata(st_file *f, const json_t *meta, vit_error *err)
{
    if (!json_is_object(meta))
        return vit_error_set(err, VIT_ERR_FORMAT, "\"__metadata__\" is not an object");
    size_t n = json_object_size(meta);
    if (n == 0)
        return VIT_OK;
    f->meta = calloc(n, 2 * sizeof *f->meta);
    if (!f->meta)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for %zu metadata entries", n);
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)meta, key, value) {
        if (!json_is_string(value)) {
            char qk[ST_SHOW_NAME + 8];
            return vit_error_set(err, VIT_ERR_FORMAT,
                                 "\"__metadata__\" value for key '%s' is not a string",
                                 printable_name(qk, sizeof qk, key));
        }
        f->meta[2 * f->nmeta] = key;
        f->meta[2 * f->nmeta + 1] = json_string_value(value);
        f->nmeta++;
    }
    return VIT_OK;
}

/* Rejects overlapping byte ranges.  Empty ranges overlap nothing.  Also
 * builds f->by_name. */
static vit_status check_ranges(st_file *f, vit_error *err)
{
    size_t n = f->ntensors;
    if (n == 0)
        return VIT_OK;
    const st_tensor **order = malloc(n * sizeof *order);
    f->by_name = malloc(n * sizeof *f->by_name);
    if (!order || !f->by_name) {
        free(order);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for %zu tensors", n);
    }
    for (size_t i = 0; i < n; i++)
        order[i] = f->by_name[i] = &f->tensors[i];
    qsort(order, n, sizeof *order, cmp_by_offset);
    qsort(f->by_name, n, sizeof *f->by_name, cmp_by_name);

    const st_tensor *reach = NULL; /* non-empty tensor whose range ends last so far */
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = order[i];
        if (t->nbytes == 0)
            continue;
        if (reach && t->offset < reach->offset + reach->nbytes) {
            char qa[ST_SHOW_NAME + 8], qb[ST_SHOW_NAME + 8];
            vit_error_set(err, VIT_ERR_FORMAT,
                          "tensors '%s' [%zu,%zu] and '%s' [%zu,%zu] have overlapping "
                          "data_offsets",
                          printable_name(qa, sizeof qa, reach->name), reach->offset,
                          reach->offset + reach->nbytes, printable_name(qb, sizeof qb, t->name),
                          t->offset, t->offset + t->nbytes);
            free(order);
            return VIT_ERR_FORMAT;
        }
        if (!reach || t->offset + t->nbytes > reach->offset + reach->nbytes)
            reach = t;
    }
    free(order);
    return VIT_OK;
}

void st_json_census(const char *s, size_t n, size_t *entries, size_t *items)
{
    size_t depth = 0, commas1 = 0, count = 0;
    bool in_string = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_string) {
            if (c == '\\')
                i++; /* the escaped character cannot end the string */
            else if (c == '"')
                in_string = false;
            continue;
        }
        switch (c) {
        case '"': in_string = true; break;
        case '{': case '[': depth++, count++; break;
        case '}': case ']': depth -= depth > 0; break;
        case ',': count++, commas1 += depth == 1; break;
        default: break;
        }
    }
    *entries = commas1 + 1;
    *items = count;
}

/* Parses and validates the file image buf[0..len) into f (which is zeroed
 * apart from map/map_len) within lim.  On failure f may be partly filled; the
 * caller frees it with st_close. */
static vit_status parse_file(st_file *f, const uint8_t *buf, size_t len, const st_limits *lim,
                             vit_error *err)
{
    if (len == 0)
        return vit_error_set(err, VIT_ERR_FORMAT, "file is empty");
    if (len < 8)
        return vit_error_set(err, VIT_ERR_FORMAT,
                             "file is %zu bytes long, too short for the 8-byte header length", len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | buf[i];
    size_t max_header = lim->max_header < ST_MAX_HEADER ? lim->max_header : ST_MAX_HEADER;
    if (hlen > max_header)
        return vit_error_set(err, VIT_ERR_TOO_LARGE,
                             "header length %llu exceeds the limit of %zu bytes",
                             (unsigned long long)hlen, max_header);
    if (hlen > len - 8)
        return vit_error_set(err, VIT_ERR_FORMAT,
                             "header length %llu is larger than the %zu bytes that follow it "
                             "(truncated file?)",
                             (unsigned long long)hlen, len - 8);
    f->data = buf + 8 + hlen;
    f->data_size = len - 8 - (size_t)hlen;

    /* what the JSON would cost, bounded before jansson allocates for it
     * (safetensors.h: st_limits) */
    size_t entries, items;
    size_t max_tensors = lim->max_tensors < max_header ? lim->max_tensors : max_header;
    size_t max_items = ST_ITEMS_PER_TENSOR * max_tensors + ST_MAX_METADATA + 2;
    st_json_census((const char *)buf + 8, (size_t)hlen, &entries, &items);
    if (entries > max_tensors + 1)
        return vit_error_set(err, VIT_ERR_TOO_LARGE,
                             "header lists %zu entries; at most %zu tensors are allowed here",
                             entries, max_tensors);
    if (items > max_items)
        return vit_error_set(err, VIT_ERR_TOO_LARGE,
                             "header holds %zu JSON items; at most %zu are allowed for %zu "
                             "tensors",
                             items, max_items, max_tensors);

    /* jansson accepts surrounding whitespace, which covers the spec's space
     * padding; it rejects invalid UTF-8 and NUL bytes in keys. */
    json_error_t jerr;
    f->header = json_loadb((const char *)buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!f->header) {
        char text[sizeof jerr.text];
        if (json_error_code(&jerr) == json_error_out_of_memory)
            return vit_error_set(err, VIT_ERR_NOMEM, "out of memory parsing the header");
        return vit_error_set(err, VIT_ERR_FORMAT, "header is not valid JSON: %s at byte %d",
                             printable_ascii(text, sizeof text, jerr.text), jerr.position);
    }
    if (!json_is_object(f->header))
        return vit_error_set(err, VIT_ERR_FORMAT, "header is not a JSON object");

    size_t n = json_object_size(f->header);
    size_t listed = n - (json_object_get(f->header, "__metadata__") != NULL);
    if (listed > max_tensors) /* exact: the census let one entry be metadata */
        return vit_error_set(err, VIT_ERR_TOO_LARGE,
                             "header lists %zu tensors; at most %zu are allowed here", listed,
                             max_tensors);
    if (n > 0) {
        f->tensors = calloc(n, sizeof *f->tensors);
        if (!f->tensors)
            return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for %zu tensors", n);
    }
    const char *key;
    json_t *value;
    json_object_foreach(f->header, key, value) {
        vit_status s;
        if (strcmp(key, "__metadata__") == 0)
            s = parse_metadata(f, value, err);
        else if ((s = parse_tensor(key, value, f->data_size, &f->tensors[f->ntensors], err)) ==
                 VIT_OK)
            f->ntensors++;
        if (s != VIT_OK)
            return s;
    }
    return check_ranges(f, err);
}

vit_status st_open_memory(const void *data, size_t len, st_file **out, vit_error *err)
{
    return st_open_memory_limited(data, len, &ST_LIMITS_MODEL, out, err);
}

vit_status st_open_memory_limited(const void *data, size_t len, const st_limits *limits,
                                  st_file **out, vit_error *err)
{
    VIT_ASSERT(out && limits && (data || len == 0));
    *out = NULL;
    st_file *f = calloc(1, sizeof *f);
    if (!f)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    vit_status s = parse_file(f, data, len, limits, err);
    if (s != VIT_OK) {
        st_close(f);
        return s;
    }
    *out = f;
    return VIT_OK;
}

vit_status st_open(const char *path, st_file **out, vit_error *err)
{
    return st_open_limited(path, &ST_LIMITS_MODEL, out, err);
}

vit_status st_open_limited(const char *path, const st_limits *limits, st_file **out,
                           vit_error *err)
{
    VIT_ASSERT(path && limits && out);
    *out = NULL;
    /* O_NONBLOCK: a FIFO given by mistake must not hang open(); it has no
     * effect on regular files, and anything else is refused below. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return vit_error_set(err, errno == ENOENT ? VIT_ERR_NOT_FOUND : VIT_ERR_IO,
                             "cannot open '%s': %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        vit_error_set(err, VIT_ERR_IO, "cannot stat '%s': %s", path, strerror(errno));
        close(fd);
        return VIT_ERR_IO;
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return vit_error_set(err, VIT_ERR_IO, "'%s' is not a regular file", path);
    }
    if ((uintmax_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return vit_error_set(err, VIT_ERR_TOO_LARGE, "'%s' is too large to map", path);
    }

    st_file *f = calloc(1, sizeof *f);
    if (!f) {
        close(fd);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    }
    size_t len = (size_t)sb.st_size;
    if (len > 0) { /* mmap of length 0 is an error; parse_file reports "empty" */
        void *p = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            vit_error_set(err, VIT_ERR_IO, "cannot map '%s': %s", path, strerror(errno));
            close(fd);
            free(f);
            return VIT_ERR_IO;
        }
        f->map = p;
        f->map_len = len;
    }
    close(fd); /* the mapping stays valid without the descriptor */

    vit_status s = parse_file(f, f->map, len, limits, err);
    if (s != VIT_OK) {
        if (err)
            vit_error_prefix(err, "%s", path);
        st_close(f);
        return s;
    }
    *out = f;
    return VIT_OK;
}

void st_close(st_file *f)
{
    if (!f)
        return;
    if (f->map)
        munmap(f->map, f->map_len);
    json_decref(f->header);
    free(f->tensors);
    free(f->by_name);
    free(f->meta);
    free(f);
}

size_t st_count(const st_file *f)
{
    return f->ntensors;
}

const st_tensor *st_tensor_at(const st_file *f, size_t i)
{
    return i < f->ntensors ? &f->tensors[i] : NULL;
}

/* Binary search over the name index built at open. */
const st_tensor *st_find(const st_file *f, const char *name)
{
    size_t lo = 0, hi = f->ntensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, f->by_name[mid]->name);
        if (c == 0)
            return f->by_name[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *st_metadata(const st_file *f, const char *key)
{
    for (size_t i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta[2 * i], key) == 0)
            return f->meta[2 * i + 1];
    return NULL;
}

size_t st_metadata_count(const st_file *f)
{
    return f->nmeta;
}

int st_metadata_at(const st_file *f, size_t i, const char **key, const char **value)
{
    if (i >= f->nmeta)
        return 0;
    if (key)
        *key = f->meta[2 * i];
    if (value)
        *value = f->meta[2 * i + 1];
    return 1;
}

const void *st_data(const st_file *f, const st_tensor *t)
{
    return f->data + t->offset;
}

/* IEEE-754 binary16 -> binary32, exact for every input: subnormals are
 * renormalized, infinities kept, NaN payloads (and the quiet bit) kept. */
static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) {               /* inf / nan */
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp != 0) {           /* normal: rebias 15 -> 127 */
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    } else if (mant == 0) {          /* +-0 */
        bits = sign;
    } else {                         /* subnormal: mant * 2^-24, normalize */
        exp = 113;                   /* exponent of 2^-14 in binary32 */
        while (!(mant & 0x400u)) {
            mant <<= 1;
            exp--;
        }
        bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
    float out;
    memcpy(&out, &bits, sizeof out);
    return out;
}

/* bfloat16 is the top half of a binary32, so widening is a shift. */
static float bf16_to_float(uint16_t b)
{
    uint32_t bits = (uint32_t)b << 16;
    float out;
    memcpy(&out, &bits, sizeof out);
    return out;
}

void st_evict(const st_file *f, const st_tensor *t)
{
    VIT_ASSERT(f && t && t >= f->tensors && t < f->tensors + f->ntensors);
    if (!f->map || t->nbytes == 0)
        return; /* a borrowed buffer is the caller's */
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t mask = page > 0 ? (uintptr_t)page - 1 : 4095;
    uintptr_t start = (uintptr_t)(f->data + t->offset);
    uintptr_t lo = (start + mask) & ~mask, hi = (start + t->nbytes) & ~mask;
    if (hi > lo) /* advice: a read-only file mapping faults the pages back in if read again */
        madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

vit_status st_read_f32(const st_file *f, const st_tensor *t, float *dst, vit_error *err)
{
    VIT_ASSERT(f && t && (dst || t->numel == 0));
    VIT_ASSERT(t >= f->tensors && t < f->tensors + f->ntensors); /* t belongs to f */
    const uint8_t *src = f->data + t->offset; /* may be unaligned: read bytes */
    switch (t->dtype) {
    case ST_F32:
        if (t->nbytes)
            memcpy(dst, src, t->nbytes);
        return VIT_OK;
    case ST_F16:
        for (size_t i = 0; i < t->numel; i++)
            dst[i] = half_to_float((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
        return VIT_OK;
    case ST_BF16:
        for (size_t i = 0; i < t->numel; i++)
            dst[i] = bf16_to_float((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
        return VIT_OK;
    case ST_U8:
        for (size_t i = 0; i < t->numel; i++)
            dst[i] = (float)src[i];
        return VIT_OK;
    default: {
        char qn[ST_SHOW_NAME + 8];
        return vit_error_set(err, VIT_ERR_UNSUPPORTED,
                             "tensor '%s' has dtype %s; only F32, F16, BF16 and U8 can be read "
                             "as floats",
                             printable_name(qn, sizeof qn, t->name), st_dtype_name(t->dtype));
    }
    }
}

/* ======================================================================== */
/* writer                                                                   */
/* ======================================================================== */

/* One tensor queued for writing. */
typedef struct st_wtensor {
    char *name;                   /* owned copy */
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t nbytes;                /* numel * 4 */
    float *data;                  /* owned copy; NULL when nbytes == 0 */
} st_wtensor;

struct st_writer {
    st_wtensor *tensors;          /* (count) in insertion order = data order */
    size_t count, cap;
    json_t *metadata;             /* object of key -> string, insertion order */
    size_t data_bytes;            /* sum of nbytes, <= LLONG_MAX (JSON integer range) */
};

st_writer *st_writer_create(void)
{
    st_writer *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->metadata = json_object();
    if (!w->metadata) {
        free(w);
        return NULL;
    }
    return w;
}

void st_writer_free(st_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->count; i++) {
        free(w->tensors[i].name);
        free(w->tensors[i].data);
    }
    free(w->tensors);
    json_decref(w->metadata);
    free(w);
}

/* True if s is valid UTF-8 (what jansson accepts for strings and keys). */
static bool utf8_ok(const char *s)
{
    json_t *j = json_string(s);
    json_decref(j);
    return j != NULL;
}

vit_status st_writer_add_f32(st_writer *w, const char *name, int ndim, const int64_t *shape,
                             const float *data, vit_error *err)
{
    VIT_ASSERT(w && name && (shape || ndim == 0));
    char qn[ST_SHOW_NAME + 8];
    size_t name_len = strlen(name);
    if (name_len == 0)
        return vit_error_set(err, VIT_ERR_INVALID, "tensor name is empty");
    if (!utf8_ok(name))
        return vit_error_set(err, VIT_ERR_INVALID, "tensor name '%s' is not valid UTF-8",
                             printable_ascii(qn, sizeof qn, name));
    printable_name(qn, sizeof qn, name);
    if (name_len > ST_MAX_NAME)
        return vit_error_set(err, VIT_ERR_INVALID,
                             "tensor name '%s' is %zu bytes long; at most %d are allowed", qn,
                             name_len, ST_MAX_NAME);
    if (strcmp(name, "__metadata__") == 0)
        return vit_error_set(err, VIT_ERR_INVALID, "'__metadata__' cannot name a tensor");
    for (size_t i = 0; i < w->count; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return vit_error_set(err, VIT_ERR_INVALID, "tensor '%s' was already added", qn);
    if (ndim < 0 || ndim > ST_MAX_DIMS)
        return vit_error_set(err, VIT_ERR_INVALID,
                             "tensor '%s' has %d dimensions; 0 to %d are supported", qn, ndim,
                             ST_MAX_DIMS);

    size_t numel = 1;
    bool overflow = false, zero = false;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return vit_error_set(err, VIT_ERR_INVALID, "tensor '%s': shape[%d] is negative (%lld)",
                                 qn, i, (long long)shape[i]);
        if (shape[i] == 0)
            zero = true;
        else if ((uint64_t)shape[i] > SIZE_MAX / numel)
            overflow = true;
        else
            numel *= (size_t)shape[i];
    }
    if (zero)
        numel = 0, overflow = false;
    if (overflow || numel > SIZE_MAX / 4 ||
        (uint64_t)numel * 4 > (uint64_t)LLONG_MAX - w->data_bytes)
        return vit_error_set(err, VIT_ERR_TOO_LARGE, "tensor '%s' is too large to write", qn);
    size_t nbytes = numel * 4;
    if (nbytes && !data)
        return vit_error_set(err, VIT_ERR_INVALID, "tensor '%s' has no data", qn);

    if (w->count == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 16;
        if (cap > SIZE_MAX / sizeof *w->tensors)
            return vit_error_set(err, VIT_ERR_NOMEM, "too many tensors");
        st_wtensor *grown = realloc(w->tensors, cap * sizeof *grown);
        if (!grown)
            return vit_error_set(err, VIT_ERR_NOMEM, "out of memory adding tensor '%s'", qn);
        w->tensors = grown;
        w->cap = cap;
    }
    st_wtensor *t = &w->tensors[w->count];
    memset(t, 0, sizeof *t);
    t->name = malloc(name_len + 1);
    t->data = nbytes ? malloc(nbytes) : NULL;
    if (!t->name || (nbytes && !t->data)) {
        free(t->name);
        free(t->data);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory copying tensor '%s' (%zu bytes)",
                             qn, nbytes);
    }
    memcpy(t->name, name, name_len + 1);
    if (nbytes)
        memcpy(t->data, data, nbytes);
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
    t->nbytes = nbytes;
    w->data_bytes += nbytes;
    w->count++;
    return VIT_OK;
}

vit_status st_writer_set_metadata(st_writer *w, const char *key, const char *value,
                                  vit_error *err)
{
    VIT_ASSERT(w && key && value);
    char qk[ST_SHOW_NAME + 8];
    if (!utf8_ok(key))
        return vit_error_set(err, VIT_ERR_INVALID, "metadata key '%s' is not valid UTF-8",
                             printable_ascii(qk, sizeof qk, key));
    printable_name(qk, sizeof qk, key);
    json_t *v = json_string(value);
    if (!v)
        return vit_error_set(err, VIT_ERR_INVALID, "metadata value for '%s' is not valid UTF-8",
                             qk);
    if (json_object_set_new(w->metadata, key, v) != 0) /* steals v even on failure */
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory setting metadata '%s'", qk);
    return VIT_OK;
}

/* Builds the JSON header for w, padded with spaces to a multiple of 8 bytes.
 * On success *out is malloc'd (caller frees) and *out_len its length. */
static vit_status build_header(const st_writer *w, char **out, size_t *out_len, vit_error *err)
{
    *out = NULL;
    json_t *root = json_object();
    if (!root)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory building the header");
    int bad = 0;
    if (json_object_size(w->metadata) > 0)
        bad |= json_object_set(root, "__metadata__", w->metadata);
    size_t offset = 0;
    for (size_t i = 0; i < w->count && !bad; i++) {
        const st_wtensor *t = &w->tensors[i];
        json_t *entry = json_object(), *shape = json_array(), *offs = json_array();
        bad |= !entry || !shape || !offs;
        for (int d = 0; d < t->ndim && !bad; d++)
            bad |= json_array_append_new(shape, json_integer(t->shape[d]));
        if (!bad) {
            bad |= json_array_append_new(offs, json_integer((json_int_t)offset));
            bad |= json_array_append_new(offs, json_integer((json_int_t)(offset + t->nbytes)));
            bad |= json_object_set_new(entry, "dtype", json_string("F32"));
            bad |= json_object_set(entry, "shape", shape);
            bad |= json_object_set(entry, "data_offsets", offs);
            bad |= json_object_set(root, t->name, entry);
        }
        json_decref(entry);
        json_decref(shape);
        json_decref(offs);
        offset += t->nbytes;
    }
    if (bad) {
        json_decref(root);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory building the header");
    }

    const size_t flags = JSON_COMPACT; /* keys in insertion order: header order = data order */
    size_t n = json_dumpb(root, NULL, 0, flags);
    size_t padded = n + (8 - n % 8) % 8;
    char *buf = (n == 0 || padded < n) ? NULL : malloc(padded);
    if (!buf || json_dumpb(root, buf, padded, flags) != n) {
        free(buf);
        json_decref(root);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory serializing the header");
    }
    json_decref(root);
    memset(buf + n, ' ', padded - n);
    *out = buf;
    *out_len = padded;
    return VIT_OK;
}

/* Stores v as 8 little-endian bytes. */
static void put_u64le(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

vit_status st_writer_serialize(const st_writer *w, void **out, size_t *out_len, vit_error *err)
{
    VIT_ASSERT(w && out && out_len);
    *out = NULL;
    *out_len = 0;
    char *header;
    size_t hlen;
    vit_status s = build_header(w, &header, &hlen, err);
    if (s != VIT_OK)
        return s;
    if (hlen > SIZE_MAX - 8 || w->data_bytes > SIZE_MAX - 8 - hlen) {
        free(header);
        return vit_error_set(err, VIT_ERR_TOO_LARGE, "serialized file would be too large");
    }
    size_t total = 8 + hlen + w->data_bytes;
    uint8_t *buf = malloc(total);
    if (!buf) {
        free(header);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for a %zu-byte file", total);
    }
    put_u64le(buf, hlen);
    memcpy(buf + 8, header, hlen);
    free(header);
    uint8_t *p = buf + 8 + hlen;
    for (size_t i = 0; i < w->count; i++) {
        if (w->tensors[i].nbytes)
            memcpy(p, w->tensors[i].data, w->tensors[i].nbytes);
        p += w->tensors[i].nbytes;
    }
    *out = buf;
    *out_len = total;
    return VIT_OK;
}

/* Writes all n bytes, retrying short writes and EINTR.  Returns 0 or -1
 * with errno set. */
static int write_all(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n > 0) {
        size_t chunk = n < (1u << 30) ? n : (1u << 30); /* Linux caps one write near 2 GiB */
        ssize_t got = write(fd, p, chunk);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

/* fsyncs the directory containing path so a completed rename survives a
 * crash.  Filesystems that cannot sync directories (EINVAL) are accepted.
 * Returns 0 or -1 with errno set. */
static int fsync_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash) {
        dir = malloc(2);
        if (dir)
            memcpy(dir, ".", 2);
    } else {
        size_t n = slash == path ? 1 : (size_t)(slash - path); /* "/x" -> "/" */
        dir = malloc(n + 1);
        if (dir) {
            memcpy(dir, path, n);
            dir[n] = '\0';
        }
    }
    if (!dir) {
        errno = ENOMEM;
        return -1;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    if (rc != 0 && errno == EINVAL)
        rc = 0;
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

vit_status st_writer_save(const st_writer *w, const char *path, vit_error *err)
{
    VIT_ASSERT(w && path);
    char *header = NULL, *tmp = NULL;
    size_t hlen;
    int fd = -1;
    vit_status s = build_header(w, &header, &hlen, err);
    if (s != VIT_OK)
        return s;

    static const char suffix[] = ".tmp.XXXXXX";
    size_t plen = strlen(path);
    tmp = plen <= SIZE_MAX - sizeof suffix ? malloc(plen + sizeof suffix) : NULL;
    if (!tmp) {
        s = vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
        goto fail;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, suffix, sizeof suffix);

    fd = mkstemp(tmp);
    if (fd < 0) {
        s = vit_error_set(err, VIT_ERR_IO, "cannot create a temporary file for '%s': %s", path,
                          strerror(errno));
        free(tmp); /* nothing was created: nothing to unlink */
        tmp = NULL;
        goto fail;
    }
    /* mkstemp makes 0600 files; model and task files are not secrets and may
     * be read by another user (e.g. a container's service account). */
    uint8_t len8[8];
    put_u64le(len8, hlen);
    int bad = fcntl(fd, F_SETFD, FD_CLOEXEC) != 0 || fchmod(fd, 0644) != 0 ||
              write_all(fd, len8, 8) != 0 || write_all(fd, header, hlen) != 0;
    for (size_t i = 0; i < w->count && !bad; i++)
        bad = w->tensors[i].nbytes && write_all(fd, w->tensors[i].data, w->tensors[i].nbytes) != 0;
    if (bad || fsync(fd) != 0) {
        s = vit_error_set(err, VIT_ERR_IO, "cannot write a temporary file for '%s': %s", path,
                          strerror(errno));
        goto fail;
    }
    int rc = close(fd);
    fd = -1;
    if (rc != 0) {
        s = vit_error_set(err, VIT_ERR_IO, "cannot write a temporary file for '%s': %s", path,
                          strerror(errno));
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        s = vit_error_set(err, VIT_ERR_IO, "cannot rename '%s' to '%s': %s", tmp, path,
                          strerror(errno));
        goto fail;
    }
    free(tmp);
    free(header);
    /* The new file is in place; a failure here only weakens durability, but
     * it is still reported because the caller asked for a durable save. */
    if (fsync_parent(path) != 0)
        return vit_error_set(err, VIT_ERR_IO, "saved '%s' but cannot sync its directory: %s",
                             path, strerror(errno));
    return VIT_OK;

fail:
    if (fd >= 0)
        close(fd);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    free(header);
    return s;
}
