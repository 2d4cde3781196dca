"""normref's conformance suite: check implementations of normalization against normref.

From Python::

    import conformance

    result = conformance.check(my_layer_norm, op="layer_norm", convention="torch")
    result.ok, result.failures, result.findings
    conformance.run(["torch"], dtypes=["float32"])          # a framework's adapter
    conformance.run(["optax"], backend="torch")             # the reference on torch tensors
    conformance.diagnose(my_batch_norm, op="batch_norm").verdict
    conformance.check(my_layer_norm, op="layer_norm", isolate=True, timeout=60)  # in a worker

From the command line: ``normref-conformance run|diagnose|export-golden|report``
(or ``python -m conformance``). Cases are in :mod:`conformance.checked.cases`, the
error budgets in :mod:`conformance.bounds.budgets`, conventions as models in
:mod:`conformance.checked.models`, adapters in :mod:`conformance.adapters`.
"""

from conformance.api import DEFAULT_DTYPES, check, run
from conformance.checked.cases import Case, cases_for, find_case
from conformance.checked.formats import ulp
from conformance.checked.models import NORMREF, Model
from conformance.diagnosis import Diagnosis, diagnose
from conformance.golden import export_golden
from conformance.reports.results import CaseResult, RunResult, Status

__all__ = [
    "DEFAULT_DTYPES",
    "NORMREF",
    "Case",
    "CaseResult",
    "Diagnosis",
    "Model",
    "RunResult",
    "Status",
    "cases_for",
    "check",
    "diagnose",
    "export_golden",
    "find_case",
    "run",
    "ulp",
]
