"""Constraints applied to the state after each iteration, for all engines.

Each constraint is a pure function ``(state, measurements, params) -> state`` found by
name; a plan enables it as ``constraints: {name: {start, stop, every, **params}}``
(``{}`` or ``null`` for the defaults). Parameters are numbers (``value`` of
``fixed_probe_intensity`` may be null). Constraints run on the host between
iterations; their array work is jitted, with parameters passed as arrays (scalars,
masks, matrices), and the masks are built by compiled builders once per grid.

Object constraints that filter act on the log-transmission log O = log|O| + i·arg O
(log-amplitude and phase, the quantities that add up through the slices); the phase of
each slice is taken in (−π, π], which is safe while no slice shifts the phase by π.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ptyopt import physics
from ptyopt.errors import ConfigError
from ptyopt.gating import Gate, split_gate
from ptyopt.initial import (
    Measurements,
    ReconState,
    log_transmission,
    mix_slices,
    orthogonalize_modes,
)

ConstraintFn = Callable[[ReconState, Measurements, Mapping[str, float]], ReconState]
Check = Callable[[Mapping[str, Any]], "tuple[str, str] | None"]


@dataclass(frozen=True)
class ConstraintSpec:
    """A constraint: its function, its parameters' defaults and an optional check of
    the parameters' values returning ``(parameter, problem)`` or ``None``."""

    apply: ConstraintFn
    defaults: Mapping[str, Any]
    check: Check | None = None


# the masks' builders, compiled once per grid (JAX op by op is slow on the host)
_soft_aperture = jax.jit(
    physics.soft_aperture, static_argnames=("shape", "sampling_A", "energy_eV", "dtype")
)
_bandlimit_mask = jax.jit(physics.bandlimit_mask, static_argnames=("shape", "sampling_A", "dtype"))


# ----------------------------------------------------------------------------- object


@jax.jit
def _clamp_amplitude(obj, low, high):
    amplitude = jnp.clip(jnp.abs(obj), low, high)
    return (amplitude * jnp.exp(1j * jnp.angle(obj))).astype(obj.dtype)


def _amplitude_clamp(
    state: ReconState, measurements: Measurements, params: Mapping[str, float]
) -> ReconState:
    """Object amplitude clipped to [min, max], phase kept."""
    return replace(state, object=_clamp_amplitude(state.object, params["min"], params["max"]))


def depth_blur_matrix(n_slices: int, sigma: float) -> np.ndarray:
    """(S, S) matrix of a Gaussian blur along z with std ``sigma`` [slices], kernel cut
    at ±ceil(4σ) and normalised, with mirror boundaries (…, x1, x0 | x0, x1, … |
    …, x_{S−1}): no wrap-around from one surface to the other. The matrix is symmetric
    and doubly stochastic, so a uniform object stays uniform and the sum over slices
    (the projected log-transmission) is conserved."""
    radius = int(np.ceil(4 * sigma))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    matrix = np.zeros((n_slices, n_slices))
    for i in range(n_slices):
        folded = np.mod(i + offsets, 2 * n_slices)
        source = np.where(folded < n_slices, folded, 2 * n_slices - 1 - folded)
        np.add.at(matrix[i], source, kernel)
    return matrix


def _layer_blur(
    state: ReconState, measurements: Measurements, params: Mapping[str, float]
) -> ReconState:
    """Gaussian blur along z of the log-transmission with std ``sigma`` [slices]
    (mirror boundaries, see :func:`depth_blur_matrix`): couples neighbouring slices,
    keeps the projected phase and log-amplitude; one slice is left unchanged."""
    n_slices = state.object.shape[0]
    if n_slices == 1:
        return state
    weights = jnp.asarray(
        depth_blur_matrix(n_slices, float(params["sigma"])), jnp.real(state.object).dtype
    )
    return replace(state, object=mix_slices(state.object, weights))


@jax.jit
def _filter_log(obj, mask):
    spectrum = jnp.fft.fft2(log_transmission(obj)) * mask
    return jnp.exp(jnp.fft.ifft2(spectrum)).astype(obj.dtype)


def _object_low_pass(
    state: ReconState, measurements: Measurements, params: Mapping[str, float]
) -> ReconState:
    """Lateral Fourier low pass of each slice's log-transmission: 1 below ``fraction``
    of the Nyquist frequency, 0 above, with a raised-cosine edge ``taper``·(2·Nyquist)
    wide (:func:`ptyopt.physics.bandlimit_mask`; the defaults are the forward model's
    anti-aliasing band limit)."""
    real = jnp.real(state.object).dtype
    mask = _bandlimit_mask(
        shape=state.object.shape[-2:],
        sampling_A=1.0,
        fraction=float(params["fraction"]),
        taper=float(params["taper"]),
        dtype=real,
    )
    return replace(state, object=_filter_log(state.object, mask))


