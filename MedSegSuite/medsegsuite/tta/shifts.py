"""Physical acquisition shifts: what another scanner, protocol or hospital could do to the same patient.

Each shift is a documented change with a range taken from a cited source (`SOURCES`), applied in the
image's physical units (CT: HU; MR: the image's own scale) on a real image. They are SIMULATIONS on real
images, not data from other hospitals, and every table that uses them says so.

CT (HU, spacing-aware; LiTS-117 is a portal-venous CT, liver median ≈ 113 HU):

* ``dose``: lower tube current-time product; quantum noise σ ∝ 1/√dose [kalender], so a dose fraction
  f adds noise of σ₀·√(1/f − 1) (σ₀: the image's own noise, measured), spatially correlated like CT
  noise. Range: quarter dose, as the Low Dose CT Grand Challenge [mccollough].
* ``kernel``: reconstruction kernel. Smooth (soft-tissue, B30-like): in-plane Gaussian blur, noise
  lowered; sharp (D45/bone-like): edge enhancement and finer, stronger noise [kalender, mccollough].
* ``thickness``: reconstructed slice thickness 1–5 mm [aapm] (thicker: averaging along the slice axis;
  thinner than the image's own: noise × √(own/new), since resolution cannot be added).
* ``inplane``: a coarser reconstruction pixel (larger field of view on the same matrix).
* ``phase``: contrast phase. The liver is moved into its published range for the phase (unenhanced
  45–70 HU, late arterial 60–90, portal venous 100–140, delayed/equilibrium 80–110 [bae, kodama]) by
  scaling its enhancement, and the other enhancing tissue (> 40 HU, below bone) follows with the
  phase's factor. Needs the liver mask (a simulation placing the organ's enhancement; the model never
  sees it).
* ``offset``: CT-number calibration offset within ±10 HU (ACR accreditation: water 0 ± 7 HU [acr]).

MR (T1; Colin27 is a 1.5 T spoiled gradient echo):

* ``bias``: smooth multiplicative RF inhomogeneity of 20 % and 40 % (BrainWeb's levels [brainweb]).
* ``contrast``: T1 contrast of another sequence: the image's CSF / grey / white matter levels are
  remapped (piecewise linear) to the ratios the signal equations give for the target sequence with
  published tissue T1 and PD [brainweb, wansapura].
* ``thickness``: 3 and 5 mm slices (BrainWeb's 1–9 mm) by averaging along the slice axis.
* ``noise``: Rician noise at 3–9 % of the brightest tissue (BrainWeb's levels).
* ``scale``: arbitrary scanner units (× factor); MR intensities have no absolute scale.

Random parts use the shift's fixed seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..volume import Volume

SOURCES = {
    "kalender": "W. A. Kalender, Computed Tomography: Fundamentals, System Technology, Image Quality, "
                "Applications, 3rd ed., Publicis, 2011 (noise ∝ 1/√mAs; kernels trade noise for sharpness)",
    "mccollough": "C. H. McCollough et al., Low-dose CT for the detection and classification of metastatic liver "
                  "lesions: results of the 2016 Low Dose CT Grand Challenge, Med. Phys. 44(10):e339-e352, 2017 "
                  "(quarter-dose simulation; B30 smooth and D45 sharper kernels)",
    "aapm": "AAPM CT protocols, routine adult abdomen/pelvis (https://www.aapm.org/pubs/CTProtocols/): axial "
            "reconstructions of about 1-5 mm",
    "bae": "K. T. Bae, Intravenous contrast medium administration and scan timing at CT, Radiology "
           "256(1):32-61, 2010 (hepatic enhancement by phase; portal venous ≥ 50 HU above unenhanced)",
    "kodama": "Y. Kodama et al., Comparison of CT methods for determining the fat content of the liver, "
              "AJR 188:1307-1312, 2007 (unenhanced attenuation of normal liver)",
    "acr": "American College of Radiology, CT Quality Control Manual, 2017: water CT number 0 ± 7 HU",
    "brainweb": "R. K.-S. Kwan, A. C. Evans, G. B. Pike, MRI simulation-based evaluation of image-processing and "
                "classification methods, IEEE TMI 18(11):1085-1097, 1999 (BrainWeb: RF non-uniformity 0/20/40 %, "
                "noise 0-9 %, slices 1-9 mm; 1.5 T tissue T1 CSF 2569, GM 833, WM 500 ms; PD 1.0, 0.86, 0.77)",
    "wansapura": "J. P. Wansapura et al., NMR relaxation times in the human brain at 3.0 tesla, JMRI "
                 "9(4):531-538, 1999 (T1 WM 832, GM 1331 ms); CSF T1 ≈ 4000 ms at 3 T",
}

# Liver median HU by contrast phase (see the module docstring; the test checks every CT shift against it)
LIVER_PHASE_HU = {"unenhanced": (45.0, 70.0), "arterial": (60.0, 90.0), "portal": (100.0, 140.0),
                  "delayed": (80.0, 110.0)}
PHASE_TARGET_HU = {"unenhanced": 57.0, "arterial": 75.0, "portal": None, "delayed": 95.0}
# other enhancing tissue's enhancement (HU above 40) relative to the portal venous phase
PHASE_OTHER_FACTOR = {"unenhanced": 0.1, "arterial": 1.3, "portal": 1.0, "delayed": 0.7}
SOFT_TISSUE_BASE_HU, BONE_HU = 40.0, 400.0

# MR sequences: tissue T1 (ms) and PD for the signal equations
MR_TISSUE_15T = {"csf": (2569.0, 1.0), "gm": (833.0, 0.86), "wm": (500.0, 0.77)}
MR_TISSUE_3T = {"csf": (4000.0, 1.0), "gm": (1331.0, 0.86), "wm": (832.0, 0.77)}


@dataclass(frozen=True)
class Shift:
    name: str
    modality: str            # "ct" or "mr"
    description: str
    ops: tuple = field(default_factory=tuple)  # ((op, {params}), ...), applied in order
    sources: tuple = ()
    phase: str = "portal"    # CT: the contrast phase the shifted image shows
    seed: int = 0


CT_SHIFTS: dict[str, Shift] = {s.name: s for s in (
    Shift("source", "ct", "unshifted (portal venous, the source model's own appearance)"),
    Shift("dose-25%", "ct", "quarter dose: correlated noise added, σ₀·√3", (("dose", {"fraction": 0.25}),),
          ("kalender", "mccollough"), seed=11),
    Shift("kernel-sharp", "ct", "sharp kernel: edge enhancement ×0.6, noise ×1.6, finer texture",
          (("kernel", {"kind": "sharp"}),), ("kalender", "mccollough"), seed=12),
    Shift("kernel-smooth", "ct", "smooth kernel: in-plane blur σ 1 mm (lower, coarser noise)",
          (("kernel", {"kind": "smooth"}),), ("kalender", "mccollough"), seed=13),
    Shift("slice-5mm", "ct", "5 mm slices (from 2 mm)", (("thickness", {"mm": 5.0}),), ("aapm",), seed=14),
    Shift("slice-1mm", "ct", "1 mm slices: noise ×√2", (("thickness", {"mm": 1.0}),), ("aapm", "kalender"), seed=15),
    Shift("pixel-3mm", "ct", "in-plane pixel 3 mm (from 2 mm), resampled back", (("inplane", {"factor": 1.5}),),
          ("aapm",), seed=16),
    Shift("unenhanced", "ct", "no contrast: liver to 57 HU, other enhancement ×0.1",
          (("phase", {"phase": "unenhanced"}),), ("bae", "kodama"), "unenhanced", 17),
    Shift("arterial", "ct", "late arterial phase: liver to 75 HU, other enhancement ×1.3",
          (("phase", {"phase": "arterial"}),), ("bae",), "arterial", 18),
    Shift("delayed", "ct", "delayed (equilibrium) phase: liver to 95 HU, other enhancement ×0.7",
          (("phase", {"phase": "delayed"}),), ("bae",), "delayed", 19),
    Shift("offset+10HU", "ct", "calibration offset +10 HU", (("offset", {"hu": 10.0}),), ("acr",), seed=20),
    Shift("offset-10HU", "ct", "calibration offset −10 HU", (("offset", {"hu": -10.0}),), ("acr",), seed=21),
    Shift("hospital-B", "ct", "unenhanced, 5 mm, half dose, +5 HU",
          (("phase", {"phase": "unenhanced"}), ("thickness", {"mm": 5.0}), ("dose", {"fraction": 0.5}),
           ("offset", {"hu": 5.0})), ("bae", "aapm", "kalender", "acr"), "unenhanced", 22),
    Shift("hospital-C", "ct", "late arterial, sharp kernel, 1 mm, −8 HU",
          (("phase", {"phase": "arterial"}), ("kernel", {"kind": "sharp"}), ("thickness", {"mm": 1.0}),
           ("offset", {"hu": -8.0})), ("bae", "kalender", "aapm", "acr"), "arterial", 23),
)}

MR_SHIFTS: dict[str, Shift] = {s.name: s for s in (
    Shift("source", "mr", "unshifted (Colin27, 1.5 T spoiled gradient echo)"),
    Shift("bias-20%", "mr", "RF non-uniformity 20 %", (("bias", {"amplitude": 0.2}),), ("brainweb",), seed=31),
    Shift("bias-40%", "mr", "RF non-uniformity 40 %", (("bias", {"amplitude": 0.4}),), ("brainweb",), seed=32),
    Shift("mprage-3T", "mr", "T1 contrast of a 3 T MPRAGE (TR 2300, TI 900 ms)",
          (("contrast", {"sequence": "mprage3t"}),), ("brainweb", "wansapura"), seed=33),
    Shift("se-1.5T", "mr", "T1 contrast of a 1.5 T spin echo (TR 500 ms)",
          (("contrast", {"sequence": "se15t"}),), ("brainweb",), seed=34),
    Shift("slice-3mm", "mr", "3 mm slices (from 1 mm)", (("thickness", {"mm": 3.0}),), ("brainweb",), seed=35),
    Shift("slice-5mm", "mr", "5 mm slices (from 1 mm)", (("thickness", {"mm": 5.0}),), ("brainweb",), seed=36),
    Shift("noise-3%", "mr", "Rician noise 3 %", (("rician", {"percent": 3.0}),), ("brainweb",), seed=37),
    Shift("noise-7%", "mr", "Rician noise 7 %", (("rician", {"percent": 7.0}),), ("brainweb",), seed=38),
    Shift("scale-x0.05", "mr", "scanner units × 0.05", (("scale", {"factor": 0.05}),), (), seed=39),
    Shift("scanner-B", "mr", "3 T MPRAGE, bias 20 %, noise 3 %",
          (("contrast", {"sequence": "mprage3t"}), ("bias", {"amplitude": 0.2}), ("rician", {"percent": 3.0})),
          ("brainweb", "wansapura"), seed=40),
    Shift("scanner-C", "mr", "1.5 T spin echo, 5 mm, bias 40 %, noise 5 %",
          (("contrast", {"sequence": "se15t"}), ("thickness", {"mm": 5.0}), ("bias", {"amplitude": 0.4}),
           ("rician", {"percent": 5.0})), ("brainweb",), seed=41),
)}


def shifts_for(modality: str) -> dict[str, Shift]:
    return CT_SHIFTS if modality == "ct" else MR_SHIFTS


# ---------------------------------------------------------------- helpers

def _slice_axis(volume: Volume) -> int:
    from ..volume import SliceEngine

    return SliceEngine.for_volume(volume, "axial").input_axis


def _correlated_noise(shape, sigma: float, grain_vox: float, rng, axes) -> np.ndarray:
    """Gaussian noise of standard deviation ``sigma`` with an in-plane correlation length ``grain_vox``."""
    from scipy import ndimage

    n = rng.normal(size=shape).astype(np.float32)
    if grain_vox > 0:
        s = [0.0] * len(shape)
        for a in axes:
            s[a] = grain_vox
        n = ndimage.gaussian_filter(n, s)
    return n * (sigma / max(float(n.std()), 1e-6))


def ct_noise_sigma(a: np.ndarray) -> float:
    """The image's own noise (HU): robust spread of the residual after a 3-voxel median, in soft tissue."""
    from scipy import ndimage

    if min(a.shape) > 24:  # a central block is enough for a spread and 10× cheaper
        c = [n // 2 for n in a.shape]
        a = a[tuple(slice(max(k - 24, 0), k + 24) for k in c)]
    res = a - ndimage.median_filter(a, 3)
    sel = res[(a > 0) & (a < 150)]
    if sel.size < 100:
        return 10.0
    return float(1.4826 * np.median(np.abs(sel - np.median(sel))) * 1.2)  # ×1.2: the median takes some noise


def _bias_field(shape, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """exp of a random 2nd-order polynomial, scaled so the field spans 1 ± amplitude/2 (peak to peak amplitude)."""
    grids = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij")
    terms = list(grids) + [g * h for i, g in enumerate(grids) for h in grids[i:]]
    coef = rng.normal(size=len(terms)).astype(np.float32)
    f = sum(c * t for c, t in zip(coef, terms))
    f = (f - f.min()) / max(float(f.max() - f.min()), 1e-6) - 0.5  # -0.5 .. 0.5
    return np.exp(f * np.log((1 + amplitude / 2) / (1 - amplitude / 2))).astype(np.float32)


def _mr_signal(sequence: str) -> dict:
    """Relative CSF / GM / WM signal of a T1-weighted sequence from the signal equations."""
    if sequence == "mprage3t":
        tr, ti = 2300.0, 900.0
        return {t: pd * abs(1 - 2 * np.exp(-ti / t1) + np.exp(-tr / t1)) for t, (t1, pd) in MR_TISSUE_3T.items()}
    if sequence in ("se15t", "spgr15t"):
        if sequence == "se15t":
            tr = 500.0
            return {t: pd * (1 - np.exp(-tr / t1)) for t, (t1, pd) in MR_TISSUE_15T.items()}
        tr, alpha = 18.0, np.deg2rad(30.0)
        out = {}
        for t, (t1, pd) in MR_TISSUE_15T.items():
            e1 = np.exp(-tr / t1)
            out[t] = pd * np.sin(alpha) * (1 - e1) / (1 - np.cos(alpha) * e1)
        return out
    raise InputError(f"unknown MR sequence '{sequence}'")


def _tissue_levels(a: np.ndarray, brain: np.ndarray | None) -> dict:
    """CSF / GM / WM intensity levels of a T1 image: quantiles of the brain's voxels (WM brightest)."""
    v = a[brain] if brain is not None and brain.any() else a[a > np.percentile(a, 50)]
    q = np.percentile(v, [5, 40, 85])
    return {"csf": float(q[0]), "gm": float(q[1]), "wm": float(q[2])}


# ---------------------------------------------------------------- apply

def apply_shift(volume: Volume, shift: str | Shift, mask: np.ndarray | None = None,
                modality: str | None = None) -> Volume:
    """The volume as the shift's acquisition would show it (same grid; a SIMULATION on a real image).
    ``mask``: the structure (CT: liver, for the contrast phase; MR: brain, for tissue levels)."""
    from scipy import ndimage

    if isinstance(shift, str):
        table = shifts_for(modality) if modality else {**MR_SHIFTS, **CT_SHIFTS}
        s = table.get(shift)
        if s is None:
            raise InputError(f"unknown shift '{shift}'; known: {', '.join(table)}")
    else:
        s = shift
    a = np.asarray(volume.array, dtype=np.float32).copy()
    if not s.ops:
        return volume.with_array(a, name=f"{volume.name} [{s.name}]")
    rng = np.random.default_rng(s.seed)
    ax = _slice_axis(volume)
    inplane = [d for d in range(3) if d != ax]
    sp = [float(v) for v in volume.spacing]
    sigma0 = ct_noise_sigma(a) if s.modality == "ct" else None
    for op, p in s.ops:
        if op == "dose":
            a += _correlated_noise(a.shape, sigma0 * np.sqrt(1 / p["fraction"] - 1), 0.6, rng, inplane)
        elif op == "kernel":
            if p["kind"] == "smooth":
                blur = [0.0] * 3
                for d in inplane:
                    blur[d] = 1.0 / sp[d]
                a = ndimage.gaussian_filter(a, blur)  # lowers the noise and its frequency with the edges
            else:
                blur = [0.0] * 3
                for d in inplane:
                    blur[d] = 1.0 / sp[d]
                a = a + 0.6 * (a - ndimage.gaussian_filter(a, blur))
                a += _correlated_noise(a.shape, sigma0 * np.sqrt(1.6 ** 2 - 1), 0.0, rng, inplane)
        elif op == "thickness":
            own = sp[ax]
            if p["mm"] > own:
                a = ndimage.uniform_filter1d(a, size=max(int(round(p["mm"] / own)), 1), axis=ax, mode="nearest")
                if p["mm"] / own % 1:
                    w = p["mm"] / own
                    a = ndimage.gaussian_filter1d(a, sigma=max(w / np.sqrt(12) - 0.5, 0.0), axis=ax)
            elif p["mm"] < own:
                extra = sigma0 * np.sqrt(own / p["mm"] - 1) if s.modality == "ct" else 0.0
                a += _correlated_noise(a.shape, extra, 0.6, rng, inplane)
        elif op == "inplane":
            zoom = [1.0] * 3
            for d in inplane:
                zoom[d] = 1.0 / p["factor"]
            small = ndimage.zoom(a, zoom, order=1)
            a = ndimage.zoom(small, [x / y for x, y in zip(a.shape, small.shape)], order=1)[
                tuple(slice(0, n) for n in volume.shape)]
        elif op == "phase":
            if mask is None:
                raise InputError("the contrast-phase shift needs the liver mask")
            m = np.asarray(mask, bool)
            target = PHASE_TARGET_HU[p["phase"]]
            k = PHASE_OTHER_FACTOR[p["phase"]]
            other = (~m) & (a > SOFT_TISSUE_BASE_HU) & (a < BONE_HU)
            a[other] = SOFT_TISSUE_BASE_HU + (a[other] - SOFT_TISSUE_BASE_HU) * k
            if target is not None:
                med = float(np.median(a[m]))
                # liver enhancement (above the soft-tissue base) scaled so its median reaches the target
                f = (target - SOFT_TISSUE_BASE_HU) / max(med - SOFT_TISSUE_BASE_HU, 1.0)
                soft = ndimage.gaussian_filter(m.astype(np.float32), 1.0)  # no hard edge at the label
                a = a + soft * (SOFT_TISSUE_BASE_HU + (a - SOFT_TISSUE_BASE_HU) * f - a)
        elif op == "offset":
            a += p["hu"]
        elif op == "bias":
            a *= _bias_field(a.shape, p["amplitude"], rng)
        elif op == "contrast":
            lv = _tissue_levels(a, None if mask is None else np.asarray(mask, bool))
            dst = _mr_signal(p["sequence"])  # the image's own levels are measured, the target's computed
            xs = [0.0, lv["csf"], lv["gm"], lv["wm"]]
            ys = [0.0] + [lv["wm"] * dst[t] / dst["wm"] for t in ("csf", "gm", "wm")]
            order = np.argsort(xs)
            xs, ys = np.asarray(xs)[order], np.asarray(ys)[order]
            top = float(a.max())
            slope = (ys[-1] - ys[-2]) / max(xs[-1] - xs[-2], 1e-6)
            a = np.interp(a, np.r_[xs, top], np.r_[ys, ys[-1] + slope * (top - xs[-1])]).astype(np.float32)
        elif op == "rician":
            ref = float(np.percentile(a, 99.5))
            sd = p["percent"] / 100.0 * ref
            a = np.sqrt((a + rng.normal(0, sd, a.shape)) ** 2 + rng.normal(0, sd, a.shape) ** 2).astype(np.float32)
        elif op == "scale":
            a *= p["factor"]
        else:
            raise InputError(f"unknown shift operation '{op}'")
    return volume.with_array(a.astype(np.float32), name=f"{volume.name} [{s.name}]")


def describe(modality: str) -> list[dict]:
    return [{"shift": s.name, "description": s.description, "ops": [[o, p] for o, p in s.ops],
             "sources": list(s.sources), "phase": s.phase if modality == "ct" else None, "seed": s.seed}
            for s in shifts_for(modality).values()]
