"""``medsegsuite scribble eval``: MaCo vs its ablations vs full supervision on real data, with
synthetic scribbles generated from the reference labels (stated as synthetic in the table).

Protocol (one volume per dataset; 2D networks on axial slices, taken through the slice engine; the
slice split is `volume.split_slices`: its every-K-th slices are the annotated ones, alternately
validation and training, and the test slices are all the others):

* **LiTS-117** CT, 128³ at an assumed 2 mm, slices shrunk to 96² (``max_size`` 96). Classes:
  ``liver`` (parenchyma, label 1) and ``tumour`` (label 2); the liver Dice is scored as LiTS does
  (prediction liver ∪ tumour vs label 1 ∪ 2). ``interleaved:8``: training slices every 16th from 8
  (8 slices); validation slices (used only to pick tau): every 16th from 0; test: all other slices.
* **Colin27 T1 + AAL**: putamen, thalamus and caudate, each left + right AAL regions together
  (deep grey nuclei with visible T1 contrast; a 2D network cannot tell a left from a right nucleus),
  cropped to their bounding box + 12 mm at the native 1 mm. ``interleaved:4``: training slices
  every 8th from 4 within the crop; validation: every 8th from 0; test: the rest.
* Scribbles (synthetic): `generator.make_scribbles` with its defaults (fraction 0.8, 1-voxel strokes,
  background ring at 10 mm plus 10 far strokes). Full supervision uses the dense labels of the same
  training slices (CE + soft Dice). Every method keeps the largest 3D connected component of the liver (one organ);
  tumour and the bilateral nuclei are left as predicted.
"""
from __future__ import annotations

import time

import numpy as np

from ..engine.interface import run_job
from ..metrics import dice
from ..provenance import write_markdown
from ..volume import SliceEngine, Volume, split_slices
from .generator import make_scribbles, scribble_stats
from .labels import UNLABELLED

METHODS = ["maco", "pce", "pce+cpl", "pce+mcm", "full"]
LABELS = {"maco": "MaCo (pCE+CPL+MCM)", "pce": "pCE only", "pce+cpl": "pCE+CPL", "pce+mcm": "pCE+MCM",
          "full": "full supervision"}
# Bilateral deep grey nuclei (left + right AAL regions as one class each): a 2D network sees no
# position, so a left and a right nucleus of the same look cannot be told apart (measured: with
# separate L/R classes even full supervision put Thalamus_L on the right side, Dice 0.00).
COLIN_STRUCTURES = {"putamen": ("Putamen_L", "Putamen_R"), "thalamus": ("Thalamus_L", "Thalamus_R"),
                    "caudate": ("Caudate_L", "Caudate_R")}
DEFAULT_ITERATIONS = 200
PLANE = "axial"


def engine(image: Volume) -> SliceEngine:
    """The slices every model of the evaluation sees (the scribble models' LPS frame)."""
    from .preprocess import FRAME

    return SliceEngine.for_volume(image, PLANE, FRAME)


def slice_split(n: int, k: int) -> tuple[list[int], list[int], list[int]]:
    """(train, val, test): `volume.split_slices('interleaved:K')`'s held-out slices are the annotated
    ones, alternately validation (from 0) and training; every other slice is a test slice."""
    test, picked = split_slices(f"interleaved:{k}", n)
    return picked[1::2], picked[0::2], test


def _lits():
    from ..sampledata import lits117_ct, lits117_labels

    ct = lits117_ct()
    lab = lits117_labels().array.astype(np.uint8)  # 1 liver parenchyma, 2 tumour
    train, val, test = slice_split(engine(ct).n_slices, 8)
    return {"name": "LiTS-117 CT", "image": ct, "dense": lab, "classes": ["liver", "tumour"],
            "train": train, "val": val, "test": test,
            "scores": {"liver": lambda p: p > 0, "tumour": lambda p: p == 2},
            "refs": {"liver": lab > 0, "tumour": lab == 2}, "keep_largest": ["liver"], "max_size": 96,
            "note": "128³ crop, 2 mm assumed, slices shrunk to 96²"}


