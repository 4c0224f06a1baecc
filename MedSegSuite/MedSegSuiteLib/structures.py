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


def propagation_request(volume, box, structure: str, plane: str = "axial") -> tuple[str, dict]:
    """(task, params) of ``sam.propagate`` for a structure no model was trained on: the ROI's IJK box
    (``prompts.box_from_roi``) becomes a box on its middle slice of ``plane``, propagated both ways."""
    from medsegsuite.volume import SliceEngine

    engine = SliceEngine.for_volume(volume, plane)
    corners = [engine.ijk_to_slice((i, j, k)) for i in (box.lo[0], box.hi[0] - 1)
               for j in (box.lo[1], box.hi[1] - 1) for k in (box.lo[2], box.hi[2] - 1)]
    xs, ys, ks = zip(*corners)
    x0, y0, x1, y1 = int(min(xs)), int(min(ys)), int(max(xs)) + 1, int(max(ys)) + 1
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise InputError(f"the ROI is {x1 - x0}x{y1 - y0} pixels on the {engine.plane} slices: draw a box around "
                         "the structure on one slice")
    return "sam.propagate", {"structure": structure, "plane": engine.plane, "slice": (min(ks) + max(ks)) // 2,
                             "box": [x0, y0, x1, y1]}


class TemplateWalk:
    """The panel section's state: which template, which structure is current. GUI-free."""

    def __init__(self, template=None):
        self.template = template
        self.current: str | None = None

    def load(self, spec) -> None:
        from medsegsuite.rt import load_template

        self.template = load_template(spec)
        self.current = None

    def apply(self, seg_node) -> list[str]:
        if self.template is None:
            raise InputError("choose a structure template first")
        added = apply_template(seg_node, self.template)
        self.current = self.current or next_structure(seg_node, self.template)
        return added

    def rows(self, seg_node) -> list[tuple[str, str]]:
        return rows(seg_node, self.template) if self.template is not None and seg_node is not None else []

    def next(self, seg_node) -> str | None:
        """The first structure after the current one (wrapping round) that is not approved."""
        names = [n for n, st in self.rows(seg_node) if st != "approved"]
        order = [s.name for s in self.template.structures] if self.template else []
        if not names:
            self.current = None
            return None
        if self.current in order:
            start = order.index(self.current)
            later = [n for n in order[start + 1:] + order[:start + 1] if n in names]
            self.current = later[0]
        else:
            self.current = names[0]
        return self.current

    def select(self, name: str) -> None:
        if self.template is None:
            raise InputError("choose a structure template first")
        self.current = self.template.require(name).name

    def require_current(self) -> str:
        if self.current is None:
            raise InputError("choose a structure first (Next, or click one in the table)")
        return self.current

    def can_draft(self, seg_node) -> bool:
        """Drafting writes with AI: refused for an approved structure (reopen it first)."""
        return self.current is not None and (seg_node is None or segment_id(seg_node, self.current) is None
                                              or status(seg_node, self.current) != "approved")
