"""The exception types users see as a one-line error, and how to find the cause hidden inside another."""

from __future__ import annotations

from collections.abc import Iterator


class StargalError(Exception):
    """A problem with the user's input or data, reported as one line without a traceback."""


class CorruptFileError(StargalError, ValueError):
    """A file that exists but cannot be what it claims to be (invalid JSON, damaged content).

    Also a ValueError, so code that treats unreadable content as "absent or invalid" keeps working."""


def exception_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling, outermost first, each once (a library's
    wrapper hides the OSError or sqlite3 error that tells what happened)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__
