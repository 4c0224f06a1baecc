"""The one slice engine: a volume seen as a stack of 2D slices in an anatomical plane.

Every 2D method (SAM, CoSAM, scribble models, TTA source models) works on slices of a *canonical*
grid, whatever IJK order and flips the file or Slicer gave the volume. The canonical grid comes from
the direction matrix: its array axes 0, 1, 2 point along the patient's left-right, anterior-posterior
and inferior-superior axes, with the signs of a *frame*:

* ``"LPS"`` (default): axes point to +L, +P, +S, the order of a DICOM/ITK volume with an identity
  direction (and of LiTS-117), which the shipped SAM-family and scribble models were trained on;
* ``"RAS"``: axes point to +R, +A, +S (the TTA source models' frame).

A plane fixes one canonical axis (``axial`` -> 2, ``coronal`` -> 1, ``sagittal`` -> 0); a slice keeps
the other two in increasing order: row = the lower canonical axis, column = the higher one, so SAM's
``x`` is the column and ``y`` the row. Only permutations and flips are used: slices are exact views
and results go back onto the input grid bit for bit (no resampling).

Slice selection (:func:`parse_slices`), the hold-out split every evaluation uses
(:func:`split_slices`), ROIs and batches live here too, so methods never write their own loops.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

PLANES = ("axial", "coronal", "sagittal")
PLANE_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}
FRAMES = {"LPS": (-1.0, -1.0, 1.0), "RAS": (1.0, 1.0, 1.0)}


def check_plane(plane) -> str:
    p = str(plane).lower()
    if p not in PLANE_AXIS:
        raise InputError(f"plane must be one of {', '.join(PLANES)}, not {plane!r}")
    return p


def canonical_axes(direction, frame: str = "LPS") -> tuple[list[int], list[bool]]:
    """(perm, flips): ``np.transpose(a, perm)`` then flipping the axes marked in ``flips`` makes array
    axes 0, 1, 2 point along the frame's axes (nearest axis of the direction matrix; oblique volumes
    take the closest one)."""
    if frame not in FRAMES:
        raise InputError(f"frame must be one of {', '.join(FRAMES)}, not {frame!r}")
    d = np.asarray(direction, dtype=float)
    perm = [int(np.argmax(np.abs(d[r, :]))) for r in range(3)]
    if len(set(perm)) != 3:  # a 45-degree oblique tie: greedy assignment
        perm, free = [], [0, 1, 2]
        for r in range(3):
            k = max(free, key=lambda c: abs(d[r, c]))
            perm.append(k)
            free.remove(k)
    sign = FRAMES[frame]
    flips = [bool(d[r, perm[r]] * sign[r] < 0) for r in range(3)]
    return perm, flips


def parse_slices(spec, n: int) -> list[int]:
    """'all' | 'every:K' | 'a:b' | 'i,j,k' | [i, j, ...] -> sorted slice indices within 0..n-1."""
    if spec is None or spec == "all":
        return list(range(n))
    try:
        if isinstance(spec, str):
            if spec.startswith("every:"):
                k = int(spec.split(":")[1])
                if k < 1:
                    raise InputError("every:K needs K >= 1")
                return list(range(k // 2, n, k))
            if ":" in spec:
                a, b = (int(v) for v in spec.split(":"))
                idx = list(range(max(a, 0), min(b, n)))
            else:
                idx = [int(v) for v in spec.split(",") if v.strip()]
        else:
            idx = [int(v) for v in spec]
    except (TypeError, ValueError):
        raise InputError(f"slices must be 'all', 'every:K', 'a:b', 'i,j,k' or a list of indices, "
                         f"not {spec!r}") from None
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise InputError(f"slices {bad[:5]} are outside 0..{n - 1}")
    if not idx:
        raise InputError(f"the slice selection {spec!r} is empty")
    return sorted(set(idx))


def split_slices(spec: str, n: int) -> tuple[list[int], list[int]]:
    """The hold-out convention every method's evaluation shares, on canonical slice indices.

    ``interleaved:K``: every K-th slice from 0 is held out, the rest train; ``block:F``: train on
    the first F of the slices, hold out the far block after a gap of n/8 (anatomy never seen)."""
    kind, _, val = str(spec).partition(":")
    try:
        if kind == "interleaved":
            k = int(val or 4)
            if k < 2:
                raise ValueError
            held = [i for i in range(n) if i % k == 0]
            return [i for i in range(n) if i % k], held
        if kind == "block":
            f = float(val or 0.5)
            if not 0 < f < 1:
                raise ValueError
            cut = int(round(f * n))
            return list(range(cut)), list(range(min(cut + n // 8, n - 1), n))
    except ValueError:
        pass
    raise InputError(f"split '{spec}' must be 'interleaved:K' (K >= 2) or 'block:F' (0 < F < 1)")


@dataclass(frozen=True)
class SliceEngine:
    """How a volume of ``shape`` with ``direction`` is sliced in ``plane`` (see the module doc).

    ``canonical(a)`` and ``slice(a, k)`` are views of ``a``; writing into them writes ``a``, so
    ``engine.slice(out, k)[...] = mask`` puts a result back on the input grid."""

    shape: tuple
    direction: tuple
    plane: str = "axial"
    frame: str = "LPS"

    def __post_init__(self):
        object.__setattr__(self, "plane", check_plane(self.plane))
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "direction", tuple(tuple(float(v) for v in r) for r in
                                                    np.asarray(self.direction, float)))
        perm, flips = canonical_axes(self.direction, self.frame)
        object.__setattr__(self, "perm", tuple(perm))
        object.__setattr__(self, "flips", tuple(flips))

    @classmethod
    def for_volume(cls, volume, plane: str = "axial", frame: str = "LPS") -> "SliceEngine":
        return cls(volume.shape, volume.direction, plane, frame)

    # -- geometry ---------------------------------------------------------------------------
    @property
    def axis(self) -> int:
        """The canonical axis the plane fixes."""
        return PLANE_AXIS[self.plane]

    @property
    def input_axis(self) -> int:
        """The input array's axis that runs across the plane's slices."""
        return self.perm[self.axis]

    @property
    def canonical_shape(self) -> tuple:
        return tuple(self.shape[p] for p in self.perm)

    @property
    def n_slices(self) -> int:
        return self.canonical_shape[self.axis]

    @property
    def slice_shape(self) -> tuple:
        """(rows, columns) of every slice."""
        return tuple(s for d, s in enumerate(self.canonical_shape) if d != self.axis)

    def _check(self, array):
        if tuple(np.shape(array)) != self.shape:
            raise InputError(f"array of shape {tuple(np.shape(array))} does not fit the volume's shape {self.shape}")

    def canonical(self, array: np.ndarray) -> np.ndarray:
        """A view of ``array`` (input grid) on the canonical grid."""
        self._check(array)
        a = np.transpose(array, self.perm)
        for ax, f in enumerate(self.flips):
            if f:
                a = np.flip(a, ax)
        return a

    def from_canonical(self, array: np.ndarray) -> np.ndarray:
        """A canonical-grid array back on the input grid (contiguous copy)."""
        if tuple(np.shape(array)) != self.canonical_shape:
            raise InputError(f"array of shape {np.shape(array)} is not on the canonical grid {self.canonical_shape}")
        for ax, f in enumerate(self.flips):
            if f:
                array = np.flip(array, ax)
        return np.ascontiguousarray(np.transpose(array, np.argsort(self.perm)))

    def check_index(self, index) -> int:
        k = int(index)
        if not 0 <= k < self.n_slices:
            raise InputError(f"{self.plane} slice {k} is outside 0..{self.n_slices - 1}")
        return k

    def slice(self, array: np.ndarray, index: int) -> np.ndarray:
        """Slice ``index`` of the plane: a (rows, columns) view of ``array`` (input grid)."""
        return self._take(self.canonical(array), self.check_index(index))

    def _take(self, can, k):
        idx = [slice(None)] * 3
        idx[self.axis] = k
        return can[tuple(idx)]

    def stack(self, array: np.ndarray, indices) -> np.ndarray:
        """Slices ``indices`` as one contiguous (n, rows, columns) array."""
        can = self.canonical(array)
        return np.ascontiguousarray(np.stack([self._take(can, self.check_index(k)) for k in indices]))

    def put(self, out: np.ndarray, index: int, slice2d: np.ndarray) -> None:
        """Write a 2D result into slice ``index`` of ``out`` (an input-grid array), in place."""
        view = self.slice(out, index)
        if tuple(np.shape(slice2d)) != view.shape:
            raise InputError(f"slice of shape {np.shape(slice2d)} does not fit the {self.plane} slice shape {view.shape}")
        view[...] = slice2d

    def assemble(self, slices: dict, dtype=bool, out: np.ndarray | None = None) -> np.ndarray:
        """{index: 2D result} -> an input-grid array (zeros where no slice was given)."""
        out = np.zeros(self.shape, dtype=dtype) if out is None else out
        for k, s in slices.items():
            self.put(out, k, s)
        return out

    # -- indices, points, ROIs --------------------------------------------------------------
    def select(self, spec="all") -> list[int]:
        return parse_slices(spec, self.n_slices)

    def ijk_to_slice(self, ijk) -> tuple[float, float, int]:
        """An input-grid voxel (i, j, k) -> (x = column, y = row, slice index) in this plane."""
        c = self.canonical_point(ijk)
        rest = [c[d] for d in range(3) if d != self.axis]
        return float(rest[1]), float(rest[0]), int(round(c[self.axis]))

    def slice_to_ijk(self, x, y, index) -> tuple[float, float, float]:
        """(x = column, y = row, slice index) -> input-grid voxel coordinates (inverse of ijk_to_slice)."""
        c = [0.0, 0.0, 0.0]
        rest = [d for d in range(3) if d != self.axis]
        c[self.axis], c[rest[0]], c[rest[1]] = float(index), float(y), float(x)
        cs = self.canonical_shape
        out = [0.0, 0.0, 0.0]
        for r in range(3):
            v = c[r]
            out[self.perm[r]] = (cs[r] - 1 - v) if self.flips[r] else v
        return tuple(out)

    def canonical_point(self, ijk) -> list[float]:
        cs = self.canonical_shape
        out = []
        for r in range(3):
            v = float(ijk[self.perm[r]])
            out.append((cs[r] - 1 - v) if self.flips[r] else v)
        return out

    def canonical_roi(self, roi) -> tuple[list[int], list[int]]:
        """Input-grid voxel bounds (i0, i1, j0, j1, k0, k1; end exclusive) -> canonical (lo, hi)."""
        r = [int(v) for v in roi]
        if len(r) != 6:
            raise InputError("roi must be 6 voxel bounds: i0, i1, j0, j1, k0, k1 (end exclusive)")
        lo_in, hi_in = r[0::2], r[1::2]
        if any(a < 0 or b > n or a >= b for a, b, n in zip(lo_in, hi_in, self.shape)):
            raise InputError(f"roi {r} is empty or outside the image {self.shape}")
        lo, hi = [], []
        for d in range(3):
            a, b, n = lo_in[self.perm[d]], hi_in[self.perm[d]], self.shape[self.perm[d]]
            if self.flips[d]:
                a, b = n - b, n - a
            lo.append(a)
            hi.append(b)
        return lo, hi

    def roi_mask(self, roi) -> np.ndarray:
        """A bool input-grid array that is True inside ``roi`` (input-grid bounds)."""
        keep = np.zeros(self.shape, bool)
        r = [int(v) for v in roi]
        self.canonical_roi(r)  # validates
        keep[r[0]:r[1], r[2]:r[3], r[4]:r[5]] = True
        return keep

    def roi_slices(self, roi, indices) -> list[int]:
        """The selected indices that cross ``roi``."""
        lo, hi = self.canonical_roi(roi)
        kept = [k for k in indices if lo[self.axis] <= k < hi[self.axis]]
        if not kept:
            raise InputError("no selected slice lies inside the ROI")
        return kept


def batches(indices, size: int):
    """Consecutive chunks of at most ``size`` indices."""
    indices = list(indices)
    size = max(1, int(size))
    return [indices[s:s + size] for s in range(0, len(indices), size)]
