"""The main demo end to end on a reduced slice set (the full run is `medsegsuite demo --slices all`)."""
import json


from medsegsuite.cli import main
from medsegsuite.io import read_segmentation


def test_demo_oracle_box_reaches_liver_dice(tmp_path, lits):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--slices", "24,56,88,112", "--methods", "oracle_box",
               "--device", "cpu", "--threads", "2"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert list(report)[0] == "provenance" and report["provenance"]["command"]  # recorded, not typed
    m = report["methods"]["oracle_box"]
    assert m["dice"]["liver"] >= 0.85
    assert m["dice"]["tumour"] > 0.5
    assert m["seconds"] > 0 and report["settings"]["evaluated_slices"] == [24, 56, 88, 112]
    seg = read_segmentation(out / "oracle_box.seg.nrrd")
    ct, ref = lits
    assert seg.names == ["liver", "tumour"]
    assert seg.geometry.same_as(ct.geometry)
    # only the requested slices were segmented, and the whole organ (tumours included) is "liver"
    assert not seg.masks["liver"][:, :, 0].any() and seg.masks["liver"][:, :, 56].any()
    assert not (seg.masks["tumour"] & ~seg.masks["liver"]).sum() > 0.2 * seg.masks["tumour"].sum()
    assert (out / "overlay.png").stat().st_size > 10_000
