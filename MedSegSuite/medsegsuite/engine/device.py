"""Device choice: auto prefers CUDA, then Apple MPS, then CPU (with a warning a user can act on)."""
from __future__ import annotations

import os

CPU_WARNING = ("running on the CPU: SAM-family encoders take seconds per slice. Install a CUDA build "
               "of torch or connect to a GPU server (medsegsuite serve) for interactive speed.")


def resolve_device(choice: str = "auto") -> str:
    import torch

    choice = (choice or "auto").lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA GPU "
                           f"(torch {torch.__version__}, CUDA build: {torch.version.cuda is not None}); "
                           "choose 'auto' or 'cpu', or install a CUDA build of torch")
    if choice == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("device 'mps' was asked for but Apple MPS is not available")
    if choice not in ("cuda", "mps", "cpu") and not choice.startswith("cuda:"):
        raise RuntimeError(f"unknown device '{choice}'; use auto, cuda, mps or cpu")
    return choice


def set_threads(n: int | None = None) -> int:
    """Torch intra-op threads: ``MEDSEGSUITE_THREADS`` or all cores by default."""
    import torch

    n = n or int(os.environ.get("MEDSEGSUITE_THREADS", "0")) or (os.cpu_count() or 1)
    torch.set_num_threads(n)
    return n


def describe_device(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        i = torch.cuda.current_device() if device == "cuda" else int(device.split(":")[1])
        p = torch.cuda.get_device_properties(i)
        return f"{p.name} ({p.total_memory / 2**30:.0f} GiB)"
    if device == "mps":
        return "Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"
