"""Exceptions for expected failures (bad input, missing files).

The CLI prints these as one line without a traceback; anything else is a bug and keeps its traceback.
"""


class TrajembError(Exception):
    """Base class of every expected, user-facing error. The message is kept to one line (line breaks
    in a wrapped library message or in a value read from a file become spaces)."""

    def __init__(self, message: object = "") -> None:
        super().__init__(" ".join(str(message).split()))


class DataError(TrajembError):
    """An input file or folder is missing, unreadable or violates its schema."""


class ConfigError(TrajembError):
    """A configuration value is out of range or inconsistent.

    ``fields`` names the config fields the message speaks of, by their field names as written in the
    message (``batch_size``): the CLI replaces them with the flags that set them (``--batch-size``).
    """

    def __init__(self, message: object = "", *, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields
