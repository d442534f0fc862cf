"""Observers see every iteration; scores come every k iterations and at the end."""

from __future__ import annotations

import io

import numpy as np

from ptyopt import metrics
from ptyopt.engines.common import run_plan
from ptyopt.initial import measurements_from
from ptyopt.observers import EveryKScores, IterationLog
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
    stream = io.StringIO()
    reports = []
    run_plan(
        plan,
        measurements,
        observers=[scores, IterationLog(7, stream, scores, "NRMSE"), reports.append],
    )
    assert [i for i, _ in scores.history] == [3, 6, 7]
    assert scores.history[-1][1] < scores.history[0][1] < 1.0
    lines = stream.getvalue().splitlines()
    assert [line.split()[:2] for line in lines] == [
        [f"{i}/7", "lsqml" if i <= 4 else "gradient"] for i in range(1, 8)
    ]
    for line, report in zip(lines, reports, strict=True):
        assert f"data error {report.loss:.6g}" in line
    assert [("NRMSE" in line) for line in lines] == [i in (3, 6, 7) for i in range(1, 8)]
    assert lines[-1].endswith(f"NRMSE {scores.history[-1][1]:.4f}")
