"""Checks the panels' Qt side against Slicer's API as data (``Testing/Data/slicer_qt_api.json``, written by
``scripts/slicer_api.py`` from Slicer's and CTK's headers at each supported tag and Qt's meta-objects).

What PythonQt offers a script (``PythonQtClassInfo::member``): a widget's Q_PROPERTYs as attributes (looked
up *first*: a property shadows a method of the same name, so ``combo.count()`` fails), then its signals,
slots and Q_INVOKABLE methods; Qt's own classes also have their public methods (PythonQt's generated
wrappers); every QObject has ``connect``/``disconnect``. Checked:

* ``.ui`` files: every widget class exists, custom widgets name the right header and base and have a
  Designer plugin (``loadUI`` can only build those), every property exists with a value of its type,
  every ``<connection>``'s signal and slot exist and fit;
* module files and ``MedSegSuiteLib``: every ``connect("signal(...)")``, attribute read, assignment and
  method call on a widget or Qt object whose class can be told statically (``self.ui.<name>``, objects
  made with ``qt.X()``/``slicer.X()``/``ctk.X()``, ``slicer.app``, values handed to a function or class of
  these files), and every ``*_WIDGETS`` name table.

Run ``python Testing/Python/slicer_api_check.py`` for the mismatch count per tag.
"""
from __future__ import annotations

import ast
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
API_FILE = ROOT / "Testing" / "Data" / "slicer_qt_api.json"
MODULES = ("MedSegSuite", "SelfCorrectingSAM", "ScribbleSeg", "TestTimeAdapt")
LIB = ROOT / "MedSegSuite" / "MedSegSuiteLib"
# Designer's own layout and spacer properties (not Q_PROPERTYs; uic/QFormBuilder apply them)
LAYOUT_PSEUDO = {"leftMargin", "topMargin", "rightMargin", "bottomMargin", "horizontalSpacing",
                 "verticalSpacing", "spacing", "margin", "sizeConstraint", "fieldGrowthPolicy", "labelAlignment",
                 "formAlignment", "rowWrapPolicy", "stretch", "rowStretch", "columnStretch", "rowMinimumHeight",
                 "columnMinimumWidth"}
SPACER_PSEUDO = {"orientation", "sizeType", "sizeHint"}
# .ui value element -> property types it can set
UI_VALUE_TYPES = {
    "bool": {"bool"}, "string": {"QString", "QVariant", "QByteArray"}, "stringlist": {"QStringList"},
    "number": {"int", "uint", "double", "float", "qlonglong", "qulonglong", "short", "long"},
    "double": {"double", "float"}, "rect": {"QRect"}, "size": {"QSize"}, "point": {"QPoint"},
    "color": {"QColor"}, "font": {"QFont"}, "iconset": {"QIcon"}, "pixmap": {"QPixmap", "QIcon"},
    "cursorShape": {"QCursor"}, "sizepolicy": {"QSizePolicy"}, "palette": {"QPalette"}, "locale": {"QLocale"},
    "url": {"QUrl"}, "date": {"QDate"}, "time": {"QTime"}, "datetime": {"QDateTime"}, "char": {"QChar"},
}
QOBJECT_METHODS = {"blockSignals", "signalsBlocked", "setObjectName", "objectName", "parent", "setParent",
                   "children", "findChild", "findChildren", "property", "setProperty", "deleteLater",
                   "installEventFilter", "removeEventFilter", "metaObject", "dynamicPropertyNames", "inherits",
                   "isWidgetType", "startTimer", "killTimer", "thread", "moveToThread", "sender", "tr"}


@lru_cache(maxsize=1)
def api() -> dict:
    return json.loads(API_FILE.read_text())


def tags() -> list[str]:
    return list(api()["tags"])


