"""The microscope's unknowns as plan settings, and recipes whose files record nominal
values that differ from the truth.

Independent truths: abTEM's probe for the plan's optics (abTEM's own aberration names),
abTEM's simulated patterns (our model on the ground truth reproduces them only with the
true optics and the true positions, so the sign conventions of defocus and scan rotation
are abTEM's), and the recipe's true scan positions.
"""

from __future__ import annotations

import abtem
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_recipe

from ptyopt import model, physics
from ptyopt.data.recipe import recipe_from_mapping, recipe_hash, specimen_of
from ptyopt.data.simulate import scan_positions_A, simulate_dataset
from ptyopt.errors import ConfigError
from ptyopt.initial import initial_state, measurements_from, with_plan
from ptyopt.plan import parse_plan
from ptyopt.registration import tile_periodic
from ptyopt.scan import calibrate_scan

ENGINE = {"kind": "gradient", "iterations": 1, "group_size": 4}
# The tiny specimen (true: 20 Å defocus, Cs 0, 20 mrad) as a microscopist misreads it.
NOMINAL = {
    "defocus_A": 70.0,
    "Cs_A": 1.0e5,
    "semiangle_mrad": 22.0,
    "thickness_A": 10.0,
    "scan_rotation_deg": 10.0,
    "scan_step_scale": 1.1,
}
TRUE_PLAN = {
    "probe": {"defocus_A": 20.0, "Cs_A": 0.0, "semiangle_mrad": 20.0},
    "scan": {"rotation_deg": 10.0, "step_scale": 1.1},
}


def plan(**values):
    return parse_plan({"engines": [ENGINE], **values})


@pytest.fixture(scope="module")
def miscalibrated():
    """The tiny recipe with every nominal value off, and its dataset (about a second)."""
    recipe = tiny_recipe(nominal=NOMINAL)
    return recipe, simulate_dataset(recipe, progress=False)


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"probe": {"defocus_A": "far"}}, "plan.probe.defocus_A"),
        ({"probe": {"Cs_A": float("nan")}}, "plan.probe.Cs_A"),
        ({"probe": {"astigmatism_A": -5.0}}, "plan.probe.astigmatism_A"),
        ({"probe": {"astigmatism_angle_deg": float("inf")}}, "plan.probe.astigmatism_angle_deg"),
        ({"probe": {"semiangle_mrad": 0}}, "plan.probe.semiangle_mrad"),
        ({"probe": {"focus": 3}}, "plan.probe.focus"),
        ({"thickness_A": -1.0}, "plan.thickness_A"),
        ({"slice_thickness_A": 0.0}, "plan.slice_thickness_A"),
        ({"slices": 4, "slice_thickness_A": 2.0}, "plan.slice_thickness_A"),
        ({"scan": {"rotation_deg": None, "step_scale": 0.0}}, "plan.scan.step_scale"),
        ({"scan": {"rotation_deg": True}}, "plan.scan.rotation_deg"),
        ({"scan": {"margin_px": -1}}, "plan.scan.margin_px"),
    ],
)
def test_bad_microscope_settings_name_the_key(values, key):
    with pytest.raises(ConfigError, match=f"^{key.replace('.', '[.]')}"):
        plan(**values)


def test_scan_rotation_turns_x_towards_y_about_the_centroid():
    """(y, x) points: +90° takes +x onto +y and +y onto −x; the centroid stays; the
    inverse of (θ, s) is (−θ, 1/s)."""
    points = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, -1.0], [-1.0, 0.0]]) + [5.0, 7.0]
    turned = calibrate_scan(points, 90.0, 2.0)
    np.testing.assert_allclose(turned - [5.0, 7.0], [[2, 0], [0, -2], [-2, 0], [0, 2]], atol=1e-12)
    odd = np.random.default_rng(1).normal(size=(7, 2))
    np.testing.assert_allclose(calibrate_scan(odd, 13.0, 1.3).mean(axis=0), odd.mean(axis=0))
    np.testing.assert_allclose(calibrate_scan(calibrate_scan(odd, 13.0, 1.3), -13.0, 1 / 1.3), odd)