def _ls_weights(n: int, dtype) -> jnp.ndarray:
    """Weights c_i of the increments Δ_i = f_{i+1} − f_i giving the least-squares slope
    of f over n points: slope = Σ c_i Δ_i, c_i = (i + 1)(n − 1 − i) / (2 Σ (x − x̄)²)."""
    i = np.arange(n - 1)
    x = np.arange(n)
    return jnp.asarray((i + 1) * (n - 1 - i) / (2 * np.sum((x - x.mean()) ** 2)), dtype)


@jax.jit
def _fit_phase_plane(region, weights_y, weights_x):
    """Least-squares plane offset + slope_y·y + slope_x·x through the summed phase of
    ``region`` (S, h, w), coordinates from the region's corner. The slopes come from
    the phase increments between neighbouring pixels, each wrapped to (−π, π], so
    no unwrapping is needed; the offset is the circular mean of the rest."""
    d_y = jnp.sum(jnp.angle(jnp.conj(region[:, :-1, :]) * region[:, 1:, :]), axis=0)
    d_x = jnp.sum(jnp.angle(jnp.conj(region[:, :, :-1]) * region[:, :, 1:]), axis=0)
    slope_y = jnp.mean(weights_y @ d_y)
    slope_x = jnp.mean(d_x @ weights_x)
    y = jnp.arange(region.shape[1], dtype=weights_y.dtype)[:, None]
    x = jnp.arange(region.shape[2], dtype=weights_x.dtype)[None, :]
    unit = jnp.prod(region / jnp.maximum(jnp.abs(region), 1e-30), axis=0)
    offset = jnp.angle(jnp.sum(unit * jnp.exp(-1j * (slope_y * y + slope_x * x))))
    return offset, slope_y, slope_x


@jax.jit
def _remove_plane(obj, offset, slope_y, slope_x, y0, x0):
    real = jnp.real(obj).dtype
    y = jnp.arange(obj.shape[1], dtype=real)[:, None] - y0
    x = jnp.arange(obj.shape[2], dtype=real)[None, :] - x0
    plane = offset + slope_y * y + slope_x * x
    return obj.at[0].multiply(jnp.exp(-1j * plane).astype(obj.dtype))


def _phase_ramp_removal(
    state: ReconState, measurements: Measurements, params: Mapping[str, float]
) -> ReconState:
    """Fit a plane (constant and linear ramp) to the object's phase summed over slices,
    by least squares over the scanned field of view, and remove it from the whole
    first slice: the ramp is the gauge freedom of a shifted diffraction pattern (and
    the constant that of the global phase), not structure."""
    rows, cols = measurements.geometry.field_of_view()
    shape = state.object.shape[-2:]
    rows = slice(max(rows.start, 0), min(rows.stop, shape[0]))
    cols = slice(max(cols.start, 0), min(cols.stop, shape[1]))
    if rows.stop - rows.start < 2 or cols.stop - cols.start < 2:
        return state
    real = jnp.real(state.object).dtype
    region = state.object[:, rows, cols]
    plane = _fit_phase_plane(
        region, _ls_weights(region.shape[1], real), _ls_weights(region.shape[2], real)
    )
    return replace(state, object=_remove_plane(state.object, *plane, rows.start, cols.start))


# ------------------------------------------------------------------------------ probe


@jax.jit
def _mask_spectrum(probe, mask):
    return jnp.fft.ifft2(jnp.fft.fft2(probe) * mask).astype(probe.dtype)


def _probe_support(
    state: ReconState, measurements: Measurements, params: Mapping[str, float]
) -> ReconState:
    """Reciprocal-space probe of every mode kept up to ``scale``·semiangle plus half a
    detector pixel (where the nominal soft aperture, :func:`ptyopt.physics.soft_aperture`,
    ends) and set to 0 beyond one more pixel, with a linear edge between. The edge lies
    outside the nominal aperture so that the repeated soft mask leaves a nominal probe
    unchanged instead of eroding its edge."""
    real = jnp.real(state.probe).dtype
    window = state.probe.shape[-2:]
    pitch_mrad = (
        physics.wavelength_A(measurements.energy_eV)
        / (min(window) * measurements.pixel_size_A)
        * 1e3
    )
    semiangle = float(params["scale"]) * measurements.semiangle_mrad + pitch_mrad
    mask = _soft_aperture(
        shape=window,
        sampling_A=float(measurements.pixel_size_A),
        energy_eV=float(measurements.energy_eV),
        semiangle_mrad=semiangle,
        dtype=real,
    )
    return replace(state, probe=_mask_spectrum(state.probe, mask))


def _orthogonalize_probe_modes(
    state: ReconState, measurements: Measurements, params: Mapping[str, float]
) -> ReconState:
    """Probe modes made orthogonal (SVD), strongest first; Σ_m |ψ_m|² kept."""
    return replace(state, probe=orthogonalize_modes(state.probe))


@jax.jit
def _rescale_power(probe, power):
    return (probe * jnp.sqrt(power / jnp.sum(jnp.abs(probe) ** 2))).astype(probe.dtype)


