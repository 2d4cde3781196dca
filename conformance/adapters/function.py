"""A user's own function with normref's signature for an op, as a binding.

The function receives arrays of one kind (NumPy, torch or JAX) in the order
and with the keywords of normref's function for the op (for
``batch_norm_train``: ``(x, running_mean, running_var, gamma, beta, *,
momentum, eps, axis)`` returning ``(y, (new_mean, new_var))``, ``momentum`` in
the meaning of the convention it is checked under, which it is also given as
``convention=`` where its signature takes that keyword, as normref's own
``batch_norm_train`` does; for an op with several
outputs, such as ``spectral_norm_train``, a tuple of them in the order of
:attr:`~conformance.checked.ops.CheckedOp.outputs`). :func:`suite_call` says
what the suite passes for each op. Its backward is that framework's autograd,
or a hand-written VJP with normref's VJP signature (``vjp(dy, *args,
**kwargs)`` returning one gradient per differentiable argument: a tuple in
normref's order, ``None`` for an argument not given, or an object with
normref's field names, such as normref's own NamedTuple; a bare array where
there is one differentiable argument); a NumPy function without one is checked
forward only. A signature that cannot take the suite's arguments is refused
(``TypeError``) before any row runs; a result of another form fails its row
with what was expected (:class:`ReturnFormatError`).
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

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
        "set",
        {
            "action": "append",
            "default": [],
            "metavar": "FIELD=VALUE",
            "help": "change one field of the convention (repeatable), e.g. rms_norm_eps=1e-5",
        },
    ),
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
    except SyntaxError as error:
        msg = (
            f"cannot import {module_name!r} (from {spec!r}): syntax error in {error.filename}, "
            f"line {error.lineno}: {error.msg}"
        )
        raise ValueError(msg) from None
    except BaseException as error:  # noqa: BLE001 - the module's own code failed on import
        msg = f"cannot import {module_name!r} (from {spec!r}): importing it raised " + _raised_at(
            error
        )
        raise ValueError(msg) from None
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


def _raised_at(error: BaseException) -> str:
    """``"NameError: ... (file, line n)"``: an exception and the last line of code it passed."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{where}"


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


class ReturnFormatError(TypeError):
    """A function under test returned something of another form than normref's function for the
    op (its row fails with this message)."""


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (tuple, list))


def _form(value: Any) -> str:
    """What a returned value is, in words."""
    if _is_sequence(value):
        return f"a {type(value).__name__} of {len(value)}"
    shape = getattr(value, "shape", None)
    return f"an array of shape {tuple(shape)}" if shape is not None else type(value).__name__


def _outputs(op: CheckedOp, result: Any) -> tuple[Native, dict[str, Native]]:
    """The function's outputs by name; :class:`ReturnFormatError` saying what was expected for
    a result of another form (``(y, mean, var)`` from a layer that returns ``y``)."""
    if op.running_stats:
        if not (_is_sequence(result) and len(result) == 2 and _is_sequence(result[1])) or len(
            result[1]
        ) != len(op.state):
            msg = (
                f"a function for {op.name} must return (y, (running_mean, running_var)), as "
                f"normref's does; it returned {_form(result)}"
            )
            raise ReturnFormatError(msg)
        y, (mean, var) = result
        return y, {"running_mean": mean, "running_var": var}
    if len(op.outputs) == 1:
        if _is_sequence(result):
            msg = (
                f"a function for {op.name} must return one array, y, as normref's does; it "
                f"returned {_form(result)} (statistics or other values are not outputs of "
                f"{op.name})"
            )
            raise ReturnFormatError(msg)
        return result, {}
    if not _is_sequence(result) or len(result) != len(op.outputs):
        msg = (
            f"a function for {op.name} must return ({', '.join(op.outputs)}), as normref's "
            f"does; it returned {_form(result)}"
        )
        raise ReturnFormatError(msg)
    y, *more = result
    return y, dict(zip(op.outputs[1:], more, strict=True))


def _gradients(op: CheckedOp, grads: Any, given: tuple[str, ...]) -> dict[str, Native]:
    """A VJP's gradients by argument name, from a tuple in normref's order (every differentiable
    argument, or those ``given``), an object with normref's field names, or, for an op with one
    differentiable argument, a bare array; :class:`ReturnFormatError` for another form."""
    names = op.differentiable
    fields = getattr(grads, "_fields", None)
    if fields is not None and set(names) <= set(fields):
        return {name: getattr(grads, name) for name in names}
    if not _is_sequence(grads) and all(hasattr(grads, n) for n in names):
        return {name: getattr(grads, name) for name in names}
    if len(names) == 1 and not _is_sequence(grads) and hasattr(grads, "shape"):
        return {names[0]: grads}
    if _is_sequence(grads) and len(grads) in (len(names), len(given)):
        order = names if len(grads) == len(names) else given
        return dict(zip(order, grads, strict=True))
    gradient_names = ", ".join(f"d{n}" for n in names)
    msg = (
        f"a VJP for {op.name} must return ({gradient_names}), one gradient per differentiable "
        f"argument in normref's order (None for one not given), or an object with fields "
        f"{', '.join(names)}; it returned {_form(grads)}"
    )
    raise ReturnFormatError(msg)


