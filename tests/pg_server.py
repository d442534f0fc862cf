"""A throwaway PostgreSQL server for the tests: Debian's ``postgresql`` binaries
(``initdb``, ``pg_ctl`` under /usr/lib/postgresql/<version>/bin, or on PATH), a data
directory in a fresh temporary folder, password (SCRAM) authentication, listening on
a free loopback port only, and a database ``ptyopt``; stopped (``-m immediate``) and
removed afterwards.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres``
system user (the package creates it) in a folder that user owns.

:func:`postgres_server` is the context manager (it raises :class:`PostgresUnavailable`
with the cause when no server can be started); :func:`postgres` is a session-scoped
pytest fixture over it that skips, with that cause as the printed reason, instead.
Import the fixture into a test module (``from pg_server import postgres``) to share one
server between the modules of a session. ``PTYOPT_REQUIRE_POSTGRES=1`` turns the skip
into a failure (for machines where PostgreSQL must work).

:func:`study_caches` (session-scoped) simulates the tiny study's dataset once, so that
the worker processes of the PostgreSQL and worker-kill tests share it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

DATABASE = "ptyopt"
USER = "ptyopt"
SYSTEM_USER = "postgres"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server could be started here; the message says why."""


@dataclass(frozen=True)
class PostgresServer:
    """A running server: ``url`` has no password (as in ``conf/storage/postgres.yaml``);
    ``url_with_password`` is for the tests' own connections."""

    url: str
    password: str
    port: int
    version: str
    folder: Path

    @property
    def url_with_password(self) -> str:
        return self.url.replace(f"{USER}@", f"{USER}:{self.password}@", 1)

    def create_database(self, name: str) -> str:
        """A new empty database on this server; returns its URL (no password)."""
        import psycopg

        with psycopg.connect(self.url_with_password, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + f"/{name}"


def _version_key(bin_dir: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", Path(bin_dir).parent.name)) or (0,)


def find_binaries() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``: the newest
    /usr/lib/postgresql/*/bin, else PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    for folder in candidates:
        if all(
            os.access(Path(folder) / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")
        ):
            return Path(folder)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found in "
        "/usr/lib/postgresql/*/bin or on PATH; "
        "install Debian's postgresql package (apt-get install postgresql), as .ci/run does"
    )


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _traversable(folder: Path) -> bool:
    """Can every user reach into ``folder`` (execute permission on it and each parent)?"""
    for part in [folder, *folder.parents]:
        if not part.stat().st_mode & stat.S_IXOTH:
            return False
    return True


def _scratch_folder() -> Path:
    """A new private folder whose parents another user can traverse (pytest's own
    tmp_path under /tmp/pytest-of-root is mode 0700, so it cannot be used)."""
    for parent in (tempfile.gettempdir(), "/tmp", "/var/tmp"):
        if Path(parent).is_dir() and _traversable(Path(parent)):
            return Path(tempfile.mkdtemp(prefix="ptyopt-pg-", dir=parent))
    raise PostgresUnavailable(
        "no temporary folder that the postgres user can reach (tried $TMPDIR, /tmp, /var/tmp)"
    )


class _Runner:
    """Runs the server's commands: directly, or as the postgres user when root."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.prefix: list[str] = []
        if os.geteuid() != 0:
            return
        try:
            account = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise PostgresUnavailable(
                f"running as root and there is no {SYSTEM_USER!r} system user "
                "to run the server as (PostgreSQL refuses root)"
            ) from None
        if shutil.which("runuser"):
            self.prefix = ["runuser", "-u", SYSTEM_USER, "--"]
        elif shutil.which("setpriv"):
            self.prefix = [
                "setpriv",
                f"--reuid={account.pw_uid}",
                f"--regid={account.pw_gid}",
                "--init-groups",
                "--",
            ]
        else:
            raise PostgresUnavailable(
                "running as root and neither runuser nor setpriv is available to run the server "
                "as the postgres user"
            )
        os.chown(folder, account.pw_uid, account.pw_gid)
        self.owner = (account.pw_uid, account.pw_gid)

    def own(self, path: Path) -> None:
        if self.prefix:
            os.chown(path, *self.owner)

    def __call__(self, *command: str | Path, timeout: float = 60) -> subprocess.CompletedProcess:
        # Output to a file, not a pipe: the server pg_ctl starts must not hold our pipe open.
        with tempfile.TemporaryFile() as output:
            env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PGTZ": "UTC"}
            env.pop("PGPASSWORD", None)
            result = subprocess.run(
                [*self.prefix, *map(str, command)],
                cwd=self.folder,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            )
            output.seek(0)
            result.stdout = output.read().decode(errors="replace")
        return result


def _tail(text: str, lines: int = 8) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


def _stop(runner: _Runner, bin_dir: Path, data: Path) -> None:
    """pg_ctl stop -m immediate; kill the postmaster if that does not work."""
    if not (data / "postmaster.pid").exists():
        return
    try:
        runner(
            bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "-t", "20", "stop", timeout=30
        )
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((data / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)


def _start(bin_dir: Path, folder: Path, runner: _Runner, attempts: int) -> PostgresServer:
    """initdb, pg_ctl start (a new free port on each attempt), createdb."""
    data = folder / "data"
    password = secrets.token_urlsafe(18)
    pwfile = folder / "pwfile"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    runner.own(pwfile)
    init = runner(
        bin_dir / "initdb",
        "-D",
        data,
        "-U",
        USER,
        f"--pwfile={pwfile}",
        "-A",
        "scram-sha-256",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
        timeout=120,
    )
    pwfile.unlink()
    if init.returncode != 0:
        raise PostgresUnavailable(
            f"initdb ({bin_dir}) failed with status {init.returncode}: {_tail(init.stdout)}"
        )
    log = folder / "server.log"
    for _ in range(attempts):
        port = free_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        start = runner(
            bin_dir / "pg_ctl",
            "-D",
            data,
            "-l",
            log,
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
            timeout=60,
        )
        if start.returncode == 0:
            break
        server_log = log.read_text(errors="replace") if log.exists() else ""
        _stop(runner, bin_dir, data)
    else:
        raise PostgresUnavailable(
            f"pg_ctl start failed with status {start.returncode}: {_tail(start.stdout, 3)}; "
            f"server log: {_tail(server_log)}"
        )
    created = subprocess.run(
        [bin_dir / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", USER, DATABASE],
        env={**os.environ, "PGPASSWORD": password},
        capture_output=True,
        text=True,
        timeout=30,
    )
    if created.returncode != 0:
        raise PostgresUnavailable(
            f"createdb {DATABASE} failed with status {created.returncode}: {_tail(created.stderr)}"
        )
    return PostgresServer(
        f"postgresql://{USER}@127.0.0.1:{port}/{DATABASE}",
        password,
        port,
        bin_dir.parent.name,
        folder,
    )


@contextlib.contextmanager
def postgres_server(attempts: int = 3) -> Iterator[PostgresServer]:
    """Start a throwaway server, yield it, stop it and delete its files. Raises
    :class:`PostgresUnavailable`, with the cause, when no server can be started."""
    bin_dir = find_binaries()
    folder = _scratch_folder()
    runner = None
    try:
        try:
            runner = _Runner(folder)
            server = _start(bin_dir, folder, runner, attempts)
        except subprocess.TimeoutExpired as err:
            raise PostgresUnavailable(
                f"{Path(str(err.cmd[len(runner.prefix) if runner else 0])).name} timed out "
                f"after {err.timeout} s"
            ) from None
        except OSError as err:
            raise PostgresUnavailable(f"cannot prepare the server: {err}") from None
        yield server
    finally:
        if runner is not None:
            _stop(runner, bin_dir, folder / "data")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole test session, or a skip that says why not."""
    try:
        import psycopg  # noqa: F401  (the driver ptyopt's postgres storage uses)
    except ImportError as err:
        _unavailable(f"the PostgreSQL driver is not installed ({err}); pip install -e '.[test]'")
    began = time.perf_counter()
    manager = postgres_server()
    try:
        server = manager.__enter__()
    except PostgresUnavailable as err:
        _unavailable(f"cannot start a PostgreSQL server: {err}")
    print(
        f"\nPostgreSQL {server.version} on 127.0.0.1:{server.port} started in "
        f"{time.perf_counter() - began:.1f} s"
    )
    try:
        yield server
    finally:
        manager.__exit__(None, None, None)


@pytest.fixture(scope="session")
def study_caches(tmp_path_factory) -> dict[str, str]:
    """Environment variables for worker processes: a simulation cache that already
    holds the tiny study's dataset (simulated here, once per session, in about a
    second) and one JAX compilation cache for all of them, so that workers neither
    simulate nor, after the first ones, compile."""
    from test_study import composed

    from ptyopt.data.cache import load_or_simulate
    from ptyopt.study.settings import validate

    folder = tmp_path_factory.mktemp("study-caches")
    config, _ = validate(composed("pruner=none"))
    load_or_simulate(config.dataset, cache=folder / "simulations", progress=False)
    return {"PTYOPT_CACHE": str(folder / "simulations"), "PTYOPT_JAX_CACHE": str(folder / "jax")}


def _unavailable(reason: str) -> None:
    if os.environ.get("PTYOPT_REQUIRE_POSTGRES", "") not in ("", "0"):
        pytest.fail(f"{reason} (PTYOPT_REQUIRE_POSTGRES is set)", pytrace=False)
    pytest.skip(reason)
