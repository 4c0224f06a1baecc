"""Structure templates: the structures a radiotherapy plan needs, with TG-263 names, colours and codes.

Shipped templates (``medsegsuite/resources/templates/``): ``segrap2023`` (SegRap2023's 45 head-and-neck
OARs + GTVp/GTVn), ``abdomen`` and ``brain``. A user template is one small file:

JSON::

    {"name": "my-set", "structures": [
        {"name": "Parotid_L", "color": [0.76, 0.61, 0.87], "code": ["SCT", "45289007", "Parotid gland"],
         "aliases": ["parotid left"], "interpreted_type": "ORGAN"},
        "SpinalCord"]}

CSV (header row; only ``name`` is required)::

    name,color,code_scheme,code_value,code_meaning,interpreted_type,aliases
    Parotid_L,#c29bde,SCT,45289007,Parotid gland,ORGAN,parotid left|Parotid Lt

(a colour is ``#rrggbb``, or three numbers 0..1 or 0..255 separated by spaces).

``aliases`` match segment names (case, spaces, ``-`` and ``_`` ignored), so a segmentation named in
another convention (SegRap's ``TemporalLobe_L``, LiTS' ``liver``) maps onto the template's names.
"""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..io.segmentation import default_color

TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "resources" / "templates"
ALIASES = {"segrap": "segrap2023", "segrap2023": "segrap2023", "abdomen": "abdomen", "abdominal": "abdomen",
           "brain": "brain"}
ANATOMY = ("SCT", "123037004", "Anatomical Structure")
_INTERPRETED = ("ORGAN", "OAR", "AVOIDANCE", "GTV", "CTV", "PTV", "EXTERNAL", "CAVITY", "SUPPORT", "MARKER",
                "CONTROL", "TREATED_VOLUME", "IRRAD_VOLUME", "BOLUS", "FIXATION", "DOSE_REGION")


def normalise(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", str(name)).lower()


@dataclass(frozen=True)
class Structure:
    """One structure of a template: its (TG-263) name, colour, codes and the names it also goes by."""

    name: str
    color: tuple[float, float, float] = (1.0, 0.0, 0.0)
    code: tuple[str, str, str] | None = None  # (scheme, value, meaning), e.g. SNOMED CT
    category: tuple[str, str, str] = ANATOMY
    interpreted_type: str = "ORGAN"
    aliases: tuple[str, ...] = ()
    tg263: bool = True
    description: str = ""
    algorithm: str = "SEMIAUTOMATIC"

    def keys(self) -> set[str]:
        return {normalise(self.name), *(normalise(a) for a in self.aliases)}


@dataclass
class Template:
    name: str
    structures: list[Structure]
    title: str = ""
    description: str = ""
    source: str = ""
    _by_key: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        for s in self.structures:
            for k in s.keys():
                other = self._by_key.get(k)
                if other is not None and other is not s:
                    raise InputError(f"template '{self.name}': '{k}' names both '{other.name}' and '{s.name}'")
                self._by_key[k] = s

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.structures]

    def find(self, name: str) -> Structure | None:
        """The structure a segment name stands for (by name or alias), else None."""
        return self._by_key.get(normalise(name))

    def require(self, name: str) -> Structure:
        s = self.find(name)
        if s is None:
            raise InputError(f"template '{self.name}' has no structure '{name}'; it has {', '.join(self.names)}")
        return s

    def rename(self, seg) -> dict[str, str]:
        """Rename ``seg``'s segments to the template's names (and colours) where an alias matches;
        returns {old: new}. Segments the template does not know keep their names."""
        mapping = {}
        masks, colors = {}, {}
        for n, m in seg.masks.items():
            s = self.find(n)
            new = s.name if s else n
            if new in masks:
                raise InputError(f"segments '{mapping.get(new, new)}' and '{n}' both map to '{new}'")
            masks[new] = m
            colors[new] = s.color if s else seg.colors[n]
            if new != n:
                mapping[n] = new
        seg.masks.clear()
        seg.masks.update(masks)
        seg.colors.clear()
        seg.colors.update(colors)
        return mapping


def _tuple3(v, what, origin):
    if v is None or v == "":
        return None
    if not isinstance(v, (list, tuple)) or len(v) != 3:
        raise InputError(f"{origin}: {what} must be [scheme, value, meaning], got {v!r}")
    return tuple(str(x) for x in v)


