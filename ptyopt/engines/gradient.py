"""Gradient-descent engine: autodiff of the noise-model loss plus cost regularizers.

Per group: loss = weighted mean per-position data loss + Σ_k λ_k·R_k(object, probe);
variables step along the conjugate Wirtinger gradient (JAX's ``grad`` of a real loss
with respect to a complex array is the conjugate of the descent direction), each with
its own optax solver: ``adam``, ``sgd`` (momentum/Nesterov) or ``polyak_sgd`` (step
min(lr, L/‖g‖²), i.e. f_min = 0). Positions use Adam with the position-correction
step as learning rate, updated only for the group's positions and clipped to
``max_step_px``. Every number — learning rates, ε, weights, on/off switches, the solver
constants (Adam's b1/b2, momentum, the Nesterov switch) and ``max_step_px`` — is an array
argument of one compiled iteration (``lax.scan`` over groups); only names are static.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import jax
import jax.numpy as jnp
import optax

from ptyopt import model
from ptyopt.engines.chunks import summed_group_loss
from ptyopt.engines.common import Step, base_schedules, hyperparameters
from ptyopt.grouping import Groups
from ptyopt.initial import Measurements, ReconState
from ptyopt.noise import noise_model
from ptyopt.plan import GradientSettings, SolverSettings
from ptyopt.regularizers import REGULARIZERS, parse_regularizers
from ptyopt.schedules import make_schedule


@dataclass(frozen=True)
class Structure:
    """Everything static about a gradient iteration besides array shapes: names only
    (noise model, regularizers, the object's and the probe's solver); every number,
    solver constants included, is an array in ``hyper``."""

    noise: str
    regularizers: tuple[str, ...]
    object_solver: str
    probe_solver: str


SOLVER_CONSTANTS = ("momentum", "nesterov", "b1", "b2")
"""The solver settings besides name and learning rate: ``hyper[f"{variable}_{name}"]``."""

POSITION_SOLVER = {"b1": 0.9, "b2": 0.999, "momentum": 0.0, "nesterov": 0.0}
"""The positions' solver: Adam with the default moments."""


def solver_constants(variable: str, solver: SolverSettings) -> dict[str, float]:
    """``{variable}_{constant}`` → value for :data:`SOLVER_CONSTANTS` (``nesterov`` 0/1)."""
    return {f"{variable}_{name}": float(getattr(solver, name)) for name in SOLVER_CONSTANTS}


