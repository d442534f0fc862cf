"""phaser's side of the phaser adapter: runs inside phaser's own virtual environment
(``python phaser_worker.py inputs.npz outputs.npz``) and imports only NumPy, the
standard library, phaser and the sibling :mod:`exchange` module.

Every convention has already been mapped by :mod:`ptyopt.peers.phaser` (the inputs are
in phaser's terms); this script only builds phaser's reconstruction from them with
phaser's own plan machinery and runs it.

Inputs: ``mode`` ("reconstruct" or "forward"); ``patterns`` (P, N, N) float32 counts,
zero frequency at index 0 (phaser's layout); ``scan_A`` (P, 2) probe positions (y, x)
[Å]; ``pixel_A`` [Å]; ``wavelength_A`` [Å]; ``object_shape`` (h, w) and ``object_corner_A``
(y, x) [Å] of phaser's object grid; ``plan``: phaser's plan (``ReconsPlan``) as data,
less ``raw_data``, ``init.scan`` and ``init.object``, which come from the hooks below;
``seed``;
``snapshot_every``: save the object every k iterations (0: only the last).
Forward mode: ``object`` (S, h, w) complex on phaser's object grid (optional: without
it only the grid is returned); ``probe`` (N, N) complex, centred at pixel N/2 (optional:
phaser's initial probe otherwise).

Outputs: ``object`` (S, h, w) complex64 (the last iteration's); ``object_corner_A``
(2,) and ``object_sampling_A`` (2,) of phaser's object grid (pixel i lies at
corner + i·sampling); ``scan_A`` the positions the reconstruction ended with;
``iteration_s`` wall time of each iteration [s] (the first includes compilation;
snapshot copies excluded); ``snapshot_iterations`` and ``snapshots`` (K, S, h, w);
``peak_rss_MB``; ``version``. Forward mode: ``intensities`` (P, N, N) phaser's model
far-field intensities, zero frequency at index 0, of the given or the initial probe
(before phaser rescales it to counts: the caller scales them); ``probe`` (N, N)
phaser's initial probe (unit power, centred at N/2), whichever probe was used.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

# This folder holds ptyopt's adapter module ``phaser.py`` too, and Python puts a script's
# folder first on the path: move it last, so that ``import phaser`` finds the package
# and ``import exchange`` still finds the sibling module.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]

import exchange  # noqa: E402
import numpy as np  # noqa: E402

#: The inputs, read by the hooks phaser calls (``__main__:raw_data``, ``__main__:scan``).
INPUTS: dict = {}


def raw_data(args, props) -> dict:
    """phaser's ``RawDataHook``: the patterns, an all-ones mask, the detector sampling
    (real-space pixel ``pixel_A``) and the wavelength."""
    from phaser.utils.num import Sampling

    patterns = np.asarray(INPUTS["patterns"], np.float32)
    n = patterns.shape[-2:]
    return {
        "patterns": patterns,
        "mask": np.ones(n, np.float32),
        "sampling": Sampling(n, sampling=(float(INPUTS["pixel_A"]),) * 2),
        "wavelength": float(INPUTS["wavelength_A"]),
        "scan_hook": None,
        "probe_hook": None,
        "tilt_hook": None,
    }


def scan(args, props):
    """phaser's ``ScanHook``: the given positions (y, x) [Å], in the given order."""
    from phaser.state import ScanState

    positions = args["xp"].asarray(np.asarray(INPUTS["scan_A"], args["dtype"]))
    return ScanState(positions, args["xp"].asarray(positions, copy=True))


def object_on_grid(args, props):
    """phaser's ``ObjectHook``: its random initial object (phase σ 1e-6 rad, its
    ``random_object``) on the given grid: ``object_shape`` (h, w), pixel i at
    ``object_corner_A`` + i·``pixel_A``."""
    from phaser.hooks import RandomObjectProps
    from phaser.hooks.object import random_object
    from phaser.utils.object import ObjectSampling

    positions = np.asarray(INPUTS["scan_A"], np.float64)
    sampling = ObjectSampling(
        tuple(int(v) for v in INPUTS["object_shape"]),
        float(INPUTS["pixel_A"]),
        np.asarray(INPUTS["object_corner_A"], np.float64),
        region_min=positions.min(axis=0),
        region_max=positions.max(axis=0),
    )
    return random_object({**args, "sampling": sampling}, RandomObjectProps())


class _Timer:
    """A phaser observer timing every iteration (the state is made ready first) and
    copying the object every ``every`` iterations outside the timed span."""

    def __init__(self, every: int):
        from phaser.utils.num import block_until_ready, to_numpy

        self._ready, self._numpy = block_until_ready, to_numpy
        self.every = every
        self.seconds: list[float] = []
        self.snapshot_iterations: list[int] = []
        self.snapshots: list[np.ndarray] = []
        self._started = 0.0

    def start_engine(self, state) -> None:
        self._ready(state.object.data)
        self._started = time.perf_counter()

    def update_iteration(self, state, i: int, n: int, errors) -> None:
        self._ready(state.object.data)
        self._ready(state.probe.data)
        self.seconds.append(time.perf_counter() - self._started)
        if self.every and i % self.every == 0 and i < n:
            self.snapshot_iterations.append(i)
            self.snapshots.append(np.asarray(self._numpy(state.object.data), np.complex64))
        self._started = time.perf_counter()


