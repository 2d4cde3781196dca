"""optax: ``adaptive_grad_clip``, ``transforms.unitwise_norm``, ``centralize`` and
``clip_by_global_norm``; backward by ``jax.vjp``.

Declared convention: ``FRAMEWORK_MODELS["optax"]``: jax layouts, with the units of
``unitwise_norm`` inferred from the rank (``unit_axes="by_rank"``: rank 2 and 3
reduce axis 0, rank 4 axes 0-2, rank 5 axes 0-3, a squeezed vector is one unit)
global-norm clipping without an ``eps``, and ``centralize``'s units along the leading axis
(``centralize_axes="leading"``: a flax ``HWIO`` kernel is centred per kernel row, an
``(in, out)`` kernel per input unit, not per output unit). Sources are cited in
``docs/conventions.md``.

Layouts: optax takes the unit axis last (``(in, out)``, ``HWIO``), so a case
whose unit axis is first is moved there and back (exact). A second binding of
``adaptive_grad_clip`` passes ``axis`` (the fan-in axes, in the case's layout),
which optax supports for shapes its rule does not cover: it follows normref's
units (``unit_axes="out_axis"``). ``centralize`` is called on the case's gradient as it is
(its layout is the finding). Clipping and the unit-wise norm have no VJP in normref, so
``unitwise_norm`` and ``clip_by_global_norm`` are checked forward only;
``adaptive_grad_clip`` and ``centralize`` forward and backward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conformance.adapters.arrays import Evaluation, JaxKind, Native
from conformance.adapters.base import Adapter, Binding, evaluate_on, unit_axis
from conformance.checked.cases import Prepared
from conformance.checked.models import FRAMEWORK_MODELS, Model

FRAMEWORK = "optax"
MODEL = FRAMEWORK_MODELS["optax"]
EXPLICIT_AXES = MODEL.replace(unit_axes="out_axis")
"""``adaptive_grad_clip(..., axis=...)``: the units are the ones given, normref's."""
CENTRALIZE = MODEL
"""``centralize``: its ``_subtract_mean`` averages axes ``1..ndim-1``, so the units are along
the leading axis whatever the layout (``centralize_axes="leading"``, the preset's)."""

Call = Callable[[dict[str, Native], Prepared], tuple[Native, dict[str, Native]]]


def _optax() -> Any:
    import optax

    return optax


def _last(call: Callable[..., Native], *names: str) -> Call:
    """``call`` on the arrays ``names`` with their unit axis moved last, its result moved back."""

    def moved(arrays: dict[str, Native], prepared: Prepared) -> tuple[Native, dict]:
        import jax.numpy as jnp

        axis = unit_axis(prepared, names[0])
        result = call(*(jnp.moveaxis(arrays[n], axis, -1) for n in names), prepared=prepared)
        return jnp.moveaxis(result, -1, axis), {}

    return moved


def _agc(grad: Native, param: Native, *, prepared: Prepared, axis: Any = None) -> Native:
    kwargs = prepared.sample.kwargs
    transform = _optax().adaptive_grad_clip(kwargs["clipping"], kwargs["eps"], axis=axis)
    updates, _ = transform.update(grad, transform.init(param), param)
    return updates


def _agc_given_axes(arrays: dict[str, Native], prepared: Prepared) -> tuple[Native, dict]:
    axis = unit_axis(prepared, "grad")
    fan_in = tuple(a for a in range(arrays["grad"].ndim) if a != axis)
    return _agc(arrays["grad"], arrays["param"], prepared=prepared, axis=fan_in), {}


def _unitwise_norm(x: Native, *, prepared: Prepared) -> Native:  # noqa: ARG001 - as _agc
    return _optax().transforms.unitwise_norm(x)


def _centralize(arrays: dict[str, Native], prepared: Prepared) -> tuple[Native, dict]:  # noqa: ARG001
    transform = _optax().centralize()
    updates, _ = transform.update(arrays["grad"], transform.init(arrays["grad"]))
    return updates, {}


def _clip_by_global_norm(arrays: dict[str, Native], prepared: Prepared) -> tuple[Native, dict]:
    transform = _optax().clip_by_global_norm(prepared.sample.kwargs["max_norm"])
    grads = (arrays["grad"], arrays["bias_grad"])
    (grad, bias_grad), _ = transform.update(grads, transform.init(grads))
    return grad, {"clipped_bias_grad": bias_grad}


def _run(call: Call) -> Callable[[Prepared, Model, bool], Evaluation]:
    def run(prepared: Prepared, _model: Model, backward: bool) -> Evaluation:
        return evaluate_on(
            JaxKind(), prepared, lambda arrays: call(arrays, prepared), backward=backward
        )

    return run


BINDINGS = (
    Binding(
        "adaptive_grad_clip",
        "optax.adaptive_grad_clip",
        FRAMEWORK,
        _run(_last(_agc, "grad", "param")),
        MODEL,
    ),
    Binding(
        "adaptive_grad_clip",
        "optax.adaptive_grad_clip (axis: the fan-in)",
        FRAMEWORK,
        _run(_agc_given_axes),
        EXPLICIT_AXES,
    ),
    Binding(
        "unitwise_norm",
        "optax.transforms.unitwise_norm",
        FRAMEWORK,
        _run(_last(_unitwise_norm, "x")),
        MODEL,
    ),
    Binding(
        "gradient_centralize",
        "optax.centralize",
        FRAMEWORK,
        _run(_centralize),
        CENTRALIZE,
    ),
    Binding(
        "clip_by_global_norm",
        "optax.clip_by_global_norm",
        FRAMEWORK,
        _run(_clip_by_global_norm),
        MODEL,
    ),
)


def _versions() -> dict[str, str]:
    import jax

    return {"optax": _optax().__version__, "jax": jax.__version__}


ADAPTER = Adapter(
    name=FRAMEWORK,
    description="optax gradient transformations: clipping and unit-wise norms (jax.vjp backward)",
    model=MODEL,
    requires=("optax", "jax"),
    bindings=BINDINGS,
    versions=_versions,
    install_hint="pip install -e '.[jax]'",
    compiler="jax.jit",
)
