"""The extension's Slicer modules, checked without the Slicer application:

* static: every .ui parses as Qt Designer XML, every ``self.ui.<name>`` a module uses exists in its
  .ui, custom widget classes are declared, CMake files and icons are in place;
* the module files import on slicer-core (no Qt) and their Logic classes work on real MRML nodes;
* the hub's self-test (MedSegSuiteTest) runs here exactly as in Slicer.
"""
import importlib
import os
import re
import stat
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
import vtk  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODULES = ["MedSegSuite", "SelfCorrectingSAM", "ScribbleSeg", "TestTimeAdapt"]
QT_PREFIXES = ("Q", "Line")  # QWidget classes; anything else must be declared as a custom widget


def _module(name):
    path = str(ROOT / name)
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module(name)


@pytest.mark.parametrize("name", MODULES)
def test_ui_parses_and_names_used_exist(name):
    ui = ROOT / name / "Resources" / "UI" / f"{name}.ui"
    tree = ET.parse(ui)  # raises on malformed XML
    root = tree.getroot()
    assert root.tag == "ui" and root.get("version") == "4.0"
    assert root.findtext("class") == name
    top = root.find("widget")
    assert top is not None and top.get("name") == name
    widgets = {w.get("name"): w.get("class") for w in root.iter("widget")}
    names = [w.get("name") for w in root.iter("widget")]
    assert len(names) == len(set(names)), "duplicate widget names"
    custom = {c.findtext("class") for c in root.iter("customwidget")}
    undeclared = {c for c in widgets.values() if not c.startswith(QT_PREFIXES) and c not in custom}
    assert not undeclared, f"custom widget classes not declared in <customwidgets>: {undeclared}"
    for c in root.iter("connection"):  # scene hand-over to node selectors
        assert c.findtext("sender") in widgets and c.findtext("receiver") in widgets
    source = (ROOT / name / f"{name}.py").read_text()
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    assert used, "the widget uses no ui names?"
    missing = used - set(widgets)
    assert not missing, f"{name}.py uses widgets missing from {ui.name}: {sorted(missing)}"
    # every node selector gets the scene
    combos = {n for n, c in widgets.items() if c == "qMRMLNodeComboBox"}
    connected = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert combos <= connected


@pytest.mark.parametrize("name", MODULES)
def test_cmake_and_icon(name):
    from PIL import Image

    cmake = (ROOT / name / "CMakeLists.txt").read_text()
    assert "slicerMacroBuildScriptedModule" in cmake and f"set(MODULE_NAME {name})" in cmake
    assert "Resources/UI/${MODULE_NAME}.ui" in cmake and "Resources/Icons/${MODULE_NAME}.png" in cmake
    top = (ROOT / "CMakeLists.txt").read_text()
    assert f"add_subdirectory({name})" in top
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_DESCRIPTION", "EXTENSION_DEPENDS"):
        assert f"set({key} " in top
    with Image.open(ROOT / name / "Resources" / "Icons" / f"{name}.png") as im:
        assert im.format == "PNG" and min(im.size) >= 64


@pytest.mark.parametrize("name", MODULES)
def test_module_imports_on_slicer_core(name):
    mod = _module(name)
    for suffix in ("", "Widget", "Logic", "Test"):
        assert hasattr(mod, name + suffix), f"{name}.py lacks {name + suffix}"
    assert "qt" not in sys.modules
    logic = getattr(mod, name + "Logic")()
    assert logic is not None


@pytest.mark.parametrize("name", MODULES)
def test_module_metadata_passes_slicers_generic_test(name):
    """Slicer's generated generic test (WITH_GENERIC_TESTS) asserts title, categories, contributors,
    help and acknowledgement text are all set."""
    class Parent:
        pass

    parent = Parent()
    getattr(_module(name), name)(parent)
    for attr in ("title", "helpText", "acknowledgementText"):
        assert str(getattr(parent, attr, "")).strip(), f"{name}: parent.{attr} is empty"
    assert parent.categories and parent.contributors


