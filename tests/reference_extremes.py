"""Exact values of the operations at any magnitude, in mpmath: outputs, and VJPs by differences.

The float64 references of ``tests/reference*.py`` square float64 values, so they
overflow and underflow where normref must not: these evaluate each operation's
definition in mpmath (binary floats of :data:`PRECISION` bits and an exponent
without bounds) on its groups, found with the registry's partition of the
sample, and the gradient of its output ``y`` by central differences of that
definition at a step far below float64's resolution. They take the sample
without its affine parameters (the affine is a product and a sum per element,
exact at any scale), and the defaults of the forward's signature for the
arguments the sample leaves out.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import array_api_compat.numpy as xp
import mpmath
import numpy as np

from normref.conventions import get_convention
from normref.partition import unit_norm_axes
from normref.registry import Kind, OpSpec, Sample

PRECISION = 256
"""Bits of the mpmath floats: differences at a step of 2**-80 of the input's scale keep
about 90 bits of the derivative (truncation ~ step**2, rounding ~ 2**-PRECISION / step)."""

STEP = 2.0**-80
"""The step of the central differences, relative to the largest magnitude of the argument."""


def _mp(a: Any) -> np.ndarray:
    """A float array (or number) as an object array of mpmath floats (exactly)."""
    values = np.asarray(a, dtype=np.float64)
    out = np.empty(values.shape, dtype=object)
    for index in np.ndindex(*values.shape):
        out[index] = mpmath.mpf(float(values[index]))
    return out


def _argument(spec: OpSpec, sample: Sample, name: str) -> Any:
    if name in sample.args:
        return sample.args[name]
    if name in sample.kwargs:
        return sample.kwargs[name]
    return inspect.signature(spec.forward).parameters[name].default


def _divisor(v: Any, eps: Any, eps_mode: str) -> Any:
    if eps_mode == "add":
        return mpmath.sqrt(v + eps)
    if eps_mode == "max":
        return mpmath.sqrt(max(v, eps))
    return mpmath.sqrt(v) + eps


def _per_group(c: np.ndarray, transform: Callable[[list[Any]], list[Any]]) -> np.ndarray:
    """``transform`` of the ``M`` values of each ``(g, d)`` of canonical ``c``."""
    out = np.empty(c.shape, dtype=object)
    for g in range(c.shape[0]):
        for d in range(c.shape[2]):
            out[g, :, d] = transform(list(c[g, :, d]))
    return out


def _standardized(
    values: list[Any], eps: Any, eps_mode: str, correction: int, *, centre: bool, rms: bool
) -> list[Any]:
    n = len(values)
    mean = mpmath.fsum(values) / n
    if rms:
        s = _divisor(mpmath.fsum(v * v for v in values) / n, eps, eps_mode)
        return [v / s for v in values]
    v = mpmath.fsum((x - mean) ** 2 for x in values) / (n - correction)
    s = _divisor(v, eps, eps_mode)
    return [(x - mean) / s if centre else x / s for x in values]


def _grouped(spec: OpSpec, sample: Sample, x: np.ndarray, transform: Callable) -> np.ndarray:
    partition = spec.partition(sample)
    c = np.asarray(partition.to_canonical(xp, x, copy=True))
    return np.asarray(partition.from_canonical(xp, _per_group(c, transform)))


def _standardizing(spec: OpSpec, sample: Sample, x: np.ndarray, kind: Kind) -> np.ndarray:
    get = lambda name: _argument(spec, sample, name)
    eps = mpmath.mpf(get("eps")) if spec.accepts("eps") else 0
    eps_mode = get("eps_mode") if spec.accepts("eps_mode") else "add"
    correction = get("correction") if spec.accepts("correction") else 0

    def transform(values: list[Any]) -> list[Any]:
        if kind is Kind.CENTERING:
            mean = mpmath.fsum(values) / len(values)
            return [v - mean for v in values]
        return _standardized(
            values,
            eps,
            eps_mode,
            correction,
            centre=kind is not Kind.SCALING,
            rms=kind is Kind.RMS_SCALING,
        )

    return _grouped(spec, sample, x, transform)


def _scaled_ws(spec: OpSpec, sample: Sample, w: np.ndarray) -> np.ndarray:
    get = lambda name: _argument(spec, sample, name)
    eps, mode, gamma = mpmath.mpf(get("eps")), get("eps_mode"), mpmath.mpf(get("gamma"))

    def transform(values: list[Any]) -> list[Any]:
        n = len(values)
        mean = mpmath.fsum(values) / n
        var = mpmath.fsum((v - mean) ** 2 for v in values) / n
        if mode == "max_fan_in":
            s = mpmath.sqrt(max(n * var, eps))
        else:
            s = _divisor(var, eps, mode) * mpmath.sqrt(n)
        return [gamma * (v - mean) / s for v in values]

    return _grouped(spec, sample, w, transform)


def _weight_norm(spec: OpSpec, sample: Sample, v: np.ndarray) -> np.ndarray:
    eps = mpmath.mpf(_argument(spec, sample, "eps"))

    def transform(values: list[Any]) -> list[Any]:
        r = mpmath.sqrt(mpmath.fsum(a * a for a in values) + eps)
        return [a / r if r else mpmath.mpf(0) for a in values]

    return _grouped(spec, sample, v, transform)


def _matrix(w: np.ndarray, out_axis: int) -> np.ndarray:
    axis = out_axis % w.ndim
    moved = np.moveaxis(w, axis, 0)
    return moved.reshape(w.shape[axis], -1)


def _unmatrix(m: np.ndarray, shape: tuple[int, ...], out_axis: int) -> np.ndarray:
    axis = out_axis % len(shape)
    others = [shape[a] for a in range(len(shape)) if a != axis]
    return np.moveaxis(m.reshape(shape[axis], *others), 0, axis)


def _normalized(vector: np.ndarray, eps: Any, eps_mode: str) -> np.ndarray:
    norm = mpmath.sqrt(mpmath.fsum(a * a for a in vector))
    divisor = max(norm, eps) if eps_mode == "max" else mpmath.sqrt(norm * norm + eps)
    return np.array([a / divisor for a in vector], dtype=object)


def _spectral(sample: Sample, w: np.ndarray, u: np.ndarray, v: np.ndarray) -> dict[str, Any]:
    out_axis = sample.kwargs.get("out_axis", 0)
    m = _matrix(w, out_axis)
    eps = mpmath.mpf(sample.kwargs.get("eps", 1e-12))
    mode = sample.kwargs.get("eps_mode", "max")
    order = sample.kwargs.get("order", "v_first")
    for _ in range(sample.kwargs.get("n_power_iterations", 1)):
        if order == "v_first":
            v = _normalized(m.T.dot(u), eps, mode)
            u = _normalized(m.dot(v), eps, mode)
        else:
            u = _normalized(m.dot(v), eps, mode)
            v = _normalized(m.T.dot(u), eps, mode)
    sigma = mpmath.fsum(u * m.dot(v))
    y = _unmatrix(m / sigma if sigma else m, w.shape, out_axis)
    return {"y": y, "u": u, "v": v, "sigma": np.array(sigma, dtype=object)}


def _unit_norms(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """The Euclidean norm of each unit over ``axes``, broadcast to ``x``'s shape."""
    out = np.empty(x.shape, dtype=object)
    kept = [a for a in range(x.ndim) if a not in axes]
    for index in np.ndindex(*(x.shape[a] for a in kept)):
        where = [slice(None)] * x.ndim
        for a, i in zip(kept, index, strict=True):
            where[a] = i
        unit = x[tuple(where)]
        out[tuple(where)] = mpmath.sqrt(mpmath.fsum(a * a for a in np.ravel(unit)))
    return out


