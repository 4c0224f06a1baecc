"""``medsegsuite scribble eval``: MaCo against Slicer's *Grow from seeds* on the same scribbles, and
against full supervision on the same slices, scored on the slices nobody scribbled.

Scribbles are **synthetic** (drawn from the reference labels by `generator.style_scribbles`) in the
styles of `generator.STYLES`. Cases:

* **LiTS-117** CT (128³, 2 mm assumed, *manual* labels): the liver (LiTS's liver = parenchyma + tumour);
  every style; same-case (each model is trained on this volume's scribbles and segments this volume's
  other slices).
* **TotalSegmentator's two reference CTs** (a native abdominal CT, 3 mm, and a contrast CT DICOM series
  from another scanner; labels are TotalSegmentator's *pseudo* labels): liver, spleen and kidneys
  (left + right as one class, as a 2D network sees them), annotator style on 4 slices; same-case.
  Present when `sampledata.real` has been fetched (``medsegsuite sampledata fetch``).

Methods: ``growcut`` (Grow from seeds, no training), ``maco`` (the package's MaCo recipe: 2.5D input,
image-aware 3D pseudo labels, MCM on scribble patches, slice smoothing, largest piece), ``maco-nomcm``
(the same without MCM: the MCM ablation, judged over several training seeds), ``maco-2d`` (the earlier
recipe: 2D input, 2D Euclidean CPL on the scribbled slices, attention MCM), ``full`` (the same network
trained on the dense labels of the scribbled slices). Metrics through `medsegsuite.metrics`
(`structure_metrics` on the unscribbled slices: Dice and NSD; `stats.paired_comparisons`: Wilcoxon +
Holm over cases where there are at least two).
"""
from __future__ import annotations

import time

import numpy as np

from ..engine.interface import run_job
from ..metrics.evaluation import structure_metrics
from ..provenance import write_json, write_markdown
from ..volume import SliceEngine, Volume
from .generator import STYLES, style_scribbles, style_slices
from .labels import UNLABELLED
from .params import QUICK_SETTINGS

PLANE = "axial"
NSD_MM = 2.0  # NSD tolerance: one voxel of the LiTS crop
TRAIN = dict(QUICK_SETTINGS)  # the recipe the panel's Quick mode runs (200 iterations under-trained small organs)
METHODS = ("growcut", "maco", "maco-cpl-ce", "maco-nomcm", "maco-2d", "full")
LABELS = {"growcut": "Grow from seeds (no training)", "maco": "MaCo (this package)",
          "maco-cpl-ce": "MaCo, pseudo labels by CE only", "maco-nomcm": "MaCo without MCM", "maco-2d": "MaCo, earlier 2D recipe", "full": "full supervision"}
# per method: scribble.train method + settings over the defaults (`params.DEFAULT_SETTINGS`)
RECIPES = {"maco": {"method": "maco"}, "maco-cpl-ce": {"method": "maco", "w_cpl_dice": 0.0},
           "maco-nomcm": {"method": "pce+cpl"},
           "maco-2d": {"method": "maco", "cpl": "euclidean2d", "context": 0, "mcm_mask": "attention",
                       "mask_ratio": 0.3, "smooth_slices": 0.0},
           "full": {"method": "full"}}
ABLATIONS = ("maco-nomcm", "maco-2d", "full")  # run on LiTS-117 annotator scribbles only (`_units`)
ANNOTATOR_ABLATIONS = ("maco-cpl-ce",)  # run on every case's annotator scribbles (small organs: TotalSegmentator)
SINGLE_PIECE = ("liver", "spleen")  # organs in one piece: the largest 3D component is kept
TS_ORGANS = {"liver": ("liver",), "spleen": ("spleen",), "kidneys": ("kidney_left", "kidney_right")}


def engine(image: Volume) -> SliceEngine:
    from .preprocess import FRAME

    return SliceEngine.for_volume(image, PLANE, FRAME)


def lits_case() -> dict:
    from ..sampledata import lits117_ct, lits117_labels

    ct = lits117_ct()
    dense = (lits117_labels().array > 0).astype(np.uint8)
    return {"id": "lits117", "name": "LiTS-117 CT", "image": ct, "dense": dense, "classes": ["liver"],
            "labels": "manual", "styles": list(STYLES), "count": 10, "max_size": 96,
            "note": "128³ crop, 2 mm assumed; liver = parenchyma + tumour (manual)"}


