"""Cases: the inputs every implementation is checked on, each with a stable id and seed.

For every op the suite draws

* **edge cases**, deterministic: a typical input, the layer's default ``eps``
  (the implementation is called without ``eps``), an ``eps`` of 0.1 that is
  no framework's default (it must be the one used), constant groups, one
  outlier of 1e4, a mean of 1e4 (``|mean|/std = 1e4``), tiny (1e-4) and huge
  (1e4) scales, values near float16's largest (6e4) and smallest normal
  (6.1e-5) magnitudes, a NaN, shapes with a size-1 axis, groups of one and
  of two samples, odd values of integer arguments (``num_groups=3``), and the
  special inputs the registry lists for the op
  (:attr:`normref.registry.OpSpec.special_inputs`: zero units and weights, the
  AGC clip boundary, repeated and nearly repeated eigenvalues, ...);
* **drawn cases**: a magnitude, a shift in units of it and a distribution
  drawn from the suite's seed, shape and arguments from the registry's
  sampler. They are drawn with NumPy's generator, a pure function of the op
  and the seed: hypothesis' draws also depend on the constants of the source
  files the process has loaded (so a case would change with the modules a run
  imports), and it writes a cache into the working directory.

A case on which normref itself raises (a group of one sample; repeated
eigenvalues, where the gradient of PCA whitening does not exist) is an
*error-path* case: the implementation under test is expected to refuse it
too, and the report says which value it returns if it does not.

Every case is identified by ``"<op>/<name>"`` and re-run alone with
``--case <id>``; its ``seed`` fixes its random data and cotangent.
"""

from __future__ import annotations

import functools
import itertools
import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import array_api_compat.numpy as xp_numpy
import numpy as np

from conformance.checked.formats import round_to
from conformance.checked.models import NORMREF
from conformance.checked.ops import CHECKED_OPS, CheckedOp, get_op
from normref.registry import Sample

ODD_SHAPE = (6, 15, 4)
"""A shape whose axes have odd divisors, for odd values of integer arguments."""

DRAWN_PER_OP = 6
"""Drawn cases per op."""


@dataclass(frozen=True)
class Case:
    """One input of one op.

    Attributes
    ----------
    id
        ``"<op>/<name>"``, stable across runs.
    op
        The op's name.
    kind
        ``"edge"``, ``"drawn"`` or ``"error"`` (normref refuses the input).
    description
        What the case exercises.
    seed
        The seed of its random data and of its cotangent.
    sample
        The float64 inputs, before rounding to the dtype under test.
    default_eps
        The implementation is called without ``eps``; the reference uses the
        model's default for the layer.
    parameters
        How a drawn case was drawn (scale, shift, distribution, seed).
    error
        For error-path cases, normref's message.
    error_in
        Where normref raises on an error-path case: ``"forward"``, or
        ``"backward"`` (its gradient does not exist there).
    dtypes
        The dtypes the case is checked at; ``None``: every dtype a run asks for
        (the large cases of a default run are float32 only).
    """

    id: str
    op: str
    kind: str
    description: str
    seed: int
    sample: Sample
    default_eps: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    error_in: str | None = None
    dtypes: tuple[str, ...] | None = None

    def runs_at(self, dtype: str) -> bool:
        """Whether the case is checked at ``dtype``."""
        return self.dtypes is None or dtype in self.dtypes

    @property
    def name(self) -> str:
        """The case's name within its op."""
        return self.id.split("/", 1)[1]

    def cotangent(self) -> np.ndarray:
        """The output's cotangent: standard normal, of the primary input's shape."""
        return _cotangent(self.seed, self.sample.args[get_op(self.op).spec.primary])


def _cotangent(seed: int, primary: np.ndarray) -> np.ndarray:
    return np.random.default_rng([seed, 1]).standard_normal(np.shape(primary))


def case_seed(op: str, name: str, suite_seed: int) -> int:
    """A stable seed for case ``name`` of ``op`` (CRC-32 of the id, mixed with the suite's)."""
    return zlib.crc32(f"{op}/{name}".encode()) ^ (suite_seed * 0x9E3779B1 % 2**32)


# --------------------------------------------------------------------------- edge cases

XTransform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _scaled(factor: float) -> XTransform:
    return lambda x, _rng: x * factor


