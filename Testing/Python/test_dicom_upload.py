"""Issue 16: a DICOM series sent to the server as bytes (a zip), never as a path. The attacks come first:
traversal names, links, zip bombs, lying headers, too many files, too many voxels, non-DICOM files;
then the series read back equals the same series read from its folder, locally and through a server.
Synthetic CT series (random HU, written by the project's CT writer); loopback server only."""
import io
import os
import stat
import tempfile
import zipfile

import numpy as np
import pytest
from medsegsuite import protocol as P
from medsegsuite.client import RemoteBackend
from medsegsuite.dicom.archive import ArchiveTooLarge, pack_series, read_series_archive
from medsegsuite.dicom.ct import write_ct_series
from medsegsuite.dicom.series import read_series
from medsegsuite.engine import JobResult, LocalBackend, task
from medsegsuite.errors import InputError
from medsegsuite.server import ServerConfig, start_in_thread
from medsegsuite.server.users import UserStore
from medsegsuite.volume import Volume
from server_http import raw


@task("test_dcm.stats", description="test-only: the image's shape and voxel sum", params=[])
def _stats(ctx, image, params, inputs):
    return JobResult(info={"shape": list(image.shape), "sum": float(np.asarray(image.array, np.float64).sum())})


def _vol(seed, shape=(24, 20, 6), name="synthetic"):
    rng = np.random.default_rng(seed)
    return Volume(rng.integers(-200, 300, shape).astype(np.int16), (0.8, 0.8, 2.5), (5.0, -3.0, 10.0 * seed),
                  name=name)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """Two synthetic CT series: (folder A, folder B, folder holding both)."""
    root = tmp_path_factory.mktemp("dcm")
    a, b = write_ct_series(_vol(1), root / "A"), write_ct_series(_vol(2), root / "B")
    both = root / "both"
    both.mkdir()
    for f in list(a.iterdir()) + list(b.iterdir()):
        (both / f"{f.parent.name}_{f.name}").write_bytes(f.read_bytes())
    return a, b, both


def _zip(entries, method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for e in entries:
            if isinstance(e, zipfile.ZipInfo):
                z.writestr(e, b"x")
            else:
                z.writestr(e[0], e[1])
    return buf.getvalue()


def _files(folder):
    return [(f.name, f.read_bytes()) for f in sorted(folder.iterdir())]


@pytest.fixture()
def private_tmp(tmp_path, monkeypatch):
    """Where the reader's private folder goes: it must be gone (and nothing beside it) after every call."""
    t = tmp_path / "tmp"
    t.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(t))
    yield t
    assert list(t.iterdir()) == []


# -- attacks ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../evil.dcm", "a/../../evil.dcm", "/etc/evil.dcm", "..\\evil.dcm",
                                  "C:\\evil.dcm", "c:/evil.dcm"])
def test_a_traversal_name_is_refused_and_nothing_is_written(series, private_tmp, name):
    entries = _files(series[0])[:2] + [(name, series[0].joinpath("CT0001.dcm").read_bytes())]
    with pytest.raises(InputError, match="parent-folder"):
        read_series_archive(_zip(entries))
    assert not (private_tmp.parent / "evil.dcm").exists() and not (private_tmp / "evil.dcm").exists()


def test_a_link_or_an_encrypted_entry_is_refused(series, private_tmp):
    link = zipfile.ZipInfo("CT0009.dcm")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with pytest.raises(InputError, match="symbolic link"):
        read_series_archive(_zip(_files(series[0]) + [link]))
    data = bytearray(_zip(_files(series[0])[:1]))  # set the 'encrypted' flag (zipfile cannot write one)
    central = data.index(b"PK\x01\x02")
    data[6] |= 0x1
    data[central + 8] |= 0x1
    with pytest.raises(InputError, match="encrypted"):
        read_series_archive(bytes(data))


def test_too_many_files_are_refused_before_anything_is_inflated(series, private_tmp, monkeypatch):
    import medsegsuite.dicom.archive as A

    monkeypatch.setattr(A, "_extract", lambda *a, **k: pytest.fail("inflated before the file count was checked"))
    with pytest.raises(ArchiveTooLarge, match="6 files, over the limit of 5"):
        read_series_archive(_zip(_files(series[0])), max_files=5)


def test_an_archive_of_countless_entries_is_refused_from_its_end_record(series, private_tmp, monkeypatch):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(80):
            z.writestr(f"d{i}/", b"")
    monkeypatch.setattr(zipfile.ZipFile, "__init__", lambda *a, **k: pytest.fail("central directory parsed"))
    with pytest.raises(ArchiveTooLarge, match="declares 80 entries, over the limit of 74"):
        read_series_archive(buf.getvalue(), max_files=5)


