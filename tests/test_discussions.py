"""The hand-written ``discussion.md`` of each published report quotes its generated tables.

Three checks on the shipped files, no computation beyond reading them:

- every number with three or more decimals in a discussion is a value of a CSV table of
  its report folder, or of a report folder it links to, as quoted (rounded to the
  quoted decimals), unless :data:`NOT_FROM_TABLES` says what else it is;
- every phaser verdict quoted as ``**verdict** (`arm`)`` is the one the findings table
  computes from the shipped ``sweeps.csv`` (:func:`ptyopt.study.comparison.findings_table`),
  and none is written in other words (a bold **yes** or **no**);
- every count ``at X Å … for N of M arms`` of the FRC resolution is the count in ``arms.csv``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from ptyopt.study.comparison import findings_table

REPORTS = Path(__file__).resolve().parents[1] / "reports"
DISCUSSIONS = sorted(REPORTS.glob("*/discussion.md"))
#: Numbers a discussion quotes that are no table value: (report, number) → what it is.
NOT_FROM_TABLES = {
    ("calibration", "0.0197"): "the electron wavelength at 300 kV [Å]",
    ("calibration", "0.048"): "a position moved by a 0.5° rotation at 5.5 Å [Å]",
    ("calibration", "0.183"): "the object pixel [Å]",
    ("calibration", "0.096"): "the rotation error, recovered 2.096° − true 2°",
    ("depth_sectioning", "0.007"): "the ground truth's own depth error (tests/test_depth.py)",
    ("depth_sectioning", "0.005"): "the Adam learning rate of the sweep (its config)",
    ("engine_comparison", "0.001"): "how far the scores moved between two runs",
    ("regularization_impact", "0.0005"): "how far the scores moved between two runs",
    ("schedule_comparison", "0.003"): "the lower end of the searched learning rate",
    ("truth_free", "0.183"): "the object pixel [Å]",
}
_DECIMAL = re.compile(r"(?<![\d.])\d+\.(\d{3,})(?!\d)")
_LINKED = re.compile(r"(?:\.\./|reports/)([a-z_]+)/")


def _table_values(folder: Path) -> list[float]:
    """Every number in the CSV tables of ``folder``, those inside text cells
    (``best_params``, ranges) included."""
    values: list[float] = []
    for csv in folder.glob("*.csv"):
        table = pd.read_csv(csv)
        for column in table.columns:
            values += list(pd.to_numeric(table[column], errors="coerce").dropna())
            text = " ".join(table[column].dropna().astype(str))
            values += [float(n) for n in re.findall(r"\d+\.\d+(?:e[-+]?\d+)?", text)]
    return values


def _quoted(value: float, decimals: int, values: list[float]) -> bool:
    """Whether ``value`` (quoted with ``decimals``) is one of ``values`` rounded."""
    half = 0.5 * 10.0**-decimals * (1 + 1e-6)
    return any(abs(v - value) <= half for v in values)


@pytest.mark.parametrize("path", DISCUSSIONS, ids=lambda p: p.parent.name)
def test_discussion_numbers_are_table_values(path):
    text = path.read_text()
    folders = [path.parent, *(REPORTS / name for name in _LINKED.findall(text))]
    values = [
        v for folder in dict.fromkeys(folders) if folder.is_dir() for v in _table_values(folder)
    ]
    stray = [
        m.group(0)
        for m in _DECIMAL.finditer(text)
        if (path.parent.name, m.group(0)) not in NOT_FROM_TABLES
        and not _quoted(float(m.group(0)), len(m.group(1)), values)
    ]
    assert stray == [], f"{path.parent.name}: numbers in no table: {stray}"


@pytest.mark.parametrize("path", DISCUSSIONS, ids=lambda p: p.parent.name)
def test_discussion_verdicts_are_the_findings_table(path):
    quoted = re.findall(
        r"\*\*(reproduced|partly|not reproduced)\*\* \(`([a-z_0-9]+)`\)", path.read_text()
    )
    sweeps = path.parent / "sweeps.csv"
    if not sweeps.exists():
        assert quoted == []
        return
    bare = [line for line in path.read_text().splitlines() if re.search(r"\*\*(yes|no)\b", line)]
    assert bare == [], "a verdict is quoted as the findings table words it, with its arm"
    verdicts = findings_table(pd.read_csv(sweeps)).set_index("arm")["verdict"]
    assert {arm: verdict for verdict, arm in quoted} == {arm: verdicts[arm] for _, arm in quoted}


@pytest.mark.parametrize("path", DISCUSSIONS, ids=lambda p: p.parent.name)
def test_discussion_frc_counts_are_the_arms_table(path):
    for at, n, m in re.findall(r"at (\d\.\d+) Å[^.]*? for (\d+) of (\d+) arms", path.read_text()):
        frc = pd.read_csv(path.parent / "arms.csv")["frc_resolution_A"]
        assert (int(n), int(m)) == (int((frc.round(len(at) - 2) == float(at)).sum()), len(frc))
