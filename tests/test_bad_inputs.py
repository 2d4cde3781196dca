"""Every operation of the registry against every class of awkward or invalid input.

Inputs that must compute, correctly: read-only, non-contiguous and negative-stride
views, big-endian arrays, 0-d where the operation is defined, NaN and inf (propagated
as documented, alike on the compiled and the generic path), float16 and bfloat16
computed in their own dtype, torch tensors that require grad, array-api-strict arrays,
groups of one sample, and inputs without groups (an empty output). Their forwards are
compared with the independent float64 references of ``tests/reference*.py``; their
gradients with those of the same values in a plain contiguous float64 NumPy array (the
result must not depend on how the values are held: gradients themselves are checked
against finite differences in ``tests/test_gradients.py``). Subnormal and extreme
scales are ``tests/test_scaling_laws.py``'s and ``tests/test_extremes.py``'s.

Inputs that must raise a :class:`TypeError` or :class:`ValueError` whose message names
the argument: integer, boolean, complex and object arrays, Python lists and ``None``
where an array is required, parameters of the wrong shape, bad axes, an ``eps`` or a
momentum out of range, bad group counts, empty groups, arrays of two libraries, and JAX
arrays without 64-bit mode under ``precision="highest"``
(:class:`normref.Float64UnavailableError`). Every forward and VJP is checked; none
modifies its inputs or returns an array that shares their memory.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import normref
from normref import compiled
from normref.registry import OpSpec, Sample
from tests.reference import REFERENCES
from tests.registry_cases import draw, on_backend, op_params, outputs
from tests.support import BACKEND_FACTORIES, assert_close_to_scale

ALL = op_params()
WITH_VJP = op_params(with_vjp=True)
GROUPED = [p for p in ALL if p.values[0].partition is not None]


def _sample(spec: OpSpec, seed: int = 0) -> Sample:
    return draw(spec, seed)


def _arrays(spec: OpSpec, sample: Sample) -> dict[str, np.ndarray]:
    return {n: v for n, v in sample.args.items() if n in spec.arrays and v is not None}


def _optional(spec: OpSpec) -> set[str]:
    """The array arguments whose default is ``None`` (absent parameters), and the affine
    parameters, which every operation takes as ``None`` (:meth:`OpSpec.without_affine`;
    switchable norm's have no default, its logits following them)."""
    parameters = inspect.signature(spec.forward).parameters
    defaults = {n for n in spec.arrays if n in parameters and parameters[n].default is None}
    return defaults | set(spec.affine_args)


def _dy(spec: OpSpec, sample: Sample, seed: int = 1) -> np.ndarray:
    y = spec.output_values(spec.call(sample))["y"]
    return np.random.default_rng(seed).standard_normal(np.shape(y))


def _expected(spec: OpSpec, sample: Sample) -> dict[str, np.ndarray]:
    reference = REFERENCES[spec.name]
    return outputs(spec, reference.compute(*sample.args.values(), **sample.kwargs))


def _check_forward(spec: OpSpec, sample: Sample, result: Any, to_numpy: Callable, what: str):
    """``result`` (of ``sample``'s values held differently) is the reference's, to its rtol."""
    reference = REFERENCES[spec.name]
    for name, value in _expected(spec, sample).items():
        actual = np.asarray(to_numpy(spec.output_values(result)[name]), dtype=np.float64)
        assert_close_to_scale(
            actual,
            value,
            np.max(np.abs(value), initial=0.0),
            rtol=reference.rtol,
            what=f"{name} of {spec.name} ({what})",
        )


def _check_vjp(spec: OpSpec, sample: Sample, grads: Any, dy: np.ndarray, to_numpy, what: str):
    """The gradients are those of the same values in plain float64 NumPy arrays (the
    contiguous path, generic or compiled: they agree to rounding, ``tests/test_fused.py``)."""
    expected = spec.call_vjp(dy, sample)
    for name in spec.differentiable:
        want, got = getattr(expected, name), getattr(grads, name)
        assert (want is None) == (got is None), f"d{name} of {spec.name} ({what})"
        if want is None:
            continue
        assert_close_to_scale(
            np.asarray(to_numpy(got), dtype=np.float64),
            want,
            np.max(np.abs(want), initial=0.0) + np.max(np.abs(dy)),
            rtol=1e-12,
            what=f"d{name} of {spec.name} ({what})",
        )


# ----------------------------------------------------------------------------- held differently


def _read_only(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a


def _strided(a: np.ndarray) -> np.ndarray:
    """The values of ``a`` as a view with a step of 2 along its last axis."""
    if a.ndim == 0:
        return a
    wide = np.zeros((*a.shape[:-1], 2 * a.shape[-1]))
    wide[..., ::2] = a
    return wide[..., ::2]


def _reversed(a: np.ndarray) -> np.ndarray:
    """The values of ``a`` as a view with negative strides along every axis."""
    flipped = a[tuple(slice(None, None, -1) for _ in range(a.ndim))].copy()
    return flipped[tuple(slice(None, None, -1) for _ in range(a.ndim))]


def _big_endian(a: np.ndarray) -> np.ndarray:
    return a.astype(a.dtype.newbyteorder(">"))


HELD = {
    "read-only": _read_only,
    "strided": _strided,
    "negative-strides": _reversed,
    "big-endian": _big_endian,
}


def _held(spec: OpSpec, sample: Sample, make: Callable[[np.ndarray], np.ndarray]) -> Sample:
    return sample.replace(**{n: make(v) for n, v in _arrays(spec, sample).items()})


@pytest.mark.parametrize("spec", ALL)
@pytest.mark.parametrize("held", list(HELD))
@pytest.mark.parametrize("path", ["generic", "compiled"])
def test_values_held_differently_compute_the_same(spec: OpSpec, held: str, path: str):
    sample = _sample(spec)
    odd = _held(spec, sample, HELD[held])
    with compiled.enabled(path == "compiled"):
        _check_forward(spec, sample, spec.call(odd), np.asarray, held)
        if spec.vjp is not None:
            dy = _dy(spec, sample)
            _check_vjp(spec, sample, spec.call_vjp(HELD[held](dy), odd), dy, np.asarray, held)


@pytest.mark.parametrize("spec", ALL)
@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True to a scalar")
def test_torch_tensors_that_require_grad(spec: OpSpec):
    """Tensors that autograd tracks compute as the others (normref's own arrays only are
    written in place). gamma_scaled_nonlinearity reads each element as a Python float, as
    documented, which torch warns about for a tracked tensor."""
    torch = pytest.importorskip(
        "torch", reason="torch is not installed (pip install -e '.[torch]')"
    )
    sample = _sample(spec)
    tracked = sample.replace(
        **{
            n: torch.tensor(v, dtype=torch.float64, requires_grad=True)
            for n, v in _arrays(spec, sample).items()
        }
    )

    def to_numpy(t: Any) -> np.ndarray:
        return t.detach().numpy()

    _check_forward(spec, sample, spec.call(tracked), to_numpy, "requires_grad")
    if spec.vjp is not None:
        dy = _dy(spec, sample)
        grads = spec.call_vjp(torch.tensor(dy, requires_grad=True), tracked)
        _check_vjp(spec, sample, grads, dy, to_numpy, "requires_grad")


@pytest.mark.parametrize("spec", ALL)
def test_array_api_strict_arrays(spec: OpSpec):
    factory, available, reason = BACKEND_FACTORIES["array_api_strict"]
    if not available():
        pytest.skip(reason)
    backend = factory()
    sample = _sample(spec, 4)
    _check_forward(spec, sample, spec.call(on_backend(sample, backend)), backend.to_numpy, "strict")
    if spec.vjp is not None:
        dy = _dy(spec, sample)
        grads = spec.call_vjp(backend.asarray(dy, "float64"), on_backend(sample, backend))
        _check_vjp(spec, sample, grads, dy, backend.to_numpy, "strict")


def _zero_d(spec: OpSpec, sample: Sample) -> Sample:
    """``sample`` with its arrays that have the primary input's shape as 0-d arrays."""
    shape = np.shape(sample.args[spec.primary])
    return sample.replace(
        **{
            n: v.reshape(-1)[0].reshape(())
            for n, v in _arrays(spec, sample).items()
            if v.shape == shape
        }
    )


@pytest.mark.parametrize("spec", ALL)
def test_0d_input_computes_or_is_refused_by_name(spec: OpSpec):
    """Where an operation is defined on a 0-d input (a unit of one value, an element) it
    computes the reference's value; elsewhere it says which argument it cannot take."""
    sample = _zero_d(spec, _sample(spec))
    try:
        result = spec.call(sample)
    except (TypeError, ValueError) as error:
        message = str(error)
        assert spec.primary in message, message
        return
    _check_forward(spec, sample, result, np.asarray, "0-d")


# ----------------------------------------------------------------------------- NaN and inf


def _poisoned(spec: OpSpec, sample: Sample, value: float) -> Sample:
    x = np.array(sample.args[spec.primary], copy=True)
    x.flat[0] = value
    return sample.replace(**{spec.primary: x})


def _results(spec: OpSpec, sample: Sample, dy: np.ndarray) -> dict[str, np.ndarray]:
    found = {k: np.asarray(v) for k, v in spec.output_values(spec.call(sample)).items()}
    if spec.vjp is not None:
        grads = spec.call_vjp(dy, sample)
        found.update(
            {
                f"d{n}": np.asarray(getattr(grads, n))
                for n in spec.differentiable
                if getattr(grads, n) is not None
            }
        )
    return found


@pytest.mark.parametrize("spec", ALL)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_nan_and_inf_land_alike_on_both_paths(spec: OpSpec, value: float):
    """A non-finite input propagates as documented (NaN poisons its group; see
    ``tests/test_errors.py``), to the same places on the compiled and the generic path,
    which agree on the finite values too."""
    sample = _poisoned(spec, spec.without_affine(_sample(spec, 5)), value)
    dy = _dy(spec, _sample(spec, 5))
    with np.errstate(all="ignore"):
        with compiled.enabled(True):
            fused = _results(spec, sample, dy)
        with compiled.enabled(False):
            generic = _results(spec, sample, dy)
    assert set(fused) == set(generic)
    for name, a in fused.items():
        b = generic[name]
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{spec.name} {name} NaN")
        np.testing.assert_array_equal(np.isinf(a), np.isinf(b), err_msg=f"{spec.name} {name} inf")
        finite = np.isfinite(a)
        assert_close_to_scale(
            a[finite],
            b[finite],
            np.max(np.abs(b[finite]), initial=0.0) + 1.0,
            rtol=1e-12,
            what=f"{spec.name} {name}",
        )
    if np.isnan(value):  # NaN reaches the output
        assert np.isnan(fused["y"]).any(), spec.name


# ----------------------------------------------------------------------------- narrow dtypes


NARROW = [
    ("numpy", "float16"),
    ("torch", "float16"),
    ("torch", "bfloat16"),
    ("jax", "float16"),
    ("jax", "bfloat16"),
]


@pytest.mark.parametrize("spec", [p for p in ALL if p.values[0].capabilities.native_precision])
@pytest.mark.parametrize(("library", "dtype"), NARROW, ids=[f"{a}-{b}" for a, b in NARROW])
def test_narrow_dtypes_compute_in_their_own_dtype(spec: OpSpec, library: str, dtype: str):
    """``precision="native"`` on float16 and bfloat16: a result of the input's dtype, finite
    for finite input, no library error (a whitening factors its covariance in float32). Their
    accuracy under ``"highest"`` is ``tests/test_values.py``'s."""
    factory, available, reason = BACKEND_FACTORIES[library]
    if not available():
        pytest.skip(reason)
    backend = factory()
    sample = _sample(spec).replace(precision="native")
    if "eps" in sample.kwargs:
        sample = sample.replace(eps=max(sample.kwargs["eps"], 1e-3))  # above float16's tiniest
    on = on_backend(sample, backend, dtype)
    result = spec.output_values(spec.call(on))
    for name, value in result.items():
        assert str(value.dtype).endswith(dtype), f"{spec.name} {name}: {value.dtype}"
        assert np.isfinite(backend.to_numpy(value)).all(), f"{spec.name} {name}"
    if spec.vjp is not None:
        dy = backend.asarray(_dy(spec, _sample(spec)), dtype)
        grads = spec.call_vjp(dy, on)
        for name in spec.differentiable:
            g = getattr(grads, name)
            if g is not None:
                assert np.isfinite(backend.to_numpy(g)).all(), f"{spec.name} d{name}"


def test_jax_without_64_bit_mode_refuses_highest():
    jax = pytest.importorskip("jax", reason="jax is not installed (pip install -e '.[jax]')")
    import jax.numpy as jnp

    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", False)
    try:
        x = jnp.ones((4, 3), dtype=jnp.float32)
        with pytest.raises(normref.Float64UnavailableError, match="jax_enable_x64"):
            normref.batch_norm(x)
        assert normref.batch_norm(x, precision="native").dtype == jnp.float32
    finally:
        jax.config.update("jax_enable_x64", previous)


# ----------------------------------------------------------------------------- groups


def _with_size(spec: OpSpec, sample: Sample, axis: int, size: int) -> Sample | None:
    """``sample`` cut to ``size`` along ``axis`` of its primary input, with every array of
    its shape (AGC's parameter), along an axis that indexes groups every array of its rank
    that matches it there (AdaIN's style, whose spatial sizes are its own) and, along a
    parameter axis, every parameter (gamma, the running statistics); ``None`` where the cut
    leaves no valid arguments."""
    shape = np.shape(sample.args[spec.primary])
    params = spec.param_axes(sample)
    reduced = spec.partition(sample).reduced_axes
    cuts = {}
    for name, value in _arrays(spec, sample).items():
        if value.shape == shape or (
            value.ndim == len(shape) and axis not in reduced and value.shape[axis] == shape[axis]
        ):
            at = axis
        elif axis in params and value.shape == tuple(shape[a] for a in params):
            at = params.index(axis)
        else:
            continue
        index = tuple(slice(0, size) if a == at else slice(None) for a in range(value.ndim))
        cuts[name] = np.ascontiguousarray(value[index])
    cut = sample.replace(**cuts)
    try:
        spec.partition(cut)
    except ValueError:  # an argument that must divide the cut size (num_groups)
        return None
    return cut


def _cut(spec: OpSpec, sample: Sample, *, empty_groups: bool) -> tuple[int, Sample] | None:
    """The first axis whose cut to size 0 leaves groups without samples (``empty_groups``)
    or no groups at all (and samples in each), and the cut sample."""
    for axis in range(np.ndim(sample.args[spec.primary])):
        cut = _with_size(spec, sample, axis, 0)
        if cut is None:
            continue
        partition = spec.partition(cut)
        groups = partition.G * partition.D
        if (partition.M == 0 and groups > 0) if empty_groups else (partition.M > 0 == groups):
            return axis, cut
    return None


def _lone(spec: OpSpec, sample: Sample) -> Sample | None:
    """``sample`` with every axis it reduces cut to one value, where that leaves groups of
    one sample."""
    for axis in spec.partition(sample).reduced_axes:
        sample = _with_size(spec, sample, axis, 1) or sample
    return sample if spec.partition(sample).M == 1 else None


@pytest.mark.parametrize(
    "spec", [p for p in GROUPED if "fixed_statistics" not in p.values[0].properties]
)
def test_an_empty_group_is_refused_naming_its_axis(spec: OpSpec):
    """Statistics of no samples do not exist: the forward and the VJP raise, naming the
    axis (with given statistics, ``fixed_statistics``, an empty batch is just empty)."""
    found = _cut(spec, spec.without_affine(_sample(spec)), empty_groups=True)
    if found is None:
        pytest.skip(f"no axis of {spec.name}'s sample is reduced alone")
    axis, empty = found
    _both(spec, empty, ValueError, rf"has size 0 along axis {axis}\b")


NOT_CUT = {
    "batch_whiten_inference": "its running whitening matrices, (C / group_size, group_size, "
    "group_size), are not cut with the channels",
}


@pytest.mark.parametrize("spec", GROUPED)
def test_no_groups_give_an_empty_output(spec: OpSpec):
    if spec.name in NOT_CUT:
        pytest.skip(NOT_CUT[spec.name])
    found = _cut(spec, spec.without_affine(_sample(spec)), empty_groups=False)
    if found is None:
        pytest.skip(f"no axis of {spec.name}'s sample indexes its groups alone")
    _, empty = found
    shape = np.shape(empty.args[spec.primary])
    y = spec.output_values(spec.call(empty))["y"]
    assert np.shape(y) == shape
    if spec.vjp is not None:
        grads = spec.call_vjp(np.zeros(shape), empty)
        assert np.shape(getattr(grads, spec.primary)) == shape


@pytest.mark.parametrize("spec", GROUPED)
def test_groups_of_one_sample_compute(spec: OpSpec):
    """A lone sample's biased variance is 0: an operation that centres gives 0 (the output
    beta) and a gradient of 0, exactly; the others the reference's value. Refused only
    with the unbiased variance (the registry's error cases)."""
    lone = _lone(spec, spec.without_affine(_sample(spec)))
    if lone is None:
        pytest.skip(f"{spec.name}'s sample has no groups of one sample (an argument divides)")
    y = spec.output_values(spec.call(lone))["y"]
    if "zero_mean" not in spec.properties:
        _check_forward(spec, lone, spec.call(lone), np.asarray, "one sample")
        return
    np.testing.assert_array_equal(np.asarray(y), 0.0, err_msg=spec.name)
    if spec.vjp is None or "gradient_undefined_at_ties" in spec.properties:
        return  # PCA's gradient does not exist where eigenvalues tie (all are eps here)
    grads = spec.call_vjp(_dy(spec, lone), lone)
    np.testing.assert_array_equal(np.asarray(getattr(grads, spec.primary)), 0.0)


# ----------------------------------------------------------------------------- refused


def _required(spec: OpSpec, sample: Sample) -> list[str]:
    return [n for n in _arrays(spec, sample) if n not in _optional(spec) or n == spec.primary]


def _both(spec: OpSpec, sample: Sample, exception: type, match: str) -> None:
    """The forward and the VJP both raise ``exception`` matching ``match``."""
    with pytest.raises(exception, match=match):
        spec.call(sample)
    if spec.vjp is not None:
        primary = sample.args[spec.primary]
        # every output y has its primary input's shape
        shape = np.shape(_sample(spec).args[spec.primary] if primary is None else primary)
        with pytest.raises(exception, match=match):
            spec.call_vjp(np.ones(shape), sample)


BAD_DTYPES = {
    "int": lambda a: a.astype(np.int64),
    "bool": lambda a: a > 0,
    "complex": lambda a: a.astype(np.complex128),
    "object": lambda a: a.astype(object),
}


@pytest.mark.parametrize("spec", ALL)
@pytest.mark.parametrize("kind", list(BAD_DTYPES))
def test_arrays_that_are_not_real_floating_are_refused_by_name(spec: OpSpec, kind: str):
    sample = _sample(spec)
    for name in _arrays(spec, sample):
        bad = sample.replace(**{name: BAD_DTYPES[kind](sample.args[name])})
        _both(spec, bad, TypeError, rf"{name} must have a real floating dtype")


@pytest.mark.parametrize("spec", ALL)
def test_lists_and_none_are_refused_by_name(spec: OpSpec):
    sample = _sample(spec)
    for name, value in _arrays(spec, sample).items():
        listed = value.tolist()  # a float for a 0-d array
        kind = type(listed).__name__
        bad = sample.replace(**{name: listed})
        _both(spec, bad, TypeError, rf"{name} must be an array, got {kind}")
    for name in _required(spec, sample):
        _both(spec, sample.replace(**{name: None}), (TypeError, ValueError), rf"\b{name}\b")


SHAPE_FREE = {"bias_grad": "clip_by_global_norm clips any tree: each leaf has a shape of its own"}


@pytest.mark.parametrize("spec", [p for p in ALL if len(p.values[0].arrays) > 1])
def test_parameters_of_the_wrong_shape_are_refused_by_name(spec: OpSpec):
    sample = _sample(spec)
    for name in _arrays(spec, sample):
        if name == spec.primary or name in SHAPE_FREE:
            continue
        # one more axis than the primary input: no shape a parameter may have, nor one that
        # broadcasts to x's without changing it
        value = sample.args[name]
        rank = np.ndim(sample.args[spec.primary]) + 1
        bad = sample.replace(**{name: np.reshape(value, (1,) * (rank - value.ndim) + value.shape)})
        _both(spec, bad, ValueError, rf"\b{name}\b")


@pytest.mark.parametrize("spec", [p for p in ALL if len(p.values[0].arrays) > 1])
def test_arrays_of_two_libraries_are_refused_by_name(spec: OpSpec):
    strict = pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    sample = _sample(spec)
    for name in _arrays(spec, sample):
        if name == spec.primary:
            continue
        mixed = sample.replace(**{name: strict.asarray(sample.args[name])})
        _both(spec, mixed, TypeError, rf"different array libraries \(.*{name} is array_api_strict")


AXIS_KEYWORDS = ("axis", "axes", "out_axis")


@pytest.mark.parametrize(
    "spec", [p for p in ALL if any(k in draw(p.values[0], 0).kwargs for k in AXIS_KEYWORDS)]
)
@pytest.mark.parametrize(
    ("value", "exception"), [(99, ValueError), (1.5, TypeError), (True, (TypeError, ValueError))]
)
def test_bad_axes_are_refused_by_name(spec: OpSpec, value: Any, exception: Any):
    sample = _sample(spec)
    keyword = next(k for k in AXIS_KEYWORDS if k in sample.kwargs)
    bad = value if keyword != "axes" else (value,)
    _both(spec, sample.replace(**{keyword: bad}), exception, keyword)


@pytest.mark.parametrize("spec", [p for p in ALL if "eps" in draw(p.values[0], 0).kwargs])
@pytest.mark.parametrize("eps", [-1.0, float("nan"), "1e-5", None])
def test_bad_eps_is_refused_by_name(spec: OpSpec, eps: Any):
    _both(spec, _sample(spec).replace(eps=eps), (TypeError, ValueError), "eps")


INTEGER_ARGUMENTS = (
    "num_groups",
    "virtual_batch_size",
    "group_size",
    "n_power_iterations",
    "iterations",
)


@pytest.mark.parametrize(
    "spec",
    [
        p
        for p in ALL
        if any(
            k in {**draw(p.values[0], 0).args, **draw(p.values[0], 0).kwargs}
            for k in INTEGER_ARGUMENTS
        )
    ],
)
@pytest.mark.parametrize("value", [-1, 2.5, True, "2"])
def test_bad_counts_are_refused_by_name(spec: OpSpec, value: Any):
    sample = _sample(spec)
    name = next(k for k in INTEGER_ARGUMENTS if k in {**sample.args, **sample.kwargs})
    _both(spec, sample.replace(**{name: value}), (TypeError, ValueError), name)


@pytest.mark.parametrize("spec", [p for p in ALL if "momentum" in draw(p.values[0], 0).kwargs])
@pytest.mark.parametrize("momentum", [-0.1, 1.5, float("nan"), "0.1"])
def test_bad_momentum_is_refused_by_name(spec: OpSpec, momentum: Any):
    _both(spec, _sample(spec).replace(momentum=momentum), (TypeError, ValueError), "momentum")


# ----------------------------------------------------------------------------- never modified


@pytest.mark.parametrize("spec", ALL)
def test_outputs_never_share_memory_with_inputs(spec: OpSpec):
    """A caller may write into a result: no result is (a view of) an argument."""
    for seed, changes in ((0, {}), (1, {"n_power_iterations": 0})):
        sample = _sample(spec, seed)
        if changes and not set(changes) <= set(sample.kwargs):
            continue
        sample = sample.replace(**changes)
        inputs = list(_arrays(spec, sample).values())
        dy = _dy(spec, sample)
        found = list(_results(spec, sample, dy).values())
        for result in found:
            for given in [*inputs, dy]:
                assert not np.shares_memory(result, given), spec.name
