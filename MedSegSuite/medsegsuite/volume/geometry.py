"""`Geometry` (shape + spacing + origin + direction, RAS) and `Volume` (array + geometry)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import InputError

_LPS = np.diag([-1.0, -1.0, 1.0])


def ras_to_lps_matrix() -> np.ndarray:
    """The 3x3 matrix that maps RAS coordinates to LPS (and back: it is its own inverse)."""
    return _LPS.copy()


@dataclass(frozen=True)
class Geometry:
    """Where a 3D voxel grid lies in RAS space. See :mod:`medsegsuite.volume` for the convention."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[tuple[float, ...], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

    def __post_init__(self):
        shape = tuple(int(s) for s in self.shape)
        spacing = tuple(float(s) for s in self.spacing)
        origin = tuple(float(o) for o in self.origin)
        direction = np.asarray(self.direction, dtype=float)
        if len(shape) != 3:
            raise InputError(f"a geometry needs 3 dimensions, got shape {shape}")
        if len(spacing) != 3 or any(not np.isfinite(s) or s <= 0 for s in spacing):
            raise InputError(f"spacing must be 3 positive finite numbers (mm), got {spacing}")
        if len(origin) != 3 or not np.all(np.isfinite(origin)):
            raise InputError(f"origin must be 3 finite numbers, got {origin}")
        if direction.shape != (3, 3) or not np.all(np.isfinite(direction)):
            raise InputError(f"direction must be a finite 3x3 matrix, got {direction.tolist()}")
        if abs(abs(np.linalg.det(direction)) - 1.0) > 1e-3:
            raise InputError("direction must be orthonormal (|det| = 1), got "
                             f"det={np.linalg.det(direction):.4f}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", tuple(tuple(float(v) for v in row) for row in direction))

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float)

    @property
    def ijk_to_ras(self) -> np.ndarray:
        m = np.eye(4)
        m[:3, :3] = self.direction_matrix @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    @property
    def ras_to_ijk(self) -> np.ndarray:
        return np.linalg.inv(self.ijk_to_ras)

    @classmethod
    def from_ijk_to_ras(cls, shape, matrix) -> "Geometry":
        m = np.asarray(matrix, dtype=float)
        cols = m[:3, :3]
        spacing = np.linalg.norm(cols, axis=0)
        return cls(shape=tuple(shape), spacing=tuple(spacing), origin=tuple(m[:3, 3]),
                   direction=tuple(map(tuple, cols / spacing)))

    def ras_to_ijk_points(self, ras) -> np.ndarray:
        """Continuous IJK coordinates of RAS points (N x 3)."""
        p = np.atleast_2d(np.asarray(ras, dtype=float))
        h = np.c_[p, np.ones(len(p))]
        return (h @ self.ras_to_ijk.T)[:, :3]

    def ijk_to_ras_points(self, ijk) -> np.ndarray:
        p = np.atleast_2d(np.asarray(ijk, dtype=float))
        h = np.c_[p, np.ones(len(p))]
        return (h @ self.ijk_to_ras.T)[:, :3]

    def same_as(self, other: "Geometry", tol: float = 1e-4) -> bool:
        return (self.shape == other.shape
                and np.allclose(self.spacing, other.spacing, atol=tol)
                and np.allclose(self.origin, other.origin, atol=tol * 10)
                and np.allclose(self.direction_matrix, other.direction_matrix, atol=tol))

    def require_same(self, other: "Geometry", what: str = "mask") -> None:
        """Raise a clear error when two grids differ (a mask must lie on its image's grid)."""
        if self.shape != other.shape:
            raise InputError(f"{what} has shape {other.shape} but the image has shape {self.shape}")
        if not self.same_as(other):
            raise InputError(
                f"{what} geometry differs from the image: spacing {other.spacing} vs {self.spacing}, "
                f"origin {other.origin} vs {self.origin}; resample it onto the image grid first")

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "spacing": list(self.spacing), "origin": list(self.origin),
                "direction": [list(r) for r in self.direction]}

    @classmethod
    def from_dict(cls, d: dict) -> "Geometry":
        try:
            return cls(shape=tuple(d["shape"]), spacing=tuple(d["spacing"]), origin=tuple(d["origin"]),
                       direction=tuple(tuple(r) for r in d["direction"]))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"malformed geometry {d!r}: {e}") from None


