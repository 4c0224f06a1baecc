"""``medsegsuite models list|import|verify``."""
from __future__ import annotations


def register(sub):
    p = sub.add_parser("models", help="list, verify or import model checkpoints")
    s = p.add_subparsers(dest="models_cmd", metavar="ACTION")
    ls = s.add_parser("list", help="registered models")
    ls.add_argument("--task", help="only models for this task (e.g. cosam, tta, scribble)")
    ls.set_defaults(func=run_list)
    v = s.add_parser("verify", help="check a registered model's checksum and that it loads safely")
    v.add_argument("model_id")
    v.set_defaults(func=run_verify)
    im = s.add_parser("import", help="copy a checkpoint into your model folder and register it")
    im.add_argument("file")
    im.add_argument("--id", required=True, help="the id to register it under")
    im.add_argument("--architecture", help="architecture name when the file does not say it")
    im.set_defaults(func=run_import)
    p.set_defaults(func=lambda a: p.print_help())


def run_list(args):
    from ..models import default_registry

    for e in default_registry().list(args.task):
        print(f"{e.id:24s} {e.architecture:18s} {','.join(e.structures) or '-':20s} {e.description}")


def run_verify(args):
    from ..models import default_registry

    e = default_registry().get(args.model_id)
    e.load()
    print(f"{e.id}: OK ({e.path})")


def run_import(args):
    from ..models import default_registry

    e = default_registry().import_checkpoint(args.file, args.id, args.architecture)
    print(f"registered '{e.id}' ({e.architecture}) at {e.path}")
