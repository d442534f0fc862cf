"""plan.precision: ``double`` computes in float64/complex128 throughout without the user
turning on JAX's float64, ``single`` stays float32/complex64 even after it, a bad value
is refused naming the key, and a precision change recompiles where a hyperparameter
change does not.

On a Si [110] cell of 4×6 unit cells (non-square), a 3×3 jittered scan, 2 slices and a
detector binned by 2 (the pattern centre a quarter pixel off the grid, so the detector
ramp is not 1)."""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_recipe

from ptyopt import model
from ptyopt.data.simulate import simulate_dataset
from ptyopt.engines import epie, gradient, lsqml
from ptyopt.engines.common import run_plan
from ptyopt.errors import ConfigError
from ptyopt.initial import ReconState, initial_state, measurements_from, with_plan
from ptyopt.plan import parse_plan
from ptyopt.precision import DOUBLE, SINGLE
from ptyopt.reconstruction import Reconstruction
from ptyopt.reconstruction.file import read_reconstruction, write_reconstruction
from ptyopt.registration import tile_periodic


@pytest.fixture(scope="module", autouse=True)
def restore_x64():
    """A double plan turns JAX's float64 on for the process; the tests after this
    module get back the setting they had."""
    before = jax.config.jax_enable_x64
    yield
    jax.config.update("jax_enable_x64", before)


@pytest.fixture(scope="module")
def binned_dataset():
    """Si [110], 4×6 cells, 3×3 jittered positions, 32 px binned by 2, 2 slices,
    noise-free (a few seconds to simulate)."""
    recipe = tiny_recipe(
        structure={"name": "Si_110", "lateral_repeats": [4, 6], "thickness_A": 7.7},
        detector={"pixels": 32, "bin": 2},
    )
    return simulate_dataset(recipe, progress=False)


def plan(precision: str | None, kind: str = "epie", **engine):
    values = {"engines": [{"kind": kind, "iterations": 1, "group_size": 4, **engine}]}
    return parse_plan(values if precision is None else {"precision": precision, **values})


@pytest.mark.parametrize("value", ["half", "float64", 64, None])
def test_a_bad_precision_is_refused_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"^plan\.precision: ") as error:
        parse_plan({"precision": value, "engines": [{"kind": "epie"}]})
    assert str(error.value).endswith("choose one of ['single', 'double']")


def test_single_is_the_default():
    assert plan(None).precision == "single" and plan(None).dtypes == SINGLE


