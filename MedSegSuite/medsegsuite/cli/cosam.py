"""``medsegsuite cosam``: train a CoSAM model, or segment an image with one (the shipped ``liver``)."""
from __future__ import annotations

import json
from pathlib import Path

from .common import ProgressPrinter, add_backend_options, make_backend


def _floats(text, n=None, what="value"):
    from ..errors import InputError

    try:
        v = [float(t) for t in str(text).split(",")]
    except ValueError:
        raise InputError(f"{what} '{text}' must be comma-separated numbers") from None
    if n is not None and len(v) != n:
        raise InputError(f"{what} '{text}' needs {n} comma-separated numbers")
    return v


def register(sub):
    p = sub.add_parser("cosam", help="self-correcting SAM: train a structure model or segment with one",
                       description="CoSAM (arXiv 2411.10136): a prompt-free coarse mask from a fine-tuned SAM "
                       "decoder, corrected in rounds by a learned error decoder. See docs/cosam.md.")
    s = p.add_subparsers(dest="cosam_command", metavar="ACTION")

    t = s.add_parser("train", help="train the decoders on image/label pairs (the image encoder stays frozen)")
    t.add_argument("--images", nargs="+", metavar="IMG", help="images (NIfTI/NRRD/MHA/DICOM folder)")
    t.add_argument("--labels", nargs="+", metavar="SEG", help="labels, one per image (.seg.nrrd or labelmap)")
    t.add_argument("--sample", choices=["lits117"], help="train on a bundled sample case instead of files")
    t.add_argument("--structure", required=True, help="segment name to learn (e.g. liver)")
    t.add_argument("--label-values", help="labelmap values that form the structure, e.g. 1,2 (default: by name)")
    t.add_argument("--domains", nargs="+", metavar="TAG",
                   help="a domain tag per case (scanner/centre), reported per tag")
    t.add_argument("--out", required=True, metavar="MODEL.pt", help="checkpoint to write (+ MODEL.json model card)")
    t.add_argument("--axis", type=int, default=2, help="slice axis (default 2, axial for RAS-ordered volumes)")
    t.add_argument("--window", help="intensity window lo,hi (default: CT -160,240 for CT-like data, else percentiles)")
    t.add_argument("--split", default="interleaved:4",
                   help="'interleaved:K' (every K-th slice held out, default K=4) or 'block:F' (train on the first "
                   "fraction F of the slices, validate on a far block after a gap)")
    t.add_argument("--steps", type=int, default=300, help="phase-1 steps (coarse head + error decoder)")
    t.add_argument("--refine-steps", type=int, help="phase-2 steps (refine head; default = --steps)")
    t.add_argument("--backbone", default="litemedsam",
                   help="litemedsam (default), sam_vit_b/l/h or medsam (with --backbone-checkpoint), tiny_sam (tests)")
    t.add_argument("--backbone-checkpoint", help="official SAM/MedSAM checkpoint file for those backbones")
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--lr", type=float, default=1e-4)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--embedding-cache", metavar="FILE", help="keep encoder outputs in FILE to reuse across runs")
    add_backend_options(t)
    t.set_defaults(func=run_train)

    g = s.add_parser("segment", help="segment a structure with a CoSAM model, no prompt needed")
    g.add_argument("--image", required=True, metavar="IMG")
    g.add_argument("--model", default="liver", help="registry id (default: liver) or checkpoint path")
    g.add_argument("--out", required=True, metavar="SEG.seg.nrrd")
    g.add_argument("--structure", help="output segment name (default: the model's structure)")
    g.add_argument("--iterations", type=int, default=4, help="correction rounds T (default 4; 0 = coarse only)")
    g.add_argument("--points", nargs="+", metavar="x,y,slice,label",
                   help="user clicks: column, row, slice index, 1 (+) or 0 (-); they are never overridden")
    g.add_argument("--axis", type=int, default=2)
    g.add_argument("--slices", default="all", help="'all', 'every:K', 'a:b' or a list")
    g.add_argument("--roi", help="voxel box i0,i1,j0,j1,k0,k1 (end exclusive)")
    g.add_argument("--window", help="intensity window lo,hi (default: the model card's)")
    g.add_argument("--propagate", action="store_true", help="let each slice's result seed its neighbour")
    g.add_argument("--rounds-out", metavar="DIR", help="also write every round's mask as DIR/round<t>.seg.nrrd")
    g.add_argument("--backbone-checkpoint", help="official SAM/MedSAM checkpoint for models trained on those")
    add_backend_options(g)
    g.set_defaults(func=run_segment)
    p.set_defaults(func=lambda a: p.print_help())


