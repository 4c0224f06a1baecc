"""The TestTimeAdapt panel logic (GUI-free, on slicer-core): options, before/after segments, the
per-slice entropy plot nodes and the DyNA queue / versions calls."""
import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

ROOT = Path(__file__).resolve().parents[2]


def _logic_class():
    path = str(ROOT / "TestTimeAdapt")
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module("TestTimeAdapt").TestTimeAdaptLogic


def test_request_parses_and_checks_options(oblique_volume):
    from medsegsuite.errors import InputError

    logic = _logic_class()()
    task, params, _ = logic.request(oblique_volume, None, None, model="brain-source", method="vptta",
                                    options="lr=0.01 alpha=0.02")
    assert task == "tta.adapt" and params["options"] == {"lr": 0.01, "alpha": 0.02}
    with pytest.raises(InputError, match="unknown option"):
        logic.request(oblique_volume, None, None, method="grata", options="alpha=0.1")
    with pytest.raises(InputError, match="unknown method"):
        logic.request(oblique_volume, None, None, method="sam")
    assert "memory_size=40" in logic.option_help("vptta")


def test_panel_run_writes_before_and_after_segments_and_entropy_plot(lits, backend):
    from MedSegSuiteLib.jobs import Phase
    from MedSegSuiteLib.segments import read_masks
    from MedSegSuiteLib.volumes import volume_to_node

    scene = slicer.vtkMRMLScene()
    vol = volume_to_node(lits[0], scene, "ct")
    logic = _logic_class()(backend_provider=lambda: backend)
    runner = logic.run(vol, None, model="liver-source", method="tent", slices="62:65", timeout=300)
    assert runner.phase == Phase.DONE, runner.error
    masks = read_masks(logic.segmentation_node, lits[0].geometry)
    assert {"liver", "liver (before)"} <= set(masks)
    ref = lits[1].masks["liver"][:, :, 62:65]
    p = masks["liver"][:, :, 62:65]
    assert 2 * (p & ref).sum() / (p.sum() + ref.sum()) > 0.85
    assert logic.gate_text() == logic.last_info["gate"]["reason"] and "prediction" in logic.gate_text()
    series = logic.entropy_series()
    assert series["slices"] == [62, 63, 64] and len(series["after"]) == 3
    table, chart = logic.entropy_plot(scene)
    assert table.GetTable().GetNumberOfRows() == 3 and chart.GetNumberOfPlotSeriesNodes() == 2
    assert np.isclose(table.GetTable().GetValue(0, 1).ToDouble(), series["before"][0])


def test_panel_dyna_status_and_versions(backend):
    logic = _logic_class()(backend_provider=lambda: backend)
    st = logic.dyna_status("liver-source")
    assert st["deployed"] == "liver-source" and isinstance(st["versions"], list)
