"""The page: trame-slicer's viewer (axial, coronal, sagittal, 3D; segment list; Segment Editor paint/erase)
plus the MedSegSuite panels in its tool drawer, on one MRML scene per process."""
from __future__ import annotations

import asyncio
import inspect
import os
import sys
import threading
import time

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # headless rendering
# torchvision imports torch._dynamo, which loads triton's bundled LLVM; in a process where Mesa's llvmpipe
# (EGL rendering) has loaded its own LLVM that segfaults (seen here). Inference never needs triton (it is for
# torch.compile), so this process does without it.
sys.modules.setdefault("triton", None)

from trame.app import TrameApp  # noqa: E402
from trame_slicer import module as trame_slicer_module  # noqa: E402
from trame_slicer.app.logic import SegmentationAppLogic  # noqa: E402
from trame_slicer.app.ui import SegmentationAppUI  # noqa: E402
from trame_slicer.core import SlicerApp  # noqa: E402

from MedSegSuiteLib.jobs import JOB_TICK_MS  # noqa: E402

from .panels import CoSAMPanel, HubPanel, ScribblePanel, TTAPanel  # noqa: E402
from .structures_panel import StructuresPanel  # noqa: E402

POLL_S = 0.1        # the panels' loop when no job runs
POLL_BUSY_S = JOB_TICK_MS / 1000  # while one runs: the desktop panels' tick (a click's result is written at once)


def _tool(panel):
    """A drawer tool type (trame-slicer's drawer instantiates tool types) that builds one panel."""

    from trame.widgets import html

    class Tool(html.Div):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            with self:
                panel.build()

    Tool.__name__ = f"{type(panel).__name__}Tool"
    return Tool


class MedSegSuiteWebUI(SegmentationAppUI):
    def __init__(self, server, layout_manager, panels):
        super().__init__(server, layout_manager)
        self.panel_tools = {}
        with self.layout:
            self.layout.title.set_text("MedSegSuite")
            for name, icon, panel in panels:
                tool = _tool(panel)
                self.panel_tools[name] = tool
                with self.layout.drawer:
                    self._register_tool_ui(tool)
                with self.layout.toolbar:
                    self._panel_button(name, icon, tool)

    def _panel_button(self, name, icon, tool):
        """A toolbar button that opens/closes a panel, with the panel's name as its accessible name."""
        from trame_slicer.app.ui import ControlButton

        def toggle():
            show = not self.data.is_drawer_visible or self.data.active_tool != tool.__name__
            self.data.is_drawer_visible = show
            self.data.active_tool = tool.__name__ if show else None

        ControlButton(icon=icon, name=name, click=toggle, raw_attrs=[f'aria-label="{name}"'], active=(self._is_tool_active(tool),),
                      disabled=(f"!{self.name.is_volume_loaded}",), classes="mt-1")


