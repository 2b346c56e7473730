/*
 * test_safetensors.c - the safetensors reader and writer.
 *
 * 1. Round trip: st_writer -> bytes -> st_open_memory, and st_writer_save ->
 *    st_open, for several shapes (scalar, zero-size, 3-d) and metadata.
 * 2. Conversion: every one of the 65536 F16 and BF16 bit patterns against a
 *    reference built from ldexp, plus the committed f16/bf16 fixtures.
 * 3. Malformed input: each way a header can be wrong must give the right
 *    status and a one-line message (printed, so a reader sees the wording).
 * 4. Atomic save: failures leave no temporary file; a save replaces the file.
 *
 * Fixtures come from tools/reference/make_bad_safetensors.py and are found
 * under $VITFIT_SOURCE_ROOT (set by meson) or the current directory.
 */
#include "safetensors.h"

#include <dirent.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

/* ---- helpers ------------------------------------------------------------ */

/* Path of a committed fixture, written into buf. */
static const char *fixture(char *buf, size_t n, const char *name)
{
    const char *root = getenv("VITFIT_SOURCE_ROOT");
    snprintf(buf, n, "%s/tests/data/safetensors/%s", root ? root : ".", name);
    return buf;
}

/* Builds a file image: 8-byte LE length of header, header, data.  Caller
 * frees.  hlen_override (if not UINT64_MAX) replaces the stored length. */
static uint8_t *make_image(const char *header, const void *data, size_t dlen,
                           uint64_t hlen_override, size_t *len)
{
    size_t hlen = strlen(header);
    uint64_t stored = hlen_override != UINT64_MAX ? hlen_override : hlen;
    *len = 8 + hlen + dlen;
    uint8_t *buf = malloc(*len ? *len : 1);
    VIT_ASSERT(buf);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)(stored >> (8 * i));
    memcpy(buf + 8, header, hlen);
    if (dlen)
        memcpy(buf + 8 + hlen, data, dlen);
    return buf;
}

/* Checks a failed call: status want, a non-empty one-line message that
 * contains needle (if given).  Prints the message. */
static void check_error(const char *what, vit_status got, const vit_error *err, vit_status want,
                        const char *needle)
{
    fprintf(stderr, "  %-34s -> %s: %s\n", what, vit_status_name(got),
            got == VIT_OK ? "(ok)" : err->message);
    CHECKF(got == want, "%s: got status %s, want %s", what, vit_status_name(got),
           vit_status_name(want));
    if (got == VIT_OK)
        return;
    CHECKF(err->code == got, "%s: err->code %d != status %d", what, err->code, got);
    CHECKF(err->message[0] != '\0', "%s: empty message", what);
    CHECKF(strchr(err->message, '\n') == NULL, "%s: message has a newline", what);
    if (needle)
        CHECKF(strstr(err->message, needle) != NULL, "%s: message lacks \"%s\"", what, needle);
}

/* Opens header+data from memory and expects failure with status want. */
static void expect_bad(const char *what, const char *header, const void *data, size_t dlen,
                       vit_status want, const char *needle)
{
    size_t len;
    uint8_t *buf = make_image(header, data, dlen, UINT64_MAX, &len);
    st_file *f = (st_file *)buf; /* poison: must be reset to NULL */
    vit_error err = {0};
    vit_status s = st_open_memory(buf, len, &f, &err);
    check_error(what, s, &err, want, needle);
    CHECKF(f == NULL, "%s: *out not NULL on failure", what);
    if (s == VIT_OK)
        st_close(f);
    free(buf);
}

/* Opens header+data from memory and expects success; returns the file
 * (caller closes) and keeps the buffer in *keep (caller frees). */
static st_file *expect_good(const char *what, const char *header, const void *data,
                            size_t dlen, uint8_t **keep)
{
    size_t len;
    *keep = make_image(header, data, dlen, UINT64_MAX, &len);
    st_file *f = NULL;
    vit_error err = {0};
    vit_status s = st_open_memory(*keep, len, &f, &err);
    CHECKF(s == VIT_OK, "%s: %s", what, err.message);
    return s == VIT_OK ? f : NULL;
}

/* True if directory dir holds an entry whose name contains needle. */
static int dir_has(const char *dir, const char *needle)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int found = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, needle))
            found = 1;
    closedir(d);
    return found;
}

