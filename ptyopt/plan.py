"""Reconstruction plans: a validated sequence of engines, each with its own settings.

A plan is a mapping ``{seed, probe_modes, slices, probe, thickness_A, slice_thickness_A,
scan, bandlimit, precision, engines: [ {kind: ..., ...}, ... ]}``.
Each engine entry is checked against the dataclass of its kind (unknown keys and wrong
types fail naming the engine and key); scalar hyperparameters may be numbers or
schedules (:mod:`ptyopt.schedules`) and are checked here too, before any compute.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import OmegaConf

from ptyopt.constraints import parse_constraints
from ptyopt.errors import ConfigError
from ptyopt.grouping import GROUPINGS
from ptyopt.noise import NOISE_MODELS
from ptyopt.physics import DEFAULT_BANDLIMIT
from ptyopt.precision import PRECISIONS, Precision
from ptyopt.regularizers import parse_regularizers
from ptyopt.schedules import make_schedule
from ptyopt.schema import to_dataclass


@dataclass
class NoiseSettings:
    """Noise model name and its ε [counts] (number or schedule)."""

    model: str = "amplitude"
    epsilon: Any = 0.0


@dataclass
class PositionCorrection:
    """Position correction from iteration ``start`` (``null``: off). ``step``: step size
    [px] (gradient engine: the positions solver's learning rate; conventional engines:
    the length of a normalised gradient step). ``max_step_px``: clip per iteration."""

    start: Any = None
    step: Any = 0.05
    max_step_px: float = 0.5


@dataclass
class EngineSettings:
    """Settings every engine has. ``probe_modes``/``slices``: change the number of probe
    modes / object slices when this engine starts (``null`` keeps them).
    ``probe_update_start``: first iteration that updates the probe. ``constraints``:
    name → settings (see :mod:`ptyopt.constraints`). ``SCHEDULED``: the engine's own
    settings that may be schedules."""

    SCHEDULED: ClassVar[tuple[str, ...]] = ()

    kind: str = "gradient"
    iterations: int = 20
    group_size: int = 32
    grouping: str = "sparse"
    noise: NoiseSettings = field(default_factory=NoiseSettings)
    probe_modes: Any = None
    slices: Any = None
    probe_update_start: int = 0
    position_correction: PositionCorrection = field(default_factory=PositionCorrection)
    constraints: dict[str, Any] = field(default_factory=dict)


@dataclass
class SolverSettings:
    """An optax solver for one variable: ``adam``, ``sgd`` (momentum, nesterov) or
    ``polyak_sgd``; ``learning_rate`` number or schedule."""

    name: str = "adam"
    learning_rate: Any = 0.02
    momentum: float = 0.0
    nesterov: bool = False
    b1: float = 0.9
    b2: float = 0.999


@dataclass
class GradientSettings(EngineSettings):
    """Gradient descent: autodiff of the noise-model loss plus cost regularizers
    (name → {weight, start, stop, every}), optax solvers for object and probe (the
    positions solver follows ``position_correction``)."""

    object_solver: SolverSettings = field(default_factory=SolverSettings)
    probe_solver: SolverSettings = field(
        default_factory=lambda: SolverSettings(learning_rate=0.005)
    )
    regularizers: dict[str, Any] = field(default_factory=dict)


@dataclass
class EpieSettings(EngineSettings):
    """ePIE/3PIE: step sizes β for object and probe (numbers or schedules); on S slices
    each slice's object step is β_O/S. ``object_normalization``: ``position`` (each
    position's update by its own illumination, summed over a group: textbook ePIE) or
    ``group`` (the group's summed update by its summed illumination); ``alpha_object``:
    rPIE's α in (0, 1] weighing the maximum against the local illumination (1: ePIE)
    (:mod:`ptyopt.engines.epie`)."""

    SCHEDULED: ClassVar[tuple[str, ...]] = (
        "beta_object",
        "beta_probe",
        "alpha_object",
    )  # numbers or schedules, arrays in the step

    kind: str = "epie"
    group_size: int = 1
    beta_object: Any = 1.0
    beta_probe: Any = 1.0
    alpha_object: Any = 1.0
    object_normalization: str = "position"


@dataclass
class LsqmlSettings(EngineSettings):
    """LSQML: damping β of the per-group optimal steps, and the illumination
    regularisation (relative to the maximum illumination) of object and probe updates."""

    SCHEDULED: ClassVar[tuple[str, ...]] = (
        "beta_object",
        "beta_probe",
        "illum_reg_object",
        "illum_reg_probe",
    )

    kind: str = "lsqml"
    beta_object: Any = 0.9
    beta_probe: Any = 0.9
    illum_reg_object: Any = 1e-2
    illum_reg_probe: Any = 1e-2


ENGINE_SETTINGS: dict[str, type[EngineSettings]] = {
    "gradient": GradientSettings,
    "epie": EpieSettings,
    "lsqml": LsqmlSettings,
}


@dataclass
class ProbeSettings:
    """The optics the initial probe is built from (:func:`ptyopt.physics.probe_wave`);
    each ``null`` takes the dataset's nominal value. defocus_A [Å], abTEM's sign
    (C10 = −defocus: a positive defocus puts the crossover below the entrance surface);
    Cs_A: spherical aberration C30 [Å]; astigmatism_A: two-fold astigmatism C12 [Å],
    ≥ 0; astigmatism_angle_deg: its azimuth phi12 [deg], from +x towards +y (the phase
    is C12·α²/2·cos 2(φ − phi12), so it has a period of 180°); semiangle_mrad: the
    convergence semi-angle [mrad]. Other aberrations of the nominal optics are kept."""

    defocus_A: Any = None
    Cs_A: Any = None
    astigmatism_A: Any = None
    astigmatism_angle_deg: Any = None
    semiangle_mrad: Any = None


@dataclass
class ScanSettings:
    """The scan calibration applied to the nominal positions about their centroid c:
    p = c + step_scale·R(rotation_deg)·(p_nominal − c), R rotating from +x towards +y
    (:func:`ptyopt.scan.calibrate_scan`). rotation_deg [deg] (``null``: 0) and
    step_scale (> 0, ``null``: 1) state the true scan relative to the recorded one.
    margin_px: object pixels around every probe window at the nominal positions (room
    for position correction and for the calibration; the object grid, and so the
    compiled step, do not depend on rotation_deg and step_scale)."""

    rotation_deg: Any = None
    step_scale: Any = None
    margin_px: int = 2


@dataclass
class Plan:
    """seed: all random choices (grouping, initial modes). probe_modes: initial number
    of probe modes. The microscope as the reconstruction starts from it, each ``null``
    taking the dataset's nominal value (never its ground truth): ``probe`` (the initial
    probe's optics, :class:`ProbeSettings`), ``thickness_A`` (total specimen thickness
    [Å]), the initial slicing as ``slices`` (number of equal slices; ``null``: the
    dataset's nominal slicing, else one) or ``slice_thickness_A`` (the number of slices
    is the nearest whole number, at least 1, to thickness_A/slice_thickness_A; not both),
    ``scan`` (:class:`ScanSettings`). bandlimit: the propagators' band limit as a
    fraction of the object grid's Nyquist frequency, in (0, 1] (``null``: none, which
    aliases); it must pass the probe's aperture (:func:`check_bandlimit`). precision:
    ``single`` (float32/complex64) or ``double`` (float64/complex128) for every array of
    the reconstruction (:mod:`ptyopt.precision`; :attr:`dtypes`). engines: the engines,
    run in order on one state."""

    engines: list[EngineSettings]
    seed: int = 0
    probe_modes: int = 1
    slices: Any = None
    slice_thickness_A: Any = None
    thickness_A: Any = None
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    scan: ScanSettings = field(default_factory=ScanSettings)
    bandlimit: Any = DEFAULT_BANDLIMIT
    precision: Any = "single"

    @property
    def dtypes(self) -> Precision:
        """The :class:`~ptyopt.precision.Precision` named by ``precision``."""
        return PRECISIONS[self.precision]


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_optional_number(
    value: Any, key: str, low: float | None = None, high: float | None = None
) -> None:
    """``null`` or a finite number in the open interval (low, high) (``None``: unbounded)."""
    if value is None:
        return
    bounds = (
        f" in ({low:g}, {high:g})"
        if high is not None
        else (f" > {low:g}" if low is not None else "")
    )
    _require(
        _is_number(value) and (low is None or value > low) and (high is None or value < high),
        key,
        f"must be a finite number{bounds} or null, got {value!r}",
    )


def _check_microscope(plan: Plan) -> None:
    """The plan's microscope settings: numbers in their ranges, or ``null``."""
    probe, scan = plan.probe, plan.scan
    for name in ("defocus_A", "Cs_A", "astigmatism_angle_deg"):
        _check_optional_number(getattr(probe, name), f"plan.probe.{name}")
    if probe.astigmatism_A is not None:
        _require(
            _is_number(probe.astigmatism_A) and probe.astigmatism_A >= 0,
            "plan.probe.astigmatism_A",
            "must be a finite number >= 0 (its direction is astigmatism_angle_deg) or null, "
            f"got {probe.astigmatism_A!r}",
        )
    _check_optional_number(probe.semiangle_mrad, "plan.probe.semiangle_mrad", 0, 200)
    _check_optional_number(plan.thickness_A, "plan.thickness_A", 0)
    _check_optional_number(plan.slice_thickness_A, "plan.slice_thickness_A", 0)
    _require(
        plan.slices is None or plan.slice_thickness_A is None,
        "plan.slice_thickness_A",
        f"give plan.slices ({plan.slices}) or plan.slice_thickness_A "
        f"({plan.slice_thickness_A}), not both",
    )
    _check_optional_number(scan.rotation_deg, "plan.scan.rotation_deg")
    _check_optional_number(scan.step_scale, "plan.scan.step_scale", 0)
    _require(
        isinstance(scan.margin_px, int) and scan.margin_px >= 0,
        "plan.scan.margin_px",
        f"must be an integer >= 0, got {scan.margin_px!r}",
    )


