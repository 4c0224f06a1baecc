"""Every command a README names exists and explains itself."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from medsegsuite.cli import COMMANDS, build_parser, main


def test_every_listed_command_is_built():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) >= set(COMMANDS)


@pytest.mark.parametrize("cmd", [[], *[[c] for c in COMMANDS], ["scribble", "train"], ["cosam", "segment"],
                                 ["dyna", "night"], ["models", "import"]])
def test_help_of_each_command(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: medsegsuite" in out and len(out) > 200


def test_console_script_info_reports_sample_data():
    exe = [str(Path(sys.executable).parent / "medsegsuite"), "info"]  # the installed console script
    r = subprocess.run(exe, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout[: r.stdout.rindex("}") + 1])
    assert info["sample_data"]["lits117"] == "available" and "litemedsam" in info["models"]
    assert {"liver", "liver-source", "brain-source"} <= set(info["models"])


def test_errors_are_one_clear_line_not_a_traceback(tmp_path, capsys):
    rc = main(["cosam", "segment", "--image", str(tmp_path / "missing.nii.gz"), "--model", "liver",
               "--out", str(tmp_path / "o.seg.nrrd"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "error:" in err and "not found" in err and "Traceback" not in err
