"""``medsegsuite tta``: segment a volume with a source model adapted to it at test time
(none | tent | vptta | grata | dyna); ``medsegsuite tta eval`` writes the multi-centre table and
``medsegsuite tta train-source`` rebuilds the shipped source models."""
from __future__ import annotations

import json
from pathlib import Path

from .common import ProgressPrinter, add_backend_options, make_backend

from ..tta.options import METHODS

METHOD_CHOICES = list(METHODS)


def parse_options(items) -> dict:
    """``key=value`` pairs (values as JSON where they parse: numbers, true/false, lists)."""
    from ..errors import InputError

    out = {}
    for it in items or []:
        if "=" not in it:
            raise InputError(f"option '{it}' must look like key=value (e.g. lr=0.01)")
        k, v = it.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def register(sub):
    p = sub.add_parser(
        "tta", help="test-time adaptation: segment a case from another scanner with a frozen source model",
        description="Slice-wise segmentation with a source model (liver-source, brain-source or a checkpoint), "
        "adapted to the case: none, tent, vptta (Fourier prompt + BN statistics), grata (gradient alignment) or "
        "dyna (VPTTA by day, the case kept for 'medsegsuite dyna night'). Writes the adapted mask as "
        "'<structure>' and the plain one as '<structure> (before)'. Sub-commands: eval, train-source. "
        "See docs/tta.md.",
        epilog="examples:\n  medsegsuite tta --model brain-source --method vptta --image t1.nii.gz --out brain.seg.nrrd\n"
        "  medsegsuite tta eval --out docs/results/tta.md\n  medsegsuite tta train-source",
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    from ..engine.schema import Schema, add_cli_options
    from ..tta.tasks import ADAPT_PARAMS

    add_cli_options(p, Schema(ADAPT_PARAMS))
    p.add_argument("--image", metavar="IMG", help="image (NIfTI/NRRD/MHA/DICOM folder)")
    p.add_argument("--out", metavar="SEG.seg.nrrd", help="segmentation to write")
    p.add_argument("--report", metavar="J.json", help="JSON report: per-slice entropy/confidence before and after")
    p.add_argument("-o", "--option", action="append", metavar="KEY=VALUE",
                   help="method option, repeatable (e.g. -o lr=0.01 -o alpha=0.02); see docs/tta.md")
    add_backend_options(p)
    p.set_defaults(func=run_adapt, _tta_parser=p)
    s = p.add_subparsers(dest="tta_command", metavar="ACTION")

    e = s.add_parser("eval", help="like-for-like evaluation: physical shifts (simulated) on LiTS-117 and Colin27, "
                     "real cross-case T1 MRs with deepbet pseudo masks")
    e.add_argument("--out", default="docs/results/tta.md", metavar="TABLE.md")
    e.add_argument("--datasets", nargs="+", default=["liver-source", "brain-source"], help="source models to evaluate")
    e.add_argument("--methods", nargs="+", default=["none", "tent", "vptta", "grata", "dyna"], choices=METHOD_CHOICES)
    e.add_argument("--shifts", nargs="+", help="only these physical shifts (default: all of each modality)")
    e.add_argument("--no-real", action="store_true", help="skip the real cross-case MRs (they need "
                   "'medsegsuite sampledata fetch' and deepbet)")
    e.add_argument("--no-loco", action="store_true", help="skip the leave-one-case-out brain models on the real "
                   "MRs (trained on first use, a few minutes each, then cached)")
    e.add_argument("--night-iterations", type=int, default=12,
                   help="DyNA night iterations (batch 4) per case (default 12)")
    e.add_argument("--workers", type=int, default=1,
                   help="processes for the evaluation's independent parts (source models, real MRs); default 1")
    e.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: 128 px slices gain little from more on a busy machine)")
    e.set_defaults(func=run_eval)

    t = s.add_parser("train-source", help="rebuild the shipped source models into Resources/Models")
    t.add_argument("--only", nargs="+", choices=["liver-source", "brain-source"])
    t.add_argument("--epochs", type=int)
    t.add_argument("--out", help="folder (default: Resources/Models of the source tree)")
    t.set_defaults(func=run_train)


def run_adapt(args):
    from ..engine.interface import run_job
    from ..errors import InputError
    from ..io import Segmentation, read_image, write_segmentation

    if not args.image or not args.out:
        args._tta_parser.print_usage()
        raise InputError("medsegsuite tta needs --image and --out (or a sub-command: eval, train-source)")
    from ..engine.schema import Schema, params_from_cli
    from ..tta.tasks import ADAPT_PARAMS

    image = read_image(args.image)
    params = {**params_from_cli(args, Schema(ADAPT_PARAMS)), "options": parse_options(args.option)}
    method = params.get("method", "vptta")
    backend = make_backend(args)
    try:
        res = run_job(backend, "tta.adapt", image, params, on_event=ProgressPrinter(f"tta {method}"))
    finally:
        backend.close()
    seg = Segmentation(image.geometry, res.masks)
    write_segmentation(seg, args.out)
    info = res.info
    print(f"wrote {args.out}: segments {', '.join(res.masks)}; mean entropy {info['mean_entropy_before']:.4f} "
          f"before -> {info['mean_entropy_after']:.4f} after ({info['method']})")
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps({"image": str(args.image), **info}, indent=1), encoding="utf-8")
        print(f"wrote {args.report}")


def run_eval(args):
    from ..tta.evaluate import run_evaluation

    run_evaluation(args.out, datasets=args.datasets, methods=args.methods, night_iterations=args.night_iterations,
                   threads=args.threads, real=not args.no_real, shifts=args.shifts, workers=args.workers,
                   loco=not args.no_loco)


def run_train(args):
    from ..models.registry import EXTENSION_MODELS
    from ..tta.train import SOURCES, train_source, write_registry

    out = Path(args.out) if args.out else EXTENSION_MODELS
    for mid in args.only or SOURCES:
        print("wrote", train_source(mid, out, args.epochs))
    print("wrote", write_registry(out))
