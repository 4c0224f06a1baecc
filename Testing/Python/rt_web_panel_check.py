"""Run by test_rt_walk_widget.py in the web environment (.venv-web: trame, trame-slicer, slicer-core 5.11):
the web Structures panel (MedSegSuiteWeb/structures_panel.py) built on a real trame server and walked
through its actions on a real slicer-core scene with the real LocalBackend. Each job is recorded and runs
as a small test task returning a box named after the requested structure (the real tasks are tested
elsewhere). Prints OK at the end; any failed check raises."""
import asyncio
import sys
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "MedSegSuite"), str(ROOT / "SelfCorrectingSAM")]

from trame.app import get_server  # noqa: E402
from trame.ui.html import DivLayout  # noqa: E402

from medsegsuite.engine import JobResult, LocalBackend, task  # noqa: E402
from medsegsuite.volume import Geometry, Volume  # noqa: E402

G = Geometry((24, 20, 6), (0.8, 0.8, 2.5), (10.0, -5.0, 3.0))
BOX = (slice(4, 12), slice(5, 14), slice(1, 5))
JOBS = []


@task("test.rtweb.box", description="test-only: a box mask named after the requested structure")
def _box(ctx, image, params, inputs):
    m = np.zeros(image.shape, bool)
    m[BOX] = True
    return JobResult(masks={params["structure"]: m}, info={"structure": params["structure"]})


class Recorder:
    def __init__(self, real):
        self.real = real

    def __getattr__(self, name):
        attr = getattr(self.real, name)
        if name != "start_job":
            return attr

        def start_job(task_name, image_id, params=None, inputs=None, *a, **k):
            JOBS.append((task_name, dict(params or {})))
            return attr("test.rtweb.box", image_id, {"structure": (params or {}).get("structure")}, inputs)
        return start_job


def main():
    from MedSegSuiteLib import segments as S
    from MedSegSuiteLib.scene import new_scene
    from MedSegSuiteLib.structures import status
    from MedSegSuiteLib.volumes import volume_to_node

    from MedSegSuiteWeb.structures_panel import StructuresPanel, parse_box

    server = get_server("rt-structures-check", client_type="vue3")
    scene = new_scene()
    rng = np.random.default_rng(0)
    volume_node = volume_to_node(Volume.from_geometry(rng.normal(size=G.shape).astype(np.float32), G, "img"), scene,
                                 "img")
    seg = S.new_segmentation_node(scene, "plan", G)
    backend = Recorder(LocalBackend("cpu"))
    changed = []
    app = types.SimpleNamespace(server=server, state=server.state, backend=lambda: backend, volume_node=volume_node,
                                segmentation_node=lambda: seg, segments_changed=lambda: changed.append(1),
                                scene=scene)
    asyncio.set_event_loop(asyncio.new_event_loop())
    panel = StructuresPanel(app)
    with DivLayout(server) as layout:
        panel.build()
    html = layout.html
    for text in ("Add structures", "Next", "Reviewed", "Approve", "Reopen", "Axial slice", 'aria-label="Structures"'):
        assert text in html, text

    def run_job():
        t_end = time.time() + 60
        while True:
            panel.poll()
            if not panel._starting and not panel.logic.runner.busy and not panel._was_busy:
                break
            assert time.time() < t_end, "the draft did not end"
            time.sleep(0.02)

    state = server.state
    assert "abdomen" in state.rt_templates
    state.rt_template = "abdomen"
    panel.apply_template()
    assert state.rt_error == "", state.rt_error
    assert len(state.rt_rows) == 14 and state.rt_current == "Liver" and changed
    assert {"Liver", "GTVp"} <= set(S.segment_names(seg))
    panel.run_or_cancel()  # Draft: CoSAM with the model
    run_job()
    assert JOBS[-1][0] == "cosam.segment" and JOBS[-1][1]["structure"] == "Liver", JOBS
    assert status(seg, "Liver") == "drafted" and state.rt_status_current == "drafted"
    panel.set_status("approved")  # one step at a time: refused, shown, nothing changed
    assert "reviewed" in state.rt_error and status(seg, "Liver") == "drafted"
    panel.set_status("reviewed")
    panel.set_status("approved")
    assert status(seg, "Liver") == "approved" and not state.rt_can_draft
    n = len(JOBS)
    panel.run_or_cancel()  # Draft an approved structure: refused before any job
    assert "locked" in state.rt_error and len(JOBS) == n
    panel.next()
    assert state.rt_current == "GTVp"
    state.rt_use_box, state.rt_box, state.rt_box_slice = True, "4, 5, 13 12", 2
    panel.run_or_cancel()  # Draft from a typed box + propagation
    run_job()
    assert JOBS[-1] == ("sam.propagate", {"structure": "GTVp", "plane": "axial", "slice": 2, "box": [4, 5, 13, 12]}), \
        JOBS[-1]
    assert status(seg, "GTVp") == "drafted" and status(seg, "Liver") == "approved"
    state.rt_box = "4 5 13"
    panel.run_or_cancel()
    run_job()
    assert "four numbers" in state.rt_error and panel._drafting is None
    assert parse_box("1,2 3 4") == [1, 2, 3, 4]
    panel.select("Liver")
    panel.set_status("reviewed")  # reopen
    assert status(seg, "Liver") == "reviewed" and state.rt_can_draft
    backend.real.close()
    print("OK")


if __name__ == "__main__":
    main()
