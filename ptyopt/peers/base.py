"""What every peer adapter shares: the plan in ptyopt's terms, the result in ptyopt's
frame, where a peer's interpreter lives and how its worker process is run.

A peer package runs in its own virtual environment (its JAX or torch never meets
ours), one fresh process per reconstruction: ptyopt writes the inputs the worker needs
to an ``.npz`` file, runs ``<peer python> <worker script> inputs.npz outputs.npz``, and
reads the outputs back. Worker scripts (``ptyopt/peers/<package>_worker.py``) import
only NumPy, the standard library and their peer package, never ptyopt.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ptyopt import paths
from ptyopt.errors import ConfigError
from ptyopt.initial import Geometry
from ptyopt.peers import exchange

#: Engine families a peer plan may name (ptyopt's engine kinds).
ENGINE_FAMILIES = ("epie", "lsqml", "gradient")
#: Noise models a peer plan may name: Poisson likelihood or amplitude (Gaussian) error.
NOISE_MODELS = ("poisson", "amplitude")


class PeerUnavailableError(ConfigError):
    """A peer package is not installed where ptyopt looks for it, or does not offer the
    engine family asked for."""


class PeerRunError(RuntimeError):
    """A peer's worker process failed; the message ends with its last stderr lines."""


@dataclass(frozen=True)
class PeerPlan:
    """A reconstruction plan in ptyopt's terms, for a peer to run with its equivalent
    settings.

    engine: engine family (:data:`ENGINE_FAMILIES`). iterations: full passes over the
    positions. group_size: positions per update (ePIE: 1 means sequential). slices:
    object slices (1: single slice), spanning ``thickness_A`` [Å] (``None``: the
    dataset's nominal thickness). probe_modes: incoherent probe modes.
    refine_probe: whether the probe is updated. noise_model: :data:`NOISE_MODELS`.
    step: step sizes in ptyopt's meaning — ``beta_object``, ``beta_probe`` (ePIE,
    LSQML; dimensionless) or ``learning_rate`` (gradient). native: the peer's own
    parameters by its own names, applied last (what a study of that peer tunes).
    seed: seed of any randomness in the peer (update order, initial modes).
    epsilon: the noise model's ε in ptyopt's meaning [counts] (:mod:`ptyopt.noise`).
    snapshot_every: keep the object every k iterations as well as the last (0: only the
    last), for convergence curves.
    """

    engine: str
    iterations: int
    group_size: int
    slices: int = 1
    thickness_A: float | None = None
    probe_modes: int = 1
    refine_probe: bool = True
    noise_model: str = "poisson"
    step: dict[str, float] = field(default_factory=dict)
    native: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    epsilon: float = 0.0
    snapshot_every: int = 0

    def __post_init__(self) -> None:
        if self.engine not in ENGINE_FAMILIES:
            raise ConfigError(f"peer plan: engine {self.engine!r} is not one of {ENGINE_FAMILIES}")
        if self.noise_model not in NOISE_MODELS:
            raise ConfigError(
                f"peer plan: noise_model {self.noise_model!r} is not one of {NOISE_MODELS}"
            )
        if self.epsilon < 0 or self.snapshot_every < 0:
            raise ConfigError("peer plan: epsilon and snapshot_every must be ≥ 0")
        for key in ("iterations", "group_size", "slices", "probe_modes"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"peer plan: {key} must be ≥ 1, got {getattr(self, key)}")
        for key, value in self.step.items():
            if not float(value) > 0:
                raise ConfigError(f"peer plan: step {key} must be > 0, got {value}")

    def step_size(self, key: str) -> float:
        """The step ``key`` of :attr:`step`; :class:`ConfigError` naming it when absent."""
        if key not in self.step:
            raise ConfigError(f"peer plan: the {self.engine} engine needs step {key!r}")
        return float(self.step[key])


@dataclass(frozen=True)
class PeerResult:
    """A peer's reconstruction in ptyopt's frame.

    object_slices: (S, H, W) complex transmission of each slice on ptyopt's object
    grid (:func:`ptyopt.initial.object_geometry` of the dataset: same pixel, same
    origin, so :func:`ptyopt.metrics.score_object` scores it as one of ours).
    iteration_s: wall time of each iteration [s], compilation included in the first.
    peak_rss_MB: the worker process's peak resident memory [MiB].
    settings: the peer's native settings the run used, by the peer's names.
    snapshots: the object (S, H, W) on ptyopt's grid after iteration k, by k (the
    plan's ``snapshot_every`` and the last; empty where a peer keeps none).
    """

    package: str
    version: str
    engine: str
    object_slices: np.ndarray
    iteration_s: tuple[float, ...]
    peak_rss_MB: float
    settings: dict[str, Any]
    snapshots: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def first_iter_s(self) -> float:
        """The first iteration's time [s] (compilation included)."""
        return self.iteration_s[0]

    @property
    def s_per_iter(self) -> float:
        """Median time of iterations 3…N [s] (all of them when there are fewer)."""
        times = self.iteration_s[2:] or self.iteration_s
        return float(np.median(times))


def peers_dir() -> Path:
    """Folder holding one virtual environment per peer package: ``$PTYOPT_PEERS_DIR``,
    else ``.peers/`` in the project root."""
    configured = os.environ.get("PTYOPT_PEERS_DIR")
    return Path(configured) if configured else paths.project_root() / ".peers"


def peer_python(package: str) -> Path:
    """The interpreter of ``package``'s virtual environment (``peers_dir()/package``).

    Raises :class:`PeerUnavailableError` naming the command that creates it."""
    python = peers_dir() / package / "bin" / "python"
    if not python.exists():
        raise PeerUnavailableError(
            f"peer {package!r} is not installed: no {python} "
            f"(make peers-env creates it, or set PTYOPT_PEERS_DIR)"
        )
    return python


