#!/usr/bin/python3
"""Crafted image files for the decoder guards (issue 13, items 8-10).

Dev-only (PIL for three fixtures, everything else by hand), run from the
repo root:

    /usr/bin/python3 tools/reference/gen_image_seeds.py

Writes
  * tests/data/images/chelsea_prog.jpg, chelsea_prog444.jpg,
    chelsea_prog_grey.jpg: chelsea.png saved by PIL as progressive JPEG
    (libjpeg's default 10-scan script; 4:2:0, 4:4:4, grey), for
    test_jpeg_progressive: real progressive files must pass the guard;
  * tests/fuzz/corpus/image/ seeds for the shapes the guards look at, each
    a few hundred bytes: PNGs interlaced / 16-bit / palette with tRNS /
    grey+alpha, a 1x1 PNG inflating to 1 MiB (a small IDAT bomb), 16-bit
    RGBA Adam7 PNGs within and over fuzz_image's byte budget, a palette
    PNG and BMPs with short palettes (and a top-down one), a progressive
    JPEG with many scans (at the work limit, and one over), zero-filled
    scan bombs (empty scans, data running out), a 16-bit DQT JPEG, one
    with restart markers, the DC-overflow file and the bit-underflow file
    (crash-*: regression inputs for stb 2.27 bugs).
The unit tests build their own bombs in C (tests/unit/test_image.c); these
files only seed the fuzzer.  Every run writes the same bytes.
"""
import os
import struct
import zlib

from PIL import Image

IMAGES = "tests/data/images"
CORPUS = "tests/fuzz/corpus/image"

# ------------------------------------------------------------------ PNG


def png_chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def adam7_rows(w, h, bpp, interlace, pixel_bytes):
    """Filtered scanlines (filter 0), Adam7 passes when interlaced; the row
    bytes of each pass come from pixel_bytes(nbytes)."""
    passes = ([(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
               (1, 0, 2, 2), (0, 1, 1, 2)] if interlace else [(0, 0, 1, 1)])
    out = bytearray()
    for x0, y0, dx, dy in passes:
        cols = len(range(x0, w, dx))
        if cols == 0:
            continue
        for _ in range(y0, h, dy):
            out += b"\0" + pixel_bytes((cols * bpp + 7) // 8)
    return bytes(out)


def png(w, h, depth, color, interlace, raw, extra=b"", plte=None, trns=None):
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color]
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, interlace)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
    if plte is not None:
        out += png_chunk(b"PLTE", plte)
    if trns is not None:
        out += png_chunk(b"tRNS", trns)
    out += png_chunk(b"IDAT", zlib.compress(raw + extra, 9))
    return out + png_chunk(b"IEND", b"")


def counter():
    state = [0]

    def take(n):
        b = bytes((state[0] + i) * 37 % 251 for i in range(n))
        state[0] += n
        return b
    return take


def png_seeds():
    seeds = {}
    seeds["interlaced_rgb.png"] = png(13, 11, 8, 2, 1, adam7_rows(13, 11, 24, 1, counter()))
    seeds["interlaced_ga16.png"] = png(9, 7, 16, 4, 1, adam7_rows(9, 7, 32, 1, counter()))
    seeds["rgba16.png"] = png(5, 3, 16, 6, 0, adam7_rows(5, 3, 64, 0, counter()))
    pal = bytes(range(48))
    seeds["interlaced_pal2_trns.png"] = png(10, 6, 2, 3, 1, adam7_rows(10, 6, 2, 1, counter()),
                                            plte=pal, trns=b"\x00\x80\xff")
    seeds["grey1.png"] = png(17, 3, 1, 0, 0, adam7_rows(17, 3, 1, 0, counter()))
    # 1x1 RGB: 4 bytes of scanline, 1 MiB of zeros after them.
    seeds["idat_bomb_1x1.png"] = png(1, 1, 8, 2, 0, b"\0\x10\x20\x30", extra=bytes(1 << 20))
    # 16-bit RGBA Adam7, all zeros: stb holds ~20 bytes a pixel.  256x256
    # fits fuzz_image's byte budget (12 x 512 x 512), 512x512 is refused.
    for side in (256, 512):
        seeds[f"rgba16_adam7_{side}.png"] = png(side, side, 16, 6, 1,
                                                adam7_rows(side, side, 64, 1, bytes))
    # A 1-entry palette and indices 0..255: stb read entries 1..255 from
    # uninitialised stack; now padded as PIL reads them.
    idx = bytes(range(256))
    raw = b"".join(b"\0" + idx[16 * y:16 * y + 16] for y in range(16))
    seeds["palette_short.png"] = png(16, 16, 8, 3, 0, raw, plte=b"\x10\x20\x30")
    # Two short PLTEs, and one after IDAT (refused: each short PLTE was
    # padded to 768 bytes, 52x the file for a file of 3-byte PLTEs).
    f = seeds["palette_short.png"]
    at = f.index(b"IDAT") - 4
    seeds["plte_twice.png"] = f[:at] + png_chunk(b"PLTE", b"\x40\x50\x60") + f[at:]
    end = f.index(b"IEND") - 4
    seeds["plte_after_idat.png"] = f[:end] + png_chunk(b"PLTE", b"\x40\x50\x60") + f[end:]
    return seeds


