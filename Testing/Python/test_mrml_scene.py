"""Scene bundles: written with our bridge, reopened by slicer-core with the same segments and grid."""
import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from MedSegSuiteLib import segments as S  # noqa: E402
from MedSegSuiteLib.scene import load_mrb, new_scene, nodes_by_class, save_demo_scene, save_mrb  # noqa: E402
from MedSegSuiteLib.volumes import volume_from_node, volume_to_node  # noqa: E402
from medsegsuite.errors import InputError  # noqa: E402
from medsegsuite.io import Segmentation  # noqa: E402


def _masks(g, seed):
    rng = np.random.default_rng(seed)
    liver = np.zeros(g.shape, bool)
    liver[1:7, 2:9, 1:6] = True
    tumour = liver & (rng.random(g.shape) > 0.7)
    return {"liver": liver, "tumour": tumour}


def test_mrb_round_trip(tmp_path, oblique_volume):
    g = oblique_volume.geometry
    scene = new_scene()
    volume_to_node(oblique_volume, scene, "CT")
    seg = S.new_segmentation_node(scene, "Segmentation", g)
    masks = _masks(g, 0)
    S.write_masks(seg, masks, g)
    S.set_finished(seg, "liver")
    path = save_mrb(scene, tmp_path / "case.mrb")
    back = load_mrb(path)
    (vol,) = nodes_by_class(back, "vtkMRMLScalarVolumeNode")
    v = volume_from_node(vol)
    assert vol.GetName() == "CT"
    np.testing.assert_array_equal(v.array, oblique_volume.array)
    np.testing.assert_allclose(v.ijk_to_ras, oblique_volume.ijk_to_ras, atol=1e-6)
    (seg2,) = nodes_by_class(back, "vtkMRMLSegmentationNode")
    assert S.segment_names(seg2) == ["liver", "tumour"]
    out = S.read_masks(seg2, g)
    for name, m in masks.items():
        np.testing.assert_array_equal(out[name], m)
    assert S.is_protected(seg2, S.segment_id(seg2, "liver"))  # the finished status survives
    with pytest.raises(InputError, match=".mrb"):
        save_mrb(scene, tmp_path / "case.zip")
    with pytest.raises(InputError, match="no scene bundle"):
        load_mrb(tmp_path / "missing.mrb")


def test_save_demo_scene_reopens(tmp_path, oblique_volume):
    g = oblique_volume.geometry
    results = {"cosam": Segmentation(g, _masks(g, 1)), "scribble": Segmentation(g, _masks(g, 2))}
    path = save_demo_scene(tmp_path / "scene.mrb", oblique_volume, results)
    back = load_mrb(path)
    (vol,) = nodes_by_class(back, "vtkMRMLScalarVolumeNode")
    np.testing.assert_allclose(volume_from_node(vol).ijk_to_ras, oblique_volume.ijk_to_ras, atol=1e-6)
    segs = {n.GetName(): n for n in nodes_by_class(back, "vtkMRMLSegmentationNode")}
    assert sorted(segs) == ["cosam", "scribble"]
    for method, seg in results.items():
        node = segs[method]
        assert S.segment_names(node) == ["liver", "tumour"]
        out = S.read_masks(node, g)
        for name in ("liver", "tumour"):
            np.testing.assert_array_equal(out[name], seg.masks[name])
        color = node.GetSegmentation().GetSegment(S.segment_id(node, "liver")).GetColor()
        np.testing.assert_allclose(color, seg.colors["liver"], atol=1e-6)


def test_demo_finds_the_scene_writer():
    from medsegsuite import demo

    assert demo._optional(demo.SCENE_WRITER) is save_demo_scene
