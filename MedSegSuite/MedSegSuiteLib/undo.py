"""Undo and redo of MedSegSuite's writes into a segmentation, never at the expense of the user's edits.

Two stacks are kept in step:

* **The Segment Editor's own stack.** Before each AI write the editor's ``saveStateForUndo()`` is
  called when the Segment Editor is editing that segmentation, so Ctrl+Z there reverts the AI write
  as one step and leaves the user's previous stroke in place (without it, the editor's last saved
  state predates that stroke and Ctrl+Z reverted both).
* **The panel's Undo/Redo** (:func:`undo`, :func:`redo`): a `vtkSegmentationHistory` per segmentation
  node (works the same on slicer-core), saved before and after every AI write. A panel only steps
  through its own writes: if the segmentation changed since the last AI write, undo or redo (a
  Segment Editor stroke, a renamed or recoloured segment, another module's edit) is *refused* with
  a message that points to the Segment Editor's Undo, so a foreign edit is never discarded.

"Changed since" is decided by the history's modification time (it moves on the first foreign
change of the segmentation) and, when it moved, by a content signature of every segment (ids,
names, colours, label values, layer voxels), so adding a display representation does not count.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import slicer

from medsegsuite.errors import InputError

MAX_STATES = 20
CHANGED_MESSAGE = ("the segmentation changed after the AI result (for example a Segment Editor stroke), so this "
                   "Undo would discard that change; use the Segment Editor's Undo (Ctrl+Z) to step back instead")


@dataclass
class _Record:
    node: object
    history: object
    back: int = 0        # AI steps that Undo may revert
    forward: int = 0     # steps that Redo may restore
    mtime: int = 0       # history MTime right after our last operation
    signature: bytes = b""
    layers: tuple = ()   # each labelmap layer's digest then (what `signature` hashed) ...
    layer_keys: tuple = ()  # ... and the layer's identity and modification times then (`_layer_key`)


_RECORDS: dict[str, _Record] = {}
_EDITOR_STACKS: list = []


# -- the Segment Editor's stack ------------------------------------------------------------------
def register_editor_stack(provider) -> None:
    """Add a ``provider(seg_node) -> [undo stack]``; each stack offers ``saveStateForUndo()`` (the Qt
    widget) or ``SaveStateForUndo()`` (`vtkSlicerSegmentEditorLogic`). Slicer's Segment Editor is built in."""
    if provider not in _EDITOR_STACKS:
        _EDITOR_STACKS.append(provider)


def unregister_editor_stack(provider) -> None:
    if provider in _EDITOR_STACKS:
        _EDITOR_STACKS.remove(provider)


def _slicer_segment_editor(seg_node) -> list:
    """The Segment Editor widget when it is editing ``seg_node`` (inside the Slicer application only;
    its widget is not created just for this: an editor node must already point at ``seg_node``)."""
    scene = seg_node.GetScene()
    util = getattr(slicer, "util", None)
    if scene is None or getattr(slicer, "app", None) is None or not hasattr(util, "getModuleWidget"):
        return []
    used = False
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentEditorNode")):
        editor_node = scene.GetNthNodeByClass(i, "vtkMRMLSegmentEditorNode")
        seg = editor_node.GetSegmentationNode() if hasattr(editor_node, "GetSegmentationNode") else None
        used = used or (seg is not None and seg.GetID() == seg_node.GetID())
    if not used:
        return []
    try:
        editor = util.getModuleWidget("SegmentEditor").editor
        current = editor.segmentationNode()
    except Exception:  # noqa: BLE001 - no Segment Editor module: nothing to keep in step
        return []
    return [editor] if current is not None and current.GetID() == seg_node.GetID() else []


def save_editor_states(seg_node) -> int:
    """Save the state of every Segment Editor stack that edits ``seg_node``; returns how many."""
    n = 0
    for provider in [_slicer_segment_editor, *_EDITOR_STACKS]:
        for stack in provider(seg_node) or []:
            save = getattr(stack, "saveStateForUndo", None) or getattr(stack, "SaveStateForUndo")
            save()
            n += 1
    return n


# -- the panels' stack ---------------------------------------------------------------------------
_HASHERS = None  # two threads for large layers (hashlib releases the GIL while it hashes)


