"""Scribble models as files or as bytes (a uint8 array, how a job hands a model back). Either way
the content is a `medsegsuite.models.save_checkpoint` file: tensors + a JSON card, loadable with
``torch.load(weights_only=True)`` through `medsegsuite.models.load_checkpoint`."""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np

from ..errors import CheckpointError
from ..models import load_checkpoint, save_checkpoint
from .network import ARCHITECTURE, build_checkpoint


def save_model(net, card: dict, path) -> Path:
    return save_checkpoint(path, ARCHITECTURE, net.state_dict(), card)


def model_to_bytes(net, card: dict) -> np.ndarray:
    with tempfile.TemporaryDirectory() as d:
        p = save_model(net, card, Path(d) / "model.pt")
        return np.frombuffer(p.read_bytes(), dtype=np.uint8).copy()


def read_model_dict(path=None, data: np.ndarray | None = None) -> tuple[dict, dict]:
    """(state_dict, card) from a file or from bytes; refuses anything that is not a scribble model."""
    if data is not None:
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "model.pt"
            p.write_bytes(np.asarray(data, dtype=np.uint8).tobytes())
            obj = load_checkpoint(p)
        where = "the model array"
    else:
        obj = load_checkpoint(path)
        where = str(path)
    return _checked(obj, where)


def _checked(obj: dict, where: str) -> tuple[dict, dict]:
    if obj.get("architecture") != ARCHITECTURE:
        raise CheckpointError(f"{where} is a '{obj.get('architecture')}' model, not a scribble model "
                              f"('{ARCHITECTURE}'); train one with 'medsegsuite scribble train'")
    card = obj.get("card") or {}
    if "classes" not in card or "net" not in card:
        raise CheckpointError(f"{where} has no class list or network config in its card")
    return obj["state_dict"], card


def build_from(state_dict: dict, card: dict, device: str = "cpu"):
    return build_checkpoint(state_dict, card, device)


def load_model(model: str, device: str = "cpu"):
    """(net, card) of a registry id or (in-process) checkpoint path, through the shared cached loader
    (`models.loader`: weights_only, checksum once per file identity, built once per device)."""
    from ..models.loader import load_model as load

    m = load(model, device, expect=ARCHITECTURE)
    return m.net, m.card


def read_model_entry(model: str) -> tuple[dict, dict]:
    """(state_dict, card) of a registry id or checkpoint path (e.g. a model to continue training from),
    read through the loader's checksum-once cache."""
    from ..models.loader import read_entry
    from ..models.registry import resolve_model

    entry = resolve_model(str(model))
    return _checked(read_entry(entry)[0], str(model))


def model_key(data: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(data, dtype=np.uint8).tobytes()).hexdigest()[:16]
