"""Stand-ins for Slicer's GUI-side base classes, so the module files import on slicer-core.

Inside 3D Slicer the real `ScriptedLoadableModule*` classes and `VTKObservationMixin` are used;
on slicer-core (no Qt, no ``slicer.app``) these minimal bases let tests and batch scripts import
`<Module>.py` and use its Logic class. The Widget classes are never instantiated there.
"""
from __future__ import annotations

import unittest


def slicer_gui_available() -> bool:
    """True inside the 3D Slicer application (Qt and the application object exist)."""
    try:
        import slicer

        return getattr(slicer, "app", None) is not None and hasattr(slicer, "mrmlScene")
    except ImportError:
        return False


class ScriptedLoadableModule:
    def __init__(self, parent=None):
        self.parent = parent


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        self.parent = parent


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, msec=0):  # noqa: N802 - Slicer's name
        print(message)


class VTKObservationMixin:
    def __init__(self):
        self.Observations = []
