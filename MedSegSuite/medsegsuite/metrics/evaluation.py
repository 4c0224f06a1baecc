"""Scoring segmentations structure by structure: the one entry point every method's benchmark uses.

``structure_metrics(pred, ref, spacing, tolerance)`` scores two masks; ``evaluate_case`` scores two
`Segmentation`s through a `Preset`; ``evaluate`` scores prediction sets (methods) against references
over many cases and returns long-form rows ``{method, centre, case, structure, dice, nsd, hd95, asd}``
that `metrics.report` writes out.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np

from ..errors import InputError
from .overlap import dice, input_slices
from .presets import Preset
from .surface import (average_surface_distance, hausdorff, slice_surface_distances, surface_dice,
                      surface_distances)

METRICS = ("dice", "nsd", "hd95", "asd")
# Higher is better for overlap metrics, lower for distances (used by statistics and the report).
HIGHER_IS_BETTER = {"dice": True, "nsd": True, "hd95": False, "asd": False}


def structure_metrics(pred, ref, spacing, tolerance_mm: float = 1.0, slices: tuple[int, list] | None = None,
                      percentile: float = 95.0) -> dict[str, float]:
    """DSC, NSD at ``tolerance_mm``, HD95 and symmetric ASD (mm) of two binary masks.

    ``slices=(axis, indices)`` or ``(SliceEngine, plane indices)`` restricts scoring to those slices: DSC
    over their voxels, surface metrics from their 2D contours (in-plane distances), for predictions made
    on some slices only.
    """
    p = np.asarray(pred, dtype=bool)
    r = np.asarray(ref, dtype=bool)
    if p.shape != r.shape:
        raise InputError(f"prediction shape {p.shape} differs from reference shape {r.shape}")
    if slices is not None:
        axis, idx = input_slices(slices, p.shape)
        sd = slice_surface_distances(p, r, spacing, axis, idx)
        p, r = np.take(p, idx, axis=axis), np.take(r, idx, axis=axis)
    else:
        sd = surface_distances(p, r, spacing)
    return {"dice": dice(p, r), "nsd": surface_dice(sd, tolerance_mm), "hd95": hausdorff(sd, percentile),
            "asd": average_surface_distance(sd)}


def evaluate_case(pred, ref, preset: Preset | None = None, slices=None, tolerance_mm: float = 1.0,
                  what: str = "prediction") -> list[dict]:
    """Score every preset structure found in the reference ``ref`` against ``pred`` (Segmentations).

    Structures the reference lacks are skipped (not annotated); a structure the prediction lacks
    counts as an empty prediction. Raises `InputError` when the two grids differ. ``slices`` may also
    be ``(plane name, indices)``: the plane is found from this case's direction matrix (LPS frame, the
    slice numbering of the SAM-family and scribble methods and of the demo's report).
    """
    ref.geometry.require_same(pred.geometry, what=what)
    if slices is not None and isinstance(slices[0], str):
        from ..volume.planes import SliceEngine

        slices = (SliceEngine(ref.geometry.shape, ref.geometry.direction, slices[0]), slices[1])
    preset = preset or Preset.from_names(ref.names, tolerance_mm)
    ref_masks = preset.find(ref)
    pred_masks = preset.find(pred)
    rows = []
    for s in preset.structures:
        if s.name not in ref_masks:
            continue
        pm = pred_masks.get(s.name)
        if pm is None:
            pm = np.zeros(ref.geometry.shape, dtype=bool)
        row = {"structure": s.name}
        row.update(structure_metrics(pm, ref_masks[s.name], ref.geometry.spacing, s.tolerance_mm, slices))
        rows.append(row)
    if not rows:
        raise InputError(f"none of the preset '{preset.name}' structures was found in the reference "
                         f"(it holds {ref.names}); pick another --preset or rename the segments")
    return rows


def evaluate(predictions: Mapping[str, Mapping[str, object]], references: Mapping[str, object],
             preset: Preset | None = None, centres: Mapping[str, str] | None = None, slices=None,
             tolerance_mm: float = 1.0, log: Callable[[str], None] | None = None) -> list[dict]:
    """Long-form rows for every method x case x structure.

    ``predictions[method][case]`` and ``references[case]`` are `Segmentation`s or zero-argument
    callables returning one (so big cases are read one at a time). Cases missing from a method's
    predictions are reported and skipped for that method; a case with no reference is an error.
    """
    for method, cases in predictions.items():
        extra = sorted(set(cases) - set(references))
        if extra:
            raise InputError(f"method '{method}' has predictions for case(s) with no reference: {extra[:5]} "
                             f"(reference cases: {sorted(references)[:5]}...); file names must match")
    rows = []
    warned: set = set()
    for case in sorted(references):
        methods = [m for m in predictions if case in predictions[m]]
        if not methods:
            continue
        ref = references[case]
        ref = ref() if callable(ref) else ref
        _warn_unmatched(preset, ref, "reference", warned, log)
        for method in methods:
            pred = predictions[method][case]
            pred = pred() if callable(pred) else pred
            _warn_unmatched(preset or Preset.from_names(ref.names), pred, f"'{method}'", warned, log)
            case_rows = evaluate_case(pred, ref, preset, slices, tolerance_mm,
                                      what=f"prediction '{method}' of case '{case}'")
            centre = (centres or {}).get(case, "all")
            rows += [{"method": method, "centre": centre, "case": case, **r} for r in case_rows]
            if log:
                log(f"[evaluate] {method} / {case}: " + ", ".join(
                    f"{r['structure']} DSC {r['dice']:.3f}" for r in case_rows[:4])
                    + (" ..." if len(case_rows) > 4 else ""))
    for method, cases in predictions.items():
        missing = sorted(set(references) - set(cases))
        if missing and log:
            log(f"[evaluate] warning: method '{method}' has no prediction for {len(missing)} case(s): {missing[:5]}")
    return rows


def _warn_unmatched(preset, seg, who: str, warned: set, log) -> None:
    """Say once per source which segments no structure claims (a misspelt name scores as a miss)."""
    if preset is None or log is None:
        return
    extra = [n for n in preset.unmatched(seg) if (who, n) not in warned]
    if extra:
        warned.update((who, n) for n in extra)
        log(f"[evaluate] note: {who} segment(s) {extra[:8]} match no structure of preset '{preset.name}' "
            "and are ignored")


def finite(values) -> np.ndarray:
    a = np.asarray([v for v in values if v is not None], dtype=float)
    return a[np.isfinite(a)]


def summarise(values) -> dict:
    """n, mean, std, median, q1, q3 over finite values, and how many were undefined (NaN/inf)."""
    vals = list(values)
    a = finite(vals)
    nan = float("nan")
    return {"n": len(vals), "n_undefined": len(vals) - len(a),
            "mean": float(a.mean()) if len(a) else nan, "std": float(a.std(ddof=1)) if len(a) > 1 else nan,
            "median": float(np.median(a)) if len(a) else nan,
            "q1": float(np.percentile(a, 25)) if len(a) else nan, "q3": float(np.percentile(a, 75)) if len(a) else nan}


def fmt(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.{digits}f}"
    return str(v)
