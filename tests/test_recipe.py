"""Dataset recipes: shipped ones load, bad keys and values are named before compute."""

from __future__ import annotations

import pytest

from ptyopt.data.recipe import (
    available_recipes,
    derive_sampling,
    load_recipe,
    recipe_from_mapping,
    recipe_hash,
)
from ptyopt.data.structures import build_specimen
from ptyopt.errors import ConfigError


def test_shipped_recipes_load_and_fit():
    assert {"quickstart", "thin", "bench"} <= set(available_recipes())
    for name in available_recipes():
        recipe = load_recipe(name)
        specimen = build_specimen(
            recipe.structure.name,
            tuple(recipe.structure.lateral_repeats),
            recipe.structure.thickness_A,
        )
        derive_sampling(
            recipe, specimen.cell_edge_A
        )  # raises unless the detector reaches beyond the bright-field disc
        assert abs(specimen.lateral_strain) < 0.02


def test_bench_recipe_is_the_benchmark_case():
    recipe = load_recipe("bench")
    assert recipe.reconstruction_slices >= 10 and recipe.poisson_noise
    assert 64 <= recipe.detector.pixels <= 96 and recipe.scan.shape == [32, 32]
    specimen = build_specimen(
        recipe.structure.name, tuple(recipe.structure.lateral_repeats), recipe.structure.thickness_A
    )
    assert specimen.thickness_A == pytest.approx(50.0, abs=3.0)


@pytest.mark.parametrize(
    "values, key",
    [
        ({"optics": {"energy_kv": 300}}, "energy_kv"),
        ({"resolution": 1}, "resolution"),
        ({"scan": {"step_A": "wide"}}, "scan.step_A"),
        ({"optics": {"energy_kV": -5}}, "optics.energy_kV"),
        ({"scan": {"shape": [0, 4]}}, "scan.shape"),
        ({"detector": {"pixels": 31}}, "detector.pixels"),
        ({"simulation": {"oversampling": 1}}, "simulation.oversampling"),
        (
            {"simulation": {"phonon_configs": 8, "ground_truth_configs": 4}},
            "simulation.ground_truth_configs",
        ),
        ({"structure": {"name": "graphene"}}, "structure.name"),
        ({"dose_e_per_A2": 0}, "dose_e_per_A2"),
        ({"reconstruction_slices": 0}, "reconstruction_slices"),
        ({"dose_e_per_A2": None}, "dose_e_per_A2"),
    ],
)
def test_bad_recipes_name_the_key(values, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        recipe_from_mapping(values)


def test_window_that_cannot_hold_the_probe_is_rejected():
    recipe = recipe_from_mapping({"optics": {"defocus_A": 400.0}})
    with pytest.raises(ConfigError, match="does not hold the probe"):
        derive_sampling(recipe, 11.7)


def test_detector_inside_the_bright_field_disc_is_rejected():
    recipe = recipe_from_mapping({"detector": {"pixels": 16}})
    with pytest.raises(ConfigError, match="bright-field disc"):
        derive_sampling(recipe, 11.7)


def test_unknown_shipped_recipe_lists_the_choices():
    with pytest.raises(ConfigError, match="quickstart"):
        load_recipe("nonexistent")


def test_hash_follows_recipe_and_abtem_version():
    base = recipe_from_mapping({})
    assert recipe_hash(base, "1.0.11") == recipe_hash(recipe_from_mapping({}), "1.0.11")
    assert recipe_hash(base, "1.0.11") != recipe_hash(
        recipe_from_mapping({"noise_seed": 1}), "1.0.11"
    )
    assert recipe_hash(base, "1.0.11") != recipe_hash(base, "1.0.12")
