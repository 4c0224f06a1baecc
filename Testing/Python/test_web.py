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


def _changed(a: np.ndarray, b: np.ndarray) -> int:
    """Pixels that differ clearly between two shots of a view (a segment's fill, whatever its colour)."""
    return int((np.abs(a - b).max(-1) > 40).sum()) if a.shape == b.shape else a[..., 0].size


def _wait_changed(page, ref, at_least: int, timeout: float = 60) -> int:
    """Pixels of the axial view that differ from ``ref``, polled until at least ``at_least`` or ``timeout``."""
    deadline = time.time() + timeout
    while (changed := _changed(ref, _view_pixels(page))) < at_least and time.time() < deadline:
        time.sleep(1)
    return changed


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


def _download_nodes(page, tmp_path, masks=False) -> dict:
    """The scene as a user downloads it (the app bar's download button): {segmentation file name:
    {segment name: voxel count (or the mask)}} over the segmentation nodes scene.mrml lists."""
    import zipfile
    from urllib.parse import quote

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
            base = name.rsplit("/", 1)[-1]
            if name.endswith(".seg.nrrd") and (base in xml or quote(base) in xml):
                z.extract(name, tmp_path)
                seg = read_segmentation(tmp_path / name)
                out[base] = {k: (m if masks else int(m.sum())) for k, m in seg.masks.items()}
    return out


def _download_scene(page, tmp_path) -> dict:
    """{segment name: voxel count} summed over the downloaded scene's segmentation nodes."""
    out = {}
    for counts in _download_nodes(page, tmp_path).values():
        for k, n in counts.items():
            out[k] = out.get(k, 0) + n
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


def test_download_button_survives_a_late_busy_flag(web, tmp_path):
    """The Download Scene button hides while its busy flag is set. The browser holds state changes back while
    it waits on the server, so the flag can reach the server after the download has ended (CI lost the
    button that way after one download, and every later download failed). Sent here with no download
    running, the flag is cleared and the button comes back, and it still downloads the scene."""
    page = web["page"]
    button = page.locator("button:has(.mdi-file-download)")
    button.first.wait_for(timeout=300_000)
    page.evaluate("async () => { window.trame.state.set('DownloadSceneState__loading_busy', true);"
                  " await window.trame.state.flush(); }")
    deadline = time.time() + 20
    while not button.count() and time.time() < deadline:
        time.sleep(0.2)
    assert button.count(), "the Download Scene button stayed hidden"
    import zipfile

    with page.expect_download() as dl:
        button.first.click()
    dl.value.save_as(tmp_path / "scene.mrb")
    assert any(n.endswith(".mrml") for n in zipfile.ZipFile(tmp_path / "scene.mrb").namelist())
    button.first.wait_for(timeout=20_000)   # and back after the download


def _open_segment_editor(page):
    """The Segment Editor's panel (segment list, effects); the same tool button closes it when open."""
    add = page.locator(".v-navigation-drawer button:has(.mdi-plus)").first   # 'Add segment', or '+' once there are some
    if not add.is_visible():
        page.locator("button:has(.mdi-brush)").first.click()
    add.wait_for()


def _drag(page, points, view=0):
    """A mouse stroke through ``points`` (fractions of the view's width and height), as a hand draws it."""
    box = _view_boxes(page)[view]
    xy = [(box["x"] + box["width"] * u, box["y"] + box["height"] * v) for u, v in points]
    page.mouse.move(*xy[0])
    time.sleep(0.2)
    page.mouse.down()
    for (x0, y0), (x1, y1) in zip(xy, xy[1:]):
        for t in range(1, 11):
            page.mouse.move(x0 + (x1 - x0) * t / 10, y0 + (y1 - y0) * t / 10)
            time.sleep(0.04)
    time.sleep(0.2)
    page.mouse.up()


def _segment_list_names(page) -> list:
    """Segment names in the Segment Editor's list: text, or the value of the active segment's name field."""
    items = page.locator(".v-list-item")
    names = [t.strip() for t in items.all_inner_texts() if t.strip()]
    names += [el.input_value() for el in page.locator(".v-list-item input").all()]
    return names


def _prediction_keeping(page, tmp_path, scribbles):
    """The 'organ' mask of the scribble prediction node, after checking the scribbles are untouched (a
    prediction is never written into them)."""
    nodes = _download_nodes(page, tmp_path, masks=True)
    pred = next(c for f, c in nodes.items() if f.startswith("Scribble prediction"))["organ"]
    kept = next(c for f, c in nodes.items() if not f.startswith("Scribble prediction") and "organ" in c)
    assert {k: int(m.sum()) for k, m in kept.items()} == scribbles, "the scribbles changed"
    return pred


