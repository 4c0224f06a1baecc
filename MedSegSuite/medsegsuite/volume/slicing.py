"""2D slices of a 3D array along any axis, and back. Slices keep the other two axes in order."""
from __future__ import annotations

import numpy as np

from ..errors import InputError


def _check_axis(array, axis: int) -> int:
    if array.ndim != 3:
        raise InputError(f"expected a 3D array, got shape {array.shape}")
    if axis not in (0, 1, 2, -1, -2, -3):
        raise InputError(f"axis must be 0, 1 or 2, got {axis}")
    return axis % 3


def extract_slice(array: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The 2D slice ``index`` along ``axis`` (a view, remaining axes in increasing order)."""
    axis = _check_axis(array, axis)
    n = array.shape[axis]
    if not 0 <= index < n:
        raise InputError(f"slice {index} is outside 0..{n - 1} along axis {axis}")
    return np.take(array, index, axis=axis)


def insert_slice(array: np.ndarray, axis: int, index: int, slice2d: np.ndarray) -> None:
    """Write a 2D slice back in place (inverse of :func:`extract_slice`)."""
    axis = _check_axis(array, axis)
    expected = tuple(s for d, s in enumerate(array.shape) if d != axis)
    if tuple(slice2d.shape) != expected:
        raise InputError(f"slice of shape {slice2d.shape} does not fit axis {axis} (expected {expected})")
    idx = [slice(None)] * 3
    idx[axis] = index
    array[tuple(idx)] = slice2d


def slices_along(array: np.ndarray, axis: int, indices=None):
    """Yield ``(index, slice)`` pairs along an axis, for all slices or the given indices."""
    axis = _check_axis(array, axis)
    if indices is None:
        indices = range(array.shape[axis])
    for i in indices:
        yield int(i), extract_slice(array, axis, int(i))


def stack_slices(slices, axis: int) -> np.ndarray:
    """Stack 2D slices into a 3D array along ``axis`` (inverse of iterating :func:`slices_along`)."""
    return np.stack(list(slices), axis=axis % 3)
