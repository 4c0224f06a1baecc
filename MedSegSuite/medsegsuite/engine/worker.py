"""One persistent worker thread that owns the torch device and runs interactive jobs one at a time.

Jobs are queued per client and served round-robin, so one client's batch cannot starve another's
click. Jobs of ``kind="training"`` never reach this thread: they go to the `TrainingLane`, which runs
each in its own process, so a long training run cannot delay a click. A job that fails (including
out-of-memory on the device) ends in the failed state with a clear message; the worker keeps serving.
"""
from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import traceback
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from ..errors import Forbidden, InputError, JobCancelled, MedSegError
from .interface import TERMINAL_STATES, JobEvent, JobResult, JobState
from .roles import role_allows
from .tasks import JobContext, get_task

log = logging.getLogger(__name__)


@dataclass
class Job:
    id: str
    task: str
    image_id: str | None
    params: dict
    inputs: dict
    client: str = "local"
    kind: str = "interactive"
    pid: int | None = None  # the process a training job runs in
    user: str = "local"
    role: str = "admin"
    allow_paths: bool = True  # whether its params may name files (never for a server's jobs)
    policy: dict = field(default_factory=dict)  # the caller's rules over the worker's (a server's dyna_queue)
    state: JobState = JobState.QUEUED
    events: list = field(default_factory=list)
    result: JobResult | None = None
    error: str = ""
    cancel_event: threading.Event = field(default_factory=threading.Event)
    done_event: threading.Event = field(default_factory=threading.Event)
    created: float = field(default_factory=time.time)
    finished: float | None = None
    _seq: itertools.count = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self):
        self._new_event = threading.Condition(self._lock)  # wakes `events_after` at once

    def emit(self, state: JobState, fraction: float = 0.0, message: str = "") -> None:
        with self._lock:
            self.state = state
            self.events.append(JobEvent(next(self._seq), state, fraction, message, time.time()))
            self._new_event.notify_all()
            if state in TERMINAL_STATES:
                self.finished = time.time()
                self.inputs = {}  # a job's inputs (scribbles, training cases) are not kept past its end
                self.done_event.set()

    def events_after(self, since: int, wait: float = 0.0) -> list:
        """Events with seq > ``since``; with none yet and the job not ended, wait up to ``wait`` seconds
        for one (woken by `emit`: no polling)."""
        deadline = time.monotonic() + max(0.0, wait)
        with self._lock:
            while True:
                evs = [e for e in self.events if e.seq > since]
                left = deadline - time.monotonic()
                if evs or self.state in TERMINAL_STATES or left <= 0:
                    return evs
                self._new_event.wait(left)

    @property
    def started(self) -> float | None:
        """When it started running (None while queued)."""
        with self._lock:
            return next((e.time for e in self.events if e.state == JobState.RUNNING), None)


def is_oom(e: BaseException) -> bool:
    """Out of memory: host (MemoryError) or device (torch's OutOfMemoryError, 'out of memory')."""
    return isinstance(e, MemoryError) or "OutOfMemory" in type(e).__name__ or "out of memory" in str(e).lower()


def next_round_robin(queues: "OrderedDict[str, deque]") -> Job | None:
    """Round-robin over clients: take the head of the first non-empty queue (skipping jobs cancelled
    while queued), then rotate that client to the back."""
    for client in list(queues):
        q = queues[client]
        while q and q[0].state in TERMINAL_STATES:
            q.popleft()
        if q:
            job = q.popleft()
            queues.move_to_end(client)
            return job
    return None


