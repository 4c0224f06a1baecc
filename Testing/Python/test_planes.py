"""The slice engine: planes from the direction matrix, exact views, results back on the input grid."""
import itertools

import numpy as np
import pytest

from medsegsuite.errors import InputError
from medsegsuite.volume import SliceEngine, parse_slices, split_slices

LPS = np.diag([-1.0, -1.0, 1.0])


def reorient(array, direction, perm, flips):
    """The same physical image stored with another IJK order and flips: new axis n is old axis
    perm[n], reversed where flips[n]; direction columns follow."""
    d = np.asarray(direction, float)
    b = np.transpose(array, perm)
    cols = []
    for n, (p, f) in enumerate(zip(perm, flips)):
        if f:
            b = np.flip(b, n)
        cols.append(-d[:, p] if f else d[:, p])
    return np.ascontiguousarray(b), np.stack(cols, 1)


ORIENTATIONS = [(p, f) for p in itertools.permutations(range(3)) for f in [(False,) * 3, (True, False, True)]]


@pytest.mark.parametrize("perm,flips", ORIENTATIONS)
@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_every_storage_order_gives_the_same_slices(perm, flips, plane):
    a = np.random.default_rng(0).random((5, 6, 7))
    ref = SliceEngine(a.shape, LPS, plane)
    b, d = reorient(a, LPS, perm, flips)
    eng = SliceEngine(b.shape, d, plane)
    assert eng.n_slices == ref.n_slices and eng.slice_shape == ref.slice_shape
    for k in range(ref.n_slices):
        assert np.array_equal(eng.slice(b, k), ref.slice(a, k))
    # results go back onto the input grid exactly
    out = eng.assemble({k: eng.slice(b, k) > 0.5 for k in range(eng.n_slices)})
    assert np.array_equal(out, b > 0.5)
    # points map both ways
    x, y, k = eng.ijk_to_slice((1, 2, 3))
    assert np.allclose(eng.slice_to_ijk(x, y, k), (1, 2, 3))
    assert eng.slice(b, k)[int(y), int(x)] == b[1, 2, 3]


def test_lps_identity_is_canonical_and_ras_flips_in_plane():
    a = np.arange(60).reshape(3, 4, 5)
    e = SliceEngine(a.shape, LPS)
    assert e.perm == (0, 1, 2) and e.flips == (False, False, False)
    assert np.array_equal(e.slice(a, 2), a[:, :, 2])
    r = SliceEngine(a.shape, LPS, frame="RAS")
    assert np.array_equal(r.slice(a, 2), a[::-1, ::-1, 2])


def test_axial_is_found_in_a_sagittal_first_volume():
    # a volume whose first array axis runs inferior->superior
    d = np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]], float)
    e = SliceEngine((30, 10, 20), d, "axial")
    assert e.input_axis == 0 and e.n_slices == 30 and e.slice_shape == (10, 20)


def test_roi_is_mapped_to_the_canonical_grid():
    a = np.random.default_rng(1).random((6, 7, 8))
    b, d = reorient(a, LPS, (2, 0, 1), (True, False, False))
    eng = SliceEngine(b.shape, d)
    keep = eng.roi_mask((1, 4, 2, 5, 0, 3))
    lo, hi = eng.canonical_roi((1, 4, 2, 5, 0, 3))
    can = eng.canonical(keep)
    assert can[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].all() and can.sum() == keep.sum()
    with pytest.raises(InputError):
        eng.canonical_roi((0, 0, 0, 1, 0, 1))


def test_slice_selection_and_split_are_one_convention():
    assert parse_slices("every:8", 32) == [4, 12, 20, 28]
    assert parse_slices("2:5", 10) == [2, 3, 4]
    assert parse_slices([3, 1, 3], 10) == [1, 3]
    for bad in ("11", "x", [], "every:0"):
        with pytest.raises(InputError):
            parse_slices(bad, 10)
    train, held = split_slices("interleaved:4", 12)
    assert held == [0, 4, 8] and not set(train) & set(held) and len(train) + len(held) == 12
    train, held = split_slices("block:0.5", 64)
    assert max(train) < min(held) - 1
    with pytest.raises(InputError):
        split_slices("random", 10)


def test_wrong_shapes_are_clear_errors():
    e = SliceEngine((4, 5, 6), LPS)
    with pytest.raises(InputError, match="does not fit"):
        e.slice(np.zeros((4, 5, 7)), 0)
    with pytest.raises(InputError, match="outside"):
        e.slice(np.zeros((4, 5, 6)), 6)
    with pytest.raises(InputError, match="plane"):
        SliceEngine((4, 5, 6), LPS, "oblique")
