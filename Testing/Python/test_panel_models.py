"""Panels offer the models of the backend in use (local registry or the server's), per method."""
import ast
from pathlib import Path

import pytest

pytest.importorskip("slicer")

ROOT = Path(__file__).resolve().parents[2]
PANELS = {"SelfCorrectingSAM": "liver", "TestTimeAdapt": "liver-source", "ScribbleSeg": None}


def _logic(name, backend):
    import importlib
    import sys

    sys.path.insert(0, str(ROOT / name))
    mod = importlib.import_module(name)
    return getattr(mod, f"{name}Logic")(lambda: backend)


@pytest.mark.parametrize("name", sorted(PANELS))
def test_model_list_comes_from_the_backend(name, backend):
    logic = _logic(name, backend)
    ids = logic.model_ids(logic.MODEL_TASK)
    expected = {m["id"] for m in backend.list_models(logic.MODEL_TASK)}
    assert set(ids) == expected
    if PANELS[name]:
        assert PANELS[name] in ids
    # only this method's models: never another method's checkpoints
    other = {m["id"] for m in backend.list_models() if m.get("task") != logic.MODEL_TASK}
    assert not set(ids) & other


@pytest.mark.parametrize("name", sorted(PANELS))
def test_widget_refreshes_its_model_list_on_setup_and_enter(name):
    tree = ast.parse((ROOT / name / f"{name}.py").read_text(encoding="utf-8"))
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{name}Widget")
    methods = {f.name: f for f in widget.body if isinstance(f, ast.FunctionDef)}
    for m in ("setup", "enter"):
        calls = {c.func.attr for c in ast.walk(methods[m]) if isinstance(c, ast.Call)
                 and isinstance(c.func, ast.Attribute)}
        assert "refreshModels" in calls, f"{name}Widget.{m} does not refresh the model list"
    src = ast.unparse(methods["refreshModels"])
    assert "fill_model_combo" in src and "modelComboBox" in src


@pytest.mark.parametrize("name", sorted(PANELS))
def test_option_tooltips_come_from_the_task_schema(name, backend):
    import re

    logic = _logic(name, backend)
    tree = ast.parse((ROOT / name / f"{name}.py").read_text(encoding="utf-8"))
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{name}Widget")
    assign = next(a for a in widget.body if isinstance(a, ast.Assign) and a.targets[0].id == "OPTION_WIDGETS")
    widgets = ast.literal_eval(assign.value)
    call = next(c for c in ast.walk(widget) if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "apply_option_help")
    task = ast.literal_eval(call.args[3]) if len(call.args) > 3 else logic.TASK
    texts = logic.param_help(task)
    ui = (ROOT / name / "Resources" / "UI" / f"{name}.ui").read_text(encoding="utf-8")
    schema = {t["name"]: {p["name"]: p for p in t["params"] or []} for t in backend.list_tasks()}[task]
    for param, w in widgets.items():
        assert param in texts, f"{name}: {task} has no parameter {param}"
        assert re.search(f'name="{w}"', ui), f"{name}.ui has no widget {w}"
        assert schema[param]["help"] in texts[param]
        if schema[param]["default"] is not None:
            assert f"default {schema[param]['default']}" in texts[param]
