"""The one error type users see.

Anything a user can fix (a bad key, a missing file, an impossible split, no network for
hub weights) raises `SfpromptError` with a one-line message that names the culprit; the
CLI prints it and exits 2. Everything else is a bug and keeps its traceback.
"""


class SfpromptError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ConfigError(SfpromptError):
    """A configuration key with a bad value; the message starts with the dotted key."""


def first_line(err: BaseException) -> str:
    """The first line of `err`'s message, or its type's name when it has none: a foreign
    error (Ray's, a parser's) quoted inside a one-line message."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def one_line(err: BaseException, limit: int | None = None) -> str:
    """All of `err`'s message on one line (every run of whitespace, newlines included,
    becomes one space), cut at `limit` characters: for errors whose detail follows the
    first line (torch's state-dict mismatches, OS errors with a path)."""
    return " ".join(str(err).split())[:limit]
