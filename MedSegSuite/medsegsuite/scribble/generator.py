"""Realistic scribbles from full labels, for evaluation and tests (labelled *synthetic* wherever
reported).

Per chosen slice and per connected component of each class (background included), one stroke of
one of these kinds:

* ``skeleton``: a contiguous piece of the skeleton of the eroded component, a random stretch
  covering ``fraction`` of the skeleton's length (how annotators trace along a structure);
* ``core``: the component eroded until at most ``fraction`` of its area is left, then
  skeletonised (a stroke through the thick middle);
* ``random``: a random walk inside the eroded component whose length is ``fraction`` of the
  skeleton's length (a sloppy partial stroke).

Strokes are ``width`` pixels wide and never leave their class (they are drawn on the eroded
component). Background is scribbled in a band around the union of the classes (``margin_mm``
wide), where annotators put their background strokes, plus ``far_strokes`` strokes in the far
background (other organs, fat, air), one in each of that many random Voronoi cells of it so they
spread over the image as an annotator's would.
Components smaller than ``min_area`` pixels get no stroke (as a human would miss them).

``annotator`` style (`annotator_slice`): what an annotator draws with Slicer's paint brush for *Grow
from seeds*: per component of each class a **cross** of two straight strokes through its thickest
point (along its long and short axes, each ``fraction`` of the chord, slightly tilted), and
background as **broken arcs** on a ring just outside the structures (``ring_px`` out, ``arcs``
pieces covering ``arc_cover`` of the ring); nothing in the far background. ``strokes=1`` draws only
the long stroke and one arc (a hurried annotator on many slices).

`STYLES` names the scribble styles the evaluation compares; `style_scribbles` draws one.
"""
from __future__ import annotations

from collections import deque

import numpy as np
from scipy import ndimage

from ..errors import InputError
from .labels import UNLABELLED
from .preprocess import slice_engine, slice_spacing

KINDS = ("skeleton", "core", "random")
# name -> (slice selection, generator): `style_scribbles` turns these into scribbles on real labels.
STYLES = {
    "annotator": "a cross of strokes per structure + broken background arcs just outside, on 10 evenly spaced slices",
    "skeleton": "one skeleton stroke per structure + a background ring stroke and far strokes, on 10 evenly spaced slices",
    "every4": "one long stroke per structure + one background arc, on every 4th slice",
}


def _skeleton(mask: np.ndarray) -> np.ndarray:
    from skimage.morphology import skeletonize

    return skeletonize(mask)


def _erode_inside(mask: np.ndarray, steps: int) -> np.ndarray:
    """Erode up to ``steps`` times but never to nothing."""
    cur = mask
    for _ in range(steps):
        nxt = ndimage.binary_erosion(cur)
        if nxt.sum() < 4:
            break
        cur = nxt
    return cur


def _geodesic_piece(skel: np.ndarray, fraction: float, rng) -> np.ndarray:
    """A contiguous stretch of a skeleton: BFS from a random point, keep pixels within
    ``fraction`` × (the skeleton's geodesic extent)."""
    pts = np.argwhere(skel)
    if len(pts) == 0:
        return skel
    start = tuple(pts[rng.integers(len(pts))])
    dist = {start: 0}
    q = deque([start])
    H, W = skel.shape
    while q:
        p = q.popleft()
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                n = (p[0] + di, p[1] + dj)
                if (di or dj) and 0 <= n[0] < H and 0 <= n[1] < W and skel[n] and n not in dist:
                    dist[n] = dist[p] + 1
                    q.append(n)
    far = max(dist.values())
    # start at the far end so the stroke runs along the structure, not around a point
    start2 = max(dist, key=dist.get)
    dist2 = {start2: 0}
    q = deque([start2])
    while q:
        p = q.popleft()
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                n = (p[0] + di, p[1] + dj)
                if (di or dj) and n in dist and n not in dist2:
                    dist2[n] = dist2[p] + 1
                    q.append(n)
    far = max(dist2.values())
    keep = max(1, int(round(fraction * far)))
    lo = int(rng.integers(0, max(1, far - keep + 1)))
    out = np.zeros_like(skel)
    for p, d in dist2.items():
        if lo <= d <= lo + keep:
            out[p] = True
    return out


