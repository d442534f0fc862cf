"""Which trials of a study a report shows: the completed ones, the Pareto front and the
best trial."""

from __future__ import annotations

import math

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState


def completed(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials with finite values, ordered by number."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    good = [t for t in trials if t.values and all(math.isfinite(v) for v in t.values)]
    return sorted(good, key=lambda t: t.number)


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """The Pareto-optimal completed trials (``study.best_trials``), ordered by number."""
    return sorted(study.best_trials, key=lambda t: t.number)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best completed trial; for several objectives, the Pareto-front trial best in
    the first objective. ``None`` when no trial has completed."""
    if len(study.directions) == 1:
        return study.best_trial if completed(study) else None
    front = pareto_front(study)
    if not front:
        return None
    sign = 1.0 if study.directions[0] == StudyDirection.MINIMIZE else -1.0
    return min(front, key=lambda t: sign * t.values[0])
