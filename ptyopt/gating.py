"""start/stop/every gating of regularizers and constraints, validated once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ptyopt.errors import ConfigError


@dataclass(frozen=True)
class Gate:
    """Active at iterations start ≤ i < stop (stop ``None``: to the end) with
    (i − start) divisible by ``every``."""

    start: int = 0
    stop: int | None = None
    every: int = 1

    def active(self, iteration: int) -> bool:
        return (
            iteration >= self.start
            and (self.stop is None or iteration < self.stop)
            and (iteration - self.start) % self.every == 0
        )


def split_gate(settings: Mapping[str, Any], key: str) -> tuple[Gate, dict[str, Any]]:
    """The gate of a regularizer or constraint setting and its remaining parameters;
    raises :class:`ConfigError` naming ``key`` for bad start/stop/every."""
    params = dict(settings)
    start, stop, every = params.pop("start", 0), params.pop("stop", None), params.pop("every", 1)
    for name, value in (("start", start), ("every", every)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < (1 if name == "every" else 0)
        ):
            raise ConfigError(
                f"{key}.{name}: must be an integer >= {1 if name == 'every' else 0}, got {value!r}"
            )
    if stop is not None and (isinstance(stop, bool) or not isinstance(stop, int) or stop <= start):
        raise ConfigError(f"{key}.stop: must be an integer > start ({start}) or null, got {stop!r}")
    return Gate(start, stop, every), params