def _fixed_probe_intensity(
    state: ReconState, measurements: Measurements, params: Mapping[str, float | None]
) -> ReconState:
    """Probe of all modes rescaled to the total power Σ_m Σ|ψ_m|² = ``value`` [counts]
    (null: the mean pattern intensity, the initial state's power): removes the scale
    ambiguity between probe and object amplitude."""
    value = params["value"]
    real = jnp.real(state.probe).dtype
    power = measurements.mean_pattern_counts if value is None else jnp.asarray(value, real)
    return replace(state, probe=_rescale_power(state.probe, power))


# ----------------------------------------------------------------------- registry


def _bounds(**limits: tuple[float | None, float | None, bool]) -> Check:
    """Check that each named parameter lies above ``low`` (strictly where the flag is
    False, inclusively where True) and at most ``high``; None means unbounded."""

    def check(params: Mapping[str, Any]) -> tuple[str, str] | None:
        for name, (low, high, low_inclusive) in limits.items():
            value = params[name]
            if value is None:
                continue
            if low is not None and (value < low if low_inclusive else value <= low):
                return name, f"must be {'>=' if low_inclusive else '>'} {low}, got {value!r}"
            if high is not None and value > high:
                return name, f"must be <= {high}, got {value!r}"
        return None

    return check


def _check_clamp(params: Mapping[str, Any]) -> tuple[str, str] | None:
    if params["min"] < 0:
        return "min", f"must be >= 0, got {params['min']!r}"
    if params["max"] < params["min"]:
        return "max", f"must be >= min ({params['min']!r}), got {params['max']!r}"
    return None


CONSTRAINTS: dict[str, ConstraintSpec] = {
    "amplitude_clamp": ConstraintSpec(_amplitude_clamp, {"min": 0.0, "max": 1.0}, _check_clamp),
    "probe_support": ConstraintSpec(
        _probe_support, {"scale": 1.0}, _bounds(scale=(0.0, None, False))
    ),
    "layer_blur": ConstraintSpec(_layer_blur, {"sigma": 1.0}, _bounds(sigma=(0.0, None, False))),
    "object_low_pass": ConstraintSpec(
        _object_low_pass,
        {"fraction": 2 / 3, "taper": 0.01},
        _bounds(fraction=(0.0, None, False), taper=(0.0, 0.5, True)),
    ),
    "phase_ramp_removal": ConstraintSpec(_phase_ramp_removal, {}),
    "orthogonalize_probe_modes": ConstraintSpec(_orthogonalize_probe_modes, {}),
    "fixed_probe_intensity": ConstraintSpec(
        _fixed_probe_intensity, {"value": None}, _bounds(value=(0.0, None, False))
    ),
}


@dataclass(frozen=True)
class ActiveConstraint:
    name: str
    gate: Gate
    params: dict[str, Any]


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))
    )


def parse_constraints(settings: Mapping[str, Any], key: str) -> list[ActiveConstraint]:
    """Validated constraints from ``{name: {start, stop, every, **params}}``; raises
    :class:`ConfigError` naming the key for an unknown name or parameter, a value that
    is not a finite number (or null where the default is null) or out of range, or a
    bad start/stop/every."""
    parsed = []
    for name, values in settings.items():
        where = f"{key}.{name}"
        if name not in CONSTRAINTS:
            raise ConfigError(f"{where}: unknown constraint; choose from {sorted(CONSTRAINTS)}")
        if values is not None and not isinstance(values, Mapping):
            raise ConfigError(
                f"{where}: expected a mapping of parameters (or null for the defaults), "
                f"got {values!r}"
            )
        gate, params = split_gate(values or {}, where)
        spec = CONSTRAINTS[name]
        unknown = set(params) - set(spec.defaults)
        if unknown:
            raise ConfigError(
                f"{where}: unknown parameter(s) {sorted(unknown)}; "
                f"allowed: {sorted(spec.defaults)} and start, stop, every"
            )
        for param, value in params.items():
            if not (_is_number(value) or (value is None and spec.defaults[param] is None)):
                raise ConfigError(
                    f"{where}.{param}: expected a finite number"
                    f"{' or null' if spec.defaults[param] is None else ''}, got {value!r}"
                )
        params = {**spec.defaults, **params}
        problem = spec.check(params) if spec.check else None
        if problem:
            raise ConfigError(f"{where}.{problem[0]}: {problem[1]}")
        parsed.append(ActiveConstraint(name, gate, params))
    return parsed


def apply_constraints(
    state: ReconState,
    measurements: Measurements,
    constraints: list[ActiveConstraint],
    iteration: int,
) -> ReconState:
    """Apply every constraint whose gate is open at ``iteration``, in order."""
    for constraint in constraints:
        if constraint.gate.active(iteration):
            state = CONSTRAINTS[constraint.name].apply(state, measurements, constraint.params)
    return state
