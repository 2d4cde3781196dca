r"""Nonlinearity gains: :math:`\gamma = 1/\operatorname{std}(g(z))`, :math:`z \sim N(0, 1)`, exactly.

Scaled weight standardization keeps a layer's output at unit variance only if
the nonlinearity before it is scaled by :math:`\gamma_g`, the inverse standard
deviation of :math:`g(z)` for a standard normal :math:`z` (Brock et al., 2021).
With :math:`\varphi` the standard normal density,

.. math::

    m = \int g(z)\,\varphi(z)\,dz, \qquad
    \sigma^2 = \int (g(z) - m)^2 \varphi(z)\,dz, \qquad \gamma = 1/\sigma,

each integral computed by adaptive Gauss–Kronrod quadrature
(``scipy.integrate.quad``) over :math:`(-\infty, \infty)` split at 0 and at
every kink of :math:`g` (so each piece is smooth), to a relative tolerance
near float64's resolution; the variance is taken about the computed mean (a
second pass), so :math:`m` large against :math:`\sigma` costs no accuracy.
The named entries agree with 40-digit quadrature to about 1e-16 (tested).

The NFNets reference code (``nfnets/base.py``) bakes *estimates* of these
constants into its activations; they were obtained by sampling and differ
from the exact values by a few parts in 10⁴ (:data:`NFNETS_PUBLISHED_GAMMAS`,
compared entry by entry in ``docs/weights.md``).
"""

from __future__ import annotations

import itertools
import math
import numbers
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from array_api_compat import device
from scipy import integrate, special

from normref._lib.namespace import (
    Array,
    Float64UnavailableError,
    compute_dtype,
    namespace_of,
    to_dtype,
)
from normref.conventions import NONLINEARITY_GAMMAS
from normref.types import Precision

_SQRT_2PI = math.sqrt(2.0 * math.pi)
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946
_LEAKY_SLOPE = 0.01


def _softplus(z: float) -> float:
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


def _elu(z: float) -> float:
    return z if z > 0 else math.expm1(z)


def _gelu_tanh(z: float) -> float:
    return 0.5 * z * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z**3)))


class Nonlinearity(NamedTuple):
    """A named nonlinearity: the function of a float, and the points where it has a kink."""

    fn: Callable[[float], float]
    kinks: tuple[float, ...]


NONLINEARITIES: dict[str, Nonlinearity] = {
    "identity": Nonlinearity(lambda z: z, ()),
    "relu": Nonlinearity(lambda z: max(z, 0.0), (0.0,)),
    "relu6": Nonlinearity(lambda z: min(max(z, 0.0), 6.0), (0.0, 6.0)),
    "leaky_relu": Nonlinearity(lambda z: z if z > 0 else _LEAKY_SLOPE * z, (0.0,)),
    "gelu": Nonlinearity(lambda z: 0.5 * z * math.erfc(-z / math.sqrt(2.0)), ()),
    "gelu_tanh": Nonlinearity(_gelu_tanh, ()),
    "silu": Nonlinearity(lambda z: z * special.expit(z), ()),
    "swish": Nonlinearity(lambda z: z * special.expit(z), ()),
    "tanh": Nonlinearity(math.tanh, ()),
    "sigmoid": Nonlinearity(lambda z: float(special.expit(z)), ()),
    "elu": Nonlinearity(_elu, (0.0,)),
    "celu": Nonlinearity(_elu, (0.0,)),
    "selu": Nonlinearity(
        lambda z: _SELU_SCALE * (z if z > 0 else _SELU_ALPHA * math.expm1(z)), (0.0,)
    ),
    "softplus": Nonlinearity(_softplus, ()),
    "log_sigmoid": Nonlinearity(lambda z: -_softplus(-z), ()),
    "soft_sign": Nonlinearity(lambda z: z / (1.0 + abs(z)), (0.0,)),
}
"""The named nonlinearities of :func:`nonlinearity_gamma`.

``gelu`` is the exact (erf) form, ``gelu_tanh`` the tanh approximation
(``jax.nn.gelu``'s default); ``leaky_relu`` has slope 0.01 (torch's and jax's
default); ``elu`` and ``celu`` have :math:`\\alpha = 1`, where they are the same
function; ``selu`` has the constants of Klambauer et al.; ``swish`` is ``silu``.
"""

