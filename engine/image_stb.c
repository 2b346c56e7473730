/*
 * image_stb.c - the one translation unit that compiles stb_image, and the
 * guards that keep stb 2.27 safe on hostile input.
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
 * iPhone de-conversion).  Its one other piece of shared state, a static
 * buffer it formats "unknown critical chunk" PNG errors into, is never
 * reached: the PNG guard refuses such chunks first, in info and decode.
 *
 * stb 2.27 defects guarded here, each refused before stb sees the file:
 *   - memory safety (found by tests/fuzz/fuzz_image.c; regression inputs
 *     tests/fuzz/corpus/image/crash-*): JPEG Huffman tables with more than
 *     256 codes (jpeg_dht_safe) and decoder state left uninitialised
 *     (STBI_MALLOC zeroes);
 *   - memory out of proportion to the image: a PNG whose compressed data
 *     inflates far past what its header's dimensions need, which stb
 *     buffers whole (the PNG guard inflates it once with zlib, counting,
 *     and stops at the need).
 *
 * Warnings: stb 2.27 happens to be clean at our -Wall -Wextra with gcc 12
 * and clang 14, but not under stricter sets (-Wconversion, -Wcast-qual,
 * -Wpedantic, ...) or other stb/compiler versions, so its warnings are
 * silenced around the #include only, never for our own code.
 */
#include "image_impl.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

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

/* What a guard decided about a file. */
typedef enum guard_verdict {
    GUARD_PASS,     /* stb may decode (or will fail on its own) */
    GUARD_REFUSE,   /* format error: the reason says why */
    GUARD_TOO_MUCH, /* over a work limit: the reason says which */
    GUARD_NOMEM
} guard_verdict;

/* ---- PNG guard: inflated size bounded by the header ---------------------
 *
 * stb 2.27 inflates a PNG's whole IDAT stream into a buffer it doubles as
 * needed (stbi_zlib_decode_malloc_guesssize_headerflag), then ignores what
 * the image does not need: a 1x1 PNG whose IDAT inflates to 2 GiB of zeros
 * (a 2 MB file) makes it allocate 2.1 GB, and max_pixels never sees it.
 * png_guard walks the chunks as stbi__parse_png_file does, inflates the
 * IDAT stream once with zlib into a small scratch buffer, counting, and
 * refuses the file as soon as the count passes what the IHDR needs: one
 * filter byte plus ceil(width * bits per pixel / 8) bytes per row, rows of
 * each of the seven Adam7 passes when interlaced.  A valid PNG inflates to
 * exactly that (extra data is an encoder bug: libpng warns "Too much image
 * data", stb and PIL ignore it; here it is refused).  stb never sees a stream
 * zlib rejects or that ends early either (PIL, which uses zlib, refuses
 * those too).  Like stb it reads past the 2-byte zlib header as raw deflate
 * (no window-size or Adler-32 check) and stops at IEND.
 * Also refused here: chunks running past the end of the data (stb would
 * first grow its IDAT buffer to the declared length, up to 2^31 bytes),
 * unknown critical chunks (stb's message for them is a static buffer: a
 * data race between threads), and Apple's CgBI variant (not a PNG; PIL
 * refuses it too).  Cost: one extra inflate pass, output discarded. */

/* Bytes of filtered scanlines a w x h PNG with this IHDR inflates to, or 0
 * if stb would refuse the header (it reports that itself). */
static uint64_t png_raw_size(uint32_t w, uint32_t h, unsigned depth, unsigned color,
                             unsigned interlace)
{
    static const unsigned channels[7] = {1, 0, 3, 1, 2, 0, 4};
    if (color > 6 || channels[color] == 0 || interlace > 1 || w == 0 || h == 0 ||
        w > IMG_STB_MAX_SIDE || h > IMG_STB_MAX_SIDE)
        return 0;
    if (depth != 1 && depth != 2 && depth != 4 && depth != 8 && depth != 16)
        return 0;
    if ((color == 3 && depth == 16) || ((color == 2 || color == 4 || color == 6) && depth < 8))
        return 0;
    uint64_t bpp = (uint64_t)channels[color] * depth; /* bits per pixel */
    if (!interlace)
        return (uint64_t)h * (1 + ((uint64_t)w * bpp + 7) / 8);
    /* Adam7: pass p holds the pixels at (xorig + i * xspc, yorig + j * yspc). */
    static const uint32_t xorig[7] = {0, 4, 0, 2, 0, 1, 0}, yorig[7] = {0, 0, 4, 0, 2, 0, 1};
    static const uint32_t xspc[7] = {8, 8, 4, 4, 2, 2, 1}, yspc[7] = {8, 8, 8, 4, 4, 2, 2};
    uint64_t total = 0;
    for (int p = 0; p < 7; p++) {
        uint64_t pw = (w + xspc[p] - 1 - xorig[p]) / xspc[p];
        uint64_t ph = (h + yspc[p] - 1 - yorig[p]) / yspc[p];
        if (pw && ph)
            total += ph * (1 + (pw * bpp + 7) / 8);
    }
    return total;
}