class Worker:
    """Runs jobs on one thread. ``images`` maps image id -> Volume (owned by the backend)."""

    def __init__(self, device: str, caches, images: dict, max_finished: int = 256, allow_paths: bool = True,
                 training: str | None = None, training_slots: int = 1, train_threads: int | None = None):
        """``training``: "process" (default, or ``MEDSEGSUITE_TRAINING``) runs training jobs in child
        processes, "thread" on a thread beside this one; ``train_threads``: torch threads per child."""
        from .training import TrainingLane

        self.device = device
        self.allow_paths = allow_paths
        # the deployment's rules tasks see (ctx.policy): a server sets dyna_queue / retention_days
        self.policy = {"allow_paths": allow_paths, "dyna_queue": True, "retention_days": None}
        self.caches = caches
        self.images = images
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self._queues: OrderedDict[str, deque] = OrderedDict()
        self._cv = threading.Condition()
        self._stop = False
        self.max_finished = max_finished
        self.current: Job | None = None
        # Interactive sessions: state a client's jobs share (image, last result, clicks), keyed by
        # (client, session name) so one client never sees another's; LRU, a few per client.
        self.sessions: OrderedDict[tuple, dict] = OrderedDict()
        self.max_sessions_per_client = 4
        self._base_threads = None  # torch threads of interactive jobs when no training process runs
        self.pause_training = os.environ.get("MEDSEGSUITE_TRAIN_PAUSE", "1") != "0"
        self.training = TrainingLane(self, device, training_slots, train_threads, mode=training)
        self._thread = threading.Thread(target=self._run, name="medsegsuite-worker", daemon=True)
        self._thread.start()

    def submit(self, task: str, image_id: str | None, params: dict, inputs: dict, client: str = "local",
               allow_paths: bool | None = None, user: str = "local", role: str = "admin",
               policy: dict | None = None) -> Job:
        """Validate and queue a job. ``allow_paths=False`` refuses file paths for this call even on a
        backend that accepts them (a server passes it on every request); ``role`` must be at least the
        task's (`Forbidden` otherwise)."""
        spec = get_task(task)
        if not role_allows(role, spec.role):
            raise Forbidden(f"task '{task}' needs the {spec.role} role; {user} is a {role}. Ask the server's "
                            "administrator (medsegsuite users add NAME --role ...)")
        if spec.needs_image and image_id is None:
            raise InputError(f"task '{task}' needs an image; call set_image first")
        if image_id is not None and image_id not in self.images:
            raise InputError(f"unknown image id '{image_id}' (released or never set); set the image again")
        if not isinstance(params or {}, dict):
            raise InputError(f"{task}: params must be a JSON object")
        paths = self.allow_paths and allow_paths is not False
        params = spec.validate(params, paths)  # once, before the job exists
        job = Job(uuid.uuid4().hex[:16], task, image_id, params, dict(inputs or {}), client, spec.kind, user=user,
                  role=role, allow_paths=paths, policy=dict(policy or {}))
        job.emit(JobState.QUEUED, 0.0, "queued")
        with self._cv:
            self.jobs[job.id] = job
            self._trim()
            if spec.kind == "training":
                self.training.submit(job)
            else:
                self._queues.setdefault(client, deque()).append(job)
                self._cv.notify()
        return job

    def _trim(self):
        finished = [j for j in self.jobs.values() if j.state in TERMINAL_STATES]
        for j in finished[: max(0, len(finished) - self.max_finished)]:
            del self.jobs[j.id]

    def _next(self) -> Job | None:
        return next_round_robin(self._queues)

    def cancel(self, job_id: str) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            raise InputError(f"unknown job id '{job_id}'")
        job.cancel_event.set()
        with self._cv:
            if job.state == JobState.QUEUED:
                job.emit(JobState.CANCELLED, 0.0, "cancelled before it started")

    def _run(self):
        while True:
            with self._cv:
                job = self._next()
                while job is None and not self._stop:
                    self._cv.wait(timeout=0.5)
                    job = self._next()
                if self._stop:
                    return
                self.current = job
            paused = self._make_room()
            try:
                self._execute(job)
            finally:
                if paused:
                    self.training.resume()
                self.current = None

    def _make_room(self) -> bool:
        """Before an interactive job on the CPU: keep training processes off the click's cores.

        A click's torch (OpenMP) threads that share a core with a training process wait on each other
        at every parallel region, which slows a click several-fold even at nice 10 (measured in
        benchmarks/click_under_training.py). So training processes are paused (SIGSTOP) while an
        interactive job runs and resumed after it (True: resume them); where they cannot be paused
        (no SIGSTOP, or ``MEDSEGSUITE_TRAIN_PAUSE=0``) the job uses ``cores - training threads``
        threads instead. On a GPU nothing changes: the click and training share the device."""
        if self.device != "cpu":
            return False
        paused = bool(self.pause_training and self.training.pause())
        try:
            import torch
        except ImportError:
            return paused
        if self._base_threads is None:
            self._base_threads = torch.get_num_threads()
        # Set every time, paused or not: an earlier click that could not pause ran with fewer threads,
        # and the thread count is per thread, so a click must not inherit whatever its thread last had.
        busy = 0 if paused else self.training.busy_threads()
        n = self._base_threads if not busy else max(1, min(self._base_threads, (os.cpu_count() or 1) - busy))
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        return paused

    def _execute(self, job: Job, with_session: bool = True):
        if job.cancel_event.is_set():
            if job.state not in TERMINAL_STATES:
                job.emit(JobState.CANCELLED, 0.0, "cancelled before it started")
            return
        ctx = JobContext(job.id, self.device, self.caches,
                         lambda f, m: job.emit(JobState.RUNNING, f, m), job.cancel_event,
                         session=self._session(job) if with_session else None, **self.context_of(job))
        job.emit(JobState.RUNNING, 0.0, "started")
        try:
            spec = get_task(job.task)
            image = self.images.get(job.image_id) if job.image_id else None
            if spec.needs_image and image is None:
                raise InputError(f"image '{job.image_id}' was released before the job ran")
            out = spec.fn(ctx, image, job.params, job.inputs)
            ctx.check_cancelled()
            job.result = out if isinstance(out, JobResult) else JobResult(**out)
            job.emit(JobState.DONE, 1.0, "done")
        except JobCancelled:
            job.emit(JobState.CANCELLED, job.events[-1].fraction, "cancelled")
        except MedSegError as e:
            job.error = str(e)
            job.emit(JobState.FAILED, job.events[-1].fraction, str(e))
        except Exception as e:  # noqa: BLE001 - a job failure must never kill the worker
            if is_oom(e):
                job.error = (f"out of memory on {self.device} while running '{job.task}': use a smaller "
                             "slice range/ROI, a smaller model, or the CPU")
                try:
                    import torch

                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                except Exception:  # noqa: BLE001
                    pass
            else:
                job.error = f"{type(e).__name__}: {e}"
                log.error("job %s (%s) failed:\n%s", job.id, job.task, traceback.format_exc())
            job.emit(JobState.FAILED, job.events[-1].fraction, job.error)
        if job.state == JobState.DONE:
            for fn in ctx.followups:
                try:
                    fn()
                except Exception:  # noqa: BLE001 - the job is delivered; a follow-up only prepares the next
                    log.error("follow-up of job %s (%s) failed:\n%s", job.id, job.task, traceback.format_exc())

    def context_of(self, job: Job) -> dict:
        """Who runs ``job`` and under which rules: the JobContext fields beyond progress and caches."""
        policy = dict(self.policy, **job.policy, allow_paths=job.allow_paths)
        return {"client": job.client, "user": job.user, "role": job.role, "policy": policy}

    def _session(self, job: Job) -> dict | None:
        name = job.params.get("session")
        if not name:
            return None
        key = (job.client, str(name))
        with self._cv:
            state = self.sessions.get(key)
            if state is None or state.get("image_id") != job.image_id:
                state = self.sessions[key] = {"image_id": job.image_id}
            self.sessions.move_to_end(key)
            mine = [k for k in self.sessions if k[0] == job.client]
            for old in mine[: max(0, len(mine) - self.max_sessions_per_client)]:
                del self.sessions[old]
        return state

    def close_session(self, client: str, name: str | None = None) -> None:
        """Forget one interactive session of ``client``, or all of them (``name=None``: the client left)."""
        with self._cv:
            if name is None:
                for k in [k for k in self.sessions if k[0] == client]:
                    del self.sessions[k]
            else:
                self.sessions.pop((client, str(name)), None)

    def drop_image_sessions(self, image_id: str) -> None:
        with self._cv:
            for k in [k for k, v in self.sessions.items() if v.get("image_id") == image_id]:
                del self.sessions[k]

    def stop(self, timeout: float = 5.0):
        with self._cv:
            self._stop = True
            for j in self.jobs.values():
                j.cancel_event.set()
            self._cv.notify_all()
        self.training.stop(timeout)
        self._thread.join(timeout)
