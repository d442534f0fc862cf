"""Observers: callbacks run after every iteration with an
:class:`~ptyopt.engines.common.IterationReport` (engine, iteration, loss, wall time,
state). A scoring observer scores the state every few iterations (the hook that
pruning uses); the progress bar shows loss and latest score."""

from __future__ import annotations

from collections.abc import Callable

from tqdm.auto import tqdm

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


class ProgressBar:
    """A tqdm bar over all iterations of a plan, showing engine, loss and, if given,
    the latest score of an :class:`EveryKScores`."""

    def __init__(
        self, total_iterations: int, scores: EveryKScores | None = None, label: str = "score"
    ):
        self.bar = tqdm(total=total_iterations, unit="it", desc="reconstructing")
        self.scores, self.label = scores, label

    def __call__(self, report: IterationReport) -> None:
        shown = {"engine": report.engine, "loss": f"{report.loss:.4g}"}
        if self.scores is not None and self.scores.history:
            shown[self.label] = f"{self.scores.history[-1][1]:.3f}"
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update()
        if report.state.iterations_done == self.bar.total:
            self.bar.close()
