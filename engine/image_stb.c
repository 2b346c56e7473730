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
 *     256 codes (jpeg_dht_safe; at decode, the JPEG guard) and decoder
 *     state left uninitialised (STBI_MALLOC zeroes);
 *   - undefined behaviour in JPEG decoding: signed overflow of the DC
 *     arithmetic (a 16-bit DQT, large DC differences; fixed upstream in
 *     2.28) and a shift by up to 39 bits in the bit reader when the data
 *     ends inside a block: the JPEG guard redoes the DC arithmetic in 64
 *     bits and refuses data that runs out;
 *   - work and memory out of proportion to the image: a JPEG with
 *     thousands of (empty) scans, each decoded over the whole image, or
 *     with scans whose data is far shorter than its blocks (stb reads
 *     zeros past the end): the JPEG guard plans scans and block decodes
 *     from the markers before decoding and refuses data that runs out; a
 *     PNG whose compressed data inflates far past what its header's
 *     dimensions need, which stb buffers whole (the PNG guard inflates it
 *     once with zlib, counting, and stops at the need, and refuses headers
 *     it cannot size, which stb accepts for some bit depths the format
 *     forbids); pixel memory of either over the caller's byte budget
 *     (png_decode_bytes, jpeg_decode_bytes: both checked from the headers
 *     before stb allocates); PNG palettes repeated to grow the padded copy
 *     (one PLTE only, before the data).
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

/* Spells a numeric macro as a string literal, for messages. */
#define IMG_STR_(x) #x
#define IMG_STR(x) IMG_STR_(x)

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

/* What a guard (JPEG or PNG, below) decided about a file. */
typedef enum guard_verdict {
    GUARD_PASS,     /* stb may decode (or will fail on its own) */
    GUARD_REFUSE,   /* format error: the reason says why */
    GUARD_TOO_MUCH, /* over a work limit: the reason says which */
    GUARD_NOMEM
} guard_verdict;

/* ---- JPEG guard: work planned from the markers, data that runs out, DC -----
 *
 * More ways a small hostile JPEG hurts stb 2.27 that only show in its scans:
 *   - work: stb decodes every scan over all blocks of the scan's
 *     components, and reads missing entropy-coded data as zero bits, so a
 *     scan costs a pass over the image even when it holds no data: an 86 KB
 *     progressive JPEG with 2,000 empty SOS headers decodes for a minute, a
 *     362-byte baseline one claiming 7000x7000 pixels and 16 scans for 30 s
 *     (zero bits that decode to 63 coefficients a block).
 *   - arithmetic: stbi__jpeg_decode_block adds each DC difference to an int
 *     predictor and multiplies the sum by the quantiser with no range check
 *     (stbi__jpeg_decode_block_prog_dc: by 1 << Al), so a 16-bit DQT with
 *     category-15 differences overflows int (undefined behaviour; 2.28
 *     added the checks).  The predictor itself overflows after ~65,000
 *     blocks of large differences, whatever the quantiser.
 *   - bit underflow: when the data ends inside a block (see guard_fill).
 *
 * jpeg_guard makes two walks.  The planning walk (plan_scan_data) reads
 * every marker and scan header and skips each scan's data without decoding
 * it, so the limits below that depend only on the headers, and a minimum
 * data length per scan, refuse a file before any decoding, in time linear
 * in its size.  The decoding walk then runs stb's own marker code (stbi__process_marker & co.) and
 * stb's own bit reader and Huffman decoder over the file, in stb's order,
 * so it sees exactly the tables, restart intervals, scans and bits stb
 * will.  It mirrors every block decode of every scan (no coefficients, no
 * IDCT, no pixel memory: progressive files keep 8 bytes of nonzero flags
 * per block, what refinement scans read) and refuses:
 *   - (planned) more than IMG_JPEG_MAX_SCANS scans: libjpeg-turbo's TurboJPEG refuses
 *     the same number when asked to limit scans (TJFLAG_LIMITSCANS,
 *     TJPARAM_SCANLIMIT); real encoders write 6-12 (libjpeg's
 *     jpeg_simple_progression: 10 for colour, 6 for grey);
 *   - (planned) scans that together decode more than IMG_JPEG_MAX_PASSES
 *     times as many 8x8 blocks as the image has in a progressive file, more
 *     than once in a sequential one (which codes each component in exactly
 *     one scan; a repeat only re-decodes, with a full IDCT, blocks already
 *     done).  The scan count alone does not bound the
 *     work: 500 passes over a large image is the bomb again (measured: 2,000
 *     empty scans of a 1024x1024 image, 14 s).  A baseline file decodes each
 *     block once, libjpeg's jpeg_simple_progression 4.7 (4:4:4) to 6 (grey)
 *     times on average; 16 leaves room for richer scripts.  A block decode
 *     in any scan costs at most about one baseline block's entropy decoding
 *     (64 coefficients), so stb's work stays within 16 times the entropy
 *     decoding of an image of that size, which the caller's pixel budget
 *     bounds;
 *   - (planned) a scan whose data is shorter than its blocks can take at
 *     the very least (plan_scan_data);
 *   - any block that reads a bit past the end of its scan's (or restart
 *     interval's) data (guard_fill): then the symbols decoded are bounded
 *     by the bits in the file, not by the blocks its header claims;
 *   - a DC value that would overflow stb's int arithmetic (computed here in
 *     64 bits);
 *   - a DHT segment stb 2.27 would overflow on (dht_segment_safe), checked
 *     just before stb would parse it, as jpeg_dht_safe does for the header.
 * Where stb would fail, the guard stops and lets stb report it.  Cost: one
 * pass over the bytes, then about one extra Huffman pass over the data. */

#define IMG_JPEG_MAX_SCANS 500 /* SOS segments stb may process per file */
#define IMG_JPEG_MAX_PASSES 16 /* block decodes of all scans / blocks of the image */

typedef struct jpeg_guard_state {
    stbi__jpeg *j;          /* stb's decoder state, driven by stb's own code */
    const uint8_t *data;
    size_t len;
    uint64_t blocks;        /* 8x8 blocks of all components, MCU-padded */
    uint64_t scans;         /* SOS segments stb has accepted */
    uint64_t block_decodes; /* blocks decoded by those scans */
    uint64_t *nz[4];        /* progressive: per component, per block of its
                               coefficient grid, which coefficients are nonzero */
    int nz_w[4];            /* blocks per row of that grid (stb's coeff_w) */
    int plan;               /* 1: the planning walk (no decoding), 0: decoding */
    uint64_t max_bytes;     /* the caller's decoder byte budget (jpeg_decode_bytes) */
    uint64_t need;          /* planning walk: jpeg_decode_bytes of the frame */
    int zero_bits;          /* zero bits appended past the end of the current
                               restart interval's data (guard_fill) */
    const char *reason;
} jpeg_guard_state;

