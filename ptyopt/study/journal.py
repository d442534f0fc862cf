"""Integrity of a journal-file study storage before it is opened.

Optuna's :class:`~optuna.storages.journal.JournalFileBackend` (Optuna 5) appends one JSON
object per record, each on a line of its own ending in ``\\n``, under a lock file
(``journal.log.lock``). A writer killed mid-append (a power cut, a killed node) leaves
an incomplete last line; Optuna skips it on reading, but the next append continues that
line, and from then on the journal cannot be read at all. So before a journal is opened
its last record is checked, under the writers' lock: an incomplete or undecodable last
line is cut off (a complete JSON record that only lacks its newline gets the newline),
after copying the file to ``journal.log.damaged-<UTC time>``. A line that is not a
record anywhere before the last one is damage that cannot be repaired safely: a
ConfigError naming the file and the line.

A Ctrl-C must not land inside an append either: the interrupted writer would leave its
lock file behind, and the study's next write (the interrupted trial's FAIL) would wait
the lock's grace period (30 s) first. :class:`InterruptSafeJournalFile` defers SIGINT
until its append is complete.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.storages.journal._file import get_lock_file

from ptyopt.errors import ConfigError


def _is_record(line: bytes) -> bool:
    """Whether ``line`` (without its newline) is one JSON object."""
    try:
        return isinstance(json.loads(line), dict)
    except (ValueError, UnicodeDecodeError):
        return False


def _tail_damage(path: Path) -> tuple[int, bytes, int] | None:
    """``None`` if every line of the journal at ``path`` is a complete record, else
    (byte offset of the damaged last line, its bytes, its line number from 1). A damaged
    line before the last raises a ConfigError."""
    lines = path.read_bytes().split(b"\n")  # ends in "\n": its last piece is empty
    n_lines = len(lines) - (lines[-1] == b"")
    offset = 0
    for number, line in enumerate(lines[:-1], start=1):
        if not _is_record(line):
            if number == n_lines:
                return offset, line + b"\n", number  # the last line: undecodable
            raise ConfigError(
                f"storage: the journal {path} is damaged at line {number} of {n_lines} "
                "(not a complete JSON record), before its end; it cannot be repaired "
                "safely: restore it from a backup, or run the study under another study.name"
            )
        offset += len(line) + 1
    if lines[-1] == b"":
        return None
    return offset, lines[-1], len(lines)


def repair_journal(path: Path) -> Path | None:
    """Cut an incomplete or undecodable last record off the journal at ``path`` (a
    complete record lacking only its newline is completed instead), keeping a copy of
    the damaged file beside it, and say so in one line on stderr. Returns the copy's
    path, ``None`` where the journal was sound (or does not exist yet)."""
    if not path.is_file() or _tail_damage(path) is None:  # the common case: no lock taken
        return None
    with get_lock_file(JournalFileSymlinkLock(str(path))):  # no writer is mid-append
        damage = _tail_damage(path)
        if damage is None:
            return None
        offset, line, number = damage
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        backup = path.with_name(f"{path.name}.damaged-{stamp}")
        for again in range(1, 1000):  # another repair within the same second
            if not backup.exists():
                break
            backup = path.with_name(f"{path.name}.damaged-{stamp}-{again}")
        shutil.copy2(path, backup)
        if _is_record(line):
            with open(path, "ab") as journal:
                journal.write(b"\n")
            what = f"completed line {number} (a whole record without its newline)"
        else:
            with open(path, "r+b") as journal:
                journal.truncate(offset)
            what = f"cut off its incomplete last line {number} ({len(line)} bytes)"
    print(
        f"ptyopt: repaired the journal {path}: {what}; the damaged file is kept as {backup}",
        file=sys.stderr,
    )
    return backup


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Run the body with SIGINT held back: a Ctrl-C during it is handled (by the handler
    that was installed before, Python's KeyboardInterrupt by default) once it is done.
    Only the main thread receives signals; elsewhere the body just runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, _frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received and callable(previous):
            previous(signal.SIGINT, None)


class InterruptSafeJournalFile(JournalFileBackend):
    """Optuna's journal file whose appends complete before a Ctrl-C takes effect
    (:func:`deferred_interrupt`), so that an interrupted study leaves neither its lock
    file nor a partial record behind."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        with deferred_interrupt():
            super().append_logs(logs)
