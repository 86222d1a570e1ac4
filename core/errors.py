"""User-facing errors: the CLI prints ``error: <message>`` on one line and exits with code 2."""


class UserError(Exception):
    """A mistake the user can fix (bad flag, missing data, foreign run directory...)."""
