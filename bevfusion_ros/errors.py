"""Exceptions shared across the package (no heavy imports, so every module can raise them)."""


class UserError(Exception):
    """An error the user can fix (wrong path, unknown scene, corrupt file, bad parameter).

    The CLI prints it as one line and exits with status 2; nodes log it once and count it.
    """
