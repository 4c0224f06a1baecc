"""A structure set being contoured: a template, the masks drawn so far, and each structure's status.

Status runs ``todo -> drafted -> reviewed -> approved``, one step at a time forward (a person may
step back at any time, e.g. reopen an approved structure). An *approved* structure is locked
against every AI write: :meth:`StructureSet.write_ai` refuses it before anything changes. Any write
to a reviewed structure sends it back to drafted (it must be reviewed again).

On disk: the masks in a ``.seg.nrrd`` and, next to it, ``<file>.structures.json`` holding the
template and each structure's status with its history (who, when, what).
"""
from __future__ import annotations

import datetime
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.segmentation import Segmentation, read_segmentation, write_segmentation
from ..volume import Geometry
from .templates import Template, template_from_dict

STATUSES = ("todo", "drafted", "reviewed", "approved")
SIDE_SUFFIX = ".structures.json"


def check_transition(name: str, current: str, new: str, has_contour: bool) -> None:
    """The one status rule (CLI and panels): forward one step at a time, back to any earlier step;
    nothing beyond *todo* without a contour."""
    if new not in STATUSES:
        raise InputError(f"status must be one of {', '.join(STATUSES)}, got '{new}'")
    i, j = STATUSES.index(current), STATUSES.index(new)
    if j > i + 1:
        raise InputError(f"'{name}' is {current}; it must be {STATUSES[i + 1]} before it can be {new}")
    if j > 0 and not has_contour:
        raise InputError(f"'{name}' has no contour yet; draft it before marking it {new}")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class StructureSet:
    """Template + masks + statuses. Masks are kept only for structures that have been drawn."""

    def __init__(self, template: Template, geometry: Geometry, seg: Segmentation | None = None,
                 status: dict | None = None):
        self.template = template
        self.seg = seg if seg is not None else Segmentation(geometry)
        self.geometry = self.seg.geometry
        self.status = {s.name: {"status": "todo", "history": []} for s in template.structures}
        for name, st in (status or {}).items():
            if name in self.status:
                self.status[name] = st
        for name in list(self.seg.masks):  # masks read from a file named in another convention
            s = template.find(name)
            if s is not None and s.name != name:
                self.seg.add(s.name, self.seg.masks.pop(name), s.color)

    # -- queries ---------------------------------------------------------------------------------
    def state(self, name: str) -> str:
        return self.status[self.template.require(name).name]["status"]

    def next_structure(self) -> str | None:
        """The first structure, in template order, that is not approved (what a panel offers next)."""
        return next((n for n in self.template.names if self.status[n]["status"] != "approved"), None)

    def table(self) -> list[dict]:
        return [{"name": s.name, "status": self.status[s.name]["status"],
                 "voxels": int(self.seg.masks[s.name].sum()) if s.name in self.seg.masks else 0,
                 "tg263": s.tg263} for s in self.template.structures]

    # -- changes ---------------------------------------------------------------------------------
    def _record(self, name, status, by, note):
        entry = self.status[name]
        entry["status"] = status
        entry["history"].append({"status": status, "by": by, "time": _now(), **({"note": note} if note else {})})

    def write_ai(self, name: str, mask, source: str) -> None:
        """An AI method's mask for ``name`` (CoSAM, box propagation ...). Refused for an approved
        structure; a todo or reviewed structure becomes drafted."""
        s = self.template.require(name)
        st = self.status[s.name]["status"]
        if st == "approved":
            raise InputError(f"'{s.name}' is approved and locked against AI writes; reopen it "
                             "(set its status back to reviewed) to change it")
        m = np.asarray(mask)
        if m.shape != self.geometry.shape:
            raise InputError(f"mask for '{s.name}' has shape {m.shape}, the structure set's grid is {self.geometry.shape}")
        self.seg.add(s.name, m, s.color)
        self._record(s.name, "drafted", source, None)

    def write_manual(self, name: str, mask, by: str) -> None:
        """A person's edit: allowed in any state except approved (reopen first)."""
        s = self.template.require(name)
        if self.status[s.name]["status"] == "approved":
            raise InputError(f"'{s.name}' is approved; reopen it before editing")
        self.seg.add(s.name, mask, s.color)
        self._record(s.name, "drafted", by, "manual edit")

    def set_status(self, name: str, status: str, by: str, note: str | None = None) -> None:
        """Move a structure forward one step, or back to any earlier step."""
        s = self.template.require(name)
        if not by or not str(by).strip():
            raise InputError("say who changes the status (--by NAME)")
        check_transition(s.name, self.status[s.name]["status"], status,
                         s.name in self.seg.masks and bool(self.seg.masks[s.name].any()))
        self._record(s.name, status, str(by), note)

    def approved_names(self) -> list[str]:
        return [n for n in self.template.names if self.status[n]["status"] == "approved"]

    # -- files -----------------------------------------------------------------------------------
    def save(self, path) -> Path:
        path = Path(path)
        if not str(path).endswith(".seg.nrrd"):
            raise InputError(f"a structure set is saved as .seg.nrrd (+ {SIDE_SUFFIX}), got {path}")
        drawn = {n: m for n, m in self.seg.masks.items() if m.any()}
        if drawn:
            write_segmentation(Segmentation(self.geometry, drawn, {n: self.seg.colors[n] for n in drawn}), path)
        else:  # nothing drawn yet: a geometry-only file keeps the grid
            write_segmentation(Segmentation(self.geometry, {"_empty": np.zeros(self.geometry.shape, bool)}), path)
        t = self.template
        side = {"template": {"name": t.name, "title": t.title, "description": t.description,
                             "structures": [_structure_dict(s) for s in t.structures]},
                "status": self.status}
        Path(str(path) + SIDE_SUFFIX).write_text(json.dumps(side, indent=1, ensure_ascii=False), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path) -> "StructureSet":
        path = Path(path)
        side = Path(str(path) + SIDE_SUFFIX)
        if not side.exists():
            raise InputError(f"{path} has no {SIDE_SUFFIX} next to it; start one with 'medsegsuite structures init'")
        try:
            d = json.loads(side.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise InputError(f"{side} is not valid JSON: {e}") from None
        seg = read_segmentation(path)
        seg.masks.pop("_empty", None)
        seg.colors.pop("_empty", None)
        return cls(template_from_dict(d["template"], str(side)), seg.geometry, seg, d.get("status"))


def _structure_dict(s) -> dict:
    d = asdict(s)
    d["color"] = [round(float(c), 4) for c in s.color]
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}
