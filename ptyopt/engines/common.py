"""What every engine shares: the iteration loop over a plan, observers, divergence.

An engine module exposes ``make_runner(settings, measurements, state)``
returning a :class:`Runner`, whose ``step`` is one pass over all groups as one
compiled call (``lax.scan`` over groups) with the hyperparameters as array arguments,
so a study compiles each engine step once per shape, not once per trial (and
:mod:`ptyopt.engines.batched` can vmap the step of several trials).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Generator, Hashable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from ptyopt.constraints import apply_constraints, parse_constraints
from ptyopt.grouping import Grouper, Groups
from ptyopt.initial import (
    Measurements,
    ReconState,
    initial_state,
    with_plan,
    with_probe_modes,
    with_slices,
)
from ptyopt.plan import EngineSettings, Plan, check_bandlimit
from ptyopt.schedules import Schedule, make_schedule


@dataclass(frozen=True)
class IterationReport:
    """Sent to observers after each iteration. iteration: within the engine;
    loss: mean data loss per position [counts]; seconds: time of the iteration (in a
    batch of trials, its share of the batched call, :mod:`ptyopt.engines.batched`);
    compiled: whether it may hold compilation (an engine's first iteration, or a call
    that compiled)."""

    engine: str
    engine_index: int
    iteration: int
    loss: float
    seconds: float
    state: ReconState
    compiled: bool = False


Observer = Callable[[IterationReport], None]


class DivergenceError(RuntimeError):
    """The loss or the state became NaN/inf; names the engine and iteration."""

    def __init__(self, engine: str, iteration: int, what: str):
        super().__init__(f"{engine} engine diverged at iteration {iteration}: {what}")
        self.engine, self.iteration = engine, iteration


@dataclass(frozen=True)
class Step:
    """One compiled engine call, ``function(*arguments, structure)``. varying: the
    positions in ``arguments`` of what each iteration changes (the reconstruction's
    variables, solver states); the others are the data and the hyperparameters."""

    function: Callable
    arguments: tuple
    structure: Hashable
    varying: tuple[int, ...] = (0,)

    def __call__(self) -> Any:
        return self.function(*self.arguments, self.structure)


@dataclass(frozen=True)
class Computed:
    """What a :class:`Step` returned. seconds: its time [s] (in a batch, the share of
    the batched call); compiled: whether the call compiled."""

    outputs: Any
    seconds: float
    compiled: bool = False


class Runner(Protocol):
    def step(self, state: ReconState, groups: Groups, iteration: int) -> Step: ...

    def finish(self, state: ReconState, outputs: Any) -> tuple[ReconState, float]: ...

    def iteration(
        self, state: ReconState, groups: Groups, iteration: int
    ) -> tuple[ReconState, float]: ...


def base_schedules(settings: EngineSettings) -> dict[str, Schedule]:
    """Schedules every engine has: the noise model's ε and the position-correction step."""
    n = settings.iterations
    return {
        "epsilon": make_schedule(settings.noise.epsilon, "noise.epsilon", n),
        "position_step": make_schedule(
            settings.position_correction.step, "position_correction.step", n
        ),
    }


def hyperparameters(
    settings: EngineSettings,
    schedules: dict[str, Schedule],
    iteration: int,
    dtype: np.dtype,
    extra: dict[str, float] | None = None,
) -> dict[str, jnp.ndarray]:
    """The values at ``iteration`` as scalar arrays of the real ``dtype`` (arguments of
    the compiled step): every schedule, ``probe_on`` and ``positions_on`` switches, the
    position clip ``max_step_px`` and ``extra`` values."""
    values = {name: schedule(iteration) for name, schedule in schedules.items()}
    values["max_step_px"] = settings.position_correction.max_step_px
    values["probe_on"] = float(iteration >= settings.probe_update_start)
    start = settings.position_correction.start
    values["positions_on"] = float(start is not None and iteration >= start)
    values.update(extra or {})
    return {name: jnp.asarray(value, dtype) for name, value in values.items()}


