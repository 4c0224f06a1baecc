"""The panels' job state machine: all transport on a worker thread, MRML writes on the caller's.

    idle -> starting -> running -> importing -> done
                  \\         \\-> cancelled | failed
                   \\-> failed (bad input, unknown task, server unreachable)

:meth:`JobRunner.start` returns at once: a worker thread gets the backend (the first local one
imports torch), sends the image (hashing it, uploading it to a server), queues the job, waits on its
events (a long-poll that returns as each one arrives), downloads the result, and puts what it learns
on a thread-safe queue. :meth:`poll`, called from a GUI timer, only reads that queue (it never calls
the backend, so a slow server never freezes Slicer) and runs the ``importer`` — the MRML write — on
the caller's thread. Batch scripts and tests call :meth:`wait`. The importer runs only when the job
ended *done* and the user did not ask to cancel, so a cancelled or failed job never touches the
segmentation.
"""
from __future__ import annotations

import enum
import queue
import threading
import time
from typing import Callable

from medsegsuite.engine.interface import TERMINAL_STATES, JobResult, JobState


class Phase(str, enum.Enum):
    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    IMPORTING = "importing"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"


FINISHED = {Phase.DONE, Phase.CANCELLED, Phase.FAILED}
POLL_INTERVAL = 0.1  # the longest the worker waits on the job's events before it looks at cancel again
JOB_TICK_MS = 20     # the panels' GUI timer while a job runs (gui.JobPanel; benchmarks/click_latency.py models it)


