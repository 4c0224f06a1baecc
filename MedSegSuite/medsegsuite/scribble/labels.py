"""Scribble label arrays: 0 = background, 1..C = the classes in order, ``UNLABELLED`` elsewhere.

Scribbles arrive either as a segmentation (segments named after the classes plus one named
``background``; voxels in no segment are unlabelled) or as a label array whose unlabelled value is
stated. Everything is checked here so that a training job fails at once with a message that says
what to fix, instead of training on nonsense.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..volume import Geometry

UNLABELLED = 255
BACKGROUND = "background"


@dataclass
class ScribbleSet:
    """One case's scribbles: ``labels`` [i, j, k] uint8 on the image grid and the class names (no
    background; label value c+1 is ``classes[c]``)."""

    labels: np.ndarray
    classes: list[str]

    @property
    def n_classes(self) -> int:
        """Output channels including background."""
        return len(self.classes) + 1


def _paste_into(geom_img: Geometry, geom_seg: Geometry, arr: np.ndarray, what: str) -> np.ndarray:
    """Put a segmentation array that lies on a (cropped or padded) copy of the image grid onto the
    image grid. Slicer writes segmentations cropped to their extent, so this is the common case.
    Strokes that fall outside the image are an error; other geometry differences too."""
    if geom_img.same_as(geom_seg):
        return arr
    if not (np.allclose(geom_img.spacing, geom_seg.spacing, atol=1e-4)
            and np.allclose(geom_img.direction_matrix, geom_seg.direction_matrix, atol=1e-4)):
        raise InputError(f"{what} lies on a different grid than the image (spacing {geom_seg.spacing} vs "
                         f"{geom_img.spacing}, or another orientation); draw the scribbles on this image "
                         "or resample the segmentation onto it first")
    offset = geom_img.ras_to_ijk_points(geom_seg.origin)[0]
    if np.max(np.abs(offset - np.round(offset))) > 1e-2:
        raise InputError(f"{what} is shifted by a fraction of a voxel against the image "
                         f"(offset {np.round(offset, 3).tolist()} voxels); resample it onto the image grid")
    off = np.round(offset).astype(int)
    out = np.full(geom_img.shape, UNLABELLED, dtype=np.uint8)
    src, dst = [], []
    for d in range(3):
        lo, hi = off[d], off[d] + arr.shape[d]
        a, b = max(lo, 0), min(hi, geom_img.shape[d])
        if b <= a:
            a = b = 0
        dst.append(slice(a, b))
        src.append(slice(a - lo, b - lo) if b > a else slice(0, 0))
    inside = np.zeros(arr.shape, dtype=bool)
    inside[tuple(src)] = True
    if np.any((arr != UNLABELLED) & ~inside):
        n = int(np.count_nonzero((arr != UNLABELLED) & ~inside))
        raise InputError(f"{what}: {n} scribbled voxels lie outside the image; erase them or draw the "
                         "scribbles on this image")
    out[tuple(dst)] = arr[tuple(src)]
    return out


def scribbles_from_segmentation(seg, classes: list[str] | None = None,
                                image_geometry: Geometry | None = None,
                                background: str = BACKGROUND) -> ScribbleSet:
    """Segments -> scribble labels. ``classes`` defaults to every segment except ``background``,
    in file order. Overlapping strokes of different classes are refused (which one is right?)."""
    names = list(seg.masks)
    bg = next((n for n in names if n.lower() == background.lower()), None)
    if bg is None:
        raise InputError(f"the scribbles need a segment named '{background}' holding background strokes; "
                         f"found segments {names}")
    if classes is None:
        classes = [n for n in names if n != bg]
    if not classes:
        raise InputError("the scribbles hold only background; add one segment per structure to segment")
    missing = [c for c in classes if c not in seg.masks]
    if missing:
        raise InputError(f"no scribble segment for classes {missing}; the segmentation holds {names}")
    lab = np.full(seg.geometry.shape, UNLABELLED, dtype=np.uint8)
    taken = np.zeros(seg.geometry.shape, dtype=bool)
    for value, name in enumerate([bg] + list(classes)):
        m = np.asarray(seg.masks[name], dtype=bool)
        clash = m & taken
        if clash.any():
            other = [n for v, n in enumerate([bg] + list(classes)) if v < value and np.any(lab[clash] == v)]
            raise InputError(f"scribbles of '{name}' overlap those of {other} in {int(clash.sum())} voxels; "
                             "a voxel can belong to one class only, erase the overlap")
        lab[m] = value
        taken |= m
    if image_geometry is not None:
        lab = _paste_into(image_geometry, seg.geometry, lab, "the scribble segmentation")
    s = ScribbleSet(lab, list(classes))
    validate_scribbles(s.labels, len(classes), image_shape=lab.shape, classes=s.classes)
    return s


def validate_scribbles(labels, n_foreground: int, image_shape=None, unlabelled: int = UNLABELLED,
                       classes: list[str] | None = None) -> np.ndarray:
    """Check a scribble label array; returns it as uint8 with ``UNLABELLED`` for unlabelled voxels.

    Refuses: a shape other than the image's, values other than 0..C and the unlabelled value, NaN,
    and any class (background included) without a single stroke."""
    a = np.asarray(labels)
    if a.ndim != 3:
        raise InputError(f"scribbles must be a 3D label array, got shape {a.shape}")
    if image_shape is not None and tuple(a.shape) != tuple(image_shape):
        raise InputError(f"scribbles have shape {a.shape} but the image has shape {tuple(image_shape)}; "
                         "they must lie on the image grid")
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise InputError("scribbles hold NaN or infinite values")
        if not np.allclose(a, np.round(a)):
            raise InputError("scribbles must hold integer labels")
        a = np.round(a)
    if 0 <= unlabelled <= n_foreground:
        raise InputError(f"the unlabelled value {unlabelled} is also a class label (0..{n_foreground}); "
                         "state a value outside that range, e.g. 255")
    a = a.astype(np.int64)
    names = ["background"] + list(classes or [f"class {c}" for c in range(1, n_foreground + 1)])
    valid = (a >= 0) & (a <= n_foreground) | (a == unlabelled)
    if not valid.all():
        bad = np.unique(a[~valid])[:5].tolist()
        raise InputError(f"scribbles hold label values {bad}; expected 0 (background), 1..{n_foreground} "
                         f"({', '.join(names[1:])}) and {unlabelled} (unlabelled)")
    counts = np.bincount(a[a != unlabelled].ravel(), minlength=n_foreground + 1)
    empty = [names[c] for c in range(n_foreground + 1) if counts[c] == 0]
    if empty:
        raise InputError(f"no scribbles for {empty}: every class, background included, needs at least one "
                         "stroke (draw one, or drop the class)")
    out = np.where(a == unlabelled, UNLABELLED, a).astype(np.uint8)
    return out


def scribbles_to_segmentation(labels: np.ndarray, classes: list[str], geometry: Geometry):
    """Scribble labels -> a Segmentation with ``background`` + class segments (for writing .seg.nrrd)."""
    from ..io import Segmentation

    masks = {BACKGROUND: labels == 0}
    for c, name in enumerate(classes, start=1):
        masks[name] = labels == c
    return Segmentation(geometry, masks)