def _random_walk(region: np.ndarray, length: int, rng) -> np.ndarray:
    pts = np.argwhere(region)
    out = np.zeros_like(region)
    if len(pts) == 0:
        return out
    p = pts[rng.integers(len(pts))]
    direction = rng.normal(size=2)
    for _ in range(max(1, length)):
        out[tuple(p)] = True
        direction = direction / (np.linalg.norm(direction) + 1e-9) + rng.normal(scale=0.35, size=2)
        step = np.round(direction / (np.abs(direction).max() + 1e-9)).astype(int)
        q = p + step
        if 0 <= q[0] < region.shape[0] and 0 <= q[1] < region.shape[1] and region[tuple(q)]:
            p = q
        else:
            direction = -direction
    return out


def _stroke(comp: np.ndarray, kind: str, fraction: float, width: int, rng) -> np.ndarray:
    inner = _erode_inside(comp, width + 1)
    if kind == "core":
        area = comp.sum()
        core = inner
        while core.sum() > fraction * area:
            nxt = ndimage.binary_erosion(core)
            if nxt.sum() < 4:
                break
            core = nxt
        line = _skeleton(core)
    elif kind == "random":
        length = max(3, int(fraction * _skeleton(inner).sum()))
        line = _random_walk(inner, length, rng)
    else:
        line = _geodesic_piece(_skeleton(inner), fraction, rng)
    if width > 1:
        line = ndimage.binary_dilation(line, iterations=(width - 1) // 2 + ((width - 1) % 2))
    return line & comp


def scribble_slice(labels2d: np.ndarray, n_classes: int, rng, kinds=KINDS, fraction: float = 0.8,
                   width: int = 1, margin_px: int = 8, min_area: int = 20, far_strokes: int = 10) -> np.ndarray:
    """One 2D slice of dense labels (0..C-1) -> scribbles (UNLABELLED where none)."""
    out = np.full(labels2d.shape, UNLABELLED, dtype=np.uint8)
    fg = labels2d > 0
    for c in range(n_classes):
        m = labels2d == c
        if c == 0:
            if fg.any():  # a band around the structures, where background strokes are drawn
                band = ndimage.binary_dilation(fg, iterations=margin_px) & m
                m = band if band.sum() >= min_area else m
        comps, n = ndimage.label(m)
        sizes = ndimage.sum(m, comps, range(1, n + 1)) if n else []
        for k in range(1, n + 1):
            if sizes[k - 1] < min_area:
                continue
            kind = kinds[int(rng.integers(len(kinds)))]
            s = _stroke(comps == k, kind, fraction, width, rng)
            out[s & (out == UNLABELLED)] = c
    if fg.any() and far_strokes > 0:  # strokes spread over the far background (other organs, fat, air)
        far = (labels2d == 0) & ~ndimage.binary_dilation(fg, iterations=2 * margin_px)
        pts = np.argwhere(far)
        if len(pts) >= min_area:
            seeds = pts[rng.choice(len(pts), size=min(far_strokes, len(pts)), replace=False)]
            d = ((pts[:, None, :] - seeds[None]) ** 2).sum(-1)
            part = np.full(far.shape, -1)
            part[tuple(pts.T)] = d.argmin(1)
            for t in range(len(seeds)):
                cell = part == t
                comps, n = ndimage.label(cell)
                if n == 0:
                    continue
                big = comps == 1 + int(np.argmax(ndimage.sum(cell, comps, range(1, n + 1))))
                if big.sum() < min_area:
                    continue
                s = _stroke(big, kinds[int(rng.integers(len(kinds)))], fraction, width, rng)
                out[s & (out == UNLABELLED)] = 0
    return out


def make_scribbles(labels: np.ndarray, n_classes: int, slices, plane: str = "axial", seed: int = 0,
                   kinds=KINDS, fraction: float = 0.8, width: int = 1, margin_mm: float = 10.0,
                   spacing=(1.0, 1.0, 1.0), min_area: int = 20, far_strokes: int = 10,
                   direction=None) -> np.ndarray:
    """Dense 3D labels (0 = background, 1..C-1) -> scribbles on the given slices of ``plane`` only.

    Slices are counted as the slice engine counts them (canonical LPS grid; ``direction``: the
    labels' IJK-to-RAS directions, None = an array in LPS order). Returns uint8 [i, j, k] on the
    labels' own grid with ``UNLABELLED`` everywhere else. ``fraction`` (0..1] is the stated part of
    each structure a stroke covers (of its skeleton length, or of its area for ``core``)."""
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise InputError(f"labels must be 3D, got shape {labels.shape}")
    if not 0 < fraction <= 1:
        raise InputError(f"fraction must be in (0, 1], got {fraction}")
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise InputError(f"unknown scribble kinds {bad}; choose from {KINDS}")
    rng = np.random.default_rng(seed)
    eng = slice_engine(labels.shape, direction, plane)
    margin_px = max(1, int(round(margin_mm / min(slice_spacing(eng, spacing)))))
    out = np.full(labels.shape, UNLABELLED, dtype=np.uint8)
    for i in slices:
        k = eng.check_index(i)
        eng.put(out, k, scribble_slice(np.ascontiguousarray(eng.slice(labels, k)), n_classes, rng, kinds, fraction,
                                       width, margin_px, min_area, far_strokes))
    return out


def scribble_stats(scribbles: np.ndarray, labels: np.ndarray, n_classes: int, plane: str = "axial",
                   direction=None) -> dict:
    """Fraction of each class's voxels (on the scribbled slices of ``plane``) that carry a scribble."""
    eng = slice_engine(np.shape(scribbles), direction, plane)
    sc, lab = np.moveaxis(eng.canonical(scribbles), eng.axis, 0), np.moveaxis(eng.canonical(labels), eng.axis, 0)
    sl = np.any(sc != UNLABELLED, axis=(1, 2))
    return {c: float(np.count_nonzero(sc[sl] == c) / max(1, np.count_nonzero(lab[sl] == c)))
            for c in range(n_classes)}


def _line(shape, centre, angle: float, length: float) -> np.ndarray:
    """A 1-pixel straight segment of ``length`` px through ``centre`` at ``angle`` (radians)."""
    n = max(2, int(np.ceil(length)) * 2)
    t = np.linspace(-length / 2, length / 2, n)
    r = np.round(centre[0] + t * np.sin(angle)).astype(int)
    c = np.round(centre[1] + t * np.cos(angle)).astype(int)
    ok = (r >= 0) & (r < shape[0]) & (c >= 0) & (c < shape[1])
    out = np.zeros(shape, dtype=bool)
    out[r[ok], c[ok]] = True
    return out


def _cross(comp: np.ndarray, n_strokes: int, fraction: float, width: int, rng) -> np.ndarray:
    """Strokes through the component's thickest point along its principal axes, kept inside the
    eroded component (the piece of each line that contains the centre)."""
    inner = _erode_inside(comp, width + 1)
    dist = ndimage.distance_transform_edt(inner)
    centre = np.unravel_index(int(np.argmax(dist)), dist.shape)
    pts = np.argwhere(inner).astype(float)
    cov = np.cov((pts - pts.mean(0)).T) if len(pts) > 2 else np.eye(2)
    evals, evecs = np.linalg.eigh(cov)
    out = np.zeros(comp.shape, dtype=bool)
    for k in range(n_strokes):
        v = evecs[:, -1 - k]  # long axis first
        angle = float(np.arctan2(v[0], v[1]) + rng.normal(scale=np.deg2rad(8)))
        line = _line(comp.shape, centre, angle, 4 * max(comp.shape)) & inner
        pieces, n = ndimage.label(line, structure=np.ones((3, 3)))
        if n == 0:
            continue
        piece = pieces == (pieces[centre] if pieces[centre] else 1 + int(np.argmax(
            ndimage.sum(line, pieces, range(1, n + 1)))))
        ij = np.argwhere(piece)
        order = np.argsort(ij @ np.array([np.sin(angle), np.cos(angle)]))
        keep = min(len(ij), max(2, int(round(fraction * len(ij)))))
        lo = int(rng.integers(0, len(ij) - keep + 1))
        sel = np.zeros_like(piece)
        sel[tuple(ij[order[lo:lo + keep]].T)] = True
        out |= sel
    if width > 1:
        out = ndimage.binary_dilation(out, iterations=(width - 1) // 2 + ((width - 1) % 2))
    return out & comp


def _arcs(fg: np.ndarray, allowed: np.ndarray, ring_px: int, arcs: int, cover: float, width: int,
          rng) -> np.ndarray:
    """Background as ``arcs`` pieces of the ring ``ring_px`` outside ``fg``, together covering about
    ``cover`` of it, ordered by angle around the structures' centre (broken, as drawn by hand)."""
    grown = ndimage.binary_dilation(fg, iterations=ring_px)
    ring = grown & ~ndimage.binary_erosion(grown) & allowed
    pts = np.argwhere(ring)
    out = np.zeros(fg.shape, dtype=bool)
    if len(pts) < 4 or arcs < 1:
        return out
    c = np.argwhere(fg).mean(0)
    ang = np.arctan2(pts[:, 0] - c[0], pts[:, 1] - c[1])
    order = np.argsort(ang)
    n = len(order)
    per = max(2, int(round(cover * n / arcs)))
    starts = np.sort(rng.choice(n, size=arcs, replace=False)) if n >= arcs else np.arange(n)
    for s0 in starts:
        idx = order[(s0 + np.arange(per)) % n]
        out[tuple(pts[idx].T)] = True
    if width > 1:
        out = ndimage.binary_dilation(out, iterations=(width - 1) // 2 + ((width - 1) % 2))
    return out & allowed


def annotator_slice(labels2d: np.ndarray, n_classes: int, rng, strokes: int = 2, fraction: float = 0.8,
                    width: int = 2, ring_px: int = 4, arcs: int = 4, arc_cover: float = 0.5,
                    min_area: int = 20) -> np.ndarray:
    """One slice of dense labels -> annotator-style scribbles (see the module docstring)."""
    out = np.full(labels2d.shape, UNLABELLED, dtype=np.uint8)
    fg = labels2d > 0
    for c in range(1, n_classes):
        m = labels2d == c
        comps, n = ndimage.label(m)
        for k in range(1, n + 1):
            comp = comps == k
            if comp.sum() < min_area:
                continue
            out[_cross(comp, strokes, fraction * rng.uniform(0.85, 1.0), width, rng) & (out == UNLABELLED)] = c
    if fg.any():
        bg = _arcs(fg, labels2d == 0, ring_px, arcs if strokes > 1 else 1, arc_cover if strokes > 1 else
                   arc_cover / 2, width, rng)
        out[bg & (out == UNLABELLED)] = 0
    return out


def style_slices(n: int, style: str, count: int = 10) -> list[int]:
    """The slices a style scribbles on: ``count`` evenly spaced ones away from the ends, or every 4th."""
    if style == "every4":
        return list(range(2, n, 4))
    return sorted({int(round(v)) for v in np.linspace(n / (2 * count), n - 1 - n / (2 * count), count)})


def style_scribbles(labels: np.ndarray, n_classes: int, style: str, plane: str = "axial", seed: int = 0,
                    spacing=(1.0, 1.0, 1.0), direction=None, slices=None, count: int = 10) -> np.ndarray:
    """Scribbles of a named style (`STYLES`) on dense 3D labels; ``slices`` defaults to the style's."""
    if style not in STYLES:
        raise InputError(f"unknown scribble style {style!r}; choose from {', '.join(STYLES)}")
    labels = np.asarray(labels)
    eng = slice_engine(labels.shape, direction, plane)
    slices = list(slices) if slices is not None else style_slices(eng.n_slices, style, count)
    if style == "skeleton":
        return make_scribbles(labels, n_classes, slices, plane, seed, kinds=("skeleton",), spacing=spacing,
                              direction=direction)
    rng = np.random.default_rng(seed)
    ring_px = max(2, int(round(6.0 / min(slice_spacing(eng, spacing)))))  # ~6 mm outside the boundary
    out = np.full(labels.shape, UNLABELLED, dtype=np.uint8)
    for i in slices:
        k = eng.check_index(i)
        lab2 = np.ascontiguousarray(eng.slice(labels, k))
        eng.put(out, k, annotator_slice(lab2, n_classes, rng, strokes=2 if style == "annotator" else 1,
                                        ring_px=ring_px))
    return out
