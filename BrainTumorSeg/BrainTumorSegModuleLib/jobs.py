"""A ``braintumorseg`` command in a background process: progress, cancel, one-line errors.

Inference and fine-tuning run outside Slicer's process, so the GUI stays responsive, a cancel
really stops the work (the process is terminated), and a crash or out-of-memory in torch cannot
take Slicer down. The widget polls :meth:`Job.poll` from a timer; nothing here uses Qt.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from typing import List, Optional, Sequence

PROGRESS_ENV = "BRAINTUMORSEG_PROGRESS"
PYTHON_ENV = "BRAINTUMORSEG_PYTHON"


def library_root() -> str:
    """The folder holding ``BrainTumorSegLib``: beside this package when installed as a Slicer
    extension, the repository root in a source checkout."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for d in (here, os.path.dirname(here)):
        if os.path.exists(os.path.join(d, "BrainTumorSegLib", "__init__.py")):
            return d
    raise RuntimeError(f"BrainTumorSegLib not found beside {here}")


def python_executable() -> str:
    """The Python that runs the library: ``$BRAINTUMORSEG_PYTHON``, Slicer's ``PythonSlicer``,
    or this interpreter."""
    return os.environ.get(PYTHON_ENV) or shutil.which("PythonSlicer") or sys.executable


class Job:
    """``python -m BrainTumorSegLib ARGS`` running in the background."""

    def __init__(self, args: Sequence[str], python: Optional[str] = None) -> None:
        env = dict(os.environ)
        env[PROGRESS_ENV] = "lines"
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join([library_root()] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self.command = [python or python_executable(), "-m", "BrainTumorSegLib", *args]
        self.stage, self.fraction = "starting", 0.0
        self.stdout: List[str] = []
        self.stderr: List[str] = []
        self.cancelled = False
        self.proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env, stdin=subprocess.DEVNULL)
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True)]
        for t in self._readers:
            t.start()

    def _read(self, stream, is_stdout: bool) -> None:
        for line in stream:
            line = line.rstrip("\n")
            if is_stdout and line.startswith("progress "):
                stage, _, value = line[len("progress "):].rpartition(" ")  # the stage may hold spaces
                try:
                    self.stage, self.fraction = stage, float(value)
                except ValueError:
                    pass
                continue
            (self.stdout if is_stdout else self.stderr).append(line)

    def poll(self) -> Optional[int]:
        """Exit code once finished (output fully read), else None."""
        code = self.proc.poll()
        if code is None:
            return None
        for t in self._readers:
            t.join()
        return code

    def wait(self, timeout: Optional[float] = None) -> int:
        self.proc.wait(timeout)
        return self.poll()

    def cancel(self) -> None:
        """Stop the process (terminate, then kill after 5 s)."""
        self.cancelled = True
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for t in self._readers:
            t.join()

    @property
    def error(self) -> str:
        """The one-line reason a failed run gave (``braintumorseg: error: ...``), else its last line."""
        for line in reversed(self.stderr):
            if line.startswith("braintumorseg: error: "):
                return line[len("braintumorseg: error: "):]
        lines = [ln for ln in self.stderr if ln.strip()]
        return lines[-1] if lines else f"exit code {self.proc.returncode}"
