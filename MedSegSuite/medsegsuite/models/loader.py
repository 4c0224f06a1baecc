"""One architecture registry and one cached model loader for every method's checkpoints.

``@architecture("tta-unet2d")`` registers ``builder(state_dict, card, device, **kw) -> network``
(a builder registered for ``"cosam/"`` serves every architecture that starts with ``cosam/``).
:func:`load_model` resolves a registry id or (in-process only) a checkpoint path, verifies the file's
checksum once per *file identity* (path, size, mtime, inode) instead of once per job, reads it with
``torch.load(weights_only=True)``, and builds the network once per (file identity, device, build
options). A file that changes on disk is a new identity: it is verified and built again.
"""
from __future__ import annotations

import importlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import CheckpointError
from .checkpoints import load_checkpoint, state_dict_of
from .registry import ModelEntry, resolve_model

_BUILDERS: dict[str, Callable] = {}
# Modules whose import registers builders (imported on first use, so this module stays torch-free).
BUILDER_MODULES: list[str] = ["medsegsuite.cosam.model", "medsegsuite.tta.network", "medsegsuite.scribble.network",
                              "medsegsuite.cosam.generalised"]
_lock = threading.RLock()
_built: OrderedDict = OrderedDict()
_raw: OrderedDict = OrderedDict()
MAX_BUILT = 8
MAX_RAW = 4
stats = {"reads": 0, "builds": 0}


def architecture(name: str):
    """Register a builder for ``name`` (a trailing ``/`` makes it a prefix)."""
    def deco(fn):
        _BUILDERS[name] = fn
        return fn
    return deco


def builder_for(arch: str) -> Callable:
    for mod in BUILDER_MODULES:
        importlib.import_module(mod)
    if arch in _BUILDERS:
        return _BUILDERS[arch]
    for name, fn in _BUILDERS.items():
        if name.endswith("/") and arch.startswith(name):
            return fn
    raise CheckpointError(f"no builder for architecture '{arch}'; known: {', '.join(sorted(_BUILDERS)) or 'none'}")


def file_identity(path) -> tuple:
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        raise CheckpointError(f"checkpoint not found: {p}") from None
    return (str(p.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


@dataclass
class LoadedModel:
    net: object
    card: dict
    architecture: str
    entry: ModelEntry = field(repr=False)

    @property
    def id(self) -> str:
        return self.entry.id


def _remember(cache: OrderedDict, key, value, limit: int):
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)


def read_entry(entry: ModelEntry) -> tuple[dict, tuple]:
    """The loaded checkpoint dict of ``entry`` and its file identity; checksum checked once per identity."""
    ident = file_identity(entry.path)
    with _lock:
        if ident in _raw:
            _raw.move_to_end(ident)
            return _raw[ident], ident
    obj = load_checkpoint(entry.path, entry.sha256, entry.size)
    stats["reads"] += 1
    with _lock:
        _remember(_raw, ident, obj, MAX_RAW)
    return obj, ident


def load_model(model: str, device: str = "cpu", expect: str | None = None, cache_key=(), **build_kw) -> LoadedModel:
    """A built network for a registry id (or a checkpoint path) on ``device``, cached.

    ``expect``: the architecture (or ``prefix/``) the caller can use; another one is a clear error.
    ``cache_key``: extra hashable parts that distinguish builds (e.g. the backbone a head sits on)."""
    entry = resolve_model(str(model))
    obj, ident = read_entry(entry)
    arch = str(obj.get("architecture") or entry.architecture or "unknown")
    if expect is not None and not (arch == expect or (expect.endswith("/") and arch.startswith(expect))):
        raise CheckpointError(f"model '{model}' is a '{arch}' model; this needs a '{expect}' model")
    key = (ident, str(device), tuple(cache_key))
    with _lock:
        if key in _built:
            _built.move_to_end(key)
            return _built[key]
    card = dict(obj.get("card") or {})
    net = builder_for(arch)(state_dict_of(obj, None, entry.path), card, device, **build_kw)
    stats["builds"] += 1
    loaded = LoadedModel(net, card, arch, entry)
    with _lock:
        _remember(_built, key, loaded, MAX_BUILT)
    return loaded
