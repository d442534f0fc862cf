"""The profile benchmark's work count: FFTs counted from traced jaxprs equal the counts
derived by hand from the multislice algebra (scan bodies times their length, the
cheaper branch of a cond)."""

import jax
import jax.numpy as jnp
import pytest

from ptyopt import model
from ptyopt.benchmarks import profile, scale
from ptyopt.engines import chunks


def test_forward_model_fft_count_is_the_multislice_count():
    groups, modes, slices, n = 5, 2, 3, 16
    obj = jnp.ones((slices, 40, 40), jnp.complex64)
    probe = jnp.ones((modes, n, n), jnp.complex64)
    positions = jnp.full((groups, 2), 20.0)
    propagators = jnp.ones((slices - 1, n, n), jnp.complex64)
    ramp = jnp.ones((n, n), jnp.complex64)
    jaxpr = jax.make_jaxpr(model.far_field_intensities)(obj, probe, positions, propagators, ramp)
    work = profile.count_work(jaxpr.jaxpr)
    # probe spectrum (M), shifted probes (G·M), S−1 propagations of 2 FFTs, far field
    expected = modes + groups * modes * (1 + 2 * (slices - 1) + 1)
    assert work.ffts == {(n, n): expected}
    assert work.unknown_loops == 0
    assert work.other_bytes > 0


def test_cond_counts_its_cheaper_branch_and_scan_its_length():
    def f(x, flag):
        def body(carry, _):
            carry = jax.lax.cond(
                flag > 0, lambda y: jnp.fft.ifft2(jnp.fft.fft2(y)), lambda y: y * 2, carry
            )
            return jnp.fft.fft2(carry), None

        return jax.lax.scan(body, x, None, length=7)[0]

    work = profile.count_work(jax.make_jaxpr(f)(jnp.ones((3, 8, 8), jnp.complex64), 1).jaxpr)
    assert work.ffts == {(8, 8): 7 * 3}


@pytest.mark.parametrize("slices", [1, 3])
@pytest.mark.parametrize("chunk_count", [1, 2])
def test_epie_iteration_fft_count(slices, chunk_count, monkeypatch):
    # ePIE per position and mode: the shifted probe (1), S−1 forward propagations (2
    # each), the far field (1), its inverse (1), S−1 backward propagations (2 each), the
    # probe update's spectrum (1): 4S; per chunk of a group's positions
    # (ptyopt.engines.chunks) and mode, the probe's spectrum and the inverse FFT of the
    # chunk's summed, shifted-back probe update (2).
    monkeypatch.setattr(chunks, "chunk_count", lambda positions: chunk_count)
    jax.clear_caches()  # the chunk count is fixed when a step is traced
    measurements, _ = scale.synthetic_measurements(side=4, pixels=32, slices=slices)
    work = profile.iteration_work(measurements, "epie", group=8, slices=slices, modes=1)
    assert work.ffts == {(32, 32): 16 * 4 * slices + 2 * 2 * chunk_count}


def test_every_row_takes_the_fastest_fft_time_of_its_window_and_batch():
    """Two engines on the same case share the faster of their FFT measurements; another
    window keeps its own; the derived columns follow from it."""

    def row(engine, pixels, xla, scipy, s_per_iter=2.0):
        return {
            "engine": engine,
            "pixels": pixels,
            "group_size": 8,
            "modes": 2,
            "n_window_ffts": 100.0,
            "xla_per_fft": xla,
            "scipy_per_fft": scipy,
            "s_per_iter": s_per_iter,
        }

    rows = profile.with_fft_times(
        [row("epie", 64, 0.010, 0.004), row("lsqml", 64, 0.006, 0.005), row("epie", 32, 0.5, 0.1)]
    )
    assert [r["fft_s"] for r in rows] == pytest.approx([0.6, 0.6, 50.0])
    assert [r["scipy_fft_s"] for r in rows] == pytest.approx([0.4, 0.4, 10.0])
    assert rows[0]["fft_fraction"] == pytest.approx(0.3)
    assert rows[1]["other_s"] == pytest.approx(1.4)
