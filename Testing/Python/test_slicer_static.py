"""What Slicer requires of the extension's files, checked without the Slicer application:

* the Python floor (3D Slicer 5.10 / Python 3.12; the backend >= 3.10) is stated in one place
  (``MedSegSuiteLib/supported.py``) and agrees with CMakeLists.txt, the help texts, README, docs and
  pyproject; every file parses at the floor's syntax; an older Slicer gets a clear message;
* the contract of Slicer's generated generic module tests (``qSlicerModuleGenericTest.py.in``);
* the top-level import graph: loading a module file needs only what Slicer bundles;
* the installed layout: the files CMake copies into ``lib/Slicer-X.Y/qt-scripted-modules/`` import and
  find their resources and shipped models from there alone.
"""
import ast
import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = ["MedSegSuite", "SelfCorrectingSAM", "ScribbleSeg", "TestTimeAdapt"]
LIB = ROOT / "MedSegSuite" / "MedSegSuiteLib"
BACKEND = ROOT / "MedSegSuite" / "medsegsuite"
sys.path.insert(0, str(ROOT / "MedSegSuite"))
from MedSegSuiteLib import supported  # noqa: E402

MODULE_FILES = [ROOT / m / f"{m}.py" for m in MODULES]


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path), feature_version=supported.MIN_PYTHON)
ALL_FILES = MODULE_FILES + sorted(LIB.rglob("*.py")) + sorted(BACKEND.rglob("*.py"))
# what an old Slicer must be able to read before the version check raises its message
GUARD_FILES = MODULE_FILES + [LIB / "__init__.py", LIB / "supported.py"]


# ------------------------------------------------------------------------------------------------
# Python floor
@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_parses_at_the_python_floor(path):
    _tree(path)  # ast.parse with feature_version = the floor


# standard-library names newer than the backend's floor (Python 3.10): syntax is checked by ast above
NEWER_STDLIB = {"tomllib": "3.11", "StrEnum": "3.11", "TaskGroup": "3.11", "ExceptionGroup": "3.11",
                "LiteralString": "3.11", "file_digest": "3.11", "batched": "3.12", "override": "3.12",
                "TypeAliasType": "3.12", "UTC": "3.11", "Self": "3.11", "NotRequired": "3.11"}


def _newer_names(tree) -> list[tuple[int, str]]:
    out = []
    for n in ast.walk(tree):
        names = []
        if isinstance(n, ast.Import):
            names = [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom) and n.module and n.module.split(".")[0] in sys.stdlib_module_names:
            names = [a.name for a in n.names]
        elif isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) \
                and n.value.id in ("datetime", "typing", "enum", "asyncio", "hashlib", "itertools"):
            names = [n.attr]
        out += [(n.lineno, x) for x in names if x in NEWER_STDLIB]
    return out


def test_no_standard_library_names_newer_than_the_floor():
    assert [x for _, x in _newer_names(ast.parse(
        "import tomllib\nfrom typing import Self\nimport datetime\nt = datetime.UTC\n"))] == ["tomllib", "Self", "UTC"]
    bad = [f"{path.relative_to(ROOT)}:{line}: {x} (Python {NEWER_STDLIB[x]})" for path in ALL_FILES
           for line, x in _newer_names(_tree(path))]
    assert not bad, "needs a Python newer than the floor:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", GUARD_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_old_slicer_reaches_the_version_message(path):
    """Slicer 5.8's Python 3.9 must parse these, so its users see 'needs Slicer 5.10', not a SyntaxError."""
    ast.parse(path.read_text(encoding="utf-8"), str(path), feature_version=(3, 9))


def test_version_check_message():
    with pytest.raises(ImportError, match=r"3D Slicer 5\.10 or later \(Python 3\.12\); this Python is 3\.9"):
        supported.check((3, 9, 10))
    supported.check((3, 10, 0))
    supported.check(sys.version_info)
    # MedSegSuiteLib runs the check on import, before anything else of the extension
    init = ast.parse((LIB / "__init__.py").read_text())
    calls = [n for n in init.body if isinstance(n, ast.Expr)]
    assert len(calls) == 2 and ast.unparse(calls[1]) == "_check_supported()"  # after the docstring


