"""The exception types users see as a one-line error."""


class StargalError(Exception):
    """A problem with the user's input or data, reported as one line without a traceback."""


class CorruptFileError(StargalError, ValueError):
    """A file that exists but cannot be what it claims to be (invalid JSON, damaged content).

    Also a ValueError, so code that treats unreadable content as "absent or invalid" keeps working."""
