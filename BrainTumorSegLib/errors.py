"""The one error type that carries a user-facing message about bad input."""
from __future__ import annotations

import os
from typing import Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


class InputError(Exception):
    """Bad input: a file (or role) and what is wrong with it, printed as one line.

    The CLI turns it into ``braintumorseg: error: <file>: <problem>`` and exit code 2.
    """

    def __init__(self, where: Optional[PathLike], problem: str) -> None:
        self.where = None if where is None else os.fspath(where)
        self.problem = problem
        super().__init__(f"{self.where}: {problem}" if self.where else problem)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a job stopped by Slicer, a batch system or ``kill``), raised as Ctrl-C's
    KeyboardInterrupt is, so that whatever was being written is removed on the way out."""


class Cancelled(Exception):
    """Raised when a caller's cancel event is set; nothing has been written."""
