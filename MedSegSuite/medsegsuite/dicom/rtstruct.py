"""RT Structure Set (RTSTRUCT) out and in.

Out (:func:`write_rtstruct`): one ROI per segment, named as the segment (a template's TG-263 name),
with its display colour, its RT ROI Interpreted Type and, when the template gives one, its coded
concept (RT ROI Identification Code Sequence); closed planar contours per slice (holes and islands
as separate contours, see :mod:`.contours`), each referencing the CT image it lies on by SOP
Instance UID; the frame of reference, study and series of the reference series. Names may hold
any Unicode (the file says ISO_IR 192, UTF-8).

In (:func:`read_rtstruct`): every ROI's contours filled (even-odd per slice) onto the image grid
of the series the structure set references, as named segments with their colours.
"""
from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import InputError
from ..volume import Geometry
from .contours import contours_to_mask, mask_to_contours
from .ct import ds_str, uid_for

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
INTERPRETED_TYPES = ("EXTERNAL", "PTV", "CTV", "GTV", "TREATED_VOLUME", "IRRAD_VOLUME", "OAR", "BOLUS",
                     "AVOIDANCE", "ORGAN", "MARKER", "REGISTRATION", "ISOCENTER", "CONTRAST_AGENT", "CAVITY",
                     "BRACHY_CHANNEL", "BRACHY_ACCESSORY", "BRACHY_SRC_APP", "BRACHY_CHNL_SHLD", "SUPPORT",
                     "FIXATION", "DOSE_REGION", "CONTROL", "DOSE_MEASUREMENT")


CONTOUR_DATA = 0x30060050


def _raw_ds(values):
    """ContourData as a raw element: pydicom would build and validate one DS object per coordinate
    (~100 µs each, seconds for a liver); the text is written as it is."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    text = "\\".join(ds_str(round(float(v), 4)) for v in values).encode("ascii")
    if len(text) % 2:
        text += b" "
    return RawDataElement(Tag(CONTOUR_DATA), "DS", len(text), text, 0, False, True)


def contour_points(item) -> np.ndarray:
    """An item's ContourData as (n, 3) floats, parsed from the raw text when pydicom has not yet."""
    from pydicom.dataelem import RawDataElement

    el = item.get_item(CONTOUR_DATA)
    if el is None:
        return np.zeros((0, 3))
    if isinstance(el, RawDataElement) and el.value is not None:
        vals = np.array(el.value.replace(b" ", b"").split(b"\\"), dtype=float)
    else:
        vals = np.asarray([float(v) for v in item[CONTOUR_DATA].value], dtype=float)
    return vals.reshape(-1, 3)


def check_name(name: str, what: str = "structure name") -> str:
    """A name DICOM can hold as LO: at most 64 characters, no backslash or control character."""
    n = str(name)
    if not n.strip():
        raise InputError(f"a {what} may not be empty")
    if len(n) > 64:
        raise InputError(f"{what} '{n}' is {len(n)} characters long; DICOM allows 64")
    if "\\" in n or any(ord(ch) < 32 for ch in n):
        raise InputError(f"{what} '{n}' holds a backslash or control character, which DICOM does not allow")
    return n


def check_segments(seg, reference_geometry: Geometry, skip_empty: bool, what: str) -> dict[str, np.ndarray]:
    """The masks to export: on the reference grid, named validly, and non-empty (or skipped)."""
    if not seg.masks:
        raise InputError("the segmentation has no segments to export")
    try:
        reference_geometry.require_same(seg.geometry, what="the segmentation")
    except InputError as e:
        raise InputError(f"{e} (a {what} must lie on the grid of the referenced DICOM series)") from None
    for name in seg.masks:
        check_name(name)
    empty = [n for n, m in seg.masks.items() if not m.any()]
    if empty and not skip_empty:
        raise InputError(f"structure(s) {empty} are empty; draw them, remove them, or pass --skip-empty to leave "
                         f"them out of the {what}")
    masks = {n: m for n, m in seg.masks.items() if m.any()}
    if not masks:
        raise InputError("every structure is empty; nothing to export")
    return masks


