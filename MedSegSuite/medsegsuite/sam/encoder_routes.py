"""Routes for the frozen image encoder, chosen per device, and their on-disk cache.

The encoder is ~90 % of a slice's cost on a CPU. Exact routes compute the same function as the
fp32 PyTorch module (differences are float rounding, checked when a route is built):

- ``onnx``: exported with torch's TorchScript-based exporter (opset 17, one slice per call) and run in
  ONNX Runtime (the ``onnxruntime`` and ``onnx`` pins in requirements.txt). 1.4x fp32 on 2 AVX2
  cores, 2.5-2.9x on 2 AVX-512 cores (benchmarks/results/cosam.md names the CPU's vector extensions).
- ``script``: TorchScript trace + freeze in channels-last memory format. 1.3x (AVX2) to 1.8x (AVX-512) fp32.
- ``fp32``: the plain PyTorch module (always available; the user's fallback).
- ``bf16``: bfloat16 weights and activations (NOT exact: mask IoU ~0.99 against fp32), so a
  backbone using it gets its own name (``<name>@bf16``) and its embeddings never mix with fp32 ones.
  Slower than fp32 without AVX-512 bf16 instructions; faster than ``onnx`` with them (measured whole-volume
  Dice against the exact route: benchmarks/cosam_speed.py). Never chosen by ``auto``.

``auto`` (the default of every task that encodes) is :func:`auto_route`: ``onnx`` on a CPU when
ONNX Runtime imports, else ``script``; ``fp32`` on CUDA/MPS (PyTorch's own kernels are the fast path
there) and for the tiny test backbone (exporting it costs more than it saves).

Built routes are cached on disk per model version (a hash of the encoder's weights), route, input
size and library versions, under ``$MEDSEGSUITE_ENCODER_CACHE`` (default
``$MEDSEGSUITE_HOME/cache/encoders``). Each file has a ``.json`` sidecar with its SHA-256; a file
that does not match it, or does not load, is reported and rebuilt.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import torch

from ..errors import InputError
from .params import ROUTES

log = logging.getLogger(__name__)

EXACT = {"fp32": True, "script": True, "onnx": True, "bf16": False}
# An exact route must match fp32 to this (max abs embedding difference / max abs embedding) when built.
EXACT_TOL = 1e-4


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def auto_route(device: str = "cpu", backbone_name: str = "") -> str:
    """The fastest exact route for ``device``."""
    if not str(device).startswith("cpu") or backbone_name.split("@")[0] == "tiny_sam":
        return "fp32"
    return "onnx" if onnxruntime_available() else "script"


def resolve_route(route: str | None, device: str = "cpu", backbone_name: str = "") -> str:
    route = route or "auto"
    if route not in ROUTES:
        raise InputError(f"unknown encoder route '{route}'; use one of {', '.join(ROUTES)}")
    return auto_route(device, backbone_name) if route == "auto" else route


def cache_root() -> Path:
    env = os.environ.get("MEDSEGSUITE_ENCODER_CACHE")
    if env:
        return Path(env)
    from ..models.registry import user_home

    return user_home() / "cache" / "encoders"


def weights_tag(module) -> str:
    """A short hash of a module's parameters and buffers (names, shapes, dtypes, values): its version."""
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        t = v.detach().cpu().contiguous().reshape(-1)
        h.update(f"{k}|{tuple(v.shape)}|{v.dtype}".encode())
        if t.numel():
            h.update(t.view(torch.uint8).numpy().data)
    return h.hexdigest()[:16]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


class RoutedEncoder(torch.nn.Module):
    """An encoder behind a faster route: (B, 3, S, S) float32 -> (B, C, h, w) float32 on the CPU.
    Routes are traced with batch 1 (LiteMedSAM's TinyViT bakes the batch into its reshapes), so the
    slices of a batch run one by one (on 2 cores a batch brings no throughput anyway)."""

    def __init__(self, run, route: str, path=None):
        super().__init__()
        self._run, self.route, self.path = run, route, path

    def forward(self, x):
        x = x.detach().float().cpu()
        return torch.cat([self._run(x[i:i + 1]) for i in range(x.shape[0])])