class MedSegSuiteWebApp(TrameApp):
    """One scene, one backend, the panels. ``backend_mode`` 'local' runs jobs in this process (device
    ``device``); 'remote' sends them to ``server_url`` with ``api_key`` (kept server-side)."""

    def __init__(self, server=None, image=None, server_url=None, api_key=None, device="auto"):
        super().__init__(server)
        self.server.enable_module(trame_slicer_module)
        self.backend_mode = "remote" if server_url else "local"
        self.server_url, self.api_key, self.device = server_url, api_key, device
        self._backend, self._backend_lock = None, threading.Lock()
        self._child = None
        if self.backend_mode == "local":   # started now: it imports torch while the page loads
            from .backend_process import BackendProcess

            self._child = BackendProcess(device)
        self.slicer_app = SlicerApp()
        self._logic = SegmentationAppLogic(self.server, self.slicer_app)
        self.cosam, self.scribble, self.tta = CoSAMPanel(self), ScribblePanel(self), TTAPanel(self)
        self.hub = HubPanel(self)
        self.structures = StructuresPanel(self)
        self.panels = [self.cosam, self.scribble, self.tta, self.hub, self.structures]
        self._ui = MedSegSuiteWebUI(self.server, self._logic.layout_manager, [
            ("Self-correcting SAM", "mdi-auto-fix", self.cosam),
            ("Scribble segmentation", "mdi-draw", self.scribble),
            ("Test-time adaptation", "mdi-tune", self.tta),
            ("MedSegSuite backend", "mdi-server", self.hub),
            ("Structures (radiotherapy)", "mdi-format-list-checks", self.structures)])
        self._logic.set_ui(self._ui)
        self._give_effect_pipelines_their_views()
        self._keep_download_button()
        self.state.trame__title = "MedSegSuite"
        self.volume_node = None
        self._prediction = None
        self.load(image)
        self.server.controller.on_server_ready.add(self._start_polling)

    def _give_effect_pipelines_their_views(self) -> None:
        """trame-slicer 2.0.0 creates the Segment Editor effects' per-view pipelines while each view is being
        constructed, before its view manager lists it: they get no view, never create their brush widget,
        and Paint/Erase did nothing (press, drag and release reached them; seen here, also in trame-slicer's
        own SegmentationApp). Once the views exist, each pipeline gets its view."""
        views = self.slicer_app.view_manager
        for effect in self.slicer_app.segmentation_editor._effects.values():
            for ref in effect._pipelines:
                pipeline = ref()
                if pipeline is not None and getattr(pipeline, "_view", None) is None and pipeline.GetViewNode():
                    pipeline.SetView(views.get_view(pipeline.GetViewNode()))

    def _keep_download_button(self) -> None:
        """trame-slicer 2.0.0's Download Scene button hides itself while a flag is set: the browser sets it
        on click, the server clears it once the scene is written. The browser holds state changes back while
        it waits on the server, so the flag could reach the server after the download had ended; the
        server's 'clear' had changed nothing then, and the button was gone for good (CI lost it after one
        download). The flag is now cleared whenever it arrives with no download running."""
        button = self._ui.download_scene_button
        flag = str(button.typed_state.name.loading_busy)
        write = button._download_callback
        running = []

        async def download():
            running.append(True)
            try:
                result = write()
                return await result if inspect.isawaitable(result) else result
            finally:
                running.pop()

        button.set_download_callback(download)

        @self.state.change(flag)
        def _clear_when_idle(**_):
            if self.state[flag] and not running:
                self.state[flag] = False

    # -- backend --------------------------------------------------------------------------------
    def backend(self):
        """Created on first use (the first local job imports torch; the page stays responsive)."""
        with self._backend_lock:
            if self._backend is None:
                if self.backend_mode == "remote":
                    from medsegsuite.client import RemoteBackend

                    self._backend = RemoteBackend(self.server_url, api_key=self.api_key, client_name="medsegsuite-web")
                else:
                    self._backend = self._child.backend()
            return self._backend

    def close(self):
        if self._backend is not None:
            self._backend.close()
        if self._child is not None:
            self._child.stop()

    # -- scene ----------------------------------------------------------------------------------
    @property
    def scene(self):
        return self.slicer_app.scene

    def load(self, image=None) -> None:
        """Show ``image`` (a file or a DICOM folder), or LiTS-117 when none is given."""
        from MedSegSuiteLib.volumes import volume_to_node

        if image:
            from medsegsuite.io import read_image

            vol = read_image(image)
        else:
            from medsegsuite.sampledata import lits117_ct

            vol = lits117_ct()
            vol.name = "LiTS-117"
        node = volume_to_node(vol, self.scene, name=vol.name)
        self.volume_node = node
        self.slicer_app.display_manager.show_volume(node, do_reset_views=True)
        disp = node.GetDisplayNode()
        if disp is not None and float(vol.array.min()) < -500:  # CT: an abdominal window
            disp.SetAutoWindowLevel(False)
            disp.SetWindowLevel(400, 50)
        self._logic._load_files_logic.volume_loaded(node)   # the viewer's own "volume loaded" path
        # No volume rendering in the 3D view by default: on a CPU-rendered server (Mesa llvmpipe) it costs
        # seconds per frame on the event loop; the 3D view shows the segments' surfaces.
        for i in range(node.GetNumberOfDisplayNodes()):
            d = node.GetNthDisplayNode(i)
            if d is not None and d.IsA("vtkMRMLVolumeRenderingDisplayNode"):
                d.SetVisibility(False)

    def segmentation_node(self):
        return self.slicer_app.segmentation_editor.active_segmentation_node

    def prediction_node(self):
        """Where ScribbleSeg writes: its own node, never the scribbles."""
        from MedSegSuiteLib import segments

        if self._prediction is None or self._prediction.GetScene() is not self.scene:
            self._prediction = segments.new_segmentation_node(self.scene, "Scribble prediction")
            self._prediction.SetReferenceImageGeometryParameterFromVolumeNode(self.volume_node)
            self._prediction.CreateDefaultDisplayNodes()
        return self._prediction

    def segments_changed(self) -> None:
        """After an AI write: the segment list and views show the new segments (the editor's panel needs an
        active segment once segments exist)."""
        editor = self.slicer_app.segmentation_editor
        ids = editor.get_segment_ids() if editor.active_segmentation is not None else []
        if ids and editor.get_active_segment_id() not in ids:
            editor.set_active_segment_id(ids[0])
        editor.trigger_all_signals()
        for view in self.slicer_app.view_manager.get_views():
            view.schedule_render()

    def segment_names(self, node=None) -> list[str]:
        from MedSegSuiteLib import segments

        node = node or self.segmentation_node()
        return segments.segment_names(node) if node is not None else []

    def _watchdog(self, limit: float = 1.0):
        """Debugging aid (MEDSEGSUITE_WEB_WATCHDOG=1): print every thread's stack when the event loop has
        not ticked for ``limit`` seconds, i.e. when the page is frozen and by what."""
        import faulthandler

        def watch():
            while True:
                time.sleep(limit / 2)
                if time.monotonic() - self._tick > limit:
                    print(f"[watchdog] event loop stalled {time.monotonic() - self._tick:.1f} s", file=sys.stderr)
                    faulthandler.dump_traceback(all_threads=True)
                    time.sleep(5)

        self._tick = time.monotonic()
        threading.Thread(target=watch, daemon=True, name="watchdog").start()

    # -- the panels' loop (10 Hz; 50 Hz while a job runs) -----------------------------------------
    def _start_polling(self, **_):
        loop = asyncio.get_event_loop()
        loop.create_task(self._poll_loop())
        loop.run_in_executor(None, self._warm_up)

    def _warm_up(self):
        """Create the backend (imports torch for a local one) before the first click needs it."""
        try:
            self.backend()
        except Exception:  # noqa: BLE001 - the hub panel's Test connection reports it
            pass

    async def _poll_loop(self):
        if os.environ.get("MEDSEGSUITE_WEB_WATCHDOG"):
            self._watchdog()
        while True:
            self._tick = time.monotonic()
            with self.state:
                for p in self.panels:
                    try:
                        p.poll()
                    except Exception as e:  # noqa: BLE001 - a failing import shows as an error, the loop lives
                        if hasattr(p, "set"):
                            p.set(error=str(e))
            busy = any(p.logic.runner.busy for p in self.panels if hasattr(p, "logic"))
            await asyncio.sleep(POLL_BUSY_S if busy else POLL_S)
