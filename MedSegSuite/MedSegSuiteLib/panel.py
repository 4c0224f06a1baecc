"""What every method panel's Logic shares (GUI-free): inputs from nodes -> one backend job -> segments.

A method Logic subclasses :class:`MethodLogic` and overrides one method, :meth:`request`, which
turns the selected nodes and options into ``(task, params, inputs)``. Everything else — sending
the image, the job state machine, writing the result into the segmentation with the chosen
overwrite policy as one undo step, and leaving it untouched when the job is cancelled or fails —
lives here, so it behaves the same in every panel, in tests and in batch scripts::

    logic = SelfCorrectingSAMLogic()
    runner = logic.start(volume_node, segmentation_node, overwrite="none")
    runner.wait()               # a panel polls from a QTimer instead
"""
from __future__ import annotations

from medsegsuite.errors import InputError

from . import segments
from .backends import get_backend
from .jobs import JobRunner, Phase
from .volumes import cached_volume_from_node


class MethodLogic:
    """GUI-free panel logic. ``backend_provider`` defaults to the hub's shared backend."""

    TASK = ""          # the backend task the Apply button runs
    RESULT_NAMES = None  # None: write every mask the job returns
    segmentation_node = None  # where the last result went (created on the first result if none given)

    def __init__(self, backend_provider=None):
        self.backend_provider = backend_provider or get_backend
        self.runner = JobRunner(lambda: self.backend_provider())

    # -- method-specific (override) -----------------------------------------------------------
    def request(self, volume, volume_node, segmentation_node, **options) -> tuple[str, dict, dict]:
        """(task, params, inputs) for this panel's job. ``volume`` is the input as a `Volume`;
        ``segmentation_node`` may be None (a new one receives the result)."""
        return self.TASK, dict(options.get("params") or {}), dict(options.get("inputs") or {})

    def result_masks(self, result) -> dict:
        """The masks of a finished job to write (by default all of them)."""
        masks = dict(result.masks)
        if self.RESULT_NAMES is not None:
            masks = {k: v for k, v in masks.items() if k in self.RESULT_NAMES}
        return masks

    def import_result(self, task, result, volume_node, geometry, overwrite, colors):
        """Called only for a job that ended *done*: write its masks as one undoable step."""
        masks = self.result_masks(result)
        if not masks:
            raise InputError(f"{task} returned no masks")
        self.segmentation_node = self.ensure_segmentation(volume_node, self.segmentation_node)
        return segments.write_masks(self.segmentation_node, masks, geometry, colors=colors, overwrite=overwrite)

    # -- shared --------------------------------------------------------------------------------
    def backend(self):
        return self.backend_provider()

    catalogue = None  # what the backend offers, fetched off the GUI thread (see fetch_catalogue)
    PARAMETERS = None  # the panel's parameter-node wrapper class (MedSegSuiteLib.parameters.wrap)

    def parameter_node(self):
        """The scene's parameter node of this panel, wrapped (None where there is no wrapper)."""
        if self.PARAMETERS is None:
            return None
        return self.PARAMETERS(self.getParameterNode())  # ScriptedLoadableModuleLogic's singleton node

    def fetch_catalogue(self) -> dict:
        """Everything the panel's lists and tooltips need from the backend: run it on a worker thread
        (`BackgroundCalls`), then :meth:`use_catalogue` on the GUI thread. Raises if the backend fails."""
        backend = self.backend()
        tasks = {None, getattr(self, "MODEL_TASK", None)} - {None}
        return {"models": {None: backend.list_models(), **{t: backend.list_models(t) for t in tasks}},
                "tasks": backend.list_tasks()}

    def use_catalogue(self, catalogue) -> None:
        """Keep a fetched catalogue (or the exception that fetching it raised): from now on the model
        list, tooltips and structure names are read from it, never from the backend."""
        self.catalogue = catalogue

    def _cached(self, kind: str, key=None):
        if self.catalogue is None:
            return None
        if isinstance(self.catalogue, BaseException):
            raise InputError(f"the backend's model list is not available: {self.catalogue}")
        return self.catalogue[kind] if kind == "tasks" else self.catalogue[kind].get(key)

    def models(self, task: str | None = None) -> list[dict]:
        """The models a model list offers: the backend's (this computer's registry, or the server's),
        never the local registry read behind a remote backend's back."""
        cached = self._cached("models", task)
        return cached if cached is not None else self.backend().list_models(task)

    def model_ids(self, task: str | None = None) -> list[str]:
        return [m["id"] for m in self.models(task)]

    def param_help(self, task: str | None = None) -> dict:
        """{parameter: help text with its default and allowed values} of ``task`` (default this panel's),
        from the task schema of the backend in use: a panel's tooltips never drift from what runs."""
        from medsegsuite.engine.schema import Param

        name = task or self.TASK
        tasks = self._cached("tasks")
        for t in tasks if tasks is not None else self.backend().list_tasks():
            if t["name"] == name:
                return {p["name"]: Param.from_dict(p).describe() for p in t.get("params") or []}
        return {}

    def has_task(self, task: str | None = None) -> bool:
        return (task or self.TASK) in self.backend().handshake().get("tasks", [])

    @staticmethod
    def ensure_segmentation(volume_node, segmentation_node=None, name: str | None = None):
        """The given segmentation node, or a new one named after the volume, in the volume's scene."""
        if segmentation_node is not None:
            return segmentation_node
        scene = volume_node.GetScene()
        if scene is None:
            raise InputError("the input volume is not in a scene")
        node = segments.new_segmentation_node(scene, name or f"{volume_node.GetName()} segmentation")
        node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        return node

    def start(self, volume_node, segmentation_node=None, overwrite: str = "none", on_change=None,
              **options) -> JobRunner:
        """Queue the job (returns at once); the result is written when it ends *done*."""
        if self.runner.busy:
            raise InputError("this panel is already running a job; cancel it first")
        if volume_node is None:
            raise InputError("select an input volume")
        if overwrite not in segments.POLICIES:
            raise InputError(f"overwrite must be one of {segments.POLICIES}")
        volume = cached_volume_from_node(volume_node)
        self.segmentation_node = segmentation_node  # a new one is made only when a result arrives
        task, params, inputs = self.request(volume, volume_node, segmentation_node, **options)
        geometry = volume.geometry
        colors = options.get("colors")

        def importer(result):
            return self.import_result(task, result, volume_node, geometry, overwrite, colors)

        if on_change is not None:
            self.runner.on_change = on_change
        self.runner.start(task, volume, params, inputs, importer=importer)
        return self.runner

    def run(self, volume_node, segmentation_node=None, overwrite: str = "none", timeout: float | None = None,
            **options) -> JobRunner:
        """Start and wait (tests, batch scripts, self-tests)."""
        runner = self.start(volume_node, segmentation_node, overwrite, **options)
        runner.wait(timeout)
        return runner

    def cancel(self) -> None:
        self.runner.cancel()

    def undo(self, segmentation_node) -> bool:
        """Revert this panel's last write; refused (InputError) when the segmentation changed since, or
        while this panel's job runs (its result would land on top of the reverted state)."""
        self._refuse_while_busy("Undo")
        return segments.undo_last_write(segmentation_node)

    def redo(self, segmentation_node) -> bool:
        self._refuse_while_busy("Redo")
        return segments.redo_last_write(segmentation_node)

    def _refuse_while_busy(self, what: str) -> None:
        if self.runner.busy:
            raise InputError(f"{what} waits for the running job: let it finish or cancel it first")


def button_text(phase: Phase, idle_text: str = "Apply") -> str:
    """Apply turns into Cancel while a job is busy."""
    return "Cancel" if phase in (Phase.STARTING, Phase.RUNNING, Phase.IMPORTING) else idle_text


def status_text(runner: JobRunner) -> str:
    if runner.phase == Phase.FAILED:
        return f"Failed: {runner.error}"
    if runner.phase == Phase.IDLE:
        return ""
    pct = int(round(runner.fraction * 100))
    return f"{runner.phase.value.capitalize()} ({pct}%): {runner.message}" if runner.busy else \
        f"{runner.phase.value.capitalize()}: {runner.message}"
