"""Minimal safetensors writer (F32 only), byte-deterministic.  Dev-only.

File layout: u64 little-endian header length, JSON header, raw data.  The
header maps each tensor name to {"dtype": "F32", "shape": [...],
"data_offsets": [begin, end]} (offsets relative to the data section) and holds
an optional "__metadata__" string -> string map.  The JSON is padded with
spaces to a multiple of 8 bytes so the data section is 8-byte aligned.
Tensors are stored in the order given.
"""
import json
import struct

import numpy as np


def _as_f32_bytes(t):
    if hasattr(t, "detach"):  # torch tensor
        t = t.detach().cpu().numpy()
    a = np.ascontiguousarray(np.asarray(t), dtype="<f4")
    return list(a.shape), a.tobytes()


def dumps(tensors, metadata=None) -> bytes:
    """tensors: ordered mapping name -> array-like (converted to float32)."""
    header = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError("__metadata__ must map str -> str")
        header["__metadata__"] = dict(metadata)
    blobs, off = [], 0
    for name, t in tensors.items():
        if name == "__metadata__":
            raise ValueError("reserved tensor name")
        shape, data = _as_f32_bytes(t)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("utf-8")
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def save(path, tensors, metadata=None):
    with open(path, "wb") as f:
        f.write(dumps(tensors, metadata))


def load(path):
    """Reads back a file written by save() (F32 only): (dict name -> ndarray, metadata)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = raw[8 + n:]
    out = {}
    for name, info in header.items():
        assert info["dtype"] == "F32", info
        b, e = info["data_offsets"]
        out[name] = np.frombuffer(data[b:e], dtype="<f4").reshape(info["shape"])
    return out, meta
