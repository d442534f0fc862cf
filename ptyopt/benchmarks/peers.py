"""Peer scoreboard: ptyopt's engines and peer packages' on the same datasets with the
same plan, side by side: time per iteration, memory, and the scores of the object.

Run ``python -m ptyopt.benchmarks.peers`` (``make bench-peers``; ``--quick`` for a few
iterations on the thin dataset; ``--datasets``, ``--engines``, ``--packages``,
``--repeats``, ``--iterations`` select). Every reconstruction runs in a fresh process
(the peer's in its own environment, :mod:`ptyopt.peers.base`; ours through the same
interface, :mod:`ptyopt.peers.ours`), and the packages alternate within each repeat
(ptyopt, peer, ptyopt, peer, …) so that their times are measured under the same load.
Packages whose adapter module or environment is missing are skipped, with the reason
in the report. Writes ``reports/peers/peers.csv``, ``peers.md`` and
``convergence.png`` (its points in ``convergence.csv``, the skip reasons in
``skipped.json``), and refreshes ``parity.md``
(:mod:`ptyopt.benchmarks.parity`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ptyopt import paths  # noqa: E402
from ptyopt.benchmarks.parity import write_parity  # noqa: E402
from ptyopt.benchmarks.report import regenerate_command, write_report  # noqa: E402
from ptyopt.data.cache import cached_dataset_path, load_or_simulate  # noqa: E402
from ptyopt.data.recipe import load_recipe  # noqa: E402
from ptyopt.errors import ConfigError  # noqa: E402
from ptyopt.initial import object_geometry  # noqa: E402
from ptyopt.metrics import score_object  # noqa: E402
from ptyopt.peers.base import (  # noqa: E402
    PeerPlan,
    PeerResult,
    PeerRunError,
    PeerUnavailableError,
)

#: Peer adapters by module name under :mod:`ptyopt.peers` (ptyopt's own is ``ours``).
PEERS = ("phaser", "py4dstem", "ptyrad", "ptychi")
DATASETS = ("thin_lowdose", "thick10")
ENGINES = ("epie", "lsqml", "gradient")


@dataclass(frozen=True)
class Case:
    """One dataset × engine family: the plan in ptyopt's terms and, per peer, its
    native overrides (the peer's own names)."""

    dataset: str
    plan: PeerPlan
    native: dict[str, dict] = field(default_factory=dict)

    def plan_for(self, package: str) -> PeerPlan:
        return replace(self.plan, native=self.native.get(package, {}))


def _steps(engine: str) -> dict[str, float]:
    """ptyopt's default steps per family (conf/engine): ePIE's textbook β = 1, LSQML's
    β = 1, the gradient engine's Adam rates."""
    if engine == "gradient":
        return {"learning_rate": 0.03, "probe_learning_rate": 0.005}
    return {"beta_object": 1.0, "beta_probe": 1.0}


#: Per dataset: slices, iterations, group size. Amplitude noise model throughout:
#: phaser's conventional engines (ePIE, LSQML) have no Poisson update.
SETTINGS = {
    "thin_lowdose": {"slices": 1, "iterations": 30, "group_size": 16},
    "thick10": {"slices": 10, "iterations": 40, "group_size": 64},
}
#: phaser's LSQML at the issue's reference settings (its own β: 2 for the object, 1 for
#: the probe), not the mapped β_O/S (no exact map exists: ptyopt.peers.phaser._solver).
PHASER_LSQML = {"solver": {"beta_object": 2.0, "beta_probe": 1.0}}


def cases(
    datasets: Sequence[str], engines: Sequence[str], iterations: int | None, every: int
) -> list[Case]:
    """The benchmark's cases: every dataset × engine family."""
    out = []
    for dataset in datasets:
        settings = dict(SETTINGS[dataset])
        if iterations is not None:
            settings["iterations"] = iterations
        for engine in engines:
            plan = PeerPlan(
                engine=engine,
                noise_model="amplitude",
                step=_steps(engine),
                snapshot_every=every,
                **settings,
            )
            native = {"phaser": PHASER_LSQML} if engine == "lsqml" else {}
            out.append(Case(dataset, plan, native))
    return out


def load_adapters(packages: Sequence[str]) -> tuple[dict[str, ModuleType], dict[str, str]]:
    """The adapter modules of ``packages`` that are present and installed (their
    ``version()`` answers), and the reason each other one is skipped."""
    adapters, skipped = {}, {}
    for package in packages:
        module_name = "ours" if package == "ptyopt" else package
        try:
            module = importlib.import_module(f"ptyopt.peers.{module_name}")
            module.version()
        except ModuleNotFoundError as error:
            skipped[package] = f"no adapter module ({error.name})"
        except PeerUnavailableError as error:
            skipped[package] = str(error)
        else:
            adapters[package] = module
    return adapters, skipped


@dataclass
class Run:
    case: Case
    package: str
    repeat: int
    result: PeerResult
    scores: dict[str, float]
    curve: list[tuple[float, float]]


def _scores(dataset, result: PeerResult) -> tuple[dict[str, float], list[tuple[float, float]]]:
    """The final object's scores, and (cumulative iteration time [s], NRMSE) of every
    snapshot."""
    geometry = object_geometry(dataset)
    final = score_object(result.object_slices, dataset.ground_truth, geometry)
    scores = {"nrmse": final.nrmse, "ssim": final.ssim, "frc_resolution_A": final.frc_resolution_A}
    curve = [
        (sum(result.iteration_s[:k]), score_object(obj, dataset.ground_truth, geometry).nrmse)
        for k, obj in sorted(result.snapshots.items())
    ]
    return scores, curve


def run_all(
    cases_: Sequence[Case],
    adapters: dict[str, ModuleType],
    repeats: int,
    timing_iterations: int,
    workdir: Path,
    after_repeat: Callable[[list[Run], dict[str, str]], None] = lambda runs, skipped: None,
) -> tuple[list[Run], dict[str, str]]:
    """Every case × package × repeat, each a fresh process, the packages alternating
    within a repeat. The first repeat runs the full plan (scored, with convergence
    snapshots); the others are timing repeats of at most ``timing_iterations``
    iterations. ``after_repeat`` sees the runs so far after each repeat. Returns the
    runs and, by package, dataset and engine, why a combination was not run."""
    runs, skipped = [], {}
    datasets = {
        name: load_or_simulate(name, progress=False) for name in {c.dataset for c in cases_}
    }
    for repeat in range(repeats):
        for case in cases_:
            path = cached_dataset_path(load_recipe(case.dataset))
            for package, adapter in adapters.items():
                if case.plan.engine not in adapter.ENGINES:
                    skipped[f"{package} {case.plan.engine}"] = "no such engine"
                    continue
                plan = case.plan_for(package)
                if repeat:
                    iterations = min(plan.iterations, timing_iterations)
                    plan = replace(plan, iterations=iterations, snapshot_every=0)
                label = f"[{repeat + 1}/{repeats}] {case.dataset} {plan.engine} {package}"
                print(label, "...", end=" ", flush=True)
                try:
                    result = adapter.run(
                        path, plan, workdir / f"{case.dataset}-{plan.engine}-{package}"
                    )
                except (PeerUnavailableError, PeerRunError, ConfigError) as error:
                    message = str(error).strip().splitlines()
                    reason = " … ".join(dict.fromkeys([message[0], message[-1]]))
                    skipped[f"{package} {case.dataset} {plan.engine}"] = reason
                    print("skipped:", reason, flush=True)
                    continue
                scores, curve = _scores(datasets[case.dataset], result) if repeat == 0 else ({}, [])
                runs.append(Run(case, package, repeat, result, scores, curve))
                print(f"{result.s_per_iter:.3f} s/iter {scores}", flush=True)
        after_repeat(runs, skipped)
    return runs, skipped


def table(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per dataset × engine × package: times and peak memory the medians over
    the repeats, scores the full (first) run's, and the time ratio to ptyopt on the same
    dataset × engine: the median over the repeats of the ratio of the two s_per_iter
    within a repeat (runs adjacent in time, so that a machine whose speed drifts between
    repeats does not skew it)."""
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.case.dataset, run.case.plan.engine, run.package), []).append(run)
    rows = []
    for (dataset, engine, package), group in groups.items():
        full = next(r for r in group if r.repeat == 0)
        plan = full.case.plan
        rows.append(
            {
                "dataset": dataset,
                "package": package,
                "version": full.result.version,
                "engine": engine,
                "slices": plan.slices,
                "iterations": plan.iterations,
                "group_size": plan.group_size,
                "s_per_iter": statistics.median(r.result.s_per_iter for r in group),
                "first_iter_s": statistics.median(r.result.first_iter_s for r in group),
                "peak_rss_MB": statistics.median(r.result.peak_rss_MB for r in group),
                **full.scores,
                "repeats": len(group),
            }
        )
    frame = pd.DataFrame(rows)
    ours = {
        (run.case.dataset, run.case.plan.engine, run.repeat): run.result.s_per_iter
        for run in runs
        if run.package == "ptyopt"
    }

    def paired_ratio(dataset: str, engine: str, package: str) -> float:
        ratios = [
            run.result.s_per_iter / ours[dataset, engine, run.repeat]
            for run in groups[dataset, engine, package]
            if (dataset, engine, run.repeat) in ours
        ]
        return statistics.median(ratios) if ratios else float("nan")

    frame["time_ratio_to_ptyopt"] = [
        paired_ratio(row.dataset, row.engine, row.package) for row in frame.itertuples()
    ]
    frame["measured"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    columns = [*COLUMNS, "repeats", "measured"]
    return frame[columns].sort_values(["dataset", "engine", "package"]).reset_index(drop=True)


def curves(runs: Sequence[Run]) -> pd.DataFrame:
    """The convergence curves of the full (first) runs: one row per saved object
    (dataset, package, engine, seconds [s] of cumulative iteration time, nrmse)."""
    rows = [
        {
            "dataset": run.case.dataset,
            "engine": run.case.plan.engine,
            "package": run.package,
            "seconds": seconds,
            "nrmse": nrmse,
        }
        for run in runs
        for seconds, nrmse in run.curve
    ]
    return pd.DataFrame(rows, columns=[*KEYS, "seconds", "nrmse"])


def merged(new: pd.DataFrame, earlier_csv: Path) -> pd.DataFrame:
    """``new`` and the rows of an earlier table (``earlier_csv``, if it exists) for
    the dataset × engine × package that ``new`` does not hold."""
    if not earlier_csv.exists():
        return new
    earlier = pd.read_csv(earlier_csv)
    if "measured" in new and "measured" not in earlier:
        earlier["measured"] = "earlier run"
    measured = earlier[KEYS].apply(tuple, axis=1).isin(new[KEYS].apply(tuple, axis=1))
    return pd.concat([earlier[~measured], new], ignore_index=True)


def merged_reasons(reasons: dict[str, str], rows: pd.DataFrame, earlier_json: Path) -> dict:
    """The skip reasons of this run and of earlier ones (``earlier_json``), less those
    of an earlier run for a ``<package> <dataset> <engine>`` that now has a row."""
    earlier = json.loads(earlier_json.read_text()) if earlier_json.exists() else {}
    measured = {f"{r.package} {r.dataset} {r.engine}" for r in rows.itertuples()}
    return {**{k: v for k, v in earlier.items() if k not in measured}, **reasons}


def plot_convergence(points: pd.DataFrame, path: Path) -> None:
    """NRMSE against the run's cumulative iteration time (:func:`curves`), one panel per
    dataset, one line per package × engine."""
    datasets = sorted(points.dataset.unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    styles = {"ptyopt": "-", "phaser": "--", "py4dstem": ":", "ptyrad": "-.", "ptychi": "-."}
    colours = {"epie": "C0", "lsqml": "C1", "gradient": "C2"}
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for (package, engine), line in points[points.dataset == dataset].groupby(
            ["package", "engine"]
        ):
            ax.plot(
                line.seconds,
                line.nrmse,
                styles.get(package, "-"),
                color=colours.get(engine),
                marker="o",
                markersize=3,
                label=f"{package} {engine}",
            )
        ax.set_title(dataset)
        ax.set_xlabel("cumulative iteration time [s]")
        ax.set_ylabel("NRMSE of the projected potential")
        ax.set_xscale("log")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


#: What identifies a row of the table (and a curve).
KEYS = ["dataset", "engine", "package"]
#: The issue's columns, in order (``repeats`` and ``measured`` follow them).
COLUMNS = (
    "dataset",
    "package",
    "version",
    "engine",
    "slices",
    "iterations",
    "group_size",
    "s_per_iter",
    "first_iter_s",
    "peak_rss_MB",
    "nrmse",
    "ssim",
    "frc_resolution_A",
    "time_ratio_to_ptyopt",
)
DECIMALS = {
    "s_per_iter": 3,
    "first_iter_s": 2,
    "peak_rss_MB": 0,
    "nrmse": 3,
    "ssim": 3,
    "frc_resolution_A": 2,
    "time_ratio_to_ptyopt": 2,
}


def _method_lines(
    args: argparse.Namespace, argv, skipped: dict[str, str], seconds: float
) -> list[str]:
    lines = [
        f"- run time so far: {seconds:.0f} s; repeats: {args.repeats} (the first runs the",
        f"  full plan and is scored; the others time at most {args.timing_iterations}",
        "  iterations each)",
        f"- regenerate: `{regenerate_command(__spec__.name, argv)}` (or `make bench-peers`;",
        "  the peers' environments: `make peers-env`, or `PTYOPT_PEERS_DIR` where they are)",
        f"- threads: OMP_NUM_THREADS=`{os.environ.get('OMP_NUM_THREADS', '')}`, every process",
        "  (ours and the peers') on the CPU with XLA's defaults: all cores, shared",
        "",
        "Datasets: `thin_lowdose` (SrTiO3 [001] 3.9 Å, 1 slice, 16×16 scan, 1e4 e/Å², Poisson",
        "noise) and `thick10` (SrTiO3 [001] 39 Å, 10 slices, 24×24 scan, 1e5 e/Å², Poisson",
        "noise); both 64 px patterns. Plans (ptyopt's terms, `ptyopt/benchmarks/peers.py`):",
        "amplitude noise model (phaser's ePIE and LSQML have no Poisson update), sparse",
        "groups, the probe refined from the first iteration, ePIE and LSQML β_O = β_P = 1,",
        "gradient Adam at 0.03 (object) and 0.005 (probe); each peer gets the equivalent",
        "settings (`ptyopt/peers/<package>.py`), except phaser's LSQML, run at its own",
        f"β_O = 2, β_P = 1 (the issue's reference; `{PHASER_LSQML}`). The issue's",
        "measurement by hand on thick10 (phaser 0.3.1 LSQML at those β, 40 iterations in",
        "groups of 64, probe refined): NRMSE 0.112 / SSIM 0.968; ptyopt's LSQML",
        "0.132 / 0.945; gradient engines 0.217 (ours) and 0.226 (phaser's).",
        "",
        "Columns: s_per_iter [s] the median over the repeats of each run's median",
        "iteration time over iterations 3…N; first_iter_s [s] the first iteration",
        "(compilation included), median over repeats; peak_rss_MB [MiB] the worker",
        "process's peak resident memory (VmHWM), median over repeats; nrmse, ssim,",
        "frc_resolution_A [Å]:",
        "the final object's projected potential (the sum of the slices' phases / σ)",
        "against the ground truth's over the scanned field of view, after gauge removal",
        "and registration (`ptyopt.metrics.score_object`, as every ptyopt report),",
        "of the full run; time_ratio_to_ptyopt: s_per_iter over ptyopt's for the same",
        "dataset × engine (> 1: the peer is slower), the median over the repeats of the",
        "ratio within each repeat (the two runs adjacent in time). Each run is a fresh",
        "process; within a repeat the packages alternate (ptyopt, peer, …) case by case.",
        "measured: when",
        "the row's run wrote it (UTC); with `--merge`, rows of earlier runs are kept for",
        "what a run does not measure, each with the time ratio of its own run.",
        "`convergence.png`: NRMSE of the object saved every",
        f"{args.every} iterations (first repeat) against the run's cumulative iteration",
        "time (compilation included; the copies are not timed).",
        "",
        "Tuned against tuned (each package's engine family tuned with the same trial",
        "budget; `study=scoreboard`, `study=scoreboard_thick`, `study=scoreboard_thick_epie`)",
        "and whether ptyopt reaches the best peer's NRMSE and SSIM there:",
        "[parity.md](parity.md).",
    ]
    if skipped:
        lines += ["", "Skipped:", *(f"- {key}: {reason}" for key, reason in skipped.items())]
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(SETTINGS))
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    parser.add_argument("--packages", nargs="+", default=["ptyopt", *PEERS])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, help="override every dataset's iterations")
    parser.add_argument(
        "--timing-iterations", type=int, default=8, help="iterations of the timing repeats"
    )
    parser.add_argument("--every", type=int, default=5, help="convergence snapshot interval")
    parser.add_argument("--quick", action="store_true", help="thin dataset, 6 iterations, once")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the earlier table's rows (and curves) for the dataset × engine × package "
        "this run does not measure; each row's time ratio is to the ptyopt of its own run",
    )
    parser.add_argument("--output", type=Path, default=paths.reports_dir() / "peers")
    args = parser.parse_args(argv)
    if args.quick:
        args.datasets, args.iterations, args.repeats, args.every = ["thin_lowdose"], 6, 1, 2
    if args.repeats < 1:
        raise ConfigError(f"--repeats must be ≥ 1, got {args.repeats}")
    started = time.perf_counter()
    adapters, skipped = load_adapters(args.packages)
    if "ptyopt" not in adapters:
        raise ConfigError("--packages must include ptyopt (the time ratios are to it)")

    def report(runs: list[Run], not_run: dict[str, str]) -> None:
        rows, points, reasons = table(runs), curves(runs), {**skipped, **not_run}
        if args.merge:
            rows = merged(rows, args.output / "peers.csv").sort_values(KEYS)
            points = merged(points, args.output / "convergence.csv")
            reasons = merged_reasons(reasons, rows, args.output / "skipped.json")
        (args.output / "skipped.json").write_text(json.dumps(reasons, indent=1) + "\n")
        lines = _method_lines(args, argv, reasons, time.perf_counter() - started)
        write_report(args.output / "peers.md", "Peer scoreboard", lines, rows, DECIMALS)
        points.to_csv(args.output / "convergence.csv", index=False)
        plot_convergence(points, args.output / "convergence.png")
        write_parity(paths.reports_dir(), args.output, argv=[])

    run_all(
        cases(args.datasets, args.engines, args.iterations, args.every),
        adapters,
        args.repeats,
        args.timing_iterations,
        Path(tempfile.mkdtemp(prefix="ptyopt-peers-")),
        after_repeat=report,
    )


if __name__ == "__main__":
    main()
