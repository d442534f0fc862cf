"""A trial's recorded scores, read from its user attributes: ``metrics`` (the final
iterate's) and ``best_iterate`` (``{iteration, metrics}``: the scored iterate best in
the objective's first metric). Either may be missing (trials that failed, were pruned
before their first score, or ran before it was recorded): a reader then gets nothing."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial

from ptyopt.study.settings import objective_iterate


def final_scores(trial: FrozenTrial) -> dict[str, Any]:
    """The trial's ``metrics`` user attribute, ``{}`` when absent or not a mapping."""
    metrics = trial.user_attrs.get("metrics")
    return dict(metrics) if isinstance(metrics, dict) else {}


def best_iterate(trial: FrozenTrial) -> tuple[int | None, dict[str, Any]]:
    """The iteration (over the whole plan) and every score of the trial's best iterate;
    ``(None, {})`` when it was not recorded."""
    best = trial.user_attrs.get("best_iterate")
    if not isinstance(best, dict) or not isinstance(best.get("metrics"), dict):
        return None, {}
    return best.get("iteration"), dict(best["metrics"])


def iterate_text(study: optuna.Study) -> str:
    """Which iterate of each trial the objective of ``study`` scored, in words."""
    if objective_iterate(study) == "best":
        return (
            "the best scored iterate of each trial (`objective.iterate=best`, chosen by the "
            "first objective; `best_iteration` is where it was)"
        )
    return "the final iterate of each trial (`objective.iterate=final`)"
