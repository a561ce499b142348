"""Atomic writes of small text files (CSV, JSON): temporary file in the same folder, then rename."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Iterable

from .errors import InputError, PathLike


def write_text(path: PathLike, text: str, inputs: Iterable[PathLike] = ()) -> str:
    p = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(p))
    if not os.path.isdir(folder):
        raise InputError(p, "output folder does not exist")
    real = os.path.realpath(p)
    if any(i is not None and os.path.realpath(os.fspath(i)) == real for i in inputs):
        raise InputError(p, "is an input file; refusing to overwrite it")
    fd, tmp = tempfile.mkstemp(prefix=".btseg-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def write_json(path: PathLike, data: Any, inputs: Iterable[PathLike] = ()) -> str:
    return write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n", inputs)
