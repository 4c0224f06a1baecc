"""Synthetic mask errors for training the error decoder (the paper's recipe plus structured errors).

Each call applies one or two of: random pixel flips with probability ``alpha`` (0.2 in the paper)
inside a random box, dilation, erosion, holes, a missing part (a disk cut from the boundary or a
whole component removed), extra components (blobs away from the mask), and two *large* kinds, since
real errors on unseen slices are large (a review measured them covering ~29 % of the grid while the
small kinds stay under a few %): ``cut`` (a half-plane removes 25-75 % of the mask) and ``leak``
(the mask spills 10-45 % of the grid's side into a wedge of its surroundings). Target = perturbed
XOR ground truth. Real errors (coarse masks of heads that never saw the slice, the refine head's own
rounds) are mixed in by the training code (:mod:`.train`).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

KINDS = ("flip", "dilate", "erode", "holes", "missing", "extra", "cut", "leak")
LARGE = ("cut", "leak")


def _disk(shape, cy, cx, r):
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _ellipse(shape, cy, cx, ry, rx, theta):
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    y, x = yy - cy, xx - cx
    c, s = np.cos(theta), np.sin(theta)
    return ((x * c + y * s) / rx) ** 2 + ((-x * s + y * c) / ry) ** 2 <= 1.0


def perturb_once(mask: np.ndarray, kind: str, rng: np.random.Generator, alpha: float = 0.2) -> np.ndarray:
    m = mask.astype(bool).copy()
    H, W = m.shape
    scale = max(H, W) / 256.0
    if kind == "flip":
        h, w = rng.integers(H // 8, H + 1), rng.integers(W // 8, W + 1)
        y0, x0 = rng.integers(0, H - h + 1), rng.integers(0, W - w + 1)
        flip = np.zeros_like(m)
        flip[y0:y0 + h, x0:x0 + w] = rng.random((h, w)) < alpha
        return m ^ flip
    if kind == "dilate" and m.any():
        r = rng.uniform(2, 14) * scale
        return ndimage.distance_transform_edt(~m) <= r
    if kind == "erode" and m.any():
        r = rng.uniform(2, 14) * scale
        return ndimage.distance_transform_edt(m) > r
    if kind == "holes" and m.any():
        ys, xs = np.nonzero(m)
        for _ in range(rng.integers(1, 4)):
            j = rng.integers(len(ys))
            m &= ~_ellipse(m.shape, ys[j], xs[j], *(rng.uniform(3, 20, 2) * scale), rng.uniform(0, np.pi))
        return m
    if kind == "missing" and m.any():
        lab, n = ndimage.label(m)
        if n > 1 and rng.random() < 0.5:
            return m & (lab != rng.integers(1, n + 1))
        edge = m & ~ndimage.binary_erosion(m)
        ys, xs = np.nonzero(edge)
        j = rng.integers(len(ys))
        return m & ~_disk(m.shape, ys[j], xs[j], rng.uniform(8, 40) * scale)
    if kind == "cut" and m.any():
        ys, xs = np.nonzero(m)
        theta = rng.uniform(0, 2 * np.pi)
        proj = (ys - ys.mean()) * np.sin(theta) + (xs - xs.mean()) * np.cos(theta)
        t = np.quantile(proj, rng.uniform(0.25, 0.75))  # this fraction of the mask is kept
        yy, xx = np.ogrid[:H, :W]
        side = (yy - ys.mean()) * np.sin(theta) + (xx - xs.mean()) * np.cos(theta) > t
        return m & ~side
    if kind == "leak" and m.any():
        ys, xs = np.nonzero(m)
        cy, cx = ys.mean(), xs.mean()
        r = rng.uniform(0.10, 0.45) * max(H, W)
        grown = ndimage.distance_transform_edt(~m) <= r
        yy, xx = np.ogrid[:H, :W]
        ang = np.arctan2(yy - cy, xx - cx)
        centre, half = rng.uniform(-np.pi, np.pi), rng.uniform(np.pi / 8, np.pi / 2)
        wedge = np.abs(np.angle(np.exp(1j * (ang - centre)))) <= half
        return m | (grown & wedge)
    if kind == "extra" or not m.any():
        for _ in range(rng.integers(1, 3)):
            cy, cx = rng.integers(0, H), rng.integers(0, W)
            m |= _ellipse(m.shape, cy, cx, *(rng.uniform(4, 30, 2) * scale), rng.uniform(0, np.pi))
        return m
    return m


def perturb(mask: np.ndarray, rng: np.random.Generator, alpha: float = 0.2, p_identity: float = 0.1,
            p_flip: float = 0.15, p_large: float = 0.0) -> np.ndarray:
    """A randomly corrupted copy of a 2D mask (1-2 error kinds; sometimes unchanged). ``p_large``: the
    chance that each error is a large one (``cut`` or ``leak``); 0 keeps the small-error recipe."""
    if rng.random() < p_identity:
        return mask.astype(bool).copy()
    out = mask.astype(bool)
    small = tuple(k for k in KINDS[1:] if k not in LARGE)
    for _ in range(rng.integers(1, 3)):
        if rng.random() < p_large:
            kind = LARGE[rng.integers(len(LARGE))]
        else:
            kind = "flip" if rng.random() < p_flip else small[rng.integers(len(small))]
        out = perturb_once(out, kind, rng, alpha)
    return out
