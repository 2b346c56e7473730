"""Deterministic pseudo-random tensors: a bit-exact numpy port of engine/randinit.c.

Element i of the tensor called `name` (a canonical name, see engine/vit.h) is

    h = fnv1a64(name) ^ seed
    z = splitmix64(h + i)                  (uint64 wrap-around)
    u = (z >> 40) * 2**-24                 (exact in [0, 1))
    v = float32((2u - 1) * scale + offset) (computed in float64)

with (scale, offset) from kind_for(name).  Dev-only; see README.md.
"""
import numpy as np

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1


def fnv1a64(name: str) -> int:
    h = _FNV_OFFSET
    for b in name.encode("utf-8"):
        h ^= b
        h = (h * _FNV_PRIME) & _MASK64
    return h


def splitmix64(x):
    """Vectorized splitmix64 finalizer on a numpy uint64 array (wraps mod 2**64)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z


def fill(n: int, name: str, seed: int, scale: float, offset: float) -> np.ndarray:
    """float32 array of n elements, identical to randinit_fill()."""
    h = np.uint64((fnv1a64(name) ^ (seed & _MASK64)) & _MASK64)
    with np.errstate(over="ignore"):
        idx = h + np.arange(n, dtype=np.uint64)  # wraps like the C uint64 sum
    z = splitmix64(idx)
    u = (z >> np.uint64(40)).astype(np.float64) * (1.0 / 16777216.0)
    # Same operation order as the C code (no fused multiply-add there: -std=c11).
    v = (2.0 * u - 1.0) * float(scale) + float(offset)
    return v.astype(np.float32)


def kind_for(name: str):
    """(scale, offset) for a canonical tensor name; same rule as randinit_kind_for()."""
    last = name.rfind(".")
    module = name[:last] if last >= 0 else name
    mod = module[module.rfind(".") + 1:]  # last component of the module path
    is_norm = mod.startswith("norm") or mod.startswith("fc_norm")
    if name.endswith("bias"):
        return 0.02, 0.0
    if is_norm and name.endswith(".weight"):
        return 0.1, 1.0
    return 0.035, 0.0


def tensor(name: str, shape, seed: int) -> np.ndarray:
    """randinit_tensor(): fill with kind_for(name), reshaped to `shape`."""
    shape = tuple(int(s) for s in shape)
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    scale, offset = kind_for(name)
    return fill(n, name, seed, scale, offset).reshape(shape)

