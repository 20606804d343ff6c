"""Errors that the CLI turns into one clear line and exit code 2 (no traceback)."""


class InputError(ValueError):
    """Bad user input: a file, row, field or option that is not what was expected.

    Raise it before any long work starts; the message should name the offending place and what
    was expected, e.g. ``demos.jsonl, row 12, field 'completion': expected a non-empty string``.
    """
