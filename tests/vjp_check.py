"""A VJP checked against finite differences of its forward, for tests outside the registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tests.support import assert_within, fd_vjp


def assert_vjp_matches_finite_differences(
    forward: Callable[..., Any],
    grads: Any,
    args: dict[str, np.ndarray],
    dy: np.ndarray,
    *,
    what: str,
) -> None:
    """Each field of ``grads`` named in ``args`` equals ``J^T dy`` from float64 finite differences.

    ``forward(**args)`` is the float64 forward; the bound is ``fd_vjp``'s
    (:data:`tests.support.FD_RTOL` of the scale of the summed terms plus the
    finite differences' own error estimate).
    """
    for name in args:
        actual = getattr(grads, name)
        expected, bound = fd_vjp(forward, args, dy, name)
        assert_within(np.asarray(actual), expected, bound, what=f"d{name} of {what}")
