"""What the registry records about one operation: :class:`OpSpec`, and its parts.

See :mod:`normref.registry` for the property names and how the records are used.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from normref._lib.checks import normalize_axes, normalize_axis
from normref.affine import channel_param_axes
from normref.partition import Partition

Rng = Any
"""A ``numpy.random.Generator``, supplied by the caller (random numbers are not part of the
Array API)."""

MAX_DRAWS = 64
"""Draws :meth:`OpSpec.draw` tries for a sample with the keywords an input asks for."""


class Sample(NamedTuple):
    """Arguments of one call: ``args`` (positional-or-keyword, in order) and ``kwargs``."""

    args: dict[str, Any]
    kwargs: dict[str, Any]

    def replace(self, **changes: Any) -> Sample:
        """A copy with some arguments (positional or keyword) replaced."""
        args = {k: changes.pop(k) if k in changes else v for k, v in self.args.items()}
        return Sample(args, {**self.kwargs, **changes})


class ErrorCase(NamedTuple):
    """An invalid input: how to derive it from a valid sample, and what must be raised."""

    description: str
    modify: Callable[[Sample], Sample]
    exception: type[Exception]
    match: str


class SpecialInput(NamedTuple):
    """A named input of one operation beside a typical one: a zero unit of a weight, an AGC
    unit at its clipping threshold, a covariance with repeated eigenvalues, ...

    ``make(spec, sample, rng)`` derives it from a valid (float64 NumPy) sample.
    """

    name: str
    description: str
    make: Callable[[OpSpec, Sample, Rng], Sample]


class BenchmarkInput(NamedTuple):
    """A realistic input the benchmarks time the operation on.

    ``shape`` is the primary input's; ``description`` says where such an input
    occurs; ``fixed`` are integer arguments given to the sampler's result
    (``num_groups``), ``drawn`` keywords the sample is drawn with (``out_axis``);
    ``quick`` marks the inputs of a quick run; ``compiled`` says whether the
    compiled (fused) path covers it; ``variant`` names what distinguishes inputs
    of one operation.
    """

    shape: tuple[int, ...]
    description: str
    fixed: Mapping[str, Any] = {}
    drawn: Mapping[str, Any] = {}
    quick: bool = False
    compiled: bool = False
    variant: str = ""


class SizedInput(NamedTuple):
    """A primary input of a given shape, for the conformance suite's large cases.

    ``fixed`` are integer arguments set on the sampler's result (``num_groups``),
    ``drawn`` keywords the sample must be drawn with (``out_axis``), as for
    :class:`BenchmarkInput`; ``description`` says what it is.
    """

    shape: tuple[int, ...]
    description: str
    fixed: Mapping[str, Any] = {}
    drawn: Mapping[str, Any] = {}


class Kind(enum.Enum):
    """The kind of computation of an operation: what it computes from its groups' statistics.

    Operations of one kind round alike, so the conformance suite derives one error
    model per kind (``conformance.bounds``).
    """

    CENTERING = "centering"
    """``x - mean``."""
    STANDARDIZING = "standardizing"
    """``(x - mean) / s(var)``, with an affine (batch, layer, group norm; WS on weight units)."""
    SCALING = "scaling"
    """``x / s(var)``: divided by the centred standard deviation, not centred."""
    RMS_SCALING = "rms_scaling"
    """``x / s(mean(x**2))`` (RMS norm)."""
    GIVEN_STATISTICS = "given_statistics"
    """``(x - running_mean) / s(running_var)``: statistics given, not computed."""
    SCALED_STANDARDIZING = "scaled_standardizing"
    """Scaled WS: standardized units times ``gamma gain / sqrt(N)``."""
    WEIGHT_NORMALIZING = "weight_normalizing"
    """``g v / ||v||`` per unit."""
    SPECTRAL_NORMALIZING = "spectral_normalizing"
    """``W / (u^T W v)`` with given vectors."""
    SPECTRAL_STEP = "spectral_step"
    """One power-iteration step, then ``W / sigma``."""
    ADAPTIVE_CLIPPING = "adaptive_clipping"
    """Adaptive gradient clipping: units rescaled by the ratio of two unit-wise norms."""
    UNIT_NORM = "unit_norm"
    """The Euclidean norm of each unit."""
    GLOBAL_CLIPPING = "global_clipping"
    """Every gradient scaled by one factor of their global norm."""
    RESIDUAL = "residual"
    """``x + alpha f``."""
    NONLINEARITY = "nonlinearity"
    """``gamma g(x)`` element by element."""
    WHITENING = "whitening"
    """``W(Sigma) (x - mean)`` per group of features, with an affine."""
    GIVEN_WHITENING = "given_whitening"
    """``W (x - running_mean)`` with a given whitening matrix."""
    RENORMALIZING = "renormalizing"
    """Batch renorm: ``gamma (x_hat r + d) + beta``, ``r`` and ``d`` from the batch's and the
    given statistics, clipped."""
    SWITCHABLE = "switchable"
    """``(x - mu) / s(v)`` with ``mu`` and ``v`` softmax-weighted mixtures of the instance, layer
    and batch statistics."""
    ADAPTIVE_INSTANCE = "adaptive_instance"
    """AdaIN: instance-standardized ``x`` scaled and shifted by another input's statistics."""
    LOCAL_RESPONSE = "local_response"
    """``x / (k + alpha/n sum x^2)^beta`` over a window of channels: a power of a sum of squares."""
    CENTRED_WEIGHT_NORMALIZING = "centred_weight_normalizing"
    """``g (v - mean) / ||v - mean||`` per unit: weight standardization times ``g / sqrt(N)``."""
    ORTHOGONALIZING = "orthogonalizing"
    """``W(V_c V_c^T + eps I) V_c`` per group of units: the whitening of the units as samples
    (OWN's inverse square root, ONI's Newton-Schulz steps)."""


