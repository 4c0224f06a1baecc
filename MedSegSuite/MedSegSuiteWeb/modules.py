"""Import the desktop modules' Logic classes (GUI-free, they run on slicer-core) without Slicer's app."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]   # the extension's source tree


def module(name: str):
    """The module file ``<ROOT>/<name>/<name>.py`` (SelfCorrectingSAM, ScribbleSeg, TestTimeAdapt, MedSegSuite)."""
    folder = ROOT / name
    if not (folder / f"{name}.py").is_file():
        raise ImportError(f"{name}.py is not in {folder}: the web front end runs from the extension's source tree")
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    return importlib.import_module(name)


def logic(name: str, backend_provider=None):
    return getattr(module(name), f"{name}Logic")(backend_provider=backend_provider) if name != "MedSegSuite" \
        else module(name).MedSegSuiteLogic()
