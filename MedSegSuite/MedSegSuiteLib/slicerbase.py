"""The module base classes every MedSegSuite module file uses: Slicer's own inside the 3D Slicer
application, the stand-ins of :mod:`.headless` on slicer-core (tests, batch scripts)."""
try:  # 3D Slicer
    import qt  # noqa: F401  (only the application has it)
    from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                               ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
    from slicer.util import VTKObservationMixin
except ImportError:  # slicer-core: logic only
    from .headless import (ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest,
                           ScriptedLoadableModuleWidget, VTKObservationMixin)

__all__ = ["ScriptedLoadableModule", "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleTest",
           "ScriptedLoadableModuleWidget", "VTKObservationMixin"]
