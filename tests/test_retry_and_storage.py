"""Storage details: SQLite opens without Optuna's warnings, and a retried trial that
completes shows no failure (its predecessor's reason kept as ``retried_after``)."""

from __future__ import annotations

import warnings

import optuna
from omegaconf import OmegaConf

from ptyopt.study.components import RetryTrial, make_storage
from ptyopt.study.report.tables import trials_table
from ptyopt.study.settings import StorageSettings


def test_sqlite_storage_opens_without_warnings(tmp_path):
    settings = OmegaConf.structured(StorageSettings(kind="sqlite"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        storage = make_storage(settings, tmp_path)
        RetryTrial(2)
    assert [str(w.message) for w in caught] == []
    assert (tmp_path / "study.db").exists() and storage.get_all_studies() == []


def test_a_completed_retry_shows_no_failure():
    study = optuna.create_study(study_name="retry")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.set_user_attr("fail_reason", "worker process 12 died during the trial")
    trial.set_user_attr("fail_traceback", "Traceback ...")
    trial.set_user_attr("host", "node1")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    RetryTrial(2)(study, study.trials[0])
    retry = study.ask()
    assert retry.params == study.trials[0].params
    study.tell(retry, 0.5)
    done = study.trials[1]
    assert done.user_attrs["retried_after"] == "worker process 12 died during the trial"
    assert "fail_reason" not in done.user_attrs and "fail_traceback" not in done.user_attrs
    assert done.user_attrs["host"] == "node1"
    table, _ = trials_table(study)
    assert table["fail_reason"].tolist()[0] == "worker process 12 died during the trial"
    assert table["fail_reason"].isna().tolist() == [False, True]


def _config(name: str, kind: str):
    return OmegaConf.create(
        {"study": {"name": name}, "storage": OmegaConf.structured(StorageSettings(kind=kind))}
    )


def test_report_and_apply_name_the_storage_a_study_is_kept_in(tmp_path, monkeypatch):
    """``_load_study`` (report, apply) creates no storage; a study kept in the other
    local storage is named with the option to add."""
    import pytest

    from ptyopt.__main__ import _load_study
    from ptyopt.errors import ConfigError
    from ptyopt.study.runner import study_dir

    monkeypatch.setenv("PTYOPT_HOME", str(tmp_path))
    for name, kind, other, file in [
        ("in_db", "sqlite", "journal", "study.db"),
        ("in_log", "journal", "sqlite", "journal.log"),
    ]:
        folder = study_dir(name)
        optuna.create_study(
            study_name=name, storage=make_storage(_config(name, kind).storage, folder)
        )
        assert _load_study(_config(name, kind), required=True).study_name == name
        before = sorted(p.name for p in folder.iterdir())
        with pytest.raises(ConfigError, match=f"stored in {folder / file}: add storage={kind}"):
            _load_study(_config(name, other), required=True)
        with pytest.raises(ConfigError):
            _load_study(_config(name, other), required=False)
        assert sorted(p.name for p in folder.iterdir()) == before
    with pytest.raises(ConfigError, match="run it first"):
        _load_study(_config("never_run", "journal"), required=True)
    assert _load_study(_config("never_run", "sqlite"), required=False) is None
    assert not study_dir("never_run").exists()
