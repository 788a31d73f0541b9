"""The errors derain raises on purpose, in one hierarchy.

:class:`DerainError` is the base. :class:`UserError` is input the user can fix (a file that is not an
image, weights that do not fit, a missing data folder, an option value that cannot be used): the
command line prints it as one line. Any other exception that reaches the command line is a bug in
derain, printed with a hint to rerun for the traceback. Each kind of input has its own subclass
beside the module that reads it (``ImageReadError``, ``CheckpointError``, ``ConfigError``,
``DatasetError``, ``VideoError``, ...); :class:`InvalidArgument` covers argument and option values.

>>> issubclass(InvalidArgument, UserError) and issubclass(InvalidArgument, ValueError)
True
>>> InvalidArgument("strength must be from 0 to 1", option="--strength").option
'--strength'
"""

from __future__ import annotations

__all__ = ["DerainError", "UserError", "InvalidArgument"]


class DerainError(Exception):
    """Base of the errors derain raises on purpose."""


class UserError(DerainError):
    """Input the user can fix; its message is one line that names the input and what is wrong with it."""


class InvalidArgument(UserError, ValueError):
    """An argument or option value that cannot be used: out of range, unknown, or at odds with another.

    ``option`` names the command-line option it comes from, where there is one (the CLI then reports a
    usage error, exit code 2).
    """

    def __init__(self, message: str, *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option
