"""Batch norm across replicas: rows run in a process the suite starts with ``n`` host devices.

XLA makes ``n`` host devices only when ``--xla_force_host_platform_device_count=n`` is in
``XLA_FLAGS`` before JAX starts, which a process that already imported JAX cannot change;
so :func:`run_replicas` starts ``python -m conformance.replicas`` with it set, that process
checks the replica bindings of the frameworks asked for (their adapters'
``replicas(n)``, :mod:`conformance.adapters.replicated`) and writes its rows as JSON.
A framework with a cross-device batch norm the suite does not run (torch's ``SyncBatchNorm``,
which needs CUDA) is reported as not checked, with its reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conformance.adapters import get_adapter
from conformance.adapters.base import Binding
from conformance.reports.results import CaseResult

TIMEOUT = 1800
"""Seconds the replicas' process may take."""


def replica_bindings(
    frameworks: Sequence[str], replicas: int, ops: Sequence[str]
) -> tuple[list[Binding], list[dict[str, str]]]:
    """The replica bindings of the installed ``frameworks`` for ``ops``, and those not
    checked with the reason."""
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 2:
        msg = f"replicas must be an int >= 2, got {replicas!r}"
        raise ValueError(msg)
    bindings: list[Binding] = []
    skipped: list[dict[str, str]] = []
    for name in frameworks:
        adapter = get_adapter(name)
        if adapter.unavailable() is not None:
            continue  # reported as not installed already
        if adapter.replicas is not None:
            bindings += [b for b in adapter.replicas(replicas) if b.op in ops]
        elif adapter.replicas_unavailable:
            framework = f"{name} ({replicas} replicas)"
            skipped.append({"framework": framework, "reason": adapter.replicas_unavailable})
    return bindings, skipped


def run_replicas(
    frameworks: Sequence[str],
    replicas: int,
    *,
    ops: Sequence[str],
    dtypes: Sequence[str],
    case: str | None,
    seed: int,
    backend: str,
) -> tuple[list[CaseResult], list[Binding], list[dict[str, str]]]:
    """The rows of the replica bindings (in a process with ``replicas`` host devices), the
    bindings, and the frameworks not checked."""
    bindings, skipped = replica_bindings(frameworks, replicas, ops)
    if not bindings:
        return [], [], skipped
    settings = {
        "frameworks": list(frameworks),
        "replicas": replicas,
        "ops": list(ops),
        "dtypes": list(dtypes),
        "case": case,
        "seed": seed,
        "backend": backend,
    }
    flags = os.environ.get("XLA_FLAGS", "")
    env = {**os.environ, "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={replicas}"}
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "rows.json"
        command = [sys.executable, "-m", "conformance.replicas", json.dumps(settings), str(out)]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, env=env, timeout=TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            done = None
        if done is None or done.returncode != 0 or not out.exists():
            why = "timed out" if done is None else f"exited {done.returncode}: {done.stderr[-600:]}"
            reason = f"the process checking the replicas {why}"
            return [], [], [*skipped, {"framework": f"replicas ({replicas})", "reason": reason}]
        rows = [CaseResult.from_json(r) for r in json.loads(out.read_text())]
    return rows, bindings, skipped


def _main(settings: dict[str, Any], out: str) -> None:
    from conformance.checked.backends import get_backend
    from conformance.judging.runner import run_bindings

    bindings, _ = replica_bindings(settings["frameworks"], settings["replicas"], settings["ops"])
    rows = run_bindings(
        bindings,
        settings["dtypes"],
        case_id=settings["case"],
        seed=settings["seed"],
        backend=get_backend(settings["backend"]),
    )
    Path(out).write_text(json.dumps([r.to_json() for r in rows]))


if __name__ == "__main__":
    _main(json.loads(sys.argv[1]), sys.argv[2])
