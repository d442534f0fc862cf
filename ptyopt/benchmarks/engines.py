"""Engine benchmark on the ``bench`` dataset: compile time, seconds per iteration,
positions per second and peak memory per engine, group size, slices and probe modes.

Run ``python -m ptyopt.benchmarks.engines`` (``--quick`` for one small case per
engine; ``--engines``, ``--groups``, ``--slices``, ``--modes`` select cases). Each case
runs in its own process, so that its peak resident memory (``VmHWM``) and its
compilation are its own. In the process: the bench dataset (32×32 positions, 64 px,
simulated once and cached) is loaded, an initial state with S slices and M modes is
built, the engine's runner does one iteration (compilation + run) and then
``--iterations`` timed ones; s_per_iter is their median, compile_s the seconds JAX
reports spending on tracing, lowering and compiling (its ``/jax/core/compile/*``
duration events, :func:`compile_seconds`) during the run, positions/s = positions /
s_per_iter.
rss_growth_MB is the peak RSS minus the RSS before the reconstruction started (JAX,
abTEM and the data already loaded); on an accelerator, peak_device_MB is the most memory
JAX's allocator held in use on it (empty on the CPU, where RSS holds it).
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")

import argparse
import itertools
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from ptyopt import paths
from ptyopt.benchmarks.report import regenerate_command, write_report
from ptyopt.peers.exchange import peak_rss_MB, reset_peak_rss

ENGINE_DEFAULTS = {
    "gradient": {"object_solver": {"learning_rate": 0.02}},
    "epie": {"beta_object": 1.0, "beta_probe": 1.0},
    "lsqml": {"beta_object": 0.9, "beta_probe": 0.9},
}
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
"""JAX's duration events of tracing, lowering and XLA compilation."""

DECIMALS = {
    "compile_s": 2,
    "s_per_iter": 3,
    "positions_per_s": 0,
    "peak_rss_MB": 0,
    "rss_growth_MB": 0,
    "peak_device_MB": 0,
}


