"""How the command line ends when it cannot go on: Ctrl-C in the middle of a study
(exit 130, one line, the running trial told FAIL "interrupted"), a study folder it cannot
write, a misspelt command word and Hydra's own composition errors (exit 2 and one line
``ptyopt: error: ...`` naming the key, never a traceback)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import optuna
import pytest
from conftest import TINY_STUDY
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from test_worker_kill import wait_for

pytest_plugins = ["pg_server"]  # session-scoped `study_caches`: the tiny dataset, one JAX cache

State = optuna.trial.TrialState
STUDY = ["study=quickstart", *TINY_STUDY, "pruner=none"]


def ptyopt(*args: str, env: dict, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ptyopt", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


@pytest.fixture
def env(study_caches, tmp_path) -> dict[str, str]:
    return {**os.environ, **study_caches, "PTYOPT_HOME": str(tmp_path)}


def assert_one_line_error(result: subprocess.CompletedProcess, *names: str) -> str:
    message = result.stderr.strip()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert message.startswith("ptyopt: error: ") and len(message.splitlines()) == 1, message
    for name in names:
        assert name in message, (name, message)
    return message


def test_ctrl_c_fails_the_running_trial_and_exits_130(env, tmp_path):
    name = "interrupted"
    command = [
        sys.executable,
        "-m",
        "ptyopt",
        *STUDY,
        "plan.engines.0.iterations=4000",  # far longer than the test takes to interrupt it
        f"study.name={name}",
        "study.n_trials=3",
    ]
    journal = tmp_path / "studies" / name / "journal.log"
    worker = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a suite started in the background by a non-interactive shell has SIGINT ignored,
        # and its children would inherit that: the worker gets the terminal's default
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        wait_for(journal.exists, 120, str(journal), worker)
        storage = JournalStorage(JournalFileBackend(str(journal)))

        def reconstructing():
            try:
                trials = storage.get_all_trials(storage.get_study_id_from_name(name))
            except KeyError:
                return None
            return next(
                (t for t in trials if t.state == State.RUNNING and "trial_dir" in t.user_attrs),
                None,
            )

        running = wait_for(reconstructing, 120, "a trial reconstructing", worker)
        worker.send_signal(signal.SIGINT)
        _, stderr = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == "ptyopt: interrupted"
    study = optuna.load_study(
        study_name=name, storage=JournalStorage(JournalFileBackend(str(journal)))
    )
    trial = study.trials[running.number]
    assert trial.state == State.FAIL and trial.user_attrs["fail_reason"] == "interrupted"
    assert not [t for t in study.trials if t.state == State.RUNNING]


@pytest.mark.skipif(os.geteuid() == 0, reason="chmod does not deny root")
@pytest.mark.parametrize("which", ["studies", "study"])
def test_read_only_folder_is_one_line(env, tmp_path, which):
    folder = tmp_path / "studies"
    if which == "study":
        folder = folder / "readonly"
    folder.mkdir(parents=True)
    folder.chmod(0o555)
    try:
        result = ptyopt(*STUDY, "study.name=readonly", env=env)
    finally:
        folder.chmod(0o755)
    assert_one_line_error(result, f"cannot write to the {'study ' * (which == 'study')}folder")
    assert str(folder) in result.stderr


def test_studies_that_is_a_file_is_one_line(env, tmp_path):
    (tmp_path / "studies").write_text("not a folder")
    result = ptyopt(*STUDY, "study.name=anywhere", env=env)
    assert_one_line_error(result, f"{tmp_path / 'studies'} is a file")


def test_misspelt_command(env):
    result = ptyopt("reconstrct", "dataset_file=x.h5", env=env)
    assert_one_line_error(result)
    assert result.stderr.strip() == (
        "ptyopt: error: unknown command 'reconstrct'; choose one of study, report, "
        "reconstruct, apply, simulate, import; did you mean reconstruct?"
    )


@pytest.mark.parametrize(
    "override, names",
    [
        ("engine=nope", ["engine: unknown option 'nope'", "epie, gradient, lsqml"]),
        ("sampler=tpf", ["sampler: unknown option 'tpf'", "did you mean tpe?"]),
        ("study.n_trials=[1,", ["study.n_trials: cannot parse the override"]),
        (
            "study.n_trails=3",
            ["study.n_trails: unknown key", "+study.n_trails=", "did you mean n_trials?"],
        ),
        ("~study.nope", ["study.nope: cannot delete it"]),
    ],
)
def test_hydra_errors_are_one_line(env, override, names):
    assert_one_line_error(ptyopt("study=quickstart", override, env=env), *names)


def test_hydra_full_error_still_shows_the_traceback(env):
    result = ptyopt("study=quickstart", "engine=nope", env={**env, "HYDRA_FULL_ERROR": "1"})
    assert result.returncode == 1 and "MissingConfigException" in result.stderr
