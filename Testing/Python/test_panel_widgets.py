"""The panels' Widget code run under a recording PythonQt stand-in (Testing/Python/pythonqt_standin.py)
with slicer-core's real MRML scene and the real LocalBackend: the GUI thread never waits for the
backend, Continue never cancels a running job, Undo/Redo follow the output segmentation, failed runs
leave no stale TTA output, ScribbleSeg never writes into its scribbles, scene close and Reload.

The backend is the session's LocalBackend behind a recorder that notes the thread of every call and
can slow ``events()`` down (a server far away); every task it is asked for runs as the small
test task below, so the widget logic is exercised in seconds.
"""
import threading
import time

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
import vtk  # noqa: E402

from medsegsuite.engine import JobResult, task  # noqa: E402
from medsegsuite.errors import InputError  # noqa: E402
from medsegsuite.volume import Geometry  # noqa: E402

import pythonqt_standin  # noqa: E402

G = Geometry((24, 20, 6), (0.8, 0.8, 2.5), (10.0, -5.0, 3.0))
BOX = (slice(4, 12), slice(5, 14), slice(1, 5))


@task("test.widgets.box", description="test-only: a box mask with TTA-like entropy info; params fail, delay")
def _box(ctx, image, params, inputs):
    for step in range(5):
        ctx.progress(step / 5, f"step {step + 1}/5")
        time.sleep(float(params.get("delay", 0.0)))
    if params.get("fail"):
        raise InputError("test failure on purpose")
    m = np.zeros(image.shape, bool)
    m[BOX] = True
    return JobResult(masks={"liver": m}, info={
        "structure": "liver", "slices": [1, 2], "entropy_before": [0.5, 0.4], "entropy_after": [0.2, 0.1],
        "mean_entropy_before": 0.45, "mean_entropy_after": 0.15, "method": params.get("method", "x")})