def _agc(spec: OpSpec, sample: Sample, g: np.ndarray, p: np.ndarray) -> np.ndarray:
    get = lambda name: _argument(spec, sample, name)
    axes = unit_norm_axes(g.shape, get("out_axis"), name="grad")
    clipping, eps = mpmath.mpf(get("clipping")), mpmath.mpf(get("eps"))
    n, q = _unit_norms(g, axes), _unit_norms(p, axes)
    out = np.empty(g.shape, dtype=object)
    for index in np.ndindex(*g.shape):
        m = clipping * max(q[index], eps)
        out[index] = g[index] * (m / max(n[index], m))
    return out


def _whitening_matrix(cov: Any, method: str, eps: Any, iterations: int) -> Any:
    d = cov.rows
    sigma = cov + eps * mpmath.eye(d)
    if method == "cholesky":
        return mpmath.inverse(mpmath.cholesky(sigma))
    if method == "iter_norm":
        trace = mpmath.fsum(sigma[i, i] for i in range(d))
        n, p = sigma / trace, mpmath.eye(d)
        for _ in range(iterations):
            p = 1.5 * p - 0.5 * (p * p * p) * n
        return p / mpmath.sqrt(trace)
    lam, u = mpmath.eigsy(cov)
    order = sorted(range(d), key=lambda i: -lam[i])
    if method == "zca":
        f = mpmath.diag([1 / mpmath.sqrt(lam[i] + eps) for i in range(d)])
        return u * f * u.T
    # decorrelate and pca: descending eigenvalues, each eigenvector's largest entry positive
    rows = []
    for i in order:
        column = [u[j, i] for j in range(d)]
        pivot = max(range(d), key=lambda j: (abs(column[j]), -j))
        sign = -1 if column[pivot] < 0 else 1
        factor = 1 if method == "decorrelate" else 1 / mpmath.sqrt(lam[i] + eps)
        rows.append([sign * factor * c for c in column])
    return mpmath.matrix(rows)


