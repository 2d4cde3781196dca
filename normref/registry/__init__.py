"""The operation registry: every normref operation, listed once.

Each :class:`OpSpec` names an operation's forward and VJP, which arguments
are arrays and which are differentiable, how to draw valid inputs, how the
operation groups its input, which identities it satisfies and which invalid
inputs it must refuse. Tests, benchmarks, documentation tables and the
conformance suite are driven from :data:`REGISTRY`, so an operation added here
is tested, benchmarked and documented everywhere.

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
    depends on that sample alone.
"""

from normref.registry.spec import ErrorCase, OpSpec, Sample
from normref.registry.standardization import REGISTRY_ENTRIES as _STANDARDIZATION
from normref.registry.weights import REGISTRY_ENTRIES as _WEIGHTS
from normref.registry.whitening import REGISTRY_ENTRIES as _WHITENING

REGISTRY: dict[str, OpSpec] = {
    spec.name: spec for spec in (*_STANDARDIZATION, *_WEIGHTS, *_WHITENING)
}
"""Every operation of normref by name, in the order of its families."""

__all__ = ["REGISTRY", "ErrorCase", "OpSpec", "Sample"]
