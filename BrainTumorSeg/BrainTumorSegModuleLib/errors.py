"""The one kind of error the module shows to the user."""
from __future__ import annotations


class ModuleError(Exception):
    """A problem to show in the module as one line (no traceback)."""


def one_line(exc: BaseException) -> str:
    """An exception's first line, or its type's name when it says nothing."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
