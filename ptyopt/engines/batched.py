"""Several reconstructions in lockstep, their compiled steps vmapped together.

Each reconstruction (a *lane*) is a generator of :class:`~ptyopt.engines.common.Step`
(:func:`~ptyopt.engines.common.plan_steps`, or a study's trial). At each tick every
live lane has one step pending; steps that share a signature (the engine's compiled
function and static structure, and every argument's tree, shapes and dtypes, and which
arguments are shared) run as one call of ``jax.vmap`` of that function, the others on
their own. A step's reconstruction variables and solver states (``Step.varying``)
always get a lane axis; a data or hyperparameter leaf that every lane of the call holds
equal (the patterns, propagators, groups of trials of one seed, a switch that is off
in all of them) is passed once, unbatched. Lanes therefore batch exactly when their
shapes agree: trials whose categorical parameters change a shape (group size, probe
modes, slices, iterations of an engine) or a static name (noise model, solver) run in
smaller batches, or alone.

A lane that ends (done, pruned, diverged, failed) leaves; its place in the calls of its
signature is kept, filled with a copy of a live lane's arguments and its result
discarded, so the width of a call does not change while the lanes that formed it run
(no recompilation mid-engine). Each lane is charged the call's time divided by the
number of live lanes in it (so the lanes' times sum to the wall time of the calls),
plus the time its own code ran (constraints, observers, scoring): :class:`LaneClock`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ptyopt.engines.common import Computed, Step, Steps

#: Leaves up to this many elements are compared by value to be shared; larger ones only
#: when they are the same array (or were found equal before).
SMALL_LEAF = 1 << 16


class LaneClock:
    """The seconds a lane has used: the time its own code ran plus its shares of the
    batched calls. Called, it returns that total [s] (like ``time.perf_counter``, a
    clock whose differences are durations)."""

    def __init__(self) -> None:
        self.used = 0.0
        self._resumed: float | None = None

    def __call__(self) -> float:
        running = 0.0 if self._resumed is None else time.perf_counter() - self._resumed
        return self.used + running

    @contextmanager
    def running(self):
        """Count the time while the lane's own code runs."""
        self._resumed = time.perf_counter()
        try:
            yield
        finally:
            self.used += time.perf_counter() - self._resumed
            self._resumed = None

    def charge(self, seconds: float) -> None:
        """Add the lane's share of a batched call [s]."""
        self.used += seconds


@dataclass
class LaneResult:
    """How a lane ended: its ``value`` (what the generator returned) or the ``error``
    it raised (optuna.TrialPruned, DivergenceError, any other Exception)."""

    value: Any = None
    error: Exception | None = None


@dataclass
class BatchStats:
    """calls: number of compiled calls by width (lanes per call, padding included);
    lanes: live lanes summed over those calls; compiled: calls that compiled."""

    calls: dict[int, int] = field(default_factory=dict)
    lanes: int = 0
    compiled: int = 0


@lru_cache(maxsize=256)
def _vmapped(function: Callable, structure: Hashable, axes: tuple) -> Callable:
    """The jitted vmap of ``function(*arguments, structure)``; ``axes``: per argument
    its tree and the in_axes of its leaves (0 or None)."""
    in_axes = tuple(jax.tree.unflatten(tree, leaves) for tree, leaves in axes)
    return jax.jit(jax.vmap(lambda *arguments: function(*arguments, structure), in_axes))


class _Equal:
    """Whether arrays of several lanes are equal; large ones compared once per pair."""

    def __init__(self) -> None:
        self._known: dict[tuple[int, int], tuple[Any, Any, bool]] = {}

    def __call__(self, values: Sequence[Any]) -> bool:
        first = values[0]
        return all(self._pair(first, other) for other in values[1:])

    def _pair(self, a: Any, b: Any) -> bool:
        if a is b:
            return True
        if np.shape(a) != np.shape(b) or jnp.result_type(a) != jnp.result_type(b):
            return False
        if np.size(a) <= SMALL_LEAF:
            return bool(np.array_equal(np.asarray(a), np.asarray(b)))
        key = (id(a), id(b))
        if key not in self._known:  # the arrays are kept, so their ids stay theirs
            self._known[key] = (a, b, bool(np.array_equal(np.asarray(a), np.asarray(b))))
        return self._known[key][2]


def _leaf_signature(leaf: Any) -> tuple:
    return (np.shape(leaf), str(jnp.result_type(leaf)))


def _in_axes(steps: Sequence[Step], equal: _Equal) -> tuple:
    """vmap's in_axes for ``steps`` sharing a call, per argument its tree and the axes
    of its leaves: 0 for every leaf of the varying arguments and for the other leaves
    the lanes do not all hold equal, else None."""
    in_axes = []
    for position, argument in enumerate(steps[0].arguments):
        leaves, tree = jax.tree.flatten(argument)
        lanes = [jax.tree.leaves(step.arguments[position]) for step in steps]
        varying = position in steps[0].varying
        axes = [
            0 if varying or not equal([lane[k] for lane in lanes]) else None
            for k in range(len(leaves))
        ]
        in_axes.append((tree, tuple(axes)))
    return tuple(in_axes)


