#!/usr/bin/python3
"""make_bad_safetensors.py - writes the small .safetensors fixtures used by the tests.

Plain Python (no safetensors package), so every byte is deliberate:

  tests/data/safetensors/
    good.safetensors         F32 tensors a [2,3], b [4], scalar c [], empty e [0,3] + metadata
    f16.safetensors          F16 h [12]: known bit patterns (subnormals, inf, nan, -0)
    bf16.safetensors         BF16 b [8]: known bit patterns
    bad_truncated.safetensors   good.safetensors minus its last 6 bytes
    bad_header_len.safetensors  header length larger than the file
    bad_header_huge.safetensors header length 2^40 (over ST_MAX_HEADER)
    bad_dtype.safetensors       dtype "Q4"
    bad_overlap.safetensors     two tensors sharing bytes 8..16
    bad_json.safetensors        correct length, header bytes are not JSON
    bad_mismatch.safetensors    shape [2,3] x F32 = 24 bytes but offsets span 20
    bad_metadata.safetensors    __metadata__ with a non-string value
    edge_end_exact.safetensors  last tensor ends exactly at the end of the file (odd length)
    bad_end_plus1.safetensors   U8 [4] at [0,4] with 3 data bytes: ends 1 byte past the data
    bad_end_plus4.safetensors   F32 [2] at [0,8] with 4 data bytes: a whole float past
    bad_header_plus1.safetensors  header length 1 more than the bytes that follow it
    bad_offset_huge.safetensors U8 [7] at [2^63-8, 2^63-1]: offsets near the int64 limit
    bad_empty_far.safetensors   empty tensor at offset 2^63-1, far past the data
    bad_numel_wrap.safetensors  F32 [2^62] at [0,0]: numel x 4 wraps to 0 in 64 bits

  tests/fuzz/corpus/safetensors/  the same files plus a few extra seeds.

The expected values live in tests/unit/test_safetensors.c; keep both in sync.
Run from anywhere: /usr/bin/python3 tools/reference/make_bad_safetensors.py
"""
import json
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA_DIR = os.path.join(ROOT, "tests", "data", "safetensors")
CORPUS_DIR = os.path.join(ROOT, "tests", "fuzz", "corpus", "safetensors")

# F16 bit patterns and their exact float values (checked by the C test).
F16_BITS = [
    0x0000,  # +0
    0x8000,  # -0
    0x3C00,  # 1.0
    0xC000,  # -2.0
    0x3555,  # 0.333251953125
    0x0001,  # smallest subnormal 2^-24
    0x03FF,  # largest subnormal 1023 * 2^-24
    0x0400,  # smallest normal 2^-14
    0x7BFF,  # largest finite 65504
    0x7C00,  # +inf
    0xFC00,  # -inf
    0x7E00,  # nan
]
BF16_BITS = [
    0x3F80,  # 1.0
    0xC040,  # -3.0
    0x8000,  # -0
    0x0001,  # subnormal 2^-133
    0x7F80,  # +inf
    0xFF80,  # -inf
    0x7FC0,  # nan
    0x3EAA,  # 0.33203125
]


def pack(header, data=b"", pad=True, header_len=None):
    """Builds a file from a header (dict or raw bytes) and a data section.

    dict headers are written compact with keys in insertion order and padded
    with spaces to a multiple of 8 bytes, like the reference writer.
    header_len overrides the stored length (to make bad files)."""
    if isinstance(header, dict):
        raw = json.dumps(header, separators=(",", ":")).encode()
    else:
        raw = header
    if pad:
        raw += b" " * (-len(raw) % 8)
    n = len(raw) if header_len is None else header_len
    return struct.pack("<Q", n) + raw + data


def f32(values):
    return struct.pack("<%df" % len(values), *values)


def u16(values):
    return struct.pack("<%dH" % len(values), *values)


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def good():
    a = [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5]
    b = [0.25, -8.0, 1024.0, 0.125]
    c = [42.0]
    header = {
        "__metadata__": {"format": "pt", "labels": '["cat","dog"]'},
        "a": entry("F32", [2, 3], 0, 24),
        "b": entry("F32", [4], 24, 40),
        "c": entry("F32", [], 40, 44),
        "e": entry("F32", [0, 3], 44, 44),
    }
    return pack(header, f32(a) + f32(b) + f32(c))


