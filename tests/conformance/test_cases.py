"""Cases: every registry op is covered, ids and data are stable, error paths are where normref raises."""

from __future__ import annotations

import re

import numpy as np
import pytest

from conformance.cases import cases_for, find_case
from conformance.models import NORMREF
from conformance.ops import CHECKED_OPS, KINDS, get_op
from conformance.reference import expected, prepare
from conformance.tolerances import BUDGETS, budget_of
from normref.registry import REGISTRY

OPS = list(CHECKED_OPS)


def test_every_registry_op_is_checked_with_an_error_model():
    assert set(REGISTRY) <= set(CHECKED_OPS)
    assert set(REGISTRY) == set(KINDS)


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
def test_ops_with_a_variance_have_a_one_sample_error_path(op):
    errors = [c for c in cases_for(op) if c.kind == "error"]
    assert any("at least 2 samples per group" in c.error for c in errors)


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
