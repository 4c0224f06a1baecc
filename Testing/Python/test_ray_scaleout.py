"""Scale-out on Ray (issue 14 item 6) on a real local Ray cluster: head + 2 worker nodes on this machine.

Two Ray Serve replicas serve two sessions at once (each session's jobs land on its own replica, the two
jobs overlap in time), the plain server's key/role rules hold through Ray, and a batch of cases finishes
although the worker node running one of them is killed (Ray runs the case again on the other node).
The tasks are test-only (ray_test_tasks.py): a fixed wall time per slice, so a loaded 2-core machine
shows routing and retry rather than its own load. Bounded: 3 nodes of 1 CPU, small object stores. The
HTTP server listens on 127.0.0.1; Ray's own nodes use the machine's address (Ray 2.60 looks up its GCS
there even when nodes are started with node_ip_address 127.0.0.1, and hangs)."""
import os
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

ray = pytest.importorskip("ray")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from ray.cluster_utils import Cluster

    markers = tmp_path_factory.mktemp("markers")
    # nodes and their workers inherit this environment: our package first, the test tasks importable
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT / "MedSegSuite"), str(HERE), os.environ.get("PYTHONPATH", "")]),
           "MEDSEGSUITE_RAY_MARKERS": str(markers), "MEDSEGSUITE_TEST_SLICE_S": "0.25", "OMP_NUM_THREADS": "1",
           "MEDSEGSUITE_THREADS": "1", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    sys.path.insert(0, str(HERE))
    mem = 80 * 2**20
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": mem,
                                                      "include_dashboard": False})
    workers = [c.add_node(num_cpus=1, resources={"case": 1}, object_store_memory=mem)
               for _ in range(2)]
    ray.init(address=c.address, log_to_driver=False)
    try:
        yield c, workers, markers
    finally:
        ray.shutdown()
        c.shutdown()
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _expected(a: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    out = np.zeros(a.shape, bool)
    for k in range(a.shape[2]):
        sm = ndimage.gaussian_filter(a[:, :, k].astype(np.float32), 1.0)
        out[:, :, k] = sm > 0.5 * sm.max()
    return out


def _image(seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).normal(0, 5, (32, 28, 8)).astype(np.float32)
    a[6 + seed:20, 5:19 + seed] += 100
    return a


def test_two_replicas_serve_two_sessions_at_once(cluster, tmp_path):
    from medsegsuite.client import RemoteBackend
    from medsegsuite.server import ServerConfig, UserStore
    from medsegsuite.server.ray_serve import start_on_ray, stop_on_ray
    from medsegsuite.volume import Volume

    users = UserStore(tmp_path / "users.json")
    key_a, key_b = users.add("dr-a", "clinician"), users.add("dr-b", "clinician")
    cfg = ServerConfig(host="127.0.0.1", port=_free_port(), device="cpu", users_file=str(tmp_path / "users.json"),
                       audit_log=str(tmp_path / "audit.log"), lease_ttl=120.0)
    url = start_on_ray(cfg, replicas=2, num_cpus=0.25, task_modules=("ray_test_tasks",))
    try:
        # the plain server's rules, through Ray: no key 401, a wrong key 403, an upload refused unread
        assert httpx.get(url + "/v1/handshake").status_code == 401
        assert httpx.get(url + "/v1/handshake", headers={"X-API-Key": "x" * 40}).status_code == 403
        r = httpx.put(url + "/v1/images/abc", content=b"\0" * 300_000, headers={"X-API-Key": "y" * 40})
        assert r.status_code == 403 and r.json()["error"] == "auth_wrong"
        clients = [RemoteBackend(url, api_key=k, client_name=n) for k, n in ((key_a, "seat-a"), (key_b, "seat-b"))]
        try:
            # least-loaded placement: the two sessions live on the two replicas (server instances)
            assert len({c.session_id.split(".")[0] for c in clients}) == 2
            arrays = [_image(0), _image(1)]
            ids = [c.set_image(Volume(a, (1.0, 1.0, 2.0))) for c, a in zip(clients, arrays)]
            infos = [[], []]
            for _round in range(2):
                jobs = [c.start_job("test_ray.smooth", i, {}) for c, i in zip(clients, ids)]
                for n, (c, j) in enumerate(zip(clients, jobs)):
                    r = c.result(j) if c.wait(j, timeout=120).value == "done" else pytest.fail(c.events(j))
                    np.testing.assert_array_equal(r.masks["object"], _expected(arrays[n]))
                    infos[n].append(r.info)
            # each session's jobs ran in one process (its replica), the two sessions in different ones
            pids = [{i["pid"] for i in inf} for inf in infos]
            assert len(pids[0]) == 1 and len(pids[1]) == 1 and pids[0] != pids[1]
            # both progressed at once: each round's two jobs (2 s each) overlapped in time
            for k in range(2):
                a, b = infos[0][k], infos[1][k]
                assert min(a["end"], b["end"]) - max(a["start"], b["start"]) > 0.5, (a, b)
            # a session is its owner's only, on whichever replica it lives
            r = httpx.get(url + "/v1/images/" + ids[0], headers={"X-API-Key": key_b,
                                                                 "X-MedSegSuite-Session": clients[0].session_id})
            assert r.status_code == 403
        finally:
            for c in clients:
                c.close()
    finally:
        stop_on_ray()
    audit = (tmp_path / "audit.log").read_text()
    assert audit.count("job.start") >= 4 and "dr-a" in audit and "dr-b" in audit


def test_batch_survives_a_worker_node_killed(cluster, tmp_path):
    from medsegsuite.io.image import read_image, write_image
    from medsegsuite.server.ray_batch import BatchRun
    from medsegsuite.volume import Volume

    c, workers, markers = cluster
    cases = tmp_path / "cases"
    cases.mkdir()
    arrays = {f"case{n}": _image(n) for n in range(4)}
    for name, a in arrays.items():
        write_image(Volume(a, (0.8, 0.8, 2.5), (10.0, -5.0, 3.0), name=name), cases / f"{name}.nrrd")
    events = []
    run = BatchRun(sorted(cases.iterdir()), "test_ray.smooth", tmp_path / "out", num_cpus=0.5,
                   resources={"case": 1}, task_modules=("ray_test_tasks",), on_progress=events.append,
                   max_retries=2)
    victim = workers[0].node_id
    deadline = time.time() + 120
    while not any(victim in f.name for f in markers.iterdir()):
        assert time.time() < deadline, "no case started on the first worker node"
        time.sleep(0.1)
    started_on_victim = {f.name.split(".")[0] for f in markers.iterdir() if victim in f.name}
    c.remove_node(workers[0], allow_graceful=False)  # the node dies with the cases it runs
    outcomes = run.wait(timeout=180)
    assert [o.state for o in outcomes] == ["done"] * 4, [(o.case, o.error) for o in outcomes]
    survivor = workers[1].node_id
    for o in outcomes:  # masks written on the case's own grid, equal to the computation
        m = read_image(tmp_path / "out" / o.outputs[0])
        np.testing.assert_array_equal(m.array.astype(bool), _expected(arrays[o.case]))
        assert np.allclose(m.spacing, (0.8, 0.8, 2.5))
    # a case that had started on the killed node finished on the survivor: Ray ran it again
    rerun = [o for o in outcomes if o.case in started_on_victim and o.info["node"] == survivor]
    assert rerun, (started_on_victim, [(o.case, o.info["node"][:8]) for o in outcomes])
    assert events[-1].fraction == 1.0 and len(events) == 4


def test_batch_cancel_stops_unfinished_cases(cluster, tmp_path):
    from medsegsuite.io.image import write_image
    from medsegsuite.server.ray_batch import BatchRun
    from medsegsuite.volume import Volume

    cases = tmp_path / "cases"
    cases.mkdir()
    for n in range(3):
        write_image(Volume(np.tile(_image(n), (1, 1, 6)), name=f"c{n}"), cases / f"c{n}.nrrd")  # 48 slices: 12 s
    run = BatchRun(sorted(cases.iterdir()), "test_ray.smooth", tmp_path / "out", num_cpus=0.5,
                   resources={"case": 1}, task_modules=("ray_test_tasks",))
    time.sleep(1.0)
    run.cancel()
    outcomes = run.wait(timeout=60)
    assert {o.state for o in outcomes} == {"cancelled"}
    assert not list((tmp_path / "out").glob("*.nrrd"))
