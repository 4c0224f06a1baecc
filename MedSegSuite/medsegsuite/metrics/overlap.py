"""Volume-overlap metrics: THE Dice of the package (every method's evaluation and training report uses it).

Convention, stated once: masks are read as booleans (non-zero = inside); Dice = 2|P∩R| / (|P| + |R|);
both masks empty -> 1.0 (nothing to find, nothing found), exactly one empty -> 0.0.

Slice restriction (``slices=``) takes either ``(axis, indices)`` — an axis of the input array and indices
along it — or ``(engine, indices)`` with a :class:`medsegsuite.volume.SliceEngine` and the plane's
(canonical) slice indices, as every 2D method selects them.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError


def _pair(pred, ref):
    p = np.asarray(pred, dtype=bool)
    r = np.asarray(ref, dtype=bool)
    if p.shape != r.shape:
        raise InputError(f"prediction shape {p.shape} differs from reference shape {r.shape}")
    return p, r


def _dice(p: np.ndarray, r: np.ndarray) -> float:
    s = int(np.count_nonzero(p)) + int(np.count_nonzero(r))
    if s == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(p & r)) / s


def input_slices(slices, shape) -> tuple[int, list[int]]:
    """``(axis, indices)`` or ``(SliceEngine, plane indices)`` -> (input-array axis, input-array indices)."""
    try:
        where, indices = slices
    except (TypeError, ValueError):
        raise InputError("slices must be (axis, indices) or (SliceEngine, indices)") from None
    idx = [int(k) for k in indices]
    if not idx:
        raise InputError("no slices to evaluate")
    if hasattr(where, "input_axis"):  # a SliceEngine: canonical indices -> input indices (flips undone)
        if tuple(where.shape) != tuple(shape):
            raise InputError(f"slice engine of shape {tuple(where.shape)} does not fit masks of shape {tuple(shape)}")
        idx = [where.check_index(k) for k in idx]
        axis = where.input_axis
        if where.flips[where.axis]:
            idx = [shape[axis] - 1 - k for k in idx]
        return axis, idx
    if isinstance(where, str):
        raise InputError(f"slices given by plane name ({where!r}) need the volume's direction: pass "
                         "(SliceEngine, indices) or score through metrics.evaluate_case")
    axis = int(where)
    if not 0 <= axis < len(shape):
        raise InputError(f"slice axis must be 0..{len(shape) - 1}, got {where}")
    bad = [k for k in idx if not 0 <= k < shape[axis]]
    if bad:
        raise InputError(f"slice(s) {bad[:5]} outside 0..{shape[axis] - 1} along axis {axis}")
    return axis, idx


def dice(pred, ref, slices=None) -> float:
    """Dice of two binary masks (see the module doc for empty masks); ``slices`` pools only those slices."""
    p, r = _pair(pred, ref)
    if slices is not None:
        axis, idx = input_slices(slices, p.shape)
        p, r = np.take(p, idx, axis=axis), np.take(r, idx, axis=axis)
    return _dice(p, r)


def slice_dice(pred, ref, slices=None) -> list[float]:
    """Dice of each slice on its own (same order as the indices), e.g. for a mean per-slice Dice.

    ``pred``/``ref`` are 3D masks with ``slices`` as for :func:`dice`, or stacks of 2D slices (n, rows,
    cols) with ``slices=None`` (one Dice per stacked slice)."""
    p, r = _pair(pred, ref)
    if slices is None:
        return [_dice(a, b) for a, b in zip(p, r)]
    axis, idx = input_slices(slices, p.shape)
    return [_dice(np.take(p, k, axis=axis), np.take(r, k, axis=axis)) for k in idx]
