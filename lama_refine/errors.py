"""The errors that are the user's to fix, not the program's.

The command-line tools print a `UserError` as its message alone (a few lines: what is wrong, the
value given, what to do) and exit with `exit_code`; every other exception is a bug and keeps its
traceback. Raise one wherever a user's input is checked, as low in the layers as the check is:
the message must make sense without the stack that led to it.
"""

from __future__ import annotations

import errno


class UserError(ValueError):
    """A mistake in what the user asked for: a key, a value, a path, a model, a device.

    `exit_code` 2 is a usage error (the command line itself is wrong); 1 is a problem met while
    doing what was asked (an outdir that cannot be written, a full disk)."""

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


# Plain words for the OS errors a user can meet while files are written; the rest keep strerror.
_OS_WORDS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "is a folder",
    errno.ENOENT: "no such file or folder",
    errno.ENAMETOOLONG: "file name too long",
}


def describe_os_error(error: OSError) -> str:
    """An OSError in a few plain words ("no space left on device"), without Python's
    `[Errno 28]` prefix; the path, where the error names one, is left to the caller."""
    words = _OS_WORDS.get(error.errno or -1)
    if words:
        return words
    return error.strerror or str(error) or type(error).__name__


__all__ = ["UserError", "describe_os_error"]
