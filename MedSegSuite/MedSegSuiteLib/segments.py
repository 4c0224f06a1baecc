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
A segmentation without a reference geometry gets the input image grid; one the user chose (e.g. an
oversampled grid in the Segment Editor) is kept and results are resampled onto it. A segmentation
under a linear transform gets its results through the inverse transform, so they sit on the image. Every write is one undo
step, in the panels' Undo/Redo and in the Segment Editor's own stack (:mod:`.undo`): Undo restores
the previous content exactly, and is refused when the segmentation changed since the write.

Converter rules: Slicer's GUI registers them at start-up; slicer-core does not, so
:func:`ensure_converter_rules` does it once (a no-op inside Slicer, where they already exist).
"""
from __future__ import annotations

import contextlib

import numpy as np
import slicer
import vtk

from medsegsuite.errors import InputError
from medsegsuite.io.segmentation import default_color
from medsegsuite.volume import Geometry

from . import undo
from .terminology import set_terminology
from .volumes import array_from_image_data, image_data_from_array, matrix_to_numpy, node_to_world, numpy_to_matrix

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


def _empty(ext) -> bool:
    """A VTK extent that holds no voxel (Slicer's empty labelmap)."""
    return ext[1] < ext[0] or ext[3] < ext[2] or ext[5] < ext[4]


def _image_to_world(img) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    img.GetImageToWorldMatrix(m)
    return matrix_to_numpy(m)


def set_reference_geometry(seg_node, geometry: Geometry) -> None:
    """Make ``geometry`` the segmentation's reference grid (what Slicer's "specify geometry" sets)."""
    empty = vtk.vtkImageData()
    empty.SetExtent(0, geometry.shape[0] - 1, 0, geometry.shape[1] - 1, 0, geometry.shape[2] - 1)
    text = slicer.vtkSegmentationConverter.SerializeImageGeometry(numpy_to_matrix(geometry.ijk_to_ras), empty)
    seg_node.GetSegmentation().SetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(), text)


def reference_geometry(seg_node) -> Geometry | None:
    """The segmentation's reference grid (in the node's own frame), or None when none is set."""
    text = seg_node.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    if not text:
        return None
    img = slicer.vtkOrientedImageData()
    if not slicer.vtkSegmentationConverter.DeserializeImageGeometry(text, img):
        return None
    ext = img.GetExtent()
    if _empty(ext):
        return None
    shift = np.eye(4)
    shift[:3, 3] = [ext[0], ext[2], ext[4]]  # a grid whose extent does not start at 0
    return Geometry.from_ijk_to_ras((ext[1] - ext[0] + 1, ext[3] - ext[2] + 1, ext[5] - ext[4] + 1),
                                    _image_to_world(img) @ shift)


def node_geometry(seg_node, geometry: Geometry) -> Geometry:
    """``geometry`` (world RAS) in the segmentation node's own frame: a segmentation under a linear
    transform stores its labelmaps untransformed, so results are placed through the inverse."""
    to_world = node_to_world(seg_node)
    if np.allclose(to_world, np.eye(4)):
        return geometry
    return Geometry.from_ijk_to_ras(geometry.shape, np.linalg.inv(to_world) @ geometry.ijk_to_ras)


def same_grid(a: Geometry, b: Geometry) -> bool:
    """Equal grids up to the rounding of a serialised reference geometry (6 significant digits)."""
    return tuple(a.shape) == tuple(b.shape) and np.allclose(a.ijk_to_ras, b.ijk_to_ras, rtol=1e-5, atol=1e-4)