@dataclass
class ClassAPI:
    name: str
    chain: list[str] = field(default_factory=list)
    properties: dict[str, str] = field(default_factory=dict)
    signals: set[str] = field(default_factory=set)
    slots: set[str] = field(default_factory=set)
    invokables: set[str] = field(default_factory=set)
    methods: set[str] = field(default_factory=set)
    enums: set[str] = field(default_factory=set)

    def callables(self) -> set[str]:
        names = {s.split("(")[0] for s in self.signals | self.slots | self.invokables}
        return names | self.methods | set(api()["pythonqt_builtins"]) | QOBJECT_METHODS

    def members(self) -> set[str]:
        return self.callables() | set(self.properties) | self.enums


def _raw(tag: str, name: str) -> dict | None:
    return api()["tags"][tag]["classes"].get(name) or api()["qt"]["classes"].get(name)


@lru_cache(maxsize=None)
def resolve(tag: str, name: str) -> ClassAPI | None:
    """A class with everything it inherits (Slicer/CTK classes at ``tag``, then Qt)."""
    if _raw(tag, name) is None:
        return None
    out, todo = ClassAPI(name), [name]
    while todo:
        n = todo.pop(0)
        e = _raw(tag, n)
        if e is None or n in out.chain:
            continue
        out.chain.append(n)
        for k, v in e["properties"].items():
            out.properties.setdefault(k, v)
        out.signals |= set(e["signals"])
        out.slots |= set(e["slots"])
        out.invokables |= set(e["invokables"])
        out.methods |= set(e.get("methods", ())) | set(api()["tags"][tag].get("decorators", {}).get(n, ()))
        out.enums |= set(e.get("enums", ()))
        todo += e["bases"]
    return out


def normalize_signature(sig: str) -> str:
    """Qt's normalized form of a signature written in Python (``"clicked( bool )"``)."""
    name, _, rest = sig.strip().partition("(")
    args = rest.rsplit(")", 1)[0]
    types = [_generator().normalize_type(a) for a in _split(args)]
    return f"{name.strip()}({','.join(types)})"


