"""Training jobs run off the click path: in their own process, cancellable, crash-isolated, with the
same Job events and JobResult as any job, while interactive jobs keep being served."""
import os
import signal
import time

import numpy as np
import pytest

from medsegsuite.engine import JobFailed, JobResult, JobState, LocalBackend, task
from medsegsuite.engine.schema import Param
from medsegsuite.errors import InputError
from medsegsuite.volume import Volume


@task("test.train.steps", kind="training", description="test-only: a training job in steps",
      params=[Param("steps", "int", 5), Param("delay", "float", 0.05), Param("fail", "str", "")])
def _steps(ctx, image, params, inputs):
    for step in range(params["steps"]):
        ctx.progress(step / params["steps"], f"step {step + 1}")
        time.sleep(params["delay"])
    if params["fail"] == "exit":
        os._exit(3)
    if params["fail"] == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if params["fail"] == "input":
        raise InputError("bad training data on purpose")
    mask = image.array > 0
    crop = np.ones((2, 2, 1), bool)
    return JobResult(masks={"pos": mask}, arrays={"weights": inputs["w"] * 2},
                     info={"pid": os.getpid(), "session": ctx.session, "image_id": image.fingerprint(),
                           "threads": os.environ.get("OMP_NUM_THREADS"), "nice": os.nice(0) if hasattr(os, "nice") else 0},
                     crops={"pos": ((1, 2, 3), crop)})


@task("test.train.stubborn", kind="training", needs_image=False, params=[],
      description="test-only: a training job that never reaches a cancel point")
def _stubborn(ctx, image, params, inputs):
    ctx.progress(0.1, "sleeping")
    time.sleep(120)
    return JobResult()


@task("test.train.click", params=[Param("watch", "int", None)], description="test-only: an interactive job")
def _click(ctx, image, params, inputs):
    import torch

    state = None
    if params["watch"]:  # the state of another process while this job runs (T: stopped)
        with open(f"/proc/{params['watch']}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    return JobResult(info={"pid": os.getpid(), "threads": torch.get_num_threads(), "watched": state})


@pytest.fixture(scope="module")
def be():
    b = LocalBackend("cpu", training="process")
    b.worker.training.cancel_grace = 0.5
    yield b
    b.close()


@pytest.fixture
def vol():
    rng = np.random.default_rng(0)
    return Volume(rng.normal(size=(6, 7, 5)).astype(np.float32), (0.8, 0.8, 2.0), name="t")


def _wait_for(pred, timeout=60.0):
    t0 = time.time()
    while not pred():
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.02)


def test_training_runs_in_its_own_process_with_events_and_result(be, vol):
    image_id = be.set_image(vol)
    w = np.arange(6, dtype=np.float32)
    job = be.start_job("test.train.steps", image_id, {"steps": 4},
                       {"w": w})
    events = []
    assert be.wait(job, timeout=60, on_event=events.append) == JobState.DONE
    r = be.result(job)
    assert r.info["pid"] != os.getpid() and r.info["pid"] == be.worker.jobs[job].pid
    assert r.info["session"] is None and r.info["image_id"] == image_id
    assert r.info["threads"] == str(be.worker.training.threads)
    assert r.info["nice"] >= be.worker.training.nice
    np.testing.assert_array_equal(r.masks["pos"], vol.array > 0)
    np.testing.assert_array_equal(r.arrays["weights"], w * 2)
    assert r.crops["pos"][0] == (1, 2, 3) and r.crops["pos"][1].shape == (2, 2, 1)
    msgs = [e.message for e in events]
    assert [f"step {i}" for i in range(1, 5)] == [m for m in msgs if m.startswith("step")]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert events[-1].state == JobState.DONE


def test_training_job_is_cancellable(be, vol):
    job = be.start_job("test.train.steps", be.set_image(vol), {"steps": 2000, "delay": 0.01}, {"w": np.zeros(1)})
    _wait_for(lambda: any(e.message.startswith("step") for e in be.events(job)))
    t0 = time.time()
    be.cancel(job)
    assert be.wait(job, timeout=30) == JobState.CANCELLED
    assert time.time() - t0 < 5
    with pytest.raises(JobFailed):
        be.result(job)
    _wait_for(lambda: not be.worker.training._running, 10)


def test_a_job_that_ignores_cancel_is_terminated(be):
    job = be.start_job("test.train.stubborn")
    _wait_for(lambda: any(e.message == "sleeping" for e in be.events(job)))
    pid = be.worker.jobs[job].pid
    be.cancel(job)
    assert be.wait(job, timeout=30) == JobState.CANCELLED
    _wait_for(lambda: not _alive(pid), 10)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie is dead for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


@pytest.mark.parametrize("how, expect", [("exit", "exited with code 3"), ("segv", "SIGSEGV")])
def test_a_crashing_training_job_fails_cleanly_and_the_worker_keeps_serving(be, vol, how, expect):
    image_id = be.set_image(vol)
    job = be.start_job("test.train.steps", image_id, {"steps": 1, "fail": how}, {"w": np.zeros(1)})
    assert be.wait(job, timeout=60) == JobState.FAILED
    with pytest.raises(JobFailed, match=expect):
        be.result(job)
    click = be.start_job("test.train.click", image_id)
    assert be.wait(click, timeout=10) == JobState.DONE
    assert be.result(click).info["pid"] == os.getpid()


