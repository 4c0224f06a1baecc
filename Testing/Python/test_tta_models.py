"""The shipped TTA source models (by registry id), the tta.adapt task and the ``medsegsuite tta`` CLI."""
import json

import numpy as np
import pytest

from medsegsuite.engine.interface import run_job
from medsegsuite.tta.network import load_source_model, slice_engine, slices_from_volume
from medsegsuite.tta.pipeline import plain_logits
from medsegsuite.tta.train import held_out


def dice(a, b):
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2 * np.logical_and(a, b).sum() / s


@pytest.fixture(scope="module")
def colin():
    from medsegsuite.sampledata import colin27_brain_mask, colin27_t1

    return colin27_t1(), colin27_brain_mask().array > 0


def _plain_dice(model_id, vol, mask, idx):
    from medsegsuite.tta.network import logits_to_slices

    src = load_source_model(model_id)
    x, _, shape2d = slices_from_volume(vol, src.card, idx)
    pred = logits_to_slices(plain_logits(src.net, x), shape2d) > 0
    ref = slice_engine(vol, src.card).stack(mask, idx)
    return src, dice(pred, ref)


def test_liver_source_loads_by_id_and_segments_held_out_slices(lits):
    ct, seg = lits
    idx = held_out(128)[4:28:3]
    src, d = _plain_dice("liver-source", ct, seg.masks["liver"], idx)
    assert src.structure == "liver" and src.card["held_out_dice"] > 0.9
    assert d > 0.9, d


def test_brain_source_loads_by_id_and_segments_held_out_slices(colin):
    t1, mask = colin
    idx = [i for i in held_out(t1.shape[2]) if mask[:, :, i].any()][8:40:4]
    src, d = _plain_dice("brain-source", t1, mask, idx)
    assert src.structure == "brain"
    assert d > 0.88, d


def test_brain_source_accepts_another_orientation_and_intensity_scale(colin, backend):
    """A T1 stored with other axis order, flips and scanner units gives the same brain."""
    from medsegsuite.volume import Volume

    t1, mask = colin
    perm = (1, 0, 2)
    a = np.transpose(t1.array.astype(np.float32), perm)[:, ::-1, :] * 37.0 + 120.0
    m = np.transpose(mask, perm)[:, ::-1, :]
    d = np.asarray(t1.direction)[:, list(perm)]
    d[:, 1] *= -1
    vol = Volume(np.ascontiguousarray(a), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), d, name="reoriented T1")
    res = run_job(backend, "tta.adapt", vol, {"model": "brain-source", "method": "none", "slices": "70:110"})
    got = res.masks["brain"]
    assert got.shape == vol.shape and list(res.masks) == ["brain"]
    k = slice(70, 110)
    assert dice(got[:, :, k], m[:, :, k]) > 0.88


def test_tta_adapt_task_returns_before_and_after_with_entropies(lits, backend):
    ct, seg = lits
    res = run_job(backend, "tta.adapt", ct, {"model": "liver-source", "method": "vptta", "slices": "60:66"})
    assert set(res.masks) == {"liver", "liver (before)"}
    info = res.info
    assert info["slices"] == list(range(60, 66)) and len(info["entropy_after"]) == 6
    assert len(info["entropy_before"]) == 6 and all(0 <= c <= 1 for c in info["confidence_after"])
    k = slice(60, 66)
    ref = seg.masks["liver"][:, :, k]
    assert dice(res.masks["liver"][:, :, k], ref) > 0.85
    assert not res.masks["liver"][:, :, :60].any()  # only the asked slices are touched
    assert res.arrays["entropy_after"].shape == (6,)


def test_tta_adapt_rejects_bad_options(lits, backend):
    from medsegsuite.errors import InputError

    # refused at submission, before any job exists (the options dict is checked with the schema)
    with pytest.raises(InputError, match="unknown option"):
        run_job(backend, "tta.adapt", lits[0], {"model": "liver-source", "method": "vptta",
                                                "options": {"learning_rate": 1}, "slices": "60:61"})
    with pytest.raises(InputError, match="option 'lr' of vptta must be a number"):
        run_job(backend, "tta.adapt", lits[0], {"model": "liver-source", "method": "vptta",
                                                "options": {"lr": "fast"}, "slices": "60:61"})


