"""Simulate once, cache, reuse: datasets are kept under the simulation cache as
``<name>-<hash>.h5``, the hash covering the recipe and the abTEM version."""

from __future__ import annotations

import logging
from pathlib import Path

import abtem

from ptyopt.data.dataset import PtychoDataset
from ptyopt.data.file import DatasetFileError, read_dataset, write_dataset
from ptyopt.data.recipe import DatasetRecipe, load_recipe, recipe_hash
from ptyopt.data.simulate import simulate_dataset
from ptyopt.paths import simulation_cache

log = logging.getLogger(__name__)


def cached_dataset_path(recipe: DatasetRecipe, cache: Path | None = None) -> Path:
    """Path of the cached file for ``recipe`` (it may not exist yet)."""
    folder = simulation_cache() if cache is None else Path(cache)
    return folder / f"{recipe.name}-{recipe_hash(recipe, abtem.__version__)}.h5"


def load_or_simulate(
    recipe: DatasetRecipe | str, cache: Path | None = None, progress: bool = True
) -> PtychoDataset:
    """The dataset for a recipe (or shipped recipe name): read from the cache, or
    simulated and written there when missing. A cached file that fails validation is
    reported and simulated again."""
    if isinstance(recipe, str):
        recipe = load_recipe(recipe)
    path = cached_dataset_path(recipe, cache)
    if path.exists():
        try:
            return read_dataset(path)
        except DatasetFileError as err:
            log.warning("re-simulating: cached dataset is unusable (%s)", err)
    dataset = simulate_dataset(recipe, progress=progress)
    write_dataset(path, dataset)
    return dataset
