"""Errors that the CLI turns into one clear line and an exit code."""


class PigError(Exception):
    """A known, user-facing failure: printed as one line, exit code 1."""

    exit_code = 1


class UsageError(PigError):
    """Bad arguments or options: exit code 2."""

    exit_code = 2


class StaleInputError(PigError):
    """An input file made by another model or schema: the message says which stage to rerun."""