def _sha256_halves(data: memoryview) -> bytes:
    """SHA-256 of each half of ``data`` on its own thread, then of the two digests: ~2x faster on two
    cores than one pass (a liver-sized layer, 27 M voxels: ~11 vs ~23 ms). Only compared in process."""
    global _HASHERS
    if len(data) < 1 << 22:
        return hashlib.sha256(data).digest()
    if _HASHERS is None:
        from concurrent.futures import ThreadPoolExecutor

        _HASHERS = ThreadPoolExecutor(2, thread_name_prefix="medsegsuite-undo-hash")
    half = len(data) // 2
    a, b = _HASHERS.map(lambda part: hashlib.sha256(part).digest(), (data[:half], data[half:]))
    return hashlib.sha256(a + b).digest()


def _layer_digest(obj) -> bytes:
    """A digest of one labelmap layer's extent and voxels, read in place (SHA-NI, two threads: ~11 ms
    for a liver's 27 M voxels); a non-labelmap source representation: its modification time stands for
    its content."""
    from vtkmodules.util import numpy_support

    h = hashlib.sha256()
    if obj is None:
        h.update(b"none")
    elif hasattr(obj, "GetExtent") and hasattr(obj, "GetPointData"):
        h.update(repr(obj.GetExtent()).encode())
        scalars = obj.GetPointData().GetScalars()
        if scalars is not None:  # no copy of the voxels
            voxels = np.ascontiguousarray(numpy_support.vtk_to_numpy(scalars))
            h.update(_sha256_halves(memoryview(voxels).cast("B")))
    else:
        h.update(repr(obj.GetMTime()).encode())
    return h.digest()


def _layer_key(obj):
    """A layer object's address and modification times (its own and its voxel array's: VTK's counter only
    grows, and every write through VTK or Slicer bumps one): an unchanged key is unchanged content."""
    if obj is None:
        return None
    scalars = obj.GetPointData().GetScalars() if hasattr(obj, "GetPointData") else None
    return (obj.GetAddressAsString("vtkObject"), obj.GetMTime(), scalars.GetMTime() if scalars is not None else 0)


def _layer_digests(seg_node, known: dict | None = None) -> tuple[tuple, tuple]:
    """(keys, digests) of every layer; ``known`` {key: digest} from the last settle is reused, so a write
    hashes only the layers it changed (a contouring session holds dozens of structures)."""
    seg = seg_node.GetSegmentation()
    objs = [seg.GetLayerDataObject(i) for i in range(seg.GetNumberOfLayers())]
    keys = tuple(_layer_key(o) for o in objs)
    known = known or {}
    return keys, tuple(known[k] if k is not None and k in known else _layer_digest(o) for k, o in zip(keys, objs))


def signature(seg_node, layers: tuple | None = None) -> bytes:
    """A digest of everything an undo would restore: segment ids, names, colours, label values and
    the voxels of every labelmap layer (``layers``: their digests, when just computed)."""
    seg = seg_node.GetSegmentation()
    h = hashlib.sha256()
    for i in range(seg.GetNumberOfSegments()):
        sid = seg.GetNthSegmentID(i)
        s = seg.GetSegment(sid)
        h.update(repr((sid, s.GetName(), tuple(round(c, 6) for c in s.GetColor()), s.GetLabelValue(),
                       seg.GetLayerIndex(sid))).encode())
    for d in _layer_digests(seg_node)[1] if layers is None else layers:
        h.update(d)
    return h.digest()


def segment_digest(seg_node, sid: str) -> bytes:
    """A digest of one segment as stored: its id, label value, layer and that layer's voxels (an edit
    to a segment sharing its layer changes it too: a conservative answer). Right after MedSegSuite's
    last write, undo or redo (nothing has touched the segmentation since: its history did not move),
    the layer's digest from then is reused, so this costs nothing; otherwise the layer is hashed."""
    seg = seg_node.GetSegmentation()
    layer = seg.GetLayerIndex(sid)
    rec = _record(seg_node)
    if rec is not None and not _history_moved(rec) and 0 <= layer < len(rec.layers):
        d = rec.layers[layer]
    else:
        d = _layer_digest(seg.GetLayerDataObject(layer))
    return hashlib.sha256(repr((sid, seg.GetSegment(sid).GetLabelValue(), layer)).encode() + d).digest()


