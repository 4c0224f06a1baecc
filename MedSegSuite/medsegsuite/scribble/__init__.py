"""Scribble-supervised segmentation with MaCo (arXiv 2408.12814): continuous pseudo labels (CPL)
from distances to each class's scribbles, and masked context modelling (MCM), i.e. predictions on an
attention-masked image must agree with those on the full image.

Modules: `labels` (scribble label arrays <-> segments, validation), `generator` (realistic scribbles
from full labels, for evaluation), `cpl`, `mcm`, `losses`, `network`, `train`, `infer`,
`checkpoint` (model <-> bytes, weights_only-safe; registry models via `models.loader`), `params`
(the tasks' typed parameters), `preprocess` (slices through `volume.SliceEngine`, LPS frame),
`tasks` (backend tasks), `evaluation`.
No Slicer import here; torch only inside the functions that need it.
"""
from .labels import UNLABELLED, ScribbleSet, scribbles_from_segmentation, validate_scribbles
from .cpl import continuous_pseudo_labels

__all__ = ["UNLABELLED", "ScribbleSet", "scribbles_from_segmentation", "validate_scribbles",
           "continuous_pseudo_labels"]
