#!/usr/bin/env python3
"""Write Slicer's Qt-facing API as data: ``Testing/Data/slicer_qt_api.json``.

The 3D Slicer application cannot run here, so the panels' ``.ui`` files and the widget calls in the
module files are checked (``Testing/Python/test_slicer_api.py``) against what Slicer really offers to
Python at each supported release: the ``Q_PROPERTY``, signals, slots and ``Q_INVOKABLE`` methods that
Slicer's and CTK's C++ headers declare (PythonQt exposes exactly these for qMRML/qSlicer/ctk classes),
plus the Qt base classes' meta-objects.

Sources, read with git (no network at test time: the JSON is committed):

* Slicer/Slicer at each tag in ``TAGS``; CTK at the commit that tag pins in
  ``SuperBuild/External_CTK.cmake``;
* Qt: the meta-objects (properties, signals, slots) and public method names of Qt 5.15 classes, read
  from PyQt5's wrappers in a separate interpreter (``--qt-python``; PyQt5 is a developer tool for this
  script only, never a dependency of the extension). Slicer 5.8 and 5.10 are built with Qt 5.15;
  PythonQt's generated Qt wrappers expose the public methods of these classes.

Usage (developer machine; mirrors of the two repositories as bare git directories)::

    python3 -m venv /tmp/qtenv && /tmp/qtenv/bin/pip install PyQt5==5.15.11
    python scripts/slicer_api.py --slicer PATH/Slicer.git --ctk PATH/CTK.git --qt-python /tmp/qtenv/bin/python \
        --pytorch PATH/SlicerPyTorch.git
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

TAGS = ("v5.8.1", "v5.10.0")
OUT = Path(__file__).resolve().parents[1] / "Testing" / "Data" / "slicer_qt_api.json"

# Header folders whose QObject classes Python may meet in a panel (widgets, the application object).
SLICER_DIRS = ("Libs/MRML/Widgets", "Base/QTGUI", "Base/QTCore", "Base/QTApp",
               "Modules/Loadable/Segmentations/EditorEffects",
               "Modules/Loadable/Markups/Widgets", "Modules/Loadable/Segmentations/Widgets",
               "Modules/Loadable/Terminologies/Widgets", "Modules/Loadable/SubjectHierarchy/Widgets",
               "Modules/Loadable/Volumes/Widgets", "Modules/Loadable/Colors/Widgets")
CTK_DIRS = ("Libs/Widgets", "Libs/Core", "Libs/Visualization/VTK/Widgets", "Libs/Visualization/VTK/Core",
            "Libs/Scripting/Python/Widgets")

# Qt classes recorded besides the bases of the Slicer/CTK classes above: what .ui files and panels use.
QT_CLASSES = (
    "QObject", "QTimer", "QThread", "QWidget", "QFrame", "QAbstractButton", "QPushButton", "QToolButton",
    "QCheckBox", "QRadioButton", "QComboBox", "QLabel", "QLineEdit", "QTextEdit", "QPlainTextEdit",
    "QTextBrowser", "QAbstractSpinBox", "QSpinBox", "QDoubleSpinBox", "QAbstractSlider", "QSlider",
    "QScrollBar", "QProgressBar", "QAbstractScrollArea", "QScrollArea", "QAbstractItemView", "QTableView",
    "QTableWidget", "QListView", "QListWidget", "QTreeView", "QTreeWidget", "QGroupBox", "QTabWidget",
    "QStackedWidget", "QSplitter", "QDialog", "QMessageBox", "QFileDialog", "QInputDialog",
    "QDialogButtonBox", "QMainWindow", "QMenu", "QAction", "QLayout", "QBoxLayout", "QVBoxLayout",
    "QHBoxLayout", "QFormLayout", "QGridLayout", "QStackedLayout", "QButtonGroup", "QApplication",
    "QCoreApplication", "QGuiApplication", "QToolBar", "QStatusBar", "QDockWidget", "QHeaderView",
)
# PythonQt adds these to every wrapped QObject (PythonQt documentation: "Signals and slots",
# "Object wrapping"): connect/disconnect take a signal signature and a Python callable.
PYTHONQT_BUILTINS = ("connect", "disconnect", "className", "inherits", "help", "delete")

_MACROS = r"\b(?:Q_OBJECT|Q_GADGET|QVTK_OBJECT|Q_DISABLE_COPY|Q_DECLARE_PRIVATE|Q_DECLARE_PUBLIC|Q_ENUMS|Q_ENUM|" \
          r"Q_FLAGS|Q_FLAG|Q_DECLARE_FLAGS|Q_CLASSINFO|Q_PLUGIN_METADATA|Q_INTERFACES|Q_DECLARE_METATYPE|" \
          r"Q_DISABLE_COPY_MOVE|vtkTypeMacro|Q_REVISION)\b"
_ACCESS = re.compile(r"^\s*(?:(public|protected|private)\s*(slots|Q_SLOTS)?|(signals|Q_SIGNALS))\s*:(?!:)")
_BUILTIN_WORDS = {"unsigned", "signed", "int", "long", "short", "char", "bool", "double", "float", "void",
                  "const", "volatile", "struct", "class", "enum", "typename"}


# ------------------------------------------------------------------------------------------------
# C++ header reading (enough for Qt-style class declarations; not a C++ parser)
def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def _balanced(text: str, start: int, open_ch: str = "(", close_ch: str = ")") -> int:
    """Index just after the bracket that closes the one at ``start``."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == open_ch:
            depth += 1
        elif text[i] == close_ch:
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)


