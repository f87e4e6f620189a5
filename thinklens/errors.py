"""Exception types. A ThinklensError is a user-facing problem (bad input, missing model): the CLI prints it in one
line, without a traceback, and exits 2."""


class ThinklensError(Exception):
    """A problem the user can fix; the message says what was wrong and where.

    >>> import thinklens as tl
    >>> try:
    ...     tl.RunConfig(limit=0)
    ... except tl.ThinklensError as err:
    ...     print(err)
    RunConfig.limit must be a positive integer, got 0
    """


class TraceError(ThinklensError, ValueError):
    """A text or token sequence that cannot be segmented into prompt / reasoning / answer.

    >>> import thinklens as tl
    >>> _, tokenizer, profile = tl.load_model("tiny-r1")
    >>> try:
    ...     tl.Trace.from_text("no delimiters here", tokenizer, profile)
    ... except tl.TraceError as err:
    ...     print(err)
    no reasoning delimiters ('<think>' / '</think>') found
    """


class ModelLoadError(ThinklensError, OSError):
    """A model that cannot be loaded (unreachable hub id, missing local directory).

    >>> import thinklens as tl
    >>> try:
    ...     tl.load_model("/no/such/model")
    ... except tl.ModelLoadError as err:
    ...     print(err)
    no such model directory: /no/such/model
    """


def report_skipped(bad: list[str], errors: list[str] | None) -> None:
    """Hand the ``file:line: reason`` lines of skipped records to the caller's ``errors`` list, or print each as
    ``skipped ...`` on stderr: a batch reader keeps the good records and loses no word about the bad ones.

    >>> errors = []
    >>> report_skipped(["p.csv:3: empty field(s) answer_a"], errors)
    >>> errors
    ['p.csv:3: empty field(s) answer_a']
    """
    if errors is not None:
        errors.extend(bad)
        return
    import sys

    for line in bad:
        print(f"skipped {line}", file=sys.stderr)
