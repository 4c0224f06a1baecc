"""benchmarks/gpu.sh runs every device-aware benchmark on CUDA in one call within 10 minutes: its
per-script time limits add up to at most 600 s, and no benchmark that can run on a GPU is left out."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CPU_ONLY = {"bench_device.py"}  # the device helper itself, not a benchmark


def _runs():
    text = (ROOT / "benchmarks" / "gpu.sh").read_text()
    return [(m.group(1), int(m.group(2)), m.group(3)) for m in
            re.finditer(r"^run (\S+) (\d+) benchmarks/(\S+\.py)", text, re.M)]


def test_gpu_script_fits_in_ten_minutes():
    runs = _runs()
    assert runs and sum(limit for _, limit, _ in runs) <= 600
    assert len({name for name, _, _ in runs}) == len(runs)  # one results file per run


def test_gpu_script_runs_every_device_aware_benchmark():
    listed = {script for _, _, script in _runs()}
    aware = {p.name for p in (ROOT / "benchmarks").glob("*.py")
             if "bench_device" in p.read_text() or '"--device"' in p.read_text()} - CPU_ONLY
    assert aware - listed == set()
    assert all((ROOT / "benchmarks" / s).exists() for s in listed)
