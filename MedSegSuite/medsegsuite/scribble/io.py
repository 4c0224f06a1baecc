"""Reading scribbles from files for the CLI and batch scripts: a `.seg.nrrd` with segments named
after the classes plus ``background`` (voxels in no segment are unlabelled), or a labelmap file
with a stated unlabelled value and class names."""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..volume import Volume
from .labels import UNLABELLED, ScribbleSet, scribbles_from_segmentation, validate_scribbles


def read_scribbles(path, image: Volume, classes: list[str] | None = None,
                   unlabelled: int = UNLABELLED) -> ScribbleSet:
    from ..io import read_image, read_segmentation

    path = str(path)
    if path.endswith(".seg.nrrd"):
        seg = read_segmentation(path)
        try:
            return scribbles_from_segmentation(seg, classes, image.geometry)
        except InputError as e:
            raise InputError(f"{path}: {e}") from None
    if not classes:
        raise InputError(f"{path} is a labelmap: name its classes with --classes (label 1 is the first; "
                         "0 is background)")
    vol = read_image(path)
    if vol.shape != image.shape or not vol.geometry.same_as(image.geometry):
        raise InputError(f"{path} does not lie on the image grid (shape {vol.shape} vs {image.shape}, "
                         f"spacing {vol.geometry.spacing} vs {image.geometry.spacing}); draw the scribbles on "
                         "this image or resample them onto it")
    lab = validate_scribbles(np.asarray(vol.array), len(classes), image.shape, unlabelled, classes)
    return ScribbleSet(lab, list(classes))