def _covers(outer: Geometry, inner: Geometry) -> bool:
    """True when every voxel centre of ``inner`` lies inside ``outer``'s grid."""
    n = np.asarray(inner.shape) - 1
    corners = np.array([[i, j, k] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])], float)
    ijk = outer.ras_to_ijk_points((np.c_[corners, np.ones(8)] @ inner.ijk_to_ras.T)[:, :3])
    return bool(np.all(ijk > -0.5 - 1e-6) and np.all(ijk < np.asarray(outer.shape) - 0.5 + 1e-6))


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
    segment lies on another grid; voxels outside the segment's stored extent are False).

    Segments may share one labelmap layer, each with its own label value, so a voxel belongs to the
    segment only where it holds that value (an empty segment in a shared layer reads as empty)."""
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    img = slicer.vtkOrientedImageData()
    if not logic.GetSegmentBinaryLabelmapRepresentation(seg_node, sid, img, False):  # in the node's frame
        raise InputError(f"segment '{sid}' has no binary labelmap (convert it in the Segmentations module)")
    label = seg_node.GetSegmentation().GetSegment(sid).GetLabelValue()
    geometry = node_geometry(seg_node, geometry)
    ext = img.GetExtent()
    if _empty(ext):
        return np.zeros(geometry.shape, bool)
    if np.allclose(_image_to_world(img), geometry.ijk_to_ras, atol=1e-6):
        out = np.zeros(geometry.shape, bool)
        part = array_from_image_data(img)
        lo = np.maximum([ext[0], ext[2], ext[4]], 0)
        hi = np.minimum([ext[1] + 1, ext[3] + 1, ext[5] + 1], geometry.shape)
        if np.any(hi <= lo):
            return out
        src = part[lo[0] - ext[0]:hi[0] - ext[0], lo[1] - ext[2]:hi[1] - ext[2], lo[2] - ext[4]:hi[2] - ext[4]]
        out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = src == label
        return out
    ref = oriented_image(np.zeros(geometry.shape, np.uint8), geometry)
    res = slicer.vtkOrientedImageData()
    slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(img, ref, res, False, True)
    return _array_on_extent(res, geometry) == label


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


def _write_one(seg_node, sid: str, mask: np.ndarray, geometry: Geometry, target: Geometry | None = None) -> None:
    """Write ``mask`` (on ``geometry``, in the node's frame), resampled onto ``target`` when given."""
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if target is None or same_grid(target, geometry):
        # only the mask's bounding box travels: Slicer's replace makes the segment exactly this image
        # (zero outside it), so the result is the same and a small structure costs little
        lo, hi = _bounds(mask)
        _set_labelmap(logic, seg_node, sid, _box_image(mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], lo, geometry))
        return
    img = oriented_image(mask.astype(np.uint8), geometry)
    if target is not None:
        out = slicer.vtkOrientedImageData()
        ref = oriented_image(np.zeros(target.shape, np.uint8), target)
        slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(img, ref, out, False, True)
        img = out
    _set_labelmap(logic, seg_node, sid, img)


def _set_labelmap(logic, seg_node, sid: str, img) -> None:
    if not logic.SetBinaryLabelmapToSegment(img, seg_node, sid, logic.MODE_REPLACE):
        raise InputError(f"could not write segment '{sid}' into '{seg_node.GetName()}'")


def _bounds(mask: np.ndarray) -> tuple[list, list]:
    """(lo, hi) of the mask's bounding box (exclusive hi); one voxel at the origin for an empty mask."""
    lo, hi = [], []
    for axis in range(3):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        if not len(idx):
            return [0, 0, 0], [1, 1, 1]
        lo.append(int(idx[0]))
        hi.append(int(idx[-1]) + 1)
    return lo, hi


# -- undo (see .undo) ---------------------------------------------------------------------------
def can_undo(seg_node) -> bool:
    return undo.can_undo(seg_node)


def can_redo(seg_node) -> bool:
    return undo.can_redo(seg_node)


def undo_last_write(seg_node) -> bool:
    """Revert the last :func:`write_masks`; False if none; `InputError` if the segmentation changed since."""
    return undo.undo(seg_node)


def redo_last_write(seg_node) -> bool:
    return undo.redo(seg_node)


# -- writing -----------------------------------------------------------------------------------
def write_masks(seg_node, masks: dict, geometry: Geometry, colors: dict | None = None,
                overwrite: str = "none", undoable: bool = True, amend: bool = False) -> dict[str, str]:
    """Create or update the named segments from bool masks on ``geometry``; returns {name: segment id}.

    See the module docstring for ``overwrite`` and protected segments. All checks run before
    anything changes, so bad input leaves the segmentation as it was. ``undoable``: one step of the
    panels' Undo and of the Segment Editor's (see :mod:`.undo`); ``amend``: replace the last such step."""
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
    plan = _plan(seg_node, clean, overwrite, geometry)  # refusals happen here, before anything changes
    seg = seg_node.GetSegmentation()
    known = {n: (sid, seg.GetSegment(sid).GetColor()) for n, sid in plan[1].items() if sid is not None}
    with undo.Step(seg_node, amend=amend) if undoable else contextlib.nullcontext() as step:
        if step is not None and step.amended:  # the last step was reverted: plan on that content,
            plan = _plan(seg_node, clean, overwrite, geometry)  # keeping the segments' ids and colours
            colors = {**{n: c for n, (_, c) in known.items()}, **colors}
        _write(seg_node, *plan, geometry, colors, {n: sid for n, (sid, _) in known.items()})
    return {name: segment_id(seg_node, name) for name in clean}


def _refuse_protected(seg_node, targets: dict) -> None:
    refused = [n for n, sid in targets.items() if sid is not None and is_protected(seg_node, sid)]
    if refused:
        raise InputError(f"segment(s) {refused} are locked or marked finished; unlock them (or set their "
                         "status back to In progress) to replace them, or write under another name")