@dataclass(frozen=True)
class ConventionalStructure:
    """Everything static about a conventional engine's iteration besides array shapes:
    the noise model's name (every number is an array in ``hyper``)."""

    noise: str


class ConventionalRunner:
    """Runner of a conventional engine (ePIE, LSQML): evaluates the schedules of the
    ``scheduled`` settings plus the base ones and calls the engine's compiled
    ``iteration_fn(variables, patterns, indices, weights, propagators, ramp, hyper, structure)``;
    ``constants``: further hyperparameters, the same at every iteration (numbers, arrays
    in ``hyper`` like the rest)."""

    def __init__(
        self,
        iteration_fn: Callable,
        scheduled: tuple[str, ...],
        settings: EngineSettings,
        measurements: Measurements,
        state: ReconState,
        constants: dict[str, float] | None = None,
    ):
        self.iteration_fn = iteration_fn
        self.constants = dict(constants or {})
        self.settings = settings
        self.measurements = measurements
        self.structure = ConventionalStructure(settings.noise.model)
        self.schedules = base_schedules(settings) | {
            name: make_schedule(getattr(settings, name), name, settings.iterations)
            for name in scheduled
        }
        self.propagators = state.propagators(measurements)

    def step(self, state: ReconState, groups: Groups, iteration: int) -> Step:
        real = self.measurements.precision.real
        arguments = (
            (state.object, state.probe, state.positions_px),
            self.measurements.patterns,
            jnp.asarray(groups.indices),
            jnp.asarray(groups.weights, real),
            self.propagators,
            self.measurements.detector_ramp,
            hyperparameters(self.settings, self.schedules, iteration, real, self.constants),
        )
        return Step(self.iteration_fn, arguments, self.structure)

    def finish(self, state: ReconState, outputs: Any) -> tuple[ReconState, float]:
        (obj, probe, positions), loss = outputs
        return replace(state, object=obj, probe=probe, positions_px=positions), float(loss)

    def iteration(
        self, state: ReconState, groups: Groups, iteration: int
    ) -> tuple[ReconState, float]:
        return self.finish(state, self.step(state, groups, iteration)())


ENGINE_MODULES = {
    "gradient": "ptyopt.engines.gradient",
    "epie": "ptyopt.engines.epie",
    "lsqml": "ptyopt.engines.lsqml",
}


@jax.jit
def _all_finite(obj: jnp.ndarray, probe: jnp.ndarray, positions_px: jnp.ndarray) -> jnp.ndarray:
    """(3,) bool: whether object, probe and positions are all finite (one transfer)."""
    return jnp.stack([jnp.all(jnp.isfinite(x)) for x in (obj, probe, positions_px)])


def _check_finite(state: ReconState, loss: float, engine: str, iteration: int) -> None:
    if not np.isfinite(loss):
        raise DivergenceError(engine, iteration, f"loss is {loss}")
    flags = np.asarray(_all_finite(state.object, state.probe, state.positions_px))
    for name, finite in zip(("object", "probe", "positions_px"), flags, strict=True):
        if not finite:
            raise DivergenceError(engine, iteration, f"{name} holds NaN or inf")


def prepare_state(state: ReconState, settings: EngineSettings, seed: int) -> ReconState:
    """Apply an engine's requested number of probe modes and slices."""
    if settings.probe_modes is not None:
        state = with_probe_modes(state, settings.probe_modes, seed)
    if settings.slices is not None:
        state = with_slices(state, settings.slices)
    return state


#: A reconstruction as a generator: it yields each compiled :class:`Step`, is sent
#: back what the step :class:`Computed`, and returns its result (:func:`run_alone`
#: runs one, :func:`ptyopt.engines.batched.run_batched` several in lockstep).
Steps = Generator[Step, Computed, Any]


