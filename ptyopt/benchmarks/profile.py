"""Iteration profile against the FFT bound: how many FFTs and element-wise passes each
engine's compiled iteration does, and how much of its time the FFTs alone would take.

Run ``python -m ptyopt.benchmarks.profile`` (``make bench-profile``); it writes
``reports/profile.md`` and ``reports/profile.csv``. The case is the thick multislice
case of the peer scoreboard (``thick10``: 576 positions, 64 px, 10 slices, groups of
64, probe refined, one mode; ``--dataset``, ``--slices``, ``--modes``, ``--group`` change
it). For each engine, in this process:

- the iteration is traced (``jax.make_jaxpr`` of the engine's compiled step) and its
  work counted (:func:`count_work`): every 2-D FFT (each scan's body times its length;
  of a ``cond``, the cheaper branch, the one taken while position correction is off),
  and the bytes every other operation writes before XLA fuses them (an upper bound on
  element-wise traffic), expressed as passes over the iteration's waves (positions ×
  modes × slices × N² complex64);
- the FFT time: one N×N complex64 transform's time, measured on batches the size of
  one group's waves split into concurrent chunks as the engines split them (best of
  several, forward and inverse, measured beside each engine; every row takes the
  fastest of the run, :func:`with_fft_times`), times the count; the same for
  ``scipy.fft`` with all cores (what a faster FFT library would give);
- the iteration time: the median of ``--iterations`` timed iterations after one that
  compiles (:func:`ptyopt.benchmarks.engines.time_iterations`).

``fft_fraction`` = fft_s / s_per_iter: 1 would be FFT-bound; the rest of the time
(``other_s``) is element-wise work, copies and the window cuts and scatters.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")

import argparse
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from ptyopt import paths
from ptyopt.benchmarks.engines import engine_runner, time_iterations
from ptyopt.benchmarks.report import regenerate_command, write_report

COLUMNS = [
    "engine",
    "dataset",
    "positions",
    "pixels",
    "slices",
    "modes",
    "group_size",
    "ffts_per_iter",
    "ffts_per_position",
    "elementwise_passes",
    "fft_s",
    "scipy_fft_s",
    "s_per_iter",
    "fft_fraction",
    "other_s",
]
DECIMALS = {
    "ffts_per_position": 1,
    "elementwise_passes": 0,
    "fft_s": 3,
    "scipy_fft_s": 3,
    "s_per_iter": 3,
    "fft_fraction": 2,
    "other_s": 3,
}
_CONTROL = {"scan", "while", "cond", "pjit", "jit", "closed_call", "remat", "checkpoint"}
_CONTROL |= {"custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"}


@dataclass
class Work:
    """Work of a traced computation: ``ffts`` maps FFT lengths (a tuple) to the number
    of transforms; ``other_bytes`` [B] is what every other operation writes (before
    fusion); ``unknown_loops`` counts while loops whose body was counted once."""

    ffts: dict[tuple[int, ...], float] = field(default_factory=dict)
    other_bytes: float = 0.0
    unknown_loops: int = 0

    def add(self, other: Work, times: float = 1.0) -> None:
        for lengths, count in other.ffts.items():
            self.ffts[lengths] = self.ffts.get(lengths, 0.0) + times * count
        self.other_bytes += times * other.other_bytes
        self.unknown_loops += other.unknown_loops

    @property
    def n_ffts(self) -> float:
        return sum(self.ffts.values())

    @property
    def cost(self) -> float:
        """FFT flops (5·N·log2 N per N-point transform) plus other bytes: the order
        in which :func:`count_work` ranks the branches of a ``cond``."""
        flops = sum(c * 5 * math.prod(n) * math.log2(math.prod(n)) for n, c in self.ffts.items())
        return flops + self.other_bytes


def _sub_jaxprs(params: dict) -> list:
    """The jaxprs among an equation's parameters (closed ones opened)."""
    from jax.extend import core

    found = []
    for value in params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, core.ClosedJaxpr):
                found.append(item.jaxpr)
            elif isinstance(item, core.Jaxpr):
                found.append(item)
    return found


