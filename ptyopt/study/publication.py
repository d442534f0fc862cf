"""Where a study's report goes: the published folder ``reports/<study>/`` (committed,
with hand-written discussions that quote its tables) only for the study as shipped;
any other run's report goes to ``reports/scratch/<study>/`` (git-ignored), so a quick
trial run never rewrites the published numbers.

A study counts as shipped when every run of it (each records its command-line overrides
in the study's user attribute :data:`RUNS`) and the report command itself changed
nothing but the budget, the storage and the progress display, and the study holds at
least the shipped budget of trials. ``publish=true`` on the report's command line
writes to the published folder regardless.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import optuna

#: Study user attribute: the command-line overrides of every run, in order (list of lists).
RUNS = "runs"

#: Overrides that leave a study as shipped: which study, where it is stored, the budget
#: (a resumed study may raise it; a smaller one is caught by the trial count).
_NEUTRAL = ("study=", "storage", "study.n_trials=", "publish=")


def record_run(study: optuna.Study, overrides: Sequence[str]) -> None:
    """Append this run's command-line ``overrides`` to the study's :data:`RUNS`."""
    study.set_user_attr(RUNS, [*study.user_attrs.get(RUNS, []), list(overrides)])


def _changed(overrides: Sequence[str]) -> list[str]:
    return [o for o in overrides if not o.lstrip("+~").startswith(_NEUTRAL)]


def unpublished_because(
    studies: Sequence[tuple[optuna.Study, int]], report_overrides: Sequence[str]
) -> str | None:
    """Why the report of ``studies`` (each with its shipped trial budget; the arms of a
    comparison, or one study) is not the published one, or ``None`` if it is."""
    if changed := _changed(report_overrides):
        return f"the report command overrides {changed}"
    for study, budget in studies:
        for run in study.user_attrs.get(RUNS, []):
            if changed := _changed(run):
                return f"study {study.study_name!r} was run with {changed}"
        finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
        if len(finished) < budget:
            return f"study {study.study_name!r} holds {len(finished)} of its {budget} trials"
    return None


def report_folder(reports: Path, name: str, reason: str | None, publish: bool) -> Path:
    """``reports/<name>/`` when published (``reason`` is ``None``) or ``publish`` is
    set, else ``reports/scratch/<name>/``."""
    return reports / name if reason is None or publish else reports / "scratch" / name
