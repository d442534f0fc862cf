"""Positions per second of the multislice forward model, alone and with its gradient.

Run ``python -m ptyopt.benchmarks.forward`` (``--quick`` for a smoke run). For every
group size G ∈ {16, 64, 256}, slice count S ∈ {1, 10} and probe mode count M ∈ {1, 4}
it times, on N × N windows (complex64) of the bench dataset's optics (300 kV, 25 mrad,
50 Å defocus, 0.211 Å pixels, 4.16 Å slices):

(a) ``model.far_field_intensities``, jitted;
(b) ``jax.value_and_grad`` of the amplitude loss Σ(√(I + ε) − √(J + ε))² with respect
    to the object and the probe modes, jitted.

Method: each function is lowered and compiled ahead of time (``jit(f).lower(...)
.compile()``), which is reported as compile_s; the persistent compilation cache is off,
so this is a cold compile. The compiled function is then called once as a warm-up and
``repeats`` more times, each call ended by ``block_until_ready``; positions/s is
G / median seconds per call. Positions are G points drawn without replacement from the
bench 32 × 32 raster of 0.4 Å steps (sub-pixel, so every probe is Fourier-shifted),
the object is a random phase, J is random.

FFT throughput: one forward call does M FFTs of the probe modes, then per position and
mode an inverse FFT for the shift, 2 FFTs per slice boundary and one far-field FFT,
i.e. M + (2(S − 1) + 2)·M·G FFTs of N × N, each counted as 5·N²·log2(N²) flops. The
gradient is counted as 3× the forward FFTs (forward pass plus about two per FFT in the
backward pass), an estimate rather than a count.

Threads: XLA's CPU client runs one intra-op thread pool with one thread per schedulable
core (limit it with ``taskset``); there is no ``intra_op_parallelism_threads`` XLA
flag. ``--xla_cpu_multi_thread_eigen`` (default true, set explicitly below unless
XLA_FLAGS is already set) lets FFTs and Eigen ops use that pool; false runs each op on
one thread.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")

import argparse
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ptyopt import model, paths, physics
from ptyopt.benchmarks.report import regenerate_command, write_report
from ptyopt.noise import noise_model

AMPLITUDE = noise_model("amplitude")

ENERGY_EV = 300e3
SEMIANGLE_MRAD = 25.0
DEFOCUS_A = 50.0
PIXEL_A = 0.211
SLICE_A = 4.16
SCAN_SHAPE = (32, 32)
SCAN_STEP_A = 0.4
MARGIN_PX = 4
EPSILON = 1e-6
GROUPS = (16, 64, 256)
SLICES = (1, 10)
MODES = (1, 4)
DECIMALS = {
    "compile_fwd_s": 3,
    "fwd_pos_per_s": 0,
    "fwd_gflops": 1,
    "compile_grad_s": 3,
    "grad_pos_per_s": 0,
    "grad_gflops_est": 1,
}


def time_compiled(fn: Callable, args: Sequence[jax.Array], repeats: int) -> tuple[float, float]:
    """(compile seconds, median seconds per call) of ``jax.jit(fn)`` on ``args``: an
    ahead-of-time compile, one warm-up call, then ``repeats`` timed calls."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        seconds.append(time.perf_counter() - start)
    return compile_s, statistics.median(seconds)


def amplitude_loss(
    object_slices: jax.Array,
    probe_modes: jax.Array,
    positions_px: jax.Array,
    propagators: jax.Array,
    measured: jax.Array,
) -> jax.Array:
    """The amplitude noise model's loss, summed over the group."""
    intensities = model.far_field_intensities(object_slices, probe_modes, positions_px, propagators)
    return jnp.sum(AMPLITUDE.loss(intensities, measured, jnp.float32(EPSILON)))


loss_and_gradients = jax.value_and_grad(amplitude_loss, argnums=(0, 1))


