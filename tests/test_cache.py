"""Simulate once, then read from the cache; a corrupt cache file is simulated again."""

from __future__ import annotations

import numpy as np
from conftest import tiny_recipe

from ptyopt.data import cache


def test_simulates_once_then_reads(tmp_path, monkeypatch):
    calls = []
    simulate = cache.simulate_dataset
    monkeypatch.setattr(
        cache,
        "simulate_dataset",
        lambda recipe, progress: calls.append(1) or simulate(recipe, progress),
    )
    recipe = tiny_recipe()
    first = cache.load_or_simulate(recipe, cache=tmp_path, progress=False)
    second = cache.load_or_simulate(recipe, cache=tmp_path, progress=False)
    assert len(calls) == 1
    assert cache.cached_dataset_path(recipe, tmp_path).exists()
    np.testing.assert_array_equal(first.patterns, second.patterns)
    np.testing.assert_array_equal(
        first.ground_truth.potential_V_A, second.ground_truth.potential_V_A
    )
    assert second.simulation["recipe"]["name"] == "tiny"


def test_corrupt_cache_is_simulated_again(tmp_path, caplog):
    recipe = tiny_recipe()
    path = cache.cached_dataset_path(recipe, tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not an HDF5 file")
    dataset = cache.load_or_simulate(recipe, cache=tmp_path, progress=False)
    assert dataset.patterns.shape == (9, 32, 32)
    assert "re-simulating" in caplog.text
    assert cache.load_or_simulate(recipe, cache=tmp_path, progress=False).n_positions == 9
