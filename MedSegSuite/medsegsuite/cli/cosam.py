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


def _schema(name):
    from ..cosam.params import SEGMENT_PARAMS, TRAIN_PARAMS
    from ..engine.schema import Schema

    return Schema({"segment": SEGMENT_PARAMS, "train": TRAIN_PARAMS}[name])


# options the CLI writes by hand (files, or a lo,hi text form kept from earlier versions)
TRAIN_BY_HAND = ("structure", "window", "case_names")
SEGMENT_BY_HAND = ("window", "roi")


def register(sub):
    from ..engine.schema import add_cli_options

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
    t.add_argument("--out", required=True, metavar="MODEL.pt", help="checkpoint to write (+ MODEL.json model card)")
    t.add_argument("--window", help="intensity window lo,hi (default: CT -160,240 for CT-like data, else percentiles)")
    add_cli_options(t, _schema("train"), exclude=TRAIN_BY_HAND, group="training")
    add_backend_options(t)
    t.set_defaults(func=run_train)

    g = s.add_parser("segment", help="segment a structure with a CoSAM model, no prompt needed")
    g.add_argument("--image", required=True, metavar="IMG")
    g.add_argument("--out", required=True, metavar="SEG.seg.nrrd")
    g.add_argument("--points", nargs="+", metavar="x,y,slice,label",
                   help="user clicks in the plane's slices: column, row, slice index, 1 (+) or 0 (-); "
                   "they are never overridden")
    g.add_argument("--roi", help="voxel box i0,i1,j0,j1,k0,k1 (end exclusive)")
    g.add_argument("--window", help="intensity window lo,hi (default: the model card's)")
    g.add_argument("--rounds-out", metavar="DIR", help="also write every round's mask as DIR/round<t>.seg.nrrd")
    add_cli_options(g, _schema("segment"), exclude=SEGMENT_BY_HAND, group="segmentation")
    add_backend_options(g)
    g.set_defaults(func=run_segment)
    e = s.add_parser("eval", help="every CoSAM figure over training seeds: LiTS-117 interleaved and far-block "
                     "splits, and cross-case on real CTs (pseudo labels) -> docs/results/cosam.md")
    e.add_argument("--out", default="docs/results/cosam.md", metavar="TABLE.md")
    e.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    e.add_argument("--splits", nargs="+", default=["interleaved:4", "block:0.5"])
    e.add_argument("--embedding-cache", metavar="FILE.pt", help="keep LiTS-117's encoder outputs here across runs")
    e.add_argument("--save-dir", metavar="DIR", help="keep every trained model here (default: a temporary folder)")
    e.add_argument("--jobs", type=int, default=1, help="models trained at once, each in its own process")
    e.add_argument("--threads", type=int, default=1, help="torch threads per model (default 1)")
    e.add_argument("--no-cross-case", action="store_true", help="skip the real CTs")
    e.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="change the training recipe, e.g. --set steps=200 --set lr=1e-4 (see cosam/evaluate.py)")
    e.set_defaults(func=run_eval)
    c = s.add_parser("crosscase", help="a CoSAM model on TotalSegmentator's real CTs (pseudo liver labels), each "
                     "field-of-view mode next to box-prompted LiteMedSAM -> docs/results/cosam_crosscase.md")
    c.add_argument("--model", nargs="+", default=["liver"], help="registry ids or checkpoint files (default: liver)")
    c.add_argument("--out", default="docs/results/cosam_crosscase.md", metavar="TABLE.md")
    c.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    c.set_defaults(func=run_crosscase)
    p.set_defaults(func=lambda a: p.print_help())


