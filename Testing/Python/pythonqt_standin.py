"""A recording stand-in for what the panels' Widget code takes from the Slicer application: PythonQt's
``qt`` and ``ctk`` modules, ``slicer.util``'s GUI helpers, ``slicer.ScriptedLoadableModule``,
``slicer.app`` and ``slicer.mrmlScene`` (a real slicer-core scene).

It is not Qt: widgets are plain objects built from the panel's real ``.ui`` file (class, name and the
initial properties the file sets), signals are lists of Python callables (``connect``/``emit``),
and every message box is recorded instead of shown. ``QTimer``s never fire by themselves: a test
calls :meth:`StandIn.fire` (the Qt event loop's role), so it controls and times each GUI tick.
What it cannot check (rendering, real Qt signal signatures, layouts) is listed in docs/slicer.md.
"""
from __future__ import annotations

import contextlib
import importlib
import sys
import threading
import types
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PANEL_MODULES = ("MedSegSuite", "SelfCorrectingSAM", "ScribbleSeg", "TestTimeAdapt")


# -- widgets -------------------------------------------------------------------------------------
class Widget:
    """One widget of a .ui file: properties as attributes, signals as lists of slots, and every other
    method call recorded in ``calls`` (returning None)."""

    DEFAULTS = {"text": "", "enabled": True, "visible": True, "toolTip": "", "checked": False, "value": 0,
                "maximum": 99, "minimum": 0, "collapsed": False, "styleSheet": "", "placeholderText": ""}

    def __init__(self, cls: str, name: str, props: dict | None = None):
        d = self.__dict__
        d["className"], d["objectName"] = cls, name
        d["props"] = dict(props or {})
        d["slots"], d["calls"], d["children"] = {}, [], {}
        d["_blocked"] = False

    # properties
    def __getattr__(self, name):
        props = self.__dict__["props"]
        if name in props:
            return props[name]
        if name in self.DEFAULTS:
            return self.DEFAULTS[name]
        if name[:1].isupper():  # enum constants such as ForcePlaceMultipleMarkups
            return name

        def method(*args, **kwargs):
            self.__dict__["calls"].append((name, args, kwargs))
        return method

    def __setattr__(self, name, value):
        self.__dict__["props"][name] = value

    # signals
    def connect(self, signal: str, slot):
        assert "(" in signal and signal.endswith(")"), f"not a Qt signal signature: {signal}"
        self.slots.setdefault(signal, []).append(slot)
        return True

    def disconnect(self, signal: str, slot=None):
        self.slots[signal] = [s for s in self.slots.get(signal, []) if slot is not None and s != slot]

    def emit(self, signal: str, *args):
        if self._blocked:
            return
        for slot in list(self.slots.get(signal, [])):
            _call_slot(slot, args)

    def blockSignals(self, block):  # noqa: N802 - Qt's name
        self.__dict__["_blocked"] = bool(block)

    # widget-specific behaviour the panels rely on
    def click(self):
        self.emit("clicked(bool)", False)
        self.emit("clicked()")

    def setRange(self, lo, hi):  # noqa: N802
        self.minimum, self.maximum = lo, hi

    def setMRMLScene(self, scene):  # noqa: N802
        self.props["mrmlScene"] = scene


def _call_slot(slot, args):
    """PythonQt passes a signal's arguments to a Python slot only as far as the slot takes them (the
    scripted-module template connects ``clicked(bool)`` to ``def onApplyButton(self)``)."""
    import inspect

    try:
        params = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return slot(*args)
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return slot(*args)
    n = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
    return slot(*args[:n])


class NodeComboBox(Widget):
    def currentNode(self):  # noqa: N802
        return self.props.get("currentNode")

    def setCurrentNode(self, node):  # noqa: N802
        if self.props.get("currentNode") is not node:
            self.props["currentNode"] = node
            self.emit("currentNodeChanged(vtkMRMLNode*)", node)
            self.emit("currentNodeChanged(bool)", node is not None)


