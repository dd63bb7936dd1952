"""Exceptions for expected failures (bad input, missing files).

The CLI prints these as one line without a traceback; anything else is a bug and keeps its traceback.
"""


class TrajembError(Exception):
    """Base class of every expected, user-facing error."""


class DataError(TrajembError):
    """An input file or folder is missing, unreadable or violates its schema."""


class ConfigError(TrajembError):
    """A configuration value is out of range or inconsistent."""