/* stbi__process_marker, after checking a DHT segment for the 2.27
 * overflow.  Returns 1 if stb accepts the marker, 0 if it fails (reason set
 * when the guard refuses). */
static int guard_marker(jpeg_guard_state *g, int m)
{
    if (m == 0xC4) {
        size_t pos = (size_t)(g->j->s->img_buffer - g->j->s->img_buffer_original);
        if (!dht_segment_safe(g->data, g->len, pos)) {
            g->reason = "bad DHT header";
            return 0;
        }
    }
    return stbi__process_marker(g->j, m);
}

/* True if dc (a 64-bit DC predictor) and dc * scale fit stb's int. */
static int dc_fits(int64_t dc, int64_t scale)
{
    /* |dc| < 2^32 here (one difference past int range), scale <= 65535:
     * the product fits 64 bits. */
    return dc >= INT_MIN && dc <= INT_MAX && dc * scale >= INT_MIN && dc * scale <= INT_MAX;
}

/* What a mirrored block decode found. */
enum {
    BLOCK_STB_FAILS = 0, /* stb reports an error here and stops */
    BLOCK_OK = 1,
    BLOCK_DC_OVERFLOW = -1, /* stb's int DC arithmetic would overflow */
    BLOCK_DATA_ENDED = -2   /* a bit past the end of the data was read (below) */
};

/* Past the end of the data.  Once a marker ends the entropy-coded data,
 * stb 2.27's bit reader (stbi__grow_buffer_unsafe) appends zero bits for
 * as long as it is asked, so a scan with no data at all decodes every
 * block from zeros: with tables that read zeros as 63 coefficients a
 * block, a 362-byte file claiming 7000x7000 pixels and 16 scans decoded
 * for 30 s.  It also consumes the n bits an extend/receive asks for when
 * fewer are buffered, driving code_bits negative; its next refill then
 * shifts by 24 - code_bits, past 31 (undefined; "shift exponent 39" under
 * UBSan).
 * The guard therefore never lets stb's reader append those zeros itself:
 * before each of its calls into the reader, guard_fill tops the buffer
 * up with counted zero bits once the data has ended (the same bits stb
 * would append, so the decode is unchanged), and data_left says whether
 * any bit consumed so far lies past the end: zero bits sit behind the
 * real ones, so the buffer holds fewer bits than were appended exactly
 * when some were consumed.  A file whose blocks need more bits than its
 * data has is corrupt (libjpeg warns "premature end of data segment"):
 * refused at the first block that reads past the end, so decoding work is
 * bounded by the bits in the file, not by what its header claims. */
static void guard_fill(jpeg_guard_state *g)
{
    stbi__jpeg *z = g->j;
    if (!z->nomore)
        return; /* real data left: stb's reader refills as it would */
    while (z->code_bits <= 24) { /* stbi__grow_buffer_unsafe with nomore */
        z->code_bits += 8;
        g->zero_bits += 8;
    }
}

/* True if every bit consumed since the last reset was in the data. */
static int data_left(const jpeg_guard_state *g)
{
    return g->j->code_bits >= g->zero_bits;
}

/* stbi__jpeg_reset, at a scan's start and each restart marker. */
static void guard_reset(jpeg_guard_state *g)
{
    stbi__jpeg_reset(g->j);
    g->zero_bits = 0;
}

/* stb's reader calls, each after guard_fill. */
static int g_huff(jpeg_guard_state *g, stbi__huffman *h)
{
    guard_fill(g);
    return stbi__jpeg_huff_decode(g->j, h);
}

static int g_receive(jpeg_guard_state *g, int n)
{
    guard_fill(g);
    return stbi__extend_receive(g->j, n);
}

static int g_bits(jpeg_guard_state *g, int n)
{
    guard_fill(g);
    return stbi__jpeg_get_bits(g->j, n);
}

static int g_bit(jpeg_guard_state *g)
{
    guard_fill(g);
    return stbi__jpeg_get_bit(g->j);
}

/* The refill stb does before a block or a fast-path lookup. */
static void g_grow(jpeg_guard_state *g, int below)
{
    guard_fill(g);
    if (g->j->code_bits < below)
        stbi__grow_buffer_unsafe(g->j);
}

/* stbi__jpeg_decode_block (baseline) or stbi__jpeg_decode_block_prog_dc
 * (progressive DC), consuming exactly the same bits, with the DC
 * arithmetic checked.  nz: the block's nonzero-coefficient mask (progressive
 * only), which a first DC scan clears as stb clears the block. */
static int guard_block_dc(jpeg_guard_state *g, int n, uint64_t *nz)
{
    stbi__jpeg *z = g->j;
    stbi__huffman *hdc = z->huff_dc + z->img_comp[n].hd;
    int64_t scale;
    if (z->progressive) {
        if (z->spec_end != 0)
            return BLOCK_STB_FAILS; /* "can't merge dc and ac" */
        g_grow(g, 16);
        if (z->succ_high != 0) { /* DC refinement: one bit, no arithmetic */
            (void)g_bit(g);
            return data_left(g) ? BLOCK_OK : BLOCK_DATA_ENDED;
        }
        *nz = 0;
        scale = (int64_t)1 << z->succ_low;
    } else {
        g_grow(g, 16);
        scale = z->dequant[z->img_comp[n].tq][0];
    }
    int t = g_huff(g, hdc);
    if (t < 0 || t > 15)
        return BLOCK_STB_FAILS;
    int diff = t ? g_receive(g, t) : 0;
    if (!data_left(g))
        return BLOCK_DATA_ENDED;
    int64_t dc = (int64_t)z->img_comp[n].dc_pred + diff;
    if (!dc_fits(dc, scale))
        return BLOCK_DC_OVERFLOW;
    z->img_comp[n].dc_pred = (int)dc;
    if (z->progressive)
        return BLOCK_OK;

    /* The AC coefficients, only to consume their bits as stb does. */
    int ha = z->img_comp[n].ha;
    stbi__huffman *hac = z->huff_ac + ha;
    stbi__int16 *fac = z->fast_ac[ha];
    int k = 1;
    do {
        g_grow(g, 16);
        int c = (int)((z->code_buffer >> (32 - FAST_BITS)) & ((1 << FAST_BITS) - 1));
        int r = fac[c];
        if (r) { /* stb's fast path: run, length and value in one entry */
            k += (r >> 4) & 15;
            int s = r & 15;
            z->code_buffer <<= s;
            z->code_bits -= s;
            k++;
        } else {
            int rs = g_huff(g, hac);
            if (rs < 0)
                return BLOCK_STB_FAILS;
            int s = rs & 15;
            if (s == 0) {
                if (rs != 0xf0)
                    break; /* end of block */
                k += 16;
            } else {
                k += rs >> 4;
                (void)g_receive(g, s);
                k++;
            }
        }
        if (!data_left(g))
            return BLOCK_DATA_ENDED;
    } while (k < 64);
    return data_left(g) ? BLOCK_OK : BLOCK_DATA_ENDED;
}

