"""LiTS-117 into a scene (volume node + reference segmentation), and its SampleData registration.

The CT and labels come from the installed ``liver-ct-segmentation-package`` (see
`medsegsuite.sampledata.lits117`); nothing is downloaded.
"""
from __future__ import annotations

from medsegsuite.sampledata import lits117

from .segments import new_segmentation_node, write_masks
from .volumes import volume_to_node

LITS_NAME = "LiTS-117"


def load_lits117(scene, with_reference: bool = True):
    """Add the LiTS-117 CT (and its reference liver/tumour segmentation) to ``scene``."""
    ct, ref = lits117()
    node = volume_to_node(ct, scene, name=LITS_NAME)
    seg_node = None
    if with_reference:
        seg_node = new_segmentation_node(scene, f"{LITS_NAME} reference", ct.geometry)
        write_masks(seg_node, ref.masks, ct.geometry, colors=ref.colors, undoable=False)
    return node, seg_node


def register_sample_data(thumbnail: str | None = None) -> bool:
    """Add LiTS-117 to Slicer's Sample Data module (inside Slicer only; False elsewhere)."""
    try:
        import SampleData
        import slicer
    except ImportError:
        return False

    def load(_source=None):
        node, _ = load_lits117(slicer.mrmlScene)
        slicer.util.setSliceViewerLayers(background=node, fit=True)
        return node

    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="MedSegSuite", sampleName=LITS_NAME, uris=["medsegsuite://lits117"],
        fileNames=[f"{LITS_NAME}.nrrd"], nodeNames=[LITS_NAME], thumbnailFileName=thumbnail,
        loadFileType="VolumeFile", customDownloader=load)
    return True
