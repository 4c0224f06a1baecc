"""The panels against Slicer's real Qt/Python API at every supported tag (no Slicer application, no network).

``Testing/Data/slicer_qt_api.json`` is Slicer's and CTK's headers and Qt's meta-objects as data, written by
``scripts/slicer_api.py``; ``slicer_api_check`` compares every .ui file, ``connect()`` signal, widget
attribute/method and ``slicer.util`` call of the extension with it. The checker itself is tested on
broken copies, so a harness that stopped seeing mistakes would fail here too.
"""
import re
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slicer_api_check as chk  # noqa: E402

TAGS = ("v5.8.1", "v5.10.0")
ROOT = chk.ROOT


def test_api_data_names_its_sources():
    data = chk.api()
    assert tuple(data["tags"]) == TAGS
    python = {"v5.8.1": "3.9.10", "v5.10.0": "3.12.10"}  # Slicer_REQUIRED_PYTHON_VERSION at each tag
    for tag, t in data["tags"].items():
        assert re.fullmatch(r"[0-9a-f]{40}", t["slicer_commit"]) and re.fullmatch(r"[0-9a-f]{40}", t["ctk_commit"])
        assert t["python"] == python[tag]
        combo = chk.resolve(tag, "qMRMLNodeComboBox")  # facts from the headers, checked by hand
        assert {"nodeTypes", "noneEnabled", "addEnabled"} <= set(combo.properties)
        assert "currentNodeChanged(vtkMRMLNode*)" in combo.signals and "setMRMLScene(vtkMRMLScene*)" in combo.slots
        assert "currentNode()" in combo.invokables and "QWidget" in combo.chain and "enabled" in combo.properties
        assert chk.resolve(tag, "ctkCollapsibleButton").chain[:2] == ["ctkCollapsibleButton", "QAbstractButton"]
        assert "mrmlSceneChanged(vtkMRMLScene*)" in chk.resolve(tag, "qMRMLWidget").signals
        assert "startupCompleted()" in chk.resolve(tag, "qSlicerApplication").signals
        assert "pip_install" in t["python_api"]["slicer.util"]
        # PythonQt decorators (qSlicerBaseQTCorePythonQtDecorators.h): slicer.app.testingEnabled()
        assert "testingEnabled" in chk.resolve(tag, "qSlicerApplication").callables()
    assert data["qt"]["qt_version"].startswith("5.15.")
    assert "timeout()" in chk.resolve("v5.10.0", "QTimer").signals


@pytest.mark.parametrize("tag", TAGS)
def test_no_mismatch_with_slicer(tag):
    found = chk.mismatches(tag)
    assert not found, f"{len(found)} mismatch(es) with Slicer {tag}:\n" + "\n".join(found)


def test_signature_normalisation_matches_qt():
    gen = chk._generator()
    assert gen.normalize_type("const QString& nodeID") == "QString"
    assert gen.normalize_type("vtkMRMLNode* node") == "vtkMRMLNode*"
    assert gen.normalize_type("unsigned int n") == "uint"
    assert gen.normalize_type("const QList<int> &ids") == "QList<int>"
    assert gen.normalize_type("bool") == "bool"
    assert chk.normalize_signature("currentNodeChanged( vtkMRMLNode * )") == "currentNodeChanged(vtkMRMLNode*)"


def test_header_reader():
    header = """
    #include <QWidget>
    class QMRML_WIDGETS_EXPORT qFoo : public qBar, public ctkVTKObject
    {
      Q_OBJECT
      QVTK_OBJECT
      Q_PROPERTY(QStringList nodeTypes READ nodeTypes WRITE setNodeTypes)
      Q_PROPERTY(bool on READ isOn WRITE setOn NOTIFY onChanged)
    public:
      typedef qBar Superclass;
      explicit qFoo(QWidget* parent = nullptr);
      Q_INVOKABLE vtkMRMLNode* currentNode() const;
      void notExposed(int a);
      inline bool isOn() const { return true; }
    public slots:
      void setOn(bool on);
      virtual void select(const QString& id, int level = 0);
    signals:
      void onChanged(bool);
    protected slots:
      void hidden();
    private:
      Q_DECLARE_PRIVATE(qFoo);
    };
    """
    c = chk._generator().parse_header(header)["qFoo"]
    assert c["bases"] == ["qBar", "ctkVTKObject"]
    assert c["properties"] == {"nodeTypes": "QStringList", "on": "bool"}
    assert c["invokables"] == ["currentNode()"]
    assert c["slots"] == ["select(QString)", "select(QString,int)", "setOn(bool)"]
    assert c["signals"] == ["onChanged(bool)"] and c["protected_slots"] == ["hidden()"]


