"""Analytic checks of the cost regularizers and the constraints, and of their parsing."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptyopt import physics
from ptyopt.constraints import CONSTRAINTS, apply_constraints, depth_blur_matrix, parse_constraints
from ptyopt.errors import ConfigError
from ptyopt.initial import Geometry, Measurements, Microscope, ReconState
from ptyopt.regularizers import REGULARIZERS, parse_regularizers

S, H, W, N = 3, 24, 32, 32


def object_with_phase(phase, amplitude=1.0):
    return jnp.asarray(amplitude * np.exp(1j * np.asarray(phase)), jnp.complex64)


def flat_probe():
    return jnp.full((1, N, N), 3.0 + 0j, jnp.complex64)


@functools.cache
def nominal_probe():
    """A 50 Å defocused probe, 20 mrad hard aperture, 0.2 Å pixels, 200 kV, 1e4 counts
    (made with NumPy: quicker than JAX op by op)."""
    lam = physics.wavelength_A(200e3)
    k2 = np.add.outer(np.fft.fftfreq(N, 0.2) ** 2, np.fft.fftfreq(N, 0.2) ** 2)
    spectrum = (lam * np.sqrt(k2) < 20e-3) * np.exp(-1j * np.pi * lam * 50.0 * k2)
    wave = np.fft.ifft2(spectrum)
    return jnp.asarray(wave / np.linalg.norm(wave) * 100, jnp.complex64)[None]


def measurements(shape=(40, 48), counts=2.0):
    """Synthetic measurements: 3×3 probe centres spanning rows 12–28 and columns
    12–36, flat patterns of ``counts`` per pixel, 200 kV, 20 mrad, 0.2 Å pixels."""
    positions = np.array([[y, x] for y in (12.0, 20.0, 28.0) for x in (12.0, 24.0, 36.0)])
    geometry = Geometry(positions, np.zeros(2), shape, (N, N))
    patterns = jnp.full((len(positions), N, N), counts, jnp.float32)
    microscope = Microscope(semiangle_mrad=20.0, aberrations={}, thickness_A=10.0, slices=2)
    return Measurements(
        patterns,
        jnp.ones((N, N), jnp.complex64),
        0.2,
        200e3,
        geometry,
        microscope,
        geometry,
        microscope,
    )


def state_of(obj=None, probe=None, shape=(40, 48)):
    obj = jnp.ones((2, *shape), jnp.complex64) if obj is None else obj
    probe = nominal_probe() if probe is None else probe
    return ReconState(obj, probe, jnp.zeros((9, 2), jnp.float32), (5.0,) * obj.shape[0])


def apply(name, state, meas=None, **params):
    spec = CONSTRAINTS[name]
    return spec.apply(state, meas or measurements(), {**spec.defaults, **params})


# ----------------------------------------------------------------------- regularizers

OBJECT_COSTS = [name for name in REGULARIZERS if not name.startswith("probe")]
PROBE_COSTS = [name for name in REGULARIZERS if name.startswith("probe")]


@functools.cache
def _jitted(name):
    return jax.jit(REGULARIZERS[name])


def cost(name, obj, probe=None):
    """The cost ``name`` (jitted: the engine jits it too) as a float."""
    return float(_jitted(name)(obj, nominal_probe() if probe is None else probe))


@jax.jit
def all_gradients(obj, probe):
    return {name: jax.grad(fn, argnums=(0, 1))(obj, probe) for name, fn in REGULARIZERS.items()}


def ones():
    return jnp.ones((S, H, W), jnp.complex64)


def perturbed_object():
    rng = np.random.default_rng(0)
    return jnp.asarray(
        1 + 0.1 * (rng.normal(size=(S, H, W)) + 1j * rng.normal(size=(S, H, W))), jnp.complex64
    )


def test_registry_is_complete():
    assert set(REGULARIZERS) == {
        "object_l1", "object_l2", "object_phase_l1", "object_power_spectrum_l1",
        "object_tikhonov", "object_tv", "layer_tikhonov", "layer_tv",
        "probe_phase_tikhonov", "probe_recip_tikhonov", "probe_recip_tv",
    }  # fmt: skip


@pytest.mark.parametrize("name", OBJECT_COSTS)
def test_object_costs_vanish_at_vacuum_and_grow_with_structure(name):
    assert cost(name, ones()) == pytest.approx(0.0, abs=1e-9)
    assert cost(name, perturbed_object()) > 1e-3


@pytest.mark.parametrize("name", PROBE_COSTS)
def test_probe_costs_vanish_for_a_flat_probe_and_are_dose_independent(name):
    # flat in real space (phase) or in reciprocal space (a delta in real space)
    flat = (
        flat_probe()
        if name == "probe_phase_tikhonov"
        else jnp.zeros((1, N, N), jnp.complex64).at[:, 0, 0].set(5.0)
    )
    assert cost(name, ones(), flat) == pytest.approx(0.0, abs=1e-9)
    value = cost(name, ones())
    assert value > 1e-3
    assert cost(name, ones(), nominal_probe() * 1e3) == pytest.approx(value, rel=1e-4)


def test_costs_have_finite_gradients_at_a_uniform_object():
    delta = jnp.zeros((1, N, N), jnp.complex64).at[:, 0, 0].set(5.0)
    at_minimum = all_gradients(ones(), flat_probe())
    at_minimum.update(
        {
            name: all_gradients(ones(), delta)[name]
            for name in ("probe_recip_tikhonov", "probe_recip_tv")
        }
    )
    for name, (g_obj, g_probe) in at_minimum.items():
        # vacuum and flat probes are minima: the gradient is finite and 0
        assert float(jnp.max(jnp.abs(g_obj))) == 0.0, name
        assert float(jnp.max(jnp.abs(g_probe))) < 1e-6, name
    dark = nominal_probe().at[:, :, : N // 2].set(0)  # exact zeros in the probe
    for name, (g_obj, g_probe) in all_gradients(ones(), dark).items():
        assert bool(jnp.all(jnp.isfinite(g_obj))) and bool(jnp.all(jnp.isfinite(g_probe))), name
    for name, (g_obj, g_probe) in all_gradients(perturbed_object(), nominal_probe()).items():
        assert bool(jnp.all(jnp.isfinite(g_obj))) and bool(jnp.all(jnp.isfinite(g_probe))), name
        assert float(jnp.max(jnp.abs(g_obj if name in OBJECT_COSTS else g_probe))) > 0, name


def test_l1_l2_and_phase_scales():
    bump = ones().at[:, :6, :].set(1 + 0.3j)  # a quarter of the pixels differ by 0.3
    assert cost("object_l1", bump) == pytest.approx(0.25 * 0.3, rel=1e-3)
    assert cost("object_l2", bump) == pytest.approx(0.25 * 0.09, rel=1e-5)
    assert cost("object_phase_l1", object_with_phase(np.full((S, H, W), -0.4))) == pytest.approx(
        0.4, rel=1e-3
    )


def test_power_spectrum_l1_of_a_plane_wave():
    y, x = np.mgrid[:H, :W]
    delta = 0.2 * np.exp(2j * np.pi * (3 * y / H + 5 * x / W))
    obj = jnp.asarray(np.broadcast_to(1 + delta, (S, H, W)), jnp.complex64)
    expected = 0.2 / np.sqrt(H * W)  # one coefficient of 0.2·sqrt(HW) per slice, mean over HW
    assert cost("object_power_spectrum_l1", obj) == pytest.approx(expected, rel=1e-3)


def test_tikhonov_of_a_phase_ramp_is_analytic():
    a = 0.3
    along_x = object_with_phase(np.broadcast_to(a * np.arange(W), (S, H, W)))
    along_y = object_with_phase(np.broadcast_to(a * np.arange(H)[:, None], (S, H, W)))
    assert cost("object_tikhonov", along_x) == pytest.approx(
        4 * np.sin(a / 2) ** 2 * (W - 1) / W, rel=1e-4
    )
    assert cost("object_tikhonov", along_y) == pytest.approx(
        4 * np.sin(a / 2) ** 2 * (H - 1) / H, rel=1e-4
    )


def test_tv_of_a_step_is_height_times_edge_over_pixels():
    h = 0.5
    straight = ones().at[:, :, W // 2 :].set(1 + h)  # an edge of length H in each slice
    assert cost("object_tv", straight) == pytest.approx(h * H * S / (S * H * W), rel=1e-3)
    # isotropic: the pixels (y, W − 1 − y) on a diagonal staircase step by h in both
    # directions and cost h·√2 (not 2h), except the two ends cut by the boundary (h)
    diagonal = jnp.asarray(
        np.where(np.add.outer(np.arange(H), np.arange(W)) >= W, 1 + h, 1.0)[None].repeat(S, 0),
        jnp.complex64,
    )
    assert cost("object_tv", diagonal) == pytest.approx(
        ((H - 2) * np.sqrt(2) + 2) * h / (H * W), rel=1e-3
    )


def test_layer_costs_scale_with_the_step_between_slices():
    c = 0.2j
    obj = ones().at[1:].add(c)  # one step of c between slices 0 and 1
    assert cost("layer_tikhonov", obj) == pytest.approx(abs(c) ** 2 / S, rel=1e-4)
    assert cost("layer_tv", obj) == pytest.approx(abs(c) / S, rel=1e-3)
    single = perturbed_object()[:1]
    assert cost("layer_tikhonov", single) == 0.0
    assert cost("layer_tv", single) == 0.0


def test_probe_phase_tikhonov_of_a_phase_ramp_under_any_amplitude():
    a, b = 0.25, -0.1
    y, x = np.mgrid[:N, :N] - N / 2
    amplitude = np.exp(-(x**2 + y**2) / (2 * 6.0**2))
    probe = jnp.asarray((amplitude * np.exp(1j * (a * x + b * y)))[None] * 50, jnp.complex64)
    assert cost("probe_phase_tikhonov", ones(), probe) == pytest.approx(a**2 + b**2, rel=1e-4)
    assert cost("probe_phase_tikhonov", ones()) > 0.01  # a defocus (quadratic phase) costs too


def test_reciprocal_probe_costs_of_a_shifted_delta():
    shift = 1.5  # pixels: Ψ(k) ∝ exp(−2πi·shift·k/N), flat amplitude
    k = np.fft.fftfreq(N) * N
    spectrum = np.broadcast_to(np.exp(-2j * np.pi * shift * k / N), (N, N))
    probe = jnp.asarray(np.fft.ifft2(spectrum, norm="ortho")[None] * 7, jnp.complex64)
    step = 2 * np.sin(np.pi * shift / N)  # |Ψ(k+1) − Ψ(k)|, stopping at ±Nyquist
    assert cost("probe_recip_tikhonov", ones(), probe) == pytest.approx(
        step**2 * (N - 1) / N, rel=1e-3
    )
    assert cost("probe_recip_tv", ones(), probe) == pytest.approx(step * (N - 1) / N, rel=1e-3)


# ------------------------------------------------------------------------ constraints


def test_constraint_registry_is_complete():
    assert set(CONSTRAINTS) >= {
        "amplitude_clamp", "probe_support", "layer_blur", "object_low_pass", "phase_ramp_removal",
        "orthogonalize_probe_modes", "fixed_probe_intensity",
    }  # fmt: skip


def test_amplitude_clamp_bounds_amplitude_and_keeps_phase():
    rng = np.random.default_rng(1)
    amplitude = rng.uniform(0.2, 1.6, size=(2, 40, 48))
    phase = rng.uniform(-3, 3, size=(2, 40, 48))
    state = state_of(object_with_phase(phase, amplitude))
    out = apply("amplitude_clamp", state, min=0.5, max=1.0).object
    np.testing.assert_allclose(np.abs(out), np.clip(amplitude, 0.5, 1.0), rtol=1e-5)
    np.testing.assert_allclose(np.angle(out * np.exp(-1j * phase)), 0, atol=1e-5)
    assert out.dtype == jnp.complex64


def test_probe_support_zeros_the_spectrum_outside_the_aperture():
    rng = np.random.default_rng(2)
    probe = jnp.asarray(rng.normal(size=(2, N, N)) + 1j * rng.normal(size=(2, N, N)), jnp.complex64)
    meas = measurements()
    out = apply("probe_support", state_of(probe=probe), meas, scale=1.0).probe
    lam = physics.wavelength_A(meas.energy_eV)
    k = np.fft.fftfreq(N, meas.pixel_size_A)
    alpha_mrad = lam * np.sqrt(np.add.outer(k**2, k**2)) * 1e3
    pitch = lam / (N * meas.pixel_size_A) * 1e3
    before, after = np.fft.fft2(np.asarray(probe)), np.fft.fft2(np.asarray(out))
    outside = alpha_mrad > meas.semiangle_mrad + 1.5 * pitch + 1e-3
    inside = alpha_mrad < meas.semiangle_mrad + 0.5 * pitch - 1e-3
    assert outside.sum() > 100 and inside.sum() > 20
    assert np.abs(after[:, outside]).max() < 1e-4 * np.abs(before).max()
    np.testing.assert_allclose(after[:, inside], before[:, inside], rtol=1e-4, atol=1e-4)
    # the nominal probe (its soft aperture included) is left as it is
    nominal = nominal_probe()
    np.testing.assert_allclose(
        apply("probe_support", state_of(probe=nominal), meas).probe,
        nominal,
        atol=1e-4 * float(jnp.abs(nominal).max()),
    )


def test_depth_blur_matrix_is_symmetric_and_doubly_stochastic():
    for n, sigma in ((7, 1.0), (3, 2.5), (1, 1.0)):
        matrix = depth_blur_matrix(n, sigma)
        np.testing.assert_allclose(matrix, matrix.T, atol=1e-12)
        np.testing.assert_allclose(matrix.sum(axis=0), 1, atol=1e-12)
        np.testing.assert_allclose(matrix.sum(axis=1), 1, atol=1e-12)


def test_layer_blur_spreads_a_bright_slice_without_wrapping_and_conserves_the_sum():
    n = 7
    log_object = np.zeros((n, 8, 8), complex)
    log_object[0] = -0.2 + 1.0j  # bright first slice: phase 1 rad, some absorption
    state = state_of(jnp.asarray(np.exp(log_object), jnp.complex64), shape=(8, 8))
    out = np.asarray(apply("layer_blur", state, sigma=1.0).object)
    phase, log_amplitude = np.angle(out), np.log(np.abs(out))
    assert phase[1].min() > 0.1 and phase[0].max() < 1.0  # spread to the neighbour
    assert (
        np.abs(phase[-1]).max() < 1e-6 and np.abs(phase[-2]).max() < 1e-3
    )  # nothing wrapped to the far end
    np.testing.assert_allclose(phase.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(log_amplitude.sum(axis=0), -0.2, atol=1e-5)
    uniform = state_of(object_with_phase(np.full((n, 8, 8), 0.3)), shape=(8, 8))
    np.testing.assert_allclose(np.angle(apply("layer_blur", uniform).object), 0.3, atol=1e-6)


def test_object_low_pass_removes_high_and_keeps_low_frequencies():
    y, x = np.mgrid[:40, :48]
    low = 0.3 * np.cos(2 * np.pi * 2 * x / 48)  # 2/48 cycles/px
    high = 0.2 * np.cos(2 * np.pi * 0.45 * y)  # 0.9 of Nyquist
    state = state_of(
        object_with_phase(
            np.broadcast_to(low + high, (2, 40, 48)),
            amplitude=np.exp(-0.1 * (1 + np.cos(2 * np.pi * 3 * y / 40))),
        )
    )
    out = np.asarray(apply("object_low_pass", state).object)
    np.testing.assert_allclose(np.angle(out), np.broadcast_to(low, (2, 40, 48)), atol=1e-5)
    np.testing.assert_allclose(
        np.log(np.abs(out)),
        np.broadcast_to(-0.1 * (1 + np.cos(2 * np.pi * 3 * y / 40)), (2, 40, 48)),
        atol=1e-5,
    )


def test_phase_ramp_removal_removes_an_imposed_ramp():
    meas = measurements()
    y, x = np.mgrid[:40, :48]
    ramp = 0.37 * y - 0.52 * x + 2.0  # wraps many times over the object
    split = np.stack([0.6 * ramp, 0.4 * ramp])
    out = apply("phase_ramp_removal", state_of(object_with_phase(split)), meas).object
    assert out.dtype == jnp.complex64
    np.testing.assert_allclose(np.angle(np.prod(np.asarray(out), axis=0)), 0, atol=1e-5)
    # with structure: removing the ramp gives what the structure alone gives
    rng = np.random.default_rng(3)
    structure = rng.uniform(0, 0.5, (2, 40, 48))
    plain = apply("phase_ramp_removal", state_of(object_with_phase(structure)), meas).object
    tilted = apply(
        "phase_ramp_removal", state_of(object_with_phase(structure + split)), meas
    ).object
    np.testing.assert_allclose(
        np.angle(np.prod(np.asarray(tilted) / np.asarray(plain), axis=0)), 0, atol=1e-5
    )
    # the ramp is the least-squares one over the field of view (the constant is a circular mean)
    summed = structure.sum(axis=0) + 0.1 * y + 0.05 * x
    out = apply(
        "phase_ramp_removal", state_of(object_with_phase(np.stack([summed / 2, summed / 2]))), meas
    ).object
    fov = meas.geometry.field_of_view()
    design = np.stack([np.ones(y[fov].size), y[fov].ravel(), x[fov].ravel()], axis=1)
    _, slope_y, slope_x = np.linalg.lstsq(design, summed[fov].ravel(), rcond=None)[0]
    difference = np.angle(np.prod(np.asarray(out), axis=0)) - (summed - slope_y * y - slope_x * x)
    assert np.ptp(difference) < 1e-4


def test_orthogonalisation_gives_orthogonal_modes_and_keeps_the_intensity():
    rng = np.random.default_rng(4)
    base = rng.normal(size=(N, N)) + 1j * rng.normal(size=(N, N))
    probe = jnp.asarray(np.stack([base, 0.5 * base + 0.3 * rng.normal(size=(N, N))]), jnp.complex64)
    out = np.asarray(apply("orthogonalize_probe_modes", state_of(probe=probe)).probe)
    overlap = np.vdot(out[0], out[1])
    assert abs(overlap) < 1e-4 * np.linalg.norm(out[0]) * np.linalg.norm(out[1])
    np.testing.assert_allclose(
        (np.abs(out) ** 2).sum(axis=0),
        (np.abs(np.asarray(probe)) ** 2).sum(axis=0),
        rtol=1e-4,
        atol=1e-4,
    )
    assert np.sum(np.abs(out[0]) ** 2) >= np.sum(np.abs(out[1]) ** 2)


def test_fixed_probe_intensity_rescales_the_probe():
    meas = measurements(counts=2.0)
    probe = nominal_probe() * 3.7
    out = apply("fixed_probe_intensity", state_of(probe=probe), meas).probe
    assert float(jnp.sum(jnp.abs(out) ** 2)) == pytest.approx(2.0 * N * N, rel=1e-5)
    np.testing.assert_allclose(np.angle(out / probe), 0, atol=1e-5)
    out = apply("fixed_probe_intensity", state_of(probe=probe), meas, value=5.0).probe
    assert float(jnp.sum(jnp.abs(out) ** 2)) == pytest.approx(5.0, rel=1e-5)


def test_apply_constraints_follows_the_gates():
    parsed = parse_constraints(
        {"fixed_probe_intensity": {"value": 5.0, "start": 2, "every": 2}}, "constraints"
    )
    state = state_of()
    meas = measurements()
    before = float(jnp.sum(jnp.abs(state.probe) ** 2))
    powers = [
        float(jnp.sum(jnp.abs(apply_constraints(state, meas, parsed, i).probe) ** 2))
        for i in range(5)
    ]
    assert (
        powers[0] == pytest.approx(before)
        and powers[1] == pytest.approx(before)
        and powers[3] == pytest.approx(before)
    )
    assert powers[2] == pytest.approx(5.0, rel=1e-5) and powers[4] == pytest.approx(5.0, rel=1e-5)


def test_every_constraint_keeps_shapes_and_dtypes_with_defaults():
    rng = np.random.default_rng(5)
    state = state_of(
        object_with_phase(rng.uniform(-1, 1, (2, 40, 48)), rng.uniform(0.5, 1.5, (2, 40, 48)))
    )
    meas = measurements()
    for name in CONSTRAINTS:
        out = apply(name, state, meas)
        assert out.object.shape == state.object.shape and out.object.dtype == state.object.dtype, (
            name
        )
        assert out.probe.shape == state.probe.shape and out.probe.dtype == state.probe.dtype, name
        assert bool(jnp.all(jnp.isfinite(out.object))) and bool(jnp.all(jnp.isfinite(out.probe))), (
            name
        )


# ---------------------------------------------------------------------------- parsing


def test_parse_regularizers_accepts_weights_and_schedules():
    parsed = parse_regularizers(
        {
            "object_tv": {"weight": 0.5, "start": 2},
            "layer_tv": {"weight": {"kind": "cosine", "value": 1.0}},
        },
        "regularizers",
        10,
    )
    assert [r.name for r in parsed] == ["object_tv", "layer_tv"]
    assert parsed[0].weight_at(1) == 0.0 and parsed[0].weight_at(2) == 0.5
    assert parsed[1].weight_at(0) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"object_l3": {"weight": 1.0}}, "regularizers.object_l3"),
        ({"object_tv": {"weight": 1.0, "sigma": 2}}, "regularizers.object_tv: unknown parameter"),
        ({"object_tv": {}}, "regularizers.object_tv.weight"),
        ({"object_tv": {"weight": -1.0}}, "regularizers.object_tv.weight"),
        ({"object_tv": 0.1}, "regularizers.object_tv"),
        ({"object_tv": {"weight": 1.0, "start": -1}}, "regularizers.object_tv.start"),
        ({"object_tv": {"weight": 1.0, "start": 3, "stop": 3}}, "regularizers.object_tv.stop"),
        ({"object_tv": {"weight": 1.0, "every": 0}}, "regularizers.object_tv.every"),
        ({"object_tv": {"weight": 1.0, "every": 1.5}}, "regularizers.object_tv.every"),
    ],
)
def test_parse_regularizers_rejects_bad_settings(settings, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_regularizers(settings, "regularizers", 10)


def test_parse_constraints_fills_defaults():
    parsed = parse_constraints(
        {
            "layer_blur": {"sigma": 0.5, "every": 3},
            "orthogonalize_probe_modes": None,
            "fixed_probe_intensity": {},
        },
        "constraints",
    )
    assert parsed[0].params == {"sigma": 0.5} and parsed[0].gate.every == 3
    assert parsed[1].params == {} and parsed[2].params == {"value": None}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"object_blur": {}}, "constraints.object_blur"),
        ({"layer_blur": {"std": 1.0}}, "constraints.layer_blur: unknown parameter"),
        ({"layer_blur": {"sigma": 0.0}}, "constraints.layer_blur.sigma"),
        ({"layer_blur": {"sigma": "wide"}}, "constraints.layer_blur.sigma"),
        ({"amplitude_clamp": {"min": 1.2, "max": 1.0}}, "constraints.amplitude_clamp.max"),
        ({"object_low_pass": {"fraction": -0.5}}, "constraints.object_low_pass.fraction"),
        ({"probe_support": {"scale": None}}, "constraints.probe_support.scale"),
        ({"layer_blur": True}, "constraints.layer_blur"),
        ({"layer_blur": {"start": "1"}}, "constraints.layer_blur.start"),
        ({"layer_blur": {"stop": 0}}, "constraints.layer_blur.stop"),
        ({"layer_blur": {"every": 0}}, "constraints.layer_blur.every"),
    ],
)
def test_parse_constraints_rejects_bad_settings(settings, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_constraints(settings, "constraints")
