"""Click latency while a training job runs, against idle: training must stay off the click path.

    .venv/bin/python benchmarks/click_under_training.py [--clicks 20] [--out benchmarks/results/click_under_training.md]

One run, one `LocalBackend`, side by side: a real ``scribble.train`` job (MaCo, default network and batch,
synthetic scribbles on the clicked CT, iterations enough to outlast the clicks) trains in its own process
(`engine.training`: fewer torch threads, ``os.nice``; the worker pauses it while a click runs) while
clicks alternate between the training process held stopped since the previous click (SIGSTOP from here:
idle) and training right up to the click, in ABBA order, so that load from other processes on a shared
machine hits both alike; reference blocks without any training process come before and after. The click is
`click_latency.measure_clicks` where that benchmark exists, else a CoSAM click on an interactive session
(``cosam.click`` on one axial slice of LiTS-117, embedding cached), or, failing that, a one-slice
``cosam.segment`` with a cached embedding. Latency is the wall time from ``start_job`` to the result in
hand. Target: median under training <= 1.5x idle.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MedSegSuite"))
TARGET = 1.5
SLICE = 64


def _pct(xs, q):
    return float(np.percentile(np.asarray(xs, float), q)) if xs else float("nan")


def click_latency_module():
    """benchmarks/click_latency.py (its `measure_clicks`), or None where it is missing or broken."""
    path = Path(__file__).with_name("click_latency.py")
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("click_latency", path)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception as e:  # noqa: BLE001 - fall back to our own click
        print(f"click_latency.py not usable ({type(e).__name__}: {e}); using the built-in click", flush=True)
        return None
    return mod if hasattr(mod, "measure_clicks") else None


class SharedClick:
    """`click_latency.measure_clicks`: ``cosam.click`` on a session over 3 axial slices around the liver
    centre of its 512x512x200 CT, + / - points near the liver boundary."""

    source = "benchmarks/click_latency.py `measure_clicks`"

    def __init__(self, backend, mod, n_total: int):
        self.backend, self.mod = backend, mod
        self.ct, self.mask = mod.resampled_lits()
        self.slices = mod.centre_slices(self.ct, self.mask, 3)
        t0 = time.perf_counter()
        self.image_id = mod.start_session(backend, self.ct, self.slices, "under-training")
        self.setup_s = time.perf_counter() - t0
        self.points = mod.click_points(self.ct, self.mask, self.slices, n_total, seed=0)
        self.used = 0
        self.kind = f"`cosam.click` on {mod.DATASET} {self.ct.shape} (axial slices {self.slices})"

    def block(self, n):
        pts = self.points[self.used:self.used + n]
        self.used += n
        r = self.mod.measure_clicks(self.backend, self.image_id, n, session="under-training", points=pts, warmup=0)
        return list(r["latency_ms"]), r["steps_median_ms"].get("total_ms")


class CoSAMClick:
    """A click on LiTS-117 slice 64: ``cosam.click`` on a session (or a one-slice ``cosam.segment``)."""

    source = "built-in click of benchmarks/click_under_training.py"

    def __init__(self, backend, ct, labels):
        from medsegsuite.engine.interface import run_job
        from medsegsuite.volume import SliceEngine

        self.backend = backend
        self.image_id = backend.set_image(ct)
        tasks = {t["name"] for t in backend.list_tasks()}
        self.kind = "cosam.click" if "cosam.click" in tasks else "cosam.segment (one slice)"
        self.ct, self.mask = ct, labels.array > 0
        eng = SliceEngine.for_volume(ct, "axial")
        liver = eng.slice(labels.array > 0, SLICE)
        rows, cols = np.nonzero(liver)
        rng = np.random.default_rng(0)
        pick = rng.choice(len(rows), 64, replace=False)
        self.points = [(float(cols[i]), float(rows[i])) for i in pick]  # x = column, y = row
        self.n = 0
        t0 = time.perf_counter()
        params = {"slices": str(SLICE)}
        if self.kind == "cosam.click":
            params["session"] = "bench"
        run_job(backend, "cosam.segment", ct, params, timeout=600)  # encodes the slice once (cached after)
        self.setup_s = time.perf_counter() - t0

    def __call__(self) -> dict:
        x, y = self.points[self.n % len(self.points)]
        self.n += 1
        t0 = time.perf_counter()
        if self.kind == "cosam.click":
            job = self.backend.start_job("cosam.click", self.image_id, {"session": "bench"},
                                         {"points": np.array([[x, y, SLICE, 1]], np.float32)})
        else:
            job = self.backend.start_job("cosam.segment", self.image_id, {"slices": str(SLICE)})
        self.backend.wait(job, timeout=120)
        r = self.backend.result(job)
        return {"ms": 1000 * (time.perf_counter() - t0), "task_ms": (r.info.get("timings") or {}).get("total_ms")}

    def block(self, n):
        out = [self() for _ in range(n)]
        ts = [o["task_ms"] for o in out if o["task_ms"] is not None]
        return [o["ms"] for o in out], statistics.median(ts) if ts else None


def training_job(backend, ct, lab):
    """A real scribble.train run on the clicked image, sized to outlast the clicks (cancelled afterwards)."""
    from medsegsuite.scribble.generator import make_scribbles
    from medsegsuite.volume import SliceEngine

    lab = np.asarray(lab).astype(np.uint8)
    n = SliceEngine.for_volume(ct, "axial").n_slices
    classes = ["liver", "tumour"][: int(lab.max())]
    sc = make_scribbles(lab, len(classes) + 1, list(range(n // 16, n, n // 8)), plane="axial", seed=0,
                        spacing=ct.geometry.spacing, direction=ct.direction)
    names = {p["name"] for t in backend.list_tasks() if t["name"] == "scribble.train" for p in t["params"] or []}
    params = {"classes": classes}
    if "iterations" in names:
        params["iterations"] = 100000
    else:
        params["settings"] = {"iterations": 100000}
    return backend.start_job("scribble.train", backend.set_image(ct), params, {"scribbles": sc}), params


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clicks", type=int, default=20, help="click pairs (one idle, one under training)")
    ap.add_argument("--blocks", type=int, default=10, help="clicks per reference block without a training "
                    "process, before and after (0: none)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads of the interactive worker (0: all cores)")
    ap.add_argument("--train-threads", type=int, default=0, help="torch threads of the training process "
                    "(0: the engine's default, half the cores)")
    ap.add_argument("--train-window", type=float, default=20.0,
                    help="seconds the training job runs alone before the clicks (its speed without clicks)")
    ap.add_argument("--builtin-click", action="store_true", help="use the built-in LiTS-117 128³ click even "
                    "where benchmarks/click_latency.py exists")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "click_under_training.md"))
    args = ap.parse_args()

    from medsegsuite.engine import JobState, LocalBackend
    from medsegsuite.engine.device import set_threads
    from medsegsuite.provenance import provenance, write_markdown
    from medsegsuite.sampledata import lits117_ct, lits117_labels

    threads = set_threads(args.threads or None)
    from bench_device import bench_device, device_extra

    backend = LocalBackend(bench_device(), train_threads=args.train_threads or None)
    lane = backend.worker.training
    mod = None if args.builtin_click else click_latency_module()
    try:
        if mod is not None:
            click = SharedClick(backend, mod, args.warmup + 2 * args.clicks + 2 * args.blocks)
        else:
            click = CoSAMClick(backend, lits117_ct(), lits117_labels())
        kind, source, block = click.kind, click.source, click.block
        block(args.warmup)
        before = block(args.blocks) if args.blocks else ([], None)

        job, train_params = training_job(backend, click.ct, click.mask)
        t0 = time.time()
        while not any(e.message.startswith("iteration") for e in backend.events(job)):
            if backend.state(job) not in (JobState.RUNNING, JobState.QUEUED):
                raise SystemExit(f"training job ended before it trained: {backend.result(job)}")
            if time.time() - t0 > 600:
                raise SystemExit("training job did not start iterating within 10 minutes")
            time.sleep(0.2)
        pid = backend.worker.jobs[job].pid
        print(f"training in process {pid}", flush=True)
        ia, ta = _iterations(backend, job), time.perf_counter()
        time.sleep(args.train_window)  # the training job alone: its speed when nobody clicks
        alone = (_iterations(backend, job) - ia) / (time.perf_counter() - ta)
        # Paired clicks: the training process paused (SIGSTOP: idle) or running, alternating ABBA so
        # that load from other processes on a shared machine hits both alike.
        idle, busy, idle_task, busy_task = [], [], [], []
        phase_it, phase_t = _iterations(backend, job), time.perf_counter()
        for i in range(args.clicks):
            for paused in ((True, False) if i % 2 == 0 else (False, True)):
                os.kill(pid, signal.SIGSTOP if paused else signal.SIGCONT)
                time.sleep(0.2)
                ms, task_ms = block(1)
                if paused:
                    idle += ms
                    idle_task.append(task_ms)
                else:
                    busy += ms
                    busy_task.append(task_ms)
            os.kill(pid, signal.SIGCONT)
        phase_s, phase_it = time.perf_counter() - phase_t, _iterations(backend, job) - phase_it
        still = backend.state(job)
        print(f"paired: idle {statistics.median(idle):.1f} ms, training {statistics.median(busy):.1f} ms "
              f"(training {still.value})", flush=True)
        backend.cancel(job)
        final = backend.wait(job, timeout=60)
        after = block(args.blocks) if args.blocks else ([], None)
    finally:
        if "pid" in locals():
            try:
                os.kill(pid, signal.SIGCONT)  # never leave the training process stopped
            except OSError:
                pass
        backend.close()

    ratio = statistics.median(busy) / statistics.median(idle)
    p90 = _pct(busy, 90) / _pct(idle, 90)
    ref = before[0] + after[0]
    ref_ratio = statistics.median(busy) / statistics.median(ref) if ref else None
    prov = provenance(extra={**device_extra(bench_device()), "interactive torch threads": threads, "training process torch threads": lane.threads,
                             "training process nice": lane.nice, "training mode": lane.mode})
    med = lambda xs: statistics.median([x for x in xs if x is not None]) if any(x is not None for x in xs) else None  # noqa: E731
    rows = [("idle: training process paused (paired)", idle, med(idle_task)),
            ("training process running (paired)", busy, med(busy_task))]
    if args.blocks:
        rows += [("reference: no training process, before", before[0], before[1]),
                 ("reference: no training process, after", after[0], after[1])]
    lines = ["# Click latency while a training job runs", "",
             f"`benchmarks/click_under_training.py`: the click is {kind} ({source}), embedding cached; latency = "
             f"wall time from `start_job` to the result in hand; one `LocalBackend` on the CPU, {args.warmup} "
             "warm-up clicks.",
             f"The training job is a real `scribble.train` ({train_params}, the same image with synthetic scribbles "
             f"on 8 axial slices) running in its own process (pid {pid}) with {lane.threads} torch thread(s) at nice "
             f"{lane.nice}; the interactive worker has {threads} thread(s) and "
             + ("pauses training processes (SIGSTOP) for the length of each interactive job, so they never share "
                "the click's cores (`Worker._make_room`). " if backend.worker.pause_training else
                "leaves the training process its cores (fewer threads while it runs). ")
             + f"Clicks come in {args.clicks} pairs, alternating ABBA: one with the training process held stopped "
             "by this benchmark since the previous click (idle), one with it training right up to the click, so "
             "load from other processes on this shared machine hits both alike. It was still "
             f"`{still.value}` after the clicks and ended `{final.value}` when cancelled. Training speed: "
             f"{alone:.2f} iterations/s alone ({args.train_window:g} s before the clicks), "
             f"{phase_it} iterations during the {phase_s:.1f} s of paired clicks (it trains only between the "
             "'training' clicks: held stopped for the idle ones, paused by the worker during every click): the "
             "clicks come first.", "",
             "| clicks | n | median (ms) | p90 (ms) | min (ms) | task's own total (median, ms) |",
             "|---|---|---|---|---|---|"]
    for name, xs, ts in rows:
        lines.append(f"| {name} | {len(xs)} | {statistics.median(xs):.1f} | {_pct(xs, 90):.1f} | {min(xs):.1f} | "
                     + (f"{ts:.1f} |" if ts is not None else "– |"))
    lines += ["", f"**Median while training / median idle (paired): {ratio:.2f}×** (p90: {p90:.2f}×); target "
              f"≤ {TARGET}× — {'met' if ratio <= TARGET else 'NOT met'}."
              + (f" Against the reference blocks without any training process: {ref_ratio:.2f}×." if ref else ""), "",
              "The reference blocks (no training process at all, before it started and after it was cancelled) "
              "show the load drift of the shared machine over the run; see the load average in the provenance."]
    write_markdown(args.out, lines, prov)
    print(f"ratio {ratio:.2f}x (p90 {p90:.2f}x); wrote {args.out}")


def _iterations(backend, job) -> int:
    n = 0
    for e in backend.events(job):
        if e.message.startswith("iteration "):
            try:
                n = int(e.message.split()[1].split("/")[0].rstrip(","))
            except (IndexError, ValueError):
                pass
    return n


if __name__ == "__main__":
    main()
