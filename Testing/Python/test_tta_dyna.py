"""DyNA: the day queues cases, the night writes a new version and never replaces the deployed one."""
import json

import numpy as np
import pytest
import torch

from medsegsuite.engine.interface import run_job
from medsegsuite.models import default_registry, sha256_file
from medsegsuite.tta import dyna
from medsegsuite.tta.network import load_source_model


@pytest.fixture(scope="module")
def small_case(lits):
    from medsegsuite.volume import Volume

    ct = lits[0]
    return Volume(np.ascontiguousarray(ct.array[:, :, 58:64]), ct.spacing, ct.origin, ct.direction,
                  name="LiTS-117 part")


def test_night_writes_a_new_version_and_keeps_the_old_loadable(tmp_path, small_case):
    entry = default_registry().get("liver-source")
    sha_before = sha256_file(entry.path)
    out = tmp_path / "liver-v2.pt"
    rep = dyna.run_night("liver-source", [small_case], out, {"iterations": 3, "batch": 2})
    assert out.exists() and (tmp_path / "liver-v2.global.pt").exists()
    assert (tmp_path / "liver-v2.report.json").exists() and (tmp_path / "liver-v2.json").exists()
    card = json.loads((tmp_path / "liver-v2.json").read_text())
    assert card["dyna"]["parent"] == "liver-source" and card["dyna"]["night"] == 1
    # the parent is untouched and still loads by id (checksum verified)
    assert sha256_file(entry.path) == sha_before
    old = load_source_model("liver-source")
    new = load_source_model(str(out))
    assert any(not torch.equal(a, b) for a, b in zip(old.net.state_dict().values(), new.net.state_dict().values()))
    # versions are listed, nothing is deployed until the user chooses
    assert [v["version"] for v in dyna.versions("liver-source")] == ["liver-v2"]
    assert dyna.deployed("liver-source") == "liver-source" and rep["deployed"] == "liver-source"
    assert set(rep["comparison"]) >= {"mean_entropy", "agreement_dice"}
    # a second night from the new version carries the global student on
    rep2 = dyna.run_night(str(out), [small_case], tmp_path / "liver-v3.pt", {"iterations": 2, "batch": 2})
    card3 = json.loads((tmp_path / "liver-v3.json").read_text())
    assert card3["dyna"]["night"] == 2 and card3["dyna"]["root"] == "liver-source"
    assert len(dyna.versions("liver-source")) == 2 and rep2["parent_id"] == "liver-v2"
    assert dyna.choose_version("liver-source", "liver-v2") == str(out.resolve())
    assert dyna.deployed("liver-source") == str(out.resolve())
    dyna.choose_version("liver-source", "liver-source")
    with pytest.raises(Exception, match="never overwritten"):
        dyna.run_night("liver-source", [small_case], entry.path, {"iterations": 1})


def test_day_queues_the_case_and_night_task_runs_on_the_queue(small_case, backend):
    res = run_job(backend, "tta.adapt", small_case, {"model": "liver-source", "method": "dyna"})
    assert set(res.masks) == {"liver", "liver (before)"}
    assert res.info["queue_length"] >= 1
    st = run_job(backend, "dyna.status", None, {"model": "liver-source"}).info
    assert res.info["queued_case"] in st["queue"]
    rep = run_job(backend, "dyna.night", None, {"model": "liver-source", "options": {"iterations": 2, "batch": 2}}).info
    assert rep["cases"] >= 1 and rep["archived_cases"] >= 1
    st = run_job(backend, "dyna.status", None, {"model": "liver-source"}).info
    assert st["queue"] == [] and st["deployed"] == "liver-source"
    assert any(v["file"] == str(__import__("pathlib").Path(rep["new"]).resolve()) for v in st["versions"])


def test_evaluation_scores_next_day_dyna_on_slices_its_night_never_saw():
    from medsegsuite.tta.evaluate import eval_slices, night_slices
    from medsegsuite.tta.train import held_out

    n = 128
    ref = np.ones((n, 4, 4), bool)
    scored = eval_slices("liver-source", ref, 24)
    assert len(scored) == 24 and set(scored) <= set(held_out(n))
    assert set(night_slices(n)).isdisjoint(scored) and len(night_slices(n)) + len(held_out(n)) == n