def _shape_signature(step: Step) -> Hashable:
    """What must agree for two steps to share a call: function, structure, trees,
    shapes and dtypes of every argument."""
    return (
        id(step.function),
        step.structure,
        tuple(
            (jax.tree.structure(argument), tuple(map(_leaf_signature, jax.tree.leaves(argument))))
            for argument in step.arguments
        ),
    )


def _cache_size(function: Callable) -> int:
    return function._cache_size() if hasattr(function, "_cache_size") else 0


def _call(steps: Sequence[Step], width: int, equal: _Equal) -> tuple[list[Any], float, bool]:
    """Run ``steps`` (one per live lane) as one call ``width`` lanes wide (≥ len(steps);
    the rest filled with the first step's arguments). Returns each step's outputs, the
    call's seconds and whether it compiled."""
    started = time.perf_counter()
    if width == 1:
        before = _cache_size(steps[0].function)
        outputs = [jax.block_until_ready(steps[0]())]
        compiled = _cache_size(steps[0].function) > before
        return outputs, time.perf_counter() - started, compiled
    padded = list(steps) + [steps[0]] * (width - len(steps))
    in_axes = _in_axes(padded, equal)
    arguments = []
    for position, (tree, axes) in enumerate(in_axes):
        lanes = [jax.tree.leaves(step.arguments[position]) for step in padded]
        leaves = [
            lanes[0][k] if axis is None else jnp.stack([lane[k] for lane in lanes])
            for k, axis in enumerate(axes)
        ]
        arguments.append(jax.tree.unflatten(tree, leaves))
    function = _vmapped(steps[0].function, steps[0].structure, in_axes)
    before = _cache_size(function)
    batched = jax.block_until_ready(function(*arguments))
    compiled = _cache_size(function) > before
    outputs = [jax.tree.map(lambda x, lane=lane: x[lane], batched) for lane in range(len(steps))]
    return outputs, time.perf_counter() - started, compiled


def run_batched(
    lanes: Sequence[Steps],
    clocks: Sequence[LaneClock],
    ended: Callable[[int, LaneResult], None] = lambda lane, result: None,
    stats: BatchStats | None = None,
) -> list[LaneResult]:
    """Run the generators ``lanes`` in lockstep (module docstring), each timed by its
    clock in ``clocks``; ``ended(lane, result)`` is called as each lane ends (a pruned
    trial is told at once). Returns every lane's :class:`LaneResult`. KeyboardInterrupt
    (and other BaseExceptions) propagate at once."""
    results: list[LaneResult | None] = [None] * len(lanes)
    pending: dict[int, Step] = {}

    def advance(lane: int, computed: Computed | None) -> None:
        try:
            with clocks[lane].running():
                step = next(lanes[lane]) if computed is None else lanes[lane].send(computed)
        except StopIteration as done:
            results[lane] = LaneResult(value=done.value)
        except Exception as err:  # pruned, diverged, failed: this lane only
            results[lane] = LaneResult(error=err)
        else:
            pending[lane] = step
            return
        ended(lane, results[lane])

    try:
        _lockstep(lanes, clocks, advance, pending, stats)
    except BaseException:  # Ctrl-C: every unfinished lane ends as a reconstruction alone does
        for lane, result in enumerate(results):
            if result is None:
                lanes[lane].close()
        raise
    return [result for result in results if result is not None]


def _lockstep(
    lanes: Sequence[Steps],
    clocks: Sequence[LaneClock],
    advance: Callable[[int, Computed | None], None],
    pending: dict[int, Step],
    stats: BatchStats | None,
) -> None:
    """Start every lane, then tick until none is pending (see :func:`run_batched`)."""
    members: dict[Hashable, set[int]] = {}  # lanes that ever called with a shape signature
    equal = _Equal()
    for lane in range(len(lanes)):
        advance(lane, None)
    while pending:
        ticking, groups = dict(pending), {}
        pending.clear()
        for lane, step in ticking.items():
            groups.setdefault(_shape_signature(step), []).append(lane)
        for signature, group in groups.items():
            members.setdefault(signature, set()).update(group)
            width = len(members[signature])
            outputs, seconds, compiled = _call([ticking[k] for k in group], width, equal)
            if stats is not None:
                stats.calls[width] = stats.calls.get(width, 0) + 1
                stats.lanes += len(group)
                stats.compiled += compiled
            share = seconds / len(group)
            for lane, output in zip(group, outputs, strict=True):
                clocks[lane].charge(share)
                advance(lane, Computed(output, share, compiled))
