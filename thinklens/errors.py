"""Exception types. A ThinklensError is a user-facing problem (bad input, missing model): the CLI prints it in one
line, without a traceback, and exits 2."""


class ThinklensError(Exception):
    """A problem the user can fix; the message says what was wrong and where."""


class TraceError(ThinklensError, ValueError):
    """A text or token sequence that cannot be segmented into prompt / reasoning / answer."""


class ModelLoadError(ThinklensError, OSError):
    """A model that cannot be loaded (unreachable hub id, missing local directory)."""
