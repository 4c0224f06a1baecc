"""Segment a whole volume slice by slice with a trained scribble model."""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from .network import divisor
from .preprocess import normalise, plane_of, resize_image, round_up, slice_engine, work_shape


def predict_volume(net, card: dict, image: np.ndarray, progress=None, device: str = "cpu",
                   batch: int = 16, direction=None) -> np.ndarray:
    """[i, j, k] image -> [i, j, k] uint8 labels (0 background, c for ``card['classes'][c-1]``).

    Slices of the model's plane come through the slice engine (``direction``: the image's IJK-to-RAS
    directions; None = an array in LPS order), each normalised with the volume's statistics, shrunk
    like the training slices, padded to the network's divisor; class probabilities are brought back
    to full size before the argmax, and the labels are put back on the image's own grid."""
    import torch
    import torch.nn.functional as F

    if np.ndim(image) != 3:
        raise InputError(f"expected a 3D image, got shape {np.shape(image)}")
    progress = progress or (lambda f, m="": None)
    eng = slice_engine(np.shape(image), direction, plane_of(card))
    vol = normalise(image)
    n = eng.n_slices
    h, w = eng.slice_shape
    ws = work_shape((h, w), card.get("max_size"))
    div = divisor(card["net"])
    H, W = round_up(ws[0], div), round_up(ws[1], div)
    out = np.zeros(np.shape(image), dtype=np.uint8)
    net.eval()
    with torch.inference_mode():
        for a in range(0, n, batch):
            ks = list(range(a, min(n, a + batch)))
            x = torch.from_numpy(eng.stack(vol, ks))[:, None]
            x = resize_image(x, ws)
            fill = x.amin(dim=(1, 2, 3), keepdim=True)
            xp = fill.expand(x.shape[0], 1, H, W).clone()
            xp[:, :, : ws[0], : ws[1]] = x
            p = torch.softmax(net(xp.to(device)).float().cpu(), dim=1)[:, :, : ws[0], : ws[1]]
            if ws != (h, w):
                p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
            for k, lab in zip(ks, p.argmax(1).numpy().astype(np.uint8)):
                eng.put(out, k, lab)
            progress(min(1.0, (a + batch) / n), f"segmented {min(n, a + batch)}/{n} slices")
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
    """Apply ``keep_largest`` (True = every class, or a list of class names) to a label array;
    voxels dropped from a class become background."""
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
        out[m & ~keep_largest_component(m)] = 0
    return out
