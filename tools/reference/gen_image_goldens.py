#!/usr/bin/python3
"""Image fixtures and PIL/torchvision goldens for tests/unit/test_image.c.

Dev-only (PIL + torchvision, run with /usr/bin/python3 from the repo root):

    /usr/bin/python3 tools/reference/gen_image_goldens.py

Writes into tests/data/images/:
  * small photo fixtures made from skimage's sample data (PNG, JPEG, BMP, grey,
    grey+alpha, RGBA, palette), JPEGs carrying each EXIF orientation 2..8, and
    bad fixtures (corrupt, truncated, huge, GIF, empty, text);
  * goldens.safetensors: U8 tensors of shape (3, H, W) (CHW) holding
      decode/<file>   PIL's Image.open(file).convert("RGB")
      exif/<file>     ImageOps.exif_transpose(Image.open(file)).convert("RGB")
      resize/<case>   torchvision Resize + CenterCrop of the decoded source,
                      i.e. what ToTensor would see, before the /255
    and in __metadata__ the JSON strings "decode", "exif" and "cases" that tell
    the C test what each tensor is.
Also seeds tests/fuzz/corpus/image/ with a few tiny valid files.

The safetensors file is written by hand (8-byte LE header length, JSON header
space-padded to a multiple of 8, raw bytes) so no extra package is needed.
Every run produces the same bytes.
"""
import io
import json
import os
import struct
import zlib

import numpy as np
import PIL
import torchvision
from PIL import Image, ImageDraw, ImageOps
from torchvision import transforms
from torchvision.transforms import InterpolationMode

SKIMAGE = "/usr/lib/python3/dist-packages/skimage/data"
OUT = "tests/data/images"
CORPUS = "tests/fuzz/corpus/image"


def path(name):
    return os.path.join(OUT, name)


def skimage(name):
    return Image.open(os.path.join(SKIMAGE, name))


# ---------------------------------------------------------------- fixtures


