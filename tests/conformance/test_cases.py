"""Cases: every registry op is covered, ids and data are stable, error paths are where normref raises."""

from __future__ import annotations

import re

import numpy as np
import pytest

from conformance.bounds.budgets import BUDGETS, budget_of
from conformance.bounds.measure import BUILDERS
from conformance.checked.cases import cases_for, find_case, prepare
from conformance.checked.models import NORMREF
from conformance.checked.ops import CHECKED_OPS, get_op
from conformance.judging.reference import expected
from normref.registry import REGISTRY, Kind

OPS = list(CHECKED_OPS)


def test_every_registry_op_is_checked_and_every_kind_has_an_error_model():
    assert set(REGISTRY) == set(CHECKED_OPS)
    assert set(BUILDERS) == set(Kind)


@pytest.mark.parametrize("op", OPS)
def test_every_output_has_a_budget(op):
    """Each output and gradient of the typical case has terms and operation counts in BUDGETS
    (by its role: the gradient of a weight ``w`` is counted as any primary input's)."""
    result = expected(prepare(find_case(f"{op}/typical"), "float32"), NORMREF)
    assert set(result.values) == set(result.terms.outputs)
    for name in result.values:
        assert budget_of(result.terms, name) in BUDGETS.values()


@pytest.mark.parametrize("op", OPS)
def test_cases_are_the_same_in_every_call(op):
    first, second = cases_for(op), cases_for(op)
    assert [c.id for c in first] == [c.id for c in second]
    assert len({c.id for c in first}) == len(first)
    for a, b in zip(first, second, strict=True):
        assert a.seed == b.seed
        assert all(c.id.startswith(f"{op}/") for c in (a, b))
        for name, value in a.sample.args.items():
            np.testing.assert_array_equal(value, b.sample.args[name], err_msg=f"{a.id} {name}")
        np.testing.assert_array_equal(a.cotangent(), b.cotangent())


def test_another_seed_draws_other_data_with_the_same_ids():
    zero, seven = cases_for("layer_norm"), cases_for("layer_norm", suite_seed=7)
    assert [c.id for c in zero] == [c.id for c in seven]
    assert zero[0].seed != seven[0].seed
    assert not np.array_equal(zero[0].sample.args["x"], seven[0].sample.args["x"])


@pytest.mark.parametrize("op", OPS)
def test_error_cases_are_exactly_those_normref_refuses(op):
    """normref raises on an error-path case where it says (its forward, or its gradient), and
    evaluates every other case, forward and backward."""
    checked = get_op(op)
    for case in cases_for(op):
        dy = case.cotangent()
        if case.kind == "error" and case.error_in == "forward":
            with pytest.raises(ValueError, match=re.escape(case.error)):
                checked.reference(case.sample, NORMREF)
        elif case.kind == "error":
            checked.reference(case.sample, NORMREF)
            with pytest.raises(ValueError, match=re.escape(case.error)):
                checked.evaluate(case.sample, dy, NORMREF)
        else:
            checked.evaluate(case.sample, dy, NORMREF)


def test_repeated_eigenvalues_are_an_error_path_of_pca_only():
    """The gradient of PCA whitening and of decorrelation does not exist at repeated
    eigenvalues; ZCA's, Cholesky's and IterNorm's does."""
    for op in ("pca_whiten", "decorrelate", "zca_whiten", "cholesky_whiten", "iter_norm_whiten"):
        case = find_case(f"{op}/repeated-eigenvalues")
        refused = op in ("pca_whiten", "decorrelate")
        assert (case.kind, case.error_in) == (("error", "backward") if refused else ("edge", None))


@pytest.mark.parametrize("op", [o for o in OPS if get_op(o).has_variance])
def test_ops_with_a_variance_compute_groups_of_one_sample(op):
    """A lone sample's biased variance is 0: an ordinary case, not an error path."""
    lone = [c for c in cases_for(op) if c.name == "one-sample-groups"]
    assert all(c.kind == "edge" for c in lone)


def test_the_edge_cases_of_the_issue_exist():
    names = {c.name for c in cases_for("group_norm")}
    for required in (
        "constant-groups",
        "outlier-1e4",
        "scale-1e-4",
        "scale-1e4",
        "float16-max",
        "float16-tiny",
        "size-1-axis-0",
        "two-sample-groups",
        "odd-3",
        "odd-5",
        "default-eps",
    ):
        assert required in names
    assert sum(c.kind == "drawn" for c in cases_for("group_norm")) == 6


def test_constant_groups_are_constant():
    case = find_case("batch_norm/constant-groups")
    x = case.sample.args["x"]
    assert np.all(x == x[:1, :, :1])