class Recorder:
    """The real backend; records (method, thread) of every call; ``events()`` may be slowed down."""

    def __init__(self, real):
        self.real, self.calls, self.events_delay, self.extra = real, [], 0.0, {}

    def __getattr__(self, name):
        attr = getattr(self.real, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            self.calls.append((name, threading.current_thread()))
            if name == "events" and self.events_delay:
                time.sleep(self.events_delay)
            if name == "start_job":
                args = ("test.widgets.box", args[1], {**dict(args[2] or {}), **self.extra}, *args[3:])
            return attr(*args, **kwargs)
        return call

    def gui_calls(self, gui_thread):
        return [n for n, t in self.calls if t is gui_thread]


@pytest.fixture
def gui(monkeypatch, backend):
    with pythonqt_standin.with_volume(monkeypatch, Recorder(backend), G) as standin:
        yield standin


def run_gui(standin, w, timeout=30.0):
    """Tick the GUI timers until the panel's job ended; returns each tick's duration and phase."""
    ticks = []
    t_end = time.time() + timeout
    while w.logic.runner.busy or w.jobPanel.calls.pending:
        assert time.time() < t_end, "the job did not end"
        t0 = time.perf_counter()
        standin.fire()
        ticks.append((time.perf_counter() - t0, w.logic.runner.phase.value))
        time.sleep(0.01)
    standin.fire()
    return ticks


def settle(standin, w):
    """Let the background calls (model list) finish."""
    w.jobPanel.calls.wait(10)
    standin.fire()


def test_gui_thread_never_waits_for_a_slow_backend(gui):
    w = pythonqt_standin.widget(gui, "SelfCorrectingSAM")
    settle(gui, w)
    w.ui.inputVolumeSelector.setCurrentNode(gui.volume)
    gui.backend.events_delay = 2.0  # every events() call takes 2 s, as from a far server
    t0 = time.perf_counter()
    w.ui.applyButton.click()
    assert time.perf_counter() - t0 < 0.5  # Apply returns at once (it used to send the image first)
    assert w.ui.applyButton.text == "Cancel"
    ticks = run_gui(gui, w)
    assert w.logic.runner.phase.value == "done", w.logic.runner.error
    waiting = [d for d, phase in ticks if phase in ("starting", "running")]
    assert len(waiting) > 20 and max(waiting) < 0.05, f"{len(waiting)} ticks, slowest {max(waiting, default=0):.3f} s"
    assert gui.backend.gui_calls(gui.gui_thread) == []  # not one backend call on the GUI thread
    called = {n for n, _ in gui.backend.calls}
    assert {"set_image", "start_job", "events", "result", "list_models", "list_tasks"} <= called
    from MedSegSuiteLib.segments import read_masks

    seg = w.ui.segmentationSelector.currentNode()
    assert seg is w.logic.segmentation_node and read_masks(seg, G, ["liver"])["liver"][BOX].all()
    assert w._parameterNode.outputSegmentation is seg  # the new output is kept in the parameter node
    assert w.ui.undoButton.enabled and not w.ui.redoButton.enabled


def test_continue_while_a_job_runs_does_not_cancel_it(gui):
    w = pythonqt_standin.widget(gui, "SelfCorrectingSAM")
    settle(gui, w)
    w.ui.inputVolumeSelector.setCurrentNode(gui.volume)
    from MedSegSuiteLib.segments import new_segmentation_node

    w.ui.segmentationSelector.setCurrentNode(new_segmentation_node(gui.scene, "out", G))
    assert w.ui.continueButton.enabled
    gui.backend.extra = {"delay": 0.2}
    w.ui.applyButton.click()
    gui.fire()
    assert w.logic.runner.busy and not w.ui.continueButton.enabled  # disabled while the job runs
    w.ui.continueButton.click()  # clicked anyway (or its signal arrives late)
    assert "A job is running" in w.ui.statusLabel.text
    run_gui(gui, w)
    assert w.logic.runner.phase.value == "done", w.logic.runner.error
    assert "cancel" not in {n for n, _ in gui.backend.calls}
    assert w.ui.continueButton.enabled


def test_undo_redo_follow_the_output_segmentation(gui):
    from MedSegSuiteLib import segments as S

    w = pythonqt_standin.widget(gui, "TestTimeAdapt")
    settle(gui, w)
    a = S.new_segmentation_node(gui.scene, "A", G)
    b = S.new_segmentation_node(gui.scene, "B", G)
    w.ui.inputVolumeSelector.setCurrentNode(gui.volume)
    w.ui.segmentationSelector.setCurrentNode(a)
    w.ui.applyButton.click()
    run_gui(gui, w)
    assert w.ui.undoButton.enabled
    w.ui.segmentationSelector.setCurrentNode(b)  # another output: nothing of ours to undo there
    assert not w.ui.undoButton.enabled and not w.ui.redoButton.enabled
    w.ui.segmentationSelector.setCurrentNode(a)
    assert w.ui.undoButton.enabled
    w.ui.undoButton.click()
    assert S.segment_names(a) == [] and w.ui.redoButton.enabled and not w.ui.undoButton.enabled
    w.ui.redoButton.click()
    assert S.read_masks(a, G, ["liver"])["liver"][BOX].all() and w.ui.undoButton.enabled
    w.ui.undoButton.click()
    assert w.ui.redoButton.enabled
    a.GetSegmentation().AddEmptySegment("", "drawn by hand")  # an edit elsewhere: the panel sees it at once
    assert not w.ui.redoButton.enabled
    w.ui.applyButton.click()
    run_gui(gui, w)
    assert w.ui.undoButton.enabled and S.segment_names(a) == ["drawn by hand", "liver"]
    # a Segment Editor stroke on A: Undo refuses with a message, keeping it
    stroke = S.read_masks(a, G, ["liver"])["liver"]
    stroke[0:2, 0:2, 0] = True
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    logic.SetBinaryLabelmapToSegment(S.oriented_image(stroke.astype(np.uint8), G), a,
                                     S.segment_id(a, "liver"), logic.MODE_REPLACE)
    w.ui.undoButton.click()
    assert gui.errors and "Segment Editor's Undo" in gui.errors[-1]
    assert S.read_masks(a, G, ["liver"])["liver"][0:2, 0:2, 0].all()


def test_failed_tta_runs_leave_no_stale_entropy_and_plots_are_reused(gui):
    w = pythonqt_standin.widget(gui, "TestTimeAdapt")
    settle(gui, w)
    w.ui.inputVolumeSelector.setCurrentNode(gui.volume)
    plots = ("vtkMRMLTableNode", "vtkMRMLPlotChartNode", "vtkMRMLPlotSeriesNode")

    def count():
        return [gui.scene.GetNumberOfNodesByClass(c) for c in plots]

    w.ui.applyButton.click()
    run_gui(gui, w)
    assert "Mean entropy 0.450 before" in w.ui.statusLabel.text
    assert count() == [1, 1, 2]
    gui.backend.extra = {"fail": True}
    w.ui.applyButton.click()
    run_gui(gui, w)
    assert w.logic.runner.phase.value == "failed"
    assert "Mean entropy" not in w.ui.statusLabel.text and "test failure on purpose" in w.ui.statusLabel.text
    assert count() == [1, 1, 2] and w.logic.last_info == {}
    gui.backend.extra = {}
    w.ui.applyButton.click()
    run_gui(gui, w)
    assert count() == [1, 1, 2]  # the second success fills the same nodes


def test_scribbleseg_never_writes_into_its_scribbles(gui):
    from MedSegSuiteLib import segments as S

    w = pythonqt_standin.widget(gui, "ScribbleSeg")
    settle(gui, w)
    scribbles = S.new_segmentation_node(gui.scene, "scribbles", G)
    fg = np.zeros(G.shape, bool)
    fg[6:9, 6:9, 2] = True
    S.write_masks(scribbles, {"background": np.roll(fg, 10, axis=0), "liver": fg}, G, undoable=False)
    w.ui.inputVolumeSelector.setCurrentNode(gui.volume)
    w.ui.scribblesSelector.setCurrentNode(scribbles)
    w.ui.segmentationSelector.setCurrentNode(scribbles)
    assert not w.ui.applyButton.enabled and "scribbles" in w.ui.applyButton.toolTip
    before = S.read_masks(scribbles, G)
    w.jobPanel.on_apply()  # even if the button were pressed
    assert gui.errors and "overwrite your strokes" in gui.errors[-1]
    assert not w.logic.runner.busy
    after = S.read_masks(scribbles, G)
    assert all(np.array_equal(before[k], after[k]) for k in before) and before.keys() == after.keys()
    w.ui.segmentationSelector.setCurrentNode(None)
    assert w.ui.applyButton.enabled


def test_cosam_plus_and_minus_point_lists(gui):
    from MedSegSuiteLib.volumes import volume_from_node

    w = pythonqt_standin.widget(gui, "SelfCorrectingSAM")
    settle(gui, w)
    pos = gui.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "pos")
    neg = gui.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "neg")
    w.ui.positivePointsSelector.setCurrentNode(pos)
    w.ui.negativePointsSelector.setCurrentNode(neg)
    assert ("setCurrentNode", (neg,), {}) in w.ui.negativePlaceWidget.calls  # its place button targets it
    assert w.ui.positivePlaceWidget.props["mrmlScene"] is gui.scene
    assert w.ui.negativePlaceWidget.placeMultipleMarkups == slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups
    ijk_to_ras = G.ijk_to_ras
    pos.AddControlPoint(vtk.vtkVector3d(*(ijk_to_ras @ [5.0, 6.0, 2.0, 1.0])[:3]), "a")
    neg.AddControlPoint(vtk.vtkVector3d(*(ijk_to_ras @ [20.0, 3.0, 2.0, 1.0])[:3]), "b")
    vol = volume_from_node(gui.volume)
    task_name, params, inputs = w.logic.request(vol, gui.volume, None, model="m", points_node=w.pointNodes())
    assert inputs["points"][:, 3].tolist() == [1, 0]  # one positive, one negative: no description typed


