"""Module logic tests on real MRML (``slicer-core``), in their own environment.

The logic runs ``braintumorseg`` in a background process with the Python named by
``$BRAINTUMORSEG_PYTHON`` (the project's own environment, with torch): the same split as inside
Slicer, where PythonSlicer runs it.
"""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "BrainTumorSeg")]


def lib_python() -> str:
    py = os.environ.get("BRAINTUMORSEG_PYTHON")
    if not py or not os.path.exists(py):
        pytest.fail("set BRAINTUMORSEG_PYTHON to the Python of the project's environment (see .ci/run)")
    return py


def run_lib(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([lib_python(), "-m", "BrainTumorSegLib", *args], capture_output=True, text=True,
                       timeout=900, env=env)
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="session")
def case_dir(tmp_path_factory):
    """One synthetic case on disk (BraTS 2021 names, labels 0/1/2/4)."""
    root = tmp_path_factory.mktemp("phantom")
    run_lib("phantom", str(root), "--n", "1", "--seed", "5", "--quiet")
    return os.path.join(root, os.listdir(root)[0])