def _whitening(spec: OpSpec, sample: Sample, x: np.ndarray) -> np.ndarray:
    get = lambda name: _argument(spec, sample, name)
    method = spec.method or get("method")
    eps, correction = mpmath.mpf(get("eps")), get("correction")
    iterations = get("iterations") if spec.accepts("iterations") else 0
    partition = spec.partition(sample)
    c = np.asarray(partition.to_canonical(xp, x, copy=True))
    out = np.empty(c.shape, dtype=object)
    for g in range(c.shape[0]):
        samples = mpmath.matrix(c[g].tolist())
        m, d = samples.rows, samples.cols
        mean = [mpmath.fsum(samples[i, j] for i in range(m)) / m for j in range(d)]
        centred = mpmath.matrix([[samples[i, j] - mean[j] for j in range(d)] for i in range(m)])
        cov = (centred.T * centred) / (m - correction)
        w = _whitening_matrix(cov, method, eps, iterations)
        y = centred * w.T
        out[g] = np.array(y.tolist(), dtype=object)
    return np.asarray(partition.from_canonical(xp, out))


def _given_whitening(spec: OpSpec, sample: Sample, x: np.ndarray, mean: Any, w: Any) -> Any:
    partition = spec.partition(sample)
    c = np.asarray(partition.to_canonical(xp, x, copy=True))
    mean = np.reshape(mean, (partition.G, 1, partition.D))
    out = np.empty(c.shape, dtype=object)
    for g in range(c.shape[0]):
        centred = c[g] - mean[g]
        out[g] = centred.dot(w[g].T)
    return np.asarray(partition.from_canonical(xp, out))


def _param(spec: OpSpec, sample: Sample, p: np.ndarray, ndim: int) -> np.ndarray:
    """A per-channel parameter broadcast against x."""
    axes = spec.param_axes(sample)
    shape = [1] * ndim
    for a, size in zip(axes, p.shape, strict=True):
        shape[a] = size
    return p.reshape(shape)


