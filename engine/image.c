/*
 * image.c - image decoding: format sniffing, size checks, stb decode, EXIF
 * orientation, file loading (see image.h).
 *
 * Every input is untrusted (HTTP uploads, URLs, data sets), so decoding is a
 * sequence of cheap refusals before any expensive work:
 *
 *   1. sniff the magic bytes: only JPEG, PNG and BMP go on; other known
 *      formats get a sentence naming them, anything else "not a JPEG, PNG or
 *      BMP image" (both VIT_ERR_UNSUPPORTED);
 *   2. read the dimensions from the header (our own bounds-checked peek for
 *      the error message, then stbi_info as the authority) and refuse
 *      width * height > max_pixels with VIT_ERR_TOO_LARGE before any pixel
 *      memory is allocated;
 *   3. decode to RGB with stb (grey replicated, alpha dropped - the same
 *      pixels as PIL's convert("RGB")); corrupt data is VIT_ERR_FORMAT with
 *      stb's reason.  A JPEG without an end-of-image marker after its scan
 *      data, or a BMP shorter than its rows need, is refused as truncated:
 *      stb would silently fill the missing part with grey or black, PIL
 *      raises "image file is truncated".  Before stb runs, image_stb.c's
 *      guards bound the work by the header's dimensions: PNG data may not
 *      inflate past what they need, a JPEG gets at most 500 scans and 16
 *      block decodes per block, 1 if sequential (over: VIT_ERR_TOO_LARGE),
 *      scan data must hold the bits its blocks read, and files that
 *      would reach stb 2.27's arithmetic bugs are VIT_ERR_FORMAT;
 *   4. JPEG only: apply the EXIF orientation (IFD0 tag 0x0112) like PIL's
 *      ImageOps.exif_transpose, so the model sees the picture upright.
 *
 * stb itself lives in image_stb.c (the only file that includes it).
 */
#include "image.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "beneath.h"
#include "image_impl.h"

/* ---------------------------------------------------------------- sniffing */

typedef enum img_format { FMT_UNKNOWN, FMT_JPEG, FMT_PNG, FMT_BMP, FMT_REFUSED } img_format;

/* True if data starts with the n bytes of magic. */
static int starts_with(const uint8_t *data, size_t len, const void *magic, size_t n)
{
    return len >= n && memcmp(data, magic, n) == 0;
}

/* Identifies the format from magic bytes.  For a known but unsupported format
 * *name is set to its human name ("GIF", "WebP", ...). */
static img_format sniff_format(const uint8_t *d, size_t len, const char **name)
{
    *name = NULL;
    if (starts_with(d, len, "\xFF\xD8\xFF", 3))
        return FMT_JPEG;
    if (starts_with(d, len, "\x89PNG\r\n\x1A\n", 8))
        return FMT_PNG;
    if (starts_with(d, len, "BM", 2))
        return FMT_BMP;

    if (starts_with(d, len, "GIF8", 4))
        *name = "GIF";
    else if (starts_with(d, len, "RIFF", 4) && len >= 12 && memcmp(d + 8, "WEBP", 4) == 0)
        *name = "WebP";
    else if (starts_with(d, len, "8BPS", 4))
        *name = "PSD";
    else if (starts_with(d, len, "#?RADIANCE", 10) || starts_with(d, len, "#?RGBE", 6))
        *name = "HDR (Radiance)";
    else if (starts_with(d, len, "\x53\x80\xF6\x34", 4))
        *name = "PIC (Softimage)";
    else if (starts_with(d, len, "II*\0", 4) || starts_with(d, len, "MM\0*", 4))
        *name = "TIFF";
    else if (len >= 3 && d[0] == 'P' && d[1] >= '1' && d[1] <= '7' &&
             (d[2] == ' ' || d[2] == '\t' || d[2] == '\r' || d[2] == '\n'))
        *name = "PNM (PBM/PGM/PPM/PAM)";
    else if (starts_with(d, len, "\0\0\0\x0CjP  \r\n\x87\n", 12) ||
             starts_with(d, len, "\xFF\x4F\xFF\x51", 4))
        *name = "JPEG 2000";
    else if (starts_with(d, len, "\xFF\x0A", 2) ||
             starts_with(d, len, "\0\0\0\x0CJXL \r\n\x87\n", 12))
        *name = "JPEG XL";
    else if (len >= 12 && memcmp(d + 4, "ftyp", 4) == 0 &&
             (memcmp(d + 8, "avif", 4) == 0 || memcmp(d + 8, "avis", 4) == 0))
        *name = "AVIF";
    else if (len >= 12 && memcmp(d + 4, "ftyp", 4) == 0 &&
             (memcmp(d + 8, "heic", 4) == 0 || memcmp(d + 8, "heix", 4) == 0 ||
              memcmp(d + 8, "mif1", 4) == 0 || memcmp(d + 8, "msf1", 4) == 0))
        *name = "HEIF/HEIC";
    else if (starts_with(d, len, "\0\0\1\0", 4))
        *name = "ICO";
    else if (starts_with(d, len, "qoif", 4))
        *name = "QOI";
    else if (starts_with(d, len, "%PDF", 4))
        *name = "PDF";
    else if (starts_with(d, len, "<svg", 4) || starts_with(d, len, "<?xml", 5))
        *name = "SVG/XML";
    return *name ? FMT_REFUSED : FMT_UNKNOWN;
}