def _split_args(args: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in args:
        if ch in "<([{":
            depth += 1
        elif ch in ">)]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return [a.strip() for a in out if a.strip() and a.strip() != "void"]


def normalize_type(param: str) -> str:
    """A parameter declaration as Qt's normalized signature spells its type: no name, no default,
    ``const T&`` -> ``T``, ``unsigned int`` -> ``uint``, no spaces except inside templates' words."""
    param = param.split("=", 1)[0].strip()
    tokens = re.findall(r"[A-Za-z_][\w:]*(?:\s*<[^()]*>)?|[*&]", param)
    if len(tokens) > 1 and re.fullmatch(r"[A-Za-z_]\w*", tokens[-1]) and tokens[-1] not in _BUILTIN_WORDS \
            and any(t not in ("const", "volatile") for t in tokens[:-1]):
        tokens = tokens[:-1]  # the parameter's name
    const_ref = tokens[:1] == ["const"] and tokens[-1:] == ["&"]
    if const_ref:
        tokens = tokens[1:-1]
    text = " ".join(tokens)
    text = re.sub(r"\bunsigned int\b", "uint", text)
    text = re.sub(r"\s*([*&])", r"\1", text)
    text = re.sub(r"\s*([<>,])\s*", r"\1", text)
    return text.strip()


def _signatures(name: str, args: str) -> list[str]:
    """Every signature moc makes: one per number of trailing defaulted arguments left out."""
    parts = _split_args(args)
    types = [normalize_type(p) for p in parts]
    n_required = sum(1 for p in parts if "=" not in p)
    return [f"{name}({','.join(types[:n])})" for n in range(len(types), n_required - 1, -1)]


def parse_header(text: str) -> dict[str, dict]:
    """The QObject classes a header declares: bases, properties, signals, slots, invokables."""
    text = _strip_comments(text)
    classes = {}
    for m in re.finditer(r"\bclass\s+(?:\w+_EXPORT\s+)?(\w+)\s*(?:final\s*)?(:[^{;]*)?\{", text):
        name, bases_text = m.group(1), m.group(2) or ""
        body_start = m.end() - 1
        body = text[body_start + 1:_balanced(text, body_start, "{", "}") - 1]
        if not re.search(r"\b(Q_OBJECT|QVTK_OBJECT)\b", body):
            continue
        bases = [re.sub(r"<.*", "", b.split()[-1]) for b in bases_text.lstrip(":").split(",")
                 if b.strip().startswith("public")]
        props = {}
        while True:
            p = re.search(r"\bQ_PROPERTY\s*\(", body)
            if not p:
                break
            end = _balanced(body, p.end() - 1)
            decl = body[p.end():end - 1]
            words = re.match(r"\s*(.+?)\s+(\w+)\s+(READ|MEMBER)\b", decl, re.S)
            if words:
                props[words.group(2)] = normalize_type(words.group(1))
            body = body[:p.start()] + body[end:]
        body = re.sub(_MACROS + r"\s*(\([^()]*(\([^()]*\))?[^()]*\))?", " ", body)
        entry = {"bases": bases, "properties": dict(sorted(props.items())), "signals": [], "slots": [],
                 "invokables": [], "protected_slots": [], "enums": []}
        access, stmt = "private", ""
        i = 0
        while i < len(body):
            ch = body[i]
            if ch == "{":  # inline body or nested type: skip it, the statement ends here
                end = _balanced(body, i, "{", "}")
                head = " ".join(_ACCESS.sub("", stmt).split())
                if re.match(r"enum\b", head) and access == "public":  # PythonQt exposes the values
                    entry["enums"] += [v.split("=")[0].strip() for v in body[i + 1:end - 1].split(",")
                                       if re.match(r"\s*[A-Za-z_]\w*", v)]
                access = _statement(stmt, entry, access)
                stmt, i = "", end
                continue
            if ch == ";":
                access = _statement(stmt, entry, access)
                stmt = ""
            else:
                stmt += ch
                a = _ACCESS.match(stmt)
                if a and stmt.rstrip().endswith(":") and not stmt.rstrip().endswith("::"):
                    access = _access_name(a)
                    stmt = ""
            i += 1
        for key in ("signals", "slots", "invokables", "protected_slots", "enums"):
            entry[key] = sorted(set(entry[key]))
        classes[name] = entry
    return classes


def _access_name(a) -> str:
    if a.group(3):
        return "signals"
    return f"{a.group(1)} slots" if a.group(2) else a.group(1)


def _statement(stmt: str, entry: dict, access: str) -> str:
    while True:
        a = _ACCESS.match(stmt)
        if not a:
            break
        access = _access_name(a)
        stmt = stmt[a.end():]
    stmt = " ".join(stmt.split())
    if not stmt or re.match(r"(typedef|using|friend|enum|struct|class|template)\b", stmt):
        return access
    invokable = "Q_INVOKABLE" in stmt
    stmt = stmt.replace("Q_INVOKABLE", "").strip()
    f = re.search(r"(~?\w+)\s*\(", stmt)
    if not f or "operator" in stmt:
        return access
    name = f.group(1)
    args = stmt[f.end() - 1:_balanced(stmt, f.end() - 1)][1:-1]
    sigs = _signatures(name, args)
    if access == "signals":
        entry["signals"] += sigs
    elif access == "public slots":
        entry["slots"] += sigs
    elif access == "protected slots":
        entry["protected_slots"] += sigs
    elif invokable and access == "public":
        entry["invokables"] += sigs
    return access


def decorators(classes: dict[str, dict]) -> dict[str, list[str]]:
    """Methods PythonQt decorator classes (``*PythonQtDecorators``) add: a public slot
    ``static_<Class>_<name>(...)`` is a static method ``name`` of Class, ``name(Class* self, ...)`` an
    instance method (``new_``/``delete_`` slots are constructors/destructors)."""
    out: dict[str, set[str]] = {}
    for name, entry in classes.items():
        if "PythonQtDecorators" not in name:
            continue
        for sig in entry["slots"]:
            method, args = sig.split("(", 1)
            m = re.fullmatch(r"static_([A-Za-z0-9]+)_(\w+)", method)
            if m:
                out.setdefault(m.group(1), set()).add(m.group(2))
            elif not method.startswith(("new_", "delete_")) and args.split(",")[0].rstrip(")").endswith("*"):
                out.setdefault(args.split(",")[0].rstrip(")").rstrip("*").strip(), set()).add(method)
    return {k: sorted(v) for k, v in sorted(out.items())}


# ------------------------------------------------------------------------------------------------
# Slicer's Python package (slicer.util, slicer.ScriptedLoadableModule, slicer.parameterNodeWrapper)
PYTHON_MODULES = {"slicer.util": ("Base/Python/slicer/util.py",),
                  "slicer.ScriptedLoadableModule": ("Base/Python/slicer/ScriptedLoadableModule.py",),
                  "slicer.parameterNodeWrapper": "Base/Python/slicer/parameterNodeWrapper/"}


def _signature(fn) -> dict:
    a = fn.args
    return {"params": [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs],
            "varargs": a.vararg is not None, "varkw": a.kwarg is not None}


def python_api(sources: list[str]) -> dict:
    """Top-level functions (with parameter names) and classes (with methods) of Python sources."""
    import ast

    out = {}
    for text in sources:
        for node in ast.parse(text).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out[node.name] = _signature(node)
            elif isinstance(node, ast.ClassDef):
                out[node.name] = {"class": True, "methods": {
                    f.name: _signature(f) for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))}}
            elif isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Name):
                        out.setdefault(t.id, {"value": True})
    return dict(sorted(out.items()))