def _plan(seg_node, clean, overwrite, geometry):
    """(masks to write, {name: existing segment id or None}, ids of other segments that give way)."""
    targets = {name: segment_id(seg_node, name) for name in clean}
    _refuse_protected(seg_node, targets)
    others = [sid for sid in segment_ids(seg_node) if sid not in targets.values()]
    protected = [sid for sid in others if is_protected(seg_node, sid)]
    if overwrite == "none":
        return clean, targets, []
    editable = [sid for sid in others if sid not in protected and (overwrite == "all" or is_visible(seg_node, sid))]
    if protected:
        keep_out = np.zeros(geometry.shape, bool)
        for sid in protected:
            keep_out |= read_mask(seg_node, sid, geometry)
        clean = {n: m & ~keep_out for n, m in clean.items()}
    return clean, targets, editable


def _write(seg_node, clean, targets, editable, geometry, colors, ids) -> None:
    """The write itself. Masks are on ``geometry`` (world); they go into the node's frame, and onto
    the segmentation's reference grid when the user chose one that holds the image (e.g. an
    oversampled grid: it is kept); a segmentation without one gets the image grid."""
    segmentation = seg_node.GetSegmentation()
    world, geometry = geometry, node_geometry(seg_node, geometry)
    ref = reference_geometry(seg_node)
    target = ref if ref is not None and _covers(ref, geometry) else None
    was = seg_node.StartModify()
    try:
        if ref is None:
            set_reference_geometry(seg_node, geometry)
        for i, (name, m) in enumerate(clean.items()):
            sid = targets[name]
            if sid is None:
                color = colors.get(name) or default_color(name, segmentation.GetNumberOfSegments() + i)
                sid = segmentation.AddEmptySegment(ids.get(name, ""), name, [float(c) for c in color])
                set_terminology(segmentation.GetSegment(sid), name)
            elif name in colors:
                segmentation.GetSegment(sid).SetColor(*[float(c) for c in colors[name]])
            _write_one(seg_node, sid, m, geometry, target)
        if editable:
            union = np.zeros(geometry.shape, bool)
            for m in clean.values():
                union |= m
            for sid in editable:
                other = read_mask(seg_node, sid, world)
                if np.any(other & union):
                    _write_one(seg_node, sid, other & ~union, geometry, target)
    finally:
        seg_node.EndModify(was)


# -- a box of one segment (a click's crop) -------------------------------------------------------
def _labelmap(seg_node, sid: str):
    """The segment's stored labelmap (Slicer's own object, not a copy), or None when it has none."""
    return seg_node.GetSegmentation().GetSegment(sid).GetRepresentation(
        slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName())


def _on_grid(img, geometry: Geometry) -> bool:
    """True when ``img`` (a stored labelmap) indexes the voxels of ``geometry``: same image-to-world
    matrix, so its extent is a box of ``geometry``'s indices (an empty one counts: it takes any grid)."""
    if img is None:
        return False
    return _empty(img.GetExtent()) or bool(
        np.allclose(_image_to_world(img), geometry.ijk_to_ras, rtol=1e-5, atol=1e-4))


def _read_box(seg_node, sid: str, lo, hi) -> np.ndarray:
    """Segment ``sid`` in the box ``lo`` .. ``hi`` (exclusive) of the grid its labelmap indexes (see
    `_on_grid`), read from Slicer's own array: the work is the box's, not the volume's."""
    from vtkmodules.util import numpy_support

    img = _labelmap(seg_node, sid)
    out = np.zeros(tuple(int(h - lo_) for lo_, h in zip(lo, hi)), bool)
    ext = img.GetExtent()
    a = np.maximum(lo, [ext[0], ext[2], ext[4]])
    b = np.minimum(hi, [ext[1] + 1, ext[3] + 1, ext[5] + 1])
    if np.any(b <= a) or img.GetPointData().GetScalars() is None:
        return out
    ni, nj, nk = ext[1] - ext[0] + 1, ext[3] - ext[2] + 1, ext[5] - ext[4] + 1
    kji = numpy_support.vtk_to_numpy(img.GetPointData().GetScalars()).reshape(nk, nj, ni)  # a view
    part = kji[a[2] - ext[4]:b[2] - ext[4], a[1] - ext[2]:b[1] - ext[2], a[0] - ext[0]:b[0] - ext[0]]
    label = seg_node.GetSegmentation().GetSegment(sid).GetLabelValue()
    out[a[0] - lo[0]:b[0] - lo[0], a[1] - lo[1]:b[1] - lo[1], a[2] - lo[2]:b[2] - lo[2]] = \
        part.transpose(2, 1, 0) == label
    return out


