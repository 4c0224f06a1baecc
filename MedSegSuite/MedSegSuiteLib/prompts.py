"""User prompts drawn in Slicer -> plain arrays on the image grid.

* **Points** (:func:`points_from_fiducials`): control points of a markups fiducial ("point list")
  node, world RAS -> IJK voxel indices. Each point is *positive* (include) or *negative* (exclude):
  a point is negative when its **description** (Markups module, control point table, column
  "Description") is ``-``, ``neg``, ``negative``, ``exclude``, ``bg`` or ``background``
  (case-insensitive); anything else (including empty) is positive. A node attribute
  ``MedSegSuite.PromptSign`` set to ``-`` makes every point of that node negative by default, so a
  panel may also keep one point list per sign. Points whose position is not defined (preview) are
  skipped; points outside the image are an error.
* **Box** (:func:`box_from_roi`): a markups ROI (possibly rotated) -> the IJK box that holds all of
  its corners, clipped to the image, as ``lo`` (inclusive) / ``hi`` (exclusive) indices.
* **Scribbles** (:func:`scribble_labels`): segments of a segmentation node -> one label array:
  ``background`` -> 0, the classes in order -> 1..C, voxels in no scribble -> ``unlabelled`` (255,
  :data:`medsegsuite.scribble.labels.UNLABELLED`). A voxel in two scribbles is an error.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medsegsuite.errors import InputError
from medsegsuite.volume import Geometry

from .segments import read_mask, segment_id, segment_names
from .volumes import matrix_to_numpy, node_to_world

NEGATIVE_WORDS = {"-", "neg", "negative", "exclude", "bg", "background"}
SIGN_ATTRIBUTE = "MedSegSuite.PromptSign"
UNLABELLED = 255
BACKGROUND = "background"


@dataclass
class PointPrompts:
    ijk: np.ndarray        # (N, 3) int voxel indices
    labels: np.ndarray     # (N,) int: 1 positive, 0 negative
    ras: np.ndarray        # (N, 3) world RAS positions

    def __len__(self) -> int:
        return len(self.labels)

    def to_inputs(self) -> dict:
        """The arrays a backend job takes (``points`` [N, 3] i, j, k and ``point_labels`` [N])."""
        return {"points": self.ijk.astype(np.int32), "point_labels": self.labels.astype(np.int32)}


@dataclass
class Box:
    lo: tuple[int, int, int]  # inclusive
    hi: tuple[int, int, int]  # exclusive

    def to_array(self) -> np.ndarray:
        return np.array([*self.lo, *self.hi], dtype=np.int32)


def _is_negative(description: str, default_negative: bool) -> bool:
    d = (description or "").strip().lower()
    if d in NEGATIVE_WORDS:
        return True
    if d in ("+", "pos", "positive", "include", "fg", "foreground"):
        return False
    return default_negative


def set_point_sign(node, index: int, positive: bool) -> None:
    """Mark control point ``index`` as positive or negative (writes its description)."""
    node.SetNthControlPointDescription(index, "+" if positive else "-")


def points_from_fiducials(nodes, geometry: Geometry) -> PointPrompts:
    """Control points of one or several fiducial nodes -> IJK points with +/- labels."""
    if nodes is None:
        nodes = []
    if not isinstance(nodes, (list, tuple)):
        nodes = [nodes]
    ras, labels = [], []
    for node in nodes:
        default_negative = (node.GetAttribute(SIGN_ATTRIBUTE) or "").strip() == "-"
        for i in range(node.GetNumberOfControlPoints()):
            if hasattr(node, "GetNthControlPointPositionStatus") and \
                    node.GetNthControlPointPositionStatus(i) != node.PositionDefined:
                continue
            p = [0.0, 0.0, 0.0]
            node.GetNthControlPointPositionWorld(i, p)
            ras.append(p)
            labels.append(0 if _is_negative(node.GetNthControlPointDescription(i), default_negative) else 1)
    ras = np.asarray(ras, dtype=float).reshape(-1, 3)
    ijk_f = geometry.ras_to_ijk_points(ras) if len(ras) else np.zeros((0, 3))
    ijk = np.rint(ijk_f).astype(np.int64)
    outside = [k for k, p in enumerate(ijk) if np.any(p < 0) or np.any(p >= np.asarray(geometry.shape))]
    if outside:
        raise InputError(f"point(s) {[k + 1 for k in outside]} lie outside the image; move or delete them")
    return PointPrompts(ijk, np.asarray(labels, dtype=np.int64), ras)


def box_from_roi(roi, geometry: Geometry) -> Box:
    """A markups ROI node -> the IJK box holding it (clipped to the image)."""
    if roi is None or not roi.IsA("vtkMRMLMarkupsROINode"):
        raise InputError("select a markups ROI (box) node")
    size = np.array(roi.GetSize(), dtype=float)
    if np.any(size <= 0):
        raise InputError(f"ROI '{roi.GetName()}' has no size yet; place it first")
    # The ROI's object frame has the ROI axes and its origin at the ROI centre.
    to_world = node_to_world(roi) @ matrix_to_numpy(roi.GetObjectToNodeMatrix())
    half = size / 2.0
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * half
    corners_world = (np.c_[corners, np.ones(8)] @ to_world.T)[:, :3]
    ijk = geometry.ras_to_ijk_points(corners_world)
    # voxels whose centres lie inside; an ROI thinner than a voxel keeps the voxel at its centre
    lo = np.ceil(ijk.min(axis=0) - 1e-6).astype(int)
    hi = np.floor(ijk.max(axis=0) + 1e-6).astype(int) + 1
    thin = hi <= lo
    lo[thin] = np.rint(ijk.mean(axis=0)[thin]).astype(int)
    hi[thin] = lo[thin] + 1
    lo, hi = np.maximum(lo, 0), np.minimum(hi, geometry.shape)
    if np.any(hi <= lo):
        raise InputError(f"ROI '{roi.GetName()}' does not overlap the image")
    return Box(tuple(int(v) for v in lo), tuple(int(v) for v in hi))


def scribble_labels(seg_node, geometry: Geometry, classes: list[str] | None = None,
                    background: str = BACKGROUND, unlabelled: int = UNLABELLED) -> tuple[np.ndarray, list[str]]:
    """Scribble segments -> (uint8 labels [i, j, k], class names in label order 1..C)."""
    names = segment_names(seg_node)
    if classes is None:
        classes = [n for n in names if n.lower() != background.lower()]
    if not classes:
        raise InputError("draw scribbles as segments: one per structure plus one named 'background'")
    if len(classes) >= unlabelled:
        raise InputError(f"too many classes ({len(classes)}) for unlabelled value {unlabelled}")
    lab = np.full(geometry.shape, unlabelled, dtype=np.uint8)
    owner = {}
    bg = next((n for n in names if n.lower() == background.lower()), None)
    order = ([(bg, 0)] if bg else []) + [(c, i + 1) for i, c in enumerate(classes)]
    for name, value in order:
        sid = segment_id(seg_node, name)
        if sid is None:
            raise InputError(f"no scribble segment named '{name}'; the segmentation holds {names}")
        m = read_mask(seg_node, sid, geometry)
        clash = m & (lab != unlabelled)
        if clash.any():
            other = owner[int(lab[clash][0])]
            raise InputError(f"scribbles '{name}' and '{other}' overlap in {int(clash.sum())} voxels; "
                             "erase the overlap so each stroke has one class")
        lab[m] = value
        owner[value] = name
    return lab, list(classes)
