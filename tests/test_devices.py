"""Every array an op creates is placed on its inputs' device.

torch's ``meta`` device computes shapes without values, and refuses to mix
with arrays on another device: an op that makes a constant (an identity, a
row of ones, a filled parameter) on the default device instead of its inputs'
fails here as it would on a GPU, without needing one.
"""

from __future__ import annotations

import numpy as np
import pytest

from normref.registry import REGISTRY, Sample
from tests.registry_cases import draw, output

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[torch]')")


def _on_meta(sample: Sample) -> Sample:
    def move(value):
        return torch.asarray(value).to("meta") if isinstance(value, np.ndarray) else value

    return Sample(
        {k: move(v) for k, v in sample.args.items()},
        {k: move(v) for k, v in sample.kwargs.items()},
    )


@pytest.mark.parametrize(
    "spec",
    [pytest.param(s, id=n) for n, s in REGISTRY.items() if s.capabilities.traceable_forward],
)
def test_outputs_and_gradients_stay_on_the_inputs_device(spec):
    """Every op whose forward reads no values (its capabilities; the others need them on the
    host): its outputs, and where its VJP reads none either, its gradients."""
    sample = _on_meta(draw(spec, 0))
    for name, value in spec.output_values(spec.call(sample)).items():
        assert value.device.type == "meta", name
    if spec.vjp is None or not spec.capabilities.traceable_vjp:
        return
    y = output(spec, sample)
    grads = spec.call_vjp(torch.ones(y.shape, dtype=y.dtype, device="meta"), sample)
    for name in spec.differentiable:
        if getattr(grads, name) is not None:
            assert getattr(grads, name).device.type == "meta", name