@dataclass(frozen=True)
class Capabilities:
    """Where the operation runs beside NumPy, array-api-strict, torch, jax and CuPy.

    Attributes
    ----------
    dask
        It runs on Dask arrays (a whitening that factors a covariance refuses them:
        Dask cannot factor a stack of matrices).
    traceable_forward, traceable_vjp
        The forward (the VJP) can be traced by ``jax.jit`` and runs on torch's
        ``meta`` device: no argument check or branch reads the values of its
        arrays. A VJP that refuses repeated eigenvalues reads them; a forward
        computed element by element on the host reads every value.
    native_precision
        ``precision="native"`` computes in the input's dtype (``False``: in float64
        whatever the precision, where the Array API lacks a function it needs).
    """

    dask: bool = True
    traceable_forward: bool = True
    traceable_vjp: bool = True
    native_precision: bool = True


@dataclass(frozen=True)
class ScalingLaw:
    r"""How an operation's results change when its primary input is multiplied by :math:`2^k`.

    The identity is ``f(law(sample, k)) == law(f(sample), k)``, exact wherever every
    scaled number is a normal number: each argument named in ``inputs`` (an array or a
    number, the primary input among them, with power 1) is multiplied by
    :math:`2^{kp}` with ``p`` its power, and so is each output named in ``outputs``
    and each gradient named in ``gradients`` (of the VJP with the same cotangent);
    every other argument is held fixed. ``eps`` is multiplied by
    :math:`2^{kp}` with ``p = eps[eps_mode]`` for the ``eps_mode`` in effect (the key
    ``""`` where the operation has no ``eps_mode``): 2 where it is compared with a
    variance, 1 with a norm or a standard deviation.

    An operation that has no such law (a nonlinearity of no degree) says why in
    ``reason`` and leaves the rest empty.
    """

    inputs: Mapping[str, int] = field(default_factory=dict)
    outputs: Mapping[str, int] = field(default_factory=dict)
    gradients: Mapping[str, int] = field(default_factory=dict)
    eps: Mapping[str, int] = field(default_factory=dict)
    reason: str = ""

    def eps_power(self, spec: OpSpec, sample: Sample) -> int | None:
        """The power of ``eps`` for ``sample`` (``None`` where it has no ``eps``)."""
        if "eps" not in sample.kwargs and not spec.accepts("eps"):
            return None
        mode = sample.kwargs.get("eps_mode", _default(spec, "eps_mode"))
        return self.eps[mode if mode in self.eps else ""]

    def powers(self, spec: OpSpec, sample: Sample) -> dict[str, int]:
        """The power of every argument of ``sample`` the law scales, ``eps`` included."""
        powers = {name: p for name, p in self.inputs.items() if _given(sample, name)}
        eps = self.eps_power(spec, sample)
        if eps is not None and "eps" in sample.kwargs:
            powers["eps"] = eps
        return powers

    def scaled(self, spec: OpSpec, sample: Sample, k: int) -> Sample:
        """``sample`` with every argument the law scales multiplied by its power of :math:`2^k`
        (in two steps, each a representable power of two)."""
        changes = {}
        for name, power in self.powers(spec, sample).items():
            value = sample.args[name] if name in sample.args else sample.kwargs[name]
            changes[name] = times_power_of_two(value, k * power)
        return sample.replace(**changes)