def problem(
    group: int, n_slices: int, n_modes: int, pixels: int, seed: int = 0
) -> tuple[jax.Array, ...]:
    """Object, probe modes, positions, propagators and measured intensities of one case."""
    rng = np.random.default_rng(seed)
    raster = np.stack(np.meshgrid(*(np.arange(n) for n in SCAN_SHAPE), indexing="ij"), -1).reshape(
        -1, 2
    )
    scan_px = raster[rng.choice(len(raster), group, replace=False)] * (SCAN_STEP_A / PIXEL_A)
    positions = scan_px + MARGIN_PX + pixels // 2
    side = pixels + math.ceil((max(SCAN_SHAPE) - 1) * SCAN_STEP_A / PIXEL_A) + 2 * MARGIN_PX
    phase = rng.uniform(-np.pi, np.pi, (n_slices, side, side))
    window = (pixels, pixels)
    probe_modes = jnp.stack(
        [
            physics.probe_wave(
                window, PIXEL_A, ENERGY_EV, SEMIANGLE_MRAD, {"C10": -(DEFOCUS_A + 5.0 * mode)}
            )
            for mode in range(n_modes)
        ]
    ) / math.sqrt(n_modes)
    return (
        jnp.asarray(np.exp(1j * phase), jnp.complex64),
        probe_modes,
        jnp.asarray(positions, jnp.float32),
        model.slice_propagators(window, PIXEL_A, ENERGY_EV, [SLICE_A] * n_slices),
        jnp.asarray(rng.random((group, pixels, pixels)), jnp.float32),
    )


def forward_gflop(group: int, n_slices: int, n_modes: int, pixels: int) -> float:
    """GFLOP of the FFTs in one forward call (see the module docstring)."""
    n_ffts = n_modes + (2 * (n_slices - 1) + 2) * n_modes * group
    return n_ffts * 5 * pixels**2 * math.log2(pixels**2) / 1e9


def benchmark_case(
    group: int, n_slices: int, n_modes: int, pixels: int, repeats: int
) -> dict[str, float]:
    """One table row: compile time, positions/s and FFT GFLOP/s of the forward model
    and of forward + gradient."""
    args = problem(group, n_slices, n_modes, pixels)
    fwd_compile, fwd_s = time_compiled(model.far_field_intensities, args[:4], repeats)
    grad_compile, grad_s = time_compiled(loss_and_gradients, args, repeats)
    gflop = forward_gflop(group, n_slices, n_modes, pixels)
    return {
        "group": group,
        "slices": n_slices,
        "modes": n_modes,
        "repeats": repeats,
        "compile_fwd_s": fwd_compile,
        "fwd_pos_per_s": group / fwd_s,
        "fwd_gflops": gflop / fwd_s,
        "compile_grad_s": grad_compile,
        "grad_pos_per_s": group / grad_s,
        "grad_gflops_est": 3 * gflop / grad_s,
    }


def run(repeats: int, pixels: int, quick: bool) -> pd.DataFrame:
    """Benchmark every case (only G = 16, S = 1, M = 1 when ``quick``), one row each."""
    cases = [(16, 1, 1)] if quick else [(g, s, m) for g in GROUPS for s in SLICES for m in MODES]
    rows = []
    for group, n_slices, n_modes in cases:
        print(f"G={group} S={n_slices} M={n_modes} ...", end=" ", flush=True)
        rows.append(benchmark_case(group, n_slices, n_modes, pixels, repeats))
        print(
            f"{rows[-1]['fwd_pos_per_s']:.0f} / {rows[-1]['grad_pos_per_s']:.0f} positions/s",
            flush=True,
        )
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed calls per case (median reported)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=paths.reports_dir() / "forward_model.md",
        help="markdown table; a .csv goes beside it",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: only G = 16, S = 1, M = 1")
    parser.add_argument("--pixels", type=int, default=64, help="window size N")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_compilation_cache", False)
    start = time.perf_counter()
    table = run(args.repeats, args.pixels, args.quick)
    lines = [
        f"- window N = {args.pixels} px (complex64), pixel {PIXEL_A} Å, slices {SLICE_A} Å, "
        f"{ENERGY_EV / 1e3:g} kV, {SEMIANGLE_MRAD:g} mrad, {DEFOCUS_A:g} Å defocus",
        f"- total run time: {time.perf_counter() - start:.0f} s",
        f"- regenerate: `{regenerate_command(__spec__.name, argv)}`",
        "",
        (
            "Method (see `ptyopt/benchmarks/forward.py`): ahead-of-time compile timed as "
            "compile_*_s; one warm-up"
        ),
        (
            "call, then the median of `repeats` calls; pos_per_s = G / median. "
            "fwd_gflops counts the forward FFTs"
        ),
        (
            "(M + (2(S − 1) + 2)·M·G FFTs of N × N at 5·N²·log2(N²) flops); "
            "grad_gflops_est assumes 3× those FFTs."
        ),
    ]
    write_report(args.output, "Forward-model throughput", lines, table, DECIMALS)


if __name__ == "__main__":
    main()
