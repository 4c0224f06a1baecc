"""The web front end in a real browser: `medsegsuite web` (trame-slicer on slicer-core) driven by Chromium
through Playwright, as a person would use it. Each test checks what is on screen (screenshots of the views,
text in the page) and what is in the MRML scene (the scene the page lets a user download, read back with
slicer-core). The server binds 127.0.0.1 and is stopped at the end."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB_PY = ROOT / ".venv-web" / "bin" / "python"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the web tests run on Linux (EGL, Debian chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    assert WEB_PY.exists(), "the web environment is missing: run `make setup` (scripts/setup.sh makes .venv-web)"
    assert CHROMIUM, "chromium is missing: scripts/setup.sh installs Debian's chromium"
    port = _free_port()
    log = tmp_path_factory.mktemp("web") / "server.log"
    env = dict(os.environ, MEDSEGSUITE_THREADS="2", OMP_NUM_THREADS="2")
    with open(log, "w") as f:
        proc = subprocess.Popen([str(WEB_PY), "-m", "MedSegSuiteWeb", "--host", "127.0.0.1", "--port", str(port),
                                 "--device", "cpu"], cwd=ROOT / "MedSegSuite", stdout=f, stderr=subprocess.STDOUT,
                                env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        t0 = time.time()
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.time() - t0 > 300:
                    raise AssertionError("web server did not start:\n" + log.read_text()[-3000:])
                time.sleep(0.5)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
            page.set_default_timeout(60_000)
            page.goto(url)
            yield {"page": page, "url": url, "proc": proc, "log": log}
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _view_pixels(page, index=0) -> np.ndarray:
    """RGB pixels of one slice view (0 = the large view, the axial one in the default layout)."""
    import io

    from PIL import Image

    shot = page.screenshot()
    img = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(int)
    box = _view_boxes(page)[index]
    x, y, w, h = (int(round(v)) for v in (box["x"], box["y"], box["width"], box["height"]))
    return img[y:y + h, x:x + w]


def _view_boxes(page):
    """Bounding boxes of the slice/3D views, largest first (RCA views are <img> elements in the grid)."""
    boxes = []
    for el in page.locator("img.image-display-area").all():
        b = el.bounding_box()
        if b and b["width"] > 200 and b["height"] > 200:
            boxes.append(b)
    assert boxes, "no view found in the page"
    return sorted(boxes, key=lambda b: -b["width"] * b["height"])


def _coloured(rgb: np.ndarray) -> int:
    """Pixels with a clear hue: the CT is grey, so these are segment overlays."""
    return int(((rgb.max(-1) - rgb.min(-1)) > 60).sum())


def _open_tool(page, name):
    page.get_by_role("button", name=name, exact=True).click()


def _run_and_wait(page, button, timeout=900, status=0):
    """Press a panel's job button and wait for *that* job to end: the status line leaves the previous
    job's "Done" first (a stale "Done" once let the next step race a running job)."""
    from playwright.sync_api import expect

    line = page.locator("[role=status]").nth(status)
    page.get_by_role("button", name=button, exact=True).click()
    expect(line).not_to_contain_text("Done", timeout=30_000)   # "Starting…", then "Running (…%)"
    expect(line).to_contain_text("Done", timeout=timeout * 1000)


def _download_scene(page, tmp_path) -> dict:
    """The scene as a user downloads it (the app bar's download button): {segment name: voxel count} over the
    segmentation nodes that scene.mrml lists, read from the bundle's files."""
    import re
    import zipfile

    from medsegsuite.io import read_segmentation

    with page.expect_download() as dl:
        page.locator("button:has(.mdi-file-download)").first.click()
    path = tmp_path / f"scene{time.monotonic_ns()}.mrb"
    dl.value.save_as(path)
    out = {}
    with zipfile.ZipFile(path) as z:
        mrml = next(n for n in z.namelist() if n.endswith(".mrml"))
        xml = z.read(mrml).decode()
        assert "<Segmentation" in xml, "the downloaded scene holds no segmentation node"
        for name in z.namelist():
            if name.endswith(".seg.nrrd") and re.search(re.escape(name.rsplit("/", 1)[-1]), xml):
                z.extract(name, tmp_path)
                seg = read_segmentation(tmp_path / name)
                for k, m in seg.masks.items():
                    out[k] = out.get(k, 0) + int(m.sum())
    return out


def test_page_shows_lits117_and_the_panels(web):
    page = web["page"]
    page.get_by_text("MedSegSuite").first.wait_for()
    page.locator("img.image-display-area").first.wait_for(timeout=180_000)
    deadline = time.time() + 120
    while True:   # the views stream in after the page loads
        px = _view_pixels(page)
        if (px.mean() > 20 and px.std() > 5) or time.time() > deadline:
            break
        time.sleep(1)
    assert px.mean() > 20 and px.std() > 5, "the axial view is blank"
    assert _coloured(px) < 0.001 * px[..., 0].size   # grey CT, no segment yet


def _segment_list_names(page) -> list:
    """Segment names in the Segment Editor's list: text, or the value of the active segment's name field."""
    items = page.locator(".v-list-item")
    names = [t.strip() for t in items.all_inner_texts() if t.strip()]
    names += [el.input_value() for el in page.locator(".v-list-item input").all()]
    return names


