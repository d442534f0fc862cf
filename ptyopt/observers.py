"""Observers: callbacks run after every iteration with an
:class:`~ptyopt.engines.common.IterationReport` (engine, iteration, loss, wall time,
state). A scoring observer scores the state every few iterations (the hook that
pruning uses); the iteration log prints one line per iteration:
the data error and, when scored, the score."""

from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

from ptyopt.engines.common import IterationReport
from ptyopt.initial import ReconState


class EveryKScores:
    """Scores the state with ``score`` (state → float) every ``every`` iterations
    (counted over the whole plan) and after the last; keeps (iteration, score) pairs."""

    def __init__(self, score: Callable[[ReconState], float], every: int, total_iterations: int):
        self.score, self.every, self.total = score, every, total_iterations
        self.history: list[tuple[int, float]] = []

    def __call__(self, report: IterationReport) -> None:
        done = report.state.iterations_done
        if done % self.every == 0 or done == self.total:
            self.history.append((done, self.score(report.state)))


class IterationLog:
    """Prints one line per iteration to ``stream``: iterations done of the plan's
    ``total_iterations``, the engine, the data error (the noise model's mean loss per
    position) and, where ``scores`` (put before this log among the observers) scored
    this iteration, its score as ``label``."""

    def __init__(
        self,
        total_iterations: int,
        stream: TextIO,
        scores: EveryKScores | None = None,
        label: str = "score",
    ):
        self.total, self.stream, self.scores, self.label = total_iterations, stream, scores, label

    def __call__(self, report: IterationReport) -> None:
        done = report.state.iterations_done
        line = (
            f"  {done:>{len(str(self.total))}}/{self.total} {report.engine:<8} "
            f"data error {report.loss:.6g}"
        )
        if self.scores is not None and self.scores.history and self.scores.history[-1][0] == done:
            line += f"  {self.label} {self.scores.history[-1][1]:.4f}"
        print(line, file=self.stream, flush=True)
