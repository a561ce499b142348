"""Atomic writes: a temporary file in the same folder, renamed over the target once complete,
removed if anything fails. ``replacing`` is the general form; ``write_text`` / ``write_json``
for small text files (CSV, JSON, HTML), ``write_bytes`` for small binary ones (PNG).
``together`` makes several writes one: each is renamed into place only when the last is complete,
so a failure or Ctrl-C while writing a case's files leaves none of them."""
from __future__ import annotations

import contextlib
import contextvars
import json
import os
import shutil
import tempfile
from typing import Any, Iterable, Iterator, List, Optional, Tuple

from ..errors import InputError, PathLike

Moves = List[Tuple[str, str]]  # (complete temporary file, its final name), renamed in this order


def check_not_input(out_path: PathLike, inputs: Iterable[Optional[PathLike]], output: Optional[PathLike] = None) -> None:
    """Raise if ``out_path`` is one of ``inputs`` (never overwrite an input file); None is skipped.
    ``output``: the output whose data file ``out_path`` is, named in the error."""
    out = os.path.realpath(os.fspath(out_path))
    if any(p is not None and os.path.realpath(os.fspath(p)) == out for p in inputs):
        if output is not None and os.fspath(output) != os.fspath(out_path):
            raise InputError(output, f"would write its data file {os.fspath(out_path)}, an input file; refusing to "
                                     "overwrite it: give the output another name")
        raise InputError(out_path, "is an input file; refusing to overwrite it")


def write_text(path: PathLike, text: str, inputs: Iterable[PathLike] = ()) -> str:
    return write_bytes(path, text.encode("utf-8"), inputs)


def write_bytes(path: PathLike, data: bytes, inputs: Iterable[PathLike] = ()) -> str:
    """Write ``data`` to ``path`` atomically; the folder must exist and ``path`` must be no input."""
    p = os.fspath(path)
    check_folder(p)
    check_not_input(p, inputs)
    with replacing(p) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return p


def check_folder(path: PathLike) -> None:
    """Raise unless the folder ``path`` goes to exists and can be written to."""
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(folder):
        raise InputError(path, "output folder does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(path, "output folder is not writable")


class _Staged:
    """Writes waiting for their renames: the moves, and the private folders to remove after."""

    def __init__(self) -> None:
        self.moves: Moves = []
        self.scratch: List[str] = []

    def apply(self) -> None:
        """Every rename, in order; then whatever is left of them (after a failure) removed."""
        try:
            for tmp, final in self.moves:
                os.replace(tmp, final)
        finally:
            self.discard()

    def discard(self) -> None:
        for tmp, _ in self.moves:
            if os.path.exists(tmp):
                os.unlink(tmp)
        for folder in self.scratch:
            shutil.rmtree(folder, ignore_errors=True)


_STAGED: "contextvars.ContextVar[Optional[_Staged]]" = contextvars.ContextVar("btseg_staged", default=None)


@contextlib.contextmanager
def together() -> Iterator[None]:
    """Every write in the block stays in its temporary file until the block ends; then all are
    renamed into place, one after the other (a matter of microseconds). If the block fails, none is."""
    staged = _Staged()
    token = _STAGED.set(staged)
    try:
        yield
    except BaseException:
        staged.discard()
        raise
    finally:
        _STAGED.reset(token)
    staged.apply()


def commit(moves: Moves, scratch: Optional[str] = None) -> None:
    """Rename complete temporary files into place now, or at the end of the ``together`` block
    around; ``scratch``: a private folder of theirs, removed once they have moved."""
    block = _STAGED.get()
    staged = block or _Staged()
    staged.moves += moves
    if scratch:
        staged.scratch.append(scratch)
    if block is None:
        staged.apply()


def scratch_file(path: PathLike, suffix: str) -> str:
    """A new, empty temporary file beside ``path`` (an error naming ``path`` where it cannot be made)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".btseg-", suffix=suffix, dir=os.path.dirname(os.path.abspath(path)))
    except OSError as exc:
        raise InputError(path, f"cannot be written ({exc.strerror})") from None
    os.close(fd)
    return tmp


def scratch_folder(path: PathLike) -> str:
    """A new, empty private folder beside ``path``, for formats written as two files."""
    try:
        return tempfile.mkdtemp(prefix=".btseg-", dir=os.path.dirname(os.path.abspath(path)))
    except OSError as exc:
        raise InputError(path, f"cannot be written ({exc.strerror})") from None


@contextlib.contextmanager
def replacing(path: PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary path beside ``path`` to write to; on success it gets the usual file mode
    and replaces ``path`` in one rename (at the end of a ``together`` block, inside one), on any
    failure it is removed. ``suffix`` matters to writers that choose the format by extension."""
    p = os.fspath(path)
    tmp = scratch_file(p, suffix)
    try:
        yield tmp
        umask = os.umask(0)  # mkstemp makes owner-only files; give the usual umask mode
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    commit([(tmp, p)])


def write_json(path: PathLike, data: Any, inputs: Iterable[PathLike] = ()) -> str:
    return write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n", inputs)
