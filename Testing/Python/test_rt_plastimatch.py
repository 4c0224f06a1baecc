"""Our RTSTRUCT export read back by plastimatch (Debian ``plastimatch``), an independent clinical reader
that rasterises contours onto the referenced CT grid itself. Real structures: LiTS-117's manual liver, its
largest lesion and a small lesion, exported on the whole CT (128 slices) as a CT series + RTSTRUCT."""
from __future__ import annotations

import sys

import numpy as np
import pydicom
import pytest
from medsegsuite.dicom import scan_series
from medsegsuite.dicom.ct import write_ct_series
from medsegsuite.dicom.plastimatch import plastimatch_path, read_rtstruct_plastimatch
from medsegsuite.dicom.rtstruct import write_rtstruct
from medsegsuite.errors import InputError, MissingDataError
from medsegsuite.io import Segmentation


def dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def plastimatch():
    if plastimatch_path() is None:
        if sys.platform.startswith("linux"):  # scripts/setup.sh installs it on Debian/Ubuntu
            pytest.fail("plastimatch is not installed; scripts/setup.sh installs it (apt-get install plastimatch)")
        pytest.skip("plastimatch is not installed (scripts/setup.sh installs it on Debian/Ubuntu only)")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from medsegsuite.sampledata import lits117
    from scipy import ndimage

    ct, ref = lits117()
    lab, _ = ndimage.label(ref.masks["tumour"])
    sizes = np.bincount(lab.ravel())[1:]
    small = 1 + int(np.argmin(np.where(sizes >= 50, sizes, sizes.max() + 1)))  # smallest lesion of >= 50 voxels
    masks = {"Liver": ref.masks["liver"], "GTVp": lab == 1 + int(np.argmax(sizes)), "GTV_small": lab == small}
    out = tmp_path_factory.mktemp("rt_plastimatch")
    ct_dir = write_ct_series(ct, out / "CT", patient_name="LiTS^117")
    info = scan_series(ct_dir)
    rs = write_rtstruct(Segmentation(ct.geometry, masks), info, out / "RS.dcm")
    return masks, info, ct_dir, rs


def test_plastimatch_reads_real_structures_back(plastimatch, exported):
    masks, info, ct_dir, rs = exported
    assert 50 <= masks["GTV_small"].sum() < 1000 < masks["GTVp"].sum()  # a small and a large lesion
    back = read_rtstruct_plastimatch(rs, ct_dir, info.geometry)
    assert list(back) == list(masks)
    for name, m in masks.items():
        assert back[name].shape == m.shape
        assert dice(back[name], m) >= 0.97, name


def test_a_one_pixel_shift_of_the_contours_fails_the_read_back(plastimatch, exported, tmp_path):
    """The check has teeth: the lesions' contours moved by one pixel (2 mm) in the file read back below 0.97
    (the liver, being large, stays above it: a one-pixel shift costs it ~2% Dice)."""
    masks, info, ct_dir, rs = exported
    ds = pydicom.dcmread(rs)
    dx = info.geometry.spacing[0]
    for roi in ds.ROIContourSequence:
        for c in roi.ContourSequence:
            p = np.asarray(c.ContourData, float).reshape(-1, 3)
            p[:, 0] += dx
            c.ContourData = [f"{v:.4f}" for v in p.ravel()]
    ds.save_as(tmp_path / "RS_shifted.dcm")
    back = read_rtstruct_plastimatch(tmp_path / "RS_shifted.dcm", ct_dir, info.geometry)
    assert dice(back["GTVp"], masks["GTVp"]) < 0.97 and dice(back["GTV_small"], masks["GTV_small"]) < 0.97
    assert dice(back["Liver"], masks["Liver"]) < 0.99


def test_plastimatch_read_back_errors_are_clear(plastimatch, exported, tmp_path, monkeypatch):
    _, _, ct_dir, _ = exported
    with pytest.raises(InputError, match="not an RT Structure Set"):
        read_rtstruct_plastimatch(min(ct_dir.iterdir()), ct_dir)
    (tmp_path / "x.dcm").write_text("not DICOM")
    with pytest.raises(InputError, match="not a DICOM file"):
        read_rtstruct_plastimatch(tmp_path / "x.dcm", ct_dir)
    monkeypatch.setattr("medsegsuite.dicom.plastimatch.shutil.which", lambda name: None)
    with pytest.raises(MissingDataError, match="apt-get install plastimatch"):
        read_rtstruct_plastimatch(tmp_path / "x.dcm", ct_dir)


def test_rt_flow_readback_only_reruns_export_and_readers_keeping_the_run(plastimatch, tmp_path):
    """``scripts/rt_flow.py --readback-only OUT`` on an earlier run's folder: the approved plan (here the
    manual liver and largest lesion, approved) is exported again, validated and read back by every reader
    (plastimatch included); the earlier run's lines and provenance are kept, and a second pass changes
    nothing but its own provenance."""
    import argparse
    import importlib.util
    from pathlib import Path

    from medsegsuite.rt import StructureSet, load_template
    from medsegsuite.sampledata import lits117
    from medsegsuite.sampledata.dicom import export_lits117_dicom
    from scipy import ndimage

    ct, ref = lits117()
    run = tmp_path / "run"
    export_lits117_dicom(run, with_reference=False)
    lab, _ = ndimage.label(ref.masks["tumour"])
    ss = StructureSet(load_template("abdomen"), ct.geometry)
    ss.write_ai("Liver", ref.masks["liver"], "manual reference")
    ss.write_ai("GTVp", lab == 1 + int(np.argmax(np.bincount(lab.ravel())[1:])), "manual reference")
    for name in ("Liver", "GTVp"):
        ss.set_status(name, "reviewed", "A")
        ss.set_status(name, "approved", "B")
    ss.save(run / "plan.seg.nrrd")
    results = tmp_path / "results"
    results.mkdir()
    earlier = ["# Radiotherapy flow", "", "- date: 2000-01-01 00:00 UTC", "- command: `python scripts/rt_flow.py`",
               "- git: `abc`", "", "Real CT (LiTS-117, manual reference). (test text)", "",
               "- 1-2. CT series (test text)", "- 6. approved (test text)", "- 7. old export", "- 8. old read-back",
               "- 9. overlay (test text)"]
    (results / "rt_flow.md").write_text("\n".join(earlier) + "\n")
    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("rt_flow", root / "scripts" / "rt_flow.py")
    rt_flow = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rt_flow)
    args = argparse.Namespace(readback_only=str(run), results=str(results))
    rt_flow.readback_only(args)
    text = (results / "rt_flow.md").read_text()
    assert "| RTSTRUCT read back (plastimatch) |" in text
    assert "| Liver | 1.0000 | " in text and "| GTVp | 1.0000 | " in text
    liver_row = next(ln for ln in text.splitlines() if ln.startswith("| Liver |"))
    assert liver_row.split("|")[4].strip() == "1.0000"  # the plastimatch column
    assert "  - date: 2000-01-01 00:00 UTC" in text and "- 6. approved (test text)" in text
    assert "old export" not in text and "- 8. dciodvfy errors" in text
    rt_flow.readback_only(args)
    again = (results / "rt_flow.md").read_text()
    assert again[again.index("Real CT"):] == text[text.index("Real CT"):]  # all but this file's own provenance
