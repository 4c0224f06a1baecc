"""Throughput with 1 and 2 Ray Serve replicas, and Ray Serve's latency overhead against the plain server.

    .venv/bin/python benchmarks/ray_serve.py [--jobs 16] [--clients 4] [--rounds 30]
                                             [--out benchmarks/results/ray.md]

All in one run, on loopback, with the real client (`RemoteBackend`) and the unchanged server app:

* *latency*: one job's round trip (start, wait, fetch the result) of ``bench.echo`` (no compute) and a
  ``GET /v1/handshake``, on the plain server (uvicorn in this process's thread) and through Ray Serve
  (proxy -> ingress -> replica); medians, the two servers alternating round by round.
* *throughput*: ``--clients`` sessions, each running its share of ``--jobs`` ``bench.cpu`` jobs (synthetic
  image, real CPU work: Gaussian smoothing per slice) back to back; jobs per second with the plain server,
  Ray with 1 replica and Ray with 2 replicas (each replica one process with its own worker thread).

The tasks are benchmark-only (benchmarks/ray_bench_tasks.py): synthetic work, so the numbers measure
serving and scale-out, not a model.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MedSegSuite"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "MedSegSuite"), str(Path(__file__).resolve().parent),
                                            os.environ.get("PYTHONPATH", "")])

import ray_bench_tasks  # noqa: F401  (registers the bench tasks in this process too)
from medsegsuite.client import RemoteBackend
from medsegsuite.provenance import provenance, write_markdown
from medsegsuite.volume import Volume

SIZES = {"light": (160, 160, 12), "heavy": (320, 320, 32)}


def _image(seed: int = 0, size: str = "light") -> Volume:
    a = np.random.default_rng(seed).normal(0, 5, SIZES[size]).astype(np.float32)
    a[40:110, 50:120] += 100
    return Volume(a, (1.0, 1.0, 2.0))


def round_trip(c: RemoteBackend, image_id: str | None, task: str) -> float:
    t = time.perf_counter()
    j = c.start_job(task, image_id, {})
    c.wait(j)
    c.result(j)
    return time.perf_counter() - t


def handshake(c: RemoteBackend) -> float:
    t = time.perf_counter()
    c._request("GET", "/handshake", session=False)
    return time.perf_counter() - t


def throughput(url: str, clients: int, jobs: int, size: str) -> tuple[float, int]:
    """Jobs per second with ``clients`` sessions sharing ``jobs`` bench.cpu jobs; and how many
    different server processes ran them."""
    cs = [RemoteBackend(url, client_name=f"bench-{i}") for i in range(clients)]
    ids = [c.set_image(_image(i, size)) for i, c in enumerate(cs)]
    for c, i in zip(cs, ids):  # warm: first job per replica
        round_trip(c, i, "bench.cpu")
    pids = set()
    lock = threading.Lock()

    def work(c, i, n):
        for _ in range(n):
            j = c.start_job("bench.cpu", i, {})
            c.wait(j)
            r = c.result(j)
            with lock:
                pids.add(r.info["pid"])

    share = [jobs // clients + (1 if k < jobs % clients else 0) for k in range(clients)]
    t = time.perf_counter()
    ts = [threading.Thread(target=work, args=(c, i, n)) for c, i, n in zip(cs, ids, share)]
    for x in ts:
        x.start()
    for x in ts:
        x.join()
    dt = time.perf_counter() - t
    for c in cs:
        c.close()
    return jobs / dt, len(pids)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=16)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--replica-cpus", type=float, default=0.5)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/ray.md"))
    args = p.parse_args(argv)

    import ray
    from medsegsuite.server import ServerConfig, start_in_thread
    from medsegsuite.server.ray_serve import start_on_ray, stop_on_ray

    import tempfile

    audit = str(Path(tempfile.mkdtemp(prefix="medsegsuite-bench-")) / "audit.log")  # never inside the repo
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, log_to_driver=False,
             object_store_memory=200 * 2**20)
    plain = start_in_thread(ServerConfig(port=0, device="cpu", audit_log=audit))
    rows, lat = [], {}
    try:
        t0 = time.time()
        url = start_on_ray(ServerConfig(host="127.0.0.1", port=plain.config.port + 1, device="cpu",
                                        audit_log=audit),
                           replicas=1, num_cpus=args.replica_cpus, task_modules=("ray_bench_tasks",))
        start_s = time.time() - t0
        cp, cr = RemoteBackend(plain.url, client_name="lat-plain"), RemoteBackend(url, client_name="lat-ray")
        ip, ir = cp.set_image(_image()), cr.set_image(_image())
        for c, i in ((cp, ip), (cr, ir)):
            for _ in range(3):
                round_trip(c, i, "bench.echo")
        s = {k: [] for k in ("plain_job", "ray_job", "plain_hs", "ray_hs")}
        for _ in range(args.rounds):  # alternating: load from other processes hits both alike
            s["plain_job"].append(round_trip(cp, ip, "bench.echo"))
            s["ray_job"].append(round_trip(cr, ir, "bench.echo"))
            s["plain_hs"].append(handshake(cp))
            s["ray_hs"].append(handshake(cr))
        lat = {k: 1000 * statistics.median(v) for k, v in s.items()}
        cp.close()
        cr.close()
        tp = {(k, "plain"): throughput(plain.url, args.clients, args.jobs, k) for k in SIZES}
        tp.update({(k, "ray1"): throughput(url, args.clients, args.jobs, k) for k in SIZES})
        stop_on_ray()
        url = start_on_ray(ServerConfig(host="127.0.0.1", port=plain.config.port + 1, device="cpu",
                                        audit_log=audit),
                           replicas=2, num_cpus=args.replica_cpus, task_modules=("ray_bench_tasks",))
        tp.update({(k, "ray2"): throughput(url, args.clients, args.jobs, k) for k in SIZES})
        stop_on_ray()
        names = {"plain": "plain server (1 process)", "ray1": "Ray Serve, 1 replica", "ray2": "Ray Serve, 2 replicas"}
        rows = [(k, names[w], *tp[k, w]) for k in SIZES for w in names]
    finally:
        plain.stop()
        ray.shutdown()
    text = [
        "# Scale-out on Ray: throughput with 1 and 2 replicas, Ray Serve's latency overhead",
        "",
        "Regenerate: `.venv/bin/python benchmarks/ray_serve.py` (one run; all numbers below from it).",
        (f"Machine **shared** with other jobs (load average at the start of the run: {os.getloadavg()[0]:.0f}) "
        f"and {os.cpu_count()} CPU cores: ratios measured side by side matter more than absolute numbers."),
        ("Workload is **synthetic** (benchmarks/ray_bench_tasks.py): `bench.echo` does nothing, `bench.cpu` "
        "smooths and thresholds a synthetic image slice by slice (real CPU work, no model)."),
        ("Everything on loopback (127.0.0.1); plain server = uvicorn in this process's thread; Ray = local Ray, "
        f"proxy -> ingress -> replica; each replica reserves {args.replica_cpus:g} CPU."),
        f"Ray start-up (Serve up, 1 replica ready): {start_s:.0f} s.",
        "",
        f"## Latency (median of {args.rounds}, the two servers alternating)",
        "",
        "| request | plain server | Ray Serve | overhead |",
        "|---|---:|---:|---:|",
        (f"| job round trip (`bench.echo`: start, wait, result) | {lat['plain_job']:.1f} ms | {lat['ray_job']:.1f} ms "
        f"| {lat['ray_job'] - lat['plain_job']:+.1f} ms (x{lat['ray_job'] / lat['plain_job']:.2f}) |"),
        (f"| `GET /v1/handshake` | {lat['plain_hs']:.1f} ms | {lat['ray_hs']:.1f} ms | "
        f"{lat['ray_hs'] - lat['plain_hs']:+.1f} ms (x{lat['ray_hs'] / lat['plain_hs']:.2f}) |"),
        "",
        f"## Throughput ({args.jobs} `bench.cpu` jobs from {args.clients} sessions at once)",
        "",
        "*light*: 160x160x12 image (a job is mostly protocol); *heavy*: 320x320x32 (mostly compute).",
        "",
        "| image | server | jobs/s | vs 1 replica | server processes that ran jobs |",
        "|---|---|---:|---:|---:|",
    ]
    for size, name, rate, n in rows:
        one = next(r[2] for r in rows if r[0] == size and r[1] == "Ray Serve, 1 replica")
        text.append(f"| {size} {SIZES[size]} | {name} | {rate:.2f} | x{rate / one:.2f} | {n} |")
    text += ["", ("On this 2-core machine shared with other work, two replicas can at best use both cores; on a "
             "department server each replica holds its own GPU (`medsegsuite serve --ray`: one per GPU), so "
             "interactive sessions on different replicas do not queue behind each other. A job round trip "
             "through Ray adds the proxy -> ingress -> replica hops (and the replica's ASGI call) to every "
             "request.")]
    prov = provenance(extra={"ray": ray.__version__})
    write_markdown(args.out, text, prov)
    print("\n".join(text))


if __name__ == "__main__":
    main()
