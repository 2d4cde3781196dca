"""A pytest plugin: run the suite's cases on one implementation as parametrized tests.

``pytest --normref-impl mypkg.norms:my_layer_norm --normref-op layer_norm``
collects one test per case and dtype (``normref::layer_norm/outlier-1e4[float32]``)
in the session, besides the project's own tests. A row that fails is a failed
test with the report's lines; "not implemented" is a skip with the reason;
a row that differs by convention passes, with the explanation recorded in the
test's ``user_properties``. Options: ``--normref-convention``,
``--normref-array-type``, ``--normref-impl-vjp``, ``--normref-dtypes``,
``--normref-seed``, ``--normref-backend`` (the array library of the reference).
Without ``--normref-impl`` the plugin does nothing.
"""

from __future__ import annotations

from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    from conformance.adapters.function import FUNCTION_OPTIONS

    group = parser.getgroup("normref", "normref conformance cases")
    for name, options in FUNCTION_OPTIONS:
        group.addoption(f"--normref-{name}", **options)
    group.addoption("--normref-dtypes", help="comma-separated dtypes (default: all it takes)")
    group.addoption("--normref-seed", type=int, default=0, help="the suite's seed")
    group.addoption(
        "--normref-backend", default="numpy", help="the array library of the reference (numpy)"
    )


class CaseFailedError(Exception):
    """A case out of budget (the message is the report's lines)."""


class CaseItem(pytest.Item):
    """One case at one dtype."""

    def __init__(self, *, binding: Any, case: Any, dtype: str, backend: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.binding, self.case, self.dtype, self.backend = binding, case, dtype, backend

    def runtest(self) -> None:
        from conformance.judging.runner import check_row
        from conformance.reports.results import Status
        from conformance.reports.summary import output_line

        result = check_row(self.binding, self.case, self.dtype, self.backend)
        self.user_properties.append(("normref_status", result.status.value))
        if result.status is Status.NOT_IMPLEMENTED:
            pytest.skip(result.explanation or "not implemented")
        if result.status is Status.CONVENTION:
            self.user_properties.append(("normref_explanation", result.explanation))
        if result.status is Status.FAIL:
            lines = [f"{self.case.id} at {self.dtype}: {result.diagnosis}"]
            lines += [output_line(o) for o in result.outputs if not o["ok"]]
            if result.traceback:
                lines.append(result.traceback)
            raise CaseFailedError("\n".join(lines))

    def repr_failure(self, excinfo: Any, style: Any = None) -> Any:
        if isinstance(excinfo.value, CaseFailedError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[str, int, str]:
        return "normref", 0, f"normref::{self.name}"


class ConformanceCollector(pytest.Collector):
    """The cases of the implementation given on the command line."""

    def collect(self) -> list[CaseItem]:
        from conformance.adapters.arrays import ArrayKindUnavailableError
        from conformance.adapters.function import check_names, function_binding, load_function
        from conformance.checked.backends import get_backend
        from conformance.judging.runner import select_cases

        option = self.config.getoption
        op = option("normref_op")
        if not op:
            msg = "--normref-impl needs --normref-op (the op it implements)"
            raise pytest.UsageError(msg)
        vjp = option("normref_impl_vjp")
        try:
            binding = function_binding(
                load_function(option("normref_impl")),
                op,
                array_type=option("normref_array_type"),
                vjp=load_function(vjp) if vjp else None,
                convention=option("normref_convention"),
            )
        except (ValueError, TypeError, ArrayKindUnavailableError) as error:
            # a function that cannot be imported, an unknown op or convention, an array type
            # whose library is not installed
            raise pytest.UsageError(str(error)) from error
        chosen = option("normref_dtypes")
        try:
            dtypes = check_names(
                chosen.split(",") if chosen else binding.dtypes, binding.dtypes, "dtypes"
            )
            backend = get_backend(option("normref_backend"))
        except ValueError as error:
            # a dtype the array type lacks, an unknown backend
            raise pytest.UsageError(str(error)) from error
        return [
            CaseItem.from_parent(
                self,
                name=f"{case.id}[{dtype}]",
                binding=binding,
                case=case,
                dtype=dtype,
                backend=backend,
            )
            for case in select_cases(op, seed=option("normref_seed"))
            for dtype in dtypes
        ]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    if not config.getoption("normref_impl"):
        return
    collector = ConformanceCollector.from_parent(session, name="normref")
    items.extend(collector.collect())