def run_worker(
    package: str, worker: Path, inputs: dict[str, Any], workdir: Path, timeout_s: float = 3600
) -> dict[str, Any]:
    """Run ``worker`` with ``package``'s interpreter in a fresh process, passing
    ``inputs`` and returning its outputs through :mod:`ptyopt.peers.exchange` files in
    ``workdir`` (kept with the worker's ``worker.log``). Raises :class:`PeerRunError`
    with the worker's last stderr lines."""
    workdir.mkdir(parents=True, exist_ok=True)
    inputs_path, outputs_path = workdir / "inputs.npz", workdir / "outputs.npz"
    outputs_path.unlink(missing_ok=True)
    exchange.save(inputs_path, inputs)
    env = {**os.environ, "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    command = [str(peer_python(package)), str(worker), str(inputs_path), str(outputs_path)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired as error:
        raise PeerRunError(f"{package} worker ran past {timeout_s:.0f} s") from error
    (workdir / "worker.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0 or not outputs_path.exists():
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise PeerRunError(f"{package} worker failed (exit {done.returncode}):\n{tail}")
    return exchange.load(outputs_path)


def worker_path(package: str) -> Path:
    """The worker script of ``package``: ``ptyopt/peers/<package>_worker.py``."""
    return Path(__file__).with_name(f"{package}_worker.py")


def on_ptyopt_grid(
    object_slices: np.ndarray,
    peer_positions_px: np.ndarray,
    geometry: Geometry,
    tolerance_px: float = 0.01,
) -> np.ndarray:
    """A peer's object (S, h, w) complex, in which the dataset's probe centres lie at
    ``peer_positions_px`` (n, 2) (y, x) [peer object px, same pixel size as ours],
    translated onto ptyopt's grid ``geometry`` (S, H, W), where they lie at
    ``geometry.positions_px``: pixel p of the result is the peer's pixel p − d, d the
    whole-pixel translation nearest to (ours − theirs); pixels outside the peer's
    object are 1 (vacuum). The sub-pixel rest (≤ 0.5 px) is left to the scores'
    registration, as for our own reconstructions: a Fourier shift would spread the
    unlit edges' large values (phaser's LSQML leaves them) into the scored field
    (phaser on thick10: NRMSE 0.0856 placed by whole pixels, 0.101–0.113 shifted).
    Raises :class:`PeerRunError` when the two sets of centres differ by more than a
    translation (``tolerance_px``), i.e. a convention (axis order, sign, scale) is
    mapped wrongly."""
    offsets = np.asarray(geometry.positions_px, float) - np.asarray(peer_positions_px, float)
    shift = offsets.mean(axis=0)
    spread = float(np.abs(offsets - shift).max())
    if spread > tolerance_px:
        raise PeerRunError(
            f"peer probe centres are not a translation of ours (spread {spread:.3g} px): "
            "axis order, sign or scale of the positions is mapped wrongly"
        )
    whole = np.round(shift).astype(int)
    slices = np.asarray(object_slices)
    h, w = slices.shape[-2:]
    placed = np.ones((slices.shape[0], *geometry.shape), dtype=slices.dtype)
    # peer pixel q lands on ours at q + whole; keep the overlap
    y0, x0 = max(whole[0], 0), max(whole[1], 0)
    y1, x1 = min(whole[0] + h, geometry.shape[0]), min(whole[1] + w, geometry.shape[1])
    if y1 <= y0 or x1 <= x0:
        raise PeerRunError("the peer's object does not overlap ptyopt's object grid")
    placed[:, y0:y1, x0:x1] = slices[
        :, y0 - whole[0] : y1 - whole[0], x0 - whole[1] : x1 - whole[1]
    ]
    return placed


def worker_result(
    package: str,
    plan: PeerPlan,
    outputs: dict[str, Any],
    centres_px: np.ndarray,
    geometry: Geometry,
    settings: dict[str, Any],
) -> PeerResult:
    """The :class:`PeerResult` of a reconstruction worker's ``outputs`` (``object``
    (S, h, w) and ``snapshots`` (K, S, h, w) at ``snapshot_iterations`` on the peer's
    grid, whose probe centres (n, 2) [px] are ``centres_px``; ``version``,
    ``iteration_s``, ``peak_rss_MB``), every object placed on ptyopt's grid
    (:func:`on_ptyopt_grid`); ``settings`` as the run used them."""
    snapshots = {
        int(i): on_ptyopt_grid(obj, centres_px, geometry)
        for i, obj in zip(
            outputs.get("snapshot_iterations", ()), outputs.get("snapshots", ()), strict=True
        )
    }
    snapshots[plan.iterations] = on_ptyopt_grid(outputs["object"], centres_px, geometry)
    return PeerResult(
        package=package,
        version=str(outputs["version"]),
        engine=plan.engine,
        object_slices=snapshots[plan.iterations],
        iteration_s=tuple(float(s) for s in outputs["iteration_s"]),
        peak_rss_MB=float(outputs["peak_rss_MB"]),
        settings=settings,
        snapshots=snapshots,
    )


def peer_version(package: str, module: str, distribution: str) -> str:
    """The version of ``distribution`` in ``package``'s environment, after importing
    ``module`` there (so a package that is installed but does not import counts as
    unavailable: :class:`PeerUnavailableError` with the import's last error line)."""
    python = peer_python(package)
    code = (
        f"import {module}; from importlib.metadata import version; print(version({distribution!r}))"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [""]
        raise PeerUnavailableError(
            f"peer {package!r}: {module} does not import in {python}: {tail[0]}"
        )
    return done.stdout.strip()
