"""The wire format the server and `RemoteBackend` share: a JSON header plus compressed raw arrays.

One HTTP body (``application/x-medsegsuite``) carries a JSON ``meta`` object and any number of named
numpy arrays, never as JSON lists::

    b"MSSW" | u8 format version | u32 little-endian header length | header JSON (utf-8) | blobs...

Each header entry of ``arrays`` gives ``name, dtype, shape, codec ("zlib" | "raw"), bits`` (bool arrays
travel bit-packed), ``start, length`` (where its blob lies after the header) and, for a *crop*,
``offset`` + ``full_shape``: the receiver rebuilds a zero array of ``full_shape`` and writes the crop
at ``offset``. Masks travel as the bounding box of their true voxels, so a one-slice answer on a
512-slice volume costs one slice.

`unpack` is written for untrusted input: dtypes come from a whitelist, declared sizes are checked
against `Limits` *before* anything is decompressed (no zip bombs), blobs must decompress to exactly
their declared size, and floating arrays must be finite. Every problem raises `InputError`.
"""
from __future__ import annotations

import enum
import json
import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from .errors import InputError

MAGIC = b"MSSW"
FORMAT_VERSION = 1
CONTENT_TYPE = "application/x-medsegsuite"
_PREFIX = struct.Struct("<4sBI")

# dtypes accepted on the wire (little-endian on the wire whatever the host)
ALLOWED_DTYPES = frozenset({"bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64",
                            "int64", "float16", "float32", "float64"})


@dataclass(frozen=True)
class Limits:
    """What a receiver accepts. ``max_array_bytes`` bounds each *decompressed* array."""

    max_body_bytes: int = 512 * 2**20
    max_array_bytes: int = 4 * 2**30
    max_header_bytes: int = 4 * 2**20
    max_arrays: int = 64
    max_ndim: int = 4
    max_total_bytes: int = 16 * 2**30  # all arrays of one message together, decompressed
    max_depth: int = 32                # JSON nesting of the header


DEFAULT_LIMITS = Limits()