def truth_and_reference(measurements, state: ReconState, dataset):
    """The true object exp(iσV) (S, H, W) on the object grid, and its noise-free
    patterns (P, N, N) in the model's layout from an independent NumPy float64
    multislice of ``state``'s probe, positions and propagators (taken in double) with
    the detector ramp of the dataset's pattern centre."""
    geometry = measurements.geometry
    truth = dataset.ground_truth
    assert len(truth.potential_V_A) == state.object.shape[0]
    potential = tile_periodic(
        truth.potential_V_A.astype(np.float64), geometry.shape, tuple(geometry.origin_px)
    )
    obj = np.exp(1j * truth.sigma_per_V_A * potential)
    probe = np.asarray(state.probe, np.complex128)
    propagators = np.asarray(state.propagators(measurements), np.complex128)
    n = probe.shape[-1]
    offset = n // 2 - np.asarray(dataset.pattern_centre_px)  # (y, x) [detector pixels]
    pixels = np.arange(n) / n
    ramp = np.exp(-2j * np.pi * (offset[0] * pixels[:, None] + offset[1] * pixels[None, :]))
    f = np.fft.fftfreq(n)
    patterns = []
    for position in np.asarray(state.positions_px, np.float64):
        nearest = np.round(position)
        r = position - nearest
        y0, x0 = (nearest - n // 2).astype(int)
        shift = np.exp(-2j * np.pi * (r[0] * f[:, None] + r[1] * f[None, :]))
        wave = np.fft.ifft2(np.fft.fft2(probe) * shift)
        for s in range(obj.shape[0]):
            wave = wave * obj[s, y0 : y0 + n, x0 : x0 + n]
            if s < obj.shape[0] - 1:
                wave = np.fft.ifft2(np.fft.fft2(wave) * propagators[s])
        far = np.fft.fft2(wave * ramp, norm="ortho")
        patterns.append(np.sum(np.abs(far) ** 2, axis=0))
    return obj, np.stack(patterns)


def test_the_true_object_fits_exact_data_to_the_precisions_rounding(binned_dataset):
    """Noise-free patterns of a known object (an independent float64 NumPy model): the
    data error of that object is its precision's rounding, measured 3.8e-7 relative in
    single and 5.6e-16 in double; the two forward models agree to float32 rounding. The
    double probe, propagators, ramp and positions hold more than float32's digits."""
    nominal = measurements_from(binned_dataset)
    double = with_plan(nominal, plan("double"))
    start = initial_state(double, double.microscope.slices, 1, 0)
    assert start.object.dtype == jnp.complex128 and start.probe.dtype == jnp.complex128
    assert start.positions_px.dtype == jnp.float64
    assert double.patterns.dtype == jnp.float64
    assert double.detector_ramp.dtype == jnp.complex128
    assert np.ptp(np.angle(np.asarray(double.detector_ramp))) > 1.0  # a real offset
    computed = {  # computed in double, not in single and cast
        "probe": start.probe,
        "propagators": start.propagators(double),
        "detector_ramp": double.detector_ramp,
        "positions_px": start.positions_px,
    }
    for name, values in computed.items():
        values = np.asarray(values)
        single = values.astype(np.complex64 if np.iscomplexobj(values) else np.float32)
        assert np.any(single != values), f"{name} holds float32 values only"
    obj, reference = truth_and_reference(double, start, binned_dataset)
    errors, intensities = {}, {}
    for name in ("single", "double"):
        measurements = with_plan(nominal, plan(name))
        measurements = dataclasses.replace(
            measurements, patterns=jnp.asarray(reference, measurements.precision.real)
        )
        state = dataclasses.replace(
            start.in_precision(measurements.precision),
            object=jnp.asarray(obj, measurements.precision.complex),
        )
        intensity = jax.jit(model.far_field_intensities)(
            state.object,
            state.probe,
            state.positions_px,
            state.propagators(measurements),
            measurements.detector_ramp,
        )
        assert intensity.dtype == measurements.precision.real
        intensities[name] = np.asarray(intensity, np.float64)
        errors[name] = np.linalg.norm(intensities[name] - np.asarray(measurements.patterns))
        errors[name] /= np.linalg.norm(reference)
    assert 1e-8 < errors["single"] < 1e-5
    assert errors["double"] < 1e-13
    agreement = np.linalg.norm(intensities["single"] - intensities["double"])
    assert agreement / np.linalg.norm(intensities["double"]) < 1e-5


ITERATIONS = {
    "epie": epie,
    "lsqml": lsqml,
    "gradient": gradient,
}


class Traced(Exception):
    """Raised after tracing an engine's iteration, so that nothing compiles."""


def traced_iteration(monkeypatch, measurements, plan_, kind: str) -> str:
    """The jaxpr (text) of ``kind``'s compiled iteration as ``run_plan`` calls it."""
    module = ITERATIONS[kind]
    name = f"{kind}_iteration"
    compiled = getattr(module, name)
    seen = {}

    def trace(*args, **kwargs):
        seen["jaxpr"] = str(compiled.trace(*args, **kwargs).jaxpr)
        raise Traced

    monkeypatch.setattr(module, name, trace)
    with pytest.raises(Traced):
        run_plan(plan_, measurements)
    monkeypatch.setattr(module, name, compiled)
    return seen["jaxpr"]


ENGINES = [
    ("epie", {}),
    ("lsqml", {}),
    ("gradient", {}),
    ("gradient", {"object_solver": {"name": "polyak_sgd"}, "probe_solver": {"name": "sgd"}}),
]


@pytest.mark.parametrize(("kind", "solvers"), ENGINES)
def test_every_array_of_an_iteration_has_the_plans_precision(
    monkeypatch, binned_dataset, kind, solvers
):
    """Traced (not compiled) with JAX's float64 on: a double plan's iteration holds no
    float32/complex64 value (state, patterns, propagators, ramp, hyperparameters,
    group weights, optimiser states), and a single plan's no float64/complex128 array
    (optax's bias corrections leave weak-typed float64 scalars, which take the arrays'
    dtype)."""
    DOUBLE.activate()
    nominal = measurements_from(binned_dataset)
    engine = {"position_correction": {"start": 0}, "probe_update_start": 0, **solvers}
    double = traced_iteration(monkeypatch, nominal, plan("double", kind, **engine), kind)
    assert re.findall(r"\b(?:f32|c64)\[", double) == []
    assert "c128[" in double
    single = traced_iteration(monkeypatch, nominal, plan("single", kind, **engine), kind)
    assert re.findall(r"\b(?:f64|c128)\[\d", single) == []
    assert "c64[" in single


def test_precision_changes_compile_once_each_and_hyperparameters_never(binned_dataset):
    """From a process without JAX's float64 (the measurements made then): single,
    double, single, double, single, each with other hyperparameters. The gradient
    iteration compiles three times: single before the double plan turns float64 on,
    double, and single after (JAX keys its compilations on the setting); hyperparameter
    changes never. The states have the plan's dtypes, single ones after double ones too."""
    jax.config.update("jax_enable_x64", False)
    gradient.gradient_iteration.clear_cache()
    measurements = measurements_from(binned_dataset)
    for trial, name in enumerate(["single", "double", "single", "double", "single"]):
        engine = {
            "object_solver": {"learning_rate": 0.01 * (trial + 1), "b1": 0.8 + 0.03 * trial},
            "noise": {"model": "amplitude", "epsilon": 0.1 * trial},
            "position_correction": {"start": 0, "step": 0.01 * (trial + 1)},
        }
        state = run_plan(plan(name, "gradient", **engine), measurements)
        precision = DOUBLE if name == "double" else SINGLE
        assert state.object.dtype == precision.complex
        assert state.probe.dtype == precision.complex
        assert state.positions_px.dtype == precision.real
        assert np.isfinite(np.asarray(state.object)).all()
    assert measurements.patterns.dtype == jnp.float32  # made before float64 was on
    assert gradient.gradient_iteration._cache_size() == 3


def test_a_double_reconstruction_file_holds_complex128(binned_dataset, tmp_path):
    """``reconstruction.h5`` keeps the state as computed, and its plan names the
    precision; a single one stays complex64."""
    for name, dtype in (("double", np.complex128), ("single", np.complex64)):
        values = {"precision": name, "engines": [{"kind": "gradient", "iterations": 1}]}
        values["engines"][0]["group_size"] = 4
        reconstruction = Reconstruction(binned_dataset, values)
        reconstruction.run()
        path = write_reconstruction(tmp_path / f"{name}.h5", reconstruction, tmp_path / "d.h5")
        written = read_reconstruction(path)
        assert written.object.dtype == dtype and written.probe.dtype == dtype
        assert written.plan["precision"] == name
