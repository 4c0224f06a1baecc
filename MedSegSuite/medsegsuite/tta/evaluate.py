"""``medsegsuite tta eval``: every TTA method on the same cases with the same resets, scored per case through
`medsegsuite.metrics` (Dice, NSD; Wilcoxon + Holm against no adaptation), written to ``docs/results/tta.md``.

Protocol (like-for-like):

* A *case* is one volume: a source image under one physical shift (`shifts.py`: SIMULATED acquisitions on a
  real image, same-case anatomy), or a real MR of another subject and scanner (cross-case), optionally under
  a physical shift. Same-case cases use only the source model's held-out axial slices (index % 4 == 2, never
  trained on) as the volume; real cases use every axial slice.
* Every method starts from the source model on every case (memory, optimiser, BN warm-up and prompts reset
  per case) and adapts per volume: batches of the volume's slices, its default options (`options.py`), the
  safety gate on (`gate.py`). The table also gives each method's adapted Dice before the gate.
* DyNA: the night self-trains (label-free) on the case's *other* slices (same-case: the training slices,
  never the scored ones), then the next day segments the scored slices with the night's version + VPTTA
  prompts; the evaluation accepts every night's version (the product never does). Its gate compares with the
  night's version (whose BN statistics already fit the case, so it mostly keeps that version's prediction).
  Not run on real cases.
* Scores: `metrics.structure_metrics` on the scored slices (Dice; NSD at one in-plane voxel); per-case
  rows; `metrics.stats.paired_comparisons` (Wilcoxon signed-rank, Holm) of each method against none.
* Real MRs: brain masks are deepbet's *pseudo* masks (`pseudo.py`), not manual labels. Each is scored twice:
  under brain-source (Colin27 alone) and under the leave-one-case-out brain model that never saw it
  (`loco.py`: Colin27 + the other real T1 MRs with *pseudo* masks; trained seeded on first use, cached).
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from .loco import REAL_T1 as REAL_MR  # noqa: I001  real T1 MRs (pyradiomics), other subjects and scanners

NAMES = {"none": "none", "tent": "TENT", "vptta": "VPTTA", "grata": "GraTa", "dyna": "DyNA"}
REAL_MR_SHIFTS = ("bias-40%", "mprage-3T", "noise-7%")  # physical shifts also applied to the real MRs


def eval_slices(model_id: str, ref: np.ndarray, n: int | None = None) -> list[int]:
    """The source model's held-out slices (`train.held_out`); with ``n``, up to n of those holding the
    structure, evenly spread (``ref``: the reference mask as the model's slices)."""
    from .train import held_out

    cand = held_out(ref.shape[0])
    if n is None:
        return cand
    cand = [i for i in cand if ref[i].any()]
    if len(cand) <= n:
        return cand
    return [cand[int(round(k))] for k in np.linspace(0, len(cand) - 1, n)]


def night_slices(n: int) -> list[int]:
    """The slices DyNA's night trains on in the evaluation (label-free): every slice outside the
    hold-out (`train.held_out`), so its next-day Dice is scored on slices the night never saw."""
    from .train import held_out

    held = set(held_out(n))
    return [i for i in range(n) if i not in held]


def score(pred_slices: np.ndarray, ref_volume: np.ndarray, eng, idx, spacing) -> dict:
    """Dice and NSD (tolerance: one in-plane voxel) of predicted slices through `metrics.structure_metrics`."""
    from ..metrics import structure_metrics

    pred = eng.assemble(dict(zip(idx, pred_slices)))
    inplane = [float(s) for d, s in enumerate(spacing) if d != eng.input_axis]
    m = structure_metrics(pred, ref_volume, spacing, tolerance_mm=max(inplane), slices=(eng, idx))
    return {"dice": m["dice"], "nsd": m["nsd"], "hd95": m["hd95"], "asd": m["asd"]}


def run_case(src, vol, ref_mask, idx, methods, kind: str, case: str, night=None, log=print) -> list[dict]:
    """Every method on one case (fresh adapters); long-form rows with Dice/NSD, gate and timings."""
    from .network import slice_engine, slices_from_volume
    from .pipeline import run_volume

    eng = slice_engine(vol, src.card)
    x, idx, shape2d = slices_from_volume(vol, src.card, idx)
    rows = []
    for m in methods:
        if m == "dyna" and night is None:
            continue
        model = src
        if m == "dyna":
            model = night(vol, x)
        t0 = time.perf_counter()
        res = run_volume(model, None, m, None, indices=idx, x=x, shape2d=shape2d)
        sec = time.perf_counter() - t0
        row = {"method": m, "centre": kind, "case": case, "structure": src.structure,
               **score(res["after"] > 0, ref_mask, eng, idx, vol.spacing),
               "seconds": sec, "seconds_plain": res["seconds_plain"], "feature_shift": res["feature_shift"]}
        gate = res.get("gate")
        if gate is not None:
            row["gate_accepted"] = bool(gate.accepted)
            row["gate_reason"] = gate.reason
            row["gate_signals"] = gate.signals
            row["dice_ungated"] = score(res["adapted"] > 0, ref_mask, eng, idx, vol.spacing)["dice"]
            row["seconds"] = res["seconds_plain"] + res["seconds_adapt"]  # plain pass (gate) + adaptation
            row["seconds_adapt"] = res["seconds_adapt"]
        rows.append(row)
    log(f"{src.model_id} {case}: " + ", ".join(f"{NAMES[r['method']]} {r['dice']:.3f}" for r in rows))
    return rows


def _dyna_night(src, vol, night_idx, iterations: int, tmp: str):
    """A function (volume, x) -> the night's version trained on ``night_idx`` of the volume."""
    from .dyna import run_night
    from .network import load_source_model, slices_from_volume

    def night(v, _x):
        out = Path(tmp) / f"{src.model_id}-{abs(hash(v.name)) % 10 ** 8}.pt"
        x_night = slices_from_volume(v, src.card, night_idx)[0]
        run_night(src.model_id, [], out, {"iterations": iterations, "batch": 4}, source=src, slices=x_night)
        return load_source_model(str(out))
    return night


def evaluate_same_case(model_id: str, methods, night_iterations: int, shifts=None, log=print) -> list[dict]:
    """The source image under every physical shift of its modality (held-out slices; same-case anatomy)."""
    from .network import load_source_model, slice_engine
    from .shifts import apply_shift, shifts_for
    from .train import source_data

    src = load_source_model(model_id)
    vol, mask = source_data(model_id)
    eng = slice_engine(vol, src.card)
    idx = eval_slices(model_id, eng.stack(mask, range(eng.n_slices)))
    tmp = tempfile.mkdtemp(prefix="tta-eval-")
    night = _dyna_night(src, vol, night_slices(eng.n_slices), night_iterations, tmp)
    rows = []
    for name, s in shifts_for(src.card.get("modality", "ct")).items():
        if shifts and name not in shifts:
            continue
        v = apply_shift(vol, s, mask)
        rows += run_case(src, v, mask, idx, methods, f"{model_id}, same-case, " + (
            "source" if name == "source" else "physical shift"), name, night, log)
    return rows


def evaluate_real_mr(methods, cases=REAL_MR, shifts=REAL_MR_SHIFTS, log=print) -> list[dict]:
    """brain-source on real T1 MRs of other subjects and scanners (deepbet *pseudo* masks), unshifted and
    under physical shifts; every axial slice."""
    from ..sampledata.real import real_case
    from .network import load_source_model, slice_engine
    from .pseudo import deepbet_mask
    from .shifts import MR_SHIFTS, apply_shift

    src = load_source_model("brain-source")
    methods = [m for m in methods if m != "dyna"]
    rows = []
    for cid in cases:
        vol = real_case(cid).image
        mask = deepbet_mask(vol)
        idx = list(range(slice_engine(vol, src.card).n_slices))
        rows += run_case(src, vol, mask, idx, methods, "brain-source, cross-case real, unshifted", cid, None, log)
        for sh in shifts:
            v = apply_shift(vol, MR_SHIFTS[sh], mask)
            rows += run_case(src, v, mask, idx, methods, "brain-source, cross-case real, physical shift",
                             f"{cid} {sh}", None, log)
    return rows


LOCO = "brain-source LOCO"  # the group name of the leave-one-case-out brain models (`loco.py`)


def evaluate_real_mr_loco(methods, cases=REAL_MR, shifts=REAL_MR_SHIFTS, seed: int = 0, log=print) -> list[dict]:
    """Each real T1 MR adapted from the LOCO brain model that never saw it (Colin27 + the other real T1s with
    deepbet *pseudo* masks; trained on first use, cached), unshifted and under physical shifts; every axial
    slice, scored against deepbet's *pseudo* mask."""
    from ..sampledata.real import real_case
    from .loco import loco_source
    from .network import slice_engine
    from .pseudo import deepbet_mask
    from .shifts import MR_SHIFTS, apply_shift

    methods = [m for m in methods if m != "dyna"]
    rows = []
    for cid in cases:
        src = loco_source(cid, seed, log)
        vol = real_case(cid).image
        mask = deepbet_mask(vol)
        idx = list(range(slice_engine(vol, src.card).n_slices))
        rows += run_case(src, vol, mask, idx, methods, f"{LOCO}, cross-case real, unshifted", cid, None, log)
        for sh in shifts:
            v = apply_shift(vol, MR_SHIFTS[sh], mask)
            rows += run_case(src, v, mask, idx, methods, f"{LOCO}, cross-case real, physical shift",
                             f"{cid} {sh}", None, log)
    return rows


def _f(v, scale=100.0, nd=1):
    return "–" if v is None or not np.isfinite(v) else f"{scale * v:.{nd}f}"


def summarise_rows(rows, methods) -> dict:
    """Per group of cases (centre) and method: mean Dice/NSD, gain over none, worst case vs none, gate counts,
    time ratio to plain inference."""
    out = {}
    for centre in dict.fromkeys(r["centre"] for r in rows):
        sub = [r for r in rows if r["centre"] == centre]
        none = {r["case"]: r for r in sub if r["method"] == "none"}
        plain = sum(r["seconds_plain"] for r in sub if r["method"] == "none")
        for m in methods:
            mr = [r for r in sub if r["method"] == m]
            if not mr:
                continue
            d = [r["dice"] - none[r["case"]]["dice"] for r in mr if r["case"] in none]
            out[(centre, m)] = {
                "n": len(mr), "dice": float(np.mean([r["dice"] for r in mr])),
                "nsd": float(np.nanmean([r["nsd"] for r in mr])),
                "gain": float(np.mean(d)) if d else float("nan"), "worst": float(min(d)) if d else float("nan"),
                "ungated": float(np.mean([r.get("dice_ungated", r["dice"]) for r in mr])),
                "accepted": sum(bool(r.get("gate_accepted")) for r in mr),
                "ratio": sum(r.get("seconds_adapt", r["seconds_plain"]) for r in mr) / plain if plain else float("nan"),
                "ratio_total": sum(r["seconds"] for r in mr) / plain if plain else float("nan")}
    return out


def render(rows, methods, comparisons, settings) -> str:
    summ = summarise_rows(rows, methods)
    centres = list(dict.fromkeys(r["centre"] for r in rows))
    lines = ["# Test-time adaptation: like-for-like evaluation (physical shifts, real cross-case MR)", "",
             "Written by `medsegsuite tta eval` (`MedSegSuite/medsegsuite/tta/evaluate.py`). What each number is:", "",
             "- **same-case, physical shift**: the source model's *own* training image (LiTS-117 CT, Colin27 T1) "
             "under a SIMULATED physical acquisition shift (`tta/shifts.py`, cited ranges below), scored on its "
             "held-out slices (never trained on). Same anatomy as training: not a generalisation result.",
             "- **cross-case real**: real T1 brain MRs of other subjects and scanners (pyradiomics brain1/brain2), "
             "unshifted or under a simulated physical shift; brain masks are deepbet's **pseudo** labels "
             "(a model's output, not manual).",
             f"- **{LOCO}, cross-case real**: the same real MRs, each adapted from a brain model trained "
             "leave-one-case-out (`tta/loco.py`: Colin27 + the *other* real T1 MRs with deepbet **pseudo** masks; "
             "never the scored case). The plain brain-source groups (Colin27 alone) stay for comparison.", "",
             f"Every method starts from the source model on every case and adapts per volume (batches of "
             f"{settings['batch']} slices, safety gate on); torch threads {settings['threads']}; total "
             f"{settings['seconds']:.0f} s on a shared machine.", ""]
    lines += ["## Summary per group of cases", "",
              "Dice / NSD in points (mean over cases); *gain*: mean Dice change against none; *worst*: the worst "
              "case's change against none; *ungated*: the adapted Dice before the gate; *gate*: cases where the "
              "adapted prediction was used; *× plain*: the adapted pass over the volume (the method's own cost) over "
              "plain batched inference (batch 16) in the same run; *with gate*: plus the plain pass that the gate and the "
              "'(before)' segment need.", ""]
    for c in centres:
        lines += [f"### {c}", "", "| method | Dice | NSD | gain | worst | ungated | gate | × plain | with gate |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for m in methods:
            s = summ.get((c, m))
            if s is None:
                continue
            gate = "–" if m == "none" else f"{s['accepted']}/{s['n']}"
            lines.append(f"| {NAMES[m]} | {_f(s['dice'])} | {_f(s['nsd'])} | {_f(s['gain'])} | {_f(s['worst'])} | "
                         f"{_f(s['ungated'])} | {gate} | {s['ratio']:.2f} | {s['ratio_total']:.2f} |")
        lines.append("")
    lines += ["## Targets", ""]
    lines += targets(summ, centres)
    lines += ["", "## Per case (Dice, points; * = gate kept the source prediction)", "",
              "*shift*: the gate's feature shift of the case under the source model (source images: ~0.1).", ""]
    for model in dict.fromkeys(r["structure"] for r in rows):
        sub = [r for r in rows if r["structure"] == model]
        cases = list(dict.fromkeys((r["centre"], r["case"]) for r in sub))
        ms = [m for m in methods if any(r["method"] == m for r in sub)]
        lines += [f"### {model}", "", "| case | group | shift | " + " | ".join(NAMES[m] for m in ms) + " |",
                  "|---|---|---:|" + "---:|" * len(ms)]
        for c, k in cases:
            cell = []
            shift = None
            for m in ms:
                r = next((r for r in sub if r["method"] == m and r["case"] == k and r["centre"] == c), None)
                if r is None:
                    cell.append("–")
                    continue
                if m == "none":
                    shift = r["feature_shift"]  # the source model's view of the case (DyNA's gate uses its night's)
                star = "*" if r.get("gate_accepted") is False else ""
                cell.append(f"{_f(r['dice'])}{star}")
            lines.append(f"| {k} | {c} | {_f(shift, 1, 2)} | " + " | ".join(cell) + " |")
        lines.append("")
    lines += ["## Paired tests against none (Wilcoxon signed-rank, Holm-corrected per metric)", "",
              "| group | method | metric | pairs | median diff | p | p (Holm) |", "|---|---|---|---:|---:|---:|---:|"]
    for c in comparisons:
        lines.append(f"| {c['group']} | {NAMES[c['method_b']]} | {c['metric']} | {c['n_pairs']} | "
                     f"{_f(-c['median_diff'], 100, 2)} | {c['p']:.3g} | {c['p_holm']:.3g} |")
    lines += ["", "## Shifts (SIMULATED physical acquisitions; ranges and sources in `tta/shifts.py`)", ""]
    from .shifts import CT_SHIFTS, MR_SHIFTS, SOURCES

    lines += ["| modality | shift | what | sources |", "|---|---|---|---|"]
    for mod, table in (("CT", CT_SHIFTS), ("MR", MR_SHIFTS)):
        for s in table.values():
            lines.append(f"| {mod} | {s.name} | {s.description} | {', '.join(s.sources) or '–'} |")
    lines += ["", "Sources:", ""] + [f"- [{k}] {v}" for k, v in SOURCES.items()]
    lines += ["", "## Protocol", "", (__doc__ or "").split("\n\n", 1)[1].strip(), ""]
    return "\n".join(lines)


def targets(summ, centres) -> list[str]:
    out = []
    for m in ("vptta", "grata"):
        for c in centres:
            s = summ.get((c, m))
            if s is None:
                continue
            if "unshifted" in c or c.endswith("source"):
                ok = s["worst"] >= -0.01
                out.append(f"- {NAMES[m]}, {c}: worst case {_f(s['worst'])} points against none "
                           f"({'met' if ok else 'NOT met'}: ≥ −1)")
            else:
                ok = s["gain"] >= 0.03
                out.append(f"- {NAMES[m]}, {c}: mean gain {_f(s['gain'])} points ({'met' if ok else 'NOT met'}: "
                           f"≥ +3); worst case {_f(s['worst'])} ({'met' if s['worst'] >= -0.02 else 'NOT met'}: ≥ −2)")
            if "same-case, physical" in c:
                out.append(f"- {NAMES[m]} cost, {c}: {s['ratio']:.2f}× plain inference per volume "
                           f"({'met' if s['ratio'] <= 2.5 else 'NOT met'}: ≤ 2.5×; {s['ratio_total']:.2f}× with the "
                           "gate's plain pass); benchmarks/results/tta_speed.md measures it side by side")
    worst = [(s["worst"], c, m) for (c, m), s in summ.items() if m != "none" and np.isfinite(s["worst"])]
    if worst:
        w, c, m = min(worst)
        out.append(f"- every case, every method: the worst case's change against none is {_f(w)} points ({NAMES[m]}, "
                   f"{c}) ({'met' if w >= -0.02 else 'NOT met'}: ≥ −2)")
    return out


def comparisons_against_none(rows, methods) -> list[dict]:
    """`metrics.stats.paired_comparisons` per group of cases; only the pairs (none, method) are kept."""
    from ..metrics.stats import paired_comparisons

    out = []
    groups = {"all cases": rows}
    for c in dict.fromkeys(r["centre"] for r in rows):
        groups[c] = [r for r in rows if r["centre"] == c]
    for g, sub in groups.items():
        keyed = [{**r, "case": f"{r['centre']}|{r['case']}", "structure": "all"} for r in sub]
        for c in paired_comparisons(keyed, metrics=("dice", "nsd")):
            if c["method_a"] == "none" and c["method_b"] in methods:
                out.append({**c, "group": g})
    return out


def _part(args, log=None):
    """One independent part of the evaluation (a source model's same-case shifts, or the real MRs); runs in a
    worker process when the evaluation uses several."""
    import torch

    kind, dataset, methods, night_iterations, shifts, threads = args
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    log = log or (lambda msg: print(msg, flush=True))
    if kind == "same":
        return evaluate_same_case(dataset, methods, night_iterations, shifts, log)
    if kind == "loco":
        return evaluate_real_mr_loco(methods, log=log)
    return evaluate_real_mr(methods, log=log)


def run_evaluation(out, datasets=("liver-source", "brain-source"), methods=("none", "tent", "vptta", "grata", "dyna"),
                   night_iterations: int = 12, threads: int = 1, real: bool = True, shifts=None, log=print,
                   notes: str | None = None, workers: int = 1, loco: bool = True) -> Path:
    """Run the evaluation and write ``out`` (+ .json). ``workers`` > 1 runs its parts (each source model's
    shifts, the real MRs, the LOCO real MRs) in that many processes: the same computations, each part seeded alike; timing
    ratios are taken within a part (same process, same load)."""
    import torch

    from ..provenance import provenance, write_json, write_markdown
    from .options import VOLUME_OPTIONS

    prev_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    methods = list(methods)
    if "none" not in methods:
        methods.insert(0, "none")
    t0 = time.time()
    old_home = os.environ.get("MEDSEGSUITE_HOME")
    os.environ["MEDSEGSUITE_HOME"] = tempfile.mkdtemp(prefix="tta-eval-home-")  # night versions stay out of
    try:                                                                          # the user's version list
        from .network import load_source_model
        from .shifts import shifts_for

        parts = []
        for d in datasets:
            names = [n for n in shifts_for(load_source_model(d).card.get("modality", "ct"))
                     if not shifts or n in shifts]
            k = max(1, min(len(names), (workers - int(real) - int(real and loco)) // len(datasets)))  # chunks of its shifts
            parts += [("same", d, tuple(names[i::k])) for i in range(k)]
        parts += [("real", None, None)] if real else []
        parts = ([("loco", None, None)] if real and loco else []) + parts  # first: it may train its models
        args = [(kind, d, methods, night_iterations, sh, threads) for kind, d, sh in parts]
        if workers > 1 and len(parts) > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(min(workers, len(parts)), mp_context=mp.get_context("spawn")) as ex:
                results = list(ex.map(_part, args))
        else:
            results = [_part(a, log) for a in args]
        order = {"same": 0, "real": 1, "loco": 2}  # tables: same-case, then brain-source real, then LOCO real
        rows = [r for _, part in sorted(zip(parts, results), key=lambda t: order[t[0][0]]) for r in part]
        prov = provenance()  # while the evaluation's torch threads are still set
    finally:
        torch.set_num_threads(prev_threads)
        if old_home is None:
            os.environ.pop("MEDSEGSUITE_HOME", None)
        else:
            os.environ["MEDSEGSUITE_HOME"] = old_home
    comps = comparisons_against_none(rows, methods)
    settings = {"threads": threads, "batch": VOLUME_OPTIONS["batch"], "seconds": time.time() - t0}
    text = render(rows, methods, comps, settings)
    if notes:
        text += "\n## Notes\n\n" + notes + "\n"
    out = write_markdown(out, text, prov)
    summ = {f"{c} | {m}": v for (c, m), v in summarise_rows(rows, methods).items()}
    write_json(out.with_suffix(".json"), {"rows": rows, "summary": summ, "comparisons": comps}, prov)
    log(f"wrote {out}")
    return out
