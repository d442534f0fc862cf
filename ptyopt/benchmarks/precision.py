"""The cost of ``plan.precision: double``: seconds per iteration in single and in double,
per engine and number of slices, on a cached dataset (``quickstart`` unless
``--dataset``), measured interleaved in one process.

Run ``python -m ptyopt.benchmarks.precision`` (``--engines``, ``--slices``, ``--group``,
``--iterations`` select cases). For each case both precisions' runners are built from
the same plan (:func:`ptyopt.initial.with_plan`, the initial state, the engine's
runner), each runs one iteration (compilation), then ``--iterations`` timed pairs
alternate single and double iterations, so that both see the same load of the machine;
s_per_iter is each one's median and ``ratio`` double / single. JAX's float64 is on for
the whole run (as in a process that has run a double plan), so the single runs show
that a single plan keeps float32 with it on.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ptyopt import paths
from ptyopt.benchmarks.engines import ENGINE_DEFAULTS
from ptyopt.benchmarks.report import regenerate_command, write_report

PRECISIONS = ("single", "double")
DECIMALS = {"single_s_per_iter": 3, "double_s_per_iter": 3, "ratio": 2}


def measure_case(
    measurements, engine: str, group: int, slices: int, iterations: int
) -> dict[str, float]:
    """Median seconds per iteration of ``engine`` in each precision (module docstring)."""
    import jax

    from ptyopt.engines.common import ENGINE_MODULES, prepare_state
    from ptyopt.grouping import Grouper
    from ptyopt.initial import initial_state, with_plan
    from ptyopt.plan import parse_plan

    module = __import__(ENGINE_MODULES[engine], fromlist=["make_runner"])
    runs = {}
    for precision in PRECISIONS:
        engine_values = {
            "kind": engine,
            "iterations": iterations + 1,
            "group_size": group,
            **ENGINE_DEFAULTS[engine],
        }
        plan = parse_plan({"precision": precision, "slices": slices, "engines": [engine_values]})
        planned = with_plan(measurements, plan)
        settings = plan.engines[0]
        state = prepare_state(initial_state(planned, slices, 1, seed=0), settings, 0)
        runs[precision] = [module.make_runner(settings, planned, state), state, []]
    grouper = Grouper(measurements.geometry.positions_px, group, "sparse", 0)
    for iteration in range(iterations + 1):
        groups = grouper.groups(iteration)
        for run in runs.values():
            runner, state, seconds = run
            started = time.perf_counter()
            state, _ = runner.iteration(state, groups, iteration)
            jax.block_until_ready(state.object)
            seconds.append(time.perf_counter() - started)
            run[1] = state
    row: dict[str, float] = {"engine": engine, "group": group, "slices": slices}
    for precision, (_, state, seconds) in runs.items():
        row[f"{precision}_dtype"] = str(state.object.dtype)
        row[f"{precision}_s_per_iter"] = statistics.median(seconds[1:])
    row["ratio"] = row["double_s_per_iter"] / row["single_s_per_iter"]
    return row


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--engines", nargs="+", default=list(ENGINE_DEFAULTS), choices=list(ENGINE_DEFAULTS)
    )
    parser.add_argument("--slices", nargs="+", type=int, default=[1, 12])
    parser.add_argument("--dataset", default="quickstart", help="a recipe in conf/dataset")
    parser.add_argument("--group", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=5, help="timed pairs per case")
    parser.add_argument("--output", type=Path, default=paths.reports_dir() / "precision.md")
    args = parser.parse_args(argv)

    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    from ptyopt.data.cache import load_or_simulate
    from ptyopt.initial import measurements_from

    dataset = load_or_simulate(args.dataset, progress=False)
    measurements = measurements_from(dataset)
    started = time.perf_counter()
    rows = []
    for engine in args.engines:
        for slices in args.slices:
            rows.append(measure_case(measurements, engine, args.group, slices, args.iterations))
            print(rows[-1], flush=True)
    lines = [
        (
            f"- dataset: `{dataset.name}` ({dataset.n_positions} positions, "
            f"{dataset.detector_shape[0]} px patterns), group {args.group}, 1 probe mode"
        ),
        f"- total run time: {time.perf_counter() - started:.0f} s",
        f"- regenerate: `{regenerate_command(__spec__.name, argv)}`",
        "",
        "Method (see `ptyopt/benchmarks/precision.py`): per case, single and double runners of",
        f"the same plan in one process; one iteration each to compile, then {args.iterations}",
        "pairs of iterations alternating single and double; medians; ratio = double / single.",
    ]
    write_report(args.output, "Cost of plan.precision: double", lines, pd.DataFrame(rows), DECIMALS)


if __name__ == "__main__":
    main()
