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
