"""ScribbleSeg: scribble segmentation panel (MaCo: continuous pseudo labels + masked context modelling).

Draw a few strokes per structure as segments of a "scribbles" segmentation (one segment per
structure plus one named ``background``). *Train* runs ``scribble.train`` and keeps the model;
*Segment* runs ``scribble.segment`` with it (or with a registered model); *Quick* trains on this
volume's scribbles and segments it in one job (``scribble.quick``).
"""
import os
import sys

try:  # in Slicer the extension's modules share one folder, and "MedSegSuite" (a dependency) loads first
    import MedSegSuiteLib  # noqa: F401
except ImportError:  # a source checkout (tests, batch scripts): the library sits in the hub's folder
    sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "MedSegSuite"))

import slicer  # noqa: E402

from MedSegSuiteLib.panelwidget import MethodPanelWidget  # noqa: E402
from MedSegSuiteLib.slicerbase import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,  # noqa: E402
                                       ScriptedLoadableModuleTest)

from MedSegSuiteLib.panel import MethodLogic  # noqa: E402
from MedSegSuiteLib.parameters import wrap  # noqa: E402
from MedSegSuiteLib.segments import POLICIES  # noqa: E402

TITLE = "Scribble segmentation"
MODES = ("quick", "train", "segment", "grow")  # grow: Grow from seeds, quick, no training
METHODS = ("maco", "pce", "pce+cpl", "pce+mcm")  # order of the Method box


class ScribbleSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = TITLE
        self.parent.categories = ["Segmentation.MedSegSuite"]
        self.parent.dependencies = ["MedSegSuite"]  # loads the hub first: its folder holds MedSegSuiteLib
        self.parent.contributors = ["MedSegSuite developers"]
        self.parent.helpText = (
            "Scribble a few strokes per structure (segments named after the structures, plus one "
            "named 'background'), train a model from them and segment the volume. "
            "Requires 3D Slicer 5.10 or later (Python 3.12).")
        self.parent.acknowledgementText = (
            "MaCo: continuous pseudo labels and masked context modelling for scribble-supervised segmentation. "
            "Networks and losses: MONAI (Apache-2.0).")


# ------------------------------------------------------------------------------------------------
class ScribbleSegParameters:
    """The panel's node selections, kept in the scene's parameter node (the .ui widgets carry these
    names as their SlicerParameterName)."""

    inputVolume: slicer.vtkMRMLScalarVolumeNode
    outputSegmentation: slicer.vtkMRMLSegmentationNode
    scribbles: slicer.vtkMRMLSegmentationNode


ScribbleSegParameterNode = wrap(ScribbleSegParameters)