def test_a_zip_bomb_stops_at_the_byte_budget(series, private_tmp):
    big = (b"\0" * 128 + b"DICM").ljust(64 * 2**20, b"\0")  # 64 MiB that deflate to ~64 KiB
    data = _zip(_files(series[0])[:1] + [("bomb.dcm", big)])
    assert len(data) < 200 * 1024
    with pytest.raises(ArchiveTooLarge, match="unpacks to"):
        read_series_archive(data, max_bytes=8 * 2**20)


def test_an_entry_that_lies_about_its_size_is_refused(series, private_tmp):
    """A header declaring 1,000 bytes for 4 MiB of data: the reader never inflates past the declared size
    and the CRC check fails; a clear error, not a crash."""
    big = (b"\0" * 128 + b"DICM").ljust(4 * 2**20, b"\0")
    data = bytearray(_zip([("lie.dcm", big)]))
    local, central = 0, data.index(b"PK\x01\x02")
    data[local + 22:local + 26] = (1000).to_bytes(4, "little")
    data[central + 24:central + 28] = (1000).to_bytes(4, "little")
    with pytest.raises(InputError, match="damaged|not a DICOM"):
        read_series_archive(bytes(data))


def test_too_many_voxels_are_refused_from_the_headers(series, private_tmp, monkeypatch):
    import medsegsuite.dicom.series as S

    monkeypatch.setattr(S, "read_series", lambda *a, **k: pytest.fail("pixels read before the voxel check"))
    with pytest.raises(ArchiveTooLarge, match="2,880 voxels, over the limit of 1,000"):
        read_series_archive(pack_series(series[0]), max_voxels=1000)


def test_non_dicom_and_non_zip_input_is_refused_by_name(series, private_tmp):
    with pytest.raises(InputError, match="'notes.txt' is not a DICOM file"):
        read_series_archive(_zip(_files(series[0]) + [("notes.txt", b"hello" * 100)]))
    with pytest.raises(InputError, match="not a zip archive"):
        read_series_archive(series[0].joinpath("CT0001.dcm").read_bytes())
    with pytest.raises(InputError, match="no files"):
        read_series_archive(_zip([]))
    with pytest.raises(InputError, match="empty"):
        read_series_archive(_zip(_files(series[0]) + [("zero.dcm", b"")]))
    with pytest.raises(InputError, match="DICOM UID"):
        read_series_archive(pack_series(series[0]), series="../x")


def test_a_missing_slice_is_reported_with_the_users_file_names(series, private_tmp):
    entries = [e for e in _files(series[0]) if e[0] != "CT0003.dcm"]
    with pytest.raises(InputError, match=r"1 missing slice.*CT0002\.dcm -> .*CT0004\.dcm"):
        read_series_archive(_zip(entries))


# -- what works ------------------------------------------------------------------------------------

def test_the_series_read_from_bytes_equals_the_series_read_from_its_folder(series, private_tmp):
    ref = read_series(series[0])
    nested = _zip([(f"export/study 1/{n}", b) for n, b in _files(series[0])]
                  + [("__MACOSX/export/._CT0001.dcm", b"mac"), ("export/.DS_Store", b"mac")])
    for data in (pack_series(series[0]), nested):
        v = read_series_archive(data)
        assert v.fingerprint() == ref.fingerprint()
        np.testing.assert_array_equal(v.array, ref.array)
        for k in ("series_uid", "study_uid", "frame_of_reference_uid", "sop_instance_uids", "patient_id"):
            assert v.meta["dicom"][k] == ref.meta["dicom"][k]
        assert all("/" not in f for f in v.meta["dicom"]["files"])


def test_several_series_are_listed_and_one_is_picked(series, private_tmp):
    data = pack_series(series[2])
    a, b = read_series(series[0]), read_series(series[1])
    with pytest.raises(InputError, match="2 image series") as e:
        read_series_archive(data)
    assert a.meta["dicom"]["series_uid"] in str(e.value) and b.meta["dicom"]["series_uid"] in str(e.value)
    v = read_series_archive(data, series=b.meta["dicom"]["series_uid"][:40])
    assert v.fingerprint() == b.fingerprint()


def test_the_local_backend_reads_the_same_image(series):
    with LocalBackend("cpu") as be:
        info = be.set_dicom(pack_series(series[0]))
        assert info["id"] == read_series(series[0]).fingerprint() == be.set_dicom(series[0])["id"]
        assert info["dicom"]["series_uid"] == read_series(series[0]).meta["dicom"]["series_uid"]


