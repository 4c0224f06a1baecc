"""Slicer-side library of the MedSegSuite modules: the MRML bridge and shared panel logic.

Imports Slicer's MRML classes (3D Slicer, or slicer-core on PyPI); the backend package
`medsegsuite` never imports this."""
from .supported import check as _check_supported

_check_supported()  # an old Slicer gets a clear message here, before any newer syntax is evaluated
