"""Image files <-> `Volume` through SimpleITK (LPS on disk, RAS in memory)."""
from __future__ import annotations

import contextlib
import locale
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..volume import Volume

_LPS = np.diag([-1.0, -1.0, 1.0])
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def _sitk():
    import SimpleITK as sitk

    return sitk


def volume_from_sitk(img, name: str = "volume") -> Volume:
    sitk = _sitk()
    if img.GetDimension() != 3:
        raise InputError(f"'{name}' is {img.GetDimension()}D; a 3D image is expected")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"'{name}' has {img.GetNumberOfComponentsPerPixel()} components per voxel; "
                         "a scalar (single-component) image is expected")
    arr = sitk.GetArrayFromImage(img).transpose(2, 1, 0)  # [k,j,i] -> [i,j,k]
    d_lps = np.asarray(img.GetDirection(), dtype=float).reshape(3, 3)
    origin = _LPS @ np.asarray(img.GetOrigin(), dtype=float)
    return Volume(np.ascontiguousarray(arr), tuple(img.GetSpacing()), tuple(origin),
                  tuple(map(tuple, _LPS @ d_lps)), name=name)


def volume_to_sitk(vol: Volume):
    sitk = _sitk()
    arr = vol.array
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))
    img.SetSpacing(tuple(float(s) for s in vol.spacing))
    img.SetOrigin(tuple(float(v) for v in _LPS @ np.asarray(vol.origin)))
    img.SetDirection(tuple(float(v) for v in (_LPS @ np.asarray(vol.direction)).ravel()))
    return img


def _name_of(path: Path) -> str:
    n = path.name
    for s in (".seg.nrrd",) + IMAGE_SUFFIXES:
        if n.endswith(s):
            return n[: -len(s)]
    return n


def read_image(path, name: str | None = None) -> Volume:
    """Read a 3D scalar image (NIfTI/NRRD/MHA), or a DICOM series: a folder holding one image series,
    or ``FOLDER#SERIES_UID`` to pick one of several (see :mod:`medsegsuite.dicom.series`)."""
    from ..dicom.series import split_series_spec

    folder, uid = split_series_spec(path)
    if uid is not None and folder.is_dir():
        return read_dicom_series(path, name=name)
    path = Path(path)
    if not path.exists():
        raise InputError(f"image file not found: {path}")
    if path.is_dir():
        return read_dicom_series(path, name=name)
    sitk = _sitk()
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise InputError(f"cannot read image {path}: {str(e).strip().splitlines()[-1]}") from None
    return volume_from_sitk(img, name or _name_of(path))


def write_image(vol: Volume, path) -> Path:
    """Write a volume; the format follows the suffix. A folder path writes a DICOM series."""
    path = Path(path)
    if path.suffix == "" and not path.name.endswith(IMAGE_SUFFIXES):
        return write_dicom_series(vol, path)
    if not str(path).endswith(IMAGE_SUFFIXES):
        raise InputError(f"unknown image format for {path}; use one of {', '.join(IMAGE_SUFFIXES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    _sitk().WriteImage(volume_to_sitk(vol), str(path), True)
    return path


@contextlib.contextmanager
def _keep_locale():
    """GDCM switches the process locale to "C" while it reads or writes DICOM, which leaves Python's
    default text encoding at ASCII afterwards (in Slicer too); restore the caller's locale."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        try:
            locale.setlocale(locale.LC_ALL, saved)
        except locale.Error:
            pass


def read_dicom_series(folder, name: str | None = None) -> Volume:
    """One DICOM image series (``FOLDER`` or ``FOLDER#SERIES_UID``), slice geometry checked, with its
    UIDs in ``meta["dicom"]``."""
    from ..dicom.series import read_series

    return read_series(folder, name=name)


def write_dicom_series(vol: Volume, folder) -> Path:
    """Write one CT-like DICOM series (int16, one file per k slice) with full geometry tags."""
    with _keep_locale():
        return _write_dicom_series(vol, folder)


def _write_dicom_series(vol: Volume, folder) -> Path:
    sitk = _sitk()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arr = vol.array
    if np.issubdtype(arr.dtype, np.floating):
        if not np.allclose(arr, np.round(arr)):
            raise InputError("DICOM export takes integer voxels; round or rescale the image first")
        arr = np.round(arr)
    if arr.min() < -32768 or arr.max() > 32767:
        raise InputError("voxel values exceed the int16 range of DICOM export")
    img = volume_to_sitk(vol.with_array(arr.astype(np.int16)))
    d = img.GetDirection()
    orient = "\\".join(f"{v:.10g}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    uid = "1.2.826.0.1.3680043.2.1125." + str(abs(hash(vol.fingerprint())) % 10**12)
    w = sitk.ImageFileWriter()
    w.KeepOriginalImageUIDOn()
    for k in range(img.GetDepth()):
        s = img[:, :, k]
        pos = img.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {"0020|000d": uid + ".1", "0020|000e": uid + ".2", "0008|0060": "CT",
                "0020|0037": orient, "0020|0032": "\\".join(f"{v:.10g}" for v in pos),
                "0020|0013": str(k + 1), "0018|0050": f"{img.GetSpacing()[2]:.10g}",
                "0008|0018": f"{uid}.3.{k + 1}"}
        for t, v in tags.items():
            s.SetMetaData(t, v)
        w.SetFileName(str(folder / f"slice{k:04d}.dcm"))
        w.Execute(s)
    return folder


def is_image_path(path) -> bool:
    p = str(path)
    return os.path.isdir(p) or os.path.isdir(p.rpartition("#")[0] or p) or p.endswith(IMAGE_SUFFIXES)
