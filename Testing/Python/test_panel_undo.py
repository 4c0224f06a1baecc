"""A panel's Undo/Redo while its own job runs (MethodLogic, real slicer-core MRML, the real local backend).

Undo pressed while a job of the same panel is running used to revert the previous result and then let
the job write its result on top (seen in the web panel: the segment vanished, then came back under a
new id). It is refused now, and nothing changes; once the job is done, Undo steps back as usual."""
import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

ROOT = Path(__file__).resolve().parents[2]


def _scribble_logic(backend):
    if str(ROOT / "ScribbleSeg") not in sys.path:
        sys.path.insert(0, str(ROOT / "ScribbleSeg"))
    return importlib.import_module("ScribbleSeg").ScribbleSegLogic(backend_provider=lambda: backend)


def test_undo_and_redo_wait_for_the_running_job(backend):
    from MedSegSuiteLib import segments
    from MedSegSuiteLib.jobs import Phase
    from MedSegSuiteLib.volumes import volume_to_node

    from medsegsuite.errors import InputError
    from medsegsuite.volume import Volume

    # synthetic: a bright disc in noise on 6 slices, one scribble inside and one outside per slice
    rng = np.random.default_rng(0)
    i, j = np.mgrid[:32, :32]
    disc = ((i - 15) / 8) ** 2 + ((j - 17) / 6) ** 2 < 1
    img = rng.normal(0, 10, (32, 32, 6)).astype(np.float32) + 100 * disc[..., None]
    scene = slicer.vtkMRMLScene()
    vol = volume_to_node(Volume(img, (1.0, 1.0, 2.0), name="disc"), scene, "disc")
    g = Volume(img, (1.0, 1.0, 2.0)).geometry
    organ, background = np.zeros(img.shape, bool), np.zeros(img.shape, bool)
    organ[14:17, 15:19, :] = True
    background[1:3, :, :] = True
    scribbles = segments.new_segmentation_node(scene, "scribbles", g)
    segments.write_masks(scribbles, {"background": background, "organ": organ}, g, undoable=False)

    out = segments.new_segmentation_node(scene, "result", g)
    first = np.zeros(img.shape, bool)
    first[10:20, 10:20, :] = True
    segments.write_masks(out, {"organ": first}, g)           # an earlier AI result: one undo step

    logic = _scribble_logic(backend)
    runner = logic.start(vol, out, mode="grow", scribbles_node=scribbles)   # busy until polled
    assert runner.busy
    for step in (logic.undo, logic.redo):
        with pytest.raises(InputError, match="running job"):
            step(out)
    assert np.array_equal(segments.read_masks(out, g, ["organ"])["organ"], first)   # nothing changed
    assert runner.wait(300) == Phase.DONE, runner.error
    assert not np.array_equal(segments.read_masks(out, g, ["organ"])["organ"], first)
    assert logic.undo(out)                                    # the job's write is reverted ...
    assert np.array_equal(segments.read_masks(out, g, ["organ"])["organ"], first)
    assert logic.undo(out) and "organ" not in segments.segment_names(out)   # ... then the earlier one
