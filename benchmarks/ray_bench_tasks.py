"""Benchmark-only tasks for benchmarks/ray_serve.py, imported by the plain server and by each Ray replica.

``bench.echo`` does nothing (a job's round trip is all protocol and routing); ``bench.cpu`` is real
CPU-bound work per slice (Gaussian smoothing and a threshold of a synthetic image), a stand-in for a
segmenter's compute that a 2-core machine can run many times."""
import os

import numpy as np
from medsegsuite.engine import JobResult, task
from scipy import ndimage


@task("bench.echo", description="benchmark-only: returns at once", params=[])
def _echo(ctx, image, params, inputs):
    return JobResult(info={"pid": os.getpid()})


@task("bench.cpu", description="benchmark-only: Gaussian smoothing + threshold, slice by slice", params=[])
def _cpu(ctx, image, params, inputs):
    a = np.asarray(image.array, np.float32)
    out = np.zeros(a.shape, bool)
    for k in range(a.shape[2]):
        ctx.progress(k / a.shape[2])
        sm = ndimage.gaussian_filter(a[:, :, k], 3.0)
        out[:, :, k] = sm > 0.5 * sm.max()
    return JobResult(masks={"object": out}, info={"pid": os.getpid()})
