"""TestTimeAdapt: per-case test-time adaptation panel (VPTTA, GraTa, DyNA, TENT baseline).

Runs ``tta.adapt``: a frozen source model segments the volume after adapting to this case (a
Fourier prompt per image for VPTTA, gradient alignment for GraTa, BN statistics for TENT).
Writes the adapted mask, and the un-adapted one as ``<structure> (before)`` when asked.
"""
import os
import sys

try:  # in Slicer the extension's modules share one folder, and "MedSegSuite" (a dependency) loads first
    import MedSegSuiteLib  # noqa: F401
except ImportError:  # a source checkout (tests, batch scripts): the library sits in the hub's folder
    sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "MedSegSuite"))

import slicer  # noqa: E402
import vtk  # noqa: E402

from MedSegSuiteLib.panelwidget import MethodPanelWidget  # noqa: E402
from MedSegSuiteLib.slicerbase import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,  # noqa: E402
                                       ScriptedLoadableModuleTest)

from MedSegSuiteLib.panel import MethodLogic  # noqa: E402
from MedSegSuiteLib.parameters import wrap  # noqa: E402
from MedSegSuiteLib.segments import POLICIES  # noqa: E402

TITLE = "Test-time adaptation"
METHODS = ("vptta", "grata", "tent", "dyna", "none")
PANEL_METHODS = METHODS  # the order of the method combo box entries


