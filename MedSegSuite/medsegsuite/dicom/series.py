"""DICOM image series: find them in a folder, check their slice geometry, read one as a `Volume`.

Headers are read with pydicom (fast, no pixels); pixels with SimpleITK/GDCM, which decodes every
transfer syntax and applies the rescale slope/intercept. The slice order, spacing and direction are
ours: slices are sorted along the normal of ImageOrientationPatient and must be evenly spaced, with
no gap and no gantry tilt, or reading stops with an error that says which slices are wrong.

A folder that holds several image series is refused with a list of them; ``FOLDER#SERIES_UID``
(or a unique prefix of the UID) picks one. Non-image objects in the folder (RTSTRUCT, SEG, RTPLAN,
RTDOSE ...) are ignored here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..volume import Geometry, Volume

_LPS = np.diag([-1.0, -1.0, 1.0])
NON_IMAGE_MODALITIES = {"RTSTRUCT", "SEG", "RTPLAN", "RTDOSE", "RTRECORD", "SR", "PR", "KO", "REG"}
SPACING_RTOL = 0.02  # a slice may lie 2 % of the spacing off the regular grid (rounded positions) ...
SPACING_ATOL = 0.05  # ... or 0.05 mm
TILT_TOL_DEG = 0.5  # end-to-end shear angle; CT gantry tilts are several degrees


def split_series_spec(spec) -> tuple[Path, str | None]:
    """``FOLDER#SERIES_UID`` -> (folder, uid); a plain folder -> (folder, None)."""
    s = str(spec)
    if "#" in s and not Path(s).exists():
        folder, _, uid = s.rpartition("#")
        return Path(folder), uid.strip() or None
    return Path(s), None


@dataclass
class SeriesInfo:
    """One image series' headers in slice order (no pixels) and the grid they define."""

    uid: str
    files: list[Path]
    headers: list = field(repr=False)
    geometry: Geometry | None = None

    @property
    def first(self):
        return self.headers[0]

    def describe(self) -> str:
        h = self.first
        desc = str(getattr(h, "SeriesDescription", "") or "").strip()
        return (f"{self.uid}  {getattr(h, 'Modality', '?')}, {len(self.files)} file(s)"
                + (f", '{desc}'" if desc else "")
                + (f", series {h.SeriesNumber}" if getattr(h, "SeriesNumber", None) not in (None, "") else ""))

    def meta(self) -> dict:
        """What a Volume read from this series keeps: identity UIDs and each slice's SOP Instance UID."""
        h = self.first
        g = lambda k: str(getattr(h, k, "") or "")  # noqa: E731
        return {"patient_id": g("PatientID"), "patient_name": g("PatientName"), "study_uid": g("StudyInstanceUID"),
                "series_uid": self.uid, "frame_of_reference_uid": g("FrameOfReferenceUID"),
                "modality": g("Modality"), "series_description": g("SeriesDescription"),
                "sop_class_uid": g("SOPClassUID"),
                "sop_instance_uids": [str(x.SOPInstanceUID) for x in self.headers],
                "files": [str(f) for f in self.files]}


def _dcmread(path: Path, pixels: bool = False):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=not pixels)
    except (InvalidDicomError, OSError, EOFError, ValueError, AttributeError):
        return None


def _scan(folder: Path) -> tuple[dict[str, list], list[str]]:
    """{series uid: [(path, header)]} of image objects, and descriptions of the non-image objects."""
    if not folder.exists():
        raise InputError(f"DICOM folder not found: {folder}")
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; give the folder that holds the DICOM series")
    series: dict[str, list] = {}
    other = []
    for p in sorted(q for q in folder.rglob("*") if q.is_file() and q.name.upper() != "DICOMDIR"):
        h = _dcmread(p)
        if h is None or "SOPClassUID" not in h:
            continue
        modality = str(getattr(h, "Modality", "") or "")
        if modality in NON_IMAGE_MODALITIES or "Rows" not in h:
            other.append(f"{p.name} ({modality or 'no modality'})")
            continue
        uid = str(getattr(h, "SeriesInstanceUID", "") or "")  # "" (anonymised away): grouped together
        series.setdefault(uid, []).append((p, h))
    return series, other