def _rss_MB() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_device_MB() -> float:
    """The most memory JAX's allocator has held in use on the first device in this
    process [MiB] (its ``peak_bytes_in_use``); NaN where the device does not report it
    (the CPU)."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use", math.nan) / 2**20


@contextmanager
def compile_seconds() -> Iterator[list[float]]:
    """Collect the seconds JAX spends tracing, lowering and compiling inside the block
    (:data:`COMPILE_EVENTS`); the yielded list holds one duration [s] per event, so
    ``sum`` of it is the block's compile time, measured directly rather than as the
    first call's time minus a later call's (which the machine's load makes noisy, even
    negative)."""
    import jax

    durations: list[float] = []

    def listen(event: str, seconds: float, **_metadata) -> None:
        if event in COMPILE_EVENTS:
            durations.append(seconds)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield durations
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


def measure_case(
    engine: str, group: int, slices: int, modes: int, iterations: int
) -> dict[str, float]:
    """Time one engine case on the bench dataset in this process (module docstring)."""
    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    from ptyopt.data.cache import load_or_simulate
    from ptyopt.initial import measurements_from

    measurements = measurements_from(load_or_simulate("bench", progress=False))
    return time_iterations(measurements, engine, group, slices, modes, iterations)


def engine_runner(measurements, engine: str, group: int, slices: int, modes: int, iterations: int):
    """The runner of ``engine`` (:data:`ENGINE_DEFAULTS`, probe refined from the start,
    ``iterations`` planned) on ``measurements`` with groups of ``group``, ``slices``
    slices and ``modes`` probe modes, its initial state and its grouper (sparse)."""
    from ptyopt.engines.common import ENGINE_MODULES, prepare_state
    from ptyopt.grouping import Grouper
    from ptyopt.initial import initial_state
    from ptyopt.plan import parse_plan

    settings = parse_plan(
        {
            "engines": [
                {
                    "kind": engine,
                    "iterations": iterations,
                    "group_size": group,
                    "probe_update_start": 0,
                    **ENGINE_DEFAULTS[engine],
                }
            ]
        }
    ).engines[0]
    state = prepare_state(initial_state(measurements, slices, modes, seed=0), settings, 0)
    module = __import__(ENGINE_MODULES[engine], fromlist=["make_runner"])
    runner = module.make_runner(settings, measurements, state)
    return runner, state, Grouper(measurements.geometry.positions_px, group, "sparse", 0)


def time_iterations(
    measurements, engine: str, group: int, slices: int, modes: int, iterations: int
) -> dict[str, float]:
    """Run ``engine`` (:func:`engine_runner`) on ``measurements``
    (:class:`ptyopt.initial.Measurements`) for 1 + ``iterations`` iterations in this
    process. Returns compile_s (:func:`compile_seconds` of the whole run), s_per_iter (the
    median of the timed iterations) [s], positions_per_s, peak_rss_MB (the process's
    maximum resident memory during the reconstruction, the measurements it holds
    included: the peak is reset at the call, :func:`~ptyopt.peers.exchange.reset_peak_rss`,
    where Linux allows), rss_growth_MB (its growth since the call) and peak_device_MB
    (:func:`peak_device_MB`) [MiB]."""
    import jax

    reset_peak_rss()  # what loading or making the data took and freed is not the engine's
    rss_before = _rss_MB()
    runner, state, grouper = engine_runner(
        measurements, engine, group, slices, modes, iterations + 1
    )
    seconds = []
    with compile_seconds() as compiling:
        for iteration in range(iterations + 1):
            started = time.perf_counter()
            state, _ = runner.iteration(state, grouper.groups(iteration), iteration)
            jax.block_until_ready(state.object)
            seconds.append(time.perf_counter() - started)
    per_iteration = statistics.median(seconds[1:])
    peak = peak_rss_MB()
    return {
        "engine": engine,
        "group": group,
        "slices": slices,
        "modes": modes,
        "compile_s": sum(compiling),
        "s_per_iter": per_iteration,
        "positions_per_s": len(measurements.geometry.positions_px) / per_iteration,
        "peak_rss_MB": peak,
        "rss_growth_MB": peak - rss_before,
        "peak_device_MB": peak_device_MB(),
    }


def run_cases(
    cases: Sequence[tuple[str, int, int, int]],
    iterations: int,
    on_table: Callable[[pd.DataFrame], None] = lambda table: None,
) -> pd.DataFrame:
    """Each case in a fresh process; one row per case. ``on_table`` is given the rows so
    far after every case (a run stopped part way keeps what it measured)."""
    rows = []
    for engine, group, slices, modes in cases:
        print(f"{engine} G={group} S={slices} M={modes} ...", end=" ", flush=True)
        command = [
            sys.executable,
            "-m",
            __spec__.name,
            "--case",
            engine,
            str(group),
            str(slices),
            str(modes),
            "--iterations",
            str(iterations),
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"case {engine} G={group} S={slices} M={modes} failed:\n{result.stderr[-2000:]}"
            )
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        print(f"{rows[-1]['s_per_iter']:.3f} s/iter", flush=True)
        on_table(pd.DataFrame(rows))
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--engines", nargs="+", default=list(ENGINE_DEFAULTS), choices=list(ENGINE_DEFAULTS)
    )
    parser.add_argument("--groups", nargs="+", type=int, default=[16, 64, 256])
    parser.add_argument("--slices", nargs="+", type=int, default=[1, 12])
    parser.add_argument("--modes", nargs="+", type=int, default=[1, 4])
    parser.add_argument(
        "--iterations", type=int, default=2, help="timed iterations per case after the first"
    )
    parser.add_argument("--quick", action="store_true", help="one case per engine: G=64, S=1, M=1")
    parser.add_argument("--output", type=Path, default=paths.reports_dir() / "engines.md")
    parser.add_argument(
        "--case", nargs=4, metavar=("ENGINE", "G", "S", "M"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.case:
        engine, group, slices, modes = args.case[0], *map(int, args.case[1:])
        print(json.dumps(measure_case(engine, group, slices, modes, args.iterations)))
        return
    if args.quick:
        cases = [(engine, 64, 1, 1) for engine in args.engines]
    else:
        cases = list(itertools.product(args.engines, args.groups, args.slices, args.modes))
    started = time.perf_counter()
    lines = [
        (
            "- dataset: `bench` (Si [110] 49.9 Å, 32×32 positions, 64 px detector binned by 2, "
            "1e5 e/Å²)"
        ),
        "- total run time: {seconds:.0f} s so far",
        f"- regenerate: `{regenerate_command(__spec__.name, argv)}`",
        "",
        (
            "Method (see `ptyopt/benchmarks/engines.py`): one process per case; "
            "compile_s = the seconds JAX reports tracing, lowering and compiling"
        ),
        "(its compile duration events); positions_per_s = 1024 / s_per_iter; peak_rss_MB is the",
        "process's maximum resident memory during the reconstruction (the peak is reset as it",
        "starts, so the dataset's loading is not counted), rss_growth_MB its growth during it.",
    ]

    def write(table: pd.DataFrame) -> None:
        now = [*lines[:1], lines[1].format(seconds=time.perf_counter() - started), *lines[2:]]
        write_report(args.output, "Engine benchmark", now, table, DECIMALS)

    run_cases(cases, args.iterations, write)


if __name__ == "__main__":
    main()