/* Marks natural-order coefficient `zig` of a block nonzero or zero. */
static void set_nz(uint64_t *nz, unsigned zig, int nonzero)
{
    if (nonzero)
        *nz |= (uint64_t)1 << zig;
    else
        *nz &= ~((uint64_t)1 << zig);
}

/* stbi__jpeg_decode_block_prog_ac, consuming exactly the same bits.  A
 * refinement scan reads a correction bit for every coefficient already
 * nonzero, so the mask nz of nonzero coefficients is all the block state
 * kept (stb keeps the coefficients: 128 bytes a block against 8). */
static int guard_block_ac(jpeg_guard_state *g, int ha, uint64_t *nz)
{
    stbi__jpeg *z = g->j;
    stbi__huffman *hac = z->huff_ac + ha;
    stbi__int16 *fac = z->fast_ac[ha];
    if (z->spec_start == 0)
        return BLOCK_STB_FAILS; /* "can't merge dc and ac" */
    if (z->succ_high == 0) { /* first scan of this band */
        int shift = z->succ_low;
        if (z->eob_run) {
            --z->eob_run;
            return BLOCK_OK;
        }
        int k = z->spec_start;
        do {
            g_grow(g, 16);
            int c = (int)((z->code_buffer >> (32 - FAST_BITS)) & ((1 << FAST_BITS) - 1));
            int r = fac[c];
            if (r) {
                k += (r >> 4) & 15;
                int s = r & 15;
                z->code_buffer <<= s;
                z->code_bits -= s;
                set_nz(nz, stbi__jpeg_dezigzag[k++], (short)((r >> 8) * (1 << shift)) != 0);
            } else {
                int rs = g_huff(g, hac);
                if (rs < 0)
                    return BLOCK_STB_FAILS;
                int s = rs & 15;
                r = rs >> 4;
                if (s == 0) {
                    if (r < 15) {
                        z->eob_run = 1 << r;
                        if (r)
                            z->eob_run += g_bits(g, r);
                        --z->eob_run;
                        return data_left(g) ? BLOCK_OK : BLOCK_DATA_ENDED;
                    }
                    k += 16;
                } else {
                    k += r;
                    unsigned zig = stbi__jpeg_dezigzag[k++];
                    set_nz(nz, zig, (short)(g_receive(g, s) * (1 << shift)) != 0);
                }
            }
            if (!data_left(g))
                return BLOCK_DATA_ENDED;
        } while (k <= z->spec_end);
        return data_left(g) ? BLOCK_OK : BLOCK_DATA_ENDED;
    }
    /* Refinement: one correction bit per nonzero coefficient of the band,
     * new coefficients (+-1 << Al) placed after runs of zero ones.  Adding
     * the correction never makes a coefficient zero. */
    if (z->eob_run) {
        --z->eob_run;
        for (int k = z->spec_start; k <= z->spec_end; ++k) {
            if (*nz >> stbi__jpeg_dezigzag[k] & 1) {
                (void)g_bit(g);
                if (!data_left(g))
                    return BLOCK_DATA_ENDED;
            }
        }
        return BLOCK_OK;
    }
    int k = z->spec_start;
    do {
        int rs = g_huff(g, hac);
        if (rs < 0)
            return BLOCK_STB_FAILS;
        int s = rs & 15, r = rs >> 4;
        if (s == 0) {
            if (r < 15) {
                z->eob_run = (1 << r) - 1;
                if (r)
                    z->eob_run += g_bits(g, r);
                r = 64; /* no new coefficient: corrections to the band's end */
            }           /* r == 15: a run of 16 zeros (s = 0 is written) */
        } else {
            if (s != 1)
                return BLOCK_STB_FAILS;
            (void)g_bit(g); /* sign: the new value is nonzero */
        }
        if (!data_left(g))
            return BLOCK_DATA_ENDED;
        while (k <= z->spec_end) {
            unsigned zig = stbi__jpeg_dezigzag[k++];
            if (*nz >> zig & 1) {
                (void)g_bit(g);
                if (!data_left(g))
                    return BLOCK_DATA_ENDED;
            } else {
                if (r == 0) {
                    set_nz(nz, zig, s != 0);
                    break;
                }
                --r;
            }
        }
    } while (k <= z->spec_end);
    return BLOCK_OK;
}

/* One block of component n at block coordinates (bx, by) of its
 * coefficient grid, dispatched as stbi__parse_entropy_coded_data does. */
static int guard_block(jpeg_guard_state *g, int n, int bx, int by, int interleaved)
{
    stbi__jpeg *z = g->j;
    uint64_t none = 0;
    uint64_t *nz = g->nz[n] ? &g->nz[n][(size_t)by * (size_t)g->nz_w[n] + (size_t)bx] : &none;
    if (z->progressive && !interleaved && z->spec_start != 0)
        return guard_block_ac(g, z->img_comp[n].ha, nz);
    return guard_block_dc(g, n, nz);
}

/* One MCU (or block) of the restart interval done, as stb counts them: 1
 * when the scan ends there (no RST marker follows), else 0, with the guard
 * reset at an RST marker. */
static int interval_ends(jpeg_guard_state *g)
{
    if (--g->j->todo > 0)
        return 0;
    g_grow(g, 24);
    if (!STBI__RESTART(g->j->marker))
        return 1;
    guard_reset(g);
    return 0;
}

