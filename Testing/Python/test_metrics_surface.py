"""Surface metrics: analytic cases, empty-mask rules, geometry errors, and agreement with monai.metrics.

Tolerances against MONAI, and why:
* Dice: same definition -> 1e-6.
* NSD vs ``compute_surface_dice(..., use_subvoxels=True)``: MONAI's sub-voxel mode is the same
  surfel-area method (DeepMind's table) -> 1e-4 (MONAI works in float32).
* HD95 / ASD vs ``compute_hausdorff_distance(percentile=95)`` / ``compute_average_surface_distance
  (symmetric=True)``: MONAI measures between boundary-voxel centres, counted per voxel; we measure
  between surfels on voxel corners, weighted by area. The two surfaces lie within half a voxel of each
  other, so the values differ by construction: we require |HD95 diff| <= the largest spacing and
  |ASD diff| <= half the largest spacing, and exact equality where the definitions coincide (a box
  shifted by whole voxels: every distance is k * spacing in both).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from medsegsuite.errors import InputError
from medsegsuite.metrics import (average_surface_distance, dice, hausdorff, structure_metrics, surface_dice,
                                 surface_distances)
from medsegsuite.metrics.surface import surface_area, surfel_area_table

ANISO = (0.8, 1.2, 2.5)


def sphere(shape, centre_mm, radius_mm, spacing):
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre_mm)) <= radius_mm ** 2


def box(shape, lo, hi):
    m = np.zeros(shape, bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return m


def blob(rng, shape=(48, 40, 32), q=0.85):
    x = np.zeros(shape)
    x[8:-8, 8:-8, 8:-8] = rng.random(tuple(n - 16 for n in shape))
    x = ndimage.gaussian_filter(x, 3)
    return x > np.quantile(x, q)


# ---- surfel areas ----------------------------------------------------------------------------------

def test_area_table_matches_published_surface_distance_table():
    """Our marching-cubes-derived table equals DeepMind's (as shipped in MONAI) for any spacing."""
    from monai.metrics.utils import ENCODING_KERNEL, create_table_neighbour_code_to_surface_area
    from medsegsuite.metrics.surface import _OFFSETS3

    kernel = np.asarray(ENCODING_KERNEL[3])
    perm = [sum(1 << bit for bit, off in enumerate(_OFFSETS3) if mc & int(kernel[off])) for mc in range(256)]
    for sp in [(1.0, 1.0, 1.0), ANISO]:
        ref = create_table_neighbour_code_to_surface_area(sp)[0].numpy()
        assert np.allclose(surfel_area_table(sp)[perm], ref, atol=1e-5)


def test_cube_surface_area_is_exact_marching_cubes_area():
    n, (sx, sy, sz) = 10, ANISO
    m = box((16, 16, 16), (3, 3, 3), (3 + n, 3 + n, 3 + n))
    faces = 2 * (n - 1) ** 2 * (sy * sz + sx * sz + sx * sy)
    edges = 4 * (n - 1) * (sx * math.hypot(sy, sz) + sy * math.hypot(sx, sz) + sz * math.hypot(sx, sy)) / 2
    corners = 8 * math.sqrt((sy * sz) ** 2 + (sx * sz) ** 2 + (sx * sy) ** 2) / 8
    assert surface_area(m, ANISO) == pytest.approx(faces + edges + corners, rel=1e-9)


def test_sphere_area_near_4_pi_r2():
    """Marching cubes over a binary (staircase) sphere over-estimates its area by ~8.5%, a known bias
    of the surfel method (it is the same for both masks, so distances are unaffected); the voxel-face
    (staircase) area would be ~50% too large, so this window still catches a broken table."""
    r = 20.0
    m = sphere((50, 50, 50), (25, 25, 25), r, (1, 1, 1))
    ratio = surface_area(m, (1, 1, 1)) / (4 * math.pi * r ** 2)
    assert 1.03 < ratio < 1.12


# ---- analytic cases --------------------------------------------------------------------------------