class JobRunner:
    """One job at a time for one panel. ``on_change(runner)`` is called (on the thread that polls)
    after every change of phase, progress or message (the widget redraws its progress bar and
    Apply/Cancel button)."""

    def __init__(self, backend_provider: Callable[[], object] | object, on_change: Callable | None = None,
                 interval: float = POLL_INTERVAL):
        self._provider = backend_provider if callable(backend_provider) and not hasattr(
            backend_provider, "start_job") else (lambda: backend_provider)
        self.on_change = on_change
        self.interval = interval
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
        self._importer: Callable[[JobResult], object] | None = None
        self._cancel_requested = False
        self._cancel = threading.Event()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._generation = 0  # messages of an earlier job are dropped
        self._thread: threading.Thread | None = None

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

    # -- actions (caller's thread) ------------------------------------------------------------
    def start(self, task: str, image=None, params: dict | None = None, inputs: dict | None = None,
              importer: Callable[[JobResult], object] | None = None) -> Phase:
        """Queue the job from a worker thread and return at once (phase ``starting``). Errors end in
        ``failed`` with their message, seen by the next :meth:`poll`."""
        if self.busy:
            raise RuntimeError("a job is already running in this panel; cancel it first")
        self.phases = []
        self.job_id, self.task, self.result, self.imported, self.error = None, task, None, None, ""
        self._importer, self._cancel_requested = importer, False
        self._cancel = threading.Event()
        self._generation += 1
        self.fraction = 0.0
        self._set(Phase.STARTING, 0.0, f"starting {task}")
        self._thread = threading.Thread(
            target=self._drive, name=f"MedSegSuite job {task}", daemon=True,
            args=(self._generation, self._cancel, task, image, dict(params or {}), dict(inputs or {})))
        self._thread.start()
        return self.phase

    def cancel(self) -> None:
        """Ask for a stop (the worker tells the backend); the phase turns ``cancelled`` when the
        backend confirms. Returns at once."""
        if not self.busy:
            return
        self._cancel_requested = True
        self._cancel.set()
        self._set(message="cancelling…")

    def poll(self) -> Phase:
        """Apply what the worker reported since the last call; returns the phase. Never calls the
        backend and never waits: the GUI timer's whole job."""
        while self.busy:
            try:
                generation, kind, payload = self._queue.get_nowait()
            except queue.Empty:
                break
            if generation == self._generation:
                self._handle(kind, payload)
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

    # -- what the worker reports ----------------------------------------------------------------
    def _handle(self, kind: str, payload) -> None:
        if kind == "backend":
            self.backend = payload
        elif kind == "job":
            self.job_id = payload
            if not self._cancel_requested:
                self._set(message=f"{self.task} queued")
        elif kind == "events":
            for ev in payload:
                if ev.state == JobState.RUNNING:
                    self._set(Phase.RUNNING, ev.fraction, ev.message)
                elif ev.state == JobState.QUEUED:
                    self._set(message=ev.message or "queued")
                elif ev.state == JobState.CANCELLED:
                    self._set(Phase.CANCELLED, message=ev.message or "cancelled")
                elif ev.state == JobState.FAILED:
                    self._fail(ev.message or "the job failed")
                elif ev.state == JobState.DONE:
                    if self._cancel_requested:  # finished in the same instant the user cancelled: drop it
                        self._set(Phase.CANCELLED, message="cancelled (result discarded)")
                    else:
                        self._set(Phase.IMPORTING, 1.0, "importing result")
                if not self.busy:
                    return
        elif kind == "result":
            self._import(payload)
        elif kind == "cancelled":
            self._set(Phase.CANCELLED, message=payload)
        elif kind == "error":
            self._fail(payload)

    def _import(self, result: JobResult) -> None:
        if self._cancel_requested:
            self._set(Phase.CANCELLED, message="cancelled (result discarded)")
            return
        self.result = result
        try:
            if self._importer is not None:
                self.imported = self._importer(result)
        except Exception as e:  # noqa: BLE001
            self._fail(_describe(e))
            return
        self._set(Phase.DONE, 1.0, "done")

    # -- the worker thread ----------------------------------------------------------------------
    def _drive(self, generation: int, cancel: threading.Event, task: str, image, params: dict, inputs: dict):
        """All backend calls of one job: get the backend, send the image, queue, follow, download."""
        def post(kind, payload=None):
            self._queue.put((generation, kind, payload))

        try:
            backend = self._provider()
            post("backend", backend)
            image_id = backend.set_image(image) if image is not None else None
            if cancel.is_set():
                post("cancelled", "cancelled before it started")
                return
            job_id = backend.start_job(task, image_id, params, inputs)
            post("job", job_id)
            seen, cancel_sent = 0, False
            while True:
                if cancel.is_set() and not cancel_sent:
                    try:
                        backend.cancel(job_id)
                    except Exception as e:  # noqa: BLE001
                        post("error", f"could not cancel: {_describe(e)}")
                        return
                    cancel_sent = True
                events = self._next_events(backend, job_id, seen, cancel)
                if events:
                    seen = events[-1].seq
                    post("events", events)
                ended = next((e.state for e in events if e.state in TERMINAL_STATES), None)
                if ended == JobState.DONE:
                    if not cancel.is_set():
                        post("result", backend.result(job_id))
                    return
                if ended is not None:
                    return
        except Exception as e:  # noqa: BLE001 - shown in the panel, never raised into Qt
            post("error", _describe(e))

    def _next_events(self, backend, job_id: str, seen: int, cancel: threading.Event) -> list:
        """The job's next events, as soon as there are any: a long-poll of up to ``interval`` seconds
        (so a click's result is fetched the moment it is ready, not at the next poll; a cancel is
        still sent within ``interval``). A server that refuses another long-poll (429: the user holds
        too many) is polled instead."""
        try:
            return backend.events(job_id, seen, wait=self.interval)
        except Exception as e:  # noqa: BLE001
            if getattr(e, "status", None) != 429:
                raise
        events = backend.events(job_id, seen)
        if not events:
            cancel.wait(self.interval)  # wakes at once when the user cancels
        return events


def _describe(e: BaseException) -> str:
    """A message for the panel: our own errors as they are, others with their type."""
    from medsegsuite.errors import MedSegError

    return str(e) if isinstance(e, MedSegError) else f"{type(e).__name__}: {e}"