def ts_case(case_id: str) -> dict | None:
    """A TotalSegmentator reference CT with liver, spleen, kidneys (*pseudo* labels); None if not fetched."""
    from ..errors import MissingDataError
    from ..sampledata.real import real_case

    try:
        c = real_case(case_id)
    except (MissingDataError, FileNotFoundError, OSError):
        return None
    dense = np.zeros(c.image.shape, np.uint8)
    for v, parts in enumerate(TS_ORGANS.values(), start=1):
        for p in parts:
            if p in c.labels:
                dense[c.labels[p]] = v
    return {"id": case_id, "name": c.description.split(":")[0] + f" ({case_id})", "image": c.image, "dense": dense,
            "classes": list(TS_ORGANS), "labels": "pseudo", "styles": ["annotator"], "count": 4,
            "max_size": 128, "note": c.description + "; labels are TotalSegmentator's *pseudo* labels"}


def _train_labels(case, method, scribbles, slices):
    if method != "full":
        return scribbles
    eng = engine(case["image"])
    out = np.full(case["dense"].shape, UNLABELLED, dtype=np.uint8)
    return eng.assemble({k: eng.slice(case["dense"], k) for k in slices}, out=out)


def run_method(backend, case, method, scribbles, slices, seed=0, iterations=None) -> tuple[np.ndarray, float]:
    """(label prediction, seconds) of one method on one case's scribbles."""
    t0 = time.time()
    params = {"classes": case["classes"]}
    if method == "growcut":
        res = run_job(backend, "scribble.grow", case["image"], params, {"scribbles": scribbles})
    else:
        params.update(TRAIN, max_size=case["max_size"], seed=seed, plane=PLANE, **RECIPES[method])
        if iterations:
            params["iterations"] = int(iterations)
        model = run_job(backend, "scribble.train", case["image"], params,
                        {"scribbles": _train_labels(case, method, scribbles, slices)}).arrays["model"]
        keep = [c for c in case["classes"] if c in SINGLE_PIECE]  # not the kidneys: two organs, one class
        res = run_job(backend, "scribble.segment", case["image"], {"keep_largest": keep or None}, {"model": model})
    pred = np.zeros(case["dense"].shape, np.uint8)
    for c, name in enumerate(case["classes"], start=1):
        pred[res.masks[name]] = c
    return pred, time.time() - t0


def score(case, pred, slices) -> dict:
    """Per structure: Dice and NSD (and HD95, ASD) on the given slices, through `medsegsuite.metrics`."""
    eng = engine(case["image"])
    sp = tuple(case["image"].geometry.spacing)
    return {s: structure_metrics(pred == c, case["dense"] == c, sp, NSD_MM, slices=(eng, slices))
            for c, s in enumerate(case["classes"], start=1) if np.any(case["dense"] == c)}


def _cases(cases, styles, notes):
    """(case, style, scribbled slices, test slices, scribbles) for every case and style evaluated."""
    for cid in cases:
        case = lits_case() if cid == "lits117" else ts_case(cid)
        if case is None:
            notes.append(f"{cid}: not fetched here (`medsegsuite sampledata fetch`); skipped")
            continue
        n = engine(case["image"]).n_slices
        for style in [s for s in case["styles"] if styles is None or s in styles]:
            slices = style_slices(n, style, case["count"])
            test = [k for k in range(n) if k not in slices]
            sc = style_scribbles(case["dense"], len(case["classes"]) + 1, style, PLANE, seed=0,
                                 spacing=case["image"].geometry.spacing, direction=case["image"].direction,
                                 slices=slices)
            stroked = [c for c in range(1, len(case["classes"]) + 1) if np.any(sc == c)]
            if len(stroked) < len(case["classes"]):  # a structure absent from every scribbled slice
                dropped = [case["classes"][c - 1] for c in range(1, len(case["classes"]) + 1) if c not in stroked]
                remap = np.zeros(256, np.uint8)
                remap[UNLABELLED] = UNLABELLED
                for new, c in enumerate(stroked, start=1):
                    remap[c] = new
                case = {**case, "classes": [case["classes"][c - 1] for c in stroked],
                        "dense": remap[np.where(np.isin(case["dense"], [0] + stroked), case["dense"], 0)]}
                sc = remap[sc]
                notes.append(f"{case['id']}/{style}: no stroke for {dropped} on the scribbled slices; not scored")
            notes.append(f"{case['name']}: {case['note']}; {style}: scribbled slices {slices} ({len(test)} test slices)")
            yield case, style, slices, test, sc


