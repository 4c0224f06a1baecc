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


def test_model_list_and_import_go_to_the_backend_in_use(hub_logic, tmp_path, monkeypatch):
    """Remote: the hub lists the server's models and an import uploads to the server, not the local
    registry; local: the same calls reach this computer's registry through LocalBackend."""
    import torch

    logic, backends = hub_logic
    from MedSegSuiteLib.panel import MethodLogic
    from medsegsuite.client import RemoteBackend
    from medsegsuite.engine import LocalBackend
    from medsegsuite.models.checkpoints import save_checkpoint
    from medsegsuite.models.registry import default_registry
    from medsegsuite.server import ServerConfig, start_in_thread

    ckpt = save_checkpoint(tmp_path / "m.pt", "test-arch", {"w": torch.ones(2)}, {"structures": ["liver"]})
    server_home, client_home = tmp_path / "server", tmp_path / "client"
    monkeypatch.setenv("MEDSEGSUITE_HOME", str(server_home))  # the server (in this process) registers here
    srv = start_in_thread(ServerConfig(port=0, device="cpu"))
    try:
        remote = RemoteBackend(srv.url, heartbeat=False)
        backends.set_backend(remote)
        entry = logic.import_checkpoint(str(ckpt), "hub-remote-model")
        assert entry["id"] == "hub-remote-model" and entry["architecture"] == "test-arch"
        assert (server_home / "models" / "hub-remote-model.pt").exists()
        assert "hub-remote-model" in [m["id"] for m in logic.models()]
        assert "hub-remote-model" in MethodLogic(lambda: remote).model_ids()
        monkeypatch.setenv("MEDSEGSUITE_HOME", str(client_home))
        assert "hub-remote-model" not in default_registry()  # nothing went to the client's registry
        remote.close()
    finally:
        srv.stop()
    local = LocalBackend("cpu")
    try:
        backends.set_backend(local)
        assert "hub-remote-model" not in [m["id"] for m in logic.models()]
        logic.import_checkpoint(str(ckpt), "hub-local-model")
        assert "hub-local-model" in [m["id"] for m in logic.models()]
        assert (client_home / "models" / "hub-local-model.pt").exists()
    finally:
        local.close()