@lru_cache(maxsize=1)
def _generator():
    """scripts/slicer_api.py (one normalisation of C++ signatures for the headers and for the Python)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("slicer_api", ROOT / "scripts" / "slicer_api.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _split(args: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in args:
        depth += ch in "<(" 
        depth -= ch in ">)"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return [a.strip() for a in out + [cur] if a.strip() and a.strip() != "void"]


def _args(sig: str) -> list[str]:
    return _split(sig.partition("(")[2].rsplit(")", 1)[0])


# ------------------------------------------------------------------------------------------------
# .ui files
def ui_file(module: str) -> Path:
    return ROOT / module / "Resources" / "UI" / f"{module}.ui"


@lru_cache(maxsize=None)
def ui_widgets(module: str) -> dict[str, str]:
    root = ET.parse(ui_file(module)).getroot()
    return {w.get("name"): w.get("class") for w in root.iter("widget")}


@lru_cache(maxsize=None)
def ui_top_class(module: str) -> str:
    return ET.parse(ui_file(module)).getroot().find("widget").get("class")


def _rel(path: Path):
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def check_ui(tag: str, module: str, path: Path | None = None) -> list[str]:
    path = path or ui_file(module)
    root = ET.parse(path).getroot()
    where = f"{_rel(path)} [{tag}]"
    out = []
    custom = {c.findtext("class"): c for c in root.iter("customwidget")}
    classes = {}
    for w in root.iter("widget"):
        cls, name = w.get("class"), w.get("name")
        classes[name] = cls
        info = resolve(tag, cls)
        if info is None:
            out.append(f"{where}: widget '{name}' has class {cls}, which Slicer/CTK/Qt do not have")
            continue
        for prop in w.findall("property"):
            pname = prop.get("name")
            if pname not in info.properties:
                out.append(f"{where}: {name} ({cls}) has no property '{pname}'")
                continue
            value = next(iter(prop), None)
            if value is not None and value.tag in ("enum", "set"):  # Class::Value names must exist
                for item in (value.text or "").split("|"):
                    owner, _, enum_value = item.strip().rpartition("::")
                    owner_api = resolve(tag, owner) if owner and owner != "Qt" else None
                    if owner_api is not None and enum_value not in owner_api.enums:
                        out.append(f"{where}: {name}.{pname}: {owner} has no enum value {enum_value}")
            if value is not None and value.tag not in ("enum", "set"):
                allowed = UI_VALUE_TYPES.get(value.tag)
                ptype = info.properties[pname]
                if allowed is not None and ptype not in allowed:
                    out.append(f"{where}: {name}.{pname} is {ptype}, the .ui gives <{value.tag}>")
    for lay in root.iter("layout"):
        info = resolve(tag, lay.get("class"))
        if info is None:
            out.append(f"{where}: layout {lay.get('name')} has unknown class {lay.get('class')}")
            continue
        for prop in lay.findall("property"):
            if prop.get("name") not in info.properties and prop.get("name") not in LAYOUT_PSEUDO:
                out.append(f"{where}: layout {lay.get('name')} has no property '{prop.get('name')}'")
    for sp in root.iter("spacer"):
        for prop in sp.findall("property"):
            if prop.get("name") not in SPACER_PSEUDO:
                out.append(f"{where}: spacer {sp.get('name')} has no property '{prop.get('name')}'")
    for cls, c in custom.items():
        e = api()["tags"][tag]["classes"].get(cls)
        if e is None:
            if cls not in api()["qt"]["classes"]:
                out.append(f"{where}: custom widget {cls} is not a Slicer/CTK class")
            continue
        if c.findtext("header") != e["header"]:
            out.append(f"{where}: custom widget {cls}: header {c.findtext('header')}, Slicer has {e['header']}")
        extends = c.findtext("extends")
        if extends and extends not in resolve(tag, cls).chain:
            out.append(f"{where}: custom widget {cls} does not derive from {extends}")
        if not e["designer_plugin"]:
            out.append(f"{where}: {cls} has no Designer plugin, so slicer.util.loadUI cannot create it")
    for w_cls in set(classes.values()):
        if w_cls not in custom and w_cls not in api()["qt"]["classes"]:
            out.append(f"{where}: {w_cls} is used but not declared in <customwidgets>")
    for c in root.iter("connection"):
        s, sig, r, slot = (c.findtext(k) for k in ("sender", "signal", "receiver", "slot"))
        for who in (s, r):
            if who not in classes:
                out.append(f"{where}: connection names unknown widget '{who}'")
        if s not in classes or r not in classes:
            continue
        sender, receiver = resolve(tag, classes[s]), resolve(tag, classes[r])
        if sender is None or receiver is None:
            continue
        sig_n, slot_n = normalize_signature(sig), normalize_signature(slot)
        if sig_n not in sender.signals:
            out.append(f"{where}: {s} ({classes[s]}) has no signal {sig}")
        if slot_n not in receiver.slots | receiver.signals:
            out.append(f"{where}: {r} ({classes[r]}) has no slot {slot}")
        if _args(slot_n) != _args(sig_n)[:len(_args(slot_n))]:
            out.append(f"{where}: slot {slot} does not take the arguments of signal {sig}")
    return out


# ------------------------------------------------------------------------------------------------
# Python files: a small static type pass (which Qt class each expression holds)
def python_files() -> list[Path]:
    return [ROOT / m / f"{m}.py" for m in MODULES] + sorted(LIB.glob("*.py"))


def _module_of(path: Path) -> str | None:
    return path.stem if path.stem in MODULES else None


@dataclass
class Use:
    path: Path
    line: int
    classes: frozenset
    attr: str
    kind: str  # "get", "set", "call", "connect"
    signal: str = ""
    text: str = ""


class _Scan:
    """Collects every typed use across the files, to a fixed point of call-site parameter binding."""

    def __init__(self, tag: str, files=None):
        self.tag = tag
        self.trees = {p: ast.parse(p.read_text(encoding="utf-8")) for p in (files or python_files())}
        self.functions: dict[str, list[tuple[Path, ast.FunctionDef, str | None]]] = {}
        self.classes: dict[str, tuple[Path, ast.ClassDef]] = {}
        for p, tree in self.trees.items():
            for node in tree.body:
                if isinstance(node, ast.FunctionDef):
                    self.functions.setdefault(node.name, []).append((p, node, None))
                elif isinstance(node, ast.ClassDef):
                    self.classes[node.name] = (p, node)
                    for f in node.body:
                        if isinstance(f, ast.FunctionDef):
                            self.functions.setdefault(f"{node.name}.{f.name}", []).append((p, f, node.name))
        self.modules_of = self._modules_of_classes()      # class -> modules whose .ui its self.ui is
        self.returns: dict[str, list[set[str]]] = {}     # method key -> per tuple position classes
        self.missing_widgets: list[str] = []
        self.params: dict[tuple[str, str], set[str]] = {}  # (function key, param) -> classes
        self.attrs: dict[tuple[str, str], set[str]] = {}   # (class name, attr) -> classes
        self.uses: list[Use] = []
        self.unresolved_connects: list[str] = []

    def _modules_of_classes(self) -> dict[str, set[str]]:
        """A module file's classes use its .ui; a library class (a shared Widget base) uses the .ui of
        every module whose classes derive from it."""
        bases = {name: [ast.unparse(b).split(".")[-1] for b in node.bases] for name, (_, node) in self.classes.items()}
        out = {name: {_module_of(p)} for name, (p, _) in self.classes.items() if _module_of(p)}
        changed = True
        while changed:
            changed = False
            for name, mods in list(out.items()):
                for b in bases.get(name, []):
                    if b in self.classes and not mods <= out.get(b, set()):
                        out.setdefault(b, set()).update(mods)
                        changed = True
        return out

    def ui_types(self, cls: str | None, widget_names: list[str], path: Path, line: int) -> set[str]:
        types = set()
        for m in sorted(self.modules_of.get(cls, set())):
            widgets = ui_widgets(m)
            found = [widgets[n] for n in widget_names if n in widgets]
            if not found and len(widget_names) == 1:
                self.missing_widgets.append(f"{_rel(path)}:{line}: {cls} uses self.ui.{widget_names[0]}, "
                                            f"which {m}.ui does not have")
            types.update(found)
        return types

    def known(self, name: str) -> bool:
        return resolve(self.tag, name) is not None

    # -- expression types
    def typeof(self, e, env: dict, path: Path, cls: str | None) -> set[str]:
        if isinstance(e, ast.Attribute):
            base = e.value
            if isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name) and base.value.id == "self" \
                    and base.attr == "ui":
                return self.ui_types(cls, [e.attr], path, e.lineno)
            if isinstance(base, ast.Name) and base.id == "self" and cls:
                return set(self.attrs.get((cls, e.attr), set()))
            if isinstance(base, ast.Name) and base.id == "slicer" and e.attr == "app":
                return {"qSlicerApplication"}
            if isinstance(base, ast.Name) and base.id in ("qt", "ctk", "slicer") and self.known(e.attr):
                return {e.attr}  # the class itself: its static methods and enum values
            return set()
        if isinstance(e, ast.Name):
            return set(env.get(e.id, set()))
        if isinstance(e, ast.Call):
            f = e.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in ("qt", "slicer", "ctk") \
                    and self.known(f.attr):
                return {f.attr}
            if isinstance(f, ast.Name) and f.id == "getattr" and len(e.args) >= 2 \
                    and ast.unparse(e.args[0]) == "self.ui" and isinstance(e.args[1], (ast.Constant, ast.JoinedStr)):
                pattern = "".join(re.escape(v.value) if isinstance(v, ast.Constant) else r"\w*"
                                  for v in (e.args[1].values if isinstance(e.args[1], ast.JoinedStr) else [e.args[1]]))
                names = {n for m in self.modules_of.get(cls, ()) for n in ui_widgets(m) if re.fullmatch(pattern, n)}
                return self.ui_types(cls, sorted(names), path, e.lineno) if names else set()
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "self" and cls \
                    and f"{cls}.{f.attr}" in self.returns and len(self.returns[f"{cls}.{f.attr}"]) == 1:
                return set(self.returns[f"{cls}.{f.attr}"][0])
            if isinstance(f, ast.Name) and f.id == "getattr" and len(e.args) >= 2 \
                    and ast.unparse(e.args[0]) == "slicer" and getattr(e.args[1], "value", None) == "app":
                return {"qSlicerApplication"}
            if isinstance(f, ast.Attribute) and f.attr == "loadUI" and e.args and _module_of(path):
                return {ui_top_class(_module_of(path))}
        if isinstance(e, (ast.Tuple, ast.List)):
            return set()
        return set()

    def bind_call(self, call: ast.Call, env, path, cls):
        """Parameter types of functions/classes of these files from a call site."""
        f = call.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
        if name is None:
            return False
        key = f"{name}.__init__" if name in self.classes else name
        changed = False
        for _, fn, owner in self.functions.get(key, []):
            params = [a.arg for a in fn.args.args]
            if owner is not None:
                params = params[1:]
            for i, arg in enumerate(call.args):
                if i < len(params):
                    changed |= self._add(self.params, (key, params[i]), self.typeof(arg, env, path, cls))
            for kw in call.keywords:
                if kw.arg in params:
                    changed |= self._add(self.params, (key, kw.arg), self.typeof(kw.value, env, path, cls))
        return changed

    @staticmethod
    def _add(table, key, types) -> bool:
        types = {t for t in types if t}
        if not types or types <= table.get(key, set()):
            return False
        table.setdefault(key, set()).update(types)
        return True

    def walk_function(self, path, fn, owner, record: bool) -> bool:
        key = f"{owner}.{fn.name}" if owner else fn.name
        env = {a.arg: set(self.params.get((key, a.arg), set())) for a in fn.args.args}
        changed = False
        for node in _ordered(fn):
            if isinstance(node, ast.Assign):
                pairs = [(t, node.value) for t in node.targets]
                for target in node.targets:  # a, b = x, y
                    if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple) \
                            and len(target.elts) == len(node.value.elts):
                        pairs += list(zip(target.elts, node.value.elts))
                    elif isinstance(target, ast.Tuple) and isinstance(node.value, ast.Call) \
                            and isinstance(node.value.func, ast.Attribute) and ast.unparse(node.value.func.value) == "self":
                        ret = self.returns.get(f"{owner}.{node.value.func.attr}", [])
                        if len(ret) == len(target.elts):
                            for t_el, types in zip(target.elts, ret):
                                if isinstance(t_el, ast.Name) and types:
                                    env[t_el.id] = env.get(t_el.id, set()) | types
                for target, value in pairs:
                    t = self.typeof(value, env, path, owner)
                    if isinstance(target, ast.Name) and t:
                        env[target.id] = env.get(target.id, set()) | t
                    elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                            and target.value.id == "self" and owner:
                        changed |= self._add(self.attrs, (owner, target.attr), t)
            elif isinstance(node, ast.For) and isinstance(node.target, ast.Name) \
                    and isinstance(node.iter, (ast.Tuple, ast.List)):
                t = set().union(*(self.typeof(x, env, path, owner) for x in node.iter.elts)) \
                    if node.iter.elts else set()
                if t:
                    env[node.target.id] = t
            elif isinstance(node, ast.Return) and node.value is not None and owner:
                elts = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
                types = [self.typeof(x, env, path, owner) for x in elts]
                cur = self.returns.setdefault(key, [set() for _ in types])
                if len(cur) == len(types):
                    for c, t in zip(cur, types):
                        if not t <= c:
                            c.update(t)
                            changed = True
            elif isinstance(node, ast.Call):
                changed |= self.bind_call(node, env, path, owner)
            if record:
                self.record(node, env, path, owner)
        return changed

    def record(self, node, env, path, owner):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            t = self.typeof(node.func.value, env, path, owner)
            if node.func.attr == "connect" and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str) and "(" in node.args[0].value:
                if not t:
                    self.unresolved_connects.append(
                        f"{_rel(path)}:{node.lineno}: cannot tell the class of "
                        f"'{ast.unparse(node.func.value)}' connected to \"{node.args[0].value}\"")
                    return
                self.uses.append(Use(path, node.lineno, frozenset(t), "connect", "connect", node.args[0].value,
                                     ast.unparse(node.func)))
            elif t:
                self.uses.append(Use(path, node.lineno, frozenset(t), node.func.attr, "call",
                                     text=ast.unparse(node.func)))
        elif isinstance(node, ast.Attribute) and not (
                isinstance(getattr(node, "_parent", None), ast.Call) and node._parent.func is node):
            t = self.typeof(node.value, env, path, owner)
            if t:
                kind = "set" if isinstance(node.ctx, ast.Store) else "get"
                if isinstance(getattr(node, "_parent", None), ast.AugAssign):
                    kind = "set"
                self.uses.append(Use(path, node.lineno, frozenset(t), node.attr, kind, text=ast.unparse(node)))

    def run(self):
        for p, tree in self.trees.items():
            for n in ast.walk(tree):
                for child in ast.iter_child_nodes(n):
                    child._parent = n
        funcs = [(p, fn, owner) for lst in self.functions.values() for (p, fn, owner) in lst]
        for _ in range(6):  # to a fixed point
            if not any([self.walk_function(p, fn, owner, False) for p, fn, owner in funcs]):
                break
        for p, fn, owner in funcs:
            self.walk_function(p, fn, owner, True)
        return self


def _ordered(fn):
    """The nodes of a function in source order (assignments before later uses)."""
    nodes = [n for n in ast.walk(fn) if hasattr(n, "lineno")]
    return sorted(nodes, key=lambda n: (n.lineno, n.col_offset))


def check_python(tag: str, files=None) -> list[str]:
    scan = _Scan(tag, files).run()
    out = list(dict.fromkeys(scan.missing_widgets)) + list(scan.unresolved_connects)
    seen = set()
    for u in scan.uses:
        for cls in sorted(u.classes):
            info = resolve(tag, cls)
            if info is None:
                continue
            where = f"{_rel(u.path)}:{u.line} [{tag}]"
            msg = None
            if u.kind == "connect":
                if normalize_signature(u.signal) not in info.signals:
                    msg = f"{where}: {cls} has no signal \"{u.signal}\" ({u.text})"
            elif u.kind == "call":
                if u.attr in info.properties:
                    msg = (f"{where}: {u.text}() calls '{u.attr}', a property of {cls}: PythonQt returns its "
                           "value (properties shadow methods); read it without ()")
                elif u.attr not in info.callables():
                    msg = f"{where}: {cls} has no method/slot '{u.attr}' ({u.text})"
            elif u.kind == "set":
                if u.attr not in info.properties:
                    msg = f"{where}: {cls} has no property '{u.attr}' to set ({u.text})"
            elif u.attr not in info.members():
                msg = f"{where}: {cls} has no attribute '{u.attr}' ({u.text})"
            if msg and msg not in seen:
                seen.add(msg)
                out.append(msg)
    return out


def check_widget_tables() -> list[str]:
    """``*_WIDGETS = {param: widget name}`` tables name widgets of the module's .ui."""
    out = []
    for m in MODULES:
        names = ui_widgets(m)
        tree = ast.parse((ROOT / m / f"{m}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict) and any(
                    isinstance(t, ast.Name) and t.id.endswith("_WIDGETS") for t in node.targets):
                for v in node.value.values:
                    if isinstance(v, ast.Constant) and v.value not in names:
                        out.append(f"{m}/{m}.py:{node.lineno}: widget '{v.value}' is not in {m}.ui")
    return out


def check_slicer_python(tag: str, files=None) -> list[str]:
    """Names imported from / called in ``slicer.util``, ``slicer.ScriptedLoadableModule`` and
    ``slicer.parameterNodeWrapper`` exist at the tag, and calls pass only parameters they take."""
    pa = api()["tags"][tag]["python_api"]
    out = []
    for path in files or python_files():
        rel = _rel(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in pa:
                for alias in node.names:
                    if alias.name != "*" and alias.name not in pa[node.module]:
                        out.append(f"{rel}:{node.lineno} [{tag}]: {node.module} has no '{alias.name}'")
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                    and ast.unparse(node.value) in pa and ast.unparse(node.value).startswith("slicer."):
                module = pa[ast.unparse(node.value)]
                if node.attr not in module:
                    out.append(f"{rel}:{node.lineno} [{tag}]: {ast.unparse(node.value)} has no '{node.attr}'")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and ast.unparse(node.func.value) in pa and ast.unparse(node.func.value).startswith("slicer."):
                entry = pa[ast.unparse(node.func.value)].get(node.func.attr)
                if not entry or "params" not in entry:
                    continue
                name = ast.unparse(node.func)
                for kw in node.keywords:
                    if kw.arg is not None and kw.arg not in entry["params"] and not entry["varkw"]:
                        out.append(f"{rel}:{node.lineno} [{tag}]: {name}() takes no parameter '{kw.arg}'")
                if len(node.args) > len(entry["params"]) and not entry["varargs"] \
                        and not any(isinstance(a, ast.Starred) for a in node.args):
                    out.append(f"{rel}:{node.lineno} [{tag}]: {name}() takes at most {len(entry['params'])} "
                               f"positional arguments, given {len(node.args)}")
    return out


def check_extension_calls(files=None) -> list[str]:
    """Calls into other extensions' Python (the PyTorch extension's ``PyTorchUtils``) use names and
    keyword arguments that the recorded source has."""
    out = []
    for ext in api().get("extensions", {}).values():
        for module, names in ext["python_api"].items():
            for path in files or python_files():
                tree = ast.parse(path.read_text(encoding="utf-8"))
                for node in ast.walk(tree):
                    if isinstance(node, ast.Attribute) and ast.unparse(node.value) == module and node.attr not in names:
                        out.append(f"{_rel(path)}:{node.lineno}: {module} has no '{node.attr}'")
                    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                            and isinstance(node.func.value, ast.Call)):
                        continue
                    maker = ast.unparse(node.func.value.func)  # PyTorchUtils.PyTorchUtilsLogic().method(...)
                    if not maker.startswith(module + "."):
                        continue
                    cls = names.get(maker.split(".")[-1], {})
                    method = cls.get("methods", {}).get(node.func.attr)
                    if method is None:
                        out.append(f"{_rel(path)}:{node.lineno}: {maker} has no method '{node.func.attr}'")
                        continue
                    for kw in node.keywords:
                        if kw.arg not in method["params"] and not method["varkw"]:
                            out.append(f"{_rel(path)}:{node.lineno}: {maker}.{node.func.attr}() takes no '{kw.arg}'")
    return out


def mismatches(tag: str) -> list[str]:
    out = []
    for m in MODULES:
        out += check_ui(tag, m)
    return out + check_python(tag) + check_widget_tables() + check_slicer_python(tag) + check_extension_calls()


if __name__ == "__main__":
    import sys

    total = 0
    n_ui = [ET.parse(ui_file(m)).getroot() for m in MODULES]
    scan = _Scan(tags()[-1]).run()
    print(f"checked: {sum(len(list(r.iter('widget'))) for r in n_ui)} .ui widgets with "
          f"{sum(len(w.findall('property')) for r in n_ui for w in r.iter('widget'))} properties and "
          f"{sum(len(list(r.iter('connection'))) for r in n_ui)} connections; {len(scan.uses)} typed uses in "
          f"{len(python_files())} Python files ({sum(u.kind == 'connect' for u in scan.uses)} connect() signals)")
    for t in tags():
        found = mismatches(t)
        total += len(found)
        print(f"{t}: {len(found)} mismatch(es)")
        for line in found:
            print("  " + line)
    sys.exit(1 if total else 0)