def _code_item(code):
    from pydicom.dataset import Dataset

    scheme, value, meaning = code
    it = Dataset()
    it.CodeValue, it.CodingSchemeDesignator, it.CodeMeaning = str(value), str(scheme), str(meaning)
    return it


def write_rtstruct(seg, reference, out, structures: dict | None = None, label: str = "MedSegSuite",
                   skip_empty: bool = False, approved_by: str | None = None) -> Path:
    """Write ``seg`` (a `Segmentation` on the reference series' grid) as an RTSTRUCT file ``out``.

    ``reference``: a `SeriesInfo` (:func:`.series.scan_series`). ``structures``: optional
    {name: template Structure} for interpreted type, code and algorithm. ``approved_by``: record an
    Approval (APPROVED, reviewer, date) — only when every exported structure is approved."""
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    masks = check_segments(seg, reference.geometry, skip_empty, "structure set")
    structures = structures or {}
    ref0 = reference.first
    frame_uid = str(getattr(ref0, "FrameOfReferenceUID", "") or "")
    if not frame_uid:
        raise InputError(f"reference series {reference.uid} has no FrameOfReferenceUID; contours cannot be placed")
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    content = "|".join(f"{n}:{np.packbits(m).tobytes().hex()[:64]}:{int(m.sum())}" for n, m in masks.items())
    sop_uid = uid_for(reference.uid, content, date + time, "rtstruct")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RT_STRUCTURE_SET_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(out), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.SOPClassUID, ds.SOPInstanceUID = RT_STRUCTURE_SET_STORAGE, sop_uid
    for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription"):
        setattr(ds, key, getattr(ref0, key, "") or "")
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = uid_for(sop_uid, "series")
    ds.SeriesNumber = 901
    ds.SeriesDescription = "MedSegSuite structures"
    ds.OperatorsName = ""
    ds.Manufacturer = "MedSegSuite"
    ds.ManufacturerModelName = "medsegsuite"
    ds.SoftwareVersions = __version__
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.StructureSetLabel = check_name(label, "structure set label")[:16]
    ds.StructureSetName = label
    ds.StructureSetDate, ds.StructureSetTime = date, time

    images = Sequence()
    sop_class = {}
    for h in reference.headers:
        it = Dataset()
        it.ReferencedSOPClassUID, it.ReferencedSOPInstanceUID = h.SOPClassUID, h.SOPInstanceUID
        sop_class[str(h.SOPInstanceUID)] = h.SOPClassUID
        images.append(it)
    rs = Dataset()
    rs.SeriesInstanceUID = reference.uid
    rs.ContourImageSequence = images
    st = Dataset()
    st.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management, as TPSs write it
    st.ReferencedSOPInstanceUID = ref0.StudyInstanceUID
    st.RTReferencedSeriesSequence = Sequence([rs])
    fr = Dataset()
    fr.FrameOfReferenceUID = frame_uid
    fr.RTReferencedStudySequence = Sequence([st])
    ds.ReferencedFrameOfReferenceSequence = Sequence([fr])

    rois, contours, observations = Sequence(), Sequence(), Sequence()
    for number, (name, mask) in enumerate(masks.items(), start=1):
        s = structures.get(name)
        r = Dataset()
        r.ROINumber, r.ReferencedFrameOfReferenceUID, r.ROIName = number, frame_uid, name
        r.ROIGenerationAlgorithm = getattr(s, "algorithm", None) or "SEMIAUTOMATIC"
        rois.append(r)
        c = Dataset()
        c.ReferencedROINumber = number
        c.ROIDisplayColor = [int(round(255 * float(v))) for v in seg.colors.get(name, (1.0, 0.0, 0.0))]
        seq = Sequence()
        n_contour = 0
        for k, polys in sorted(mask_to_contours(mask, reference.geometry).items()):
            uid = str(reference.headers[k].SOPInstanceUID)
            for poly in polys:
                n_contour += 1
                ref_img = Dataset()
                ref_img.ReferencedSOPClassUID, ref_img.ReferencedSOPInstanceUID = sop_class[uid], uid
                item = Dataset()
                item.ContourImageSequence = Sequence([ref_img])
                item.ContourGeometricType = "CLOSED_PLANAR"
                item.NumberOfContourPoints = len(poly)
                item.ContourNumber = n_contour
                item[CONTOUR_DATA] = _raw_ds(poly.ravel())
                seq.append(item)
        c.ContourSequence = seq
        contours.append(c)
        o = Dataset()
        o.ObservationNumber, o.ReferencedROINumber = number, number
        o.RTROIInterpretedType = getattr(s, "interpreted_type", None) or "ORGAN"
        o.ROIInterpreter = ""
        code = getattr(s, "code", None)
        if code:
            o.RTROIIdentificationCodeSequence = Sequence([_code_item(code)])
        observations.append(o)
    ds.StructureSetROISequence = rois
    ds.ROIContourSequence = contours
    ds.RTROIObservationsSequence = observations
    if approved_by:
        ds.ApprovalStatus = "APPROVED"
        ds.ReviewDate, ds.ReviewTime, ds.ReviewerName = date, time, approved_by
    else:
        ds.ApprovalStatus = "UNAPPROVED"
    ds.save_as(str(out), enforce_file_format=True)
    return out


