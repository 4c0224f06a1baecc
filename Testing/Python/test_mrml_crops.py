"""A click's crop written into a real segmentation node (`segments.write_crop`): the box holds what
patching and writing the whole mask gives there, nothing outside the box changes, under every
overwrite policy, with protected neighbours, shared layers and undo."""
import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from MedSegSuiteLib import segments as S  # noqa: E402
from MedSegSuiteLib.volumes import volume_to_node  # noqa: E402
from medsegsuite.errors import InputError  # noqa: E402


def snapshot(seg, g):
    return {n: S.read_masks(seg, g, [n])[n].copy() for n in S.segment_names(seg)}


def scene_with(oblique_volume, shared: bool):
    """'liver' (ragged), a locked 'spleen' and a hidden 'kidney', overlapping the box used below;
    ``shared``: all of them in one labelmap layer, as the Segment Editor stores them."""
    scene = slicer.vtkMRMLScene()
    volume_to_node(oblique_volume, scene, "img")
    seg = S.new_segmentation_node(scene, "seg")
    g = oblique_volume.geometry
    rng = np.random.default_rng(3)
    liver = rng.random(g.shape) > 0.5
    spleen = np.zeros(g.shape, bool)
    spleen[0:4, 0:5, 2:4] = True
    kidney = np.zeros(g.shape, bool)
    kidney[6:9, 6:11, 0:7] = True
    tumour = np.zeros(g.shape, bool)
    tumour[4:6, 2:4, 1:3] = True
    S.write_masks(seg, {"liver": liver, "spleen": spleen, "kidney": kidney, "tumour": tumour}, g, undoable=False)
    S.set_locked(seg, "spleen")
    seg.GetDisplayNode().SetSegmentVisibility(S.segment_id(seg, "kidney"), False)
    if shared:
        seg.GetSegmentation().CollapseBinaryLabelmaps(False)
        assert seg.GetSegmentation().GetNumberOfLayers() < 4
    return scene, seg, g


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("overwrite", ["none", "visible", "all"])
def test_crop_equals_the_whole_mask_write(oblique_volume, shared, overwrite, monkeypatch):
    g = oblique_volume.geometry
    rng = np.random.default_rng(4)
    crop = rng.random((6, 7, 3)) > 0.4
    offset = (2, 3, 2)  # overlaps every other segment
    box = tuple(slice(o, o + n) for o, n in zip(offset, crop.shape))
    # the reference: the whole mask read, patched and written
    _, ref_seg, _ = scene_with(oblique_volume, shared)
    whole = S.read_masks(ref_seg, g, ["tumour"])["tumour"]
    whole[box] = crop
    S.write_masks(ref_seg, {"tumour": whole}, g, overwrite=overwrite)
    expected = snapshot(ref_seg, g)
    # the box written in place
    _, seg, _ = scene_with(oblique_volume, shared)
    before = snapshot(seg, g)
    with monkeypatch.context() as m:  # in place: no whole mask is read
        m.setattr(S, "read_mask", lambda *a, **k: pytest.fail("write_crop read a whole mask"))
        out = S.write_crop(seg, "tumour", offset, crop, g, overwrite=overwrite)
    assert out == {"tumour": S.segment_id(seg, "tumour")}
    got = snapshot(seg, g)
    assert list(got) == list(expected)
    outside = np.ones(g.shape, bool)
    outside[box] = False
    for name in got:
        # inside the box: what the whole-mask write gives; outside it nothing moves (the whole-mask
        # write would also clear the segment's old voxels elsewhere out of its neighbours)
        np.testing.assert_array_equal(got[name][box], expected[name][box], err_msg=f"{name} ({overwrite}, {shared})")
        np.testing.assert_array_equal(got[name][outside], before[name][outside])
    if overwrite == "none":  # then the two are the same everywhere
        for name in got:
            np.testing.assert_array_equal(got[name], expected[name])
    # one undo step back to where it was
    assert S.undo_last_write(seg)
    for name, m in snapshot(seg, g).items():
        np.testing.assert_array_equal(m, before[name])