class ComboBox(Widget):
    def __init__(self, cls, name, props=None, items=()):
        super().__init__(cls, name, props)
        self.__dict__["items"] = [(t, None) for t in items]
        self.props.setdefault("currentIndex", 0 if items else -1)
        self.__dict__["editText"] = None

    @property
    def currentText(self):  # noqa: N802
        if self.editText is not None:
            return self.editText
        i = self.props["currentIndex"]
        return self.items[i][0] if 0 <= i < len(self.items) else ""

    @property
    def currentData(self):  # noqa: N802
        i = self.props["currentIndex"]
        return self.items[i][1] if 0 <= i < len(self.items) else None

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name == "currentIndex":
            self.__dict__["editText"] = None
            self.emit("currentIndexChanged(int)", value)

    def addItem(self, text, data=None):  # noqa: N802
        self.items.append((text, data))
        if self.props["currentIndex"] < 0:
            self.props["currentIndex"] = 0

    def clear(self):
        self.items.clear()
        self.props["currentIndex"] = -1

    def setEditText(self, text):  # noqa: N802
        self.__dict__["editText"] = text

    def count(self):
        return len(self.items)


class Layout:
    def __init__(self):
        self.widgets = []

    def addWidget(self, w, *args):  # noqa: N802
        self.widgets.append(w)

    def __getattr__(self, name):
        return lambda *a, **k: None


def _value(prop):
    child = list(prop)[0]
    tag, text = child.tag, (child.text or "")
    if tag == "bool":
        return text == "true"
    if tag == "number":
        return int(text)
    if tag == "double":
        return float(text)
    if tag == "stringlist":
        return [s.text or "" for s in child]
    if tag == "string":
        return text
    return text


def load_ui(path) -> Widget:
    """The .ui file's widgets as stand-ins; ``root.children`` maps names to them."""
    tree = ET.parse(path)
    top = tree.getroot().find("widget")
    root = Widget(top.get("class"), top.get("name"))
    for w in top.iter("widget"):
        props = {p.get("name"): _value(p) for p in w.findall("property") if list(p)}
        cls, name = w.get("class"), w.get("name")
        if cls == "qMRMLNodeComboBox":
            widget = NodeComboBox(cls, name, props)
        elif cls in ("QComboBox", "ctkComboBox"):
            items = [i.find("property/string").text or "" for i in w.findall("item")]
            widget = ComboBox(cls, name, props, items)
        else:
            widget = Widget(cls, name, props)
        root.children[name] = widget
    return root


