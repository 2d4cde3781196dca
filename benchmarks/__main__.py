"""``python -m benchmarks``: normref against torch and jax, as ratios, on the CPU or a GPU.

Prints the table row by row as cases finish (progress on stderr), then
writes ``benchmarks.json``, ``benchmarks.md``, ``summary.md`` (the main
columns), ``families.md`` (a line per family) and ``benchmarks.png`` to
``--out``. ``--quick`` runs the smaller shapes in float32 with fewer rounds
(under a minute); the full run takes a few minutes. ``--runs 3`` repeats the
whole run and reports each row from the run of its median ratio.
``--device cuda`` times normref on CuPy against torch on CUDA (exit status 2
without a usable GPU); ``--device cpu`` runs the same code on the CPU.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.cases import DTYPES, FAMILIES, PRECISIONS, QUICK_DTYPES, Case
from benchmarks.devices import DEVICES, device
from benchmarks.report import (
    TARGETS_TEXT,
    families_markdown,
    header,
    markdown,
    plot,
    row,
    summary_markdown,
    write_json,
)
from benchmarks.run import Result, measure, median_run
from normref import compiled

FRAMEWORKS = ("torch", "jax")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small shapes, float32, 3 rounds")
    parser.add_argument("--out", type=Path, default=Path("benchmark-results"))
    parser.add_argument("--ops", help="comma-separated registry names (default: every case)")
    parser.add_argument(
        "--dtypes", help="comma-separated: float32, float64 (default both; quick float32)"
    )
    parser.add_argument("--repeats", type=int, help="interleaved rounds (default 7; quick 3)")
    parser.add_argument(
        "--frameworks", default=",".join(FRAMEWORKS), help="comma-separated: torch, jax"
    )
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="cpu",
        help="cuda: normref on CuPy against torch on CUDA (exit 2 without a GPU); "
        "cpu (default): NumPy, torch and jax on the CPU",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=1,
        help="whole runs of every row; each row is reported from the run of its median ratio",
    )
    parser.add_argument(
        "--single-core",
        action="store_true",
        help="pin the process to one CPU, every library on one thread (steadier on a busy machine)",
    )
    return parser


def _pin_to_one_core() -> None:
    """Run on one CPU, every thread pool of one thread.

    Pinning holds only the calling thread: the threads NumPy's BLAS started
    when it was imported keep every CPU, so threadpoolctl, which limits them to
    one, is required.
    """
    if importlib.util.find_spec("threadpoolctl") is None:
        msg = (
            "--single-core needs threadpoolctl to hold NumPy's BLAS threads to one "
            "(pip install -e '.[report]')"
        )
        raise SystemExit(msg)
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    os.environ["NORMREF_THREADS"] = "1"
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(1)
    import threadpoolctl

    threadpoolctl.threadpool_limits(1)  # NumPy's and SciPy's BLAS, torch's OpenMP


def _blas_threads() -> dict[str, int]:
    """Threads of each BLAS or OpenMP library loaded (empty without threadpoolctl)."""
    if importlib.util.find_spec("threadpoolctl") is None:
        return {}
    import threadpoolctl

    return {
        f"{pool['internal_api']} ({pool['prefix']})": pool["num_threads"]
        for pool in threadpoolctl.threadpool_info()
    }


def _cases(quick: bool, ops: str | None) -> list[Case]:
    chosen = [c for cases in FAMILIES.values() for c in cases if c.quick or not quick]
    if ops:
        names = set(ops.split(","))
        unknown = names - {c.op for c in chosen}
        if unknown:
            msg = f"--ops names no benchmarked case: {sorted(unknown)}"
            raise SystemExit(msg)
        chosen = [c for c in chosen if c.op in names]
    return chosen


def _dtypes(text: str) -> tuple[str, ...]:
    chosen = tuple(text.split(","))
    unknown = set(chosen) - set(DTYPES)
    if unknown:
        msg = f"--dtypes: unknown dtypes {sorted(unknown)}; choose from {DTYPES}"
        raise SystemExit(msg)
    return chosen


def _available(frameworks: str) -> tuple[str, ...]:
    found = []
    for name in frameworks.split(","):
        if name not in FRAMEWORKS:
            msg = f"--frameworks: unknown framework {name!r}; choose from {FRAMEWORKS}"
            raise SystemExit(msg)
        if importlib.util.find_spec(name) is None:
            print(f"{name} is not installed: its columns stay empty", file=sys.stderr)
        else:
            found.append(name)
    if "jax" in found:
        import jax

        jax.config.update("jax_enable_x64", True)  # float64 cases need it
    return tuple(found)


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _meta(args: argparse.Namespace, frameworks: tuple[str, ...], repeats: int) -> dict[str, Any]:
    threads: dict[str, Any] = {"numpy": 1, **_blas_threads()}
    if compiled.available():
        threads["normref fused"] = compiled.thread_count()
    if "torch" in frameworks:
        import torch

        threads["torch"] = torch.get_num_threads()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "repeats": repeats,
        "cpu": _cpu(),
        "cpu_count": os.cpu_count(),
        "fused_path": compiled.available(),
        "single_core": args.single_core,
        "device": args.device,
        "runs": args.runs,
        "load_average_1min": {"start": args.load_at_start, "end": os.getloadavg()[0]},
        "threads": threads,
        "python": platform.python_version(),
        "versions": {
            p: _version(p) for p in ("normref", "numpy", "numba", "torch", "jax", "jaxlib")
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.single_core:
        _pin_to_one_core()
    args.load_at_start = os.getloadavg()[0]
    if args.load_at_start > 0.5 * len(os.sched_getaffinity(0)):
        print(
            f"the machine is busy (1-minute load {args.load_at_start:.1f}): timings will be noisy; "
            "--single-core is steadier",
            file=sys.stderr,
        )
    if not compiled.available():
        print(
            "the compiled path is off: numba is not installed (pip install -e '.[fast]'); the "
            "operations it speeds up run the generic path, and their rows that miss the "
            "targets say 'compiled path off'",
            file=sys.stderr,
        )
    cases = _cases(args.quick, args.ops)
    chosen_device = device(args.device)
    frameworks = _available(args.frameworks)
    if chosen_device.name == "cuda":
        frameworks = tuple(f for f in frameworks if f != "jax")
    if args.runs < 1:
        raise SystemExit("--runs must be at least 1")
    repeats = args.repeats or (3 if args.quick else 7)
    dtypes = _dtypes(args.dtypes) if args.dtypes else QUICK_DTYPES if args.quick else DTYPES
    plan = [(case, dtype) for case in cases for dtype in dtypes]
    started = time.perf_counter()
    runs: list[list[Result]] = []
    failed: set[tuple[str, str]] = set()
    print(header(), flush=True)
    for run in range(args.runs):
        results: list[Result] = []
        for done, (case, dtype) in enumerate(plan):
            progress = f"[run {run + 1}/{args.runs}, {done + 1}/{len(plan)}]"
            print(f"{progress} {case.label} {dtype} ...", file=sys.stderr, flush=True)
            try:
                measured = measure(
                    case,
                    dtype,
                    PRECISIONS,
                    frameworks=frameworks,
                    repeats=repeats,
                    device=chosen_device,
                )
            except Exception as error:  # noqa: BLE001 - one broken case must not end the run
                print(f"{progress} {case.label} {dtype} failed: {error!r}", file=sys.stderr)
                failed.add((case.label, dtype))
                continue
            for result in measured:
                results.append(result)
                print(row(result), flush=True)
        runs.append(results)
    if failed:  # rows of a case that failed in any run are left out of every run
        keep = {(f"{r.name} {r.shape}", r.dtype) for r in runs[0]} - failed
        runs = [[r for r in run if (f"{r.name} {r.shape}", r.dtype) in keep] for run in runs]
    results = median_run(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        **_meta(args, frameworks, repeats),
        "seconds": time.perf_counter() - started,
    }
    write_json(args.out / "benchmarks.json", results, meta)
    (args.out / "benchmarks.md").write_text(markdown(results))
    (args.out / "summary.md").write_text(summary_markdown(results))
    (args.out / "families.md").write_text(families_markdown(results))
    if importlib.util.find_spec("matplotlib") is None:
        print("matplotlib is not installed: no benchmarks.png", file=sys.stderr)
    else:
        plot(args.out / "benchmarks.png", results)
    verdicts = [r.meets_targets for r in results if r.meets_targets is not None]
    print(TARGETS_TEXT)
    for label, dtype in sorted(failed):
        print(f"{label} {dtype}: failed (see the messages above), left out")
    print(
        f"{sum(verdicts)} of {len(verdicts)} rows with targets meet them; "
        f"{meta['seconds']:.0f} s; "
        f"results in {args.out}/benchmarks.{{json,md,png}}, summary.md and families.md"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
