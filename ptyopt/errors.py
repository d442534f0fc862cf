"""Errors that ptyopt raises for bad input, each carrying a message fit for a user."""


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range; the
    message names the key and what is allowed."""


class UnknownKeyError(ConfigError):
    """A configuration names a key its schema does not have."""