NFNETS_PUBLISHED_GAMMAS: dict[str, float] = {
    "celu": 1.270926833152771,
    "elu": 1.2716004848480225,
    "gelu_tanh": 1.7015043497085571,
    "leaky_relu": 1.70590341091156,
    "log_sigmoid": 1.9193484783172607,
    "relu": 1.7139588594436646,
    "relu6": 1.7131484746932983,
    "selu": 1.0008515119552612,
    "sigmoid": 4.803835391998291,
    "silu": 1.7881293296813965,
    "soft_sign": 2.338853120803833,
    "softplus": 1.9203323125839233,
    "tanh": 1.5939117670059204,
}
"""The gammas of the NFNets reference code (``nfnets/base.py``, ``nonlinearities``), by entry.

Sampled estimates, kept as published so that they can be compared with
:func:`nonlinearity_gamma`. The published ``"gelu"`` multiplies
``jax.nn.gelu``, whose default is the tanh approximation, so it is listed
under ``"gelu_tanh"``. Left out: ``glu`` (it gates one half of its input by
the other, so it is not a function of one normal variable) and
``log_softmax`` (it depends on the width of its input).
"""

# quad refuses epsrel below 50 float64 epsilons when epsabs is 0: ask for just above that
_RELATIVE_TOLERANCE = 55 * sys.float_info.epsilon
_SUBDIVISIONS = 200


def _checked(fn: Callable[[float], Any]) -> Callable[[float], float]:
    """``fn`` with each value checked: a real, finite number (``fn_or_name``'s rule)."""

    def value(z: float) -> float:
        result = fn(z)
        if not isinstance(result, numbers.Real) or isinstance(result, bool):
            msg = (
                f"fn_or_name must return a real number for a float argument, it returned "
                f"{result!r} ({type(result).__name__}) at z={z!r}"
            )
            raise TypeError(msg)
        if not math.isfinite(result):
            msg = (
                f"fn_or_name must return finite values, it returned {result!r} at z={z!r}: "
                "the variance of g(z), z ~ N(0, 1), needs them"
            )
            raise ValueError(msg)
        return float(result)

    return value


def _integrate(f: Callable[[float], float], points: Sequence[float]) -> tuple[float, float]:
    """:math:`\\int f \\varphi` over the real line split at ``points``, and quad's error estimate."""
    edges = [-math.inf, *points, math.inf]
    total, error = 0.0, 0.0
    for a, b in itertools.pairwise(edges):
        value, bound = integrate.quad(
            lambda z: f(z) * math.exp(-0.5 * z * z) / _SQRT_2PI,
            a,
            b,
            epsabs=0.0,
            epsrel=_RELATIVE_TOLERANCE,
            limit=_SUBDIVISIONS,
        )
        total += value
        error += bound
    return total, error


def nonlinearity_gamma(
    fn_or_name: str | Callable[[float], float],
    *,
    breakpoints: Sequence[float] = (),
    return_error: bool = False,
) -> float | tuple[float, float]:
    r"""The gain :math:`\gamma = 1/\operatorname{std}(g(z))` of a nonlinearity, :math:`z \sim N(0,1)`.

    Parameters
    ----------
    fn_or_name
        A name of :data:`~normref.nonlinearities.NONLINEARITIES` (``"relu"``, ``"gelu"``, ``"silu"``,
        ...), or any function of one float returning a float (it is called
        with Python floats, e.g. ``math.tanh``, ``numpy.tanh``).
    breakpoints
        For a function: points where it is not smooth (kinks, jumps), added to
        the split at 0 so that quadrature sees smooth pieces.
    return_error
        Also return the quadrature's error bound on :math:`\gamma`.

    Returns
    -------
    float, or (float, float)
        :math:`\gamma`, and with ``return_error`` the first-order bound
        :math:`\tfrac12 \gamma^3 (e_2 + e_1^2)` from quad's error estimates
        :math:`e_1` (mean) and :math:`e_2` (variance), plus 4 ulp of rounding.

    Notes
    -----
    ``gamma("relu")`` is :math:`\sqrt{2/(1 - 1/\pi)} \approx 1.7128585504496627`
    (the mean of relu(z) is :math:`1/\sqrt{2\pi}`, its mean square 1/2).

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> y = normref.nonlinearity_gamma('relu')
    >>> print(round(y, 4))
    1.7129

    References
    ----------
    - Brock, A., De, S. and Smith, S. L. (2021). Characterizing signal propagation to close
      the performance gap in unnormalized ResNets. ICLR. https://arxiv.org/abs/2101.08692
    """
    if isinstance(fn_or_name, str):
        if fn_or_name not in NONLINEARITIES:
            msg = f"fn_or_name must be one of {tuple(NONLINEARITIES)} or a callable, got {fn_or_name!r}"
            raise ValueError(msg)
        fn, kinks = NONLINEARITIES[fn_or_name]
    elif callable(fn_or_name):
        fn, kinks = fn_or_name, tuple(float(b) for b in breakpoints)
    else:
        msg = f"fn_or_name must be a name or a callable, got {type(fn_or_name).__name__}"
        raise TypeError(msg)
    points = sorted({0.0, *kinks})
    if not all(math.isfinite(p) for p in points):
        msg = f"breakpoints must be finite numbers, got {tuple(breakpoints)!r}"
        raise ValueError(msg)
    g = _checked(fn)
    mean, mean_error = _integrate(g, points)
    try:
        variance, variance_error = _integrate(lambda z: (g(z) - mean) ** 2, points)
    except OverflowError:
        msg = (
            "fn_or_name grows too fast: the squares of its values overflow float64, so its "
            "variance under N(0, 1) is not a finite number"
        )
        raise ValueError(msg) from None
    if not (math.isfinite(mean) and math.isfinite(variance)):
        msg = (
            f"fn_or_name has no finite mean and variance under N(0, 1) (quadrature gave "
            f"{mean!r} and {variance!r}): gamma = 1/std is not determined"
        )
        raise ValueError(msg)
    variance_bound = variance_error + mean_error**2
    if not variance > variance_bound:
        msg = (
            f"the nonlinearity's variance under N(0, 1), {variance!r}, is not above its "
            f"quadrature error {variance_bound!r}: gamma = 1/std is not determined"
        )
        raise ValueError(msg)
    gamma = 1.0 / math.sqrt(variance)
    if not return_error:
        return gamma
    return gamma, 0.5 * gamma**3 * variance_bound + 4 * math.ulp(gamma)


