"""Grouping of scan positions into equal-size groups, reshuffled each iteration.

``sparse``: a seeded random permutation each iteration (groups spread over the scan).
``compact``: spatially compact groups from recursive median bisection of the positions
(fixed membership, balanced sizes); their order is reshuffled each iteration.
Groups are padded to the group size with weight-0 entries so that every group has the
same shape and one compiled step serves them all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GROUPINGS = ("sparse", "compact")


@dataclass(frozen=True)
class Groups:
    """indices (n_groups, G) int32 into the positions; weights (n_groups, G) float32,
    1 for real entries and 0 for padding (exact in any precision: the engines cast them
    to the plan's)."""

    indices: np.ndarray
    weights: np.ndarray


def _pad(members: list[np.ndarray], size: int) -> Groups:
    indices = np.zeros((len(members), size), np.int32)
    weights = np.zeros((len(members), size), np.float32)
    for row, group in enumerate(members):
        indices[row, : len(group)] = group
        weights[row, : len(group)] = 1.0
    return Groups(indices, weights)


def _bisect(order: np.ndarray, positions: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """Split ``order`` into ``n_groups`` compact parts of near-equal size."""
    if n_groups == 1:
        return [order]
    pts = positions[order]
    axis = int(np.argmax(np.ptp(pts, axis=0)))
    sorted_order = order[np.argsort(pts[:, axis], kind="stable")]
    left_groups = n_groups // 2
    cut = round(len(order) * left_groups / n_groups)
    return _bisect(sorted_order[:cut], positions, left_groups) + _bisect(
        sorted_order[cut:], positions, n_groups - left_groups
    )


class Grouper:
    """Yields the groups of each iteration for ``n`` positions (n, 2), reproducibly
    from ``seed``."""

    def __init__(self, positions: np.ndarray, group_size: int, kind: str, seed: int):
        if kind not in GROUPINGS:
            raise ValueError(f"unknown grouping {kind!r}; choose one of {list(GROUPINGS)}")
        n = len(positions)
        self.group_size = min(group_size, n)
        self.n_groups = -(-n // self.group_size)
        self.kind = kind
        self.seed = seed
        self._n = n
        if kind == "compact":
            self._compact = _bisect(np.arange(n), np.asarray(positions), self.n_groups)

    def groups(self, iteration: int) -> Groups:
        rng = np.random.default_rng([self.seed, iteration])
        if self.kind == "sparse":
            members = np.array_split(rng.permutation(self._n), self.n_groups)
        else:
            members = [rng.permutation(self._compact[i]) for i in rng.permutation(self.n_groups)]
        return _pad(members, self.group_size)