def _check_step(spec: Any, key: str, iterations: int, zero_allowed: bool = False) -> None:
    """A step size, β or learning rate (number or schedule): >= 0 at every iteration and,
    unless ``zero_allowed`` (e.g. a probe step of 0 keeps the probe), > 0 at some (a
    warm-up may start at 0, a decay end there)."""
    schedule = make_schedule(spec, key, iterations)
    values = [schedule(i) for i in range(iterations)]
    _require(min(values) >= 0, key, f"must be >= 0 at every iteration, got {min(values):g}")
    _require(
        zero_allowed or max(values) > 0,
        key,
        "must be > 0 (at some iteration, for a schedule), got 0",
    )


def _check_fraction(value: Any, key: str) -> None:
    """A decay rate in [0, 1) (momentum, Adam's b1 and b2)."""
    _require(_is_number(value) and 0 <= value < 1, key, f"must be in [0, 1), got {value!r}")


#: Per engine kind: its scheduled settings that may be 0 (the others must be > 0).
_ZERO_ALLOWED = {"beta_probe", "illum_reg_object", "illum_reg_probe"}


def _check_engine(engine: EngineSettings, where: str) -> None:
    _require(
        engine.iterations >= 1, f"{where}.iterations", f"must be >= 1, got {engine.iterations}"
    )
    _require(
        engine.group_size >= 1, f"{where}.group_size", f"must be >= 1, got {engine.group_size}"
    )
    _require(
        engine.grouping in GROUPINGS,
        f"{where}.grouping",
        f"unknown grouping {engine.grouping!r}; choose one of {list(GROUPINGS)}",
    )
    _require(
        engine.noise.model in NOISE_MODELS,
        f"{where}.noise.model",
        f"unknown noise model {engine.noise.model!r}; choose one of {sorted(NOISE_MODELS)}",
    )
    epsilon = make_schedule(engine.noise.epsilon, f"{where}.noise.epsilon", engine.iterations)
    lowest = min(epsilon(i) for i in range(engine.iterations))
    if NOISE_MODELS[engine.noise.model].needs_positive_epsilon:
        _require(
            lowest > 0,
            f"{where}.noise.epsilon",
            f"must be > 0 for the {engine.noise.model} model, got {lowest}",
        )
    _require(lowest >= 0, f"{where}.noise.epsilon", f"must be >= 0, got {lowest}")
    for key in ("probe_modes", "slices"):
        value = getattr(engine, key)
        _require(
            value is None or (isinstance(value, int) and value >= 1),
            f"{where}.{key}",
            f"must be an integer >= 1 or null, got {value!r}",
        )
    correction = engine.position_correction
    _check_step(correction.step, f"{where}.position_correction.step", engine.iterations)
    _require(
        _is_number(correction.max_step_px) and correction.max_step_px > 0,
        f"{where}.position_correction.max_step_px",
        f"must be > 0 [px], got {correction.max_step_px!r}",
    )
    for name in engine.SCHEDULED:
        _check_step(
            getattr(engine, name), f"{where}.{name}", engine.iterations, name in _ZERO_ALLOWED
        )
    parse_constraints(engine.constraints, f"{where}.constraints")
    if isinstance(engine, EpieSettings):
        _check_epie(engine, where)
    if isinstance(engine, GradientSettings):
        parse_regularizers(engine.regularizers, f"{where}.regularizers", engine.iterations)
        for name in ("object_solver", "probe_solver"):
            solver = getattr(engine, name)
            _require(
                solver.name in SOLVERS,
                f"{where}.{name}.name",
                f"unknown solver {solver.name!r}; choose one of {list(SOLVERS)}",
            )
            _check_step(
                solver.learning_rate,
                f"{where}.{name}.learning_rate",
                engine.iterations,
                zero_allowed=name == "probe_solver",  # 0 keeps the probe
            )
            for decay in ("momentum", "b1", "b2"):
                _check_fraction(getattr(solver, decay), f"{where}.{name}.{decay}")