# -- through the server ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    f = tmp_path_factory.mktemp("users") / "users.json"
    store = UserStore(f)
    keys = {"a": store.add("user-a", "clinician"), "b": store.add("user-b", "clinician")}
    s = start_in_thread(ServerConfig(port=0, device="cpu", users_file=str(f), lease_ttl=120.0, max_upload_mb=1.0,
                                     max_request_mb=8.0, max_session_mb=8.0, max_image_voxels=200_000,
                                     max_dicom_files=20))
    yield s, keys
    s.stop()


def test_the_server_refuses_each_attack_with_a_clear_status(srv, series):
    s, keys = srv
    with RemoteBackend(s.url, api_key=keys["a"], heartbeat=False) as c:
        def post(body, **params):
            return raw(s, "POST", "/images/dicom", key=keys["a"], session=c.session_id, content=body, params=params)

        r = raw(s, "POST", "/images/dicom", content=pack_series(series[0]))  # no key
        assert r.status_code == 401
        r = post(_zip(_files(series[0]) + [("../../evil.dcm", b"x")]))
        assert r.status_code == 400 and "parent-folder" in r.json()["message"]
        assert "/tmp" not in r.json()["message"] and tempfile.gettempdir() not in r.json()["message"]
        r = post(_zip([(f"f{i}.dcm", b"x") for i in range(21)]))
        assert r.status_code == 413 and "--max-dicom-files" in r.json()["message"]
        r = post(_zip([("bomb.dcm", (b"\0" * 128 + b"DICM").ljust(9 * 2**20, b"\0"))]))
        assert r.status_code == 413 and "--max-request-mb" in r.json()["message"]
        r = post(os.urandom(int(1.5 * 2**20)))  # over the 1 MiB body limit
        assert r.status_code == 413 and "--max-upload-mb" in r.json()["message"]
        r = post(_zip(_files(series[0]) + [("notes.txt", b"hello" * 40)]))
        assert r.status_code == 400 and "not a DICOM file" in r.json()["message"]
        r = post(pack_series(series[2]))
        assert r.status_code == 400 and "2 image series" in r.json()["message"]
        # the series' own geometry errors travel without the server's folder
        r = post(_zip([e for e in _files(series[0]) if e[0] != "CT0003.dcm"]))
        assert r.status_code == 400 and "missing slice" in r.json()["message"]
        assert tempfile.gettempdir() not in r.json()["message"]
    with RemoteBackend(s.url, api_key=keys["a"], heartbeat=False) as c:  # voxels: a smaller server limit
        big = write_ct_series(_vol(3, (128, 128, 18)), series[0].parent / "big")  # 294,912 voxels
        with pytest.raises(InputError, match="--max-image-voxels"):
            c.set_dicom(big)


def _run(client, image_id):
    """Start the stats job and wait for it to end (``result`` alone does not wait)."""
    job = client.start_job("test_dcm.stats", image_id)
    client.wait(job, timeout=300)
    return client.result(job)


def test_a_client_sends_a_series_and_a_job_runs_on_it(srv, series):
    s, keys = srv
    ref = read_series(series[0])
    with RemoteBackend(s.url, api_key=keys["a"], heartbeat=False) as c:
        info = c.set_dicom(series[0])
        assert info["id"] == ref.fingerprint()
        assert info["dicom"]["series_uid"] == ref.meta["dicom"]["series_uid"]
        assert "files" not in info["dicom"]
        r = _run(c, info["id"])
        assert r.info == {"shape": list(ref.shape), "sum": float(ref.array.astype(np.float64).sum())}
        # the other user cannot reach it through this session
        r = raw(s, "GET", f"/images/{info['id']}", key=keys["b"], session=c.session_id)
        assert r.status_code == 403
        # the server let the image go: the client sends the same zip again, once, by itself
        assert raw(s, "DELETE", f"/images/{info['id']}", key=keys["a"], session=c.session_id).status_code == 204
        r = _run(c, info["id"])
        assert r.info["sum"] == float(ref.array.astype(np.float64).sum())
        # one of several series, picked by UID on the client side (FOLDER#UID) or by parameter
        b = read_series(series[1])
        assert c.set_dicom(f"{series[2]}#{b.meta['dicom']['series_uid']}")["id"] == b.fingerprint()
    assert any(e.get("action") == "image.dicom" and e.get("status") == "ok" for e in s.state.audit.recent)
    assert P.CAPABILITIES[-1] == "images.dicom-upload"
