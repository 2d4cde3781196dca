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
from tests.registry_cases import draw

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[torch]')")


def _on_meta(sample: Sample) -> Sample:
    def move(value):
        return torch.asarray(value).to("meta") if isinstance(value, np.ndarray) else value

    return Sample(
        {k: move(v) for k, v in sample.args.items()},
        {k: move(v) for k, v in sample.kwargs.items()},
    )


@pytest.mark.parametrize("spec", [pytest.param(s, id=n) for n, s in REGISTRY.items()])
def test_outputs_and_gradients_stay_on_the_inputs_device(spec):
    sample = _on_meta(draw(spec, 0))
    y = spec.call(sample)
    assert y.device.type == "meta"
    if "gradient_undefined_at_ties" in spec.properties:
        # this VJP reads the eigenvalue gaps on the host to refuse repeated eigenvalues,
        # which needs values (a GPU has them; the meta device has none)
        return
    grads = spec.call_vjp(torch.ones(y.shape, dtype=y.dtype, device="meta"), sample)
    for name in spec.differentiable:
        if getattr(grads, name) is not None:
            assert getattr(grads, name).device.type == "meta", name
