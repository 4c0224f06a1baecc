"""The encoder-route parameter every encoding task shares (torch-free: the CLI builds options from it)."""
from __future__ import annotations

from ..engine.schema import Param

ROUTES = ("auto", "onnx", "script", "fp32", "bf16")

ENCODER_PARAM = Param("encoder", "choice", "auto", "image encoder route: auto (the fastest exact one for the "
                      "device: ONNX Runtime on a CPU, PyTorch on a GPU), onnx, script (TorchScript), fp32 (plain "
                      "PyTorch, the fallback) or bf16 (approximate)", choices=ROUTES)
