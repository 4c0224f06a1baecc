"""DICOM Segmentation (SEG) objects out and in, through highdicom.

Out (:func:`write_dicom_seg`): a BINARY SEG with one segment per structure (label, colour, coded
category and type from the template, else *Anatomical structure*), frames referencing the CT images
of the reference series; empty frames are left out, as highdicom does by default.

In (:func:`read_dicom_seg`): highdicom rebuilds the segments' volume from the frames' positions; it
is placed on the reference grid when one is given (it must be the same grid, possibly fewer slices).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import InputError
from ..volume import Geometry
from .ct import uid_for
from .rtstruct import check_segments

_LPS4 = np.diag([-1.0, -1.0, 1.0, 1.0])
DEFAULT_CATEGORY = ("SCT", "123037004", "Anatomical Structure")
DEFAULT_TYPE = ("SCT", "91723000", "Anatomical structure")


def _concept(code):
    from highdicom.sr import CodedConcept

    scheme, value, meaning = code
    return CodedConcept(value=str(value), scheme_designator=str(scheme), meaning=str(meaning))


def _lab(rgb):
    """sRGB 0..1 -> highdicom CIELabColor (DICOM stores segment colours as CIELab)."""
    from highdicom.color import CIELabColor
    from skimage.color import rgb2lab

    L, a, b = rgb2lab(np.asarray(rgb, float).reshape(1, 1, 3))[0, 0]
    return CIELabColor(float(np.clip(L, 0, 100)), float(np.clip(a, -128, 127)), float(np.clip(b, -128, 127)))


def write_dicom_seg(seg, reference, out, structures: dict | None = None, skip_empty: bool = False) -> Path:
    """Write ``seg`` (on the reference series' grid) as a BINARY DICOM SEG file ``out``.

    ``reference``: a `SeriesInfo`; ``structures``: optional {name: template Structure} for codes."""
    import logging

    import highdicom as hd
    from pydicom.sr.codedict import codes

    logging.getLogger("highdicom").setLevel(logging.WARNING)  # it logs every module it copies at INFO
    masks = check_segments(seg, reference.geometry, skip_empty, "DICOM SEG")
    structures = structures or {}
    algo = hd.AlgorithmIdentificationSequence(name="MedSegSuite", version=__version__,
                                              family=codes.cid7162.ArtificialIntelligence)
    descriptions = []
    for number, name in enumerate(masks, start=1):
        s = structures.get(name)
        category = getattr(s, "category", None) or DEFAULT_CATEGORY
        typ = getattr(s, "code", None) or DEFAULT_TYPE
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=name, segmented_property_category=_concept(category),
            segmented_property_type=_concept(typ), algorithm_type="SEMIAUTOMATIC", algorithm_identification=algo,
            tracking_uid=uid_for(reference.uid, name, "tracking"), tracking_id=name,
            display_color=_lab(seg.colors.get(name, (1.0, 0.0, 0.0)))))
    # [i, j, k] -> frames (k, rows = j, columns = i), one channel per segment
    pixels = np.stack([m.transpose(2, 1, 0) for m in masks.values()], axis=-1).astype(np.uint8)
    content = "|".join(f"{n}:{int(m.sum())}" for n, m in masks.items())
    sop_uid = uid_for(reference.uid, content, np.packbits(pixels).tobytes().hex()[:256], "seg")
    try:
        obj = hd.seg.Segmentation(
            source_images=list(reference.headers), pixel_array=pixels, segmentation_type="BINARY",
            segment_descriptions=descriptions, series_instance_uid=uid_for(sop_uid, "series"), series_number=902,
            sop_instance_uid=sop_uid, instance_number=1, manufacturer="MedSegSuite",
            manufacturer_model_name="medsegsuite", software_versions=__version__, device_serial_number="0",
            series_description="MedSegSuite segments", content_label="MEDSEGSUITE",
            content_description="Structures drafted with MedSegSuite")
    except (ValueError, TypeError) as e:
        raise InputError(f"cannot build a DICOM SEG for series {reference.uid}: {e}") from None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    obj.save_as(str(out))
    return out


def _geometry_of(volume) -> tuple[Geometry, np.ndarray]:
    """A highdicom Volume (array [slice, row, column, segment], affine to LPS) -> our Geometry and
    [i, j, k, segment] array."""
    perm = np.zeros((4, 4))
    perm[0, 2] = perm[1, 1] = perm[2, 0] = perm[3, 3] = 1.0  # our (i=column, j=row, k=slice)
    ijk_to_ras = _LPS4 @ np.asarray(volume.affine, float) @ perm
    arr = np.asarray(volume.array)
    if arr.ndim == 3:
        arr = arr[..., None]
    arr = arr.transpose(2, 1, 0, 3)
    return Geometry.from_ijk_to_ras(arr.shape[:3], ijk_to_ras), arr


def place_on(geom: Geometry, arr: np.ndarray, ref: Geometry, what: str) -> np.ndarray:
    """Put ``arr`` (on ``geom``: the same voxels as ``ref``'s grid, possibly fewer of them and with
    axes flipped or swapped, as highdicom orders slices) into an array on ``ref``."""
    m = ref.ras_to_ijk @ geom.ijk_to_ras
    a = m[:3, :3]
    perm = np.round(a)
    if not (np.allclose(a, perm, atol=1e-3) and np.all(np.abs(perm).sum(0) == 1) and np.all(np.abs(perm).sum(1) == 1)):
        raise InputError(f"{what} lies on another grid (spacing {geom.spacing}, another orientation) than the image "
                         f"(spacing {ref.spacing}); resample one onto the other first")
    # corner voxel positions in ref ijk; geom axis g runs along ref axis axes[g] with sign signs[g]
    axes = [int(np.nonzero(perm[:, g])[0][0]) for g in range(3)]
    signs = [int(perm[axes[g], g]) for g in range(3)]
    for g in range(3):
        if signs[g] < 0:
            arr = np.flip(arr, axis=g)
    order = [axes.index(r) for r in range(3)]
    arr = arr.transpose(order + list(range(3, arr.ndim)))
    first = m @ np.r_[[0.0 if signs[g] > 0 else geom.shape[g] - 1 for g in range(3)], 1.0]
    off = first[:3]
    if not np.allclose(off, np.round(off), atol=1e-2):
        raise InputError(f"{what} is shifted by a fraction of a voxel ({off.round(3).tolist()}) from the image grid")
    off = np.round(off).astype(int)
    out = np.zeros(ref.shape + arr.shape[3:], arr.dtype)
    lo = np.maximum(off, 0)
    hi = np.minimum(off + np.array(arr.shape[:3]), ref.shape)
    if np.any(hi <= lo):
        return out
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = arr[lo[0] - off[0]:hi[0] - off[0], lo[1] - off[1]:hi[1] - off[1],
                                                     lo[2] - off[2]:hi[2] - off[2]]
    return out


def read_dicom_seg(path, geometry: Geometry | None = None, frame_of_reference_uid: str | None = None):
    """Segments of a DICOM SEG file as a `Segmentation` (on ``geometry`` when given, else on the
    grid its frames define)."""
    import highdicom as hd
    from skimage.color import lab2rgb

    from ..io.segmentation import Segmentation

    try:
        obj = hd.seg.segread(str(path))
    except (ValueError, AttributeError, KeyError) as e:
        raise InputError(f"cannot read DICOM SEG {path}: {e}") from None
    if frame_of_reference_uid and str(getattr(obj, "FrameOfReferenceUID", "")) not in ("", frame_of_reference_uid):
        raise InputError(f"{path} is in frame of reference {obj.FrameOfReferenceUID}, the image in "
                         f"{frame_of_reference_uid}: it belongs to another scan")
    numbers = [int(d.SegmentNumber) for d in obj.SegmentSequence]
    try:
        vol = obj.get_volume(segment_numbers=numbers, combine_segments=False)
    except (ValueError, RuntimeError) as e:
        raise InputError(f"{path}: its frames do not form one regular volume ({e})") from None
    geom, arr = _geometry_of(vol)
    if geometry is not None:
        arr = place_on(geom, arr, geometry, f"DICOM SEG {Path(path).name}")
        geom = geometry
    out = Segmentation(geom)
    for n, d in enumerate(obj.SegmentSequence):
        name = str(d.SegmentLabel)
        color = None
        if "RecommendedDisplayCIELabValue" in d:
            v = np.asarray(d.RecommendedDisplayCIELabValue, float)  # scaled to 0..65535
            lab = np.array([v[0] * 100 / 65535, v[1] * 255 / 65535 - 128, v[2] * 255 / 65535 - 128])
            color = tuple(float(c) for c in np.clip(lab2rgb(lab.reshape(1, 1, 3))[0, 0], 0, 1))
        if name in out.masks:
            name = f"{name} ({d.SegmentNumber})"
        out.add(name, arr[..., n] > 0, color)
    return out
