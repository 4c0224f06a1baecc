"""Box -> LiteMedSAM -> propagation on LiTS-117, against LiteMedSAM with a box on every slice (the oracle).

Liver: one box (the reference liver's bounding box) on the middle axial slice (64), propagated up and
down. Tumour: the largest connected lesion of the reference tumour label; one box (its bounding box)
on the middle slice of its extent, propagated until the lesion ends. The oracle gets the reference's
box(es) on every slice the result is scored on (sam.oracle_box: one box per connected component).
LiteMedSAM was not trained by this project: these are a pretrained model's results on a real CT, with
boxes taken from the manual LiTS reference (simulated user boxes).

    PYTHONPATH=MedSegSuite .venv/bin/python scripts/rt_propagation_eval.py [--max-slices N] [--out docs/results]

``--max-slices`` bounds the liver run (every LiTS-117 slice holds liver, so it would run through all 128);
scores are over the slices the liver run reached (the oracle is scored on the same slices).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

CT_WINDOW = [-160.0, 240.0]  # the abdominal window the demo's oracle uses


def dice(a, b):
    return 1.0 if not a.any() and not b.any() else float(2 * (a & b).sum() / (a.sum() + b.sum()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-slices", type=int, default=None, help="liver: at most this many slices each way")
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch
    from scipy import ndimage

    from medsegsuite.engine import LocalBackend
    from medsegsuite.engine.interface import run_job
    from medsegsuite.provenance import write_json, write_markdown
    from medsegsuite.sampledata import lits117
    from medsegsuite.volume import SliceEngine

    torch.set_num_threads(args.threads)
    ct, ref = lits117()
    eng = SliceEngine.for_volume(ct, "axial")
    lab, n = ndimage.label(ref.masks["tumour"])
    sizes = ndimage.sum(ref.masks["tumour"], lab, range(1, n + 1))
    lesion = lab == (1 + int(np.argmax(sizes)))
    cases = {"liver": (ref.masks["liver"], args.max_slices), "tumour (largest lesion)": (lesion, None)}
    rows, detail = [], {}
    with LocalBackend("cpu") as backend:
        for name, (m, max_slices) in cases.items():
            ks = [k for k in range(eng.n_slices) if eng.slice(m, k).any()]
            mid = ks[len(ks) // 2]
            r, c = np.nonzero(eng.slice(m, mid))
            box = [int(c.min()), int(r.min()), int(c.max()) + 1, int(r.max()) + 1]
            t = time.time()
            res = run_job(backend, "sam.propagate", ct, {"slice": mid, "box": box, "window": CT_WINDOW,
                                                         "structure": name, "max_slices": max_slices})
            secs = time.time() - t
            prop = res.masks[name]
            lo, hi = min(res.info["slices"]), max(res.info["slices"])
            scored = list(range(lo, hi + 1))
            if name.startswith("tumour"):  # score over the lesion's whole extent too (misses count)
                scored = sorted(set(scored) | set(ks))
            t = time.time()
            orc = run_job(backend, "sam.oracle_box", ct, {"slices": scored, "window": CT_WINDOW}, {name: m}).masks[name]
            osecs = time.time() - t
            sel = np.zeros(ct.shape, bool)
            for k in scored:
                eng.put(sel, k, np.ones(eng.slice_shape, bool))
            row = {"structure": name, "prompt_slice": mid, "box": box, "reference_slices": [ks[0], ks[-1]],
                   "propagated_slices": [lo, hi], "scored_slices": len(scored), "stopped": res.info["stopped"],
                   "dice_propagation": dice(prop & sel, m & sel), "dice_oracle": dice(orc & sel, m & sel),
                   "dice_propagation_vs_oracle": dice(prop & sel, orc & sel),
                   "dice_prompt_slice_propagation": dice(eng.slice(prop, mid), eng.slice(m, mid)),
                   "seconds_propagation": round(secs, 1), "seconds_oracle_decode": round(osecs, 1),
                   "encoder_calls": res.info["encoder_calls"]}
            if name.startswith("tumour"):
                row["dice_vs_whole_tumour_label"] = dice(prop, ref.masks["tumour"])
            rows.append(row)
            detail[name] = row
            print(row, flush=True)
    out = Path(args.out)
    write_json(out / "rt_propagation.json", {"rows": rows})
    lines = ["# Box on one slice -> LiteMedSAM propagation vs a box on every slice (LiTS-117)", "",
             "Real CT (LiTS-117, manual reference), **LiteMedSAM pretrained by its authors, not by this project**: "
             "no same-case/cross-case training question arises for the model; the boxes are simulated from the "
             "manual reference. The machine was shared by ~8 jobs on 2 CPU cores: times are indicative only.", "",
             "| structure | prompt slice | reference slices | propagated slices | scored slices | Dice propagation | "
             "Dice oracle (box every slice) | Dice prop. vs oracle | stopped (up / down) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['structure']} | {r['prompt_slice']} | {r['reference_slices'][0]}-{r['reference_slices'][1]} | "
                     f"{r['propagated_slices'][0]}-{r['propagated_slices'][1]} | {r['scored_slices']} | "
                     f"{r['dice_propagation']:.3f} | {r['dice_oracle']:.3f} | {r['dice_propagation_vs_oracle']:.3f} | "
                     f"{r['stopped'].get('up')} / {r['stopped'].get('down')} |")
    lines += ["", "Dice is over the scored slices (for the lesion: its whole extent, so slices propagation never "
              "reached count as misses). " + (f"The liver run was bounded to {args.max_slices} slices each way. "
                                                if args.max_slices else "")
              + "Regenerate: `PYTHONPATH=MedSegSuite .venv/bin/python scripts/rt_propagation_eval.py"
              + (f" --max-slices {args.max_slices}" if args.max_slices else "") + "`."]
    print(write_markdown(out / "rt_propagation.md", lines))


if __name__ == "__main__":
    main()
