"""Fill-in by interpolation (``cosam.segment``'s ``interpolate``) against the exact route, cross-case.

    .venv/bin/python benchmarks/cosam_interpolation.py [--threads 2] [--out benchmarks/results/cosam_interpolation.md]

On the real CTs the shipped ``liver`` model never saw (TotalSegmentator's reference CTs, *pseudo*
labels; ``medsegsuite sampledata fetch``), one backend runs ``cosam.segment`` with the default
settings (extent-first K = 4 with fill-in by interpolation between agreeing slices) and with
``interpolate 0`` (every slice of the extent segmented by the loop) on the same image. Reports the
slices each segments, interpolates and encodes, volume Dice against the label, and how many voxels
differ. The interpolated run goes first, so its encoder calls are its own; the exact run then reuses
its embeddings and encodes only the slices the interpolation skipped. Same-case LiTS-117 (manual
label) is in benchmarks/cosam_speed.py, the 512×512×300 CT in benchmarks/full_ct.py.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MedSegSuite"))
sys.path.insert(0, str(ROOT / "benchmarks"))

CASES = ("ts-ct-native", "ts-ct-contrast")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cosam_interpolation.md"))
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    from bench_device import bench_device, device_extra

    from medsegsuite.cosam.params import INTERPOLATE_DICE
    from medsegsuite.engine import LocalBackend
    from medsegsuite.engine.interface import run_job
    from medsegsuite.metrics import dice
    from medsegsuite.provenance import provenance, write_markdown
    from medsegsuite.sampledata.real import real_case

    dev = bench_device()
    rows, worst = [], 0.0
    with LocalBackend(dev) as backend:
        for cid in CASES:
            case = real_case(cid)
            lab = case.labels["liver"]
            got = {}
            for name, params in (("interpolated", {}), ("exact", {"interpolate": 0})):
                t = time.perf_counter()
                r = run_job(backend, "cosam.segment", case.image, params)
                got[name] = (time.perf_counter() - t, r)
            (ti, ri), (te, re_) = got["interpolated"], got["exact"]
            di, de = dice(ri.masks["liver"], lab), dice(re_.masks["liver"], lab)
            worst = max(worst, abs(di - de))
            ext = ri.info.get("extent") or {}
            fov = (ri.info.get("field_of_view") or {}).get("window_px")
            rows.append(f"| {cid} ({case.description}) | {'model windows' if fov else 'squeezed slice'} | "
                        f"{len(re_.info['per_slice'])} | {len(ri.info['per_slice'])} | "
                        f"{len(ri.info.get('interpolated', []))} | {ri.info['encoder_calls']} | {ti:.1f} | {te:.1f} | "
                        f"{de:.4f} | {di:.4f} | {di - de:+.4f} | "
                        f"{int(np.count_nonzero(ri.masks['liver'] != re_.masks['liver']))} | "
                        f"{ext.get('first')}..{ext.get('last')} |")
            print(rows[-1], flush=True)
    lines = ["# CoSAM fill-in by interpolation vs the exact route, cross-case", "",
             f"Default `cosam.segment` (extent-first K = 4, fill-in by shape interpolation between two segmented "
             f"slices whose masks both hold liver and agree at Dice ≥ {INTERPOLATE_DICE}; bisection otherwise) vs "
             "`interpolate 0` (the loop on every slice of the extent), same backend, same images. Cross-case, real "
             "CTs the shipped `liver` model never saw; their labels are TotalSegmentator's output (*pseudo*). "
             "The exact run reuses the interpolated run's embeddings, so its seconds are not a fresh run's "
             "(benchmarks/cosam_speed.py and benchmarks/full_ct.py time both routes from scratch).", "",
             "| case | field of view | slices segmented, exact | slices segmented, default | interpolated | "
             "encoder calls, default | default s | exact s (embeddings reused) | Dice exact | Dice default | "
             "difference | voxels that differ | extent |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|", *rows, "",
             f"Largest |Dice difference|: {worst:.4f} (limit: within 0.005: {'met' if worst <= 0.005 else 'NOT met'}).",
             ""]
    write_markdown(a.out, lines, provenance(extra={**device_extra(dev), "torch_threads": a.threads}))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