def _centred_weight_norm(spec: OpSpec, sample: Sample, v: np.ndarray) -> np.ndarray:
    """``(v - mean) / sqrt(||v - mean||^2 + eps)`` per unit; 0 for a constant unit (eps 0)."""
    eps = mpmath.mpf(_argument(spec, sample, "eps"))

    def transform(values: list[Any]) -> list[Any]:
        mean = mpmath.fsum(values) / len(values)
        centred = [a - mean for a in values]
        r = mpmath.sqrt(mpmath.fsum(c * c for c in centred) + eps)
        return [c / r if r else mpmath.mpf(0) for c in centred]

    return _grouped(spec, sample, v, transform)


def _orthogonalized(spec: OpSpec, sample: Sample, v: np.ndarray) -> np.ndarray:
    """OWN's ``(Vc Vc^T + eps I)^(-1/2) Vc``, or ONI's Newton-Schulz steps on
    ``S / ||S||_F`` then ``B_T Vc / sqrt(||S||_F)``, per group of consecutive units (rows
    of the weight as a matrix of units by fan-in)."""
    get = lambda name: _argument(spec, sample, name)
    out_axis, eps = get("out_axis"), mpmath.mpf(get("eps"))
    m = _matrix(v, out_axis)
    units, fan = m.shape
    size = get("group_size") or units
    out = np.empty(m.shape, dtype=object)
    for first in range(0, units, size):
        rows = [list(m[first + i]) for i in range(size)]
        centred = mpmath.matrix([[a - mpmath.fsum(row) / fan for a in row] for row in rows])
        gram = centred * centred.T + eps * mpmath.eye(size)
        if spec.accepts("iterations"):
            frobenius = mpmath.sqrt(
                mpmath.fsum(gram[i, j] ** 2 for i in range(size) for j in range(size))
            )
            normalized, b = gram / frobenius, mpmath.eye(size)
            for _ in range(get("iterations")):
                b = 1.5 * b - 0.5 * (b * b * b) * normalized
            w = b * centred / mpmath.sqrt(frobenius)
        else:
            lam, u = mpmath.eigsy(gram)
            root = u * mpmath.diag([1 / mpmath.sqrt(lam[i]) for i in range(size)]) * u.T
            w = root * centred
        for i in range(size):
            out[first + i] = [w[i, j] for j in range(fan)]
    return _unmatrix(out, v.shape, out_axis)


def _channel_rows(x: np.ndarray, channel: int) -> np.ndarray:
    """``x`` as one row per index of the ``channel`` axis."""
    return np.moveaxis(x, channel, 0).reshape(x.shape[channel], -1)


def _mean_and_variance(values: list[Any], correction: int = 0) -> tuple[Any, Any]:
    n = len(values)
    mean = mpmath.fsum(values) / n
    return mean, mpmath.fsum((a - mean) ** 2 for a in values) / (n - correction)


def _renormalized(x: np.ndarray, get: Callable[[str], Any], held: tuple[Any, Any]) -> np.ndarray:
    """Batch renorm without its affine: ``(x - mu_B) / sigma_B * r + d`` per channel, with
    ``r`` and ``d`` clipped, or held at the given ``r`` and ``d`` (arrays per channel)."""
    channel = get("axis") % x.ndim
    eps = mpmath.mpf(get("eps"))
    r_max, d_max = mpmath.mpf(get("r_max")), mpmath.mpf(get("d_max"))
    running_mean, running_var = get("running_mean"), get("running_var")
    out = np.empty(x.shape, dtype=object)
    moved = np.moveaxis(out, channel, 0)
    for c, row in enumerate(_channel_rows(x, channel)):
        mean, var = _mean_and_variance(list(row))
        sigma_b, sigma = mpmath.sqrt(var + eps), mpmath.sqrt(running_var[c] + eps)
        r = min(max(sigma_b / sigma, 1 / r_max), r_max) if held[0] is None else held[0][c]
        d = (
            min(max((mean - running_mean[c]) / sigma, -d_max), d_max)
            if held[1] is None
            else held[1][c]
        )
        values = [(a - mean) / sigma_b * r + d for a in row]
        moved[c] = np.array(values, dtype=object).reshape(moved.shape[1:])
    return out


