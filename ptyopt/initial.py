"""From a dataset to what the engines work on: the object grid, the measurements in the
model's layout, the initial state, and changes of probe modes or slices between engines.

Geometry: the object grid has the reconstruction pixel dx = λ/(N·Δα); object pixel j
lies at cell coordinate (j − origin_px)·dx, with an integer ``origin_px`` chosen so
that every probe window lies inside the object with a margin.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import jax
import jax.numpy as jnp
import numpy as np

from ptyopt import model, physics
from ptyopt.data.dataset import PtychoDataset


@dataclass(frozen=True)
class Geometry:
    """Object grid for a dataset. positions_px (n, 2) nominal probe centres in object
    pixels; origin_px (2,) object pixel of the cell origin; shape (H, W); window (N, N)."""

    positions_px: np.ndarray
    origin_px: np.ndarray
    shape: tuple[int, int]
    window: tuple[int, int]

    def field_of_view(self, margin_px: int = 0) -> tuple[slice, slice]:
        """Pixels spanned by the probe centres, shrunk by ``margin_px``."""
        lo = np.ceil(self.positions_px.min(axis=0)).astype(int) + margin_px
        hi = np.floor(self.positions_px.max(axis=0)).astype(int) - margin_px + 1
        return (slice(lo[0], hi[0]), slice(lo[1], hi[1]))


def object_geometry(dataset: PtychoDataset, margin_px: int = 2) -> Geometry:
    """Object grid holding every probe window of ``dataset`` plus ``margin_px``
    (room for position correction)."""
    n = dataset.detector_shape[0]
    scaled = dataset.positions_A / dataset.pixel_size_A
    origin = n // 2 + margin_px - np.floor(scaled.min(axis=0))
    positions = scaled + origin
    extent = np.ceil(positions.max(axis=0)).astype(int) + n // 2 + margin_px + 1
    return Geometry(positions, origin, (int(extent[0]), int(extent[1])), (n, n))


@dataclass(frozen=True)
class Measurements:
    """What is fixed during a reconstruction. patterns (P, N, N) float32 counts with
    pixel N/2 at index 0 (the model's layout); detector_ramp (N, N) for the pattern
    centre's offset; thickness_A: specimen thickness [Å] and default_slices: the
    ground truth's slicing (or one slice of ``default_thickness_A`` without one)."""

    patterns: jnp.ndarray
    detector_ramp: jnp.ndarray
    geometry: Geometry
    pixel_size_A: float
    energy_eV: float
    semiangle_mrad: float
    aberrations: dict[str, float]
    thickness_A: float
    default_slices: int

    @property
    def nyquist_angle_mrad(self) -> float:
        """Scattering angle [mrad] of the object grid's Nyquist frequency: the
        detector's half-width."""
        return physics.nyquist_angle_mrad(self.energy_eV, self.pixel_size_A)

    @cached_property
    def mean_pattern_counts(self) -> jnp.ndarray:
        """Mean over positions of the counts in a pattern: the probe power Σ|ψ|² the
        initial state starts with."""
        return jnp.mean(jnp.sum(self.patterns, axis=(-2, -1)))


def measurements_from(dataset: PtychoDataset, default_thickness_A: float = 10.0) -> Measurements:
    """Measurements of a dataset in the model's layout."""
    n = dataset.detector_shape[0]
    offset = (n // 2 - dataset.pattern_centre_px[0], n // 2 - dataset.pattern_centre_px[1])
    truth = dataset.ground_truth
    thickness = (
        default_thickness_A if truth is None else truth.slice_thickness_A * len(truth.potential_V_A)
    )
    geometry = object_geometry(dataset)
    return Measurements(
        patterns=jnp.asarray(np.fft.ifftshift(dataset.patterns, axes=(-2, -1))),
        detector_ramp=model.detector_offset_ramp(geometry.window, offset),
        geometry=geometry,
        pixel_size_A=dataset.pixel_size_A,
        energy_eV=dataset.optics.energy_eV,
        semiangle_mrad=dataset.optics.semiangle_mrad,
        aberrations=dict(dataset.optics.aberrations),
        thickness_A=thickness,
        default_slices=1 if truth is None else len(truth.potential_V_A),
    )


@dataclass(frozen=True)
class ReconState:
    """object (S, H, W) complex transmission; probe (M, N, N) complex, Σ|ψ|² in counts;
    positions_px (P, 2) probe centres; slice_thicknesses_A: S thicknesses [Å];
    bandlimit: the propagators' band limit, a fraction of the Nyquist frequency (``None``:
    none); iterations_done: iterations run by all engines so far."""

    object: jnp.ndarray
    probe: jnp.ndarray
    positions_px: jnp.ndarray
    slice_thicknesses_A: tuple[float, ...]
    bandlimit: float | None = physics.DEFAULT_BANDLIMIT
    iterations_done: int = 0

    def propagators(self, measurements: Measurements) -> jnp.ndarray:
        """Propagators (S − 1, N, N) between this state's slices."""
        return model.slice_propagators(
            measurements.geometry.window,
            measurements.pixel_size_A,
            measurements.energy_eV,
            self.slice_thicknesses_A,
            self.bandlimit,
            dtype=self.object.dtype,
        )


def initial_state(
    measurements: Measurements,
    n_slices: int,
    n_modes: int,
    seed: int,
    bandlimit: float | None = physics.DEFAULT_BANDLIMIT,
) -> ReconState:
    """Object of ones in ``n_slices`` equal slices, the probe from the nominal optics
    scaled to the mean pattern intensity, ``n_modes`` modes (see :func:`with_probe_modes`),
    nominal positions, propagators band-limited to ``bandlimit`` of Nyquist."""
    window = measurements.geometry.window
    probe = physics.probe_wave(
        window,
        measurements.pixel_size_A,
        measurements.energy_eV,
        measurements.semiangle_mrad,
        measurements.aberrations,
    )
    probe = probe * jnp.sqrt(measurements.mean_pattern_counts)
    state = ReconState(
        object=jnp.ones((n_slices, *measurements.geometry.shape), jnp.complex64),
        probe=probe[None],
        positions_px=jnp.asarray(measurements.geometry.positions_px, jnp.float32),
        slice_thicknesses_A=(measurements.thickness_A / n_slices,) * n_slices,
        bandlimit=bandlimit,
    )
    return with_probe_modes(state, n_modes, seed)


def orthogonalize_modes(probe: jnp.ndarray) -> jnp.ndarray:
    """Probe modes (M, N, N) made orthogonal by SVD, ordered by decreasing power; the
    total intensity Σ_m |ψ_m|² is unchanged."""
    m, n1, n2 = probe.shape
    u, s, _ = jnp.linalg.svd(probe.reshape(m, -1).T, full_matrices=False)
    return (u * s).T.reshape(m, n1, n2).astype(probe.dtype)


def with_probe_modes(
    state: ReconState, n_modes: int, seed: int, power_fraction: float = 0.05
) -> ReconState:
    """State with ``n_modes`` probe modes: extra modes are the first mode times seeded
    smooth random phase ramps, each carrying ``power_fraction`` of the first mode's
    power, then orthogonalised; fewer modes keep the strongest."""
    current = state.probe.shape[0]
    if n_modes == current:
        return state
    if n_modes < current:
        return replace(state, probe=orthogonalize_modes(state.probe)[:n_modes])
    rng = np.random.default_rng(seed)
    n = state.probe.shape[-1]
    coords = np.arange(n) / n - 0.5
    extra = []
    for _ in range(n_modes - current):
        tilt = rng.normal(size=2) * 2 * np.pi
        phase = tilt[0] * coords[:, None] + tilt[1] * coords[None, :]
        extra.append(
            state.probe[0]
            * jnp.asarray(np.exp(1j * phase), state.probe.dtype)
            * np.sqrt(power_fraction)
        )
    return replace(
        state, probe=orthogonalize_modes(jnp.concatenate([state.probe, jnp.stack(extra)]))
    )


def with_slices(state: ReconState, n_slices: int) -> ReconState:
    """State with the object resampled to ``n_slices`` equal slices of the same total
    thickness: log-transmission (phase and log-amplitude) is redistributed by overlap,
    so the projected phase is kept."""
    if n_slices == len(state.slice_thicknesses_A):
        return state
    old_edges = np.concatenate([[0.0], np.cumsum(state.slice_thicknesses_A)])
    total = old_edges[-1]
    new_edges = np.linspace(0.0, total, n_slices + 1)
    overlap = np.clip(
        np.minimum(new_edges[1:, None], old_edges[None, 1:])
        - np.maximum(new_edges[:-1, None], old_edges[None, :-1]),
        0,
        None,
    )
    weights = jnp.asarray(overlap / np.diff(old_edges)[None, :], jnp.float32)
    return replace(
        state,
        object=mix_slices(state.object, weights),
        slice_thicknesses_A=(total / n_slices,) * n_slices,
    )


def log_transmission(obj: jnp.ndarray) -> jnp.ndarray:
    """Log-transmission log|O| + i·arg O (|O| bounded away from 0)."""
    return jnp.log(jnp.maximum(jnp.abs(obj), 1e-30)) + 1j * jnp.angle(obj)


@jax.jit
def mix_slices(obj: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
    """Object (S, H, W) → (S', H, W) whose log-transmissions are ``weights`` (S', S)
    times the slices' log-transmissions."""
    return jnp.exp(jnp.einsum("ij,jhw->ihw", weights, log_transmission(obj))).astype(obj.dtype)
