"""Segments that share one labelmap layer (what the Segment Editor makes by default), on slicer-core.

A shared layer holds several segments, each with its own label value; reading a segment must look
at its value only. An empty segment in a shared layer once read back as its neighbour's voxels,
which made ScribbleSeg report a false overlap, fed CoSAM's Continue the wrong start mask and
clipped writes out of a locked segment that was really empty.
"""
import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
import vtk  # noqa: E402

from MedSegSuiteLib import segments as S  # noqa: E402
from medsegsuite.volume import Geometry  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _module(name):
    path = str(ROOT / name)
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module(name)


@pytest.fixture
def shared():
    """Segment 'liver' with voxels and an empty 'tumour' added next to it, in ONE layer."""
    g = Geometry((12, 10, 8), (0.8, 0.8, 2.0), (5.0, -3.0, 10.0))
    scene = slicer.vtkMRMLScene()
    node = S.new_segmentation_node(scene, "seg", g)
    liver = np.zeros(g.shape, bool)
    liver[2:7, 3:8, 1:6] = True
    S.write_masks(node, {"liver": liver}, g)
    seg = node.GetSegmentation()
    tid = seg.AddEmptySegment("", "tumour")
    assert seg.GetNumberOfLayers() == 1  # the precondition of the bug: one shared layer
    assert seg.GetSegment(tid).GetLabelValue() != seg.GetSegment(S.segment_id(node, "liver")).GetLabelValue()
    return scene, node, g, liver


def test_empty_segment_in_shared_layer_reads_empty(shared):
    scene, node, g, liver = shared
    out = S.read_masks(node, g)
    assert not out["tumour"].any()
    np.testing.assert_array_equal(out["liver"], liver)
    # resampled path (segment read onto another grid) too
    finer = Geometry((24, 20, 16), (0.4, 0.4, 1.0), g.origin)
    assert not S.read_masks(node, finer, ["tumour"])["tumour"].any()
    assert S.read_masks(node, finer, ["liver"])["liver"].sum() > liver.sum()  # 9-10 finer voxels per 5 coarse


def test_scribbles_with_an_empty_class_segment_do_not_overlap(shared):
    """A class segment created before its strokes are drawn is not an overlap."""
    from MedSegSuiteLib.prompts import UNLABELLED, scribble_labels

    scene, node, g, liver = shared
    node.GetSegmentation().AddEmptySegment("", "background")
    labels, classes = scribble_labels(node, g, ["liver", "tumour"])
    assert classes == ["liver", "tumour"]
    assert (labels == 1).sum() == liver.sum()
    assert not (labels == 2).any() and not (labels == 0).any()
    assert (labels == UNLABELLED).sum() == labels.size - liver.sum()


def test_cosam_continue_starts_from_the_segments_own_mask(shared):
    """Continue on an empty segment sharing a layer starts from an empty mask, not the neighbour's."""
    from MedSegSuiteLib.volumes import matrix_to_numpy, volume_to_node
    from medsegsuite.volume import Volume

    scene, node, g, liver = shared
    vol = Volume.from_geometry(np.zeros(g.shape, np.float32), g, name="img")
    vnode = volume_to_node(vol, scene, "img")
    m = vtk.vtkMatrix4x4()
    vnode.GetIJKToRASMatrix(m)
    fid = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    fid.AddControlPoint(vtk.vtkVector3d(*(matrix_to_numpy(m) @ [4.0, 5.0, 3.0, 1.0])[:3]), "p")
    logic = _module("SelfCorrectingSAM").SelfCorrectingSAMLogic(backend_provider=lambda: None)
    task, params, inputs = logic.request(vol, vnode, node, model="m", structure="tumour", points_node=fid,
                                         continue_loop=True)
    assert task == "cosam.segment" and params["structure"] == "tumour"
    assert inputs["start"].shape == g.shape and not inputs["start"].any()
    task, params, inputs = logic.request(vol, vnode, node, model="m", structure="liver", points_node=fid,
                                         continue_loop=True)
    np.testing.assert_array_equal(inputs["start"], liver)


def test_empty_locked_segment_in_shared_layer_does_not_clip_a_write(shared):
    """A locked but empty segment keeps nothing out of a new result."""
    scene, node, g, liver = shared
    S.set_locked(node, "tumour")
    new = np.zeros(g.shape, bool)
    new[0:5, 0:5, 0:4] = True  # overlaps liver
    assert (new & liver).any()
    S.write_masks(node, {"new": new}, g, overwrite="all")
    out = S.read_masks(node, g)
    np.testing.assert_array_equal(out["new"], new)          # not clipped by the empty locked segment
    np.testing.assert_array_equal(out["liver"], liver & ~new)  # the editable neighbour gave way
    assert not out["tumour"].any()