# ------------------------------------------------------------------------------------------------
class ScribbleSegLogic(ScriptedLoadableModuleLogic, MethodLogic):
    PARAMETERS = ScribbleSegParameterNode
    MODEL_TASK = "scribble.segment"  # the registry task of the models its model list offers
    TASK = "scribble.train"
    TASKS = {"quick": "scribble.quick", "train": "scribble.train", "segment": "scribble.segment",
             "grow": "scribble.grow"}

    def __init__(self, backend_provider=None):
        ScriptedLoadableModuleLogic.__init__(self)
        MethodLogic.__init__(self, backend_provider)
        self.model_bytes = None  # the last model trained in this session (uint8 array)
        self.model_classes = None  # its class names
        self.cases = []  # more training cases: (volume node, scribbles node)

    # ---- method-specific part (MaCo scribbles) ------------------------------------------------
    def add_case(self, volume_node, scribbles_node) -> int:
        """Train on this (volume, scribbles) pair too, next to the panel's current volume. Returns
        the number of extra cases. The scribbles are read when training starts (draw more first)."""
        from medsegsuite.errors import InputError

        if volume_node is None or scribbles_node is None:
            raise InputError("select a volume and the segmentation holding its scribbles")
        if any(v is volume_node for v, _ in self.cases):
            raise InputError(f"'{volume_node.GetName()}' is already a training case")
        self.cases.append((volume_node, scribbles_node))
        return len(self.cases)

    def clear_cases(self) -> None:
        self.cases = []

    def request(self, volume, volume_node, segmentation_node, mode="quick", scribbles_node=None, model="",
                settings=None, method=None, iterations=None, continue_training=False, keep_largest=None,
                plane="axial", **_):
        """``mode``: quick | train | segment | grow (Slicer's Grow from seeds on the scribbles: quick, no
        training, the baseline a trained model must beat). ``continue_training``: start from the last model of this
        session (re-training after more scribbles). Extra cases from :meth:`add_case` join a train job.
        ``plane``: the slice plane a new model is trained on (a model segments in its own plane);
        ``settings``: more training parameters of the task's schema (iterations, lr, ...)."""
        from MedSegSuiteLib.prompts import scribble_labels
        from MedSegSuiteLib.volumes import volume_from_node

        from medsegsuite.errors import InputError

        if mode not in MODES:
            raise InputError(f"mode must be one of {MODES}")
        if segmentation_node is not None and scribbles_node is not None \
                and segmentation_node.GetID() == scribbles_node.GetID():
            raise InputError("the output segmentation is the scribbles segmentation: the prediction would overwrite "
                             "your strokes. Choose another output (or none: a new one is made)")
        task = self.TASKS[mode]
        params, inputs = {}, {}
        if mode == "grow":
            if scribbles_node is None:
                raise InputError("select the segmentation holding the scribbles")
            labels, classes = scribble_labels(scribbles_node, volume.geometry)
            return task, {"classes": classes, "unlabelled": 255}, {"scribbles": labels}
        if mode in ("quick", "train"):
            if scribbles_node is None:
                raise InputError("select the segmentation holding the scribbles")
            labels, classes = scribble_labels(scribbles_node, volume.geometry)
            params.update(settings or {})
            params.update(classes=classes, unlabelled=255, plane=plane or "axial")
            inputs["scribbles"] = labels
            if method:
                params["method"] = method
            if iterations:
                params["iterations"] = int(iterations)
            if continue_training:
                if self.model_bytes is None:
                    raise InputError("no model to continue from: train once first (or untick re-training)")
                if self.model_classes is not None and list(self.model_classes) != list(classes):
                    raise InputError(f"the last model segments {self.model_classes}, the scribbles name {classes}; "
                                     "re-train from scratch or keep the same segment names")
                inputs["init_model"] = self.model_bytes
            if mode == "train":
                for n, (vnode, snode) in enumerate(self.cases, start=1):
                    if vnode is volume_node:
                        continue
                    v = volume_from_node(vnode)
                    lab, cls = scribble_labels(snode, v.geometry, classes)
                    inputs[f"image_{n}"] = v.array
                    inputs[f"scribbles_{n}"] = lab
                    params.setdefault("case_geometry", {})[str(n)] = {
                        "spacing": list(v.spacing), "direction": [list(r) for r in v.direction]}
            elif self.cases:
                raise InputError("Quick trains on this volume only; use Train for several cases")
        elif model:
            params["model"] = model
        elif self.model_bytes is not None:
            inputs["model"] = self.model_bytes
        else:
            raise InputError("train a model first (Train), or choose a registered model")
        if mode in ("quick", "segment") and keep_largest:
            params["keep_largest"] = ["all"] if keep_largest is True else list(keep_largest)
        return task, params, inputs

    def import_result(self, task, result, volume_node, geometry, overwrite, colors):
        if "model" in result.arrays:
            self.model_bytes = result.arrays["model"]
            self.model_classes = result.info.get("classes")
        if task == "scribble.train":  # a model, no masks: nothing to write
            return None
        return MethodLogic.import_result(self, task, result, volume_node, geometry, overwrite, colors)

    def save_model(self, path) -> str:
        """Write the session's last model as a checkpoint file (usable by ``medsegsuite scribble
        segment --model`` and by the Model box)."""
        from pathlib import Path

        from medsegsuite.errors import InputError

        if self.model_bytes is None:
            raise InputError("no model trained in this session yet")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(bytes(self.model_bytes.tobytes()))
        return str(path)
    # ---- end of method-specific part ----------------------------------------------------------


