"""``medsegsuite dyna``: DyNA night adaptation and model versions (the day side is
``medsegsuite tta --method dyna``)."""
from __future__ import annotations

import json
from pathlib import Path

from .common import ProgressPrinter, add_backend_options, make_backend
from .tta import parse_options


def register(sub):
    from ..engine.schema import Schema, add_cli_options
    from ..tta.options import NIGHT_OPTIONS
    from ..tta.tasks import NIGHT_PARAMS, STATUS_PARAMS, USE_PARAMS

    p = sub.add_parser("dyna", help="DyNA: night adaptation on the day's cases, model versions",
                       description="By day 'medsegsuite tta --method dyna' segments with VPTTA prompts and keeps "
                       "each case; 'dyna night' self-trains a NEW model version on them (teacher/student/global "
                       "student, no source data) and writes a report comparing it with its parent. Nothing is "
                       "deployed until you choose it with 'dyna use'. See docs/tta.md.")
    s = p.add_subparsers(dest="dyna_command", metavar="ACTION")
    n = s.add_parser("night", help="fine-tune on the day's cases, write a new version (the old one stays)")
    add_cli_options(n, Schema(NIGHT_PARAMS))
    n.add_argument("-o", "--option", action="append", metavar="KEY=VALUE",
                   help="night option, repeatable: " + ", ".join(f"{k} (default {v})" for k, v in NIGHT_OPTIONS.items()))
    add_backend_options(n)
    n.set_defaults(func=run_night)
    st = s.add_parser("status", help="the day's queue, kept versions and the deployed one")
    add_cli_options(st, Schema(STATUS_PARAMS))
    add_backend_options(st)
    st.set_defaults(func=run_status)
    u = s.add_parser("use", help="deploy a kept version (or the original model id)")
    add_cli_options(u, Schema(USE_PARAMS))
    add_backend_options(u)
    u.set_defaults(func=run_use)
    p.set_defaults(func=lambda a: p.print_help())


def _params(args, task: str) -> dict:
    from ..engine.schema import Schema, params_from_cli
    from ..tta import tasks

    return params_from_cli(args, Schema({"dyna.night": tasks.NIGHT_PARAMS, "dyna.status": tasks.STATUS_PARAMS,
                                         "dyna.use": tasks.USE_PARAMS}[task]))


def _run(args, task, params, label):
    from ..engine.interface import run_job

    backend = make_backend(args)
    try:
        return run_job(backend, task, None, params, on_event=ProgressPrinter(label))
    finally:
        backend.close()


def run_night(args):
    params = {**_params(args, "dyna.night"), "options": parse_options(args.option)}
    for k in ("cases", "out"):  # files on this machine: absolute, so the backend finds them
        if params.get(k):
            params[k] = str(Path(params[k]).resolve())
    model = params.get("model", "liver-source")
    info = _run(args, "dyna.night", params, "dyna night").info
    c = info["comparison"]
    print(f"new version {info['new']} (parent {info['parent_id']}, {info['cases']} case(s), {info['seconds']} s)")
    print(f"  mean entropy {c['mean_entropy']['parent']:.4f} -> {c['mean_entropy']['new']:.4f}; agreement Dice "
          f"{c['agreement_dice']:.3f}; report {Path(info['new']).with_suffix('').as_posix()}.report.json")
    print(f"  deployed is still: {info['deployed']}  (choose: medsegsuite dyna use --model {model} "
          f"--version {Path(info['new']).stem})")


def run_status(args):
    print(json.dumps(_run(args, "dyna.status", _params(args, "dyna.status"), "dyna status").info, indent=1))


def run_use(args):
    info = _run(args, "dyna.use", _params(args, "dyna.use"), "dyna use").info
    print(f"{info['model']}: deployed {info['deployed']}")
