"""Segment a whole volume slice by slice with a trained scribble model."""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from .network import divisor
from .preprocess import context_indices, normalise, plane_of, resize_image, round_up, slice_engine, work_shape


def predict_volume(net, card: dict, image: np.ndarray, progress=None, device: str = "cpu",
                   batch: int = 16, direction=None) -> np.ndarray:
    """[i, j, k] image -> [i, j, k] uint8 labels (0 background, c for ``card['classes'][c-1]``).

    Slices of the model's plane come through the slice engine (``direction``: the image's IJK-to-RAS
    directions; None = an array in LPS order), each normalised with the volume's statistics, with
    ``card['context']`` neighbours on each side as extra channels (2.5D), shrunk like the training
    slices, padded to the network's divisor. Class probabilities (kept at working size) are smoothed
    across slices (``card['smooth_slices']``, sigma in slices: 3D consistency) and brought back to
    full size before the argmax; the labels are put back on the image's own grid."""
    import torch
    import torch.nn.functional as F

    if np.ndim(image) != 3:
        raise InputError(f"expected a 3D image, got shape {np.shape(image)}")
    progress = progress or (lambda f, m="": None)
    eng = slice_engine(np.shape(image), direction, plane_of(card))
    vol = np.moveaxis(eng.canonical(normalise(image)), eng.axis, 0)
    n = eng.n_slices
    h, w = eng.slice_shape
    ws = work_shape((h, w), card.get("max_size"))
    div = divisor(card["net"])
    ctx = int(card.get("context", 0))
    H, W = round_up(ws[0], div), round_up(ws[1], div)
    probs = np.zeros((n, len(card["classes"]) + 1) + tuple(ws), dtype=np.float16)
    net.eval()
    with torch.inference_mode():
        for a in range(0, n, batch):
            ks = list(range(a, min(n, a + batch)))
            x = torch.from_numpy(np.stack([vol[context_indices(k, n, ctx)] for k in ks]))
            x = resize_image(x, ws)
            fill = x.amin(dim=(1, 2, 3), keepdim=True)
            xp = fill.expand(x.shape[0], x.shape[1], H, W).clone()
            xp[:, :, : ws[0], : ws[1]] = x
            p = torch.softmax(net(xp.to(device)).float().cpu(), dim=1)[:, :, : ws[0], : ws[1]]
            probs[a:a + len(ks)] = p.numpy()
            progress(0.9 * min(1.0, (a + batch) / n), f"segmented {min(n, a + batch)}/{n} slices")
    sigma = float(card.get("smooth_slices", 0.0))
    if sigma > 0 and n > 1:
        from scipy.ndimage import gaussian_filter1d

        probs = gaussian_filter1d(probs.astype(np.float32), sigma, axis=0, mode="nearest").astype(np.float16)
    out = np.zeros(np.shape(image), dtype=np.uint8)
    for a in range(0, n, batch):
        p = torch.from_numpy(probs[a:a + batch].astype(np.float32))
        if ws != (h, w):
            p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
        for k, lab in zip(range(a, a + len(p)), p.argmax(1).numpy().astype(np.uint8)):
            eng.put(out, k, lab)
    progress(1.0, "segmented")
    return out


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 3D connected component of a mask (26-connectivity); for single-piece organs, it
    drops scattered false positives in look-alike tissue."""
    from scipy import ndimage

    comps, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(comps.ravel())[1:]
    return comps == 1 + int(np.argmax(sizes))


def postprocess(labels: np.ndarray, classes: list[str], keep_largest) -> np.ndarray:
    """Apply ``keep_largest`` (True = every class, or a list of class names) to a label array:
    voxels dropped from a class become background, and background voxels enclosed by the kept piece
    join it (holes; never voxels of another class)."""
    from scipy import ndimage

    if not keep_largest:
        return labels
    names = classes if keep_largest is True else list(keep_largest)
    unknown = [n for n in names if n not in classes]
    if unknown:
        raise InputError(f"keep_largest names {unknown}, which the model does not segment ({classes})")
    out = labels.copy()
    for name in names:
        c = classes.index(name) + 1
        m = labels == c
        keep = keep_largest_component(m)
        out[m & ~keep] = 0
        out[ndimage.binary_fill_holes(keep) & (out == 0)] = c  # enclosed background joins the organ
    return out
