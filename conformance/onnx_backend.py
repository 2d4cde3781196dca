"""ONNX backend-test directories: the suite's cases that one ONNX operator computes.

:func:`export_onnx_backend` writes, for every case of an op that an ONNX
operator expresses in its own layout (channels at axis 1, normalized axes
trailing), a directory in the layout of ONNX's backend tests
(``onnx/backend/test/data/node``), which ``onnx.backend.test.loader.load_model_tests``
reads and any ONNX runtime's backend-test runner runs::

    <out>/normref/test_<op>_<case>_<dtype>_<operator>/
        model.onnx                    one node, the case's shapes and dtype
        test_data_set_0/input_<i>.pb  the node's inputs (TensorProto), rounded to the dtype
        test_data_set_0/output_<i>.pb normref's exact outputs, rounded once to the dtype
        data.json                     {"atol": the suite's largest element bound, "rtol": 0}

The tolerance is the suite's own budget as a backend test can state it: one
absolute bound per test, the largest finite element bound of its outputs
(:func:`conformance.bounds.budgets.element_bounds`, under the convention the
suite declares for that operator in :mod:`conformance.adapters.onnx`), which
an output within budget element by element also meets. Cases normref refuses
have no outputs and are left out.

The operators: BatchNormalization-15 (``batch_norm_train``, training mode with
its running statistics, which the runtimes require as outputs there; and
``batch_norm_inference``),
InstanceNormalization-6, LayerNormalization-17, GroupNormalization-21,
MeanVarianceNormalization-13 (``batch_norm`` without affine, with MVN's fixed
``eps`` of 1e-9 added to the standard deviation, over every axis but 1),
LpNormalization-1 (``weight_norm`` of a matrix's rows, ``p = 2``) and
RMSNormalization-23 where the installed onnx has it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from conformance.adapters.onnx import BACKEND_TESTS, Operator
from conformance.bounds.budgets import arithmetic_of, element_bounds
from conformance.checked.cases import Case, cases_for, prepare
from conformance.checked.formats import round_to
from conformance.checked.ops import get_op
from conformance.judging.reference import Refusal, reference_or_refusal

KIND = "normref"
"""The directory of the tests under ``out`` (the *kind* of ONNX's loader)."""


def _native_layout(operator: Operator, case: Case) -> bool:
    """Whether the operator computes the case in the case's own layout: channels at axis 1
    (a matrix's rows, for LpNormalization), or the normalized axes trailing."""
    sample, op = case.sample, get_op(case.op)
    x = sample.args[op.spec.primary]
    axes = op.param_axes(sample)
    if "axes" in sample.kwargs:
        return axes == tuple(range(x.ndim - len(axes), x.ndim))
    if operator.label.startswith("LpNormalization"):
        return x.ndim == 2 and axes == (0,)
    return axes == (1,)


def _available(operator: Operator) -> bool:
    """Whether the installed onnx defines the operator at its opset."""
    import onnx.defs

    name, _, opset = operator.label.partition("-")
    try:
        onnx.defs.get_schema(name, int(opset))
    except onnx.defs.SchemaError:
        return False
    return True


def _tensors(values: Sequence[np.ndarray]) -> Iterator[bytes]:
    from onnx import numpy_helper

    for value in values:
        yield numpy_helper.from_array(np.asarray(value)).SerializeToString()


@dataclass(frozen=True)
class ExportedTest:
    """One written directory: the case, the dtype, the operator and the tolerance."""

    case: str
    dtype: str
    operator: str
    path: Path
    atol: float


def _export_case(
    operator: Operator, case: Case, dtype: str, directory: Path
) -> ExportedTest | None:
    prepared = operator.sample(prepare(case, dtype))
    result = reference_or_refusal(prepared, operator.model, backward=False)
    if isinstance(result, Refusal):
        return None
    node = operator.node(prepared)
    names = ["y", "running_mean", "running_var"][: node.outputs]
    arithmetic = arithmetic_of(operator.model, dtype)
    expected, largest = [], 0.0
    for name in names:
        exact = result.values[name]
        bounds = element_bounds(result.terms, name, exact, dtype, arithmetic)
        expected.append(round_to(exact, dtype).astype(dtype))
        finite = bounds.bound[np.isfinite(bounds.bound)]  # NaN where the exact value is NaN
        largest = max(largest, float(np.max(finite, initial=0.0)))
    data = directory / "test_data_set_0"
    data.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_bytes(node.model().SerializeToString())
    for i, blob in enumerate(_tensors(list(node.inputs.values()))):
        (data / f"input_{i}.pb").write_bytes(blob)
    for i, blob in enumerate(_tensors(expected)):
        (data / f"output_{i}.pb").write_bytes(blob)
    (directory / "data.json").write_text(json.dumps({"atol": largest, "rtol": 0.0}))
    return ExportedTest(case.id, dtype, operator.label, directory, largest)


def _directory_name(operator: Operator, case: Case, dtype: str) -> str:
    slug = "".join(c if c.isalnum() else "_" for c in f"{case.id}_{dtype}_{operator.label}")
    return f"test_{slug.lower()}"


def export_onnx_backend(
    out: str | Path,
    *,
    ops: Sequence[str] | None = None,
    dtypes: Sequence[str] = ("float32",),
    seed: int = 0,
) -> list[ExportedTest]:
    """Write the ONNX backend-test directories of ``ops`` (default: every op an operator
    computes) at ``dtypes`` under ``out/normref`` (module docstring); return what was written.

    The dtypes ONNX's runtimes take are float16, float32 and float64 (bfloat16 and the
    realistic sizes are left out).
    """
    root = Path(out) / KIND
    written: list[ExportedTest] = []
    for operator in BACKEND_TESTS:
        if (ops is not None and operator.op not in ops) or not _available(operator):
            continue
        for case in cases_for(operator.op, suite_seed=seed, realistic=False):
            if not _native_layout(operator, case):
                continue
            for dtype in (d for d in dtypes if case.runs_at(d) and d != "bfloat16"):
                exported = _export_case(
                    operator, case, dtype, root / _directory_name(operator, case, dtype)
                )
                if exported is not None:
                    written.append(exported)
    return written


def read_test(directory: Path) -> tuple[Any, list[np.ndarray], list[np.ndarray], float, float]:
    """A written test as ONNX's backend-test runner reads it: the model, its inputs and
    expected outputs, ``atol`` and ``rtol``."""
    import onnx
    from onnx import numpy_helper

    def arrays(prefix: str) -> list[np.ndarray]:
        found = sorted(
            (directory / "test_data_set_0").glob(f"{prefix}_*.pb"),
            key=lambda p: int(p.stem.rpartition("_")[2]),
        )
        return [numpy_helper.to_array(onnx.load_tensor(str(p))) for p in found]

    tolerance = json.loads((directory / "data.json").read_text())
    model = onnx.load(str(directory / "model.onnx"))
    return model, arrays("input"), arrays("output"), tolerance["atol"], tolerance["rtol"]
