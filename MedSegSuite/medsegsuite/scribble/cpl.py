"""Continuous pseudo labels (CPL): scribbles -> a soft label map.

For each class c, ``d_c`` is the Euclidean distance (mm, using the pixel spacing, so anisotropic
grids are handled) from every pixel to the nearest scribble of c. Confidence decays as
``exp(-d_c / tau)`` and is normalised over classes, i.e. ``softmax(-d / tau)``, computed in that
form so pixels far from every scribble do not underflow to 0/0. On a scribbled pixel the label is
exactly one-hot (the scribble is ground truth). A class with no scribble in the map gets
confidence 0 everywhere.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import InputError
from .labels import UNLABELLED

DEFAULT_TAU_MM = 8.0  # chosen on validation slices, see docs/scribble.md


def class_distances(scribbles: np.ndarray, n_classes: int, spacing=None,
                    unlabelled: int = UNLABELLED) -> np.ndarray:
    """[C, ...] distance in mm from each pixel to the scribbles of each class (inf if none)."""
    s = np.asarray(scribbles)
    spacing = tuple(float(v) for v in (spacing if spacing is not None else (1.0,) * s.ndim))
    if len(spacing) != s.ndim:
        raise InputError(f"spacing {spacing} does not match the {s.ndim}D scribble map")
    d = np.full((n_classes,) + s.shape, np.inf, dtype=np.float32)
    for c in range(n_classes):
        m = s == c
        if c == unlabelled or not m.any():
            continue
        d[c] = ndimage.distance_transform_edt(~m, sampling=spacing)
    return d


def continuous_pseudo_labels(scribbles: np.ndarray, n_classes: int, spacing=None, tau: float = DEFAULT_TAU_MM,
                             unlabelled: int = UNLABELLED) -> np.ndarray:
    """[C, ...] float32 soft labels summing to 1 over classes (see module docstring).

    Pixels where no class has a scribble (an empty map) get a uniform label."""
    if not tau > 0:
        raise InputError(f"CPL tau must be a positive distance in mm, got {tau}")
    s = np.asarray(scribbles)
    d = class_distances(s, n_classes, spacing, unlabelled)
    logits = -d / float(tau)
    finite = np.isfinite(logits)
    if not finite.any():
        return np.full(d.shape, 1.0 / n_classes, dtype=np.float32)
    logits = np.where(finite, logits, -np.inf)
    top = logits.max(axis=0, keepdims=True)
    e = np.exp(logits - top)
    p = (e / e.sum(axis=0, keepdims=True)).astype(np.float32)
    lab = s != unlabelled
    if lab.any():
        onehot = np.zeros_like(p)
        idx = np.clip(s, 0, n_classes - 1).astype(np.int64)
        np.put_along_axis(onehot, idx[None], 1.0, axis=0)
        p = np.where(lab[None], onehot, p)
    return p