static const char *format_name(img_format f)
{
    switch (f) {
    case FMT_JPEG: return "JPEG";
    case FMT_PNG: return "PNG";
    case FMT_BMP: return "BMP";
    default: return "image";
    }
}

/* ------------------------------------------------------- header peeking */

static unsigned rd16be(const uint8_t *p) { return (unsigned)p[0] << 8 | p[1]; }
static unsigned rd16le(const uint8_t *p) { return (unsigned)p[1] << 8 | p[0]; }
static uint32_t rd32be(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint32_t rd32le(const uint8_t *p)
{
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* What a walk over the JPEG marker segments found.  Every field keeps its
 * zero value when the walk could not see it. */
typedef struct jpeg_scan {
    uint32_t width, height; /* from the first SOFn segment */
    int orientation;        /* EXIF 0x0112 in IFD0, 1..8; 0 = none */
    size_t scan_start;      /* offset just past the first SOS header */
} jpeg_scan;

/* Returns the EXIF orientation (1..8) stored in a TIFF block (the APP1
 * payload after "Exif\0\0"), or 0 if absent or malformed.  Reads only inside
 * tiff[0, n): every offset is checked against n before use. */
static int exif_orientation(const uint8_t *tiff, size_t n)
{
    if (n < 8)
        return 0;
    unsigned (*r16)(const uint8_t *);
    uint32_t (*r32)(const uint8_t *);
    if (tiff[0] == 'I' && tiff[1] == 'I') {
        r16 = rd16le;
        r32 = rd32le;
    } else if (tiff[0] == 'M' && tiff[1] == 'M') {
        r16 = rd16be;
        r32 = rd32be;
    } else {
        return 0;
    }
    if (r16(tiff + 2) != 42)
        return 0;
    size_t ifd = r32(tiff + 4);
    if (ifd > n || n - ifd < 2)
        return 0;
    size_t count = r16(tiff + ifd);
    for (size_t i = 0; i < count; i++) {
        size_t e = ifd + 2 + 12 * i; /* <= n + 2 + 12 * 65535: no overflow */
        if (e > n || n - e < 12)
            break;
        if (r16(tiff + e) != 0x0112)
            continue;
        unsigned type = r16(tiff + e + 2);
        uint32_t cnt = r32(tiff + e + 4);
        uint32_t v = 0;
        if (cnt != 1)
            return 0;
        if (type == 3) /* SHORT: value in the first two bytes of the field */
            v = r16(tiff + e + 8);
        else if (type == 4) /* LONG */
            v = r32(tiff + e + 8);
        return v >= 1 && v <= 8 ? (int)v : 0;
    }
    return 0;
}

/* True for the SOFn markers that carry frame dimensions (not DHT, JPG, DAC). */
static int is_sof(unsigned m)
{
    return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
}

/* Walks the marker segments from SOI to the first SOS, bounds-checked,
 * collecting frame size, EXIF orientation (first "Exif" APP1 only, as PIL)
 * and where the entropy-coded data starts.  Stops quietly at anything odd:
 * stb is the authority on validity, this only gathers extras. */
static jpeg_scan jpeg_walk(const uint8_t *d, size_t len)
{
    jpeg_scan s = {0, 0, 0, 0};
    int have_exif = 0;
    size_t pos = 2; /* past SOI */
    while (pos < len && d[pos] == 0xFF) {
        while (pos < len && d[pos] == 0xFF) /* fill bytes */
            pos++;
        if (pos >= len)
            break;
        unsigned m = d[pos++];
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD8)) /* standalone markers */
            continue;
        if (m == 0xD9 || len - pos < 2)
            break;
        size_t seg = rd16be(d + pos);
        if (seg < 2 || seg > len - pos)
            break;
        const uint8_t *p = d + pos + 2;
        size_t plen = seg - 2;
        if (m == 0xDA) {
            s.scan_start = pos + seg;
            break;
        }
        if (is_sof(m) && plen >= 5 && s.width == 0) {
            s.height = rd16be(p + 1);
            s.width = rd16be(p + 3);
        }
        if (m == 0xE1 && !have_exif && plen >= 6 && memcmp(p, "Exif\0\0", 6) == 0) {
            have_exif = 1;
            s.orientation = exif_orientation(p + 6, plen - 6);
        }
        pos += seg;
    }
    return s;
}

