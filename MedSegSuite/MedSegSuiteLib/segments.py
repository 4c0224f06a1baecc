"""Named masks <-> `vtkMRMLSegmentationNode`, without destroying anyone's work.

Writing (:func:`write_masks`) follows the Segment Editor's "modify other segments" choice:

* ``"none"`` (default) — other segments are never changed; the written segment may overlap them
  (the Segment Editor's *allow overlap*).
* ``"visible"`` — voxels of the written masks are removed from other *visible* segments.
* ``"all"`` — voxels of the written masks are removed from all other segments.

Protected segments are never changed under any policy: a segment whose Slicer status is
*Completed* (the status column of the Segment Editor's segment list; "finished") or that carries
the tag ``MedSegSuite.Locked = 1`` (see :func:`set_locked`). Under ``visible``/``all`` the written
masks are also clipped out of protected segments, so those keep their voxels exclusively. Writing
*into* a protected segment is refused before anything changes.

Only the named segments are created or updated (matched by name; new ones get the given colour).
The segmentation's reference geometry is set from the input image grid. Every write is one undo
step: :func:`undo_last_write` restores the previous content exactly (a `vtkSegmentationHistory`
per segmentation node, which works the same on slicer-core and in Slicer).

Converter rules: Slicer's GUI registers them at start-up; slicer-core does not, so
:func:`ensure_converter_rules` does it once (a no-op inside Slicer, where they already exist).
"""
from __future__ import annotations

import numpy as np
import slicer
import vtk

from medsegsuite.errors import InputError
from medsegsuite.io.segmentation import default_color
from medsegsuite.volume import Geometry

from .terminology import set_terminology
from .volumes import array_from_image_data, image_data_from_array, matrix_to_numpy, numpy_to_matrix

POLICIES = ("none", "visible", "all")
LOCK_TAG = "MedSegSuite.Locked"
_rules_checked = False


def ensure_converter_rules() -> None:
    """Register binary-labelmap <-> closed-surface conversion rules if nobody has (slicer-core)."""
    global _rules_checked
    if _rules_checked:
        return
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    try:
        have = {rule.GetClassName() for rule in factory.GetConverterRules()}
    except TypeError:  # older wrappings do not return a sequence: register (duplicates are harmless)
        have = set()
    for cls in ("vtkBinaryLabelmapToClosedSurfaceConversionRule", "vtkClosedSurfaceToBinaryLabelmapConversionRule"):
        if cls not in have and hasattr(slicer, cls):
            factory.RegisterConverterRule(getattr(slicer, cls)())
    _rules_checked = True


# -- geometry ----------------------------------------------------------------------------------
def oriented_image(array: np.ndarray, geometry: Geometry):
    """A vtkOrientedImageData holding ``array`` ([i, j, k]) on ``geometry``."""
    if tuple(array.shape) != tuple(geometry.shape):
        raise InputError(f"array of shape {array.shape} does not fit the grid {geometry.shape}")
    img = slicer.vtkOrientedImageData()
    img.ShallowCopy(image_data_from_array(array))
    img.SetImageToWorldMatrix(numpy_to_matrix(geometry.ijk_to_ras))
    return img


def set_reference_geometry(seg_node, geometry: Geometry) -> None:
    """Make ``geometry`` the segmentation's reference grid (what Slicer's "specify geometry" sets)."""
    empty = vtk.vtkImageData()
    empty.SetExtent(0, geometry.shape[0] - 1, 0, geometry.shape[1] - 1, 0, geometry.shape[2] - 1)
    text = slicer.vtkSegmentationConverter.SerializeImageGeometry(numpy_to_matrix(geometry.ijk_to_ras), empty)
    seg_node.GetSegmentation().SetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(), text)


def new_segmentation_node(scene, name: str, geometry: Geometry | None = None):
    """A segmentation node with display node (and reference geometry when given)."""
    ensure_converter_rules()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    if geometry is not None:
        set_reference_geometry(node, geometry)
    return node


# -- segments ----------------------------------------------------------------------------------
def segment_id(seg_node, name: str) -> str | None:
    sid = seg_node.GetSegmentation().GetSegmentIdBySegmentName(name)
    return sid or None


def segment_ids(seg_node) -> list[str]:
    seg = seg_node.GetSegmentation()
    return [seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())]


def segment_names(seg_node) -> list[str]:
    seg = seg_node.GetSegmentation()
    return [seg.GetSegment(s).GetName() for s in segment_ids(seg_node)]


