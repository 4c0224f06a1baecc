"""Box -> LiteMedSAM -> propagation on LiTS-117, against LiteMedSAM with a box on every slice (the oracle).

Liver: one box (the reference liver's bounding box) on the middle axial slice (64), propagated up and
down. Tumour: the largest connected lesion of the reference tumour label; one box (its bounding box)
on the middle slice of its extent, propagated until the lesion ends. The oracle gets the reference's
box(es) on every slice the result is scored on (sam.oracle_box: one box per connected component).
LiteMedSAM was not trained by this project: these are a pretrained model's results on a real CT, with
boxes taken from the manual LiTS reference (simulated user boxes).

    PYTHONPATH=MedSegSuite .venv/bin/python scripts/rt_propagation_eval.py [--max-slices 12] [--out docs/results]

``scripts/rt_flow.py`` (the whole-CT flow) writes the same table at its end from the embeddings its
CoSAM pass already computed, so the two results files come from one encoding of the CT.

``--max-slices`` bounds the liver run (every LiTS-117 slice holds liver, so it would run through all 128);
scores are over the slices the liver run reached (the oracle is scored on the same slices).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

CT_WINDOW = [-160.0, 240.0]  # the abdominal window the demo's oracle uses


def dice(a, b):
    return 1.0 if not a.any() and not b.any() else float(2 * (a & b).sum() / (a.sum() + b.sum()))


def propagation_rows(backend, ct, ref, max_slices=None, on_event=None) -> list[dict]:
    """The two rows (liver; the largest tumour lesion) on ``ct`` with the manual reference ``ref``, run on
    ``backend`` (whose embedding cache a caller may already have filled for this image and window)."""
    from scipy import ndimage

    from medsegsuite.engine.interface import run_job
    from medsegsuite.volume import SliceEngine

    eng = SliceEngine.for_volume(ct, "axial")
    lab, n = ndimage.label(ref.masks["tumour"])
    sizes = ndimage.sum(ref.masks["tumour"], lab, range(1, n + 1))
    lesion = lab == (1 + int(np.argmax(sizes)))
    cases = {"liver": (ref.masks["liver"], max_slices), "tumour (largest lesion)": (lesion, None)}
    rows = []
    for name, (m, limit) in cases.items():
        ks = [k for k in range(eng.n_slices) if eng.slice(m, k).any()]
        mid = ks[len(ks) // 2]
        r, c = np.nonzero(eng.slice(m, mid))
        box = [int(c.min()), int(r.min()), int(c.max()) + 1, int(r.max()) + 1]
        t = time.time()
        res = run_job(backend, "sam.propagate", ct, {"slice": mid, "box": box, "window": CT_WINDOW,
                                                     "structure": name, "max_slices": limit}, on_event=on_event)
        secs = time.time() - t
        prop = res.masks[name]
        lo, hi = min(res.info["slices"]), max(res.info["slices"])
        scored = list(range(lo, hi + 1))
        if name.startswith("tumour"):  # score over the lesion's whole extent too (misses count)
            scored = sorted(set(scored) | set(ks))
        t = time.time()
        orc = run_job(backend, "sam.oracle_box", ct, {"slices": scored, "window": CT_WINDOW}, {name: m},
                      on_event=on_event).masks[name]
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
        print(row, flush=True)
    return rows


def write_results(rows, out, max_slices, command: str, note: str = "") -> Path:
    from medsegsuite.provenance import write_json, write_markdown

    out = Path(out)
    write_json(out / "rt_propagation.json", {"rows": rows})
    lines = ["# Box on one slice -> LiteMedSAM propagation vs a box on every slice (LiTS-117)", "",
             "Real CT (LiTS-117, manual reference). **Model-free**: LiteMedSAM pretrained by its authors, not by this "
             "project, prompted with one box: no same-case/cross-case training question arises for the model; the "
             "boxes are simulated from the manual reference. The machine was shared by ~8 jobs on 2 CPU cores: "
             "times are indicative only." + (f" {note}" if note else ""), "",
             "| structure | prompt slice | reference slices | propagated slices | scored slices | Dice propagation | "
             "Dice oracle (box every slice) | Dice prop. vs oracle | Dice on the prompted slice | stopped (up / down) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['structure']} | {r['prompt_slice']} | {r['reference_slices'][0]}-{r['reference_slices'][1]} | "
                     f"{r['propagated_slices'][0]}-{r['propagated_slices'][1]} | {r['scored_slices']} | "
                     f"{r['dice_propagation']:.3f} | {r['dice_oracle']:.3f} | {r['dice_propagation_vs_oracle']:.3f} | "
                     f"{r['dice_prompt_slice_propagation']:.3f} | {r['stopped'].get('up')} / {r['stopped'].get('down')} |")
    tum = [r for r in rows if "dice_vs_whole_tumour_label" in r]
    lines += ["", "Dice is over the scored slices (for the lesion: its whole extent, so slices propagation never "
              "reached count as misses). " + (f"The liver run was bounded to {max_slices} slices each way "
                                                "(every LiTS-117 slice holds liver). " if max_slices else "")
              + (f"The lesion's propagated mask against the whole tumour label (all lesions): Dice "
                 f"{tum[0]['dice_vs_whole_tumour_label']:.3f}. " if tum else "")
              + "Seconds (propagation / oracle decode): "
              + "; ".join(f"{r['structure']} {r['seconds_propagation']:.0f} / {r['seconds_oracle_decode']:.0f} "
                          f"({r['encoder_calls']} encoder calls so far)" for r in rows) + ".",
              "", f"Regenerate: `{command}`."]
    return write_markdown(out / "rt_propagation.md", lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-slices", type=int, default=12, help="liver: at most this many slices each way")
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    from medsegsuite.engine import LocalBackend
    from medsegsuite.progress import ProgressPrinter
    from medsegsuite.sampledata import lits117

    torch.set_num_threads(args.threads)
    ct, ref = lits117()
    with LocalBackend("cpu") as backend:
        rows = propagation_rows(backend, ct, ref, args.max_slices, ProgressPrinter("propagation", sys.stdout))
    print(write_results(rows, args.out, args.max_slices, "PYTHONPATH=MedSegSuite .venv/bin/python "
                        f"scripts/rt_propagation_eval.py --max-slices {args.max_slices}"))


if __name__ == "__main__":
    main()