SOLVERS = ("adam", "sgd", "polyak_sgd")
OBJECT_NORMALIZATIONS = ("position", "group")


def _check_epie(engine: EpieSettings, where: str) -> None:
    """ePIE's normalisation: a known name, and rPIE's α in (0, 1] at every iteration."""
    _require(
        engine.object_normalization in OBJECT_NORMALIZATIONS,
        f"{where}.object_normalization",
        f"unknown normalisation {engine.object_normalization!r}; "
        f"choose one of {list(OBJECT_NORMALIZATIONS)}",
    )
    alpha = make_schedule(engine.alpha_object, f"{where}.alpha_object", engine.iterations)
    values = [alpha(i) for i in range(engine.iterations)]
    _require(
        0 < min(values) and max(values) <= 1,
        f"{where}.alpha_object",
        f"must be in (0, 1] at every iteration, got {min(values):g} … {max(values):g}",
    )


def parse_plan(values: Mapping) -> Plan:
    """Validated :class:`Plan` from a mapping (dict or DictConfig); raises
    :class:`ConfigError` naming ``plan.engines[i].key`` for any bad value."""
    values = (
        OmegaConf.to_container(OmegaConf.create(values))
        if not isinstance(values, dict)
        else dict(values)
    )
    raw_engines = values.pop("engines", None)
    _require(
        isinstance(raw_engines, list) and raw_engines,
        "plan.engines",
        "must be a non-empty list of engines",
    )
    engines = []
    for index, raw in enumerate(raw_engines):
        where = f"plan.engines[{index}]"
        _require(isinstance(raw, Mapping), where, f"must be a mapping with a kind, got {raw!r}")
        kind = raw.get("kind", "gradient")
        _require(
            kind in ENGINE_SETTINGS,
            f"{where}.kind",
            f"unknown engine {kind!r}; choose one of {sorted(ENGINE_SETTINGS)}",
        )
        engine = to_dataclass(ENGINE_SETTINGS[kind], raw, where)
        _check_engine(engine, where)
        engines.append(engine)
    plan = to_dataclass(Plan, {**values, "engines": []}, "plan")
    _require(plan.probe_modes >= 1, "plan.probe_modes", f"must be >= 1, got {plan.probe_modes}")
    _require(
        plan.slices is None or (isinstance(plan.slices, int) and plan.slices >= 1),
        "plan.slices",
        f"must be an integer >= 1 or null, got {plan.slices!r}",
    )
    _check_microscope(plan)
    bandlimit = plan.bandlimit
    _require(
        bandlimit is None
        or (
            isinstance(bandlimit, (int, float))
            and not isinstance(bandlimit, bool)
            and 0 < bandlimit <= 1
        ),
        "plan.bandlimit",
        f"must be a fraction of the Nyquist frequency in (0, 1] or null, got {bandlimit!r}",
    )
    _require(
        isinstance(plan.precision, str) and plan.precision in PRECISIONS,
        "plan.precision",
        f"unknown precision {plan.precision!r}; choose one of {list(PRECISIONS)}",
    )
    plan.engines = engines
    return plan


def check_bandlimit(
    bandlimit: float | None, nyquist_angle_mrad: float, semiangle_mrad: float
) -> None:
    """Raise :class:`ConfigError` if the propagators' band limit, ``bandlimit`` × the
    object grid's Nyquist angle [mrad] (the detector's half-width), lies inside the
    probe's aperture of ``semiangle_mrad``: every propagation would then cut the probe
    itself, and the model could not reproduce the data."""
    if bandlimit is None:
        return
    limit = bandlimit * nyquist_angle_mrad
    _require(
        limit > semiangle_mrad,
        "plan.bandlimit",
        f"the propagator band limit ({bandlimit:.3g} of the {nyquist_angle_mrad:.1f} mrad "
        f"Nyquist angle = {limit:.1f} mrad) lies inside the probe's {semiangle_mrad:g} mrad "
        "aperture; raise plan.bandlimit (at most 1) or use a detector that reaches further "
        "(more pixels, or a smaller cell per pixel)",
    )
