"""``medsegsuite web``: the browser front end (trame-slicer), run in its own environment (.venv-web)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..errors import MissingDataError


def web_python() -> Path:
    root = Path(__file__).resolve().parents[3]
    for p in (root / ".venv-web" / "bin" / "python", root / ".venv-web" / "Scripts" / "python.exe"):
        if p.exists():
            return p
    raise MissingDataError("the web front end's environment .venv-web is missing: run `make setup` "
                           "(scripts/setup.sh creates it; trame-slicer needs its own slicer-core 5.11)")


def register(sub):
    p = sub.add_parser("web", help="MedSegSuite in the browser: the three panels on Slicer's core (trame-slicer)",
                       description="Serve the web front end: Slicer's slice and 3D views, the segment editor and "
                       "the CoSAM, ScribbleSeg, TestTimeAdapt and backend panels. Opens LiTS-117 when no image "
                       "is given. Binds 127.0.0.1 by default (put a TLS reverse proxy in front to share it: "
                       "docs/web.md).")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    p.add_argument("--image", help="an image file or a DICOM series folder (default: LiTS-117)")
    p.add_argument("--server", metavar="URL", help="run jobs on this MedSegSuite server instead of locally")
    p.add_argument("--api-key-file", metavar="F", help="the server's API key (stays on this machine)")
    p.add_argument("--device", default="auto", help="device of the local backend (auto, cpu, cuda)")
    p.set_defaults(func=run)


def run(args) -> int:
    argv = [str(web_python()), "-m", "MedSegSuiteWeb", "--host", args.host, "--port", str(args.port),
            "--device", args.device]
    for flag, value in (("--image", args.image), ("--server", args.server), ("--api-key-file", args.api_key_file)):
        if value:
            argv += [flag, str(Path(value).resolve()) if flag != "--server" else value]
    env = dict(os.environ, MEDSEGSUITE_BACKEND_PYTHON=sys.executable)
    return subprocess.call(argv, env=env)