def _units(cases, styles, methods, mcm_seeds, notes):
    for case, style, slices, test, sc in _cases(cases, styles, notes):
        for m in methods:
            # the ablations and the upper bound where the targets are stated (LiTS-117, annotator style); every
            # case and style compares MaCo with Grow from seeds (a 2-core budget)
            if m in ABLATIONS and (case["id"] != "lits117" or style != "annotator"):
                continue
            if m in ANNOTATOR_ABLATIONS and style != "annotator":
                continue
            several = m in ("maco", "maco-nomcm") and case["id"] == "lits117" and style == "annotator"
            for seed in range(mcm_seeds if several else 1):
                yield case, style, slices, test, sc, m, seed


def pending_units(cases, styles, methods, mcm_seeds, notes, done_keys=()) -> list:
    """The evaluation's (case, style, slices, test, scribbles, method, seed) runs not in ``done_keys``
    (`unit_key`s), the most telling first."""
    done_keys = set(done_keys)
    return sorted((u for u in _units(cases, styles, methods, mcm_seeds, notes)
                   if unit_key(u[0]["id"], u[1], u[5], u[6]) not in done_keys), key=_priority)


def _priority(unit):
    case, style, _, _, _, m, seed = unit
    order = ["growcut", "maco", "full", "maco-cpl-ce", "maco-nomcm", "maco-2d"]
    return (seed, case["id"] != "lits117" or style != "annotator", style != "annotator", order.index(m))


def _run_unit(unit, backend=None, iterations=None):
    """One (case, style, method, seed) run -> (rows, run record); in a worker process it makes its own
    in-process backend (training on a thread, one torch thread: the evaluation runs several at once)."""
    case, style, slices, test, sc, m, seed = unit
    own = backend is None
    if own:
        import os

        os.environ["MEDSEGSUITE_TRAINING"] = "thread"
        import torch

        torch.set_num_threads(1)
        from ..engine import LocalBackend

        backend = LocalBackend("cpu")
    try:
        pred, sec = run_method(backend, case, m, sc, slices, seed, iterations)
    finally:
        if own:
            backend.close()
    rows = [{"method": m, "centre": "all", "case": f"{case['id']}/{style}", "structure": s, "seed": seed, **v}
            for s, v in score(case, pred, test).items()]
    return rows, {"case": case["id"], "style": style, "method": m, "seed": seed, "seconds": round(sec, 1),
                  "iterations": int(iterations or TRAIN["iterations"])}


def unit_key(case_id: str, style: str, method: str, seed: int) -> tuple:
    return (case_id, style, method, int(seed))


def earlier_runs(out, iterations) -> tuple[list, list]:
    """(rows, runs) of an earlier results file at ``out`` (its .json) run with the same iterations; empty
    if there is none. Lets a long evaluation on a small machine be completed over several invocations
    (``--resume``): a run already scored is not run again."""
    import json
    from pathlib import Path

    p = Path(str(out).rsplit(".", 1)[0] + ".json")
    if not p.exists():
        return [], []
    d = json.loads(p.read_text())
    it = int(iterations or TRAIN["iterations"])
    runs = [r for r in d.get("runs", []) if int(r.get("iterations", TRAIN["iterations"])) == it]
    keep = {unit_key(r["case"], r["style"], r["method"], r["seed"]) for r in runs}
    rows = [r for r in d.get("rows", []) if unit_key(*r["case"].split("/"), r["method"], r["seed"]) in keep]
    return rows, runs


