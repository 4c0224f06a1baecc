"""Fixtures for running the MRML tests without conftest.py (and without torch), e.g. on another
slicer-core version: see scripts/check_slicer_core_compat.sh. Same as conftest.py's oblique_volume."""
import numpy as np
import pytest


@pytest.fixture
def oblique_volume():
    from scipy.spatial.transform import Rotation

    from medsegsuite.volume import Volume

    d = Rotation.from_euler("xyz", [12, -25, 40], degrees=True).as_matrix()
    rng = np.random.default_rng(0)
    return Volume(rng.normal(size=(9, 11, 7)).astype(np.float32) * 100, (0.6, 0.8, 2.5),
                  (12.5, -30.0, 44.0), d, name="oblique")
