"""Jobs through the Backend interface as the panels run them (JobRunner): progress events in order,
cancel stops a running job, and a cancelled or failed job leaves the segmentation untouched."""
import threading
import time

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from MedSegSuiteLib import segments as S  # noqa: E402
from MedSegSuiteLib.jobs import JobRunner, Phase  # noqa: E402
from MedSegSuiteLib.volumes import volume_to_node  # noqa: E402
from medsegsuite.engine import JobResult, JobState, task  # noqa: E402
from medsegsuite.errors import InputError  # noqa: E402

STEPS = 40
started = threading.Event()
steps_run = {"n": 0}


@task("test.jobs.box", description="test-only: a box mask, in steps with progress and cancel points")
def _box_task(ctx, image, params, inputs):
    delay = float(params.get("delay", 0.0))
    started.clear()
    steps_run["n"] = 0
    for step in range(STEPS):
        ctx.progress(step / STEPS, f"step {step + 1}/{STEPS}")
        steps_run["n"] = step + 1
        started.set()
        if params.get("fail_at") == step:
            raise InputError("test failure on purpose")
        time.sleep(delay)
    m = np.zeros(image.shape, bool)
    m[1:4, 1:5, 1:3] = True
    return JobResult(masks={"tumour": m}, info={"steps": STEPS})


@pytest.fixture
def scene_seg(oblique_volume):
    scene = slicer.vtkMRMLScene()
    volume_to_node(oblique_volume, scene, "img")
    g = oblique_volume.geometry
    seg = S.new_segmentation_node(scene, "seg", g)
    liver = np.zeros(g.shape, bool)
    liver[0:6, 0:6, 0:5] = True
    S.write_masks(seg, {"liver": liver, "tumour": liver & False}, g)
    return seg, g


def _snapshot(seg, g):
    return S.read_masks(seg, g)


def _importer(seg, g):
    return lambda result: S.write_masks(seg, result.masks, g)


def test_progress_events_in_order_and_result_imported(backend, oblique_volume, scene_seg):
    seg, g = scene_seg
    image_id = backend.set_image(oblique_volume)
    job = backend.start_job("test.jobs.box", image_id, {})
    seen = []
    assert backend.wait(job, timeout=30, on_event=seen.append) == JobState.DONE
    seqs = [e.seq for e in seen]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    states = [e.state for e in seen]
    assert states[0] == JobState.QUEUED and states[-1] == JobState.DONE
    assert set(states[1:-1]) == {JobState.RUNNING}
    fractions = [e.fraction for e in seen if e.state == JobState.RUNNING]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx((STEPS - 1) / STEPS)
    assert [e.message for e in seen if e.message.startswith("step")][:3] == ["step 1/40", "step 2/40", "step 3/40"]

    changes = []
    runner = JobRunner(backend, on_change=lambda r: changes.append((r.phase, r.fraction)))
    runner.start("test.jobs.box", oblique_volume, {}, importer=_importer(seg, g))
    assert runner.wait(timeout=30) == Phase.DONE
    assert runner.phases == [Phase.STARTING, Phase.RUNNING, Phase.IMPORTING, Phase.DONE]
    progress = [f for p, f in changes if p == Phase.RUNNING]
    assert progress == sorted(progress) and len(progress) > 1
    out = _snapshot(seg, g)
    assert out["tumour"][1:4, 1:5, 1:3].all() and out["tumour"].sum() == 3 * 4 * 2


def test_cancel_stops_running_job_and_leaves_segmentation(backend, oblique_volume, scene_seg):
    seg, g = scene_seg
    before = _snapshot(seg, g)
    imported = []
    runner = JobRunner(lambda: backend)
    runner.start("test.jobs.box", oblique_volume, {"delay": 0.05},
                 importer=lambda r: imported.append(r) or _importer(seg, g)(r))
    assert started.wait(10)
    while runner.phase != Phase.RUNNING:
        runner.poll()
        time.sleep(0.01)
    runner.cancel()
    t0 = time.time()
    assert runner.wait(timeout=10) == Phase.CANCELLED
    assert time.time() - t0 < 2.0                          # stopped at its next step, not at the end
    assert steps_run["n"] < STEPS
    assert backend.state(runner.job_id) == JobState.CANCELLED
    assert imported == []
    after = _snapshot(seg, g)
    assert list(after) == list(before)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])
    # the worker is free again: the next job runs to the end
    again = JobRunner(backend)
    again.start("test.jobs.box", oblique_volume, {})
    assert again.wait(timeout=30) == Phase.DONE


