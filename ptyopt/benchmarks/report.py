"""Writing benchmark reports: the environment header, the table as markdown and CSV."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import pandas as pd


def environment_lines() -> list[str]:
    """Markdown bullet lines: date, machine, versions, JAX devices, XLA_FLAGS."""
    versions = ", ".join(
        f"{name} {importlib.metadata.version(name)}"
        for name in ("ptyopt", "optax", "optuna", "abtem", "numpy")
    )
    return [
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        (
            f"- machine: {platform.processor() or platform.machine()}, "
            f"os.cpu_count() = {os.cpu_count()}, Python {platform.python_version()}"
        ),
        f"- jax {jax.__version__}, devices {jax.devices()}; {versions}",
        f"- XLA_FLAGS: `{os.environ.get('XLA_FLAGS', '')}`",
    ]


def regenerate_command(module: str, argv: Sequence[str] | None) -> str:
    """The shell command that reruns ``python -m module`` with these arguments."""
    return shlex.join(
        [Path(sys.executable).name, "-m", module, *(sys.argv[1:] if argv is None else argv)]
    )


def write_report(
    path: Path, title: str, lines: Sequence[str], table: pd.DataFrame, decimals: dict[str, int]
) -> None:
    """Write ``# title``, the environment, ``lines`` and the table to ``path`` (markdown)
    and the table to ``path`` with suffix .csv; print the table."""
    markdown = table.round(decimals).to_markdown(index=False, floatfmt="g")
    print(markdown)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([f"# {title}", "", *environment_lines(), *lines, "", markdown, ""]))
    table.to_csv(path.with_suffix(".csv"), index=False)
    print(f"wrote {path} and {path.with_suffix('.csv')}")