/* The current scan's data, walked as stbi__parse_entropy_coded_data does
 * (same block order, same restart handling).  Returns as the blocks. */
static int guard_scan(jpeg_guard_state *g)
{
    stbi__jpeg *z = g->j;
    guard_reset(g);
    if (z->scan_n == 1) {
        int n = z->order[0];
        int w = (z->img_comp[n].x + 7) >> 3, h = (z->img_comp[n].y + 7) >> 3;
        for (int j = 0; j < h; ++j) {
            for (int i = 0; i < w; ++i) {
                int r = guard_block(g, n, i, j, 0);
                if (r != BLOCK_OK)
                    return r;
                if (interval_ends(g))
                    return BLOCK_OK;
            }
        }
        return BLOCK_OK;
    }
    for (int j = 0; j < z->img_mcu_y; ++j) {
        for (int i = 0; i < z->img_mcu_x; ++i) {
            for (int k = 0; k < z->scan_n; ++k) {
                int n = z->order[k];
                for (int y = 0; y < z->img_comp[n].v; ++y) {
                    for (int x = 0; x < z->img_comp[n].h; ++x) {
                        int r = guard_block(g, n, i * z->img_comp[n].h + x,
                                            j * z->img_comp[n].v + y, 1);
                        if (r != BLOCK_OK)
                            return r;
                    }
                }
            }
            if (interval_ends(g))
                return BLOCK_OK;
        }
    }
    return BLOCK_OK;
}

/* Blocks the current scan makes stb decode (its loops in
 * stbi__parse_entropy_coded_data). */
static uint64_t scan_blocks(const stbi__jpeg *z)
{
    if (z->scan_n == 1) {
        int n = z->order[0];
        return (uint64_t)((z->img_comp[n].x + 7) >> 3) * (uint64_t)((z->img_comp[n].y + 7) >> 3);
    }
    uint64_t per_mcu = 0;
    for (int k = 0; k < z->scan_n; ++k)
        per_mcu += (uint64_t)(z->img_comp[z->order[k]].h * z->img_comp[z->order[k]].v);
    return (uint64_t)z->img_mcu_x * (uint64_t)z->img_mcu_y * per_mcu;
}

/* The frame geometry stbi__process_frame_header computes in load mode
 * (the guard parses the frame in header mode, which allocates nothing),
 * and for a progressive file the nonzero masks.  Returns 1, 0 where stb
 * would refuse the sampling factors, -1 when out of memory. */
static int guard_frame(jpeg_guard_state *g)
{
    stbi__jpeg *z = g->j;
    int n = z->s->img_n, h_max = 1, v_max = 1;
    for (int i = 0; i < n; ++i) {
        if (z->img_comp[i].h > h_max)
            h_max = z->img_comp[i].h;
        if (z->img_comp[i].v > v_max)
            v_max = z->img_comp[i].v;
    }
    for (int i = 0; i < n; ++i)
        if (h_max % z->img_comp[i].h != 0 || v_max % z->img_comp[i].v != 0)
            return 0; /* stb: "bad H" / "bad V" */
    z->img_h_max = h_max;
    z->img_v_max = v_max;
    z->img_mcu_w = h_max * 8;
    z->img_mcu_h = v_max * 8;
    z->img_mcu_x = (int)((z->s->img_x + (unsigned)z->img_mcu_w - 1) / (unsigned)z->img_mcu_w);
    z->img_mcu_y = (int)((z->s->img_y + (unsigned)z->img_mcu_h - 1) / (unsigned)z->img_mcu_h);
    g->blocks = 0;
    for (int i = 0; i < n; ++i) {
        z->img_comp[i].x = (int)((z->s->img_x * (unsigned)z->img_comp[i].h + (unsigned)h_max - 1) /
                                 (unsigned)h_max);
        z->img_comp[i].y = (int)((z->s->img_y * (unsigned)z->img_comp[i].v + (unsigned)v_max - 1) /
                                 (unsigned)v_max);
        size_t gw = (size_t)z->img_mcu_x * (size_t)z->img_comp[i].h;
        size_t gh = (size_t)z->img_mcu_y * (size_t)z->img_comp[i].v;
        g->blocks += gw * gh; /* <= 4 * 2^30 / 64: no overflow */
        if (z->progressive && !g->plan) {
            g->nz_w[i] = (int)gw;
            g->nz[i] = calloc(gw * gh, sizeof *g->nz[i]);
            if (!g->nz[i])
                return -1;
        }
    }
    return 1;
}

/* Bytes of pixel memory stb 2.27 holds at its peak decoding the frame
 * guard_frame sized (g->blocks) to 8-bit RGB: stbi__process_frame_header
 * allocates every component's MCU-padded plane (1 byte a sample: 64 a
 * block) and, for a progressive file, its coefficients (2 bytes a sample:
 * 128 a block), all at once; load_jpeg_image then allocates the 3-byte RGB
 * output while they are alive.  Rows, alignment slack and the decoder's
 * own state (under 100 KB) are not counted, as png_decode_bytes leaves out
 * the compressed data.  At the image's own size (no MCU padding):
 *   grey: 4 bytes a pixel, 6 progressive;
 *   YCbCr 4:2:0: 4.5, progressive 7.5; 4:2:2: 5, 9; 4:4:4: 6, 12;
 *   CMYK / YCCK 4:4:4: 7, progressive 15 (the bomb of 7000x7000 pixels
 *   and 60 refinement scans in 4.7 KB: 719 MB). */
static uint64_t jpeg_decode_bytes(const jpeg_guard_state *g)
{
    const stbi__jpeg *z = g->j;
    uint64_t per_block = z->progressive ? 64 + 128 : 64;
    return g->blocks * per_block + 3 * (uint64_t)z->s->img_x * z->s->img_y;
}

/* Whether the frame's decoding fits the caller's byte budget.  The pixel
 * budget counts the image's pixels but stb stores whole MCUs (up to 15
 * more columns and rows): the padding is given the same bytes a pixel, so
 * that every 1- or 3-component JPEG of the pixel budget loads (12 bytes a
 * padded pixel at most, progressive 4:4:4). */
