"""Batch norm across replicas: a per-shard call run on ``n`` JAX devices with ``shard_map``.

The case's input is split into ``n`` equal shards along its first axis (other than the
channels) whose size ``n`` divides, each shard on one device; the framework's layer merges
the statistics over the collective axis :data:`AXIS` (flax's ``axis_name``, haiku's
``cross_replica_axis``, equinox's ``axis_name``), and the outputs are gathered back. The
parameters and running statistics are replicated; the gradients are taken of the whole by
``jax.vjp``, through the collectives. The devices are the host's: XLA makes ``n`` of them
only when told before JAX starts (``--xla_force_host_platform_device_count``), which the
suite does in a process of its own (:mod:`conformance.replicas`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from conformance.adapters.arrays import Native
from conformance.adapters.base import FrameworkLacksError
from conformance.checked.cases import Prepared
from conformance.checked.ops import get_op

AXIS = "replicas"
"""The name of the collective axis."""

ShardCall = Callable[[dict[str, Native], Prepared, str], tuple[Native, dict[str, Native]]]
"""``call(arrays, prepared, axis_name)``: the layer on one shard, merging over ``axis_name``."""


def label(name: str, replicas: int) -> str:
    """An implementation's name with its number of replicas."""
    return f"{name} ({replicas} replicas)"


def sharded(
    call: ShardCall, replicas: int, *, check_vma: bool = True
) -> Callable[[dict[str, Native], Prepared], tuple[Native, dict[str, Native]]]:
    """``call`` on ``replicas`` devices, the input sharded along one axis (module docstring).

    ``check_vma=False`` turns off jax's tracking of which values vary across the devices, for
    a layer whose collective also spans an axis of ``vmap`` (equinox's).
    """

    def run(arrays: dict[str, Native], prepared: Prepared) -> tuple[Native, dict[str, Native]]:
        import jax
        from jax.sharding import Mesh, PartitionSpec

        devices = jax.devices()
        if len(devices) < replicas:
            msg = (
                f"{replicas} replicas need {replicas} devices and jax has {len(devices)} "
                "(the suite's --replicas sets XLA's host device count)"
            )
            raise FrameworkLacksError(msg)
        x = arrays["x"]
        channel = get_op(prepared.case.op).param_axes(prepared.sample)[0] % x.ndim
        axis = next((a for a in range(x.ndim) if a != channel and x.shape[a] % replicas == 0), None)
        if axis is None:
            msg = f"no axis of x {tuple(x.shape)} but its channels splits into {replicas} shards"
            raise FrameworkLacksError(msg)
        mesh = Mesh(np.array(devices[:replicas]), (AXIS,))
        names = sorted(arrays)
        split = PartitionSpec(*([None] * axis), AXIS)
        specs = tuple(split if n == "x" else PartitionSpec() for n in names)

        def body(*values: Any) -> tuple[Native, dict[str, Native]]:
            return call(dict(zip(names, values, strict=True)), prepared, AXIS)

        across = jax.shard_map(
            body,
            mesh=mesh,
            in_specs=specs,
            out_specs=(split, PartitionSpec()),
            check_vma=check_vma,
        )
        return across(*(arrays[n] for n in names))

    return run