def _observer(timer: _Timer):
    from phaser.observer import Observer

    class TimingObserver(Observer):
        def start_engine(self, init_state) -> None:
            timer.start_engine(init_state)

        def update_iteration(self, state, i, n, errors) -> None:
            timer.update_iteration(state, i, n, errors)

    return TimingObserver()


def _prepared(plan_data: dict, seed: int, observer):
    import pane
    from phaser.execute import initialize_reconstruction
    from phaser.plan import ReconsPlan

    plan_data = {
        **plan_data,
        "raw_data": {"type": "__main__:raw_data"},
        "init": {
            **plan_data.get("init", {}),
            "scan": {"type": "__main__:scan"},
            "object": {"type": "__main__:object_on_grid"},
        },
    }
    plan = pane.from_data(plan_data, ReconsPlan)
    recons = initialize_reconstruction(plan, seed=seed, override_observers=[observer])
    return plan, recons


def _grid(recons) -> dict:
    from phaser.utils.num import to_numpy

    sampling = recons.state.object.sampling
    return {
        "object_corner_A": np.asarray(sampling.corner, np.float64),
        "object_sampling_A": np.asarray(sampling.sampling, np.float64),
        "object_shape": np.asarray(sampling.shape, np.int64),
        "scan_A": np.asarray(to_numpy(recons.state.scan.data), np.float64),
    }


def forward(inputs: dict) -> dict:
    """phaser's far field of the given object with phaser's initial probe (engine
    preparation included: object grid, slices, propagators with its band limit)."""
    from phaser.engines.common.simulation import (
        SimulationState,
        cutout_group,
        make_propagators,
        slice_forwards,
    )
    from phaser.execute import prepare_for_engine
    from phaser.utils.num import abs2, fft2, get_array_module, ifft2, to_numpy

    plan, recons = _prepared(inputs["plan"], int(inputs["seed"]), _observer(_Timer(0)))
    engine = plan.engines[0].props
    xp = get_array_module(recons.state.object.data)
    recons.patterns, recons.state = prepare_for_engine(recons.patterns, recons.state, xp, engine)
    outputs = _grid(recons)
    state = recons.state
    outputs["probe"] = np.asarray(to_numpy(state.probe.data[0]))
    if "object" not in inputs:
        return outputs
    state.object.data = xp.asarray(np.asarray(inputs["object"], np.complex64))
    if "probe" in inputs:
        state.probe.data = xp.asarray(np.asarray(inputs["probe"], np.complex64)[None])
    propagators = make_propagators(state, engine.bwlim_frac)
    sim = SimulationState(
        state=state,
        noise_model=engine.noise_model(None),
        group_constraints=(),
        iter_constraints=(),
        xp=xp,
        dtype=np.float32,
    )
    group = np.arange(len(state.scan.data))[None]
    probes, objects, _ = cutout_group(sim.ky, sim.kx, state, group)

    def through(i, propagator, psi):
        if propagator is None:
            return psi
        return ifft2(fft2(psi * objects[:, i, None]) * propagator[None, None])

    exit_wave = slice_forwards(propagators, probes, through) * objects[:, -1, None]
    outputs["intensities"] = np.asarray(to_numpy(xp.sum(abs2(fft2(exit_wave)), axis=1)))
    return outputs


def reconstruct(inputs: dict) -> dict:
    """Run the plan's one engine and time it."""
    from phaser.execute import execute_engine
    from phaser.utils.num import to_numpy

    timer = _Timer(int(inputs.get("snapshot_every", 0)))
    plan, recons = _prepared(inputs["plan"], int(inputs["seed"]), _observer(timer))
    recons.state.iter.n_total_iters = plan.engines[0].props.niter
    recons = execute_engine(recons, plan.engines[0])
    outputs = _grid(recons)
    outputs["object"] = np.asarray(to_numpy(recons.state.object.data), np.complex64)
    outputs["iteration_s"] = np.asarray(timer.seconds, np.float64)
    outputs["snapshot_iterations"] = np.asarray(timer.snapshot_iterations, np.int64)
    outputs["snapshots"] = (
        np.stack(timer.snapshots) if timer.snapshots else np.zeros((0, 1, 1, 1), np.complex64)
    )
    return outputs


def main(inputs_path: str, outputs_path: str) -> None:
    from importlib.metadata import version

    INPUTS.update(exchange.load(inputs_path))
    outputs = forward(INPUTS) if INPUTS["mode"] == "forward" else reconstruct(INPUTS)
    outputs["version"] = version("phaserEM")
    outputs["peak_rss_MB"] = exchange.peak_rss_MB()
    exchange.save(outputs_path, outputs)


if __name__ == "__main__":
    main(*sys.argv[1:3])
