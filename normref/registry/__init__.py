"""The operation registry: every normref operation, listed once.

Each :class:`OpSpec` records every fact about one operation that a consumer
needs: its forward and VJP, which arguments are arrays and which are
differentiable, how to draw valid (and special) inputs, how the operation
groups its input, its kind of computation, its ``eps`` and the convention
fields that change it, where it runs, the inputs it is benchmarked on, which
identities it satisfies, how its results scale with its input
(:class:`ScalingLaw`) and which invalid inputs it must refuse. Tests,
benchmarks, documentation tables and the conformance suite are driven from
:data:`REGISTRY`, so an operation added here (with its implementation) is
tested, benchmarked, documented and checked everywhere. One module per family
(:mod:`normref.registry.standardization`, ``weights``, ``gradients``,
``residual``, ``whitening``; :mod:`normref.registry.activations` the
standardization family's other layers of the literature) lists its entries; :mod:`normref.registry.spec`
defines the record.

Sampling takes a :class:`numpy.random.Generator` from the caller (random
numbers are not part of the Array API) and returns NumPy float64 arrays; the
caller converts them to the namespace and dtype under test.

Property names (:attr:`OpSpec.properties`), each about the output without its
affine parameters:

``zero_mean``
    every group of the output has mean 0;
``unit_variance``
    every group has biased variance :math:`v/(v + \\epsilon)`;
``unit_rms``
    every group has mean square :math:`q/(q + \\epsilon)`;
``shift_invariant``
    adding a constant to each group of ``x`` leaves the output unchanged;
``scale_invariant``
    ``f(a x, eps=a**2 eps) == f(x, eps)`` for ``a > 0``;
``idempotent``
    applying the operation to its own output changes it by ``O(eps / v)``;
``gradient_undefined_at_ties``
    the gradient does not exist where two eigenvalues of a group's covariance
    coincide (a constant group makes all of them equal): the VJP raises
    :class:`ValueError` there;
``fixed_statistics``
    the statistics are arguments, not taken from ``x``: each sample's output
    depends on that sample alone;
``state_held_constant``
    the VJP holds the state the forward computes (power-iteration vectors)
    constant, as frameworks do: it is the derivative of ``y`` with that state
    fixed at its new value, not of the whole forward;
``corrections_held_constant``
    the VJP holds the corrections the forward computes from the statistics
    (batch renorm's ``r`` and ``d``) constant, as the paper does: its gradient
    of ``x`` is the derivative of ``y`` with those fixed, its gradients of the
    affine parameters the whole derivative.
"""

from normref.registry import (
    activations,
    gradients,
    residual,
    standardization,
    weights,
    whitening,
)
from normref.registry.spec import (
    BenchmarkInput,
    Capabilities,
    ErrorCase,
    Kind,
    OpSpec,
    Sample,
    ScalingLaw,
    SpecialInput,
)

REGISTRY: dict[str, OpSpec] = {
    spec.name: spec
    for family in (standardization, activations, weights, gradients, residual, whitening)
    for spec in family.REGISTRY_ENTRIES
}
"""Every operation of normref by name, in the order of its families."""

__all__ = [
    "REGISTRY",
    "BenchmarkInput",
    "Capabilities",
    "ErrorCase",
    "Kind",
    "OpSpec",
    "Sample",
    "ScalingLaw",
    "SpecialInput",
]