def _momentum(decay: jnp.ndarray, nesterov: jnp.ndarray) -> optax.GradientTransformation:
    """Heavy-ball momentum t ← g + decay·t, stepping along t, or along g + decay·t when
    ``nesterov`` is 1 (optax.trace with both as arrays; decay 0 is plain SGD)."""

    def init(params):
        return optax.TraceState(trace=jax.tree.map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        trace = jax.tree.map(lambda g, t: g + decay * t, updates, state.trace)
        out = jax.tree.map(
            lambda g, t: (1 - nesterov) * t + nesterov * (g + decay * t), updates, trace
        )
        return out, optax.TraceState(trace=trace)

    return optax.GradientTransformation(init, update)


def _direction(
    name: str, learning_rate, constants: dict[str, jnp.ndarray]
) -> optax.GradientTransformationExtraArgs:
    """Transformation whose output is the step to add (descent already applied);
    ``constants`` holds b1, b2, momentum, nesterov by their names."""
    if name == "adam":
        inner = optax.scale_by_adam(constants["b1"], constants["b2"])
    elif name == "sgd":
        inner = _momentum(constants["momentum"], constants["nesterov"])
    else:  # polyak_sgd: the step size is part of the direction
        return optax.chain(
            optax.scale_by_polyak(f_min=0.0, max_learning_rate=learning_rate), optax.scale(-1.0)
        )
    return optax.chain(
        inner, optax.scale(-1.0), optax.scale_by_learning_rate(learning_rate, flip_sign=False)
    )


@partial(jax.jit, static_argnames=("structure",))
def gradient_iteration(
    variables,
    solver_states,
    patterns,
    indices,
    weights,
    propagators,
    detector_ramp,
    hyper,
    structure: Structure,
):
    """One pass over all groups. variables (object, probe, positions); solver_states
    their optax states; indices/weights (n_groups, G); hyper dict of scalar arrays.
    Returns the new variables and states and the mean data loss per position."""
    noise = noise_model(structure.noise)

    def constants(variable: str) -> dict[str, jnp.ndarray]:
        return {name: hyper[f"{variable}_{name}"] for name in SOLVER_CONSTANTS}

    def group_step(carry, group):
        (obj, probe, positions), (s_obj, s_probe, s_pos) = carry
        idx, w = group

        def loss_fn(obj, probe, positions):
            summed = summed_group_loss(
                obj,
                probe,
                positions[idx],
                w,
                patterns[idx],
                propagators,
                detector_ramp,
                noise.loss,
                hyper["epsilon"],
            )
            data = summed / jnp.sum(w)
            cost = sum(
                hyper[f"weight_{name}"] * REGULARIZERS[name](obj, probe)
                for name in structure.regularizers
            )
            return data + cost, data

        (total, data), (g_obj, g_probe, g_pos) = jax.value_and_grad(
            loss_fn, argnums=(0, 1, 2), has_aux=True
        )(obj, probe, positions)
        object_step = _direction(structure.object_solver, hyper["object_lr"], constants("object"))
        u_obj, s_obj = object_step.update(jnp.conj(g_obj), s_obj, obj, value=total)
        probe_step = _direction(structure.probe_solver, hyper["probe_lr"], constants("probe"))
        u_probe, s_probe = probe_step.update(jnp.conj(g_probe), s_probe, probe, value=total)
        position_step = _direction("adam", hyper["position_step"], POSITION_SOLVER)
        u_pos, s_pos = position_step.update(g_pos, s_pos, positions, value=total)
        in_group = jnp.zeros(positions.shape[0], positions.dtype).at[idx].max(w)[:, None]
        clip = hyper["max_step_px"]
        u_pos = jnp.clip(u_pos, -clip, clip) * in_group * hyper["positions_on"]
        moved = model.keep_windows_inside(positions + u_pos, probe.shape[-2:], obj.shape[-2:])
        new = (obj + u_obj, probe + u_probe * hyper["probe_on"], moved)
        return (new, (s_obj, s_probe, s_pos)), data

    (variables, solver_states), losses = jax.lax.scan(
        group_step, (variables, solver_states), (indices, weights)
    )
    return variables, solver_states, jnp.mean(losses)


class GradientRunner:
    """Holds the solver states and schedules of one gradient engine run."""

    def __init__(self, settings: GradientSettings, measurements: Measurements, state: ReconState):
        n = settings.iterations
        self.measurements = measurements
        self.settings = settings
        self.regularizers = parse_regularizers(settings.regularizers, "regularizers", n)
        self.structure = Structure(
            settings.noise.model,
            tuple(r.name for r in self.regularizers),
            settings.object_solver.name,
            settings.probe_solver.name,
        )
        self.constants = solver_constants("object", settings.object_solver) | solver_constants(
            "probe", settings.probe_solver
        )
        self.schedules = base_schedules(settings) | {
            "object_lr": make_schedule(
                settings.object_solver.learning_rate, "object_solver.learning_rate", n
            ),
            "probe_lr": make_schedule(
                settings.probe_solver.learning_rate, "probe_solver.learning_rate", n
            ),
        }
        self.propagators = state.propagators(measurements)
        # a solver's initial state does not depend on its constants
        self.solver_states = (
            _direction(settings.object_solver.name, 1.0, POSITION_SOLVER).init(state.object),
            _direction(settings.probe_solver.name, 1.0, POSITION_SOLVER).init(state.probe),
            _direction("adam", 1.0, POSITION_SOLVER).init(state.positions_px),
        )

    def _hyper(self, iteration: int) -> dict[str, jnp.ndarray]:
        weights = {f"weight_{r.name}": r.weight_at(iteration) for r in self.regularizers}
        extra = weights | self.constants
        real = self.measurements.precision.real
        return hyperparameters(self.settings, self.schedules, iteration, real, extra)

    def step(self, state: ReconState, groups: Groups, iteration: int) -> Step:
        arguments = (
            (state.object, state.probe, state.positions_px),
            self.solver_states,
            self.measurements.patterns,
            jnp.asarray(groups.indices),
            jnp.asarray(groups.weights, self.measurements.precision.real),
            self.propagators,
            self.measurements.detector_ramp,
            self._hyper(iteration),
        )
        return Step(gradient_iteration, arguments, self.structure, varying=(0, 1))

    def finish(self, state: ReconState, outputs) -> tuple[ReconState, float]:
        (obj, probe, positions), self.solver_states, loss = outputs
        return replace(state, object=obj, probe=probe, positions_px=positions), float(loss)

    def iteration(
        self, state: ReconState, groups: Groups, iteration: int
    ) -> tuple[ReconState, float]:
        return self.finish(state, self.step(state, groups, iteration)())


def make_runner(
    settings: GradientSettings, measurements: Measurements, state: ReconState
) -> GradientRunner:
    return GradientRunner(settings, measurements, state)
