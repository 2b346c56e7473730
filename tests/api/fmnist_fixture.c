/*
 * fmnist_fixture.c - Fashion-MNIST ImageFolders and manifests for the API
 * tests (see fmnist_fixture.h).
 *
 * The IDX files are read with zlib's gz reader (the engine's IDX reader is
 * what the server uses; a second, independent one keeps the fixture from
 * sharing its bugs).  PNGs are encoded here too: greyscale, one IDAT, so the
 * bytes depend on nothing but the pixels and zlib's level-6 output.
 */
#include "fmnist_fixture.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zlib.h>

/* ---- IDX ---------------------------------------------------------------- */

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Reads exactly n bytes of g into buf; false at a short read or an error. */
static bool gz_exact(gzFile g, void *buf, size_t n)
{
    size_t done = 0;
    while (done < n) {
        unsigned want = n - done > (1u << 20) ? 1u << 20 : (unsigned)(n - done);
        int got = gzread(g, (uint8_t *)buf + done, want);
        if (got <= 0)
            return false;
        done += (size_t)got;
    }
    return true;
}

bool fm_source_load(fm_source *s)
{
    memset(s, 0, sizeof *s);
    gzFile gi = gzopen(FM_IMAGES, "rb"), gl = gzopen(FM_LABELS, "rb");
    bool ok = gi && gl;
    if (!ok)
        fprintf(stderr, "fm_source_load: cannot open %s or %s (install dataset-fashion-mnist)\n",
                FM_IMAGES, FM_LABELS);
    uint8_t hi[16], hl[8];
    ok = ok && gz_exact(gi, hi, 16) && gz_exact(gl, hl, 8);
    uint32_t n = ok ? be32(hi + 4) : 0;
    if (ok && (be32(hi) != 0x803 || be32(hl) != 0x801 || be32(hl + 4) != n ||
               be32(hi + 8) != FM_SIDE || be32(hi + 12) != FM_SIDE || n < 1000 || n > 100000)) {
        fprintf(stderr, "fm_source_load: unexpected IDX headers\n");
        ok = false;
    }
    if (ok) {
        s->n = (int)n;
        s->pixels = malloc((size_t)n * FM_SIDE * FM_SIDE);
        s->labels = malloc(n);
        ok = s->pixels && s->labels && gz_exact(gi, s->pixels, (size_t)n * FM_SIDE * FM_SIDE) &&
             gz_exact(gl, s->labels, n);
        for (uint32_t i = 0; ok && i < n; i++)
            ok = s->labels[i] < 10;
        if (!ok)
            fprintf(stderr, "fm_source_load: short or bad IDX data\n");
    }
    if (gi)
        gzclose(gi);
    if (gl)
        gzclose(gl);
    if (!ok)
        fm_source_free(s);
    return ok;
}

void fm_source_free(fm_source *s)
{
    free(s->pixels);
    free(s->labels);
    memset(s, 0, sizeof *s);
}

int fm_nth_of_class(const fm_source *s, int label, int k)
{
    for (int i = 0; i < s->n; i++)
        if (s->labels[i] == label && k-- == 0)
            return i;
    return -1;
}

/* ---- PNG ---------------------------------------------------------------- */

static uint8_t *put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
    return p + 4;
}

/* Writes one chunk (length, type, data, CRC over type and data) at p;
 * returns the end. */
static uint8_t *put_chunk(uint8_t *p, const char type[4], const uint8_t *data, uint32_t n)
{
    p = put32(p, n);
    uint8_t *crc_from = p;
    memcpy(p, type, 4);
    p += 4;
    if (n)
        memcpy(p, data, n);
    p += n;
    uLong crc = crc32(0L, crc_from, 4 + n);
    return put32(p, (uint32_t)crc);
}

uint8_t *fm_png_encode(const uint8_t *px, int w, int h, size_t *len)
{
    size_t raw_len = (size_t)h * ((size_t)w + 1);
    uint8_t *raw = malloc(raw_len);
    uLongf z_len = compressBound((uLong)raw_len);
    uint8_t *z = malloc(z_len);
    uint8_t *out = malloc(8 + 25 + 12 + z_len + 12);
    if (!raw || !z || !out) {
        free(raw);
        free(z);
        free(out);
        return NULL;
    }
    for (int y = 0; y < h; y++) {
        raw[(size_t)y * ((size_t)w + 1)] = 0; /* filter: none */
        memcpy(raw + (size_t)y * ((size_t)w + 1) + 1, px + (size_t)y * (size_t)w, (size_t)w);
    }
    if (compress2(z, &z_len, raw, (uLong)raw_len, 6) != Z_OK) {
        free(raw);
        free(z);
        free(out);
        return NULL;
    }
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    uint8_t ihdr[13], *q = ihdr;
    q = put32(q, (uint32_t)w);
    q = put32(q, (uint32_t)h);
    q[0] = 8; /* bit depth */
    q[1] = 0; /* greyscale */
    q[2] = q[3] = q[4] = 0; /* deflate, adaptive filtering, no interlace */
    uint8_t *p = out;
    memcpy(p, sig, 8);
    p += 8;
    p = put_chunk(p, "IHDR", ihdr, 13);
    p = put_chunk(p, "IDAT", z, (uint32_t)z_len);
    p = put_chunk(p, "IEND", NULL, 0);
    *len = (size_t)(p - out);
    free(raw);
    free(z);
    return out;
}

uint8_t *fm_png(const fm_source *s, int i, size_t *len)
{
    return fm_png_encode(s->pixels + (size_t)i * FM_SIDE * FM_SIDE, FM_SIDE, FM_SIDE, len);
}

/* ---- folders ------------------------------------------------------------ */

bool fm_mkdirs(const char *path)
{
    char buf[1024];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf)
        return false;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == 0) {
            char c = buf[i];
            buf[i] = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return false;
            buf[i] = c;
        }
    }
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool fm_write_folder(const fm_source *s, const fm_folder_spec *spec)
{
    char path[1024];
    for (int c = 0; c < spec->nclasses; c++) {
        snprintf(path, sizeof path, "%s/%s", spec->dir, spec->names[c]);
        if (!fm_mkdirs(path)) {
            fprintf(stderr, "fm_write_folder: cannot make %s: %s\n", path, strerror(errno));
            return false;
        }
        for (int k = spec->skip; k < spec->skip + spec->per_class; k++) {
            int i = fm_nth_of_class(s, spec->classes[c], k);
            if (i < 0) {
                fprintf(stderr, "fm_write_folder: class %d has fewer than %d images\n",
                        spec->classes[c], k + 1);
                return false;
            }
            size_t len;
            uint8_t *png = fm_png(s, i, &len);
            snprintf(path, sizeof path, "%s/%s/%d.png", spec->dir, spec->names[c], k);
            FILE *f = png ? fopen(path, "wb") : NULL;
            bool ok = f && fwrite(png, 1, len, f) == len;
            ok = f && fclose(f) == 0 && ok;
            free(png);
            if (!ok) {
                fprintf(stderr, "fm_write_folder: cannot write %s\n", path);
                return false;
            }
            const char *pre = spec->manifest_prefix ? spec->manifest_prefix : ".";
            if (spec->jsonl)
                fprintf(spec->jsonl, "{\"image\": \"%s/%s/%d.png\", \"label\": \"%s\"}\n", pre,
                        spec->names[c], k, spec->names[c]);
            if (spec->csv)
                fprintf(spec->csv, "%s/%s/%d.png,%s\n", pre, spec->names[c], k, spec->names[c]);
        }
    }
    return true;
}
