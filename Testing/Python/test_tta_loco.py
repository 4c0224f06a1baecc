"""The leave-one-case-out brain source recipe (tta/loco.py): the scored real MR never reaches its model's
training set, and the other real MRs enter it with deepbet *pseudo* masks, weighted as much as Colin27."""
import pytest
from medsegsuite.errors import InputError
from medsegsuite.sampledata.real import real_case
from medsegsuite.tta.loco import REAL_T1, _rows, training_cases


def test_loco_training_set_never_holds_the_test_case():
    test_case = "rad-brain1"
    cases = training_cases(test_case)
    names = [c.name for c in cases]
    assert names == ["colin27"] + [c for c in REAL_T1 if c != test_case]
    held = real_case(test_case).image.fingerprint()
    assert held not in {c.fingerprint for c in cases}
    atlas, real = cases[0], cases[1:]
    assert atlas.label == "atlas mask (ch2bet)" and all(i % 4 != 2 for i in atlas.slices)  # shipped hold-out
    for c in real:
        assert c.label.startswith("pseudo") and c.mask.shape == c.volume.array.shape
        assert 0.05 < c.mask.mean() < 0.6, (c.name, c.mask.mean())  # a brain, not an empty or full mask
    x, y, rows = _rows(cases, {"modality": "mr", "size": 128})
    assert x.shape[0] == y.shape[0] == sum(len(c.slices) for c in cases)
    n_real = rows.count(len(atlas.slices))  # how often the first real slice is drawn per epoch
    assert n_real * len(real[0].slices) == pytest.approx(len(atlas.slices), rel=0.25)
    with pytest.raises(InputError, match="not a real T1 case"):
        training_cases("colin27")


def test_loco_model_is_trained_once_without_its_test_case_and_cached(tmp_path):
    import torch
    from medsegsuite.models import load_checkpoint
    from medsegsuite.tta.loco import loco_model_path

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # one epoch (~20 s); the same held-out case as above, so a clean clone runs deepbet once (rad-brain2)
        path = loco_model_path("rad-brain1", epochs=1, cache=tmp_path, log=lambda m: None)
    finally:
        torch.set_num_threads(n)
    card = load_checkpoint(path)["card"]
    assert card["held_out_case"] == "rad-brain1" and card["structure"] == "brain"
    assert [c["name"] for c in card["training"]["cases"]] == ["colin27", "rad-brain2"]
    assert card["training"]["cases"][1]["label"].startswith("pseudo")
    mtime = path.stat().st_mtime_ns
    assert loco_model_path("rad-brain1", epochs=1, cache=tmp_path) == path and path.stat().st_mtime_ns == mtime
