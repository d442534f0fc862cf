"""Bad input gives a clear error and loses nothing.

A small study is run first (COMPLETE trials, in a project folder of this module's own).
Then each bad input is given to the real command line, against the same study name and
storage: fatal ones (unknown key, wrong type, out-of-range value, low > high, unknown
sampler/pruner/engine, missing, truncated or corrupt dataset file, NaN patterns,
patterns/positions count mismatch, a file without the ground truth a study scores
against) must exit non-zero with one short paragraph naming the problem and no
traceback; a diverging learning rate must become a FAIL trial with its reason while the
study completes its budget. After every case the storage is
re-opened and every earlier trial is found unchanged.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import optuna
import pytest
from conftest import EAGER_PRUNING, TINY_STUDY
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from ptyopt.data.file import read_dataset, write_dataset

TINY = TINY_STUDY + EAGER_PRUNING
LR = "plan.engines.0.object_solver.learning_rate"
NAME = "robust"
FIRST_TRIALS = 3
# What must never reach the user on a bad input: Python or JAX/XLA internals.
INTERNALS = re.compile(r"Traceback|File \"|jaxlib|jax\._src|XlaRuntimeError")


@dataclass
class Study:
    home: Path
    env: dict[str, str]
    good_file: Path  # the study's dataset, rewritten by write_dataset
    first: list[tuple]  # the trials of the first run, as snapshot() gives them


def cli(study: Study, *overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """The real command line against the study's name and storage."""
    command = [
        sys.executable,
        "-m",
        "ptyopt",
        "study=quickstart",
        *TINY,
        f"study.name={NAME}",
        *overrides,
    ]
    return subprocess.run(command, env=study.env, capture_output=True, text=True, timeout=timeout)


def journal(home: Path) -> Path:
    return home / "studies" / NAME / "journal.log"


def snapshot(home: Path) -> list[tuple]:
    """Every trial of the study, re-read from its storage: number, state, parameters
    (with distributions), values, intermediate values, attributes and times."""
    storage = JournalStorage(JournalFileBackend(str(journal(home))))
    study = optuna.load_study(study_name=NAME, storage=storage)
    return [
        (
            t.number,
            t.state.name,
            t.params,
            t.distributions,
            t.values,
            t.intermediate_values,
            t.user_attrs,
            t.system_attrs,
            t.datetime_start,
            t.datetime_complete,
        )
        for t in study.get_trials(deepcopy=False)
    ]


def files_digest(home: Path) -> dict[str, str]:
    """SHA-256 of the journal and of every trial artifact."""
    folder = home / "studies" / NAME
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "budget.lock"
    }


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Study:
    """A project folder with a small study of FIRST_TRIALS COMPLETE trials."""
    home = tmp_path_factory.mktemp("bad_inputs_home")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PTYOPT_CACHE", "PTYOPT_JAX_CACHE")
    }
    env["PTYOPT_HOME"] = str(home)
    first = Study(home, env, home / "good.h5", [])
    result = cli(first, f"study.n_trials={FIRST_TRIALS}", "pruner=none")
    assert result.returncode == 0, result.stderr
    first.first = snapshot(home)
    assert [t[:2] for t in first.first] == [(n, "COMPLETE") for n in range(FIRST_TRIALS)]
    assert all(len(t[4]) == 1 and 0 < t[4][0] < 1 for t in first.first)
    [cached] = (home / "simulations" / "cache").glob("*.h5")
    write_dataset(first.good_file, read_dataset(cached))
    return first


def assert_earlier_trials_intact(study: Study, before: list[tuple]) -> list[tuple]:
    """The storage, re-opened, still holds ``before`` (and the first run's trials) as
    they were; returns the trials now there."""
    after = snapshot(study.home)
    assert after[: len(before)] == before
    assert after[:FIRST_TRIALS] == study.first
    return after


def assert_fatal(
    study: Study,
    result: subprocess.CompletedProcess,
    before: list[tuple],
    digest: dict[str, str],
    *names: str,
) -> None:
    """Exit status 2, one short paragraph on stderr naming each of ``names`` (Hydra's
    composition errors too), no internals, no trial run, the storage and every artifact
    untouched."""
    message = result.stderr.strip()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert not INTERNALS.search(result.stderr), result.stderr
    for name in names:
        assert name in message, (name, message)
    assert message.startswith("ptyopt: error: "), message
    assert 1 <= len(message.splitlines()) <= 3 and "\n\n" not in message, message
    assert "study " + NAME not in result.stdout  # no study summary: nothing ran
    assert snapshot(study.home) == before  # nothing added, nothing changed
    assert_earlier_trials_intact(study, before)
    assert files_digest(study.home) == digest


