"""The web panels: page widgets bound to the desktop modules' GUI-free logic.

Each panel owns one MethodLogic (the same class the desktop panel uses) and a slice of the trame state
(names prefixed by the panel). Jobs run on the backend's own thread; :meth:`Panel.poll`, called by the
app's 10 Hz loop on the event-loop thread, only reads the runner's state and writes MRML when a job ends,
so the page never waits on a job.
"""
from __future__ import annotations

from trame.widgets import html
from trame.widgets import vuetify3 as v3

from MedSegSuiteLib.jobs import Phase
from medsegsuite.errors import InputError
from medsegsuite.scribble.params import QUICK_SETTINGS
from MedSegSuiteLib.panel import button_text, status_text

from .modules import logic as module_logic

BUSY = (Phase.STARTING, Phase.RUNNING, Phase.IMPORTING)


class Panel:
    """Shared part: one logic, Apply <-> Cancel, progress and status text, errors in the page."""

    PREFIX = ""
    MODULE = ""
    TITLE = ""
    RUN_TEXT = "Apply"

    def __init__(self, app):
        self.app = app
        self.logic = module_logic(self.MODULE, backend_provider=app.backend)
        self._was_busy = False
        self._job_shown = None  # (phase, percent, status text) last written to the page
        self.set(status="", busy=False, progress=0, run_text=self.RUN_TEXT, error="")

    # -- state helpers --------------------------------------------------------------------------
    def key(self, name: str) -> str:
        return f"{self.PREFIX}_{name}"

    def set(self, **values) -> None:
        for k, v in values.items():
            self.app.state[self.key(k)] = v

    def get(self, name: str):
        return self.app.state[self.key(name)]

    def trigger(self, fn) -> str:
        """A JS click handler that calls ``fn`` on the server."""
        return f"trigger('{self.app.server.trigger_name(fn)}')"

    # -- jobs -----------------------------------------------------------------------------------
    def run_or_cancel(self) -> None:
        if self.logic.runner.busy or self._starting:
            self.logic.cancel()
            return
        self.launch(self.start)

    _starting = False

    def launch(self, fn, *args) -> None:
        """Start a job off the event loop: reading the volume, hashing it and (first time) importing torch
        take seconds, and the page must keep answering meanwhile."""
        import asyncio

        self._starting = True
        self._was_busy = True  # its end is handled even when the job is over before the next poll sees it run
        self.set(busy=True, error="", status="Starting…", run_text="Cancel")

        def work():
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - every refusal is shown in the page, nothing is lost
                self._start_error = str(e)
            finally:
                self._starting = False

        self._start_error = None
        asyncio.get_event_loop().run_in_executor(None, work)

    def start(self) -> None:
        raise NotImplementedError

    def poll(self) -> None:
        if self._starting:
            return
        if getattr(self, "_start_error", None):
            self.set(error=self._start_error, status=f"Not started: {self._start_error}", busy=False,
                     run_text=self.RUN_TEXT)
            self._start_error = None
            self._was_busy = False  # no job started: nothing to finish
            return
        r = self.logic.runner
        phase = r.poll() if r.busy else r.phase
        busy = phase in BUSY
        job = (phase, int(round(100 * (r.fraction or 0))), status_text(r))
        if job != self._job_shown:  # only a change of the job is written: a message of Undo or of a point
            self._job_shown = job   # placement stays in the status line until the job changes
            self.set(busy=busy, progress=job[1], status=job[2], run_text=button_text(phase, self.RUN_TEXT))
        if self._was_busy and not busy:
            self.finished(phase)
        self._was_busy = busy

    def finished(self, phase: Phase) -> None:
        if phase == Phase.DONE:
            self.set(error="")
            self.app.segments_changed()
        elif phase == Phase.FAILED:
            self.set(error=self.logic.runner.error or "failed")

    def undo(self) -> None:
        seg = self.app.segmentation_node()
        try:
            done = seg is not None and self.logic.undo(seg)
        except Exception as e:  # noqa: BLE001 - e.g. refused after an edit made since: say why, change nothing
            self.set(status=f"Not undone: {e}")
            return
        if done:
            self.app.segments_changed()
        self.set(status="Undone" if done else "Nothing to undo")

    # -- widgets --------------------------------------------------------------------------------
    def common_widgets(self) -> None:
        v3.VBtn(f"{{{{ {self.key('run_text')} }}}}", click=self.run_or_cancel, block=True,
                color="primary", classes="my-2")
        v3.VProgressLinear(model_value=(self.key("progress"),), v_show=(self.key("busy"),), height=6)
        html.Div(f"{{{{ {self.key('status')} }}}}", raw_attrs=['role="status"'], classes="text-caption my-1")
        v3.VAlert(text=(self.key("error"),), v_show=(self.key("error"),), type="error", density="compact",
                  role="alert")

    def build(self) -> None:
        raise NotImplementedError


