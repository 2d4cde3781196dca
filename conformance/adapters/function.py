"""A user's own function with normref's signature for an op, as a binding.

The function receives arrays of one kind (NumPy, torch or JAX) in the order
and with the keywords of normref's function for the op (for
``batch_norm_train``: ``(x, running_mean, running_var, gamma, beta, *,
momentum, eps, axis)`` returning ``(y, (new_mean, new_var))``, ``momentum`` in
the meaning of the convention it is checked under; for an op with several
outputs, such as ``spectral_norm_train``, a tuple of them in the order of
:attr:`~conformance.ops.CheckedOp.outputs`). Its backward is that
framework's autograd, or a hand-written VJP with normref's VJP signature
(``vjp(dy, *args, **kwargs)`` returning one gradient per differentiable
argument, in normref's order); a NumPy function without one is checked
forward only.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from conformance.adapters.base import Binding, evaluate_on
from conformance.arrays import ArrayKind, Evaluation, Native, array_kind
from conformance.models import Model, model_of
from conformance.ops import CheckedOp, batch_weight_as, get_op
from conformance.reference import Prepared

FUNCTION_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("impl", {"help": "module:function with normref's signature for the op"}),
    ("impl-vjp", {"help": "module:function, its VJP with normref's VJP signature"}),
    ("op", {"help": "the op the function implements"}),
    ("convention", {"help": "the convention the function follows (default normref)"}),
    (
        "array-type",
        {
            "default": "numpy",
            "choices": ("numpy", "torch", "jax"),
            "help": "the arrays the function receives (default numpy)",
        },
    ),
)
"""Options that name a user's function, shared by the command line and the pytest plugin."""


def load_function(spec: str) -> Callable[..., Any]:
    """The function named by ``"module:function"`` (``ValueError`` if it cannot be found).

    The module is found as ``python -m`` finds it: on the import path, or in the
    current directory (searched after the installed packages, so it shadows none).
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        msg = f"expected 'module:function', got {spec!r}"
        raise ValueError(msg)
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.append(here)
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        msg = f"cannot import {module_name!r} (from {spec!r}): {error}"
        raise ValueError(msg) from error
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            msg = f"{module_name!r} has no attribute {attribute!r} (from {spec!r})"
            raise ValueError(msg) from None
    if not callable(target):
        msg = f"{spec!r} is not callable"
        raise TypeError(msg)
    return target


def importable_name(fn: Callable[..., Any]) -> str | None:
    """``"module:qualname"`` when it names ``fn`` in a new process too (not a lambda, a local
    function or one of ``__main__``), else ``None``."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        return None
    name = f"{module}:{qualname}"
    try:
        return name if load_function(name) is fn else None
    except (ValueError, TypeError):
        return None


def _call_arguments(
    op: CheckedOp, prepared: Prepared, model: Model, arrays: dict[str, Native]
) -> tuple[list[Any], dict[str, Any]]:
    args = [arrays.get(k, v) if k in op.arrays else v for k, v in prepared.sample.args.items()]
    kwargs = dict(prepared.sample.kwargs)
    if prepared.case.default_eps:
        kwargs.pop("eps", None)
    if "momentum" in kwargs:
        kwargs["momentum"] = batch_weight_as(model, kwargs["momentum"])
    return args, kwargs


def _outputs(op: CheckedOp, result: Any) -> tuple[Native, dict[str, Native]]:
    if op.running_stats:
        y, (mean, var) = result
        return y, {"running_mean": mean, "running_var": var}
    if len(op.outputs) == 1:
        return result, {}
    y, *more = result
    return y, dict(zip(op.outputs[1:], more, strict=True))


def function_binding(
    fn: Callable[..., Any],
    op: str,
    *,
    array_type: str = "numpy",
    vjp: Callable[..., Any] | None = None,
    convention: Any = None,
    label: str | None = None,
) -> Binding:
    """A binding that calls ``fn`` (and ``vjp``) with normref's signature for ``op``."""
    checked = get_op(op)
    kind: ArrayKind = array_kind(array_type)

    def run(prepared: Prepared, model: Model, backward: bool) -> Evaluation:
        def call(arrays: dict[str, Native]) -> tuple[Native, dict[str, Native]]:
            args, kwargs = _call_arguments(checked, prepared, model, arrays)
            return _outputs(checked, fn(*args, **kwargs))

        if vjp is None or not backward:
            return evaluate_on(kind, prepared, call, backward=backward)
        forward = evaluate_on(kind, prepared, call, backward=False)
        arrays = {
            name: kind.asarray(value, prepared.dtype)
            for name, value in prepared.sample.args.items()
            if name in checked.arrays and value is not None
        }
        args, kwargs = _call_arguments(checked, prepared, model, arrays)
        grads = vjp(kind.asarray(prepared.dy, prepared.dtype), *args, **kwargs)
        values, dtypes = dict(forward.values), dict(forward.dtypes)
        for name, grad in zip(checked.differentiable, grads, strict=False):
            if name in arrays:
                values[f"d{name}"] = kind.to_numpy(grad)
                dtypes[f"d{name}"] = kind.dtype_name(grad)
        return Evaluation(values, dtypes)

    name = label or f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', fn)}"
    has_backward = vjp is not None or kind.has_autograd
    return Binding(
        op=op,
        label=name,
        framework=f"function ({array_type})",
        run=run,
        model=model_of(convention),
        backward=has_backward,
        dtypes=kind.dtypes,
        model_dependent=True,
        notes="" if has_backward else "forward only: NumPy has no autograd and no VJP was given",
    )