class TestTimeAdapt(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = TITLE
        self.parent.categories = ["Segmentation.MedSegSuite"]
        self.parent.dependencies = ["MedSegSuite"]  # loads the hub first: its folder holds MedSegSuiteLib
        self.parent.contributors = ["MedSegSuite developers"]
        self.parent.helpText = (
            "Segments a case from another scanner or centre with a frozen source model that adapts "
            "to this one case at test time (VPTTA, GraTa, DyNA; TENT as baseline). "
            "Requires 3D Slicer 5.10 or later (Python 3.12).")
        self.parent.acknowledgementText = (
            "VPTTA and GraTa follow their authors' reference implementations (Chen-Ziyang/VPTTA, "
            "Chen-Ziyang/GraTa); DyNA and TENT as published. Source networks: MONAI (Apache-2.0).")


# ------------------------------------------------------------------------------------------------
class TestTimeAdaptParameters:
    """The panel's node selections, kept in the scene's parameter node (the .ui widgets carry these
    names as their SlicerParameterName)."""

    inputVolume: slicer.vtkMRMLScalarVolumeNode
    outputSegmentation: slicer.vtkMRMLSegmentationNode


TestTimeAdaptParameterNode = wrap(TestTimeAdaptParameters)


# ------------------------------------------------------------------------------------------------
class TestTimeAdaptLogic(ScriptedLoadableModuleLogic, MethodLogic):
    PARAMETERS = TestTimeAdaptParameterNode
    MODEL_TASK = "tta"  # the registry task of the models its model list offers
    TASK = "tta.adapt"

    def __init__(self, backend_provider=None):
        ScriptedLoadableModuleLogic.__init__(self)
        MethodLogic.__init__(self, backend_provider)
        self.keep_before = True
        self.last_info = {}
        self.night_runner = None
        self.plot_nodes = None  # (table, chart, series before, series after), reused run after run

    # ---- method-specific part (TTA) -----------------------------------------------------------
    @staticmethod
    def parse_options(text) -> dict:
        """'lr=0.05 alpha=0.01' (or a dict) -> {name: value}; values parsed as JSON where they parse."""
        import json

        from medsegsuite.errors import InputError

        if isinstance(text, dict):
            return dict(text)
        out = {}
        for item in str(text or "").replace(",", " ").split():
            if "=" not in item:
                raise InputError(f"option '{item}' must look like name=value (e.g. lr=0.05)")
            k, v = item.split("=", 1)
            try:
                out[k.strip()] = json.loads(v)
            except ValueError:
                out[k.strip()] = v
        return out

    @staticmethod
    def option_help(method: str) -> str:
        from medsegsuite.tta.options import METHOD_OPTIONS

        opts = METHOD_OPTIONS.get(method, {})
        return ("options (defaults): " + ", ".join(f"{k}={v}" for k, v in opts.items())) if opts else "no options"

    def request(self, volume, volume_node, segmentation_node, model="", method="vptta", slices="all",
                keep_before=True, options=None, plane="", **_):
        """``slices`` count the model's plane (``plane``: default the one the model was trained on,
        axial for the shipped models) on the canonical grid, inferior to superior for axial."""
        from medsegsuite.tta.options import check_options

        method = (method or "vptta").lower()
        opts = self.parse_options(options)
        check_options(method, opts)  # unknown method/option: a clear error before anything runs
        self.keep_before = bool(keep_before)
        self.last_info = {}  # a failed or cancelled run leaves no entropy of an earlier one behind
        params = {"method": method, "slices": slices or "all", "options": opts}
        if model:
            params["model"] = model
        if plane:
            params["plane"] = plane
        return self.TASK, params, {}

    def result_masks(self, result):
        self.last_info = dict(result.info)
        return {k: v for k, v in result.masks.items() if self.keep_before or not k.endswith("(before)")}

    def entropy_series(self) -> dict:
        """Per-slice mean entropy (0 sure .. 1 coin flip) before and after adaptation, last run."""
        i = self.last_info
        return {"slices": list(i.get("slices", [])), "before": list(i.get("entropy_before", [])),
                "after": list(i.get("entropy_after", [])), "method": i.get("method", ""),
                "plane": i.get("plane", "axial")}

    def entropy_plot(self, scene, name: str = "TTA entropy"):
        """A table node (slice, entropy before, entropy after) and a chart node plotting both. The
        nodes of the previous call are reused (filled anew) while they are in ``scene``."""
        from medsegsuite.errors import InputError

        d = self.entropy_series()
        if not d["slices"]:
            raise InputError("run an adaptation first: there is no per-slice entropy yet")
        titles = ("slice", "entropy before", f"entropy after ({d['method']})")
        nodes = self.plot_nodes
        if nodes is None or any(n.GetScene() is not scene for n in nodes):
            nodes = self.plot_nodes = self._new_plot_nodes(scene, name)
        table, chart, before, after = nodes
        t = table.GetTable()
        was = table.StartModify()
        t.SetNumberOfRows(len(d["slices"]))
        for c, title in enumerate(titles):
            t.GetColumn(c).SetName(title)
        for r, (k, b, a) in enumerate(zip(d["slices"], d["before"], d["after"])):
            t.SetValue(r, 0, float(k))
            t.SetValue(r, 1, float(b))
            t.SetValue(r, 2, float(a))
        t.Modified()
        table.EndModify(was)
        for series, title in ((before, titles[1]), (after, titles[2])):
            series.SetName(title)
            series.SetYColumnName(title)
        chart.SetXAxisTitle(f"{d['plane']} slice")
        return table, chart

    @staticmethod
    def _new_plot_nodes(scene, name):
        table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
        for _ in range(3):
            arr = vtk.vtkFloatArray()
            table.GetTable().AddColumn(arr)
        table.GetTable().GetColumn(0).SetName("slice")
        chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name + " chart")
        chart.SetTitle("Per-slice entropy before / after adaptation")
        chart.SetYAxisTitle("mean normalised entropy")
        series = []
        for color in ((0.6, 0.6, 0.6), (0.85, 0.2, 0.1)):
            s = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", name)
            s.SetAndObserveTableNodeID(table.GetID())
            s.SetXColumnName("slice")
            s.SetPlotType(s.PlotTypeScatter)
            s.SetColor(*color)
            chart.AddAndObservePlotSeriesNodeID(s.GetID())
            series.append(s)
        return table, chart, series[0], series[1]

    # ---- DyNA: the day's queue, the night, versions -------------------------------------------
    def _call(self, task: str, params: dict) -> dict:
        from medsegsuite.engine.interface import run_job

        return run_job(self.backend(), task, None, params, timeout=60).info

    def dyna_status(self, model: str = "") -> dict:
        return self._call("dyna.status", {"model": model or "liver-source"})

    def start_night(self, model: str = "", options=None, on_change=None):
        """Queue the night job (returns its runner at once; progress and cancel as for Apply)."""
        from MedSegSuiteLib.jobs import JobRunner

        from medsegsuite.errors import InputError

        if self.night_runner is not None and self.night_runner.busy:
            raise InputError("a night adaptation is already running; cancel it first")
        self.night_runner = JobRunner(lambda: self.backend_provider(), on_change)
        self.night_runner.start("dyna.night", None, {"model": model or "liver-source",
                                                      "options": self.parse_options(options)})
        return self.night_runner

    def use_version(self, model: str, version: str) -> str:
        return self._call("dyna.use", {"model": model or "liver-source", "version": version})["deployed"]
    # ---- end of method-specific part ----------------------------------------------------------


