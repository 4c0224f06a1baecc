"""`medsegsuite evaluate` and `medsegsuite sampledata export` end to end on small folders."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from medsegsuite.cli import main
from medsegsuite.io import Segmentation, write_image, write_segmentation
from medsegsuite.volume import Geometry, Volume

GEOM = Geometry((32, 32, 20), spacing=(1.0, 1.0, 2.0), origin=(-10.0, 5.0, 3.0))
LIVER, SPLEEN = 5, 8  # Touchstone / AbdomenAtlas label values


def _ball(centre, r):
    g = np.meshgrid(*[np.arange(n) * s for n, s in zip(GEOM.shape, GEOM.spacing)], indexing="ij")
    return sum((a - c) ** 2 for a, c in zip(g, centre)) <= r * r


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """6 cases at 2 centres; method A is near-perfect (.seg.nrrd, named), method B shifted (labelmaps)."""
    root = tmp_path_factory.mktemp("eval")
    rng = np.random.default_rng(0)
    for d in ("ref", "A", "B"):
        (root / d).mkdir()
    rows = ["case,centre"]
    for i in range(6):
        case = f"case{i:02d}"
        liver = _ball(rng.uniform(12, 18, 3) * (1, 1, 1.5), rng.uniform(7, 9))
        spleen = _ball((8, 24, 20), 4) & ~liver
        lab = np.zeros(GEOM.shape, np.uint8)
        lab[liver] = LIVER
        lab[spleen] = SPLEEN
        write_image(Volume.from_geometry(lab, GEOM), root / "ref" / f"{case}.nii.gz")
        a_liver = liver.copy()
        a_liver[tuple(rng.integers(0, 20, 3))] ^= True  # one voxel flipped
        write_segmentation(Segmentation(GEOM, {"Liver": a_liver, "spleen": spleen}), root / "A" / f"{case}.seg.nrrd")
        lab_b = np.zeros_like(lab)
        lab_b[np.roll(liver, 2, axis=0)] = LIVER
        lab_b[np.roll(spleen, 1, axis=1) & (lab_b == 0)] = SPLEEN
        write_image(Volume.from_geometry(lab_b, GEOM), root / "B" / f"{case}.nii.gz")
        rows.append(f"{case},{'north' if i < 3 else 'south'}")
    (root / "centres.csv").write_text("\n".join(rows) + "\n")
    return root


def test_two_methods_by_centre(folders, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["evaluate", "--pred", f"good={folders / 'A'}", "--pred", str(folders / "B"), "--ref",
               str(folders / "ref"), "--out", str(out), "--preset", "touchstone", "--group-by", "centre",
               "--centres", str(folders / "centres.csv")])
    assert rc == 0, capsys.readouterr().err
    rows = _read(out / "metrics.csv")
    assert list(rows[0]) == ["method", "centre", "case", "structure", "dice", "nsd", "hd95", "asd"]
    assert len(rows) == 2 * 6 * 2
    assert {r["method"] for r in rows} == {"good", "B"} and {r["centre"] for r in rows} == {"north", "south"}
    good = [r for r in rows if r["method"] == "good" and r["structure"] == "spleen"]
    assert all(float(r["dice"]) == 1.0 and float(r["hd95"]) == 0.0 for r in good)
    b_liver = [r for r in rows if r["method"] == "B" and r["structure"] == "liver"]
    assert all(float(r["hd95"]) == pytest.approx(2.0) for r in b_liver)  # shifted 2 voxels of 1 mm
    assert all(float(r["nsd"]) < 1.0 for r in b_liver)

    summary = _read(out / "summary.csv")
    assert {r["centre"] for r in summary} == {"all", "north", "south"}
    liver_all = next(r for r in summary if r["method"] == "good" and r["centre"] == "all"
                     and r["structure"] == "liver" and r["metric"] == "dice")
    assert int(liver_all["n"]) == 6 and float(liver_all["mean"]) > 0.99

    comps = _read(out / "comparisons.csv")
    dice_liver = next(c for c in comps if c["metric"] == "dice" and c["structure"] == "liver" and c["centre"] == "all")
    assert dice_liver["better"] == "good" and int(dice_liver["n_pairs"]) == 6
    assert float(dice_liver["p_holm"]) < 0.05  # 6 pairs, all one way: exact two-sided p = 2/64

    for name in ("box_dice.png", "box_nsd.png", "box_hd95.png", "box_asd.png", "box_dice_by_centre.png"):
        data = (out / "plots" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    md = (out / "report.md").read_text()
    for text in ("## DSC", "## NSD", "## HD95", "## Paired comparisons", "DSC per centre", "plots/box_dice.png",
                 "liver 1.5"):
        assert text in md


def test_single_method_without_preset_uses_names_and_tolerance(folders, tmp_path):
    out = tmp_path / "one"
    assert main(["evaluate", "--pred", str(folders / "B"), "--ref", str(folders / "ref"), "--out", str(out),
                 "--tolerance", "2", "--no-plots"]) == 0
    rows = _read(out / "metrics.csv")
    assert list(rows[0]) == ["case", "structure", "dice", "nsd", "hd95", "asd"]
    assert {r["structure"] for r in rows} == {f"label_{LIVER}", f"label_{SPLEEN}"}
    liver = [r for r in rows if r["structure"] == f"label_{LIVER}"]
    assert all(float(r["nsd"]) == pytest.approx(1.0) for r in liver)  # every distance <= 2 mm
    assert not (out / "comparisons.csv").exists() and not (out / "plots").exists()


def test_mismatched_geometry_is_a_clear_error(folders, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    g = Geometry(GEOM.shape, spacing=(1.0, 1.0, 2.5), origin=GEOM.origin)
    write_segmentation(Segmentation(g, {"liver": np.ones(g.shape, bool)}), bad / "case00.seg.nrrd")
    out = tmp_path / "never"
    rc = main(["evaluate", "--pred", str(bad), "--ref", str(folders / "ref"), "--out", str(out),
               "--preset", "touchstone"])
    err = capsys.readouterr().err
    assert rc == 2 and "case00" in err and "spacing" in err
    assert not out.exists()


def test_input_errors(folders, tmp_path, capsys):
    base = ["--ref", str(folders / "ref"), "--out", str(tmp_path / "x")]
    assert main(["evaluate", "--pred", str(folders / "A"), *base, "--group-by", "centre"]) == 2
    assert "--centres" in capsys.readouterr().err
    stray = tmp_path / "stray"
    stray.mkdir()
    write_segmentation(Segmentation(GEOM, {"liver": np.ones(GEOM.shape, bool)}), stray / "nobody.seg.nrrd")
    assert main(["evaluate", "--pred", str(stray), *base]) == 2
    assert "no reference" in capsys.readouterr().err
    assert main(["evaluate", "--pred", str(folders / "A"), *base, "--preset", "nope"]) == 2
    assert "unknown preset" in capsys.readouterr().err


def test_case_folders_one_file_per_structure(tmp_path):
    """SegRap's layout: a folder per case holding one binary mask file per structure."""
    for side in ("ref", "pred"):
        for case in ("p1", "p2"):
            d = tmp_path / side / case
            d.mkdir(parents=True)
            m = _ball((14, 14, 18), 6)
            if side == "pred":
                m = np.roll(m, 1, axis=0)
            write_image(Volume.from_geometry(m.astype(np.uint8), GEOM), d / "Larynx.nii.gz")
            write_image(Volume.from_geometry(m.astype(np.uint8), GEOM), d / "OralCavity.nii.gz")
    out = tmp_path / "out"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--out", str(out),
                 "--preset", "segrap", "--no-plots"]) == 0
    rows = _read(out / "metrics.csv")
    assert {(r["case"], r["structure"]) for r in rows} == {(c, s) for c in ("p1", "p2") for s in ("Larynx", "OralCavity")}
    md = (out / "report.md").read_text()
    assert "Larynx 2" in md and "OralCavity 3" in md  # SegRap tolerances


