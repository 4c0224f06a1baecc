"""CoSAM's liver models on real CTs they never saw: TotalSegmentator's two reference CTs.

Labels there are TotalSegmentator's own output (*pseudo* labels), not manual ground truth. Each case
goes through the same tasks a user runs (``cosam.segment``: slice engine, the card's CT window, square
resize to the backbone's input) next to box-prompted LiteMedSAM (``sam.oracle_box``, one box per
component of the *pseudo* liver label on each slice) in the same backend, so the encoder runs once.
Scored per slice holding *pseudo* liver (``medsegsuite.metrics.slice_dice``) and pooled over the volume.
"""
from __future__ import annotations

import numpy as np

from ..metrics import dice, slice_dice
from ..volume.fov import canonical_pixel_mm, differs
from .windows import training_geometry

CASES = ("ts-ct-native", "ts-ct-contrast")


def load_card(model) -> dict:
    """A CoSAM model's card (registry id or checkpoint file)."""
    from pathlib import Path

    from ..models.registry import default_registry
    from .model import read_cosam

    if Path(str(model)).exists():
        return read_cosam(model)[1]
    return default_registry().get(str(model)).load()["card"]


def _liver_slices(engine, lab) -> list[int]:
    return [k for k in range(engine.n_slices) if engine.slice(lab, k).any()]


def cross_case_results(model_paths, cases=CASES, log=print) -> dict | None:
    """{"note", "cases": [{case, n_slices, coarse [per model], final [per model], box, ...}]}, or None
    when the real-data cache lacks the cases (``medsegsuite sampledata fetch``)."""
    try:
        from ..sampledata.real import real_case
    except ImportError:
        return None
    from ..engine import LocalBackend
    from ..engine.interface import run_job
    from ..errors import MissingDataError
    from ..volume import SliceEngine

    out = []
    backend = LocalBackend("cpu")
    try:
        for cid in cases:
            try:
                case = real_case(cid)
            except MissingDataError as e:
                log(f"cross-case: {cid} skipped ({e})")
                continue
            lab = case.labels.get("liver")
            if lab is None or not lab.any():
                continue
            engine = SliceEngine.for_volume(case.image, "axial")
            ks = _liver_slices(engine, lab)
            ref2d = engine.stack(lab, ks)
            box = run_job(backend, "sam.oracle_box", case.image, {"plane": "axial", "slices": ks,
                                                                   "window": [-160.0, 240.0]}, {"liver": lab})
            row = {"case": cid, "description": case.description, "label_kind": case.label_kind,
                   "shape": list(case.image.array.shape), "spacing": [round(float(s), 3) for s in case.image.spacing],
                   "n_slices": len(ks), "slices_total": engine.n_slices,
                   "box": dice(box.masks["liver"], lab), "box_slice_mean": float(np.mean(
                       slice_dice(engine.stack(box.masks["liver"], ks), ref2d))),
                   "coarse": [], "final": [], "coarse_volume": [], "final_volume": [], "field_of_view": [],
                   "coarse_squeezed": [], "final_squeezed": []}
            for path in model_paths:
                for fov, suffix in (("model", ""), ("slice", "_squeezed")):
                    r = run_job(backend, "cosam.segment", case.image, {"model": str(path), "plane": "axial",
                                                                        "slices": ks, "return_rounds": True, "interpolate": 0,
                                                                        "field_of_view": fov})
                    c, f = r.arrays["liver_round0"] > 0, r.masks["liver"]
                    row["coarse" + suffix].append(float(np.mean(slice_dice(engine.stack(c, ks), ref2d))))
                    row["final" + suffix].append(float(np.mean(slice_dice(engine.stack(f, ks), ref2d))))
                    if fov == "model":
                        row["coarse_volume"].append(dice(c, lab))
                        row["final_volume"].append(dice(f, lab))
                        row["field_of_view"].append(r.info.get("field_of_view"))
            geo = training_geometry(load_card(model_paths[0]))
            row["auto_uses"] = ("windows" if geo and differs(engine.slice_shape, canonical_pixel_mm(
                engine, case.image.spacing), *geo) else "squeezed slice")
            log(f"cross-case {cid}: coarse {row['coarse']} final {row['final']} (squeezed slices: coarse "
                f"{row['coarse_squeezed']} final {row['final_squeezed']}) box {row['box_slice_mean']:.3f}")
            out.append(row)
    finally:
        backend.close()
    if not out:
        return None
    note = ("Cross-case, real data: TotalSegmentator 2.18.0's reference CTs (fetched by `medsegsuite sampledata "
            "fetch`); their liver labels are TotalSegmentator's output, i.e. *pseudo* labels. The native CT "
            "has 30 axial slices and the contrast CT 20, so these are tiny cases (a few slices with liver each): "
            "read them as a sanity check, not a benchmark. CoSAM runs through `cosam.segment` (the card's CT "
            "window -160..240 HU) in both field-of-view modes on the same models in the same backend: *windows* "
            "(`field_of_view` model: slices resampled to the model's 2 mm, the coarse head locates the liver on "
            "tiled 128-px windows, the loop runs on one 128-px window centred there, `cosam/windows.py`) and "
            "*squeezed* (`field_of_view` slice: the whole slice resized to the model's input, no physical "
            "resampling, the only mode before); *auto uses* says which one the default picks for the case; the "
            "box baseline gets one box per component "
            "of the *pseudo* label per slice (an oracle a user does not have). Dice = mean per-slice Dice over "
            "the slices holding *pseudo* liver; coarse/final: mean ± sd over the seed models.")
    return {"note": note, "cases": out}