def read_python(slicer: Path, rev: str) -> dict:
    files = _git(slicer, "ls-tree", "-r", "--name-only", rev).splitlines()
    out = {}
    for module, where in PYTHON_MODULES.items():
        paths = [f for f in files if f.startswith(where) and f.endswith(".py")] if isinstance(where, str) \
            else list(where)
        out[module] = python_api([_git(slicer, "show", f"{rev}:{f}") for f in paths])
    return out


GENERIC_TEST = "Base/QTCore/Testing/Python/qSlicerModuleGenericTest.py.in"


def read_generic_test(slicer: Path, rev: str) -> dict:
    """The test methods of the generic module test WITH_GENERIC_TESTS generates, with their asserts."""
    import ast

    text = _git(slicer, "show", f"{rev}:{GENERIC_TEST}")
    tree = ast.parse(text.replace("@MODULENAME_LC@", "modulename_lc").replace("@MODULENAME@", "MODULENAME"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef))
    return {f.name: [ast.unparse(n) for n in ast.walk(f) if isinstance(n, ast.Call)
                     and ast.unparse(n.func).startswith("self.assert")]
            for f in cls.body if isinstance(f, ast.FunctionDef)}


TERMINOLOGY_DIR = "Modules/Loadable/Terminologies/Resources/"