def run_evaluation(out, backend, cases=("lits117", "ts-ct-native", "ts-ct-contrast"), styles=None, methods=None,
                   iterations=None, mcm_seeds=3, workers=1, resume=False, log=print) -> dict:
    """Every (case, style, method, seed) run, scored, written to ``out`` (+ .json). ``workers`` > 1 runs
    that many at once in separate processes (each with one torch thread). ``resume``: keep the runs of
    the earlier results file at ``out`` (same iterations) and run only the missing ones."""
    methods = list(methods or METHODS)
    rows, runs, notes, t_start = [], [], [], time.time()
    if resume:
        rows, runs = earlier_runs(out, iterations)
        if runs:
            notes.append(f"{len(runs)} run(s) kept from an earlier invocation of this evaluation (`--resume`; same "
                         "iterations and recipe); their times are those of that invocation")
    done_keys = {unit_key(r["case"], r["style"], r["method"], r["seed"]) for r in runs}
    # most telling runs first (the file is rewritten after each run, so a cut-short run still reports them)
    units = pending_units(cases, styles, methods, mcm_seeds, notes, done_keys)
    n_total = len(runs) + len(units)

    def write():
        _write(out, {"rows": rows, "runs": runs, "notes": notes, "total_seconds": round(time.time() - t_start),
                     "iterations": int(iterations or TRAIN["iterations"]),
                     "pending": n_total - len(runs)}, methods, backend)

    def done(res):
        r, run = res
        rows.extend(r)
        runs.append(run)
        log(f"{run['case']} {run['style']} {run['method']} seed {run['seed']}: " +
            ", ".join(f"{x['structure']} {x['dice']:.3f}" for x in r) + f" ({run['seconds']:.0f} s)")
        write()

    if workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            for res in pool.map(_run_unit, units, [None] * len(units), [iterations] * len(units)):
                done(res)
    else:
        for u in units:
            done(_run_unit(u, backend, iterations))
    if not units and runs:  # nothing left to run: the file is rewritten from the kept runs (e.g. a new layout)
        write()
    return {"rows": rows, "runs": runs, "notes": notes}


def _mean(rows, **k):
    v = [r["dice"] for r in rows if all(r[a] == b for a, b in k.items())]
    return float(np.mean(v)) if v else float("nan")


