"""DICOM for radiotherapy: image series in (with their UIDs), CT series, RT Structure Sets and DICOM SEG
objects out and in.

* :mod:`.series` — find the series in a folder, check the slice geometry (missing or unevenly spaced
  slices, gantry tilt), read one as a `Volume` whose ``meta["dicom"]`` keeps the patient, study,
  series and frame-of-reference UIDs and each slice's SOP Instance UID. ``FOLDER#SERIES_UID`` picks
  one series of several.
* :mod:`.ct` — write a volume as a CT Image Storage series (pydicom).
* :mod:`.contours` — mask slices <-> planar contours (holes and several islands per slice).
* :mod:`.rtstruct` / :mod:`.seg` — write and read RT Structure Sets and DICOM SEG (highdicom).
* :mod:`.plastimatch` — an RT Structure Set read back by plastimatch (Debian), the independent check.
"""
from .series import (SeriesInfo, list_series, read_series, scan_series, split_series_spec)

__all__ = ["SeriesInfo", "list_series", "read_series", "scan_series", "split_series_spec"]
