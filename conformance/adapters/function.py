"""A user's own function with normref's signature for an op, as a binding.

The function receives arrays of one kind (NumPy, torch or JAX) in the order
and with the keywords of normref's function for the op (for
``batch_norm_train``: ``(x, running_mean, running_var, gamma, beta, *,
momentum, eps, axis)`` returning ``(y, (new_mean, new_var))``, ``momentum`` in
the meaning of the convention it is checked under, which it is also given as
``convention=`` where its signature takes that keyword, as normref's own
``batch_norm_train`` does; for an op with several
outputs, such as ``spectral_norm_train``, a tuple of them in the order of
:attr:`~conformance.checked.ops.CheckedOp.outputs`). Its backward is that
framework's autograd, or a hand-written VJP with normref's VJP signature
(``vjp(dy, *args, **kwargs)`` returning one gradient per differentiable
argument, in normref's order); a NumPy function without one is checked
forward only.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from conformance.adapters.arrays import ArrayKind, Evaluation, Native, array_kind
from conformance.adapters.base import Binding, evaluate_on
from conformance.checked.cases import Prepared
from conformance.checked.formats import DTYPES
from conformance.checked.models import Model, model_of
from conformance.checked.ops import CheckedOp, get_op, implementation_keywords

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


def takes_keyword(fn: Callable[..., Any], keyword: str) -> bool:
    """Whether ``fn``'s signature names ``keyword`` (or takes any keyword)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    return any(p.name == keyword or p.kind is p.VAR_KEYWORD for p in parameters)


def _call_arguments(
    fn: Callable[..., Any],
    op: CheckedOp,
    prepared: Prepared,
    model: Model,
    arrays: dict[str, Native],
) -> tuple[list[Any], dict[str, Any]]:
    args = [arrays.get(k, v) if k in op.arrays else v for k, v in prepared.sample.args.items()]
    kwargs = implementation_keywords(prepared.sample.kwargs, model)
    if prepared.case.default_eps:
        kwargs.pop("eps", None)
    if "convention" in prepared.sample.kwargs and takes_keyword(fn, "convention"):
        kwargs["convention"] = model.convention
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
            args, kwargs = _call_arguments(fn, checked, prepared, model, arrays)
            return _outputs(checked, fn(*args, **kwargs))

        if vjp is None or not backward:
            return evaluate_on(kind, prepared, call, backward=backward)
        forward = evaluate_on(kind, prepared, call, backward=False)
        arrays = {
            name: kind.asarray(value, prepared.dtype)
            for name, value in prepared.sample.args.items()
            if name in checked.arrays and value is not None
        }
        args, kwargs = _call_arguments(vjp, checked, prepared, model, arrays)
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


def check_names(values: Iterable[str], known: Iterable[str], what: str) -> list[str]:
    """``values`` as a list; :class:`ValueError` naming the unknown ones and the known."""
    values, known = list(values), list(known)
    unknown = [v for v in values if v not in known]
    if unknown:
        msg = f"unknown {what} {unknown}; known: {known}"
        raise ValueError(msg)
    return values


def function_under_test(
    fn: Callable[..., Any],
    op: str,
    convention: Any,
    array_type: str,
    vjp: Callable[..., Any] | None,
    dtypes: Sequence[str] | None,
) -> tuple[Binding, list[str]]:
    """The binding of a user's function and the dtypes to check it at (default: all its array
    type has)."""
    get_op(op)
    binding = function_binding(fn, op, array_type=array_type, vjp=vjp, convention=convention)
    chosen = list(dtypes) if dtypes is not None else list(binding.dtypes)
    return binding, check_names(chosen, DTYPES, "dtypes")
