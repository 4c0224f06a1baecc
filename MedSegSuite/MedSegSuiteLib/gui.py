"""Qt glue shared by the panels (imported only inside 3D Slicer; the logic never imports it).

:class:`JobPanel` binds a `MethodLogic`'s job runner to a panel's Apply button, progress bar and
status label: Apply turns into Cancel while a job is busy; one QTimer reads what the job's worker
thread and the panel's background calls (:meth:`JobPanel.call`: model lists, DyNA status) reported,
so nothing that waits for a server, an upload or an import runs on the GUI thread. It ticks every
20 ms while a job runs (a click's result is written within a tick of arriving; a tick that finds
nothing new redraws nothing) and every 100 ms for background calls only.
Errors show in the status label and a message box.
"""
from __future__ import annotations

import qt
import slicer

from medsegsuite.errors import InputError

from .background import BackgroundCalls
from .jobs import JOB_TICK_MS, Phase
from .panel import button_text, status_text


TICK_MS = 100  # background calls only; while a job runs: jobs.JOB_TICK_MS


class JobPanel:
    def __init__(self, logic, apply_button, progress_bar, status_label, start, idle_text="Apply",
                 on_finished=None, on_change=None):
        self.logic, self.apply_button, self.progress_bar = logic, apply_button, progress_bar
        self.status_label, self.start, self.idle_text = status_label, start, idle_text
        self.on_finished = on_finished
        self.on_change = on_change  # called after every redraw (the widget updates its other buttons)
        self.calls = BackgroundCalls()
        self._following = False  # a job started here whose end has not been handled yet
        self._shown = None       # the job's (phase, fraction, message) last drawn
        self.timer = qt.QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.connect("timeout()", self.poll)
        self.apply_button.connect("clicked(bool)", self.on_apply)
        self.progress_bar.setRange(0, 100)
        self.update()

    @property
    def busy(self) -> bool:
        return self.logic.runner.busy

    def on_apply(self, _checked=False):
        if self.logic.runner.busy:
            self.logic.cancel()
            self.update()
            return
        if not ensure_dependencies():
            return
        try:
            self.start()
        except Exception as e:  # noqa: BLE001 - bad input: say so, change nothing
            self.status_label.text = f"Failed: {e}"
            slicer.util.errorDisplay(str(e))
            return
        self._following = True
        self.timer.setInterval(JOB_TICK_MS)
        self.timer.start()
        self.update()

    def call(self, fn, on_done=None, on_error=None, name: str = "call") -> None:
        """Run ``fn`` on a worker thread; ``on_done(result)`` / ``on_error(exception)`` run on the GUI
        thread from this panel's timer."""
        self.calls.submit(fn, on_done, on_error, name)
        self.timer.start()

    def refresh_catalogue(self, show) -> None:
        """Fetch the backend's models and tasks off the GUI thread, then ``show()`` them (also when the
        backend could not answer: the lists keep what the user typed)."""
        def done(catalogue):
            self.logic.use_catalogue(catalogue)
            show()

        if self.logic.catalogue is None:  # until it arrives, nothing falls back to a call on this thread
            self.logic.use_catalogue(InputError("it is still being fetched"))
        self.call(self.logic.fetch_catalogue, done, done, name="model list")

    def poll(self):
        """The timer: apply the job's and the calls' news; never calls the backend."""
        r = self.logic.runner
        r.poll()
        pending = self.calls.drain()
        if self._following:
            if (r.phase, r.fraction, r.message) != self._shown:
                self.update()
            if not r.busy:
                self._following = False
                self.timer.setInterval(TICK_MS)
                if self.logic.runner.phase == Phase.FAILED:
                    slicer.util.errorDisplay(self.logic.runner.error)
                if self.on_finished is not None:
                    self.on_finished(self.logic.runner)
        if not self._following and not pending:
            self.timer.stop()

    def update(self):
        r = self.logic.runner
        self._shown = (r.phase, r.fraction, r.message)
        self.apply_button.text = button_text(r.phase, self.idle_text)
        self.progress_bar.value = int(round(100 * r.fraction))
        self.progress_bar.visible = r.phase != Phase.IDLE
        self.status_label.text = status_text(r)
        if self.on_change is not None:
            self.on_change()

    def close(self):
        """The panel goes away (cleanup, scene close): stop the timer, cancel the job, drop callbacks."""
        self.timer.stop()
        self.logic.cancel()
        self.calls.close()


def ensure_dependencies() -> bool:
    """First use: list the missing Python packages, ask ONCE, install them with pip_install."""
    from . import dependencies

    missing = dependencies.missing_packages()
    if not missing:
        return True
    if not slicer.util.confirmOkCancelDisplay(dependencies.confirmation_text(missing),
                                              windowTitle="MedSegSuite: install Python packages"):
        return False
    with slicer.util.tryWithErrorDisplay("Installing the Python packages failed", waitCursor=True):
        dependencies.install(missing)
    still = dependencies.missing_packages()
    if still:
        slicer.util.errorDisplay("Still missing after installation: " + ", ".join(still)
                                 + ". Restart Slicer and try again.")
    return not still


def fill_model_combo(combo, logic, default: str = "") -> None:
    """Offer the models of the backend in use (this computer's registry, or the server's) in an
    editable model combo box, keeping what the user typed; a backend that cannot answer leaves
    the typed text alone (the job will say what is wrong). Called with the logic's catalogue filled
    (`JobPanel.refresh_catalogue`), it makes no backend call."""
    current = combo.currentText.strip() or default
    try:
        ids = logic.model_ids(logic.MODEL_TASK)
    except Exception:  # noqa: BLE001 - an unreachable server must not break the panel
        return
    combo.clear()
    for model_id in ids:
        combo.addItem(model_id)
    combo.setEditText(current)


def apply_option_help(ui, logic, widgets: dict, task: str | None = None) -> None:
    """Set each option widget's tooltip ({parameter: widget name}) from the task's schema."""
    try:
        texts = logic.param_help(task)
    except Exception:  # noqa: BLE001 - an unreachable server keeps the .ui tooltips
        return
    for param, name in widgets.items():
        widget = getattr(ui, name, None)
        if widget is not None and param in texts:
            widget.toolTip = texts[param]