/* Bitwise float equality (distinguishes -0 and +0; NaN equals NaN). */
static int same_bits(float a, float b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

/* ---- round trip --------------------------------------------------------- */

/* A writer with shapes of every kind; data[i] = i * 0.25 - 3 per tensor. */
static st_writer *make_writer(float *scratch)
{
    for (int i = 0; i < 60; i++)
        scratch[i] = (float)i * 0.25f - 3.0f;
    st_writer *w = st_writer_create();
    VIT_ASSERT(w);
    vit_error err;
    const int64_t s23[] = {2, 3}, s345[] = {3, 4, 5}, s04[] = {0, 4}, s5[] = {5};
    CHECK(st_writer_add_f32(w, "blocks.0.attn.qkv.weight", 2, s23, scratch, &err) == VIT_OK);
    CHECK(st_writer_add_f32(w, "scalar", 0, NULL, scratch + 7, &err) == VIT_OK);
    CHECK(st_writer_add_f32(w, "empty", 2, s04, NULL, &err) == VIT_OK);
    CHECK(st_writer_add_f32(w, "cube", 3, s345, scratch, &err) == VIT_OK);
    CHECK(st_writer_add_f32(w, "a_vector", 1, s5, scratch + 1, &err) == VIT_OK);
    CHECK(st_writer_set_metadata(w, "format", "pt", &err) == VIT_OK);
    CHECK(st_writer_set_metadata(w, "labels", "[\"cat\",\"dog\"]", &err) == VIT_OK);
    CHECK(st_writer_set_metadata(w, "format", "np", &err) == VIT_OK); /* replaces */
    return w;
}

/* Checks a file opened from make_writer's output. */
static void check_written(const st_file *f, const float *scratch)
{
    static const char *const names[] = {"blocks.0.attn.qkv.weight", "scalar", "empty", "cube",
                                        "a_vector"};
    static const size_t numel[] = {6, 1, 0, 60, 5};
    static const int ndim[] = {2, 0, 2, 3, 1};
    static const size_t first[] = {0, 7, 0, 0, 1};
    CHECK(st_count(f) == 5);
    for (size_t i = 0; i < 5 && i < st_count(f); i++) {
        const st_tensor *t = st_tensor_at(f, i);
        CHECKF(strcmp(t->name, names[i]) == 0, "tensor %zu is %s, want %s", i, t->name, names[i]);
        CHECK(st_find(f, names[i]) == t);
        CHECK(t->dtype == ST_F32 && t->numel == numel[i] && t->ndim == ndim[i]);
        CHECK(t->nbytes == numel[i] * 4);
        float got[60];
        vit_error err;
        CHECK(st_read_f32(f, t, got, &err) == VIT_OK);
        for (size_t k = 0; k < numel[i]; k++)
            CHECKF(same_bits(got[k], scratch[first[i] + k]), "%s[%zu] = %g", names[i], k,
                   got[k]);
    }
    const st_tensor *cube = st_find(f, "cube");
    CHECK(cube && cube->shape[0] == 3 && cube->shape[1] == 4 && cube->shape[2] == 5);
    CHECK(st_find(f, "missing") == NULL);
    CHECK(st_find(f, "") == NULL);
    CHECK(st_metadata_count(f) == 2);
    const char *fmt = st_metadata(f, "format"), *labels = st_metadata(f, "labels");
    CHECK(fmt && strcmp(fmt, "np") == 0);
    CHECK(labels && strcmp(labels, "[\"cat\",\"dog\"]") == 0);
    CHECK(st_metadata(f, "missing") == NULL);
    const char *k, *v;
    CHECK(st_metadata_at(f, 0, &k, &v) == 1 && strcmp(k, "format") == 0);
    CHECK(st_metadata_at(f, 1, &k, &v) == 1 && strcmp(k, "labels") == 0);
    CHECK(st_metadata_at(f, 2, &k, &v) == 0);
    CHECK(st_tensor_at(f, 5) == NULL);
}

static void test_round_trip(void)
{
    fprintf(stderr, "round trip (memory)\n");
    float scratch[60];
    st_writer *w = make_writer(scratch);
    void *buf = NULL;
    size_t len = 0;
    vit_error err;
    CHECK(st_writer_serialize(w, &buf, &len, &err) == VIT_OK);
    st_writer_free(w);
    const uint8_t *b = buf;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | b[i];
    CHECKF(hlen % 8 == 0, "header length %llu not a multiple of 8", (unsigned long long)hlen);
    CHECK(len == 8 + hlen + (6 + 1 + 0 + 60 + 5) * 4);
    CHECK(b[8] == '{' && b[8 + hlen - 1] != 0);
    fprintf(stderr, "  header: %.*s\n", (int)hlen, (const char *)b + 8);

    st_file *f = NULL;
    CHECKF(st_open_memory(buf, len, &f, &err) == VIT_OK, "%s", err.message);
    if (f) {
        check_written(f, scratch);
        /* data is laid out in insertion order */
        CHECK(st_data(f, st_find(f, "blocks.0.attn.qkv.weight")) == b + 8 + hlen);
        CHECK(st_find(f, "scalar")->offset == 24);
        st_close(f);
    }
    free(buf);

    /* an empty writer makes a valid, empty file */
    w = st_writer_create();
    CHECK(st_writer_serialize(w, &buf, &len, &err) == VIT_OK);
    st_writer_free(w);
    CHECK(len == 16 && memcmp((char *)buf + 8, "{}      ", 8) == 0);
    CHECK(st_open_memory(buf, len, &f, &err) == VIT_OK && st_count(f) == 0 &&
          st_metadata_count(f) == 0 && st_find(f, "x") == NULL);
    st_close(f);
    free(buf);
}

static void test_writer_errors(void)
{
    fprintf(stderr, "writer errors\n");
    st_writer *w = st_writer_create();
    VIT_ASSERT(w);
    vit_error err;
    float x[4] = {0};
    const int64_t s2[] = {2}, neg[] = {2, -1}, nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    const int64_t huge[] = {INT64_MAX, INT64_MAX};
    char long_name[300];
    memset(long_name, 'n', 256);
    long_name[256] = '\0';
    CHECK(st_writer_add_f32(w, "x", 1, s2, x, &err) == VIT_OK);
    check_error("duplicate name", st_writer_add_f32(w, "x", 1, s2, x, &err), &err,
                VIT_ERR_INVALID, "'x'");
    check_error("__metadata__ as a name", st_writer_add_f32(w, "__metadata__", 1, s2, x, &err),
                &err, VIT_ERR_INVALID, "__metadata__");
    check_error("empty name", st_writer_add_f32(w, "", 1, s2, x, &err), &err, VIT_ERR_INVALID,
                NULL);
    check_error("256-byte name", st_writer_add_f32(w, long_name, 1, s2, x, &err), &err,
                VIT_ERR_INVALID, "256 bytes");
    check_error("invalid UTF-8 name", st_writer_add_f32(w, "bad\xff", 1, s2, x, &err), &err,
                VIT_ERR_INVALID, "UTF-8");
    check_error("negative dim", st_writer_add_f32(w, "n", 2, neg, x, &err), &err,
                VIT_ERR_INVALID, "negative");
    check_error("9 dims", st_writer_add_f32(w, "d", 9, nine, x, &err), &err, VIT_ERR_INVALID,
                NULL);
    check_error("overflowing shape", st_writer_add_f32(w, "h", 2, huge, x, &err), &err,
                VIT_ERR_TOO_LARGE, NULL);
    check_error("NULL data", st_writer_add_f32(w, "z", 1, s2, NULL, &err), &err,
                VIT_ERR_INVALID, NULL);
    check_error("invalid UTF-8 metadata", st_writer_set_metadata(w, "k", "\xc3(", &err), &err,
                VIT_ERR_INVALID, "UTF-8");
    /* the failed adds left the writer intact */
    void *buf;
    size_t len;
    st_file *f = NULL;
    CHECK(st_writer_serialize(w, &buf, &len, &err) == VIT_OK);
    CHECK(st_open_memory(buf, len, &f, &err) == VIT_OK && st_count(f) == 1);
    st_close(f);
    free(buf);
    st_writer_free(w);
    st_writer_free(NULL);
}

/* ---- F16 / BF16 conversion ---------------------------------------------- */

/* Independent reference: value of a binary16 / bfloat16 by its definition. */
static float ref_small_float(uint16_t h, int exp_bits, int mant_bits)
{
    int bias = (1 << (exp_bits - 1)) - 1;
    int sign = h >> 15, e = (h >> mant_bits) & ((1 << exp_bits) - 1);
    int m = h & ((1 << mant_bits) - 1);
    double v;
    if (e == (1 << exp_bits) - 1)
        v = m ? NAN : INFINITY;
    else if (e == 0)
        v = ldexp(m, 1 - bias - mant_bits);
    else
        v = ldexp(m + (1 << mant_bits), e - bias - mant_bits);
    return (float)(sign ? -v : v);
}

/* Converts all 65536 patterns of dtype (F16 or BF16) and compares. */
static void check_all_patterns(const char *dtype, int exp_bits, int mant_bits)
{
    uint8_t *data = malloc(65536 * 2);
    float *got = malloc(65536 * sizeof *got);
    VIT_ASSERT(data && got);
    for (uint32_t i = 0; i < 65536; i++)
        data[2 * i] = (uint8_t)i, data[2 * i + 1] = (uint8_t)(i >> 8);
    char header[128];
    snprintf(header, sizeof header,
             "{\"all\":{\"dtype\":\"%s\",\"shape\":[256,256],\"data_offsets\":[0,131072]}}", dtype);
    uint8_t *keep;
    st_file *f = expect_good(dtype, header, data, 65536 * 2, &keep);
    vit_error err;
    int bad = 0;
    if (f && st_read_f32(f, st_find(f, "all"), got, &err) == VIT_OK) {
        for (uint32_t i = 0; i < 65536; i++) {
            float want = ref_small_float((uint16_t)i, exp_bits, mant_bits);
            int ok = isnan(want) ? isnan(got[i]) && (signbit(got[i]) != 0) == ((i >> 15) != 0)
                                 : same_bits(got[i], want);
            if (!ok && bad++ < 5)
                fprintf(stderr, "  %s 0x%04x -> %.9g, want %.9g\n", dtype, i, got[i], want);
        }
    } else {
        bad = 1;
    }
    CHECKF(bad == 0, "%s: %d of 65536 patterns convert wrongly", dtype, bad);
    fprintf(stderr, "  %s: all 65536 bit patterns %s\n", dtype, bad ? "FAILED" : "exact");
    st_close(f);
    free(keep);
    free(data);
    free(got);
}

/* Reads fixture name's tensor tname and compares bitwise with want[n]. */
static void check_fixture_values(const char *name, const char *tname, const float *want,
                                 size_t n)
{
    char path[4096];
    st_file *f = NULL;
    vit_error err;
    CHECKF(st_open(fixture(path, sizeof path, name), &f, &err) == VIT_OK, "%s", err.message);
    if (!f)
        return;
    const st_tensor *t = st_find(f, tname);
    CHECKF(t && t->numel == n, "%s: tensor %s missing or wrong size", name, tname);
    if (t && t->numel == n) {
        float got[16];
        CHECK(st_read_f32(f, t, got, &err) == VIT_OK);
        for (size_t i = 0; i < n; i++)
            CHECKF(same_bits(got[i], want[i]) || (isnan(want[i]) && isnan(got[i])),
                   "%s %s[%zu] = %.9g, want %.9g", name, tname, i, got[i], want[i]);
    }
    st_close(f);
}

static void test_conversion(void)
{
    fprintf(stderr, "F16 / BF16 conversion\n");
    check_all_patterns("F16", 5, 10);
    check_all_patterns("BF16", 8, 7);

    /* the fixtures' known bit patterns (see make_bad_safetensors.py) */
    const float f16[] = {0.0f, -0.0f, 1.0f, -2.0f, 0.333251953125f, 0x1p-24f, 1023 * 0x1p-24f,
                         0x1p-14f, 65504.0f, INFINITY, -INFINITY, NAN};
    check_fixture_values("f16.safetensors", "h", f16, 12);
    const float bf16[] = {1.0f, -3.0f, -0.0f, 0x1p-133f, INFINITY, -INFINITY, NAN, 0.33203125f};
    check_fixture_values("bf16.safetensors", "b", bf16, 8);
    const float a[] = {-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f}, b[] = {0.25f, -8.0f, 1024.0f, 0.125f};
    const float c[] = {42.0f};
    check_fixture_values("good.safetensors", "a", a, 6);
    check_fixture_values("good.safetensors", "b", b, 4);
    check_fixture_values("good.safetensors", "c", c, 1);
    check_fixture_values("good.safetensors", "e", NULL, 0);

    /* U8 reads as its value; F32 at an unaligned offset reads correctly */
    uint8_t data[9] = {0, 255, 7, 0, 0, 0x80, 0x3f, 0, 0}; /* 1.0f at bytes 3..7 */
    uint8_t *keep;
    st_file *f = expect_good(
        "u8 + unaligned",
        "{\"u\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]},"
        "\"f\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[3,7]},"
        "\"i\":{\"dtype\":\"I16\",\"shape\":[1],\"data_offsets\":[7,9]}}",
        data, sizeof data, &keep);
    if (f) {
        float got[3];
        vit_error err;
        CHECK(st_read_f32(f, st_find(f, "u"), got, &err) == VIT_OK);
        CHECK(got[0] == 0.0f && got[1] == 255.0f && got[2] == 7.0f);
        CHECK(st_read_f32(f, st_find(f, "f"), got, &err) == VIT_OK && got[0] == 1.0f);
        check_error("read I16 as float", st_read_f32(f, st_find(f, "i"), got, &err), &err,
                    VIT_ERR_UNSUPPORTED, "dtype I16");
        CHECK(st_find(f, "i")->dtype == ST_I16 && st_dtype_size(ST_I16) == 2);
        CHECK(strcmp(st_dtype_name(ST_BF16), "BF16") == 0 && st_dtype_size(ST_F64) == 8);
        st_close(f);
    }
    free(keep);
}

/* ---- malformed headers -------------------------------------------------- */

#define T1(body) "{\"t\":" body "}"
#define F32_4 "{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}"
#define F32_EMPTY "{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}"

static void test_malformed(void)
{
    fprintf(stderr, "malformed input (memory)\n");
    uint8_t zero[64] = {0};
    vit_error err;
    st_file *f = NULL;

    /* sizes and header length */
    check_error("empty buffer", st_open_memory(zero, 0, &f, &err), &err, VIT_ERR_FORMAT, "empty");
    check_error("5-byte buffer", st_open_memory(zero, 5, &f, &err), &err, VIT_ERR_FORMAT,
                "too short");
    size_t len;
    uint8_t *buf = make_image("{}", NULL, 0, 100, &len);
    check_error("header length > file", st_open_memory(buf, len, &f, &err), &err,
                VIT_ERR_FORMAT, "header length 100");
    free(buf);
    buf = make_image("{}", NULL, 0, (uint64_t)ST_MAX_HEADER + 1, &len);
    check_error("header length > ST_MAX_HEADER", st_open_memory(buf, len, &f, &err), &err,
                VIT_ERR_TOO_LARGE, "limit");
    free(buf);
    buf = make_image("{}", NULL, 0, UINT64_MAX, &len);
    for (int i = 0; i < 8; i++)
        buf[i] = 0xff;
    check_error("header length 2^64-1", st_open_memory(buf, len, &f, &err), &err,
                VIT_ERR_TOO_LARGE, NULL);
    free(buf);
    CHECK(f == NULL);

    /* JSON level */
    expect_bad("zero-length header", "", NULL, 0, VIT_ERR_FORMAT, "JSON");
    expect_bad("non-JSON header", "garbage{", NULL, 0, VIT_ERR_FORMAT, "not valid JSON");
    expect_bad("truncated JSON", "{\"t\":{\"dtype\":", NULL, 0, VIT_ERR_FORMAT, "JSON");
    expect_bad("header is an array", "[1,2,3]", NULL, 0, VIT_ERR_FORMAT, "not a JSON object");
    expect_bad("header is a string", "\"x\"", NULL, 0, VIT_ERR_FORMAT, "JSON");
    expect_bad("duplicate tensor keys", "{\"t\":" F32_4 ",\"t\":" F32_4 "}", zero, 16,
               VIT_ERR_FORMAT, "duplicate");
    expect_bad("duplicate metadata keys", "{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"}}", NULL, 0,
               VIT_ERR_FORMAT, "duplicate");
    expect_bad("invalid UTF-8", "{\"\xff\":1}", NULL, 0, VIT_ERR_FORMAT, "JSON");
    expect_bad("NUL in header", "{\"a\\u0000b\":" F32_4 "}", zero, 16, VIT_ERR_FORMAT, NULL);
    expect_bad("trailing garbage", "{} x", NULL, 0, VIT_ERR_FORMAT, "JSON");

    /* tensor entries */
    expect_bad("entry not an object", T1("[1]"), NULL, 0, VIT_ERR_FORMAT, "not an object");
    expect_bad("missing dtype", T1("{\"shape\":[4],\"data_offsets\":[0,16]}"), zero, 16,
               VIT_ERR_FORMAT, "no \"dtype\"");
    expect_bad("missing shape", T1("{\"dtype\":\"F32\",\"data_offsets\":[0,16]}"), zero, 16,
               VIT_ERR_FORMAT, "no \"shape\"");
    expect_bad("missing data_offsets", T1("{\"dtype\":\"F32\",\"shape\":[4]}"), zero, 16,
               VIT_ERR_FORMAT, "no \"data_offsets\"");
    expect_bad("dtype not a string", T1("{\"dtype\":4,\"shape\":[4],\"data_offsets\":[0,16]}"),
               zero, 16, VIT_ERR_FORMAT, "dtype");
    expect_bad("unknown dtype", T1("{\"dtype\":\"Q4\",\"shape\":[4],\"data_offsets\":[0,16]}"),
               zero, 16, VIT_ERR_FORMAT, "tensor 't' has unknown dtype 'Q4'");
    expect_bad("lower-case dtype", T1("{\"dtype\":\"f32\",\"shape\":[4],\"data_offsets\":[0,16]}"),
               zero, 16, VIT_ERR_FORMAT, "'f32'");
    expect_bad("negative shape", T1("{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}"),
               zero, 16, VIT_ERR_FORMAT, "shape[0]");
    expect_bad("real shape", T1("{\"dtype\":\"F32\",\"shape\":[2,2.0],\"data_offsets\":[0,16]}"),
               zero, 16, VIT_ERR_FORMAT, "shape[1]");
    expect_bad("string shape", T1("{\"dtype\":\"F32\",\"shape\":\"4\",\"data_offsets\":[0,16]}"),
               zero, 16, VIT_ERR_FORMAT, "not an array");
    expect_bad("9-d shape",
               T1("{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,4],\"data_offsets\":[0,16]}"), zero,
               16, VIT_ERR_UNSUPPORTED, "9 dimensions");
    expect_bad("offsets past data 2",
               "{\"blocks.0.attn.qkv.weight\":{\"dtype\":\"F32\",\"shape\":[2304,768],"
               "\"data_offsets\":[0,100]}}",
               zero, 64, VIT_ERR_FORMAT, "tensor 'blocks.0.attn.qkv.weight'");
    expect_bad("shape/offset mismatch",
               "{\"blocks.0.attn.qkv.weight\":{\"dtype\":\"F32\",\"shape\":[2304,768],"
               "\"data_offsets\":[0,64]}}",
               zero, 64, VIT_ERR_FORMAT,
               "shape [2304,768] x F32 needs 7077888 bytes but data_offsets span 64");
    expect_bad("shape overflows",
               T1("{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,16]}"),
               zero, 16, VIT_ERR_FORMAT, "too large");
    expect_bad("offsets past data", T1("{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}"),
               zero, 16, VIT_ERR_FORMAT, "16-byte data section");
    expect_bad("offsets reversed", T1("{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}"),
               zero, 16, VIT_ERR_FORMAT, "end before");
    expect_bad("negative offset", T1("{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[-1,15]}"),
               zero, 16, VIT_ERR_FORMAT, "data_offsets");
    expect_bad("one offset", T1("{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16]}"), zero,
               16, VIT_ERR_FORMAT, "data_offsets");
    expect_bad("real offset", T1("{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16.0]}"),
               zero, 16, VIT_ERR_FORMAT, "data_offsets");
    expect_bad("offset > 2^63", T1("{\"dtype\":\"F32\",\"shape\":[4],"
                                   "\"data_offsets\":[0,99999999999999999999]}"),
               zero, 16, VIT_ERR_FORMAT, "JSON");
    expect_bad("overlapping ranges",
               "{\"p\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
               "\"q\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
               zero, 24, VIT_ERR_FORMAT, "'p' [0,16] and 'q' [8,24]");
    expect_bad("range inside another",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[0,32]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[32,40]},"
               "\"c\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}",
               zero, 40, VIT_ERR_FORMAT, "overlapping");
    /* overlap at its exact edge: one byte shared is refused, none is fine */
    expect_bad("ranges sharing one byte",
               "{\"p\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
               "\"q\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[3,7]}}",
               zero, 7, VIT_ERR_FORMAT, "'p' [0,4] and 'q' [3,7] have overlapping");
    {
        uint8_t *keep;
        st_file *g = expect_good("adjacent ranges",
                                 "{\"p\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                                 "\"q\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[4,7]}}",
                                 zero, 7, &keep);
        CHECK(g && st_count(g) == 2);
        st_close(g);
        free(keep);
    }
    expect_bad("same range twice",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
               "\"b\":{\"dtype\":\"I32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
               zero, 16, VIT_ERR_FORMAT, "overlapping");

    /* the data bound at its exact edge (make_image allocates to the byte, so
     * under ASan a read past the end is caught as well as the status) */
    {
        uint8_t data[7] = {1, 2, 3, 4, 5, 6, 7};
        uint8_t *keep;
        st_file *g = expect_good("U8 range ending on the last byte",
                                 T1("{\"dtype\":\"U8\",\"shape\":[7],\"data_offsets\":[0,7]}"),
                                 data, 7, &keep);
        float v[7] = {0};
        CHECK(g && st_read_f32(g, st_find(g, "t"), v, &err) == VIT_OK && v[6] == 7.0f);
        st_close(g);
        free(keep);
        for (size_t past = 1; past <= 4; past++) {
            char hdr[128], what[64];
            snprintf(hdr, sizeof hdr,
                     T1("{\"dtype\":\"U8\",\"shape\":[%zu],\"data_offsets\":[0,%zu]}"),
                     7 + past, 7 + past);
            snprintf(what, sizeof what, "U8 range ending %zu byte(s) past", past);
            expect_bad(what, hdr, data, 7, VIT_ERR_FORMAT, "run past the 7-byte data section");
        }
        expect_bad("empty range just past the data",
                   T1("{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]}"), data, 7,
                   VIT_ERR_FORMAT, "run past");
        g = expect_good("empty range at the very end",
                        T1("{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[7,7]}"), data,
                        7, &keep);
        st_close(g);
        free(keep);
    }
    expect_bad("offsets near 2^63",
               T1("{\"dtype\":\"U8\",\"shape\":[1],"
                  "\"data_offsets\":[9223372036854775806,9223372036854775807]}"),
               zero, 16, VIT_ERR_FORMAT, "run past");
    expect_bad("numel x size wraps to 0",
               T1("{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}"),
               zero, 16, VIT_ERR_FORMAT, "too large");
    expect_bad("numel x size wraps to 16",
               T1("{\"dtype\":\"F32\",\"shape\":[4611686018427387908],\"data_offsets\":[0,16]}"),
               zero, 16, VIT_ERR_FORMAT, "too large");

    /* names */
    expect_bad("empty tensor name", "{\"\":" F32_4 "}", zero, 16, VIT_ERR_FORMAT, "empty name");
    char hdr[1024];
    char long_name[257];
    memset(long_name, 'x', 256);
    long_name[256] = '\0';
    snprintf(hdr, sizeof hdr, "{\"%s\":" F32_4 "}", long_name);
    expect_bad("256-byte tensor name", hdr, zero, 16, VIT_ERR_FORMAT, "256 bytes");
    expect_bad("control chars in name",
               "{\"evil\\nname\":{\"dtype\":\"Q4\",\"shape\":[4],\"data_offsets\":[0,16]}}", zero,
               16, VIT_ERR_FORMAT, "'evil?name'");

    /* metadata */
    expect_bad("metadata not an object", "{\"__metadata__\":[\"a\"]}", NULL, 0, VIT_ERR_FORMAT,
               "__metadata__");
    expect_bad("metadata non-string value", "{\"__metadata__\":{\"epochs\":3}}", NULL, 0,
               VIT_ERR_FORMAT, "key 'epochs' is not a string");
    expect_bad("metadata null value", "{\"__metadata__\":{\"a\":\"x\",\"b\":null}}", NULL, 0,
               VIT_ERR_FORMAT, "'b'");
}

