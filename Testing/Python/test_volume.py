"""Volume geometry and slicing."""
import numpy as np
import pytest

from medsegsuite.errors import InputError
from medsegsuite.volume import Geometry, Volume


def test_ijk_to_ras_maps_voxels_by_spacing_and_direction(oblique_volume):
    v = oblique_volume
    m = v.ijk_to_ras
    d = np.asarray(v.direction)
    expected = np.asarray(v.origin) + d @ (np.array([2, 3, 4]) * np.asarray(v.spacing))
    assert np.allclose(m @ [2, 3, 4, 1], [*expected, 1])
    g = v.geometry
    assert np.allclose(g.ras_to_ijk_points(g.ijk_to_ras_points([[2, 3, 4]])), [[2, 3, 4]])
    assert Geometry.from_ijk_to_ras(v.shape, m).same_as(g)


def test_bad_volumes_are_refused_with_clear_errors():
    with pytest.raises(InputError, match="4D"):
        Volume(np.zeros((2, 3, 4, 5)))
    with pytest.raises(InputError, match="3D"):
        Volume(np.zeros((3, 4)))
    with pytest.raises(InputError, match="spacing"):
        Volume(np.zeros((2, 2, 2)), spacing=(1, 0, 1))
    with pytest.raises(InputError, match="orthonormal"):
        Volume(np.zeros((2, 2, 2)), direction=((2, 0, 0), (0, 1, 0), (0, 0, 1)))
    v = Volume(np.array([[[np.nan, 1.0]]]))
    with pytest.raises(InputError, match="NaN"):
        v.require_finite()
    with pytest.raises(InputError, match="NaN"):  # a failed check is not remembered
        v.require_finite()
    ok = Volume(np.array([[[0.0, 1.0]]]))
    assert ok.require_finite() is ok  # a passed one is (a click does not re-scan the CT) ...
    ok.array = np.array([[[np.inf, 1.0]]])
    with pytest.raises(InputError, match="NaN/Inf"):  # ... until the array is replaced
        ok.require_finite()


def test_require_same_names_the_difference(oblique_volume):
    g = oblique_volume.geometry
    other = Geometry(g.shape, (1, 1, 1), g.origin, g.direction)
    with pytest.raises(InputError, match="geometry differs"):
        g.require_same(other)
    with pytest.raises(InputError, match="shape"):
        g.require_same(Geometry((1, 2, 3)))


def test_fingerprint_changes_with_content_and_geometry(oblique_volume):
    v = oblique_volume
    assert v.fingerprint() == Volume(v.array.copy(), v.spacing, v.origin, v.direction).fingerprint()
    assert v.fingerprint() != v.with_array(v.array + 1).fingerprint()
    assert v.fingerprint() != Volume(v.array, (1, 1, 1), v.origin, v.direction).fingerprint()
