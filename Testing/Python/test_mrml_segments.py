"""Writing masks into a real vtkMRMLSegmentationNode: policies, protected neighbours, undo."""
import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from MedSegSuiteLib import segments as S  # noqa: E402
from MedSegSuiteLib.volumes import volume_to_node  # noqa: E402
from medsegsuite.errors import InputError  # noqa: E402


@pytest.fixture
def setup(oblique_volume):
    scene = slicer.vtkMRMLScene()
    volume_to_node(oblique_volume, scene, "img")
    seg = S.new_segmentation_node(scene, "seg")
    g = oblique_volume.geometry
    rng = np.random.default_rng(1)
    neighbour = rng.random(g.shape) > 0.6          # a ragged "finished" structure
    new = np.zeros(g.shape, bool)
    new[2:8, 3:10, 1:6] = True                     # overlaps the neighbour a lot
    assert (neighbour & new).sum() > 50
    return scene, seg, g, neighbour, new


def snapshot(seg, g):
    return {n: S.read_masks(seg, g, [n])[n].copy() for n in S.segment_names(seg)}


def test_finished_neighbour_identical_under_default_policy(setup):
    scene, seg, g, neighbour, new = setup
    S.write_masks(seg, {"liver": neighbour}, g)
    S.set_finished(seg, "liver")
    S.write_masks(seg, {"tumour": new}, g)  # default policy
    out = snapshot(seg, g)
    np.testing.assert_array_equal(out["liver"], neighbour)
    np.testing.assert_array_equal(out["tumour"], new)  # "none" allows overlap, as the editor does
    # the reference geometry is the input image grid
    ref = seg.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    vals = [float(x) for x in ref.split(";") if x]
    np.testing.assert_allclose(np.array(vals[:16]).reshape(4, 4), g.ijk_to_ras, atol=1e-9)
    assert vals[16:] == [0, g.shape[0] - 1, 0, g.shape[1] - 1, 0, g.shape[2] - 1]


def test_overwrite_all_and_visible_spare_protected(setup):
    scene, seg, g, neighbour, new = setup
    other = np.zeros(g.shape, bool)
    other[0:5, 0:11, 0:7] = True
    hidden = np.zeros(g.shape, bool)
    hidden[4:9, 0:4, :] = True
    S.write_masks(seg, {"liver": neighbour, "spleen": other, "hidden": hidden}, g)
    S.set_locked(seg, "liver")
    seg.GetDisplayNode().SetSegmentVisibility(S.segment_id(seg, "hidden"), False)
    S.write_masks(seg, {"tumour": new}, g, overwrite="visible")
    out = snapshot(seg, g)
    np.testing.assert_array_equal(out["liver"], neighbour)          # locked: untouched
    np.testing.assert_array_equal(out["tumour"], new & ~neighbour)  # clipped out of it
    np.testing.assert_array_equal(out["spleen"], other & ~out["tumour"])
    np.testing.assert_array_equal(out["hidden"], hidden)            # not visible: untouched
    S.write_masks(seg, {"tumour": new}, g, overwrite="all")
    out = snapshot(seg, g)
    np.testing.assert_array_equal(out["hidden"], hidden & ~out["tumour"])
    assert (hidden & new & ~neighbour).any()
    np.testing.assert_array_equal(out["liver"], neighbour)


def test_undo_restores_exactly(setup):
    scene, seg, g, neighbour, new = setup
    S.write_masks(seg, {"liver": neighbour}, g, colors={"liver": (0.1, 0.2, 0.3)})
    before = snapshot(seg, g)
    changed = neighbour.copy()
    changed[:, :, 3] = ~changed[:, :, 3]
    S.write_masks(seg, {"liver": changed, "tumour": new}, g, overwrite="all")
    assert not np.array_equal(snapshot(seg, g)["liver"], before["liver"])
    assert S.undo_last_write(seg)
    after = snapshot(seg, g)
    assert list(after) == ["liver"]
    np.testing.assert_array_equal(after["liver"], before["liver"])
    color = seg.GetSegmentation().GetSegment(S.segment_id(seg, "liver")).GetColor()
    np.testing.assert_allclose(color, (0.1, 0.2, 0.3))
    assert S.undo_last_write(seg)               # and the first write too
    assert S.segment_names(seg) == []
    assert not S.undo_last_write(seg)


