"""The multi-user launcher (`medsegsuite web-launcher`) with two real browsers (Chromium, Playwright), the real
page processes (trame-slicer on slicer-core) and a real `medsegsuite serve` backend behind an API key.

Checked as a user and an operator would: each browser gets its own page process and scene; a third browser
over the cap gets a clear refusal page; a closed browser's session is stopped after the idle timeout while
the active one lives on; the backend's API key is in no page, asset or websocket message a browser gets;
every server binds 127.0.0.1 only. Everything started here is stopped here."""
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB_PY = ROOT / ".venv-web" / "bin" / "python"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
IDLE_S = 20

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the web tests run on Linux (EGL, Debian chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url, proc, log, timeout=300):
    t0 = time.time()
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError:
            return   # it answers (e.g. 401 without a key)
        except OSError:
            if proc.poll() is not None or time.time() - t0 > timeout:
                raise AssertionError(f"{url} did not start:\n" + Path(log).read_text()[-3000:])
            time.sleep(0.5)


def _listening(port: int) -> set:
    """Local addresses listening on ``port`` (from /proc/net/tcp and tcp6)."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:
                out.add(addr)
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="module")
def launcher(tmp_path_factory):
    assert WEB_PY.exists(), "the web environment is missing: run `make setup` (scripts/setup.sh makes .venv-web)"
    assert CHROMIUM, "chromium is missing: scripts/setup.sh installs Debian's chromium"
    tmp = tmp_path_factory.mktemp("launcher")
    key = "k3y-" + os.urandom(16).hex()
    key_file = tmp / "server.key"
    key_file.write_text(key)
    key_file.chmod(0o600)
    env = dict(os.environ, MEDSEGSUITE_THREADS="1", OMP_NUM_THREADS="1")
    sport, lport = _free_port(), _free_port()
    procs = []
    try:
        with open(tmp / "serve.log", "w") as f:
            serve = subprocess.Popen([sys.executable, "-m", "medsegsuite", "serve", "--host", "127.0.0.1", "--port",
                                      str(sport), "--api-key-file", str(key_file), "--device", "cpu"],
                                     cwd=ROOT / "MedSegSuite", stdout=f, stderr=subprocess.STDOUT, env=env)
        procs.append(serve)
        with open(tmp / "launcher.log", "w") as f:
            proc = subprocess.Popen([str(WEB_PY), "-m", "MedSegSuiteWeb.launcher", "--host", "127.0.0.1", "--port",
                                     str(lport), "--max-sessions", "2", "--idle-timeout", str(IDLE_S), "--server",
                                     f"http://127.0.0.1:{sport}", "--api-key-file", str(key_file)],
                                    cwd=ROOT / "MedSegSuite", stdout=f, stderr=subprocess.STDOUT, env=env)
        procs.append(proc)
        url = f"http://127.0.0.1:{lport}/"
        _wait_http(f"http://127.0.0.1:{lport}/nothing", proc, tmp / "launcher.log", 120)
        yield {"url": url, "key": key, "log": tmp / "launcher.log", "proc": proc, "port": lport,
               "serve": (serve, sport, tmp / "serve.log")}
    finally:
        for p in reversed(procs):   # the launcher first: it stops its page processes
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def _sessions(log: Path) -> dict:
    """{session label: (pid, port)} from the launcher's log."""
    return {m[0]: (int(m[1]), int(m[2])) for m in
            re.findall(r"session (\w+) started: pid (\d+), port (\d+)", log.read_text())}


def _label(context) -> str:
    import hashlib

    token = next(c["value"] for c in context.cookies() if c["name"] == "medsegsuite_session")
    return hashlib.sha256(token.encode()).hexdigest()[:10]


def _record(context, seen: list):
    """Keep every response body and websocket frame this browser context gets or sends."""
    def on_response(r):
        try:
            seen.append(r.body())
        except Exception:  # noqa: BLE001 - redirects and aborted requests have no body
            pass

    def on_page(page):
        def keep(frame):   # a Python function: Playwright tags handlers, and a builtin like seen.append takes no tag
            seen.append(frame)

        page.on("websocket", lambda ws: (ws.on("framereceived", keep), ws.on("framesent", keep)))

    context.on("response", on_response)
    context.on("page", on_page)


def _wait_views(pages, timeout=400):
    """Wait until every page shows its slice views; clicks in the ready ones keep them active meanwhile."""
    deadline = time.time() + timeout
    todo = list(pages)
    while todo:
        assert time.time() < deadline, "a session's page did not show its views"
        for page in list(todo):
            if page.locator("img.image-display-area").count():
                todo.remove(page)
        for page in pages:
            if page not in todo:
                _poke(page)
        time.sleep(2)


