"""Report of a comparison study (``study.arms``) in ``reports/<study>/``, read from the
arms' study storage:

- ``arms.csv`` / ``arms.md``: one row per arm (dataset, dose, engines, the iterate its
  objective scored (``objective_iterate``: final or best), trial counts, the best
  trial's final NRMSE, MSE, SSIM and FRC resolution, its best iterate's iteration, NRMSE,
  SSIM and FRC resolution, the iterations and reconstruction seconds its curve took to
  come within 2% of its final NRMSE; timing: median seconds
  per iteration of its complete trials, median wall time per trial, trials per hour;
  the best trial's tuned parameters. Compile time and peak memory depend on what the
  worker ran before, so they are the engine benchmark's, ``reports/engines.md``);
- ``best_nrmse.md``: the best trials' final and best-iterate NRMSE pivoted engine ×
  dataset/dose when arms differ in both;
- ``convergence.png``: each arm's best curve (NRMSE vs iteration and vs seconds);
- ``best_reconstructions.png``: each arm's best projected potential;
- for a ground truth with dopants: the depth scores in the arms and sweep tables, and
  ``dopants.csv`` / ``dopants.md``, each best trial's depth and FWHM per dopant;
- one-parameter grid arms (sweeps): ``sweeps.csv`` / ``sweeps.md`` (per value: final
  NRMSE, the best iterate's iteration and NRMSE, iterations to the sweep's threshold)
  and ``sweep_<arm>.png``;
  the findings of the phaser paper (§IV.2) tested on them;
- two-parameter grid arms: ``grid_<arm>.png`` (final NRMSE map) and its table;
- ``summary.md`` with everything above and the regenerating command.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial, TrialState

from ptyopt.benchmarks.report import environment_lines
from ptyopt.legend import DESCRIPTIONS, legend_section
from ptyopt.study.arms import Arm
from ptyopt.study.report.figures import (
    BestImages,
    FigureSkipped,
    add_scale_bar,
    best_images,
    readable_log_axis,
    save_figure,
    scored_artifacts,
)
from ptyopt.study.report.scores import best_iterate, final_scores
from ptyopt.study.report.selection import best_trial, completed
from ptyopt.study.report.summary import finished_span
from ptyopt.study.report.tables import markdown_table, parameters_text, write_table
from ptyopt.study.settings import objective_iterate

#: A curve has reached its final NRMSE once it is within this factor of it.
REACHED = 1.02
#: A sweep's convergence threshold: this factor times the median over its values of
#: each curve's lowest NRMSE (an error level a typical value reaches).
SWEEP_THRESHOLD = 1.1
#: Depth-localisation scores shown where an arm's ground truth has dopants.
DEPTH_COLUMNS = ("depth_error_rms_A", "depth_fwhm_mean_A")
#: phaser's findings (§IV.2) by parameter path suffix: "rate" (changes mainly the
#: convergence rate: moderate values fastest, too large prevents convergence) or
#: "quality" (changes mainly the final error, with an interior optimum).
PHASER_FINDINGS = {
    "noise.epsilon": "rate",
    "layer_tikhonov.weight": "rate",
    "object_l2.weight": "quality",
    "object_tikhonov.weight": "quality",
}


@dataclass(frozen=True)
class ArmResult:
    """An arm and its study (``None`` when it has not been run); its trials, complete
    trials and best trial are each read once."""

    arm: Arm
    study: optuna.Study | None

    @cached_property
    def trials(self) -> list[FrozenTrial]:
        return (
            []
            if self.study is None
            else sorted(self.study.get_trials(deepcopy=False), key=lambda t: t.number)
        )

    @cached_property
    def complete(self) -> list[FrozenTrial]:
        return [] if self.study is None else completed(self.study)

    @cached_property
    def best(self) -> FrozenTrial | None:
        return None if self.study is None else best_trial(self.study)

    @property
    def iterate(self) -> str:
        """The iterate the arm's objective scores: as run, else as configured."""
        return (
            self.arm.config.objective.iterate
            if self.study is None
            else objective_iterate(self.study)
        )


