"""User-facing errors.

Anything a user can cause (bad file, bad config, missing images) raises ``GscompError`` with a
one-line message. The CLI prints ``error: <message>`` and exits with status 2; it never shows a
traceback for these.
"""


class GscompError(Exception):
    """An error caused by the user's input, reported as one line without a traceback."""


class FormatError(GscompError):
    """A file is malformed, truncated, corrupt or of an unsupported kind."""


def one_line(e: BaseException, limit: int | None = None) -> str:
    """An exception's message squeezed onto one line (its type name when it has none), cut to
    ``limit`` characters."""
    return (" ".join(str(e).split()) or type(e).__name__)[:limit]