def _color(v, name, index, origin):
    if v is None or v == "":
        return default_color(name, index)
    if isinstance(v, str) and re.fullmatch(r"[\d.\s,;]+", v.strip()):  # "255 0 0" or "1,0,0"
        v = [x for x in re.split(r"[\s,;]+", v.strip()) if x]
    if isinstance(v, str):
        h = v.lstrip("#")
        if not re.fullmatch(r"[0-9a-fA-F]{6}", h):
            raise InputError(f"{origin}: colour {v!r} of '{name}' is not #rrggbb")
        return tuple(int(h[i:i + 2], 16) / 255 for i in (0, 2, 4))
    try:
        c = tuple(float(x) for x in v)
    except (TypeError, ValueError):
        c = ()
    if len(c) != 3:
        raise InputError(f"{origin}: colour of '{name}' needs 3 values (0..1 or 0..255), got {v!r}")
    if max(c) > 1.0:
        c = tuple(x / 255 for x in c)
    if min(c) < 0 or max(c) > 1:
        raise InputError(f"{origin}: colour of '{name}' is out of range: {v!r}")
    return c


def structure_from_dict(d, index: int = 0, origin: str = "template") -> Structure:
    from ..dicom.rtstruct import check_name

    if isinstance(d, str):
        d = {"name": d}
    if not isinstance(d, dict) or not d.get("name"):
        raise InputError(f"{origin}: structure #{index + 1} needs a 'name'")
    name = check_name(str(d["name"]).strip())
    itype = str(d.get("interpreted_type") or "ORGAN").upper()
    if itype not in _INTERPRETED:
        raise InputError(f"{origin}: '{name}' has interpreted_type {itype!r}; use one of {', '.join(_INTERPRETED)}")
    aliases = d.get("aliases") or ()
    if isinstance(aliases, str):
        aliases = [a for a in aliases.split("|") if a.strip()]
    return Structure(name=name, color=_color(d.get("color"), name, index, origin),
                     code=_tuple3(d.get("code"), "code", origin),
                     category=_tuple3(d.get("category"), "category", origin) or ANATOMY, interpreted_type=itype,
                     aliases=tuple(str(a).strip() for a in aliases), tg263=bool(d.get("tg263", True)),
                     description=str(d.get("description", "")))


def template_from_dict(d: dict, origin: str = "template") -> Template:
    if not isinstance(d, dict) or not isinstance(d.get("structures"), list) or not d["structures"]:
        raise InputError(f"{origin}: a template needs a non-empty 'structures' list")
    structures = [structure_from_dict(s, i, origin) for i, s in enumerate(d["structures"])]
    return Template(str(d.get("name") or Path(origin).stem), structures, str(d.get("title", "")),
                    str(d.get("description", "")), origin)


def template_from_csv(text: str, origin: str) -> Template:
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or "name" not in (rows[0].keys() if rows else ()):
        raise InputError(f"{origin}: a CSV template needs a header row with at least a 'name' column")
    structures = []
    for i, r in enumerate(rows):
        r = {k.strip().lower(): (v or "").strip() for k, v in r.items() if k}
        code = None
        if r.get("code_value"):
            code = [r.get("code_scheme") or "SCT", r["code_value"], r.get("code_meaning") or r["name"]]
        structures.append(structure_from_dict({"name": r.get("name"), "color": r.get("color") or None, "code": code,
                                               "interpreted_type": r.get("interpreted_type") or "ORGAN",
                                               "aliases": r.get("aliases", "")}, i, origin))
    return Template(Path(origin).stem, structures, source=origin)


def available_templates() -> list[str]:
    return sorted(p.stem for p in TEMPLATE_DIR.glob("*.json"))


def load_template(spec) -> Template:
    """A shipped template by name (``segrap``, ``abdomen``, ``brain``) or a user JSON/CSV file."""
    key = ALIASES.get(str(spec).lower(), str(spec).lower())
    path = TEMPLATE_DIR / f"{key}.json"
    if not path.exists():
        path = Path(spec)
        if not path.exists():
            raise InputError(f"unknown template '{spec}': give one of {', '.join(available_templates())} or the "
                             "path of a template JSON/CSV file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"template {path} is not UTF-8 text") from None
    if path.suffix.lower() == ".csv":
        return template_from_csv(text, str(path))
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"template file {path} is not valid JSON: {e}") from None
    return template_from_dict(d, str(path))
