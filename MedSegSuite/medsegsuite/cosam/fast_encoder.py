"""Faster CPU routes for the frozen image encoder (optional; the plain fp32 module is the default).

- ``script``: TorchScript trace + freeze in channels-last memory format. Same arithmetic as fp32
  (differences are float rounding only; the benchmark records the largest embedding difference).
- ``onnx``: exported with torch's TorchScript-based exporter (opset 17) and run in ONNX Runtime
  (``pip install onnxruntime onnx``); float32, differences are rounding only.
- ``bf16``: bfloat16 weights and activations, channels-last, traced and frozen. Not exact (mask
  IoU ~0.99 against fp32), so a backbone using it gets its own name (``<name>@bf16``) and its
  cached embeddings never mix with fp32 ones.

Traced encoders run one slice per call (the trace fixes the batch size); slices are looped.
:func:`fast_backbone` returns a copy of a :class:`~medsegsuite.sam.SamBackbone` with the encoder
swapped, to hand to :class:`~medsegsuite.sam.predictor.SlicePredictor`.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import torch

from ..errors import InputError

MODES = ("fp32", "script", "onnx", "bf16")
EXACT = {"fp32": True, "script": True, "onnx": True, "bf16": False}


class _PerSlice(torch.nn.Module):
    def __init__(self, fn, mode):
        super().__init__()
        self.fn, self.mode = fn, mode

    def forward(self, x):
        return torch.cat([self.fn(x[i:i + 1]) for i in range(x.shape[0])])


def make_fast_encoder(encoder, mode: str, image_size: int):
    if mode not in MODES:
        raise InputError(f"unknown encoder mode '{mode}'; use one of {', '.join(MODES)}")
    if mode == "fp32":
        return encoder
    example = torch.rand(1, 3, image_size, image_size)
    if mode in ("script", "bf16"):
        import copy

        dtype = torch.bfloat16 if mode == "bf16" else torch.float32
        enc = copy.deepcopy(encoder).eval().to(dtype=dtype, memory_format=torch.channels_last)
        with torch.inference_mode():
            ex = example.to(dtype=dtype).contiguous(memory_format=torch.channels_last)
            frozen = torch.jit.freeze(torch.jit.trace(enc, ex, check_trace=False))
            frozen(ex)  # warm-up runs the optimisation passes

        def run(x):
            with torch.inference_mode():
                return frozen(x.to(dtype=dtype).contiguous(memory_format=torch.channels_last)).float()
        return _PerSlice(run, mode)
    try:
        import onnxruntime as ort
    except ImportError:
        raise InputError("the onnx encoder mode needs 'pip install onnxruntime onnx'") from None
    path = Path(tempfile.mkdtemp(prefix="medsegsuite-onnx-")) / "encoder.onnx"
    with torch.inference_mode():
        torch.onnx.export(encoder.eval(), example, str(path), opset_version=17, dynamo=False,
                          input_names=["image"], output_names=["embedding"])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run_onnx(x):
        return torch.from_numpy(sess.run(None, {"image": x.detach().cpu().numpy()})[0])
    return _PerSlice(run_onnx, mode)


def fast_backbone(backbone, mode: str):
    """A copy of ``backbone`` whose encoder takes the faster route ``mode``."""
    if mode == "fp32":
        return backbone
    enc = make_fast_encoder(backbone.image_encoder, mode, backbone.image_size)
    name = backbone.name if EXACT[mode] else f"{backbone.name}@{mode}"
    return dataclasses.replace(backbone, image_encoder=enc, name=name)