/* True if an EOI marker (FF D9) occurs in d[from, len).  Inside entropy-coded
 * data 0xFF is always followed by 0x00 or RSTn, so a hit is a real EOI. */
static int has_eoi_after(const uint8_t *d, size_t len, size_t from)
{
    while (from < len) {
        const uint8_t *ff = memchr(d + from, 0xFF, len - from);
        if (!ff)
            return 0;
        size_t i = (size_t)(ff - d);
        if (i + 1 < len && d[i + 1] == 0xD9)
            return 1;
        from = i + 1;
    }
    return 0;
}

/* True if a BMP is shorter than its own header says its pixel rows need.
 * stb (which supports no RLE BMP) would read the missing rows as zeros; PIL
 * refuses such a file.  Returns 0 when the header is odd: stb decides then. */
static int bmp_truncated(const uint8_t *d, size_t len, int w, int h)
{
    if (len < 30)
        return 0;
    uint64_t off = rd32le(d + 10), hsz = rd32le(d + 14), bpp;
    if (hsz == 12) {
        bpp = rd16le(d + 24);
    } else if (hsz >= 40 && len >= 34) {
        uint32_t compression = rd32le(d + 30);
        if (compression != 0 && compression != 3) /* BI_RGB, BI_BITFIELDS */
            return 0;
        bpp = rd16le(d + 28);
    } else {
        return 0;
    }
    if (bpp == 0 || bpp > 32)
        return 0;
    /* Rows are padded to 4 bytes.  w, h <= IMG_STB_MAX_SIDE: no overflow. */
    uint64_t row = ((bpp * (uint64_t)w + 31) / 32) * 4;
    return off + row * (uint64_t)h > len;
}

/* Reads the dimensions a PNG, BMP or JPEG header claims, for the too-large
 * message.  Returns 0 if the header is too short or odd (stbi_info decides). */
