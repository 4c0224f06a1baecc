"""``medsegsuite demo``: the bundled LiTS-117 demo."""
from __future__ import annotations

from .common import add_backend_options, make_backend


def register(sub):
    p = sub.add_parser("demo", help="segment the bundled LiTS-117 CT and write a report, overlay and scene",
                       description="Runs LiteMedSAM with oracle boxes (the baseline) and CoSAM prompt-free on "
                       "LiTS-117 and writes DIR/<method>.seg.nrrd, DIR/report.json, DIR/overlay.png and "
                       "DIR/scene.mrb.")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--slices", default="default",
                   help="'default' (every 8th axial slice, ~1-2 min on 2 cores), 'all', 'every:K', 'a:b' or a list")
    p.add_argument("--methods", nargs="+", help="which methods (default: oracle_box and every built method)")
    add_backend_options(p)
    p.set_defaults(func=run)


def run(args):
    from ..demo import run_demo

    backend = make_backend(args)
    try:
        run_demo(args.out, args.slices, backend, args.methods)
    finally:
        backend.close()