# -- reading -------------------------------------------------------------------------------------
def referenced_series_uid(ds) -> str | None:
    try:
        return str(ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
                   .RTReferencedSeriesSequence[0].SeriesInstanceUID)
    except (AttributeError, IndexError):
        return None


def read_rtstruct(path, geometry: Geometry, frame_of_reference_uid: str | None = None):
    """ROIs of an RTSTRUCT file as a `Segmentation` on ``geometry`` (the referenced image grid).

    ``frame_of_reference_uid``: when given (the image's), a structure set in another frame of
    reference is refused instead of being drawn in the wrong place."""
    import pydicom

    from ..io.segmentation import Segmentation

    ds = pydicom.dcmread(str(path))
    if str(getattr(ds, "Modality", "")) != "RTSTRUCT":
        raise InputError(f"{path} is a {getattr(ds, 'Modality', 'non-DICOM')} object, not an RTSTRUCT")
    if frame_of_reference_uid:
        theirs = {str(r.ReferencedFrameOfReferenceUID) for r in getattr(ds, "StructureSetROISequence", [])
                  if "ReferencedFrameOfReferenceUID" in r}
        if theirs and frame_of_reference_uid not in theirs:
            raise InputError(f"{path} is drawn in frame of reference {sorted(theirs)[0]}, the image is in "
                             f"{frame_of_reference_uid}: it belongs to another scan")
    names = {int(r.ROINumber): str(r.ROIName) for r in getattr(ds, "StructureSetROISequence", [])}
    seg = Segmentation(geometry)
    for c in getattr(ds, "ROIContourSequence", []):
        number = int(c.ReferencedROINumber)
        name = names.get(number, f"ROI_{number}")
        if name in seg.masks:  # two ROIs of one name: keep both
            name = f"{name} ({number})"
        polys = [contour_points(item) for item in getattr(c, "ContourSequence", [])
                 if str(getattr(item, "ContourGeometricType", "CLOSED_PLANAR")) == "CLOSED_PLANAR"]
        mask = contours_to_mask(polys, geometry, what=f"ROI '{name}' contour")
        color = getattr(c, "ROIDisplayColor", None)
        seg.add(name, mask, tuple(int(v) / 255 for v in color) if color is not None else None)
    return seg
