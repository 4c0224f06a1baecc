"""What the three method panels' Widget classes share (Qt only inside their methods, so the module
files still import on slicer-core): node selections in the scene's parameter node, Undo/Redo
buttons that follow the output segmentation, scene close, and a Reload that reloads this library too.

A panel's ``setup()`` calls :meth:`MethodPanelWidget.setupPanel` after it made ``self.ui``,
``self.logic`` and ``self.jobPanel``; its ``updateButtons()`` calls :meth:`updateUndoButtons`.
"""
from __future__ import annotations

import importlib
import sys

import slicer

from .slicerbase import ScriptedLoadableModuleWidget, VTKObservationMixin

# reloaded leaves first, so each module picks up the fresh copies of what it imports; `backends`
# (the session's backend and its worker thread) is kept
RELOAD_ORDER = ("headless", "slicerbase", "parameters", "background", "volumes", "terminology", "undo", "segments", "prompts",
                "jobs", "dependencies", "panel", "sampledata", "scene", "selftest", "gui", "panelwidget")
SEGMENTATION_EVENTS = ("SegmentAdded", "SegmentRemoved", "SegmentModified", "SourceRepresentationModified")


def reload_library() -> list[str]:
    """Reload MedSegSuiteLib's modules (the developer's Reload button); returns their names."""
    done = []
    for short in RELOAD_ORDER:
        name = f"MedSegSuiteLib.{short}"
        if name in sys.modules:
            importlib.reload(sys.modules[name])
            done.append(name)
    return done


class MethodPanelWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self._observedSegmentation = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setupPanel(self):
        """Connections every method panel has (call at the end of setup)."""
        self.ui.undoButton.connect("clicked(bool)", self.onUndo)
        self.ui.redoButton.connect("clicked(bool)", self.onRedo)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateButtons)
        self.ui.segmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onSegmentationChanged)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()
        self.onSegmentationChanged()

    # -- parameter node (selections saved with the scene) --------------------------------------------
    def initializeParameterNode(self):
        """Bind the widgets to this panel's parameter node; pick the first volume if none is chosen."""
        node = self.logic.parameter_node()
        self.setParameterNode(node)
        if node is not None and not node.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first is not None:
                node.inputVolume = first

    def setParameterNode(self, node):
        if self._parameterNode is not None and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode, self._parameterNodeGuiTag = node, None
        if node is not None:
            self._parameterNodeGuiTag = node.connectGui(self.ui)  # widgets named by SlicerParameterName

    def exit(self):
        """Leaving the module: the widgets stop following the parameter node (it stays for writes)."""
        if self._parameterNode is not None and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNodeGuiTag = None

    def selectOutput(self, node):
        """Show a new output segmentation, in the parameter node too (a job may end while the user is
        in another module: entering again shows it)."""
        if self._parameterNode is not None:
            self._parameterNode.outputSegmentation = node
        self.ui.segmentationSelector.setCurrentNode(node)

    # -- output segmentation ----------------------------------------------------------------------
    def onSegmentationChanged(self, *_):
        """Follow the chosen output segmentation: its edits change what Undo/Redo/Continue may do."""
        node = self.ui.segmentationSelector.currentNode()
        old = self._observedSegmentation
        if old is not None and old is not node:
            for event in SEGMENTATION_EVENTS:
                self.removeObserver(old, getattr(slicer.vtkSegmentation, event), self.onSegmentationEdited)
        if node is not None and node is not old:
            for event in SEGMENTATION_EVENTS:
                self.addObserver(node, getattr(slicer.vtkSegmentation, event), self.onSegmentationEdited)
        self._observedSegmentation = node
        self.updateButtons()

    def onSegmentationEdited(self, *_):
        self.updateButtons()

    def updateUndoButtons(self):
        from .segments import can_redo, can_undo

        seg = self.ui.segmentationSelector.currentNode()
        idle = not self.logic.runner.busy
        self.ui.undoButton.enabled = idle and seg is not None and can_undo(seg)
        self.ui.redoButton.enabled = idle and seg is not None and can_redo(seg)

    def _step(self, action, what: str):
        from medsegsuite.errors import InputError

        seg = self.ui.segmentationSelector.currentNode()
        if seg is None:
            return
        try:
            if not action(seg):
                self.ui.statusLabel.text = f"Nothing to {what}."
        except InputError as e:
            self.ui.statusLabel.text = f"{what.capitalize()} refused: {e}"
            slicer.util.errorDisplay(f"{what.capitalize()} refused: {e}")
        self.updateButtons()

    def onUndo(self, *_):
        self._step(self.logic.undo, "undo")

    def onRedo(self, *_):
        self._step(self.logic.redo, "redo")

    # -- scene close, reload, cleanup ---------------------------------------------------------------
    def onSceneStartClose(self, *_):
        """The nodes a running job would write into are going away: cancel it, forget their undo."""
        from . import undo

        self.logic.cancel()
        self.resetLogicState()
        undo.forget()
        self.setParameterNode(None)

    def resetLogicState(self):
        self.logic.segmentation_node = None

    def onSceneEndClose(self, *_):
        if getattr(self.parent, "isEntered", True):  # a fresh parameter node for the empty scene
            self.initializeParameterNode()
        self.onSegmentationChanged()

    def onReload(self):
        """Reload MedSegSuiteLib as well as this module file (Slicer's Reload reloads only the latter)."""
        self.cleanup()
        reload_library()
        ScriptedLoadableModuleWidget.onReload(self)

    def cleanup(self):
        self.setParameterNode(None)
        self.jobPanel.close()
        self.removeObservers()
        self._observedSegmentation = None
