"""Errors that the CLI turns into one clear line (no traceback): exit code 2 for bad input, 1 for a
run that failed."""


class InputError(ValueError):
    """Bad user input: a file, row, field or option that is not what was expected.

    Raise it before any long work starts; the message should name the offending place and what
    was expected, e.g. ``demos.jsonl, row 12, field 'completion': expected a non-empty string``.
    """


class RunFailed(RuntimeError):
    """Work that started and failed (jobs of a bench or protocol, a diverged reward): the message says
    what failed and where to look; the CLI prints it as one line and exits with code 1."""
