"""The real LiteMedSAM task on a server: bit-identical masks to a local run, and one embedding cache
shared by every client of the server."""
import numpy as np
import pytest

from medsegsuite.client import RemoteBackend
from medsegsuite.engine import LocalBackend
from medsegsuite.engine.interface import run_job
from medsegsuite.metrics import dice
from medsegsuite.server import ServerConfig, start_in_thread

SLICES = [60, 61]


@pytest.fixture(scope="module")
def sam_server():
    s = start_in_thread(ServerConfig(port=0, device="cpu"))
    yield s
    s.stop()


def test_oracle_box_remote_is_bit_identical_to_local(sam_server, lits):
    ct, ref = lits
    params = {"plane": "axial", "slices": SLICES, "window": [-160.0, 240.0]}
    inputs = {name: ref.masks[name] for name in ("liver", "tumour")}
    with LocalBackend("cpu") as lb:
        local = run_job(lb, "sam.oracle_box", ct, params, inputs, timeout=300)
    with RemoteBackend(sam_server.url, client_name="sam-a") as a:
        remote = run_job(a, "sam.oracle_box", ct, params, inputs, timeout=300)
        sent = a.stats["bytes_sent"]
        # a second client while the first holds the image: no upload, and no slice encoded again
        with RemoteBackend(sam_server.url, client_name="sam-b") as b:
            again = run_job(b, "sam.oracle_box", ct, params, inputs, timeout=300)
            assert b.stats["bytes_sent"] < 100_000
    assert set(remote.masks) == {"liver", "tumour"}
    for name, m in local.masks.items():
        assert remote.masks[name].shape == ct.shape and remote.masks[name].dtype == m.dtype
        assert np.array_equal(remote.masks[name], m), name
    assert remote.info == local.info and remote.info["encoder_calls"] == len(SLICES)
    sl = remote.masks["liver"][:, :, SLICES]
    assert dice(sl, ref.masks["liver"][:, :, SLICES]) > 0.8
    assert sent < ct.array.nbytes  # the CT travelled compressed, once
    assert again.info["encoder_calls"] == 0
    assert all(np.array_equal(again.masks[k], local.masks[k]) for k in local.masks)
    assert not sam_server.state.backend.images  # both clients gone: the image and its embeddings are freed