static int jpeg_fits_budget(const jpeg_guard_state *g)
{
    const stbi__jpeg *z = g->j;
    uint64_t px = (uint64_t)z->s->img_x * z->s->img_y;
    uint64_t padded = (uint64_t)z->img_mcu_x * (uint64_t)z->img_mcu_w * (uint64_t)z->img_mcu_y *
                      (uint64_t)z->img_mcu_h; /* < 2^30: no overflow below */
    uint64_t grant = (padded - px) * IMG_DECODE_BYTES_PER_PIXEL;
    return g->need <= g->max_bytes || g->need - g->max_bytes <= grant;
}

/* Planning walk, at an SOS header just parsed: skips the scan's
 * entropy-coded data to the marker that ends it, as jpeg_dht_safe does
 * (stb's reader stops at the same marker), leaving it in z->marker as
 * stb's reader does; returns 0 if the data is too short for `blocks`
 * blocks of the scan, else 1.  The least a block can take: a sequential
 * block codes a DC and an AC symbol (a Huffman code is at least 1 bit), a
 * progressive DC block (first or refinement) 1 bit; an AC scan can cover
 * 2^15 - 1 blocks with one EOB-run code.  The data's length counts
 * stuffed zeros and RSTn markers too, so real files always pass; a scan
 * with far less (the zero-filled bombs) is refused before anything is
 * decoded. */
static int plan_scan_data(jpeg_guard_state *g, uint64_t blocks)
{
    stbi__jpeg *z = g->j;
    const uint8_t *d = g->data;
    size_t len = g->len, start = (size_t)(z->s->img_buffer - z->s->img_buffer_original);
    size_t pos = start, end = len;
    unsigned marker = STBI__MARKER_none;
    while (pos < len) {
        const uint8_t *ff = memchr(d + pos, 0xFF, len - pos);
        if (!ff)
            break;
        pos = (size_t)(ff - d);
        size_t q = pos + 1;
        while (q < len && d[q] == 0xFF)
            q++;
        unsigned x = byte_at(d, len, q);
        if (q < len && x != 0x00 && !(x >= 0xD0 && x <= 0xD7)) {
            end = pos;
            marker = x;
            pos = q + 1;
            break;
        }
        pos = q + 1;
    }
    if (marker == STBI__MARKER_none)
        pos = len;
    z->s->img_buffer = z->s->img_buffer_original + pos;
    z->marker = (unsigned char)marker;

    uint64_t min_bits;
    if (!z->progressive)
        min_bits = 2 * blocks;
    else if (z->scan_n == 1 && z->spec_start != 0)
        min_bits = (blocks + 32766) / 32767;
    else
        min_bits = blocks;
    return (uint64_t)(end - start) * 8 >= min_bits;
}

/* The walk of stbi__decode_jpeg_header + stbi__decode_jpeg_image. */
static guard_verdict jpeg_guard_walk(jpeg_guard_state *g)
{
    stbi__jpeg *z = g->j;
    z->marker = STBI__MARKER_none;
    int m = stbi__get_marker(z);
    if (!stbi__SOI(m))
        return GUARD_PASS;
    m = stbi__get_marker(z);
    while (!stbi__SOF(m)) {
        if (!guard_marker(g, m))
            return g->reason ? GUARD_REFUSE : GUARD_PASS;
        m = stbi__get_marker(z);
        while (m == STBI__MARKER_none) {
            if (stbi__at_eof(z->s))
                return GUARD_PASS;
            m = stbi__get_marker(z);
        }
    }
    z->progressive = stbi__SOF_progressive(m);
    if (!stbi__process_frame_header(z, STBI__SCAN_header))
        return GUARD_PASS;
    int f = guard_frame(g);
    if (f <= 0) {
        g->reason = f < 0 ? "out of memory" : NULL;
        return f < 0 ? GUARD_NOMEM : GUARD_PASS;
    }
    if (g->plan) { /* before stb allocates anything for the frame */
        g->need = jpeg_decode_bytes(g);
        if (!jpeg_fits_budget(g)) {
            g->reason = "decoding it needs more memory than the decoder's byte budget";
            return GUARD_TOO_MUCH;
        }
    }

    m = stbi__get_marker(z);
    while (!stbi__EOI(m)) {
        if (stbi__SOS(m)) {
            if (!stbi__process_scan_header(z))
                return GUARD_PASS;
            /* Both limits before any of the scan is decoded (and, as the
             * planning walk checks them, before any scan is decoded). */
            uint64_t blocks = scan_blocks(z);
            g->scans++;
            g->block_decodes += blocks;
            if (g->scans > IMG_JPEG_MAX_SCANS) {
                g->reason = "more than " IMG_STR(IMG_JPEG_MAX_SCANS) " scans";
                return GUARD_TOO_MUCH;
            }
            if (!z->progressive && g->block_decodes > g->blocks) {
                g->reason = "its scans decode the image's 8x8 blocks more than once (a "
                            "sequential JPEG codes each component in one scan)";
                return GUARD_TOO_MUCH;
            }
            if (g->block_decodes > (uint64_t)IMG_JPEG_MAX_PASSES * g->blocks) {
                g->reason = "its scans decode the image's 8x8 blocks more than " IMG_STR(
                    IMG_JPEG_MAX_PASSES) " times over";
                return GUARD_TOO_MUCH;
            }
            if (g->plan) {
                if (!plan_scan_data(g, blocks)) {
                    g->reason = "scan data too short for the blocks it codes (truncated or "
                                "forged)";
                    return GUARD_REFUSE;
                }
                m = stbi__get_marker(z);
                continue;
            }
            int r = guard_scan(g);
            if (r == BLOCK_DC_OVERFLOW || r == BLOCK_DATA_ENDED) {
                g->reason = r == BLOCK_DC_OVERFLOW ? "DC coefficient out of range"
                                                   : "scan data runs out before its blocks end";
                return GUARD_REFUSE;
            }
            if (r == BLOCK_STB_FAILS)
                return GUARD_PASS;
            if (z->marker == STBI__MARKER_none) { /* as stb: skip to the next 0xFF */
                while (!stbi__at_eof(z->s)) {
                    if (stbi__get8(z->s) == 255) {
                        z->marker = stbi__get8(z->s);
                        break;
                    }
                }
            }
        } else if (stbi__DNL(m)) {
            int ld = stbi__get16be(z->s);
            stbi__uint32 nl = (stbi__uint32)stbi__get16be(z->s);
            if (ld != 4 || nl != z->s->img_y)
                return GUARD_PASS;
        } else if (!guard_marker(g, m)) {
            return g->reason ? GUARD_REFUSE : GUARD_PASS;
        }
        m = stbi__get_marker(z);
    }
    return GUARD_PASS;
}

