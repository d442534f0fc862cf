"""PostgreSQL storage on a real server (tests/pg_server.py, loopback, password from
$PTYOPT_DB_PASSWORD): four worker processes run the same study command and together
run the budget exactly, every trial once; workers started together on a fresh
database all open it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter

import optuna
from conftest import EAGER_PRUNING, TINY_STUDY

from ptyopt.study.runner import _counted

pytest_plugins = [
    "pg_server"
]  # session-scoped `postgres` and `study_caches`, shared with test_worker_kill.py

State = optuna.trial.TrialState
TINY = TINY_STUDY + EAGER_PRUNING
WORKERS = 4
BUDGET = 8
# Trials of about 0.3 s (seconds while four workers start on two cores), so that every
# worker gets one before the budget is spent.
SLOWER = ["plan.engines.0.iterations=40", "pruner=none"]


def postgres_command(server, name: str, budget: int, *extra: str) -> list[str]:
    """The study command on the server's database (URL without the password),
    heartbeats every second, a dead worker's trial failed 4 s after its last one."""
    return [
        sys.executable, "-m", "ptyopt", "study=quickstart", *TINY, *extra,
        f"study.name={name}", f"study.n_trials={budget}",
        "storage=postgres", f"storage.url={server.url}",
        "storage.heartbeat_interval_s=1", "storage.grace_period_s=4",
    ]  # fmt: skip


def worker_env(home, server, caches: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **caches, "PTYOPT_HOME": str(home), "PTYOPT_DB_PASSWORD": server.password}


def stop_all(processes: list[subprocess.Popen]) -> None:
    """Kill what still runs and reap everything (a reaped pid is a dead pid)."""
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def failures(workers: list[subprocess.Popen], outputs: list[tuple[str, str]]) -> str:
    return "\n".join(
        f"worker {w.pid} exited {w.returncode}: {err[-1500:]}"
        for w, (_, err) in zip(workers, outputs, strict=True)
        if w.returncode
    )


def open_study(server, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=server.url_with_password)


def create_tables(server) -> None:
    """Optuna's tables in the server's database, as a first worker leaves them (workers
    that all start on an empty database are the next test's subject)."""
    optuna.storages.RDBStorage(server.url_with_password).engine.dispose()


def test_four_workers_share_a_postgres_study(postgres, study_caches, tmp_path):
    env = worker_env(tmp_path, postgres, study_caches)
    create_tables(postgres)
    command = postgres_command(postgres, "pg_workers", BUDGET, *SLOWER)
    began = time.perf_counter()
    workers = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(WORKERS)
    ]
    try:
        # A guard against a hung worker, not a timing check: generous for a loaded machine
        # (150 s timed out while the test suite shared the CPU with a study).
        outputs = [worker.communicate(timeout=400) for worker in workers]
    finally:
        stop_all(workers)
    seconds = time.perf_counter() - began
    assert [w.returncode for w in workers] == [0] * WORKERS, failures(workers, outputs)

    study = open_study(postgres, "pg_workers")  # readable with optuna.load_study
    trials = study.trials
    assert sorted(t.number for t in trials) == list(
        range(BUDGET)
    )  # the budget exactly; numbers unique and consecutive
    assert [t.state for t in trials] == [State.COMPLETE] * BUDGET and _counted(study) == BUDGET
    assert all(0 < t.value < 1 for t in trials)
    assert len({t.user_attrs["trial_dir"] for t in trials}) == BUDGET
    per_worker = Counter(t.user_attrs["pid"] for t in trials)
    assert set(per_worker) == {w.pid for w in workers}, (
        f"every worker runs a trial; trials per worker pid: {dict(per_worker)}"
    )
    alike = Counter(tuple(sorted(t.params.items())) for t in trials)
    repeated = [p for p, n in alike.items() if n > 1]
    assert len(alike) == BUDGET, (
        "no two trials alike; repeated: "
        f"{[[t.number for t in trials if tuple(sorted(t.params.items())) == p] for p in repeated]}"
    )
    print(
        f"\n{WORKERS} workers ran {BUDGET} trials in {seconds:.1f} s; "
        f"trials per worker {sorted(per_worker.values())}"
    )


OPEN_STORAGE = """
import sys, time
from pathlib import Path
import optuna
from ptyopt.study.components import make_storage
from ptyopt.study.settings import StorageSettings
start_at, folder, urls = float(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
failed = 0
for round, url in enumerate(urls):
    time.sleep(max(0.0, start_at + 0.5 * round - time.time()))
    try:
        storage = make_storage(
            StorageSettings(kind="postgres", url=url, heartbeat_interval_s=1, grace_period_s=4),
            folder,
        )
        optuna.create_study(storage=storage, study_name="fresh", load_if_exists=True)
    except Exception as err:
        failed += 1
        print(f"{url.rsplit('/', 1)[1]}: {type(err).__name__}: {err}", file=sys.stderr)
sys.exit(failed)
"""
ROUNDS = 4


def test_workers_open_a_fresh_database_together(postgres, tmp_path):
    """Workers launched at the same moment on an empty database each create Optuna's
    tables (ptyopt's make_storage, then create_study): none may fail. Four rounds, a
    fresh database each, as the race does not show every time."""
    urls = [postgres.create_database(f"fresh{round}") for round in range(ROUNDS)]
    env = {**os.environ, "PTYOPT_HOME": str(tmp_path), "PTYOPT_DB_PASSWORD": postgres.password}
    start_at = time.time() + 2.5  # once every interpreter has imported ptyopt
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_STORAGE, str(start_at), str(tmp_path / f"w{i}"), *urls],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(WORKERS)
    ]
    try:
        outputs = [worker.communicate(timeout=60) for worker in workers]
    finally:
        stop_all(workers)
    reasons = sorted(
        {line for _, err in outputs for line in err.splitlines() if line.startswith("fresh")}
    )
    assert [w.returncode for w in workers] == [0] * WORKERS, (
        f"{sum(w.returncode for w in workers)} of {WORKERS * ROUNDS} openings failed:\n"
        + "\n".join(reasons)
    )
    for url in urls:
        summaries = optuna.get_all_study_summaries(
            storage=url.replace("ptyopt@", f"ptyopt:{postgres.password}@")
        )
        assert [s.study_name for s in summaries] == ["fresh"]