def curve(trial: FrozenTrial) -> pd.DataFrame:
    """The trial's convergence curve (iteration, seconds, nrmse, …); empty when missing."""
    values = trial.user_attrs.get("curve")
    return (
        pd.DataFrame(values)
        if isinstance(values, dict) and values.get("iteration")
        else pd.DataFrame(columns=["iteration", "seconds", "nrmse"])
    )


def time_to_final(trial: FrozenTrial) -> tuple[float, float]:
    """(iterations, reconstruction seconds) until the curve first comes within
    :data:`REACHED` of its last NRMSE; NaN without a curve."""
    c = curve(trial)
    if c.empty:
        return math.nan, math.nan
    reached = c[c["nrmse"] <= REACHED * c["nrmse"].iloc[-1]].iloc[0]
    return float(reached["iteration"]), float(reached["seconds"])


def _plan_kinds(arm: Arm) -> str:
    """The arm's engines in order; a peer plan's: ``<package> <family>``."""
    if "peer" in arm.plan_values:
        return f"{arm.plan_values['peer']['package']} {arm.plan_values['peer']['engine']}"
    return " → ".join(engine["kind"] for engine in arm.plan_values["engines"])


def arms_table(results: Sequence[ArmResult]) -> pd.DataFrame:
    """One row per arm (see module docstring)."""
    rows = []
    for result in results:
        arm, best = result.arm, result.best
        states = [t.state for t in result.trials]
        metrics = final_scores(best) if best else {}
        best_iteration, at_best = best_iterate(best) if best else (None, {})
        iterations, seconds = time_to_final(best) if best else (math.nan, math.nan)
        walls = [
            t.user_attrs["wall_time_s"] for t in result.trials if "wall_time_s" in t.user_attrs
        ]
        finished, span_h = finished_span(result.study) if result.study else (0, 0.0)
        rows.append(
            {
                "arm": arm.name,
                "dataset": arm.config.dataset.name,
                "dose_e_per_A2": arm.config.dataset.dose_e_per_A2,
                "engines": _plan_kinds(arm),
                "objective_iterate": result.iterate,
                "complete": states.count(TrialState.COMPLETE),
                "pruned": states.count(TrialState.PRUNED),
                "failed": states.count(TrialState.FAIL),
                "best_trial": best.number if best else None,
                "nrmse": metrics.get("nrmse"),
                "mse": metrics.get("mse"),
                "ssim": metrics.get("ssim"),
                "frc_resolution_A": metrics.get("frc_resolution_A"),
                **{name: metrics[name] for name in DEPTH_COLUMNS if name in metrics},
                "best_iteration": best_iteration,
                "best_nrmse": at_best.get("nrmse"),
                "best_ssim": at_best.get("ssim"),
                "best_frc_resolution_A": at_best.get("frc_resolution_A"),
                "iterations_to_best": iterations,
                "seconds_to_best": seconds,
                "s_per_iteration": _median(result.complete, "seconds_per_iteration"),
                "median_trial_s": float(np.median(walls)) if walls else None,
                "trials_per_h": finished / span_h if span_h > 0 else None,
                "best_params": parameters_text(best.params) if best else "",
            }
        )
    return pd.DataFrame(rows)


