"""The main demo: LiTS-117 segmented by LiteMedSAM with oracle boxes (the baseline every method is
compared with) and by each further method registered in DEMO_STEPS, with a report, an overlay
montage and a Slicer scene.

Each step writes ``<out>/<method>.seg.nrrd`` and adds ``report["methods"][<method>]``.
"""
from __future__ import annotations

import importlib
import time
from pathlib import Path

import numpy as np

from .engine.interface import run_job
from .io import Segmentation, write_segmentation
from .metrics import dice
from .provenance import write_json

CT_WINDOW = (-160.0, 240.0)  # the abdominal window MedSAM uses for CT
PLANE = "axial"  # every method slices the CT in this plane (through the slice engine)
AXIS = 2  # the array axis of LiTS-117 that PLANE cuts (LiTS-117 is LPS-canonical); for per-slice scoring
STRUCTURES = ("liver", "tumour")

# method name -> "module:function(backend, ct, reference, settings, log) -> (Segmentation, report dict)"
DEMO_STEPS = {
    "cosam": "medsegsuite.cosam.demo:run_step",
}


# Writes DIR/scene.mrb. It lives with the MRML bridge (MedSegSuiteLib, which imports Slicer's MRML
# classes), so the backend names it here instead of importing it.
SCENE_WRITER = "MedSegSuiteLib.scene:save_demo_scene"


def _optional(target: str):
    mod, _, fn = target.partition(":")
    try:
        return getattr(importlib.import_module(mod), fn)
    except ModuleNotFoundError as e:
        if e.name and mod.startswith(e.name):
            return None
        raise


def slice_spec(slices: str) -> str:
    return {"default": "every:8", "all": "all"}.get(slices, slices)


def _load_steps(methods):
    steps = {}
    for name in methods:
        if name == "oracle_box":
            continue
        target = DEMO_STEPS.get(name)
        if target is None:
            raise ValueError(f"unknown demo method '{name}'; known: oracle_box, {', '.join(DEMO_STEPS)}")
        step = _optional(target)
        if step is not None:  # a method not built yet is skipped
            steps[name] = step
    return steps


def run_demo(out, slices: str = "default", backend=None, methods=None, log=print) -> dict:
    from .engine import LocalBackend
    from .sampledata import LITS_SPACING_MM, lits117

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    own = backend is None
    backend = backend or LocalBackend()
    methods = list(methods) if methods else ["oracle_box", *DEMO_STEPS]
    steps = _load_steps(methods)
    try:
        ct, ref = lits117()
        ref_masks = {s: ref.masks[s] for s in STRUCTURES}
        spec = slice_spec(slices)
        settings = {"case": "LiTS-117", "plane": PLANE, "slices": spec, "ct_window": list(CT_WINDOW),
                    "assumed_spacing_mm": list(LITS_SPACING_MM), "backbone": "litemedsam",
                    "device": backend.handshake()["device"]}
        report = {"methods": {}, "settings": settings}
        results: dict[str, Segmentation] = {}

        log(f"[demo] oracle-box LiteMedSAM on LiTS-117, slices={spec}")
        from .progress import ProgressPrinter

        t0 = time.time()
        r = run_job(backend, "sam.oracle_box", ct, {"plane": PLANE, "slices": spec, "window": list(CT_WINDOW)},
                    ref_masks, on_event=ProgressPrinter("oracle_box"))
        secs = time.time() - t0
        indices = r.info["slices"]
        settings["evaluated_slices"] = indices
        seg = Segmentation(ct.geometry, {s: r.masks[s] for s in STRUCTURES})
        write_segmentation(seg, out / "oracle_box.seg.nrrd")
        results["oracle_box"] = seg
        report["methods"]["oracle_box"] = {
            "dice": {s: round(dice(r.masks[s], ref_masks[s], slices=(AXIS, indices)), 4) for s in STRUCTURES},
            "seconds": round(secs, 2), "seconds_per_slice": round(secs / len(indices), 3)}
        log(f"[demo] oracle_box Dice {report['methods']['oracle_box']['dice']} in {secs:.1f} s")

        for name, step in steps.items():
            log(f"[demo] {name}")
            t0 = time.time()
            seg, rep = step(backend, ct, ref, dict(settings), log)
            rep.setdefault("seconds", round(time.time() - t0, 2))
            write_segmentation(seg, out / f"{name}.seg.nrrd")
            results[name] = seg
            report["methods"][name] = rep
            log(f"[demo] {name} Dice {rep.get('dice')} in {rep['seconds']:.1f} s")

        write_json(out / "report.json", report, indent=2)
        write_overlay(out / "overlay.png", ct, ref, results, indices)
        writer = _optional(SCENE_WRITER)
        if writer is not None:
            writer(out / "scene.mrb", ct, results)
        log(f"[demo] wrote {', '.join(sorted(p.name for p in out.iterdir()))} in {out}")
        return report
    finally:
        if own:
            backend.close()


def write_overlay(path, ct, ref: Segmentation, results: dict, indices, n: int = 6) -> None:
    """A montage: n evaluated axial slices (rows: reference, then each method) with contours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = [indices[int(round(i))] for i in np.linspace(0, len(indices) - 1, min(n, len(indices)))]
    rows = [("reference", ref)] + list(results.items())
    fig, axes = plt.subplots(len(rows), len(picks), figsize=(2.2 * len(picks), 2.3 * len(rows)), squeeze=False)
    colors = {"liver": "tab:orange", "tumour": "lime"}
    for r, (label, seg) in enumerate(rows):
        for c, k in enumerate(picks):
            ax = axes[r, c]
            ax.imshow(np.clip(ct.array[:, :, k].T, *CT_WINDOW), cmap="gray", origin="upper")  # radiological: anterior up, patient right on the left
            for s in STRUCTURES:
                if s not in seg.masks:  # a method may segment only some structures
                    continue
                m = seg.masks[s][:, :, k].T
                if m.any():
                    ax.contour(m, [0.5], colors=colors[s], linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"slice {k}", fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.suptitle("LiTS-117 axial: liver (orange), tumour (green)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