/* Runs the JPEG guard over data (len <= INT_MAX).  *reason is set unless
 * the verdict is GUARD_PASS. */
static guard_verdict jpeg_guard_run(const uint8_t *data, size_t len, int plan,
                                    uint64_t max_bytes, uint64_t *need, const char **reason)
{
    stbi__context ctx;
    stbi__start_mem(&ctx, data, (int)len);
    jpeg_guard_state g = {calloc(1, sizeof(stbi__jpeg)), data, len, 0, 0, 0, {NULL}, {0}, plan,
                          max_bytes, 0, 0, NULL};
    if (!g.j) {
        *reason = "out of memory";
        return GUARD_NOMEM;
    }
    g.j->s = &ctx; /* zeroed state, as stb's own (STBI_MALLOC zeroes) */
    guard_verdict v = jpeg_guard_walk(&g);
    for (int i = 0; i < 4; i++)
        free(g.nz[i]);
    free(g.j);
    *reason = g.reason;
    if (plan)
        *need = g.need;
    return v;
}

/* The JPEG guard: first the planning walk over all markers and scan
 * headers (pixel memory against max_bytes, with the need in *need; scan
 * count, block decodes, data length per scan: the whole file's work is
 * refused before any of it is done, in O(file) time), then the decoding
 * walk (DC range, data running out, DHT). */
static guard_verdict jpeg_guard(const uint8_t *data, size_t len, uint64_t max_bytes,
                                uint64_t *need, const char **reason)
{
    guard_verdict v = jpeg_guard_run(data, len, 1, max_bytes, need, reason);
    return v != GUARD_PASS ? v : jpeg_guard_run(data, len, 0, max_bytes, need, reason);
}

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

/* The size of Adam7 pass p (0..6) of a w x h image: the pass holds the
 * pixels at (xorig + i * xspc, yorig + j * yspc). */
static void adam7_pass(uint32_t w, uint32_t h, int p, uint64_t *pw, uint64_t *ph)
{
    static const uint32_t xorig[7] = {0, 4, 0, 2, 0, 1, 0}, yorig[7] = {0, 0, 4, 0, 2, 0, 1};
    static const uint32_t xspc[7] = {8, 8, 4, 4, 2, 2, 1}, yspc[7] = {8, 8, 8, 4, 4, 2, 2};
    *pw = ((uint64_t)w + xspc[p] - 1 - xorig[p]) / xspc[p];
    *ph = ((uint64_t)h + yspc[p] - 1 - yorig[p]) / yspc[p];
}

/* Bytes of filtered scanlines a w x h PNG with this IHDR inflates to, or 0
 * for a header the PNG format forbids.  stb 2.27 accepts some of those
 * (any bit depth with colour types 2, 4 and 6, e.g. 1-bit grey+alpha);
 * PIL and libpng do not, and png_guard refuses them all, so that every
 * file stb decodes has been sized here. */
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
    uint64_t total = 0;
    for (int p = 0; p < 7; p++) {
        uint64_t pw, ph;
        adam7_pass(w, h, p, &pw, &ph);
        if (pw && ph)
            total += ph * (1 + (pw * bpp + 7) / 8);
    }
    return total;
}

/* Bytes of pixel memory stb 2.27 holds at its peak decoding a w x h PNG
 * with this IHDR (trns: a tRNS chunk precedes the data) to 8-bit RGB, given
 * raw, its inflated size (png_raw_size).  Its steps and what each holds at
 * once: inflate (raw) + unfilter into the image at the file's bit depth
 * (16-bit kept as 2 bytes a sample; tRNS on grey/RGB adds an alpha channel)
 * + for Adam7 one pass image at a time (the largest: pass 7, half the
 * rows, unless the image is tiny); palette expansion (indices + 3 or 4 bytes a pixel); conversion to
 * 3 channels at the file's depth; 16 to 8 bits.  The compressed data stb
 * also buffers is bounded by the file size, not counted here.  A 16-bit
 * RGBA Adam7 PNG needs 20 bytes a pixel (380 KB of zeros claiming 49
 * megapixels: ~1 GB), an 8-bit one at most ~10. */
