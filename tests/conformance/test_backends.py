"""The array library of the reference: torch runs normref's reference (the path a GPU's CuPy
takes), unavailable ones are usage errors."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from conformance.api import check
from conformance.checked.backends import Backend, BackendUnavailableError, get_backend
from conformance.cli import main
from tests.conformance import planted, planted_weights

OPS = ("layer_norm", "zca_whiten", "spectral_norm_train")


def _spying(backend: Backend, seen: list[str]) -> Backend:
    """``backend``, recording the library of every array it makes (under a name of its own, so
    that no reference evaluated earlier on ``backend`` is reused)."""

    def put(values: np.ndarray):
        made = backend.put(values)
        seen.append(type(made).__module__.split(".")[0])
        return made

    return Backend(f"{backend.name} (spied)", put, backend.fetch)


def _statuses(result) -> list[tuple[str, str, str]]:
    return [(r.case, r.dtype, r.status.value) for r in result.results]


def test_torch_runs_the_reference_with_the_same_verdicts():
    """normref evaluated on torch tensors gives every row the verdict NumPy gives it."""
    pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[torch]')")
    seen: list[str] = []
    torch_backend = _spying(get_backend("torch"), seen)
    functions = {
        "layer_norm": planted.layer_norm,
        "zca_whiten": planted_weights.zca_whiten,
        "spectral_norm_train": planted_weights.spectral_norm_u_first,
    }
    for op in OPS:
        on_numpy = check(functions[op], op, "torch", dtypes=["float32", "float64"])
        on_torch = check(
            functions[op], op, "torch", dtypes=["float32", "float64"], backend=torch_backend
        )
        assert _statuses(on_torch) == _statuses(on_numpy)
        assert on_torch.settings["backend"] == "torch (spied)"
    assert set(seen) == {"torch"}


@pytest.mark.skipif(
    importlib.util.find_spec("cupy") is not None, reason="cupy is installed: it may have a GPU"
)
def test_cupy_without_cupy_is_a_usage_error(capsys):
    with pytest.raises(BackendUnavailableError, match="backend 'cupy' needs cupy and a CUDA GPU"):
        get_backend("cupy")
    argv = ["run", "--impl", "tests.conformance.planted:layer_norm", "--op", "layer_norm"]
    assert main([*argv, "--backend", "cupy"]) == 2
    assert "backend 'cupy' needs cupy" in capsys.readouterr().err


def test_cupy_runs_the_reference_on_the_gpu():
    cupy = pytest.importorskip("cupy", reason="cupy is not installed: no GPU here")
    try:
        backend = get_backend("cupy")
    except BackendUnavailableError as error:
        pytest.skip(f"cupy has no GPU here: {error}")
    result = check(planted.layer_norm, "layer_norm", dtypes=["float32"], backend=backend)
    assert result.ok
    assert cupy.cuda.runtime.getDeviceCount() > 0


def test_an_unknown_backend_is_a_usage_error(capsys):
    argv = ["run", "--framework", "torch", "--ops", "layer_norm", "--backend", "jax"]
    assert main(argv) == 2
    assert "backend must be one of ['cupy', 'numpy', 'torch'], got 'jax'" in capsys.readouterr().err
