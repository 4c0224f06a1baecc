"""Checkpoint files: checksum verification and `torch.load(weights_only=True)` with clear errors.

A checkpoint written by :func:`save_checkpoint` is a dict ``{"format": "medsegsuite/1",
"architecture": str, "state_dict": {...}, "card": {...}}``; only tensors and plain Python values,
so it loads under ``weights_only=True`` (no pickled code ever runs).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import CheckpointError

FORMAT = "medsegsuite/1"


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_file(path, sha256: str | None = None, size: int | None = None) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if size is not None and path.stat().st_size != size:
        raise CheckpointError(f"checkpoint {path} has {path.stat().st_size} bytes, expected {size}: "
                              "it is truncated or a different file; reinstall or re-download it")
    if sha256 is not None:
        got = sha256_file(path)
        if got != sha256:
            raise CheckpointError(f"checkpoint {path} failed its checksum (sha256 {got[:12]}…, expected "
                                  f"{sha256[:12]}…): the file is corrupt or not the registered model")
    return path


def load_checkpoint(path, sha256: str | None = None, size: int | None = None, map_location="cpu") -> dict:
    """Load a checkpoint safely. Never unpickles code; corrupt or untrusted files are refused."""
    import pickle
    import zipfile

    import torch

    path = verify_file(path, sha256, size)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"refused to load {path}: it holds objects other than tensors and plain "
                              f"values, which could run code ({str(e).splitlines()[0][:200]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: it is corrupt or truncated "
                              f"({str(e).splitlines()[0][:200]})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict")
    return obj


def state_dict_of(obj: dict, architecture: str | None = None, path="checkpoint") -> dict:
    """The state dict inside a loaded checkpoint (ours, or the common 'model'/'state_dict' wrappers)."""
    if obj.get("format") == FORMAT:
        if architecture is not None and obj.get("architecture") != architecture:
            raise CheckpointError(f"{path} is a '{obj.get('architecture')}' model, expected '{architecture}'")
        return obj["state_dict"]
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), dict):
            return obj[key]
    return obj


def save_checkpoint(path, architecture: str, state_dict: dict, card: dict | None = None) -> Path:
    """Write a checkpoint of tensors + a JSON-able model card (also written beside it as .json)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    card = dict(card or {})
    json.dumps(card)  # the card must be plain data
    sd = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, "architecture": architecture, "state_dict": sd, "card": card}, tmp)
    tmp.replace(path)
    card_path = path.with_suffix(".json")
    card_path.write_text(json.dumps({"architecture": architecture, **card}, indent=2), encoding="utf-8")
    return path


def load_state_into(module, state_dict: dict, path="checkpoint", strict: bool = True) -> None:
    """`load_state_dict` with a message naming the missing/unexpected/mismatched keys."""
    own = module.state_dict()
    bad = [k for k, v in state_dict.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    missing = [k for k in own if k not in state_dict]
    extra = [k for k in state_dict if k not in own]
    if bad or (strict and (missing or extra)):
        parts = []
        if bad:
            parts.append(f"{len(bad)} tensors of the wrong shape (e.g. {bad[0]}: "
                         f"{tuple(state_dict[bad[0]].shape)} vs {tuple(own[bad[0]].shape)})")
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} unexpected keys (e.g. {extra[0]})")
        raise CheckpointError(f"{path} does not fit this architecture: " + "; ".join(parts))
    module.load_state_dict(state_dict, strict=strict)
