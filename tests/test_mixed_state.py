"""Under partial coherence more probe modes fit the data better and give a better
object than one: the incoherent sum is what a single coherent probe cannot model."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import small_recipe

from ptyopt import metrics
from ptyopt.data.simulate import simulate_dataset
from ptyopt.engines.common import run_plan
from ptyopt.initial import measurements_from
from ptyopt.plan import parse_plan


@pytest.fixture(scope="module")
def incoherent_dataset():
    """The small SrTiO3 dataset with a 0.5 Å rms effective source (3×3 quadrature),
    noise-free so that only the coherence model limits the fit."""
    recipe = small_recipe(
        optics={"energy_kV": 300, "semiangle_mrad": 25, "defocus_A": 40, "source_size_A": 0.5},
        simulation={
            "oversampling": 2,
            "phonon_configs": 1,
            "ground_truth_configs": 4,
            "coherence_samples": 3,
        },
        poisson_noise=False,
    )
    return simulate_dataset(recipe, progress=False)


def reconstruct(dataset, modes: int):
    measurements = measurements_from(dataset)
    plan = parse_plan(
        {
            "probe_modes": modes,
            "engines": [
                {
                    "kind": "lsqml",
                    "iterations": 30,
                    "group_size": 16,
                    "probe_update_start": 2,
                    "constraints": {"orthogonalize_probe_modes": {"every": 3}},
                }
            ],
        }
    )
    losses = []
    state = run_plan(plan, measurements, observers=[lambda r: losses.append(r.loss)])
    return losses[-1], metrics.score_object(
        np.asarray(state.object), dataset.ground_truth, measurements.geometry
    ).nrmse


def test_more_modes_beat_one_under_partial_coherence(incoherent_dataset):
    """LSQML, 30 iterations: 3 modes reach a third of one mode's final loss (measured
    50.6 vs 150 counts; 2 modes 50.5) and a lower NRMSE (0.557 vs 0.642; the source
    blur of 0.5 Å rms is strong, hence the high floor of both)."""
    loss_one, nrmse_one = reconstruct(incoherent_dataset, 1)
    loss_three, nrmse_three = reconstruct(incoherent_dataset, 3)
    assert loss_three < 0.8 * loss_one
    assert nrmse_three < 0.95 * nrmse_one