def json_default(o):
    """Lets task params/info holding numpy scalars or small arrays travel as JSON."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, enum.Enum):
        return o.value
    return str(o)  # paths, dates and the like: a report should never fail to travel


def dumps(obj) -> bytes:
    """JSON (NaN/Infinity allowed: a metric of an empty mask may be one)."""
    return json.dumps(obj, default=json_default, separators=(",", ":")).encode()


def bounding_box(mask: np.ndarray) -> tuple[tuple[int, ...], tuple[slice, ...]] | None:
    """(offset, slices) of the smallest box holding every non-zero voxel; None for an empty mask."""
    sl = [slice(0, n) for n in mask.shape]
    for ax in reversed(range(mask.ndim)):  # each pass only scans the box found so far
        sub = mask[tuple(sl)]
        other = tuple(a for a in range(mask.ndim) if a != ax)
        nz = np.flatnonzero(sub.any(axis=other) if other else sub)
        if nz.size == 0:
            return None
        sl[ax] = slice(sl[ax].start + int(nz[0]), sl[ax].start + int(nz[-1]) + 1)
    return tuple(s.start for s in sl), tuple(sl)


class Crop:
    """Marks an array to send as the bounding box of its non-zero voxels (bool/integer masks)."""

    def __init__(self, array):
        self.array = np.asarray(array)


def _encode_one(name: str, a: np.ndarray, level: int, crop: bool):
    entry: dict = {"name": str(name)}
    a = np.asarray(a)
    if a.dtype.name not in ALLOWED_DTYPES:
        raise InputError(f"array '{name}' has dtype {a.dtype}; the wire accepts {sorted(ALLOWED_DTYPES)}")
    if crop and a.ndim >= 1:
        bb = bounding_box(a)
        entry["full_shape"] = list(a.shape)
        if bb is None:
            entry["offset"] = [0] * a.ndim
            a = a[tuple(slice(0, 0) for _ in range(a.ndim))]
        else:
            entry["offset"] = list(bb[0])
            a = a[bb[1]]
    entry["dtype"] = a.dtype.name
    entry["shape"] = list(a.shape)
    if a.dtype == bool:
        raw = np.packbits(a.ravel(), bitorder="little").tobytes()
        entry["bits"] = True
    else:
        raw = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
    blob = zlib.compress(raw, level) if raw and level is not None else raw
    if level is None or len(blob) >= 0.9 * len(raw):  # incompressible (e.g. noise): skip the work on the other end
        entry["codec"], blob = "raw", raw
    else:
        entry["codec"] = "zlib"
    return entry, blob


def pack(meta: dict | None = None, arrays: dict | None = None, level: int | None = 1) -> bytes:
    """One body from a JSON-able ``meta`` and ``{name: ndarray | Crop}``; ``level=None`` sends raw
    bytes (a local pipe, where compressing costs more than it saves)."""
    entries, blobs, pos = [], [], 0
    for name, a in (arrays or {}).items():
        crop = isinstance(a, Crop)
        entry, blob = _encode_one(name, a.array if crop else a, level, crop)
        entry["start"], entry["length"] = pos, len(blob)
        pos += len(blob)
        entries.append(entry)
        blobs.append(blob)
    header = dumps({"meta": meta or {}, "arrays": entries})
    return b"".join([_PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)), header, *blobs])


def _int_list(v, what: str, name: str, ndim_max: int) -> list[int]:
    if (not isinstance(v, list) or len(v) > ndim_max
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)):
        raise InputError(f"array '{name}': {what} must be a list of at most {ndim_max} non-negative integers")
    return v


def _checked_entry(entry, limits: Limits) -> tuple[str, str, list]:
    """(name, dtype, shape) of an array entry, each checked before anything is allocated."""
    if not isinstance(entry, dict):
        raise InputError("malformed array entry in the payload header")
    name = str(entry.get("name", "?"))
    dtype = entry.get("dtype")
    if dtype not in ALLOWED_DTYPES:
        raise InputError(f"array '{name}' has dtype {dtype!r}; allowed: {', '.join(sorted(ALLOWED_DTYPES))}")
    return name, dtype, _int_list(entry.get("shape"), "shape", name, limits.max_ndim)


def _decode_one(entry: dict, body: memoryview, base: int, limits: Limits, check_finite: bool) -> np.ndarray:
    name, dtype, shape = _checked_entry(entry, limits)
    dt = np.dtype(dtype).newbyteorder("<") if dtype != "bool" else np.dtype(bool)
    n = math.prod(shape)
    nbytes = n * dt.itemsize
    if nbytes > limits.max_array_bytes:
        raise InputError(f"array '{name}' would be {nbytes / 2**20:.0f} MiB, over the server's limit of "
                         f"{limits.max_array_bytes / 2**20:.0f} MiB")
    bits = bool(entry.get("bits")) and dtype == "bool"
    expected = (n + 7) // 8 if bits else nbytes
    start, length = entry.get("start"), entry.get("length")
    if not (isinstance(start, int) and isinstance(length, int) and start >= 0 and length >= 0
            and base + start + length <= len(body)):
        raise InputError(f"array '{name}': its blob lies outside the payload (truncated upload?)")
    blob = body[base + start: base + start + length]
    codec = entry.get("codec")
    if codec == "raw":
        raw = bytes(blob)
    elif codec == "zlib":
        d = zlib.decompressobj()
        try:
            raw = d.decompress(blob, expected + 1)
        except zlib.error as e:
            raise InputError(f"array '{name}': corrupt zlib data ({e})") from None
    else:
        raise InputError(f"array '{name}': unknown codec {codec!r}; use zlib or raw")
    if len(raw) != expected:
        raise InputError(f"array '{name}': {len(raw)} bytes of data for shape {shape} {dtype} "
                         f"(expected {expected})")
    if bits:
        a = np.unpackbits(np.frombuffer(raw, np.uint8), count=n, bitorder="little").astype(bool)
    else:
        a = np.frombuffer(raw, dt).astype(dt.newbyteorder("="), copy=True)
    a = a.reshape(shape)
    if check_finite and a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        raise InputError(f"array '{name}' holds {bad} NaN/Inf values; fix or mask them first")
    if "full_shape" in entry or "offset" in entry:
        full = _int_list(entry.get("full_shape"), "full_shape", name, limits.max_ndim)
        off = _int_list(entry.get("offset"), "offset", name, limits.max_ndim)
        if len(full) != len(shape) or len(off) != len(shape) or any(
                o + s > f for o, s, f in zip(off, shape, full)):
            raise InputError(f"array '{name}': crop {shape} at {off} does not fit in {full}")
        if math.prod(full) * dt.itemsize > limits.max_array_bytes:
            raise InputError(f"array '{name}': full shape {full} is over the server's size limit")
        out = np.zeros(full, dtype=a.dtype)
        out[tuple(slice(o, o + s) for o, s in zip(off, shape))] = a
        a = out
    return a


def _depth(obj, limit: int) -> None:
    """Refuse JSON nested deeper than ``limit`` (iterative: a deep object must not recurse here)."""
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if d > limit:
            raise InputError(f"payload header is nested deeper than {limit} levels")
        if isinstance(o, dict):
            stack.extend((v, d + 1) for v in o.values())
        elif isinstance(o, list):
            stack.extend((v, d + 1) for v in o)


def read_header(body: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[dict, list, int]:
    """``(meta, array entries, blob base offset)`` without decoding any array; `InputError` for a
    malformed, oversized, too deeply nested header, or arrays whose declared sizes exceed ``limits``."""
    if len(body) > limits.max_body_bytes:
        raise InputError(f"payload of {len(body) / 2**20:.1f} MiB is over the limit of "
                         f"{limits.max_body_bytes / 2**20:.0f} MiB")
    if len(body) < _PREFIX.size:
        raise InputError("payload too short: not a medsegsuite array message")
    magic, version, hlen = _PREFIX.unpack_from(body)
    if magic != MAGIC:
        raise InputError("payload is not a medsegsuite array message (bad magic); send it with "
                         "medsegsuite.wire.pack")
    if version != FORMAT_VERSION:
        raise InputError(f"array message format {version} is not supported (this side speaks {FORMAT_VERSION})")
    if hlen > limits.max_header_bytes or _PREFIX.size + hlen > len(body):
        raise InputError("payload header length is out of range (truncated or corrupt upload)")
    try:
        header = json.loads(bytes(body[_PREFIX.size:_PREFIX.size + hlen]))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"payload header is not valid JSON: {e}") from None
    except RecursionError:
        raise InputError(f"payload header is nested deeper than {limits.max_depth} levels") from None
    _depth(header, limits.max_depth)
    if not isinstance(header, dict) or not isinstance(header.get("meta", {}), dict) \
            or not isinstance(header.get("arrays", []), list):
        raise InputError("payload header must be {'meta': {...}, 'arrays': [...]}")
    entries = header.get("arrays", [])
    if len(entries) > limits.max_arrays:
        raise InputError(f"payload holds {len(entries)} arrays; at most {limits.max_arrays} are allowed")
    total = sum(declared_bytes(e, limits) for e in entries)
    if total > limits.max_total_bytes:
        raise InputError(f"the arrays of this message would take {total / 2**20:.0f} MiB once unpacked, over "
                         f"the limit of {limits.max_total_bytes / 2**20:.0f} MiB")
    return header.get("meta", {}), entries, _PREFIX.size + hlen


def declared_bytes(entry, limits: Limits = DEFAULT_LIMITS) -> int:
    """The decompressed size an array entry declares (checked: dtype, shape)."""
    _, dtype, shape = _checked_entry(entry, limits)
    return math.prod(shape) * np.dtype(dtype).itemsize


def unpack(body: bytes, limits: Limits = DEFAULT_LIMITS, check_finite: bool = True) -> tuple[dict, dict]:
    """``(meta, {name: ndarray})`` from a body made by `pack`; `InputError` for anything malformed.
    Every declared size is checked against ``limits`` before anything is decompressed."""
    meta, entries, base = read_header(body, limits)
    view = memoryview(body)
    arrays = {}
    for e in entries:
        a = _decode_one(e, view, base, limits, check_finite)
        arrays[str(e.get("name"))] = a
    return meta, arrays
