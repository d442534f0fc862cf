"""Typed configuration from mappings: merge into a dataclass schema (OmegaConf
structured config) and turn its errors into a :class:`ConfigError` that names the key
and, for an unknown key, lists the keys allowed there."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from ptyopt.errors import ConfigError, UnknownKeyError


def _allowed_keys(schema: type, full_key: str) -> str:
    """ "; allowed keys: …" of the dataclass section that holds ``full_key``, or ""."""
    section: Any = schema
    for part in full_key.split(".")[:-1]:
        if not dataclasses.is_dataclass(section):
            return ""
        section = typing.get_type_hints(section).get(part)
    if not dataclasses.is_dataclass(section):
        return ""
    return "; allowed keys: " + ", ".join(f.name for f in dataclasses.fields(section))


def to_dataclass(schema: type, values: Any, prefix: str = "") -> Any:
    """An instance of the dataclass ``schema`` from ``values`` (dict or DictConfig).
    Unknown keys and wrong types raise :class:`ConfigError` naming ``prefix.key``."""
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        message = str(getattr(err, "msg", err)).splitlines()[0]
        where = f"{prefix + '.' if prefix else ''}{key}"
        if isinstance(err, ConfigKeyError):
            raise UnknownKeyError(f"{where}: {message}{_allowed_keys(schema, key)}") from None
        raise ConfigError(f"{where}: {message}") from None
