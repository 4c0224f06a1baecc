"""Image and segmentation files keep their geometry and content."""
import numpy as np
import pytest

from medsegsuite.errors import InputError
from medsegsuite.io import (Segmentation, labelmap_to_masks, masks_to_labelmap, read_image,
                            read_segmentation, write_image, write_segmentation)
from medsegsuite.volume import Volume


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_image_round_trip_keeps_oblique_geometry(tmp_path, oblique_volume, suffix):
    p = write_image(oblique_volume, tmp_path / f"img{suffix}")
    back = read_image(p)
    assert back.shape == oblique_volume.shape
    assert np.allclose(back.array, oblique_volume.array)
    assert back.geometry.same_as(oblique_volume.geometry), (back.geometry, oblique_volume.geometry)


def test_dicom_series_round_trip(tmp_path, oblique_volume):
    v = oblique_volume.with_array(np.round(oblique_volume.array).astype(np.int16))
    folder = write_image(v, tmp_path / "series")
    assert len(list(folder.glob("*.dcm"))) == v.shape[2]
    back = read_image(folder)
    assert np.array_equal(back.array, v.array)
    assert back.geometry.same_as(v.geometry)


def test_ras_convention_matches_itk_lps(tmp_path):
    import SimpleITK as sitk

    v = Volume(np.zeros((3, 3, 3), np.float32), (1, 1, 1), (10.0, 20.0, 30.0))
    write_image(v, tmp_path / "a.nii.gz")
    img = sitk.ReadImage(str(tmp_path / "a.nii.gz"))
    assert np.allclose(img.GetOrigin(), (-10, -20, 30))  # RAS (10, 20, 30) is LPS (-10, -20, 30)


def test_seg_nrrd_keeps_names_colours_and_overlaps(tmp_path, oblique_volume):
    g = oblique_volume.geometry
    liver = oblique_volume.array > 0
    tumour = oblique_volume.array > 80  # inside liver: overlapping segments
    seg = Segmentation(g, {"liver": liver, "tumour": tumour}, {"liver": (1.0, 0.5, 0.0)})
    p = write_segmentation(seg, tmp_path / "s.seg.nrrd")
    back = read_segmentation(p)
    assert back.names == ["liver", "tumour"]
    assert np.array_equal(back.masks["liver"], liver) and np.array_equal(back.masks["tumour"], tumour)
    assert np.allclose(back.colors["liver"], (1.0, 0.5, 0.0))
    assert back.geometry.same_as(g)


def test_labelmap_file_with_names(tmp_path, oblique_volume):
    g = oblique_volume.geometry
    a = oblique_volume.array
    seg = Segmentation(g, {"low": a < -50, "high": a > 50})
    p = write_segmentation(seg, tmp_path / "lab.nii.gz")
    back = read_segmentation(p)
    assert back.names == ["low", "high"]
    assert np.array_equal(back.masks["high"], a > 50)
    assert back.geometry.same_as(g)


def test_overlapping_masks_cannot_become_a_labelmap(tmp_path, oblique_volume):
    a = oblique_volume.array
    seg = Segmentation(oblique_volume.geometry, {"a": a > 0, "b": a > 10})
    with pytest.raises(InputError, match="overlap"):
        write_segmentation(seg, tmp_path / "x.nrrd")


def test_labelmap_to_masks_unions_values_and_round_trips():
    lab = np.array([[[0, 1, 2, 2, 3]]])
    m = labelmap_to_masks(lab, {1: "liver", 2: "liver", 3: "kidney"})
    assert m["liver"].sum() == 3 and m["kidney"].sum() == 1
    lab2, names = masks_to_labelmap({"a": lab == 1, "b": lab == 3})
    assert names == {1: "a", 2: "b"} and lab2.tolist() == [[[0, 1, 0, 0, 2]]]


def test_bad_files_and_masks_give_clear_errors(tmp_path, oblique_volume):
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "missing.nii.gz")
    (tmp_path / "junk.nii.gz").write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot read"):
        read_image(tmp_path / "junk.nii.gz")
    import SimpleITK as sitk

    img4 = sitk.GetImageFromArray(np.zeros((2, 3, 4, 5), np.float32), isVector=False)
    sitk.WriteImage(img4, str(tmp_path / "four.nii.gz"))
    with pytest.raises(InputError, match="3D"):
        read_image(tmp_path / "four.nii.gz")
    seg = Segmentation(oblique_volume.geometry)
    with pytest.raises(InputError, match="shape"):
        seg.add("wrong", np.zeros((1, 2, 3), bool))
    with pytest.raises(InputError, match="NaN"):
        seg.add("nan", np.full(oblique_volume.shape, np.nan))
    with pytest.raises(InputError, match="no segments"):
        write_segmentation(seg, tmp_path / "empty.seg.nrrd")
    seg.add("empty", np.zeros(oblique_volume.shape, bool))  # an empty mask is a valid segment
    back = read_segmentation(write_segmentation(seg, tmp_path / "e.seg.nrrd"))
    assert back.names == ["empty"] and not back.masks["empty"].any()
    with pytest.raises(InputError, match="no segment named"):
        back.require("liver")


def test_dicom_io_leaves_the_text_encoding_alone(tmp_path, oblique_volume):
    """GDCM sets the C locale; afterwards Python would read and write text files as ASCII."""
    import locale

    before = locale.getpreferredencoding(False)
    v = oblique_volume.with_array(np.round(oblique_volume.array).astype(np.int16))
    read_image(write_image(v, tmp_path / "series"))
    assert locale.getpreferredencoding(False) == before
