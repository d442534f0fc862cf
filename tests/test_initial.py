"""Initial state and the changes between engines: modes, slices, a two-engine plan."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from ptyopt.engines.common import run_plan
from ptyopt.initial import (
    ReconState,
    initial_state,
    measurements_from,
    with_probe_modes,
    with_slices,
)
from ptyopt.model import slice_propagators
from ptyopt.plan import parse_plan


def test_initial_state_matches_the_data(small_dataset):
    measurements = measurements_from(small_dataset)
    state = initial_state(measurements, n_slices=3, n_modes=1, seed=0)
    assert state.object.shape[0] == 3 and np.allclose(np.asarray(state.object), 1)
    assert sum(state.slice_thicknesses_A) == pytest.approx(measurements.thickness_A)
    mean_counts = float(jnp.mean(jnp.sum(measurements.patterns, axis=(-2, -1))))
    assert float(jnp.sum(jnp.abs(state.probe) ** 2)) == pytest.approx(mean_counts, rel=1e-4)


def test_added_modes_are_orthogonal_and_weak(small_dataset):
    state = initial_state(measurements_from(small_dataset), 1, 1, seed=0)
    power = float(jnp.sum(jnp.abs(state.probe) ** 2))
    modes = np.asarray(with_probe_modes(state, 3, seed=1).probe).reshape(3, -1)
    overlaps = np.abs(modes.conj() @ modes.T)
    np.testing.assert_allclose(overlaps - np.diag(np.diag(overlaps)), 0, atol=1e-3 * power)
    assert np.sum(np.abs(modes) ** 2) == pytest.approx(
        power * 1.1, rel=1e-3
    )  # two modes of 5% each
    assert np.diag(overlaps)[0] > 0.85 * power


def test_slice_resampling_keeps_the_projected_phase():
    rng = np.random.default_rng(0)
    phase = rng.uniform(0, 0.4, (3, 16, 16))
    state = ReconState(
        jnp.asarray(np.exp(1j * phase), jnp.complex64),
        jnp.ones((1, 8, 8), jnp.complex64),
        jnp.zeros((1, 2)),
        (2.0, 2.0, 2.0),
    )
    for n in (1, 2, 5):
        resampled = with_slices(state, n)
        assert resampled.object.shape[0] == n and sum(
            resampled.slice_thicknesses_A
        ) == pytest.approx(6.0)
        np.testing.assert_allclose(
            np.angle(np.asarray(resampled.object)).sum(axis=0), phase.sum(axis=0), atol=1e-5
        )


def test_a_plan_changes_slices_and_modes_between_engines(small_dataset):
    plan = parse_plan(
        {
            "slices": 1,
            "engines": [
                {"kind": "lsqml", "iterations": 3, "group_size": 16},
                {
                    "kind": "gradient",
                    "iterations": 3,
                    "group_size": 16,
                    "slices": 2,
                    "probe_modes": 2,
                },
                {"kind": "epie", "iterations": 2, "group_size": 8},
            ],
        }
    )
    reports = []
    state = run_plan(plan, measurements_from(small_dataset), observers=[reports.append])
    assert state.object.shape[0] == 2 and state.probe.shape[0] == 2
    assert [r.engine for r in reports] == ["lsqml"] * 3 + ["gradient"] * 3 + ["epie"] * 2
    assert [r.iteration for r in reports] == [0, 1, 2, 0, 1, 2, 0, 1] and state.iterations_done == 8
    assert all(np.isfinite(r.loss) and r.seconds > 0 for r in reports)


@pytest.mark.parametrize("bandlimit", [0.9, None])
def test_the_plans_band_limit_reaches_every_engines_propagators(small_dataset, bandlimit):
    """A plan's band limit is the one every engine propagates with: an LSQML engine
    handing over to a gradient one on 2 slices, each checked at its first iteration."""
    measurements = measurements_from(small_dataset)
    plan = parse_plan(
        {
            "slices": 2,
            "bandlimit": bandlimit,
            "engines": [
                {"kind": "lsqml", "iterations": 1, "group_size": 16},
                {"kind": "gradient", "iterations": 1, "group_size": 16},
            ],
        }
    )
    seen = []
    state = run_plan(plan, measurements, observers=[lambda r: seen.append(r.state.bandlimit)])
    assert seen == [bandlimit, bandlimit] and state.bandlimit == bandlimit
    expected = slice_propagators(
        measurements.geometry.window,
        measurements.pixel_size_A,
        measurements.energy_eV,
        state.slice_thicknesses_A,
        bandlimit,
    )
    np.testing.assert_array_equal(state.propagators(measurements), expected)
    corner = np.abs(np.asarray(expected))[0, measurements.geometry.window[0] // 2, 0]
    assert corner == (1.0 if bandlimit is None else 0.0)  # beyond 0.9 of Nyquist
