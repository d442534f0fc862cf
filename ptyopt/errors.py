"""Errors that ptyopt raises for bad input, each carrying a message fit for a user, and
the warnings it prints for legal input that is usually a mistake (:func:`warn`)."""

from __future__ import annotations

import difflib
import re
import sys


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range; the
    message names the key and what is allowed."""


class UnknownKeyError(ConfigError):
    """A configuration names a key its schema does not have."""


def did_you_mean(value: str, options: list[str]) -> str:
    """``; did you mean X?`` for the option X closest to ``value``, or ``""``."""
    close = difflib.get_close_matches(value, options, n=1)
    return f"; did you mean {close[0]}?" if close else ""


def hydra_message(err: Exception) -> str:
    """One line for an error of Hydra's composition, naming the key: an unknown option
    of a config group (with the options), an override that does not parse, an unknown
    key given without ``+``; any other error as its type and message on one line."""
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )

    if isinstance(err, MissingConfigException) and err.options and err.missing_cfg_file:
        group, _, option = err.missing_cfg_file.partition("/")
        return (
            f"{group}: unknown option {option!r}; choose one of {', '.join(err.options)}"
            + did_you_mean(option, err.options)
        )
    if isinstance(err, OverrideParseException):
        key = err.override.split("=")[0].lstrip("+~")
        reasons = [
            line
            for line in err.message.splitlines()
            if not line.startswith(("See https", "Error parsing override"))
        ]
        return (
            f"{key}: cannot parse the override {err.override!r} ({'; '.join(reasons)}); "
            "the syntax is https://hydra.cc/docs/1.2/advanced/override_grammar/basic"
        )
    found = re.match(r"Could not override '([^']+)'", str(err))
    cause = err.__cause__
    if isinstance(err, ConfigCompositionException) and found and hasattr(cause, "full_key"):
        key = found.group(1)
        parent = getattr(cause, "parent_node", None)
        keys = parent.keys() if hasattr(parent, "keys") else []
        allowed = [str(k) for k in keys if k != "hydra"]
        return (
            f"{key}: unknown key {cause.full_key!r} (+{key}=... adds a new key)"
            + (f"; allowed keys: {', '.join(allowed)}" if allowed else "")
            + did_you_mean(str(cause.key), allowed)
        )
    if found := re.match(r"Could not delete from config\. '([^']+)' does not exist", str(err)):
        return f"{found.group(1)}: cannot delete it (~): there is no such key"
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def warn(message: str) -> None:
    """Tell the user of something legal that is usually a mistake: one line on stderr,
    ``ptyopt: warning: <message>``; the run goes on."""
    print(f"ptyopt: warning: {' '.join(message.split())}", file=sys.stderr)
