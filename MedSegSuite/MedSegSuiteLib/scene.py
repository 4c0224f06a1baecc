"""Scene bundles (`.mrb`): write with `vtkMRMLScene.WriteToMRB`, read back with `ReadFromMRB`.

Both work on slicer-core and inside 3D Slicer (Slicer opens the file with File > Load Scene or by
drag and drop). Volumes go in as `.nrrd`, segmentations as `.seg.nrrd`.
:func:`save_demo_scene` is the demo's scene writer (`medsegsuite.demo.SCENE_WRITER`).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import slicer

from medsegsuite.errors import InputError

from .segments import ensure_converter_rules, new_segmentation_node, write_masks
from .volumes import volume_to_node

_STORABLE = ("vtkMRMLScalarVolumeNode", "vtkMRMLSegmentationNode", "vtkMRMLMarkupsNode")


def new_scene():
    """An empty scene that can also read bundles (slicer-core needs a data-IO/cache manager set)."""
    ensure_converter_rules()
    scene = slicer.vtkMRMLScene()
    _ensure_io(scene)
    return scene


def _ensure_io(scene) -> None:
    if scene.GetDataIOManager() is not None and scene.GetCacheManager() is not None:
        return
    io = slicer.vtkDataIOManager()
    cache = slicer.vtkCacheManager()
    cache.SetRemoteCacheDirectory(tempfile.mkdtemp(prefix="medsegsuite-cache-"))
    io.SetCacheManager(cache)
    scene.SetDataIOManager(io)
    if hasattr(scene, "SetCacheManager"):
        scene.SetCacheManager(cache)


def save_mrb(scene, path) -> Path:
    """Write ``scene`` to ``path`` (.mrb); storage nodes are added where missing."""
    path = Path(path)
    if path.suffix.lower() != ".mrb":
        raise InputError(f"a scene bundle file name ends in .mrb, got '{path.name}'")
    path.parent.mkdir(parents=True, exist_ok=True)
    for cls in _STORABLE:
        for i in range(scene.GetNumberOfNodesByClass(cls)):
            node = scene.GetNthNodeByClass(i, cls)
            if node.GetStorageNode() is None:
                node.AddDefaultStorageNode()
    if not scene.WriteToMRB(str(path)):
        raise InputError(f"could not write the scene bundle {path} (is the folder writable?)")
    return path


def load_mrb(path, scene=None):
    """Read a `.mrb` into ``scene`` (a new one by default); returns the scene."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no scene bundle at {path}")
    scene = scene if scene is not None else new_scene()
    _ensure_io(scene)
    ensure_converter_rules()
    if not scene.ReadFromMRB(str(path)):
        raise InputError(f"{path} is not a readable Slicer scene bundle")
    return scene


def nodes_by_class(scene, cls: str) -> list:
    return [scene.GetNthNodeByClass(i, cls) for i in range(scene.GetNumberOfNodesByClass(cls))]


def save_demo_scene(path, ct_volume, results: dict) -> Path:
    """The demo's scene: the CT volume node + one segmentation node per method (named after it)
    holding that method's segments (``liver``, ``tumour``) on the CT's geometry."""
    scene = new_scene()
    ct_node = volume_to_node(ct_volume, scene, name=ct_volume.name or "CT")
    for method, seg in results.items():
        seg.geometry.require_same(ct_volume.geometry, f"{method} segmentation")
        node = new_segmentation_node(scene, str(method), ct_volume.geometry)
        node.SetNodeReferenceID("referenceImageGeometryRef", ct_node.GetID())
        write_masks(node, seg.masks, ct_volume.geometry, colors=seg.colors, undoable=False)
    return save_mrb(scene, path)