def budget(before: list[tuple]) -> str:
    """A budget one trial above the study's size: a bad input that slipped through
    would run (and add) a trial."""
    return f"study.n_trials={len(before) + 1}"


CONFIG_CASES = {
    "unknown key in study": (
        ["+study.n_trails=3"],
        ["study.n_trails", "not in 'StudySettings'", "n_trials"],
    ),
    "unknown key in dataset": (
        ["+dataset.optics.energy_kv=300"],
        ["dataset.optics.energy_kv", "not in 'OpticsRecipe'", "energy_kV"],
    ),
    "wrong type": (["study.n_trials=many"], ["study.n_trials", "'many'", "Integer"]),
    "negative energy": (
        ["dataset.optics.energy_kV=-3"],
        ["dataset.optics.energy_kV", "must be > 0"],
    ),
    "zero trials": (["study.n_trials=0"], ["study.n_trials", "must be >= 1"]),
    "low above high": (
        [f"study.search_space={{{LR}: {{type: float, low: 2, high: 1}}}}"],
        [f"study.search_space.{LR}", "low (2) must be < high (1)"],
    ),
    "unknown sampler name": (
        ["sampler.name=annealing"],
        ["sampler.name", "unknown sampler 'annealing'", "tpe"],
    ),
    "unknown pruner name": (
        ["pruner.name=early"],
        ["pruner.name", "unknown pruner 'early'", "median"],
    ),
    # 48 px at the quickstart cell reach 40.3 mrad: 0.3 of that cuts the 25 mrad probe
    "band limit inside the aperture": (
        ["plan.bandlimit=0.3"],
        ["plan.bandlimit", "= 12.1 mrad", "25 mrad aperture"],
    ),
    "band limit out of range": (["plan.bandlimit=1.5"], ["plan.bandlimit", "(0, 1]"]),
    "unknown sampler option": (
        ["sampler=annealing"],
        ["sampler: unknown option 'annealing'", "tpe"],
    ),
    "unknown engine option": (
        ["engine=nonsense"],
        ["engine: unknown option 'nonsense'", "gradient"],
    ),
    "unknown key without +": (
        ["study.n_trails=3"],
        ["study.n_trails: unknown key", "+study.n_trails=", "n_trials"],
    ),
    "bad override syntax": (["study.n_trials=[3,"], ["study.n_trials: cannot parse"]),
}


@pytest.mark.parametrize(("overrides", "names"), CONFIG_CASES.values(), ids=CONFIG_CASES.keys())
def test_bad_configuration(study: Study, overrides: list[str], names: list[str]) -> None:
    before, digest = snapshot(study.home), files_digest(study.home)
    extra = [] if any(o.startswith("study.n_trials=") for o in overrides) else [budget(before)]
    result = cli(study, *extra, *overrides)
    assert_fatal(study, result, before, digest, *names)


# --- bad dataset files, made from the study's own dataset ------------------------------


