"""Test-only tasks imported by Ray replicas and batch workers (``task_modules``): small real numpy/scipy
work with progress, so a 2-core machine can run several at once. Each result says which process ran it
and when, so tests can tell which replica served a job and whether two jobs overlapped in time."""
import os
import time

import numpy as np
from medsegsuite.engine import JobResult, task
from scipy import ndimage


@task("test_ray.smooth", description="test-only: Otsu-free threshold of a smoothed image, slice by slice, "
      "with progress (a stand-in for a segmenter)", params=[])
def _smooth(ctx, image, params, inputs):
    t0 = time.time()
    a = np.asarray(image.array, np.float32)
    out = np.zeros(a.shape, bool)
    seconds = float(os.environ.get("MEDSEGSUITE_TEST_SLICE_S", "0.15"))
    for k in range(a.shape[2]):
        ctx.progress(k / a.shape[2], f"slice {k + 1}/{a.shape[2]}")
        end = time.time() + seconds  # a fixed wall time per slice (sleeping): on a loaded 2-core box a CPU
        sm = ndimage.gaussian_filter(a[:, :, k], 1.0)  # loop would measure the machine, not the routing
        out[:, :, k] = sm > 0.5 * sm.max()
        while time.time() < end:
            ctx.check_cancelled()
            time.sleep(0.01)
    return JobResult(masks={"object": out}, info={"pid": os.getpid(), "start": t0, "end": time.time()})