def _outlier(x: np.ndarray, _rng: np.random.Generator) -> np.ndarray:
    x = x.copy()
    x.flat[x.size // 2] = 1e4
    return x


def _nan(x: np.ndarray, _rng: np.random.Generator) -> np.ndarray:
    x = x.copy()
    x.flat[0] = np.nan
    return x


def _uniform(bound: float) -> XTransform:
    return lambda x, rng: rng.uniform(-bound, bound, size=x.shape)


GIVEN_EPS = 0.1
"""The ``eps`` of the ``given-eps`` case: every other case passes the samplers' 1e-5, which is
also the default of most layers, so an implementation that ignored the ``eps`` it is given
would pass them; against unit-variance data 0.1 changes the output by about 5%."""

VALUE_CASES: dict[str, tuple[str, XTransform]] = {
    "outlier-1e4": ("one value of 1e4 among standard normal values", _outlier),
    "mean-1e4": ("mean 1e4, std 1: |mean|/std = 1e4", lambda x, _rng: x + 1e4),
    "scale-1e-4": ("standard normal times 1e-4: the variance is far below eps", _scaled(1e-4)),
    "scale-1e4": ("standard normal times 1e4: squares beyond float16's range", _scaled(1e4)),
    "float16-max": ("uniform in [-6e4, 6e4], near float16's largest value", _uniform(6e4)),
    "float16-tiny": (
        "standard normal times 6.1e-5, float16's smallest normal magnitude",
        _scaled(6.1e-5),
    ),
    "nan": ("one NaN: it propagates to its group", _nan),
}
"""Edge cases that transform the primary input of a typical sample: (description, transform)."""


def _int_args(sample: Sample) -> list[str]:
    return [k for k, v in sample.args.items() if isinstance(v, int) and not isinstance(v, bool)]


def _try_sample(
    op: CheckedOp, rng: np.random.Generator, shape: tuple[int, ...] | None
) -> Sample | None:
    try:
        return op.sample(rng, shape)
    except ValueError:
        # the registry's sampler has no valid arguments for this shape (e.g. no divisor)
        return None


def _reference_error(op: CheckedOp, sample: Sample, seed: int) -> tuple[str, str] | None:
    """Where and why normref refuses ``sample`` (its forward, or its gradient), or ``None``."""
    try:
        op.reference(sample, NORMREF)
    except ValueError as error:
        return "forward", str(error)
    if not op.differentiable:
        return None
    try:
        op.evaluate(sample, _cotangent(seed, sample.args[op.spec.primary]), NORMREF)
    except ValueError as error:
        return "backward", str(error)
    return None


class _Builder:
    """Collects the cases of one op, classifying each as a value or an error-path case."""

    def __init__(self, op: CheckedOp, suite_seed: int) -> None:
        self.op = op
        self.suite_seed = suite_seed
        self.cases: list[Case] = []

    def rng(self, name: str) -> tuple[int, np.random.Generator]:
        seed = case_seed(self.op.name, name, self.suite_seed)
        return seed, np.random.default_rng(seed)

    def add(self, name: str, description: str, seed: int, sample: Sample, **extra: Any) -> None:
        refused = _reference_error(self.op, sample, seed)
        kind = extra.pop("kind", "edge")
        if refused is not None:
            where, error = refused
            extra.update(error=error, error_in=where)
            kind = "error"
        self.cases.append(
            Case(f"{self.op.name}/{name}", self.op.name, kind, description, seed, sample, **extra)
        )

    def base(self, name: str) -> tuple[int, Sample, np.random.Generator]:
        seed, rng = self.rng(name)
        sample = _try_sample(self.op, rng, self.op.edge_shape) or self.op.sample(rng)
        return seed, sample, rng


def edge_cases(op: CheckedOp, suite_seed: int = 0) -> list[Case]:
    """The deterministic edge cases of ``op`` (see the module docstring)."""
    build = _Builder(op, suite_seed)
    primary = op.spec.primary
    seed, sample, _ = build.base("typical")
    build.add("typical", "standard normal input of a typical shape", seed, sample)
    if op.eps_field is not None and op.takes_eps:
        seed, sample, _ = build.base("default-eps")
        build.add(
            "default-eps",
            "called without eps: the layer's default applies",
            seed,
            sample,
            default_eps=True,
        )
    if op.takes_eps:
        seed, sample, _ = build.base("given-eps")
        build.add(
            "given-eps",
            f"eps={GIVEN_EPS}, no framework's default: the eps passed must be the one used",
            seed,
            sample.replace(eps=GIVEN_EPS),
        )
    if op.partition(sample) is not None:
        seed, sample, _ = build.base("constant-groups")
        build.add(
            "constant-groups",
            "every group constant: the output is 0 by cancellation",
            seed,
            sample.replace(**{primary: _constant_groups(op, sample, np.random.default_rng(seed))}),
        )
    for name, (description, transform) in VALUE_CASES.items():
        seed, sample, _ = build.base(name)
        x = transform(sample.args[primary], np.random.default_rng(seed))
        build.add(name, description, seed, sample.replace(**{primary: x}))
    _size_one_axes(build)
    _group_sizes(build)
    _odd_arguments(build)
    for special in op.spec.special_inputs:
        seed, sample, rng = build.base(special.name)
        build.add(special.name, special.description, seed, special.make(op.spec, sample, rng))
    return build.cases


def _constant_groups(op: CheckedOp, sample: Sample, rng: np.random.Generator) -> np.ndarray:
    partition = op.partition(sample)
    if partition is None:
        msg = f"{op.name} does not group its input: it has no constant-groups case"
        raise TypeError(msg)
    values = rng.standard_normal((partition.G, 1, partition.D))
    spread = np.broadcast_to(values, (partition.G, partition.M, partition.D))
    return np.asarray(partition.from_canonical(xp_numpy, np.ascontiguousarray(spread)))


def _size_one_axes(build: _Builder) -> None:
    edge_shape = build.op.edge_shape
    for axis in range(len(edge_shape)):
        shape = tuple(1 if i == axis else s for i, s in enumerate(edge_shape))
        name = f"size-1-axis-{axis}"
        seed, rng = build.rng(name)
        sample = _try_sample(build.op, rng, shape)
        if sample is not None:
            build.add(name, f"x of shape {shape}: axis {axis} has size 1", seed, sample)


def _group_sizes(build: _Builder) -> None:
    """Groups of exactly one and of two samples (the largest input that has them)."""
    op = build.op
    if op.spec.partition is None:
        return
    for size, name, what in (
        (1, "one-sample-groups", "groups of one sample: no variance exists"),
        (2, "two-sample-groups", "groups of two samples: each output is ±1, its gradient ~0"),
    ):
        seed = case_seed(op.name, name, build.suite_seed)
        found = _largest_with_group_size(op, size, seed)
        if found is not None:
            build.add(name, f"{what}; x of shape {found.args[op.spec.primary].shape}", seed, found)


def _largest_with_group_size(op: CheckedOp, size: int, seed: int) -> Sample | None:
    best: Sample | None = None
    for shape in itertools.product(*((1, 2, s) for s in op.edge_shape)):
        sample = _try_sample(op, np.random.default_rng(seed), shape)
        if sample is None:
            continue
        for variant in _int_variants(sample, range(1, max(shape) + 1)):
            if _group_size(op, variant) == size and (
                best is None or math.prod(shape) > best.args[op.spec.primary].size
            ):
                best = variant
    return best


def _group_size(op: CheckedOp, sample: Sample) -> int | None:
    try:
        partition = op.partition(sample)
    except ValueError:
        # integer arguments that do not fit the shape (num_groups not dividing C)
        return None
    if partition is None:
        msg = f"{op.name} does not group its input: it has no group size"
        raise TypeError(msg)
    return partition.M


def _int_variants(sample: Sample, values: range | tuple[int, ...]) -> Iterator[Sample]:
    names = _int_args(sample)
    if not names:
        yield sample
        return
    for combination in itertools.product(values, repeat=len(names)):
        variant = sample.replace(**dict(zip(names, combination, strict=True)))
        yield variant


def _odd_arguments(build: _Builder) -> None:
    op = build.op
    seed, rng = build.rng("odd")
    sample = _try_sample(op, rng, ODD_SHAPE)
    if sample is None or not _int_args(sample):
        return
    for value in (3, 5):
        variant = sample.replace(**dict.fromkeys(_int_args(sample), value))
        if _reference_error(op, variant, seed) is None:
            described = ", ".join(f"{k}={value}" for k in _int_args(sample))
            build.add(f"odd-{value}", f"x of shape {ODD_SHAPE} with {described}", seed, variant)


# --------------------------------------------------------------------------- drawn cases


DISTRIBUTIONS: dict[str, Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]] = {
    "normal": lambda rng, shape: rng.standard_normal(shape),
    "uniform": lambda rng, shape: rng.uniform(-math.sqrt(3), math.sqrt(3), size=shape),
    "laplace": lambda rng, shape: rng.laplace(0.0, 1 / math.sqrt(2), size=shape),
    "two-point": lambda rng, shape: rng.choice([-1.0, 1.0], size=shape),
}
"""Distributions of zero mean and unit variance that drawn inputs are made of."""