class CoSAMPanel(Panel):
    PREFIX, MODULE, TITLE, RUN_TEXT = "cosam", "SelfCorrectingSAM", "Self-correcting SAM", "Run CoSAM"

    def __init__(self, app):
        super().__init__(app)
        self._points = None
        self._pending_sign = "+"
        self.set(model="liver", models=["liver"], iterations=4, slices="all", round=0, nrounds=0, round_label="",
                 npoints=0)

    def refresh_models(self) -> None:
        try:
            ids = self.logic.model_ids(self.logic.MODEL_TASK) or ["liver"]
        except Exception:  # noqa: BLE001 - a server that is down shows in the hub panel
            ids = ["liver"]
        self.set(models=ids)

    def points_node(self):
        scene = self.app.scene
        if self._points is None or self._points.GetScene() is not scene:
            self._points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "CoSAM points")
            self._points.AddObserver(self._points.PointPositionDefinedEvent, self._on_point_placed)
        return self._points

    def _on_point_placed(self, node, _event) -> None:
        n = node.GetNumberOfControlPoints()
        if n:
            node.SetNthControlPointDescription(n - 1, self._pending_sign)
            node.SetNthControlPointLabel(n - 1, self._pending_sign)
        self.set(npoints=n)

    def place(self, sign: str) -> None:
        """Start placing one +/- point in the slice views (the next click in a view places it)."""
        self._pending_sign = "-" if sign == "-" else "+"
        # the click places a point and nothing else: no Segment Editor effect (a paint stroke) may take it
        self.app.slicer_app.segmentation_editor.deactivate_effect()
        self.app.slicer_app.markups_logic.place_node(self.points_node(), False)
        self.set(status=f"Click in a slice view to place a {'negative' if sign == '-' else 'positive'} point")

    def add_point_ijk(self, i: float, j: float, k: float, sign: str) -> None:
        """Place a point at voxel (i, j, k) of the input (what a click does, for keyboard users and tests)."""
        import numpy as np

        from MedSegSuiteLib.volumes import geometry_from_node

        g = geometry_from_node(self.app.volume_node)
        ras = g.ijk_to_ras_points(np.asarray([[i, j, k]], float))[0]
        self._pending_sign = "-" if sign == "-" else "+"
        node = self.points_node()
        node.AddControlPoint(*[float(v) for v in ras])
        self._on_point_placed(node, None)

    def start(self, continue_loop: bool = False) -> None:
        points = self._points if self._points is not None and self._points.GetNumberOfControlPoints() else None
        self.logic.start(self.app.volume_node, self.app.segmentation_node(), overwrite="none",
                         model=self.get("model"), iterations=int(self.get("iterations")), points_node=points,
                         slices=self.get("slices") or "all", continue_loop=continue_loop)

    def continue_loop(self) -> None:
        if self.logic.runner.busy or self._starting:  # Continue never cancels a running job
            self.set(status="Wait for the running job to finish")
            return
        self.launch(self.start, True)

    def finished(self, phase: Phase) -> None:
        super().finished(phase)
        if phase == Phase.DONE and self.logic.rounds:
            last = len(self.logic.rounds) - 1
            self.set(nrounds=last, round=last, round_label=f"round {last} of {last} (final)")

    def show_round(self, value) -> None:
        if not self.logic.rounds or self.logic.runner.busy:
            return
        t = self.logic.show_round(int(value))
        last = len(self.logic.rounds) - 1
        self.set(round_label="coarse (prompt-free)" if t == 0 else f"round {t} of {last}")
        self.app.segments_changed()

    def build(self) -> None:
        with v3.VCard(flat=True, classes="pa-2"):
            v3.VCardTitle(self.TITLE)
            v3.VSelect(label="Model", v_model=(self.key("model"),), items=(self.key("models"),),
                       density="compact")
            v3.VSlider(label="Correction rounds", v_model=(self.key("iterations"),), min=0, max=8, step=1,
                       thumb_label=True, density="compact", raw_attrs=['aria-label="Correction rounds"'])
            v3.VTextField(label="Slices", v_model=(self.key("slices"),), density="compact",
                          hint="all, a:b, every:K or i,j,k (axial)")
            self.common_widgets()
            with html.Div(v_show=(f"{self.key('nrounds')} > 0",)):
                v3.VSlider(label="Show round", v_model=(self.key("round"),), min=0, max=(self.key("nrounds"),),
                           step=1, density="compact", raw_attrs=['aria-label="Show round"'],
                           update_modelValue=(self.show_round, "[$event]"))
                html.Div(f"{{{{ {self.key('round_label')} }}}}", classes="text-caption")
            with html.Div(classes="d-flex ga-1 my-1"):
                v3.VBtn("+ point", click=(self.place, "['+']"), size="small", raw_attrs=['aria-label="Add positive point"'])
                v3.VBtn("− point", click=(self.place, "['-']"), size="small", raw_attrs=['aria-label="Add negative point"'])
                v3.VBtn("Continue", click=self.continue_loop, size="small",
                        disabled=(self.key("busy"),), raw_attrs=['aria-label="Continue"'])
                v3.VBtn("Undo", click=self.undo, size="small", raw_attrs=['aria-label="Undo CoSAM"'])
            html.Div(f"{{{{ {self.key('npoints')} }}}} point(s)", classes="text-caption")


