"""User-facing errors: the CLI prints them as one line and exits non-zero (no traceback)."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from typing import TextIO


class FtusegError(Exception):
    """An input or usage problem the user can fix; its message names the file/row and the problem."""


class RLEError(FtusegError, ValueError):
    """A malformed run-length encoding."""


class ImageReadError(FtusegError):
    """An image that cannot be read or decoded."""


class FtusegWarning(UserWarning):
    """A problem ftuseg worked around (a repaired polygon, an ignored class): one line naming the file."""


@contextlib.contextmanager
def one_line_warnings(stream: TextIO | None = None) -> Iterator[None]:
    """Show :class:`FtusegWarning` as ``ftuseg: warning: MESSAGE`` lines (Python's format adds the source
    line of the ``warnings.warn`` call, which means nothing to a user); other warnings are unchanged."""
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 (warnings' API)
            if issubclass(category, FtusegWarning):
                text = " ".join(str(message).split("\n"))
                print(f"ftuseg: warning: {text}", file=stream or sys.stderr, flush=True)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield
