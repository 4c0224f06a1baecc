"""Shape-based interpolation between two 2D masks (signed distance maps, blended linearly).

The in-between slice of two similar contours is the zero level of the weighted mean of their signed
distance maps: a smooth morph, not a union or an intersection. A pixel outside both masks has a
positive distance in both, so the result never leaves their union (an in-plane ROI stays respected).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def signed_distance(mask: np.ndarray, sampling=None) -> np.ndarray:
    """Distance to the contour in mm (``sampling``: pixel size per axis), negative inside. An empty or
    full mask gets a constant (the morph towards it then follows the other mask's shape)."""
    mask = np.asarray(mask, bool)
    big = float(np.hypot(*np.multiply(mask.shape, sampling if sampling is not None else 1.0)))
    if not mask.any():
        return np.full(mask.shape, big, np.float32)
    if mask.all():
        return np.full(mask.shape, -big, np.float32)
    out = ndimage.distance_transform_edt(~mask, sampling=sampling) - ndimage.distance_transform_edt(mask, sampling=sampling)
    return out.astype(np.float32)


def between(a: np.ndarray, b: np.ndarray, t: float, sampling=None, sdf_a=None, sdf_b=None) -> np.ndarray:
    """The mask a fraction ``t`` (0 = ``a``, 1 = ``b``) of the way from ``a`` to ``b``."""
    da = signed_distance(a, sampling) if sdf_a is None else sdf_a
    db = signed_distance(b, sampling) if sdf_b is None else sdf_b
    return ((1.0 - t) * da + t * db) < 0


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two masks, 0 when either is empty (two empty slices are no evidence of a shape between)."""
    from ..metrics.overlap import dice

    return dice(a, b) if np.any(a) and np.any(b) else 0.0
