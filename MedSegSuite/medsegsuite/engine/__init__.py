"""The backend: one interface (`Backend`) for panels and CLI, served locally or over HTTP.

* :mod:`.interface` — the `Backend` protocol, job states, events and results (plain data).
* :mod:`.tasks` — the named tasks a job can run (``sam.box``, ``cosam.segment``, ...), registered by
  the method packages with :func:`task`.
* :mod:`.worker` — one persistent worker thread that owns the torch device, with a fair queue, for
  interactive jobs.
* :mod:`.training` — jobs of ``kind="training"`` in their own processes, off the click path.
* :mod:`.local` — `LocalBackend`, the in-process implementation.
* :mod:`.device` — device choice (auto/cuda/mps/cpu) and thread settings.
"""
from .interface import (API_VERSION, Backend, JobEvent, JobFailed, JobResult, JobState, TERMINAL_STATES)
from .tasks import JobContext, TaskOutput, available_tasks, get_task, task
from .local import LocalBackend

__all__ = ["API_VERSION", "Backend", "JobEvent", "JobFailed", "JobResult", "JobState", "TERMINAL_STATES",
           "JobContext", "TaskOutput", "available_tasks", "get_task", "task", "LocalBackend"]
