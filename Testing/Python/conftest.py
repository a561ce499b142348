"""Shared fixtures: real files written through SimpleITK, never mocks."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import pytest
import SimpleITK as sitk

from BrainTumorSegLib.synthetic import phantom


def make_image(array: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
               direction: Optional[Sequence[float]] = None) -> sitk.Image:
    """Image from a (z, y, x) array with the given geometry (x, y, z order)."""
    img = sitk.GetImageFromArray(array)
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(o) for o in origin])
    if direction is not None:
        img.SetDirection([float(d) for d in direction])
    return img


def analytic_image(size, spacing, origin, direction, func: Callable) -> sitk.Image:
    """Image whose voxel values are ``func`` of the voxel's physical (LPS) position."""
    img = make_image(np.zeros(size[::-1], np.float32), spacing, origin, direction)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), -1).reshape(-1, 3)
    d = np.array(img.GetDirection()).reshape(3, 3)
    pts = np.array(origin) + (idx * np.array(spacing)) @ d.T
    vals = func(pts).reshape(size).transpose(2, 1, 0)
    out = sitk.GetImageFromArray(vals.astype(np.float32))
    out.CopyInformation(img)
    return out


def rotation_direction(angle_deg: float, axis: int = 2) -> list:
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a), np.sin(a)
    r = np.eye(3)
    i, j = [k for k in range(3) if k != axis]
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r.ravel().tolist()


TINY = {"channels": [4, 8, 16, 32, 32], "blocks": [1, 1, 1, 1, 1]}


def save_tiny_bundle(data: np.ndarray, folder, model_id: str = "tiny", spacing_mm: float = 2.0) -> str:
    """A small real network whose output bias is set so that about half the brain of ``data`` (a
    preprocessed case on a grid of ``spacing_mm``) is 'tumor': random weights, but labels that depend
    on the image, so comparisons are not trivial. Saved as a bundle working at that spacing."""
    import torch

    from BrainTumorSegLib.models import bundles
    from BrainTumorSegLib.networks import build

    torch.manual_seed(0)
    net = build("resunet", **TINY).eval()
    with torch.no_grad():
        logits = net(torch.from_numpy(np.ascontiguousarray(data))[None])[0]
        net.head.bias -= logits.flatten(1).median(1).values
    return bundles.save(net, folder, {"id": model_id, "version": "0", "network": "resunet", "options": TINY,
                                      "label_scheme": "brats2021", "patch_size": [64, 64, 64], "demo": True,
                                      "preprocessing": {"spacing_mm": spacing_mm}})


def run_cli(*args: str, cwd: Optional[str] = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (``python -m BrainTumorSegLib``). The timeout only stops a
    hung process: a clinical scan (HD-BET on the CPU, registration) takes minutes on 2 cores."""
    return subprocess.run([sys.executable, "-m", "BrainTumorSegLib", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=1800)


def cli_main(*args: str) -> subprocess.CompletedProcess:
    """The CLI in this process (``cli.main``), where a separate process is not the point; the
    result looks like :func:`run_cli`'s. Subprocesses stay for signals, torchrun and Slicer jobs."""
    import contextlib
    import io

    from BrainTumorSegLib.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse: usage errors (2), --help and --version (0)
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


_REFUSALS = """
import contextlib, io, json, sys
from BrainTumorSegLib.cli import main
runs = []
argvs, watched = json.load(sys.stdin)
for argv in argvs:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    runs.append([argv, code, out.getvalue(), err.getvalue()])
print(json.dumps({"runs": runs, "imported": [m for m in watched if m in sys.modules]}))
"""


def cli_in_a_fresh_process(argvs: Sequence[Sequence[str]], watched: Sequence[str] = ("torch", "safetensors")
                           ) -> Tuple[List[subprocess.CompletedProcess], List[str]]:
    """Each command line through ``cli.main``, one after the other, in one new Python process:
    their results, and which of the ``watched`` packages that process imported by the end (of
    torch and safetensors, none means no network was built and no weights were read)."""
    import json

    p = subprocess.run([sys.executable, "-c", _REFUSALS], input=json.dumps([[list(a) for a in argvs], list(watched)]),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    done = json.loads(p.stdout.splitlines()[-1])
    return [subprocess.CompletedProcess(*run) for run in done["runs"]], done["imported"]


def one_line_error(r: subprocess.CompletedProcess, *fragments: str) -> None:
    """The CLI failed with exit 2 and one error line (notes aside) holding every fragment."""
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ": note: " not in ln]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("braintumorseg: error: "), lines[0]
    for f in fragments:
        assert f in lines[0], lines[0]


def usage_error(r: subprocess.CompletedProcess, *fragments: str) -> None:
    """argparse refused the command line: exit 2, its usage, then one error line holding every fragment."""
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("usage: ") and "Traceback" not in r.stderr, r.stderr
    assert lines[-1].startswith("braintumorseg segment: error: argument "), lines[-1]
    for f in fragments:
        assert f in lines[-1], lines[-1]


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> str:
    """Two synthetic cases on disk, BraTS 2021 layout (seed 7)."""
    out = tmp_path_factory.mktemp("phantoms")
    phantom.generate(out, 2, seed=7)
    return str(out)


@pytest.fixture(scope="session")
def phantom_case_dir(phantom_dir) -> str:
    return os.path.join(phantom_dir, "Synth_7_0000")


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Exported backends and their measurements go to a folder of the test session, not the home."""
    os.environ["BRAINTUMORSEG_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    os.environ.pop("BRAINTUMORSEG_CACHE", None)
