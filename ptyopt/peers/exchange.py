"""The file exchange between ptyopt and a peer's worker process: named values in one
``.npz`` file, arrays as arrays and everything else as JSON.

Imports only NumPy and the standard library: worker scripts, which run in a peer's
own environment without ptyopt, import it as a sibling module (``import exchange``
after putting this folder on ``sys.path``)."""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any

import numpy as np

_JSON_NAMES = "__json__"


def save(path: str | Path, values: dict[str, Any]) -> None:
    """Write ``values`` to ``path``: NumPy arrays and numbers as arrays; dicts, lists,
    strings, booleans and ``None`` as JSON (0-d string arrays listed in ``__json__``)."""
    encoded, as_json = {}, []
    for name, value in values.items():
        if isinstance(value, (dict, list, tuple, str, bool)) or value is None:
            encoded[name] = np.array(json.dumps(value))
            as_json.append(name)
        else:
            encoded[name] = np.asarray(value)
    encoded[_JSON_NAMES] = np.array(json.dumps(as_json))
    np.savez(path, **encoded)


def load(path: str | Path) -> dict[str, Any]:
    """The values :func:`save` wrote to ``path``."""
    with np.load(path, allow_pickle=False) as saved:
        values = {name: saved[name] for name in saved.files}
    as_json = json.loads(str(values.pop(_JSON_NAMES, np.array("[]"))))
    return {
        name: json.loads(str(value)) if name in as_json else value for name, value in values.items()
    }


def peak_rss_MB() -> float:
    """This process's peak resident memory so far [MiB]: Linux's ``VmHWM`` of
    ``/proc/self/status``, the high-water mark of this program's own memory.
    ``ru_maxrss`` is not: Linux keeps it across ``execve``, so a worker started by a
    large parent reports the parent's peak (the fallback elsewhere, KiB there)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Lower this process's peak resident memory (``VmHWM``) to what it holds now, so
    that :func:`peak_rss_MB` then reports the peak of what follows (Linux ≥ 4.0: ``5``
    written to ``/proc/self/clear_refs``). False where that cannot be done: the peak
    then stays the whole process's."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True