def _poke(page):
    """What a person at the page does now and then: open and close a panel (messages to the page process)."""
    button = page.get_by_role("button", name="MedSegSuite backend", exact=True)
    button.click()
    button.click()


def _scene_has_points(page, tmp_path) -> bool:
    with page.expect_download() as dl:
        page.locator("button:has(.mdi-file-download)").first.click()
    path = tmp_path / f"scene{time.monotonic_ns()}.mrb"
    dl.value.save_as(path)
    with zipfile.ZipFile(path) as z:
        xml = z.read(next(n for n in z.namelist() if n.endswith(".mrml"))).decode()
    return 'name="CoSAM points"' in xml


def test_two_browsers_two_processes_cap_idle_reap_and_no_key_in_the_browser(launcher, tmp_path):
    from playwright.sync_api import sync_playwright

    url, key, log = launcher["url"], launcher["key"], launcher["log"]
    seen = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        ctx_a, ctx_b = browser.new_context(accept_downloads=True), browser.new_context(accept_downloads=True)
        for ctx in (ctx_a, ctx_b):
            _record(ctx, seen)
        page_a, page_b = ctx_a.new_page(), ctx_b.new_page()
        for page in (page_a, page_b):
            page.set_viewport_size({"width": 1400, "height": 900})
            page.set_default_timeout(60_000)
            page.goto(url)
            page.get_by_text("Starting your MedSegSuite session").wait_for()
        _wait_views([page_a, page_b])

        # two browsers, two page processes, each bound to 127.0.0.1 only
        sessions = _sessions(log)
        (pid_a, port_a), (pid_b, port_b) = sessions[_label(ctx_a)], sessions[_label(ctx_b)]
        assert pid_a != pid_b and _alive(pid_a) and _alive(pid_b)
        for port in (port_a, port_b, launcher["port"], launcher["serve"][1]):
            assert _listening(port) == {"0100007F"}, (port, _listening(port))   # 127.0.0.1, nothing else

        # separate scenes: a point placed in A is in A's page and scene, not in B's
        for page in (page_a, page_b):
            page.get_by_role("button", name="Self-correcting SAM", exact=True).click()
        page_a.get_by_role("button", name="Add negative point").click()
        box = page_a.locator("img.image-display-area").first.bounding_box()
        page_a.mouse.click(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.5)
        page_a.get_by_text("1 point(s)").wait_for()
        page_b.get_by_text("0 point(s)").wait_for()
        assert _scene_has_points(page_a, tmp_path) and not _scene_has_points(page_b, tmp_path)

        # the page process uses the server's key (its models are listed) without the browser seeing it
        page_a.get_by_role("button", name="MedSegSuite backend", exact=True).click()
        page_a.get_by_role("button", name="Test connection").click()
        page_a.get_by_text("Connected:").wait_for(timeout=120_000)
        page_a.get_by_text("API key: configured on the web server").wait_for()

        # a third browser over the cap of 2 gets a refusal page, not a process
        ctx_c = browser.new_context(viewport={"width": 900, "height": 260})
        _record(ctx_c, seen)
        page_c = ctx_c.new_page()
        refused = page_c.goto(url)
        assert refused.status == 503
        page_c.get_by_role("alert").get_by_text("All 2 sessions are in use").wait_for()
        shots = Path(os.environ.get("MEDSEGSUITE_WEB_SHOTS") or tmp_path)
        page_a.screenshot(path=str(shots / "web_launcher_session.png"))
        page_c.screenshot(path=str(shots / "web_launcher_busy.png"))
        assert len(_sessions(log)) == 2

        # B's browser closes: its session is stopped after the idle timeout; A, in use, lives on
        label_b = _label(ctx_b)
        ctx_b.close()
        t0 = time.time()
        while _alive(pid_b) and time.time() - t0 < IDLE_S + 30:
            _poke(page_a)
            time.sleep(2)
        assert not _alive(pid_b), "the idle session's process was not stopped"
        assert time.time() - t0 >= IDLE_S - 8, "the session was stopped before it was idle for the timeout"
        assert f"session {_label(ctx_a)} stopped" not in log.read_text() and _alive(pid_a)
        assert f"session {label_b} stopped (idle for more than {IDLE_S} s)" in log.read_text()

        # the freed place goes to the waiting browser
        page_c.goto(url)
        page_c.get_by_text("Starting your MedSegSuite session").wait_for()
        browser.close()

    texts = [s if isinstance(s, str) else bytes(s).decode("latin-1") for s in seen]
    assert len(texts) > 50 and sum(len(t) for t in texts) > 100_000   # pages, assets, views' images, state
    assert not [t[:200] for t in texts if key in t], "the backend's API key reached a browser"