/* Inputs that are unusual but valid must open. */
static void test_lenient(void)
{
    fprintf(stderr, "unusual but valid input\n");
    uint8_t zero[64] = {0}, *keep;
    st_file *f;

    f = expect_good("trailing spaces", "{\"t\":" F32_4 "}        ", zero, 16, &keep);
    CHECK(f && st_count(f) == 1);
    st_close(f);
    free(keep);

    f = expect_good("leading and trailing whitespace", " \n{\"t\":" F32_4 "}\t\n ", zero, 16,
                    &keep);
    st_close(f);
    free(keep);

    /* empty tensors may sit anywhere, even inside another's range; gaps and
     * unused trailing bytes are tolerated; extra entry fields are ignored */
    f = expect_good("empty ranges and gaps",
                    "{\"__metadata__\":{},"
                    "\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                    "\"z1\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]},"
                    "\"z2\":{\"dtype\":\"BF16\",\"shape\":[3,0,2],\"data_offsets\":[8,8]},"
                    "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[20,24],\"x\":1}}",
                    zero, 32, &keep);
    if (f) {
        CHECK(st_count(f) == 4 && st_metadata_count(f) == 0);
        const st_tensor *s = st_find(f, "s"), *z2 = st_find(f, "z2");
        CHECK(s && s->ndim == 0 && s->numel == 1 && s->offset == 20);
        CHECK(z2 && z2->ndim == 3 && z2->numel == 0 && z2->nbytes == 0);
        float v = 1;
        vit_error err;
        CHECK(st_read_f32(f, s, &v, &err) == VIT_OK && v == 0.0f);
        CHECK(st_read_f32(f, z2, NULL, &err) == VIT_OK);
        st_close(f);
    }
    free(keep);

    /* a zero in the shape makes an otherwise overflowing product empty */
    f = expect_good("huge dims with a zero",
                    T1("{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296,0],"
                       "\"data_offsets\":[0,0]}"),
                    NULL, 0, &keep);
    CHECK(f && st_find(f, "t")->numel == 0);
    st_close(f);
    free(keep);

    /* every dtype of the spec is accepted in the header */
    f = expect_good("every dtype", "{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]},"
                                   "\"b\":{\"dtype\":\"U64\",\"shape\":[1],\"data_offsets\":[8,16]},"
                                   "\"c\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[16,18]},"
                                   "\"d\":{\"dtype\":\"U16\",\"shape\":[1],\"data_offsets\":[18,20]},"
                                   "\"e\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[20,21]},"
                                   "\"f\":{\"dtype\":\"U32\",\"shape\":[1],\"data_offsets\":[24,28]},"
                                   "\"g\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[28,36]}}",
                    zero, 36, &keep);
    st_close(f);
    free(keep);
}

