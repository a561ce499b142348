"""Installing what :mod:`.dependencies` finds missing, inside the Slicer application, on the user's
confirmation: torch through the PyTorch extension, the rest through pip, never replacing the
packages Slicer ships. Declining or a failed install is one line, not a traceback.

Only :func:`slicer_constraints_file` runs outside Slicer; the rest needs the application
(``slicer.app``, ``slicer.util``), which imports Qt itself: this module does not.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from typing import Callable, Optional, Sequence

import slicer

from . import dependencies
from .errors import one_line


def slicer_constraints_file() -> str:
    """A pip constraints file pinning the packages Slicer ships (numpy, SimpleITK, vtk) to the
    versions this Slicer has, so an install can never replace them. The caller removes it."""
    from importlib import metadata

    pins = []
    for dist in dependencies.SHIPPED_BY_SLICER + ("vtk",):
        try:
            pins.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass  # built into Slicer, not a pip distribution: nothing pip could replace
    fd, path = tempfile.mkstemp(prefix="BrainTumorSeg-constraints-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(pins) + "\n")
    return path


def _packaging():
    try:
        import slicer.packaging as packaging
    except ImportError:  # Slicer before 5.12
        return None
    return packaging


def ensure_pip_packages(extras: Sequence[str] = ()) -> bool:
    """Missing pip packages, installed on confirmation and never replacing what Slicer ships:
    ``slicer.packaging.pip_ensure`` (Slicer 5.12 and later), else ``slicer.util.pip_install`` after
    our own question. In testing mode nothing is installed (the self-test then skips). Declining or
    a failed install is one line in an error dialog, not a traceback; returns whether all is there."""
    reqs = dependencies.missing_pip_requirements(extras)
    if not reqs:
        return True
    if slicer.app.testingEnabled():
        return False
    packaging = _packaging()
    # declined or failed: pip_ensure raises RuntimeError; the uv-based installer of later Slicer
    # (behind slicer.util.pip_install there) raises its own InstallationAbortedError
    failures = (RuntimeError, subprocess.CalledProcessError) + tuple(
        e for e in (getattr(packaging, "InstallationAbortedError", None),) if isinstance(e, type))
    constraints = slicer_constraints_file()
    try:
        if packaging is not None and hasattr(packaging, "pip_ensure"):
            packaging.pip_ensure(reqs, constraints=constraints, requester="BrainTumorSeg")
        elif slicer.util.confirmOkCancelDisplay(f"BrainTumorSeg needs: {', '.join(reqs)}. Install now?"):
            slicer.util.pip_install(reqs + ["-c", constraints])
        else:
            return False
    except failures as exc:
        slicer.util.errorDisplay(f"BrainTumorSeg: the packages {', '.join(reqs)} were not installed: {one_line(exc)}")
        return False
    finally:
        os.remove(constraints)
    return not dependencies.missing_pip_requirements(extras)


def ensure_torch(on_installed: Optional[Callable[[], None]] = None) -> bool:
    """torch through the PyTorch extension's installer (it picks a build for the GPU and driver),
    on confirmation; ``on_installed`` runs once it arrived. Returns whether torch is there."""
    if not dependencies.torch_missing():
        return True
    try:
        import PyTorchUtils
    except ImportError:
        slicer.util.errorDisplay("Install the PyTorch extension (Extensions Manager), then restart Slicer.")
        return False
    logic = PyTorchUtils.PyTorchUtilsLogic()
    try:
        try:
            installed = logic.installTorch(askConfirmation=True,
                                           torchVersionRequirement=f">={dependencies.TORCH_AT_LEAST}")
        except TypeError:  # a PyTorch extension older than version requirements: its newest torch
            installed = logic.installTorch(askConfirmation=True)
        if installed is None:
            return False  # declined
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        slicer.util.errorDisplay(f"BrainTumorSeg: torch was not installed: {one_line(exc)}")
        return False
    if on_installed is not None:
        on_installed()
    return True


def ensure_dependencies(extras: Sequence[str] = (), on_torch_installed: Optional[Callable[[], None]] = None) -> bool:
    """torch, then the pip packages (and those of ``extras``); each on the user's confirmation."""
    return ensure_torch(on_torch_installed) and ensure_pip_packages(extras)
