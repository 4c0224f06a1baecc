"""TestTimeAdapt: per-case test-time adaptation panel (VPTTA, GraTa, DyNA, TENT baseline).

Runs ``tta.adapt``: a frozen source model segments the volume after adapting to this case (a
Fourier prompt per image for VPTTA, gradient alignment for GraTa, BN statistics for TENT).
Writes the adapted mask, and the un-adapted one as ``<structure> (before)`` when asked.
"""
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
for _p in (_here, os.path.join(os.path.dirname(_here), "MedSegSuite")):
    if os.path.isdir(os.path.join(_p, "MedSegSuiteLib")) and _p not in sys.path:
        sys.path.append(_p)

import slicer  # noqa: E402

try:  # 3D Slicer
    import qt  # noqa: F401
    from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                               ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
    from slicer.util import VTKObservationMixin
except ImportError:  # slicer-core: logic only
    from MedSegSuiteLib.headless import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,  # noqa: F401
                                         ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget,
                                         VTKObservationMixin)

from MedSegSuiteLib.panel import MethodLogic  # noqa: E402
from MedSegSuiteLib.segments import POLICIES  # noqa: E402

TITLE = "Test-time adaptation"
METHODS = ("vptta", "grata", "tent", "dyna", "none")


class TestTimeAdapt(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = TITLE
        self.parent.categories = ["Segmentation.MedSegSuite"]
        self.parent.dependencies = []
        self.parent.contributors = ["MedSegSuite developers"]
        self.parent.helpText = (
            "Segments a case from another scanner or centre with a frozen source model that adapts "
            "to this one case at test time (VPTTA, GraTa, DyNA; TENT as baseline).")
        self.parent.acknowledgementText = ""


# ------------------------------------------------------------------------------------------------
class TestTimeAdaptLogic(ScriptedLoadableModuleLogic, MethodLogic):
    TASK = "tta.adapt"

    def __init__(self, backend_provider=None):
        ScriptedLoadableModuleLogic.__init__(self)
        MethodLogic.__init__(self, backend_provider)
        self.keep_before = False
        self.last_info = {}

    # ---- method-specific part (TTA) -----------------------------------------------------------
    def request(self, volume, volume_node, segmentation_node, model="", method="vptta", slices="all",
                keep_before=False, options=None, **_):
        from medsegsuite.errors import InputError

        if method not in METHODS:
            raise InputError(f"method must be one of {METHODS}")
        self.keep_before = bool(keep_before)
        params = {"method": method, "slices": slices or "all", "options": dict(options or {})}
        if model:
            params["model"] = model
        return self.TASK, params, {}

    def result_masks(self, result):
        self.last_info = dict(result.info)
        return {k: v for k, v in result.masks.items() if self.keep_before or not k.endswith("(before)")}
    # ---- end of method-specific part ----------------------------------------------------------


# ------------------------------------------------------------------------------------------------
class TestTimeAdaptWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from MedSegSuiteLib.gui import JobPanel

        ui_widget = slicer.util.loadUI(self.resourcePath("UI/TestTimeAdapt.ui"))
        self.layout.addWidget(ui_widget)
        self.ui = slicer.util.childWidgetVariables(ui_widget)
        ui_widget.setMRMLScene(slicer.mrmlScene)
        self.logic = TestTimeAdaptLogic()
        self.jobPanel = JobPanel(self.logic, self.ui.applyButton, self.ui.progressBar, self.ui.statusLabel,
                                 self.onApply, on_finished=self.onFinished)
        self.ui.undoButton.connect("clicked(bool)", self.onUndo)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateButtons)
        self.updateButtons()

    def updateButtons(self, *_):
        from MedSegSuiteLib.segments import can_undo

        self.ui.applyButton.enabled = self.ui.inputVolumeSelector.currentNode() is not None
        seg = self.ui.segmentationSelector.currentNode()
        self.ui.undoButton.enabled = seg is not None and can_undo(seg)

    def onApply(self):
        self.logic.start(self.ui.inputVolumeSelector.currentNode(), self.ui.segmentationSelector.currentNode(),
                         overwrite=POLICIES[self.ui.overwriteComboBox.currentIndex],
                         # ---- method-specific options (TTA) ----
                         model=self.ui.modelComboBox.currentText.strip(),
                         method=METHODS[self.ui.methodComboBox.currentIndex],
                         slices=self.ui.slicesLineEdit.text, keep_before=self.ui.keepBeforeCheckBox.checked)

    def onFinished(self, runner):
        if self.ui.segmentationSelector.currentNode() is None and self.logic.segmentation_node is not None:
            self.ui.segmentationSelector.setCurrentNode(self.logic.segmentation_node)
        self.updateButtons()

    def onUndo(self):
        seg = self.ui.segmentationSelector.currentNode()
        if seg is not None:
            self.logic.undo(seg)
        self.updateButtons()

    def cleanup(self):
        self.logic.cancel()
        self.removeObservers()


# ------------------------------------------------------------------------------------------------
class TestTimeAdaptTest(ScriptedLoadableModuleTest):
    """tta.adapt (VPTTA) on two LiTS-117 slices, written into a new segmentation, or a clean failure
    when the backend has no TTA task/source model."""

    def setUp(self):
        pass

    def runTest(self):
        self.setUp()
        self.test_TestTimeAdapt_lits()

    def test_TestTimeAdapt_lits(self):
        from MedSegSuiteLib.selftest import run_on_lits, slice_spec

        run_on_lits(self, TestTimeAdaptLogic(), {"method": "vptta", "slices": slice_spec()}, structure="liver",
                    min_dice=0.3)