def read_terminology(slicer: Path, rev: str) -> dict:
    """Slicer's bundled segmentation terminologies: context name -> category code -> type code -> meaning
    (codes as 'scheme^value', the form of a segment's TerminologyEntry tag)."""
    files = [f for f in _git(slicer, "ls-tree", "-r", "--name-only", rev).splitlines()
             if f.startswith(TERMINOLOGY_DIR + "SegmentationCategoryTypeModifier-") and f.endswith(".json")]
    out = {}
    for f in files:
        d = json.loads(_git(slicer, "show", f"{rev}:{f}"))
        ctx = out.setdefault(d["SegmentationCategoryTypeContextName"], {})
        for c in d["SegmentationCodes"]["Category"]:
            cat = ctx.setdefault(f"{c['CodingSchemeDesignator']}^{c['CodeValue']}", {})
            for t in c.get("Type", []):
                cat[f"{t['CodingSchemeDesignator']}^{t['CodeValue']}"] = t["CodeMeaning"]
    return out


# ------------------------------------------------------------------------------------------------
def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout


def _ctk_commit(slicer: Path, tag: str) -> str:
    text = _git(slicer, "show", f"{tag}:SuperBuild/External_CTK.cmake")
    m = re.search(r"Slicer_\$\{proj\}_GIT_TAG\s*\"([0-9a-f]{40})\"", text)
    if not m:
        raise SystemExit(f"no CTK revision found in {tag}:SuperBuild/External_CTK.cmake")
    return m.group(1)


