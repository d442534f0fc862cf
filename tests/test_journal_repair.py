"""A journal storage whose last record was cut short (a worker killed mid-append, a power
cut) is repaired before it is opened: the damaged file is kept, the incomplete line cut
off, and rerunning the study resumes it with every earlier complete trial intact. Damage
before the last line is refused with one line naming the file and the line. A Ctrl-C
inside an append lets the record finish and the lock go first."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import optuna
import pytest
from conftest import TINY_STUDY
from hydra import compose, initialize_config_dir
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from ptyopt.errors import ConfigError
from ptyopt.paths import conf_dir
from ptyopt.study.components import make_storage
from ptyopt.study.journal import InterruptSafeJournalFile
from ptyopt.study.runner import run_study, study_dir
from ptyopt.study.settings import StorageSettings, validate

State = optuna.trial.TrialState
NAME = "chopped"
STUDY = ["study=quickstart", *TINY_STUDY, "pruner=none", f"study.name={NAME}"]


def trials_in(journal) -> list[optuna.trial.FrozenTrial]:
    """The trials Optuna reads from ``journal`` (it skips an incomplete last line)."""
    storage = JournalStorage(JournalFileBackend(str(journal)))
    return optuna.load_study(study_name=NAME, storage=storage).trials


@pytest.fixture(scope="module")
def two_trials(tmp_path_factory):
    """A tiny study of 2 trials run by a worker process that has exited; returns
    (project folder, a pristine copy of the study folder)."""
    home = tmp_path_factory.mktemp("journal")
    subprocess.run(
        [sys.executable, "-m", "ptyopt", *STUDY, "study.n_trials=2"],
        env={**os.environ, "PTYOPT_HOME": str(home)},
        check=True,
        capture_output=True,
        timeout=300,
    )
    pristine = home / "pristine"
    shutil.copytree(home / "studies" / NAME, pristine)
    return home, pristine


@pytest.mark.parametrize("chop", [1, 10, 40])
def test_resuming_after_a_cut_journal_keeps_every_complete_trial(
    two_trials, chop, monkeypatch, capsys
):
    home, pristine = two_trials
    monkeypatch.setenv("PTYOPT_HOME", str(home))
    folder = study_dir(NAME)
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(pristine, folder)
    journal = folder / "journal.log"
    whole = trials_in(journal)
    assert [t.state for t in whole] == [State.COMPLETE] * 2
    damaged = journal.read_bytes()[:-chop]
    journal.write_bytes(damaged)
    readable = [t for t in trials_in(journal) if t.state == State.COMPLETE]
    if chop == 1:  # only the newline lost: the last record is whole and is kept
        readable = whole

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        config, plan_values = validate(compose("config", overrides=[*STUDY, "study.n_trials=3"]))
    run_study(config, plan_values, progress=False)

    (line,) = [s for s in capsys.readouterr().err.splitlines() if s.startswith("ptyopt: ")]
    backups = list(folder.glob("journal.log.damaged-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == damaged
    assert f"repaired the journal {journal}" in line and str(backups[0]) in line
    after = trials_in(journal)
    assert sum(t.state == State.COMPLETE for t in after) == 3
    for before in readable:
        kept = after[before.number]
        assert (kept.state, kept.values, kept.params) == (
            State.COMPLETE,
            before.values,
            before.params,
        )
    assert len(readable) >= 1


def test_damage_before_the_last_line_is_refused(two_trials, tmp_path):
    """The state the issue reported: a rerun appended its first record onto the cut
    line, so the damage is no longer at the end."""
    _, pristine = two_trials
    folder = tmp_path / NAME
    shutil.copytree(pristine, folder)
    journal = folder / "journal.log"
    lines = journal.read_bytes().splitlines(keepends=True)
    cut = b"".join(lines[:-1])[:-10]  # the second to last record cut short ...
    journal.write_bytes(cut + lines[-1] + lines[-1])  # ... and continued by a rerun
    before = journal.read_bytes()
    with pytest.raises(ConfigError) as raised:
        make_storage(StorageSettings(), folder)
    message = str(raised.value)
    assert "\n" not in message
    assert f"the journal {journal} is damaged at line {len(lines) - 1} of {len(lines)}" in message
    assert journal.read_bytes() == before and not list(folder.glob("journal.log.damaged-*"))


def test_a_sound_journal_is_left_alone(two_trials, tmp_path):
    _, pristine = two_trials
    folder = tmp_path / NAME
    shutil.copytree(pristine, folder)
    before = (folder / "journal.log").read_bytes()
    make_storage(StorageSettings(), folder)
    assert (folder / "journal.log").read_bytes() == before
    assert not list(folder.glob("journal.log.damaged-*"))


def _interrupting_lock(monkeypatch):
    """Make every journal lock send this process a SIGINT the moment it is acquired, as a
    Ctrl-C in the middle of an append would arrive."""
    from optuna.storages.journal import JournalFileSymlinkLock

    acquire = JournalFileSymlinkLock.acquire

    def acquire_then_interrupt(self):
        acquired = acquire(self)
        os.kill(os.getpid(), signal.SIGINT)
        return acquired

    monkeypatch.setattr(JournalFileSymlinkLock, "acquire", acquire_then_interrupt)


def test_a_ctrl_c_inside_an_append_leaves_no_lock_behind(tmp_path, monkeypatch):
    """Optuna's own journal file, interrupted inside its append, keeps its lock file (the
    next writer would wait 30 s for it); ptyopt's finishes the record, releases the
    lock and only then raises KeyboardInterrupt."""
    record = {"op_code": 0, "worker_id": "w", "study_name": "s", "directions": [1]}
    _interrupting_lock(monkeypatch)
    # Python's own Ctrl-C handler, even where this process inherited SIGINT ignored (a
    # suite started in the background by a non-interactive shell)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        plain = tmp_path / "plain.log"
        with pytest.raises(KeyboardInterrupt):
            JournalFileBackend(str(plain)).append_logs([record])
        assert (tmp_path / "plain.log.lock").is_symlink()  # the stale lock a study waits on

        safe = tmp_path / "safe.log"
        with pytest.raises(KeyboardInterrupt):
            InterruptSafeJournalFile(str(safe)).append_logs([record])
        assert not (tmp_path / "safe.log.lock").exists()
        assert [json.loads(line) for line in safe.read_text().splitlines()] == [record]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGINT, previous)
