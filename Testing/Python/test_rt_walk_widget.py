"""Issue 16: the Structures (radiotherapy) section of the SelfCorrectingSAM panel walks a template —
add the structures, Next, Draft (CoSAM, or the ROI box + propagation), Reviewed, Approve, Reopen —
under the PythonQt stand-in (Testing/Python/pythonqt_standin.py) with slicer-core's real scene and the
real LocalBackend. Each job the panel asks for is recorded (task, params) and run as a small test task
that returns a box named after the requested structure, so the walk is exercised in seconds; the real
``sam.propagate`` and ``cosam.segment`` are tested in test_rt_propagate.py and test_cosam*.py."""
import threading

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from medsegsuite.engine import JobResult, task  # noqa: E402
from medsegsuite.volume import Geometry  # noqa: E402

import pythonqt_standin  # noqa: E402

G = Geometry((24, 20, 6), (0.8, 0.8, 2.5), (10.0, -5.0, 3.0))
BOX = (slice(4, 12), slice(5, 14), slice(1, 5))


@task("test.rtwalk.box", description="test-only: a box mask named after the requested structure")
def _box(ctx, image, params, inputs):
    m = np.zeros(image.shape, bool)
    m[BOX] = True
    name = params.get("structure") or "liver"
    return JobResult(masks={name: m}, info={"structure": name})


class Recorder:
    """The real backend; every job it is asked for is recorded and runs as test.rtwalk.box."""

    def __init__(self, real):
        self.real, self.jobs, self.lock = real, [], threading.Lock()

    def __getattr__(self, name):
        attr = getattr(self.real, name)
        if name != "start_job":
            return attr

        def start_job(task_name, image_id, params=None, inputs=None, *a, **k):
            with self.lock:
                self.jobs.append((task_name, dict(params or {})))
            return attr("test.rtwalk.box", image_id, {"structure": (params or {}).get("structure")}, inputs)
        return start_job


@pytest.fixture
def gui(monkeypatch, backend):
    with pythonqt_standin.with_volume(monkeypatch, Recorder(backend), G) as standin:
        yield standin


def _run(standin, w, timeout=30.0, phase="done"):
    import time

    w.jobPanel.calls.wait(10)
    t_end = time.time() + timeout
    while w.logic.runner.busy or w.jobPanel.calls.pending:
        assert time.time() < t_end, "the job did not end"
        standin.fire()
        time.sleep(0.01)
    standin.fire()
    assert w.logic.runner.phase.value == phase, w.logic.runner.error


def _roi(scene):
    """A markups ROI around BOX (voxel centres 4..11, 5..13, 1..4)."""
    from MedSegSuiteLib.volumes import numpy_to_matrix

    lo, hi = np.array([4, 5, 1]), np.array([11, 13, 4])
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    m = np.eye(4)
    m[:3, 3] = np.array(G.origin) + (lo + hi) / 2.0 * np.array(G.spacing)
    roi.SetAndObserveObjectToNodeMatrix(numpy_to_matrix(m))
    roi.SetSize(*((hi - lo + 1) * np.array(G.spacing)))
    return roi


