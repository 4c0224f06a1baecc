"""Device choice: auto prefers CUDA, then Apple MPS, then CPU (with a warning a user can act on)."""
from __future__ import annotations

import os

from ..errors import InputError

CPU_WARNING = ("running on the CPU: SAM-family encoders take seconds per slice. Install a CUDA build "
               "of torch or connect to a GPU server (medsegsuite serve) for interactive speed.")


def resolve_device(choice: str = "auto") -> str:
    """The torch device to run on; a device this machine does not have is a one-line `InputError`
    (not a torch traceback at the first job)."""
    import torch

    choice = (choice or "auto").strip().lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if choice == "cuda" or choice.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InputError(f"device '{choice}' was asked for but torch sees no CUDA GPU on this machine "
                             f"(torch {torch.__version__}, {'a CUDA' if torch.version.cuda else 'a CPU-only'} "
                             "build): use --device auto or cpu, install a CUDA build of torch, or run on a "
                             "GPU server (--server URL)")
        if choice != "cuda":
            idx = choice.split(":", 1)[1]
            if not idx.isdigit() or int(idx) >= torch.cuda.device_count():
                raise InputError(f"device '{choice}' does not exist: this machine has "
                                 f"{torch.cuda.device_count()} CUDA GPU(s), cuda:0 to "
                                 f"cuda:{torch.cuda.device_count() - 1}")
        return choice
    if choice == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise InputError("device 'mps' was asked for but Apple MPS is not available on this machine: use "
                             "--device auto or cpu")
        return choice
    if choice != "cpu":
        raise InputError(f"unknown device '{choice}'; use auto, cuda, cuda:N, mps or cpu")
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
