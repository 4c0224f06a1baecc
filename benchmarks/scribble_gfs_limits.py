"""Why MaCo does not yet beat Grow from seeds on annotator-style scribbles: the experiments, in one run.

LiTS-117 (real CT, manual liver), annotator-style scribbles on 10 of 128 axial slices (the
evaluation's own, `scribble.evaluation`), scored on the 118 unscribbled slices (same-case). Rows:

* Grow from seeds as the annotator gets it, and its Dice on the *scribbled* slices themselves (what
  MaCo's image-aware pseudo labels, which are Grow from seeds' labels, are worth where they are surest);
* Grow from seeds with extra background seeds far (> D mm) from every liver stroke ("background far
  from every stroke");
* LiteMedSAM prompted from the strokes on the scribbled slices (a foundation model as the densifier),
  and Grow from seeds seeded with its masks;
* MaCo (the package default, the evaluation's iterations), then MaCo refined by Grow from seeds
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
    sam_rows(eng, img, sc, slices, ref, sp, rows, row, on_scribbled)
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
    row(f"MaCo (package default, {ev.TRAIN['iterations']} iterations, 96 px)" if not a.model else "MaCo (the model given with --model)", maco)
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


SAM_GROW = (0.0, 0.1, 0.2, 0.3, 0.45, 0.6)  # box = the liver strokes' box grown by this fraction per side


def sam_rows(eng, img, sc, slices, ref, sp, rows, row, gfs_scribbled):
    """Could a foundation model densify the strokes better than Grow from seeds? LiteMedSAM (exact ONNX
    encoder route, the CT window) on each scribbled slice, prompted by the liver strokes' box grown by each
    of `SAM_GROW`; "chosen" takes the growth whose mask best agrees with the strokes (liver strokes inside,
    background strokes outside), as a user-free rule must; then Grow from seeds with those masks as seeds
    (eroded by 2 px inside, background beyond 3 px outside) on the scribbled slices."""
    from scipy import ndimage as ndi

    from medsegsuite.metrics import dice
    from medsegsuite.sam import load_litemedsam
    from medsegsuite.sam.encoder_routes import with_route
    from medsegsuite.sam.predictor import SlicePredictor
    from medsegsuite.scribble.growcut import grow_from_seeds
    from medsegsuite.scribble.labels import UNLABELLED

    pred = SlicePredictor(with_route(load_litemedsam("cpu"), "onnx", "cpu"), "cpu", {}, batch_size=4)
    embs = pred.embeddings(img, "scribble-limits", eng, slices, (-160.0, 240.0))
    per = {e: [] for e in SAM_GROW}
    chosen, masks = [], {}
    for k in slices:
        s, r = eng.slice(sc, k), eng.slice(ref, k)
        fg, bg = s == 1, s == 0
        ys, xs = np.nonzero(fg)
        b = np.array([xs.min(), ys.min(), xs.max(), ys.max()], float)
        w, h = b[2] - b[0], b[3] - b[1]
        H, W = s.shape
        best = None
        for e in SAM_GROW:
            bx = np.clip(b + np.array([-e * w, -e * h, e * w, e * h]), 0, [W - 1, H - 1, W - 1, H - 1])
            m = pred.decode(embs[k], (H, W), boxes=[bx])[0] > 0
            per[e].append(dice(m, r))
            agree = m[fg].mean() + (1 - m[bg].mean())
            if best is None or agree > best[0] + 1e-9:
                best = (agree, m)
        chosen.append(dice(best[1], r))
        masks[k] = best[1]
    top = max(SAM_GROW, key=lambda e: np.mean(per[e]))
    for e in SAM_GROW:
        rows.append((f"LiteMedSAM, box = liver strokes' box grown by {e:.0%} per side, Dice on the 10 *scribbled* "
                     "slices", float(np.mean(per[e])), "the best fixed growth, known only with the labels" if e == top else ""))
    c = float(np.mean(chosen))
    rows.append(("LiteMedSAM, the growth whose mask agrees best with the strokes, Dice on the 10 *scribbled* "
                 "slices", c, f"{'below' if c < gfs_scribbled else 'above'} Grow from seeds on the same slices "
                 f"({gfs_scribbled:.3f})"))
    seeds = sc.copy()
    for k, m in masks.items():
        sl = eng.slice(seeds, k)
        free = sl == UNLABELLED
        sl[free & ndi.binary_erosion(m, iterations=2)] = 1
        sl[free & ~ndi.binary_dilation(m, iterations=3)] = 0
    row("Grow from seeds from the strokes + those LiteMedSAM masks as seeds", grow_from_seeds(img, seeds, 2, sp) == 1,
        "denser seeds from a wrong mask spread its errors")


if __name__ == "__main__":
    main()