def test_floor_is_stated_everywhere_alike():
    major, minor = supported.MIN_SLICER
    slicer_floor = f"{major}.{minor}"
    python = f"{supported.SLICER_PYTHON[0]}.{supported.SLICER_PYTHON[1]}"
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert f'set(EXTENSION_MINIMUM_SLICER_VERSION "{slicer_floor}")' in cmake
    assert f'set(EXTENSION_MINIMUM_PYTHON_VERSION "{python}")' in cmake
    assert "find_package(Slicer ${EXTENSION_MINIMUM_SLICER_VERSION} REQUIRED)" in cmake
    assert "Slicer_REQUIRED_PYTHON_VERSION_DOT VERSION_LESS EXTENSION_MINIMUM_PYTHON_VERSION" in cmake
    description = re.search(r'set\(EXTENSION_DESCRIPTION "([^"]*)"\)', cmake).group(1)
    assert f"3D Slicer {slicer_floor} or later (Python {python})" in description
    for doc in ("README.md", "docs/slicer.md"):
        text = (ROOT / doc).read_text()
        assert f"3D Slicer {slicer_floor} or later" in text, doc
        assert not re.search(r"Slicer\s*(≥|>=)\s*5\.[0-8]\b", text), f"{doc} still promises an older Slicer"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'requires-python = ">={supported.MIN_PYTHON[0]}.{supported.MIN_PYTHON[1]}"' in pyproject
    # what Slicer really bundles at the floor tag (read from its CMakeLists.txt by scripts/slicer_api.py)
    import json

    tags = json.loads((ROOT / "Testing" / "Data" / "slicer_qt_api.json").read_text())["tags"]
    assert tags[f"v{slicer_floor}.0"]["python"].startswith(python + ".")
    assert all(tuple(map(int, t["python"].split(".")[:2])) < supported.MIN_PYTHON
               for tag, t in tags.items() if tuple(map(int, tag[1:].split(".")[:2])) < supported.MIN_SLICER)


# ------------------------------------------------------------------------------------------------
# Slicer's generated generic module test (WITH_GENERIC_TESTS -> qSlicer<Module>ModuleGenericTest.py)
class _Parent:
    """What ScriptedLoadableModule.__init__ gets: a qSlicerScriptedLoadableModule's Python face."""


# Every method of Slicer's generated generic test, and what covers it here. A new assertion in a
# future Slicer tag fails test_generic_test_is_fully_covered until it is looked at.
GENERIC_COVERAGE = {
    "setUp": "slicer.modules.<name lower>: module names unique case-insensitively (contract test below)",
    "test_file_attribute": "about the generated test file itself",
    "test_name_attribute": "about the generated test file itself",
    "test_module_valid": "module name = file name = class name = CMake MODULE_NAME (contract test below)",
    "test_application": "the application object: nothing in the extension",
    "test_settings": "the application's settings: nothing in the extension",
    "test_categories": "non-empty categories (contract test below)",
    "test_acknowledgementText": "non-empty acknowledgementText (contract test below)",
    "test_contributors": "non-empty contributors (contract test below)",
    "test_logic": "Slicer's C++ logic of a scripted module: nothing in the extension",
    "test_widgetRepresentation": "Widget class with setup() (contract test below); setup() itself runs under the "
                                 "PythonQt stand-in of the panel runtime tests and in Slicer (docs/slicer.md)",
    "test_setMRMLScene": "Slicer's C++ module object: nothing in the extension",
    "test_setCurrentModule": "selects the module (calls enter()): needs the application (docs/slicer.md)",
}


@pytest.mark.parametrize("tag", ["v5.8.1", "v5.10.0"])
def test_generic_test_is_fully_covered(tag):
    import json

    generic = json.loads((ROOT / "Testing" / "Data" / "slicer_qt_api.json").read_text())["tags"][tag]["generic_module_test"]
    assert set(generic) == set(GENERIC_COVERAGE), set(generic) ^ set(GENERIC_COVERAGE)
    asserts = {m: " ".join(a) for m, a in generic.items()}
    assert "self.module.acknowledgementText, ''" in asserts["test_acknowledgementText"]
    assert "self.module.name, 'MODULENAME'" in asserts["test_module_valid"]
    assert "hasattr(slicer.modules, 'modulename_lc')" in asserts["setUp"]


