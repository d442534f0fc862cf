"""The device suite: its report folder names the device, and a step that fails or
overruns its share of the budget is reported and stopped with every process it started,
without stopping the suite."""

import time
from pathlib import Path

from ptyopt.benchmarks.device_suite import STEPS, Step, device_folder, run_steps


def test_report_folder_names_the_device():
    assert device_folder("NVIDIA H200") == "device_nvidia_h200"
    assert device_folder("Tesla V100-SXM2-16GB") == "device_tesla_v100_sxm2_16gb"
    assert device_folder("cpu") == "device_cpu"


def test_shares_of_the_budget_sum_to_one():
    assert abs(sum(step.share for step in STEPS) - 1) < 1e-9


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" not in status.read_text()  # a zombie has ended
    except FileNotFoundError:
        return False


def test_failing_and_overrunning_steps_are_reported_and_stopped(tmp_path, monkeypatch):
    (tmp_path / "failer.py").write_text("raise SystemExit(3)\n")
    (tmp_path / "sleeper.py").write_text(
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "open(sys.argv[-1], 'w').write(str(child.pid))\n"
        "time.sleep(120)\n"
    )
    (tmp_path / "quick.py").write_text("import sys; open(sys.argv[-1], 'w').write('done')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    steps = [
        Step("failer", (), "a", 0.2),
        Step("sleeper", (), "b", 0.6),
        Step("quick", (), "c", 0.2),
    ]
    started = time.monotonic()
    lines = run_steps(steps, tmp_path, budget_s=8)
    assert time.monotonic() - started < 30
    assert "failed (exit 3)" in lines[0]
    assert "stopped at its time limit" in lines[1]
    assert lines[2].startswith("quick: ok")  # the suite went on after both
    assert (tmp_path / "c.md").read_text() == "done"
    grandchild = int((tmp_path / "b.md").read_text())
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(grandchild)