def dopants_table(results: Sequence[ArmResult]) -> pd.DataFrame:
    """Per dopant of each arm whose best trial localised dopants (its final scores carry
    the depth scores): element, true and recovered depth below the entrance surface,
    error and FWHM [Å], from the trial's saved reconstruction scored again (an arm whose
    artifacts are unreadable is left out)."""
    rows = []
    for result in results:
        best = result.best
        if best is None or DEPTH_COLUMNS[0] not in final_scores(best):
            continue
        try:
            _, truth, score = scored_artifacts(best)
        except FigureSkipped:
            continue
        sites = truth.dopants.sites
        for site, depth, fwhm in zip(sites, score.dopant_depth_A, score.dopant_fwhm_A, strict=True):
            rows.append(
                {
                    "arm": result.arm.name,
                    "dopant": f"{site.element} for {site.host}",
                    "true_depth_A": site.depth_A,
                    "depth_A": depth,
                    "error_A": depth - site.depth_A,
                    "fwhm_A": fwhm,
                }
            )
    return pd.DataFrame(rows)


def _median(trials: Sequence[FrozenTrial], attr: str) -> float | None:
    values = [t.user_attrs[attr] for t in trials if attr in t.user_attrs]
    return float(np.median(values)) if values else None


def _short(value: Any) -> str:
    """A parameter value for a label or a table cell: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def pivot_best(table: pd.DataFrame) -> pd.DataFrame | None:
    """The best trials' NRMSE at their final and at their best iterate (the lowest over
    arms of each), (engines, iterate) × "dataset @ dose", when arms differ in both
    engines and data; else None."""
    table = table.assign(
        data=[
            f"{d} @ {dose:.0e} e/Å²"
            for d, dose in zip(table["dataset"], table["dose_e_per_A2"], strict=True)
        ]
    )
    if table["engines"].nunique() < 2 or table["data"].nunique() < 2:
        return None
    at = table.rename(columns={"nrmse": "final", "best_nrmse": "best"}).melt(
        id_vars=["engines", "data"], value_vars=["final", "best"], var_name="iterate"
    )
    pivot = at.pivot_table(
        index=["engines", "iterate"], columns="data", values="value", aggfunc="min"
    )
    return pivot.reindex(["final", "best"], level="iterate").reset_index()


# --- sweeps ----------------------------------------------------------------------------


def _grid_params(result: ArmResult) -> list[str]:
    """Parameters varied by a grid-sampled arm (none for other samplers)."""
    if result.arm.config.sampler.name != "grid":
        return []
    return list(result.arm.config.study.search_space)


def sweep_rows(result: ArmResult) -> pd.DataFrame:
    """Per value of a one-parameter grid arm: final NRMSE (NaN unless the trial
    completed), the best iterate's iteration and NRMSE (NaN if none was scored), and the
    iterations to reach the sweep's threshold (:data:`SWEEP_THRESHOLD` × the median of
    the curves' minima; NaN if never)."""
    (param,) = _grid_params(result)
    trials = [t for t in result.trials if param in t.params]
    curves = {t.number: curve(t) for t in trials}
    minima = [c["nrmse"].min() for c in curves.values() if not c.empty]
    threshold = SWEEP_THRESHOLD * float(np.median(minima)) if minima else math.nan
    rows = []
    for t in sorted(trials, key=lambda t: t.params[param]):
        c = curves[t.number]
        below = c[c["nrmse"] <= threshold] if not c.empty else c
        best_iteration, at_best = best_iterate(t)
        rows.append(
            {
                "arm": result.arm.name,
                "parameter": param.removeprefix("plan.engines.0."),
                "value": t.params[param],
                "state": t.state.name,
                "final_nrmse": final_scores(t).get("nrmse", math.nan)
                if t.state == TrialState.COMPLETE
                else math.nan,
                "best_iteration": math.nan if best_iteration is None else best_iteration,
                "best_nrmse": at_best.get("nrmse", math.nan),
                **{
                    f"final_{name}": final_scores(t).get(name, math.nan)
                    for name in DEPTH_COLUMNS
                    if name in final_scores(t)
                },
                "threshold": threshold,
                "iterations_to_threshold": below["iteration"].iloc[0]
                if not below.empty
                else math.nan,
            }
        )
    return pd.DataFrame(rows)