def _record(seg_node, create: bool = False) -> _Record | None:
    key = seg_node.GetAddressAsString("vtkObject")
    rec = _RECORDS.get(key)
    if rec is not None and (rec.node is not seg_node or rec.history.GetSegmentation() is not seg_node.GetSegmentation()):
        rec = None
    if rec is None and create:
        for k in [k for k, r in _RECORDS.items() if r.node.GetScene() is None]:
            del _RECORDS[k]  # nodes removed from their scene: drop their saved states
        h = slicer.vtkSegmentationHistory()
        h.SetMaximumNumberOfStates(MAX_STATES)
        h.SetSegmentation(seg_node.GetSegmentation())
        rec = _RECORDS[key] = _Record(seg_node, h)
    return rec


def _settle(rec: _Record) -> None:
    rec.mtime = rec.history.GetMTime()
    rec.layer_keys, rec.layers = _layer_digests(rec.node, dict(zip(rec.layer_keys, rec.layers)))
    rec.signature = signature(rec.node, rec.layers)


def _history_moved(rec: _Record) -> bool:
    return rec.history.GetMTime() != rec.mtime


def changed_since_write(seg_node) -> bool:
    """True when the segmentation's content changed after MedSegSuite's last write, undo or redo."""
    rec = _record(seg_node)
    return rec is not None and _history_moved(rec) and signature(seg_node) != rec.signature


class Step:
    """``with Step(seg_node): ...write...`` makes the write one undo step (panel and Segment Editor).
    An exception inside rolls the segmentation back to where it was. ``amend=True`` replaces the last
    AI step instead of adding one (reviewing another round of the same result)."""

    def __init__(self, seg_node, amend: bool = False):
        self.node, self.amend, self.amended = seg_node, amend, False

    def __enter__(self):
        rec = self.rec = _record(self.node, create=True)
        if self.amend and rec.back > 0 and not changed_since_write(self.node):
            self._revert_last(rec)  # the write replaces the last AI step
            rec.back -= 1
            self.amended = True
        elif _history_moved(rec) or rec.history.GetNumberOfStates() == 0:
            rec.back = 0  # a foreign edit (or none of ours yet): earlier AI steps are out of reach
        if not self.amended:  # an amended step is still the one the Segment Editor saved before it
            save_editor_states(self.node)
        rec.history.SaveState()
        return self

    def __exit__(self, exc_type, exc, tb):
        rec = self.rec
        if exc_type is not None:
            if rec.history.IsRestorePreviousStateAvailable():
                rec.history.RestorePreviousState()  # a write that failed half-way is rolled back
            _settle(rec)
            return False
        rec.history.SaveState()
        rec.back = min(rec.back + 1, MAX_STATES - 1)
        rec.forward = 0
        _settle(rec)
        return False

    @staticmethod
    def _revert_last(rec: _Record) -> None:
        if _history_moved(rec):  # content unchanged, but the history saw an event: step over the duplicate
            rec.history.RestorePreviousState()
        rec.history.RestorePreviousState()


def can_undo(seg_node) -> bool:
    rec = _record(seg_node)
    return rec is not None and rec.back > 0


def can_redo(seg_node) -> bool:
    rec = _record(seg_node)
    return rec is not None and rec.forward > 0 and not _history_moved(rec) and rec.history.IsRestoreNextStateAvailable()


def undo(seg_node) -> bool:
    """Revert MedSegSuite's last write; False when there is none to revert. Raises `InputError` (and
    changes nothing) when the segmentation changed since that write."""
    rec = _record(seg_node)
    if rec is None or rec.back <= 0:
        return False
    if changed_since_write(seg_node):
        raise InputError(CHANGED_MESSAGE)
    Step._revert_last(rec)
    rec.back -= 1
    rec.forward += 1
    _settle(rec)
    return True


def redo(seg_node) -> bool:
    """Restore the write the last :func:`undo` reverted; False when there is none. Raises `InputError`
    (and changes nothing) when the segmentation changed since that undo."""
    rec = _record(seg_node)
    if rec is None or rec.forward <= 0:
        return False
    if changed_since_write(seg_node):
        raise InputError(CHANGED_MESSAGE.replace("this Undo", "this Redo").replace("step back", "step"))
    if _history_moved(rec) or not rec.history.IsRestoreNextStateAvailable():
        rec.forward = 0
        return False
    rec.history.RestoreNextState()
    rec.forward -= 1
    rec.back += 1
    _settle(rec)
    return True


def forget(seg_node=None) -> None:
    """Drop the saved states of ``seg_node`` (all when None): scene close, module reload."""
    if seg_node is None:
        _RECORDS.clear()
        return
    _RECORDS.pop(seg_node.GetAddressAsString("vtkObject"), None)