MAGNITUDES = (1e-3, 1e-1, 1.0, 1e1, 1e3)
"""The magnitudes (standard deviations) a drawn input is scaled to."""
SHIFTS = (0.0, 1.0, 10.0, 100.0)
"""The shifts of a drawn input's mean, in units of its magnitude."""
BATCH_WEIGHTS = (0.01, 0.1, 0.5, 0.9)
"""The weights of the batch in the running statistics of a drawn case."""


def _draws(op: CheckedOp, count: int, suite_seed: int) -> list[dict[str, Any]]:
    """``count`` draws of a case's parameters: a pure function of the op's name and the suite's
    seed (NumPy's generator on :func:`case_seed`), whatever else the process has loaded."""
    rng = np.random.default_rng(case_seed(op.name, "drawn", suite_seed))
    found = []
    for _ in range(count):
        parameters: dict[str, Any] = {
            "seed": int(rng.integers(0, 2**32)),
            "magnitude": MAGNITUDES[rng.integers(len(MAGNITUDES))],
            "shift": SHIFTS[rng.integers(len(SHIFTS))],
            "distribution": sorted(DISTRIBUTIONS)[rng.integers(len(DISTRIBUTIONS))],
        }
        if op.running_stats:
            parameters["batch_weight"] = BATCH_WEIGHTS[rng.integers(len(BATCH_WEIGHTS))]
        found.append(parameters)
    return found


