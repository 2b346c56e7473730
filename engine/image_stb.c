/*
 * image_stb.c - the one translation unit that compiles stb_image.
 *
 * stb_image is built for JPEG, PNG and BMP only, from memory only (no stdio,
 * no HDR, no float conversion), with the per-side limit lowered to
 * IMG_STB_MAX_SIDE so a hostile header cannot ask for gigabytes.  Failure
 * strings stay on: stbi_failure_reason() feeds our error messages.
 *
 * Thread safety: stb keeps its failure reason in a variable that is
 * thread-local when STBI_THREAD_LOCAL is defined; stb 2.27 defines it by
 * itself under C11 (_Thread_local) or GNU C (__thread).  The #error below
 * makes sure it did, so concurrent decodes on worker threads never see each
 * other's reason.  We never call stb's global setters (flip, unpremultiply,
 * iPhone de-conversion), so the decoder has no other shared state.
 *
 * stb 2.27 defects found by tests/fuzz/fuzz_image.c and guarded here (both
 * are memory-safety bugs on hostile JPEGs): Huffman tables with more than 256
 * codes (jpeg_dht_safe refuses them) and decoder state left uninitialised
 * (STBI_MALLOC zeroes).  Regression inputs: tests/fuzz/corpus/image/crash-*.
 *
 * Warnings: stb 2.27 happens to be clean at our -Wall -Wextra with gcc 12
 * and clang 14, but not under stricter sets (-Wconversion, -Wcast-qual,
 * -Wpedantic, ...) or other stb/compiler versions, so its warnings are
 * silenced around the #include only, never for our own code.
 */
#include "image_impl.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_NO_STDIO
#define STBI_NO_HDR
#define STBI_NO_LINEAR
#define STBI_MAX_DIMENSIONS IMG_STB_MAX_SIDE
/* Zeroed allocations: stb 2.27 mallocs its JPEG decoder state without
 * clearing it, so a scan that names a Huffman table no DHT defined would
 * decode with uninitialised tables (garbage indices, then an assert; found by
 * fuzz_image).  Zeroed, such a table decodes every symbol as 0, harmlessly.
 * Pixel buffers come from calloc, so callers may free() them. */
#define STBI_MALLOC(sz) calloc(1, sz)
#define STBI_REALLOC(p, newsz) realloc(p, newsz)
#define STBI_FREE(p) free(p)

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpedantic"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wtype-limits"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wsign-conversion"
#pragma GCC diagnostic ignored "-Wcast-qual"
#pragma GCC diagnostic ignored "-Wmissing-prototypes"
#include <stb_image.h>
#pragma GCC diagnostic pop

#ifndef STBI_THREAD_LOCAL
#error "stb_image's failure reason must be thread-local (STBI_THREAD_LOCAL undefined)"
#endif

/* ---- stb 2.27 DHT guard ------------------------------------------------
 *
 * stb_image 2.27 reads a JPEG Huffman table's 16 code counts and, without
 * checking that they sum to at most 256, builds the table into 257- and
 * 256-entry arrays inside its decoder struct: a hostile DHT segment writes up
 * to ~4 KB past them (heap corruption; found by tests/fuzz/fuzz_image.c, fixed
 * upstream in 2.28 with an "n > 256" check).  Until Debian ships 2.28 we
 * refuse such files before stb sees them.
 *
 * To be sure we check every DHT that stb could parse, jpeg_dht_safe walks
 * the marker stream exactly as stb does (stbi__decode_jpeg_header +
 * stbi__decode_jpeg_image):
 *   - a marker is 0xFF, any 0xFF fill bytes, then the marker byte; before
 *     the frame header (SOF) stb skips junk bytes until the next 0xFF;
 *   - every segment stb accepts consumes exactly its declared length (DQT,
 *     DHT, DRI, APPn, COM, SOF, SOS; stb errors out otherwise, and then it
 *     no longer matters where it would have gone);
 *   - after an SOS header the entropy-coded data ends at the first 0xFF
 *     followed (after fill bytes) by something other than 0x00 or RSTn: stb's
 *     bit reader stops there, and if it stops earlier its resync either
 *     lands on that same marker or fails;
 *   - EOI ends the walk.
 * Bytes past the end read as 0, as stb's memory reader returns. */

/* Byte i of the stream, 0 past the end (stb's memory reader does the same). */
static unsigned byte_at(const uint8_t *d, size_t len, size_t i)
{
    return i < len ? d[i] : 0;
}

/* Checks the Huffman tables of the DHT segment whose length field is at
 * d[pos]: returns 0 if a table stb would build declares more than 256
 * codes, else 1 (including when stb would reject the segment itself). */
