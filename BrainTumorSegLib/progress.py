"""The machine-readable progress protocol between a background command and whoever runs it (the
Slicer module): with ``BRAINTUMORSEG_PROGRESS=lines`` in its environment, a command prints lines
``progress STAGE FRACTION`` on stdout (the stage may hold spaces; the fraction is 0..1). The
writer and the parser live here together."""
from __future__ import annotations

import os
from typing import Callable, Optional, Tuple

ENV = "BRAINTUMORSEG_PROGRESS"
PREFIX = "progress "
Progress = Callable[[str, float], None]   # how the library reports: (stage, fraction 0..1)


def lines_wanted() -> bool:
    """Whether this process should print progress lines (its runner asked for them)."""
    return os.environ.get(ENV) == "lines"


def format_line(stage: str, fraction: float) -> str:
    return f"{PREFIX}{stage} {fraction:.4f}"


def parse_line(line: str) -> Optional[Tuple[str, float]]:
    """(stage, fraction) from a progress line, or None for any other line."""
    if not line.startswith(PREFIX):
        return None
    stage, _, value = line[len(PREFIX):].rstrip("\n").rpartition(" ")
    try:
        return stage, float(value)
    except ValueError:
        return None