def _python_version(slicer: Path, tag: str) -> str:
    m = re.search(r'set\(Slicer_REQUIRED_PYTHON_VERSION "([\d.]+)"\)', _git(slicer, "show", f"{tag}:CMakeLists.txt"))
    return m.group(1) if m else ""


def read_repo(repo: Path, rev: str, dirs: tuple[str, ...]) -> dict[str, dict]:
    files = _git(repo, "ls-tree", "-r", "--name-only", rev).splitlines()
    plugins = {Path(f).stem[:-len("Plugin")] for f in files
               if re.search(r"(DesignerPlugins|Plugins)/\w+Plugin\.h$", f)}
    classes = {}
    for f in files:
        if not f.endswith(".h") or str(Path(f).parent) not in dirs or "_p.h" in f or "Private" in Path(f).name:
            continue
        for name, entry in parse_header(_git(repo, "show", f"{rev}:{f}")).items():
            if name.endswith(("Private", "Plugin")):
                continue
            entry["header"] = Path(f).name
            entry["path"] = f
            entry["designer_plugin"] = name in plugins
            classes[name] = entry
    return classes


# ------------------------------------------------------------------------------------------------
# Qt meta-objects (run inside an interpreter that has PyQt5)
_QT_DUMP = r"""
import json, sys
from PyQt5 import QtCore, QtGui, QtWidgets
names = json.loads(sys.argv[1])
out = {}
todo = list(names)
kind = {0: "methods", 1: "signals", 2: "slots", 3: "constructors"}
while todo:
    n = todo.pop()
    if n in out:
        continue
    cls = getattr(QtWidgets, n, None) or getattr(QtCore, n, None) or getattr(QtGui, n, None)
    if cls is None or not hasattr(cls, "staticMetaObject"):
        continue
    mo = cls.staticMetaObject
    sup = mo.superClass()
    e = {"bases": [sup.className()] if sup is not None else [], "properties": {}, "signals": [], "slots": [],
         "invokables": [], "protected_slots": [], "methods": []}
    for i in range(mo.propertyOffset(), mo.propertyCount()):
        p = mo.property(i)
        e["properties"][p.name()] = p.typeName()
    for i in range(mo.methodOffset(), mo.methodCount()):
        m = mo.method(i)
        sig = bytes(m.methodSignature()).decode()
        if m.access() != QtCore.QMetaMethod.Public:
            if m.methodType() == QtCore.QMetaMethod.Slot and not sig.startswith("_q_"):
                e["protected_slots"].append(sig)
            continue
        key = {1: "signals", 2: "slots", 0: "invokables"}.get(int(m.methodType()))
        if key:
            e[key].append(sig)
    e["methods"] = sorted(k for k, v in vars(cls).items() if not k.startswith("_")
                          and not isinstance(v, (type, int, float, str)))  # methods (sip descriptors), signals
    e["enums"] = sorted(k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int))
    for k in ("signals", "slots", "invokables", "protected_slots"):
        e[k] = sorted(set(e[k]))
    out[n] = e
    todo += e["bases"]
print(json.dumps({"qt_version": QtCore.QT_VERSION_STR, "pyqt_version": QtCore.PYQT_VERSION_STR, "classes": out}))
"""


def read_qt(python: str, names: list[str]) -> dict:
    out = subprocess.run([python, "-c", _QT_DUMP, json.dumps(sorted(set(names)))], check=True,
                         capture_output=True, text=True, env={"QT_QPA_PLATFORM": "offscreen"}).stdout
    return json.loads(out)