@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), ANISO])
@pytest.mark.parametrize("axis,k", [(0, 2), (2, 3)])
def test_shifted_cube(spacing, axis, k):
    """A cube of n voxels shifted by k voxels along one axis: HD = HD95 = k*s exactly; NSD below the
    smallest spacing is the share of surfels both surfaces have in common (derived by hand below);
    NSD at k*s is 1; ASD matches the continuum value within discretisation error."""
    n = 12
    shape = (24, 24, 24)
    lo = [5, 5, 5]
    hi = [5 + n] * 3
    lo2, hi2 = list(lo), list(hi)
    lo2[axis] += k
    hi2[axis] += k
    a, b = box(shape, lo, hi), box(shape, lo2, hi2)
    sd = surface_distances(b, a, spacing)
    s = spacing[axis]
    assert hausdorff(sd, 100) == pytest.approx(k * s)
    assert hausdorff(sd, 95) == pytest.approx(k * s)
    assert surface_dice(sd, k * s) == pytest.approx(1.0)

    # common surfels: the side "tube" over the n-k overlapping corner rows, plus the far rim
    sp = np.asarray(spacing)
    o = [i for i in range(3) if i != axis]
    face = {i: np.prod(np.delete(sp, i)) for i in range(3)}  # flat-face surfel normal to axis i
    edge = {i: sp[i] * math.hypot(*np.delete(sp, i)) / 2 for i in range(3)}  # edge along axis i
    vertex = math.sqrt(face[0] ** 2 + face[1] ** 2 + face[2] ** 2) / 8
    tube = 2 * (n - 1) * (face[o[0]] + face[o[1]]) + 4 * edge[axis]
    common = (n - k) * tube + 2 * (n - 1) * (edge[o[0]] + edge[o[1]]) + 4 * vertex
    total = 2 * (n - 1) ** 2 * sum(face.values()) + 4 * (n - 1) * sum(edge.values()) + 8 * vertex
    assert surface_dice(sd, 0.99 * min(spacing)) == pytest.approx(common / total, rel=1e-9)

    # ASD, continuum cube of side L shifted by d: far faces at d, side band uniform on [0, d],
    # near face inside the other cube at min(d, distance to its rim)
    L, d = n * s, k * s
    if all(v == s for v in spacing):
        cont = (L * L * d + 2 * L * d * d + (L - 2 * d) ** 2 * d + 2 * L * d * d - 8 * d ** 3 / 3) / (6 * L * L)
        assert average_surface_distance(sd) == pytest.approx(cont, rel=0.08)


def test_concentric_spheres():
    """Spheres of radius 8 and 14 mm on a 1 x 1 x 1.5 mm grid: HD ~ 6 mm, ASD ~ 6 mm; NSD is 0 below
    the gap and 1 above it (within the half-voxel discretisation of each surface)."""
    sp = (1.0, 1.0, 1.5)
    shape = (40, 40, 28)
    c = (20.0, 20.0, 21.0)
    inner, outer = sphere(shape, c, 8.0, sp), sphere(shape, c, 14.0, sp)
    sd = surface_distances(inner, outer, sp)
    tol = max(sp)
    assert abs(hausdorff(sd, 100) - 6.0) <= tol
    assert abs(hausdorff(sd, 95) - 6.0) <= tol
    assert abs(average_surface_distance(sd) - 6.0) <= 0.5 * tol
    assert surface_dice(sd, 6.0 - 2 * tol) == 0.0
    assert surface_dice(sd, 6.0 + 2 * tol) == 1.0


def test_identical_masks_are_perfect():
    m = sphere((30, 30, 30), (15, 15, 15), 9, ANISO)
    r = structure_metrics(m, m, ANISO, 1.0)
    assert r == {"dice": 1.0, "nsd": 1.0, "hd95": 0.0, "asd": 0.0}


def test_spacing_is_per_axis():
    """Shifting along the coarse axis costs its spacing, not another axis's."""
    a = box((20, 20, 20), (5, 5, 5), (12, 12, 12))
    for axis in range(3):
        b = np.roll(a, 1, axis=axis)
        assert structure_metrics(b, a, ANISO, 0.1)["hd95"] == pytest.approx(ANISO[axis])


# ---- empty masks and errors ------------------------------------------------------------------------

def test_empty_mask_rules():
    z = np.zeros((10, 10, 10), bool)
    m = box((10, 10, 10), (2, 2, 2), (6, 6, 6))
    assert structure_metrics(z, z, ANISO) == {"dice": 1.0, "nsd": 1.0, "hd95": 0.0, "asd": 0.0}
    for p, r in [(m, z), (z, m)]:
        out = structure_metrics(p, r, ANISO)
        assert out["dice"] == 0.0 and out["nsd"] == 0.0
        assert math.isnan(out["hd95"]) and math.isnan(out["asd"])


