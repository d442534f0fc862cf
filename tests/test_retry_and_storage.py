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