def count_work(jaxpr) -> Work:
    """FFTs and other bytes of a jaxpr (``jax.make_jaxpr(f)(...).jaxpr``), see
    :class:`Work`: a scan's body counts ``length`` times, a cond its cheapest branch,
    a while loop's body once (and ``unknown_loops`` says so)."""
    work = Work()
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "fft":
            lengths = tuple(int(n) for n in eqn.params["fft_lengths"])
            shape = eqn.invars[0].aval.shape
            batch = math.prod(shape[: len(shape) - len(lengths)])
            work.ffts[lengths] = work.ffts.get(lengths, 0.0) + batch
        elif name == "scan":
            work.add(count_work(eqn.params["jaxpr"].jaxpr), eqn.params["length"])
        elif name == "cond":
            branches = [count_work(b.jaxpr) for b in eqn.params["branches"]]
            work.add(min(branches, key=lambda w: w.cost))
        elif name == "while":
            work.add(count_work(eqn.params["body_jaxpr"].jaxpr))
            work.unknown_loops += 1
        elif name in _CONTROL or _sub_jaxprs(eqn.params):
            for sub in _sub_jaxprs(eqn.params):
                work.add(count_work(sub))
        else:
            work.other_bytes += sum(
                math.prod(v.aval.shape) * v.aval.dtype.itemsize
                for v in eqn.outvars
                if hasattr(v.aval, "shape")
            )
    return work


def iteration_work(measurements, engine: str, group: int, slices: int, modes: int) -> Work:
    """The work of one iteration of ``engine`` (:func:`ptyopt.benchmarks.engines.engine_runner`)
    on ``measurements`` with groups of ``group``, ``slices`` slices and ``modes`` modes."""
    import jax

    runner, state, grouper = engine_runner(measurements, engine, group, slices, modes, 2)
    step = runner.step(state, grouper.groups(0), 0)
    function = partial(step.function, structure=step.structure)
    return count_work(jax.make_jaxpr(function)(*step.arguments).jaxpr)


def _best_seconds(call: Callable[[], object], repeats: int) -> float:
    """The shortest of ``repeats`` timed calls [s] (after one untimed call)."""
    call()
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def fft_seconds(pixels: int, batch: int, repeats: int = 7) -> float:
    """XLA's seconds per pixels×pixels complex64 transform [s]: a jitted fft2 then ifft2
    of a (batch, N, N) array, best of ``repeats``; the batch split into the concurrent
    chunks the engines use (:mod:`ptyopt.engines.chunks`: two per core), since one XLA
    FFT runs on one core."""
    import jax
    import jax.numpy as jnp

    from ptyopt.engines.chunks import over_chunks

    data = jnp.asarray(_test_waves(pixels, batch))

    @jax.jit
    def round_trip(x):
        return over_chunks(lambda part: (jnp.fft.ifft2(jnp.fft.fft2(part)),), (x,), (0,))[0]

    return _best_seconds(lambda: round_trip(data).block_until_ready(), repeats) / (2 * batch)


def scipy_fft_seconds(pixels: int, batch: int, repeats: int = 7) -> float:
    """The same for ``scipy.fft`` with every core [s]."""
    import scipy.fft

    host = _test_waves(pixels, batch)
    return _best_seconds(
        lambda: scipy.fft.ifft2(scipy.fft.fft2(host, workers=-1), workers=-1), repeats
    ) / (2 * batch)


def _test_waves(pixels: int, batch: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.normal(size=(batch, pixels, pixels)) + 1j).astype(np.complex64)


