"""The panels' job state machine, driven by `Backend` events and never blocking the GUI.

    idle -> starting -> running -> importing -> done
                  \\         \\-> cancelled | failed
                   \\-> failed (bad input, unknown task, server unreachable)

A panel calls :meth:`JobRunner.start` (sends the image once, queues the job), then :meth:`poll`
from a GUI timer (each call reads the new events and returns at once); batch scripts and tests call
:meth:`wait`. Results are handed to the ``importer`` only when the job ended *done* and the user
did not ask to cancel, so a cancelled or failed job never touches the segmentation.
"""
from __future__ import annotations

import enum
import time
from typing import Callable

from medsegsuite.engine.interface import JobResult, JobState


class Phase(str, enum.Enum):
    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    IMPORTING = "importing"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"


FINISHED = {Phase.DONE, Phase.CANCELLED, Phase.FAILED}


class JobRunner:
    """One job at a time for one panel. ``on_change(runner)`` is called after every change of
    phase, progress or message (the widget redraws its progress bar and Apply/Cancel button)."""

    def __init__(self, backend_provider: Callable[[], object] | object, on_change: Callable | None = None):
        self._provider = backend_provider if callable(backend_provider) and not hasattr(
            backend_provider, "start_job") else (lambda: backend_provider)
        self.on_change = on_change
        self.phase = Phase.IDLE
        self.fraction = 0.0
        self.message = ""
        self.error = ""
        self.job_id: str | None = None
        self.task: str | None = None
        self.backend = None
        self.result: JobResult | None = None
        self.imported = None
        self.phases: list[Phase] = [Phase.IDLE]
        self._seen = 0
        self._importer: Callable[[JobResult], object] | None = None
        self._cancel_requested = False

    # -- state --------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.phase in (Phase.STARTING, Phase.RUNNING, Phase.IMPORTING)

    def _set(self, phase: Phase | None = None, fraction: float | None = None, message: str | None = None):
        changed = False
        if phase is not None and phase != self.phase:
            self.phase = phase
            self.phases.append(phase)
            changed = True
        if fraction is not None and fraction != self.fraction:
            self.fraction, changed = fraction, True
        if message is not None and message != self.message:
            self.message, changed = message, True
        if changed and self.on_change is not None:
            self.on_change(self)

    def _fail(self, message: str) -> Phase:
        self.error = message
        self._set(Phase.FAILED, message=message)
        return self.phase

    # -- actions ------------------------------------------------------------------------------
    def start(self, task: str, image=None, params: dict | None = None, inputs: dict | None = None,
              importer: Callable[[JobResult], object] | None = None) -> Phase:
        """Send the image (once) and queue the job. Errors end in ``failed`` with their message."""
        if self.busy:
            raise RuntimeError("a job is already running in this panel; cancel it first")
        self.phases = []
        self.job_id, self.task, self.result, self.imported, self.error = None, task, None, None, ""
        self._seen, self._importer, self._cancel_requested = 0, importer, False
        self.fraction = 0.0
        self._set(Phase.STARTING, 0.0, f"starting {task}")
        try:
            self.backend = self._provider()
            image_id = self.backend.set_image(image) if image is not None else None
            self.job_id = self.backend.start_job(task, image_id, params or {}, inputs or {})
        except Exception as e:  # noqa: BLE001 - shown in the panel, never raised into Qt
            return self._fail(_describe(e))
        self._set(message=f"{task} queued")
        return self.phase

    def cancel(self) -> None:
        """Ask the backend to stop; the phase turns ``cancelled`` when the backend confirms."""
        if not self.busy or self.job_id is None:
            return
        self._cancel_requested = True
        self._set(message="cancelling…")
        try:
            self.backend.cancel(self.job_id)
        except Exception as e:  # noqa: BLE001
            self._fail(f"could not cancel: {_describe(e)}")

    def poll(self) -> Phase:
        """Read new backend events and advance; returns the phase. Cheap and non-blocking."""
        if self.phase not in (Phase.STARTING, Phase.RUNNING) or self.job_id is None:
            return self.phase
        try:
            events = self.backend.events(self.job_id, self._seen)
        except Exception as e:  # noqa: BLE001
            return self._fail(_describe(e))
        for ev in events:
            self._seen = ev.seq
            if ev.state == JobState.RUNNING:
                self._set(Phase.RUNNING, ev.fraction, ev.message)
            elif ev.state == JobState.QUEUED:
                self._set(message=ev.message or "queued")
            elif ev.state == JobState.CANCELLED:
                self._set(Phase.CANCELLED, message=ev.message or "cancelled")
                return self.phase
            elif ev.state == JobState.FAILED:
                return self._fail(ev.message or "the job failed")
            elif ev.state == JobState.DONE:
                return self._finish()
        return self.phase

    def _finish(self) -> Phase:
        if self._cancel_requested:  # finished in the same instant the user cancelled: drop it
            self._set(Phase.CANCELLED, message="cancelled (result discarded)")
            return self.phase
        self._set(Phase.IMPORTING, 1.0, "importing result")
        try:
            self.result = self.backend.result(self.job_id)
            if self._importer is not None:
                self.imported = self._importer(self.result)
        except Exception as e:  # noqa: BLE001
            return self._fail(_describe(e))
        self._set(Phase.DONE, 1.0, "done")
        return self.phase

    def wait(self, timeout: float | None = None, interval: float = 0.02) -> Phase:
        """Poll until the job ends (batch scripts and tests)."""
        deadline = None if timeout is None else time.time() + timeout
        while self.busy:
            self.poll()
            if not self.busy:
                break
            if deadline is not None and time.time() > deadline:
                raise TimeoutError(f"job {self.job_id} still {self.phase.value} after {timeout} s")
            time.sleep(interval)
        return self.phase

    def reset(self) -> None:
        if not self.busy:
            self.phases = []
            self._set(Phase.IDLE, 0.0, "")


def _describe(e: BaseException) -> str:
    """A message for the panel: our own errors as they are, others with their type."""
    from medsegsuite.errors import MedSegError

    return str(e) if isinstance(e, MedSegError) else f"{type(e).__name__}: {e}"
