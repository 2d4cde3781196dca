"""nonlinearity_gamma against closed forms, 30-digit quadrature (mpmath) and Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest

import normref
from normref.nonlinearities import NONLINEARITIES

mpmath = pytest.importorskip("mpmath", reason="mpmath is not installed (it comes with sympy)")

# A float64 result correctly rounded is within 0.5 ulp; each of the two integrals is
# accurate to a few ulps of its value (quad's achieved error, far below its requested
# 55 eps relative), and gamma = var^(-1/2) halves the variance's relative error. Four
# ulps of gamma bounds both.
FLOAT64_ULPS = 4


def _mp_definitions() -> dict:
    mp = mpmath
    selu_alpha = mp.mpf("1.6732632423543772848170429916717")
    selu_scale = mp.mpf("1.0507009873554804934193349852946")

    def softplus(z):
        return mp.log1p(mp.exp(z))

    def elu(z):
        return z if z > 0 else mp.expm1(z)

    return {
        "identity": lambda z: z,
        "relu": lambda z: max(z, 0),
        "relu6": lambda z: min(max(z, 0), 6),
        "leaky_relu": lambda z: z if z > 0 else mp.mpf("0.01") * z,
        "gelu": lambda z: z * mp.ncdf(z),
        "gelu_tanh": lambda z: (
            z / 2 * (1 + mp.tanh(mp.sqrt(2 / mp.pi) * (z + mp.mpf("0.044715") * z**3)))
        ),
        "silu": lambda z: z / (1 + mp.exp(-z)),
        "swish": lambda z: z / (1 + mp.exp(-z)),
        "tanh": mp.tanh,
        "sigmoid": lambda z: 1 / (1 + mp.exp(-z)),
        "elu": elu,
        "celu": elu,
        "selu": lambda z: selu_scale * (z if z > 0 else selu_alpha * mp.expm1(z)),
        "softplus": softplus,
        "log_sigmoid": lambda z: -softplus(-z),
        "soft_sign": lambda z: z / (1 + abs(z)),
    }


def _mp_gamma(fn, kinks) -> float:
    mp = mpmath
    with mp.workdps(30):
        density = lambda z: mp.exp(-z * z / 2) / mp.sqrt(2 * mp.pi)
        points = [-mp.inf, *sorted({0.0, *kinks}), mp.inf]
        mean = mp.quad(lambda z: fn(z) * density(z), points)
        variance = mp.quad(lambda z: (fn(z) - mean) ** 2 * density(z), points)
        return float(1 / mp.sqrt(variance))


def test_every_named_entry_has_an_independent_definition():
    assert set(_mp_definitions()) == set(NONLINEARITIES)


@pytest.mark.parametrize("name", sorted(NONLINEARITIES))
def test_named_gamma_to_float64_accuracy(name):
    """Against the same integrals at 30 digits with mpmath's own functions (tanh-sinh quadrature)."""
    gamma, bound = normref.nonlinearity_gamma(name, return_error=True)
    exact = _mp_gamma(_mp_definitions()[name], NONLINEARITIES[name].kinks)
    assert abs(gamma - exact) <= FLOAT64_ULPS * math.ulp(exact), (name, gamma, exact)
    assert abs(gamma - exact) <= bound  # the reported bound holds


def test_closed_forms():
    """relu: E = 1/sqrt(2 pi), E[g^2] = 1/2; leaky relu with slope a: E = (1 - a)/sqrt(2 pi),
    E[g^2] = (1 + a^2)/2; identity: 1; selu: its constants make N(0, 1) a fixed point (mean 0,
    variance 1 to the 31 digits they are given with)."""
    a = 0.01
    closed = {
        "relu": math.sqrt(2.0 / (1.0 - 1.0 / math.pi)),
        "leaky_relu": 1.0 / math.sqrt((1 + a * a) / 2 - (1 - a) ** 2 / (2 * math.pi)),
        "identity": 1.0,
        "selu": 1.0,
    }
    for name, value in closed.items():
        # the closed forms' own float64 evaluation is off by a couple of ulps too
        assert abs(normref.nonlinearity_gamma(name) - value) <= (FLOAT64_ULPS + 2) * math.ulp(
            value
        ), name


def test_any_callable_with_its_breakpoints():
    """max(z, 1): E = Phi(1) + phi(1); E[g^2] = Phi(1) + phi(1) + 1 - Phi(1) = 1 + phi(1)
    (from the integral of z^2 phi over (1, inf) = phi(1) + 1 - Phi(1))."""
    phi1 = math.exp(-0.5) / math.sqrt(2 * math.pi)
    cdf1 = 0.5 * math.erfc(-1 / math.sqrt(2))
    mean, second = cdf1 + phi1, 1 + phi1
    exact = 1 / math.sqrt(second - mean * mean)
    gamma, bound = normref.nonlinearity_gamma(
        lambda z: max(z, 1.0), breakpoints=[1.0], return_error=True
    )
    # the closed form subtracts two numbers near 1.8 and 1.5: its own error is ~10 ulps of gamma
    assert abs(gamma - exact) <= 16 * math.ulp(exact)
    assert bound < 1e-12
    assert normref.nonlinearity_gamma(math.tanh) == normref.nonlinearity_gamma("tanh")
    assert abs(
        normref.nonlinearity_gamma(np.tanh) - normref.nonlinearity_gamma("tanh")
    ) <= 2 * math.ulp(1.6)