def test_run_cosam_shows_liver_in_the_views_and_scene(web, tmp_path):
    page = web["page"]
    _open_tool(page, "Self-correcting SAM")
    run = page.get_by_role("button", name="Run CoSAM")
    run.wait_for()
    page.get_by_label("Slices").fill("56,63,64,72")   # 63 and 64: the axial view opens at the middle
    before = _coloured(_view_pixels(page))
    run.click()
    # The page stays live while the job runs: requests to its server return within 0.5 s. (Drawing the
    # result when it arrives is the views' own render, on the event loop by trame's design, not counted.)
    pings = []
    status = page.locator("[role=status]").first
    while "Done" not in (text := status.inner_text()):
        assert "Failed" not in text, text
        t = time.perf_counter()
        urllib.request.urlopen(web["url"], timeout=30).read()
        if "Running" in status.inner_text():
            pings.append(time.perf_counter() - t)
        time.sleep(0.25)
        assert len(pings) < 4000, "CoSAM did not finish"
    # The median of the pings (robust to a lone slow answer on a shared machine) within 0.5 s; a page
    # that waits on the job (what this guards against) answers in seconds, several times over.
    med = float(np.median(pings))
    print(f"pings during CoSAM: n={len(pings)} median={med:.3f} s max={max(pings):.3f} s")
    assert len(pings) >= 5 and med <= 0.5, \
        f"the page answered in {med:.2f} s (median of {len(pings)}; max {max(pings):.2f} s) during a CoSAM run"
    assert sorted(pings)[-2] <= 2.0, f"two or more answers took over 2 s during a CoSAM run: {sorted(pings)[-3:]}"
    page.locator("button:has(.mdi-brush)").first.click()               # the Segment Editor's panel
    deadline = time.time() + 60
    while "liver" not in _segment_list_names(page) and time.time() < deadline:
        time.sleep(1)
    assert "liver" in _segment_list_names(page)                        # its segment list names it
    deadline = time.time() + 60
    while _coloured(_view_pixels(page)) <= before + 500 and time.time() < deadline:
        time.sleep(1)
    assert _coloured(_view_pixels(page)) > before + 500, "no liver overlay in the axial view"
    # the docs' screenshot: MEDSEGSUITE_WEB_SHOTS=docs/images refreshes docs/images/web_cosam.png
    page.screenshot(path=str(Path(os.environ.get("MEDSEGSUITE_WEB_SHOTS") or tmp_path) / "web_cosam.png"))
    counts = _download_scene(page, tmp_path)
    assert counts.get("liver", 0) > 4 * 500, counts   # four slices of liver in the scene


def test_rounds_slider_and_negative_click_continue(web, tmp_path):
    page = web["page"]
    _open_tool(page, "Self-correcting SAM")
    page.get_by_text("round 4 of 4 (final)").wait_for()
    slider = page.get_by_role("slider", name="Show round")
    slider.focus()
    page.keyboard.press("Home")
    page.get_by_text("coarse (prompt-free)").wait_for()
    coarse = _download_scene(page, tmp_path)["liver"]
    slider.focus()   # the download took the focus
    page.keyboard.press("End")
    page.get_by_text("round 4 of 4").first.wait_for()
    final = _download_scene(page, tmp_path)["liver"]
    assert coarse != final, "moving the rounds slider did not change the liver segment"
    # a negative point, placed by clicking in the axial view, then Continue
    page.get_by_role("button", name="Add negative point").click()
    box = _view_boxes(page)[0]
    page.mouse.click(box["x"] + box["width"] * 0.35, box["y"] + box["height"] * 0.45)
    page.get_by_text("1 point(s)").wait_for()
    shown = _coloured(_view_pixels(page))
    _run_and_wait(page, "Continue")
    deadline = time.time() + 60
    while _coloured(_view_pixels(page)) == shown and time.time() < deadline:
        time.sleep(1)
    assert _coloured(_view_pixels(page)) != shown, "a negative click + Continue left the axial view unchanged"
    web["final"] = final


def test_undo_after_continue_restores_the_previous_result(web, tmp_path):
    """Undo after a click-Continue returns to the result before it. (It once failed now and then: the
    page's 10 Hz job poll rewrote the status line, so "Undone" lived for under 0.1 s; and the test's
    wait matched the previous job's "Done", so Undo could run while Continue's job was still going.)"""
    page = web["page"]
    assert "final" in web, "runs after the rounds/continue test"
    page.get_by_role("button", name="Undo CoSAM").click()
    status = page.locator("[role=status]:has-text('Undone')").first
    status.wait_for(timeout=20_000)
    time.sleep(1.0)
    assert status.is_visible(), "the status line lost 'Undone'"   # ten job polls later it still says so
    assert _download_scene(page, tmp_path)["liver"] == web["final"]


def test_tta_before_after_and_entropy(web, tmp_path):
    page = web["page"]
    _open_tool(page, "Test-time adaptation")
    page.get_by_label("Slices").fill("60,64")
    _run_and_wait(page, "Adapt")
    plot = page.get_by_alt_text("Per-slice entropy plot: before (red) and after (blue) adaptation")
    plot.wait_for()
    assert plot.is_visible()
    page.get_by_text("before: mean").wait_for()
    counts = _download_scene(page, tmp_path)
    assert counts.get("liver (before)", 0) > 0 and counts.get("liver", 0) > 0, counts
