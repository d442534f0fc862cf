"""Batched trials benchmark: trials per hour of shipped studies with
``study.batch_trials`` K = 1, 4, 16 (:mod:`ptyopt.engines.batched`).

Run ``python -m ptyopt.benchmarks.batched_trials`` (``--studies NAME[:TRIALS] ...``,
``--batch``, ``--rounds``). In one process, each study runs once per K per round, the
K values interleaved (in each round, every study with one K before the next K; the
order of ``--batch``, reversed in odd rounds), each run a fresh study
(``study.name=batched_bench_…``, its folder removed after) with the study's own
sampler, pruner and plan and ``TRIALS`` trials (default: its budget; K larger than
that runs as K = TRIALS).
wall_s is the time of :func:`ptyopt.study.runner.run_study` (dataset loaded before);
compile_s the sum of its trials' ``compile_time_s`` (a batched trial records its share),
so trials_per_hour = trials / wall_s and trials_per_hour_compiled = trials / (wall_s −
compile_s), the rate once every step is compiled. The first run of each K in the
process compiles its steps; later rounds find them compiled. The K values search
differently (a batch of K is asked before any of it is told, and the pruner sees fewer
finished trials), so the mix of pruned and complete trials differs between runs; best
is the study's best value found. The report is rewritten after every run.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")

import argparse
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import optuna
import pandas as pd

from ptyopt import paths
from ptyopt.benchmarks.report import regenerate_command, write_report

DECIMALS = {
    "wall_s": 1,
    "compile_s": 1,
    "trials_per_hour": 0,
    "trials_per_hour_compiled": 0,
    "best": 4,
    "load": 1,
}


def _config(study: str, trials: int | None, batch: int, name: str):
    """The validated (config, plan values) of shipped ``study`` renamed ``name`` with
    ``batch`` trials per batch and ``trials`` trials (None: its budget)."""
    from hydra import compose, initialize_config_dir

    from ptyopt.study.settings import validate

    overrides = [f"study={study}", f"study.name={name}", f"study.batch_trials={batch}"]
    if trials is not None:
        overrides.append(f"study.n_trials={trials}")
    with initialize_config_dir(config_dir=str(paths.conf_dir()), version_base="1.3"):
        return validate(compose("config", overrides=overrides))


def measure_run(study: str, trials: int | None, batch: int, round_: int) -> dict:
    """Run one fresh study (module docstring); its row."""
    from ptyopt.study.runner import dataset_for, run_study, study_dir

    name = f"batched_bench_{study}_K{batch}_r{round_}"
    config, plan_values = _config(study, trials, batch, name)
    folder = study_dir(name)
    shutil.rmtree(folder, ignore_errors=True)
    dataset_for(config, progress=False)  # simulated or read before the clock starts
    load = os.getloadavg()[0]
    started = time.perf_counter()
    result = run_study(config, plan_values, progress=False)
    wall = time.perf_counter() - started
    trials_run = result.trials
    maximize = result.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    shutil.rmtree(folder, ignore_errors=True)
    states = [t.state for t in trials_run]
    compile_s = sum(t.user_attrs.get("compile_time_s", 0.0) for t in trials_run)
    values = [t.values[0] for t in trials_run if t.state == optuna.trial.TrialState.COMPLETE]
    best = (max if maximize else min)(values, default=float("nan"))
    return {
        "study": study,
        "K": batch,
        "round": round_,
        "trials": len(states),
        "complete": states.count(optuna.trial.TrialState.COMPLETE),
        "pruned": states.count(optuna.trial.TrialState.PRUNED),
        "failed": states.count(optuna.trial.TrialState.FAIL),
        "wall_s": wall,
        "compile_s": compile_s,
        "trials_per_hour": 3600 * len(states) / wall,
        "trials_per_hour_compiled": 3600 * len(states) / max(wall - compile_s, 1e-9),
        "best": best,
        "load": load,
    }


#: A K > 1 "pays" where its median trials_per_hour_compiled beats K = 1's by this factor.
PAYS = 1.1


def summary_lines(table: pd.DataFrame) -> list[str]:
    """Per study and K: the median trials per hour (compiled) over rounds, its ratio to
    K = 1, and whether batching pays there (:data:`PAYS`)."""
    lines = [
        "",
        "Median over rounds of trials_per_hour_compiled, its ratio to K = 1, and whether",
        f"batching pays there (a ratio of at least {PAYS}):",
        "",
    ]
    for study, rows in table.groupby("study", sort=False):
        rates = rows.groupby("K")["trials_per_hour_compiled"].median()
        base = rates.get(1)
        parts = []
        for k, rate in rates.items():
            part = f"K = {k}: {rate:.0f}/h"
            if base and k != 1:
                part += (
                    f" (×{rate / base:.2f}, {'pays' if rate >= PAYS * base else 'does not pay'})"
                )
            parts.append(part)
        lines.append(f"- {study}: " + "; ".join(parts))
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--studies",
        nargs="+",
        default=["quickstart", "truth_free_lsqml_multislice:8"],
        help="shipped studies, NAME or NAME:TRIALS (default TRIALS: the study's budget)",
    )
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--output", type=Path, default=paths.reports_dir() / "batched_trials.md")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies = [
        (name, int(trials) if trials else None)
        for name, _, trials in (spec.partition(":") for spec in args.studies)
    ]
    rows, started = [], time.perf_counter()
    import jax

    cpu = jax.default_backend() == "cpu"
    lines = [
        f"- accelerator: {'none: JAX on the CPU' if cpu else jax.default_backend()}",
        f"- niceness: {os.nice(0)}; load average at the start: "
        + ", ".join(f"{x:.1f}" for x in os.getloadavg()),
        f"- regenerate: `{regenerate_command(__spec__.name, argv)}`",
        "",
        "Method: see `ptyopt/benchmarks/batched_trials.py`. load: the 1-minute load average",
        "when the run started (a shared machine runs slower and noisier).",
    ]
    for round_ in range(args.rounds):
        order = args.batch if round_ % 2 == 0 else list(reversed(args.batch))
        for batch in order:
            for study, trials in studies:
                print(f"{study} K={batch} round {round_} ...", end=" ", flush=True)
                rows.append(measure_run(study, trials, batch, round_))
                print(f"{rows[-1]['trials_per_hour']:.0f} trials/h", flush=True)
                table = pd.DataFrame(rows)
                total = [f"- total run time so far: {time.perf_counter() - started:.0f} s"]
                write_report(
                    args.output,
                    "Batched trials benchmark",
                    lines + total + summary_lines(table),
                    table,
                    DECIMALS,
                )


if __name__ == "__main__":
    main()