def _jax_functions() -> dict:
    jax = pytest.importorskip("jax", reason="jax is not installed (pip install -e '.[jax]')")
    jax.config.update("jax_enable_x64", True)
    nn = jax.nn
    return {
        "relu": nn.relu,
        "relu6": nn.relu6,
        "leaky_relu": nn.leaky_relu,
        "gelu": lambda z: nn.gelu(z, approximate=False),
        "gelu_tanh": nn.gelu,
        "silu": nn.silu,
        "tanh": np.tanh,
        "sigmoid": nn.sigmoid,
        "elu": nn.elu,
        "celu": nn.celu,
        "selu": nn.selu,
        "softplus": nn.softplus,
        "log_sigmoid": nn.log_sigmoid,
        "soft_sign": nn.soft_sign,
    }


def _assert_monte_carlo(functions: dict) -> None:
    """1/std of each function on n normal draws: the sample variance has standard error
    sqrt((m4 - var^2)/n), so gamma's relative error is half the variance's; within 5 of them."""
    z = np.random.default_rng(0).standard_normal(200_000)
    for name, fn in functions.items():
        g = np.asarray(fn(z), dtype=np.float64)
        var = g.var()
        m4 = ((g - g.mean()) ** 4).mean()
        relative = 0.5 * math.sqrt((m4 - var * var) / z.size) / var
        gamma = normref.nonlinearity_gamma(name)
        assert abs(1 / math.sqrt(var) / gamma - 1) <= 5 * relative, name


def _numpy_functions() -> dict:
    """Every named nonlinearity written from its textbook definition with NumPy and SciPy."""
    from scipy.special import expit, ndtr

    selu_alpha, selu_scale = 1.6732632423543772, 1.0507009873554805  # Klambauer et al. (2017)

    def elu(z):
        return np.where(z > 0, z, np.expm1(np.minimum(z, 0.0)))

    return {
        "identity": lambda z: z,
        "relu": lambda z: np.maximum(z, 0.0),
        "relu6": lambda z: np.clip(z, 0.0, 6.0),
        "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
        "gelu": lambda z: z * ndtr(z),
        "gelu_tanh": lambda z: (
            0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)))
        ),
        "silu": lambda z: z * expit(z),
        "swish": lambda z: z * expit(z),
        "tanh": np.tanh,
        "sigmoid": expit,
        "elu": elu,
        "celu": elu,
        "selu": lambda z: (
            selu_scale * np.where(z > 0, z, selu_alpha * np.expm1(np.minimum(z, 0.0)))
        ),
        "softplus": lambda z: np.logaddexp(0.0, z),
        "log_sigmoid": lambda z: -np.logaddexp(0.0, -z),
        "soft_sign": lambda z: z / (1 + np.abs(z)),
    }


def test_monte_carlo_with_textbook_definitions():
    functions = _numpy_functions()
    assert set(functions) == set(NONLINEARITIES)
    _assert_monte_carlo(functions)


def test_monte_carlo_with_the_jax_functions_nfnets_uses():
    _assert_monte_carlo(_jax_functions())


def test_published_nfnets_table_is_sampled_estimates():
    """Each published constant exceeds the exact value by 0.6 to 9 parts in 10^4: far more than
    float32 rounding (6e-8), and all of one sign (see docs/weights.md). This pins the table."""
    assert set(normref.NFNETS_PUBLISHED_GAMMAS) <= set(NONLINEARITIES)
    for name, published in normref.NFNETS_PUBLISHED_GAMMAS.items():
        relative = published / normref.nonlinearity_gamma(name) - 1
        assert 5e-5 < relative < 1e-3, (name, relative)


@pytest.mark.parametrize(
    ("arg", "kwargs", "error", "match"),
    [
        ("swish2", {}, ValueError, r"fn_or_name must be one of \('identity', 'relu'"),
        (3.0, {}, TypeError, "fn_or_name must be a name or a callable, got float"),
        (lambda z: 2.0, {}, ValueError, "is not above its quadrature error"),
        (math.tanh, {"breakpoints": [math.inf]}, ValueError, "breakpoints must be finite numbers"),
    ],
)
def test_bad_input(arg, kwargs, error, match):
    with pytest.raises(error, match=match):
        normref.nonlinearity_gamma(arg, **kwargs)
