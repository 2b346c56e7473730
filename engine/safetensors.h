/*
 * safetensors.h - read and write .safetensors files.
 *
 * Format: 8-byte little-endian header length L, L bytes of JSON
 *   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"key": "string value", ...}}
 * then the data section; offsets are relative to the data section.
 *
 * Files are untrusted input: the header's length and what its JSON would
 * cost to parse are bounded before it is parsed (st_limits: the caller says
 * what kind of file it expects), the JSON is parsed with jansson, every
 * tensor's shape x dtype size must equal
 * its byte range, ranges must lie inside the data section and must not overlap.
 * A malformed file yields VIT_ERR_FORMAT (or TOO_LARGE) with a message naming
 * the problem, never a crash or an out-of-bounds read.
 *
 * Reading maps the file (read-only, private) and converts on demand: F32,
 * F16, BF16 (and U8 for fixtures) convert to float; other dtypes of the
 * safetensors spec are accepted in the header but refused by st_read_f32.
 */
#ifndef VIT_SAFETENSORS_H
#define VIT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define ST_MAX_HEADER (100u * 1024u * 1024u) /* same bound as the reference reader */
#define ST_MAX_DIMS 8

/* What opening one file may cost, checked before its header's JSON is parsed.
 * Why before: jansson spends about 20 bytes of memory per byte of a header of
 * small values -- a 100 MB header of 2.2M empty tensors took 2.1 GB and 13 s
 * -- so a cap applied after parsing comes too late.  The header's text is
 * first scanned (one pass, no allocation) for its top-level entries and its
 * JSON items (one per comma or opening bracket); more than max_tensors + 1
 * entries (the +1: "__metadata__") or more than ST_ITEMS_PER_TENSOR items per
 * allowed tensor plus ST_MAX_METADATA is VIT_ERR_TOO_LARGE, and so is a
 * header longer than max_header (which may not exceed ST_MAX_HEADER).  Parsing
 * then costs O(max_header + max_tensors), whatever the file. */
typedef struct st_limits {
    size_t max_header;  /* bytes of header JSON */
    size_t max_tensors; /* tensor entries, "__metadata__" not counted */
} st_limits;

#define ST_ITEMS_PER_TENSOR 16 /* a valid entry has at most 14: "name", {}, 3 keys, 8 dims, 2 offsets */
#define ST_MAX_METADATA 1024   /* "__metadata__" entries (items they may add) */

/* A model checkpoint: ViT-H/14 has about 390 tensors in a 40 KB header, a
 * whole OpenCLIP ViT-bigG (text tower included) about 1000; 16 MiB leaves
 * room for large metadata.  st_open and st_open_memory apply these. */
#define ST_LIMITS_MODEL ((st_limits){.max_header = 16u << 20, .max_tensors = 16384})

typedef enum st_dtype {
    ST_F32, ST_F16, ST_BF16, ST_F64,
    ST_I8, ST_U8, ST_I16, ST_U16, ST_I32, ST_U32, ST_I64, ST_U64, ST_BOOL,
} st_dtype;

/* One tensor entry of the header.  Owned by its st_file. */
typedef struct st_tensor {
    const char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t numel;   /* product of shape (1 for a scalar) */
    size_t offset;  /* byte offset into the data section */
    size_t nbytes;  /* == numel * st_dtype_size(dtype) */
} st_tensor;

typedef struct st_file st_file;

/* Opens and validates a file (mmap) within ST_LIMITS_MODEL.  On success *out
 * owns the mapping; free it with st_close.  On failure *out is NULL and err
 * says why. */
vit_status st_open(const char *path, st_file **out, vit_error *err);

/* st_open within the caller's limits (a task file is far smaller than a
 * checkpoint); VIT_ERR_TOO_LARGE past them, before the header is parsed. */
vit_status st_open_limited(const char *path, const st_limits *limits, st_file **out,
                           vit_error *err);

/* Same over a caller-owned buffer (HTTP body, fuzzer input).  The buffer must
 * outlive the st_file; it is not copied. */
vit_status st_open_memory(const void *data, size_t len, st_file **out, vit_error *err);
vit_status st_open_memory_limited(const void *data, size_t len, const st_limits *limits,
                                  st_file **out, vit_error *err);

void st_close(st_file *f);

/* What parsing JSON text s[0..n) would cost, counted without parsing it
 * (the header caps above; task.c's labels metadata).  *entries: members or
 * values of the top-level container (its commas, plus one).  *items: commas
 * and opening brackets outside strings.  A container of k values or members
 * has k - 1 commas, so the text holds at most items + 1 values, and as many
 * keys: jansson allocates a node for each, so what it allocates is
 * O(items + n).  One pass, no allocation; malformed text is counted all the
 * same (jansson refuses it afterwards). */
void st_json_census(const char *s, size_t n, size_t *entries, size_t *items);

size_t st_count(const st_file *f);
const st_tensor *st_tensor_at(const st_file *f, size_t i);  /* header order */
const st_tensor *st_find(const st_file *f, const char *name); /* NULL if absent */

/* String value of __metadata__[key], or NULL.  Owned by f. */
const char *st_metadata(const st_file *f, const char *key);
size_t st_metadata_count(const st_file *f);
/* i-th metadata entry (key and value owned by f); returns 0 if out of range. */
int st_metadata_at(const st_file *f, size_t i, const char **key, const char **value);

/* Raw bytes of a tensor inside the mapping (little-endian, possibly unaligned). */
const void *st_data(const st_file *f, const st_tensor *t);

/* Converts t to float32 into dst (t->numel floats). */
vit_status st_read_f32(const st_file *f, const st_tensor *t, float *dst, vit_error *err);

/* Gives the pages of t's bytes in f's file mapping back to the system (they
 * are read again from the file if t is read again), so a loader that copies
 * tensor by tensor holds at most one tensor of the file at a time.  No-op
 * for a file opened on a caller's buffer. */
void st_evict(const st_file *f, const st_tensor *t);

/* Formats a shape as "[2304,768]" ("[]" for a scalar) into buf; returns buf. */
const char *st_format_shape(char *buf, size_t n, int ndim, const int64_t *shape);

size_t st_dtype_size(st_dtype dtype);
const char *st_dtype_name(st_dtype dtype);

/* ---- writer: F32 tensors (and string metadata) to a new file, atomically ---- */

typedef struct st_writer st_writer;

st_writer *st_writer_create(void);
void st_writer_free(st_writer *w);

/* Adds a tensor; data is copied.  Names must be unique and not "__metadata__". */
vit_status st_writer_add_f32(st_writer *w, const char *name, int ndim, const int64_t *shape,
                             const float *data, vit_error *err);
/* Adds or replaces a metadata string. */
vit_status st_writer_set_metadata(st_writer *w, const char *key, const char *value,
                                  vit_error *err);
/* Writes <path>.tmp.XXXXXX, fsyncs it, renames it over path, fsyncs the directory.
 * On failure path is untouched and no temporary file is left behind. */
vit_status st_writer_save(const st_writer *w, const char *path, vit_error *err);

/* Serializes to a malloc'd buffer (caller frees); used by tests and HTTP. */
vit_status st_writer_serialize(const st_writer *w, void **out, size_t *out_len, vit_error *err);

#endif