def finding(rows: pd.DataFrame) -> dict[str, Any]:
    """phaser's finding for the swept parameter tested on ``rows`` (one sweep):
    measured rate and quality effects and whether the finding holds."""
    param = rows["parameter"].iloc[0]
    claim = next((kind for suffix, kind in PHASER_FINDINGS.items() if param.endswith(suffix)), None)
    reached = rows.dropna(subset=["iterations_to_threshold"])
    iterations = reached["iterations_to_threshold"]
    finals = rows["final_nrmse"]
    rate_ratio = float(iterations.max() / iterations.min()) if len(reached) else math.nan
    quality_spread = _spread_over(rows, "final_nrmse")
    fastest_all = list(reached.loc[iterations == iterations.min(), "value"]) if len(reached) else []
    best = rows.loc[finals.idxmin(), "value"] if finals.notna().any() else None
    values = list(rows["value"])
    largest_stalls = math.isnan(rows["iterations_to_threshold"].iloc[-1])
    interior = lambda v: v is not None and v not in (values[0], values[-1])  # noqa: E731
    if claim == "rate":
        holds = {
            "moderate value fastest": bool(fastest_all)
            and all(interior(v) for v in fastest_all),  # ties with an end value do not count
            "largest value prevents convergence": largest_stalls,
            "rate effect larger than quality effect": (
                len(reached) < len(rows) or rate_ratio >= 1.5
            )
            and rate_ratio - 1 > _spread_over(reached, "final_nrmse"),
        }
    elif claim == "quality":
        holds = {
            "little effect on the convergence rate": rate_ratio <= 1.5,
            "interior optimum of the final error": interior(best) and quality_spread >= 0.05,
        }
    else:
        holds = {}
    return {
        "parameter": param,
        "phaser": {"rate": "mainly convergence rate", "quality": "mainly final quality"}.get(
            claim, "(no finding)"
        ),
        "values": len(rows),
        "reach_threshold": f"{len(reached)}/{len(rows)}",
        "iterations_max_over_min": rate_ratio,
        "final_nrmse_range": f"{finals.min():.3f}–{finals.max():.3f}"
        if finals.notna().any()
        else "n/a",
        "fastest_value": ", ".join(_short(float(v)) for v in fastest_all) if fastest_all else None,
        "best_final_value": best,
        "checks": holds,
        "verdict": "reproduced"
        if holds and all(holds.values())
        else "partly"
        if any(holds.values())
        else "not reproduced"
        if holds
        else "n/a",
    }


def _spread_over(rows: pd.DataFrame, column: str) -> float:
    values = rows[column].dropna()
    return float((values.max() - values.min()) / values.min()) if len(values) else 0.0


def findings_table(sweeps: pd.DataFrame) -> pd.DataFrame:
    """One row per sweep: :func:`finding` with its checks spelled out."""
    rows = []
    for arm, rows_of_arm in sweeps.groupby("arm", sort=False):
        f = finding(rows_of_arm)
        checks = "; ".join(
            f"{name}: {'yes' if ok else 'no'}" for name, ok in f.pop("checks").items()
        )
        rows.append({"arm": arm, **f, "checks": checks})
    return pd.DataFrame(rows)


def grid_table(result: ArmResult) -> pd.DataFrame:
    """Final NRMSE of a two-parameter grid arm, first parameter down, second across."""
    first, second = _grid_params(result)
    done = [t for t in result.complete if first in t.params and second in t.params]
    frame = pd.DataFrame(
        [
            {first: t.params[first], second: t.params[second], "nrmse": final_scores(t)["nrmse"]}
            for t in done
        ]
    )
    return (
        frame.pivot_table(index=first, columns=second, values="nrmse")
        .dropna(how="all")
        .dropna(axis=1, how="all")
    )