static uint64_t png_decode_bytes(uint32_t w, uint32_t h, unsigned depth, unsigned color,
                                 unsigned interlace, int trns, uint64_t raw)
{
    static const unsigned channels[7] = {1, 0, 3, 1, 2, 0, 4};
    uint64_t px = (uint64_t)w * h; /* w, h <= IMG_STB_MAX_SIDE: no overflow below */
    uint64_t bps = depth == 16 ? 2 : 1;
    uint64_t n = channels[color] + (trns && color != 3 ? 1 : 0);
    uint64_t peak = raw + px * n * bps;
    if (interlace) { /* the largest Adam7 pass image, as png_raw_size sizes them */
        uint64_t most = 0;
        for (int p = 0; p < 7; p++) {
            uint64_t pw, ph;
            adam7_pass(w, h, p, &pw, &ph);
            if (pw * ph > most)
                most = pw * ph;
        }
        peak += most * n * bps;
    }
    if (color == 3) { /* stbi__expand_png_palette */
        n = trns ? 4 : 3;
        if (px + px * n > peak)
            peak = px + px * n;
    }
    if (n != 3 && px * (n + 3) * bps > peak) /* stbi__convert_format(16) */
        peak = px * (n + 3) * bps;
    if (bps == 2 && px * 9 > peak) /* stbi__convert_16_to_8 */
        peak = px * 9;
    return peak;
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

/* The big-endian 32-bit number at p (PNG lengths and sizes). */
static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Walks the chunks of a PNG (signature already checked by the caller) up
 * to IEND, inflating the IDAT data; with headers_only, stops at the first
 * IDAT (all stbi__png_info reads).  Otherwise, at the first IDAT, refuses
 * (GUARD_TOO_MUCH, *need set) a file whose decoding needs more than
 * max_bytes of pixel memory (png_decode_bytes), before inflating any of
 * it.  *reason is set unless the verdict is GUARD_PASS. */
static guard_verdict png_guard(const uint8_t *d, size_t len, int headers_only,
                               uint64_t max_bytes, uint64_t *need, const char **reason)
{
    png_inflate *st = calloc(1, sizeof *st);
    if (!st) {
        *reason = "out of memory";
        return GUARD_NOMEM;
    }
    guard_verdict v = GUARD_PASS;
    int have_ihdr = 0, trns = 0, sized = 0, plte = 0;
    const uint8_t *ihdr = NULL;
    uint32_t w = 0, h = 0; /* from IHDR */
    size_t pos = 8;
    for (;;) {
        if (len - pos < 8) {
            *reason = "truncated (no IEND chunk)";
            v = GUARD_REFUSE;
            break;
        }
        uint32_t clen = be32(d + pos);
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
            ihdr = body;
            w = be32(body);
            h = be32(body + 4);
            st->limit = png_raw_size(w, h, body[8], body[9], body[12]);
            if (st->limit == 0) { /* never let stb decode what was not sized */
                *reason = "bad IHDR (size, bit depth, colour type or interlace method)";
                v = GUARD_REFUSE;
                break;
            }
        } else if (memcmp(type, "CgBI", 4) == 0) {
            *reason = "Apple CgBI PNGs are not supported";
            v = GUARD_REFUSE;
            break;
        } else if (!have_ihdr) {
            break; /* stb: "first not IHDR" */
        } else if (memcmp(type, "IDAT", 4) == 0) {
            if (headers_only)
                break;
            if (!sized) { /* all chunks stb reads before the data are known */
                sized = 1;
                *need = png_decode_bytes(w, h, ihdr[8], ihdr[9], ihdr[12], trns, st->limit);
                if (*need > max_bytes) {
                    *reason = "decoding it needs more memory than the decoder's byte budget";
                    v = GUARD_TOO_MUCH;
                    break;
                }
            }
            v = png_feed(st, body, clen, reason);
            if (v != GUARD_PASS)
                break;
        } else if (memcmp(type, "IEND", 4) == 0) {
            if (!st->ended && st->hdr_have > 0) { /* no IDAT at all: stb says so */
                *reason = "truncated (compressed image data ends early)";
                v = GUARD_REFUSE;
            }
            break;
        } else if (memcmp(type, "tRNS", 4) == 0) {
            trns = 1;
        } else if (memcmp(type, "PLTE", 4) == 0) {
            /* One PLTE, before the data (PNG spec 5.6; libpng: "duplicate",
             * "out of place").  stb keeps the last of any number, anywhere,
             * and png_pad_palette pads each short one to 768 bytes: 3-byte
             * PLTEs would grow the copy 52x the file. */
            if (plte++ || sized) {
                *reason = sized ? "PLTE chunk after the image data" : "more than one PLTE chunk";
                v = GUARD_REFUSE;
                break;
            }
        } else if (!(type[0] & 0x20)) {
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

/* ---- Palettes shorter than the indices ---------------------------------
 *
 * stb 2.27 keeps a PNG's palette (palette[1024] in stbi__parse_png_file)
 * and a BMP's (pal[256][4] in stbi__bmp_load) in uninitialised stack
 * arrays and fills only the entries the file stores, yet looks up every
 * index a pixel holds: indices past the stored palette decode to stack
 * garbage (different from run to run; valgrind: "uninitialised value").
 * A BMP whose pixel data starts before the end of its header makes stb
 * compute a negative palette size and read no entry at all.
 * Refusing such files would need every index: unfiltering a PNG's whole
 * image, a pass over a BMP's.  PIL decodes them, reading an index past the
 * palette as grey (i, i, i) (its default palette), so stb is given a copy
 * whose palette is padded to 256 entries with that ramp: deterministic,
 * and the same pixels as PIL.  Costs one copy of the file, only for
 * palette files whose palette is short.  The negative BMP palette is
 * refused. */

/* Writes PIL's default palette entries first..255, (i, i, i), es bytes
 * each (a 4th byte, BMP's reserved one, is 0). */
static uint8_t *put_ramp(uint8_t *o, int first, int es)
{
    for (int i = first; i < 256; i++) {
        o[0] = o[1] = o[2] = (uint8_t)i;
        if (es == 4)
            o[3] = 0;
        o += es;
    }
    return o;
}

/* For a palette PNG (already passed by png_guard) whose PLTE chunk holds
 * fewer than 256 entries, makes *out a malloc'd copy with that PLTE padded
 * by put_ramp (CRC recomputed).  png_guard lets one PLTE through, so the
 * copy is at most 768 + 4 bytes longer than the file.  Returns 1 with a
 * copy, 0 if none is needed, -1 out of memory. */
static int png_pad_palette(const uint8_t *d, size_t len, uint8_t **out, size_t *out_len)
{
    size_t pos = 8, grow = 0;
    int palette = 0;
    for (int pass = 0; pass < 2; pass++) { /* 0: measure, 1: copy */
        uint8_t *o = NULL;
        if (pass == 1) {
            if (grow == 0)
                return 0;
            if (grow > (size_t)INT_MAX - len)
                return -1; /* stb reads at most INT_MAX bytes */
            *out = o = malloc(len + grow);
            if (!o)
                return -1;
            memcpy(o, d, 8);
            o += 8;
            pos = 8;
        }
        while (len - pos >= 8) {
            uint32_t clen = be32(d + pos);
            const uint8_t *type = d + pos + 4;
            if (clen > len - pos - 8)
                break; /* png_guard refused it; never reached */
            size_t whole = 8 + (size_t)clen + (len - pos - 8 - clen < 4 ? len - pos - 8 - clen : 4);
            if (memcmp(type, "IHDR", 4) == 0 && clen == 13)
                palette = d[pos + 8 + 9] == 3;
            int pad = palette && memcmp(type, "PLTE", 4) == 0 && clen > 0 && clen < 768 &&
                      clen % 3 == 0;
            if (pass == 0 && pad)
                grow += 768 - clen + 4; /* + a CRC the original may lack */
            if (pass == 1 && pad) {
                uint8_t *c = o;
                o[0] = 0, o[1] = 0, o[2] = 3, o[3] = 0; /* length 768 */
                memcpy(o + 4, type, 4 + clen);
                o = put_ramp(o + 8 + clen, (int)(clen / 3), 3);
                uint32_t crc = (uint32_t)crc32(crc32(0, NULL, 0), c + 4, 4 + 768);
                o[0] = (uint8_t)(crc >> 24), o[1] = (uint8_t)(crc >> 16);
                o[2] = (uint8_t)(crc >> 8), o[3] = (uint8_t)crc;
                o += 4;
            } else if (pass == 1) {
                memcpy(o, d + pos, whole);
                o += whole;
            }
            pos += whole;
            if (memcmp(type, "IEND", 4) == 0)
                break;
        }
        if (pass == 1) {
            memcpy(o, d + pos, len - pos); /* whatever follows IEND */
            o += len - pos;
            *out_len = (size_t)(o - *out);
        }
    }
    return 1;
}

/* For a palette BMP, the palette size stb 2.27 computes (stbi__bmp_load),
 * and if it is short of the indices the bit depth allows, a malloc'd copy
 * in *out with the palette padded by put_ramp and the pixel data offset
 * moved past it.  Returns 1 with a copy, 0 if none is needed (or stb
 * refuses the header itself), -1 out of memory, -2 for a negative
 * palette size (refused). */
static int bmp_pad_palette(const uint8_t *d, size_t len, uint8_t **out, size_t *out_len)
{
    if (len < 30)
        return 0;
    int32_t offset = (int32_t)((uint32_t)d[10] | (uint32_t)d[11] << 8 | (uint32_t)d[12] << 16 |
                               (uint32_t)d[13] << 24);
    uint32_t hsz = (uint32_t)d[14] | (uint32_t)d[15] << 8 | (uint32_t)d[16] << 16 |
                   (uint32_t)d[17] << 24;
    if (offset < 0 || (hsz != 12 && hsz != 40 && hsz != 56 && hsz != 108 && hsz != 124))
        return 0; /* stb: "bad BMP", "unknown BMP" */
    unsigned bpp = hsz == 12 ? (unsigned)d[24] | (unsigned)d[25] << 8
                             : (unsigned)d[28] | (unsigned)d[29] << 8;
    if (bpp != 1 && bpp != 4 && bpp != 8)
        return 0; /* no palette; stb refuses other depths under 16 */
    int64_t es = hsz == 12 ? 3 : 4;
    /* stb: (offset - 14 - 24) / 3 for OS/2 headers, (offset - 14 - hsz) >> 2 */
    int64_t room = (int64_t)offset - 14 - (hsz == 12 ? 24 : (int64_t)hsz);
    int64_t psize = hsz == 12 ? room / 3 : (room >= 0 ? room / 4 : -((-room + 3) / 4));
    if (psize < 0)
        return -2;
    if (psize == 0 || psize >= (1 << bpp) || psize > 256)
        return 0; /* stb refuses 0 and > 256; otherwise every index is stored */
    size_t at = 14 + hsz + (size_t)psize * (size_t)es, grow = (size_t)((256 - psize) * es);
    if (at > len || (uint64_t)offset + grow > INT32_MAX)
        return 0; /* image.c refused it as truncated; never reached */
    uint8_t *o = malloc(len + grow);
    if (!o)
        return -1;
    memcpy(o, d, at);
    put_ramp(o + at, (int)psize, (int)es);
    memcpy(o + at + grow, d + at, len - at);
    uint32_t noff = (uint32_t)offset + (uint32_t)grow;
    o[10] = (uint8_t)noff, o[11] = (uint8_t)(noff >> 8);
    o[12] = (uint8_t)(noff >> 16), o[13] = (uint8_t)(noff >> 24);
    *out = o;
    *out_len = len + grow;
    return 1;
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
    uint64_t need = 0;
    guard_verdict v =
        format == IMG_STB_PNG ? png_guard(data, len, 1, 0, &need, &reason) : GUARD_PASS;
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
    /* stbi__bmp_info reports a top-down BMP's (negative) height as it is
     * stored; stbi__bmp_load takes abs() of it and decodes top-down rows
     * upright.  INT_MIN has no abs(): refused as too large. */
    if (format == IMG_STB_BMP && *h < 0) {
        if (*h == INT_MIN) {
            img_stb_result r = {0, 1, 0, "too large"};
            return r;
        }
        *h = -*h;
    }
    img_stb_result r = {1, 0, 0, NULL};
    return r;
}

img_stb_result img_stb_decode_rgb(const uint8_t *data, size_t len, uint64_t max_bytes,
                                  uint64_t *need_bytes, uint8_t **pixels, int *w, int *h)
{
    *pixels = NULL;
    *need_bytes = 0;
    if (len > INT_MAX - 1024) {
        img_stb_result r = {0, 1, 0, "too large"};
        return r;
    }
    /* stbi_load_from_memory picks its reader by content, not by our
     * sniffing, so guard by what stb will see: its JPEG reader takes
     * anything starting with SOI, its PNG reader the 8-byte signature. */
    const char *reason = NULL;
    guard_verdict v = GUARD_PASS;
    int is_png = len >= 8 && memcmp(data, "\x89PNG\r\n\x1A\n", 8) == 0;
    int is_bmp = len >= 2 && data[0] == 'B' && data[1] == 'M';
    if (len >= 2 && data[0] == 0xFF && data[1] == 0xD8)
        v = jpeg_guard(data, len, max_bytes, need_bytes, &reason);
    else if (is_png)
        v = png_guard(data, len, 0, max_bytes, need_bytes, &reason);
    /* BMP needs no work guard: stb reads it row by row, bounded by its
     * dimensions, and image.c refuses files shorter than their rows. */
    if (v != GUARD_PASS) {
        img_stb_result r = {0, v == GUARD_TOO_MUCH, v == GUARD_NOMEM, reason};
        return r;
    }
    uint8_t *copy = NULL;
    size_t copy_len = 0;
    int pad = is_png ? png_pad_palette(data, len, &copy, &copy_len)
                     : is_bmp ? bmp_pad_palette(data, len, &copy, &copy_len) : 0;
    if (pad < 0) {
        img_stb_result r = {0, 0, pad == -1, pad == -1 ? "out of memory"
                                                       : "pixel data starts inside the header"};
        return r;
    }
    int channels_in_file = 0;
    /* req_comp = 3: stb converts grey -> RGB by replication and drops alpha
     * (stbi__convert_format copies the first three channels, no premultiply). */
    stbi_uc *p = pad ? stbi_load_from_memory(copy, (int)copy_len, w, h, &channels_in_file, 3)
                     : stbi_load_from_memory(data, (int)len, w, h, &channels_in_file, 3);
    free(copy);
    if (!p)
        return stb_failure();
    *pixels = p;
    img_stb_result ok = {1, 0, 0, NULL};
    return ok;
}
