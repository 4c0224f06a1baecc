"""The compute floor that benchmarks/cosam_speed.py reports: a run's FLOPs from what it actually ran,
and this machine's measured matrix-multiply throughput from every library that runs it here."""
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_device import dense_peak_gflops, loop_gflop  # noqa: E402

torch.set_num_threads(2)


def test_loop_gflop_counts_each_segmented_slice_and_every_round_it_ran():
    per_slice = {3: {"runs": 0}, 7: {"runs": 2}, 11: {"runs": 4}}
    assert loop_gflop(per_slice, 7.5, 8.0) == 3 * 7.5 + 6 * 8.0
    assert loop_gflop({}, 7.5, 8.0) == 0  # an interpolated-only part costs no network FLOPs


def test_dense_peak_is_measured_per_library_on_a_cpu():
    peak = dense_peak_gflops("cpu", n=256, repeats=2)
    assert set(peak) == {"torch", "numpy", "onnxruntime"}
    assert all(math.isfinite(v) and v > 0 for v in peak.values())
