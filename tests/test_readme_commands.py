"""Every command of the README runs: each ``python -m ptyopt …`` and ``make …`` line of
its code blocks and inline code is either run here, as a subprocess in one project
folder of its own (``PTYOPT_HOME``), with overrides appended that shrink its budget
(a tiny dataset, one trial, one iteration), or named in :data:`EXCLUDED` with the
reason. A README command that is neither fails :func:`test_every_readme_command_is_
run_or_excluded`, and so does an entry here that the README no longer has.

The files the commands name (``scan.npy``, ``mine.h5``, ``run.h5``, ``sim.zarr``, an
EMPAD header, metadata YAML files) are made here, tiny, in the folder the commands run
in; templates (``study=<name>``, ``source=PATH``) run once with real values."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import abtem
import h5py
import numpy as np
import pytest
import yaml
from conftest import TINY_STUDY
from test_import_abtem import DEFOCUS, scanned, specimen  # noqa: F401 (a fixture)
from test_import_rsciio import write_empad

README = Path(__file__).resolve().parents[1] / "README.md"

# The quickstart-sized recipes shrunk to 8×8 positions, 48 px and 1 phonon configuration.
TINY_DATASET = tuple(o for o in TINY_STUDY if o.startswith("dataset."))
# ... on 64 px (a 30 mrad aperture, or bench's bin 2), which 48 px would cut with the
# propagators' band limit
TINY_DATASET_64PX = (*TINY_DATASET, "dataset.detector.pixels=64")
ONE_ITERATION = ("plan.engines.0.iterations=1",)
ONE_TRIAL = ("study.n_trials=1", "study.score_every=1")
# engine_comparison's arms but one per engine, on both datasets (the 12 arms take minutes)
THREE_ARMS = tuple(
    f"~study.arms.{engine}-{dataset}"
    for engine, dataset in [
        *(("epie", d) for d in ("thin", "thick-1e5", "thick-1e6")),
        *(("lsqml", d) for d in ("thin", "thick-1e4", "thick-1e5")),
        *(("gradient", d) for d in ("thick-1e4", "thick-1e5", "thick-1e6")),
    ]
)


def readme_commands(text: str) -> list[str]:
    """The ptyopt commands of a README, in order, each once: lines of fenced code blocks
    (continuations joined, comments dropped) from ``python -m ptyopt`` on, or starting
    with ``make``, and inline code spans that start with either."""
    fence = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)
    commands = []
    for block in fence.findall(text):
        for line in re.sub(r"\s*\\\n\s*", " ", block).splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            found = re.search(r"python -m ptyopt\b.*", line)
            if found:
                commands.append(found.group(0))
            elif line.startswith("make "):
                commands.append(line)
    for code in re.findall(r"`([^`]+)`", fence.sub("", text)):
        code = " ".join(code.split())
        if code.startswith(("python -m ptyopt", "make ")):
            commands.append(code)
    return list(dict.fromkeys(commands))


@dataclass(frozen=True)
class Run:
    """How a README command runs here: ``words`` instead of a template's (placeholders
    filled in; ``None``: the command as written), then ``extra`` overrides that shrink its
    budget, after the commands in ``after`` (a study before its report)."""

    extra: tuple[str, ...] = ()
    words: str | None = None
    after: tuple[str, ...] = ()


IMPORT_NPY = (
    "python -m ptyopt import source=scan.npy out=mine.h5 metadata.energy_kV=300 "
    "metadata.semiangle_mrad=25 metadata.defocus_A=40 metadata.scan_step_A=0.5 "
    "metadata.detector_mrad_per_px=1.68"
)
STUDY_TEMPLATE = "python -m ptyopt study=<name> [overrides]"
TRANSFER = "python -m ptyopt study=transfer"  # not in the README: what apply needs first

# README command -> how it runs, in the order they run.
RUNS: dict[str, Run] = {
    "python -m ptyopt import --help": Run(),
    "python -m ptyopt import source=PATH out=DATASET.h5 [metadata=META.yaml] "
    "[metadata.KEY=VALUE ...]": Run(
        words="python -m ptyopt import source=scan.npy out=template.h5 metadata=meta.yaml "
        "metadata.defocus_A=40"
    ),
    IMPORT_NPY: Run(),
    "python -m ptyopt import source=run.h5:/entry/frames out=mine.h5 metadata=run.yaml "
    "metadata.positions_A=run.h5:/entry/positions metadata.defocus_A=-120": Run(),
    "python -m ptyopt import source=sim.zarr out=sim.h5 metadata.defocus_A=50 "
    "metadata.ground_truth=potential.h5": Run(),
    "python -m ptyopt import source=scan_x256_y256.xml out=empad.h5 "
    "metadata=microscope.yaml metadata.crop_px=96 metadata.bin=2": Run(),
    "python -m ptyopt reconstruct dataset_file=mine.h5": Run(ONE_ITERATION, after=(IMPORT_NPY,)),
    "python -m ptyopt reconstruct dataset_file=mine.h5 engine=gradient out=runs/first": Run(
        ONE_ITERATION, after=(IMPORT_NPY,)
    ),
    "python -m ptyopt apply study=transfer dataset_file=mine.h5 out=runs/tuned": Run(
        after=(IMPORT_NPY, TRANSFER)
    ),
    "python -m ptyopt simulate dataset=bench": Run(TINY_DATASET_64PX),
    "python -m ptyopt reconstruct engine=multislice dataset=bench": Run(
        (*TINY_DATASET_64PX, *ONE_ITERATION, "plan.engines.1.iterations=1")
    ),
    "python -m ptyopt reconstruct engine=<plan> dataset=<name>": Run(
        (*TINY_DATASET, *ONE_ITERATION),
        words="python -m ptyopt reconstruct engine=lsqml dataset=quickstart",
    ),
    "python -m ptyopt simulate study=lsqml_bench": Run(TINY_DATASET_64PX),
    STUDY_TEMPLATE: Run(
        (*TINY_DATASET, *ONE_ITERATION, *ONE_TRIAL), words="python -m ptyopt study=quickstart"
    ),
    "python -m ptyopt study=quickstart study.n_trials=50 sampler=random": Run(
        (*TINY_DATASET, *ONE_ITERATION, *ONE_TRIAL)
    ),
    "python -m ptyopt report study=<name>": Run(
        words="python -m ptyopt report study=quickstart", after=(STUDY_TEMPLATE,)
    ),
    "python -m ptyopt study=calibration": Run((*TINY_DATASET_64PX, *ONE_ITERATION, *ONE_TRIAL)),
    "python -m ptyopt study=engine_comparison study.n_trials=4": Run(
        (*TINY_DATASET, *ONE_ITERATION, *ONE_TRIAL, *THREE_ARMS)
    ),
}
# What the commands above need first, run the same way.
PREREQUISITES: dict[str, Run] = {
    TRANSFER: Run((*TINY_DATASET_64PX, *ONE_TRIAL, "study.baseline_trials=[]")),
}

# README commands not run here, each with the reason.
EXCLUDED: dict[str, str] = {
    "make run": "CI runs it; it creates .venv and runs the full quickstart study",
    "make test": "CI runs it; it creates .venv and runs this whole suite",
    "make bench-forward": "a benchmark of minutes that rewrites reports/forward_model.md",
    "make bench-engines": "a benchmark of minutes on the bench dataset (reports/engines.md)",
    "make bench-scale": "a benchmark of hours on experiment-sized data (reports/scale.md); "
    "tests/test_scale_benchmark.py checks its data and its growth exponents",
    "make bench-profile": "a benchmark of minutes on thick10 (reports/profile.md); "
    "tests/test_profile_benchmark.py checks its FFT counts against the algebra",
    "python -m ptyopt.benchmarks.parity": "rewrites reports/peers/parity.md from the "
    "committed comparisons; tests/test_parity_report.py checks its table",
    "make bench-device": "the benchmarks above on the device JAX sees, for many minutes "
    "(reports/device_<kind>/); tests/test_device_suite.py checks its time limits",
    "make bench-batched": "a benchmark of many minutes: shipped studies run six times each "
    "(reports/batched_trials.md)",
    "make transfer": "a benchmark of minutes: two datasets simulated, a 40-trial study",
    "make bench-peers": "a benchmark of an hour in the peers' environments "
    "(reports/peers/); tests/test_bench_peers.py checks its table",
    "make peers-env": "downloads the peer packages (phaser, py4DSTEM) from PyPI; the "
    "convention tests run where they are installed (tests/test_peer_*.py)",
    "make peers-env-torch": "downloads torch with torchvision (about 5.5 GB per "
    "environment) for PtyRAD and pty-chi; their convention tests skip without them",
    "python -m ptyopt import": "the command's name in prose (alone it prints its usage, "
    "exit 2); its template and every example above are run",
    "python -m ptyopt study=lsqml_bench storage=postgres "
    "storage.url=postgresql://ptyopt@db-host:5432/ptyopt": "needs a PostgreSQL server "
    "(tests/test_postgres.py runs a study on one where the machine has it)",
    "python -m ptyopt report study=lsqml_bench storage=postgres "
    "storage.url=postgresql://ptyopt@db-host:5432/ptyopt": "needs a PostgreSQL server",
}


def test_every_readme_command_is_run_or_excluded():
    commands = readme_commands(README.read_text())
    assert len(commands) >= len(RUNS) + len(EXCLUDED)  # the parser finds them all
    accounted = {**RUNS, **EXCLUDED}
    assert not set(RUNS) & set(EXCLUDED)
    assert [c for c in commands if c not in accounted] == [], "neither run nor excluded"
    assert [c for c in accounted if c not in commands] == [], "no longer in the README"


@pytest.fixture(scope="module")
def project(small_dataset, specimen, tmp_path_factory) -> Path:  # noqa: F811
    """One project folder (PTYOPT_HOME, and where the commands run) holding the files
    the README's commands name, made from the small SrTiO3 dataset (8×8 positions, 48 px,
    300 kV, 25 mrad, 40 Å defocus, 0.5 Å steps) and a 5×4 abTEM scan."""
    folder = tmp_path_factory.mktemp("readme")
    patterns = small_dataset.patterns.astype(np.float32)  # (64, 48, 48) counts
    pitch = float(small_dataset.angular_sampling_mrad)
    optics = {"energy_kV": 300, "semiangle_mrad": 25}
    np.save(folder / "scan.npy", patterns.reshape(8, 8, 48, 48))
    (folder / "meta.yaml").write_text(
        yaml.safe_dump({**optics, "scan_step_A": 0.5, "detector_mrad_per_px": pitch})
    )
    with h5py.File(folder / "run.h5", "w") as file:
        file["entry/frames"] = patterns
        file["entry/positions"] = small_dataset.positions_A
    (folder / "run.yaml").write_text(yaml.safe_dump({**optics, "detector_mrad_per_px": pitch}))
    potential, truth, _ = specimen  # abTEM's potential of a 9.7 Å cell and its truth file
    scan = abtem.GridScan(start=(2.0, 3.0), end=(6.0, 5.4), gpts=(5, 4))
    scanned(potential, scan).to_zarr(str(folder / "sim.zarr"))
    (folder / "potential.h5").write_bytes(truth.read_bytes())
    # 128 px EMPAD frames: each 48 px pattern doubled to 96 px, so crop 96 and bin 2 give it
    frames = np.zeros((8, 8, 128, 128), np.float32)
    frames[..., 16:112, 16:112] = (
        np.kron(patterns, np.ones((2, 2), np.float32)).reshape(8, 8, 96, 96) / 4
    )
    write_empad(folder, frames, 0.5, pitch / 2, 300e3).rename(folder / "scan_x256_y256.xml")
    (folder / "microscope.yaml").write_text(yaml.safe_dump({**optics, "defocus_A": 40}))
    return folder


@pytest.fixture(scope="module")
def ran() -> set[str]:
    """The commands run so far in the module's project folder."""
    return set()


def run(project: Path, ran: set[str], command: str, how: Run) -> None:
    """Run ``command`` (after what it needs) in ``project``; fail on a nonzero exit."""
    for first in how.after:
        if first not in ran:
            run(project, ran, first, RUNS.get(first) or PREREQUISITES[first])
    env = {k: v for k, v in os.environ.items() if k not in ("PTYOPT_CACHE", "PTYOPT_JAX_CACHE")}
    env["PTYOPT_HOME"] = str(project)
    words = shlex.split(how.words or command)
    assert words[:2] == ["python", "-m"], words
    result = subprocess.run(
        [sys.executable, *words[1:], *how.extra],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    ran.add(command)


@pytest.mark.parametrize("command", list(RUNS), ids=lambda c: c.removeprefix("python -m ")[:50])
def test_readme_command_runs(project, ran, command):
    run(project, ran, command, RUNS[command])