def renormalization_corrections(
    spec: OpSpec, sample: Sample, arrays: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Batch renorm's ``r`` and ``d`` per channel at ``arrays``, as ``{"r": ..., "d": ...}``,
    to hold constant in its differences (its VJP holds them constant)."""
    get = lambda name: arrays[name] if name in arrays else _argument(spec, sample, name)
    x = get("x")
    channel = get("axis") % x.ndim
    eps = mpmath.mpf(get("eps"))
    r_max, d_max = mpmath.mpf(get("r_max")), mpmath.mpf(get("d_max"))
    rs, ds = [], []
    for c, row in enumerate(_channel_rows(x, channel)):
        mean, var = _mean_and_variance(list(row))
        sigma = mpmath.sqrt(get("running_var")[c] + eps)
        rs.append(min(max(mpmath.sqrt(var + eps) / sigma, 1 / r_max), r_max))
        ds.append(min(max((mean - get("running_mean")[c]) / sigma, -d_max), d_max))
    return {"r": np.array(rs, dtype=object), "d": np.array(ds, dtype=object)}


def _softmax(logits: np.ndarray) -> list[Any]:
    exps = [mpmath.exp(a) for a in logits]
    total = mpmath.fsum(exps)
    return [e / total for e in exps]


def _switchable(spec: OpSpec, sample: Sample, x: np.ndarray, get: Callable) -> np.ndarray:
    """``(x - mu) / sqrt(v + eps)`` with ``mu``, ``v`` the softmax mixtures of the biased
    instance, layer and batch statistics of each element."""
    channel = get("axis") % x.ndim
    eps = mpmath.mpf(get("eps"))
    a, b = _softmax(get("mean_logits")), _softmax(get("var_logits"))
    keys = (lambda i: (i[0], i[channel]), lambda i: i[0], lambda i: i[channel])
    stats = []
    for key in keys:
        groups: dict[Any, list[Any]] = {}
        for index in np.ndindex(*x.shape):
            groups.setdefault(key(index), []).append(x[index])
        stats.append({k: _mean_and_variance(v) for k, v in groups.items()})
    out = np.empty(x.shape, dtype=object)
    for index in np.ndindex(*x.shape):
        parts = [s[key(index)] for s, key in zip(stats, keys, strict=True)]
        mean = mpmath.fsum(w * p[0] for w, p in zip(a, parts, strict=True))
        var = mpmath.fsum(w * p[1] for w, p in zip(b, parts, strict=True))
        out[index] = (x[index] - mean) / mpmath.sqrt(var + eps)
    return out


def _adaptive_instance(x: np.ndarray, get: Callable) -> np.ndarray:
    """``sqrt(var(s) + eps) (x - mean(x)) / sqrt(var(x) + eps) + mean(s)`` per instance, each
    input's statistics over its own spatial axes, with the variances' ``correction``."""
    style, channel = get("style"), get("axis") % x.ndim
    eps, correction = mpmath.mpf(get("eps")), get("correction")
    out = np.empty(x.shape, dtype=object)
    for n in range(x.shape[0]):
        for c in range(x.shape[channel]):
            index = [slice(None)] * x.ndim
            index[0], index[channel] = n, c
            block = x[tuple(index)]
            mean_x, var_x = _mean_and_variance(list(np.ravel(block)), correction)
            mean_s, var_s = _mean_and_variance(list(np.ravel(style[tuple(index)])), correction)
            factor = mpmath.sqrt(var_s + eps) / mpmath.sqrt(var_x + eps)
            out[tuple(index)] = np.array(
                [factor * (a - mean_x) + mean_s for a in np.ravel(block)], dtype=object
            ).reshape(block.shape)
    return out


def _local_response(x: np.ndarray, get: Callable) -> np.ndarray:
    """``x / (k + alpha / n sum x_j^2)^beta`` over each channel's window (zero-padded)."""
    channel, size = get("axis") % x.ndim, get("size")
    alpha, beta, k = mpmath.mpf(get("alpha")), mpmath.mpf(get("beta")), mpmath.mpf(get("k"))
    before = size // 2 if get("window") == "torch" else (size - 1) // 2
    after = size - 1 - before
    out = np.empty(x.shape, dtype=object)
    for index in np.ndindex(*x.shape):
        c = index[channel]
        window = [
            x[tuple(j if a == channel else i for a, i in enumerate(index))]
            for j in range(max(c - before, 0), min(c + after, x.shape[channel] - 1) + 1)
        ]
        out[index] = x[index] / (k + alpha / size * mpmath.fsum(w * w for w in window)) ** beta
    return out


def outputs(spec: OpSpec, sample: Sample, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The exact outputs of ``spec`` on ``sample`` whose array arguments are replaced by the
    mpmath ``arrays`` (the sample without its affine parameters)."""
    get = lambda name: arrays[name] if name in arrays else _argument(spec, sample, name)
    x = get(spec.primary)
    kind = spec.kind
    if kind in (Kind.CENTERING, Kind.STANDARDIZING, Kind.SCALING, Kind.RMS_SCALING):
        found = {"y": _standardizing(spec, sample, x, kind)}
        if spec.state:  # batch norm's training step: the running statistics too
            found.update(_running(spec, sample, get))
        return found
    if kind is Kind.SCALED_STANDARDIZING:
        return {"y": _scaled_ws(spec, sample, x)}
    if kind is Kind.WEIGHT_NORMALIZING:
        return {"y": _weight_norm(spec, sample, x)}
    if kind in (Kind.SPECTRAL_NORMALIZING, Kind.SPECTRAL_STEP):
        found = _spectral(sample, x, get("u"), get("v"))
        return {name: found[name] for name in spec.outputs}
    if kind is Kind.ADAPTIVE_CLIPPING:
        return {"y": _agc(spec, sample, x, get("param"))}
    if kind is Kind.UNIT_NORM:
        return {"y": _unit_norms(x, unit_norm_axes(x.shape, get("out_axis"), name="x"))}
    if kind is Kind.GLOBAL_CLIPPING:
        grads = [x, get("bias_grad")]
        norm = mpmath.sqrt(mpmath.fsum(a * a for g in grads for a in np.ravel(g)))
        c = mpmath.mpf(get("max_norm"))
        factor = c / max(norm + mpmath.mpf(get("eps")), c)
        return dict(zip(spec.outputs, (g * factor for g in grads), strict=True))
    if kind is Kind.GIVEN_STATISTICS:
        mean, var = get("running_mean"), get("running_var")
        eps, mode = mpmath.mpf(get("eps")), get("eps_mode")
        s = np.array([_divisor(v, eps, mode) for v in var], dtype=object)
        return {"y": (x - _param(spec, sample, mean, x.ndim)) / _param(spec, sample, s, x.ndim)}
    if kind is Kind.RESIDUAL:
        return {"y": x + get("alpha") * get("branch_out")}
    if kind is Kind.WHITENING:
        return {"y": _whitening(spec, sample, x)}
    if kind is Kind.CENTRED_WEIGHT_NORMALIZING:
        return {"y": _centred_weight_norm(spec, sample, x)}
    if kind is Kind.ORTHOGONALIZING:
        return {"y": _orthogonalized(spec, sample, x)}
    if kind is Kind.RENORMALIZING:
        found = {"y": _renormalized(x, get, (arrays.get("r"), arrays.get("d")))}
        if spec.state:  # the training step: the running statistics too
            found.update(_running(spec, sample, get))
        return found
    if kind is Kind.SWITCHABLE:
        return {"y": _switchable(spec, sample, x, get)}
    if kind is Kind.ADAPTIVE_INSTANCE:
        return {"y": _adaptive_instance(x, get)}
    if kind is Kind.LOCAL_RESPONSE:
        return {"y": _local_response(x, get)}
    if kind is Kind.GIVEN_WHITENING:
        return {
            "y": _given_whitening(spec, sample, x, get("running_mean"), get("running_whitening"))
        }
    msg = f"no exact reference of the kind {kind}"
    raise TypeError(msg)


def _running(spec: OpSpec, sample: Sample, get: Callable[[str], Any]) -> dict[str, Any]:
    x = get("x")
    channel = get("axis") % x.ndim
    reduced = tuple(a for a in range(x.ndim) if a != channel)
    convention = get_convention(get("convention"))
    w = convention.batch_weight(get("momentum"))
    n = math.prod(x.shape[a] for a in reduced)
    moved = np.moveaxis(x, channel, 0).reshape(x.shape[channel], -1)
    means = [mpmath.fsum(row) / n for row in moved]
    variances = [
        mpmath.fsum((a - m) ** 2 for a in row) / (n - convention.running_var_correction)
        for row, m in zip(moved, means, strict=True)
    ]
    old_mean, old_var = get("running_mean"), get("running_var")
    return {
        "running_mean": np.array(
            [(1 - w) * o + w * m for o, m in zip(old_mean, means, strict=True)], dtype=object
        ),
        "running_var": np.array(
            [(1 - w) * o + w * v for o, v in zip(old_var, variances, strict=True)], dtype=object
        ),
    }


def gradients(
    spec: OpSpec, sample: Sample, arrays: dict[str, np.ndarray], dy: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The VJP of ``y`` with cotangent ``dy`` for every differentiable array of ``arrays``, by
    central differences of :func:`outputs` (with the new ``u``, ``v`` held constant where the
    operation's VJP holds its state constant), each with the scale of its terms,
    :math:`|J|^\top |\bar y|`, which a gradient small by cancellation is measured against."""
    if "state_held_constant" in spec.properties:
        state = outputs(spec, sample, arrays)
        arrays = {**arrays, "u": state["u"], "v": state["v"]}
        sample = sample.replace(n_power_iterations=0)
    if "corrections_held_constant" in spec.properties:
        arrays = {**arrays, **renormalization_corrections(spec, sample, arrays)}
    weights = np.ravel(_mp(dy))
    found = {}
    for name in spec.differentiable:
        if name not in arrays:
            continue
        base = arrays[name]
        step = STEP * max(abs(a) for a in np.ravel(base))
        grad = np.empty(np.shape(base), dtype=object)
        scale = np.empty(np.shape(base), dtype=object)
        for index in np.ndindex(*np.shape(base)):
            ys = []
            for sign in (1, -1):
                moved = base.copy()
                moved[index] = moved[index] + sign * step
                ys.append(np.ravel(outputs(spec, sample, {**arrays, name: moved})["y"]))
            column = (ys[0] - ys[1]) / (2 * step)
            grad[index] = mpmath.fsum(column * weights)
            scale[index] = mpmath.fsum(abs(c * w) for c, w in zip(column, weights, strict=True))
        found[name] = (grad, scale)
    return found


def as_float(a: Any) -> np.ndarray:
    """An object array of mpmath floats rounded to float64 (to nearest, subnormals included)."""
    values = np.asarray(a, dtype=object)
    out = np.empty(values.shape)
    for index in np.ndindex(*values.shape):
        out[index] = float(values[index])
    return out
