"""Schedules for any scalar hyperparameter: learning rates, β, regularizer weights, ε.

A schedule is written in a plan as a number (constant) or a mapping with ``kind``:

- ``{kind: constant, value}``
- ``{kind: cosine, value, end: 0, steps: <engine iterations>}``: cosine from value to end
- ``{kind: warmup_cosine, value (peak), start: 0, warmup, end: 0, steps}``
- ``{kind: exponential, value, rate, steps_per_decay: 1, end: null}``:
  value·rate^(i/steps_per_decay)
- ``{kind: piecewise, values: [v0, v1, ...], boundaries: [i1, ...]}``: v_k from iteration i_k

It is evaluated on the host once per iteration (optax schedules underneath) and the
value enters the jitted step as an array, so changing it never recompiles.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import optax

from ptyopt.errors import ConfigError

Schedule = Callable[[int], float]

_KEYS = {
    "constant": {"value"},
    "cosine": {"value", "end", "steps"},
    "warmup_cosine": {"value", "start", "warmup", "end", "steps"},
    "exponential": {"value", "rate", "steps_per_decay", "end"},
    "piecewise": {"values", "boundaries"},
}


def make_schedule(spec: Any, key: str, iterations: int) -> Schedule:
    """Schedule from a number or a mapping (see module docstring); ``key`` names the
    setting in error messages; ``iterations`` is the default length of decays."""
    if isinstance(spec, bool):
        raise ConfigError(f"{key}: expected a number or a schedule mapping, got {spec!r}")
    if isinstance(spec, (int, float)):
        value = float(spec)
        return lambda _: value
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{key}: expected a number or a schedule mapping, got {spec!r}")
    kind = spec.get("kind", "constant")
    if kind not in _KEYS:
        raise ConfigError(f"{key}.kind: unknown schedule {kind!r}; choose one of {sorted(_KEYS)}")
    unknown = set(spec) - _KEYS[kind] - {"kind"}
    if unknown:
        raise ConfigError(
            f"{key}: unknown key(s) {sorted(unknown)} for a {kind} schedule; "
            f"allowed: {sorted(_KEYS[kind])}"
        )
    build = {
        "constant": _constant,
        "cosine": _cosine,
        "warmup_cosine": _warmup_cosine,
        "exponential": _exponential,
        "piecewise": _piecewise,
    }[kind]
    try:
        optax_schedule = build(spec, iterations)
    except KeyError as missing:
        raise ConfigError(f"{key}: a {kind} schedule needs {missing.args[0]!r}") from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{key}: invalid {kind} schedule ({err})") from None
    return lambda i: float(optax_schedule(i))


def _constant(spec: Mapping, iterations: int) -> optax.Schedule:
    return optax.constant_schedule(float(spec["value"]))


def _steps(spec: Mapping, iterations: int) -> int:
    steps = int(spec.get("steps", iterations))
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return steps


def _cosine(spec: Mapping, iterations: int) -> optax.Schedule:
    value, end = float(spec["value"]), float(spec.get("end", 0.0))
    alpha = end / value if value else 0.0
    return optax.cosine_decay_schedule(value, _steps(spec, iterations), alpha)


def _warmup_cosine(spec: Mapping, iterations: int) -> optax.Schedule:
    return optax.warmup_cosine_decay_schedule(
        float(spec.get("start", 0.0)),
        float(spec["value"]),
        int(spec["warmup"]),
        _steps(spec, iterations),
        float(spec.get("end", 0.0)),
    )


def _exponential(spec: Mapping, iterations: int) -> optax.Schedule:
    rate = float(spec["rate"])
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    end = spec.get("end")
    return optax.exponential_decay(
        float(spec["value"]),
        int(spec.get("steps_per_decay", 1)),
        rate,
        end_value=None if end is None else float(end),
    )


def _piecewise(spec: Mapping, iterations: int) -> optax.Schedule:
    values, boundaries = [float(v) for v in spec["values"]], [int(b) for b in spec["boundaries"]]
    if len(values) != len(boundaries) + 1:
        raise ValueError(
            f"needs one more value than boundaries, got {len(values)} values and "
            f"{len(boundaries)} boundaries"
        )
    if boundaries != sorted(boundaries):
        raise ValueError(f"boundaries must increase, got {boundaries}")
    pieces = list(zip([0, *boundaries], values, strict=True))

    def schedule(i):
        return [v for start, v in pieces if i >= start][-1]

    return schedule