/* Inflation state of png_guard. */
typedef struct png_inflate {
    z_stream zs;
    int started;         /* inflateInit2 done */
    int ended;           /* Z_STREAM_END seen */
    unsigned hdr_have;   /* zlib header bytes seen so far (2 needed) */
    uint8_t hdr[2];
    uint64_t out, limit; /* bytes inflated; the most the image needs */
    uint8_t scratch[16384];
} png_inflate;

/* Feeds one IDAT chunk's bytes.  Returns GUARD_PASS to go on, else the
 * verdict with *reason set. */
static guard_verdict png_feed(png_inflate *st, const uint8_t *p, size_t n, const char **reason)
{
    while (st->hdr_have < 2 && n > 0) {
        st->hdr[st->hdr_have++] = *p++;
        n--;
        if (st->hdr_have == 2) { /* stbi__parse_zlib_header's checks */
            unsigned cmf = st->hdr[0], flg = st->hdr[1];
            if ((cmf * 256 + flg) % 31 != 0 || (flg & 32) || (cmf & 15) != 8) {
                *reason = "bad zlib header";
                return GUARD_REFUSE;
            }
            if (inflateInit2(&st->zs, -15) != Z_OK) {
                *reason = "out of memory";
                return GUARD_NOMEM;
            }
            st->started = 1;
        }
    }
    if (!st->started || st->ended || n == 0)
        return GUARD_PASS; /* bytes after the end of the stream: ignored, as stb does */
    st->zs.next_in = (Bytef *)(uintptr_t)p;
    st->zs.avail_in = (uInt)n; /* n <= len <= INT_MAX */
    for (;;) {
        st->zs.next_out = st->scratch;
        st->zs.avail_out = sizeof st->scratch;
        int ret = inflate(&st->zs, Z_NO_FLUSH);
        st->out += sizeof st->scratch - st->zs.avail_out;
        if (st->out > st->limit) {
            *reason = "image data inflates to more than its header's dimensions need";
            return GUARD_REFUSE;
        }
        if (ret == Z_STREAM_END) {
            st->ended = 1;
            return GUARD_PASS;
        }
        if (ret == Z_MEM_ERROR) {
            *reason = "out of memory";
            return GUARD_NOMEM;
        }
        if (ret != Z_OK && ret != Z_BUF_ERROR) {
            *reason = "bad compressed image data";
            return GUARD_REFUSE;
        }
        if (st->zs.avail_in == 0 && st->zs.avail_out != 0)
            return GUARD_PASS; /* all input used, all output flushed */
    }
}

/* Walks the chunks of a PNG (signature already checked by the caller) up
 * to IEND, inflating the IDAT data; with headers_only, stops at the first
 * IDAT (all stbi__png_info reads).  *reason is set unless the verdict is
 * GUARD_PASS. */
static guard_verdict png_guard(const uint8_t *d, size_t len, int headers_only,
                               const char **reason)
{
    png_inflate *st = calloc(1, sizeof *st);
    if (!st) {
        *reason = "out of memory";
        return GUARD_NOMEM;
    }
    guard_verdict v = GUARD_PASS;
    int have_ihdr = 0;
    size_t pos = 8;
    for (;;) {
        if (len - pos < 8) {
            *reason = "truncated (no IEND chunk)";
            v = GUARD_REFUSE;
            break;
        }
        uint32_t clen = (uint32_t)d[pos] << 24 | (uint32_t)d[pos + 1] << 16 |
                        (uint32_t)d[pos + 2] << 8 | d[pos + 3];
        const uint8_t *type = d + pos + 4, *body = d + pos + 8;
        pos += 8;
        if (clen > len - pos) {
            *reason = "truncated (a chunk runs past the end of the data)";
            v = GUARD_REFUSE;
            break;
        }
        if (memcmp(type, "IHDR", 4) == 0) {
            if (have_ihdr || clen != 13)
                break; /* stb refuses it */
            have_ihdr = 1;
            uint32_t w = (uint32_t)body[0] << 24 | (uint32_t)body[1] << 16 |
                         (uint32_t)body[2] << 8 | body[3];
            uint32_t h = (uint32_t)body[4] << 24 | (uint32_t)body[5] << 16 |
                         (uint32_t)body[6] << 8 | body[7];
            st->limit = png_raw_size(w, h, body[8], body[9], body[12]);
            if (st->limit == 0)
                break; /* stb refuses the header */
        } else if (memcmp(type, "CgBI", 4) == 0) {
            *reason = "Apple CgBI PNGs are not supported";
            v = GUARD_REFUSE;
            break;
        } else if (!have_ihdr) {
            break; /* stb: "first not IHDR" */
        } else if (memcmp(type, "IDAT", 4) == 0) {
            if (headers_only)
                break;
            v = png_feed(st, body, clen, reason);
            if (v != GUARD_PASS)
                break;
        } else if (memcmp(type, "IEND", 4) == 0) {
            if (!st->ended && st->hdr_have > 0) { /* no IDAT at all: stb says so */
                *reason = "truncated (compressed image data ends early)";
                v = GUARD_REFUSE;
            }
            break;
        } else if (!(type[0] & 0x20) && memcmp(type, "PLTE", 4) != 0) {
            *reason = "unknown critical chunk";
            v = GUARD_REFUSE;
            break;
        }
        pos += clen;
        pos += len - pos < 4 ? len - pos : 4; /* CRC (not checked, as stb) */
    }
    if (st->started)
        inflateEnd(&st->zs);
    free(st);
    return v;
}

