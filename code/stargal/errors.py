"""The one exception type users see as a one-line error."""


class StargalError(Exception):
    """A problem with the user's input or data, reported as one line without a traceback."""
