"""Normalization area partitioning (NAP): which elements share statistics.

A :class:`Partition` of an input shape says, for every element, which group it
belongs to, which sample of that group it is and which feature. It maps ``x``
to the canonical array of shape ``(G, M, D)`` (``G`` independent groups, ``M``
samples the statistics are taken over, ``D`` features normalized jointly) and
back, exactly.

Internally a partition is a *split* of ``x``: a reshape that never moves data
(some axes split into two, e.g. channels into ``(num_groups, C // num_groups)``)
whose axes are each labelled group, sample or feature. Statistics are
reductions over the sample axes of that split view; the canonical array is the
split view with its group, sample and feature axes gathered (a transpose).

====================  =================================  ===================  ======
layer                 G                                  M                    D
====================  =================================  ===================  ======
batch norm            C                                  N·prod(S)            1
layer norm (axes A)   prod(other axes)                   prod(A)              1
instance norm         N·C                                prod(S)              1
group norm (g)        N·g                                (C/g)·prod(S)        1
ghost batch norm (b)  (N/b)·C                            b·prod(S)            1
batch whitening (k)   C/k                                N·prod(S)            k
units of a weight     out (size of ``out_axis``)         fan-in N             1
====================  =================================  ===================  ======

(``x`` of shape ``(N, C, *S)`` with the channel axis at ``axis``; the batch axis
is axis 0.) A weight (or its gradient) has one axis of output units,
``out_axis``: 0 for torch and onnx layouts (``(out, in)`` matrices, ``OIHW``
kernels), -1 for jax/flax layouts (``(in, out)`` matrices, ``HWIO`` kernels);
every other axis is part of a unit's *fan-in*, of size ``N``, the product of
their sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from normref._lib.checks import check_positive_int, check_rank, normalize_axes, normalize_axis
from normref._lib.namespace import Array, Namespace
from normref._lib.units import axis_index

GROUP, SAMPLE, FEATURE = "group", "sample", "feature"


def split_origins(shape: tuple[int, ...], split_shape: tuple[int, ...]) -> list[int] | None:
    """For each axis of ``split_shape`` of size > 1, the axis of ``shape`` it was split from.

    ``None`` if ``split_shape`` is not ``shape`` with some axes split in place.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> print(normref.partition.split_origins((8, 4), (2, 4)))
    None
    """
    origins: list[int] = []
    pieces = iter(size for size in split_shape if size > 1)
    for axis, size in enumerate(shape):
        product = 1
        while product < size:
            piece = next(pieces, None)
            if piece is None:
                return None
            product *= piece
            origins.append(axis)
        if product != size:
            return None
    return origins if next(pieces, None) is None else None


def _axis_origins(shape: tuple[int, ...], split_shape: tuple[int, ...]) -> tuple[int, ...]:
    """For every axis of ``split_shape`` (sizes 0 and 1 included), the axis of ``shape`` it
    comes from: ``split_shape`` is ``shape`` itself, or ``shape`` with one axis split in two
    (every partition of this module), or ``shape`` with axes split in place
    (:func:`split_origins`, which needs no size 0)."""
    if len(split_shape) == len(shape):
        return tuple(range(len(shape)))
    if len(split_shape) == len(shape) + 1:
        for i in range(len(shape)):
            if (
                split_shape[:i] == shape[:i]
                and split_shape[i + 2 :] == shape[i + 1 :]
                and split_shape[i] * split_shape[i + 1] == shape[i]
            ):
                return (*range(i + 1), *range(i, len(shape)))
    origins = split_origins(shape, split_shape)
    if origins is None:
        msg = f"{split_shape} is not a split of the shape {shape}"
        raise ValueError(msg)
    kept = iter(origins)
    return tuple(next(kept) if size > 1 else -1 for size in split_shape)


@dataclass(frozen=True)
class Partition:
    """A split of ``shape`` into group, sample and feature axes.

    Its axes, sizes and layout facts are derived once, on first use (cached properties), so
    that code running per block of an input may read them freely.

    Attributes
    ----------
    shape
        Shape of the input the partition applies to.
    split_shape
        A reshape of ``shape`` (same elements in the same order).
    labels
        For each axis of ``split_shape``: ``"group"``, ``"sample"`` or ``"feature"``.
    """

    shape: tuple[int, ...]
    split_shape: tuple[int, ...]
    labels: tuple[str, ...]

    def _axes(self, label: str) -> tuple[int, ...]:
        return tuple(i for i, lab in enumerate(self.labels) if lab == label)

    @cached_property
    def group_axes(self) -> tuple[int, ...]:
        """Axes of the split view that index groups."""
        return self._axes(GROUP)

    @cached_property
    def sample_axes(self) -> tuple[int, ...]:
        """Axes of the split view that statistics are reduced over."""
        return self._axes(SAMPLE)

    @cached_property
    def feature_axes(self) -> tuple[int, ...]:
        """Axes of the split view that index jointly normalized features."""
        return self._axes(FEATURE)

    def _size(self, label: str) -> int:
        return math.prod(self.split_shape[i] for i in self._axes(label))

    @cached_property
    def G(self) -> int:
        """Number of independent groups."""
        return self._size(GROUP)

    @cached_property
    def M(self) -> int:
        """Number of samples in each group."""
        return self._size(SAMPLE)

    @cached_property
    def D(self) -> int:
        """Number of features normalized jointly (1 for per-feature standardization)."""
        return self._size(FEATURE)

    @property
    def reduced_axes(self) -> tuple[int, ...]:
        """Axes of the input (of :attr:`shape`) split into, or kept as, sample axes."""
        origins = _axis_origins(self.shape, self.split_shape)
        return tuple(sorted({origins[i] for i in self.sample_axes if origins[i] >= 0}))

    def check_samples(self, *, minimum: int, what: str, where: str, name: str = "x") -> None:
        """Each group must hold at least ``minimum`` samples (``what`` says why), and a group
        of none has no statistics at all: :class:`ValueError` naming the empty axis of the
        input ``name``."""
        if self.M == 0:
            empty = [a for a in self.reduced_axes if self.shape[a] == 0]
            msg = (
                f"{where}: {name} has size 0 along axis "
                f"{empty[0] if len(empty) == 1 else empty}, "
                "which the statistics are taken over: a group without samples has no statistics"
            )
            raise ValueError(msg)
        if minimum > self.M:
            msg = f"{where} gives groups of M={self.M} sample(s); {what}"
            raise ValueError(msg)

    def split(self, xp: Namespace, x: Array) -> Array:
        """``x`` reshaped to ``split_shape`` (no data moves)."""
        return xp.reshape(x, self.split_shape)

    def unsplit(self, xp: Namespace, v: Array) -> Array:
        """Inverse of :meth:`split`."""
        return xp.reshape(v, self.shape)

    @property
    def _order(self) -> tuple[int, ...]:
        return self.group_axes + self.sample_axes + self.feature_axes

    @property
    def _inverse_order(self) -> tuple[int, ...]:
        order = self._order
        return tuple(sorted(range(len(order)), key=order.__getitem__))

    def to_canonical(self, xp: Namespace, x: Array, *, copy: bool | None = None) -> Array:
        """``x`` as the canonical ``(G, M, D)`` array.

        A transpose, so in general a copy; ``copy=True`` makes it one always
        (an array of the caller's own), ``None`` only where needed.
        """
        gathered = xp.permute_dims(self.split(xp, x), self._order)
        return xp.reshape(gathered, (self.G, self.M, self.D), copy=copy)

    @cached_property
    def canonical_is_a_view(self) -> bool:
        """Whether the canonical array of a C-contiguous ``x`` is a view of it: the group, the
        sample and the feature axes (those of size above 1) each a run of consecutive axes of
        the split shape, in order. (Reshaping the split view with its axes in any order of
        the three kinds, each kind's axes merged, is then a view too.)"""
        spread = [i for i, size in enumerate(self.split_shape) if size > 1]
        place = {axis: k for k, axis in enumerate(spread)}
        for axes in (self.group_axes, self.sample_axes, self.feature_axes):
            places = [place[a] for a in axes if a in place]
            if places and places != list(range(places[0], places[0] + len(places))):
                return False
        return True

    @cached_property
    def features_outside_samples(self) -> bool:
        """Whether, in a C-contiguous ``x``, the features vary more slowly than the innermost
        samples: a feature axis of size above 1 comes before the last sample axis of size
        above 1 in the split shape (channels first, a weight's units first)."""
        features = [a for a in self.feature_axes if self.split_shape[a] > 1]
        samples = [a for a in self.sample_axes if self.split_shape[a] > 1]
        return bool(features and samples) and features[0] < samples[-1]

    def from_canonical(self, xp: Namespace, c: Array) -> Array:
        """Inverse of :meth:`to_canonical`: a ``(G, M, D)`` array back in ``shape``."""
        gathered = xp.reshape(c, tuple(self.split_shape[i] for i in self._order))
        return self.unsplit(xp, xp.permute_dims(gathered, self._inverse_order))

    def _param_split(self, param_axes: tuple[int, ...]) -> tuple[int, ...]:
        """``split_shape`` with 1 for every axis not split from one of ``param_axes``."""
        origins = iter(split_origins(self.shape, self.split_shape) or ())
        return tuple(
            size if size > 1 and next(origins) in param_axes else 1 for size in self.split_shape
        )

    def _canonical_param_shape(self, param_axes: tuple[int, ...]) -> tuple[int, ...]:
        split = self._param_split(param_axes)
        sizes = tuple(
            math.prod(split[i] for i in axes)
            for axes in (self.group_axes, self.sample_axes, self.feature_axes)
        )
        if any(
            size not in (1, full)
            for size, full in zip(sizes, (self.G, self.M, self.D), strict=True)
        ):
            msg = (
                f"parameters along axes {param_axes} of shape {self.shape} vary along only "
                f"part of the canonical axes {(self.G, self.M, self.D)}"
            )
            raise ValueError(msg)
        return sizes

    def canonical_param(self, xp: Namespace, param: Array, param_axes: tuple[int, ...]) -> Array:
        """A parameter along ``param_axes`` (sorted) of ``x``, laid out to broadcast against the
        canonical array: shape ``(G or 1, M or 1, D or 1)``.

        Raises :class:`ValueError` where the parameter varies along part of a
        canonical axis only (e.g. per channel under group norm, whose groups
        are (sample, channel group) pairs): it has no such layout.
        """
        sizes = self._canonical_param_shape(param_axes)
        spread = xp.reshape(param, self._param_split(param_axes))
        return xp.reshape(xp.permute_dims(spread, self._order), sizes)

    def param_from_canonical(self, xp: Namespace, c: Array, param_axes: tuple[int, ...]) -> Array:
        """Inverse of :meth:`canonical_param`: the parameter's shape, ``x``'s sizes along
        ``param_axes``."""
        self._canonical_param_shape(param_axes)
        split = self._param_split(param_axes)
        gathered = xp.reshape(c, tuple(split[i] for i in self._order))
        spread = xp.permute_dims(gathered, self._inverse_order)
        return xp.reshape(spread, tuple(self.shape[a] for a in param_axes))


def _channel_axis_not_batch(axis: object, ndim: int) -> int:
    channel = normalize_axis(axis, ndim)
    if channel == 0:
        msg = f"axis={axis} names the batch axis 0; the channel axis must be another axis"
        raise ValueError(msg)
    return channel


def batch_partition(shape: tuple[int, ...], axis: int = 1) -> Partition:
    """Batch norm: one group per channel (``axis``), samples over all other axes.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> p = normref.partition.batch_partition((8, 3, 5, 5))
    >>> print(p.split_shape, p.labels)
    (8, 3, 5, 5) ('sample', 'group', 'sample', 'sample')
    """
    check_rank(shape, minimum=1, layout="the channel axis and any others")
    channel = normalize_axis(axis, len(shape))
    labels = tuple(GROUP if i == channel else SAMPLE for i in range(len(shape)))
    return Partition(tuple(shape), tuple(shape), labels)


def layer_partition(shape: tuple[int, ...], axes: object = (-1,)) -> Partition:
    """Layer norm: statistics over ``axes``, one group per index of the other axes.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> p = normref.partition.layer_partition((8, 3, 5, 5), axes=(-2, -1))
    >>> print(p.split_shape, p.labels)
    (8, 3, 5, 5) ('group', 'group', 'sample', 'sample')
    """
    check_rank(shape, minimum=1, layout="at least the normalized axes")
    reduced = normalize_axes(axes, len(shape))
    labels = tuple(SAMPLE if i in reduced else GROUP for i in range(len(shape)))
    return Partition(tuple(shape), tuple(shape), labels)


def instance_partition(shape: tuple[int, ...], axis: int = 1) -> Partition:
    """Instance norm: one group per (sample, channel), statistics over the spatial axes.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> p = normref.partition.instance_partition((8, 3, 5, 5))
    >>> print(p.split_shape, p.labels)
    (8, 3, 5, 5) ('group', 'group', 'sample', 'sample')
    """
    check_rank(shape, minimum=3, layout="N, C and at least one spatial axis")
    channel = _channel_axis_not_batch(axis, len(shape))
    labels = tuple(GROUP if i in (0, channel) else SAMPLE for i in range(len(shape)))
    return Partition(tuple(shape), tuple(shape), labels)


def _split_channels(
    shape: tuple[int, ...],
    channel: int,
    *,
    sizes: tuple[int, int],
    labels: tuple[str, str],
    batch_label: str,
) -> Partition:
    """The channel axis split into ``sizes`` (their product C) with ``labels``; the other axes
    labelled ``batch_label`` (axis 0) or samples."""
    split_shape: list[int] = []
    split_labels: list[str] = []
    for i, size in enumerate(shape):
        if i == channel:
            split_shape += list(sizes)
            split_labels += list(labels)
        else:
            split_shape.append(size)
            split_labels.append(batch_label if i == 0 else SAMPLE)
    return Partition(tuple(shape), tuple(split_shape), tuple(split_labels))


def _check_divides(value: int, name: str, given: object, channels: int, channel: int) -> None:
    if channels % value:
        msg = f"{name}={given} must divide the number of channels x.shape[{channel}]={channels}"
        raise ValueError(msg)


def group_partition(shape: tuple[int, ...], num_groups: int, axis: int = 1) -> Partition:
    """Group norm: channels split into ``num_groups`` contiguous groups per sample.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> p = normref.partition.group_partition((8, 6, 5, 5), 3)
    >>> print(p.split_shape, p.labels)
    (8, 3, 2, 5, 5) ('group', 'group', 'sample', 'sample', 'sample')
    """
    check_rank(shape, minimum=2, layout="N, C and any spatial axes")
    channel = _channel_axis_not_batch(axis, len(shape))
    groups = check_positive_int(num_groups, name="num_groups")
    _check_divides(groups, "num_groups", num_groups, shape[channel], channel)
    return _split_channels(
        shape,
        channel,
        sizes=(groups, shape[channel] // groups),
        labels=(GROUP, SAMPLE),
        batch_label=GROUP,
    )


def ghost_batch_partition(
    shape: tuple[int, ...], virtual_batch_size: int, axis: int = 1
) -> Partition:
    """Ghost batch norm: the batch split into virtual batches, each batch-normalized alone.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> p = normref.partition.ghost_batch_partition((8, 3, 5, 5), 4)
    >>> print(p.split_shape, p.labels)
    (2, 4, 3, 5, 5) ('group', 'sample', 'group', 'sample', 'sample')
    """
    check_rank(shape, minimum=2, layout="N, C and any spatial axes")
    channel = _channel_axis_not_batch(axis, len(shape))
    size = check_positive_int(virtual_batch_size, name="virtual_batch_size")
    if shape[0] % size:
        msg = (
            f"virtual_batch_size={virtual_batch_size} must divide the batch size "
            f"x.shape[0]={shape[0]}"
        )
        raise ValueError(msg)
    split_shape = (shape[0] // size, size, *shape[1:])
    labels = (
        GROUP,
        SAMPLE,
        *tuple(GROUP if i == channel else SAMPLE for i in range(1, len(shape))),
    )
    return Partition(tuple(shape), split_shape, labels)


def whitening_partition(shape: tuple[int, ...], group_size: int, axis: int = 1) -> Partition:
    """Batch whitening (DBN): channels split into ``C / group_size`` groups of ``group_size``.

    The channel axis is split into ``(C // group_size, group_size)``: the first
    part indexes groups, the second the ``D = group_size`` features whitened
    jointly (channel ``c`` is feature ``c % group_size`` of group
    ``c // group_size``). Every other axis (the batch and spatial axes) indexes
    samples, so ``M = N·prod(S)``.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> p = normref.partition.whitening_partition((8, 6, 5, 5), 3)
    >>> print(p.split_shape, p.labels)
    (8, 2, 3, 5, 5) ('sample', 'group', 'feature', 'sample', 'sample')
    """
    check_rank(shape, minimum=2, layout="N, C and any spatial axes")
    channel = normalize_axis(axis, len(shape))
    size = check_positive_int(group_size, name="group_size")
    _check_divides(size, "group_size", group_size, shape[channel], channel)
    return _split_channels(
        shape,
        channel,
        sizes=(shape[channel] // size, size),
        labels=(GROUP, FEATURE),
        batch_label=SAMPLE,
    )


def unit_partition(shape: tuple[int, ...], out_axis: int = 0) -> Partition:
    """The output units of a weight: one group per index of ``out_axis``, its fan-in the samples.

    The partition of batch norm with the channel axis at ``out_axis``: weight
    standardization, Scaled WS and weight norm normalize each unit over its fan-in.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> p = normref.partition.unit_partition((16, 3, 3, 3))
    >>> print(p.split_shape, p.labels)
    (16, 3, 3, 3) ('group', 'sample', 'sample', 'sample')
    """
    check_rank(shape, minimum=1, layout="an axis of output units and any fan-in axes")
    return batch_partition(shape, axis_index(out_axis, len(shape), shape, "w"))


def fan_in_axes(ndim: int, axis: int) -> tuple[int, ...]:
    """The axes of a rank-``ndim`` array other than its (non-negative) unit axis ``axis``.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> print(normref.partition.fan_in_axes(4, 0), normref.partition.fan_in_axes(4, -1))
    (1, 2, 3) (0, 1, 2, 3)
    """
    return tuple(a for a in range(ndim) if a != axis)


def fan_in(shape: tuple[int, ...], axis: int) -> int:
    """The number of elements of one output unit: the product of the other axes' sizes.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> print(normref.partition.fan_in((16, 3, 3, 3), 0))
    27
    """
    return math.prod(shape[a] for a in fan_in_axes(len(shape), axis))


def unit_norm_axes(shape: tuple[int, ...], out_axis: object, *, name: str) -> tuple[int, ...]:
    """The axes a unit-wise norm reduces: the fan-in for rank >= 2, every axis below.

    A scalar or a vector (a bias, a gain) is one unit; ``out_axis`` must still
    be 0 or -1 there.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> print(normref.partition.unit_norm_axes((16, 3, 3, 3), 0, name='out_axis'))
    (1, 2, 3)
    """
    if len(shape) <= 1:
        axis_index(out_axis, 1, shape, name)
        return tuple(range(len(shape)))
    return fan_in_axes(len(shape), axis_index(out_axis, len(shape), shape, name))
