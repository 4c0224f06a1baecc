"""Typed task parameters: one declaration validates jobs, generates CLI options and the task listing."""
import argparse

import pytest

from medsegsuite.engine.schema import Param, Schema, add_cli_options, params_from_cli
from medsegsuite.errors import InputError

S = Schema((
    Param("plane", "plane", "axial", "slice plane"),
    Param("iterations", "int", 4, "rounds", range=(0, 16)),
    Param("window", "floats", None, "intensity window", length=2),
    Param("method", "choice", "vptta", "method", choices=("none", "vptta")),
    Param("propagate", "bool", False, "propagate"),
    Param("model", "model", "liver", "model id"),
    Param("cache", "path", None, "file on the backend"),
))


def test_defaults_are_filled_and_values_coerced():
    v = S.validate({"iterations": "3", "plane": "Coronal", "window": "-160,240"})
    assert v == {"plane": "coronal", "iterations": 3, "window": [-160.0, 240.0], "method": "vptta",
                 "propagate": False, "model": "liver", "cache": None}


@pytest.mark.parametrize("params,msg", [
    ({"axis": 2}, "unknown parameter"),
    ({"iterations": 17}, "0..16"),
    ({"iterations": 2.5}, "integer"),
    ({"iterations": True}, "integer"),
    ({"plane": "oblique"}, "axial"),
    ({"window": [1]}, "exactly 2"),
    ({"window": [1, float("nan")]}, "finite"),
    ({"method": "tent"}, "one of"),
    ({"propagate": "maybe"}, "true or false"),
])
def test_bad_parameters_are_one_line_errors(params, msg):
    with pytest.raises(InputError, match=msg) as e:
        S.validate(params, "cosam.segment")
    assert "\n" not in str(e.value) and "cosam.segment" in str(e.value)


def test_server_side_paths_are_refused_when_paths_are_not_allowed():
    assert S.validate({"model": "/tmp/x.pt"}, allow_paths=True)["model"] == "/tmp/x.pt"
    for bad in ({"model": "/etc/passwd"}, {"model": "../x.pt"}, {"model": "x.pt"}, {"cache": "emb.pt"}):
        with pytest.raises(InputError, match="server"):
            S.validate(bad, allow_paths=False)
    assert S.validate({"model": "liver"}, allow_paths=False)["model"] == "liver"


def test_cli_options_come_from_the_schema():
    p = argparse.ArgumentParser()
    add_cli_options(p, S, exclude=("cache",))
    args = p.parse_args(["--plane", "sagittal", "--window", "-100", "200", "--propagate"])
    got = params_from_cli(args, S, exclude=("cache",))
    assert got == {"plane": "sagittal", "window": ["-100", "200"], "propagate": True}
    assert S.validate(got)["window"] == [-100.0, 200.0]
    assert "--cache" not in p.format_help() and "default 4" in p.format_help()


def test_every_task_declares_its_parameters_and_lists_them():
    from medsegsuite.engine import LocalBackend
    from medsegsuite.engine.tasks import available_tasks

    ours = {n: spec for n, spec in available_tasks().items() if spec.fn.__module__.startswith("medsegsuite.")}
    assert {"sam.oracle_box", "cosam.segment", "cosam.click", "cosam.train", "scribble.train", "scribble.segment",
            "scribble.quick", "tta.adapt", "dyna.night", "dyna.status", "dyna.use"} <= set(ours)
    undeclared = [n for n, spec in ours.items() if spec.schema is None]
    assert not undeclared, f"tasks without a parameter schema: {undeclared}"
    with LocalBackend("cpu") as b:
        listing = {t["name"]: t for t in b.list_tasks() if t["name"] in ours}
    assert set(listing) == set(ours)
    for t in listing.values():
        assert t["kind"] in ("interactive", "training")
        for p in t["params"]:
            assert p["help"], f"{t['name']}.{p['name']} has no help text"
    assert not any(p["name"] == "axis" for t in listing.values() for p in t["params"]), "tasks speak planes"
    assert listing["cosam.train"]["kind"] == listing["scribble.train"]["kind"] == "training"


@pytest.mark.parametrize("task", ["sam.oracle_box", "cosam.segment"])
def test_a_client_cannot_choose_the_embedding_cache_key(task):
    """Filing an image's embeddings under another image's id made another client's next mask come
    from the wrong image; the cache key is always the image's own fingerprint, never a parameter."""
    from medsegsuite.engine import LocalBackend

    with LocalBackend("cpu") as b:
        with pytest.raises(InputError, match="unknown parameter.*image_id"):
            b.worker.submit(task, _any_image(b), {"image_id": "0" * 32}, {})


def _any_image(backend):
    import numpy as np

    from medsegsuite.volume import Volume

    return backend.set_image(Volume(np.zeros((4, 4, 4), np.float32)))
