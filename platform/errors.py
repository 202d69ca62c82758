"""The one error type users see.

Anything a user can fix (a bad key, a missing file, an impossible split, no network for
hub weights) raises `SfpromptError` with a one-line message that names the culprit; the
CLI prints it and exits 2. Everything else is a bug and keeps its traceback.
"""


class SfpromptError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ConfigError(SfpromptError):
    """A configuration key with a bad value; the message starts with the dotted key."""