def list_series(folder) -> list[SeriesInfo]:
    """Every image series in ``folder`` (recursively), unsorted slices, no checks."""
    series, _ = _scan(Path(folder))
    return [SeriesInfo(uid, [p for p, _ in items], [h for _, h in items]) for uid, items in series.items()]


def _pick(folder: Path, uid: str | None) -> tuple[str, list]:
    series, other = _scan(folder)
    if not series:
        extra = f" (it holds only non-image objects: {', '.join(other[:5])})" if other else ""
        raise InputError(f"no DICOM image series found in {folder}{extra}")
    if uid is not None:
        hits = [u for u in series if u == uid] or [u for u in series if u.startswith(uid)]
        if len(hits) != 1:
            listing = "\n  ".join(SeriesInfo(u, [p for p, _ in v], [h for _, h in v]).describe()
                                  for u, v in series.items())
            what = "no" if not hits else "more than one"
            raise InputError(f"{folder} holds {what} image series matching '{uid}'; it holds:\n  {listing}")
        return hits[0], series[hits[0]]
    if len(series) > 1:
        listing = "\n  ".join(SeriesInfo(u, [p for p, _ in v], [h for _, h in v]).describe() for u, v in series.items())
        raise InputError(f"{folder} holds {len(series)} DICOM image series; choose one with "
                         f"'{folder}#SERIES_UID' (a unique prefix is enough):\n  {listing}")
    uid = next(iter(series))
    return uid, series[uid]


def _floats(h, key, n, path) -> np.ndarray:
    v = getattr(h, key, None)
    if v is None or len(v) != n:
        raise InputError(f"{path} lacks {key}; cannot place the slice in space (not a cross-sectional image?)")
    return np.asarray([float(x) for x in v])


