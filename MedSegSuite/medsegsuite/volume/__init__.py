"""Voxel arrays with their physical geometry.

Convention, stated once for the whole package:

* ``Volume.array`` is indexed ``[i, j, k]`` (IJK, the same order as Slicer's IJK and ITK's index), so
  ``array.shape == (size_i, size_j, size_k)``. SimpleITK and ``slicer.util.arrayFromVolume`` return
  ``[k, j, i]``; the readers transpose.
* Geometry is in **RAS** (Slicer's world frame): ``origin`` is the RAS position of voxel (0, 0, 0),
  ``direction`` is a 3x3 matrix whose *columns* are the RAS unit vectors of the i, j, k axes, and
  ``spacing`` is in mm along i, j, k. ``ijk_to_ras = [[direction @ diag(spacing), origin], [0 0 0 1]]``.
* Files (NIfTI, NRRD, MHA, DICOM) are read and written through SimpleITK, which works in LPS; the
  LPS<->RAS flip (negate the first two rows) happens only in :mod:`medsegsuite.io`.
"""
from .geometry import Volume, Geometry, ras_to_lps_matrix
from .planes import (PLANES, SliceEngine, batches, canonical_axes, check_plane, parse_slices,
                     split_slices)

__all__ = ["Volume", "Geometry", "ras_to_lps_matrix", "PLANES", "SliceEngine", "batches", "canonical_axes",
           "check_plane", "parse_slices", "split_slices"]
