"""Atomic writes: a temporary file in the same folder, renamed over the target once complete,
removed if anything fails. ``replacing`` is the general form; ``write_text`` / ``write_json``
for small text files (CSV, JSON, HTML), ``write_bytes`` for small binary ones (PNG)."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any, Iterable, Iterator, Optional

from ..errors import InputError, PathLike


def check_not_input(out_path: PathLike, inputs: Iterable[Optional[PathLike]]) -> None:
    """Raise if ``out_path`` is one of ``inputs`` (never overwrite an input file); None is skipped."""
    out = os.path.realpath(os.fspath(out_path))
    if any(p is not None and os.path.realpath(os.fspath(p)) == out for p in inputs):
        raise InputError(out_path, "is an input file; refusing to overwrite it")


def write_text(path: PathLike, text: str, inputs: Iterable[PathLike] = ()) -> str:
    return write_bytes(path, text.encode("utf-8"), inputs)


def write_bytes(path: PathLike, data: bytes, inputs: Iterable[PathLike] = ()) -> str:
    """Write ``data`` to ``path`` atomically; the folder must exist and ``path`` must be no input."""
    p = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(p))
    if not os.path.isdir(folder):
        raise InputError(p, "output folder does not exist")
    check_not_input(p, inputs)
    with replacing(p) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return p


@contextlib.contextmanager
def replacing(path: PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary path beside ``path`` to write to; on success it gets the usual file mode
    and replaces ``path`` in one rename, on any failure it is removed. ``suffix`` matters to
    writers that choose the format by extension."""
    p = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=".btseg-", suffix=suffix, dir=os.path.dirname(os.path.abspath(p)))
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)  # mkstemp makes owner-only files; give the usual umask mode
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: PathLike, data: Any, inputs: Iterable[PathLike] = ()) -> str:
    return write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n", inputs)
