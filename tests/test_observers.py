"""Observers see every iteration; scores come every k iterations and at the end."""

from __future__ import annotations

import numpy as np

from ptyopt import metrics
from ptyopt.engines.common import run_plan
from ptyopt.initial import measurements_from
from ptyopt.observers import EveryKScores, ProgressBar
from ptyopt.plan import parse_plan


def test_scores_every_k_and_at_the_end(small_dataset):
    measurements = measurements_from(small_dataset)
    plan = parse_plan(
        {
            "engines": [
                {"kind": "lsqml", "iterations": 4, "group_size": 16},
                {"kind": "gradient", "iterations": 3, "group_size": 16},
            ]
        }
    )
    scores = EveryKScores(
        lambda s: (
            metrics.score_object(
                np.asarray(s.object), small_dataset.ground_truth, measurements.geometry
            ).nrmse
        ),
        every=3,
        total_iterations=7,
    )
    bar = ProgressBar(7, scores)
    run_plan(plan, measurements, observers=[scores, bar])
    assert [i for i, _ in scores.history] == [3, 6, 7]
    assert scores.history[-1][1] < scores.history[0][1] < 1.0
    assert bar.bar.n == 7