def test_paint_scribbles_and_grow_from_seeds_shows_the_prediction(web, tmp_path):
    """Scribbles as an annotator makes them: add a segment, name it, paint a stroke in the axial view with
    the Segment Editor's Paint; the same for 'background'; then the scribble panel's Grow from seeds (the
    no-training quick option). The prediction shows in the view and lands in its own segmentation node."""
    page = web["page"]
    _open_segment_editor(page)
    drawer = page.locator(".v-navigation-drawer")
    for name, stroke in (("organ", [(0.15, 0.3), (0.25, 0.35), (0.35, 0.3)]),      # in the liver
                         ("background", [(0.55, 0.72), (0.7, 0.78), (0.85, 0.72)])):  # kidney, bowel
        items = drawer.locator(".v-list-item")
        n = items.count()
        drawer.locator("button:has(.mdi-plus)").first.click()                # 'Add segment' / '+'
        field = drawer.locator(".v-list-item--active input")
        deadline = time.time() + 30
        while not (items.count() == n + 1 and field.count() and field.input_value().startswith("Segment_")):
            assert time.time() < deadline, "no new segment in the list"
            time.sleep(0.2)
        field.fill(name)
        field.press("Enter")
        drawer.locator(f".v-list-item--active input[value='{name}']").wait_for()
        drawer.locator("button:has(.mdi-brush)").first.click()   # the Paint effect ...
        drawer.locator("button.v-btn--active:has(.mdi-brush)").first.wait_for()   # ... on, as the server says
        ref = _view_pixels(page)
        _drag(page, stroke)
        deadline = time.time() + 30
        while (changed := _changed(ref, _view_pixels(page))) < 1500 and time.time() < deadline:
            time.sleep(0.5)
        assert changed >= 1500, f"the {name} stroke did not show in the axial view ({changed} pixels changed)"
    drawer.locator("button:has(.mdi-cursor-default)").first.click()   # No tool: clicks no longer paint
    assert sorted(_segment_list_names(page))[:2] == ["background", "organ"]
    painted = _download_nodes(page, tmp_path)
    scribbles = next(c for c in painted.values() if "organ" in c)
    assert scribbles["organ"] > 50 and scribbles["background"] > 50, painted

    _open_tool(page, "Scribble segmentation")
    page.get_by_label("Mode").click(force=True)
    page.get_by_role("option", name="Grow from seeds").click()
    ref = _view_pixels(page)
    _run_and_wait(page, "Grow from seeds")
    changed = _wait_changed(page, ref, 5000)
    assert changed >= 5000, f"no prediction overlay in the axial view ({changed} pixels changed)"
    pred = _prediction_keeping(page, tmp_path, scribbles)
    assert pred.sum() > 20 * scribbles["organ"], (int(pred.sum()), scribbles)   # grown from one stroke into 3D
    # the organ stroke was drawn in the liver: most of what grew from it is liver by LiTS-117's manual label
    # (same case; the label's liver is ~29 % of the volume, so chance would give ~0.3)
    from medsegsuite.sampledata import lits117_labels

    liver = lits117_labels().array > 0
    assert pred.shape == liver.shape
    precision = float((pred & liver).sum() / pred.sum())
    assert precision > 0.5, f"only {precision:.2f} of the grown organ is liver"
    page.mouse.move(5, 5)   # no tooltip in the docs' screenshot (MEDSEGSUITE_WEB_SHOTS=docs/images refreshes it)
    page.screenshot(path=str(Path(os.environ.get("MEDSEGSUITE_WEB_SHOTS") or tmp_path) / "web_scribble.png"))

    # then Train quick on the same strokes (a short training: the workflow, not the accuracy, is under test)
    page.get_by_label("Mode").click(force=True)
    page.get_by_role("option", name="Quick: train on these scribbles, segment").click()
    page.get_by_label("Training iterations").fill("0")
    page.get_by_role("button", name="Train quick", exact=True).click()
    from playwright.sync_api import expect

    expect(page.locator(".v-alert", has_text="training iterations must be between")).to_be_visible(timeout=30_000)
    page.get_by_label("Training iterations").fill("15")
    ref = _view_pixels(page)
    _run_and_wait(page, "Train quick")
    changed = _wait_changed(page, ref, 500)
    assert changed >= 500, f"the trained model's prediction did not show ({changed} pixels changed)"
    trained = _prediction_keeping(page, tmp_path, scribbles)
    assert trained.any() and not np.array_equal(trained, pred), "the prediction is not the trained model's"


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
