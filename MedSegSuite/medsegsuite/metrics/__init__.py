"""Segmentation metrics (Dice, surface Dice, HD95, ASD), spacing-aware, and evaluation reports.

- `overlap.dice` (THE Dice: empty-mask convention, slice restriction), `overlap.slice_dice`;
- `surface` (surfel-area-weighted surface distances, DeepMind/SegRap2023 method);
- `evaluation` (`structure_metrics`, `evaluate_case`, `evaluate`: long-form rows);
- `presets` (SegRap2023, Touchstone, LiTS, user JSON files); `stats` (Wilcoxon + Holm);
- `report` (metrics.csv, summary.csv, comparisons.csv, box plots, report.md, headed by
  `medsegsuite.provenance`).
No torch here: numpy, scipy, scikit-image (tables) and matplotlib (plots) only.
"""
from .overlap import dice, input_slices, slice_dice
from .surface import (SurfaceDistances, average_surface_distance, hausdorff, slice_surface_distances,
                      surface_dice, surface_distances)
from .evaluation import METRICS, evaluate, evaluate_case, structure_metrics
from .presets import Preset, Structure, available_presets, load_preset

__all__ = ["dice", "slice_dice", "input_slices", "SurfaceDistances", "surface_distances",
           "slice_surface_distances", "surface_dice", "hausdorff", "average_surface_distance", "METRICS",
           "structure_metrics", "evaluate_case", "evaluate", "Preset", "Structure", "load_preset",
           "available_presets"]
