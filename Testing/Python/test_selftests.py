"""The modules' Slicer self-tests: they install what they need after one confirmation, fail when
the job fails, and LiTS-117 loads through Slicer's Sample Data path (a file URL) without the GUI."""
import types
import unittest
import urllib.request

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from MedSegSuiteLib import dependencies, sampledata, selftest  # noqa: E402


class Case(unittest.TestCase):
    __test__ = False  # a stand-in for the self-test instance, not a test of its own

    def runTest(self):  # noqa: N802 - unittest's name
        pass

    def delayDisplay(self, message, msec=0):  # noqa: N802 - Slicer's name
        print(message)


def test_a_failed_job_fails_the_self_test(backend):
    from MedSegSuiteLib.panel import MethodLogic

    class Broken(MethodLogic):
        TASK = "no.such.task"

    with pytest.raises(AssertionError, match="no.such.task ended failed: unknown task"):
        selftest.run_on_lits(Case(), Broken(lambda: backend), {})


def test_requirements_are_installed_after_one_confirmation(monkeypatch):
    state = {"einops": False, "lits": False}
    monkeypatch.setattr(dependencies, "missing_packages", lambda *a: [] if state["einops"] else ["einops"])
    monkeypatch.setattr(sampledata, "sample_package_missing", lambda: not state["lits"])
    asked, pip = [], []

    def pip_install(args):
        pip.append(args)
        state["einops" if args == "einops" else "lits"] = True

    selftest.ensure_requirements(Case(), confirm=lambda text: asked.append(text) or True, pip_install=pip_install)
    assert len(asked) == 1 and "einops" in asked[0] and "liver-ct-segmentation-package==1.6.0" in asked[0]
    assert pip == ["einops", "--no-deps liver-ct-segmentation-package==1.6.0"]  # its deps pin torch 1.7: never
    assert selftest.requirements() == []
    selftest.ensure_requirements(Case(), confirm=lambda text: asked.append(text), pip_install=pip.append)
    assert len(asked) == 1  # nothing missing: nothing asked


def test_declining_the_install_fails_the_self_test(monkeypatch):
    monkeypatch.setattr(sampledata, "sample_package_missing", lambda: True)
    pip = []
    with pytest.raises(AssertionError, match="installation declined"):
        selftest.ensure_requirements(Case(), confirm=lambda text: False, pip_install=pip.append)
    assert pip == []


def test_lits_sample_loads_through_sample_data_without_the_gui(tmp_path, lits):
    """What SampleData.downloadSample("LiTS-117") does: fetch the registered URI into the cache and
    load it as a volume file. The URI is a real file URL, not a made-up scheme."""
    from MedSegSuiteLib.volumes import volume_from_node

    registered = {}
    fake = types.SimpleNamespace(SampleDataLogic=types.SimpleNamespace(
        registerCustomSampleDataSource=lambda **kw: registered.update(kw)))
    assert sampledata.register_sample_data(sample_data=fake)
    assert registered["sampleName"] == "LiTS-117" and registered["loadFileType"] == "VolumeFile"
    (uri,) = registered["uris"]
    assert uri.startswith("file://")
    cached = tmp_path / registered["fileNames"][0]
    urllib.request.urlretrieve(uri, cached)  # Sample Data's download step
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", registered["nodeNames"][0])
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(cached))
    assert storage.ReadData(node)
    vol = volume_from_node(node)
    ct = lits[0]
    np.testing.assert_array_equal(vol.array, ct.array)
    np.testing.assert_allclose(vol.geometry.ijk_to_ras, ct.geometry.ijk_to_ras, atol=1e-6)
