"""ptyopt itself behind the peer-adapter interface, so that the peer benchmark runs our
engines exactly as it runs a peer: a :class:`~ptyopt.peers.base.PeerPlan` turned into
a ptyopt plan (:func:`plan_values`), one fresh process per reconstruction
(``python -m ptyopt.peers.ours inputs.npz outputs.npz``, this interpreter), the same
file exchange, the object on ptyopt's grid (it already is) and the time of every
iteration (:class:`ptyopt.engines.common.IterationReport`, the first with its
compilation).
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version as _package_version
from pathlib import Path
from typing import Any

import numpy as np

from ptyopt.peers import exchange
from ptyopt.peers.base import ENGINE_FAMILIES, PeerPlan, PeerResult, PeerRunError

PACKAGE = "ptyopt"
ENGINES = ENGINE_FAMILIES


def version() -> str:
    """ptyopt's installed version."""
    return _package_version("ptyopt")


def plan_values(plan: PeerPlan) -> dict[str, Any]:
    """The ptyopt plan (``conf/engine`` keys) of ``plan``: one engine of its family,
    sparse groups, the probe refined from the first iteration when ``refine_probe``
    (else never), steps as named (``learning_rate`` and ``probe_learning_rate`` are
    Adam's, the gradient engine's default solver), ``native`` keys last."""
    engine: dict[str, Any] = {
        "kind": plan.engine,
        "iterations": plan.iterations,
        "group_size": plan.group_size,
        "grouping": "sparse",
        "noise": {"model": plan.noise_model, "epsilon": plan.epsilon},
        "probe_update_start": 0 if plan.refine_probe else plan.iterations,
    }
    if plan.engine == "gradient":
        engine["object_solver"] = {"name": "adam", "learning_rate": plan.step_size("learning_rate")}
        engine["probe_solver"] = {
            "name": "adam",
            "learning_rate": plan.step_size("probe_learning_rate"),
        }
    else:
        engine["beta_object"] = plan.step_size("beta_object")
        engine["beta_probe"] = plan.step_size("beta_probe")
    engine.update(plan.native)
    return {
        "seed": plan.seed,
        "probe_modes": plan.probe_modes,
        "slices": plan.slices,
        "thickness_A": plan.thickness_A,
        "engines": [engine],
    }


def run(dataset_path: Path, plan: PeerPlan, workdir: Path) -> PeerResult:
    """Reconstruct the dataset at ``dataset_path`` by ``plan`` with ptyopt in a fresh
    process (its log in ``workdir/worker.log``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    inputs_path, outputs_path = workdir / "inputs.npz", workdir / "outputs.npz"
    outputs_path.unlink(missing_ok=True)
    values = plan_values(plan)
    exchange.save(
        inputs_path,
        {
            "dataset": str(dataset_path),
            "plan": values,
            "snapshot_every": plan.snapshot_every,
        },
    )
    command = [sys.executable, "-m", __spec__.name, str(inputs_path), str(outputs_path)]
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
    (workdir / "worker.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0 or not outputs_path.exists():
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise PeerRunError(f"ptyopt worker failed (exit {done.returncode}):\n{tail}")
    outputs = exchange.load(outputs_path)
    snapshots = dict(
        zip(outputs["snapshot_iterations"].tolist(), outputs["snapshots"], strict=True)
    )
    snapshots[plan.iterations] = outputs["object"]
    return PeerResult(
        package=PACKAGE,
        version=version(),
        engine=plan.engine,
        object_slices=outputs["object"],
        iteration_s=tuple(float(s) for s in outputs["iteration_s"]),
        peak_rss_MB=float(outputs["peak_rss_MB"]),
        settings=values["engines"][0],
        snapshots=snapshots,
    )


def _worker(inputs_path: str, outputs_path: str) -> None:
    """The fresh process: run the plan, time every iteration, keep the snapshots."""
    from ptyopt.data.file import read_dataset
    from ptyopt.reconstruction import Reconstruction

    inputs = exchange.load(inputs_path)
    every = int(inputs["snapshot_every"])
    seconds: list[float] = []
    iterations: list[int] = []
    snapshots: list[np.ndarray] = []
    reconstruction = Reconstruction(read_dataset(inputs["dataset"]), inputs["plan"])
    total = reconstruction.plan.engines[0].iterations

    def observe(report) -> None:
        seconds.append(report.seconds)
        done = report.iteration + 1
        if every and done % every == 0 and done < total:
            iterations.append(done)
            snapshots.append(np.asarray(report.state.object, np.complex64))

    state = reconstruction.run(observers=[observe])
    exchange.save(
        outputs_path,
        {
            "object": np.asarray(state.object, np.complex64),
            "iteration_s": np.asarray(seconds),
            "snapshot_iterations": np.asarray(iterations, np.int64),
            "snapshots": np.stack(snapshots) if snapshots else np.zeros((0, 1, 1, 1), np.complex64),
            "peak_rss_MB": exchange.peak_rss_MB(),
        },
    )


if __name__ == "__main__":
    _worker(*sys.argv[1:3])
