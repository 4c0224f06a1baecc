"""``medsegsuite dyna``: DyNA night adaptation and model versions (the day side is
``medsegsuite tta --method dyna``)."""
from __future__ import annotations

import json
from pathlib import Path

from .common import ProgressPrinter, add_backend_options, make_backend
from .tta import parse_options


def register(sub):
    p = sub.add_parser("dyna", help="DyNA: night adaptation on the day's cases, model versions",
                       description="By day 'medsegsuite tta --method dyna' segments with VPTTA prompts and keeps "
                       "each case; 'dyna night' self-trains a NEW model version on them (teacher/student/global "
                       "student, no source data) and writes a report comparing it with its parent. Nothing is "
                       "deployed until you choose it with 'dyna use'. See docs/tta.md.")
    s = p.add_subparsers(dest="dyna_command", metavar="ACTION")
    n = s.add_parser("night", help="fine-tune on the day's cases, write a new version (the old one stays)")
    n.add_argument("--model", default="liver-source", help="parent model: registry id or checkpoint")
    n.add_argument("--cases", metavar="DIR",
                   help="folder of images (on the backend machine); default: the model's day queue")
    n.add_argument("--out", metavar="MODEL2.pt", help="new version checkpoint (default: the version folder)")
    n.add_argument("-o", "--option", action="append", metavar="KEY=VALUE",
                   help="night option: iterations, batch, lr, teacher_momentum, global_momentum, confidence, seed")
    add_backend_options(n)
    n.set_defaults(func=run_night)
    st = s.add_parser("status", help="the day's queue, kept versions and the deployed one")
    st.add_argument("--model", default="liver-source")
    add_backend_options(st)
    st.set_defaults(func=run_status)
    u = s.add_parser("use", help="deploy a kept version (or the original model id)")
    u.add_argument("--model", default="liver-source")
    u.add_argument("--version", required=True)
    add_backend_options(u)
    u.set_defaults(func=run_use)
    p.set_defaults(func=lambda a: p.print_help())


def _cases(folder) -> list[str]:
    from ..errors import InputError
    from ..io.image import is_image_path

    d = Path(folder)
    if not d.is_dir():
        raise InputError(f"--cases {folder} is not a folder")
    files = sorted(str(f) for f in d.iterdir() if is_image_path(f))
    if not files:
        raise InputError(f"no images (NIfTI/NRRD/MHA/DICOM folders) in {folder}")
    return files


def _run(args, task, params, label):
    from ..engine.interface import run_job

    backend = make_backend(args)
    try:
        return run_job(backend, task, None, params, on_event=ProgressPrinter(label))
    finally:
        backend.close()


def run_night(args):
    params = {"model": args.model, "options": parse_options(args.option)}
    if args.cases:
        params["cases"] = _cases(args.cases)
    if args.out:
        params["out"] = str(Path(args.out).resolve())
    info = _run(args, "dyna.night", params, "dyna night").info
    c = info["comparison"]
    print(f"new version {info['new']} (parent {info['parent_id']}, {info['cases']} case(s), {info['seconds']} s)")
    print(f"  mean entropy {c['mean_entropy']['parent']:.4f} -> {c['mean_entropy']['new']:.4f}; agreement Dice "
          f"{c['agreement_dice']:.3f}; report {Path(info['new']).with_suffix('').as_posix()}.report.json")
    print(f"  deployed is still: {info['deployed']}  (choose: medsegsuite dyna use --model {args.model} "
          f"--version {Path(info['new']).stem})")


def run_status(args):
    print(json.dumps(_run(args, "dyna.status", {"model": args.model}, "dyna status").info, indent=1))


def run_use(args):
    info = _run(args, "dyna.use", {"model": args.model, "version": args.version}, "dyna use").info
    print(f"{args.model}: deployed {info['deployed']}")
