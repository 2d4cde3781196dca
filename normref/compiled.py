"""The compiled path: standardizing and RMS layers on NumPy arrays through numba kernels.

Where numba is installed, a batch, layer, instance, group, ghost batch or RMS
norm (and weight standardization, Scaled WS) on contiguous float32 or float64
NumPy arrays runs through fused compiled kernels instead of the generic Array
API code: the same quantities in the same dtype (float64 accumulation under
``precision="highest"``, rounded once), in fewer passes and with fewer
temporaries, large inputs shared out over threads. Every other call runs the
generic path. The results agree with the generic path's to the rounding of
sums taken in another order.

Environment variables, checked when normref is imported (a value other than
these raises :class:`ValueError` naming the variable):

``NORMREF_FUSED``
    ``0``, ``false``, ``no`` or ``off`` (any case) turns the compiled path off
    for the process; ``1``, ``true``, ``yes``, ``on`` or unset leaves it on.
``NORMREF_THREADS``
    The number of threads a large input runs on (an integer >= 1; default, or
    empty, the CPUs this process may run on). Read again whenever a large input
    runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from normref import _fused
from normref._fused.threads import thread_count as _thread_count

__all__ = ["available", "enabled", "thread_count"]


def available() -> bool:
    """Whether the compiled path can run here (numba is importable)."""
    return _fused.available()


@contextlib.contextmanager
def enabled(flag: bool) -> Iterator[None]:
    """Within the block, use the compiled path where it applies (``True``) or never (``False``).

    The setting belongs to the calling thread (and context): blocks in other
    threads neither see nor undo it.
    """
    with _fused.enabled(flag):
        yield


def thread_count() -> int:
    """The number of threads a large input runs on (``NORMREF_THREADS``, else the CPUs)."""
    return _thread_count()