def bmp_seeds():
    """8-bit BMPs with a 2-entry palette and indices 0..255: bottom-up,
    top-down (negative height), and with the pixel data offset inside the
    header (stb: negative palette size)."""
    rows = bytes(range(256))
    seeds = {}
    for name, height, offset in (("bmp_pal_short.bmp", 16, 62), ("bmp_pal_topdown.bmp", -16, 62),
                                 ("bmp_pal_offset0.bmp", 16, 0)):
        hdr = struct.pack("<IiiHHIIiiII", 40, 16, height, 1, 8, 0, 0, 0, 0, 0, 0)
        pal = bytes([255, 0, 1, 0, 254, 2, 2, 0])
        body = hdr + pal + rows
        seeds[name] = b"BM" + struct.pack("<IHHI", 14 + len(body), 0, 0, offset) + body
    return seeds

# ------------------------------------------------------------------ JPEG


def seg(marker, payload):
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def dht(tc, counts, syms):
    return seg(0xC4, bytes([tc << 4]) + bytes(counts) + bytes(syms))


def jpeg_head(progressive, w, h, hv, q16=False, q=1, dc_sym=0):
    """SOI, DQT 0 (all q), SOF0/SOF2 with components 1..n sampled hv[i],
    DC and AC table 0 each with one 1-bit code ("0") for dc_sym and EOB."""
    out = b"\xff\xd8"
    out += seg(0xDB, b"\x10" + struct.pack(">H", q) * 64 if q16 else b"\x00" + bytes([q]) * 64)
    comps = b"".join(bytes([i + 1, hv[i][0] << 4 | hv[i][1], 0]) for i in range(len(hv)))
    out += seg(0xC2 if progressive else 0xC0,
               bytes([8]) + struct.pack(">HH", h, w) + bytes([len(hv)]) + comps)
    one = [1] + [0] * 15
    return out + dht(0, one, [dc_sym]) + dht(1, one, [0])


def sos(ids, ss, se, ahal, data=b""):
    payload = bytes([len(ids)]) + b"".join(bytes([i, 0]) for i in ids) + bytes([ss, se, ahal])
    return seg(0xDA, payload) + data


class Bits:
    """MSB-first bit writer with 0xFF stuffing, padded with 1 bits."""

    def __init__(self):
        self.out, self.acc, self.n = bytearray(), 0, 0

    def put(self, v, n):
        for i in range(n - 1, -1, -1):
            self.acc = self.acc << 1 | (v >> i & 1)
            self.n += 1
            if self.n == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0)
                self.acc = self.n = 0

    def flush(self):
        while self.n:
            self.put(1, 1)
        return bytes(self.out)


def dc_max(blocks, ac=True):
    """Blocks of DC category 15, value +32767 (then EOB when ac)."""
    b = Bits()
    for _ in range(blocks):
        b.put(0, 1)
        b.put(0x7FFF, 15)
        if ac:
            b.put(0, 1)
    return b.flush()


