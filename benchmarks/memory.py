"""Memory of one call: what it allocates above what existed before it, beyond its outputs.

The peak of a call is the highest amount of memory it holds at once beyond
its arguments, its own output included: a forward needs room for ``y`` and its
temporaries, a backward for the gradients and its temporaries. Its
*temporaries* are that peak minus the size of its outputs: what a call holds
that the caller does not get back, the figure the targets are set on. Each
library is measured by the only means it offers:

NumPy (normref)
    :mod:`tracemalloc`, which sees every NumPy data buffer (NumPy reports its
    allocations to it). A compiled kernel's own allocations would be invisible
    to it, so normref's fused kernels allocate nothing: their outputs and
    scratch arrays are NumPy arrays allocated before the call.
torch
    The profiler's memory events (``profile_memory=True``): every allocation
    and release of torch's CPU allocator in order; the figure is the peak of
    their running sum. Autograd's saved tensors count toward the forward.
jax
    XLA's buffer assignment of the compiled program (``memory_analysis()``):
    what the program allocates when it runs, its temporaries apart from its
    outputs.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any


def output_bytes(result: Any) -> int:
    """Bytes of the arrays a call returned: an array, or any (named) tuple or list of them
    (``None`` entries count 0)."""
    if result is None:
        return 0
    if isinstance(result, (tuple, list)):
        return sum(output_bytes(item) for item in result)
    nbytes = getattr(result, "nbytes", None)
    if nbytes is None:
        msg = f"cannot size an output of type {type(result).__name__}"
        raise TypeError(msg)
    return int(nbytes)


def traced_peak(call: Callable[[], Any]) -> int:
    """Bytes of NumPy (and Python) memory ``call`` holds at its peak beyond what existed before."""
    return traced(call)[0]


def traced_temporaries(call: Callable[[], Any]) -> int:
    """Bytes ``call`` holds at its peak beyond what existed before and beyond its outputs."""
    peak, outputs = traced(call)
    return peak - outputs


def traced(call: Callable[[], Any]) -> tuple[int, int]:
    """The peak of ``call`` (as :func:`traced_peak`) and the bytes of its outputs."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        gc.collect()
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        result = call()
        peak = tracemalloc.get_traced_memory()[1] - before
        outputs = output_bytes(result)
        del result
    finally:
        if started:
            tracemalloc.stop()
    return peak, outputs


def torch_peak(call: Callable[[], Any]) -> tuple[int | None, Any]:
    """Peak bytes torch's CPU allocator holds during ``call`` above its level before, and the result.

    ``None`` where the profiler does not report allocations (its memory events
    are read from ``kineto_results``, which torch does not document as stable).
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = call()
    try:
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    except AttributeError:
        return None, result
    held = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        held += event.nbytes()
        peak = max(peak, held)
    return peak, result


def xla_temporaries(compiled: Any) -> int | None:
    """Bytes XLA plans for a compiled program's temporaries, its outputs apart (``None`` if
    unknown)."""
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    return int(analysis.temp_size_in_bytes)