def test_the_file_records_the_nominal_values_and_the_matching_plan_recovers_the_truth(
    miscalibrated,
):
    recipe, dataset = miscalibrated
    assert dataset.optics.aberrations == {"C10": -70.0, "C30": 1.0e5}
    assert dataset.optics.semiangle_mrad == 22.0
    assert dataset.nominal_thickness_A == 10.0
    true_positions = scan_positions_A(recipe, specimen_of(recipe.structure).cell_edge_A)
    assert np.abs(dataset.positions_A - true_positions).max() > 0.1  # 10° of a 1.5 Å scan
    measurements = with_plan(measurements_from(dataset), plan(**TRUE_PLAN))
    geometry = measurements.geometry
    recovered = (geometry.positions_px - geometry.origin_px) * dataset.pixel_size_A
    np.testing.assert_allclose(recovered, true_positions, atol=1e-9)
    nominal = measurements_from(dataset).geometry
    np.testing.assert_allclose(
        (nominal.positions_px - nominal.origin_px) * dataset.pixel_size_A, dataset.positions_A
    )


def test_a_recipe_without_nominal_values_keeps_its_hash_apart_from_the_revision():
    """An empty ``nominal`` section is left out of the hash; any value enters it."""
    plain = recipe_from_mapping({})
    assert recipe_hash(plain, "1.0.11") == recipe_hash(
        recipe_from_mapping({"nominal": {"defocus_A": None}}), "1.0.11"
    )
    assert recipe_hash(plain, "1.0.11") != recipe_hash(
        recipe_from_mapping({"nominal": {"defocus_A": 10.0}}), "1.0.11"
    )


@pytest.mark.parametrize(
    ("nominal", "key"),
    [({"semiangle_mrad": 300}, "dataset.nominal.semiangle_mrad"), ({"tilt": 1}, "tilt")],
)
def test_bad_nominal_values_name_the_key(nominal, key):
    with pytest.raises(ConfigError, match=key):
        tiny_recipe(nominal=nominal)


def model_error(dataset, measurements) -> float:
    """Relative L2 of our model on the ground truth, as ``measurements`` assume the
    optics and the positions, against abTEM's patterns (float64)."""
    geometry, truth = measurements.geometry, dataset.ground_truth
    potential = tile_periodic(
        truth.potential_V_A.astype(np.float64), geometry.shape, tuple(geometry.origin_px)
    )
    n = dataset.detector_shape[0]
    probe = physics.probe_wave(
        (n, n),
        dataset.pixel_size_A,
        measurements.energy_eV,
        measurements.microscope.semiangle_mrad,
        measurements.microscope.aberrations,
        dtype=jnp.complex128,
    )
    props = model.slice_propagators(
        (n, n),
        dataset.pixel_size_A,
        measurements.energy_eV,
        [truth.slice_thickness_A] * len(truth.potential_V_A),
        dtype=jnp.complex128,
    )
    intensity = model.far_field_intensities(
        jnp.asarray(np.exp(1j * truth.sigma_per_V_A * potential)),
        probe[None],
        jnp.asarray(geometry.positions_px),
        props,
        jnp.ones((n, n), jnp.complex128),
    )
    predicted = np.fft.fftshift(np.asarray(intensity), axes=(-2, -1))
    measured = dataset.patterns.astype(np.float64)
    predicted *= measured.sum() / predicted.sum()
    return float(np.linalg.norm(predicted - measured) / np.linalg.norm(measured))