def run_segment(args):
    import numpy as np

    from ..engine.interface import run_job
    from ..io import Segmentation, read_image, write_segmentation

    img = read_image(args.image)
    params = {"model": args.model, "iterations": args.iterations, "axis": args.axis, "slices": args.slices}
    if args.structure:
        params["structure"] = args.structure
    if args.roi:
        params["roi"] = [int(v) for v in _floats(args.roi, 6, "--roi")]
    if args.window:
        params["window"] = _floats(args.window, 2, "--window")
    if args.propagate:
        params["propagate"] = True
    if args.backbone_checkpoint:
        params["backbone_checkpoint"] = str(Path(args.backbone_checkpoint).resolve())
    inputs = {}
    if args.points:
        inputs["points"] = np.array([_floats(p, 4, "--points") for p in args.points])
    backend = make_backend(args)
    try:
        r = run_job(backend, "cosam.segment", img, params, inputs, on_event=ProgressPrinter("cosam"))
    finally:
        backend.close()
    name = r.info["structure"]
    out = write_segmentation(Segmentation(img.geometry, {name: r.masks[name]}), args.out)
    if args.rounds_out:
        d = Path(args.rounds_out)
        d.mkdir(parents=True, exist_ok=True)
        for key, arr in sorted(r.arrays.items()):
            write_segmentation(Segmentation(img.geometry, {name: arr > 0}), d / f"{key.split('_')[-1]}.seg.nrrd")
    acc = [v["accepted"] for v in r.info["per_slice"].values()]
    print(f"wrote {out}: '{name}' on {len(acc)} slices, rounds accepted per slice: mean {np.mean(acc):.2f}, "
          f"max {max(acc)}; encoder {r.info['seconds_encode']:.1f} s, loop {r.info['seconds_decode']:.1f} s")


def _cases(args):
    from ..errors import InputError
    from ..io import read_image, read_segmentation

    if args.sample == "lits117":
        from ..sampledata import lits117

        ct, ref = lits117()
        if args.structure not in ref.masks:
            raise InputError(f"LiTS-117 has {', '.join(ref.masks)}, not '{args.structure}'")
        return [("LiTS-117", ct, ref.masks[args.structure])]
    if not args.images or not args.labels or len(args.images) != len(args.labels):
        raise InputError("give --images and --labels of equal length (one label file per image), or --sample")
    cases = []
    for ip, lp in zip(args.images, args.labels):
        img = read_image(ip)
        seg = read_segmentation(lp)
        img.geometry.require_same(seg.geometry, f"labels {lp}")
        if args.label_values:
            import numpy as np

            lab = read_image(lp).array
            mask = np.isin(lab, [int(v) for v in _floats(args.label_values, None, "--label-values")])
        else:
            if args.structure not in seg.masks:
                raise InputError(f"{lp} has no segment '{args.structure}' (it has {', '.join(seg.masks) or 'none'}); "
                                 "name the labelmap values with --label-values")
            mask = seg.masks[args.structure]
        cases.append((Path(ip).name, img, mask))
    return cases


def run_train(args):
    import numpy as np

    from ..engine.interface import run_job
    from ..errors import InputError
    from ..models import save_checkpoint

    cases = _cases(args)
    if args.domains and len(args.domains) != len(cases):
        raise InputError(f"--domains needs one tag per case ({len(cases)}), got {len(args.domains)}")
    window = _floats(args.window, 2, "--window") if args.window else None
    inputs, shapes = {}, []
    for n, (_, img, mask) in enumerate(cases):
        inputs[f"image{n}"] = img.array.astype(np.float32)
        inputs[f"label{n}"] = mask.astype(np.uint8)
        shapes.append(list(img.shape))
    params = {"structure": args.structure, "axis": args.axis, "window": window, "split": args.split,
              "steps": args.steps, "refine_steps": args.refine_steps, "batch": args.batch,
              "backbone": args.backbone,
              "backbone_checkpoint": (str(Path(args.backbone_checkpoint).resolve())
                                      if args.backbone_checkpoint else None),
              "lr": args.lr, "seed": args.seed,
              "case_names": [c[0] for c in cases], "domains": args.domains or ["default"] * len(cases),
              "embedding_cache": str(Path(args.embedding_cache).resolve()) if args.embedding_cache else None}
    backend = make_backend(args)
    try:
        r = run_job(backend, "cosam.train", None, params, inputs, on_event=ProgressPrinter("cosam train"))
    finally:
        backend.close()
    import torch

    card = r.info["card"]
    sd = {k[3:]: torch.from_numpy(np.asarray(v)) for k, v in r.arrays.items() if k.startswith("sd.")}
    save_checkpoint(args.out, r.info["architecture"], sd, card)
    v = card["validation"]
    n = v["slices"] if isinstance(v["slices"], int) else len(v["slices"])
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1e6:.1f} MB): held-out Dice coarse {v['coarse']:.4f}, "
          f"final {v['final']:.4f} on {n} slices; card {Path(args.out).with_suffix('.json')}")
    print(json.dumps(v["dice_by_round"]))