def _argument_names(op: CheckedOp) -> tuple[list[str], list[str], bool]:
    """The names of the arguments the suite passes for ``op``: positional, then keywords, and
    whether it also passes its convention (to a function that takes ``convention=``)."""
    sample = op.sample(np.random.default_rng(0))
    keywords = [k for k in sample.kwargs if k != "convention"]
    return list(sample.args), keywords, "convention" in sample.kwargs


def suite_call(op: CheckedOp, *, vjp: bool = False) -> str:
    """How the suite calls a function for ``op``: its positional arrays and arguments in order,
    then its keywords (``vjp``: the VJP's call, with the cotangent first, and what it returns)."""
    positional, keywords, convention = _argument_names(op)
    call = ", ".join(["dy", *positional] if vjp else positional)
    if keywords:
        call += ", *, " + ", ".join(keywords)
    if convention:
        call += " [, convention]"
    if vjp:
        returns = ", ".join(f"d{n}" for n in op.differentiable)
        return f"vjp({call}) -> ({returns})"
    returns = "y" if len(op.outputs) == 1 else ", ".join(op.outputs)
    if op.running_stats:
        returns = "y, (running_mean, running_var)"
    return f"{op.name}({call}) -> {returns}"


def check_signature(fn: Callable[..., Any], op: CheckedOp, *, vjp: bool = False) -> None:
    """:class:`TypeError` naming the mismatch and the call expected when ``fn`` cannot take the
    arguments the suite passes for ``op`` (every keyword; ``eps`` left out where a case calls
    with the default). A function without a signature (a builtin) is not checked."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    names, keyword_names, _ = _argument_names(op)
    positional = [None] * (len(names) + (1 if vjp else 0))
    keywords = dict.fromkeys(keyword_names)
    calls = [keywords]
    if op.takes_eps and op.eps_field is not None and "eps" in keywords:
        calls.append({k: v for k, v in keywords.items() if k != "eps"})
    for call in calls:
        try:
            signature.bind(*positional, **call)
        except TypeError as error:
            name = getattr(fn, "__qualname__", repr(fn))
            what = "VJP" if vjp else "function"
            leaving = (
                "" if call is keywords else " (called without eps, as the default-eps case is)"
            )
            msg = (
                f"the {what} {name}{signature} cannot take the arguments the suite passes for "
                f"{op.name}{leaving}: {error}; the suite calls {suite_call(op, vjp=vjp)}"
            )
            raise TypeError(msg) from None


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
    check_signature(fn, checked)
    if vjp is not None:
        check_signature(vjp, checked, vjp=True)

    def run(prepared: Prepared, model: Model, backward: bool) -> Evaluation:
        def call(arrays: dict[str, Native]) -> tuple[Native, dict[str, Native]]:
            args, kwargs = _call_arguments(fn, checked, prepared, model, arrays)
            return _outputs(checked, fn(*args, **kwargs))

        if vjp is None or not backward:
            return evaluate_on(kind, prepared, call, backward=backward)
        forward = evaluate_on(kind, prepared, call, backward=False)
        given = {
            name: value
            for name, value in prepared.sample.args.items()
            if name in checked.arrays and value is not None
        }
        arrays = {name: kind.asarray(value, prepared.dtype) for name, value in given.items()}
        dy = kind.asarray(prepared.dy, prepared.dtype)
        args, kwargs = _call_arguments(vjp, checked, prepared, model, arrays)
        present = tuple(n for n in checked.differentiable if n in arrays)
        grads = _gradients(checked, vjp(dy, *args, **kwargs), present)
        values, dtypes = dict(forward.values), dict(forward.dtypes)
        for name in present:
            grad = grads.get(name)
            if grad is None:
                msg = f"the VJP for {op} returned None for d{name}, where {name} was given"
                raise ReturnFormatError(msg)
            values[f"d{name}"] = kind.to_numpy(grad)
            dtypes[f"d{name}"] = kind.dtype_name(grad)
        written = kind.modified({**arrays, "dy": dy}, {**given, "dy": prepared.dy})
        modified = tuple(dict.fromkeys(forward.modified + written))
        return Evaluation(values, dtypes, modified)

    name = label or _function_label(fn, vjp)
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


def _name(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', fn)}"


def _function_label(fn: Callable[..., Any], vjp: Callable[..., Any] | None) -> str:
    """The function's name, and its VJP's where one is given (the report names both: a failing
    gradient comes from the VJP)."""
    return _name(fn) if vjp is None else f"{_name(fn)} with VJP {_name(vjp)}"


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