@pytest.mark.parametrize("name", MODULES)
def test_generic_module_test_contract(name):
    """Per qSlicerModuleGenericTest.py.in (v5.8.1 and v5.10.0 alike): ``slicer.modules.<name lower>``
    exists and its ``name`` is the module name (Slicer takes it from the file name, which must match the
    class and CMake's MODULE_NAME); categories, contributors and acknowledgementText are not empty;
    logic(), widgetRepresentation() and setMRMLScene work (the Widget's setup must run without a main
    window: the tests run with --no-main-window)."""
    cmake = (ROOT / name / "CMakeLists.txt").read_text()
    assert f"set(MODULE_NAME {name})" in cmake and "WITH_GENERIC_TESTS" in cmake
    assert "${MODULE_NAME}.py" in cmake
    tree = ast.parse((ROOT / name / f"{name}.py").read_text())
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    for suffix, base in (("", "ScriptedLoadableModule"), ("Widget", "ScriptedLoadableModuleWidget"),
                         ("Logic", "ScriptedLoadableModuleLogic"), ("Test", "ScriptedLoadableModuleTest")):
        assert name + suffix in classes, f"{name}.py lacks class {name + suffix}"
        assert base in [ast.unparse(b) for b in classes[name + suffix].bases]
    widget_methods = {f.name for f in classes[name + "Widget"].body if isinstance(f, ast.FunctionDef)}
    assert "setup" in widget_methods
    pytest.importorskip("slicer")
    sys.path.insert(0, str(ROOT / name))
    mod = __import__(name)
    parent = _Parent()
    getattr(mod, name)(parent)
    for attr in ("title", "helpText", "acknowledgementText"):
        assert isinstance(getattr(parent, attr), str) and getattr(parent, attr).strip(), attr
    assert parent.categories and all(isinstance(c, str) and c for c in parent.categories)
    assert parent.contributors and all(isinstance(c, str) and c for c in parent.contributors)
    assert supported.HELP in parent.helpText
    for dep in parent.dependencies:
        assert dep in MODULES or re.fullmatch(r"[A-Z]\w+", dep), dep
    # module names are unique case-insensitively (slicer.modules.<lower-case name>)
    assert len({m.lower() for m in MODULES}) == len(MODULES)


# ------------------------------------------------------------------------------------------------
# Top-level import graph
ALLOWED_THIRD_PARTY = {"numpy", "vtk", "vtkmodules", "qt", "ctk", "slicer"}  # what Slicer's own Python has (vtkmodules is VTK)
OWN = {"MedSegSuiteLib", "medsegsuite"} | set(MODULES)


def _top_level_imports(path: Path) -> list[tuple[str, int]]:
    """Modules imported when ``path`` is imported: module-level statements (also inside top-level
    if/try blocks), not inside functions or classes. Relative imports are resolved."""
    tree = _tree(path)
    package = _package_of(path)
    out = []

    def visit(stmts):
        for n in stmts:
            if isinstance(n, ast.Import):
                out.extend((a.name, n.lineno) for a in n.names)
            elif isinstance(n, ast.ImportFrom):
                if n.level:
                    parts = package.split(".")
                    base = parts[: len(parts) - n.level + 1]
                    mod = ".".join(base + ([n.module] if n.module else []))
                    out.append((mod, n.lineno))
                    if not n.module:
                        out.extend((f"{mod}.{a.name}", n.lineno) for a in n.names)
                else:
                    out.append((n.module, n.lineno))
                    out.extend((f"{n.module}.{a.name}", n.lineno) for a in n.names)
            elif isinstance(n, (ast.If, ast.Try, ast.With)):
                for field in ("body", "orelse", "finalbody"):
                    visit(getattr(n, field, []))
                for h in getattr(n, "handlers", []):
                    visit(h.body)

    visit(tree.body)
    return out


def _package_of(path: Path) -> str:
    """The package a file's relative imports start from ('' for a module file)."""
    if not path.is_relative_to(ROOT / "MedSegSuite") or path.parent == ROOT / "MedSegSuite":
        return ""
    return ".".join(path.parent.relative_to(ROOT / "MedSegSuite").parts)


def _file_of(module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] in MODULES and len(parts) == 1:
        return ROOT / parts[0] / f"{parts[0]}.py"
    base = ROOT / "MedSegSuite" / Path(*parts)
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


@pytest.mark.parametrize("name", MODULES)
def test_module_files_import_only_what_slicer_has(name):
    """Slicer imports every module file at start-up, before the user installs torch & co.: a module
    whose import chain (through MedSegSuiteLib/medsegsuite) reaches another package is missing from the
    module list. Imports inside functions are fine (they run after the dependency check)."""
    stdlib = set(sys.stdlib_module_names)
    seen, todo, bad = set(), [(ROOT / name / f"{name}.py", name)], []
    while todo:
        path, chain = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for mod, line in _top_level_imports(path):
            root = mod.split(".")[0]
            if root in OWN:
                f = _file_of(mod)
                if f is not None:
                    todo.append((f, f"{chain} -> {mod}"))
            elif root not in stdlib and root not in ALLOWED_THIRD_PARTY and root != "__future__":
                bad.append(f"{chain} -> {mod} ({path.relative_to(ROOT)}:{line})")
    assert not bad, "top-level imports outside stdlib/numpy/vtk/qt/ctk/slicer:\n" + "\n".join(bad)
    assert any(p.name == "slicerbase.py" for p in seen)  # the walk did follow the library


