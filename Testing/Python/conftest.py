"""Shared test set-up: few torch threads (CI has 2 cores), a private model folder, sample data."""
import os

os.environ.setdefault("MEDSEGSUITE_THREADS", "2")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def pytest_configure(config):
    import torch

    torch.set_num_threads(int(os.environ["MEDSEGSUITE_THREADS"]))


@pytest.fixture(autouse=True)
def _private_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MEDSEGSUITE_HOME", str(tmp_path_factory.getbasetemp() / "home"))
    # built encoder routes (sam/encoder_routes.py) are shared by every test of the session, even those
    # that point MEDSEGSUITE_HOME somewhere else
    monkeypatch.setenv("MEDSEGSUITE_ENCODER_CACHE", str(tmp_path_factory.getbasetemp() / "encoders"))


@pytest.fixture(scope="session")
def lits():
    from medsegsuite.sampledata import lits117

    return lits117()


@pytest.fixture(scope="session")
def backend():
    from medsegsuite.engine import LocalBackend

    b = LocalBackend("cpu")
    yield b
    b.close()


@pytest.fixture
def oblique_volume():
    """A small volume with a non-axis-aligned direction and anisotropic spacing."""
    from scipy.spatial.transform import Rotation

    from medsegsuite.volume import Volume

    d = Rotation.from_euler("xyz", [12, -25, 40], degrees=True).as_matrix()
    rng = np.random.default_rng(0)
    return Volume(rng.normal(size=(9, 11, 7)).astype(np.float32) * 100, (0.6, 0.8, 2.5),
                  (12.5, -30.0, 44.0), d, name="oblique")
