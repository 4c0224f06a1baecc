"""Colin27 T1 (one person's MRI, 1 mm) and the AAL atlas, from Debian's `mricron-data`."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import MissingDataError
from ..io import Segmentation, read_image
from ..volume import Volume

TEMPLATES = Path("/usr/share/mricron/templates")
_INSTALL = ("Colin27/AAL sample data needs the Debian package 'mricron-data': "
            "sudo apt-get install mricron-data  (it installs /usr/share/mricron/templates/ch2.nii.gz, "
            "ch2bet.nii.gz and aal.nii.gz)")


def colin_paths() -> dict[str, Path]:
    paths = {k: TEMPLATES / f for k, f in
             {"t1": "ch2.nii.gz", "bet": "ch2bet.nii.gz", "aal": "aal.nii.gz", "aal_names": "aal.nii.txt"}.items()}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise MissingDataError(f"missing {', '.join(missing)}. " + _INSTALL)
    return paths


@lru_cache(maxsize=1)
def _t1():
    return read_image(colin_paths()["t1"], name="Colin27 T1")


def colin27_t1() -> Volume:
    v = _t1()
    return v.with_array(v.array.copy())


@lru_cache(maxsize=1)
def aal_names() -> dict[int, str]:
    names = {}
    for line in colin_paths()["aal_names"].read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            names[int(parts[0])] = parts[1]
    return names


def aal_labels() -> Volume:
    """The AAL labelmap (116 regions) on the Colin27 grid."""
    v = read_image(colin_paths()["aal"], name="AAL")
    _t1().geometry.require_same(v.geometry, "AAL atlas")
    return v.with_array(np.round(v.array).astype(np.uint16))


def colin27_brain_mask() -> Volume:
    """Brain mask: non-zero voxels of the brain-extracted ch2bet image (uint8 0/1)."""
    v = read_image(colin_paths()["bet"], name="Colin27 brain")
    _t1().geometry.require_same(v.geometry, "ch2bet")
    return v.with_array((v.array > 0).astype(np.uint8))


def colin27(structures: list[str] | None = None) -> tuple[Volume, Segmentation]:
    """T1 plus a segmentation with ``brain`` and the named AAL regions (all 116 by default)."""
    t1 = colin27_t1()
    aal = aal_labels().array
    names = aal_names()
    masks = {"brain": colin27_brain_mask().array > 0}
    wanted = set(structures) if structures is not None else set(names.values())
    unknown = wanted - set(names.values()) - {"brain"}
    if unknown:
        raise MissingDataError(f"unknown AAL regions {sorted(unknown)}")
    for v, n in names.items():
        if n in wanted:
            masks[n] = aal == v
    return t1, Segmentation(t1.geometry, masks)