def test_demo_output_against_lits117(tmp_path, capsys):
    """The demo's oracle_box.seg.nrrd against --ref lits117, restricted to the demo's slices."""
    from medsegsuite.metrics import dice
    from medsegsuite.sampledata import lits117_segmentation

    ref = lits117_segmentation()
    idx = list(range(4, 128, 8))
    pred = {}
    for s in ("liver", "tumour"):
        m = np.zeros_like(ref.masks[s])
        m[:, :, idx] = np.roll(ref.masks[s], 1, axis=0)[:, :, idx]
        pred[s] = m
    demo = tmp_path / "demo_out"
    write_segmentation(Segmentation(ref.geometry, pred), demo / "oracle_box.seg.nrrd")
    (demo / "report.json").write_text(json.dumps({"settings": {"axis": 2, "slices": "every:8",
                                                               "evaluated_slices": idx}}))
    out = tmp_path / "ev"
    assert main(["evaluate", "--pred", str(demo / "oracle_box.seg.nrrd"), "--ref", "lits117", "--out", str(out),
                 "--slices-from", str(demo / "report.json"), "--no-plots"]) == 0
    rows = {r["structure"]: r for r in _read(out / "metrics.csv")}
    for s in ("liver", "tumour"):
        assert float(rows[s]["dice"]) == pytest.approx(dice(pred[s], ref.masks[s], slices=(2, idx)), abs=1e-6)
        assert float(rows[s]["hd95"]) == pytest.approx(2.0)  # one 2 mm voxel, in-plane
    assert rows["liver"]["case"] == "LiTS-117"
    # without the restriction the command warns that the unsegmented slices count as misses
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(demo / "oracle_box.seg.nrrd"), "--ref", "lits117", "--out",
                 str(tmp_path / "ev3d"), "--no-plots"]) == 0
    assert "--slices-from" in capsys.readouterr().out
    assert main(["evaluate", "--pred", str(demo / "oracle_box.seg.nrrd"), "--ref", "lits117", "--out",
                 str(tmp_path / "ev_ab"), "--slices", "4:5", "--no-plots"]) == 0
    assert float(_read(tmp_path / "ev_ab" / "metrics.csv")[0]["dice"]) == pytest.approx(
        dice(pred["liver"], ref.masks["liver"], slices=(2, [4])), abs=1e-6)
    # the whole demo folder against the one reference: each result file is a method
    write_segmentation(Segmentation(ref.geometry, {"liver": ref.masks["liver"]}), demo / "cosam.seg.nrrd")
    assert main(["evaluate", "--pred", str(demo), "--ref", "lits117", "--out", str(tmp_path / "both"),
                 "--slices-from", str(demo / "report.json"), "--no-plots"]) == 0
    rows = _read(tmp_path / "both" / "metrics.csv")
    assert {(r["method"], r["structure"]) for r in rows} == {
        ("oracle_box", "liver"), ("oracle_box", "tumour"), ("cosam", "liver"), ("cosam", "tumour")}
    cosam = {r["structure"]: r for r in rows if r["method"] == "cosam"}
    assert float(cosam["liver"]["dice"]) == 1.0 and float(cosam["tumour"]["dice"]) == 0.0