def nonlinearity_gain(name: str, gammas: str = "exact") -> float:
    """The gain of nonlinearity ``name``: :func:`nonlinearity_gamma` (``gammas="exact"``) or the
    NFNets code's published estimate (``"nfnets_published"``, :data:`NFNETS_PUBLISHED_GAMMAS`).

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> y = normref.nonlinearity_gain('relu')
    >>> print(round(y, 4))
    1.7129

    References
    ----------
    - Brock, A., De, S. and Smith, S. L. (2021). Characterizing signal propagation to close
      the performance gap in unnormalized ResNets. ICLR. https://arxiv.org/abs/2101.08692
    """
    if gammas not in NONLINEARITY_GAMMAS:
        msg = f"gammas must be one of {NONLINEARITY_GAMMAS}, got {gammas!r}"
        raise ValueError(msg)
    if name not in NONLINEARITIES:
        msg = f"nonlinearity must be one of {tuple(NONLINEARITIES)}, got {name!r}"
        raise ValueError(msg)
    if gammas == "exact":
        return float(nonlinearity_gamma(name))  # type: ignore[arg-type]
    if name not in NFNETS_PUBLISHED_GAMMAS:
        msg = f"the NFNets code publishes no gain for {name!r}"
        raise ValueError(msg)
    return NFNETS_PUBLISHED_GAMMAS[name]


def gamma_scaled_nonlinearity(
    x: Array,
    *,
    nonlinearity: str = "relu",
    gammas: str = "exact",
    precision: Precision = "highest",
) -> Array:
    r""":math:`\gamma_g\, g(x)`, the variance-preserving activation of normalizer-free networks.

    :math:`g` is the named nonlinearity of :data:`~normref.nonlinearities.NONLINEARITIES` and :math:`\gamma_g`
    its gain (:func:`nonlinearity_gain`: exact, or the NFNets code's published
    estimate). The Array API has no ``erf``, so every element is computed as a
    Python float (float64) by the scalar definition the gain integrates, whatever
    ``precision`` (which is checked as every op checks it), and rounded once to
    ``x``'s dtype on ``x``'s device.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([-1.0, 0.5, 2.0])
    >>> y = normref.gamma_scaled_nonlinearity(x, nonlinearity='relu')
    >>> print(np.round(y, 4))
    [0.     0.8564 3.4257]

    References
    ----------
    - Brock, A., De, S. and Smith, S. L. (2021). Characterizing signal propagation to close
      the performance gap in unnormalized ResNets. ICLR. https://arxiv.org/abs/2101.08692
    """
    xp = namespace_of(x=x)
    compute_dtype(xp, x.dtype, precision)
    gain = nonlinearity_gain(nonlinearity, gammas)
    function = NONLINEARITIES[nonlinearity].fn
    flat = xp.reshape(x, (-1,))
    values = [gain * function(float(flat[i])) for i in range(flat.shape[0])]
    try:  # held in float64 first where the library has it: one rounding to x's dtype
        held = compute_dtype(xp, x.dtype, "highest")
    except Float64UnavailableError:
        held = x.dtype
    result = xp.asarray(values, dtype=held, device=device(x))
    return xp.reshape(to_dtype(xp, result, x.dtype), x.shape)
