"""Reading and writing images and segmentations with their geometry.

Images (NIfTI, NRRD, MHA, DICOM series) go through SimpleITK; segmentations are written as Slicer
``.seg.nrrd`` (named, coloured, possibly overlapping segments) or as a labelmap NIfTI/NRRD.
"""
from .image import read_image, write_image, read_dicom_series, write_dicom_series
from .segmentation import (Segmentation, read_segmentation, write_segmentation,
                           labelmap_to_masks, masks_to_labelmap, default_color)

__all__ = ["read_image", "write_image", "read_dicom_series", "write_dicom_series", "Segmentation",
           "read_segmentation", "write_segmentation", "labelmap_to_masks", "masks_to_labelmap",
           "default_color"]
