"""Slicing, intensity normalisation and in-plane resizing shared by training and inference, so a
model sees slices prepared the same way in both."""
from __future__ import annotations

import numpy as np

from ..errors import InputError

# Scribble models slice through the one slice engine (`volume.SliceEngine`) in the LPS frame: a
# volume stored in LPS order (LiTS-117, DICOM with an identity direction) is sliced exactly as before
# plane names existed, and any other IJK order or flip of the same anatomy gives the same slices.
FRAME = "LPS"
# The direction assumed for a bare array with no geometry: already in the LPS canonical order.
ARRAY_DIRECTION = ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))
_OLD_AXES = {2: "axial", 1: "coronal", 0: "sagittal"}


def slice_engine(shape, direction=None, plane: str = "axial"):
    from ..volume import SliceEngine

    return SliceEngine(tuple(shape), ARRAY_DIRECTION if direction is None else direction, plane, FRAME)


def plane_of(card: dict) -> str:
    """The plane a model was trained on; cards written before planes carry ``axis`` (2 = axial)."""
    if card.get("plane"):
        return str(card["plane"])
    return _OLD_AXES.get(int(card.get("axis", 2)), "axial")


def slice_spacing(engine, spacing) -> tuple[float, float]:
    """(row, column) spacing in mm of the engine's slices, from the volume's per-axis spacing."""
    rows, cols = (d for d in range(3) if d != engine.axis)
    return float(spacing[engine.perm[rows]]), float(spacing[engine.perm[cols]])


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


def context_indices(k: int, n: int, context: int) -> list[int]:
    """Slice ``k`` and ``context`` neighbours on each side (clamped at the volume's ends): the 2.5D
    input channels, in the same order in training and inference."""
    return [min(n - 1, max(0, k + o)) for o in range(-int(context), int(context) + 1)]