def test_a_training_error_is_the_tasks_message(be, vol):
    job = be.start_job("test.train.steps", be.set_image(vol), {"steps": 1, "fail": "input"}, {"w": np.zeros(1)})
    assert be.wait(job, timeout=60) == JobState.FAILED
    with pytest.raises(JobFailed, match="bad training data on purpose"):
        be.result(job)


def test_invalid_training_params_are_refused_before_a_process_starts(be, vol):
    with pytest.raises(InputError, match="steps"):
        be.start_job("test.train.steps", be.set_image(vol), {"steps": "many"})


@pytest.mark.parametrize("pause", [True, False])
def test_interactive_jobs_complete_while_training_runs(be, vol, pause):
    """Clicks are served while a training process runs, and never share their cores with it: it is
    paused (SIGSTOP) for the length of each click, or, without pausing, the click uses fewer threads."""
    image_id = be.set_image(vol)
    be.wait(be.start_job("test.train.click", image_id), timeout=10)  # the worker knows its own thread count
    base = be.worker._base_threads or __import__("torch").get_num_threads()
    be.worker.pause_training = pause
    try:
        train = be.start_job("test.train.steps", image_id, {"steps": 400, "delay": 0.01}, {"w": np.zeros(1)})
        _wait_for(lambda: any(e.message.startswith("step") for e in be.events(train)))
        pid = be.worker.jobs[train].pid
        for _ in range(3):
            click = be.start_job("test.train.click", image_id, {"watch": pid})
            assert be.wait(click, timeout=5) == JobState.DONE
            info = be.result(click).info
            if pause:
                assert info["watched"] == "T" and info["threads"] == base
            else:
                assert info["watched"] != "T"
                assert info["threads"] == max(1, min(base, os.cpu_count() - be.worker.training.threads))
        assert be.state(train) == JobState.RUNNING  # the clicks did not wait for the training job
        seen = len(be.events(train))
        _wait_for(lambda: len(be.events(train)) > seen + 2, 10)  # and it trains on after them
        be.cancel(train)
        assert be.wait(train, timeout=30) == JobState.CANCELLED
        _wait_for(lambda: not be.worker.training._running, 10)
        click = be.start_job("test.train.click", image_id)
        assert be.wait(click, timeout=5) == JobState.DONE and be.result(click).info["threads"] == base
    finally:
        be.worker.pause_training = True


def test_thread_mode_runs_training_beside_the_worker(vol):
    with LocalBackend("cpu", training="thread") as b:
        job = b.start_job("test.train.steps", b.set_image(vol), {"steps": 2}, {"w": np.ones(2, np.float32)})
        assert b.wait(job, timeout=30) == JobState.DONE
        assert b.result(job).info["pid"] == os.getpid()


def test_a_real_training_task_runs_in_its_own_process(be):
    """scribble.train (kind training) off the worker thread: in a child process, with the model back."""
    from medsegsuite.engine.tasks import get_task
    from medsegsuite.scribble.generator import make_scribbles

    assert {get_task(t).kind for t in ("scribble.train", "scribble.quick", "cosam.train", "dyna.night")} == {"training"}
    lab = np.zeros((32, 32, 8), np.uint8)
    lab[8:24, 10:22, :] = 1
    img = np.where(lab > 0, 100.0, 0.0).astype(np.float32) + np.random.default_rng(0).normal(size=lab.shape)
    vol = Volume(img.astype(np.float32), (1.0, 1.0, 2.0))
    sc = make_scribbles(lab, 2, [2, 5], plane="axial", seed=0)
    job = be.start_job("scribble.train", be.set_image(vol), {"classes": ["box"], "iterations": 3, "batch": 2,
                                                            "net": {"channels": [4, 8], "strides": [2]}},
                       {"scribbles": sc})
    events = []
    assert be.wait(job, timeout=300, on_event=events.append) == JobState.DONE, be.worker.jobs[job].error
    pid = be.worker.jobs[job].pid
    assert pid and pid != os.getpid() and any(e.message == f"training in process {pid}" for e in events)
    r = be.result(job)
    assert r.arrays["model"].dtype == np.uint8 and r.arrays["model"].size > 100 and r.info["classes"] == ["box"]


def test_a_task_defined_in_a_function_runs_on_a_thread(be):
    """A child process cannot import such a task: it still runs, off the interactive worker."""
    import threading

    @task("test.train.local", kind="training", needs_image=False, params=[])
    def _local(ctx, image, params, inputs):
        return JobResult(info={"pid": os.getpid(), "thread": threading.current_thread().name})

    job = be.start_job("test.train.local")
    assert be.wait(job, timeout=30) == JobState.DONE
    info = be.result(job).info
    assert info["pid"] == os.getpid() and info["thread"].startswith("medsegsuite-training-")