def drawn_cases(op: CheckedOp, count: int = DRAWN_PER_OP, suite_seed: int = 0) -> list[Case]:
    """``count`` drawn cases of ``op`` (see the module docstring)."""
    build = _Builder(op, suite_seed)
    for k, parameters in enumerate(_draws(op, count, suite_seed)):
        rng = np.random.default_rng(parameters["seed"])
        sample = op.sample(rng)
        x = sample.args[op.spec.primary]
        z = DISTRIBUTIONS[parameters["distribution"]](rng, x.shape)
        changes: dict[str, Any] = {
            op.spec.primary: parameters["magnitude"] * (parameters["shift"] + z)
        }
        if op.running_stats:
            changes["momentum"] = parameters["batch_weight"]
        described = ", ".join(
            f"{k}={parameters[k]}"
            for k in ("magnitude", "shift", "distribution", "batch_weight")
            if k in parameters
        )
        build.add(
            f"drawn-{k}",
            f"drawn: {described}; x of shape {x.shape}",
            parameters["seed"],
            sample.replace(**changes),
            kind="drawn",
            parameters=parameters,
        )
    return build.cases


# --------------------------------------------------------------------------- large cases

BOUNDARY_LENGTHS: tuple[int, ...] = tuple(
    n + d for n in (2, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192) for d in (-1, 0, 1)
)
"""Reduction lengths on both sides of the block sizes vectorized and tiled kernels use: 1-3,
7-9, 15-17, ..., 8191-8193 (``--thorough``)."""

DEFAULT_LENGTHS: tuple[int, ...] = (63, 64, 65, 1023, 1024, 1025, 4095, 4096, 4097)
"""The reduction lengths of a default run."""

LARGE_CASE_DTYPES: tuple[str, ...] = ("float32",)
"""The dtype of a default run's large cases (``--thorough``: every dtype)."""


