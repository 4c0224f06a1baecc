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


@dataclass
class TaskSpec:
    name: str
    fn: Callable
    needs_image: bool = True
    description: str = ""


def task(name: str, needs_image: bool = True, description: str = ""):
    def deco(fn):
        _TASKS[name] = TaskSpec(name, fn, needs_image, description or (fn.__doc__ or "").strip().split("\n")[0])
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

    def progress(self, fraction: float, message: str = "") -> None:
        self.check_cancelled()
        self._report(max(0.0, min(1.0, float(fraction))), message)

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise JobCancelled("cancelled by the user")

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()
