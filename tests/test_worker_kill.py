"""A worker killed with SIGKILL in the middle of a trial. On PostgreSQL, heartbeats mark
its trial failed and RetryFailedTrialCallback retries it with the same parameters:
the study still runs its budget exactly, no trial lost and none counted twice. On the
default journal storage the journal stays readable and rerunning the command resumes
the study, failing the dead worker's trial ("worker died") and retrying it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import EAGER_PRUNING, TINY_STUDY
from optuna.storages import JournalStorage, RetryFailedTrialCallback
from optuna.storages.journal import JournalFileBackend
from test_postgres import create_tables, failures, postgres_command, stop_all, worker_env

from ptyopt.study.runner import _counted

pytest_plugins = [
    "pg_server"
]  # session-scoped `postgres` and `study_caches`, shared with test_postgres.py
pytestmark = pytest.mark.filterwarnings(
    "ignore::optuna.exceptions.ExperimentalWarning"
)  # retried_trial_number, retry_history

State = optuna.trial.TrialState
GRACE_S = 4  # storage.grace_period_s of postgres_command
# Trials of about 1 s: a poll every 50 ms catches one running, and after a kill early
# in the study the survivor is still asking for trials when the grace period ends.
TINY = TINY_STUDY + EAGER_PRUNING
SLOW = ["plan.engines.0.iterations=150", "pruner=none"]


def wait_for(probe, timeout: float, what: str, watched: subprocess.Popen | None = None):
    """Poll ``probe`` every 50 ms until it returns something; fail after ``timeout``
    seconds, or as soon as the ``watched`` process has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        if watched is not None and watched.poll() is not None:
            pytest.fail(f"worker {watched.pid} exited ({watched.returncode}) before {what}")
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def retries_of(
    trials: list[optuna.trial.FrozenTrial], number: int
) -> list[optuna.trial.FrozenTrial]:
    return [t for t in trials if RetryFailedTrialCallback.retried_trial_number(t) == number]


def check_budget_after_one_kill(
    study: optuna.Study, budget: int, killed_number: int
) -> optuna.trial.FrozenTrial:
    """The budget is met exactly, numbers are unique and consecutive, the killed trial
    is FAIL and has exactly one retry, COMPLETE with its parameters, and every other
    trial is COMPLETE: nothing lost, nothing counted twice. Returns the retry."""
    trials = study.trials
    assert sorted(t.number for t in trials) == list(range(budget + 1)), (
        "one trial beyond the budget: the killed one, replaced by its retry"
    )
    assert _counted(study) == budget
    killed = trials[killed_number]
    assert killed.state == State.FAIL
    retries = retries_of(trials, killed_number)
    assert len(retries) == 1, f"retries of trial {killed_number}: {[t.number for t in retries]}"
    retry = retries[0]
    assert (
        retry.state == State.COMPLETE
        and retry.params == killed.params
        and retry.number > killed_number
    )
    assert RetryFailedTrialCallback.retry_history(retry) == [killed_number]
    assert all(t.state == State.COMPLETE for t in trials if t.number != killed_number)
    assert len({t.user_attrs["trial_dir"] for t in trials}) == budget + 1
    return retry


