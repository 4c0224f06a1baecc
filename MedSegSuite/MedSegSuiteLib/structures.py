"""A structure template walked in a segmentation node (GUI-free logic of the panels' structures section).

Each template structure is a segment (TG-263 name, template colour) whose review status lives in the
segment tag ``MedSegSuite.Status`` (todo, drafted, reviewed, approved; the same rule as the CLI,
:func:`medsegsuite.rt.structures.check_transition`). Approving a structure also sets Slicer's segment
status to *Completed*, which :func:`.segments.write_masks` never overwrites: an approved structure
is locked against every AI write, and against the Segment Editor's "modify other segments".
Reopening (back to reviewed) sets it *In progress* again.
"""
from __future__ import annotations

import numpy as np
import slicer
import vtk

from medsegsuite.errors import InputError
from medsegsuite.rt.structures import STATUSES, check_transition

from .segments import ensure_converter_rules, segment_id, segment_names

STATUS_TAG = "MedSegSuite.Status"


def _segment(seg_node, name):
    sid = segment_id(seg_node, name)
    if sid is None:
        raise InputError(f"no segment named '{name}' in '{seg_node.GetName()}'")
    return seg_node.GetSegmentation().GetSegment(sid)


def apply_template(seg_node, template) -> list[str]:
    """Add an empty segment (name, colour, status todo) for each template structure the node lacks;
    existing segments matching an alias are renamed to the template's name. Returns the names added."""
    ensure_converter_rules()
    segmentation = seg_node.GetSegmentation()
    added = []
    for name in segment_names(seg_node):
        s = template.find(name)
        if s is not None and s.name != name and s.name not in segment_names(seg_node):
            seg = _segment(seg_node, name)
            seg.SetName(s.name)
            if not seg.GetTag(STATUS_TAG, vtk.reference("")):
                seg.SetTag(STATUS_TAG, "drafted")
    for s in template.structures:
        if s.name not in segment_names(seg_node):
            sid = segmentation.AddEmptySegment("", s.name, [float(c) for c in s.color])
            segmentation.GetSegment(sid).SetTag(STATUS_TAG, "todo")
            added.append(s.name)
    return added


def has_contour(seg_node, name: str) -> bool:
    sid = segment_id(seg_node, name)
    img = slicer.vtkOrientedImageData()
    if sid is None or not slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(
            seg_node, sid, img):
        return False
    ext = img.GetExtent()
    if ext[1] < ext[0] or ext[3] < ext[2] or ext[5] < ext[4]:
        return False
    from .volumes import array_from_image_data

    label = seg_node.GetSegmentation().GetSegment(sid).GetLabelValue()
    return bool(np.any(array_from_image_data(img) == label))


def status(seg_node, name: str) -> str:
    tag = vtk.reference("")
    seg = _segment(seg_node, name)
    if seg.GetTag(STATUS_TAG, tag) and str(tag) in STATUSES:
        return str(tag)
    return "drafted" if has_contour(seg_node, name) else "todo"


def set_status(seg_node, name: str, new: str) -> None:
    """Move a structure along todo -> drafted -> reviewed -> approved (or back)."""
    check_transition(name, status(seg_node, name), new, has_contour(seg_node, name))
    seg = _segment(seg_node, name)
    seg.SetTag(STATUS_TAG, new)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    logic.SetSegmentStatus(seg, logic.Completed if new == "approved" else
                           logic.InProgress if new in ("drafted", "reviewed") else logic.NotStarted)


def mark_drafted(seg_node, name: str) -> None:
    """After an AI or manual write: the structure is a draft again (a reviewed one must be re-reviewed)."""
    if status(seg_node, name) != "approved":
        _segment(seg_node, name).SetTag(STATUS_TAG, "drafted")


def rows(seg_node, template) -> list[tuple[str, str]]:
    """(name, status) per template structure, in template order (the panel's table)."""
    return [(s.name, status(seg_node, s.name) if segment_id(seg_node, s.name) else "todo")
            for s in template.structures]


def next_structure(seg_node, template) -> str | None:
    """The first template structure that is not approved (the panel's *Next*)."""
    return next((n for n, st in rows(seg_node, template) if st != "approved"), None)
