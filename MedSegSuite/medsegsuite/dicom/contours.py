"""Mask slices <-> closed planar contours, the form RT Structure Sets store.

Out: each k slice's mask is traced with marching squares at level 0.5 (``skimage.measure.find_contours``
on a zero-padded slice, so every contour closes). Outer boundaries and hole boundaries both become
separate contours, as treatment planning systems write them; several islands give several contours.
The traced line runs half-way between inside and outside pixel centres, so filling the polygons
again selects exactly the original pixels.

In: contours are filled with the even-odd rule per slice (each contour toggles the pixels whose
centre it encloses), so a contour inside another is a hole and an island inside that hole is filled
again. rt-utils (OpenCV ``fillPoly``) and dicompyler-core read holes the same way.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..volume import Geometry

_LPS = np.diag([-1.0, -1.0, 1.0])


def drop_collinear(c: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    """A closed polygon (n, 2) without the points that lie on the straight line through their
    neighbours (the traced line is unchanged; a liver's contours shrink ~3x)."""
    prev, nxt = np.roll(c, 1, axis=0), np.roll(c, -1, axis=0)
    a, b = c - prev, nxt - c
    cross = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    keep = (np.abs(cross) > tol) | ((a * b).sum(1) <= 0)
    return c[keep] if keep.sum() >= 3 else c


def slice_contours(mask2d: np.ndarray) -> list[np.ndarray]:
    """Closed contours (n, 2) in (i, j) pixel coordinates of one [i, j] slice; the closing point is
    not repeated, nor points on a straight run."""
    from skimage.measure import find_contours

    m = np.pad(np.asarray(mask2d, dtype=np.float64), 1)
    out = []
    for c in find_contours(m, 0.5, fully_connected="low", positive_orientation="high"):
        c = c - 1.0  # undo the padding
        if len(c) > 1 and np.allclose(c[0], c[-1]):
            c = c[:-1]
        if len(c) >= 3:
            out.append(drop_collinear(c))
    return out


def mask_to_contours(mask: np.ndarray, geometry: Geometry) -> dict[int, list[np.ndarray]]:
    """{k: [contour (n, 3) in LPS mm]} for every k slice of a [i, j, k] mask on ``geometry``."""
    mask = np.asarray(mask, bool)
    if mask.shape != geometry.shape:
        raise InputError(f"mask of shape {mask.shape} does not fit the grid {geometry.shape}")
    out = {}
    for k in np.nonzero(mask.any(axis=(0, 1)))[0]:
        cs = []
        for c in slice_contours(mask[:, :, k]):
            ijk = np.c_[c, np.full(len(c), float(k))]
            cs.append(geometry.ijk_to_ras_points(ijk) @ _LPS.T)
        if cs:
            out[int(k)] = cs
    return out


def fill_slice(polygons_ij, shape2d) -> np.ndarray:
    """Even-odd fill of polygons given in (i, j) pixel coordinates on an [i, j] slice."""
    from skimage.draw import polygon

    out = np.zeros(shape2d, bool)
    for p in polygons_ij:
        p = np.asarray(p, float)
        if len(p) < 3:
            continue
        rr, cc = polygon(p[:, 0], p[:, 1], shape=shape2d)
        layer = np.zeros(shape2d, bool)
        layer[rr, cc] = True
        out ^= layer
    return out


def contours_to_mask(contours_lps, geometry: Geometry, what: str = "contour", tol: float = 0.05) -> np.ndarray:
    """Fill planar contours (each (n, 3) LPS mm) onto the k slices of ``geometry``.

    Every contour must lie in one k slice plane of the grid (within ``tol`` of a slice, in slices);
    one that does not (another frame of reference or an oblique contour) is an error naming it."""
    by_slice: dict[int, list] = {}
    nk = geometry.shape[2]
    for n, c in enumerate(contours_lps):
        c = np.asarray(c, float).reshape(-1, 3)
        ijk = geometry.ras_to_ijk_points(c @ _LPS.T)
        k = np.round(ijk[:, 2])
        if np.ptp(ijk[:, 2]) > 2 * tol or abs(ijk[0, 2] - k[0]) > tol:
            raise InputError(f"{what} #{n + 1} does not lie in a slice plane of the image grid (slice coordinate "
                             f"{ijk[:, 2].min():.2f}..{ijk[:, 2].max():.2f}); is it on another series or frame of "
                             "reference?")
        k = int(k[0])
        if not 0 <= k < nk:
            continue  # outside the image: nothing of it can be drawn on this grid
        by_slice.setdefault(k, []).append(ijk[:, :2])
    mask = np.zeros(geometry.shape, bool)
    for k, polys in by_slice.items():
        mask[:, :, k] = fill_slice(polys, geometry.shape[:2])
    return mask
