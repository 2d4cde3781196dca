"""Peak memory of one call: what it allocates above what existed before it.

The figure of a call is the highest amount of memory it holds at once beyond
its arguments, its own output included: a forward needs room for ``y`` and its
temporaries, a backward for the gradients and its temporaries. Each library is
measured by the only means it offers:

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
    Not measured but planned: XLA's buffer assignment of the compiled program
    (``memory_analysis()``: temporaries plus outputs), which is what the
    program allocates when it runs.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any


def traced_peak(call: Callable[[], Any]) -> int:
    """Bytes of NumPy (and Python) memory ``call`` holds at its peak beyond what existed before."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        gc.collect()
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        result = call()
        peak = tracemalloc.get_traced_memory()[1] - before
        del result
    finally:
        if started:
            tracemalloc.stop()
    return peak


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


def xla_planned(compiled: Any) -> int | None:
    """Bytes XLA plans for a compiled program's temporaries and outputs (``None`` if unknown)."""
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    return int(analysis.temp_size_in_bytes + analysis.output_size_in_bytes)
