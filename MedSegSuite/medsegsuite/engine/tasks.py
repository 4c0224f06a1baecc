"""Named tasks a job can run. Method packages register theirs with ``@task("name")``.

A task is ``fn(ctx: JobContext, image: Volume | None, params: dict, inputs: dict) -> TaskOutput``. It
reports progress with ``ctx.progress(fraction, message)`` and calls ``ctx.check_cancelled()`` between
steps (both are cheap). It returns masks on the image grid; it never writes files or scene nodes.
"""
from __future__ import annotations

import importlib
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from ..errors import InputError, JobCancelled
from .interface import JobResult
from .roles import check_role
from .schema import Schema

# Modules whose import registers tasks. A module that does not exist yet is skipped.
TASK_MODULES = [
    "medsegsuite.sam.tasks",
    "medsegsuite.cosam.tasks",
    "medsegsuite.scribble.tasks",
    "medsegsuite.tta.tasks",
]

_TASKS: dict[str, "TaskSpec"] = {}
_loaded = False
_lock = threading.Lock()

TaskOutput = JobResult


KINDS = ("interactive", "training")


@dataclass
class TaskSpec:
    """A task: its function, its typed parameters, and its kind (``training`` jobs run off the click
    path, in their own process)."""

    name: str
    fn: Callable
    needs_image: bool = True
    description: str = ""
    schema: Schema | None = None  # None: not declared (params pass unchecked; a test forbids it)
    kind: str = "interactive"
    check: Callable | None = None  # check(params) -> params: cross-parameter rules after the schema
    role: str = "clinician"  # the least role that may run it (engine.roles)

    def validate(self, params: dict | None, allow_paths: bool = True) -> dict:
        if self.schema is None:
            return dict(params or {})
        params = self.schema.validate(params, self.name, allow_paths)
        if self.check is not None:
            try:
                params = self.check(params)
            except InputError as e:
                raise InputError(f"{self.name}: {e}") from None
        return params

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "needs_image": self.needs_image,
                "kind": self.kind, "role": self.role, "params": self.schema.to_dict() if self.schema else None}


def task(name: str, needs_image: bool = True, description: str = "", params=None, kind: str = "interactive",
         check=None, role: str | None = None):
    """Register ``fn`` as task ``name`` with its parameters (a list of `schema.Param`). ``check``:
    optional ``check(params) -> params`` run right after the schema (e.g. a method's own options
    dict), so those errors too are refused before the job exists. ``role``: the least role that may
    run it (default: clinician for interactive tasks, annotator for training ones)."""
    if kind not in KINDS:
        raise ValueError(f"task kind must be one of {KINDS}")
    role = check_role(role or ("annotator" if kind == "training" else "clinician"))

    def deco(fn):
        _TASKS[name] = TaskSpec(name, fn, needs_image, description or (fn.__doc__ or "").strip().split("\n")[0],
                                None if params is None else Schema(tuple(params)), kind, check, role)
        return fn
    return deco


def _load():
    global _loaded
    with _lock:
        if _loaded:
            return
        for mod in TASK_MODULES:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as e:
                if e.name is None or not mod.startswith(e.name):
                    raise
        _loaded = True


def available_tasks() -> dict[str, TaskSpec]:
    _load()
    return dict(_TASKS)


def get_task(name: str) -> TaskSpec:
    tasks = available_tasks()
    if name not in tasks:
        raise InputError(f"unknown task '{name}'; this backend offers {', '.join(sorted(tasks))}")
    return tasks[name]


@dataclass
class JobContext:
    """What a running task sees: progress, cancel, device, and the backend's shared caches."""

    job_id: str
    device: str = "cpu"
    cache: "object" = None  # engine.cache.ModelCache
    _report: Callable[[float, str], None] = lambda f, m: None
    _cancel: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.time)
    session: dict | None = None  # state an interactive session keeps between its jobs (see Worker)
    followups: list = field(default_factory=list)
    client: str = "local"  # who submitted the job: per-client state (a TTA stream) is keyed by it
    user: str = "local"
    role: str = "admin"
    policy: dict = field(default_factory=dict)  # the deployment's rules: allow_paths, dyna_queue, retention_days

    def after(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the worker right after this job's result is delivered: work the *next* job
        will need (e.g. the error map of the mask just returned) is done while the user looks at the
        result, not while they wait for it. A failing follow-up is logged and changes nothing."""
        self.followups.append(fn)

    def progress(self, fraction: float, message: str = "") -> None:
        self.check_cancelled()
        self._report(max(0.0, min(1.0, float(fraction))), message)

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise JobCancelled("cancelled by the user")

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()