def test_mismatched_shapes_and_bad_spacing_raise():
    a = np.zeros((10, 10, 10), bool)
    with pytest.raises(InputError, match="shape"):
        structure_metrics(a, np.zeros((10, 10, 11), bool), (1, 1, 1))
    with pytest.raises(InputError, match="shape"):
        dice(a, np.zeros((9, 10, 10), bool))
    with pytest.raises(InputError, match="spacing"):
        surface_distances(a, a, (1, 0, 1))
    with pytest.raises(InputError, match="tolerance"):
        surface_dice(surface_distances(a, a, (1, 1, 1)), -1)


def test_mask_touching_the_border_is_closed():
    """A mask filling the volume edge still has a surface there (zero padding, as DeepMind does)."""
    m = np.zeros((10, 10, 10), bool)
    m[:5] = True
    assert surface_area(m, (1, 1, 1)) > 10 * 10 - 1


# ---- agreement with MONAI --------------------------------------------------------------------------

@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), ANISO])
def test_agrees_with_monai_on_random_blobs(spacing):
    torch = pytest.importorskip("torch")
    from monai.metrics import (DiceMetric, compute_average_surface_distance, compute_hausdorff_distance,
                               compute_surface_dice)

    rng = np.random.default_rng(1)
    for t in range(3):
        a = blob(rng)
        b = blob(rng) | np.roll(a, 2, axis=t)
        ours = structure_metrics(b, a, spacing, 1.5)
        A = torch.from_numpy(a)[None, None].float()
        B = torch.from_numpy(b)[None, None].float()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dm = DiceMetric(include_background=True, reduction="none")(B, A).item()
            nsd = compute_surface_dice(B, A, [1.5], include_background=True, spacing=spacing,
                                       use_subvoxels=True).item()
            hd95 = compute_hausdorff_distance(B, A, include_background=True, percentile=95, spacing=spacing).item()
            asd = compute_average_surface_distance(B, A, include_background=True, symmetric=True,
                                                   spacing=spacing).item()
        assert ours["dice"] == pytest.approx(dm, abs=1e-6)
        assert ours["nsd"] == pytest.approx(nsd, abs=1e-4)
        assert abs(ours["hd95"] - hd95) <= max(spacing) + 1e-6
        assert abs(ours["asd"] - asd) <= 0.5 * max(spacing)


def test_agrees_with_monai_exactly_on_whole_voxel_shift():
    torch = pytest.importorskip("torch")
    from monai.metrics import compute_hausdorff_distance

    a = box((24, 24, 24), (5, 5, 5), (15, 15, 15))
    for axis, k in [(0, 1), (1, 2), (2, 3)]:
        b = np.roll(a, k, axis=axis)
        A = torch.from_numpy(a)[None, None].float()
        B = torch.from_numpy(b)[None, None].float()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = compute_hausdorff_distance(B, A, include_background=True, spacing=ANISO).item()
        assert hausdorff(surface_distances(b, a, ANISO), 100) == pytest.approx(ref)
        assert ref == pytest.approx(k * ANISO[axis])


def test_128_cube_with_several_structures_is_fast():
    import time

    rng = np.random.default_rng(3)
    shape = (128, 128, 128)
    structures = [sphere(shape, rng.uniform(40, 88, 3), r, (1, 1, 2)) for r in (30, 15, 8, 5)]
    t0 = time.perf_counter()
    for s in structures:
        structure_metrics(np.roll(s, 2, axis=0), s, (1, 1, 2), 1.0)
    assert time.perf_counter() - t0 < 5.0


def test_contour_length_table_matches_published_2d_table():
    """The 2D (marching squares) table used for slice-restricted scoring equals MONAI's/DeepMind's."""
    from monai.metrics.utils import ENCODING_KERNEL, create_table_neighbour_code_to_contour_length
    from medsegsuite.metrics.surface import _OFFSETS2, contour_length_table

    kernel = np.asarray(ENCODING_KERNEL[2])
    perm = [sum(1 << bit for bit, off in enumerate(_OFFSETS2) if mc & int(kernel[off])) for mc in range(16)]
    for sp in [(1.0, 1.0), (0.7, 2.0)]:
        ref = create_table_neighbour_code_to_contour_length(sp)[0].numpy()
        assert np.allclose(contour_length_table(sp)[perm], ref, atol=1e-6)