/* ---- files -------------------------------------------------------------- */

/* Opens fixture name and expects status want (and needle in the message). */
static void expect_fixture(const char *name, vit_status want, const char *needle)
{
    char path[4096];
    st_file *f = NULL;
    vit_error err = {0};
    vit_status s = st_open(fixture(path, sizeof path, name), &f, &err);
    check_error(name, s, &err, want, needle);
    if (s == VIT_OK) {
        CHECK(f != NULL);
        st_close(f);
    } else {
        CHECK(f == NULL);
        CHECKF(strstr(err.message, name) != NULL, "message does not name the file %s", name);
    }
}

static void test_files(const char *tmpdir)
{
    fprintf(stderr, "files\n");
    expect_fixture("good.safetensors", VIT_OK, NULL);
    expect_fixture("f16.safetensors", VIT_OK, NULL);
    expect_fixture("bf16.safetensors", VIT_OK, NULL);
    expect_fixture("bad_truncated.safetensors", VIT_ERR_FORMAT, "truncated");
    expect_fixture("bad_header_len.safetensors", VIT_ERR_FORMAT, "header length");
    expect_fixture("bad_header_huge.safetensors", VIT_ERR_TOO_LARGE, "header length");
    expect_fixture("bad_dtype.safetensors", VIT_ERR_FORMAT, "'Q4'");
    expect_fixture("bad_overlap.safetensors", VIT_ERR_FORMAT, "overlapping");
    expect_fixture("bad_json.safetensors", VIT_ERR_FORMAT, "JSON");
    expect_fixture("bad_mismatch.safetensors", VIT_ERR_FORMAT, "needs 24 bytes");
    expect_fixture("bad_metadata.safetensors", VIT_ERR_FORMAT, "__metadata__");
    /* the data bound at its exact edge, and offsets near the int64 limit */
    expect_fixture("bad_end_plus1.safetensors", VIT_ERR_FORMAT,
                   "data_offsets [0,4] run past the 3-byte data section");
    expect_fixture("bad_end_plus4.safetensors", VIT_ERR_FORMAT,
                   "data_offsets [0,8] run past the 4-byte data section");
    expect_fixture("bad_header_plus1.safetensors", VIT_ERR_FORMAT,
                   "header length 61 is larger than the 60 bytes");
    expect_fixture("bad_offset_huge.safetensors", VIT_ERR_FORMAT,
                   "[9223372036854775800,9223372036854775807] run past the 8-byte");
    expect_fixture("bad_empty_far.safetensors", VIT_ERR_FORMAT, "run past the 8-byte");
    expect_fixture("bad_numel_wrap.safetensors", VIT_ERR_FORMAT, "too large to address");
    expect_fixture("edge_end_exact.safetensors", VIT_OK, NULL);

    char path[4096];
    {
        st_file *f = NULL;
        vit_error err;
        if (st_open(fixture(path, sizeof path, "good.safetensors"), &f, &err) == VIT_OK) {
            const char *labels = st_metadata(f, "labels");
            CHECK(labels && strcmp(labels, "[\"cat\",\"dog\"]") == 0);
            CHECK(st_count(f) == 4 && strcmp(st_tensor_at(f, 0)->name, "a") == 0);
            st_close(f);
        }
    }

    {
        st_file *f = NULL;
        vit_error err;
        if (st_open(fixture(path, sizeof path, "edge_end_exact.safetensors"), &f, &err) ==
            VIT_OK) {
            const st_tensor *a = st_find(f, "a"), *tail = st_find(f, "tail");
            float va[2] = {0}, vt[3] = {0};
            CHECK(a && tail && tail->offset + tail->nbytes == 11);
            CHECK(a && st_read_f32(f, a, va, &err) == VIT_OK && va[0] == 1.5f && va[1] == -2.0f);
            CHECK(tail && st_read_f32(f, tail, vt, &err) == VIT_OK && vt[0] == 7.0f &&
                  vt[1] == 8.0f && vt[2] == 9.0f);
            st_close(f);
        }
    }

    /* files too short, missing, or not regular */
    vit_error err;
    st_file *f = NULL;
    snprintf(path, sizeof path, "%s/empty.safetensors", tmpdir);
    FILE *fp = fopen(path, "wb");
    VIT_ASSERT(fp);
    fclose(fp);
    check_error("empty file", st_open(path, &f, &err), &err, VIT_ERR_FORMAT, "empty");
    fp = fopen(path, "wb");
    VIT_ASSERT(fp);
    fwrite("\x10\0\0\0\0", 1, 5, fp);
    fclose(fp);
    check_error("5-byte file", st_open(path, &f, &err), &err, VIT_ERR_FORMAT, "5 bytes");
    unlink(path);
    snprintf(path, sizeof path, "%s/missing.safetensors", tmpdir);
    check_error("missing file", st_open(path, &f, &err), &err, VIT_ERR_NOT_FOUND, "missing");
    check_error("directory", st_open(tmpdir, &f, &err), &err, VIT_ERR_IO, "not a regular file");
    CHECK(f == NULL);
}

