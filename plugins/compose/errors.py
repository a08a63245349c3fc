"""A compose file's located errors: every problem names its file:line:column (``Source``), and a value of a
shape no check foresaw is still a located ``ComposeError``, never a traceback (``shape_errors``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from vicflow.plugins import yamlpos
from vicflow.plugins.errors import PermanentError

SHAPE_ERRORS = (ValueError, TypeError, AttributeError, KeyError, OSError)  # what a value of the wrong shape raises


class ComposeError(PermanentError):
    """A compose file problem, with file:line:column."""


@dataclass
class Source:
    """One parsed file, for error positions."""

    path: str
    located: yamlpos.Located

    def error(self, where: tuple, message: str, hint: str = "", key: bool = False) -> ComposeError:
        line, col = self.located.where(where, key=key)
        return ComposeError(f"{self.path}:{line}:{col}: {message}", hint or None)

    def unreadable(self, where: tuple, path: Path, what: str, hint: str = "") -> ComposeError | None:
        """The error for a file the compose file names that is not there to read, None if it is: missing, or a
        name the file system refuses (``Path.is_file()`` raises for a name over NAME_MAX, 255)."""
        problem = "does not exist"
        try:
            if path.is_file():
                return None
        except OSError as exc:
            problem = f"cannot be read: {exc.strerror}"
        return self.error(where, f"{what} {problem} ({str(path)[:300]})", hint)


@contextlib.contextmanager
def shape_errors(src: Source, path: tuple, what: str):
    """A value of a shape no check foresaw is still a located error of ``what``, never a traceback."""
    try:
        yield
    except ComposeError:
        raise
    except SHAPE_ERRORS as exc:
        raise src.error(path, f"invalid {what}: {type(exc).__name__}: {str(exc)[:200]}") from None
