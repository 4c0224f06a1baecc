"""``medsegsuite batch --ray``: a folder of cases through one task as Ray tasks (progress, cancel, retry)."""
from __future__ import annotations

import json

DESCRIPTION = """\
Run every image in a folder through one task, one Ray task per case, on a Ray cluster (or a Ray started on
this machine). A case whose worker or node dies is run again elsewhere (--max-retries); Ctrl-C cancels the
cases not yet finished. Masks are written as OUT/<case>_<segment>.nrrd, the outcome of each case to
OUT/batch.json.
  medsegsuite batch --ray --cases studies/ --task tta.adapt --params '{"model": "liver-source"}' --out out/
  medsegsuite batch --ray --address 10.0.0.5:6379 --gpus 1 --cases studies/ --task cosam.segment --out out/"""


def register(sub):
    import argparse

    p = sub.add_parser("batch", help="a folder of cases through one task as Ray tasks",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ray", action="store_true", required=True, help="run on Ray (the only engine for batches)")
    p.add_argument("--address", metavar="ADDR", help="Ray cluster to join; default: start Ray on this machine")
    p.add_argument("--cases", required=True, help="folder of images (NIfTI, NRRD, MHA, DICOM series folders)")
    p.add_argument("--task", required=True, help="registered task, e.g. tta.adapt or cosam.segment")
    p.add_argument("--params", default="{}", help="the task's parameters as JSON")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", default="auto", help="device in each worker (auto, cuda, cpu)")
    p.add_argument("--cpus", type=float, default=1.0, help="CPUs per case (default 1)")
    p.add_argument("--gpus", type=float, default=0.0, help="GPUs per case (default 0)")
    p.add_argument("--max-retries", type=int, default=3, help="runs of a case after its worker died (default 3)")
    p.set_defaults(func=run)


def run(args):
    from pathlib import Path

    import ray

    from ..errors import InputError
    from ..progress import ProgressPrinter
    from ..server.ray_batch import BatchRun, list_cases

    try:
        params = json.loads(args.params)
    except json.JSONDecodeError as e:
        raise InputError(f"--params is not JSON: {e}") from None
    if not isinstance(params, dict):
        raise InputError("--params must be a JSON object")
    cases = list_cases(args.cases)
    ray.init(address=args.address or None, include_dashboard=False, log_to_driver=False)
    run_ = BatchRun(cases, args.task, args.out, params, device=args.device, max_retries=args.max_retries,
                    num_cpus=args.cpus, num_gpus=args.gpus, on_progress=ProgressPrinter(f"batch {args.task}"))
    try:
        outcomes = run_.wait()
    except KeyboardInterrupt:
        run_.cancel()
        outcomes = run_.wait()
    finally:
        Path(args.out, "batch.json").write_text(json.dumps([o.__dict__ for o in run_.outcomes.values()], indent=1,
                                                           default=str))
    failed = [o for o in outcomes if o.state != "done"]
    for o in failed:
        print(f"{o.case}: {o.state} {o.error}")
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} cases done; masks in {args.out}")
    return 1 if failed else 0