def test_method_logics_build_requests(oblique_volume):
    from MedSegSuiteLib import prompts, segments
    from MedSegSuiteLib.volumes import matrix_to_numpy, volume_to_node

    scene = slicer.vtkMRMLScene()
    vol = volume_to_node(oblique_volume, scene, "img")
    g = oblique_volume.geometry
    m = vtk.vtkMatrix4x4()
    vol.GetIJKToRASMatrix(m)
    ras = (matrix_to_numpy(m) @ np.array([3.0, 5.0, 2.0, 1.0]))[:3]
    fid = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    fid.AddControlPoint(vtk.vtkVector3d(*ras), "p")
    prompts.set_point_sign(fid, 0, positive=False)

    cosam = _module("SelfCorrectingSAM").SelfCorrectingSAMLogic()
    task, params, inputs = cosam.request(oblique_volume, vol, None, model="m", iterations=2, slices="1:3",
                                         points_node=fid)
    assert task == "cosam.segment" and params["model"] == "m" and params["iterations"] == 2
    assert params["plane"] == "axial" and "axis" not in params
    from medsegsuite.volume import SliceEngine

    x, y, k = SliceEngine.for_volume(oblique_volume, "axial").ijk_to_slice((3, 5, 2))  # the slice engine's axial cut
    np.testing.assert_array_equal(inputs["points"], [[x, y, k, 0]])  # x = column, y = row, slice, label -

    scribbles = segments.new_segmentation_node(scene, "scribbles", g)
    fg = np.zeros(g.shape, bool); fg[2, 2:6, 3] = True
    bg = np.zeros(g.shape, bool); bg[7, :, 3] = True
    segments.write_masks(scribbles, {"background": bg, "liver": fg}, g)
    sc = _module("ScribbleSeg").ScribbleSegLogic()
    task, params, inputs = sc.request(oblique_volume, vol, None, mode="train", scribbles_node=scribbles)
    assert task == "scribble.train" and params["classes"] == ["liver"]
    assert set(np.unique(inputs["scribbles"])) == {0, 1, 255}
    from medsegsuite.errors import InputError

    with pytest.raises(InputError, match="train a model first"):
        sc.request(oblique_volume, vol, None, mode="segment")

    tta = _module("TestTimeAdapt").TestTimeAdaptLogic()
    task, params, _ = tta.request(oblique_volume, vol, None, model="src", method="grata")
    assert task == "tta.adapt" and params["method"] == "grata" and params["model"] == "src"


def test_panel_failure_writes_nothing(backend, oblique_volume):
    """A panel job that fails (here: a model that does not exist) leaves the scene unchanged."""
    from MedSegSuiteLib.jobs import Phase
    from MedSegSuiteLib.volumes import volume_to_node

    scene = slicer.vtkMRMLScene()
    vol = volume_to_node(oblique_volume, scene, "img")
    logic = _module("TestTimeAdapt").TestTimeAdaptLogic(backend_provider=lambda: backend)
    runner = logic.run(vol, None, model="no-such-model-xyz", timeout=60)
    assert runner.phase == Phase.FAILED and "no-such-model-xyz" in runner.error
    assert logic.segmentation_node is None
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0


def test_hub_settings_keep_api_key_out_of_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDSEGSUITE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEDSEGSUITE_KEYRING", "0")
    from MedSegSuiteLib import apikeys, backends

    logic = _module("MedSegSuite").MedSegSuiteLogic()
    logic.save_settings("remote", "gpu-box:8765", "cuda", api_key="s3cret-key")
    text = backends.settings_file().read_text()
    assert "gpu-box:8765" in text and "s3cret-key" not in text
    assert apikeys.load_api_key("https://gpu-box:8765") == "s3cret-key"  # no scheme: https (not loopback)
    mode = stat.S_IMODE(os.stat(apikeys.key_file()).st_mode)
    assert mode == 0o600
    assert logic.settings().mode == "remote" and logic.has_api_key("gpu-box:8765")
    from medsegsuite.errors import InputError

    with pytest.raises(InputError, match="server URL"):
        logic.save_settings("remote", "", "auto")
    with pytest.raises(InputError, match="device"):
        logic.save_settings("local", "", "tpu")


def test_dependency_check_installs_once_after_listing():
    from MedSegSuiteLib import dependencies

    assert dependencies.missing_packages({"numpy": "numpy", "no_such_mod_xyz": "no-such-pkg==1.0"}) == \
        ["no-such-pkg==1.0"]
    assert "no-such-pkg==1.0" in dependencies.confirmation_text(["no-such-pkg==1.0"])
    calls = []
    dependencies.install(["a==1", "b"], pip_install=calls.append)
    assert calls == ["a==1 b"]
    with pytest.raises(ValueError, match="slicer"):
        dependencies.install(["slicer"], pip_install=calls.append)
    assert not dependencies.wrong_slicer_package()  # slicer-core, not the PyPI 'slicer'


def test_hub_self_test_runs_on_slicer_core(backend):
    """MedSegSuiteTest: LiTS-117, sam.oracle_box on two slices through the panel logic, undo."""
    from MedSegSuiteLib.backends import set_backend

    set_backend(backend)
    test = _module("MedSegSuite").MedSegSuiteTest("runTest")
    result = test.run()
    assert result.wasSuccessful(), result.errors + result.failures


@pytest.mark.parametrize("name", MODULES)
def test_qt_is_imported_where_it_is_used(name):
    """`qt` exists only inside Slicer (slicer-core has none), so module files import it inside the
    functions that use it; a missing import would only fail in the app, where no test runs."""
    import ast

    tree = ast.parse((ROOT / name / f"{name}.py").read_text(encoding="utf-8"))
    missing = []
    for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        uses = any(isinstance(n, ast.Name) and n.id == "qt" for n in ast.walk(fn))
        imports = any(isinstance(n, ast.Import) and any(a.name == "qt" for a in n.names) for n in ast.walk(fn))
        if uses and not imports:
            missing.append(fn.name)
    assert not missing, f"{name}.py uses qt without importing it in {missing}"
