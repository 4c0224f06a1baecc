"""Exact fast routes for CoSAM's decoder passes (what a click and the loop spend their time in).

With the embedding cached, a click is one prompted pass: SAM's frozen two-way transformer (~half of
it) and the refine head (adapter + upscaling, ~a third). On a CPU PyTorch runs these small tensors
slowly; the same graphs exported to ONNX (opset 17, dynamic batch and prompt-token count) and run in
ONNX Runtime compute the same function (float rounding, checked when built) several times faster.

Passes routed (:data:`PASSES`), each its own file:

- ``prompted``: (embedding, sparse prompt tokens, mask in {0, 1}) -> refine-head logits. The sparse
  tokens (points/box through the prompt encoder's Fourier features) stay in PyTorch: they are tiny.
- ``coarse``: embedding -> prompt-free coarse-head logits.
- ``errors``: (embedding, mask) -> error-decoder logits.
- ``score``: (embedding, sparse tokens of the mask's box, mask) -> SAM's IoU-head score (the loop's
  second judge, :meth:`CoSAM.mask_score`).

Routes: ``onnx`` and ``fp32`` (the PyTorch modules, the user's fallback); ``auto`` (the default) is
``onnx`` on a CPU when ONNX Runtime imports, else ``fp32`` (also on CUDA/MPS and for the tiny test
backbone). Files are cached with the encoder routes (``$MEDSEGSUITE_ENCODER_CACHE``), per model version
(a hash of the trained heads and the frozen prompt encoder + mask decoder) and library versions, with
the same SHA-256 sidecar: a corrupted file is reported and rebuilt (sam/encoder_routes.py).
A routed model is a shallow copy of the CoSAM model (same parameters) whose passes go through the
routes when no gradient is needed; training never sees them.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import InputError
from .params import DECODER_ROUTES
from ..sam.encoder_routes import (_versions, cache_root, load_or_build, onnxruntime_available, ort_session,
                                  weights_tag)

log = logging.getLogger(__name__)

PASSES = ("prompted", "coarse", "errors", "score")


class _Pass(nn.Module):
    """One pass of a CoSAM model as a module of its own; the frozen prompt encoder and mask decoder
    are registered here too (the model keeps them outside its own modules), so the exporter sees
    their weights as weights."""

    def __init__(self, model):
        super().__init__()
        self.m, self.pe, self.dec = model, model.prompt_encoder, model.mask_decoder


class _Prompted(_Pass):
    def forward(self, embedding, sparse, mask):
        return self.m.refine_head(*self.m.transformer(embedding, sparse, self.m.mask_dense(mask)))


class _Coarse(_Pass):
    def forward(self, embedding):
        return self.m.coarse_head(*self.m.coarse_features(embedding))


class _Errors(_Pass):
    def forward(self, embedding, mask):
        return self.m.error_decoder(embedding, self.m.mask_dense(mask), mask)


class _Score(_Pass):
    def forward(self, embedding, sparse, mask):
        return self.m.transformer(embedding, sparse, self.m.mask_dense(mask), with_iou=True)[2]


_INPUTS = {"prompted": ("embedding", "sparse", "mask"), "coarse": ("embedding",), "errors": ("embedding", "mask"),
           "score": ("embedding", "sparse", "mask")}
_WRAPPERS = {"prompted": _Prompted, "coarse": _Coarse, "errors": _Errors, "score": _Score}


def _examples(model, name: str, batch: int = 1, tokens: int = 3, seed: int = 0) -> tuple:
    """Random inputs of pass ``name`` (embedding ~ N(0, 1), a binary mask, ``tokens`` sparse tokens)."""
    g = torch.Generator().manual_seed(seed)
    pe = model.prompt_encoder
    h, w = pe.image_embedding_size
    emb = torch.randn(batch, pe.embed_dim, h, w, generator=g)
    S = model.low_res
    mask = (torch.rand(batch, 1, S, S, generator=g) > 0.5).float()
    sparse = torch.randn(batch, tokens, pe.embed_dim, generator=g)
    return {"prompted": (emb, sparse, mask), "coarse": (emb,), "errors": (emb, mask), "score": (emb, sparse, mask)}[name]


def auto_decoder_route(device: str = "cpu", backbone_name: str = "") -> str:
    if not str(device).startswith("cpu") or backbone_name.split("@")[0] == "tiny_sam":
        return "fp32"
    return "onnx" if onnxruntime_available() else "fp32"


def resolve_decoder_route(route: str | None, device: str = "cpu", backbone_name: str = "") -> str:
    route = route or "auto"
    if route not in DECODER_ROUTES:
        raise InputError(f"unknown decoder route '{route}'; use one of {', '.join(DECODER_ROUTES)}")
    resolved = auto_decoder_route(device, backbone_name) if route == "auto" else route
    if resolved == "onnx" and not str(device).startswith("cpu"):
        raise InputError(f"decoder route 'onnx' runs on the CPU only; use 'fp32' (or 'auto') on {device}")
    return resolved


def model_tag(model) -> str:
    """The version of everything a decoder pass computes with: the trained heads and the frozen parts."""
    h = hashlib.sha256()
    for m in (model, model.prompt_encoder, model.mask_decoder):
        h.update(weights_tag(m).encode())
    return h.hexdigest()[:16]


def pass_file(model, name: str, tag: str | None = None) -> Path:
    tag = tag or model_tag(model)
    return cache_root() / f"cosam-{model.backbone_name.split('@')[0]}-{tag}" / f"{name}-onnx-{_versions('onnx')}.onnx"


def _export(model, name: str, path: Path):
    inputs = _INPUTS[name]
    dyn = {k: {0: "batch"} for k in inputs}
    if "sparse" in inputs:
        dyn["sparse"] = {0: "batch", 1: "tokens"}
    dyn["logits"] = {0: "batch"}
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's tracer and constant-folding notes
        torch.onnx.export(_WRAPPERS[name](model).eval(), _examples(model, name), str(path), opset_version=17,
                          dynamo=False, input_names=list(inputs), output_names=["logits"], dynamic_axes=dyn)


def _runner(name: str, path: Path):
    """One session of one graph, with ORT's CPU memory arena, run one slice at a time. The arena keeps
    the buffers of the last runs, so a run allocates nothing new: a click needs that for speed (the prompted
    pass 113 vs 130 ms on 2 cores). One slice at a time keeps the arena at its one-slice size (a batch-8 run
    would make it keep +1.7 GB for good) and is faster per slice than a batch-8 run without the arena,
    which pays for fresh memory on every run (measured on 2 cores, ms per slice, batch 1 with arena vs
    batch 8 without: prompted 116 vs 123, error decoder 56 vs 60, coarse 116 vs 119; whole LiTS-117: loop
    25.7 vs 27.8 s, peak RSS 2.08 vs 2.40 GB)."""
    keys = _INPUTS[name]
    session = ort_session(path)

    def run(*xs):
        out = []
        for i in range(xs[0].shape[0]):
            feed = {k: x[i:i + 1].detach().float().cpu().contiguous().numpy() for k, x in zip(keys, xs)}
            out.append(torch.from_numpy(session.run(None, feed)[0]))
        return torch.cat(out)
    return run


def _check(model, name: str, run) -> float:
    """Relative max difference of the route's logits against the fp32 pass, over a batch of 1 and a
    batch of 3 (with another prompt-token count): the runner's split into single slices and the
    prompt-token axis are exercised."""
    worst = 0.0
    ref_pass = _WRAPPERS[name](model).eval()
    for batch, tokens in ((1, 3), (3, 6)):
        xs = _examples(model, name, batch, tokens, seed=batch)
        with torch.inference_mode():
            ref = ref_pass(*xs).float()
        got = run(*xs)
        if got.shape != ref.shape:
            return float("inf")
        worst = max(worst, float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12)))
    return worst


def routed_passes(model) -> dict:
    """{pass name: callable} of ``model``'s ONNX Runtime passes, from the disk cache or built (and
    checked against fp32: refused above 1e-4 relative)."""
    if not onnxruntime_available():
        raise InputError("the onnx decoder route needs onnxruntime and onnx (pip install -r requirements.txt), "
                         "or choose decoder 'fp32'")
    model = model.cpu().eval()
    tag = model_tag(model)
    out = {}
    for name in PASSES:
        out[name] = load_or_build(
            pass_file(model, name, tag), lambda p, n=name: _export(model, n, p), lambda p, n=name: _runner(n, p),
            lambda run, n=name: _check(model, n, run), True,
            {"route": "onnx", "pass": name, "backbone": model.backbone_name, "versions": _versions("onnx")},
            f"onnx decoder route ({name} pass) for a CoSAM model on {model.backbone_name}")
    return out


def with_decoder_route(model, route: str = "auto", device: str = "cpu"):
    """``model`` with its decoder passes on ``route`` (resolved per device): a shallow copy sharing its
    parameters, with ``decoder_route`` set (``fp32``: ``model`` itself). ``auto`` falls back to fp32
    with a warning when the route cannot be built."""
    resolved = resolve_decoder_route(route, device, getattr(model, "backbone_name", ""))
    if resolved == "fp32":
        return model
    try:
        passes = routed_passes(model)
    except InputError:
        raise
    except Exception as e:
        if route != "auto":
            raise
        log.warning("the onnx decoder route could not be built (%s); using fp32", e)
        return model
    fast = copy.copy(model)  # shares the modules and parameters; only the routes differ
    fast.routes = passes
    fast.decoder_route = resolved
    return fast
