"""``normref-conformance``: run, diagnose, export golden vectors, render reports.

``run`` and ``diagnose`` call implementations in a worker process
(:mod:`conformance.judging.isolation`): a call longer than ``--timeout``
seconds (default 60), a crash or an exit fails its row, not the run. Ctrl-C
stops the run, prints and writes the report of the rows done, and exits 130.

Exit codes: 0 when every row is within budget, differs by convention
(explained), refuses as normref does, returns a value where normref refuses, or
is not implemented, and some row was checked; 1 when any row fails
(``diagnose``: when no convention explains the implementation); 2 on a usage
error (an unknown name, a function that cannot be imported or whose signature
cannot take the op's arguments, a file that is not a results document, an
export into a directory that is not empty), when nothing was checked (every row
"not implemented": the reasons are printed), and when a framework asked for is
not installed (nothing of it was checked; the frameworks that are installed
are still run and reported); 3 on an internal error of the suite (a bug: its
traceback is printed); 130 when stopped by Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

USAGE_ERROR = 2
INTERNAL_ERROR = 3
INTERRUPTED = 130


class UsageError(Exception):
    """A command line that cannot run (exit code 2)."""


@contextmanager
def _arguments() -> Iterator[None]:
    """Resolving the command line's arguments: what fails there is a usage error (an unknown
    name, a function that cannot be imported, an array type or backend not installed)."""
    from conformance.adapters.arrays import ArrayKindUnavailableError

    try:
        yield
    except (ValueError, TypeError, ArrayKindUnavailableError) as error:
        raise UsageError(str(error)) from error


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="normref-conformance",
        description="Check implementations of normalization against normref.",
    )
    parser.add_argument("--list", action="store_true", help="list frameworks and ops, then exit")
    commands = parser.add_subparsers(dest="command")

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--dtypes",
            help="comma-separated dtypes (default: float32,float64 for frameworks; for --impl "
            "every dtype its --array-type has: numpy float16,float32,float64)",
        )
        sub.add_argument("--seed", type=int, default=0, help="the suite's seed (default 0)")
        backend(sub)

    def backend(sub: argparse.ArgumentParser) -> None:
        from conformance.checked.backends import BACKENDS

        sub.add_argument(
            "--backend",
            default="numpy",
            help=f"the array library normref's reference runs on: {', '.join(BACKENDS)} "
            "(default numpy; cupy puts it on the GPU)",
        )

    def impl(sub: argparse.ArgumentParser) -> None:
        from conformance.adapters.function import FUNCTION_OPTIONS
        from conformance.judging.isolation import DEFAULT_TIMEOUT

        for name, options in FUNCTION_OPTIONS:
            sub.add_argument(f"--{name}", **options)
        sub.add_argument(
            "--timeout",
            type=float,
            default=DEFAULT_TIMEOUT,
            help=f"seconds one call of an implementation may take (default {DEFAULT_TIMEOUT:g}; "
            "not counting its imports, and twice that for its first call, which may compile)",
        )
        sub.add_argument(
            "--in-process",
            action="store_true",
            help="call implementations in this process, not in a worker (starts faster and lets "
            "a debugger in; a hang, a crash or an exit then ends the run)",
        )

    run = commands.add_parser("run", help="check frameworks or a function")
    run.add_argument("--framework", action="append", help="framework(s), comma-separated")
    run.add_argument("--ops", help="comma-separated ops (default all)")
    run.add_argument("--case", help="run one case by id, e.g. layer_norm/outlier-1e4")
    run.add_argument(
        "--replicas",
        type=int,
        help="also check batch norm across this many replicas (host devices; flax, haiku, "
        "equinox), in a process the suite starts",
    )
    run.add_argument("--list", action="store_true", help="list frameworks and ops, then exit")
    run.add_argument(
        "--thorough",
        action="store_true",
        help="every reduction length (1-3, 7-9, ..., 8191-8193) and realistic size, at every "
        "dtype (default: lengths 63-65, 1023-1025, 4095-4097 and one realistic size, float32)",
    )
    run.add_argument(
        "--compile",
        action="store_true",
        help="also run each framework layer compiled (torch.compile with dynamic=True, "
        "jax.jit), as implementations named '... (compiled)'; compile time is not counted",
    )
    run.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where the torch adapter runs its layers: cuda checks torch's CUDA (and cuDNN) "
        "kernels against the reference (computed on the host, or with --backend cupy on the "
        "GPU); exits 2 without a GPU (default cpu)",
    )
    for flag in ("--json", "--markdown", "--html"):
        run.add_argument(flag, help=f"write the {flag[2:]} report to this file")
    common(run)
    impl(run)

    diagnose = commands.add_parser("diagnose", help="which convention explains a function")
    impl(diagnose)
    common(diagnose)
    diagnose.add_argument("--json", help="write the diagnosis as JSON to this file")

    golden = commands.add_parser("export-golden", help="write golden vectors (NPZ + manifest)")
    golden.add_argument("--out", required=True, help="directory to write into (new or empty)")
    golden.add_argument(
        "--force",
        action="store_true",
        help="replace the contents of --out whole when it is not empty",
    )
    golden.add_argument("--ops", help="comma-separated ops (default all)")
    golden.add_argument("--convention", help="the convention of the reference (default normref)")
    golden.add_argument(
        "--dtypes",
        help="comma-separated dtypes (default float16,bfloat16,float32,float64; for "
        "onnx-backend float32)",
    )
    golden.add_argument(
        "--format",
        choices=("npz", "onnx-backend"),
        default="npz",
        help="npz: NPZ files and a JSON manifest (default); onnx-backend: ONNX backend-test "
        "directories of the cases an ONNX operator computes",
    )
    golden.add_argument("--seed", type=int, default=0, help="the suite's seed (default 0)")
    backend(golden)

    report = commands.add_parser("report", help="render a JSON result file")
    report.add_argument("results", help="a JSON file written by run --json")
    report.add_argument("--markdown", help="write the Markdown report to this file")
    report.add_argument("--html", help="write the HTML report to this file")
    return parser


def list_everything() -> str:
    """Frameworks (availability, convention, what each covers) and ops."""
    from conformance.adapters import ADAPTERS, get_adapter
    from conformance.checked.ops import CHECKED_OPS

    lines = ["frameworks:"]
    for name in ADAPTERS:
        adapter = get_adapter(name)
        reason = adapter.unavailable()
        state = "available" if reason is None else f"unavailable: {reason}"
        lines.append(f"  {name} ({state}); convention {adapter.model.name}")
        lines.append(f"    {adapter.description}")
        for binding in adapter.bindings:
            extra = "" if binding.backward else " (forward only)"
            lines.append(f"    {binding.op:26s} {binding.label}{extra}")
        missing = [op for op in CHECKED_OPS if op not in adapter.ops()]
        if missing:
            lines.append(f"    not implemented: {', '.join(missing)}")
    lines.append("ops: " + ", ".join(CHECKED_OPS))
    return "\n".join(lines)


def _function(args: argparse.Namespace) -> dict[str, Any]:
    """The function under test and its settings, from ``--impl`` and its companions: its module
    imported, its signature (and its VJP's) checked against the op's arguments."""
    from conformance.adapters.arrays import array_kind
    from conformance.adapters.function import check_signature, load_function
    from conformance.checked.models import model_of, with_changes
    from conformance.checked.ops import get_op

    if not args.impl:
        msg = f"{args.command} needs --impl module:function (the function to check)"
        raise UsageError(msg)
    if not args.op:
        msg = "--impl needs --op (the op it implements)"
        raise UsageError(msg)
    with _arguments():
        op = get_op(args.op)
        with_changes(model_of(args.convention), args.set)
        array_kind(args.array_type)
        fn = load_function(args.impl)
        check_signature(fn, op)
        vjp = load_function(args.impl_vjp) if args.impl_vjp else None
        if vjp is not None:
            check_signature(vjp, op, vjp=True)
    return {
        "fn": fn,
        "op": args.op,
        "convention": args.convention,
        "changes": args.set,
        "array_type": args.array_type,
        "vjp": vjp,
    }


def _isolation(args: argparse.Namespace) -> dict[str, Any]:
    """The worker's settings: a worker with ``--timeout`` unless ``--in-process``."""
    if not args.timeout > 0:
        msg = f"--timeout must be a positive number of seconds, got {args.timeout:g}"
        raise UsageError(msg)
    if args.in_process:
        return {"isolate": False}
    return {"isolate": True, "timeout": args.timeout}


def _settings(
    args: argparse.Namespace,
    *,
    ops: Sequence[str] | None = None,
    default_dtypes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The dtypes (``default_dtypes`` if none are given) and the reference's backend the
    command line names, checked with its case and ``ops``."""
    from conformance.adapters.function import check_names
    from conformance.checked.backends import get_backend
    from conformance.checked.cases import find_case
    from conformance.checked.formats import DTYPES
    from conformance.checked.ops import CHECKED_OPS

    if args.dtypes is not None and not _names(args.dtypes):
        msg = f"--dtypes names no dtype: {args.dtypes!r}"
        raise UsageError(msg)
    with _arguments():
        dtypes = _names(args.dtypes) or default_dtypes
        settings: dict[str, Any] = {
            "dtypes": None if dtypes is None else check_names(dtypes, DTYPES, "dtypes"),
            "backend": get_backend(args.backend),
        }
        if getattr(args, "case", None):
            case = find_case(args.case, suite_seed=args.seed)
            op = args.op if getattr(args, "impl", None) else None
            if op and case.op != op:
                msg = f"--case {args.case} is a case of {case.op}, not of --op {op}"
                raise ValueError(msg)
        if ops is not None:
            check_names(ops, CHECKED_OPS, "ops")
    return settings


def _write_reports(result: Any, args: argparse.Namespace) -> None:
    from conformance.reports import to_html, to_markdown

    writers = {
        "json": result.json_text,
        "markdown": lambda: to_markdown(result),
        "html": lambda: to_html(result),
    }
    for kind, text in writers.items():
        if getattr(args, kind, None):
            _write(getattr(args, kind), f"{kind} report", text())


def _write(path: str, what: str, text: str) -> None:
    try:
        Path(path).write_text(text)
    except OSError as error:
        raise UsageError(f"cannot write the {what} to {path}: {error}") from error


def _function_only(args: argparse.Namespace) -> None:
    """The options that only a function (``--impl``) takes, refused without one."""
    given = [
        option for option, value in (("--impl-vjp", args.impl_vjp), ("--set", args.set)) if value
    ]
    if given and not args.impl:
        msg = f"{' and '.join(given)} {'need' if len(given) > 1 else 'needs'} --impl (the function)"
        raise UsageError(msg)


def _device(args: argparse.Namespace, frameworks: list[str]) -> Any:
    """The torch adapter's device for the run (a context manager); a usage error (exit 2)
    where ``--device cuda`` names a run it cannot apply to or no GPU is usable, with the
    reason."""
    if args.device == "cpu":
        return contextlib.nullcontext()
    from conformance.adapters.torch import cuda_missing, on_device

    if args.impl or frameworks != ["torch"]:
        msg = "--device cuda runs the torch adapter: give --framework torch alone"
        raise UsageError(msg)
    reason = cuda_missing()
    if reason is not None:
        msg = f"--device cuda: no GPU to run on: {reason}"
        raise UsageError(msg)
    return on_device("cuda")


def _run(args: argparse.Namespace) -> int:
    from conformance import api
    from conformance.adapters import get_adapter
    from conformance.judging.runner import RunInterrupted
    from conformance.reports import not_checked, print_report, progress_bar
    from conformance.reports.compiled import compiled_differences

    if args.list:
        print(list_everything())
        return 0
    frameworks = [f for group in args.framework or [] for f in _names(group) or []]
    if args.impl and frameworks:
        msg = "give either --framework or --impl, not both"
        raise UsageError(msg)
    _function_only(args)
    isolation = _isolation(args)
    if args.impl:
        function = _function(args)
        settings = _settings(args)
    else:
        frameworks = frameworks or ["torch"]
        with _arguments():
            for name in frameworks:
                get_adapter(name)
            if args.replicas is not None and args.replicas < 2:
                msg = f"--replicas must be 2 or more, got {args.replicas}"
                raise ValueError(msg)
        settings = _settings(args, ops=_names(args.ops), default_dtypes=api.DEFAULT_DTYPES)
    device = _device(args, frameworks)
    try:
        with progress_bar() as progress:
            if args.impl:
                result = api.check(
                    function.pop("fn"),
                    function.pop("op"),
                    **function,
                    **settings,
                    **isolation,
                    case=args.case,
                    seed=args.seed,
                    thorough=args.thorough,
                    progress=progress,
                )
            else:
                with device:
                    result = api.run(
                        frameworks,
                        ops=_names(args.ops),
                        **settings,
                        **isolation,
                        case=args.case,
                        seed=args.seed,
                        thorough=args.thorough,
                        compile=args.compile,
                        replicas=args.replicas,
                        progress=progress,
                    )
    except RunInterrupted as stopped:
        result = stopped.run
        print_report(result)
        _write_reports(result, args)
        done = len(stopped.results)
        print(
            f"normref-conformance: interrupted after {done} of {stopped.planned} rows: the "
            "report holds those",
            file=sys.stderr,
        )
        return INTERRUPTED
    print_report(result)
    for line in compiled_differences(result):
        print(line)
    _write_reports(result, args)
    for line in not_checked(result):
        print(f"normref-conformance: {line}", file=sys.stderr)
    return result.exit_code


def _diagnose(args: argparse.Namespace) -> int:
    from conformance.diagnosis import NothingToDiagnoseError, diagnose
    from conformance.reports import progress_bar

    _function_only(args)
    isolation = _isolation(args)
    function = _function(args)
    settings = _settings(args)
    try:
        with progress_bar(what="diagnosing") as progress:
            found = diagnose(
                function.pop("fn"),
                function.pop("op"),
                **function,
                **settings,
                **isolation,
                seed=args.seed,
                progress=progress,
            )
    except NothingToDiagnoseError as error:
        raise UsageError(str(error)) from error
    except KeyboardInterrupt:
        print("normref-conformance: interrupted: no diagnosis", file=sys.stderr)
        return INTERRUPTED
    for hypothesis in found.hypotheses:
        mark = (
            "explains"
            if hypothesis.explains
            else (f"{len(hypothesis.failing)}/{hypothesis.total} rows out of budget")
        )
        print(f"  {hypothesis.name:60s} {mark}")
    print(found.verdict)
    for line in found.evidence:
        print(f"  {line}")
    if args.json:
        _write(args.json, "diagnosis", json.dumps(found.to_json(), indent=1) + "\n")
    return 0 if found.explained else 1


def _export(args: argparse.Namespace) -> int:
    from conformance.checked.formats import DTYPES
    from conformance.checked.models import model_of
    from conformance.golden import export_golden

    ops = _names(args.ops)
    defaults = ("float32",) if args.format == "onnx-backend" else DTYPES
    settings = _settings(args, ops=ops, default_dtypes=defaults)
    with _arguments():
        model = model_of(args.convention)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        msg = f"--out must name a directory, and {args.out} is a file"
        raise UsageError(msg)
    if out.is_dir() and any(out.iterdir()) and not args.force:
        msg = (
            f"--out {args.out} is not empty: give a new or empty directory, or --force to "
            "replace its contents whole"
        )
        raise UsageError(msg)
    try:
        if args.format == "onnx-backend":
            return _export_onnx_backend(args, ops, model, settings)
        path = export_golden(
            args.out, ops=ops, convention=model, seed=args.seed, force=args.force, **settings
        )
    except OSError as error:
        raise UsageError(f"cannot write the golden vectors to {args.out}: {error}") from error
    count = len(json.loads(path.read_text())["vectors"])
    print(f"wrote {count} vectors and {path}")
    return 0


def _export_onnx_backend(
    args: argparse.Namespace, ops: list[str] | None, model: Any, settings: dict[str, Any]
) -> int:
    from conformance.checked.models import NORMREF
    from conformance.onnx_backend import KIND, export_onnx_backend

    if model != NORMREF:
        msg = (
            "--convention does not apply to onnx-backend: each operator's convention is the suite's"
        )
        raise UsageError(msg)
    out = Path(args.out)
    if args.force and out.is_dir():  # the contents replaced whole: no stale test beside new ones
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    written = export_onnx_backend(out, ops=ops, dtypes=settings["dtypes"], seed=args.seed)
    print(f"wrote {len(written)} ONNX backend tests under {Path(args.out) / KIND}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from conformance.reports import print_report
    from conformance.reports.results import RunResult

    try:
        result = RunResult.read_json(args.results)
    except (OSError, ValueError) as error:  # JSONDecodeError (with its line), another schema
        raise UsageError(f"cannot read {args.results}: {error}") from error
    print_report(result)
    _write_reports(result, args)
    return result.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        if args.list and args.command is None:
            print(list_everything())
            return 0
        if args.command is None:
            parser.print_usage(sys.stderr)
            return USAGE_ERROR
        commands = {"run": _run, "diagnose": _diagnose, "export-golden": _export, "report": _report}
        return commands[args.command](args)
    except UsageError as error:
        print(f"normref-conformance: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except Exception:  # noqa: BLE001 - any other exception is a bug of the suite
        traceback.print_exc()
        print(
            "normref-conformance: internal error (a bug of the suite, not of the command line: "
            "please report it with the traceback above)",
            file=sys.stderr,
        )
        return INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
