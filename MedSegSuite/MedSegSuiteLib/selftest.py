"""Shared body of the panels' Slicer self-tests: run a panel's logic on LiTS-117 and check it.

Inside Slicer the scene is ``slicer.mrmlScene``; on slicer-core a fresh scene. When the backend
lacks the task or its model, the job must end *failed* with that message and write nothing — the
check a freshly installed extension passes before its models are imported.
"""
from __future__ import annotations

from medsegsuite.metrics import dice as metric_dice

from .jobs import Phase
from .sampledata import load_lits117
from .segments import read_masks
from .volumes import volume_from_node

SLICES = (62, 64)  # two axial slices through liver and tumour: seconds on a CPU


def test_scene():
    import slicer

    from .scene import new_scene

    scene = getattr(slicer, "mrmlScene", None) or new_scene()
    scene.Clear(0)
    return scene


def run_on_lits(test, logic, options: dict, structure: str = "liver", min_dice: float = 0.5,
                slices=SLICES, timeout: float = 900, prepare=None):
    """Run ``logic`` on LiTS-117 with ``options`` (plus ``prepare(scene, volume_node, ref_node)`` ->
    more options); assert Dice >= ``min_dice`` on ``slices`` for ``structure``, or a clean failure
    that leaves the scene without a result segmentation."""
    scene = test_scene()
    volume_node, ref_node = load_lits117(scene)
    if prepare is not None:
        options = {**options, **prepare(scene, volume_node, ref_node)}
    n_seg = scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    runner = logic.run(volume_node, None, timeout=timeout, **options)
    if runner.phase == Phase.FAILED:
        test.delayDisplay(f"{logic.TASK} not runnable here: {runner.error}")
        test.assertTrue(runner.error)
        test.assertIsNone(logic.segmentation_node)  # nothing written, no empty node left behind
        test.assertEqual(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"), n_seg)
        return None
    test.assertEqual(runner.phase, Phase.DONE, runner.error)
    g = volume_from_node(volume_node).geometry
    out = read_masks(logic.segmentation_node, g)
    test.assertIn(structure, out)
    ref = read_masks(ref_node, g, [structure])[structure]
    lo, hi = slices
    p, r = out[structure][:, :, lo:hi], ref[:, :, lo:hi]
    dice = metric_dice(p, r)
    test.delayDisplay(f"{runner.task}: {structure} Dice on slices {lo}-{hi - 1} = {dice:.3f}")
    test.assertGreaterEqual(dice, min_dice)
    return dice


def slice_spec(slices=SLICES) -> str:
    return f"{slices[0]}:{slices[1]}"


__all__ = ["run_on_lits", "slice_spec", "test_scene"]