def test_checker_finds_ui_mistakes(tmp_path):
    ui = (ROOT / "SelfCorrectingSAM" / "Resources" / "UI" / "SelfCorrectingSAM.ui").read_text()
    bad = ui.replace('<property name="noneEnabled">', '<property name="noneEnable">', 1)
    bad = bad.replace("<signal>mrmlSceneChanged(vtkMRMLScene*)</signal>", "<signal>sceneChanged(vtkMRMLScene*)</signal>", 1)
    bad = bad.replace("<slot>setMRMLScene(vtkMRMLScene*)</slot>", "<slot>setMRMLScene(vtkMRMLNode*)</slot>", 1)
    bad = bad.replace("<header>qMRMLNodeComboBox.h</header>", "<header>qMRMLNodeCombo.h</header>")
    bad = re.sub(r'(<property name="collapsed">\s*)<bool>(\w+)</bool>', r"\1<string>\2</string>", bad, count=1)
    bad = bad.replace('class="QSpinBox"', 'class="QSpinBoxx"', 1)
    bad = bad.replace("<enum>Qt::Horizontal</enum>", "<enum>QSlider::Sideways</enum>", 1)
    assert bad.count("QSpinBoxx") == 1
    path = tmp_path / "SelfCorrectingSAM.ui"
    path.write_text(bad)
    found = "\n".join(chk.check_ui("v5.10.0", "SelfCorrectingSAM", path))
    for expected in ("no property 'noneEnable'", "no signal sceneChanged", "no slot setMRMLScene(vtkMRMLNode*)",
                     "header qMRMLNodeCombo.h", "class QSpinBoxx", "not declared in <customwidgets>",
                     "QSlider has no enum value Sideways"):
        assert expected in found, found
    assert "collapsed is bool, the .ui gives <string>" in found


def test_checker_finds_python_mistakes(tmp_path):
    src = (ROOT / "SelfCorrectingSAM" / "SelfCorrectingSAM.py").read_text()
    mistakes = '''
    def brokenOnPurpose(self):
        self.ui.applyButton.connect("clikced(bool)", self.onApply)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLScene*)", self.onApply)
        self.ui.modelComboBox.count()
        self.ui.statusLabel.txt = "x"
        n = self.ui.roundSlider.maximumValue
        timer = qt.QTimer()
        timer.connect("timedout()", self.onApply)
        box = slicer.qMRMLNodeComboBox()
        box.setNodeType("vtkMRMLScalarVolumeNode")
        slicer.util.tryWithErrorDisplay("x", waitCursr=True)
        slicer.util.noSuchHelper()
        qt.QFileDialog.getOpenFileNames2(None)
        mode = qt.QLineEdit.Passwort
'''
    marker = "    def enter(self):"
    assert marker in src
    path = tmp_path / "SelfCorrectingSAM.py"  # same module name: checked against SelfCorrectingSAM.ui
    path.write_text(src.replace(marker, mistakes + "\n" + marker, 1) + "\nfrom slicer.util import noSuchThing\n")
    found = "\n".join(chk.check_python("v5.10.0", [path]) + chk.check_slicer_python("v5.10.0", [path]))
    for expected in ('no signal "clikced(bool)"', 'no signal "currentNodeChanged(vtkMRMLScene*)"',
                     "calls 'count', a property of QComboBox", "QLabel has no property 'txt'",
                     "QSlider has no attribute 'maximumValue'", 'QTimer has no signal "timedout()"',
                     "qMRMLNodeComboBox has no method/slot 'setNodeType'",
                     "tryWithErrorDisplay() takes no parameter 'waitCursr'", "slicer.util has no 'noSuchHelper'",
                     "slicer.util has no 'noSuchThing'", "QFileDialog has no method/slot 'getOpenFileNames2'",
                     "QLineEdit has no attribute 'Passwort'"):
        assert expected in found, found
    # the same file without the mistakes is clean
    shutil.copy(ROOT / "SelfCorrectingSAM" / "SelfCorrectingSAM.py", path)
    assert chk.check_python("v5.10.0", [path]) == []


def test_widget_tables_name_ui_widgets():
    assert chk.check_widget_tables() == []
    assert "modelComboBox" in chk.ui_widgets("SelfCorrectingSAM")


def test_checker_follows_shared_widget_bases(tmp_path):
    """A library base class's ``self.ui`` is every deriving panel's .ui; getattr(self.ui, f"...") and
    helpers returning widgets are followed."""
    lib = tmp_path / "sharedpanel.py"
    lib.write_text('''
class SharedPanel:
    def setupPanel(self):
        self.ui.applyButton.connect("clikced(bool)", self.onApply)
        self.ui.noSuchWidget.enabled = True
''')
    mod = tmp_path / "SelfCorrectingSAM.py"
    mod.write_text('''
class SelfCorrectingSAMWidget(SharedPanel):
    def setup(self):
        combo, label = self.pair("model")
        combo.count()
        label.txt = ""
    def pair(self, word):
        return getattr(self.ui, f"{word}ComboBox"), self.ui.statusLabel
''')
    found = "\n".join(chk.check_python("v5.10.0", [lib, mod]))
    for expected in ('QPushButton has no signal "clikced(bool)"', "uses self.ui.noSuchWidget, which SelfCorrectingSAM.ui",
                     "calls 'count', a property of QComboBox", "QLabel has no property 'txt'"):
        assert expected in found, found


def test_checker_checks_calls_into_the_pytorch_extension(tmp_path):
    ext = chk.api()["extensions"]["PyTorch"]
    assert re.fullmatch(r"[0-9a-f]{40}", ext["commit"])
    params = ext["python_api"]["PyTorchUtils"]["PyTorchUtilsLogic"]["methods"]["installTorch"]["params"]
    assert {"askConfirmation", "torchVersionRequirement", "torchvisionVersionRequirement"} <= set(params)
    assert chk.check_extension_calls() == []  # MedSegSuiteLib/dependencies.py's call fits
    bad = tmp_path / "x.py"
    bad.write_text("import PyTorchUtils\nPyTorchUtils.PyTorchUtilsLogic().installTorch(torchVersion='>=2')\n"
                   "PyTorchUtils.PyTorchUtilsLogic().setupTorch()\n")
    found = "\n".join(chk.check_extension_calls([bad]))
    assert "installTorch() takes no 'torchVersion'" in found and "has no method 'setupTorch'" in found
