"""The benchmarks that describe a device, in one command with a time budget: the large
cases and the scaling set of :mod:`ptyopt.benchmarks.scale`, the batched trials of
:mod:`ptyopt.benchmarks.batched_trials`, the iteration profile of
:mod:`ptyopt.benchmarks.profile` and the quick engine cases of
:mod:`ptyopt.benchmarks.engines`.

Run ``python -m ptyopt.benchmarks.device_suite`` (``make bench-device``) where JAX sees
the device to describe (a GPU: ``jax.devices()`` lists it). Each benchmark runs as its
own command, given its share of ``--budget`` seconds (:data:`STEPS`; a step's unused
time passes to the next); one that fails or runs out of time is reported and the next
one runs. Every benchmark writes its report as it goes, so one stopped part way keeps
what it measured. The reports go to ``reports/device_<kind>/`` (``<kind>`` is JAX's
name for the device, e.g. ``nvidia_h200``), apart from the CPU reports of the same
names.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ptyopt import paths


@dataclass(frozen=True)
class Step:
    """One benchmark command: its module, arguments, report file name and share of the
    budget."""

    module: str
    arguments: tuple[str, ...]
    report: str
    share: float


STEPS = (
    Step("ptyopt.benchmarks.scale", ("--sets", "large"), "scale", 0.4),
    Step("ptyopt.benchmarks.batched_trials", (), "batched_trials", 0.25),
    Step("ptyopt.benchmarks.profile", (), "profile", 0.07),
    Step("ptyopt.benchmarks.engines", ("--quick", "--iterations", "3"), "engines", 0.08),
    Step("ptyopt.benchmarks.scale", ("--sets", "scaling", "--merge"), "scale", 0.2),
)
"""The suite in order of what it must not miss; shares of the budget sum to 1. On the
H200 (12-04) the large cases took 164 s, the batched trials needed more than
130 s, the quick engine cases about 60 s."""


DEVICE_QUERY = "import jax; print(jax.devices()[0].device_kind, jax.default_backend(), sep='|')"


def device_folder(kind: str) -> str:
    """The report folder's name for JAX's device kind ``kind``: ``device_`` and the
    kind in lower case, runs of other characters than letters and digits as ``_``."""
    return "device_" + re.sub(r"[^a-z0-9]+", "_", kind.lower()).strip("_")


def stop_session(process: subprocess.Popen, grace_s: float = 5.0) -> None:
    """End ``process`` and every process it started (its session): SIGTERM, then, after
    up to ``grace_s`` seconds, SIGKILL to what is left. A benchmark's case processes
    hold the device's memory, so none may outlive its step."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace_s)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # children that outlived the leader
    except ProcessLookupError:
        pass
    process.wait()


def run_steps(steps: Sequence[Step], folder: Path, budget_s: float) -> list[str]:
    """Run ``steps`` one after another within ``budget_s`` seconds, reports into
    ``folder``; one line per step: its outcome and seconds."""
    deadline = time.monotonic() + budget_s
    remaining_share = sum(step.share for step in steps)
    outcomes = []
    for step in steps:
        left = deadline - time.monotonic()
        limit = left * step.share / remaining_share
        remaining_share -= step.share
        output = folder / f"{step.report}.md"
        command = [sys.executable, "-m", step.module, *step.arguments, "--output", str(output)]
        print(f"== {' '.join(command[2:])} (up to {limit:.0f} s)", flush=True)
        started = time.monotonic()
        process = subprocess.Popen(command, start_new_session=True)
        try:
            code = process.wait(timeout=limit)
            outcome = "ok" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            stop_session(process)
            outcome = "stopped at its time limit (its report holds the cases it finished)"
        name = " ".join((step.module, *step.arguments))
        outcomes.append(f"{name}: {outcome}, {time.monotonic() - started:.0f} s")
        print(f"== {outcomes[-1]}", flush=True)
    return outcomes


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=1200.0, help="seconds for the suite")
    parser.add_argument("--output-dir", type=Path, help="default: reports/device_<kind>")
    args = parser.parse_args(argv)
    # asked in a child: JAX in this process would take the GPU memory the steps need
    kind, backend = (
        subprocess.run(
            [sys.executable, "-c", DEVICE_QUERY], capture_output=True, text=True, check=True
        )
        .stdout.split("\n")[-2]
        .split("|")
    )
    folder = args.output_dir or paths.reports_dir() / device_folder(kind)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"device: {kind} ({backend}); reports into {folder}", flush=True)
    for line in run_steps(STEPS, folder, args.budget):
        print(line)


if __name__ == "__main__":
    main()
