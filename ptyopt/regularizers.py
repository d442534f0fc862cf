"""Cost regularizers for the gradient engine: pure functions of (object, probe) → scalar,
found by name; a plan weights them as ``regularizers: {name: {weight, start, stop, every}}``
with the weight a number or a schedule. Costs are means over pixels, so a weight means
the same whatever the object size; they are added to the group's mean per-position
data loss [counts] (the same scale for every group size).

Conventions shared by all costs:

- object (S, H, W) complex transmission, vacuum = 1; probe (M, N, N) complex, Σ|ψ|² in
  counts (probe costs are normalised by the probe power, so they do not depend on dose);
- finite differences are forward differences with a zero difference past the last
  pixel (Neumann boundary, no wrap-around), so every pixel has a gradient and a mean
  over pixels divides by the object's size;
- |z| in L1 and TV costs is smoothed, |z|_ε = sqrt(|z|² + ε²) − ε with ε = 1e-4: it is 0
  at z = 0 with a zero (finite) gradient there and within ε of |z| elsewhere, so every
  cost is differentiable and finite at a uniform object of ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
from jax import lax

from ptyopt.errors import ConfigError
from ptyopt.gating import Gate, split_gate
from ptyopt.schedules import Schedule, make_schedule

Cost = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]

SMOOTHING = 1e-4
_TINY = 1e-30
LATERAL = (-2, -1)
DEPTH = (0,)


def _squared(z: jnp.ndarray) -> jnp.ndarray:
    """|z|², smooth everywhere (no square root)."""
    return jnp.real(z) ** 2 + jnp.imag(z) ** 2 if jnp.iscomplexobj(z) else z**2


def _smooth_abs(squared: jnp.ndarray) -> jnp.ndarray:
    """sqrt(|z|² + ε²) − ε from |z|²: ≈ |z|, 0 with a finite gradient at z = 0."""
    return jnp.sqrt(squared + SMOOTHING**2) - SMOOTHING


def _differences(x: jnp.ndarray, axes: tuple[int, ...]) -> list[jnp.ndarray]:
    """Forward differences x[i+1] − x[i] along each axis, zero at the last index
    (Neumann boundary); each has the shape of ``x``."""
    result = []
    for axis in axes:
        pad = [(0, 0)] * x.ndim
        pad[axis] = (0, 1)
        result.append(jnp.pad(jnp.diff(x, axis=axis), pad))
    return result


def _tikhonov(x: jnp.ndarray, axes: tuple[int, ...]) -> jnp.ndarray:
    """Mean over pixels of Σ_axes |∂x|²."""
    return jnp.mean(sum(_squared(d) for d in _differences(x, axes)))


def _tv(x: jnp.ndarray, axes: tuple[int, ...]) -> jnp.ndarray:
    """Mean over pixels of the isotropic, smoothed |∇x| = (Σ_axes |∂x|²)^½."""
    return jnp.mean(_smooth_abs(sum(_squared(d) for d in _differences(x, axes))))


def _object_l1(obj: jnp.ndarray, probe: jnp.ndarray) -> jnp.ndarray:
    """Mean |O − 1| (smoothed): pulls the object towards vacuum, favouring sparsity.
    Scale: an object 1 + δ on a fraction f of its pixels costs f·|δ|."""
    return jnp.mean(_smooth_abs(_squared(obj - 1)))


def _object_l2(obj: jnp.ndarray, probe: jnp.ndarray) -> jnp.ndarray:
    """Mean |O − 1|²: pulls the object towards vacuum. Scale: 1 + δ everywhere costs |δ|²."""
    return jnp.mean(_squared(obj - 1))


def _object_phase_l1(obj: jnp.ndarray, probe: jnp.ndarray) -> jnp.ndarray:
    """Mean |arg O| [rad] (smoothed): sparsity of the phase. Scale: a uniform phase φ
    (|φ| < π) costs |φ|; arg is atan2, smooth at O = 1."""
    return jnp.mean(_smooth_abs(jnp.angle(obj) ** 2))


def _object_power_spectrum_l1(obj: jnp.ndarray, probe: jnp.ndarray) -> jnp.ndarray:
    """Mean |F[O − 1]| (smoothed) of each slice's orthonormal 2D FFT: sparsity of the
    spectrum, favouring periodic objects. The orthonormal FFT keeps white noise at the
    scale of mean |O − 1|; a plane wave δ·exp(2πi k·r) costs |δ|/sqrt(H·W)."""
    spectrum = jnp.fft.fft2(obj - 1, axes=LATERAL, norm="ortho")
    return jnp.mean(_smooth_abs(_squared(spectrum)))


def _object_tikhonov(obj: jnp.ndarray, probe: jnp.ndarray) -> jnp.ndarray:
    """Mean over pixels of |∂_y O|² + |∂_x O|² (lateral smoothness). Scale: a phase ramp
    exp(i·a·x) costs 4·sin²(a/2)·(W − 1)/W."""
    return _tikhonov(obj, LATERAL)


def _object_tv(obj: jnp.ndarray, probe: jnp.ndarray) -> jnp.ndarray:
    """Mean over pixels of the isotropic total variation sqrt(|∂_y O|² + |∂_x O|²)
    (smoothed). Scale: a step of height h along a straight edge of length L pixels in
    each slice costs h·L/(H·W)."""
    return _tv(obj, LATERAL)


def _layer_tikhonov(obj: jnp.ndarray, probe: jnp.ndarray) -> jnp.ndarray:
    """Mean over pixels of |O_{s+1} − O_s|² (depth smoothness; 0 for one slice). Scale:
    slices differing by c in turn cost |c|²·(S − 1)/S."""
    return _tikhonov(obj, DEPTH)


def _layer_tv(obj: jnp.ndarray, probe: jnp.ndarray) -> jnp.ndarray:
    """Mean over pixels of |O_{s+1} − O_s| (smoothed; total variation along z, allowing
    sudden changes in depth). Scale: one step of height h between two slices costs h/S."""
    return _tv(obj, DEPTH)


def _probe_phase_tikhonov(obj: jnp.ndarray, probe: jnp.ndarray) -> jnp.ndarray:
    """Intensity-weighted mean squared phase difference between neighbouring probe
    pixels [rad²], summed over the two lateral axes: Σ_r w_r·Δφ_r² / Σ_r w_r with
    Δφ = arg(conj(ψ_r)·ψ_{r+1}) (no phase unwrapping needed) and w = |ψ_r|·|ψ_{r+1}|, so
    dark pixels, whose phase is meaningless, do not count (the gradient stays bounded
    there) and the cost does not depend on dose. Scale: a probe of any amplitude with
    phase a·x + b·y (|a|, |b| < π) costs a² + b²; a flat probe costs 0."""
    total = 0.0
    for axis in LATERAL:
        n = probe.shape[axis]
        product = jnp.conj(lax.slice_in_dim(probe, 0, n - 1, axis=axis)) * lax.slice_in_dim(
            probe, 1, n, axis=axis
        )
        dark = _squared(product) == 0
        safe = jnp.where(dark, 1.0, product)  # arg and |·| have no gradient at 0
        weight = jnp.where(dark, 0.0, jnp.sqrt(_squared(safe)))
        total = total + jnp.sum(weight * jnp.angle(safe) ** 2) / jnp.maximum(jnp.sum(weight), _TINY)
    return total


def _probe_power(probe: jnp.ndarray) -> jnp.ndarray:
    """Σ|ψ|² over modes and pixels, bounded away from 0."""
    return jnp.maximum(jnp.sum(_squared(probe)), _TINY)


def _normalised_spectrum(probe: jnp.ndarray) -> jnp.ndarray:
    """Reciprocal-space probe (orthonormal FFT, k = 0 at the centre so that the finite
    differences join neighbouring frequencies and stop at ±Nyquist) scaled to a mean
    |Ψ|² of 1 over modes and pixels, so costs on it do not depend on dose or window size."""
    spectrum = jnp.fft.fftshift(jnp.fft.fft2(probe, norm="ortho"), axes=LATERAL)
    return spectrum * jnp.sqrt(probe.size / _probe_power(probe))


def _probe_recip_tikhonov(obj: jnp.ndarray, probe: jnp.ndarray) -> jnp.ndarray:
    """Mean over pixels of |∂_ky Ψ|² + |∂_kx Ψ|² of the normalised reciprocal-space
    probe (mean |Ψ|² = 1): smoothness of the aperture and aberration phase. Scale: a
    probe shifted by s pixels, Ψ ∝ exp(−2πi·s·kx/N), costs 4·sin²(πs/N)·(N − 1)/N."""
    return _tikhonov(_normalised_spectrum(probe), LATERAL)


def _probe_recip_tv(obj: jnp.ndarray, probe: jnp.ndarray) -> jnp.ndarray:
    """Mean over pixels of the isotropic total variation of the normalised
    reciprocal-space probe (mean |Ψ|² = 1). Scale: the shifted probe above costs
    2·|sin(πs/N)|·(N − 1)/N."""
    return _tv(_normalised_spectrum(probe), LATERAL)


REGULARIZERS: dict[str, Cost] = {
    "object_l1": _object_l1,
    "object_l2": _object_l2,
    "object_phase_l1": _object_phase_l1,
    "object_power_spectrum_l1": _object_power_spectrum_l1,
    "object_tikhonov": _object_tikhonov,
    "object_tv": _object_tv,
    "layer_tikhonov": _layer_tikhonov,
    "layer_tv": _layer_tv,
    "probe_phase_tikhonov": _probe_phase_tikhonov,
    "probe_recip_tikhonov": _probe_recip_tikhonov,
    "probe_recip_tv": _probe_recip_tv,
}


@dataclass(frozen=True)
class ActiveRegularizer:
    name: str
    gate: Gate
    weight: Schedule

    def weight_at(self, iteration: int) -> float:
        """The weight at ``iteration``, 0 while the gate is closed."""
        return self.weight(iteration) if self.gate.active(iteration) else 0.0


def parse_regularizers(
    settings: Mapping[str, Any], key: str, iterations: int
) -> list[ActiveRegularizer]:
    """Validated regularizers from ``{name: {weight, start, stop, every}}``; raises
    :class:`ConfigError` naming the key for an unknown name or parameter, a missing or
    negative weight, or a bad start/stop/every."""
    parsed = []
    for name, values in settings.items():
        where = f"{key}.{name}"
        if name not in REGULARIZERS:
            raise ConfigError(f"{where}: unknown regularizer; choose from {sorted(REGULARIZERS)}")
        if values is not None and not isinstance(values, Mapping):
            raise ConfigError(
                f"{where}: expected a mapping {{weight, start, stop, every}}, got {values!r}"
            )
        gate, params = split_gate(values or {}, where)
        unknown = set(params) - {"weight"}
        if unknown:
            raise ConfigError(
                f"{where}: unknown parameter(s) {sorted(unknown)}; "
                "allowed: weight, start, stop, every"
            )
        if "weight" not in params:
            raise ConfigError(f"{where}.weight: missing; a number or a schedule")
        weight = make_schedule(params["weight"], f"{where}.weight", iterations)
        lowest = min(weight(i) for i in range(iterations))
        if lowest < 0:
            raise ConfigError(f"{where}.weight: must be >= 0 at every iteration, got {lowest:g}")
        parsed.append(ActiveRegularizer(name, gate, weight))
    return parsed
