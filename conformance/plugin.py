"""A pytest plugin: run the suite's cases on one implementation as parametrized tests.

``pytest --normref-impl mypkg.norms:my_layer_norm --normref-op layer_norm``
collects one test per case and dtype (``normref::layer_norm/outlier-1e4[float32]``)
in the session, besides the project's own tests. A row that fails is a failed
test with the report's lines; "not implemented" is a skip with the reason;
a row that differs by convention passes, with the explanation recorded in the
test's ``user_properties``. Options: ``--normref-convention``, ``--normref-set``,
``--normref-array-type``, ``--normref-impl-vjp``, ``--normref-dtypes``,
``--normref-seed``, ``--normref-backend`` (the array library of the reference),
``--normref-isolate`` (call the function in a worker process, as the command
line does: a hang, a crash or an exit fails its test only) and
``--normref-timeout`` (seconds per call, with ``--normref-isolate``; default 60).
Without ``--normref-impl`` the plugin does nothing.

A node id as printed, given back to pytest, runs that case alone
(``pytest "normref::layer_norm/outlier-1e4[float32]" --normref-impl ...
--normref-op layer_norm``); with no other path, none of the project's tests
are collected. Each test is one row, so a failing test's diagnosis names the
causes that reproduce that row (``run`` names only those that reproduce every
failing row of the implementation).
"""

from __future__ import annotations

from typing import Any

import pytest

PREFIX = "normref::"
"""How the plugin's node ids start."""

SELECTED = pytest.StashKey[list[str]]()
"""The plugin's node ids given on the command line."""


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
    group.addoption(
        "--normref-isolate",
        action="store_true",
        help="call the function in a worker process (a hang, a crash or an exit fails one test)",
    )
    group.addoption(
        "--normref-timeout",
        type=float,
        default=None,
        help="with --normref-isolate: seconds one call may take (default 60)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, args: list[str]) -> None:
    """Take the plugin's node ids (``normref::...``) out of the paths pytest collects from."""
    selected = [a for a in args if a.startswith(PREFIX)]
    if selected:
        args[:] = [a for a in args if not a.startswith(PREFIX)]
        early_config.stash[SELECTED] = selected


def pytest_ignore_collect(config: pytest.Config) -> bool | None:
    """With node ids of the plugin and no path of its own, collect no file."""
    if config.stash.get(SELECTED, None) and not config.option.file_or_dir:
        return True
    return None


class CaseFailedError(Exception):
    """A case out of budget (the message is the report's lines)."""


class CaseItem(pytest.Item):
    """One case at one dtype."""

    def __init__(self, *, binding: Any, case: Any, dtype: str, backend: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.binding, self.case, self.dtype, self.backend = binding, case, dtype, backend

    def runtest(self) -> None:
        from conformance.judging.causes import settle
        from conformance.judging.runner import check_row
        from conformance.reports.results import Status
        from conformance.reports.summary import output_line

        result = check_row(self.binding, self.case, self.dtype, self.backend)
        settle([result])
        self.user_properties.append(("normref_status", result.status.value))
        if result.status is Status.NOT_IMPLEMENTED:
            pytest.skip(result.explanation or "not implemented")
        if result.status is Status.CONVENTION:
            self.user_properties.append(("normref_explanation", result.explanation))
        if result.status is Status.FAIL:
            lines = [f"{self.case.id} at {self.dtype}: {result.diagnosis}"]
            if result.evidence:
                lines.append(result.evidence)
            lines += [output_line(o) for o in result.outputs if not o["ok"]]
            if result.traceback:
                lines.append(result.traceback)
            raise CaseFailedError("\n".join(lines))

    def repr_failure(self, excinfo: Any, style: Any = None) -> Any:
        if isinstance(excinfo.value, CaseFailedError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[str, int, str]:
        return "normref", 0, self.nodeid


class ConformanceCollector(pytest.Collector):
    """The cases of the implementation given on the command line."""

    def collect(self) -> list[CaseItem]:
        from conformance.adapters.arrays import ArrayKindUnavailableError
        from conformance.adapters.function import check_names, function_binding, load_function
        from conformance.checked.backends import get_backend
        from conformance.checked.models import model_of, with_changes
        from conformance.judging.isolation import DEFAULT_TIMEOUT, Recipe, Worker, isolated
        from conformance.judging.runner import select_cases

        option = self.config.getoption
        op = option("normref_op")
        if not op:
            msg = "--normref-impl needs --normref-op (the op it implements)"
            raise pytest.UsageError(msg)
        impl, vjp = option("normref_impl"), option("normref_impl_vjp")
        isolate, timeout = option("normref_isolate"), option("normref_timeout")
        if timeout is not None and not isolate:
            msg = "--normref-timeout needs --normref-isolate (a call in this process cannot be stopped)"
            raise pytest.UsageError(msg)
        try:
            model = with_changes(model_of(option("normref_convention")), option("normref_set"))
            binding = function_binding(
                load_function(impl),
                op,
                array_type=option("normref_array_type"),
                vjp=load_function(vjp) if vjp else None,
                convention=model,
            )
        except (ValueError, TypeError, ArrayKindUnavailableError) as error:
            # a function that cannot be imported or whose signature does not fit, an unknown
            # op, convention or field, an array type whose library is not installed
            raise pytest.UsageError(str(error)) from error
        if isolate:
            recipe = Recipe(
                impl=impl,
                op=op,
                array_type=option("normref_array_type"),
                vjp=vjp or None,
                convention=model,
                label=binding.label,
            )
            try:
                worker = Worker(DEFAULT_TIMEOUT if timeout is None else timeout, [recipe])
            except ValueError as error:  # a timeout that is not a positive number
                raise pytest.UsageError(str(error)) from error
            self.config.add_cleanup(worker.close)
            binding = isolated(binding, recipe, worker)
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
                nodeid=f"{PREFIX}{case.id}[{dtype}]",
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
    selected = config.stash.get(SELECTED, None)
    if not config.getoption("normref_impl"):
        if selected:
            msg = f"{selected[0]} is a node id of the normref plugin: give --normref-impl and --normref-op"
            raise pytest.UsageError(msg)
        return
    collector = ConformanceCollector.from_parent(session, name="normref", nodeid="normref")
    cases = collector.collect()
    if selected:
        unknown = [s for s in selected if s not in {c.nodeid for c in cases}]
        if unknown:
            msg = (
                f"no case {unknown[0]} among the plugin's: {cases[0].nodeid} ... {cases[-1].nodeid}"
            )
            raise pytest.UsageError(msg)
        cases = [c for c in cases if c.nodeid in selected]
    items.extend(cases)
