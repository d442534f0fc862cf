"""From a dataset to what the engines work on: the object grid, the measurements in the
model's layout with the microscope a plan assumes (its probe optics, thickness, slicing
and scan calibration, else the dataset's nominal ones; never the ground truth), the
initial state, and changes of probe modes or slices between engines.

Geometry: the object grid has the reconstruction pixel dx = λ/(N·Δα); object pixel j
lies at cell coordinate (j − origin_px)·dx, with an integer ``origin_px`` chosen so
that every probe window lies inside the object with a margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from ptyopt import model, physics
from ptyopt.data.dataset import PtychoDataset
from ptyopt.errors import ConfigError
from ptyopt.precision import SINGLE, Precision
from ptyopt.scan import calibrate_scan

if TYPE_CHECKING:  # ptyopt.plan imports the constraints, which import this module
    from ptyopt.plan import Plan, ProbeSettings, ScanSettings


@dataclass(frozen=True)
class Geometry:
    """Object grid for a dataset. positions_px (n, 2) probe centres in object pixels;
    origin_px (2,) object pixel of the dataset positions' origin (for a simulation, the
    cell's); shape (H, W); window (N, N); margin_px: object pixels around every probe
    window at the nominal positions. scan_bounds_px: (2, 2) the lowest and highest
    probe centre (y, x) of the whole scan when ``positions_px`` holds only some of its
    positions (:func:`with_positions`), ``None`` when it holds them all."""

    positions_px: np.ndarray
    origin_px: np.ndarray
    shape: tuple[int, int]
    window: tuple[int, int]
    margin_px: int = 2
    scan_bounds_px: np.ndarray | None = None

    def field_of_view(self, margin_px: int = 0) -> tuple[slice, slice]:
        """Pixels spanned by the probe centres of the whole scan, shrunk by ``margin_px``."""
        low, high = (
            (self.positions_px.min(axis=0), self.positions_px.max(axis=0))
            if self.scan_bounds_px is None
            else self.scan_bounds_px
        )
        lo = np.ceil(low).astype(int) + margin_px
        hi = np.floor(high).astype(int) - margin_px + 1
        return (slice(lo[0], hi[0]), slice(lo[1], hi[1]))

    def with_margin(self, margin_px: int) -> Geometry:
        """The same positions on a grid with ``margin_px`` (what :func:`object_geometry`
        gives with that margin)."""
        grow = margin_px - self.margin_px
        return Geometry(
            self.positions_px + grow,
            self.origin_px + grow,
            (self.shape[0] + 2 * grow, self.shape[1] + 2 * grow),
            self.window,
            margin_px,
            None if self.scan_bounds_px is None else self.scan_bounds_px + grow,
        )


def object_geometry(dataset: PtychoDataset, margin_px: int = 2) -> Geometry:
    """Object grid holding every probe window of ``dataset`` at its nominal positions
    plus ``margin_px`` (room for position correction and scan calibration)."""
    n = dataset.detector_shape[0]
    scaled = dataset.positions_A / dataset.pixel_size_A
    origin = n // 2 + margin_px - np.floor(scaled.min(axis=0))
    positions = scaled + origin
    extent = np.ceil(positions.max(axis=0)).astype(int) + n // 2 + margin_px + 1
    return Geometry(positions, origin, (int(extent[0]), int(extent[1])), (n, n), margin_px)


@dataclass(frozen=True)
class Microscope:
    """The beam, the specimen and the scan as a reconstruction takes them: a dataset's
    nominal values (:func:`measurements_from`) or a plan's (:func:`with_plan`).

    semiangle_mrad: convergence semi-angle [mrad]. aberrations: polar coefficients in
    abTEM's naming, lengths [Å] and azimuths [rad] (C10 = −defocus; C12, phi12: two-fold
    astigmatism; C30 = Cs). thickness_A: total specimen thickness [Å] (``None``:
    unknown, so one slice only). slices: the initial number of equal slices.
    scan_rotation_deg [deg], scan_step_scale: the scan calibration applied to the
    nominal positions (:func:`ptyopt.scan.calibrate_scan`; 0 and 1: as recorded)."""

    semiangle_mrad: float
    aberrations: dict[str, float]
    thickness_A: float | None
    slices: int
    scan_rotation_deg: float = 0.0
    scan_step_scale: float = 1.0

    def plan_settings(self) -> dict[str, Any]:
        """These values as the plan's keys (``probe``, ``thickness_A``, ``slices``,
        ``scan``): what a trial records as its resolved microscope."""
        a = self.aberrations
        return {
            "probe": {
                "defocus_A": -float(a.get("C10", 0.0)),
                "Cs_A": float(a.get("C30", 0.0)),
                "astigmatism_A": float(a.get("C12", 0.0)),
                "astigmatism_angle_deg": float(np.rad2deg(a.get("phi12", 0.0))),
                "semiangle_mrad": float(self.semiangle_mrad),
            },
            "thickness_A": None if self.thickness_A is None else float(self.thickness_A),
            "slices": int(self.slices),
            "scan": {
                "rotation_deg": float(self.scan_rotation_deg),
                "step_scale": float(self.scan_step_scale),
            },
        }


@dataclass(frozen=True)
class Measurements:
    """What is fixed during a reconstruction. patterns (P, N, N) counts with pixel N/2
    at index 0 (the model's layout), of ``precision``'s real dtype; detector_ramp (N, N)
    of its complex dtype for the pattern centre's offset ``detector_offset_px`` (y, x)
    [detector pixels] (:func:`ptyopt.model.detector_offset_ramp`); geometry: the object
    grid and the probe centres the reconstruction starts from; microscope: the optics,
    specimen thickness, slicing and scan calibration it assumes. nominal_geometry and
    nominal: the same as the dataset records them (what :func:`with_plan` resolves a
    plan against); dataset_name: for messages. scan_indices: the positions of the
    nominal scan these patterns were measured at, in order (``None``: all of them; see
    :func:`with_positions`). precision: the dtypes of the patterns, the ramp and the
    state a reconstruction starts from (:func:`with_precision`). Nothing here comes
    from a ground truth."""

    patterns: jnp.ndarray
    detector_ramp: jnp.ndarray
    pixel_size_A: float
    energy_eV: float
    geometry: Geometry
    microscope: Microscope
    nominal_geometry: Geometry
    nominal: Microscope
    dataset_name: str = ""
    scan_indices: np.ndarray | None = None
    detector_offset_px: tuple[float, float] = (0.0, 0.0)
    precision: Precision = SINGLE

    @property
    def semiangle_mrad(self) -> float:
        """The assumed convergence semi-angle [mrad]."""
        return self.microscope.semiangle_mrad

    @property
    def thickness_A(self) -> float | None:
        """The assumed specimen thickness [Å] (``None``: unknown)."""
        return self.microscope.thickness_A

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


def measurements_from(dataset: PtychoDataset) -> Measurements:
    """Measurements of a dataset in the model's layout, assuming its nominal optics,
    thickness (``nominal_thickness_A``, possibly unknown), slicing (``nominal_slices``,
    else one slice) and positions, in single precision (:func:`with_plan` gives the
    plan's; the dataset's patterns are float32 counts). The ground truth is never read."""
    n = dataset.detector_shape[0]
    offset = (n // 2 - dataset.pattern_centre_px[0], n // 2 - dataset.pattern_centre_px[1])
    geometry = object_geometry(dataset)
    nominal = Microscope(
        semiangle_mrad=dataset.optics.semiangle_mrad,
        aberrations=dict(dataset.optics.aberrations),
        thickness_A=dataset.nominal_thickness_A,
        slices=dataset.nominal_slices or 1,
    )
    return Measurements(
        patterns=jnp.asarray(np.fft.ifftshift(dataset.patterns, axes=(-2, -1)), SINGLE.real),
        detector_ramp=model.detector_offset_ramp(geometry.window, offset, SINGLE.complex),
        pixel_size_A=dataset.pixel_size_A,
        energy_eV=dataset.optics.energy_eV,
        geometry=geometry,
        microscope=nominal,
        nominal_geometry=geometry,
        nominal=nominal,
        dataset_name=dataset.name,
        detector_offset_px=offset,
    )


def with_precision(measurements: Measurements, precision: Precision) -> Measurements:
    """The measurements in ``precision`` (turned on in JAX first,
    :meth:`~ptyopt.precision.Precision.activate`): patterns cast (float32 counts are
    exact in float64), the detector ramp built anew in its complex dtype."""
    if precision == measurements.precision:
        return measurements
    precision.activate()
    return replace(
        measurements,
        patterns=jnp.asarray(measurements.patterns, precision.real),
        detector_ramp=model.detector_offset_ramp(
            measurements.geometry.window, measurements.detector_offset_px, precision.complex
        ),
        precision=precision,
    )


def _planned_aberrations(probe: ProbeSettings, nominal: dict[str, float]) -> dict[str, float]:
    """The nominal aberrations with the plan's defocus, Cs and astigmatism put in."""
    aberrations = dict(nominal)
    if probe.defocus_A is not None:
        aberrations["C10"] = -float(probe.defocus_A)
    if probe.Cs_A is not None:
        aberrations["C30"] = float(probe.Cs_A)
    if probe.astigmatism_A is not None:
        aberrations["C12"] = float(probe.astigmatism_A)
    if probe.astigmatism_angle_deg is not None:
        aberrations["phi12"] = float(np.deg2rad(probe.astigmatism_angle_deg))
    return aberrations


def _planned_slicing(plan: Plan, nominal: Microscope, dataset: str) -> tuple[float | None, int]:
    """(thickness [Å] or ``None``, initial slices) of a plan; a plan that needs a
    thickness nobody gave raises :class:`ConfigError` naming both sources."""
    thickness = nominal.thickness_A if plan.thickness_A is None else float(plan.thickness_A)
    unknown = (
        f"dataset {dataset!r} records no nominal thickness (nominal_thickness_A) and "
        "plan.thickness_A is null; set plan.thickness_A [Å]"
    )
    if plan.slice_thickness_A is not None:
        if thickness is None:
            raise ConfigError(f"plan.slice_thickness_A: slicing needs a thickness: {unknown}")
        slices = max(1, round(thickness / plan.slice_thickness_A))
    else:
        slices = plan.slices or nominal.slices
    most = max([slices, *(engine.slices or 1 for engine in plan.engines)])
    if most > 1 and thickness is None:
        raise ConfigError(f"plan.thickness_A: the plan reconstructs {most} slices, but {unknown}")
    return thickness, slices


def _calibrated_geometry(nominal: Geometry, scan: ScanSettings, precision: Precision) -> Geometry:
    """The nominal positions calibrated by ``scan`` on a grid of ``scan.margin_px``;
    raises :class:`ConfigError` if a probe window would leave the grid."""
    rotation = 0.0 if scan.rotation_deg is None else float(scan.rotation_deg)
    step_scale = 1.0 if scan.step_scale is None else float(scan.step_scale)
    grid = nominal.with_margin(scan.margin_px)
    positions = calibrate_scan(grid.positions_px, rotation, step_scale)
    start = jnp.asarray(positions, precision.real)  # as the state holds them
    inside = model.keep_windows_inside(start, grid.window, grid.shape)
    outside = float(jnp.max(jnp.abs(inside - start)))
    if outside > 0:
        raise ConfigError(
            f"plan.scan: rotation_deg={rotation:g} and step_scale={step_scale:g} move probe "
            f"windows {outside:.2f} px past the object grid; raise plan.scan.margin_px "
            f"(now {scan.margin_px}) to at least {scan.margin_px + int(np.ceil(outside))}"
        )
    return replace(grid, positions_px=positions)


def with_plan(measurements: Measurements, plan: Plan) -> Measurements:
    """The measurements as ``plan`` takes them: its precision (:func:`with_precision`),
    probe optics, thickness, slicing, scan calibration and object margin, each ``null``
    taking the nominal value. Always resolved against the nominal values, so applying
    it twice changes nothing. Raises :class:`ConfigError` before any compute for a
    multislice plan without a known thickness, and for a calibrated scan that leaves
    the object grid."""
    measurements = with_precision(measurements, plan.dtypes)
    nominal = measurements.nominal
    thickness, slices = _planned_slicing(plan, nominal, measurements.dataset_name)
    semiangle = plan.probe.semiangle_mrad
    microscope = Microscope(
        semiangle_mrad=nominal.semiangle_mrad if semiangle is None else float(semiangle),
        aberrations=_planned_aberrations(plan.probe, nominal.aberrations),
        thickness_A=thickness,
        slices=slices,
        scan_rotation_deg=0.0 if plan.scan.rotation_deg is None else float(plan.scan.rotation_deg),
        scan_step_scale=1.0 if plan.scan.step_scale is None else float(plan.scan.step_scale),
    )
    geometry = _calibrated_geometry(measurements.nominal_geometry, plan.scan, plan.dtypes)
    if measurements.scan_indices is not None:  # the whole scan calibrated, then the subset
        positions = geometry.positions_px
        geometry = replace(
            geometry,
            positions_px=positions[measurements.scan_indices],
            scan_bounds_px=np.stack([positions.min(axis=0), positions.max(axis=0)]),
        )
    return replace(measurements, geometry=geometry, microscope=microscope)


def with_positions(measurements: Measurements, indices: np.ndarray) -> Measurements:
    """The measurements of the whole scan at some of its positions only: ``indices`` (K,)
    into the scan's positions. The engines see only these K patterns and positions; the
    object grid, the field of view and the scan calibration (about the centroid of the
    whole scan) stay those of the whole scan, so reconstructions from subsets are scored
    on the same pixels. :func:`with_plan` keeps the subset. Raises ValueError for
    measurements that hold a subset already or indices outside the scan."""
    indices = np.asarray(indices, dtype=np.int64)
    positions = measurements.geometry.positions_px
    if measurements.scan_indices is not None:
        raise ValueError("with_positions: takes the measurements of the whole scan")
    if indices.size == 0 or indices.min() < 0 or indices.max() >= len(positions):
        raise ValueError(f"with_positions: indices must lie in [0, {len(positions)})")
    geometry = replace(
        measurements.geometry,
        positions_px=positions[indices],
        scan_bounds_px=np.stack([positions.min(axis=0), positions.max(axis=0)]),
    )
    return replace(
        measurements,
        patterns=measurements.patterns[jnp.asarray(indices)],
        geometry=geometry,
        scan_indices=indices,
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

    def in_precision(self, precision: Precision) -> ReconState:
        """This state with object and probe of ``precision``'s complex dtype and
        positions of its real one."""
        return replace(
            self,
            object=self.object.astype(precision.complex),
            probe=self.probe.astype(precision.complex),
            positions_px=self.positions_px.astype(precision.real),
        )


def initial_state(
    measurements: Measurements,
    n_slices: int,
    n_modes: int,
    seed: int,
    bandlimit: float | None = physics.DEFAULT_BANDLIMIT,
) -> ReconState:
    """Object of ones in ``n_slices`` equal slices of the assumed thickness (one slice
    of unknown thickness is NaN Å thick), the probe from the assumed optics scaled to
    the mean pattern intensity, ``n_modes`` modes (see :func:`with_probe_modes`), the
    assumed positions, propagators band-limited to ``bandlimit`` of Nyquist; all in the
    measurements' precision."""
    thickness = measurements.thickness_A
    if thickness is None and n_slices > 1:
        raise ConfigError(
            f"plan.thickness_A: {n_slices} slices need a thickness, and dataset "
            f"{measurements.dataset_name!r} records none (nominal_thickness_A)"
        )
    window = measurements.geometry.window
    precision = measurements.precision
    probe = physics.probe_wave(
        window,
        measurements.pixel_size_A,
        measurements.energy_eV,
        measurements.microscope.semiangle_mrad,
        measurements.microscope.aberrations,
        precision.complex,
    )
    probe = probe * jnp.sqrt(measurements.mean_pattern_counts)
    state = ReconState(
        object=jnp.ones((n_slices, *measurements.geometry.shape), precision.complex),
        probe=probe[None],
        positions_px=jnp.asarray(measurements.geometry.positions_px, precision.real),
        slice_thicknesses_A=(math.nan if thickness is None else thickness / n_slices,) * n_slices,
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
    weights = jnp.asarray(overlap / np.diff(old_edges)[None, :], jnp.real(state.object).dtype)
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