static int peek_dims(img_format f, const uint8_t *d, size_t len, const jpeg_scan *js,
                     uint64_t *w, uint64_t *h)
{
    if (f == FMT_PNG && len >= 24 && memcmp(d + 12, "IHDR", 4) == 0) {
        *w = rd32be(d + 16);
        *h = rd32be(d + 20);
        return 1;
    }
    if (f == FMT_BMP && len >= 26) {
        uint32_t hsz = rd32le(d + 14);
        if (hsz == 12) { /* OS/2 BITMAPCOREHEADER: 16-bit sizes */
            *w = rd16le(d + 18);
            *h = rd16le(d + 20);
            return 1;
        }
        int64_t bw = (int32_t)rd32le(d + 18), bh = (int32_t)rd32le(d + 22);
        *w = (uint64_t)(bw < 0 ? -bw : bw);
        *h = (uint64_t)(bh < 0 ? -bh : bh); /* negative height = top-down rows */
        return 1;
    }
    if (f == FMT_JPEG && js->width) {
        *w = js->width;
        *h = js->height;
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------- orientation */

/* Returns a new w x h RGB buffer holding src transformed by EXIF orientation
 * o (2..8), the same transposes as PIL's ImageOps.exif_transpose:
 *   2 FLIP_LEFT_RIGHT, 3 ROTATE_180, 4 FLIP_TOP_BOTTOM, 5 TRANSPOSE,
 *   6 ROTATE_270 (90 deg clockwise), 7 TRANSVERSE, 8 ROTATE_90.
 * For 5..8 the output is h x w.  Returns NULL on allocation failure; the
 * caller frees the result (src is untouched). */
static uint8_t *apply_orientation(const uint8_t *src, int w, int h, int o)
{
    size_t n = (size_t)w * (size_t)h * 3; /* fits: decoded buffer of that size exists */
    uint8_t *dst = malloc(n);
    if (!dst)
        return NULL;
    int ow = o >= 5 ? h : w, oh = o >= 5 ? w : h;
    for (int y = 0; y < oh; y++) {
        for (int x = 0; x < ow; x++) {
            int sx, sy;
            switch (o) {
            case 2: sx = w - 1 - x; sy = y; break;
            case 3: sx = w - 1 - x; sy = h - 1 - y; break;
            case 4: sx = x; sy = h - 1 - y; break;
            case 5: sx = y; sy = x; break;
            case 6: sx = y; sy = h - 1 - x; break;
            case 7: sx = w - 1 - y; sy = h - 1 - x; break;
            default: sx = w - 1 - y; sy = x; break; /* 8 */
            }
            const uint8_t *s = src + ((size_t)sy * (size_t)w + (size_t)sx) * 3;
            uint8_t *t = dst + ((size_t)y * (size_t)ow + (size_t)x) * 3;
            t[0] = s[0];
            t[1] = s[1];
            t[2] = s[2];
        }
    }
    return dst;
}

/* ------------------------------------------------------- decode */

/* Fills the VIT_ERR_TOO_LARGE message for a w x h image. */
static vit_status too_many_pixels(vit_error *err, uint64_t w, uint64_t h, size_t max_pixels)
{
    /* w, h < 2^32 so the product cannot overflow 64 bits. */
    return vit_error_set(err, VIT_ERR_TOO_LARGE,
                         "image is %llux%llu = %llu pixels, over the limit of %zu",
                         (unsigned long long)w, (unsigned long long)h,
                         (unsigned long long)(w * h), max_pixels);
}

vit_status img_decode(const uint8_t *data, size_t len, size_t max_pixels, img_image *out,
                      vit_error *err)
{
    if (!out || (!data && len > 0))
        return vit_error_set(err, VIT_ERR_INVALID, "img_decode: NULL argument");
    out->width = out->height = 0;
    out->pixels = NULL;
    if (len == 0)
        return vit_error_set(err, VIT_ERR_FORMAT, "image data is empty (0 bytes)");

    const char *other = NULL;
    img_format fmt = sniff_format(data, len, &other);
    if (fmt == FMT_REFUSED)
        return vit_error_set(err, VIT_ERR_UNSUPPORTED,
                             "%s images are not supported (JPEG, PNG, BMP only)", other);
    if (fmt == FMT_UNKNOWN)
        return vit_error_set(err, VIT_ERR_UNSUPPORTED, "not a JPEG, PNG or BMP image");
    const char *fname = format_name(fmt);

    /* Our own header peek first: it knows the claimed size even when stb
     * refuses it as over IMG_STB_MAX_SIDE, so the message can say how big. */
    jpeg_scan js = {0, 0, 0, 0};
    if (fmt == FMT_JPEG)
        js = jpeg_walk(data, len);
    uint64_t pw = 0, ph = 0;
    if (peek_dims(fmt, data, len, &js, &pw, &ph) && pw * ph > max_pixels)
        return too_many_pixels(err, pw, ph, max_pixels);

    int w = 0, h = 0, channels = 0;
    img_stb_format sf = fmt == FMT_JPEG ? IMG_STB_JPEG : fmt == FMT_PNG ? IMG_STB_PNG
                                                                        : IMG_STB_BMP;
    img_stb_result r = img_stb_info(sf, data, len, &w, &h, &channels);
    if (!r.ok && (r.too_large || pw > IMG_STB_MAX_SIDE || ph > IMG_STB_MAX_SIDE))
        return vit_error_set(err, VIT_ERR_TOO_LARGE,
                             "%s image is too large to decode (over %d pixels per side, or input "
                             "over 2 GiB)", fname, IMG_STB_MAX_SIDE);
    if (!r.ok)
        return vit_error_set(err, VIT_ERR_FORMAT, "corrupt %s image: %s", fname, r.reason);
    if (w <= 0 || h <= 0)
        return vit_error_set(err, VIT_ERR_FORMAT, "corrupt %s image: size %dx%d", fname, w, h);
    if ((uint64_t)w * (uint64_t)h > max_pixels)
        return too_many_pixels(err, (uint64_t)w, (uint64_t)h, max_pixels);

    if (fmt == FMT_JPEG && js.scan_start && !has_eoi_after(data, len, js.scan_start))
        return vit_error_set(err, VIT_ERR_FORMAT,
                             "corrupt JPEG image: truncated (no end-of-image marker)");

    if (fmt == FMT_BMP && bmp_truncated(data, len, w, h))
        return vit_error_set(err, VIT_ERR_FORMAT,
                             "corrupt BMP image: truncated (less pixel data than %dx%d needs)",
                             w, h);

    /* The decoder's pixel memory is bounded too, not only the pixels: a
     * 16-bit RGBA Adam7 PNG holds 20 bytes a pixel at once in stb (a 381 KB
     * file claiming 49 megapixels: ~1 GB), a progressive CMYK JPEG 15 (4.7
     * KB claiming 49 megapixels: 719 MB).  IMG_DECODE_BYTES_PER_PIXEL bytes
     * for each pixel of the budget are enough for every 8-bit PNG (at most
     * ~11: RGBA, Adam7, one pixel wide) and every grey or YCbCr JPEG (at
     * most 12: progressive 4:4:4), so any such image of max_pixels loads;
     * deeper PNGs and CMYK JPEGs get the same bytes.  The floor of
     * IMG_DECODE_MIN_BYTES covers tiny images' fixed costs (a 1x1 RGBA
     * Adam7 PNG needs 13 bytes).  BMP decodes to fixed bytes a pixel,
     * bounded by the pixel budget. */
    uint64_t budget = max_pixels > UINT64_MAX / IMG_DECODE_BYTES_PER_PIXEL
                          ? UINT64_MAX
                          : (uint64_t)max_pixels * IMG_DECODE_BYTES_PER_PIXEL;
    if (budget < IMG_DECODE_MIN_BYTES)
        budget = IMG_DECODE_MIN_BYTES;
    uint64_t need = 0;
    uint8_t *pixels = NULL;
    int dw = 0, dh = 0;
    r = img_stb_decode_rgb(data, len, budget, &need, &pixels, &dw, &dh);
    if (!r.ok && r.nomem)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory decoding a %dx%d %s image", w,
                             h, fname);
    if (!r.ok && r.too_large && need > budget)
        return vit_error_set(err, VIT_ERR_TOO_LARGE,
                             "%s image refused: decoding it needs %llu bytes of memory (bit "
                             "depth, channels, interlacing or progressive coding), over the "
                             "limit of %llu (%d bytes a pixel of the %zu-pixel budget)",
                             fname, (unsigned long long)need, (unsigned long long)budget,
                             IMG_DECODE_BYTES_PER_PIXEL, max_pixels);
    if (!r.ok && r.too_large) /* a decoding-work limit, or stb's own size check */
        return vit_error_set(err, VIT_ERR_TOO_LARGE, "%s image refused: %s", fname, r.reason);
    if (!r.ok)
        return vit_error_set(err, VIT_ERR_FORMAT, "corrupt %s image: %s", fname, r.reason);
    if (dw != w || dh != h) { /* stb's info and load disagreeing would be a bug there */
        free(pixels);
        return vit_error_set(err, VIT_ERR_FORMAT,
                             "corrupt %s image: header says %dx%d, data decodes to %dx%d",
                             fname, w, h, dw, dh);
    }

    if (fmt == FMT_JPEG && js.orientation >= 2) {
        uint8_t *turned = apply_orientation(pixels, w, h, js.orientation);
        free(pixels);
        if (!turned)
            return vit_error_set(err, VIT_ERR_NOMEM, "out of memory rotating a %dx%d image",
                                 w, h);
        pixels = turned;
        if (js.orientation >= 5) {
            int t = w;
            w = h;
            h = t;
        }
    }
    out->width = w;
    out->height = h;
    out->pixels = pixels;
    return VIT_OK;
}

/* ------------------------------------------------------- files */

vit_status img_load_file(const char *path, size_t max_bytes, size_t max_pixels, img_image *out,
                         vit_error *err)
{
    if (!path || !out)
        return vit_error_set(err, VIT_ERR_INVALID, "img_load_file: NULL argument");
    out->width = out->height = 0;
    out->pixels = NULL;

    /* Only regular files are images.  O_NONBLOCK: opening a FIFO for
     * reading would otherwise block until a writer appears (forever, for a
     * CLI given a FIFO by mistake or by a hostile data set); it changes
     * nothing for a regular file.  O_NOCTTY: a terminal never becomes our
     * controlling one.  The type is then checked on the descriptor itself
     * (fstat, not stat before open: no race with a rename in between), so
     * FIFOs, sockets and devices (/dev/zero, /dev/tty) are refused before a
     * byte is read. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        return vit_error_set(err, e == ENOENT ? VIT_ERR_NOT_FOUND : VIT_ERR_IO,
                             "cannot open %s: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return vit_error_set(err, VIT_ERR_IO, "cannot stat %s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return vit_error_set(err, VIT_ERR_IO, "cannot read %s: %s", path,
                             S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file");
    }
    if ((uint64_t)st.st_size > max_bytes) {
        close(fd);
        return vit_error_set(err, VIT_ERR_TOO_LARGE, "%s is %lld bytes, over the limit of %zu",
                             path, (long long)st.st_size, max_bytes);
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    /* a file that grew since fstat still stops at the cap (beneath.h) */
    vit_status s = beneath_read_capped(fd, (size_t)st.st_size,
                                       max_bytes < SIZE_MAX ? max_bytes : SIZE_MAX - 1, path,
                                       &buf, &len, err);
    close(fd);
    if (s != VIT_OK)
        return s;
    s = img_decode(buf, len, max_pixels, out, err);
    free(buf);
    if (s != VIT_OK)
        return vit_error_prefix(err, "%s", path);
    return VIT_OK;
}

void img_free(img_image *img)
{
    if (!img)
        return;
    free(img->pixels);
    img->pixels = NULL;
    img->width = img->height = 0;
}
