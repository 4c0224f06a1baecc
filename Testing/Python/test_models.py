"""Checkpoints load only when intact and safe; the registry verifies LiteMedSAM."""
import pickle

import pytest
import torch

from medsegsuite.errors import CheckpointError
from medsegsuite.models import ModelRegistry, default_registry, load_checkpoint, save_checkpoint
from medsegsuite.models.checkpoints import load_state_into, sha256_file, state_dict_of


def _tiny():
    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))


def test_checkpoint_round_trip_with_card(tmp_path):
    net = _tiny()
    p = save_checkpoint(tmp_path / "m.pt", "tiny", net.state_dict(), {"structures": ["liver"], "dice": 0.9})
    obj = load_checkpoint(p, sha256=sha256_file(p))
    assert obj["card"]["dice"] == 0.9 and (tmp_path / "m.json").exists()
    net2 = _tiny()
    load_state_into(net2, state_dict_of(obj, "tiny"))
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), net2.state_dict().values()))
    with pytest.raises(CheckpointError, match="expected 'other'"):
        state_dict_of(obj, "other")


def test_corrupt_truncated_and_wrong_checksum_are_refused(tmp_path):
    p = save_checkpoint(tmp_path / "m.pt", "tiny", _tiny().state_dict())
    good = sha256_file(p)
    data = p.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "trunc.pt")
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(tmp_path / "trunc.pt", sha256=good)
    with pytest.raises(CheckpointError, match="bytes, expected"):
        load_checkpoint(tmp_path / "trunc.pt", size=len(data))
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


class _Evil:
    def __reduce__(self):
        return (print, ("this would run code",))


def test_pickled_code_is_never_run(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "payload": _Evil()}, p)
    with pytest.raises(CheckpointError, match="could run code"):
        load_checkpoint(p)
    (tmp_path / "raw.pkl").write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "raw.pkl")


def test_mismatched_state_dict_is_named(tmp_path):
    sd = _tiny().state_dict()
    sd["0.weight"] = torch.zeros(5, 1, 3, 3)
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_state_into(_tiny(), sd)
    with pytest.raises(CheckpointError, match="missing keys"):
        load_state_into(_tiny(), {})


def test_litemedsam_is_registered_and_verified():
    e = default_registry().get("litemedsam")
    assert e.path.name == "lite_medsam.pth" and e.path.stat().st_size == 39370479
    assert sha256_file(e.path) == e.sha256
    with pytest.raises(CheckpointError, match="unknown model id"):
        default_registry().get("no-such-model")


def test_import_checkpoint_registers_in_user_folder(tmp_path):
    p = save_checkpoint(tmp_path / "m.pt", "tiny", _tiny().state_dict(), {"structures": ["spleen"]})
    reg = default_registry()
    e = reg.import_checkpoint(p, "my-spleen")
    assert e.structures == ["spleen"] and e.path.exists()
    again = default_registry().get("my-spleen")  # persisted in $MEDSEGSUITE_HOME/models/registry.json
    assert again.load()["architecture"] == "tiny"
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        ModelRegistry().import_checkpoint(bad, "bad")


def test_a_checkpoint_path_is_read_once_per_file_identity(tmp_path):
    """A model named by its path (in-process use) is read once, not on every job; a changed file is read again."""
    import torch

    from medsegsuite.models import loader
    from medsegsuite.models.checkpoints import save_checkpoint
    from medsegsuite.models.registry import resolve_model

    f = save_checkpoint(tmp_path / "m.pt", "tta-unet2d", {"w": torch.zeros(3)}, {"structures": ["liver"]})
    reads = loader.stats["reads"]
    for _ in range(3):
        e = resolve_model(str(f))
    assert e.architecture == "tta-unet2d" and e.structures == ["liver"]
    assert loader.stats["reads"] == reads + 1
    import os
    import time

    save_checkpoint(f, "tta-unet2d", {"w": torch.ones(3)}, {"structures": ["spleen"]})
    os.utime(f, (time.time() + 5, time.time() + 5))  # a new mtime even on a coarse clock
    assert resolve_model(str(f)).structures == ["spleen"] and loader.stats["reads"] == reads + 2