/* Builds a result from stb's current failure reason. */
static img_stb_result stb_failure(void)
{
    img_stb_result r = {0, 0, 0, stbi_failure_reason()};
    if (!r.reason)
        r.reason = "unknown decoder error";
    /* stb's short reasons for the STBI_MAX_DIMENSIONS (and 2^30-byte)
     * checks and for a failed allocation. */
    if (strcmp(r.reason, "too large") == 0)
        r.too_large = 1;
    if (strcmp(r.reason, "outofmem") == 0)
        r.nomem = 1;
    return r;
}

img_stb_result img_stb_info(img_stb_format format, const uint8_t *data, size_t len, int *w,
                            int *h, int *channels)
{
    if (len > INT_MAX) {
        img_stb_result r = {0, 1, 0, "too large"};
        return r;
    }
    /* stbi_info_from_memory would try every compiled-in format in turn and
     * end with "unknown image type", losing the reason the right reader gave;
     * its per-format readers are static but visible in this translation unit. */
    if (format == IMG_STB_JPEG && !jpeg_dht_safe(data, len)) {
        img_stb_result r = {0, 0, 0, "bad DHT header"};
        return r;
    }
    const char *reason = NULL;
    guard_verdict v = format == IMG_STB_PNG ? png_guard(data, len, 1, &reason) : GUARD_PASS;
    if (v != GUARD_PASS) { /* palette PNGs: stb reads chunks up to the first IDAT */
        img_stb_result r = {0, 0, v == GUARD_NOMEM, reason};
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
    img_stb_result r = {1, 0, 0, NULL};
    return r;
}

img_stb_result img_stb_decode_rgb(const uint8_t *data, size_t len, uint8_t **pixels, int *w,
                                  int *h)
{
    *pixels = NULL;
    if (len > INT_MAX) {
        img_stb_result r = {0, 1, 0, "too large"};
        return r;
    }
    /* stbi_load_from_memory picks its reader by content, not by our
     * sniffing, so guard by what stb will see: its JPEG reader takes
     * anything starting with SOI, its PNG reader the 8-byte signature. */
    if (len >= 2 && data[0] == 0xFF && data[1] == 0xD8 && !jpeg_dht_safe(data, len)) {
        img_stb_result r = {0, 0, 0, "bad DHT header"};
        return r;
    }
    const char *reason = NULL;
    guard_verdict v = GUARD_PASS;
    if (len >= 8 && memcmp(data, "\x89PNG\r\n\x1A\n", 8) == 0)
        v = png_guard(data, len, 0, &reason);
    /* BMP needs no guard: stb reads it row by row, bounded by its
     * dimensions, and image.c refuses files shorter than their rows. */
    if (v != GUARD_PASS) {
        img_stb_result r = {0, v == GUARD_TOO_MUCH, v == GUARD_NOMEM, reason};
        return r;
    }
    int channels_in_file = 0;
    /* req_comp = 3: stb converts grey -> RGB by replication and drops alpha
     * (stbi__convert_format copies the first three channels, no premultiply). */
    stbi_uc *p = stbi_load_from_memory(data, (int)len, w, h, &channels_in_file, 3);
    if (!p)
        return stb_failure();
    *pixels = p;
    img_stb_result ok = {1, 0, 0, NULL};
    return ok;
}
