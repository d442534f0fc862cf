"""Determinism: the same configuration and seed give bit-identical trials on the CPU.

The same command (TPE with a fixed seed, no pruning) runs twice as separate processes,
each in a project folder of its own (its own study storage and JAX compilation cache)
but with one simulation cache: the first run simulates the dataset and writes its file,
the second reads that file, so both see bit-identical data. Every trial must have the
same parameters, values, intermediate values, metrics and reconstructed object, bit for
bit.

The simulation itself is bit-identical from process to process too: abTEM's FFTW plans
are chosen by heuristics (``FFTW_ESTIMATE``), not by timing them, which picked codelets
that round differently in 2 of 16 fresh processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import optuna
from conftest import TINY_STUDY
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

TINY = TINY_STUDY
N_TRIALS = 3

SIMULATE_AND_HASH = """
import hashlib, sys
sys.path.insert(0, sys.argv[1])
from conftest import thick_recipe
from ptyopt.data.simulate import simulate_dataset
dataset = simulate_dataset(thick_recipe(), progress=False)
for array in (dataset.patterns, dataset.ground_truth.potential_V_A):
    print(hashlib.sha256(array.tobytes()).hexdigest())
"""


def _env(home: Path, cache: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "PTYOPT_JAX_CACHE"}
    env.update(PTYOPT_HOME=str(home), PTYOPT_CACHE=str(cache), JAX_PLATFORMS="cpu")
    return env


def _trials(home: Path) -> list[optuna.trial.FrozenTrial]:
    storage = JournalStorage(JournalFileBackend(str(home / "studies" / "det" / "journal.log")))
    return optuna.load_study(study_name="det", storage=storage).trials


def _object(trial: optuna.trial.FrozenTrial) -> np.ndarray:
    with h5py.File(Path(trial.user_attrs["trial_dir"]) / "reconstruction.h5", "r") as file:
        return file["object"][()]


def test_same_config_and_seed_give_identical_trials(tmp_path: Path) -> None:
    # Seeded TPE: after the quickstart's enqueued baseline (trial 0) its model proposes
    # every trial (n_startup_trials=1); no pruning, so every trial runs to the end.
    command = [
        sys.executable,
        "-m",
        "ptyopt",
        "study=quickstart",
        *TINY,
        "study.name=det",
        f"study.n_trials={N_TRIALS}",
        "study.seed=7",
        "sampler=tpe",
        "sampler.n_startup_trials=1",
        "pruner=none",
    ]
    cache, homes = tmp_path / "cache", [tmp_path / "first", tmp_path / "second"]
    results = [
        subprocess.run(command, env=_env(home, cache), capture_output=True, text=True, timeout=300)
        for home in homes
    ]
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert (
        "simulating" in results[0].stderr and "simulating" not in results[1].stderr
    )  # simulated once, then read
    assert len(list(cache.glob("*.h5"))) == 1

    first, second = (_trials(home) for home in homes)
    assert len(first) == len(second) == N_TRIALS
    for a, b in zip(first, second, strict=True):
        assert a.number == b.number and a.state == b.state == optuna.trial.TrialState.COMPLETE
        assert a.params == b.params and a.distributions == b.distributions
        assert [v.hex() for v in a.values] == [v.hex() for v in b.values], (
            a.number,
            a.values,
            b.values,
        )
        assert a.intermediate_values == b.intermediate_values
        same_metrics = {
            name: value for name, value in a.user_attrs["metrics"].items() if name != "seconds"
        }
        assert same_metrics == {
            name: value for name, value in b.user_attrs["metrics"].items() if name != "seconds"
        }
        np.testing.assert_array_equal(_object(a), _object(b), strict=True)
    # the sampler really explored: distinct parameter sets, the baseline first
    assert len({tuple(sorted(t.params.items())) for t in first}) == N_TRIALS
    assert first[0].params["plan.engines.0.object_solver.learning_rate"] == 0.03


def test_simulation_is_bit_identical_in_fresh_processes() -> None:
    """Four fresh processes, two at a time, simulate :func:`conftest.thick_recipe` (48 px,
    4 slices) and get the same patterns and ground truth, bit for bit (no cache)."""
    tests = str(Path(__file__).parent)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    hashes = []
    for _ in range(2):
        running = [
            subprocess.Popen(
                [sys.executable, "-c", SIMULATE_AND_HASH, tests],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        for process in running:
            out, err = process.communicate(timeout=300)
            assert process.returncode == 0, err
            hashes.append(out.split())
    assert all(len(h) == 2 for h in hashes), hashes
    assert all(h == hashes[0] for h in hashes), hashes
