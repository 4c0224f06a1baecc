"""``medsegsuite scribble``: train from scribbles (MaCo), segment, evaluate, make scribbles."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .common import ProgressPrinter, add_backend_options, make_backend


def _train_schema():
    from ..engine.schema import Schema
    from ..scribble.params import TRAIN_PARAMS

    return Schema(TRAIN_PARAMS)


def _settings_args(p):
    """The scribble.train parameters as options, generated from the task's schema."""
    from ..engine.schema import add_cli_options

    add_cli_options(p, _train_schema(), group="training settings (defaults in docs/scribble.md)")


def register(sub):
    p = sub.add_parser("scribble", help="scribble-supervised segmentation (MaCo)",
                       description="Train a 2D network from scribbles with masked context modelling and "
                       "continuous pseudo labels (MaCo, arXiv 2408.12814), then segment volumes with it.")
    s = p.add_subparsers(dest="scribble_cmd", metavar="ACTION")

    t = s.add_parser("train", help="train a model from one or more scribbled images")
    t.add_argument("--image", action="append", required=True, metavar="IMG", help="image (repeat for more cases)")
    t.add_argument("--scribbles", action="append", required=True, metavar="SEG",
                   help=".seg.nrrd with one segment per class plus 'background' (repeat, one per --image), "
                   "or a labelmap with --classes and --unlabelled")
    t.add_argument("--unlabelled", type=int, default=255, help="unlabelled value of labelmap scribbles")
    t.add_argument("--init", metavar="MODEL", help="continue training from this model (re-training)")
    t.add_argument("--out", required=True, metavar="MODEL", help="output checkpoint (.pt)")
    _settings_args(t)
    add_backend_options(t)
    t.set_defaults(func=run_train)

    g = s.add_parser("segment", help="segment an image with a scribble-trained model")
    g.add_argument("--model", required=True, help="checkpoint path or registry id")
    g.add_argument("--image", required=True, metavar="IMG")
    g.add_argument("--out", required=True, metavar="SEG", help="output .seg.nrrd (segments named after the classes)")
    g.add_argument("--keep-largest", nargs="*", metavar="CLASS",
                   help="keep only the largest connected piece of these classes (no names: all)")
    add_backend_options(g)
    g.set_defaults(func=run_segment)

    e = s.add_parser("eval", help="MaCo vs Grow from seeds vs full supervision on the same synthetic scribbles "
                     "(LiTS-117 and, when fetched, TotalSegmentator's CTs)")
    e.add_argument("--out", default="docs/results/scribble.md", help="markdown table to write (and .json beside it)")
    e.add_argument("--cases", nargs="+", default=["lits117", "ts-ct-native", "ts-ct-contrast"],
                   choices=["lits117", "ts-ct-native", "ts-ct-contrast"])
    e.add_argument("--styles", nargs="+", choices=["annotator", "skeleton", "every4"], help="default: all")
    e.add_argument("--methods", nargs="+", choices=["growcut", "maco", "maco-cpl-ce", "maco-nomcm", "maco-2d", "full"],
                   help="default: all")
    e.add_argument("--iterations", type=int, help="training iterations per run (default: the Quick recipe's, 600)")
    e.add_argument("--mcm-seeds", type=int, default=3,
                   help="training seeds for MaCo with and without MCM on LiTS annotator scribbles (default 3)")
    e.add_argument("--workers", type=int, default=1, help="runs at once, each in its own process (default 1)")
    e.add_argument("--resume", action="store_true", help="keep the runs already in --out's .json (same iterations) "
                   "and run only the missing ones (complete a long evaluation over several invocations)")
    add_backend_options(e)
    e.set_defaults(func=run_eval)

    m = s.add_parser("make-scribbles", help="synthesise realistic scribbles from full labels (for evaluation)")
    m.add_argument("--labels", required=True, help="labelmap or .seg.nrrd with the full labels")
    m.add_argument("--classes", nargs="+", help="segments to scribble (default: all); a labelmap's labels "
                   "are named label_<v> unless it has a .labels.json")
    m.add_argument("--slices", default="every:16", help="'every:K', 'a:b' or a list (default every:16), "
                   "counted on the canonical grid of the plane (axial: inferior to superior)")
    m.add_argument("--plane", default="axial", choices=["axial", "coronal", "sagittal"],
                   help="slice plane (default axial), found from the labels' direction matrix")
    m.add_argument("--fraction", type=float, default=0.8, help="part of each structure a stroke covers")
    m.add_argument("--kinds", nargs="+", default=["skeleton", "core", "random"])
    m.add_argument("--width", type=int, default=1, help="stroke width in voxels")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--out", required=True, metavar="SEG", help="output .seg.nrrd")
    m.set_defaults(func=run_make)
    p.set_defaults(func=lambda a: p.print_help())


def _settings(args) -> dict:
    from ..engine.schema import params_from_cli

    return params_from_cli(args, _train_schema())


