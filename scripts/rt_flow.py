"""The radiotherapy flow of docs/radiotherapy.md on the bundled CT, end to end, with its checks.

LiTS-117 -> CT DICOM series -> read back (UIDs kept) -> abdomen template -> Liver drafted by CoSAM
(the shipped ``liver`` model: trained on this very case, so its Dice is SAME-CASE) -> GTVp contoured
from one box on one slice with LiteMedSAM propagation (pretrained by its authors; the box comes from
the manual reference) -> reviewed -> approved (an AI write is then refused) -> RTSTRUCT and DICOM SEG
through ``medsegsuite export`` -> dciodvfy, rt-utils, highdicom and our readers -> Dice of the read-back
masks against the exported ones, and an overlay PNG.

    PYTHONPATH=MedSegSuite .venv/bin/python scripts/rt_flow.py [--slices all] [--out OUT] [--threads 1]
    PYTHONPATH=MedSegSuite .venv/bin/python scripts/rt_flow.py --readback-only OUT

``--readback-only OUT`` reuses the ``--out`` folder of an earlier full run (its approved plan.seg.nrrd and
CT series): steps 7-8 (export with the current code, dciodvfy, every reader) run again in seconds, and
``rt_flow.md`` keeps that run's lines for steps 1-6 and 9, saying so. No model runs.

By default the whole CT: CoSAM on every axial slice (with its extent pass: every 4th slice first, then
the span the liver covers), the GTVp box on the middle slice of the largest lesion of the manual
reference, propagated until the lesion ends. ``--slices a:b`` bounds both to a slab (then the box is
drawn on the slab's middle slice, as a quick check).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CT_WINDOW = [-160.0, 240.0]


def dice(a, b):
    return 1.0 if not a.any() and not b.any() else float(2 * (a & b).sum() / (a.sum() + b.sum()))

READERS = ("RTSTRUCT read back (ours)", "RTSTRUCT read back (rt-utils)", "RTSTRUCT read back (plastimatch)",
           "SEG read back (highdicom)")
READERS_NOTE = ("Dice of each read-back mask against the exported mask. The RTSTRUCT contours run half-way between "
                "inside and outside pixel centres (the 0.5 iso-line, see docs/radiotherapy.md), so a reader that fills "
                "the pixels whose centre lies inside gets the exported voxels back: ours, and plastimatch 1.9.4 "
                "(Debian; `plastimatch convert --referenced-ct`, `--xor-contours` so that a contour inside another "
                "is a hole, as the writer means it). rt-utils rounds every contour point to a whole pixel and fills "
                "with the boundary included, so its masks are the exported ones grown by up to one pixel (lower Dice "
                "on small structures). highdicom reads the SEG's pixels, exact.")


def export_and_read_back(plan, ct_dir, out, masks, say):
    """Steps 7-8: ``medsegsuite export`` of the approved plan as RTSTRUCT and SEG into ``out``, dciodvfy on
    both, and Dice of every reader's masks against ``masks`` (the exported ones). Returns (rows, errors, our
    RTSTRUCT read-back)."""
    from medsegsuite.cli import main as cli
    from medsegsuite.dicom.plastimatch import read_rtstruct_plastimatch
    from medsegsuite.dicom.rtstruct import read_rtstruct
    from medsegsuite.dicom.seg import read_dicom_seg
    from medsegsuite.dicom.series import scan_series

    rs, seg = out / "RS.dcm", out / "SEG.dcm"
    for fmt, path in (("rtstruct", rs), ("dicom-seg", seg)):
        assert cli(["export", "--seg", str(plan), "--reference", str(ct_dir), "--format", fmt, "--out", str(path)]) == 0
    say(f"7. medsegsuite export wrote {rs.name} and {seg.name}")
    errors = {}
    for path in (rs, seg):
        if shutil.which("dciodvfy"):
            p = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
            errors[path.name] = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.startswith("Error")]
        else:
            errors[path.name] = ["dciodvfy not installed"]
    info = scan_series(ct_dir)
    ours_rs = read_rtstruct(rs, info.geometry, info.first.FrameOfReferenceUID)
    ours_seg = read_dicom_seg(seg, info.geometry, info.first.FrameOfReferenceUID)
    from rt_utils import RTStructBuilder

    rtu = RTStructBuilder.create_from(str(ct_dir), str(rs))
    plm = read_rtstruct_plastimatch(rs, ct_dir, info.geometry)
    plm_or = read_rtstruct_plastimatch(rs, ct_dir, info.geometry, xor_contours=False)
    rows = []
    for name in ("Liver", "GTVp"):
        m = masks[name]
        rows.append((name, dice(ours_rs.masks[name], m), dice(rtu.get_roi_mask_by_name(name).transpose(1, 0, 2), m),
                     dice(plm[name], m), dice(ours_seg.masks[name], m)))
    say(f"8. dciodvfy errors: {errors}")
    for (name, a, b, c, d) in rows:
        say(f"   {name}: Dice read-back RTSTRUCT (ours) {a:.4f}, RTSTRUCT (rt-utils) {b:.4f}, RTSTRUCT (plastimatch "
            f"--xor-contours) {c:.4f} (without it, holes filled: {dice(plm_or[name], masks[name]):.4f}), "
            f"SEG (highdicom) {d:.4f}")
    return rows, errors, ours_rs


def table(rows):
    return (["| structure | " + " | ".join(READERS) + " |", "|---" * (len(READERS) + 1) + "|"]
            + [f"| {r[0]} | " + " | ".join(f"{v:.4f}" for v in r[1:]) + " |" for r in rows])


def readback_only(args):
    """Steps 7-8 again on an earlier full run's --out folder; the other steps' lines are kept from
    --results/rt_flow.md, which must be that run's."""
    from medsegsuite.io import read_segmentation
    from medsegsuite.provenance import write_markdown

    src = Path(args.readback_only)
    plan, ct_dir = src / "plan.seg.nrrd", src / "LiTS-117_ct"
    results = Path(args.results) / "rt_flow.md"
    if not plan.is_file() or not ct_dir.is_dir():
        sys.exit(f"{src} is not the --out folder of a full rt_flow.py run (no plan.seg.nrrd or LiTS-117_ct)")
    if not results.is_file():
        sys.exit(f"{results} (the earlier run's results, whose steps 1-6 are kept) does not exist")
    old = results.read_text(encoding="utf-8").splitlines()
    marker = "Steps 1-6 and 9 are those of the full run with this provenance"
    if marker in "\n".join(old):  # a read-back-only file already: its full run's provenance is kept as it is
        i = next(n for n, ln in enumerate(old) if ln.startswith(marker))
        full_prov = [ln for ln in old[i + 1:i + 12] if ln.startswith("  - ")]
    else:  # the full run's own file: its provenance block
        full_prov = ["  " + ln for ln in old[:20] if ln.startswith(("- date:", "- command:", "- machine:", "- torch",
                                                                     "- software:", "- git:"))]
    kept = [ln for ln in old if ln.startswith(("- 1-2.", "- 3.", "- 4.", "- 5.", "- 5b.", "- 6.", "- 9."))]
    intro = next((ln for ln in old if ln.startswith("Real CT (LiTS-117")), "")
    if not any(ln.startswith("- 6.") for ln in kept):
        sys.exit(f"{results} holds no steps 1-6 of a full run to keep")
    log = []

    def say(msg):
        print(msg, flush=True)
        log.append(msg)

    out = src / "readback"  # the earlier run's RS.dcm and SEG.dcm stay as they were
    out.mkdir(exist_ok=True)
    rows, _, _ = export_and_read_back(plan, ct_dir, out, read_segmentation(plan).masks, say)
    lines = ["# Radiotherapy flow on the bundled CT (scripts/rt_flow.py)", "", intro, "",
             (f"{marker} (steps 7-8 were run again with `--readback-only` on that run's approved plan and CT series: "
              "export with the code at the git state above, dciodvfy and every reader; no model ran for this file):"),
             ""] + full_prov + [""]
    lines += [ln for ln in kept if not ln.startswith("- 9.")] + [f"- {m}" for m in log]
    lines += [ln for ln in kept if ln.startswith("- 9.")]
    lines += [""] + table(rows) + ["", READERS_NOTE, "",
                                   ("Regenerate: `PYTHONPATH=MedSegSuite .venv/bin/python scripts/rt_flow.py --out OUT` "
                                    "(everything), then `... scripts/rt_flow.py --readback-only OUT` (steps 7-8 only)")]
    print(write_markdown(results, lines))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--slices", default="all", help="axial slab a:b (end exclusive) or 'all'")
    ap.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime threads")
    ap.add_argument("--propagation-table", choices=("auto", "yes", "no"), default="auto",
                    help="also write rt_propagation.md (scripts/rt_propagation_eval.py's table) from this run's "
                    "embeddings (auto: on the whole CT)")
    ap.add_argument("--out", default=None, help="folder for the DICOM files (default: a temporary one)")
    ap.add_argument("--results", default="docs/results")
    ap.add_argument("--image", default="docs/images/radiotherapy_overlay.png")
    ap.add_argument("--readback-only", metavar="OUT", default=None,
                    help="reuse the --out folder of an earlier full run: export its approved plan again, validate "
                    "and read back (steps 7-8), keep that run's other lines in --results/rt_flow.md; no model runs")
    args = ap.parse_args()
    if args.readback_only:
        return readback_only(args)
    import torch
    from medsegsuite.engine import LocalBackend
    from medsegsuite.engine.interface import run_job
    from medsegsuite.errors import InputError
    from medsegsuite.io import read_image
    from medsegsuite.progress import ProgressPrinter
    from medsegsuite.provenance import write_markdown
    from medsegsuite.rt import StructureSet, load_template
    from medsegsuite.sampledata import lits117_segmentation
    from medsegsuite.sampledata.dicom import export_lits117_dicom
    from medsegsuite.volume import SliceEngine, parse_slices
    from scipy import ndimage

    torch.set_num_threads(args.threads)
    out = Path(args.out or tempfile.mkdtemp(prefix="rt_flow_"))
    if out.exists():
        shutil.rmtree(out)
    log = []

    def say(msg):
        print(msg, flush=True)
        log.append(msg)

    t0 = time.time()
    ct_dir, _ = export_lits117_dicom(out)  # 1. the bundled CT as a DICOM series
    ct = read_image(ct_dir)  # 2. DICOM in
    meta = ct.meta["dicom"]
    say(f"1-2. CT series {meta['series_uid']} ({ct.shape}, frame of reference {meta['frame_of_reference_uid']})")
    ref = lits117_segmentation()
    eng = SliceEngine.for_volume(ct, "axial")
    slab = parse_slices(args.slices, eng.n_slices)
    whole = len(slab) == eng.n_slices
    lab3, _ = ndimage.label(ref.masks["tumour"])
    sizes = np.bincount(lab3.ravel())[1:]
    lesion_big = lab3 == 1 + int(np.argmax(sizes))  # the largest lesion of the manual reference
    lesion_slices = [k for k in range(eng.n_slices) if eng.slice(lesion_big, k).any()]
    # whole CT: the box goes on the middle slice of the largest lesion; a slab: on the slab's middle slice
    mid = lesion_slices[len(lesion_slices) // 2] if whole else slab[len(slab) // 2]
    ss = StructureSet(load_template("abdomen"), ct.geometry)  # 3. template
    say(f"3. template 'abdomen': {len(ss.template.structures)} structures, next: {ss.next_structure()}")
    with LocalBackend("cpu") as backend:
        # 4. Liver drafted by CoSAM (same-case model)
        t = time.time()
        r = run_job(backend, "cosam.segment", ct, {"model": "liver", "slices": slab},
                    on_event=ProgressPrinter("CoSAM liver", sys.stdout))
        liver = r.masks[r.info["structure"]]
        ss.write_ai("Liver", liver, "CoSAM (liver)")
        sel = np.zeros(ct.shape, bool)
        for k in slab:
            eng.put(sel, k, np.ones(eng.slice_shape, bool))
        d_liver = dice(liver & sel, ref.masks["liver"] & sel)
        ext = r.info.get("extent") or {}
        say(f"4. Liver drafted by CoSAM on axial slices {slab[0]}-{slab[-1]} in {time.time() - t:.0f} s "
            f"(encoder route {r.info.get('encoder_route')}, {len(r.info.get('slices', []))} slices segmented"
            + (f", extent pass every {ext.get('step')}th slice first" if ext else "") + "): "
            f"Dice {d_liver:.3f} vs the manual reference (SAME-CASE: the model was trained on LiTS-117)")
        # 5. GTVp from one box on the middle slice, propagated
        tum = eng.slice(ref.masks["tumour"], mid)
        lab, _ = ndimage.label(tum)
        big = lab == 1 + int(np.argmax(ndimage.sum(tum, lab, range(1, lab.max() + 1))))
        rr, cc = np.nonzero(big)
        box = [int(cc.min()), int(rr.min()), int(cc.max()) + 1, int(rr.max()) + 1]
        t = time.time()
        r = run_job(backend, "sam.propagate", ct, {"slice": mid, "box": box, "window": CT_WINDOW, "structure": "GTVp",
                                                   "max_slices": None if whole else max(mid - slab[0], slab[-1] - mid)},
                    on_event=ProgressPrinter("GTVp propagation", sys.stdout))
        gtv = r.masks["GTVp"] & sel
        ss.write_ai("GTVp", gtv, "LiteMedSAM box propagation")
        seed = np.zeros(ct.shape, bool)
        eng.put(seed, mid, big)
        lesion3d = lab3 == lab3[tuple(np.argwhere(seed)[0])]
        ls = [k for k in range(eng.n_slices) if eng.slice(lesion3d, k).any()]
        d_gtv = dice(gtv, lesion3d & sel)
        say(f"5. GTVp from one box {box} on slice {mid} (MODEL-FREE: LiteMedSAM pretrained by its authors, box "
            f"simulated from the manual reference), propagated to slices {r.info['slices'][0]}-{r.info['slices'][-1]} "
            f"in {time.time() - t:.0f} s (stopped: {r.info['stopped']}): Dice {d_gtv:.3f} vs that lesion of the "
            f"manual reference (slices {ls[0]}-{ls[-1]}" + (")" if whole else ", on the slab)"))
        if args.propagation_table == "yes" or (args.propagation_table == "auto" and whole):
            from rt_propagation_eval import propagation_rows, write_results

            t = time.time()
            try:
                prows = propagation_rows(backend, ct, ref, 12, ProgressPrinter("propagation table", sys.stdout))
                path = write_results(prows, args.results, 12, "PYTHONPATH=MedSegSuite .venv/bin/python scripts/rt_flow.py",
                                     "Computed by `scripts/rt_flow.py` on the CT read back from its DICOM export, reusing "
                                     "the slice embeddings of its CoSAM pass (`scripts/rt_propagation_eval.py` computes "
                                     "the same table on its own).")
                say(f"5b. propagation table (liver bounded to 12 slices each way; the largest lesion until it ends) in "
                    f"{time.time() - t:.0f} s: {path}; tumour Dice propagation "
                    f"{prows[1]['dice_propagation']:.3f} vs oracle {prows[1]['dice_oracle']:.3f} (MODEL-FREE)")
            except Exception as e:  # the flow's own results are written all the same
                say(f"5b. propagation table FAILED: {type(e).__name__}: {e}")
    # 6. review and approve; an AI write into an approved structure is refused
    for name in ("Liver", "GTVp"):
        ss.set_status(name, "reviewed", "Reviewer A")
        ss.set_status(name, "approved", "Approver B")
    try:
        ss.write_ai("Liver", np.zeros(ct.shape, bool), "CoSAM (liver)")
        refused = "NOT refused"
    except InputError as e:
        refused = f"refused: {e}"
    say(f"6. Liver and GTVp reviewed and approved; an AI write into Liver afterwards was {refused}")
    plan = ss.save(out / "plan.seg.nrrd")
    rows, _, ours_rs = export_and_read_back(plan, ct_dir, out, ss.seg.masks, say)
    # 9. overlay
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = eng.slice(ct.array, mid)
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.2))
    for ax, (title, masks) in zip(axes, [("exported RTSTRUCT read back", ours_rs.masks),
                                         ("manual LiTS reference", {"Liver": ref.masks["liver"],
                                                                    "GTVp": ref.masks["tumour"]})]):
        ax.imshow(np.clip(img, *CT_WINDOW), cmap="gray")
        for name, color in (("Liver", (0.87, 0.51, 0.4)), ("GTVp", (1.0, 0.0, 0.0))):
            ax.contour(eng.slice(masks[name], mid).astype(float), levels=[0.5], colors=[color], linewidths=1.5)
        if title.startswith("exported"):
            x0, y0, x1, y1 = box
            ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="yellow", lw=1, ls="--"))
        ax.set_title(title)
        ax.axis("off")
    fig.suptitle(f"LiTS-117 axial slice {mid}: Liver (CoSAM, approved), GTVp (box, yellow, + propagation, approved)")
    fig.tight_layout()
    Path(args.image).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.image, dpi=90)
    import os

    say(f"9. overlay {args.image}; total {time.time() - t0:.0f} s with {args.threads} thread(s) (machine shared by "
        f"~8 jobs on 2 cores; load average {os.getloadavg()[0]:.1f} at the end)")
    lines = ["# Radiotherapy flow on the bundled CT (scripts/rt_flow.py)", "",
             "Real CT (LiTS-117, manual reference). Liver by CoSAM: **same-case** (the shipped model was trained on "
             "LiTS-117). GTVp **model-free**: box-prompted LiteMedSAM (pretrained by its authors, not by this "
             "project) from one box simulated from the manual reference, propagated slice to slice. "
             + ("CoSAM and propagation ran on the whole CT (all 128 axial slices)." if whole else
                f"CoSAM and propagation ran on axial slices {slab[0]}-{slab[-1]} (`--slices {args.slices}`)."), ""]
    lines += [f"- {m}" for m in log]
    lines += [""] + table(rows) + ["", READERS_NOTE, "",
              "Regenerate: `PYTHONPATH=MedSegSuite .venv/bin/python scripts/rt_flow.py"
              + ("" if whole else f" --slices {args.slices}") + "`"]
    print(write_markdown(Path(args.results) / "rt_flow.md", lines))


if __name__ == "__main__":
    main()
