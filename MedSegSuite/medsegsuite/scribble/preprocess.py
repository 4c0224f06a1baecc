"""Intensity normalisation and in-plane resizing shared by training and inference, so a model sees
slices prepared the same way in both."""
from __future__ import annotations

import numpy as np

from ..errors import InputError


def normalise(volume: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Clip to the volume's [low, high] percentiles, then zero mean / unit std (float32). Per volume,
    so CT and MR need no modality setting."""
    a = np.asarray(volume, dtype=np.float32)
    if not np.all(np.isfinite(a)):
        raise InputError("the image holds NaN or infinite values")
    sample = a.ravel()[:: max(1, a.size // 2_000_000)]
    lo, hi = np.percentile(sample, [low, high])
    a = np.clip(a, lo, hi)
    mu, sd = float(a.mean()), float(a.std())
    return ((a - mu) / (sd if sd > 1e-6 else 1.0)).astype(np.float32)


def work_shape(shape2d, max_size: int | None) -> tuple[int, int]:
    """In-plane size the network works at: the slice shrunk so its longer side is <= max_size."""
    h, w = (int(v) for v in shape2d)
    if not max_size or max(h, w) <= max_size:
        return h, w
    f = max_size / max(h, w)
    return max(1, round(h * f)), max(1, round(w * f))


def resize_image(x, size):
    """[N, C, H, W] tensor -> size (bilinear, area when shrinking)."""
    import torch.nn.functional as F

    if tuple(x.shape[-2:]) == tuple(size):
        return x
    mode = "area" if size[0] < x.shape[-2] else "bilinear"
    return F.interpolate(x, size=size, mode=mode, **({} if mode == "area" else {"align_corners": False}))


def resize_labels(lab: np.ndarray, n_classes: int, size, unlabelled: int) -> np.ndarray:
    """Shrink a 2D scribble/label map without losing thin strokes: a cell takes the class covering
    most of it among the scribbled pixels in it; cells without scribbles stay unlabelled."""
    import torch

    if tuple(lab.shape) == tuple(size):
        return lab
    t = torch.from_numpy(lab.astype(np.int64))
    onehot = torch.stack([(t == c).float() for c in range(n_classes)])[None]
    cov = resize_image(onehot, size)[0]
    best = cov.argmax(0).numpy().astype(np.uint8)
    return np.where(cov.sum(0).numpy() > 1e-6, best, unlabelled).astype(np.uint8)


def pad_to(a: np.ndarray, shape, value) -> np.ndarray:
    """Pad the last two axes at their end to ``shape``."""
    ph, pw = shape[0] - a.shape[-2], shape[1] - a.shape[-1]
    if ph < 0 or pw < 0:
        raise InputError(f"cannot pad {a.shape} to {shape}")
    if ph == 0 and pw == 0:
        return a
    pad = [(0, 0)] * (a.ndim - 2) + [(0, ph), (0, pw)]
    return np.pad(a, pad, constant_values=value)


def round_up(n: int, k: int) -> int:
    return ((int(n) + k - 1) // k) * k