# -- qt, ctk, slicer.util, ScriptedLoadableModule -------------------------------------------------
class StandIn:
    """Everything installed for one test; records what the GUI would have shown."""

    def __init__(self, scene):
        self.scene = scene
        self.timers: list = []
        self.errors: list[str] = []
        self.confirmations: list[str] = []
        self.confirm_answer = True
        self.gui_thread = threading.current_thread()
        self.reloaded: list[str] = []
        self.widgets: list = []

    def fire(self, rounds: int = 1):
        """One tick of every active QTimer (what Qt's event loop does every interval)."""
        for _ in range(rounds):
            for t in [t for t in self.timers if t.active]:
                for slot in list(t.slots):
                    _call_slot(slot, ())

    # qt -----------------------------------------------------------------------------------------
    def qt_module(self):
        standin = self
        qt = types.ModuleType("qt")

        class QTimer:
            def __init__(self, *_):
                self.active, self.interval, self.slots, self.singleShotTimer = False, 0, [], False
                standin.timers.append(self)

            def setInterval(self, ms):  # noqa: N802
                self.interval = ms

            def connect(self, signal, slot):
                assert signal == "timeout()"
                self.slots.append(slot)

            def start(self, *_):
                self.active = True

            def stop(self):
                self.active = False

            def isActive(self):  # noqa: N802
                return self.active

        class QTableWidgetItem:
            def __init__(self, text=""):
                self.text = text

        qt.QTimer = QTimer
        qt.QTableWidgetItem = QTableWidgetItem
        qt.QLineEdit = types.SimpleNamespace(Normal=0)
        qt.QFileDialog = types.SimpleNamespace(getOpenFileName=lambda *a: "")
        qt.QInputDialog = types.SimpleNamespace(getText=lambda *a: "")
        return qt

    # slicer.util --------------------------------------------------------------------------------
    def util_functions(self):
        standin = self

        def errorDisplay(text, *a, **k):  # noqa: N802
            standin.errors.append(str(text))

        def confirmOkCancelDisplay(text, *a, **k):  # noqa: N802
            standin.confirmations.append(str(text))
            return standin.confirm_answer

        @contextlib.contextmanager
        def tryWithErrorDisplay(message="", waitCursor=False):  # noqa: N802, N803
            try:
                yield
            except Exception as e:  # noqa: BLE001 - what Slicer does: show, do not raise
                standin.errors.append(f"{message}: {e}")

        def getModuleWidget(name):  # noqa: N802
            raise RuntimeError(f"no module widget {name} in the stand-in")

        return {"loadUI": load_ui, "childWidgetVariables": lambda root: types.SimpleNamespace(**root.children),
                "errorDisplay": errorDisplay, "confirmOkCancelDisplay": confirmOkCancelDisplay,
                "tryWithErrorDisplay": tryWithErrorDisplay, "getModuleWidget": getModuleWidget,
                "setSliceViewerLayers": lambda *a, **k: None, "pip_install": lambda *a, **k: None}

    def scripted_module(self):
        standin = self
        mod = types.ModuleType("slicer.ScriptedLoadableModule")
        import unittest

        class ScriptedLoadableModule:
            def __init__(self, parent):
                self.parent = parent

        class ScriptedLoadableModuleWidget:
            def __init__(self, parent=None):
                self.parent = parent
                self.moduleName = type(self).__name__[: -len("Widget")]

            def setup(self):
                self.layout = Layout()

            def resourcePath(self, filename):  # noqa: N802
                return str(Path(sys.modules[type(self).__module__].__file__).parent / "Resources" / filename)

            def onReload(self):  # noqa: N802 - Slicer reloads the module file here
                standin.reloaded.append(self.moduleName)

        class ScriptedLoadableModuleLogic:
            def __init__(self, parent=None):
                self.parent = parent
                self.moduleName = type(self).__name__[: -len("Logic")]

            def getParameterNode(self):  # noqa: N802 - Slicer's: one singleton node per module
                import slicer

                node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
                if node is None:
                    node = slicer.vtkMRMLScriptedModuleNode()
                    node.SetSingletonTag(self.moduleName)
                    node.SetAttribute("ModuleName", self.moduleName)
                    node = slicer.mrmlScene.AddNode(node)
                return node

        class ScriptedLoadableModuleTest(unittest.TestCase):
            def delayDisplay(self, message, msec=0):  # noqa: N802
                print(message)

        mod.ScriptedLoadableModule = ScriptedLoadableModule
        mod.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
        mod.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
        mod.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
        return mod


def parameter_node_wrapper(cls):
    """Stand-in for ``slicer.parameterNodeWrapper.parameterNodeWrapper`` for node-typed attributes:
    values are node references of the scripted module node, ``connectGui`` binds the node selectors
    whose ``SlicerParameterName`` names an attribute, both ways."""
    fields = dict(cls.__annotations__)

    class Wrapped:
        def __init__(self, node):
            self.__dict__["parameterNode"] = node
            self.__dict__["bound"] = []  # (widget, name): a parameter set in code shows in its widget

        def __getattr__(self, name):
            if name not in fields:
                raise AttributeError(name)
            return self.parameterNode.GetNodeReference(name)

        def __setattr__(self, name, value):
            if name not in fields:
                raise AttributeError(f"{cls.__name__} has no parameter {name}")
            self.parameterNode.SetNodeReferenceID(name, value.GetID() if value is not None else None)
            for w, bound_name in self.bound:
                if bound_name == name:
                    w.setCurrentNode(value)

        def connectGui(self, ui):  # noqa: N802
            tag = []
            for w in vars(ui).values():
                name = w.props.get("SlicerParameterName") if isinstance(w, Widget) else None
                if name in fields and isinstance(w, NodeComboBox):
                    w.setCurrentNode(getattr(self, name))

                    def write(node, name=name):
                        setattr(self, name, node)
                    w.connect("currentNodeChanged(vtkMRMLNode*)", write)
                    tag.append((w, write))
                    self.bound.append((w, name))
            return tag

        def disconnectGui(self, tag):  # noqa: N802
            for w, write in tag:
                w.slots["currentNodeChanged(vtkMRMLNode*)"].remove(write)
            self.bound.clear()

    Wrapped.__name__ = cls.__name__
    return Wrapped