QUICK_ITERATIONS = QUICK_SETTINGS["iterations"]


class ScribblePanel(Panel):
    PREFIX, MODULE, TITLE = "scribble", "ScribbleSeg", "Scribble segmentation (MaCo)"
    MODES = {"quick": ("Quick: train on these scribbles, segment", "Train quick"),
             "grow": ("Grow from seeds (no training; the baseline)", "Grow from seeds"),
             "train": ("Train a model", "Train"), "segment": ("Segment with the trained model", "Segment")}

    @property
    def RUN_TEXT(self):  # the button says what the chosen mode does
        return self.MODES.get(self.app.state[self.key("mode")], self.MODES["quick"])[1]

    def __init__(self, app):
        app.state[f"{self.PREFIX}_mode"] = "quick"
        super().__init__(app)
        self.set(modes=[{"title": title, "value": mode} for mode, (title, _) in self.MODES.items()],
                 iterations=QUICK_ITERATIONS)
        app.state.change(self.key("mode"))(self._mode_changed)

    def _mode_changed(self, **_):
        if not (self.logic.runner.busy or self._starting):
            self.set(run_text=self.RUN_TEXT)

    def start(self) -> None:
        scribbles = self.app.segmentation_node()
        out = self.app.prediction_node()
        try:
            iterations = int(self.get("iterations"))
        except (TypeError, ValueError):
            raise InputError("training iterations must be a whole number") from None
        if not 1 <= iterations <= 100000:
            raise InputError("training iterations must be between 1 and 100000")
        self.logic.start(self.app.volume_node, out, overwrite="all", mode=self.get("mode"), scribbles_node=scribbles,
                         iterations=iterations)

    def build(self) -> None:
        with v3.VCard(flat=True, classes="pa-2"):
            v3.VCardTitle(self.TITLE)
            html.Div("Paint a class segment and a 'background' segment with the Segment Editor's paint effect, "
                     "then train. The prediction goes to its own segmentation, never into the scribbles.",
                     classes="text-caption")
            v3.VSelect(label="Mode", v_model=(self.key("mode"),), items=(self.key("modes"),), density="compact")
            v3.VTextField(label="Training iterations", v_model=(self.key("iterations"),), type="number",
                          density="compact", v_show=f"['quick', 'train'].includes({self.key('mode')})")
            self.common_widgets()