def test_crop_grows_a_segment_beyond_its_extent_and_into_an_empty_one(oblique_volume):
    _, seg, g = scene_with(oblique_volume, shared=False)
    crop = np.ones((2, 2, 1), bool)
    before = S.read_masks(seg, g, ["tumour"])["tumour"]
    S.write_crop(seg, "tumour", (0, 0, 6), crop, g)   # far from the tumour's stored extent
    after = S.read_masks(seg, g, ["tumour"])["tumour"]
    expected = before.copy()
    expected[0:2, 0:2, 6:7] = True
    np.testing.assert_array_equal(after, expected)
    seg.GetSegmentation().AddEmptySegment("", "new")
    S.write_crop(seg, "new", (3, 3, 3), crop, g)
    expected = np.zeros(g.shape, bool)
    expected[3:5, 3:5, 3:4] = True
    np.testing.assert_array_equal(S.read_masks(seg, g, ["new"])["new"], expected)


def test_crop_of_a_missing_segment_or_another_grid_takes_the_whole_mask_path(oblique_volume):
    from medsegsuite.volume import Geometry

    _, seg, g = scene_with(oblique_volume, shared=False)
    crop = np.ones((2, 3, 1), bool)
    S.write_crop(seg, "vessel", (1, 1, 1), crop, g)  # no such segment yet: created
    expected = np.zeros(g.shape, bool)
    expected[1:3, 1:4, 1:2] = True
    np.testing.assert_array_equal(S.read_masks(seg, g, ["vessel"])["vessel"], expected)
    # a segment stored on a shifted grid: read, patched and written on the image grid
    shifted = Geometry(g.shape, g.spacing, tuple(g.ijk_to_ras[:3, :3] @ [1.0, 0.0, 0.0] + g.origin), g.direction)
    drawn = np.zeros(g.shape, bool)
    drawn[2:6, 2:6, 2:5] = True
    S.write_masks(seg, {"drawn": drawn}, shifted)
    before = S.read_masks(seg, g, ["drawn"])["drawn"]
    S.write_crop(seg, "drawn", (0, 0, 0), np.zeros((4, 4, 3), bool), g)
    expected = before.copy()
    expected[0:4, 0:4, 0:3] = False
    np.testing.assert_array_equal(S.read_masks(seg, g, ["drawn"])["drawn"], expected)


def test_bad_crops_and_protected_targets_change_nothing(oblique_volume):
    _, seg, g = scene_with(oblique_volume, shared=True)
    before = snapshot(seg, g)
    with pytest.raises(InputError, match="does not fit"):
        S.write_crop(seg, "tumour", (8, 0, 0), np.ones((4, 2, 1), bool), g)
    with pytest.raises(InputError, match="does not fit"):
        S.write_crop(seg, "tumour", (0, 0), np.ones((2, 2), bool), g)
    with pytest.raises(InputError, match="locked or marked finished"):
        S.write_crop(seg, "spleen", (0, 0, 0), np.zeros((2, 2, 2), bool), g)
    with pytest.raises(InputError, match="overwrite must be"):
        S.write_crop(seg, "tumour", (0, 0, 0), np.zeros((2, 2, 2), bool), g, overwrite="everything")
    after = snapshot(seg, g)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])


def test_segment_digest_changes_with_the_segment_only(oblique_volume):
    _, seg, g = scene_with(oblique_volume, shared=False)
    d = S.segment_digest(seg, "tumour")
    assert d == S.segment_digest(seg, "tumour") and S.segment_digest(seg, "absent") is None
    S.write_crop(seg, "liver", (0, 0, 0), np.zeros((2, 2, 2), bool), g)   # another segment's layer
    assert S.segment_digest(seg, "tumour") == d
    S.write_crop(seg, "tumour", (4, 2, 1), np.zeros((1, 1, 1), bool), g)  # one voxel of it, removed only
    assert S.segment_digest(seg, "tumour") != d
    t = S.read_masks(seg, g, ["tumour"])["tumour"]
    assert not t[4, 2, 1] and t[4:6, 2:4, 1:3].sum() == 7
    assert S.undo_last_write(seg)
    assert S.segment_digest(seg, "tumour") == d                           # back as it was
    # an edit from outside MedSegSuite (no undo step of ours settles it) is seen too
    S.write_crop(seg, "tumour", (0, 0, 0), np.ones((1, 1, 1), bool), g, undoable=False)
    assert S.segment_digest(seg, "tumour") != d
