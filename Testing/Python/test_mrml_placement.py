"""Where results land in a segmentation, on slicer-core: under a linear transform, and on a reference
geometry the user chose (Segment Editor > Specify geometry), which a write must not reset."""
import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
import vtk  # noqa: E402

from MedSegSuiteLib import segments as S  # noqa: E402
from MedSegSuiteLib.volumes import numpy_to_matrix  # noqa: E402
from medsegsuite.volume import Geometry  # noqa: E402

G = Geometry((16, 14, 8), (1.0, 1.0, 2.0), (3.0, 4.0, 5.0))
REF = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()


def box():
    m = np.zeros(G.shape, bool)
    m[2:6, 3:9, 1:5] = True
    return m


def world_centroid(node, name):
    """The segment's centroid in world RAS: its stored labelmap (node frame) through the node's transform."""
    img = slicer.vtkOrientedImageData()
    sid = S.segment_id(node, name)
    slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(node, sid, img, False)
    from MedSegSuiteLib.volumes import array_from_image_data, matrix_to_numpy

    arr = array_from_image_data(img)
    label = node.GetSegmentation().GetSegment(sid).GetLabelValue()
    ext = img.GetExtent()
    ijk = np.argwhere(arr == label).mean(axis=0) + [ext[0], ext[2], ext[4]]
    m = vtk.vtkMatrix4x4()
    img.GetImageToWorldMatrix(m)
    local = matrix_to_numpy(m) @ np.r_[ijk, 1.0]
    t = vtk.vtkMatrix4x4()
    node.GetParentTransformNode().GetMatrixTransformToWorld(t)
    return (matrix_to_numpy(t) @ local)[:3]


def test_output_under_a_transform_gets_results_in_place():
    scene = slicer.vtkMRMLScene()
    node = S.new_segmentation_node(scene, "seg")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    rot = np.eye(4)
    c, s = np.cos(0.3), np.sin(0.3)
    rot[:2, :2] = [[c, -s], [s, c]]
    rot[:3, 3] = [20.0, -7.0, 12.0]
    transform.SetMatrixTransformToParent(numpy_to_matrix(rot))
    node.SetAndObserveTransformNodeID(transform.GetID())
    m = box()
    S.write_masks(node, {"liver": m}, G)
    expected = (G.ijk_to_ras @ np.r_[np.argwhere(m).mean(axis=0), 1.0])[:3]
    np.testing.assert_allclose(world_centroid(node, "liver"), expected, atol=1e-6)  # where the image has it
    np.testing.assert_array_equal(S.read_masks(node, G, ["liver"])["liver"], m)   # and it reads back there


def test_a_user_chosen_reference_geometry_is_kept():
    scene = slicer.vtkMRMLScene()
    fine = Geometry((32, 28, 16), (0.5, 0.5, 1.0), (2.75, 3.75, 4.5))  # the image grid oversampled 2x
    node = S.new_segmentation_node(scene, "seg", fine)
    chosen = node.GetSegmentation().GetConversionParameter(REF)
    m = box()
    S.write_masks(node, {"liver": m}, G)
    assert node.GetSegmentation().GetConversionParameter(REF) == chosen  # not reset to the image grid
    img = slicer.vtkOrientedImageData()
    slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(
        node, S.segment_id(node, "liver"), img)
    np.testing.assert_allclose(img.GetSpacing(), (0.5, 0.5, 1.0))  # stored on the chosen grid
    np.testing.assert_array_equal(S.read_masks(node, G, ["liver"])["liver"], m)
    assert S.read_masks(node, fine, ["liver"])["liver"].sum() == m.sum() * 8


def test_a_reference_geometry_that_misses_the_image_is_not_used_to_crop():
    scene = slicer.vtkMRMLScene()
    elsewhere = Geometry((8, 8, 4), (1.0, 1.0, 2.0), (300.0, 300.0, 300.0))
    node = S.new_segmentation_node(scene, "seg", elsewhere)
    m = box()
    S.write_masks(node, {"liver": m}, G)
    np.testing.assert_array_equal(S.read_masks(node, G, ["liver"])["liver"], m)


def test_a_segmentation_without_reference_gets_the_image_grid():
    node = S.new_segmentation_node(slicer.vtkMRMLScene(), "seg")
    assert S.reference_geometry(node) is None
    S.write_masks(node, {"liver": box()}, G)
    assert S.same_grid(S.reference_geometry(node), G)