def fixtures():
    files = {}
    files["good.safetensors"] = good()
    files["f16.safetensors"] = pack(
        {"h": entry("F16", [len(F16_BITS)], 0, 2 * len(F16_BITS))}, u16(F16_BITS))
    files["bf16.safetensors"] = pack(
        {"__metadata__": {"format": "pt"},
         "b": entry("BF16", [2, 4], 0, 2 * len(BF16_BITS))}, u16(BF16_BITS))
    files["bad_truncated.safetensors"] = good()[:-6]
    small = pack({"x": entry("F32", [1], 0, 4)}, f32([1.0]))
    files["bad_header_len.safetensors"] = pack(
        {"x": entry("F32", [1], 0, 4)}, f32([1.0]), header_len=len(small) + 1000)
    files["bad_header_huge.safetensors"] = pack(
        {"x": entry("F32", [1], 0, 4)}, f32([1.0]), header_len=1 << 40)
    files["bad_dtype.safetensors"] = pack(
        {"w": entry("Q4", [4], 0, 4)}, bytes(4))
    files["bad_overlap.safetensors"] = pack(
        {"p": entry("F32", [4], 0, 16), "q": entry("F32", [4], 8, 24)}, bytes(24))
    files["bad_json.safetensors"] = pack(b"this is not json {\"a\": [1,", bytes(8))
    files["bad_mismatch.safetensors"] = pack(
        {"blocks.0.attn.qkv.weight": entry("F32", [2, 3], 0, 20)}, bytes(24))
    files["bad_metadata.safetensors"] = pack(
        {"__metadata__": {"epochs": 3}, "x": entry("F32", [1], 0, 4)}, f32([1.0]))
    # Bounds at the exact edge: the reader must accept a tensor that ends on
    # the last byte and refuse one that ends a single byte later.
    files["edge_end_exact.safetensors"] = pack(
        {"a": entry("F32", [2], 0, 8), "tail": entry("U8", [3], 8, 11)},
        f32([1.5, -2.0]) + bytes([7, 8, 9]))
    files["bad_end_plus1.safetensors"] = pack({"t": entry("U8", [4], 0, 4)}, bytes([1, 2, 3]))
    files["bad_end_plus4.safetensors"] = pack({"t": entry("F32", [2], 0, 8)}, f32([1.0]))
    one = pack({"x": entry("F32", [1], 0, 4)}, f32([1.0]))
    files["bad_header_plus1.safetensors"] = pack(
        {"x": entry("F32", [1], 0, 4)}, f32([1.0]), header_len=len(one) - 8 + 1)
    top = (1 << 63) - 1
    files["bad_offset_huge.safetensors"] = pack(
        {"t": entry("U8", [7], top - 7, top)}, bytes(8))
    files["bad_empty_far.safetensors"] = pack({"z": entry("F32", [0], top, top)}, bytes(8))
    files["bad_numel_wrap.safetensors"] = pack({"w": entry("F32", [1 << 62], 0, 0)}, bytes(8))
    return files


def extra_seeds():
    """Corpus-only seeds that reach other branches (dtypes, empty header)."""
    return {
        "seed_empty_header.safetensors": pack({}),
        "seed_dtypes.safetensors": pack(
            {"u8": entry("U8", [2, 2], 0, 4), "i64": entry("I64", [1], 4, 12),
             "bool": entry("BOOL", [3], 12, 15), "f64": entry("F64", [], 16, 24)},
            bytes(range(24))),
        "seed_unpadded.safetensors": pack(
            {"z": entry("F32", [1, 0, 5], 0, 0), "s": entry("F16", [], 0, 2)},
            u16([0x3C00]), pad=False),
    }


def write(directory, files):
    os.makedirs(directory, exist_ok=True)
    for name, blob in sorted(files.items()):
        with open(os.path.join(directory, name), "wb") as f:
            f.write(blob)
        print("%6d  %s" % (len(blob), os.path.relpath(os.path.join(directory, name), ROOT)))


def main():
    files = fixtures()
    write(DATA_DIR, files)
    write(CORPUS_DIR, dict(files, **extra_seeds()))


if __name__ == "__main__":
    main()
