"""Slicer's *Grow from seeds* on arrays: the scribble tool every Slicer annotator already has, and
the baseline any scribble-trained model must beat.

It runs the very filter the Segment Editor effect runs, ``vtkImageGrowCutSegment`` from slicer-core
(imported from ``slicer_core`` directly, lazily: it is a VTK class, no Slicer application or Qt),
with the effect's defaults: seed locality 0, and the computation restricted to the seeds' bounding
box grown by 10 % of its size per axis (at least 3 voxels), as the effect does when no editable area
is set (its ``extentGrowthRatio``). Voxels outside that box stay background.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from .labels import UNLABELLED

EXTENT_GROWTH = 0.1  # the Segment Editor effect's extentGrowthRatio without an editable area
MIN_MARGIN = 3


def _vtk_image(a: np.ndarray, spacing):
    import vtk
    from vtk.util import numpy_support

    img = vtk.vtkImageData()
    img.SetDimensions(*a.shape)
    img.SetSpacing(*(float(s) for s in spacing))
    img.GetPointData().SetScalars(numpy_support.numpy_to_vtk(a.ravel(order="F"), deep=True))
    return img


def seed_box(seeds: np.ndarray) -> tuple[slice, ...]:
    """The effect's working extent: the seeds' bounding box grown by ``EXTENT_GROWTH``."""
    nz = np.argwhere(seeds)
    lo, hi = nz.min(0), nz.max(0)
    margin = np.maximum(MIN_MARGIN, (EXTENT_GROWTH * (hi - lo)).astype(int))
    lo = np.maximum(lo - margin, 0)
    hi = np.minimum(hi + margin + 1, seeds.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def grow_from_seeds(image: np.ndarray, scribbles: np.ndarray, n_classes: int, spacing=(1.0, 1.0, 1.0),
                    unlabelled: int = UNLABELLED, seed_locality: float = 0.0) -> np.ndarray:
    """[i, j, k] image + scribbles (0 background, 1..C-1 classes, ``unlabelled`` elsewhere) ->
    uint8 labels 0..C-1 on the image grid. Every class, background included, needs a stroke."""
    try:
        from slicer_core.vtkSlicerSegmentationsModuleLogic import vtkImageGrowCutSegment
    except ImportError as e:  # pragma: no cover - slicer-core is a project requirement
        raise InputError("Grow from seeds needs slicer-core (pip install slicer-core)") from e
    from vtk.util import numpy_support

    img = np.asarray(image)
    s = np.asarray(scribbles)
    if img.ndim != 3 or s.shape != img.shape:
        raise InputError(f"Grow from seeds needs a 3D image and scribbles on its grid, got {img.shape} and {s.shape}")
    labelled = s != unlabelled
    present = set(np.unique(s[labelled]).tolist())
    missing = [c for c in range(n_classes) if c not in present]
    if missing:
        raise InputError(f"Grow from seeds needs strokes of every class, background included; none for {missing}")
    box = seed_box(labelled)
    # the filter's labels: 0 = unlabelled, class c -> c + 1
    seeds = np.where(labelled, s.astype(np.int16) + 1, 0).astype(np.int16)[box]
    f = vtkImageGrowCutSegment()
    f.SetIntensityVolume(_vtk_image(np.ascontiguousarray(img[box], dtype=np.float32), spacing))
    f.SetSeedLabelVolume(_vtk_image(seeds, spacing))
    f.SetDistancePenalty(float(seed_locality))
    f.Update()
    res = numpy_support.vtk_to_numpy(f.GetOutput().GetPointData().GetScalars()).reshape(seeds.shape, order="F")
    out = np.zeros(img.shape, dtype=np.uint8)
    out[box] = np.clip(res.astype(np.int64) - 1, 0, n_classes - 1).astype(np.uint8)
    return out