def _dump(data, depth=0) -> str:
    """JSON with one line per class/function entry: small, and diffs between regenerations stay readable."""
    if isinstance(data, dict) and depth < 4 and any(isinstance(v, dict) for v in data.values()):
        pad = " " * (depth + 1)
        items = [f"{pad}{json.dumps(k)}: {_dump(v, depth + 1)}" for k, v in data.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}"
    return json.dumps(data, separators=(",", ":"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slicer", type=Path, required=True, help="git directory of Slicer/Slicer (with its tags)")
    ap.add_argument("--ctk", type=Path, required=True, help="git directory of commontk/CTK")
    ap.add_argument("--qt-python", required=True, help="a Python interpreter that has PyQt5 5.15")
    ap.add_argument("--pytorch", type=Path, help="git directory of SlicerPyTorch (PyTorchUtils, the torch installer)")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    tags, qt_names = {}, set(QT_CLASSES)
    for tag in TAGS:
        slicer_commit = _git(a.slicer, "rev-parse", f"{tag}^{{commit}}").strip()
        ctk_commit = _ctk_commit(a.slicer, tag)
        classes = read_repo(a.slicer, slicer_commit, SLICER_DIRS)
        classes.update(read_repo(a.ctk, ctk_commit, CTK_DIRS))
        for entry in classes.values():
            entry["source"] = "Slicer" if entry["path"].split("/")[0] in ("Libs", "Base", "Modules") \
                and not entry["header"].startswith("ctk") else "CTK"
        qt_names |= {b for e in classes.values() for b in e["bases"] if b.startswith("Q")}
        decorated = decorators(classes)
        tags[tag] = {"slicer_commit": slicer_commit, "ctk_commit": ctk_commit,
                     "python": _python_version(a.slicer, tag), "python_api": read_python(a.slicer, slicer_commit),
                     "terminology": read_terminology(a.slicer, slicer_commit),
                     "generic_module_test": read_generic_test(a.slicer, slicer_commit),
                     "decorators": decorated,
                     "classes": dict(sorted(classes.items()))}
        print(f"{tag}: Slicer {slicer_commit[:10]}, CTK {ctk_commit[:10]}, {len(classes)} classes", file=sys.stderr)
    qt = read_qt(a.qt_python, sorted(qt_names))
    print(f"Qt {qt['qt_version']} (PyQt5 {qt['pyqt_version']}): {len(qt['classes'])} classes", file=sys.stderr)
    data = {
        "generated_by": "scripts/slicer_api.py",
        "about": "Q_PROPERTY, signals, public slots, public Q_INVOKABLE methods and public enum values of Slicer's "
                 "and CTK's QObject classes as their headers declare them at each tag (CTK at the commit the tag "
                 "pins); Slicer's Python API (slicer.util, ScriptedLoadableModule, parameterNodeWrapper) and "
                 "bundled segmentation terminologies at each tag; Qt's meta-objects plus public method and enum "
                 "names (PyQt5's wrappers of Qt 5.15); the PyTorch extension's PyTorchUtils API.",
        "pythonqt_builtins": list(PYTHONQT_BUILTINS),
        "qt": {"qt_version": qt["qt_version"], "read_with": f"PyQt5 {qt['pyqt_version']}",
               "classes": dict(sorted(qt["classes"].items()))},
        "tags": tags,
    }
    if a.pytorch:
        commit = _git(a.pytorch, "rev-parse", "HEAD").strip()
        data["extensions"] = {"PyTorch": {"commit": commit, "python_api": {"PyTorchUtils": python_api(
            [_git(a.pytorch, "show", f"{commit}:PyTorchUtils/PyTorchUtils.py")])}}}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(_dump(data) + "\n")
    print(f"wrote {a.out} ({a.out.stat().st_size // 1024} KiB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