def run_train(args):
    import numpy as np

    from ..engine.interface import run_job
    from ..errors import InputError
    from ..io import read_image
    from ..scribble.io import read_scribbles

    if len(args.image) != len(args.scribbles):
        raise InputError(f"give one --scribbles per --image ({len(args.image)} images, {len(args.scribbles)} "
                         "scribble files)")
    images = [read_image(p) for p in args.image]
    sets = [read_scribbles(s, img, args.classes, args.unlabelled) for s, img in zip(args.scribbles, images)]
    classes = sets[0].classes
    for path, st in zip(args.scribbles[1:], sets[1:]):
        if st.classes != classes:
            raise InputError(f"{path} names classes {st.classes}, the first case {classes}; use the same names")
    inputs = {"scribbles": sets[0].labels}
    params = {**_settings(args), "classes": classes}
    for n, (img, st) in enumerate(zip(images[1:], sets[1:]), start=1):
        inputs[f"image_{n}"] = img.array
        inputs[f"scribbles_{n}"] = st.labels
        params.setdefault("case_geometry", {})[str(n)] = {"spacing": list(img.geometry.spacing),
                                                          "direction": [list(r) for r in img.direction]}
    if args.init:
        _model_input(args.init, inputs, params, "init_model")
    backend = make_backend(args)
    try:
        res = run_job(backend, "scribble.train", images[0], params, inputs, on_event=ProgressPrinter("train"))
    finally:
        backend.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(np.asarray(res.arrays["model"], dtype=np.uint8).tobytes())
    from ..scribble.checkpoint import read_model_dict

    _, card = read_model_dict(path=out)  # verifies the file loads with weights_only=True
    out.with_suffix(".json").write_text(json.dumps(card, indent=2), encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB): classes {classes}, "
          f"{res.info['training']['slices']} scribbled slices, {res.info['training']['seconds']} s")


def _model_input(model: str, inputs: dict, params: dict, key: str):
    """A local file travels as bytes (so --server works); anything else is a registry id."""
    import numpy as np

    p = Path(model)
    if p.is_file():
        inputs[key] = np.frombuffer(p.read_bytes(), dtype=np.uint8).copy()
    else:
        params[key] = model


def run_segment(args):
    from ..engine.interface import run_job
    from ..io import Segmentation, read_image, write_segmentation

    image = read_image(args.image)
    inputs, params = {}, {}
    _model_input(args.model, inputs, params, "model")
    if args.keep_largest is not None:
        params["keep_largest"] = args.keep_largest or ["all"]
    backend = make_backend(args)
    try:
        res = run_job(backend, "scribble.segment", image, params, inputs, on_event=ProgressPrinter("segment"))
    finally:
        backend.close()
    seg = Segmentation(image.geometry, dict(res.masks))
    write_segmentation(seg, args.out)
    vols = {n: int(m.sum()) for n, m in res.masks.items()}
    print(f"wrote {args.out}: voxels per segment {vols}")


def run_eval(args):
    from ..scribble.evaluation import run_evaluation

    backend = make_backend(args)
    try:
        run_evaluation(args.out, backend, cases=args.cases, styles=args.styles, methods=args.methods,
                       iterations=args.iterations, mcm_seeds=args.mcm_seeds, workers=args.workers, resume=args.resume,
                       log=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        backend.close()
    print(f"wrote {args.out}")


def run_make(args):
    from ..io import read_segmentation, write_segmentation
    from ..volume import parse_slices
    from ..errors import InputError
    from ..scribble.generator import make_scribbles, scribble_stats
    from ..scribble.labels import scribbles_to_segmentation
    from ..scribble.preprocess import slice_engine
    import numpy as np

    seg = read_segmentation(args.labels)
    classes = args.classes or [n for n in seg.names if n.lower() != "background"]
    dense = np.zeros(seg.geometry.shape, dtype=np.uint8)
    for c, name in enumerate(classes, start=1):
        dense[seg.require(name)] = c
    if not np.any(dense):
        raise InputError(f"{args.labels}: the segments {classes} are empty")
    eng = slice_engine(dense.shape, seg.geometry.direction, args.plane)
    slices = parse_slices(args.slices, eng.n_slices)
    sc = make_scribbles(dense, len(classes) + 1, slices, args.plane, seed=args.seed, kinds=args.kinds,
                        fraction=args.fraction, width=args.width, spacing=seg.geometry.spacing,
                        direction=seg.geometry.direction)
    write_segmentation(scribbles_to_segmentation(sc, classes, seg.geometry), args.out)
    stats = scribble_stats(sc, dense, len(classes) + 1, args.plane, seg.geometry.direction)
    print(f"wrote {args.out}: scribbles on {len(slices)} {args.plane} slices; fraction of each "
          "class scribbled on those slices: " + ", ".join(
              f"{n} {stats[c]:.3f}" for c, n in enumerate(["background"] + classes)))