def test_failed_and_unknown_jobs_leave_segmentation(backend, oblique_volume, scene_seg):
    seg, g = scene_seg
    before = _snapshot(seg, g)
    runner = JobRunner(backend)
    runner.start("test.jobs.box", oblique_volume, {"fail_at": 3}, importer=_importer(seg, g))
    assert runner.wait(timeout=30) == Phase.FAILED
    assert "test failure on purpose" in runner.error
    runner.start("cosam.does-not-exist", oblique_volume, {}, importer=_importer(seg, g))
    assert runner.wait(timeout=30) == Phase.FAILED and runner.job_id is None
    assert "unknown task 'cosam.does-not-exist'" in runner.error
    after = _snapshot(seg, g)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])


def test_followups_run_after_the_result_is_delivered_and_never_fail_the_job(caplog):
    """`JobContext.after`: work for the next job runs once this job is done; its failure is only logged."""
    import threading

    from medsegsuite.engine import LocalBackend
    from medsegsuite.engine.interface import JobState
    from medsegsuite.engine.tasks import task

    seen, release = [], threading.Event()

    @task("test.followup", needs_image=False, params=[])
    def _followup(ctx, image, params, inputs):
        def later():
            release.wait(5)
            seen.append("later")
        ctx.after(later)
        ctx.after(lambda: 1 / 0)
        seen.append("task")
        return {"info": {"ok": True}}

    with LocalBackend("cpu") as b:
        job = b.start_job("test.followup")
        # the result is there while the follow-up still waits
        assert b.wait(job, timeout=10) == JobState.DONE and b.result(job).info == {"ok": True}
        assert seen == ["task"]
        release.set()
        nxt = b.start_job("test.followup")  # runs only after the follow-ups
        b.wait(nxt, timeout=10)
        assert seen[:3] == ["task", "later", "task"] and b.state(job) == JobState.DONE
    assert "follow-up of job" in caplog.text


def test_events_long_poll_returns_as_an_event_arrives(backend, oblique_volume):
    """`Backend.events(wait=...)` sleeps on the job and wakes with its next event, not at the deadline."""
    image_id = backend.set_image(oblique_volume)
    job = backend.start_job("test.jobs.box", image_id, {"delay": 0.05})
    got = backend.events(job, 0, wait=60.0)
    assert got and got[0].state == JobState.QUEUED
    assert started.wait(10)
    last = backend.events(job, 0)[-1].seq
    t0 = time.monotonic()
    nxt = backend.events(job, last, wait=60.0)  # the task emits every 0.05 s: one arrives long before 60 s
    assert nxt and nxt[0].seq == last + 1 and time.monotonic() - t0 < 30
    assert backend.wait(job, timeout=30) == JobState.DONE
    end = backend.events(job, 0)[-1].seq
    assert backend.events(job, end, wait=60.0) == []  # an ended job has nothing more: no wait


def test_runner_picks_up_a_result_as_it_arrives_not_at_the_next_poll(backend, oblique_volume, scene_seg):
    """With a 60 s interval, a runner that slept between polls would miss the result by up to a minute;
    the worker waits on the job's events instead, so it ends with the job."""
    seg, g = scene_seg
    runner = JobRunner(backend, interval=60.0)
    runner.start("test.jobs.box", oblique_volume, {}, importer=_importer(seg, g))
    assert runner.wait(timeout=30, interval=0.01) == Phase.DONE
    assert runner.phases == [Phase.STARTING, Phase.RUNNING, Phase.IMPORTING, Phase.DONE]


def test_runner_polls_a_server_that_refuses_another_long_poll(backend, oblique_volume, scene_seg):
    """A server answers 429 when the user already holds too many long-polls: the job still runs to its end."""
    from medsegsuite.client.errors import RemoteError

    class Busy:
        def __init__(self, inner):
            self.inner, self.refused = inner, 0

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def events(self, job_id, since=0, wait=0.0):
            if wait > 0:
                self.refused += 1
                raise RemoteError("too many long-polls", 429, "busy")
            return self.inner.events(job_id, since)

    seg, g = scene_seg
    busy = Busy(backend)
    runner = JobRunner(busy, interval=0.02)
    runner.start("test.jobs.box", oblique_volume, {}, importer=_importer(seg, g))
    assert runner.wait(timeout=30) == Phase.DONE and busy.refused > 0
    # any other error still fails the job with its message
    class Broken(Busy):
        def events(self, job_id, since=0, wait=0.0):
            raise RemoteError("the server said no", 500, "internal")

    runner = JobRunner(Broken(backend), interval=0.02)
    runner.start("test.jobs.box", oblique_volume, {}, importer=_importer(seg, g))
    assert runner.wait(timeout=30) == Phase.FAILED and "the server said no" in runner.error
