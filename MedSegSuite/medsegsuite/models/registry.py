"""The model registry: ids a user can name (``--model liver``) -> file, checksum, architecture.

Shipped entries are listed in ``medsegsuite/resources/models/registry.json`` (paths relative to that
folder, or ``pkg:<module>/<file>`` for a file inside an installed package). Users add their own
with :meth:`ModelRegistry.import_checkpoint`, which copies the file into the user model folder
(``$MEDSEGSUITE_HOME/models``, default ``~/.medsegsuite/models``) after checking it loads safely.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import CheckpointError, InputError
from .checkpoints import load_checkpoint, sha256_file

SHIPPED = Path(__file__).resolve().parent.parent / "resources" / "models"
# Demo weights shipped with the extension: top-level Resources/Models of the source tree, or, in an
# installed Slicer extension, <qt-scripted-modules>/Resources/Models beside the medsegsuite package.
EXTENSION_MODELS = Path(__file__).resolve().parents[3] / "Resources" / "Models"
INSTALLED_MODELS = Path(__file__).resolve().parents[2] / "Resources" / "Models"


def registry_files() -> list[Path]:
    """Every ``registry.json`` / ``*.registry.json`` in the shipped folders, then the user's."""
    files = []
    for folder in dict.fromkeys((SHIPPED, EXTENSION_MODELS, INSTALLED_MODELS)):
        if folder.is_dir():
            files += sorted(folder.glob("registry.json")) + sorted(folder.glob("*.registry.json"))
    return files + [user_home() / "models" / "registry.json"]


MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_model_id(model_id) -> str:
    """A model id is also a file name: letters, digits, '.', '_', '-' (no path, no leading dot)."""
    if not isinstance(model_id, str) or not MODEL_ID.fullmatch(model_id) or ".." in model_id:
        raise InputError(f"model id {str(model_id)[:80]!r} is not valid: use 1-64 letters, digits, '.', '_' or "
                         "'-', starting with a letter or digit")
    return model_id


def user_home() -> Path:
    return Path(os.environ.get("MEDSEGSUITE_HOME", Path.home() / ".medsegsuite"))


@dataclass
class ModelEntry:
    id: str
    file: str
    architecture: str
    sha256: str | None = None
    size: int | None = None
    structures: list[str] = field(default_factory=list)
    task: str = ""
    description: str = ""
    base: Path | None = field(default=None, repr=False, compare=False)

    @property
    def path(self) -> Path:
        if self.file.startswith("pkg:"):
            mod, _, name = self.file[4:].partition("/")
            spec = importlib.util.find_spec(mod)
            if spec is None or not spec.submodule_search_locations:
                raise CheckpointError(f"model '{self.id}' lives in the Python package '{mod.split('.')[0]}', "
                                      "which is not installed")
            return Path(list(spec.submodule_search_locations)[0]) / name
        p = Path(self.file)
        return p if p.is_absolute() else (self.base or SHIPPED) / p

    def load(self, map_location="cpu") -> dict:
        """The checkpoint dict, checksum-verified and loaded with weights_only=True."""
        return load_checkpoint(self.path, self.sha256, self.size, map_location)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("base")
        return d


class ModelRegistry:
    def __init__(self, files: list[Path] | None = None):
        self.entries: dict[str, ModelEntry] = {}
        for f in files if files is not None else registry_files():
            self.load_file(f)

    def load_file(self, path: Path) -> None:
        path = Path(path)
        if not path.exists():
            return
        for d in json.loads(path.read_text(encoding="utf-8")):
            e = ModelEntry(**d, base=path.parent)
            self.entries[e.id] = e

    def __contains__(self, model_id: str) -> bool:
        return model_id in self.entries

    def get(self, model_id: str) -> ModelEntry:
        if model_id not in self.entries:
            raise CheckpointError(f"unknown model id '{model_id}'; known: {', '.join(sorted(self.entries))}")
        return self.entries[model_id]

    def list(self, task: str | None = None) -> list[ModelEntry]:
        return [e for e in self.entries.values() if task is None or e.task == task]

    def import_checkpoint(self, src, model_id: str, architecture: str | None = None,
                          structures=None, task: str = "", description: str = "") -> ModelEntry:
        """Copy a checkpoint into the user model folder and register it (after a safe test load)."""
        check_model_id(model_id)
        src = Path(src)
        obj = load_checkpoint(src)  # refuses corrupt/untrusted files before anything is copied
        arch = architecture or obj.get("architecture")
        if not arch:
            raise CheckpointError(f"{src} does not say its architecture; pass one")
        card = obj.get("card", {}) if isinstance(obj.get("card"), dict) else {}
        dest_dir = user_home() / "models"
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / f"{model_id}{''.join(src.suffixes) or '.pt'}"
        shutil.copyfile(src, dest)
        entry = ModelEntry(id=model_id, file=dest.name, architecture=arch, sha256=sha256_file(dest),
                           size=dest.stat().st_size,
                           structures=list(structures or card.get("structures", [])),
                           task=task or card.get("task", ""), description=description, base=dest_dir)
        reg = dest_dir / "registry.json"
        items = [d for d in (json.loads(reg.read_text(encoding="utf-8")) if reg.exists() else []) if d["id"] != model_id]
        items.append(entry.to_dict())
        reg.write_text(json.dumps(items, indent=1), encoding="utf-8")
        self.entries[model_id] = entry
        return entry


def default_registry() -> ModelRegistry:
    return ModelRegistry()


def resolve_model(model: str, registry: ModelRegistry | None = None) -> ModelEntry:
    """A registry id or a checkpoint path -> entry (a path gets an ad-hoc, unverified-checksum entry)."""
    registry = registry or default_registry()
    if model in registry:
        return registry.get(model)
    p = Path(model)
    if p.exists():
        from .loader import read_entry  # read once per file identity, as registered models are

        entry = ModelEntry(id=p.stem, file=str(p.resolve()), architecture="unknown")
        obj, _ = read_entry(entry)
        entry.architecture = obj.get("architecture", "unknown")
        entry.structures = list((obj.get("card") or {}).get("structures", []))
        return entry
    raise CheckpointError(f"'{model}' is neither a registered model id ({', '.join(sorted(registry.entries))}) "
                          "nor an existing checkpoint file")
