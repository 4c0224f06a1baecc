"""The fast exact encoder route is the default on a CPU; it matches fp32, is cached on disk per model
version, and a corrupted cache file is reported and rebuilt (sam/encoder_routes.py)."""
import logging
import os

import numpy as np
import pytest
import torch

from medsegsuite.sam import encoder_routes as er


def test_auto_route_is_per_device():
    fast = "onnx" if er.onnxruntime_available() else "script"
    assert er.resolve_route("auto", "cpu", "litemedsam") == fast
    assert er.resolve_route("auto", "cuda", "litemedsam") == "fp32"
    assert er.resolve_route("fp32", "cpu", "litemedsam") == "fp32"
    with pytest.raises(Exception, match="unknown encoder route"):
        er.resolve_route("int4", "cpu", "litemedsam")


def test_default_route_matches_fp32_on_a_real_ct_slice(lits):
    """LiTS-117 (real CT, manual label), axial slice 64: the default route's embedding and the liver
    mask decoded from it equal fp32's to float rounding."""
    from medsegsuite.sam import load_litemedsam, preprocess_slice
    from medsegsuite.sam.predictor import SlicePredictor, component_boxes
    from medsegsuite.volume import SliceEngine

    assert er.onnxruntime_available(), "onnxruntime is a pinned dependency (requirements.txt)"
    ct, ref = lits
    lite = load_litemedsam("cpu")
    fast = er.with_route(lite, "auto", "cpu")
    assert fast.encoder_route == "onnx" and fast.name == lite.name  # exact: embeddings shared with fp32
    x = torch.from_numpy(preprocess_slice(ct.array[:, :, 64], 256, (-160.0, 240.0)))[None]
    with torch.inference_mode():
        e32 = lite.image_encoder(x)
    e = fast.image_encoder(x)
    assert e.shape == e32.shape
    rel = float((e - e32).abs().max() / e32.abs().max())
    assert rel < 1e-5, rel
    eng = SliceEngine.for_volume(ct, "axial")
    ref2d = eng.slice(ref.masks["liver"], 64)
    pred = SlicePredictor(lite, "cpu", {})
    boxes = component_boxes(ref2d)
    m32 = pred.decode(e32, ref2d.shape, boxes=boxes) > 0
    m = pred.decode(e, ref2d.shape, boxes=boxes) > 0
    assert m32.sum() > 1000 and np.count_nonzero(m != m32) <= 2  # a pixel at most exactly on the threshold


def _tiny():
    from medsegsuite.cosam.backbones import build_tiny_sam

    return build_tiny_sam()


def test_route_is_cached_on_disk_and_reused(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MEDSEGSUITE_ENCODER_CACHE", str(tmp_path))
    bb = _tiny()
    with caplog.at_level(logging.INFO, logger="medsegsuite.sam.encoder_routes"):
        first = er.with_route(bb, "onnx", "cpu")
    assert any("built the onnx encoder route" in r.message for r in caplog.records)
    path = first.image_encoder.path
    assert path.parent.parent == tmp_path and path.exists()
    assert path.with_suffix(".onnx.json").exists()
    mtime = os.stat(path).st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="medsegsuite.sam.encoder_routes"):
        again = er.with_route(bb, "onnx", "cpu")
    assert not caplog.records  # loaded, not rebuilt
    assert again.image_encoder.path == path and os.stat(path).st_mtime_ns == mtime
    x = torch.rand(2, 3, 128, 128)
    assert torch.equal(first.image_encoder(x), again.image_encoder(x))
    # another model version (changed weights) gets its own file
    with torch.no_grad():
        next(bb.image_encoder.parameters()).add_(0.01)
    assert er.with_route(bb, "onnx", "cpu").image_encoder.path != path


def test_corrupted_cache_is_reported_and_rebuilt(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MEDSEGSUITE_ENCODER_CACHE", str(tmp_path))
    bb = _tiny()
    path = er.with_route(bb, "onnx", "cpu").image_encoder.path
    data = bytearray(path.read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = b"\x00" * 64
    path.write_bytes(bytes(data[: len(data) - 100]))  # damaged and truncated
    with caplog.at_level(logging.WARNING, logger="medsegsuite.sam.encoder_routes"):
        fixed = er.with_route(bb, "onnx", "cpu")
    msgs = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert msgs and "corrupted" in msgs[0] and str(path) in msgs[0] and "rebuilding" in msgs[0]
    x = torch.rand(1, 3, 128, 128)
    with torch.inference_mode():
        ref = bb.image_encoder(x)
    assert float((fixed.image_encoder(x) - ref).abs().max()) < 1e-4 * float(ref.abs().max())


def test_encoder_param_selects_the_route(backend, lits):
    """``encoder`` is a task parameter (and CLI option): fp32 stays choosable; the default is the fast route."""
    from medsegsuite.cosam.params import SEGMENT_PARAMS
    from medsegsuite.engine.interface import run_job

    assert any(p.name == "encoder" and p.default == "auto" for p in SEGMENT_PARAMS)
    ct, _ = lits
    fast = run_job(backend, "cosam.segment", ct, {"slices": [60], "iterations": 0})
    assert fast.info["encoder_route"] == ("onnx" if er.onnxruntime_available() else "script")
    plain = run_job(backend, "cosam.segment", ct, {"slices": [62], "iterations": 0, "encoder": "fp32"})
    assert plain.info["encoder_route"] == "fp32"
