"""User-facing errors: the CLI prints them as one line and exits non-zero (no traceback)."""


class FtusegError(Exception):
    """An input or usage problem the user can fix; its message names the file/row and the problem."""


class RLEError(FtusegError, ValueError):
    """A malformed run-length encoding."""


class ImageReadError(FtusegError):
    """An image that cannot be read or decoded."""
