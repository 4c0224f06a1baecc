"""The wire format: exact round trips, compact masks, and refusal of malformed or hostile payloads."""
import json
import struct
import zlib

import numpy as np
import pytest

from medsegsuite import wire
from medsegsuite.errors import InputError


def test_round_trip_is_exact_for_every_allowed_dtype():
    rng = np.random.default_rng(0)
    arrays = {}
    for dt in sorted(wire.ALLOWED_DTYPES):
        a = rng.normal(size=(3, 4, 5)) * 50
        arrays[dt] = (a > 0) if dt == "bool" else a.astype(dt)
    arrays["empty"] = np.zeros((0, 3), np.float32)
    arrays["big_endian"] = np.arange(6, dtype=">i4").reshape(2, 3)
    meta = {"task": "x", "params": {"n": np.int64(3), "t": np.float32(0.5), "slices": [1, 2]}}
    got_meta, got = wire.unpack(wire.pack(meta, arrays))
    assert got_meta == {"task": "x", "params": {"n": 3, "t": 0.5, "slices": [1, 2]}}
    assert set(got) == set(arrays)
    from pathlib import Path

    report, _ = wire.unpack(wire.pack({"hd95": float("nan"), "file": Path("/m/x.pt")}))
    assert np.isnan(report["hd95"]) and report["file"] == "/m/x.pt"  # a task's report always travels
    for k, a in arrays.items():
        assert got[k].shape == a.shape and got[k].dtype == a.dtype.newbyteorder("=")
        assert np.array_equal(got[k], a)


def test_masks_travel_as_bounding_box_crops():
    m = np.zeros((128, 128, 128), bool)
    m[40:60, 50:90, 64] = True  # a one-slice answer on a 128^3 grid
    body = wire.pack({}, {"liver": wire.Crop(m), "none": wire.Crop(np.zeros((8, 8, 8), bool))})
    header = json.loads(body[9:9 + struct.unpack_from("<I", body, 5)[0]])
    entry = header["arrays"][0]
    assert entry["offset"] == [40, 50, 64] and entry["shape"] == [20, 40, 1] and entry["bits"]
    assert len(body) < 600, len(body)  # 2 MiB of bool voxels become a few hundred bytes
    _, got = wire.unpack(body)
    assert np.array_equal(got["liver"], m) and got["none"].shape == (8, 8, 8) and not got["none"].any()


def _body(entries, blobs=b"", meta=None):
    header = json.dumps({"meta": meta or {}, "arrays": entries}).encode()
    return struct.pack("<4sBI", b"MSSW", 1, len(header)) + header + blobs


@pytest.mark.parametrize("body, match", [
    (b"", "too short"),
    (b"GET / HTTP/1.1\r\n\r\n", "bad magic"),
    (struct.pack("<4sBI", b"MSSW", 9, 2) + b"{}", "format 9"),
    (struct.pack("<4sBI", b"MSSW", 1, 10**6) + b"{}", "header length"),
    (struct.pack("<4sBI", b"MSSW", 1, 5) + b"{nope", "not valid JSON"),
    (_body([{"name": "a", "dtype": "object", "shape": [2], "codec": "raw", "start": 0, "length": 16}],
           b"\0" * 16), "dtype 'object'"),
    (_body([{"name": "a", "dtype": "complex64", "shape": [2], "codec": "raw", "start": 0, "length": 16}],
           b"\0" * 16), "dtype 'complex64'"),
    (_body([{"name": "a", "dtype": "float32", "shape": [4], "codec": "raw", "start": 0, "length": 8}],
           b"\0" * 8), "expected 16"),
    (_body([{"name": "a", "dtype": "float32", "shape": [4], "codec": "raw", "start": 0, "length": 99}],
           b"\0" * 16), "outside the payload"),
    (_body([{"name": "a", "dtype": "float32", "shape": [-1], "codec": "raw", "start": 0, "length": 0}]),
     "non-negative"),
    (_body([{"name": "a", "dtype": "uint8", "shape": [4], "codec": "lzma", "start": 0, "length": 4}],
           b"\0" * 4), "unknown codec"),
    (_body([{"name": "a", "dtype": "uint8", "shape": [4], "codec": "zlib", "start": 0, "length": 4}],
           b"junk"), "corrupt zlib"),
    (_body([{"name": "a", "dtype": "uint8", "shape": [2, 2], "codec": "raw", "start": 0, "length": 4,
             "offset": [1, 1], "full_shape": [2, 2]}], b"\0" * 4), "does not fit"),
])
def test_malformed_payloads_raise_input_error(body, match):
    with pytest.raises(InputError, match=match):
        wire.unpack(body)


def test_no_zip_bombs_and_no_nan():
    # 1 GiB of zeros declared, a few KiB sent: refused from the header, before any decompression
    limits = wire.Limits(max_body_bytes=2**20, max_array_bytes=2**24)
    bomb = zlib.compress(b"\0" * 2**22)
    body = _body([{"name": "a", "dtype": "uint8", "shape": [1024, 1024, 1024], "codec": "zlib", "start": 0,
                   "length": len(bomb)}], bomb)
    with pytest.raises(InputError, match="over the server's limit"):
        wire.unpack(body, limits)
    # a blob that inflates past its declared size is cut off and refused
    body = _body([{"name": "a", "dtype": "uint8", "shape": [16], "codec": "zlib", "start": 0,
                   "length": len(bomb)}], bomb)
    with pytest.raises(InputError, match="expected 16"):
        wire.unpack(body, limits)
    with pytest.raises(InputError, match="over the limit"):
        wire.unpack(b"\0" * (2**20 + 1), limits)
    nan = wire.pack({}, {"w": np.array([1.0, np.nan], np.float32)})
    with pytest.raises(InputError, match="NaN"):
        wire.unpack(nan)
    assert np.isnan(wire.unpack(nan, check_finite=False)[1]["w"][1])
    with pytest.raises(InputError, match="dtype"):
        wire.pack({}, {"c": np.zeros(2, np.complex64)})
