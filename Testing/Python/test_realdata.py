"""The pinned real cases: fetched by set-up, checksummed, labels on the image grid, no path escapes."""
import hashlib
import io
import tarfile

import numpy as np
import pytest

from medsegsuite.errors import MissingDataError
from medsegsuite.sampledata import real


def test_every_case_loads_with_labels_on_its_grid():
    for cid in real.case_ids():
        c = real.real_case(cid)
        assert c.image.array.ndim == 3 and np.isfinite(c.image.array).all(), cid
        for name, m in c.labels.items():
            assert m.shape == c.image.array.shape and m.dtype == bool and m.any(), (cid, name)
        assert (c.label_kind == "none") == (not c.labels), cid


def test_pseudo_liver_labels_sit_on_liver_intensities():
    # A misaligned label (flipped axis, wrong grid) would land on fat/air/bone and miss these HU ranges.
    native = real.real_case("ts-ct-native")
    contrast = real.real_case("ts-ct-contrast")
    assert native.label_kind == contrast.label_kind == "pseudo"
    hu_native = float(np.median(native.image.array[native.labels["liver"]]))
    hu_contrast = float(np.median(contrast.image.array[contrast.labels["liver"]]))
    assert 30 <= hu_native <= 80, hu_native          # unenhanced liver
    assert hu_contrast > hu_native                   # enhanced liver is brighter


def _tar(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_fetch_refuses_a_wrong_checksum_and_skips_escaping_members(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEGSUITE_DATA", str(tmp_path / "data"))
    blob = _tar({"pkg/data/ok.txt": b"fine", "pkg/data/../../evil.txt": b"escape"})
    f = tmp_path / "a.tar.gz"
    f.write_bytes(blob)
    good = real.Source(f.as_uri(), hashlib.sha256(blob).hexdigest(), "pkg/data/", "MIT", "test")
    monkeypatch.setitem(real.SOURCES, "t", good)
    monkeypatch.setitem(real.SOURCES, "bad", real.Source(f.as_uri(), "0" * 64, "pkg/data/", "MIT", "test"))
    with pytest.raises(MissingDataError, match="checksum"):
        real.fetch(["bad"], log=lambda *_: None)
    assert not (tmp_path / "data" / "bad").exists()
    with pytest.raises(MissingDataError, match="sampledata fetch"):
        real.source_dir("t")
    d = real.fetch(["t"], log=lambda *_: None)["t"]
    assert (d / "ok.txt").read_bytes() == b"fine"
    assert not list(tmp_path.rglob("evil.txt"))
    assert real.fetch(["t"], log=lambda *_: None)["t"] == d   # cached: no second download
