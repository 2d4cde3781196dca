"""The compiled path: standardizing and RMS layers on NumPy arrays through numba kernels.

Where numba is installed, a batch, layer, instance, group, ghost batch or RMS
norm (and weight standardization, Scaled WS, switchable norm) on contiguous
float32 or float64 NumPy arrays runs through fused compiled kernels instead of
the generic Array API code: the same quantities in the same dtype (float64 accumulation under
``precision="highest"``, rounded once), in fewer passes and with fewer
temporaries, large inputs shared out over threads. Adaptive gradient clipping
of contiguous float32 arrays under ``precision="highest"``, with the units'
fan-in on the trailing axes (``out_axis=0``), takes its per-unit sums and
writes its results there too, with no float64 copy. Every other call runs the
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
    """Whether the compiled path can run here (numba is importable).

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> print(type(normref.compiled.available()).__name__)
    bool
    """
    return _fused.available()


@contextlib.contextmanager
def enabled(flag: bool) -> Iterator[None]:
    """Within the block, use the compiled path where it applies (``True``) or never (``False``).

    The setting belongs to the calling thread (and context): blocks in other
    threads neither see nor undo it.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.arange(24.0).reshape(2, 3, 4)
    >>> with normref.compiled.enabled(False):
    ...     y = normref.batch_norm(x)  # the Array API path, never the numba kernels
    >>> print(np.round(y[0, 0], 4))
    [-1.2288 -1.065  -0.9012 -0.7373]
    """
    with _fused.enabled(flag):
        yield


def thread_count() -> int:
    """The number of threads a large input runs on (``NORMREF_THREADS``, else the CPUs).

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> print(normref.compiled.thread_count() >= 1)
    True
    """
    return _thread_count()