def ort_session(path: Path):
    """An ONNX Runtime CPU session with as many threads as torch uses and no busy-waiting between runs
    (torch shares the same cores; measured: letting a click's threads spin made its p90 ~200 instead of
    ~156 ms and its follow-up pass 108 instead of 62 ms). ORT's CPU memory arena is on: it keeps its
    largest allocation for good, so feed it one shape (one slice per run: cosam/decoder_routes.py)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.enable_cpu_mem_arena = True
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _ort_session(path: Path):
    sess = ort_session(path)

    def run(x):
        return torch.from_numpy(sess.run(None, {"image": x.numpy()})[0])
    return run


def _export_onnx(encoder, image_size: int, path: Path):
    import warnings

    if not onnxruntime_available():
        raise InputError("the onnx encoder route needs onnxruntime and onnx (pip install -r requirements.txt), "
                         "or choose encoder 'script' or 'fp32'")
    example = torch.rand(1, 3, image_size, image_size)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's constant-folding notes
        torch.onnx.export(encoder.eval(), example, str(path), opset_version=17, dynamo=False,
                          input_names=["image"], output_names=["embedding"])


def _trace(encoder, image_size: int, dtype):
    import copy

    enc = copy.deepcopy(encoder).eval().to(dtype=dtype, memory_format=torch.channels_last)
    ex = torch.rand(1, 3, image_size, image_size).to(dtype=dtype).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        return torch.jit.freeze(torch.jit.trace(enc, ex, check_trace=False))


def _script_run(frozen, dtype):
    def run(x):
        with torch.inference_mode():
            return frozen(x.to(dtype=dtype).contiguous(memory_format=torch.channels_last)).float()
    return run


def _versions(route: str) -> str:
    v = f"torch{torch.__version__.split('+')[0]}"
    if route == "onnx":
        import onnxruntime

        v += f"-ort{onnxruntime.__version__}"
    return v


def route_file(encoder, route: str, image_size: int, name: str = "encoder") -> Path:
    """Where route ``route`` of ``encoder`` is cached (one file per model version, route, size, versions)."""
    ext = ".onnx" if route == "onnx" else ".pt"
    return cache_root() / f"{name.split('@')[0]}-{weights_tag(encoder)}" / f"{route}-{image_size}px-{_versions(route)}{ext}"


def _load(route: str, path: Path):
    if route == "onnx":
        return _ort_session(path)
    dtype = torch.bfloat16 if route == "bf16" else torch.float32
    return _script_run(torch.jit.load(str(path), map_location="cpu"), dtype)


def _atomic_build(path: Path, build):
    """``build(tmp)`` into a temp file next to ``path``, then a rename (a half-written file never has the name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        build(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _build(encoder, route: str, image_size: int, path: Path):
    """Write route ``route`` of ``encoder`` to ``path``."""
    if route == "onnx":
        _export_onnx(encoder, image_size, path)
    else:
        torch.jit.save(_trace(encoder, image_size, torch.bfloat16 if route == "bf16" else torch.float32), str(path))


def _check_exact(encoder, run, image_size: int) -> float:
    """Max abs difference / max abs value of the route's embedding against the fp32 module's (one image)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, image_size, image_size, generator=g)
    with torch.inference_mode():
        ref = encoder.eval()(x).float()
        got = run(x)
    return float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def load_or_build(path: Path, build, load, check, exact: bool, meta: dict, what: str):
    """The callable ``load(path)`` of a cached route file: loaded when its SHA-256 matches the ``.json``
    sidecar written when it was built; otherwise (missing, corrupted, truncated, unloadable) reported,
    ``build(tmp_path)`` again (atomically), checked (``check(run)`` = relative max difference against
    fp32, refused above :data:`EXACT_TOL` when ``exact``) and recorded. Shared by the encoder routes and
    CoSAM's decoder routes (cosam/decoder_routes.py)."""
    meta_path = path.with_suffix(path.suffix + ".json")
    if path.exists():
        try:
            recorded = json.loads(meta_path.read_text())
            if recorded.get("sha256") != _sha256(path):
                raise ValueError("its SHA-256 does not match the one recorded when it was built")
            return load(path)
        except Exception as e:  # corrupted, truncated, or written by another version: rebuild it
            reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            log.warning("route cache file %s is corrupted or unreadable (%s); rebuilding it", path, reason)
            path.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    _atomic_build(path, build)
    run = load(path)
    diff = check(run)
    if exact and diff > EXACT_TOL:
        path.unlink(missing_ok=True)
        raise RuntimeError(f"the {what} differs from fp32 by {diff:.2e} (relative), more than {EXACT_TOL:g}: not used")
    meta = {"sha256": _sha256(path), **meta, "relative_max_diff_vs_fp32": diff,
            "build_seconds": round(time.perf_counter() - t0, 2)}
    tmp = meta_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, meta_path)
    log.info("built the %s in %.1f s (%s)", what, meta["build_seconds"], path)
    return run


def routed_encoder(encoder, route: str, image_size: int, name: str = "encoder", use_cache: bool = True):
    """``encoder`` behind route ``route`` (``fp32`` returns it unchanged), from the disk cache when a
    valid file is there, else built (and checked against fp32 for exact routes) and cached."""
    if route not in EXACT:
        raise InputError(f"unknown encoder route '{route}'; use one of {', '.join(ROUTES)}")
    if route == "fp32":
        return encoder
    encoder = encoder.cpu().eval()
    if not use_cache:
        d = Path(tempfile.mkdtemp(prefix="medsegsuite-encoder-"))
        path = d / f"{route}{'.onnx' if route == 'onnx' else '.pt'}"
        _build(encoder, route, image_size, path)
        run = _load(route, path)
        return RoutedEncoder(run, route, path)
    path = route_file(encoder, route, image_size, name)
    run = load_or_build(path, lambda p: _build(encoder, route, image_size, p), lambda p: _load(route, p),
                        lambda run: _check_exact(encoder, run, image_size), EXACT[route],
                        {"route": route, "image_size": image_size, "backbone": name, "versions": _versions(route)},
                        f"{route} encoder route for {name}")
    return RoutedEncoder(run, route, path)


def with_route(backbone, route: str = "auto", device: str = "cpu"):
    """A copy of ``backbone`` (a SamBackbone) whose encoder takes ``route`` (resolved per device).

    An exact route keeps the backbone's name (its embeddings are interchangeable with fp32's); bf16
    gets ``<name>@bf16``. A fast route that cannot be built falls back to fp32 with a warning."""
    resolved = resolve_route(route, device, backbone.name)
    if resolved == "fp32":
        return dataclasses.replace(backbone, encoder_route="fp32")
    if not str(device).startswith("cpu"):
        raise InputError(f"encoder route '{resolved}' runs on the CPU only; use 'fp32' (or 'auto') on {device}")
    try:
        enc = routed_encoder(backbone.image_encoder, resolved, backbone.image_size, backbone.name)
    except InputError:
        raise
    except Exception as e:
        if route != "auto":
            raise
        log.warning("the %s encoder route could not be built (%s); using fp32", resolved, e)
        return dataclasses.replace(backbone, encoder_route="fp32")
    name = backbone.name if EXACT[resolved] else f"{backbone.name}@{resolved}"
    return dataclasses.replace(backbone, image_encoder=enc, name=name, encoder_route=resolved)
