"""Prompts from a corrected mask: top-K error-confidence points, the box of the largest component,
and the mask itself (as the dense prompt, handled by the model).

All coordinates here are on the decoder's low-res mask grid (S x S, 256 x 256 for LiteMedSAM and
SAM), ``x`` = column, ``y`` = row; :class:`~medsegsuite.cosam.model.CoSAM` scales them to the
prompt encoder's input size.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage


@dataclass
class Prompt:
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))  # (n, 2) x, y
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))  # 1 fg, 0 bg
    box: np.ndarray | None = None  # (4,) x0, y0, x1, y1


def largest_component_box(mask: np.ndarray):
    """(x0, y0, x1, y1) of the largest 8-connected component, or None for an empty mask."""
    if not mask.any():
        return None
    lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n > 1:
        sizes = np.bincount(lab.ravel())[1:]
        comp = lab == (1 + int(np.argmax(sizes)))
    else:
        comp = mask
    ys, xs = np.nonzero(comp)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)


def top_error_points(err_prob: np.ndarray, k: int, min_dist: float, threshold: float = 0.5,
                     exclude=None, max_candidates: int = 4096) -> np.ndarray:
    """Up to k (x, y) pixels of highest error probability (> threshold), at least ``min_dist`` apart
    and at least ``min_dist`` from any point in ``exclude`` (the user's clicks)."""
    flat = err_prob.ravel()
    cand = np.flatnonzero(flat > threshold)
    if not len(cand) or k <= 0:
        return np.zeros((0, 2), np.float32)
    if len(cand) > max_candidates:
        cand = cand[np.argpartition(-flat[cand], max_candidates)[:max_candidates]]
    cand = cand[np.argsort(-flat[cand], kind="stable")]
    W = err_prob.shape[1]
    chosen = [tuple(p) for p in (np.asarray(exclude, np.float32).reshape(-1, 2) if exclude is not None else [])]
    n_excl = len(chosen)
    d2 = min_dist * min_dist
    for c in cand:
        y, x = divmod(int(c), W)
        if all((x - cx) ** 2 + (y - cy) ** 2 >= d2 for cx, cy in chosen):
            chosen.append((x, y))
            if len(chosen) - n_excl >= k:
                break
    return np.asarray(chosen[n_excl:], np.float32).reshape(-1, 2)


def build_prompts(corrected: np.ndarray, err_prob: np.ndarray, k: int = 5, min_dist: float | None = None,
                  user_points=None, user_labels=None, threshold: float = 0.5) -> Prompt:
    """The loop's prompt for one slice: user clicks first (never dropped), then top-K error points
    labelled by the corrected mask (none within ``min_dist`` of a click), then the box."""
    S = corrected.shape[0]
    min_dist = S / 32 if min_dist is None else min_dist
    up = np.asarray(user_points if user_points is not None else np.zeros((0, 2)), np.float32).reshape(-1, 2)
    ul = np.asarray(user_labels if user_labels is not None else np.zeros(0), np.int64).reshape(-1)
    gen = top_error_points(err_prob, k, min_dist, threshold, exclude=up)
    yi = np.clip(gen[:, 1].astype(int), 0, S - 1)
    xi = np.clip(gen[:, 0].astype(int), 0, corrected.shape[1] - 1)
    gl = corrected[yi, xi].astype(np.int64)
    return Prompt(np.concatenate([up, gen]), np.concatenate([ul, gl]), largest_component_box(corrected))


def paint_clicks(mask: np.ndarray, points, labels, radius: float = 1.0) -> np.ndarray:
    """The mask with a small disk around each click set to the click's label (clicks always win)."""
    if points is None or not len(points):
        return mask
    m = mask.copy()
    H, W = m.shape
    for (x, y), lab in zip(np.asarray(points, np.float64).reshape(-1, 2), np.asarray(labels).reshape(-1)):
        # only the disk's bounding box is looked at (a click paints a few pixels of a 256x256 grid)
        y0, y1 = max(int(np.floor(y - radius)), 0), min(int(np.floor(y + radius)) + 1, H)
        x0, x1 = max(int(np.floor(x - radius)), 0), min(int(np.floor(x + radius)) + 1, W)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.ogrid[y0:y1, x0:x1]
        m[y0:y1, x0:x1][(yy - y) ** 2 + (xx - x) ** 2 <= radius * radius] = bool(lab)
    return m