def jpeg_seeds():
    seeds = {}
    one = [(1, 1)]
    # Progressive, one block: DC scan + 15 AC scans (each one EOB: "0" and
    # 1-bit padding) = 16 passes, the limit; one more scan is over it.
    base = jpeg_head(True, 8, 8, one) + sos([1], 0, 0, 0, b"\x7f")
    seeds["scans_at_limit.jpg"] = base + sos([1], 1, 63, 0, b"\x7f") * 15 + b"\xff\xd9"
    seeds["scans_over_limit.jpg"] = base + sos([1], 1, 63, 0, b"\x7f") * 16 + b"\xff\xd9"
    # The zero-fill bombs (refused now): 512x512 baseline, 16 scans without
    # data; and with an AC table reading zeros as coefficients (run 0, size
    # 1), a baseline scan and a progressive AC scan whose data runs out.
    seeds["zero_filled_scans.jpg"] = (jpeg_head(False, 512, 512, [(1, 1)] * 3)
                                      + sos([1, 2, 3], 0, 63, 0) * 16 + b"\xff\xd9")
    coef = dht(1, [1, 1] + [0] * 14, [0x01, 0x00])
    seeds["zero_fill_baseline.jpg"] = (jpeg_head(False, 64, 64, one) + coef
                                       + sos([1], 0, 63, 0, bytes(16)) + b"\xff\xd9")
    seeds["zero_fill_ac.jpg"] = (jpeg_head(True, 64, 64, one) + coef
                                 + sos([1], 0, 0, 0, b"\0" * 8) + sos([1], 1, 63, 0, b"\0")
                                 + b"\xff\xd9")
    # Three components 2x2/1x1/1x1, progressive, a DC scan then AC and
    # refinement scans of every band, as a (small) real script would; one
    # zero byte of data each (stb fails a refinement scan with none).
    hv = [(2, 2), (1, 1), (1, 1)]
    f = jpeg_head(True, 16, 16, hv) + sos([1, 2, 3], 0, 0, 1, b"\0")
    for c in (1, 2, 3):
        f += sos([c], 1, 5, 2, b"\0") + sos([c], 6, 63, 2, b"\0") + sos([c], 1, 63, 0x21, b"\0")
    f += sos([1, 2, 3], 0, 0, 0x10, b"\0")
    seeds["progressive_script.jpg"] = f + b"\xff\xd9"
    # Progressive CMYK holds 15 bytes a pixel in stb: 448x448 fits
    # fuzz_image's byte budget (12 x 512 x 512), 512x512 is refused.  One
    # interleaved DC scan, a zero bit ("0": DC 0) per block.
    for side in (448, 512):
        f = jpeg_head(True, side, side, [(1, 1)] * 4)
        f += sos([1, 2, 3, 4], 0, 0, 0, bytes(side * side * 4 // 64 // 8))
        seeds[f"cmyk_progressive_{side}.jpg"] = f + b"\xff\xd9"
    # 16-bit DQT, one block of DC +32767 (in range) and restarts every block.
    f = jpeg_head(False, 8, 8, one, q16=True, q=0xFFFF, dc_sym=15)
    seeds["dqt16.jpg"] = f + sos([1], 0, 63, 0, dc_max(1)) + b"\xff\xd9"
    d = b"\xff\xd0".join(dc_max(1) for _ in range(3))
    f = jpeg_head(False, 24, 8, one, q16=True, q=0xFFFF, dc_sym=15)
    seeds["restarts_dqt16.jpg"] = f + seg(0xDD, struct.pack(">H", 1)) + sos([1], 0, 63, 0, d) \
        + b"\xff\xd9"
    # stb 2.27 bugs (regression inputs): DC 65534 * 65535 overflows int;
    # data ending inside a block drives stb's bit count to -15.
    f = jpeg_head(False, 16, 8, one, q16=True, q=0xFFFF, dc_sym=15)
    seeds["crash-dc-overflow.jpg"] = f + sos([1], 0, 63, 0, dc_max(2)) + b"\xff\xd9"
    f = jpeg_head(False, 16, 8, one)
    f += dht(0, [1] + [0] * 14 + [1], [0, 15]) + dht(1, [0] * 14 + [1, 0], [0])
    seeds["crash-bit-underflow.jpg"] = f + sos([1], 0, 63, 0, b"\0\0\x80\0") + b"\xff\xd9"
    return seeds


def main():
    src = Image.open(os.path.join(IMAGES, "chelsea.png")).convert("RGB")
    src.save(os.path.join(IMAGES, "chelsea_prog.jpg"), quality=90, progressive=True)
    src.save(os.path.join(IMAGES, "chelsea_prog444.jpg"), quality=90, progressive=True,
             subsampling=0)
    src.convert("L").save(os.path.join(IMAGES, "chelsea_prog_grey.jpg"), quality=90,
                          progressive=True)
    seeds = png_seeds()
    seeds.update(jpeg_seeds())
    seeds.update(bmp_seeds())
    for name, data in sorted(seeds.items()):
        assert len(data) < 65536, name
        with open(os.path.join(CORPUS, name), "wb") as f:
            f.write(data)
        print(f"{CORPUS}/{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