def truncated(good: Path, path: Path) -> None:
    data = good.read_bytes()
    with h5py.File(good, "r") as file:  # the last patterns really lie past the cut
        patterns = file["patterns"]
        assert patterns.id.get_chunk_info(patterns.shape[0] - 1).byte_offset > len(data) // 2
    path.write_bytes(data[: len(data) // 2])


def garbage(good: Path, path: Path) -> None:
    path.write_bytes(b"this is not an HDF5 file at all\n" * 200)


def corrupt_chunk(good: Path, path: Path) -> None:
    """Opens fine; only decompressing pattern 3 reveals the damage."""
    shutil.copy(good, path)
    with h5py.File(path, "r") as file:
        chunk = file["patterns"].id.get_chunk_info(3)
    with path.open("r+b") as raw:
        raw.seek(chunk.byte_offset)
        raw.write(b"\xff" * chunk.size)


def _edited(change):
    def make(good: Path, path: Path) -> None:
        shutil.copy(good, path)
        with h5py.File(path, "r+") as file:
            change(file)

    return make


def _replace(file: h5py.File, key: str, data: np.ndarray) -> None:
    del file[key]
    file[key] = data


def _nan_patterns(file: h5py.File) -> None:
    patterns = file["patterns"][()]
    patterns[0, 0, 0] = np.nan
    patterns[5, 3, :4] = np.nan
    _replace(file, "patterns", patterns)


def _one_position_short(file: h5py.File) -> None:
    _replace(file, "positions_A", file["positions_A"][()][:-1])


def _no_ground_truth(file: h5py.File) -> None:
    del file["ground_truth"]


FILE_CASES = {
    "truncated": (truncated, ["is not a readable HDF5 file (truncated or corrupt?)"]),
    "garbage": (garbage, ["is not a readable HDF5 file (truncated or corrupt?)"]),
    "corrupt pattern chunk": (corrupt_chunk, ["truncated or corrupt?): reading /patterns failed"]),
    "NaN patterns": (
        _edited(_nan_patterns),
        ["/patterns contains 5 non-finite values (NaN or inf)"],
    ),
    "count mismatch": (
        _edited(_one_position_short),
        ["/positions_A has 63 positions but /patterns has 64 patterns"],
    ),
    "no ground truth": (
        _edited(_no_ground_truth),
        ["objective.metrics: nrmse needs a ground truth and", "has none"],
    ),
}


@pytest.mark.parametrize(("make", "names"), FILE_CASES.values(), ids=FILE_CASES.keys())
def test_bad_dataset_file(study: Study, tmp_path: Path, make, names: list[str]) -> None:
    path = tmp_path / "bad.h5"
    make(study.good_file, path)
    before, digest = snapshot(study.home), files_digest(study.home)
    result = cli(study, budget(before), f"dataset_file={path}")
    assert_fatal(study, result, before, digest, str(path), *names)


def test_band_limit_inside_the_aperture_of_a_dataset_file(study: Study) -> None:
    """A dataset read from a file is checked against the plan's band limit before any
    trial, as a recipe is at validation."""
    before, digest = snapshot(study.home), files_digest(study.home)
    overrides = (budget(before), f"dataset_file={study.good_file}", "plan.bandlimit=0.3")
    result = cli(study, *overrides)
    assert_fatal(study, result, before, digest, "plan.bandlimit", "12.1 mrad", "25 mrad")


def test_missing_dataset_file(study: Study) -> None:
    path = study.home / "no_such_dataset.h5"
    before, digest = snapshot(study.home), files_digest(study.home)
    result = cli(study, budget(before), f"dataset_file={path}")
    assert_fatal(study, result, before, digest, f"{path}: does not exist")


# --- per trial: a diverging learning rate ----------------------------------------------


def test_diverging_learning_rate_fails_the_trial_and_the_study_goes_on(study: Study) -> None:
    """Plain SGD at 1e11–1e12 diverges: each such trial is told FAIL with the reason,
    the study runs its whole budget (exit 0) and keeps every earlier trial; rerun
    with the original settings, it then completes a trial again."""
    before = snapshot(study.home)
    digest = files_digest(study.home)
    diverging = (  # the solver is searched too: a resume may not change the plan itself
        f"++study.search_space={{{LR}: {{type: float, low: 1.0e11, high: 1.0e12, log: true}}, "
        "plan.engines.0.object_solver.name: {type: categorical, choices: [sgd]}}"
    )
    result = cli(study, f"study.n_trials={len(before) + 2}", "pruner=none", diverging)
    assert result.returncode == 0, result.stderr
    assert not INTERNALS.search(result.stderr), result.stderr
    after = assert_earlier_trials_intact(study, before)
    new = after[len(before) :]
    assert [t[:2] for t in new] == [(len(before), "FAIL"), (len(before) + 1, "FAIL")]
    for trial in new:
        assert 1e11 <= trial[2][LR] <= 1e12 and trial[4] is None
        assert re.fullmatch(
            r"gradient engine diverged at iteration \d+: .*", trial[6]["fail_reason"]
        ), trial[6]
    digest.pop("journal.log")  # the journal grows by the new trials
    assert {
        k: v for k, v in files_digest(study.home).items() if k in digest
    } == digest  # earlier artifacts untouched

    resumed = cli(study, f"study.n_trials={len(after) + 1}", "pruner=none")
    assert resumed.returncode == 0, resumed.stderr
    final = assert_earlier_trials_intact(study, after)
    assert [t[:2] for t in final[len(after) :]] == [(len(after), "COMPLETE")]
