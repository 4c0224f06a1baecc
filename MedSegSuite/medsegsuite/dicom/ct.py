"""Write a volume as a CT Image Storage series (one file per axial k slice), with pydicom.

The UIDs are derived from the image's content (``generate_uid`` with the fingerprint as entropy), so
exporting the same image twice gives the same series: a structure set written against the first
export still references the second. Voxels must be integers in the int16 range (HU).
"""
from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import InputError
from ..volume import Volume

_LPS = np.diag([-1.0, -1.0, 1.0])
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def ds_str(v: float) -> str:
    """A decimal string of at most 16 characters (the DS limit)."""
    for digits in (10, 8, 6, 4):
        s = f"{float(v):.{digits}g}"
        if len(s) <= 16:
            return s
    raise InputError(f"value {v} does not fit a DICOM decimal string")


def uid_for(*parts) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(p) for p in parts])


def lps_frame(vol_or_geometry) -> tuple[np.ndarray, np.ndarray, tuple]:
    """(row cosines, column cosines, spacing) of a grid in LPS, as DICOM wants them."""
    g = getattr(vol_or_geometry, "geometry", vol_or_geometry)
    d = _LPS @ g.direction_matrix
    return d[:, 0], d[:, 1], g.spacing


def stored_values(array) -> tuple[np.ndarray, float]:
    """(int16 stored values, rescale slope): the coarsest slope 1, 1/2, 1/4 ... 1/1024 that keeps
    every value exactly (LiTS-117 holds quarter HU); values no such slope keeps are rounded to 1 HU."""
    a = np.asarray(array)
    if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
        raise InputError("DICOM export needs finite voxel values")
    a = a.astype(np.float64)
    for e in range(11):
        slope = 2.0 ** -e
        q = a / slope
        if q.min() < -32768 or q.max() > 32767:
            break
        if np.array_equal(q, np.round(q)):
            return q.astype(np.int16), slope
    q = np.round(a)
    if q.min() < -32768 or q.max() > 32767:
        raise InputError("voxel values exceed the int16 range of a CT series")
    return q.astype(np.int16), 1.0


def write_ct_series(vol: Volume, folder, patient_name: str = "Anonymous^", patient_id: str = "MSS0001",
                    study_description: str = "", series_description: str = "", image_comments: str = "",
                    patient_position: str = "HFS") -> Path:
    """Write ``vol`` (HU) as a CT series in ``folder`` (created; files CT0001.dcm ...); returns the folder.
    ``patient_position`` (head first supine by default) is recorded, not derived: say what you know."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    arr, slope = stored_values(vol.array)
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise InputError(f"{folder} is not empty; write a DICOM series into a new or empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    fp = vol.fingerprint()
    study, series, frame = uid_for(fp, "study"), uid_for(fp, "series"), uid_for(fp, "frame")
    row, col, spacing = lps_frame(vol)
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ni, nj, nk = arr.shape
    for k in range(nk):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = uid_for(fp, "image", k)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = FileDataset(str(folder / f"CT{k + 1:04d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = time
        ds.AccessionNumber = ""
        ds.Modality = "CT"
        ds.Manufacturer = "MedSegSuite"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = study_description
        ds.SeriesDescription = series_description
        ds.ManufacturerModelName = "medsegsuite"
        ds.SoftwareVersions = __version__
        ds.PatientName, ds.PatientID = patient_name, patient_id
        ds.PatientBirthDate, ds.PatientSex = "", ""
        ds.Laterality = ""  # type 2C: dciodvfy cannot tell a paired body part, so it is present and empty (unknown)
        ds.PatientPosition = patient_position
        ds.KVP = ""
        ds.SliceThickness = ds_str(spacing[2])
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = "1", 1, k + 1, 1
        pos = _LPS @ vol.geometry.ijk_to_ras_points([(0, 0, k)])[0]
        ds.ImagePositionPatient = [ds_str(v) for v in pos]
        ds.ImageOrientationPatient = [ds_str(v) for v in (*row, *col)]
        ds.FrameOfReferenceUID = frame
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = ds_str(pos @ np.cross(row, col))
        if image_comments:
            ds.ImageComments = image_comments
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = nj, ni
        ds.PixelSpacing = [ds_str(spacing[1]), ds_str(spacing[0])]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", ds_str(slope), "HU"
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        ds.PixelData = np.ascontiguousarray(arr[:, :, k].T).tobytes()
        ds.save_as(ds.filename, enforce_file_format=True)
    return folder
