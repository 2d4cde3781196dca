"""The NFNets reference code's variance-preserving nonlinearities: ``jax.nn`` functions times
the published gains.

The NFNets code (deepmind-research, ``nfnets/base.py``) is not a package; its
``nonlinearities`` table is one line per entry, ``lambda x: jax.nn.relu(x) *
1.7139588594436646``, and its constants are kept, as published, in
:data:`normref.NFNETS_PUBLISHED_GAMMAS`. This adapter evaluates those lines:
the ``jax.nn`` function of each entry (its ``gelu`` is ``jax.nn.gelu``, the tanh
approximation, normref's ``gelu_tanh``) times its published gain. Declared
convention: ``FRAMEWORK_MODELS["nfnets"]`` (``nonlinearity_gammas="nfnets_published"``):
a row within budget of that model but not of the exact gains differs by
convention, with the relative difference of the gain as evidence. The
nonlinearities have no VJP in normref: forward only.
"""

from __future__ import annotations

from typing import Any

from conformance.adapters.arrays import Evaluation, JaxKind, Native
from conformance.adapters.base import Adapter, Binding, FrameworkLacksError, evaluate_on
from conformance.checked.cases import Prepared
from conformance.checked.models import FRAMEWORK_MODELS, Model
from normref.nonlinearities import NFNETS_PUBLISHED_GAMMAS

FRAMEWORK = "nfnets"
MODEL = FRAMEWORK_MODELS["nfnets"]

JAX_FUNCTIONS: dict[str, str] = {
    "celu": "celu",
    "elu": "elu",
    "gelu_tanh": "gelu",
    "leaky_relu": "leaky_relu",
    "log_sigmoid": "log_sigmoid",
    "relu": "relu",
    "relu6": "relu6",
    "selu": "selu",
    "sigmoid": "sigmoid",
    "silu": "silu",
    "soft_sign": "soft_sign",
    "softplus": "softplus",
    "tanh": "tanh",
}
"""The ``jax.nn`` function of each published entry (normref's name first)."""


def _scaled(arrays: dict[str, Native], prepared: Prepared) -> tuple[Native, dict]:
    import jax

    name = prepared.sample.kwargs["nonlinearity"]
    if name not in JAX_FUNCTIONS:
        msg = f"the NFNets code has no gain for {name!r}"
        raise FrameworkLacksError(msg)
    return getattr(jax.nn, JAX_FUNCTIONS[name])(arrays["x"]) * NFNETS_PUBLISHED_GAMMAS[name], {}


def _run(prepared: Prepared, _model: Model, _backward: bool) -> Evaluation:
    return evaluate_on(
        JaxKind(), prepared, lambda arrays: _scaled(arrays, prepared), backward=False
    )


def _versions() -> dict[str, Any]:
    import jax

    return {"jax": jax.__version__}


ADAPTER = Adapter(
    name=FRAMEWORK,
    description="NFNets reference code (nfnets/base.py): jax.nn nonlinearities times the "
    "published gains (forward only)",
    model=MODEL,
    requires=("jax",),
    bindings=(
        Binding(
            "gamma_scaled_nonlinearity",
            "nfnets nonlinearities (jax.nn times the published gain)",
            FRAMEWORK,
            _run,
            MODEL,
            backward=False,
            notes="forward only: normref has no VJP of the nonlinearities",
        ),
    ),
    versions=_versions,
    install_hint="pip install -e '.[jax]'",
    compiler="jax.jit",
)