def times_power_of_two(value: Any, exponent: int) -> Any:
    """``value * 2**exponent`` by two representable powers of two (exact where the result is
    a normal number)."""
    half = exponent // 2
    return (value * 2.0**half) * 2.0 ** (exponent - half)


def _given(sample: Sample, name: str) -> bool:
    value = sample.args[name] if name in sample.args else sample.kwargs.get(name)
    return value is not None


def _default(spec: OpSpec, name: str) -> Any:
    parameter = inspect.signature(spec.forward).parameters.get(name)
    return "" if parameter is None else parameter.default


@dataclass(frozen=True)
class OpSpec:
    """One operation of normref, with every fact about it that a consumer needs.

    Attributes
    ----------
    name
        The operation's name, as tests, benchmarks, docs and the conformance suite use it.
    family
        ``"standardization"``, ``"whitening"``, ``"weights"``, ``"gradients"`` or
        ``"residual"``.
    summary
        One line for the docs' table of operations.
    kind
        Its kind of computation (:class:`Kind`).
    forward
        The function, called as ``forward(*sample.args.values(), **sample.kwargs)``.
    vjp
        Its vector-Jacobian product, called with the cotangent first and then the
        forward's arguments; ``None`` for an operation without one.
    arrays
        Names of its array arguments, in call order; the first is the primary input.
    differentiable
        Names of the arguments the VJP returns gradients for, in its fields' order.
    sample
        ``sample(rng, shape=None)``: a valid float64 NumPy sample (of the primary
        input's ``shape`` when given; :class:`ValueError` when no valid arguments fit it).
    partition
        ``partition(sample)``: how the operation groups its primary input; ``None``
        where it has no groups.
    affine_args
        Names of its affine parameters (``gamma``, ``beta``, a gain).
    properties
        Identities it satisfies (:mod:`normref.registry`).
    errors
        Invalid inputs it must refuse.
    outputs
        Names of the forward's outputs in the order it returns them, ``"y"`` first.
    state
        The outputs that are state carried to the next call (running statistics,
        power-iteration vectors).
    eps_field
        The :class:`~normref.conventions.Convention` field holding its default
        ``eps`` (``"batch_norm_eps"``), or ``None``.
    eps_argument
        Whether implementations of it commonly take ``eps`` as an argument (torch's
        weight norm and global-norm clipping have none: they use the default).
    convention_keywords
        ``(keyword, Convention field)``: the convention's choices it takes as keywords.
    convention_fields
        Further Convention fields that change its exact result or the arithmetic
        of its implementations, for which it has no keyword.
    method
        The whitening method it computes, where its name fixes one.
    typical_shape
        The shape of a typical primary input (groups of 5 to 20 samples).
    special_inputs
        Named inputs beside the typical one (:class:`SpecialInput`).
    promoting_inputs
        Inputs besides the affine parameters, held in the parameters' dtype, with
        which a framework that promotes its output's dtype promotes ``y``.
    capabilities
        Where it runs (:class:`Capabilities`).
    benchmarks
        The realistic inputs the benchmarks time it on.
    reduction_input
        ``reduction_input(n)``: a small input whose every reduction (each group's
        statistics; a unit's fan-in; a whitening group's samples) has ``n`` terms,
        for the suite's cases at the lengths where vectorized and tiled kernels
        change their blocking; ``None`` for an op without reductions.
    large_inputs
        Inputs of realistic size (a transformer row, a convolution's activations,
        a convolution kernel), the first the one a default conformance run checks.
    scaling
        How its results scale with its primary input (:class:`ScalingLaw`); every
        operation declares one.
    """

    name: str
    family: str
    summary: str
    kind: Kind
    forward: Callable[..., Any]
    vjp: Callable[..., Any] | None
    arrays: tuple[str, ...]
    differentiable: tuple[str, ...]
    sample: Callable[..., Sample]
    partition: Callable[[Sample], Partition] | None = None
    affine_args: tuple[str, ...] = ()
    properties: frozenset[str] = frozenset()
    errors: tuple[ErrorCase, ...] = ()
    outputs: tuple[str, ...] = ("y",)
    state: tuple[str, ...] = ()
    eps_field: str | None = None
    eps_argument: bool = True
    convention_keywords: tuple[tuple[str, str], ...] = ()
    convention_fields: tuple[str, ...] = ()
    method: str | None = None
    typical_shape: tuple[int, ...] = (4, 6, 5)
    special_inputs: tuple[SpecialInput, ...] = ()
    promoting_inputs: tuple[str, ...] = ()
    capabilities: Capabilities = field(default_factory=Capabilities)
    benchmarks: tuple[BenchmarkInput, ...] = ()
    reduction_input: Callable[[int], SizedInput] | None = None
    large_inputs: tuple[SizedInput, ...] = ()
    scaling: ScalingLaw | None = None

    @property
    def primary(self) -> str:
        """Name of the main input (the first array argument: ``x``, ``w``, ``grad``, ...)."""
        return self.arrays[0]

    def accepts(self, keyword: str) -> bool:
        """Whether the forward takes ``keyword``."""
        return keyword in inspect.signature(self.forward).parameters

    def draw(self, wanted: SizedInput | BenchmarkInput, rng: Rng) -> Sample:
        """A sample of ``wanted``'s shape with its ``drawn`` keywords and ``fixed`` arguments:
        the first of up to :data:`MAX_DRAWS` draws from ``rng`` that has them."""
        for _ in range(MAX_DRAWS):
            drawn = self.sample(rng, wanted.shape)
            if all(drawn.kwargs.get(k, drawn.args.get(k)) == v for k, v in wanted.drawn.items()):
                return drawn.replace(**wanted.fixed)
        msg = (
            f"{self.name}: none of {MAX_DRAWS} draws of shape {wanted.shape} has "
            f"{dict(wanted.drawn)}"
        )
        raise ValueError(msg)

    def call(self, sample: Sample) -> Any:
        """The forward on ``sample``."""
        return self.forward(*sample.args.values(), **sample.kwargs)

    def call_vjp(self, dy: Any, sample: Sample) -> Any:
        """The VJP on cotangent ``dy`` and ``sample``."""
        if self.vjp is None:
            msg = f"{self.name} has no VJP"
            raise TypeError(msg)
        return self.vjp(dy, *sample.args.values(), **sample.kwargs)

    def output_values(self, result: Any) -> dict[str, Any]:
        """The forward's ``result`` by output name (:attr:`outputs`): a single array, or the
        arrays of a (nested) tuple in order (``(y, RunningStats(mean, var))``)."""
        if len(self.outputs) == 1:
            return {self.outputs[0]: result}
        return dict(zip(self.outputs, _flattened(result), strict=True))

    def without_affine(self, sample: Sample) -> Sample:
        """``sample`` with the affine parameters set to ``None``."""
        return sample.replace(**dict.fromkeys(self.affine_args))

    def param_axes(self, sample: Sample) -> tuple[int, ...]:
        """The axes of the primary input that the affine parameters span (from the sample's
        ``axes``, ``axis`` or ``out_axis``; with ``axis``, also the batch axis 0 where an affine
        parameter has rank 2, one per sample and channel); ``()`` where it has none."""
        ndim = sample.args[self.primary].ndim
        if "axes" in sample.kwargs:
            return normalize_axes(sample.kwargs["axes"], ndim)
        if "axis" in sample.kwargs:
            gamma, beta = sample.args.get("gamma"), sample.args.get("beta")
            return channel_param_axes(
                tuple(sample.args[self.primary].shape), sample.kwargs["axis"], gamma, beta
            )
        if "out_axis" in sample.kwargs:
            return (normalize_axis(sample.kwargs["out_axis"], ndim),)
        return ()


def _flattened(result: Any) -> list[Any]:
    """The arrays of a (nested) tuple of arrays, in order."""
    if isinstance(result, tuple):
        return [leaf for item in result for leaf in _flattened(item)]
    return [result]
