"""LocalBackend: failures are clear and never kill the worker; the queue is fair across clients."""
import threading
import time

import numpy as np
import pytest

from medsegsuite.engine import JobFailed, JobResult, JobState, LocalBackend, task
from medsegsuite.errors import InputError
from medsegsuite.volume import Volume

_order = []
_gate = threading.Event()


@task("test.threshold")
def _threshold(ctx, image, params, inputs):
    for i in range(3):
        ctx.progress((i + 1) / 3, f"step {i + 1}")
    return JobResult(masks={"fg": image.array > params.get("t", 0)})


@task("test.boom", needs_image=False)
def _boom(ctx, image, params, inputs):
    if params.get("oom"):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    raise ZeroDivisionError("bad math")


@task("test.record", needs_image=False)
def _record(ctx, image, params, inputs):
    if params.get("block"):
        _gate.wait(10)
    _order.append(params["name"])
    return JobResult(info={"name": params["name"]})


@pytest.fixture
def b():
    be = LocalBackend("cpu")
    yield be
    be.close()


def test_job_result_and_events(b):
    v = Volume(np.arange(27, dtype=np.float32).reshape(3, 3, 3))
    img = b.set_image(v)
    assert b.set_image(Volume(v.array.copy())) == img  # same content -> same id, no second copy
    job = b.start_job("test.threshold", img, {"t": 13})
    assert b.wait(job, timeout=10) == JobState.DONE
    assert np.array_equal(b.result(job).masks["fg"], v.array > 13)
    ev = b.events(job)
    assert [e.seq for e in ev] == sorted(e.seq for e in ev)
    assert ev[0].state == JobState.QUEUED and ev[-1].state == JobState.DONE


def test_failures_are_clear_and_the_worker_survives(b):
    job = b.start_job("test.boom", None, {})
    assert b.wait(job, timeout=10) == JobState.FAILED
    with pytest.raises(JobFailed, match="bad math"):
        b.result(job)
    job = b.start_job("test.boom", None, {"oom": True})
    b.wait(job, timeout=10)
    with pytest.raises(JobFailed, match="out of memory on cpu"):
        b.result(job)
    ok = b.start_job("test.record", None, {"name": "after"})
    assert b.wait(ok, timeout=10) == JobState.DONE


def test_bad_requests_are_refused_before_queueing(b):
    with pytest.raises(InputError, match="unknown task"):
        b.start_job("no.such.task", None, {})
    with pytest.raises(InputError, match="needs an image"):
        b.start_job("test.threshold", None, {})
    with pytest.raises(InputError, match="unknown image id"):
        b.start_job("test.threshold", "deadbeef", {})
    with pytest.raises(InputError, match="NaN"):
        b.set_image(Volume(np.full((2, 2, 2), np.nan)))


def test_queue_is_round_robin_across_clients(b):
    _order.clear()
    _gate.clear()
    first = b.start_job("test.record", None, {"name": "block", "block": True}, client="a")
    time.sleep(0.2)  # the worker is now busy with 'block'
    for i in range(3):
        b.start_job("test.record", None, {"name": f"a{i}"}, client="a")
    last = b.start_job("test.record", None, {"name": "b0"}, client="b")
    _gate.set()
    b.wait(first, timeout=10)
    b.wait(last, timeout=10)
    time.sleep(0.3)
    # client b's single job is not starved behind all of a's queue
    assert _order.index("b0") < _order.index("a2"), _order