# ------------------------------------------------------------------------------------------------
class TestTimeAdaptWidget(MethodPanelWidget):
    def __init__(self, parent=None):
        MethodPanelWidget.__init__(self, parent)
        self.nightTimer = None

    def setup(self):
        MethodPanelWidget.setup(self)
        from MedSegSuiteLib.gui import JobPanel

        ui_widget = slicer.util.loadUI(self.resourcePath("UI/TestTimeAdapt.ui"))
        self.layout.addWidget(ui_widget)
        self.ui = slicer.util.childWidgetVariables(ui_widget)
        ui_widget.setMRMLScene(slicer.mrmlScene)
        self.logic = TestTimeAdaptLogic()
        self.jobPanel = JobPanel(self.logic, self.ui.applyButton, self.ui.progressBar, self.ui.statusLabel,
                                 self.onApply, on_finished=self.onFinished, on_change=self.updateButtons)
        self.ui.methodComboBox.connect("currentIndexChanged(int)", self.onMethodChanged)
        self.ui.nightButton.connect("clicked(bool)", self.onNight)
        self.ui.useVersionButton.connect("clicked(bool)", self.onUseVersion)
        self.ui.refreshDynaButton.connect("clicked(bool)", self.refreshDyna)
        self.onMethodChanged()
        self.setupPanel()
        self.refreshModels()

    def currentMethod(self):
        return PANEL_METHODS[self.ui.methodComboBox.currentIndex]

    def currentModel(self):
        return self.ui.modelComboBox.currentText.strip() or "liver-source"

    def onMethodChanged(self, *_):
        method = self.currentMethod()
        self.ui.optionsHelpLabel.text = self.logic.option_help(method)
        self.ui.dynaCollapsibleButton.collapsed = method != "dyna"

    def enter(self):
        self.initializeParameterNode()
        self.refreshModels()

    OPTION_WIDGETS = {"model": "modelComboBox", "method": "methodComboBox", "options": "optionsLineEdit", "slices": "slicesLineEdit"}

    def refreshModels(self):
        """The model list and the options' tooltips come from the backend in use (local or the server),
        fetched off the GUI thread."""
        from MedSegSuiteLib.gui import apply_option_help, fill_model_combo

        def show():
            apply_option_help(self.ui, self.logic, self.OPTION_WIDGETS)
            fill_model_combo(self.ui.modelComboBox, self.logic, "liver-source")

        self.jobPanel.refresh_catalogue(show)

    def updateButtons(self, *_):
        self.ui.applyButton.enabled = self.logic.runner.busy or self.ui.inputVolumeSelector.currentNode() is not None
        self.updateUndoButtons()

    def onApply(self):
        self.logic.start(self.ui.inputVolumeSelector.currentNode(), self.ui.segmentationSelector.currentNode(),
                         overwrite=POLICIES[self.ui.overwriteComboBox.currentIndex],
                         # ---- method-specific options (TTA) ----
                         model=self.ui.modelComboBox.currentText.strip(),
                         method=self.currentMethod(), options=self.ui.optionsLineEdit.text,
                         slices=self.ui.slicesLineEdit.text, keep_before=self.ui.keepBeforeCheckBox.checked)

    def onFinished(self, runner):
        if self.ui.segmentationSelector.currentNode() is None and self.logic.segmentation_node is not None:
            self.selectOutput(self.logic.segmentation_node)
        if runner.phase.value == "done" and self.logic.last_info.get("entropy_after"):
            i = self.logic.last_info
            self.ui.statusLabel.text += (f"  Mean entropy {i['mean_entropy_before']:.3f} before, "
                                         f"{i['mean_entropy_after']:.3f} after.")
            try:
                _, chart = self.logic.entropy_plot(slicer.mrmlScene)
                slicer.modules.plots.logic().ShowChartInLayout(chart)
            except Exception as e:  # noqa: BLE001 - a missing plot must not hide the result
                print(f"TestTimeAdapt: no entropy plot ({e})")
            if self.currentMethod() == "dyna":
                self.refreshDyna()
        self.updateButtons()

    # DyNA: status and deploy wait for the backend's worker (behind a night job): never on the GUI thread
    def refreshDyna(self, *_):
        model = self.currentModel()
        self.ui.queueLabel.text = "asking the backend…"

        def failed(e):
            self.ui.queueLabel.text = f"unavailable: {e}"

        self.jobPanel.call(lambda: self.logic.dyna_status(model), self.showDyna, failed, name="DyNA status")

    def showDyna(self, st):
        self.ui.queueLabel.text = f"{len(st['queue'])} case(s) waiting for the night"
        self.ui.versionsComboBox.clear()
        self.ui.versionsComboBox.addItem(f"{st['model']} (original)", st["model"])
        for v in st["versions"]:
            c = v.get("comparison", {})
            ent = c.get("mean_entropy", {})
            label = (f"{v['version']} (night {v['night']}, {v['cases']} case(s); entropy "
                     f"{ent.get('parent', 0):.3f} -> {ent.get('new', 0):.3f}; agreement "
                     f"{c.get('agreement_dice', 0):.2f})")
            self.ui.versionsComboBox.addItem(label, v["version"])
        self.ui.versionsComboBox.toolTip = f"deployed: {st['deployed']}"

    def onNight(self):
        r = self.logic.night_runner
        if r is not None and r.busy:
            r.cancel()
            return
        if not slicer.util.confirmOkCancelDisplay(
                "Self-train a new version of the model on the day's cases? The deployed model is not changed; "
                "you choose the new version afterwards."):
            return
        self.logic.start_night(self.currentModel())
        self.ui.nightButton.text = "Cancel night adaptation"
        import qt

        if self.nightTimer is None:
            self.nightTimer = qt.QTimer()
            self.nightTimer.setInterval(200)
            self.nightTimer.connect("timeout()", self.pollNight)
        self.nightTimer.start()

    def pollNight(self):
        r = self.logic.night_runner
        r.poll()  # reads what the night job's worker thread reported; no backend call here
        self.ui.queueLabel.text = f"night: {int(r.fraction * 100)}% {r.message}"
        if not r.busy:
            self.nightTimer.stop()
            self.ui.nightButton.text = "Run night adaptation now"
            if r.error:
                self.ui.queueLabel.text = f"night failed: {r.error}"
            else:
                self.refreshDyna()

    def onUseVersion(self):
        version = self.ui.versionsComboBox.currentData
        if not version:
            return
        model = self.currentModel()

        def deployed(name):
            self.ui.statusLabel.text = f"deployed for DyNA: {name}"
            self.refreshDyna()

        def failed(e):
            slicer.util.errorDisplay(f"Could not deploy {version}: {e}")

        self.jobPanel.call(lambda: self.logic.use_version(model, version), deployed, failed, name="DyNA deploy")

    def resetLogicState(self):
        self.logic.segmentation_node = None
        self.logic.plot_nodes = None
        self.logic.last_info = {}

    def cleanup(self):
        if self.logic.night_runner is not None:
            self.logic.night_runner.cancel()
        if self.nightTimer is not None:
            self.nightTimer.stop()
        MethodPanelWidget.cleanup(self)


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
