"""``run --device cuda``: the torch adapter's layers on a GPU, or exit 2 saying why not."""

from __future__ import annotations

import os

import numpy as np
import pytest

from conformance.adapters import torch as torch_adapter
from conformance.adapters.arrays import TorchKind
from conformance.cli import main

pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[torch]')")

NO_GPU = torch_adapter.cuda_missing()
ONE_CASE = ["--ops", "layer_norm", "--dtypes", "float32", "--case", "layer_norm/outlier-1e4"]


@pytest.mark.skipif(NO_GPU is None, reason="a GPU is present: the run would go ahead")
def test_without_a_gpu_cuda_exits_2_saying_why(capsys):
    assert main(["run", "--framework", "torch", "--device", "cuda", *ONE_CASE]) == 2
    err = capsys.readouterr().err
    assert "--device cuda: no GPU to run on" in err
    assert "CUDA" in err


@pytest.mark.parametrize(
    "others", [["--framework", "flax"], ["--framework", "torch,optax"]], ids=["flax", "two"]
)
def test_cuda_is_for_the_torch_adapter_alone(others, capsys):
    assert main(["run", *others, "--device", "cuda", *ONE_CASE]) == 2
    assert "give --framework torch alone" in capsys.readouterr().err


def test_the_device_reaches_the_adapter_and_the_workers_it_starts():
    """Set in the environment within the block (spawned workers inherit it), restored after."""
    assert torch_adapter.device() == "cpu"
    with torch_adapter.on_device("cuda"):
        assert os.environ[torch_adapter.DEVICE_VARIABLE] == "cuda"
        assert torch_adapter.device() == "cuda"
    assert torch_adapter.DEVICE_VARIABLE not in os.environ
    with pytest.raises(ValueError, match="device must be one of"):
        torch_adapter.on_device("tpu").__enter__()


def test_tensors_go_to_the_kind_s_device():
    kind = TorchKind("cpu")
    tensor = kind.asarray(np.array([1.0, 2.0]), "float32")
    assert str(tensor.device) == "cpu"
    np.testing.assert_array_equal(kind.to_numpy(tensor), [1.0, 2.0])


@pytest.mark.skipif(NO_GPU is not None, reason=f"no GPU: {NO_GPU}")
def test_on_a_gpu_torch_cuda_layer_norm_is_judged(capsys):
    assert main(["run", "--framework", "torch", "--device", "cuda", *ONE_CASE]) in (0, 1)
    assert "torch.nn.functional.layer_norm" in capsys.readouterr().out
