"""Gradient-descent engine: autodiff of the noise-model loss plus cost regularizers.

Per group: loss = weighted mean per-position data loss + Σ_k λ_k·R_k(object, probe);
variables step along the conjugate Wirtinger gradient (JAX's ``grad`` of a real loss
with respect to a complex array is the conjugate of the descent direction), each with
its own optax solver: ``adam``, ``sgd`` (momentum/Nesterov) or ``polyak_sgd`` (step
min(lr, L/‖g‖²), i.e. f_min = 0). Positions use Adam with the position-correction
step as learning rate, updated only for the group's positions and clipped to
``max_step_px``. Learning rates, ε, weights and on/off switches are array arguments of
one compiled iteration (``lax.scan`` over groups).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import jax
import jax.numpy as jnp
import optax

from ptyopt import model
from ptyopt.engines.common import base_schedules, hyperparameters
from ptyopt.grouping import Groups
from ptyopt.initial import Measurements, ReconState
from ptyopt.noise import noise_model
from ptyopt.plan import GradientSettings, SolverSettings
from ptyopt.regularizers import REGULARIZERS, parse_regularizers
from ptyopt.schedules import make_schedule


@dataclass(frozen=True)
class SolverKind:
    """The structural part of a solver (static in the compiled step)."""

    name: str
    momentum: float
    nesterov: bool
    b1: float
    b2: float


@dataclass(frozen=True)
class Structure:
    """Everything static about a gradient iteration besides array shapes."""

    noise: str
    regularizers: tuple[str, ...]
    object_solver: SolverKind
    probe_solver: SolverKind
    max_step_px: float


POSITION_SOLVER = SolverKind("adam", 0.0, False, 0.9, 0.999)


def _kind(solver: SolverSettings) -> SolverKind:
    return SolverKind(solver.name, solver.momentum, solver.nesterov, solver.b1, solver.b2)


def _direction(kind: SolverKind, learning_rate) -> optax.GradientTransformationExtraArgs:
    """Transformation whose output is the step to add (descent already applied)."""
    if kind.name == "adam":
        inner = optax.scale_by_adam(kind.b1, kind.b2)
    elif kind.name == "sgd":
        inner = optax.trace(kind.momentum, kind.nesterov) if kind.momentum > 0 else optax.identity()
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

    def group_step(carry, group):
        (obj, probe, positions), (s_obj, s_probe, s_pos) = carry
        idx, w = group

        def loss_fn(obj, probe, positions):
            intensity = model.far_field_intensities(
                obj, probe, positions[idx], propagators, detector_ramp
            )
            data = jnp.sum(w * noise.loss(intensity, patterns[idx], hyper["epsilon"])) / jnp.sum(w)
            cost = sum(
                hyper[f"weight_{name}"] * REGULARIZERS[name](obj, probe)
                for name in structure.regularizers
            )
            return data + cost, data

        (total, data), (g_obj, g_probe, g_pos) = jax.value_and_grad(
            loss_fn, argnums=(0, 1, 2), has_aux=True
        )(obj, probe, positions)
        u_obj, s_obj = _direction(structure.object_solver, hyper["object_lr"]).update(
            jnp.conj(g_obj), s_obj, obj, value=total
        )
        u_probe, s_probe = _direction(structure.probe_solver, hyper["probe_lr"]).update(
            jnp.conj(g_probe), s_probe, probe, value=total
        )
        u_pos, s_pos = _direction(POSITION_SOLVER, hyper["position_step"]).update(
            g_pos, s_pos, positions, value=total
        )
        in_group = jnp.zeros(positions.shape[0], positions.dtype).at[idx].max(w)[:, None]
        u_pos = (
            jnp.clip(u_pos, -structure.max_step_px, structure.max_step_px)
            * in_group
            * hyper["positions_on"]
        )
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
            _kind(settings.object_solver),
            _kind(settings.probe_solver),
            float(settings.position_correction.max_step_px),
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
        self.solver_states = (
            _direction(self.structure.object_solver, 1.0).init(state.object),
            _direction(self.structure.probe_solver, 1.0).init(state.probe),
            _direction(POSITION_SOLVER, 1.0).init(state.positions_px),
        )

    def _hyper(self, iteration: int) -> dict[str, jnp.ndarray]:
        weights = {f"weight_{r.name}": r.weight_at(iteration) for r in self.regularizers}
        return hyperparameters(self.settings, self.schedules, iteration, weights)

    def iteration(
        self, state: ReconState, groups: Groups, iteration: int
    ) -> tuple[ReconState, float]:
        variables = (state.object, state.probe, state.positions_px)
        variables, self.solver_states, loss = gradient_iteration(
            variables,
            self.solver_states,
            self.measurements.patterns,
            jnp.asarray(groups.indices),
            jnp.asarray(groups.weights),
            self.propagators,
            self.measurements.detector_ramp,
            self._hyper(iteration),
            self.structure,
        )
        obj, probe, positions = variables
        return replace(state, object=obj, probe=probe, positions_px=positions), float(loss)


def make_runner(
    settings: GradientSettings, measurements: Measurements, state: ReconState
) -> GradientRunner:
    return GradientRunner(settings, measurements, state)