def coupling_lines(table: pd.DataFrame) -> list[str]:
    """The best value of the first parameter for each value of the second, and the
    optimum over the grid (coupling: the best first value moves with the second)."""
    best_first = table.idxmin(axis=0)
    i, j = np.unravel_index(np.nanargmin(table.to_numpy()), table.shape)
    moves = best_first.nunique() > 1
    return [
        (
            f"- optimum over the grid: {table.index.name.split('.')[-2]} = "
            f"{_short(table.index[i])}, {table.columns.name.split('.')[-2]} = "
            f"{_short(table.columns[j])}: NRMSE {table.iat[i, j]:.4f}"
        ),
        f"- best {table.index.name.split('.')[-2]} for each {table.columns.name.split('.')[-2]}: "
        + ", ".join(f"{_short(c)} → {_short(v)}" for c, v in best_first.items())
        + (" (it moves: the two are coupled)" if moves else " (it does not move)"),
    ]


# --- figures ---------------------------------------------------------------------------


#: Line styles that tell apart arms sharing a colour.
_LINE_STYLES = ("-", "--", ":", "-.")


def arm_styles(results: Sequence[ArmResult]) -> dict[str, dict[str, Any]]:
    """A distinct line style per arm: up to 10 arms one colour each; more arms whose
    engines differ, one colour per engine and one line style per dataset and dose; else
    20 colours, with line styles beyond them."""
    names = [r.arm.name for r in results]
    engines = [_plan_kinds(r.arm) for r in results]
    data = [(r.arm.config.dataset.name, r.arm.config.dataset.dose_e_per_A2) for r in results]
    kinds, datas = list(dict.fromkeys(engines)), list(dict.fromkeys(data))
    if len(names) <= 10:
        return {n: {"color": f"C{i}", "ls": "-"} for i, n in enumerate(names)}
    if 1 < len(kinds) <= 10 and len(datas) <= len(_LINE_STYLES):
        return {
            n: {"color": f"C{kinds.index(e)}", "ls": _LINE_STYLES[datas.index(d)]}
            for n, e, d in zip(names, engines, data, strict=True)
        }
    tab20 = colormaps["tab20"]
    order = [*range(0, 20, 2), *range(1, 20, 2)]  # one of each pair first: the far-apart ones
    return {
        n: {"color": tab20(order[i % 20]), "ls": _LINE_STYLES[i // 20 % len(_LINE_STYLES)]}
        for i, n in enumerate(names)
    }


def plot_convergence(results: Sequence[ArmResult], path: Path) -> Path | None:
    """:func:`convergence_figure` saved to ``path``; ``None`` when no arm has a curve."""
    fig = convergence_figure(results)
    return None if fig is None else save_figure(fig, path)


def convergence_figure(results: Sequence[ArmResult]) -> Figure | None:
    """Each arm's best trial: NRMSE vs iteration and vs reconstruction seconds (readable
    log axes), a distinct style per arm (:func:`arm_styles`), the legend beside the plots."""
    styles = arm_styles(results)
    best = [(r.arm.name, curve(b)) for r in results if (b := r.best) is not None]
    best = [(name, c) for name, c in best if not c.empty]
    if not best:
        return None
    fig = Figure(figsize=(13, 4.4), layout="constrained")
    by_iteration, by_seconds = fig.subplots(1, 2, sharey=True)
    for name, c in best:
        style = dict(**styles[name], marker=".", ms=4, label=name)
        by_iteration.plot(c["iteration"], c["nrmse"], **style)
        by_seconds.plot(c["seconds"], c["nrmse"], **style)
    by_iteration.set(xlabel="iteration", ylabel="NRMSE vs thermal-mean ground truth", yscale="log")
    by_seconds.set(xlabel="reconstruction time [s]", xscale="log")
    readable_log_axis(by_iteration.yaxis, pd.concat([c["nrmse"] for _, c in best]))
    readable_log_axis(by_seconds.xaxis, pd.concat([c["seconds"] for _, c in best]))
    for ax in (by_iteration, by_seconds):
        ax.grid(True, which="major", color="0.9", lw=0.6)
    fig.legend(
        *by_iteration.get_legend_handles_labels(), loc="outside right upper", fontsize="small"
    )
    fig.suptitle("best trial of each arm (NRMSE 1.0 = the starting object)")
    return fig


def plot_best_reconstructions(results: Sequence[ArmResult], path: Path) -> Path | None:
    """:func:`best_reconstructions_figure` saved to ``path``; ``None`` when no arm's
    artifacts can be read."""
    fig = best_reconstructions_figure(results)
    return None if fig is None else save_figure(fig, path)


def best_reconstructions_figure(results: Sequence[ArmResult]) -> Figure | None:
    """Each arm's best projected potential over the field of view (gauge removed), with
    its NRMSE and a scale bar; arms scored against the same ground truth form a group
    that opens with that truth (registered onto its first arm's reconstruction) and
    shares its colour range (the truth's minimum to maximum) and colour bar [V·Å].
    Arms whose artifacts are missing are left out."""
    groups: dict[str, list[tuple[ArmResult, BestImages]]] = {}
    for result in results:
        if (best := result.best) is None:
            continue
        try:
            images = best_images(best)
        except FigureSkipped:
            continue
        groups.setdefault(images.truth_digest, []).append((result, images))
    if not groups:
        return None
    columns = min(5, max(len(members) + 1 for members in groups.values()))
    heights = [-(-(len(members) + 1) // columns) for members in groups.values()]
    fig = Figure(figsize=(3.0 * columns + 1.2, 3.1 * sum(heights) + 0.5), layout="constrained")
    subfigures = fig.subfigures(len(groups), 1, squeeze=False, height_ratios=heights)[:, 0]
    for subfigure, rows, members in zip(subfigures, heights, groups.values(), strict=True):
        first_arm, first = members[0]
        low, high = float(first.truth.min()), float(first.truth.max())
        panels = [
            (
                f"ground truth ({first_arm.arm.config.dataset.name})\nregistered to "
                f"{first_arm.arm.name}",
                first.truth,
                first,
            ),
            *((f"{r.arm.name}\nNRMSE {i.nrmse:.3f}", i.reconstruction, i) for r, i in members),
        ]
        axes = subfigure.subplots(rows, columns, squeeze=False).ravel()
        for ax, (title, image, images) in zip(axes, panels, strict=False):
            shown = ax.imshow(image, cmap="magma", vmin=low, vmax=high, extent=images.extent_A)
            add_scale_bar(ax, images.extent_A[1])
            ax.set_title(title, fontsize="small")
        for ax in axes:
            ax.set_axis_off()
        subfigure.colorbar(
            shown, ax=list(axes[: len(panels)]), shrink=0.8, label="projected potential [V·Å]"
        )
    fig.suptitle(
        "best trial of each arm: projected potential over the field of view, offset and "
        "ramp removed, beside its ground truth (thermal mean)"
    )
    return fig


def plot_sweep(result: ArmResult, rows: pd.DataFrame, path: Path) -> Path:
    """NRMSE vs iteration for every value of a one-parameter sweep (colours in the order
    of the values, the legend beside the plot), and final NRMSE vs value; readable log axes."""
    (param,) = _grid_params(result)
    fig = Figure(figsize=(12, 4), layout="constrained")
    curves_ax, final_ax = fig.subplots(1, 2)
    trials = sorted((t for t in result.trials if param in t.params), key=lambda t: t.params[param])
    colours = colormaps["viridis"](np.linspace(0.0, 0.9, len(trials)))
    for colour, t in zip(colours, trials, strict=True):
        c = curve(t)
        if not c.empty:
            curves_ax.plot(
                c["iteration"],
                c["nrmse"],
                color=colour,
                label=f"{_short(t.params[param])}"
                + ("" if t.state == TrialState.COMPLETE else f" ({t.state.name.lower()})"),
            )
    threshold = rows["threshold"].iloc[0]
    curves_ax.axhline(threshold, color="0.5", ls=":", lw=1, label=f"threshold {threshold:.3f}")
    curves_ax.set(
        xlabel="iteration",
        ylabel="NRMSE vs thermal-mean ground truth",
        yscale="log",
        title=f"{result.arm.name}: {rows['parameter'].iloc[0]}",
    )
    curve_values = [curve(t)["nrmse"] for t in trials]
    readable_log_axis(curves_ax.yaxis, pd.concat([*curve_values, pd.Series([threshold])]))
    curves_ax.legend(
        fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0), title="value"
    )
    final_ax.plot(rows["value"], rows["final_nrmse"], "o-", label="final")
    final_ax.plot(rows["value"], rows["best_nrmse"], "s--", ms=4, label="best iterate")
    final_ax.set(xscale="log", xlabel=rows["parameter"].iloc[0], ylabel="NRMSE")
    readable_log_axis(final_ax.xaxis, rows["value"])
    final_ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(fig, path)


def plot_grid(table: pd.DataFrame, path: Path) -> Path:
    """Final NRMSE over a two-parameter grid, the optimum marked."""
    fig = Figure(figsize=(5.8, 4.6), layout="constrained")
    ax = fig.subplots()
    shown = ax.imshow(table.to_numpy(), origin="lower", cmap="viridis_r")
    for (i, j), value in np.ndenumerate(table.to_numpy()):
        ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize="x-small", color="w")
    i, j = np.unravel_index(np.nanargmin(table.to_numpy()), table.shape)
    ax.plot(j, i, "s", mfc="none", mec="r", ms=22, mew=2)
    ax.set_xticks(range(table.shape[1]), [_short(v) for v in table.columns])
    ax.set_yticks(range(table.shape[0]), [_short(v) for v in table.index])
    ax.set(
        xlabel=table.columns.name.removeprefix("plan.engines.0."),
        ylabel=table.index.name.removeprefix("plan.engines.0."),
    )
    fig.colorbar(shown, ax=ax, label="final NRMSE")
    return save_figure(fig, path)


# --- the report ------------------------------------------------------------------------


def write_comparison_report(
    name: str, results: Sequence[ArmResult], out_dir: Path, command: str
) -> list[Path]:
    """Write the comparison report of study ``name`` into ``out_dir``; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*out_dir.glob("sweep_*.png"), *out_dir.glob("grid_*.png")]:
        stale.unlink()
    written: list[Path] = []
    table = arms_table(results)
    written += write_table(table, out_dir, "arms")
    lines = [
        f"# Comparison `{name}`",
        "",
        *environment_lines(),
        (
            f"- regenerate: `{command}` (from the arms' study storage; "
            f"`{command.replace(' report', '', 1)}` runs or resumes the study itself)"
        ),
        f"- arms: {len(results)}; members and overrides:",
        "",
        *(
            f"  - `{r.arm.name}`: `{' '.join(r.arm.overrides)}`"
            + ("" if r.study else " (not run yet)")
            for r in results
        ),
        "",
        *(
            [
                (
                    "Discussion, written by hand from these numbers: "
                    "[discussion.md](discussion.md) (not regenerated)."
                ),
                "",
            ]
            if (out_dir / "discussion.md").exists()
            else []
        ),
        "## Arms",
        "",
        (
            "Best trial of each arm by its objective, which scored the iterate in "
            "`objective_iterate` (`final`: the end of the plan; `best`: the scored iterate "
            "best in the objective's first metric, every objective taken from it). "
            "`nrmse` … `frc_resolution_A`: its final iterate; `best_*`: its best iterate, "
            "at iteration `best_iteration` (an oracle early stop: choosing it needs the "
            "ground truth). `iterations_to_best` / `seconds_to_best`: when its curve first "
            f"came within {REACHED - 1:.0%} of its final NRMSE (reconstruction seconds, "
            "scoring excluded). Full table: [arms.csv](arms.csv)."
        ),
        "",
        markdown_table(table),
        "",
        *legend_section(table.columns),
    ]
    pivot = pivot_best(table)
    if pivot is not None:
        (out_dir / "best_nrmse.md").write_text(markdown_table(pivot) + "\n")
        written.append(out_dir / "best_nrmse.md")
        lines += [
            "## Best trials' NRMSE by engine and dataset (final and best iterate)",
            "",
            f"NRMSE: {DESCRIPTIONS['nrmse'][1]}.",
            "",
            markdown_table(pivot),
            "",
        ]
    dopants = dopants_table(results)
    if not dopants.empty:
        written += write_table(dopants, out_dir, "dopants")
        lines += [
            "## Depth localisation per dopant (best trials)",
            "",
            (
                "Each dopant column's excess potential over equivalent undoped columns, per "
                "slice (`ptyopt.depth`): recovered depth below the entrance surface and FWHM "
                "from its half-maximum crossings. The truth scores 0 error at slice centres "
                "and FWHM = the slice thickness. Full table: [dopants.csv](dopants.csv)."
            ),
            "",
            markdown_table(dopants),
            "",
        ]
    if (figure := plot_convergence(results, out_dir / "convergence.png")) is not None:
        written.append(figure)
        lines += ["## Convergence of the best trials", "", "![convergence](convergence.png)", ""]
    if (
        figure := plot_best_reconstructions(results, out_dir / "best_reconstructions.png")
    ) is not None:
        written.append(figure)
        lines += [
            "## Best reconstructions",
            "",
            "![best reconstructions](best_reconstructions.png)",
            "",
        ]
    sweeps = [r for r in results if r.study is not None and len(_grid_params(r)) == 1]
    if sweeps:
        rows = pd.concat([sweep_rows(r) for r in sweeps], ignore_index=True)
        written += write_table(rows, out_dir, "sweeps")
        findings = findings_table(rows)
        lines += [
            "## One-parameter sweeps",
            "",
            (
                f"Threshold of a sweep: {SWEEP_THRESHOLD}× the median over its values of each "
                "curve's lowest NRMSE, an error a typical value reaches; "
                "`iterations_to_threshold` is blank where a value never reached it."
            ),
            "",
            "### Findings of the phaser paper (§IV.2) on these data",
            "",
            (
                "A rate finding holds when the fastest value to the threshold is interior, "
                "the largest value never reaches it, and the spread in iterations "
                "(max/min − 1, over the values that reach it) exceeds the relative spread of "
                "their final NRMSE; a quality finding when the values that reach the threshold "
                "take within 1.5× the same iterations and the lowest final NRMSE is at an "
                "interior value, with the worst at least 5% above it."
            ),
            "",
            markdown_table(findings),
            "",
        ]
        for result in sweeps:
            arm_rows = rows[rows["arm"] == result.arm.name]
            figure = plot_sweep(result, arm_rows, out_dir / f"sweep_{result.arm.name}.png")
            written.append(figure)
            lines += [
                f"### `{result.arm.name}`",
                "",
                markdown_table(arm_rows.drop(columns=["arm", "threshold"])),
                "",
                f"![{result.arm.name}]({figure.name})",
                "",
            ]
    for result in (
        r for r in results if r.study is not None and len(_grid_params(r)) == 2 and r.complete
    ):
        grid = grid_table(result)
        figure = plot_grid(grid, out_dir / f"grid_{result.arm.name}.png")
        written.append(figure)
        shown = grid.rename(index=_short, columns=_short).reset_index()
        lines += [
            f"## Two-parameter grid `{result.arm.name}` (final NRMSE)",
            "",
            *coupling_lines(grid),
            "",
            markdown_table(shown),
            "",
            f"![{result.arm.name}]({figure.name})",
            "",
        ]
    (out_dir / "summary.md").write_text("\n".join(lines))
    return [*written, out_dir / "summary.md"]
