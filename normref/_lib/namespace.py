"""Namespaces, dtypes and precision: the one place where normref's policy lives.

Every public function of normref goes through :func:`namespace_of` and
:func:`compute_dtype`, so the rules below hold everywhere.

Namespace
    The array library is found from the arguments with
    ``array_api_compat.array_namespace``; op code then uses only the Array API
    standard through that namespace. Arrays of two different libraries in one
    call raise :class:`TypeError` naming the arguments and their libraries.

Dtypes
    Every array argument must have a real floating dtype (float16, bfloat16,
    float32 or float64, as the library has them); an integer or complex array
    raises :class:`TypeError` naming the argument.

Output dtype
    The output of an operation has the dtype that the Array API type promotion
    rules give for its array arguments (``result_type`` of ``x`` and the affine
    parameters), so a float16 ``x`` with float16 ``gamma`` gives float16 and a
    float16 ``x`` with float32 ``gamma`` gives float32. A gradient has the dtype
    of the argument it is the gradient of.

Precision
    ``precision="highest"`` (the default) computes in float64 and rounds once,
    at the end, to the output dtype. ``precision="native"`` computes in the
    input's dtype (faster; it shows what a naive implementation in that dtype
    gets). A :class:`~normref.conventions.Convention` (or a preset's name, such
    as ``"flax"``) *models* that framework's arithmetic: its compute dtype for
    float16/bfloat16 input, its variance algorithm and its output dtype rule.
    JAX arrays can hold float64 only with ``jax_enable_x64``; without it,
    ``precision="highest"`` raises :class:`Float64UnavailableError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from typing import Any, TypeVar

import array_api_compat

from normref.conventions import Convention, get_convention
from normref.types import Array, Namespace, Precision

PRECISIONS = ("highest", "native")


class Float64UnavailableError(RuntimeError):
    """The arrays' library cannot compute in float64 as ``precision="highest"`` asks."""


_KINDS: dict[tuple[type, Any], tuple[Namespace, bool]] = {}
"""The namespace of the arrays of each type and dtype seen, and whether that dtype is real
floating: both depend on nothing else, and finding them costs microseconds a call."""


def _kind(value: Array) -> tuple[Namespace, bool]:
    """``value``'s namespace and whether its dtype is real floating (a :class:`TypeError` for
    a value that is not an array)."""
    key = (type(value), getattr(value, "dtype", None))
    try:
        return _KINDS[key]
    except (KeyError, TypeError):  # not seen, or a dtype that cannot be a key
        pass
    xp = array_api_compat.array_namespace(value)
    kind = (xp, bool(xp.isdtype(value.dtype, "real floating")))
    with contextlib.suppress(TypeError):
        _KINDS[key] = kind
    return kind


def namespace_of(*, optional: Collection[str] = (), **arrays: Array | None) -> Namespace:
    """Return the Array API namespace shared by the named arrays.

    ``None`` is skipped for the names in ``optional`` (an absent optional argument).
    Raises :class:`TypeError` naming the argument when a value is not an array (``None``
    for a required one), when two arguments come from different libraries, or when an
    array's dtype is not real floating.
    """
    found: dict[str, tuple[Array, Namespace, bool]] = {}
    for name, value in arrays.items():
        if value is None and name in optional:
            continue
        if value is None:
            msg = f"{name} must be an array, got None: it is required"
            raise TypeError(msg)
        try:
            found[name] = (value, *_kind(value))
        except TypeError:
            msg = f"{name} must be an array, got {type(value).__name__}"
            raise TypeError(msg) from None
    if not found:
        msg = "no array argument was given"
        raise TypeError(msg)
    libraries = {name: xp.__name__ for name, (_, xp, _) in found.items()}
    if len(set(libraries.values())) > 1:
        listed = ", ".join(f"{name} is {lib}" for name, lib in libraries.items())
        msg = (
            f"arguments come from different array libraries ({listed}); pass arrays of one library"
        )
        raise TypeError(msg)
    for name, (value, _, real_floating) in found.items():
        if not real_floating:
            msg = f"{name} must have a real floating dtype, got {value.dtype}"
            raise TypeError(msg)
    return next(iter(found.values()))[1]


def result_dtype(xp: Namespace, *arrays: Array | None) -> Any:
    """Array API promotion of the dtypes of the non-``None`` arrays."""
    return xp.result_type(*(a.dtype for a in arrays if a is not None))


def _is_low_precision(xp: Namespace, dtype: Any) -> bool:
    return xp.finfo(dtype).bits < 32


def compute_dtype(xp: Namespace, dtype: Any, precision: Precision) -> Any:
    """The dtype in which an operation on ``dtype`` input computes under ``precision``."""
    if isinstance(precision, str) and precision in PRECISIONS:
        if precision == "native":
            return dtype
        if array_api_compat.is_jax_namespace(xp):
            import jax

            if not jax.config.read("jax_enable_x64"):
                msg = (
                    'precision="highest" computes in float64, which JAX arrays hold only with '
                    '64-bit mode: set jax.config.update("jax_enable_x64", True), or pass '
                    'precision="native"'
                )
                raise Float64UnavailableError(msg)
        return xp.float64
    if isinstance(precision, (str, Convention)):
        try:
            convention = get_convention(precision)
        except ValueError:
            msg = (
                f"precision must be 'highest', 'native', a Convention or a preset name, "
                f"got {precision!r}"
            )
            raise ValueError(msg) from None
        if _is_low_precision(xp, dtype) and convention.low_precision_compute == "float32":
            return xp.float32
        return dtype
    msg = f"precision must be 'highest', 'native', a Convention or a preset name, got {precision!r}"
    raise TypeError(msg)


def output_dtype(xp: Namespace, precision: Precision, x: Array, *params: Array | None) -> Any:
    """The dtype of an operation's output for input ``x`` and affine ``params``.

    The Array API promotion of all of them, unless ``precision`` models a
    convention whose rule is to return the input's dtype.
    """
    modelling = not (isinstance(precision, str) and precision in PRECISIONS)
    if modelling and get_convention(precision).output_dtype == "input":
        return x.dtype
    return result_dtype(xp, x, *params)


def variance_algorithm(precision: Precision) -> str:
    """The variance algorithm that ``precision`` asks for (two-pass unless modelling)."""
    if isinstance(precision, str) and precision in PRECISIONS:
        return "two_pass"
    return get_convention(precision).variance_algorithm


_ArrayOrNone = TypeVar("_ArrayOrNone")
"""An array or ``None``: :func:`to_dtype` gives ``None`` for ``None`` and an array for an array."""


def to_dtype(xp: Namespace, a: _ArrayOrNone, dtype: Any) -> _ArrayOrNone:
    """``a`` in ``dtype``, without a copy when it already has it; ``None`` stays ``None``."""
    if a is None:
        return a
    array: Array = a
    if array.dtype == dtype:
        return a
    return xp.astype(array, dtype)
