"""The toolkit's one error base class.

`ToolkitError` marks a *user-facing* problem: a bad file, key, value or a missing library, whose message is one
line naming what was wrong and what was expected. The command line prints such errors as one line and exits
non-zero; every other exception (a genuine bug) keeps its traceback. Subclasses also derive from the built-in
type callers historically caught (`ValueError`, `RuntimeError`), so `except ValueError` keeps working.
"""
from __future__ import annotations


class ToolkitError(Exception):
    """A user-facing problem; `str(exc)` is one line naming the file, key or value and what was expected."""


class UserInputError(ToolkitError, ValueError):
    """A bad argument or value given by the user (an option, a shape, a resolution)."""


class MissingDependencyError(ToolkitError, RuntimeError):
    """An optional library, driver or device that this operation needs is not available."""


def one_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
