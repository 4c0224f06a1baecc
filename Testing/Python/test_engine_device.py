"""A device the machine does not have is the project's own one-line error, not a torch traceback."""
import argparse

import pytest
import torch

from medsegsuite.engine.device import resolve_device
from medsegsuite.errors import InputError

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")


@no_cuda
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "CUDA"])
def test_cuda_on_a_cpu_machine_is_an_input_error(device):
    with pytest.raises(InputError, match="no CUDA GPU") as e:
        resolve_device(device)
    assert "\n" not in str(e.value) and "--device auto or cpu" in str(e.value)


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "gpu"])
def test_unknown_devices_are_input_errors(device):
    with pytest.raises(InputError):
        resolve_device(device)


def test_auto_and_cpu_resolve():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda", "mps")


@no_cuda
def test_cli_backend_with_device_cuda_is_one_line(capsys):
    from medsegsuite.cli import main
    from medsegsuite.cli.common import add_backend_options, make_backend

    p = argparse.ArgumentParser()
    add_backend_options(p)
    with pytest.raises(InputError, match="no CUDA GPU"):
        make_backend(p.parse_args(["--device", "cuda"]))
    assert main(["serve", "--device", "cuda", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: device 'cuda' was asked for") and "\n" not in err and "Traceback" not in err