class TTAPanel(Panel):
    PREFIX, MODULE, TITLE, RUN_TEXT = "tta", "TestTimeAdapt", "Test-time adaptation", "Adapt"

    def __init__(self, app):
        super().__init__(app)
        self.set(method="vptta", methods=["none", "tent", "vptta", "grata", "dyna"], model="liver-source", slices="all",
                 models=["liver-source", "brain-source"], entropy_plot="", entropy_label="")

    def start(self) -> None:
        self.logic.start(self.app.volume_node, self.app.segmentation_node(), overwrite="none",
                         model=self.get("model"), method=self.get("method"), slices=self.get("slices") or "all")

    def finished(self, phase: Phase) -> None:
        super().finished(phase)
        if phase != Phase.DONE:
            self.set(entropy_plot="", entropy_label="")   # no stale plot after a failed or cancelled run
            return
        e = self.logic.entropy_series() or {}
        series = {k: [float(v) for v in e.get(k) or []] for k in ("before", "after") if e.get(k)}
        self.set(entropy_plot=entropy_svg(series),
                 entropy_label="; ".join(f"{k}: mean {sum(v) / len(v):.3f}" for k, v in series.items()))

    def build(self) -> None:
        with v3.VCard(flat=True, classes="pa-2"):
            v3.VCardTitle(self.TITLE)
            v3.VSelect(label="Model", v_model=(self.key("model"),), items=(self.key("models"),), density="compact")
            v3.VSelect(label="Method", v_model=(self.key("method"),), items=(self.key("methods"),),
                       density="compact")
            v3.VTextField(label="Slices", v_model=(self.key("slices"),), density="compact")
            self.common_widgets()
            html.Div("Per-slice entropy (before / after)", classes="text-caption",
                     v_show=(self.key("entropy_label"),))
            html.Img(src=(self.key("entropy_plot"),), v_show=(self.key("entropy_label"),), width=200, height=62,
                     alt="Per-slice entropy plot: before (red) and after (blue) adaptation")
            html.Div(f"{{{{ {self.key('entropy_label')} }}}}", classes="text-caption")


def entropy_svg(series: dict, w: int = 200, h: int = 60) -> str:
    """A small line plot (one line per series) as an SVG data URI."""
    import base64

    vals = [v for s in series.values() for v in s] or [1.0]
    hi = max(vals) or 1.0
    colours = ["#e57373", "#64b5f6", "#81c784"]
    lines = []
    for n, s in enumerate(series.values()):
        step = w / max(len(s) - 1, 1)
        pts = " ".join(f"{i * step:.1f},{h - (h - 4) * v / hi:.1f}" for i, v in enumerate(s))
        lines.append(f'<polyline points="{pts}" fill="none" stroke="{colours[n % 3]}" stroke-width="1.5"/>')
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h + 2}">{"".join(lines)}</svg>'
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


class HubPanel:
    """Backend choice (local device or a remote server). The server's API key stays on this machine:
    the page only learns whether one is configured."""

    PREFIX = "hub"

    def __init__(self, app):
        self.app = app
        s = app.state
        s.hub_mode = app.backend_mode
        s.hub_url = app.server_url or ""
        s.hub_device = app.device
        s.hub_key_configured = bool(app.api_key)
        s.hub_status = ""
        s.hub_models = []

    def test(self) -> None:
        try:
            b = self.app.backend()
            models = [m.get("id", "?") for m in b.list_models()]
            self.app.state.hub_models = models
            self.app.state.hub_status = f"Connected: {len(models)} model(s)"
        except Exception as e:  # noqa: BLE001
            self.app.state.hub_status = f"Not connected: {e}"

    def poll(self) -> None:
        pass

    def build(self) -> None:
        with v3.VCard(flat=True, classes="pa-2"):
            v3.VCardTitle("MedSegSuite backend")
            html.Div("{{ hub_mode === 'remote' ? 'Remote server: ' + hub_url : 'Local (this server), device: ' "
                     "+ hub_device }}", classes="text-body-2")
            html.Div("{{ hub_key_configured ? 'API key: configured on the web server' : 'API key: none' }}",
                     classes="text-caption")
            v3.VBtn("Test connection", click=self.test, size="small", classes="my-2")
            html.Div("{{ hub_status }}", raw_attrs=['role="status"'], classes="text-caption")
            html.Div("{{ hub_models.join(', ') }}", classes="text-caption")
