"""Shared body of the panels' Slicer self-tests: run a panel's logic on LiTS-117 and check it.

Inside Slicer the scene is ``slicer.mrmlScene``; on slicer-core a fresh scene. A self-test first
makes sure of what it needs (:func:`ensure_requirements`: the backend's Python packages and the
LiTS-117 package, installed after ONE confirmation that lists them), then runs the job, which must
end *done* with a good enough Dice: a failed job fails the test, whatever its message.
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


def requirements() -> list[str]:
    """What a self-test still needs installed: pip requirements (the LiTS-117 one with --no-deps)."""
    from . import dependencies
    from .sampledata import PACKAGE, sample_package_missing

    return dependencies.missing_packages() + ([f"{PACKAGE} (--no-deps)"] if sample_package_missing() else [])


def ensure_requirements(test, confirm=None, pip_install=None) -> None:
    """Install what the self-test needs after ONE confirmation listing it; fail the test if the user
    declines or the install does not help. ``confirm(text) -> bool`` and ``pip_install(args)`` default
    to Slicer's (in a ``ctest`` run, where nobody can answer, the confirmation is implied)."""
    from . import dependencies
    from .sampledata import install_sample_package, sample_package_missing

    needed = requirements()
    if not needed:
        return
    if confirm is None:
        import slicer

        app = getattr(slicer, "app", None)
        if app is not None and hasattr(app, "testingEnabled") and app.testingEnabled():
            def confirm(_text):
                return True
        else:
            def confirm(text):
                return slicer.util.confirmOkCancelDisplay(text, windowTitle="MedSegSuite self-test")
    text = ("This self-test needs these Python packages, not installed yet:\n\n  " + "\n  ".join(needed)
            + "\n\nInstall them now with pip?")
    if not confirm(text):
        test.fail("the self-test needs " + ", ".join(needed) + " (installation declined)")
    missing = dependencies.missing_packages()
    if missing:
        dependencies.install(missing, pip_install)
    if sample_package_missing():
        install_sample_package(pip_install)
    still = requirements()
    if still:
        test.fail("still missing after installation: " + ", ".join(still) + " (restart Slicer and run it again)")


def run_on_lits(test, logic, options: dict, structure: str = "liver", min_dice: float = 0.5,
                slices=SLICES, timeout: float = 900, prepare=None):
    """Run ``logic`` on LiTS-117 with ``options`` (plus ``prepare(scene, volume_node, ref_node)`` ->
    more options); the job must end *done* and reach Dice >= ``min_dice`` on ``slices`` for
    ``structure``. Returns the Dice."""
    ensure_requirements(test)
    scene = test_scene()
    volume_node, ref_node = load_lits117(scene)
    if prepare is not None:
        options = {**options, **prepare(scene, volume_node, ref_node)}
    runner = logic.run(volume_node, None, timeout=timeout, **options)
    test.assertEqual(runner.phase, Phase.DONE, f"{runner.task} ended {runner.phase.value}: {runner.error}")
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


__all__ = ["ensure_requirements", "requirements", "run_on_lits", "slice_spec", "test_scene"]