static void test_save(const char *tmpdir)
{
    fprintf(stderr, "atomic save\n");
    float scratch[60];
    char path[4096];
    vit_error err;
    st_writer *w = make_writer(scratch);

    snprintf(path, sizeof path, "%s/model.safetensors", tmpdir);
    CHECKF(st_writer_save(w, path, &err) == VIT_OK, "%s", err.message);
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0644);
    st_file *f = NULL;
    CHECKF(st_open(path, &f, &err) == VIT_OK, "%s", err.message);
    if (f)
        check_written(f, scratch);
    st_close(f);

    /* saving over an existing file replaces it */
    st_writer *w2 = st_writer_create();
    const int64_t s1[] = {1};
    const float one = 1.0f;
    CHECK(st_writer_add_f32(w2, "only", 1, s1, &one, &err) == VIT_OK);
    CHECK(st_writer_save(w2, path, &err) == VIT_OK);
    f = NULL;
    CHECK(st_open(path, &f, &err) == VIT_OK);
    CHECK(f && st_count(f) == 1 && st_find(f, "only") && st_find(f, "cube") == NULL);
    st_close(f);
    CHECK(!dir_has(tmpdir, ".tmp."));

    /* a directory that does not exist: fails, nothing created */
    snprintf(path, sizeof path, "%s/no/such/dir/model.safetensors", tmpdir);
    check_error("save into missing dir", st_writer_save(w, path, &err), &err, VIT_ERR_IO,
                "temporary");
    CHECK(!dir_has(tmpdir, ".tmp."));

    /* the target is a directory: the temp file is written, rename fails, and
     * the temp file must be removed */
    snprintf(path, sizeof path, "%s/subdir", tmpdir);
    CHECK(mkdir(path, 0755) == 0);
    check_error("save over a directory", st_writer_save(w, path, &err), &err, VIT_ERR_IO,
                "rename");
    CHECKF(!dir_has(tmpdir, ".tmp."), "a temporary file was left in %s", tmpdir);
    rmdir(path);

    /* a path without a slash saves relative to the working directory */
    char cwd[4096];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    CHECK(chdir(tmpdir) == 0);
    CHECK(st_writer_save(w2, "plain.safetensors", &err) == VIT_OK);
    CHECK(unlink("plain.safetensors") == 0);
    CHECK(chdir(cwd) == 0);

    snprintf(path, sizeof path, "%s/model.safetensors", tmpdir);
    unlink(path);
    st_writer_free(w);
    st_writer_free(w2);
}

