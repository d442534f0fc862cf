"""The scale benchmark's pieces: its synthetic data carry the stated dose, and its
growth exponents are those of a known power law."""

import numpy as np
import pandas as pd
import pytest

from ptyopt.benchmarks import scale


def test_synthetic_patterns_hold_the_dose_per_scan_step():
    measurements, megabytes = scale.synthetic_measurements(side=5, pixels=48, slices=3)
    counts = np.asarray(measurements.patterns).sum(axis=(-2, -1))
    expected = scale.DOSE_E_PER_A2 * scale.STEP_A**2  # electrons per position
    # the probe's whole power falls on the detector (its aperture lies well inside)
    assert counts.mean() == pytest.approx(expected, rel=0.01)
    assert counts.std() > 0  # Poisson noise and a scattering object
    assert measurements.patterns.shape == (25, 48, 48)
    assert megabytes == pytest.approx(25 * 48 * 48 * 4 / 2**20)
    assert measurements.microscope.slices == 3
    # in the model's layout, zero frequency at [0, 0]: the bright-field disc (21.4 mrad,
    # 11 px) there, the corners of the centred pattern (45 mrad) dark
    bright, dark = counts.mean() / 48**2, np.asarray(measurements.patterns)[:, 24, 24].mean()
    assert np.asarray(measurements.patterns)[:, 0, 0].mean() > 2 * bright > 100 * dark


def test_growth_exponents_recover_a_power_law():
    base = {"positions": 1024, "pixels": 128, "slices": 6, "modes": 1}
    rows = [{"engine": "lsqml", "device": "cpu", "set": "scaling", **base, "s_per_iter": 2.0}]
    for positions in (256, 4096):  # time ∝ positions
        rows.append({**rows[0], "positions": positions, "s_per_iter": 2.0 * positions / 1024})
    for pixels in (64, 256):  # time ∝ pixels^2.2
        rows.append({**rows[0], "pixels": pixels, "s_per_iter": 2.0 * (pixels / 128) ** 2.2})
    lines = scale.growth_lines(pd.DataFrame(rows))
    assert lines[-1] == "| lsqml | cpu | 1.00 | 2.20 | – | – |"


def test_stream_bandwidth_is_bytes_per_second_of_a_memory_pass():
    # a 2-core machine's memory streams at some GB/s, no accelerator at tens of TB/s:
    # bits, a reciprocal or a missing factor 2^20 would land far outside
    bandwidth = scale.stream_bandwidth(megabytes=64, repeats=3)
    assert 5e8 < bandwidth < 5e13


def test_device_peak_memory_is_empty_on_the_cpu():
    import jax

    from ptyopt.benchmarks.engines import peak_device_MB

    if jax.default_backend() == "cpu":  # RSS holds the CPU's memory
        assert np.isnan(peak_device_MB())
    else:
        assert peak_device_MB() >= 0


def test_compile_seconds_counts_compilation_not_execution():
    import jax
    import jax.numpy as jnp

    from ptyopt.benchmarks.engines import compile_seconds

    x = jnp.ones((64, 64))

    @jax.jit
    def fresh(a):  # a new function: traced, lowered and compiled in the block
        return jnp.fft.fft2(a * 3.0).real.sum()

    cache_was_on = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)  # a cache hit skips compiling
    try:
        with compile_seconds() as compiling:
            fresh(x).block_until_ready()
    finally:
        jax.config.update("jax_enable_compilation_cache", cache_was_on)
    assert len(compiling) >= 3 and sum(compiling) > 0  # trace, lower and compile events
    events = len(compiling)
    with compile_seconds() as compiling_again:
        for _ in range(5):
            fresh(x).block_until_ready()  # cached: runs without compiling
    assert compiling_again == []
    jax.jit(lambda a: a - 1.0)(x).block_until_ready()  # compiles outside any block
    assert len(compiling) == events and compiling_again == []  # listeners removed on exit
