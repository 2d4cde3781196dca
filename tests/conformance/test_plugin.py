"""The pytest plugin runs the cases of a user's function as tests (through pytester)."""

from __future__ import annotations

import sys
import textwrap

# pytester's in-process runs restore sys.modules afterwards: modules with C extensions that the
# inner run would import first (NumPy's fft, through array_api_compat) must be imported here
import array_api_compat.numpy  # noqa: F401
import pytest

from conformance.checked.cases import cases_for

pytest_plugins = ["pytester"]

NORMS = textwrap.dedent(
    """
    import numpy as np

    def _standardize(x, axes, ddof, eps):
        axes = tuple(a % x.ndim for a in axes)
        mean = x.mean(axis=axes, keepdims=True, dtype=np.float64)
        n = np.prod([x.shape[a] for a in axes])
        var = ((x - mean) ** 2).sum(axis=axes, keepdims=True) / (n - ddof)
        return (x - mean) / np.sqrt(var + eps)

    def good(x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5):
        y = _standardize(x, axes, 0, eps)
        y = y if gamma is None else y * gamma
        return (y if beta is None else y + beta).astype(x.dtype)

    def unbiased(x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5):
        y = _standardize(x, axes, 1, eps)
        y = y if gamma is None else y * gamma
        return (y if beta is None else y + beta).astype(x.dtype)

    def exits(x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5):
        raise SystemExit(0)
    """
)


def _run(pytester: pytest.Pytester, function: str, *more: str) -> pytest.RunResult:
    pytester.makepyfile(mynorms=NORMS)
    pytester.syspathinsert()
    return pytester.runpytest_inprocess(
        "-p",
        "conformance.plugin",
        "--normref-impl",
        f"mynorms:{function}",
        "--normref-op",
        "layer_norm",
        "--normref-dtypes",
        "float64",
        *more,
    )


def test_a_right_function_passes_every_case(pytester: pytest.Pytester):
    """One test per case of the op at the one dtype asked for."""
    result = _run(pytester, "good")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) == len(cases_for("layer_norm"))
    assert "failed" not in outcomes


def test_a_wrong_function_fails_with_the_diagnosis(pytester: pytest.Pytester):
    result = _run(pytester, "unbiased", "-k", "typical")
    result.assert_outcomes(failed=1, deselected=len(cases_for("layer_norm")) - 1)
    result.stdout.fnmatch_lines(["*layer_norm/typical at float64: explained by correction=1*"])


def test_the_plugin_needs_the_op(pytester: pytest.Pytester):
    pytester.makepyfile(mynorms=NORMS)
    pytester.syspathinsert()
    result = pytester.runpytest_inprocess(
        "-p", "conformance.plugin", "--normref-impl", "mynorms:good"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_an_unknown_backend_is_a_usage_error(pytester: pytest.Pytester):
    result = _run(pytester, "good", "--normref-backend", "jax")
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_an_array_type_that_is_not_installed_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch
):
    monkeypatch.setitem(sys.modules, "jax", None)  # import jax raises ImportError
    result = _run(pytester, "good", "--normref-array-type", "jax")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "jax is not installed (pip install -e '.[jax]')" in result.stderr.str()


def test_a_dtype_the_array_type_lacks_is_a_usage_error(pytester: pytest.Pytester):
    """NumPy has no bfloat16 (and nothing has float8): a usage error naming it, not 22 failures."""
    for dtype in ("float8", "bfloat16"):
        result = _run(pytester, "good", "--normref-dtypes", dtype)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"*unknown dtypes ?'{dtype}'?; known:*"])  # ? for a bracket


def test_a_printed_node_id_reruns_that_case_alone(pytester: pytest.Pytester):
    """The node id as the report prints it, given back to pytest: that case, and nothing else
    (none of the project's tests either)."""
    pytester.makepyfile(test_project="def test_of_the_project():\n    assert False\n")
    result = _run(pytester, "unbiased", "normref::layer_norm/typical[float64]", "-v")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*normref::layer_norm/typical?float64? FAILED*"])
    result.stdout.no_fnmatch_line("*test_of_the_project*")


def test_an_unknown_node_id_is_a_usage_error(pytester: pytest.Pytester):
    result = _run(pytester, "good", "normref::layer_norm/no-such-case[float64]")
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_an_exit_fails_its_test_in_a_worker(pytester: pytest.Pytester):
    """--normref-isolate calls the function in a worker process, as the command line does."""
    result = _run(pytester, "exits", "-k", "typical", "--normref-isolate")
    result.assert_outcomes(failed=1, deselected=len(cases_for("layer_norm")) - 1)
    result.stdout.fnmatch_lines(["*layer_norm/typical at float64: raised SystemExit: 0*"])


def test_a_timeout_needs_a_worker(pytester: pytest.Pytester):
    result = _run(pytester, "good", "--normref-timeout", "5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
