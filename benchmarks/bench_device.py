"""The device a benchmark runs on: ``$MEDSEGSUITE_BENCH_DEVICE`` (benchmarks/gpu.sh sets ``cuda``), else cpu.

On CUDA, TF32 is switched off in this process (matmul and cuDNN), so equivalence checks against fp32
compare true fp32 arithmetic; results files name the device through medsegsuite.provenance.
"""
from __future__ import annotations

import os


def bench_device() -> str:
    dev = os.environ.get("MEDSEGSUITE_BENCH_DEVICE", "cpu")
    if dev.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit(f"MEDSEGSUITE_BENCH_DEVICE={dev} but torch sees no CUDA device")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return dev


def device_extra(dev: str) -> dict:
    """Facts for the results file's provenance: the device and, on CUDA, its name and the TF32 setting."""
    out = {"benchmark_device": dev}
    if dev.startswith("cuda"):
        import torch

        out["cuda_device"] = torch.cuda.get_device_name(torch.device(dev))
        out["tf32"] = "off (matmul and cuDNN, this process)"
    return out