def test_scene_close_cancels_and_forgets(gui):
    w = pythonqt_standin.widget(gui, "SelfCorrectingSAM")
    settle(gui, w)
    w.ui.inputVolumeSelector.setCurrentNode(gui.volume)
    gui.backend.extra = {"delay": 0.3}
    w.ui.applyButton.click()
    gui.fire()
    gui.scene.Clear(0)  # File > Close scene
    assert w.logic.segmentation_node is None and w.logic.runner._cancel_requested
    run_gui(gui, w)
    assert w.logic.runner.phase.value == "cancelled"
    assert gui.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0  # nothing written after close


def test_reload_reloads_the_library_and_metadata_names_the_hub(gui):
    import sys

    w = pythonqt_standin.widget(gui, "ScribbleSeg")
    settle(gui, w)
    old = sys.modules["MedSegSuiteLib.segments"].write_masks
    w.onReload()
    assert gui.reloaded == ["ScribbleSeg"]
    assert sys.modules["MedSegSuiteLib.segments"].write_masks is not old
    assert not any(t.active for t in gui.timers)  # cleanup stopped the panel's timer

    class Parent:
        pass

    for name in ("SelfCorrectingSAM", "ScribbleSeg", "TestTimeAdapt"):
        p = Parent()
        getattr(sys.modules.get(name) or __import__(name), name)(p)
        assert p.dependencies == ["MedSegSuite"]


