"""THE Dice (medsegsuite.metrics.dice / slice_dice): empty-mask convention, slice restriction by array axis
and by plane (SliceEngine, flips undone), per-slice Dice."""
from __future__ import annotations

import numpy as np
import pytest

from medsegsuite.errors import InputError
from medsegsuite.metrics import dice, slice_dice
from medsegsuite.volume import SliceEngine


def test_empty_mask_convention_and_formula():
    z = np.zeros((4, 5, 6), bool)
    a = z.copy()
    a[1:3, 1:4, 2] = True  # 6 voxels
    b = z.copy()
    b[2:4, 1:4, 2] = True  # 6 voxels, 3 shared
    assert dice(z, z) == 1.0  # both empty: nothing to find, nothing found
    assert dice(a, z) == 0.0 and dice(z, a) == 0.0
    assert dice(a, b) == pytest.approx(2 * 3 / 12)
    assert dice(a.astype(np.uint8) * 7, b) == dice(a, b)  # non-zero = inside
    with pytest.raises(InputError, match="differs"):
        dice(a, b[:, :, :5])


def test_slice_restriction_by_axis_matches_cropping():
    rng = np.random.default_rng(1)
    p, r = rng.random((6, 7, 8)) > 0.5, rng.random((6, 7, 8)) > 0.5
    idx = [1, 4, 6]
    assert dice(p, r, slices=(2, idx)) == dice(p[:, :, idx], r[:, :, idx])
    assert dice(p, r, slices=(0, [2])) == dice(p[2], r[2])
    per = slice_dice(p, r, (1, idx))
    assert per == [dice(p[:, k], r[:, k]) for k in idx]
    assert slice_dice(np.moveaxis(p, 2, 0)[idx], np.moveaxis(r, 2, 0)[idx], None) == slice_dice(p, r, (2, idx))
    empty = np.zeros_like(p)
    assert slice_dice(empty, empty, (2, [0, 3])) == [1.0, 1.0]
    with pytest.raises(InputError, match="outside"):
        dice(p, r, slices=(2, [8]))
    with pytest.raises(InputError):
        dice(p, r, slices=(2, []))


def test_slice_restriction_by_plane_undoes_the_volume_flips():
    """A volume stored head-first and transposed: axial (plane) slice k is the input array's slice found by
    the engine, not array index k."""
    shape = (5, 9, 7)
    direction = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]])  # i runs inferior, j right, k anterior
    eng = SliceEngine(shape, direction, "axial")
    assert eng.input_axis == 0 and eng.flips[eng.axis]
    rng = np.random.default_rng(2)
    p, r = rng.random(shape) > 0.6, rng.random(shape) > 0.6
    k = 1
    expect = dice(eng.slice(p, k), eng.slice(r, k))
    assert dice(p, r, slices=(eng, [k])) == expect
    assert expect == dice(p[shape[0] - 1 - k], r[shape[0] - 1 - k])
    assert slice_dice(p, r, (eng, [0, 1, 4])) == [dice(eng.slice(p, j), eng.slice(r, j)) for j in (0, 1, 4)]
    with pytest.raises(InputError, match="does not fit"):
        dice(p[:4], r[:4], slices=(eng, [0]))


def test_the_methods_private_dice_functions_are_gone():
    """One Dice: the per-method copies were replaced by medsegsuite.metrics."""
    import medsegsuite.cosam.demo as cdemo
    import medsegsuite.demo as demo
    import medsegsuite.tta.train as ttrain

    assert not hasattr(demo, "dice_on_slices") and not hasattr(cdemo, "_slice_dice")
    assert not hasattr(ttrain, "dice_score")