/* ---- what opening may cost (st_limits; issue 13: header memory) ---------- */

/* jansson's allocations, counted: bytes live now and at the peak.  Each block
 * carries its size in a 16-byte prefix. */
static size_t json_live, json_peak;

static void *counting_malloc(size_t n)
{
    size_t *p = malloc(n + 16);
    if (!p)
        return NULL;
    p[0] = n;
    json_live += n;
    if (json_live > json_peak)
        json_peak = json_live;
    return (char *)p + 16;
}

static void counting_free(void *q)
{
    if (!q)
        return;
    size_t *p = (size_t *)((char *)q - 16);
    json_live -= p[0];
    free(p);
}

/* A header of n empty tensors ("0", "1", ... of shape [0]) after a metadata
 * entry, like the review's 100 MB task file (repro/model/gen_st_header.py)
 * at a smaller n.  With extra_dims > 0, tensor "0" gets that many more
 * zeros in its shape instead (one entry, many JSON items).  Caller frees. */
static char *empty_tensors_header(size_t n, size_t extra_dims)
{
    size_t cap = 64 + n * 64 + extra_dims * 2, used = 0;
    char *h = malloc(cap);
    VIT_ASSERT(h);
    used += (size_t)snprintf(h, cap, "{\"__metadata__\":{\"labels\":\"[]\"}");
    for (size_t i = 0; i < n; i++) {
        used += (size_t)snprintf(h + used, cap - used, ",\"%zx\":{\"dtype\":\"F32\",\"shape\":[0", i);
        for (size_t d = 0; i == 0 && d < extra_dims; d++)
            used += (size_t)snprintf(h + used, cap - used, ",0");
        used += (size_t)snprintf(h + used, cap - used, "],\"data_offsets\":[0,0]}");
    }
    VIT_ASSERT(used + 2 < cap);
    memcpy(h + used, "}", 2);
    return h;
}