def test_sampledata_export_round_trip(tmp_path):
    assert main(["sampledata", "export", "--out", str(tmp_path), "--no-image"]) == 0
    ref = tmp_path / "LiTS-117.seg.nrrd"
    assert ref.exists() and not (tmp_path / "LiTS-117_ct.nrrd").exists()
    out = tmp_path / "self"
    assert main(["evaluate", "--pred", str(ref), "--ref", str(ref), "--out", str(out), "--preset", "lits",
                 "--no-plots"]) == 0
    rows = _read(out / "metrics.csv")
    assert {r["structure"] for r in rows} == {"liver", "tumour"}
    assert all(float(r["dice"]) == 1.0 and float(r["nsd"]) == 1.0 for r in rows)


def test_misspelt_segment_is_reported_and_scores_as_a_miss(folders, tmp_path, capsys):
    typo = tmp_path / "typo"
    typo.mkdir()
    lab = np.zeros(GEOM.shape, bool)
    write_segmentation(Segmentation(GEOM, {"Livr": lab, "spleen": lab}), typo / "case00.seg.nrrd")
    ref1 = tmp_path / "ref1"
    ref1.mkdir()
    (ref1 / "case00.nii.gz").write_bytes((folders / "ref" / "case00.nii.gz").read_bytes())
    assert main(["evaluate", "--pred", str(typo), "--ref", str(ref1), "--out", str(tmp_path / "o"),
                 "--preset", "touchstone", "--no-plots"]) == 0
    assert "['Livr'] match no structure" in capsys.readouterr().out
    liver = next(r for r in _read(tmp_path / "o" / "metrics.csv") if r["structure"] == "liver")
    assert float(liver["dice"]) == 0.0 and liver["hd95"] == "nan"


def test_report_json_with_a_plane_and_slices_of_a_flipped_volume(tmp_path):
    """--slices and --slices-from number slices in the plane (as the methods do), whatever the IJK order:
    on a volume stored head-first (k axis flipped) axial slice 3 is array index n - 1 - 3."""
    from medsegsuite.metrics import dice

    flip = Geometry(GEOM.shape, spacing=GEOM.spacing, origin=GEOM.origin,
                    direction=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, -1.0)))
    ref = np.zeros(GEOM.shape, bool)
    ref[8:24, 10:20, :] = True  # a bar through every axial slice
    pred = np.zeros_like(ref)
    n = GEOM.shape[2]
    pred[:, :, n - 1 - 3] = ref[:, :, n - 1 - 3]  # only canonical axial slice 3 is predicted (perfectly)
    write_segmentation(Segmentation(flip, {"liver": ref}), tmp_path / "ref.seg.nrrd")
    write_segmentation(Segmentation(flip, {"liver": pred}), tmp_path / "pred.seg.nrrd")
    (tmp_path / "report.json").write_text(json.dumps({"settings": {"plane": "axial", "evaluated_slices": [3]}}))
    for how in (["--slices", "3", "--plane", "axial"], ["--slices-from", str(tmp_path / "report.json")]):
        out = tmp_path / how[0].strip("-")
        assert main(["evaluate", "--pred", str(tmp_path / "pred.seg.nrrd"), "--ref", str(tmp_path / "ref.seg.nrrd"),
                     "--out", str(out), "--no-plots"] + how) == 0
        row = _read(out / "metrics.csv")[0]
        assert float(row["dice"]) == 1.0 and float(row["hd95"]) == 0.0
        assert "of the axial plane: [3]" in (out / "report.md").read_text()
    assert dice(pred, ref, slices=(2, [3])) == 0.0  # array index 3 is a different, unpredicted slice


def test_report_md_starts_with_recorded_provenance(folders, tmp_path):
    import sys

    out = tmp_path / "o"
    assert main(["evaluate", "--pred", str(folders / "A"), "--ref", str(folders / "ref"), "--out", str(out),
                 "--preset", "touchstone", "--no-plots"]) == 0
    lines = (out / "report.md").read_text().splitlines()
    assert lines[0] == "# Segmentation evaluation" and lines[2].startswith("**Provenance**")
    head = "\n".join(lines[:12])
    assert "- command: `" in head and "- machine: " in head and f"Python {sys.version.split()[0]}" in head