def _colin():
    from ..sampledata import aal_labels, aal_names, colin27_t1

    t1 = colin27_t1()
    aal = aal_labels().array
    names = {v: k for k, v in aal_names().items()}
    dense = np.zeros(aal.shape, dtype=np.uint8)
    for c, parts in enumerate(COLIN_STRUCTURES.values(), start=1):
        for part in parts:
            dense[aal == names[part]] = c
    nz = np.argwhere(dense > 0)
    lo = np.maximum(nz.min(0) - 12, 0)
    hi = np.minimum(nz.max(0) + 13, dense.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    origin = t1.geometry.ijk_to_ras_points(lo)[0]
    img = Volume(t1.array[box].astype(np.float32), t1.geometry.spacing, origin, t1.geometry.direction, name="Colin27 crop")
    d = dense[box]
    train, val, test = slice_split(engine(img).n_slices, 4)
    return {"name": "Colin27 T1 + AAL", "image": img, "dense": d, "classes": list(COLIN_STRUCTURES),
            "train": train, "val": val, "test": test,
            "scores": {s: (lambda p, c=c: p == c) for c, s in enumerate(COLIN_STRUCTURES, start=1)},
            "refs": {s: d == c for c, s in enumerate(COLIN_STRUCTURES, start=1)},
            "keep_largest": [], "max_size": 160,
            "note": f"crop {d.shape[0]}×{d.shape[1]}×{d.shape[2]} around the nuclei (+12 mm), native 1 mm; "
                    "classes " + ", ".join(f"{k} = {' + '.join(v)}" for k, v in COLIN_STRUCTURES.items())}


def _labels_for(ds, method, seed):
    n_classes = len(ds["classes"]) + 1
    if method == "full":
        eng = engine(ds["image"])
        out = np.full(ds["dense"].shape, UNLABELLED, dtype=np.uint8)
        return eng.assemble({k: eng.slice(ds["dense"], k) for k in ds["train"]}, out=out)
    return make_scribbles(ds["dense"], n_classes, ds["train"], PLANE, seed=seed,
                          spacing=ds["image"].geometry.spacing, direction=ds["image"].direction)


def _run(backend, ds, method, settings, seed):
    labels = _labels_for(ds, method, seed)
    params = {"classes": ds["classes"], "method": method, "plane": PLANE, "max_size": ds["max_size"], "seed": seed,
              **settings}
    t0 = time.time()
    res = run_job(backend, "scribble.train", ds["image"], params, {"scribbles": labels})
    t1 = time.time()
    seg = run_job(backend, "scribble.segment", ds["image"], {"keep_largest": ds["keep_largest"] or None},
                  {"model": res.arrays["model"]})
    pred = np.zeros(ds["dense"].shape, dtype=np.uint8)
    for c, name in enumerate(ds["classes"], start=1):
        pred[seg.masks[name]] = c
    return pred, t1 - t0, time.time() - t1


def _score(ds, pred, slices):
    eng = engine(ds["image"])
    return {s: dice(eng.stack(f(pred), slices), eng.stack(ds["refs"][s], slices)) for s, f in ds["scores"].items()}


def run_evaluation(out, backend, datasets=("lits", "colin"), methods=None, iterations=None, seeds=1,
                   tau_sweep=None, log=print) -> dict:
    methods = list(methods or METHODS)
    iterations = int(iterations or DEFAULT_ITERATIONS)
    settings = {"iterations": iterations, "batch": 4}
    loaders = {"lits": _lits, "colin": _colin}
    t_start = time.time()
    results, timings, coverage, sweep = {}, {}, {}, []
    for key in datasets:
        ds = loaders[key]()
        test = ds["test"]
        sc = make_scribbles(ds["dense"], len(ds["classes"]) + 1, ds["train"], PLANE, seed=0,
                            spacing=ds["image"].geometry.spacing, direction=ds["image"].direction)
        cov = scribble_stats(sc, ds["dense"], len(ds["classes"]) + 1, PLANE, ds["image"].direction)
        coverage[key] = {(["background"] + ds["classes"])[c]: v for c, v in cov.items()}
        if key == "lits" and tau_sweep is not None:
            for tau in (tau_sweep or [2.0, 4.0, 8.0, 16.0, 32.0]):
                pred, _, _ = _run(backend, ds, "pce+cpl", {**settings, "tau": tau}, 0)
                v = _score(ds, pred, ds["val"])
                sweep.append((tau, v))
                log(f"tau {tau:g} mm: validation Dice " + ", ".join(f"{k} {x:.3f}" for k, x in v.items()))
        for m in methods:
            runs = []
            for seed in range(seeds):
                pred, tt, ts = _run(backend, ds, m, settings, seed)
                runs.append(_score(ds, pred, test))
                timings.setdefault((key, m), []).append(tt + ts)
                log(f"{ds['name']} {m} seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in runs[-1].items())
                    + f" (train {tt:.0f} s, segment {ts:.1f} s)")
            results[(key, m)] = {s: float(np.mean([r[s] for r in runs])) for s in runs[0]}
        results[key] = ds
    report = _write(out, results, timings, coverage, sweep, methods, datasets, iterations, seeds,
                    time.time() - t_start, backend)
    return report


def _write(out, results, timings, coverage, sweep, methods, datasets, iterations, seeds, total, backend):
    lines = ["# Scribble segmentation (MaCo): evaluation", "",
             "Written by `medsegsuite scribble eval` (medsegsuite.scribble.evaluation). Scribbles are **synthetic**:",
             "generated from the reference labels on the training slices (`medsegsuite scribble make-scribbles`",
             "defaults). Dice on test slices that carry neither training scribbles nor validation use.", ""]
    hdr = "| dataset | structure | " + " | ".join(LABELS[m] for m in methods) + " |"
    lines += [hdr, "|" + "---|" * (len(methods) + 2)]
    means = {m: [] for m in methods}
    report = {"dice": {}, "coverage": coverage}
    for key in datasets:
        ds = results[key]
        for s in ds["scores"]:
            row = []
            for m in methods:
                v = results[(key, m)][s]
                row.append(f"{v:.3f}")
                means[m].append(v)
                report["dice"].setdefault(m, {})[f"{key}/{s}"] = v
            lines.append(f"| {ds['name']} | {s} | " + " | ".join(row) + " |")
    lines.append("| **mean** | all structures | " + " | ".join(f"**{np.mean(means[m]):.3f}**" for m in methods) + " |")
    lines.append("")
    if "lits" in datasets and "maco" in methods and "full" in methods:
        r = results[("lits", "maco")]["liver"] / max(1e-9, results[("lits", "full")]["liver"])
        report["liver_ratio"] = r
        lines.append(f"MaCo reaches **{100 * r:.0f}%** of full supervision's liver Dice (target ≥ 90%).")
    if "maco" in methods and "pce" in methods:
        d = np.mean(means["maco"]) - np.mean(means["pce"])
        report["maco_minus_pce"] = float(d)
        lines.append(f"MaCo − pCE-only, mean Dice over all structures: **{d:+.3f}**.")
    lines += ["", "## Protocol", ""]
    for key in datasets:
        ds = results[key]
        lines.append(f"* {ds['name']}: {ds['note']}; {len(ds['train'])} training slices {ds['train']}, "
                     f"validation slices {ds['val']}; scribbled fraction of each class on the training "
                     "slices: " + ", ".join(f"{k} {v:.3f}" for k, v in coverage[key].items()) + ".")
    lines += [f"* Training: {iterations} iterations, batch 4, default settings otherwise "
              "(docs/scribble.md); the same seeds for every method; "
              f"{seeds} seed(s) per run (mean shown).",
              "* Post-processing for every method: largest 3D connected component of the liver; tumour and "
              "the bilateral nuclei untouched.",
              "* Full supervision: cross-entropy + soft Dice on the dense labels of the same training slices "
              "(plain CE alone collapsed to background for one Colin27 seed).", ""]
    if sweep:
        lines += ["## Choice of tau (CPL decay length)", "",
                  "pCE+CPL on LiTS-117, Dice on the *validation* slices:", "",
                  "| tau (mm) | " + " | ".join(sweep[0][1]) + " |", "|---|" + "---|" * len(sweep[0][1])]
        for tau, v in sweep:
            lines.append(f"| {tau:g} | " + " | ".join(f"{x:.3f}" for x in v.values()) + " |")
        lines.append("")
    lines += ["## Run", "", f"* device {backend.handshake().get('device')} (machine, software and command: the "
              "provenance block at the top)",
              f"* total wall time {total / 60:.1f} min; per run (train + segment): " + ", ".join(
                  f"{k[0]}/{k[1]} {np.mean(v):.0f} s" for k, v in timings.items()), ""]
    write_markdown(out, lines)
    return report