# ------------------------------------------------------------------------------------------------
class ScribbleSegWidget(MethodPanelWidget):
    def setup(self):
        MethodPanelWidget.setup(self)
        from MedSegSuiteLib.gui import JobPanel

        ui_widget = slicer.util.loadUI(self.resourcePath("UI/ScribbleSeg.ui"))
        self.layout.addWidget(ui_widget)
        self.ui = slicer.util.childWidgetVariables(ui_widget)
        ui_widget.setMRMLScene(slicer.mrmlScene)
        self.logic = ScribbleSegLogic()
        self.jobPanel = JobPanel(self.logic, self.ui.applyButton, self.ui.progressBar, self.ui.statusLabel,
                                 self.onApply, on_finished=self.onFinished, on_change=self.updateButtons)
        self.ui.addCaseButton.connect("clicked(bool)", self.onAddCase)
        self.ui.clearCasesButton.connect("clicked(bool)", self.onClearCases)
        self.ui.scribblesSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateButtons)
        self.setupPanel()
        self.refreshModels()

    def enter(self):
        self.initializeParameterNode()
        self.refreshModels()

    OPTION_WIDGETS = {"method": "methodComboBox", "iterations": "iterationsSpinBox"}

    def refreshModels(self):
        """The model list and the options' tooltips come from the backend in use (local or the server),
        fetched off the GUI thread."""
        from MedSegSuiteLib.gui import apply_option_help, fill_model_combo

        def show():
            apply_option_help(self.ui, self.logic, self.OPTION_WIDGETS, "scribble.train")
            fill_model_combo(self.ui.modelComboBox, self.logic, "")

        self.jobPanel.refresh_catalogue(show)

    def updateButtons(self, *_):
        busy = self.logic.runner.busy
        seg, scribbles = self.ui.segmentationSelector.currentNode(), self.ui.scribblesSelector.currentNode()
        same = seg is not None and scribbles is not None and seg.GetID() == scribbles.GetID()
        self.ui.applyButton.enabled = busy or (self.ui.inputVolumeSelector.currentNode() is not None and not same)
        self.ui.applyButton.toolTip = ("The output segmentation is the scribbles segmentation: choose another output"
                                       if same else "")
        self.updateUndoButtons()

    def onApply(self):
        self.logic.start(self.ui.inputVolumeSelector.currentNode(), self.ui.segmentationSelector.currentNode(),
                         overwrite=POLICIES[self.ui.overwriteComboBox.currentIndex],
                         # ---- method-specific options (MaCo) ----
                         mode=MODES[self.ui.modeComboBox.currentIndex],
                         scribbles_node=self.ui.scribblesSelector.currentNode(),
                         model=self.ui.modelComboBox.currentText.strip(),
                         method=METHODS[self.ui.methodComboBox.currentIndex],
                         iterations=self.ui.iterationsSpinBox.value,
                         continue_training=self.ui.continueCheckBox.checked)

    def onAddCase(self):
        from medsegsuite.errors import InputError

        try:
            n = self.logic.add_case(self.ui.inputVolumeSelector.currentNode(), self.ui.scribblesSelector.currentNode())
        except InputError as e:
            slicer.util.errorDisplay(str(e))
            return
        self.ui.casesLabel.text = f"{n} more case(s) will be trained on"

    def onClearCases(self):
        self.logic.clear_cases()
        self.ui.casesLabel.text = "this volume only"

    def onFinished(self, runner):
        if self.logic.model_bytes is not None:
            self.ui.continueCheckBox.enabled = True
        if self.ui.segmentationSelector.currentNode() is None and self.logic.segmentation_node is not None:
            self.selectOutput(self.logic.segmentation_node)
        self.updateButtons()

    def resetLogicState(self):
        self.logic.segmentation_node = None
        self.logic.clear_cases()  # their nodes are gone
        self.ui.casesLabel.text = "this volume only"


# ------------------------------------------------------------------------------------------------
def synthetic_scribbles(scene, volume_node, reference_node, slices):
    """A scribble segmentation made from the reference (labelled synthetic): the liver eroded to a
    core stroke and a background ring far from it, on the given axial slices only."""
    import numpy as np
    from scipy import ndimage

    from MedSegSuiteLib.segments import new_segmentation_node, read_masks, write_masks
    from MedSegSuiteLib.volumes import volume_from_node

    from medsegsuite.scribble.preprocess import slice_engine

    g = volume_from_node(volume_node).geometry
    eng = slice_engine(g.shape, g.direction, "axial")  # the axial slices a scribble model is trained on
    liver = read_masks(reference_node, g, ["liver"])["liver"]
    fg = np.zeros(g.shape, bool)
    bg = np.zeros(g.shape, bool)
    for k in range(*slices):
        sl = eng.slice(liver, k)
        eng.put(fg, k, ndimage.binary_erosion(sl, iterations=6))
        far = ndimage.distance_transform_edt(~sl)
        eng.put(bg, k, (far > 6) & (far < 9))
    node = new_segmentation_node(scene, "scribbles (synthetic)", g)
    write_masks(node, {"background": bg, "liver": fg}, g, undoable=False)
    return node


class ScribbleSegTest(ScriptedLoadableModuleTest):
    """scribble.quick on LiTS-117 with synthetic scribbles on two slices (liver Dice >= 0.5 there),
    or a clean failure when the backend has no scribble tasks."""

    def setUp(self):
        pass

    def runTest(self):
        self.setUp()
        self.test_ScribbleSeg_lits()

    def test_ScribbleSeg_lits(self):
        from MedSegSuiteLib import selftest

        def prepare(scene, volume_node, ref_node):
            return {"scribbles_node": synthetic_scribbles(scene, volume_node, ref_node, selftest.SLICES)}

        selftest.run_on_lits(self, ScribbleSegLogic(), {"mode": "quick", "settings": {"iterations": 30}},
                             structure="liver", prepare=prepare)
