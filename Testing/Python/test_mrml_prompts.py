"""Prompts drawn in Slicer -> arrays: fiducials -> IJK with +/- labels, ROI -> box, scribbles -> labels."""
import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
import vtk  # noqa: E402

from MedSegSuiteLib import prompts as P  # noqa: E402
from MedSegSuiteLib import segments as S  # noqa: E402
from MedSegSuiteLib.volumes import matrix_to_numpy, numpy_to_matrix, volume_to_node  # noqa: E402
from medsegsuite.errors import InputError  # noqa: E402


def _ras_of_voxel(node, ijk):
    """RAS of a voxel centre from the *node's own* matrix (independent of our Geometry maths)."""
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return (matrix_to_numpy(m) @ np.r_[np.asarray(ijk, float), 1.0])[:3]


def test_fiducials_map_to_the_right_voxel(oblique_volume):
    scene = slicer.vtkMRMLScene()
    vol = volume_to_node(oblique_volume, scene)
    fid = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "clicks")
    targets = [(3, 5, 2), (8, 0, 6), (0, 10, 0)]
    for n, ijk in enumerate(targets):
        # off-centre by 0.3 voxel: still inside the same voxel
        p = _ras_of_voxel(vol, np.add(ijk, [0.3, -0.3, 0.2]))
        fid.AddControlPoint(vtk.vtkVector3d(*p), f"p{n}")
    P.set_point_sign(fid, 1, positive=False)
    fid.SetNthControlPointDescription(2, "Background")
    pts = P.points_from_fiducials(fid, oblique_volume.geometry)
    np.testing.assert_array_equal(pts.ijk, targets)
    np.testing.assert_array_equal(pts.labels, [1, 0, 0])
    neg = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "negatives")
    neg.SetAttribute(P.SIGN_ATTRIBUTE, "-")
    neg.AddControlPoint(vtk.vtkVector3d(*_ras_of_voxel(vol, (1, 1, 1))), "n")
    both = P.points_from_fiducials([fid, neg], oblique_volume.geometry)
    np.testing.assert_array_equal(both.labels, [1, 0, 0, 0])
    assert both.to_inputs()["points"].shape == (4, 3)
    fid.AddControlPoint(vtk.vtkVector3d(*_ras_of_voxel(vol, (40, 0, 0))), "far")
    with pytest.raises(InputError, match="outside the image"):
        P.points_from_fiducials(fid, oblique_volume.geometry)


def test_roi_to_box(oblique_volume):
    scene = slicer.vtkMRMLScene()
    vol = volume_to_node(oblique_volume, scene)
    g = oblique_volume.geometry
    # an ROI aligned with the image axes spanning voxels i 2..5, j 3..8, k 1..4 (edges at half voxels)
    lo, hi = np.array([2, 3, 1]), np.array([5, 8, 4])
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    m = np.eye(4)
    m[:3, :3] = g.direction_matrix
    m[:3, 3] = _ras_of_voxel(vol, (lo + hi) / 2.0)
    roi.SetAndObserveObjectToNodeMatrix(numpy_to_matrix(m))
    roi.SetSize(*((hi - lo + 1) * np.array(g.spacing)))
    box = P.box_from_roi(roi, g)
    assert box.lo == tuple(lo) and box.hi == tuple(hi + 1)
    roi.SetSize(*((hi - lo - 0.2) * np.array(g.spacing)))  # edges past the end voxel centres: drop them
    assert P.box_from_roi(roi, g).lo == tuple(lo + 1) and P.box_from_roi(roi, g).hi == tuple(hi)
    roi.SetSize(1000, 1000, 1000)                   # clipped to the image
    assert P.box_from_roi(roi, g).hi == g.shape and P.box_from_roi(roi, g).lo == (0, 0, 0)


def test_scribble_segments_to_label_array(oblique_volume):
    scene = slicer.vtkMRMLScene()
    volume_to_node(oblique_volume, scene)
    g = oblique_volume.geometry
    seg = S.new_segmentation_node(scene, "scribbles", g)
    bg = np.zeros(g.shape, bool); bg[0, :, :] = True
    liver = np.zeros(g.shape, bool); liver[4, 2:9, 3] = True
    tumour = np.zeros(g.shape, bool); tumour[6, 5, 1:6] = True
    S.write_masks(seg, {"liver": liver, "background": bg, "tumour": tumour}, g)
    lab, classes = P.scribble_labels(seg, g)
    assert classes == ["liver", "tumour"]
    expected = np.full(g.shape, 255, np.uint8)
    expected[bg], expected[liver], expected[tumour] = 0, 1, 2
    np.testing.assert_array_equal(lab, expected)
    lab2, classes2 = P.scribble_labels(seg, g, classes=["tumour", "liver"])
    assert lab2[6, 5, 3] == 1 and lab2[4, 4, 3] == 2
    clash = liver.copy(); clash[6, 5, 2] = True
    S.write_masks(seg, {"liver": clash}, g)
    with pytest.raises(InputError, match="overlap"):
        P.scribble_labels(seg, g)
