"""python -m MedSegSuiteWeb [--host 127.0.0.1] [--port N] [--image FILE|DICOM_DIR] [--server URL] ..."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="medsegsuite web", description="MedSegSuite in the browser (trame-slicer)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--image", help="an image file or a DICOM series folder (default: the LiTS-117 sample)")
    p.add_argument("--server", help="a MedSegSuite server URL; jobs run there instead of in this process")
    p.add_argument("--api-key-file", help="the server's API key (read here, never sent to the browser)")
    p.add_argument("--device", default="auto", help="device of the local backend (auto, cpu, cuda)")
    a = p.parse_args(argv)
    key = None
    if a.api_key_file:
        from pathlib import Path

        key = Path(a.api_key_file).read_text(encoding="utf-8").strip()
    from .app import MedSegSuiteWebApp

    app = MedSegSuiteWebApp(image=a.image, server_url=a.server, api_key=key, device=a.device)
    print(f"MedSegSuite web on http://{a.host}:{a.port}/", flush=True)
    try:
        app.server.start(host=a.host, port=a.port, open_browser=False, show_connection_info=False)
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
