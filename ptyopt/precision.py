"""The floating-point precision of a reconstruction, the one place its dtypes come from.

A plan's ``precision`` (:class:`ptyopt.plan.Plan`) names one of :data:`PRECISIONS`:
``single`` (float32 / complex64, the default) or ``double`` (float64 / complex128). Every
array a reconstruction computes with (object, probe, positions, patterns as the model
sees them, propagators, detector ramp, hyperparameters, optimiser states) takes its
dtype from the plan's :class:`Precision`, never from JAX's default: a single plan stays
complex64 in a process where JAX's float64 is on (``JAX_ENABLE_X64=1``, or a double
plan run before). A double plan turns JAX's float64 on itself (:meth:`Precision.activate`);
arrays made before keep their dtypes, and compiled functions are recompiled for it
(JAX's compilation cache keys include the setting).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np


@dataclass(frozen=True)
class Precision:
    """name: the plan's value; real, complex: the dtypes of real and complex arrays."""

    name: str
    real: np.dtype
    complex: np.dtype

    def activate(self) -> None:
        """Make JAX hold this precision's arrays: for a 64-bit precision, turn on
        ``jax_enable_x64`` (process-wide, and left on; harmless for single plans,
        whose dtypes are explicit). Raises RuntimeError where a ``jax.enable_x64(False)``
        context keeps float64 off."""
        if self.real.itemsize <= 4 or jax.config.jax_enable_x64:
            return
        jax.config.update("jax_enable_x64", True)
        if not jax.config.jax_enable_x64:
            raise RuntimeError(
                f"precision {self.name!r} needs JAX's float64, which a "
                "jax.enable_x64(False) context keeps off here"
            )


SINGLE = Precision("single", np.dtype(np.float32), np.dtype(np.complex64))
DOUBLE = Precision("double", np.dtype(np.float64), np.dtype(np.complex128))

PRECISIONS: dict[str, Precision] = {p.name: p for p in (SINGLE, DOUBLE)}
"""The plan's ``precision`` values."""