def set_locked(seg_node, name: str, locked: bool = True) -> None:
    """Mark a segment as locked: MedSegSuite never changes it."""
    sid = segment_id(seg_node, name)
    if sid is None:
        raise InputError(f"no segment named '{name}'")
    seg = seg_node.GetSegmentation().GetSegment(sid)
    if locked:
        seg.SetTag(LOCK_TAG, "1")
    else:
        seg.RemoveTag(LOCK_TAG)


def set_finished(seg_node, name: str) -> None:
    """Set Slicer's segment status to Completed (what the Segment Editor's status column does)."""
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    logic.SetSegmentStatus(seg_node.GetSegmentation().GetSegment(segment_id(seg_node, name)), logic.Completed)


def is_protected(seg_node, sid: str) -> bool:
    """Locked (our tag), finished (Slicer status Completed) or approved (structures.STATUS_TAG)."""
    segment = seg_node.GetSegmentation().GetSegment(sid)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    tag = vtk.reference("")
    locked = segment.GetTag(LOCK_TAG, tag) and str(tag).lower() in ("1", "true", "yes")
    approved = segment.GetTag("MedSegSuite.Status", tag) and str(tag) == "approved"
    return bool(locked) or bool(approved) or logic.GetSegmentStatus(segment) == logic.Completed


def is_visible(seg_node, sid: str) -> bool:
    display = seg_node.GetDisplayNode()
    return True if display is None else bool(display.GetSegmentVisibility(sid))


def read_mask(seg_node, sid: str, geometry: Geometry) -> np.ndarray:
    """One segment as a bool [i, j, k] array on ``geometry`` (nearest-neighbour resampled if the
    segment lies on another grid; voxels outside the segment's stored extent are False)."""
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    img = slicer.vtkOrientedImageData()
    if not logic.GetSegmentBinaryLabelmapRepresentation(seg_node, sid, img):
        raise InputError(f"segment '{sid}' has no binary labelmap (convert it in the Segmentations module)")
    label = seg_node.GetSegmentation().GetSegment(sid).GetLabelValue()
    ref = oriented_image(np.zeros(geometry.shape, np.uint8), geometry)
    ext = img.GetExtent()
    if ext[1] < ext[0] or ext[3] < ext[2] or ext[5] < ext[4]:
        return np.zeros(geometry.shape, bool)
    m = vtk.vtkMatrix4x4()
    img.GetImageToWorldMatrix(m)
    if np.allclose(matrix_to_numpy(m), geometry.ijk_to_ras, atol=1e-6):
        out = np.zeros(geometry.shape, bool)
        part = array_from_image_data(img)
        lo = np.maximum([ext[0], ext[2], ext[4]], 0)
        hi = np.minimum([ext[1] + 1, ext[3] + 1, ext[5] + 1], geometry.shape)
        if np.any(hi <= lo):
            return out
        src = part[lo[0] - ext[0]:hi[0] - ext[0], lo[1] - ext[2]:hi[1] - ext[2], lo[2] - ext[4]:hi[2] - ext[4]]
        out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = src == label if part.max() > 1 else src != 0
        return out
    res = slicer.vtkOrientedImageData()
    slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(img, ref, res, False, True)
    arr = _array_on_extent(res, geometry)
    return arr == label if arr.max() > 1 else arr != 0


def _array_on_extent(img, geometry: Geometry) -> np.ndarray:
    ext = img.GetExtent()
    part = array_from_image_data(img)
    out = np.zeros(geometry.shape, part.dtype)
    lo = np.maximum([ext[0], ext[2], ext[4]], 0)
    hi = np.minimum([ext[1] + 1, ext[3] + 1, ext[5] + 1], geometry.shape)
    if np.all(hi > lo):
        out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = \
            part[lo[0] - ext[0]:hi[0] - ext[0], lo[1] - ext[2]:hi[1] - ext[2], lo[2] - ext[4]:hi[2] - ext[4]]
    return out


def read_masks(seg_node, geometry: Geometry, names=None) -> dict[str, np.ndarray]:
    """Segments by name (all, or ``names``) as bool arrays on ``geometry``."""
    out = {}
    wanted = list(names) if names is not None else segment_names(seg_node)
    for name in wanted:
        sid = segment_id(seg_node, name)
        if sid is None:
            raise InputError(f"no segment named '{name}' in '{seg_node.GetName()}'; it holds "
                             f"{segment_names(seg_node)}")
        out[name] = read_mask(seg_node, sid, geometry)
    return out


