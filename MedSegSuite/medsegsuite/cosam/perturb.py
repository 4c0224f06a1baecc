"""Synthetic mask errors for training the error decoder (the paper's recipe plus structured errors).

Each call applies one or two of: random pixel flips with probability ``alpha`` (0.2 in the paper)
inside a random box, dilation, erosion, holes, a missing part (a disk cut from the boundary or a
whole component removed) and extra components (blobs away from the mask). Target = perturbed XOR
ground truth.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

KINDS = ("flip", "dilate", "erode", "holes", "missing", "extra")


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
    if kind == "extra" or not m.any():
        for _ in range(rng.integers(1, 3)):
            cy, cx = rng.integers(0, H), rng.integers(0, W)
            m |= _ellipse(m.shape, cy, cx, *(rng.uniform(4, 30, 2) * scale), rng.uniform(0, np.pi))
        return m
    return m


def perturb(mask: np.ndarray, rng: np.random.Generator, alpha: float = 0.2, p_identity: float = 0.1,
            p_flip: float = 0.15) -> np.ndarray:
    """A randomly corrupted copy of a 2D mask (1-2 error kinds; sometimes unchanged)."""
    if rng.random() < p_identity:
        return mask.astype(bool).copy()
    out = mask.astype(bool)
    structured = KINDS[1:]
    for _ in range(rng.integers(1, 3)):
        kind = "flip" if rng.random() < p_flip else structured[rng.integers(len(structured))]
        out = perturb_once(out, kind, rng, alpha)
    return out
