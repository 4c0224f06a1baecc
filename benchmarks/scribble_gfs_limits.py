"""Why MaCo does not yet beat Grow from seeds on annotator-style scribbles: the experiments, in one run.

LiTS-117 (real CT, manual liver), annotator-style scribbles on 10 of 128 axial slices (the
evaluation's own, `scribble.evaluation`), scored on the 118 unscribbled slices (same-case). Rows:

* Grow from seeds as the annotator gets it, and its Dice on the *scribbled* slices themselves (what
  MaCo's image-aware pseudo labels, which are Grow from seeds' labels, are worth where they are surest);
* Grow from seeds with extra background seeds far (> D mm) from every liver stroke ("background far
  from every stroke");
* MaCo (the package default, the evaluation's 200 iterations), then MaCo refined by Grow from seeds
  (MaCo's mask eroded by r voxels as seeds, plus the strokes), MaCo ∩ dilated Grow from seeds, union.

    python benchmarks/scribble_gfs_limits.py [--model maco.npy] [--out docs/results/scribble_limits.md]

A shared 2-core machine: one MaCo training is ~5-10 min of CPU.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MedSegSuite"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a MaCo model (.npy bytes from scribble.train) to reuse; default: train one")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "scribble_limits.md"))
    a = ap.parse_args(argv)
    os.environ.setdefault("MEDSEGSUITE_TRAINING", "thread")
    import torch
    from scipy import ndimage as ndi

    torch.set_num_threads(2)
    from medsegsuite.engine import LocalBackend
    from medsegsuite.engine.interface import run_job
    from medsegsuite.metrics import dice
    from medsegsuite.provenance import write_markdown
    from medsegsuite.scribble import evaluation as ev
    from medsegsuite.scribble.generator import style_scribbles, style_slices
    from medsegsuite.scribble.growcut import grow_from_seeds
    from medsegsuite.scribble.labels import UNLABELLED

    t0 = time.time()
    case = ev.lits_case()
    eng = ev.engine(case["image"])
    slices = style_slices(eng.n_slices, "annotator", case["count"])
    test = [k for k in range(eng.n_slices) if k not in slices]
    sc = style_scribbles(case["dense"], 2, "annotator", ev.PLANE, 0, case["image"].spacing, case["image"].direction,
                         slices)
    img = case["image"].array.astype(np.float32)
    sp = case["image"].spacing
    ref = case["dense"] == 1
    rows = []

    def row(what, mask, note=""):
        d = ev.score(case, mask.astype(np.uint8), test)["liver"]["dice"]
        rows.append((what, d, note))
        print(f"{what}: {d:.4f}", flush=True)

    gfs = grow_from_seeds(img, sc, 2, sp) == 1
    row("Grow from seeds (the annotator's tool)", gfs)
    on_scribbled = float(np.mean([dice(eng.slice(gfs, k), eng.slice(ref, k)) for k in slices]))
    rows.append(("Grow from seeds, Dice on the 10 *scribbled* slices", on_scribbled,
                 "what MaCo's image-aware pseudo labels are worth where they are surest"))
    dfg = ndi.distance_transform_edt(sc != 1, sampling=sp)
    for D in (40.0, 60.0, 80.0):
        s2 = sc.copy()
        s2[(dfg > D) & (sc == UNLABELLED)] = 0
        row(f"Grow from seeds + background seeds > {D:.0f} mm from every liver stroke", grow_from_seeds(img, s2, 2, sp) == 1)
    backend = LocalBackend("cpu")
    try:
        if a.model:
            model = np.load(a.model)
        else:
            params = {"classes": case["classes"], **ev.TRAIN, "max_size": case["max_size"], "seed": 0,
                      "plane": ev.PLANE, "method": "maco"}
            model = run_job(backend, "scribble.train", case["image"], params, {"scribbles": sc}).arrays["model"]
        maco = run_job(backend, "scribble.segment", case["image"], {"keep_largest": ["liver"]},
                       {"model": model}).masks["liver"]
    finally:
        backend.close()
    row("MaCo (package default, 200 iterations, 96 px)", maco)
    for r in (2, 4, 6):
        seeds = np.full(maco.shape, UNLABELLED, np.uint8)
        seeds[ndi.binary_erosion(~maco, iterations=r)] = 0
        seeds[ndi.binary_erosion(maco, iterations=r)] = 1
        seeds[sc != UNLABELLED] = sc[sc != UNLABELLED]
        row(f"MaCo eroded by {r} voxels + strokes as seeds, then Grow from seeds", grow_from_seeds(img, seeds, 2, sp) == 1)
    for r in (4, 8):
        row(f"Grow from seeds ∩ MaCo dilated by {r} voxels", gfs & ndi.binary_dilation(maco, iterations=r))
    row("Grow from seeds ∪ MaCo", gfs | maco)
    T = np.zeros(ref.shape, bool)
    for k in test:
        eng.slice(T, k)[...] = True
    fp_fn = {n: (int((m & ~ref & T).sum()), int((~m & ref & T).sum())) for n, m in (("Grow from seeds", gfs),
                                                                                     ("MaCo", maco))}
    L = ["# Scribbles: what limits MaCo against Grow from seeds (experiments)", "",
         "Written by `python benchmarks/scribble_gfs_limits.py`. LiTS-117 (real CT, *manual* liver), the "
         "evaluation's annotator-style scribbles (synthetic strokes drawn from the manual label) on 10 of 128 "
         "axial slices; Dice on the 118 unscribbled slices (**same-case**) unless the row says otherwise.", "",
         "| experiment | liver Dice | note |", "|---|---:|---|"]
    L += [f"| {w} | {d:.3f} | {n} |" for w, d, n in rows]
    L += ["", "False positives / false negatives on the unscribbled slices (voxels): " + "; ".join(
        f"{n} {fp:,} / {fn:,}" for n, (fp, fn) in fp_fn.items()) + ".", "",
          f"Total {time.time() - t0:.0f} s on the shared machine."]
    write_markdown(a.out, L)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
