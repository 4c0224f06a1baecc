"""Source networks for test-time adaptation and the slice pre-/post-processing they were trained with.

A source model is a 2D MONAI ``UNet`` with batch norm (``norm=BATCH``), one input channel, one output
logit per pixel (sigmoid, as in the VPTTA/GraTa reference code). Its model card says how to turn a
volume into network input, so a checkpoint carries everything needed to run it:

``structure`` (segment name), ``modality`` (``ct``: fixed HU window; ``mr``: per-volume percentiles
of the non-zero voxels, so any T1 works whatever its scanner scale), ``size`` (square input, px),
``window`` (ct only), ``channels``/``strides``/``num_res_units`` (the UNet).

Slices are axial in *canonical* orientation: the volume is permuted/flipped (from its direction
matrix) so array axes run along R-L, A-P, S-I; each axial slice is padded to a square (keeping the
aspect ratio) and resized to ``size``. :func:`slices_from_volume` / :func:`masks_to_volume` invert
each other exactly on the grid.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CheckpointError, InputError
from ..volume import Volume

ARCHITECTURE = "tta-unet2d"
DEFAULT_ARCH = {"channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 1}


def build_unet(card: dict | None = None):
    """The MONAI 2D UNet with BatchNorm described by ``card`` (defaults: DEFAULT_ARCH)."""
    from monai.networks.layers import Norm
    from monai.networks.nets import UNet

    c = {**DEFAULT_ARCH, **(card or {})}
    return UNet(spatial_dims=2, in_channels=1, out_channels=1, channels=tuple(c["channels"]),
                strides=tuple(c["strides"]), num_res_units=int(c["num_res_units"]), norm=Norm.BATCH)


@dataclass
class SourceModel:
    """A loaded source network + its card (pre-processing recipe, structure name)."""

    net: object
    card: dict
    model_id: str = "model"

    @property
    def structure(self) -> str:
        return self.card.get("structure", "structure")

    @property
    def size(self) -> int:
        return int(self.card.get("size", 128))


def load_source_model(model: str, device: str = "cpu") -> SourceModel:
    """A registry id (e.g. ``liver-source``) or a checkpoint path -> SourceModel in eval mode."""
    from ..models import resolve_model
    from ..models.checkpoints import load_state_into, state_dict_of

    entry = resolve_model(model)
    obj = entry.load()
    if obj.get("architecture") != ARCHITECTURE:
        raise CheckpointError(f"model '{model}' is a '{obj.get('architecture')}' model; test-time adaptation "
                              f"needs a '{ARCHITECTURE}' source model (e.g. liver-source, brain-source)")
    card = dict(obj.get("card") or {})
    net = build_unet(card)
    load_state_into(net, state_dict_of(obj, ARCHITECTURE, entry.path), path=entry.path)
    net.to(device).eval()
    return SourceModel(net, card, entry.id)


# ---------------------------------------------------------------- orientation and intensities

def canonical_axes(direction) -> tuple[list[int], list[bool]]:
    """(perm, flips): ``np.transpose(a, perm)`` then flipping axes ``flips`` makes array axes 0, 1, 2
    point to +R, +A, +S (nearest axis of the direction matrix; its columns are the axis directions)."""
    d = np.asarray(direction, dtype=float)
    perm = [int(np.argmax(np.abs(d[r, :]))) for r in range(3)]
    if len(set(perm)) != 3:  # a 45-degree oblique tie: fall back to greedy assignment
        perm, free = [], [0, 1, 2]
        for r in range(3):
            k = max(free, key=lambda c: abs(d[r, c]))
            perm.append(k)
            free.remove(k)
    flips = [bool(d[r, perm[r]] < 0) for r in range(3)]
    return perm, flips


def to_canonical(array: np.ndarray, direction) -> np.ndarray:
    perm, flips = canonical_axes(direction)
    a = np.transpose(array, perm)
    for ax, f in enumerate(flips):
        if f:
            a = np.flip(a, ax)
    return a


def from_canonical(array: np.ndarray, direction) -> np.ndarray:
    perm, flips = canonical_axes(direction)
    for ax, f in enumerate(flips):
        if f:
            array = np.flip(array, ax)
    return np.ascontiguousarray(np.transpose(array, np.argsort(perm)))


def normalise_volume(array: np.ndarray, card: dict) -> np.ndarray:
    """Intensities -> roughly [0, 1] as the card says (done by the model itself, never by the user)."""
    a = np.asarray(array, dtype=np.float32)
    if not np.all(np.isfinite(a)):
        raise InputError("the image holds NaN/Inf voxels; fix or mask them first")
    if card.get("modality", "ct") == "ct":
        lo, hi = card.get("window", [-160.0, 240.0])
    else:
        lo = float(np.percentile(a, 0.5))  # background (air) level
        fg = a[a > lo]
        hi = float(np.percentile(fg, 99.5)) if fg.size else lo  # bright tissue, ignoring outliers
    if hi <= lo:
        raise InputError("the image is constant; there is nothing to segment")
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------- slices <-> network input

def axial_count(volume: Volume) -> int:
    perm, _ = canonical_axes(volume.direction)
    return volume.shape[perm[2]]


def slices_from_volume(volume: Volume, card: dict, indices=None):
    """Normalised canonical axial slices resized to the card's size: a float32 tensor [n, 1, S, S].

    ``indices`` count canonical axial slices (inferior to superior). Returns (tensor, indices, shape2d)."""
    import torch
    import torch.nn.functional as F

    can = to_canonical(normalise_volume(volume.array, card), volume.direction)
    n = can.shape[2]
    idx = list(range(n)) if indices is None else [int(i) for i in indices]
    if any(not 0 <= i < n for i in idx):
        raise InputError(f"slice indices must lie in 0..{n - 1}")
    stack = np.ascontiguousarray(np.moveaxis(can[:, :, idx], 2, 0))  # [n, X, Y]
    t = torch.from_numpy(stack)[:, None]
    t = _pad_square(t)
    size = int(card.get("size", 128))
    if t.shape[-1] != size:
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=t.shape[-1] > size)
    return t.contiguous(), idx, tuple(stack.shape[1:])


def _pad_square(t):
    import torch.nn.functional as F

    h, w = t.shape[-2:]
    m = max(h, w)
    ph, pw = m - h, m - w
    return F.pad(t, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=0.0) if (ph or pw) else t


def logits_to_slices(logits, shape2d) -> np.ndarray:
    """Network logits [n, 1, S, S] -> logits on the canonical slice grid [n, X, Y] (inverse of the
    pad + resize in :func:`slices_from_volume`)."""
    import torch.nn.functional as F

    h, w = shape2d
    m = max(h, w)
    t = logits.detach().float().cpu()
    if t.shape[-1] != m:
        t = F.interpolate(t, size=(m, m), mode="bilinear", align_corners=False)
    ph, pw = (m - h) // 2, (m - w) // 2
    return t[:, 0, ph:ph + h, pw:pw + w].numpy()


def masks_to_volume(slice_masks: np.ndarray, indices, volume: Volume) -> np.ndarray:
    """Canonical per-slice masks [n, X, Y] at ``indices`` -> a bool mask on the volume's own grid."""
    perm, _ = canonical_axes(volume.direction)
    cshape = tuple(volume.shape[p] for p in perm)
    can = np.zeros(cshape, dtype=bool)
    for m, i in zip(slice_masks, indices):
        can[:, :, i] = m
    return from_canonical(can, volume.direction)
