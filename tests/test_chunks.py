"""Positions computed in concurrent chunks (ptyopt.engines.chunks) give what one batch
gives: the split is an execution detail, never a change of the algorithm."""

from __future__ import annotations

import os
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptyopt.engines import chunks
from ptyopt.engines.common import run_plan
from ptyopt.initial import initial_state, measurements_from
from ptyopt.plan import parse_plan


def test_over_chunks_concatenates_and_sums_uneven_chunks(monkeypatch):
    """7 positions in 3 chunks (2, 3, 2): per-position outputs come back in order along
    the axis asked for, sums over positions summed."""
    monkeypatch.setattr(chunks, "chunk_count", lambda positions: 3)
    seen = []

    def per_chunk(a, b):
        seen.append(a.shape[0])
        return a * b[:, None], jnp.stack([a, a]), jnp.sum(a * b[:, None], axis=0)

    a = jnp.arange(21.0).reshape(7, 3)
    b = jnp.linspace(0.5, 2.0, 7)
    scaled, stacked, summed = chunks.over_chunks(per_chunk, (a, b), (0, 1, None))
    assert seen == [2, 3, 2]
    np.testing.assert_allclose(scaled, a * b[:, None])
    np.testing.assert_allclose(stacked, jnp.stack([a, a]))
    np.testing.assert_allclose(summed, jnp.sum(a * b[:, None], axis=0), rtol=1e-6)


def test_chunk_count_follows_the_cores_and_the_group():
    """CHUNKS_PER_CORE chunks per usable core, never below MIN_CHUNK positions per chunk."""
    cores = len(os.sched_getaffinity(0))
    assert chunks.chunk_count(1) == 1
    assert chunks.chunk_count(2 * chunks.MIN_CHUNK - 1) == 1
    assert chunks.chunk_count(1000 * chunks.MIN_CHUNK) == chunks.CHUNKS_PER_CORE * cores
    assert chunks.chunk_count(3 * chunks.MIN_CHUNK) == min(3, chunks.CHUNKS_PER_CORE * cores)


ENGINES = {
    "gradient": {"object_solver": {"learning_rate": 0.02}},
    "epie": {"object_normalization": "position"},
    "epie-group": {"kind": "epie", "object_normalization": "group", "alpha_object": 0.5},
    "lsqml": {},
}


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_engines_reconstruct_the_same_in_any_number_of_chunks(thick_dataset, monkeypatch, name):
    """Each engine, 3 iterations on 4 slices with 2 probe modes, groups of 11 (chunks of
    3–4 and an uneven last group with padding), probe refined and positions corrected
    from the start: 1 chunk and 3 chunks give
    the same object, probe and positions to 1e-4 of their largest values (the chunks
    change the order of float32 sums, which Adam's normalised steps amplify: measured
    5e-5 for the gradient engine, the others closer)."""
    measurements = measurements_from(thick_dataset)
    start = initial_state(measurements, 4, 2, seed=0)
    jitter = np.random.default_rng(1).normal(0, 0.3, start.positions_px.shape)
    start = replace(start, positions_px=start.positions_px + jitter.astype(np.float32))
    settings = {"kind": name, **ENGINES[name]}
    plan = parse_plan(
        {
            "engines": [
                {
                    "iterations": 3,
                    "group_size": 11,
                    "probe_update_start": 0,
                    "position_correction": {"start": 0, "step": 0.05},
                    **settings,
                }
            ]
        }
    )
    results = []
    for count in (1, 3):
        monkeypatch.setattr(chunks, "chunk_count", lambda positions, count=count: count)
        jax.clear_caches()  # the chunk count is fixed when a step is traced
        results.append(run_plan(plan, measurements, state=start))
    one, three = results
    scale = float(np.max(np.abs(np.asarray(one.object))))
    np.testing.assert_allclose(three.object, one.object, atol=1e-4 * scale)
    probe_scale = float(np.max(np.abs(np.asarray(one.probe))))
    np.testing.assert_allclose(three.probe, one.probe, atol=1e-4 * probe_scale)
    np.testing.assert_allclose(three.positions_px, one.positions_px, atol=1e-4)
    moved = np.max(np.abs(np.asarray(one.positions_px) - np.asarray(start.positions_px)))
    assert moved > 1e-3  # the positions were corrected, so their chunks were compared
