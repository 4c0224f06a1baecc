"""The oldest 3D Slicer (and so Python) the extension supports, in one place.

Slicer 5.6/5.8 bundle Python 3.9, which torch 2.14 and MONAI 1.6 no longer support; Slicer 5.10 bundles
Python 3.12. The backend itself (``medsegsuite``, also the server) needs Python >= 3.10. The top-level
CMakeLists.txt (``EXTENSION_MINIMUM_SLICER_VERSION``), each module's help text, the README and
docs/slicer.md say the same; ``Testing/Python/test_slicer_static.py`` checks they agree.

Keep this file and ``__init__.py`` readable by Python 3.9, so an old Slicer shows this message
instead of a TypeError from a newer annotation.
"""
MIN_SLICER = (5, 10)
SLICER_PYTHON = (3, 12)  # what Slicer 5.10 bundles (Slicer_REQUIRED_PYTHON_VERSION 3.12.10)
MIN_PYTHON = (3, 10)     # the backend's floor (torch 2.14, MONAI 1.6); below every supported Slicer

HELP = f"Requires 3D Slicer {MIN_SLICER[0]}.{MIN_SLICER[1]} or later (Python {SLICER_PYTHON[0]}.{SLICER_PYTHON[1]})."


def check(version_info=None) -> None:
    """Raise ImportError with what to do when this Python is older than the extension supports."""
    import sys

    v = tuple(version_info or sys.version_info)[:2]
    if v < MIN_PYTHON:
        raise ImportError(
            f"MedSegSuite needs 3D Slicer {MIN_SLICER[0]}.{MIN_SLICER[1]} or later (Python "
            f"{SLICER_PYTHON[0]}.{SLICER_PYTHON[1]}); this Python is {v[0]}.{v[1]}. Install a newer Slicer.")