@dataclass
class Volume:
    """A 3D voxel array (indexed [i, j, k]) and its RAS geometry."""

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    name: str = field(default="volume")
    # Where the image came from (e.g. ``meta["dicom"]``: patient, study, series and frame-of-reference
    # UIDs, kept so exports can reference the source series). Not part of the image's identity.
    meta: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        a = np.asarray(self.array)
        if a.ndim != 3:
            raise InputError(f"a volume must be 3D, got an array with {a.ndim} dimensions {a.shape}"
                             + (" (4D: pick one component or time point first)" if a.ndim == 4 else ""))
        if min(a.shape) < 1:
            raise InputError(f"volume has an empty dimension: shape {a.shape}")
        self.array = a
        g = Geometry(a.shape, self.spacing, self.origin, self.direction)  # validates
        self.spacing, self.origin, self.direction = g.spacing, g.origin, g.direction

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.array.shape, self.spacing, self.origin, self.direction)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)

    @property
    def ijk_to_ras(self) -> np.ndarray:
        return self.geometry.ijk_to_ras

    @classmethod
    def from_geometry(cls, array, geometry: Geometry, name: str = "volume") -> "Volume":
        return cls(np.asarray(array), geometry.spacing, geometry.origin, geometry.direction, name=name)

    def with_array(self, array, name: str | None = None) -> "Volume":
        """A volume on the same grid holding another array (e.g. a mask of this image)."""
        array = np.asarray(array)
        if array.shape != self.array.shape:
            raise InputError(f"array of shape {array.shape} does not fit volume of shape {self.shape}")
        return replace(self, array=array, name=name or self.name)

    def require_finite(self) -> "Volume":
        """Raise on NaN/Inf voxels. A pass found finite is remembered, like the fingerprint (the array
        is immutable once handed to a backend), so a click's ``set_image`` does not re-scan a whole CT."""
        if self.__dict__.get("_finite"):
            return self
        if np.issubdtype(self.array.dtype, np.floating) and not np.all(np.isfinite(self.array)):
            n = int(np.size(self.array) - np.count_nonzero(np.isfinite(self.array)))
            raise InputError(f"volume '{self.name}' holds {n} NaN/Inf voxels; fix or mask them first")
        self.__dict__["_finite"] = True
        return self

    def __setattr__(self, name, value):
        if name in ("array", "spacing", "origin", "direction"):
            self.__dict__.pop("_fingerprint", None)  # a new array or grid is a new image
            self.__dict__.pop("_finite", None)
        super().__setattr__(name, value)

    def fingerprint(self) -> str:
        """A content hash of array + geometry: the same image gives the same id locally and remotely.

        Computed once per Volume (see :meth:`_hash`; benchmarks/full_ct.py times it): a Volume's array is treated
        as immutable once it is handed to a backend; assigning a new array or grid clears the id."""
        fp = self.__dict__.get("_fingerprint")
        if fp is None:
            fp = self.__dict__["_fingerprint"] = self._hash()
        return fp

    def _hash(self) -> str:
        """SHA-256 over the dtype, shape, the SHA-256 of each 16 MiB block of the voxels and the geometry.
        Blocks are hashed on up to 4 threads (hashlib releases the GIL) straight from the array's memory
        (no copy of the voxels); the block size is fixed, so the id does not depend on the thread count."""
        import hashlib
        import os
        from concurrent.futures import ThreadPoolExecutor

        a = np.ascontiguousarray(self.array)
        raw = memoryview(a.reshape(-1)).cast("B")
        block = 1 << 24
        parts = [raw[i:i + block] for i in range(0, len(raw), block)]
        if len(parts) > 1:
            with ThreadPoolExecutor(min(4, os.cpu_count() or 1, len(parts))) as ex:
                digests = list(ex.map(lambda p: hashlib.sha256(p).digest(), parts))
        else:
            digests = [hashlib.sha256(p).digest() for p in parts]
        h = hashlib.sha256()
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        for d in digests:
            h.update(d)
        h.update(repr(self.geometry.to_dict()).encode())
        return h.hexdigest()[:32]