def _ours(name: str) -> bool:
    return name == "MedSegSuiteLib" or name.startswith("MedSegSuiteLib.") or name in PANEL_MODULES


@contextlib.contextmanager
def installed(monkeypatch):
    """Install the stand-in; the library and panel modules are imported afresh (they pick their base
    classes when imported) and the earlier copies are put back afterwards."""
    import slicer

    from MedSegSuiteLib.scene import new_scene

    standin = StandIn(new_scene())
    saved = {k: v for k, v in sys.modules.items() if _ours(k)}
    for k in saved:
        del sys.modules[k]
    for name in PANEL_MODULES:
        path = str(ROOT / name)
        if path not in sys.path:
            monkeypatch.syspath_prepend(path)
    monkeypatch.setitem(sys.modules, "qt", standin.qt_module())
    monkeypatch.setitem(sys.modules, "ctk", types.ModuleType("ctk"))
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", standin.scripted_module())
    monkeypatch.setattr(slicer, "ScriptedLoadableModule", sys.modules["slicer.ScriptedLoadableModule"], raising=False)
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = parameter_node_wrapper
    monkeypatch.setitem(sys.modules, "slicer.parameterNodeWrapper", wrapper)
    monkeypatch.setattr(slicer, "parameterNodeWrapper", wrapper, raising=False)
    for k, v in standin.util_functions().items():
        monkeypatch.setattr(slicer.util, k, v, raising=False)
    monkeypatch.setattr(slicer, "mrmlScene", standin.scene, raising=False)
    monkeypatch.setattr(slicer, "qSlicerMarkupsPlaceWidget", types.SimpleNamespace(  # its enum, as PythonQt has it
        ForcePlaceSingleMarkup=1, ForcePlaceMultipleMarkups=2, HidePlaceMultipleMarkupsOption=0), raising=False)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(connect=lambda *a: None), raising=False)
    plots = types.SimpleNamespace(logic=lambda: types.SimpleNamespace(ShowChartInLayout=lambda chart: None))
    monkeypatch.setattr(slicer, "modules", types.SimpleNamespace(plots=plots), raising=False)
    try:
        yield standin
    finally:
        for w in standin.widgets:  # what Slicer does when it closes: widgets stop observing the scene
            w.cleanup()
        standin.scene.Clear(0)
        for k in [k for k in sys.modules if _ours(k)]:
            del sys.modules[k]
        sys.modules.update(saved)


def widget(standin: StandIn, name: str):
    """Build ``<name>Widget`` and run its setup(), as Slicer does when the module is first shown."""
    mod = importlib.import_module(name)
    w = getattr(mod, f"{name}Widget")(None)
    w.setup()
    standin.widgets.append(w)
    return w


@contextlib.contextmanager
def with_volume(monkeypatch, recorder, geometry):
    """:func:`installed`, with ``recorder`` as the panels' backend and a random volume node of ``geometry``
    (``standin.volume``) in the scene: the set-up every panel-widget test starts from."""
    import numpy as np

    with installed(monkeypatch) as standin:
        from MedSegSuiteLib import backends
        from MedSegSuiteLib.volumes import volume_to_node

        from medsegsuite.volume import Volume

        backends.set_backend(recorder)
        rng = np.random.default_rng(0)
        standin.volume = volume_to_node(Volume.from_geometry(rng.normal(size=geometry.shape).astype(np.float32),
                                                             geometry, "img"), standin.scene, "img")
        standin.backend = recorder
        try:
            yield standin
        finally:
            backends.reset_backend()