def profile_engine(
    measurements, dataset: str, engine: str, group: int, slices: int, modes: int, iterations: int
) -> dict:
    """One row of the profile (module docstring), with its FFT times per transform
    (``xla_per_fft``, ``scipy_per_fft`` [s]) as measured beside it; :func:`with_fft_times`
    derives the FFT columns from them."""
    work = iteration_work(measurements, engine, group, slices, modes)
    pixels = measurements.patterns.shape[-1]
    positions = len(measurements.geometry.positions_px)
    xla_per_fft = fft_seconds(pixels, group * modes)
    scipy_per_fft = scipy_fft_seconds(pixels, group * modes)
    timed = time_iterations(measurements, engine, group, slices, modes, iterations)
    wave_bytes = positions * modes * slices * pixels**2 * np.dtype(np.complex64).itemsize
    return {
        "engine": engine,
        "dataset": dataset,
        "positions": positions,
        "pixels": pixels,
        "slices": slices,
        "modes": modes,
        "group_size": group,
        "ffts_per_iter": int(round(work.n_ffts)),
        "ffts_per_position": work.n_ffts / positions,
        "elementwise_passes": work.other_bytes / wave_bytes,
        "s_per_iter": timed["s_per_iter"],
        "n_window_ffts": work.ffts.get((pixels, pixels), 0.0),
        "xla_per_fft": xla_per_fft,
        "scipy_per_fft": scipy_per_fft,
    }


def with_fft_times(rows: list[dict]) -> list[dict]:
    """The rows with fft_s, scipy_fft_s, fft_fraction and other_s, each row's transforms
    timed at the fastest per-transform time measured in the run for its window and batch:
    the transform is the same for every engine of a case, and on a shared machine one
    measurement can be slowed by other work (12-08: 0.32 and 0.55 s for the same
    transforms minutes apart)."""
    best: dict[tuple[int, int], tuple[float, float]] = {}
    for row in rows:
        key = (row["pixels"], row["group_size"] * row["modes"])
        xla, scipy = best.get(key, (math.inf, math.inf))
        best[key] = (min(xla, row["xla_per_fft"]), min(scipy, row["scipy_per_fft"]))
    derived = []
    for row in rows:
        xla, scipy = best[(row["pixels"], row["group_size"] * row["modes"])]
        fft_s = row["n_window_ffts"] * xla
        derived.append(
            row
            | {
                "fft_s": fft_s,
                "scipy_fft_s": row["n_window_ffts"] * scipy,
                "fft_fraction": fft_s / row["s_per_iter"],
                "other_s": row["s_per_iter"] - fft_s,
            }
        )
    return derived


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="thick10")
    parser.add_argument("--engines", nargs="+", default=["epie", "lsqml", "gradient"])
    parser.add_argument("--slices", type=int, default=None, help="default: the dataset's")
    parser.add_argument("--modes", type=int, default=1)
    parser.add_argument("--group", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations")
    parser.add_argument("--output", type=Path, default=paths.reports_dir() / "profile.md")
    args = parser.parse_args(argv)

    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    from ptyopt.data.cache import load_or_simulate
    from ptyopt.initial import measurements_from

    measurements = measurements_from(load_or_simulate(args.dataset, progress=False))
    slices = args.slices or measurements.microscope.slices
    started, load = time.perf_counter(), os.getloadavg()[0]
    lines = [
        "- this run: {seconds:.0f} s so far, load average before it "
        f"{load:.1f} (other work on the machine: the times share it)",
        f"- regenerate: `{regenerate_command(__spec__.name, argv)}`",
        "",
        *(__doc__ or "").splitlines()[2:],
        "",
        "Columns: ffts_per_iter (N×N transforms, N = pixels), ffts_per_position (per "
        "position and iteration), elementwise_passes (bytes written by every other "
        "operation, unfused, over the bytes of the iteration's waves), fft_s [s] (XLA's "
        "time for those FFTs alone), scipy_fft_s [s] (scipy.fft's, all cores), "
        "s_per_iter [s], fft_fraction, other_s [s] = s_per_iter − fft_s.",
    ]
    rows = []
    for engine in args.engines:  # the report rewritten after each: a stopped run keeps it
        rows.append(
            profile_engine(
                measurements, args.dataset, engine, args.group, slices, args.modes, args.iterations
            )
        )
        table = pd.DataFrame(with_fft_times(rows), columns=COLUMNS)
        now = [lines[0].format(seconds=time.perf_counter() - started), *lines[1:]]
        write_report(args.output, "Iteration profile", now, table, DECIMALS)


if __name__ == "__main__":
    main()
