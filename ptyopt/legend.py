"""What every recorded score and report column means, with its unit: the legends under
the report tables and the units of printed scores, so that a table can be read without
the source.

The scores against the ground truth (:mod:`ptyopt.metrics`) compare the registered,
gauge-free projected potential r of a reconstruction [V·Å] (offset and linear ramp
removed, summed over slices, cropped to the scanned field of view) with the
thermal-mean ground truth t on the same pixels. A column ``best_<score>`` is the score
at the trial's best iterate, ``final_<score>`` and ``metrics.<score>`` at its final
iterate; they have the score's unit and meaning.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Score or column name → (unit, meaning). A unit of "" means dimensionless.
DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "nrmse": (
        "",
        "‖r − t‖/‖t‖, registered projected potential r against the thermal-mean ground "
        "truth t; 0 is exact, 1.0 is the starting object (uniform, no contrast)",
    ),
    "mse": ("(V·Å)²", "mean of (r − t)² over the field of view"),
    "gain": (
        "",
        "⟨r, t⟩/‖t‖², the least-squares scale of r relative to t: 1 is the truth's contrast, "
        "below 1 weaker (a diagnostic, never fitted into nrmse)",
    ),
    "nrmse_gain_fitted": (
        "",
        "min over a scale c of ‖c·r − t‖/‖t‖: the error left once the contrast is "
        "corrected (a diagnostic; it rewards blur)",
    ),
    "ssim": ("", "structural similarity of r and t, Gaussian window 0.5 Å; 1 is exact"),
    "frc_threshold": ("", "the FRC threshold of frc_resolution_A"),
    "frc_resolution_A": (
        "Å",
        "where the FRC of r and t first falls below `frc_threshold` (0.5 by default); "
        "1/(finest ring), about two object pixels, when it never does (a bound)",
    ),
    "frc_halfbit_resolution_A": (
        "Å",
        "where the FRC falls below the half-bit curve (the same bound when it never does)",
    ),
    "frc_area": ("", "mean of the FRC up to Nyquist; 1 is exact"),
    "registration_on_bound": (
        "",
        "1 when the registration shift lies on its 3 px bound (the true offset may lie beyond)",
    ),
    "depth_error_rms_A": ("Å", "rms error of the dopants' recovered depths"),
    "depth_error_max_A": ("Å", "largest error of the dopants' recovered depths"),
    "depth_fwhm_mean_A": ("Å", "mean FWHM of the dopants' depth profiles"),
    "seconds": ("s", "reconstruction time (compilation and scoring excluded)"),
    "validation_error": (
        "",
        "Σ(√I_model − √I_meas)²/Σ I_meas over the held-out positions (no ground truth)",
    ),
    "training_error": ("", "the validation error's formula over the positions the engines used"),
    "data_error": ("", "the last iteration's loss under the plan's noise model"),
    "split_frc_resolution_A": (
        "Å",
        "half-bit resolution of the FRC between reconstructions of two halves of the scan",
    ),
    "split_frc_area": ("", "mean up to Nyquist of that split-data FRC"),
    "phase_contrast": ("", "std/mean of the summed phase over the field of view"),
    "phase_tv": ("rad/Å", "mean |∇φ| of the summed phase"),
    "split_frc_s": ("s", "time of the two half-scan reconstructions"),
    "best_iteration": ("", "iteration of the best scored iterate (an oracle early stop)"),
    "dose_e_per_A2": ("e/Å²", "electron dose of the dataset"),
    "seconds_to_best": ("s", "reconstruction seconds until `iterations_to_best`"),
    "s_per_iteration": ("s", "median seconds per iteration of the arm's complete trials"),
    "median_trial_s": ("s", "median wall time per trial"),
    "trials_per_h": ("1/h", "finished trials per hour"),
    "wall_time_s": ("s", "wall time of the trial"),
    "compile_time_s": ("s", "compilation time of the trial"),
    "pruned_at": ("", "iteration at which the trial was pruned"),
    "iterations_to_threshold": ("", "iterations until the curve reached the sweep's threshold"),
    "threshold": ("", "the sweep's NRMSE threshold"),
    "best_params": ("", "the best trial's tuned parameters, short names, 4 significant digits"),
}
#: Prefixes of a column that holds a score at one iterate (``best_nrmse``).
_PREFIXES = ("best_", "final_", "metrics.")


def describe(column: str) -> tuple[str, str] | None:
    """(unit, meaning) of a score or report column, prefixes such as ``best_``
    resolved; ``None`` for a column this module does not describe."""
    if column in DESCRIPTIONS:
        return DESCRIPTIONS[column]
    for prefix in _PREFIXES:
        if column.startswith(prefix) and column.removeprefix(prefix) in DESCRIPTIONS:
            return DESCRIPTIONS[column.removeprefix(prefix)]
    return None


def unit(column: str) -> str:
    """The unit of a score or column ("" when dimensionless or not described)."""
    described = describe(column)
    return described[0] if described else ""


def with_unit(name: str, value: float) -> str:
    """``name value unit`` for printing, e.g. ``mse 1706 (V·Å)²`` (4 significant digits)."""
    suffix = unit(name)
    return f"{name} {value:.4g}" + (f" {suffix}" if suffix else "")


#: The sentence that opens every legend: what the scores against the ground truth compare.
LEAD = (
    "Scores against the ground truth compare the registered, gauge-free projected "
    "potential of the reconstruction [V·Å] (offset and ramp removed, summed over slices, "
    "over the scanned field of view) with the thermal-mean ground truth; `best_*`: at the "
    "trial's best scored iterate, `final_*` and `metrics.*`: at its final iterate."
)


def legend_lines(columns: Iterable[str]) -> list[str]:
    """Markdown bullets ``- `column` [unit]: meaning`` for the described columns among
    ``columns``, each once, in order; a ``best_``/``final_``/``metrics.`` column is
    described by its score's entry when the plain score is not among ``columns``."""
    shown = list(dict.fromkeys(columns))
    lines = []
    for column in shown:
        if column not in DESCRIPTIONS and any(
            column.startswith(p) and column.removeprefix(p) in shown for p in _PREFIXES
        ):
            continue  # best_nrmse etc. read as nrmse, described once
        described = describe(column)
        if described is None:
            continue
        unit_text, meaning = described
        lines.append(f"- `{column}`" + (f" [{unit_text}]" if unit_text else "") + f": {meaning}")
    return lines


def legend_section(columns: Iterable[str]) -> list[str]:
    """Markdown lines: :data:`LEAD` and :func:`legend_lines` of ``columns``, a blank line
    after; nothing when no column is described."""
    lines = legend_lines(columns)
    return [LEAD, "", *lines, ""] if lines else []