/* Opens header within lim; returns the status, *peak = jansson's peak bytes,
 * *count = st_count when it opened. */
static vit_status open_counted(const char *header, const st_limits *lim, size_t *peak,
                               size_t *count, vit_error *err)
{
    size_t len;
    uint8_t *buf = make_image(header, NULL, 0, UINT64_MAX, &len);
    st_file *f = (st_file *)buf;
    json_live = json_peak = 0;
    json_set_alloc_funcs(counting_malloc, counting_free);
    vit_status s = st_open_memory_limited(buf, len, lim, &f, err);
    *count = s == VIT_OK ? st_count(f) : 0;
    CHECK(s == VIT_OK || f == NULL);
    if (s == VIT_OK)
        st_close(f);
    json_set_alloc_funcs(malloc, free);
    *peak = json_peak;
    free(buf);
    return s;
}

/* The caps apply before the JSON is parsed (jansson allocates nothing for a
 * refused header), at exactly their values, and bound what a header that
 * passes them costs.  Before them, a task file's header cost ~20 bytes of
 * memory per byte: 100 MB of empty tensors took 2.1 GB. */
static void test_limits(void)
{
    fprintf(stderr, "header limits (st_limits)\n");
    vit_error err = {0};
    size_t peak, count;
    char *h = empty_tensors_header(3000, 0);
    size_t hlen = strlen(h);

    /* within the caps: opens; what jansson took is bounded by the header's
     * items (safetensors.c: header_census), 2 + 7 per entry here: the root
     * and metadata '{', and per tensor a ',', '{', 2 ',', 2 '[' and a ','.
     * Measured: ~57 bytes per item (~800 per tensor entry of ~55 bytes). */
    st_limits lim = {.max_header = hlen, .max_tensors = 3000};
    vit_status s = open_counted(h, &lim, &peak, &count, &err);
    size_t items = 2 + 7 * 3000;
    fprintf(stderr, "  3000 empty tensors, %zu header bytes, %zu items: %s, jansson peak %zu "
            "bytes\n", hlen, items, vit_status_name(s), peak);
    CHECKF(s == VIT_OK && count == 3000, "%s", err.message);
    CHECKF(peak > 0 && peak <= 128 * items + 2 * hlen, "jansson peak %zu for %zu items", peak,
           items);

    /* one tensor over: refused before parsing (metadata and 3000 tensors
     * are 3001 entries, one more than the census allows) */
    lim.max_tensors = 2999;
    s = open_counted(h, &lim, &peak, &count, &err);
    check_error("3000 tensors, at most 2999", s, &err, VIT_ERR_TOO_LARGE, "3001 entries");
    CHECKF(peak == 0, "jansson allocated %zu bytes for a refused header", peak);
    /* without metadata the census lets the extra entry through (it could
     * have been "__metadata__"); the exact count after parsing refuses it */
    lim.max_tensors = 1;
    s = open_counted("{\"a\":" F32_EMPTY ",\"b\":" F32_EMPTY "}", &lim, &peak, &count, &err);
    check_error("2 tensors, at most 1", s, &err, VIT_ERR_TOO_LARGE, "lists 2 tensors");
    s = open_counted("{\"__metadata__\":{},\"b\":" F32_EMPTY "}", &lim, &peak, &count, &err);
    CHECKF(s == VIT_OK && count == 1, "metadata and 1 tensor, at most 1: %s", err.message);
    lim = (st_limits){.max_header = hlen - 1, .max_tensors = 3000};
    s = open_counted(h, &lim, &peak, &count, &err);
    check_error("header one byte over max_header", s, &err, VIT_ERR_TOO_LARGE, "limit");
    CHECK(peak == 0);

    /* a task file's caps against the review's header, scaled down */
    lim = (st_limits){.max_header = 8u << 20, .max_tensors = 100};
    s = open_counted(h, &lim, &peak, &count, &err);
    check_error("3000 tensors, task caps", s, &err, VIT_ERR_TOO_LARGE, "at most 100 tensors");
    CHECK(peak == 0);
    free(h);

    /* one entry, many items: a shape of 20000 zeros is refused by the item
     * count (16 per tensor), not parsed into 20000 integers first */
    h = empty_tensors_header(1, 20000);
    lim = (st_limits){.max_header = 1u << 20, .max_tensors = 100};
    s = open_counted(h, &lim, &peak, &count, &err);
    check_error("20000-dim shape, 100 tensors", s, &err, VIT_ERR_TOO_LARGE, "JSON items");
    CHECKF(peak == 0, "jansson allocated %zu bytes", peak);
    /* the item cap is exactly 16 per tensor + ST_MAX_METADATA + 2: here
     * the header has 9 + extra_dims items (as above, and a ',' per extra
     * dimension) */
    free(h);
    size_t max_items = ST_ITEMS_PER_TENSOR * 100 + ST_MAX_METADATA + 2;
    h = empty_tensors_header(1, max_items - 9);
    s = open_counted(h, &lim, &peak, &count, &err);
    check_error("items at the cap (too many dims)", s, &err, VIT_ERR_UNSUPPORTED, "dimensions");
    free(h);
    h = empty_tensors_header(1, max_items - 8);
    s = open_counted(h, &lim, &peak, &count, &err);
    check_error("items one over the cap", s, &err, VIT_ERR_TOO_LARGE, "JSON items");
    free(h);

    /* strings are skipped, escapes included: commas and brackets inside a
     * name or metadata value are not items */
    char many[4096];
    size_t used = (size_t)snprintf(many, sizeof many, "{\"__metadata__\":{\"k\":\"\\\"");
    for (int i = 0; i < 2000; i++) /* 2000 > 16 + ST_MAX_METADATA + 2 items */
        many[used++] = i % 2 ? ',' : '[';
    snprintf(many + used, sizeof many - used, "\"},\"a,[b\":" F32_EMPTY "}");
    lim = (st_limits){.max_header = 1u << 20, .max_tensors = 1};
    s = open_counted(many, &lim, &peak, &count, &err);
    CHECKF(s == VIT_OK && count == 1, "commas in strings: %s", err.message);

    /* st_open and st_open_memory apply the model caps */
    size_t len;
    uint8_t *buf = make_image("{}", NULL, 0, (uint64_t)(16u << 20) + 1, &len);
    st_file *f = NULL;
    check_error("header over the model cap", st_open_memory(buf, len, &f, &err), &err,
                VIT_ERR_TOO_LARGE, "16777216");
    free(buf);
}

int main(void)
{
    char tmpdir[] = "/tmp/test_safetensors.XXXXXX";
    VIT_ASSERT(mkdtemp(tmpdir));
    test_round_trip();
    test_writer_errors();
    test_conversion();
    test_malformed();
    test_lenient();
    test_limits();
    test_files(tmpdir);
    test_save(tmpdir);
    CHECKF(rmdir(tmpdir) == 0, "test left files in %s", tmpdir);
    return check_result();
}