def test_hub_waits_for_nothing(gui):
    """The hub's model list, device check and connection test run in the background."""
    w = pythonqt_standin.widget(gui, "MedSegSuite")
    w.calls.wait(30)
    gui.fire()
    assert w.ui.modelsTableWidget.calls and any(c[0] == "setRowCount" and c[1][0] > 0
                                                for c in w.ui.modelsTableWidget.calls)
    w.ui.testConnectionButton.click()
    assert w.ui.statusLabel.text == "Connecting…"
    w.calls.wait(30)
    gui.fire()
    assert w.ui.statusLabel.text.startswith("Connected:"), w.ui.statusLabel.text
    assert "local" in w.ui.deviceStatusLabel.text
    assert {"list_models", "handshake"} <= {n for n, _ in gui.backend.calls}
    assert gui.backend.gui_calls(gui.gui_thread) == []


def test_selections_live_in_the_scene_parameter_node(gui):
    """Chosen nodes are kept in the panel's parameter node: a new widget (Reload) shows them again,
    and scene close starts from a fresh parameter node."""
    from MedSegSuiteLib import segments as S

    w = pythonqt_standin.widget(gui, "ScribbleSeg")
    settle(gui, w)
    assert w.ui.inputVolumeSelector.currentNode() is gui.volume  # the first volume is preselected
    scribbles = S.new_segmentation_node(gui.scene, "scribbles", G)
    w.ui.scribblesSelector.setCurrentNode(scribbles)
    p = gui.scene.GetSingletonNode("ScribbleSeg", "vtkMRMLScriptedModuleNode")
    assert p.GetNodeReferenceID("scribbles") == scribbles.GetID()  # saved with the scene
    assert p.GetNodeReferenceID("inputVolume") == gui.volume.GetID()
    w.cleanup()
    again = pythonqt_standin.widget(gui, "ScribbleSeg")  # what Reload does
    assert again.ui.scribblesSelector.currentNode() is scribbles
    gui.scene.Clear(0)
    assert again.ui.scribblesSelector.currentNode() is None or again.ui.scribblesSelector.currentNode().GetScene() is None
    fresh = gui.scene.GetSingletonNode("ScribbleSeg", "vtkMRMLScriptedModuleNode")
    assert fresh is not None and fresh.GetNodeReferenceID("scribbles") is None
