"""An RT Structure Set read back by plastimatch, an independent clinical reader (Debian ``plastimatch``).

Used to check our RTSTRUCT export against a reader we did not write: ``plastimatch convert`` rasterises
the structure set onto the grid of the CT series it references (``--referenced-ct``) and writes one
structure-set image (one bit per structure, ``--output-ss-img``) with its list of names
(``--output-ss-list``); both are read here with SimpleITK onto our [i, j, k] arrays.

plastimatch ORs the contours of a slice unless told ``--xor-contours``; our writer stores a hole as a
contour inside its outer contour (CLOSED_PLANAR, even-odd), so the default here is ``xor_contours=True``.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..errors import InputError, MissingDataError
from ..volume import Geometry

INSTALL_HINT = ("install it with `apt-get install plastimatch` (Debian/Ubuntu; scripts/setup.sh does) or from "
                "plastimatch.org")


def plastimatch_path() -> str | None:
    """The plastimatch executable on PATH, or None."""
    return shutil.which("plastimatch")


def _tail(text: str, n: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def read_ss_list(path) -> list[tuple[int, str]]:
    """(bit, name) of each line ``bit|r g b|name`` of a plastimatch structure list (names may hold '|')."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|", 2)
        if len(parts) != 3 or not parts[0].strip().isdigit():
            raise InputError(f"plastimatch wrote an unexpected structure list line: {line!r}")
        rows.append((int(parts[0]), parts[2]))
    return rows


def _masks_from_ss_image(ss, names, geometry: Geometry | None, what: str) -> dict[str, np.ndarray]:
    """Unpack plastimatch's structure-set image: a vector image holds 8 structures per byte plane, a scalar
    one (older versions) all of them in the bits of one integer."""
    import SimpleITK as sitk

    from ..io.image import volume_from_sitk

    planes = ss.GetNumberOfComponentsPerPixel()
    masks: dict[str, np.ndarray] = {}
    for bit, name in names:
        plane_index, shift = (bit // 8, bit % 8) if planes > 1 else (0, bit)
        if plane_index >= planes:
            raise InputError(f"plastimatch's structure image has {planes} byte plane(s), too few for "
                             f"structure #{bit} '{name}'")
        vol = volume_from_sitk(ss if planes == 1 else sitk.VectorIndexSelectionCast(ss, plane_index))
        if geometry is not None and not vol.geometry.same_as(geometry):
            raise InputError(f"plastimatch rasterised {what} on a grid of shape {vol.shape} that is not the CT "
                             f"series' grid {geometry.shape}")
        bits = np.asarray(vol.array).astype(np.uint64)
        key, n = name, 1
        while key in masks:  # two ROIs of one name: both kept, the second as 'name #2'
            n += 1
            key = f"{name} #{n}"
        masks[key] = ((bits >> np.uint64(shift)) & np.uint64(1)).astype(bool)
    return masks


def _require_rtstruct(path: Path) -> None:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality", "SOPClassUID"])
    except (InvalidDicomError, OSError) as e:  # not DICOM at all
        raise InputError(f"{path.name} is not a DICOM file ({type(e).__name__}: {e})") from None
    if str(getattr(ds, "Modality", "")) != "RTSTRUCT":
        raise InputError(f"{path.name} is not an RT Structure Set (Modality {getattr(ds, 'Modality', 'missing')})")


def read_rtstruct_plastimatch(rtstruct, ct_dir, geometry: Geometry | None = None, xor_contours: bool = True,
                              timeout: float = 300) -> dict[str, np.ndarray]:
    """{structure name: bool [i, j, k] mask} as plastimatch rasterises ``rtstruct`` on the CT series in
    ``ct_dir``. With ``geometry`` (the series' grid, e.g. ``scan_series(ct_dir).geometry``) plastimatch's
    output grid must match it, else InputError."""
    exe = plastimatch_path()
    if exe is None:
        raise MissingDataError(f"plastimatch is not installed; {INSTALL_HINT}")
    rtstruct, ct_dir = Path(rtstruct), Path(ct_dir)
    if not rtstruct.is_file():
        raise InputError(f"no RT Structure Set file at {rtstruct}")
    if not ct_dir.is_dir():
        raise InputError(f"{ct_dir} is not a folder of CT images")
    _require_rtstruct(rtstruct)
    import SimpleITK as sitk

    with tempfile.TemporaryDirectory(prefix="plastimatch_") as tmp:
        img, lst = Path(tmp) / "ss.nrrd", Path(tmp) / "ss.txt"
        cmd = [exe, "convert", "--input", str(rtstruct.resolve()), "--referenced-ct", str(ct_dir.resolve()),
               "--output-ss-img", str(img), "--output-ss-list", str(lst)]
        if xor_contours:
            cmd.append("--xor-contours")
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout, cwd=tmp,
                               check=False)
        except subprocess.TimeoutExpired:
            raise InputError(f"plastimatch did not finish reading {rtstruct.name} within {timeout:.0f} s") from None
        if p.returncode != 0 or not img.exists() or not lst.exists():
            raise InputError(f"plastimatch wrote no structure set from {rtstruct.name} (exit {p.returncode}):\n"
                             + _tail(p.stdout + "\n" + p.stderr))
        return _masks_from_ss_image(sitk.ReadImage(str(img)), read_ss_list(lst), geometry, rtstruct.name)


__all__ = ["plastimatch_path", "read_rtstruct_plastimatch", "read_ss_list"]
