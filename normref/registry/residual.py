"""Registry entries of the residual family (see :mod:`normref.registry`): SkipInit and the
gamma-scaled nonlinearities of normalizer-free networks."""

from __future__ import annotations

from normref import nonlinearities, residual
from normref.registry.sampling import replace_arg, zeros
from normref.registry.spec import (
    Capabilities,
    ErrorCase,
    Kind,
    OpSpec,
    Rng,
    Sample,
    ScalingLaw,
    SpecialInput,
)


def _sample_skip_init_residual(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    if shape is None:
        spatial = tuple(int(s) for s in rng.integers(1, 4, size=int(rng.integers(0, 3))))
        shape = (int(rng.integers(1, 4)), int(rng.integers(1, 5)), *spatial)
    per_channel = (shape[1], *(1,) * (len(shape) - 2))
    alpha_shape = () if rng.random() < 0.5 else per_channel
    args = {
        "x": rng.standard_normal(shape),
        "branch_out": rng.standard_normal(shape),
        "alpha": rng.normal(0.0, 0.3, size=alpha_shape),  # an ndarray even for shape ()
    }
    return Sample(args, {})


def _sample_gamma_scaled_nonlinearity(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    if shape is None:
        shape = tuple(int(s) for s in rng.integers(2, 6, size=int(rng.integers(1, 4))))
    return Sample({"x": rng.standard_normal(shape)}, {"nonlinearity": "relu"})


def _nonlinearity(name: str) -> SpecialInput:
    return SpecialInput(
        name,
        f"{name} times its gain",
        lambda _spec, sample, _rng: sample.replace(nonlinearity=name),
    )


REGISTRY_ENTRIES: tuple[OpSpec, ...] = (
    OpSpec(
        "skip_init_residual",
        "residual",
        "SkipInit's residual x + alpha f(x), alpha initialized to 0 (De & Smith, 2020)",
        Kind.RESIDUAL,
        residual.skip_init_residual,
        residual.skip_init_residual_vjp,
        ("x", "branch_out", "alpha"),
        ("x", "branch_out", "alpha"),
        _sample_skip_init_residual,
        errors=(
            ErrorCase(
                "branch_out of another shape",
                replace_arg("branch_out", lambda b: b.reshape(-1)),
                ValueError,
                r"branch_out must have shape",
            ),
            ErrorCase(
                "alpha that broadcasts x to a larger shape",
                lambda s: s.replace(alpha=s.args["x"][None]),
                ValueError,
                "alpha must be a scalar",
            ),
        ),
        special_inputs=(zeros("alpha-zero", "alpha = 0: SkipInit at initialization", "alpha"),),
        scaling=ScalingLaw(
            inputs={"x": 1, "branch_out": 1},
            outputs={"y": 1},
            gradients={"x": 0, "branch_out": 0, "alpha": 1},
        ),
    ),
    OpSpec(
        "gamma_scaled_nonlinearity",
        "residual",
        "a nonlinearity times its gain 1/std(g(z)), z ~ N(0, 1) (Brock et al., 2021)",
        Kind.NONLINEARITY,
        nonlinearities.gamma_scaled_nonlinearity,
        None,
        ("x",),
        (),
        _sample_gamma_scaled_nonlinearity,
        errors=(
            ErrorCase(
                "an unknown nonlinearity",
                lambda s: s.replace(nonlinearity="swishy"),
                ValueError,
                "nonlinearity must be one of",
            ),
            ErrorCase(
                "an unknown table of gains",
                lambda s: s.replace(gammas="sampled"),
                ValueError,
                "gammas must be one of",
            ),
        ),
        convention_keywords=(("gammas", "nonlinearity_gammas"),),
        special_inputs=tuple(_nonlinearity(name) for name in nonlinearities.NONLINEARITIES),
        capabilities=Capabilities(traceable_forward=False, native_precision=False),
        scaling=ScalingLaw(
            reason="a nonlinearity has no degree in general: relu is positively homogeneous "
            "(of degree 1), gelu, tanh or sigmoid are not"
        ),
    ),
)
"""The operations of this module's family, in the order they are listed."""
