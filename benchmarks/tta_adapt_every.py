"""TTA cost against accuracy: VPTTA and GraTa with several ``adapt_every`` settings, time and Dice in one run.

``adapt_every`` (tta/options.py) is the cost lever of a method's per-volume schedule: the update uses every
k-th slice of a batch, then the adapted state predicts the whole batch. A larger k is cheaper; this script
measures whether it costs accuracy. For each source model and a few of its physical shifts (SIMULATED
acquisitions of the model's own training image, scored on its held-out axial slices: same-case anatomy,
manual reference labels), every setting runs `tta.pipeline.run_volume` with fresh adapters: its adapted
pass is timed against the plain pass of the same call (ratio = adapted / plain, side by side), and its
Dice (adapted, before the safety gate, and the returned one after it) is scored through
`tta.evaluate.score`. Settings are interleaved per case, so load changes hit them alike.

    .venv/bin/python benchmarks/tta_adapt_every.py [--threads 1]

Writes benchmarks/results/tta_adapt_every.md (+ .json).
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

CASES = {"liver-source": ("dose-25%", "kernel-sharp", "hospital-B"),
         "brain-source": ("noise-7%", "bias-40%", "scanner-B")}
SETTINGS = {"vptta": (2, 4, 8, 16), "grata": (4, 8, 16)}


def run(model_id: str, shifts, settings, log=print) -> list[dict]:
    from medsegsuite.tta.evaluate import score
    from medsegsuite.tta.network import load_source_model, slice_engine, slices_from_volume
    from medsegsuite.tta.options import METHOD_OPTIONS
    from medsegsuite.tta.pipeline import run_volume
    from medsegsuite.tta.shifts import apply_shift, shifts_for
    from medsegsuite.tta.train import held_out, source_data

    src = load_source_model(model_id, "cpu")
    vol, mask = source_data(model_id)
    rows = []
    for shift in shifts:
        v = apply_shift(vol, shifts_for(src.card["modality"])[shift], mask)
        eng = slice_engine(v, src.card)
        x, idx, shape2d = slices_from_volume(v, src.card, held_out(eng.n_slices))
        plain = run_volume(src, None, "none", indices=idx, x=x, shape2d=shape2d)  # warm-up + the no-TTA Dice
        rows.append({"model": model_id, "shift": shift, "method": "none", "adapt_every": None,
                     "dice": score(plain["after"] > 0, mask, eng, idx, v.spacing)["dice"], "ratio": 1.0})
        for method, ks in settings.items():
            for k in ks:
                res = run_volume(src, None, method, {"adapt_every": k}, indices=idx, x=x, shape2d=shape2d)
                row = {"model": model_id, "shift": shift, "method": method, "adapt_every": k,
                       "default": k == METHOD_OPTIONS[method]["adapt_every"],
                       "dice": score(res["after"] > 0, mask, eng, idx, v.spacing)["dice"],
                       "dice_ungated": score(res["adapted"] > 0, mask, eng, idx, v.spacing)["dice"],
                       "gate_accepted": bool(res["gate"].accepted),
                       "seconds_plain": res["seconds_plain"], "seconds_adapt": res["seconds_adapt"],
                       "ratio": res["seconds_adapt"] / res["seconds_plain"], "slices": len(idx)}
                rows.append(row)
                log(f"{model_id} {shift} {method} k={k}: Dice {row['dice']:.4f} (ungated {row['dice_ungated']:.4f}), "
                    f"{row['ratio']:.2f}x plain", flush=True)
    return rows


def summary(rows) -> list[dict]:
    out = []
    for model_id in CASES:
        base = {r["shift"]: r["dice"] for r in rows if r["model"] == model_id and r["method"] == "none"}
        for method, ks in SETTINGS.items():
            for k in ks:
                sel = [r for r in rows if r["model"] == model_id and r["method"] == method and r["adapt_every"] == k]
                if not sel:
                    continue
                out.append({"model": model_id, "method": method, "adapt_every": k, "default": sel[0]["default"],
                            "cases": len(sel), "ratio_median": statistics.median(r["ratio"] for r in sel),
                            "dice_mean": statistics.fmean(r["dice"] for r in sel),
                            "dice_ungated_mean": statistics.fmean(r["dice_ungated"] for r in sel),
                            "dice_none_mean": statistics.fmean(base[r["shift"]] for r in sel),
                            "gate_accepted": sum(r["gate_accepted"] for r in sel)})
    return out


def main(argv=None):
    import torch

    from medsegsuite.provenance import provenance, write_json, write_markdown

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "tta_adapt_every.md"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    import os

    load0 = os.getloadavg()[0]
    rows = [r for m, shifts in CASES.items() for r in run(m, shifts, SETTINGS)]
    summ = summary(rows)
    prov = provenance(extra={"device": "cpu", "torch_threads": a.threads,
                             "load_avg_1min_at_start_and_end": [round(load0, 2), round(os.getloadavg()[0], 2)]})
    lines = ["# TTA: cost and accuracy of `adapt_every` (VPTTA, GraTa), one run", "",
             "Cases: each source model's own training image under SIMULATED physical shifts (same-case anatomy, "
             "scored on its held-out axial slices against the manual reference labels): "
             + "; ".join(f"{m}: {', '.join(s)}" for m, s in CASES.items())
             + f". Torch threads {a.threads}, CPU; the machine was shared with other work (load average in the "
             "provenance), so times are ratios to the plain pass of the same call. Ratio: adapted pass / plain "
             "pass (median over the cases); Dice: mean over the cases, of the returned mask (after the safety "
             "gate) and of the adapted mask before it; `none`: the source model without adaptation.", "",
             "| model | method | adapt_every | time / plain (median) | Dice (gated) | Dice (adapted, ungated) | "
             "Dice none | gate accepted |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for s in summ:
        lines.append(f"| {s['model']} | {s['method']} | {s['adapt_every']}{' (default)' if s['default'] else ''} | "
                     f"{s['ratio_median']:.2f}× | {s['dice_mean']:.4f} | {s['dice_ungated_mean']:.4f} | "
                     f"{s['dice_none_mean']:.4f} | {s['gate_accepted']}/{s['cases']} |")
    lines += ["", "Per case:", "", "| model | shift | method | adapt_every | time / plain | Dice (gated) | "
              "Dice (ungated) |", "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['shift']} | {r['method']} | {r['adapt_every'] or '–'} | {r['ratio']:.2f}× | "
                     f"{r['dice']:.4f} | {r.get('dice_ungated', r['dice']):.4f} |")
    out = write_markdown(a.out, "\n".join(lines), prov)
    write_json(Path(a.out).with_suffix(".json"), {"rows": rows, "summary": summ}, prov)
    print("\n".join(lines))
    print("wrote", out)


if __name__ == "__main__":
    main()