def _geometry(items: list, folder: Path) -> tuple[list, Geometry]:
    """Sort slices along the normal, check they form one regular grid, return (sorted items, geometry)."""
    p0, h0 = items[0]
    if int(getattr(h0, "NumberOfFrames", 1) or 1) > 1:
        if len(items) > 1:
            raise InputError(f"{folder} mixes multi-frame and single-frame objects in series {h0.SeriesInstanceUID}")
        return items, None  # one enhanced multi-frame object: SimpleITK places its frames
    iop = _floats(h0, "ImageOrientationPatient", 6, p0)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    if abs(np.linalg.norm(normal) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise InputError(f"{p0}: ImageOrientationPatient {iop.tolist()} is not two orthonormal directions")
    ps = _floats(h0, "PixelSpacing", 2, p0)
    shape2d = (int(h0.Rows), int(h0.Columns))
    for p, h in items[1:]:
        if not np.allclose(_floats(h, "ImageOrientationPatient", 6, p), iop, atol=1e-4):
            raise InputError(f"slices of series {h0.SeriesInstanceUID} have different orientations "
                             f"({p0.name} and {p.name}); it is not one volume")
        if (int(h.Rows), int(h.Columns)) != shape2d or not np.allclose(_floats(h, "PixelSpacing", 2, p), ps):
            raise InputError(f"slices of series {h0.SeriesInstanceUID} have different sizes or pixel spacings "
                             f"({p0.name} and {p.name})")
    pos = np.array([_floats(h, "ImagePositionPatient", 3, p) for p, h in items])
    order = np.argsort(pos @ normal, kind="stable")
    items = [items[i] for i in order]
    pos = pos[order]
    depth = pos @ normal
    tilt = float(getattr(h0, "GantryDetectorTilt", 0) or 0)
    if len(items) > 1:
        dup = np.nonzero(np.diff(depth) < 0.01)[0]
        if dup.size:
            a, b = items[dup[0]][0].name, items[dup[0] + 1][0].name
            raise InputError(f"series {h0.SeriesInstanceUID}: {a} and {b} lie at the same position "
                             f"({depth[dup[0]]:.3f} mm); several acquisitions or time points share the series, "
                             "which is not one volume")
        along = np.diff(depth)
        med = float(np.median(along))
        gaps = np.nonzero(along > 1.5 * med)[0]
        if gaps.size:
            n_missing = int(np.sum(np.round(along[gaps] / med) - 1))
            where = ", ".join(f"{items[i][0].name} -> {items[i + 1][0].name} ({along[i]:.3f} mm)" for i in gaps[:4])
            raise InputError(f"series {h0.SeriesInstanceUID} has {n_missing} missing slice(s): the slices are "
                             f"{med:.3f} mm apart except {where}. Re-export the complete series.")
        n = len(items)
        d = float(depth[-1] - depth[0]) / (n - 1)
        resid = depth - (depth[0] + d * np.arange(n))  # rounding jitter of positions is tolerated
        if np.max(np.abs(resid)) > max(SPACING_ATOL, SPACING_RTOL * d):
            worst = np.argsort(-np.abs(resid))[:3]
            where = ", ".join(f"{items[i][0].name} ({resid[i]:+.3f} mm)" for i in sorted(worst))
            raise InputError(f"series {h0.SeriesInstanceUID} has unevenly spaced slices (mean step {d:.3f} mm; off the "
                             f"regular grid: {where}); it cannot be read as one regular grid. Resample it first.")
        lateral = (pos - pos[0]) - np.outer(depth - depth[0], normal)
        angle = float(np.degrees(np.arctan2(np.linalg.norm(lateral[-1]), depth[-1] - depth[0])))
        if abs(tilt) > TILT_TOL_DEG or angle > TILT_TOL_DEG:
            t = tilt if abs(tilt) > TILT_TOL_DEG else angle
            raise InputError(f"series {h0.SeriesInstanceUID} was acquired with a gantry/detector tilt of {t:.1f}°: "
                             "its slices are sheared, not a rectangular grid. Resample it to a regular grid "
                             "first (e.g. Slicer's DICOM import with 'acquisition geometry regularization').")
        if np.max(np.linalg.norm(lateral, axis=1)) > 0.5 * min(ps):
            raise InputError(f"series {h0.SeriesInstanceUID}: slice positions wander sideways by up to "
                             f"{np.max(np.linalg.norm(lateral, axis=1)):.2f} mm (more than half a pixel); "
                             "it is not one regular grid")
    else:
        d = float(getattr(h0, "SpacingBetweenSlices", 0) or getattr(h0, "SliceThickness", 0) or 1.0)
    direction_lps = np.stack([row, col, normal], axis=1)
    geom = Geometry(shape=(shape2d[1], shape2d[0], len(items)), spacing=(ps[1], ps[0], d),
                    origin=tuple(_LPS @ pos[0]), direction=tuple(map(tuple, _LPS @ direction_lps)))
    return items, geom


def scan_series(spec) -> SeriesInfo:
    """The one image series of ``spec`` (a folder or ``FOLDER#SERIES_UID``), sorted and checked;
    headers only (a structure-set export needs no pixels)."""
    folder, uid = split_series_spec(spec)
    uid, items = _pick(folder, uid)
    items, geom = _geometry(items, folder)
    return SeriesInfo(uid, [p for p, _ in items], [h for _, h in items], geom)


def read_series(spec, name: str | None = None) -> Volume:
    """Read one image series (see the module docstring) as a Volume with ``meta["dicom"]``."""
    from ..io.image import _keep_locale, volume_from_sitk

    import SimpleITK as sitk

    info = scan_series(spec)
    folder, _ = split_series_spec(spec)
    name = name or folder.name
    with _keep_locale():
        sitk.ProcessObject.SetGlobalWarningDisplay(False)  # our checks ran; ITK's own spacing warning is noise
        try:
            if info.geometry is None:
                img = sitk.ReadImage(str(info.files[0]))
            else:
                reader = sitk.ImageSeriesReader()
                reader.SetFileNames([str(f) for f in info.files])
                img = reader.Execute()
        except RuntimeError as e:
            raise InputError(f"cannot read the pixels of series {info.uid}: "
                             f"{str(e).strip().splitlines()[-1]}") from None
        finally:
            sitk.ProcessObject.SetGlobalWarningDisplay(True)
    if img.GetPixelID() == sitk.sitkFloat64:  # rescaled values: float32 holds them exactly enough
        img = sitk.Cast(img, sitk.sitkFloat32)
    vol = volume_from_sitk(img, name)
    if info.geometry is not None:
        if vol.shape != info.geometry.shape:
            raise InputError(f"series {info.uid}: pixel data of shape {vol.shape} does not match its headers "
                             f"{info.geometry.shape}")
        vol = Volume.from_geometry(vol.array, info.geometry, name=name)
    vol.meta["dicom"] = info.meta()
    return vol
