"""CoSAM's decoder passes on the exact ONNX Runtime route (the default on a CPU): they match fp32 on real
LiteMedSAM weights and a real CT slice, the route is chosen by the ``decoder`` parameter (fp32 stays
choosable), and a corrupted cached file is reported and rebuilt (cosam/decoder_routes.py)."""
import logging

import numpy as np
import torch

from medsegsuite.cosam import decoder_routes as dr
from medsegsuite.sam import encoder_routes as er


def _liver_model():
    from medsegsuite.models import loader
    from medsegsuite.sam import load_litemedsam

    bb = load_litemedsam("cpu")
    return loader.load_model("liver", "cpu", expect="cosam/", cache_key=(bb.name,), backbone=bb).net, bb


def test_default_decoder_route_matches_fp32_on_a_real_ct_slice(lits):
    """LiTS-117 (real CT, manual label), axial slice 64, the shipped liver CoSAM model on LiteMedSAM: every
    routed pass equals fp32 to float rounding, and the whole loop after a click gives the same mask."""
    from medsegsuite.cosam.loop import self_correct
    from medsegsuite.sam import preprocess_slice

    assert er.onnxruntime_available(), "onnxruntime is a pinned dependency (requirements.txt)"
    net, bb = _liver_model()
    fast = dr.with_decoder_route(net, "auto", "cpu")
    assert fast.decoder_route == "onnx" and set(fast.routes) == set(dr.PASSES)
    assert net.decoder_route == "fp32" and not net.routes  # the cached fp32 model is left as it was
    ct, ref = lits
    x = torch.from_numpy(preprocess_slice(_slice(ct, ct.array, 64), 256, tuple(net.card["window"])))[None]
    with torch.inference_mode():
        emb = bb.image_encoder(x)
        c32, c = net.coarse(emb), fast.coarse(emb)
        mask = (c32 > 0).float()
        e32, e = net.errors(emb, mask), fast.errors(emb, mask)
    for a, b in ((c32, c), (e32, e)):
        assert float((a - b).abs().max() / a.abs().max()) < 1e-4
    assert mask.sum() > 1000  # the liver is there
    # a click: one + point inside the liver on the low-res grid, through the whole loop
    lab = torch.nn.functional.interpolate(torch.from_numpy(_slice(ct, ref.masks["liver"], 64).astype(np.float32))[None, None],
                                          size=(net.low_res, net.low_res))
    ys, xs = np.nonzero(lab[0, 0].numpy() > 0.5)
    clicks = [(np.array([[xs[len(xs) // 2], ys[len(ys) // 2]]], np.float32), np.array([1]))]
    r32 = self_correct(net, emb, rounds=2, clicks=clicks)
    r = self_correct(fast, emb, rounds=2, clicks=clicks)
    assert r.accepted == r32.accepted and r.stop == r32.stop
    m32, m = r32.rounds[-1] > 0, r.rounds[-1] > 0
    assert m32.sum() > 1000 and int((m32 != m).sum()) <= 2  # a pixel at most exactly on the threshold


def _slice(ct, array, k):
    from medsegsuite.volume import SliceEngine

    return SliceEngine.for_volume(ct, "axial").slice(array, k)


def test_corrupted_decoder_file_is_reported_and_rebuilt(tmp_path, monkeypatch, caplog):
    """A small CoSAM model on the tiny test backbone (route forced: auto keeps it on fp32): built once and
    reused from disk; a damaged, truncated file fails its SHA-256 check, is reported and rebuilt exactly."""
    from medsegsuite.cosam.backbones import build_tiny_sam
    from medsegsuite.cosam.model import CoSAM
    from medsegsuite.cosam.prompts import Prompt

    monkeypatch.setenv("MEDSEGSUITE_ENCODER_CACHE", str(tmp_path))
    torch.manual_seed(0)
    net = CoSAM(build_tiny_sam(), error_width=16, error_depth=1, adapter_width=16, adapter_depth=1).eval()
    assert dr.resolve_decoder_route("auto", "cpu", net.backbone_name) == "fp32"
    with caplog.at_level(logging.INFO, logger="medsegsuite.sam.encoder_routes"):
        first = dr.with_decoder_route(net, "onnx", "cpu")
    assert sum("built the onnx decoder route" in r.message for r in caplog.records) == len(dr.PASSES)
    path = dr.pass_file(net, "prompted")
    assert path.exists() and path.with_suffix(".onnx.json").exists()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="medsegsuite.sam.encoder_routes"):
        dr.with_decoder_route(net, "onnx", "cpu")
    assert not caplog.records  # loaded, not rebuilt
    data = bytearray(path.read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = b"\x00" * 64
    path.write_bytes(bytes(data[: len(data) - 100]))  # damaged and truncated
    with caplog.at_level(logging.WARNING, logger="medsegsuite.sam.encoder_routes"):
        fixed = dr.with_decoder_route(net, "onnx", "cpu")
    msgs = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(msgs) == 1 and "corrupted" in msgs[0] and str(path) in msgs[0] and "rebuilding" in msgs[0]
    S = net.low_res
    emb = torch.randn(2, net.prompt_encoder.embed_dim, *net.prompt_encoder.image_embedding_size)
    mask = (torch.rand(2, 1, S, S) > 0.5).float()
    prompts = [Prompt(points=np.array([[3.0, 4.0]], np.float32), labels=np.array([1]),
                      box=np.array([1, 1, S - 2, S - 3], np.float32)),
               Prompt(points=np.array([[5.0, 6.0], [9.0, 2.0]], np.float32), labels=np.array([1, 0]))]
    with torch.inference_mode():
        ref = net.prompted(emb, prompts, mask)
        for m in (first, fixed):
            got = m.prompted(emb, prompts, mask)
            assert float((got - ref).abs().max() / ref.abs().max()) < 1e-4
    # with a gradient (training) the routed copy runs PyTorch
    assert fixed.prompted(emb, prompts, mask).requires_grad


def test_decoder_param_selects_the_route(backend, lits):
    """``decoder`` is a task parameter: the default is the fast route on a CPU, fp32 stays choosable, and a
    click in a session keeps the session's route."""
    from medsegsuite.cosam.params import SEGMENT_PARAMS
    from medsegsuite.engine.interface import run_job

    assert any(p.name == "decoder" and p.default == "auto" for p in SEGMENT_PARAMS)
    ct, _ = lits
    fast = run_job(backend, "cosam.segment", ct, {"slices": [60], "iterations": 1, "session": "dr-fast"})
    assert fast.info["decoder_route"] == "onnx"
    plain = run_job(backend, "cosam.segment", ct, {"slices": [60], "iterations": 1, "decoder": "fp32"})
    assert plain.info["decoder_route"] == "fp32"
    assert np.count_nonzero(fast.masks[fast.info["structure"]] != plain.masks[plain.info["structure"]]) <= 4
    image_id = backend.set_image(ct)
    job = backend.start_job("cosam.click", image_id, {"session": "dr-fast"},
                            {"points": np.asarray([[60.0, 60.0, 60, 1]])})
    backend.wait(job, timeout=600)
    assert backend.result(job).info["decoder_route"] == "onnx"