def test_killed_postgres_worker_is_retried(postgres, study_caches, tmp_path):
    name, budget = "pg_kill", 6
    env = worker_env(tmp_path, postgres, study_caches)
    create_tables(postgres)
    command = postgres_command(postgres, name, budget, *SLOW)
    storage = optuna.storages.RDBStorage(postgres.url_with_password)
    workers = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    victim, survivor = workers
    began = time.perf_counter()
    try:

        def victim_mid_trial():
            try:
                study_id = storage.get_study_id_from_name(name)
            except KeyError:
                return None
            running = storage.get_all_trials(study_id, deepcopy=False, states=(State.RUNNING,))
            return next(
                (
                    t
                    for t in running
                    if t.user_attrs.get("pid") == victim.pid and t.intermediate_values
                ),
                None,
            )

        target = wait_for(
            victim_mid_trial,
            120,
            f"a running trial of worker {victim.pid} with intermediate scores",
            victim,
        )
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        killed_at = time.monotonic()
        assert victim.returncode == -signal.SIGKILL
        output = survivor.communicate(timeout=150)
        assert survivor.returncode == 0, failures([survivor], [output])
        extra = None
        if storage.get_trial(target._trial_id).state == State.RUNNING:
            # The survivor spent the budget before the grace period ran out: stale trials
            # are failed when a live worker next asks, so start one after it.
            time.sleep(max(0.0, killed_at + GRACE_S + 1.5 - time.monotonic()))
            extra = subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            workers.append(extra)
            output = extra.communicate(timeout=150)
            assert extra.returncode == 0, failures([extra], [output])
    finally:
        stop_all(workers)
        storage.engine.dispose()
    seconds = time.perf_counter() - began

    study = optuna.load_study(study_name=name, storage=postgres.url_with_password)
    retry = check_budget_after_one_kill(study, budget, target.number)
    assert (
        study.trials[target.number].user_attrs["pid"] == victim.pid
        and retry.user_attrs["pid"] != victim.pid
    )
    failed = [t.number for t in study.trials if t.state == State.FAIL]

    print(
        f"\nPostgreSQL: {len(workers)} workers "
        f"({'a third started after the grace period' if extra else 'the survivor retried it'}), "
        f"{len(study.trials)} trials for a budget of {budget}: trial {target.number} killed, "
        f"failed {failed}, retried as trial {retry.number}; 0 lost; {seconds:.1f} s"
    )


def test_killed_journal_worker_resumes(study_caches, tmp_path):
    name, budget = "journal_kill", 3
    env = {**os.environ, **study_caches, "PTYOPT_HOME": str(tmp_path)}
    # No intermediate scores: the kill cannot land inside a journal append, whose lock
    # file would then hold the rerun for Optuna's 30 s grace period.
    command = [
        sys.executable,
        "-m",
        "ptyopt",
        "study=quickstart",
        *TINY,
        *SLOW,
        "study.score_every=100000",
        f"study.name={name}",
        f"study.n_trials={budget}",
    ]
    journal = Path(tmp_path, "studies", name, "journal.log")
    victim = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    began = time.perf_counter()
    try:
        wait_for(journal.exists, 120, f"{journal}", victim)
        storage = JournalStorage(JournalFileBackend(str(journal)))

        def victim_in_second_trial():
            try:
                study_id = storage.get_study_id_from_name(name)
            except KeyError:
                return None
            trials = storage.get_all_trials(study_id, deepcopy=False)
            if not any(t.state == State.COMPLETE for t in trials):
                return None  # first one trial done (compiled steps cached), then
            return next(
                (
                    t
                    for t in trials
                    if t.state == State.RUNNING
                    and t.user_attrs.get("pid") == victim.pid
                    and "trial_dir" in t.user_attrs
                ),
                None,
            )

        target = wait_for(
            victim_in_second_trial, 120, f"a second trial of worker {victim.pid}", victim
        )
        time.sleep(0.3)  # into the reconstruction
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)  # reaped: its pid is dead, not a zombie
        assert victim.returncode == -signal.SIGKILL

        stopped = optuna.load_study(
            study_name=name, storage=JournalStorage(JournalFileBackend(str(journal)))
        )  # still readable
        assert stopped.trials[target.number].state == State.RUNNING, "killed mid-trial"
        rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=150)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
    finally:
        stop_all([victim])
    seconds = time.perf_counter() - began

    study = optuna.load_study(
        study_name=name, storage=JournalStorage(JournalFileBackend(str(journal)))
    )
    retry = check_budget_after_one_kill(study, budget, target.number)
    assert (
        f"worker process {victim.pid} died" in study.trials[target.number].user_attrs["fail_reason"]
    )
    assert f"study {name}: {budget} complete, 1 fail" in rerun.stdout
    print(
        f"\njournal: trial {target.number} of worker {victim.pid} killed, failed on rerun and "
        f"retried as trial {retry.number}; {len(study.trials)} trials for a budget of {budget}, "
        f"0 lost; {seconds:.1f} s"
    )
