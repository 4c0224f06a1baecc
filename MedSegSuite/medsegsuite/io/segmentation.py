"""Segmentations: named binary masks on one grid, stored as Slicer `.seg.nrrd` or a labelmap.

`.seg.nrrd` keeps names, colours, label values and overlapping segments (each overlap goes to its
own layer, as Slicer does), read/written with slicerio. A labelmap (NIfTI/NRRD/MHA) holds
non-overlapping labels only; names travel in a JSON side file ``<file>.labels.json`` when written
by us.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..volume import Geometry, Volume

_LPS4 = np.diag([-1.0, -1.0, 1.0, 1.0])

# Colours Slicer's terminology uses for the structures this suite segments (RGB 0..1).
_KNOWN_COLORS = {
    "liver": (0.8667, 0.5098, 0.3961), "tumour": (0.5647, 0.9333, 0.5647),
    "tumor": (0.5647, 0.9333, 0.5647), "brain": (0.9804, 0.9804, 0.8235),
    "background": (0.5, 0.5, 0.5), "spleen": (0.6157, 0.4235, 0.6392),
    "kidney": (0.7255, 0.4706, 0.3922), "pancreas": (0.9765, 0.7059, 0.4706),
}
_PALETTE = [(0.5, 0.68, 0.5), (0.95, 0.84, 0.57), (0.69, 0.48, 0.39), (0.44, 0.72, 0.82),
            (0.85, 0.4, 0.48), (0.56, 0.93, 0.56), (0.86, 0.55, 0.95), (1.0, 0.98, 0.86)]


def default_color(name: str, index: int = 0) -> tuple[float, float, float]:
    return _KNOWN_COLORS.get(name.lower(), _PALETTE[index % len(_PALETTE)])


@dataclass
class Segmentation:
    """Ordered named boolean masks (each indexed [i, j, k]) on one geometry."""

    geometry: Geometry
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    colors: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    def __post_init__(self):
        for name in list(self.masks):
            self.masks[name] = self._check(name, self.masks[name])
        for i, name in enumerate(self.masks):
            self.colors.setdefault(name, default_color(name, i))

    def _check(self, name, mask) -> np.ndarray:
        m = np.asarray(mask)
        if m.shape != self.geometry.shape:
            raise InputError(f"segment '{name}' has shape {m.shape}, the segmentation grid is "
                             f"{self.geometry.shape}")
        if m.dtype != bool:
            if np.issubdtype(m.dtype, np.floating) and not np.all(np.isfinite(m)):
                raise InputError(f"segment '{name}' holds NaN values")
            m = m != 0
        return m

    def add(self, name: str, mask, color=None) -> None:
        if not name:
            raise InputError("a segment needs a name")
        self.masks[name] = self._check(name, mask)
        self.colors[name] = tuple(color) if color is not None else self.colors.get(
            name, default_color(name, len(self.masks) - 1))

    @property
    def names(self) -> list[str]:
        return list(self.masks)

    def require(self, name: str) -> np.ndarray:
        if name not in self.masks:
            raise InputError(f"no segment named '{name}'; the segmentation holds {self.names}")
        return self.masks[name]

    @classmethod
    def from_labelmap(cls, labelmap: Volume, names: dict[int, str]) -> "Segmentation":
        return cls(labelmap.geometry, labelmap_to_masks(labelmap.array, names))


def labelmap_to_masks(labelmap: np.ndarray, names: dict[int, str] | None = None) -> dict[str, np.ndarray]:
    """Split a multi-label array into named masks. Without names, labels are named ``label_<v>``.

    A name may be given to several values by mapping each to the same name (e.g. LiTS ``liver`` =
    labels 1 and 2): the mask is their union.
    """
    labelmap = np.asarray(labelmap)
    if not np.issubdtype(labelmap.dtype, np.integer):
        if not np.allclose(labelmap, np.round(labelmap)):
            raise InputError("a labelmap must hold integer label values")
        labelmap = np.round(labelmap).astype(np.int32)
    if names is None:
        names = {int(v): f"label_{int(v)}" for v in np.unique(labelmap) if v != 0}
    out: dict[str, np.ndarray] = {}
    for value, name in names.items():
        m = labelmap == int(value)
        out[name] = out[name] | m if name in out else m
    return out


def masks_to_labelmap(masks: dict[str, np.ndarray], overlap: str = "error") -> tuple[np.ndarray, dict[int, str]]:
    """Merge named masks into one labelmap (values 1..N in mask order).

    ``overlap='error'`` refuses overlapping masks (a labelmap cannot hold them); ``'last'`` lets later
    masks win. Use `.seg.nrrd` to keep overlaps.
    """
    if not masks:
        raise InputError("no masks to merge")
    shapes = {np.shape(m) for m in masks.values()}
    if len(shapes) != 1:
        raise InputError(f"masks have different shapes {sorted(shapes)}")
    lab = np.zeros(shapes.pop(), dtype=np.uint16)
    names = {}
    for v, (name, m) in enumerate(masks.items(), start=1):
        m = np.asarray(m, dtype=bool)
        if overlap == "error" and np.any(lab[m] != 0):
            other = names[int(lab[m][lab[m] != 0][0])]
            raise InputError(f"segments '{name}' and '{other}' overlap; a labelmap cannot hold both "
                             "(write a .seg.nrrd instead)")
        lab[m] = v
        names[v] = name
    return lab, names


def _layers(masks: dict[str, np.ndarray]) -> tuple[np.ndarray, list[tuple[str, int, int]]]:
    """Pack masks into as few non-overlapping layers as possible -> (layers[L,i,j,k], [(name, layer, value)])."""
    layers: list[np.ndarray] = []
    placed = []
    for name, m in masks.items():
        for li, layer in enumerate(layers):
            if not np.any(layer[m]):
                value = int(layer.max()) + 1
                layer[m] = value
                placed.append((name, li, value))
                break
        else:
            layer = np.zeros(m.shape, dtype=np.uint8)
            layer[m] = 1
            layers.append(layer)
            placed.append((name, len(layers) - 1, 1))
    return np.stack(layers), placed


def write_segmentation(seg: Segmentation, path) -> Path:
    """Write `.seg.nrrd` (any masks, overlaps kept) or a labelmap file (non-overlapping masks)."""
    from .image import write_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not seg.masks:
        raise InputError("the segmentation has no segments to write")
    if str(path).endswith(".seg.nrrd"):
        import slicerio

        layers, placed = _layers(seg.masks)
        voxels = layers[0] if len(layers) == 1 else layers
        segments = []
        for n, (name, layer, value) in enumerate(placed):
            m = seg.masks[name]
            nz = np.nonzero(m)
            extent = ([int(v) for a in nz for v in (a.min(), a.max())] if nz[0].size
                      else [0, -1, 0, -1, 0, -1])
            segments.append({"id": f"Segment_{n + 1}", "name": name, "color": list(seg.colors[name]),
                             "labelValue": value, "layer": layer, "extent": extent,
                             "status": "inprogress", "nameAutoGenerated": False,
                             "colorAutoGenerated": False})
        slicerio.write_segmentation(str(path), {
            "voxels": voxels, "ijkToLPS": _LPS4 @ seg.geometry.ijk_to_ras, "segments": segments,
            "containedRepresentationNames": ["Binary labelmap"],
            "masterRepresentation": "Binary labelmap", "referenceImageExtentOffset": [0, 0, 0]})
        return path
    lab, names = masks_to_labelmap(seg.masks)
    write_image(Volume.from_geometry(lab, seg.geometry), path)
    Path(str(path) + ".labels.json").write_text(json.dumps(
        {str(v): {"name": n, "color": list(seg.colors[n])} for v, n in names.items()}, indent=1), encoding="utf-8")
    return path


def read_segmentation(path, names: dict[int, str] | None = None, reference=None) -> Segmentation:
    """Read `.seg.nrrd` (names from the file), a labelmap (names from ``names``, the side file,
    or ``label_<v>``), or a DICOM RTSTRUCT / SEG file (contours drawn on ``reference``, an image
    series folder or grid, default: the series it references, found next to it)."""
    from .image import read_image

    path = Path(path)
    if not path.exists():
        raise InputError(f"segmentation file not found: {path}")
    from ..dicom.objects import is_dicom_file

    if is_dicom_file(path):
        from ..dicom.objects import read_structures

        return read_structures(path, reference)
    if str(path).endswith(".seg.nrrd"):
        import slicerio

        try:
            s = slicerio.read_segmentation(str(path))
        except Exception as e:  # slicerio raises bare exceptions for malformed headers
            raise InputError(f"cannot read segmentation {path}: {e}") from None
        vox = np.asarray(s["voxels"])
        if vox.ndim == 3:
            vox = vox[None]
        if vox.ndim != 4:
            raise InputError(f"{path}: unexpected voxel array of shape {vox.shape}")
        geom = Geometry.from_ijk_to_ras(vox.shape[1:], _LPS4 @ np.asarray(s["ijkToLPS"], dtype=float))
        seg = Segmentation(geom)
        for i, sd in enumerate(s.get("segments", [])):
            layer = int(sd.get("layer", 0) or 0)
            seg.add(sd.get("name") or sd.get("id") or f"segment_{i + 1}",
                    vox[layer] == int(sd["labelValue"]), sd.get("color"))
        return seg
    vol = read_image(path)
    side = Path(str(path) + ".labels.json")
    colors = {}
    if names is None and side.exists():
        meta = json.loads(side.read_text(encoding="utf-8"))
        names = {int(v): d["name"] for v, d in meta.items()}
        colors = {d["name"]: tuple(d["color"]) for d in meta.values()}
    seg = Segmentation.from_labelmap(vol, names) if names is not None else Segmentation(
        vol.geometry, labelmap_to_masks(vol.array))
    seg.colors.update(colors)
    return seg