def test_find_case_names_the_known_cases():
    assert find_case("rms_norm/outlier-1e4").op == "rms_norm"
    with pytest.raises(ValueError, match=r"no case 'rms_norm/nope'; the cases of rms_norm are"):
        find_case("rms_norm/nope")
    with pytest.raises(ValueError, match="case id must start with an op name"):
        find_case("softmax/typical")


def test_agc_clip_boundary_puts_every_unit_at_its_threshold():
    case = find_case("adaptive_grad_clip/clip-boundary")
    grad, param = case.sample.args["grad"], case.sample.args["param"]
    axes = tuple(a for a in range(grad.ndim) if a != case.sample.kwargs["out_axis"] % grad.ndim)
    norm = np.sqrt((grad**2).sum(axis=axes))
    threshold = case.sample.kwargs["clipping"] * np.maximum(
        np.sqrt((param**2).sum(axis=axes)), case.sample.kwargs["eps"]
    )
    np.testing.assert_allclose(norm, threshold, rtol=1e-14)


def test_zero_units_and_weights():
    unit = find_case("weight_norm/zero-unit").sample
    v, axis = unit.args["v"], unit.kwargs["out_axis"]
    assert not np.any(np.take(v, 0, axis=axis))
    assert np.all(np.any(np.take(v, range(1, v.shape[axis]), axis=axis) != 0, axis=None))
    assert not np.any(find_case("spectral_norm/zero-weight").sample.args["w"])


def test_every_nonlinearity_has_its_case():
    from normref.nonlinearities import NONLINEARITIES

    cases = cases_for("gamma_scaled_nonlinearity")
    own = {c.name for c in cases if c.sample.kwargs["nonlinearity"] == c.name}
    assert own == set(NONLINEARITIES)


def test_global_norm_small_enough_for_torchs_eps_to_matter():
    sample = find_case("clip_by_global_norm/small-norm").sample
    norm = np.sqrt(sum(float((a**2).sum()) for a in sample.args.values()))
    assert norm == pytest.approx(4e-6)
    assert sample.kwargs["max_norm"] == 2e-6


def test_an_input_normref_refuses_only_after_rounding_is_an_error_path_there():
    """A mean of 1e4 in float16 (spacing 8) leaves every group of PCA whitening constant: its
    eigenvalues repeat and the gradient does not exist, at that dtype only."""
    from conformance.api import check
    from normref.registry import REGISTRY

    spec = REGISTRY["pca_whiten"]
    result = check(
        spec.forward,
        "pca_whiten",
        vjp=spec.vjp,
        dtypes=["float16", "float32"],
        case="pca_whiten/mean-1e4",
    )
    by_dtype = {r.dtype: r for r in result.results}
    assert by_dtype["float16"].status.value == "refuses"
    assert "repeated eigenvalues" in by_dtype["float16"].explanation
    assert by_dtype["float32"].status.value == "pass"


def test_whitening_rows_state_the_covariance_conditioning():
    """ZCA states the covariance's condition number, PCA its smallest relative gap, IterNorm
    the amplification of its iterations; a nearly singular covariance has a large one, and
    the reference's own bound grows with it."""
    from conformance.api import check
    from normref.registry import REGISTRY

    def row(op, case):
        spec = REGISTRY[op]
        return check(spec.forward, op, dtypes=["float64"], case=f"{op}/{case}").results[0]

    typical, singular = row("zca_whiten", "typical"), row("zca_whiten", "near-singular")
    assert typical.conditioning_measure == "condition number of the covariance + eps"
    assert singular.conditioning > 100 * typical.conditioning
    assert singular.outputs[0]["reference_bound_ulps"] > typical.outputs[0]["reference_bound_ulps"]
    assert "gap" in row("pca_whiten", "typical").conditioning_measure
    assert "Newton" in row("iter_norm_whiten", "typical").conditioning_measure


def test_drawn_cases_do_not_depend_on_the_modules_loaded(tmp_path, monkeypatch):
    """A drawn case is a function of its op and the suite's seed alone: importing a module full
    of constants (as a user's implementation, or a test session, does) changes none of them."""
    import importlib

    from conformance.checked.cases import drawn_cases

    def draws():
        return [(c.id, c.seed, c.parameters) for op in OPS for c in drawn_cases(get_op(op))]

    before = draws()
    constants = ", ".join(str(k * 7_919_993 + k % 5) for k in range(500))
    (tmp_path / "constants_of_a_user.py").write_text(f"VALUES = ({constants}, 0.5, 1e-3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("constants_of_a_user")
    assert draws() == before
