"""A quick or modified run never rewrites a study's published report: only the study as
shipped (no overrides but budget and storage, its whole budget done) reports into
``reports/<study>/``; anything else goes to ``reports/scratch/<study>/``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
from conftest import TINY_STUDY

from ptyopt.study.publication import RUNS, record_run, report_folder, unpublished_because


def finished_study(n: int, runs: list[list[str]] | None = None) -> optuna.Study:
    study = optuna.create_study(study_name="s")
    for value in range(n):
        study.add_trial(optuna.trial.create_trial(value=float(value)))
    for run in runs or []:
        record_run(study, run)
    return study


def test_only_the_study_as_shipped_is_published():
    shipped = finished_study(3, [["study=s"], ["study=s", "study.n_trials=3", "storage=sqlite"]])
    assert unpublished_because([(shipped, 3)], ["study=s"]) is None
    assert shipped.user_attrs[RUNS][1] == ["study=s", "study.n_trials=3", "storage=sqlite"]
    assert unpublished_because([(finished_study(3), 3)], []) is None  # runs not recorded
    short = unpublished_because([(finished_study(2), 3)], ["study=s"])
    assert short == "study 's' holds 2 of its 3 trials"
    changed = finished_study(3, [["study=s", "dataset=thin"]])
    assert unpublished_because([(changed, 3)], []) == "study 's' was run with ['dataset=thin']"
    assert "overrides ['sampler=random']" in unpublished_because(
        [(shipped, 3)], ["study=s", "sampler=random"]
    )
    reports = Path("reports")
    assert report_folder(reports, "s", None, publish=False) == reports / "s"
    assert report_folder(reports, "s", "why", publish=False) == reports / "scratch" / "s"
    assert report_folder(reports, "s", "why", publish=True) == reports / "s"


def test_a_quick_run_reports_to_scratch_and_leaves_the_published_report(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PTYOPT_CACHE", "PTYOPT_JAX_CACHE")}
    env["PTYOPT_HOME"] = str(tmp_path)
    published = tmp_path / "reports" / "quickstart" / "summary.md"
    published.parent.mkdir(parents=True)
    published.write_text("the published numbers")
    run = ["study=quickstart", *TINY_STUDY, "study.n_trials=2", "plan.engines.0.iterations=2"]

    def ptyopt(*arguments: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "ptyopt", *arguments]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)

    assert ptyopt(*run).returncode == 0
    reported = ptyopt("report", "study=quickstart")
    assert reported.returncode == 0, reported.stderr
    assert published.read_text() == "the published numbers"
    assert (tmp_path / "reports" / "scratch" / "quickstart" / "summary.md").is_file()
    assert "not published: study 'quickstart' was run with" in reported.stdout
    forced = ptyopt("report", "study=quickstart", "publish=true")
    assert forced.returncode == 0, forced.stderr
    assert published.read_text() != "the published numbers"
    assert "published anyway (publish=true)" in forced.stdout