def test_cli_tta_writes_segmentation_and_report(tmp_path, lits):
    from medsegsuite.cli import build_parser, main
    from medsegsuite.io import read_segmentation, write_image

    img = write_image(lits[0], tmp_path / "ct.nii.gz")
    out, rep = tmp_path / "seg.seg.nrrd", tmp_path / "r.json"
    rc = main(["tta", "--model", "liver-source", "--method", "tent", "--image", str(img), "--out", str(out),
               "--report", str(rep), "--slices", "62:64", "-o", "lr=0.001", "--threads", "2"])
    assert rc == 0
    seg = read_segmentation(out)
    assert set(seg.names) == {"liver", "liver (before)"}
    r = json.loads(rep.read_text())
    assert r["method"] == "tent" and len(r["entropy_before"]) == 2 and r["options"]["lr"] == 0.001
    args = build_parser().parse_args(["tta", "eval", "--out", str(tmp_path / "t.md")])
    assert args.func.__name__ == "run_eval" and args.out.endswith("t.md")


def test_cli_tta_runs_on_a_server(tmp_path, lits):
    """`--server` runs the same task remotely (in-process server on loopback)."""
    from medsegsuite.cli import main
    from medsegsuite.io import read_segmentation, write_image
    from medsegsuite.server import ServerConfig, start_in_thread
    from medsegsuite.volume import Volume

    ct = lits[0]
    part = Volume(np.ascontiguousarray(ct.array[:, :, 60:63]), ct.spacing, ct.origin, ct.direction, name="part")
    img = write_image(part, tmp_path / "part.nii.gz")
    key = tmp_path / "key"
    key.write_text("tta-test-key-0123456789abcdef")
    srv = start_in_thread(ServerConfig(port=0, api_key=key.read_text(), device="cpu"))
    try:
        out = tmp_path / "remote.seg.nrrd"
        rc = main(["tta", "--server", srv.url, "--api-key-file", str(key), "--model", "liver-source",
                   "--method", "vptta", "--image", str(img), "--out", str(out)])
    finally:
        srv.stop()
    assert rc == 0
    seg = read_segmentation(out)
    ref = lits[1].masks["liver"][:, :, 60:63]
    assert dice(seg.masks["liver"], ref) > 0.85 and "liver (before)" in seg.names


def test_stream_continues_adapter_state_across_jobs(lits, backend):
    ct = lits[0]
    p = {"model": "liver-source", "method": "vptta", "slices": "60:63", "stream": "pytest-stream"}
    first = run_job(backend, "tta.adapt", ct, p).info
    second = run_job(backend, "tta.adapt", ct, p).info
    # 3 slices = one batch = one adaptation step per job; the second job continues the first's state
    assert first["stream_steps"] == 1 and second["stream_steps"] == 2
    fresh = run_job(backend, "tta.adapt", ct, {**p, "stream": None}).info
    assert "stream_steps" not in fresh


def test_eval_command_writes_the_table(tmp_path):
    from medsegsuite.cli import main

    out = tmp_path / "tta.md"
    assert main(["tta", "eval", "--out", str(out), "--datasets", "liver-source", "--methods", "none", "vptta",
                 "--shifts", "source", "offset+10HU", "--no-real"]) == 0
    text = out.read_text()
    assert "SIMULATED" in text and "| offset+10HU |" in text and "× plain" in text and "Wilcoxon" in text
    assert "VPTTA cost" in text and "**Provenance**" in text
    import json

    rows = json.loads((tmp_path / "tta.json").read_text())["rows"]
    assert {r["case"] for r in rows} == {"source", "offset+10HU"} and all("nsd" in r for r in rows)
