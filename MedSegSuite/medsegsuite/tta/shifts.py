"""SYNTHETIC multi-centre shifts: each simulated "centre" is one fixed, documented recipe of
scanner-like intensity and resolution changes applied to a real image.

These are not real multi-centre data: they model what differs between scanners and protocols
(contrast / gamma, noise, blur, bias field, resolution) on LiTS-117 and Colin27, and every table
that uses them says so. A recipe works in the image's own intensity units: intensities are mapped
to [0, 1] by the volume's 0.5/99.5 percentiles, changed, and mapped back, so the same recipe means
the same for CT (HU) and MRI (arbitrary units). Random parts use the recipe's fixed seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..volume import Volume


@dataclass(frozen=True)
class Centre:
    name: str
    description: str
    ops: tuple = field(default_factory=tuple)  # ((op, {params}), ...), applied in order
    seed: int = 0


CENTRES: dict[str, Centre] = {c.name: c for c in (
    Centre("source", "unshifted: the source model's own appearance"),
    Centre("A-contrast", "lower contrast (×0.85) and gamma 1.3 (darker mid-tones), as another calibration "
           "/ reconstruction", (("contrast", {"factor": 0.85}), ("gamma", {"gamma": 1.3})), 1),
    Centre("B-noise", "low-dose / low-field: Gaussian noise, σ = 5% of the intensity range, and gamma 0.85",
           (("gamma", {"gamma": 0.85}), ("noise", {"sigma": 0.05})), 2),
    Centre("C-blur", "soft kernel: Gaussian blur σ = 1.5 voxels and 15% more contrast",
           (("blur", {"sigma": 1.5}), ("contrast", {"factor": 1.15})), 3),
    Centre("D-bias", "coil shading: smooth multiplicative bias field (±25%) and 10% brighter",
           (("bias", {"amplitude": 0.25}), ("brightness", {"factor": 1.1})), 4),
    Centre("E-lowres", "thick / coarse acquisition: resampled to 1/3 resolution and back (linear), "
           "gamma 1.15, noise σ = 2%",
           (("resolution", {"factor": 3.0}), ("gamma", {"gamma": 1.15}), ("noise", {"sigma": 0.02})), 5),
)}
SHIFTED = [n for n in CENTRES if n != "source"]


def _bias_field(shape, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """exp of a random 2nd-order polynomial over the grid, scaled so its log spans ±amplitude."""
    grids = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij")
    terms = [g for g in grids] + [g * h for i, g in enumerate(grids) for h in grids[i:]]
    coef = rng.normal(size=len(terms)).astype(np.float32)
    f = sum(c * t for c, t in zip(coef, terms))
    f = f / max(float(np.abs(f).max()), 1e-6) * np.log1p(amplitude)
    return np.exp(f).astype(np.float32)


def apply_centre(volume: Volume, centre: str | Centre) -> Volume:
    """The volume as the named centre's scanner would show it (same grid, SYNTHETIC)."""
    from scipy import ndimage

    c = CENTRES.get(centre) if isinstance(centre, str) else centre
    if c is None:
        raise InputError(f"unknown centre '{centre}'; known: {', '.join(CENTRES)}")
    a = np.asarray(volume.array, dtype=np.float32)
    if not c.ops:
        return volume.with_array(a.copy(), name=f"{volume.name} [{c.name}]")
    lo, hi = (float(v) for v in np.percentile(a, [0.5, 99.5]))
    if hi <= lo:
        raise InputError("cannot shift a constant image")
    x = (a - lo) / (hi - lo)
    rng = np.random.default_rng(c.seed)
    for op, p in c.ops:
        if op == "contrast":
            m = float(x.mean())
            x = (x - m) * p["factor"] + m
        elif op == "gamma":
            x = np.clip(x, 0, None) ** p["gamma"]
        elif op == "brightness":
            x = x * p["factor"]
        elif op == "noise":
            x = x + rng.normal(0.0, p["sigma"], x.shape).astype(np.float32)
        elif op == "blur":
            x = ndimage.gaussian_filter(x, p["sigma"])
        elif op == "bias":
            x = x * _bias_field(x.shape, p["amplitude"], rng)
        elif op == "resolution":
            small = ndimage.zoom(x, 1.0 / p["factor"], order=1)
            x = ndimage.zoom(small, [s / t for s, t in zip(x.shape, small.shape)], order=1)
            x = x[tuple(slice(0, s) for s in a.shape)]
        else:
            raise InputError(f"unknown shift operation '{op}'")
    out = (x * (hi - lo) + lo).astype(np.float32)
    return volume.with_array(out, name=f"{volume.name} [{c.name}]")


def describe() -> list[dict]:
    return [{"centre": c.name, "recipe": c.description, "ops": [[o, p] for o, p in c.ops], "seed": c.seed}
            for c in CENTRES.values()]