def large_cases(
    op: CheckedOp, suite_seed: int = 0, *, thorough: bool = False, realistic: bool = True
) -> list[Case]:
    """Cases where kernel bugs live: reductions of the boundary lengths, and inputs of
    realistic size, from the registry's :attr:`~normref.registry.OpSpec.reduction_input` and
    :attr:`~normref.registry.OpSpec.large_inputs` (a default run: :data:`DEFAULT_LENGTHS` and
    the first realistic input, float32 only; ``thorough``: every length and input, every
    dtype; without ``realistic``, the lengths only). A length no valid input of the op has (a
    fan-in of 1) is left out."""
    spec, build = op.spec, _Builder(op, suite_seed)
    dtypes = None if thorough else LARGE_CASE_DTYPES
    wanted = []
    if spec.reduction_input is not None:
        lengths = BOUNDARY_LENGTHS if thorough else DEFAULT_LENGTHS
        wanted += [(f"length-{n}", spec.reduction_input(n)) for n in lengths]
    sizes = spec.large_inputs if thorough else spec.large_inputs[:1]
    wanted += [("large-" + "x".join(map(str, w.shape)), w) for w in sizes if realistic]
    for name, sized in wanted:
        seed, rng = build.rng(name)
        try:
            sample = spec.draw(sized, rng)
        except ValueError:
            continue  # no valid input of this op has reductions of this length
        build.add(name, sized.description, seed, sample, dtypes=dtypes)
    return build.cases


# --------------------------------------------------------------------------- selection


def cases_for(
    op: str,
    *,
    suite_seed: int = 0,
    drawn: int = DRAWN_PER_OP,
    thorough: bool = False,
    realistic: bool = True,
) -> list[Case]:
    """Every case of ``op``: edge cases, drawn ones, then the large ones (the same objects on
    every call; :func:`large_cases` says what ``thorough`` and ``realistic`` choose).

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> import conformance
    >>> cases = conformance.cases_for('layer_norm')
    >>> print(cases[0].id, len(cases) > 10)
    layer_norm/typical True
    """
    return list(_cases(op, suite_seed, drawn, thorough, realistic))


@functools.cache
def _cases(
    op: str, suite_seed: int, drawn: int, thorough: bool, realistic: bool
) -> tuple[Case, ...]:
    checked = get_op(op)
    return tuple(
        edge_cases(checked, suite_seed)
        + drawn_cases(checked, drawn, suite_seed)
        + large_cases(checked, suite_seed, thorough=thorough, realistic=realistic)
    )


def find_case(case_id: str, *, suite_seed: int = 0) -> Case:
    """The case with id ``case_id`` (``"<op>/<name>"``, among every case of ``--thorough``);
    :class:`ValueError` if there is none.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> import conformance
    >>> case = conformance.find_case('layer_norm/typical')
    >>> print(case.id, case.op)
    layer_norm/typical layer_norm
    """
    op, _, _ = case_id.partition("/")
    if op not in CHECKED_OPS:
        msg = f"case id must start with an op name ({sorted(CHECKED_OPS)}), got {case_id!r}"
        raise ValueError(msg)
    every = cases_for(op, suite_seed=suite_seed, thorough=True)
    for case in every:
        if case.id == case_id:
            return case
    known = ", ".join(c.id for c in every)
    msg = f"no case {case_id!r}; the cases of {op} are: {known}"
    raise ValueError(msg)


# --------------------------------------------------------------------------- a case at one dtype


@dataclass(frozen=True)
class Prepared:
    """A case at one dtype: its arrays rounded to ``dtype`` (as float64) and its cotangent."""

    case: Case
    dtype: str
    sample: Sample
    dy: np.ndarray

    @property
    def op(self) -> CheckedOp:
        """The case's op."""
        return get_op(self.case.op)


def prepare(case: Case, dtype: str) -> Prepared:
    """``case`` with every array rounded to ``dtype``."""

    def rounded(value: Any) -> Any:
        return round_to(value, dtype) if isinstance(value, np.ndarray) else value

    sample = Sample(
        {k: rounded(v) for k, v in case.sample.args.items()},
        {k: rounded(v) for k, v in case.sample.kwargs.items()},
    )
    return Prepared(case, dtype, sample, round_to(case.cotangent(), dtype))
