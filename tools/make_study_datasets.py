#!/usr/bin/python3
"""make_study_datasets.py - the data sets of bench/defaults_study.sh, built from
what Debian ships (dev-only: python3-pil, python3-sklearn, fonts-dejavu-core,
fonts-liberation, fonts-freefont-ttf; not needed by the tests or CI).

usage: tools/make_study_datasets.py OUTDIR

Writes ImageFolders OUTDIR/<set>/{train,test}/<class>/<n>.png:
  digits   sklearn's bundled 8x8 handwritten digits (1797, 10 classes), grey,
           white ink on black; a seeded stratified 70/30 split.
  letters  the capitals A-Z rendered black on white at 48x48 from every
           TrueType font under /usr/share/fonts (size, offset and a small
           rotation jittered per sample, seeded); split by font: every
           fourth font (sorted by path) is test only, so the test measures
           unseen typefaces.  Two samples per training font and letter, one
           per test font and letter.
Fashion-MNIST, the third set, is read from Debian's IDX files directly.
Deterministic: the same packages give the same files.
"""
import glob
import os
import random
import sys

from PIL import Image, ImageDraw, ImageFont


def save(img, root, split, cls, n):
    d = os.path.join(root, split, cls)
    os.makedirs(d, exist_ok=True)
    img.save(os.path.join(d, "%05d.png" % n))


def digits(out):
    from sklearn.datasets import load_digits
    x = load_digits()
    rng = random.Random(1)
    by_class = {}
    for i, y in enumerate(x.target):
        by_class.setdefault(int(y), []).append(i)
    n = 0
    for y, items in sorted(by_class.items()):
        rng.shuffle(items)
        cut = round(0.7 * len(items))
        for k, i in enumerate(items):
            px = (x.images[i] * (255.0 / 16.0)).round().clip(0, 255).astype("uint8")
            save(Image.fromarray(px, "L"), os.path.join(out, "digits"),
                 "train" if k < cut else "test", str(y), n)
            n += 1


def letters(out):
    fonts = sorted(glob.glob("/usr/share/fonts/**/*.ttf", recursive=True))
    fonts = [f for f in fonts if "Math" not in f]  # a math font draws no plain capitals
    rng = random.Random(2)
    n = 0
    for fi, path in enumerate(fonts):
        test = fi % 4 == 3
        for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
            for _ in range(1 if test else 2):
                size = rng.randint(26, 36)
                font = ImageFont.truetype(path, size)
                img = Image.new("L", (48, 48), 255)
                d = ImageDraw.Draw(img)
                l, t, r, b = d.textbbox((0, 0), c, font=font)
                x = (48 - (r - l)) / 2 - l + rng.uniform(-4, 4)
                y = (48 - (b - t)) / 2 - t + rng.uniform(-4, 4)
                d.text((x, y), c, fill=0, font=font)
                img = img.rotate(rng.uniform(-8, 8), resample=Image.BILINEAR, fillcolor=255)
                save(img.convert("RGB"), os.path.join(out, "letters"),
                     "test" if test else "train", c, n)
                n += 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    digits(sys.argv[1])
    letters(sys.argv[1])