# ------------------------------------------------------------------------------------------------
# Installed layout
def _cmake_files(module_dir: Path) -> tuple[list[str], list[str]]:
    """SCRIPTS and RESOURCES that a module's CMakeLists.txt hands to slicerMacroBuildScriptedModule
    (the subset of CMake these files use: set(), file(GLOB_RECURSE ... RELATIVE ...), ${var})."""
    text = re.sub(r"#[^\n]*", "", (module_dir / "CMakeLists.txt").read_text())
    env = {"CMAKE_CURRENT_SOURCE_DIR": str(module_dir)}

    def expand(items):
        out = []
        for it in items:
            m = re.fullmatch(r"\$\{(\w+)\}", it)
            if m and isinstance(env.get(m.group(1)), list):
                out += env[m.group(1)]
            else:
                out.append(re.sub(r"\$\{(\w+)\}", lambda g: str(env[g.group(1)]), it))
        return out

    for cmd, args in re.findall(r"\b(set|file)\(([^)]*)\)", text):
        words = args.split()
        if cmd == "set":
            items = expand(words[1:])
            env[words[0]] = items[0] if len(items) == 1 and words[0] == "MODULE_NAME" else items
        elif words[0] in ("GLOB", "GLOB_RECURSE"):
            var, rest = words[1], words[2:]
            assert rest[0] == "RELATIVE"
            rel, patterns = Path(expand([rest[1]])[0]), expand(rest[2:])
            found = []
            for pat in patterns:
                glob = rel.rglob if words[0] == "GLOB_RECURSE" else rel.glob
                d, _, leaf = pat.rpartition("/")
                found += [str(p.relative_to(rel)) for p in (glob(leaf) if not d else (rel / d).rglob(leaf))
                          if p.is_file() and "__pycache__" not in p.parts]
            env[var] = sorted(found)
    call = re.search(r"slicerMacroBuildScriptedModule\(([^)]*)\)", text).group(1).split()
    scripts = expand(call[call.index("SCRIPTS") + 1:call.index("RESOURCES")])
    resources = expand([w for w in call[call.index("RESOURCES") + 1:] if w not in ("WITH_GENERIC_TESTS", "WITH_SUBDIR", "VERBOSE")])
    return scripts, resources


def install_like_slicer(dest: Path) -> Path:
    """Copy what CMake builds/installs: every module's SCRIPTS and RESOURCES into one flat
    ``lib/Slicer-X.Y/qt-scripted-modules/`` (ctkMacroCompilePythonScript keeps their relative paths),
    and the top-level Resources/Models beside them."""
    lib = dest / "lib" / f"Slicer-{supported.MIN_SLICER[0]}.{supported.MIN_SLICER[1]}" / "qt-scripted-modules"
    for m in MODULES:
        scripts, resources = _cmake_files(ROOT / m)
        for rel in scripts + resources:
            (lib / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / m / rel, lib / rel)
    top = (ROOT / "CMakeLists.txt").read_text()
    assert "install(DIRECTORY Resources/Models" in top and "Resources/Models/*" in top
    shutil.copytree(ROOT / "Resources" / "Models", lib / "Resources" / "Models")
    return lib


_PROBE = r"""
import importlib, json, os, sys
lib = sys.argv[1]
sys.path[:0] = [lib]
out = {}
for name in json.loads(sys.argv[2]):
    mod = importlib.import_module(name)
    out[name] = {"file": mod.__file__, "logic": type(getattr(mod, name + "Logic")()).__name__}
import MedSegSuiteLib, medsegsuite
from medsegsuite.models import registry
out["lib"] = MedSegSuiteLib.__file__
out["backend"] = medsegsuite.__file__
out["models"] = {e.id: str(e.base) for e in registry.default_registry().list()}
out["model_dirs"] = [str(p) for p in (registry.INSTALLED_MODELS,) if p.is_dir()]
print(json.dumps(out))
"""


