"""Field of view: show a 2D model slices at the pixel size and field of view it was trained on.

A model trained on a 25.6 cm crop at 2 mm per pixel that is given a whole 50 cm clinical CT slice,
squeezed into its input, sees every organ at half the scale it learned; on TotalSegmentator's contrast
CT the shipped liver model then finds no liver at all (docs/results/cosam.md). A :class:`Windows`
resamples a canonical slice to the model's pixel size and cuts square windows of the model's training
size from it; :meth:`Windows.paste` resamples per-window results back onto the slice, weighting window
centres above their borders. Physical geometry only: no torch, no model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import InputError


@dataclass(frozen=True)
class Windows:
    """Square windows of ``size`` pixels of ``target_mm`` on a slice of ``slice_shape`` (rows, columns)
    whose pixels are ``pixel_mm`` (row, column) in size. ``origins`` are window corners on the
    resampled grid (row, column; they may be negative or run past it: outside is ``fill``)."""

    slice_shape: tuple
    pixel_mm: tuple
    target_mm: float
    size: int
    origins: tuple

    def __post_init__(self):
        if self.size < 8 or not self.target_mm > 0 or min(self.pixel_mm) <= 0 or not self.origins:
            raise InputError(f"invalid slice windows: size {self.size}, target {self.target_mm} mm, "
                             f"pixels {self.pixel_mm} mm, {len(self.origins)} windows")

    @property
    def resampled_shape(self) -> tuple:
        return tuple(max(1, int(round(n * p / self.target_mm))) for n, p in zip(self.slice_shape, self.pixel_mm))

    @property
    def scale(self) -> tuple:
        """Input pixels per resampled pixel, per axis."""
        return tuple(self.target_mm / p for p in self.pixel_mm)

    def _to_input(self, u, axis):
        """Resampled-grid coordinate -> input-grid coordinate (pixel centres aligned at the corners)."""
        return (np.asarray(u, np.float64) + 0.5) * self.scale[axis] - 0.5

    def _to_resampled(self, x, axis):
        return (np.asarray(x, np.float64) + 0.5) / self.scale[axis] - 0.5

    def cut(self, slice2d: np.ndarray, fill: float | None = None, order: int = 1) -> np.ndarray:
        """(n_windows, size, size) float32 windows of ``slice2d`` (linear interpolation; ``fill``, default
        the slice's minimum, outside it)."""
        s = np.asarray(slice2d, np.float32)
        if s.shape != tuple(self.slice_shape):
            raise InputError(f"slice of shape {s.shape} does not fit windows planned for {self.slice_shape}")
        fill = float(np.min(s)) if fill is None else float(fill)
        a = np.arange(self.size)
        out = np.empty((len(self.origins), self.size, self.size), np.float32)
        for n, (r0, c0) in enumerate(self.origins):
            rr = self._to_input(r0 + a, 0)[:, None]
            cc = self._to_input(c0 + a, 1)[None, :]
            coords = np.stack(np.broadcast_arrays(rr, cc))
            out[n] = ndimage.map_coordinates(s, coords, order=order, mode="constant", cval=fill)
        return out

    def _taper(self) -> np.ndarray:
        """Window weights: 1 in the middle half, falling linearly to 0.1 at the borders (a model sees the
        least context at a window's edge)."""
        x = np.abs((np.arange(self.size) + 0.5) / self.size - 0.5) * 2  # 0 centre .. 1 border
        w = np.clip(1.0 - (x - 0.5) / 0.5 * 0.9, 0.1, 1.0)
        return np.outer(w, w).astype(np.float32)

    def paste(self, windows: np.ndarray) -> np.ndarray:
        """(n_windows, size, size) results (probabilities or 0/1) -> the slice grid (float32, weighted
        mean of the windows covering each pixel; 0 where none does)."""
        w = np.asarray(windows, np.float32)
        if w.shape != (len(self.origins), self.size, self.size):
            raise InputError(f"expected {len(self.origins)} windows of {self.size}², got {w.shape}")
        H, W = self.slice_shape
        ur = self._to_resampled(np.arange(H), 0)
        uc = self._to_resampled(np.arange(W), 1)
        acc = np.zeros((H, W), np.float32)
        wsum = np.zeros((H, W), np.float32)
        taper = self._taper()
        for n, (r0, c0) in enumerate(self.origins):
            lr, lc = ur - r0, uc - c0
            rin = (lr >= -0.5) & (lr <= self.size - 0.5)
            cin = (lc >= -0.5) & (lc <= self.size - 0.5)
            if not rin.any() or not cin.any():
                continue
            rows, cols = np.nonzero(rin)[0], np.nonzero(cin)[0]
            coords = np.stack(np.meshgrid(np.clip(lr[rows], 0, self.size - 1), np.clip(lc[cols], 0, self.size - 1),
                                          indexing="ij"))
            v = ndimage.map_coordinates(w[n], coords, order=1, mode="nearest")
            t = ndimage.map_coordinates(taper, coords, order=1, mode="nearest")
            acc[np.ix_(rows, cols)] += v * t
            wsum[np.ix_(rows, cols)] += t
        return np.where(wsum > 0, acc / np.maximum(wsum, 1e-6), 0.0).astype(np.float32)


def _starts(length: int, size: int, min_overlap: float) -> list[int]:
    """Window starts covering [0, length) with at least ``min_overlap`` of a window shared; a grid
    shorter than a window gets one window centred on it."""
    if length <= size:
        return [-((size - length) // 2)]
    n = math.ceil((length - size) / (size * (1 - min_overlap))) + 1
    return [int(round(i * (length - size) / (n - 1))) for i in range(n)]


def tiling(slice_shape, pixel_mm, target_mm: float, size: int, min_overlap: float = 0.125) -> Windows:
    """Windows covering the whole slice at the model's pixel size."""
    probe = Windows(tuple(slice_shape), tuple(pixel_mm), float(target_mm), int(size), ((0, 0),))
    R, C = probe.resampled_shape
    origins = tuple((r, c) for r in _starts(R, size, min_overlap) for c in _starts(C, size, min_overlap))
    return Windows(tuple(slice_shape), tuple(pixel_mm), float(target_mm), int(size), origins)


def centred(slice_shape, pixel_mm, target_mm: float, size: int, centre) -> Windows:
    """One window centred on ``centre`` (row, column of the input slice)."""
    probe = Windows(tuple(slice_shape), tuple(pixel_mm), float(target_mm), int(size), ((0, 0),))
    r = probe._to_resampled(centre[0], 0)
    c = probe._to_resampled(centre[1], 1)
    return Windows(probe.slice_shape, probe.pixel_mm, probe.target_mm, probe.size,
                   ((int(round(r - size / 2)), int(round(c - size / 2))),))


def differs(slice_shape, pixel_mm, target_mm: float, size: int, ratio: float = 1.5) -> bool:
    """Whether a slice squeezed into the model's input would show anatomy at a scale more than ``ratio``
    times off the training scale. Squeezing maps the slice's field of view onto the input, so only the
    field of view matters, not the pixel size. 1.5 lies between the two real CTs measured
    (docs/cosam.md, *Field of view*): at 1.43× squeezing scored better than windows, at 1.95× only
    windows found the liver; it was chosen after seeing them, so it is a default, not a validated one."""
    fov = max(n * p for n, p in zip(slice_shape, pixel_mm))
    r = fov / (size * target_mm)
    return r > ratio or r < 1.0 / ratio


def canonical_pixel_mm(engine, spacing) -> tuple:
    """(row, column) pixel size in mm of ``engine``'s slices, from the volume's IJK spacing."""
    can = [float(spacing[p]) for p in engine.perm]
    return tuple(s for d, s in enumerate(can) if d != engine.axis)
