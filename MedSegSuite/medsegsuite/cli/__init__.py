"""The ``medsegsuite`` command. Each sub-command lives in its own module here with a
``register(subparsers)`` function; modules listed in COMMANDS that are absent are skipped."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import __version__
from ..errors import MedSegError

COMMANDS = ["demo", "info", "models", "evaluate", "cosam", "scribble", "tta", "dyna", "serve", "users", "export",
            "structures", "batch", "web"]

EPILOG = """examples:
  medsegsuite demo --out demo_out             # LiteMedSAM oracle boxes (+ CoSAM) on LiTS-117
  medsegsuite info                            # versions, device, sample data, models
  medsegsuite models list                     # registered models
  medsegsuite evaluate --pred P --ref R --out DIR
  medsegsuite export --seg S.seg.nrrd --reference CT_DIR --format rtstruct --out RS.dcm
run 'medsegsuite COMMAND --help' for each command's options."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="medsegsuite", description="AI-assisted medical image segmentation backend of the MedSegSuite "
        "3D Slicer extension: self-correcting SAM, scribble segmentation, test-time adaptation.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"medsegsuite {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":
                continue
            raise
        mod.register(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except MedSegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
