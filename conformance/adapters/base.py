"""What an adapter is: bindings from the suite's ops to one framework's implementations."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from conformance.adapters.arrays import ArrayKind, Evaluation, Function, compiling
from conformance.checked.cases import Prepared
from conformance.checked.formats import DTYPES
from conformance.checked.models import NORMREF, Model


class FrameworkLacksError(Exception):
    """The framework has no implementation for this input (an op, a dtype, a layout).

    Raised by a binding, it makes the case "not implemented" (with this
    message as the reason) instead of a failure.
    """


Run = Callable[[Prepared, Model, bool], Evaluation]
"""``run(prepared, model, backward)``: one call of the implementation (and of its backward)."""


def same_dtype(dtype: str) -> str:
    """Parameters held in the input's dtype (every implementation but flax's defaults)."""
    return dtype


@dataclass(frozen=True)
class Binding:
    """One implementation of one op, as the suite runs it.

    Attributes
    ----------
    op
        The suite's op name (:data:`conformance.checked.ops.CHECKED_OPS`).
    label
        The implementation's name, e.g. ``"torch.nn.functional.layer_norm"``.
    framework
        The adapter's name.
    run
        Calls the implementation on a prepared case (see ``Run``).
    model
        The convention the framework declares (its preset).
    backward
        Whether gradients are checked (``False``: the report says forward only).
    dtypes
        The dtypes the implementation accepts; others are "not implemented".
    param_dtype
        The dtype the implementation holds affine parameters and running
        statistics in, for an input dtype.
    model_dependent
        Whether the call itself follows the model (a function with normref's
        signature takes ``momentum`` in the model's meaning).
    notes
        Anything the report should say about this binding.
    outputs
        The forward and state outputs the implementation gives (flax's spectral
        norm keeps ``u`` and ``sigma``, not ``v``); ``None``: all of the op's.
    in_place
        The inputs the implementation is documented to update in place (an
        adapter that hands a framework its running statistics to update);
        writing into any other input fails the row.
    """

    op: str
    label: str
    framework: str
    run: Run
    model: Model = NORMREF
    backward: bool = True
    dtypes: tuple[str, ...] = DTYPES
    param_dtype: Callable[[str], str] = same_dtype
    model_dependent: bool = False
    notes: str = ""
    outputs: tuple[str, ...] | None = None
    in_place: tuple[str, ...] = ()


@dataclass(frozen=True)
class Adapter:
    """A framework: its declared convention and the bindings it has.

    ``requires`` lists the modules that must be importable; the framework
    itself is imported only inside the bindings' ``run``, so listing an
    adapter never imports it. ``check``, where given, says why the adapter
    cannot run although those modules are found (timm's modules that fail to
    load, an unknown Keras backend); it may import the framework.
    ``replicas(n)``, where given, are the bindings of its batch norm across ``n``
    replicas (:mod:`conformance.adapters.replicated`); ``replicas_unavailable``
    says why a framework with a cross-device batch norm has none the suite runs.
    """

    name: str
    description: str
    model: Model
    requires: tuple[str, ...]
    bindings: tuple[Binding, ...]
    versions: Callable[[], dict[str, str]] = field(default=dict)
    install_hint: str = ""
    compiler: str = ""
    """The framework's compiler its bindings run through under ``--compile`` (``"torch.compile"``,
    ``"jax.jit"``); empty where it has none the suite uses."""

    check: Callable[[], str | None] | None = None
    replicas: Callable[[int], tuple[Binding, ...]] | None = None
    replicas_unavailable: str = ""

    def compiled_bindings(self) -> tuple[Binding, ...]:
        """Every binding run through :attr:`compiler`, as an implementation of its own whose
        label ends in ``" (compiled)"`` (none where the adapter has no compiler)."""
        if not self.compiler:
            return ()
        return tuple(_compiled(b, self.compiler) for b in self.bindings)

    def unavailable(self) -> str | None:
        """Why the adapter cannot run here, or ``None`` when it can: a module of
        ``requires`` not installed, or what ``check`` (run once they are) says."""
        missing = [m for m in self.requires if not _installed(m)]
        if not missing:
            return None if self.check is None else self.check()
        return f"{', '.join(missing)} not installed" + (
            f" ({self.install_hint})" if self.install_hint else ""
        )

    def ops(self) -> tuple[str, ...]:
        """The ops this adapter implements, in binding order."""
        return tuple(dict.fromkeys(b.op for b in self.bindings))


def _compiled(binding: Binding, compiler: str) -> Binding:
    def run(prepared: Prepared, model: Model, backward: bool) -> Evaluation:
        with compiling():
            return binding.run(prepared, model, backward)

    notes = f"through {compiler} (its compile time is not counted)"
    return dataclasses.replace(
        binding,
        label=f"{binding.label} (compiled)",
        run=run,
        notes=f"{binding.notes}; {notes}" if binding.notes else notes,
    )


def _installed(module: str) -> bool:
    """Whether ``module`` is imported or can be (an imported module may have no spec:
    timm's packages, which the timm adapter registers without executing them)."""
    return module in sys.modules or importlib.util.find_spec(module) is not None


STATE = ("running_mean", "running_var")


def unit_axis(prepared: Prepared, name: str | None = None) -> int:
    """The unit axis (the case's ``out_axis``, non-negative) of the array ``name`` (default: the
    op's primary input), for the ops on weights and gradients."""
    array = prepared.sample.args[name or prepared.op.spec.primary]
    return prepared.sample.kwargs["out_axis"] % array.ndim


def evaluate_on(
    kind: ArrayKind,
    prepared: Prepared,
    fn: Function,
    *,
    backward: bool,
    param_dtype: Callable[[str], str] = same_dtype,
) -> Evaluation:
    """Run ``fn`` on ``prepared``'s arrays as ``kind`` arrays (and its backward by autograd).

    Affine parameters and state (running statistics, power-iteration vectors)
    are held in ``param_dtype`` of the case's dtype, every other array in the
    case's dtype.
    """
    op = prepared.op
    held = {*op.affine_args, *STATE, *op.state}
    inputs = {
        name: (value, param_dtype(prepared.dtype) if name in held else prepared.dtype)
        for name, value in prepared.sample.args.items()
        if name in op.arrays and value is not None
    }
    wrt = tuple(n for n in op.differentiable if n in inputs)
    return kind.evaluate(fn, inputs, wrt, prepared.dy if backward else None)
