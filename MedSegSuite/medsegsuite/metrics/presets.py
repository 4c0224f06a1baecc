"""Evaluation presets: which structures to score, how to find them in a file, and each one's NSD tolerance.

A preset is a JSON file::

    {"name": "my-oars", "default_tolerance_mm": 1.0,
     "structures": [{"name": "Parotid_L", "label": 3, "tolerance_mm": 1.5, "aliases": ["parotid left"]},
                    {"name": "liver", "label": [1, 2]}]}

``label`` (an int or a list of ints whose union is the structure) finds the structure in labelmaps
that carry no names; ``name`` and ``aliases`` find it by name (case, spaces, ``-`` and ``_`` are
ignored). ``tolerance_mm`` defaults to ``default_tolerance_mm``. Shipped presets live in
``medsegsuite/resources/presets/``: ``segrap`` (SegRap2023, 45 OARs + GTVp/GTVnd), ``touchstone``
(9 abdominal organs, AbdomenAtlas labels) and ``lits`` (liver, tumour).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

PRESET_DIR = Path(__file__).resolve().parents[1] / "resources" / "presets"
ALIASES = {"segrap": "segrap2023", "segrap2023": "segrap2023", "touchstone": "touchstone", "lits": "lits",
           "abdomenatlas": "touchstone"}


def normalise(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", str(name)).lower()


@dataclass(frozen=True)
class Structure:
    name: str
    labels: tuple[int, ...] = ()
    tolerance_mm: float = 1.0
    aliases: tuple[str, ...] = ()

    def keys(self) -> set[str]:
        return {normalise(self.name), *(normalise(a) for a in self.aliases)}


@dataclass
class Preset:
    """An ordered list of structures with their tolerances."""

    name: str
    structures: list[Structure]
    default_tolerance_mm: float = 1.0
    description: str = ""
    source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def tolerances(self) -> dict[str, float]:
        return {s.name: s.tolerance_mm for s in self.structures}

    def find(self, seg) -> dict[str, np.ndarray]:
        """Masks of this preset's structures present in ``seg`` (a `Segmentation`), keyed by preset name.

        A segment matches by name/alias; a segment named ``label_<v>`` (a labelmap read without names)
        matches by label value, several values giving their union.
        """
        by_key = {normalise(n): n for n in seg.masks}
        values = {}
        for n in seg.masks:
            m = re.fullmatch(r"label_(\d+)", n)
            if m:
                values[int(m.group(1))] = n
        out = {}
        for s in self.structures:
            hit = next((by_key[k] for k in s.keys() if k in by_key), None)
            if hit is not None:
                out[s.name] = seg.masks[hit]
            elif s.labels and any(v in values for v in s.labels):
                out[s.name] = np.logical_or.reduce([seg.masks[values[v]] for v in s.labels if v in values])
        return out

    def unmatched(self, seg) -> list[str]:
        """Segment names in ``seg`` that no structure of this preset claims (to warn about typos)."""
        keys = set().union(*(s.keys() for s in self.structures)) if self.structures else set()
        labels = {v for s in self.structures for v in s.labels}
        out = []
        for n in seg.masks:
            m = re.fullmatch(r"label_(\d+)", n)
            if normalise(n) not in keys and not (m and int(m.group(1)) in labels):
                out.append(n)
        return out

    @classmethod
    def from_dict(cls, d: dict, origin: str = "preset") -> "Preset":
        if not isinstance(d, dict) or not isinstance(d.get("structures"), list) or not d["structures"]:
            raise InputError(f"{origin}: a preset needs a non-empty 'structures' list")
        default = _tol(d.get("default_tolerance_mm", 1.0), origin)
        structures, seen = [], set()
        for i, s in enumerate(d["structures"]):
            if isinstance(s, str):
                s = {"name": s}
            if not isinstance(s, dict) or not s.get("name"):
                raise InputError(f"{origin}: structure #{i + 1} needs a 'name'")
            lab = s.get("label", s.get("labels", []))
            labels = tuple(int(v) for v in (lab if isinstance(lab, (list, tuple)) else [lab]))
            if any(v <= 0 for v in labels):
                raise InputError(f"{origin}: structure '{s['name']}' has a label <= 0 (0 is background)")
            st = Structure(str(s["name"]), labels, _tol(s.get("tolerance_mm", default), origin),
                           tuple(str(a) for a in s.get("aliases", [])))
            if normalise(st.name) in seen:
                raise InputError(f"{origin}: structure '{st.name}' is listed twice")
            seen.add(normalise(st.name))
            structures.append(st)
        notes = [d[k] for k in ("label_note", "note") if d.get(k)]
        return cls(str(d.get("name", origin)), structures, default, str(d.get("description", "")),
                   str(d.get("source", "")), notes)

    @classmethod
    def from_names(cls, names, tolerance_mm: float = 1.0) -> "Preset":
        """An ad-hoc preset: these structure names, one tolerance (used when no preset is given)."""
        return cls("names", [Structure(n, (), _tol(tolerance_mm, "tolerance")) for n in names], tolerance_mm)


def _tol(v, origin) -> float:
    try:
        t = float(v)
    except (TypeError, ValueError):
        raise InputError(f"{origin}: tolerance {v!r} is not a number (mm)") from None
    if not np.isfinite(t) or t < 0:
        raise InputError(f"{origin}: tolerance must be a finite number >= 0 mm, got {v!r}")
    return t


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(spec: str) -> Preset:
    """A shipped preset by name (``segrap``, ``touchstone``, ``lits``) or a user JSON file."""
    key = ALIASES.get(str(spec).lower(), str(spec).lower())
    path = PRESET_DIR / f"{key}.json"
    if not path.exists():
        path = Path(spec)
        if not path.exists():
            raise InputError(f"unknown preset '{spec}': give one of {', '.join(available_presets())} "
                             "or the path of a preset JSON file")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"preset file {path} is not valid JSON: {e}") from None
    return Preset.from_dict(d, str(path))
