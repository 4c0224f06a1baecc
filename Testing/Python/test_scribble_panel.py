"""ScribbleSeg panel logic on real MRML nodes (slicer-core): train from a scribble segmentation,
segment into new segments with undo, re-train from the last model, train on several cases."""
import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

slicer = pytest.importorskip("slicer")

ROOT = Path(__file__).resolve().parents[2]
FAST = {"batch": 2, "net": {"channels": [8, 16], "strides": [2]}}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: one thread is faster, and robust on shared cores
    yield
    torch.set_num_threads(n)


def _logic(backend):
    if str(ROOT / "ScribbleSeg") not in sys.path:
        sys.path.insert(0, str(ROOT / "ScribbleSeg"))
    return importlib.import_module("ScribbleSeg").ScribbleSegLogic(backend_provider=lambda: backend)


def _case(scene, name, seed):
    from MedSegSuiteLib import segments
    from MedSegSuiteLib.volumes import volume_to_node

    from medsegsuite.scribble.generator import make_scribbles
    from medsegsuite.volume import Volume

    rng = np.random.default_rng(seed)
    i, j = np.mgrid[:32, :32]
    lab = np.zeros((32, 32, 6), np.uint8)
    img = rng.normal(0, 10, lab.shape).astype(np.float32)
    for k in range(6):
        m = ((i - 15) / 8) ** 2 + ((j - 17) / 6) ** 2 < 1
        lab[..., k] = m
        img[..., k] += 100 * m
    vol = Volume(img, (1.0, 1.0, 2.0), name=name)
    node = volume_to_node(vol, scene, name)
    sc = make_scribbles(lab, 2, [1, 4], plane="axial", seed=seed, margin_mm=3)
    snode = segments.new_segmentation_node(scene, f"{name} scribbles", vol.geometry)
    segments.write_masks(snode, {"background": sc == 0, "organ": sc == 1}, vol.geometry, undoable=False)
    return node, snode, lab


def test_panel_train_segment_undo_retrain_and_cases(backend):
    from MedSegSuiteLib import segments
    from MedSegSuiteLib.jobs import Phase
    from MedSegSuiteLib.volumes import volume_from_node

    from medsegsuite.errors import InputError
    from medsegsuite.metrics import dice

    scene = slicer.vtkMRMLScene()
    vol, scr, lab = _case(scene, "a", 0)
    logic = _logic(backend)
    with pytest.raises(InputError, match="no model to continue from"):
        logic.request(volume_from_node(vol), vol, None, mode="train", scribbles_node=scr, continue_training=True)
    r = logic.run(vol, None, mode="train", scribbles_node=scr, settings=FAST, iterations=60, timeout=120)
    assert r.phase == Phase.DONE, r.error
    assert logic.model_bytes is not None and logic.model_classes == ["organ"]
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 1  # training writes nothing

    r = logic.run(vol, None, mode="segment", timeout=60)
    assert r.phase == Phase.DONE, r.error
    out = logic.segmentation_node
    assert out is not None and out is not scr and segments.segment_names(out) == ["organ"]
    g = volume_from_node(vol).geometry
    organ = segments.read_masks(out, g, ["organ"])["organ"]
    assert dice(organ, lab == 1) > 0.7
    assert logic.undo(out) and "organ" not in segments.segment_names(out)  # the new segment is gone

    # re-train after more scribbles, starting from the last model
    first = logic.model_bytes
    task, params, inputs = logic.request(volume_from_node(vol), vol, None, mode="train", scribbles_node=scr,
                                         continue_training=True, iterations=5)
    assert inputs["init_model"] is first and params["iterations"] == 5 and params["plane"] == "axial"
    r = logic.run(vol, None, mode="train", scribbles_node=scr, settings=FAST, iterations=5, continue_training=True,
                  timeout=60)
    assert r.phase == Phase.DONE, r.error
    assert logic.model_bytes is not first

    # several cases
    vol2, scr2, _ = _case(scene, "b", 1)
    assert logic.add_case(vol2, scr2) == 1
    with pytest.raises(InputError, match="already"):
        logic.add_case(vol2, scr2)
    task, params, inputs = logic.request(volume_from_node(vol), vol, None, mode="train", scribbles_node=scr)
    assert inputs["image_1"].shape == (32, 32, 6) and set(np.unique(inputs["scribbles_1"])) == {0, 1, 255}
    assert params["case_geometry"]["1"]["spacing"] == [1.0, 1.0, 2.0]
    with pytest.raises(InputError, match="Quick trains on this volume only"):
        logic.request(volume_from_node(vol), vol, None, mode="quick", scribbles_node=scr)
    r = logic.run(vol, None, mode="train", scribbles_node=scr, settings=FAST, iterations=5, timeout=60)
    assert r.phase == Phase.DONE, r.error
    logic.clear_cases()
    assert logic.cases == []


def test_panel_grow_from_seeds_mode_needs_no_training(backend):
    """The panel's quick, no-training option: Slicer's Grow from seeds on the scribbles, written as a
    segment (one undo step) without a model."""
    from MedSegSuiteLib import segments
    from MedSegSuiteLib.jobs import Phase
    from MedSegSuiteLib.volumes import volume_from_node

    from medsegsuite.errors import InputError
    from medsegsuite.metrics import dice

    scene = slicer.vtkMRMLScene()
    vol, scr, lab = _case(scene, "grow", 3)
    logic = _logic(backend)
    with pytest.raises(InputError, match="scribbles"):
        logic.request(volume_from_node(vol), vol, None, mode="grow")
    task, params, _ = logic.request(volume_from_node(vol), vol, None, mode="grow", scribbles_node=scr)
    assert task == "scribble.grow" and params["classes"] == ["organ"]
    r = logic.run(vol, None, mode="grow", scribbles_node=scr, timeout=300)
    assert r.phase == Phase.DONE, r.error
    assert logic.model_bytes is None  # nothing trained
    out = logic.segmentation_node
    organ = segments.read_masks(out, volume_from_node(vol).geometry, ["organ"])["organ"]
    assert dice(organ, lab == 1) > 0.9
    assert logic.undo(out) and "organ" not in segments.segment_names(out)
