"""Typed task parameters: each task declares its parameters once; everything else is generated.

A task's :class:`Schema` validates a job's params once, when the job is submitted (an unknown or
ill-typed parameter is a one-line `InputError` locally and a 400 from the server), fills in the
defaults, and is the source of the CLI options (:func:`add_cli_options`), the panels' option help and
the server's ``GET /tasks`` listing (:meth:`Schema.to_dict`). Torch-free.

Types: ``int``, ``float``, ``bool``, ``str``, ``choice`` (one of ``choices``), ``plane`` (axial,
coronal, sagittal), ``slices`` ('all', 'every:K', 'a:b', 'i,j,k' or a list of ints), ``floats`` /
``ints`` (a list, optionally of fixed ``length``), ``strs``, ``dict`` (JSON object), ``model`` (a
model registry id; a checkpoint *file path* is accepted only by an in-process backend on the user's
own machine; a server accepts only ids in its registry and never looks a name up as a file) and
``path`` (a file on the backend machine: in-process only).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError

TYPES = ("int", "float", "bool", "str", "choice", "plane", "slices", "floats", "ints", "strs", "dict",
         "model", "path")
_NO_DEFAULT = object()


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: Any = None
    help: str = ""
    range: tuple | None = None  # inclusive (min, max); either may be None
    choices: tuple | None = None
    length: int | None = None  # for lists
    required: bool = False
    cli: bool = True  # offered as a CLI option by add_cli_options

    def __post_init__(self):
        if self.type not in TYPES:
            raise ValueError(f"parameter {self.name}: unknown type {self.type!r}")

    # -- validation ---------------------------------------------------------------------------
    def _fail(self, value, what: str):
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise InputError(f"parameter '{self.name}' {what}, got {shown}")

    def _number(self, value, kind):
        if isinstance(value, bool) or value is None:
            self._fail(value, f"must be {'an integer' if kind is int else 'a number'}")
        try:
            if kind is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                v = int(value)
            else:
                v = float(value)
                if v != v or v in (float("inf"), float("-inf")):
                    raise ValueError
        except (TypeError, ValueError):
            self._fail(value, f"must be {'an integer' if kind is int else 'a finite number'}")
        if self.range is not None:
            lo, hi = self.range
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                self._fail(value, f"must lie in {lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}")
        return v

    def coerce(self, value, allow_paths: bool = True):
        """The validated value (strings from a CLI or JSON are converted); raises InputError."""
        t = self.type
        if value is None:
            if self.required:
                self._fail(value, "is required")
            return None
        if t == "int":
            return self._number(value, int)
        if t == "float":
            return self._number(value, float)
        if t == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
                return value.lower() in ("true", "1", "yes")
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            self._fail(value, "must be true or false")
        if t in ("str", "choice", "plane"):
            if not isinstance(value, str):
                self._fail(value, "must be a string")
            if t == "plane":
                from ..volume.planes import PLANES

                if value.lower() not in PLANES:
                    self._fail(value, f"must be one of {', '.join(PLANES)}")
                return value.lower()
            if t == "choice" and value not in self.choices:
                self._fail(value, f"must be one of {', '.join(map(str, self.choices))}")
            if len(value) > 4096:
                self._fail(value, "is too long")
            return value
        if t == "slices":
            if isinstance(value, str):
                if len(value) > 4096:
                    self._fail(value, "is too long")
                return value
            if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                return [int(v) for v in value]
            self._fail(value, "must be 'all', 'every:K', 'a:b', 'i,j,k' or a list of slice indices")
        if t in ("floats", "ints", "strs"):
            if isinstance(value, str):
                value = [v for v in value.replace(" ", ",").split(",") if v]
            if not isinstance(value, (list, tuple)):
                self._fail(value, "must be a list")
            if self.length is not None and len(value) != self.length:
                self._fail(value, f"must hold exactly {self.length} values")
            if t == "strs":
                if not all(isinstance(v, str) and v for v in value):
                    self._fail(value, "must be a list of non-empty strings")
                return list(value)
            inner = Param(self.name, "int" if t == "ints" else "float", range=self.range)
            return [inner.coerce(v) for v in value]
        if t == "dict":
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError:
                    self._fail(value, "must be a JSON object")
            if not isinstance(value, dict):
                self._fail(value, "must be a JSON object")
            return value
        if t in ("model", "path"):
            if not isinstance(value, str) or not value:
                self._fail(value, "must be a non-empty string")
            looks_like_path = t == "path" or any(c in value for c in "/\\") or value.startswith((".", "~")) \
                or value.endswith((".pt", ".pth", ".ckpt", ".bin", ".json"))
            if looks_like_path and not allow_paths:
                raise InputError(f"parameter '{self.name}' names a file on the server ({value!r}); a server "
                                 "accepts only model registry ids here: import the model on the server first")
            if t == "model" and not allow_paths:
                from ..models.registry import default_registry

                known = default_registry().entries
                if value not in known:  # never looked up as a file: the answer is the same either way
                    shown = value if len(value) <= 60 else value[:57] + "..."
                    raise InputError(f"parameter '{self.name}': '{shown}' is not a model on this server; it "
                                     f"has {', '.join(sorted(known)) or 'none'} (an admin adds one with "
                                     "import_model)")
            return value
        raise AssertionError(t)  # pragma: no cover

    @classmethod
    def from_dict(cls, d: dict) -> "Param":
        """The inverse of `to_dict` (a server's ``GET /tasks`` listing back into Params)."""
        return cls(d["name"], d["type"], d.get("default"), d.get("help", ""),
                   tuple(d["range"]) if d.get("range") is not None else None,
                   tuple(d["choices"]) if d.get("choices") is not None else None,
                   d.get("length"), bool(d.get("required", False)))

    def to_dict(self) -> dict:
        d = {"name": self.name, "type": self.type, "default": self.default, "help": self.help,
             "required": self.required}
        if self.range is not None:
            d["range"] = list(self.range)
        if self.choices is not None:
            d["choices"] = list(self.choices)
        if self.length is not None:
            d["length"] = self.length
        return d

    def describe(self) -> str:
        """Help text with the default and the allowed values (for CLI --help and panel tooltips)."""
        extra = []
        if self.choices:
            extra.append("one of " + ", ".join(map(str, self.choices)))
        if self.type == "plane":
            extra.append("axial, coronal or sagittal")
        if self.range is not None:
            lo, hi = self.range
            extra.append(f"{lo if lo is not None else ''}..{hi if hi is not None else ''}")
        if self.default is not None:
            extra.append(f"default {self.default}")
        return self.help + (f" ({'; '.join(extra)})" if extra else "")


@dataclass(frozen=True)
class Schema:
    """The parameters of one task."""

    params: tuple = field(default_factory=tuple)

    def __post_init__(self):
        object.__setattr__(self, "params", tuple(self.params))
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate parameter names in {names}")

    def __getitem__(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def validate(self, params: dict | None, task: str = "task", allow_paths: bool = True) -> dict:
        """Defaults filled in, every value coerced and checked; unknown names are refused."""
        params = dict(params or {})
        if not isinstance(params, dict):
            raise InputError(f"{task}: params must be a JSON object")
        unknown = sorted(set(params) - set(self.names))
        if unknown:
            raise InputError(f"{task}: unknown parameter(s) {', '.join(map(repr, unknown))}; it takes "
                             f"{', '.join(self.names) or 'none'}")
        out = {}
        for p in self.params:
            value = params.get(p.name)
            try:
                out[p.name] = p.coerce(value, allow_paths) if value is not None else (
                    p.coerce(p.default, True) if p.default is not None else p.coerce(None))
            except InputError as e:
                raise InputError(f"{task}: {e}") from None
        return out

    def to_dict(self) -> list[dict]:
        return [p.to_dict() for p in self.params]


# -- CLI generation -----------------------------------------------------------------------------

def add_cli_options(parser, schema: Schema, only=None, exclude=(), group: str | None = None) -> None:
    """One ``--name`` option per parameter (underscores become dashes); unset options stay None, so
    the schema's default applies. Values are parsed by the schema, not by argparse."""
    g = parser.add_argument_group(group) if group else parser
    for p in schema.params:
        if not p.cli or p.name in exclude or (only is not None and p.name not in only):
            continue
        flag = "--" + p.name.replace("_", "-")
        kw = {"dest": p.name, "default": None, "help": p.describe()}
        if p.type == "bool":
            kw["action"] = "store_const"
            kw["const"] = True
            if p.default:  # a flag that defaults on gets an explicit off switch
                g.add_argument("--no-" + p.name.replace("_", "-"), dest=p.name, action="store_const", const=False,
                               default=None, help=f"turn off {flag}")
        else:
            kw["metavar"] = {"plane": "PLANE", "slices": "SPEC", "model": "MODEL", "path": "FILE"}.get(
                p.type, p.type.upper().rstrip("S") if p.type in ("floats", "ints", "strs") else p.type.upper())
            if p.choices:
                kw["choices"] = list(p.choices)
            if p.type in ("floats", "ints", "strs"):
                kw["nargs"] = p.length or "+"
        g.add_argument(flag, **kw)


def params_from_cli(args, schema: Schema, only=None, exclude=()) -> dict:
    """The params a CLI invocation set (options left unset are omitted: the schema default applies)."""
    out = {}
    for p in schema.params:
        if not p.cli or p.name in exclude or (only is not None and p.name not in only):
            continue
        v = getattr(args, p.name, None)
        if v is not None:
            out[p.name] = v
    return out
