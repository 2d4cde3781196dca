"""Interleaved timing: the only fair way to compare contenders on a noisy machine.

Single timings on a shared machine swing by 3x from run to run. Every
benchmark here therefore runs its contenders in rounds, one call of each per
round in turn, so that a slow period hits all of them alike, and reports the
minimum over rounds (the run least disturbed by anything else). The rounds'
orders are the rows of a Williams design (:func:`balanced_orders`): over a
full cycle of rounds every contender directly follows every other equally
often, so a contender that leaves work behind (a thread pool still spinning,
caches full of its own data) slows each of the others alike instead of
always the same one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def interleaved_minimum(
    contenders: dict[str, Callable[[], Any]], *, repeats: int = 7, warmup: int = 1
) -> dict[str, float]:
    """Minimum wall time (seconds) of each contender over ``repeats`` interleaved rounds.

    Each contender is first called ``warmup`` times (compilation, caches,
    allocator), untimed. Results must be computed by the call itself: a
    contender that returns a lazy value must force it (e.g. ``block_until_ready``).
    """
    for call in contenders.values():
        for _ in range(warmup):
            call()
    names = list(contenders)
    orders = balanced_orders(len(names))
    best = dict.fromkeys(names, float("inf"))
    for round_ in range(repeats):
        for index in orders[round_ % len(orders)]:
            name = names[index]
            start = time.perf_counter()
            contenders[name]()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def balanced_orders(n: int) -> list[list[int]]:
    """Orders of ``n`` contenders in which each directly follows each other equally often.

    A Williams design: the first order is 0, 1, n-1, 2, n-2, ...; order r adds r
    to each entry (mod n). For even ``n`` its ``n`` orders hold every ordered pair
    of neighbours once; for odd ``n`` they are followed by their reverses, and
    the ``2n`` orders hold every pair twice.
    """
    first = [0]
    low, high = 1, n - 1
    while len(first) < n:
        first.append(low)
        low += 1
        if len(first) < n:
            first.append(high)
            high -= 1
    orders = [[(i + r) % n for i in first] for r in range(n)]
    if n % 2:
        orders += [order[::-1] for order in orders]
    return orders


def ratios(times: dict[str, float], baseline: str) -> dict[str, float]:
    """Each time divided by ``times[baseline]`` (> 1: slower than the baseline)."""
    return {name: t / times[baseline] for name, t in times.items()}
