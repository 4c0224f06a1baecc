"""Per-case quick mode (``scribble.quick``) end to end on LiTS-117 (128³): train on 8 scribbled axial
slices, segment all 128. MaCo against the pCE-only baseline (one forward pass per step instead of
two), for 1 and 2 torch threads; medians over --repeats runs.

    .venv/bin/python benchmarks/scribble_quick.py [--repeats 3] [--out benchmarks/results/scribble.md]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", default="benchmarks/results/scribble.md")
    args = ap.parse_args()

    import torch

    from medsegsuite.engine import LocalBackend
    from medsegsuite.engine.interface import run_job
    from medsegsuite.metrics import dice
    from medsegsuite.provenance import provenance, write_markdown
    from medsegsuite.sampledata import lits117_ct, lits117_labels
    from medsegsuite.scribble.generator import make_scribbles
    from medsegsuite.scribble.train import QUICK_SETTINGS

    ct = lits117_ct()
    lab = lits117_labels().array.astype(np.uint8)
    slices = list(range(8, 128, 16))
    sc = make_scribbles(lab, 3, slices, plane="axial", seed=0, spacing=ct.geometry.spacing)
    test = [k for k in range(128) if k not in slices]
    rows = []
    from bench_device import bench_device, device_extra

    backend = LocalBackend(bench_device())
    try:
        for threads in args.threads:
            torch.set_num_threads(threads)
            for method in ("pce", "maco"):
                times, dices, events = [], [], []
                for r in range(args.repeats):
                    events.clear()
                    t0 = time.perf_counter()
                    res = run_job(backend, "scribble.quick", ct,
                                  {"classes": ["liver", "tumour"], "keep_largest": ["liver"],
                                   "method": method, "seed": r},
                                  {"scribbles": sc}, on_event=events.append)
                    times.append(time.perf_counter() - t0)
                    pred = res.masks["liver"] | res.masks["tumour"]
                    dices.append(dice(pred[..., test], lab[..., test] > 0))
                rows.append((threads, method, statistics.median(times), statistics.median(dices), len(events)))
                print(rows[-1], flush=True)
    finally:
        backend.close()
    prov = provenance(extra={**device_extra(bench_device()), "torch threads per run": ", ".join(map(str, args.threads))})
    base = {t: s for t, m, s, _, _ in rows if m == "pce"}
    lines = ["# Scribble quick mode (per-case MaCo) — benchmark", "",
             "`benchmarks/scribble_quick.py`: LiTS-117 CT 128³, synthetic scribbles on 8 axial slices (every 16th),",
             f"`scribble.quick` with QUICK_SETTINGS {QUICK_SETTINGS}: train on the scribbled slices, then segment all",
             "128 slices; wall time of the whole job (including data preparation and writing the model bytes).",
             f"Median of {args.repeats} run(s); machine, load and command: the provenance above.", "",
             "| torch threads | method | wall time (s) | ratio to pCE-only | liver Dice (unscribbled slices) | progress events |",
             "|---|---|---|---|---|---|"]
    for t, m, s, d, n in rows:
        lines.append(f"| {t} | {m} | {s:.1f} | {s / base[t]:.2f}× | {d:.3f} | {n} |")
    lines += ["", "Target: under ~3 minutes end to end on 2 CPU cores."]
    write_markdown(args.out, lines, prov)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