def _write_one(seg_node, sid: str, mask: np.ndarray, geometry: Geometry) -> None:
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if not logic.SetBinaryLabelmapToSegment(oriented_image(mask.astype(np.uint8), geometry), seg_node, sid,
                                            logic.MODE_REPLACE):
        raise InputError(f"could not write segment '{sid}' into '{seg_node.GetName()}'")


# -- undo --------------------------------------------------------------------------------------
_HISTORIES: dict[str, tuple] = {}


def history(seg_node):
    """The `vtkSegmentationHistory` MedSegSuite keeps for this segmentation node."""
    key = seg_node.GetAddressAsString("vtkObject")
    entry = _HISTORIES.get(key)
    if entry is None or entry[0] is not seg_node or entry[1].GetSegmentation() is not seg_node.GetSegmentation():
        for k in [k for k, (n, _) in _HISTORIES.items() if n.GetScene() is None]:
            del _HISTORIES[k]  # nodes removed from their scene: drop their saved states
        h = slicer.vtkSegmentationHistory()
        h.SetMaximumNumberOfStates(10)
        h.SetSegmentation(seg_node.GetSegmentation())
        entry = _HISTORIES[key] = (seg_node, h)
    return entry[1]


def can_undo(seg_node) -> bool:
    return history(seg_node).IsRestorePreviousStateAvailable()


def undo_last_write(seg_node) -> bool:
    """Restore the segmentation as it was before the last :func:`write_masks`; False if none."""
    h = history(seg_node)
    if not h.IsRestorePreviousStateAvailable():
        return False
    return bool(h.RestorePreviousState())


# -- writing -----------------------------------------------------------------------------------
def write_masks(seg_node, masks: dict, geometry: Geometry, colors: dict | None = None,
                overwrite: str = "none", undoable: bool = True) -> dict[str, str]:
    """Create or update the named segments from bool masks on ``geometry``; returns {name: segment id}.

    See the module docstring for ``overwrite`` and protected segments. All checks run before
    anything changes, so bad input leaves the segmentation as it was."""
    if overwrite not in POLICIES:
        raise InputError(f"overwrite must be one of {POLICIES}, got '{overwrite}'")
    if not masks:
        raise InputError("no masks to write")
    colors = dict(colors or {})
    clean = {}
    for i, (name, m) in enumerate(masks.items()):
        m = np.asarray(m)
        if tuple(m.shape) != tuple(geometry.shape):
            raise InputError(f"mask '{name}' has shape {m.shape}, the image grid is {geometry.shape}")
        clean[str(name)] = m != 0 if m.dtype != bool else m
    ensure_converter_rules()
    segmentation = seg_node.GetSegmentation()
    targets = {name: segment_id(seg_node, name) for name in clean}
    refused = [n for n, sid in targets.items() if sid is not None and is_protected(seg_node, sid)]
    if refused:
        raise InputError(f"segment(s) {refused} are locked or marked finished; unlock them (or set their "
                         "status back to In progress) to replace them, or write under another name")
    others = [sid for sid in segment_ids(seg_node) if sid not in targets.values()]
    protected = [sid for sid in others if is_protected(seg_node, sid)]
    if overwrite == "none":
        editable = []
    else:
        editable = [sid for sid in others if sid not in protected
                    and (overwrite == "all" or is_visible(seg_node, sid))]
        if protected:
            keep_out = np.zeros(geometry.shape, bool)
            for sid in protected:
                keep_out |= read_mask(seg_node, sid, geometry)
            clean = {n: m & ~keep_out for n, m in clean.items()}
    if undoable:
        history(seg_node).SaveState()
    was = seg_node.StartModify()
    ok = False
    try:
        set_reference_geometry(seg_node, geometry)
        written = {}
        for i, (name, m) in enumerate(clean.items()):
            sid = targets[name]
            if sid is None:
                color = colors.get(name) or default_color(name, segmentation.GetNumberOfSegments() + i)
                sid = segmentation.AddEmptySegment("", name, [float(c) for c in color])
                set_terminology(segmentation.GetSegment(sid), name)
            elif name in colors:
                segmentation.GetSegment(sid).SetColor(*[float(c) for c in colors[name]])
            _write_one(seg_node, sid, m, geometry)
            written[name] = sid
        if editable:
            union = np.zeros(geometry.shape, bool)
            for m in clean.values():
                union |= m
            for sid in editable:
                other = read_mask(seg_node, sid, geometry)
                if np.any(other & union):
                    _write_one(seg_node, sid, other & ~union, geometry)
        ok = True
    finally:
        if not ok and undoable:  # a write that failed half-way is rolled back
            history(seg_node).RestorePreviousState()
        seg_node.EndModify(was)
    return written
