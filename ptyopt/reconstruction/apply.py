"""A study's best plan, taken out of the study to reconstruct other data: what
``python -m ptyopt apply study=<name> dataset_file=D.h5`` runs (tune on a simulated twin,
apply to the experiment).

The best trial is the study's best COMPLETE trial (for several objectives, the one of the
Pareto front best in the first). Its plan is the one it ran (user attribute ``plan``;
for trials recorded before it was kept, the configured plan with the trial's
parameters). Microscope settings the study left ``null`` resolve against the new data's
nominal metadata; tuned ones (``plan.probe.…``, ``plan.thickness_A``, ``plan.scan.…``,
``plan.slices``, ``plan.slice_thickness_A``) carry over as the values found on the twin,
which :attr:`AppliedPlan.microscope_params` names. With ``objective.iterate=best`` the
plan stops at the trial's best iterate (its ``best_iterate`` user attribute), the
early-stopping point the study found.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import optuna

from ptyopt.errors import ConfigError
from ptyopt.study.settings import OBJECTIVE_ITERATE, with_params

#: Plan paths that describe the microscope and specimen rather than the algorithm.
MICROSCOPE_PATHS = (
    "plan.probe.",
    "plan.scan.",
    "plan.thickness_A",
    "plan.slices",
    "plan.slice_thickness_A",
)


@dataclass(frozen=True)
class AppliedPlan:
    """The plan of a study's best trial. study, trial: where it comes from; values: the
    trial's objective values by metric name; params: its tuned parameters (path →
    value); iterations: the plan's total iterations (the best iterate's with
    ``objective.iterate=best``); plan_values: the plan to run."""

    study: str
    trial: int
    values: dict[str, float]
    params: dict[str, Any]
    iterations: int
    plan_values: dict[str, Any]

    @property
    def microscope_params(self) -> list[str]:
        """The tuned parameters that set the microscope or specimen (carried over as
        found on the study's dataset)."""
        return [p for p in self.params if p.startswith(MICROSCOPE_PATHS)]

    def provenance(self) -> dict[str, Any]:
        """What a reconstruction file records of it (attribute ``applied``)."""
        return {
            "study": self.study,
            "trial": self.trial,
            "values": self.values,
            "params": self.params,
            "iterations": self.iterations,
        }


def stopped_at(plan_values: dict, iterations: int) -> dict:
    """A copy of the plan that ends after ``iterations`` iterations over all its engines
    (engines past the point dropped, the one it falls in shortened)."""
    plan = copy.deepcopy(plan_values)
    engines, left = [], iterations
    for engine in plan["engines"]:
        if left <= 0:
            break
        engines.append({**engine, "iterations": min(engine["iterations"], left)})
        left -= engines[-1]["iterations"]
    plan["engines"] = engines
    return plan


def _best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise ConfigError(
            f"study.name: study {study.study_name!r} has no complete trial to apply; run it first"
        )
    if len(study.directions) == 1:
        return study.best_trial
    minimize = study.directions[0] == optuna.study.StudyDirection.MINIMIZE
    front = study.best_trials
    return min(front, key=lambda t: t.values[0] if minimize else -t.values[0])


def best_plan(study: optuna.Study, configured_plan: dict) -> AppliedPlan:
    """The plan of ``study``'s best trial (see the module docstring); ``configured_plan``
    (the study's plan as configured now) serves trials that did not keep theirs."""
    trial = _best_trial(study)
    plan = trial.user_attrs.get("plan") or with_params(configured_plan, trial.params)
    total = sum(engine["iterations"] for engine in plan["engines"])
    if study.user_attrs.get(OBJECTIVE_ITERATE) == "best" and "best_iterate" in trial.user_attrs:
        total = int(trial.user_attrs["best_iterate"]["iteration"])
        plan = stopped_at(plan, total)
    names = study.metric_names or [f"objective {i}" for i in range(len(trial.values))]
    return AppliedPlan(
        study=study.study_name,
        trial=trial.number,
        values=dict(zip(names, trial.values, strict=True)),
        params=dict(trial.params),
        iterations=total,
        plan_values=plan,
    )
