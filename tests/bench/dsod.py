"""dsod.py — read and write DSOD named-tensor files (numpy).

The format is the one of include/dsonas/io/dump.hpp, little-endian:
  8 bytes magic "DSONASD1", u32 record count, then per record:
  u32 name length, name bytes (UTF-8, no NUL), u8 dtype (0 f32, 1 i32, 2 utf8 text),
  u32 ndim, ndim x i64 dims, then the elements (text: dims = {bytes}).

A file is represented as a dict name -> value, where a value is a numpy float32
array, a numpy int32 array, or a str (text record).  `write` stores the
records in byte order of their names, as the C++ writer (std::map) does.
"""
import struct

import numpy as np

MAGIC = b"DSONASD1"
_F32, _I32, _TEXT = 0, 1, 2


class DsodError(Exception):
    """A malformed DSOD file (the message names the path)."""


def read(path):
    """Reads a DSOD file into {name: np.float32 array | np.int32 array | str}."""
    with open(path, "rb") as f:
        buf = f.read()
    pos = 0

    def take(n):
        nonlocal pos
        if pos + n > len(buf):
            raise DsodError(f"dump: {path}: truncated")
        b = buf[pos:pos + n]
        pos += n
        return b

    if take(8) != MAGIC:
        raise DsodError(f"dump: {path}: bad magic")
    (count,) = struct.unpack("<I", take(4))
    out = {}
    for _ in range(count):
        (nlen,) = struct.unpack("<I", take(4))
        if nlen > 4096:
            raise DsodError(f"dump: {path}: bad name length")
        name = take(nlen).decode("utf-8")
        dtype = take(1)[0]
        (ndim,) = struct.unpack("<I", take(4))
        if ndim > 8 or dtype > 2:
            raise DsodError(f"dump: {path}: bad record {name}")
        dims = struct.unpack(f"<{ndim}q", take(8 * ndim))
        n = int(np.prod(dims, dtype=np.int64)) if ndim else 1
        if n < 0 or n > (1 << 32):
            raise DsodError(f"dump: {path}: bad dims for {name}")
        if dtype == _TEXT:
            out[name] = take(n).decode("utf-8")
        else:
            dt = np.dtype("<f4") if dtype == _F32 else np.dtype("<i4")
            arr = np.frombuffer(take(4 * n), dtype=dt).reshape(dims)
            out[name] = arr.astype(np.float32 if dtype == _F32 else np.int32)
    return out


def write(path, records):
    """Writes {name: array-like | str} as DSOD.

    Float arrays are stored as f32, integer arrays as i32, str as text.
    """
    parts = [MAGIC, struct.pack("<I", len(records))]
    for name in sorted(records, key=lambda s: s.encode("utf-8")):
        value = records[name]
        nb = name.encode("utf-8")
        parts.append(struct.pack("<I", len(nb)) + nb)
        if isinstance(value, str):
            data = value.encode("utf-8")
            parts.append(struct.pack("<BIq", _TEXT, 1, len(data)) + data)
            continue
        arr = np.asarray(value)
        if arr.dtype.kind in "iub":
            arr, dtype = arr.astype("<i4"), _I32
        elif arr.dtype.kind == "f":
            arr, dtype = arr.astype("<f4"), _F32
        else:
            raise TypeError(f"dsod.write: record {name}: unsupported dtype {arr.dtype}")
        parts.append(struct.pack("<BI", dtype, arr.ndim))
        parts.append(struct.pack(f"<{arr.ndim}q", *arr.shape))
        parts.append(np.ascontiguousarray(arr).tobytes())
    with open(path, "wb") as f:
        f.write(b"".join(parts))