def test_bad_input_changes_nothing(setup):
    scene, seg, g, neighbour, new = setup
    S.write_masks(seg, {"liver": neighbour}, g)
    S.set_finished(seg, "liver")
    before = snapshot(seg, g)
    with pytest.raises(InputError, match="locked or marked finished"):
        S.write_masks(seg, {"liver": new}, g, overwrite="all")
    with pytest.raises(InputError, match="shape"):
        S.write_masks(seg, {"tumour": new[:-1]}, g)
    with pytest.raises(InputError, match="overwrite must be"):
        S.write_masks(seg, {"tumour": new}, g, overwrite="everything")
    after = snapshot(seg, g)
    assert list(after) == list(before)
    np.testing.assert_array_equal(after["liver"], before["liver"])


def test_segment_on_another_grid_is_resampled(setup):
    """A segment stored on a shifted grid (e.g. drawn on another volume) reads back on the image grid."""
    from medsegsuite.volume import Geometry

    scene, seg, g, neighbour, new = setup
    shifted = Geometry(g.shape, g.spacing, tuple(g.ijk_to_ras[:3, :3] @ [1.0, 0.0, 0.0] + g.origin), g.direction)
    S.write_masks(seg, {"drawn": new}, shifted)
    out = S.read_masks(seg, g, ["drawn"])["drawn"]
    expected = np.zeros(g.shape, bool)
    expected[1:, :, :] = new[:-1, :, :]   # voxel i on the shifted grid is voxel i + 1 on the image grid
    np.testing.assert_array_equal(out, expected)


def test_new_segments_carry_standard_terminology():
    """Known structures get SNOMED CT codes in Slicer's TerminologyEntry tag; others keep Slicer's default."""
    import vtk

    from MedSegSuiteLib.segments import new_segmentation_node, write_masks
    from medsegsuite.volume import Geometry

    g = Geometry((4, 5, 6), (1.0, 1.0, 2.0))
    node = new_segmentation_node(slicer.vtkMRMLScene(), "seg", g)
    m = np.zeros(g.shape, bool)
    m[1:3, 1:3, 1:3] = True
    write_masks(node, {"liver": m, "tumour": m, "my structure": m}, g)
    seg = node.GetSegmentation()

    def entry(name):
        segment = seg.GetSegment(seg.GetSegmentIdBySegmentName(name))
        ref = vtk.reference("")
        assert segment.GetTag(segment.GetTerminologyEntryTagName(), ref)
        return str(ref)

    assert "SCT^123037004^Anatomical Structure~SCT^10200004^Liver" in entry("liver")
    assert entry("tumour").startswith("Segmentation category and type - DICOM master list~"
                                      "SCT^49755003^Morphologically Altered Structure~SCT^108369006^Neoplasm~")
    assert "Liver" not in entry("my structure") and "Neoplasm" not in entry("my structure")


def test_whole_mask_writes_travel_as_their_bounding_box(setup):
    """`write_masks` hands Slicer only the mask's bounding box: the segment reads back exactly, a
    smaller mask leaves nothing of the old one outside its box, and an empty mask empties it."""
    scene, seg, g, neighbour, new = setup
    S.write_masks(seg, {"liver": neighbour}, g)
    np.testing.assert_array_equal(S.read_masks(seg, g, ["liver"])["liver"], neighbour)
    small = np.zeros(g.shape, bool)
    small[3:5, 4:6, 2:3] = True
    S.write_masks(seg, {"liver": small}, g)
    np.testing.assert_array_equal(S.read_masks(seg, g, ["liver"])["liver"], small)
    S.write_masks(seg, {"liver": np.zeros(g.shape, bool)}, g)
    assert not S.read_masks(seg, g, ["liver"])["liver"].any()
    assert S.segment_names(seg) == ["liver"]


@pytest.mark.parametrize("order", ["C", "F"])
def test_voxels_reach_vtk_in_its_order(order):
    """The slab-wise transposing copy gives VTK the same bytes as a plain transpose, for any layout."""
    from MedSegSuiteLib.volumes import array_from_image_data, image_data_from_array

    a = np.asarray(np.random.default_rng(2).integers(0, 200, (19, 7, 5)), dtype=np.int16, order=order)
    img = image_data_from_array(a, offset=(3, 0, 2))
    assert img.GetExtent() == (3, 21, 0, 6, 2, 6)
    np.testing.assert_array_equal(array_from_image_data(img), a)