def run_alone(steps: Steps) -> Any:
    """Run ``steps`` on its own, each step as it comes; returns its result."""
    try:
        step = next(steps)
        while True:
            started = time.perf_counter()
            outputs = jax.block_until_ready(step())
            step = steps.send(Computed(outputs, time.perf_counter() - started))
    except StopIteration as done:
        return done.value


def engine_steps(
    state: ReconState,
    measurements: Measurements,
    settings: EngineSettings,
    engine_index: int,
    seed: int,
    observers: Iterable[Observer] = (),
) -> Steps:
    """One engine for its iterations, as :data:`Steps`: groups, compiled iteration,
    constraints, divergence check, observers; returns the final state."""
    where = f"plan.engines[{engine_index}]"
    constraints = parse_constraints(settings.constraints, f"{where}.constraints")
    state = prepare_state(state, settings, seed + engine_index)
    runner = importlib.import_module(ENGINE_MODULES[settings.kind]).make_runner(
        settings, measurements, state
    )
    grouper = Grouper(
        measurements.geometry.positions_px,
        settings.group_size,
        settings.grouping,
        seed + engine_index,
    )
    for iteration in range(settings.iterations):
        started = time.perf_counter()
        step = runner.step(state, grouper.groups(iteration), iteration)
        prepared = time.perf_counter() - started
        computed = yield step
        resumed = time.perf_counter()
        state, loss = runner.finish(state, computed.outputs)
        state = apply_constraints(state, measurements, constraints, iteration)
        state = replace(state, iterations_done=state.iterations_done + 1)
        _check_finite(state, loss, settings.kind, iteration)
        seconds = prepared + computed.seconds + time.perf_counter() - resumed
        report = IterationReport(
            settings.kind,
            engine_index,
            iteration,
            loss,
            seconds,
            state,
            compiled=iteration == 0 or computed.compiled,
        )
        for observer in observers:
            observer(report)
    return state


def run_engine(
    state: ReconState,
    measurements: Measurements,
    settings: EngineSettings,
    engine_index: int,
    seed: int,
    observers: Iterable[Observer] = (),
) -> ReconState:
    """Run one engine for its iterations (:func:`engine_steps` on its own)."""
    return run_alone(engine_steps(state, measurements, settings, engine_index, seed, observers))


def plan_steps(
    plan: Plan,
    measurements: Measurements,
    observers: Iterable[Observer] = (),
    state: ReconState | None = None,
) -> Steps:
    """:func:`run_plan` as :data:`Steps`: the checks and the initial state come with the
    first step."""
    measurements = with_plan(measurements, plan)
    check_bandlimit(plan.bandlimit, measurements.nyquist_angle_mrad, measurements.semiangle_mrad)
    observers = list(observers)
    if state is None:
        state = initial_state(
            measurements,
            measurements.microscope.slices,
            plan.probe_modes,
            plan.seed,
            plan.bandlimit,
        )
    else:
        state = replace(state.in_precision(plan.dtypes), bandlimit=plan.bandlimit)
    for index, settings in enumerate(plan.engines):
        state = yield from engine_steps(state, measurements, settings, index, plan.seed, observers)
    return state


def run_plan(
    plan: Plan,
    measurements: Measurements,
    observers: Iterable[Observer] = (),
    state: ReconState | None = None,
) -> ReconState:
    """Run every engine of ``plan`` in order on one state and return the final state.
    The measurements are taken as the plan assumes them (:func:`with_plan`: its
    precision, probe optics, thickness, slicing and scan calibration, else the nominal
    ones); a fresh initial state is built from those unless ``state`` is given; either
    way with the plan's band limit and precision. A band limit inside the probe's
    aperture, a multislice plan of unknown thickness or a calibrated scan off the object
    grid raise :class:`ConfigError` before any compute."""
    return run_alone(plan_steps(plan, measurements, observers, state))
