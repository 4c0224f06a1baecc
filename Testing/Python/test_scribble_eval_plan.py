"""The scribble evaluation's run plan: which (case, style, method, seed) runs it makes, and ``--resume``
keeping the runs an earlier invocation scored (a long evaluation completed over several sittings)."""
import json

from medsegsuite.scribble import evaluation as ev


def _keys(units):
    return {ev.unit_key(u[0]["id"], u[1], u[5], u[6]) for u in units}


def test_plan_runs_ablations_on_lits_annotator_only_and_mcm_over_three_seeds():
    units = ev.pending_units(["lits117"], None, list(ev.METHODS), 3, [])
    keys = _keys(units)
    for m in ("maco", "maco-nomcm"):
        assert {k[3] for k in keys if k[1] == "annotator" and k[2] == m} == {0, 1, 2}
    for style in ("skeleton", "every4"):
        assert {k[2] for k in keys if k[1] == style} == {"growcut", "maco"}
    assert {k[1] for k in keys if k[2] in ev.ABLATIONS + ev.ANNOTATOR_ABLATIONS} == {"annotator"}
    # the baseline and MaCo's first seed come first: a cut-short evaluation still reports the comparison
    assert [(u[1], u[5], u[6]) for u in units[:2]] == [("annotator", "growcut", 0), ("annotator", "maco", 0)]


def test_resume_keeps_earlier_runs_of_the_same_iterations_and_skips_them(tmp_path):
    out = tmp_path / "scribble.md"
    runs = [{"case": "lits117", "style": "annotator", "method": "growcut", "seed": 0, "seconds": 9.0,
             "iterations": ev.TRAIN["iterations"]},
            {"case": "lits117", "style": "annotator", "method": "maco", "seed": 0, "seconds": 99.0, "iterations": 50}]
    rows = [{"method": r["method"], "case": f"{r['case']}/{r['style']}", "structure": "liver", "seed": r["seed"],
             "dice": 0.8, "nsd": 0.4} for r in runs]
    (tmp_path / "scribble.json").write_text(json.dumps({"rows": rows, "runs": runs}))
    kept_rows, kept_runs = ev.earlier_runs(out, None)  # default iterations: the 50-iteration run is not kept
    assert [r["method"] for r in kept_runs] == ["growcut"] and [r["method"] for r in kept_rows] == ["growcut"]
    done = {ev.unit_key(r["case"], r["style"], r["method"], r["seed"]) for r in kept_runs}
    keys = _keys(ev.pending_units(["lits117"], ["annotator"], ["growcut", "maco"], 1, [], done))
    assert keys == {("lits117", "annotator", "maco", 0)}
    assert ev.earlier_runs(tmp_path / "none.md", None) == ([], [])
    # nothing left to run: the file is rewritten from the kept runs, which say where they came from
    ev.run_evaluation(out, None, cases=["lits117"], styles=["annotator"], methods=["growcut"], mcm_seeds=1,
                      resume=True, log=lambda m: None)
    text = out.read_text()
    assert "1 run(s) kept from an earlier invocation" in text and "| lits117/annotator | liver | 0.800 / 0.400 |" in text
    assert [r["method"] for r in json.loads((tmp_path / "scribble.json").read_text())["runs"]] == ["growcut"]


def test_soft_dice_counts_small_classes_and_ignores_padding():
    """The CPL's soft Dice: a prediction that drops a small class pays for it even though the pixel-wise CE
    barely notices; padding (an all-zero label map) does not count."""
    import torch

    from medsegsuite.scribble.losses import soft_ce, soft_dice

    soft = torch.zeros(1, 2, 64, 64)
    soft[:, 0] = 1.0
    soft[:, 0, :2, :2], soft[:, 1, :2, :2] = 0.0, 1.0  # a 4-pixel structure
    drop = torch.zeros(1, 2, 64, 64)
    drop[:, 0] = 16.0  # background everywhere
    keep = drop.clone()
    keep[:, 1, :2, :2] = 32.0
    assert soft_ce(drop, soft) < 0.05  # CE hardly sees the missing structure ...
    assert soft_dice(drop, soft) > 0.45 and soft_dice(keep, soft) < 0.01  # ... the Dice term does
    padded = torch.cat([soft, torch.zeros(1, 2, 64, 8)], dim=3)
    keep_p = torch.cat([keep, torch.zeros(1, 2, 64, 8)], dim=3)  # padding predicted 50/50
    assert abs(float(soft_dice(keep_p, padded)) - float(soft_dice(keep, soft))) < 1e-6
