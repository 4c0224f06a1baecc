"""Screenshot of the web page's Structures (radiotherapy) section on the bundled CT (docs/radiotherapy.md).

Starts `python -m MedSegSuiteWeb` (the web environment, .venv-web) on 127.0.0.1, opens the section in
Debian's chromium (playwright), adds the abdominal template's structures, makes GTVp current and saves
the page to docs/images/radiotherapy_web.png. It checks on the way that the page lists the template's
structures with their status (a real end-to-end check of the panel in the real app).

    PYTHONPATH=MedSegSuite .venv/bin/python scripts/rt_web_screenshot.py [--out docs/images/radiotherapy_web.png]
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "docs" / "images" / "radiotherapy_web.png"))
    args = ap.parse_args()
    web_py = ROOT / ".venv-web" / "bin" / "python"
    chromium = shutil.which("chromium")
    if not web_py.exists() or not chromium:
        sys.exit("needs the web environment (.venv-web) and Debian's chromium: run make setup")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"rt_web_{port}.log", "w")
    env = dict(os.environ, MEDSEGSUITE_THREADS="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([str(web_py), "-m", "MedSegSuiteWeb", "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu"], cwd=ROOT / "MedSegSuite", stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        t0 = time.time()
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.time() - t0 > 600:
                    sys.exit(f"the web server did not start (log: {log.name})")
                time.sleep(0.5)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(300_000)
            page.goto(url)
            page.get_by_role("button", name="Structures (radiotherapy)", exact=True).click()
            page.get_by_role("button", name="Add the template structures").click()
            page.locator("[role=status]:has-text('structure(s) added')").first.wait_for()
            for name in ("Liver", "GTVp", "Spleen"):
                page.locator(".v-list-item", has_text=name).first.wait_for()
            page.locator(".v-list-item", has_text="GTVp").first.click()
            page.locator("[role=status]:has-text('Current: GTVp')").first.wait_for()
            time.sleep(2)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out)
            browser.close()
        print(f"wrote {args.out}")
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