def _box_image(mask: np.ndarray, lo, geometry: Geometry):
    img = slicer.vtkOrientedImageData()
    img.ShallowCopy(image_data_from_array(mask.astype(np.uint8), lo))
    img.SetImageToWorldMatrix(numpy_to_matrix(geometry.ijk_to_ras))
    return img


def _set_box(seg_node, sid: str, mask: np.ndarray, lo, geometry: Geometry) -> None:
    """Make segment ``sid`` equal ``mask`` inside its box and leave it as it is outside: Slicer's
    minimum merge inside the box's extent clears the voxels ``mask`` does not hold (only this
    segment's: in a shared layer the others keep theirs), then its mask merge sets those it holds
    (moving the segment to a layer of its own where it would overlap another, as the Segment Editor does)."""
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    img = _box_image(mask, lo, geometry)
    ext = [int(v) for d in range(3) for v in (lo[d], lo[d] + mask.shape[d] - 1)]
    old = _read_box(seg_node, sid, lo, np.asarray(lo) + mask.shape)
    modes = ([logic.MODE_MERGE_MIN] if np.any(old & ~mask) else []) + (
        [logic.MODE_MERGE_MASK] if np.any(mask & ~old) else [])  # each pass scans the segment: skip a no-op
    for mode in modes:
        if not logic.SetBinaryLabelmapToSegment(img, seg_node, sid, mode, ext):
            raise InputError(f"could not write segment '{sid}' into '{seg_node.GetName()}'")


def write_crop(seg_node, name: str, offset, crop: np.ndarray, geometry: Geometry, colors: dict | None = None,
               overwrite: str = "none", undoable: bool = True) -> dict[str, str]:
    """Replace the box of segment ``name`` at ``offset`` (i, j, k on ``geometry``) with ``crop`` and
    leave everything outside the box as it is: a click's result (`JobResult.crops`). Same rules as
    :func:`write_masks` (protected segments, ``overwrite``, one undo step), but the work is the box's:
    on a 512x512x300 CT, reading and writing whole masks costs ~1 s a click. Where the box cannot be
    written in place (the segment does not exist yet, or it is stored on another grid or under a
    transform), the whole mask is read, patched and written."""
    if overwrite not in POLICIES:
        raise InputError(f"overwrite must be one of {POLICIES}, got '{overwrite}'")
    crop = np.asarray(crop)
    crop = crop != 0 if crop.dtype != bool else crop
    lo = np.asarray([int(o) for o in offset])
    if crop.ndim != 3 or len(lo) != 3 or np.any(lo < 0) or np.any(lo + crop.shape > np.asarray(geometry.shape)):
        raise InputError(f"a crop of shape {crop.shape} at {tuple(lo)} does not fit the image grid {geometry.shape}")
    hi = lo + crop.shape
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    ensure_converter_rules()
    sid = segment_id(seg_node, name)
    ids = segment_ids(seg_node)
    in_place = (sid is not None and np.allclose(node_to_world(seg_node), np.eye(4))
                and (ref := reference_geometry(seg_node)) is not None and same_grid(ref, geometry)
                and all(_on_grid(_labelmap(seg_node, s), geometry) for s in ids))
    if not in_place:
        mask = read_mask(seg_node, sid, geometry) if sid is not None else np.zeros(geometry.shape, bool)
        mask[box] = crop
        return write_masks(seg_node, {name: mask}, geometry, colors, overwrite, undoable)
    _refuse_protected(seg_node, {name: sid})
    others = [s for s in ids if s != sid]
    protected = [s for s in others if is_protected(seg_node, s)]
    editable = [] if overwrite == "none" else [
        s for s in others if s not in protected and (overwrite == "all" or is_visible(seg_node, s))]
    if overwrite != "none":
        for s in protected:
            crop = crop & ~_read_box(seg_node, s, lo, hi)
    with undo.Step(seg_node) if undoable else contextlib.nullcontext():
        was = seg_node.StartModify()
        try:
            if colors and name in colors:
                seg_node.GetSegmentation().GetSegment(sid).SetColor(*[float(c) for c in colors[name]])
            _set_box(seg_node, sid, crop, lo, geometry)
            for s in editable:
                other = _read_box(seg_node, s, lo, hi)
                if np.any(other & crop):
                    _set_box(seg_node, s, other & ~crop, lo, geometry)
        finally:
            seg_node.EndModify(was)
    return {name: sid}


def segment_digest(seg_node, name: str) -> bytes | None:
    """A digest of segment ``name`` as stored (None when there is no such segment): equal digests
    mean nobody edited it in between (`undo.segment_digest`: free right after our own write)."""
    sid = segment_id(seg_node, name)
    return None if sid is None else undo.segment_digest(seg_node, sid)
