"""Structure objects (RTSTRUCT, DICOM SEG) -> named segments on an image grid."""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..volume import Geometry


def is_dicom_file(path) -> bool:
    p = Path(path)
    if not p.is_file():
        return False
    if p.suffix.lower() == ".dcm":
        return True
    with open(p, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:] == b"DICM"


def modality_of(path) -> str:
    import pydicom

    try:
        return str(pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["Modality"]).Modality)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise InputError(f"cannot read DICOM file {path}: {e}") from None


def reference_geometry(path, reference=None) -> tuple[Geometry, str | None]:
    """The image grid (and frame of reference) to draw an RTSTRUCT's contours on: ``reference`` (a
    DICOM folder / ``FOLDER#UID``, a `Volume` or a `Geometry`), else the series it references,
    looked up in its own folder."""
    from .rtstruct import referenced_series_uid
    from .series import scan_series

    if isinstance(reference, Geometry):
        return reference, None
    if reference is not None and hasattr(reference, "geometry"):
        return reference.geometry, (reference.meta.get("dicom") or {}).get("frame_of_reference_uid")
    if reference is not None:
        info = scan_series(reference)
        return info.geometry, str(getattr(info.first, "FrameOfReferenceUID", "") or "") or None
    import pydicom

    uid = referenced_series_uid(pydicom.dcmread(str(path), stop_before_pixels=True))
    folder = Path(path).parent
    try:
        info = scan_series(f"{folder}#{uid}" if uid else folder)
    except InputError as e:
        raise InputError(f"{path} needs the image series it was drawn on (series {uid}); it is not in {folder} "
                         f"({str(e).splitlines()[0]}). Give it with --reference / --image.") from None
    return info.geometry, str(getattr(info.first, "FrameOfReferenceUID", "") or "") or None


def read_structures(path, reference=None):
    """An RTSTRUCT or DICOM SEG file as a `Segmentation` (see :func:`reference_geometry`)."""
    from .rtstruct import read_rtstruct
    from .seg import read_dicom_seg

    modality = modality_of(path)
    if modality == "RTSTRUCT":
        geometry, frame = reference_geometry(path, reference)
        return read_rtstruct(path, geometry, frame)
    if modality == "SEG":
        if reference is None:
            return read_dicom_seg(path)
        geometry, frame = reference_geometry(path, reference)
        return read_dicom_seg(path, geometry, frame)
    raise InputError(f"{path} is a DICOM {modality} object; structures are read from RTSTRUCT or SEG files")