def run_crosscase(args):
    import torch

    from ..cosam.crosscase import cross_case_results
    from ..cosam.evaluate import cross_markdown
    from ..errors import MissingDataError
    from ..provenance import write_json, write_markdown

    torch.set_num_threads(args.threads)
    models = [_abs(m) if Path(m).exists() else m for m in args.model]
    cross = cross_case_results(models)
    if cross is None:
        raise MissingDataError("no real CT reached this machine: run 'medsegsuite sampledata fetch' first")
    head = ["# CoSAM cross-case: real CTs the model never saw", "",
            f"Written by `medsegsuite cosam crosscase --model {' '.join(args.model)}` "
            "(`MedSegSuite/medsegsuite/cosam/crosscase.py`); models: " + ", ".join(f"`{m}`" for m in args.model)
            + ". Each row: mean per-slice Dice over the slices holding *pseudo* liver (± sd over the models when "
            "several are given).", ""]
    out = Path(args.out)
    write_markdown(out, head + cross_markdown(cross)[2:])
    write_json(out.with_suffix(".json"), {"models": args.model, "cross_case": cross})
    print(f"wrote {out}")


def run_eval(args):
    from ..cosam.evaluate import RECIPE, run
    from ..errors import InputError

    recipe = {}
    for kv in args.set:
        k, _, v = kv.partition("=")
        if k not in RECIPE:
            raise InputError(f"--set {kv}: unknown recipe key; known: {', '.join(RECIPE)}")
        recipe[k] = type(RECIPE[k])(float(v)) if isinstance(RECIPE[k], int) else float(v)
    cache = _abs(args.embedding_cache) if args.embedding_cache else None
    run(args.out, tuple(args.seeds), tuple(args.splits), recipe, cache, args.save_dir, args.threads, args.jobs,
        not args.no_cross_case)
    print(f"wrote {args.out}")


def _abs(path):
    return str(Path(path).resolve()) if path else path


def run_segment(args):
    import numpy as np

    from ..engine.interface import run_job
    from ..engine.schema import params_from_cli
    from ..io import Segmentation, read_image, write_segmentation

    schema = _schema("segment")
    params = params_from_cli(args, schema, exclude=SEGMENT_BY_HAND)
    if args.roi:
        params["roi"] = args.roi
    if args.window:
        params["window"] = args.window
    if params.get("backbone_checkpoint") and Path(params["backbone_checkpoint"]).exists():
        params["backbone_checkpoint"] = _abs(params["backbone_checkpoint"])
    if args.rounds_out:
        params["return_rounds"] = True
    schema.validate(params, "cosam segment")  # bad options fail here, before the image is read
    img = read_image(args.image)
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
    acc = [v["accepted"] for v in r.info["per_slice"].values()] or [0]
    interp = len(r.info.get("interpolated", []))
    print(f"wrote {out}: '{name}' on {len(r.info['per_slice'])} {r.info['plane']} slices"
          + (f" (+ {interp} interpolated between agreeing slices)" if interp else "")
          + f", rounds accepted per slice: mean {np.mean(acc):.2f}, max {max(acc)}; "
          f"encoder {r.info['seconds_encode']:.1f} s, loop {r.info['seconds_decode']:.1f} s")


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
    from ..engine.schema import params_from_cli
    from ..errors import InputError
    from ..models import save_checkpoint

    cases = _cases(args)
    if args.domains and len(args.domains) != len(cases):
        raise InputError(f"--domains needs one tag per case ({len(cases)}), got {len(args.domains)}")
    inputs = {}
    for n, (_, img, mask) in enumerate(cases):
        inputs[f"image{n}"] = img.array.astype(np.float32)
        inputs[f"label{n}"] = mask.astype(np.uint8)
        inputs[f"direction{n}"] = np.asarray(img.direction, np.float64)  # the engine finds the plane from it
        inputs[f"spacing{n}"] = np.asarray(img.spacing, np.float64)  # the card records the training scale
    schema = _schema("train")
    params = params_from_cli(args, schema, exclude=TRAIN_BY_HAND)
    params.update(structure=args.structure, case_names=[c[0] for c in cases],
                  domains=args.domains or ["default"] * len(cases))
    if args.window:
        params["window"] = args.window
    for key in ("backbone_checkpoint", "embedding_cache"):
        if params.get(key) and (key == "embedding_cache" or Path(params[key]).exists()):
            params[key] = _abs(params[key])
    schema.validate(params, "cosam train")  # bad options fail here, before the cases are sent
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