def make_fixtures():
    """Writes the image files; returns nothing (the goldens re-read them)."""
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(CORPUS, exist_ok=True)

    # Photos.  LANCZOS downscale only makes the fixtures; the goldens below
    # start from the saved files.
    chelsea = skimage("chelsea.png").convert("RGB").resize((200, 133), Image.LANCZOS)
    chelsea.save(path("chelsea.png"), optimize=True)

    coffee = skimage("coffee.png").convert("RGB").resize((240, 160), Image.LANCZOS)
    coffee.save(path("coffee.jpg"), quality=90)

    astro = skimage("astronaut.png").convert("RGB").crop((96, 0, 416, 480))
    astro = astro.resize((160, 240), Image.LANCZOS)  # portrait, 2:3
    astro.save(path("astronaut_portrait.jpg"), quality=90)

    camera = skimage("camera.png").convert("L").resize((128, 128), Image.LANCZOS)
    camera.save(path("camera_grey.png"), optimize=True)

    rocket = skimage("rocket.jpg").convert("RGB").resize((96, 64), Image.LANCZOS)
    rocket.save(path("rocket.bmp"))

    # RGBA: chelsea with a horizontal alpha ramp (alpha must be dropped, not
    # premultiplied, exactly like convert("RGB")).
    small = chelsea.resize((96, 64), Image.LANCZOS)
    alpha = Image.linear_gradient("L").rotate(90).resize((96, 64))
    rgba = small.copy()
    rgba.putalpha(alpha)
    rgba.save(path("chelsea_rgba.png"), optimize=True)

    # Grey + alpha.
    la = camera.resize((48, 48), Image.LANCZOS).convert("LA")
    la.putalpha(Image.linear_gradient("L").resize((48, 48)))
    la.save(path("camera_la.png"))

    # Palette (mode P), 64x48.
    pal = coffee.resize((64, 48), Image.LANCZOS).quantize(colors=64)
    pal.save(path("coffee_palette.png"))

    # EXIF orientations 2..8 on an asymmetric 48x32 picture, 4:4:4 so that
    # libjpeg and stb differ only by IDCT rounding.
    base = coffee.resize((48, 32), Image.LANCZOS)
    draw = ImageDraw.Draw(base)
    draw.rectangle((0, 0, 11, 7), fill=(255, 0, 0))
    draw.rectangle((40, 24, 47, 31), fill=(0, 0, 255))
    for o in range(2, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        base.save(path("exif_orient_%d.jpg" % o), quality=95, subsampling=0,
                  exif=exif.tobytes())
    # Big-endian ("MM") EXIF block, orientation 6, hand-built.
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + struct.pack(">H", 1) + \
        struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0) + b"\x00\x00\x00\x00"
    base.save(path("exif_orient_6_be.jpg"), quality=95, subsampling=0,
              exif=b"Exif\x00\x00" + tiff)

    # ---- bad fixtures
    png = open(path("chelsea.png"), "rb").read()
    open(path("truncated.png"), "wb").write(png[: len(png) // 2])
    bmp = open(path("rocket.bmp"), "rb").read()
    open(path("truncated.bmp"), "wb").write(bmp[: len(bmp) * 2 // 3])
    jpg = open(path("coffee.jpg"), "rb").read()
    open(path("truncated.jpg"), "wb").write(jpg[: len(jpg) // 2])
    # A valid JPEG start (SOI, APP0, DQT) followed by garbage instead of SOF.
    sof = jpg.find(b"\xff\xc0")
    rng = np.random.RandomState(1234)
    garbage = bytes(rng.randint(0, 256, 600, dtype=np.uint8).tolist()).replace(b"\xff", b"\x00")
    open(path("corrupt.jpg"), "wb").write(jpg[:sof] + garbage)
    open(path("huge.png"), "wb").write(huge_png(100000, 100000))
    # A DHT whose 16 code counts sum to 1072 (> 256): stb 2.27 would write
    # past its Huffman arrays (heap corruption); image_stb.c must refuse it.
    dht = jpg.find(b"\xff\xc4")
    bad = bytearray(jpg)
    bad[dht + 5: dht + 21] = b"\x43" * 16
    open(path("bad_dht.jpg"), "wb").write(bytes(bad))
    gif = coffee.resize((32, 24), Image.LANCZOS).convert("P", palette=Image.ADAPTIVE)
    gif.save(path("sample.gif"))
    open(path("empty.jpg"), "wb").write(b"")
    open(path("not_image.txt"), "w").write("this is a text file, not an image\n")

    # ---- fuzz seeds (< 4 KB each)
    tiny = coffee.resize((16, 12), Image.LANCZOS)
    tiny.save(os.path.join(CORPUS, "tiny.jpg"), quality=80)
    tiny.save(os.path.join(CORPUS, "tiny_progressive.jpg"), quality=80, progressive=True)
    tiny.convert("L").save(os.path.join(CORPUS, "tiny_grey.jpg"), quality=80)
    tiny.save(os.path.join(CORPUS, "tiny.png"))
    rgba.resize((12, 8)).save(os.path.join(CORPUS, "tiny_rgba.png"))
    tiny.quantize(colors=8).save(os.path.join(CORPUS, "tiny_palette.png"))
    tiny.save(os.path.join(CORPUS, "tiny.bmp"))
    tiny.quantize(colors=16).save(os.path.join(CORPUS, "tiny_pal.bmp"))
    tiny.convert("P", palette=Image.ADAPTIVE).save(os.path.join(CORPUS, "tiny.gif"))
    small_exif = Image.Exif()
    small_exif[0x0112] = 6
    tiny.save(os.path.join(CORPUS, "tiny_exif6.jpg"), quality=80, exif=small_exif.tobytes())
    open(os.path.join(CORPUS, "huge.png"), "wb").write(huge_png(100000, 100000))


def huge_png(w, h):
    """A tiny but well-formed PNG (valid CRCs) whose IHDR claims w x h RGB."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + \
        chunk(b"IEND", b"")


# ---------------------------------------------------------------- goldens

# name, source file, resize_shorter (0 = both sides to the crop), crop_h,
# crop_w, interp.  Covers down- and upscaling, non-square crops, odd margins
# (Python's round-half-even), crops larger than the image (zero padding), a
# no-op resize, a tiny output (wide filter support) and a strong upscale.
CASES = [
    ("chelsea_bilinear_64_56", "chelsea.png", 64, 56, 56, "bilinear"),
    ("chelsea_bicubic_96_80x96", "chelsea.png", 96, 80, 96, "bicubic"),
    ("chelsea_bicubic_both_72x100", "chelsea.png", 0, 72, 100, "bicubic"),
    ("chelsea_modelscope_256_224", "chelsea.png", 256, 224, 224, "bilinear"),
    ("chelsea_bicubic_both_5x7", "chelsea.png", 0, 5, 7, "bicubic"),
    ("portrait_timm_71_64", "astronaut_portrait.jpg", 71, 64, 64, "bicubic"),
    ("portrait_hf_112", "astronaut_portrait.jpg", 0, 112, 112, "bilinear"),
    ("portrait_clip_192", "astronaut_portrait.jpg", 192, 192, 192, "bicubic"),
    ("coffee_bicubic_101_90", "coffee.jpg", 101, 90, 90, "bicubic"),
    ("coffee_bilinear_64_pad80", "coffee.jpg", 64, 80, 80, "bilinear"),
    ("coffee_bilinear_both_33x47", "coffee.jpg", 0, 33, 47, "bilinear"),
    ("camera_bilinear_both_150x200", "camera_grey.png", 0, 150, 200, "bilinear"),
    ("camera_bicubic_noop_128_100", "camera_grey.png", 128, 100, 100, "bicubic"),
    ("rocket_bicubic_48_48", "rocket.bmp", 48, 48, 48, "bicubic"),
    ("rgba_bicubic_both_64", "chelsea_rgba.png", 0, 64, 64, "bicubic"),
    ("palette_bicubic_both_120x160", "coffee_palette.png", 0, 120, 160, "bicubic"),
    ("palette_bilinear_both_100x70", "coffee_palette.png", 0, 100, 70, "bilinear"),
]

DECODE = [
    # file, exact (PNG/BMP decode must be bit-exact; JPEG decoders differ)
    ("chelsea.png", True),
    ("coffee.jpg", False),
    ("astronaut_portrait.jpg", False),
    ("camera_grey.png", True),
    ("rocket.bmp", True),
    ("chelsea_rgba.png", True),
    ("camera_la.png", True),
    ("coffee_palette.png", True),
]

EXIF = [("exif_orient_%d.jpg" % o, o) for o in range(2, 9)] + [("exif_orient_6_be.jpg", 6)]


def chw(img):
    a = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def resize_crop(img, rs, ch, cw, interp):
    mode = InterpolationMode.BILINEAR if interp == "bilinear" else InterpolationMode.BICUBIC
    size = rs if rs > 0 else (ch, cw)
    t = transforms.Compose([transforms.Resize(size, interpolation=mode),
                            transforms.CenterCrop((ch, cw))])
    return t(img)


def write_safetensors(fname, tensors, metadata):
    header = {"__metadata__": metadata}
    blobs, off = [], 0
    for name, arr in tensors:
        b = arr.tobytes()
        header[name] = {"dtype": "U8", "shape": list(arr.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(fname, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def make_goldens():
    tensors, cases, decode, exif = [], [], [], []
    for fname, exact in DECODE:
        a = chw(Image.open(path(fname)))
        tensors.append(("decode/" + fname, a))
        decode.append({"name": "decode/" + fname, "file": fname, "exact": exact})
    for fname, orient in EXIF:
        im = Image.open(path(fname))
        assert im.getexif().get(0x0112) == orient, fname
        a = chw(ImageOps.exif_transpose(im))
        tensors.append(("exif/" + fname, a))
        exif.append({"name": "exif/" + fname, "file": fname, "orientation": orient})
    for name, src, rs, ch, cw, interp in CASES:
        img = Image.open(path(src)).convert("RGB")
        out = resize_crop(img, rs, ch, cw, interp)
        assert out.size == (cw, ch), (name, out.size)
        tensors.append(("resize/" + name, chw(out)))
        cases.append({"name": "resize/" + name, "source": src, "resize_shorter": rs,
                      "crop_h": ch, "crop_w": cw, "interp": interp})
    meta = {
        "generator": "tools/reference/gen_image_goldens.py",
        "pil": PIL.__version__,
        "torchvision": torchvision.__version__,
        "decode": json.dumps(decode),
        "exif": json.dumps(exif),
        "cases": json.dumps(cases),
    }
    write_safetensors(path("goldens.safetensors"), tensors, meta)


if __name__ == "__main__":
    make_fixtures()
    make_goldens()
    for f in sorted(os.listdir(OUT)):
        print("%8d  %s" % (os.path.getsize(path(f)), f))
