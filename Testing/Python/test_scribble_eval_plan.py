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
    assert {k[1] for k in keys if k[2] in ev.ABLATIONS} == {"annotator"}
    # the baseline and MaCo's first seed come first: a cut-short evaluation still reports the comparison
    assert [(u[1], u[5], u[6]) for u in units[:2]] == [("annotator", "growcut", 0), ("annotator", "maco", 0)]


def test_resume_keeps_earlier_runs_of_the_same_iterations_and_skips_them(tmp_path):
    out = tmp_path / "scribble.md"
    runs = [{"case": "lits117", "style": "annotator", "method": "growcut", "seed": 0, "seconds": 9.0, "iterations": 200},
            {"case": "lits117", "style": "annotator", "method": "maco", "seed": 0, "seconds": 99.0, "iterations": 50}]
    rows = [{"method": r["method"], "case": f"{r['case']}/{r['style']}", "structure": "liver", "seed": r["seed"],
             "dice": 0.8, "nsd": 0.4} for r in runs]
    (tmp_path / "scribble.json").write_text(json.dumps({"rows": rows, "runs": runs}))
    kept_rows, kept_runs = ev.earlier_runs(out, None)  # default iterations (200): the 50-iteration run is not kept
    assert [r["method"] for r in kept_runs] == ["growcut"] and [r["method"] for r in kept_rows] == ["growcut"]
    done = {ev.unit_key(r["case"], r["style"], r["method"], r["seed"]) for r in kept_runs}
    keys = _keys(ev.pending_units(["lits117"], ["annotator"], ["growcut", "maco"], 1, [], done))
    assert keys == {("lits117", "annotator", "maco", 0)}
    assert ev.earlier_runs(tmp_path / "none.md", None) == ([], [])
