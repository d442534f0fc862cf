"""A study's identity: what its trials' scores mean, stored with the study when it is
created (user attribute :data:`IDENTITY`) and checked on every resume, so that trials
scored on another dataset, another plan or another objective never mix with its own.

The identity is the dataset file's SHA-256 (and its path, for the message), the plan
the search space varies (the base plan; the trials' own parameters are not part of it)
and the objective's metrics, directions and held-out positions (its iterate is checked by
:func:`ptyopt.study.runner.open_study`). The budget, sampler, pruner and storage may
change between runs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import optuna

from ptyopt.errors import ConfigError

#: Study user attribute holding the identity.
IDENTITY = "identity"
_CHUNK = 1 << 22


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def study_identity(
    dataset_path: Path,
    plan_values: dict,
    metrics: list[str],
    directions: list[str],
    held_out: dict[str, Any],
) -> dict[str, Any]:
    """The identity of a study run on ``dataset_path`` with the base plan
    ``plan_values``, the objective and ``held_out``, the positions it withholds from
    every reconstruction (``objective.validation_fraction`` and ``validation_seed``)
    (JSON-compatible)."""
    return {
        "dataset_sha256": file_sha256(dataset_path),
        "dataset_path": str(dataset_path),
        "plan": json.loads(json.dumps(plan_values, sort_keys=True)),
        "objective": {"metrics": list(metrics), "directions": list(directions), **held_out},
    }


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted path → leaf value of nested dicts and lists."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What changed from ``stored`` to ``current``, one phrase each (empty: the same)."""
    changes = []
    if stored["dataset_sha256"] != current["dataset_sha256"]:
        changes.append(
            f"the dataset (created on {stored['dataset_path']}, sha256 "
            f"{stored['dataset_sha256'][:12]}; now {current['dataset_path']}, sha256 "
            f"{current['dataset_sha256'][:12]})"
        )
    old, new = _flat(stored["plan"], "plan"), _flat(current["plan"], "plan")
    changed = sorted(path for path in old.keys() | new.keys() if old.get(path) != new.get(path))
    if changed:
        shown = ", ".join(f"{p}: {old.get(p)!r} → {new.get(p)!r}" for p in changed[:3])
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        changes.append(f"the plan ({shown}{more})")
    if stored["objective"] != current["objective"]:
        changes.append(f"the objective ({stored['objective']} → {current['objective']})")
    return changes


def check_identity(study: optuna.Study, identity: dict[str, Any]) -> None:
    """Store ``identity`` with a study that has none (new, or created before identities
    were kept); raise :class:`ConfigError` naming what changed if it differs."""
    stored = study.user_attrs.get(IDENTITY)
    if stored is None:
        study.set_user_attr(IDENTITY, identity)
        return
    if changes := differences(stored, identity):
        raise ConfigError(
            f"study.name: study {study.study_name!r} was created with other settings; "
            f"resuming it would mix trials: {'; '.join(changes)}. Resume it as it was, "
            "or choose another study.name"
        )
