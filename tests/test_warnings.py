"""Warnings users expect (one line each on stderr, ``ptyopt: warning:``, the run goes
on): a dose of a few electrons per pattern, a scan over many copies of the specimen's
periodic cell, a resumed study whose last trials all failed."""

from __future__ import annotations

import pytest
from conftest import tiny_recipe


def _warnings(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("ptyopt: warning: ")]


@pytest.mark.parametrize(
    ("dose", "step", "warned"),
    [(40.0, 0.55, False), (30.0, 0.55, True), (3.0e6, 1.0e-3, True)],  # 12.1, 9.1, 3 e
)
def test_a_dose_of_few_electrons_per_pattern_is_warned_of(capsys, dose, step, warned):
    tiny_recipe(dose_e_per_A2=dose, scan={"shape": [3, 3], "step_A": step})
    lines = _warnings(capsys.readouterr().err)
    assert len(lines) == warned
    if warned:
        assert "dataset.dose_e_per_A2" in lines[0] and f"{dose * step**2:.3g} electrons" in lines[0]


def test_a_scan_over_many_cells_is_warned_of(capsys):
    """Si [110], 2×3 repeats (a non-square unit cell, squared by the builder): the
    warning fires for a scan just over twice the cell's edge along x, not just under."""
    from ptyopt.data.recipe import specimen_of

    recipe = tiny_recipe()
    edge = specimen_of(recipe.structure).cell_edge_A
    capsys.readouterr()
    for scale, warned in [(0.99, False), (1.01, True)]:
        shape, step = [5, 7], 2 * edge / 6 * scale  # 6 steps along x
        tiny_recipe(scan={"shape": shape, "step_A": step}, dose_e_per_A2=1.0e6)
        lines = _warnings(capsys.readouterr().err)
        assert len(lines) == warned, (shape, step, lines)
        if warned:
            assert "dataset.scan" in lines[0] and "lateral_repeats" in lines[0]


def test_a_dataset_file_of_few_counts_per_pattern_is_warned_of(capsys, tmp_path, tiny_dataset):
    """The tiny dataset's patterns scaled to a mean of 4 counts, and of 40."""
    import dataclasses

    import numpy as np
    from omegaconf import OmegaConf

    from ptyopt.data.file import write_dataset
    from ptyopt.study.runner import dataset_for

    patterns = tiny_dataset.patterns / tiny_dataset.patterns.sum(axis=(-2, -1)).mean()
    for mean, warned in [(40.0, False), (4.0, True)]:
        scaled = dataclasses.replace(tiny_dataset, patterns=(mean * patterns).astype(np.float32))
        path = write_dataset(tmp_path / f"{mean:g}.h5", scaled)
        capsys.readouterr()
        dataset_for(OmegaConf.create({"dataset_file": str(path)}))
        lines = _warnings(capsys.readouterr().err)
        assert len(lines) == warned
        if warned:
            assert "dataset_file" in lines[0] and "4 counts each" in lines[0]
