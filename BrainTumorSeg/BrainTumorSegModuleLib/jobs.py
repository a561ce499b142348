"""A ``braintumorseg`` command in a background process: progress, cancel, one-line errors.

Inference and fine-tuning run outside Slicer's process, so the GUI stays responsive, a cancel
really stops the work, and a crash or out-of-memory in torch cannot take Slicer down. The widget
polls :meth:`Job.poll` from a timer; nothing here uses Qt. The logic asks no more of a job than
:class:`BackgroundJob` says, so tests can give it one of their own.

``PythonSlicer`` is a launcher: it starts the real interpreter as a child and hands it its pipes.
Stopping the launcher alone would leave that child running and holding the pipes, so each job
runs in its own process group (its own session on Linux and macOS, a new process group on
Windows) and a cancel stops the whole tree. Output is read as UTF-8 whatever the locale's code
page, so an odd byte can never kill a reader thread and leave the child blocked on a full pipe.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, List, Optional, Protocol, Sequence

from BrainTumorSegLib import progress  # the progress protocol (no torch; importable before dependencies)

from . import library_root

PROGRESS_ENV = progress.ENV
PYTHON_ENV = "BRAINTUMORSEG_PYTHON"
WINDOWS = sys.platform == "win32"
STOP_GRACE_S = 5.0      # after a polite stop, the tree is killed
READER_JOIN_S = 5.0     # readers are left behind (daemon threads) rather than block the GUI


def popen_options() -> Dict:
    """Process-group and window options for a job's process on this platform."""
    if WINDOWS:  # no console window per job; a group of its own so the tree can be stopped
        return {"creationflags": subprocess.CREATE_NO_WINDOW | subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def stop_tree(proc: subprocess.Popen, grace: float = STOP_GRACE_S) -> None:
    """Stop ``proc`` and every process it started (the launcher's child included)."""
    if WINDOWS:
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(proc.pid)], capture_output=True,
                       creationflags=subprocess.CREATE_NO_WINDOW)
        proc.wait()
        return
    deadline = time.monotonic() + grace
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)  # the job leads its own session: its group id is its pid
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM and not _group_ends_by(proc.pid, deadline):
            continue  # the launcher went, its child did not within the grace: SIGKILL the rest of the group
        break
    if proc.poll() is None:
        proc.wait()


def _group_ends_by(pgid: int, deadline: float) -> bool:
    """Whether the group's last process ends before ``deadline`` (the launcher's child removing
    what it was writing after SIGTERM)."""
    while _group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def python_executable() -> str:
    """The Python that runs the library: ``$BRAINTUMORSEG_PYTHON``, Slicer's ``PythonSlicer``,
    or this interpreter."""
    return os.environ.get(PYTHON_ENV) or shutil.which("PythonSlicer") or sys.executable


class BackgroundJob(Protocol):
    """What the logic needs of a background ``braintumorseg`` run: :class:`Job`, or a test's own."""

    stage: str            # the last progress stage reported
    fraction: float       # its fraction done, 0 to 1
    cancelled: bool
    stdout: List[str]     # output lines (progress lines left out)
    stderr: List[str]

    def poll(self) -> Optional[int]:
        """Exit code once finished, else None."""

    def cancel(self) -> None:
        """Stop the run; safe to call repeatedly and after it ended."""

    @property
    def error(self) -> str:
        """The one-line reason a failed run gave."""


# starts ``braintumorseg ARGS`` in the background
JobStarter = Callable[[Sequence[str]], BackgroundJob]


def job_starter(python: Optional[str] = None) -> JobStarter:
    """Start each job as a :class:`Job` run by ``python`` (default: :func:`python_executable`)."""
    return lambda args: Job(args, python)


class Job:
    """``python -m BrainTumorSegLib ARGS`` running in the background."""

    def __init__(self, args: Sequence[str], python: Optional[str] = None) -> None:
        env = dict(os.environ)
        env[PROGRESS_ENV] = "lines"
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONIOENCODING"] = "utf-8"
        env["PYTHONPATH"] = os.pathsep.join([library_root()] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self.command = [python or python_executable(), "-m", "BrainTumorSegLib", *args]
        self.stage, self.fraction = "starting", 0.0
        self.stdout: List[str] = []
        self.stderr: List[str] = []
        self.cancelled = False
        self.proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     encoding="utf-8", errors="replace", env=env, stdin=subprocess.DEVNULL,
                                     **popen_options())
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True)]
        for t in self._readers:
            t.start()

    def _read(self, stream, is_stdout: bool) -> None:
        for line in stream:
            line = line.rstrip("\n")
            parsed = progress.parse_line(line) if is_stdout else None
            if parsed is not None:
                self.stage, self.fraction = parsed
                continue
            (self.stdout if is_stdout else self.stderr).append(line)

    def poll(self) -> Optional[int]:
        """Exit code once finished (output fully read), else None."""
        code = self.proc.poll()
        if code is None:
            return None
        for t in self._readers:
            t.join(READER_JOIN_S)
        return code

    def wait(self, timeout: Optional[float] = None) -> int:
        self.proc.wait(timeout)
        return self.poll()

    def cancel(self) -> None:
        """Stop the job's whole process tree (politely, then by force); safe to call repeatedly
        and after the job ended. Returns within about ``STOP_GRACE_S + READER_JOIN_S`` seconds."""
        self.cancelled = True
        if self.proc.poll() is None or (not WINDOWS and _group_alive(self.proc.pid)):
            stop_tree(self.proc)
        for t in self._readers:
            t.join(READER_JOIN_S)

    @property
    def error(self) -> str:
        """The one-line reason a failed run gave (``braintumorseg: error: ...``), else its last line."""
        for line in reversed(self.stderr):
            if line.startswith("braintumorseg: error: "):
                return line[len("braintumorseg: error: "):]
        lines = [ln for ln in self.stderr if ln.strip()]
        return lines[-1] if lines else f"exit code {self.proc.returncode}"
