"""The device a benchmark runs on: ``$MEDSEGSUITE_BENCH_DEVICE`` (benchmarks/gpu.sh sets ``cuda``), else cpu.

On CUDA, TF32 is switched off in this process (matmul and cuDNN), so equivalence checks against fp32
compare true fp32 arithmetic; results files name the device through medsegsuite.provenance.
"""
from __future__ import annotations

import os
import time


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


def dense_peak_gflops(dev: str, n: int = 2048, repeats: int = 5) -> dict:
    """This machine's measured fp32 dense matrix-multiply throughput (GFLOP/s, best of ``repeats`` n x n
    products) per library that runs it here: torch on ``dev``, and on a CPU numpy and ONNX Runtime too.
    A run's FLOPs divided by the best of these is a floor on its time for any route that does the same
    arithmetic, so a results file can say whether a time target is reachable on the machine it ran on."""
    import numpy as np
    import torch

    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    flop = 2.0 * n ** 3

    def best(fn):
        fn()
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return flop / min(ts) / 1e9

    ta = torch.from_numpy(a).to(dev)
    sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
    out = {"torch": best(lambda: (ta @ ta, sync()))}
    if dev == "cpu":
        out["numpy"] = best(lambda: a @ a)
        try:
            import onnxruntime as ort
            from onnx import TensorProto, helper

            io = [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in ("a", "b", "y")]
            g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "mm", io[:2], io[2:])
            o = ort.SessionOptions()
            o.intra_op_num_threads, o.inter_op_num_threads = torch.get_num_threads(), 1
            s = ort.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
                                     .SerializeToString(), o, providers=["CPUExecutionProvider"])
            out["onnxruntime"] = best(lambda: s.run(None, {"a": a, "b": a}))
        except ImportError:
            pass
    return out


def loop_gflop(per_slice: dict, g_coarse: float, g_round: float) -> float:
    """GFLOP of CoSAM's loop over the segmented slices of a run (``info["per_slice"]``): each slice's
    coarse mask and its error map, and every round it ran (prompted decode and error map)."""
    return sum(g_coarse + int(p["runs"]) * g_round for p in per_slice.values())