def test_the_structures_section_walks_a_template(gui):
    from MedSegSuiteLib import segments as S
    from MedSegSuiteLib.structures import status

    w = pythonqt_standin.widget(gui, "SelfCorrectingSAM")
    w.jobPanel.calls.wait(10)
    gui.fire()
    w.ui.inputVolumeSelector.setCurrentNode(gui.volume)
    combo = w.ui.templateComboBox
    assert {"abdomen", "brain"} <= {t for t, _ in combo.items}
    combo.currentIndex = [t for t, _ in combo.items].index("abdomen")
    w.ui.applyTemplateButton.click()
    seg = w.ui.segmentationSelector.currentNode()
    assert seg is not None and {"Liver", "GTVp", "Spleen"} <= set(S.segment_names(seg))
    assert ("setRowCount", (14,), {}) in w.ui.structuresTableWidget.calls
    assert w.ui.structureLineEdit.text == "Liver" and "Liver" in w.ui.structureStatusLabel.text
    assert w.ui.draftButton.enabled and not w.ui.reviewedButton.enabled and not w.ui.approveButton.enabled

    # Draft the Liver: CoSAM with the panel's model
    w.ui.draftButton.click()
    _run(gui, w)
    assert gui.backend.jobs[-1][0] == "cosam.segment" and gui.backend.jobs[-1][1]["structure"] == "Liver"
    assert status(seg, "Liver") == "drafted" and w.ui.reviewedButton.enabled and not w.ui.approveButton.enabled
    liver = S.read_masks(seg, G, ["Liver"])["Liver"]
    assert liver[BOX].all()
    w.ui.reviewedButton.click()
    assert status(seg, "Liver") == "reviewed" and w.ui.approveButton.enabled
    w.ui.approveButton.click()
    assert status(seg, "Liver") == "approved" and w.ui.reopenButton.enabled and not w.ui.draftButton.enabled
    n_jobs = len(gui.backend.jobs)
    w.ui.draftButton.click()  # clicked anyway: refused, no job
    assert gui.errors and "not approved" in gui.errors[-1] and len(gui.backend.jobs) == n_jobs

    # Next: GTVp, drafted from the ROI box with propagation (no trained model)
    w.ui.nextStructureButton.click()
    assert w.walk.current == "GTVp" and w.ui.structureLineEdit.text == "GTVp"
    w.ui.roiSelector.setCurrentNode(_roi(gui.scene))
    w.ui.boxDraftCheckBox.checked = True
    w.ui.draftButton.click()
    _run(gui, w)
    name, params = gui.backend.jobs[-1]
    assert name == "sam.propagate" and params["structure"] == "GTVp" and params["slice"] == 2
    x0, y0, x1, y1 = params["box"]
    assert (x1 - x0, y1 - y0) in ((8, 9), (9, 8))  # the ROI's 8 x 9 voxels on the axial slice
    assert status(seg, "GTVp") == "drafted" and status(seg, "Liver") == "approved"

    # an AI write aimed at the approved Liver changes nothing
    w.ui.boxDraftCheckBox.checked = False
    w.ui.structureLineEdit.text = "Liver"
    w.ui.applyButton.click()
    _run(gui, w, phase="failed")
    assert "locked" in w.logic.runner.error
    assert np.array_equal(S.read_masks(seg, G, ["Liver"])["Liver"], liver)

    # the table selects a structure; Reopen sends the Liver back to reviewed, and Draft is allowed again
    row = [n for n, _ in w._structureRows].index("Liver")
    w.ui.structuresTableWidget.emit("cellClicked(int,int)", row, 0)
    assert w.walk.current == "Liver" and w.ui.reopenButton.enabled
    w.ui.reopenButton.click()
    assert status(seg, "Liver") == "reviewed" and w.ui.draftButton.enabled
    # Next skips the approved structures, wrapping round the template
    w.ui.reviewedButton.click()
    w.ui.approveButton.click()
    w.walk.select("GTVp")
    w.ui.reviewedButton.click()
    w.ui.approveButton.click()
    assert status(seg, "Liver") == status(seg, "GTVp") == "approved"
    w.walk.select("V_Venacava_I") if "V_Venacava_I" in S.segment_names(seg) else None
    w.ui.nextStructureButton.click()
    assert w.walk.current not in ("Liver", "GTVp") and w.ui.structureLineEdit.text == w.walk.current


def test_next_ends_when_every_structure_is_approved():
    from MedSegSuiteLib.structures import TemplateWalk, set_status
    from MedSegSuiteLib import segments as S
    from MedSegSuiteLib.scene import new_scene
    from medsegsuite.rt.templates import template_from_dict

    t = template_from_dict({"name": "two", "structures": [{"name": "A"}, {"name": "B"}]})
    seg = S.new_segmentation_node(new_scene(), "s", G)
    walk = TemplateWalk(t)
    assert walk.apply(seg) == ["A", "B"] and walk.current == "A"
    m = np.zeros(G.shape, bool)
    m[BOX] = True
    S.write_masks(seg, {"A": m, "B": m}, G)
    for n in ("A", "B"):
        assert walk.next(seg) == "B"  # after A; then the only one left
        for st in ("drafted", "reviewed", "approved"):
            set_status(seg, n, st)
    assert walk.next(seg) is None and not walk.can_draft(seg)


def test_the_web_structures_section_walks_a_template():
    """The web panel's section (MedSegSuiteWeb/structures_panel.py), in the web environment: built on a real
    trame server, then Add structures, Draft (CoSAM; a typed box + propagation), Reviewed, Approve (then
    Draft is refused), Next, a malformed box refused, Reopen (Testing/Python/rt_web_panel_check.py)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    web_py = root / ".venv-web" / "bin" / "python"
    if sys.platform != "linux":
        pytest.skip("the web environment is set up on Linux")
    assert web_py.exists(), "the web environment is missing: run `make setup` (scripts/setup.sh makes .venv-web)"
    p = subprocess.run([str(web_py), str(root / "Testing" / "Python" / "rt_web_panel_check.py")],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and p.stdout.strip().endswith("OK"), p.stdout[-2000:] + p.stderr[-4000:]