def test_installed_layout_imports_from_qt_scripted_modules(tmp_path):
    pytest.importorskip("slicer")
    import json

    lib = install_like_slicer(tmp_path)
    for m in MODULES:  # what resourcePath() and the icons need
        assert (lib / f"{m}.py").is_file()
        assert (lib / "Resources" / "UI" / f"{m}.ui").is_file() and (lib / "Resources" / "Icons" / f"{m}.png").is_file()
    assert (lib / "MedSegSuiteLib" / "supported.py").is_file()
    assert (lib / "medsegsuite" / "resources" / "models" / "registry.json").is_file()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MEDSEGSUITE_HOME": str(tmp_path / "home")}
    # run from an empty folder with no repository on the path: only the installed copy can be found
    r = subprocess.run([sys.executable, "-c", _PROBE, str(lib), json.dumps(MODULES)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for m in MODULES:
        assert out[m]["file"] == str(lib / f"{m}.py") and out[m]["logic"] == f"{m}Logic"
    assert out["lib"].startswith(str(lib)) and out["backend"].startswith(str(lib))
    assert out["model_dirs"] == [str(lib / "Resources" / "Models")]
    shipped = {e["id"] for p in (ROOT / "Resources" / "Models").glob("*.registry.json")
               for e in json.loads(p.read_text())}
    assert shipped and all(out["models"].get(i) == str(lib / "Resources" / "Models") for i in shipped), out["models"]


# ------------------------------------------------------------------------------------------------
# The top-level CMakeLists.txt, configured against a stand-in Slicer package
_STUB_CONFIG = """
set(Slicer_USE_FILE "${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake")
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR "lib/Slicer-@MM@/qt-scripted-modules")
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR "lib/Slicer-@MM@/qt-scripted-modules")
set(Slicer_REQUIRED_PYTHON_VERSION "@PY@")
string(REGEX MATCH "^[0-9]+\\\\.[0-9]+" Slicer_REQUIRED_PYTHON_VERSION_DOT "@PY@")
set(Slicer_EXTENSION_GENERATE_CONFIG "${CMAKE_CURRENT_LIST_DIR}/Empty.cmake")
set(Slicer_EXTENSION_CPACK "${CMAKE_CURRENT_LIST_DIR}/Empty.cmake")
"""
_STUB_VERSION = """
set(PACKAGE_VERSION "@V@")
if(PACKAGE_VERSION VERSION_LESS PACKAGE_FIND_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
endif()
"""
_STUB_USE = """
macro(slicerMacroBuildScriptedModule)
  message(STATUS "stub scripted module: ${ARGN}")
endmacro()
macro(slicer_add_python_unittest)
endmacro()
"""


def _configure(tmp_path: Path, version: str, python: str):
    stub = tmp_path / f"slicer-{version}"
    stub.mkdir()
    mm = ".".join(version.split(".")[:2])
    (stub / "SlicerConfig.cmake").write_text(_STUB_CONFIG.replace("@MM@", mm).replace("@PY@", python))
    (stub / "SlicerConfigVersion.cmake").write_text(_STUB_VERSION.replace("@V@", version))
    (stub / "UseSlicer.cmake").write_text(_STUB_USE)
    (stub / "Empty.cmake").write_text("")
    build = tmp_path / "build"  # one build folder: the compiler checks run once
    r = subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), f"-DSlicer_DIR={stub}", "-DBUILD_TESTING=OFF"],
                       capture_output=True, text=True, timeout=180)
    return r, build / f"lib/Slicer-{mm}/qt-scripted-modules"


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed")
def test_cmake_floor_and_build_tree_models(tmp_path):
    """Configuring against Slicer 5.10 (Python 3.12) works and puts Resources/Models where build-tree
    ctests look; Slicer 5.8.1 (Python 3.9.10) is refused at configure time with the floor in the message."""
    r, _ = _configure(tmp_path, "5.8.1", "3.9.10")
    assert r.returncode != 0 and "5.10" in r.stderr, r.stderr[-2000:]
    r, _ = _configure(tmp_path, "5.11.0", "3.9.10")  # a Slicer built with an older Python
    assert r.returncode != 0 and "MedSegSuite needs 3D Slicer >= 5.10 with Python >= 3.12" in r.stderr, r.stderr[-2000:]
    r, lib = _configure(tmp_path, "5.10.0", "3.12.10")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    shipped = sorted(p.name for p in (ROOT / "Resources" / "Models").iterdir())
    assert sorted(p.name for p in (lib / "Resources" / "Models").iterdir()) == shipped
