"""The hub panel shows the live backend's connection state and the server's device."""
import sys
from pathlib import Path

import pytest

pytest.importorskip("slicer")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def hub_logic():
    if str(ROOT / "MedSegSuite") not in sys.path:
        sys.path.insert(0, str(ROOT / "MedSegSuite"))
    import MedSegSuite
    from MedSegSuiteLib import backends

    yield MedSegSuite.MedSegSuiteLogic(), backends
    backends.reset_backend()


def test_local_backend_state(hub_logic):
    logic, backends = hub_logic
    from medsegsuite.engine import LocalBackend

    b = LocalBackend("cpu")
    try:
        backends.set_backend(b)
        assert logic.connection_state() == "Local backend on cpu"
    finally:
        b.close()


def test_remote_state_follows_the_server(hub_logic, tmp_path):
    logic, backends = hub_logic
    from medsegsuite.client import RemoteBackend
    from medsegsuite.server import ServerConfig, start_in_thread

    srv = start_in_thread(ServerConfig(port=0, api_key="hub-test-key-0123456789", device="cpu"))
    stopped = False
    try:
        remote = RemoteBackend(srv.url, api_key="hub-test-key-0123456789", heartbeat=False)
        backends.set_backend(remote)
        text = logic.connection_state()
        assert text.startswith("connected") and srv.url in text and "server device" in text
        srv.stop()
        stopped = True
        assert not remote.ping()["ok"]
        assert not logic.connection_state().startswith("connected")
        remote.close()
    finally:
        if not stopped:
            srv.stop()