def _write(out, report, methods, backend):
    from ..metrics.stats import paired_comparisons

    rows = report["rows"]
    lines = ["# Scribble segmentation: MaCo vs Slicer's Grow from seeds", "",
             "Written by `medsegsuite scribble eval` (medsegsuite.scribble.evaluation); scores through "
             "`medsegsuite.metrics` on the slices nobody scribbled. Scribbles are **synthetic** (drawn from the "
             "reference labels, `generator.style_scribbles`). Every number is **same-case**: the model is "
             f"trained on one volume's scribbles and segments that volume's other slices. NSD at {NSD_MM:g} mm.", ""]
    cases = list(dict.fromkeys(r["case"] for r in rows))
    used = [m for m in methods if any(r["method"] == m for r in rows)]
    lines += ["| case / style | structure | " + " | ".join(LABELS[m] for m in used) + " |",
              "|" + "---|" * (len(used) + 2)]
    for c in cases:
        for s in dict.fromkeys(r["structure"] for r in rows if r["case"] == c):
            cells = []
            for m in used:
                rs = [r for r in rows if r["case"] == c and r["structure"] == s and r["method"] == m]
                if not rs:
                    cells.append("–")
                    continue
                d, nsd = np.mean([r["dice"] for r in rs]), np.mean([r["nsd"] for r in rs])
                sd = f" ± {np.std([r['dice'] for r in rs]):.3f}" if len(rs) > 1 else ""
                cells.append(f"{d:.3f}{sd} / {nsd:.3f}")
            lines.append(f"| {c} | {s} | " + " | ".join(cells) + " |")
    lines += ["", "Cells: Dice / NSD (mean ± s.d. over training seeds where several were run).", ""]
    key = "lits117/annotator"
    if any(r["case"] == key for r in rows):
        g, mc, full = (_mean(rows, case=key, structure="liver", method=m) for m in ("growcut", "maco", "full"))
        target = max(g + 0.02, 0.92)
        lines += ["## Targets (LiTS-117, annotator-style scribbles on 10/128 slices, liver)", "",
                  f"* MaCo {mc:.4f} vs Grow from seeds {g:.4f}: {mc - g:+.4f}; target ≥ max(Grow from seeds + 0.02, "
                  f"0.92) = {target:.4f}: **{'met' if mc >= target else f'not met (short by {target - mc:.4f})'}**; "
                  f"≥ Grow from seeds + 0.02 alone: {'met' if mc >= g + 0.02 else f'not met (short by {g + 0.02 - mc:.4f})'}.",
                  f"* MaCo / full supervision on the same slices: {mc:.3f} / {full:.3f} = **{100 * mc / full:.1f} %** "
                  f"(target ≥ 95 %: {'met' if mc >= 0.95 * full else 'not met'})." if np.isfinite(full) else "", ""]
        nm = [r["dice"] for r in rows if r["case"] == key and r["method"] == "maco-nomcm"]
        wm = [r["dice"] for r in rows if r["case"] == key and r["method"] == "maco"]
        if nm and wm:
            lines += [f"* MCM (masking ~half of the patches that carry scribbles, the method's rule), over {len(wm)} "
                      f"training seeds: with {np.mean(wm):.3f} ± {np.std(wm):.3f}, without {np.mean(nm):.3f} ± "
                      f"{np.std(nm):.3f} (difference {np.mean(wm) - np.mean(nm):+.3f}).", ""]
    comps = paired_comparisons([{**r, "case": r["case"].split("/")[0]} for r in rows
                                if r["case"].endswith("/annotator") and r["seed"] == 0], metrics=("dice", "nsd"))
    n_cases = len({r["case"].split("/")[0] for r in rows if r["case"].endswith("/annotator")})
    lines += ["## Paired tests across cases (annotator style, seed 0)", ""]
    if n_cases >= 2 and comps:
        lines += ["Wilcoxon signed-rank over cases, Holm-corrected per (metric, structure); with this few cases no "
                  "p-value can be small, so read the medians.", "",
                  "| metric | structure | a | b | cases | median a | median b | p (Holm) |", "|---|---|---|---|---|---|---|---|"]
        for c in comps:
            if c["n_pairs"] >= 2:
                lines.append(f"| {c['metric']} | {c['structure']} | {c['method_a']} | {c['method_b']} | {c['n_pairs']} | "
                             f"{c['median_a']:.3f} | {c['median_b']:.3f} | {c['p_holm']:.3g} |")
    else:
        lines.append("Fewer than two cases with this structure: no test (one case gives no paired sample).")
    if report.get("pending"):
        lines += [f"**Partial**: {report['pending']} run(s) of this evaluation had not finished when this was written.", ""]
    lines += ["", "## Protocol", ""] + [f"* {n}" for n in report["notes"]]
    lines += [f"* Training (every trained method): {report['iterations']} iterations, batch {TRAIN['batch']}, slices "
              "shrunk to `max_size` (96 px LiTS, 128 px TotalSegmentator), the package defaults otherwise "
              "(`scribble/params.py`); recipes per method: " + "; ".join(f"{m}: {RECIPES[m]}" for m in RECIPES) + ".",
              "* Grow from seeds: slicer-core's `vtkImageGrowCutSegment` with the Segment Editor effect's defaults "
              "(seed locality 0; seeds' box grown by 10 %), `scribble/growcut.py`.",
              "* Every trained method keeps the largest 3D piece of the liver and the spleen and fills its holes (not the "
              "kidneys: two organs in one class); Grow from seeds "
              "is shown as it comes.",
              "* The earlier Colin27 T1 + AAL rows (MaCo vs its ablations, no Grow from seeds) were removed: they were "
              "stale (written before the LPS slice frame) and are not re-run in this budget; they remain in git history.",
              "", "## Run", "",
              f"* device {backend.handshake().get('device') if backend else 'cpu'}; the machine was shared with other jobs, so times are "
              f"indicative only; this invocation {report['total_seconds'] / 60:.1f} min",
              "* per run (seconds): " + ", ".join(f"{r['case']}/{r['style']}/{r['method']}#{r['seed']} {r['seconds']:.0f}"
                                                   for r in report["runs"]), ""]
    write_markdown(out, lines)
    write_json(str(out).rsplit(".", 1)[0] + ".json", {"rows": rows, "runs": report["runs"]})