static int dht_segment_safe(const uint8_t *d, size_t len, size_t pos)
{
    long remaining = (long)((byte_at(d, len, pos) << 8) | byte_at(d, len, pos + 1)) - 2;
    pos += 2;
    while (remaining > 0 && pos < len) {
        unsigned q = byte_at(d, len, pos++);
        if ((q >> 4) > 1 || (q & 15) > 3)
            return 1; /* stb: "bad DHT header" */
        unsigned n = 0;
        for (int i = 0; i < 16; i++)
            n += byte_at(d, len, pos++);
        if (n > 256)
            return 0;
        pos += n;
        remaining -= 17 + (long)n;
    }
    return 1;
}

/* Returns 0 if some DHT segment stb would parse is unsafe for stb 2.27. */
static int jpeg_dht_safe(const uint8_t *d, size_t len)
{
    size_t pos = 2; /* past SOI */
    int seen_sof = 0, first = 1;
    while (pos < len) {
        /* Find the next marker the way stbi__get_marker does. */
        if (d[pos] != 0xFF) {
            if (seen_sof || first)
                return 1; /* stb: "expected marker" */
            pos++;        /* stb skips junk before the frame header */
            continue;
        }
        first = 0;
        while (pos < len && d[pos] == 0xFF)
            pos++;
        unsigned m = byte_at(d, len, pos++);
        size_t seg = (byte_at(d, len, pos) << 8) | byte_at(d, len, pos + 1);
        if (m == 0xD9) /* EOI */
            return 1;
        if (m == 0xC4) {
            if (!dht_segment_safe(d, len, pos))
                return 0;
        } else if (m == 0xC0 || m == 0xC1 || m == 0xC2) {
            if (seen_sof)
                return 1; /* stb: "unknown marker" */
            seen_sof = 1;
        } else if (m == 0xDA) {
            if (!seen_sof)
                return 1;
            /* Skip the scan header, then the entropy-coded data. */
            pos += seg;
            while (pos < len) {
                if (d[pos] != 0xFF) {
                    pos++;
                    continue;
                }
                size_t q = pos + 1;
                while (q < len && d[q] == 0xFF)
                    q++;
                unsigned x = byte_at(d, len, q);
                if (x != 0x00 && !(x >= 0xD0 && x <= 0xD7))
                    break; /* pos is at the marker's first 0xFF */
                pos = q + 1;
            }
            continue;
        } else if (!(m == 0xDB || m == 0xDD || m == 0xDC || m == 0xFE ||
                     (m >= 0xE0 && m <= 0xEF))) {
            return 1; /* stb: "unknown marker" */
        }
        if (seg < 2)
            return 1; /* stb rejects the length */
        pos += seg;
    }
    return 1;
}

/* Builds a result from stb's current failure reason. */
static img_stb_result stb_failure(void)
{
    img_stb_result r = {0, 0, stbi_failure_reason()};
    if (!r.reason)
        r.reason = "unknown decoder error";
    /* stb's short reason for the STBI_MAX_DIMENSIONS (and 2^30-byte) checks. */
    if (strcmp(r.reason, "too large") == 0)
        r.too_large = 1;
    return r;
}

img_stb_result img_stb_info(img_stb_format format, const uint8_t *data, size_t len, int *w,
                            int *h, int *channels)
{
    if (len > INT_MAX) {
        img_stb_result r = {0, 1, "too large"};
        return r;
    }
    /* stbi_info_from_memory would try every compiled-in format in turn and
     * end with "unknown image type", losing the reason the right reader gave;
     * its per-format readers are static but visible in this translation unit. */
    if (format == IMG_STB_JPEG && !jpeg_dht_safe(data, len)) {
        img_stb_result r = {0, 0, "bad DHT header"};
        return r;
    }
    stbi__context ctx;
    stbi__start_mem(&ctx, data, (int)len);
    int ok;
    switch (format) {
    case IMG_STB_JPEG: ok = stbi__jpeg_info(&ctx, w, h, channels); break;
    case IMG_STB_PNG: ok = stbi__png_info(&ctx, w, h, channels); break;
    default: ok = stbi__bmp_info(&ctx, w, h, channels); break;
    }
    if (!ok)
        return stb_failure();
    img_stb_result r = {1, 0, NULL};
    return r;
}

img_stb_result img_stb_decode_rgb(const uint8_t *data, size_t len, uint8_t **pixels, int *w,
                                  int *h)
{
    *pixels = NULL;
    if (len > INT_MAX) {
        img_stb_result r = {0, 1, "too large"};
        return r;
    }
    /* stb picks its JPEG reader for anything starting with SOI. */
    if (len >= 2 && data[0] == 0xFF && data[1] == 0xD8 && !jpeg_dht_safe(data, len)) {
        img_stb_result r = {0, 0, "bad DHT header"};
        return r;
    }
    int channels_in_file = 0;
    /* req_comp = 3: stb converts grey -> RGB by replication and drops alpha
     * (stbi__convert_format copies the first three channels, no premultiply). */
    stbi_uc *p = stbi_load_from_memory(data, (int)len, w, h, &channels_in_file, 3);
    if (!p)
        return stb_failure();
    *pixels = p;
    img_stb_result ok = {1, 0, NULL};
    return ok;
}