def test_only_the_true_optics_and_scan_reproduce_abtems_patterns(x64, miscalibrated):
    """On a file whose nominal values are all off, our model on the ground truth matches
    abTEM's patterns (1% relative L2; measured 0.2% on the calibrated tiny dataset) with
    the plan's true values, and is far off at the nominal ones, with the defocus of the
    other sign, or with the scan turned the other way."""
    _, dataset = miscalibrated
    nominal = measurements_from(dataset)
    errors = {
        name: model_error(dataset, with_plan(nominal, plan(**values)))
        for name, values in {
            "true": TRUE_PLAN,
            "nominal": {},
            "defocus sign": {**TRUE_PLAN, "probe": {**TRUE_PLAN["probe"], "defocus_A": -20.0}},
            "rotation sign": {**TRUE_PLAN, "scan": {"rotation_deg": -10.0, "step_scale": 1.1}},
            "no step scale": {**TRUE_PLAN, "scan": {"rotation_deg": 10.0}},
        }.items()
    }
    assert errors["true"] < 1e-2, errors
    for name in ("nominal", "defocus sign", "rotation sign", "no step scale"):
        assert errors[name] > 3 * errors["true"], errors


def test_the_initial_probe_is_abtems_probe_for_the_plans_optics(x64, small_dataset):
    """Defocus, Cs, two-fold astigmatism and its angle, semi-angle: the initial probe is
    abTEM's for the same values under abTEM's own names, to 1e-6."""
    optics = {
        "defocus_A": -35.0,
        "Cs_A": 3.0e4,
        "astigmatism_A": 25.0,
        "astigmatism_angle_deg": 35.0,
        "semiangle_mrad": 18.0,
    }
    measurements = with_plan(measurements_from(small_dataset), plan(probe=optics))
    probe = np.asarray(initial_state(measurements, 1, 1, seed=0).probe[0], np.complex128)
    n = probe.shape[-1]
    reference = abtem.Probe(
        energy=measurements.energy_eV,
        semiangle_cutoff=18.0,
        defocus=-35.0,
        Cs=3.0e4,
        astigmatism=25.0,
        astigmatism_angle=np.deg2rad(35.0),
        gpts=n,
        sampling=small_dataset.pixel_size_A,
    )
    expected = np.asarray(reference.build(lazy=False).array).T
    scale = np.vdot(expected, probe) / np.vdot(expected, expected)  # its power in counts
    assert np.linalg.norm(probe - scale * expected) / np.linalg.norm(probe) < 1e-5
    assert abs(np.angle(scale)) < 1e-6
    again = measurements.microscope.plan_settings()["probe"]
    assert again == pytest.approx(optics)


def test_thickness_and_slicing_come_from_the_plan_or_the_nominal_metadata(small_dataset):
    """small_dataset: one nominal slice of 7.8 Å (two cells of SrTiO3)."""
    nominal = measurements_from(small_dataset)
    assert (nominal.microscope.thickness_A, nominal.microscope.slices) == (7.81, 1)
    cases = {
        (): (7.81, 1),
        (("slices", 3),): (7.81, 3),
        (("thickness_A", 12.0), ("slices", 4)): (12.0, 4),
        (("thickness_A", 12.0), ("slice_thickness_A", 2.6)): (12.0, 5),
        (("slice_thickness_A", 100.0),): (7.81, 1),
    }
    for values, (thickness, slices) in cases.items():
        planned = with_plan(nominal, plan(**dict(values)))
        assert planned.microscope.thickness_A == pytest.approx(thickness)
        assert planned.microscope.slices == slices
        state = initial_state(planned, slices, 1, seed=0)
        assert state.slice_thicknesses_A == pytest.approx((thickness / slices,) * slices)


def test_a_calibrated_scan_off_the_object_grid_names_the_margin(small_dataset):
    """A 3.5 Å scan turned by 45° moves its corners ~1.3 Å (7 px) past a 2 px margin;
    the error says how much margin it needs, and with it the plan runs."""
    nominal = measurements_from(small_dataset)
    with pytest.raises(ConfigError, match=r"^plan\.scan: .*margin_px \(now 2\) to at least") as err:
        with_plan(nominal, plan(scan={"rotation_deg": 45.0}))
    needed = int(str(err.value).rsplit(" ", 1)[-1])
    assert needed > 2
    planned = with_plan(nominal, plan(scan={"rotation_deg": 45.0, "margin_px": needed}))
    assert planned.geometry.shape == tuple(s + 2 * (needed - 2) for s in nominal.geometry.shape)
