"""Volume node <-> Volume on slicer-core's real MRML classes (geometry must survive exactly)."""
import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
import vtk  # noqa: E402  (slicer-core pins its vtk)

from MedSegSuiteLib.volumes import (geometry_from_node, matrix_to_numpy, numpy_to_matrix,  # noqa: E402
                                    volume_from_node, volume_to_node)
from medsegsuite.errors import InputError  # noqa: E402
from medsegsuite.volume import Volume  # noqa: E402


def test_round_trip_non_axis_aligned(oblique_volume):
    scene = slicer.vtkMRMLScene()
    node = volume_to_node(oblique_volume, scene, "oblique")
    # the node's own IJK-to-RAS matrix is the Volume's (directions x spacing + origin)
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    np.testing.assert_allclose(matrix_to_numpy(m), oblique_volume.ijk_to_ras, atol=1e-12)
    back = volume_from_node(node)
    assert back.array.dtype == oblique_volume.array.dtype
    np.testing.assert_array_equal(back.array, oblique_volume.array)
    np.testing.assert_allclose(back.ijk_to_ras, oblique_volume.ijk_to_ras, atol=1e-12)
    # voxel (i, j, k) of the array is voxel (i, j, k) of the VTK image
    img = node.GetImageData()
    assert img.GetDimensions() == oblique_volume.shape
    assert img.GetScalarComponentAsDouble(3, 5, 2, 0) == pytest.approx(float(oblique_volume.array[3, 5, 2]))


def test_linear_parent_transform_is_folded_in(oblique_volume):
    scene = slicer.vtkMRMLScene()
    node = volume_to_node(oblique_volume, scene)
    t = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = np.eye(4)
    shift[:3, 3] = [5.0, -7.0, 11.0]
    t.SetMatrixTransformToParent(numpy_to_matrix(shift))
    node.SetAndObserveTransformNodeID(t.GetID())
    g = geometry_from_node(node)
    np.testing.assert_allclose(g.ijk_to_ras, shift @ oblique_volume.ijk_to_ras, atol=1e-9)


def test_update_existing_node_and_bad_input():
    scene = slicer.vtkMRMLScene()
    v = Volume(np.arange(24, dtype=np.int16).reshape(2, 3, 4), (1, 2, 3), (4, 5, 6))
    node = volume_to_node(v, scene, "a")
    v2 = Volume(np.ones((3, 3, 3), np.uint8), (0.5, 0.5, 0.5))
    assert volume_to_node(v2, scene, node=node) is node
    np.testing.assert_array_equal(volume_from_node(node).array, v2.array)
    assert volume_from_node(node).spacing == (0.5, 0.5, 0.5)
    with pytest.raises(InputError, match="scalar volume"):
        volume_from_node(scene.AddNewNodeByClass("vtkMRMLSegmentationNode"))
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    with pytest.raises(InputError, match="no image data"):
        volume_from_node(empty)


def test_unchanged_node_is_read_and_fingerprinted_once(oblique_volume, monkeypatch):
    from MedSegSuiteLib import volumes

    scene = slicer.vtkMRMLScene()
    node = volume_to_node(oblique_volume, scene, "ct")
    calls = []
    real = Volume._hash
    monkeypatch.setattr(Volume, "_hash", lambda self: calls.append(1) or real(self))
    a = volumes.cached_volume_from_node(node)
    fp = a.fingerprint()
    b = volumes.cached_volume_from_node(node)
    assert b is a and b.fingerprint() == fp and len(calls) == 1
    # an edit of the voxels (as arrayFromVolumeModified does) is a new image
    node.GetImageData().GetPointData().GetScalars().SetValue(0, 1234)
    node.GetImageData().Modified()
    c = volumes.cached_volume_from_node(node)
    assert c is not a and c.array[0, 0, 0] == 1234 and c.fingerprint() != fp and len(calls) == 2
    # moving the node under a transform is a new geometry
    t = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = np.eye(4)
    shift[:3, 3] = [1.0, 0.0, 0.0]
    t.SetMatrixTransformToParent(numpy_to_matrix(shift))
    node.SetAndObserveTransformNodeID(t.GetID())
    d = volumes.cached_volume_from_node(node)
    assert d is not c and not np.allclose(d.origin, c.origin)
