"""Scale benchmark: seconds per iteration, compile time and peak memory of every engine
on experiment-sized data, and how each grows with positions, detector pixels, slices
and probe modes.

Run ``python -m ptyopt.benchmarks.scale`` (``make bench-scale``). The data are
synthetic, made by ptyopt's own forward model (an abTEM simulation of 16,384 positions
would take hours here, and the timing does not depend on the specimen): a random
weak-phase object of ``slices`` slices of 2 Å, a 300 kV probe of 21.4 mrad focused 75 Å
above the entrance surface, a square raster of 0.6 Å steps, a detector of 1.89 mrad per
pixel (the ``thick10`` dataset's pitch; more pixels reach higher angles and give finer
object pixels) and Poisson noise at 1e5 e/Å². Every case runs in a fresh process (its
peak memory and its compilation are its own): the data are made, then the engine runs
one iteration (compilation + run) and ``--iterations`` timed ones (groups of 64, probe
refined from the start; :func:`ptyopt.benchmarks.engines.time_iterations`).
``compile_s`` is the seconds JAX reports tracing, lowering and compiling
(:func:`ptyopt.benchmarks.engines.compile_seconds`); rows measured before 2026-12-02
20:30 UTC hold the first iteration's time minus the median instead, which the
machine's load made noisy (even negative). ``peak_rss_MB`` is the process's peak
resident memory during the reconstruction, the patterns it holds included
(:func:`ptyopt.benchmarks.engines.time_iterations` resets the peak as it starts); rows
measured before 2026-12-08 hold the whole process's peak, the data making's copies
included (PtyRAD's case: 6.8 GB there; its data making alone peaks at 2.9 GB, and
ePIE's reconstruction at 2.7 GB).

What limits the largest case: on the CPU, time, not memory. A case holds JAX's
runtime and compiled code (about 0.6 GB), the patterns as float32 counts
(``patterns_MB`` = positions × pixels² × 4 B, all resident: 0.4 GB for phaser's case,
1 GB for PtyRAD's) and one group's working set, a small multiple of its waves
(group × modes × slices × pixels² × 8 B: 0.6 GB for PtyRAD's case, whose ePIE
reconstruction holds 1.1 GB above the data). LSQML, whose chunks run concurrently
(:mod:`ptyopt.engines.chunks`), holds more at once: phaser's case peaks at 3.0 GB
against the gradient engine's 2.1 (12-08). Within 24 GiB that leaves room for about
300,000 patterns of 128² px or 75,000 of 256², and a smaller group shrinks the working
set; PtyRAD's case needs 8 to 11 minutes an iteration on 2 cores. The
patterns are not streamed from the host by group: on the cards measured (an H200:
``reports/device_nvidia_h200/``) phaser's case uses at most 1.3 GB of device memory and
PtyRAD's 2.7 GB.

Cases: the ``scaling`` set varies one factor at a time from a base of 32×32 positions,
128 px, 6 slices, 1 mode; ``large`` holds phaser's published case (80×80 positions,
128 px, 20 slices) and PtyRAD's (128×128 positions, 128 px, 6 slices, 12 modes).
``fft_bound_s`` is the time the iteration's FFTs alone would take at the rate XLA's
FFT reaches in this process (measured first, on 64 × N² complex64 transforms):
3 × 2 × slices FFTs per position and mode (forward, backward and the update's
re-propagation; DESIGN §13), 5·N²·log2(N²) flops each; ``of_bound`` =
fft_bound_s / s_per_iter (1 would be FFT-bound). Both are estimates: the count is
DESIGN's rule of thumb, and the rate, measured once before the case runs, moves with
the machine's load (an ``of_bound`` above 1 means the rate was measured while the
machine was busier than during the iteration). The exact FFT count of each engine's
iteration, counted from its traced computation, and its FFT time measured beside the
iteration: ``make bench-profile`` (``reports/profile.md``).

``bandwidth_bound_s`` is the time the iteration's waves would take to move through the
device's memory once per FFT: the same FFT count, each transform reading and writing
its N² complex64 wave once (16·N² bytes; the element-wise passes around them and the
object and pattern reads are left out, so it is a lower bound on the traffic), divided
by the bandwidth a streaming pass reaches in this process (``y = x + 1`` over 256 MiB of
float32, several times any cache, best of five, bytes read and written, measured after
the iterations; :func:`stream_bandwidth`);
``of_bandwidth`` = bandwidth_bound_s / s_per_iter (above 1 where a group's waves stay
in cache between transforms: 64 × 128² complex64 is 8 MiB). ``peak_device_MB`` is the most
memory JAX's allocator held on an accelerator (empty on the CPU, where ``peak_rss_MB``
holds everything). The ``device`` column names the device JAX ran on; rows of another
device are kept apart when tables are merged.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")

import argparse
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ptyopt import paths
from ptyopt.benchmarks.engines import ENGINE_DEFAULTS, time_iterations
from ptyopt.benchmarks.report import regenerate_command, write_report

ENERGY_EV = 300e3
SEMIANGLE_MRAD = 21.4
DEFOCUS_A = -75.0  # abTEM's sign: crossover 75 Å above the entrance surface (C10 = +75 Å)
STEP_A = 0.6
PITCH_MRAD = 1.89
SLICE_A = 2.0
DOSE_E_PER_A2 = 1.0e5
GROUP = 64
COLUMNS = ["engine", "positions", "pixels", "slices", "modes", "s_per_iter", "compile_s"]
COLUMNS += ["peak_rss_MB", "device", "set", "patterns_MB", "fft_bound_s", "of_bound"]
COLUMNS += ["peak_device_MB", "bandwidth_bound_s", "of_bandwidth", "measured"]
KEYS = ["engine", "positions", "pixels", "slices", "modes", "device"]
DECIMALS = {
    "s_per_iter": 3,
    "compile_s": 2,
    "peak_rss_MB": 0,
    "patterns_MB": 0,
    "fft_bound_s": 3,
    "of_bound": 3,
    "peak_device_MB": 0,
    "bandwidth_bound_s": 4,
    "of_bandwidth": 3,
}


@dataclass(frozen=True)
class Case:
    """One benchmark case: engine, scan side (side² positions), detector pixels,
    slices, probe modes, and the set it belongs to (``scaling`` or ``large``)."""

    engine: str
    side: int
    pixels: int
    slices: int
    modes: int
    set: str

    def words(self) -> list[str]:
        return [self.engine, *map(str, (self.side, self.pixels, self.slices, self.modes))]


BASE = {"side": 32, "pixels": 128, "slices": 6, "modes": 1}
FACTORS = {"side": [16, 64], "pixels": [64, 256], "slices": [1, 20], "modes": [4, 12]}
LARGE = {
    "phaser": {"side": 80, "pixels": 128, "slices": 20, "modes": 1},  # phaser's paper
    "ptyrad": {"side": 128, "pixels": 128, "slices": 6, "modes": 12},  # PtyRAD's paper
}


def scaling_cases(engines: Sequence[str]) -> list[Case]:
    """The base case and one factor changed at a time, per engine."""
    shapes = [BASE] + [{**BASE, key: value} for key, values in FACTORS.items() for value in values]
    return [Case(engine, **shape, set="scaling") for engine in engines for shape in shapes]


def large_cases(engines: Sequence[str], names: Sequence[str] = tuple(LARGE)) -> list[Case]:
    """The large cases ``names`` (keys of :data:`LARGE`) for every engine."""
    return [Case(engine, **LARGE[name], set="large") for engine in engines for name in names]


def synthetic_measurements(side: int, pixels: int, slices: int, seed: int = 0):
    """Measurements (:class:`ptyopt.initial.Measurements`) of side × side positions on
    ``pixels``² detector pixels, made by ptyopt's forward model from a random
    weak-phase object of ``slices`` slices (module docstring), with Poisson noise.
    Nominal optics, thickness and slicing are the true ones."""
    import jax
    import jax.numpy as jnp

    from ptyopt import model, physics
    from ptyopt.data.dataset import Optics, PtychoDataset
    from ptyopt.initial import measurements_from, object_geometry

    y, x = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    positions_A = np.stack([y.ravel(), x.ravel()], axis=1) * STEP_A + 5.0
    optics = Optics(ENERGY_EV, SEMIANGLE_MRAD, {"C10": -DEFOCUS_A})
    shape = (side * side, pixels, pixels)
    dataset = PtychoDataset(
        name=f"synthetic-{side}x{side}-{pixels}px-{slices}sl",
        patterns=np.broadcast_to(np.float32(0), shape),  # the geometry's, no memory
        positions_A=positions_A,
        optics=optics,
        angular_sampling_mrad=PITCH_MRAD,
        pattern_centre_px=(pixels // 2, pixels // 2),
        dose_e_per_A2=DOSE_E_PER_A2,
        nominal_thickness_A=SLICE_A * slices,
        nominal_slices=slices,
    )
    geometry = object_geometry(dataset)
    rng = np.random.default_rng(seed)
    smooth = np.exp(
        -0.5
        * (
            np.fft.fftfreq(geometry.shape[0])[:, None] ** 2
            + np.fft.fftfreq(geometry.shape[1])[None, :] ** 2
        )
        / 0.1**2
    )
    phase = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(slices, *geometry.shape))) * smooth))
    obj = jnp.asarray(np.exp(0.3j * phase / phase.std()), jnp.complex64)
    window = geometry.window
    probe = physics.probe_wave(
        window, dataset.pixel_size_A, ENERGY_EV, SEMIANGLE_MRAD, optics.aberrations
    )
    electrons = DOSE_E_PER_A2 * STEP_A**2
    probe = probe * jnp.sqrt(electrons / jnp.sum(jnp.abs(probe) ** 2))
    propagators = model.slice_propagators(
        window, dataset.pixel_size_A, ENERGY_EV, (SLICE_A,) * slices
    )
    forward = jax.jit(model.far_field_intensities)
    # made and made noisy 256 patterns at a time, into one float32 array: the only
    # full-size copies are this one and the measurements' (the case's peak memory is
    # the reconstruction's, not the data making's)
    noisy = np.empty(shape, np.float32)
    for start in range(0, len(positions_A), 256):
        group = jnp.asarray(geometry.positions_px[start : start + 256], jnp.float32)
        intensity = np.asarray(forward(obj, probe[None], group, propagators))
        centred = np.fft.fftshift(np.maximum(intensity, 0), axes=(-2, -1))
        noisy[start : start + 256] = rng.poisson(centred)
    measurements = measurements_from(PtychoDataset(**{**dataset.__dict__, "patterns": noisy}))
    return measurements, noisy.nbytes / 2**20


def fft_rate_flops(pixels: int, batch: int = 64, repeats: int = 5) -> float:
    """XLA's complex64 FFT rate in this process [flop/s] on ``batch`` × pixels²
    transforms (:func:`ptyopt.benchmarks.profile.fft_seconds`; 5·N·log2(N) flops per
    N-point transform)."""
    from ptyopt.benchmarks.profile import fft_seconds

    points = pixels * pixels
    return 5 * points * math.log2(points) / fft_seconds(pixels, batch, repeats)


def stream_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """The memory bandwidth [B/s] a streaming element-wise pass reaches on JAX's
    default device in this process: ``y = x + 1`` over ``megabytes`` MiB of float32,
    the best of ``repeats`` passes, counting the bytes read and written."""
    import jax
    import jax.numpy as jnp

    x = jnp.zeros(megabytes * 2**20 // 4, jnp.float32)
    step = jax.jit(lambda a: a + 1.0)
    step(x).block_until_ready()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        step(x).block_until_ready()
        seconds.append(time.perf_counter() - started)
    return 2 * x.nbytes / min(seconds)


def measure(case: Case, iterations: int) -> dict:
    """One case in this process (module docstring)."""
    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    rate = fft_rate_flops(case.pixels)
    measurements, patterns_MB = synthetic_measurements(case.side, case.pixels, case.slices)
    timed = time_iterations(measurements, case.engine, GROUP, case.slices, case.modes, iterations)
    bandwidth = stream_bandwidth()  # after: its arrays are not the case's peak memory
    points = case.pixels**2
    ffts = 3 * 2 * case.slices * case.side**2 * case.modes
    bound = ffts * 5 * points * math.log2(points) / rate
    bandwidth_bound = ffts * 16 * points / bandwidth
    return {
        "engine": case.engine,
        "positions": case.side**2,
        "pixels": case.pixels,
        "slices": case.slices,
        "modes": case.modes,
        "s_per_iter": timed["s_per_iter"],
        "compile_s": timed["compile_s"],
        "peak_rss_MB": timed["peak_rss_MB"],
        "device": str(jax.devices()[0].device_kind),
        "set": case.set,
        "patterns_MB": patterns_MB,
        "fft_bound_s": bound,
        "of_bound": bound / timed["s_per_iter"],
        "peak_device_MB": timed["peak_device_MB"],
        "bandwidth_bound_s": bandwidth_bound,
        "of_bandwidth": bandwidth_bound / timed["s_per_iter"],
        "measured": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }


def run_cases(
    cases: Sequence[Case],
    iterations: dict[str, int],
    on_table: Callable[[pd.DataFrame], None] = lambda table: None,
) -> pd.DataFrame:
    """Each case in a fresh process, with ``iterations[case.set]`` timed iterations;
    one row per case. ``on_table`` is given the rows so far after every case (a run
    stopped part way keeps what it measured)."""
    rows = []
    for case in cases:
        print(f"{case} ...", end=" ", flush=True)
        command = [sys.executable, "-m", __spec__.name, "--case", *case.words()]
        command += ["--set", case.set, "--iterations", str(iterations[case.set])]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"case {case} failed:\n{result.stderr[-2000:]}")
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        print(f"{rows[-1]['s_per_iter']:.3f} s/iter", flush=True)
        on_table(pd.DataFrame(rows, columns=COLUMNS))
    return pd.DataFrame(rows, columns=COLUMNS)


def growth_lines(table: pd.DataFrame) -> list[str]:
    """Per engine, device and factor, the exponent p of s_per_iter ∝ factor^p between the
    factor's smallest and largest value in the scaling set (other factors at base)."""
    scaling = table[table["set"] == "scaling"]
    base = {"positions": BASE["side"] ** 2, **{k: v for k, v in BASE.items() if k != "side"}}
    lines = ["", "Growth of s_per_iter with each factor (exponent p in time ∝ factor^p):", ""]
    lines += ["| engine | device | positions | pixels | slices | modes |"]
    lines += ["|---|---|---|---|---|---|"]
    for (engine, device), rows in scaling.groupby(["engine", "device"], sort=False):
        exponents = []
        for factor in base:
            others = [k for k in base if k != factor]
            line = rows[(rows[others] == pd.Series({k: base[k] for k in others})).all(axis=1)]
            line = line.sort_values(factor)
            if len(line) < 2:
                exponents.append("–")
                continue
            low, high = line.iloc[0], line.iloc[-1]
            p = math.log(high["s_per_iter"] / low["s_per_iter"]) / math.log(
                high[factor] / low[factor]
            )
            exponents.append(f"{p:.2f}")
        lines.append(f"| {engine} | {device} | " + " | ".join(exponents) + " |")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--engines", nargs="+", default=list(ENGINE_DEFAULTS), choices=list(ENGINE_DEFAULTS)
    )
    parser.add_argument(
        "--sets", nargs="+", default=["scaling", "large"], choices=["scaling", "large"]
    )
    parser.add_argument(
        "--iterations", type=int, default=2, help="timed iterations per scaling case"
    )
    parser.add_argument(
        "--large-iterations", type=int, default=1, help="timed iterations per large case"
    )
    parser.add_argument(
        "--large", nargs="+", default=list(LARGE), choices=list(LARGE), help="large cases"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows of the existing table for cases this run does not measure",
    )
    parser.add_argument("--output", type=Path, default=paths.reports_dir() / "scale.md")
    parser.add_argument("--case", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--set", default="scaling", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        case = Case(args.case[0], *map(int, args.case[1:]), set=args.set)
        print(json.dumps(measure(case, args.iterations)))
        return
    cases = []
    if "scaling" in args.sets:
        cases += scaling_cases(args.engines)
    if "large" in args.sets:
        cases += large_cases(args.engines, args.large)
    started = time.perf_counter()
    csv = args.output.with_suffix(".csv")
    kept = pd.read_csv(csv) if args.merge and csv.exists() else None

    def write(table: pd.DataFrame) -> None:
        if kept is not None:
            measured = kept[KEYS].apply(tuple, axis=1).isin(table[KEYS].apply(tuple, axis=1))
            table = pd.concat([kept[~measured], table], ignore_index=True)
        lines = [
            f"- this run: {time.perf_counter() - started:.0f} s"
            + (" (rows of earlier runs kept: see `measured`)" if kept is not None else ""),
            f"- regenerate: `{regenerate_command(__spec__.name, argv)}`",
            "",
            *__doc__.split("\n\n", 1)[1].splitlines(),
            *growth_lines(table),
        ]
        write_report(args.output, "Scale benchmark", lines, table, DECIMALS)

    run_cases(cases, {"scaling": args.iterations, "large": args.large_iterations}, write)


if __name__ == "__main__":
    main()
